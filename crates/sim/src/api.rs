//! The HTTP handlers: each extracts, calls the market, and answers in Vast's
//! wire format (JSON, `Content-Type: application/json` exactly).

use axum::body::Bytes;
use axum::extract::{FromRequestParts, Path, State};
use axum::http::request::Parts;
use axum::http::{header, Method, Uri};
use axum::Json;
use serde_json::{json, Map, Value};

use crate::catalog::usd;
use crate::error::ApiError;
use crate::market::CreateRequest;
use crate::query::{Filter, OfferQuery, Order};
use crate::SimState;

type Answer = Result<Json<Value>, ApiError>;

/// The caller's API key, once accepted: `Authorization: Bearer KEY` (what the
/// CLI sends) or, as older clients did, `?api_key=KEY`.
pub(crate) struct Caller(String);

impl FromRequestParts<SimState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, sim: &SimState) -> Result<Caller, ApiError> {
        let bearer = parts
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        let key = match bearer {
            Some(key) => Some(key.trim().to_owned()),
            None => query_param(&parts.uri, "api_key"),
        };
        match key {
            Some(key) if sim.accepts(&key) => Ok(Caller(key)),
            _ => Err(ApiError::Unauthorized),
        }
    }
}

/// Query parameters, decoded as form data (`+` is a space), as the CLI
/// encodes them: `quote_plus(json.dumps(v))`.
fn query_param(uri: &Uri, name: &str) -> Option<String> {
    form_urlencoded::parse(uri.query().unwrap_or_default().as_bytes())
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

fn query_json(uri: &Uri, name: &str) -> Result<Option<Value>, ApiError> {
    query_param(uri, name)
        .map(|text| {
            serde_json::from_str(&text)
                .map_err(|e| ApiError::bad(format!("query parameter `{name}` is not JSON: {e}")))
        })
        .transpose()
}

/// The JSON body; an empty body reads as `{}` (some clients DELETE without one).
fn body_json(body: &Bytes) -> Result<Value, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(json!({}));
    }
    serde_json::from_slice(body).map_err(|e| ApiError::bad(format!("the body is not JSON: {e}")))
}

fn path_id(raw: &str, what: &str) -> Result<u64, ApiError> {
    raw.parse()
        .map_err(|_| ApiError::bad(format!("`{raw}` is not a valid {what} id")))
}

fn ids(body: &Value, key: &str) -> Result<Vec<u64>, ApiError> {
    body.get(key)
        .and_then(Value::as_array)
        .and_then(|ids| ids.iter().map(Value::as_u64).collect::<Option<Vec<_>>>())
        .ok_or_else(|| ApiError::bad(format!("`{key}` must be a list of ids")))
}

fn success() -> Answer {
    Ok(Json(json!({"success": true})))
}

pub(crate) async fn show_user(State(sim): State<SimState>, Caller(key): Caller) -> Answer {
    let credit = usd(sim.credit_micros()) - usd(sim.spent_micros());
    Ok(Json(json!({
        "id": 1,
        "username": "warden-sim",
        "email": "sim@example.invalid",
        "fullname": "Warden Simulator",
        "balance": 0.0,
        "credit": credit,
        "can_pay": true,
        "has_billing": true,
        "host_agreement_accepted": false,
        "ssh_key": null,
        // Vast returns the caller's key here; the CLI strips it before display.
        "api_key": key,
    })))
}

pub(crate) async fn gpu_names(State(sim): State<SimState>) -> Json<Value> {
    Json(json!({"gpu_names": sim.gpu_names()}))
}

fn search(sim: &SimState, query: &Value) -> Answer {
    let query = OfferQuery::parse(query).map_err(ApiError::BadRequest)?;
    Ok(Json(json!({"offers": sim.market().search(&query)})))
}

/// `POST /bundles/`: the body is the query itself.
pub(crate) async fn search_bundles(State(sim): State<SimState>, _: Caller, body: Bytes) -> Answer {
    search(&sim, &body_json(&body)?)
}

/// `GET /bundles/?q=<json>`, as older clients searched.
pub(crate) async fn search_bundles_get(State(sim): State<SimState>, _: Caller, uri: Uri) -> Answer {
    search(&sim, &query_json(&uri, "q")?.unwrap_or_else(|| json!({})))
}

/// `PUT /search/asks/` (`search offers --new`): `{"select_cols": [...], "q": {...}}`.
pub(crate) async fn search_asks(State(sim): State<SimState>, _: Caller, body: Bytes) -> Answer {
    let body = body_json(&body)?;
    search(&sim, body.get("q").unwrap_or(&json!({})))
}

pub(crate) async fn create_instance(
    State(sim): State<SimState>,
    Caller(key): Caller,
    Path(offer): Path<String>,
    body: Bytes,
) -> Answer {
    let offer_id = path_id(&offer, "offer")?;
    let req = CreateRequest::parse(&body_json(&body)?)?;
    let now = sim.now();
    let id = sim.market().create(offer_id, &req, &key, now)?;
    Ok(Json(json!({"success": true, "new_contract": id})))
}

/// `POST /asks/bulk/`: the create body plus `ids`; all or none are created.
pub(crate) async fn create_instances(
    State(sim): State<SimState>,
    Caller(key): Caller,
    body: Bytes,
) -> Answer {
    let body = body_json(&body)?;
    let offer_ids = ids(&body, "ids")?;
    let req = CreateRequest::parse(&body)?;
    let now = sim.now();
    let created = sim.market().create_many(&offer_ids, &req, &key, now)?;
    Ok(Json(json!({"success": true, "new_contracts": created})))
}

/// `PUT /launch_instance/`: rents the best offer matching `q`.
pub(crate) async fn launch_instance(
    State(sim): State<SimState>,
    Caller(key): Caller,
    body: Bytes,
) -> Answer {
    let body = body_json(&body)?;
    let query =
        OfferQuery::parse(body.get("q").unwrap_or(&json!({}))).map_err(ApiError::BadRequest)?;
    let req = CreateRequest::parse(&body)?;
    let now = sim.now();
    let id = sim.market().launch(&query, &req, &key, now)?;
    Ok(Json(json!({"success": true, "new_contract": id})))
}

/// `GET /api/v1/instances/`: filtered, ordered, paged by `limit` and `after_token`.
pub(crate) async fn show_instances_v1(State(sim): State<SimState>, _: Caller, uri: Uri) -> Answer {
    let filter = match query_json(&uri, "select_filters")? {
        None | Some(Value::Null) => Filter::default(),
        Some(Value::Object(conds)) => Filter::parse(&conds, &[]).map_err(ApiError::BadRequest)?,
        Some(other) => {
            return Err(ApiError::bad(format!(
                "`select_filters` must be a JSON object, not {other}"
            )))
        }
    };
    let order = Order::from_cols(
        &query_json(&uri, "order_by")?.unwrap_or_else(|| json!([{"col": "id", "dir": "asc"}])),
    )
    .map_err(ApiError::BadRequest)?;
    let number = |name: &str, default: usize| match query_param(&uri, name) {
        None => Ok(default),
        Some(n) => n
            .parse::<usize>()
            .map_err(|_| ApiError::bad(format!("`{name}` must be a whole number, not `{n}`"))),
    };
    let limit = number("limit", 25)?.max(1);
    let offset = number("after_token", 0)?;
    let cols: Option<Vec<String>> = match query_json(&uri, "select_cols")? {
        Some(Value::Array(cols)) if !cols.iter().any(|c| c == "*") => Some(
            cols.iter()
                .filter_map(|c| Some(c.as_str()?.to_owned()))
                .collect(),
        ),
        _ => None,
    };
    let now = sim.now();
    let mut rows: Vec<_> = sim
        .market()
        .rows(now)
        .into_iter()
        .filter(|r| filter.matches(r))
        .collect();
    order.sort(&mut rows);
    let total = rows.len();
    let mut label_counts = Map::new();
    for label in rows.iter().filter_map(|r| r.get("label")?.as_str()) {
        let count = label_counts.get(label).and_then(Value::as_u64).unwrap_or(0);
        label_counts.insert(label.to_owned(), json!(count + 1));
    }
    let page: Vec<Value> = rows
        .into_iter()
        .skip(offset)
        .take(limit)
        .map(|mut row| {
            if let Some(cols) = &cols {
                row.retain(|k, _| cols.contains(k));
            }
            Value::Object(row)
        })
        .collect();
    let next = offset.saturating_add(limit);
    let next_token = if next < total {
        json!(next.to_string())
    } else {
        Value::Null
    };
    Ok(Json(
        json!({"instances": page, "next_token": next_token, "total_instances": total, "label_counts": label_counts}),
    ))
}

/// `GET /api/v0/instances/`: every live instance, unpaged.
pub(crate) async fn show_instances_v0(State(sim): State<SimState>, _: Caller) -> Answer {
    let now = sim.now();
    Ok(Json(json!({"instances": sim.market().rows(now)})))
}

/// `GET /instances/filters/`: the distinct status, verification and GPU combinations.
pub(crate) async fn instance_filters(State(sim): State<SimState>, _: Caller) -> Answer {
    let now = sim.now();
    let mut combos: Vec<Value> = sim
        .market()
        .rows(now)
        .iter()
        .map(|r| json!({"actual_status": r.get("actual_status"), "verification": r.get("verification"), "gpu_name": r.get("gpu_name")}))
        .collect();
    combos.sort_by_key(Value::to_string);
    combos.dedup();
    Ok(Json(json!({"filters": combos})))
}

/// `GET /instances/{id}/`: `{"instances": row}`, or `{"instances": null}` if there is none.
pub(crate) async fn show_instance(
    State(sim): State<SimState>,
    _: Caller,
    Path(id): Path<String>,
) -> Answer {
    let id = path_id(&id, "instance")?;
    let now = sim.now();
    Ok(Json(json!({"instances": sim.market().row(id, now)})))
}

/// Applies `{"state": "running"|"stopped"}` and/or `{"label": L}` to `ids`.
fn manage(sim: &SimState, ids: &[u64], body: &Value) -> Answer {
    let running = match body.get("state") {
        None => None,
        Some(s) if s == "running" => Some(true),
        Some(s) if s == "stopped" => Some(false),
        Some(other) => {
            return Err(ApiError::bad(format!(
                "`state` must be \"running\" or \"stopped\", not {other}"
            )))
        }
    };
    let label = body.get("label");
    if running.is_none() && label.is_none() {
        return Err(ApiError::bad(
            "nothing to change: send {\"state\": \"running\"|\"stopped\"} or {\"label\": \"...\"}",
        ));
    }
    let now = sim.now();
    let mut market = sim.market();
    if let Some(running) = running {
        market.set_running(ids, running, now)?;
    }
    if let Some(label) = label {
        for id in ids {
            market.set_label(*id, label.as_str().map(str::to_owned))?;
        }
    }
    success()
}

pub(crate) async fn manage_instance(
    State(sim): State<SimState>,
    _: Caller,
    Path(id): Path<String>,
    body: Bytes,
) -> Answer {
    let id = path_id(&id, "instance")?;
    manage(&sim, &[id], &body_json(&body)?)
}

/// `PUT /instances/` with `ids`: start or stop several at once.
pub(crate) async fn manage_instances(
    State(sim): State<SimState>,
    _: Caller,
    body: Bytes,
) -> Answer {
    let body = body_json(&body)?;
    manage(&sim, &ids(&body, "ids")?, &body)
}

pub(crate) async fn destroy_instance(
    State(sim): State<SimState>,
    _: Caller,
    Path(id): Path<String>,
) -> Answer {
    let id = path_id(&id, "instance")?;
    let now = sim.now();
    sim.market().destroy(&[id], now)?;
    success()
}

/// `DELETE /instances/` with `instance_ids`.
pub(crate) async fn destroy_instances(
    State(sim): State<SimState>,
    _: Caller,
    body: Bytes,
) -> Answer {
    let ids = ids(&body_json(&body)?, "instance_ids")?;
    let now = sim.now();
    sim.market().destroy(&ids, now)?;
    success()
}

pub(crate) async fn no_route(method: Method, uri: Uri) -> ApiError {
    ApiError::NoRoute(format!("{method} {}", uri.path()))
}
