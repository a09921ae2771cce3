//! Usage for reports: what allocations cost, and how many GPU-hours they
//! used, over a window, per group (team, user, GPU model), in one statement
//! over all teams or one.
//!
//! # The rule
//!
//! The one of [`crate::spend`]: an allocation costs its `hourly` price for
//! every microsecond of [started, end) ∩ [from, to), where `end` is when it
//! ended, or `now` while it is live. It used `gpus` × that many
//! microseconds of GPU time. A group's cost is the exact sum of
//! `hourly_micros × overlap_micros` over its allocations
//! ([`GroupUsage::cost_scaled`], micro-dollars × [`COST_SCALE`]), rounded
//! down once, for the whole group, by [`GroupUsage::spend`]; its GPU time is
//! the exact sum of `gpus × overlap_micros` ([`GroupUsage::gpu_micros`]).
//! Nothing is rounded before the caller decides how to present it.
//!
//! Live allocations accrue up to `now`, never past it, so a report of a
//! period that is not over is period-to-date. For a window that ends at or
//! before `now` this is exactly [`Store::spend`]; for a budget period it is
//! the spend the budget check counts at `now` (without the reservations
//! live allocations still hold).
//!
//! Overlap sums are read as BIGINT per (team, user, GPU model, price, GPU
//! count); the products are taken as `i128` in Rust, so both backends give
//! the same exact answer, whatever the window's length.

use std::collections::BTreeMap;

use serde::Serialize;
use warden_core::{GpuModel, TeamName, Usd};

use crate::backend::on_pool;
use crate::error::StoreError;
use crate::spend::{scaled_cost, unscale, MICROS_PER_HOUR};
use crate::time::UnixMicros;
use crate::Store;

/// The scale of [`GroupUsage::cost_scaled`] (micro-dollars × this) and of
/// [`GroupUsage::gpu_micros`] per GPU-hour: microseconds per hour.
pub const COST_SCALE: i128 = MICROS_PER_HOUR;

/// What a report groups allocations by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum GroupBy {
    /// The team charged.
    Team,
    /// The user within the team charged: a user who moved between teams has
    /// one group per team, and allocations without a known user form one
    /// group per team.
    User,
    /// The GPU model, across teams; allocations without a known model form
    /// one group.
    GpuModel,
    /// The GPU model within the team charged (chargeback lines).
    TeamGpuModel,
}

/// One group of a report, as [`GroupBy`] says.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(untagged)]
pub enum GroupKey {
    /// [`GroupBy::Team`].
    Team {
        /// The team.
        team: TeamName,
    },
    /// [`GroupBy::User`].
    User {
        /// The team.
        team: TeamName,
        /// The user; `None` when the door knew none.
        user: Option<String>,
    },
    /// [`GroupBy::GpuModel`].
    GpuModel {
        /// The model; `None` for allocations of no known model.
        gpu_model: Option<GpuModel>,
    },
    /// [`GroupBy::TeamGpuModel`].
    TeamGpuModel {
        /// The team.
        team: TeamName,
        /// The model; `None` for allocations of no known model.
        gpu_model: Option<GpuModel>,
    },
}

impl GroupKey {
    /// The team of the group, unless it groups across teams.
    pub fn team(&self) -> Option<&TeamName> {
        match self {
            GroupKey::Team { team }
            | GroupKey::User { team, .. }
            | GroupKey::TeamGpuModel { team, .. } => Some(team),
            GroupKey::GpuModel { .. } => None,
        }
    }
}

/// A group's usage over a window, exact.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupUsage {
    /// The group.
    pub key: GroupKey,
    /// Allocations that ran for some of the window.
    pub allocations: u64,
    /// The group's exact cost in micro-dollars × [`COST_SCALE`]: the sum of
    /// `hourly_micros × overlap_micros`.
    pub cost_scaled: i128,
    /// GPU time in GPU-microseconds: the sum of `gpus × overlap_micros`
    /// ([`COST_SCALE`] of them make a GPU-hour).
    pub gpu_micros: i128,
}

impl GroupUsage {
    /// The group's cost in whole micro-dollars, rounded down once for the
    /// group.
    pub fn spend(&self) -> Usd {
        Usd::from_micros(unscale(self.cost_scaled))
    }
}

/// What [`Store::usage`] reports on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UsageQuery<'a> {
    /// Start of the window (included).
    pub from: UnixMicros,
    /// End of the window (excluded).
    pub to: UnixMicros,
    /// Until when live allocations have accrued.
    pub now: UnixMicros,
    /// How to group.
    pub by: GroupBy,
    /// Only this team's allocations; `None`: every team's.
    pub team: Option<&'a TeamName>,
}

/// One row of the usage statement.
type UsageRow = (String, Option<String>, Option<String>, i64, i64, i64, i64);

impl Store {
    /// Usage over [`from`, `to`) at `now`, per group, sorted by group; only
    /// groups with an allocation that ran for some of the window are
    /// listed. Empty when `from >= to`. See the [module](crate::report)
    /// for the exact rule.
    ///
    /// One statement: with a team it reads that team's allocations through
    /// the `(team, started_us)` index; without one, every allocation that
    /// started before `to`.
    pub async fn usage(&self, q: &UsageQuery<'_>) -> Result<Vec<GroupUsage>, StoreError> {
        if q.from >= q.to {
            return Ok(Vec::new());
        }
        let (least, greatest) = if self.backend_name() == "postgres" {
            ("LEAST", "GREATEST")
        } else {
            ("MIN", "MAX")
        };
        let team_filter = if q.team.is_some() {
            " AND team = $4"
        } else {
            ""
        };
        // $1 from, $2 to, $3 now. An allocation overlaps the window for
        // LEAST(end, to) - GREATEST(started, from) microseconds, where end is
        // COALESCE(ended_us, now); the conditions keep exactly the rows for
        // which that is positive.
        let sql = format!(
            "SELECT team, user_name, gpu_model, hourly_micros, gpus, \
               CAST(SUM({least}(COALESCE(ended_us, $3), $2) - {greatest}(started_us, $1)) \
                 AS BIGINT), \
               COUNT(*) \
             FROM allocations \
             WHERE started_us < $2 \
               AND COALESCE(ended_us, $3) > $1 \
               AND COALESCE(ended_us, $3) > started_us{team_filter} \
             GROUP BY team, user_name, gpu_model, hourly_micros, gpus"
        );
        let rows: Vec<UsageRow> = on_pool!(self, |pool| {
            let query = sqlx::query_as(&sql)
                .bind(q.from.micros())
                .bind(q.to.micros())
                .bind(q.now.micros());
            let query = match q.team {
                Some(team) => query.bind(team.as_str()),
                None => query,
            };
            query.fetch_all(pool).await?
        });
        let mut groups: BTreeMap<GroupKey, GroupUsage> = BTreeMap::new();
        for (team, user, model, hourly, gpus, micros, count) in rows {
            let key = group_key(q.by, &team, user, model)?;
            let group = groups.entry(key.clone()).or_insert(GroupUsage {
                key,
                allocations: 0,
                cost_scaled: 0,
                gpu_micros: 0,
            });
            group.allocations = group
                .allocations
                .saturating_add(u64::try_from(count).unwrap_or(0));
            group.cost_scaled = group
                .cost_scaled
                .saturating_add(scaled_cost(hourly, micros));
            group.gpu_micros = group
                .gpu_micros
                .saturating_add(i128::from(gpus) * i128::from(micros));
        }
        Ok(groups.into_values().collect())
    }
}

/// The group a usage row belongs to.
fn group_key(
    by: GroupBy,
    team: &str,
    user: Option<String>,
    model: Option<String>,
) -> Result<GroupKey, StoreError> {
    let corrupt = |detail: String| StoreError::Corrupt {
        what: format!("allocations of team `{team}`"),
        detail,
    };
    let team = || TeamName::parse(team).map_err(|e| corrupt(e.to_string()));
    let model = || {
        model
            .as_deref()
            .map(GpuModel::parse)
            .transpose()
            .map_err(|e| corrupt(e.to_string()))
    };
    Ok(match by {
        GroupBy::Team => GroupKey::Team { team: team()? },
        GroupBy::User => GroupKey::User {
            team: team()?,
            user,
        },
        GroupBy::GpuModel => GroupKey::GpuModel {
            gpu_model: model()?,
        },
        GroupBy::TeamGpuModel => GroupKey::TeamGpuModel {
            team: team()?,
            gpu_model: model()?,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn group_keys_sort_by_team_then_member() {
        let key = |team: &str, model: Option<&str>| {
            group_key(GroupBy::TeamGpuModel, team, None, model.map(str::to_owned)).unwrap()
        };
        let mut keys = vec![
            key("ml", Some("h100")),
            key("cv", Some("A100")),
            key("ml", None),
        ];
        keys.sort();
        assert_eq!(
            keys,
            [
                key("cv", Some("A100")),
                key("ml", None),
                key("ml", Some("H100"))
            ]
        );
        assert!(matches!(
            group_key(GroupBy::Team, "bad team", None, None),
            Err(StoreError::Corrupt { .. })
        ));
    }

    #[test]
    fn spend_rounds_the_group_down_once() {
        let g = GroupUsage {
            key: GroupKey::GpuModel { gpu_model: None },
            allocations: 2,
            // $3/h for one second, twice: 1666.(6) micro-dollars.
            cost_scaled: 2 * scaled_cost(3_000_000, 1_000_000),
            gpu_micros: 2_000_000,
        };
        assert_eq!(g.spend(), Usd::from_micros(1666));
    }
}
