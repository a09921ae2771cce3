//! Errors of the store.

use std::sync::Arc;

use warden_core::Usd;

/// A value handed to the store was not acceptable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InputError {
    /// An allocation name was empty.
    #[error("allocation name is empty")]
    EmptyName,
    /// An allocation name was longer than allowed.
    #[error("allocation name `{value}` is longer than {max} bytes")]
    NameTooLong {
        /// The offending name.
        value: String,
        /// The limit.
        max: usize,
    },
    /// An allocation name held a control character.
    #[error("allocation name `{value}` contains a control character")]
    NameControlChar {
        /// The offending name (control characters escaped).
        value: String,
    },
    /// An allocation's estimated price per hour was negative.
    #[error("hourly price `{0}` is negative")]
    NegativeHourly(Usd),
    /// A launch limit's window was shorter than a microsecond, or too long
    /// to count in microseconds.
    #[error("launch limit window `{0:?}` is invalid; use at least 1 µs")]
    LaunchWindow(std::time::Duration),
    /// An audit record kind was not a short lowercase dotted word.
    #[error("audit kind `{0}` is invalid; use 1 to 64 lowercase letters, digits, `.`, `_` or `-`")]
    AuditKind(String),
    /// An allocation's audit record (its request's context, say) could not
    /// be written as JSON.
    #[error("cannot write the audit record as JSON: {0}")]
    Json(String),
}

/// Everything that can go wrong in the store.
///
/// Callers fail closed on any of these: a launch whose quota cannot be
/// checked is denied (see DESIGN.md, "Fail closed").
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The storage URL names a scheme this store does not speak. Only the
    /// scheme is kept, so a password in the URL never reaches a log.
    #[error("storage url scheme `{0}` is not supported; use `sqlite://PATH` or `postgres://USER@HOST/DB`")]
    UnsupportedUrl(String),
    /// The database could not be opened or reached.
    #[error("cannot connect to {backend}: {source}")]
    Connect {
        /// `sqlite` or `postgres`.
        backend: &'static str,
        /// What the driver said.
        #[source]
        source: sqlx::Error,
    },
    /// The embedded migrations could not be applied.
    #[error("cannot apply the {backend} migrations: {source}")]
    Migrate {
        /// `sqlite` or `postgres`.
        backend: &'static str,
        /// What the migrator said.
        #[source]
        source: sqlx::migrate::MigrateError,
    },
    /// Another writer held the database for longer than the busy timeout
    /// (SQLite), or a lock wait was cancelled (PostgreSQL). Safe to retry.
    #[error("the store is busy, try again: {0}")]
    Busy(#[source] sqlx::Error),
    /// The database could not be reached: no connection could be had
    /// within the store's timeout (the server is down, refuses connections
    /// or does not answer), or the connection broke. Nothing was recorded
    /// by the failed call. Not retried at once: the next call tries again.
    #[error("the store is unreachable: {0}")]
    Unreachable(String),
    /// Any other database error.
    #[error("store query failed: {0}")]
    Database(#[source] sqlx::Error),
    /// A stored row holds a value this version cannot read.
    #[error("stored {what} is unreadable: {detail}")]
    Corrupt {
        /// Which row, e.g. ``allocation `12` ``.
        what: String,
        /// What is wrong with it.
        detail: String,
    },
    /// A sum the store keeps (live usage, a budget's state) would leave the
    /// range it is stored in; nothing was recorded. Only absurd amounts get
    /// there (more than 9.2 × 10^12 dollars).
    #[error("{what} would exceed the range the store keeps it in")]
    Overflow {
        /// Which sum, e.g. ``budget state of team `ml` ``.
        what: String,
    },
    /// The caller handed an unacceptable value.
    #[error(transparent)]
    Input(#[from] InputError),
    /// The store was closed ([`crate::Store::close`]); the write was not
    /// taken, nothing was recorded.
    #[error("the store is closed")]
    Closed,
    /// The store gave no answer for a write: its writer task stopped (its
    /// runtime shut down) before answering. The write may or may not have
    /// been recorded.
    #[error("the store stopped before answering; the write may or may not be recorded")]
    Unanswered,
    /// The transaction that carried this write together with others
    /// ([`crate::Store::write`]) failed, so none of them was recorded. Every
    /// write of the batch is answered with this same error.
    #[error("the write was not recorded, as its batch failed: {0}")]
    Batch(#[source] Arc<StoreError>),
}

impl StoreError {
    /// Whether the database could not be reached ([`StoreError::Unreachable`],
    /// also as the cause of a failed batch).
    pub fn is_unreachable(&self) -> bool {
        match self {
            StoreError::Unreachable(_) => true,
            StoreError::Batch(cause) => cause.is_unreachable(),
            _ => false,
        }
    }

    /// Whether trying the same call again may succeed.
    pub fn is_retryable(&self) -> bool {
        match self {
            StoreError::Busy(_) => true,
            StoreError::Batch(cause) => cause.is_retryable(),
            _ => false,
        }
    }
}

impl From<sqlx::Error> for StoreError {
    fn from(err: sqlx::Error) -> Self {
        if matches!(err, sqlx::Error::PoolClosed) {
            StoreError::Closed
        } else if let Some(why) = unreachable(&err) {
            StoreError::Unreachable(why)
        } else if is_busy(&err) {
            StoreError::Busy(err)
        } else {
            StoreError::Database(err)
        }
    }
}

/// Why `err` means the database cannot be reached, if it does: no
/// connection within the timeout, or the connection's I/O failed.
fn unreachable(err: &sqlx::Error) -> Option<String> {
    match err {
        sqlx::Error::PoolTimedOut => {
            Some("no database connection could be had within the store's timeout".to_owned())
        }
        sqlx::Error::Io(e) => Some(format!("the database connection failed: {e}")),
        sqlx::Error::Tls(e) => Some(format!("the database connection failed (TLS): {e}")),
        _ => None,
    }
}

/// SQLite `SQLITE_BUSY`/`SQLITE_LOCKED` (and their extended codes), and
/// PostgreSQL's lock-not-available, serialization-failure and deadlock
/// states: contention, not a fault.
fn is_busy(err: &sqlx::Error) -> bool {
    let sqlx::Error::Database(db) = err else {
        return false;
    };
    if let Some(pg) = db.try_downcast_ref::<sqlx::postgres::PgDatabaseError>() {
        return matches!(pg.code(), "55P03" | "40001" | "40P01");
    }
    if db.try_downcast_ref::<sqlx::sqlite::SqliteError>().is_some() {
        // The extended result code; the primary code is its low byte.
        let code = db.code().and_then(|c| c.parse::<i32>().ok()).unwrap_or(0);
        return matches!(code & 0xff, 5 | 6);
    }
    false
}
