//! Time-limited exceptions in the store: active exactly from grant to end
//! or revocation, expiry recorded once, every change audited.

use warden_core::TeamName;
use warden_store::{ExceptionError, NewException};

use crate::support::{at, on_both_backends};

fn new(team: &str, user: Option<&str>, until: i64) -> NewException {
    NewException {
        team: TeamName::parse(team).unwrap(),
        user: user.map(str::to_owned),
        rule: "gpu-cap".to_owned(),
        reason: "deadline".to_owned(),
        granted_by: "cli".to_owned(),
        until: at(until),
    }
}

on_both_backends! {
    /// Active from the grant until the end (exclusive) or the revocation;
    /// per team; the expiry is recorded once; grant, revocation and expiry
    /// are audit records; a revoked or ended exception cannot be revoked.
    async fn exceptions_are_active_between_grant_and_end_or_revocation(db: &TestDb) {
        let store = db.store().await;
        let ml = TeamName::parse("ml").unwrap();
        let a = store.grant_exception(new("ml", Some("alice"), 100), at(10)).await.unwrap();
        let b = store.grant_exception(new("ml", None, 1000), at(20)).await.unwrap();
        store.grant_exception(new("cv", None, 1000), at(20)).await.unwrap();
        assert!(b.id > a.id);
        let ids = |v: Vec<warden_store::StoredException>| v.iter().map(|x| x.id).collect::<Vec<_>>();
        assert_eq!(ids(store.active_exceptions(&ml, at(9)).await.unwrap()), Vec::<i64>::new());
        assert_eq!(ids(store.active_exceptions(&ml, at(10)).await.unwrap()), vec![a.id]);
        assert_eq!(ids(store.active_exceptions(&ml, at(99)).await.unwrap()), vec![a.id, b.id]);
        assert_eq!(ids(store.active_exceptions(&ml, at(100)).await.unwrap()), vec![b.id]);

        // Revoked at 500: active before, not from then on (also asked later
        // about an earlier instant, as a replay does).
        let revoked = store.revoke_exception(b.id, at(500)).await.unwrap();
        assert_eq!(revoked.revoked, Some(at(500)));
        assert_eq!(ids(store.active_exceptions(&ml, at(499)).await.unwrap()), vec![b.id]);
        assert!(store.active_exceptions(&ml, at(500)).await.unwrap().is_empty());
        assert!(matches!(
            store.revoke_exception(b.id, at(600)).await,
            Err(ExceptionError::Revoked { .. })
        ));
        assert!(matches!(
            store.revoke_exception(a.id, at(600)).await,
            Err(ExceptionError::Ended { .. })
        ));
        assert!(matches!(store.revoke_exception(999, at(600)).await, Err(ExceptionError::NotFound(999))));

        // Expiry: recorded once, only for what ended and was not revoked.
        let ended = store.expire_exceptions(at(700)).await.unwrap();
        assert_eq!(ids(ended), vec![a.id]);
        assert!(store.expire_exceptions(at(800)).await.unwrap().is_empty());
        let listed = store.list_exceptions(Some(&ml)).await.unwrap();
        assert_eq!(listed.len(), 2);
        assert_eq!(listed.iter().find(|x| x.id == a.id).unwrap().expired, Some(at(700)));

        let kinds: Vec<String> = store
            .export_audit(at(0), at(10_000))
            .await
            .unwrap()
            .into_iter()
            .map(|r| r.kind)
            .collect();
        assert_eq!(
            kinds,
            ["exception.granted", "exception.granted", "exception.granted", "exception.revoked", "exception.expired"]
        );
        assert!(store.verify_audit().await.unwrap().problem.is_none());
    }
}
