//! The `kubernetes:` section: how the Kubernetes door reads GPU pods (which
//! resources are GPUs, which node labels name the model or mean spot, where
//! custom resources keep their pod templates), how the admission webhook is
//! registered, and where the usage sync finds the cluster. Per-team
//! namespaces and caps live under `teams.<t>.kubernetes` (validated by the
//! core).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use warden_core::kubernetes::{is_dns_label, is_label_key, is_label_value};

/// Extended resources counted as GPUs, by default.
pub const DEFAULT_GPU_RESOURCES: [&str; 2] = ["nvidia.com/gpu", "amd.com/gpu"];
/// Node labels whose value names the GPU model, by default: CoreWeave's and
/// NVIDIA GPU feature discovery's.
pub const DEFAULT_GPU_MODEL_LABELS: [&str; 2] = ["gpu.nvidia.com/class", "nvidia.com/gpu.product"];
/// Node labels (and values) that put a pod on spot / preemptible capacity,
/// by default.
pub const DEFAULT_SPOT_NODE_LABELS: [(&str, &str); 4] = [
    ("cloud.google.com/gke-spot", "true"),
    ("cloud.google.com/gke-preemptible", "true"),
    ("eks.amazonaws.com/capacityType", "SPOT"),
    ("karpenter.sh/capacity-type", "spot"),
];
/// Toleration keys that put a pod on spot capacity, by default.
pub const DEFAULT_SPOT_TOLERATIONS: [&str; 2] = [
    "cloud.google.com/gke-spot",
    "kubernetes.azure.com/scalesetpriority",
];
/// The webhook's `timeoutSeconds`, by default.
pub const DEFAULT_WEBHOOK_TIMEOUT_SECONDS: u64 = 5;
/// Seconds between two usage syncs with the cluster, by default.
pub const DEFAULT_SYNC_INTERVAL_SECONDS: u64 = 60;
/// Seconds a fresh allocation is kept although no pod is listed for it.
pub const DEFAULT_SYNC_GRACE_SECONDS: u64 = 120;

/// `kubernetes` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct KubernetesFile {
    #[serde(default)]
    gpu_resources: Option<Vec<String>>,
    #[serde(default)]
    gpu_model_labels: Option<Vec<String>>,
    #[serde(default)]
    gpu_models: BTreeMap<String, String>,
    #[serde(default)]
    gpu_model_resources: BTreeMap<String, String>,
    #[serde(default)]
    spot_node_labels: Option<BTreeMap<String, String>>,
    #[serde(default)]
    spot_tolerations: Option<Vec<String>>,
    #[serde(default)]
    pod_templates: Vec<PodTemplateFile>,
    #[serde(default)]
    system_namespaces: Vec<String>,
    #[serde(default)]
    trusted_api_servers: Option<Vec<String>>,
    #[serde(default)]
    webhook: Option<WebhookFile>,
    #[serde(default)]
    kubeconfig: Option<PathBuf>,
    #[serde(default)]
    sync_interval_seconds: Option<u64>,
    #[serde(default)]
    sync_grace_seconds: Option<u64>,
}

/// `kubernetes.pod_templates[i]` as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PodTemplateFile {
    api_version: String,
    kind: String,
    paths: Vec<String>,
}

/// `kubernetes.webhook` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct WebhookFile {
    #[serde(default)]
    failure_policy: Option<FailurePolicy>,
    #[serde(default)]
    timeout_seconds: Option<u64>,
}

/// What the API server does when the webhook cannot be reached.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
pub enum FailurePolicy {
    /// Refuse the request (fail closed).
    #[default]
    Fail,
    /// Let the request through unjudged (fail open).
    Ignore,
}

impl FailurePolicy {
    /// As Kubernetes writes it.
    pub fn as_str(self) -> &'static str {
        match self {
            FailurePolicy::Fail => "Fail",
            FailurePolicy::Ignore => "Ignore",
        }
    }
}

/// Where a custom resource keeps its pod templates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodTemplatePaths {
    /// `apiVersion` (`kubeflow.org/v1`).
    pub api_version: String,
    /// `kind` (`PyTorchJob`).
    pub kind: String,
    /// Dotted paths to each pod template (`spec.pytorchReplicaSpecs.*.template`;
    /// `*` is every key of a mapping or item of a list). The replica count
    /// of a template is the `replicas` field beside it (default 1).
    pub paths: Vec<Vec<String>>,
}

/// The Kubernetes door's settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KubernetesConfig {
    /// Extended resources counted as GPUs.
    pub gpu_resources: Vec<String>,
    /// Node labels whose value names the GPU model.
    pub gpu_model_labels: Vec<String>,
    /// Label value → GPU model (`H100_NVLINK_80GB: H100`), checked before
    /// Warden's own reading of the value.
    pub gpu_models: BTreeMap<String, String>,
    /// GPU model → extended resource the cluster exposes for that model, for
    /// per-model ResourceQuotas (`teams.<t>.quotas.max_gpus_by_model`).
    pub gpu_model_resources: BTreeMap<String, String>,
    /// Node label → value that means spot capacity.
    pub spot_node_labels: BTreeMap<String, String>,
    /// Toleration keys that mean spot capacity.
    pub spot_tolerations: Vec<String>,
    /// Custom resources with pod templates (PyTorchJob, RayJob, ...).
    pub pod_templates: Vec<PodTemplatePaths>,
    /// Namespaces whose pods may reach every team namespace (ingress
    /// controller, monitoring).
    pub system_namespaces: Vec<String>,
    /// The addresses whose admission reviews are judged
    /// (`kubernetes.trusted_api_servers`; default loopback): a review
    /// carries the user it is for, which only the API server may vouch for.
    pub trusted_api_servers: super::TrustedServers,
    /// The webhook registration's `failurePolicy`.
    pub failure_policy: FailurePolicy,
    /// The webhook registration's `timeoutSeconds` (1–30).
    pub webhook_timeout: Duration,
    /// A kubeconfig for the periodic usage sync; `None`: no periodic sync.
    pub kubeconfig: Option<PathBuf>,
    /// Time between two syncs.
    pub sync_interval: Duration,
    /// How long a fresh allocation is kept although no pod runs for it.
    pub sync_grace: Duration,
}

impl Default for KubernetesConfig {
    #[expect(
        clippy::expect_used,
        reason = "the defaults are valid (test `defaults_name_nvidia_amd_and_coreweave`)"
    )]
    fn default() -> Self {
        kubernetes_config(Path::new(""), KubernetesFile::default()).expect("the defaults are valid")
    }
}

fn strings(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| (*s).to_owned()).collect()
}

/// Validates `kubernetes`; the errors are `key.path: problem` lines.
pub(crate) fn kubernetes_config(
    path: &Path,
    f: KubernetesFile,
) -> Result<KubernetesConfig, Vec<String>> {
    let mut problems = Vec::new();
    let mut label_keys = |key: &str, list: &[String]| {
        for k in list {
            if !is_label_key(k) {
                problems.push(format!(
                    "kubernetes.{key}: `{k}` is not a Kubernetes label or resource name \
                     (e.g. `nvidia.com/gpu`)"
                ));
            }
        }
    };
    let gpu_resources = f
        .gpu_resources
        .unwrap_or_else(|| strings(&DEFAULT_GPU_RESOURCES));
    label_keys("gpu_resources", &gpu_resources);
    let gpu_model_labels = f
        .gpu_model_labels
        .unwrap_or_else(|| strings(&DEFAULT_GPU_MODEL_LABELS));
    label_keys("gpu_model_labels", &gpu_model_labels);
    let spot_tolerations = f
        .spot_tolerations
        .unwrap_or_else(|| strings(&DEFAULT_SPOT_TOLERATIONS));
    label_keys("spot_tolerations", &spot_tolerations);
    let spot_node_labels = f.spot_node_labels.unwrap_or_else(|| {
        DEFAULT_SPOT_NODE_LABELS
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    });
    for (k, v) in &spot_node_labels {
        if !is_label_key(k) || !is_label_value(v) {
            problems.push(format!(
                "kubernetes.spot_node_labels.{k}: `{k}: {v}` is not a Kubernetes label"
            ));
        }
    }
    for (value, model) in &f.gpu_models {
        if model.trim().is_empty() {
            problems.push(format!(
                "kubernetes.gpu_models.{value}: empty; name the GPU model (e.g. `H100`)"
            ));
        }
    }
    for (model, resource) in &f.gpu_model_resources {
        if !is_label_key(resource) {
            problems.push(format!(
                "kubernetes.gpu_model_resources.{model}: `{resource}` is not a resource name \
                 (e.g. `nvidia.com/gpu-h100`)"
            ));
        }
    }
    let mut pod_templates = Vec::new();
    for (i, t) in f.pod_templates.into_iter().enumerate() {
        let at = format!("kubernetes.pod_templates[{i}]");
        if t.kind.is_empty() || !t.kind.chars().all(|c| c.is_ascii_alphanumeric()) {
            problems.push(format!(
                "{at}.kind: `{}` is not a kind (e.g. `PyTorchJob`)",
                t.kind
            ));
        }
        if t.api_version.is_empty() || t.api_version.contains(char::is_whitespace) {
            problems.push(format!(
                "{at}.api_version: `{}` is not an apiVersion (e.g. `kubeflow.org/v1`)",
                t.api_version
            ));
        }
        if t.paths.is_empty() {
            problems.push(format!(
                "{at}.paths: empty; name where the pod templates are \
                 (e.g. `spec.pytorchReplicaSpecs.*.template`)"
            ));
        }
        let mut paths = Vec::new();
        for p in &t.paths {
            let parts: Vec<String> = p.split('.').map(str::to_owned).collect();
            if parts.iter().any(String::is_empty) {
                problems.push(format!(
                    "{at}.paths: `{p}` is not a dotted path (e.g. `spec.template`)"
                ));
            }
            paths.push(parts);
        }
        pod_templates.push(PodTemplatePaths {
            api_version: t.api_version,
            kind: t.kind,
            paths,
        });
    }
    for ns in &f.system_namespaces {
        if !is_dns_label(ns) {
            problems.push(format!(
                "kubernetes.system_namespaces: `{ns}` is not a namespace name"
            ));
        }
    }
    let trusted_api_servers = match &f.trusted_api_servers {
        None => super::TrustedServers::default(),
        Some(list) => super::TrustedServers::parse_key("kubernetes.trusted_api_servers", list)
            .unwrap_or_else(|e| {
                problems.extend(e);
                super::TrustedServers::default()
            }),
    };
    let webhook = f.webhook.unwrap_or_default();
    let timeout = webhook
        .timeout_seconds
        .unwrap_or(DEFAULT_WEBHOOK_TIMEOUT_SECONDS);
    if !(1..=30).contains(&timeout) {
        problems.push(format!(
            "kubernetes.webhook.timeout_seconds: `{timeout}` is out of range; Kubernetes \
             allows 1 to 30 seconds"
        ));
    }
    let mut seconds = |key: &str, given: Option<u64>, default: u64, min: u64| {
        super::seconds::seconds(
            &mut problems,
            &format!("kubernetes.{key}"),
            given,
            default,
            min,
        )
    };
    let sync_interval = seconds(
        "sync_interval_seconds",
        f.sync_interval_seconds,
        DEFAULT_SYNC_INTERVAL_SECONDS,
        1,
    );
    let sync_grace = seconds(
        "sync_grace_seconds",
        f.sync_grace_seconds,
        DEFAULT_SYNC_GRACE_SECONDS,
        0,
    );
    let kubeconfig = f
        .kubeconfig
        .map(|k| path.parent().unwrap_or(Path::new("")).join(k));
    if problems.is_empty() {
        Ok(KubernetesConfig {
            gpu_resources,
            gpu_model_labels,
            gpu_models: f.gpu_models,
            gpu_model_resources: f.gpu_model_resources,
            spot_node_labels,
            spot_tolerations,
            pod_templates,
            system_namespaces: f.system_namespaces,
            trusted_api_servers,
            failure_policy: webhook.failure_policy.unwrap_or_default(),
            webhook_timeout: Duration::from_secs(timeout),
            kubeconfig,
            sync_interval,
            sync_grace,
        })
    } else {
        Err(problems)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_name_nvidia_amd_and_coreweave() {
        let k = KubernetesConfig::default();
        assert_eq!(k.gpu_resources, ["nvidia.com/gpu", "amd.com/gpu"]);
        assert_eq!(k.gpu_model_labels[0], "gpu.nvidia.com/class");
        assert_eq!(k.failure_policy, FailurePolicy::Fail);
        assert_eq!(k.webhook_timeout, Duration::from_secs(5));
        assert_eq!(k.kubeconfig, None);
    }

    #[test]
    fn bad_values_name_their_key() {
        let f: KubernetesFile = serde_norway::from_str(
            "gpu_resources: ['not a name']\nsystem_namespaces: [Bad]\n\
             webhook: {timeout_seconds: 60}\npod_templates: [{api_version: v1, kind: 'A B', paths: []}]\n",
        )
        .unwrap();
        let problems = kubernetes_config(Path::new("c.yaml"), f).unwrap_err();
        let keys: Vec<&str> = problems
            .iter()
            .map(|p| p.split(':').next().unwrap())
            .collect();
        assert_eq!(
            keys,
            [
                "kubernetes.gpu_resources",
                "kubernetes.pod_templates[0].kind",
                "kubernetes.pod_templates[0].paths",
                "kubernetes.system_namespaces",
                "kubernetes.webhook.timeout_seconds",
            ]
        );
    }
}
