//! Who may do what: the five roles as data (roles × verbs × resources,
//! scoped to a team or to all teams), the bindings of the config's
//! `role_bindings` (to groups, or to users where there is no identity
//! provider), and the one function every door, endpoint and command asks:
//! [`Access::review`].
//!
//! | role | may | scope |
//! |---|---|---|
//! | admin | everything | all teams |
//! | team lead | launch and serve; create, read, rotate and revoke the team's keys; read and end the team's allocations; grant and read exceptions; read the team's spend, audit and metrics | own team |
//! | ML engineer | launch; read, change and end own launches and allocations; read own spend | own team |
//! | inference operator | serve (deploy, read, scale, update, tear down); read metrics | own team |
//! | viewer | read allocations, spend (budget state) and metrics | own team, or all teams when bound so |

use std::collections::HashMap;
use std::fmt;

use serde::Deserialize;

use crate::ids::TeamName;

/// A role.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Role {
    /// Everything, in every team.
    Admin,
    /// Runs a team.
    TeamLead,
    /// Launches jobs and clusters.
    MlEngineer,
    /// Runs inference endpoints.
    InferenceOperator,
    /// Reads (finance, management).
    Viewer,
}

impl Role {
    /// Every role, most powerful first.
    pub const ALL: [Role; 5] = [
        Role::Admin,
        Role::TeamLead,
        Role::MlEngineer,
        Role::InferenceOperator,
        Role::Viewer,
    ];

    /// The role as written in config (`team-lead`).
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::TeamLead => "team-lead",
            Role::MlEngineer => "ml-engineer",
            Role::InferenceOperator => "inference-operator",
            Role::Viewer => "viewer",
        }
    }

    /// Parses a role as written in config.
    pub fn parse(text: &str) -> Result<Role, String> {
        Role::ALL
            .into_iter()
            .find(|r| r.as_str() == text)
            .ok_or_else(|| {
                format!(
                    "`{}` is not a role; use one of {}",
                    text.chars().take(60).collect::<String>(),
                    Role::ALL.map(|r| format!("`{}`", r.as_str())).join(", ")
                )
            })
    }
}

impl serde::Serialize for Role {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl Role {
    /// Whether a holder of `self` may give `other` to a key it makes: an
    /// admin any role, a team lead any role up to team lead, nobody else
    /// (making keys is a team lead's and an admin's work).
    pub fn may_grant(self, other: Role) -> bool {
        match self {
            Role::Admin => true,
            Role::TeamLead => other != Role::Admin,
            _ => false,
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What is done.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Verb {
    /// Create (launch, deploy, make a key, grant an exception).
    Create,
    /// Read (list, show, report).
    Read,
    /// Change (scale or update an endpoint, rotate a key).
    Update,
    /// End (end an allocation, tear down an endpoint, revoke a key).
    Delete,
}

impl Verb {
    /// Every verb.
    pub const ALL: [Verb; 4] = [Verb::Create, Verb::Read, Verb::Update, Verb::Delete];

    /// The verb as written (`create`).
    pub fn as_str(self) -> &'static str {
        match self {
            Verb::Create => "create",
            Verb::Read => "read",
            Verb::Update => "update",
            Verb::Delete => "delete",
        }
    }

    /// Parses a verb.
    pub fn parse(text: &str) -> Result<Verb, String> {
        Verb::ALL
            .into_iter()
            .find(|v| v.as_str() == text)
            .ok_or_else(|| format!("`{text}` is not a verb; use create, read, update or delete"))
    }
}

/// What it is done to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Resource {
    /// Jobs and clusters (SkyPilot launch/exec/jobs, Vast instances).
    Launch,
    /// Inference endpoints (SkyPilot `serve.*`, Vast inference instances).
    Serve,
    /// Live allocations.
    Allocations,
    /// Warden keys.
    Keys,
    /// Spend, budgets and reports.
    Spend,
    /// The audit log.
    Audit,
    /// Time-limited exceptions.
    Exceptions,
    /// The policy (config).
    Policy,
    /// Metrics.
    Metrics,
}

impl Resource {
    /// Every resource.
    pub const ALL: [Resource; 9] = [
        Resource::Launch,
        Resource::Serve,
        Resource::Allocations,
        Resource::Keys,
        Resource::Spend,
        Resource::Audit,
        Resource::Exceptions,
        Resource::Policy,
        Resource::Metrics,
    ];

    /// The resource as written (`allocations`).
    pub fn as_str(self) -> &'static str {
        match self {
            Resource::Launch => "launch",
            Resource::Serve => "serve",
            Resource::Allocations => "allocations",
            Resource::Keys => "keys",
            Resource::Spend => "spend",
            Resource::Audit => "audit",
            Resource::Exceptions => "exceptions",
            Resource::Policy => "policy",
            Resource::Metrics => "metrics",
        }
    }

    /// Parses a resource.
    pub fn parse(text: &str) -> Result<Resource, String> {
        Resource::ALL
            .into_iter()
            .find(|r| r.as_str() == text)
            .ok_or_else(|| {
                format!(
                    "`{text}` is not a resource; use one of {}",
                    Resource::ALL.map(Resource::as_str).join(", ")
                )
            })
    }
}

/// How far a permission reaches within the team it is held in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reach {
    /// Everything of the team.
    Team,
    /// Only what the subject itself owns (its own allocations, its own
    /// spend).
    Own,
}

/// The permission table: (role, verb, resource, reach). An admin may
/// everything and is not listed.
const PERMISSIONS: &[(Role, Verb, Resource, Reach)] = {
    use Reach::{Own, Team};
    use Resource as R;
    use Role::{InferenceOperator as Io, MlEngineer as Ml, TeamLead as Lead, Viewer as View};
    use Verb::{Create as C, Delete as D, Read as Rd, Update as U};
    &[
        (Lead, C, R::Launch, Team),
        (Lead, Rd, R::Launch, Team),
        (Lead, U, R::Launch, Team),
        (Lead, D, R::Launch, Team),
        (Lead, C, R::Serve, Team),
        (Lead, Rd, R::Serve, Team),
        (Lead, U, R::Serve, Team),
        (Lead, D, R::Serve, Team),
        (Lead, Rd, R::Allocations, Team),
        (Lead, D, R::Allocations, Team),
        (Lead, C, R::Keys, Team),
        (Lead, Rd, R::Keys, Team),
        (Lead, U, R::Keys, Team),
        (Lead, D, R::Keys, Team),
        (Lead, Rd, R::Spend, Team),
        (Lead, Rd, R::Audit, Team),
        (Lead, C, R::Exceptions, Team),
        (Lead, Rd, R::Exceptions, Team),
        (Lead, Rd, R::Metrics, Team),
        (Ml, C, R::Launch, Team),
        (Ml, Rd, R::Launch, Own),
        (Ml, U, R::Launch, Own),
        (Ml, D, R::Launch, Own),
        (Ml, Rd, R::Allocations, Own),
        (Ml, D, R::Allocations, Own),
        (Ml, Rd, R::Spend, Own),
        (Io, C, R::Serve, Team),
        (Io, Rd, R::Serve, Team),
        (Io, U, R::Serve, Team),
        (Io, D, R::Serve, Team),
        (Io, Rd, R::Metrics, Team),
        (View, Rd, R::Allocations, Team),
        (View, Rd, R::Spend, Team),
        (View, Rd, R::Metrics, Team),
    ]
};

/// How far `role` may do `verb` on `resource` within a team it holds the
/// role in; `None`: not at all.
pub fn permits(role: Role, verb: Verb, resource: Resource) -> Option<Reach> {
    if role == Role::Admin {
        return Some(Reach::Team);
    }
    PERMISSIONS
        .iter()
        .find(|(r, v, res, _)| *r == role && *v == verb && *res == resource)
        .map(|(_, _, _, reach)| *reach)
}

/// Which teams a binding holds in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TeamScope {
    /// One team.
    One(TeamName),
    /// Every team (`teams: "*"`).
    All,
}

/// Who a binding names.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Member {
    /// Everyone in an identity provider's group.
    Group(String),
    /// One user (where there is no identity provider).
    User(String),
}

impl fmt::Display for Member {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Member::Group(g) => write!(f, "group `{g}`"),
            Member::User(u) => write!(f, "user `{u}`"),
        }
    }
}

/// One compiled `role_bindings` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Binding {
    /// Who.
    pub member: Member,
    /// The role.
    pub role: Role,
    /// Where.
    pub scope: TeamScope,
    /// Its place in `role_bindings`, for reasons.
    pub index: usize,
}

/// A `role_bindings` entry as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoleBindingSpec {
    /// An identity provider group.
    #[serde(default)]
    pub group: Option<String>,
    /// A user name (no identity provider).
    #[serde(default)]
    pub user: Option<String>,
    /// The role.
    pub role: String,
    /// One team.
    #[serde(default)]
    pub team: Option<String>,
    /// `"*"`: every team.
    #[serde(default)]
    pub teams: Option<String>,
}

/// Compiles `role_bindings`; problems are `(key path, message)`.
pub(crate) fn compile(
    specs: &[RoleBindingSpec],
    team_known: impl Fn(&TeamName) -> bool,
) -> (Vec<Binding>, Vec<(String, String)>) {
    let mut out: Vec<Binding> = Vec::new();
    let mut problems = Vec::new();
    for (i, s) in specs.iter().enumerate() {
        let path = format!("role_bindings[{i}]");
        let mut bad = |key: &str, msg: String| problems.push((format!("{path}{key}"), msg));
        let member = match (&s.group, &s.user) {
            (Some(g), None) if !g.trim().is_empty() => Some(Member::Group(g.trim().to_owned())),
            (None, Some(u)) if !u.trim().is_empty() => Some(Member::User(u.trim().to_owned())),
            (Some(_), Some(_)) => {
                bad("", "give `group` or `user`, not both".to_owned());
                None
            }
            _ => {
                bad(
                    "",
                    "name who the role is for: `group` (an identity provider group) or `user`"
                        .to_owned(),
                );
                None
            }
        };
        let role = Role::parse(&s.role).map_err(|e| bad(".role", e)).ok();
        let scope = match (&s.team, &s.teams) {
            (Some(t), None) => match TeamName::parse(t) {
                Ok(n) if team_known(&n) => Some(TeamScope::One(n)),
                Ok(_) => {
                    bad(".team", format!("team `{t}` is not defined under `teams`"));
                    None
                }
                Err(e) => {
                    bad(".team", e.to_string());
                    None
                }
            },
            (None, Some(all)) if all == "*" => Some(TeamScope::All),
            (None, Some(other)) => {
                bad(
                    ".teams",
                    format!("`{other}` is not `\"*\"`; name one team with `team`, or every team with `teams: \"*\"`"),
                );
                None
            }
            (Some(_), Some(_)) => {
                bad("", "give `team` or `teams: \"*\"`, not both".to_owned());
                None
            }
            (None, None) => {
                bad(
                    "",
                    "say where the role holds: `team: NAME`, or `teams: \"*\"` for every team"
                        .to_owned(),
                );
                None
            }
        };
        if let (Some(member), Some(role), Some(scope)) = (member, role, scope) {
            if let Some(first) = out
                .iter()
                .find(|b| b.member == member && b.role == role && b.scope == scope)
            {
                problems.push((
                    path,
                    format!(
                        "the same binding as role_bindings[{}] ({member}, `{role}`); remove one",
                        first.index
                    ),
                ));
                continue;
            }
            out.push(Binding {
                member,
                role,
                scope,
                index: i,
            });
        }
    }
    (out, problems)
}

/// Who asks: a user with the groups its identity provider vouches for, or
/// a Warden key with its role in its team.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Subject {
    /// The user name (or e-mail), when known.
    pub user: Option<String>,
    /// The identity provider's groups.
    pub groups: Vec<String>,
    /// A Warden key's own role and team (a key is bound by its creation,
    /// not by `role_bindings`).
    pub key: Option<(Role, TeamName)>,
}

/// The answer to "may S do V on R in team T?".
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Review {
    /// Whether it may.
    pub allowed: bool,
    /// Why, in words: the role and binding that allow it, or what is
    /// missing.
    pub reason: String,
}

/// The role a user listed under `teams.<t>.users` holds in that team when
/// no binding gives it a role there.
pub const MEMBER_ROLE: Role = Role::MlEngineer;

/// The compiled bindings: what [`Access::review`] reads.
#[derive(Debug, Clone, Default)]
pub struct Access {
    bindings: Vec<Binding>,
    /// `teams.<t>.users`: user → team.
    members: HashMap<String, TeamName>,
}

impl Access {
    /// Bindings compiled from config, and the users each team lists.
    pub fn new(bindings: Vec<Binding>, members: HashMap<String, TeamName>) -> Self {
        Access { bindings, members }
    }

    /// The same bindings with the users each team lists.
    pub fn with_members(self, members: HashMap<String, TeamName>) -> Self {
        Access { members, ..self }
    }

    /// The bindings.
    pub fn bindings(&self) -> &[Binding] {
        &self.bindings
    }

    /// Whether the config binds roles at all. Without `role_bindings`,
    /// users are not role-checked at the SkyPilot door (every user a team
    /// resolves may launch and serve, as before roles existed); keys always
    /// are, by their own role.
    pub fn checks_users(&self) -> bool {
        !self.bindings.is_empty()
    }

    /// The roles `subject` holds in `team`, each with what grants it.
    ///
    /// A key holds its own role in its own team (an admin key: in every
    /// team) and nothing else: `role_bindings` do not widen a key. A user
    /// holds the roles its bindings give (by user name, or by any of its
    /// groups); a user listed under `teams.<t>.users` that no binding gives
    /// a role in `t` holds [`MEMBER_ROLE`] there.
    pub fn roles_in(&self, subject: &Subject, team: &TeamName) -> Vec<(Role, String)> {
        let mut out = Vec::new();
        if let Some((role, key_team)) = &subject.key {
            if *role == Role::Admin || key_team == team {
                out.push((
                    *role,
                    format!("its key's role `{role}` in team `{key_team}`"),
                ));
            }
            return out;
        }
        for b in &self.bindings {
            let holds = match &b.scope {
                TeamScope::All => true,
                TeamScope::One(t) => t == team,
            } || b.role == Role::Admin;
            let names = match &b.member {
                Member::Group(g) => subject.groups.iter().any(|s| s == g),
                Member::User(u) => subject.user.as_deref() == Some(u.as_str()),
            };
            if holds && names {
                out.push((
                    b.role,
                    format!("role_bindings[{}] ({}, `{}`)", b.index, b.member, b.role),
                ));
            }
        }
        if out.is_empty() {
            if let Some(user) = &subject.user {
                if self.members.get(user) == Some(team) {
                    out.push((
                        MEMBER_ROLE,
                        format!("being listed under `teams.{team}.users` (no role binding names it there)"),
                    ));
                }
            }
        }
        out
    }

    /// May `subject` do `verb` on `resource` in `team`? `owner` is who owns
    /// the thing (an allocation's user), for permissions that reach only
    /// the subject's own things; `None` when the question is about the
    /// team as a whole (a launch, a report of the team).
    pub fn review(
        &self,
        subject: &Subject,
        verb: Verb,
        resource: Resource,
        team: &TeamName,
        owner: Option<&str>,
    ) -> Review {
        let roles = self.roles_in(subject, team);
        let mut own_only = None;
        for (role, why) in &roles {
            match permits(*role, verb, resource) {
                Some(Reach::Team) => {
                    return Review {
                        allowed: true,
                        reason: format!(
                            "allowed: `{role}` may {} {} in team `{team}`, by {why}",
                            verb.as_str(),
                            resource.as_str()
                        ),
                    }
                }
                Some(Reach::Own) => {
                    let mine = match (owner, subject.user.as_deref()) {
                        (None, _) => false,
                        (Some(o), Some(u)) => o == u,
                        (Some(_), None) => false,
                    };
                    if mine {
                        return Review {
                            allowed: true,
                            reason: format!(
                                "allowed: `{role}` may {} its own {} in team `{team}`, by {why}",
                                verb.as_str(),
                                resource.as_str()
                            ),
                        };
                    }
                    own_only.get_or_insert(*role);
                }
                None => {}
            }
        }
        let who = subject
            .user
            .as_deref()
            .map(|u| format!("`{u}`"))
            .unwrap_or_else(|| "this caller".to_owned());
        let reason = match (roles.is_empty(), own_only) {
            (true, _) => format!(
                "denied: {who} has no role in team `{team}`; ask a platform admin for a role binding"
            ),
            (false, Some(role)) => format!(
                "denied: `{role}` may {} only its own {} in team `{team}`",
                verb.as_str(),
                resource.as_str()
            ),
            (false, None) => format!(
                "denied: {who} is {} in team `{team}`, and none of those may {} {}",
                roles
                    .iter()
                    .map(|(r, _)| format!("`{r}`"))
                    .collect::<Vec<_>>()
                    .join(", "),
                verb.as_str(),
                resource.as_str()
            ),
        };
        Review {
            allowed: false,
            reason,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn team(t: &str) -> TeamName {
        TeamName::parse(t).unwrap()
    }

    fn access(yaml: &str) -> (Access, Vec<(String, String)>) {
        let specs: Vec<RoleBindingSpec> = serde_norway::from_str(yaml).unwrap();
        let (b, p) = compile(&specs, |t| ["ml", "cv"].contains(&t.as_str()));
        let members = [("mel".to_owned(), team("ml"))].into_iter().collect();
        (Access::new(b, members), p)
    }

    /// The roles table of the module documentation, cell by cell: every
    /// role × verb × resource, in its own team.
    #[test]
    fn the_table_is_the_roles_table() {
        use Resource as R;
        use Verb::*;
        let allowed = |role, verb, res| permits(role, verb, res).is_some();
        for verb in Verb::ALL {
            for res in Resource::ALL {
                assert!(allowed(Role::Admin, verb, res));
            }
        }
        // Viewers only read, and only allocations, spend and metrics.
        for verb in Verb::ALL {
            for res in Resource::ALL {
                let want = verb == Read && [R::Allocations, R::Spend, R::Metrics].contains(&res);
                assert_eq!(allowed(Role::Viewer, verb, res), want, "{verb:?} {res:?}");
            }
        }
        // An inference operator serves, never launches.
        assert!(allowed(Role::InferenceOperator, Create, R::Serve));
        assert!(allowed(Role::InferenceOperator, Update, R::Serve));
        assert!(!allowed(Role::InferenceOperator, Create, R::Launch));
        assert!(!allowed(Role::InferenceOperator, Read, R::Spend));
        // An ML engineer launches; its allocations and spend are its own.
        assert_eq!(
            permits(Role::MlEngineer, Create, R::Launch),
            Some(Reach::Team)
        );
        assert_eq!(
            permits(Role::MlEngineer, Delete, R::Allocations),
            Some(Reach::Own)
        );
        assert_eq!(permits(Role::MlEngineer, Read, R::Spend), Some(Reach::Own));
        assert!(!allowed(Role::MlEngineer, Create, R::Serve));
        assert!(!allowed(Role::MlEngineer, Create, R::Keys));
        // A team lead runs the team but not the policy.
        for (verb, res) in [
            (Create, R::Keys),
            (Delete, R::Keys),
            (Delete, R::Allocations),
            (Read, R::Audit),
            (Create, R::Exceptions),
        ] {
            assert!(allowed(Role::TeamLead, verb, res), "{verb:?} {res:?}");
        }
        assert!(!allowed(Role::TeamLead, Update, R::Policy));
    }

    #[test]
    fn reviews_follow_bindings_to_groups_users_and_keys() {
        let (a, problems) = access(
            r#"
- {group: ml-leads, role: team-lead, team: ml}
- {group: finance, role: viewer, teams: "*"}
- {user: alice, role: ml-engineer, team: ml}
- {group: platform, role: admin, teams: "*"}
"#,
        );
        assert!(problems.is_empty(), "{problems:?}");
        let lead = Subject {
            user: Some("lee".into()),
            groups: vec!["ml-leads".into()],
            key: None,
        };
        let r = a.review(
            &lead,
            Verb::Delete,
            Resource::Allocations,
            &team("ml"),
            Some("bob"),
        );
        assert!(r.allowed, "{}", r.reason);
        assert!(
            r.reason
                .contains("role_bindings[0] (group `ml-leads`, `team-lead`)"),
            "{}",
            r.reason
        );
        // Other team: no role there.
        let r = a.review(
            &lead,
            Verb::Delete,
            Resource::Allocations,
            &team("cv"),
            Some("bob"),
        );
        assert!(!r.allowed);
        assert!(
            r.reason.contains("has no role in team `cv`"),
            "{}",
            r.reason
        );

        let fin = Subject {
            user: Some("fay".into()),
            groups: vec!["finance".into()],
            key: None,
        };
        assert!(
            a.review(&fin, Verb::Read, Resource::Spend, &team("cv"), None)
                .allowed
        );
        let r = a.review(&fin, Verb::Create, Resource::Launch, &team("cv"), None);
        assert!(!r.allowed);
        assert!(
            r.reason
                .contains("is `viewer` in team `cv`, and none of those may create launch"),
            "{}",
            r.reason
        );

        let alice = Subject {
            user: Some("alice".into()),
            groups: vec![],
            key: None,
        };
        assert!(
            a.review(&alice, Verb::Create, Resource::Launch, &team("ml"), None)
                .allowed
        );
        assert!(
            a.review(
                &alice,
                Verb::Delete,
                Resource::Allocations,
                &team("ml"),
                Some("alice")
            )
            .allowed
        );
        let r = a.review(
            &alice,
            Verb::Delete,
            Resource::Allocations,
            &team("ml"),
            Some("bob"),
        );
        assert!(!r.allowed);
        assert!(
            r.reason.contains("only its own allocations"),
            "{}",
            r.reason
        );

        let key = Subject {
            user: None,
            groups: vec![],
            key: Some((Role::Viewer, team("cv"))),
        };
        assert!(
            a.review(&key, Verb::Read, Resource::Allocations, &team("cv"), None)
                .allowed
        );
        assert!(
            !a.review(&key, Verb::Create, Resource::Launch, &team("cv"), None)
                .allowed
        );
        assert!(
            !a.review(&key, Verb::Read, Resource::Allocations, &team("ml"), None)
                .allowed
        );

        let admin = Subject {
            user: Some("root".into()),
            groups: vec!["platform".into()],
            key: None,
        };
        assert!(
            a.review(&admin, Verb::Update, Resource::Policy, &team("ml"), None)
                .allowed
        );
    }

    #[test]
    fn bad_bindings_are_named_by_path() {
        let (_, problems) = access(
            r#"
- {group: a, role: overlord, team: ml}
- {group: a, user: b, role: viewer, team: ml}
- {group: a, role: viewer, team: nlp}
- {group: a, role: viewer, teams: some}
- {group: a, role: viewer}
- {group: f, role: viewer, team: ml}
- {group: f, role: viewer, team: ml}
"#,
        );
        let text: Vec<String> = problems.iter().map(|(p, m)| format!("{p}: {m}")).collect();
        let has = |needle: &str| text.iter().any(|l| l.contains(needle));
        assert!(
            has("role_bindings[0].role: `overlord` is not a role"),
            "{text:?}"
        );
        assert!(
            has("role_bindings[1]: give `group` or `user`, not both"),
            "{text:?}"
        );
        assert!(
            has("role_bindings[2].team: team `nlp` is not defined"),
            "{text:?}"
        );
        assert!(
            has("role_bindings[3].teams: `some` is not `\"*\"`"),
            "{text:?}"
        );
        assert!(
            has("role_bindings[4]: say where the role holds"),
            "{text:?}"
        );
        assert!(
            has("role_bindings[6]: the same binding as role_bindings[5]"),
            "{text:?}"
        );
        assert_eq!(problems.len(), 6, "{text:?}");
    }

    mod decisions {
        use crate::access::Role;
        use crate::{Door, LaunchRequest, Policy, Verdict};

        const BOUND: &str = r#"
default_team: ml
teams:
  ml: {users: [root]}
  cv: {users: [carl]}
role_bindings:
  - {user: fay, role: viewer, team: ml}
  - {user: ivy, role: inference-operator, team: ml}
  - {user: lee, role: team-lead, team: ml}
"#;

        fn request(name: &str, user: Option<&str>) -> LaunchRequest {
            let mut r = LaunchRequest::new(Door::Skypilot, name);
            r.principal.user = user.map(str::to_owned);
            r
        }

        fn verdict(policy: &Policy, r: &LaunchRequest) -> (Verdict, String) {
            let d = policy.decide(r);
            let text = d
                .reasons
                .iter()
                .map(|r| format!("{}: {}", r.rule.as_str(), r.message))
                .collect::<Vec<_>>()
                .join("; ");
            (d.verdict, text)
        }

        /// The core asks the access model of every launch: a viewer may not
        /// launch, an inference operator may serve but not launch, an ML
        /// engineer (here by being listed in the team) may launch but not
        /// serve, a team lead both; someone with no role in the team it
        /// resolves to may do neither.
        #[test]
        fn launches_are_judged_by_the_subjects_role() {
            let p = Policy::from_yaml(BOUND).unwrap();
            let cases = [
                (
                    "launch",
                    "fay",
                    false,
                    "`fay` is `viewer` in team `ml`, and none of those may create launch",
                ),
                ("jobs.launch", "fay", false, "may create launch"),
                ("serve.up", "fay", false, "may create serve"),
                ("launch", "ivy", false, "`inference-operator`"),
                ("serve.up", "ivy", true, ""),
                ("serve.update", "ivy", true, ""),
                ("launch", "root", true, ""),
                ("exec", "root", true, ""),
                ("serve.up", "root", false, "`ml-engineer`"),
                ("launch", "lee", true, ""),
                ("serve.up", "lee", true, ""),
                // Resolved by `default_team`, listed nowhere, bound nowhere.
                ("launch", "bob", false, "`bob` has no role in team `ml`"),
                // Allocating nothing by itself: not asked.
                ("validate", "fay", true, ""),
                ("optimize", "bob", true, ""),
                // Warden's decision of the user's request covers these.
                ("jobs.launch_controller", "fay", true, ""),
            ];
            for (name, user, allowed, needle) in cases {
                let (v, text) = verdict(&p, &request(name, Some(user)));
                assert_eq!(v == Verdict::Allow, allowed, "{name} by {user}: {text}");
                if !allowed {
                    assert!(text.starts_with("access: denied: "), "{text}");
                    assert!(text.contains(needle), "{name} by {user}: {text}");
                    assert!(text.contains("role_bindings"), "{text}");
                }
            }
        }

        /// A user bound by name in one team (and listed in none) is in
        /// that team: its request resolves there and is judged by its role,
        /// not refused as unresolved. Bound in two teams, it is in neither.
        #[test]
        fn a_user_bound_in_one_team_resolves_to_it() {
            let p = Policy::from_yaml(
                "teams:\n  ml: {users: [root]}\n  cv: {}\nrole_bindings:\n  - {user: fay, role: viewer, team: ml}\n  - {user: ivy, role: ml-engineer, team: ml}\n  - {user: ivy, role: ml-engineer, team: cv}\n  - {user: root, role: viewer, team: cv}\n",
            )
            .unwrap();
            let (v, text) = verdict(&p, &request("launch", Some("fay")));
            assert_eq!(v, Verdict::Deny);
            assert!(
                text.starts_with("access: denied: `fay` is `viewer` in team `ml`"),
                "{text}"
            );
            let (_, text) = verdict(&p, &request("launch", Some("ivy")));
            assert!(text.starts_with("team.resolve:"), "{text}");
            // Listed in ml's users: stays in ml (an ML engineer there).
            assert_eq!(
                verdict(&p, &request("launch", Some("root"))).0,
                Verdict::Allow
            );
        }

        /// Without `role_bindings`, users are not role-checked (as before
        /// roles); a key is always judged by its own role, and bindings do
        /// not widen it.
        #[test]
        fn keys_are_judged_by_their_role_with_or_without_bindings() {
            for yaml in ["teams:\n  ml: {users: [root]}\n", BOUND] {
                let p = Policy::from_yaml(yaml).unwrap();
                let key = |role: Role, labels: &[(&str, &str)]| {
                    let mut r = LaunchRequest::new(Door::Vast, "launch");
                    r.principal.team = Some("ml".into());
                    r.principal.user = Some("lee".into());
                    r.principal.role = Some(role);
                    r.labels = labels
                        .iter()
                        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                        .collect();
                    verdict(&p, &r)
                };
                let inference = [("workload", "inference")];
                let (v, text) = key(Role::Viewer, &[]);
                assert_eq!(v, Verdict::Deny, "{text}");
                assert!(text.contains("is `viewer` in team `ml`"), "{text}");
                assert_eq!(key(Role::MlEngineer, &[]).0, Verdict::Allow);
                assert_eq!(key(Role::MlEngineer, &inference).0, Verdict::Deny);
                assert_eq!(key(Role::InferenceOperator, &inference).0, Verdict::Allow);
                assert_eq!(key(Role::InferenceOperator, &[]).0, Verdict::Deny);
                assert_eq!(key(Role::TeamLead, &inference).0, Verdict::Allow);
            }
            let open = Policy::from_yaml("teams:\n  ml: {users: [root]}\n").unwrap();
            assert_eq!(
                verdict(&open, &request("serve.up", Some("root"))).0,
                Verdict::Allow
            );
        }

        #[test]
        fn only_admins_and_team_leads_make_keys_up_to_their_own_role() {
            use Role::*;
            assert!(Role::ALL.iter().all(|r| Admin.may_grant(*r)));
            assert!([TeamLead, MlEngineer, InferenceOperator, Viewer]
                .iter()
                .all(|r| TeamLead.may_grant(*r)));
            assert!(!TeamLead.may_grant(Admin));
            for r in [MlEngineer, InferenceOperator, Viewer] {
                assert!(Role::ALL.iter().all(|o| !r.may_grant(*o)), "{r}");
            }
        }
    }
}
