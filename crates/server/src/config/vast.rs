//! The `vast:` section: where the Vast door's upstream is and how Warden
//! talks to it. Per-team offer constraints live under `teams.<t>.vast`
//! (validated by the core).

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::secret::{Credential, SecretSource};

/// The environment variable read for the upstream key when none is
/// configured; the `vastai` CLI and SDK read the same one.
pub const DEFAULT_KEY_ENV: &str = "VAST_API_KEY";
/// The upstream key, for messages.
pub const VAST_KEY: Credential = Credential {
    noun: "Vast.ai API key",
    example_env: DEFAULT_KEY_ENV,
};

/// The Vast.ai API, used when a key is configured and no `upstream_url`.
pub const VAST_CONSOLE_URL: &str = "https://console.vast.ai";
/// Seconds one upstream exchange may take, by default.
pub const DEFAULT_TIMEOUT_SECONDS: u64 = 30;
/// Seconds between two reconciles with the upstream instance list, by default.
pub const DEFAULT_RECONCILE_SECONDS: u64 = 60;
/// Seconds a create's placeholder allocation is left alone when no instance
/// shows up for it, by default (a create may still be on its way).
pub const DEFAULT_PENDING_GRACE_SECONDS: u64 = 120;
/// Seconds the pre-destroy command may run, by default.
pub const DEFAULT_PRE_DESTROY_TIMEOUT_SECONDS: u64 = 60;

/// `vast` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct VastFile {
    #[serde(default)]
    upstream_url: Option<String>,
    #[serde(default)]
    api_key_env: Option<String>,
    #[serde(default)]
    api_key_file: Option<PathBuf>,
    #[serde(default)]
    timeout_seconds: Option<u64>,
    #[serde(default)]
    reconcile_interval_seconds: Option<u64>,
    #[serde(default)]
    pending_grace_seconds: Option<u64>,
    #[serde(default)]
    pre_destroy_command: Option<String>,
    #[serde(default)]
    pre_destroy_timeout_seconds: Option<u64>,
    #[serde(default)]
    pre_destroy_ssh_user: Option<String>,
    #[serde(default)]
    pre_destroy_ssh_key: Option<PathBuf>,
    #[serde(default)]
    pre_destroy_known_hosts: Option<PathBuf>,
}

/// The Vast door's settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VastConfig {
    /// The upstream API's base URL (`http(s)://host[:port][/prefix]`, no
    /// trailing slash); `None`: Vast.ai itself when a key is found, else
    /// the embedded simulator.
    pub upstream_url: Option<String>,
    /// Where the upstream key is.
    pub key: SecretSource,
    /// Whether `api_key_env` or `api_key_file` was written (then a missing
    /// key is an error, never a silent fallback to the simulator).
    pub key_configured: bool,
    /// Bound on one upstream exchange.
    pub timeout: Duration,
    /// Time between two reconciles.
    pub reconcile_interval: Duration,
    /// How long a create's placeholder is kept while no instance matches it.
    pub pending_grace: Duration,
    /// Run over SSH on an instance before Warden destroys it.
    pub pre_destroy: Option<PreDestroy>,
}

impl Default for VastConfig {
    fn default() -> Self {
        Self {
            upstream_url: None,
            key: default_key(),
            key_configured: false,
            timeout: Duration::from_secs(DEFAULT_TIMEOUT_SECONDS),
            reconcile_interval: Duration::from_secs(DEFAULT_RECONCILE_SECONDS),
            pending_grace: Duration::from_secs(DEFAULT_PENDING_GRACE_SECONDS),
            pre_destroy: None,
        }
    }
}

/// `vast.pre_destroy_command`: `ssh -p PORT USER@HOST COMMAND` before a
/// destroy, bounded by `timeout`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PreDestroy {
    /// The remote command line.
    pub command: String,
    /// Bound on the whole SSH session.
    pub timeout: Duration,
    /// The remote user (`pre_destroy_ssh_user`, default `root`, as on Vast
    /// instances).
    pub user: String,
    /// The private key to log in with (`pre_destroy_ssh_key`, only this
    /// one is offered); `None`: ssh's defaults for the user Warden runs as.
    pub identity: Option<PathBuf>,
    /// The known-hosts file (`pre_destroy_known_hosts`); new hosts are
    /// added on first contact (`accept-new`), a changed key is refused.
    /// `None`: ssh's default file.
    pub known_hosts: Option<PathBuf>,
}

/// `VAST_API_KEY`, where the key is looked for unless configured.
fn default_key() -> SecretSource {
    SecretSource::Env(DEFAULT_KEY_ENV.to_owned())
}

/// Validates `vast`; the errors are `key.path: problem` lines.
pub(crate) fn vast_config(path: &Path, f: VastFile) -> Result<VastConfig, Vec<String>> {
    let mut problems = Vec::new();
    let upstream_url = f
        .upstream_url
        .map(|u| u.trim().trim_end_matches('/').to_owned());
    if let Some(url) = &upstream_url {
        let rest = url
            .strip_prefix("http://")
            .or_else(|| url.strip_prefix("https://"));
        if rest.is_none_or(|r| r.is_empty() || r.starts_with('/')) {
            problems.push(
                "vast.upstream_url: not an `http://` or `https://` URL with a host; write e.g. `https://console.vast.ai`".to_owned(),
            );
        }
    }
    let key_configured =
        f.api_key_env.is_some() || f.api_key_file.is_some() || upstream_url.is_some();
    let key = match (f.api_key_env, f.api_key_file) {
        (Some(_), Some(_)) => {
            problems.push("vast: give `api_key_env` or `api_key_file`, not both".to_owned());
            default_key()
        }
        (Some(var), None) => SecretSource::env(&var, VAST_KEY).unwrap_or_else(|e| {
            problems.push(format!("vast.api_key_env: {e}"));
            default_key()
        }),
        (None, Some(file)) => SecretSource::file(file, path.parent().unwrap_or(Path::new(""))),
        (None, None) => default_key(),
    };
    let mut seconds = |key: &str, given: Option<u64>, default: u64, min: u64| {
        super::seconds::seconds(&mut problems, &format!("vast.{key}"), given, default, min)
    };
    let timeout = seconds(
        "timeout_seconds",
        f.timeout_seconds,
        DEFAULT_TIMEOUT_SECONDS,
        1,
    );
    let reconcile_interval = seconds(
        "reconcile_interval_seconds",
        f.reconcile_interval_seconds,
        DEFAULT_RECONCILE_SECONDS,
        1,
    );
    let pending_grace = seconds(
        "pending_grace_seconds",
        f.pending_grace_seconds,
        DEFAULT_PENDING_GRACE_SECONDS,
        0,
    );
    let pre_timeout = seconds(
        "pre_destroy_timeout_seconds",
        f.pre_destroy_timeout_seconds,
        DEFAULT_PRE_DESTROY_TIMEOUT_SECONDS,
        1,
    );
    let pre_destroy = match f.pre_destroy_command.map(|c| c.trim().to_owned()) {
        Some(c) if c.is_empty() => {
            problems.push(
                "vast.pre_destroy_command: empty; remove it or name a command to run".to_owned(),
            );
            None
        }
        Some(command) => {
            let user = f
                .pre_destroy_ssh_user
                .map(|u| u.trim().to_owned())
                .unwrap_or_else(|| "root".to_owned());
            if user.is_empty()
                || !user
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
            {
                problems.push(format!(
                    "vast.pre_destroy_ssh_user: `{user}` is not a user name (letters, digits, `_`, `-`, `.`)"
                ));
            }
            let resolve = |p: PathBuf| {
                if p.is_absolute() {
                    p
                } else {
                    path.parent()
                        .map(Path::to_path_buf)
                        .unwrap_or_default()
                        .join(p)
                }
            };
            Some(PreDestroy {
                command,
                timeout: pre_timeout,
                user,
                identity: f.pre_destroy_ssh_key.map(resolve),
                known_hosts: f.pre_destroy_known_hosts.map(resolve),
            })
        }
        None => None,
    };
    if problems.is_empty() {
        Ok(VastConfig {
            upstream_url,
            key,
            key_configured,
            timeout,
            reconcile_interval,
            pending_grace,
            pre_destroy,
        })
    } else {
        Err(problems)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<VastConfig, Vec<String>> {
        let f: VastFile = serde_norway::from_str(text).unwrap();
        vast_config(Path::new("/etc/warden/warden.yaml"), f)
    }

    #[test]
    fn defaults_and_a_relative_key_file() {
        let c = parse("{}").unwrap();
        assert_eq!(c, VastConfig::default());
        assert!(!c.key_configured);
        let c = parse("{upstream_url: 'https://console.vast.ai/', api_key_file: vast.key, timeout_seconds: 5, pre_destroy_command: 'sync-out.sh', pre_destroy_ssh_key: keys/cleanup}").unwrap();
        assert_eq!(c.upstream_url.as_deref(), Some("https://console.vast.ai"));
        assert_eq!(
            c.key,
            SecretSource::File(PathBuf::from("/etc/warden/vast.key"))
        );
        assert!(c.key_configured);
        assert_eq!(c.timeout, Duration::from_secs(5));
        assert_eq!(
            c.pre_destroy,
            Some(PreDestroy {
                command: "sync-out.sh".to_owned(),
                timeout: Duration::from_secs(60),
                user: "root".to_owned(),
                identity: Some(PathBuf::from("/etc/warden/keys/cleanup")),
                known_hosts: None,
            })
        );
    }

    #[test]
    fn errors_name_the_key() {
        let e = parse("{upstream_url: 'ftp://x', api_key_env: A, api_key_file: /k, reconcile_interval_seconds: 0, pre_destroy_command: ' '}").unwrap_err();
        for want in [
            "vast.upstream_url: not an `http://`",
            "give `api_key_env` or `api_key_file`, not both",
            "vast.reconcile_interval_seconds: `0` is out of range",
            "vast.pre_destroy_command: empty",
        ] {
            assert!(
                e.iter().any(|l| l.contains(want)),
                "missing {want:?} in {e:?}"
            );
        }
        let e = parse("{api_key_env: 'not a name'}").unwrap_err();
        assert!(
            e.iter().any(|l| l.starts_with("vast.api_key_env:")),
            "{e:?}"
        );
    }
}
