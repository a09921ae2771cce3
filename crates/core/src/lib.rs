//! Warden's policy core: pure evaluation of launch requests against a
//! declarative policy. No I/O, no clock, no async: doors build a
//! [`LaunchRequest`], call [`Policy::decide`], and apply the [`Decision`]
//! in their own wire format.
//!
//! ```
//! use warden_core::{Door, LaunchRequest, Policy};
//! let policy = Policy::from_yaml("default_team: ml\nteams:\n  ml: {max_nodes: 2}\n").unwrap();
//! let mut req = LaunchRequest::new(Door::Skypilot, "launch");
//! req.num_nodes = 4;
//! let d = policy.decide(&req);
//! assert!(!d.is_allowed());
//! assert_eq!(d.denied_by()[0].as_str(), "team.max_nodes");
//! ```

pub mod access;
pub mod decision;
pub mod error;
pub mod eval;
pub mod exception;
pub mod expr;
pub mod ids;
pub mod kubernetes;
pub mod money;
pub mod policy;
pub mod price;
pub mod request;
pub mod vast;
pub mod yaml_depth;

pub use decision::{
    AppliedMutation, Decision, Doc, Effect, Mutation, Reason, ResourceField, Verdict,
};
pub use error::{IdError, MoneyError, PolicyError, PolicyProblem, YamlDepthError};
pub use eval::{get_path, set_path};
pub use ids::{GpuModel, RuleName, TeamName};
pub use kubernetes::{KubernetesTeam, KubernetesTeamSpec};
pub use money::Usd;
pub use policy::{
    normalize_cloud, BudgetMode, Budgets, Mode, Policy, PolicySpec, Quotas, ResolvedBy,
    SkypilotUserClaim, Team, TeamFromLabel,
};
pub use price::{GpuPrice, PriceTable};
pub use request::{
    Accelerator, Autostop, Door, HostFacts, LaunchRequest, Principal, Quote, Resource,
    WORKLOAD_LABEL,
};
pub use vast::{BudgetAction, LaunchLimits, VastTeam, VastTeamSpec};
pub use yaml_depth::{check_depth, MAX_CONFIG_DEPTH};
