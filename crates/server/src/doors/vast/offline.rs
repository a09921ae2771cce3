//! The Vast door without the network: a create or a start decided from
//! what Warden recorded of it (the offer's or instance's facts and the
//! request body), through the same normalization, gate decision and apply
//! step as the live door. `warden replay`, `warden test` and `warden
//! decide` use it, so a rule on `resource.reliability` judges a recorded
//! or hand-written Vast request exactly as the live door would.
//!
//! What the audit record keeps (`input`):
//!
//! ```json
//! {"offer": 1033, "offer_facts": {"gpu_name": "RTX 3090", ...}, "body": {...}, "key_role": "ml-engineer"}   // a create
//! {"start": 5001, "instance_facts": {"gpu_name": "RTX 3090", ...}, "body": {...}, "key_role": "ml-engineer"} // a start
//! ```
//!
//! The facts are the fields a decision reads, nothing else: an instance row
//! also holds connection details and tokens, which are never recorded.

use serde_json::{Map, Value};
use warden_core::access::Role;
use warden_core::{Decision, Policy, Principal};

use super::create::{apply_mutations, launch_request};
use super::DoorError;
use crate::gate::{self, Applied};

/// The offer and instance fields a Vast decision reads.
pub const DECISION_FIELDS: &[&str] = &[
    "id",
    "gpu_name",
    "num_gpus",
    "dph_total",
    "dph_base",
    "min_bid",
    "geolocation",
    "reliability2",
    "verified",
    "verification",
    "host_id",
    "machine_id",
    "rentable",
    "is_bid",
    "image_uuid",
    "label",
];

/// The fields of an offer or instance row a decision reads.
pub fn decision_facts(row: &Map<String, Value>) -> Value {
    Value::Object(
        DECISION_FIELDS
            .iter()
            .filter_map(|k| row.get(*k).map(|v| ((*k).to_owned(), v.clone())))
            .collect(),
    )
}

/// A Vast request decided offline.
#[derive(Debug)]
pub struct Decided {
    /// The core's decision.
    pub decision: Decision,
    /// The create body as the live door would send it upstream (a create
    /// that is allowed); `None` otherwise.
    pub body: Option<Value>,
}

/// Decides a recorded or hand-written Vast request (`input` as the audit
/// record keeps it) for `team` and `user` under `policy`.
pub fn decide(
    policy: &Policy,
    team: &str,
    user: Option<&str>,
    input: &Value,
) -> Result<Decided, DoorError> {
    // The key's role (records made before keys had roles have none: they
    // are judged without a role check, as they were).
    let role = match input.get("key_role") {
        None | Some(Value::Null) => None,
        Some(Value::String(r)) => {
            Some(Role::parse(r).map_err(|e| DoorError::bad(format!("`key_role`: {e}")))?)
        }
        Some(_) => {
            return Err(DoorError::bad(
                "`key_role` must be a role name, e.g. `ml-engineer`",
            ))
        }
    };
    let principal = Principal {
        user: user.map(str::to_owned),
        team: Some(team.to_owned()),
        workspace: None,
        role,
        groups: Vec::new(),
    };
    let facts = |key: &str| -> Result<Map<String, Value>, DoorError> {
        match input.get(key) {
            Some(Value::Object(row)) => Ok(row.clone()),
            _ => Err(DoorError::bad(format!(
                "the Vast request has no `{key}` object (the offer's or instance's facts); it cannot be judged"
            ))),
        }
    };
    let body = match input.get("body") {
        None | Some(Value::Null) => Map::new(),
        Some(Value::Object(b)) => b.clone(),
        Some(_) => return Err(DoorError::bad("`body` must be a mapping")),
    };
    if let Some(offer) = input.get("offer") {
        let row = facts("offer_facts")?;
        let offer = offer.as_u64().unwrap_or_default();
        let target = format!("pending:{offer}");
        let req = launch_request(principal, &row, &body, &target)?;
        let (decision, applied) = gate::decide(policy, &req, |d| {
            let mut mutated = body.clone();
            let not_applicable = apply_mutations(d, &row, &mut mutated);
            Ok(Applied {
                value: mutated,
                not_applicable,
            })
        })?;
        Ok(Decided {
            decision,
            body: applied.map(|a| Value::Object(a.value)),
        })
    } else if let Some(id) = input.get("start").and_then(Value::as_u64) {
        let row = facts("instance_facts")?;
        let req = super::manage::restart_request(principal, &row, id, &Value::Object(body))?;
        let (decision, _) = gate::decide(policy, &req, |_| Ok(Applied::all(())))?;
        Ok(Decided {
            decision,
            body: None,
        })
    } else {
        Err(DoorError::bad(
            "a Vast request names an `offer` (a create) or a `start` (an instance id)",
        ))
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn offer(reliability: f64) -> Value {
        json!({"id": 7, "gpu_name": "RTX 4090", "num_gpus": 1, "dph_total": 0.5, "dph_base": 0.45, "min_bid": 0.2,
               "reliability2": reliability, "verified": true, "host_id": 12,
               "ssh_host": "never recorded"})
    }

    #[test]
    fn facts_keep_only_what_a_decision_reads() {
        let facts = decision_facts(offer(0.99).as_object().unwrap());
        assert!(facts.get("ssh_host").is_none());
        assert_eq!(facts["reliability2"], 0.99);
    }

    #[test]
    fn a_recorded_create_and_start_are_judged_on_their_host() {
        let policy = Policy::from_yaml(
            "teams: {ml: {}}\nrules:\n  - {name: reliable, match: {doors: [vast], resource: 'resource.reliability < 0.99'}, deny: unreliable host}\n  - {name: spot, match: {doors: [vast]}, use_spot: true}\n",
        )
        .unwrap();
        let create = |r: f64| json!({"offer": 7, "offer_facts": decision_facts(offer(r).as_object().unwrap()), "body": {"image": "x", "disk": 10}});
        let d = decide(&policy, "ml", Some("alice"), &create(0.995)).unwrap();
        assert!(d.decision.is_allowed());
        // The spot rule reached the body as the live door would send it.
        assert!(d.body.unwrap().get("price").is_some());
        let d = decide(&policy, "ml", None, &create(0.9)).unwrap();
        assert_eq!(
            d.decision
                .denied_by()
                .iter()
                .map(|r| r.as_str())
                .collect::<Vec<_>>(),
            ["reliable"]
        );
        assert!(d.body.is_none());

        let start = json!({"start": 5001, "instance_facts": {"gpu_name": "RTX 4090", "num_gpus": 1, "dph_total": 0.5, "reliability2": 0.9, "verification": "verified"}});
        let d = decide(&policy, "ml", None, &start).unwrap();
        assert_eq!(
            d.decision
                .denied_by()
                .iter()
                .map(|r| r.as_str())
                .collect::<Vec<_>>(),
            ["reliable"]
        );
        // Without the facts there is nothing to judge.
        let e = decide(&policy, "ml", None, &json!({"offer": 7, "body": {}})).unwrap_err();
        assert!(e.to_string().contains("offer_facts"), "{e}");
    }
}
