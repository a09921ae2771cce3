//! The one decision path every door takes, written once:
//!
//! decide (the core; again with the team's active time-limited exceptions
//! when one could lift a denial) → apply (the door's step, only when
//! allowed) → record
//! (audit record and reservation, one transaction) → quota denial → budget
//! alert check after a grant → one decision line.
//!
//! A door handler has one shape: parse its wire format → normalize to the
//! core's [`LaunchRequest`] → [`admit`] with its apply step → encode the
//! [`Admitted`] outcome in its wire format. A door module holds only its
//! wire format, its normalization and its apply step; nothing else decides.
//!
//! [`decide`] is the same first half without the store, for the pure
//! commands (`warden decide`, `warden test`, `warden replay`).

use std::sync::Arc;
use std::time::{Instant, SystemTime};

use serde_json::Value;
use warden_core::{Decision, LaunchRequest, Policy};
use warden_store::UnixMicros;

use crate::app::AppState;
use crate::error::DoorError;
use crate::recorder::{self, Recorded};

/// What a door asks the gate to admit.
#[derive(Debug)]
pub struct Admission<'a> {
    /// The door, as the decision line names it (`skypilot`, `vast`).
    pub door: &'static str,
    /// The request id (log line, audit record).
    pub request_id: &'a str,
    /// The normalized request.
    pub request: &'a LaunchRequest,
    /// The Warden key that made the request, when a key did.
    pub key: Option<&'a str>,
    /// What the audit record keeps of the wire request for replay
    /// (redacted by the door).
    pub input: Option<Value>,
    /// When the door began handling the request (for `latency_us`).
    pub started: Instant,
    /// The live allocation this request replaces once granted (a resized
    /// Kubernetes workload): its share of the quotas is credited while the
    /// new size is judged, so a resize is judged as if the old size were
    /// already gone. The door ends it after the grant.
    pub replaces: Option<&'a warden_store::Allocation>,
}

/// The outcome of a door's apply step.
#[derive(Debug)]
pub struct Applied<A> {
    /// The door's rewritten request (its wire format).
    pub value: A,
    /// Mutations that have no meaning at this door (logged).
    pub not_applicable: Vec<String>,
}

impl<A> Applied<A> {
    /// An apply step that skipped nothing.
    pub fn all(value: A) -> Self {
        Applied {
            value,
            not_applicable: Vec::new(),
        }
    }
}

/// What the gate decided.
#[derive(Debug)]
pub enum Admitted<A> {
    /// Let through: recorded, and reserved when the door reserves.
    Allowed {
        /// The core's decision.
        decision: Decision,
        /// The door's rewritten request.
        applied: A,
        /// When it was recorded (the reservation's start).
        at: UnixMicros,
    },
    /// Refused by the policy or by a quota or budget; recorded.
    Denied {
        /// The core's decision (allowed, when a quota refused it).
        decision: Decision,
        /// What to tell the user: every reason and how to fix it.
        message: String,
        /// Whether a quota or budget refused what the policy allowed.
        quota: bool,
    },
}

/// Decides `request` and, when allowed, applies the decision with the
/// door's `apply`: the store-free half of [`admit`].
pub fn decide<A>(
    policy: &Policy,
    request: &LaunchRequest,
    apply: impl FnOnce(&Decision) -> Result<Applied<A>, DoorError>,
) -> Result<(Decision, Option<Applied<A>>), DoorError> {
    let decision = policy.decide(request);
    let applied = if decision.is_allowed() {
        Some(apply(&decision)?)
    } else {
        None
    };
    Ok((decision, applied))
}

/// Decides, applies, records, enforces quotas and budgets, checks budget
/// alerts and writes the decision line: the whole decision path, once.
///
/// Without a store (`storage: none`) nothing is recorded and no quota
/// holds: the policy's decision stands. A store failure is an error (the
/// door answers 503, fail closed); the caller logs it.
pub async fn admit<A>(
    state: &AppState,
    policy: &Arc<Policy>,
    mut admission: Admission<'_>,
    apply: impl FnOnce(&Decision) -> Result<Applied<A>, DoorError>,
) -> Result<Admitted<A>, DoorError> {
    let first = policy.decide(admission.request);
    let decision = match with_exceptions(state, admission.request, &first).await? {
        Some(request) => policy.decide(&request),
        None => first,
    };
    let applied = if decision.is_allowed() {
        Some(apply(&decision)?)
    } else {
        None
    };
    let at = UnixMicros::from_system_time(SystemTime::now());
    let recorded = match state.store() {
        None => Recorded::Recorded,
        Some(store) => {
            let settings = state.settings();
            let decided = recorder::Decided {
                request_id: admission.request_id,
                request: admission.request,
                decision: &decision,
                input: admission.input.take(),
                replaces: admission.replaces,
            };
            let recorded =
                recorder::record(store, policy, decided, at, &settings.time_zone).await?;
            if let Recorded::Granted = recorded {
                if let Some(team) = decision.team.as_ref().and_then(|t| policy.team(t)) {
                    state.alert_after_grant(store, team, at);
                }
            }
            recorded
        }
    };
    let outcome = match (recorded, applied) {
        (Recorded::OverQuota(message), _) => Admitted::Denied {
            decision,
            message,
            quota: true,
        },
        (_, Some(applied)) => {
            log_decision(&admission, &decision, true, &applied.not_applicable);
            return Ok(Admitted::Allowed {
                decision,
                applied: applied.value,
                at,
            });
        }
        (_, None) => Admitted::Denied {
            message: decision.denial_message(),
            decision,
            quota: false,
        },
    };
    if let Admitted::Denied { decision, .. } = &outcome {
        log_decision(&admission, decision, false, &[]);
    }
    Ok(outcome)
}

/// The request with the time-limited exceptions active now for its team,
/// when `first` was denied by a rule one of them lifts; `None` otherwise
/// (an allowed request costs no store read).
async fn with_exceptions(
    state: &AppState,
    request: &LaunchRequest,
    first: &Decision,
) -> Result<Option<LaunchRequest>, DoorError> {
    let (Some(store), Some(team), false) = (state.store(), &first.team, first.is_allowed()) else {
        return Ok(None);
    };
    let denied = first.denied_by();
    if denied
        .iter()
        .all(|r| warden_core::exception::NOT_LIFTABLE.contains(&r.as_str()))
    {
        return Ok(None);
    }
    let now = UnixMicros::from_system_time(SystemTime::now());
    let active = store
        .active_exceptions(team, now)
        .await
        .map_err(|e| DoorError::store(&e))?;
    let user = request.principal.user.as_deref();
    let exceptions: Vec<_> = active
        .iter()
        .map(warden_store::StoredException::to_core)
        .filter(|x| denied.iter().any(|r| x.lifts(r.as_str(), team, user)))
        .collect();
    if exceptions.is_empty() {
        return Ok(None);
    }
    let mut lifted = request.clone();
    lifted.exceptions = exceptions;
    Ok(Some(lifted))
}

/// The decision line (`warden::decision`, see [`crate::logging::decision`]):
/// the same fields at every door.
fn log_decision(a: &Admission<'_>, decision: &Decision, allowed: bool, not_applicable: &[String]) {
    crate::logging::decision(|line| {
        line.str("request_id", a.request_id);
        line.str("door", a.door);
        line.opt_str("team", decision.team.as_ref().map(|t| t.as_str()));
        line.opt_str("user", a.request.principal.user.as_deref());
        line.opt_str("key", a.key);
        line.str("request", a.request.request_name.as_str());
        line.opt_str("target_name", a.request.target.as_deref());
        line.str("verdict", if allowed { "allow" } else { "deny" });
        line.bool("quota_denied", decision.is_allowed() && !allowed);
        line.joined("denied", decision.denied_by().iter().map(|r| r.as_str()));
        line.joined("warned", decision.warned_by().iter().map(|r| r.as_str()));
        let exceptions: Vec<String> = decision
            .overrides
            .iter()
            .map(|o| o.exception.to_string())
            .collect();
        line.joined("exceptions", exceptions.iter().map(String::as_str));
        // A request that was not let through had nothing applied.
        let mutated = if allowed {
            decision.mutated_by()
        } else {
            Vec::new()
        };
        line.joined("mutated", mutated.iter().map(|r| r.as_str()));
        line.joined("not_applicable", not_applicable.iter().map(String::as_str));
        line.opt_str(
            "hourly_usd",
            decision.hourly_usd.map(|u| u.to_string()).as_deref(),
        );
        line.u64(
            "latency_us",
            u64::try_from(a.started.elapsed().as_micros()).unwrap_or(u64::MAX),
        );
    });
}
