//! Policies: the YAML an admin writes (`*Spec`), validated into a compiled
//! [`Policy`] at load time. Errors name the key path and what to fix;
//! unknown keys are errors, since a typo must not silently weaken a policy.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use serde::Deserialize;

use crate::decision::{Doc, ResourceField};
use crate::error::{PolicyError, PolicyProblem};
use crate::expr::{Expr, Uses, REQUEST_VARS, RESOURCE_VARS};
use crate::ids::{GpuModel, RuleName, TeamName};
use crate::money::Usd;
use crate::price::{GpuPrice, PriceTable};
use crate::request::{Autostop, Door, LaunchRequest};
use crate::yaml_depth::{check_depth, MAX_CONFIG_DEPTH};

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

/// Compiled team budgets.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Budgets {
    /// Per day.
    pub daily: Option<Usd>,
    /// Per calendar month.
    pub monthly: Option<Usd>,
    /// Reservation window in seconds.
    pub reservation_secs: u64,
    /// Hard (deny) or soft (alert only).
    pub mode: BudgetMode,
    /// Alert thresholds, percent of a budget, ascending, no duplicates.
    pub alert_percent: Vec<u32>,
}

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

/// Compiled team quotas (limits on live usage).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Quotas {
    /// Max GPUs live at once, all models.
    pub max_gpus: Option<u64>,
    /// Max GPUs live at once, per model.
    pub max_gpus_by_model: Vec<(GpuModel, u64)>,
    /// Max live allocations of the team.
    pub max_live: Option<u64>,
    /// Max live allocations per user.
    pub max_live_per_user: Option<u64>,
    /// Max estimated $/hour of all live allocations.
    pub max_live_hourly: Option<Usd>,
    /// Max launches per user per `launch_window_secs`.
    pub max_launches_per_user: Option<u64>,
    /// Max launches of the team per `launch_window_secs`.
    pub max_launches_per_team: Option<u64>,
    /// The launch limits' window, in seconds.
    pub launch_window_secs: u64,
    /// Max GPUs per user live at once, all models.
    pub user_max_gpus: Option<u64>,
    /// Max GPUs per user live at once, per model.
    pub user_max_gpus_by_model: Vec<(GpuModel, u64)>,
    /// Max estimated $/hour of one user's live allocations.
    pub user_max_live_hourly: Option<Usd>,
}

impl Quotas {
    /// Whether no quota is set.
    pub fn is_empty(&self) -> bool {
        Quotas {
            launch_window_secs: 0,
            ..self.clone()
        } == Quotas::default()
    }
}

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

/// A compiled team.
#[derive(Debug, Clone)]
pub struct Team {
    /// Name.
    pub name: TeamName,
    /// Users.
    pub users: Vec<String>,
    /// Workspaces.
    pub workspaces: Vec<String>,
    /// Limits on live usage.
    pub quotas: Quotas,
    /// Spending limits.
    pub budgets: Budgets,
    /// Options at the Vast door.
    pub vast: crate::vast::VastTeam,
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

/// How a request was resolved to a team.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResolvedBy {
    /// The door authenticated the team (e.g. a team key).
    Door,
    /// The user is listed in the team.
    User,
    /// The workspace belongs to the team.
    Workspace,
    /// The `team` label names it.
    Label,
    /// `default_team`.
    Default,
}

/// A compiled action.
#[derive(Debug)]
pub(crate) enum Action {
    Deny(String),
    AllowedGpus {
        models: Vec<GpuModel>,
        prune: bool,
    },
    MaxGpus(u64),
    MaxNodes(u64),
    MaxHourly(Usd),
    RequireAutostop,
    MaxAutostop(i64),
    DefaultAutostop(Autostop),
    UseSpot,
    AddLabels(BTreeMap<String, String>),
    RequireLabels(Vec<String>),
    Set(Vec<(Doc, Vec<String>, serde_json::Value)>),
    RequirePaths(Vec<(Doc, Vec<String>)>),
    AddVolumes(BTreeMap<String, serde_json::Value>),
    SetResource(Vec<(ResourceField, serde_json::Value)>),
    MinClientApiVersion {
        version: i64,
        unknown: UnknownVersion,
    },
    AllowedClouds(Vec<String>),
    AllowedRegions(Vec<String>),
    AllowedImages(Vec<String>),
    /// The host's reliability must be at least this (unknown: denied).
    MinReliability(f64),
    /// The host must be verified (unknown: denied).
    VerifiedOnly,
}

#[derive(Debug)]
pub(crate) enum NamePattern {
    Exact(String),
    Prefix(String),
}

impl NamePattern {
    fn parse(s: &str) -> Self {
        match s.strip_suffix('*') {
            Some(p) => NamePattern::Prefix(p.to_owned()),
            None => NamePattern::Exact(s.to_owned()),
        }
    }

    pub(crate) fn matches(&self, name: &str) -> bool {
        match self {
            NamePattern::Exact(e) => e == name,
            NamePattern::Prefix(p) => name.starts_with(p.as_str()),
        }
    }
}

#[derive(Debug, Default)]
pub(crate) struct Matcher {
    pub(crate) teams: Option<Vec<TeamName>>,
    pub(crate) users: Option<Vec<String>>,
    pub(crate) requests: Option<Vec<NamePattern>>,
    pub(crate) doors: Option<Vec<Door>>,
    pub(crate) when: Option<Expr>,
    pub(crate) resource: Option<Expr>,
}

/// A compiled rule.
#[derive(Debug)]
pub struct Rule {
    /// Name.
    pub name: RuleName,
    /// Mode.
    pub mode: Mode,
    pub(crate) controllers: bool,
    /// Built-in text appended to a denial (a team limit says which key to
    /// change).
    pub(crate) hint: Option<String>,
    /// The admin's `message`, shown after a denial on its own line.
    pub(crate) note: Option<String>,
    pub(crate) matcher: Matcher,
    pub(crate) action: Action,
}

/// Labels the admin's `message` in a denial, after the built-in reason.
pub(crate) const ADMIN_NOTE_LABEL: &str = "Admin note:";

impl Rule {
    /// The reason a denial by this rule gives: the built-in `reason` and
    /// hint, then the admin's message on its own labelled line, so a user
    /// can tell what Warden checked from what the admins added.
    pub(crate) fn denial(&self, reason: String) -> String {
        let mut m = reason;
        if let Some(h) = &self.hint {
            m.push(' ');
            m.push_str(h);
        }
        if let Some(n) = &self.note {
            m.push('\n');
            m.push_str(ADMIN_NOTE_LABEL);
            m.push(' ');
            m.push_str(n);
        }
        m
    }
}

/// A loaded, validated policy: teams, prices and rules. Cheap to share
/// behind an `Arc`; evaluation never mutates it.
pub struct Policy {
    pub(crate) teams: Vec<Team>,
    by_name: HashMap<TeamName, usize>,
    by_user: HashMap<String, usize>,
    by_workspace: HashMap<String, usize>,
    default_team: Option<usize>,
    team_from_label: TeamFromLabel,
    pub(crate) prices: PriceTable,
    pub(crate) rules: Vec<Rule>,
    pub(crate) env: Arc<cel::Env>,
    pub(crate) uses: Uses,
    /// The fields of `request`/`resource` worth building: those some CEL
    /// expression names (see `eval::field_mask`).
    pub(crate) cel_fields: u64,
}

impl std::fmt::Debug for Policy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Policy")
            .field("teams", &self.teams)
            .field("rules", &self.rules)
            .finish_non_exhaustive()
    }
}

struct Problems(Vec<PolicyProblem>);

impl Problems {
    fn add(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.0.push(PolicyProblem {
            path: path.into(),
            message: message.into(),
        });
    }
}

fn parse_doc_path(raw: &str) -> Result<(Doc, Vec<String>), String> {
    let (doc, rest) = if let Some(rest) = raw.strip_prefix("config.") {
        (Doc::Config, rest)
    } else if let Some(rest) = raw.strip_prefix("task.") {
        (Doc::Task, rest)
    } else {
        return Err(format!(
            "path `{raw}` must start with `config.` (the client config) or `task.` (the task)"
        ));
    };
    let keys: Vec<String> = rest.split('.').map(str::to_owned).collect();
    if keys.iter().any(String::is_empty) {
        return Err(format!("path `{raw}` has an empty key"));
    }
    Ok((doc, keys))
}

fn dollars(p: &mut Problems, path: String, v: f64) -> Usd {
    Usd::from_dollars(v).unwrap_or_else(|e| {
        p.add(path, e.to_string());
        Usd::ZERO
    })
}

fn gpu_models(p: &mut Problems, path: &str, names: &[String]) -> Vec<GpuModel> {
    let mut out = Vec::new();
    for (i, n) in names.iter().enumerate() {
        match GpuModel::parse(n) {
            Ok(m) => out.push(m),
            Err(e) => p.add(format!("{path}[{i}]"), e.to_string()),
        }
    }
    out
}

impl Policy {
    /// Parses and validates a policy from YAML text. Text nested deeper
    /// than [`MAX_CONFIG_DEPTH`] is refused before it is parsed.
    pub fn from_yaml(text: &str) -> Result<Self, PolicyError> {
        check_depth(text, MAX_CONFIG_DEPTH).map_err(|e| PolicyError::one("", e.to_string()))?;
        let de = serde_norway::Deserializer::from_str(text);
        let spec: PolicySpec = match serde_path_to_error::deserialize(de) {
            Ok(spec) => spec,
            Err(e) => {
                let path = e.path().to_string();
                let path = if path == "." { String::new() } else { path };
                return Err(PolicyError::one(path, e.into_inner().to_string()));
            }
        };
        Self::compile(spec)
    }

    /// Validates a parsed spec; reports every problem found.
    pub fn compile(spec: PolicySpec) -> Result<Self, PolicyError> {
        let mut p = Problems(Vec::new());
        let mut teams = Vec::new();
        let mut by_name = HashMap::new();
        let mut by_user: HashMap<String, usize> = HashMap::new();
        let mut by_workspace: HashMap<String, usize> = HashMap::new();
        let mut rules = Vec::new();

        for (raw_name, t) in &spec.teams {
            let path = format!("teams.{raw_name}");
            let name = match TeamName::parse(raw_name) {
                Ok(n) => n,
                Err(e) => {
                    p.add(path, e.to_string());
                    continue;
                }
            };
            let idx = teams.len();
            for u in &t.users {
                if let Some(prev) = by_user.insert(u.clone(), idx) {
                    let other = teams.get(prev).map_or("?", |t: &Team| t.name.as_str());
                    p.add(
                        format!("{path}.users"),
                        format!(
                            "user `{u}` is already in team `{other}`; a user belongs to one team"
                        ),
                    );
                }
            }
            for w in &t.workspaces {
                if let Some(prev) = by_workspace.insert(w.clone(), idx) {
                    let other = teams.get(prev).map_or("?", |t: &Team| t.name.as_str());
                    p.add(
                        format!("{path}.workspaces"),
                        format!("workspace `{w}` already belongs to team `{other}`"),
                    );
                }
            }
            by_name.insert(name.clone(), idx);
            rules.extend(team_rules(&mut p, &path, &name, t));
            let quotas = compile_quotas(&mut p, &path, t.quotas.as_ref());
            let budgets = compile_budgets(&mut p, &path, t.budgets.as_ref());
            let (vast, problems) = crate::vast::compile(&path, t.vast.as_ref());
            problems.into_iter().for_each(|(at, msg)| p.add(at, msg));
            teams.push(Team {
                name,
                users: t.users.clone(),
                workspaces: t.workspaces.clone(),
                quotas,
                budgets,
                vast,
            });
        }

        let default_team = match &spec.default_team {
            None => None,
            Some(d) => {
                let found = TeamName::parse(d)
                    .ok()
                    .and_then(|n| by_name.get(&n).copied());
                if found.is_none() {
                    p.add(
                        "default_team",
                        format!("team `{d}` is not defined under `teams`"),
                    );
                }
                found
            }
        };

        let mut prices = PriceTable::with_defaults();
        for (model, price) in &spec.prices {
            let path = format!("prices.{model}");
            let Ok(gpu) = GpuModel::parse(model).map_err(|e| p.add(path.clone(), e.to_string()))
            else {
                continue;
            };
            let on_demand = dollars(&mut p, format!("{path}.on_demand"), price.on_demand);
            let spot = match price.spot {
                Some(s) => dollars(&mut p, format!("{path}.spot"), s),
                None => on_demand,
            };
            prices.set(gpu, GpuPrice { on_demand, spot });
        }

        let mut seen: HashMap<String, usize> = HashMap::new();
        for (i, r) in spec.rules.iter().enumerate() {
            let path = format!("rules[{i}]");
            if let Some(prev) = seen.insert(r.name.clone(), i) {
                p.add(
                    format!("{path}.name"),
                    format!("rule name `{}` is already used by rules[{prev}]", r.name),
                );
            }
            if let Some(rule) = compile_rule(&mut p, &path, r, &by_name) {
                rules.push(rule);
            }
        }

        if !p.0.is_empty() {
            return Err(PolicyError { problems: p.0 });
        }
        let mut uses = Uses::default();
        let mut cel_words = Vec::new();
        for r in &rules {
            for e in [&r.matcher.when, &r.matcher.resource].into_iter().flatten() {
                uses = uses.or(e.uses());
                cel_words.extend(
                    e.source()
                        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                        .filter(|w| !w.is_empty())
                        .map(str::to_owned),
                );
            }
            let config_path = match &r.action {
                Action::Set(list) => list.iter().any(|(d, _, _)| *d == Doc::Config),
                Action::RequirePaths(list) => list.iter().any(|(d, _)| *d == Doc::Config),
                _ => false,
            };
            uses.config |= config_path;
            uses.task |= match &r.action {
                Action::Set(list) => list.iter().any(|(d, _, _)| *d == Doc::Task),
                Action::RequirePaths(list) => list.iter().any(|(d, _)| *d == Doc::Task),
                _ => false,
            };
        }
        let cel_fields = crate::eval::field_mask(&cel_words);
        Ok(Self {
            teams,
            by_name,
            by_user,
            by_workspace,
            default_team,
            team_from_label: spec.team_from_label,
            prices,
            rules,
            env: Arc::new(cel::Env::stdlib()),
            uses,
            cel_fields,
        })
    }

    /// A team by name.
    pub fn team(&self, name: &TeamName) -> Option<&Team> {
        self.by_name.get(name).and_then(|i| self.teams.get(*i))
    }

    /// The teams, in config order.
    pub fn teams(&self) -> &[Team] {
        &self.teams
    }

    /// Number of teams.
    pub fn team_count(&self) -> usize {
        self.teams.len()
    }

    /// The rules in evaluation order (implicit team limits first).
    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }

    /// Whether any rule reads or writes the native config document; doors
    /// skip parsing it when not (and when team resolution does not need it).
    pub fn needs_config(&self) -> bool {
        self.uses.config
    }

    /// Whether any rule reads or writes the native task document (CEL
    /// `task`, raw `task.` paths); doors skip building it when not.
    pub fn needs_task(&self) -> bool {
        self.uses.task
    }

    /// Whether a rule's `match.requests` names `name` exactly: doors refuse
    /// request names they do not know unless a rule names them.
    pub fn names_request(&self, name: &str) -> bool {
        self.rules.iter().any(|r| {
            r.matcher.requests.as_ref().is_some_and(|ps| {
                ps.iter()
                    .any(|p| matches!(p, NamePattern::Exact(e) if e == name))
            })
        })
    }

    /// Whether any team is resolved by workspace.
    pub fn uses_workspaces(&self) -> bool {
        !self.by_workspace.is_empty()
    }

    /// The price table.
    pub fn prices(&self) -> &PriceTable {
        &self.prices
    }

    /// Whether a `team` label may choose the team of a request evaluated
    /// on the client side (`at_client_side`) or not (`team_from_label`).
    pub fn team_from_label(&self, at_client_side: bool) -> bool {
        self.team_from_label.applies(at_client_side)
    }

    /// Resolves the team of a request with [`Self::resolve_team`], passing
    /// its `team` label only where `team_from_label` lets the label choose.
    pub fn resolve_request_team(&self, req: &LaunchRequest) -> Option<(TeamName, ResolvedBy)> {
        let label = if self.team_from_label(req.at_client_side) {
            req.labels.get("team").map(String::as_str)
        } else {
            None
        };
        self.resolve_team(
            req.principal.team.as_deref(),
            req.principal.user.as_deref(),
            req.principal.workspace.as_deref(),
            label,
        )
    }

    /// Resolves a team, in order: a team the door authenticated, the user,
    /// the workspace, the `team` label (when given: see
    /// [`Self::resolve_request_team`]), the default.
    pub fn resolve_team(
        &self,
        door_team: Option<&str>,
        user: Option<&str>,
        workspace: Option<&str>,
        label: Option<&str>,
    ) -> Option<(TeamName, ResolvedBy)> {
        let by_name = |n: &str| {
            TeamName::parse(n)
                .ok()
                .and_then(|n| self.by_name.get(&n).copied())
        };
        let found = door_team
            .and_then(by_name)
            .map(|i| (i, ResolvedBy::Door))
            .or_else(|| {
                user.and_then(|u| self.by_user.get(u).copied())
                    .map(|i| (i, ResolvedBy::User))
            })
            .or_else(|| {
                workspace
                    .and_then(|w| self.by_workspace.get(w).copied())
                    .map(|i| (i, ResolvedBy::Workspace))
            })
            .or_else(|| label.and_then(by_name).map(|i| (i, ResolvedBy::Label)))
            .or_else(|| self.default_team.map(|i| (i, ResolvedBy::Default)))?;
        self.teams.get(found.0).map(|t| (t.name.clone(), found.1))
    }
}

fn compile_budgets(p: &mut Problems, path: &str, b: Option<&BudgetSpec>) -> Budgets {
    let Some(b) = b else {
        return Budgets::default();
    };
    let hours = b.reservation_hours.unwrap_or(1.0);
    if !(hours.is_finite() && (0.0..=744.0).contains(&hours)) {
        p.add(
            format!("{path}.budgets.reservation_hours"),
            "must be a number of hours from 0 to 744",
        );
    }
    Budgets {
        daily: b
            .daily_usd
            .map(|v| dollars(p, format!("{path}.budgets.daily_usd"), v)),
        monthly: b
            .monthly_usd
            .map(|v| dollars(p, format!("{path}.budgets.monthly_usd"), v)),
        reservation_secs: (hours.clamp(0.0, 744.0) * 3600.0).round() as u64,
        mode: b.mode.unwrap_or_default(),
        alert_percent: alert_percent(p, path, b.alert_percent.as_deref()),
    }
}

fn alert_percent(p: &mut Problems, path: &str, given: Option<&[u32]>) -> Vec<u32> {
    let Some(given) = given else {
        return DEFAULT_ALERT_PERCENT.to_vec();
    };
    let mut out = Vec::with_capacity(given.len());
    for &v in given {
        if (1..=1000).contains(&v) {
            out.push(v);
        } else {
            p.add(
                format!("{path}.budgets.alert_percent"),
                format!("`{v}` is not a percentage from 1 to 1000"),
            );
        }
    }
    out.sort_unstable();
    out.dedup();
    out
}

fn compile_quotas(p: &mut Problems, path: &str, q: Option<&QuotaSpec>) -> Quotas {
    let Some(q) = q else {
        return Quotas::default();
    };
    let models = |p: &mut Problems, key: &str, given: &BTreeMap<String, u64>| {
        let mut out = Vec::new();
        for (model, max) in given {
            match GpuModel::parse(model) {
                Ok(m) => out.push((m, *max)),
                Err(e) => p.add(format!("{path}.quotas.{key}.{model}"), e.to_string()),
            }
        }
        out
    };
    let by_model = models(p, "max_gpus_by_model", &q.max_gpus_by_model);
    let user = q.per_user.clone().unwrap_or_default();
    if user.max_live.is_some() && q.max_live_per_user.is_some() {
        p.add(
            format!("{path}.quotas.per_user.max_live"),
            "also given as `max_live_per_user`; keep one",
        );
    }
    Quotas {
        max_gpus: q.max_gpus,
        max_gpus_by_model: by_model,
        max_live: q.max_live,
        max_live_per_user: q.max_live_per_user.or(user.max_live),
        user_max_gpus: user.max_gpus,
        user_max_gpus_by_model: models(p, "per_user.max_gpus_by_model", &user.max_gpus_by_model),
        user_max_live_hourly: user
            .max_live_hourly_usd
            .map(|v| dollars(p, format!("{path}.quotas.per_user.max_live_hourly_usd"), v)),
        max_live_hourly: q
            .max_live_hourly_usd
            .map(|v| dollars(p, format!("{path}.quotas.max_live_hourly_usd"), v)),
        max_launches_per_user: launches(p, path, "max_launches_per_user", q.max_launches_per_user),
        max_launches_per_team: launches(p, path, "max_launches_per_team", q.max_launches_per_team),
        launch_window_secs: {
            let m = q
                .launch_window_minutes
                .unwrap_or(DEFAULT_LAUNCH_WINDOW_MINUTES);
            if !(1..=44_640).contains(&m) {
                p.add(
                    format!("{path}.quotas.launch_window_minutes"),
                    format!("`{m}` is out of range; use 1 to 44640 minutes (31 days)"),
                );
            }
            m.clamp(1, 44_640) * 60
        },
    }
}

fn launches(p: &mut Problems, path: &str, key: &str, v: Option<u64>) -> Option<u64> {
    if let Some(n) = v {
        if !(1..=1_000_000).contains(&n) {
            p.add(
                format!("{path}.quotas.{key}"),
                format!("`{n}` is out of range; use 1 to 1000000 launches per window"),
            );
        }
    }
    v
}

fn team_rules(p: &mut Problems, path: &str, name: &TeamName, t: &TeamSpec) -> Vec<Rule> {
    let mut out = Vec::new();
    let mut push = |rule: &'static str, key: &str, action: Action| {
        out.push(Rule {
            name: RuleName::builtin(rule),
            mode: t.mode,
            controllers: false,
            hint: Some(format!(
                "(or ask a platform admin to change `teams.{name}.{key}`)"
            )),
            note: None,
            matcher: Matcher {
                teams: Some(vec![name.clone()]),
                ..Matcher::default()
            },
            action,
        });
    };
    if let Some(models) = &t.allowed_gpus {
        let models = gpu_models(p, &format!("{path}.allowed_gpus"), models);
        push(
            "team.allowed_gpus",
            "allowed_gpus",
            Action::AllowedGpus {
                models,
                prune: t.prune_disallowed_gpus,
            },
        );
    }
    if let Some(n) = t.max_gpus_per_launch {
        push(
            "team.max_gpus_per_launch",
            "max_gpus_per_launch",
            Action::MaxGpus(n),
        );
    }
    if let Some(n) = t.max_nodes {
        push("team.max_nodes", "max_nodes", Action::MaxNodes(n));
    }
    if let Some(usd) = t.max_hourly_usd {
        let usd = dollars(p, format!("{path}.max_hourly_usd"), usd);
        push(
            "team.max_hourly_usd",
            "max_hourly_usd",
            Action::MaxHourly(usd),
        );
    }
    // The team's marketplace options judge the host facts the Vast door
    // fills in; they hold at that door only.
    let vast_rule = |rule: &'static str, key: &str, action: Action| Rule {
        name: RuleName::builtin(rule),
        mode: t.mode,
        controllers: false,
        hint: Some(format!(
            "(or ask a platform admin to change `teams.{name}.vast.{key}`)"
        )),
        note: None,
        matcher: Matcher {
            teams: Some(vec![name.clone()]),
            doors: Some(vec![Door::Vast]),
            ..Matcher::default()
        },
        action,
    };
    if let Some(vast) = &t.vast {
        if let Some(min) = vast.min_reliability.filter(|r| r.is_finite()) {
            out.push(vast_rule(
                "team.vast.min_reliability",
                "min_reliability",
                Action::MinReliability(min),
            ));
        }
        if vast.verified_only {
            out.push(vast_rule(
                "team.vast.verified_only",
                "verified_only",
                Action::VerifiedOnly,
            ));
        }
    }
    out
}

fn compile_matcher(
    p: &mut Problems,
    path: &str,
    m: &MatchSpec,
    teams: &HashMap<TeamName, usize>,
) -> Matcher {
    let mut out = Matcher::default();
    if let Some(list) = &m.teams {
        let mut names = Vec::new();
        for (i, t) in list.iter().enumerate() {
            match TeamName::parse(t) {
                Ok(n) if teams.contains_key(&n) => names.push(n),
                Ok(_) => p.add(
                    format!("{path}.teams[{i}]"),
                    format!("team `{t}` is not defined under `teams`"),
                ),
                Err(e) => p.add(format!("{path}.teams[{i}]"), e.to_string()),
            }
        }
        out.teams = Some(names);
    }
    out.users = m.users.clone();
    out.requests = m
        .requests
        .as_ref()
        .map(|r| r.iter().map(|s| NamePattern::parse(s)).collect());
    if let Some(doors) = &m.doors {
        let mut list = Vec::new();
        for (i, d) in doors.iter().enumerate() {
            match d.as_str() {
                "skypilot" => list.push(Door::Skypilot),
                "vast" => list.push(Door::Vast),
                "kubernetes" => list.push(Door::Kubernetes),
                other => p.add(
                    format!("{path}.doors[{i}]"),
                    format!("unknown door `{other}`; use skypilot, vast or kubernetes"),
                ),
            }
        }
        out.doors = Some(list);
    }
    if let Some(src) = &m.when {
        match Expr::compile(src, REQUEST_VARS) {
            Ok(e) => out.when = Some(e),
            Err(e) => p.add(format!("{path}.when"), e),
        }
    }
    if let Some(src) = &m.resource {
        match Expr::compile(src, RESOURCE_VARS) {
            Ok(e) => out.resource = Some(e),
            Err(e) => p.add(format!("{path}.resource"), e),
        }
    }
    out
}

const ACTION_KEYS: &str =
    "deny, allowed_gpus, max_gpus, max_nodes, max_hourly_usd, require_autostop, \
max_autostop_minutes, default_autostop, use_spot, add_labels, require_labels, set, require_paths, \
add_volumes, set_resource, min_client_api_version, allowed_clouds, allowed_regions, allowed_images";

fn compile_rule(
    p: &mut Problems,
    path: &str,
    r: &RuleSpec,
    teams: &HashMap<TeamName, usize>,
) -> Option<Rule> {
    let name = match RuleName::parse(&r.name) {
        Ok(n) => n,
        Err(e) => {
            p.add(format!("{path}.name"), e.to_string());
            return None;
        }
    };
    if r.name.starts_with("team.") {
        p.add(
            format!("{path}.name"),
            "names starting with `team.` are reserved for the team limits",
        );
    }
    let path = format!("{path} (`{}`)", r.name);
    let matcher = compile_matcher(p, &format!("{path}.match"), &r.matcher, teams);

    let mut actions: Vec<(&str, Action)> = Vec::new();
    if let Some(m) = &r.deny {
        actions.push(("deny", Action::Deny(m.clone())));
    }
    if let Some(a) = &r.allowed_gpus {
        let (models, prune) = match a {
            AllowedGpusSpec::List(m) => (m, false),
            AllowedGpusSpec::Full { models, prune } => (models, *prune),
        };
        let models = gpu_models(p, &format!("{path}.allowed_gpus"), models);
        actions.push(("allowed_gpus", Action::AllowedGpus { models, prune }));
    }
    if let Some(n) = r.max_gpus {
        actions.push(("max_gpus", Action::MaxGpus(n)));
    }
    if let Some(n) = r.max_nodes {
        actions.push(("max_nodes", Action::MaxNodes(n)));
    }
    if let Some(usd) = r.max_hourly_usd {
        let usd = dollars(p, format!("{path}.max_hourly_usd"), usd);
        actions.push(("max_hourly_usd", Action::MaxHourly(usd)));
    }
    if let Some(req) = r.require_autostop {
        if !req {
            p.add(
                format!("{path}.require_autostop"),
                "only `true` is meaningful; remove the rule or set `mode: off`",
            );
        }
        actions.push(("require_autostop", Action::RequireAutostop));
    }
    if let Some(m) = r.max_autostop_minutes {
        if m < 1 {
            p.add(format!("{path}.max_autostop_minutes"), "must be at least 1");
        }
        actions.push(("max_autostop_minutes", Action::MaxAutostop(m)));
    }
    if let Some(a) = &r.default_autostop {
        if a.idle_minutes < 1 {
            p.add(
                format!("{path}.default_autostop.idle_minutes"),
                "must be at least 1",
            );
        }
        actions.push((
            "default_autostop",
            Action::DefaultAutostop(Autostop {
                idle_minutes: a.idle_minutes,
                down: a.down,
            }),
        ));
    }
    if let Some(s) = r.use_spot {
        if !s {
            p.add(
                format!("{path}.use_spot"),
                "only `true` is supported (Warden does not force on-demand)",
            );
        }
        actions.push(("use_spot", Action::UseSpot));
    }
    if let Some(l) = &r.add_labels {
        actions.push(("add_labels", Action::AddLabels(l.clone())));
    }
    if let Some(l) = &r.require_labels {
        actions.push(("require_labels", Action::RequireLabels(l.clone())));
    }
    if let Some(set) = &r.set {
        let mut list = Vec::new();
        for (k, v) in set {
            match parse_doc_path(k) {
                Ok((doc, keys)) => list.push((doc, keys, v.clone())),
                Err(e) => p.add(format!("{path}.set"), e),
            }
        }
        actions.push(("set", Action::Set(list)));
    }
    if let Some(req) = &r.require_paths {
        let mut list = Vec::new();
        for (i, k) in req.iter().enumerate() {
            match parse_doc_path(k) {
                Ok(dk) => list.push(dk),
                Err(e) => p.add(format!("{path}.require_paths[{i}]"), e),
            }
        }
        actions.push(("require_paths", Action::RequirePaths(list)));
    }
    if let Some(v) = &r.add_volumes {
        actions.push(("add_volumes", Action::AddVolumes(v.clone())));
    }
    if let Some(fields) = &r.set_resource {
        let mut list = Vec::new();
        for (k, v) in fields {
            let field = match k.as_str() {
                "cloud" => ResourceField::Cloud,
                "region" => ResourceField::Region,
                "zone" => ResourceField::Zone,
                "image_id" => ResourceField::ImageId,
                "disk_size" => ResourceField::DiskSize,
                other => {
                    p.add(
                        format!("{path}.set_resource.{other}"),
                        "unknown field; use cloud, region, zone, image_id or disk_size",
                    );
                    continue;
                }
            };
            let ok = match field {
                ResourceField::DiskSize => v.as_i64().is_some_and(|n| n > 0),
                _ => v.is_string(),
            };
            if !ok {
                p.add(
                    format!("{path}.set_resource.{k}"),
                    "expected a string (a positive integer for disk_size)",
                );
            }
            list.push((field, v.clone()));
        }
        actions.push(("set_resource", Action::SetResource(list)));
    }
    if let Some(v) = &r.min_client_api_version {
        let (version, unknown) = match v {
            MinVersionSpec::Version(v) => (*v, UnknownVersion::Allow),
            MinVersionSpec::Full { version, unknown } => (*version, *unknown),
        };
        actions.push((
            "min_client_api_version",
            Action::MinClientApiVersion { version, unknown },
        ));
    }
    if let Some(c) = &r.allowed_clouds {
        let clouds = c.iter().map(|c| normalize_cloud(c)).collect();
        actions.push(("allowed_clouds", Action::AllowedClouds(clouds)));
    }
    if let Some(c) = &r.allowed_regions {
        actions.push(("allowed_regions", Action::AllowedRegions(c.clone())));
    }
    if let Some(c) = &r.allowed_images {
        actions.push(("allowed_images", Action::AllowedImages(c.clone())));
    }

    let mut it = actions.into_iter();
    let Some((_, action)) = it.next() else {
        p.add(
            path,
            format!("the rule has no action; give exactly one of: {ACTION_KEYS}"),
        );
        return None;
    };
    let extra: Vec<&str> = it.map(|(k, _)| k).collect();
    if !extra.is_empty() {
        p.add(
            path,
            format!(
                "the rule has more than one action (also {}); split it into one rule per action",
                extra.join(", ")
            ),
        );
        return None;
    }
    Some(Rule {
        name,
        mode: r.mode,
        controllers: r.controllers,
        hint: None,
        note: r
            .message
            .as_deref()
            .map(str::trim)
            .filter(|m| !m.is_empty())
            .map(str::to_owned),
        matcher,
        action,
    })
}

/// Lower-cases a cloud name and maps aliases (`k8s` → `kubernetes`).
pub fn normalize_cloud(c: &str) -> String {
    let c = c.trim().to_ascii_lowercase();
    match c.as_str() {
        "k8s" => "kubernetes".to_owned(),
        _ => c,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(yaml: &str) -> String {
        Policy::from_yaml(yaml).unwrap_err().to_string()
    }

    #[test]
    fn unknown_keys_are_errors_with_paths() {
        let e = err("rules:\n  - name: a\n    deny: no\n    mdoe: warn\n");
        assert!(e.contains("rules[0]") && e.contains("mdoe"), "{e}");
        let e = err("teams:\n  ml:\n    max_gpu: 3\n");
        assert!(e.contains("teams.ml") && e.contains("max_gpu"), "{e}");
    }

    #[test]
    fn budgets_compile_mode_and_alert_thresholds() {
        let p = Policy::from_yaml(
            "teams:\n  ml:\n    budgets: {daily_usd: 10, mode: soft, alert_percent: [100, 50, 50]}\n  cv:\n    budgets: {monthly_usd: 10}\n",
        )
        .unwrap();
        let b = |t: &str| {
            p.team(&TeamName::parse(t).unwrap())
                .unwrap()
                .budgets
                .clone()
        };
        assert_eq!(b("ml").mode, BudgetMode::Soft);
        assert_eq!(b("ml").alert_percent, vec![50, 100]);
        assert_eq!(b("cv").mode, BudgetMode::Hard);
        assert_eq!(b("cv").alert_percent, DEFAULT_ALERT_PERCENT.to_vec());
        let e = err("teams:\n  ml:\n    budgets: {daily_usd: 1, alert_percent: [0, 80]}\n");
        assert!(
            e.contains("teams.ml.budgets.alert_percent") && e.contains("`0` is not a percentage"),
            "{e}"
        );
        let e = err("teams:\n  ml:\n    budgets: {daily_usd: 1, mode: sometimes}\n");
        assert!(e.contains("unknown variant `sometimes`"), "{e}");
    }

    /// A condition evaluated natively (`resource.gpus > 0`) decides exactly
    /// as the same condition run by CEL (parenthesized, so not native).
    #[test]
    fn native_resource_conditions_decide_as_cel_does() {
        use crate::request::{Accelerator, LaunchRequest, Resource};
        use crate::Door;
        use crate::GpuModel;
        let conditions = [
            "resource.gpus > 0",
            "resource.gpus >= 8",
            "resource.total_gpus != 16",
            "resource.index == 1",
            "resource.gpus <= 1",
        ];
        let policy = |cond: &str| {
            Policy::from_yaml(&format!(
                "default_team: t\nteams: {{t: {{}}}}\nrules:\n  - {{name: a, match: {{resource: '{cond}'}}, use_spot: true}}\n  - {{name: b, match: {{resource: '{cond}'}}, allowed_gpus: {{models: [A100], prune: true}}}}\n  - {{name: c, match: {{resource: '{cond}'}}, deny: no}}\n"
            ))
            .unwrap()
        };
        let gpu = |name: &str, count| Resource {
            accelerator: Some(Accelerator {
                model: GpuModel::parse(name).unwrap(),
                count,
            }),
            ..Resource::default()
        };
        let shapes = [
            vec![Resource::default()],
            vec![gpu("H100", 8)],
            vec![gpu("H100", 1), gpu("A100", 8), Resource::default()],
            vec![gpu("A100", 1), gpu("H100", 16)],
        ];
        for cond in conditions {
            let native = policy(cond);
            let cel = policy(&format!("({cond})"));
            assert!(native.rules[0]
                .matcher
                .resource
                .as_ref()
                .unwrap()
                .native()
                .is_some());
            assert!(cel.rules[0]
                .matcher
                .resource
                .as_ref()
                .unwrap()
                .native()
                .is_none());
            for resources in &shapes {
                for nodes in [1, 2] {
                    let mut req = LaunchRequest::new(Door::Skypilot, "launch".to_owned());
                    req.resources = resources.clone();
                    req.num_nodes = nodes;
                    assert_eq!(
                        format!("{:?}", native.decide(&req)),
                        format!("{:?}", cel.decide(&req)),
                        "{cond} on {resources:?} x{nodes}"
                    );
                }
            }
        }
    }

    #[test]
    fn rules_need_exactly_one_action() {
        assert!(err("rules:\n  - name: a\n").contains("no action"));
        let e = err("rules:\n  - name: a\n    deny: x\n    use_spot: true\n");
        assert!(e.contains("more than one action (also use_spot)"), "{e}");
    }

    #[test]
    fn reports_every_problem() {
        let e = Policy::from_yaml(
            "default_team: nope\nrules:\n  - name: a\n    match: {when: 'foo > 1', teams: [x]}\n    deny: d\n  - name: a\n    max_nodes: 2\n",
        )
        .unwrap_err();
        let text = e.to_string();
        assert_eq!(e.problems.len(), 4, "{text}");
        assert!(text.contains("default_team: team `nope`"), "{text}");
        assert!(text.contains("rules[0] (`a`).match.when"), "{text}");
        assert!(text.contains("rules[0] (`a`).match.teams[0]"), "{text}");
        assert!(text.contains("already used by rules[0]"), "{text}");
    }

    #[test]
    fn users_belong_to_one_team() {
        let e = err("teams:\n  a: {users: [bob]}\n  b: {users: [bob]}\n");
        assert!(e.contains("user `bob` is already in team `a`"), "{e}");
    }

    #[test]
    fn resolves_in_documented_order() {
        let p = Policy::from_yaml(
            "default_team: c\nteams:\n  a: {users: [alice]}\n  b: {workspaces: [ws-b]}\n  c: {}\n",
        )
        .unwrap();
        let name = |r: Option<(TeamName, ResolvedBy)>| r.map(|(t, _)| t.to_string());
        assert_eq!(
            name(p.resolve_team(None, Some("alice"), Some("ws-b"), None)),
            Some("a".into())
        );
        assert_eq!(
            name(p.resolve_team(None, Some("zed"), Some("ws-b"), Some("a"))),
            Some("b".into())
        );
        assert_eq!(
            name(p.resolve_team(None, None, None, Some("a"))),
            Some("a".into())
        );
        assert_eq!(
            p.resolve_team(None, None, None, Some("nope")).map(|r| r.1),
            Some(ResolvedBy::Default)
        );
    }

    /// `team_from_label` decides whether a request's `team` label may pick
    /// its team: by default only on the client side, where no identity is
    /// vouched for anyway; `always` and `never` as they say.
    #[test]
    fn the_team_label_chooses_a_team_as_configured() {
        use crate::request::{Door, LaunchRequest};
        let request = |at_client_side: bool, user: Option<&str>| {
            let mut req = LaunchRequest::new(Door::Skypilot, "launch");
            req.at_client_side = at_client_side;
            req.principal.user = user.map(str::to_owned);
            req.labels.insert("team".to_owned(), "b".to_owned());
            req
        };
        let teams = "teams:\n  a: {users: [alice]}\n  b: {}\n";
        for (setting, client, server) in [
            ("", Some("b"), None),
            ("team_from_label: client_side\n", Some("b"), None),
            ("team_from_label: always\n", Some("b"), Some("b")),
            ("team_from_label: never\n", None, None),
        ] {
            let p = Policy::from_yaml(&format!("{setting}{teams}")).unwrap();
            let team = |req: &LaunchRequest| p.decide(req).team.map(|t| t.to_string());
            assert_eq!(team(&request(true, None)).as_deref(), client, "{setting}");
            assert_eq!(
                team(&request(false, Some("zed"))).as_deref(),
                server,
                "{setting}"
            );
            // The user still comes first, whatever the setting.
            assert_eq!(
                team(&request(false, Some("alice"))).as_deref(),
                Some("a"),
                "{setting}"
            );
            assert_eq!(
                p.resolve_request_team(&request(false, Some("zed")))
                    .map(|(_, by)| by),
                server.map(|_| ResolvedBy::Label),
                "{setting}"
            );
        }

        // A server-side request the label no longer places falls to the
        // default team, or is denied saying labels do not choose here.
        let p = Policy::from_yaml(&format!("default_team: a\n{teams}")).unwrap();
        assert_eq!(
            p.resolve_request_team(&request(false, Some("zed"))),
            Some((TeamName::parse("a").unwrap(), ResolvedBy::Default))
        );
        let p = Policy::from_yaml(teams).unwrap();
        let msg = p.decide(&request(false, Some("zed"))).denial_message();
        assert!(msg.contains("user `zed` is not in any team"), "{msg}");
        assert!(
            msg.contains("a `team` label does not choose the team of a server-side request"),
            "{msg}"
        );
    }

    #[test]
    fn team_from_label_takes_three_values() {
        let e = err("team_from_label: sometimes\n");
        assert!(
            e.contains("team_from_label")
                && e.contains("unknown variant `sometimes`")
                && e.contains("`client_side`, `always`, `never`"),
            "{e}"
        );
    }

    /// A config nested past [`crate::MAX_CONFIG_DEPTH`] is refused before
    /// serde builds anything, naming the place and the limit.
    #[test]
    fn deep_configs_are_refused_before_parsing() {
        for text in [
            format!("teams: {}{}\n", "[".repeat(64), "]".repeat(64)),
            format!("teams: {}{}\n", "[".repeat(100_000), "]".repeat(100_000)),
            format!("teams: {}\n", "{a: ".repeat(100_000)),
            format!("rules:\n  {}x\n", "- ".repeat(100_000)),
        ] {
            let e = err(&text);
            assert!(
                e.starts_with("line ")
                    && e.contains(", column ")
                    && e.contains("nested deeper than the limit of 64 levels"),
                "{e}"
            );
        }
        let e = err("teams: {ml: {users: [alice}\n");
        assert!(e.contains("YAML syntax error"), "{e}");
    }
}
