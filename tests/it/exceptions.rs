//! Time-limited exceptions end to end: `warden exceptions grant` lifts a
//! rule's denial at the running server's SkyPilot door (named in the answer
//! and the audit record), bounded by `exceptions.max_hours`; it stops
//! applying at its end without a restart, and the audit chain shows the
//! grant, the use and the expiry.

use crate::cli::{post, warden};
use crate::recording::launch_body_with;
use crate::skypilot_client::{Server, TempDir};

const BIG_TASK: &str = "name: big\nresources:\n  accelerators: H100:16\n";

#[test]
fn an_exception_lifts_a_rule_until_it_ends_and_the_audit_shows_it() {
    let dir = TempDir::new("warden-exceptions");
    let config = dir.0.join("warden.yaml");
    let db = dir.0.join("state.db");
    std::fs::write(
        &config,
        format!(
            "storage: sqlite://{}\nteams:\n  ml: {{users: [root]}}\nrules:\n  - {{name: gpu-cap, match: {{when: 'request.gpus > 8'}}, deny: \"at most 8 GPUs per launch\"}}\nexceptions: {{max_hours: 24}}\n",
            db.display()
        ),
    )
    .unwrap();
    let cfg = config.to_str().unwrap();
    let server = Server::start_with_storage(&config, &format!("sqlite://{}", db.display()));
    let (status, text) = post(&server.addr, &launch_body_with("big-1", Some(BIG_TASK)));
    assert_eq!(status, 400, "{text}");
    assert!(text.contains("[gpu-cap]"), "{text}");

    // Bounds: the rule must exist, `access` cannot be lifted, the length
    // is at most max_hours, a reason is required.
    for (args, want) in [
        (
            vec!["--rule", "gpu-kap", "--for", "1h"],
            "`gpu-kap` is not a rule of the policy; rules: gpu-cap",
        ),
        (
            vec!["--rule", "access", "--for", "1h"],
            "`access` cannot be lifted",
        ),
        (
            vec!["--rule", "gpu-cap", "--for", "25h"],
            "`exceptions.max_hours` (24 hours)",
        ),
        (
            vec!["--rule", "gpu-cap", "--for", "1h", "--reason", " "],
            "--reason: say why",
        ),
    ] {
        let mut all = vec!["exceptions", "grant", "--config", cfg, "--team", "ml"];
        all.extend(args);
        if !all.contains(&"--reason") {
            all.extend(["--reason", "paper deadline"]);
        }
        let (code, out, err) = warden(&all);
        assert_eq!(code, 1, "{all:?}: {out}{err}");
        assert!(err.contains(want), "{all:?}: {err}");
    }

    let (code, out, err) = warden(&[
        "exceptions",
        "grant",
        "--config",
        cfg,
        "--team",
        "ml",
        "--user",
        "root",
        "--rule",
        "gpu-cap",
        "--for",
        "3s",
        "--reason",
        "paper deadline",
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("granted exception 1: team `ml`, user `root`, may go past `gpu-cap`"),
        "{out}"
    );

    // Lifted now, without a restart; the answer goes on (a success body).
    let (status, text) = post(&server.addr, &launch_body_with("big-2", Some(BIG_TASK)));
    assert_eq!(status, 200, "{text}");
    let (_, out, _) = warden(&["exceptions", "list", "--config", cfg]);
    assert!(
        out.contains("gpu-cap") && out.contains("active") && out.contains("paper deadline"),
        "{out}"
    );

    // At its end it stops applying, still without a restart.
    std::thread::sleep(std::time::Duration::from_millis(3500));
    let (status, text) = post(&server.addr, &launch_body_with("big-3", Some(BIG_TASK)));
    assert_eq!(status, 400, "{text}");
    assert!(text.contains("[gpu-cap]"), "{text}");
    let (_, out, _) = warden(&["exceptions", "list", "--config", cfg]);
    assert!(out.contains("expired"), "{out}");

    // The audit chain: grant, the decision it lifted (with the override),
    // and the expiry, in that order; intact.
    let (code, out, err) = warden(&["audit", "export", "--config", cfg]);
    assert_eq!(code, 0, "{err}");
    let lines: Vec<&str> = out.lines().collect();
    let at = |needle: &str| {
        lines
            .iter()
            .position(|l| l.contains(needle))
            .unwrap_or_else(|| panic!("no record with {needle}: {out}"))
    };
    let granted = at("exception.granted");
    let used = at("\"overrides\":[{\"exception\":1,\"rule\":\"gpu-cap\"}]");
    let expired = at("exception.expired");
    assert!(granted < used && used < expired, "{out}");
    assert!(
        lines[used].contains("lifted by exception #1"),
        "{}",
        lines[used]
    );
    let (code, out, err) = warden(&["audit", "verify", "--config", cfg]);
    assert_eq!(code, 0, "{out}{err}");

    // A revoked exception ends at once.
    let (code, _, err) = warden(&[
        "exceptions",
        "grant",
        "--config",
        cfg,
        "--team",
        "ml",
        "--rule",
        "gpu-cap",
        "--for",
        "1h",
        "--reason",
        "demo",
    ]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        post(&server.addr, &launch_body_with("big-4", Some(BIG_TASK))).0,
        200
    );
    let (code, out, err) = warden(&["exceptions", "revoke", "--config", cfg, "2"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("revoked exception 2"), "{out}");
    assert_eq!(
        post(&server.addr, &launch_body_with("big-5", Some(BIG_TASK))).0,
        400
    );
    let (code, _, err) = warden(&["exceptions", "revoke", "--config", cfg, "2"]);
    assert_eq!(code, 1);
    assert!(err.contains("exception 2 was revoked at"), "{err}");
}
