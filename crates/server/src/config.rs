//! Loading the config file: read, parse, validate; errors name the file.
//!
//! One YAML file holds the policy (`default_team`, `team_from_label`,
//! `teams`, `prices`, `rules`, validated by the core) and the server's own settings
//! (`storage`, `skypilot_api`, `skypilot`, `time_zone`, `budget_alerts`,
//! `vast`, `keys`, `identity`, `kubernetes`). Unknown keys are errors.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use warden_core::policy::{PriceSpec, RuleSpec, TeamFromLabel, TeamSpec};
use warden_core::{Policy, PolicySpec};

use crate::doors::skypilot::sync::client::{ApiUrl, SKYPILOT_TOKEN};
use crate::secret::SecretSource;

mod identity;
mod kubernetes;
mod problems;
mod quote;
mod seconds;
mod vast;
pub use identity::{
    check_fetch_url, OidcConfig, ASYMMETRIC_ALGORITHMS, DEFAULT_ALGORITHMS, DEFAULT_GROUPS_CLAIM,
    DEFAULT_USER_CLAIM,
};
pub use kubernetes::{
    FailurePolicy, KubernetesConfig, PodTemplatePaths, DEFAULT_GPU_MODEL_LABELS,
    DEFAULT_GPU_RESOURCES,
};
pub use vast::{PreDestroy, VastConfig, DEFAULT_KEY_ENV, VAST_CONSOLE_URL, VAST_KEY};

/// The store used when the config names none: a SQLite file next to the
/// config file.
pub const DEFAULT_STORAGE_FILE: &str = "warden.db";

/// The range of `storage_timeout_seconds`: long enough for a slow network,
/// short enough that a fail-closed answer beats SkyPilot's 30 s wait.
pub const STORAGE_TIMEOUT_RANGE: std::ops::RangeInclusive<u64> = 1..=20;

/// Seconds between two polls of the SkyPilot API server, by default.
pub const DEFAULT_SYNC_INTERVAL_SECONDS: u64 = 30;
/// Seconds one exchange with the SkyPilot API server may take, by default.
pub const DEFAULT_SYNC_TIMEOUT_SECONDS: u64 = 20;
/// Seconds a fresh allocation is left alone although its cluster is not
/// listed (yet), by default: SkyPilot lists a cluster only once it starts
/// provisioning, after the admin policy allowed it and the optimizer ran.
pub const DEFAULT_SYNC_GRACE_SECONDS: u64 = 300;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ConfigFile {
    #[serde(default)]
    storage: Option<String>,
    #[serde(default)]
    storage_timeout_seconds: Option<u64>,
    #[serde(default)]
    default_team: Option<String>,
    #[serde(default)]
    team_from_label: TeamFromLabel,
    #[serde(default)]
    teams: BTreeMap<String, TeamSpec>,
    #[serde(default)]
    prices: BTreeMap<String, PriceSpec>,
    #[serde(default)]
    rules: Vec<RuleSpec>,
    #[serde(default)]
    role_bindings: Vec<warden_core::access::RoleBindingSpec>,
    #[serde(default)]
    skypilot_api: Option<SkypilotApiFile>,
    #[serde(default)]
    time_zone: Option<String>,
    #[serde(default)]
    budget_alerts: Option<BudgetAlertsFile>,
    #[serde(default)]
    vast: Option<vast::VastFile>,
    #[serde(default)]
    keys: Option<KeysFile>,
    #[serde(default)]
    skypilot: Option<SkypilotDoorFile>,
    #[serde(default)]
    exceptions: Option<ExceptionsFile>,
    #[serde(default)]
    identity: Option<identity::IdentityFile>,
    #[serde(default)]
    kubernetes: Option<kubernetes::KubernetesFile>,
}

/// `exceptions` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ExceptionsFile {
    #[serde(default)]
    max_hours: Option<u64>,
    #[serde(default)]
    team_leads_may_lift: Option<Vec<String>>,
}

/// The longest an exception may last by default (`exceptions.max_hours`).
pub const DEFAULT_EXCEPTION_MAX_HOURS: u64 = 72;
/// The range of `exceptions.max_hours` (up to 30 days).
pub const EXCEPTION_MAX_HOURS_RANGE: std::ops::RangeInclusive<u64> = 1..=720;

/// `exceptions`: the bounds within which exceptions are granted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExceptionSettings {
    /// The longest an exception may last.
    pub max: Duration,
    /// The rules a team lead may lift (an admin may lift any rule).
    pub team_leads_may_lift: Vec<String>,
}

impl Default for ExceptionSettings {
    fn default() -> Self {
        Self {
            max: Duration::from_secs(DEFAULT_EXCEPTION_MAX_HOURS * 3600),
            team_leads_may_lift: Vec::new(),
        }
    }
}

impl ExceptionSettings {
    /// Whether `rule` is a rule of `policy` an exception may lift: a rule's
    /// name or an implicit team limit (`team.*`), never `access` or
    /// `team.resolve`.
    pub fn liftable(policy: &Policy, rule: &str) -> Result<(), String> {
        if warden_core::exception::NOT_LIFTABLE.contains(&rule) {
            return Err(format!(
                "`{rule}` cannot be lifted: it says who may act or which team a request is, not a limit"
            ));
        }
        let known = policy.rules().iter().any(|r| r.name.as_str() == rule);
        if known {
            Ok(())
        } else {
            let names: std::collections::BTreeSet<&str> =
                policy.rules().iter().map(|r| r.name.as_str()).collect();
            let names: Vec<&str> = names.into_iter().collect();
            Err(format!(
                "`{}` is not a rule of the policy; rules: {}",
                rule.chars().take(80).collect::<String>(),
                names.join(", ")
            ))
        }
    }
}

fn exception_settings(
    f: ExceptionsFile,
    policy: Option<&Policy>,
) -> Result<ExceptionSettings, Vec<String>> {
    let mut problems = Vec::new();
    let hours = f.max_hours.unwrap_or(DEFAULT_EXCEPTION_MAX_HOURS);
    if !EXCEPTION_MAX_HOURS_RANGE.contains(&hours) {
        problems.push(format!(
            "exceptions.max_hours: `{hours}` is out of range; use {} to {}",
            EXCEPTION_MAX_HOURS_RANGE.start(),
            EXCEPTION_MAX_HOURS_RANGE.end()
        ));
    }
    let lift = f.team_leads_may_lift.unwrap_or_default();
    if let Some(policy) = policy {
        for (i, rule) in lift.iter().enumerate() {
            if let Err(e) = ExceptionSettings::liftable(policy, rule) {
                problems.push(format!("exceptions.team_leads_may_lift[{i}]: {e}"));
            }
        }
    }
    if problems.is_empty() {
        Ok(ExceptionSettings {
            max: Duration::from_secs(hours * 3600),
            team_leads_may_lift: lift,
        })
    } else {
        Err(problems)
    }
}

/// `keys` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct KeysFile {
    #[serde(default)]
    max_age_days: Option<u64>,
}

/// `skypilot` (the SkyPilot door) as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct SkypilotDoorFile {
    #[serde(default)]
    trusted_servers: Option<Vec<String>>,
}

/// How long a new key works unless `warden keys create --expires` says
/// otherwise (`keys.max_age_days`), by default: the rotation rule of 90
/// days.
pub const DEFAULT_KEY_MAX_AGE_DAYS: u64 = 90;
/// The range of `keys.max_age_days`.
pub const KEY_MAX_AGE_RANGE: std::ops::RangeInclusive<u64> = 1..=3650;

/// `keys`: the lifetime of Warden keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeySettings {
    /// The default lifetime of a new key (`keys.max_age_days`).
    pub max_age: Duration,
}

impl Default for KeySettings {
    fn default() -> Self {
        Self {
            max_age: Duration::from_secs(DEFAULT_KEY_MAX_AGE_DAYS * 86_400),
        }
    }
}

fn key_settings(f: KeysFile) -> Result<KeySettings, String> {
    let days = f.max_age_days.unwrap_or(DEFAULT_KEY_MAX_AGE_DAYS);
    if KEY_MAX_AGE_RANGE.contains(&days) {
        Ok(KeySettings {
            max_age: Duration::from_secs(days * 86_400),
        })
    } else {
        Err(format!(
            "keys.max_age_days: `{days}` is out of range; use {} to {} (a key that never expires is made with `warden keys create --expires never`)",
            KEY_MAX_AGE_RANGE.start(),
            KEY_MAX_AGE_RANGE.end()
        ))
    }
}

/// Who may send server-side SkyPilot requests by default: this machine.
pub const DEFAULT_TRUSTED_SERVERS: &[&str] = &["127.0.0.0/8", "::1/128"];

/// The addresses whose SkyPilot requests are honoured as server-side
/// (`skypilot.trusted_servers`: CIDRs or single addresses).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrustedServers(Vec<ipnet::IpNet>);

impl Default for TrustedServers {
    fn default() -> Self {
        Self(
            DEFAULT_TRUSTED_SERVERS
                .iter()
                .filter_map(|c| c.parse().ok())
                .collect(),
        )
    }
}

impl TrustedServers {
    /// Parses CIDRs (`10.0.0.0/8`) or single addresses (`10.1.2.3`) of
    /// `skypilot.trusted_servers`.
    pub fn parse(list: &[String]) -> Result<Self, Vec<String>> {
        Self::parse_key("skypilot.trusted_servers", list)
    }

    /// Parses the list of config key `key` (named in the errors).
    pub fn parse_key(key: &str, list: &[String]) -> Result<Self, Vec<String>> {
        let mut out = Vec::new();
        let mut problems = Vec::new();
        for (i, text) in list.iter().enumerate() {
            let t = text.trim();
            let parsed = t
                .parse::<ipnet::IpNet>()
                .or_else(|_| t.parse::<std::net::IpAddr>().map(ipnet::IpNet::from));
            match parsed {
                Ok(net) => out.push(net.trunc()),
                Err(_) => problems.push(format!(
                    "{key}[{i}]: `{}` is not an address or CIDR; write e.g. `10.0.4.17` or `10.0.4.0/24`",
                    t.chars().take(60).collect::<String>()
                )),
            }
        }
        if problems.is_empty() {
            Ok(Self(out))
        } else {
            Err(problems)
        }
    }

    /// Whether `addr` is one of them (an IPv4-mapped IPv6 address counts
    /// as its IPv4 address).
    pub fn contains(&self, addr: std::net::IpAddr) -> bool {
        let addr = match addr {
            std::net::IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(addr, std::net::IpAddr::V4),
            v4 => v4,
        };
        self.0.iter().any(|net| net.contains(&addr))
    }

    /// The list as written back (for messages).
    pub fn describe(&self) -> String {
        self.0
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// `budget_alerts` as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct BudgetAlertsFile {
    #[serde(default)]
    webhook_url: Option<String>,
    #[serde(default)]
    webhook_timeout_seconds: Option<u64>,
    #[serde(default)]
    webhook_attempts: Option<u32>,
    #[serde(default)]
    check_interval_seconds: Option<u64>,
}

/// Seconds between two checks of every team's spend against its alert
/// thresholds, by default.
pub const DEFAULT_ALERT_CHECK_SECONDS: u64 = 60;
/// Seconds one webhook POST may take, by default.
pub const DEFAULT_WEBHOOK_TIMEOUT_SECONDS: u64 = 10;
/// Tries of one webhook POST (the first and the retries), by default.
pub const DEFAULT_WEBHOOK_ATTEMPTS: u32 = 5;

/// Server settings besides the policy that a reload (SIGHUP) also replaces.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The time zone of budget days and months (`time_zone`, default UTC).
    pub time_zone: warden_store::TimeZone,
    /// Budget alert delivery (`budget_alerts`).
    pub alerts: AlertSettings,
    /// Where server-side SkyPilot requests may come from
    /// (`skypilot.trusted_servers`).
    pub trusted_servers: TrustedServers,
    /// Warden keys (`keys`).
    pub keys: KeySettings,
    /// Time-limited exceptions (`exceptions`).
    pub exceptions: ExceptionSettings,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            time_zone: warden_store::TimeZone::UTC,
            alerts: AlertSettings::default(),
            trusted_servers: TrustedServers::default(),
            keys: KeySettings::default(),
            exceptions: ExceptionSettings::default(),
        }
    }
}

/// `budget_alerts`: where alerts go besides the log and the audit chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AlertSettings {
    /// `http(s)://` URL each alert is POSTed to as JSON, if any.
    pub webhook_url: Option<String>,
    /// Bound on one POST.
    pub webhook_timeout: Duration,
    /// Tries per alert (with backoff 1 s, 2 s, 4 s, ... up to 60 s).
    pub webhook_attempts: u32,
    /// Time between two checks of every team's spend.
    pub check_interval: Duration,
}

impl Default for AlertSettings {
    fn default() -> Self {
        Self {
            webhook_url: None,
            webhook_timeout: Duration::from_secs(DEFAULT_WEBHOOK_TIMEOUT_SECONDS),
            webhook_attempts: DEFAULT_WEBHOOK_ATTEMPTS,
            check_interval: Duration::from_secs(DEFAULT_ALERT_CHECK_SECONDS),
        }
    }
}

fn alert_settings(f: BudgetAlertsFile) -> Result<AlertSettings, Vec<String>> {
    let mut problems = Vec::new();
    let webhook_url = f.webhook_url.map(|u| u.trim().to_owned());
    if let Some(url) = &webhook_url {
        let scheme_ok = url.starts_with("http://") || url.starts_with("https://");
        let rest = url.split_once("://").map_or("", |(_, r)| r);
        if !scheme_ok || rest.is_empty() || rest.starts_with('/') {
            problems.push(
                "budget_alerts.webhook_url: not an `http://` or `https://` URL with a host; write e.g. `https://hooks.example.com/warden`".to_owned(),
            );
        }
    }
    let timeout = f
        .webhook_timeout_seconds
        .unwrap_or(DEFAULT_WEBHOOK_TIMEOUT_SECONDS);
    if !(1..=300).contains(&timeout) {
        problems.push(format!(
            "budget_alerts.webhook_timeout_seconds: `{timeout}` is out of range; use 1 to 300"
        ));
    }
    let attempts = f.webhook_attempts.unwrap_or(DEFAULT_WEBHOOK_ATTEMPTS);
    if !(1..=20).contains(&attempts) {
        problems.push(format!(
            "budget_alerts.webhook_attempts: `{attempts}` is out of range; use 1 to 20"
        ));
    }
    let interval = f
        .check_interval_seconds
        .unwrap_or(DEFAULT_ALERT_CHECK_SECONDS);
    if !(1..=86_400).contains(&interval) {
        problems.push(format!(
            "budget_alerts.check_interval_seconds: `{interval}` is out of range; use 1 to 86400"
        ));
    }
    if problems.is_empty() {
        Ok(AlertSettings {
            webhook_url,
            webhook_timeout: Duration::from_secs(timeout),
            webhook_attempts: attempts,
            check_interval: Duration::from_secs(interval),
        })
    } else {
        Err(problems)
    }
}

/// `skypilot_api` as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SkypilotApiFile {
    url: String,
    #[serde(default)]
    token_env: Option<String>,
    #[serde(default)]
    token_file: Option<PathBuf>,
    #[serde(default)]
    ca_file: Option<PathBuf>,
    #[serde(default)]
    interval_seconds: Option<u64>,
    #[serde(default)]
    timeout_seconds: Option<u64>,
    #[serde(default)]
    grace_seconds: Option<u64>,
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
    /// How the store connects (`storage_timeout_seconds`).
    pub store_options: warden_store::StoreOptions,
    /// The SkyPilot API server to sync allocations with, if any.
    pub skypilot_api: Option<SkypilotApi>,
    /// Time zone and alert delivery.
    pub settings: Settings,
    /// The Vast door (`vast`; defaults when absent).
    pub vast: VastConfig,
    /// OIDC sign-in (`identity.oidc`), if configured.
    pub oidc: Option<OidcConfig>,
    /// The Kubernetes door (`kubernetes`; defaults when absent).
    pub kubernetes: KubernetesConfig,
}

/// `skypilot_api`: where the usage sync reads the live cluster list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SkypilotApi {
    /// The API server's base URL (`https`, or `http` to this machine or
    /// without a token).
    pub url: ApiUrl,
    /// Where the service-account token is, if the server needs one (never
    /// in the config itself). Read when the sync starts, not at config
    /// load.
    pub token: Option<SecretSource>,
    /// A PEM file of CA certificates to trust besides the public roots (a
    /// private CA), resolved against the config file's directory.
    pub ca_file: Option<PathBuf>,
    /// Time between the starts of two polls.
    pub interval: Duration,
    /// Bound on each HTTP exchange.
    pub timeout: Duration,
    /// How long a fresh allocation is kept although its cluster is not
    /// listed.
    pub grace: Duration,
}

/// Validates `skypilot_api`; the errors are `key.path: problem` lines.
fn skypilot_api(path: &Path, f: SkypilotApiFile) -> Result<SkypilotApi, Vec<String>> {
    let mut problems = Vec::new();
    let url = ApiUrl::parse(&f.url)
        .map_err(|e| problems.push(format!("skypilot_api.url: {e}")))
        .ok();
    let base = path.parent().unwrap_or(Path::new(""));
    let token = match (f.token_env, f.token_file) {
        (Some(_), Some(_)) => {
            problems.push("skypilot_api: give `token_env` or `token_file`, not both".to_owned());
            None
        }
        (Some(var), None) => {
            // Service-account tokens begin `sky_`: refuse what looks like
            // one, so it is never echoed as a variable name later.
            match SecretSource::env(&var, SKYPILOT_TOKEN) {
                Ok(source) if !var.trim().starts_with("sky_") => Some(source),
                Ok(_) | Err(_) => {
                    // Not echoed: it may be the token itself.
                    problems.push(format!(
                        "skypilot_api.token_env: {}",
                        crate::secret::SecretError::EnvName {
                            what: SKYPILOT_TOKEN
                        }
                    ));
                    None
                }
            }
        }
        (None, Some(file)) => Some(SecretSource::file(file, base)),
        (None, None) => None,
    };
    let ca_file = f.ca_file.map(|file| {
        if file.is_absolute() {
            file
        } else {
            base.join(file)
        }
    });
    if let Some(url) = &url {
        if token.is_some() && !url.is_https() && !url.is_loopback() {
            problems.push(format!(
                "skypilot_api.url: `{url}` would carry the service-account token in clear to a host that is not this machine; use `https://` (with `skypilot_api.ca_file` for a private CA), or reach the server over loopback (a sidecar, or a port-forward to 127.0.0.1)"
            ));
        }
        if ca_file.is_some() && !url.is_https() {
            problems.push(format!(
                "skypilot_api.ca_file: `{url}` is not `https://`, so there is no certificate to check; remove `ca_file` or use `https://`"
            ));
        }
    }
    let mut seconds = |key: &str, given: Option<u64>, default: u64, min: u64| {
        seconds::seconds(
            &mut problems,
            &format!("skypilot_api.{key}"),
            given,
            default,
            min,
        )
    };
    let interval = seconds(
        "interval_seconds",
        f.interval_seconds,
        DEFAULT_SYNC_INTERVAL_SECONDS,
        1,
    );
    let timeout = seconds(
        "timeout_seconds",
        f.timeout_seconds,
        DEFAULT_SYNC_TIMEOUT_SECONDS,
        1,
    );
    let grace = seconds(
        "grace_seconds",
        f.grace_seconds,
        DEFAULT_SYNC_GRACE_SECONDS,
        0,
    );
    match url {
        Some(url) if problems.is_empty() => Ok(SkypilotApi {
            url,
            token,
            ca_file,
            interval,
            timeout,
            grace,
        }),
        _ => Err(problems),
    }
}

fn prefixed(path: &Path, lines: impl IntoIterator<Item = String>) -> String {
    lines
        .into_iter()
        .map(|l| {
            format!(
                "{}: {}",
                path.display(),
                quote::cap(&quote::clip_quoted(&l))
            )
        })
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
    let text = read_config_text(path)?;
    // Before serde_norway, which reads the whole text first however deep.
    warden_core::check_depth(&text, warden_core::MAX_CONFIG_DEPTH)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    if is_empty_yaml(&text) {
        return Err(format!(
            "{}: the config file is empty; it must define at least one team under `teams` (see the README's config reference)",
            path.display()
        ));
    }
    let de = serde_norway::Deserializer::from_str(&text);
    let file: ConfigFile = match serde_path_to_error::deserialize(de) {
        Ok(file) => file,
        Err(e) => {
            // Every problem, section by section, when the file reads as YAML.
            let all = problems::parse_problems(&text);
            if !all.is_empty() {
                return Err(prefixed(path, all));
            }
            // A `?` segment is a place serde could not name: keep the part
            // before it.
            let at = e.path().to_string();
            let at = at.split(".?").next().unwrap_or("").to_owned();
            let msg = e.into_inner().to_string();
            let line = match at.as_str() {
                "" | "." | "?" => msg,
                // serde_norway's message may start with the path already.
                at if msg.starts_with(&format!("{at}: ")) => msg,
                at => format!("{at}: {msg}"),
            };
            return Err(prefixed(path, [line]));
        }
    };
    let mut settings_problems = Vec::new();
    if file.teams.is_empty() {
        settings_problems.push(
            "teams: no team is defined, so every launch would be denied (`team.resolve`); define at least one team under `teams`".to_owned(),
        );
    }
    let quota_teams: Vec<String> = file
        .teams
        .iter()
        .filter(|(_, t)| t.quotas.is_some() || t.budgets.is_some())
        .map(|(n, _)| format!("`{n}`"))
        .collect();
    let storage = storage_url(path, file.storage.as_deref()).and_then(|s| match s {
        None if !quota_teams.is_empty() => Err(format!(
            "storage: `none` cannot enforce the quotas or budgets of team(s) {}; name a store or remove them",
            quota_teams.join(", ")
        )),
        s => Ok(s),
    });
    let store_options = match file.storage_timeout_seconds {
        None => warden_store::StoreOptions::default(),
        Some(n) if STORAGE_TIMEOUT_RANGE.contains(&n) => warden_store::StoreOptions {
            timeout: Duration::from_secs(n),
        },
        Some(n) => {
            settings_problems.push(format!(
                "storage_timeout_seconds: `{n}` is out of range; use {} to {} seconds (SkyPilot waits 30 s for an answer)",
                STORAGE_TIMEOUT_RANGE.start(),
                STORAGE_TIMEOUT_RANGE.end()
            ));
            warden_store::StoreOptions::default()
        }
    };
    let api = file.skypilot_api.map(|f| skypilot_api(path, f)).transpose();
    let identity_file = file.identity.unwrap_or_default();
    let skypilot_user_claim = identity_file.skypilot_user_claim.unwrap_or_default();
    let oidc = identity::oidc_config(path, identity_file).unwrap_or_else(|e| {
        settings_problems.extend(e);
        None
    });
    let vast = vast::vast_config(path, file.vast.unwrap_or_default());
    let kubernetes = kubernetes::kubernetes_config(path, file.kubernetes.unwrap_or_default())
        .unwrap_or_else(|e| {
            settings_problems.extend(e);
            KubernetesConfig::default()
        });
    let time_zone = match file.time_zone.as_deref().map(str::trim) {
        None => warden_store::TimeZone::UTC,
        Some(name) => warden_store::parse_time_zone(name).unwrap_or_else(|e| {
            settings_problems.push(format!("time_zone: {e}"));
            warden_store::TimeZone::UTC
        }),
    };
    let alerts = match file.budget_alerts.map(alert_settings).transpose() {
        Ok(a) => a.unwrap_or_default(),
        Err(e) => {
            settings_problems.extend(e);
            AlertSettings::default()
        }
    };
    let keys = key_settings(file.keys.unwrap_or_default()).unwrap_or_else(|e| {
        settings_problems.push(e);
        KeySettings::default()
    });
    let trusted_servers = match file.skypilot.and_then(|s| s.trusted_servers) {
        None => TrustedServers::default(),
        Some(list) => TrustedServers::parse(&list).unwrap_or_else(|e| {
            settings_problems.extend(e);
            TrustedServers::default()
        }),
    };
    let mut settings = Settings {
        time_zone,
        alerts,
        trusted_servers,
        keys,
        exceptions: ExceptionSettings::default(),
    };
    let spec = PolicySpec {
        default_team: file.default_team,
        team_from_label: file.team_from_label,
        teams: file.teams,
        prices: file.prices,
        rules: file.rules,
        role_bindings: file.role_bindings,
        skypilot_user_claim,
    };
    let compiled = Policy::compile(spec);
    let exceptions =
        exception_settings(file.exceptions.unwrap_or_default(), compiled.as_ref().ok())
            .unwrap_or_else(|e| {
                settings_problems.extend(e);
                ExceptionSettings::default()
            });
    settings.exceptions = exceptions;
    match (compiled, storage, api, vast) {
        (Ok(policy), Ok(storage), Ok(skypilot_api), Ok(vast)) if settings_problems.is_empty() => {
            Ok(Config {
                policy,
                storage,
                store_options,
                skypilot_api,
                settings,
                vast,
                oidc,
                kubernetes,
            })
        }
        (policy, storage, api, vast) => {
            let mut lines: Vec<String> = settings_problems;
            if let Err(e) = vast {
                lines.extend(e);
            }
            if let Err(e) = storage {
                lines.push(e);
            }
            if let Err(e) = api {
                lines.extend(e);
            }
            if let Err(e) = policy {
                lines.extend(e.problems.iter().map(ToString::to_string));
            }
            Err(prefixed(path, lines))
        }
    }
}

/// The largest config file Warden reads. Real ones are a few KiB; a
/// generated one with thousands of teams stays far below this.
pub const MAX_CONFIG_BYTES: u64 = 16 * 1024 * 1024;

/// Reads the config file, refusing one over [`MAX_CONFIG_BYTES`] before
/// reading it whole.
fn read_config_text(path: &Path) -> Result<String, String> {
    use std::io::Read as _;
    let file = std::fs::File::open(path)
        .map_err(|e| format!("{}: cannot read the config file: {e}", path.display()))?;
    let mut bytes = Vec::new();
    file.take(MAX_CONFIG_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| format!("{}: cannot read the config file: {e}", path.display()))?;
    if bytes.len() as u64 > MAX_CONFIG_BYTES {
        return Err(format!(
            "{}: the config file is larger than the {} MiB limit",
            path.display(),
            MAX_CONFIG_BYTES / (1024 * 1024)
        ));
    }
    String::from_utf8(bytes).map_err(|e| {
        format!(
            "{}: the config file is not UTF-8 (byte {} is invalid)",
            path.display(),
            e.utf8_error().valid_up_to()
        )
    })
}

/// Whether `text` holds no YAML content: only blanks, comments, document
/// markers or a bare `null`/`~`.
fn is_empty_yaml(text: &str) -> bool {
    text.lines()
        .map(|l| l.split_once(" #").map_or(l, |(before, _)| before).trim())
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .all(|l| matches!(l, "---" | "..." | "~" | "null" | "Null" | "NULL"))
}

/// Problems of the secret files a config names (`vast.api_key_file`,
/// `skypilot_api.token_file`): missing, unreadable, readable by group or
/// others, or not holding a usable key. `warden serve` refuses to start on
/// any of them, so `warden check` reports them too. Secrets in environment
/// variables are not checked: the serving machine's environment may differ.
pub fn secret_file_problems(config: &Config) -> Vec<String> {
    let mut problems = Vec::new();
    if let SecretSource::File(path) = &config.vast.key {
        if let Err(e) = crate::secret::read_private_file(path, vast::VAST_KEY) {
            problems.push(format!("vast.api_key_file: {e}"));
        }
    }
    if let Some(api) = &config.skypilot_api {
        if let Some(source @ SecretSource::File(_)) = &api.token {
            if let Err(e) = crate::doors::skypilot::sync::client::Token::read(source) {
                problems.push(format!("skypilot_api.token_file: {e}"));
            }
        }
        if let Some(path) = &api.ca_file {
            if let Err(e) = crate::doors::skypilot::sync::client::read_ca_file(path) {
                problems.push(e.to_string());
            }
        }
    }
    if let Some(path) = config.oidc.as_ref().and_then(|o| o.ca_file.as_ref()) {
        if let Err(e) = crate::http_client::read_ca_file(path) {
            problems.push(format!("identity.oidc.ca_file: {e}"));
        }
    }
    problems
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

    #[test]
    fn the_skypilot_user_claim_is_read_and_checked() {
        let d = load("claim-default", "storage: none\n").unwrap();
        assert_eq!(
            d.policy.skypilot_user_claim(),
            warden_core::SkypilotUserClaim::Name
        );
        let c = load(
            "claim-id",
            "storage: none\nidentity:\n  skypilot_user_claim: email_local_part\n",
        )
        .unwrap();
        assert_eq!(
            c.policy.skypilot_user_claim(),
            warden_core::SkypilotUserClaim::EmailLocalPart
        );
        let e = load(
            "claim-bad",
            "storage: none\nidentity:\n  skypilot_user_claim: email\n",
        )
        .unwrap_err();
        assert!(
            e.contains("skypilot_user_claim") && e.contains("email_local_part"),
            "{e}"
        );
    }

    #[test]
    fn trusted_servers_are_addresses_or_cidrs_and_default_to_loopback() {
        let ip = |t: &str| t.parse::<std::net::IpAddr>().unwrap();
        let d = load("trusted-default", "storage: none\n").unwrap();
        let t = &d.settings.trusted_servers;
        assert!(t.contains(ip("127.0.0.1")) && t.contains(ip("::1")));
        assert!(t.contains(ip("::ffff:127.0.0.1")), "IPv4-mapped loopback");
        assert!(!t.contains(ip("10.0.0.1")));
        let c = load(
            "trusted-set",
            "storage: none\nskypilot:\n  trusted_servers: [10.0.4.17, '10.8.0.0/16', 'fd00::/8']\n",
        )
        .unwrap();
        let t = &c.settings.trusted_servers;
        assert!(t.contains(ip("10.0.4.17")) && !t.contains(ip("10.0.4.18")));
        assert!(t.contains(ip("10.8.200.1")) && t.contains(ip("fd00::1")));
        assert!(
            !t.contains(ip("127.0.0.1")),
            "the list replaces the default"
        );
        let e = load(
            "trusted-bad",
            "storage: none\nskypilot:\n  trusted_servers: [10.0.0.0/33, api-server]\n",
        )
        .unwrap_err();
        assert!(
            e.contains("skypilot.trusted_servers[0]: `10.0.0.0/33` is not an address or CIDR")
                && e.contains("skypilot.trusted_servers[1]: `api-server`"),
            "{e}"
        );
        let e = load(
            "trusted-unknown",
            "storage: none\nskypilot:\n  trusted: []\n",
        )
        .unwrap_err();
        assert!(e.contains("unknown field `trusted`"), "{e}");
    }

    #[test]
    fn key_lifetime_defaults_to_ninety_days_and_is_bounded() {
        let c = load("keys-default", "storage: none\n").unwrap();
        assert_eq!(c.settings.keys.max_age, Duration::from_secs(90 * 86_400));
        let c = load("keys-set", "storage: none\nkeys: {max_age_days: 30}\n").unwrap();
        assert_eq!(c.settings.keys.max_age, Duration::from_secs(30 * 86_400));
        for bad in ["0", "3651"] {
            let e = load(
                "keys-bad",
                &format!("storage: none\nkeys: {{max_age_days: {bad}}}\n"),
            )
            .unwrap_err();
            assert!(
                e.contains(&format!("keys.max_age_days: `{bad}` is out of range")),
                "{e}"
            );
        }
        let e = load("keys-never", "storage: none\nkeys: {max_age_days: never}\n").unwrap_err();
        assert!(e.contains("keys.max_age_days"), "{e}");
    }

    /// Loads `text` as a config file in a fresh temp dir, with a team
    /// added when it defines none (a config without teams is refused).
    fn load(name: &str, text: &str) -> Result<Config, String> {
        let text = if text.contains("teams:") {
            text.to_owned()
        } else {
            format!("{text}\nteams:\n  t: {{}}\n")
        };
        let text = text.as_str();
        let dir = std::env::temp_dir().join(format!("warden-config-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("warden.yaml");
        std::fs::write(&path, text).unwrap();
        let out = load_config(&path);
        let _ = std::fs::remove_dir_all(&dir);
        out
    }

    #[test]
    fn oidc_has_defaults_and_needs_https_outside_this_machine() {
        let c = load("oidc-none", "storage: none\n").unwrap();
        assert!(c.oidc.is_none());
        let c = load(
            "oidc-min",
            "storage: none\nidentity:\n  oidc:\n    issuer: https://idp.example.com/realms/acme\n    audience: warden\n",
        )
        .unwrap();
        let o = c.oidc.unwrap();
        assert_eq!(o.issuer, "https://idp.example.com/realms/acme");
        assert_eq!(
            o.discovery_url.as_str(),
            "https://idp.example.com/realms/acme/.well-known/openid-configuration"
        );
        assert_eq!(
            (
                o.audience.as_str(),
                o.groups_claim.as_str(),
                o.user_claim.as_str()
            ),
            ("warden", "groups", "email")
        );
        assert_eq!(o.algorithms, DEFAULT_ALGORITHMS);
        assert_eq!(o.ca_file, None);
        // A trailing slash stays in the issuer (it is compared exactly)
        // and not doubled in the discovery URL; a relative CA file is
        // resolved beside the config.
        let c = load(
            "oidc-full",
            "storage: none\nidentity:\n  oidc:\n    issuer: https://tenant.idp.example/\n    audience: warden\n    groups_claim: roles\n    user_claim: sub\n    algorithms: [ES384, PS256, EdDSA]\n    ca_file: idp-ca.pem\n",
        )
        .unwrap();
        let o = c.oidc.unwrap();
        assert_eq!(o.issuer, "https://tenant.idp.example/");
        assert_eq!(
            o.discovery_url.as_str(),
            "https://tenant.idp.example/.well-known/openid-configuration"
        );
        assert_eq!(
            (o.groups_claim.as_str(), o.user_claim.as_str()),
            ("roles", "sub")
        );
        assert_eq!(
            o.algorithms,
            [
                jsonwebtoken::Algorithm::ES384,
                jsonwebtoken::Algorithm::PS256,
                jsonwebtoken::Algorithm::EdDSA
            ]
        );
        let ca = o.ca_file.unwrap();
        assert!(ca.is_absolute() && ca.ends_with("idp-ca.pem"), "{ca:?}");
        // Plain http only to this machine (the tests' issuers).
        for ok in [
            "http://127.0.0.1:8080/realms/t",
            "http://localhost:1",
            "http://[::1]:9/x",
        ] {
            let c = load(
                "oidc-loopback",
                &format!("storage: none\nidentity:\n  oidc: {{issuer: '{ok}', audience: w}}\n"),
            )
            .unwrap();
            assert_eq!(c.oidc.unwrap().issuer, ok);
        }
    }

    #[test]
    fn oidc_errors_name_the_key_and_the_fix() {
        let e = load(
            "oidc-bad",
            "storage: none\nidentity:\n  oidc:\n    issuer: http://idp.example.com\n    audience: ' '\n    user_claim: ''\n    algorithms: [RS256, none, HS256, RS256, rs256]\n    ca_file: ca.pem\n",
        )
        .unwrap_err();
        for want in [
            "identity.oidc.issuer: `http://idp.example.com` is plain `http://` to another machine",
            "use `https://`",
            "identity.oidc.audience: empty",
            "identity.oidc.user_claim: give a claim name of 1 to 64 characters (default `email`)",
            "identity.oidc.algorithms[1]: `none` means unsigned tokens, which anyone can forge; it is never accepted",
            "identity.oidc.algorithms[2]: `HS256` is a shared-secret (HMAC) algorithm",
            "identity.oidc.algorithms[3]: `RS256` is listed twice",
            "identity.oidc.algorithms[4]: `rs256` is not a JWS algorithm Warden knows; use RS256, RS384",
        ] {
            assert!(e.contains(want), "missing {want:?} in:\n{e}");
        }
        for (issuer, want) in [
            (
                "ftp://idp.example.com",
                "identity.oidc.issuer: scheme `ftp` is not supported",
            ),
            (
                "idp.example.com",
                "identity.oidc.issuer: `idp.example.com` is not a URL",
            ),
            (
                "https://u:pw@idp.example.com",
                "identity.oidc.issuer: the URL carries credentials",
            ),
            (
                "https://idp.example.com/?realm=a",
                "has a query or fragment",
            ),
        ] {
            let e = load(
                "oidc-issuer",
                &format!("storage: none\nidentity:\n  oidc: {{issuer: '{issuer}', audience: w}}\n"),
            )
            .unwrap_err();
            assert!(e.contains(want), "{issuer}: {e}");
            assert!(!e.contains("pw@"), "{e}");
        }
        let e = load(
            "oidc-empty-algs",
            "storage: none\nidentity:\n  oidc: {issuer: 'https://i', audience: w, algorithms: []}\n",
        )
        .unwrap_err();
        assert!(e.contains("identity.oidc.algorithms: empty"), "{e}");
        let e = load(
            "oidc-ca-http",
            "storage: none\nidentity:\n  oidc: {issuer: 'http://127.0.0.1:1', audience: w, ca_file: ca.pem}\n",
        )
        .unwrap_err();
        assert!(
            e.contains("identity.oidc.ca_file: the issuer `http://127.0.0.1:1` is not `https://`"),
            "{e}"
        );
        // Unknown and missing keys, by path.
        let e = load(
            "oidc-typo",
            "storage: none\nidentity:\n  oidc: {issuer: 'https://i', audience: w, group_claim: g}\n",
        )
        .unwrap_err();
        assert!(
            e.contains("identity.oidc") && e.contains("unknown field `group_claim`"),
            "{e}"
        );
        let e = load(
            "oidc-no-aud",
            "storage: none\nidentity:\n  oidc: {issuer: 'https://i'}\n",
        )
        .unwrap_err();
        assert!(
            e.contains("identity.oidc") && e.contains("missing field `audience`"),
            "{e}"
        );
        let e = load("identity-typo", "storage: none\nidentity:\n  odic: {}\n").unwrap_err();
        assert!(e.contains("unknown field `odic`"), "{e}");
    }

    #[test]
    fn skypilot_api_has_defaults_and_resolves_the_token_file() {
        let c = load(
            "api-ok",
            "storage: none\nskypilot_api:\n  url: http://127.0.0.1:46580\n  token_file: secret/token\n",
        )
        .unwrap();
        let api = c.skypilot_api.unwrap();
        assert_eq!(api.url.to_string(), "http://127.0.0.1:46580");
        assert_eq!(api.interval, Duration::from_secs(30));
        assert_eq!(api.timeout, Duration::from_secs(20));
        assert_eq!(api.grace, Duration::from_secs(300));
        match api.token {
            Some(SecretSource::File(f)) => assert!(f.ends_with("secret/token") && f.is_absolute()),
            other => panic!("{other:?}"),
        }
        let c = load("api-none", "storage: none\n").unwrap();
        assert!(c.skypilot_api.is_none());
    }

    #[test]
    fn time_zone_and_alerts_have_defaults_and_precise_errors() {
        let c = load("tz-default", "storage: none\n").unwrap();
        assert_eq!(c.settings.time_zone, warden_store::TimeZone::UTC);
        assert_eq!(c.settings.alerts, AlertSettings::default());
        let c = load(
            "tz-ok",
            "storage: none\ntime_zone: Europe/Berlin\nbudget_alerts:\n  webhook_url: https://hooks.example.com/w\n  webhook_attempts: 3\n",
        )
        .unwrap();
        assert_eq!(c.settings.time_zone.iana_name(), Some("Europe/Berlin"));
        assert_eq!(c.settings.alerts.webhook_attempts, 3);
        assert_eq!(
            c.settings.alerts.webhook_url.as_deref(),
            Some("https://hooks.example.com/w")
        );
        let e = load(
            "tz-bad",
            "storage: none\ntime_zone: Europe/Berlín\nbudget_alerts:\n  webhook_url: ftp://x\n  check_interval_seconds: 0\n",
        )
        .unwrap_err();
        for want in [
            "time_zone: `Europe/Berlín` is not a known IANA time zone",
            "budget_alerts.webhook_url: not an `http://` or `https://` URL",
            "budget_alerts.check_interval_seconds: `0` is out of range",
        ] {
            assert!(e.contains(want), "missing {want:?} in:\n{e}");
        }
    }

    /// A config nested past the limit is refused before serde_norway reads
    /// it, naming the file, the place and the limit.
    #[test]
    fn deep_configs_are_refused_before_parsing() {
        for (name, text) in [
            (
                "deep-flow",
                format!("teams: {}{}\n", "[".repeat(100_000), "]".repeat(100_000)),
            ),
            ("deep-map", format!("teams: {}\n", "{a: ".repeat(100_000))),
            (
                "deep-block",
                format!("rules:\n  {}x\n", "- ".repeat(100_000)),
            ),
        ] {
            let e = load(name, &text).unwrap_err();
            assert!(
                e.contains("warden.yaml: line ")
                    && e.contains("nested deeper than the limit of 64 levels"),
                "{name}: {e}"
            );
        }
    }

    /// An empty config, and one without teams, are refused: loaded by
    /// SIGHUP they would deny every launch.
    #[test]
    fn empty_configs_and_configs_without_teams_are_refused() {
        for (name, text) in [
            ("empty", ""),
            ("blank", "\n  \n"),
            ("comments", "# nothing yet\n---\n"),
            ("null", "~\n"),
        ] {
            let dir =
                std::env::temp_dir().join(format!("warden-config-{name}-{}", std::process::id()));
            std::fs::create_dir_all(&dir).unwrap();
            let path = dir.join("warden.yaml");
            std::fs::write(&path, text).unwrap();
            let e = load_config(&path).unwrap_err();
            let _ = std::fs::remove_dir_all(&dir);
            assert!(e.contains("the config file is empty"), "{name}: {e}");
        }
        let e = load("no-teams", "storage: none\nteams: {}\n").unwrap_err();
        assert!(e.contains("teams: no team is defined"), "{e}");
        assert!(load("one-team", "storage: none\nteams: {ml: {}}\n").is_ok());
    }

    /// `team_from_label` is a top-level key like the rest of the policy;
    /// another value is refused naming the key and the choices.
    #[test]
    fn team_from_label_reaches_the_policy() {
        let c = load("label-default", "storage: none\n").unwrap();
        assert!(c.policy.team_from_label(true) && !c.policy.team_from_label(false));
        let c = load("label-always", "storage: none\nteam_from_label: always\n").unwrap();
        assert!(c.policy.team_from_label(false));
        let c = load("label-never", "storage: none\nteam_from_label: never\n").unwrap();
        assert!(!c.policy.team_from_label(true));
        let e = load("label-bad", "storage: none\nteam_from_label: server_side\n").unwrap_err();
        assert!(
            e.contains("warden.yaml: line 2: team_from_label: ")
                && e.contains(
                    "unknown variant `server_side`, expected one of `client_side`, `always`, `never`"
                ),
            "{e}"
        );
    }

    #[test]
    fn skypilot_api_errors_name_the_key() {
        let e = load(
            "api-typo",
            "skypilot_api:\n  url: http://h:1\n  intervall_seconds: 5\n",
        )
        .unwrap_err();
        assert!(
            e.contains("skypilot_api") && e.contains("unknown field `intervall_seconds`"),
            "{e}"
        );
        let e = load(
            "api-bad",
            "skypilot_api:\n  url: ftp://sky.example.com\n  token_env: SKYPILOT_TOKEN\n  token_file: /t\n  interval_seconds: 0\n",
        )
        .unwrap_err();
        for want in [
            "skypilot_api.url: scheme `ftp` is not supported",
            "give `token_env` or `token_file`, not both",
            "skypilot_api.interval_seconds: `0` is out of range",
        ] {
            assert!(e.contains(want), "missing {want:?} in:\n{e}");
        }
        let e = load(
            "api-token",
            "skypilot_api:\n  url: http://h:1\n  token_env: sky_0123456789abcdef\n",
        )
        .unwrap_err();
        assert!(
            e.contains("skypilot_api.token_env") && !e.contains("sky_0123"),
            "{e}"
        );
        let e = load("api-no-url", "skypilot_api: {token_env: X}\n").unwrap_err();
        assert!(e.contains("missing field `url`"), "{e}");
    }

    #[test]
    fn a_token_never_crosses_the_network_in_clear() {
        // Plain http to another host with a token: refused, with the fix.
        for token in ["token_env: SKY_TOKEN", "token_file: sky.token"] {
            let e = load(
                "api-clear",
                &format!("skypilot_api:\n  url: http://sky.internal:46580\n  {token}\n"),
            )
            .unwrap_err();
            assert!(
                e.contains("skypilot_api.url: `http://sky.internal:46580` would carry the service-account token in clear")
                    && e.contains("use `https://`"),
                "{e}"
            );
        }
        // Without a token, to this machine, or over https: fine.
        for ok in [
            "skypilot_api:\n  url: http://sky.internal:46580\n",
            "skypilot_api:\n  url: http://127.0.0.1:46580\n  token_env: SKY_TOKEN\n",
            "skypilot_api:\n  url: http://localhost:46580\n  token_env: SKY_TOKEN\n",
            "skypilot_api:\n  url: https://sky.internal\n  token_env: SKY_TOKEN\n  ca_file: ca.pem\n",
        ] {
            let c = load("api-ok", &format!("storage: none\n{ok}")).unwrap();
            let api = c.skypilot_api.unwrap();
            if let Some(ca) = api.ca_file {
                assert!(ca.is_absolute() && ca.ends_with("ca.pem"), "{ca:?}");
            }
        }
        // A CA file with plain http has nothing to check.
        let e = load(
            "api-ca-http",
            "skypilot_api:\n  url: http://127.0.0.1:1\n  ca_file: ca.pem\n",
        )
        .unwrap_err();
        assert!(
            e.contains("skypilot_api.ca_file: `http://127.0.0.1:1` is not `https://`"),
            "{e}"
        );
    }
}
