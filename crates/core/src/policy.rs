//! Policies: the YAML an admin writes (`*Spec`), validated into a compiled
//! [`Policy`] at load time. Errors name the key path and what to fix;
//! unknown keys are errors, since a typo must not silently weaken a policy.
//!
//! `policy/spec.rs` holds the file as written, `compiled.rs` the compiled
//! [`Policy`] and its accessors, and `compile.rs` the compiler between
//! them ([`Policy::from_yaml`], [`Policy::compile`]).

mod compile;
mod compiled;
mod spec;

pub use compile::normalize_cloud;
pub(crate) use compiled::Action;
pub use compiled::{Budgets, Policy, Quotas, ResolvedBy, Rule, Team};
pub use spec::{
    AllowedGpusSpec, AutostopSpec, BudgetMode, BudgetSpec, MatchSpec, MinVersionSpec, Mode,
    PolicySpec, PriceSpec, QuotaSpec, RuleSpec, SkypilotUserClaim, TeamFromLabel, TeamSpec,
    UnknownVersion, UserQuotaSpec, DEFAULT_ALERT_PERCENT, DEFAULT_LAUNCH_WINDOW_MINUTES,
};
