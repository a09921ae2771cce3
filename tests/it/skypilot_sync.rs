//! The SkyPilot usage sync: Warden's client of the API server's `/status`,
//! reconciling the store with the cluster list.
//!
//! - Recorded responses (tests/fixtures/skypilot-0.14.1-api), served by an
//!   in-test HTTP server that also checks what Warden sends: allocations of
//!   vanished and stopped clusters end, unknown clusters are adopted with
//!   the right team and GPUs, unresolvable ones are skipped; time-outs are
//!   retried with the same request id; failures are precise and change
//!   nothing. Also through `warden sync skypilot` and `warden serve`.
//! - A real local SkyPilot 0.14.1 API server (`sky api start` from the venv
//!   made by scripts/setup-venv.sh; the test fails if it is missing), with
//!   an isolated HOME, only 127.0.0.1 traffic, and fake clusters inserted
//!   into its state by tests/client/skypilot_fake_clusters.py.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::io::Read;
use std::net::TcpListener as StdListener;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use warden_core::{Door, GpuModel, Policy, TeamName, Usd};
use warden_server::config::SkypilotApi;
use warden_server::doors::skypilot::sync::client::{ApiUrl, SkypilotClient, Token};
use warden_server::doors::skypilot::sync::{
    self, EndReason, KeptReason, ReconcileOptions, ReconcileReport,
};
use warden_server::secret::{SecretError, SecretSource};
use warden_store::{AllocationName, AllocationRequest, ReserveOutcome, Store, UnixMicros};

use crate::skypilot_client::{Server, TempDir};

const TOKEN: &str = "sky_test_0123456789abcdef";

fn fixture(name: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/skypilot-0.14.1-api")
        .join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

// ---------------------------------------------------------------------------
// A stand-in API server replaying recorded bodies.

/// One answer of the stand-in server.
#[derive(Clone)]
struct Reply {
    status: u16,
    body: String,
    delay: Duration,
}

impl Reply {
    fn ok(body: String) -> Reply {
        Reply {
            status: 200,
            body,
            delay: Duration::ZERO,
        }
    }
}

/// What one `POST /status` answers, and what `/api/get` then answers for
/// its request id, in order (the last answer repeats).
#[derive(Clone)]
struct Scene {
    post: Reply,
    /// Whether `POST /status` names a request id.
    request_id: bool,
    gets: Vec<Reply>,
}

impl Scene {
    /// A status request that answers `get_body` (a recorded `/api/get`
    /// body) with HTTP `get_status`.
    fn answering(get_status: u16, get_body: String) -> Scene {
        Scene {
            post: Reply::ok("null".to_owned()),
            request_id: true,
            gets: vec![Reply {
                status: get_status,
                body: get_body,
                delay: Duration::ZERO,
            }],
        }
    }
}

/// A request the stand-in server received.
#[derive(Clone, Debug)]
struct Seen {
    method: &'static str,
    uri: String,
    headers: HeaderMap,
    body: String,
}

#[derive(Default)]
struct MockState {
    /// Scenes still to play; the last one repeats.
    scenes: VecDeque<Scene>,
    /// `/api/get` answers per request id.
    pending: HashMap<String, VecDeque<Reply>>,
    seen: Vec<Seen>,
    next_id: u32,
}

/// The stand-in API server on 127.0.0.1, serving until dropped.
struct MockApi {
    url: String,
    state: Arc<Mutex<MockState>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for MockApi {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The recorded answer headers of `POST /status`, with another request id.
fn recorded_post_headers(request_id: &str) -> Vec<(String, String)> {
    fixture("post-status-response-headers.txt")
        .lines()
        .skip(1)
        .filter_map(|line| line.split_once(": "))
        .filter(|(name, _)| !matches!(*name, "date" | "content-length" | "content-type"))
        .map(|(name, value)| {
            let value = if name == "x-skypilot-request-id" {
                request_id.to_owned()
            } else {
                value.to_owned()
            };
            (name.to_owned(), value)
        })
        .collect()
}

fn reply(r: &Reply, extra: Vec<(String, String)>) -> Response {
    let mut resp = (
        StatusCode::from_u16(r.status).unwrap(),
        [("content-type", "application/json")],
        r.body.clone(),
    )
        .into_response();
    for (name, value) in extra {
        resp.headers_mut().insert(
            axum::http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
            value.parse().unwrap(),
        );
    }
    resp
}

impl MockApi {
    async fn start(scenes: Vec<Scene>) -> MockApi {
        let state = Arc::new(Mutex::new(MockState {
            scenes: scenes.into(),
            ..MockState::default()
        }));
        let status_state = Arc::clone(&state);
        let get_state = Arc::clone(&state);
        let app = Router::new()
            .route(
                "/status",
                post(move |headers: HeaderMap, uri: Uri, body: Bytes| {
                    let state = Arc::clone(&status_state);
                    async move {
                        let (scene, id) = {
                            let mut s = state.lock().unwrap();
                            s.seen.push(Seen {
                                method: "POST",
                                uri: uri.to_string(),
                                headers,
                                body: String::from_utf8_lossy(&body).into_owned(),
                            });
                            let scene = if s.scenes.len() > 1 {
                                s.scenes.pop_front()
                            } else {
                                s.scenes.front().cloned()
                            }
                            .expect("the test scripted no scene");
                            s.next_id += 1;
                            let id = format!("00000000-0000-4000-8000-{:012}", s.next_id);
                            s.pending.insert(id.clone(), scene.gets.clone().into());
                            (scene, id)
                        };
                        let headers = if scene.request_id {
                            recorded_post_headers(&id)
                        } else {
                            Vec::new()
                        };
                        reply(&scene.post, headers)
                    }
                }),
            )
            .route(
                "/api/get",
                get(move |headers: HeaderMap, uri: Uri| {
                    let state = Arc::clone(&get_state);
                    async move {
                        let id = uri
                            .query()
                            .unwrap_or_default()
                            .strip_prefix("request_id=")
                            .unwrap_or_default()
                            .to_owned();
                        let answer = {
                            let mut s = state.lock().unwrap();
                            s.seen.push(Seen {
                                method: "GET",
                                uri: uri.to_string(),
                                headers,
                                body: String::new(),
                            });
                            s.pending.get_mut(&id).map(|q| {
                                if q.len() > 1 {
                                    q.pop_front().unwrap()
                                } else {
                                    q.front().cloned().unwrap()
                                }
                            })
                        };
                        let answer = answer.unwrap_or_else(|| Reply {
                            status: 404,
                            body: format!("{{\"detail\":\"Request '{id}' not found\"}}"),
                            delay: Duration::ZERO,
                        });
                        tokio::time::sleep(answer.delay).await;
                        reply(&answer, Vec::new())
                    }
                }),
            )
            .route(
                "/api/health",
                get(|| async { reply(&Reply::ok(fixture("01_health.resp_body")), Vec::new()) }),
            );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let task = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        MockApi { url, state, task }
    }

    fn seen(&self) -> Vec<Seen> {
        self.state.lock().unwrap().seen.clone()
    }
}

/// Checks what Warden sent: the version headers, the bearer token, and the
/// documented body without any secret.
fn assert_protocol(seen: &[Seen], token: Option<&str>) {
    assert!(!seen.is_empty(), "the API server saw no request");
    for s in seen {
        let h = |name: &str| s.headers.get(name).map(|v| v.to_str().unwrap().to_owned());
        assert_eq!(h("x-skypilot-api-version").as_deref(), Some("62"), "{s:?}");
        assert_eq!(h("x-skypilot-version").as_deref(), Some("0.14.1"), "{s:?}");
        assert_eq!(
            h("authorization"),
            token.map(|t| format!("Bearer {t}")),
            "{} {}",
            s.method,
            s.uri
        );
        if s.method == "POST" {
            assert_eq!(s.uri, "/status");
            assert_eq!(h("content-type").as_deref(), Some("application/json"));
            let body: serde_json::Value = serde_json::from_str(&s.body).unwrap();
            assert_eq!(body["all_users"], true, "{body}");
            assert_eq!(body["refresh"], "NONE", "{body}");
            assert_eq!(body["include_credentials"], false, "{body}");
            assert_eq!(body["include_handle"], false, "{body}");
            assert!(body.get("env_vars").is_none(), "{body}");
            assert!(!s.body.contains("sky_"), "a token in the body: {}", s.body);
        } else {
            assert!(s.uri.starts_with("/api/get?request_id="), "{}", s.uri);
        }
    }
}

// ---------------------------------------------------------------------------
// Store and client helpers.

fn now() -> UnixMicros {
    UnixMicros::from_system_time(SystemTime::now())
}

fn ago(d: Duration) -> UnixMicros {
    UnixMicros::from_micros(now().micros() - i64::try_from(d.as_micros()).unwrap())
}

const HOUR: Duration = Duration::from_secs(3600);

async fn temp_store(dir: &TempDir) -> Store {
    Store::connect(&format!("sqlite://{}", dir.0.join("warden.db").display()))
        .await
        .unwrap()
}

/// Records a live allocation as the door would, started at `at`.
async fn seed(store: &Store, door: Door, team: &str, name: &str, gpus: u32, at: UnixMicros) {
    let req = AllocationRequest {
        door,
        team: TeamName::parse(team).unwrap(),
        user: Some("alice".to_owned()),
        name: AllocationName::parse(name).unwrap(),
        gpu_model: Some(GpuModel::parse("H100").unwrap()),
        gpus,
        hourly: Usd::from_micros(3_000_000 * i64::from(gpus)),
        context: None,
    };
    let out = store.reserve(&req, &[], at).await.unwrap();
    assert!(
        matches!(
            out,
            ReserveOutcome::Granted {
                relaunch: false,
                ..
            }
        ),
        "{out:?}"
    );
}

async fn live_names(store: &Store) -> BTreeSet<String> {
    store
        .list_live(None)
        .await
        .unwrap()
        .iter()
        .map(|a| a.name.to_string())
        .collect()
}

/// A token file only its owner may read.
fn token_file(dir: &TempDir) -> PathBuf {
    use std::os::unix::fs::PermissionsExt as _;
    let path = dir.0.join("skypilot-token");
    std::fs::write(&path, format!("{TOKEN}\n")).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    path
}

fn new_client(url: &str, token: Option<PathBuf>, timeout: Duration) -> SkypilotClient {
    let api = SkypilotApi {
        url: ApiUrl::parse(url).unwrap(),
        token: token.map(SecretSource::File),
        ca_file: None,
        interval: Duration::from_secs(30),
        timeout,
        grace: Duration::from_secs(300),
    };
    SkypilotClient::from_config(&api).unwrap()
}

fn ended(report: &ReconcileReport) -> BTreeMap<String, EndReason> {
    report
        .ended
        .iter()
        .map(|e| (e.allocation.name.to_string(), e.reason))
        .collect()
}

fn kept(report: &ReconcileReport) -> BTreeMap<String, KeptReason> {
    report
        .kept
        .iter()
        .map(|k| (k.name.to_string(), k.reason))
        .collect()
}

/// Adopted clusters as `name -> (team, resolved_by, model, gpus, $/h)`.
fn adopted(report: &ReconcileReport) -> BTreeMap<String, (String, String, String, u32, String)> {
    report
        .adopted
        .iter()
        .map(|a| {
            (
                a.cluster.clone(),
                (
                    a.team.to_string(),
                    a.resolved_by.to_owned(),
                    a.gpu_model
                        .as_ref()
                        .map_or("-".to_owned(), |m| m.to_string()),
                    a.gpus,
                    a.hourly_usd.to_string(),
                ),
            )
        })
        .collect()
}

fn skipped(report: &ReconcileReport) -> BTreeMap<String, Option<String>> {
    report
        .skipped
        .iter()
        .map(|s| (s.cluster.clone(), s.user.clone()))
        .collect()
}

fn entry(
    team: &str,
    by: &str,
    model: &str,
    gpus: u32,
    usd: &str,
) -> (String, String, String, u32, String) {
    (
        team.to_owned(),
        by.to_owned(),
        model.to_owned(),
        gpus,
        usd.to_owned(),
    )
}

// ---------------------------------------------------------------------------
// Recorded responses.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recorded_lists_end_vanished_and_stopped_adopt_unknown_and_skip_unresolvable() {
    let dir = TempDir::new("warden-sync-recorded");
    let store = temp_store(&dir).await;
    let api = MockApi::start(vec![
        // Fixture 15: train-h100 (alice UP 2x H100:8), dev-a100 (bob UP
        // 1x A100:2), cpu-box (bob INIT, no GPU).
        Scene::answering(200, fixture("15_status_nonempty_get.resp_body")),
        // Recorded for Warden: train-h100, cpu-box (alice UP, no GPU),
        // idle-a100 (bob STOPPED), frac-t4 (bob INIT 3x T4:0.5),
        // research-l4 (carol AUTOSTOPPING 1x L4:4, workspace research).
        Scene::answering(200, fixture("status_mixed_get.resp_body")),
    ])
    .await;
    let client = new_client(&api.url, Some(token_file(&dir)), Duration::from_secs(10));
    let options = ReconcileOptions::default();

    // What the door recorded earlier.
    seed(&store, Door::Skypilot, "ml", "vanished", 8, ago(HOUR)).await;
    seed(
        &store,
        Door::Skypilot,
        "ml",
        "fresh-launch",
        8,
        ago(Duration::from_secs(10)),
    )
    .await;
    seed(
        &store,
        Door::Skypilot,
        "ml",
        "jobs.launch:train:6921a3c4-17",
        8,
        ago(HOUR),
    )
    .await;
    seed(&store, Door::Vast, "ml", "vast-1", 8, ago(HOUR)).await;

    // Poll 1: alice is in `ml`, bob in no team and there is no default team.
    let policy =
        Policy::from_yaml("teams:\n  ml: {users: [alice]}\nprices:\n  H100: {on_demand: 3.00}\n")
            .unwrap();
    let poll = sync::poll_once(&client, &store, &policy, &options)
        .await
        .unwrap();
    let r = &poll.report;
    assert_eq!(r.clusters, 3);
    assert_eq!(
        ended(r),
        BTreeMap::from([("vanished".to_owned(), EndReason::ClusterGone)])
    );
    assert_eq!(
        adopted(r),
        BTreeMap::from([(
            "train-h100".to_owned(),
            entry("ml", "user", "H100", 16, "$48.00")
        )])
    );
    assert_eq!(
        kept(r),
        BTreeMap::from([
            ("fresh-launch".to_owned(), KeptReason::WithinGrace),
            (
                "jobs.launch:train:6921a3c4-17".to_owned(),
                KeptReason::NotAClusterName
            ),
        ])
    );
    assert_eq!(
        skipped(r),
        BTreeMap::from([
            ("dev-a100".to_owned(), Some("bob".to_owned())),
            ("cpu-box".to_owned(), Some("bob".to_owned())),
        ])
    );
    assert!(r.errors.is_empty(), "{:?}", r.errors);
    assert_eq!(
        live_names(&store).await,
        BTreeSet::from(
            [
                "fresh-launch",
                "jobs.launch:train:6921a3c4-17",
                "vast-1",
                "train-h100"
            ]
            .map(str::to_owned)
        ),
        "the Vast allocation is not the SkyPilot sync's to end"
    );

    // Poll 2: a new policy (bob joins `infra`, workspace `research` belongs
    // to `research`), and the door had recorded idle-a100, now STOPPED.
    seed(&store, Door::Skypilot, "ml", "idle-a100", 2, ago(HOUR)).await;
    let policy = Policy::from_yaml(
        "teams:\n  ml: {users: [alice]}\n  infra: {users: [bob]}\n  research: {workspaces: [research]}\nprices:\n  H100: {on_demand: 3.00}\n  L4: {on_demand: 0.70}\n  T4: {on_demand: 0.35}\n",
    )
    .unwrap();
    let poll = sync::poll_once(&client, &store, &policy, &options)
        .await
        .unwrap();
    let r = &poll.report;
    assert_eq!(r.clusters, 5);
    assert_eq!(
        ended(r),
        BTreeMap::from([("idle-a100".to_owned(), EndReason::ClusterStopped)]),
        "a STOPPED cluster holds no GPUs"
    );
    assert_eq!(
        adopted(r),
        BTreeMap::from([
            // train-h100 is live since poll 1: not adopted twice.
            ("cpu-box".to_owned(), entry("ml", "user", "-", 0, "$0.00")),
            // 3 nodes x {'T4': 0.5}: a slice of a GPU occupies a GPU.
            (
                "frac-t4".to_owned(),
                entry("infra", "user", "T4", 3, "$1.05")
            ),
            (
                "research-l4".to_owned(),
                entry("research", "workspace", "L4", 4, "$2.80")
            ),
        ])
    );
    assert!(r.skipped.is_empty() && r.errors.is_empty(), "{r:?}");
    assert_eq!(
        live_names(&store).await,
        BTreeSet::from(
            [
                "fresh-launch",
                "jobs.launch:train:6921a3c4-17",
                "vast-1",
                "train-h100",
                "cpu-box",
                "frac-t4",
                "research-l4",
            ]
            .map(str::to_owned)
        )
    );

    // Every change is in the audit chain, adoptions marked as the sync's.
    let records = store
        .export_audit(UnixMicros::EPOCH, UnixMicros::from_micros(i64::MAX))
        .await
        .unwrap();
    let kinds = |kind: &str| records.iter().filter(|r| r.kind == kind).count();
    assert_eq!(kinds("allocation.ended"), 2);
    assert_eq!(kinds("sync.skypilot"), 2);
    let synced: Vec<serde_json::Value> = records
        .iter()
        .filter(|r| r.kind == "allocation.granted")
        .map(|r| serde_json::from_str::<serde_json::Value>(&r.payload).unwrap())
        .filter(|p| p["context"]["source"] == "skypilot-sync")
        .collect();
    assert_eq!(synced.len(), 4, "{synced:?}");
    assert!(records.iter().all(|r| !r.payload.contains(TOKEN)));
    assert!(store.verify_audit().await.unwrap().problem.is_none());

    // Warden asked as the protocol says, with the token only in the header.
    let seen = api.seen();
    assert_eq!(seen.len(), 4, "two polls, two exchanges each: {seen:?}");
    assert_protocol(&seen, Some(TOKEN));
    store.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_empty_list_ends_every_old_skypilot_allocation() {
    let dir = TempDir::new("warden-sync-empty");
    let store = temp_store(&dir).await;
    let api = MockApi::start(vec![Scene::answering(
        200,
        fixture("api-get-status-empty.json"),
    )])
    .await;
    seed(&store, Door::Skypilot, "ml", "a", 8, ago(HOUR)).await;
    seed(&store, Door::Skypilot, "cv", "b", 8, ago(HOUR)).await;
    let policy = Policy::from_yaml("teams: {ml: {}, cv: {}}\n").unwrap();
    let client = new_client(&api.url, None, Duration::from_secs(10));
    let poll = sync::poll_once(&client, &store, &policy, &ReconcileOptions::default())
        .await
        .unwrap();
    assert_eq!(poll.report.clusters, 0);
    assert_eq!(
        ended(&poll.report),
        BTreeMap::from([
            ("a".to_owned(), EndReason::ClusterGone),
            ("b".to_owned(), EndReason::ClusterGone)
        ])
    );
    assert!(live_names(&store).await.is_empty());
    // No token configured: no Authorization header.
    assert_protocol(&api.seen(), None);
    store.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_answers_are_retried_with_the_same_id_and_failures_are_precise() {
    let empty = fixture("api-get-status-empty.json");
    let slow = Reply {
        status: 200,
        body: empty.clone(),
        delay: Duration::from_millis(1500),
    };
    let denied = Reply {
        status: 401,
        body: r#"{"detail":"Invalid or expired service account token"}"#.to_owned(),
        delay: Duration::ZERO,
    };
    let api = MockApi::start(vec![
        // 1. The first /api/get outlives the read time-out; the second answers.
        Scene {
            post: Reply::ok("null".to_owned()),
            request_id: true,
            gets: vec![slow.clone(), Reply::ok(empty.clone())],
        },
        // 2. Every /api/get is too slow: three tries, then a time-out error.
        Scene {
            post: Reply::ok("null".to_owned()),
            request_id: true,
            gets: vec![slow],
        },
        // 3. The status request FAILED (HTTP 500, payload under `detail`).
        Scene::answering(500, fixture("status_failed_get.resp_body")),
        // 4. The request id is unknown.
        Scene::answering(404, fixture("07_api_get_404.resp_body")),
        // 5. The token is refused.
        Scene {
            post: denied,
            request_id: false,
            gets: Vec::new(),
        },
        // 6. Not a SkyPilot API server: no request id.
        Scene {
            post: Reply::ok("null".to_owned()),
            request_id: false,
            gets: Vec::new(),
        },
    ])
    .await;
    let dir = TempDir::new("warden-sync-errors");
    let client = new_client(&api.url, Some(token_file(&dir)), Duration::from_millis(500));

    let health = client.health().await.unwrap();
    assert_eq!(health.version.as_deref(), Some("0.14.1"), "{health:?}");
    let clusters = client.status().await.unwrap();
    assert!(clusters.is_empty());
    let gets: Vec<String> = api
        .seen()
        .iter()
        .filter(|s| s.method == "GET")
        .map(|s| s.uri.clone())
        .collect();
    assert_eq!(gets.len(), 2, "{gets:?}");
    assert_eq!(gets[0], gets[1], "the retry asks for the same request");

    let started = Instant::now();
    let e = client.status().await.unwrap_err().to_string();
    assert!(
        e.contains("/api/get?request_id=") && e.contains("did not answer within 0.5 s"),
        "{e}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    let tries = api.seen().iter().filter(|s| s.method == "GET").count() - 2;
    assert_eq!(tries, 3, "three tries of /api/get");

    let e = client.status().await.unwrap_err().to_string();
    assert!(
        e.ends_with("FAILED: AssertionError: Kubernetes({'H100': 8})"),
        "{e}"
    );
    let e = client.status().await.unwrap_err().to_string();
    assert!(
        e.contains("no longer knows status request") && e.contains("(404)"),
        "{e}"
    );
    let e = client.status().await.unwrap_err().to_string();
    assert!(
        e.contains("answered 401: Invalid or expired service account token")
            && e.contains("skypilot_api.token_env"),
        "{e}"
    );
    let e = client.status().await.unwrap_err().to_string();
    assert!(
        e.contains("without an `X-Skypilot-Request-ID` header"),
        "{e}"
    );
    assert_protocol(&api.seen(), Some(TOKEN));

    // A failed poll changes nothing.
    let store = temp_store(&dir).await;
    seed(&store, Door::Skypilot, "ml", "still-here", 8, ago(HOUR)).await;
    let policy = Policy::from_yaml("teams: {ml: {}}\n").unwrap();
    let e = sync::poll_once(&client, &store, &policy, &ReconcileOptions::default())
        .await
        .unwrap_err()
        .to_string();
    assert!(e.starts_with("cannot read the cluster list: "), "{e}");
    assert_eq!(
        live_names(&store).await,
        BTreeSet::from(["still-here".to_owned()])
    );
    store.close().await;

    // Nobody listening: a connection error naming the URL.
    let closed = {
        let l = StdListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let e = new_client(&format!("http://{closed}"), None, Duration::from_secs(2))
        .status()
        .await
        .unwrap_err()
        .to_string();
    assert!(
        e.starts_with(&format!(
            "cannot connect to the SkyPilot API server at `http://{closed}`"
        )),
        "{e}"
    );
}

#[test]
fn token_files_readable_by_others_are_refused() {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = TempDir::new("warden-sync-token");
    let path = token_file(&dir);
    assert!(Token::read(&SecretSource::File(path.clone())).is_ok());
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    let e = Token::read(&SecretSource::File(path.clone())).unwrap_err();
    assert!(
        matches!(e, SecretError::FileMode { mode: 0o644, .. }),
        "{e:?}"
    );
    let text = e.to_string();
    assert!(
        text.contains(&format!("run `chmod 600 {}`", path.display())) && !text.contains(TOKEN),
        "{text}"
    );
    let e = Token::read(&SecretSource::Env(
        "WARDEN_TEST_SURELY_UNSET_VAR".to_owned(),
    ))
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("`WARDEN_TEST_SURELY_UNSET_VAR` is not set"),
        "{e}"
    );
}

// ---------------------------------------------------------------------------
// The commands: `warden sync skypilot` and the sync inside `warden serve`.

fn run_warden(args: Vec<String>) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_warden"))
        .args(args)
        .env_remove("RUST_LOG")
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Runs the binary off the async runtime, which keeps serving the stand-in.
async fn warden(args: &[&str]) -> (i32, String, String) {
    let args: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
    tokio::task::spawn_blocking(move || run_warden(args))
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sync_command_and_serve_reconcile_with_the_configured_server() {
    let dir = TempDir::new("warden-sync-cli");
    let api = MockApi::start(vec![Scene::answering(
        200,
        fixture("15_status_nonempty_get.resp_body"),
    )])
    .await;
    let token = token_file(&dir);
    let config = dir.0.join("warden.yaml");
    let db = dir.0.join("warden.db");
    std::fs::write(
        &config,
        format!(
            "storage: sqlite://{}\nteams:\n  ml: {{users: [alice]}}\nskypilot_api:\n  url: {}\n  token_file: {}\n  interval_seconds: 1\n  timeout_seconds: 5\n",
            db.display(),
            api.url,
            token.display()
        ),
    )
    .unwrap();
    let cfg = config.to_str().unwrap();
    let store = temp_store(&dir).await;
    seed(&store, Door::Skypilot, "ml", "gone-1", 8, ago(HOUR)).await;

    let (code, out, err) = warden(&["sync", "skypilot", "--config", cfg]).await;
    assert_eq!(code, 0, "{out}\n{err}");
    let report: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(report["clusters"], 3, "{report}");
    assert_eq!(report["ended"][0]["name"], "gone-1", "{report}");
    assert_eq!(report["ended"][0]["reason"], "cluster_gone", "{report}");
    assert_eq!(report["adopted"][0]["cluster"], "train-h100", "{report}");
    assert_eq!(report["adopted"][0]["gpus"], 16, "{report}");
    assert_eq!(report["skipped"].as_array().unwrap().len(), 2, "{report}");
    assert!(report["api_ms"].is_u64(), "{report}");

    // `warden serve` polls at start and every interval, off the door.
    seed(&store, Door::Skypilot, "ml", "gone-2", 8, ago(HOUR)).await;
    let storage = format!("sqlite://{}", db.display());
    let server = Server::start_with_storage(&config, &storage);
    let deadline = Instant::now() + Duration::from_secs(20);
    let polls = loop {
        let polls: Vec<serde_json::Value> = server
            .log()
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter(|l| l["message"] == "skypilot sync")
            .collect();
        if polls.len() >= 2 {
            break polls;
        }
        assert!(
            Instant::now() < deadline,
            "fewer than two `skypilot sync` lines in 20 s:\n{}",
            server.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(polls[0]["target"], "warden::sync", "{}", polls[0]);
    assert_eq!(polls[0]["ended"], 1, "{}", polls[0]);
    assert_eq!(polls[0]["clusters"], 3, "{}", polls[0]);
    assert_eq!(polls[0]["skipped"], 2, "{}", polls[0]);
    assert!(polls[0]["latency_ms"].is_u64(), "{}", polls[0]);
    assert_eq!(polls[1]["ended"], 0, "{}", polls[1]);
    assert!(!live_names(&store).await.contains("gone-2"));
    assert!(
        !server.log().contains(TOKEN),
        "the token leaked into the log"
    );
    drop(server);

    // A token file others may read stops `warden serve` at start.
    {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(&token, std::fs::Permissions::from_mode(0o640)).unwrap();
    }
    let (code, _, err) = warden(&["serve", "--config", cfg, "--listen", "127.0.0.1:0"]).await;
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("chmod 600") && !err.contains(TOKEN), "{err}");
    store.close().await;
}

// ---------------------------------------------------------------------------
// A real SkyPilot API server.

/// Startup took ~9-13 s here; this only bounds a hang.
const SKY_START_TIMEOUT: Duration = Duration::from_secs(120);
/// Each exchange with the real server; the first `/status` after start
/// took ~12 s in the notes (workers warming up).
const SKY_EXCHANGE_TIMEOUT: Duration = Duration::from_secs(30);
const SKY_COMMAND_TIMEOUT: Duration = Duration::from_secs(120);

/// `${WARDEN_VENV:-$HOME/.cache/warden/venv}`, as made by
/// scripts/setup-venv.sh. Fails (never skips) when it is missing.
fn venv() -> PathBuf {
    let venv =
        match std::env::var_os("WARDEN_VENV") {
            Some(dir) if !dir.is_empty() => PathBuf::from(dir),
            _ => PathBuf::from(std::env::var_os("HOME").expect(
                "HOME is not set: set WARDEN_VENV to the venv made by scripts/setup-venv.sh",
            ))
            .join(".cache/warden/venv"),
        };
    for tool in ["bin/python", "bin/sky"] {
        assert!(
            venv.join(tool).exists(),
            "no SkyPilot venv: {} does not exist; run scripts/setup-venv.sh first \
             (WARDEN_VENV selects the venv directory)",
            venv.join(tool).display()
        );
    }
    venv
}

/// A free TCP port on 127.0.0.1 (free when asked; the server binds it soon
/// after).
fn free_port() -> u16 {
    StdListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// SkyPilot's default API server port; its request queue manager listens
/// on a port derived from the API port's distance to it
/// (`sky/server/requests/queues/mp_queue.py`, `get_queue_manager_port`).
const SKY_DEFAULT_PORT: u16 = 46580;

/// The queue manager port a SkyPilot API server on `port` binds, as
/// SkyPilot 0.14.1 derives it: 50011 for the default port, else
/// `50000 + (11 + offset) mod 10000`.
fn sky_queue_port(port: u16) -> u16 {
    let offset = i32::from(port) - i32::from(SKY_DEFAULT_PORT);
    if offset == 0 {
        return 50011;
    }
    u16::try_from(50000 + (11 + offset).rem_euclid(10000)).unwrap()
}

/// A free port for a SkyPilot API server whose queue manager port is free
/// too: with a random API port, the derived one can be any port of
/// 50000-59999, where the other tests' connections take ephemeral ports.
fn free_sky_port() -> u16 {
    for _ in 0..100 {
        let port = free_port();
        if StdListener::bind(("127.0.0.1", sky_queue_port(port))).is_ok() {
            return port;
        }
    }
    panic!("no free port for a SkyPilot API server and its queue manager in 100 tries")
}

/// A `sky api start --foreground` server with its own HOME and port, in its
/// own process group. Dropping it (also when the test fails) runs `sky api
/// stop`, then kills whatever is left of the group.
struct SkyApiServer {
    child: Child,
    venv: PathBuf,
    home: TempDir,
    port: u16,
}

impl SkyApiServer {
    fn start(venv: &Path) -> SkyApiServer {
        let home = TempDir::new("warden-sky-home");
        let sky_dir = home.0.join(".sky");
        std::fs::create_dir_all(&sky_dir).unwrap();
        // Workspaces the fake clusters live in (an undeclared workspace's
        // clusters are left out of /status).
        std::fs::write(
            sky_dir.join("config.yaml"),
            "workspaces:\n  default: {}\n  research: {}\n",
        )
        .unwrap();
        // A fresh "latest release" cache: the server does not ask pypi.org.
        let now = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        std::fs::write(
            sky_dir.join("version_cache.json"),
            format!("{{\"release_version\": \"0.14.1\", \"cached_at\": {now}}}"),
        )
        .unwrap();
        let port = free_sky_port();
        let log = std::fs::File::create(home.0.join("server.log")).unwrap();
        let mut cmd = Command::new(venv.join("bin/sky"));
        cmd.args([
            "api",
            "start",
            "--foreground",
            "--host",
            "127.0.0.1",
            "--port",
        ])
        .arg(port.to_string())
        .current_dir(&home.0)
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        // Its own group: its workers can be killed with it.
        .process_group(0);
        isolate(&mut cmd, &home.0, port);
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {}: {e}", venv.join("bin/sky").display()));
        SkyApiServer {
            child,
            venv: venv.to_path_buf(),
            home,
            port,
        }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn log(&self) -> String {
        let text = std::fs::read_to_string(self.home.0.join("server.log")).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(60)..].join("\n")
    }

    /// A server that answers `/api/health`. A server that exits because a
    /// port it needs was taken after it was chosen (the queue manager's,
    /// by another test's connection) is started again on other ports, up to
    /// three times; any other exit fails the test with the server's log.
    fn start_healthy(
        venv: &Path,
        runtime: &tokio::runtime::Runtime,
    ) -> (
        SkyApiServer,
        warden_server::doors::skypilot::sync::client::Health,
    ) {
        let mut attempt = 1;
        loop {
            let mut sky = SkyApiServer::start(venv);
            match runtime.block_on(sky.wait_healthy()) {
                Ok(health) => return (sky, health),
                Err(log) if attempt < 3 && log.contains("is already in use by another process") => {
                    attempt += 1;
                }
                Err(log) => panic!("`sky api start` exited before answering {log}"),
            }
        }
    }

    /// Waits until `/api/health` answers, through Warden's client; the
    /// server's exit status and log if it exits first.
    async fn wait_healthy(
        &mut self,
    ) -> Result<warden_server::doors::skypilot::sync::client::Health, String> {
        let client = SkypilotClient::new(
            ApiUrl::parse(&self.url()).unwrap(),
            None,
            Duration::from_secs(2),
            Vec::new(),
        )
        .unwrap();
        let deadline = Instant::now() + SKY_START_TIMEOUT;
        loop {
            match client.health().await {
                Ok(h) if h.status.as_deref() == Some("healthy") => return Ok(h),
                Ok(_) | Err(_) => {}
            }
            if let Some(status) = self.child.try_wait().unwrap() {
                return Err(format!("({status}); its log:\n{}", self.log()));
            }
            assert!(
                Instant::now() < deadline,
                "the SkyPilot API server did not answer /api/health within {SKY_START_TIMEOUT:?}; its log:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// Runs a command of the venv with the server's environment, bounded.
    fn run(&self, program: &str, args: &[&str]) -> (bool, String) {
        let mut cmd = Command::new(self.venv.join(program));
        cmd.args(args)
            .current_dir(&self.home.0)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        isolate(&mut cmd, &self.home.0, self.port);
        let mut child = cmd.spawn().unwrap();
        let deadline = Instant::now() + SKY_COMMAND_TIMEOUT;
        let status = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break Some(status);
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        let mut out = String::new();
        if let Some(mut s) = child.stdout.take() {
            let _ = s.read_to_string(&mut out);
        }
        if let Some(mut s) = child.stderr.take() {
            let _ = s.read_to_string(&mut out);
        }
        match status {
            Some(s) => (s.success(), out),
            None => (
                false,
                format!("timed out after {SKY_COMMAND_TIMEOUT:?}\n{out}"),
            ),
        }
    }
}

impl Drop for SkyApiServer {
    fn drop(&mut self) {
        let _ = self.run("bin/sky", &["api", "stop"]);
        // Leftovers: the whole process group, by its id.
        let _ = Command::new("kill")
            .args(["-KILL", "--", &format!("-{}", self.child.id())])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The environment of every SkyPilot process of the test: its own HOME and
/// port, no usage collection, no inherited SkyPilot or cloud settings, and
/// any HTTP(S) or metadata-server traffic pointed at a closed local port so
/// nothing leaves 127.0.0.1.
fn isolate(cmd: &mut Command, home: &Path, port: u16) {
    for (key, _) in std::env::vars_os() {
        let key = key.to_string_lossy().into_owned();
        if key.starts_with("SKYPILOT_")
            || key.starts_with("AWS_")
            || key.starts_with("GOOGLE_")
            || key.starts_with("AZURE_")
            || key.to_ascii_lowercase().ends_with("_proxy")
            || matches!(
                key.as_str(),
                "KUBECONFIG" | "PYTHONPATH" | "PYTHONHOME" | "XDG_CONFIG_HOME"
            )
        {
            cmd.env_remove(&key);
        }
    }
    let dead = "http://127.0.0.1:9";
    cmd.env("HOME", home)
        .env("SKYPILOT_DISABLE_USAGE_COLLECTION", "1")
        .env("SKYPILOT_API_SERVER_LOCAL_PORT", port.to_string())
        .env("KUBECONFIG", home.join(".kube/config"))
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("NO_GCE_CHECK", "True")
        .env("GCE_METADATA_HOST", "127.0.0.1:9")
        .env("GCE_METADATA_IP", "127.0.0.1:9");
    for var in [
        "HTTP_PROXY",
        "HTTPS_PROXY",
        "http_proxy",
        "https_proxy",
        "ALL_PROXY",
        "all_proxy",
    ] {
        cmd.env(var, dead);
    }
    for var in ["NO_PROXY", "no_proxy"] {
        cmd.env(var, "127.0.0.1,localhost");
    }
}

#[test]
fn real_skypilot_api_server_lists_clusters_for_the_sync() {
    let venv = venv();
    let started = Instant::now();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let (sky, health) = SkyApiServer::start_healthy(&venv, &runtime);
    assert_eq!(health.version.as_deref(), Some("0.14.1"), "{health:?}");
    assert_eq!(health.api_version.as_deref(), Some("62"), "{health:?}");
    let up_after = started.elapsed();

    let dir = TempDir::new("warden-sync-real");
    let client = SkypilotClient::new(
        ApiUrl::parse(&sky.url()).unwrap(),
        None,
        SKY_EXCHANGE_TIMEOUT,
        Vec::new(),
    )
    .unwrap();
    let options = ReconcileOptions::default();
    let policy = Policy::from_yaml(
        "teams:\n  ml: {users: [alice]}\n  research: {workspaces: [research]}\nprices:\n  H100: {on_demand: 3.00}\n  L4: {on_demand: 0.70}\n",
    )
    .unwrap();
    let report = |what: &str, e: &dyn std::fmt::Display| {
        format!(
            "{what}: {e}\n--- SkyPilot API server log (tail) ---\n{}",
            sky.log()
        )
    };

    // 1. No clusters at all: every old SkyPilot allocation ends.
    let (first, store) = runtime.block_on(async {
        let store = temp_store(&dir).await;
        seed(&store, Door::Skypilot, "ml", "gone-a", 8, ago(HOUR)).await;
        seed(&store, Door::Skypilot, "research", "gone-b", 8, ago(HOUR)).await;
        seed(&store, Door::Vast, "ml", "vast-1", 8, ago(HOUR)).await;
        let poll = sync::poll_once(&client, &store, &policy, &options).await;
        (poll, store)
    });
    let first = first.unwrap_or_else(|e| panic!("{}", report("first poll", &e)));
    assert_eq!(first.report.clusters, 0, "{first:?}");
    assert_eq!(
        ended(&first.report),
        BTreeMap::from([
            ("gone-a".to_owned(), EndReason::ClusterGone),
            ("gone-b".to_owned(), EndReason::ClusterGone)
        ])
    );
    assert_eq!(
        runtime.block_on(live_names(&store)),
        BTreeSet::from(["vast-1".to_owned()])
    );

    // 2. Fake clusters in the server's state (see the script's doc).
    let (ok, out) = sky.run(
        "bin/python",
        &[Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/client/skypilot_fake_clusters.py")
            .to_str()
            .unwrap()],
    );
    assert!(ok, "skypilot_fake_clusters.py failed:\n{out}");
    let second = runtime.block_on(async {
        // What the door had recorded: a running cluster and a stopped one.
        seed(&store, Door::Skypilot, "ml", "train-h100", 16, ago(HOUR)).await;
        seed(&store, Door::Skypilot, "ml", "idle-a100", 2, ago(HOUR)).await;
        sync::poll_once(&client, &store, &policy, &options).await
    });
    let second = second.unwrap_or_else(|e| panic!("{}", report("second poll", &e)));
    let r = &second.report;
    // ghost-l4's owner has no user record: SkyPilot leaves it out.
    assert_eq!(r.clusters, 5, "{r:?}");
    assert_eq!(
        ended(r),
        BTreeMap::from([("idle-a100".to_owned(), EndReason::ClusterStopped)])
    );
    assert_eq!(
        adopted(r),
        BTreeMap::from([
            ("cpu-box".to_owned(), entry("ml", "user", "-", 0, "$0.00")),
            (
                "research-l4".to_owned(),
                entry("research", "workspace", "L4", 4, "$2.80")
            ),
        ])
    );
    assert_eq!(
        skipped(r),
        BTreeMap::from([("frac-t4".to_owned(), Some("bob".to_owned()))])
    );
    assert!(r.kept.is_empty() && r.errors.is_empty(), "{r:?}");

    // 3. Nothing changed on the server: nothing changes in Warden.
    let third = runtime
        .block_on(sync::poll_once(&client, &store, &policy, &options))
        .unwrap_or_else(|e| panic!("{}", report("third poll", &e)));
    let c = third.report.counts();
    assert_eq!(
        (c.clusters, c.ended, c.adopted, c.skipped),
        (5, 0, 0, 1),
        "{third:?}"
    );
    assert_eq!(
        runtime.block_on(live_names(&store)),
        BTreeSet::from(["vast-1", "train-h100", "cpu-box", "research-l4"].map(str::to_owned))
    );
    runtime.block_on(store.close());
    eprintln!(
        "real SkyPilot API server: healthy after {up_after:?}; polls took {} ms (first), {} ms, {} ms; whole test {:?}",
        first.latency_ms,
        second.latency_ms,
        third.latency_ms,
        started.elapsed()
    );
    drop(sky);
}

// ---------------------------------------------------------------------------
// Over https: a TLS server with a certificate the test makes.

/// A CA and a server certificate for `localhost` and `127.0.0.1`, made now.
pub(crate) struct TestPki {
    pub(crate) ca_pem: String,
    server_cert: rustls::pki_types::CertificateDer<'static>,
    server_key: rustls::pki_types::PrivateKeyDer<'static>,
}

pub(crate) fn test_pki() -> TestPki {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(DnType::CommonName, "Warden test CA");
    let ca = ca.self_signed(&ca_key).unwrap();
    let key = KeyPair::generate().unwrap();
    let server = CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
        .unwrap()
        .signed_by(&key, &ca, &ca_key)
        .unwrap();
    TestPki {
        ca_pem: ca.pem(),
        server_cert: server.der().clone(),
        server_key: rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()),
    }
}

/// Terminates TLS on 127.0.0.1 and forwards the plain bytes to `backend`;
/// serves until dropped.
pub(crate) struct TlsFront {
    pub(crate) port: u16,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for TlsFront {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl TlsFront {
    pub(crate) async fn start(pki: &TestPki, backend: String) -> TlsFront {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(vec![pki.server_cert.clone()], pki.server_key.clone_key())
            .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let task = tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    return;
                };
                let acceptor = acceptor.clone();
                let backend = backend.clone();
                tokio::spawn(async move {
                    // A client that does not trust the CA hangs up here.
                    let Ok(mut tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let mut plain = tokio::net::TcpStream::connect(&backend).await.unwrap();
                    let _ = tokio::io::copy_bidirectional(&mut tls, &mut plain).await;
                });
            }
        });
        TlsFront { port, task }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sync_runs_over_https_trusting_the_configured_ca() {
    let dir = TempDir::new("warden-sync-https");
    let pki = test_pki();
    let ca_file = dir.0.join("ca.pem");
    std::fs::write(&ca_file, &pki.ca_pem).unwrap();
    let api = MockApi::start(vec![Scene::answering(
        200,
        fixture("15_status_nonempty_get.resp_body"),
    )])
    .await;
    let front = TlsFront::start(&pki, api.url.trim_start_matches("http://").to_owned()).await;
    let url = format!("https://localhost:{}", front.port);

    // The config names the CA file and the token; the poll goes over TLS
    // and carries the token.
    let config = dir.0.join("warden.yaml");
    std::fs::write(
        &config,
        format!(
            "storage: none\nteams: {{ml: {{users: [alice]}}}}\nskypilot_api:\n  url: {url}\n  token_file: {}\n  ca_file: ca.pem\n",
            token_file(&dir).display()
        ),
    )
    .unwrap();
    let cfg = warden_server::config::load_config(&config).unwrap();
    let api_cfg = cfg.skypilot_api.unwrap();
    assert_eq!(api_cfg.ca_file.as_deref(), Some(ca_file.as_path()));
    let client = SkypilotClient::from_config(&api_cfg).unwrap();
    let clusters = client.status().await.unwrap();
    let names: BTreeSet<&str> = clusters.iter().map(|c| c.name.as_str()).collect();
    assert!(names.contains("train-h100"), "{names:?}");
    assert_protocol(&api.seen(), Some(TOKEN));
    let health = client.health().await.unwrap();
    assert_eq!(health.version.as_deref(), Some("0.14.1"));

    // Without the CA, the server's certificate is not trusted: the error
    // says so, and the stand-in sees no request.
    let before = api.seen().len();
    let untrusting = new_client(&url, Some(token_file(&dir)), Duration::from_secs(5));
    let e = untrusting.status().await.unwrap_err().to_string();
    assert!(
        e.contains(&format!("`{url}`")) && e.to_lowercase().contains("certificate"),
        "{e}"
    );
    assert!(!e.contains(TOKEN), "{e}");
    assert_eq!(
        api.seen().len(),
        before,
        "a request got through untrusted TLS"
    );

    // A CA file that is not PEM is refused by name, by `warden check` too.
    std::fs::write(&ca_file, "not a certificate\n").unwrap();
    let e = SkypilotClient::from_config(&api_cfg)
        .unwrap_err()
        .to_string();
    assert!(
        e.starts_with(&format!("skypilot_api.ca_file: `{}`", ca_file.display())),
        "{e}"
    );
    let (code, _, err) = warden(&["check", "--config", config.to_str().unwrap()]).await;
    assert_ne!(code, 0);
    assert!(err.contains("skypilot_api.ca_file: "), "{err}");
}
