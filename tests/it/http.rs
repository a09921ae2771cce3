//! The SkyPilot door over HTTP (router driven in-process): every captured
//! fixture replays, and malformed input gets a precise 4xx.

use std::path::{Path, PathBuf};

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt;
use tower::ServiceExt;
use warden_core::Policy;
use warden_server::{router, AppState};

fn fixtures() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/skypilot-0.14.1");
    let mut v: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    v.sort();
    v
}

const POLICY: &str = "teams:\n  ml: {users: [root], workspaces: [default], max_gpus_per_launch: 8}\nrules:\n  - {name: spot, match: {resource: 'resource.gpus > 0'}, use_spot: true}\n  - {name: k8s, set: {config.kubernetes.custom_metadata.labels.app: skypilot}}\n";

async fn post(policy: &str, body: Vec<u8>) -> (StatusCode, String, String) {
    let app = router(AppState::new(Policy::from_yaml(policy).unwrap(), None));
    let resp = app
        .oneshot(
            Request::post("/skypilot")
                .header("content-type", "application/json")
                // As from an API server on this machine (a trusted server).
                .extension(ConnectInfo(std::net::SocketAddr::from((
                    [127, 0, 0, 1],
                    46000,
                ))))
                .body(Body::from(body))
                .unwrap(),
        )
        .await
        .unwrap();
    let status = resp.status();
    let ctype = resp
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    (status, ctype, String::from_utf8(bytes.to_vec()).unwrap())
}

/// Decodes a success body the way SkyPilot does: `response.json()` gives a
/// string, which is parsed again into `{task, skypilot_config}`, each YAML.
fn decode_answer(body: &str) -> (serde_json::Value, serde_json::Value) {
    let inner: String = serde_json::from_str(body).expect("a JSON string literal");
    let obj: serde_json::Value = serde_json::from_str(&inner).expect("an object inside");
    assert_eq!(obj.as_object().unwrap().len(), 2, "{obj}");
    let task = serde_norway::from_str(obj["task"].as_str().unwrap()).unwrap();
    let config = serde_norway::from_str(obj["skypilot_config"].as_str().unwrap()).unwrap();
    (task, config)
}

#[tokio::test]
async fn every_fixture_replays() {
    let files = fixtures();
    assert_eq!(files.len(), 7);
    for f in files {
        let body = std::fs::read(&f).unwrap();
        let (status, ctype, text) = post(POLICY, body).await;
        assert_eq!(status, StatusCode::OK, "{}: {text}", f.display());
        assert_eq!(ctype, "application/json");
        let (task, config) = decode_answer(&text);
        assert!(
            task["_user_specified_yaml"].is_string(),
            "{}: fields kept",
            f.display()
        );
        assert_eq!(config["admin_policy"], "http://127.0.0.1:18080/mutate");
        let name = f.file_name().unwrap().to_string_lossy().to_string();
        if name.starts_with("06") {
            // The controller is exempt: nothing changes, not even the config.
            assert!(
                config.get("kubernetes").unwrap()["custom_metadata"]["labels"]
                    .get("app")
                    .is_none()
            );
        } else {
            assert_eq!(
                config["kubernetes"]["custom_metadata"]["labels"]["app"], "skypilot",
                "{name}"
            );
        }
        let gpu = task["resources"].get("accelerators").is_some();
        assert_eq!(
            task["resources"].get("use_spot") == Some(&serde_json::Value::Bool(true)),
            gpu || name.starts_with("07"),
            "{name}"
        );
    }
}

#[tokio::test]
async fn a_denial_is_a_400_text_message_naming_the_rule() {
    let body = std::fs::read(Path::new(env!("CARGO_MANIFEST_DIR")).join(
        "tests/fixtures/skypilot-0.14.1/03_multinode_labels_autostop_sky_launch_client.json",
    ))
    .unwrap();
    let (status, ctype, text) = post(
        &POLICY.replace("max_gpus_per_launch: 8", "max_gpus_per_launch: 4"),
        body,
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(ctype, "text/plain; charset=utf-8");
    assert!(
        text.contains("[team.max_gpus_per_launch] requests 8 GPUs (A100:2 × 4 nodes)"),
        "{text}"
    );
    assert!(text.contains("at most 4 GPUs"), "{text}");
}

#[tokio::test]
async fn malformed_input_gets_a_precise_4xx() {
    let cases: Vec<(Vec<u8>, StatusCode, &str)> = vec![
        (b"".to_vec(), StatusCode::BAD_REQUEST, "body is empty"),
        (
            b"{not json".to_vec(),
            StatusCode::BAD_REQUEST,
            "not a SkyPilot admin-policy request",
        ),
        (
            b"\"unterminated".to_vec(),
            StatusCode::BAD_REQUEST,
            "not a valid JSON string literal",
        ),
        (
            br#"{"task": 42, "skypilot_config": ""}"#.to_vec(),
            StatusCode::BAD_REQUEST,
            "field `task`",
        ),
        (
            br#"{"skypilot_config": ""}"#.to_vec(),
            StatusCode::BAD_REQUEST,
            "missing field `task`",
        ),
        (
            br#"{"task": "a: [1, 2", "skypilot_config": ""}"#.to_vec(),
            StatusCode::BAD_REQUEST,
            "`task` is not valid YAML",
        ),
        (
            br#"{"task": "- just\n- a list\n", "skypilot_config": ""}"#.to_vec(),
            StatusCode::BAD_REQUEST,
            "`task` must be a YAML mapping",
        ),
        (
            br#"{"task": "num_nodes: -3\n", "skypilot_config": ""}"#.to_vec(),
            StatusCode::BAD_REQUEST,
            "`num_nodes` must be a positive integer",
        ),
        (
            br#"{"task": "resources: {accelerators: 'H100:lots'}\n", "skypilot_config": ""}"#
                .to_vec(),
            StatusCode::BAD_REQUEST,
            "count `lots` of `H100` is not a number",
        ),
        (
            br#"{"task": "resources: {accelerators: 7}\n", "skypilot_config": ""}"#.to_vec(),
            StatusCode::BAD_REQUEST,
            "`resources.accelerators` must be",
        ),
        (
            br#"{"task": "resources: {any_of: 3}\n", "skypilot_config": ""}"#.to_vec(),
            StatusCode::BAD_REQUEST,
            "`resources.any_of` must be a list",
        ),
        (
            br#"{"task": "", "skypilot_config": "a: [", "request_name": "launch"}"#.to_vec(),
            StatusCode::BAD_REQUEST,
            "`skypilot_config` is not valid YAML",
        ),
        (
            br#"{"task": "", "skypilot_config": "", "at_client_side": "yes"}"#.to_vec(),
            StatusCode::BAD_REQUEST,
            "field `at_client_side`",
        ),
        (
            vec![b' '; 2 * 1024 * 1024],
            StatusCode::PAYLOAD_TOO_LARGE,
            "larger than the 1 MiB limit",
        ),
    ];
    // A policy that reads the config, so config errors surface.
    for (body, want_status, want_text) in cases {
        let preview = String::from_utf8_lossy(&body[..body.len().min(60)]).to_string();
        let (status, _, text) = post(POLICY, body).await;
        assert_eq!(status, want_status, "{preview}: {text}");
        assert!(
            text.contains(want_text),
            "{preview}: want {want_text:?} in {text:?}"
        );
    }
}

#[tokio::test]
async fn unknown_fields_pass_through_untouched() {
    let task = "name: t\nresources:\n  accelerators: H100:1\n  my_field: {x: 1}\nexperimental:\n  config_overrides: {a: 1}\nenvs:\n  TOKEN: secret\n";
    let inner =
        serde_json::json!({"task": task, "skypilot_config": "x: 1\n", "future_field": true})
            .to_string();
    let (status, _, text) = post(
        POLICY
            .replace("teams:", "default_team: ml\nteams:")
            .as_str(),
        serde_json::to_vec(&inner).unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{text}");
    let (task, config) = decode_answer(&text);
    assert_eq!(task["resources"]["my_field"]["x"], 1);
    assert_eq!(task["experimental"]["config_overrides"]["a"], 1);
    assert_eq!(task["resources"]["use_spot"], true);
    assert_eq!(config["x"], 1);
}

#[tokio::test]
async fn health_and_readiness() {
    let app = router(AppState::new(Policy::from_yaml(POLICY).unwrap(), None));
    let resp = app
        .clone()
        .oneshot(Request::get("/healthz").body(Body::empty()).unwrap())
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let resp = app
        .oneshot(Request::get("/readyz").body(Body::empty()).unwrap())
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let text = String::from_utf8(
        resp.into_body()
            .collect()
            .await
            .unwrap()
            .to_bytes()
            .to_vec(),
    )
    .unwrap();
    assert!(text.contains("1 teams, 3 rules"), "{text}");
}

/// One HTTP/1.1 exchange with a running server; (status, body).
async fn exchange(addr: std::net::SocketAddr, method: &str, path: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(
        format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
            .as_bytes(),
    )
    .await
    .unwrap();
    let mut resp = String::new();
    s.read_to_string(&mut resp).await.unwrap();
    let status = resp.split(' ').nth(1).unwrap().parse().unwrap();
    let body = resp.split_once("\r\n\r\n").unwrap().1.to_owned();
    (status, body)
}

/// `Application::build` wires what a config describes, as `warden serve`
/// does: the store (ready), the Vast door with the embedded simulator (it
/// answers, asking for a team key), and it stops when told.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_application_is_built_from_a_config_as_serve_builds_it() {
    let dir = crate::skypilot_client::TempDir::new("warden-app-build");
    let path = dir.0.join("warden.yaml");
    std::fs::write(
        &path,
        "storage: sqlite://state.db\nvast: {api_key_env: WARDEN_TEST_NO_SUCH_VAST_KEY_VAR}\nteams: {ml: {}}\n",
    )
    .unwrap();
    // A configured key that is missing is an error naming the config and the variable.
    let config = warden_server::config::load_config(&path).unwrap();
    let e = warden_server::Application::build(config, &path, "127.0.0.1:0")
        .await
        .err()
        .unwrap()
        .to_string();
    assert!(
        e.contains(&format!("{}: cannot start the Vast door", path.display()))
            && e.contains("WARDEN_TEST_NO_SUCH_VAST_KEY_VAR"),
        "{e}"
    );

    std::fs::write(&path, "storage: sqlite://state.db\nteams: {ml: {}}\n").unwrap();
    let config = warden_server::config::load_config(&path).unwrap();
    let app = warden_server::Application::build(config, &path, "127.0.0.1:0")
        .await
        .unwrap();
    let addr = app.local_addr().unwrap();
    assert_eq!(
        app.state().store().map(|s| s.backend_name()),
        Some("sqlite")
    );
    assert!(dir.0.join("state.db").exists());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let served = tokio::spawn(app.run(async move {
        let _ = stopped.await;
    }));
    let (status, body) = exchange(addr, "GET", "/readyz").await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = exchange(addr, "GET", "/vast/api/v0/users/current/").await;
    assert_eq!(status, 401, "{body}");
    assert!(body.contains("warden keys create"), "{body}");
    stop.send(()).unwrap();
    served.await.unwrap().unwrap();
}

/// `serve --http-threads N`: every thread answers (many connections at
/// once, each answered), a shutdown lets a request already on its way
/// finish on whichever thread holds it, and then the port is closed (no
/// thread keeps a copy of the listening socket).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_http_thread_serves_and_a_shutdown_drains_requests_in_flight() {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let dir = crate::skypilot_client::TempDir::new("warden-http-threads");
    let path = dir.0.join("warden.yaml");
    std::fs::write(&path, "storage: none\ndefault_team: ml\nteams: {ml: {}}\n").unwrap();
    let config = warden_server::config::load_config(&path).unwrap();
    let app = warden_server::Application::build(config, &path, "127.0.0.1:0")
        .await
        .unwrap()
        .with_http_threads(3);
    let addr = app.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let served = tokio::spawn(app.run(async move {
        let _ = stopped.await;
    }));
    let body = std::fs::read(fixtures().into_iter().next().unwrap()).unwrap();
    let request = |body: &[u8]| {
        let mut r = format!(
            "POST /skypilot HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            body.len()
        )
        .into_bytes();
        r.extend_from_slice(body);
        r
    };
    let answers: Vec<_> = (0..24)
        .map(|_| {
            let r = request(&body);
            tokio::spawn(async move {
                let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
                s.write_all(&r).await.unwrap();
                let mut resp = String::new();
                s.read_to_string(&mut resp).await.unwrap();
                resp
            })
        })
        .collect();
    for a in answers {
        let resp = a.await.unwrap();
        assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    }

    // Half a request, then the shutdown, then the rest: still answered.
    let whole = request(&body);
    let (first, rest) = whole.split_at(whole.len() - 100);
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(first).await.unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    stop.send(()).unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    s.write_all(rest).await.unwrap();
    let mut resp = String::new();
    s.read_to_string(&mut resp).await.unwrap();
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    tokio::time::timeout(std::time::Duration::from_secs(20), served)
        .await
        .expect("run returns once every thread has drained")
        .unwrap()
        .unwrap();
    assert!(
        tokio::net::TcpStream::connect(addr).await.is_err(),
        "the port is closed after the shutdown"
    );
}

/// A server-side SkyPilot request (`at_client_side: false`, or any request
/// naming a `user`) is honoured only from `skypilot.trusted_servers`
/// (default: loopback); from anywhere else it is refused (403) with the
/// reason and the fix, and reserves nothing. A client-side request without
/// a user is judged from anywhere.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_side_requests_are_honoured_only_from_trusted_servers() {
    let dir = crate::skypilot_client::TempDir::new("warden-trusted");
    let path = dir.0.join("warden.yaml");
    let fixture = |name: &str| {
        std::fs::read(
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("tests/fixtures/skypilot-0.14.1")
                .join(name),
        )
        .unwrap()
    };
    let worker = fixture("07_launch_server_worker.json");
    let client = fixture("02_cpu_sky_launch_client.json");
    let post = |addr: String, body: Vec<u8>| {
        tokio::task::spawn_blocking(move || {
            crate::wire::exchange(
                &addr,
                "POST",
                "/skypilot",
                &[],
                &body,
                std::time::Duration::from_secs(10),
            )
            .unwrap()
        })
    };
    for (trusted, worker_allowed) in [
        ("", true),
        ("skypilot: {trusted_servers: ['10.9.0.0/16']}\n", false),
        (
            "skypilot: {trusted_servers: ['10.9.0.0/16', 127.0.0.1]}\n",
            true,
        ),
    ] {
        std::fs::write(
            &path,
            format!("storage: sqlite://state.db\ndefault_team: ml\nteams: {{ml: {{users: [root]}}}}\n{trusted}"),
        )
        .unwrap();
        let config = warden_server::config::load_config(&path).unwrap();
        let app = warden_server::Application::build(config, &path, "127.0.0.1:0")
            .await
            .unwrap();
        let addr = app.local_addr().unwrap().to_string();
        let store = app.state().store().unwrap().clone();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let served = tokio::spawn(app.run(async move {
            let _ = stopped.await;
        }));
        let live_before = store.list_live(None).await.unwrap().len();
        let (status, body) = post(addr.clone(), worker.clone()).await.unwrap();
        if worker_allowed {
            assert_eq!(status, 200, "{trusted}: {body}");
        } else {
            assert_eq!(status, 403, "{trusted}: {body}");
            assert!(
                body.contains("is a server-side request (`at_client_side: false`), which only a trusted SkyPilot API server may send, and it came from `127.0.0.1`")
                    && body.contains("`skypilot.trusted_servers`")
                    && body.contains("10.9.0.0/16"),
                "{body}"
            );
            assert_eq!(
                store.list_live(None).await.unwrap().len(),
                live_before,
                "a refused request reserves nothing"
            );
            // A client-side request naming a user is refused the same way.
            let text: String = serde_json::from_slice(&client).unwrap();
            let mut named: serde_json::Value = serde_json::from_str(&text).unwrap();
            named["user"] = serde_json::json!("name: root\nid: abc\n");
            let named = serde_json::to_vec(&named.to_string()).unwrap();
            let (status, body) = post(addr.clone(), named).await.unwrap();
            assert_eq!(status, 403, "{body}");
            assert!(body.contains("this request names a `user`"), "{body}");
        }
        let (status, body) = post(addr.clone(), client.clone()).await.unwrap();
        assert_eq!(status, 200, "a client-side request from anywhere: {body}");
        stop.send(()).unwrap();
        served.await.unwrap().unwrap();
        store.close().await;
    }
}
