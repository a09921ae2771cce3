//! `warden access can-i` and `warden access who-can`: the core's
//! permission model ([`warden_core::access`]) over the config's
//! `role_bindings`, asked from the command line.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Subcommand;
use warden_core::access::{Member, Resource, Role, Subject, TeamScope, Verb};
use warden_core::TeamName;
use warden_server::config::load_policy;

use crate::table::{Align, Table};

/// `warden access ...`.
#[derive(Subcommand)]
pub enum AccessCommand {
    /// May this user (with these groups) do VERB on RESOURCE in TEAM?
    /// Prints the answer and why; exit 0 when allowed, 1 when denied.
    CanI {
        /// Config file (its `role_bindings` and `teams`).
        #[arg(long)]
        config: PathBuf,
        /// The user (name or e-mail).
        #[arg(long)]
        user: Option<String>,
        /// An identity provider group of the user (repeatable).
        #[arg(long = "group")]
        groups: Vec<String>,
        /// The team.
        #[arg(long)]
        team: String,
        /// For permissions on one's own things: who owns the thing (an
        /// allocation's user).
        #[arg(long)]
        owner: Option<String>,
        /// `create`, `read`, `update` or `delete`.
        verb: String,
        /// `launch`, `serve`, `allocations`, `keys`, `spend`, `audit`,
        /// `exceptions`, `policy` or `metrics`.
        resource: String,
    },
    /// Which bindings may do VERB on RESOURCE in TEAM (and how far: the
    /// team's things, or only their own).
    WhoCan {
        /// Config file.
        #[arg(long)]
        config: PathBuf,
        /// The team.
        #[arg(long)]
        team: String,
        /// The verb.
        verb: String,
        /// The resource.
        resource: String,
    },
}

/// Runs an access command.
pub fn run(command: AccessCommand) -> anyhow::Result<ExitCode> {
    match command {
        AccessCommand::CanI {
            config,
            user,
            groups,
            team,
            owner,
            verb,
            resource,
        } => {
            let policy = load_policy(&config).map_err(anyhow::Error::msg)?;
            let (team, verb, resource) = parse(&policy, &team, &verb, &resource)?;
            let subject = Subject {
                user,
                groups,
                key: None,
            };
            let review = policy
                .access()
                .review(&subject, verb, resource, &team, owner.as_deref());
            say!("{}", if review.allowed { "yes" } else { "no" });
            say!("{}", review.reason);
            Ok(if review.allowed {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
        AccessCommand::WhoCan {
            config,
            team,
            verb,
            resource,
        } => {
            let policy = load_policy(&config).map_err(anyhow::Error::msg)?;
            let (team, verb, resource) = parse(&policy, &team, &verb, &resource)?;
            let mut table = Table::new(&[
                ("member", Align::Left),
                ("role", Align::Left),
                ("where", Align::Left),
                ("reach", Align::Left),
                ("binding", Align::Left),
            ]);
            let mut n = 0;
            for b in policy.access().bindings() {
                let holds = b.role == Role::Admin
                    || match &b.scope {
                        TeamScope::All => true,
                        TeamScope::One(t) => *t == team,
                    };
                let Some(reach) = warden_core::access::permits(b.role, verb, resource) else {
                    continue;
                };
                if !holds {
                    continue;
                }
                n += 1;
                table.row([
                    match &b.member {
                        Member::Group(g) => format!("group {g}"),
                        Member::User(u) => format!("user {u}"),
                    },
                    b.role.to_string(),
                    match &b.scope {
                        TeamScope::All => "every team".to_owned(),
                        TeamScope::One(t) => t.to_string(),
                    },
                    match reach {
                        warden_core::access::Reach::Team => "the team's".to_owned(),
                        warden_core::access::Reach::Own => "their own".to_owned(),
                    },
                    format!("role_bindings[{}]", b.index),
                ]);
            }
            for line in table.lines() {
                say!("{line}");
            }
            say!(
                "{n} binding(s) may {} {} in team `{team}`",
                verb.as_str(),
                resource.as_str()
            );
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn parse(
    policy: &warden_core::Policy,
    team: &str,
    verb: &str,
    resource: &str,
) -> anyhow::Result<(TeamName, Verb, Resource)> {
    let team = TeamName::parse(team).map_err(|e| anyhow::anyhow!("--team: {e}"))?;
    if policy.team(&team).is_none() {
        anyhow::bail!("--team: team `{team}` is not defined under `teams`");
    }
    let verb = Verb::parse(verb).map_err(anyhow::Error::msg)?;
    let resource = Resource::parse(resource).map_err(anyhow::Error::msg)?;
    Ok((team, verb, resource))
}
