use std::collections::BTreeSet;

use warden_core::{Door, GpuModel, TeamName, Usd};
use warden_store::{AllocationName, AllocationState, EndTarget, Limit, ReserveOutcome, Scope};

use crate::support::{at, denied, granted, h100, launch, on_both_backends};

fn h100_limit(max: u32) -> Limit {
    Limit::ModelGpus {
        model: GpuModel::parse("H100").unwrap(),
        scope: Scope::Team,
        max,
    }
}

on_both_backends! {
    /// GPUs of one model are granted up to the team's limit; the launch that
    /// would pass it is denied with the numbers a message needs, and both
    /// answers are in the audit chain.
    async fn gpu_limit_grants_then_denies(db: &TestDb) {
        let store = db.store().await;
        let limits = [h100_limit(8)];
        for i in 0..3 {
            granted(store.reserve(&h100(&format!("c{i}"), 2), &limits, at(i)).await.unwrap());
        }
        let denial = denied(store.reserve(&h100("big", 4), &limits, at(10)).await.unwrap());
        assert_eq!((denial.in_use, denial.requested, denial.max), (6, 4, 8));
        assert_eq!(denial.limit, limits[0]);
        assert_eq!(
            denial.to_string(),
            "quota exceeded: at most 8 concurrent `H100` GPUs per team; 6 in use, 4 requested"
        );
        granted(store.reserve(&h100("last", 2), &limits, at(11)).await.unwrap());
        let denial = denied(store.reserve(&h100("one-more", 1), &limits, at(12)).await.unwrap());
        assert_eq!((denial.in_use, denial.requested, denial.max), (8, 1, 8));

        // Another model, another team: not counted against this limit.
        granted(store.reserve(&launch("ml", None, "a", Some("A100"), 4), &limits, at(13)).await.unwrap());
        granted(store.reserve(&launch("cv", None, "h", Some("H100"), 8), &limits, at(14)).await.unwrap());

        let ml = TeamName::parse("ml").unwrap();
        assert_eq!(store.list_live(Some(&ml)).await.unwrap().len(), 5);
        assert_eq!(store.list_live(None).await.unwrap().len(), 6);

        let records = store.export_audit(at(0), at(100)).await.unwrap();
        let kinds: Vec<&str> = records.iter().map(|r| r.kind.as_str()).collect();
        assert_eq!(kinds.iter().filter(|k| **k == "allocation.granted").count(), 6);
        assert_eq!(kinds.iter().filter(|k| **k == "allocation.denied").count(), 2);
        let denial: serde_json::Value = serde_json::from_str(&records[3].payload).unwrap();
        assert_eq!(denial["denial"]["in_use"], 6);
        assert_eq!(denial["request"]["name"], "big");
        assert!(store.verify_audit().await.unwrap().is_intact());
    }

    /// Total GPUs, live allocations per user and $/hour per team, each with
    /// its own numbers; the first exceeded limit in the given order answers.
    async fn other_limits_count_their_own_units(db: &TestDb) {
        let store = db.store().await;
        let limits = [
            Limit::LiveAllocations { scope: Scope::User, max: 2 },
            Limit::Gpus { scope: Scope::Team, max: 10 },
            Limit::HourlyCost { scope: Scope::Team, max: Usd::from_micros(27_000_000) },
        ];
        let alice = |name: &str, gpus| launch("ml", Some("alice"), name, Some("A100"), gpus);
        let bob = |name: &str, gpus| launch("ml", Some("bob"), name, Some("H100"), gpus);
        granted(store.reserve(&alice("a1", 1), &limits, at(1)).await.unwrap());
        granted(store.reserve(&alice("a2", 1), &limits, at(2)).await.unwrap());
        let d = denied(store.reserve(&alice("a3", 1), &limits, at(3)).await.unwrap());
        assert_eq!((d.limit.clone(), d.in_use, d.requested, d.max), (limits[0].clone(), 2, 1, 2));

        // Bob has his own per-user count but shares the team's GPUs.
        let d = denied(store.reserve(&bob("b1", 9), &limits, at(4)).await.unwrap());
        assert_eq!((d.limit.clone(), d.in_use, d.requested, d.max), (limits[1].clone(), 2, 9, 10));
        // 7 GPUs fit the GPU limit but not $27/h: $6 + $21 = $27 is fine,
        // one more dollar is not.
        granted(store.reserve(&bob("b1", 7), &limits, at(5)).await.unwrap());
        let mut pricey = bob("b2", 0);
        pricey.hourly = Usd::from_micros(1);
        let d = denied(store.reserve(&pricey, &limits, at(6)).await.unwrap());
        assert_eq!((d.limit.clone(), d.in_use, d.requested, d.max), (limits[2].clone(), 27_000_000, 1, 27_000_000));
        assert_eq!(
            d.to_string(),
            "quota exceeded: at most $27.00/h of live allocations per team; $27.00/h in use, $0.000001/h requested"
        );

        // Requests without a user share one per-user bucket.
        let anon = |name: &str| launch("cv", None, name, None, 0);
        granted(store.reserve(&anon("x1"), &limits, at(7)).await.unwrap());
        granted(store.reserve(&anon("x2"), &limits, at(8)).await.unwrap());
        denied(store.reserve(&anon("x3"), &limits, at(9)).await.unwrap());
    }

    /// Re-launching a live (door, team, name) returns the same allocation
    /// and counts nothing new, even at the limit; another door's allocation
    /// of the same name is another allocation.
    async fn relaunch_is_idempotent(db: &TestDb) {
        let store = db.store().await;
        let limits = [h100_limit(8)];
        let first = store.reserve(&h100("train", 8), &limits, at(1)).await.unwrap();
        assert!(matches!(first, ReserveOutcome::Granted { relaunch: false, .. }));
        let again = store.reserve(&h100("train", 8), &limits, at(2)).await.unwrap();
        assert_eq!(
            again,
            ReserveOutcome::Granted { allocation_id: granted(first), relaunch: true }
        );
        let live = store.list_live(None).await.unwrap();
        assert_eq!(live.len(), 1);
        assert_eq!(live[0].gpus, 8);
        assert_eq!(live[0].started, at(1));

        let mut via_k8s = h100("train", 1);
        via_k8s.door = Door::Kubernetes;
        denied(store.reserve(&via_k8s, &limits, at(3)).await.unwrap());
        let records = store.export_audit(at(0), at(10)).await.unwrap();
        let relaunch: serde_json::Value = serde_json::from_str(&records[1].payload).unwrap();
        assert_eq!(relaunch["relaunch"], true);
    }

    /// Twenty replicas' worth of the same launch racing each other record
    /// one allocation; every other answer is a re-launch of it.
    async fn concurrent_relaunches_count_once(db: &TestDb) {
        let replicas = [db.store().await, db.store().await];
        let tasks: Vec<_> = (0..20)
            .map(|i: usize| {
                let store = replicas[i % 2].clone();
                tokio::spawn(async move { store.reserve(&h100("train", 8), &[h100_limit(8)], at(1)).await })
            })
            .collect();
        let mut ids = BTreeSet::new();
        let mut fresh = 0;
        for task in tasks {
            match task.await.unwrap().unwrap() {
                ReserveOutcome::Granted { allocation_id, relaunch } => {
                    ids.insert(allocation_id);
                    fresh += usize::from(!relaunch);
                }
                ReserveOutcome::Denied(d) => panic!("denied: {d}"),
            }
        }
        assert_eq!((ids.len(), fresh), (1, 1));
        assert_eq!(replicas[0].list_live(None).await.unwrap().len(), 1);
    }

    /// Ending an allocation frees its quota, by id or by door and name;
    /// ending twice is harmless; ended allocations keep their record.
    async fn end_frees_capacity(db: &TestDb) {
        let store = db.store().await;
        let limits = [h100_limit(8)];
        let a = granted(store.reserve(&h100("a", 4), &limits, at(1)).await.unwrap());
        granted(store.reserve(&h100("b", 4), &limits, at(2)).await.unwrap());
        denied(store.reserve(&h100("c", 4), &limits, at(3)).await.unwrap());

        let ended = store.end(&EndTarget::Id(a), at(4)).await.unwrap();
        assert_eq!(ended.len(), 1);
        assert_eq!(ended[0].id, a);
        assert_eq!(ended[0].state, AllocationState::Ended);
        assert_eq!(ended[0].ended, Some(at(4)));
        assert!(store.end(&EndTarget::Id(a), at(5)).await.unwrap().is_empty());
        granted(store.reserve(&h100("c", 4), &limits, at(6)).await.unwrap());

        let by_name = EndTarget::Name {
            door: Door::Skypilot,
            name: AllocationName::parse("b").unwrap(),
        };
        assert_eq!(store.end(&by_name, at(7)).await.unwrap().len(), 1);
        // The name is free again: a new launch of `a` is a new allocation.
        let a2 = granted(store.reserve(&h100("a", 4), &limits, at(8)).await.unwrap());
        assert_ne!(a2, a);
        let names: BTreeSet<String> = store
            .list_live(None)
            .await
            .unwrap()
            .into_iter()
            .map(|x| x.name.to_string())
            .collect();
        assert_eq!(names, BTreeSet::from(["a".to_owned(), "c".to_owned()]));

        let ends = store
            .export_audit(at(0), at(10))
            .await
            .unwrap()
            .into_iter()
            .filter(|r| r.kind == "allocation.ended")
            .count();
        assert_eq!(ends, 2);
        assert!(store.verify_audit().await.unwrap().is_intact());
    }

    /// 200 concurrent one-GPU launches against a limit of 8, split across
    /// two independent stores on one database (two replicas): exactly 8
    /// granted, 192 denied, and 200 audit records in one intact chain.
    async fn concurrent_reserves_are_exact(db: &TestDb) {
        let replicas = [db.store().await, db.store().await];
        let limits = std::sync::Arc::new([h100_limit(8)]);
        let started = std::time::Instant::now();
        let tasks: Vec<_> = (0..200)
            .map(|i| {
                let store = replicas[i % 2].clone();
                let limits = std::sync::Arc::clone(&limits);
                tokio::spawn(async move {
                    let now = at(i64::try_from(i).unwrap());
                    store.reserve(&h100(&format!("job-{i}"), 1), &*limits, now).await
                })
            })
            .collect();
        let (mut grants, mut denials) = (0, 0);
        for task in tasks {
            match task.await.unwrap().unwrap() {
                ReserveOutcome::Granted { relaunch: false, .. } => grants += 1,
                ReserveOutcome::Denied(d) => {
                    assert_eq!((d.in_use, d.requested, d.max), (8, 1, 8));
                    denials += 1;
                }
                other => panic!("unexpected {other:?}"),
            }
        }
        eprintln!("{:?}: 200 concurrent reserves in {:?}", db.backend, started.elapsed());
        assert_eq!((grants, denials), (8, 192));
        assert_eq!(replicas[1].list_live(None).await.unwrap().len(), 8);
        let report = replicas[0].verify_audit().await.unwrap();
        assert!(report.is_intact(), "{report:?}");
        assert_eq!(report.records_checked, 200);
    }
}
