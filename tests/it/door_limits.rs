//! Bounds on what the SkyPilot door accepts, over a real socket to a real
//! `warden serve`: oversized bodies get their 413 (not a reset), nesting
//! past the documented depth is a 400 in every parser of outside input,
//! unknown request names are refused, and a denied request's decision line
//! lists no mutations.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::time::Duration;

use crate::skypilot_client::{Server, TempDir};

const POLICY: &str = "storage: none
default_team: t
teams:
  t: {max_gpus_per_launch: 8}
rules:
  - name: spot
    use_spot: true
  - name: only-named
    match: {requests: [my.custom.request]}
    add_labels: {custom: 'yes'}
";

fn server() -> (Server, TempDir) {
    let dir = TempDir::new("warden-door-limits");
    let config = dir.0.join("warden.yaml");
    std::fs::write(&config, POLICY).expect("write config");
    (Server::start_with_storage(&config, "none"), dir)
}

/// Sends `body` whole on a fresh connection, then reads the whole answer.
fn exchange(addr: &str, body: &[u8]) -> (u16, String) {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(60)))
        .expect("timeout");
    let head = format!(
        "POST /skypilot HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nConnection: close\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes()).expect("write head");
    // The server may answer before reading everything; a write error here
    // is what the 413 fix prevents, so it is a failure too.
    s.write_all(body)
        .expect("write body: the server closed before reading it");
    let mut answer = Vec::new();
    s.read_to_end(&mut answer).expect("read the answer");
    let text = String::from_utf8_lossy(&answer).into_owned();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (status, text)
}

fn body(task: &str, request_name: &str) -> Vec<u8> {
    let inner = serde_json::json!({
        "task": task, "skypilot_config": "", "request_name": request_name,
        "at_client_side": true, "user": "",
    });
    serde_json::to_vec(&inner.to_string()).expect("json")
}

#[test]
fn every_oversized_body_gets_its_413() {
    let (server, _dir) = server();
    for size in [2 << 20, 8 << 20, 32 << 20] {
        for _ in 0..5 {
            let (status, text) = exchange(&server.addr, &vec![b' '; size]);
            assert_eq!(status, 413, "{size} bytes: {text}");
            assert!(text.contains("larger than the 1 MiB limit"), "{text}");
        }
    }
    // A body within the limit still goes through on its own connection.
    let (status, text) = exchange(
        &server.addr,
        &body("resources: {accelerators: T4:1}\n", "launch"),
    );
    assert_eq!(status, 200, "{text}");
}

#[test]
fn nesting_past_the_limit_is_a_400_in_every_parser() {
    let (server, _dir) = server();
    let n = 100_000;
    let deep_flow = format!("resources: {}{}\n", "[".repeat(n), "]".repeat(n));
    let deep_map = format!("resources: {}x{}\n", "{a: ".repeat(n), "}".repeat(n));
    let mut deep_block = String::from("a:\n");
    for i in 1..80 {
        deep_block.push_str(&" ".repeat(i));
        deep_block.push_str("- \n");
    }
    let deep_seq_block = (0..80)
        .map(|i| format!("{}- x\n", "  ".repeat(i)))
        .collect::<String>();
    for (what, task) in [
        ("flow lists", deep_flow),
        ("flow mappings", deep_map),
        ("block", deep_block),
        ("block sequences", deep_seq_block),
    ] {
        let (status, text) = exchange(&server.addr, &body(&task, "launch"));
        assert!((400..500).contains(&status), "{what}: {status} {text}");
        assert!(text.contains("`task`"), "{what}: {text}");
    }
    // JSON: the outer layer (a plain object) and the inner one (a string
    // literal holding the object).
    let deep_json = format!("{}{}", "[".repeat(n), "]".repeat(n));
    let outer = format!(r#"{{"task": "a: 1\n", "extra": {deep_json}}}"#);
    let (status, text) = exchange(&server.addr, outer.as_bytes());
    assert_eq!(status, 400, "{text}");
    assert!(text.contains("nests deeper than 64"), "{text}");
    let inner = serde_json::to_vec(&outer).expect("json");
    let (status, text) = exchange(&server.addr, &inner);
    assert_eq!(status, 400, "{text}");
    assert!(text.contains("nests deeper than 64"), "{text}");
    // Aliases expanding past the node bound (a "billion laughs").
    let mut laughs = String::from("a: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
    for i in 1..9 {
        let refs = vec![format!("*a{}", i - 1); 10].join(", ");
        laughs.push_str(&format!("b{i}: &a{i} [{refs}]\n"));
    }
    let (status, text) = exchange(&server.addr, &body(&laughs, "launch"));
    assert_eq!(status, 400, "{text}");
    assert!(text.contains("more than"), "{text}");
}

#[test]
fn unknown_request_names_are_refused_unless_a_rule_names_them() {
    let (server, _dir) = server();
    let (status, text) = exchange(&server.addr, &body("name: x\n", "launch.everything"));
    assert_eq!(status, 400, "{text}");
    assert!(
        text.contains("`launch.everything` is not a request SkyPilot sends"),
        "{text}"
    );
    let (status, text) = exchange(&server.addr, &body("name: x\n", "my.custom.request"));
    assert_eq!(status, 200, "{text}");
    assert!(text.contains("custom"), "{text}");
}

#[test]
fn a_denied_request_logs_no_mutations() {
    let (server, _dir) = server();
    let (status, text) = exchange(
        &server.addr,
        &body("resources: {accelerators: H100:16}\n", "launch"),
    );
    assert_eq!(status, 400, "{text}");
    let (status, text) = exchange(
        &server.addr,
        &body("resources: {accelerators: H100:1}\n", "launch"),
    );
    assert_eq!(status, 200, "{text}");
    // Decision lines are written out within a few ms.
    let mut lines = Vec::new();
    for _ in 0..100 {
        lines = server
            .log()
            .lines()
            .filter(|l| l.contains("\"message\":\"decision\""))
            .map(str::to_owned)
            .collect();
        if lines.len() >= 2 {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let parsed: Vec<serde_json::Value> = lines
        .iter()
        .map(|l| serde_json::from_str(l).expect("json line"))
        .collect();
    let denied = parsed
        .iter()
        .find(|l| l["verdict"] == "deny")
        .expect("a deny line");
    assert_eq!(denied["mutated"], "", "{denied}");
    let allowed = parsed
        .iter()
        .find(|l| l["verdict"] == "allow")
        .expect("an allow line");
    assert_eq!(allowed["mutated"], "spot", "{allowed}");
}

#[test]
fn the_config_loader_refuses_deep_nesting() {
    let dir = TempDir::new("warden-deep-config");
    let path = dir.0.join("deep.yaml");
    std::fs::write(
        &path,
        format!("teams: {}{}\n", "[".repeat(100_000), "]".repeat(100_000)),
    )
    .expect("write");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_warden"))
        .args(["check", "--config"])
        .arg(Path::new(&path))
        .output()
        .expect("run warden check");
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(
        text.contains("deep") || text.contains("nest") || text.contains("recursion"),
        "{text}"
    );
}
