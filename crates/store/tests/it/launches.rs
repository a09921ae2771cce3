//! `Limit::Launches`: token-bucket launch rates, exact under concurrency,
//! refilled over time, per user or per team.

use std::time::Duration;

use warden_store::{
    EndTarget, InputError, Limit, ReserveOutcome, Scope, StoreError, UnixMicros, Write, Written,
};

use crate::support::{at, denied, granted, launch, on_both_backends};

const MINUTE: i64 = 60;

fn per_user(max: u32, per: Duration) -> Limit {
    Limit::Launches {
        scope: Scope::User,
        max,
        per,
    }
}

fn per_team(max: u32, per: Duration) -> Limit {
    Limit::Launches {
        scope: Scope::Team,
        max,
        per,
    }
}

/// `at(s)` plus `us` microseconds.
fn at_us(s: i64, us: i64) -> UnixMicros {
    UnixMicros::from_micros(at(s).micros() + us)
}

on_both_backends! {
    /// 50 launches by one user at once, through two replicas' writers and
    /// the one-call path, against 5 per hour: exactly 5 granted; every
    /// denial says a launch is possible again in 12 minutes.
    async fn concurrent_launches_are_exact(db: &TestDb) {
        let replicas = [db.store().await, db.store().await];
        let limits = vec![per_user(5, Duration::from_secs(3600))];
        let now = at(1000);
        let tasks: Vec<_> = (0..50)
            .map(|i: usize| {
                let store = replicas[i % 2].clone();
                let request = launch("ml", Some("alice"), &format!("job-{i}"), Some("H100"), 1);
                let limits = limits.clone();
                tokio::spawn(async move {
                    if i % 5 == 0 {
                        store.reserve(&request, &limits, now).await
                    } else {
                        match store.write(Write::Reserve { request, limits }, now).await {
                            Ok(Written::Reserved(outcome)) => Ok(outcome),
                            other => panic!("unexpected {other:?}"),
                        }
                    }
                })
            })
            .collect();
        let (mut grants, mut denials) = (0, 0);
        for task in tasks {
            match task.await.unwrap().unwrap() {
                ReserveOutcome::Granted { relaunch: false, .. } => grants += 1,
                ReserveOutcome::Denied(d) => {
                    assert_eq!((d.in_use, d.requested, d.max), (5, 1, 5));
                    assert_eq!(d.retry_at, Some(at(1000 + 12 * MINUTE)));
                    denials += 1;
                }
                other => panic!("unexpected {other:?}"),
            }
        }
        assert_eq!((grants, denials), (5, 45));
        assert_eq!(replicas[1].list_live(None).await.unwrap().len(), 5);
        let report = replicas[0].verify_audit().await.unwrap();
        assert!(report.is_intact(), "{report:?}");
        assert_eq!(report.records_checked, 50);
    }

    /// 2 per 10 minutes: a burst of 2, then one every 5 minutes, to the
    /// microsecond; never more than 2 banked. Re-launches and denials take
    /// nothing; ending an allocation gives nothing back.
    async fn buckets_refill_over_time(db: &TestDb) {
        let store = db.store().await;
        let limits = [per_user(2, Duration::from_secs(10 * MINUTE as u64))];
        let alice = |name: &str| launch("ml", Some("alice"), name, None, 0);
        let a = granted(store.reserve(&alice("a"), &limits, at(0)).await.unwrap());
        granted(store.reserve(&alice("b"), &limits, at(0)).await.unwrap());
        let denial = denied(store.reserve(&alice("c"), &limits, at(0)).await.unwrap());
        assert_eq!(denial.retry_at, Some(at(5 * MINUTE)));
        assert_eq!(
            denial.to_string(),
            "launch rate exceeded: at most 2 launches per 10m per user; \
             next launch possible at 1970-01-01T00:05:00.000000Z"
        );
        // Ending frees quota, not launches.
        store.end(&EndTarget::Id(a), at(MINUTE)).await.unwrap();
        let denial = denied(store.reserve(&alice("c"), &limits, at_us(5 * MINUTE, -1)).await.unwrap());
        assert_eq!(denial.retry_at, Some(at(5 * MINUTE)));
        granted(store.reserve(&alice("c"), &limits, at(5 * MINUTE)).await.unwrap());
        let denial = denied(store.reserve(&alice("d"), &limits, at(5 * MINUTE)).await.unwrap());
        assert_eq!(denial.retry_at, Some(at(10 * MINUTE)));
        // A re-launch of the live `b` at 10 minutes is granted and takes
        // nothing: the token of 10 minutes is still there for `d`.
        let relaunch = store.reserve(&alice("b"), &limits, at(10 * MINUTE)).await.unwrap();
        assert!(matches!(relaunch, ReserveOutcome::Granted { relaunch: true, .. }));
        granted(store.reserve(&alice("d"), &limits, at(10 * MINUTE)).await.unwrap());
        denied(store.reserve(&alice("e"), &limits, at(10 * MINUTE)).await.unwrap());
        // An hour later the bucket is full: 2, not 12.
        granted(store.reserve(&alice("e"), &limits, at(70 * MINUTE)).await.unwrap());
        granted(store.reserve(&alice("f"), &limits, at(70 * MINUTE)).await.unwrap());
        let denial = denied(store.reserve(&alice("g"), &limits, at(70 * MINUTE)).await.unwrap());
        assert_eq!(denial.retry_at, Some(at(75 * MINUTE)));
        // The denial is in the audit chain with when to retry.
        let records = store.export_audit(at(0), at(100 * MINUTE)).await.unwrap();
        let last = records.iter().rev().find(|r| r.kind == "allocation.denied").unwrap();
        let payload: serde_json::Value = serde_json::from_str(&last.payload).unwrap();
        assert_eq!(payload["denial"]["limit"]["limit"], "launches");
        assert_eq!(payload["denial"]["limit"]["per_us"], 600_000_000);
        assert_eq!(payload["denial"]["retry_at"], at(75 * MINUTE).micros());
    }

    /// A per-user bucket is the user's alone (launches without a user
    /// share one); a per-team bucket counts everyone in the team and no one
    /// else; limits with other numbers are other buckets.
    async fn buckets_are_per_user_and_per_team(db: &TestDb) {
        let store = db.store().await;
        let hour = Duration::from_secs(3600);
        let one_each = [per_user(1, hour)];
        let by = |user: Option<&str>, name: &str| launch("ml", user, name, None, 0);
        granted(store.reserve(&by(Some("alice"), "a1"), &one_each, at(0)).await.unwrap());
        denied(store.reserve(&by(Some("alice"), "a2"), &one_each, at(0)).await.unwrap());
        granted(store.reserve(&by(Some("bob"), "b1"), &one_each, at(0)).await.unwrap());
        granted(store.reserve(&by(None, "n1"), &one_each, at(0)).await.unwrap());
        denied(store.reserve(&by(None, "n2"), &one_each, at(0)).await.unwrap());
        // Another limit, another bucket: alice may launch under it.
        granted(store.reserve(&by(Some("alice"), "a3"), &[per_user(1, 2 * hour)], at(0)).await.unwrap());

        // Per team: three launches by anyone in `ml`, then none; `cv` is
        // not affected.
        let team_limit = [per_team(3, hour)];
        granted(store.reserve(&by(Some("carol"), "t1"), &team_limit, at(1)).await.unwrap());
        granted(store.reserve(&by(Some("dave"), "t2"), &team_limit, at(1)).await.unwrap());
        granted(store.reserve(&by(None, "t3"), &team_limit, at(1)).await.unwrap());
        let denial = denied(store.reserve(&by(Some("erin"), "t4"), &team_limit, at(1)).await.unwrap());
        assert_eq!(denial.limit, team_limit[0]);
        granted(store.reserve(&launch("cv", Some("carol"), "t1", None, 0), &team_limit, at(1)).await.unwrap());

        // A limit listed twice takes one launch per grant.
        let twice = [per_user(2, 3 * hour), per_user(2, 3 * hour)];
        granted(store.reserve(&by(Some("gina"), "g1"), &twice, at(1)).await.unwrap());
        granted(store.reserve(&by(Some("gina"), "g2"), &twice, at(1)).await.unwrap());
        denied(store.reserve(&by(Some("gina"), "g3"), &twice, at(1)).await.unwrap());

        // Zero allows nothing, and says no retry time.
        let none = [per_user(0, hour)];
        let denial = denied(store.reserve(&by(Some("frank"), "z"), &none, at(1)).await.unwrap());
        assert_eq!((denial.in_use, denial.max, denial.retry_at), (0, 0, None));
    }

    /// A window under a microsecond is refused before anything is written.
    async fn zero_windows_are_refused(db: &TestDb) {
        let store = db.store().await;
        let limits = vec![per_user(5, Duration::from_nanos(999))];
        let request = launch("ml", Some("alice"), "a", None, 0);
        let err = store.reserve(&request, &limits, at(0)).await.unwrap_err();
        assert!(matches!(err, StoreError::Input(InputError::LaunchWindow(_))), "{err}");
        let err = store.write(Write::Reserve { request, limits }, at(0)).await.unwrap_err();
        assert!(matches!(err, StoreError::Input(InputError::LaunchWindow(_))), "{err}");
        assert_eq!(store.verify_audit().await.unwrap().records_checked, 0);
    }
}
