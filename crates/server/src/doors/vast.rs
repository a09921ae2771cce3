//! The Vast door: a proxy speaking the subset of the Vast.ai REST API that
//! the `vastai` 1.9.1 CLI and SDK use, in front of one upstream account
//! (Vast.ai, or the embedded simulator). Teams hold Warden keys; only
//! Warden holds the upstream key.
//!
//! # What it guarantees
//!
//! - **Every call is a team's.** Each request but the public GPU-name list
//!   must carry a Warden team key (`Authorization: Bearer wdn_...`), checked
//!   against the store on every request (a revocation holds at once), whose
//!   team must still be in the config. The upstream key never reaches a
//!   team: `users/current` is answered by Warden, upstream error bodies are
//!   passed on without any `api_key` field.
//! - **Searches show only what the team may rent**: its GPU models, GPU
//!   count, $/hour, reliability and verification limits are merged into the
//!   query, and the answer is checked again ([`search`]).
//! - **Creates are decided and reserved before they happen**: the offer's
//!   real GPU model, count and price are read upstream, the policy core
//!   decides, and the decision's audit record and the quota and budget
//!   reservation are committed in one transaction *before* the upstream
//!   call, under a placeholder name (`pending:<offer>:<token>`). The answer
//!   settles it: renamed to the instance id, voided (zero cost) when the
//!   upstream refused, left for the reconciler when the answer is unclear
//!   (a 5xx, a time-out, a dropped connection). A retried create of the same
//!   offer finds the placeholder and the instance instead of reserving
//!   twice ([`create`]).
//! - **A team sees and touches only its own instances**, known from
//!   Warden's allocations (live or ended); another team's instance looks
//!   like no instance at all. Stopping or destroying ends the allocation,
//!   so the ledger's cost stops; starting is decided and reserved again.
//! - **Everything else is refused** (403, with the list of what is
//!   supported), since a call Warden does not understand could spend money
//!   ungoverned.
//!
//! Answers use Vast's error shape (see [`DoorError`]); the CLI shows `msg`.

pub mod create;
mod error;
pub mod instances;
mod manage;
pub mod offline;
pub mod reconcile;
pub mod request;
pub mod search;
pub mod upstream;

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::State;
use axum::http::{header, HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};
use warden_core::access::{Resource, Review, Subject, Verb};
use warden_core::{Door, Policy, Team, TeamName, WORKLOAD_LABEL};
use warden_store::{Allocation, AllocationName, KeyPrincipal, Store, UnixMicros};

use crate::app::AppState;
use crate::config::VastConfig;
pub use error::DoorError;
use upstream::Row;
pub use upstream::{Upstream, UpstreamError};

/// How long the upstream's GPU name list is reused.
const GPU_NAMES_TTL: Duration = Duration::from_secs(600);

/// What the door answers unsupported calls with.
pub const SUPPORTED: &str = "show user, search offers (also --new), create instance, show instance(s), start/stop/label instance(s), destroy instance(s)";

/// The Vast door's state: the upstream client and what it remembers
/// between requests. One per `warden serve`.
#[derive(Debug)]
pub struct VastDoor {
    upstream: Upstream,
    config: VastConfig,
    /// Creates in progress in this process: (team, offer) → placeholder token.
    inflight: Mutex<HashMap<(TeamName, u64), String>>,
    gpu_names: tokio::sync::Mutex<Option<(Instant, Arc<Vec<String>>)>>,
    /// Unknown instances already audited by this process.
    flagged: Mutex<HashSet<u64>>,
    /// The SSH client run by the pre-destroy command.
    ssh_program: PathBuf,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Removes a create from the in-progress set when it ends (also when the
/// handler is dropped).
struct CreateGuard<'d> {
    door: &'d VastDoor,
    key: (TeamName, u64),
}

impl Drop for CreateGuard<'_> {
    fn drop(&mut self) {
        lock(&self.door.inflight).remove(&self.key);
    }
}

impl VastDoor {
    /// A door in front of `upstream`.
    pub fn new(config: VastConfig, upstream: Upstream) -> VastDoor {
        VastDoor {
            upstream,
            config,
            inflight: Mutex::new(HashMap::new()),
            gpu_names: tokio::sync::Mutex::new(None),
            flagged: Mutex::new(HashSet::new()),
            ssh_program: PathBuf::from("ssh"),
        }
    }

    /// Runs `program` instead of `ssh` for the pre-destroy command.
    pub fn with_ssh_program(mut self, program: impl Into<PathBuf>) -> VastDoor {
        self.ssh_program = program.into();
        self
    }

    /// The upstream client.
    pub fn upstream(&self) -> &Upstream {
        &self.upstream
    }

    /// The settings.
    pub fn config(&self) -> &VastConfig {
        &self.config
    }

    fn begin_create(
        &self,
        team: &TeamName,
        offer: u64,
        token: &str,
    ) -> Result<CreateGuard<'_>, DoorError> {
        let key = (team.clone(), offer);
        let mut inflight = lock(&self.inflight);
        if inflight.contains_key(&key) {
            return Err(DoorError::Conflict(format!(
                "a create of offer {offer} for team `{team}` is already in progress; wait for it, then `vastai show instances`"
            )));
        }
        inflight.insert(key.clone(), token.to_owned());
        Ok(CreateGuard { door: self, key })
    }

    /// Whether the create of this placeholder is running in this process.
    fn in_flight(&self, team: &TeamName, pending: &Pending) -> bool {
        lock(&self.inflight)
            .get(&(team.clone(), pending.offer))
            .is_some_and(|t| *t == pending.token)
    }

    /// The upstream's GPU names, cached for [`GPU_NAMES_TTL`].
    pub async fn gpu_names(&self) -> Result<Arc<Vec<String>>, UpstreamError> {
        let mut cached = self.gpu_names.lock().await;
        if let Some((at, names)) = cached.as_ref() {
            if at.elapsed() < GPU_NAMES_TTL {
                return Ok(Arc::clone(names));
            }
        }
        let names = Arc::new(self.upstream.gpu_names().await?);
        *cached = Some((Instant::now(), Arc::clone(&names)));
        Ok(names)
    }
}

/// A create's placeholder allocation name: `pending:<offer>:<token>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pending {
    /// The offer rented.
    pub offer: u64,
    /// The token also put into the instance's env ([`instances::CREATE_ENV`]).
    pub token: String,
}

impl Pending {
    /// The prefix of every placeholder name.
    pub const PREFIX: &'static str = "pending:";

    /// Reads a placeholder name; `None` for any other name.
    pub fn parse(name: &str) -> Option<Pending> {
        let rest = name.strip_prefix(Self::PREFIX)?;
        let (offer, token) = rest.split_once(':')?;
        Some(Pending {
            offer: offer.parse().ok()?,
            token: token.to_owned(),
        })
    }

    /// The allocation name.
    pub fn name(&self) -> String {
        format!("{}{}:{}", Self::PREFIX, self.offer, self.token)
    }
}

/// Who is calling: an authenticated key of a team in the config.
#[derive(Debug, Clone)]
pub struct Caller {
    /// The key.
    pub key: KeyPrincipal,
    /// Its team, as the policy in force has it.
    pub team: Team,
    /// The policy in force.
    pub policy: Arc<Policy>,
    /// The store.
    pub store: Store,
    /// The request's id (logs, audit).
    pub request_id: String,
}

impl Caller {
    /// The team's name.
    pub fn team_name(&self) -> &TeamName {
        &self.team.name
    }

    /// Who asks, for the core: the key's user and team.
    pub fn principal(&self) -> warden_core::Principal {
        warden_core::Principal {
            user: self.key.user.as_ref().map(|u| u.as_str().to_owned()),
            team: Some(self.team_name().to_string()),
            workspace: None,
            role: Some(self.key.role),
            groups: Vec::new(),
        }
    }
}

/// Now, as the store counts time.
pub fn now() -> UnixMicros {
    UnixMicros::from_system_time(SystemTime::now())
}

/// The error answered for an upstream failure.
pub fn upstream_error(e: UpstreamError) -> DoorError {
    match e {
        UpstreamError::Timeout { .. } => {
            DoorError::UpstreamTimeout(format!("{e}; nothing was changed by Warden, try again"))
        }
        UpstreamError::Status { status, body, .. } if upstream::passable(status).is_some() => {
            DoorError::UpstreamRefused { status, body }
        }
        UpstreamError::Status {
            status, ref body, ..
        } => {
            let msg = body.get("msg").and_then(Value::as_str).unwrap_or_default();
            DoorError::UpstreamFailed(if matches!(status, 401 | 403) {
                format!("the Vast API refused Warden's own key (HTTP {status}); a platform admin must fix Warden's `vast` key")
            } else if msg.is_empty() {
                e.to_string()
            } else {
                format!("{e}: {msg}")
            })
        }
        other => DoorError::UpstreamFailed(other.to_string()),
    }
}

fn store_error(e: warden_store::StoreError) -> DoorError {
    DoorError::store(&e)
}

/// Checks the caller's key, and that its team is still configured.
async fn authenticate(
    state: &AppState,
    store: &Store,
    headers: &HeaderMap,
    request_id: &str,
) -> Result<Caller, DoorError> {
    let key = crate::auth::key(
        store,
        headers,
        now(),
        "no API key: Warden's Vast door needs your team's Warden key (`vastai --api-key wdn_...`, or `vastai set api-key wdn_...`); a platform admin creates one with `warden keys create --team TEAM`",
    )
    .await?;
    let policy = state.policy();
    let Some(team) = policy.team(&key.team).cloned() else {
        return Err(DoorError::Unauthorized(format!(
            "API key `{}` belongs to team `{}`, which is no longer in Warden's config; ask a platform admin",
            key.id, key.team
        )));
    };
    Ok(Caller {
        key,
        team,
        policy,
        store: store.clone(),
        request_id: request_id.to_owned(),
    })
}

/// Who owns an instance, by Warden's allocations.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Owner {
    /// The team.
    pub team: TeamName,
    /// The user its key acted as (`None`: a key made without `--user`).
    pub user: Option<String>,
}

/// The owner of each instance id, from Warden's allocations (live or
/// ended; the latest wins). Instances with no allocation are absent.
pub async fn owners(store: &Store, ids: &[u64]) -> Result<HashMap<u64, Owner>, DoorError> {
    let names: Vec<AllocationName> = ids
        .iter()
        .filter_map(|id| AllocationName::parse(&id.to_string()).ok())
        .collect();
    let found = store
        .allocations_named(Door::Vast, &names)
        .await
        .map_err(store_error)?;
    let mut out = HashMap::new();
    for a in found {
        if let Ok(id) = a.name.as_str().parse::<u64>() {
            out.insert(
                id,
                Owner {
                    team: a.team,
                    user: a.user,
                },
            );
        }
    }
    Ok(out)
}

use crate::auth::UNNAMED_USER;

impl Caller {
    /// The caller as the access model sees it: its key's role in its team.
    pub fn subject(&self) -> Subject {
        Subject {
            user: Some(
                self.key
                    .user
                    .as_ref()
                    .map_or(UNNAMED_USER, |u| u.as_str())
                    .to_owned(),
            ),
            groups: Vec::new(),
            key: Some((self.key.role, self.team_name().clone())),
        }
    }

    /// May the caller do `verb` on `resource` in its team (`owner`: whose
    /// the thing is, for permissions that reach only one's own)?
    pub fn review(&self, verb: Verb, resource: Resource, owner: Option<&Owner>) -> Review {
        let owner = owner.map(|o| o.user.as_deref().unwrap_or(UNNAMED_USER));
        self.policy
            .access()
            .review(&self.subject(), verb, resource, self.team_name(), owner)
    }

    /// May the caller do `verb` on the instance `row` owned by `owner`? An
    /// instance labelled `workload=inference` is an inference endpoint
    /// (`serve`), any other a launch; reading one also counts as reading
    /// allocations.
    pub fn review_instance(&self, verb: Verb, row: &Row, owner: &Owner) -> Review {
        let inference = create::labels_of(row.get("label").and_then(Value::as_str))
            .get(WORKLOAD_LABEL.0)
            .map(String::as_str)
            == Some(WORKLOAD_LABEL.1);
        let resource = if inference {
            Resource::Serve
        } else {
            Resource::Launch
        };
        let review = self.review(verb, resource, Some(owner));
        if review.allowed || verb != Verb::Read {
            return review;
        }
        let allocations = self.review(Verb::Read, Resource::Allocations, Some(owner));
        if allocations.allowed {
            allocations
        } else {
            review
        }
    }
}

/// Settles the live placeholders among `live` whose instance appears in
/// `rows` (matched by the create token in its env). Skips creates still
/// running in this process. Returns the allocations settled.
async fn settle_matches(
    door: &VastDoor,
    store: &Store,
    live: &[Allocation],
    rows: &[Row],
    source: &str,
) -> Result<Vec<(Allocation, u64)>, DoorError> {
    let mut settled = Vec::new();
    for a in live.iter().filter(|a| a.door == Door::Vast) {
        let Some(p) = Pending::parse(a.name.as_str()) else {
            continue;
        };
        if door.in_flight(&a.team, &p) {
            continue;
        }
        let Some(row) = rows
            .iter()
            .find(|r| instances::env(r, instances::CREATE_ENV) == Some(p.token.as_str()))
        else {
            continue;
        };
        let Some(id) = instances::id(row) else {
            continue;
        };
        let to = AllocationName::parse(&id.to_string())
            .map_err(|e| DoorError::Internal(e.to_string()))?;
        let outcome = store
            .settle(Door::Vast, &a.team, &a.name, &to, now())
            .await
            .map_err(store_error)?;
        tracing::info!(
            target: "warden::vast",
            team = a.team.as_str(),
            placeholder = a.name.as_str(),
            instance = id,
            source,
            outcome = ?std::mem::discriminant(&outcome),
            "settled a create whose answer was lost"
        );
        settled.push((a.clone(), id));
    }
    Ok(settled)
}

/// The caller's instances among all of the account's (as the upstream
/// filtered and ordered them), made safe for the CLI. Settles the caller's
/// lost creates first, so an instance whose create answer was lost shows.
async fn own_rows(
    door: &VastDoor,
    caller: &Caller,
    select_filters: Option<&Value>,
    order_by: Option<&Value>,
) -> Result<Vec<Row>, DoorError> {
    let rows = door
        .upstream
        .instances(select_filters, order_by)
        .await
        .map_err(upstream_error)?;
    let ids: Vec<u64> = rows.iter().filter_map(instances::id).collect();
    let mut owners = owners(&caller.store, &ids).await?;
    // An instance no one owns but made by a create through Warden: its
    // create's answer was lost. Settle the team's placeholders first.
    let orphans = rows.iter().any(|r| {
        instances::id(r).is_some_and(|id| !owners.contains_key(&id))
            && instances::env(r, instances::CREATE_ENV).is_some()
    });
    if orphans {
        let live = caller
            .store
            .list_live(Some(caller.team_name()))
            .await
            .map_err(store_error)?;
        for (a, id) in settle_matches(door, &caller.store, &live, &rows, "listing").await? {
            owners.insert(
                id,
                Owner {
                    team: a.team,
                    user: a.user,
                },
            );
        }
    }
    // The team's instances the caller's role may read: a viewer or team
    // lead all of them, an ML engineer its own, an inference operator the
    // inference endpoints.
    Ok(rows
        .into_iter()
        .filter(|r| {
            instances::id(r)
                .and_then(|id| owners.get(&id))
                .is_some_and(|o| {
                    &o.team == caller.team_name()
                        && caller.review_instance(Verb::Read, r, o).allowed
                })
        })
        .map(|mut r| {
            instances::normalize(&mut r);
            r
        })
        .collect())
}

/// One call of the supported API subset.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Call {
    ShowUser,
    GpuNames,
    /// `POST /bundles/` (body), `GET /bundles/?q=`, `PUT /search/asks/` (`q`).
    Search(SearchForm),
    Create(u64),
    ListV1,
    ListV0,
    Filters,
    Show(u64),
    Manage(u64),
    Destroy(u64),
    ManageBulk,
    DestroyBulk,
    Refused(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SearchForm {
    Body,
    Query,
    Asks,
}

impl Call {
    /// Reads the call from the method and the path below `/vast` (repeated
    /// slashes collapsed: `--url http://h:p/vast/` sends `//api`).
    fn parse(method: &Method, path: &str) -> Call {
        let segs: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
        let id = |s: &str| s.parse::<u64>().ok();
        let m = method.clone();
        match (m, segs.as_slice()) {
            (Method::GET, ["api", "v0", "users", "current"]) => Call::ShowUser,
            (Method::GET, ["api", "v0", "gpu_names", "unique"]) => Call::GpuNames,
            (Method::POST, ["api", "v0", "bundles"]) => Call::Search(SearchForm::Body),
            (Method::GET, ["api", "v0", "bundles"]) => Call::Search(SearchForm::Query),
            (Method::PUT, ["api", "v0", "search", "asks"]) => Call::Search(SearchForm::Asks),
            (Method::PUT, ["api", "v0", "asks", offer]) if id(offer).is_some() => {
                Call::Create(id(offer).unwrap_or_default())
            }
            (Method::POST, ["api", "v0", "asks", "bulk"]) => Call::Refused(
                "`create instances` (several at once) is not supported by Warden; create them one at a time with `vastai create instance ID`, so each is decided and reserved".to_owned(),
            ),
            (Method::PUT, ["api", "v0", "launch_instance"]) => Call::Refused(
                "`launch instance` is not supported by Warden; run `vastai search offers` and then `vastai create instance ID`".to_owned(),
            ),
            (Method::GET, ["api", "v1", "instances"]) => Call::ListV1,
            (Method::GET, ["api", "v0", "instances"]) => Call::ListV0,
            (Method::GET, ["api", "v0", "instances", "filters"]) => Call::Filters,
            (Method::GET, ["api", "v0", "instances", n]) if id(n).is_some() => {
                Call::Show(id(n).unwrap_or_default())
            }
            (Method::PUT, ["api", "v0", "instances", n]) if id(n).is_some() => {
                Call::Manage(id(n).unwrap_or_default())
            }
            (Method::DELETE, ["api", "v0", "instances", n]) if id(n).is_some() => {
                Call::Destroy(id(n).unwrap_or_default())
            }
            (Method::PUT, ["api", "v0", "instances"]) => Call::ManageBulk,
            (Method::DELETE, ["api", "v0", "instances"]) => Call::DestroyBulk,
            (m, _) => Call::Refused(format!(
                "`{m} {path}` is not supported by Warden's Vast door; supported: {SUPPORTED}"
            )),
        }
    }

    fn changes_something(&self) -> bool {
        matches!(
            self,
            Call::Create(_)
                | Call::Manage(_)
                | Call::Destroy(_)
                | Call::ManageBulk
                | Call::DestroyBulk
        )
    }
}

fn json_body(body: &Bytes) -> Result<Value, DoorError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(json!({}));
    }
    serde_json::from_slice(body).map_err(|e| DoorError::bad(format!("the body is not JSON: {e}")))
}

/// Query parameters, decoded as form data (the CLI sends
/// `quote_plus(json.dumps(v))`).
fn query_param(uri: &Uri, name: &str) -> Option<String> {
    form_urlencoded::parse(uri.query().unwrap_or_default().as_bytes())
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

fn query_json(uri: &Uri, name: &str) -> Result<Option<Value>, DoorError> {
    query_param(uri, name)
        .map(|t| {
            serde_json::from_str(&t)
                .map_err(|e| DoorError::bad(format!("query parameter `{name}` is not JSON: {e}")))
        })
        .transpose()
}

/// The axum handler of `/vast/{*rest}`.
pub async fn route(
    State(state): State<Arc<AppState>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let started = Instant::now();
    let request_id = state.request_id(&headers);
    let path = uri
        .path()
        .strip_prefix("/vast")
        .unwrap_or_default()
        .to_owned();
    let call = Call::parse(&method, &path);
    let result = match body {
        Ok(body) => serve(&state, &call, &uri, &headers, body, &request_id).await,
        Err(rejection) => Err(DoorError::bad(format!(
            "cannot read the request body: {rejection}"
        ))),
    };
    let (status, response) = match result {
        Ok(answer) => (
            StatusCode::OK,
            (
                StatusCode::OK,
                [(header::CONTENT_TYPE, "application/json")],
                match answer {
                    Answer::Json(value) => value.to_string(),
                    Answer::Text(text) => text,
                },
            )
                .into_response(),
        ),
        Err(e) => (e.status_code(), error::vast_response(e)),
    };
    let latency_us = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
    if call.changes_something() || !status.is_success() {
        tracing::info!(target: "warden::vast", request_id, method = %method, path, status = status.as_u16(), latency_us, "vast request");
    } else {
        tracing::debug!(target: "warden::vast", request_id, method = %method, path, status = status.as_u16(), latency_us, "vast request");
    }
    let mut response = response;
    if let Ok(v) = header::HeaderValue::from_str(&request_id) {
        response.headers_mut().insert("x-request-id", v);
    }
    response
}

/// A successful answer: a JSON value, or JSON text already made.
enum Answer {
    Json(Value),
    Text(String),
}

async fn serve(
    state: &Arc<AppState>,
    call: &Call,
    uri: &Uri,
    headers: &HeaderMap,
    body: Bytes,
    request_id: &str,
) -> Result<Answer, DoorError> {
    let Some(door) = state.vast() else {
        return Err(DoorError::NotSupported(
            "Warden's Vast door is off on this server (it needs a store: `storage` must not be `none`)".to_owned(),
        ));
    };
    if *call == Call::GpuNames {
        let names = door.gpu_names().await.map_err(upstream_error)?;
        return Ok(Answer::Json(json!({"gpu_names": *names})));
    }
    let Some(store) = state.store() else {
        return Err(DoorError::Unavailable("Warden has no store".to_owned()));
    };
    let caller = authenticate(state, store, headers, request_id).await?;
    let value = match call {
        Call::ShowUser => Ok(show_user(&caller)),
        Call::GpuNames => Ok(json!({})),
        Call::Search(form) => {
            let body = json_body(&body)?;
            let query = match form {
                SearchForm::Body => body,
                SearchForm::Asks => body.get("q").cloned().unwrap_or_else(|| json!({})),
                SearchForm::Query => query_json(uri, "q")?.unwrap_or_else(|| json!({})),
            };
            return search_offers(door, &caller, query).await.map(Answer::Text);
        }
        Call::Create(offer) => {
            let body = json_body(&body)?;
            let (door, state) = (Arc::clone(door), Arc::clone(state));
            // Run to the end even if the client goes away: the reservation
            // and the upstream create must be settled together.
            let offer = *offer;
            tokio::spawn(async move { create::create(&door, &state, caller, offer, body).await })
                .await
                .map_err(|e| DoorError::Internal(format!("the create task failed: {e}")))?
        }
        Call::ListV1 => {
            let filters = query_json(uri, "select_filters")?;
            let order = query_json(uri, "order_by")?;
            let number = |name: &str, default: usize| match query_param(uri, name) {
                None => Ok(default),
                Some(n) if n.is_empty() || n == "null" => Ok(default),
                Some(n) => n.trim_matches('"').parse::<usize>().map_err(|_| {
                    DoorError::bad(format!("`{name}` must be a whole number, not `{n}`"))
                }),
            };
            let limit = number("limit", 25)?;
            let after = number("after_token", 0)?;
            let cols: Option<Vec<String>> = match query_json(uri, "select_cols")? {
                Some(Value::Array(cols)) if !cols.iter().any(|c| c == "*") => Some(
                    cols.iter()
                        .filter_map(|c| Some(c.as_str()?.to_owned()))
                        .collect(),
                ),
                _ => None,
            };
            let rows = own_rows(door, &caller, filters.as_ref(), order.as_ref()).await?;
            Ok(instances::page(rows, limit, after, cols.as_deref()))
        }
        Call::ListV0 => Ok(json!({"instances": own_rows(door, &caller, None, None).await?})),
        Call::Filters => Ok(instances::filters(
            &own_rows(door, &caller, None, None).await?,
        )),
        Call::Show(id) => {
            let owner = owners(&caller.store, &[*id]).await?.remove(id);
            let Some(owner) = owner.filter(|o| &o.team == caller.team_name()) else {
                return Ok(Answer::Json(json!({"instances": null})));
            };
            let row = door.upstream.instance(*id).await.map_err(upstream_error)?;
            // One the caller's role may not read is answered like a missing one.
            let row = row.filter(|r| caller.review_instance(Verb::Read, r, &owner).allowed);
            Ok(json!({"instances": row.map(|mut r| { instances::normalize(&mut r); r })}))
        }
        Call::Manage(id) => {
            let body = json_body(&body)?;
            let (door, state, id) = (Arc::clone(door), Arc::clone(state), *id);
            tokio::spawn(async move { manage::manage(&door, &state, &caller, &[id], &body).await })
                .await
                .map_err(|e| DoorError::Internal(format!("the task failed: {e}")))?
        }
        Call::ManageBulk => {
            let body = json_body(&body)?;
            let ids = ids(&body, "ids")?;
            let (door, state) = (Arc::clone(door), Arc::clone(state));
            tokio::spawn(async move { manage::manage(&door, &state, &caller, &ids, &body).await })
                .await
                .map_err(|e| DoorError::Internal(format!("the task failed: {e}")))?
        }
        Call::Destroy(id) => {
            let (door, id) = (Arc::clone(door), *id);
            tokio::spawn(async move { manage::destroy(&door, &caller, &[id]).await })
                .await
                .map_err(|e| DoorError::Internal(format!("the task failed: {e}")))?
        }
        Call::DestroyBulk => {
            let ids = ids(&json_body(&body)?, "instance_ids")?;
            let door = Arc::clone(door);
            tokio::spawn(async move { manage::destroy(&door, &caller, &ids).await })
                .await
                .map_err(|e| DoorError::Internal(format!("the task failed: {e}")))?
        }
        Call::Refused(msg) => Err(DoorError::NotSupported(msg.clone())),
    };
    value.map(Answer::Json)
}

fn ids(body: &Value, key: &str) -> Result<Vec<u64>, DoorError> {
    body.get(key)
        .and_then(Value::as_array)
        .and_then(|ids| ids.iter().map(Value::as_u64).collect::<Option<Vec<_>>>())
        .filter(|ids| !ids.is_empty())
        .ok_or_else(|| DoorError::bad(format!("`{key}` must be a non-empty list of instance ids")))
}

/// `users/current`, made by Warden: who the key is, never an upstream key.
fn show_user(caller: &Caller) -> Value {
    let user = caller.key.user.as_ref().map(|u| u.as_str().to_owned());
    let name = match &user {
        Some(u) => format!("{}/{u}", caller.team_name()),
        None => caller.team_name().to_string(),
    };
    // A stable small number per key, for clients that want a numeric id.
    let id = caller
        .key
        .id
        .as_str()
        .get(..8)
        .and_then(|h| u64::from_str_radix(h, 16).ok())
        .unwrap_or(0);
    json!({
        "id": id,
        "username": name,
        "email": null,
        "fullname": name,
        "balance": 0.0,
        "credit": 0.0,
        "can_pay": true,
        "has_billing": true,
        "host_agreement_accepted": false,
        "ssh_key": null,
        "warden": {
            "team": caller.team_name(),
            "user": user,
            "key_id": caller.key.id.as_str(),
            "key_name": caller.key.name.as_ref().map(|n| n.as_str().to_owned()),
        },
    })
}

/// A search with the team's constraints merged in and checked again. The
/// offers allowed are passed on as the upstream wrote them (not re-encoded).
async fn search_offers(
    door: &VastDoor,
    caller: &Caller,
    query: Value,
) -> Result<String, DoorError> {
    let Value::Object(mut query) = query else {
        return Err(DoorError::bad(
            "the search query must be a JSON object of field conditions",
        ));
    };
    let limits = caller.policy.launch_limits(caller.team_name(), Door::Vast);
    let constraints = search::OfferConstraints::of(&limits, &caller.team.vast);
    let names = if constraints.models.is_some() {
        door.gpu_names().await.map_err(upstream_error)?
    } else {
        Arc::new(Vec::new())
    };
    match search::constrain(&mut query, &constraints, &names) {
        Ok(()) => {}
        Err(search::QueryError::NothingAllowed(why)) => {
            tracing::info!(target: "warden::vast", team = caller.team_name().as_str(), reason = why.as_str(), "search matches nothing the team may rent");
            return Ok(json!({"offers": [], "warden": {"empty_because": why}}).to_string());
        }
        Err(search::QueryError::Unreadable(why)) => return Err(DoorError::BadRequest(why)),
    }
    let raw = door
        .upstream
        .search_raw(&Value::Object(query))
        .await
        .map_err(upstream_error)?;
    search::filter_raw(&raw, &constraints).map_err(|detail| {
        upstream_error(UpstreamError::BadAnswer {
            what: "an offer search",
            detail,
        })
    })
}

/// The marketplace simulator serving as the upstream, in this process;
/// it stops when this is dropped.
#[derive(Debug)]
pub struct EmbeddedSim {
    /// Where it listens (127.0.0.1, a free port).
    pub addr: std::net::SocketAddr,
    /// Its state, to inspect or drive it.
    pub state: warden_sim::SimState,
    _stop: tokio::sync::oneshot::Sender<()>,
}

/// Connects the door to its upstream as `config` says: the configured URL
/// (or Vast.ai) with the configured key; with no key configured and none
/// in `VAST_API_KEY`, the embedded simulator, started here. A configured
/// key that cannot be read (unset variable, a key file others may read)
/// is an error naming where it was looked for and the fix.
pub async fn start(config: &VastConfig) -> Result<(VastDoor, Option<EmbeddedSim>), String> {
    let key = if config.key_configured {
        Some(
            config
                .key
                .load(crate::config::VAST_KEY)
                .map_err(|e| format!("vast: {e}"))?,
        )
    } else {
        config.key.load(crate::config::VAST_KEY).ok()
    };
    if let Some(key) = key {
        let url = config
            .upstream_url
            .clone()
            .unwrap_or_else(|| crate::config::VAST_CONSOLE_URL.to_owned());
        let upstream = Upstream::new(&url, key, config.timeout)?;
        return Ok((VastDoor::new(config.clone(), upstream), None));
    }
    let key = [create::token(), create::token()]
        .into_iter()
        .collect::<Result<String, DoorError>>()
        .map_err(|e| e.to_string())?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(|e| format!("cannot start the embedded Vast simulator: {e}"))?;
    let addr = listener
        .local_addr()
        .map_err(|e| format!("cannot start the embedded Vast simulator: {e}"))?;
    let sim = warden_sim::SimState::new(warden_sim::SimConfig {
        api_keys: vec![key.clone()],
        ..warden_sim::SimConfig::default()
    });
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let served = sim.clone();
    tokio::spawn(async move {
        let shutdown = async move {
            let _ = stopped.await;
        };
        if let Err(error) = warden_sim::serve_state(listener, served, shutdown).await {
            tracing::error!(target: "warden::vast", %error, "the embedded Vast simulator stopped");
        }
    });
    let upstream = Upstream::new(
        &format!("http://{addr}"),
        crate::secret::Secret::generated(key),
        config.timeout,
    )?;
    Ok((
        VastDoor::new(config.clone(), upstream),
        Some(EmbeddedSim {
            addr,
            state: sim,
            _stop: stop,
        }),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calls_are_read_from_method_and_path() {
        let c = |m: Method, p: &str| Call::parse(&m, p);
        assert_eq!(c(Method::GET, "/api/v0/users/current"), Call::ShowUser);
        assert_eq!(c(Method::GET, "//api/v0/users/current/"), Call::ShowUser);
        assert_eq!(
            c(Method::POST, "/api/v0/bundles/"),
            Call::Search(SearchForm::Body)
        );
        assert_eq!(c(Method::PUT, "/api/v0/asks/1001/"), Call::Create(1001));
        assert_eq!(c(Method::GET, "/api/v1/instances/"), Call::ListV1);
        assert_eq!(c(Method::GET, "/api/v0/instances/5001/"), Call::Show(5001));
        assert_eq!(
            c(Method::DELETE, "/api/v0/instances/5001/"),
            Call::Destroy(5001)
        );
        assert_eq!(c(Method::DELETE, "/api/v0/instances/"), Call::DestroyBulk);
        for (m, p) in [
            (Method::POST, "/api/v0/asks/bulk/"),
            (Method::PUT, "/api/v0/launch_instance/"),
            (Method::PUT, "/api/v0/instances/reboot/5001/"),
            (Method::GET, "/api/v0/users/me/invoices"),
            (Method::PUT, "/api/v0/asks/abc/"),
        ] {
            assert!(matches!(c(m, p), Call::Refused(_)), "{p}");
        }
    }

    #[test]
    fn placeholder_names_round_trip() {
        let p = Pending {
            offer: 1001,
            token: "0a1b2c3d4e5f".to_owned(),
        };
        assert_eq!(p.name(), "pending:1001:0a1b2c3d4e5f");
        assert_eq!(Pending::parse(&p.name()), Some(p));
        assert_eq!(Pending::parse("5001"), None);
        assert_eq!(Pending::parse("pending:x:y"), None);
    }
}
