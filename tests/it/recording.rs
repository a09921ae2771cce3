//! Decisions recorded in the store by a running `warden serve`: quotas on
//! live launches, idempotent re-launch, and nothing lost on SIGKILL.

use std::path::Path;

use crate::cli::{post, warden};
use crate::skypilot_client::{Server, TempDir};

/// Fixture 07 (the API server's worker launching a CPU cluster) with another
/// cluster name and, optionally, another task.
pub(crate) fn launch_body_with(cluster: &str, task: Option<&str>) -> Vec<u8> {
    let raw = std::fs::read(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/skypilot-0.14.1/07_launch_server_worker.json"),
    )
    .unwrap();
    let inner: String = serde_json::from_slice(&raw).unwrap();
    let mut v: serde_json::Value = serde_json::from_str(&inner).unwrap();
    v["request_options"]["cluster_name"] = serde_json::Value::String(cluster.to_owned());
    if let Some(task) = task {
        v["task"] = serde_json::Value::String(task.to_owned());
    }
    serde_json::to_vec(&v.to_string()).unwrap()
}

fn launch_body(cluster: &str) -> Vec<u8> {
    launch_body_with(cluster, None)
}

#[test]
fn launches_reserve_quota_relaunch_counts_once_and_kill_loses_nothing() {
    let dir = TempDir::new("warden-recording");
    let config = dir.0.join("warden.yaml");
    let db = dir.0.join("state.db");
    std::fs::write(
        &config,
        format!(
            "storage: sqlite://{}\nteams:\n  ml:\n    users: [root]\n    quotas: {{max_live: 2}}\n",
            db.display()
        ),
    )
    .unwrap();
    let cfg = config.to_str().unwrap();
    let storage = format!("sqlite://{}", db.display());
    let mut server = Server::start_with_storage(&config, &storage);

    assert_eq!(post(&server.addr, &launch_body("c1")).0, 200);
    assert_eq!(
        post(&server.addr, &launch_body("c1")).0,
        200,
        "a re-launch counts once"
    );
    assert_eq!(post(&server.addr, &launch_body("c2")).0, 200);
    let (status, text) = post(&server.addr, &launch_body("c3"));
    assert_eq!(status, 400, "{text}");
    assert!(
        text.contains("[team.quotas]") && text.contains("teams.ml.quotas"),
        "{text}"
    );

    // Client-side and validate requests are audited but reserve nothing.
    let client =
        std::fs::read(Path::new(env!("CARGO_MANIFEST_DIR")).join(
            "tests/fixtures/skypilot-0.14.1/05_multinode_validate_server_side_with_user.json",
        ))
        .unwrap();
    for _ in 0..5 {
        assert_eq!(post(&server.addr, &client).0, 200);
    }
    // Every answered request is in the chain before the answer: kill -9 now.
    let answered = 9;
    server.child.kill().unwrap();
    server.child.wait().unwrap();

    let (code, out, err) = warden(&["audit", "verify", "--config", cfg]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains(&format!("{answered} records checked")),
        "{out}"
    );
    let (_, out, _) = warden(&["audit", "export", "--config", cfg]);
    let records: Vec<serde_json::Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let kinds: Vec<&str> = records
        .iter()
        .map(|r| r["kind"].as_str().unwrap())
        .collect();
    assert_eq!(
        kinds.iter().filter(|k| **k == "decision").count(),
        5,
        "{kinds:?}"
    );
    assert_eq!(records.len(), answered, "{kinds:?}");
    let ids: std::collections::HashSet<String> = records
        .iter()
        .filter_map(|r| {
            let p = &r["payload"];
            p.get("request_id")
                .or_else(|| p.get("context").and_then(|c| c.get("request_id")))
                .and_then(|v| v.as_str())
                .map(str::to_owned)
        })
        .collect();
    assert_eq!(
        ids.len(),
        answered,
        "each answered request is recorded once: {out}"
    );
    assert!(
        !out.contains("echo hello"),
        "task text never enters the audit log"
    );

    let (code, out, _) = warden(&["allocations", "list", "--config", cfg]);
    assert_eq!(code, 0);
    assert!(
        out.contains("2 live allocation(s)") && out.contains(" c1 ") && out.contains(" c2 "),
        "{out}"
    );
}

/// A server-side launch of `cluster` asking for 8 H100 on demand ($24/hour
/// at the built-in price).
fn gpu_launch_body(cluster: &str) -> Vec<u8> {
    launch_body_with(
        cluster,
        Some("name: train\nresources:\n  accelerators: H100:8\n"),
    )
}

#[test]
fn a_daily_budget_denies_the_launch_that_would_exceed_it_and_says_when_it_resets() {
    let dir = TempDir::new("warden-budget");
    let config = dir.0.join("warden.yaml");
    let db = dir.0.join("state.db");
    std::fs::write(
        &config,
        "teams:\n  ml:\n    users: [root]\n    budgets: {daily_usd: 50, monthly_usd: 1000, reservation_hours: 1}\n",
    )
    .unwrap();
    let server = Server::start_with_storage(&config, &format!("sqlite://{}", db.display()));
    assert_eq!(post(&server.addr, &gpu_launch_body("g1")).0, 200);
    assert_eq!(post(&server.addr, &gpu_launch_body("g2")).0, 200);
    let (status, text) = post(&server.addr, &gpu_launch_body("g3"));
    assert_eq!(status, 400, "{text}");
    assert!(
        text.contains("[team.budgets] budget exceeded: budget $50.00"),
        "{text}"
    );
    assert!(
        text.contains("$48.00 spent or held") && text.contains("this launch reserves $24.00"),
        "{text}"
    );
    assert!(
        text.contains("the daily budget resets at ") && text.contains("T00:00:00.000000Z"),
        "{text}"
    );
    // A re-launch of a running cluster reserves nothing new.
    assert_eq!(post(&server.addr, &gpu_launch_body("g1")).0, 200);
}
