use warden_core::{Door, GpuModel, Usd};
use warden_store::{AllocationName, EndTarget, Limit, Scope};

use crate::support::{at, denied, granted, h100, on_both_backends, Backend};

on_both_backends! {
    /// Connecting runs the migrations; connecting again (a restart, a second
    /// replica) applies nothing new and keeps the data.
    async fn apply_twice_idempotently(db: &TestDb) {
        let first = db.store().await;
        let granted = first.reserve(&h100("c1", 1), &[], at(1)).await.unwrap();

        let second = db.store().await;
        let applied = db.scalar("SELECT CAST(COUNT(*) AS BIGINT) FROM _sqlx_migrations").await;
        let files = std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/migrations/sqlite"))
            .unwrap()
            .count();
        assert_eq!(applied, i64::try_from(files).unwrap());
        let dirty = db
            .scalar("SELECT CAST(COUNT(*) AS BIGINT) FROM _sqlx_migrations WHERE NOT success")
            .await;
        assert_eq!(dirty, 0);

        // The second handle sees what the first wrote, and vice versa.
        let live = second.list_live(None).await.unwrap();
        assert_eq!(live.len(), 1);
        assert!(matches!(
            granted,
            warden_store::ReserveOutcome::Granted { allocation_id, .. } if allocation_id == live[0].id
        ));
        second.append_audit("test.note", &serde_json::json!({}), at(2)).await.unwrap();
        let report = first.verify_audit().await.unwrap();
        assert!(report.is_intact(), "{report:?}");
        assert_eq!(report.records_checked, 2);

        if db.backend == Backend::Sqlite {
            // Readers never wait for the writer.
            assert_eq!(db.scalar_text("PRAGMA journal_mode").await, "wal");
        }
    }
}

on_both_backends! {
    /// A database written by a version without the summaries: the
    /// migration fills `live_usage` from the live allocations, and budget
    /// checks build their state from the rows (filling in
    /// `held_until_us`), so answers are as before.
    async fn summaries_are_backfilled_from_existing_rows(db: &TestDb) {
        db.migrate_first(2).await;
        let h = 3_600_000_000_i64; // µs per hour
        // Team ml: alice's two live H100 launches at $3/h (one reserving
        // $6), bob's live CPU launch, an ended one; team cv: one live.
        db.exec(&format!(
            "INSERT INTO allocations (door, team, user_name, name, gpu_model, gpus, \
               hourly_micros, started_us, ended_us, state, reserved_micros) VALUES \
             ('skypilot', 'ml', 'alice', 'a1', 'H100', 2, 3000000, 0, NULL, 'live', 6000000), \
             ('skypilot', 'ml', 'alice', 'a2', 'H100', 1, 3000000, 0, NULL, 'live', 0), \
             ('skypilot', 'ml', 'bob', 'b1', NULL, 0, 1000000, 0, NULL, 'live', 0), \
             ('skypilot', 'ml', NULL, 'x1', 'H100', 4, 5000000, 0, {h}, 'ended', 0), \
             ('vast', 'cv', NULL, 'c1', 'A100', 8, 9000000, 0, NULL, 'live', 0)"
        ))
        .await;
        let store = db.store().await;
        // Groups: (ml, alice, H100), (ml, bob, none), (cv, none, A100).
        assert_eq!(db.scalar("SELECT CAST(COUNT(*) AS BIGINT) FROM live_usage").await, 3);
        assert_eq!(db.usage_mismatches().await, 0);

        // Quotas count the backfilled usage: ml has 3 H100s live.
        let h100_max_4 = Limit::ModelGpus {
            model: GpuModel::parse("H100").unwrap(),
            scope: Scope::Team,
            max: 4,
        };
        let denial = denied(store.reserve(&h100("a3", 2), std::slice::from_ref(&h100_max_4), at(3600)).await.unwrap());
        assert_eq!((denial.in_use, denial.requested), (3, 2));
        granted(store.reserve(&h100("a3", 1), &[h100_max_4], at(3600)).await.unwrap());

        // At 1 h, since 0: x1 cost $5; a1 $3, plus $3 it still holds of
        // its $6 reservation; a2 $3; b1 $1; a3 just started and reserves
        // nothing: $15.
        let budget = |reservation: i64| Limit::Budget {
            from: at(0),
            max: Usd::from_micros(16_000_000),
            reservation: Usd::from_micros(reservation),
        };
        let denial = denied(store.reserve(&h100("a4", 1), &[budget(2_000_000)], at(3600)).await.unwrap());
        assert_eq!((denial.in_use, denial.requested), (15_000_000, 2_000_000));
        granted(store.reserve(&h100("a4", 1), &[budget(1_000_000)], at(3600)).await.unwrap());
        let missing = db
            .scalar("SELECT CAST(COUNT(*) AS BIGINT) FROM allocations \
                     WHERE team = 'ml' AND state = 'live' AND held_until_us IS NULL")
            .await;
        assert_eq!(missing, 0);
        // Ending keeps the summary right.
        store
            .end(&EndTarget::Name { door: Door::Skypilot, name: AllocationName::parse("a1").unwrap() }, at(7200))
            .await
            .unwrap();
        assert_eq!(db.usage_mismatches().await, 0);
    }
}
