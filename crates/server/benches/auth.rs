#![allow(
    clippy::expect_used,
    clippy::panic,
    clippy::print_stdout,
    clippy::indexing_slicing,
    reason = "benchmark program: a broken setup must stop the run; the result is printed"
)]

//! Per-request authentication cost (issue 12): what every key-holding
//! request pays before its handler runs, `auth::key` (header parse, one
//! store read by primary key, a SHA-256 and a constant-time comparison)
//! plus the role review, on SQLite (a temp file) and, when
//! `WARDEN_BENCH_PG` names a database URL, on PostgreSQL. Sequential calls
//! on one runtime thread; prints p50, p90 and p99 per backend.
//!
//!   cargo bench -p warden-server --bench auth
//!   WARDEN_BENCH_PG=postgres://postgres@127.0.0.1:5432/warden_auth_bench cargo bench -p warden-server --bench auth

use std::time::{Duration, Instant};

use axum::http::{header, HeaderMap, HeaderValue};
use warden_core::access::{Resource, Role, Verb};
use warden_core::{Policy, TeamName};
use warden_server::auth::{self, Authenticated};
use warden_store::{NewKey, Store, UnixMicros};

const CALLS: usize = 20_000;
const WARMUP: usize = 2_000;

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

async fn run(name: &str, url: &str) {
    let store = Store::connect(url).await.expect("store");
    let now = UnixMicros::from_system_time(std::time::SystemTime::now());
    let issued = store
        .create_key(
            NewKey {
                team: TeamName::parse("ml").expect("team"),
                user: None,
                name: None,
                expires: None,
                role: Role::Viewer,
            },
            now,
        )
        .await
        .expect("key");
    let policy = Policy::from_yaml("teams:\n  ml: {}\n").expect("policy");
    let team = TeamName::parse("ml").expect("team");
    let mut headers = HeaderMap::new();
    headers.insert(
        header::AUTHORIZATION,
        HeaderValue::from_str(&format!("Bearer {}", issued.secret.expose())).expect("header"),
    );
    let mut times = Vec::with_capacity(CALLS);
    for i in 0..WARMUP + CALLS {
        let started = Instant::now();
        let key = auth::key(&store, &headers, now, "no key")
            .await
            .expect("authenticated");
        let caller = Authenticated::Key(key);
        assert!(
            caller
                .review(&policy, Verb::Read, Resource::Spend, &team)
                .allowed
        );
        if i >= WARMUP {
            times.push(started.elapsed());
        }
    }
    times.sort_unstable();
    println!(
        "| {name} | {CALLS} | {:.1} | {:.1} | {:.1} |",
        percentile(&times, 0.5).as_secs_f64() * 1e6,
        percentile(&times, 0.9).as_secs_f64() * 1e6,
        percentile(&times, 0.99).as_secs_f64() * 1e6,
    );
    store.close().await;
}

fn main() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let dir = std::env::temp_dir().join(format!("warden-auth-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    println!("| backend | calls | p50 µs | p90 µs | p99 µs |");
    println!("|---|---|---|---|---|");
    rt.block_on(run(
        "sqlite",
        &format!("sqlite://{}", dir.join("auth.db").display()),
    ));
    if let Ok(url) = std::env::var("WARDEN_BENCH_PG") {
        rt.block_on(run("postgres", &url));
    }
    let _ = std::fs::remove_dir_all(&dir);
}
