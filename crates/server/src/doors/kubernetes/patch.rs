//! Applying an allowed decision to the object, as a JSONPatch.
//!
//! The patch is the difference between the object and the object with the
//! changes made ([`diff`]): `add` for a new or changed key (JSONPatch `add`
//! replaces an existing member), `remove` for a removed one, whole lists
//! replaced. When a decision only marks, caps and selects spot nodes (no
//! rule `set`s a `task.<path>`), the operations are worked out from the
//! object in place ([`patch_for`]), without copying it: the same operations,
//! in the same order, as the difference would give. What Warden writes:
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

use std::borrow::Cow;
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
    let Plan {
        labels,
        spot,
        skipped,
    } = plan(config, mutations, fixed, |path, value| {
        set_path(object, path, value.clone());
    });
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
    if let Some((k, v)) = spot {
        for t in templates {
            let mut p = t.path.clone();
            p.push("spec".to_owned());
            if let Some(spec) = pointer_mut(object, &p) {
                if let Some(sel) = ensure_object(spec, "nodeSelector") {
                    sel.insert(k.clone(), json!(v));
                }
            }
        }
    }
    if let Some(cap) = fixed.max_deadline {
        let path = deadline_spec(fixed.kind);
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

/// The pod spec of a `kind` whose `activeDeadlineSeconds` is capped (none:
/// not capped).
fn deadline_spec(kind: &str) -> &'static [&'static str] {
    match kind {
        "Pod" | "Job" => &["spec"],
        "CronJob" => &["spec", "jobTemplate", "spec"],
        _ => &[],
    }
}

/// What a decision's mutations come to here, besides their `task.<path>`
/// sets (given to `set_task` in order).
struct Plan<'c> {
    /// Every label to set, Warden's own included.
    labels: BTreeMap<String, String>,
    /// The node label spot asks for.
    spot: Option<(&'c String, &'c String)>,
    /// The mutations that have no meaning here.
    skipped: Vec<String>,
}

fn plan<'c>(
    config: &'c KubernetesConfig,
    mutations: &[AppliedMutation],
    fixed: &Fixed<'_>,
    mut set_task: impl FnMut(&[String], &Value),
) -> Plan<'c> {
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
            } => set_task(path, value),
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
    Plan {
        labels,
        spot: if spot {
            config.spot_node_labels.iter().next()
        } else {
            None
        },
        skipped,
    }
}

/// The JSONPatch that [`apply`] makes of `object`, and the mutations that
/// have no meaning here. Worked out in place ([`in_place`]) when no rule
/// sets a `task.<path>`, else by changing a copy and comparing.
pub fn patch_for(
    config: &KubernetesConfig,
    mutations: &[AppliedMutation],
    fixed: &Fixed<'_>,
    templates: &[Template],
    object: &Value,
) -> (Patch, Vec<String>) {
    if let Some((ops, not_applicable)) = in_place(config, mutations, fixed, templates, object) {
        return (Patch::of(&ops), not_applicable);
    }
    let mut changed = object.clone();
    let not_applicable = apply(config, mutations, fixed, templates, &mut changed);
    (Patch::of(&diff(object, &changed)), not_applicable)
}

/// [`diff`] of `object` and [`apply`]'s change of it, worked out without
/// a copy: [`apply`] only sets members (`key = value`) of objects it
/// creates where they are missing or not objects, so each set is one
/// `add`: of the value, where the member differs, or of the new object,
/// at the first missing one on its path (several sets in one new object
/// make one `add`), ordered by path as [`diff`] walks. `None` (compare a
/// copy) when a rule sets a `task.<path>` (any change), or when a template
/// is reached through a list (the difference replaces a changed list
/// whole) or through a `metadata` (a mark could create it).
fn in_place(
    config: &KubernetesConfig,
    mutations: &[AppliedMutation],
    fixed: &Fixed<'_>,
    templates: &[Template],
    object: &Value,
) -> Option<(Vec<PatchOp<'static>>, Vec<String>)> {
    let mut sets_task = false;
    let Plan {
        labels,
        spot,
        skipped,
    } = plan(config, mutations, fixed, |_, _| sets_task = true);
    if sets_task
        || templates
            .iter()
            .any(|t| t.path.iter().any(|k| k == "metadata"))
    {
        return None;
    }
    let mut adds = Adds::default();
    let allocation = Value::String(fixed.allocation.to_owned());
    let paths: Vec<Vec<&str>> = templates
        .iter()
        .map(|t| t.path.iter().map(String::as_str).collect())
        .collect();
    adds.mark(object, &[], &labels, &allocation)?;
    for path in paths.iter().filter(|p| !p.is_empty()) {
        adds.mark(object, path, &labels, &allocation)?;
    }
    if let Some((k, v)) = spot {
        for path in &paths {
            let mut base = path.clone();
            base.push("spec");
            if let Some(spec @ Value::Object(_)) = pointer_in_objects(object, &base)? {
                adds.set(spec, &base, &["nodeSelector", k], json!(v));
            }
        }
    }
    if let Some(cap) = fixed.max_deadline {
        let base = deadline_spec(fixed.kind);
        if let (false, Some(spec @ Value::Object(_))) =
            (base.is_empty(), pointer_in_objects(object, base)?)
        {
            let current = spec.get("activeDeadlineSeconds").and_then(Value::as_u64);
            if current.is_none_or(|c| c > cap) {
                adds.set(spec, base, &["activeDeadlineSeconds"], json!(cap));
            }
        }
    }
    Some((adds.ops(), skipped))
}

/// The value at `path` of `v` through objects only: `Some(None)` when it is
/// missing, `None` when the path goes through a list.
fn pointer_in_objects<'v>(v: &'v Value, path: &[&str]) -> Option<Option<&'v Value>> {
    let mut at = v;
    for k in path {
        match at {
            Value::Object(m) => match m.get(*k) {
                Some(next) => at = next,
                None => return Some(None),
            },
            Value::Array(_) => return None,
            _ => return Some(None),
        }
    }
    Some(Some(at))
}

/// The `add`s of [`in_place`], by path (as tokens).
#[derive(Default)]
struct Adds<'k>(BTreeMap<Vec<&'k str>, Value>);

impl<'k> Adds<'k> {
    /// [`apply`]'s marks of the object at `base`, when it is an object;
    /// `None` when `base` goes through a list.
    fn mark(
        &mut self,
        object: &Value,
        base: &[&'k str],
        labels: &'k BTreeMap<String, String>,
        allocation: &Value,
    ) -> Option<()> {
        let Some(node @ Value::Object(_)) = pointer_in_objects(object, base)? else {
            return Some(());
        };
        for (k, v) in labels {
            self.set(node, base, &["metadata", "labels", k], json!(v));
        }
        self.set(
            node,
            base,
            &["metadata", "annotations", ALLOCATION_ANNOTATION],
            allocation.clone(),
        );
        Some(())
    }

    /// Records what setting `rel` (the last token the member) under `node`,
    /// the object at `base` (found by the caller), comes to, as [`apply`]
    /// sets it: creating the objects on the way where they are missing or
    /// not objects.
    fn set(&mut self, node: &Value, base: &[&'k str], rel: &[&'k str], value: Value) {
        let Some((member, parents)) = rel.split_last() else {
            return;
        };
        let mut at = Some(node);
        let mut path: Vec<&str> = Vec::with_capacity(base.len() + rel.len());
        path.extend_from_slice(base);
        for (i, key) in parents.iter().enumerate() {
            path.push(key);
            match at.and_then(|v| v.get(*key)) {
                Some(next @ Value::Object(_)) => at = Some(next),
                _ => {
                    // Created here: one `add` of the new object, which later
                    // sets into it extend.
                    let rest = rel.get(i + 1..).unwrap_or_default();
                    let created = self
                        .0
                        .entry(path)
                        .or_insert_with(|| Value::Object(Map::new()));
                    set_path(
                        created,
                        &rest.iter().map(|k| (*k).to_owned()).collect::<Vec<_>>(),
                        value,
                    );
                    return;
                }
            }
        }
        if at.and_then(|v| v.get(*member)) == Some(&value) {
            return;
        }
        path.push(member);
        self.0.insert(path, value);
    }

    /// The operations in [`diff`]'s order: a depth-first walk of objects'
    /// members in key order, which is the order of their token paths.
    fn ops(self) -> Vec<PatchOp<'static>> {
        self.0
            .into_iter()
            .map(|(tokens, value)| {
                let mut path =
                    String::with_capacity(tokens.iter().map(|t| t.len() + 3).sum::<usize>());
                for t in tokens {
                    push_token(&mut path, t);
                }
                PatchOp {
                    op: "add",
                    path,
                    value: Some(Cow::Owned(value)),
                }
            })
            .collect()
    }
}

/// One JSONPatch operation, its value borrowed from the object it was
/// computed against ([`diff`]) or its own ([`patch_for`] worked out in
/// place); it writes as `{"op", "path"[, "value"]}`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PatchOp<'a> {
    op: &'static str,
    path: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    value: Option<Cow<'a, Value>>,
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
    let op = |op, path: &str, value: Option<&'a Value>| PatchOp {
        op,
        path: path.to_owned(),
        value: value.map(Cow::Borrowed),
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
    if !key.bytes().any(|b| b == b'~' || b == b'/') {
        path.push_str(key);
        return;
    }
    let mut rest = key;
    while let Some(at) = rest.find(['~', '/']) {
        let (before, from) = rest.split_at(at);
        path.push_str(before);
        let mut from = from.chars();
        path.push_str(if from.next() == Some('~') { "~0" } else { "~1" });
        rest = from.as_str();
    }
    path.push_str(rest);
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

    /// [`patch_for`] worked out in place gives the very patch (operations,
    /// order, values) that changing a copy and comparing gives, for objects
    /// with and without each thing Warden sets, of the wrong type, already
    /// set (to the same or another value), for every kind of template path.
    #[test]
    fn the_patch_worked_out_in_place_is_the_difference_of_a_changed_copy() {
        use warden_core::RuleName;
        let t = |path: &[&str]| Template {
            path: path.iter().map(|s| (*s).to_owned()).collect(),
            pods: 1,
        };
        let cases: Vec<(&str, Vec<Template>, Value)> = vec![
            ("Pod", vec![t(&[])], json!({})),
            (
                "Pod",
                vec![t(&[])],
                json!({"metadata": {"name": "p"}, "spec": {"containers": [{"name": "c"}]}}),
            ),
            (
                "Pod",
                vec![t(&[])],
                json!({"metadata": {"labels": {"warden.dev/team": "ml", "cost-centre": "cc-1", "owner": "alice"}, "annotations": {"warden.dev/allocation": "ml/pod/p"}}, "spec": {"activeDeadlineSeconds": 10, "nodeSelector": {"cloud.google.com/gke-spot": "true", "node.kubernetes.io/lifecycle": "spot", "eks.amazonaws.com/capacityType": "SPOT"}}}),
            ),
            (
                "Pod",
                vec![t(&[])],
                json!({"metadata": {"labels": {"warden.dev/team": "other", "cost-centre": 5}, "annotations": null}, "spec": {"activeDeadlineSeconds": 999_999, "nodeSelector": "x"}}),
            ),
            ("Pod", vec![t(&[])], json!({"metadata": "x", "spec": "x"})),
            (
                "Pod",
                vec![t(&[])],
                json!({"metadata": {"labels": [1], "annotations": {"a/b~c": "d"}}, "spec": {"activeDeadlineSeconds": "10", "nodeSelector": null}}),
            ),
            (
                "Pod",
                vec![t(&[])],
                json!({"metadata": {"labels": {}}, "spec": {"activeDeadlineSeconds": 86_400}}),
            ),
            (
                "Job",
                vec![t(&["spec", "template"])],
                json!({"metadata": {}, "spec": {"template": {"spec": {}}}}),
            ),
            (
                "Job",
                vec![t(&["spec", "template"])],
                json!({"spec": {"template": {"metadata": {"labels": {"run": "x"}}, "spec": {"nodeSelector": {}}}, "activeDeadlineSeconds": 5}}),
            ),
            ("Job", vec![t(&["spec", "template"])], json!({"spec": {}})),
            (
                "Job",
                vec![t(&["spec", "template"])],
                json!({"spec": {"template": "x"}}),
            ),
            (
                "CronJob",
                vec![t(&["spec", "jobTemplate", "spec", "template"])],
                json!({"spec": {"jobTemplate": {"spec": {"template": {"spec": {}}}}}}),
            ),
            (
                "CronJob",
                vec![t(&["spec", "jobTemplate", "spec", "template"])],
                json!({"spec": {"jobTemplate": {"metadata": {}, "spec": {"activeDeadlineSeconds": 100_000_000, "template": {"metadata": {"annotations": {}}, "spec": {"nodeSelector": {"a": "b"}}}}}}}),
            ),
            (
                "Deployment",
                vec![t(&["spec", "template"])],
                json!({"metadata": {"name": "d"}, "spec": {"replicas": 2, "template": {"metadata": {"labels": {"app": "d"}}, "spec": {"containers": []}}}}),
            ),
            (
                "PyTorchJob",
                vec![
                    t(&["spec", "pytorchReplicaSpecs", "Master", "template"]),
                    t(&["spec", "pytorchReplicaSpecs", "Worker", "template"]),
                ],
                json!({"spec": {"pytorchReplicaSpecs": {"Master": {"template": {"spec": {}}}, "Worker": {"template": {"metadata": {}, "spec": {"nodeSelector": {"z": "1"}}}}}}}),
            ),
            // No template: only the object's own marks and cap.
            (
                "Job",
                vec![],
                json!({"metadata": {"labels": {"a": "1"}}, "spec": {"template": {"spec": {}}}}),
            ),
            // The same template twice.
            (
                "Job",
                vec![t(&["spec", "template"]), t(&["spec", "template"])],
                json!({"spec": {"template": {"spec": {}}}}),
            ),
            // Worked out by comparing a copy: a template in a list, or under a `metadata`.
            (
                "Flow",
                vec![t(&["spec", "tasks", "0", "template"])],
                json!({"spec": {"tasks": [{"template": {"spec": {}}}]}}),
            ),
            (
                "Odd",
                vec![t(&["metadata", "template"])],
                json!({"metadata": {"template": {"spec": {}}}}),
            ),
        ];
        let rule = |name: &str, mutation: Mutation| AppliedMutation {
            rule: RuleName::parse(name).unwrap(),
            mutation,
        };
        let labels = |pairs: &[(&str, &str)]| -> BTreeMap<String, String> {
            pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect()
        };
        let mutation_sets: Vec<Vec<AppliedMutation>> = vec![
            vec![],
            vec![rule(
                "tag",
                Mutation::AddLabels {
                    labels: labels(&[("owner", "alice"), ("not a key!", "x")]),
                },
            )],
            vec![rule("spot", Mutation::UseSpot { resources: vec![0] })],
            vec![
                rule(
                    "tag",
                    Mutation::AddLabels {
                        labels: labels(&[("warden.dev/team", "hijack"), ("a", "1")]),
                    },
                ),
                rule("spot", Mutation::UseSpot { resources: vec![0] }),
                rule("prune", Mutation::PruneResources { resources: vec![1] }),
            ],
        ];
        let set_task = vec![rule(
            "set",
            Mutation::SetPath {
                doc: Doc::Task,
                path: vec!["spec".to_owned(), "priorityClassName".to_owned()],
                value: json!("low"),
            },
        )];
        let with_spot = KubernetesConfig::default();
        assert!(!with_spot.spot_node_labels.is_empty());
        let mut without_spot = KubernetesConfig::default();
        without_spot.spot_node_labels.clear();
        let team_labels = [labels(&[]), labels(&[("cost-centre", "cc-1")])];
        let mut in_place_count = 0;
        let mut compared = 0;
        for (kind, templates, object) in &cases {
            for config in [&with_spot, &without_spot] {
                for team_labels in &team_labels {
                    for max_deadline in [None, Some(86_400)] {
                        let fixed = Fixed {
                            team: "ml",
                            labels: team_labels,
                            max_deadline,
                            allocation: "ml/pod/p",
                            kind,
                        };
                        for mutations in mutation_sets.iter().chain([&set_task]) {
                            let mut changed = object.clone();
                            let skipped = apply(config, mutations, &fixed, templates, &mut changed);
                            let expected = Patch::of(&super::diff(object, &changed));
                            let got = in_place(config, mutations, &fixed, templates, object);
                            if let Some((ops, got_skipped)) = got {
                                assert_eq!(
                                    Patch::of(&ops),
                                    expected,
                                    "{kind} {object} {mutations:?}"
                                );
                                assert_eq!(got_skipped, skipped);
                                in_place_count += 1;
                            } else {
                                assert!(
                                    std::ptr::eq(mutations, &set_task)
                                        || matches!(*kind, "Flow" | "Odd"),
                                    "{kind} {object}: not worked out in place"
                                );
                            }
                            assert_eq!(
                                patch_for(config, mutations, &fixed, templates, object),
                                (expected, skipped)
                            );
                            compared += 1;
                        }
                    }
                }
            }
        }
        assert_eq!(
            compared,
            cases.len() * 2 * 2 * 2 * (mutation_sets.len() + 1)
        );
        assert_eq!(
            in_place_count,
            (cases.len() - 2) * 2 * 2 * 2 * mutation_sets.len()
        );
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
