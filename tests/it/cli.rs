//! The `warden` binary: check, test, decide, and serve's reload/shutdown.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::skypilot_client::{Server, TempDir};

/// Runs the `warden` binary in the repository root: exit code, stdout, stderr.
pub(crate) fn warden(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_warden"))
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).to_string(),
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}

#[test]
fn check_accepts_the_example_and_names_every_problem() {
    let (code, out, _) = warden(&["check", "--config", "examples/warden.yaml"]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("ok (3 teams"), "{out}");

    let dir = TempDir::new("warden-check");
    let bad = dir.0.join("bad.yaml");
    std::fs::write(&bad, "teams:\n  ml: {users: [a]}\nrules:\n  - name: x\n    match: {teams: [nope], when: 'request.gpus >'}\n    use_spot: true\n").unwrap();
    let (code, _, err) = warden(&["check", "--config", bad.to_str().unwrap()]);
    assert_eq!(code, 1);
    assert!(
        err.contains("bad.yaml: rules[0] (`x`).match.teams[0]: team `nope` is not defined"),
        "{err}"
    );
    assert!(
        err.contains("bad.yaml: rules[0] (`x`).match.when: CEL syntax error"),
        "{err}"
    );

    std::fs::write(&bad, "rules:\n  - name: x\n    deny: d\n    mach: {}\n").unwrap();
    let (code, _, err) = warden(&["check", "--config", bad.to_str().unwrap()]);
    assert_eq!(code, 1);
    assert!(
        err.contains("rules[0]") && err.contains("unknown field `mach`"),
        "{err}"
    );
}

#[test]
fn check_names_every_problem_of_a_broken_file_with_its_line() {
    let dir = TempDir::new("warden-check-all");
    let bad = dir.0.join("bad.yaml");
    let huge = "x".repeat(2_000_000);
    std::fs::write(
        &bad,
        format!("storage: none\nteams:\n  ml:\n    quotas: {{max_gpus: -3}}\n  cv:\n    users: {huge}\n  ok: {{}}\nrules:\n  - name: r\n    mach: {{}}\nextra: 1\n"),
    )
    .unwrap();
    let (code, _, err) = warden(&["check", "--config", bad.to_str().unwrap()]);
    assert_eq!(code, 1);
    for want in [
        "bad.yaml: line 4: teams.ml.quotas.max_gpus: ",
        "bad.yaml: line 6: teams.cv.users: ",
        "unknown field `mach`",
        "bad.yaml: line 11: extra: unknown key `extra`",
    ] {
        assert!(err.contains(want), "no {want:?} in:\n{err}");
    }
    // The path once per line, and the 2 MB value quoted short.
    assert!(!err.contains("teams.ml.quotas.max_gpus: teams.ml"), "{err}");
    assert!(err.len() < 4000, "{} bytes of errors", err.len());
    assert!(err.contains("2000000 bytes in all"), "{err}");
}

#[test]
fn check_reports_secret_files_others_can_read() {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = TempDir::new("warden-check-secrets");
    let key = dir.0.join("vast.key");
    std::fs::write(&key, "0123456789abcdef0123456789abcdef\n").unwrap();
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let token = dir.0.join("sky.token");
    std::fs::write(&token, "sky_0123456789abcdef\n").unwrap();
    std::fs::set_permissions(&token, std::fs::Permissions::from_mode(0o640)).unwrap();
    let config = dir.0.join("warden.yaml");
    std::fs::write(
        &config,
        "teams: {ml: {}}\nvast: {api_key_file: vast.key}\nskypilot_api: {url: 'http://127.0.0.1:1', token_file: sky.token}\n",
    )
    .unwrap();
    let cfg = config.to_str().unwrap();
    let (code, out, err) = warden(&["check", "--config", cfg]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(
        err.contains("vast.api_key_file: ")
            && err.contains(&format!("chmod 600 {}", key.display())),
        "{err}"
    );
    assert!(err.contains("skypilot_api.token_file: "), "{err}");
    assert!(
        !err.contains("0123456789abcdef"),
        "the key is never shown: {err}"
    );
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    std::fs::set_permissions(&token, std::fs::Permissions::from_mode(0o600)).unwrap();
    let (code, out, err) = warden(&["check", "--config", cfg]);
    assert_eq!(code, 0, "{out}{err}");
    std::fs::remove_file(&key).unwrap();
    let (code, _, err) = warden(&["check", "--config", cfg]);
    assert_eq!(code, 1);
    assert!(err.contains("vast.api_key_file: "), "{err}");
}

#[test]
fn test_command_exits_by_outcome_and_shows_a_diff() {
    let (code, out, _) = warden(&["test", "tests/cases"]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains(" passed, 0 failed"), "{out}");

    let dir = TempDir::new("warden-test-cmd");
    let cases = dir.0.join("cases.yaml");
    std::fs::write(
        &cases,
        "cases:\n  - note: expects allow\n    request: {user: alice, task: {num_nodes: 9}}\n    want: {verdict: allow}\n",
    )
    .unwrap();
    let (code, out, _) = warden(&[
        "test",
        "--config",
        "examples/warden.yaml",
        cases.to_str().unwrap(),
    ]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("FAIL") && out.contains("verdict: want allow, got deny"),
        "{out}"
    );
    assert!(out.contains("team.max_nodes"), "{out}");
    assert!(out.contains("0 passed, 1 failed"), "{out}");
}

#[test]
fn decide_prints_the_decision_and_mutated_documents() {
    let (code, out, err) = warden(&[
        "decide",
        "--config",
        "tests/client/skypilot-compat.yaml",
        "tests/fixtures/skypilot-0.14.1/07_launch_server_worker.json",
    ]);
    assert_eq!(code, 0, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["status"], 200);
    assert_eq!(v["decision"]["team"], "ml");
    assert_eq!(v["task"]["resources"]["labels"]["managed-by"], "warden");
    assert_eq!(
        v["skypilot_config"]["kubernetes"]["custom_metadata"]["labels"]["app"],
        "skypilot"
    );
}

pub(crate) fn post(addr: &str, body: &[u8]) -> (u16, String) {
    crate::wire::exchange(
        addr,
        "POST",
        "/skypilot",
        &[],
        body,
        Duration::from_secs(10),
    )
    .unwrap()
}

fn wait_for_log(server: &Server, needle: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let log = server.log();
        if log.contains(needle) {
            return log;
        }
        assert!(
            Instant::now() < deadline,
            "no {needle:?} in the log:\n{log}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn signal(server: &Server, sig: &str) {
    let ok = Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(server.child.id().to_string())
        .status()
        .unwrap();
    assert!(ok.success());
}

#[test]
fn serve_reloads_on_sighup_keeps_old_policy_on_error_and_stops_on_sigterm() {
    let dir = TempDir::new("warden-serve");
    let config = dir.0.join("warden.yaml");
    std::fs::write(&config, "default_team: t\nteams: {t: {}}\n").unwrap();
    let mut server = Server::start(&config);
    let body = std::fs::read(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/skypilot-0.14.1/02_cpu_sky_launch_client.json"),
    )
    .unwrap();

    assert_eq!(post(&server.addr, &body).0, 200);
    let log = wait_for_log(&server, "\"verdict\":\"allow\"");
    assert!(
        log.contains("\"request\":\"launch\"") && log.contains("\"latency_us\""),
        "{log}"
    );

    std::fs::write(&config, "default_team: t\nteams: {t: {}}\nrules:\n  - {name: freeze, deny: frozen for maintenance}\n").unwrap();
    signal(&server, "HUP");
    wait_for_log(&server, "config reloaded");
    let (status, text) = post(&server.addr, &body);
    assert_eq!(status, 400);
    assert!(text.contains("[freeze] frozen for maintenance"), "{text}");

    std::fs::write(&config, "teams: [oops\n").unwrap();
    signal(&server, "HUP");
    let log = wait_for_log(&server, "config reload failed");
    assert!(
        log.contains("keeping the previous policy") && log.contains("warden.yaml"),
        "{log}"
    );
    assert_eq!(
        post(&server.addr, &body).0,
        400,
        "the previous policy stays in force"
    );

    signal(&server, "TERM");
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(s) = server.child.try_wait().unwrap() {
            break s;
        }
        assert!(
            Instant::now() < deadline,
            "warden did not exit after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "{status}");
    wait_for_log(&server, "\"stopped\"");
}

#[test]
fn decision_lines_keep_their_shape_and_follow_warden_log() {
    let dir = TempDir::new("warden-log");
    let config = dir.0.join("warden.yaml");
    std::fs::write(&config, "default_team: t\nteams: {t: {}}\n").unwrap();
    let body = std::fs::read(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/skypilot-0.14.1/02_cpu_sky_launch_client.json"),
    )
    .unwrap();

    // The default filter: one decision line, keys in tracing's order.
    let server = Server::start_with_env(&config, "none", &[]);
    assert_eq!(post(&server.addr, &body).0, 200);
    let log = wait_for_log(&server, "\"message\":\"decision\"");
    let line = log
        .lines()
        .find(|l| l.contains("\"message\":\"decision\""))
        .unwrap();
    let v: serde_json::Value = serde_json::from_str(line).unwrap();
    assert_eq!(v["team"], "t");
    assert_eq!(v["quota_denied"], false);
    assert!(v["latency_us"].is_u64(), "{line}");
    assert!(v.get("user").is_none(), "no user, no key: {line}");
    let keys = [
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
        "latency_us",
        "target",
    ];
    let at: Vec<usize> = keys
        .iter()
        .map(|k| line.find(&format!("\"{k}\":")).unwrap())
        .collect();
    assert!(at.windows(2).all(|w| w[0] < w[1]), "key order: {line}");
    assert!(line.ends_with("\"target\":\"warden::decision\"}"), "{line}");
    drop(server);

    // `WARDEN_LOG` applies to decision lines as to every other event.
    let server = Server::start_with_env(
        &config,
        "none",
        &[("WARDEN_LOG", "info,warden::decision=warn".into())],
    );
    assert_eq!(post(&server.addr, &body).0, 200);
    assert_eq!(post(&server.addr, b"not json").0, 400);
    let log = wait_for_log(&server, "rejected malformed request");
    assert!(!log.contains("\"message\":\"decision\""), "{log}");
}

/// A burst of connections larger than the old listen queue (128) while the
/// server cannot accept (stopped): the kernel queues every one of them, and
/// each is answered once the server runs again. With a queue of 128 the
/// connections past it are never completed (their connect times out).
#[test]
fn a_burst_of_connections_is_queued_not_reset() {
    use std::net::SocketAddr;
    const BURST: usize = 400;
    let dir = TempDir::new("warden-backlog");
    let config = dir.0.join("warden.yaml");
    std::fs::write(&config, "teams: {ml: {}}\n").unwrap();
    let server = Server::start(&config);
    let addr: SocketAddr = server.addr.parse().unwrap();
    signal(&server, "STOP");
    let conns: Vec<_> = (0..BURST)
        .map(|_| TcpStream::connect_timeout(&addr, Duration::from_secs(3)))
        .collect();
    signal(&server, "CONT");
    let refused = conns.iter().filter(|c| c.is_err()).count();
    assert_eq!(
        refused, 0,
        "{refused} of {BURST} connections were not queued"
    );
    for mut c in conns.into_iter().map(Result::unwrap) {
        c.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        write!(
            c,
            "GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        let mut resp = String::new();
        c.read_to_string(&mut resp).unwrap();
        assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    }
}

/// `warden decide` judges a Vast request (the shape its audit record
/// keeps) on its host facts, as the door would.
#[test]
fn decide_judges_a_vast_request_on_its_host() {
    let dir = TempDir::new("warden-decide-vast");
    let config = dir.0.join("warden.yaml");
    std::fs::write(
        &config,
        "storage: none\nteams:\n  sure: {vast: {min_reliability: 0.98}}\nrules:\n  - {name: no-host-13, match: {doors: [vast], resource: 'resource.host_id == \"13\"'}, deny: drained}\n",
    )
    .unwrap();
    let request = dir.0.join("vast.json");
    let write = |reliability: f64, host: u64| {
        std::fs::write(
            &request,
            serde_json::json!({"vast": {"team": "sure", "offer": 7, "offer_facts": {"gpu_name": "RTX 4090", "num_gpus": 1, "dph_total": 0.5, "reliability2": reliability, "verified": true, "host_id": host}, "body": {"image": "x"}}}).to_string(),
        )
        .unwrap();
    };
    let run = || {
        warden(&[
            "decide",
            "--config",
            config.to_str().unwrap(),
            request.to_str().unwrap(),
        ])
    };
    write(0.99, 12);
    let (code, out, err) = run();
    assert_eq!(code, 0, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["status"], 200, "{out}");
    assert_eq!(v["body"]["image"], "x", "{out}");
    write(0.9, 13);
    let (_, out, _) = run();
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["status"], 403, "{out}");
    let msg = v["message"].as_str().unwrap();
    assert!(
        msg.contains("[team.vast.min_reliability]") && msg.contains("[no-host-13]"),
        "{msg}"
    );
}

/// Issue 12, point 2: `warden check` validates `role_bindings` (unknown
/// team or role, both or neither of group/user, duplicates), each problem
/// with its path and line.
#[test]
fn check_validates_role_bindings() {
    let dir = TempDir::new("warden-check-bindings");
    let config = dir.0.join("warden.yaml");
    std::fs::write(
        &config,
        r#"storage: none
teams: {ml-research: {}, cv: {}}
role_bindings:
  - {group: ml-research-leads, role: team-lead, team: ml-research}
  - {group: finance, role: viewer, teams: "*"}
  - {user: alice, role: ml-engineer, team: ml-research}
"#,
    )
    .unwrap();
    let (code, out, err) = warden(&["check", "--config", config.to_str().unwrap()]);
    assert_eq!(code, 0, "{out}{err}");

    std::fs::write(
        &config,
        r#"storage: none
teams: {ml: {}}
role_bindings:
  - {group: leads, role: owner, team: ml}
  - {group: leads, role: viewer, team: nlp}
  - {user: bob, role: viewer, team: ml}
  - {user: bob, role: viewer, team: ml}
  - {role: viewer, team: ml}
"#,
    )
    .unwrap();
    let (code, _, err) = warden(&["check", "--config", config.to_str().unwrap()]);
    assert_eq!(code, 1, "{err}");
    for want in [
        "role_bindings[0].role: `owner` is not a role; use one of `admin`, `team-lead`, `ml-engineer`, `inference-operator`, `viewer`",
        "role_bindings[1].team: team `nlp` is not defined under `teams`",
        "role_bindings[3]: the same binding as role_bindings[2]",
        "role_bindings[4]: name who the role is for",
    ] {
        assert!(err.contains(want), "missing {want:?} in:\n{err}");
    }
}

/// Issue 12, point 8 (command line): `warden access can-i` and `who-can`
/// answer from the config's `role_bindings`, with the reason.
#[test]
fn access_can_i_and_who_can_answer_from_the_bindings() {
    let dir = TempDir::new("warden-access");
    let config = dir.0.join("warden.yaml");
    std::fs::write(
        &config,
        r#"storage: none
teams: {ml: {}, cv: {}}
role_bindings:
  - {group: ml-leads, role: team-lead, team: ml}
  - {group: finance, role: viewer, teams: "*"}
  - {user: alice, role: ml-engineer, team: ml}
"#,
    )
    .unwrap();
    let cfg = config.to_str().unwrap();
    let can = |args: &[&str]| {
        let mut all = vec!["access", "can-i", "--config", cfg];
        all.extend(args);
        warden(&all)
    };
    let (code, out, err) = can(&["--user", "alice", "--team", "ml", "create", "launch"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.starts_with(
            "yes\nallowed: `ml-engineer` may create launch in team `ml`, by role_bindings[2]"
        ),
        "{out}"
    );
    let (code, out, _) = can(&[
        "--user",
        "alice",
        "--team",
        "ml",
        "--owner",
        "bob",
        "delete",
        "allocations",
    ]);
    assert_eq!(code, 1);
    assert!(out.contains("only its own allocations"), "{out}");
    let (code, out, _) = can(&[
        "--user", "fay", "--group", "finance", "--team", "cv", "create", "launch",
    ]);
    assert_eq!(code, 1);
    assert!(
        out.contains("is `viewer` in team `cv`, and none of those may create launch"),
        "{out}"
    );
    let (code, _, err) = can(&["--user", "x", "--team", "nlp", "read", "spend"]);
    assert_eq!(code, 1);
    assert!(err.contains("team `nlp` is not defined"), "{err}");
    let (code, _, err) = can(&["--user", "x", "--team", "ml", "fly", "spend"]);
    assert_eq!(code, 1);
    assert!(err.contains("`fly` is not a verb"), "{err}");

    let (code, out, err) = warden(&[
        "access",
        "who-can",
        "--config",
        cfg,
        "--team",
        "ml",
        "read",
        "allocations",
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("group ml-leads")
            && out.contains("group finance")
            && out.contains("user alice"),
        "{out}"
    );
    assert!(out.contains("their own"), "{out}");
    assert!(
        out.ends_with("3 binding(s) may read allocations in team `ml`\n"),
        "{out}"
    );
}
