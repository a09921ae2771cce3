use warden_core::{Door, TeamName, Usd};
use warden_store::{AllocationName, AllocationState, Limit, Settled};

use crate::support::{at, denied, granted, launch, on_both_backends};

fn name(n: &str) -> AllocationName {
    AllocationName::parse(n).unwrap()
}

fn vast(team: &str, n: &str, hourly: i64) -> warden_store::AllocationRequest {
    let mut req = launch(team, Some("alice"), n, Some("RTX_4090"), 1);
    req.door = Door::Vast;
    req.hourly = Usd::from_micros(hourly);
    req
}

on_both_backends! {
    /// A placeholder becomes the instance: renamed, with its price and
    /// start, audited; settling twice changes nothing more.
    async fn settle_renames_once(db: &TestDb) {
        let store = db.store().await;
        let ml = TeamName::parse("ml").unwrap();
        granted(store.reserve(&vast("ml", "pending:1001:r1", 500_000), &[], at(0)).await.unwrap());
        let settled = store
            .settle(Door::Vast, &ml, &name("pending:1001:r1"), &name("5001"), at(10))
            .await
            .unwrap();
        let Settled::Renamed(a) = settled else { panic!("{settled:?}") };
        assert_eq!((a.name.as_str(), a.hourly.micros(), a.started), ("5001", 500_000, at(0)));
        // A second settle (the reconciler after the door) finds it done.
        let again = store
            .settle(Door::Vast, &ml, &name("pending:1001:r1"), &name("5001"), at(11))
            .await
            .unwrap();
        assert!(matches!(again, Settled::AlreadySettled(ref b) if b.id == a.id), "{again:?}");
        let live = store.list_live(Some(&ml)).await.unwrap();
        assert_eq!(live.len(), 1);
        // Cost from the reservation's start: one hour.
        assert_eq!(store.spend(&ml, at(0), at(3600)).await.unwrap(), Usd::from_micros(500_000));
        let kinds: Vec<String> = store.export_audit(at(0), at(100)).await.unwrap().into_iter().map(|r| r.kind).collect();
        assert_eq!(kinds, ["allocation.granted", "allocation.settled"]);
        assert!(store.verify_audit().await.unwrap().is_intact());
    }

    /// A placeholder whose instance never came to exist is voided: ended
    /// at its start, it costs nothing and frees its quota and budget hold.
    async fn void_leaves_no_spend_and_frees_the_quota(db: &TestDb) {
        let store = db.store().await;
        let ml = TeamName::parse("ml").unwrap();
        let one = [Limit::LiveAllocations { scope: warden_store::Scope::Team, max: 1 }];
        let id = match store.reserve(&vast("ml", "pending:1001:r1", 900_000), &one, at(0)).await.unwrap() {
            warden_store::ReserveOutcome::Granted { allocation_id, .. } => allocation_id,
            other => panic!("{other:?}"),
        };
        denied(store.reserve(&vast("ml", "pending:1002:r2", 900_000), &one, at(5)).await.unwrap());
        let voided = store.void(id, "the create failed upstream (HTTP 400)", at(3600)).await.unwrap().unwrap();
        assert_eq!((voided.state, voided.ended), (AllocationState::Ended, Some(at(0))));
        assert_eq!(store.spend(&ml, at(0), at(7200)).await.unwrap(), Usd::ZERO);
        assert!(store.void(id, "again", at(3601)).await.unwrap().is_none());
        granted(store.reserve(&vast("ml", "pending:1002:r3", 900_000), &one, at(3700)).await.unwrap());
        let records = store.export_audit(at(0), at(9999)).await.unwrap();
        let voided: serde_json::Value = serde_json::from_str(&records[2].payload).unwrap();
        assert_eq!(records[2].kind, "allocation.voided");
        assert_eq!(voided["reason"], "the create failed upstream (HTTP 400)");
    }

    /// A void keeps the budget's summaries in step: a voided reservation
    /// neither holds nor has spent anything, at once and later.
    async fn void_frees_the_budget(db: &TestDb) {
        let store = db.store().await;
        let ml = TeamName::parse("ml").unwrap();
        let budget = |from: i64| Limit::Budget {
            from: at(from),
            max: Usd::from_micros(1_000_000),
            reservation: Usd::from_micros(900_000),
        };
        let id = granted(store.reserve(&vast("ml", "pending:1:a", 900_000), &[budget(0)], at(10)).await.unwrap());
        denied(store.reserve(&vast("ml", "pending:2:b", 900_000), &[budget(0)], at(20)).await.unwrap());
        store.void(id, "no instance", at(30)).await.unwrap().unwrap();
        granted(store.reserve(&vast("ml", "pending:2:c", 900_000), &[budget(0)], at(40)).await.unwrap());
        // Much later the voided one still counts nothing: $0.90 for the hour
        // the second ran, within the $1 budget.
        assert_eq!(store.spend(&ml, at(0), at(3640)).await.unwrap(), Usd::from_micros(900_000));
        denied(store.reserve(&vast("ml", "pending:3:d", 200_000), &[Limit::Budget { from: at(0), max: Usd::from_micros(1_000_000), reservation: Usd::from_micros(200_000) }], at(3640)).await.unwrap());
        granted(store.reserve(&vast("ml", "pending:3:e", 100_000), &[Limit::Budget { from: at(0), max: Usd::from_micros(1_000_000), reservation: Usd::from_micros(100_000) }], at(3640)).await.unwrap());
    }

    /// Settling onto a name that is live already voids the placeholder
    /// (never two allocations for one instance); settling a placeholder
    /// that is gone changes nothing.
    async fn settle_never_makes_two_allocations_for_one_name(db: &TestDb) {
        let store = db.store().await;
        let ml = TeamName::parse("ml").unwrap();
        granted(store.reserve(&vast("ml", "5001", 500_000), &[], at(0)).await.unwrap());
        granted(store.reserve(&vast("ml", "pending:1001:r1", 500_000), &[], at(1)).await.unwrap());
        let s = store.settle(Door::Vast, &ml, &name("pending:1001:r1"), &name("5001"), at(2)).await.unwrap();
        assert!(matches!(s, Settled::AlreadySettled(_)), "{s:?}");
        let live = store.list_live(Some(&ml)).await.unwrap();
        assert_eq!(live.iter().map(|a| a.name.as_str()).collect::<Vec<_>>(), ["5001"]);
        let s = store.settle(Door::Vast, &ml, &name("pending:9:r9"), &name("5009"), at(3)).await.unwrap();
        assert_eq!(s, Settled::Missing);
    }

    /// A settled allocation is found by the placeholder it was settled
    /// from, within a window, for its door and team only, live or ended;
    /// a placeholder still pending, or one voided, is not.
    async fn settled_since_finds_what_a_placeholder_became(db: &TestDb) {
        let store = db.store().await;
        let (ml, cv) = (TeamName::parse("ml").unwrap(), TeamName::parse("cv").unwrap());
        granted(store.reserve(&vast("ml", "pending:1001:r1", 500_000), &[], at(0)).await.unwrap());
        granted(store.reserve(&vast("ml", "pending:1001:r2", 500_000), &[], at(1)).await.unwrap());
        granted(store.reserve(&vast("ml", "pending:10011:r3", 500_000), &[], at(2)).await.unwrap());
        granted(store.reserve(&vast("cv", "pending:1001:r4", 500_000), &[], at(3)).await.unwrap());
        let pending = granted(store.reserve(&vast("ml", "pending:1001:r5", 500_000), &[], at(4)).await.unwrap());
        let voided = granted(store.reserve(&vast("ml", "pending:1001:r6", 500_000), &[], at(5)).await.unwrap());
        store.void(voided, "no instance", at(6)).await.unwrap().unwrap();
        store.void(pending, "no instance", at(6)).await.unwrap().unwrap();
        granted(store.reserve(&vast("ml", "pending:1001:r7", 500_000), &[], at(7)).await.unwrap());
        for (team, from, to, when) in [
            (&ml, "pending:1001:r1", "5001", 100),
            (&ml, "pending:1001:r2", "5002", 200),
            (&ml, "pending:10011:r3", "5003", 300),
            (&cv, "pending:1001:r4", "5004", 400),
        ] {
            let s = store.settle(Door::Vast, team, &name(from), &name(to), at(when)).await.unwrap();
            assert!(matches!(s, Settled::Renamed(_)), "{s:?}");
        }
        let found = |since: i64| {
            let store = store.clone();
            let ml = ml.clone();
            async move {
                store
                    .settled_since(Door::Vast, &ml, "pending:1001:", at(since))
                    .await
                    .unwrap()
                    .into_iter()
                    .map(|(a, from)| (a.name.as_str().to_owned(), from.as_str().to_owned(), a.state))
                    .collect::<Vec<_>>()
            }
        };
        assert_eq!(
            found(0).await,
            [
                ("5002".to_owned(), "pending:1001:r2".to_owned(), AllocationState::Live),
                ("5001".to_owned(), "pending:1001:r1".to_owned(), AllocationState::Live),
            ]
        );
        assert_eq!(found(150).await.len(), 1);
        assert!(found(201).await.is_empty());
        // Ended since: still found, as ended.
        store.end(&warden_store::EndTarget::Name { door: Door::Vast, name: name("5002") }, at(500)).await.unwrap();
        assert_eq!(found(150).await, [("5002".to_owned(), "pending:1001:r2".to_owned(), AllocationState::Ended)]);
        // Another door never matches.
        assert!(store.settled_since(Door::Skypilot, &ml, "pending:1001:", at(0)).await.unwrap().is_empty());
        // A prefix with LIKE's wildcards is matched literally.
        assert!(store.settled_since(Door::Vast, &ml, "pending:1001%", at(0)).await.unwrap().is_empty());
        assert!(store.settled_since(Door::Vast, &ml, "pending:1001_", at(0)).await.unwrap().is_empty());
        assert_eq!(store.settled_since(Door::Vast, &ml, "pending:", at(0)).await.unwrap().len(), 3);
    }

    /// Who a name belongs to, live or ended, for one door only.
    async fn allocations_named_finds_live_and_ended(db: &TestDb) {
        let store = db.store().await;
        granted(store.reserve(&vast("ml", "5001", 1), &[], at(0)).await.unwrap());
        granted(store.reserve(&vast("cv", "5002", 1), &[], at(1)).await.unwrap());
        granted(store.reserve(&launch("ml", None, "5003", None, 0), &[], at(2)).await.unwrap());
        store.end(&warden_store::EndTarget::Name { door: Door::Vast, name: name("5002") }, at(3)).await.unwrap();
        let found = store
            .allocations_named(Door::Vast, &[name("5001"), name("5002"), name("5003"), name("nope")])
            .await
            .unwrap();
        let got: Vec<(&str, &str, AllocationState)> =
            found.iter().map(|a| (a.name.as_str(), a.team.as_str(), a.state)).collect();
        assert_eq!(got, [("5001", "ml", AllocationState::Live), ("5002", "cv", AllocationState::Ended)]);
        assert!(store.allocations_named(Door::Vast, &[]).await.unwrap().is_empty());
    }
}
