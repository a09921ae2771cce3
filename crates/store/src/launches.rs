//! Launch rate limits ([`Limit::Launches`]): token
//! buckets in the `launch_buckets` table, shared by every replica.
//!
//! # The bucket
//!
//! A limit of `max` launches `per` window is a bucket of capacity `max`,
//! refilled continuously at `max / per` tokens per µs. A reservation that
//! would create a new allocation needs one token: if the bucket holds at
//! least one at the reservation's `now`, it may go ahead (the other limits
//! permitting) and, if granted, takes it; otherwise it is denied with the
//! instant at which the bucket will hold one again. Denied reservations
//! and re-launches of a live allocation (which are granted without any
//! check) take nothing. So at most `max` launches pass in a burst, and `n`
//! more need `n × per / max` to refill.
//!
//! The table stores, per bucket, the instant it is full again, exactly:
//! `full_at_us + full_at_frac / max_launches`. At `t` the bucket holds
//! `max - (full_at - t) × max / per` tokens, or `max` once `t >= full_at`
//! (no row: full). Taking a token moves `full_at` to
//! `max(full_at, t) + per / max`. This "full at" form is exact in integers
//! (instants scaled by `max`, in `i128`), needs no "last updated" column,
//! and makes a clock that is behind see fewer tokens, never more: with
//! replicas whose clocks differ, a bucket is never refilled by a clock
//! stepping back.
//!
//! A bucket is keyed by the team, the scope, the user for a per-user limit
//! (requests without a user share one bucket, like other per-user limits)
//! and the limit's `max` and `per`: two limits with different windows are
//! two buckets, and changing a limit's numbers starts a full bucket.
//!
//! Buckets are read and written in the reservation's transaction, after the
//! team's lock (`Tx::lock_teams` in `src/backend.rs`): like quotas, exact under concurrency,
//! across replicas.

use std::collections::HashMap;

use crate::allocations::{AllocationRequest, Limit, Scope};
use crate::backend::{sqlite_chunks, sqlite_values, Param, Tx};
use crate::error::StoreError;
use crate::time::UnixMicros;

/// Which bucket a launch limit draws from, for a given request.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct BucketKey {
    team: String,
    scope: Scope,
    /// The user, for [`Scope::User`]; `None` also for a request without
    /// one.
    user: Option<String>,
    max: i64,
    per: i64,
}

impl BucketKey {
    /// The bucket `limit` draws from for `req`, if it is a launch limit
    /// that can ever allow a launch (`max > 0`; its window was checked by
    /// `check_request`).
    pub(crate) fn of(req: &AllocationRequest, limit: &Limit) -> Option<BucketKey> {
        let Limit::Launches { scope, max, per } = limit else {
            return None;
        };
        if *max == 0 {
            return None;
        }
        Some(BucketKey {
            team: req.team.as_str().to_owned(),
            scope: *scope,
            user: match scope {
                Scope::Team => None,
                Scope::User => req.user.clone(),
            },
            max: i64::from(*max),
            per: per_micros(*per)?,
        })
    }

    fn scope_text(&self) -> &'static str {
        match self.scope {
            Scope::Team => "team",
            Scope::User => "user",
        }
    }
}

/// A window in whole µs, if it is one the store accepts: at least 1 µs and
/// representable.
pub(crate) fn per_micros(per: std::time::Duration) -> Option<i64> {
    i64::try_from(per.as_micros()).ok().filter(|&us| us > 0)
}

/// One bucket as read and changed in this transaction.
#[derive(Debug, Clone)]
pub(crate) struct Bucket {
    id: Option<i64>,
    /// `full_at × max`; `None` while full with no row.
    full_at: Option<i128>,
    changed: bool,
}

impl Bucket {
    /// `None` if the bucket holds a token at `now`; otherwise when it will
    /// hold one.
    fn next_token(&self, key: &BucketKey, now: UnixMicros) -> Option<i128> {
        let full_at = self.full_at?;
        let (max, per) = (i128::from(key.max), i128::from(key.per));
        // Tokens at t: max - (full_at - t) × max / per >= 1, scaled by
        // max: full_at × max <= t × max + per × (max - 1).
        let slack = per * (max - 1);
        let line = i128::from(now.micros()) * max + slack;
        (full_at > line).then(|| {
            // The smallest t with t × max >= full_at × max - slack.
            let need = full_at - slack;
            need.div_euclid(max) + i128::from(need.rem_euclid(max) != 0)
        })
    }

    /// Takes one token at `now`.
    fn take(&mut self, key: &BucketKey, now: UnixMicros) {
        let (max, per) = (i128::from(key.max), i128::from(key.per));
        let from = i128::from(now.micros()) * max;
        self.full_at = Some(self.full_at.map_or(from, |f| f.max(from)) + per);
        self.changed = true;
    }
}

/// The buckets a batch draws from.
#[derive(Debug, Default)]
pub(crate) struct Buckets {
    buckets: HashMap<BucketKey, Bucket>,
}

impl Buckets {
    /// For a launch `limit` on `req` at `now`: `None` if it allows the
    /// launch; otherwise `Some(retry)`, with `retry` the instant a token is
    /// available again (`None`: never, for `max = 0`).
    pub(crate) fn denies(
        &self,
        req: &AllocationRequest,
        limit: &Limit,
        now: UnixMicros,
    ) -> Option<Option<UnixMicros>> {
        let Limit::Launches { .. } = limit else {
            return None;
        };
        let Some(key) = BucketKey::of(req, limit) else {
            return Some(None);
        };
        let next = self.buckets.get(&key)?.next_token(&key, now)?;
        Some(Some(UnixMicros::from_micros(
            i64::try_from(next).unwrap_or(i64::MAX),
        )))
    }

    /// Takes a token from each distinct bucket that `limits` draw from for
    /// a granted `req`.
    pub(crate) fn take(&mut self, req: &AllocationRequest, limits: &[Limit], now: UnixMicros) {
        let keys: Vec<BucketKey> = limits
            .iter()
            .filter_map(|limit| BucketKey::of(req, limit))
            .collect();
        for (n, key) in keys.iter().enumerate() {
            if keys.get(..n).is_some_and(|before| before.contains(key)) {
                continue;
            }
            self.buckets
                .entry(key.clone())
                .or_insert(Bucket {
                    id: None,
                    full_at: None,
                    changed: false,
                })
                .take(key, now);
        }
    }
}

/// A `launch_buckets` row: id, team, scope, user, max, per, full at, frac.
type BucketRow = (i64, String, String, Option<String>, i64, i64, i64, i64);

impl Tx {
    /// The stored buckets with these keys (their teams locked). One
    /// statement on PostgreSQL.
    pub(crate) async fn load_buckets(&mut self, keys: &[BucketKey]) -> Result<Buckets, StoreError> {
        const COLUMNS: &str = "SELECT b.id, b.team, b.scope, b.user_name, b.max_launches, \
             b.per_us, b.full_at_us, b.full_at_frac FROM launch_buckets b";
        let mut rows: Vec<BucketRow> = Vec::new();
        match self {
            Tx::Postgres { tx } => {
                if !keys.is_empty() {
                    rows = sqlx::query_as(&format!(
                        "{COLUMNS} JOIN UNNEST($1::TEXT[], $2::TEXT[], $3::TEXT[], \
                           $4::BIGINT[], $5::BIGINT[]) AS k(team, scope, user_name, max, per) \
                         ON b.team = k.team AND b.scope = k.scope \
                           AND b.user_name IS NOT DISTINCT FROM k.user_name \
                           AND b.max_launches = k.max AND b.per_us = k.per"
                    ))
                    .bind(keys.iter().map(|k| k.team.as_str()).collect::<Vec<_>>())
                    .bind(keys.iter().map(BucketKey::scope_text).collect::<Vec<_>>())
                    .bind(keys.iter().map(|k| k.user.as_deref()).collect::<Vec<_>>())
                    .bind(keys.iter().map(|k| k.max).collect::<Vec<_>>())
                    .bind(keys.iter().map(|k| k.per).collect::<Vec<_>>())
                    .fetch_all(&mut **tx)
                    .await?;
                }
            }
            Tx::Sqlite { tx, .. } => {
                for range in sqlite_chunks(keys.len()) {
                    let chunk = keys.get(range).unwrap_or_default();
                    let sql = format!(
                        "{COLUMNS} JOIN (VALUES {}) AS k \
                         ON b.team = k.column1 AND b.scope = k.column2 \
                           AND b.user_name IS NOT DISTINCT FROM k.column3 \
                           AND b.max_launches = k.column4 AND b.per_us = k.column5",
                        sqlite_values(chunk.len(), 5)
                    );
                    let mut query = sqlx::query_as(&sql);
                    for k in chunk {
                        query = query
                            .bind(k.team.as_str())
                            .bind(k.scope_text())
                            .bind(k.user.as_deref())
                            .bind(k.max)
                            .bind(k.per);
                    }
                    rows.extend(query.fetch_all(&mut **tx).await?);
                }
            }
        }
        let mut buckets = HashMap::with_capacity(keys.len());
        for (id, team, scope, user, max, per, full_at, frac) in rows {
            let scope = match scope.as_str() {
                "team" => Scope::Team,
                "user" => Scope::User,
                other => {
                    return Err(StoreError::Corrupt {
                        what: format!("launch bucket `{id}`"),
                        detail: format!("unknown scope `{other}`"),
                    })
                }
            };
            let key = BucketKey {
                team,
                scope,
                user,
                max,
                per,
            };
            let bucket = Bucket {
                id: Some(id),
                full_at: Some(i128::from(full_at) * i128::from(max) + i128::from(frac)),
                changed: false,
            };
            buckets.insert(key, bucket);
        }
        Ok(Buckets { buckets })
    }

    /// Writes the buckets that took tokens back.
    pub(crate) async fn save_buckets(&mut self, buckets: &Buckets) -> Result<(), StoreError> {
        // (id, key, full_at_us, full_at_frac)
        let mut rows: Vec<(Option<i64>, &BucketKey, i64, i64)> = Vec::new();
        for (key, b) in buckets.buckets.iter().filter(|(_, b)| b.changed) {
            let Some(full_at) = b.full_at else { continue };
            let max = i128::from(key.max);
            let at = i64::try_from(full_at.div_euclid(max)).map_err(|_| StoreError::Overflow {
                what: format!("a launch bucket of team `{}`", key.team),
            })?;
            let frac = i64::try_from(full_at.rem_euclid(max)).unwrap_or(0);
            rows.push((b.id, key, at, frac));
        }
        let (updated, inserted): (Vec<_>, Vec<_>) = rows.into_iter().partition(|r| r.0.is_some());
        match self {
            Tx::Postgres { tx } => {
                if !updated.is_empty() {
                    sqlx::query(
                        "UPDATE launch_buckets b SET full_at_us = k.at, full_at_frac = k.frac \
                         FROM UNNEST($1::BIGINT[], $2::BIGINT[], $3::BIGINT[]) AS k(id, at, frac) \
                         WHERE b.id = k.id",
                    )
                    .bind(updated.iter().map(|r| r.0).collect::<Vec<_>>())
                    .bind(updated.iter().map(|r| r.2).collect::<Vec<_>>())
                    .bind(updated.iter().map(|r| r.3).collect::<Vec<_>>())
                    .execute(&mut **tx)
                    .await?;
                }
                if !inserted.is_empty() {
                    sqlx::query(
                        "INSERT INTO launch_buckets (team, scope, user_name, max_launches, \
                           per_us, full_at_us, full_at_frac) \
                         SELECT * FROM UNNEST($1::TEXT[], $2::TEXT[], $3::TEXT[], \
                           $4::BIGINT[], $5::BIGINT[], $6::BIGINT[], $7::BIGINT[])",
                    )
                    .bind(
                        inserted
                            .iter()
                            .map(|r| r.1.team.as_str())
                            .collect::<Vec<_>>(),
                    )
                    .bind(
                        inserted
                            .iter()
                            .map(|r| r.1.scope_text())
                            .collect::<Vec<_>>(),
                    )
                    .bind(
                        inserted
                            .iter()
                            .map(|r| r.1.user.as_deref())
                            .collect::<Vec<_>>(),
                    )
                    .bind(inserted.iter().map(|r| r.1.max).collect::<Vec<_>>())
                    .bind(inserted.iter().map(|r| r.1.per).collect::<Vec<_>>())
                    .bind(inserted.iter().map(|r| r.2).collect::<Vec<_>>())
                    .bind(inserted.iter().map(|r| r.3).collect::<Vec<_>>())
                    .execute(&mut **tx)
                    .await?;
                }
            }
            Tx::Sqlite { tx, .. } => {
                for range in sqlite_chunks(updated.len()) {
                    let chunk = updated.get(range).unwrap_or_default();
                    let sql = format!(
                        "UPDATE launch_buckets SET full_at_us = k.column2, full_at_frac = k.column3 \
                         FROM (VALUES {}) AS k WHERE launch_buckets.id = k.column1",
                        sqlite_values(chunk.len(), 3)
                    );
                    let mut params: Vec<Param> = Vec::with_capacity(chunk.len() * 3);
                    for (id, _, at, frac) in chunk {
                        params.extend([(*id).into(), (*at).into(), (*frac).into()]);
                    }
                    tx.run_or_defer(&sql, params).await?;
                }
                for range in sqlite_chunks(inserted.len()) {
                    let chunk = inserted.get(range).unwrap_or_default();
                    let sql = format!(
                        "INSERT INTO launch_buckets (team, scope, user_name, max_launches, \
                           per_us, full_at_us, full_at_frac) VALUES {}",
                        sqlite_values(chunk.len(), 7)
                    );
                    let mut params: Vec<Param> = Vec::with_capacity(chunk.len() * 7);
                    for (_, key, at, frac) in chunk {
                        params.extend([
                            key.team.as_str().into(),
                            key.scope_text().into(),
                            key.user.as_deref().into(),
                            key.max.into(),
                            key.per.into(),
                            (*at).into(),
                            (*frac).into(),
                        ]);
                    }
                    tx.run_or_defer(&sql, params).await?;
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use warden_core::{Door, TeamName, Usd};

    use super::*;
    use crate::AllocationName;

    fn req(user: Option<&str>) -> AllocationRequest {
        AllocationRequest {
            door: Door::Skypilot,
            team: TeamName::parse("ml").unwrap(),
            user: user.map(str::to_owned),
            name: AllocationName::parse("c").unwrap(),
            gpu_model: None,
            gpus: 1,
            hourly: Usd::ZERO,
            context: None,
        }
    }

    fn t(us: i64) -> UnixMicros {
        UnixMicros::from_micros(us)
    }

    /// Takes a token if there is one; else returns when there will be.
    fn launch(b: &mut Buckets, limit: &Limit, now: i64) -> Result<(), Option<UnixMicros>> {
        let r = req(Some("alice"));
        match b.denies(&r, limit, t(now)) {
            Some(retry) => Err(retry),
            None => {
                b.take(&r, std::slice::from_ref(limit), t(now));
                Ok(())
            }
        }
    }

    #[test]
    fn a_bucket_bursts_to_max_then_refills_continuously() {
        // 3 per 30 µs: a token every 10 µs.
        let limit = Limit::Launches {
            scope: Scope::User,
            max: 3,
            per: Duration::from_micros(30),
        };
        let mut b = Buckets::default();
        for _ in 0..3 {
            assert_eq!(launch(&mut b, &limit, 100), Ok(()));
        }
        assert_eq!(launch(&mut b, &limit, 100), Err(Some(t(110))));
        assert_eq!(launch(&mut b, &limit, 109), Err(Some(t(110))));
        assert_eq!(launch(&mut b, &limit, 110), Ok(()));
        assert_eq!(launch(&mut b, &limit, 110), Err(Some(t(120))));
        // Long after: full again, but never fuller than max.
        for _ in 0..3 {
            assert_eq!(launch(&mut b, &limit, 1_000), Ok(()));
        }
        assert_eq!(launch(&mut b, &limit, 1_000), Err(Some(t(1_010))));
        // A clock behind sees fewer tokens, not more.
        assert_eq!(launch(&mut b, &limit, 995), Err(Some(t(1_010))));
    }

    #[test]
    fn a_refill_that_is_not_whole_microseconds_rounds_the_retry_up() {
        // 3 per 10 µs: a token every 3⅓ µs.
        let limit = Limit::Launches {
            scope: Scope::Team,
            max: 3,
            per: Duration::from_micros(10),
        };
        let mut b = Buckets::default();
        for _ in 0..3 {
            assert_eq!(launch(&mut b, &limit, 0), Ok(()));
        }
        assert_eq!(launch(&mut b, &limit, 0), Err(Some(t(4))));
        assert_eq!(launch(&mut b, &limit, 4), Ok(()));
        // Next at 6⅔: 7.
        assert_eq!(launch(&mut b, &limit, 6), Err(Some(t(7))));
        assert_eq!(launch(&mut b, &limit, 7), Ok(()));
        assert_eq!(launch(&mut b, &limit, 7), Err(Some(t(10))));
    }

    #[test]
    fn zero_launches_are_never_allowed() {
        let limit = Limit::Launches {
            scope: Scope::User,
            max: 0,
            per: Duration::from_secs(60),
        };
        assert_eq!(launch(&mut Buckets::default(), &limit, 0), Err(None));
    }
}
