//! The HTTP application: routes, shared state and reload. Startup and
//! shutdown are in [`crate::application`].

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwap;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{ConnectInfo, DefaultBodyLimit, FromRequestParts, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post};
use axum::{Extension, Router};
use warden_core::Policy;

use crate::alerts::Alerter;
use crate::config::{load_config, Settings, TrustedServers};
use crate::doors::skypilot::{self, Answer};
use crate::error::DoorError;
use crate::oidc::OidcVerifier;
use warden_store::{Store, UnixMicros};

/// The least time between two alert checks of one team triggered by grants.
pub const ALERT_CHECK_SPACING: std::time::Duration = std::time::Duration::from_secs(5);

/// Largest request body a door accepts.
pub const BODY_LIMIT_BYTES: usize = 1024 * 1024;

/// State shared by all handlers.
pub struct AppState {
    policy: ArcSwap<Policy>,
    settings: ArcSwap<Settings>,
    alerter: ArcSwap<Alerter>,
    alert_checks: std::sync::Mutex<std::collections::HashMap<warden_core::TeamName, Instant>>,
    store: Option<Store>,
    config_path: Option<PathBuf>,
    request_seq: AtomicU64,
    /// This process's request-id prefix: the boot second and 32 random
    /// bits, so ids differ across replicas booted in the same second and
    /// across restarts ([`AppState::request_id`]).
    id_prefix: String,
    vast: std::sync::OnceLock<Arc<crate::doors::vast::VastDoor>>,
    /// OIDC sign-in (`identity.oidc`), when configured.
    oidc: arc_swap::ArcSwapOption<OidcVerifier>,
    /// The Kubernetes door's settings (`kubernetes`).
    kubernetes: ArcSwap<crate::config::KubernetesConfig>,
}

impl AppState {
    /// State around a loaded policy; `config_path` is what SIGHUP reloads.
    pub fn new(policy: Policy, config_path: Option<PathBuf>) -> Arc<Self> {
        Self::with_store(policy, config_path, None)
    }

    /// State that records every decision in `store` before answering
    /// (`None`: decide only, as `warden decide` and the unit tests do).
    pub fn with_store(
        policy: Policy,
        config_path: Option<PathBuf>,
        store: Option<Store>,
    ) -> Arc<Self> {
        Arc::new(Self {
            policy: ArcSwap::from_pointee(policy),
            settings: ArcSwap::from_pointee(Settings::default()),
            alerter: ArcSwap::from_pointee(Alerter::log_only()),
            alert_checks: std::sync::Mutex::default(),
            store,
            config_path,
            request_seq: AtomicU64::new(0),
            id_prefix: request_id_prefix(),
            vast: std::sync::OnceLock::new(),
            oidc: arc_swap::ArcSwapOption::empty(),
            kubernetes: ArcSwap::from_pointee(crate::config::KubernetesConfig::default()),
        })
    }

    /// The policy in force.
    pub fn policy(&self) -> Arc<Policy> {
        self.policy.load_full()
    }

    /// The settings in force (time zone, alert delivery).
    pub fn settings(&self) -> Arc<Settings> {
        self.settings.load_full()
    }

    /// Replaces the settings and (re)starts alert delivery accordingly.
    /// Needs a tokio runtime when `settings` names a webhook.
    pub fn apply_settings(&self, settings: Settings) {
        if settings.alerts != self.settings.load().alerts {
            self.alerter
                .store(Arc::new(Alerter::start(&settings.alerts)));
        }
        self.settings.store(Arc::new(settings));
    }

    /// After a granted launch at `now`: checks `team`'s spend against its
    /// alert thresholds in the background, at most once per
    /// [`ALERT_CHECK_SPACING`] per team, so a burst of launches costs one
    /// check (the periodic watch covers the rest). Every door calls this.
    pub fn alert_after_grant(&self, store: &Store, team: &warden_core::Team, now: UnixMicros) {
        if !self.alert_check_due(&team.name) {
            return;
        }
        crate::alerts::spawn_check(
            store.clone(),
            team.clone(),
            self.settings().time_zone.clone(),
            self.alerter(),
            now,
        );
    }

    fn alert_check_due(&self, team: &warden_core::TeamName) -> bool {
        let now = Instant::now();
        let Ok(mut last) = self.alert_checks.lock() else {
            return false;
        };
        match last.get(team) {
            Some(t) if now.duration_since(*t) < ALERT_CHECK_SPACING => false,
            _ => {
                last.insert(team.clone(), now);
                true
            }
        }
    }

    /// Where budget alerts go.
    pub fn alerter(&self) -> Arc<Alerter> {
        self.alerter.load_full()
    }

    /// Turns the Vast door on (once; later calls are ignored).
    pub fn enable_vast(&self, door: Arc<crate::doors::vast::VastDoor>) {
        let _ = self.vast.set(door);
    }

    /// The Vast door, when on.
    pub fn vast(&self) -> Option<&Arc<crate::doors::vast::VastDoor>> {
        self.vast.get()
    }

    /// The Kubernetes door's settings in force.
    pub fn kubernetes(&self) -> Arc<crate::config::KubernetesConfig> {
        self.kubernetes.load_full()
    }

    /// Replaces the Kubernetes door's settings (startup, reload).
    pub fn set_kubernetes(&self, config: crate::config::KubernetesConfig) {
        self.kubernetes.store(Arc::new(config));
    }

    /// The OIDC token verifier, when `identity.oidc` is configured.
    pub fn oidc(&self) -> Option<Arc<OidcVerifier>> {
        self.oidc.load_full()
    }

    /// Turns OIDC sign-in on (`Some`) or off.
    pub fn set_oidc(&self, verifier: Option<Arc<OidcVerifier>>) {
        self.oidc.store(verifier);
    }

    /// The store decisions are recorded in, if any (for the usage sync).
    pub fn store(&self) -> Option<&Store> {
        self.store.as_ref()
    }

    /// Re-reads the config file. On success the new policy takes over for
    /// new requests; on failure the old one stays and the error says why.
    pub fn reload(&self) -> Result<(), String> {
        let Some(path) = &self.config_path else {
            return Err("no config file to reload".to_owned());
        };
        let config = load_config(path)?;
        // An unchanged `identity.oidc` keeps its verifier, with the keys
        // and verified tokens it holds; a changed one starts afresh.
        let oidc = match (config.oidc, self.oidc()) {
            (None, _) => None,
            (Some(new), Some(old)) if *old.config() == new => Some(old),
            (Some(new), _) => Some(Arc::new(OidcVerifier::new(new)?)),
        };
        self.policy.store(Arc::new(config.policy));
        self.apply_settings(config.settings);
        self.set_kubernetes(config.kubernetes);
        self.set_oidc(oidc);
        Ok(())
    }

    pub(crate) fn request_id(&self, headers: &HeaderMap) -> String {
        self.request_id_given(headers.get(REQUEST_ID))
    }

    /// The caller's `X-Request-Id` when it is well formed, else a fresh id.
    fn request_id_given(&self, given: Option<&HeaderValue>) -> String {
        let given = given.and_then(|v| v.to_str().ok()).filter(|v| {
            !v.is_empty()
                && v.len() <= 64
                && v.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        });
        match given {
            Some(id) => id.to_owned(),
            None => format!(
                "{}-{}",
                self.id_prefix,
                self.request_seq.fetch_add(1, Ordering::Relaxed)
            ),
        }
    }
}

/// `BOOT-RANDOM`: the boot second in hex and 32 bits from the operating
/// system's random source. A process counts its requests after it, so an id
/// repeats only if two processes draw the same 32 bits in the same second
/// (about one in four billion per pair). Without a random source (which
/// Linux always has), the process id and boot nanoseconds stand in.
fn request_id_prefix() -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let mut bytes = [0u8; 4];
    let random = match getrandom::getrandom(&mut bytes) {
        Ok(()) => u32::from_le_bytes(bytes),
        Err(_) => std::process::id().rotate_left(16) ^ now.subsec_nanos(),
    };
    format!("{:x}-{random:08x}", now.as_secs())
}

const REQUEST_ID: &str = "x-request-id";

/// The `X-Request-Id` header alone: cheaper than extracting (cloning) the
/// whole header map on the hot path.
struct GivenRequestId(Option<HeaderValue>);

impl<S: Send + Sync> FromRequestParts<S> for GivenRequestId {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(Self(parts.headers.get(REQUEST_ID).cloned()))
    }
}

/// The routes, separate from binding so tests can drive them directly.
pub fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/skypilot", post(skypilot_door))
        .route("/vast/{*rest}", any(crate::doors::vast::route))
        .route(
            crate::doors::kubernetes::PATH,
            post(crate::doors::kubernetes::route),
        )
        .merge(crate::reports::routes())
        .merge(crate::api::routes())
        .layer(DefaultBodyLimit::max(BODY_LIMIT_BYTES))
        .layer(tower::layer::layer_fn(BodyGuard))
        .with_state(state)
}

/// How much of an oversized body is read and dropped before the 413.
const DRAIN_LIMIT_BYTES: usize = 64 * 1024 * 1024;
/// How long an oversized body is read before the 413.
const DRAIN_TIME: std::time::Duration = std::time::Duration::from_secs(10);

/// Answers 413 to a body over [`BODY_LIMIT_BYTES`] only after reading (and
/// dropping) the rest of it, up to [`DRAIN_LIMIT_BYTES`] or [`DRAIN_TIME`]:
/// a server that answers and closes while the client is still sending
/// makes the client see a connection reset instead of the answer.
/// Bodies declared within the limit go straight on (the extractor's limit
/// still holds them to what they declared).
///
/// A hand-written layer rather than `middleware::from_fn`: a request that
/// declares a length within the limit (every real client's) goes straight
/// to the route, with no boxing or service clone.
#[derive(Clone)]
struct BodyGuard<S>(S);

impl<S> tower::Service<axum::extract::Request> for BodyGuard<S>
where
    S: tower::Service<
            axum::extract::Request,
            Response = Response,
            Error = std::convert::Infallible,
        > + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    type Response = Response;
    type Error = std::convert::Infallible;
    type Future = futures_util::future::Either<
        S::Future,
        std::pin::Pin<
            Box<
                dyn std::future::Future<Output = Result<Response, std::convert::Infallible>> + Send,
            >,
        >,
    >;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        self.0.poll_ready(cx)
    }

    fn call(&mut self, req: axum::extract::Request) -> Self::Future {
        let declared = req
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|n| n <= BODY_LIMIT_BYTES as u64) {
            return futures_util::future::Either::Left(self.0.call(req));
        }
        // The ready service goes with the request; a fresh clone stays.
        let clone = self.0.clone();
        let mut inner = std::mem::replace(&mut self.0, clone);
        futures_util::future::Either::Right(Box::pin(async move {
            match read_within_limit(req, declared).await {
                Ok(req) => inner.call(req).await,
                Err(refused) => Ok(refused),
            }
        }))
    }
}

/// Reads a body that declared no length, or too large a length, up to
/// the limit: the request rebuilt with it, or the refusal (413 after
/// draining, or 400 when the body cannot be read).
async fn read_within_limit(
    req: axum::extract::Request,
    declared: Option<u64>,
) -> Result<axum::extract::Request, Response> {
    use http_body_util::BodyExt as _;
    let (parts, mut body) = req.into_parts();
    let mut over = declared.is_some();
    let mut kept: Vec<u8> = Vec::new();
    let mut total = 0usize;
    let mut deadline = over.then(|| tokio::time::Instant::now() + DRAIN_TIME);
    loop {
        let frame = match deadline {
            Some(at) => match tokio::time::timeout_at(at, body.frame()).await {
                Ok(frame) => frame,
                Err(_) => break,
            },
            None => body.frame().await,
        };
        let data = match frame {
            None => break,
            Some(Err(e)) => {
                if over {
                    break;
                }
                return Err(
                    DoorError::bad(format!("cannot read the request body: {e}")).into_response()
                );
            }
            Some(Ok(frame)) => match frame.into_data() {
                Ok(data) => data,
                Err(_) => continue,
            },
        };
        total = total.saturating_add(data.len());
        if !over && total > BODY_LIMIT_BYTES {
            over = true;
            kept = Vec::new();
            deadline = Some(tokio::time::Instant::now() + DRAIN_TIME);
        }
        if !over {
            kept.extend_from_slice(&data);
        }
        if total > DRAIN_LIMIT_BYTES {
            break;
        }
    }
    if over {
        let mut response = DoorError::PayloadTooLarge {
            limit_mib: BODY_LIMIT_BYTES / (1024 * 1024),
        }
        .into_response();
        response
            .headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
        return Err(response);
    }
    Ok(axum::extract::Request::from_parts(
        parts,
        axum::body::Body::from(kept),
    ))
}

async fn healthz() -> &'static str {
    "ok\n"
}

/// Ready when a policy is loaded and the store (if any) answers within its
/// timeout; 503 naming the reason otherwise, so a load balancer routes
/// around a replica that cannot record decisions.
async fn readyz(State(state): State<Arc<AppState>>) -> Response {
    let policy = state.policy();
    if let Some(store) = state.store() {
        if let Err(error) = store.ping().await {
            tracing::warn!(
                target: "warden::store",
                %error,
                backend = store.backend_name(),
                "readiness check: store failure"
            );
            return (
                StatusCode::SERVICE_UNAVAILABLE,
                format!(
                    "not ready: the {} store cannot be used ({error}); every launch is denied until it is back\n",
                    store.backend_name()
                ),
            )
                .into_response();
        }
    }
    (
        StatusCode::OK,
        format!(
            "ready: {} teams, {} rules\n",
            policy.team_count(),
            policy.rules().len()
        ),
    )
        .into_response()
}

pub(crate) fn body_or_error(body: Result<Bytes, BytesRejection>) -> Result<Bytes, DoorError> {
    body.map_err(|rejection| {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            DoorError::PayloadTooLarge {
                limit_mib: BODY_LIMIT_BYTES / (1024 * 1024),
            }
        } else {
            DoorError::bad(format!("cannot read the request body: {rejection}"))
        }
    })
}

/// Logs a request answered with an error: a store failure (503, the
/// request was not decided) as such, anything else as a malformed request.
pub(crate) fn log_refusal(request_id: &str, door: &str, err: &DoorError) {
    let status = err.status_code().as_u16();
    match err {
        DoorError::StoreFailure(_) => tracing::error!(
            target: "warden::decision",
            request_id,
            door,
            status,
            error = %err,
            "store failure: request refused undecided (fail closed)"
        ),
        DoorError::Unavailable(_) => tracing::warn!(
            target: "warden::decision",
            request_id,
            door,
            status,
            error = %err,
            "request refused: Warden is not ready"
        ),
        DoorError::Internal(_) => tracing::error!(
            target: "warden::decision",
            request_id,
            door,
            status,
            error = %err,
            "internal error: request refused undecided"
        ),
        _ => tracing::warn!(
            target: "warden::decision",
            request_id,
            door,
            status,
            error = %err,
            "rejected malformed request"
        ),
    }
}

async fn skypilot_door(
    State(state): State<Arc<AppState>>,
    GivenRequestId(given): GivenRequestId,
    peer: Option<Extension<ConnectInfo<SocketAddr>>>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let started = Instant::now();
    let request_id = state.request_id_given(given.as_ref());
    let peer = peer.map(|Extension(ConnectInfo(addr))| addr.ip());
    match skypilot_admit(&state, &request_id, peer, body, started).await {
        Ok(Answer::Allow(body)) => {
            skypilot_answer(StatusCode::OK, "application/json", body, &request_id)
        }
        Ok(Answer::Deny(message)) => skypilot_answer(
            StatusCode::BAD_REQUEST,
            "text/plain; charset=utf-8",
            message,
            &request_id,
        ),
        Err(err) => {
            log_refusal(&request_id, "skypilot", &err);
            err.into_response()
        }
    }
}

/// The SkyPilot door: parse → normalize → the gate → encode.
async fn skypilot_admit(
    state: &AppState,
    request_id: &str,
    peer: Option<IpAddr>,
    body: Result<Bytes, BytesRejection>,
    started: Instant,
) -> Result<Answer, DoorError> {
    let body = body_or_error(body)?;
    let policy = state.policy();
    let parsed = skypilot::parse_body(&body)?;
    check_server_side_trust(&state.settings().trusted_servers, peer, &parsed)?;
    let skypilot::Normalized {
        request,
        mut rewrite,
    } = skypilot::normalize(&policy, parsed)?;
    let admission = crate::gate::Admission {
        door: "skypilot",
        request_id,
        request: &request,
        key: None,
        // The audit record's replay input, only when there is a store.
        input: state.store().and_then(|_| skypilot::replay_input(&body)),
        started,
        replaces: None,
    };
    let admitted = crate::gate::admit(state, &policy, admission, |d| {
        rewrite.apply(d).map(crate::gate::Applied::all)
    })
    .await?;
    Ok(match admitted {
        crate::gate::Admitted::Allowed {
            applied: (task, config),
            ..
        } => Answer::Allow(skypilot::encode_answer(&task, &config)),
        crate::gate::Admitted::Denied { message, .. } => Answer::Deny(message),
    })
}

/// The fields only SkyPilot's API server can vouch for: a server-side
/// request (`at_client_side: false`: the server's worker, its `user` and
/// its `request_name`) or a `user`, honoured only from an address in
/// `skypilot.trusted_servers` (default: loopback). Anything else may still
/// ask as a client (`at_client_side: true` without a user): that decision
/// reserves nothing, and the server judges the launch again.
///
/// A request that did not come over a socket (in-process) has no peer and
/// is not trusted either.
fn check_server_side_trust(
    trusted: &TrustedServers,
    peer: Option<IpAddr>,
    req: &skypilot::SkyRequest,
) -> Result<(), DoorError> {
    if peer.is_some_and(|p| trusted.contains(p)) {
        return Ok(());
    }
    let has_user = req.user.as_deref().is_some_and(|u| !u.trim().is_empty());
    if req.at_client_side && !has_user {
        return Ok(());
    }
    let from = peer.map_or_else(|| "an unknown address".to_owned(), |p| format!("`{p}`"));
    let what = if req.at_client_side {
        "names a `user`"
    } else {
        "is a server-side request (`at_client_side: false`)"
    };
    Err(DoorError::Forbidden(format!(
        "this request {what}, which only a trusted SkyPilot API server may send, and it came from {from}; \
         trusted servers are `skypilot.trusted_servers` in Warden's config ({}). \
         If this is your SkyPilot API server, a platform admin adds its address there",
        trusted.describe()
    )))
}

fn skypilot_answer(
    status: StatusCode,
    content_type: &'static str,
    body: String,
    request_id: &str,
) -> Response {
    (
        status,
        [
            (header::CONTENT_TYPE, content_type),
            (header::HeaderName::from_static(REQUEST_ID), request_id),
        ],
        body,
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_ids_differ_across_processes_booted_in_the_same_second() {
        // Each state stands for one replica; a fresh id comes from each.
        let policy = || Policy::compile(warden_core::PolicySpec::default()).unwrap();
        let ids: std::collections::BTreeSet<String> = (0..64)
            .map(|_| AppState::new(policy(), None).request_id(&HeaderMap::new()))
            .collect();
        assert_eq!(ids.len(), 64, "{ids:?}");
        // Within one process the counter keeps them apart.
        let state = AppState::new(policy(), None);
        let a = state.request_id(&HeaderMap::new());
        let b = state.request_id(&HeaderMap::new());
        assert_ne!(a, b);
        assert!(a.len() <= 64 && a.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-'));
    }

    #[test]
    fn a_reload_of_an_empty_config_keeps_the_running_policy() {
        let dir = std::env::temp_dir().join(format!("warden-reload-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("warden.yaml");
        std::fs::write(&path, "storage: none\nteams:\n  ml: {}\n  ops: {}\n").unwrap();
        let policy = load_config(&path).unwrap().policy;
        let state = AppState::new(policy, Some(path.clone()));
        for text in ["", "# emptied by mistake\n", "storage: none\n"] {
            std::fs::write(&path, text).unwrap();
            let e = state.reload().unwrap_err();
            assert!(e.contains("empty") || e.contains("no team"), "{e}");
            assert_eq!(
                state.policy().team_count(),
                2,
                "{text:?} replaced the policy"
            );
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
}
