//! `warden report spend` and `warden report chargeback`: the reports of
//! [`warden_server::reports`] over the config's store, as a table, CSV or
//! JSON.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::SystemTime;

use anyhow::Context as _;
use warden_core::{TeamName, Usd};
use warden_server::config::{load_config, Config};
use warden_server::reports::{
    self, Chargeback, ParamError, PeriodKind, PeriodParams, SpendBy, SpendQuery, SpendReport,
};
use warden_store::{GroupKey, Store, UnixMicros};

use crate::admin::csv_field;
use crate::table::{money_decimals, Align, Table};

/// `--period`.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum PeriodArg {
    /// A day (`--date`, default today) in the config's `time_zone`.
    Day,
    /// A calendar month (`--month`, default this month) in the config's
    /// `time_zone`.
    Month,
    /// `--from` (required) to `--until` (default now).
    Custom,
}

/// `--by`.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum ByArg {
    /// One row per team, with its budget for the day or month.
    Team,
    /// One row per team and user.
    User,
    /// One row per GPU model.
    Gpu,
}

/// `warden report spend --format`.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum SpendFormat {
    /// Aligned columns with a total line.
    Table,
    /// CSV with a header row, one row per group.
    Csv,
    /// The whole report as JSON.
    Json,
}

/// `warden report chargeback --format`.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum ChargebackFormat {
    /// CSV: one line per team and GPU model, then the total.
    Csv,
    /// The whole chargeback as JSON, with per-team sums.
    Json,
}

/// `warden report spend`.
#[derive(Debug, clap::Args)]
pub struct SpendArgs {
    /// Config file (its `storage` names the store; its teams give the
    /// budgets).
    #[arg(long)]
    config: PathBuf,
    /// The period; absent: implied by --date, --month or --from/--until,
    /// else this month.
    #[arg(long, value_enum)]
    period: Option<PeriodArg>,
    /// The day of `--period day`, e.g. `2026-11-23`.
    #[arg(long)]
    date: Option<String>,
    /// The month of `--period month`, e.g. `2026-11`.
    #[arg(long)]
    month: Option<String>,
    /// Start of `--period custom`: a UTC date or instant (`2026-11-01`,
    /// `2026-11-01T08:00:00Z`).
    #[arg(long)]
    from: Option<String>,
    /// End of `--period custom`, excluded; default now.
    #[arg(long)]
    until: Option<String>,
    /// How to group.
    #[arg(long, value_enum, default_value = "team")]
    by: ByArg,
    /// Only this team.
    #[arg(long)]
    team: Option<String>,
    /// Output format.
    #[arg(long, value_enum, default_value = "table")]
    format: SpendFormat,
}

/// `warden report chargeback`.
#[derive(Debug, clap::Args)]
pub struct ChargebackArgs {
    /// Config file (its `storage` names the store).
    #[arg(long)]
    config: PathBuf,
    /// The month to charge, e.g. `2026-11`, in the config's `time_zone`.
    #[arg(long)]
    month: String,
    /// Output format.
    #[arg(long, value_enum, default_value = "csv")]
    format: ChargebackFormat,
}

fn flag(e: ParamError) -> anyhow::Error {
    anyhow::anyhow!("--{}: {}", e.param, e.problem)
}

/// The config, with the store URL it names.
fn load(config: &Path) -> anyhow::Result<(Config, String)> {
    let cfg = load_config(config).map_err(anyhow::Error::msg)?;
    let Some(url) = cfg.storage.clone() else {
        anyhow::bail!(
            "{}: `storage: none` names no store to report on",
            config.display()
        );
    };
    Ok((cfg, url))
}

async fn open(config: &Path, url: &str) -> anyhow::Result<Store> {
    Store::connect(url)
        .await
        .with_context(|| format!("cannot open the store named by {}", config.display()))
}

/// `warden report spend`.
pub fn spend(args: &SpendArgs) -> anyhow::Result<ExitCode> {
    let now = UnixMicros::from_system_time(SystemTime::now());
    let period = args.period.map(|p| {
        match p {
            PeriodArg::Day => "day",
            PeriodArg::Month => "month",
            PeriodArg::Custom => "custom",
        }
        .to_owned()
    });
    let params = PeriodParams {
        period,
        date: args.date.clone(),
        month: args.month.clone(),
        from: args.from.clone(),
        until: args.until.clone(),
    };
    let (cfg, url) = load(&args.config)?;
    // Days and months in the budget time zone (`time_zone`).
    let period = reports::resolve_period(&params, now, &cfg.settings.time_zone).map_err(flag)?;
    let by = match args.by {
        ByArg::Team => SpendBy::Team,
        ByArg::User => SpendBy::User,
        ByArg::Gpu => SpendBy::Gpu,
    };
    let team = args
        .team
        .as_deref()
        .map(TeamName::parse)
        .transpose()
        .map_err(|e| anyhow::anyhow!("--team: {e}"))?;
    let query = SpendQuery { period, by, team };
    crate::admin::runtime()?.block_on(async {
        let store = open(&args.config, &url).await?;
        let report = reports::spend_report(&store, &cfg.policy, &query, now).await;
        store.close().await;
        let report = report?;
        match args.format {
            SpendFormat::Table => spend_table(&report),
            SpendFormat::Csv => spend_csv(&report),
            SpendFormat::Json => say!("{}", serde_json::to_string_pretty(&report)?),
        }
        Ok(ExitCode::SUCCESS)
    })
}

/// `warden report chargeback`.
pub fn chargeback(args: &ChargebackArgs) -> anyhow::Result<ExitCode> {
    let now = UnixMicros::from_system_time(SystemTime::now());
    let (cfg, url) = load(&args.config)?;
    let month =
        reports::parse_month("month", &args.month, &cfg.settings.time_zone).map_err(flag)?;
    crate::admin::runtime()?.block_on(async {
        let store = open(&args.config, &url).await?;
        let charges = reports::chargeback(&store, &month, now).await;
        store.close().await;
        let charges = charges?;
        if !charges.complete {
            eprintln!(
                "note: {} is not over; amounts are month-to-date as of {}",
                charges.month, charges.as_of
            );
        }
        match args.format {
            ChargebackFormat::Csv => chargeback_csv(&charges),
            ChargebackFormat::Json => say!("{}", serde_json::to_string_pretty(&charges)?),
        }
        Ok(ExitCode::SUCCESS)
    })
}

/// `12.50`: dollars without the sign, as spreadsheets read them, with
/// `decimals` decimals (the column's, from [`money_decimals`]).
fn plain(usd: Usd, decimals: usize) -> String {
    usd.with_decimals(decimals).replacen('$', "", 1)
}

/// The key columns of a row: (header, value) pairs.
fn key_columns(key: &GroupKey) -> Vec<(&'static str, String)> {
    match key {
        GroupKey::Team { team } => vec![("team", team.to_string())],
        GroupKey::User { team, user } => vec![
            ("team", team.to_string()),
            ("user", user.clone().unwrap_or_default()),
        ],
        GroupKey::GpuModel { gpu_model } | GroupKey::TeamGpuModel { gpu_model, .. } => {
            let model = gpu_model.as_ref().map(ToString::to_string);
            let mut cols = Vec::new();
            if let Some(team) = key.team() {
                cols.push(("team", team.to_string()));
            }
            cols.push(("gpu_model", model.unwrap_or_default()));
            cols
        }
    }
}

fn key_headers(by: SpendBy) -> &'static [&'static str] {
    match by {
        SpendBy::Team => &["team"],
        SpendBy::User => &["team", "user"],
        SpendBy::Gpu => &["gpu_model"],
    }
}

/// The decimals of the spend and budget columns: each column shows every
/// amount (rows and total) with the same number of decimals.
fn spend_decimals(r: &SpendReport) -> (usize, usize) {
    let spend = money_decimals(
        r.rows
            .iter()
            .map(|row| row.spend_usd)
            .chain([r.total.spend_usd]),
    );
    let budget = money_decimals(
        r.rows
            .iter()
            .filter_map(|row| row.budget.as_ref().and_then(|b| b.budget_usd)),
    );
    (spend, budget)
}

fn spend_csv(r: &SpendReport) {
    let mut header: Vec<&str> = key_headers(r.by).to_vec();
    header.extend(["allocations", "gpu_hours", "spend_usd"]);
    if r.by == SpendBy::Team {
        header.extend(["budget_usd", "budget_used_pct"]);
    }
    say!("{}", header.join(","));
    let (spend, budget) = spend_decimals(r);
    for row in &r.rows {
        let mut cols: Vec<String> = key_columns(&row.key)
            .into_iter()
            .map(|(_, v)| csv_field(&v))
            .collect();
        cols.extend([
            row.allocations.to_string(),
            row.gpu_hours.to_string(),
            plain(row.spend_usd, spend),
        ]);
        if let Some(b) = &row.budget {
            cols.push(b.budget_usd.map(|u| plain(u, budget)).unwrap_or_default());
            cols.push(b.budget_used_pct.map(|p| p.to_string()).unwrap_or_default());
        }
        say!("{}", cols.join(","));
    }
}

fn spend_table(r: &SpendReport) {
    let by = match r.by {
        SpendBy::Team => "team",
        SpendBy::User => "user",
        SpendBy::Gpu => "GPU model",
    };
    let only = r
        .team
        .as_ref()
        .map(|t| format!(" of team `{t}`"))
        .unwrap_or_default();
    let label = match r.period.kind {
        PeriodKind::Custom => String::new(),
        _ => format!("{} ({}) ", r.period.label, r.period.time_zone),
    };
    say!(
        "Spend by {by}{only}, {label}[{}, {}), as of {}",
        r.period.from,
        r.period.until,
        r.as_of
    );
    let keys = key_headers(r.by);
    let mut columns: Vec<(&str, Align)> = keys.iter().map(|h| (*h, Align::Left)).collect();
    columns.extend([
        ("allocations", Align::Right),
        ("gpu_hours", Align::Right),
        ("spend", Align::Right),
    ]);
    let with_budget = r.by == SpendBy::Team;
    if with_budget {
        columns.extend([("budget", Align::Right), ("used", Align::Right)]);
    }
    let mut table = Table::new(&columns);
    let (spend, budget) = spend_decimals(r);
    let dash = |s: String| if s.is_empty() { "-".to_owned() } else { s };
    for row in &r.rows {
        let mut cols: Vec<String> = key_columns(&row.key)
            .into_iter()
            .map(|(_, v)| dash(v))
            .collect();
        cols.extend([
            row.allocations.to_string(),
            row.gpu_hours.to_string(),
            row.spend_usd.with_decimals(spend),
        ]);
        if let Some(b) = &row.budget {
            cols.push(
                b.budget_usd
                    .map_or("-".to_owned(), |u| u.with_decimals(budget)),
            );
            cols.push(
                b.budget_used_pct
                    .map_or("-".to_owned(), |p| format!("{p}%")),
            );
        }
        table.row(cols);
    }
    let mut total = vec!["total".to_owned()];
    total.extend(std::iter::repeat_n(String::new(), keys.len() - 1));
    total.extend([
        r.total.allocations.to_string(),
        r.total.gpu_hours.to_string(),
        r.total.spend_usd.with_decimals(spend),
    ]);
    table.row(total);
    for line in table.lines() {
        say!("{line}");
    }
}

fn chargeback_csv(c: &Chargeback) {
    say!("month,line,team,gpu_model,allocations,gpu_hours,amount_usd");
    let amount = money_decimals(
        c.lines
            .iter()
            .map(|l| l.amount_usd)
            .chain([c.total.amount_usd]),
    );
    for l in &c.lines {
        say!(
            "{},charge,{},{},{},{},{}",
            c.month,
            l.team,
            l.gpu_model.as_ref().map(|m| m.as_str()).unwrap_or(""),
            l.allocations,
            l.gpu_hours,
            plain(l.amount_usd, amount)
        );
    }
    say!(
        "{},total,,,{},{},{}",
        c.month,
        c.total.allocations,
        c.total.gpu_hours,
        plain(c.total.amount_usd, amount)
    );
}
