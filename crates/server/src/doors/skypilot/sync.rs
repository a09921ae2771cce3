//! The usage sync: Warden's allocations end when the SkyPilot cluster is
//! gone, and clusters Warden never saw are recorded, so quotas count what
//! really runs.
//!
//! A background task ([`spawn_skypilot`]) polls the SkyPilot API server's
//! cluster list ([`client::SkypilotClient::status`]) every
//! `skypilot_api.interval_seconds` and [`reconcile`]s the store with it. It
//! never runs on the decision path: decisions read only Warden's own tables,
//! and a slow or failing API server only delays the next reconcile (the poll
//! is logged with the reason and retried at the next tick).
//!
//! What [`reconcile`] does with one cluster list, for the `skypilot` door:
//!
//! - A live allocation whose cluster is not listed, or is `STOPPED` (a
//!   stopped cluster holds no GPUs), is **ended**; the store audits each end
//!   (`allocation.ended`). Two kinds are **kept** instead: allocations
//!   younger than the grace period (SkyPilot lists a cluster only once it
//!   starts provisioning, after the admin policy allowed it), and
//!   allocations whose name cannot be a SkyPilot cluster name (the door's
//!   `request:task:id` names for requests without a cluster, such as
//!   `jobs.launch`, whose clusters `/status` never lists).
//! - A cluster that holds GPUs (`INIT`, `UP`, `AUTOSTOPPING`) and has no live
//!   allocation under its name is **adopted**: it was created behind
//!   Warden's back (client-side policy, another server) or before Warden.
//!   Its team is resolved like a request's (user, then workspace, then
//!   `default_team`); its GPUs are nodes × GPUs per node (a fraction of a
//!   GPU counts as one, as at the door); its price comes from the policy's
//!   price table. It is reserved with no limits (it exists already; refusing
//!   to record it would only hide it from quotas), with the context
//!   `"source": "skypilot-sync"` in its audit record.
//! - A cluster whose team cannot be resolved is **skipped** and reported.
//!
//! A poll that changed something also appends one `sync.skypilot` audit
//! record saying what and why.
//!
//! Blind spots (of `/status`, not of Warden): clusters of managed jobs and
//! services are not listed, and a cluster whose owner has no user record on
//! the API server is silently dropped from the list.

pub mod client;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use serde::Serialize;
use tokio::task::JoinHandle;
use warden_core::{Door, GpuModel, Policy, ResolvedBy, TeamName, Usd};
use warden_store::{
    Allocation, AllocationId, AllocationName, AllocationRequest, EndTarget, ReserveOutcome, Store,
    StoreError, UnixMicros,
};

use crate::app::AppState;
use crate::config::{SkypilotApi, DEFAULT_SYNC_GRACE_SECONDS};
use client::{parse_accelerators, ApiError, ClientError, Cluster, SkypilotClient};

/// The `source` written into the audit context of what the sync records.
pub const SOURCE: &str = "skypilot-sync";
/// The audit kind of a poll's summary record.
pub const AUDIT_KIND: &str = "sync.skypilot";
/// Most names listed in one log line per category.
const LOG_NAMES: usize = 20;

/// Why a poll failed as a whole (nothing was changed).
#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    /// The cluster list could not be read.
    #[error("cannot read the cluster list: {0}")]
    Api(#[from] ApiError),
    /// The live allocations could not be read.
    #[error("cannot read live allocations: {0}")]
    Store(#[from] StoreError),
}

/// How [`reconcile`] judges.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReconcileOptions {
    /// Allocations younger than this are not ended although their cluster is
    /// missing or stopped: the launch may still be on its way to SkyPilot's
    /// cluster table.
    pub grace: Duration,
}

impl Default for ReconcileOptions {
    fn default() -> Self {
        Self {
            grace: Duration::from_secs(DEFAULT_SYNC_GRACE_SECONDS),
        }
    }
}

/// Why an allocation was ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum EndReason {
    /// The cluster is not in the list: it was torn down.
    ClusterGone,
    /// The cluster is `STOPPED`: it holds no GPUs.
    ClusterStopped,
}

/// Why an allocation whose cluster is missing or stopped was kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum KeptReason {
    /// Younger than the grace period.
    WithinGrace,
    /// Its name cannot be a SkyPilot cluster name, so `/status` cannot list
    /// it (e.g. a `jobs.launch` without a cluster name).
    NotAClusterName,
}

/// An allocation the sync ended.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Ended {
    /// The allocation as it ended.
    #[serde(flatten)]
    pub allocation: Allocation,
    /// Why.
    pub reason: EndReason,
}

/// An allocation left live although its cluster is missing or stopped.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Kept {
    /// Its id.
    pub allocation_id: AllocationId,
    /// Its name.
    pub name: AllocationName,
    /// Its team.
    pub team: TeamName,
    /// What would have ended it.
    pub would_end: EndReason,
    /// Why it was kept.
    pub reason: KeptReason,
}

/// A cluster the sync recorded as a new live allocation.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Adopted {
    /// The new allocation's id.
    pub allocation_id: AllocationId,
    /// The cluster's name.
    pub cluster: String,
    /// Its status.
    pub status: String,
    /// The team it is charged to.
    pub team: TeamName,
    /// How the team was found: `user`, `workspace` or `default_team`.
    pub resolved_by: &'static str,
    /// The owner's SkyPilot user name.
    pub user: Option<String>,
    /// The GPU model, for a GPU cluster.
    pub gpu_model: Option<GpuModel>,
    /// GPUs in total (nodes × GPUs per node, fractions rounded up).
    pub gpus: u32,
    /// Estimated price per hour.
    pub hourly_usd: Usd,
    /// Whether the price table knows the model (else `hourly_usd` is 0).
    pub priced: bool,
}

/// A cluster the sync could not charge to a team.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Skipped {
    /// The cluster's name.
    pub cluster: String,
    /// Its owner's SkyPilot user name.
    pub user: Option<String>,
    /// Its workspace.
    pub workspace: Option<String>,
    /// What to do about it.
    pub reason: String,
}

/// Something about one cluster or allocation that could not be done.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Problem {
    /// The cluster or allocation name.
    pub name: String,
    /// What went wrong.
    pub error: String,
}

/// What one [`reconcile`] did.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct ReconcileReport {
    /// Clusters in the list.
    pub clusters: usize,
    /// Allocations ended.
    pub ended: Vec<Ended>,
    /// Clusters recorded as new allocations.
    pub adopted: Vec<Adopted>,
    /// Allocations kept although their cluster is missing or stopped.
    pub kept: Vec<Kept>,
    /// Clusters without a team.
    pub skipped: Vec<Skipped>,
    /// What failed (the rest was still done).
    pub errors: Vec<Problem>,
}

/// The sizes of a [`ReconcileReport`], for logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Counts {
    /// Clusters listed.
    pub clusters: usize,
    /// Allocations ended.
    pub ended: usize,
    /// Clusters adopted.
    pub adopted: usize,
    /// Allocations kept.
    pub kept: usize,
    /// Clusters skipped.
    pub skipped: usize,
    /// Failures.
    pub errors: usize,
}

impl ReconcileReport {
    /// How many of each.
    pub fn counts(&self) -> Counts {
        Counts {
            clusters: self.clusters,
            ended: self.ended.len(),
            adopted: self.adopted.len(),
            kept: self.kept.len(),
            skipped: self.skipped.len(),
            errors: self.errors.len(),
        }
    }
}

/// Whether `name` matches SkyPilot's cluster-name pattern,
/// `[a-zA-Z]([-_.a-zA-Z0-9]*[a-zA-Z0-9])?`.
pub fn is_cluster_name(name: &str) -> bool {
    let bytes = name.as_bytes();
    let (Some(first), Some(last)) = (bytes.first(), bytes.last()) else {
        return false;
    };
    first.is_ascii_alphabetic()
        && last.is_ascii_alphanumeric()
        && bytes
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

fn resolved_by_name(by: ResolvedBy) -> &'static str {
    match by {
        ResolvedBy::Door => "door",
        ResolvedBy::User => "user",
        ResolvedBy::Workspace => "workspace",
        ResolvedBy::Label => "label",
        ResolvedBy::Default => "default_team",
    }
}

/// The GPU model and total GPUs of a cluster: nodes × GPUs per node, a
/// fraction of a GPU per node counting as one (as at the door).
fn cluster_gpus(c: &Cluster) -> Result<(Option<GpuModel>, u32), String> {
    let Some(text) = c.accelerators.as_deref() else {
        return Ok((None, 0));
    };
    let entries = parse_accelerators(text).map_err(|e| e.to_string())?;
    let (name, count) = match entries.as_slice() {
        [] => return Ok((None, 0)),
        [one] => one,
        _ => {
            return Err(format!(
                "accelerators `{text}` name several GPU models; one allocation records one model"
            ))
        }
    };
    let model = GpuModel::parse(name).map_err(|e| e.to_string())?;
    let per_node = count.ceil();
    if per_node > f64::from(u32::MAX) {
        return Err(format!("accelerators `{text}`: the GPU count is too large"));
    }
    // In range and integral after `ceil`: the cast is exact.
    let per_node = per_node as u32;
    let nodes = u32::try_from(c.nodes.unwrap_or(1))
        .map_err(|_| format!("`nodes` {} is too large", c.nodes.unwrap_or_default()))?;
    let total = per_node
        .checked_mul(nodes)
        .ok_or_else(|| format!("{nodes} nodes × {per_node} GPUs is too large"))?;
    Ok((Some(model), total))
}

fn context(c: &Cluster, resolved_by: &'static str, priced: bool) -> serde_json::Value {
    serde_json::json!({
        "source": SOURCE,
        "resolved_by": resolved_by,
        "priced": priced,
        "cluster": {
            "name": c.name,
            "status": c.status.as_str(),
            "user_name": c.user_name,
            "user_hash": c.user_hash,
            "workspace": c.workspace,
            "nodes": c.nodes,
            "accelerators": c.accelerators,
            "spot": c.is_spot(),
            "cloud": c.cloud,
            "region": c.region,
            "launched_at": c.launched_at,
            "is_managed": c.is_managed,
        },
    })
}

/// Reconciles the store's live `skypilot` allocations with `clusters`, the
/// API server's whole list (see the module doc for the rules). Changes are
/// made one by one, each audited by the store; a failure on one is reported
/// in [`ReconcileReport::errors`] and the rest still happen. Fails as a
/// whole only when the live allocations cannot be read.
pub async fn reconcile(
    store: &Store,
    policy: &Policy,
    clusters: &[Cluster],
    now: UnixMicros,
    options: &ReconcileOptions,
) -> Result<ReconcileReport, StoreError> {
    let live = store.list_live(None).await?;
    let live: Vec<&Allocation> = live.iter().filter(|a| a.door == Door::Skypilot).collect();
    let by_name: HashMap<&str, &Cluster> = clusters.iter().map(|c| (c.name.as_str(), c)).collect();
    let grace = i64::try_from(options.grace.as_micros()).unwrap_or(i64::MAX);
    let young_after = now.micros().saturating_sub(grace);
    let mut report = ReconcileReport {
        clusters: clusters.len(),
        ..ReconcileReport::default()
    };

    for a in &live {
        let reason = match by_name.get(a.name.as_str()) {
            Some(c) if c.status.holds_gpus() => continue,
            Some(_) => EndReason::ClusterStopped,
            None => EndReason::ClusterGone,
        };
        let kept = if !is_cluster_name(a.name.as_str()) {
            Some(KeptReason::NotAClusterName)
        } else if a.started.micros() > young_after {
            Some(KeptReason::WithinGrace)
        } else {
            None
        };
        if let Some(kept) = kept {
            report.kept.push(Kept {
                allocation_id: a.id,
                name: a.name.clone(),
                team: a.team.clone(),
                would_end: reason,
                reason: kept,
            });
            continue;
        }
        // By id, not by name: another team's allocation of the same name may
        // be young.
        match store.end(&EndTarget::Id(a.id), now).await {
            Ok(ended) => report.ended.extend(
                ended
                    .into_iter()
                    .map(|allocation| Ended { allocation, reason }),
            ),
            Err(e) => report.errors.push(Problem {
                name: a.name.to_string(),
                error: format!("cannot end allocation {}: {e}", a.id),
            }),
        }
    }

    let live_names: HashSet<&str> = live.iter().map(|a| a.name.as_str()).collect();
    for c in clusters {
        if !c.status.holds_gpus() || live_names.contains(c.name.as_str()) {
            continue;
        }
        // The user as the door names it (`identity.skypilot_user_claim`).
        let user = policy
            .skypilot_user_claim()
            .pick(c.user_name.as_deref(), c.user_hash.as_deref());
        let user = user.as_deref();
        let workspace = c.workspace.as_deref().filter(|w| !w.is_empty());
        let Some((team, by)) = policy.resolve_team(None, user, workspace, None) else {
            report.skipped.push(Skipped {
                cluster: c.name.clone(),
                user: user.map(str::to_owned),
                workspace: workspace.map(str::to_owned),
                reason: format!(
                    "no team lists user `{}` or workspace `{}`, and there is no `default_team`; add the user to a team's `users` to count this cluster",
                    user.unwrap_or("(none)"),
                    workspace.unwrap_or("(none)")
                ),
            });
            continue;
        };
        match adopt(store, policy, c, team, by, user, now).await {
            Ok(adopted) => report.adopted.push(adopted),
            Err(error) => report.errors.push(Problem {
                name: c.name.clone(),
                error,
            }),
        }
    }

    if !report.ended.is_empty() || !report.adopted.is_empty() {
        let summary = serde_json::json!({
            "source": SOURCE,
            "clusters": report.clusters,
            "ended": report.ended.iter().map(|e| serde_json::json!({
                "allocation_id": e.allocation.id,
                "name": e.allocation.name,
                "reason": e.reason,
            })).collect::<Vec<_>>(),
            "adopted": report.adopted.iter().map(|a| serde_json::json!({
                "allocation_id": a.allocation_id,
                "name": a.cluster,
                "team": a.team,
            })).collect::<Vec<_>>(),
        });
        if let Err(e) = store.append_audit(AUDIT_KIND, &summary, now).await {
            report.errors.push(Problem {
                name: AUDIT_KIND.to_owned(),
                error: format!("cannot append the poll's audit record: {e}"),
            });
        }
    }
    Ok(report)
}

/// Records one unknown cluster as a live allocation, without limits.
async fn adopt(
    store: &Store,
    policy: &Policy,
    c: &Cluster,
    team: TeamName,
    by: ResolvedBy,
    user: Option<&str>,
    now: UnixMicros,
) -> Result<Adopted, String> {
    let name = AllocationName::parse(&c.name).map_err(|e| e.to_string())?;
    let (gpu_model, gpus) = cluster_gpus(c)?;
    let price = gpu_model
        .as_ref()
        .map(|m| policy.prices().per_gpu_hour(m, c.is_spot()));
    let (hourly, priced) = match price {
        None => (Usd::ZERO, true),
        Some(Some(per_gpu)) => (per_gpu.times(u64::from(gpus)), true),
        Some(None) => (Usd::ZERO, false),
    };
    let resolved_by = resolved_by_name(by);
    let request = AllocationRequest {
        door: Door::Skypilot,
        team: team.clone(),
        user: user.map(str::to_owned),
        name,
        gpu_model: gpu_model.clone(),
        gpus,
        hourly,
        context: Some(context(c, resolved_by, priced)),
    };
    match store.reserve(&request, &[], now).await {
        Ok(ReserveOutcome::Granted { allocation_id, .. }) => Ok(Adopted {
            allocation_id,
            cluster: c.name.clone(),
            status: c.status.to_string(),
            team,
            resolved_by,
            user: request.user,
            gpu_model,
            gpus,
            hourly_usd: hourly,
            priced,
        }),
        Ok(ReserveOutcome::Denied(d)) => Err(format!("the store refused to record it: {d}")),
        Err(e) => Err(format!("cannot record it: {e}")),
    }
}

/// One poll: the cluster list, then [`reconcile`].
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Poll {
    /// What reconcile did.
    #[serde(flatten)]
    pub report: ReconcileReport,
    /// Time spent reading the cluster list, in milliseconds.
    pub api_ms: u64,
    /// Time of the whole poll, in milliseconds.
    pub latency_ms: u64,
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// Reads the cluster list and reconciles the store with it, at the current
/// time.
pub async fn poll_once(
    client: &SkypilotClient,
    store: &Store,
    policy: &Policy,
    options: &ReconcileOptions,
) -> Result<Poll, SyncError> {
    let started = Instant::now();
    let clusters = client.status().await?;
    let api = started.elapsed();
    let now = UnixMicros::from_system_time(SystemTime::now());
    let report = reconcile(store, policy, &clusters, now, options).await?;
    Ok(Poll {
        report,
        api_ms: millis(api),
        latency_ms: millis(started.elapsed()),
    })
}

/// Up to [`LOG_NAMES`] items, comma-separated, with a count of the rest.
fn list<T>(items: &[T], show: impl Fn(&T) -> String) -> String {
    let mut out: Vec<String> = items.iter().take(LOG_NAMES).map(show).collect();
    if items.len() > LOG_NAMES {
        out.push(format!("and {} more", items.len() - LOG_NAMES));
    }
    out.join(", ")
}

/// Logs one poll as one JSON line (target `warden::sync`).
fn log_poll(url: &str, result: &Result<Poll, SyncError>, started: Instant) {
    match result {
        Ok(poll) => {
            let c = poll.report.counts();
            let skipped = list(&poll.report.skipped, |s| {
                format!(
                    "{} (user {})",
                    s.cluster,
                    s.user.as_deref().unwrap_or("none")
                )
            });
            let errors = list(&poll.report.errors, |p| format!("{}: {}", p.name, p.error));
            macro_rules! line {
                ($level:ident) => {
                    tracing::$level!(
                        target: "warden::sync",
                        url,
                        clusters = c.clusters,
                        ended = c.ended,
                        adopted = c.adopted,
                        kept = c.kept,
                        skipped = c.skipped,
                        errors = c.errors,
                        skipped_clusters = skipped.as_str(),
                        problems = errors.as_str(),
                        api_ms = poll.api_ms,
                        latency_ms = poll.latency_ms,
                        "skypilot sync"
                    )
                };
            }
            if c.errors > 0 {
                line!(warn);
            } else {
                line!(info);
            }
        }
        Err(error) => tracing::warn!(
            target: "warden::sync",
            url,
            error = %error,
            latency_ms = millis(started.elapsed()),
            "skypilot sync failed; retrying at the next interval"
        ),
    }
}

/// Starts the background usage sync for `warden serve`: a first poll at
/// once, then one every `api.interval` (a slow poll delays the next one; it
/// never overlaps). Each poll uses the policy in force at that moment.
///
/// Returns `Ok(None)` without starting anything when the state has no
/// store (`storage: none`): there is nothing to reconcile. Fails only when
/// the token or the CA file cannot be read.
pub fn spawn_skypilot(
    state: &Arc<AppState>,
    api: &SkypilotApi,
) -> Result<Option<JoinHandle<()>>, ClientError> {
    let Some(store) = state.store().cloned() else {
        tracing::warn!(
            target: "warden::sync",
            "`skypilot_api` is set but `storage` is `none`; the usage sync is off"
        );
        return Ok(None);
    };
    let client = SkypilotClient::from_config(api)?;
    let state = Arc::clone(state);
    let options = ReconcileOptions { grace: api.grace };
    let interval = api.interval;
    Ok(Some(tokio::spawn(async move {
        let url = client.url().to_string();
        let mut ticks = tokio::time::interval(interval);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticks.tick().await;
            let started = Instant::now();
            let policy = state.policy();
            let result = poll_once(&client, &store, &policy, &options).await;
            log_poll(&url, &result, started);
        }
    })))
}

#[cfg(test)]
mod tests {
    use super::*;
    use client::ClusterStatus;

    fn cluster(accelerators: Option<&str>, nodes: Option<u64>) -> Cluster {
        Cluster {
            name: "c".to_owned(),
            status: ClusterStatus::Up,
            user_name: None,
            user_hash: None,
            workspace: None,
            nodes,
            accelerators: accelerators.map(str::to_owned),
            cloud: None,
            region: None,
            launched_at: None,
            is_managed: false,
            resources_str: None,
        }
    }

    #[test]
    fn gpus_are_nodes_times_rounded_up_count() {
        let h100 = GpuModel::parse("H100").unwrap();
        assert_eq!(
            cluster_gpus(&cluster(Some("{'H100': 8}"), Some(2))).unwrap(),
            (Some(h100), 16)
        );
        let t4 = GpuModel::parse("T4").unwrap();
        assert_eq!(
            cluster_gpus(&cluster(Some("{'T4': 0.5}"), Some(3))).unwrap(),
            (Some(t4), 3)
        );
        assert_eq!(cluster_gpus(&cluster(None, Some(4))).unwrap(), (None, 0));
        assert_eq!(cluster_gpus(&cluster(Some("{}"), None)).unwrap(), (None, 0));
        assert!(cluster_gpus(&cluster(Some("{'A': 1, 'B': 1}"), None)).is_err());
        assert!(cluster_gpus(&cluster(Some("{'H100': 1e12}"), None)).is_err());
    }

    #[test]
    fn cluster_names_follow_skypilot() {
        for ok in ["a", "train-h100", "sky-1234-alice", "a.b_c"] {
            assert!(is_cluster_name(ok), "{ok}");
        }
        for bad in [
            "",
            "1abc",
            "abc-",
            "jobs.launch:train:6921a3c4-17",
            "ns/pod",
        ] {
            assert!(!is_cluster_name(bad), "{bad}");
        }
    }
}
