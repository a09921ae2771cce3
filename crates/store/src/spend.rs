//! Spend: what a team's allocations cost over a window, and what a budget
//! counts against it.
//!
//! # Spend
//!
//! An allocation costs its `hourly` price for every microsecond of
//! [started, ended) (a live one: up to the end of the window asked about).
//! [`Store::spend`] sums, over the team's allocations, `hourly_micros ×
//! overlap_micros` where `overlap_micros` is the length of that interval's
//! intersection with [from, to), and divides the sum once by
//! 3,600,000,000 (µs per hour), rounding down: the result is the exact
//! cost, in whole micro-dollars, never more than the exact value and less
//! by under one micro-dollar. Products are computed as `i128` in Rust over
//! per-price sums of overlaps read with BIGINT SQL, so both backends give
//! the same, exact answer.
//!
//! # What a budget counts
//!
//! [`Limit::Budget`](crate::Limit::Budget) `{ from, max, reservation }`
//! denies a reservation at `now` when
//!
//! ```text
//! spend(team, from, now) + held(team, now) + reservation > max
//! ```
//!
//! compared exactly (in micro-dollars × 3,600,000,000, no rounding), where
//! `held` is, over the team's live allocations, what each still holds of its
//! own reservation: `max(0, reserved − hourly × (now − started))`, with
//! `reserved` the largest `reservation` of the budget limits it was granted
//! under (0 if none). So a live allocation counts `max(accrued, reserved)`
//! while its whole run lies in the window: just after a grant, its full
//! reservation; once it has run longer than the reservation window, what it
//! really cost. Launches in quick succession therefore cannot spend the same
//! headroom, whether they are decided in one group-commit batch (earlier
//! grants of the batch are counted in memory, the same way), in different
//! batches, or by different replicas (serialized by the team lock).
//! A live allocation that started before `from` still holds its remaining
//! reservation: that is cost expected inside the window.
//!
//! Checks do not sum the allocations each time: they read a budget state
//! kept in step with every grant and end, which gives exactly these
//! answers at a cost that does not grow with the number of allocations
//! (`src/budget.rs` shows why it is exact).

use warden_core::{TeamName, Usd};

use crate::backend::{on_tx, Tx};
use crate::error::StoreError;
use crate::time::UnixMicros;
use crate::Store;

/// Microseconds per hour: the denominator of every cost. Scaled sums
/// saturate rather than overflow, which can only deny.
pub(crate) const MICROS_PER_HOUR: i128 = 3_600_000_000;

/// Cost of `hourly` over `micros` microseconds, in micro-dollars ×
/// [`MICROS_PER_HOUR`] (exact).
pub(crate) fn scaled_cost(hourly_micros: i64, micros: i64) -> i128 {
    i128::from(hourly_micros) * i128::from(micros)
}

/// What a live allocation still holds of its reservation at `now`, scaled
/// like [`scaled_cost`].
pub(crate) fn scaled_held(
    hourly_micros: i64,
    started: UnixMicros,
    reserved_micros: i64,
    now: UnixMicros,
) -> i128 {
    let age = now.micros().saturating_sub(started.micros()).max(0);
    (i128::from(reserved_micros) * MICROS_PER_HOUR - scaled_cost(hourly_micros, age)).max(0)
}

/// The length of [start, end) ∩ [from, to), 0 if they do not meet.
#[cfg(test)]
pub(crate) fn overlap(start: i64, end: i64, from: i64, to: i64) -> i64 {
    end.min(to).saturating_sub(start.max(from)).max(0)
}

/// A scaled amount as whole micro-dollars, rounded down, saturating.
pub(crate) fn unscale(scaled: i128) -> i64 {
    i64::try_from(scaled.div_euclid(MICROS_PER_HOUR)).unwrap_or(if scaled < 0 {
        i64::MIN
    } else {
        i64::MAX
    })
}

impl Tx {
    /// The team's spend over [from, to), scaled like [`scaled_cost`].
    pub(crate) async fn scaled_spend(
        &mut self,
        team: &TeamName,
        from: UnixMicros,
        to: UnixMicros,
    ) -> Result<i128, StoreError> {
        if from >= to {
            return Ok(0);
        }
        // Rows overlapping the window, their overlaps summed per price.
        // Overlap sums fit a BIGINT (292,000 years of microseconds); the
        // products may not, so they are taken in Rust.
        let (least, greatest) = if self.is_postgres() {
            ("LEAST", "GREATEST")
        } else {
            ("MIN", "MAX")
        };
        let sql = format!(
            "SELECT hourly_micros, \
               CAST(SUM({least}(COALESCE(ended_us, $3), $3) - {greatest}(started_us, $2)) \
                 AS BIGINT) \
             FROM allocations \
             WHERE team = $1 AND started_us < $3 \
               AND (ended_us IS NULL OR ended_us > $2) \
               AND COALESCE(ended_us, $3) > started_us \
             GROUP BY hourly_micros"
        );
        let rows: Vec<(i64, i64)> = on_tx!(self, |conn| {
            sqlx::query_as(&sql)
                .bind(team.as_str())
                .bind(from.micros())
                .bind(to.micros())
                .fetch_all(&mut *conn)
                .await?
        });
        Ok(rows
            .into_iter()
            .map(|(hourly, micros)| scaled_cost(hourly, micros))
            .fold(0, i128::saturating_add))
    }

    /// What the team's live allocations still hold of their reservations at
    /// `now`, scaled like [`scaled_cost`].
    pub(crate) async fn scaled_held(
        &mut self,
        team: &TeamName,
        now: UnixMicros,
    ) -> Result<i128, StoreError> {
        let rows: Vec<(i64, i64, i64)> = on_tx!(self, |conn| {
            sqlx::query_as(
                "SELECT hourly_micros, started_us, reserved_micros FROM allocations \
                 WHERE team = $1 AND state = 'live' AND reserved_micros > 0",
            )
            .bind(team.as_str())
            .fetch_all(&mut *conn)
            .await?
        });
        Ok(rows
            .into_iter()
            .map(|(hourly, started, reserved)| {
                scaled_held(hourly, UnixMicros::from_micros(started), reserved, now)
            })
            .fold(0, i128::saturating_add))
    }
}

impl Store {
    /// What the team's allocations cost over [from, to), ended and live
    /// alike (a live one accrues up to `to`), in whole micro-dollars rounded
    /// down; see [`crate::spend`] for the exact rule.
    /// Empty when `from >= to`.
    pub async fn spend(
        &self,
        team: &TeamName,
        from: UnixMicros,
        to: UnixMicros,
    ) -> Result<Usd, StoreError> {
        let mut tx = self.begin_snapshot().await?;
        let scaled = tx.scaled_spend(team, from, to).await?;
        tx.commit().await?;
        Ok(Usd::from_micros(unscale(scaled)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overlaps_clip_to_the_window() {
        assert_eq!(overlap(10, 20, 0, 100), 10);
        assert_eq!(overlap(10, 20, 15, 100), 5);
        assert_eq!(overlap(10, 20, 0, 12), 2);
        assert_eq!(overlap(10, 20, 20, 30), 0);
        assert_eq!(overlap(10, 20, 30, 40), 0);
    }

    #[test]
    fn held_is_what_is_not_yet_accrued() {
        let t = UnixMicros::from_micros;
        // $10/h reserving $10: all of it at the start, half after 30 min,
        // nothing after an hour, never negative.
        assert_eq!(
            unscale(scaled_held(10_000_000, t(0), 10_000_000, t(0))),
            10_000_000
        );
        assert_eq!(
            unscale(scaled_held(10_000_000, t(0), 10_000_000, t(1_800_000_000))),
            5_000_000
        );
        assert_eq!(
            scaled_held(10_000_000, t(0), 10_000_000, t(7_200_000_000)),
            0
        );
        // A start after `now` (clock skew) has accrued nothing.
        assert_eq!(unscale(scaled_held(1, t(5), 7, t(0))), 7);
    }

    #[test]
    fn unscale_rounds_down() {
        assert_eq!(unscale(MICROS_PER_HOUR * 3 - 1), 2);
        assert_eq!(unscale(scaled_cost(1, 1)), 0);
        assert_eq!(unscale(i128::MAX), i64::MAX);
    }
}
