//! Loading the config file: read, parse, validate; errors name the file.
//!
//! One YAML file holds the policy (`default_team`, `teams`, `prices`,
//! `rules`, validated by the core) and the server's own settings
//! (`storage`). Unknown keys are errors.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use warden_core::policy::{PriceSpec, RuleSpec, TeamSpec};
use warden_core::{Policy, PolicySpec};

/// The store used when the config names none: a SQLite file next to the
/// config file.
pub const DEFAULT_STORAGE_FILE: &str = "warden.db";

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ConfigFile {
    #[serde(default)]
    storage: Option<String>,
    #[serde(default)]
    default_team: Option<String>,
    #[serde(default)]
    teams: BTreeMap<String, TeamSpec>,
    #[serde(default)]
    prices: BTreeMap<String, PriceSpec>,
    #[serde(default)]
    rules: Vec<RuleSpec>,
}

/// A loaded config.
#[derive(Debug)]
pub struct Config {
    /// The policy.
    pub policy: Policy,
    /// The store URL (`sqlite://PATH` or `postgres://...`), with a relative
    /// SQLite path resolved against the config file's directory; `None` for
    /// `storage: none` (decide only: no audit log, no quotas).
    pub storage: Option<String>,
}

fn prefixed(path: &Path, lines: impl IntoIterator<Item = String>) -> String {
    lines
        .into_iter()
        .map(|l| format!("{}: {l}", path.display()))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Resolves `storage` (absent: `warden.db` beside the config file; `none`:
/// no store).
pub fn storage_url(path: &Path, given: Option<&str>) -> Result<Option<String>, String> {
    if given.map(str::trim) == Some("none") {
        return Ok(None);
    }
    store_url(path, given).map(Some)
}

fn store_url(path: &Path, given: Option<&str>) -> Result<String, String> {
    let dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
    let Some(url) = given.map(str::trim) else {
        return Ok(format!(
            "sqlite://{}",
            dir.join(DEFAULT_STORAGE_FILE).display()
        ));
    };
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        return Ok(url.to_owned());
    }
    let Some(file) = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))
    else {
        return Err(format!(
            "storage: `{}` is not a store URL; use `sqlite://PATH`, `postgres://USER@HOST/DB` or `none`",
            url.split_once("://").map_or(url, |(scheme, _)| scheme)
        ));
    };
    if file.is_empty() {
        return Err(
            "storage: the SQLite URL names no file; use e.g. `sqlite://warden.db`".to_owned(),
        );
    }
    let file = PathBuf::from(file);
    let file = if file.is_absolute() {
        file
    } else {
        dir.join(file)
    };
    Ok(format!("sqlite://{}", file.display()))
}

/// Loads and validates a config file. The error text names the file, each
/// key path and the problem, one per line.
pub fn load_config(path: &Path) -> Result<Config, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("{}: cannot read the config file: {e}", path.display()))?;
    let de = serde_norway::Deserializer::from_str(&text);
    let file: ConfigFile = serde_path_to_error::deserialize(de).map_err(|e| {
        let at = e.path().to_string();
        let msg = e.into_inner().to_string();
        if at == "." || at == "?" {
            format!("{}: {msg}", path.display())
        } else {
            format!("{}: {at}: {msg}", path.display())
        }
    })?;
    let quota_teams: Vec<String> = file
        .teams
        .iter()
        .filter(|(_, t)| t.quotas.is_some())
        .map(|(n, _)| format!("`{n}`"))
        .collect();
    let storage = storage_url(path, file.storage.as_deref()).and_then(|s| match s {
        None if !quota_teams.is_empty() => Err(format!(
            "storage: `none` cannot enforce the quotas of team(s) {}; name a store or remove the quotas",
            quota_teams.join(", ")
        )),
        s => Ok(s),
    });
    let spec = PolicySpec {
        default_team: file.default_team,
        teams: file.teams,
        prices: file.prices,
        rules: file.rules,
    };
    match (Policy::compile(spec), storage) {
        (Ok(policy), Ok(storage)) => Ok(Config { policy, storage }),
        (policy, storage) => {
            let mut lines: Vec<String> = Vec::new();
            if let Err(e) = storage {
                lines.push(e);
            }
            if let Err(e) = policy {
                lines.extend(e.problems.iter().map(ToString::to_string));
            }
            Err(prefixed(path, lines))
        }
    }
}

/// Loads a config file and returns only its policy.
pub fn load_policy(path: &Path) -> Result<Policy, String> {
    load_config(path).map(|c| c.policy)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn storage_defaults_beside_the_config_and_resolves_relative_paths() {
        let p = Path::new("/etc/warden/warden.yaml");
        let url = |g| storage_url(p, g).unwrap().unwrap();
        assert_eq!(url(None), "sqlite:///etc/warden/warden.db");
        assert_eq!(
            url(Some("sqlite://state/w.db")),
            "sqlite:///etc/warden/state/w.db"
        );
        assert_eq!(url(Some("sqlite:///var/w.db")), "sqlite:///var/w.db");
        assert_eq!(url(Some("postgres://u@h/db")), "postgres://u@h/db");
        assert_eq!(storage_url(p, Some("none")).unwrap(), None);
        let e = storage_url(p, Some("mysql://u:secret@h/db")).unwrap_err();
        assert!(e.contains("`mysql`") && !e.contains("secret"), "{e}");
    }
}
