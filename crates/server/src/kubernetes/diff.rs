//! `warden k8s diff`: the drift between the objects Warden renders and an
//! export of a cluster (`kubectl get ... -A -o json`, a `List`).
//!
//! Objects are matched by kind, namespace and name. Only what Warden
//! renders is compared: fields the server adds (status, uid,
//! resourceVersion, managedFields, creationTimestamp, defaults such as a
//! webhook's `objectSelector` or another tool's labels) are not drift. A
//! live object labelled `app.kubernetes.io/managed-by: warden` that Warden
//! no longer renders is drift ("extra"). Quantities in a ResourceQuota's
//! `hard` and a LimitRange's limits compare by value (`1000m` == `1`,
//! `1Gi` == `1073741824`); a number and the same quantity as a string
//! (`2` and `"2"`) are equal there too.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use serde_json::Value;

use super::render::MANAGED_BY;

/// The largest live export read (bytes).
pub const MAX_LIVE_BYTES: u64 = 64 << 20;
/// The deepest nesting of JSON arrays and objects in a live export (a
/// cluster object needs about 15, with its managedFields).
pub const MAX_LIVE_DEPTH: usize = 64;
/// The most objects a live export may list.
pub const MAX_LIVE_OBJECTS: usize = 200_000;

/// Kinds only rendered with `--webhook`: not compared without it.
pub const WEBHOOK_KINDS: [&str; 2] = [
    "ValidatingWebhookConfiguration",
    "MutatingWebhookConfiguration",
];

/// A bad live export.
#[derive(Debug, thiserror::Error)]
pub enum DiffError {
    /// Too large.
    #[error("the live export is larger than {} MiB; export only the kinds Warden renders", MAX_LIVE_BYTES >> 20)]
    TooLarge,
    /// Too deep.
    #[error(
        "the live export nests deeper than {MAX_LIVE_DEPTH} levels; it is not a kubectl export"
    )]
    TooDeep,
    /// Not JSON, or not the expected shape.
    #[error("the live export is not a kubectl JSON export: {0}")]
    Shape(String),
}

/// Where an object is.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct ObjectRef {
    /// `kind`.
    pub kind: String,
    /// `metadata.namespace` (empty for cluster-scoped objects).
    pub namespace: String,
    /// `metadata.name`.
    pub name: String,
}

impl fmt::Display for ObjectRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.namespace.is_empty() {
            write!(f, "{} {}", self.kind, self.name)
        } else {
            write!(f, "{} {}/{}", self.kind, self.namespace, self.name)
        }
    }
}

/// One difference.
#[derive(Debug, Clone, PartialEq)]
pub enum Drift {
    /// Rendered, not in the cluster.
    Missing(ObjectRef),
    /// In the cluster, labelled as Warden's, no longer rendered.
    Extra(ObjectRef),
    /// A rendered field has another value in the cluster.
    Changed {
        /// The object.
        object: ObjectRef,
        /// Dotted path with `[i]` indices (`spec.hard.requests.nvidia.com/gpu`
        /// is written `spec.hard["requests.nvidia.com/gpu"]`).
        path: String,
        /// What Warden renders.
        want: Value,
        /// What the cluster has (`None`: the field is absent).
        have: Option<Value>,
    },
}

impl fmt::Display for Drift {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Drift::Missing(o) => write!(f, "missing: {o} (rendered, not in the cluster)"),
            Drift::Extra(o) => write!(
                f,
                "extra: {o} (labelled {}={}, no longer rendered)",
                MANAGED_BY.0, MANAGED_BY.1
            ),
            Drift::Changed {
                object,
                path,
                want,
                have,
            } => {
                let have = have
                    .as_ref()
                    .map_or_else(|| "(absent)".to_owned(), Value::to_string);
                write!(f, "changed: {object} {path}: want {want}, have {have}")
            }
        }
    }
}

/// Reads a live export: a JSON object with `items` (a `List`, or a typed
/// list such as `NamespaceList`), or one object. Bounded in size (the
/// caller reads at most [`MAX_LIVE_BYTES`] + 1), depth and item count.
pub fn parse_live(bytes: &[u8]) -> Result<Vec<Value>, DiffError> {
    if bytes.len() as u64 > MAX_LIVE_BYTES {
        return Err(DiffError::TooLarge);
    }
    if !crate::doors::skypilot::wire::json_depth_within(bytes, MAX_LIVE_DEPTH) {
        return Err(DiffError::TooDeep);
    }
    let doc: Value =
        serde_json::from_slice(bytes).map_err(|e| DiffError::Shape(format!("not JSON: {e}")))?;
    let items = match doc {
        Value::Object(mut o) => match o.remove("items") {
            Some(Value::Array(items)) => items,
            Some(Value::Null) => Vec::new(),
            Some(_) => return Err(DiffError::Shape("`items` is not a list".to_owned())),
            None if o.contains_key("kind") => vec![Value::Object(o)],
            None => {
                return Err(DiffError::Shape(
                    "neither a `List` (with `items`) nor an object (with `kind`)".to_owned(),
                ))
            }
        },
        _ => {
            return Err(DiffError::Shape(
                "the top level is not a JSON object; use `kubectl get ... -o json`".to_owned(),
            ))
        }
    };
    if items.len() > MAX_LIVE_OBJECTS {
        return Err(DiffError::Shape(format!(
            "{} objects; at most {MAX_LIVE_OBJECTS} are read",
            items.len()
        )));
    }
    for (i, item) in items.iter().enumerate() {
        object_ref(item).map_err(|e| DiffError::Shape(format!("items[{i}]: {e}")))?;
    }
    Ok(items)
}

fn object_ref(v: &Value) -> Result<ObjectRef, String> {
    let text = |field: Option<&Value>, what: &str| -> Result<String, String> {
        match field {
            Some(Value::String(s)) if !s.is_empty() => Ok(s.clone()),
            _ => Err(format!("no `{what}` (a non-empty string)")),
        }
    };
    if !v.is_object() {
        return Err("not an object".to_owned());
    }
    let kind = text(v.get("kind"), "kind")?;
    let meta = v.get("metadata");
    let name = text(meta.and_then(|m| m.get("name")), "metadata.name")?;
    let namespace = match meta.and_then(|m| m.get("namespace")) {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(s)) => s.clone(),
        Some(_) => return Err("`metadata.namespace` is not a string".to_owned()),
    };
    Ok(ObjectRef {
        kind,
        namespace,
        name,
    })
}

fn is_managed(v: &Value) -> bool {
    v.pointer("/metadata/labels")
        .and_then(|l| l.get(MANAGED_BY.0))
        .and_then(Value::as_str)
        == Some(MANAGED_BY.1)
}

/// Every drift between `rendered` and `live`, in order: rendered objects
/// (missing, then changed fields) in render order, then extras sorted.
/// Webhook registrations are compared only when `with_webhook`.
pub fn diff(rendered: &[Value], live: &[Value], with_webhook: bool) -> Vec<Drift> {
    let mut live_by: BTreeMap<ObjectRef, &Value> = BTreeMap::new();
    for v in live {
        if let Ok(r) = object_ref(v) {
            live_by.insert(r, v);
        }
    }
    let mut out = Vec::new();
    let mut seen = BTreeSet::new();
    for want in rendered {
        let Ok(r) = object_ref(want) else { continue };
        match live_by.get(&r) {
            None => out.push(Drift::Missing(r.clone())),
            Some(have) => {
                let mut changes = Vec::new();
                let quantities = matches!(r.kind.as_str(), "ResourceQuota" | "LimitRange");
                compare(want, have, String::new(), quantities, false, &mut changes);
                for (path, want, have) in changes {
                    out.push(Drift::Changed {
                        object: r.clone(),
                        path,
                        want,
                        have,
                    });
                }
            }
        }
        seen.insert(r);
    }
    for (r, v) in &live_by {
        let compared = with_webhook || !WEBHOOK_KINDS.contains(&r.kind.as_str());
        if compared && is_managed(v) && !seen.contains(r) {
            out.push(Drift::Extra(r.clone()));
        }
    }
    out
}

/// Keys under which quantities live (ResourceQuota `hard`, LimitRange
/// limits).
const QUANTITY_PARENTS: [&str; 6] = [
    "hard",
    "default",
    "defaultRequest",
    "max",
    "min",
    "maxLimitRequestRatio",
];

fn key_path(parent: &str, key: &str) -> String {
    let plain = key
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    match (parent.is_empty(), plain) {
        (true, true) => key.to_owned(),
        (false, true) => format!("{parent}.{key}"),
        (_, false) => format!("{parent}[{}]", Value::String(key.to_owned())),
    }
}

/// Compares what Warden renders (`want`) with `have`, recording each
/// differing leaf; keys `have` has and `want` lacks are not compared.
/// Lists of different lengths differ as a whole.
fn compare(
    want: &Value,
    have: &Value,
    path: String,
    quantities: bool,
    in_quantity: bool,
    out: &mut Vec<(String, Value, Option<Value>)>,
) {
    match (want, have) {
        (Value::Object(w), Value::Object(h)) => {
            for (k, wv) in w {
                let p = key_path(&path, k);
                match h.get(k) {
                    Some(hv) => {
                        // Inside a quantity map, or the map itself.
                        let q =
                            quantities && (in_quantity || QUANTITY_PARENTS.contains(&k.as_str()));
                        compare(wv, hv, p, quantities, q, out);
                    }
                    None => out.push((p, wv.clone(), None)),
                }
            }
        }
        (Value::Array(w), Value::Array(h)) if w.len() == h.len() => {
            for (i, (wv, hv)) in w.iter().zip(h).enumerate() {
                compare(wv, hv, format!("{path}[{i}]"), quantities, false, out);
            }
        }
        (w, h) if in_quantity && same_quantity(w, h) => {}
        (w, h) if w == h => {}
        (w, h) => out.push((path, w.clone(), Some(h.clone()))),
    }
}

fn quantity_text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

fn same_quantity(a: &Value, b: &Value) -> bool {
    match (
        quantity_text(a).as_deref().and_then(Quantity::parse),
        quantity_text(b).as_deref().and_then(Quantity::parse),
    ) {
        (Some(a), Some(b)) => a.same(&b),
        _ => false,
    }
}

/// A non-negative Kubernetes quantity as `mantissa × 2^pow2 × 10^pow10`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quantity {
    mantissa: u128,
    pow2: u32,
    pow10: i32,
}

impl Quantity {
    /// Parses `1`, `500m`, `4Gi`, `1.5`, `1e3`, `+2`; `None` when it is not
    /// a quantity or too large to compare exactly.
    pub fn parse(s: &str) -> Option<Quantity> {
        if !warden_core::kubernetes::is_quantity(s) {
            return None;
        }
        let s = s.strip_prefix('+').unwrap_or(s);
        let end = s
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(s.len());
        let (num, suffix) = s.split_at(end);
        let (int, frac) = num.split_once('.').unwrap_or((num, ""));
        let digits = format!("{int}{frac}");
        let digits = digits.trim_start_matches('0');
        let mantissa: u128 = if digits.is_empty() {
            0
        } else {
            digits.parse().ok()?
        };
        let mut pow10 = -i32::try_from(frac.len()).ok()?;
        let mut pow2 = 0;
        match suffix {
            "" => {}
            "Ki" | "Mi" | "Gi" | "Ti" | "Pi" | "Ei" => {
                let i = ["Ki", "Mi", "Gi", "Ti", "Pi", "Ei"]
                    .iter()
                    .position(|x| *x == suffix)?;
                pow2 = 10 * (u32::try_from(i).ok()? + 1);
            }
            "n" => pow10 -= 9,
            "u" => pow10 -= 6,
            "m" => pow10 -= 3,
            "k" => pow10 += 3,
            "M" => pow10 += 6,
            "G" => pow10 += 9,
            "T" => pow10 += 12,
            "P" => pow10 += 15,
            "E" => pow10 += 18,
            e => {
                let e = e.get(1..)?;
                pow10 += e.parse::<i32>().ok()?;
            }
        }
        Some(Quantity {
            mantissa,
            pow2,
            pow10,
        })
    }

    /// Whether two quantities are the same amount (exactly; a comparison
    /// that would overflow says no).
    pub fn same(&self, other: &Quantity) -> bool {
        if self.mantissa == 0 || other.mantissa == 0 {
            return self.mantissa == other.mantissa;
        }
        let low = self.pow10.min(other.pow10);
        let scaled = |q: &Quantity| -> Option<u128> {
            let up = u32::try_from(q.pow10 - low).ok()?;
            q.mantissa
                .checked_mul(10u128.checked_pow(up)?)?
                .checked_mul(2u128.checked_pow(q.pow2)?)
        };
        match (scaled(self), scaled(other)) {
            (Some(a), Some(b)) => a == b,
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn quantities_compare_by_value() {
        let same = |a: &str, b: &str| {
            Quantity::parse(a)
                .unwrap()
                .same(&Quantity::parse(b).unwrap())
        };
        assert!(same("1000m", "1"));
        assert!(same("1Gi", "1073741824"));
        assert!(same("1.5", "1500m"));
        assert!(same("1e3", "1k"));
        assert!(same("0.5Gi", "512Mi"));
        assert!(same("0", "0m"));
        assert!(!same("1", "1001m"));
        assert!(!same("1G", "1Gi"));
        assert!(Quantity::parse("ten").is_none());
    }

    #[test]
    fn only_rendered_fields_are_compared() {
        let want = json!({"kind": "ResourceQuota", "metadata": {"name": "w", "namespace": "a"},
            "spec": {"hard": {"pods": "10", "requests.storage": "1Ti"}}});
        let have = json!({"kind": "ResourceQuota", "metadata": {"name": "w", "namespace": "a", "uid": "x"},
            "spec": {"hard": {"pods": 10, "requests.storage": "1024Gi"}}, "status": {}});
        assert_eq!(diff(std::slice::from_ref(&want), &[have], false), []);
        let changed = json!({"kind": "ResourceQuota", "metadata": {"name": "w", "namespace": "a"},
            "spec": {"hard": {"pods": "11"}}});
        let d = diff(&[want], &[changed], false);
        assert_eq!(d.len(), 2, "{d:?}");
        assert_eq!(
            d[0].to_string(),
            "changed: ResourceQuota a/w spec.hard.pods: want \"10\", have \"11\""
        );
        assert_eq!(
            d[1].to_string(),
            "changed: ResourceQuota a/w spec.hard[\"requests.storage\"]: want \"1Ti\", have (absent)"
        );
    }

    #[test]
    fn bad_exports_are_refused_precisely() {
        assert!(matches!(parse_live(b"[1]"), Err(DiffError::Shape(_))));
        assert!(matches!(
            parse_live(b"{\"items\": 3}"),
            Err(DiffError::Shape(_))
        ));
        let e = parse_live(br#"{"items": [{"kind": "Namespace", "metadata": {}}]}"#).unwrap_err();
        assert_eq!(
            e.to_string(),
            "the live export is not a kubectl JSON export: items[0]: no `metadata.name` (a non-empty string)"
        );
        let deep = format!("{}{}", "[".repeat(100), "]".repeat(100));
        assert!(matches!(
            parse_live(deep.as_bytes()),
            Err(DiffError::TooDeep)
        ));
    }
}
