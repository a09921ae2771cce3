//! A block-style YAML writer for JSON values, for manifests that every YAML
//! reader reads back as the same JSON: a string is written plain only when
//! no YAML 1.1 or 1.2 reader could take it for anything but a string
//! (`true`, `on`, `yes`, `1`, `0755`, `1e3`, `null`, `~`, `1:20` are
//! double-quoted), and double-quoted strings use JSON's escapes, which YAML
//! shares. The output is a function of the value alone (stable bytes).

use serde_json::Value;

/// Words YAML 1.1 readers (PyYAML, go-yaml v2, libyaml-based tools) take
/// for booleans or null.
const YAML11_WORDS: [&str; 12] = [
    "y", "yes", "n", "no", "on", "off", "true", "false", "null", "nil", "none", "~",
];

/// Whether `s` can be written as a plain scalar and still read as this
/// string by YAML 1.1 and 1.2 readers: a letter first, then letters,
/// digits, `-`, `_`, `.`, `/`; not a YAML 1.1 boolean or null word.
pub fn is_plain_safe(s: &str) -> bool {
    let mut chars = s.chars();
    let first_ok = chars.next().is_some_and(|c| c.is_ascii_alphabetic());
    first_ok
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '/'))
        && !YAML11_WORDS.iter().any(|w| w.eq_ignore_ascii_case(s))
}

/// Appends `s` as a YAML scalar: plain when [`is_plain_safe`], else
/// double-quoted with JSON escapes.
fn push_str(out: &mut String, s: &str) {
    if is_plain_safe(s) {
        out.push_str(s);
    } else {
        crate::json_text::push_string(out, s);
    }
}

/// Appends a scalar or an empty collection; `false` for a non-empty one.
fn push_inline(out: &mut String, v: &Value) -> bool {
    match v {
        Value::Null => out.push_str("null"),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Number(n) => out.push_str(&n.to_string()),
        Value::String(s) => push_str(out, s),
        Value::Array(a) if a.is_empty() => out.push_str("[]"),
        Value::Object(o) if o.is_empty() => out.push_str("{}"),
        Value::Array(_) | Value::Object(_) => return false,
    }
    true
}

fn indent(out: &mut String, n: usize) {
    out.extend(std::iter::repeat_n(' ', n));
}

/// Writes the entries of a non-empty mapping at column `col`; the first
/// key's indentation is already written when `first_inline`.
fn push_map(
    out: &mut String,
    map: &serde_json::Map<String, Value>,
    col: usize,
    first_inline: bool,
) {
    for (i, (k, v)) in map.iter().enumerate() {
        if i > 0 || !first_inline {
            indent(out, col);
        }
        push_str(out, k);
        out.push(':');
        match v {
            Value::Object(o) if !o.is_empty() => {
                out.push('\n');
                push_map(out, o, col + 2, false);
            }
            Value::Array(a) if !a.is_empty() => {
                out.push('\n');
                // Sequences in mappings at the key's column (kubectl's style).
                push_seq(out, a, col);
            }
            v => {
                out.push(' ');
                push_inline(out, v);
                out.push('\n');
            }
        }
    }
}

/// Writes the items of a non-empty sequence, each `- ` at column `col`.
fn push_seq(out: &mut String, items: &[Value], col: usize) {
    for item in items {
        indent(out, col);
        out.push('-');
        match item {
            Value::Object(o) if !o.is_empty() => {
                out.push(' ');
                push_map(out, o, col + 2, true);
            }
            Value::Array(a) if !a.is_empty() => {
                out.push('\n');
                push_seq(out, a, col + 2);
            }
            v => {
                out.push(' ');
                push_inline(out, v);
                out.push('\n');
            }
        }
    }
}

/// One YAML document (without the `---` line) for `value`.
pub fn document(value: &Value) -> String {
    let mut out = String::new();
    match value {
        Value::Object(o) if !o.is_empty() => push_map(&mut out, o, 0, false),
        Value::Array(a) if !a.is_empty() => push_seq(&mut out, a, 0),
        v => {
            push_inline(&mut out, v);
            out.push('\n');
        }
    }
    out
}

/// A multi-document stream: each value after a `---` line.
pub fn stream(values: &[Value]) -> String {
    let mut out = String::new();
    for v in values {
        out.push_str("---\n");
        out.push_str(&document(v));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn ambiguous_strings_are_quoted() {
        for quoted in [
            "true", "True", "on", "ON", "yes", "y", "n", "off", "no", "null", "~", "1", "0755",
            "1e3", "1:20", "", " a", "a b", "4Gi", "-1", ".5", "<<", "=", "a:b", "a#b", "*",
        ] {
            assert!(!is_plain_safe(quoted), "{quoted}");
        }
        for plain in [
            "warden",
            "nvidia.com/gpu",
            "requests.storage",
            "team-lead",
            "Fail",
            "v1",
        ] {
            assert!(is_plain_safe(plain), "{plain}");
        }
    }

    #[test]
    fn block_layout() {
        let v = json!({
            "kind": "LimitRange",
            "metadata": {"labels": {"x": "on"}, "name": "a"},
            "spec": {"limits": [{"default": {"cpu": "1"}, "type": "Container"}], "e": [], "m": {}},
            "n": 5,
            "nested": [["a", "b"], "c\n\"d\""]
        });
        assert_eq!(
            document(&v),
            "kind: LimitRange\n\
             metadata:\n  labels:\n    x: \"on\"\n  name: a\n\
             \"n\": 5\n\
             nested:\n-\n  - a\n  - b\n- \"c\\n\\\"d\\\"\"\n\
             spec:\n  e: []\n  limits:\n  - default:\n      cpu: \"1\"\n    type: Container\n  m: {}\n"
        );
    }
}
