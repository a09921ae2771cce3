//! Time-limited exceptions: stored, granted, revoked and expired, each
//! change with its audit record in the same transaction (see
//! `warden_core::exception` for what an exception does in a decision).
//!
//! An exception is active at instant `t` when it was granted at or before
//! `t`, ends after `t`, and was not revoked at or before `t`: the same
//! question for a live request (`t` = now) and for `warden replay` (`t` =
//! the record's instant), so a replay sees the exceptions the live
//! decision saw. Expiry needs no action to take effect; [`Store::expire_exceptions`]
//! records it (`exception.expired`) once, for the audit trail.

use serde::Serialize;
use serde_json::json;
use warden_core::exception::Exception;
use warden_core::TeamName;

use crate::audit::NewRecord;
use crate::backend::{on_pool, on_tx};
use crate::error::StoreError;
use crate::time::UnixMicros;
use crate::Store;

/// What to grant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewException {
    /// The team.
    pub team: TeamName,
    /// One user of it, or `None` for the whole team.
    pub user: Option<String>,
    /// The rule (or `team.*` limit) it lifts; checked against the policy
    /// by the caller.
    pub rule: String,
    /// Why (shown in every decision it lifts).
    pub reason: String,
    /// Who granted it (a key id, a user, `cli`).
    pub granted_by: String,
    /// When it ends.
    pub until: UnixMicros,
}

/// A stored exception.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StoredException {
    /// Its id.
    pub id: i64,
    /// The team.
    pub team: TeamName,
    /// The one user, if any.
    pub user: Option<String>,
    /// The rule it lifts.
    pub rule: String,
    /// Why.
    pub reason: String,
    /// Who granted it.
    pub granted_by: String,
    /// When.
    #[serde(rename = "granted_us")]
    pub granted: UnixMicros,
    /// When it ends.
    #[serde(rename = "until_us")]
    pub until: UnixMicros,
    /// When it was revoked, if it was.
    #[serde(rename = "revoked_us")]
    pub revoked: Option<UnixMicros>,
    /// When its expiry was recorded, if it was.
    #[serde(rename = "expired_us")]
    pub expired: Option<UnixMicros>,
}

impl StoredException {
    /// As the core takes it.
    pub fn to_core(&self) -> Exception {
        Exception {
            id: self.id,
            team: self.team.clone(),
            user: self.user.clone(),
            rule: self.rule.clone(),
            until: self.until.to_string(),
            reason: self.reason.clone(),
        }
    }

    /// Whether it applies at `at`.
    pub fn active_at(&self, at: UnixMicros) -> bool {
        self.granted <= at && at < self.until && self.revoked.is_none_or(|r| r > at)
    }
}

/// Why an exception could not be changed.
#[derive(Debug, thiserror::Error)]
pub enum ExceptionError {
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// No exception has this id.
    #[error("no exception has id {0} (`warden exceptions list` shows them)")]
    NotFound(i64),
    /// It was revoked already.
    #[error("exception {id} was revoked at {at}")]
    Revoked {
        /// Its id.
        id: i64,
        /// When.
        at: UnixMicros,
    },
    /// It has run out.
    #[error("exception {id} ended at {at}")]
    Ended {
        /// Its id.
        id: i64,
        /// When.
        at: UnixMicros,
    },
}

const COLUMNS: &str =
    "id, team, user_name, rule, reason, granted_by, granted_us, until_us, revoked_us, expired_us";

type Row = (
    i64,
    String,
    Option<String>,
    String,
    String,
    String,
    i64,
    i64,
    Option<i64>,
    Option<i64>,
);

fn from_row(row: Row) -> Result<StoredException, StoreError> {
    let (id, team, user, rule, reason, granted_by, granted, until, revoked, expired) = row;
    Ok(StoredException {
        id,
        team: TeamName::parse(&team).map_err(|e| StoreError::Corrupt {
            what: format!("exception {id}"),
            detail: e.to_string(),
        })?,
        user,
        rule,
        reason,
        granted_by,
        granted: UnixMicros::from_micros(granted),
        until: UnixMicros::from_micros(until),
        revoked: revoked.map(UnixMicros::from_micros),
        expired: expired.map(UnixMicros::from_micros),
    })
}

fn payload(x: &StoredException) -> String {
    json!({
        "exception": x.id,
        "team": x.team,
        "user": x.user,
        "rule": x.rule,
        "reason": x.reason,
        "granted_by": x.granted_by,
        "granted_us": x.granted,
        "until_us": x.until,
        "revoked_us": x.revoked,
        "expired_us": x.expired,
    })
    .to_string()
}

impl Store {
    /// Grants an exception from `now` until `new.until`, with an
    /// `exception.granted` audit record in the same transaction.
    pub async fn grant_exception(
        &self,
        new: NewException,
        now: UnixMicros,
    ) -> Result<StoredException, StoreError> {
        let mut tx = self.begin_write().await?;
        let id: i64 = on_tx!(&mut tx, |conn| {
            sqlx::query_scalar(
                "INSERT INTO exceptions (team, user_name, rule, reason, granted_by, granted_us, until_us) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING id",
            )
            .bind(new.team.as_str())
            .bind(new.user.as_deref())
            .bind(&new.rule)
            .bind(&new.reason)
            .bind(&new.granted_by)
            .bind(now.micros())
            .bind(new.until.micros())
            .fetch_one(&mut *conn)
            .await?
        });
        let stored = StoredException {
            id,
            team: new.team,
            user: new.user,
            rule: new.rule,
            reason: new.reason,
            granted_by: new.granted_by,
            granted: now,
            until: new.until,
            revoked: None,
            expired: None,
        };
        tx.append_records(vec![NewRecord {
            kind: "exception.granted".to_owned(),
            payload: payload(&stored),
            at: now,
        }])
        .await?;
        tx.commit().await?;
        Ok(stored)
    }

    /// Ends an exception now, with an `exception.revoked` audit record.
    pub async fn revoke_exception(
        &self,
        id: i64,
        now: UnixMicros,
    ) -> Result<StoredException, ExceptionError> {
        self.revoke_exception_by(id, None, now).await
    }

    /// [`Store::revoke_exception`], with who asked in the audit record.
    pub async fn revoke_exception_by(
        &self,
        id: i64,
        actor: Option<&str>,
        now: UnixMicros,
    ) -> Result<StoredException, ExceptionError> {
        let mut tx = self.begin_write().await?;
        let sql = format!("SELECT {COLUMNS} FROM exceptions WHERE id = $1");
        let row: Option<Row> = on_tx!(&mut tx, |conn| {
            sqlx::query_as(&sql)
                .bind(id)
                .fetch_optional(&mut *conn)
                .await
                .map_err(StoreError::from)?
        });
        let mut x = from_row(row.ok_or(ExceptionError::NotFound(id))?)?;
        if let Some(at) = x.revoked {
            return Err(ExceptionError::Revoked { id, at });
        }
        if x.until <= now {
            return Err(ExceptionError::Ended { id, at: x.until });
        }
        on_tx!(&mut tx, |conn| {
            sqlx::query("UPDATE exceptions SET revoked_us = $2 WHERE id = $1")
                .bind(id)
                .bind(now.micros())
                .execute(&mut *conn)
                .await
                .map_err(StoreError::from)?;
        });
        x.revoked = Some(now);
        let mut record: serde_json::Value =
            serde_json::from_str(&payload(&x)).map_err(|e| StoreError::Corrupt {
                what: format!("exception {id}"),
                detail: e.to_string(),
            })?;
        if let (Some(actor), Some(map)) = (actor, record.as_object_mut()) {
            map.insert("actor".to_owned(), actor.into());
        }
        tx.append_records(vec![NewRecord {
            kind: "exception.revoked".to_owned(),
            payload: record.to_string(),
            at: now,
        }])
        .await?;
        tx.commit().await?;
        Ok(x)
    }

    /// Every exception (of one team, or of all), newest first.
    pub async fn list_exceptions(
        &self,
        team: Option<&TeamName>,
    ) -> Result<Vec<StoredException>, StoreError> {
        let sql = format!(
            "SELECT {COLUMNS} FROM exceptions WHERE ($1 IS NULL OR team = $1) ORDER BY id DESC"
        );
        let rows: Vec<Row> = on_pool!(self, |pool| {
            sqlx::query_as(&sql)
                .bind(team.map(TeamName::as_str))
                .fetch_all(pool)
                .await?
        });
        rows.into_iter().map(from_row).collect()
    }

    /// The exceptions of `team` active at `at` (see the module
    /// documentation): what a decision at `at` may use.
    pub async fn active_exceptions(
        &self,
        team: &TeamName,
        at: UnixMicros,
    ) -> Result<Vec<StoredException>, StoreError> {
        let sql = format!(
            "SELECT {COLUMNS} FROM exceptions WHERE team = $1 AND until_us > $2 AND granted_us <= $2 \
             AND (revoked_us IS NULL OR revoked_us > $2) ORDER BY id"
        );
        let rows: Vec<Row> = on_pool!(self, |pool| {
            sqlx::query_as(&sql)
                .bind(team.as_str())
                .bind(at.micros())
                .fetch_all(pool)
                .await?
        });
        rows.into_iter().map(from_row).collect()
    }

    /// Records, once each, the exceptions that ran out by `now` (not
    /// revoked): sets `expired_us` and appends `exception.expired`, in one
    /// transaction. Returns them.
    pub async fn expire_exceptions(
        &self,
        now: UnixMicros,
    ) -> Result<Vec<StoredException>, StoreError> {
        let mut tx = self.begin_write().await?;
        let sql = format!(
            "SELECT {COLUMNS} FROM exceptions WHERE until_us <= $1 AND expired_us IS NULL \
             AND revoked_us IS NULL ORDER BY id"
        );
        let rows: Vec<Row> = on_tx!(&mut tx, |conn| {
            sqlx::query_as(&sql)
                .bind(now.micros())
                .fetch_all(&mut *conn)
                .await?
        });
        let mut out = Vec::new();
        for row in rows {
            let mut x = from_row(row)?;
            on_tx!(&mut tx, |conn| {
                sqlx::query("UPDATE exceptions SET expired_us = $2 WHERE id = $1")
                    .bind(x.id)
                    .bind(now.micros())
                    .execute(&mut *conn)
                    .await?;
            });
            x.expired = Some(now);
            out.push(x);
        }
        if !out.is_empty() {
            tx.append_records(
                out.iter()
                    .map(|x| NewRecord {
                        kind: "exception.expired".to_owned(),
                        payload: payload(x),
                        at: now,
                    })
                    .collect(),
            )
            .await?;
        }
        tx.commit().await?;
        Ok(out)
    }
}
