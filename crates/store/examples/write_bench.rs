//! Measures the store's write throughput and latency with concurrent
//! callers, on a fresh database per workload:
//!
//! ```text
//! cargo run --release -p warden-store --example write_bench -- URL CALLERS N [WORKLOADS]
//! ```
//!
//! - `URL`: `sqlite` (a new file in the temp directory), `sqlite://PATH`
//!   (a file that must not exist yet), or a PostgreSQL URL of a database
//!   this user may create databases from (`postgres://postgres@127.0.0.1/postgres`).
//!   The bench creates a database (file) per workload and removes it after.
//! - `CALLERS`: concurrent tasks, each writing and awaiting one write at a
//!   time; `N`: writes per workload, split evenly between them.
//! - `WORKLOADS` (comma-separated, default `audit,reserve,mixed`):
//!   - `audit`: `Store::write(Write::Audit)` of a decision record;
//!   - `reserve`: `Store::write(Write::Reserve)` against four quotas, every
//!     one granted (the costliest case: a row and a record per write); every
//!     write is a fresh allocation (a new name), and all stay live;
//!   - `reserve-budget`: the same plus a daily and a monthly team budget
//!     (high enough to grant everything) with a one-hour reservation, as
//!     the door sends them;
//!   - `reserve-rate`: `reserve-budget` plus a per-user launch rate limit
//!     (high enough to grant everything);
//!   - `mixed`: callers alternate the two, like a door whose every other
//!     decision is an allowed launch;
//!   - `audit-alone`, `reserve-alone`: the same through
//!     `Store::append_audit`/`Store::reserve`, one transaction per write,
//!     for comparison.
//!
//! Each workload first makes 8 untimed writes per caller; on PostgreSQL it
//! then runs `ANALYZE`, as autovacuum does within a minute of a table's
//! first rows (the planner of a never-analyzed table may look up live
//! allocations by the per-team index instead of the unique one, a cold-start
//! artifact that has nothing to do with the store's code).
//!
//! Prints one line per workload: writes/s, latency p50/p99/max, the
//! rate late in the run (`tail`: between the answers at 85% and 95%, when
//! the store has grown the most, so a cost that grows with the number of
//! rows shows there), and the mean batch size of the writer task.

use std::error::Error;
use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use serde_json::json;
use sqlx::{Connection, Executor, PgConnection};
use warden_core::{Door, GpuModel, TeamName, Usd};
use warden_store::{
    AllocationName, AllocationRequest, Limit, ReserveOutcome, Scope, Store, UnixMicros, Write,
    Written,
};

type BoxError = Box<dyn Error + Send + Sync>;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Workload {
    Audit,
    Reserve,
    ReserveBudget,
    ReserveRate,
    Mixed,
    AuditAlone,
    ReserveAlone,
    ReserveBudgetAlone,
}

impl FromStr for Workload {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Ok(match s {
            "audit" => Workload::Audit,
            "reserve" => Workload::Reserve,
            "reserve-budget" => Workload::ReserveBudget,
            "reserve-rate" => Workload::ReserveRate,
            "reserve-budget-alone" => Workload::ReserveBudgetAlone,
            "mixed" => Workload::Mixed,
            "audit-alone" => Workload::AuditAlone,
            "reserve-alone" => Workload::ReserveAlone,
            other => return Err(format!("unknown workload `{other}`")),
        })
    }
}

/// Where the databases go: a fresh one per workload.
enum Target {
    /// A file path to create, or `None` for one in the temp directory.
    Sqlite(Option<String>),
    /// The admin URL to create and drop databases through.
    Postgres(String),
}

/// A database made for one workload, removed by `drop_db`.
struct Db {
    url: String,
    cleanup: Cleanup,
}

enum Cleanup {
    File(String),
    Database { admin_url: String, name: String },
}

impl Target {
    fn parse(url: &str) -> Result<Target, BoxError> {
        if url == "sqlite" {
            return Ok(Target::Sqlite(None));
        }
        if let Some(path) = url
            .strip_prefix("sqlite://")
            .or_else(|| url.strip_prefix("sqlite:"))
        {
            if std::path::Path::new(path).exists() {
                return Err(format!(
                    "`{path}` exists; name a file the bench may create and delete"
                )
                .into());
            }
            return Ok(Target::Sqlite(Some(path.to_owned())));
        }
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            return Ok(Target::Postgres(url.to_owned()));
        }
        Err(format!("`{url}` is neither `sqlite`, `sqlite://PATH` nor a PostgreSQL URL").into())
    }

    async fn create(&self, workload: &str) -> Result<Db, BoxError> {
        let name = format!(
            "warden_bench_{}_{}",
            std::process::id(),
            workload.replace('-', "_")
        );
        match self {
            Target::Sqlite(path) => {
                let path = match path {
                    Some(path) => format!("{path}.{workload}"),
                    None => std::env::temp_dir()
                        .join(format!("{name}.db"))
                        .display()
                        .to_string(),
                };
                Ok(Db {
                    url: format!("sqlite://{path}"),
                    cleanup: Cleanup::File(path),
                })
            }
            Target::Postgres(admin_url) => {
                let mut admin = PgConnection::connect(admin_url).await?;
                admin
                    .execute(format!("CREATE DATABASE \"{name}\"").as_str())
                    .await?;
                admin.close().await?;
                Ok(Db {
                    url: with_database(admin_url, &name),
                    cleanup: Cleanup::Database {
                        admin_url: admin_url.clone(),
                        name,
                    },
                })
            }
        }
    }
}

impl Db {
    async fn drop_db(self) -> Result<(), BoxError> {
        match self.cleanup {
            Cleanup::File(path) => {
                for suffix in ["", "-wal", "-shm"] {
                    let _ = std::fs::remove_file(format!("{path}{suffix}"));
                }
            }
            Cleanup::Database { admin_url, name } => {
                let mut admin = PgConnection::connect(&admin_url).await?;
                admin
                    .execute(format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)").as_str())
                    .await?;
                admin.close().await?;
            }
        }
        Ok(())
    }
}

/// `postgres://u@h:p/admin?x` with the database replaced by `name`.
fn with_database(admin_url: &str, name: &str) -> String {
    let (base, query) = admin_url
        .split_once('?')
        .map_or((admin_url, None), |(b, q)| (b, Some(q)));
    let authority_end = base.find("://").map_or(0, |i| i + 3);
    let root = match base.get(authority_end..).and_then(|rest| rest.find('/')) {
        Some(slash) => base.get(..authority_end + slash).unwrap_or(base),
        None => base,
    };
    match query {
        Some(q) => format!("{root}/{name}?{q}"),
        None => format!("{root}/{name}"),
    }
}

fn now() -> UnixMicros {
    UnixMicros::from_system_time(SystemTime::now())
}

/// A decision record like a door's: ~400 bytes of JSON.
fn decision(caller: usize, k: usize, team: &str) -> serde_json::Value {
    json!({
        "request_id": format!("req-{caller}-{k}"),
        "door": "skypilot",
        "request": "launch",
        "target": format!("sky-{caller}-{k}"),
        "team": team,
        "user": format!("user{}", caller / 8 % 4),
        "at_client_side": false,
        "verdict": "allowed",
        "reasons": [{"rule": "gpu-allowlist", "effect": "allow"}, {"rule": "spot-preferred", "effect": "warn", "message": "use spot instances where possible"}],
        "mutations": [{"rule": "default-autostop", "path": "/resources/autostop", "value": "30m"}],
        "hourly_usd": "24.00",
    })
}

fn reservation(caller: usize, k: usize) -> Result<AllocationRequest, BoxError> {
    let team = format!("team{}", caller % 8);
    let gpus = u32::try_from(1 + (caller + k) % 8)?;
    let model = if k % 2 == 0 { "H100" } else { "A100" };
    Ok(AllocationRequest {
        door: Door::Skypilot,
        context: Some(decision(caller, k, &team)),
        team: TeamName::parse(&team)?,
        user: Some(format!("user{}", caller / 8 % 4)),
        name: AllocationName::parse(&format!("sky-{caller}-{k}"))?,
        gpu_model: Some(GpuModel::parse(model)?),
        gpus,
        hourly: Usd::from_micros(3_000_000 * i64::from(gpus)),
    })
}

/// A policy's worth of quotas, high enough that every launch fits.
fn limits() -> Result<Vec<Limit>, BoxError> {
    Ok(vec![
        Limit::ModelGpus {
            model: GpuModel::parse("H100")?,
            scope: Scope::Team,
            max: 1_000_000,
        },
        Limit::Gpus {
            scope: Scope::Team,
            max: 10_000_000,
        },
        Limit::LiveAllocations {
            scope: Scope::User,
            max: 1_000_000,
        },
        Limit::HourlyCost {
            scope: Scope::Team,
            max: Usd::from_micros(1_000_000_000_000_000),
        },
    ])
}

/// [`limits`] plus a daily and a monthly budget of the team, as the door
/// sends them: periods starting at midnight and on the 1st (UTC), a
/// reservation of one hour of the launch's price. High enough that every
/// launch fits.
fn limits_with_budgets(req: &AllocationRequest, now: UnixMicros) -> Result<Vec<Limit>, BoxError> {
    let mut limits = limits()?;
    for from in [now.start_of_day(), now.start_of_month()] {
        limits.push(Limit::Budget {
            from,
            max: Usd::from_micros(1_000_000_000_000_000),
            reservation: req.hourly,
        });
    }
    Ok(limits)
}

/// Writes per caller before the measured ones.
const WARMUP_PER_CALLER: usize = 8;

/// One write's latency and when it was answered.
type Sample = (Duration, Instant);

/// One caller's writes; returns each write's latency and completion time.
async fn caller(
    store: Store,
    workload: Workload,
    caller: usize,
    writes: std::ops::Range<usize>,
    limits: Arc<Vec<Limit>>,
) -> Result<Vec<Sample>, BoxError> {
    let mut latencies = Vec::with_capacity(writes.len());
    for k in writes {
        let reserve = match workload {
            Workload::Audit | Workload::AuditAlone => false,
            Workload::Reserve
            | Workload::ReserveAlone
            | Workload::ReserveBudget
            | Workload::ReserveRate
            | Workload::ReserveBudgetAlone => true,
            Workload::Mixed => (caller + k) % 2 == 0,
        };
        let team = format!("team{}", caller % 8);
        let started = Instant::now();
        match (workload, reserve) {
            (Workload::AuditAlone, _) => {
                store
                    .append_audit("decision", &decision(caller, k, &team), now())
                    .await?;
            }
            (Workload::ReserveAlone, _) => {
                store
                    .reserve(&reservation(caller, k)?, &limits, now())
                    .await?;
            }
            (Workload::ReserveBudgetAlone, _) => {
                let (req, now) = (reservation(caller, k)?, now());
                let limits = limits_with_budgets(&req, now)?;
                if let ReserveOutcome::Denied(d) = store.reserve(&req, &limits, now).await? {
                    return Err(format!("denied: {d}").into());
                }
            }
            (Workload::ReserveBudget | Workload::ReserveRate, _) => {
                let (request, now) = (reservation(caller, k)?, now());
                let mut limits = limits_with_budgets(&request, now)?;
                if workload == Workload::ReserveRate {
                    limits.push(Limit::Launches {
                        scope: Scope::User,
                        max: 1_000_000,
                        per: Duration::from_secs(1),
                    });
                }
                let write = Write::Reserve { request, limits };
                if let Written::Reserved(ReserveOutcome::Denied(d)) =
                    store.write(write, now).await?
                {
                    return Err(format!("denied: {d}").into());
                }
            }
            (_, false) => {
                let write = Write::Audit {
                    kind: "decision".to_owned(),
                    payload: decision(caller, k, &team),
                };
                store.write(write, now()).await?;
            }
            (_, true) => {
                let write = Write::Reserve {
                    request: reservation(caller, k)?,
                    limits: limits.to_vec(),
                };
                if let Written::Reserved(ReserveOutcome::Denied(d)) =
                    store.write(write, now()).await?
                {
                    return Err(format!("denied: {d}").into());
                }
            }
        }
        latencies.push((started.elapsed(), Instant::now()));
    }
    Ok(latencies)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let len = sorted.len();
    if len == 0 {
        return Duration::ZERO;
    }
    // Nearest rank: the smallest value with at least p of all at or below.
    let rank = ((p * len as f64).ceil() as usize).clamp(1, len);
    sorted.get(rank - 1).copied().unwrap_or_default()
}

async fn run(
    target: &Target,
    workload_name: &str,
    callers: usize,
    n: usize,
) -> Result<(), BoxError> {
    let workload: Workload = workload_name.parse()?;
    let db = target.create(workload_name).await?;
    let result = async {
        let store = Store::connect(&db.url).await?;
        let limits = Arc::new(limits()?);
        let per_caller = n.div_ceil(callers);
        let spawn = |writes: std::ops::Range<usize>| -> Vec<_> {
            (0..callers)
                .map(|c| {
                    tokio::spawn(caller(
                        store.clone(),
                        workload,
                        c,
                        writes.clone(),
                        Arc::clone(&limits),
                    ))
                })
                .collect()
        };
        // Warm up, untimed, then let PostgreSQL's planner see the tables
        // as autovacuum would within a minute of their first rows.
        for task in spawn(0..WARMUP_PER_CALLER) {
            task.await??;
        }
        if let Target::Postgres(_) = target {
            let mut conn = PgConnection::connect(&db.url).await?;
            conn.execute("ANALYZE").await?;
            conn.close().await?;
        }
        let started = Instant::now();
        let tasks = spawn(WARMUP_PER_CALLER..WARMUP_PER_CALLER + per_caller);
        let mut samples = Vec::with_capacity(per_caller * callers);
        for task in tasks {
            samples.extend(task.await??);
        }
        let elapsed = started.elapsed();
        // The rate late in the run, when the store is largest: between the
        // answers at 85% and at 95% (the last few percent are slower as
        // callers run out of writes and batches shrink).
        let mut done: Vec<Instant> = samples.iter().map(|(_, at)| *at).collect();
        done.sort_unstable();
        let (i, j) = (done.len() * 85 / 100, done.len() * 95 / 100);
        let tail = match (done.get(i), done.get(j)) {
            (Some(a), Some(b)) if j > i => {
                (j - i) as f64 / b.duration_since(*a).as_secs_f64().max(1e-9)
            }
            _ => 0.0,
        };
        let mut latencies: Vec<Duration> = samples.iter().map(|(d, _)| *d).collect();
        latencies.sort_unstable();
        let stats = store.write_stats();
        let live = store.list_live(None).await?.len();
        let report = store.verify_audit().await?;
        store.close().await;
        if !report.is_intact() {
            return Err(format!("audit chain broken: {report:?}").into());
        }
        let batch = if stats.batches == 0 {
            "-".to_owned()
        } else {
            format!("{:.1}", stats.writes as f64 / stats.batches as f64)
        };
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        println!(
            "{:<8} {:<20} callers {:>3}  writes {:>6}  {:>7.0} writes/s (tail {:>6.0}/s)  p50 {:>6.2} ms  p99 {:>6.2} ms  max {:>7.2} ms  mean batch {:>5}  live at end {:>6}  (chain intact: {} records)",
            store.backend_name(),
            workload_name,
            callers,
            latencies.len(),
            latencies.len() as f64 / elapsed.as_secs_f64(),
            tail,
            ms(percentile(&latencies, 0.50)),
            ms(percentile(&latencies, 0.99)),
            ms(latencies.last().copied().unwrap_or_default()),
            batch,
            live,
            report.records_checked,
        );
        Ok::<(), BoxError>(())
    }
    .await;
    db.drop_db().await?;
    result
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let usage = "usage: write_bench URL CALLERS N \
                 [audit,reserve,reserve-budget,reserve-rate,mixed,audit-alone,reserve-alone,\
                 reserve-budget-alone]";
    let (Some(url), Some(callers), Some(n)) = (args.first(), args.get(1), args.get(2)) else {
        return Err(usage.into());
    };
    let target = Target::parse(url)?;
    let callers: usize = callers.parse().map_err(|_| usage)?;
    let n: usize = n.parse().map_err(|_| usage)?;
    if callers == 0 {
        return Err(usage.into());
    }
    let workloads = args.get(3).map_or("audit,reserve,mixed", String::as_str);
    for workload in workloads.split(',') {
        run(&target, workload, callers, n).await?;
    }
    Ok(())
}
