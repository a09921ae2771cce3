//! What the core answers: a verdict with every reason, and the mutations.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::ids::{RuleName, TeamName};
use crate::money::Usd;
use crate::request::Autostop;

/// Allow or deny.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    /// The request may go ahead (possibly mutated, possibly with warnings).
    Allow,
    /// At least one enforced rule denied it.
    Deny,
}

/// What a rule did to the request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Effect {
    /// Denied (enforce mode).
    Deny,
    /// Would have denied or mutated, but the rule is in `warn` mode; or a
    /// warning the rule always gives.
    Warn,
    /// Changed the request.
    Mutate,
}

/// One reason, from one rule.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Reason {
    /// The rule (`team.max_nodes` for implicit team limits).
    pub rule: RuleName,
    /// What it did.
    pub effect: Effect,
    /// A sentence for the user: what was wrong or changed, and what to do.
    pub message: String,
}

/// Which native document a raw path mutation targets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Doc {
    /// The task (SkyPilot task YAML).
    Task,
    /// The client config (SkyPilot `skypilot_config`).
    Config,
}

/// A resource field a rule may set (`set_resource`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ResourceField {
    /// Cloud.
    Cloud,
    /// Region.
    Region,
    /// Zone (Slurm partition).
    Zone,
    /// Image.
    ImageId,
    /// Disk size (GB).
    DiskSize,
}

impl ResourceField {
    /// The field's name in config and in CEL.
    pub fn as_str(self) -> &'static str {
        match self {
            ResourceField::Cloud => "cloud",
            ResourceField::Region => "region",
            ResourceField::Zone => "zone",
            ResourceField::ImageId => "image_id",
            ResourceField::DiskSize => "disk_size",
        }
    }
}

/// A change to the request, expressed on the normalized request; each door
/// maps it onto its own format. Resource indices refer to
/// [`crate::LaunchRequest::resources`] as the door built it.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum Mutation {
    /// Use spot capacity for these candidates.
    UseSpot {
        /// Candidate indices.
        resources: Vec<usize>,
    },
    /// Set a field on these candidates.
    SetResource {
        /// Candidate indices.
        resources: Vec<usize>,
        /// The field.
        field: ResourceField,
        /// The new value.
        value: serde_json::Value,
    },
    /// Remove these candidates (others remain).
    PruneResources {
        /// Candidate indices.
        resources: Vec<usize>,
    },
    /// Set autostop.
    SetAutostop(Autostop),
    /// Add or overwrite labels.
    AddLabels {
        /// The labels.
        labels: BTreeMap<String, String>,
    },
    /// Add or overwrite volumes (mount path to volume).
    AddVolumes {
        /// The volumes.
        volumes: BTreeMap<String, serde_json::Value>,
    },
    /// Set a value at a path in a native document.
    SetPath {
        /// Which document.
        doc: Doc,
        /// Keys from the document root.
        path: Vec<String>,
        /// The value.
        value: serde_json::Value,
    },
}

/// A mutation and the rule that made it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AppliedMutation {
    /// The rule.
    pub rule: RuleName,
    /// The change.
    pub mutation: Mutation,
}

/// The core's answer for one request. Deterministic: the same request and
/// policy always give the same decision.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Decision {
    /// Allow or deny.
    pub verdict: Verdict,
    /// The team the request was resolved to, if any.
    pub team: Option<TeamName>,
    /// Every reason, in rule order.
    pub reasons: Vec<Reason>,
    /// The mutations to apply, in rule order (empty when denied).
    pub mutations: Vec<AppliedMutation>,
    /// The worst-case estimated price per hour of the request after
    /// mutations, when every GPU model involved has a price.
    pub hourly_usd: Option<Usd>,
    /// Time-limited exceptions that lifted a denial (their reasons say so).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub overrides: Vec<crate::exception::Override>,
}

impl Decision {
    /// Whether the request may go ahead.
    pub fn is_allowed(&self) -> bool {
        self.verdict == Verdict::Allow
    }

    fn rules_with(&self, effect: Effect) -> Vec<&RuleName> {
        let mut out: Vec<&RuleName> = Vec::new();
        for r in self.reasons.iter().filter(|r| r.effect == effect) {
            if !out.contains(&&r.rule) {
                out.push(&r.rule);
            }
        }
        out
    }

    /// Rules that denied, in order.
    pub fn denied_by(&self) -> Vec<&RuleName> {
        self.rules_with(Effect::Deny)
    }

    /// Rules that warned, in order.
    pub fn warned_by(&self) -> Vec<&RuleName> {
        self.rules_with(Effect::Warn)
    }

    /// Rules that mutated, in order.
    pub fn mutated_by(&self) -> Vec<&RuleName> {
        self.rules_with(Effect::Mutate)
    }

    /// A message for a denied user: every denying rule with what to change,
    /// one `  - [rule] reason` item each; a reason's further lines (the
    /// admin's note) are indented under its item.
    pub fn denial_message(&self) -> String {
        let mut msg = String::from("Warden denied this request");
        if let Some(team) = &self.team {
            msg.push_str(&format!(" (team `{team}`)"));
        }
        msg.push(':');
        for r in self.reasons.iter().filter(|r| r.effect == Effect::Deny) {
            msg.push_str(&format!("\n  - [{}] ", r.rule));
            msg.push_str(&r.message.replace('\n', "\n    "));
        }
        msg
    }
}
