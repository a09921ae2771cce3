//! `warden replay`: decisions recorded by a running `warden serve`,
//! re-decided under a new policy; the recorded requests hold no secrets.

use crate::cli::{post, warden};
use crate::recording::launch_body_with;
use crate::skypilot_client::{Server, TempDir};

#[test]
fn replay_reports_newly_denied_newly_allowed_and_changed_mutations_per_team() {
    let dir = TempDir::new("warden-replay");
    let old = dir.0.join("old.yaml");
    let new = dir.0.join("new.yaml");
    let db = dir.0.join("state.db");
    let storage = format!("sqlite://{}", db.display());
    std::fs::write(
        &old,
        format!("storage: {storage}\nteams:\n  ml:\n    users: [root]\n    allowed_gpus: [H100]\n"),
    )
    .unwrap();
    std::fs::write(
        &new,
        format!(
            "storage: {storage}\nteams:\n  ml:\n    users: [root]\n    allowed_gpus: [H100, A100]\n    max_gpus_per_launch: 4\nrules:\n  - name: spot-for-gpu\n    match: {{resource: 'resource.gpus > 0'}}\n    use_spot: true\n"
        ),
    )
    .unwrap();
    let server = Server::start_with_storage(&old, &storage);
    let h100 = "name: big\nenvs:\n  HF_TOKEN: hf_supersecret\nresources:\n  accelerators: H100:8\n";
    let a100 = "name: small\nresources:\n  accelerators: A100:1\n";
    let h100_small = "name: one\nresources:\n  accelerators: H100:1\n";
    let cpu = "name: cpu\nresources:\n  cpus: 2\n";
    assert_eq!(
        post(&server.addr, &launch_body_with("c-big", Some(h100))).0,
        200
    );
    assert_eq!(
        post(&server.addr, &launch_body_with("c-small", Some(a100))).0,
        400
    );
    assert_eq!(
        post(&server.addr, &launch_body_with("c-one", Some(h100_small))).0,
        200
    );
    assert_eq!(
        post(&server.addr, &launch_body_with("c-cpu", Some(cpu))).0,
        200
    );
    drop(server);

    let (code, out, err) = warden(&[
        "replay",
        "--config",
        new.to_str().unwrap(),
        "--since",
        "1h",
        "--format",
        "json",
    ]);
    assert_eq!(code, 0, "{out}{err}");
    let report: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(report["records"], 4, "{out}");
    let ml = &report["teams"]["ml"];
    assert_eq!(ml["replayed"], 4, "{out}");
    assert_eq!(ml["newly_denied"], 1, "{out}");
    assert_eq!(ml["newly_allowed"], 1, "{out}");
    assert_eq!(ml["mutations_changed"], 1, "{out}");
    assert_eq!(ml["unchanged"], 1, "{out}");
    let changes = report["changes"].as_array().unwrap();
    let denied = changes
        .iter()
        .find(|c| c["kind"] == "newly_denied")
        .unwrap();
    assert_eq!(denied["target"], "c-big");
    assert!(
        denied["after_rules"]
            .to_string()
            .contains("team.max_gpus_per_launch"),
        "{denied}"
    );
    let allowed = changes
        .iter()
        .find(|c| c["kind"] == "newly_allowed")
        .unwrap();
    assert_eq!(allowed["target"], "c-small");
    let mutated = changes
        .iter()
        .find(|c| c["kind"] == "mutations_changed")
        .unwrap();
    assert_eq!(mutated["target"], "c-one");
    assert_eq!(mutated["after_rules"], serde_json::json!(["spot-for-gpu"]));

    // The table names the team and the change; the same policy changes nothing.
    let (code, table, _) = warden(&["replay", "--config", new.to_str().unwrap()]);
    assert_eq!(code, 0);
    assert!(
        table.contains("newly denied") && table.contains("c-big"),
        "{table}"
    );
    let (_, same, _) = warden(&["replay", "--config", old.to_str().unwrap()]);
    assert!(same.contains("no decision would change"), "{same}");

    // The recorded request never holds the secret.
    let (_, audit, _) = warden(&["audit", "export", "--config", old.to_str().unwrap()]);
    assert!(
        audit.contains("HF_TOKEN") && !audit.contains("hf_supersecret"),
        "{audit}"
    );
}
