//! `Store::spend` and `Limit::Budget`: exact spend over a window, and
//! budgets that stay exact under concurrency and group commit.

use warden_core::{TeamName, Usd};
use warden_store::{
    AllocationRequest, EndTarget, Limit, ReserveOutcome, Store, UnixMicros, Write, Written,
};

use crate::support::{at, denied, granted, launch, on_both_backends};

const HOUR: i64 = 3600;

fn ml() -> TeamName {
    TeamName::parse("ml").unwrap()
}

fn dollars(n: i64) -> Usd {
    Usd::from_micros(n * 1_000_000)
}

/// A launch by team `ml` at `hourly` dollars per hour.
fn priced(name: &str, hourly: i64) -> AllocationRequest {
    AllocationRequest {
        hourly: dollars(hourly),
        ..launch("ml", Some("alice"), name, Some("H100"), 1)
    }
}

fn budget(max: i64, reservation: i64) -> Limit {
    Limit::Budget {
        from: at(0),
        max: dollars(max),
        reservation: dollars(reservation),
    }
}

async fn spend(store: &Store, team: &TeamName, from: UnixMicros, to: UnixMicros) -> i64 {
    store.spend(team, from, to).await.unwrap().micros()
}

on_both_backends! {
    /// Spend sums hourly × overlap with the window over ended and live
    /// allocations, only of the team asked about, rounded down once.
    async fn spend_counts_overlap_with_the_window(db: &TestDb) {
        let store = db.store().await;
        // a: $3/h for [0, 1h). b: $6/h from 30 min on, live.
        // d: $3/h for one second at 2h. Another team's allocation is not
        // counted.
        let a = granted(store.reserve(&priced("a", 3), &[], at(0)).await.unwrap());
        store.end(&EndTarget::Id(a), at(HOUR)).await.unwrap();
        granted(store.reserve(&priced("b", 6), &[], at(HOUR / 2)).await.unwrap());
        let d = granted(store.reserve(&priced("d", 3), &[], at(2 * HOUR)).await.unwrap());
        store.end(&EndTarget::Id(d), at(2 * HOUR + 1)).await.unwrap();
        let other = AllocationRequest {
            hourly: dollars(1000),
            ..launch("infra", None, "x", None, 0)
        };
        granted(store.reserve(&other, &[], at(0)).await.unwrap());

        let team = ml();
        // a: $3, b: half an hour at $6/h.
        assert_eq!(spend(&store, &team, at(0), at(HOUR)).await, 6_000_000);
        // a: $1.50, b: 2 h at $6/h = $12, d: $3/h × 1 s = $0.000833(3).
        assert_eq!(spend(&store, &team, at(HOUR / 2), at(5 * HOUR / 2)).await, 13_500_833);
        // b alone, later: 10 h at $6/h; ended allocations do not count.
        assert_eq!(spend(&store, &team, at(3 * HOUR), at(13 * HOUR)).await, 60_000_000);
        // Before anything started, and empty or reversed windows.
        assert_eq!(spend(&store, &team, at(-HOUR), at(0)).await, 0);
        assert_eq!(spend(&store, &team, at(HOUR), at(HOUR)).await, 0);
        assert_eq!(spend(&store, &team, at(2 * HOUR), at(HOUR)).await, 0);
        let infra = TeamName::parse("infra").unwrap();
        assert_eq!(spend(&store, &infra, at(0), at(HOUR / 3600)).await, 277_777);
    }

    /// A budget counts spend since `from` and what live allocations still
    /// hold of their reservations; a launch whose reservation would pass it
    /// is denied with the numbers a message needs; reaching it exactly is
    /// allowed.
    async fn budget_denies_with_spend_reservation_and_max(db: &TestDb) {
        let store = db.store().await;
        // Spent before the period: not counted.
        let old = granted(store.reserve(&priced("old", 50), &[], at(-2 * HOUR)).await.unwrap());
        store.end(&EndTarget::Id(old), at(0)).await.unwrap();
        // $3/h for 10 h: $30 spent.
        let x = granted(store.reserve(&priced("x", 3), &[budget(100, 3)], at(0)).await.unwrap());
        store.end(&EndTarget::Id(x), at(10 * HOUR)).await.unwrap();
        // $60/h reserving one hour: counts $60 while it has accrued less.
        let t = 10 * HOUR;
        granted(store.reserve(&priced("y", 60), &[budget(100, 60)], at(t)).await.unwrap());
        // Half an hour later: $30 + $30 accrued + $30 still held = $90.
        let now = at(t + HOUR / 2);
        let denial = denied(store.reserve(&priced("z", 15), &[budget(100, 15)], now).await.unwrap());
        assert_eq!(
            (denial.in_use, denial.requested, denial.max),
            (90_000_000, 15_000_000, 100_000_000)
        );
        assert_eq!(
            denial.to_string(),
            "budget exceeded: budget $100.00 per team since 1970-01-01T00:00:00.000000Z; \
             $90.00 spent or held by live allocations, this launch reserves $15.00"
        );
        // Up to the budget exactly is allowed; then nothing more fits.
        granted(store.reserve(&priced("w", 10), &[budget(100, 10)], now).await.unwrap());
        let denial = denied(store.reserve(&priced("v", 1), &[budget(100, 1)], now).await.unwrap());
        assert_eq!(denial.in_use, 100_000_000);
        // A launch that reserves nothing is not denied by a budget.
        granted(store.reserve(&priced("free", 0), &[budget(100, 0)], now).await.unwrap());
        // The denial is in the audit chain with its numbers.
        let records = store.export_audit(at(-3 * HOUR), at(20 * HOUR)).await.unwrap();
        let last_denied = records.iter().rev().find(|r| r.kind == "allocation.denied").unwrap();
        let payload: serde_json::Value = serde_json::from_str(&last_denied.payload).unwrap();
        assert_eq!(payload["denial"]["limit"]["limit"], "budget");
        assert_eq!(payload["denial"]["in_use"], 100_000_000);
        assert!(store.verify_audit().await.unwrap().is_intact());
    }

    /// 50 concurrent writes, each reserving $10 against a $100 budget,
    /// through two replicas' writers (so within group-commit batches and
    /// across replicas): exactly 10 granted.
    async fn concurrent_budget_reservations_are_exact(db: &TestDb) {
        let replicas = [db.store().await, db.store().await];
        let limits = vec![budget(100, 10)];
        let tasks: Vec<_> = (0..50)
            .map(|i: i64| {
                let store = replicas[usize::try_from(i % 2).unwrap()].clone();
                let write = Write::Reserve {
                    request: priced(&format!("job-{i}"), 10),
                    limits: limits.clone(),
                };
                tokio::spawn(async move { store.write(write, at(i)).await })
            })
            .collect();
        let (mut grants, mut denials) = (0, 0);
        for task in tasks {
            match task.await.unwrap().unwrap() {
                Written::Reserved(ReserveOutcome::Granted { relaunch: false, .. }) => grants += 1,
                Written::Reserved(ReserveOutcome::Denied(d)) => {
                    assert_eq!((d.in_use, d.requested, d.max), (100_000_000, 10_000_000, 100_000_000));
                    denials += 1;
                }
                other => panic!("unexpected {other:?}"),
            }
        }
        assert_eq!((grants, denials), (10, 40));
        assert_eq!(replicas[1].list_live(None).await.unwrap().len(), 10);
        let report = replicas[0].verify_audit().await.unwrap();
        assert!(report.is_intact(), "{report:?}");
        assert_eq!(report.records_checked, 50);
    }
}
