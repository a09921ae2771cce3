//! `warden doctor`: the security checklist of a deployment, run against its
//! config (and, with `--scan`, against git repositories).
//!
//! # What it checks
//!
//! - **Secret files** (`vast.api_key_file`, `skypilot_api.token_file`,
//!   `vast.pre_destroy_ssh_key`) are read with the loader `warden serve`
//!   uses ([`warden_server::secret`]): missing, unreadable, accessible by
//!   group or others, or not holding a usable credential is serious.
//! - **Warden keys** in the store: an active key that never expires is a
//!   warning (an admin key, serious); an active key older than
//!   `keys.max_age_days` is serious.
//! - **The Vast.ai key's age**: a key file last changed more than
//!   `keys.max_age_days` ago is a warning.
//! - **Keys committed to git** (`--scan PATH`): Warden keys and Vast-looking
//!   keys in the work tree or anywhere in the history ([`scan`]).
//! - **The listen address** (`--listen`, as for `warden serve`): Warden
//!   speaks plain HTTP, so a non-loopback address is serious.
//! - **A password in the store URL** while the config file is readable by
//!   group or others is serious.
//!
//! Every check that finds nothing says so in an `ok` row, so the table shows
//! what was checked. The exit code is 1 when any finding is serious.
//!
//! # What it guarantees
//!
//! - **No secret is printed.** Findings name files, settings, key ids and
//!   commits; a key found by `--scan` is shown as its id (Warden keys) or
//!   its first four characters and length, never whole.
//! - **Nothing is changed**, apart from the schema migrations that opening
//!   an existing store runs (as every command does). A SQLite store that
//!   does not exist yet is not created.

mod scan;

use std::net::ToSocketAddrs as _;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, SystemTime};

use warden_core::access::Role;
use warden_server::config::{load_config, Config, VAST_KEY};
use warden_server::doors::skypilot::sync::client::Token;
use warden_server::secret::SecretSource;
use warden_server::secret::{read_private_file, read_private_text, Credential, SecretError};
use warden_store::{ApiKey, KeyState, Store, UnixMicros};

use crate::admin::runtime;
use crate::table::{Align, Table};

/// `warden doctor`.
#[derive(Debug, clap::Args)]
pub struct DoctorArgs {
    /// Config file (its secret files, `storage` and `keys` are checked).
    #[arg(long)]
    config: PathBuf,
    /// The address `warden serve` listens on (its `--listen`).
    #[arg(long, default_value = "127.0.0.1:8080")]
    listen: String,
    /// The certificate `warden serve --tls-cert` uses, if it serves HTTPS.
    #[arg(long, requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// The key `warden serve --tls-key` uses.
    #[arg(long, requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// A git work tree to search for committed Warden and Vast.ai keys, in
    /// its tracked files and its whole history (repeatable).
    #[arg(long = "scan")]
    scan: Vec<PathBuf>,
}

/// How bad a finding is. Ordered worst first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Severity {
    /// A secret is exposed or a rule broken: `warden doctor` exits 1.
    Serious,
    /// Worth fixing soon.
    Warning,
    /// Checked, nothing found.
    Ok,
}

impl Severity {
    fn as_str(self) -> &'static str {
        match self {
            Severity::Serious => "serious",
            Severity::Warning => "warning",
            Severity::Ok => "ok",
        }
    }
}

/// One row of the checklist.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    /// How bad it is.
    pub severity: Severity,
    /// Which check found it.
    pub check: &'static str,
    /// What was found (never a secret).
    pub finding: String,
    /// What to do about it; empty for `ok` rows.
    pub fix: String,
}

impl Finding {
    fn ok(check: &'static str, finding: String) -> Self {
        Self {
            severity: Severity::Ok,
            check,
            finding,
            fix: String::new(),
        }
    }

    fn warning(check: &'static str, finding: String, fix: String) -> Self {
        Self {
            severity: Severity::Warning,
            check,
            finding,
            fix,
        }
    }

    fn serious(check: &'static str, finding: String, fix: String) -> Self {
        Self {
            severity: Severity::Serious,
            check,
            finding,
            fix,
        }
    }
}

const SECRET_FILES: &str = "secret files";
const VAST_KEY_AGE: &str = "vast key age";
const WARDEN_KEYS: &str = "warden keys";
const LISTEN: &str = "listen address";
const STORE_PASSWORD: &str = "store password";

/// The pre-destroy SSH private key, for messages.
const SSH_KEY: Credential = Credential {
    noun: "pre-destroy SSH key",
    example_env: "",
};

/// Runs every check and prints the table; exit 1 when any finding is
/// serious.
pub fn run(args: &DoctorArgs) -> anyhow::Result<ExitCode> {
    let cfg = load_config(&args.config).map_err(anyhow::Error::msg)?;
    let now = SystemTime::now();
    let mut findings = secret_files(&cfg);
    findings.extend(vast_key_age(&cfg, now));
    findings.extend(store_keys(
        &args.config,
        &cfg,
        UnixMicros::from_system_time(now),
    )?);
    findings.push(match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => tls_files(cert, key),
        _ => listen_address(&args.listen),
    });
    findings.push(store_password(&args.config, &cfg));
    for path in &args.scan {
        findings.extend(scan::scan(path, &args.config));
    }
    // Worst first; within a severity, in the order checked.
    findings.sort_by_key(|f| f.severity);
    let mut table = Table::new(&[
        ("severity", Align::Left),
        ("check", Align::Left),
        ("finding", Align::Left),
        ("fix", Align::Left),
    ]);
    for f in &findings {
        table.row([
            f.severity.as_str().to_owned(),
            f.check.to_owned(),
            f.finding.clone(),
            f.fix.clone(),
        ]);
    }
    for line in table.lines() {
        say!("{line}");
    }
    let count = |s: Severity| findings.iter().filter(|f| f.severity == s).count();
    let serious = count(Severity::Serious);
    say!(
        "{serious} serious, {} warning(s), {} ok",
        count(Severity::Warning),
        count(Severity::Ok)
    );
    Ok(if serious > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

/// `path` as a shell word: quoted when it holds anything but the usual
/// path characters, so a fix can be pasted as is.
fn shell_word(path: &Path) -> String {
    let text = path.display().to_string();
    let plain = !text.is_empty()
        && text
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '/' | '.' | '_' | '-' | '+' | ':'));
    if plain {
        text
    } else {
        format!("'{}'", text.replace('\'', r"'\''"))
    }
}

fn file_mode(path: &Path) -> Option<u32> {
    std::fs::metadata(path)
        .ok()
        .map(|m| m.permissions().mode() & 0o777)
}

/// The secret files the config names, each read as `warden serve` reads it.
fn secret_files(cfg: &Config) -> Vec<Finding> {
    let mut checked: Vec<(&str, &Path, Result<(), SecretError>)> = Vec::new();
    if let SecretSource::File(path) = &cfg.vast.key {
        checked.push((
            "vast.api_key_file",
            path,
            read_private_file(path, VAST_KEY).map(drop),
        ));
    }
    if let Some(source @ SecretSource::File(path)) =
        cfg.skypilot_api.as_ref().and_then(|a| a.token.as_ref())
    {
        checked.push((
            "skypilot_api.token_file",
            path,
            Token::read(source).map(drop),
        ));
    }
    if let Some(path) = cfg
        .vast
        .pre_destroy
        .as_ref()
        .and_then(|p| p.identity.as_ref())
    {
        checked.push((
            "vast.pre_destroy_ssh_key",
            path,
            read_private_text(path, SSH_KEY).map(drop),
        ));
    }
    if checked.is_empty() {
        return vec![Finding::ok(
            SECRET_FILES,
            "no secret file configured (credentials, if any, come from environment variables)"
                .to_owned(),
        )];
    }
    checked
        .into_iter()
        .map(|(setting, path, result)| match result {
            Ok(()) => Finding::ok(
                SECRET_FILES,
                format!(
                    "{setting}: `{}` is private (mode {:04o})",
                    path.display(),
                    file_mode(path).unwrap_or(0)
                ),
            ),
            Err(SecretError::FileMode { mode, .. }) => Finding::serious(
                SECRET_FILES,
                format!(
                    "{setting}: `{}` is accessible by group or others (mode {mode:04o})",
                    path.display()
                ),
                format!("chmod 600 {}", shell_word(path)),
            ),
            Err(e @ (SecretError::FileRead { .. } | SecretError::NotAFile { .. })) => {
                Finding::serious(
                    SECRET_FILES,
                    format!("{setting}: {e}"),
                    format!(
                        "create `{}` readable only by the user Warden runs as (chmod 600), or correct `{setting}`",
                        path.display()
                    ),
                )
            }
            Err(e) => Finding::serious(
                SECRET_FILES,
                format!("{setting}: {e}"),
                format!("put only the credential in `{}`", path.display()),
            ),
        })
        .collect()
}

fn days(d: Duration) -> u64 {
    d.as_secs() / 86_400
}

/// The upstream Vast.ai key's age, when it is kept in a file: the file's
/// last change.
fn vast_key_age(cfg: &Config, now: SystemTime) -> Vec<Finding> {
    let max = cfg.settings.keys.max_age;
    let path = match &cfg.vast.key {
        SecretSource::File(path) => path,
        SecretSource::Env(var) => {
            let finding = if cfg.vast.key_configured {
                format!("the Vast.ai API key comes from environment variable `{var}`: its age cannot be told; rotate it every {} days", days(max))
            } else {
                format!(
                    "no Vast.ai API key configured (`{var}` if set, else the embedded simulator)"
                )
            };
            return vec![Finding::ok(VAST_KEY_AGE, finding)];
        }
    };
    // An unreadable file is the secret-file check's finding.
    let Some(changed) = std::fs::metadata(path).and_then(|m| m.modified()).ok() else {
        return Vec::new();
    };
    let age = now.duration_since(changed).unwrap_or_default();
    if age > max {
        vec![Finding::warning(
            VAST_KEY_AGE,
            format!(
                "vast.api_key_file: `{}` was last changed {} days ago, more than keys.max_age_days ({})",
                path.display(),
                days(age),
                days(max)
            ),
            format!(
                "make a new API key in the Vast.ai console, write it to `{}`, then delete the old key there",
                path.display()
            ),
        )]
    } else {
        vec![Finding::ok(
            VAST_KEY_AGE,
            format!(
                "vast.api_key_file: `{}` was last changed {} days ago (keys.max_age_days: {})",
                path.display(),
                days(age),
                days(max)
            ),
        )]
    }
}

/// The Warden keys in the config's store.
fn store_keys(config: &Path, cfg: &Config, now: UnixMicros) -> anyhow::Result<Vec<Finding>> {
    let Some(url) = cfg.storage.as_deref() else {
        return Ok(vec![Finding::ok(
            WARDEN_KEYS,
            "`storage: none`: no store, so no keys to check".to_owned(),
        )]);
    };
    if let Some(file) = url.strip_prefix("sqlite://") {
        let file = Path::new(file.split('?').next().unwrap_or(file));
        if !file.exists() {
            return Ok(vec![Finding::ok(
                WARDEN_KEYS,
                format!("no store at `{}` yet, so no keys", file.display()),
            )]);
        }
    }
    let listed = runtime()?.block_on(async {
        let store = Store::connect_with(url, cfg.store_options).await?;
        let keys = store.list_keys(None).await;
        store.close().await;
        keys
    });
    Ok(match listed {
        Ok(keys) => key_findings(&keys, now, cfg.settings.keys.max_age, config),
        Err(e) => vec![Finding::warning(
            WARDEN_KEYS,
            format!("not checked: cannot read the keys in the store named by `storage`: {e}"),
            "run `warden doctor` where the store can be reached".to_owned(),
        )],
    })
}

/// Findings about the active keys: a key that never expires is a warning
/// (serious for an admin key, which acts in every team); a key older than
/// `max_age` is serious, unless it was rotated and is in its grace period.
fn key_findings(
    keys: &[ApiKey],
    now: UnixMicros,
    max_age: Duration,
    config: &Path,
) -> Vec<Finding> {
    let max_days = days(max_age);
    let max_micros = i64::try_from(max_age.as_micros()).unwrap_or(i64::MAX);
    let active: Vec<&ApiKey> = keys
        .iter()
        .filter(|k| k.state(now) == KeyState::Active)
        .collect();
    let rotate = |k: &ApiKey| {
        let mut fix = format!(
            "warden keys rotate --config {} {}",
            shell_word(config),
            k.id
        );
        if k.expires.is_none() {
            fix.push_str(&format!(" --expires {max_days}d"));
        }
        fix
    };
    let mut out = Vec::new();
    for k in &active {
        if k.expires.is_none() {
            let finding = format!("{} never expires", crate::keys::describe(k));
            out.push(if k.role == Role::Admin {
                Finding::serious(
                    WARDEN_KEYS,
                    format!("{finding}: an admin key acts in every team"),
                    rotate(k),
                )
            } else {
                Finding::warning(WARDEN_KEYS, finding, rotate(k))
            });
        }
        let age = now.micros().saturating_sub(k.created.micros());
        if age > max_micros && k.rotated_to.is_none() {
            out.push(Finding::serious(
                WARDEN_KEYS,
                format!(
                    "{} was created {} days ago ({}), more than keys.max_age_days ({max_days})",
                    crate::keys::describe(k),
                    age / 86_400_000_000,
                    k.created
                ),
                rotate(k),
            ));
        }
    }
    if out.is_empty() {
        out.push(Finding::ok(
            WARDEN_KEYS,
            format!(
                "{} active key(s), each expiring and younger than keys.max_age_days ({max_days})",
                active.len()
            ),
        ));
    }
    out
}

/// With `--tls-cert`/`--tls-key`: whether `warden serve` can use them (it
/// then serves HTTPS only, wherever it listens).
fn tls_files(cert: &std::path::Path, key: &std::path::Path) -> Finding {
    match warden_server::tls::TlsFiles::load(cert, key) {
        Ok(_) => Finding::ok(LISTEN, format!("serves HTTPS with `{}`", cert.display())),
        Err(e) => Finding::serious(
            LISTEN,
            format!("`warden serve` cannot use them: {e}"),
            "fix the files named (a PEM chain, leaf first; its PEM key, `chmod 600`)".to_owned(),
        ),
    }
}

/// Whether `warden serve --listen ADDR` (plain HTTP) is reachable only
/// from this machine: anywhere else clients send their bearer tokens and
/// keys in clear (Warden refuses them from other machines unless
/// `--insecure-http`, but they have crossed the network by then).
fn listen_address(addr: &str) -> Finding {
    match addr.to_socket_addrs() {
        Ok(addrs) => {
            let addrs: Vec<_> = addrs.collect();
            if !addrs.is_empty() && addrs.iter().all(|a| a.ip().is_loopback()) {
                Finding::ok(
                    LISTEN,
                    format!("`{addr}` is a loopback address: only this machine can connect"),
                )
            } else {
                Finding::serious(
                    LISTEN,
                    format!("`{addr}` is not a loopback address and Warden serves plain HTTP: bearer tokens and keys cross the network in clear"),
                    "serve HTTPS: `warden serve --tls-cert FILE --tls-key FILE` (give the same flags to `warden doctor`), or listen on 127.0.0.1 behind a TLS-terminating proxy".to_owned(),
                )
            }
        }
        Err(e) => Finding::warning(
            LISTEN,
            format!("cannot resolve `{addr}`: {e}"),
            "give the address `warden serve --listen` uses, e.g. `127.0.0.1:8080`".to_owned(),
        ),
    }
}

/// Whether a PostgreSQL URL holds a password (`postgres://user:pass@host`
/// or `?password=`). Never returns any of it.
fn url_has_password(url: &str) -> bool {
    let Some(rest) = url
        .strip_prefix("postgres://")
        .or_else(|| url.strip_prefix("postgresql://"))
    else {
        return false;
    };
    let (before_query, query) = rest.split_once('?').unwrap_or((rest, ""));
    let authority = before_query.split('/').next().unwrap_or("");
    let in_userinfo = authority
        .rsplit_once('@')
        .and_then(|(userinfo, _)| userinfo.split_once(':'))
        .is_some_and(|(_, password)| !password.is_empty());
    let in_query = query.split('&').any(|pair| {
        pair.split_once('=')
            .is_some_and(|(k, v)| k == "password" && !v.is_empty())
    });
    in_userinfo || in_query
}

/// A password in the store URL is as exposed as the config file.
fn store_password(config: &Path, cfg: &Config) -> Finding {
    if !cfg.storage.as_deref().is_some_and(url_has_password) {
        return Finding::ok(STORE_PASSWORD, "the store URL holds no password".to_owned());
    }
    match file_mode(config) {
        Some(mode) if mode & 0o044 != 0 => Finding::serious(
            STORE_PASSWORD,
            format!(
                "the store URL (`storage`) holds a password and `{}` is readable by group or others (mode {mode:04o})",
                config.display()
            ),
            format!(
                "chmod 600 {}, or take the password out of the URL: a ~/.pgpass file (mode 600) or PGPASSWORD in Warden's environment",
                shell_word(config)
            ),
        ),
        mode => Finding::ok(
            STORE_PASSWORD,
            format!(
                "the store URL holds a password; `{}` is private (mode {:04o})",
                config.display(),
                mode.unwrap_or(0)
            ),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use warden_core::TeamName;
    use warden_store::ApiKeyId;

    const DAY: i64 = 86_400_000_000;

    fn key(id: &str, role: Role, created_days_ago: i64, expires: Option<i64>) -> ApiKey {
        let now = 1_000 * DAY;
        ApiKey {
            id: ApiKeyId::parse(id).unwrap(),
            name: None,
            team: TeamName::parse("ml").unwrap(),
            user: None,
            created: UnixMicros::from_micros(now - created_days_ago * DAY),
            expires: expires.map(|d| UnixMicros::from_micros(now + d * DAY)),
            revoked: None,
            rotated_to: None,
            role,
        }
    }

    #[test]
    fn keys_that_never_expire_or_are_too_old_are_found() {
        let now = UnixMicros::from_micros(1_000 * DAY);
        let max = Duration::from_secs(90 * 86_400);
        let config = Path::new("/etc/warden/warden.yaml");
        let fresh = key("00000000000000aa", Role::MlEngineer, 10, Some(80));
        let ok = key_findings(std::slice::from_ref(&fresh), now, max, config);
        assert_eq!(ok.len(), 1);
        assert_eq!(ok[0].severity, Severity::Ok, "{ok:?}");

        let never = key("00000000000000bb", Role::MlEngineer, 10, None);
        let f = key_findings(&[fresh, never], now, max, config);
        assert_eq!(f.len(), 1, "{f:?}");
        assert_eq!(f[0].severity, Severity::Warning);
        assert!(
            f[0].finding.contains("00000000000000bb") && f[0].finding.contains("never expires")
        );
        assert_eq!(
            f[0].fix,
            "warden keys rotate --config /etc/warden/warden.yaml 00000000000000bb --expires 90d"
        );

        let admin = key("00000000000000cc", Role::Admin, 10, None);
        let f = key_findings(&[admin], now, max, config);
        assert_eq!(f[0].severity, Severity::Serious, "{f:?}");

        let old = key("00000000000000dd", Role::Viewer, 91, Some(30));
        let f = key_findings(std::slice::from_ref(&old), now, max, config);
        assert_eq!(f.len(), 1, "{f:?}");
        assert_eq!(f[0].severity, Severity::Serious);
        assert!(f[0].finding.contains("created 91 days ago"), "{f:?}");
        assert!(!f[0].fix.contains("--expires"), "{f:?}");

        // Rotated (in its grace period), revoked or expired: not flagged.
        let mut rotated = old.clone();
        rotated.rotated_to = Some(ApiKeyId::parse("00000000000000ee").unwrap());
        let mut revoked = old.clone();
        revoked.revoked = Some(now);
        let expired = key("00000000000000ff", Role::Viewer, 200, Some(-1));
        let f = key_findings(&[rotated, revoked, expired], now, max, config);
        assert_eq!(f.len(), 1);
        assert_eq!(f[0].severity, Severity::Ok, "{f:?}");
        assert!(f[0].finding.starts_with("1 active key(s)"), "{f:?}");
    }

    #[test]
    fn only_loopback_listen_addresses_are_ok() {
        for addr in [
            "127.0.0.1:8080",
            "[::1]:8080",
            "127.0.0.1:0",
            "localhost:8080",
        ] {
            assert_eq!(listen_address(addr).severity, Severity::Ok, "{addr}");
        }
        for addr in ["0.0.0.0:8080", "[::]:8080", "10.1.2.3:8080"] {
            let f = listen_address(addr);
            assert_eq!(f.severity, Severity::Serious, "{addr}");
            assert!(f.fix.contains("TLS"), "{f:?}");
        }
        assert_eq!(listen_address("nonsense").severity, Severity::Warning);
    }

    #[test]
    fn passwords_in_store_urls_are_seen() {
        for url in [
            "postgres://warden:s3cret@db/warden",
            "postgresql://warden:s3cret@db:5432/warden?sslmode=require",
            "postgres://warden@db/warden?sslmode=require&password=s3cret",
        ] {
            assert!(url_has_password(url), "{url}");
        }
        for url in [
            "postgres://warden@db/warden",
            "postgres://warden:@db/warden",
            "postgres://db/warden?user=warden",
            "sqlite:///var/lib/warden/w.db",
        ] {
            assert!(!url_has_password(url), "{url}");
        }
    }

    #[test]
    fn fixes_quote_odd_paths() {
        assert_eq!(
            shell_word(Path::new("/etc/warden/vast.key")),
            "/etc/warden/vast.key"
        );
        assert_eq!(shell_word(Path::new("/tmp/my key")), "'/tmp/my key'");
        assert_eq!(shell_word(Path::new("/tmp/it's")), r"'/tmp/it'\''s'");
    }
}
