//! Two `warden serve` processes on one PostgreSQL: 200 concurrent launches
//! against a quota of 8 live clusters grant exactly 8.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use crate::cli::{post, warden};
use crate::recording::launch_body_with;
use crate::skypilot_client::{Server, TempDir};

fn admin_url() -> String {
    std::env::var("WARDEN_TEST_PG")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned())
}

/// A fresh database, dropped at the end (also when the test fails).
pub(crate) struct Database {
    name: String,
    pub(crate) url: String,
}

impl Database {
    pub(crate) async fn create() -> Database {
        let admin = admin_url();
        let pool = sqlx::PgPool::connect(&admin).await.unwrap_or_else(|e| {
            panic!("PostgreSQL is not answering at {admin} ({e}); run scripts/ensure-postgres.sh or set WARDEN_TEST_PG")
        });
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos();
        let name = format!("warden_it_{}_{nanos}", std::process::id());
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&pool)
            .await
            .unwrap();
        pool.close().await;
        let (base, _) = admin.rsplit_once('/').unwrap();
        Database {
            url: format!("{base}/{name}"),
            name,
        }
    }
}

impl Drop for Database {
    fn drop(&mut self) {
        let admin = admin_url();
        let name = self.name.clone();
        // A fresh runtime on its own thread: drop may run inside a test's runtime.
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
                if let Ok(pool) = sqlx::PgPool::connect(&admin).await {
                    let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                        .execute(&pool)
                        .await;
                    pool.close().await;
                }
            });
        })
        .join();
    }
}

#[test]
fn two_replicas_on_one_postgres_grant_exactly_the_quota() {
    let db = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(Database::create());
    let dir = TempDir::new("warden-replicas");
    two_replicas_grant_exactly_the_quota(&dir, &db.url);
}

/// Two processes on one SQLite file are supported (README, "The store"):
/// SQLite's own file lock serializes their write transactions.
#[test]
fn two_processes_on_one_sqlite_file_grant_exactly_the_quota() {
    let dir = TempDir::new("warden-replicas-sqlite");
    let url = format!("sqlite://{}", dir.0.join("shared.db").display());
    two_replicas_grant_exactly_the_quota(&dir, &url);
}

fn two_replicas_grant_exactly_the_quota(dir: &TempDir, url: &str) {
    let config = dir.0.join("warden.yaml");
    std::fs::write(
        &config,
        format!("storage: {url}\nteams:\n  ml:\n    users: [root]\n    quotas: {{max_live: 8}}\n"),
    )
    .unwrap();
    let a = Server::start_with_storage(&config, url);
    let b = Server::start_with_storage(&config, url);
    let addrs = Arc::new([a.addr.clone(), b.addr.clone()]);

    let (granted, denied) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let threads: Vec<_> = (0..50)
        .map(|t| {
            let (addrs, granted, denied) = (
                Arc::clone(&addrs),
                Arc::clone(&granted),
                Arc::clone(&denied),
            );
            std::thread::spawn(move || {
                for i in 0..4 {
                    let n = t * 4 + i;
                    let (status, text) =
                        post(&addrs[n % 2], &launch_body_with(&format!("c{n}"), None));
                    match status {
                        200 => granted.fetch_add(1, Ordering::SeqCst),
                        400 if text.contains("[team.quotas]") => {
                            denied.fetch_add(1, Ordering::SeqCst)
                        }
                        other => panic!("unexpected answer {other}: {text}"),
                    };
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    assert_eq!(
        granted.load(Ordering::SeqCst),
        8,
        "exactly the quota is granted"
    );
    assert_eq!(denied.load(Ordering::SeqCst), 192);

    let cfg = config.to_str().unwrap();
    let (code, out, err) = warden(&["allocations", "list", "--config", cfg]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("8 live allocation(s)"), "{out}");
    let (code, out, err) = warden(&["audit", "verify", "--config", cfg]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("200 records checked"), "{out}");
    // Every record has its own request id, across both replicas (they
    // booted within the same second or two).
    let (code, out, err) = warden(&["audit", "export", "--config", cfg]);
    assert_eq!(code, 0, "{err}");
    let ids: std::collections::BTreeSet<String> = out
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            v["payload"]["context"]["request_id"]
                .as_str()
                .expect("a request id")
                .to_owned()
        })
        .collect();
    assert_eq!(ids.len(), 200, "request ids repeat across replicas");
    drop((a, b));
}
