//! `warden keys ...`: team API keys in the store named by the config.
//!
//! A new key is printed once, alone on stdout (`KEY=$(warden keys create
//! ...)` captures just the key); what it is for goes to stderr. Nothing
//! prints a key again: the store keeps only its hash.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use clap::Subcommand;
use warden_core::access::Role;
use warden_core::TeamName;
use warden_server::config::{load_config, Config};
use warden_store::{
    ApiKey, ApiKeyId, IssuedKey, KeyName, KeyState, KeyUser, NewKey, RotatedExpiry, Store,
    UnixMicros,
};

use crate::admin::{now, runtime};
use crate::table::{Align, Table};

/// `warden keys ...`.
#[derive(Subcommand)]
pub enum KeysCommand {
    /// Create a key for a team and print it once (stdout); the store keeps
    /// only its hash.
    Create {
        /// Config file (its `storage` names the store; the team must be in
        /// its `teams`).
        #[arg(long, required_unless_present = "server")]
        config: Option<PathBuf>,
        /// Use the admin API of this running Warden (`https://...`, or
        /// `http://` to this machine) instead of the store, with the token in
        /// `WARDEN_TOKEN`; what may be done is then the token's role's.
        #[arg(long, conflicts_with = "config")]
        server: Option<String>,
        /// The team the key acts for.
        #[arg(long)]
        team: String,
        /// The user it acts as (default: a team-wide key).
        #[arg(long)]
        user: Option<String>,
        /// What it may do in its team: `ml-engineer` (launch; its own
        /// allocations), `inference-operator` (inference endpoints),
        /// `viewer` (read only), `team-lead`, or `admin` (every team; made
        /// here only while no active admin key exists, for bootstrap).
        #[arg(long, default_value = "ml-engineer")]
        role: String,
        /// How long it works (`90d`, `12h`, `2w`), a UTC date
        /// (`2027-01-01`), or `never` (default: the config's
        /// `keys.max_age_days`, 90 days unless set).
        #[arg(long)]
        expires: Option<String>,
        /// A label for people, e.g. `ci` or `alice laptop`.
        #[arg(long)]
        name: Option<String>,
    },
    /// List keys: ids, teams, users, names, instants, state; never secrets.
    List {
        /// Config file (its `storage` names the store).
        #[arg(long, required_unless_present = "server")]
        config: Option<PathBuf>,
        /// Use the admin API of this running Warden (`https://...`, or
        /// `http://` to this machine) instead of the store, with the token in
        /// `WARDEN_TOKEN`; what may be done is then the token's role's.
        #[arg(long, conflicts_with = "config")]
        server: Option<String>,
        /// Only this team.
        #[arg(long)]
        team: Option<String>,
    },
    /// Revoke a key now.
    Revoke {
        /// Config file (its `storage` names the store).
        #[arg(long, required_unless_present = "server")]
        config: Option<PathBuf>,
        /// Use the admin API of this running Warden (`https://...`, or
        /// `http://` to this machine) instead of the store, with the token in
        /// `WARDEN_TOKEN`; what may be done is then the token's role's.
        #[arg(long, conflicts_with = "config")]
        server: Option<String>,
        /// The key's id (from `list`).
        id: String,
    },
    /// Replace a key: print a new one once (same team, user and name); the
    /// old one keeps working for the grace period, then is expired.
    Rotate {
        /// Config file (its `storage` names the store).
        #[arg(long)]
        config: PathBuf,
        /// The key's id (from `list`).
        id: String,
        /// How long the old key keeps working (`24h`, `30m`, `0`).
        #[arg(long, default_value = "24h")]
        grace: String,
        /// The new key's expiry, as for `create` (default: as long a
        /// lifetime as the old key had).
        #[arg(long)]
        expires: Option<String>,
    },
}

/// Runs a `warden keys` subcommand.
pub fn run(command: KeysCommand) -> anyhow::Result<ExitCode> {
    match command {
        KeysCommand::Create {
            server: Some(server),
            team,
            user,
            role,
            expires,
            name,
            ..
        } => {
            let (never, days) = match expires.as_deref().map(str::trim) {
                None => (false, None),
                Some("never") => (true, None),
                Some(e) => {
                    let d = parse_duration(e).map_err(|e| anyhow::anyhow!("--expires: {e}"))?;
                    let days = d.as_secs().div_ceil(86_400);
                    if days == 0 {
                        anyhow::bail!("--expires: over --server a key lives at least a day (`1d`)");
                    }
                    (false, Some(days))
                }
            };
            let body = serde_json::json!({
                "team": team, "role": role, "user": user, "name": name,
                "never_expires": never, "expires_days": days,
            });
            crate::remote::keys_create(&server, body)
        }
        KeysCommand::Create {
            config: Some(config),
            team,
            user,
            role,
            expires,
            name,
            ..
        } => create(
            &config,
            &team,
            user.as_deref(),
            &role,
            expires.as_deref(),
            name.as_deref(),
        ),
        KeysCommand::List {
            server: Some(server),
            team,
            ..
        } => crate::remote::keys_list(&server, team.as_deref()),
        KeysCommand::List {
            config: Some(config),
            team,
            ..
        } => list(&config, team.as_deref()),
        KeysCommand::Revoke {
            server: Some(server),
            id,
            ..
        } => crate::remote::keys_revoke(&server, &id),
        KeysCommand::Revoke {
            config: Some(config),
            id,
            ..
        } => revoke(&config, &id),
        KeysCommand::Create { .. } | KeysCommand::List { .. } | KeysCommand::Revoke { .. } => {
            anyhow::bail!("give --config FILE (the store) or --server URL (the admin API)")
        }
        KeysCommand::Rotate {
            config,
            id,
            grace,
            expires,
        } => rotate(&config, &id, &grace, expires.as_deref()),
    }
}

/// A length of time: a whole number with a unit `s`, `m`, `h`, `d` or `w`,
/// or `0`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let t = text.trim();
    if t == "0" {
        return Ok(Duration::ZERO);
    }
    let bad = || format!("`{t}` is not a duration; write e.g. `90d`, `24h`, `30m`, `2w` or `0`");
    let split = t.len().saturating_sub(1);
    let (Some(number), Some(unit)) = (t.get(..split), t.get(split..)) else {
        return Err(bad());
    };
    let seconds: u64 = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        "w" => 7 * 86_400,
        _ => return Err(bad()),
    };
    let n: u64 = number.parse().map_err(|_| bad())?;
    n.checked_mul(seconds)
        .map(Duration::from_secs)
        .ok_or_else(bad)
}

/// `--expires`: `None` for `never`, else an instant after `now`.
pub fn parse_expiry(text: &str, now: UnixMicros) -> Result<Option<UnixMicros>, String> {
    let t = text.trim();
    if t == "never" {
        return Ok(None);
    }
    let at = match parse_duration(t) {
        Ok(d) => UnixMicros::from_micros(
            now.micros()
                .saturating_add(i64::try_from(d.as_micros()).unwrap_or(i64::MAX)),
        ),
        Err(_) => UnixMicros::parse_rfc3339(t).map_err(|_| {
            format!("`{t}` is not a lifetime (`90d`, `12h`), a UTC date (`2027-01-01`) or `never`")
        })?,
    };
    if at <= now {
        return Err(format!("`{t}` is not in the future ({at})"));
    }
    Ok(Some(at))
}

/// The config and the store it names.
pub(crate) async fn open(config: &Path) -> anyhow::Result<(Config, Store)> {
    let cfg = load_config(config).map_err(anyhow::Error::msg)?;
    let Some(url) = cfg.storage.as_deref() else {
        anyhow::bail!("{}: `storage: none` names no store", config.display());
    };
    let store = Store::connect(url)
        .await
        .with_context(|| format!("cannot open the store named by {}", config.display()))?;
    Ok((cfg, store))
}

/// Fails unless `team` is one of the config's teams, listing them.
fn check_team(config: &Path, cfg: &Config, team: &TeamName) -> anyhow::Result<()> {
    if cfg.policy.team(team).is_some() {
        return Ok(());
    }
    let known = known_teams(config);
    let known = if known.is_empty() {
        "it defines no teams".to_owned()
    } else {
        format!(
            "known teams: {}",
            known
                .iter()
                .map(|t| format!("`{t}`"))
                .collect::<Vec<_>>()
                .join(", ")
        )
    };
    anyhow::bail!(
        "team `{team}` is not in {} ({known}); add it under `teams` first",
        config.display()
    )
}

/// The names under the config's `teams`, in file order. The file has
/// already been validated by `load_config`; this only reads the names back
/// for an error message (the compiled policy does not list them).
fn known_teams(config: &Path) -> Vec<String> {
    let Ok(text) = std::fs::read_to_string(config) else {
        return Vec::new();
    };
    let Ok(doc) = serde_norway::from_str::<serde_norway::Value>(&text) else {
        return Vec::new();
    };
    doc.get("teams")
        .and_then(serde_norway::Value::as_mapping)
        .map(|teams| {
            teams
                .keys()
                .filter_map(|k| k.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// A key for people: role, id, team, user and name; never its secret.
pub(crate) fn describe(key: &ApiKey) -> String {
    let mut out = format!("{} key {} of team `{}`", key.role, key.id, key.team);
    if let Some(user) = &key.user {
        out.push_str(&format!(", user `{user}`"));
    }
    if let Some(name) = &key.name {
        out.push_str(&format!(", name `{name}`"));
    }
    out
}

fn show_expiry(at: Option<UnixMicros>) -> String {
    at.map_or("never".to_owned(), |at| at.to_string())
}

/// Prints a new key: the key alone on stdout, the rest on stderr.
fn print_issued(issued: &IssuedKey) {
    say!("{}", issued.secret.expose());
    eprintln!(
        "{}; expires: {}. This is the only time the key is shown: Warden keeps only its hash.",
        describe(&issued.key),
        show_expiry(issued.key.expires)
    );
}

/// `warden keys create`.
fn create(
    config: &Path,
    team: &str,
    user: Option<&str>,
    role: &str,
    expires: Option<&str>,
    name: Option<&str>,
) -> anyhow::Result<ExitCode> {
    let now = now();
    let team = TeamName::parse(team).map_err(|e| anyhow::anyhow!("--team: {e}"))?;
    let role = Role::parse(role.trim()).map_err(|e| anyhow::anyhow!("--role: {e}"))?;
    let user = user
        .map(KeyUser::parse)
        .transpose()
        .map_err(|e| anyhow::anyhow!("--user: {e}"))?;
    let name = name
        .map(KeyName::parse)
        .transpose()
        .map_err(|e| anyhow::anyhow!("--name: {e}"))?;
    let given = expires
        .map(|e| parse_expiry(e, now).map_err(|e| anyhow::anyhow!("--expires: {e}")))
        .transpose()?;
    runtime()?.block_on(async {
        let (cfg, store) = open(config).await?;
        let created = async {
            check_team(config, &cfg, &team)?;
            if role == Role::Admin {
                refuse_second_admin(&store, now).await?;
            }
            // Default: `keys.max_age_days` from now; `never` only when asked.
            let expires = given.unwrap_or_else(|| {
                let lifetime =
                    i64::try_from(cfg.settings.keys.max_age.as_micros()).unwrap_or(i64::MAX);
                Some(UnixMicros::from_micros(
                    now.micros().saturating_add(lifetime),
                ))
            });
            let new = NewKey {
                team,
                user,
                name,
                expires,
                role,
            };
            Ok::<_, anyhow::Error>(store.create_key(new, now).await?)
        }
        .await;
        store.close().await;
        print_issued(&created?);
        Ok(ExitCode::SUCCESS)
    })
}

/// An admin key is made here (with direct access to the store) once, to
/// bootstrap: while an active admin key exists, this refuses.
async fn refuse_second_admin(store: &Store, now: UnixMicros) -> anyhow::Result<()> {
    let keys = store.list_keys(None).await?;
    if let Some(k) = keys
        .iter()
        .find(|k| k.role == Role::Admin && k.state(now) == KeyState::Active)
    {
        anyhow::bail!(
            "--role admin: an active admin key exists ({}); an admin key is made here only once, to bootstrap. Revoke it first (`warden keys revoke {}`) to make a new one",
            k.id,
            k.id
        );
    }
    Ok(())
}

/// `warden keys list`.
fn list(config: &Path, team: Option<&str>) -> anyhow::Result<ExitCode> {
    let team = team
        .map(TeamName::parse)
        .transpose()
        .map_err(|e| anyhow::anyhow!("--team: {e}"))?;
    let now = now();
    runtime()?.block_on(async {
        let (_, store) = open(config).await?;
        let keys = store.list_keys(team.as_ref()).await;
        store.close().await;
        let keys = keys?;
        let mut table = Table::new(&[
            ("id", Align::Left),
            ("team", Align::Left),
            ("role", Align::Left),
            ("user", Align::Left),
            ("name", Align::Left),
            ("created", Align::Left),
            ("expires", Align::Left),
            ("state", Align::Left),
            ("replaced by", Align::Left),
        ]);
        for k in &keys {
            let state = match k.state(now) {
                KeyState::Active => "active",
                KeyState::Expired => "expired",
                KeyState::Revoked => "revoked",
            };
            table.row([
                k.id.as_str().to_owned(),
                k.team.as_str().to_owned(),
                k.role.as_str().to_owned(),
                k.user.as_ref().map_or("-", KeyUser::as_str).to_owned(),
                k.name.as_ref().map_or("-", KeyName::as_str).to_owned(),
                k.created.to_string(),
                show_expiry(k.expires),
                state.to_owned(),
                k.rotated_to
                    .as_ref()
                    .map_or("-", ApiKeyId::as_str)
                    .to_owned(),
            ]);
        }
        for line in table.lines() {
            say!("{line}");
        }
        say!("{} key(s)", keys.len());
        Ok(ExitCode::SUCCESS)
    })
}

fn parse_id(id: &str) -> anyhow::Result<ApiKeyId> {
    ApiKeyId::parse(id.trim()).map_err(anyhow::Error::msg)
}

/// `warden keys revoke`.
fn revoke(config: &Path, id: &str) -> anyhow::Result<ExitCode> {
    let id = parse_id(id)?;
    runtime()?.block_on(async {
        let (_, store) = open(config).await?;
        let revoked = store.revoke_key(&id, now()).await;
        store.close().await;
        let key = revoked?;
        say!("revoked {}", describe(&key));
        Ok(ExitCode::SUCCESS)
    })
}

/// `warden keys rotate`.
fn rotate(config: &Path, id: &str, grace: &str, expires: Option<&str>) -> anyhow::Result<ExitCode> {
    let now = now();
    let id = parse_id(id)?;
    let grace = parse_duration(grace).map_err(|e| anyhow::anyhow!("--grace: {e}"))?;
    let expiry = match expires {
        None => RotatedExpiry::SameLifetime,
        Some(e) => match parse_expiry(e, now).map_err(|e| anyhow::anyhow!("--expires: {e}"))? {
            None => RotatedExpiry::Never,
            Some(at) => RotatedExpiry::At(at),
        },
    };
    runtime()?.block_on(async {
        let (cfg, store) = open(config).await?;
        let rotated = async {
            // The new key is for the old key's team, which must still be in
            // the config.
            if let Some(old) = store.get_key(&id).await? {
                check_team(config, &cfg, &old.team)?;
            }
            Ok::<_, anyhow::Error>(store.rotate_key(&id, grace, expiry, now).await?)
        }
        .await;
        store.close().await;
        let rotated = rotated?;
        print_issued(&rotated.new);
        eprintln!(
            "The old key {} keeps working until {}.",
            rotated.old.id,
            show_expiry(rotated.old.expires)
        );
        Ok(ExitCode::SUCCESS)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_have_units() {
        assert_eq!(parse_duration("90d"), Ok(Duration::from_secs(90 * 86_400)));
        assert_eq!(parse_duration("24h"), Ok(Duration::from_secs(86_400)));
        assert_eq!(parse_duration("0"), Ok(Duration::ZERO));
        assert_eq!(parse_duration("2w"), Ok(Duration::from_secs(14 * 86_400)));
        for bad in ["", "d", "90", "-1d", "1.5h", "3y", "24 h"] {
            let err = parse_duration(bad).unwrap_err();
            assert!(err.contains("`90d`"), "{bad}: {err}");
        }
    }

    #[test]
    fn expiries_are_lifetimes_dates_or_never_and_in_the_future() {
        let now = UnixMicros::from_micros(86_400_000_000);
        assert_eq!(parse_expiry("never", now), Ok(None));
        assert_eq!(
            parse_expiry("1d", now),
            Ok(Some(UnixMicros::from_micros(2 * 86_400_000_000)))
        );
        assert_eq!(
            parse_expiry("1970-01-03", now),
            Ok(Some(UnixMicros::from_micros(2 * 86_400_000_000)))
        );
        assert!(parse_expiry("0", now)
            .unwrap_err()
            .contains("not in the future"));
        assert!(parse_expiry("1970-01-01", now).is_err());
        assert!(parse_expiry("soon", now).unwrap_err().contains("`never`"));
    }
}
