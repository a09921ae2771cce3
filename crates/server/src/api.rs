//! The admin API under `/api/v1` (JSON). Built so far: the access review,
//! shaped like Kubernetes' SubjectAccessReview.
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
use axum::routing::post;
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

/// The `/api/v1` routes, for `app::router` to merge.
pub fn routes() -> Router<Arc<AppState>> {
    Router::new().route("/api/v1/access/review", post(access_review))
}

/// An access review as sent.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ReviewRequest {
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
async fn access_review(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Value>, DoorError> {
    let now = UnixMicros::from_system_time(std::time::SystemTime::now());
    let Some(store) = state.store() else {
        return Err(DoorError::Unavailable(
            "the admin API checks keys in the store, and this Warden runs with `storage: none`"
                .to_owned(),
        ));
    };
    let caller = Authenticated {
        key: auth::key(store, &headers, now, auth::NEEDS_KEY).await?,
    };
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
