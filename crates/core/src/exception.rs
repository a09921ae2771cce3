//! Time-limited exceptions: a named, dated permission to go past one rule
//! (or implicit team limit) for a team, or for one user of it, until an
//! instant. The store keeps them and hands the core those active when a
//! request is decided ([`crate::LaunchRequest::exceptions`]); the core then
//! lifts a denial by that rule, says so in the reason, and lists the
//! exception in [`crate::Decision::overrides`], so the audit record,
//! `warden replay` and the decision line all show it. Expiry is the store's
//! business: an expired exception is simply no longer handed over.

use serde::Serialize;

use crate::ids::TeamName;

/// Rules no exception may lift: who may act (`access`) and which team a
/// request belongs to (`team.resolve`) are not limits.
pub const NOT_LIFTABLE: &[&str] = &["access", "team.resolve"];

/// An active exception, as the core needs it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Exception {
    /// Its id in the store.
    pub id: i64,
    /// The team it is for.
    pub team: TeamName,
    /// The one user it is for; `None`: every user of the team.
    pub user: Option<String>,
    /// The rule it lifts (`gpu-cap`, `team.max_gpus_per_launch`).
    pub rule: String,
    /// When it ends (RFC 3339, UTC), for the reason's text.
    pub until: String,
    /// Why it was granted.
    pub reason: String,
}

/// An exception that lifted a denial in a decision.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Override {
    /// The exception's id.
    pub exception: i64,
    /// The rule whose denial it lifted.
    pub rule: String,
}

impl Exception {
    /// Whether this exception lifts `rule` for `user` in `team`.
    pub fn lifts(&self, rule: &str, team: &TeamName, user: Option<&str>) -> bool {
        self.rule == rule
            && &self.team == team
            && !NOT_LIFTABLE.contains(&rule)
            && self.user.as_deref().is_none_or(|u| Some(u) == user)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Door, Effect, LaunchRequest, Policy, Verdict};

    const POLICY: &str = "teams:\n  ml: {users: [alice, bob], max_nodes: 2}\nrules:\n  - {name: gpu-cap, match: {when: 'request.gpus > 8'}, deny: \"at most 8 GPUs\"}\n";

    fn request(user: &str, gpus: u32, nodes: u32) -> LaunchRequest {
        let mut r = LaunchRequest::new(Door::Skypilot, "launch");
        r.principal.user = Some(user.to_owned());
        r.num_nodes = nodes;
        r.resources[0].accelerator = Some(crate::Accelerator {
            model: crate::GpuModel::parse("H100").unwrap(),
            count: gpus,
        });
        r
    }

    fn exception(id: i64, rule: &str, user: Option<&str>) -> Exception {
        Exception {
            id,
            team: TeamName::parse("ml").unwrap(),
            user: user.map(str::to_owned),
            rule: rule.to_owned(),
            until: "2026-12-06T00:00:00.000000Z".to_owned(),
            reason: "deadline".to_owned(),
        }
    }

    /// An exception lifts exactly the denials of its rule, for its team
    /// (and user), names itself in the reason and in `overrides`, and lifts
    /// nothing else: another rule still denies, another user is still
    /// denied, and `access`/`team.resolve` are never lifted.
    #[test]
    fn exceptions_lift_their_rule_only_and_say_so() {
        let p = Policy::from_yaml(POLICY).unwrap();
        let mut r = request("alice", 16, 1);
        assert_eq!(p.decide(&r).verdict, Verdict::Deny);
        r.exceptions = vec![exception(7, "gpu-cap", Some("alice"))];
        let d = p.decide(&r);
        assert_eq!(d.verdict, Verdict::Allow, "{:?}", d.reasons);
        assert_eq!(
            d.overrides,
            vec![Override {
                exception: 7,
                rule: "gpu-cap".into()
            }]
        );
        let reason = d
            .reasons
            .iter()
            .find(|x| x.rule.as_str() == "gpu-cap")
            .unwrap();
        assert_eq!(reason.effect, Effect::Warn);
        assert!(
            reason.message.starts_with(
                "lifted by exception #7 until 2026-12-06T00:00:00.000000Z (deadline): "
            ),
            "{}",
            reason.message
        );
        // Another user of the team: not lifted.
        let mut bob = request("bob", 16, 1);
        bob.exceptions = r.exceptions.clone();
        assert_eq!(p.decide(&bob).verdict, Verdict::Deny);
        // Another rule still denies (and the lifted one stays lifted).
        let mut wide = request("alice", 16, 4);
        wide.exceptions = r.exceptions.clone();
        let d = p.decide(&wide);
        assert_eq!(d.verdict, Verdict::Deny);
        assert_eq!(
            d.denied_by().iter().map(|r| r.as_str()).collect::<Vec<_>>(),
            ["team.max_nodes"]
        );
        // A team-wide exception of a team limit.
        wide.exceptions.push(exception(8, "team.max_nodes", None));
        assert_eq!(p.decide(&wide).verdict, Verdict::Allow);
        // Never `team.resolve` (nor `access`).
        let mut stranger = request("zed", 1, 1);
        stranger.exceptions = vec![exception(9, "team.resolve", None)];
        assert_eq!(p.decide(&stranger).verdict, Verdict::Deny);
        assert!(!exception(9, "access", None).lifts(
            "access",
            &TeamName::parse("ml").unwrap(),
            None
        ));
    }
}
