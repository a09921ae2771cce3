//! JSON string escaping for the hand-written JSON writers (the decision log
//! line, the SkyPilot door's answer): byte for byte what `serde_json` writes
//! for a string's contents — `"`, `\` and control characters escaped;
//! `\b \t \n \f \r` by name, other controls as `\u00xx` — once, or twice for
//! a JSON document inside a JSON string literal.

/// Bytes that end a run of bytes copied as they are: `"`, `\` and the
/// control characters.
static NEEDS_ESCAPE: [bool; 256] = crate::bytes::table(true, b"\"\\");

/// Whether `b` is escaped in a JSON string.
pub(crate) fn needs_escape(b: u8) -> bool {
    crate::bytes::marks(&NEEDS_ESCAPE, b)
}

/// How many times a string is escaped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Times {
    /// The contents of a JSON string.
    Once,
    /// The contents of a JSON string inside a JSON string literal: what
    /// `serde_json::to_string(&serde_json::to_string(..))` writes.
    Twice,
}

/// Text a JSON writer appends to.
pub(crate) trait Sink {
    /// Appends `s`.
    fn push(&mut self, s: &str);
}

impl Sink for String {
    fn push(&mut self, s: &str) {
        self.push_str(s);
    }
}

impl Sink for Vec<u8> {
    fn push(&mut self, s: &str) {
        self.extend_from_slice(s.as_bytes());
    }
}

/// Appends `s` as a JSON string: quoted, its contents escaped once.
pub(crate) fn push_string<S: Sink>(out: &mut S, s: &str) {
    out.push("\"");
    push_escaped(out, s, Times::Once);
    out.push("\"");
}

/// Appends `s` escaped `times` as JSON string contents.
pub(crate) fn push_escaped<S: Sink>(out: &mut S, s: &str, times: Times) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut plain = 0;
    for (i, b) in s.bytes().enumerate() {
        if !needs_escape(b) {
            continue;
        }
        out.push(s.get(plain..i).unwrap_or_default());
        plain = i + 1;
        let named = match (b, times) {
            (b'"', Times::Once) => r#"\""#,
            (b'"', Times::Twice) => r#"\\\""#,
            (b'\\', Times::Once) => r"\\",
            (b'\\', Times::Twice) => r"\\\\",
            (b'\n', Times::Once) => r"\n",
            (b'\n', Times::Twice) => r"\\n",
            (b'\r', Times::Once) => r"\r",
            (b'\r', Times::Twice) => r"\\r",
            (b'\t', Times::Once) => r"\t",
            (b'\t', Times::Twice) => r"\\t",
            (0x08, Times::Once) => r"\b",
            (0x08, Times::Twice) => r"\\b",
            (0x0c, Times::Once) => r"\f",
            (0x0c, Times::Twice) => r"\\f",
            _ => "",
        };
        if named.is_empty() {
            // Another control character: `\u00xx` (its backslash escaped
            // again the second time).
            if times == Times::Twice {
                out.push("\\");
            }
            let hi = HEX.get(usize::from(b >> 4)).copied().unwrap_or(b'0');
            let lo = HEX.get(usize::from(b & 0xf)).copied().unwrap_or(b'0');
            let code = [b'\\', b'u', b'0', b'0', hi, lo];
            out.push(std::str::from_utf8(&code).unwrap_or_default());
        } else {
            out.push(named);
        }
    }
    out.push(s.get(plain..).unwrap_or_default());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_as_serde_json_does_once_and_twice() {
        let mut samples: Vec<String> = [
            "",
            "plain",
            "quote \" and backslash \\",
            "tab\tnew\nline\rcr",
            "\u{8}\u{c}\u{0}\u{1f}\u{7f}",
            "unicode é 模型 \u{2028}",
            "\\\"\\n",
        ]
        .map(str::to_owned)
        .to_vec();
        samples.push((0u8..0x80).map(char::from).collect());
        for s in &samples {
            let once = serde_json::to_string(s).unwrap();
            let mut got = String::new();
            push_escaped(&mut got, s, Times::Once);
            assert_eq!(format!("\"{got}\""), once, "{s:?}");
            let mut bytes = Vec::new();
            push_escaped(&mut bytes, s, Times::Once);
            assert_eq!(bytes, got.as_bytes());

            let twice = serde_json::to_string(&once).unwrap();
            let mut got = String::new();
            push_escaped(&mut got, s, Times::Twice);
            // The outer literal holds `"` + once-escaped + `"`, escaped.
            assert_eq!(format!("\"\\\"{got}\\\"\""), twice, "{s:?}");
        }
    }
}
