//! The admin API under `/api/v1` (JSON), described by the OpenAPI 3.1
//! document at `GET /api/v1/openapi.json`, generated from the handlers
//! ([`ApiDoc`]). Every call needs a Warden key (401 without) and asks the
//! core's access model ([`crate::auth::Authenticated`]; 403 with the reason);
//! every write is audited with the actor (`key:<id>`). The resources are in
//! [`admin`]; the access review is here:
//!
//! `POST /api/v1/access/review` with `{verb, resource, team}` asks "may I?"
//! for the caller itself (a SelfSubjectAccessReview); with `user` and/or
//! `groups` it asks for that subject, which only a caller who may read the
//! policy of that team (an admin) may do. `owner` names whose the thing is,
//! for permissions that reach only one's own (an ML engineer's allocations).
//! The answer is `{allowed, denied, reason}`. The caller needs a Warden key
//! (401 without), bad input is a 400 naming the field.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};
use warden_core::access::{Resource, Subject, Verb};
use warden_core::TeamName;
use warden_store::UnixMicros;

use crate::app::AppState;
use crate::auth::{self, Authenticated};
use crate::error::DoorError;

/// The largest access review body.
pub const REVIEW_BODY_LIMIT: usize = 16 * 1024;
/// The most groups one review may name.
pub const MAX_REVIEW_GROUPS: usize = 256;
/// The longest user, group, team or owner name in a review.
pub const MAX_REVIEW_NAME: usize = 256;

pub mod admin;

/// The `/api/v1` routes, for `app::router` to merge.
pub fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/api/v1/access/review", post(access_review))
        .route("/api/v1/openapi.json", get(openapi))
        .route("/api/v1/me", get(admin::me))
        .route("/api/v1/teams", get(admin::teams))
        .route(
            "/api/v1/keys",
            get(admin::list_keys).post(admin::create_key),
        )
        .route("/api/v1/keys/{id}", delete(admin::revoke_key))
        .route("/api/v1/allocations", get(admin::list_allocations))
        .route("/api/v1/allocations/{id}/end", post(admin::end_allocation))
        .route("/api/v1/audit", get(admin::audit))
        .route("/api/v1/decisions", post(admin::dry_run))
        .route(
            "/api/v1/exceptions",
            get(admin::list_exceptions).post(admin::grant_exception),
        )
        .route("/api/v1/exceptions/{id}", delete(admin::revoke_exception))
        .route("/api/v1/reports/spend", get(crate::reports::spend))
        .route(
            "/api/v1/reports/chargeback",
            get(crate::reports::chargeback_handler),
        )
}

/// The OpenAPI document of `/api/v1`.
#[derive(utoipa::OpenApi)]
#[openapi(
    info(
        title = "Warden admin API",
        description = "Teams, keys, allocations, audit, decisions, exceptions and access review. Every call needs `Authorization: Bearer <Warden key>`; what a key may do is its role's (see the README's Roles)."
    ),
    paths(
        access_review,
        admin::me,
        admin::teams,
        admin::list_keys,
        admin::create_key,
        admin::revoke_key,
        admin::list_allocations,
        admin::end_allocation,
        admin::audit,
        admin::dry_run,
        admin::list_exceptions,
        admin::grant_exception,
        admin::revoke_exception,
    ),
    components(schemas(ReviewRequest, admin::NewKeyRequest, admin::NewExceptionRequest)),
    modifiers(&BearerAuth)
)]
pub struct ApiDoc;

struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some("a Warden key, `wdn_...`"))
                    .build(),
            ),
        );
    }
}

/// `GET /api/v1/openapi.json`: the OpenAPI 3.1 document, for any caller
/// with a valid credential (no endpoint but the health checks is open).
async fn openapi(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
) -> Result<Json<utoipa::openapi::OpenApi>, DoorError> {
    caller(&state, &headers).await?;
    Ok(Json(<ApiDoc as utoipa::OpenApi>::openapi()))
}

/// The caller of an admin endpoint: its key, checked in the store.
pub(crate) async fn caller(
    state: &AppState,
    headers: &HeaderMap,
) -> Result<(Authenticated, warden_store::Store), DoorError> {
    let now = UnixMicros::from_system_time(std::time::SystemTime::now());
    let Some(store) = state.store() else {
        return Err(DoorError::Unavailable(
            "the admin API checks keys in the store, and this Warden runs with `storage: none`"
                .to_owned(),
        ));
    };
    let oidc = state.oidc();
    let caller = auth::authenticate(store, oidc.as_deref(), headers, now, auth::NEEDS_KEY).await?;
    Ok((caller, store.clone()))
}

/// An access review as sent.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReviewRequest {
    #[serde(default)]
    user: Option<String>,
    #[serde(default)]
    groups: Option<Vec<String>>,
    verb: String,
    resource: String,
    team: String,
    #[serde(default)]
    owner: Option<String>,
}

/// `POST /api/v1/access/review`.
#[utoipa::path(
    post,
    path = "/api/v1/access/review",
    request_body = ReviewRequest,
    responses(
        (status = 200, description = "`{allowed, denied, reason}`"),
        (status = 400, description = "a field is missing, unknown or out of bounds"),
        (status = 401, description = "no valid key"),
        (status = 403, description = "reviewing another subject needs `read policy` in the team"),
    ),
    security(("bearer" = []))
)]
async fn access_review(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Value>, DoorError> {
    let (caller, _store) = caller(&state, &headers).await?;
    let body = body.map_err(|e| DoorError::bad(format!("cannot read the request body: {e}")))?;
    if body.len() > REVIEW_BODY_LIMIT {
        return Err(DoorError::bad(format!(
            "the review is larger than {} KiB",
            REVIEW_BODY_LIMIT / 1024
        )));
    }
    let req: ReviewRequest = serde_json::from_slice(&body).map_err(|e| {
        DoorError::bad(format!(
            "the body is not an access review ({e}); send {{\"verb\": \"create\", \"resource\": \"launch\", \"team\": \"ml\"}}, with `user`, `groups` and `owner` optional"
        ))
    })?;
    let names = req
        .user
        .iter()
        .chain(req.owner.iter())
        .chain(req.groups.iter().flatten())
        .chain(std::iter::once(&req.team));
    if let Some(long) = names
        .into_iter()
        .find(|n| n.chars().count() > MAX_REVIEW_NAME)
    {
        return Err(DoorError::bad(format!(
            "a name of {} characters is longer than the {MAX_REVIEW_NAME} allowed",
            long.chars().count()
        )));
    }
    if req
        .groups
        .as_ref()
        .is_some_and(|g| g.len() > MAX_REVIEW_GROUPS)
    {
        return Err(DoorError::bad(format!(
            "`groups` names more than {MAX_REVIEW_GROUPS} groups"
        )));
    }
    let verb = Verb::parse(req.verb.trim()).map_err(|e| DoorError::bad(format!("`verb`: {e}")))?;
    let resource = Resource::parse(req.resource.trim())
        .map_err(|e| DoorError::bad(format!("`resource`: {e}")))?;
    let policy = state.policy();
    let team = TeamName::parse(req.team.trim())
        .ok()
        .filter(|t| policy.team(t).is_some())
        .ok_or_else(|| {
            DoorError::bad(format!(
                "`team`: `{}` is not a team in Warden's config",
                req.team.chars().take(60).collect::<String>()
            ))
        })?;
    let subject = if req.user.is_some() || req.groups.is_some() {
        // Reviewing someone else reads who may do what: the policy.
        caller.require(&policy, Verb::Read, Resource::Policy, &team)?;
        Subject {
            user: req.user.map(|u| u.trim().to_owned()),
            groups: req.groups.unwrap_or_default(),
            key: None,
        }
    } else {
        caller.subject()
    };
    let review = policy
        .access()
        .review(&subject, verb, resource, &team, req.owner.as_deref());
    Ok(Json(json!({
        "allowed": review.allowed,
        "denied": !review.allowed,
        "reason": review.reason,
    })))
}
