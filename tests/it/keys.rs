//! `warden keys` against a real SQLite store named by the config: a key is
//! printed once, works, is never shown or stored again, and can be revoked
//! and rotated.

use std::path::Path;
use std::time::SystemTime;

use warden_core::access::Role;
use warden_store::{KeyError, Store, UnixMicros};

use crate::cli::warden;
use crate::skypilot_client::TempDir;

const CONFIG: &str = "storage: sqlite://state.db\nteams:\n  ml: {users: [alice]}\n  cv: {}\n";

fn now() -> UnixMicros {
    UnixMicros::from_system_time(SystemTime::now())
}

fn hours(n: i64) -> i64 {
    n * 3_600_000_000
}

/// The one key `warden keys create`/`rotate` printed: the whole of stdout.
fn printed_key(out: &str) -> String {
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 1, "stdout is not one line: {out}");
    let key = lines[0];
    let parts: Vec<&str> = key.split('_').collect();
    assert_eq!(parts.len(), 3, "{key}");
    assert_eq!(parts[0], "wdn");
    assert!(
        parts[1].len() == 16 && parts[2].len() == 64,
        "not wdn_<16>_<64>: {key}"
    );
    assert!(
        key[4..]
            .bytes()
            .all(|b| b == b'_' || b.is_ascii_digit() || (b'a'..=b'f').contains(&b)),
        "{key}"
    );
    key.to_owned()
}

/// Every byte the store wrote (database, WAL), as text.
fn stored_bytes(dir: &Path) -> String {
    let mut all = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path
            .file_name()
            .is_some_and(|n| n.to_string_lossy().starts_with("state.db"))
        {
            all.extend(std::fs::read(&path).unwrap());
        }
    }
    assert!(!all.is_empty(), "no store files in {}", dir.display());
    String::from_utf8_lossy(&all).into_owned()
}

#[tokio::test]
async fn keys_are_shown_once_stored_as_hashes_and_revocable() {
    let dir = TempDir::new("warden-keys");
    let config = dir.0.join("warden.yaml");
    std::fs::write(&config, CONFIG).unwrap();
    let cfg = config.to_str().unwrap();

    let (code, out, err) = warden(&[
        "keys",
        "create",
        "--config",
        cfg,
        "--team",
        "ml",
        "--user",
        "alice",
        "--name",
        "ci runner",
        "--expires",
        "90d",
    ]);
    assert_eq!(code, 0, "{err}");
    let key = printed_key(&out);
    let id = &key[4..20];
    let secret = &key[21..];
    assert!(
        err.contains(&format!(
            "ml-engineer key {id} of team `ml`, user `alice`, name `ci runner`"
        )) && err.contains("only time the key is shown"),
        "{err}"
    );
    assert!(!err.contains(secret), "{err}");

    // Listing shows the key's id and labels, never the key.
    let (code, out, err) = warden(&["keys", "list", "--config", cfg]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains(id)
            && out.contains("ci runner")
            && out.contains("alice")
            && out.contains("active"),
        "{out}"
    );
    assert!(out.contains("1 key(s)"), "{out}");
    assert!(!out.contains(secret), "{out}");
    let (code, out, _) = warden(&["keys", "list", "--config", cfg, "--team", "cv"]);
    assert_eq!(code, 0);
    assert!(out.contains("0 key(s)") && !out.contains(id), "{out}");

    // The printed key is the credential; the store never holds it.
    let store = Store::connect(&format!("sqlite://{}", dir.0.join("state.db").display()))
        .await
        .unwrap();
    let principal = store.authenticate(&key, now()).await.unwrap();
    assert_eq!(principal.team.as_str(), "ml");
    assert_eq!(principal.user.as_ref().map(|u| u.as_str()), Some("alice"));
    assert!(stored_bytes(&dir.0).contains(id));
    assert!(!stored_bytes(&dir.0).contains(secret));

    let (code, out, err) = warden(&["keys", "revoke", "--config", cfg, id]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains(&format!("revoked ml-engineer key {id}")),
        "{out}"
    );
    let err = store.authenticate(&key, now()).await.unwrap_err();
    assert!(matches!(err, KeyError::Revoked { .. }), "{err:?}");
    let (_, out, _) = warden(&["keys", "list", "--config", cfg]);
    assert!(out.contains("revoked"), "{out}");

    let (code, out, err) = warden(&["keys", "revoke", "--config", cfg, id]);
    assert_eq!(code, 1);
    assert!(out.is_empty(), "{out}");
    assert!(err.contains(&format!("key `{id}` was revoked at")), "{err}");
    let (code, _, err) = warden(&["keys", "revoke", "--config", cfg, &key]);
    assert_eq!(code, 1);
    assert!(err.contains("is not a key id"), "{err}");
    assert!(!err.contains(secret), "{err}");

    // Every event is in the audit chain, without the key.
    let (code, out, err) = warden(&["audit", "export", "--config", cfg]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(out.lines().count(), 2, "{out}");
    assert!(
        out.contains("key.created") && out.contains("key.revoked"),
        "{out}"
    );
    assert!(!out.contains(secret), "{out}");
    store.close().await;
}

/// A key has a role (default `ml-engineer`) and expires after
/// `keys.max_age_days` (default 90) unless `--expires` says otherwise;
/// `never` must be explicit; an admin key is made here only while none is
/// active (bootstrap); a rotated key keeps its role.
#[tokio::test]
async fn keys_have_roles_and_expire_by_default() {
    let dir = TempDir::new("warden-keys-roles");
    let config = dir.0.join("warden.yaml");
    std::fs::write(&config, CONFIG).unwrap();
    let cfg = config.to_str().unwrap();
    let store_url = format!("sqlite://{}", dir.0.join("state.db").display());
    let create = |extra: &[&str]| {
        let mut args = vec!["keys", "create", "--config", cfg, "--team", "ml"];
        args.extend_from_slice(extra);
        warden(&args)
    };

    let before = now();
    let (code, out, err) = create(&[]);
    assert_eq!(code, 0, "{err}");
    let default_key = printed_key(&out);
    assert!(err.contains("ml-engineer key"), "{err}");
    let (code, out, err) = create(&["--role", "viewer", "--expires", "never"]);
    assert_eq!(code, 0, "{err}");
    let viewer = printed_key(&out);
    assert!(
        err.contains("viewer key") && err.contains("expires: never"),
        "{err}"
    );

    let store = Store::connect(&store_url).await.unwrap();
    let p = store.authenticate(&default_key, now()).await.unwrap();
    assert_eq!(p.role, Role::MlEngineer);
    let expires = p.expires.expect("a key expires by default").micros();
    let ninety = before.micros() + hours(24 * 90);
    assert!(
        (ninety..ninety + hours(1)).contains(&expires),
        "expires {expires}, want 90 days after {}",
        before.micros()
    );
    let p = store.authenticate(&viewer, now()).await.unwrap();
    assert_eq!((p.role, p.expires), (Role::Viewer, None));

    // `keys.max_age_days` sets the default.
    std::fs::write(&config, format!("{CONFIG}keys: {{max_age_days: 7}}\n")).unwrap();
    let (code, out, err) = create(&[]);
    assert_eq!(code, 0, "{err}");
    let week = store.authenticate(&printed_key(&out), now()).await.unwrap();
    let expires = week.expires.unwrap().micros();
    assert!(expires <= now().micros() + hours(24 * 7), "{expires}");
    std::fs::write(&config, format!("{CONFIG}keys: {{max_age_days: 0}}\n")).unwrap();
    let (code, _, err) = create(&[]);
    assert_eq!(code, 1);
    assert!(
        err.contains("keys.max_age_days: `0` is out of range; use 1 to 3650"),
        "{err}"
    );
    std::fs::write(&config, CONFIG).unwrap();

    let (code, _, err) = create(&["--role", "overlord"]);
    assert_eq!(code, 1);
    assert!(
        err.contains("--role: `overlord` is not a role; use one of `admin`"),
        "{err}"
    );

    // One admin key for bootstrap; a second is refused while it is active.
    let (code, out, err) = create(&["--role", "admin"]);
    assert_eq!(code, 0, "{err}");
    let admin = printed_key(&out);
    let (code, out, err) = create(&["--role", "admin"]);
    assert_eq!(code, 1, "{out}");
    assert!(
        err.contains("an active admin key exists")
            && err.contains(&admin[4..20])
            && err.contains("warden keys revoke"),
        "{err}"
    );
    let (code, _, err) = warden(&["keys", "revoke", "--config", cfg, &admin[4..20]]);
    assert_eq!(code, 0, "{err}");
    let (code, _, err) = create(&["--role", "admin"]);
    assert_eq!(code, 0, "{err}");

    // The list shows roles; a rotated key keeps its role.
    let (_, out, _) = warden(&["keys", "list", "--config", cfg]);
    assert!(
        out.contains("role") && out.contains("viewer") && out.contains("admin"),
        "{out}"
    );
    let (code, out, err) = warden(&["keys", "rotate", "--config", cfg, &viewer[4..20]]);
    assert_eq!(code, 0, "{err}");
    let rotated = store.authenticate(&printed_key(&out), now()).await.unwrap();
    assert_eq!(rotated.role, Role::Viewer);
    store.close().await;
}

#[tokio::test]
async fn rotated_keys_overlap_for_the_grace_period() {
    let dir = TempDir::new("warden-keys-rotate");
    let config = dir.0.join("warden.yaml");
    std::fs::write(&config, CONFIG).unwrap();
    let cfg = config.to_str().unwrap();

    let (code, out, err) = warden(&["keys", "create", "--config", cfg, "--team", "cv"]);
    assert_eq!(code, 0, "{err}");
    let old = printed_key(&out);
    let old_id = &old[4..20];

    let (code, out, err) = warden(&["keys", "rotate", "--config", cfg, old_id, "--grace", "1h"]);
    assert_eq!(code, 0, "{err}");
    let new = printed_key(&out);
    assert_ne!(new, old);
    assert!(
        err.contains(&format!("The old key {old_id} keeps working until")),
        "{err}"
    );

    let store = Store::connect(&format!("sqlite://{}", dir.0.join("state.db").display()))
        .await
        .unwrap();
    let t = now();
    store.authenticate(&old, t).await.unwrap();
    let after_grace = UnixMicros::from_micros(t.micros() + hours(2));
    let err = store.authenticate(&old, after_grace).await.unwrap_err();
    assert!(matches!(err, KeyError::Expired { .. }), "{err:?}");
    let principal = store.authenticate(&new, after_grace).await.unwrap();
    assert_eq!(principal.team.as_str(), "cv");
    assert_eq!(principal.user, None);

    let (_, out, _) = warden(&["keys", "list", "--config", cfg]);
    assert!(
        out.contains(&new[4..20]) && out.contains("2 key(s)"),
        "{out}"
    );
    assert!(
        !out.contains(&old[21..]) && !out.contains(&new[21..]),
        "{out}"
    );
    store.close().await;
}

#[test]
fn unknown_teams_and_bad_input_are_refused_without_a_key() {
    let dir = TempDir::new("warden-keys-errors");
    let config = dir.0.join("warden.yaml");
    std::fs::write(&config, CONFIG).unwrap();
    let cfg = config.to_str().unwrap();

    let (code, out, err) = warden(&["keys", "create", "--config", cfg, "--team", "nlp"]);
    assert_eq!(code, 1);
    assert!(out.is_empty(), "a key was printed: {out}");
    assert!(
        err.contains("team `nlp` is not in") && err.contains("known teams: `ml`, `cv`"),
        "{err}"
    );

    let (code, out, err) = warden(&[
        "keys",
        "create",
        "--config",
        cfg,
        "--team",
        "ml",
        "--expires",
        "soon",
    ]);
    assert_eq!(code, 1);
    assert!(out.is_empty(), "{out}");
    assert!(err.contains("--expires") && err.contains("`90d`"), "{err}");

    let (code, _, err) = warden(&["keys", "rotate", "--config", cfg, "0123456789abcdef"]);
    assert_eq!(code, 1);
    assert!(err.contains("no key has id `0123456789abcdef`"), "{err}");

    let (code, out, _) = warden(&["keys", "list", "--config", cfg]);
    assert_eq!(code, 0);
    assert!(out.contains("0 key(s)"), "{out}");
}
