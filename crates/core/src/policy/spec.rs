//! The policy file as an admin writes it: the `*Spec` types serde reads
//! (every struct with `deny_unknown_fields`), the enums the file and the
//! compiled policy share (`Mode`, `BudgetMode`, `UnknownVersion`,
//! `TeamFromLabel`) and the defaults of keys left out. Nothing here is
//! validated; [`super::Policy::compile`] does that.

use std::collections::BTreeMap;

use serde::Deserialize;

/// The policy file as written.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicySpec {
    /// Team for requests that resolve to no team; absent = deny them.
    #[serde(default)]
    pub default_team: Option<String>,
    /// Which requests a `team` label may choose the team of.
    #[serde(default)]
    pub team_from_label: TeamFromLabel,
    /// Teams by name.
    #[serde(default)]
    pub teams: BTreeMap<String, TeamSpec>,
    /// GPU prices (USD per GPU-hour), overriding the built-in table.
    #[serde(default)]
    pub prices: BTreeMap<String, PriceSpec>,
    /// Rules, evaluated in order after the team limits.
    #[serde(default)]
    pub rules: Vec<RuleSpec>,
    /// Roles of groups and users in teams ([`crate::access`]).
    #[serde(default)]
    pub role_bindings: Vec<crate::access::RoleBindingSpec>,
    /// Which field of the SkyPilot API server's user record names the user
    /// of a server-side request (`identity.skypilot_user_claim`).
    #[serde(default)]
    pub skypilot_user_claim: SkypilotUserClaim,
}

/// Which field of the user record a SkyPilot API server sends with a
/// server-side request (`id`, `name`) names the user Warden matches against
/// `teams.<t>.users` and `role_bindings` (`identity.skypilot_user_claim`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SkypilotUserClaim {
    /// `name`: the user name; behind SkyPilot's SSO it is the user's email.
    #[default]
    Name,
    /// `name` up to its `@`: `alice@example.com` is `alice` (a name without
    /// `@` is taken whole), for configs that list short names while the API
    /// server signs users in by email.
    EmailLocalPart,
    /// `id`: SkyPilot's user id (the user hash), stable across renames.
    Id,
}

impl SkypilotUserClaim {
    /// The user named by a user record with `name` and `id` (empty fields
    /// name nobody).
    pub fn pick(self, name: Option<&str>, id: Option<&str>) -> Option<String> {
        let field = match self {
            SkypilotUserClaim::Id => id,
            SkypilotUserClaim::Name | SkypilotUserClaim::EmailLocalPart => name,
        }
        .map(str::trim)
        .filter(|f| !f.is_empty())?;
        match (self, field.split_once('@')) {
            (SkypilotUserClaim::EmailLocalPart, Some((local, _))) if !local.is_empty() => {
                Some(local.to_owned())
            }
            _ => Some(field.to_owned()),
        }
    }

    /// As written in the config.
    pub fn as_str(self) -> &'static str {
        match self {
            SkypilotUserClaim::Name => "name",
            SkypilotUserClaim::EmailLocalPart => "email_local_part",
            SkypilotUserClaim::Id => "id",
        }
    }
}

/// A team as written.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TeamSpec {
    /// User names that belong to the team.
    #[serde(default)]
    pub users: Vec<String>,
    /// SkyPilot workspaces that belong to the team.
    #[serde(default)]
    pub workspaces: Vec<String>,
    /// GPU models the team may use; absent = any.
    #[serde(default)]
    pub allowed_gpus: Option<Vec<String>>,
    /// Drop disallowed GPU candidates from a candidate set instead of
    /// denying, when an allowed candidate remains.
    #[serde(default)]
    pub prune_disallowed_gpus: bool,
    /// Max GPUs per launch (count × nodes, worst candidate).
    #[serde(default)]
    pub max_gpus_per_launch: Option<u64>,
    /// Max nodes per launch.
    #[serde(default)]
    pub max_nodes: Option<u64>,
    /// Max estimated USD per hour per launch.
    #[serde(default)]
    pub max_hourly_usd: Option<f64>,
    /// Mode of the team limits (`enforce` default, `warn`, `off`).
    #[serde(default)]
    pub mode: Mode,
    /// Limits on what the team has running at once, checked against the
    /// store when a launch is recorded.
    #[serde(default)]
    pub quotas: Option<QuotaSpec>,
    /// Spending limits per day and month (in the config's `time_zone`),
    /// checked against the store when a launch is recorded, with alerts at
    /// soft thresholds.
    #[serde(default)]
    pub budgets: Option<BudgetSpec>,
    /// Offer constraints and budget action at the Vast door.
    #[serde(default)]
    pub vast: Option<crate::vast::VastTeamSpec>,
    /// Namespace and caps on a Kubernetes cluster.
    #[serde(default)]
    pub kubernetes: Option<crate::kubernetes::KubernetesTeamSpec>,
}

/// Team budgets as written.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BudgetSpec {
    /// USD per day.
    #[serde(default)]
    pub daily_usd: Option<f64>,
    /// USD per calendar month.
    #[serde(default)]
    pub monthly_usd: Option<f64>,
    /// Hours of a launch's estimated price reserved against the budget
    /// while it runs (default 1).
    #[serde(default)]
    pub reservation_hours: Option<f64>,
    /// `hard` (default): a launch that would pass a budget is denied.
    /// `soft`: never denied; only the alerts fire.
    #[serde(default)]
    pub mode: Option<BudgetMode>,
    /// Alert thresholds in percent of each budget (default 50, 80, 100);
    /// each fires once per period. `[]` turns alerts off.
    #[serde(default)]
    pub alert_percent: Option<Vec<u32>>,
}

/// Whether a budget denies launches or only alerts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum BudgetMode {
    /// Deny a launch whose reservation would pass the budget.
    #[default]
    Hard,
    /// Never deny; alert only.
    Soft,
}

/// Alert thresholds used when a team's budgets name none.
pub const DEFAULT_ALERT_PERCENT: [u32; 3] = [50, 80, 100];

/// Team quotas as written: limits on live usage, not on one launch.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QuotaSpec {
    /// Max GPUs live at once, all models.
    #[serde(default)]
    pub max_gpus: Option<u64>,
    /// Max GPUs live at once, per GPU model.
    #[serde(default)]
    pub max_gpus_by_model: BTreeMap<String, u64>,
    /// Max live allocations (clusters, instances) of the team.
    #[serde(default)]
    pub max_live: Option<u64>,
    /// Max live allocations per user of the team.
    #[serde(default)]
    pub max_live_per_user: Option<u64>,
    /// Max estimated USD per hour of all live allocations together.
    #[serde(default)]
    pub max_live_hourly_usd: Option<f64>,
    /// Max launches per user per `launch_window_minutes` (a token bucket
    /// shared by all replicas: bursts up to this, refilled evenly).
    #[serde(default)]
    pub max_launches_per_user: Option<u64>,
    /// Max launches of the whole team per `launch_window_minutes`.
    #[serde(default)]
    pub max_launches_per_team: Option<u64>,
    /// The window of the launch limits, in minutes (default 60).
    #[serde(default)]
    pub launch_window_minutes: Option<u64>,
    /// The same live-usage limits for each user of the team on their own.
    #[serde(default)]
    pub per_user: Option<UserQuotaSpec>,
}

/// Per-user quotas as written (`quotas.per_user`): each user of the team,
/// counted on their own.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserQuotaSpec {
    /// Max GPUs a user has live at once, all models.
    #[serde(default)]
    pub max_gpus: Option<u64>,
    /// Max GPUs a user has live at once, per GPU model.
    #[serde(default)]
    pub max_gpus_by_model: BTreeMap<String, u64>,
    /// Max live allocations of a user (same as `max_live_per_user`).
    #[serde(default)]
    pub max_live: Option<u64>,
    /// Max estimated USD per hour of a user's live allocations.
    #[serde(default)]
    pub max_live_hourly_usd: Option<f64>,
}

/// The launch window used when `launch_window_minutes` is not given.
pub const DEFAULT_LAUNCH_WINDOW_MINUTES: u64 = 60;

/// A price override as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PriceSpec {
    /// On-demand USD per GPU-hour.
    pub on_demand: f64,
    /// Spot USD per GPU-hour; defaults to the on-demand price.
    #[serde(default)]
    pub spot: Option<f64>,
}

/// How a rule's outcome is applied.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Denials deny, mutations apply.
    #[default]
    Enforce,
    /// Allow, but record what the rule would have done as a warning.
    Warn,
    /// Skip the rule (still validated).
    Off,
}

/// Which requests a rule applies to; every given field must match.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MatchSpec {
    /// Teams (resolved team must be one of them).
    #[serde(default)]
    pub teams: Option<Vec<String>>,
    /// User names.
    #[serde(default)]
    pub users: Option<Vec<String>>,
    /// Request names (`launch`, `exec`, `jobs.*`, ...; `*` at the end is a prefix match).
    #[serde(default)]
    pub requests: Option<Vec<String>>,
    /// Doors (`skypilot`, `vast`, `kubernetes`).
    #[serde(default)]
    pub doors: Option<Vec<String>>,
    /// CEL over `request`, `task`, `config`.
    #[serde(default)]
    pub when: Option<String>,
    /// CEL over each `resource` candidate: the rule acts on matching
    /// candidates and does not apply when none match.
    #[serde(default)]
    pub resource: Option<String>,
}

/// `allowed_gpus: [H100]` or `allowed_gpus: {models: [H100], prune: true}`.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum AllowedGpusSpec {
    /// Just the models.
    List(Vec<String>),
    /// Models and whether to prune.
    Full {
        /// Allowed models.
        models: Vec<String>,
        /// Prune disallowed candidates instead of denying.
        #[serde(default)]
        prune: bool,
    },
}

/// `min_client_api_version: 25` or `{version: 25, unknown: deny}`.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum MinVersionSpec {
    /// Just the version (unknown versions allowed).
    Version(i64),
    /// Version and what to do when the client sent none.
    Full {
        /// Minimum API version.
        version: i64,
        /// `allow` (default) or `deny`.
        #[serde(default)]
        unknown: UnknownVersion,
    },
}

/// What to do with a request that carries no client API version.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum UnknownVersion {
    /// Allow it (SkyPilot's own worker process sends none).
    #[default]
    Allow,
    /// Deny it.
    Deny,
}

/// Autostop as written in a rule.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AutostopSpec {
    /// Idle minutes.
    pub idle_minutes: i64,
    /// Tear down instead of stop.
    #[serde(default)]
    pub down: bool,
}

/// A rule as written: a name, an optional match, a mode, and exactly one action.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleSpec {
    /// Unique name, shown to users.
    pub name: String,
    /// Free text for admins.
    #[serde(default)]
    pub description: Option<String>,
    /// `enforce` (default), `warn` or `off`.
    #[serde(default)]
    pub mode: Mode,
    /// Also apply to SkyPilot controller tasks (`*.launch_controller`).
    #[serde(default)]
    pub controllers: bool,
    /// The admin's own text for this rule's denials (e.g. a wiki link),
    /// shown after the built-in reason on a line of its own, labelled
    /// `Admin note:`.
    #[serde(default)]
    pub message: Option<String>,
    /// Which requests the rule applies to.
    #[serde(default, rename = "match")]
    pub matcher: MatchSpec,

    /// Action: deny with this message.
    #[serde(default)]
    pub deny: Option<String>,
    /// Action: only these GPU models.
    #[serde(default)]
    pub allowed_gpus: Option<AllowedGpusSpec>,
    /// Action: at most this many GPUs (count × nodes).
    #[serde(default)]
    pub max_gpus: Option<u64>,
    /// Action: at most this many nodes.
    #[serde(default)]
    pub max_nodes: Option<u64>,
    /// Action: at most this estimated USD per hour.
    #[serde(default)]
    pub max_hourly_usd: Option<f64>,
    /// Action: autostop must be set.
    #[serde(default)]
    pub require_autostop: Option<bool>,
    /// Action: cap autostop idle minutes (set it when absent).
    #[serde(default)]
    pub max_autostop_minutes: Option<i64>,
    /// Action: set autostop when the request has none.
    #[serde(default)]
    pub default_autostop: Option<AutostopSpec>,
    /// Action: use spot capacity.
    #[serde(default)]
    pub use_spot: Option<bool>,
    /// Action: add labels (`${team}`, `${user}`, `${request}` are substituted).
    #[serde(default)]
    pub add_labels: Option<BTreeMap<String, String>>,
    /// Action: these labels must be present.
    #[serde(default)]
    pub require_labels: Option<Vec<String>>,
    /// Action: set raw paths (`config.aws.use_internal_ips: true`, `task.x.y: ...`).
    #[serde(default)]
    pub set: Option<BTreeMap<String, serde_json::Value>>,
    /// Action: these raw paths must be present and non-null.
    #[serde(default)]
    pub require_paths: Option<Vec<String>>,
    /// Action: add volumes (mount path to volume).
    #[serde(default)]
    pub add_volumes: Option<BTreeMap<String, serde_json::Value>>,
    /// Action: set resource fields (`zone`, `region`, `cloud`, `image_id`, `disk_size`).
    #[serde(default)]
    pub set_resource: Option<BTreeMap<String, serde_json::Value>>,
    /// Action: minimum client API version (server-side requests only).
    #[serde(default)]
    pub min_client_api_version: Option<MinVersionSpec>,
    /// Action: only these clouds.
    #[serde(default)]
    pub allowed_clouds: Option<Vec<String>>,
    /// Action: only these regions.
    #[serde(default)]
    pub allowed_regions: Option<Vec<String>>,
    /// Action: only images starting with one of these prefixes.
    #[serde(default)]
    pub allowed_images: Option<Vec<String>>,
}

/// Which requests a `team` label may choose the team of
/// (`team_from_label`). A label is written by whoever writes the task, so
/// anyone can name any team with it; the user name of a server-side
/// SkyPilot request is vouched for by the API server.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TeamFromLabel {
    /// Client-side requests only (they carry no vouched identity, so the
    /// label is all there is); a server-side request is resolved by user,
    /// workspace and `default_team`.
    #[default]
    ClientSide,
    /// Every request: any user can bill any team by labelling a task.
    Always,
    /// No request.
    Never,
}

impl TeamFromLabel {
    /// Whether the label may choose the team of a request evaluated on the
    /// client side (`at_client_side`) or not.
    pub fn applies(self, at_client_side: bool) -> bool {
        match self {
            TeamFromLabel::ClientSide => at_client_side,
            TeamFromLabel::Always => true,
            TeamFromLabel::Never => false,
        }
    }
}
