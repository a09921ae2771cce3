//! One fresh database per test, on either backend, and the macro that runs
//! one test body on both.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use sqlx::{Connection, Executor, PgConnection, SqliteConnection};
use warden_store::{Denial, ReserveOutcome, Store};

/// Where the PostgreSQL tests create their databases; `WARDEN_TEST_PG`
/// overrides it. The user must be allowed to create databases.
const DEFAULT_PG_ADMIN: &str = "postgres://postgres@127.0.0.1:5432/postgres";

/// A backend under test.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// A database of its own for one test, removed when dropped, also when the
/// test fails.
pub struct TestDb {
    pub backend: Backend,
    url: String,
    cleanup: Cleanup,
}

enum Cleanup {
    File(PathBuf),
    Database { admin_url: String, name: String },
}

fn unique_name() -> String {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    format!(
        "warden_test_{}_{}_{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed),
        nanos
    )
}

fn pg_admin_url() -> String {
    std::env::var("WARDEN_TEST_PG").unwrap_or_else(|_| DEFAULT_PG_ADMIN.to_owned())
}

/// `postgres://u@h:p/admin?x` with the database replaced by `name`.
fn with_database(admin_url: &str, name: &str) -> String {
    let (base, query) = admin_url
        .split_once('?')
        .map_or((admin_url, None), |(b, q)| (b, Some(q)));
    let authority_end = base.find("://").map_or(0, |i| i + 3);
    let root = match base[authority_end..].find('/') {
        Some(slash) => &base[..authority_end + slash],
        None => base,
    };
    match query {
        Some(q) => format!("{root}/{name}?{q}"),
        None => format!("{root}/{name}"),
    }
}

async fn pg_admin() -> PgConnection {
    let url = pg_admin_url();
    match PgConnection::connect(&url).await {
        Ok(conn) => conn,
        Err(err) => panic!(
            "PostgreSQL at `{url}` is not answering ({err}). The store tests need it: \
             start it with `pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start`, \
             or point WARDEN_TEST_PG at a server where this user may create databases"
        ),
    }
}

impl TestDb {
    /// A fresh, empty database (no migrations applied yet).
    pub async fn new(backend: Backend) -> TestDb {
        let name = unique_name();
        match backend {
            Backend::Sqlite => {
                let path = std::env::temp_dir().join(format!("{name}.db"));
                TestDb {
                    backend,
                    url: format!("sqlite://{}", path.display()),
                    cleanup: Cleanup::File(path),
                }
            }
            Backend::Postgres => {
                let mut admin = pg_admin().await;
                // Concurrent CREATE DATABASE can trip over each other's use
                // of the template; that passes.
                let mut tries = 0;
                loop {
                    match admin
                        .execute(format!("CREATE DATABASE \"{name}\"").as_str())
                        .await
                    {
                        Ok(_) => break,
                        Err(err) if tries < 20 => {
                            eprintln!("retrying CREATE DATABASE: {err}");
                            tries += 1;
                            tokio::time::sleep(Duration::from_millis(100)).await;
                        }
                        Err(err) => panic!("cannot create test database `{name}`: {err}"),
                    }
                }
                let _ = admin.close().await;
                let admin_url = pg_admin_url();
                TestDb {
                    backend,
                    url: with_database(&admin_url, &name),
                    cleanup: Cleanup::Database { admin_url, name },
                }
            }
        }
    }

    /// Connects a store (migrating the database): call it twice for two
    /// independent pools, as two `warden serve` replicas would have.
    pub async fn store(&self) -> Store {
        Store::connect(&self.url).await.unwrap_or_else(|err| {
            panic!("cannot connect to the {:?} test store: {err}", self.backend)
        })
    }

    /// Applies the first `n` embedded migrations only, as an older version
    /// of Warden would have left the database.
    pub async fn migrate_first(&self, n: usize) {
        let dir = match self.backend {
            Backend::Sqlite => "sqlite",
            Backend::Postgres => "postgres",
        };
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("migrations")
            .join(dir);
        let mut migrator = sqlx::migrate::Migrator::new(path).await.unwrap();
        migrator.migrations = migrator.migrations[..n].to_vec().into();
        match self.backend {
            Backend::Sqlite => {
                let options =
                    <sqlx::sqlite::SqliteConnectOptions as std::str::FromStr>::from_str(&self.url)
                        .unwrap()
                        .create_if_missing(true);
                let pool = sqlx::SqlitePool::connect_with(options).await.unwrap();
                migrator.run(&pool).await.unwrap();
                pool.close().await;
            }
            Backend::Postgres => {
                let pool = sqlx::PgPool::connect(&self.url).await.unwrap();
                migrator.run(&pool).await.unwrap();
                pool.close().await;
            }
        }
    }

    /// `live_usage` rows that differ from the live allocations summed from
    /// scratch (either way): 0 when the summary is right.
    pub async fn usage_mismatches(&self) -> i64 {
        self.scalar(
            "SELECT CAST(COUNT(*) AS BIGINT) FROM ( \
               SELECT team, user_name, gpu_model, CAST(SUM(gpus) AS BIGINT) AS gpus, \
                 CAST(COUNT(*) AS BIGINT) AS live, \
                 CAST(SUM(hourly_micros) AS BIGINT) AS hourly \
               FROM allocations WHERE state = 'live' GROUP BY team, user_name, gpu_model) a \
             FULL OUTER JOIN live_usage u \
               ON a.team = u.team AND a.user_name IS NOT DISTINCT FROM u.user_name \
              AND a.gpu_model IS NOT DISTINCT FROM u.gpu_model \
              AND a.gpus = u.gpus AND a.live = u.live AND a.hourly = u.hourly_micros \
             WHERE a.team IS NULL OR u.team IS NULL",
        )
        .await
    }

    /// Runs raw SQL, standing in for someone with direct database access.
    pub async fn exec(&self, sql: &str) {
        match self.backend {
            Backend::Sqlite => {
                let mut conn = SqliteConnection::connect(&self.url).await.unwrap();
                conn.execute(sql).await.unwrap();
                conn.close().await.unwrap();
            }
            Backend::Postgres => {
                let mut conn = PgConnection::connect(&self.url).await.unwrap();
                conn.execute(sql).await.unwrap();
                conn.close().await.unwrap();
            }
        }
    }

    /// The single BIGINT a query returns.
    pub async fn scalar(&self, sql: &str) -> i64 {
        match self.backend {
            Backend::Sqlite => {
                let mut conn = SqliteConnection::connect(&self.url).await.unwrap();
                sqlx::query_scalar(sql).fetch_one(&mut conn).await.unwrap()
            }
            Backend::Postgres => {
                let mut conn = PgConnection::connect(&self.url).await.unwrap();
                sqlx::query_scalar(sql).fetch_one(&mut conn).await.unwrap()
            }
        }
    }

    /// The single text value a query returns.
    pub async fn scalar_text(&self, sql: &str) -> String {
        match self.backend {
            Backend::Sqlite => {
                let mut conn = SqliteConnection::connect(&self.url).await.unwrap();
                sqlx::query_scalar(sql).fetch_one(&mut conn).await.unwrap()
            }
            Backend::Postgres => {
                let mut conn = PgConnection::connect(&self.url).await.unwrap();
                sqlx::query_scalar(sql).fetch_one(&mut conn).await.unwrap()
            }
        }
    }
}

/// A SQL string literal.
pub fn sql_str(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

impl Drop for TestDb {
    fn drop(&mut self) {
        match &self.cleanup {
            Cleanup::File(path) => {
                for suffix in ["", "-wal", "-shm"] {
                    let mut file = path.clone().into_os_string();
                    file.push(suffix);
                    let _ = std::fs::remove_file(file);
                }
            }
            Cleanup::Database { admin_url, name } => {
                // Drop runs inside the test's runtime, which must not block
                // on async work; a thread with its own runtime may.
                let (admin_url, name) = (admin_url.clone(), name.clone());
                let dropper = std::thread::spawn(move || {
                    let rt = tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()?;
                    rt.block_on(async {
                        let mut admin = PgConnection::connect(&admin_url).await?;
                        admin
                            .execute(
                                format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)").as_str(),
                            )
                            .await?;
                        admin.close().await
                    })
                    .map_err(std::io::Error::other)
                });
                match dropper.join() {
                    Ok(Ok(())) => {}
                    Ok(Err(err)) => eprintln!("could not drop a test database: {err}"),
                    Err(_) => eprintln!("could not drop a test database: the thread panicked"),
                }
            }
        }
    }
}

/// Defines each `async fn name(db: &TestDb) { ... }` as a module `name` with
/// two tests, `sqlite` and `postgres`, running the same body on a fresh
/// database of each backend.
macro_rules! on_both_backends {
    ($(
        $(#[doc = $doc:literal])*
        async fn $name:ident($db:ident: &TestDb) $body:block
    )*) => {$(
        $(#[doc = $doc])*
        mod $name {
            #[allow(unused_imports)]
            use super::*;

            async fn body($db: &$crate::support::TestDb) $body

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                let db = $crate::support::TestDb::new($crate::support::Backend::Sqlite).await;
                body(&db).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                let db = $crate::support::TestDb::new($crate::support::Backend::Postgres).await;
                body(&db).await;
            }
        }
    )*};
}

pub(crate) use on_both_backends;

/// A launch of `gpus` H100s by alice of team `ml`, at $3/GPU/hour.
pub fn h100(name: &str, gpus: u32) -> warden_store::AllocationRequest {
    launch("ml", Some("alice"), name, Some("H100"), gpus)
}

/// A SkyPilot launch at $3/GPU/hour.
pub fn launch(
    team: &str,
    user: Option<&str>,
    name: &str,
    model: Option<&str>,
    gpus: u32,
) -> warden_store::AllocationRequest {
    warden_store::AllocationRequest {
        door: warden_core::Door::Skypilot,
        team: warden_core::TeamName::parse(team).unwrap(),
        user: user.map(str::to_owned),
        name: warden_store::AllocationName::parse(name).unwrap(),
        gpu_model: model.map(|m| warden_core::GpuModel::parse(m).unwrap()),
        gpus,
        hourly: warden_core::Usd::from_micros(3_000_000 * i64::from(gpus)),
        context: None,
    }
}

/// An instant `s` seconds after the epoch.
pub fn at(s: i64) -> warden_store::UnixMicros {
    warden_store::UnixMicros::from_micros(s * 1_000_000)
}

/// Polls `futures` in the given order until all are ready and returns their
/// outputs in that order. Each future is first polled before the next one
/// is, so writes are queued in the given order: their arrival order. (Run
/// unconstrained: tokio's cooperative budget would otherwise make a send
/// pause partway through a long list.)
pub async fn join_in_order<F: std::future::Future>(futures: Vec<F>) -> Vec<F::Output> {
    use std::task::Poll;
    let mut futures: Vec<_> = futures.into_iter().map(Box::pin).collect();
    let mut outputs: Vec<Option<F::Output>> = futures.iter().map(|_| None).collect();
    tokio::task::unconstrained(std::future::poll_fn(|cx| {
        let mut pending = false;
        for (future, output) in futures.iter_mut().zip(outputs.iter_mut()) {
            if output.is_none() {
                match future.as_mut().poll(cx) {
                    Poll::Ready(value) => *output = Some(value),
                    Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            Poll::Pending
        } else {
            Poll::Ready(())
        }
    }))
    .await;
    outputs.into_iter().map(Option::unwrap).collect()
}

/// A transaction of another client holding what every store write needs
/// (SQLite's write lock; PostgreSQL's audit head row), so writes wait.
pub enum HeldLock {
    Sqlite(SqliteConnection),
    Postgres(PgConnection),
}

impl TestDb {
    /// Takes the lock every write transaction of the store waits for.
    pub async fn hold_writes(&self) -> HeldLock {
        match self.backend {
            Backend::Sqlite => {
                let mut conn = SqliteConnection::connect(&self.url).await.unwrap();
                conn.execute("BEGIN IMMEDIATE").await.unwrap();
                HeldLock::Sqlite(conn)
            }
            Backend::Postgres => {
                let mut conn = PgConnection::connect(&self.url).await.unwrap();
                conn.execute("BEGIN; SELECT seq FROM audit_head WHERE id = 1 FOR UPDATE")
                    .await
                    .unwrap();
                HeldLock::Postgres(conn)
            }
        }
    }
}

impl HeldLock {
    /// Rolls back, letting the waiting writes in.
    pub async fn release(self) {
        match self {
            HeldLock::Sqlite(mut conn) => {
                conn.execute("ROLLBACK").await.unwrap();
                conn.close().await.unwrap();
            }
            HeldLock::Postgres(mut conn) => {
                conn.execute("ROLLBACK").await.unwrap();
                conn.close().await.unwrap();
            }
        }
    }
}

/// Waits until `store`'s writer has taken `batches` batches in all.
pub async fn until_batches_taken(store: &Store, batches: u64) {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while store.write_stats().batches < batches {
        assert!(
            std::time::Instant::now() < deadline,
            "the writer took no batch within 10 s"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// The id of a granted reservation; fails the test on a denial.
pub fn granted(outcome: ReserveOutcome) -> warden_store::AllocationId {
    match outcome {
        ReserveOutcome::Granted { allocation_id, .. } => allocation_id,
        ReserveOutcome::Denied(denial) => panic!("denied: {denial}"),
    }
}

/// The denial of a reservation; fails the test on a grant.
pub fn denied(outcome: ReserveOutcome) -> Denial {
    match outcome {
        ReserveOutcome::Denied(denial) => denial,
        granted @ ReserveOutcome::Granted { .. } => panic!("granted: {granted:?}"),
    }
}
