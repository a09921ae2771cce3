//! Applying an allowed decision to the object, as a JSONPatch.
//!
//! The changes are made to a copy of the object, then the patch is the
//! difference between the two ([`diff`]): `add` for a new or changed key
//! (JSONPatch `add` replaces an existing member), `remove` for a removed
//! one, whole lists replaced. What Warden writes:
//!
//! - on the object and on each pod template: the labels `warden.dev/team`
//!   and the team's `kubernetes.labels` (cost centre ...), the labels of
//!   rules' `add_labels`, and the annotation [`ALLOCATION_ANNOTATION`]
//!   naming the allocation (so every pod made from a template names it: the
//!   usage sync and DELETE read it);
//! - `activeDeadlineSeconds` of Pods, Jobs and CronJobs' job templates
//!   capped at `teams.<t>.kubernetes.max_active_deadline_seconds` (set when
//!   absent or larger);
//! - a rule's `use_spot: true`: the first configured spot node label
//!   (`kubernetes.spot_node_labels`, in key order) as a `nodeSelector` of
//!   each pod template;
//! - a rule's `set` of `task.<path>`: that path of the object.
//!
//! Rules' autostop, `set_resource`, volumes and `config.*` paths have no
//! meaning here: they are reported as not applicable (decision line).

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::{json, Map, Value};
use warden_core::{eval::set_path, AppliedMutation, Doc, Mutation};

use super::workload::Template;
use crate::config::KubernetesConfig;

/// The label naming the team on every admitted object and pod.
pub const TEAM_LABEL: &str = "warden.dev/team";

/// The annotation naming the allocation an object (and every pod made from
/// its templates) is counted under.
pub const ALLOCATION_ANNOTATION: &str = "warden.dev/allocation";

/// What to apply besides the rules' mutations.
#[derive(Debug, Clone)]
pub struct Fixed<'a> {
    /// The team.
    pub team: &'a str,
    /// The team's `kubernetes.labels`.
    pub labels: &'a BTreeMap<String, String>,
    /// The team's deadline cap.
    pub max_deadline: Option<u64>,
    /// The allocation's name.
    pub allocation: &'a str,
    /// The object's kind.
    pub kind: &'a str,
}

fn ensure_object<'v>(v: &'v mut Value, key: &str) -> Option<&'v mut Map<String, Value>> {
    let m = v.as_object_mut()?;
    let entry = m
        .entry(key.to_owned())
        .or_insert_with(|| Value::Object(Map::new()));
    if !entry.is_object() {
        *entry = Value::Object(Map::new());
    }
    entry.as_object_mut()
}

fn meta_map<'v>(v: &'v mut Value, which: &str) -> Option<&'v mut Map<String, Value>> {
    let meta = ensure_object(v, "metadata")?;
    let entry = meta
        .entry(which.to_owned())
        .or_insert_with(|| Value::Object(Map::new()));
    if !entry.is_object() {
        *entry = Value::Object(Map::new());
    }
    entry.as_object_mut()
}

fn pointer_mut<'v>(v: &'v mut Value, path: &[String]) -> Option<&'v mut Value> {
    path.iter().try_fold(v, |v, k| match v {
        Value::Object(m) => m.get_mut(k),
        Value::Array(a) => k.parse::<usize>().ok().and_then(|i| a.get_mut(i)),
        _ => None,
    })
}

/// Whether `v` is a valid label value (else it is not applied).
fn label_ok(k: &str, v: &str) -> bool {
    warden_core::kubernetes::is_label_key(k) && warden_core::kubernetes::is_label_value(v)
}

/// Applies `fixed` and the decision's `mutations` to `object` (with none:
/// only Warden's own marks, for an UPDATE that is not judged again);
/// returns the mutations that have no meaning here.
pub fn apply(
    config: &KubernetesConfig,
    mutations: &[AppliedMutation],
    fixed: &Fixed<'_>,
    templates: &[Template],
    object: &mut Value,
) -> Vec<String> {
    let mut skipped = Vec::new();
    let mut labels: BTreeMap<String, String> = fixed.labels.clone();
    labels.insert(TEAM_LABEL.to_owned(), fixed.team.to_owned());
    let mut spot = false;
    for applied in mutations {
        let rule = applied.rule.as_str();
        match &applied.mutation {
            Mutation::AddLabels { labels: add } => {
                for (k, v) in add {
                    if label_ok(k, v) {
                        labels.insert(k.clone(), v.clone());
                    } else {
                        skipped.push(format!("{rule}: label `{k}={v}` (not a Kubernetes label)"));
                    }
                }
            }
            Mutation::UseSpot { .. } => {
                if config.spot_node_labels.is_empty() {
                    skipped.push(format!("{rule}: spot (no `kubernetes.spot_node_labels`)"));
                } else {
                    spot = true;
                }
            }
            Mutation::SetPath {
                doc: Doc::Task,
                path,
                value,
            } => set_path(object, path, value.clone()),
            Mutation::SetPath {
                doc: Doc::Config,
                path,
                ..
            } => skipped.push(format!("{rule}: config.{}", path.join("."))),
            Mutation::SetResource { field, .. } => {
                skipped.push(format!("{rule}: {}", field.as_str()));
            }
            Mutation::SetAutostop(_) => skipped.push(format!("{rule}: autostop")),
            Mutation::AddVolumes { .. } => skipped.push(format!("{rule}: volumes")),
            Mutation::PruneResources { .. } => {}
        }
    }
    let mark = |v: &mut Value| {
        if let Some(m) = meta_map(v, "labels") {
            for (k, val) in &labels {
                m.insert(k.clone(), json!(val));
            }
        }
        if let Some(m) = meta_map(v, "annotations") {
            m.insert(ALLOCATION_ANNOTATION.to_owned(), json!(fixed.allocation));
        }
    };
    mark(object);
    for t in templates.iter().filter(|t| !t.path.is_empty()) {
        if let Some(template) = pointer_mut(object, &t.path) {
            mark(template);
        }
    }
    if spot {
        if let Some((k, v)) = config.spot_node_labels.iter().next() {
            let pod_specs: Vec<Vec<String>> = templates
                .iter()
                .map(|t| {
                    let mut p = t.path.clone();
                    p.push("spec".to_owned());
                    p
                })
                .collect();
            for p in pod_specs {
                if let Some(spec) = pointer_mut(object, &p) {
                    if let Some(sel) = ensure_object(spec, "nodeSelector") {
                        sel.insert(k.clone(), json!(v));
                    }
                }
            }
        }
    }
    if let Some(cap) = fixed.max_deadline {
        let path: &[&str] = match fixed.kind {
            "Pod" | "Job" => &["spec"],
            "CronJob" => &["spec", "jobTemplate", "spec"],
            _ => &[],
        };
        if !path.is_empty() {
            let path: Vec<String> = path.iter().map(|s| (*s).to_owned()).collect();
            if let Some(Value::Object(spec)) = pointer_mut(object, &path) {
                let current = spec.get("activeDeadlineSeconds").and_then(Value::as_u64);
                if current.is_none_or(|c| c > cap) {
                    spec.insert("activeDeadlineSeconds".to_owned(), json!(cap));
                }
            }
        }
    }
    skipped
}

/// The JSONPatch that [`apply`] makes of `object` (a copy is changed, then
/// compared), and the mutations that have no meaning here.
pub fn patch_for(
    config: &KubernetesConfig,
    mutations: &[AppliedMutation],
    fixed: &Fixed<'_>,
    templates: &[Template],
    object: &Value,
) -> (Patch, Vec<String>) {
    let mut changed = object.clone();
    let not_applicable = apply(config, mutations, fixed, templates, &mut changed);
    (Patch::of(&diff(object, &changed)), not_applicable)
}

/// One JSONPatch operation, borrowing its value from the object it was
/// computed against; it writes as `{"op", "path"[, "value"]}`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PatchOp<'a> {
    op: &'static str,
    path: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    value: Option<&'a Value>,
}

/// The JSONPatch that turns `old` into `new`.
pub fn diff<'a>(old: &Value, new: &'a Value) -> Vec<PatchOp<'a>> {
    let mut ops = Vec::new();
    diff_at(old, new, &mut String::new(), &mut ops);
    ops
}

/// Appends to `ops` what turns `old`, at the JSON pointer `path`, into
/// `new`. `path` is one buffer for the whole walk: each key is appended
/// (escaped) before descending and cut off after, so an object that did not
/// change costs no allocation.
fn diff_at<'a>(old: &Value, new: &'a Value, path: &mut String, ops: &mut Vec<PatchOp<'a>>) {
    let op = |op, path: &str, value| PatchOp {
        op,
        path: path.to_owned(),
        value,
    };
    match (old, new) {
        (Value::Object(a), Value::Object(b)) => {
            let len = path.len();
            for (k, bv) in b {
                match a.get(k) {
                    Some(av) if av == bv => {}
                    Some(av) => {
                        push_token(path, k);
                        diff_at(av, bv, path, ops);
                        path.truncate(len);
                    }
                    None => {
                        push_token(path, k);
                        ops.push(op("add", path, Some(bv)));
                        path.truncate(len);
                    }
                }
            }
            for k in a.keys().filter(|k| !b.contains_key(*k)) {
                push_token(path, k);
                ops.push(op("remove", path, None));
                path.truncate(len);
            }
        }
        (a, b) if a == b => {}
        (_, b) if path.is_empty() => ops.push(op("replace", "", Some(b))),
        (_, b) => ops.push(op("add", path, Some(b))),
    }
}

/// A JSONPatch as the text the webhook's answer carries (base64-encoded),
/// or none.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Patch(Option<String>);

impl Patch {
    /// No change.
    pub fn none() -> Patch {
        Patch(None)
    }

    /// `ops` written as a JSON array; none when there are no `ops`.
    pub fn of(ops: &[PatchOp<'_>]) -> Patch {
        if ops.is_empty() {
            return Patch(None);
        }
        // Strings and JSON values: writing cannot fail; should it, the
        // object is let through unchanged rather than with half a patch.
        Patch(serde_json::to_string(ops).ok())
    }

    /// The JSON text of the operations, when there are any.
    pub fn text(&self) -> Option<&str> {
        self.0.as_deref()
    }
}

/// Appends `/` and `key` as a JSON pointer token (`~` → `~0`, `/` → `~1`).
fn push_token(path: &mut String, key: &str) {
    path.push('/');
    for c in key.chars() {
        match c {
            '~' => path.push_str("~0"),
            '/' => path.push_str("~1"),
            c => path.push(c),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn diff(old: &Value, new: &Value) -> Vec<Value> {
        super::diff(old, new)
            .iter()
            .map(|op| serde_json::to_value(op).unwrap())
            .collect()
    }

    #[test]
    fn a_patch_is_the_operations_as_one_json_array() {
        let old = json!({"a": 1});
        let new = json!({"a": 2, "b": {"c": "d"}});
        assert_eq!(
            Patch::of(&super::diff(&old, &new)).text(),
            Some(
                r#"[{"op":"add","path":"/a","value":2},{"op":"add","path":"/b","value":{"c":"d"}}]"#
            )
        );
        assert_eq!(Patch::of(&super::diff(&old, &old)), Patch::none());
        assert_eq!(Patch::none().text(), None);
    }

    #[test]
    fn the_patch_adds_what_changed_and_escapes_keys() {
        let old = json!({"metadata": {"name": "x"}, "spec": {"a": 1, "list": [1]}});
        let new = json!({"metadata": {"name": "x", "labels": {"warden.dev/team": "ml"}}, "spec": {"a": 2, "list": [1, 2]}});
        assert_eq!(
            diff(&old, &new),
            vec![
                json!({"op": "add", "path": "/metadata/labels", "value": {"warden.dev/team": "ml"}}),
                json!({"op": "add", "path": "/spec/a", "value": 2}),
                json!({"op": "add", "path": "/spec/list", "value": [1, 2]}),
            ]
        );
        let old = json!({"metadata": {"labels": {"a": "1"}}});
        let new = json!({"metadata": {"labels": {"a": "1", "warden.dev/team": "ml"}}});
        assert_eq!(
            diff(&old, &new),
            vec![json!({"op": "add", "path": "/metadata/labels/warden.dev~1team", "value": "ml"})]
        );
        // Removed keys, `~` escaped, siblings' paths not carried over.
        let old = json!({"a": {"x~y": 1, "b/c": {"d": 1}}, "e": {"f": [1]}, "g": 1});
        let new = json!({"a": {"b/c": {"d": 2}}, "e": {"f": [1]}, "g": 2});
        assert_eq!(
            diff(&old, &new),
            vec![
                json!({"op": "add", "path": "/a/b~1c/d", "value": 2}),
                json!({"op": "remove", "path": "/a/x~0y"}),
                json!({"op": "add", "path": "/g", "value": 2}),
            ]
        );
        assert_eq!(diff(&old, &old), Vec::<Value>::new());
        assert_eq!(
            diff(&json!(1), &json!({"a": 1})),
            vec![json!({"op": "replace", "path": "", "value": {"a": 1}})]
        );
    }
}
