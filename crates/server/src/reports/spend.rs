//! The spend report: cost and GPU-hours per team, user or GPU model over
//! a period ([`spend_report`]), with each team's budget for the period.

use serde::Serialize;
use warden_core::{Policy, TeamName, Usd};
use warden_store::{GroupBy, GroupKey, GroupUsage, Store, StoreError, UnixMicros, UsageQuery};

use super::amounts::{Fixed, GPU_MICROS_PER_HUNDREDTH};
use super::period::{instant, param_error, ParamError, Period, PeriodKind};

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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reports::period::tests::at;

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
}
