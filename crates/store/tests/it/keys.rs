//! Team API keys: create, authenticate, revoke, rotate, list, and their
//! audit records.

use std::time::Duration;

use warden_core::access::Role;
use warden_core::TeamName;
use warden_store::{
    ApiKeyId, KeyAdminError, KeyError, KeyName, KeyState, KeyUser, NewKey, RotatedExpiry, Store,
};

use crate::support::{at, on_both_backends, sql_str, TestDb};

fn new_key(team: &str, user: Option<&str>, name: &str, expires: Option<i64>) -> NewKey {
    NewKey {
        team: TeamName::parse(team).unwrap(),
        user: user.map(|u| KeyUser::parse(u).unwrap()),
        name: Some(KeyName::parse(name).unwrap()),
        expires: expires.map(at),
        role: Role::MlEngineer,
    }
}

/// `key` with the last hex digit of its secret changed.
fn with_wrong_secret(key: &str) -> String {
    let (head, last) = key.split_at(key.len() - 1);
    format!("{head}{}", if last == "0" { "1" } else { "0" })
}

async fn stored_hash(db: &TestDb, id: &ApiKeyId) -> String {
    db.scalar_text(&format!(
        "SELECT hash FROM api_keys WHERE id = {}",
        sql_str(id.as_str())
    ))
    .await
}

async fn rejection(store: &Store, key: &str, now: i64) -> KeyError {
    match store.authenticate(key, at(now)).await {
        Ok(principal) => panic!("accepted: {principal:?}"),
        Err(err) => err,
    }
}

on_both_backends! {
    /// A created key authenticates as its team and user until it expires;
    /// wrong secrets, unknown ids and other text do not.
    async fn created_keys_authenticate_until_they_expire(db: &TestDb) {
        let store = db.store().await;
        let issued = store
            .create_key(new_key("ml", Some("alice"), "ci", Some(1000)), at(10))
            .await
            .unwrap();
        let key = issued.secret.expose();
        assert!(key.starts_with(&format!("wdn_{}_", issued.key.id)), "{key}");
        assert_eq!(issued.key.created, at(10));
        assert_eq!(issued.key.expires, Some(at(1000)));

        let principal = store.authenticate(key, at(999)).await.unwrap();
        assert_eq!(principal.id, issued.key.id);
        assert_eq!(principal.team.as_str(), "ml");
        assert_eq!(principal.user.as_ref().map(KeyUser::as_str), Some("alice"));
        assert_eq!(principal.name.as_ref().map(KeyName::as_str), Some("ci"));

        let err = rejection(&store, &with_wrong_secret(key), 20).await;
        assert!(matches!(&err, KeyError::Unknown { id } if *id == issued.key.id), "{err:?}");
        let other_id = format!("wdn_{}_{}", "0".repeat(16), &key[key.len() - 64..]);
        assert!(matches!(rejection(&store, &other_id, 20).await, KeyError::Unknown { .. }));
        for text in ["", "Bearer x", &key[..key.len() - 1], &key.to_uppercase()] {
            let err = rejection(&store, text, 20).await;
            assert!(matches!(err, KeyError::Malformed), "{text}: {err:?}");
        }

        // Expired from its expiry instant on, saying when.
        let err = rejection(&store, key, 1000).await;
        assert!(matches!(err, KeyError::Expired { at: when, .. } if when == at(1000)), "{err:?}");
        assert!(err.to_string().contains("expired at 1970-01-01T00:16:40"), "{err}");
        // A wrong secret learns nothing about the key's state.
        let err = rejection(&store, &with_wrong_secret(key), 2000).await;
        assert!(matches!(err, KeyError::Unknown { .. }), "{err:?}");
        store.close().await;
    }

    /// A revoked key fails from then on, saying when it was revoked;
    /// revoking twice or an unknown id is an error.
    async fn revoked_keys_fail(db: &TestDb) {
        let store = db.store().await;
        let issued = store.create_key(new_key("ml", None, "team", None), at(10)).await.unwrap();
        let key = issued.secret.expose();
        let other = store.create_key(new_key("ml", None, "other", None), at(11)).await.unwrap();

        let revoked = store.revoke_key(&issued.key.id, at(20)).await.unwrap();
        assert_eq!(revoked.revoked, Some(at(20)));
        assert_eq!(revoked.state(at(21)), KeyState::Revoked);
        let err = rejection(&store, key, 21).await;
        assert!(matches!(err, KeyError::Revoked { at: when, .. } if when == at(20)), "{err:?}");
        assert!(err.to_string().contains("revoked at 1970-01-01T00:00:20"), "{err}");
        assert!(matches!(rejection(&store, &with_wrong_secret(key), 21).await, KeyError::Unknown { .. }));
        // The other key of the team is untouched.
        store.authenticate(other.secret.expose(), at(21)).await.unwrap();

        let err = store.revoke_key(&issued.key.id, at(30)).await.unwrap_err();
        assert!(matches!(err, KeyAdminError::Revoked { at: when, .. } if when == at(20)), "{err:?}");
        let unknown = ApiKeyId::parse("0123456789abcdef").unwrap();
        let err = store.revoke_key(&unknown, at(30)).await.unwrap_err();
        assert!(matches!(&err, KeyAdminError::NotFound(id) if *id == unknown), "{err:?}");
        // Neither failure was recorded.
        let kinds: Vec<String> = store
            .export_audit(at(0), at(100)).await.unwrap()
            .into_iter().map(|r| r.kind).collect();
        assert_eq!(kinds, ["key.created", "key.created", "key.revoked"]);
        store.close().await;
    }

    /// Rotating gives a new key of the same team, user and name; the old
    /// one works until the grace period ends, then is expired.
    async fn rotated_keys_overlap_for_the_grace_period(db: &TestDb) {
        let store = db.store().await;
        let old = store
            .create_key(new_key("ml", Some("bob"), "laptop", Some(10_000)), at(100))
            .await
            .unwrap();
        let rotated = store
            .rotate_key(&old.key.id, Duration::from_secs(3600), RotatedExpiry::SameLifetime, at(1000))
            .await
            .unwrap();
        let new = &rotated.new;
        assert_ne!(new.key.id, old.key.id);
        assert_ne!(new.secret, old.secret);
        assert_eq!((&new.key.team, &new.key.user, &new.key.name), (&old.key.team, &old.key.user, &old.key.name));
        // Same lifetime (9,900 s) counted from the rotation.
        assert_eq!(new.key.expires, Some(at(1000 + 9900)));
        assert_eq!(rotated.old.expires, Some(at(4600)));
        assert_eq!(rotated.old.rotated_to.as_ref(), Some(&new.key.id));

        store.authenticate(old.secret.expose(), at(4599)).await.unwrap();
        let err = rejection(&store, old.secret.expose(), 4600).await;
        assert!(matches!(err, KeyError::Expired { at: when, .. } if when == at(4600)), "{err:?}");
        let principal = store.authenticate(new.secret.expose(), at(4600)).await.unwrap();
        assert_eq!(principal.user.as_ref().map(KeyUser::as_str), Some("bob"));

        // A grace period past the old expiry does not extend it.
        let again = store
            .rotate_key(&new.key.id, Duration::from_secs(1_000_000), RotatedExpiry::Never, at(5000))
            .await
            .unwrap();
        assert_eq!(again.old.expires, Some(at(1000 + 9900)));
        assert_eq!(again.new.key.expires, None);
        // A grace of zero ends the old key at once.
        let third = store
            .rotate_key(&again.new.key.id, Duration::ZERO, RotatedExpiry::At(at(90_000)), at(6000))
            .await
            .unwrap();
        assert!(matches!(rejection(&store, again.new.secret.expose(), 6000).await, KeyError::Expired { .. }));
        assert_eq!(third.new.key.expires, Some(at(90_000)));

        // A revoked key cannot come back by rotation.
        store.revoke_key(&third.new.key.id, at(7000)).await.unwrap();
        let err = store
            .rotate_key(&third.new.key.id, Duration::ZERO, RotatedExpiry::Never, at(7001))
            .await
            .unwrap_err();
        assert!(matches!(err, KeyAdminError::Revoked { .. }), "{err:?}");
        assert_eq!(store.list_keys(None).await.unwrap().len(), 4);
        store.close().await;
    }

    /// Listing and audit records show ids and labels, never a key, its
    /// secret or its hash; every key event is in the verified chain.
    async fn lists_and_audit_records_hold_no_secret(db: &TestDb) {
        let store = db.store().await;
        let a = store.create_key(new_key("ml", Some("alice"), "a", None), at(1)).await.unwrap();
        let b = store.create_key(new_key("cv", None, "b", Some(50)), at(2)).await.unwrap();
        let rotated = store
            .rotate_key(&a.key.id, Duration::from_secs(60), RotatedExpiry::SameLifetime, at(3))
            .await
            .unwrap();
        store.revoke_key(&b.key.id, at(4)).await.unwrap();

        let mut secrets = Vec::new();
        for issued in [&a, &b, &rotated.new] {
            let key = issued.secret.expose().to_owned();
            secrets.push(key[key.len() - 64..].to_owned());
            secrets.push(stored_hash(db, &issued.key.id).await);
            secrets.push(key);
        }
        assert_eq!(secrets.len(), 9);

        let all = store.list_keys(None).await.unwrap();
        let ids: Vec<&ApiKeyId> = all.iter().map(|k| &k.id).collect();
        assert_eq!(ids, [&a.key.id, &b.key.id, &rotated.new.key.id]);
        assert_eq!(all[0].state(at(62)), KeyState::Active);
        assert_eq!(all[0].state(at(63)), KeyState::Expired);
        assert_eq!(all[1].state(at(5)), KeyState::Revoked);
        assert_eq!(store.get_key(&b.key.id).await.unwrap().as_ref(), Some(&all[1]));
        let unknown = ApiKeyId::parse("0123456789abcdef").unwrap();
        assert_eq!(store.get_key(&unknown).await.unwrap(), None);
        let ml = store.list_keys(Some(&TeamName::parse("ml").unwrap())).await.unwrap();
        assert_eq!(ml.len(), 2);
        assert!(ml.iter().all(|k| k.team.as_str() == "ml"));

        let listed = format!("{all:?} {}", serde_json::to_string(&all).unwrap());
        let records = store.export_audit(at(0), at(100)).await.unwrap();
        let audited = serde_json::to_string(&records).unwrap();
        for secret in &secrets {
            assert!(!listed.contains(secret.as_str()), "listing shows `{secret}`: {listed}");
            assert!(!audited.contains(secret.as_str()), "audit holds `{secret}`: {audited}");
        }
        // Debug of what was issued hides the secret too.
        let issued = format!("{a:?} {rotated:?}");
        assert!(issued.contains("[redacted]"), "{issued}");
        for secret in &secrets {
            assert!(!issued.contains(secret.as_str()), "debug shows `{secret}`: {issued}");
        }

        let kinds: Vec<&str> = records.iter().map(|r| r.kind.as_str()).collect();
        assert_eq!(kinds, ["key.created", "key.created", "key.rotated", "key.revoked"]);
        let payloads: Vec<serde_json::Value> =
            records.iter().map(|r| serde_json::from_str(&r.payload).unwrap()).collect();
        assert_eq!(payloads[0]["key_id"], a.key.id.as_str());
        assert_eq!(payloads[0]["team"], "ml");
        assert_eq!(payloads[0]["user"], "alice");
        assert_eq!(payloads[2]["key_id"], a.key.id.as_str());
        assert_eq!(payloads[2]["new_key_id"], rotated.new.key.id.as_str());
        assert_eq!(payloads[2]["old_expires_us"], 63_000_000);
        assert_eq!(payloads[3]["key_id"], b.key.id.as_str());
        assert_eq!(payloads[3]["revoked_us"], 4_000_000);
        let report = store.verify_audit().await.unwrap();
        assert!(report.is_intact(), "{report:?}");
        assert_eq!(report.records_checked, 4);
        store.close().await;
    }
}
