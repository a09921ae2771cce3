//! The Kubernetes door: a validating and mutating admission webhook
//! (`POST /k8s/admission`, `AdmissionReview` `admission.k8s.io/v1`), and
//! the usage sync with the cluster's pods ([`sync`]; from a pod list
//! export, or periodically from the API server of `kubernetes.kubeconfig`,
//! [`cluster`]).
//!
//! The door is the same three steps around the gate ([`crate::gate`]) as
//! every door: the wire format ([`wire`]), normalization of the object to
//! the core's launch request ([`workload`], [`normalize`]), and applying an
//! allowed decision back to the object as a JSONPatch ([`patch`]).
//!
//! # What is judged
//!
//! - **CREATE** of a Pod, Job, CronJob, Deployment, StatefulSet,
//!   ReplicaSet or configured custom resource whose pod templates ask for
//!   GPUs: team from the namespace ([`warden_core::Policy::team_of_namespace`]),
//!   user and groups from `userInfo` (mapped by `role_bindings`: a viewer
//!   may not create GPU pods), then the gate: team limits, rules
//!   (`doors: [kubernetes]` or `[k8s]`), quotas and budgets with a
//!   reservation named `<namespace>/<kind>/<name>` (door `kubernetes`).
//!   An object with only `generateName` is named
//!   `<namespace>/<kind>/<generateName>@<review uid>`; the name is written
//!   into the object and its pod templates as the annotation
//!   [`patch::ALLOCATION_ANNOTATION`], which DELETE and the sync read.
//! - **Objects made by a controller for a judged object are not judged
//!   again**: an object whose controller `ownerReference` is of a judged
//!   kind, created by a Kubernetes controller (a `kube-system` service
//!   account or `system:kube-controller-manager`; for a configured custom
//!   resource, any creator: its operator runs elsewhere), is allowed with
//!   no reservation: a Deployment's ReplicaSets and Pods, a Job's Pods, a
//!   CronJob's Jobs. The same object created by a user is judged.
//! - **UPDATE** that changes the GPU footprint (pods, GPUs per pod, model,
//!   spot) is judged again at its new size, with the workload's live
//!   allocation credited ([`crate::gate::Admission::replaces`]): when
//!   allowed, the new size is reserved under a transition name and the old
//!   allocation ended; when denied, the object keeps its old size. An
//!   UPDATE that leaves the footprint alone is allowed untouched. A
//!   `scale` subresource UPDATE (`kubectl scale`, autoscalers) is judged
//!   from the workload's live allocation (GPUs per pod = its GPUs / the old
//!   replicas); scaling to zero keeps a zero-GPU allocation as a marker,
//!   and scaling up from zero through `scale` is refused (update
//!   `spec.replicas` instead, which is judged against the pod template).
//! - **DELETE** of a judged object ends its allocation.
//! - `dryRun: true` is decided by the policy (rules and team limits, no
//!   quota) and changes nothing: no reservation, no audit record.
//! - Objects without GPUs, other kinds, and CONNECT are allowed at once,
//!   untouched.
//! - A GPU object in a namespace that belongs to no team is **denied**
//!   (its spend would be nobody's); the webhook's `namespaceSelector`
//!   should not send such namespaces at all (docs/kubernetes.md).
//!
//! Denials answer `allowed: false` with `status.code` 403 and the message
//! naming the rule and the fix, which kubectl prints verbatim. When the
//! store fails, the answer is `allowed: false` with code 503 (fail closed
//! whatever the webhook's `failurePolicy`). A malformed review is a 400.

pub mod cluster;
pub mod normalize;
pub mod patch;
pub mod sync;
pub mod wire;
pub mod workload;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{ConnectInfo, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Extension;
use warden_core::Door;
use warden_store::{Allocation, AllocationName, AllocationState, EndTarget, UnixMicros};

use crate::app::AppState;
use crate::error::DoorError;
use wire::{Operation, Review};

/// The route of the webhook.
pub const PATH: &str = "/k8s/admission";

/// The axum handler of [`PATH`].
pub async fn route(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    peer: Option<Extension<ConnectInfo<SocketAddr>>>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let started = Instant::now();
    let request_id = state.request_id(&headers);
    let peer = peer.map(|Extension(ConnectInfo(addr))| addr.ip());
    let trusted = check_api_server(&state.kubernetes().trusted_api_servers, peer);
    let result = match trusted.and_then(|()| crate::app::body_or_error(body)) {
        Ok(body) => match wire::parse_review(&body) {
            Ok(review) => Ok(answer(&state, &review, &request_id, started).await),
            Err(e) => Err(e),
        },
        Err(e) => Err(e),
    };
    match result {
        Ok(value) => (
            StatusCode::OK,
            [
                (header::CONTENT_TYPE, "application/json"),
                (
                    header::HeaderName::from_static("x-request-id"),
                    request_id.as_str(),
                ),
            ],
            value.to_json(),
        )
            .into_response(),
        Err(e) => {
            crate::app::log_refusal(&request_id, "kubernetes", &e);
            e.into_response()
        }
    }
}

/// A review names the user it is for (`userInfo`), and a granted one
/// reserves quota and budget in that user's team: only the cluster's API
/// server may send one (`kubernetes.trusted_api_servers`, default
/// loopback).
fn check_api_server(
    trusted: &crate::config::TrustedServers,
    peer: Option<std::net::IpAddr>,
) -> Result<(), DoorError> {
    if peer.is_some_and(|p| trusted.contains(p)) {
        return Ok(());
    }
    let from = peer.map_or_else(|| "an unknown address".to_owned(), |p| format!("`{p}`"));
    Err(DoorError::Forbidden(format!(
        "an admission review names the user it is for, which only the cluster's API server may \
         vouch for, and this one came from {from}; Warden judges reviews only from \
         `kubernetes.trusted_api_servers` ({}). If this is your API server (or the address its \
         webhook calls come from), a platform admin adds it there",
        trusted.describe()
    )))
}

/// The answer to a well-formed review; a failure to decide is a refusal
/// inside the review (code 503), so the API server refuses the object
/// whatever its `failurePolicy`.
pub async fn answer(
    state: &AppState,
    review: &Review,
    request_id: &str,
    started: Instant,
) -> wire::Answer {
    match decide_review(state, review, request_id, started).await {
        Ok(v) => v,
        Err(e) => {
            crate::app::log_refusal(request_id, "kubernetes", &e);
            let code = e.status_code().as_u16();
            let message = match &e {
                DoorError::Internal(_) => {
                    "Warden hit an internal error; the request was not decided. Check Warden's log."
                        .to_owned()
                }
                other => format!("Warden: {other}"),
            };
            wire::deny(&review.uid, code, &message)
        }
    }
}

fn store_error(e: warden_store::StoreError) -> DoorError {
    DoorError::store(&e)
}

/// The live allocation named `name` of the door, if any.
async fn live_named(state: &AppState, name: &str) -> Result<Option<Allocation>, DoorError> {
    let (Some(store), Ok(name)) = (state.store(), AllocationName::parse(name)) else {
        return Ok(None);
    };
    Ok(store
        .allocations_named(Door::Kubernetes, &[name])
        .await
        .map_err(store_error)?
        .into_iter()
        .rev()
        .find(|a| a.state == AllocationState::Live))
}

fn now() -> UnixMicros {
    UnixMicros::from_system_time(std::time::SystemTime::now())
}

async fn decide_review(
    state: &AppState,
    review: &Review,
    request_id: &str,
    started: Instant,
) -> Result<wire::Answer, DoorError> {
    let allow = || Ok(wire::allow(&review.uid, &patch::Patch::none(), &[]));
    let config = state.kubernetes();
    match review.operation {
        Operation::Connect => allow(),
        Operation::Delete => {
            if let Some(name) = normalize::deleted_allocation(&config, review) {
                if !review.dry_run {
                    if let (Some(store), Ok(name)) = (state.store(), AllocationName::parse(&name)) {
                        let ended = store
                            .end_by(
                                &EndTarget::Name {
                                    door: Door::Kubernetes,
                                    name,
                                },
                                review
                                    .username
                                    .as_deref()
                                    .map(|u| format!("kubernetes:{u}"))
                                    .as_deref(),
                                now(),
                            )
                            .await
                            .map_err(store_error)?;
                        for a in &ended {
                            tracing::info!(target: "warden::kubernetes", request_id, allocation = a.name.as_str(), "deleted: allocation ended");
                        }
                    }
                }
            }
            allow()
        }
        Operation::Create | Operation::Update => {
            if review.sub_resource.as_deref() == Some("scale") {
                return normalize::scale(state, &config, review, request_id, started).await;
            }
            normalize::judge(state, &config, review, request_id, started).await
        }
    }
}

/// Ends `old` and renames the transition allocation `from` to `to`, after
/// a resize was granted.
async fn finish_resize(
    state: &AppState,
    old: &Allocation,
    from: &str,
    to: &str,
) -> Result<(), DoorError> {
    let Some(store) = state.store() else {
        return Ok(());
    };
    store
        .end_by(&EndTarget::Id(old.id), Some("kubernetes:resize"), now())
        .await
        .map_err(store_error)?;
    let (Ok(from), Ok(to)) = (AllocationName::parse(from), AllocationName::parse(to)) else {
        return Ok(());
    };
    store
        .settle(Door::Kubernetes, &old.team, &from, &to, now())
        .await
        .map_err(store_error)?;
    Ok(())
}
