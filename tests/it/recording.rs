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
        "time_zone: Asia/Kolkata\nteams:\n  ml:\n    users: [root]\n    budgets: {daily_usd: 50, monthly_usd: 1000, reservation_hours: 1}\n",
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
        text.contains("the daily budget resets at ")
            && text.contains("T18:30:00.000000Z (midnight Asia/Kolkata)"),
        "{text}"
    );
    // A re-launch of a running cluster reserves nothing new.
    assert_eq!(post(&server.addr, &gpu_launch_body("g1")).0, 200);
}

/// A minimal HTTP server for webhook tests: answers each POST with the next
/// status of `statuses` (then 200) and hands the bodies to the test.
fn webhook_receiver(statuses: Vec<u16>) -> (String, std::sync::mpsc::Receiver<String>) {
    use std::io::{BufRead, BufReader, Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut statuses = statuses.into_iter();
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut len = 0;
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 {
                    break;
                }
                if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                    len = v.trim().parse().unwrap();
                }
                if line == "\r\n" {
                    break;
                }
            }
            let mut body = vec![0; len];
            reader.read_exact(&mut body).unwrap();
            let status = statuses.next().unwrap_or(200);
            let _ = write!(
                stream,
                "HTTP/1.1 {status} X\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
            );
            if status == 200 && tx.send(String::from_utf8(body).unwrap()).is_err() {
                return;
            }
        }
    });
    (url, rx)
}

/// A soft budget never denies; as running clusters spend, each alert
/// threshold fires once: a log line, a `budget.alert` audit record and a
/// webhook POST (retried after a failure).
#[test]
fn soft_budget_alerts_fire_once_per_threshold_to_the_webhook_and_the_audit_chain() {
    let dir = TempDir::new("warden-alerts");
    let config = dir.0.join("warden.yaml");
    let db = dir.0.join("state.db");
    let (url, bodies) = webhook_receiver(vec![500]);
    // Two H100:8 clusters spend $48/h: the $0.01 budget is reached in
    // under a second; the watch checks every second.
    std::fs::write(
        &config,
        format!(
            "storage: sqlite://{}\nbudget_alerts:\n  webhook_url: {url}\n  check_interval_seconds: 1\n  webhook_attempts: 3\nteams:\n  ml:\n    users: [root]\n    budgets: {{daily_usd: 0.01, mode: soft, alert_percent: [50, 100]}}\n",
            db.display()
        ),
    )
    .unwrap();
    let cfg = config.to_str().unwrap();
    let server = Server::start_with_storage(&config, &format!("sqlite://{}", db.display()));
    assert_eq!(post(&server.addr, &gpu_launch_body("g1")).0, 200);
    assert_eq!(
        post(&server.addr, &gpu_launch_body("g2")).0,
        200,
        "a soft budget does not deny"
    );
    let wait = std::time::Duration::from_secs(60);
    let mut got: Vec<serde_json::Value> = (0..2)
        .map(|_| serde_json::from_str(&bodies.recv_timeout(wait).unwrap()).unwrap())
        .collect();
    got.sort_by_key(|b| b["percent"].as_u64());
    for (body, percent) in got.iter().zip([50, 100]) {
        assert_eq!(body["kind"], "budget.alert");
        assert_eq!(body["team"], "ml");
        assert_eq!(body["period"], "day");
        assert_eq!(body["percent"], percent);
        assert_eq!(body["budget_usd"], "$0.01");
        assert!(
            body["text"].as_str().unwrap().contains("daily budget"),
            "{body}"
        );
    }
    // Checks go on every second; no threshold fires twice.
    std::thread::sleep(std::time::Duration::from_secs(3));
    assert!(bodies.try_recv().is_err(), "an alert was sent twice");
    drop(server);
    let (code, out, err) = warden(&["audit", "export", "--config", cfg, "--format", "jsonl"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(out.matches("\"kind\":\"budget.alert\"").count(), 2, "{out}");
}

/// `quotas.per_user` counts each user's live usage on its own.
#[test]
fn per_user_quotas_count_the_users_own_gpus() {
    let dir = TempDir::new("warden-per-user");
    let config = dir.0.join("warden.yaml");
    let db = dir.0.join("state.db");
    std::fs::write(
        &config,
        "teams:\n  ml:\n    users: [root]\n    quotas:\n      max_gpus: 100\n      per_user: {max_gpus: 8, max_live_hourly_usd: 1000}\n",
    )
    .unwrap();
    let server = Server::start_with_storage(&config, &format!("sqlite://{}", db.display()));
    assert_eq!(post(&server.addr, &gpu_launch_body("u1")).0, 200);
    let (status, text) = post(&server.addr, &gpu_launch_body("u2"));
    assert_eq!(status, 400, "{text}");
    assert!(
        text.contains("[team.quotas]") && text.contains("user `root`") && text.contains('8'),
        "{text}"
    );
}

/// `quotas.max_launches_per_user` is a token bucket: a burst up to the
/// limit, then a denial that says when the next launch is possible.
#[test]
fn launch_rate_denies_the_burst_beyond_the_limit_and_says_when_to_retry() {
    let dir = TempDir::new("warden-rate");
    let config = dir.0.join("warden.yaml");
    let db = dir.0.join("state.db");
    std::fs::write(
        &config,
        "teams:\n  ml:\n    users: [root]\n    quotas: {max_launches_per_user: 2, launch_window_minutes: 60}\n",
    )
    .unwrap();
    let server = Server::start_with_storage(&config, &format!("sqlite://{}", db.display()));
    assert_eq!(post(&server.addr, &launch_body("r1")).0, 200);
    assert_eq!(post(&server.addr, &launch_body("r2")).0, 200);
    let (status, text) = post(&server.addr, &launch_body("r3"));
    assert_eq!(status, 400, "{text}");
    assert!(
        text.contains("[team.quotas] launch rate exceeded")
            && text.contains("next launch possible at ")
            && text.contains("user `root`"),
        "{text}"
    );
}
