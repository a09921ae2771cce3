//! Recording decisions: every decision a door answers is written to the
//! store's audit chain first; an allowed launch also reserves its allocation
//! against the team's quotas, in the same transaction. If the store cannot
//! be written, the door denies (fail closed).
//!
//! Secrets: the audit payload carries the decision (team, user, request,
//! verdict, reasons, mutations, price), the launch target and, for
//! `warden replay`, the door's request with its task and config documents
//! redacted by [`crate::redact`] (no environment variable or secret values,
//! no tokens or keys).
//!
//! Size: a record keeps at most [`MAX_AUDIT_INPUT_BYTES`] of a request's
//! input (its JSON text). A larger input is kept as `input_truncated`:
//! the SHA-256 of the whole text, its size and its first
//! [`TRUNCATED_PREFIX_BYTES`], so no caller can grow the audit log by more
//! than that per request; `warden replay` skips such records.

use warden_core::{
    BudgetMode, Budgets, Decision, Door, LaunchRequest, Policy, Quotas, Resource, TeamName, Usd,
};
use warden_store::{
    AllocationName, AllocationRequest, Limit, PeriodKind, ReserveOutcome, Scope, Store, TimeZone,
    UnixMicros, Write, Written,
};

use crate::error::DoorError;

/// Request names that start (or add to) something that runs and costs:
/// these reserve an allocation when allowed server side.
pub const LAUNCH_REQUESTS: &[&str] = &["launch", "exec", "jobs.launch", "serve.up", "serve.update"];

/// What recording changed about the answer.
#[derive(Debug)]
pub enum Recorded {
    /// Recorded; answer as decided.
    Recorded,
    /// Recorded, and the launch's allocation granted (or re-launched):
    /// answer as decided; the team's spend may have reached an alert.
    Granted,
    /// The launch does not fit the team's quotas: deny with this message.
    OverQuota(String),
}

/// The store limits of a team's quotas.
pub fn limits(q: &Quotas) -> Vec<Limit> {
    let n = |v: u64| u32::try_from(v).unwrap_or(u32::MAX);
    let mut out = Vec::new();
    for (model, max) in &q.max_gpus_by_model {
        out.push(Limit::ModelGpus {
            model: model.clone(),
            scope: Scope::Team,
            max: n(*max),
        });
    }
    if let Some(max) = q.max_gpus {
        out.push(Limit::Gpus {
            scope: Scope::Team,
            max: n(max),
        });
    }
    if let Some(max) = q.max_live {
        out.push(Limit::LiveAllocations {
            scope: Scope::Team,
            max: n(max),
        });
    }
    if let Some(max) = q.max_live_per_user {
        out.push(Limit::LiveAllocations {
            scope: Scope::User,
            max: n(max),
        });
    }
    if let Some(max) = q.max_live_hourly {
        out.push(Limit::HourlyCost {
            scope: Scope::Team,
            max,
        });
    }
    let window = std::time::Duration::from_secs(q.launch_window_secs);
    if let Some(max) = q.max_launches_per_user {
        out.push(Limit::Launches {
            scope: Scope::User,
            max: n(max),
            per: window,
        });
    }
    if let Some(max) = q.max_launches_per_team {
        out.push(Limit::Launches {
            scope: Scope::Team,
            max: n(max),
            per: window,
        });
    }
    for (model, max) in &q.user_max_gpus_by_model {
        out.push(Limit::ModelGpus {
            model: model.clone(),
            scope: Scope::User,
            max: n(*max),
        });
    }
    if let Some(max) = q.user_max_gpus {
        out.push(Limit::Gpus {
            scope: Scope::User,
            max: n(max),
        });
    }
    if let Some(max) = q.user_max_live_hourly {
        out.push(Limit::HourlyCost {
            scope: Scope::User,
            max,
        });
    }
    out
}

/// Raises `limits` by what the live allocation `old` counts against each,
/// so a request replacing it is judged as if it were already gone: GPUs
/// (of its model), one live allocation, its hourly price; in the user's
/// scope only when `old` is `user`'s. Launch rates are not credited (a
/// resize counts as a launch), and budgets are not (the old allocation's
/// hold stays until it ends: a resize near a hard budget may be refused).
pub fn credit(limits: &mut [Limit], old: &warden_store::Allocation, user: Option<&str>) {
    for limit in limits.iter_mut() {
        let applies = |scope: &Scope| match scope {
            Scope::Team => true,
            Scope::User => old.user.as_deref() == user,
        };
        match limit {
            Limit::Gpus { scope, max } if applies(scope) => {
                *max = max.saturating_add(old.gpus);
            }
            Limit::ModelGpus { model, scope, max }
                if applies(scope) && old.gpu_model.as_ref() == Some(model) =>
            {
                *max = max.saturating_add(old.gpus);
            }
            Limit::LiveAllocations { scope, max } if applies(scope) => {
                *max = max.saturating_add(1);
            }
            Limit::HourlyCost { scope, max } if applies(scope) => {
                *max = Usd::from_micros(max.micros().saturating_add(old.hourly.micros()));
            }
            _ => {}
        }
    }
}

/// The store limits of a team's hard budgets for a launch costing `hourly`,
/// at `now` (periods are days and calendar months in `tz`); none for soft
/// budgets, which only alert.
pub fn budget_limits(b: &Budgets, hourly: Usd, now: UnixMicros, tz: &TimeZone) -> Vec<Limit> {
    if b.mode == BudgetMode::Soft {
        return Vec::new();
    }
    let secs = i128::from(b.reservation_secs);
    let reservation = i128::from(hourly.micros()) * secs / 3600;
    let reservation = Usd::from_micros(i64::try_from(reservation).unwrap_or(i64::MAX));
    let mut out = Vec::new();
    if let Some(max) = b.daily {
        out.push(Limit::Budget {
            from: now.period(PeriodKind::Day, tz).start,
            max,
            reservation,
        });
    }
    if let Some(max) = b.monthly {
        out.push(Limit::Budget {
            from: now.period(PeriodKind::Month, tz).start,
            max,
            reservation,
        });
    }
    out
}

/// What a budget denial adds: when the period resets.
fn budget_hint(limit: &Limit, now: UnixMicros, tz: &TimeZone) -> String {
    let day = now.period(PeriodKind::Day, tz);
    let zone = tz.iana_name().unwrap_or("UTC");
    match limit {
        Limit::Budget { from, .. } if *from == day.start => format!(
            "; the daily budget resets at {} (midnight {zone}): pause provisioning until then, or ask a platform admin to raise `budgets.daily_usd`",
            day.end
        ),
        Limit::Budget { .. } => format!(
            "; the monthly budget resets at {} (midnight {zone}): pause provisioning until then, or ask a platform admin to raise `budgets.monthly_usd`",
            now.period(PeriodKind::Month, tz).end
        ),
        _ => String::new(),
    }
}

/// Most bytes of a request's input (as JSON text) an audit record keeps.
pub const MAX_AUDIT_INPUT_BYTES: usize = 64 * 1024;

/// What an audit record keeps of the text of an input over
/// [`MAX_AUDIT_INPUT_BYTES`].
pub const TRUNCATED_PREFIX_BYTES: usize = 4 * 1024;

/// The payload key of an input kept whole.
pub const INPUT_KEY: &str = "input";

/// The payload key of an input too large to keep: `{sha256, bytes, prefix}`.
pub const INPUT_TRUNCATED_KEY: &str = "input_truncated";

/// Counts the bytes written to it.
struct ByteCount(usize);

impl std::io::Write for ByteCount {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0 += buf.len();
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// `input` as an audit record keeps it: the value itself under
/// [`INPUT_KEY`], or, when its JSON text is over [`MAX_AUDIT_INPUT_BYTES`],
/// its digest, size and prefix under [`INPUT_TRUNCATED_KEY`].
pub fn kept_input(input: serde_json::Value) -> (&'static str, serde_json::Value) {
    use sha2::{Digest, Sha256};
    // Measured without building the text: the common, small input is
    // kept as it is.
    let mut size = ByteCount(0);
    if serde_json::to_writer(&mut size, &input).is_ok() && size.0 <= MAX_AUDIT_INPUT_BYTES {
        return (INPUT_KEY, input);
    }
    let text = input.to_string();
    let mut end = TRUNCATED_PREFIX_BYTES.min(text.len());
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    let sha256: String = Sha256::digest(text.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    (
        INPUT_TRUNCATED_KEY,
        serde_json::json!({
            "sha256": sha256,
            "bytes": text.len(),
            "prefix": text.get(..end).unwrap_or_default(),
        }),
    )
}

/// What a quota denial tells a user to do, in the words of the door the
/// request came through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Advice {
    /// The verb for trying again (`launch`, `create`).
    pub launch: &'static str,
    /// How to free the user's own quota.
    pub end_yours: &'static str,
    /// How to free the team's quota.
    pub end_teams: &'static str,
}

/// The quota advice of `door`.
pub fn advice(door: Door) -> Advice {
    match door {
        Door::Skypilot => Advice {
            launch: "launch",
            end_yours: "Wait for your running clusters to end (`sky down`)",
            end_teams: "Wait for running clusters of the team to end (`sky down`)",
        },
        Door::Vast => Advice {
            launch: "create",
            end_yours: "Wait for your running instances to end, or destroy one you no longer need (`vastai show instances`, `vastai destroy instance ID`)",
            end_teams: "Wait for running instances of the team to end, or destroy one it no longer needs (`vastai show instances`, `vastai destroy instance ID`)",
        },
        Door::Kubernetes => Advice {
            launch: "launch",
            end_yours: "Wait for your running workloads to end (`kubectl delete` the ones you no longer need)",
            end_teams: "Wait for running workloads of the team to end (`kubectl delete` the ones it no longer needs)",
        },
    }
}

/// The audit payload of a decision; `input` is the door's redacted request
/// (see the door's `replay_input`), kept for `warden replay` (capped, see
/// [`kept_input`]).
pub fn payload(
    request_id: &str,
    req: &LaunchRequest,
    d: &Decision,
    input: Option<serde_json::Value>,
) -> serde_json::Value {
    let mut payload = serde_json::json!({
        "request_id": request_id,
        "door": req.door.as_str(),
        "request": req.request_name,
        "target": req.target,
        "team": d.team,
        "user": req.principal.user,
        "at_client_side": req.at_client_side,
        "verdict": d.verdict,
        "reasons": d.reasons,
        "mutations": d.mutations,
        "hourly_usd": d.hourly_usd,
        "input": null,
    });
    if let (false, serde_json::Value::Object(map)) = (d.overrides.is_empty(), &mut payload) {
        // The exceptions that lifted a denial (`warden exceptions`).
        map.insert("overrides".to_owned(), serde_json::json!(d.overrides));
    }
    if let (Some(input), serde_json::Value::Object(map)) = (input, &mut payload) {
        let (key, kept) = kept_input(input);
        map.remove(INPUT_KEY);
        map.insert(key.to_owned(), kept);
    }
    payload
}

/// The candidate a reservation records: the costliest one (the worst case),
/// else the one with the most GPUs.
fn worst(req: &LaunchRequest, policy: &Policy) -> Option<Resource> {
    let cost = |r: &Resource| match &r.quote {
        Some(q) => {
            Some(if r.use_spot { q.spot } else { q.on_demand }.times(u64::from(req.num_nodes)))
        }
        None => r
            .accelerator
            .as_ref()
            .and_then(|a| policy.prices().per_gpu_hour(&a.model, r.use_spot))
            .map(|p| p.times(req.total_gpus(r))),
    };
    req.resources
        .iter()
        .max_by_key(|r| (cost(r), req.total_gpus(r)))
        .cloned()
}

fn is_launch(req: &LaunchRequest) -> bool {
    !req.at_client_side && LAUNCH_REQUESTS.contains(&req.request_name.as_str())
}

fn store_error(e: warden_store::StoreError) -> DoorError {
    DoorError::store(&e)
}

/// One decision to record.
#[derive(Debug)]
pub struct Decided<'a> {
    /// The request's id (logs, audit).
    pub request_id: &'a str,
    /// The normalized request.
    pub request: &'a LaunchRequest,
    /// The core's decision.
    pub decision: &'a Decision,
    /// The door's redacted request, for `warden replay`.
    pub input: Option<serde_json::Value>,
    /// The live allocation the request replaces (see
    /// [`crate::gate::Admission::replaces`]): its share is credited.
    pub replaces: Option<&'a warden_store::Allocation>,
}

/// Records one decision; reserves the allocation of an allowed launch.
/// Concurrent decisions are committed together by the store's writer (group
/// commit); this returns once the decision's transaction committed.
pub async fn record(
    store: &Store,
    policy: &Policy,
    decided: Decided<'_>,
    now: UnixMicros,
    tz: &TimeZone,
) -> Result<Recorded, DoorError> {
    let Decided {
        request_id,
        request: req,
        decision,
        input,
        replaces,
    } = decided;
    let body = payload(request_id, req, decision, input);
    let team = decision.team.as_ref();
    let launch = decision.is_allowed() && is_launch(req);
    let (Some(team), true) = (team, launch) else {
        let write = Write::Audit {
            kind: "decision".to_owned(),
            payload: body,
        };
        store.write(write, now).await.map_err(store_error)?;
        return Ok(Recorded::Recorded);
    };
    let name = req.target.clone().unwrap_or_else(|| {
        let task = req
            .task
            .get("name")
            .and_then(|v| v.as_str())
            .unwrap_or("unnamed");
        format!("{}:{task}:{request_id}", req.request_name)
    });
    let name = AllocationName::parse(&name)
        .map_err(|e| DoorError::bad(format!("cannot record launch `{name}`: {e}")))?;
    let r = worst(req, policy).unwrap_or_default();
    let gpus = u32::try_from(req.total_gpus(&r)).unwrap_or(u32::MAX);
    let allocation = AllocationRequest {
        door: req.door,
        team: TeamName::clone(team),
        user: req.principal.user.clone(),
        name,
        gpu_model: r.accelerator.map(|a| a.model),
        gpus,
        hourly: decision.hourly_usd.unwrap_or_default(),
        context: Some(body),
    };
    let hourly = decision.hourly_usd.unwrap_or_default();
    let limits = policy
        .team(team)
        .map(|t| {
            let mut l = limits(&t.quotas);
            if let Some(old) = replaces {
                credit(&mut l, old, req.principal.user.as_deref());
            }
            l.extend(budget_limits(&t.budgets, hourly, now, tz));
            l
        })
        .unwrap_or_default();
    let write = Write::Reserve {
        request: allocation,
        limits,
    };
    match store.write(write, now).await.map_err(store_error)? {
        Written::Reserved(ReserveOutcome::Granted { .. }) => Ok(Recorded::Granted),
        Written::Audited(_) => Ok(Recorded::Recorded),
        Written::Reserved(ReserveOutcome::Denied(denial)) => Ok(Recorded::OverQuota(
            match &denial.limit {
                Limit::Budget { .. } => format!(
                    "Warden denied this request (team `{team}`):\n  - [team.budgets] {denial}{}",
                    budget_hint(&denial.limit, now, tz)
                ),
                Limit::Launches { .. } => format!(
                    "Warden denied this request (team `{team}`, user `{}`):\n  - [team.quotas] {denial}: {} again after that time, or ask a platform admin to change `teams.{team}.quotas`",
                    req.principal.user.as_deref().unwrap_or("-"),
                    advice(req.door).launch,
                ),
                limit if limit.scope() == Scope::User => format!(
                    "Warden denied this request (team `{team}`, user `{}`):\n  - [team.quotas] {denial}. {}, or ask a platform admin to change `teams.{team}.quotas.per_user`",
                    req.principal.user.as_deref().unwrap_or("-"),
                    advice(req.door).end_yours,
                ),
                _ => format!(
                    "Warden denied this request (team `{team}`):\n  - [team.quotas] {denial}. {}, or ask a platform admin to change `teams.{team}.quotas`",
                    advice(req.door).end_teams,
                ),
            },
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};
    use sha2::{Digest, Sha256};

    #[test]
    fn an_input_over_the_cap_is_kept_as_its_hash_size_and_prefix() {
        let small = json!({"body": {"label": "x".repeat(1000)}});
        assert_eq!(kept_input(small.clone()), (INPUT_KEY, small));

        let big = json!({"body": {"label": "é".repeat(600_000)}});
        let text = big.to_string();
        let (key, kept) = kept_input(big);
        assert_eq!(key, INPUT_TRUNCATED_KEY);
        let hex: String = Sha256::digest(text.as_bytes())
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert_eq!(kept["sha256"], hex);
        assert_eq!(kept["bytes"], text.len());
        let prefix = kept["prefix"].as_str().unwrap();
        assert!(prefix.len() <= TRUNCATED_PREFIX_BYTES && prefix.len() > 4000);
        assert!(text.starts_with(prefix));
        assert!(kept.to_string().len() < TRUNCATED_PREFIX_BYTES + 300);
    }

    #[test]
    fn a_replaced_allocation_is_credited_in_its_own_scopes_only() {
        let h100 = warden_core::GpuModel::parse("H100").unwrap();
        let old = warden_store::Allocation {
            id: warden_store::AllocationId::new(1),
            door: Door::Kubernetes,
            team: TeamName::parse("ml").unwrap(),
            user: Some("alice".to_owned()),
            name: AllocationName::parse("ml/deployment/web").unwrap(),
            gpu_model: Some(h100.clone()),
            gpus: 3,
            hourly: Usd::from_micros(9_000_000),
            started: UnixMicros::from_micros(0),
            ended: None,
            state: warden_store::AllocationState::Live,
        };
        let mut l = vec![
            Limit::Gpus {
                scope: Scope::Team,
                max: 8,
            },
            Limit::ModelGpus {
                model: h100,
                scope: Scope::Team,
                max: 4,
            },
            Limit::ModelGpus {
                model: warden_core::GpuModel::parse("A100").unwrap(),
                scope: Scope::Team,
                max: 4,
            },
            Limit::LiveAllocations {
                scope: Scope::User,
                max: 2,
            },
            Limit::HourlyCost {
                scope: Scope::Team,
                max: Usd::from_micros(10_000_000),
            },
            Limit::Launches {
                scope: Scope::Team,
                max: 5,
                per: std::time::Duration::from_secs(60),
            },
        ];
        credit(&mut l, &old, Some("alice"));
        let maxes: Vec<String> = l.iter().map(ToString::to_string).collect();
        assert_eq!(
            maxes,
            [
                "at most 11 concurrent GPUs per team",
                "at most 7 concurrent `H100` GPUs per team",
                "at most 4 concurrent `A100` GPUs per team",
                "at most 3 live allocations per user",
                "at most $19.00/h of live allocations per team",
                "at most 5 launches per 1m per team",
            ]
        );
        // Another user's: the per-user limit is not raised.
        let mut l = vec![Limit::LiveAllocations {
            scope: Scope::User,
            max: 2,
        }];
        credit(&mut l, &old, Some("bob"));
        assert_eq!(l[0].to_string(), "at most 2 live allocations per user");
    }

    #[test]
    fn the_payload_carries_the_capped_input() {
        let req = LaunchRequest::new(warden_core::Door::Vast, "launch");
        let policy = Policy::from_yaml("teams: {ml: {}}\n").unwrap();
        let d = policy.decide(&req);
        let p = payload("r1", &req, &d, Some(json!({"x": "y".repeat(70_000)})));
        assert!(p.get(INPUT_KEY).is_none(), "{p}");
        assert_eq!(p[INPUT_TRUNCATED_KEY]["bytes"], 70_000 + 8);
        assert!(p.to_string().len() < 6000);
        let p = payload("r1", &req, &d, None);
        assert_eq!(p[INPUT_KEY], Value::Null);
    }
}
