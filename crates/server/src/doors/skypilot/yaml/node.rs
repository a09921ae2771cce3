//! The document tree the SkyPilot door works on: what PyYAML's `safe_load`
//! builds, kept exactly enough to write it back.
//!
//! Scalars keep their value text and the kind PyYAML gives them, so a
//! scalar Warden does not change is written back as text PyYAML reads as the
//! same type and value (`1e-4` stays the string `1e-4`, `yes` stays `True`,
//! `1:30` stays 90). Mappings keep their entries in order, with keys of any
//! scalar kind (`{null: docker:IMG}`) and repeated keys as written (PyYAML
//! keeps the last value at the first key's place, so writing every entry
//! back in order reads back the same). Aliases are expanded and merge keys
//! (`<<`) flattened when the tree is built.

use serde_json::{Map, Number, Value};

use super::resolve::{bool_value, float_value, int_value, resolve_plain, Kind};

/// A YAML node as `safe_load` sees it.
#[derive(Debug, Clone, PartialEq)]
pub enum Node {
    /// A scalar.
    Scalar(Scalar),
    /// A sequence (`list`).
    Seq(Vec<Node>),
    /// A mapping (`dict`), entries in document order.
    Map(Vec<(Node, Node)>),
    /// A collection with an explicit tag `safe_load` knows (`!!set`,
    /// `!!omap`, `!!pairs`): written back with its tag.
    Tagged(Box<str>, Box<Node>),
}

/// A scalar: its value (after quoting, escapes and folding) and its kind.
#[derive(Debug, Clone, PartialEq)]
pub struct Scalar {
    /// The value text.
    pub text: String,
    /// How PyYAML types it.
    pub kind: Kind,
}

impl Scalar {
    /// A plain scalar, typed as PyYAML types it.
    pub fn plain(text: &str) -> Self {
        Scalar {
            kind: resolve_plain(text),
            text: text.to_owned(),
        }
    }

    /// A string.
    pub fn str(text: impl Into<String>) -> Self {
        Scalar {
            text: text.into(),
            kind: Kind::Str,
        }
    }
}

impl Node {
    /// A string node.
    pub fn str(text: impl Into<String>) -> Self {
        Node::Scalar(Scalar::str(text))
    }

    /// An empty mapping.
    pub fn empty_map() -> Self {
        Node::Map(Vec::new())
    }

    /// The string value, if this is a string scalar.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Node::Scalar(Scalar {
                text,
                kind: Kind::Str,
            }) => Some(text),
            _ => None,
        }
    }

    /// Whether this is `None` to PyYAML.
    pub fn is_null(&self) -> bool {
        matches!(
            self,
            Node::Scalar(Scalar {
                kind: Kind::Null,
                ..
            })
        )
    }

    /// The scalar, if this is one.
    pub fn as_scalar(&self) -> Option<&Scalar> {
        match self {
            Node::Scalar(s) => Some(s),
            _ => None,
        }
    }

    /// The entries, if this is a mapping.
    pub fn as_map(&self) -> Option<&[(Node, Node)]> {
        match self {
            Node::Map(m) => Some(m),
            _ => None,
        }
    }

    /// The entries, if this is a mapping.
    pub fn as_map_mut(&mut self) -> Option<&mut Vec<(Node, Node)>> {
        match self {
            Node::Map(m) => Some(m),
            _ => None,
        }
    }

    /// The items, if this is a sequence.
    pub fn as_seq_mut(&mut self) -> Option<&mut Vec<Node>> {
        match self {
            Node::Seq(s) => Some(s),
            _ => None,
        }
    }

    /// The value PyYAML keeps for string key `key` (the last entry with it).
    pub fn get(&self, key: &str) -> Option<&Node> {
        map_get(self.as_map()?, key)
    }

    /// A short name of the node's type for error messages.
    pub fn type_name(&self) -> &'static str {
        match self {
            Node::Scalar(s) => match s.kind {
                Kind::Str => "a string",
                Kind::Null => "null",
                Kind::Bool => "a boolean",
                Kind::Int => "an integer",
                Kind::Float => "a float",
                Kind::Timestamp => "a date",
                Kind::Binary => "binary data",
                Kind::Merge | Kind::Value => "a special key",
            },
            Node::Seq(_) => "a list",
            Node::Map(_) => "a mapping",
            Node::Tagged(..) => "a tagged collection",
        }
    }

    /// This mapping made sure of (a non-mapping is replaced by `{}`).
    pub fn make_map(&mut self) -> &mut Vec<(Node, Node)> {
        if !matches!(self, Node::Map(_)) {
            *self = Node::empty_map();
        }
        match self {
            Node::Map(m) => m,
            _ => unreachable_map(),
        }
    }

    /// The value at string key `key` of this mapping (made a mapping if it
    /// is not one), inserted as `null` at the end when absent.
    pub fn entry(&mut self, key: &str) -> &mut Node {
        let m = self.make_map();
        let at = last_index(m, key).unwrap_or_else(|| {
            m.push((Node::str(key), Node::Scalar(Scalar::plain(""))));
            m.len() - 1
        });
        match m.get_mut(at) {
            Some((_, v)) => v,
            None => unreachable_map(),
        }
    }

    /// Sets string key `key` of this mapping to `value`: the first entry
    /// with the key keeps its place and takes the value, later entries
    /// with it go (what PyYAML would have kept anyway); absent, it is
    /// appended.
    pub fn set(&mut self, key: &str, value: Node) {
        let m = self.make_map();
        match m.iter().position(|(k, _)| k.as_str() == Some(key)) {
            Some(first) => {
                let mut i = 0;
                m.retain(|(k, _)| {
                    let keep = i <= first || k.as_str() != Some(key);
                    i += 1;
                    keep
                });
                if let Some((_, v)) = m.get_mut(first) {
                    *v = value;
                }
            }
            None => m.push((Node::str(key), value)),
        }
    }

    /// Removes every entry with string key `key`.
    pub fn remove(&mut self, key: &str) {
        if let Node::Map(m) = self {
            m.retain(|(k, _)| k.as_str() != Some(key));
        }
    }

    /// Sets the value at a path of string keys, making mappings on the way.
    pub fn set_path(&mut self, path: &[String], value: Node) {
        match path.split_last() {
            None => *self = value,
            Some((last, parents)) => {
                let mut cur = self;
                for key in parents {
                    let next = cur.entry(key);
                    if !matches!(next, Node::Map(_)) {
                        *next = Node::empty_map();
                    }
                    cur = next;
                }
                cur.set(last, value);
            }
        }
    }

    /// The JSON view the policy core reads (CEL `task`, raw paths): keys of
    /// other kinds become their text, numbers their value (integers past 64
    /// bits and non-finite floats become their text), dates and binary
    /// their text; a repeated key keeps its last value.
    pub fn to_json(&self) -> Value {
        match self {
            Node::Scalar(s) => s.to_json(),
            Node::Seq(items) => Value::Array(items.iter().map(Node::to_json).collect()),
            Node::Map(entries) => {
                let mut m = Map::new();
                for (k, v) in entries {
                    let key = match k {
                        Node::Scalar(s) => s.text.clone(),
                        other => other.to_json().to_string(),
                    };
                    m.insert(key, v.to_json());
                }
                Value::Object(m)
            }
            Node::Tagged(_, inner) => inner.to_json(),
        }
    }

    /// A node from a JSON value (a policy's mutation): strings, numbers,
    /// booleans, null, lists and mappings with string keys. A float is
    /// written so that PyYAML reads it as a float.
    pub fn from_json(v: &Value) -> Node {
        match v {
            Value::Null => Node::Scalar(Scalar {
                text: "null".to_owned(),
                kind: Kind::Null,
            }),
            Value::Bool(b) => Node::Scalar(Scalar {
                text: b.to_string(),
                kind: Kind::Bool,
            }),
            Value::Number(n) => Node::Scalar(number(n)),
            Value::String(s) => Node::str(s.clone()),
            Value::Array(a) => Node::Seq(a.iter().map(Node::from_json).collect()),
            Value::Object(m) => Node::Map(
                m.iter()
                    .map(|(k, v)| (Node::str(k.clone()), Node::from_json(v)))
                    .collect(),
            ),
        }
    }
}

fn number(n: &Number) -> Scalar {
    if n.is_i64() || n.is_u64() {
        return Scalar {
            text: n.to_string(),
            kind: Kind::Int,
        };
    }
    let f = n.as_f64().unwrap_or_default();
    Scalar {
        text: float_text(f),
        kind: Kind::Float,
    }
}

/// A finite float as text PyYAML's resolver takes for a float: a dot in
/// the mantissa and a signed exponent (`1e-4` would be a string to it).
pub fn float_text(f: f64) -> String {
    let s = format!("{f:?}");
    match s.split_once('e') {
        Some((mantissa, exp)) => {
            let mantissa = if mantissa.contains('.') {
                mantissa.to_owned()
            } else {
                format!("{mantissa}.0")
            };
            let exp = if exp.starts_with('-') {
                exp.to_owned()
            } else {
                format!("+{exp}")
            };
            format!("{mantissa}e{exp}")
        }
        None if s.contains('.') => s,
        None => format!("{s}.0"),
    }
}

impl Scalar {
    /// The JSON view of this scalar (see [`Node::to_json`]).
    pub fn to_json(&self) -> Value {
        match self.kind {
            Kind::Null => Value::Null,
            Kind::Bool => bool_value(&self.text).map_or(Value::Null, Value::Bool),
            Kind::Int => match int_value(&self.text) {
                Some(i) => i64::try_from(i)
                    .map(Value::from)
                    .or_else(|_| u64::try_from(i).map(Value::from))
                    .unwrap_or_else(|_| Value::String(self.text.clone())),
                None => Value::String(self.text.clone()),
            },
            Kind::Float => float_value(&self.text)
                .and_then(Number::from_f64)
                .map_or_else(|| Value::String(self.text.clone()), Value::Number),
            _ => Value::String(self.text.clone()),
        }
    }
}

/// The value PyYAML keeps for string key `key` in `entries`.
pub fn map_get<'a>(entries: &'a [(Node, Node)], key: &str) -> Option<&'a Node> {
    entries
        .iter()
        .rev()
        .find(|(k, _)| k.as_str() == Some(key))
        .map(|(_, v)| v)
}

fn last_index(entries: &[(Node, Node)], key: &str) -> Option<usize> {
    entries.iter().rposition(|(k, _)| k.as_str() == Some(key))
}

#[expect(clippy::panic, reason = "make_map() has just made the node a mapping")]
fn unreachable_map() -> ! {
    panic!("node was just made a mapping")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn float_text_reads_back_as_float() {
        for f in [1e-4, 1e20, 0.5, 3.0, -2.5e-300, 1.0e16, 123456.789] {
            let t = float_text(f);
            assert_eq!(resolve_plain(&t), Kind::Float, "{t}");
            assert_eq!(float_value(&t), Some(f), "{t}");
        }
    }

    #[test]
    fn set_keeps_the_first_place_and_drops_repeats() {
        let mut m = Node::Map(vec![
            (Node::str("a"), Node::str("1")),
            (Node::str("b"), Node::str("2")),
            (Node::str("a"), Node::str("3")),
        ]);
        assert_eq!(m.get("a"), Some(&Node::str("3")));
        m.set("a", Node::str("4"));
        assert_eq!(
            m,
            Node::Map(vec![
                (Node::str("a"), Node::str("4")),
                (Node::str("b"), Node::str("2")),
            ])
        );
    }
}
