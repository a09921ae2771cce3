//! The usage sync: Warden's `kubernetes` allocations against the pods that
//! really run, from a `kubectl get pods -A -o json` export (`warden sync
//! k8s --pods FILE`).
//!
//! Pods are grouped into workloads by the allocation they name: the
//! annotation [`ALLOCATION_ANNOTATION`] that admission wrote into the
//! object and its pod templates (so a Deployment's pods all name
//! `ns/deployment/web`); a pod without it is its own workload,
//! `ns/pod/<name>`. A pod holds GPUs when it asks for any (as admission
//! reads them, [`super::workload::pod_ask`]) and is `Pending` or `Running`.
//!
//! - A live allocation with no such pod is **ended** once it is older than
//!   `kubernetes.sync_grace_seconds` (a fresh one may not have pods yet),
//!   by id, audited by the store. Kept instead: zero-GPU allocations (the
//!   marker of a workload scaled to zero, see the door's documentation).
//! - A workload with GPU pods and no live allocation is **adopted**:
//!   reserved with no limits (it runs already; refusing to record it would
//!   hide it from quotas), team from its namespace, GPUs the sum over its
//!   pods, model from the first pod naming one (else
//!   [`super::workload::ANY_MODEL`]), priced by the price table; context
//!   `"source": "kubernetes-sync"`.
//! - A workload in a namespace of no team, or whose pods cannot be read,
//!   is **skipped** and reported.
//!
//! A sync that changed something appends one `sync.kubernetes` audit record.

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use serde::Serialize;
use serde_json::Value;
use warden_core::{Door, GpuModel, Policy, Usd};
use warden_store::{
    AllocationName, AllocationRequest, EndTarget, ReserveOutcome, Store, StoreError, UnixMicros,
};

use super::patch::ALLOCATION_ANNOTATION;
use super::workload::{pod_ask, ANY_MODEL};
use crate::config::KubernetesConfig;

/// The `source` written into the audit context of what the sync records.
pub const SOURCE: &str = "kubernetes-sync";
/// The audit kind of a sync's summary record.
pub const AUDIT_KIND: &str = "sync.kubernetes";
pub use super::cluster::{MAX_POD_LIST_BYTES, MAX_POD_LIST_DEPTH};

/// A workload: the GPU pods naming one allocation.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Workload {
    /// The allocation name.
    pub name: String,
    /// The namespace.
    pub namespace: String,
    /// Its GPU pods.
    pub pods: u32,
    /// GPUs over its pods.
    pub gpus: u32,
    /// The model of the first pod naming one.
    pub gpu_model: Option<GpuModel>,
    /// Every pod on spot capacity.
    pub spot: bool,
}

/// A pod that could not be read.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Problem {
    /// The pod or allocation.
    pub name: String,
    /// What is wrong.
    pub error: String,
}

/// Reads a `kubectl get pods -A -o json` export into workloads; pods that
/// cannot be read are reported, not fatal.
pub fn workloads(
    config: &KubernetesConfig,
    text: &[u8],
) -> Result<(Vec<Workload>, Vec<Problem>), String> {
    let list = super::cluster::parse_pod_list(text)?;
    workloads_of(config, &list)
}

/// [`workloads`] of a pod list already read.
pub fn workloads_of(
    config: &KubernetesConfig,
    list: &Value,
) -> Result<(Vec<Workload>, Vec<Problem>), String> {
    let items = list
        .get("items")
        .and_then(Value::as_array)
        .ok_or("the pod list has no `items`; export it with `kubectl get pods -A -o json`")?;
    let mut by_name: BTreeMap<String, Workload> = BTreeMap::new();
    let mut problems = Vec::new();
    for pod in items {
        if pod
            .get("kind")
            .and_then(Value::as_str)
            .is_some_and(|k| k != "Pod")
        {
            continue;
        }
        let meta = pod.get("metadata");
        let text = |k: &str| {
            meta.and_then(|m| m.get(k))
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned()
        };
        let (name, namespace) = (text("name"), text("namespace"));
        let phase = pod
            .get("status")
            .and_then(|s| s.get("phase"))
            .and_then(Value::as_str)
            .unwrap_or("Pending");
        if !matches!(phase, "Pending" | "Running") {
            continue;
        }
        let ask = match pod_ask(config, pod, "") {
            Ok(ask) => ask,
            Err(e) => {
                problems.push(Problem {
                    name: format!("{namespace}/{name}"),
                    error: e.to_string(),
                });
                continue;
            }
        };
        if ask.gpus == 0 {
            continue;
        }
        let annotated = meta
            .and_then(|m| m.get("annotations"))
            .and_then(|a| a.get(ALLOCATION_ANNOTATION))
            .and_then(Value::as_str)
            .filter(|a| a.starts_with(&format!("{namespace}/")));
        let key = annotated.map_or_else(|| format!("{namespace}/pod/{name}"), str::to_owned);
        let w = by_name.entry(key.clone()).or_insert_with(|| Workload {
            name: key,
            namespace: namespace.clone(),
            pods: 0,
            gpus: 0,
            gpu_model: None,
            spot: true,
        });
        w.pods += 1;
        w.gpus = w.gpus.saturating_add(ask.gpus);
        if w.gpu_model.is_none() {
            w.gpu_model = ask.models.first().cloned();
        }
        w.spot &= ask.spot;
    }
    Ok((by_name.into_values().collect(), problems))
}

/// An allocation ended.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Ended {
    /// Its name.
    pub name: String,
    /// Its team.
    pub team: String,
    /// Its GPUs.
    pub gpus: u32,
}

/// An allocation kept although no pod runs for it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Kept {
    /// Its name.
    pub name: String,
    /// Why: `within_grace` or `scaled_to_zero`.
    pub reason: &'static str,
}

/// A workload recorded.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Adopted {
    /// The workload.
    pub workload: Workload,
    /// Its team.
    pub team: String,
    /// Its estimated price.
    pub hourly_usd: Usd,
}

/// What one sync did.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Report {
    /// GPU workloads listed.
    pub workloads: usize,
    /// Allocations ended.
    pub ended: Vec<Ended>,
    /// Allocations kept.
    pub kept: Vec<Kept>,
    /// Workloads recorded.
    pub adopted: Vec<Adopted>,
    /// Workloads that could not be resolved (no team), and pods that could
    /// not be read.
    pub skipped: Vec<Problem>,
    /// Changes that failed.
    pub errors: Vec<Problem>,
}

/// Reconciles the live `kubernetes` allocations with `workloads` (the
/// whole cluster's); see the module documentation.
pub async fn reconcile(
    store: &Store,
    policy: &Policy,
    workloads: &[Workload],
    now: UnixMicros,
    grace: Duration,
) -> Result<Report, StoreError> {
    let live = store.list_live(None).await?;
    let live: Vec<_> = live
        .into_iter()
        .filter(|a| a.door == Door::Kubernetes)
        .collect();
    let running: HashSet<&str> = workloads.iter().map(|w| w.name.as_str()).collect();
    let young_after = now
        .micros()
        .saturating_sub(i64::try_from(grace.as_micros()).unwrap_or(i64::MAX));
    let mut report = Report {
        workloads: workloads.len(),
        ..Report::default()
    };
    for a in &live {
        if running.contains(a.name.as_str()) {
            continue;
        }
        let kept = if a.gpus == 0 {
            Some("scaled_to_zero")
        } else if a.started.micros() > young_after {
            Some("within_grace")
        } else {
            None
        };
        if let Some(reason) = kept {
            report.kept.push(Kept {
                name: a.name.to_string(),
                reason,
            });
            continue;
        }
        match store.end_by(&EndTarget::Id(a.id), Some(SOURCE), now).await {
            Ok(ended) => report.ended.extend(ended.into_iter().map(|e| Ended {
                name: e.name.to_string(),
                team: e.team.to_string(),
                gpus: e.gpus,
            })),
            Err(e) => report.errors.push(Problem {
                name: a.name.to_string(),
                error: format!("cannot end allocation {}: {e}", a.id),
            }),
        }
    }
    let live_names: HashSet<&str> = live.iter().map(|a| a.name.as_str()).collect();
    for w in workloads
        .iter()
        .filter(|w| !live_names.contains(w.name.as_str()))
    {
        let Some(team) = policy.team_of_namespace(&w.namespace) else {
            report.skipped.push(Problem {
                name: w.name.clone(),
                error: format!(
                    "namespace `{}` belongs to no team; give it to one (`teams.<team>.kubernetes.namespace`) to count these GPUs",
                    w.namespace
                ),
            });
            continue;
        };
        let model = w
            .gpu_model
            .clone()
            .or_else(|| GpuModel::parse(ANY_MODEL).ok());
        let hourly = model
            .as_ref()
            .and_then(|m| policy.prices().per_gpu_hour(m, w.spot))
            .map_or(Usd::ZERO, |p| p.times(u64::from(w.gpus)));
        let name = match AllocationName::parse(&w.name) {
            Ok(n) => n,
            Err(e) => {
                report.errors.push(Problem {
                    name: w.name.clone(),
                    error: e.to_string(),
                });
                continue;
            }
        };
        let request = AllocationRequest {
            door: Door::Kubernetes,
            team: team.name.clone(),
            user: None,
            name,
            gpu_model: model,
            gpus: w.gpus,
            hourly,
            context: Some(serde_json::json!({"source": SOURCE, "pods": w.pods, "spot": w.spot})),
        };
        match store.reserve(&request, &[], now).await {
            Ok(ReserveOutcome::Granted { .. }) => report.adopted.push(Adopted {
                workload: w.clone(),
                team: team.name.to_string(),
                hourly_usd: hourly,
            }),
            Ok(ReserveOutcome::Denied(d)) => report.errors.push(Problem {
                name: w.name.clone(),
                error: format!("the store refused to record it: {d}"),
            }),
            Err(e) => report.errors.push(Problem {
                name: w.name.clone(),
                error: format!("cannot record it: {e}"),
            }),
        }
    }
    if !report.ended.is_empty() || !report.adopted.is_empty() {
        let summary = serde_json::json!({
            "source": SOURCE,
            "workloads": report.workloads,
            "ended": report.ended,
            "adopted": report.adopted.iter().map(|a| &a.workload.name).collect::<Vec<_>>(),
        });
        if let Err(e) = store.append_audit(AUDIT_KIND, &summary, now).await {
            report.errors.push(Problem {
                name: AUDIT_KIND.to_owned(),
                error: format!("cannot append the sync's audit record: {e}"),
            });
        }
    }
    Ok(report)
}

/// One sync with the cluster: list its pods, then [`reconcile`]; pods that
/// cannot be read are in the report's `skipped`.
pub async fn poll_once(
    client: &super::cluster::ClusterClient,
    store: &Store,
    policy: &Policy,
    config: &KubernetesConfig,
    now: UnixMicros,
) -> Result<Report, String> {
    let list = client.pods().await?;
    let (workloads, problems) = workloads_of(config, &list)?;
    let mut report = reconcile(store, policy, &workloads, now, config.sync_grace)
        .await
        .map_err(|e| format!("cannot read live allocations: {e}"))?;
    report.skipped.extend(problems);
    Ok(report)
}

/// Starts the periodic sync when `kubernetes.kubeconfig` is set and there
/// is a store: every `kubernetes.sync_interval_seconds`, off the decision
/// path; a failed sync is logged and retried at the next tick. The
/// kubeconfig is read now: an unusable one is an error naming the fix.
pub fn spawn(
    state: &std::sync::Arc<crate::app::AppState>,
) -> Result<Option<tokio::task::JoinHandle<()>>, String> {
    let config = state.kubernetes();
    let Some(path) = config.kubeconfig.clone() else {
        return Ok(None);
    };
    let Some(store) = state.store().cloned() else {
        tracing::warn!(target: "warden::sync", "`kubernetes.kubeconfig` is set but `storage` is `none`; the Kubernetes usage sync is off");
        return Ok(None);
    };
    let client = super::cluster::ClusterClient::from_kubeconfig(&path)?;
    let state = std::sync::Arc::clone(state);
    Ok(Some(tokio::spawn(async move {
        let mut ticks = tokio::time::interval(config.sync_interval);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticks.tick().await;
            let now = UnixMicros::from_system_time(std::time::SystemTime::now());
            let (policy, config) = (state.policy(), state.kubernetes());
            match poll_once(&client, &store, &policy, &config, now).await {
                Ok(r) => tracing::info!(
                    target: "warden::sync",
                    door = "kubernetes",
                    server = client.server(),
                    workloads = r.workloads,
                    ended = r.ended.len(),
                    adopted = r.adopted.len(),
                    kept = r.kept.len(),
                    skipped = r.skipped.len(),
                    errors = r.errors.len(),
                    "kubernetes usage sync"
                ),
                Err(error) => tracing::warn!(
                    target: "warden::sync",
                    door = "kubernetes",
                    server = client.server(),
                    %error,
                    "kubernetes usage sync failed; retried at the next interval"
                ),
            }
        }
    })))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn pods_are_grouped_by_the_allocation_they_name() {
        let pod = |name: &str, ann: Option<&str>, gpus: &str, phase: &str| {
            let mut meta = json!({"name": name, "namespace": "ml"});
            if let Some(a) = ann {
                meta["annotations"] = json!({ALLOCATION_ANNOTATION: a});
            }
            json!({"kind": "Pod", "metadata": meta, "status": {"phase": phase},
                   "spec": {"nodeSelector": {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"},
                            "containers": [{"resources": {"limits": {"nvidia.com/gpu": gpus}}}]}})
        };
        let list = json!({"apiVersion": "v1", "kind": "List", "items": [
            pod("web-1", Some("ml/deployment/web"), "1", "Running"),
            pod("web-2", Some("ml/deployment/web"), "1", "Pending"),
            pod("done", Some("ml/job/x"), "1", "Succeeded"),
            pod("solo", None, "2", "Running"),
            pod("cpu", None, "0", "Running"),
            pod("forged", Some("other/job/y"), "1", "Running"),
            pod("bad", None, "x", "Running"),
        ]});
        let (w, problems) =
            workloads(&KubernetesConfig::default(), list.to_string().as_bytes()).unwrap();
        let got: Vec<(&str, u32, u32)> = w
            .iter()
            .map(|w| (w.name.as_str(), w.pods, w.gpus))
            .collect();
        assert_eq!(
            got,
            [
                ("ml/deployment/web", 2, 2),
                ("ml/pod/forged", 1, 1),
                ("ml/pod/solo", 1, 2)
            ]
        );
        assert_eq!(w[0].gpu_model.as_ref().unwrap().as_str(), "H100");
        assert_eq!(problems.len(), 1);
        assert!(workloads(&KubernetesConfig::default(), b"{}")
            .unwrap_err()
            .contains("items"));
    }
}
