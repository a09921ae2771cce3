//! The report endpoints: the routes, their handlers, and the query-string
//! parsing they share (each parameter at most once, all of them known).

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::{RawQuery, State};
use axum::http::HeaderMap;
use axum::routing::get;
use axum::{Json, Router};
use warden_core::access::{Resource, Verb};
use warden_core::TeamName;
use warden_store::{Store, StoreError, UnixMicros};

use super::{
    chargeback, parse_month, resolve_period, spend_report, Chargeback, ParamError, PeriodParams,
    SpendBy, SpendQuery, SpendReport,
};
use crate::app::AppState;
use crate::auth::{self, Authenticated};
use crate::error::DoorError;

/// The report routes, for `app::router` to merge:
/// `GET /reports/spend` ([`spend`]) and `GET /reports/chargeback`
/// ([`chargeback_handler`]).
pub fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/reports/spend", get(spend))
        .route("/reports/chargeback", get(chargeback_handler))
}

/// `GET /reports/spend?period=&date=&month=&from=&until=&by=&team=`: a
/// [`SpendReport`] as JSON, at the current time.
pub async fn spend(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Result<Json<SpendReport>, DoorError> {
    let now = UnixMicros::from_system_time(std::time::SystemTime::now());
    let caller = caller(&state, &headers, now).await?;
    let params = QueryParams::parse(
        query.as_deref(),
        &["period", "date", "month", "from", "until", "by", "team"],
    )?;
    // Days and months in the budget time zone (`time_zone`).
    let tz = state.settings().time_zone.clone();
    let period = resolve_period(
        &PeriodParams {
            period: params.get("period"),
            date: params.get("date"),
            month: params.get("month"),
            from: params.get("from"),
            until: params.get("until"),
        },
        now,
        &tz,
    )
    .map_err(http_param)?;
    let by = match params.get("by") {
        Some(by) => SpendBy::parse(&by).map_err(http_param)?,
        None => SpendBy::Team,
    };
    let team = params
        .get("team")
        .map(|t| TeamName::parse(t.trim()))
        .transpose()
        .map_err(|e| DoorError::bad(format!("query parameter `team`: {e}")))?;
    let store = report_store(&state)?;
    let policy = state.policy();
    match &team {
        Some(team) => caller.require(&policy, Verb::Read, Resource::Spend, team)?,
        None => caller.require_all_teams(
            &policy,
            Verb::Read,
            Resource::Spend,
            &caller.one_team_hint(),
        )?,
    }
    let q = SpendQuery { period, by, team };
    spend_report(store, &policy, &q, now)
        .await
        .map(Json)
        .map_err(store_error)
}

/// `GET /reports/chargeback?month=2026-11`: a [`Chargeback`] as JSON, at
/// the current time.
pub async fn chargeback_handler(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Result<Json<Chargeback>, DoorError> {
    let now = UnixMicros::from_system_time(std::time::SystemTime::now());
    let caller = caller(&state, &headers, now).await?;
    caller.require_all_teams(
        &state.policy(),
        Verb::Read,
        Resource::Spend,
        "a chargeback covers every team; use an admin key or a role binding over every team (`teams: \"*\"`), or `/reports/spend?team=` for one team",
    )?;
    let params = QueryParams::parse(query.as_deref(), &["month"])?;
    let Some(month) = params.get("month") else {
        return Err(DoorError::bad(
            "query parameter `month` is required: the month to charge, e.g. `month=2026-11`",
        ));
    };
    let month = parse_month("month", &month, &state.settings().time_zone).map_err(http_param)?;
    let store = report_store(&state)?;
    chargeback(store, &month, now)
        .await
        .map(Json)
        .map_err(store_error)
}

/// The report endpoints answer only a caller with a key or, where
/// `identity.oidc` is configured, an OIDC token (401 otherwise).
async fn caller(
    state: &AppState,
    headers: &HeaderMap,
    now: UnixMicros,
) -> Result<Authenticated, DoorError> {
    let store = report_store(state)?;
    let oidc = state.oidc();
    auth::authenticate(store, oidc.as_deref(), headers, now, auth::NEEDS_KEY).await
}

fn report_store(state: &AppState) -> Result<&Store, DoorError> {
    state.store().ok_or_else(|| {
        DoorError::Unavailable(
            "reports read the store, and this Warden runs with `storage: none`; \
             name a store in the config's `storage` to keep allocations and report on them"
                .to_owned(),
        )
    })
}

fn http_param(e: ParamError) -> DoorError {
    DoorError::bad(format!("query parameter `{}`: {}", e.param, e.problem))
}

fn store_error(e: StoreError) -> DoorError {
    if e.is_unreachable() {
        DoorError::StoreFailure(format!("the report cannot be made now: {e}"))
    } else {
        DoorError::Internal(format!("report query failed: {e}"))
    }
}

/// A query string's parameters, each at most once, all of them known.
/// Empty values count as absent.
#[derive(Debug, Default)]
struct QueryParams(BTreeMap<String, String>);

impl QueryParams {
    fn parse(query: Option<&str>, known: &[&str]) -> Result<Self, DoorError> {
        let query = query.unwrap_or("");
        check_percent_escapes(query)?;
        let mut out = BTreeMap::new();
        for (key, value) in form_urlencoded::parse(query.as_bytes()) {
            // form_urlencoded replaces bytes that are not UTF-8 with U+FFFD.
            if (key.contains('\u{fffd}') || value.contains('\u{fffd}'))
                && !query.contains('\u{fffd}')
            {
                return Err(DoorError::bad(
                    "the query string is not valid percent-encoded UTF-8".to_owned(),
                ));
            }
            if !known.contains(&key.as_ref()) {
                return Err(DoorError::bad(format!(
                    "unknown query parameter `{}`; use {}",
                    key.escape_default(),
                    known
                        .iter()
                        .map(|k| format!("`{k}`"))
                        .collect::<Vec<_>>()
                        .join(", ")
                )));
            }
            if out.contains_key(key.as_ref()) {
                return Err(DoorError::bad(format!(
                    "query parameter `{key}` is given more than once; give it once"
                )));
            }
            out.insert(key.into_owned(), value.into_owned());
        }
        Ok(Self(out))
    }

    fn get(&self, key: &str) -> Option<String> {
        self.0.get(key).filter(|v| !v.trim().is_empty()).cloned()
    }
}

/// Refuses a `%` not followed by two hex digits, which form_urlencoded
/// would keep as it is.
fn check_percent_escapes(query: &str) -> Result<(), DoorError> {
    let bytes = query.as_bytes();
    for (at, _) in query.match_indices('%') {
        let hex = |i: usize| bytes.get(i).is_some_and(u8::is_ascii_hexdigit);
        if !(hex(at + 1) && hex(at + 2)) {
            let near: String = query.get(at..).unwrap_or("").chars().take(12).collect();
            return Err(DoorError::bad(format!(
                "the query string is not valid percent-encoded UTF-8 near `{}`",
                near.escape_default()
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_strings_are_decoded_and_checked() {
        let known = ["from", "by"];
        let q = QueryParams::parse(Some("from=2026-11-01T08%3A00%3A00Z&by=team"), &known).unwrap();
        assert_eq!(q.get("from").as_deref(), Some("2026-11-01T08:00:00Z"));
        assert_eq!(q.get("by").as_deref(), Some("team"));
        let q = QueryParams::parse(Some("from=&by=a+b"), &known).unwrap();
        assert_eq!((q.get("from"), q.get("by").as_deref()), (None, Some("a b")));
        let msg = |q| QueryParams::parse(Some(q), &known).unwrap_err().to_string();
        assert_eq!(
            msg("sort=spend"),
            "unknown query parameter `sort`; use `from`, `by`"
        );
        assert!(msg("by=team&by=user").contains("more than once"));
        assert!(msg("by=%zz").contains("percent-encoded"));
        assert!(msg("by=%ff").contains("percent-encoded"));
    }
}
