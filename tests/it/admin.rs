//! `warden audit` and `warden allocations` against a real SQLite store
//! named by the config's `storage` key.

use warden_core::{Door, GpuModel, TeamName, Usd};
use warden_store::{
    AllocationName, AllocationRequest, Limit, ReserveOutcome, Scope, Store, UnixMicros,
};

use crate::cli::warden;
use crate::skypilot_client::TempDir;

#[tokio::test]
async fn audit_and_allocation_commands_work_on_the_configured_store() {
    let dir = TempDir::new("warden-admin");
    let config = dir.0.join("warden.yaml");
    std::fs::write(&config, "storage: sqlite://state.db\nteams: {ml: {}}\n").unwrap();
    let cfg = config.to_str().unwrap();

    // The relative SQLite path resolves beside the config file.
    let store = Store::connect(&format!("sqlite://{}", dir.0.join("state.db").display()))
        .await
        .unwrap();
    let t0 = 1_767_225_600_000_000; // 2026-01-01T00:00:00Z
    for (i, name) in ["c1", "c2"].iter().enumerate() {
        let req = AllocationRequest {
            door: Door::Skypilot,
            team: TeamName::parse("ml").unwrap(),
            user: Some("alice".into()),
            name: AllocationName::parse(name).unwrap(),
            gpu_model: Some(GpuModel::parse("H100").unwrap()),
            gpus: 8,
            hourly: Usd::from_micros(24_000_000),
            context: None,
        };
        let out = store
            .reserve(
                &req,
                &[Limit::Gpus {
                    scope: Scope::Team,
                    max: 64,
                }],
                UnixMicros::from_micros(t0 + i as i64 * 60_000_000),
            )
            .await
            .unwrap();
        assert!(matches!(out, ReserveOutcome::Granted { .. }), "{out:?}");
    }

    let (code, out, err) = warden(&["allocations", "list", "--config", cfg]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("c1") && out.contains("c2") && out.contains("2 live allocation(s)"),
        "{out}"
    );
    assert!(
        out.contains("$24.00") && out.contains("2026-01-01T00:00:00.000000Z"),
        "{out}"
    );

    let (code, out, err) = warden(&[
        "allocations",
        "end",
        "--config",
        cfg,
        "--door",
        "skypilot",
        "--name",
        "c1",
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("ended allocation"), "{out}");
    let (code, _, err) = warden(&["allocations", "end", "--config", cfg, "--id", "999"]);
    assert_eq!(code, 1);
    assert!(err.contains("nothing ended"), "{err}");
    let (code, out, _) = warden(&["allocations", "list", "--config", cfg, "--team", "ml"]);
    assert_eq!(code, 0);
    assert!(
        out.contains("1 live allocation(s)") && !out.contains(" c1 "),
        "{out}"
    );

    let (code, out, err) = warden(&["audit", "verify", "--config", cfg]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("audit chain intact: 3 records checked"),
        "{out}"
    );

    let (code, out, _) = warden(&[
        "audit",
        "export",
        "--config",
        cfg,
        "--since",
        "2026-01-01T00:00:30Z",
    ]);
    assert_eq!(code, 0);
    let lines: Vec<serde_json::Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2, "{out}");
    assert_eq!(lines[0]["seq"], 2);
    assert_eq!(lines[0]["at"], "2026-01-01T00:01:00.000000Z");
    let (code, out, _) = warden(&[
        "audit",
        "export",
        "--config",
        cfg,
        "--format",
        "csv",
        "--until",
        "2026-01-01T00:00:30Z",
    ]);
    assert_eq!(code, 0);
    let rows: Vec<&str> = out.lines().collect();
    assert_eq!(rows.len(), 2, "{out}");
    assert!(
        rows[0].starts_with("seq,at,kind,payload") && rows[1].starts_with("1,2026-01-01T00:00:00"),
        "{out}"
    );
    let (code, _, err) = warden(&["audit", "export", "--config", cfg, "--since", "yesterday"]);
    assert_eq!(code, 1);
    assert!(err.contains("--since") && err.contains("`7d`"), "{err}");

    // Tamper with a record behind Warden's back: verify names it and fails.
    tamper(&dir.0.join("state.db")).await;
    let (code, _, err) = warden(&["audit", "verify", "--config", cfg]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("BROKEN") && err.contains('2'), "{err}");
    store.close().await;
}

/// Edits audit record 2 directly in the database, as an attacker with
/// database access would.
async fn tamper(db: &std::path::Path) {
    let pool = sqlx::SqlitePool::connect(&format!("sqlite://{}", db.display()))
        .await
        .unwrap();
    sqlx::query(r#"UPDATE audit SET payload = '{"edited":true}' WHERE seq = 2"#)
        .execute(&pool)
        .await
        .unwrap();
    pool.close().await;
}

/// Long names, long users and amounts with different decimals still line
/// up: every row's cells start (text) or end (numbers) where the header's do.
#[tokio::test]
async fn allocations_list_lines_up_whatever_the_cells() {
    let dir = TempDir::new("warden-admin-columns");
    let config = dir.0.join("warden.yaml");
    std::fs::write(
        &config,
        "storage: sqlite://state.db\nteams: {ml: {}, research-vision: {}}\n",
    )
    .unwrap();
    let store = Store::connect(&format!("sqlite://{}", dir.0.join("state.db").display()))
        .await
        .unwrap();
    let rows = [
        ("ml", "al", "c1", 1, 2_000_000),
        (
            "research-vision",
            "a-user-with-a-long-name@example.com",
            "a-cluster-name-much-longer-than-twenty-four",
            16,
            1_234_567,
        ),
        ("ml", "bob", "c3", 128, 24_000_000),
    ];
    for (i, (team, user, name, gpus, hourly)) in rows.iter().enumerate() {
        let req = AllocationRequest {
            door: Door::Skypilot,
            team: TeamName::parse(team).unwrap(),
            user: Some((*user).into()),
            name: AllocationName::parse(name).unwrap(),
            gpu_model: Some(GpuModel::parse("H100").unwrap()),
            gpus: *gpus,
            hourly: Usd::from_micros(*hourly),
            context: None,
        };
        let at = UnixMicros::from_micros(1_767_225_600_000_000 + i as i64);
        let out = store.reserve(&req, &[], at).await.unwrap();
        assert!(matches!(out, ReserveOutcome::Granted { .. }), "{out:?}");
    }
    store.close().await;

    let (code, out, err) = warden(&["allocations", "list", "--config", config.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 5, "{out}");
    let header = lines[0];
    let starts = |col: &str| header.find(col).unwrap();
    let ends = |col: &str| starts(col) + col.len();
    for line in &lines[1..4] {
        // Text columns start where their header starts.
        for col in ["door", "team", "user", "name", "model", "started"] {
            let at = starts(col);
            assert!(
                line.as_bytes()[at - 1] == b' ' && line.as_bytes()[at] != b' ',
                "{col} of {line:?} does not start at {at}:\n{out}"
            );
        }
        // Number columns end where their header ends.
        for col in ["gpus", "$/hour"] {
            let at = ends(col);
            assert!(
                line.as_bytes()[at - 1] != b' ' && line.as_bytes()[at] == b' ',
                "{col} of {line:?} does not end at {at}:\n{out}"
            );
        }
    }
    // One column of amounts, one number of decimals.
    for amount in ["$2.000000", "$1.234567", "$24.000000"] {
        assert!(out.contains(amount), "{amount} missing:\n{out}");
    }
    assert!(out.ends_with("3 live allocation(s)\n"), "{out}");
}
