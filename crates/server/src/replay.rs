//! What-if: re-decide the requests recorded in the audit chain under another
//! policy, and say what would change (`warden replay`).
//!
//! Every decision record written by a door with a store carries the door's
//! request (redacted, see [`crate::redact`]) under `input`. Replay rebuilds
//! the request from it, runs it through the same door code and the new
//! policy, and compares the policy's verdict and mutations with the
//! recorded ones. Quotas and budgets are not replayed: they depend on what
//! was running at the time, not on the policy text. Records that cannot be
//! replayed are counted as skipped, by reason (`skipped_reasons`): without
//! an `input` (written before Warden kept it), with an input too large to
//! keep (`input_truncated`, see [`crate::recorder::kept_input`]), or of a
//! door that cannot be replayed yet.

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::Value;
use warden_core::Policy;
use warden_store::{AuditRecord, UnixMicros};

use crate::doors::skypilot;
use crate::recorder::{INPUT_KEY, INPUT_TRUNCATED_KEY};

/// How one replayed request's outcome changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ChangeKind {
    /// Allowed then, denied now.
    NewlyDenied,
    /// Denied then, allowed now.
    NewlyAllowed,
    /// Allowed both times, with different mutations.
    MutationsChanged,
}

/// One request whose outcome would change.
#[derive(Debug, Clone, Serialize)]
pub struct Change {
    /// The audit record's sequence number.
    pub seq: i64,
    /// When it was decided.
    pub at: UnixMicros,
    /// What changed.
    pub kind: ChangeKind,
    /// The team under the new policy (else the recorded one).
    pub team: String,
    /// The user, if known.
    pub user: Option<String>,
    /// The request name (`launch`, ...).
    pub request: String,
    /// The cluster or instance, if known.
    pub target: Option<String>,
    /// Rules that denied or mutated it then.
    pub before_rules: Vec<String>,
    /// Rules that deny or mutate it now.
    pub after_rules: Vec<String>,
    /// The new denial message (newly denied only).
    pub message: Option<String>,
}

/// Counts for one team.
#[derive(Debug, Clone, Default, Serialize)]
pub struct TeamCounts {
    /// Requests re-decided.
    pub replayed: u64,
    /// Same verdict and mutations.
    pub unchanged: u64,
    /// Allowed then, denied now.
    pub newly_denied: u64,
    /// Denied then, allowed now.
    pub newly_allowed: u64,
    /// Different mutations.
    pub mutations_changed: u64,
}

/// The whole answer.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ReplayReport {
    /// Decision records read.
    pub records: u64,
    /// Records without a recorded request (older Warden), not replayed.
    pub skipped_without_input: u64,
    /// Records whose request was too large to keep whole (only its hash,
    /// size and prefix were recorded), not replayed.
    pub skipped_truncated: u64,
    /// Every record not replayed, by reason: `without_input`,
    /// `input_truncated`, `door:<door>`.
    pub skipped_reasons: BTreeMap<String, u64>,
    /// Records whose door cannot be replayed yet, by door.
    pub skipped_doors: BTreeMap<String, u64>,
    /// Recorded requests the door now refuses as malformed.
    pub failed: u64,
    /// Per team (the new policy's team; `(none)` when unresolved).
    pub teams: BTreeMap<String, TeamCounts>,
    /// Every change, in chain order.
    pub changes: Vec<Change>,
}

impl ReplayReport {
    fn skip(&mut self, reason: &str) {
        *self.skipped_reasons.entry(reason.to_owned()).or_default() += 1;
    }

    /// Records not replayed, whatever the reason.
    pub fn skipped(&self) -> u64 {
        self.skipped_reasons.values().sum()
    }
}

/// The decision payload of a record, if it is one: `decision` records hold
/// it directly; `allocation.granted`/`allocation.denied` under `context`
/// when a door's decision reserved it (a decision always has a `verdict`).
/// What the usage syncs adopted (a context with the sync's `source` and what
/// it saw running) was never decided, and is not replayed.
fn decision_payload(record: &AuditRecord) -> Option<Value> {
    let payload: Value = serde_json::from_str(&record.payload).ok()?;
    match record.kind.as_str() {
        "decision" => Some(payload),
        "allocation.granted" | "allocation.denied" => payload
            .get("context")
            .filter(|c| c.get("verdict").is_some())
            .cloned(),
        _ => None,
    }
}

fn rules_of(reasons: &Value, effects: &[&str]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for r in reasons.as_array().into_iter().flatten() {
        let effect = r.get("effect").and_then(Value::as_str).unwrap_or("");
        if effects.contains(&effect) {
            if let Some(rule) = r.get("rule").and_then(Value::as_str) {
                if !out.iter().any(|o| o == rule) {
                    out.push(rule.to_owned());
                }
            }
        }
    }
    out
}

fn text(v: Option<&Value>) -> Option<String> {
    v.and_then(Value::as_str).map(str::to_owned)
}

/// The doors whose recorded requests can be decided again. The Kubernetes
/// door's records keep no input (the reviewed object is not recorded), so
/// they are counted as `door:kubernetes`.
#[derive(Clone, Copy)]
enum ReplayedDoor {
    Skypilot,
    Vast,
}

impl ReplayedDoor {
    fn of(door: &str) -> Option<ReplayedDoor> {
        match door {
            "skypilot" => Some(ReplayedDoor::Skypilot),
            "vast" => Some(ReplayedDoor::Vast),
            _ => None,
        }
    }
}

/// Re-decides every decision in `records` (chain order) under `policy`.
pub fn replay(policy: &Policy, records: &[AuditRecord]) -> ReplayReport {
    let mut report = ReplayReport::default();
    for record in records {
        let Some(old) = decision_payload(record) else {
            continue;
        };
        report.records += 1;
        let door = old.get("door").and_then(Value::as_str).unwrap_or("");
        // Checked first: a door Warden cannot replay keeps no input either,
        // and "recorded before Warden kept the request" would be untrue.
        let Some(replayed) = ReplayedDoor::of(door) else {
            report.skip(&format!("door:{door}"));
            *report.skipped_doors.entry(door.to_owned()).or_default() += 1;
            continue;
        };
        if old.get(INPUT_TRUNCATED_KEY).is_some() {
            report.skip("input_truncated");
            report.skipped_truncated += 1;
            continue;
        }
        let Some(input) = old.get(INPUT_KEY).filter(|i| i.is_object()) else {
            report.skip("without_input");
            report.skipped_without_input += 1;
            continue;
        };
        let decided = match replayed {
            ReplayedDoor::Skypilot => skypilot::replay_body(input)
                .ok()
                .and_then(|body| skypilot::handle(policy, &body).ok())
                .map(|h| h.decision),
            ReplayedDoor::Vast => {
                // Records written before Warden kept the offer's facts
                // cannot be judged again.
                if input.get("offer_facts").is_none() && input.get("instance_facts").is_none() {
                    report.skip("without_input");
                    report.skipped_without_input += 1;
                    continue;
                }
                let team = old.get("team").and_then(Value::as_str).unwrap_or_default();
                let user = old.get("user").and_then(Value::as_str);
                crate::doors::vast::offline::decide(policy, team, user, input)
                    .ok()
                    .map(|d| d.decision)
            }
        };
        let Some(new_decision) = decided else {
            report.failed += 1;
            continue;
        };
        let new_reasons = serde_json::to_value(&new_decision.reasons).unwrap_or(Value::Null);
        let new_mutations = serde_json::to_value(&new_decision.mutations).unwrap_or(Value::Null);
        let old_reasons = old.get("reasons").cloned().unwrap_or(Value::Null);
        let old_allowed = old.get("verdict").and_then(Value::as_str) == Some("allow");
        let new_allowed = new_decision.is_allowed();
        let old_mutations = old
            .get("mutations")
            .cloned()
            .unwrap_or(Value::Array(Vec::new()));
        let kind = match (old_allowed, new_allowed) {
            (true, false) => Some(ChangeKind::NewlyDenied),
            (false, true) => Some(ChangeKind::NewlyAllowed),
            (true, true) if old_mutations != new_mutations => Some(ChangeKind::MutationsChanged),
            _ => None,
        };
        let team = new_decision
            .team
            .as_ref()
            .map(ToString::to_string)
            .or_else(|| text(old.get("team")))
            .unwrap_or_else(|| "(none)".to_owned());
        let counts = report.teams.entry(team.clone()).or_default();
        counts.replayed += 1;
        let Some(kind) = kind else {
            counts.unchanged += 1;
            continue;
        };
        match kind {
            ChangeKind::NewlyDenied => counts.newly_denied += 1,
            ChangeKind::NewlyAllowed => counts.newly_allowed += 1,
            ChangeKind::MutationsChanged => counts.mutations_changed += 1,
        }
        report.changes.push(Change {
            seq: record.seq,
            at: record.at,
            kind,
            team,
            user: text(old.get("user")),
            request: text(old.get("request")).unwrap_or_default(),
            target: text(old.get("target")),
            before_rules: rules_of(&old_reasons, &["deny", "mutate"]),
            after_rules: rules_of(&new_reasons, &["deny", "mutate"]),
            message: (kind == ChangeKind::NewlyDenied).then(|| new_decision.denial_message()),
        });
    }
    report
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn record(seq: i64, payload: Value) -> AuditRecord {
        AuditRecord {
            seq,
            at: UnixMicros::from_micros(seq),
            kind: "decision".to_owned(),
            payload: payload.to_string(),
            prev_hash: String::new(),
            hash: String::new(),
        }
    }

    #[test]
    fn records_with_a_truncated_input_are_skipped_and_counted_by_reason() {
        let policy = Policy::from_yaml("teams: {ml: {}}\n").unwrap();
        let truncated = crate::recorder::kept_input(json!({"body": "x".repeat(70_000)}));
        assert_eq!(truncated.0, INPUT_TRUNCATED_KEY);
        let records = [
            record(
                1,
                json!({"door": "skypilot", "verdict": "allow", "input_truncated": truncated.1}),
            ),
            record(
                2,
                json!({"door": "skypilot", "verdict": "allow", "input": null}),
            ),
            record(
                3,
                json!({"door": "vast", "verdict": "deny", "input": {"offer": 1, "body": {}}}),
            ),
            record(
                4,
                json!({"door": "vast", "verdict": "deny", "input_truncated": {"sha256": "00", "bytes": 70_000, "prefix": "{"}}),
            ),
            // What the Kubernetes door records: no input, as it keeps none.
            record(
                5,
                json!({"door": "kubernetes", "verdict": "allow", "input": null, "team": "ml"}),
            ),
            record(
                6,
                json!({"door": "kubernetes", "verdict": "deny", "team": "ml"}),
            ),
            // What a sync adopted: not a decision, not counted.
            AuditRecord {
                kind: "allocation.granted".to_owned(),
                ..record(
                    7,
                    json!({"allocation_id": 9, "context": {"source": "kubernetes-sync", "pods": 1}}),
                )
            },
        ];
        let report = replay(&policy, &records);
        assert_eq!(report.records, 6);
        assert_eq!(report.skipped_truncated, 2);
        // A Vast record from before Warden kept the offer's facts.
        assert_eq!(report.skipped_without_input, 2);
        assert_eq!(
            report.skipped_doors,
            BTreeMap::from([("kubernetes".to_owned(), 2)])
        );
        assert_eq!(
            report.skipped_reasons,
            BTreeMap::from([
                ("door:kubernetes".to_owned(), 2),
                ("input_truncated".to_owned(), 2),
                ("without_input".to_owned(), 2),
            ])
        );
        assert_eq!(report.skipped(), 6);
        assert!(report.teams.is_empty() && report.failed == 0);
    }
}
