//! Issue 11: one decision gate for every door. Every deciding endpoint of
//! every door — SkyPilot `launch`, `exec`, `jobs.launch`, `serve.up`; Vast
//! create and start — through a real `warden serve`, allowed and denied:
//! each request writes exactly one decision line and one decision audit
//! record, and the lines carry the same fields at every door.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::Duration;

use serde_json::{json, Value};

use crate::cli::warden;
use crate::skypilot_client::{Server, TempDir};

const CONFIG: &str = r#"
teams:
  ml:
    users: [root]
    max_gpus_per_launch: 1
default_team: ml
rules:
  - name: no-blocked
    match: {doors: [vast], when: '"blocked" in request.labels'}
    deny: blocked instances may not run
"#;

/// One exchange with `X-Request-Id: id` (and the key); (status, body).
fn exchange(
    addr: &str,
    id: &str,
    method: &str,
    path: &str,
    key: Option<&str>,
    body: &[u8],
) -> (u16, String) {
    let auth = key.map(|k| format!("Bearer {k}"));
    let mut headers = vec![("X-Request-Id", id)];
    if let Some(auth) = &auth {
        headers.push(("Authorization", auth));
    }
    crate::wire::exchange(addr, method, path, &headers, body, Duration::from_secs(20)).unwrap()
}

/// A captured SkyPilot request body with another request name.
fn sky_body(fixture: &str, request_name: &str) -> Vec<u8> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/skypilot-0.14.1")
        .join(fixture);
    let text: String = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let mut body: Value = serde_json::from_str(&text).unwrap();
    body["request_name"] = json!(request_name);
    serde_json::to_vec(&serde_json::to_string(&body).unwrap()).unwrap()
}

#[test]
fn every_deciding_endpoint_writes_one_decision_line_and_one_audit_record() {
    let dir = TempDir::new("warden-gate");
    let config = dir.0.join("warden.yaml");
    let db = dir.0.join("state.db");
    std::fs::write(
        &config,
        format!("storage: sqlite://{}\n{CONFIG}", db.display()),
    )
    .unwrap();
    let cfg = config.to_str().unwrap();
    let (code, key, err) = warden(&["keys", "create", "--config", cfg, "--team", "ml"]);
    assert_eq!(code, 0, "{err}");
    let key = key.trim().to_owned();
    let server = Server::start_with_storage(&config, &format!("sqlite://{}", db.display()));
    let addr = server.addr.clone();

    // (request id, door, expected verdict)
    let mut expected: Vec<(String, &str, &str)> = Vec::new();
    for name in ["launch", "exec", "jobs.launch", "serve.up"] {
        for (fixture, verdict) in [
            ("02_cpu_sky_launch_client.json", "allow"),
            ("01_gpu_h100x8_sky_launch_client.json", "deny"),
        ] {
            let id = format!("sky-{}-{verdict}", name.replace('.', "-"));
            let (status, body) = exchange(
                &addr,
                &id,
                "POST",
                "/skypilot",
                None,
                &sky_body(fixture, name),
            );
            let want = if verdict == "allow" { 200 } else { 400 };
            assert_eq!(status, want, "{id}: {body}");
            expected.push((id, "skypilot", verdict));
        }
    }

    // Vast: an offer the team may rent.
    let (status, body) = exchange(
        &addr,
        "search",
        "POST",
        "/vast/api/v0/bundles/",
        Some(&key),
        b"{}",
    );
    assert_eq!(status, 200, "{body}");
    let offers: Value = serde_json::from_str(&body).unwrap();
    let offer = offers["offers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|o| o["num_gpus"] == 1)
        .expect("a one-GPU offer")["id"]
        .as_u64()
        .unwrap();
    let create = |id: &str, label: &str| {
        let body = json!({"client_id": "me", "image": "pytorch/pytorch", "disk": 10, "label": label, "env": {}});
        exchange(
            &addr,
            id,
            "PUT",
            &format!("/vast/api/v0/asks/{offer}/"),
            Some(&key),
            body.to_string().as_bytes(),
        )
    };
    let (status, body) = create("vast-create-deny", "blocked=yes");
    assert_eq!(status, 403, "{body}");
    expected.push(("vast-create-deny".to_owned(), "vast", "deny"));
    let (status, body) = create("vast-create-allow", "run=1");
    assert_eq!(status, 200, "{body}");
    expected.push(("vast-create-allow".to_owned(), "vast", "allow"));
    let instance = serde_json::from_str::<Value>(&body).unwrap()["new_contract"]
        .as_u64()
        .unwrap();
    let path = format!("/vast/api/v0/instances/{instance}/");
    let put = |id: &str, body: Value| {
        exchange(
            &addr,
            id,
            "PUT",
            &path,
            Some(&key),
            body.to_string().as_bytes(),
        )
    };
    assert_eq!(put("stop-1", json!({"state": "stopped"})).0, 200);
    let (status, body) = put("vast-start-allow", json!({"state": "running"}));
    assert_eq!(status, 200, "{body}");
    expected.push(("vast-start-allow".to_owned(), "vast", "allow"));
    assert_eq!(put("label", json!({"label": "blocked=yes"})).0, 200);
    assert_eq!(put("stop-2", json!({"state": "stopped"})).0, 200);
    let (status, body) = put("vast-start-deny", json!({"state": "running"}));
    assert_eq!(status, 403, "{body}");
    expected.push(("vast-start-deny".to_owned(), "vast", "deny"));

    // The decision lines: one per deciding request, none for the others.
    let wanted: BTreeSet<&str> = expected.iter().map(|(id, _, _)| id.as_str()).collect();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let lines: Vec<Value> = loop {
        let lines: Vec<Value> = server
            .log()
            .lines()
            .filter(|l| l.contains("\"message\":\"decision\""))
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        if lines.len() >= expected.len() || std::time::Instant::now() > deadline {
            break lines;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut per_id: BTreeMap<String, Vec<&Value>> = BTreeMap::new();
    for l in &lines {
        per_id
            .entry(l["request_id"].as_str().unwrap().to_owned())
            .or_default()
            .push(l);
    }
    assert_eq!(
        per_id.keys().map(String::as_str).collect::<BTreeSet<_>>(),
        wanted,
        "decision lines for other requests, or missing ones:\n{}",
        server.log()
    );
    let common = [
        "timestamp",
        "level",
        "message",
        "request_id",
        "door",
        "team",
        "request",
        "verdict",
        "quota_denied",
        "denied",
        "warned",
        "mutated",
        "not_applicable",
        "latency_us",
        "target",
    ];
    for (id, door, verdict) in &expected {
        let found = &per_id[id.as_str()];
        assert_eq!(found.len(), 1, "{id}: {found:?}");
        let line = found[0];
        assert_eq!(line["door"], *door, "{line}");
        assert_eq!(line["verdict"], *verdict, "{line}");
        assert_eq!(line["team"], "ml", "{line}");
        for key in common {
            assert!(line.get(key).is_some(), "{id}: no `{key}` in {line}");
        }
        if *door == "vast" {
            assert!(
                line["key"].is_string() && line["target_name"].is_string(),
                "{line}"
            );
        }
    }

    // The audit log: one record of each decision (a `decision`, or the
    // `allocation.granted` / `allocation.denied` that carries it with the
    // reservation in the same transaction).
    drop(server);
    let (code, out, err) = warden(&["audit", "export", "--config", cfg]);
    assert_eq!(code, 0, "{err}");
    let mut records: BTreeMap<String, usize> = BTreeMap::new();
    for r in out
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
    {
        let p = &r["payload"];
        let decision = match r["kind"].as_str().unwrap() {
            "decision" => p,
            "allocation.granted" | "allocation.denied" => &p["context"],
            _ => continue,
        };
        let id = decision["request_id"].as_str().unwrap_or_default();
        *records.entry(id.to_owned()).or_default() += 1;
    }
    assert_eq!(
        records.keys().map(String::as_str).collect::<BTreeSet<_>>(),
        wanted,
        "{out}"
    );
    assert!(records.values().all(|&n| n == 1), "{records:?}");
}
