//! The admin API's resources: who am I, teams with live usage, keys,
//! allocations, the audit log, decision dry-runs and exceptions. Each
//! handler asks the access model before it reads or writes; each write is
//! audited with the actor in the same transaction as the change.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, RawQuery, State};
use axum::http::HeaderMap;
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};
use warden_core::access::{Resource, Role, Verb};
use warden_core::{Policy, TeamName};
use warden_store::{
    AllocationId, ApiKeyId, EndTarget, KeyAdminError, KeyName, KeyUser, NewException, NewKey,
    UnixMicros,
};

use super::caller;
use crate::app::AppState;
use crate::auth::Authenticated;
use crate::config::ExceptionSettings;
use crate::error::DoorError;

/// The largest JSON body of a write.
const WRITE_BODY_LIMIT: usize = 16 * 1024;
/// The most audit records one page returns.
const MAX_AUDIT_PAGE: usize = 1000;
/// The most audit records one query scans.
const MAX_AUDIT_SCAN: usize = 200_000;

fn now() -> UnixMicros {
    UnixMicros::from_system_time(std::time::SystemTime::now())
}

fn actor(c: &Authenticated) -> String {
    c.actor()
}

fn store_error(e: warden_store::StoreError) -> DoorError {
    DoorError::store(&e)
}

fn query(raw: Option<&str>, known: &[&str]) -> Result<BTreeMap<String, String>, DoorError> {
    let mut out = BTreeMap::new();
    for (k, v) in form_urlencoded::parse(raw.unwrap_or_default().as_bytes()) {
        if !known.contains(&k.as_ref()) {
            return Err(DoorError::bad(format!(
                "unknown query parameter `{}`; use {}",
                k.chars().take(40).collect::<String>(),
                known.join(", ")
            )));
        }
        if out.insert(k.into_owned(), v.into_owned()).is_some() {
            return Err(DoorError::bad("a query parameter is given more than once"));
        }
    }
    Ok(out)
}

fn team_param(policy: &Policy, text: Option<&String>) -> Result<Option<TeamName>, DoorError> {
    text.filter(|t| !t.trim().is_empty())
        .map(|t| {
            TeamName::parse(t.trim())
                .ok()
                .filter(|n| policy.team(n).is_some())
                .ok_or_else(|| {
                    DoorError::bad(format!(
                        "`team`: `{}` is not a team in Warden's config",
                        t.chars().take(60).collect::<String>()
                    ))
                })
        })
        .transpose()
}

fn json_body<T: serde::de::DeserializeOwned>(
    body: Result<Bytes, BytesRejection>,
    example: &str,
) -> Result<T, DoorError> {
    let body = body.map_err(|e| DoorError::bad(format!("cannot read the request body: {e}")))?;
    if body.len() > WRITE_BODY_LIMIT {
        return Err(DoorError::bad(format!(
            "the body is larger than {} KiB",
            WRITE_BODY_LIMIT / 1024
        )));
    }
    serde_json::from_slice(&body)
        .map_err(|e| DoorError::bad(format!("the body is not valid ({e}); send {example}")))
}

/// The teams `caller` may `verb` `resource` in, fully (not only its own
/// things): the one asked, or all of them.
fn teams_for(
    caller: &Authenticated,
    policy: &Policy,
    verb: Verb,
    resource: Resource,
    team: Option<TeamName>,
) -> Result<Vec<TeamName>, DoorError> {
    match team {
        Some(t) => {
            caller.require(policy, verb, resource, &t)?;
            Ok(vec![t])
        }
        None => {
            caller.require_all_teams(policy, verb, resource, &caller.one_team_hint())?;
            Ok(policy.teams().iter().map(|t| t.name.clone()).collect())
        }
    }
}

/// `GET /api/v1/me`: the calling key, its role and where it holds it.
#[utoipa::path(get, path = "/api/v1/me", responses((status = 200, description = "the key: id, team, role, user, expiry")), security(("bearer" = [])))]
pub async fn me(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
) -> Result<Json<Value>, DoorError> {
    let (c, _) = caller(&state, &headers).await?;
    let policy = state.policy();
    let subject = c.subject();
    let roles: Vec<Value> = policy
        .teams()
        .iter()
        .flat_map(|t| {
            policy
                .access()
                .roles_in(&subject, &t.name)
                .into_iter()
                .map(|(role, why)| json!({"team": t.name, "role": role, "by": why}))
        })
        .collect();
    Ok(Json(match &c {
        Authenticated::Key(key) => json!({
            "kind": "key",
            "key_id": key.id,
            "team": key.team,
            "role": key.role,
            "user": key.user,
            "expires_us": key.expires,
            "roles": roles,
        }),
        Authenticated::Oidc(user) => json!({
            "kind": "oidc",
            "user": user.user,
            "groups": user.groups,
            "roles": roles,
        }),
    }))
}

/// `GET /api/v1/teams`: the teams the caller holds a role in, from the
/// config, with their live usage.
#[utoipa::path(get, path = "/api/v1/teams", responses((status = 200, description = "teams with users, workspaces and live allocations, GPUs and $/hour")), security(("bearer" = [])))]
pub async fn teams(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
) -> Result<Json<Value>, DoorError> {
    let (c, store) = caller(&state, &headers).await?;
    let policy = state.policy();
    let subject = c.subject();
    let mut out = Vec::new();
    for team in policy.teams() {
        if policy.access().roles_in(&subject, &team.name).is_empty() {
            continue;
        }
        let live = store
            .list_live(Some(&team.name))
            .await
            .map_err(store_error)?;
        let gpus: u64 = live.iter().map(|a| u64::from(a.gpus)).sum();
        let hourly: i64 = live.iter().map(|a| a.hourly.micros()).sum();
        out.push(json!({
            "name": team.name,
            "live": {
                "allocations": live.len(),
                "gpus": gpus,
                "hourly_usd": warden_core::Usd::from_micros(hourly).to_string(),
            },
        }));
    }
    Ok(Json(json!({ "teams": out })))
}

/// `GET /api/v1/keys?team=`: keys (never secrets) of a team, or of every
/// team (an admin).
#[utoipa::path(get, path = "/api/v1/keys", params(("team" = Option<String>, Query, description = "one team")), responses((status = 200, description = "keys: id, team, role, user, name, instants")), security(("bearer" = [])))]
pub async fn list_keys(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
) -> Result<Json<Value>, DoorError> {
    let (c, store) = caller(&state, &headers).await?;
    let policy = state.policy();
    let q = query(raw.as_deref(), &["team"])?;
    let team = team_param(&policy, q.get("team"))?;
    let teams = teams_for(&c, &policy, Verb::Read, Resource::Keys, team)?;
    let keys = store.list_keys(None).await.map_err(store_error)?;
    let keys: Vec<_> = keys
        .into_iter()
        .filter(|k| teams.contains(&k.team))
        .collect();
    Ok(Json(json!({ "keys": keys })))
}

/// `POST /api/v1/keys` as sent.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewKeyRequest {
    /// The team.
    team: String,
    /// The role (default `ml-engineer`); at most the caller's own.
    #[serde(default)]
    role: Option<String>,
    /// The user it acts as.
    #[serde(default)]
    user: Option<String>,
    /// A label for people.
    #[serde(default)]
    name: Option<String>,
    /// Days until it expires (default `keys.max_age_days`), or absent.
    #[serde(default)]
    expires_days: Option<u32>,
    /// `true`: it never expires (must be asked for).
    #[serde(default)]
    never_expires: bool,
}

/// `POST /api/v1/keys`: makes a key (shown once in the answer), for a role
/// up to the caller's (a team lead up to team lead, an admin any).
#[utoipa::path(post, path = "/api/v1/keys", request_body = NewKeyRequest, responses((status = 200, description = "the key, once, and what was stored"), (status = 403, description = "the caller may not make keys in that team, or not of that role")), security(("bearer" = [])))]
pub async fn create_key(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Value>, DoorError> {
    let (c, store) = caller(&state, &headers).await?;
    let policy = state.policy();
    let req: NewKeyRequest = json_body(body, r#"{"team": "ml", "role": "viewer"}"#)?;
    let team = team_param(&policy, Some(&req.team))?
        .ok_or_else(|| DoorError::bad("`team` is required"))?;
    c.require(&policy, Verb::Create, Resource::Keys, &team)?;
    let role = match req.role.as_deref() {
        None => Role::MlEngineer,
        Some(r) => Role::parse(r.trim()).map_err(|e| DoorError::bad(format!("`role`: {e}")))?,
    };
    if !c.may_grant(&policy, &team, role) {
        return Err(DoorError::Forbidden(format!(
            "{} may make keys of roles up to its own in team `{team}`, not `{role}`",
            c.describe()
        )));
    }
    let user = req
        .user
        .as_deref()
        .map(KeyUser::parse)
        .transpose()
        .map_err(|e| DoorError::bad(format!("`user`: {e}")))?;
    let name = req
        .name
        .as_deref()
        .map(KeyName::parse)
        .transpose()
        .map_err(|e| DoorError::bad(format!("`name`: {e}")))?;
    let now = now();
    let expires = match (req.never_expires, req.expires_days) {
        (true, Some(_)) => {
            return Err(DoorError::bad(
                "give `expires_days` or `never_expires`, not both",
            ))
        }
        (true, None) => None,
        (false, days) => {
            let lifetime = days.map_or(state.settings().keys.max_age, |d| {
                std::time::Duration::from_secs(u64::from(d) * 86_400)
            });
            if lifetime.is_zero() {
                return Err(DoorError::bad("`expires_days` must be at least 1"));
            }
            Some(UnixMicros::from_micros(now.micros().saturating_add(
                i64::try_from(lifetime.as_micros()).unwrap_or(i64::MAX),
            )))
        }
    };
    let new = NewKey {
        team,
        user,
        name,
        expires,
        role,
    };
    let issued = store
        .create_key_by(new, Some(&actor(&c)), now)
        .await
        .map_err(key_error)?;
    Ok(Json(json!({
        "key": issued.secret.expose(),
        "stored": issued.key,
        "note": "this is the only time the key is shown: Warden keeps only its hash",
    })))
}

fn key_error(e: KeyAdminError) -> DoorError {
    match e {
        KeyAdminError::Store(e) => store_error(e),
        KeyAdminError::NotFound(_) => DoorError::NotFound {
            code: "no_such_key",
            msg: e.to_string(),
        },
        other => DoorError::Conflict(other.to_string()),
    }
}

/// `DELETE /api/v1/keys/{id}`: revokes a key of a team the caller may
/// manage keys in.
#[utoipa::path(delete, path = "/api/v1/keys/{id}", params(("id" = String, Path, description = "the key's id")), responses((status = 200, description = "the revoked key"), (status = 404, description = "no such key")), security(("bearer" = [])))]
pub async fn revoke_key(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<Value>, DoorError> {
    let (c, store) = caller(&state, &headers).await?;
    let policy = state.policy();
    let id = ApiKeyId::parse(id.trim()).map_err(|e| DoorError::bad(e.to_string()))?;
    let missing = || DoorError::NotFound {
        code: "no_such_key",
        msg: format!("no key has id {id}"),
    };
    let key = store
        .get_key(&id)
        .await
        .map_err(store_error)?
        .ok_or_else(missing)?;
    c.require(&policy, Verb::Delete, Resource::Keys, &key.team)
        .map_err(|_| missing())?;
    let revoked = store
        .revoke_key_by(&id, Some(&actor(&c)), now())
        .await
        .map_err(key_error)?;
    Ok(Json(json!({ "revoked": revoked })))
}

/// `GET /api/v1/allocations?team=`: live allocations the caller may see
/// (a team's, or an ML engineer's own).
#[utoipa::path(get, path = "/api/v1/allocations", params(("team" = Option<String>, Query, description = "one team")), responses((status = 200, description = "live allocations")), security(("bearer" = [])))]
pub async fn list_allocations(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
) -> Result<Json<Value>, DoorError> {
    let (c, store) = caller(&state, &headers).await?;
    let policy = state.policy();
    let q = query(raw.as_deref(), &["team"])?;
    let team = match (team_param(&policy, q.get("team"))?, c.key()) {
        (Some(t), _) => t,
        (None, Some(key)) => key.team.clone(),
        (None, None) => return Err(DoorError::bad("name the team: `team=TEAM`")),
    };
    let live = store.list_live(Some(&team)).await.map_err(store_error)?;
    let subject = c.subject();
    let visible: Vec<_> = live
        .into_iter()
        .filter(|a| {
            policy
                .access()
                .review(
                    &subject,
                    Verb::Read,
                    Resource::Allocations,
                    &team,
                    Some(crate::auth::owner(a.user.as_deref())),
                )
                .allowed
        })
        .collect();
    if visible.is_empty() {
        // Say why when nothing may be seen at all.
        let own = policy.access().review(
            &subject,
            Verb::Read,
            Resource::Allocations,
            &team,
            Some(subject.user.as_deref().unwrap_or(crate::auth::UNNAMED_USER)),
        );
        if !own.allowed {
            return Err(DoorError::Forbidden(format!(
                "{}: {}",
                c.describe(),
                own.reason
            )));
        }
    }
    Ok(Json(json!({ "team": team, "allocations": visible })))
}

/// `POST /api/v1/allocations/{id}/end`: ends a live allocation (a team
/// lead's or admin's, or an ML engineer's own), audited with the actor.
#[utoipa::path(post, path = "/api/v1/allocations/{id}/end", params(("id" = i64, Path, description = "the allocation's id")), responses((status = 200, description = "what was ended"), (status = 404, description = "no such live allocation the caller may see")), security(("bearer" = [])))]
pub async fn end_allocation(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Path(id): Path<i64>,
) -> Result<Json<Value>, DoorError> {
    let (c, store) = caller(&state, &headers).await?;
    let policy = state.policy();
    let live = store.list_live(None).await.map_err(store_error)?;
    let missing = || DoorError::NotFound {
        code: "no_such_allocation",
        msg: format!("no live allocation has id {id} in a team you may see"),
    };
    let a = live
        .into_iter()
        .find(|a| a.id == AllocationId::new(id))
        .ok_or_else(missing)?;
    let review = policy.access().review(
        &c.subject(),
        Verb::Delete,
        Resource::Allocations,
        &a.team,
        Some(crate::auth::owner(a.user.as_deref())),
    );
    if !review.allowed {
        if policy.access().roles_in(&c.subject(), &a.team).is_empty() {
            return Err(missing());
        }
        return Err(DoorError::Forbidden(format!(
            "{}: {}",
            c.describe(),
            review.reason
        )));
    }
    let ended = store
        .end_by(&EndTarget::Id(a.id), Some(&actor(&c)), now())
        .await
        .map_err(store_error)?;
    Ok(Json(json!({ "ended": ended })))
}

/// `GET /api/v1/audit?since=&until=&team=&user=&kind=&verdict=&after=&limit=`:
/// audit records oldest first, a page at a time (`after`: the last `seq`
/// seen; `limit` ≤ 1000, default 100). `since`/`until` are RFC 3339 (default:
/// the last 24 hours).
#[utoipa::path(get, path = "/api/v1/audit", params(("since" = Option<String>, Query), ("until" = Option<String>, Query), ("team" = Option<String>, Query), ("user" = Option<String>, Query), ("kind" = Option<String>, Query), ("verdict" = Option<String>, Query), ("after" = Option<i64>, Query), ("limit" = Option<usize>, Query)), responses((status = 200, description = "`{records, next_after}`")), security(("bearer" = [])))]
pub async fn audit(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
) -> Result<Json<Value>, DoorError> {
    let (c, store) = caller(&state, &headers).await?;
    let policy = state.policy();
    let q = query(
        raw.as_deref(),
        &[
            "since", "until", "team", "user", "kind", "verdict", "after", "limit",
        ],
    )?;
    let team = team_param(&policy, q.get("team"))?;
    let teams = teams_for(&c, &policy, Verb::Read, Resource::Audit, team.clone())?;
    let now = now();
    let instant = |key: &str, default: UnixMicros| -> Result<UnixMicros, DoorError> {
        match q.get(key) {
            None => Ok(default),
            Some(t) => UnixMicros::parse_rfc3339(t.trim()).map_err(|_| {
                DoorError::bad(format!(
                    "`{key}`: `{t}` is not an RFC 3339 instant, e.g. `2026-12-01T00:00:00Z`"
                ))
            }),
        }
    };
    let until = instant(
        "until",
        UnixMicros::from_micros(now.micros().saturating_add(1)),
    )?;
    let since = instant(
        "since",
        UnixMicros::from_micros(now.micros() - 86_400_000_000),
    )?;
    let number = |key: &str, default: i64| -> Result<i64, DoorError> {
        q.get(key).map_or(Ok(default), |t| {
            t.trim()
                .parse()
                .map_err(|_| DoorError::bad(format!("`{key}` must be a whole number")))
        })
    };
    let after = number("after", 0)?;
    let limit = usize::try_from(number("limit", 100)?).unwrap_or(0);
    if !(1..=MAX_AUDIT_PAGE).contains(&limit) {
        return Err(DoorError::bad(format!(
            "`limit` must be 1 to {MAX_AUDIT_PAGE}"
        )));
    }
    let records = store
        .export_audit(since, until)
        .await
        .map_err(store_error)?;
    if records.len() > MAX_AUDIT_SCAN {
        return Err(DoorError::bad(format!(
            "the window holds more than {MAX_AUDIT_SCAN} records; narrow `since`/`until`"
        )));
    }
    let all_teams = team.is_none();
    let wanted = |r: &warden_store::AuditRecord| -> bool {
        let payload: Value = serde_json::from_str(&r.payload).unwrap_or(Value::Null);
        let field = |k: &str| payload.get(k).and_then(Value::as_str);
        let record_team = field("team");
        let team_ok =
            all_teams || record_team.is_some_and(|t| teams.iter().any(|n| n.as_str() == t));
        team_ok
            && q.get("user")
                .is_none_or(|u| field("user") == Some(u.as_str()))
            && q.get("kind").is_none_or(|k| r.kind == *k)
            && q.get("verdict")
                .is_none_or(|v| field("verdict") == Some(v.as_str()))
    };
    let page: Vec<Value> = records
        .iter()
        .filter(|r| r.seq > after && wanted(r))
        .take(limit)
        .map(|r| {
            json!({
                "seq": r.seq,
                "at": r.at.to_string(),
                "kind": r.kind,
                "payload": serde_json::from_str::<Value>(&r.payload).unwrap_or(Value::Null),
                "hash": r.hash,
            })
        })
        .collect();
    let next = (page.len() == limit)
        .then(|| page.last().and_then(|r| r.get("seq").cloned()))
        .flatten();
    Ok(Json(json!({ "records": page, "next_after": next })))
}

/// `POST /api/v1/decisions`: what Warden would decide for a request, with
/// nothing recorded or reserved (`warden decide` over HTTP). The body is a
/// SkyPilot admin-policy request as SkyPilot sends it, or `{"vast": {team,
/// user, offer, offer_facts, body}}`.
#[utoipa::path(post, path = "/api/v1/decisions", responses((status = 200, description = "the decision, the denial message, and what the door would send on")), security(("bearer" = [])))]
pub async fn dry_run(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Value>, DoorError> {
    let (_c, _) = caller(&state, &headers).await?;
    let policy = state.policy();
    let body = body.map_err(|e| DoorError::bad(format!("cannot read the request body: {e}")))?;
    if let Ok(Value::Object(top)) = serde_json::from_slice::<Value>(&body) {
        if let Some(vast) = top.get("vast") {
            let team = vast.get("team").and_then(Value::as_str).ok_or_else(|| {
                DoorError::bad("`vast.team`: name the team whose key makes the request")
            })?;
            let user = vast.get("user").and_then(Value::as_str);
            let d = crate::doors::vast::offline::decide(&policy, team, user, vast)?;
            let message = (!d.decision.is_allowed()).then(|| d.decision.denial_message());
            return Ok(Json(
                json!({ "decision": d.decision, "message": message, "body": d.body }),
            ));
        }
    }
    let handled = crate::doors::skypilot::handle(&policy, &body)?;
    let message = match &handled.answer {
        crate::doors::skypilot::Answer::Allow(_) => None,
        crate::doors::skypilot::Answer::Deny(m) => Some(m.clone()),
    };
    Ok(Json(json!({
        "decision": handled.decision,
        "message": message,
        "task": handled.task,
        "skypilot_config": handled.config,
    })))
}

/// `GET /api/v1/exceptions?team=`.
#[utoipa::path(get, path = "/api/v1/exceptions", params(("team" = Option<String>, Query, description = "one team")), responses((status = 200, description = "exceptions, newest first")), security(("bearer" = [])))]
pub async fn list_exceptions(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
) -> Result<Json<Value>, DoorError> {
    let (c, store) = caller(&state, &headers).await?;
    let policy = state.policy();
    let q = query(raw.as_deref(), &["team"])?;
    let team = team_param(&policy, q.get("team"))?;
    let teams = teams_for(&c, &policy, Verb::Read, Resource::Exceptions, team)?;
    let all = store.list_exceptions(None).await.map_err(store_error)?;
    let now = now();
    let out: Vec<Value> = all
        .into_iter()
        .filter(|x| teams.contains(&x.team))
        .map(|x| json!({ "exception": x, "active": x.active_at(now) }))
        .collect();
    Ok(Json(json!({ "exceptions": out })))
}

/// `POST /api/v1/exceptions` as sent.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewExceptionRequest {
    /// The team.
    team: String,
    /// One user of it (default: the whole team).
    #[serde(default)]
    user: Option<String>,
    /// The rule to lift.
    rule: String,
    /// How many hours, at most `exceptions.max_hours`.
    hours: u32,
    /// Why (required; shown in every decision it lifts).
    reason: String,
}

/// `POST /api/v1/exceptions`: grants a time-limited exception (a team lead
/// only for the rules `exceptions.team_leads_may_lift` names; an admin for
/// any rule), audited with the actor.
#[utoipa::path(post, path = "/api/v1/exceptions", request_body = NewExceptionRequest, responses((status = 200, description = "the exception granted"), (status = 403, description = "the caller may not grant it")), security(("bearer" = [])))]
pub async fn grant_exception(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Value>, DoorError> {
    let (c, store) = caller(&state, &headers).await?;
    let policy = state.policy();
    let settings = state.settings();
    let req: NewExceptionRequest = json_body(
        body,
        r#"{"team": "ml", "rule": "gpu-cap", "hours": 24, "reason": "deadline"}"#,
    )?;
    let team = team_param(&policy, Some(&req.team))?
        .ok_or_else(|| DoorError::bad("`team` is required"))?;
    c.require(&policy, Verb::Create, Resource::Exceptions, &team)?;
    let rule = req.rule.trim().to_owned();
    ExceptionSettings::liftable(&policy, &rule)
        .map_err(|e| DoorError::bad(format!("`rule`: {e}")))?;
    let admin = c
        .review(&policy, Verb::Create, Resource::Policy, &team)
        .allowed;
    if !admin && !settings.exceptions.team_leads_may_lift.contains(&rule) {
        return Err(DoorError::Forbidden(format!(
            "{} is `team-lead` here, which may lift only the rules `exceptions.team_leads_may_lift` names ({}); ask a platform admin",
            c.describe(),
            settings.exceptions.team_leads_may_lift.join(", ")
        )));
    }
    let length = std::time::Duration::from_secs(u64::from(req.hours) * 3600);
    if length.is_zero() || length > settings.exceptions.max {
        return Err(DoorError::bad(format!(
            "`hours` must be 1 to {} (`exceptions.max_hours`)",
            settings.exceptions.max.as_secs() / 3600
        )));
    }
    let reason = req.reason.trim();
    if reason.is_empty() || reason.chars().count() > 500 {
        return Err(DoorError::bad(
            "`reason`: say why, in at most 500 characters",
        ));
    }
    if let Some(u) = &req.user {
        if u.trim().is_empty() || u.chars().count() > 128 || u.chars().any(char::is_control) {
            return Err(DoorError::bad(
                "`user`: 1 to 128 characters, no control characters",
            ));
        }
    }
    let now = now();
    let granted = store
        .grant_exception(
            NewException {
                team,
                user: req.user.map(|u| u.trim().to_owned()),
                rule,
                reason: reason.to_owned(),
                granted_by: actor(&c),
                until: UnixMicros::from_micros(
                    now.micros()
                        .saturating_add(i64::try_from(length.as_micros()).unwrap_or(i64::MAX)),
                ),
            },
            now,
        )
        .await
        .map_err(store_error)?;
    Ok(Json(json!({ "granted": granted })))
}

/// `DELETE /api/v1/exceptions/{id}`: ends an exception now.
#[utoipa::path(delete, path = "/api/v1/exceptions/{id}", params(("id" = i64, Path)), responses((status = 200, description = "the exception revoked"), (status = 404, description = "no such exception")), security(("bearer" = [])))]
pub async fn revoke_exception(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Path(id): Path<i64>,
) -> Result<Json<Value>, DoorError> {
    let (c, store) = caller(&state, &headers).await?;
    let policy = state.policy();
    let all = store.list_exceptions(None).await.map_err(store_error)?;
    let missing = || DoorError::NotFound {
        code: "no_such_exception",
        msg: format!("no exception has id {id} in a team you may see"),
    };
    let x = all.into_iter().find(|x| x.id == id).ok_or_else(missing)?;
    c.require(&policy, Verb::Create, Resource::Exceptions, &x.team)?;
    let revoked = store
        .revoke_exception(id, now())
        .await
        .map_err(|e| match e {
            warden_store::ExceptionError::Store(e) => store_error(e),
            warden_store::ExceptionError::NotFound(_) => missing(),
            other => DoorError::Conflict(other.to_string()),
        })?;
    Ok(Json(json!({ "revoked": revoked, "by": actor(&c) })))
}
