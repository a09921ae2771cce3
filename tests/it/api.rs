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

const MATRIX_POLICY: &str = r#"
teams:
  ml: {users: [kim, bob]}
  cv: {users: [carl]}
rules:
  - {name: gpu-cap, match: {when: 'request.gpus > 8'}, deny: "at most 8 GPUs"}
exceptions: {max_hours: 24, team_leads_may_lift: [gpu-cap]}
"#;

pub(crate) async fn call(
    app: &axum::Router,
    key: &str,
    method: &str,
    uri: &str,
    body: Option<Value>,
) -> (StatusCode, String) {
    let req = Request::builder()
        .method(method)
        .uri(uri)
        .header("authorization", format!("Bearer {key}"))
        .header("content-type", "application/json")
        .body(Body::from(body.map(|b| b.to_string()).unwrap_or_default()))
        .unwrap();
    let resp = app.clone().oneshot(req).await.unwrap();
    let status = resp.status();
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8(bytes.to_vec()).unwrap())
}

async fn live(store: &Store, team: &str, user: &str, name: &str) -> i64 {
    let req = warden_store::AllocationRequest {
        door: warden_core::Door::Skypilot,
        team: TeamName::parse(team).unwrap(),
        user: Some(user.to_owned()),
        name: warden_store::AllocationName::parse(name).unwrap(),
        gpu_model: None,
        gpus: 1,
        hourly: warden_core::Usd::from_micros(1_000_000),
        context: None,
    };
    match store
        .reserve(
            &req,
            &[],
            UnixMicros::from_system_time(std::time::SystemTime::now()),
        )
        .await
        .unwrap()
    {
        warden_store::ReserveOutcome::Granted { allocation_id, .. } => allocation_id.get(),
        other => panic!("{other:?}"),
    }
}

/// Walks every admin API endpoint for each of `callers` (bearer tokens of
/// the five roles in team `ml`, in the order admin, team lead, ML engineer,
/// inference operator, viewer), in its own team (`ml`) and in another
/// (`cv`), and checks the status against the roles table.
pub(crate) async fn walk_role_matrix(app: &axum::Router, callers: &[(Role, String)]) {
    let keys = callers;
    let month = {
        let now = UnixMicros::from_system_time(std::time::SystemTime::now()).to_string();
        now[..7].to_owned()
    };
    let decision = {
        let raw = std::fs::read(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("tests/fixtures/skypilot-0.14.1/07_launch_server_worker.json"),
        )
        .unwrap();
        let text: String = serde_json::from_slice(&raw).unwrap();
        serde_json::from_str::<Value>(&text).unwrap()
    };

    // (endpoint, what each role gets in its own team, in the other team),
    // roles in the order above: admin, lead, engineer, operator, viewer.
    type Row = (&'static str, &'static str, [u16; 5], [u16; 5]);
    let rows: [Row; 12] = [
        ("GET", "/api/v1/me", [200; 5], [200; 5]),
        ("GET", "/api/v1/teams", [200; 5], [200; 5]),
        (
            "GET",
            "/api/v1/keys?team={t}",
            [200, 200, 403, 403, 403],
            [200, 403, 403, 403, 403],
        ),
        (
            "POST",
            "/api/v1/keys",
            [200, 200, 403, 403, 403],
            [200, 403, 403, 403, 403],
        ),
        (
            "GET",
            "/api/v1/allocations?team={t}",
            [200, 200, 200, 403, 200],
            [200, 403, 403, 403, 403],
        ),
        (
            "GET",
            "/api/v1/audit?team={t}",
            [200, 200, 403, 403, 403],
            [200, 403, 403, 403, 403],
        ),
        (
            "GET",
            "/api/v1/exceptions?team={t}",
            [200, 200, 403, 403, 403],
            [200, 403, 403, 403, 403],
        ),
        (
            "POST",
            "/api/v1/exceptions",
            [200, 200, 403, 403, 403],
            [200, 403, 403, 403, 403],
        ),
        (
            "GET",
            "/api/v1/reports/spend?team={t}&month={m}",
            [200, 200, 403, 403, 200],
            [200, 403, 403, 403, 200],
        ),
        (
            "GET",
            "/api/v1/reports/chargeback?month={m}",
            [200, 403, 403, 403, 403],
            [200, 403, 403, 403, 403],
        ),
        ("POST", "/api/v1/access/review", [200; 5], [200; 5]),
        ("POST", "/api/v1/decisions", [200; 5], [200; 5]),
    ];
    // A viewer bound to every team reads cv's spend too; a key is bound to
    // one team, so the viewer key of ml does not.
    let mut rows = rows;
    rows[8].3 = [200, 403, 403, 403, 403];
    for (method, pattern, own, other) in rows {
        for (team, want) in [("ml", own), ("cv", other)] {
            for ((role, key), want) in keys.iter().zip(want) {
                let uri = pattern.replace("{t}", team).replace("{m}", &month);
                let body = match (method, pattern) {
                    ("POST", "/api/v1/keys") => Some(json!({"team": team, "role": "viewer"})),
                    ("POST", "/api/v1/exceptions") => Some(
                        json!({"team": team, "rule": "gpu-cap", "hours": 1, "reason": "matrix"}),
                    ),
                    ("POST", "/api/v1/access/review") => {
                        Some(json!({"verb": "read", "resource": "spend", "team": team}))
                    }
                    ("POST", "/api/v1/decisions") => Some(decision.clone()),
                    _ => None,
                };
                let (status, text) = call(app, key, method, &uri, body).await;
                assert_eq!(
                    status.as_u16(),
                    want,
                    "{role} {method} {uri} (team {team}): {text}"
                );
                if want == 403 {
                    assert!(
                        text.contains(&format!("`{role}`")) || text.contains("has no role"),
                        "{role} {uri}: {text}"
                    );
                }
            }
        }
    }
}

/// Every role × every admin API endpoint × its own team and another team:
/// the status each gets follows the roles table (200 allowed, 403 denied
/// with the role in the message; 404 where the thing is hidden).
#[tokio::test]
async fn every_role_gets_what_the_roles_table_gives_at_every_endpoint() {
    let dir = TempDir::new("warden-api-matrix");
    let path = dir.0.join("warden.yaml");
    std::fs::write(
        &path,
        format!(
            "storage: sqlite://{}\n{MATRIX_POLICY}",
            dir.0.join("w.db").display()
        ),
    )
    .unwrap();
    let config = warden_server::config::load_config(&path).unwrap();
    let store = Store::connect(config.storage.as_deref().unwrap())
        .await
        .unwrap();
    let state = AppState::with_store(config.policy, None, Some(store.clone()));
    state.apply_settings(config.settings);
    let app = router(Arc::clone(&state));
    let roles = [
        Role::Admin,
        Role::TeamLead,
        Role::MlEngineer,
        Role::InferenceOperator,
        Role::Viewer,
    ];
    let mut keys = Vec::new();
    for role in roles {
        keys.push((role, key(&store, "ml", role).await));
    }
    walk_role_matrix(&app, &keys).await;

    // Revoking a key: an admin anywhere, a team lead in its team; others
    // do not even see it (404) or may not (403).
    for (team, want) in [
        ("ml", [200, 200, 404, 404, 404]),
        ("cv", [200, 404, 404, 404, 404]),
    ] {
        for ((role, caller_key), want) in keys.iter().zip(want) {
            let target = key(&store, team, Role::Viewer).await;
            let id = &target[4..20];
            let (status, text) = call(
                &app,
                caller_key,
                "DELETE",
                &format!("/api/v1/keys/{id}"),
                None,
            )
            .await;
            assert_eq!(
                status.as_u16(),
                want,
                "{role} revokes a key of {team}: {text}"
            );
        }
    }
    // A team lead may not make an admin key; a made key works at once.
    let lead = &keys[1].1;
    let (status, text) = call(
        &app,
        lead,
        "POST",
        "/api/v1/keys",
        Some(json!({"team": "ml", "role": "admin"})),
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{text}");
    assert!(
        text.contains("may make keys of roles up to its own in team `ml`, not `admin`"),
        "{text}"
    );
    let (_, text) = call(
        &app,
        lead,
        "POST",
        "/api/v1/keys",
        Some(json!({"team": "ml", "role": "viewer", "name": "dash"})),
    )
    .await;
    let made: Value = serde_json::from_str(&text).unwrap();
    let new_key = made["key"].as_str().unwrap().to_owned();
    let (status, text) = call(&app, &new_key, "GET", "/api/v1/me", None).await;
    assert_eq!(status, StatusCode::OK, "{text}");
    assert!(text.contains("\"role\":\"viewer\""), "{text}");
    // A team lead lifts only the rules the config lets it.
    let (status, text) = call(
        &app,
        lead,
        "POST",
        "/api/v1/exceptions",
        Some(json!({"team": "ml", "rule": "team.max_nodes", "hours": 1, "reason": "x"})),
    )
    .await;
    assert_eq!(
        status,
        StatusCode::BAD_REQUEST,
        "no such limit in this policy: {text}"
    );

    // Ending allocations: an ML engineer its own only; a team lead any of
    // the team's; a viewer none.
    let kims = live(&store, "ml", "kim", "kims").await;
    let bobs = live(&store, "ml", "bob", "bobs").await;
    let engineer = &keys[2].1;
    let viewer = &keys[4].1;
    let (status, text) = call(
        &app,
        engineer,
        "POST",
        &format!("/api/v1/allocations/{bobs}/end"),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{text}");
    assert!(
        text.contains("may delete only its own allocations"),
        "{text}"
    );
    let (status, text) = call(
        &app,
        viewer,
        "POST",
        &format!("/api/v1/allocations/{kims}/end"),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{text}");
    let (status, text) = call(
        &app,
        engineer,
        "POST",
        &format!("/api/v1/allocations/{kims}/end"),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{text}");
    let (status, text) = call(
        &app,
        lead,
        "POST",
        &format!("/api/v1/allocations/{bobs}/end"),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{text}");
    // Every write carries its actor in the audit chain.
    let admin = &keys[0].1;
    let (_, text) = call(
        &app,
        admin,
        "GET",
        "/api/v1/audit?kind=allocation.ended",
        None,
    )
    .await;
    let page: Value = serde_json::from_str(&text).unwrap();
    let actors: Vec<&str> = page["records"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|r| r["payload"]["actor"].as_str())
        .collect();
    assert_eq!(actors.len(), 2, "{text}");
    assert!(actors.iter().all(|a| a.starts_with("key:")), "{actors:?}");
    let (_, text) = call(
        &app,
        admin,
        "GET",
        "/api/v1/audit?kind=key.created&limit=1000",
        None,
    )
    .await;
    assert!(text.contains("\"actor\":\"key:"), "{text}");

    // The OpenAPI document describes the endpoints.
    let resp = app
        .clone()
        .oneshot(
            Request::get("/api/v1/openapi.json")
                .body(Body::empty())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(
        resp.status(),
        StatusCode::UNAUTHORIZED,
        "the document needs a credential too"
    );
    let (status, text) = call(&app, admin, "GET", "/api/v1/openapi.json", None).await;
    assert_eq!(status, StatusCode::OK, "{text}");
    let doc: Value = serde_json::from_str(&text).unwrap();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3.1"), "{doc}");
    for p in [
        "/api/v1/keys",
        "/api/v1/allocations/{id}/end",
        "/api/v1/audit",
        "/api/v1/exceptions",
        "/api/v1/access/review",
    ] {
        assert!(doc["paths"].get(p).is_some(), "{p} missing");
    }
    store.close().await;
}

/// `warden` with `WARDEN_TOKEN` set to `token`.
fn warden_as(token: &str, args: &[&str]) -> (i32, String, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_warden"))
        .args(args)
        .env("WARDEN_TOKEN", token)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).to_string(),
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}

/// A team lead manages its team's keys and exceptions from the command
/// line over the admin API (`--server`, token in `WARDEN_TOKEN`), with its
/// role's limits, against the real `warden serve`.
#[test]
fn the_cli_manages_keys_and_exceptions_over_the_admin_api() {
    let dir = TempDir::new("warden-api-cli");
    let config = dir.0.join("warden.yaml");
    let db = dir.0.join("state.db");
    std::fs::write(
        &config,
        format!("storage: sqlite://{}\n{MATRIX_POLICY}", db.display()),
    )
    .unwrap();
    let cfg = config.to_str().unwrap();
    let (code, out, err) = crate::cli::warden(&[
        "keys",
        "create",
        "--config",
        cfg,
        "--team",
        "ml",
        "--role",
        "team-lead",
        "--user",
        "lee",
    ]);
    assert_eq!(code, 0, "{err}");
    let lead = out.trim().to_owned();
    let server = crate::skypilot_client::Server::start_with_storage(
        &config,
        &format!("sqlite://{}", db.display()),
    );
    let url = format!("http://{}", server.addr);

    let (code, out, err) = warden_as(
        &lead,
        &[
            "keys",
            "create",
            "--server",
            &url,
            "--team",
            "ml",
            "--role",
            "viewer",
            "--expires",
            "30d",
        ],
    );
    assert_eq!(code, 0, "{err}");
    let made = out.trim().to_owned();
    assert!(
        made.starts_with("wdn_") && out.lines().count() == 1,
        "{out}"
    );
    assert!(
        err.contains("viewer key") && err.contains("only time the key is shown"),
        "{err}"
    );
    let (code, out, err) = warden_as(&lead, &["keys", "list", "--server", &url, "--team", "ml"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains(&made[4..20]) && out.contains("viewer") && !out.contains(&made[21..]),
        "{out}"
    );
    // Limits of the role hold over the API.
    let (code, _, err) = warden_as(
        &lead,
        &[
            "keys", "create", "--server", &url, "--team", "ml", "--role", "admin",
        ],
    );
    assert_eq!(code, 1);
    assert!(
        err.contains("answered 403") && err.contains("not `admin`"),
        "{err}"
    );
    let (code, _, err) = warden_as(&lead, &["keys", "list", "--server", &url, "--team", "cv"]);
    assert_eq!(code, 1);
    assert!(
        err.contains("answered 403") && err.contains("no role in team `cv`"),
        "{err}"
    );
    let (code, out, err) = warden_as(&lead, &["keys", "revoke", "--server", &url, &made[4..20]]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("revoked viewer key"), "{out}");

    let (code, out, err) = warden_as(
        &lead,
        &[
            "exceptions",
            "grant",
            "--server",
            &url,
            "--team",
            "ml",
            "--rule",
            "gpu-cap",
            "--for",
            "2h",
            "--reason",
            "deadline",
        ],
    );
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("granted exception 1: team `ml` may go past `gpu-cap`"),
        "{out}"
    );
    let (code, out, err) = warden_as(
        &lead,
        &["exceptions", "list", "--server", &url, "--team", "ml"],
    );
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("deadline") && out.contains("1 exception(s)"),
        "{out}"
    );
    let (code, out, err) = warden_as(&lead, &["exceptions", "revoke", "--server", &url, "1"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("revoked exception 1"), "{out}");

    // The token never crosses a network in clear; a token is required.
    let (code, _, err) = warden_as(&lead, &["keys", "list", "--server", "http://10.0.0.1:8080"]);
    assert_eq!(code, 1);
    assert!(err.contains("would send your token in clear"), "{err}");
    let (code, _, err) = warden_as("", &["keys", "list", "--server", &url]);
    assert_eq!(code, 1);
    assert!(err.contains("WARDEN_TOKEN"), "{err}");
}
