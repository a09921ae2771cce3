//! Admin commands over the store: `warden audit ...`, `warden allocations ...`,
//! `warden sync ...`.

use std::path::Path;
use std::process::ExitCode;
use std::time::SystemTime;

use anyhow::Context as _;
use warden_core::{Door, TeamName};
use warden_server::config::load_config;
use warden_store::{AllocationId, AllocationName, AuditRecord, EndTarget, Store, UnixMicros};

use crate::table::{money_decimals, Align, Table};

/// Output format of `warden audit export`.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum ExportFormat {
    /// One JSON object per line.
    Jsonl,
    /// CSV with a header row.
    Csv,
}

pub(crate) fn now() -> UnixMicros {
    UnixMicros::from_system_time(SystemTime::now())
}

/// Parses `--since`/`--until`: a UTC date/time (`2026-11-01`,
/// `2026-11-01T08:00:00Z`) or an age before now (`90m`, `12h`, `7d`).
pub fn parse_instant(text: &str, now: UnixMicros) -> Result<UnixMicros, String> {
    let t = text.trim();
    let unit = match t.chars().last() {
        Some('m') => Some(60_000_000_i64),
        Some('h') => Some(3_600_000_000),
        Some('d') => Some(86_400_000_000),
        Some('w') => Some(7 * 86_400_000_000),
        _ => None,
    };
    if let (Some(unit), Some(n)) = (unit, t.get(..t.len().saturating_sub(1))) {
        if let Ok(n) = n.parse::<i64>() {
            if n >= 0 {
                return Ok(UnixMicros::from_micros(
                    now.micros().saturating_sub(n.saturating_mul(unit)),
                ));
            }
        }
    }
    UnixMicros::parse_rfc3339(t).map_err(|e| format!("{e}, or an age such as `7d`, `12h`, `90m`"))
}

async fn open(config: &Path) -> anyhow::Result<Store> {
    let cfg = load_config(config).map_err(anyhow::Error::msg)?;
    let Some(url) = cfg.storage else {
        anyhow::bail!("{}: `storage: none` names no store", config.display());
    };
    Store::connect(&url)
        .await
        .with_context(|| format!("cannot open the store named by {}", config.display()))
}

pub(crate) fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

/// `warden audit verify`: exit 0 when the chain is intact, 1 with the first
/// problem otherwise.
pub fn audit_verify(config: &Path) -> anyhow::Result<ExitCode> {
    runtime()?.block_on(async {
        let store = open(config).await?;
        let report = store.verify_audit().await?;
        store.close().await;
        let head = report.head.as_ref().map_or("empty".to_owned(), |h| {
            format!("head seq {} hash {}", h.seq, h.hash)
        });
        match &report.problem {
            None => {
                say!(
                    "audit chain intact: {} records checked, {head}",
                    report.records_checked
                );
                Ok(ExitCode::SUCCESS)
            }
            Some(problem) => {
                eprintln!(
                    "audit chain BROKEN: {problem} ({} records checked, {head})",
                    report.records_checked
                );
                Ok(ExitCode::FAILURE)
            }
        }
    })
}

pub(crate) fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_owned()
    }
}

fn record_json(r: &AuditRecord) -> serde_json::Value {
    let payload: serde_json::Value = serde_json::from_str(&r.payload)
        .unwrap_or_else(|_| serde_json::Value::String(r.payload.clone()));
    serde_json::json!({
        "seq": r.seq,
        "at": r.at.to_string(),
        "kind": r.kind,
        "payload": payload,
        "prev_hash": r.prev_hash,
        "hash": r.hash,
    })
}

/// `warden audit export`.
pub fn audit_export(
    config: &Path,
    since: Option<&str>,
    until: Option<&str>,
    format: ExportFormat,
) -> anyhow::Result<ExitCode> {
    let now = now();
    let since = match since {
        Some(s) => parse_instant(s, now).map_err(|e| anyhow::anyhow!("--since: {e}"))?,
        None => UnixMicros::from_micros(i64::MIN),
    };
    let until = match until {
        Some(s) => parse_instant(s, now).map_err(|e| anyhow::anyhow!("--until: {e}"))?,
        None => UnixMicros::from_micros(i64::MAX),
    };
    if since >= until {
        anyhow::bail!("--since must be before --until");
    }
    runtime()?.block_on(async {
        let store = open(config).await?;
        let records = store.export_audit(since, until).await?;
        store.close().await;
        match format {
            ExportFormat::Jsonl => {
                for r in &records {
                    say!("{}", record_json(r));
                }
            }
            ExportFormat::Csv => {
                say!("seq,at,kind,payload,prev_hash,hash");
                for r in &records {
                    say!(
                        "{},{},{},{},{},{}",
                        r.seq,
                        r.at,
                        csv_field(&r.kind),
                        csv_field(&r.payload),
                        r.prev_hash,
                        r.hash
                    );
                }
            }
        }
        Ok(ExitCode::SUCCESS)
    })
}

/// `warden allocations list`.
pub fn allocations_list(config: &Path, team: Option<&str>) -> anyhow::Result<ExitCode> {
    let team = team
        .map(TeamName::parse)
        .transpose()
        .map_err(|e| anyhow::anyhow!("--team: {e}"))?;
    runtime()?.block_on(async {
        let store = open(config).await?;
        let live = store.list_live(team.as_ref()).await?;
        store.close().await;
        let mut table = Table::new(&[
            ("id", Align::Right),
            ("door", Align::Left),
            ("team", Align::Left),
            ("user", Align::Left),
            ("name", Align::Left),
            ("gpus", Align::Right),
            ("model", Align::Left),
            ("$/hour", Align::Right),
            ("started", Align::Left),
        ]);
        let decimals = money_decimals(live.iter().map(|a| a.hourly));
        for a in &live {
            table.row([
                a.id.to_string(),
                a.door.as_str().to_owned(),
                a.team.to_string(),
                a.user.clone().unwrap_or_else(|| "-".to_owned()),
                a.name.to_string(),
                a.gpus.to_string(),
                a.gpu_model.as_ref().map_or("-", |m| m.as_str()).to_owned(),
                a.hourly.with_decimals(decimals),
                a.started.to_string(),
            ]);
        }
        for line in table.lines() {
            say!("{line}");
        }
        say!("{} live allocation(s)", live.len());
        Ok(ExitCode::SUCCESS)
    })
}

fn parse_door(s: &str) -> anyhow::Result<Door> {
    match s {
        "skypilot" => Ok(Door::Skypilot),
        "vast" => Ok(Door::Vast),
        "kubernetes" => Ok(Door::Kubernetes),
        other => anyhow::bail!("--door: unknown door `{other}`; use skypilot, vast or kubernetes"),
    }
}

/// `warden allocations end`.
pub fn allocations_end(
    config: &Path,
    id: Option<i64>,
    door: Option<&str>,
    name: Option<&str>,
) -> anyhow::Result<ExitCode> {
    let target = match (id, door, name) {
        (Some(id), None, None) => EndTarget::Id(AllocationId::new(id)),
        (None, Some(door), Some(name)) => EndTarget::Name {
            door: parse_door(door)?,
            name: AllocationName::parse(name).map_err(|e| anyhow::anyhow!("--name: {e}"))?,
        },
        _ => anyhow::bail!("give either --id ID, or --door DOOR and --name NAME"),
    };
    runtime()?.block_on(async {
        let store = open(config).await?;
        let ended = store.end(&target, now()).await?;
        store.close().await;
        if ended.is_empty() {
            eprintln!("no live allocation matches; nothing ended");
            return Ok(ExitCode::FAILURE);
        }
        for a in &ended {
            say!(
                "ended allocation {} ({} `{}` of team `{}`)",
                a.id,
                a.door.as_str(),
                a.name,
                a.team
            );
        }
        Ok(ExitCode::SUCCESS)
    })
}

/// `warden sync skypilot`: one poll and reconcile; prints the report as JSON.
/// Exit 0 when everything was done, 1 when something could not be.
pub fn sync_skypilot(config: &Path) -> anyhow::Result<ExitCode> {
    use warden_server::doors::skypilot::sync::{self, client::SkypilotClient, ReconcileOptions};
    let cfg = load_config(config).map_err(anyhow::Error::msg)?;
    let Some(api) = cfg.skypilot_api else {
        anyhow::bail!(
            "{}: no `skypilot_api` to sync with; add `skypilot_api: {{url: http://HOST:46580}}`",
            config.display()
        );
    };
    let Some(url) = cfg.storage.as_deref() else {
        anyhow::bail!(
            "{}: `storage: none` names no store to sync",
            config.display()
        );
    };
    let client = SkypilotClient::from_config(&api)?;
    runtime()?.block_on(async {
        let store = Store::connect(url)
            .await
            .with_context(|| format!("cannot open the store named by {}", config.display()))?;
        let options = ReconcileOptions { grace: api.grace };
        let poll = sync::poll_once(&client, &store, &cfg.policy, &options).await;
        store.close().await;
        let poll = poll?;
        say!("{}", serde_json::to_string_pretty(&poll)?);
        Ok(if poll.report.errors.is_empty() {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        })
    })
}

/// `warden sync k8s`: reconciles the `kubernetes` allocations with a pod
/// list export (see [`warden_server::doors::kubernetes::sync`]).
pub fn sync_k8s(config: &Path, pods: &Path) -> anyhow::Result<ExitCode> {
    use warden_server::doors::kubernetes::sync;
    let cfg = load_config(config).map_err(anyhow::Error::msg)?;
    let Some(url) = cfg.storage.as_deref() else {
        anyhow::bail!(
            "{}: `storage: none` names no store to sync",
            config.display()
        );
    };
    let size = std::fs::metadata(pods)
        .with_context(|| format!("cannot read the pod list {}", pods.display()))?
        .len();
    if size > sync::MAX_POD_LIST_BYTES as u64 {
        anyhow::bail!(
            "{}: {size} bytes, over the {}-byte limit; export one namespace at a time",
            pods.display(),
            sync::MAX_POD_LIST_BYTES
        );
    }
    let text = std::fs::read(pods)
        .with_context(|| format!("cannot read the pod list {}", pods.display()))?;
    let (workloads, problems) = sync::workloads(&cfg.kubernetes, &text)
        .map_err(|e| anyhow::anyhow!("{}: {e}", pods.display()))?;
    runtime()?.block_on(async {
        let store = Store::connect(url)
            .await
            .with_context(|| format!("cannot open the store named by {}", config.display()))?;
        let now = UnixMicros::from_system_time(std::time::SystemTime::now());
        let report = sync::reconcile(
            &store,
            &cfg.policy,
            &workloads,
            now,
            cfg.kubernetes.sync_grace,
        )
        .await;
        store.close().await;
        let mut report = report?;
        report.skipped.extend(problems);
        say!("{}", serde_json::to_string_pretty(&report)?);
        Ok(if report.errors.is_empty() {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instants_are_dates_or_ages() {
        let now = UnixMicros::from_micros(10 * 86_400_000_000);
        assert_eq!(
            parse_instant("7d", now).unwrap().micros(),
            3 * 86_400_000_000
        );
        assert_eq!(
            parse_instant("24h", now).unwrap().micros(),
            9 * 86_400_000_000
        );
        assert_eq!(
            parse_instant("1970-01-02", now).unwrap().micros(),
            86_400_000_000
        );
        assert!(parse_instant("soon", now).unwrap_err().contains("`7d`"));
    }

    #[test]
    fn csv_fields_are_quoted_when_needed() {
        assert_eq!(csv_field("plain"), "plain");
        assert_eq!(
            csv_field(r#"{"a":1,"b":"x"}"#),
            r#""{""a"":1,""b"":""x""}""#
        );
    }
}

/// Output format of `warden replay`.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum ReplayFormat {
    /// A summary per team and one line per change.
    Table,
    /// The whole report as one JSON object.
    Json,
}

/// `warden replay`: re-decide the recorded requests under `config`'s policy.
pub fn replay(
    config: &Path,
    storage: Option<&str>,
    since: &str,
    until: Option<&str>,
    format: ReplayFormat,
) -> anyhow::Result<ExitCode> {
    let cfg = load_config(config).map_err(anyhow::Error::msg)?;
    let url = match storage {
        Some(s) => {
            warden_server::config::storage_url(config, Some(s)).map_err(anyhow::Error::msg)?
        }
        None => cfg.storage.clone(),
    };
    let Some(url) = url else {
        anyhow::bail!(
            "{}: `storage: none` names no store; give the store holding the audit log with --storage",
            config.display()
        );
    };
    let now = now();
    let since = parse_instant(since, now).map_err(|e| anyhow::anyhow!("--since: {e}"))?;
    let until = match until {
        Some(u) => parse_instant(u, now).map_err(|e| anyhow::anyhow!("--until: {e}"))?,
        None => UnixMicros::from_micros(i64::MAX),
    };
    if since >= until {
        anyhow::bail!("--since must be before --until");
    }
    let records = runtime()?.block_on(async {
        let store = Store::connect(&url)
            .await
            .with_context(|| format!("cannot open the store `{}`", redact_url(&url)))?;
        let records = store.export_audit(since, until).await?;
        store.close().await;
        anyhow::Ok(records)
    })?;
    let report = warden_server::replay::replay(&cfg.policy, &records);
    match format {
        ReplayFormat::Json => say!("{}", serde_json::to_string_pretty(&report)?),
        ReplayFormat::Table => print_replay(config, since, &report),
    }
    Ok(ExitCode::SUCCESS)
}

/// A store URL without its password, for messages.
fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let userinfo = url.get(scheme + 3..at).unwrap_or("");
            let user = userinfo.split(':').next().unwrap_or("");
            format!(
                "{}{user}:***{}",
                url.get(..scheme + 3).unwrap_or(""),
                url.get(at..).unwrap_or("")
            )
        }
        _ => url.to_owned(),
    }
}

fn print_replay(config: &Path, since: UnixMicros, r: &warden_server::replay::ReplayReport) {
    use warden_server::replay::ChangeKind;
    say!(
        "replayed {} recorded decisions since {since} against {}",
        r.records,
        config.display()
    );
    if r.skipped() > 0 {
        say!("  {} skipped:", r.skipped());
    }
    for (reason, n) in &r.skipped_reasons {
        let why = match reason.as_str() {
            "without_input" => "recorded before Warden kept the request".to_owned(),
            "input_truncated" => {
                "the request was too large to keep whole (only its hash was recorded)".to_owned()
            }
            other => match other.strip_prefix("door:") {
                Some(door) => format!("door `{door}` cannot be replayed yet"),
                None => other.to_owned(),
            },
        };
        say!("    {n} {reason}: {why}");
    }
    if r.failed > 0 {
        say!(
            "  {} failed: the door now refuses the recorded request",
            r.failed
        );
    }
    let mut table = Table::new(&[
        ("team", Align::Left),
        ("replayed", Align::Right),
        ("unchanged", Align::Right),
        ("newly denied", Align::Right),
        ("newly allowed", Align::Right),
        ("mutations changed", Align::Right),
    ]);
    for (team, c) in &r.teams {
        table.row([
            team.to_string(),
            c.replayed.to_string(),
            c.unchanged.to_string(),
            c.newly_denied.to_string(),
            c.newly_allowed.to_string(),
            c.mutations_changed.to_string(),
        ]);
    }
    say!();
    for line in table.lines() {
        say!("{line}");
    }
    if r.changes.is_empty() {
        say!("\nno decision would change");
        return;
    }
    say!("\nchanges:");
    for c in &r.changes {
        let what = match c.kind {
            ChangeKind::NewlyDenied => "newly denied",
            ChangeKind::NewlyAllowed => "newly allowed",
            ChangeKind::MutationsChanged => "mutations changed",
        };
        say!(
            "{} #{} team {} user {} {} {}: {what} (rules then: {}; now: {})",
            c.at,
            c.seq,
            c.team,
            c.user.as_deref().unwrap_or("-"),
            c.request,
            c.target.as_deref().unwrap_or("-"),
            list_or_none(&c.before_rules),
            list_or_none(&c.after_rules)
        );
        if let Some(m) = &c.message {
            for line in m.lines() {
                say!("    {line}");
            }
        }
    }
}

fn list_or_none(rules: &[String]) -> String {
    if rules.is_empty() {
        "none".to_owned()
    } else {
        rules.join(", ")
    }
}
