//! The two backends, connecting to them, and the transactions every write
//! runs in. The rest of the crate writes each query once: the statements are
//! portable between SQLite and PostgreSQL (`$1` parameters, `CAST`,
//! `RETURNING`, `IS NOT DISTINCT FROM`), and [`on_tx!`]/[`on_pool!`] expand
//! one body for each backend's concrete connection type. Only beginning a
//! transaction and taking locks differ, and they live here.

use std::collections::VecDeque;
use std::ops::Range;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use futures_util::TryStreamExt;
use sha2::{Digest, Sha256};
use sqlx::migrate::Migrator;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteRow,
};
use sqlx::Either;
use sqlx::{ConnectOptions, Executor, FromRow, Postgres, Sqlite, SqliteConnection, Transaction};
use tokio::sync::{Mutex, OwnedMutexGuard};
use warden_core::TeamName;

use crate::error::StoreError;
use crate::writer::Writer;

static SQLITE_MIGRATIONS: Migrator = sqlx::migrate!("./migrations/sqlite");
static POSTGRES_MIGRATIONS: Migrator = sqlx::migrate!("./migrations/postgres");

/// How long a SQLite writer waits for another process's write transaction
/// before giving up with [`StoreError::Busy`]. Writers in this process queue
/// on an async mutex instead, so this only matters across processes.
const SQLITE_BUSY_TIMEOUT: Duration = Duration::from_secs(10);

/// WAL pages after which a commit copies the WAL back into the database
/// (SQLite's `wal_autocheckpoint`; its default is 1000). The commit that
/// crosses it pays for the copy, and every write of its batch (and of the
/// batch queued behind it) waits: a quarter of the default makes that
/// stall a quarter as long, four times as often. Measured with the setup
/// of `bench/k8s.sh` (p99 of GPU admissions at 32 connections, three
/// interleaved runs each, 2 vCPUs): 4000 pages 8.8–9.2 ms, 1000 pages
/// 6.2–6.6 ms, 250 pages 5.6–6.3 ms, 100 pages 7.0–7.6 ms (checkpoints
/// so frequent that their fixed cost shows).
const SQLITE_WAL_AUTOCHECKPOINT: &str = "250";

/// How long a store call waits for a database connection by default
/// ([`StoreOptions::timeout`]).
pub const DEFAULT_STORE_TIMEOUT: Duration = Duration::from_secs(5);

/// How a [`Store`] connects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoreOptions {
    /// The longest a call waits for a connection to the database (opening
    /// one included) before failing with [`StoreError::Unreachable`]. Keep it
    /// well under what callers wait for an answer: SkyPilot gives up after
    /// 30 s, so a fail-closed answer must come before that.
    pub timeout: Duration,
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            timeout: DEFAULT_STORE_TIMEOUT,
        }
    }
}

/// The store: one handle over either backend. Cheap to clone (it holds a
/// connection pool and a handle on the store's writer task); all methods
/// take `&self` and are safe to call from many tasks at once. Clones share
/// one pool and one writer task, which stops when the last clone is dropped
/// or on [`Store::close`].
#[derive(Debug, Clone)]
pub struct Store {
    backend: Backend,
    pub(crate) writer: Arc<Writer>,
}

/// The connection pool of either backend, shared by a [`Store`]'s clones and
/// its writer task.
#[derive(Debug, Clone)]
pub(crate) enum Backend {
    Sqlite {
        pool: SqlitePool,
        /// The connection every write transaction of this process runs on,
        /// outside the pool. Its mutex serializes this process's write
        /// transactions before they reach SQLite, whose own busy handler
        /// waits by sleeping and polling. One connection keeps one SQLite
        /// worker thread warm and skips the pool's checkout and its ping on
        /// return: a write transaction is a chain of round trips to that
        /// thread, and each one it saves is latency saved for every write
        /// of the batch.
        writer: Arc<Mutex<WriterConn>>,
    },
    Postgres {
        pool: PgPool,
    },
}

impl Store {
    /// Opens the store at `url` and applies the embedded migrations (a no-op
    /// when they are already applied; concurrent replicas are safe, as the
    /// migrator takes a lock on PostgreSQL).
    ///
    /// - `sqlite://PATH` (or `sqlite:PATH`): the file is created if missing,
    ///   put in WAL mode, with a busy timeout for writers in other processes.
    /// - `postgres://...` or `postgresql://...`: any libpq-style URL.
    pub async fn connect(url: &str) -> Result<Store, StoreError> {
        Store::connect_with(url, StoreOptions::default()).await
    }

    /// [`Store::connect`] with explicit options.
    pub async fn connect_with(url: &str, options: StoreOptions) -> Result<Store, StoreError> {
        let timeout = options.timeout;
        let scheme = url.split_once(':').map_or(url, |(scheme, _)| scheme);
        let backend = match scheme {
            "sqlite" => {
                let options = SqliteConnectOptions::from_str(url)
                    .map_err(|source| connect_error("sqlite", source))?
                    .create_if_missing(true)
                    .journal_mode(SqliteJournalMode::Wal)
                    .busy_timeout(SQLITE_BUSY_TIMEOUT)
                    .foreign_keys(true)
                    .pragma("wal_autocheckpoint", SQLITE_WAL_AUTOCHECKPOINT);
                let pool = SqlitePoolOptions::new()
                    .acquire_timeout(timeout)
                    .connect_with(options.clone())
                    .await
                    .map_err(|source| connect_error("sqlite", source))?;
                SQLITE_MIGRATIONS
                    .run(&pool)
                    .await
                    .map_err(|source| StoreError::Migrate {
                        backend: "sqlite",
                        source,
                    })?;
                let writer = options
                    .connect()
                    .await
                    .map_err(|source| connect_error("sqlite", source))?;
                Backend::Sqlite {
                    writer: Arc::new(Mutex::new(WriterConn {
                        conn: writer,
                        abandoned: false,
                        closed: false,
                        reads: FetchCounts::default(),
                    })),
                    pool,
                }
            }
            "postgres" | "postgresql" => {
                let options = PgConnectOptions::from_str(url)
                    .map_err(|source| connect_error("postgres", source))?;
                let pool = PgPoolOptions::new()
                    .acquire_timeout(timeout)
                    .connect_with(options)
                    .await
                    .map_err(|source| connect_error("postgres", source))?;
                POSTGRES_MIGRATIONS
                    .run(&pool)
                    .await
                    .map_err(|source| StoreError::Migrate {
                        backend: "postgres",
                        source,
                    })?;
                Backend::Postgres { pool }
            }
            other => return Err(StoreError::UnsupportedUrl(other.to_owned())),
        };
        let writer = Arc::new(Writer::spawn(backend.clone()));
        Ok(Store { backend, writer })
    }

    /// Whether the database answers now: takes a connection (waiting at
    /// most the store's timeout) and runs `SELECT 1` on it. For readiness
    /// probes; [`StoreError::Unreachable`] says why not.
    pub async fn ping(&self) -> Result<(), StoreError> {
        match &self.backend {
            Backend::Sqlite { pool, .. } => {
                sqlx::query("SELECT 1").execute(pool).await?;
            }
            Backend::Postgres { pool } => {
                sqlx::query("SELECT 1").execute(pool).await?;
            }
        }
        Ok(())
    }

    /// `sqlite` or `postgres`, for logs and metrics.
    pub fn backend_name(&self) -> &'static str {
        match self.backend {
            Backend::Sqlite { .. } => "sqlite",
            Backend::Postgres { .. } => "postgres",
        }
    }

    /// Stops the writer task, then closes every connection, waiting for
    /// checked-out ones to come back. Writes already queued with
    /// [`Store::write`] are committed and answered first; later ones fail
    /// with [`StoreError::Closed`], as do all other calls once the pool is
    /// closed.
    pub async fn close(&self) {
        self.writer.close().await;
        match &self.backend {
            Backend::Sqlite { pool, writer } => {
                // After the writer task's last batch; waits for a write
                // transaction in progress. The connection itself closes
                // with the last clone of the store.
                let mut writer = writer.lock().await;
                writer.recover().await;
                writer.closed = true;
                drop(writer);
                pool.close().await;
            }
            Backend::Postgres { pool } => pool.close().await,
        }
    }

    /// Begins a write transaction; see [`Backend::begin_write`].
    pub(crate) async fn begin_write(&self) -> Result<Tx, StoreError> {
        self.backend.begin_write().await
    }

    /// How the writer connection's reads were answered so far (SQLite;
    /// zero on PostgreSQL).
    #[cfg(test)]
    pub(crate) async fn writer_reads(&self) -> FetchCounts {
        match &self.backend {
            Backend::Sqlite { writer, .. } => writer.lock().await.reads,
            Backend::Postgres { .. } => FetchCounts::default(),
        }
    }

    /// Begins a write transaction with reads; see
    /// [`Backend::begin_write_reading`].
    pub(crate) async fn begin_write_reading(
        &self,
        prefetch: impl FnOnce() -> Vec<Stmt>,
    ) -> Result<Tx, StoreError> {
        self.backend.begin_write_reading(prefetch).await
    }

    /// Begins a read-only snapshot; see [`Backend::begin_snapshot`].
    pub(crate) async fn begin_snapshot(&self) -> Result<Tx, StoreError> {
        self.backend.begin_snapshot().await
    }

    /// The pool, for [`on_pool!`].
    pub(crate) fn pool(&self) -> PoolRef<'_> {
        match &self.backend {
            Backend::Sqlite { pool, .. } => PoolRef::Sqlite(pool),
            Backend::Postgres { pool } => PoolRef::Postgres(pool),
        }
    }
}

impl Backend {
    /// Begins a write transaction that sees every write committed before it
    /// and serializes with other writers where it matters:
    ///
    /// - SQLite: `BEGIN IMMEDIATE` takes the database's single write lock up
    ///   front, so the checks a transaction makes cannot be invalidated by a
    ///   writer that commits in between, in this process or another. Writers
    ///   of this process first queue on an async mutex; another process's
    ///   writer is waited for up to [`SQLITE_BUSY_TIMEOUT`].
    /// - PostgreSQL: READ COMMITTED, stated explicitly so a server-wide
    ///   `default_transaction_isolation` cannot change it. Each statement
    ///   then reads the latest committed data, which is what makes "lock,
    ///   then read" exact: a statement issued after acquiring a lock sees
    ///   everything its previous holder committed. (Under REPEATABLE READ the
    ///   snapshot could predate the lock wait.) Writers serialize on the
    ///   explicit locks of [`Tx::lock_teams`] and the audit head row.
    pub(crate) async fn begin_write(&self) -> Result<Tx, StoreError> {
        self.begin_write_reading(Vec::new).await
    }

    /// [`Backend::begin_write`], and on SQLite also runs the reads
    /// `prefetch` returns in the round trip of `BEGIN`, for the
    /// transaction's first reads to take ([`SqliteTx::fetch`]). PostgreSQL
    /// runs each read when it is asked for; `prefetch` is not called.
    pub(crate) async fn begin_write_reading(
        &self,
        prefetch: impl FnOnce() -> Vec<Stmt>,
    ) -> Result<Tx, StoreError> {
        match self {
            Self::Sqlite { writer, .. } => Ok(Tx::Sqlite {
                tx: SqliteTx::Writer(WriterTx::begin(writer, prefetch()).await?),
            }),
            Self::Postgres { pool } => {
                let tx = pool
                    .begin_with("BEGIN ISOLATION LEVEL READ COMMITTED")
                    .await?;
                Ok(Tx::Postgres { tx })
            }
        }
    }

    /// PostgreSQL: refreshes the planner's statistics of `allocations`
    /// (`ANALYZE`) in a task of its own, on a pooled connection; see the
    /// writer's `AnalyzeSchedule` for when. Takes no lock that blocks
    /// writes. A failure changes nothing (the statistics stay as they were,
    /// for autovacuum to refresh), and a role that does not own the table
    /// gets a warning from the server, not an error. SQLite: nothing.
    pub(crate) fn spawn_analyze_allocations(&self) {
        if let Self::Postgres { pool } = self {
            let pool = pool.clone();
            tokio::spawn(async move {
                let _ = sqlx::query("ANALYZE allocations").execute(&pool).await;
            });
        }
    }

    /// Begins a read-only transaction whose reads all see one snapshot:
    /// SQLite in WAL mode keeps a read transaction's snapshot from its first
    /// read; PostgreSQL needs REPEATABLE READ for that.
    pub(crate) async fn begin_snapshot(&self) -> Result<Tx, StoreError> {
        match self {
            Self::Sqlite { pool, .. } => {
                let tx = pool.begin_with("BEGIN DEFERRED").await?;
                Ok(Tx::Sqlite {
                    tx: SqliteTx::Pool(tx),
                })
            }
            Self::Postgres { pool } => {
                let tx = pool
                    .begin_with("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
                    .await?;
                Ok(Tx::Postgres { tx })
            }
        }
    }
}

/// A borrowed pool of either backend.
pub(crate) enum PoolRef<'a> {
    Sqlite(&'a SqlitePool),
    Postgres(&'a PgPool),
}

fn connect_error(backend: &'static str, source: sqlx::Error) -> StoreError {
    StoreError::Connect { backend, source }
}

/// An open transaction on either backend. Dropping it rolls back.
pub(crate) enum Tx {
    Sqlite { tx: SqliteTx },
    Postgres { tx: Transaction<'static, Postgres> },
}

/// A SQLite transaction: a write transaction on the store's writer
/// connection, or a read snapshot on a pooled one. Derefs to the
/// connection, for [`on_tx!`].
pub(crate) enum SqliteTx {
    Writer(WriterTx),
    Pool(Transaction<'static, Sqlite>),
}

impl SqliteTx {
    /// Runs `sql` (with `$n` or `?` parameters) now or, in a write transaction
    /// that defers its writes ([`Tx::defer_writes`]), queues it to be sent
    /// with the `COMMIT`.
    pub(crate) async fn run_or_defer(
        &mut self,
        sql: &str,
        params: Vec<Param>,
    ) -> Result<(), sqlx::Error> {
        if let SqliteTx::Writer(tx) = self {
            tx.prefetched.clear();
            if tx.deferring {
                tx.deferred.push(sql, params);
                return Ok(());
            }
        }
        let mut text = String::with_capacity(sql.len());
        let params = anonymize_params(sql, params, &mut text);
        bound(&text, params).execute(&mut **self).await?;
        Ok(())
    }

    /// The rows of `stmt`: the ones read for it with `BEGIN` when it is
    /// the next of the reads prefetched there, else read now. Prefetched
    /// rows are taken only in order and only before any other statement of
    /// the transaction (one that runs through the connection, or through
    /// [`SqliteTx::run_or_defer`], drops what is left of them), so what they
    /// say is what reading now would say.
    pub(crate) async fn fetch(&mut self, stmt: Stmt) -> Result<Vec<SqliteRow>, sqlx::Error> {
        let conn = match self {
            SqliteTx::Writer(tx) => {
                match tx.prefetched.pop_front() {
                    Some((read, rows)) if read == stmt => {
                        tx.conn.reads.prefetched += 1;
                        return Ok(rows);
                    }
                    Some(_) => tx.prefetched.clear(),
                    None => {}
                }
                tx.conn.reads.run += 1;
                &mut tx.conn.conn
            }
            SqliteTx::Pool(tx) => &mut **tx,
        };
        bound(&stmt.sql, stmt.params).fetch_all(conn).await
    }

    async fn commit(self) -> Result<(), sqlx::Error> {
        match self {
            SqliteTx::Writer(tx) => tx.commit().await,
            SqliteTx::Pool(tx) => tx.commit().await,
        }
    }
}

impl std::ops::Deref for SqliteTx {
    type Target = SqliteConnection;

    fn deref(&self) -> &SqliteConnection {
        match self {
            SqliteTx::Writer(tx) => tx,
            SqliteTx::Pool(tx) => tx,
        }
    }
}

impl std::ops::DerefMut for SqliteTx {
    fn deref_mut(&mut self) -> &mut SqliteConnection {
        match self {
            SqliteTx::Writer(tx) => tx,
            SqliteTx::Pool(tx) => tx,
        }
    }
}

/// The connection write transactions run on, and whether an abandoned
/// transaction is still open on it.
#[derive(Debug)]
pub(crate) struct WriterConn {
    conn: SqliteConnection,
    /// A [`WriterTx`] was dropped without committing: the next holder rolls
    /// it back before anything else.
    abandoned: bool,
    /// [`Store::close`] ran: no transaction begins any more.
    closed: bool,
    /// How the reads of [`SqliteTx::fetch`] were answered.
    reads: FetchCounts,
}

/// How many reads of [`SqliteTx::fetch`] on the writer connection took rows
/// read with `BEGIN`, and how many were run when asked for: a read that
/// `BEGIN` could have carried but did not costs a round trip.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct FetchCounts {
    pub(crate) prefetched: u64,
    pub(crate) run: u64,
}

impl WriterConn {
    /// Rolls back what an abandoned transaction left open.
    async fn recover(&mut self) {
        if self.abandoned {
            // Fails only when SQLite already ended the transaction itself
            // (it does on some I/O errors), which leaves nothing to undo.
            let _ = sqlx::query("ROLLBACK").execute(&mut self.conn).await;
            self.abandoned = false;
        }
    }
}

/// A write transaction (`BEGIN IMMEDIATE`) on the writer connection, which
/// it holds, and with it this process's write lock, until it ends. Dropped
/// without [`WriterTx::commit`] (an error, or a caller that gave up), it
/// marks the connection abandoned and starts a task that rolls back; the
/// next writer rolls back first if that task has not yet run, so no write
/// ever runs inside an abandoned transaction, and SQLite's write lock is
/// given up promptly for other processes.
pub(crate) struct WriterTx {
    conn: OwnedMutexGuard<WriterConn>,
    writer: Arc<Mutex<WriterConn>>,
    open: bool,
    /// Whether [`SqliteTx::run_or_defer`] queues statements now.
    deferring: bool,
    /// The audit head (`seq`, `hash`) read with `BEGIN`, while no append of
    /// this transaction has used it ([`Tx::take_audit_head`]): the write
    /// lock held since then means no one else can have moved it.
    audit_head: Option<(i64, String)>,
    /// Statements queued for the commit.
    deferred: Deferred,
    /// Reads run with `BEGIN` and not yet taken, in order, with their rows
    /// ([`SqliteTx::fetch`]).
    prefetched: VecDeque<(Stmt, Vec<SqliteRow>)>,
}

impl WriterTx {
    /// Waits for the writer connection and begins a write transaction on
    /// it. The audit head and the `prefetch` reads go in the same round trip
    /// as `BEGIN IMMEDIATE`, after it: they see what its lock keeps current.
    async fn begin(
        writer: &Arc<Mutex<WriterConn>>,
        prefetch: Vec<Stmt>,
    ) -> Result<WriterTx, sqlx::Error> {
        let mut conn = Arc::clone(writer).lock_owned().await;
        if conn.closed {
            return Err(sqlx::Error::PoolClosed);
        }
        conn.recover().await;
        // Nearly every write transaction appends to the chain. Should a
        // read fail after `BEGIN` succeeded, the next holder rolls back.
        conn.abandoned = true;
        let mut sql =
            String::from("BEGIN IMMEDIATE;\nSELECT seq, hash FROM audit_head WHERE id = 1");
        let mut params = Vec::new();
        for read in &prefetch {
            sql.push_str(";\n");
            sql.push_str(&read.sql);
            params.extend(read.params.iter().cloned());
        }
        // One result set per statement, each closed by its `Left`.
        let mut sets: Vec<Vec<SqliteRow>> = Vec::with_capacity(prefetch.len() + 2);
        let mut rows = Vec::new();
        // sqlx runs every statement of a text on SQLite, binding each its
        // parameters in turn (as the commit's deferred writes rely on too),
        // and ends each statement's rows with its `Left`.
        let mut results = conn.conn.fetch_many(bound(&sql, params));
        while let Some(item) = results.try_next().await? {
            match item {
                Either::Left(_) => sets.push(std::mem::take(&mut rows)),
                Either::Right(row) => rows.push(row),
            }
        }
        drop(results);
        if sets.len() != prefetch.len() + 2 {
            return Err(sqlx::Error::Protocol(format!(
                "{} result sets for {} statements",
                sets.len(),
                prefetch.len() + 2
            )));
        }
        let mut sets = sets.into_iter().skip(1);
        let audit_head = match sets.next().and_then(|rows| rows.into_iter().next()) {
            Some(row) => Some(<(i64, String)>::from_row(&row)?),
            None => None,
        };
        conn.abandoned = false;
        Ok(WriterTx {
            conn,
            writer: Arc::clone(writer),
            open: true,
            deferring: false,
            deferred: Deferred::default(),
            audit_head,
            prefetched: prefetch.into_iter().zip(sets).collect(),
        })
    }

    /// Sends the deferred statements and `COMMIT` together, in one round
    /// trip: SQLite runs them in order and stops at the first error, which
    /// leaves the transaction open, to be rolled back.
    async fn commit(mut self) -> Result<(), sqlx::Error> {
        let Deferred { mut sql, params } = std::mem::take(&mut self.deferred);
        sql.push_str("COMMIT");
        bound(&sql, params).execute(&mut self.conn.conn).await?;
        self.open = false;
        Ok(())
    }
}

impl Drop for WriterTx {
    fn drop(&mut self) {
        if !self.open {
            return;
        }
        self.conn.abandoned = true;
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            let writer = Arc::clone(&self.writer);
            runtime.spawn(async move {
                writer.lock().await.recover().await;
            });
        }
        // Without a runtime (the store's ended) the connection is closing:
        // SQLite rolls back what it leaves open.
    }
}

impl std::ops::Deref for WriterTx {
    type Target = SqliteConnection;

    fn deref(&self) -> &SqliteConnection {
        &self.conn.conn
    }
}

impl std::ops::DerefMut for WriterTx {
    /// A statement run through the connection ends the prefetched reads'
    /// turn ([`SqliteTx::fetch`]).
    fn deref_mut(&mut self) -> &mut SqliteConnection {
        self.prefetched.clear();
        &mut self.conn.conn
    }
}

/// A SQLite statement with anonymous (`?`) parameters and their values,
/// to read in a round trip shared with others ([`SqliteTx::fetch`]).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Stmt {
    pub(crate) sql: String,
    pub(crate) params: Vec<Param>,
}

/// A parameter of a statement [`SqliteTx::run_or_defer`] may hold back.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Param {
    Null,
    Int(i64),
    Real(f64),
    Text(String),
}

/// `sql` with `params` bound in order.
fn bound(
    sql: &str,
    params: Vec<Param>,
) -> sqlx::query::Query<'_, Sqlite, sqlx::sqlite::SqliteArguments<'_>> {
    params
        .into_iter()
        .fold(sqlx::query(sql), |query, param| match param {
            Param::Null => query.bind(None::<i64>),
            Param::Int(v) => query.bind(v),
            Param::Real(v) => query.bind(v),
            Param::Text(v) => query.bind(v),
        })
}

impl From<i64> for Param {
    fn from(v: i64) -> Param {
        Param::Int(v)
    }
}

impl From<f64> for Param {
    fn from(v: f64) -> Param {
        Param::Real(v)
    }
}

impl From<&str> for Param {
    fn from(v: &str) -> Param {
        Param::Text(v.to_owned())
    }
}

impl<T: Into<Param>> From<Option<T>> for Param {
    fn from(v: Option<T>) -> Param {
        v.map_or(Param::Null, Into::into)
    }
}

/// Write statements held back to go with the `COMMIT`, as one text of
/// `;`-separated statements with anonymous (`?`) parameters, and their
/// values in order: sqlx gives each statement of such a text the values
/// after the previous statement's ([`anonymize_params`]).
#[derive(Debug, Default)]
pub(crate) struct Deferred {
    sql: String,
    params: Vec<Param>,
}

impl Deferred {
    fn push(&mut self, sql: &str, params: Vec<Param>) {
        let params = anonymize_params(sql, params, &mut self.sql);
        self.sql.push_str(";\n");
        self.params.extend(params);
    }
}

/// Appends `sql` to `out` with every parameter outside quotes made an
/// anonymous `?`, and returns the values those take in order: `$n` takes
/// `params[n - 1]` (again at each use), and a `?` already there the next
/// value not yet taken by an earlier `?`, as sqlx binds them. A parameter
/// beyond `params` is bound NULL, as sqlx and SQLite leave it. Each value
/// is moved to its last use (a long text, such as an audit payload, is
/// not copied) and cloned for any use before that. (`?NNN`
/// and `:name` parameters are not used in this crate and not handled.)
///
/// Why: sqlx asks SQLite the name of every parameter of a statement before
/// binding it, and SQLite finds a named parameter's (`$n`'s) name by a
/// linear search of the statement's parameter list, so binding a
/// multi-row statement of `n` named parameters costs `O(n²)`; an anonymous
/// one has no name to search for.
pub(crate) fn anonymize_params(sql: &str, params: Vec<Param>, out: &mut String) -> Vec<Param> {
    // The value each parameter takes, by index into `params`, in order.
    let mut uses: Vec<usize> = Vec::with_capacity(params.len());
    let mut next_anonymous = 0usize;
    let bytes = sql.as_bytes();
    let mut quote: Option<u8> = None;
    // `sql[copied..]` is not yet in `out`: spans without a parameter are
    // copied whole. Every cut is at an ASCII byte, so on a char boundary.
    let mut copied = 0usize;
    let mut i = 0usize;
    while let Some(&b) = bytes.get(i) {
        i += 1;
        match (quote, b) {
            (Some(q), b) if b == q => quote = None,
            (Some(_), _) => {}
            (None, b'\'' | b'"') => quote = Some(b),
            (None, b'$') if bytes.get(i).is_some_and(u8::is_ascii_digit) => {
                out.push_str(sql.get(copied..i - 1).unwrap_or_default());
                let mut n = 0usize;
                while let Some(d) = bytes.get(i).filter(|d| d.is_ascii_digit()) {
                    n = n.saturating_mul(10).saturating_add(usize::from(d - b'0'));
                    i += 1;
                }
                out.push('?');
                uses.push(n.saturating_sub(1));
                copied = i;
            }
            (None, b'?') => {
                uses.push(next_anonymous);
                next_anonymous += 1;
            }
            (None, _) => {}
        }
    }
    out.push_str(sql.get(copied..).unwrap_or_default());
    // Each value is moved to its last use and cloned for the ones before.
    let mut last_use = vec![usize::MAX; params.len()];
    for (at, &i) in uses.iter().enumerate() {
        if let Some(last) = last_use.get_mut(i) {
            *last = at;
        }
    }
    let mut values: Vec<Option<Param>> = params.into_iter().map(Some).collect();
    uses.iter()
        .enumerate()
        .map(|(at, &i)| {
            let value = values.get_mut(i);
            match value {
                Some(slot) if last_use.get(i) == Some(&at) => slot.take(),
                Some(slot) => slot.clone(),
                None => None,
            }
            .unwrap_or(Param::Null)
        })
        .collect()
}

/// Runs `$body` with `$conn` bound to the transaction's connection
/// (`&mut SqliteConnection` or `&mut PgConnection`). The body is written once
/// and type-checked against each backend; pass `&mut *$conn` to each query.
macro_rules! on_tx {
    ($tx:expr, |$conn:ident| $body:expr) => {
        match $tx {
            $crate::backend::Tx::Sqlite { tx, .. } => {
                let $conn: &mut ::sqlx::SqliteConnection = &mut **tx;
                $body
            }
            $crate::backend::Tx::Postgres { tx } => {
                let $conn: &mut ::sqlx::PgConnection = &mut **tx;
                $body
            }
        }
    };
}

/// Runs `$body` with `$pool` bound to the store's pool (`&SqlitePool` or
/// `&PgPool`), for reads outside a transaction.
macro_rules! on_pool {
    ($store:expr, |$pool:ident| $body:expr) => {
        match $store.pool() {
            $crate::backend::PoolRef::Sqlite($pool) => $body,
            $crate::backend::PoolRef::Postgres($pool) => $body,
        }
    };
}

pub(crate) use {on_pool, on_tx};

impl Tx {
    /// From now on, the write statements that go through
    /// [`SqliteTx::run_or_defer`] are held back and sent with the `COMMIT`
    /// in one round trip (on SQLite's writer connection; elsewhere they run
    /// at once). Only for a transaction that reads nothing those statements
    /// write before it commits: [`Tx::apply`](crate::writer), whose last
    /// steps are writes.
    pub(crate) fn defer_writes(&mut self) {
        if let Tx::Sqlite {
            tx: SqliteTx::Writer(tx),
        } = self
        {
            tx.deferring = true;
        }
    }

    /// The audit head as read when the transaction began, if that read is
    /// still current (SQLite's writer connection, before the first append);
    /// `None` means read it now. An append that takes it must
    /// [`Tx::keep_audit_head`] the new head.
    pub(crate) fn take_audit_head(&mut self) -> Option<(i64, String)> {
        match self {
            Tx::Sqlite {
                tx: SqliteTx::Writer(tx),
            } => tx.audit_head.take(),
            _ => None,
        }
    }

    /// Records the audit head an append of this transaction left, for the
    /// next append of the same transaction ([`Tx::take_audit_head`]).
    pub(crate) fn keep_audit_head(&mut self, seq: i64, hash: &str) {
        if let Tx::Sqlite {
            tx: SqliteTx::Writer(tx),
        } = self
        {
            tx.audit_head = Some((seq, hash.to_owned()));
        }
    }

    /// Commits. Nothing the transaction did is visible before this returns.
    pub(crate) async fn commit(self) -> Result<(), StoreError> {
        match self {
            Tx::Sqlite { tx } => tx.commit().await?,
            Tx::Postgres { tx } => tx.commit().await?,
        }
        Ok(())
    }

    /// Serializes this transaction with every other writer that locks one of
    /// `teams`, until commit or rollback. A transaction calls it once, before
    /// reading anything of those teams: a batch of [`crate::Store::write`]
    /// passes the teams of all its reservations.
    ///
    /// PostgreSQL: a transaction-scoped advisory lock per team
    /// (`pg_advisory_xact_lock`), keyed by the first 8 bytes of
    /// SHA-256(`"warden.team\0" || team`). Chosen over locking a row of a
    /// `team_locks` table because it needs no row to exist (a new team has
    /// none, and creating one races), writes nothing (no dead tuples on every
    /// launch), takes one round trip, and is released by the server at
    /// commit, rollback or disconnect. A hash collision between two teams
    /// only makes them wait for each other; it never lets two writers of one
    /// team in at once. Keys are derived the same way in every process, so
    /// any number of replicas on one database serialize correctly. Teams are
    /// locked in key order (all in one statement), and always before the
    /// audit head, so two writers never wait for each other in a cycle.
    ///
    /// SQLite: nothing to do; `BEGIN IMMEDIATE` already holds the database's
    /// one write lock.
    pub(crate) async fn lock_teams(&mut self, teams: &[&TeamName]) -> Result<(), StoreError> {
        let Tx::Postgres { tx } = self else {
            return Ok(());
        };
        let mut keys: Vec<i64> = teams.iter().map(|team| team_lock_key(team)).collect();
        keys.sort_unstable();
        keys.dedup();
        if keys.is_empty() {
            return Ok(());
        }
        // One round trip: the scan yields the keys in array order, and each
        // row's lock is taken as the row is produced.
        sqlx::query("SELECT pg_advisory_xact_lock(k) FROM UNNEST($1::BIGINT[]) AS k")
            .bind(keys)
            .execute(&mut **tx)
            .await?;
        Ok(())
    }

    /// Whether this is a PostgreSQL transaction (for the few statements
    /// whose spelling differs).
    pub(crate) fn is_postgres(&self) -> bool {
        matches!(self, Tx::Postgres { .. })
    }
}

/// The advisory-lock key of a team: see [`Tx::lock_teams`].
fn team_lock_key(team: &TeamName) -> i64 {
    let digest = Sha256::new()
        .chain_update(b"warden.team\0")
        .chain_update(team.as_str().as_bytes())
        .finalize();
    let bytes: [u8; 32] = digest.into();
    let [b0, b1, b2, b3, b4, b5, b6, b7, ..] = bytes;
    i64::from_be_bytes([b0, b1, b2, b3, b4, b5, b6, b7])
}

/// The most rows one SQLite multi-row statement carries.
const MAX_SQLITE_CHUNK: usize = 64;

impl Tx {
    /// The rows of `select` (a query without `WHERE`) whose `column` names
    /// one of `teams`: one `= ANY` statement on PostgreSQL, padded
    /// `IN (VALUES ...)` statements on SQLite ([`sqlite_rows_for_teams`]).
    pub(crate) async fn rows_for_teams<R>(
        &mut self,
        select: &str,
        column: &str,
        teams: &[&TeamName],
    ) -> Result<Vec<R>, StoreError>
    where
        R: Send
            + Unpin
            + for<'r> sqlx::FromRow<'r, sqlx::postgres::PgRow>
            + for<'r> sqlx::FromRow<'r, sqlx::sqlite::SqliteRow>,
    {
        let mut rows = Vec::new();
        match self {
            Tx::Postgres { tx } => {
                if !teams.is_empty() {
                    let names: Vec<&str> = teams.iter().map(|t| t.as_str()).collect();
                    rows = sqlx::query_as(&format!("{select} WHERE {column} = ANY($1::TEXT[])"))
                        .bind(names)
                        .fetch_all(&mut **tx)
                        .await?;
                }
            }
            Tx::Sqlite { tx, .. } => {
                for stmt in sqlite_rows_for_teams(select, column, teams) {
                    for row in tx.fetch(stmt).await? {
                        rows.push(R::from_row(&row)?);
                    }
                }
            }
        }
        Ok(rows)
    }
}

/// The SQLite statements of [`Tx::rows_for_teams`]: `IN (VALUES ...)`,
/// padded with NULL rows (which match no team) so that few texts serve
/// every number of teams ([`sqlite_padded_chunks`]).
pub(crate) fn sqlite_rows_for_teams(select: &str, column: &str, teams: &[&TeamName]) -> Vec<Stmt> {
    sqlite_padded_chunks(teams.len())
        .map(|(range, padded)| {
            let chunk = teams.get(range).unwrap_or_default();
            let mut params: Vec<Param> = chunk.iter().map(|team| team.as_str().into()).collect();
            params.resize(padded, Param::Null);
            Stmt {
                sql: format!(
                    "{select} WHERE {column} IN (VALUES {})",
                    sqlite_values(padded, 1)
                ),
                params,
            }
        })
        .collect()
}

/// Splits `0..n` into consecutive ranges whose lengths are powers of two of
/// at most [`MAX_SQLITE_CHUNK`], largest first.
///
/// SQLite has no array parameters, so a batch of rows goes in as multi-row
/// `VALUES` lists. With these lengths seven statement texts serve every
/// batch size, and they stay in each connection's prepared-statement cache
/// (one text per batch size would not). PostgreSQL binds whole columns as
/// arrays and `UNNEST`s them in one statement instead.
pub(crate) fn sqlite_chunks(n: usize) -> impl Iterator<Item = Range<usize>> {
    let mut start = 0;
    std::iter::from_fn(move || {
        let left = n.checked_sub(start).filter(|&left| left > 0)?;
        let len = MAX_SQLITE_CHUNK.min(1 << left.ilog2());
        let range = start..start + len;
        start = range.end;
        Some(range)
    })
}

/// The most rows one padded SQLite statement carries: a whole batch of the
/// writer, so that a batch's rows go in one statement, one round trip to
/// SQLite's worker thread.
const MAX_SQLITE_PADDED: usize = crate::writer::MAX_BATCH;

/// Splits `0..n` into consecutive ranges of at most [`MAX_SQLITE_PADDED`]
/// rows, each with the number of rows its statement is written for: its
/// length rounded up to a power of two. The statement binds the range's
/// rows and then NULL rows up to that number, and drops the NULL rows
/// itself (`WHERE column1 IS NOT NULL`, or a join that NULL never matches).
///
/// Against [`sqlite_chunks`]: one statement, one round trip, for a whole
/// batch, at the price of a few NULL parameters; still nine statement
/// texts per statement, which stay in the connection's statement cache.
pub(crate) fn sqlite_padded_chunks(n: usize) -> impl Iterator<Item = (Range<usize>, usize)> {
    let mut start = 0;
    std::iter::from_fn(move || {
        let left = n.checked_sub(start).filter(|&left| left > 0)?;
        let len = MAX_SQLITE_PADDED.min(left);
        let range = start..start + len;
        start = range.end;
        Some((range, len.next_power_of_two()))
    })
}

/// `(?, ?), (?, ?)`: a `VALUES` list of `rows` rows of `cols` anonymous
/// parameters each, bound in row order (SQLite only; anonymous parameters
/// bind in constant time each, see [`anonymize_params`]).
pub(crate) fn sqlite_values(rows: usize, cols: usize) -> String {
    let mut row = String::with_capacity(cols * 3 + 2);
    row.push('(');
    for col in 0..cols {
        row.push_str(if col == 0 { "?" } else { ", ?" });
    }
    row.push(')');
    let mut out = String::with_capacity(rows * (row.len() + 2));
    for i in 0..rows {
        if i > 0 {
            out.push_str(", ");
        }
        out.push_str(&row);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqlite_chunks_are_few_powers_of_two() {
        let lens = |n| sqlite_chunks(n).map(|r| r.len()).collect::<Vec<_>>();
        assert_eq!(lens(0), Vec::<usize>::new());
        assert_eq!(lens(1), [1]);
        assert_eq!(lens(7), [4, 2, 1]);
        assert_eq!(lens(64), [64]);
        assert_eq!(lens(200), [64, 64, 64, 8]);
        for n in 0..600 {
            let chunks: Vec<_> = sqlite_chunks(n).collect();
            assert_eq!(chunks.iter().map(Range::len).sum::<usize>(), n);
            for pair in chunks.windows(2) {
                assert_eq!(pair[0].end, pair[1].start);
            }
        }
    }

    #[test]
    fn sqlite_padded_chunks_cover_n_in_few_statements_of_few_sizes() {
        let chunks = |n| sqlite_padded_chunks(n).collect::<Vec<_>>();
        assert_eq!(chunks(0), []);
        assert_eq!(chunks(1), [(0..1, 1)]);
        assert_eq!(chunks(7), [(0..7, 8)]);
        assert_eq!(chunks(256), [(0..256, 256)]);
        assert_eq!(chunks(300), [(0..256, 256), (256..300, 64)]);
        for n in 0..600 {
            let chunks = chunks(n);
            assert_eq!(chunks.iter().map(|(r, _)| r.len()).sum::<usize>(), n);
            for (range, rows) in &chunks {
                assert!(rows.is_power_of_two() && *rows >= range.len());
                assert!(*rows < 2 * range.len() && *rows <= MAX_SQLITE_PADDED);
            }
        }
    }

    #[test]
    fn parameters_are_made_anonymous_outside_quotes_only() {
        let params: Vec<Param> = (1..=10i64).map(Param::Int).collect();
        let mut out = String::from("BEGIN; ");
        let values = anonymize_params(
            "SELECT 'é $1 ?', \"ü$2\", $10, $, a$ b, ?, $2 -- ÿ",
            params,
            &mut out,
        );
        assert_eq!(
            out,
            "BEGIN; SELECT 'é $1 ?', \"ü$2\", ?, $, a$ b, ?, ? -- ÿ"
        );
        assert_eq!(values, [Param::Int(10), Param::Int(1), Param::Int(2)]);
    }

    #[test]
    fn deferred_statements_take_their_values_in_order() {
        let mut deferred = Deferred::default();
        deferred.push(
            "UPDATE t SET a = $2, b = $1, c = $2 WHERE d = 'x$1?'",
            vec![1i64.into(), "b".into()],
        );
        deferred.push(
            "INSERT INTO t VALUES (?), (?), (?)",
            vec![Param::Int(7), Param::Int(7)],
        );
        deferred.push("DELETE FROM t WHERE a = $1", vec![]);
        assert_eq!(
            deferred.sql,
            "UPDATE t SET a = ?, b = ?, c = ? WHERE d = 'x$1?';\n\
             INSERT INTO t VALUES (?), (?), (?);\n\
             DELETE FROM t WHERE a = ?;\n"
        );
        assert_eq!(
            deferred.params,
            [
                Param::Text("b".to_owned()),
                Param::Int(1),
                Param::Text("b".to_owned()),
                Param::Int(7),
                Param::Int(7),
                Param::Null,
                Param::Null,
            ]
        );
    }

    #[test]
    fn sqlite_values_lists_rows_of_anonymous_parameters() {
        assert_eq!(sqlite_values(1, 1), "(?)");
        assert_eq!(sqlite_values(2, 3), "(?, ?, ?), (?, ?, ?)");
        assert_eq!(sqlite_values(0, 3), "");
    }

    #[test]
    fn team_lock_keys_are_stable_and_distinct() {
        let ml = TeamName::parse("ml").unwrap();
        let cv = TeamName::parse("cv").unwrap();
        // Fixed forever: replicas of different versions must agree. (Values
        // computed independently with Python's hashlib.)
        assert_eq!(team_lock_key(&ml), 8_309_202_390_974_043_836);
        assert_eq!(team_lock_key(&cv), 8_201_525_752_689_691_359);
    }

    #[tokio::test]
    async fn rejects_unknown_schemes_without_echoing_the_url() {
        let err = Store::connect("mysql://root:secret@db/x")
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains("`mysql`"), "{err}");
        assert!(!err.contains("secret"), "{err}");
    }

    /// A store on a new SQLite file, and the directory to remove.
    async fn temp_sqlite(tag: u32) -> (Store, std::path::PathBuf) {
        let dir = std::env::temp_dir().join(format!("warden-backend-{}-{tag}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let url = format!("sqlite://{}", dir.join("w.db").display());
        (Store::connect(&url).await.unwrap(), dir)
    }

    /// Reads prefetched with `BEGIN` answer only in their order and only
    /// before any other statement of the transaction: a read out of order,
    /// or after a write through the connection or `run_or_defer`, runs
    /// afresh and sees the write.
    #[tokio::test]
    async fn prefetched_reads_answer_in_order_and_only_before_other_statements() {
        let (store, dir) = temp_sqlite(line!()).await;
        let count = Stmt {
            sql: "SELECT COUNT(*) FROM allocations".to_owned(),
            params: Vec::new(),
        };
        let echo = Stmt {
            sql: "SELECT ?".to_owned(),
            params: vec![Param::Int(7)],
        };
        let insert = "INSERT INTO allocations \
             (door, team, name, gpus, hourly_micros, started_us, state, reserved_micros) \
             VALUES ('vast', 'ml', ?, 1, 1, 1, 'live', 0)";
        async fn read(tx: &mut Tx, stmt: &Stmt) -> i64 {
            let Tx::Sqlite { tx } = tx else {
                unreachable!("a SQLite store")
            };
            let rows = tx.fetch(stmt.clone()).await.unwrap();
            <(i64,)>::from_row(&rows[0]).unwrap().0
        }
        let both = || vec![count.clone(), echo.clone()];

        let mut tx = store.begin_write_reading(both).await.unwrap();
        assert_eq!(read(&mut tx, &count).await, 0);
        assert_eq!(read(&mut tx, &echo).await, 7);
        tx.commit().await.unwrap();
        let taken = FetchCounts {
            prefetched: 2,
            run: 0,
        };
        assert_eq!(store.writer_reads().await, taken);

        // Out of order: what is left of them is dropped.
        let mut tx = store.begin_write_reading(both).await.unwrap();
        assert_eq!(read(&mut tx, &echo).await, 7);
        assert_eq!(read(&mut tx, &count).await, 0);
        tx.commit().await.unwrap();
        let taken = FetchCounts { run: 2, ..taken };
        assert_eq!(store.writer_reads().await, taken);

        // A write through the connection.
        let mut tx = store.begin_write_reading(both).await.unwrap();
        on_tx!(&mut tx, |conn| {
            sqlx::query(insert)
                .bind("a")
                .execute(&mut *conn)
                .await
                .unwrap();
        });
        assert_eq!(read(&mut tx, &count).await, 1);
        tx.commit().await.unwrap();
        let taken = FetchCounts { run: 3, ..taken };
        assert_eq!(store.writer_reads().await, taken);

        // A write through `run_or_defer`, not deferring.
        let mut tx = store.begin_write_reading(both).await.unwrap();
        let Tx::Sqlite { tx: sqlite } = &mut tx else {
            unreachable!("a SQLite store")
        };
        sqlite
            .run_or_defer(insert, vec![Param::from("b")])
            .await
            .unwrap();
        assert_eq!(read(&mut tx, &count).await, 2);
        tx.commit().await.unwrap();
        let taken = FetchCounts { run: 4, ..taken };
        assert_eq!(store.writer_reads().await, taken);

        store.close().await;
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
