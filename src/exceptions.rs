//! `warden exceptions ...`: time-limited exceptions in the store named by
//! the config (see `warden_core::exception`). Run here, with direct access
//! to the store, a grant is an admin's: any rule of the policy, for at most
//! `exceptions.max_hours`.

use std::path::Path;
use std::process::ExitCode;

use clap::Subcommand;
use warden_core::TeamName;
use warden_server::config::ExceptionSettings;
use warden_store::{NewException, StoredException, UnixMicros};

use crate::admin::{now, runtime};
use crate::keys::{open, parse_duration};
use crate::table::{Align, Table};

/// The longest reason kept.
const MAX_REASON_CHARS: usize = 500;

/// `warden exceptions ...`.
#[derive(Subcommand)]
pub enum ExceptionsCommand {
    /// Let a team (or one user of it) go past one rule for a while; the
    /// denial is lifted, named in the decision and the audit record.
    Grant {
        /// Config file (its `storage` names the store; the team and the
        /// rule must be in it).
        #[arg(long, required_unless_present = "server")]
        config: Option<std::path::PathBuf>,
        /// Use the admin API of this running Warden instead of the store,
        /// with the token in `WARDEN_TOKEN` (see `warden keys --server`).
        #[arg(long, conflicts_with = "config")]
        server: Option<String>,
        /// The team.
        #[arg(long)]
        team: String,
        /// Only this user of the team (default: every user of it).
        #[arg(long)]
        user: Option<String>,
        /// The rule to lift: a rule's `name`, or a team limit such as
        /// `team.max_gpus_per_launch`.
        #[arg(long)]
        rule: String,
        /// How long (`12h`, `3d`), at most `exceptions.max_hours`.
        #[arg(long = "for")]
        duration: String,
        /// Why (shown in every decision it lifts; required).
        #[arg(long)]
        reason: String,
    },
    /// List exceptions, newest first, with their state.
    List {
        /// Config file.
        #[arg(long, required_unless_present = "server")]
        config: Option<std::path::PathBuf>,
        /// Use the admin API of this running Warden instead of the store,
        /// with the token in `WARDEN_TOKEN` (see `warden keys --server`).
        #[arg(long, conflicts_with = "config")]
        server: Option<String>,
        /// Only this team.
        #[arg(long)]
        team: Option<String>,
    },
    /// End an exception now.
    Revoke {
        /// Config file.
        #[arg(long, required_unless_present = "server")]
        config: Option<std::path::PathBuf>,
        /// Use the admin API of this running Warden instead of the store,
        /// with the token in `WARDEN_TOKEN` (see `warden keys --server`).
        #[arg(long, conflicts_with = "config")]
        server: Option<String>,
        /// Its id (from `list`).
        id: i64,
    },
}

/// Runs a `warden exceptions` subcommand.
pub fn run(command: ExceptionsCommand) -> anyhow::Result<ExitCode> {
    match command {
        ExceptionsCommand::Grant {
            server: Some(server),
            team,
            user,
            rule,
            duration,
            reason,
            ..
        } => {
            let d = parse_duration(&duration).map_err(|e| anyhow::anyhow!("--for: {e}"))?;
            let hours = d.as_secs().div_ceil(3600);
            if hours == 0 {
                anyhow::bail!("--for: over --server an exception lasts whole hours (`1h` or more)");
            }
            let body = serde_json::json!({"team": team, "user": user, "rule": rule, "hours": hours, "reason": reason});
            crate::remote::exceptions_grant(&server, body)
        }
        ExceptionsCommand::Grant {
            config: Some(config),
            team,
            user,
            rule,
            duration,
            reason,
            ..
        } => grant(&config, &team, user.as_deref(), &rule, &duration, &reason),
        ExceptionsCommand::List {
            server: Some(server),
            team,
            ..
        } => crate::remote::exceptions_list(&server, team.as_deref()),
        ExceptionsCommand::List {
            config: Some(config),
            team,
            ..
        } => list(&config, team.as_deref()),
        ExceptionsCommand::Revoke {
            server: Some(server),
            id,
            ..
        } => crate::remote::exceptions_revoke(&server, id),
        ExceptionsCommand::Revoke {
            config: Some(config),
            id,
            ..
        } => revoke(&config, id),
        _ => anyhow::bail!("give --config FILE (the store) or --server URL (the admin API)"),
    }
}

fn grant(
    config: &Path,
    team: &str,
    user: Option<&str>,
    rule: &str,
    duration: &str,
    reason: &str,
) -> anyhow::Result<ExitCode> {
    let now = now();
    let team = TeamName::parse(team.trim()).map_err(|e| anyhow::anyhow!("--team: {e}"))?;
    let length = parse_duration(duration).map_err(|e| anyhow::anyhow!("--for: {e}"))?;
    let reason = reason.trim();
    if reason.is_empty() {
        anyhow::bail!("--reason: say why (it is shown in every decision the exception lifts)");
    }
    if reason.chars().count() > MAX_REASON_CHARS {
        anyhow::bail!("--reason: longer than {MAX_REASON_CHARS} characters");
    }
    if let Some(u) = user {
        if u.trim().is_empty() || u.chars().count() > 128 || u.chars().any(char::is_control) {
            anyhow::bail!("--user: a user name of 1 to 128 characters, no control characters");
        }
    }
    runtime()?.block_on(async {
        let (cfg, store) = open(config).await?;
        let granted = async {
            if cfg.policy.team(&team).is_none() {
                anyhow::bail!("--team: team `{team}` is not in {}", config.display());
            }
            ExceptionSettings::liftable(&cfg.policy, rule.trim())
                .map_err(|e| anyhow::anyhow!("--rule: {e}"))?;
            if length.is_zero() || length > cfg.settings.exceptions.max {
                anyhow::bail!(
                    "--for: `{duration}` is not between 1 second and `exceptions.max_hours` ({} hours)",
                    cfg.settings.exceptions.max.as_secs() / 3600
                );
            }
            let until = UnixMicros::from_micros(
                now.micros()
                    .saturating_add(i64::try_from(length.as_micros()).unwrap_or(i64::MAX)),
            );
            let new = NewException {
                team: team.clone(),
                user: user.map(|u| u.trim().to_owned()),
                rule: rule.trim().to_owned(),
                reason: reason.to_owned(),
                granted_by: "cli".to_owned(),
                until,
            };
            Ok(store.grant_exception(new, now).await?)
        }
        .await;
        store.close().await;
        let x = granted?;
        say!(
            "granted exception {}: team `{}`{} may go past `{}` until {} ({})",
            x.id,
            x.team,
            x.user
                .as_deref()
                .map(|u| format!(", user `{u}`,"))
                .unwrap_or_default(),
            x.rule,
            x.until,
            x.reason
        );
        Ok(ExitCode::SUCCESS)
    })
}

fn state(x: &StoredException, now: UnixMicros) -> &'static str {
    if x.revoked.is_some() {
        "revoked"
    } else if x.until <= now {
        "expired"
    } else if x.active_at(now) {
        "active"
    } else {
        "pending"
    }
}

fn list(config: &Path, team: Option<&str>) -> anyhow::Result<ExitCode> {
    let team = team
        .map(|t| TeamName::parse(t.trim()))
        .transpose()
        .map_err(|e| anyhow::anyhow!("--team: {e}"))?;
    let now = now();
    runtime()?.block_on(async {
        let (_, store) = open(config).await?;
        // Record the expiries that are due, so the audit trail has them.
        let listed = async {
            store.expire_exceptions(now).await?;
            store.list_exceptions(team.as_ref()).await
        }
        .await;
        store.close().await;
        let all = listed?;
        let mut table = Table::new(&[
            ("id", Align::Right),
            ("team", Align::Left),
            ("user", Align::Left),
            ("rule", Align::Left),
            ("until", Align::Left),
            ("state", Align::Left),
            ("reason", Align::Left),
        ]);
        for x in &all {
            table.row([
                x.id.to_string(),
                x.team.to_string(),
                x.user.clone().unwrap_or_else(|| "-".to_owned()),
                x.rule.clone(),
                x.until.to_string(),
                state(x, now).to_owned(),
                x.reason.clone(),
            ]);
        }
        for line in table.lines() {
            say!("{line}");
        }
        say!("{} exception(s)", all.len());
        Ok(ExitCode::SUCCESS)
    })
}

fn revoke(config: &Path, id: i64) -> anyhow::Result<ExitCode> {
    runtime()?.block_on(async {
        let (_, store) = open(config).await?;
        let revoked = store.revoke_exception(id, now()).await;
        store.close().await;
        let x = revoked?;
        say!(
            "revoked exception {} (team `{}`, rule `{}`)",
            x.id,
            x.team,
            x.rule
        );
        Ok(ExitCode::SUCCESS)
    })
}
