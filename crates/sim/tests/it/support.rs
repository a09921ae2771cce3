//! A simulator on a manual clock, and a client that calls its router.

use std::time::Duration;

use axum::body::Body;
use axum::http::{header, Request, StatusCode};
use axum::Router;
use serde_json::Value;
use tower::ServiceExt;
use warden_sim::{router, ManualClock, SimConfig, SimState};

/// The key the test simulator accepts.
pub const KEY: &str = "sim-test-key";
/// Where the manual clock starts (seconds since the epoch).
pub const T0: u64 = 1_750_000_000;
/// The boot delay of the test simulator.
pub const BOOT: Duration = Duration::from_secs(60);

pub struct Sim {
    pub state: SimState,
    pub clock: ManualClock,
    pub app: Router,
}

pub struct Reply {
    pub status: StatusCode,
    pub content_type: Option<String>,
    pub body: Value,
}

pub fn sim() -> Sim {
    sim_with(|_| {})
}

pub fn sim_with(tweak: impl FnOnce(&mut SimConfig)) -> Sim {
    let clock = ManualClock::at_unix(T0);
    let mut config = SimConfig {
        api_keys: vec![KEY.to_owned()],
        clock: clock.clone().into(),
        boot_delay: BOOT,
        ..SimConfig::default()
    };
    tweak(&mut config);
    let state = SimState::new(config);
    Sim {
        app: router(state.clone()),
        state,
        clock,
    }
}

/// JSON form-encoded into a query string as the CLI does (`quote_plus`:
/// spaces become `+`).
pub fn q(v: &Value) -> String {
    form_urlencoded::byte_serialize(v.to_string().as_bytes()).collect()
}

impl Sim {
    /// Calls `method path` with the test key and an optional JSON body.
    pub async fn call(&self, method: &str, path: &str, body: Option<Value>) -> Reply {
        let req = Request::builder()
            .method(method)
            .uri(path)
            .header(header::AUTHORIZATION, format!("Bearer {KEY}"))
            .header(header::CONTENT_TYPE, "application/json");
        let body = body.map_or_else(Body::empty, |b| Body::from(b.to_string()));
        self.send(req.body(body).unwrap()).await
    }

    pub async fn send(&self, req: Request<Body>) -> Reply {
        let res = self.app.clone().oneshot(req).await.unwrap();
        let status = res.status();
        let content_type = res
            .headers()
            .get(header::CONTENT_TYPE)
            .map(|v| v.to_str().unwrap().to_owned());
        let bytes = axum::body::to_bytes(res.into_body(), usize::MAX)
            .await
            .unwrap();
        let body = serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()));
        Reply {
            status,
            content_type,
            body,
        }
    }

    /// Rents `offer` with a 20 GB disk; returns the instance id.
    pub async fn create(&self, offer: u64, label: &str) -> u64 {
        let body = serde_json::json!({"client_id": "me", "image": "pytorch/pytorch", "disk": 20.0, "label": label, "env": {}, "runtype": "ssh"});
        let r = self
            .call("PUT", &format!("/api/v0/asks/{offer}/"), Some(body))
            .await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.body);
        r.body["new_contract"].as_u64().unwrap()
    }

    /// `show instance ID`: the row, or null.
    pub async fn show(&self, id: u64) -> Value {
        let r = self
            .call("GET", &format!("/api/v0/instances/{id}/?owner=me"), None)
            .await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.body);
        r.body["instances"].clone()
    }

    /// The first offer (by id) of this GPU model and count.
    pub fn offer(&self, gpu: &str, num_gpus: u64) -> u64 {
        self.state
            .offers()
            .into_iter()
            .find(|o| o.gpu_name == gpu && o.num_gpus == num_gpus)
            .unwrap()
            .id
    }
}
