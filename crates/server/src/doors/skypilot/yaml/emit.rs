//! Writes a [`Node`] as one line of flow YAML that PyYAML's `safe_load`
//! (and libyaml, which SkyPilot's `CSafeLoader` uses) reads back as the
//! same value.
//!
//! - Strings are double-quoted, so no resolver rule applies to them; every
//!   character YAML does not allow raw (controls, DEL, C1, surrogates'
//!   neighbours `U+FFFE`/`U+FFFF`, the byte-order mark) and every YAML 1.1
//!   line break (`\r`, NEL, `U+2028`, `U+2029`, which would be folded) is
//!   escaped.
//! - Other scalars are written plain as they were read when that text
//!   resolves to the same kind (`1:30`, `0x1F`, `yes`, `2024-01-01`), and
//!   otherwise with an explicit tag (`!<tag:yaml.org,2002:float> "1"`).
//! - Mappings keep their order and every key, of any kind.

use std::fmt::Write as _;

use super::node::{Node, Scalar};
use super::resolve::{resolve_plain, Kind};

/// The node as flow YAML text; `size_hint` is about how long it will be
/// (the text it was read from is a good guess).
pub fn to_string(node: &Node, size_hint: usize) -> String {
    let mut out = String::with_capacity(size_hint + size_hint / 4 + 64);
    write_node(&mut out, node);
    out
}

fn write_node(out: &mut String, node: &Node) {
    match node {
        Node::Scalar(s) => write_scalar(out, s),
        Node::Seq(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                write_node(out, item);
            }
            out.push(']');
        }
        Node::Map(entries) => {
            out.push('{');
            for (i, (k, v)) in entries.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                write_node(out, k);
                out.push_str(": ");
                write_node(out, v);
            }
            out.push('}');
        }
        Node::Tagged(tag, inner) => {
            out.push_str("!<");
            out.push_str(tag);
            out.push_str("> ");
            write_node(out, inner);
        }
    }
}

fn write_scalar(out: &mut String, s: &Scalar) {
    match s.kind {
        Kind::Str => push_double_quoted(out, &s.text),
        Kind::Null => out.push_str("null"),
        Kind::Bool | Kind::Int | Kind::Float | Kind::Timestamp
            if plain_safe(&s.text) && resolve_plain(&s.text) == s.kind =>
        {
            out.push_str(&s.text);
        }
        Kind::Merge => out.push_str("<<"),
        kind => {
            out.push_str("!<");
            out.push_str(kind.tag());
            out.push_str("> ");
            push_double_quoted(out, &s.text);
        }
    }
}

/// Text that means the same as a plain scalar inside a flow collection:
/// the characters of numbers, booleans and dates, no space at either end.
fn plain_safe(text: &str) -> bool {
    !text.is_empty()
        && !text.starts_with(' ')
        && !text.ends_with(' ')
        && text.bytes().all(|b| {
            b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b':' | b'+' | b'-' | b' ')
        })
}

/// ASCII bytes a double-quoted scalar escapes: `"`, `\\`, controls, DEL.
static ESCAPED_ASCII: [bool; 256] = crate::bytes::table(true, b"\"\\\x7f");

/// Appends `s` as a YAML double-quoted scalar.
pub fn push_double_quoted(out: &mut String, s: &str) {
    out.push('"');
    let bytes = s.as_bytes();
    let mut plain = 0;
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        let c = if b < 0x80 {
            if !crate::bytes::marks(&ESCAPED_ASCII, b) {
                i += 1;
                continue;
            }
            char::from(b)
        } else {
            // A multi-byte character: only a few need escaping.
            let c = s
                .get(i..)
                .and_then(|t| t.chars().next())
                .unwrap_or('\u{fffd}');
            if !needs_escape(c) {
                i += c.len_utf8();
                continue;
            }
            c
        };
        out.push_str(s.get(plain..i).unwrap_or_default());
        i += c.len_utf8();
        plain = i;
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            '\0' => out.push_str("\\0"),
            c => {
                let n = u32::from(c);
                if n <= 0xff {
                    let _ = write!(out, "\\x{n:02x}");
                } else {
                    let _ = write!(out, "\\u{n:04x}");
                }
            }
        }
    }
    out.push_str(s.get(plain..).unwrap_or_default());
    out.push('"');
}

/// Non-ASCII characters PyYAML or libyaml would refuse raw, or read as a
/// line break (the ASCII ones are in [`ESCAPED_ASCII`]).
fn needs_escape(c: char) -> bool {
    matches!(
        c,
        '\u{80}'..='\u{9f}' | '\u{2028}' | '\u{2029}' | '\u{feff}' | '\u{fffe}' | '\u{ffff}'
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strings_are_quoted_and_escaped() {
        let mut out = String::new();
        push_double_quoted(&mut out, "a\"b\\c\n\u{7f}\u{85}\u{2028}é🚀\u{1}");
        assert_eq!(out, r#""a\"b\\c\n\x7f\x85\u2028é🚀\x01""#);
    }

    #[test]
    fn non_strings_keep_their_text_or_a_tag() {
        let n = Node::Map(vec![
            (Node::Scalar(Scalar::plain("null")), Node::str("docker:x")),
            (
                Node::Scalar(Scalar::plain("1:30")),
                Node::Scalar(Scalar::plain("yes")),
            ),
            (
                Node::str("f"),
                Node::Scalar(Scalar {
                    text: "1".to_owned(),
                    kind: Kind::Float,
                }),
            ),
        ]);
        assert_eq!(
            to_string(&n, 0),
            r#"{null: "docker:x", 1:30: yes, "f": !<tag:yaml.org,2002:float> "1"}"#
        );
    }
}
