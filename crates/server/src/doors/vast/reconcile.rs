//! The Vast reconciler: Warden's `vast` allocations against the upstream's
//! instance list, every `vast.reconcile_interval_seconds`, off the request
//! path.
//!
//! One pass ([`reconcile`]):
//!
//! - a create placeholder whose instance is listed (matched by the
//!   `WARDEN_CREATE_ID` env var Warden put into the create) is **settled**:
//!   renamed to the instance id (its price stays the offer's `dph_total`
//!   the create reserved);
//! - a placeholder with no instance, older than `pending_grace_seconds` and
//!   not being created by this process, is **voided** (ended at its start:
//!   no cost), since the create never happened;
//! - an allocation whose instance is not listed, or is stopped, is
//!   **ended** (cost stops at this pass);
//! - an instance of a known team (Warden saw it before) that runs with no
//!   live allocation (started behind Warden's back) is **adopted**: recorded
//!   again without limit checks, since it costs whether or not it fits;
//! - an instance Warden never saw (created with the upstream key behind
//!   its back) is **flagged** once per process: a `vast.unknown_instance`
//!   audit record and a warning. It belongs to no team, so no team sees it;
//!   a platform admin decides what to do with it;
//! - a team with `vast.on_budget_exhausted: stop` whose hard daily or
//!   monthly budget is used up has its running instances **stopped**
//!   (`vast.budget_stop` audit record per instance) and their allocations
//!   ended.
//!
//! A pass that changed something appends one `sync.vast` audit record.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Instant;

use serde::Serialize;
use serde_json::{json, Value};
use tokio::task::JoinHandle;
use warden_core::{BudgetAction, BudgetMode, Door, Policy, TeamName, Usd};
use warden_store::{
    AllocationName, AllocationRequest, EndTarget, PeriodKind, Store, TimeZone, UnixMicros, Write,
};

use super::instances;
use super::search::model_of;
use super::upstream::Row;
use super::{
    lock, now, owners, settle_matches, store_error, upstream_error, DoorError, Pending, VastDoor,
};
use crate::app::AppState;

/// The audit kind of a pass's summary.
pub const AUDIT_KIND: &str = "sync.vast";

/// What one pass did.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct ReconcileReport {
    /// Instances the upstream listed.
    pub instances: usize,
    /// Placeholders settled: (placeholder, instance id).
    pub settled: Vec<(String, u64)>,
    /// Placeholders voided (no instance appeared).
    pub voided: Vec<String>,
    /// Allocations ended: (instance, why).
    pub ended: Vec<(String, &'static str)>,
    /// Instances recorded again: (instance, team).
    pub adopted: Vec<(u64, String)>,
    /// Instances no team owns (flagged in this pass).
    pub unknown: Vec<u64>,
    /// Instances stopped because their team's budget is used up.
    pub budget_stopped: Vec<(u64, String)>,
    /// What could not be done.
    pub errors: Vec<String>,
}

impl ReconcileReport {
    fn changed(&self) -> bool {
        !(self.settled.is_empty()
            && self.voided.is_empty()
            && self.ended.is_empty()
            && self.adopted.is_empty()
            && self.unknown.is_empty()
            && self.budget_stopped.is_empty())
    }
}

fn micros_since(started: UnixMicros, now: UnixMicros) -> u64 {
    u64::try_from(now.micros().saturating_sub(started.micros())).unwrap_or(0)
}

/// Whether a team's hard budget is used up now; the period's name if so.
async fn budget_exhausted(
    store: &Store,
    team: &warden_core::Team,
    tz: &TimeZone,
    at: UnixMicros,
) -> Result<Option<&'static str>, DoorError> {
    if team.budgets.mode != BudgetMode::Hard {
        return Ok(None);
    }
    for (kind, max, what) in [
        (PeriodKind::Day, team.budgets.daily, "daily"),
        (PeriodKind::Month, team.budgets.monthly, "monthly"),
    ] {
        let Some(max) = max else { continue };
        let from = at.period(kind, tz).start;
        let spent = store
            .spend(&team.name, from, at)
            .await
            .map_err(store_error)?;
        if spent >= max {
            return Ok(Some(what));
        }
    }
    Ok(None)
}

async fn audit(store: &Store, kind: &str, payload: Value) -> Result<(), DoorError> {
    store
        .write(
            Write::Audit {
                kind: kind.to_owned(),
                payload,
            },
            now(),
        )
        .await
        .map_err(store_error)?;
    Ok(())
}

/// One reconcile pass; see the module documentation. Fails as a whole
/// (changing nothing) only when the instance list or the live allocations
/// cannot be read.
pub async fn reconcile(
    door: &VastDoor,
    store: &Store,
    policy: &Policy,
    tz: &TimeZone,
) -> Result<ReconcileReport, DoorError> {
    let rows = door
        .upstream
        .instances(None, None)
        .await
        .map_err(upstream_error)?;
    let live: Vec<_> = store
        .list_live(None)
        .await
        .map_err(store_error)?
        .into_iter()
        .filter(|a| a.door == Door::Vast)
        .collect();
    let mut report = ReconcileReport {
        instances: rows.len(),
        ..ReconcileReport::default()
    };
    let settled = settle_matches(door, store, &live, &rows, "reconciler").await?;
    report.settled = settled
        .iter()
        .map(|(a, id)| (a.name.as_str().to_owned(), *id))
        .collect();
    let settled_ids: HashSet<u64> = settled.iter().map(|(_, id)| *id).collect();
    let at = now();
    let grace = u64::try_from(door.config.pending_grace.as_micros()).unwrap_or(u64::MAX);
    let by_id = |id: u64| rows.iter().find(|r| instances::id(r) == Some(id));
    let mut live_ids = HashSet::new();
    for a in live
        .iter()
        .filter(|a| !settled.iter().any(|(s, _)| s.id == a.id))
    {
        if let Some(p) = Pending::parse(a.name.as_str()) {
            if door.in_flight(&a.team, &p) || micros_since(a.started, at) < grace {
                continue;
            }
            match store
                .void(
                    a.id,
                    "no instance appeared for this create within the grace period",
                    at,
                )
                .await
            {
                Ok(_) => report.voided.push(a.name.as_str().to_owned()),
                Err(e) => report.errors.push(format!("void {}: {e}", a.name)),
            }
            continue;
        }
        let Ok(id) = a.name.as_str().parse::<u64>() else {
            continue;
        };
        let why = match by_id(id) {
            None => "instance_gone",
            Some(row) if !instances::is_active(row) => "instance_stopped",
            Some(_) => {
                live_ids.insert(id);
                continue;
            }
        };
        let target = EndTarget::Name {
            door: Door::Vast,
            name: a.name.clone(),
        };
        match store.end(&target, at).await {
            Ok(_) => report.ended.push((a.name.as_str().to_owned(), why)),
            Err(e) => report.errors.push(format!("end {}: {e}", a.name)),
        }
    }

    let ids: Vec<u64> = rows.iter().filter_map(instances::id).collect();
    let owners = owners(store, &ids).await?;
    for row in &rows {
        let Some(id) = instances::id(row) else {
            continue;
        };
        if live_ids.contains(&id) || settled_ids.contains(&id) {
            continue;
        }
        match owners.get(&id).map(|o| &o.team) {
            Some(team) if instances::is_active(row) => {
                match adopt(store, team, id, row, at).await {
                    Ok(()) => report.adopted.push((id, team.to_string())),
                    Err(e) => report.errors.push(format!("adopt {id}: {e}")),
                }
            }
            Some(_) => {}
            None => {
                if lock(&door.flagged).insert(id) {
                    report.unknown.push(id);
                    tracing::warn!(target: "warden::vast", instance = id, "an instance Warden never saw runs on the upstream account (created behind Warden's back); no team can see it");
                    let payload = json!({
                        "instance": id,
                        "gpu_name": row.get("gpu_name"),
                        "num_gpus": row.get("num_gpus"),
                        "dph_total": row.get("dph_total"),
                        "label": row.get("label"),
                        "actual_status": row.get("actual_status"),
                        "start_date": row.get("start_date"),
                    });
                    if let Err(e) = audit(store, "vast.unknown_instance", payload).await {
                        report.errors.push(format!("flag {id}: {e}"));
                    }
                }
            }
        }
    }

    for team in policy
        .teams()
        .iter()
        .filter(|t| t.vast.on_budget_exhausted == BudgetAction::Stop)
    {
        let period = match budget_exhausted(store, team, tz, at).await {
            Ok(Some(period)) => period,
            Ok(None) => continue,
            Err(e) => {
                report.errors.push(format!("budget of {}: {e}", team.name));
                continue;
            }
        };
        let running: Vec<u64> = rows
            .iter()
            .filter(|r| instances::is_active(r))
            .filter_map(instances::id)
            .filter(|id| owners.get(id).map(|o| &o.team) == Some(&team.name))
            .collect();
        for id in running {
            match budget_stop(door, store, &team.name, id, period).await {
                Ok(()) => report.budget_stopped.push((id, team.name.to_string())),
                Err(e) => report.errors.push(format!("budget stop {id}: {e}")),
            }
        }
    }

    if report.changed() {
        audit(store, AUDIT_KIND, json!(&report)).await?;
    }
    Ok(report)
}

async fn adopt(
    store: &Store,
    team: &TeamName,
    id: u64,
    row: &Row,
    at: UnixMicros,
) -> Result<(), DoorError> {
    let request = AllocationRequest {
        door: Door::Vast,
        team: team.clone(),
        user: None,
        name: AllocationName::parse(&id.to_string())
            .map_err(|e| DoorError::Internal(e.to_string()))?,
        gpu_model: row
            .get("gpu_name")
            .and_then(Value::as_str)
            .and_then(model_of),
        gpus: row
            .get("num_gpus")
            .and_then(Value::as_u64)
            .and_then(|n| u32::try_from(n).ok())
            .unwrap_or(0),
        hourly: instances::dph_total(row).unwrap_or(Usd::ZERO),
        context: Some(
            json!({"source": "vast-reconcile", "instance": id, "note": "running again without Warden (started behind its back)"}),
        ),
    };
    store
        .reserve(&request, &[], at)
        .await
        .map_err(store_error)?;
    Ok(())
}

async fn budget_stop(
    door: &VastDoor,
    store: &Store,
    team: &TeamName,
    id: u64,
    period: &str,
) -> Result<(), DoorError> {
    door.upstream
        .manage(id, &json!({"state": "stopped"}))
        .await
        .map_err(upstream_error)?;
    let name =
        AllocationName::parse(&id.to_string()).map_err(|e| DoorError::Internal(e.to_string()))?;
    store
        .end(
            &EndTarget::Name {
                door: Door::Vast,
                name,
            },
            now(),
        )
        .await
        .map_err(store_error)?;
    tracing::warn!(target: "warden::vast", instance = id, team = team.as_str(), period, "stopped: the team's hard budget is used up (on_budget_exhausted: stop)");
    audit(
        store,
        "vast.budget_stop",
        json!({"instance": id, "team": team, "period": period}),
    )
    .await
}

fn log_pass(result: &Result<ReconcileReport, DoorError>, started: Instant) {
    let latency_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
    match result {
        Ok(r) if r.changed() || !r.errors.is_empty() => tracing::info!(
            target: "warden::vast",
            instances = r.instances,
            settled = r.settled.len(),
            voided = r.voided.len(),
            ended = r.ended.len(),
            adopted = r.adopted.len(),
            unknown = r.unknown.len(),
            budget_stopped = r.budget_stopped.len(),
            errors = %r.errors.join("; "),
            latency_ms,
            "vast reconcile"
        ),
        Ok(r) => {
            tracing::debug!(target: "warden::vast", instances = r.instances, latency_ms, "vast reconcile")
        }
        Err(error) => {
            tracing::warn!(target: "warden::vast", %error, latency_ms, "vast reconcile failed; retrying at the next interval")
        }
    }
}

/// One pass with the state's door, store, policy and time zone.
pub async fn reconcile_state(state: &AppState) -> Result<ReconcileReport, DoorError> {
    let (Some(door), Some(store)) = (state.vast(), state.store()) else {
        return Err(DoorError::NotSupported("the Vast door is off".to_owned()));
    };
    let settings = state.settings();
    reconcile(door, store, &state.policy(), &settings.time_zone).await
}

/// Starts the reconciler for `warden serve`: a pass every
/// `vast.reconcile_interval_seconds` (the first one after one interval, so
/// a restart does not race creates in flight on other replicas).
pub fn spawn(state: &Arc<AppState>) -> Option<JoinHandle<()>> {
    let door = state.vast()?;
    state.store()?;
    let interval = door.config.reconcile_interval;
    let state = Arc::clone(state);
    Some(tokio::spawn(async move {
        let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticks.tick().await;
            let started = Instant::now();
            let result = reconcile_state(&state).await;
            log_pass(&result, started);
        }
    }))
}
