use serde_json::json;
use warden_store::{chain_hash, ChainProblem, Store, UnixMicros, VerifyReport, GENESIS_HASH};

use crate::support::{at, on_both_backends, sql_str, TestDb};

/// A store whose chain holds records 1..=n, written at 10 s, 20 s, ...
async fn chain_of(db: &TestDb, n: i64) -> Store {
    let store = db.store().await;
    for i in 1..=n {
        store
            .append_audit("test.event", &json!({ "n": i }), at(10 * i))
            .await
            .unwrap();
    }
    store
}

async fn problem(store: &Store) -> Option<ChainProblem> {
    let report: VerifyReport = store.verify_audit().await.unwrap();
    report.problem
}

on_both_backends! {
    /// 50 appends racing from two stores form one chain: seqs 1..=50, each
    /// linked to the one before, and the head names the last.
    async fn concurrent_appends_form_one_chain(db: &TestDb) {
        let replicas = [db.store().await, db.store().await];
        let tasks: Vec<_> = (0..50)
            .map(|i: i64| {
                let store = replicas[usize::try_from(i % 2).unwrap()].clone();
                tokio::spawn(async move {
                    store.append_audit("test.event", &json!({ "task": i }), at(i)).await
                })
            })
            .collect();
        for task in tasks {
            task.await.unwrap().unwrap();
        }
        let report = replicas[1].verify_audit().await.unwrap();
        assert!(report.is_intact(), "{report:?}");
        assert_eq!(report.records_checked, 50);

        let records = replicas[0]
            .export_audit(UnixMicros::from_micros(i64::MIN), UnixMicros::from_micros(i64::MAX))
            .await
            .unwrap();
        let seqs: Vec<i64> = records.iter().map(|r| r.seq).collect();
        assert_eq!(seqs, (1..=50).collect::<Vec<_>>());
        assert_eq!(records[0].prev_hash, GENESIS_HASH);
        for pair in records.windows(2) {
            assert_eq!(pair[1].prev_hash, pair[0].hash);
        }
        let head = report.head.unwrap();
        assert_eq!((head.seq, head.hash.as_str()), (50, records[49].hash.as_str()));
        // Every task's payload is there exactly once.
        let mut tasks: Vec<i64> = records
            .iter()
            .map(|r| serde_json::from_str::<serde_json::Value>(&r.payload).unwrap()["task"].as_i64().unwrap())
            .collect();
        tasks.sort_unstable();
        assert_eq!(tasks, (0..50).collect::<Vec<_>>());
    }

    /// Export returns `since <= at_us < until` in chain order, with every
    /// field, and each record's hash follows the documented encoding.
    async fn export_is_a_time_window(db: &TestDb) {
        let store = chain_of(db, 10).await;
        let records = store.export_audit(at(30), at(60)).await.unwrap();
        assert_eq!(records.iter().map(|r| r.seq).collect::<Vec<_>>(), [3, 4, 5]);
        let r = &records[0];
        assert_eq!((r.at, r.kind.as_str(), r.payload.as_str()), (at(30), "test.event", r#"{"n":3}"#));
        assert_eq!(r.hash, chain_hash(r.seq, r.at, &r.kind, &r.payload, &r.prev_hash));
        let line = serde_json::to_value(r).unwrap();
        assert_eq!(line["at_us"], 30_000_000);
        assert_eq!(line["hash"], r.hash.as_str());
        assert!(store.export_audit(at(60), at(60)).await.unwrap().is_empty());
    }

    /// An edited payload is found at its seq.
    async fn edited_record_is_reported(db: &TestDb) {
        let store = chain_of(db, 10).await;
        assert_eq!(problem(&store).await, None);
        db.exec(r#"UPDATE audit SET payload = '{"n":"forged"}' WHERE seq = 4"#).await;
        assert_eq!(problem(&store).await, Some(ChainProblem::Edited { seq: 4 }));
        let report = store.verify_audit().await.unwrap();
        assert_eq!(report.records_checked, 3);
        assert_eq!(report.problem.unwrap().to_string(), "record 4 does not match its hash (edited)");
    }

    /// A deleted record is found as a gap; so is a deleted first record.
    async fn deleted_record_is_reported(db: &TestDb) {
        let store = chain_of(db, 10).await;
        db.exec("DELETE FROM audit WHERE seq = 5").await;
        assert_eq!(problem(&store).await, Some(ChainProblem::Missing { first: 5, last: 5 }));
        db.exec("DELETE FROM audit WHERE seq <= 2").await;
        assert_eq!(problem(&store).await, Some(ChainProblem::Missing { first: 1, last: 2 }));
    }

    /// Swapping two records' payloads and hashes breaks the first one.
    async fn swapped_contents_are_reported(db: &TestDb) {
        let store = chain_of(db, 10).await;
        let records = store.export_audit(at(0), at(1000)).await.unwrap();
        let (five, six) = (&records[4], &records[5]);
        for (target, source) in [(five, six), (six, five)] {
            db.exec(&format!(
                "UPDATE audit SET payload = {}, hash = {} WHERE seq = {}",
                sql_str(&source.payload),
                sql_str(&source.hash),
                target.seq
            ))
            .await;
        }
        assert_eq!(problem(&store).await, Some(ChainProblem::Edited { seq: 5 }));
    }

    /// Reordering whole records (renumbering them) is named as a move, with
    /// the position the record was written at.
    async fn reordered_records_are_reported(db: &TestDb) {
        let store = chain_of(db, 10).await;
        db.exec("UPDATE audit SET seq = -6 WHERE seq = 6").await;
        db.exec("UPDATE audit SET seq = 6 WHERE seq = 5").await;
        db.exec("UPDATE audit SET seq = 5 WHERE seq = -6").await;
        let found = problem(&store).await.unwrap();
        assert_eq!(found, ChainProblem::Moved { seq: 5, original_seq: 6 });
        assert_eq!(found.to_string(), "record 5 was written as record 6 (reordered or renumbered)");
    }

    /// A record replaced by a well-formed forgery (its own hash recomputed)
    /// is caught by the next record's link.
    async fn replaced_record_is_reported(db: &TestDb) {
        let store = chain_of(db, 10).await;
        let records = store.export_audit(at(0), at(1000)).await.unwrap();
        let r = &records[6];
        let forged = r#"{"n":"forged"}"#;
        let hash = chain_hash(r.seq, r.at, &r.kind, forged, &r.prev_hash);
        db.exec(&format!(
            "UPDATE audit SET payload = {}, hash = {} WHERE seq = 7",
            sql_str(forged),
            sql_str(&hash)
        ))
        .await;
        assert!(matches!(problem(&store).await, Some(ChainProblem::Unlinked { seq: 8, .. })));
    }

    /// Cutting the tail leaves an intact prefix, but the head row still
    /// names the last record: the truncation is reported.
    async fn truncated_tail_is_reported(db: &TestDb) {
        let store = chain_of(db, 10).await;
        db.exec("DELETE FROM audit WHERE seq > 7").await;
        assert_eq!(
            problem(&store).await,
            Some(ChainProblem::Truncated { last_seq: 7, head_seq: 10 })
        );
        db.exec("DELETE FROM audit").await;
        assert_eq!(
            problem(&store).await,
            Some(ChainProblem::Truncated { last_seq: 0, head_seq: 10 })
        );
    }

    /// A record inserted at the tail behind the store's back, or a head
    /// that no longer matches, is reported.
    async fn records_beyond_the_head_are_reported(db: &TestDb) {
        let store = chain_of(db, 3).await;
        let last = store.export_audit(at(0), at(1000)).await.unwrap().pop().unwrap();
        let hash = chain_hash(4, at(40), "test.event", "{}", &last.hash);
        db.exec(&format!(
            "INSERT INTO audit (seq, at_us, kind, payload, prev_hash, hash) \
             VALUES (4, 40000000, 'test.event', '{{}}', {}, {})",
            sql_str(&last.hash),
            sql_str(&hash)
        ))
        .await;
        assert_eq!(
            problem(&store).await,
            Some(ChainProblem::BeyondHead { head_seq: 3, last_seq: 4 })
        );
        db.exec(&format!("UPDATE audit_head SET seq = 4, hash = {}", sql_str(GENESIS_HASH))).await;
        assert_eq!(problem(&store).await, Some(ChainProblem::HeadMismatch { seq: 4 }));
    }
}
