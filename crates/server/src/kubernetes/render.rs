//! The objects `warden k8s render` prints: for each team with a namespace, a
//! `Namespace`, a `ResourceQuota` (GPU quota, per-model quotas, storage,
//! PVCs, pods), a `LimitRange` (default requests), a `NetworkPolicy`
//! (no ingress from other namespaces) and `RoleBinding`s of the five
//! Warden roles to the groups of `role_bindings`; once, the five
//! `ClusterRole`s; and, when asked, the validating and mutating webhook
//! registrations of `POST /k8s/admission`.
//!
//! The output is a function of the config alone: the same config renders
//! the same bytes (objects in a fixed order, keys sorted). Every object
//! carries `app.kubernetes.io/managed-by: warden`, which is how
//! [`super::diff`] recognises objects Warden no longer renders.

use std::collections::{BTreeMap, BTreeSet};

use base64::Engine as _;
use serde_json::{json, Map, Value};
use warden_core::access::{Member, Role, TeamScope};
use warden_core::kubernetes::is_label_value;
use warden_core::{Policy, Team};

use crate::config::KubernetesConfig;

/// The label every rendered object carries.
pub const MANAGED_BY: (&str, &str) = ("app.kubernetes.io/managed-by", "warden");
/// The label naming the team of a namespace and of the objects in it; the
/// webhooks select namespaces that have it.
pub const TEAM_LABEL: &str = "warden.dev/team";
/// The admission endpoint's path (validate and mutate alike).
pub const ADMISSION_PATH: &str = "/k8s/admission";
/// Name of the rendered ResourceQuota, LimitRange and NetworkPolicy, and of
/// the webhook configurations.
pub const OBJECT_NAME: &str = "warden";
/// The largest CA file `--ca-file` reads.
pub const MAX_CA_BYTES: u64 = 1 << 20;

/// What `k8s render` is asked for.
#[derive(Debug, Clone, Default)]
pub struct RenderOptions {
    /// Only this team (`--team`); all teams when `None`.
    pub team: Option<String>,
    /// The webhook registrations, when `--webhook URL --ca-file F` are given.
    pub webhook: Option<WebhookTarget>,
}

/// Where the API server reaches Warden's admission endpoint.
#[derive(Debug, Clone)]
pub struct WebhookTarget {
    /// `https://host[:port]/k8s/admission` (checked by [`WebhookTarget::new`]).
    url: String,
    /// The PEM CA bundle the API server trusts Warden's certificate by.
    ca_pem: Vec<u8>,
}

impl WebhookTarget {
    /// Checks `url` (https, no query, fragment or credentials; the path is
    /// `/k8s/admission`, appended when the URL has none) and `ca_pem` (a PEM
    /// certificate).
    pub fn new(url: &str, ca_pem: Vec<u8>) -> Result<Self, RenderError> {
        let bad = |why: &str| RenderError::Webhook(format!("`{url}` {why}"));
        let rest = url
            .strip_prefix("https://")
            .ok_or_else(|| bad("is not an https URL; the API server calls webhooks over TLS only (e.g. `https://warden.warden-system.svc:8443`)"))?;
        if url.len() > 2048 || url.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(bad("is not a URL"));
        }
        if rest.contains(['?', '#', '@']) {
            return Err(bad(
                "has a query, fragment or user part; Kubernetes refuses them in a webhook URL",
            ));
        }
        let (host, path) = match rest.find('/') {
            Some(i) => rest.split_at(i),
            None => (rest, ""),
        };
        if host.is_empty() {
            return Err(bad("has no host"));
        }
        let path = match path.trim_end_matches('/') {
            "" => ADMISSION_PATH,
            p if p == ADMISSION_PATH => ADMISSION_PATH,
            p => {
                return Err(bad(&format!(
                    "has path `{p}`; give the server's base URL (the path is `{ADMISSION_PATH}`)"
                )))
            }
        };
        let text = String::from_utf8_lossy(&ca_pem);
        if !text.contains("-----BEGIN CERTIFICATE-----") {
            return Err(RenderError::Webhook(
                "the CA file holds no PEM certificate (`-----BEGIN CERTIFICATE-----`); give the CA \
                 that signed Warden's serving certificate"
                    .to_owned(),
            ));
        }
        Ok(WebhookTarget {
            url: format!("https://{host}{path}"),
            ca_pem,
        })
    }

    /// The URL the registrations name.
    pub fn url(&self) -> &str {
        &self.url
    }
}

/// Why nothing could be rendered.
#[derive(Debug, thiserror::Error)]
pub enum RenderError {
    /// `--team` names no team of the config.
    #[error("no team `{0}` in the config")]
    UnknownTeam(String),
    /// `--team` names a team that cannot have a namespace.
    #[error("team `{team}` cannot be rendered: {why}")]
    TeamUnusable {
        /// The team.
        team: String,
        /// Why.
        why: String,
    },
    /// No team can be rendered.
    #[error("no team can be rendered for Kubernetes:\n{}", .0.join("\n"))]
    NoTeams(Vec<String>),
    /// `--webhook` / `--ca-file` are wrong.
    #[error("webhook: {0}")]
    Webhook(String),
}

/// What was rendered, with what was left out and why (for stderr).
#[derive(Debug, Clone, Default)]
pub struct Rendered {
    /// The objects, in apply order: cluster roles, then per team namespace,
    /// quota, limit range, network policy, role bindings, then the webhook
    /// registrations (after the namespaces they select are labelled).
    pub objects: Vec<Value>,
    /// Things left out, one line each.
    pub warnings: Vec<String>,
    /// Whether the webhook registrations were rendered.
    pub with_webhook: bool,
}

impl Rendered {
    /// A multi-document YAML stream.
    pub fn to_yaml(&self) -> String {
        super::yaml::stream(&self.objects)
    }

    /// A `v1` `List`, pretty-printed, with a final newline.
    pub fn to_json(&self) -> String {
        let list = json!({"apiVersion": "v1", "kind": "List", "items": self.objects});
        let mut s = serde_json::to_string_pretty(&list).unwrap_or_default();
        s.push('\n');
        s
    }
}

/// Why a team has no namespace to render, or `None` when it has one.
fn unusable(team: &Team) -> Option<String> {
    if team.kubernetes.namespace.is_none() {
        return Some(format!(
            "its name `{}` is not a namespace name (lower-case letters, digits, `-`); set \
             `teams.{}.kubernetes.namespace`",
            team.name, team.name
        ));
    }
    if !is_label_value(team.name.as_str()) {
        return Some(format!(
            "its name `{}` cannot be the value of label `{TEAM_LABEL}` (it must start and end \
             with a letter or digit); rename the team",
            team.name
        ));
    }
    None
}

/// Renders the objects for `policy`'s teams (or `opts.team`).
pub fn render(
    policy: &Policy,
    k8s: &KubernetesConfig,
    opts: &RenderOptions,
) -> Result<Rendered, RenderError> {
    let mut out = Rendered::default();
    let teams: Vec<&Team> = match &opts.team {
        Some(name) => {
            let team = policy
                .teams()
                .iter()
                .find(|t| t.name.as_str() == name)
                .ok_or_else(|| RenderError::UnknownTeam(name.clone()))?;
            if let Some(why) = unusable(team) {
                return Err(RenderError::TeamUnusable {
                    team: name.clone(),
                    why,
                });
            }
            vec![team]
        }
        None => {
            let mut usable = Vec::new();
            let mut reasons = Vec::new();
            for team in policy.teams() {
                match unusable(team) {
                    Some(why) => reasons.push(format!("team `{}`: {why}", team.name)),
                    None => usable.push(team),
                }
            }
            if usable.is_empty() {
                if reasons.is_empty() {
                    reasons.push("the config defines no team under `teams`".to_owned());
                }
                return Err(RenderError::NoTeams(reasons));
            }
            out.warnings
                .extend(reasons.into_iter().map(|r| format!("{r}; skipped")));
            usable
        }
    };
    let bindings = policy.access().bindings();
    for b in bindings {
        if let Member::User(user) = &b.member {
            out.warnings.push(format!(
                "role_bindings[{}]: user `{user}` ({}) is not rendered as a RoleBinding: \
                 Warden binds Kubernetes roles to groups only (a Warden user name need not be \
                 the cluster's user name); bind a group instead",
                b.index, b.role
            ));
        }
    }
    for role in Role::ALL {
        out.objects.push(cluster_role(role));
    }
    for team in teams {
        let Some(ns) = team.kubernetes.namespace.as_deref() else {
            continue;
        };
        out.objects.push(namespace(team, ns));
        match resource_quota(team, ns, k8s, &mut out.warnings) {
            Some(q) => out.objects.push(q),
            None => out.warnings.push(format!(
                "team `{}`: no ResourceQuota rendered: no GPU quota (`quotas.max_gpus`, \
                 `quotas.max_gpus_by_model`) and no `kubernetes.requests_storage`, \
                 `persistent_volume_claims` or `pods`",
                team.name
            )),
        }
        out.objects.push(limit_range(team, ns));
        out.objects.push(network_policy(team, ns, k8s));
        out.objects.extend(role_bindings(team, ns, bindings));
    }
    if let Some(target) = &opts.webhook {
        out.objects.push(webhook(target, k8s, false));
        out.objects.push(webhook(target, k8s, true));
        out.with_webhook = true;
    }
    Ok(out)
}

fn labels(team: Option<&Team>) -> Value {
    let mut m = Map::new();
    m.insert(MANAGED_BY.0.to_owned(), json!(MANAGED_BY.1));
    if let Some(t) = team {
        m.insert(TEAM_LABEL.to_owned(), json!(t.name.as_str()));
    }
    Value::Object(m)
}

fn metadata(name: &str, team: Option<&Team>, ns: Option<&str>) -> Value {
    let mut m = json!({"name": name, "labels": labels(team)});
    if let (Some(ns), Some(obj)) = (ns, m.as_object_mut()) {
        obj.insert("namespace".to_owned(), json!(ns));
    }
    m
}

/// The namespace, labelled with the team's `kubernetes.labels` and then
/// Warden's own (which win: `diff` knows Warden's objects by them).
fn namespace(team: &Team, ns: &str) -> Value {
    let mut labels: Map<String, Value> = team
        .kubernetes
        .labels
        .iter()
        .map(|(k, v)| (k.clone(), json!(v)))
        .collect();
    if let Value::Object(own) = self::labels(Some(team)) {
        labels.extend(own);
    }
    json!({
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {"name": ns, "labels": labels},
    })
}

/// The quota's `hard`: every GPU resource (`kubernetes.gpu_resources`)
/// capped at the team's `max_gpus` (a ResourceQuota cannot cap a sum of
/// resources; admission enforces the total), each model of
/// `max_gpus_by_model` that `kubernetes.gpu_model_resources` maps to a
/// resource, and the storage, PVC and pod caps.
fn resource_quota(
    team: &Team,
    ns: &str,
    k8s: &KubernetesConfig,
    warnings: &mut Vec<String>,
) -> Option<Value> {
    let mut hard = BTreeMap::new();
    let gpu = |resource: &str, n: u64, hard: &mut BTreeMap<String, Value>| {
        hard.insert(format!("requests.{resource}"), json!(n.to_string()));
        hard.insert(format!("limits.{resource}"), json!(n.to_string()));
    };
    if let Some(n) = team.quotas.max_gpus {
        for r in &k8s.gpu_resources {
            gpu(r, n, &mut hard);
        }
    }
    for (model, n) in &team.quotas.max_gpus_by_model {
        let resource = k8s
            .gpu_model_resources
            .iter()
            .find(|(m, _)| m.eq_ignore_ascii_case(model.as_str()))
            .map(|(_, r)| r);
        match resource {
            Some(r) => {
                // A tighter team-wide cap wins over a per-model one.
                let n = team.quotas.max_gpus.map_or(*n, |all| all.min(*n));
                gpu(r, n, &mut hard);
            }
            None => warnings.push(format!(
                "team `{}`: the {model} quota ({n}) is not in the ResourceQuota: \
                 `kubernetes.gpu_model_resources` names no resource for {model} (admission \
                 still enforces it)",
                team.name
            )),
        }
    }
    if let Some(s) = &team.kubernetes.requests_storage {
        hard.insert("requests.storage".to_owned(), json!(s));
    }
    if let Some(n) = team.kubernetes.persistent_volume_claims {
        hard.insert("persistentvolumeclaims".to_owned(), json!(n.to_string()));
    }
    if let Some(n) = team.kubernetes.pods {
        hard.insert("pods".to_owned(), json!(n.to_string()));
    }
    if hard.is_empty() {
        return None;
    }
    Some(json!({
        "apiVersion": "v1",
        "kind": "ResourceQuota",
        "metadata": metadata(OBJECT_NAME, Some(team), Some(ns)),
        "spec": {"hard": hard},
    }))
}

fn limit_range(team: &Team, ns: &str) -> Value {
    let mut limit = json!({
        "type": "Container",
        "defaultRequest": team.kubernetes.default_requests,
    });
    if !team.kubernetes.default_limits.is_empty() {
        if let Some(l) = limit.as_object_mut() {
            l.insert("default".to_owned(), json!(team.kubernetes.default_limits));
        }
    }
    json!({
        "apiVersion": "v1",
        "kind": "LimitRange",
        "metadata": metadata(OBJECT_NAME, Some(team), Some(ns)),
        "spec": {"limits": [limit]},
    })
}

/// Ingress only from the namespace itself and from
/// `kubernetes.system_namespaces`; egress is not restricted.
fn network_policy(team: &Team, ns: &str, k8s: &KubernetesConfig) -> Value {
    let mut from = vec![json!({"podSelector": {}})];
    let system: BTreeSet<&String> = k8s.system_namespaces.iter().collect();
    for s in system {
        from.push(json!({
            "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": s}}
        }));
    }
    json!({
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": metadata(OBJECT_NAME, Some(team), Some(ns)),
        "spec": {
            "podSelector": {},
            "policyTypes": ["Ingress"],
            "ingress": [{"from": from}],
        },
    })
}

/// The ClusterRole a role is bound to in team namespaces.
pub fn cluster_role_name(role: Role) -> String {
    format!("warden-{}", role.as_str())
}

const READ: [&str; 3] = ["get", "list", "watch"];
const WRITE: [&str; 7] = [
    "get", "list", "watch", "create", "update", "patch", "delete",
];

fn rule(groups: &[&str], resources: &[&str], verbs: &[&str]) -> Value {
    json!({"apiGroups": groups, "resources": resources, "verbs": verbs})
}

/// The rules of a role, after the roles table of `warden_core::access`:
/// a team lead deploys and adjusts every workload; an ML engineer runs
/// Jobs and Pods, reads logs and uses volumes; an inference operator
/// manages Deployments, Services and autoscalers and scales; a viewer
/// reads pods, logs, metrics and the namespace's caps. RBAC cannot say
/// "own": an ML engineer may end any Job of the namespace.
fn role_rules(role: Role) -> Vec<Value> {
    let read_caps = rule(&[""], &["resourcequotas", "limitranges", "events"], &READ);
    match role {
        Role::Admin => vec![rule(&["*"], &["*"], &["*"])],
        Role::TeamLead => vec![
            rule(
                &[""],
                &[
                    "pods",
                    "services",
                    "configmaps",
                    "persistentvolumeclaims",
                    "secrets",
                ],
                &WRITE,
            ),
            rule(&[""], &["pods/log"], &["get"]),
            rule(&[""], &["pods/exec", "pods/portforward"], &["create"]),
            rule(&["batch"], &["jobs", "cronjobs"], &WRITE),
            rule(
                &["apps"],
                &["deployments", "statefulsets", "replicasets"],
                &WRITE,
            ),
            rule(
                &["apps"],
                &["deployments/scale", "statefulsets/scale"],
                &["get", "update", "patch"],
            ),
            rule(&["autoscaling"], &["horizontalpodautoscalers"], &WRITE),
            rule(&["metrics.k8s.io"], &["pods"], &READ),
            read_caps,
        ],
        Role::MlEngineer => vec![
            rule(
                &[""],
                &["pods"],
                &["get", "list", "watch", "create", "delete"],
            ),
            rule(&[""], &["pods/log"], &["get"]),
            rule(
                &["batch"],
                &["jobs"],
                &["get", "list", "watch", "create", "delete"],
            ),
            rule(
                &[""],
                &["persistentvolumeclaims"],
                &["get", "list", "watch", "create"],
            ),
            rule(&[""], &["configmaps"], &READ),
            read_caps,
        ],
        Role::InferenceOperator => vec![
            rule(&["apps"], &["deployments"], &WRITE),
            rule(
                &["apps"],
                &["deployments/scale"],
                &["get", "update", "patch"],
            ),
            rule(&["apps"], &["replicasets"], &READ),
            rule(&[""], &["services"], &WRITE),
            rule(&["autoscaling"], &["horizontalpodautoscalers"], &WRITE),
            rule(&[""], &["pods"], &READ),
            rule(&[""], &["pods/log"], &["get"]),
            rule(&["metrics.k8s.io"], &["pods"], &READ),
            read_caps,
        ],
        Role::Viewer => vec![
            rule(&[""], &["pods"], &READ),
            rule(&[""], &["pods/log"], &["get"]),
            rule(&["metrics.k8s.io"], &["pods"], &READ),
            read_caps,
        ],
    }
}

fn cluster_role(role: Role) -> Value {
    json!({
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRole",
        "metadata": metadata(&cluster_role_name(role), None, None),
        "rules": role_rules(role),
    })
}

/// One RoleBinding per role that some group holds in the team (a binding
/// for this team, for `teams: "*"`, or an admin binding), named like its
/// ClusterRole; subjects sorted.
fn role_bindings(team: &Team, ns: &str, bindings: &[warden_core::access::Binding]) -> Vec<Value> {
    let mut by_role: BTreeMap<Role, BTreeSet<&str>> = BTreeMap::new();
    for b in bindings {
        let holds = b.role == Role::Admin
            || match &b.scope {
                TeamScope::All => true,
                TeamScope::One(t) => t == &team.name,
            };
        if let (true, Member::Group(g)) = (holds, &b.member) {
            by_role.entry(b.role).or_default().insert(g);
        }
    }
    by_role
        .into_iter()
        .map(|(role, groups)| {
            let subjects: Vec<Value> = groups
                .into_iter()
                .map(|g| json!({"kind": "Group", "apiGroup": "rbac.authorization.k8s.io", "name": g}))
                .collect();
            json!({
                "apiVersion": "rbac.authorization.k8s.io/v1",
                "kind": "RoleBinding",
                "metadata": metadata(&cluster_role_name(role), Some(team), Some(ns)),
                "roleRef": {
                    "apiGroup": "rbac.authorization.k8s.io",
                    "kind": "ClusterRole",
                    "name": cluster_role_name(role),
                },
                "subjects": subjects,
            })
        })
        .collect()
}

/// The resource (plural) of a kind, as Kubernetes guesses it when a CRD
/// does not say (`UnsafeGuessKindToResource`): lower case, then `s`, `es`
/// after `s`/`x`/`z`/`ch`/`sh`, `ies` for a consonant and `y`.
pub fn guess_resource(kind: &str) -> String {
    let lower = kind.to_ascii_lowercase();
    if lower.ends_with(['s', 'x', 'z']) || lower.ends_with("ch") || lower.ends_with("sh") {
        return format!("{lower}es");
    }
    if let Some(stem) = lower.strip_suffix('y') {
        if !stem.ends_with(['a', 'e', 'i', 'o', 'u']) {
            return format!("{stem}ies");
        }
    }
    format!("{lower}s")
}

/// The admission rules: Pods, Jobs, CronJobs, Deployments, StatefulSets,
/// ReplicaSets and each `kubernetes.pod_templates` kind, on create, update
/// and delete; one rule per API group and version.
fn admission_rules(k8s: &KubernetesConfig) -> Vec<Value> {
    let mut by_group: BTreeMap<(String, String), BTreeSet<String>> = BTreeMap::new();
    let mut add = |group: &str, version: &str, resource: String| {
        by_group
            .entry((group.to_owned(), version.to_owned()))
            .or_default()
            .insert(resource);
    };
    add("", "v1", "pods".to_owned());
    for r in ["jobs", "cronjobs"] {
        add("batch", "v1", r.to_owned());
    }
    for r in ["deployments", "statefulsets", "replicasets"] {
        add("apps", "v1", r.to_owned());
    }
    for t in &k8s.pod_templates {
        let (group, version) = t
            .api_version
            .rsplit_once('/')
            .unwrap_or(("", &t.api_version));
        add(group, version, guess_resource(&t.kind));
    }
    by_group
        .into_iter()
        .map(|((group, version), resources)| {
            json!({
                "apiGroups": [group],
                "apiVersions": [version],
                "resources": resources,
                "operations": ["CREATE", "UPDATE", "DELETE"],
                "scope": "Namespaced",
            })
        })
        .collect()
}

fn webhook(target: &WebhookTarget, k8s: &KubernetesConfig, mutating: bool) -> Value {
    let (kind, hook_name) = if mutating {
        ("MutatingWebhookConfiguration", "mutate.warden.dev")
    } else {
        ("ValidatingWebhookConfiguration", "validate.warden.dev")
    };
    let mut hook = json!({
        "name": hook_name,
        "admissionReviewVersions": ["v1"],
        "clientConfig": {
            "url": target.url,
            "caBundle": base64::engine::general_purpose::STANDARD.encode(&target.ca_pem),
        },
        "rules": admission_rules(k8s),
        "namespaceSelector": {
            "matchExpressions": [{"key": TEAM_LABEL, "operator": "Exists"}],
        },
        "failurePolicy": k8s.failure_policy.as_str(),
        "timeoutSeconds": k8s.webhook_timeout.as_secs(),
        "sideEffects": "NoneOnDryRun",
        "matchPolicy": "Equivalent",
    });
    if mutating {
        if let Some(h) = hook.as_object_mut() {
            // The validating webhook judges the final object after every
            // mutation, so a change by a later webhook cannot slip past;
            // a reinvocation would only judge (and count) a pod twice.
            h.insert("reinvocationPolicy".to_owned(), json!("Never"));
        }
    }
    json!({
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": kind,
        "metadata": metadata(OBJECT_NAME, None, None),
        "webhooks": [hook],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_guess_their_resources_as_kubernetes_does() {
        for (kind, resource) in [
            ("PyTorchJob", "pytorchjobs"),
            ("RayCluster", "rayclusters"),
            ("Policy", "policies"),
            ("Gateway", "gateways"),
            ("Ingress", "ingresses"),
            ("Batch", "batches"),
        ] {
            assert_eq!(guess_resource(kind), resource);
        }
    }

    #[test]
    fn webhook_urls_are_https_base_urls() {
        let ca = b"-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n".to_vec();
        let ok = WebhookTarget::new("https://warden.svc:8443", ca.clone()).unwrap();
        assert_eq!(ok.url(), "https://warden.svc:8443/k8s/admission");
        let same =
            WebhookTarget::new("https://warden.svc:8443/k8s/admission/", ca.clone()).unwrap();
        assert_eq!(same.url(), ok.url());
        for bad in [
            "http://warden.svc",
            "https://",
            "https://a/other",
            "https://a?x=1",
            "https://u@a",
            "https://a b",
        ] {
            assert!(WebhookTarget::new(bad, ca.clone()).is_err(), "{bad}");
        }
        assert!(WebhookTarget::new("https://a", b"not pem".to_vec()).is_err());
    }
}
