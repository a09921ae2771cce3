//! Settling allocations a door reserved before it knew what it launched.
//!
//! A door that proxies a create (the Vast door) must reserve quota and
//! budget *before* the upstream call, so two racing creates cannot both
//! fit; it learns the resource's name (the instance id) only from the
//! answer, and sometimes never gets the answer (a time-out, a dropped
//! connection). So it reserves under a placeholder name, then:
//!
//! - [`Store::settle`] renames the placeholder to the real name, once the
//!   resource is known to exist (a rename changes nothing a quota or a
//!   budget counts: the price reserved stays the allocation's price);
//! - [`Store::void`] ends a placeholder whose resource never came to exist
//!   *at its start*, so it costs nothing: a failed create leaves no spend.
//!
//! Both write their audit record in the same transaction, under the team's
//! lock, like every other allocation change, and a void keeps the usage and
//! budget summaries in step exactly as an end does (an end at the
//! allocation's start). A settled allocation keeps the placeholder name
//! it was settled from and when ([`Store::settled_since`]), so a retried
//! create finds what its earlier attempt became even after a reconciler
//! settled it. [`Store::allocations_named`]
//! answers who an allocation name belongs to, live or ended (which team
//! owns a stopped instance).

use serde_json::json;
use warden_core::{Door, TeamName};

use crate::allocations::{
    allocation, allocation_columns, Allocation, AllocationId, AllocationName, AllocationRow,
    EndTarget,
};
use crate::audit::NewRecord;
use crate::backend::{on_pool, on_tx, Tx};
use crate::error::StoreError;
use crate::time::UnixMicros;
use crate::Store;

/// What [`Store::settle`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Settled {
    /// The placeholder now carries the real name.
    Renamed(Allocation),
    /// An allocation with the real name was live already (settled by
    /// someone else first): the placeholder, if still live, was voided.
    AlreadySettled(Allocation),
    /// Neither the placeholder nor the real name is live (the placeholder
    /// was voided or ended meanwhile); nothing changed.
    Missing,
}

const COLUMNS: &str = allocation_columns!();

type Row = AllocationRow;

/// An allocation row followed by `settled_from`.
type SettledRow = (
    i64,
    String,
    String,
    Option<String>,
    String,
    Option<String>,
    i64,
    i64,
    i64,
    Option<i64>,
    String,
    String,
);

fn row_allocation(row: Row) -> Result<Allocation, StoreError> {
    allocation(row)
}

fn record(kind: &str, payload: serde_json::Value, at: UnixMicros) -> NewRecord {
    NewRecord {
        kind: kind.to_owned(),
        payload: payload.to_string(),
        at,
    }
}

impl Tx {
    async fn live_named(
        &mut self,
        door: Door,
        team: &TeamName,
        name: &AllocationName,
    ) -> Result<Option<Allocation>, StoreError> {
        let sql = format!(
            "SELECT {COLUMNS} FROM allocations \
             WHERE door = $1 AND team = $2 AND name = $3 AND state = 'live'"
        );
        let row: Option<Row> = on_tx!(self, |conn| {
            sqlx::query_as(&sql)
                .bind(door.as_str())
                .bind(team.as_str())
                .bind(name.as_str())
                .fetch_optional(&mut *conn)
                .await?
        });
        row.map(row_allocation).transpose()
    }

    /// Ends live allocation `id` of `team` (locked by the caller) at its
    /// own start, so it costs nothing, keeping the usage and budget
    /// summaries in step as [`Store::end`] does.
    async fn void_in_team(
        &mut self,
        id: AllocationId,
        team: &TeamName,
        now: UnixMicros,
    ) -> Result<Option<Allocation>, StoreError> {
        Ok(self
            .end_locked(&EndTarget::Id(id), &[team], now, true)
            .await?
            .into_iter()
            .next())
    }
}

impl Store {
    /// Renames the live allocation `from` of `door` and `team` to `to`,
    /// writing an `allocation.settled` audit record in the same
    /// transaction. Safe to call twice and from two places at once (the
    /// door and a reconciler): see [`Settled`].
    pub async fn settle(
        &self,
        door: Door,
        team: &TeamName,
        from: &AllocationName,
        to: &AllocationName,
        now: UnixMicros,
    ) -> Result<Settled, StoreError> {
        let mut tx = self.begin_write().await?;
        tx.lock_teams(&[team]).await?;
        let pending = tx.live_named(door, team, from).await?;
        if let Some(existing) = tx.live_named(door, team, to).await? {
            let mut records = Vec::new();
            if let Some(p) = pending {
                if let Some(voided) = tx.void_in_team(p.id, team, now).await? {
                    records.push(record(
                        "allocation.voided",
                        json!({
                            "allocation_id": voided.id,
                            "door": door,
                            "team": team,
                            "name": voided.name,
                            "reason": format!("`{to}` was settled by another allocation"),
                        }),
                        now,
                    ));
                }
            }
            tx.append_records(records).await?;
            tx.commit().await?;
            return Ok(Settled::AlreadySettled(existing));
        }
        let Some(pending) = pending else {
            return Ok(Settled::Missing);
        };
        let sql = format!(
            "UPDATE allocations SET name = $1, settled_from = $2, settled_us = $3 \
             WHERE id = $4 AND state = 'live' RETURNING {COLUMNS}"
        );
        let row: Row = on_tx!(&mut tx, |conn| {
            sqlx::query_as(&sql)
                .bind(to.as_str())
                .bind(from.as_str())
                .bind(now.micros())
                .bind(pending.id.get())
                .fetch_one(&mut *conn)
                .await?
        });
        let renamed = row_allocation(row)?;
        tx.append_records(vec![record(
            "allocation.settled",
            json!({
                "allocation_id": renamed.id,
                "door": door,
                "team": team,
                "from": from,
                "name": to,
                "hourly_micros": renamed.hourly.micros(),
                "started_us": renamed.started,
            }),
            now,
        )])
        .await?;
        tx.commit().await?;
        Ok(Settled::Renamed(renamed))
    }

    /// Ends live allocation `id` as if it never ran: its end is set to its
    /// start, so it adds nothing to spend. For a placeholder whose resource
    /// was never created. Writes an `allocation.voided` audit record with
    /// `reason` in the same transaction. `None` if it was not live.
    pub async fn void(
        &self,
        id: AllocationId,
        reason: &str,
        now: UnixMicros,
    ) -> Result<Option<Allocation>, StoreError> {
        let mut tx = self.begin_write().await?;
        let team: Option<(String,)> = on_tx!(&mut tx, |conn| {
            sqlx::query_as("SELECT team FROM allocations WHERE id = $1 AND state = 'live'")
                .bind(id.get())
                .fetch_optional(&mut *conn)
                .await?
        });
        let Some((team,)) = team else {
            return Ok(None);
        };
        let team = TeamName::parse(&team).map_err(|e| StoreError::Corrupt {
            what: format!("allocation `{id}`"),
            detail: e.to_string(),
        })?;
        tx.lock_teams(&[&team]).await?;
        let voided = tx.void_in_team(id, &team, now).await?;
        if let Some(a) = &voided {
            tx.append_records(vec![record(
                "allocation.voided",
                json!({
                    "allocation_id": a.id,
                    "door": a.door,
                    "team": a.team,
                    "user": a.user,
                    "name": a.name,
                    "started_us": a.started,
                    "reason": reason,
                }),
                now,
            )])
            .await?;
        }
        tx.commit().await?;
        Ok(voided)
    }

    /// The allocations of `door` and `team`, live or ended, that were
    /// settled at or after `since` from a placeholder whose name starts
    /// with `from_prefix`, most recently settled first, each with the
    /// placeholder name it was settled from: what an earlier attempt of a
    /// retried create became, although a reconciler settled it.
    pub async fn settled_since(
        &self,
        door: Door,
        team: &TeamName,
        from_prefix: &str,
        since: UnixMicros,
    ) -> Result<Vec<(Allocation, AllocationName)>, StoreError> {
        let prefix_chars = i32::try_from(from_prefix.chars().count()).unwrap_or(i32::MAX);
        let sql = format!(
            "SELECT {COLUMNS}, settled_from FROM allocations \
             WHERE door = $1 AND team = $2 AND settled_us >= $3 \
               AND substr(settled_from, 1, $4) = $5 \
             ORDER BY settled_us DESC, id DESC"
        );
        let rows: Vec<SettledRow> = on_pool!(self, |pool| {
            sqlx::query_as(&sql)
                .bind(door.as_str())
                .bind(team.as_str())
                .bind(since.micros())
                .bind(prefix_chars)
                .bind(from_prefix)
                .fetch_all(pool)
                .await?
        });
        rows.into_iter()
            .map(|row| {
                let (id, door, team, user, name, model, gpus, hourly, started, ended, state, from) =
                    row;
                let a = row_allocation((
                    id, door, team, user, name, model, gpus, hourly, started, ended, state,
                ))?;
                let from = AllocationName::parse(&from).map_err(|e| StoreError::Corrupt {
                    what: format!("allocation `{id}`"),
                    detail: format!("settled_from: {e}"),
                })?;
                Ok((a, from))
            })
            .collect()
    }

    /// Every allocation, live or ended, of `door` named one of `names`,
    /// oldest first: who a name belongs to, also after it ended.
    pub async fn allocations_named(
        &self,
        door: Door,
        names: &[AllocationName],
    ) -> Result<Vec<Allocation>, StoreError> {
        let mut out = Vec::new();
        // Bounded statements: SQLite allows 32766 parameters, keep far below.
        for chunk in names.chunks(500) {
            let params: Vec<String> = (0..chunk.len()).map(|i| format!("${}", i + 2)).collect();
            let sql = format!(
                "SELECT {COLUMNS} FROM allocations WHERE door = $1 AND name IN ({}) ORDER BY id",
                params.join(", ")
            );
            let rows: Vec<Row> = on_pool!(self, |pool| {
                let mut q = sqlx::query_as(&sql).bind(door.as_str());
                for name in chunk {
                    q = q.bind(name.as_str());
                }
                q.fetch_all(pool).await?
            });
            for row in rows {
                out.push(row_allocation(row)?);
            }
        }
        out.sort_by_key(|a| a.id);
        Ok(out)
    }
}
