//! The SQL of allocations: the row columns and their parsing, the lookup
//! of live allocations by key, the batch insert (one statement per batch
//! on PostgreSQL, chunked on SQLite), the updates that end them, and
//! [`Store::list_live`].

use std::collections::HashMap;

use warden_core::{Door, GpuModel, TeamName, Usd};

use super::limits::reserved_micros;
use super::reserve::{batch_keys, reservations_of, LiveKey, Reservation};
use super::{Allocation, AllocationId, AllocationName, AllocationState, EndTarget};
use sqlx::FromRow;

use crate::backend::{
    on_pool, on_tx, sqlite_padded_chunks, sqlite_rows_for_teams, sqlite_values, Param, Stmt, Tx,
};
use crate::budget::{BUDGET_SELECT, BUDGET_TEAM};
use crate::error::StoreError;
use crate::time::UnixMicros;
use crate::usage::{USAGE_SELECT, USAGE_TEAM};
use crate::writer::Op;
use crate::Store;

/// The columns of an allocation row, in [`AllocationRow`] order.
macro_rules! allocation_columns {
    () => {
        "id, door, team, user_name, name, gpu_model, gpus, hourly_micros, \
         started_us, ended_us, state"
    };
}

pub(crate) use allocation_columns;

/// An allocation row as read with [`allocation_columns`].
pub(crate) type AllocationRow = (
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
);

/// Parses a row read with [`allocation_columns`].
pub(crate) fn allocation(row: AllocationRow) -> Result<Allocation, StoreError> {
    let (id, door, team, user, name, gpu_model, gpus, hourly, started, ended, state) = row;
    let corrupt = |detail: String| StoreError::Corrupt {
        what: format!("allocation `{id}`"),
        detail,
    };
    let door = match door.as_str() {
        "skypilot" => Door::Skypilot,
        "vast" => Door::Vast,
        "kubernetes" => Door::Kubernetes,
        other => return Err(corrupt(format!("unknown door `{other}`"))),
    };
    let state = match state.as_str() {
        "live" => AllocationState::Live,
        "ended" => AllocationState::Ended,
        other => return Err(corrupt(format!("unknown state `{other}`"))),
    };
    Ok(Allocation {
        id: AllocationId(id),
        door,
        team: TeamName::parse(&team).map_err(|e| corrupt(e.to_string()))?,
        user,
        name: AllocationName::parse(&name).map_err(|e| corrupt(e.to_string()))?,
        gpu_model: gpu_model
            .map(|m| GpuModel::parse(&m))
            .transpose()
            .map_err(|e| corrupt(e.to_string()))?,
        gpus: u32::try_from(gpus).map_err(|_| corrupt(format!("gpus `{gpus}` out of range")))?,
        hourly: Usd::from_micros(hourly),
        started: UnixMicros::from_micros(started),
        ended: ended.map(UnixMicros::from_micros),
        state,
    })
}

/// On SQLite, the reads `Tx::decide` starts with for `ops`, in its order,
/// to run with `BEGIN` ([`Backend::begin_write_reading`]): the live
/// allocations of the batch's keys, the next allocation id, the usage
/// summaries and the budget states of its teams. A batch's transaction then
/// costs two round trips to SQLite's worker thread when nothing else needs
/// reading: this one and the commit's.
///
/// [`Backend::begin_write_reading`]: crate::backend::Backend::begin_write_reading
pub(crate) fn batch_reads(ops: &[Op<'_>]) -> Vec<Stmt> {
    let reservations = reservations_of(ops);
    if reservations.is_empty() {
        return Vec::new();
    }
    let (keys, teams) = batch_keys(&reservations);
    let mut reads = sqlite_live_ids(&keys);
    reads.push(sqlite_next_allocation_id());
    reads.extend(sqlite_rows_for_teams(USAGE_SELECT, USAGE_TEAM, &teams));
    reads.extend(sqlite_rows_for_teams(BUDGET_SELECT, BUDGET_TEAM, &teams));
    reads
}

/// On SQLite, the statements of [`Tx::live_ids`] for `keys`: a join, not
/// `(door, team, name) IN (VALUES ...)`, which SQLite plans as a scan of
/// every live row; the NULL rows of the padding join nothing.
pub(crate) fn sqlite_live_ids(keys: &[LiveKey<'_>]) -> Vec<Stmt> {
    sqlite_padded_chunks(keys.len())
        .map(|(range, padded)| {
            let chunk = keys.get(range).unwrap_or_default();
            let mut params: Vec<Param> = Vec::with_capacity(padded * 3);
            for (door, team, name) in chunk {
                params.extend([(*door).into(), (*team).into(), (*name).into()]);
            }
            params.resize(padded * 3, Param::Null);
            Stmt {
                sql: format!(
                    "SELECT a.id, a.door, a.team, a.name FROM (VALUES {}) AS k \
                     CROSS JOIN allocations a \
                       ON a.door = k.column1 AND a.team = k.column2 \
                      AND a.name = k.column3 \
                     WHERE a.state = 'live'",
                    sqlite_values(padded, 3)
                ),
                params,
            }
        })
        .collect()
}

/// On SQLite, the statement of [`Tx::next_allocation_id`]: one past both
/// the highest id ever given (`AUTOINCREMENT` never reuses one) and the
/// highest there is.
pub(crate) fn sqlite_next_allocation_id() -> Stmt {
    Stmt {
        sql: "SELECT MAX( \
                COALESCE((SELECT seq FROM sqlite_sequence WHERE name = 'allocations'), 0), \
                COALESCE((SELECT MAX(id) FROM allocations), 0)) + 1"
            .to_owned(),
        params: Vec::new(),
    }
}

/// Columns of the key-returning statements: id, door, team, name.
pub(super) type KeyRow = (i64, String, String, String);

impl Tx {
    /// The live allocations with these keys: `(id, door, team, name)`.
    pub(super) async fn live_ids(
        &mut self,
        keys: &[LiveKey<'_>],
    ) -> Result<Vec<KeyRow>, StoreError> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        match self {
            Tx::Postgres { tx } => {
                let doors: Vec<&str> = keys.iter().map(|k| k.0).collect();
                let teams: Vec<&str> = keys.iter().map(|k| k.1).collect();
                let names: Vec<&str> = keys.iter().map(|k| k.2).collect();
                // One index probe per key, whatever the planner thinks of
                // the table's size: a LATERAL subquery with LIMIT cannot
                // become a hash join over a scan of every allocation (which
                // stale statistics on a fast-growing table can pick).
                Ok(sqlx::query_as(
                    "SELECT a.id, a.door, a.team, a.name \
                     FROM UNNEST($1::TEXT[], $2::TEXT[], $3::TEXT[]) AS k(door, team, name) \
                     CROSS JOIN LATERAL ( \
                       SELECT id, door, team, name FROM allocations \
                       WHERE door = k.door AND team = k.team AND name = k.name \
                         AND state = 'live' \
                       LIMIT 1) a",
                )
                .bind(doors)
                .bind(teams)
                .bind(names)
                .fetch_all(&mut **tx)
                .await?)
            }
            Tx::Sqlite { tx, .. } => {
                let mut rows = Vec::new();
                for stmt in sqlite_live_ids(keys) {
                    for row in tx.fetch(stmt).await? {
                        rows.push(KeyRow::from_row(&row)?);
                    }
                }
                Ok(rows)
            }
        }
    }

    /// The id the next allocation inserted gets, on SQLite (whose
    /// transaction holds the write lock, so it stays that until this
    /// transaction inserts): [`Tx::insert_allocations`] inserts with it,
    /// which lets the insert wait for the commit. `None` on PostgreSQL,
    /// which assigns ids as it inserts.
    pub(super) async fn next_allocation_id(&mut self) -> Result<Option<i64>, StoreError> {
        match self {
            Tx::Postgres { .. } => Ok(None),
            Tx::Sqlite { tx, .. } => {
                let rows = tx.fetch(sqlite_next_allocation_id()).await?;
                let row = rows.first().ok_or(sqlx::Error::RowNotFound)?;
                Ok(Some(<(i64,)>::from_row(row)?.0))
            }
        }
    }

    /// Inserts `fresh` as live allocations, each started at its `now`, and
    /// returns their ids in the same order. PostgreSQL assigns the ids (one
    /// `UNNEST` statement, `RETURNING` them); SQLite gives them from
    /// `next_id` on ([`Tx::next_allocation_id`]), so the statement returns
    /// nothing and goes with the commit when the transaction defers its
    /// writes ([`Tx::defer_writes`]).
    pub(super) async fn insert_allocations(
        &mut self,
        fresh: &[&Reservation<'_>],
        next_id: Option<i64>,
    ) -> Result<Vec<AllocationId>, StoreError> {
        if fresh.is_empty() {
            return Ok(Vec::new());
        }
        let returned: Vec<KeyRow> = match self {
            Tx::Postgres { tx } => {
                let reqs = || fresh.iter().map(|r| r.request);
                sqlx::query_as(
                    "INSERT INTO allocations \
                       (door, team, user_name, name, gpu_model, gpus, hourly_micros, \
                        started_us, ended_us, state, reserved_micros, held_until_us) \
                     SELECT door, team, user_name, name, gpu_model, gpus, hourly_micros, \
                        started_us, NULL, 'live', reserved_micros, held_until_us \
                     FROM UNNEST($1::TEXT[], $2::TEXT[], $3::TEXT[], $4::TEXT[], $5::TEXT[], \
                                 $6::BIGINT[], $7::BIGINT[], $8::BIGINT[], $9::BIGINT[], \
                                 $10::BIGINT[]) \
                       AS x(door, team, user_name, name, gpu_model, gpus, hourly_micros, \
                            started_us, reserved_micros, held_until_us) \
                     RETURNING id, door, team, name",
                )
                .bind(reqs().map(|q| q.door.as_str()).collect::<Vec<_>>())
                .bind(reqs().map(|q| q.team.as_str()).collect::<Vec<_>>())
                .bind(reqs().map(|q| q.user.as_deref()).collect::<Vec<_>>())
                .bind(reqs().map(|q| q.name.as_str()).collect::<Vec<_>>())
                .bind(
                    reqs()
                        .map(|q| q.gpu_model.as_ref().map(GpuModel::as_str))
                        .collect::<Vec<_>>(),
                )
                .bind(reqs().map(|q| i64::from(q.gpus)).collect::<Vec<_>>())
                .bind(reqs().map(|q| q.hourly.micros()).collect::<Vec<_>>())
                .bind(fresh.iter().map(|r| r.now.micros()).collect::<Vec<_>>())
                .bind(
                    fresh
                        .iter()
                        .map(|r| reserved_micros(r.limits))
                        .collect::<Vec<_>>(),
                )
                .bind(fresh.iter().map(|r| r.held_until()).collect::<Vec<_>>())
                .fetch_all(&mut **tx)
                .await?
            }
            Tx::Sqlite { tx, .. } => {
                let first = next_id.ok_or_else(|| StoreError::Corrupt {
                    what: "allocation ids".to_owned(),
                    detail: "the next id was not read before the insert".to_owned(),
                })?;
                let mut ids = Vec::with_capacity(fresh.len());
                for (range, rows) in sqlite_padded_chunks(fresh.len()) {
                    let chunk = fresh.get(range.clone()).unwrap_or_default();
                    // The padding's NULL rows are filtered out (`id` is
                    // never NULL).
                    let sql = format!(
                        "INSERT INTO allocations \
                           (id, door, team, user_name, name, gpu_model, gpus, hourly_micros, \
                            started_us, ended_us, state, reserved_micros, held_until_us) \
                         SELECT * FROM (VALUES {}) WHERE column1 IS NOT NULL",
                        sqlite_values(rows, 13)
                    );
                    let mut params: Vec<Param> = Vec::with_capacity(rows * 13);
                    for (n, r) in range.zip(chunk) {
                        let id = i64::try_from(n)
                            .ok()
                            .and_then(|n| first.checked_add(n))
                            .ok_or_else(|| StoreError::Corrupt {
                                what: "allocation ids".to_owned(),
                                detail: format!("id {first} + {n} is out of range"),
                            })?;
                        ids.push(AllocationId(id));
                        let q = r.request;
                        params.extend([
                            Param::Int(id),
                            q.door.as_str().into(),
                            q.team.as_str().into(),
                            q.user.as_deref().into(),
                            q.name.as_str().into(),
                            q.gpu_model.as_ref().map(GpuModel::as_str).into(),
                            i64::from(q.gpus).into(),
                            q.hourly.micros().into(),
                            r.now.micros().into(),
                            Param::Null,
                            "live".into(),
                            reserved_micros(r.limits).into(),
                            r.held_until().into(),
                        ]);
                    }
                    params.resize(rows * 13, Param::Null);
                    tx.run_or_defer(&sql, params).await?;
                }
                return Ok(ids);
            }
        };
        // The order of RETURNING rows is not promised: match by key, which
        // is unique among live rows.
        let ids: HashMap<LiveKey<'_>, i64> = returned
            .iter()
            .map(|(id, door, team, name)| ((door.as_str(), team.as_str(), name.as_str()), *id))
            .collect();
        fresh
            .iter()
            .map(|r| {
                ids.get(&r.key())
                    .map(|&id| AllocationId(id))
                    .ok_or_else(|| sqlx::Error::RowNotFound.into())
            })
            .collect()
    }

    /// Teams of the live allocations `target` names, for locking.
    pub(super) async fn target_teams(
        &mut self,
        target: &EndTarget,
    ) -> Result<Vec<TeamName>, StoreError> {
        let rows: Vec<(String,)> = on_tx!(self, |conn| match target {
            EndTarget::Id(id) => {
                sqlx::query_as("SELECT team FROM allocations WHERE id = $1 AND state = 'live'")
                    .bind(id.get())
                    .fetch_all(&mut *conn)
                    .await?
            }
            EndTarget::Name { door, name } => {
                sqlx::query_as(
                    "SELECT DISTINCT team FROM allocations \
                     WHERE door = $1 AND name = $2 AND state = 'live'",
                )
                .bind(door.as_str())
                .bind(name.as_str())
                .fetch_all(&mut *conn)
                .await?
            }
        });
        rows.into_iter()
            .map(|(team,)| {
                TeamName::parse(&team).map_err(|e| StoreError::Corrupt {
                    what: "allocation team".to_owned(),
                    detail: e.to_string(),
                })
            })
            .collect()
    }

    /// Ends the live allocations of `target` within `team`; returns each
    /// with what it reserved.
    /// With `void`, each row ends at its own start instead of `now`: it
    /// never ran, so it costs nothing.
    pub(super) async fn end_in_team(
        &mut self,
        target: &EndTarget,
        team: &TeamName,
        now: UnixMicros,
        void: bool,
    ) -> Result<Vec<(Allocation, i64)>, StoreError> {
        type EndedRow = (
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
            i64,
        );
        let rows: Vec<EndedRow> = on_tx!(self, |conn| match target {
            EndTarget::Id(id) => {
                sqlx::query_as(concat!(
                    "UPDATE allocations SET state = 'ended', \
                       ended_us = CASE WHEN $4 THEN started_us ELSE $1 END \
                     WHERE id = $2 AND team = $3 AND state = 'live' RETURNING ",
                    allocation_columns!(),
                    ", reserved_micros"
                ))
                .bind(now.micros())
                .bind(id.get())
                .bind(team.as_str())
                .bind(void)
                .fetch_all(&mut *conn)
                .await?
            }
            EndTarget::Name { door, name } => {
                sqlx::query_as(concat!(
                    "UPDATE allocations SET state = 'ended', \
                       ended_us = CASE WHEN $5 THEN started_us ELSE $1 END \
                     WHERE door = $2 AND name = $3 AND team = $4 AND state = 'live' RETURNING ",
                    allocation_columns!(),
                    ", reserved_micros"
                ))
                .bind(now.micros())
                .bind(door.as_str())
                .bind(name.as_str())
                .bind(team.as_str())
                .bind(void)
                .fetch_all(&mut *conn)
                .await?
            }
        });
        rows.into_iter()
            .map(
                |(
                    id,
                    door,
                    team,
                    user,
                    name,
                    model,
                    gpus,
                    hourly,
                    started,
                    ended,
                    state,
                    reserved,
                )| {
                    let row = (
                        id, door, team, user, name, model, gpus, hourly, started, ended, state,
                    );
                    Ok((allocation(row)?, reserved))
                },
            )
            .collect()
    }
}

impl Store {
    /// Live allocations, of one team or of all, oldest first.
    pub async fn list_live(&self, team: Option<&TeamName>) -> Result<Vec<Allocation>, StoreError> {
        let rows: Vec<AllocationRow> = on_pool!(self, |pool| {
            sqlx::query_as(concat!(
                "SELECT ",
                allocation_columns!(),
                " FROM allocations WHERE state = 'live' \
                 AND ($1 IS NULL OR team = $1) ORDER BY id"
            ))
            .bind(team.map(TeamName::as_str))
            .fetch_all(pool)
            .await?
        });
        rows.into_iter().map(allocation).collect()
    }
}
