//! `Store::write`: group commit through the store's writer task.

use std::future::Future;
use std::task::Poll;
use std::time::Duration;

use serde_json::json;
use warden_core::{GpuModel, Usd};
use warden_store::{
    AllocationRequest, AuditRecord, EndTarget, InputError, Limit, ReserveOutcome, Scope, Store,
    StoreError, UnixMicros, Write, WriteStats, Written, MAX_BATCH,
};

use crate::support::{at, h100, join_in_order, launch, on_both_backends, until_batches_taken};

fn h100_limit(max: u32) -> Limit {
    Limit::ModelGpus {
        model: GpuModel::parse("H100").unwrap(),
        scope: Scope::Team,
        max,
    }
}

fn reserve(request: AllocationRequest, limits: &[Limit]) -> Write {
    Write::Reserve {
        request,
        limits: limits.to_vec(),
    }
}

fn audit(n: i64) -> Write {
    Write::Audit {
        kind: "test.event".to_owned(),
        payload: json!({ "n": n }),
    }
}

fn audited(written: Written) -> AuditRecord {
    match written {
        Written::Audited(record) => record,
        other => panic!("not an audit record: {other:?}"),
    }
}

fn reserved(written: Written) -> ReserveOutcome {
    match written {
        Written::Reserved(outcome) => outcome,
        other => panic!("not a reservation: {other:?}"),
    }
}

async fn all_records(store: &Store) -> Vec<AuditRecord> {
    store
        .export_audit(
            UnixMicros::from_micros(i64::MIN),
            UnixMicros::from_micros(i64::MAX),
        )
        .await
        .unwrap()
}

fn payload(record: &AuditRecord) -> serde_json::Value {
    serde_json::from_str(&record.payload).unwrap()
}

on_both_backends! {
    /// 200 concurrent one-GPU reservations written through two replicas'
    /// writers against a limit of 8: exactly 8 granted, 192 denied, 200
    /// records in one intact chain, in fewer transactions than writes.
    async fn concurrent_reserve_writes_are_exact(db: &TestDb) {
        let replicas = [db.store().await, db.store().await];
        let limits = [h100_limit(8)];
        let started = std::time::Instant::now();
        let tasks: Vec<_> = (0..200)
            .map(|i: usize| {
                let store = replicas[i % 2].clone();
                let write = reserve(h100(&format!("job-{i}"), 1), &limits);
                let now = at(i64::try_from(i).unwrap());
                tokio::spawn(async move { store.write(write, now).await })
            })
            .collect();
        let (mut grants, mut denials) = (0, 0);
        for task in tasks {
            match reserved(task.await.unwrap().unwrap()) {
                ReserveOutcome::Granted { relaunch: false, .. } => grants += 1,
                ReserveOutcome::Denied(d) => {
                    assert_eq!((d.in_use, d.requested, d.max), (8, 1, 8));
                    denials += 1;
                }
                other => panic!("unexpected {other:?}"),
            }
        }
        let stats: Vec<WriteStats> = replicas.iter().map(Store::write_stats).collect();
        eprintln!("{:?}: 200 concurrent reserve writes in {:?}, {stats:?}", db.backend, started.elapsed());
        assert_eq!((grants, denials), (8, 192));
        assert_eq!(replicas[1].list_live(None).await.unwrap().len(), 8);
        let report = replicas[0].verify_audit().await.unwrap();
        assert!(report.is_intact(), "{report:?}");
        assert_eq!(report.records_checked, 200);
        let kinds: Vec<String> = all_records(&replicas[0]).await.into_iter().map(|r| r.kind).collect();
        assert_eq!(kinds.iter().filter(|k| *k == "allocation.granted").count(), 8);
        assert_eq!(stats.iter().map(|s| s.writes).sum::<u64>(), 200);
        assert!(stats.iter().map(|s| s.batches).sum::<u64>() < 200, "{stats:?}");
        assert!(stats.iter().all(|s| s.failed == 0), "{stats:?}");
    }

    /// 500 audit writes, 250 queued in order through each of two replicas
    /// at once: one intact chain numbered 1..=500, each replica's records
    /// in the order its writes arrived, each answer the stored record.
    async fn audit_writes_chain_in_arrival_order(db: &TestDb) {
        let replicas = [db.store().await, db.store().await];
        let tasks: Vec<_> = (0..2_i64)
            .map(|replica| {
                let store = replicas[usize::try_from(replica).unwrap()].clone();
                tokio::spawn(async move {
                    let writes: Vec<_> = (0..250)
                        .map(|i| store.write(audit(replica * 1000 + i), at(i)))
                        .collect();
                    join_in_order(writes).await
                })
            })
            .collect();
        let mut answered = Vec::new();
        for (replica, task) in (0..2_i64).zip(tasks) {
            let records: Vec<AuditRecord> =
                task.await.unwrap().into_iter().map(|w| audited(w.unwrap())).collect();
            for (i, record) in (0..).zip(&records) {
                assert_eq!(payload(record), json!({ "n": replica * 1000 + i }));
            }
            for pair in records.windows(2) {
                assert!(pair[0].seq < pair[1].seq, "out of arrival order: {} then {}", pair[0].seq, pair[1].seq);
            }
            answered.extend(records);
        }
        answered.sort_by_key(|r| r.seq);
        let stored = all_records(&replicas[0]).await;
        assert_eq!(stored.iter().map(|r| r.seq).collect::<Vec<_>>(), (1..=500).collect::<Vec<_>>());
        assert_eq!(answered, stored);
        let report = replicas[1].verify_audit().await.unwrap();
        assert!(report.is_intact(), "{report:?}");
        assert_eq!(report.records_checked, 500);
        for store in &replicas {
            let stats = store.write_stats();
            assert_eq!(stats.writes, 250);
            assert!(stats.batches < 250, "{stats:?}");
        }
    }

    /// Writes queued while the writer is busy are committed in one
    /// transaction, decided in arrival order: reservations see the grants
    /// before them in the batch (the quota fills up, a re-launch finds the
    /// allocation granted just before), and the records are chained in
    /// arrival order between the audit writes.
    async fn mixed_batch_decides_in_arrival_order(db: &TestDb) {
        let store = db.store().await;
        let limits = [h100_limit(8)];
        let held = db.hold_writes().await;
        let blocker = tokio::spawn({
            let store = store.clone();
            async move { store.write(audit(0), at(0)).await }
        });
        until_batches_taken(&store, 1).await;
        let writes = vec![
            store.write(reserve(h100("a", 4), &limits), at(1)),
            store.write(audit(1), at(2)),
            store.write(reserve(h100("b", 4), &limits), at(3)),
            store.write(reserve(h100("c", 1), &limits), at(4)),
            store.write(reserve(h100("a", 4), &limits), at(5)),
            store.write(reserve(launch("cv", Some("bob"), "c", Some("H100"), 8), &limits), at(6)),
            store.write(audit(2), at(7)),
        ];
        let (answers, ()) = tokio::join!(join_in_order(writes), async {
            tokio::time::sleep(Duration::from_millis(100)).await;
            held.release().await;
        });
        assert_eq!(audited(blocker.await.unwrap().unwrap()).seq, 1);
        let mut answers = answers.into_iter().map(Result::unwrap);
        let mut next = || answers.next().unwrap();

        let ReserveOutcome::Granted { allocation_id: a, relaunch: false } = reserved(next()) else {
            panic!("`a` not granted");
        };
        assert_eq!(audited(next()).seq, 3);
        assert!(matches!(reserved(next()), ReserveOutcome::Granted { relaunch: false, .. }));
        let ReserveOutcome::Denied(denial) = reserved(next()) else { panic!("`c` granted") };
        assert_eq!((denial.in_use, denial.requested, denial.max), (8, 1, 8));
        assert_eq!(
            reserved(next()),
            ReserveOutcome::Granted { allocation_id: a, relaunch: true }
        );
        assert!(matches!(reserved(next()), ReserveOutcome::Granted { relaunch: false, .. }));
        assert_eq!(audited(next()).seq, 8);

        let records = all_records(&store).await;
        let kinds: Vec<&str> = records.iter().map(|r| r.kind.as_str()).collect();
        assert_eq!(kinds, [
            "test.event",
            "allocation.granted",
            "test.event",
            "allocation.granted",
            "allocation.denied",
            "allocation.granted",
            "allocation.granted",
            "test.event",
        ]);
        let relaunch = payload(&records[5]);
        assert_eq!((relaunch["allocation_id"].as_i64(), &relaunch["relaunch"]), (Some(a.get()), &json!(true)));
        assert_eq!(payload(&records[4])["request"]["name"], "c");
        assert_eq!(store.list_live(None).await.unwrap().len(), 3);
        assert!(store.verify_audit().await.unwrap().is_intact());
        // The blocker's transaction, then one for the seven queued behind it.
        assert_eq!(store.write_stats(), WriteStats { batches: 2, writes: 8, retried: 0, failed: 0 });
    }

    /// A write the store cannot accept is refused before it is queued; the
    /// writes around it are recorded as if it had not been sent.
    async fn invalid_writes_fail_alone(db: &TestDb) {
        let store = db.store().await;
        let mut negative = h100("neg", 1);
        negative.hourly = Usd::from_micros(-1);
        let writes = vec![
            store.write(audit(1), at(1)),
            store.write(Write::Audit { kind: "Not A Kind".to_owned(), payload: json!({}) }, at(2)),
            store.write(reserve(negative, &[]), at(3)),
            store.write(reserve(h100("ok", 1), &[]), at(4)),
        ];
        let mut answers = join_in_order(writes).await.into_iter();
        assert_eq!(audited(answers.next().unwrap().unwrap()).seq, 1);
        let kind = answers.next().unwrap().unwrap_err();
        assert!(matches!(kind, StoreError::Input(InputError::AuditKind(_))), "{kind:?}");
        let price = answers.next().unwrap().unwrap_err();
        assert!(matches!(price, StoreError::Input(InputError::NegativeHourly(_))), "{price:?}");
        assert!(matches!(
            reserved(answers.next().unwrap().unwrap()),
            ReserveOutcome::Granted { relaunch: false, .. }
        ));
        let report = store.verify_audit().await.unwrap();
        assert!(report.is_intact(), "{report:?}");
        assert_eq!(report.records_checked, 2);
        assert_eq!(store.write_stats().writes, 2);
    }

    /// When a batch's transaction fails, every write in it is answered with
    /// the error and none is recorded (no reservation granted); the next
    /// batch starts afresh once the cause is gone.
    async fn failed_batch_fails_all_its_writes_then_recovers(db: &TestDb) {
        let store = db.store().await;
        let limits = [h100_limit(8)];
        assert_eq!(audited(store.write(audit(0), at(0)).await.unwrap()).seq, 1);
        // Record 2 appended behind the store's back: the next batch's
        // insert of its records collides with it.
        db.exec(
            "INSERT INTO audit (seq, at_us, kind, payload, prev_hash, hash) \
             VALUES (2, 0, 'test.planted', '{}', 'x', 'y')",
        )
        .await;
        let held = db.hold_writes().await;
        let alone = tokio::spawn({
            let store = store.clone();
            let write = reserve(h100("alone", 1), &limits);
            async move { store.write(write, at(1)).await }
        });
        until_batches_taken(&store, 2).await;
        let writes: Vec<_> = (0..20)
            .map(|i| {
                let write = if i % 2 == 0 {
                    reserve(h100(&format!("r{i}"), 1), &limits)
                } else {
                    audit(i)
                };
                store.write(write, at(10 + i))
            })
            .collect();
        let (answers, ()) = tokio::join!(join_in_order(writes), async {
            tokio::time::sleep(Duration::from_millis(100)).await;
            held.release().await;
        });
        // A batch of one answers with the plain error, a batch of several
        // with the one error they share.
        let err = alone.await.unwrap().unwrap_err();
        assert!(matches!(err, StoreError::Database(_)), "{err:?}");
        for answer in answers {
            let err = answer.unwrap_err();
            assert!(matches!(&err, StoreError::Batch(cause) if matches!(**cause, StoreError::Database(_))), "{err:?}");
            assert!(!err.is_retryable());
            assert!(err.to_string().starts_with("the write was not recorded, as its batch failed: "), "{err}");
        }
        assert!(store.list_live(None).await.unwrap().is_empty());
        assert_eq!(all_records(&store).await.len(), 2);
        assert_eq!(store.write_stats(), WriteStats { batches: 3, writes: 22, retried: 0, failed: 2 });

        db.exec("DELETE FROM audit WHERE seq = 2").await;
        let after = store.write(reserve(h100("after", 1), &limits), at(50)).await.unwrap();
        assert!(matches!(reserved(after), ReserveOutcome::Granted { relaunch: false, .. }));
        assert_eq!(audited(store.write(audit(51), at(51)).await.unwrap()).seq, 3);
        let report = store.verify_audit().await.unwrap();
        assert!(report.is_intact(), "{report:?}");
        assert_eq!(report.records_checked, 3);
    }

    /// Closing commits and answers the writes already queued, waits for the
    /// writer, and refuses writes after that.
    async fn close_answers_queued_writes_then_refuses(db: &TestDb) {
        let store = db.store().await;
        let held = db.hold_writes().await;
        let first = tokio::spawn({
            let store = store.clone();
            async move { store.write(audit(0), at(0)).await }
        });
        until_batches_taken(&store, 1).await;
        let writes: Vec<_> = (1..=10).map(|i| store.write(audit(i), at(i))).collect();
        let (answers, ()) = tokio::join!(join_in_order(writes), async {
            tokio::time::sleep(Duration::from_millis(50)).await;
            tokio::join!(store.close(), async {
                tokio::time::sleep(Duration::from_millis(50)).await;
                held.release().await;
            });
        });
        assert_eq!(audited(first.await.unwrap().unwrap()).seq, 1);
        let seqs: Vec<i64> = answers.into_iter().map(|a| audited(a.unwrap()).seq).collect();
        assert_eq!(seqs, (2..=11).collect::<Vec<_>>());

        let refused = store.write(audit(99), at(99)).await.unwrap_err();
        assert!(matches!(refused, StoreError::Closed), "{refused:?}");
        assert_eq!(refused.to_string(), "the store is closed");
        let other = db.store().await;
        let report = other.verify_audit().await.unwrap();
        assert!(report.is_intact(), "{report:?}");
        assert_eq!(report.records_checked, 11);
    }

    /// While writes keep coming, more than a batch takes, the one-call
    /// writes, each in a transaction of its own (`reserve`, `end`,
    /// `append_audit`), still get their turn, the writers go on after them,
    /// and closing still stops the writer. (The timeouts and deadlines only
    /// turn a hang into a failure; nothing here depends on timing.)
    async fn a_busy_writer_lets_one_call_writes_and_close_through(db: &TestDb) {
        let store = db.store().await;
        // More writers than a batch takes, so that writes are always
        // queued when a batch commits; each writes until the store is
        // closed.
        let writers: Vec<_> = (0..i64::try_from(MAX_BATCH).unwrap() + 64)
            .map(|w: i64| {
                let store = store.clone();
                tokio::spawn(async move {
                    let mut committed = 0u64;
                    for i in 0.. {
                        match store.write(audit(w * 1_000_000 + i), at(i)).await {
                            Ok(_) => committed += 1,
                            Err(StoreError::Closed) => break,
                            Err(other) => panic!("writer {w}: {other}"),
                        }
                    }
                    committed
                })
            })
            .collect();
        until_batches_taken(&store, 20).await;
        let alone = tokio::time::timeout(
            Duration::from_secs(60),
            store.reserve(&h100("alone", 1), &[h100_limit(8)], at(1)),
        )
        .await
        .expect("a one-call write waited for a minute behind the writer");
        let ReserveOutcome::Granted {
            allocation_id,
            relaunch: false,
        } = alone.unwrap()
        else {
            panic!("the lone reservation was not granted");
        };
        let ended = tokio::time::timeout(
            Duration::from_secs(60),
            store.end(&EndTarget::Id(allocation_id), at(3)),
        )
        .await
        .expect("a write in its own transaction waited for a minute behind the writer")
        .unwrap();
        assert_eq!(ended.len(), 1);
        let batches = store.write_stats().batches;
        let appended = tokio::time::timeout(
            Duration::from_secs(60),
            store.append_audit("test.alone", &json!({}), at(2)),
        )
        .await
        .expect("a one-call append waited for a minute behind the writer")
        .unwrap();
        // The writers go on after it.
        until_batches_taken(&store, batches + 1).await;
        tokio::time::timeout(Duration::from_secs(60), store.close())
            .await
            .expect("closing waited for a minute behind the writers");
        let mut committed = 0;
        for writer in writers {
            committed += writer.await.unwrap();
        }
        let other = db.store().await;
        let report = other.verify_audit().await.unwrap();
        assert!(report.is_intact(), "{report:?}");
        // Every answered write is in the chain, and the three others.
        assert_eq!(report.records_checked, committed + 3);
        assert!(appended.seq > 1);
    }

    /// A caller that drops its write after it was queued does not stop it,
    /// even with the store's last handle: the writer commits what was
    /// queued, then stops.
    async fn dropped_write_still_commits(db: &TestDb) {
        let store = db.store().await;
        let held = db.hold_writes().await;
        let mut dropped = Box::pin(store.write(audit(1), at(1)));
        let pending = std::future::poll_fn(|cx| Poll::Ready(dropped.as_mut().poll(cx).is_pending())).await;
        assert!(pending, "answered while the store was held");
        drop(dropped);
        drop(store);
        held.release().await;

        let other = db.store().await;
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        let records = loop {
            let records = all_records(&other).await;
            if !records.is_empty() || std::time::Instant::now() > deadline {
                break records;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        };
        assert_eq!(records.len(), 1, "the dropped write was not committed");
        assert_eq!(payload(&records[0]), json!({ "n": 1 }));
        assert!(other.verify_audit().await.unwrap().is_intact());
    }
}

/// On PostgreSQL the writer has `allocations` analyzed once a burst has
/// inserted its first thousand rows, rather than leaving a new table
/// without statistics until autovacuum comes by (`analyze_count` counts
/// only explicit `ANALYZE`s, not autovacuum's).
#[tokio::test]
async fn postgres_allocations_are_analyzed_after_the_first_thousand() {
    let db = crate::support::TestDb::new(crate::support::Backend::Postgres).await;
    let store = db.store().await;
    let analyzed = "SELECT COALESCE((SELECT analyze_count FROM pg_stat_user_tables \
                    WHERE relname = 'allocations'), 0)";
    let reserve_many = |from: usize, n: usize| {
        let writes: Vec<_> = (from..from + n)
            .map(|i| store.write(reserve(h100(&format!("job-{i}"), 1), &[]), at(1)))
            .collect();
        join_in_order(writes)
    };
    for outcome in reserve_many(0, 990).await {
        assert!(matches!(
            reserved(outcome.unwrap()),
            ReserveOutcome::Granted { .. }
        ));
    }
    // Not yet: fewer than a thousand.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(db.scalar(analyzed).await, 0);
    for outcome in reserve_many(990, 20).await {
        outcome.unwrap();
    }
    let mut waited = Duration::ZERO;
    while db.scalar(analyzed).await == 0 {
        assert!(
            waited < Duration::from_secs(30),
            "allocations not analyzed after 1,010 inserts"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
        waited += Duration::from_millis(100);
    }
    store.close().await;
}
