use crate::support::{at, h100, on_both_backends, Backend};

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
