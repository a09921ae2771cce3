//! Reading a Kubernetes object as a GPU launch: which kinds are judged,
//! where their pod templates are, how many pods each runs, how many GPUs a
//! pod asks for, of which model, on spot capacity or not.
//!
//! # Kinds and sizes
//!
//! | kind | pod template(s) | pods |
//! |---|---|---|
//! | `Pod` (v1) | the object itself | 1 |
//! | `Job` (batch/v1) | `spec.template` | `spec.parallelism` (default 1) |
//! | `CronJob` (batch/v1) | `spec.jobTemplate.spec.template` | `spec.jobTemplate.spec.parallelism` |
//! | `Deployment`, `StatefulSet`, `ReplicaSet` (apps/v1) | `spec.template` | `spec.replicas` (default 1) |
//! | configured custom resources (`kubernetes.pod_templates`) | each configured path | the `replicas` beside each template (default 1) |
//!
//! # GPUs of a pod
//!
//! For each configured GPU resource (`kubernetes.gpu_resources`), a
//! container asks for the larger of its request and limit; a pod asks for
//! the sum over its containers, or the largest init container if that is
//! more (init containers run one at a time, before the others).
//!
//! # GPU model
//!
//! From the pod's `nodeSelector`, or its required node affinity (`In` terms;
//! several values are several candidates, judged as the worst), on the
//! configured model labels (`kubernetes.gpu_model_labels`). A label value is
//! mapped by `kubernetes.gpu_models` first, then by [`builtin_model`]. A GPU
//! pod that names no model is judged as model [`ANY_MODEL`].
//!
//! # Spot
//!
//! A `nodeSelector` or required affinity on a configured spot node label
//! with its spot value, or a toleration of a configured spot taint key.

use std::collections::BTreeMap;

use serde_json::{Map, Value};
use warden_core::GpuModel;

use crate::config::KubernetesConfig;
use crate::error::DoorError;

/// The model a GPU pod that names none is judged as: a team with
/// `allowed_gpus` refuses it; `prices.ANY` prices it.
pub const ANY_MODEL: &str = "ANY";

/// A kind Warden judges.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Kind {
    /// `apiVersion` (`batch/v1`).
    pub api_version: String,
    /// `kind` (`Job`).
    pub kind: String,
}

/// The built-in kinds with where their templates are and what counts pods.
fn builtin(
    kind: &str,
    api_version: &str,
) -> Option<(&'static [&'static str], &'static [&'static str])> {
    match (kind, api_version) {
        ("Pod", "v1") => Some((&[], &[])),
        ("Job", "batch/v1") => Some((&["spec", "template"], &["spec", "parallelism"])),
        ("CronJob", "batch/v1") => Some((
            &["spec", "jobTemplate", "spec", "template"],
            &["spec", "jobTemplate", "spec", "parallelism"],
        )),
        ("Deployment" | "StatefulSet" | "ReplicaSet", "apps/v1") => {
            Some((&["spec", "template"], &["spec", "replicas"]))
        }
        _ => None,
    }
}

/// Whether this is one of the built-in kinds Warden judges.
pub fn is_builtin(api_version: &str, kind: &str) -> bool {
    builtin(kind, api_version).is_some()
}

/// Whether Warden judges objects of this kind (built in or configured).
pub fn is_judged(config: &KubernetesConfig, api_version: &str, kind: &str) -> bool {
    builtin(kind, api_version).is_some()
        || config
            .pod_templates
            .iter()
            .any(|t| t.kind == kind && t.api_version == api_version)
}

/// One pod template of an object: where it is and how many pods run it.
#[derive(Debug, Clone, PartialEq)]
pub struct Template {
    /// JSON pointer tokens to the template (empty: the object is a pod).
    pub path: Vec<String>,
    /// Pods that run it.
    pub pods: u32,
}

fn get<'a>(v: &'a Value, path: &[&str]) -> Option<&'a Value> {
    path.iter().try_fold(v, |v, k| v.get(*k))
}

fn count(v: Option<&Value>, what: &str) -> Result<u32, DoorError> {
    match v {
        None | Some(Value::Null) => Ok(1),
        Some(n) => n
            .as_u64()
            .and_then(|n| u32::try_from(n).ok())
            .ok_or_else(|| DoorError::bad(format!("`{what}` must be a whole number, not {n}"))),
    }
}

/// The pod templates of `object` (of a judged kind).
pub fn templates(
    config: &KubernetesConfig,
    api_version: &str,
    kind: &str,
    object: &Value,
) -> Result<Vec<Template>, DoorError> {
    if let Some((path, pods)) = builtin(kind, api_version) {
        if path.is_empty() {
            return Ok(vec![Template {
                path: Vec::new(),
                pods: 1,
            }]);
        }
        if get(object, path).is_none() {
            return Ok(Vec::new());
        }
        return Ok(vec![Template {
            path: path.iter().map(|s| (*s).to_owned()).collect(),
            pods: count(get(object, pods), &pods.join("."))?,
        }]);
    }
    let mut out = Vec::new();
    for t in config
        .pod_templates
        .iter()
        .filter(|t| t.kind == kind && t.api_version == api_version)
    {
        for p in &t.paths {
            expand(object, p, &mut Vec::new(), &mut out)?;
        }
    }
    Ok(out)
}

/// Finds every template at the dotted path `rest` (`*`: every key or item).
fn expand(
    at: &Value,
    rest: &[String],
    path: &mut Vec<String>,
    out: &mut Vec<Template>,
) -> Result<(), DoorError> {
    let Some((first, tail)) = rest.split_first() else {
        return Ok(());
    };
    let mut visit = |key: String, next: &Value, parent: &Value| -> Result<(), DoorError> {
        path.push(key);
        if tail.is_empty() {
            if next.is_object() {
                let pods = count(
                    parent.get("replicas"),
                    &format!(
                        "{}.replicas",
                        path.get(..path.len().saturating_sub(1))
                            .unwrap_or_default()
                            .join(".")
                    ),
                )?;
                out.push(Template {
                    path: path.clone(),
                    pods,
                });
            }
        } else {
            expand(next, tail, path, out)?;
        }
        path.pop();
        Ok(())
    };
    match (first.as_str(), at) {
        ("*", Value::Object(m)) => {
            for (k, v) in m {
                visit(k.clone(), v, at)?;
            }
        }
        ("*", Value::Array(items)) => {
            for (i, v) in items.iter().enumerate() {
                visit(i.to_string(), v, at)?;
            }
        }
        (key, Value::Object(m)) => {
            if let Some(v) = m.get(key) {
                visit(key.to_owned(), v, at)?;
            }
        }
        _ => {}
    }
    Ok(())
}

/// The value at JSON pointer tokens `path`.
pub fn at<'a>(object: &'a Value, path: &[String]) -> Option<&'a Value> {
    path.iter().try_fold(object, |v, k| match v {
        Value::Object(m) => m.get(k),
        Value::Array(a) => k.parse::<usize>().ok().and_then(|i| a.get(i)),
        _ => None,
    })
}

/// What one pod template asks for.
#[derive(Debug, Clone, PartialEq)]
pub struct PodAsk {
    /// GPUs per pod.
    pub gpus: u32,
    /// Model candidates (empty: no model named).
    pub models: Vec<GpuModel>,
    /// On spot capacity.
    pub spot: bool,
    /// The first container's image.
    pub image: Option<String>,
    /// The template's labels.
    pub labels: BTreeMap<String, String>,
}

/// A GPU quantity: a whole number, as text or a number.
fn gpu_quantity(v: &Value, at: &str) -> Result<u32, DoorError> {
    let n = match v {
        Value::Number(n) => n.as_u64(),
        Value::String(s) => s.trim().parse::<u64>().ok(),
        _ => None,
    };
    n.and_then(|n| u32::try_from(n).ok()).ok_or_else(|| {
        DoorError::bad(format!(
            "`{at}` must be a whole number of GPUs (e.g. \"1\"), not {v}"
        ))
    })
}

fn container_gpus(config: &KubernetesConfig, c: &Value, at: &str) -> Result<u32, DoorError> {
    let mut total = 0u32;
    for r in &config.gpu_resources {
        let mut most = 0;
        for side in ["requests", "limits"] {
            if let Some(v) = c
                .get("resources")
                .and_then(|x| x.get(side))
                .and_then(|x| x.get(r))
            {
                most = most.max(gpu_quantity(v, &format!("{at}.resources.{side}.{r}"))?);
            }
        }
        total = total.saturating_add(most);
    }
    Ok(total)
}

/// Reads the pod spec at `spec` (of a template or a pod).
pub fn pod_ask(
    config: &KubernetesConfig,
    template: &Value,
    where_: &str,
) -> Result<PodAsk, DoorError> {
    let spec = template.get("spec").unwrap_or(&Value::Null);
    let list = |key: &str| -> &[Value] {
        spec.get(key)
            .and_then(Value::as_array)
            .map_or(&[], Vec::as_slice)
    };
    let mut gpus = 0u32;
    for (i, c) in list("containers").iter().enumerate() {
        gpus = gpus.saturating_add(container_gpus(
            config,
            c,
            &format!("{where_}spec.containers[{i}]"),
        )?);
    }
    for (i, c) in list("initContainers").iter().enumerate() {
        gpus = gpus.max(container_gpus(
            config,
            c,
            &format!("{where_}spec.initContainers[{i}]"),
        )?);
    }
    let selector = spec.get("nodeSelector").and_then(Value::as_object);
    let required = required_terms(spec);
    let mut values: Vec<String> = Vec::new();
    for label in &config.gpu_model_labels {
        if let Some(v) = selector.and_then(|s| s.get(label)).and_then(Value::as_str) {
            values.push(v.to_owned());
        }
        for (key, vals) in &required {
            if key == label {
                values.extend(vals.iter().cloned());
            }
        }
    }
    let mut models: Vec<GpuModel> = Vec::new();
    for v in &values {
        let m = model_of(config, v).ok_or_else(|| {
            DoorError::bad(format!(
                "GPU model label value `{v}` cannot be read as a GPU model; map it under `kubernetes.gpu_models`"
            ))
        })?;
        if !models.contains(&m) {
            models.push(m);
        }
    }
    let spot = config.spot_node_labels.iter().any(|(k, want)| {
        selector.and_then(|s| s.get(k)).and_then(Value::as_str) == Some(want.as_str())
            || required
                .iter()
                .any(|(key, vals)| key == k && vals.len() == 1 && vals.iter().all(|v| v == want))
    }) || list("tolerations").iter().any(|t| {
        t.get("key")
            .and_then(Value::as_str)
            .is_some_and(|k| config.spot_tolerations.iter().any(|s| s == k))
    });
    let image = list("containers")
        .first()
        .and_then(|c| c.get("image"))
        .and_then(Value::as_str)
        .map(str::to_owned);
    let labels = template
        .get("metadata")
        .and_then(|m| m.get("labels"))
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_owned())))
                .collect()
        })
        .unwrap_or_default();
    Ok(PodAsk {
        gpus,
        models,
        spot,
        image,
        labels,
    })
}

/// `(key, values)` of the `In` expressions of the required node affinity
/// (every term; the scheduler takes any one of them).
fn required_terms(spec: &Value) -> Vec<(String, Vec<String>)> {
    let terms = spec
        .get("affinity")
        .and_then(|a| a.get("nodeAffinity"))
        .and_then(|a| a.get("requiredDuringSchedulingIgnoredDuringExecution"))
        .and_then(|r| r.get("nodeSelectorTerms"))
        .and_then(Value::as_array);
    let mut out = Vec::new();
    for term in terms.into_iter().flatten() {
        for e in term
            .get("matchExpressions")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            if e.get("operator").and_then(Value::as_str) != Some("In") {
                continue;
            }
            let (Some(key), Some(values)) = (
                e.get("key").and_then(Value::as_str),
                e.get("values").and_then(Value::as_array),
            ) else {
                continue;
            };
            out.push((
                key.to_owned(),
                values
                    .iter()
                    .filter_map(|v| v.as_str().map(str::to_owned))
                    .collect(),
            ));
        }
    }
    out
}

/// A model label's value as a Warden GPU model: `kubernetes.gpu_models`
/// first, then [`builtin_model`].
pub fn model_of(config: &KubernetesConfig, value: &str) -> Option<GpuModel> {
    if let Some(m) = config.gpu_models.get(value) {
        return GpuModel::parse(m).ok();
    }
    GpuModel::parse(&builtin_model(value)).ok()
}

/// Warden's own reading of a model label value: the value upper-cased, its
/// words split at `-`, `_`, `.` and spaces, a leading `NVIDIA`/`TESLA`/
/// `GEFORCE` dropped, and the first word that is a known family kept:
/// `B200`, `H200`, `H100`, `A100` (`A100-80GB` when a word is `80GB` or
/// `80G`), `L40S`, `L40`, `L4`, `A10G`, `A10`, `V100`, `T4`, `A6000` (also
/// `RTX-A6000`), `RTX4090`/`RTX3090` (`RTX-4090`, `GeForce-RTX-4090`). So
/// `H100_NVLINK_80GB` and `NVIDIA-H100-80GB-HBM3` are `H100`,
/// `A100_PCIE_80GB` and `NVIDIA-A100-SXM4-80GB` are `A100-80GB`,
/// `NVIDIA-A100-SXM4-40GB` is `A100`. Anything else is the value itself,
/// upper-cased.
pub fn builtin_model(value: &str) -> String {
    let upper = value.trim().to_ascii_uppercase();
    let words: Vec<&str> = upper
        .split(['-', '_', '.', ' '])
        .filter(|w| !w.is_empty())
        .collect();
    let big = words.iter().any(|w| *w == "80GB" || *w == "80G");
    for (i, w) in words.iter().enumerate() {
        let next = words.get(i + 1).copied().unwrap_or_default();
        let family = match *w {
            "B200" | "H200" | "H100" | "L40S" | "L40" | "L4" | "A10G" | "A10" | "V100" | "T4"
            | "A6000" => Some((*w).to_owned()),
            "A100" => Some(if big { "A100-80GB" } else { "A100" }.to_owned()),
            "RTX" if next == "A6000" => Some("A6000".to_owned()),
            "RTX" if next == "4090" || next == "3090" => Some(format!("RTX{next}")),
            "RTX4090" | "RTX3090" => Some((*w).to_owned()),
            _ => None,
        };
        if let Some(f) = family {
            return f;
        }
    }
    upper
}

/// The whole object's ask: every template read.
#[derive(Debug, Clone, PartialEq)]
pub struct WorkloadAsk {
    /// Pods that ask for GPUs, over all templates.
    pub gpu_pods: u32,
    /// The largest GPU count of one pod.
    pub gpus_per_pod: u32,
    /// Model candidates (of the first GPU template naming any).
    pub models: Vec<GpuModel>,
    /// On spot capacity (every GPU template).
    pub spot: bool,
    /// The first container image of the first GPU template.
    pub image: Option<String>,
    /// Labels of the object and its first template.
    pub labels: BTreeMap<String, String>,
    /// The templates.
    pub templates: Vec<Template>,
}

impl WorkloadAsk {
    /// Total GPUs asked for (the worst case: every GPU pod at the largest count).
    pub fn total_gpus(&self) -> u64 {
        u64::from(self.gpu_pods) * u64::from(self.gpus_per_pod)
    }
}

/// Reads `object` of a judged kind. Several templates with different GPU
/// counts are judged as `pods × the largest count` (the worst case); the
/// model is the first GPU template's.
pub fn workload_ask(
    config: &KubernetesConfig,
    api_version: &str,
    kind: &str,
    object: &Value,
) -> Result<WorkloadAsk, DoorError> {
    let templates = templates(config, api_version, kind, object)?;
    let mut ask = WorkloadAsk {
        gpu_pods: 0,
        gpus_per_pod: 0,
        models: Vec::new(),
        spot: true,
        image: None,
        labels: BTreeMap::new(),
        templates: Vec::new(),
    };
    for t in &templates {
        let Some(template) = at(object, &t.path) else {
            continue;
        };
        let where_ = if t.path.is_empty() {
            String::new()
        } else {
            format!("{}.", t.path.join("."))
        };
        let pod = pod_ask(config, template, &where_)?;
        if ask.labels.is_empty() {
            ask.labels = pod.labels;
        }
        if pod.gpus == 0 {
            continue;
        }
        ask.gpu_pods = ask.gpu_pods.saturating_add(t.pods);
        ask.gpus_per_pod = ask.gpus_per_pod.max(pod.gpus);
        if ask.models.is_empty() {
            ask.models = pod.models;
        }
        ask.spot &= pod.spot;
        if ask.image.is_none() {
            ask.image = pod.image;
        }
    }
    if ask.gpu_pods == 0 {
        ask.spot = false;
    }
    ask.templates = templates;
    if let Some(Value::Object(labels)) = object.get("metadata").and_then(|m| m.get("labels")) {
        for (k, v) in labels {
            if let Some(v) = v.as_str() {
                ask.labels.insert(k.clone(), v.to_owned());
            }
        }
    }
    Ok(ask)
}

/// The controller owner of `object` (`ownerReferences` with `controller:
/// true`): `(apiVersion, kind, name)`.
pub fn controller_owner(object: &Map<String, Value>) -> Option<(String, String, String)> {
    let refs = object
        .get("metadata")
        .and_then(|m| m.get("ownerReferences"))
        .and_then(Value::as_array)?;
    refs.iter()
        .find(|r| r.get("controller").and_then(Value::as_bool) == Some(true))
        .and_then(|r| {
            Some((
                r.get("apiVersion")?.as_str()?.to_owned(),
                r.get("kind")?.as_str()?.to_owned(),
                r.get("name")?.as_str()?.to_owned(),
            ))
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn label_values_of_coreweave_and_gpu_feature_discovery_are_read() {
        for (value, want) in [
            ("H100_NVLINK_80GB", "H100"),
            ("NVIDIA-H100-80GB-HBM3", "H100"),
            ("A100_PCIE_80GB", "A100-80GB"),
            ("A100_NVLINK_80GB", "A100-80GB"),
            ("NVIDIA-A100-SXM4-80GB", "A100-80GB"),
            ("NVIDIA-A100-SXM4-40GB", "A100"),
            ("A40", "A40"),
            ("NVIDIA-L40S", "L40S"),
            ("Tesla-T4", "T4"),
            ("NVIDIA-GeForce-RTX-4090", "RTX4090"),
            ("RTX_A6000", "A6000"),
            ("NVIDIA-A10G", "A10G"),
        ] {
            assert_eq!(builtin_model(value), want, "{value}");
        }
        let mut config = KubernetesConfig::default();
        config
            .gpu_models
            .insert("H100_NVLINK_80GB".into(), "H100-MEGA".into());
        assert_eq!(
            model_of(&config, "H100_NVLINK_80GB").unwrap().as_str(),
            "H100-MEGA"
        );
    }

    #[test]
    fn gpus_models_and_spot_are_read_from_a_pod_spec() {
        let config = KubernetesConfig::default();
        let pod = json!({"spec": {
            "containers": [
                {"name": "a", "resources": {"limits": {"nvidia.com/gpu": "2"}}},
                {"name": "b", "resources": {"requests": {"nvidia.com/gpu": 1}, "limits": {"nvidia.com/gpu": 1}}},
            ],
            "initContainers": [{"name": "i", "resources": {"limits": {"nvidia.com/gpu": "1"}}}],
            "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
                {"matchExpressions": [{"key": "gpu.nvidia.com/class", "operator": "In", "values": ["H100_NVLINK_80GB", "A100_PCIE_80GB"]}]}
            ]}}},
            "tolerations": [{"key": "cloud.google.com/gke-spot", "operator": "Exists"}],
        }});
        let ask = pod_ask(&config, &pod, "").unwrap();
        assert_eq!(ask.gpus, 3);
        let models: Vec<&str> = ask.models.iter().map(GpuModel::as_str).collect();
        assert_eq!(models, ["H100", "A100-80GB"]);
        assert!(ask.spot);
        let bad =
            json!({"spec": {"containers": [{"resources": {"limits": {"nvidia.com/gpu": "0.5"}}}]}});
        let e = pod_ask(&config, &bad, "").unwrap_err().to_string();
        assert!(
            e.contains("spec.containers[0].resources.limits.nvidia.com/gpu"),
            "{e}"
        );
    }

    #[test]
    fn custom_resources_have_their_templates_at_configured_paths() {
        let mut config = KubernetesConfig::default();
        config.pod_templates.push(crate::config::PodTemplatePaths {
            api_version: "kubeflow.org/v1".into(),
            kind: "PyTorchJob".into(),
            paths: vec![vec![
                "spec".into(),
                "pytorchReplicaSpecs".into(),
                "*".into(),
                "template".into(),
            ]],
        });
        let gpu = |n: u32| json!({"spec": {"containers": [{"resources": {"limits": {"nvidia.com/gpu": n}}}]}});
        let job = json!({"spec": {"pytorchReplicaSpecs": {
            "Master": {"replicas": 1, "template": gpu(8)},
            "Worker": {"replicas": 3, "template": gpu(8)},
        }}});
        let ask = workload_ask(&config, "kubeflow.org/v1", "PyTorchJob", &job).unwrap();
        assert_eq!((ask.gpu_pods, ask.gpus_per_pod), (4, 8));
        assert!(is_judged(&config, "kubeflow.org/v1", "PyTorchJob"));
        assert!(!is_judged(&config, "apps/v1", "DaemonSet"));
    }
}
