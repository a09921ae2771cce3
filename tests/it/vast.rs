//! The Vast door against the marketplace simulator over real HTTP (the
//! simulator's own server, so dropped connections are real), with a real
//! store. Warden's side is driven through its router.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use http_body_util::BodyExt;
use serde_json::{json, Value};
use tower::ServiceExt;
use warden_core::access::Role;
use warden_core::{Door, Policy, TeamName, Usd};
use warden_server::config::{PreDestroy, VastConfig};
use warden_server::doors::vast::reconcile::{reconcile, ReconcileReport};
use warden_server::doors::vast::{Upstream, VastDoor};
use warden_server::secret::Secret;
use warden_server::AppState;
use warden_sim::{Endpoint, Fault, FaultAction, InstanceStatus, ManualClock, SimConfig, SimState};
use warden_store::{
    Allocation, AllocationName, AllocationRequest, AllocationState, KeyName, KeyUser, NewKey,
    RotatedExpiry, Store, UnixMicros,
};

use crate::skypilot_client::TempDir;

const UPSTREAM_KEY: &str = "upstream-account-key-0123456789";

pub(crate) const POLICY: &str = r#"
teams:
  ml:
    allowed_gpus: [RTX_4090, RTX_3090]
    max_hourly_usd: 1.5
    vast: {min_reliability: 0.9}
  cv: {}
  thrifty:
    budgets: {daily_usd: 0.2}
"#;

fn now() -> UnixMicros {
    UnixMicros::from_system_time(SystemTime::now())
}

/// Warden with a Vast door in front of a simulator, on a fresh store.
struct Harness {
    sim: SimState,
    sim_addr: std::net::SocketAddr,
    state: Arc<AppState>,
    store: Store,
    door: Arc<VastDoor>,
    _stop: tokio::sync::oneshot::Sender<()>,
    _dir: TempDir,
}

async fn harness_with(policy: &str, storage: Option<&str>, config: VastConfig) -> Harness {
    harness_full(policy, storage, config, None, None).await
}

async fn harness_full(
    policy: &str,
    storage: Option<&str>,
    config: VastConfig,
    ssh: Option<&std::path::Path>,
    ssh_address: Option<(String, u16)>,
) -> Harness {
    let dir = TempDir::new("warden-vast");
    let url = storage.map_or_else(
        || format!("sqlite://{}", dir.0.join("w.db").display()),
        str::to_owned,
    );
    let store = Store::connect(&url).await.unwrap();
    let sim = SimState::new(SimConfig {
        api_keys: vec![UPSTREAM_KEY.to_owned()],
        clock: ManualClock::at_unix(1_800_000_000).into(),
        ssh_address,
        ..SimConfig::default()
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let sim_addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(warden_sim::serve_state(listener, sim.clone(), async move {
        let _ = stopped.await;
    }));
    let upstream = Upstream::new(
        &format!("http://{sim_addr}"),
        Secret::generated(UPSTREAM_KEY.to_owned()),
        config.timeout,
    )
    .unwrap();
    let mut door = VastDoor::new(config, upstream);
    if let Some(ssh) = ssh {
        door = door.with_ssh_program(ssh);
    }
    let door = Arc::new(door);
    let state = AppState::with_store(
        Policy::from_yaml(policy).unwrap(),
        None,
        Some(store.clone()),
    );
    state.enable_vast(Arc::clone(&door));
    Harness {
        sim,
        sim_addr,
        state,
        store,
        door,
        _stop: stop,
        _dir: dir,
    }
}

fn quick_config() -> VastConfig {
    VastConfig {
        timeout: Duration::from_secs(3),
        pending_grace: Duration::ZERO,
        ..VastConfig::default()
    }
}

async fn harness() -> Harness {
    harness_with(POLICY, None, quick_config()).await
}

impl Harness {
    async fn key(&self, team: &str) -> String {
        self.key_with(team, None).await
    }

    async fn key_with(&self, team: &str, expires: Option<UnixMicros>) -> String {
        self.key_as(team, Some("alice"), Role::MlEngineer, expires)
            .await
    }

    /// A key of `team` acting as `user` with `role`.
    async fn key_as(
        &self,
        team: &str,
        user: Option<&str>,
        role: Role,
        expires: Option<UnixMicros>,
    ) -> String {
        let issued = self
            .store
            .create_key(
                NewKey {
                    team: TeamName::parse(team).unwrap(),
                    user: user.map(|u| KeyUser::parse(u).unwrap()),
                    name: Some(KeyName::parse("test").unwrap()),
                    expires,
                    role,
                },
                now(),
            )
            .await
            .unwrap();
        issued.secret.expose().to_owned()
    }

    /// One request through Warden's router: status and JSON body.
    async fn call(
        &self,
        method: Method,
        path: &str,
        key: Option<&str>,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        call_state(&self.state, method, path, key, body).await
    }

    async fn create(&self, key: &str, offer: u64) -> (StatusCode, Value) {
        self.call(
            Method::PUT,
            &format!("/vast/api/v0/asks/{offer}/"),
            Some(key),
            Some(create_body()),
        )
        .await
    }

    async fn reconcile(&self) -> ReconcileReport {
        let settings = self.state.settings();
        reconcile(
            &self.door,
            &self.store,
            &self.state.policy(),
            &settings.time_zone,
        )
        .await
        .unwrap()
    }

    async fn live(&self) -> Vec<Allocation> {
        self.store.list_live(None).await.unwrap()
    }

    /// An available offer of this GPU and count, verified and reliable
    /// (so only the rule under test can deny it).
    fn offer(&self, gpu: &str, gpus: u64) -> u64 {
        self.sim
            .offers()
            .iter()
            .find(|o| {
                o.gpu_name == gpu
                    && o.num_gpus == gpus
                    && o.verified
                    && o.rented_by.is_none()
                    && o.id < 1033
            })
            .unwrap_or_else(|| panic!("no free {gpu} x{gpus} offer"))
            .id
    }

    /// Warden on the same store, door and upstream under another policy
    /// (a config reloaded).
    fn under(&self, policy: &str) -> Arc<AppState> {
        let state = AppState::with_store(
            Policy::from_yaml(policy).unwrap(),
            None,
            Some(self.store.clone()),
        );
        state.enable_vast(Arc::clone(&self.door));
        state
    }
}

pub(crate) async fn call_state(
    state: &Arc<AppState>,
    method: Method,
    path: &str,
    key: Option<&str>,
    body: Option<Value>,
) -> (StatusCode, Value) {
    let mut req = Request::builder().method(method).uri(path);
    if let Some(key) = key {
        req = req.header("authorization", format!("Bearer {key}"));
    }
    let body = body.map_or_else(Body::empty, |b| Body::from(b.to_string()));
    let req = req
        .header("content-type", "application/json")
        .body(body)
        .unwrap();
    let resp = warden_server::router(Arc::clone(state))
        .oneshot(req)
        .await
        .unwrap();
    let status = resp.status();
    let ct = resp
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_owned());
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    let text = String::from_utf8_lossy(&bytes).to_string();
    assert!(
        !text.contains(UPSTREAM_KEY),
        "the upstream key leaked: {text}"
    );
    assert_eq!(ct.as_deref(), Some("application/json"), "{path}: {text}");
    (
        status,
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path}: not JSON ({e}): {text}")),
    )
}

pub(crate) fn create_body() -> Value {
    json!({"client_id": "me", "image": "pytorch/pytorch", "env": {}, "price": null, "disk": 20.0,
           "label": null, "extra": null, "onstart": null, "image_login": null, "python_utf8": false,
           "lang_utf8": false, "use_jupyter_lab": false, "jupyter_dir": null, "force": false,
           "cancel_unavail": false, "template_hash_id": null, "user": null, "runtype": "ssh"})
}

fn msg(body: &Value) -> String {
    body["msg"].as_str().unwrap_or_default().to_owned()
}

fn offers(body: &Value) -> Vec<Value> {
    body["offers"].as_array().unwrap().clone()
}

#[tokio::test]
async fn searches_show_only_allowed_gpus_at_allowed_prices() {
    let h = harness().await;
    let ml = h.key("ml").await;
    let cv = h.key("cv").await;
    let query = json!({"verified": {"eq": true}, "external": {"eq": false}, "rentable": {"eq": true},
                       "order": [["score", "desc"]], "type": "on-demand", "allocated_storage": 5.0, "limit": 500});

    // Unconstrained, the market has H100s and offers above $1.50/h.
    let (status, all) = h
        .call(
            Method::POST,
            "/vast/api/v0/bundles/",
            Some(&cv),
            Some(query.clone()),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{all}");
    let all = offers(&all);
    assert!(all.iter().any(|o| o["gpu_name"] == "H100 SXM"));
    assert!(all.iter().any(|o| o["dph_total"].as_f64().unwrap() > 1.5));

    for (method, path, body) in [
        (
            Method::POST,
            "/vast/api/v0/bundles/".to_owned(),
            Some(query.clone()),
        ),
        (
            Method::PUT,
            "/vast/api/v0/search/asks/".to_owned(),
            Some(json!({"select_cols": ["*"], "q": query})),
        ),
        (
            Method::GET,
            format!(
                "/vast//api/v0/bundles/?q={}",
                form_urlencoded::byte_serialize(query.to_string().as_bytes()).collect::<String>()
            ),
            None,
        ),
    ] {
        let (status, mine) = h.call(method, &path, Some(&ml), body).await;
        assert_eq!(status, StatusCode::OK, "{path}: {mine}");
        let mine = offers(&mine);
        assert!(mine.len() >= 5, "{path}: too few offers: {}", mine.len());
        for o in &mine {
            assert!(
                ["RTX 4090", "RTX 3090"].contains(&o["gpu_name"].as_str().unwrap()),
                "{o}"
            );
            assert!(o["dph_total"].as_f64().unwrap() <= 1.5, "{o}");
            assert!(o["reliability2"].as_f64().unwrap() >= 0.9, "{o}");
        }
        // Everything allowed that the unconstrained search found is there.
        let expected = all
            .iter()
            .filter(|o| {
                ["RTX 4090", "RTX 3090"].contains(&o["gpu_name"].as_str().unwrap())
                    && o["dph_total"].as_f64().unwrap() <= 1.5
                    && o["reliability2"].as_f64().unwrap() >= 0.9
            })
            .count();
        assert_eq!(mine.len(), expected, "{path}");
    }

    // The constraints are in the query the upstream sees, not only applied
    // to its answer: the 5 offers with the most GPU memory are H100s and
    // A100s, yet the team gets 5 offers it may rent.
    let top = json!({"order": [["gpu_ram", "desc"]], "limit": 5});
    let (_, theirs) = h
        .call(
            Method::POST,
            "/vast/api/v0/bundles/",
            Some(&cv),
            Some(top.clone()),
        )
        .await;
    assert!(
        offers(&theirs)
            .iter()
            .all(|o| o["gpu_ram"].as_u64().unwrap() > 40_000),
        "{theirs}"
    );
    let (_, mine) = h
        .call(Method::POST, "/vast/api/v0/bundles/", Some(&ml), Some(top))
        .await;
    assert_eq!(offers(&mine).len(), 5, "{mine}");

    // Asking only for a disallowed GPU finds nothing; a user filter narrows.
    let (_, none) = h
        .call(
            Method::POST,
            "/vast/api/v0/bundles/",
            Some(&ml),
            Some(json!({"gpu_name": {"eq": "H100 SXM"}})),
        )
        .await;
    assert!(offers(&none).is_empty(), "{none}");
    let (_, cheap) = h
        .call(
            Method::POST,
            "/vast/api/v0/bundles/",
            Some(&ml),
            Some(json!({"gpu_name": {"eq": "RTX 4090"}, "dph_total": {"lt": "0.5"}, "limit": 100})),
        )
        .await;
    for o in offers(&cheap) {
        assert!(
            o["gpu_name"] == "RTX 4090" && o["dph_total"].as_f64().unwrap() < 0.5,
            "{o}"
        );
    }

    // The public GPU list needs no key; users/current is Warden's own.
    let (status, names) = h
        .call(Method::GET, "/vast/api/v0/gpu_names/unique/", None, None)
        .await;
    assert_eq!(status, StatusCode::OK);
    assert!(names["gpu_names"].as_array().unwrap().len() >= 8, "{names}");
    let (status, user) = h
        .call(Method::GET, "/vast/api/v0/users/current", Some(&ml), None)
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(user["warden"]["team"], "ml");
    assert_eq!(user["username"], "ml/alice");
    assert!(user.get("api_key").is_none(), "{user}");
}

/// Spend as the store's rule computes it: hourly × duration, rounded down.
fn cost_micros(a: &Allocation) -> i64 {
    let dur = i128::from(a.ended.unwrap().micros() - a.started.micros());
    i64::try_from(i128::from(a.hourly.micros()) * dur / 3_600_000_000).unwrap()
}

#[tokio::test]
async fn create_list_destroy_and_the_ledger_cost() {
    let h = harness().await;
    let ml = h.key("ml").await;
    let offer = h.offer("RTX 3090", 1);
    let (status, created) = h.create(&ml, offer).await;
    assert_eq!(status, StatusCode::OK, "{created}");
    assert_eq!(created["success"], true);
    let id = created["new_contract"].as_u64().unwrap();

    // The instance exists upstream with Warden's env, and is the team's.
    let info = h.sim.instance(id).unwrap();
    assert_eq!(info.offer_id, offer);
    let live = h.live().await;
    assert_eq!(live.len(), 1);
    let a = &live[0];
    assert_eq!(
        (a.door, a.team.as_str(), a.name.as_str()),
        (Door::Vast, "ml", id.to_string().as_str())
    );
    assert_eq!(
        a.hourly,
        Usd::from_micros(i64::try_from(info.dph_total_micros).unwrap()),
        "the allocation records the instance's $/hour"
    );
    assert_eq!(
        (a.gpus, a.gpu_model.as_ref().unwrap().as_str()),
        (1, "RTX_3090")
    );

    let list = "/vast/api/v1/instances/?select_filters=%7B%7D&order_by=%5B%7B%22col%22%3A+%22id%22%2C+%22dir%22%3A+%22asc%22%7D%5D&limit=25";
    let (status, rows) = h.call(Method::GET, list, Some(&ml), None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(rows["total_instances"], 1);
    assert_eq!(rows["next_token"], Value::Null);
    let row = &rows["instances"][0];
    assert_eq!(row["id"], id);
    assert!(row["start_date"].is_number());
    assert!(
        row["extra_env"]
            .as_array()
            .unwrap()
            .contains(&json!(["WARDEN_TEAM", "ml"])),
        "{row}"
    );
    let (_, one) = h
        .call(
            Method::GET,
            &format!("/vast/api/v0/instances/{id}/?owner=me"),
            Some(&ml),
            None,
        )
        .await;
    assert_eq!(one["instances"]["id"], id);
    let (_, v0) = h
        .call(Method::GET, "/vast/api/v0/instances/", Some(&ml), None)
        .await;
    assert_eq!(v0["instances"].as_array().unwrap().len(), 1);
    let (_, filters) = h
        .call(
            Method::GET,
            "/vast/api/v0/instances/filters/",
            Some(&ml),
            None,
        )
        .await;
    assert_eq!(filters["filters"][0]["gpu_name"], "RTX 3090");

    // Label, then destroy: the allocation ends, the ledger cost closes.
    let (status, _) = h
        .call(
            Method::PUT,
            &format!("/vast/api/v0/instances/{id}/"),
            Some(&ml),
            Some(json!({"label": "exp-7"})),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(h.sim.instance(id).unwrap().label.as_deref(), Some("exp-7"));
    let (status, gone) = h
        .call(
            Method::DELETE,
            &format!("/vast/api/v0/instances/{id}/"),
            Some(&ml),
            Some(json!({})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{gone}");
    assert_eq!(gone["success"], true);
    assert_eq!(
        h.sim.instance(id).unwrap().status,
        InstanceStatus::Destroyed
    );
    assert!(h.live().await.is_empty());
    let ended = h
        .store
        .allocations_named(
            Door::Vast,
            &[AllocationName::parse(&id.to_string()).unwrap()],
        )
        .await
        .unwrap();
    assert_eq!(ended.len(), 1);
    assert_eq!(ended[0].state, AllocationState::Ended);
    let team = TeamName::parse("ml").unwrap();
    let spent = h
        .store
        .spend(&team, UnixMicros::from_micros(0), now())
        .await
        .unwrap();
    assert_eq!(spent.micros(), cost_micros(&ended[0]));
    let (_, rows) = h.call(Method::GET, list, Some(&ml), None).await;
    assert_eq!(rows["total_instances"], 0);
    assert!(h.store.verify_audit().await.unwrap().is_intact());
}

#[tokio::test]
async fn another_team_cannot_see_stop_label_or_destroy() {
    let h = harness().await;
    let ml = h.key("ml").await;
    let cv = h.key("cv").await;
    let (_, created) = h.create(&ml, h.offer("RTX 4090", 1)).await;
    let id = created["new_contract"].as_u64().expect("created");

    let (_, rows) = h
        .call(Method::GET, "/vast/api/v1/instances/", Some(&cv), None)
        .await;
    assert_eq!(
        (rows["total_instances"].clone(), rows["instances"].clone()),
        (json!(0), json!([]))
    );
    let (status, one) = h
        .call(
            Method::GET,
            &format!("/vast/api/v0/instances/{id}/"),
            Some(&cv),
            None,
        )
        .await;
    assert_eq!((status, one), (StatusCode::OK, json!({"instances": null})));
    for (method, path, body) in [
        (
            Method::PUT,
            format!("/vast/api/v0/instances/{id}/"),
            json!({"state": "stopped"}),
        ),
        (
            Method::PUT,
            format!("/vast/api/v0/instances/{id}/"),
            json!({"label": "mine now"}),
        ),
        (
            Method::DELETE,
            format!("/vast/api/v0/instances/{id}/"),
            json!({}),
        ),
        (
            Method::DELETE,
            "/vast/api/v0/instances/".to_owned(),
            json!({"instance_ids": [id]}),
        ),
        (
            Method::PUT,
            "/vast/api/v0/instances/".to_owned(),
            json!({"state": "stopped", "ids": [id]}),
        ),
    ] {
        let (status, body) = h.call(method, &path, Some(&cv), Some(body)).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{path}: {body}");
        assert!(msg(&body).contains("not team `cv`'s"), "{body}");
    }
    let info = h.sim.instance(id).unwrap();
    assert_eq!(
        (info.status, info.label),
        (InstanceStatus::Loading, None),
        "nothing changed upstream"
    );
    assert_eq!(h.live().await.len(), 1);
    // Unsupported calls are refused with what is supported.
    let (status, body) = h
        .call(
            Method::PUT,
            &format!("/vast/api/v0/instances/reboot/{id}/"),
            Some(&ml),
            Some(json!({})),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert!(
        msg(&body).contains("supported: show user, search offers"),
        "{body}"
    );
}

#[tokio::test]
async fn disallowed_and_over_budget_creates_are_denied_with_the_reason() {
    let h = harness().await;
    let ml = h.key("ml").await;
    let h100 = h.offer("H100 SXM", 1);
    let (status, body) = h.create(&ml, h100).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    let m = msg(&body);
    assert!(
        m.contains("[team.allowed_gpus] GPU `H100_SXM` is not allowed"),
        "{m}"
    );
    assert!(m.contains("[team.max_hourly_usd]"), "{m}");

    // $0.20 a day with an hour reserved per launch: a $0.25+/h RTX 4090 does not fit.
    let thrifty = h.key("thrifty").await;
    let (status, body) = h.create(&thrifty, h.offer("RTX 4090", 1)).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    let m = msg(&body);
    assert!(
        m.contains("[team.budgets] budget exceeded: budget $0.20"),
        "{m}"
    );
    assert!(m.contains("the daily budget resets at"), "{m}");

    assert!(h.sim.instances().is_empty(), "nothing was rented");
    assert!(h.live().await.is_empty());
    let records = h
        .store
        .export_audit(UnixMicros::from_micros(0), now())
        .await
        .unwrap();
    assert!(records
        .iter()
        .any(|r| r.kind == "decision" && r.payload.contains("\"door\":\"vast\"")));
    assert!(records.iter().any(|r| r.kind == "allocation.denied"));

    // An offer that is gone is a 404 the CLI does not retry.
    let (status, body) = h.create(&ml, 99_999).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    assert!(
        msg(&body).contains("offer 99999 is not available"),
        "{body}"
    );
}

#[tokio::test]
async fn keys_are_checked_on_every_request() {
    let h = harness().await;
    let path = "/vast/api/v1/instances/";
    let (status, body) = h.call(Method::GET, path, None, None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(msg(&body).contains("no API key"), "{body}");
    let (status, body) = h.call(Method::GET, path, Some("not-a-key"), None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(msg(&body).contains("not a Warden API key"), "{body}");

    let key = h.key("ml").await;
    let (status, _) = h.call(Method::GET, path, Some(&key), None).await;
    assert_eq!(status, StatusCode::OK);
    let id = warden_store::ApiKeyId::parse(key.split('_').nth(1).unwrap()).unwrap();
    let mut forged = key.clone();
    forged.replace_range(key.len() - 4.., "0000");
    let (status, body) = h.call(Method::GET, path, Some(&forged), None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(msg(&body).contains("is not valid"), "{body}");

    // Rotation with no grace: the old key expired, the new one works.
    let rotated = h
        .store
        .rotate_key(&id, Duration::ZERO, RotatedExpiry::Never, now())
        .await
        .unwrap();
    let (status, body) = h.call(Method::GET, path, Some(&key), None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(msg(&body).contains("expired at"), "{body}");
    let new = rotated.new.secret.expose().to_owned();
    let (status, _) = h.call(Method::GET, path, Some(&new), None).await;
    assert_eq!(status, StatusCode::OK);
    h.store
        .revoke_key(&rotated.new.key.id, now())
        .await
        .unwrap();
    let (status, body) = h.call(Method::GET, path, Some(&new), None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(msg(&body).contains("was revoked at"), "{body}");

    let stale = h
        .key_with(
            "ml",
            Some(UnixMicros::from_micros(now().micros() - 1_000_000)),
        )
        .await;
    let (status, body) = h.call(Method::GET, path, Some(&stale), None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(msg(&body).contains("expired at"), "{body}");

    // A key of a team no longer in the config.
    let cv = h.key("cv").await;
    let without_cv = h.under("teams: {ml: {}}");
    let (status, body) = call_state(&without_cv, Method::GET, path, Some(&cv), None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(
        msg(&body).contains("team `cv`, which is no longer in Warden's config"),
        "{body}"
    );
}

/// Exactly one live allocation per instance that exists, named by it, at
/// its price; none for anything else.
async fn assert_no_drift(h: &Harness) {
    let instances = h.sim.instances();
    let live = h.live().await;
    let mut names: Vec<String> = live.iter().map(|a| a.name.as_str().to_owned()).collect();
    names.sort();
    let mut ids: Vec<String> = instances.iter().map(|i| i.id.to_string()).collect();
    ids.sort();
    assert_eq!(names, ids, "live allocations vs instances");
    for i in &instances {
        let a = live
            .iter()
            .find(|a| a.name.as_str() == i.id.to_string())
            .unwrap();
        assert_eq!(
            a.hourly.micros(),
            i64::try_from(i.dph_total_micros).unwrap(),
            "instance {}",
            i.id
        );
    }
}

async fn faults_leave_no_drift(storage: Option<&str>) {
    let h = harness_with(POLICY, storage, quick_config()).await;
    let ml = h.key("ml").await;

    // The create happens upstream, then the answer is a 500.
    let first = h.offer("RTX 3090", 1);
    h.sim.push_fault(Fault::next(
        Endpoint::CreateInstance,
        FaultAction::FailAfter(500),
    ));
    let (status, body) = h.create(&ml, first).await;
    assert_eq!(status, StatusCode::BAD_GATEWAY, "{body}");
    assert!(
        msg(&body).contains("Warden keeps the reservation"),
        "{body}"
    );
    assert_eq!(h.sim.instances().len(), 1);
    assert!(h.live().await[0]
        .name
        .as_str()
        .starts_with(&format!("pending:{first}:")));
    // Listing finds it (and settles the placeholder) before any reconcile.
    let (_, rows) = h
        .call(Method::GET, "/vast/api/v1/instances/", Some(&ml), None)
        .await;
    assert_eq!(rows["total_instances"], 1, "{rows}");
    assert_no_drift(&h).await;
    let report = h.reconcile().await;
    assert!(report.settled.is_empty(), "{report:?}");

    // The answer is lost (connection dropped), and the CLI retries: the retry
    // finds the instance; nothing is rented or reserved twice.
    let second = h.offer("RTX 4090", 1);
    h.sim
        .push_fault(Fault::next(Endpoint::CreateInstance, FaultAction::Drop));
    let (status, body) = h.create(&ml, second).await;
    assert_eq!(status, StatusCode::BAD_GATEWAY, "{body}");
    let (status, retry) = h.create(&ml, second).await;
    assert_eq!(status, StatusCode::OK, "{retry}");
    let id = retry["new_contract"].as_u64().unwrap();
    assert_eq!(h.sim.instance(id).unwrap().offer_id, second);
    assert_eq!(h.sim.instances().len(), 2);
    assert_no_drift(&h).await;

    // Refused before anything happened (a 500 with no create): the
    // placeholder is voided by the reconciler and costs nothing.
    let third = h.offer("RTX 3090", 2);
    h.sim.push_fault(Fault::next(
        Endpoint::CreateInstance,
        FaultAction::Fail(500),
    ));
    let (status, _) = h.create(&ml, third).await;
    assert_eq!(status, StatusCode::BAD_GATEWAY);
    assert_eq!(h.sim.instances().len(), 2);
    let report = h.reconcile().await;
    assert_eq!(report.voided.len(), 1, "{report:?}");
    assert_no_drift(&h).await;

    // A 4xx means nothing was rented: voided at once.
    h.sim.push_fault(Fault::next(
        Endpoint::CreateInstance,
        FaultAction::Fail(400),
    ));
    let (status, _) = h.create(&ml, third).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_no_drift(&h).await;

    // No answer in time: 504; the instance was created; the reconciler settles it.
    h.sim
        .push_fault(Fault::next(Endpoint::CreateInstance, FaultAction::Hang));
    let (status, body) = h.create(&ml, third).await;
    assert_eq!(status, StatusCode::GATEWAY_TIMEOUT, "{body}");
    assert_eq!(h.sim.instances().len(), 3);
    let report = h.reconcile().await;
    assert_eq!(report.settled.len(), 1, "{report:?}");
    assert_no_drift(&h).await;

    // Voided placeholders cost nothing: the team's spend is exactly that of
    // its three instances' allocations.
    let team = TeamName::parse("ml").unwrap();
    let at = now();
    let spent = h
        .store
        .spend(&team, UnixMicros::from_micros(0), at)
        .await
        .unwrap();
    let expected: i128 = h
        .live()
        .await
        .iter()
        .map(|a| i128::from(a.hourly.micros()) * i128::from(at.micros() - a.started.micros()))
        .sum::<i128>()
        / 3_600_000_000;
    assert!(
        (i128::from(spent.micros()) - expected).abs() <= 3,
        "spent {spent} vs {expected}"
    );
    h.sim.release_hung();
}

#[tokio::test]
async fn upstream_faults_during_creates_leave_no_ledger_drift_sqlite() {
    faults_leave_no_drift(None).await;
}

#[tokio::test]
async fn upstream_faults_during_creates_leave_no_ledger_drift_postgres() {
    let db = crate::replicas::Database::create().await;
    faults_leave_no_drift(Some(&db.url)).await;
}

async fn create_behind_wardens_back(h: &Harness, offer: u64) -> u64 {
    let resp = reqwest_put(h.sim_addr, &format!("/api/v0/asks/{offer}/"), create_body()).await;
    resp["new_contract"].as_u64().unwrap()
}

/// A plain HTTP/1.1 request to the simulator with the upstream key.
async fn reqwest_put(addr: std::net::SocketAddr, path: &str, body: Value) -> Value {
    raw(addr, "PUT", path, Some(body)).await
}

async fn raw(addr: std::net::SocketAddr, method: &str, path: &str, body: Option<Value>) -> Value {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: sim\r\nAuthorization: Bearer {UPSTREAM_KEY}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    let (_, json) = out.split_once("\r\n\r\n").unwrap();
    serde_json::from_str(json).unwrap_or_else(|e| panic!("{e}: {out}"))
}

#[tokio::test]
async fn the_reconciler_catches_what_happens_behind_wardens_back() {
    let h = harness().await;
    let ml = h.key("ml").await;
    let (_, a) = h.create(&ml, h.offer("RTX 3090", 1)).await;
    let (_, b) = h.create(&ml, h.offer("RTX 4090", 1)).await;
    let (a, b) = (
        a["new_contract"].as_u64().unwrap(),
        b["new_contract"].as_u64().unwrap(),
    );
    assert!(
        h.reconcile().await
            == ReconcileReport {
                instances: 2,
                ..ReconcileReport::default()
            }
    );

    // Created with the upstream key directly: flagged once, seen by no team.
    let stranger = create_behind_wardens_back(&h, h.offer("RTX 3090", 2)).await;
    // Destroyed and stopped directly.
    raw(
        h.sim_addr,
        "DELETE",
        &format!("/api/v0/instances/{a}/"),
        Some(json!({})),
    )
    .await;
    raw(
        h.sim_addr,
        "PUT",
        &format!("/api/v0/instances/{b}/"),
        Some(json!({"state": "stopped"})),
    )
    .await;
    let report = h.reconcile().await;
    assert_eq!(report.unknown, [stranger]);
    let mut ended = report.ended.clone();
    ended.sort();
    assert_eq!(
        ended,
        [
            (a.to_string(), "instance_gone"),
            (b.to_string(), "instance_stopped")
        ]
    );
    assert!(h.live().await.is_empty());
    let records = h
        .store
        .export_audit(UnixMicros::from_micros(0), now())
        .await
        .unwrap();
    let flagged: Vec<_> = records
        .iter()
        .filter(|r| r.kind == "vast.unknown_instance")
        .collect();
    assert_eq!(flagged.len(), 1);
    assert!(flagged[0]
        .payload
        .contains(&format!("\"instance\":{stranger}")));
    assert!(records.iter().any(|r| r.kind == "sync.vast"));
    let (_, rows) = h
        .call(Method::GET, "/vast/api/v1/instances/", Some(&ml), None)
        .await;
    let ids: Vec<u64> = rows["instances"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_u64().unwrap())
        .collect();
    assert_eq!(
        ids,
        [b],
        "the stopped one is still the team's; the stranger is no one's"
    );

    // Started directly: recorded again for its team. The stranger is not re-flagged.
    raw(
        h.sim_addr,
        "PUT",
        &format!("/api/v0/instances/{b}/"),
        Some(json!({"state": "running"})),
    )
    .await;
    let report = h.reconcile().await;
    assert_eq!(report.adopted, [(b, "ml".to_owned())]);
    assert!(report.unknown.is_empty());
    assert_no_drift_except(&h, &[stranger]).await;
}

async fn assert_no_drift_except(h: &Harness, strangers: &[u64]) {
    let live = h.live().await;
    let mut names: Vec<String> = live.iter().map(|a| a.name.as_str().to_owned()).collect();
    names.sort();
    let mut ids: Vec<String> = h
        .sim
        .instances()
        .iter()
        .filter(|i| i.status != InstanceStatus::Stopped && !strangers.contains(&i.id))
        .map(|i| i.id.to_string())
        .collect();
    ids.sort();
    assert_eq!(names, ids);
}

#[tokio::test]
async fn stop_ends_the_cost_and_start_is_decided_again() {
    let h = harness().await;
    let ml = h.key("ml").await;
    let (_, c) = h.create(&ml, h.offer("RTX 3090", 1)).await;
    let id = c["new_contract"].as_u64().unwrap();
    let path = format!("/vast/api/v0/instances/{id}/");
    let (status, _) = h
        .call(
            Method::PUT,
            &path,
            Some(&ml),
            Some(json!({"state": "stopped"})),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(h.sim.instance(id).unwrap().status, InstanceStatus::Stopped);
    assert!(
        h.live().await.is_empty(),
        "a stopped instance holds no allocation"
    );
    let (status, body) = h
        .call(
            Method::PUT,
            &path,
            Some(&ml),
            Some(json!({"state": "running"})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(h.live().await.len(), 1);
    assert_ne!(h.sim.instance(id).unwrap().status, InstanceStatus::Stopped);

    // Tighter policy: the restart is denied and the instance stays stopped.
    h.call(
        Method::PUT,
        &path,
        Some(&ml),
        Some(json!({"state": "stopped"})),
    )
    .await;
    let strict = h.under("teams: {ml: {allowed_gpus: [RTX_4090]}}");
    let (status, body) = call_state(
        &strict,
        Method::PUT,
        &path,
        Some(&ml),
        Some(json!({"state": "running"})),
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert!(msg(&body).contains("[team.allowed_gpus]"), "{body}");
    assert_eq!(h.sim.instance(id).unwrap().status, InstanceStatus::Stopped);
    assert!(h.live().await.is_empty());
}

#[tokio::test]
async fn an_exhausted_budget_stops_the_teams_instances_when_asked_to() {
    let policy = r#"
teams:
  ml:
    budgets: {daily_usd: 5, reservation_hours: 0}
    vast: {on_budget_exhausted: stop}
  cv:
    budgets: {daily_usd: 5, reservation_hours: 0}
"#;
    let h = harness_with(policy, None, quick_config()).await;
    let (ml, cv) = (h.key("ml").await, h.key("cv").await);
    let (_, a) = h.create(&ml, h.offer("RTX 3090", 1)).await;
    let (_, b) = h.create(&cv, h.offer("RTX 4090", 1)).await;
    let (a, b) = (
        a["new_contract"].as_u64().unwrap(),
        b["new_contract"].as_u64().unwrap(),
    );
    assert!(h.reconcile().await.budget_stopped.is_empty());

    // Both teams spent $10 today on another door (an hour at $10/h, ended).
    let hour_ago = UnixMicros::from_micros(now().micros() - 3_600_000_000);
    for team in ["ml", "cv"] {
        let req = AllocationRequest {
            door: Door::Skypilot,
            team: TeamName::parse(team).unwrap(),
            user: None,
            name: AllocationName::parse("big-run").unwrap(),
            gpu_model: None,
            gpus: 0,
            hourly: Usd::from_micros(10_000_000),
            context: None,
        };
        h.store.reserve(&req, &[], hour_ago).await.unwrap();
        h.store
            .end(
                &warden_store::EndTarget::Name {
                    door: Door::Skypilot,
                    name: req.name.clone(),
                },
                now(),
            )
            .await
            .unwrap();
    }
    let report = h.reconcile().await;
    assert_eq!(report.budget_stopped, [(a, "ml".to_owned())], "{report:?}");
    assert_eq!(h.sim.instance(a).unwrap().status, InstanceStatus::Stopped);
    assert_ne!(
        h.sim.instance(b).unwrap().status,
        InstanceStatus::Stopped,
        "`block` (the default) stops nothing"
    );
    let live: Vec<String> = h
        .live()
        .await
        .iter()
        .map(|a| a.name.as_str().to_owned())
        .collect();
    assert_eq!(live, [b.to_string()]);
    let records = h
        .store
        .export_audit(UnixMicros::from_micros(0), now())
        .await
        .unwrap();
    assert!(records
        .iter()
        .any(|r| r.kind == "vast.budget_stop" && r.payload.contains(&format!("\"instance\":{a}"))));
    // Nothing more to stop on the next pass.
    assert!(h.reconcile().await.budget_stopped.is_empty());
}

#[tokio::test]
async fn the_pre_destroy_command_runs_over_ssh_and_is_audited() {
    let dir = TempDir::new("warden-fake-ssh");
    let log = dir.0.join("calls");
    let ssh = dir.0.join("ssh");
    std::fs::write(
        &ssh,
        format!(
            "#!/bin/sh\nprintf '%s\\n' \"$@\" >> {}\necho 'synced 3 files' >&2\nexit 7\n",
            log.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&ssh, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let config = VastConfig {
        pre_destroy: Some(PreDestroy {
            command: "/opt/sync-results.sh --final".to_owned(),
            timeout: Duration::from_secs(20),
            user: "root".to_owned(),
            identity: None,
            known_hosts: None,
        }),
        ..quick_config()
    };
    let h = harness_full(POLICY, None, config, Some(&ssh), None).await;

    let ml = h.key("ml").await;
    let (_, c) = h.create(&ml, h.offer("RTX 3090", 1)).await;
    let id = c["new_contract"].as_u64().unwrap();
    let (status, body) = h
        .call(
            Method::DELETE,
            &format!("/vast/api/v0/instances/{id}/"),
            Some(&ml),
            Some(json!({})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["warden_pre_destroy"]["exit_code"], 7, "{body}");
    let args: Vec<String> = std::fs::read_to_string(&log)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect();
    let port = (20_000 + id % 40_000).to_string();
    let host = format!("root@ssh{}.sim.invalid", id % 10);
    assert_eq!(args.first().map(String::as_str), Some("-p"));
    assert_eq!(args.get(1), Some(&port));
    assert!(args.contains(&host), "{args:?}");
    assert_eq!(
        args.last().map(String::as_str),
        Some("/opt/sync-results.sh --final")
    );
    assert_eq!(
        h.sim.instance(id).unwrap().status,
        InstanceStatus::Destroyed,
        "a failed cleanup does not block the destroy"
    );
    let records = h
        .store
        .export_audit(UnixMicros::from_micros(0), now())
        .await
        .unwrap();
    let pre: Value = serde_json::from_str(
        &records
            .iter()
            .find(|r| r.kind == "vast.pre_destroy")
            .unwrap()
            .payload,
    )
    .unwrap();
    assert_eq!(pre["exit_code"], 7);
    assert_eq!(pre["timed_out"], false);
    assert!(pre["stderr_tail"]
        .as_str()
        .unwrap()
        .contains("synced 3 files"));
}

/// A throwaway OpenSSH server on a free port of this machine, logging in
/// only the user running the tests with a key made for the test. Stopped
/// on drop. `scripts/test` installs `openssh-server` when it is missing.
struct Sshd {
    child: std::process::Child,
    port: u16,
}

impl Drop for Sshd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn keygen(path: &std::path::Path) {
    let status = std::process::Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(path)
        .status()
        .expect("ssh-keygen (package openssh-client) must be installed");
    assert!(status.success());
}

fn start_sshd(dir: &std::path::Path, client_key: &std::path::Path) -> Sshd {
    let sshd = ["/usr/sbin/sshd", "/usr/bin/sshd"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists())
        .expect(
            "sshd not found: scripts/test installs openssh-server (apt-get install openssh-server)",
        );
    // Privilege separation needs this directory when sshd runs as root.
    let _ = std::fs::create_dir_all("/run/sshd");
    let host_key = dir.join("host_key");
    keygen(&host_key);
    let authorized = dir.join("authorized_keys");
    std::fs::copy(client_key.with_extension("pub"), &authorized).unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let config = dir.join("sshd_config");
    std::fs::write(
        &config,
        format!(
            "Port {port}\nListenAddress 127.0.0.1\nHostKey {}\nAuthorizedKeysFile {}\nPidFile {}\nStrictModes no\nPasswordAuthentication no\nKbdInteractiveAuthentication no\nPermitRootLogin prohibit-password\nUsePAM no\n",
            host_key.display(),
            authorized.display(),
            dir.join("sshd.pid").display()
        ),
    )
    .unwrap();
    let child = std::process::Command::new(sshd)
        .arg("-D")
        .arg("-e")
        .arg("-f")
        .arg(&config)
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(dir.join("sshd.log")).unwrap())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            std::time::Instant::now() < deadline,
            "sshd did not listen: {}",
            std::fs::read_to_string(dir.join("sshd.log")).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    Sshd { child, port }
}

/// The pre-destroy cleanup through the real `ssh` client and a real sshd:
/// the command runs on the instance's SSH address before the destroy, with
/// Warden's own key and known-hosts file, and its outcome is audited.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pre_destroy_command_runs_through_a_real_ssh_server() {
    let dir = TempDir::new("warden-real-ssh");
    let client_key = dir.0.join("warden_ssh_key");
    keygen(&client_key);
    let sshd = start_sshd(&dir.0, &client_key);
    let user = String::from_utf8(
        std::process::Command::new("id")
            .arg("-un")
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap()
    .trim()
    .to_owned();
    let marker = dir.0.join("cleaned");
    let known_hosts = dir.0.join("known_hosts");
    let config = VastConfig {
        pre_destroy: Some(PreDestroy {
            command: format!("echo synced > {}", marker.display()),
            timeout: Duration::from_secs(30),
            user: user.clone(),
            identity: Some(client_key.clone()),
            known_hosts: Some(known_hosts.clone()),
        }),
        ..quick_config()
    };
    let h = harness_full(
        POLICY,
        None,
        config,
        None,
        Some(("127.0.0.1".to_owned(), sshd.port)),
    )
    .await;
    let ml = h.key("ml").await;
    let (_, c) = h.create(&ml, h.offer("RTX 3090", 1)).await;
    let id = c["new_contract"].as_u64().unwrap();
    let (status, body) = h
        .call(
            Method::DELETE,
            &format!("/vast/api/v0/instances/{id}/"),
            Some(&ml),
            Some(json!({})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["warden_pre_destroy"]["exit_code"], 0, "{body}");
    assert_eq!(
        std::fs::read_to_string(&marker).unwrap().trim(),
        "synced",
        "the command ran on the SSH server"
    );
    assert!(
        std::fs::read_to_string(&known_hosts)
            .unwrap()
            .contains("ssh-ed25519"),
        "the host key was recorded in Warden's known-hosts file"
    );
    assert_eq!(
        h.sim.instance(id).unwrap().status,
        InstanceStatus::Destroyed
    );
    let records = h
        .store
        .export_audit(UnixMicros::from_micros(0), now())
        .await
        .unwrap();
    let pre: Value = serde_json::from_str(
        &records
            .iter()
            .find(|r| r.kind == "vast.pre_destroy")
            .unwrap()
            .payload,
    )
    .unwrap();
    assert_eq!(pre["exit_code"], 0, "{pre}");
    assert_eq!(pre["port"], sshd.port, "{pre}");
    assert_eq!(pre["ran"], true, "{pre}");
}

/// A Vast key file others may read stops `warden serve` at start, naming
/// the file and the fix; a configured key that is missing does too.
#[test]
fn serve_refuses_a_vast_key_file_others_can_read() {
    use std::os::unix::fs::PermissionsExt;
    use std::process::{Command, Stdio};
    let dir = TempDir::new("warden-vast-keyfile");
    let key = dir.0.join("vast.key");
    std::fs::write(&key, "0123456789abcdef\n").unwrap();
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let config = dir.0.join("warden.yaml");
    let run = |yaml: String| {
        std::fs::write(&config, yaml).unwrap();
        let mut child = Command::new(env!("CARGO_BIN_EXE_warden"))
            .args(["serve", "--listen", "127.0.0.1:0", "--config"])
            .arg(&config)
            .env_remove("VAST_API_KEY")
            .env_remove("WARDEN_TEST_UNSET_KEY")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while child.try_wait().unwrap().is_none() {
            if std::time::Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("warden serve did not refuse to start");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let out = child.wait_with_output().unwrap();
        assert!(!out.status.success());
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let db = format!("sqlite://{}", dir.0.join("w.db").display());
    let err = run(format!(
        "storage: {db}\nteams: {{ml: {{}}}}\nvast: {{api_key_file: vast.key}}\n"
    ));
    let shown = key.display();
    assert!(
        err.contains(&format!("`{shown}`")) && err.contains(&format!("chmod 600 {shown}")),
        "{err}"
    );
    assert!(!err.contains("0123456789abcdef"), "{err}");
    let err = run(format!(
        "storage: {db}\nteams: {{ml: {{}}}}\nvast: {{api_key_env: WARDEN_TEST_UNSET_KEY}}\n"
    ));
    assert!(
        err.contains("environment variable `WARDEN_TEST_UNSET_KEY` is not set"),
        "{err}"
    );
}

/// The size of the audit log: every record's payload.
async fn audit_bytes(h: &Harness) -> usize {
    h.store
        .export_audit(UnixMicros::from_micros(0), now())
        .await
        .unwrap()
        .iter()
        .map(|r| r.payload.len())
        .sum()
}

/// Issue 10, point 1: a caller's free text is bounded (400 naming the
/// field, its size and the limit) before anything is decided, forwarded or
/// recorded, so denied creates with huge labels do not grow the audit log;
/// and an audit record keeps at most 64 KiB of any input (its hash when
/// larger), which `warden replay` skips and counts.
#[tokio::test]
async fn free_text_is_bounded_and_the_audit_log_does_not_grow_with_it() {
    let h = harness().await;
    let ml = h.key("ml").await;
    // Denied for `ml` (a GPU it may not rent): before, recorded in full.
    let h100 = h.offer("H100 SXM", 1);
    let path = format!("/vast/api/v0/asks/{h100}/");
    let before = audit_bytes(&h).await;
    for n in [100_000, 1_000_000, 1_000_000, 1_000_000] {
        let mut body = create_body();
        body["label"] = json!("x".repeat(n));
        let (status, answer) = h.call(Method::PUT, &path, Some(&ml), Some(body)).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{n}: {}", msg(&answer));
        assert_eq!(
            msg(&answer),
            format!("`label` is {n} bytes; Warden's Vast door accepts at most 1024 bytes")
        );
    }
    let grown = audit_bytes(&h).await - before;
    assert!(grown < 4096, "the audit log grew by {grown} bytes");

    // The same on an allowed create: nothing is rented or reserved.
    let rtx = h.offer("RTX 3090", 1);
    let mut body = create_body();
    body["image"] = json!(format!("registry.example/{}", "i".repeat(600)));
    let (status, answer) = h
        .call(
            Method::PUT,
            &format!("/vast/api/v0/asks/{rtx}/"),
            Some(&ml),
            Some(body),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{answer}");
    assert!(
        msg(&answer)
            .starts_with("`image` is 617 bytes; Warden's Vast door accepts at most 512 bytes"),
        "{answer}"
    );
    assert!(h.sim.instances().is_empty() && h.live().await.is_empty());

    // A label change is bounded too, and the instance keeps its label.
    let mut body = create_body();
    body["label"] = json!("x".repeat(1024));
    let (status, answer) = h
        .call(
            Method::PUT,
            &format!("/vast/api/v0/asks/{rtx}/"),
            Some(&ml),
            Some(body),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    let id = answer["new_contract"].as_u64().unwrap();
    let (status, answer) = h
        .call(
            Method::PUT,
            &format!("/vast/api/v0/instances/{id}/"),
            Some(&ml),
            Some(json!({"label": "y".repeat(100_000)})),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{answer}");
    assert_eq!(
        msg(&answer),
        "`label` is 100000 bytes; Warden's Vast door accepts at most 1024 bytes"
    );
    assert_eq!(h.sim.instance(id).unwrap().label, Some("x".repeat(1024)));

    // Within every limit but large in sum (20 fields of 4000 bytes): the
    // decision is recorded with the input's hash, size and prefix only.
    let mut body = create_body();
    for i in 0..20 {
        body[format!("extra_{i}")] = json!("z".repeat(4000));
    }
    let before = audit_bytes(&h).await;
    let (status, answer) = h.call(Method::PUT, &path, Some(&ml), Some(body)).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{answer}");
    let grown = audit_bytes(&h).await - before;
    assert!(grown < 16 * 1024, "the audit log grew by {grown} bytes");
    let records = h
        .store
        .export_audit(UnixMicros::from_micros(0), now())
        .await
        .unwrap();
    let last: Value = serde_json::from_str(
        &records
            .iter()
            .rev()
            .find(|r| r.kind == "decision")
            .unwrap()
            .payload,
    )
    .unwrap();
    assert!(last.get("input").is_none(), "{last}");
    let kept = &last["input_truncated"];
    assert_eq!(kept["sha256"].as_str().unwrap().len(), 64, "{kept}");
    assert!(kept["bytes"].as_u64().unwrap() > 80_000, "{kept}");
    assert!(
        kept["prefix"].as_str().unwrap().starts_with("{\"body\":"),
        "{kept}"
    );

    // `warden replay` skips it and says why, in both formats.
    let config = h._dir.0.join("replay.yaml");
    std::fs::write(
        &config,
        format!(
            "storage: sqlite://{}\n{POLICY}",
            h._dir.0.join("w.db").display()
        ),
    )
    .unwrap();
    let cfg = config.to_str().unwrap().to_owned();
    let run = move |format: &'static str| {
        let cfg = cfg.clone();
        std::thread::spawn(move || {
            crate::cli::warden(&[
                "replay", "--config", &cfg, "--since", "1h", "--format", format,
            ])
        })
        .join()
        .unwrap()
    };
    let (code, out, err) = run("json");
    assert_eq!(code, 0, "{out}{err}");
    let report: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(report["skipped_truncated"], 1, "{out}");
    assert_eq!(report["skipped_reasons"]["input_truncated"], 1, "{out}");
    // Vast records are replayed (issue 11), not skipped by door.
    assert!(
        report["skipped_reasons"].get("door:vast").is_none(),
        "{out}"
    );
    let (code, out, err) = run("table");
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("1 input_truncated: the request was too large to keep whole"),
        "{out}"
    );
    assert!(!out.contains("cannot be replayed"), "{out}");
}

/// Issue 10, point 6: a label that is not a string and an `env` that is
/// not a map of strings are refused (400, naming the field), never
/// dropped while the create goes on.
#[tokio::test]
async fn non_string_labels_and_malformed_env_are_refused() {
    let h = harness().await;
    let ml = h.key("ml").await;
    let offer = h.offer("RTX 3090", 1);
    let path = format!("/vast/api/v0/asks/{offer}/");
    for (field, value, want) in [
        (
            "label",
            json!(7),
            "`label` must be a string (or null), not a number",
        ),
        (
            "label",
            json!(["a", "b"]),
            "`label` must be a string (or null), not a list",
        ),
        (
            "label",
            json!({"team": "cv"}),
            "`label` must be a string (or null), not a map",
        ),
        (
            "env",
            json!("-e HF_TOKEN=x"),
            "`env` must be a map of variable names to string values",
        ),
        (
            "env",
            json!(["HF_TOKEN=x"]),
            "`env` must be a map of variable names to string values",
        ),
        (
            "env",
            json!({"EPOCHS": 3}),
            "`env.EPOCHS` must be a string, not a number",
        ),
        (
            "env",
            json!({"A": {"b": "c"}}),
            "`env.A` must be a string, not a map",
        ),
    ] {
        let mut body = create_body();
        body[field] = value.clone();
        let (status, answer) = h.call(Method::PUT, &path, Some(&ml), Some(body)).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{field}={value}: {answer}");
        assert!(msg(&answer).starts_with(want), "{field}={value}: {answer}");
    }
    assert!(h.sim.instances().is_empty(), "nothing was rented");
    assert!(h.live().await.is_empty(), "nothing was reserved");

    // What the CLI sends for `--env '-e K=V -p 8080:8080' --label run7` passes.
    let mut body = create_body();
    body["env"] = json!({"K": "V", "-p 8080:8080": "1"});
    body["label"] = json!("run7");
    let (status, answer) = h.call(Method::PUT, &path, Some(&ml), Some(body)).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    let id = answer["new_contract"].as_u64().unwrap();
    assert_eq!(h.sim.instance(id).unwrap().label.as_deref(), Some("run7"));

    // `vastai label instance` with a non-string label: refused, unchanged.
    let (status, answer) = h
        .call(
            Method::PUT,
            &format!("/vast/api/v0/instances/{id}/"),
            Some(&ml),
            Some(json!({"label": 42})),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{answer}");
    assert_eq!(
        msg(&answer),
        "`label` must be a string (or null), not a number"
    );
    assert_eq!(h.sim.instance(id).unwrap().label.as_deref(), Some("run7"));
}

/// Issue 10, point 2: start-up commands and arguments (`--onstart-cmd`,
/// `--entrypoint`, `--args`) never reach the audit log in clear, allowed or
/// denied.
#[tokio::test]
async fn start_up_commands_and_arguments_are_redacted_in_the_audit_log() {
    let h = harness().await;
    let ml = h.key("ml").await;
    for offer in [h.offer("RTX 3090", 1), h.offer("H100 SXM", 1)] {
        let mut body = create_body();
        body["onstart"] = json!("huggingface-cli login --token hf_onstart_secret");
        body["onstart_cmd"] = json!("export WANDB_API_KEY=wandb_cmd_secret");
        body["entrypoint"] = json!("/bin/sh -c 'echo entry_secret'");
        body["args"] = json!(["--token", "args_secret"]);
        body["runtype"] = json!("args");
        let (status, answer) = h
            .call(
                Method::PUT,
                &format!("/vast/api/v0/asks/{offer}/"),
                Some(&ml),
                Some(body),
            )
            .await;
        assert!(
            status == StatusCode::OK || status == StatusCode::FORBIDDEN,
            "{answer}"
        );
    }
    let records = h
        .store
        .export_audit(UnixMicros::from_micros(0), now())
        .await
        .unwrap();
    let text: String = records.iter().map(|r| r.payload.as_str()).collect();
    for secret in [
        "hf_onstart_secret",
        "wandb_cmd_secret",
        "entry_secret",
        "args_secret",
    ] {
        assert!(!text.contains(secret), "{secret} is in the audit log");
    }
    let decisions: Vec<Value> = records
        .iter()
        .filter(|r| r.kind == "decision" || r.kind == "allocation.granted")
        .map(|r| serde_json::from_str(&r.payload).unwrap())
        .collect();
    assert_eq!(decisions.len(), 2, "{decisions:?}");
    for d in decisions {
        let body = d
            .get("input")
            .or_else(|| d["context"].get("input"))
            .map(|i| i["body"].clone())
            .unwrap();
        for field in ["onstart", "onstart_cmd", "entrypoint", "args"] {
            assert_eq!(body[field], "<redacted>", "{field}: {body}");
        }
        assert_eq!(body["runtype"], "args");
    }
}

/// Issue 10, point 3: the upstream's answer to a create is lost, the
/// reconciler finds the instance and settles the create, then the CLI's
/// retry arrives: it is answered with the instance (as a retry that finds
/// the create still pending is), never told the offer "is not available"
/// while the instance runs and bills.
async fn a_retry_after_the_reconciler_settled_finds_the_instance(storage: Option<&str>) {
    let h = harness_with(POLICY, storage, quick_config()).await;
    let ml = h.key("ml").await;
    let offer = h.offer("RTX 4090", 1);
    h.sim
        .push_fault(Fault::next(Endpoint::CreateInstance, FaultAction::Drop));
    let (status, body) = h.create(&ml, offer).await;
    assert_eq!(status, StatusCode::BAD_GATEWAY, "{body}");
    let report = h.reconcile().await;
    assert_eq!(report.settled.len(), 1, "{report:?}");
    let (status, retry) = h.create(&ml, offer).await;
    assert_eq!(status, StatusCode::OK, "{retry}");
    let id = retry["new_contract"].as_u64().unwrap();
    assert_eq!(h.sim.instance(id).unwrap().offer_id, offer);
    assert_eq!(h.sim.instances().len(), 1, "nothing was rented twice");
    assert_eq!(h.live().await.len(), 1, "nothing was reserved twice");
    assert_no_drift(&h).await;

    // Another team's create of that offer is not answered with it.
    let cv = h.key("cv").await;
    let (status, body) = h.create(&cv, offer).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");

    // Once the instance is destroyed, a create of the offer is a new one.
    let (status, body) = h
        .call(
            Method::DELETE,
            &format!("/vast/api/v0/instances/{id}/"),
            Some(&ml),
            Some(json!({})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (_, again) = h.create(&ml, offer).await;
    assert_ne!(again["new_contract"].as_u64(), Some(id), "{again}");
    h.sim.release_hung();
}

#[tokio::test]
async fn a_retry_after_the_reconciler_settled_finds_the_instance_sqlite() {
    a_retry_after_the_reconciler_settled_finds_the_instance(None).await;
}

#[tokio::test]
async fn a_retry_after_the_reconciler_settled_finds_the_instance_postgres() {
    let db = crate::replicas::Database::create().await;
    a_retry_after_the_reconciler_settled_finds_the_instance(Some(&db.url)).await;
}

/// Issue 10, point 4: a team's search filters are intersected with the
/// user's, never put in their place; an empty intersection is answered
/// with no offer and the reason (`warden.empty_because`).
#[tokio::test]
async fn search_filters_are_intersected_with_the_teams_and_say_why_when_empty() {
    let policy = "teams:\n  sure:\n    max_gpus_per_launch: 4\n    vast: {verified_only: true, min_reliability: 0.9}\n  any: {}\n";
    let h = harness_with(policy, None, quick_config()).await;
    let (sure, any) = (h.key("sure").await, h.key("any").await);
    let search = |key: String, filters: Value| {
        let state = Arc::clone(&h.state);
        async move {
            let mut query = json!({"external": {"eq": false}, "rentable": {"eq": true},
                "order": [["score", "desc"]], "type": "on-demand", "allocated_storage": 5.0, "limit": 500});
            query
                .as_object_mut()
                .unwrap()
                .extend(filters.as_object().unwrap().clone());
            call_state(
                &state,
                Method::POST,
                "/vast/api/v0/bundles/",
                Some(&key),
                Some(query),
            )
            .await
        }
    };
    // The market has unverified offers, which the unconstrained team sees.
    let (status, all) = search(any.clone(), json!({"verified": {"eq": false}})).await;
    assert_eq!(status, StatusCode::OK, "{all}");
    assert!(!offers(&all).is_empty(), "{all}");
    assert!(offers(&all).iter().all(|o| o["verified"] == false), "{all}");

    // `vastai search offers 'verified=false'`: the intersection is empty.
    let (status, none) = search(sure.clone(), json!({"verified": {"eq": false}})).await;
    assert_eq!(status, StatusCode::OK, "{none}");
    assert_eq!(offers(&none), Vec::<Value>::new(), "{none}");
    let why = none["warden"]["empty_because"].as_str().unwrap_or_default();
    assert!(
        why.contains("`verified eq false`") && why.contains("verified hosts only"),
        "{none}"
    );
    // `verified=any` (no condition) or `verified=true`: verified ones only.
    for filters in [json!({}), json!({"verified": {"eq": true}})] {
        let (status, some) = search(sure.clone(), filters.clone()).await;
        assert_eq!(status, StatusCode::OK, "{some}");
        assert!(!offers(&some).is_empty(), "{filters}: {some}");
        assert!(
            offers(&some).iter().all(|o| o["verified"] == true),
            "{some}"
        );
        assert!(some.get("warden").is_none(), "{some}");
    }
    // The other team filters intersect the same way.
    for (filters, said) in [
        (json!({"num_gpus": {"gte": "8"}}), "at most 4 GPUs"),
        (
            json!({"reliability2": {"lt": "0.5"}}),
            "reliability 0.9 or more",
        ),
    ] {
        let (status, none) = search(sure.clone(), filters.clone()).await;
        assert_eq!(status, StatusCode::OK, "{none}");
        assert_eq!(offers(&none), Vec::<Value>::new(), "{filters}: {none}");
        let why = none["warden"]["empty_because"].as_str().unwrap_or_default();
        assert!(why.contains(said), "{filters}: {none}");
    }
    let (status, some) = search(sure.clone(), json!({"num_gpus": {"gte": "2"}})).await;
    assert_eq!(status, StatusCode::OK, "{some}");
    assert!(!offers(&some).is_empty(), "{some}");
    for o in offers(&some) {
        let n = o["num_gpus"].as_u64().unwrap();
        assert!((2..=4).contains(&n) && o["verified"] == true, "{o}");
        assert!(o["reliability2"].as_f64().unwrap() >= 0.9, "{o}");
    }
    // A bound that is not a number is not silently replaced by the team's.
    let (status, bad) = search(sure, json!({"num_gpus": {"lte": "many"}})).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}");
    assert!(msg(&bad).contains("num_gpus lte \"many\""), "{bad}");
}

/// Issue 10, point 5: a quota denial at the Vast door says what to do in
/// `vastai` terms, never `sky down`.
#[tokio::test]
async fn quota_denials_give_vast_advice() {
    let policy = "teams:\n  ml:\n    quotas: {max_live: 1}\n  cv:\n    quotas:\n      per_user: {max_live: 1}\n  rate:\n    quotas: {max_launches_per_user: 1, launch_window_minutes: 60}\n";
    let h = harness_with(policy, None, quick_config()).await;
    for (team, scope_says) in [
        ("ml", "running instances of the team"),
        ("cv", "your running instances"),
        ("rate", "create again after that time"),
    ] {
        let key = h.key(team).await;
        let free: Vec<u64> = h
            .sim
            .offers()
            .iter()
            .filter(|o| o.gpu_name.starts_with("RTX") && o.verified && o.rented_by.is_none())
            .map(|o| o.id)
            .take(2)
            .collect();
        let (status, body) = h.create(&key, free[0]).await;
        assert_eq!(status, StatusCode::OK, "{team}: {body}");
        let (status, body) = h.create(&key, free[1]).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{team}: {body}");
        let m = msg(&body);
        assert!(
            m.contains("[team.quotas]") && m.contains(scope_says),
            "{team}: {m}"
        );
        assert!(
            !m.contains("sky down") && !m.contains("cluster"),
            "{team}: {m}"
        );
        if team != "rate" {
            assert!(
                m.contains("`vastai show instances`, `vastai destroy instance ID`"),
                "{team}: {m}"
            );
        }
    }
}

/// Issue 11, point 2: the host facts of an offer (create) and of an
/// instance (start) reach the core, which judges the team's `vast` options
/// and CEL rules on them; start is judged like create.
#[tokio::test]
async fn host_facts_are_judged_by_the_core_at_create_and_at_start() {
    let policy = "teams:\n  sure: {vast: {verified_only: true}}\n  cv: {}\n";
    let h = harness_with(policy, None, quick_config()).await;
    let (sure, cv) = (h.key("sure").await, h.key("cv").await);
    let unverified = h
        .sim
        .offers()
        .iter()
        .find(|o| !o.verified && o.rented_by.is_none() && o.num_gpus == 1)
        .expect("an unverified offer")
        .id;

    // Create: the core denies the unverified host for `sure`.
    let (status, body) = h.create(&sure, unverified).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert!(msg(&body).contains("[team.vast.verified_only]"), "{body}");
    assert!(msg(&body).contains("is not verified"), "{body}");

    // `cv` may rent it; stop it.
    let (status, body) = h.create(&cv, unverified).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let id = body["new_contract"].as_u64().unwrap();
    let path = format!("/vast/api/v0/instances/{id}/");
    let stop = json!({"state": "stopped"});
    let (status, _) = h.call(Method::PUT, &path, Some(&cv), Some(stop)).await;
    assert_eq!(status, StatusCode::OK);

    // Start under a policy whose team options and a CEL rule read the
    // instance's host: both judge it, as at create.
    let strict = h.under(
        r#"
teams: {cv: {vast: {verified_only: true}}}
rules:
  - name: known-hosts
    mode: warn
    match: {doors: [vast], resource: 'resource.reliability >= 0.0 && resource.host_id != ""'}
    deny: host facts were read
"#,
    );
    let (status, body) = call_state(
        &strict,
        Method::PUT,
        &path,
        Some(&cv),
        Some(json!({"state": "running"})),
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert!(msg(&body).contains("[team.vast.verified_only]"), "{body}");
    assert_eq!(h.sim.instance(id).unwrap().status, InstanceStatus::Stopped);
    // The start's audit record names both rules: the CEL rule read the
    // host's reliability and id from the instance row.
    let records = h
        .store
        .export_audit(UnixMicros::from_micros(0), now())
        .await
        .unwrap();
    let start = records
        .iter()
        .rev()
        .find(|r| r.kind == "decision" && r.payload.contains(&format!("\"target\":\"{id}\"")))
        .expect("the start's record");
    let reasons = &start.payload;
    assert!(
        reasons.contains("team.vast.verified_only") && reasons.contains("known-hosts"),
        "{reasons}"
    );
}

/// Issue 11: Vast creates and starts are replayed from what the audit
/// record kept (the offer's or instance's facts, the body), so a rule on
/// `resource.reliability` is judged by `warden replay` as by the door.
#[tokio::test]
async fn vast_decisions_replay_on_their_recorded_host_facts() {
    let h = harness_with("teams: {cv: {}}\n", None, quick_config()).await;
    let cv = h.key("cv").await;
    let (status, body) = h.create(&cv, h.offer("RTX 3090", 1)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let id = body["new_contract"].as_u64().unwrap();
    let path = format!("/vast/api/v0/instances/{id}/");
    for state in ["stopped", "running"] {
        let (status, body) = h
            .call(Method::PUT, &path, Some(&cv), Some(json!({"state": state})))
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
    }
    let records = h
        .store
        .export_audit(UnixMicros::from_micros(0), now())
        .await
        .unwrap();
    // Nothing kept a token or a connection detail of the instance.
    for r in &records {
        assert!(
            !r.payload.contains("ssh_host") && !r.payload.contains("jupyter_token"),
            "{}",
            r.payload
        );
    }

    // The same policy: nothing changes.
    let same = Policy::from_yaml("teams: {cv: {}}\n").unwrap();
    let report = warden_server::replay::replay(&same, &records);
    assert_eq!(report.teams["cv"].replayed, 2, "{report:?}");
    assert!(report.changes.is_empty(), "{report:?}");
    assert_eq!(report.skipped(), 0, "{report:?}");

    // A policy that wants near-perfect hosts: both become newly denied,
    // judged on the reliability the offer and the instance had.
    let strict = Policy::from_yaml(
        "teams: {cv: {}}\nrules:\n  - {name: perfect-hosts, match: {doors: [vast], resource: 'resource.reliability > 1.0 || !resource.verified'}, deny: no}\n  - {name: perfect-hosts-2, match: {doors: [vast], resource: 'resource.reliability <= 1.0'}, deny: not perfect}\n",
    )
    .unwrap();
    let report = warden_server::replay::replay(&strict, &records);
    assert_eq!(report.changes.len(), 2, "{report:?}");
    for c in &report.changes {
        assert_eq!(c.after_rules, ["perfect-hosts-2"], "{c:?}");
    }
}

/// Roles at the Vast door, by key: a viewer searches and lists but may not
/// rent, stop or destroy (403, naming the role); an ML engineer manages
/// only its own instances; an inference operator rents, starts and stops
/// only instances labelled `workload=inference`; a team lead manages all of
/// the team's.
#[tokio::test]
async fn keys_act_within_their_roles() {
    let h = harness().await;
    let alice = h.key("ml").await;
    let bob = h.key_as("ml", Some("bob"), Role::MlEngineer, None).await;
    let viewer = h.key_as("ml", Some("fay"), Role::Viewer, None).await;
    let operator = h
        .key_as("ml", Some("ivy"), Role::InferenceOperator, None)
        .await;
    let lead = h.key_as("ml", Some("lee"), Role::TeamLead, None).await;
    let (status, created) = h.create(&alice, h.offer("RTX 4090", 1)).await;
    assert_eq!(status, StatusCode::OK, "{created}");
    let alices = created["new_contract"].as_u64().unwrap();

    // The viewer searches, lists and sees; it may not rent or change.
    let (status, found) = h
        .call(
            Method::POST,
            "/vast/api/v0/bundles/",
            Some(&viewer),
            Some(json!({"num_gpus": {"gte": 1}})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{found}");
    assert!(!offers(&found).is_empty(), "{found}");
    let (_, rows) = h
        .call(Method::GET, "/vast/api/v1/instances/", Some(&viewer), None)
        .await;
    assert_eq!(rows["total_instances"], json!(1), "{rows}");
    let (status, body) = h.create(&viewer, h.offer("RTX 3090", 1)).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert!(
        msg(&body).contains("is `viewer` in team `ml`, and none of those may create launch"),
        "{body}"
    );
    let path = format!("/vast/api/v0/instances/{alices}/");
    for (method, body) in [
        (Method::PUT, json!({"state": "stopped"})),
        (Method::DELETE, json!({})),
    ] {
        let (status, answer) = h.call(method, &path, Some(&viewer), Some(body)).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{answer}");
        assert_eq!(answer["error"], "forbidden_by_role", "{answer}");
        assert!(msg(&answer).contains("`viewer`"), "{answer}");
    }

    // Another ML engineer neither sees nor stops alice's instance.
    let (_, rows) = h
        .call(Method::GET, "/vast/api/v1/instances/", Some(&bob), None)
        .await;
    assert_eq!(rows["total_instances"], json!(0), "{rows}");
    let (status, answer) = h
        .call(
            Method::PUT,
            &path,
            Some(&bob),
            Some(json!({"state": "stopped"})),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{answer}");
    assert!(
        msg(&answer).contains("may update only its own launch"),
        "{answer}"
    );

    // The inference operator: not a plain instance, but an inference one.
    let (status, body) = h.create(&operator, h.offer("RTX 3090", 1)).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert!(msg(&body).contains("`inference-operator`"), "{body}");
    let mut inference = create_body();
    inference["label"] = json!("workload=inference");
    let (status, served) = h
        .call(
            Method::PUT,
            &format!("/vast/api/v0/asks/{}/", h.offer("RTX 3090", 1)),
            Some(&operator),
            Some(inference),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{served}");
    let endpoint = served["new_contract"].as_u64().unwrap();
    let (_, rows) = h
        .call(
            Method::GET,
            "/vast/api/v1/instances/",
            Some(&operator),
            None,
        )
        .await;
    assert_eq!(
        ids_of(&rows["instances"]),
        vec![endpoint],
        "only inference endpoints: {rows}"
    );
    let (status, answer) = h
        .call(
            Method::PUT,
            &path,
            Some(&operator),
            Some(json!({"state": "stopped"})),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{answer}");
    let endpoint_path = format!("/vast/api/v0/instances/{endpoint}/");
    for state in ["stopped", "running"] {
        let (status, answer) = h
            .call(
                Method::PUT,
                &endpoint_path,
                Some(&operator),
                Some(json!({"state": state})),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{state}: {answer}");
    }

    // The team lead sees and manages every instance of the team.
    let (_, rows) = h
        .call(Method::GET, "/vast/api/v1/instances/", Some(&lead), None)
        .await;
    assert_eq!(rows["total_instances"], json!(2), "{rows}");
    let (status, answer) = h
        .call(Method::DELETE, &path, Some(&lead), Some(json!({})))
        .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(h.live().await.len(), 1);
}

fn ids_of(rows: &Value) -> Vec<u64> {
    let mut ids: Vec<u64> = rows
        .as_array()
        .map(|a| a.iter().filter_map(|r| r["id"].as_u64()).collect())
        .unwrap_or_default();
    ids.sort_unstable();
    ids
}
