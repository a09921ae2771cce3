//! Budget alerts: soft thresholds (say 50, 80 and 100 % of a team's daily
//! or monthly budget) that fire once per period per threshold.
//!
//! Whoever notices a crossing first (a check after a grant, the periodic
//! watch, any replica) calls [`Store::claim_budget_alert`]; the store
//! records the alert and its audit record (`budget.alert`) in one
//! transaction, keyed by (team, period, period start, threshold), so exactly
//! one caller is told it claimed it and should notify (log, webhook). The
//! others learn it was already claimed.

use serde::Serialize;
use serde_json::json;
use warden_core::{TeamName, Usd};

use crate::audit::NewRecord;
use crate::backend::{on_pool, on_tx};
use crate::error::StoreError;
use crate::time::{Period, UnixMicros};
use crate::Store;

/// A crossed soft threshold.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BudgetAlert {
    /// The team whose budget it is.
    pub team: TeamName,
    /// The budget's period (day or month) and its bounds.
    pub period: Period,
    /// The threshold crossed, in percent of the budget.
    pub percent: u32,
    /// The team's spend in the period when it was noticed.
    pub spend: Usd,
    /// The budget.
    pub budget: Usd,
}

impl BudgetAlert {
    /// The alert as its audit record and webhook carry it.
    pub fn payload(&self) -> serde_json::Value {
        json!({
            "team": self.team,
            "period": self.period.kind.as_str(),
            "period_start": self.period.start.to_string(),
            "period_end": self.period.end.to_string(),
            "percent": self.percent,
            "spend_usd": self.spend.to_string(),
            "budget_usd": self.budget.to_string(),
        })
    }
}

/// An alert as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StoredAlert {
    /// The team.
    pub team: String,
    /// `day` or `month`.
    pub period: String,
    /// The period's first instant.
    pub period_start: UnixMicros,
    /// The threshold, in percent.
    pub percent: u32,
    /// When it was claimed.
    pub at: UnixMicros,
    /// Spend when noticed.
    pub spend: Usd,
    /// The budget then.
    pub budget: Usd,
}

impl Store {
    /// Records `alert` unless this (team, period, start, threshold) already
    /// fired, with its `budget.alert` audit record in the same transaction.
    /// `Ok(true)`: this call claimed it, the caller notifies; `Ok(false)`:
    /// it had fired before (in this or another replica).
    pub async fn claim_budget_alert(
        &self,
        alert: &BudgetAlert,
        now: UnixMicros,
    ) -> Result<bool, StoreError> {
        let mut tx = self.begin_write().await?;
        let inserted = on_tx!(&mut tx, |conn| {
            sqlx::query(
                "INSERT INTO budget_alerts \
                   (team, period, period_start, percent, at_us, spend_micros, budget_micros) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7) \
                 ON CONFLICT (team, period, period_start, percent) DO NOTHING",
            )
            .bind(alert.team.as_str())
            .bind(alert.period.kind.as_str())
            .bind(alert.period.start.micros())
            .bind(i64::from(alert.percent))
            .bind(now.micros())
            .bind(alert.spend.micros())
            .bind(alert.budget.micros())
            .execute(&mut *conn)
            .await?
            .rows_affected()
        });
        if inserted == 0 {
            tx.commit().await?;
            return Ok(false);
        }
        tx.append_records(vec![NewRecord {
            kind: "budget.alert".to_owned(),
            payload: alert.payload().to_string(),
            at: now,
        }])
        .await?;
        tx.commit().await?;
        Ok(true)
    }

    /// Alerts claimed at or after `since`, oldest first.
    pub async fn budget_alerts(&self, since: UnixMicros) -> Result<Vec<StoredAlert>, StoreError> {
        type Row = (String, String, i64, i64, i64, i64, i64);
        let rows: Vec<Row> = on_pool!(self, |pool| {
            sqlx::query_as(
                "SELECT team, period, period_start, percent, at_us, spend_micros, budget_micros \
                 FROM budget_alerts WHERE at_us >= $1 \
                 ORDER BY at_us, team, period, percent",
            )
            .bind(since.micros())
            .fetch_all(pool)
            .await?
        });
        Ok(rows
            .into_iter()
            .map(
                |(team, period, start, percent, at, spend, budget)| StoredAlert {
                    team,
                    period,
                    period_start: UnixMicros::from_micros(start),
                    percent: u32::try_from(percent).unwrap_or(u32::MAX),
                    at: UnixMicros::from_micros(at),
                    spend: Usd::from_micros(spend),
                    budget: Usd::from_micros(budget),
                },
            )
            .collect())
    }
}

/// The thresholds `spend` has reached of `budget`, among `percents`:
/// `spend × 100 ≥ budget × percent`, compared exactly. A zero budget counts
/// as reached by any spend above zero.
pub fn reached(spend: Usd, budget: Usd, percents: &[u32]) -> Vec<u32> {
    percents
        .iter()
        .copied()
        .filter(|&p| {
            let lhs = i128::from(spend.micros()) * 100;
            let rhs = i128::from(budget.micros()) * i128::from(p);
            if budget.micros() <= 0 {
                spend.micros() > 0
            } else {
                lhs >= rhs
            }
        })
        .collect()
}

/// The alerts of a period's spend against its budget: the thresholds
/// reached, as alerts to claim.
pub fn alerts_for(
    team: &TeamName,
    period: Period,
    spend: Usd,
    budget: Usd,
    percents: &[u32],
) -> Vec<BudgetAlert> {
    reached(spend, budget, percents)
        .into_iter()
        .map(|percent| BudgetAlert {
            team: team.clone(),
            period,
            percent,
            spend,
            budget,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thresholds_compare_exactly() {
        let usd = |m: i64| Usd::from_micros(m);
        assert_eq!(
            reached(usd(49_999_999), usd(100_000_000), &[50, 80, 100]),
            Vec::<u32>::new()
        );
        assert_eq!(
            reached(usd(50_000_000), usd(100_000_000), &[50, 80, 100]),
            vec![50]
        );
        assert_eq!(
            reached(usd(120_000_000), usd(100_000_000), &[50, 80, 100]),
            vec![50, 80, 100]
        );
        assert_eq!(reached(usd(0), usd(0), &[50]), Vec::<u32>::new());
        assert_eq!(reached(usd(1), usd(0), &[50]), vec![50]);
    }
}
