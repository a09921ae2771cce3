//! The compiled policy: teams with their quotas and budgets, rules with
//! their matchers and actions, and the lookup tables team resolution uses.
//! Built only by [`Policy::compile`] (in `compile.rs`), so everything here
//! has been validated; evaluation reads it and never mutates it.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use crate::decision::{Doc, ResourceField};
use crate::expr::{Expr, Uses};
use crate::ids::{GpuModel, RuleName, TeamName};
use crate::money::Usd;
use crate::price::PriceTable;
use crate::request::{Autostop, Door, LaunchRequest};

use super::spec::{BudgetMode, Mode, TeamFromLabel, UnknownVersion};

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
    /// Namespace and caps on a Kubernetes cluster.
    pub kubernetes: crate::kubernetes::KubernetesTeam,
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
    pub(super) fn parse(s: &str) -> Self {
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
    pub(super) by_name: HashMap<TeamName, usize>,
    pub(super) by_user: HashMap<String, usize>,
    pub(super) by_workspace: HashMap<String, usize>,
    pub(super) by_namespace: HashMap<String, usize>,
    pub(super) default_team: Option<usize>,
    pub(super) team_from_label: TeamFromLabel,
    pub(super) skypilot_user_claim: super::spec::SkypilotUserClaim,
    pub(crate) prices: PriceTable,
    pub(crate) rules: Vec<Rule>,
    pub(crate) env: Arc<cel::Env>,
    pub(crate) uses: Uses,
    /// The fields of `request`/`resource` worth building: those some CEL
    /// expression names (see `eval::field_mask`).
    pub(crate) cel_fields: u64,
    /// Who may do what (`role_bindings`).
    pub(crate) access: crate::access::Access,
}

impl std::fmt::Debug for Policy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Policy")
            .field("teams", &self.teams)
            .field("rules", &self.rules)
            .finish_non_exhaustive()
    }
}

impl Policy {
    /// Who may do what: the compiled `role_bindings`, asked by every door,
    /// endpoint and command ([`crate::access::Access::review`]).
    pub fn access(&self) -> &crate::access::Access {
        &self.access
    }

    /// A team by name.
    pub fn team(&self, name: &TeamName) -> Option<&Team> {
        self.by_name.get(name).and_then(|i| self.teams.get(*i))
    }

    /// Which field of a SkyPilot user record names the user
    /// (`identity.skypilot_user_claim`).
    pub fn skypilot_user_claim(&self) -> super::spec::SkypilotUserClaim {
        self.skypilot_user_claim
    }

    /// The team that owns Kubernetes namespace `namespace`
    /// (`teams.<t>.kubernetes.namespace`, default the team name).
    pub fn team_of_namespace(&self, namespace: &str) -> Option<&Team> {
        self.by_namespace
            .get(namespace)
            .and_then(|i| self.teams.get(*i))
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
