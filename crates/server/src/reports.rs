//! Reports over the store: spend per team, user or GPU model over a period
//! (with each team's budget for the period), and the monthly chargeback
//! finance invoices from.
//!
//! The service functions ([`spend_report`], [`chargeback`]) take the
//! store, the policy, the resolved period and `now`, and return plain data;
//! `warden report` renders it as a table, CSV or JSON, and the read-only
//! endpoints answer it as JSON:
//!
//! - `GET /reports/spend?period=day|month|custom&date=&month=&from=&until=&by=team|user|gpu&team=`
//! - `GET /reports/chargeback?month=2026-11`
//!
//! Days and months are calendar days and months in the config's
//! `time_zone`, as for budgets ([`resolve_period`]); a custom window is two
//! UTC instants.
//!
//! Bad parameters are a 400 naming the parameter; without a store
//! (`storage: none`) the answer is 503. The endpoints are not yet restricted
//! by role: serve them only where everyone who can reach them may see every
//! team's spend (roles come with the admin API).
//!
//! # Amounts
//!
//! Costs follow [`warden_store::report`] exactly (hourly price × overlap
//! with the period; live allocations up to `now`).
//!
//! - Spend reports give each group's cost in micro-dollars rounded down
//!   once per group, as budgets count it; the total is the whole cost
//!   rounded down once, so it may exceed the sum of the rows by less than a
//!   micro-dollar per row. GPU-hours are rounded down to 0.01.
//! - Chargeback amounts are in cents. The total is the exact cost of the
//!   month rounded half up to the cent. Each line (team and GPU model) gets
//!   its exact cost rounded down to the cent, and the cents still missing
//!   from the total go one each to the lines with the largest remainders
//!   (ties: in line order), so the lines add up to the total exactly and
//!   each differs from its exact cost by less than a cent. GPU-hours are
//!   split the same way in hundredths of an hour.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::{RawQuery, State};
use axum::routing::get;
use axum::{Json, Router};
use serde::{Serialize, Serializer};
use warden_core::{GpuModel, Policy, TeamName, Usd};
use warden_store::{
    GroupBy, GroupKey, GroupUsage, PeriodKind as Calendar, Store, StoreError, TimeZone, UnixMicros,
    UsageQuery,
};

use crate::app::AppState;
use crate::error::DoorError;

/// Micro-dollars × [`warden_store::COST_SCALE`] in a cent.
const SCALED_PER_CENT: i128 = warden_store::COST_SCALE * 10_000;
/// GPU-microseconds in a hundredth of a GPU-hour.
const GPU_MICROS_PER_HUNDREDTH: i128 = warden_store::COST_SCALE / 100;

/// A request parameter that is missing, malformed or does not fit the
/// others. `param` is its name (`date`), which the CLI shows as `--date`
/// and the HTTP endpoint as the query parameter.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{param}`: {problem}")]
pub struct ParamError {
    /// The parameter's name.
    pub param: &'static str,
    /// What is wrong and how to fix it.
    pub problem: String,
}

fn param_error(param: &'static str, problem: impl Into<String>) -> ParamError {
    ParamError {
        param,
        problem: problem.into(),
    }
}

/// What a spend report covers: a day, a calendar month, or any window.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PeriodKind {
    /// A day, midnight to midnight.
    Day,
    /// A calendar month.
    Month,
    /// [from, until) as given.
    Custom,
}

impl PeriodKind {
    fn parse(text: &str) -> Result<Self, ParamError> {
        match text {
            "day" => Ok(Self::Day),
            "month" => Ok(Self::Month),
            "custom" => Ok(Self::Custom),
            other => Err(param_error(
                "period",
                format!("`{other}` is not a period; use `day`, `month` or `custom`"),
            )),
        }
    }
}

/// A period resolved to instants: [from, until).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Period {
    /// Day, month or custom.
    pub kind: PeriodKind,
    /// `2026-11-23` for a day, `2026-11` for a month, `custom` otherwise.
    pub label: String,
    /// The time zone days and months are counted in (`UTC`,
    /// `Europe/Berlin`).
    pub time_zone: String,
    /// Its start (included).
    #[serde(serialize_with = "instant")]
    pub from: UnixMicros,
    /// Its end (excluded).
    #[serde(serialize_with = "instant")]
    pub until: UnixMicros,
}

fn instant<S: Serializer>(t: &UnixMicros, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(t)
}

/// The period parameters as given, unparsed (CLI flags or query
/// parameters of the same names).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PeriodParams {
    /// `day`, `month` or `custom`; absent: the kind the other parameters
    /// imply, or `month`.
    pub period: Option<String>,
    /// The day of `period=day`: `2026-11-23`; absent: today.
    pub date: Option<String>,
    /// The month of `period=month`: `2026-11`; absent: this month.
    pub month: Option<String>,
    /// Start of `period=custom`: a UTC date or instant (required).
    pub from: Option<String>,
    /// End of `period=custom`, excluded; absent: now.
    pub until: Option<String>,
}

fn zone_name(tz: &TimeZone) -> String {
    tz.iana_name().unwrap_or("unnamed time zone").to_owned()
}

/// The calendar day or month starting on `date` in `tz`, or `None` when
/// the date is out of range there.
fn calendar_period(kind: PeriodKind, date: jiff::civil::Date, tz: &TimeZone) -> Option<Period> {
    let calendar = match kind {
        PeriodKind::Day => Calendar::Day,
        PeriodKind::Month => Calendar::Month,
        PeriodKind::Custom => return None,
    };
    let midnight = date
        .to_zoned(tz.clone())
        .and_then(|z| z.start_of_day())
        .ok()?;
    let start = UnixMicros::from_micros(midnight.timestamp().as_microsecond());
    // The store's own period arithmetic, which budgets use too.
    let period = start.period(calendar, tz);
    let label = match kind {
        PeriodKind::Month => format!("{:04}-{:02}", date.year(), date.month()),
        _ => format!("{:04}-{:02}-{:02}", date.year(), date.month(), date.day()),
    };
    Some(Period {
        kind,
        label,
        time_zone: zone_name(tz),
        from: period.start,
        until: period.end,
    })
}

/// `2026-11-23` as a date (exactly that form: four-digit year, two-digit
/// month and day).
fn iso_date(text: &str) -> Option<jiff::civil::Date> {
    let t = text.trim();
    let shaped = t.len() == 10 && t.bytes().filter(|&b| b == b'-').count() == 2;
    shaped.then(|| t.parse().ok()).flatten()
}

/// The day `2026-11-23` in `tz`.
fn parse_day(param: &'static str, text: &str, tz: &TimeZone) -> Result<Period, ParamError> {
    iso_date(text)
        .and_then(|date| calendar_period(PeriodKind::Day, date, tz))
        .ok_or_else(|| {
            param_error(
                param,
                format!("`{text}` is not a date; write e.g. `2026-11-23`"),
            )
        })
}

/// The month `2026-11` in `tz`.
pub fn parse_month(param: &'static str, text: &str, tz: &TimeZone) -> Result<Period, ParamError> {
    let month = text.trim();
    (month.len() == 7)
        .then(|| iso_date(&format!("{month}-01")))
        .flatten()
        .and_then(|date| calendar_period(PeriodKind::Month, date, tz))
        .ok_or_else(|| {
            param_error(
                param,
                format!("`{text}` is not a month; write e.g. `2026-11`"),
            )
        })
}

/// The day or month holding `now` in `tz`.
fn current_period(kind: PeriodKind, now: UnixMicros, tz: &TimeZone) -> Result<Period, ParamError> {
    jiff::Timestamp::from_microsecond(now.micros())
        .ok()
        .map(|t| t.to_zoned(tz.clone()).date())
        .map(|date| match kind {
            PeriodKind::Month => date.first_of_month(),
            _ => date,
        })
        .and_then(|date| calendar_period(kind, date, tz))
        .ok_or_else(|| param_error("period", format!("the current time {now} is out of range")))
}

fn parse_instant(param: &'static str, text: &str) -> Result<UnixMicros, ParamError> {
    UnixMicros::parse_rfc3339(text).map_err(|e| param_error(param, e))
}

/// Resolves the period parameters at `now`.
///
/// Days and months are calendar days and months in `tz`, the zone budgets
/// are counted in (the config's `time_zone`); a custom window is two
/// instants, written in UTC.
pub fn resolve_period(
    p: &PeriodParams,
    now: UnixMicros,
    tz: &TimeZone,
) -> Result<Period, ParamError> {
    let given = |v: &Option<String>| v.as_deref().is_some_and(|s| !s.trim().is_empty());
    let (date, month, custom) = (
        given(&p.date),
        given(&p.month),
        given(&p.from) || given(&p.until),
    );
    let kind = match p.period.as_deref().map(str::trim).filter(|s| !s.is_empty()) {
        Some(text) => PeriodKind::parse(text)?,
        None => match (date, month, custom) {
            (true, false, false) => PeriodKind::Day,
            (false, false, true) => PeriodKind::Custom,
            (false, _, false) => PeriodKind::Month,
            _ => {
                return Err(param_error(
                    "period",
                    "give one of `date` (a day), `month` (a month), or `from`/`until` (any window), not several",
                ))
            }
        },
    };
    let window_param = if given(&p.from) { "from" } else { "until" };
    let not_for = |param: &'static str, used: &str| {
        param_error(
            param,
            format!("does not apply to the `{}` period; {used}", kind_name(kind)),
        )
    };
    match kind {
        PeriodKind::Day => {
            if month {
                return Err(not_for(
                    "month",
                    "give the day as `date`, e.g. `2026-11-23`",
                ));
            }
            if custom {
                return Err(not_for(
                    window_param,
                    "use the `custom` period for a window",
                ));
            }
            match p.date.as_deref().filter(|s| !s.trim().is_empty()) {
                Some(d) => parse_day("date", d, tz),
                None => current_period(kind, now, tz),
            }
        }
        PeriodKind::Month => {
            if date {
                return Err(not_for("date", "give the month as `month`, e.g. `2026-11`"));
            }
            if custom {
                return Err(not_for(
                    window_param,
                    "use the `custom` period for a window",
                ));
            }
            match p.month.as_deref().filter(|s| !s.trim().is_empty()) {
                Some(m) => parse_month("month", m, tz),
                None => current_period(kind, now, tz),
            }
        }
        PeriodKind::Custom => {
            if date {
                return Err(not_for("date", "give the window as `from` and `until`"));
            }
            if month {
                return Err(not_for("month", "give the window as `from` and `until`"));
            }
            let from = match p.from.as_deref().filter(|s| !s.trim().is_empty()) {
                Some(f) => parse_instant("from", f)?,
                None => {
                    return Err(param_error(
                        "from",
                        "required for the `custom` period; give its start, e.g. `2026-11-01` or `2026-11-01T08:00:00Z`",
                    ))
                }
            };
            let until = match p.until.as_deref().filter(|s| !s.trim().is_empty()) {
                Some(u) => parse_instant("until", u)?,
                None => now,
            };
            if from >= until {
                return Err(param_error(
                    "until",
                    format!("the window is empty: `until` ({until}) must be after `from` ({from})"),
                ));
            }
            Ok(Period {
                kind,
                label: "custom".to_owned(),
                time_zone: zone_name(tz),
                from,
                until,
            })
        }
    }
}

fn kind_name(kind: PeriodKind) -> &'static str {
    match kind {
        PeriodKind::Day => "day",
        PeriodKind::Month => "month",
        PeriodKind::Custom => "custom",
    }
}

/// How a spend report groups: by team, by user (within the team), or by
/// GPU model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SpendBy {
    /// One row per team, with the team's budget for the period.
    Team,
    /// One row per team and user.
    User,
    /// One row per GPU model.
    Gpu,
}

impl SpendBy {
    /// Parses `team`, `user` or `gpu`.
    pub fn parse(text: &str) -> Result<Self, ParamError> {
        match text.trim() {
            "team" => Ok(Self::Team),
            "user" => Ok(Self::User),
            "gpu" => Ok(Self::Gpu),
            other => Err(param_error(
                "by",
                format!("cannot group by `{other}`; use `team`, `user` or `gpu`"),
            )),
        }
    }

    fn group_by(self) -> GroupBy {
        match self {
            Self::Team => GroupBy::Team,
            Self::User => GroupBy::User,
            Self::Gpu => GroupBy::GpuModel,
        }
    }
}

/// A non-negative decimal with a fixed number of decimals, exact; shown and
/// serialized as text (`"12.50"`), like [`Usd`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Fixed {
    units: i128,
    decimals: u32,
}

impl Fixed {
    /// `units` hundredths.
    pub fn hundredths(units: i128) -> Self {
        Self { units, decimals: 2 }
    }

    /// `units` tenths.
    pub fn tenths(units: i128) -> Self {
        Self { units, decimals: 1 }
    }

    /// The value in its smallest unit (hundredths for GPU-hours).
    pub fn units(self) -> i128 {
        self.units
    }
}

impl std::fmt::Display for Fixed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let scale = 10_u128.pow(self.decimals);
        let sign = if self.units < 0 { "-" } else { "" };
        let abs = self.units.unsigned_abs();
        write!(
            f,
            "{sign}{}.{:0width$}",
            abs / scale,
            abs % scale,
            width = self.decimals as usize
        )
    }
}

impl Serialize for Fixed {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

fn gpu_hours_down(gpu_micros: i128) -> Fixed {
    Fixed::hundredths(gpu_micros.div_euclid(GPU_MICROS_PER_HUNDREDTH))
}

fn usd_down(scaled: i128) -> Usd {
    let micros = scaled.div_euclid(warden_store::COST_SCALE);
    Usd::from_micros(i64::try_from(micros).unwrap_or(i64::MAX))
}

/// A team's budget for the period, and how much of it the spend used.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BudgetUse {
    /// The daily budget for a day, the monthly one for a month; none for a
    /// custom window, or when the team has none (or is not in the config).
    pub budget_usd: Option<Usd>,
    /// Spend ÷ budget in percent, rounded down to 0.1; none without a
    /// budget, or when it is $0.
    pub budget_used_pct: Option<Fixed>,
}

/// One row of a spend report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SpendRow {
    /// The group: `team`; `team` and `user`; or `gpu_model` (`null` when
    /// unknown).
    #[serde(flatten)]
    pub key: GroupKey,
    /// Allocations that ran for some of the period.
    pub allocations: u64,
    /// GPUs × hours within the period, rounded down to 0.01.
    pub gpu_hours: Fixed,
    /// Cost within the period, rounded down to the micro-dollar.
    pub spend_usd: Usd,
    /// For team rows: the budget.
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    pub budget: Option<BudgetUse>,
}

/// The sum over all rows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SpendTotal {
    /// Allocations that ran for some of the period.
    pub allocations: u64,
    /// GPU-hours, rounded down to 0.01 once.
    pub gpu_hours: Fixed,
    /// Cost, rounded down to the micro-dollar once.
    pub spend_usd: Usd,
}

/// Spend per group over a period.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SpendReport {
    /// The period.
    pub period: Period,
    /// The instant live allocations are accrued to.
    #[serde(serialize_with = "instant")]
    pub as_of: UnixMicros,
    /// The grouping.
    pub by: SpendBy,
    /// The one team reported on, if the report was limited to one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub team: Option<TeamName>,
    /// One row per group, largest spend first (ties: by group). With
    /// `by: team`, every team of the config is listed, spend or not.
    pub rows: Vec<SpendRow>,
    /// All rows together.
    pub total: SpendTotal,
}

/// What a spend report asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpendQuery {
    /// The period.
    pub period: Period,
    /// The grouping.
    pub by: SpendBy,
    /// Only this team.
    pub team: Option<TeamName>,
}

/// Spend per group over the period at `now`, with each team's budget for
/// the period from `policy` (for `by: team`).
pub async fn spend_report(
    store: &Store,
    policy: &Policy,
    q: &SpendQuery,
    now: UnixMicros,
) -> Result<SpendReport, StoreError> {
    let groups = store
        .usage(&UsageQuery {
            from: q.period.from,
            to: q.period.until,
            now,
            by: q.by.group_by(),
            team: q.team.as_ref(),
        })
        .await?;
    Ok(build_spend_report(policy, q, now, groups))
}

fn build_spend_report(
    policy: &Policy,
    q: &SpendQuery,
    now: UnixMicros,
    mut groups: Vec<GroupUsage>,
) -> SpendReport {
    if q.by == SpendBy::Team {
        // Teams of the config without usage are listed too: a budget report
        // should show the teams that spent nothing.
        for team in policy.teams() {
            let listed = groups.iter().any(|g| g.key.team() == Some(&team.name));
            let wanted = q.team.as_ref().is_none_or(|t| *t == team.name);
            if wanted && !listed {
                groups.push(GroupUsage {
                    key: GroupKey::Team {
                        team: team.name.clone(),
                    },
                    allocations: 0,
                    cost_scaled: 0,
                    gpu_micros: 0,
                });
            }
        }
    }
    let total = SpendTotal {
        allocations: groups.iter().map(|g| g.allocations).sum(),
        gpu_hours: gpu_hours_down(groups.iter().map(|g| g.gpu_micros).sum()),
        spend_usd: usd_down(groups.iter().map(|g| g.cost_scaled).sum()),
    };
    let mut rows: Vec<SpendRow> = groups
        .into_iter()
        .map(|g| {
            let spend = g.spend();
            let budget = match (q.by, &g.key) {
                (SpendBy::Team, GroupKey::Team { team }) => {
                    Some(budget_use(policy, team, q.period.kind, spend))
                }
                _ => None,
            };
            SpendRow {
                allocations: g.allocations,
                gpu_hours: gpu_hours_down(g.gpu_micros),
                spend_usd: spend,
                budget,
                key: g.key,
            }
        })
        .collect();
    rows.sort_by(|a, b| {
        b.spend_usd
            .cmp(&a.spend_usd)
            .then_with(|| a.key.cmp(&b.key))
    });
    SpendReport {
        period: q.period.clone(),
        as_of: now,
        by: q.by,
        team: q.team.clone(),
        rows,
        total,
    }
}

fn budget_use(policy: &Policy, team: &TeamName, kind: PeriodKind, spend: Usd) -> BudgetUse {
    let budgets = policy.team(team).map(|t| &t.budgets);
    let budget = budgets.and_then(|b| match kind {
        PeriodKind::Day => b.daily,
        PeriodKind::Month => b.monthly,
        PeriodKind::Custom => None,
    });
    let pct = budget
        .filter(|b| b.micros() > 0)
        .map(|b| Fixed::tenths(i128::from(spend.micros()) * 1000 / i128::from(b.micros())));
    BudgetUse {
        budget_usd: budget,
        budget_used_pct: pct,
    }
}

/// One invoice line: a team's use of one GPU model over the month.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ChargebackLine {
    /// The team charged.
    pub team: TeamName,
    /// The GPU model; `null` for allocations of no known model.
    pub gpu_model: Option<GpuModel>,
    /// Allocations that ran for some of the month.
    pub allocations: u64,
    /// GPUs × hours, in hundredths, split so lines add up to the total.
    pub gpu_hours: Fixed,
    /// Cost in whole cents, split so lines add up to the total (see the
    /// module documentation).
    pub amount_usd: Usd,
}

/// A team's lines together.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ChargebackTeam {
    /// The team.
    pub team: TeamName,
    /// Its allocations.
    pub allocations: u64,
    /// The sum of its lines' GPU-hours.
    pub gpu_hours: Fixed,
    /// The sum of its lines' amounts.
    pub amount_usd: Usd,
}

/// The whole month.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ChargebackTotal {
    /// All allocations.
    pub allocations: u64,
    /// Exact GPU-hours rounded half up to 0.01; the sum of the lines.
    pub gpu_hours: Fixed,
    /// Exact cost rounded half up to the cent; the sum of the lines.
    pub amount_usd: Usd,
}

/// A month's charges per team and GPU model.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Chargeback {
    /// `2026-11`.
    pub month: String,
    /// The month as instants.
    pub period: Period,
    /// The instant live allocations are accrued to.
    #[serde(serialize_with = "instant")]
    pub as_of: UnixMicros,
    /// Whether the month is over at `as_of`; if not, the amounts are
    /// month-to-date.
    pub complete: bool,
    /// Always `USD`.
    pub currency: &'static str,
    /// By team, then GPU model (no model first).
    pub lines: Vec<ChargebackLine>,
    /// Per team, by team.
    pub teams: Vec<ChargebackTeam>,
    /// The lines together.
    pub total: ChargebackTotal,
}

/// The chargeback of `month` (from [`parse_month`]) at `now`.
pub async fn chargeback(
    store: &Store,
    month: &Period,
    now: UnixMicros,
) -> Result<Chargeback, StoreError> {
    let period = month.clone();
    let groups = store
        .usage(&UsageQuery {
            from: period.from,
            to: period.until,
            now,
            by: GroupBy::TeamGpuModel,
            team: None,
        })
        .await?;
    Ok(build_chargeback(period, now, &groups))
}

fn build_chargeback(period: Period, now: UnixMicros, groups: &[GroupUsage]) -> Chargeback {
    // `groups` come sorted by (team, model): the line order.
    let cost: Vec<i128> = groups.iter().map(|g| g.cost_scaled).collect();
    let gpu: Vec<i128> = groups.iter().map(|g| g.gpu_micros).collect();
    let (cents, total_cents) = apportion(&cost, SCALED_PER_CENT);
    let (hundredths, total_hundredths) = apportion(&gpu, GPU_MICROS_PER_HUNDREDTH);
    let usd = |cents: i128| {
        Usd::from_micros(i64::try_from(cents.saturating_mul(10_000)).unwrap_or(i64::MAX))
    };
    let mut lines = Vec::with_capacity(groups.len());
    for ((g, c), h) in groups.iter().zip(cents).zip(hundredths) {
        let (team, gpu_model) = match &g.key {
            GroupKey::TeamGpuModel { team, gpu_model } => (team.clone(), gpu_model.clone()),
            // Unreachable: the store answers with the grouping asked for.
            _ => continue,
        };
        lines.push((
            ChargebackLine {
                team,
                gpu_model,
                allocations: g.allocations,
                gpu_hours: Fixed::hundredths(h),
                amount_usd: usd(c),
            },
            c,
        ));
    }
    let mut teams: BTreeMap<TeamName, (u64, i128, i128)> = BTreeMap::new();
    for (line, c) in &lines {
        let t = teams.entry(line.team.clone()).or_default();
        t.0 += line.allocations;
        t.1 += line.gpu_hours.units();
        t.2 += c;
    }
    let teams = teams
        .into_iter()
        .map(|(team, (allocations, h, c))| ChargebackTeam {
            team,
            allocations,
            gpu_hours: Fixed::hundredths(h),
            amount_usd: usd(c),
        })
        .collect();
    let lines: Vec<ChargebackLine> = lines.into_iter().map(|(l, _)| l).collect();
    Chargeback {
        month: period.label.clone(),
        complete: period.until <= now,
        period,
        as_of: now,
        currency: "USD",
        total: ChargebackTotal {
            allocations: lines.iter().map(|l| l.allocations).sum(),
            gpu_hours: Fixed::hundredths(total_hundredths),
            amount_usd: usd(total_cents),
        },
        lines,
        teams,
    }
}

/// Splits exact non-negative amounts into whole `unit`s (largest
/// remainder): the total is the exact sum rounded half up; each part is its
/// amount rounded down, plus one unit for the parts with the largest
/// remainders (ties: the earlier part) until the parts add up to the total.
/// Each part is then within one unit of its amount, and only parts with a
/// remainder are rounded up. Returns (parts, total).
fn apportion(amounts: &[i128], unit: i128) -> (Vec<i128>, i128) {
    let sum: i128 = amounts.iter().sum();
    let total = (sum + unit / 2).div_euclid(unit);
    let mut parts: Vec<i128> = amounts.iter().map(|a| a.div_euclid(unit)).collect();
    let mut left = total - parts.iter().sum::<i128>();
    let mut order: Vec<(usize, i128)> = amounts
        .iter()
        .map(|a| a.rem_euclid(unit))
        .enumerate()
        .collect();
    order.sort_by(|(i, a), (j, b)| b.cmp(a).then(i.cmp(j)));
    for (i, remainder) in order {
        if left <= 0 || remainder == 0 {
            break;
        }
        if let Some(part) = parts.get_mut(i) {
            *part += 1;
            left -= 1;
        }
    }
    (parts, total)
}

// ---- HTTP -----------------------------------------------------------------

/// The report routes, for `app::router` to merge:
/// `GET /reports/spend` ([`spend`]) and `GET /reports/chargeback`
/// ([`chargeback_handler`]).
pub fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/reports/spend", get(spend))
        .route("/reports/chargeback", get(chargeback_handler))
}

/// `GET /reports/spend?period=&date=&month=&from=&until=&by=&team=`: a
/// [`SpendReport`] as JSON, at the current time.
pub async fn spend(
    State(state): State<Arc<AppState>>,
    RawQuery(query): RawQuery,
) -> Result<Json<SpendReport>, DoorError> {
    let now = UnixMicros::from_system_time(std::time::SystemTime::now());
    let params = QueryParams::parse(
        query.as_deref(),
        &["period", "date", "month", "from", "until", "by", "team"],
    )?;
    // Days and months in the budget time zone (`time_zone`).
    let tz = state.settings().time_zone.clone();
    let period = resolve_period(
        &PeriodParams {
            period: params.get("period"),
            date: params.get("date"),
            month: params.get("month"),
            from: params.get("from"),
            until: params.get("until"),
        },
        now,
        &tz,
    )
    .map_err(http_param)?;
    let by = match params.get("by") {
        Some(by) => SpendBy::parse(&by).map_err(http_param)?,
        None => SpendBy::Team,
    };
    let team = params
        .get("team")
        .map(|t| TeamName::parse(t.trim()))
        .transpose()
        .map_err(|e| DoorError::bad(format!("query parameter `team`: {e}")))?;
    let store = report_store(&state)?;
    let policy = state.policy();
    let q = SpendQuery { period, by, team };
    spend_report(store, &policy, &q, now)
        .await
        .map(Json)
        .map_err(store_error)
}

/// `GET /reports/chargeback?month=2026-11`: a [`Chargeback`] as JSON, at
/// the current time.
pub async fn chargeback_handler(
    State(state): State<Arc<AppState>>,
    RawQuery(query): RawQuery,
) -> Result<Json<Chargeback>, DoorError> {
    let now = UnixMicros::from_system_time(std::time::SystemTime::now());
    let params = QueryParams::parse(query.as_deref(), &["month"])?;
    let Some(month) = params.get("month") else {
        return Err(DoorError::bad(
            "query parameter `month` is required: the month to charge, e.g. `month=2026-11`",
        ));
    };
    let month = parse_month("month", &month, &state.settings().time_zone).map_err(http_param)?;
    let store = report_store(&state)?;
    chargeback(store, &month, now)
        .await
        .map(Json)
        .map_err(store_error)
}

fn report_store(state: &AppState) -> Result<&Store, DoorError> {
    state.store().ok_or_else(|| {
        DoorError::Unavailable(
            "reports read the store, and this Warden runs with `storage: none`; \
             name a store in the config's `storage` to keep allocations and report on them"
                .to_owned(),
        )
    })
}

fn http_param(e: ParamError) -> DoorError {
    DoorError::bad(format!("query parameter `{}`: {}", e.param, e.problem))
}

fn store_error(e: StoreError) -> DoorError {
    if e.is_unreachable() {
        DoorError::StoreFailure(format!("the report cannot be made now: {e}"))
    } else {
        DoorError::Internal(format!("report query failed: {e}"))
    }
}

/// A query string's parameters, each at most once, all of them known.
/// Empty values count as absent.
#[derive(Debug, Default)]
struct QueryParams(BTreeMap<String, String>);

impl QueryParams {
    fn parse(query: Option<&str>, known: &[&str]) -> Result<Self, DoorError> {
        let query = query.unwrap_or("");
        check_percent_escapes(query)?;
        let mut out = BTreeMap::new();
        for (key, value) in form_urlencoded::parse(query.as_bytes()) {
            // form_urlencoded replaces bytes that are not UTF-8 with U+FFFD.
            if (key.contains('\u{fffd}') || value.contains('\u{fffd}'))
                && !query.contains('\u{fffd}')
            {
                return Err(DoorError::bad(
                    "the query string is not valid percent-encoded UTF-8".to_owned(),
                ));
            }
            if !known.contains(&key.as_ref()) {
                return Err(DoorError::bad(format!(
                    "unknown query parameter `{}`; use {}",
                    key.escape_default(),
                    known
                        .iter()
                        .map(|k| format!("`{k}`"))
                        .collect::<Vec<_>>()
                        .join(", ")
                )));
            }
            if out.contains_key(key.as_ref()) {
                return Err(DoorError::bad(format!(
                    "query parameter `{key}` is given more than once; give it once"
                )));
            }
            out.insert(key.into_owned(), value.into_owned());
        }
        Ok(Self(out))
    }

    fn get(&self, key: &str) -> Option<String> {
        self.0.get(key).filter(|v| !v.trim().is_empty()).cloned()
    }
}

/// Refuses a `%` not followed by two hex digits, which form_urlencoded
/// would keep as it is.
fn check_percent_escapes(query: &str) -> Result<(), DoorError> {
    let bytes = query.as_bytes();
    for (at, _) in query.match_indices('%') {
        let hex = |i: usize| bytes.get(i).is_some_and(u8::is_ascii_hexdigit);
        if !(hex(at + 1) && hex(at + 2)) {
            let near: String = query.get(at..).unwrap_or("").chars().take(12).collect();
            return Err(DoorError::bad(format!(
                "the query string is not valid percent-encoded UTF-8 near `{}`",
                near.escape_default()
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> UnixMicros {
        UnixMicros::parse_rfc3339(text).unwrap()
    }

    fn params(pairs: &[(&str, &str)]) -> PeriodParams {
        let get = |k: &str| {
            pairs
                .iter()
                .find(|(key, _)| *key == k)
                .map(|(_, v)| (*v).to_owned())
        };
        PeriodParams {
            period: get("period"),
            date: get("date"),
            month: get("month"),
            from: get("from"),
            until: get("until"),
        }
    }

    #[test]
    fn periods_resolve_to_utc_days_months_and_windows() {
        let now = at("2026-11-23T14:05:00Z");
        let p = |pairs: &[(&str, &str)]| resolve_period(&params(pairs), now, &TimeZone::UTC);
        let window = |p: Period| (p.kind, p.from.to_string(), p.until.to_string());
        assert_eq!(
            window(p(&[]).unwrap()),
            (
                PeriodKind::Month,
                "2026-11-01T00:00:00.000000Z".to_owned(),
                "2026-12-01T00:00:00.000000Z".to_owned()
            )
        );
        assert_eq!(
            window(p(&[("period", "day")]).unwrap()),
            (
                PeriodKind::Day,
                "2026-11-23T00:00:00.000000Z".to_owned(),
                "2026-11-24T00:00:00.000000Z".to_owned()
            )
        );
        // The kind follows from the parameters given.
        let day = p(&[("date", "2024-02-29")]).unwrap();
        assert_eq!(
            (day.kind, day.label.as_str()),
            (PeriodKind::Day, "2024-02-29")
        );
        let dec = p(&[("month", "2026-12")]).unwrap();
        assert_eq!(dec.until.to_string(), "2027-01-01T00:00:00.000000Z");
        assert_eq!(
            (dec.label.as_str(), dec.time_zone.as_str()),
            ("2026-12", "UTC")
        );
        let custom = p(&[("from", "2026-11-20T12:00:00Z")]).unwrap();
        assert_eq!((custom.kind, custom.until), (PeriodKind::Custom, now));
        let custom = p(&[
            ("period", "custom"),
            ("from", "2026-11-01"),
            ("until", "2026-11-02"),
        ]);
        assert_eq!(
            custom.unwrap().until.to_string(),
            "2026-11-02T00:00:00.000000Z"
        );
    }

    #[test]
    fn days_and_months_follow_the_time_zone() {
        let berlin = warden_store::parse_time_zone("Europe/Berlin").unwrap();
        // 23:30 UTC on the 22nd is the 23rd in Berlin: "today" is the 23rd.
        let now = at("2026-11-22T23:30:00Z");
        let day = resolve_period(&params(&[("period", "day")]), now, &berlin).unwrap();
        assert_eq!(
            (day.label.as_str(), day.from, day.until),
            (
                "2026-11-23",
                at("2026-11-22T23:00:00Z"),
                at("2026-11-23T23:00:00Z")
            )
        );
        assert_eq!(day.time_zone, "Europe/Berlin");
        // The day summer time ends has 25 hours; October has 31 days and
        // one hour.
        let day = resolve_period(&params(&[("date", "2026-10-25")]), now, &berlin).unwrap();
        assert_eq!(
            (day.from, day.until),
            (at("2026-10-24T22:00:00Z"), at("2026-10-25T23:00:00Z"))
        );
        let month = parse_month("month", "2026-10", &berlin).unwrap();
        assert_eq!(
            (month.from, month.until),
            (at("2026-09-30T22:00:00Z"), at("2026-10-31T23:00:00Z"))
        );
    }

    #[test]
    fn period_errors_name_the_parameter_and_the_fix() {
        let now = at("2026-11-23T14:05:00Z");
        let err = |pairs: &[(&str, &str)]| {
            resolve_period(&params(pairs), now, &TimeZone::UTC).unwrap_err()
        };
        let e = err(&[("period", "week")]);
        assert_eq!(e.param, "period");
        assert!(
            e.problem.contains("`week`") && e.problem.contains("`custom`"),
            "{e}"
        );
        let e = err(&[("date", "2026-02-30")]);
        assert_eq!(
            e.to_string(),
            "`date`: `2026-02-30` is not a date; write e.g. `2026-11-23`"
        );
        assert_eq!(err(&[("date", "2026-11-23T10:00")]).param, "date");
        assert_eq!(err(&[("month", "2026-13")]).param, "month");
        assert_eq!(err(&[("month", "2026-1")]).param, "month");
        assert_eq!(err(&[("month", "2026-11-01")]).param, "month");
        assert_eq!(err(&[("date", "2026-11")]).param, "date");
        assert_eq!(
            err(&[("period", "day"), ("month", "2026-11")]).param,
            "month"
        );
        assert_eq!(
            err(&[("period", "month"), ("date", "2026-11-02")]).param,
            "date"
        );
        assert_eq!(
            err(&[("date", "2026-11-02"), ("month", "2026-11")]).param,
            "period"
        );
        let e = err(&[("period", "custom")]);
        assert!(e.param == "from" && e.problem.contains("required"), "{e}");
        let e = err(&[("from", "2026-11-02"), ("until", "2026-11-01")]);
        assert!(e.param == "until" && e.problem.contains("empty"), "{e}");
        assert_eq!(err(&[("from", "last week")]).param, "from");
    }

    #[test]
    fn fixed_decimals_are_exact_text() {
        assert_eq!(Fixed::hundredths(1250).to_string(), "12.50");
        assert_eq!(Fixed::hundredths(7).to_string(), "0.07");
        assert_eq!(Fixed::tenths(1000).to_string(), "100.0");
        assert_eq!(
            serde_json::to_string(&Fixed::hundredths(5)).unwrap(),
            "\"0.05\""
        );
    }

    #[test]
    fn apportioned_parts_add_up_and_stay_within_a_unit() {
        // Three thirds of a unit each: the total rounds to 1, which goes to
        // the first of the equal remainders.
        assert_eq!(apportion(&[1, 1, 1], 3), (vec![1, 0, 0], 1));
        // 0.4 + 0.4 + 0.4 = 1.2 → 1; 0.6 + 0.6 = 1.2 → 1 (not 2).
        assert_eq!(apportion(&[4, 4, 4], 10), (vec![1, 0, 0], 1));
        assert_eq!(apportion(&[6, 6], 10), (vec![1, 0], 1));
        // Half up: 0.25 + 0.25 = 0.5 → 1, to the first.
        assert_eq!(apportion(&[25, 25], 100), (vec![1, 0], 1));
        // Exact parts are not touched; the largest remainder wins.
        assert_eq!(apportion(&[100, 149, 170], 100), (vec![1, 1, 2], 4));
        assert_eq!(apportion(&[], 100), (vec![], 0));
        // Many small parts.
        let amounts: Vec<i128> = (0..1000).map(|i| (i * 7_919) % 10_007).collect();
        let (parts, total) = apportion(&amounts, 1000);
        assert_eq!(parts.iter().sum::<i128>(), total);
        assert_eq!(total, (amounts.iter().sum::<i128>() + 500) / 1000);
        for (a, p) in amounts.iter().zip(&parts) {
            assert!((p * 1000 - a).abs() < 1000, "{a} -> {p}");
        }
    }

    fn line(
        team: &str,
        model: Option<&str>,
        allocations: u64,
        cost_scaled: i128,
        gpu: i128,
    ) -> GroupUsage {
        GroupUsage {
            key: GroupKey::TeamGpuModel {
                team: TeamName::parse(team).unwrap(),
                gpu_model: model.map(|m| GpuModel::parse(m).unwrap()),
            },
            allocations,
            cost_scaled,
            gpu_micros: gpu,
        }
    }

    #[test]
    fn chargeback_lines_add_up_to_the_total_in_cents() {
        let month = parse_month("month", "2026-11", &TimeZone::UTC).unwrap();
        // $0.005 three times: each line's exact cost is half a cent; the
        // total, $0.015, rounds half up to 2 cents, given to the first two.
        let half_cent = SCALED_PER_CENT / 2;
        let third_hour = warden_store::COST_SCALE / 3;
        let groups = [
            line("cv", None, 1, half_cent, 0),
            line("ml", Some("A100"), 2, half_cent, third_hour),
            line(
                "ml",
                Some("H100"),
                1,
                half_cent + 3 * SCALED_PER_CENT * 100,
                8 * third_hour,
            ),
        ];
        let c = build_chargeback(month.clone(), at("2026-12-02"), &groups);
        let cents: Vec<i64> = c
            .lines
            .iter()
            .map(|l| l.amount_usd.micros() / 10_000)
            .collect();
        assert_eq!(cents, [1, 1, 300]);
        assert_eq!(c.total.amount_usd, Usd::from_micros(3_020_000));
        assert_eq!(
            c.lines.iter().map(|l| l.amount_usd.micros()).sum::<i64>(),
            c.total.amount_usd.micros()
        );
        // 1/3 h + 8/3 h = 3 h: 0.33 + 2.67 (the larger remainder is 0.66).
        let hours: Vec<String> = c.lines.iter().map(|l| l.gpu_hours.to_string()).collect();
        assert_eq!(hours, ["0.00", "0.33", "2.67"]);
        assert_eq!(c.total.gpu_hours.to_string(), "3.00");
        assert_eq!(c.total.allocations, 4);
        assert_eq!(c.teams.len(), 2);
        assert_eq!(c.teams[1].amount_usd, Usd::from_micros(3_010_000));
        assert_eq!(c.teams[1].gpu_hours.to_string(), "3.00");
        assert!(c.complete);
        assert_eq!(c.month, "2026-11");
        let json = serde_json::to_value(&c).unwrap();
        assert_eq!(json["lines"][0]["gpu_model"], serde_json::Value::Null);
        assert_eq!(json["lines"][2]["amount_usd"], "3.00");
        assert_eq!(json["total"]["amount_usd"], "3.02");
        assert_eq!(json["period"]["from"], "2026-11-01T00:00:00.000000Z");
        assert!(!build_chargeback(month, at("2026-11-30"), &groups).complete);
    }

    #[test]
    fn team_rows_show_the_period_budget_and_teams_without_spend() {
        let policy = Policy::from_yaml(
            "teams:\n  ml: {budgets: {daily_usd: 100, monthly_usd: 1000}}\n  cv: {}\n  nlp: {budgets: {monthly_usd: 0}}\n",
        )
        .unwrap();
        let team = |t: &str| TeamName::parse(t).unwrap();
        let groups = vec![GroupUsage {
            key: GroupKey::Team { team: team("ml") },
            allocations: 2,
            // $123.456789 and a fraction of a micro-dollar.
            cost_scaled: 123_456_789 * warden_store::COST_SCALE + 5,
            gpu_micros: 3 * warden_store::COST_SCALE / 2,
        }];
        let q = |kind| SpendQuery {
            period: Period {
                kind,
                label: "2026-11".to_owned(),
                time_zone: "UTC".to_owned(),
                from: at("2026-11-01"),
                until: at("2026-12-01"),
            },
            by: SpendBy::Team,
            team: None,
        };
        let now = at("2026-11-23");
        let r = build_spend_report(&policy, &q(PeriodKind::Month), now, groups.clone());
        let names: Vec<&str> = r
            .rows
            .iter()
            .map(|row| row.key.team().unwrap().as_str())
            .collect();
        assert_eq!(names, ["ml", "cv", "nlp"]);
        let ml = &r.rows[0];
        assert_eq!(ml.spend_usd, Usd::from_micros(123_456_789));
        assert_eq!(ml.gpu_hours.to_string(), "1.50");
        let budget = ml.budget.as_ref().unwrap();
        assert_eq!(budget.budget_usd, Some(Usd::from_micros(1_000_000_000)));
        assert_eq!(
            budget.budget_used_pct.map(|p| p.to_string()).as_deref(),
            Some("12.3")
        );
        let nlp = r.rows[2].budget.as_ref().unwrap();
        assert_eq!(
            (nlp.budget_usd, nlp.budget_used_pct),
            (Some(Usd::ZERO), None)
        );
        assert_eq!(r.total.allocations, 2);
        let json = serde_json::to_value(&r).unwrap();
        assert_eq!(json["rows"][0]["team"], "ml");
        assert_eq!(json["rows"][0]["spend_usd"], "123.456789");
        assert_eq!(json["rows"][0]["budget_used_pct"], "12.3");
        assert_eq!(json["rows"][1]["budget_usd"], serde_json::Value::Null);
        assert_eq!(json["period"]["kind"], "month");
        // A day compares with the daily budget; a custom window with none.
        let r = build_spend_report(&policy, &q(PeriodKind::Day), now, groups.clone());
        let budget = r.rows[0].budget.as_ref().unwrap();
        assert_eq!(
            budget.budget_used_pct.map(|p| p.to_string()).as_deref(),
            Some("123.4")
        );
        let r = build_spend_report(&policy, &q(PeriodKind::Custom), now, groups);
        assert_eq!(r.rows[0].budget.as_ref().unwrap().budget_usd, None);
    }

    #[test]
    fn query_strings_are_decoded_and_checked() {
        let known = ["from", "by"];
        let q = QueryParams::parse(Some("from=2026-11-01T08%3A00%3A00Z&by=team"), &known).unwrap();
        assert_eq!(q.get("from").as_deref(), Some("2026-11-01T08:00:00Z"));
        assert_eq!(q.get("by").as_deref(), Some("team"));
        let q = QueryParams::parse(Some("from=&by=a+b"), &known).unwrap();
        assert_eq!((q.get("from"), q.get("by").as_deref()), (None, Some("a b")));
        let msg = |q| QueryParams::parse(Some(q), &known).unwrap_err().to_string();
        assert_eq!(
            msg("sort=spend"),
            "unknown query parameter `sort`; use `from`, `by`"
        );
        assert!(msg("by=team&by=user").contains("more than once"));
        assert!(msg("by=%zz").contains("percent-encoded"));
        assert!(msg("by=%ff").contains("percent-encoded"));
    }
}
