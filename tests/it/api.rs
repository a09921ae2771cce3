//! The admin API: `POST /api/v1/access/review` (the router driven
//! in-process, keys in a real SQLite store).

use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt;
use serde_json::{json, Value};
use tower::ServiceExt;
use warden_core::access::Role;
use warden_core::{Policy, TeamName};
use warden_server::{router, AppState};
use warden_store::{NewKey, Store, UnixMicros};

use crate::skypilot_client::TempDir;

const POLICY: &str = r#"
teams:
  ml: {users: [root]}
  cv: {}
role_bindings:
  - {group: finance, role: viewer, teams: "*"}
  - {group: ml-leads, role: team-lead, team: ml}
  - {user: alice, role: ml-engineer, team: ml}
"#;

async fn key(store: &Store, team: &str, role: Role) -> String {
    store
        .create_key(
            NewKey {
                team: TeamName::parse(team).unwrap(),
                user: Some(warden_store::KeyUser::parse("kim").unwrap()),
                name: None,
                expires: None,
                role,
            },
            UnixMicros::from_system_time(std::time::SystemTime::now()),
        )
        .await
        .unwrap()
        .secret
        .expose()
        .to_owned()
}

async fn review(app: &axum::Router, key: Option<&str>, body: &str) -> (StatusCode, Value, String) {
    let mut req = Request::post("/api/v1/access/review").header("content-type", "application/json");
    if let Some(key) = key {
        req = req.header("authorization", format!("Bearer {key}"));
    }
    let resp = app
        .clone()
        .oneshot(req.body(Body::from(body.to_owned())).unwrap())
        .await
        .unwrap();
    let status = resp.status();
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    let text = String::from_utf8(bytes.to_vec()).unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::Null),
        text,
    )
}

/// An admin reviews anyone: the answer is the core's, with the binding or
/// what is missing; any key reviews itself; reviewing another subject
/// needs an admin (403); no key is 401; bad input a 400 naming the field.
#[tokio::test]
async fn access_reviews_answer_like_subject_access_reviews() {
    let dir = TempDir::new("warden-api-review");
    let store = Store::connect(&format!("sqlite://{}", dir.0.join("w.db").display()))
        .await
        .unwrap();
    let state = AppState::with_store(
        Policy::from_yaml(POLICY).unwrap(),
        None,
        Some(store.clone()),
    );
    let app = router(Arc::clone(&state));
    let admin = key(&store, "ml", Role::Admin).await;
    let viewer = key(&store, "cv", Role::Viewer).await;

    let cases = [
        (
            json!({"groups": ["finance"], "verb": "read", "resource": "spend", "team": "cv"}),
            true,
            "role_bindings[0] (group `finance`, `viewer`)",
        ),
        (
            json!({"user": "fay", "groups": ["finance"], "verb": "create", "resource": "launch", "team": "ml"}),
            false,
            "`fay` is `viewer` in team `ml`, and none of those may create launch",
        ),
        (
            json!({"user": "lee", "groups": ["ml-leads"], "verb": "delete", "resource": "allocations", "team": "ml"}),
            true,
            "`team-lead` may delete allocations in team `ml`",
        ),
        (
            json!({"user": "lee", "groups": ["ml-leads"], "verb": "delete", "resource": "allocations", "team": "cv"}),
            false,
            "`lee` has no role in team `cv`",
        ),
        (
            json!({"user": "alice", "verb": "delete", "resource": "allocations", "team": "ml", "owner": "bob"}),
            false,
            "`ml-engineer` may delete only its own allocations",
        ),
        (
            json!({"user": "alice", "verb": "delete", "resource": "allocations", "team": "ml", "owner": "alice"}),
            true,
            "its own allocations",
        ),
        (
            json!({"user": "root", "verb": "create", "resource": "launch", "team": "ml"}),
            true,
            "listed under `teams.ml.users`",
        ),
    ];
    for (body, allowed, reason) in cases {
        let (status, answer, text) = review(&app, Some(&admin), &body.to_string()).await;
        assert_eq!(status, StatusCode::OK, "{body}: {text}");
        assert_eq!(answer["allowed"], allowed, "{body}: {answer}");
        assert_eq!(answer["denied"], !allowed, "{body}: {answer}");
        assert!(
            answer["reason"].as_str().unwrap().contains(reason),
            "{body}: {answer}"
        );
    }

    // Any key may ask about itself.
    let (status, answer, _) = review(
        &app,
        Some(&viewer),
        r#"{"verb": "read", "resource": "spend", "team": "cv"}"#,
    )
    .await;
    assert_eq!(
        (status, answer["allowed"].clone()),
        (StatusCode::OK, json!(true)),
        "{answer}"
    );
    let (_, answer, _) = review(
        &app,
        Some(&viewer),
        r#"{"verb": "create", "resource": "launch", "team": "cv"}"#,
    )
    .await;
    assert_eq!(answer["allowed"], false, "{answer}");
    assert!(
        answer["reason"].as_str().unwrap().contains("`viewer`"),
        "{answer}"
    );
    // But not about someone else.
    let (status, _, text) = review(
        &app,
        Some(&viewer),
        r#"{"user": "root", "verb": "read", "resource": "spend", "team": "cv"}"#,
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{text}");
    assert!(text.contains("may read policy"), "{text}");

    let (status, _, text) = review(
        &app,
        None,
        r#"{"verb": "read", "resource": "spend", "team": "cv"}"#,
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{text}");
    assert!(text.contains("needs a Warden key"), "{text}");

    let long = "x".repeat(300);
    for (body, want) in [
        (
            r#"{"verb": "fly", "resource": "spend", "team": "cv"}"#.to_owned(),
            "`verb`: `fly` is not a verb",
        ),
        (
            r#"{"verb": "read", "resource": "gpus", "team": "cv"}"#.to_owned(),
            "`resource`: `gpus` is not a resource",
        ),
        (
            r#"{"verb": "read", "resource": "spend", "team": "nlp"}"#.to_owned(),
            "`team`: `nlp` is not a team",
        ),
        (
            r#"{"verb": "read", "resource": "spend"}"#.to_owned(),
            "missing field `team`",
        ),
        (
            r#"{"verb": "read", "resource": "spend", "team": "cv", "as": "root"}"#.to_owned(),
            "unknown field `as`",
        ),
        (
            format!(r#"{{"user": "{long}", "verb": "read", "resource": "spend", "team": "cv"}}"#),
            "longer than the 256 allowed",
        ),
        ("[[[[".to_owned(), "is not an access review"),
    ] {
        let (status, _, text) = review(&app, Some(&admin), &body).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}: {text}");
        assert!(text.contains(want), "{body}: {text}");
    }
    store.close().await;
}
