//! The upstream Vast API (Vast.ai, or the simulator): the calls the door
//! makes with Warden's own key, each bounded by the configured time-out.
//!
//! The key is sent only in the `Authorization` header; no error, log line
//! or answer holds it, and `users/current` (whose answer carries the key)
//! is never called.

use std::time::Duration;

use reqwest::{Method, StatusCode, Url};
use serde_json::{json, Map, Value};

use crate::http_client::transport_detail;
use crate::secret::Secret;

/// A row of an offer or instance listing.
pub type Row = Map<String, Value>;

/// Page size of the instance listing (the CLI's own, the most Vast was
/// seen to serve).
const PAGE: usize = 25;
/// Most pages read for one listing: 25,000 instances.
const MAX_PAGES: usize = 1000;

/// Why an upstream call did not give an answer to use.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    /// No answer within the time-out.
    #[error("the Vast API did not answer {what} within {secs} s")]
    Timeout {
        /// The call.
        what: &'static str,
        /// The time-out.
        secs: u64,
    },
    /// No answer at all: connection refused or closed.
    #[error("the Vast API could not be reached for {what}: {detail}")]
    Unreachable {
        /// The call.
        what: &'static str,
        /// What the transport said (no URL, which may hold nothing secret
        /// but is not needed either).
        detail: String,
    },
    /// An HTTP error status.
    #[error("the Vast API answered {what} with HTTP {status}")]
    Status {
        /// The call.
        what: &'static str,
        /// The status.
        status: u16,
        /// The body, as JSON when it was JSON.
        body: Value,
    },
    /// A 2xx answer that is not what the call returns.
    #[error("the Vast API answered {what} with something unexpected: {detail}")]
    BadAnswer {
        /// The call.
        what: &'static str,
        /// What was wrong.
        detail: String,
    },
}

impl UpstreamError {
    /// Whether the upstream certainly did not perform the call: it refused
    /// it with a 4xx. A 5xx, a time-out or a dropped connection may come
    /// after the action was performed.
    pub fn is_definite_refusal(&self) -> bool {
        matches!(self, UpstreamError::Status { status, .. } if (400..500).contains(status))
    }
}

/// A client of one upstream.
#[derive(Debug, Clone)]
pub struct Upstream {
    http: reqwest::Client,
    base: String,
    key: Secret,
    timeout: Duration,
}

impl Upstream {
    /// A client of the API at `base` (`http(s)://host[:port][/prefix]`).
    pub fn new(base: &str, key: Secret, timeout: Duration) -> Result<Upstream, String> {
        let base = base.trim_end_matches('/').to_owned();
        Url::parse(&base).map_err(|e| format!("`{base}` is not a URL: {e}"))?;
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout.min(Duration::from_secs(10)))
            .user_agent(concat!("warden/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| format!("cannot build the HTTP client: {e}"))?;
        Ok(Upstream {
            http,
            base,
            key,
            timeout,
        })
    }

    /// The base URL.
    pub fn base(&self) -> &str {
        &self.base
    }

    async fn call(
        &self,
        what: &'static str,
        method: Method,
        path: &str,
        query: &[(&str, String)],
        body: Option<&Value>,
        auth: bool,
    ) -> Result<Value, UpstreamError> {
        let bytes = self.send(what, method, path, query, body, auth).await?;
        serde_json::from_slice(&bytes).map_err(|_| UpstreamError::BadAnswer {
            what,
            detail: "a success with a body that is not JSON".to_owned(),
        })
    }

    /// Sends one request; the body of a 2xx answer, else the error.
    async fn send(
        &self,
        what: &'static str,
        method: Method,
        path: &str,
        query: &[(&str, String)],
        body: Option<&Value>,
        auth: bool,
    ) -> Result<axum::body::Bytes, UpstreamError> {
        let mut url =
            Url::parse(&format!("{}{path}", self.base)).map_err(|e| UpstreamError::BadAnswer {
                what,
                detail: format!("bad URL: {e}"),
            })?;
        if !query.is_empty() {
            url.query_pairs_mut()
                .extend_pairs(query.iter().map(|(k, v)| (*k, v.as_str())));
        }
        let mut req = self.http.request(method, url);
        if auth {
            req = req.header(
                reqwest::header::AUTHORIZATION,
                format!("Bearer {}", self.key.expose()),
            );
        }
        if let Some(body) = body {
            req = req
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(body.to_string());
        }
        let fail = |e: reqwest::Error| {
            if e.is_timeout() {
                UpstreamError::Timeout {
                    what,
                    secs: self.timeout.as_secs(),
                }
            } else {
                UpstreamError::Unreachable {
                    what,
                    detail: transport_detail(e),
                }
            }
        };
        let resp = req.send().await.map_err(fail)?;
        let status = resp.status();
        let bytes = resp.bytes().await.map_err(fail)?;
        if !status.is_success() {
            let parsed: Option<Value> = serde_json::from_slice(&bytes).ok();
            let mut body = parsed.unwrap_or_else(|| {
                Value::String(String::from_utf8_lossy(&bytes).chars().take(500).collect())
            });
            if let Some(obj) = body.as_object_mut() {
                obj.remove("api_key");
            }
            return Err(UpstreamError::Status {
                what,
                status: status.as_u16(),
                body,
            });
        }
        Ok(bytes)
    }

    /// `GET /api/v0/gpu_names/unique/`: the GPU model names on offer.
    pub async fn gpu_names(&self) -> Result<Vec<String>, UpstreamError> {
        let what = "the GPU name list";
        let v = self
            .call(
                what,
                Method::GET,
                "/api/v0/gpu_names/unique/",
                &[],
                None,
                false,
            )
            .await?;
        v.get("gpu_names")
            .and_then(Value::as_array)
            .map(|names| {
                names
                    .iter()
                    .filter_map(|n| n.as_str().map(str::to_owned))
                    .collect()
            })
            .ok_or(UpstreamError::BadAnswer {
                what,
                detail: "no `gpu_names` list".to_owned(),
            })
    }

    /// `POST /api/v0/bundles/` with `query`: the matching offers.
    pub async fn search(&self, query: &Value) -> Result<Vec<Row>, UpstreamError> {
        let what = "an offer search";
        let v = self
            .call(
                what,
                Method::POST,
                "/api/v0/bundles/",
                &[],
                Some(query),
                true,
            )
            .await?;
        rows(v, "offers", what)
    }

    /// `POST /api/v0/bundles/` with `query`: the answer's JSON text.
    pub async fn search_raw(&self, query: &Value) -> Result<axum::body::Bytes, UpstreamError> {
        self.send(
            "an offer search",
            Method::POST,
            "/api/v0/bundles/",
            &[],
            Some(query),
            true,
        )
        .await
    }

    /// One offer by id, priced for `disk_gb` of storage, on demand.
    pub async fn offer(&self, id: u64, disk_gb: f64) -> Result<Option<Row>, UpstreamError> {
        let query = json!({
            "id": {"eq": id},
            "type": "on-demand",
            "allocated_storage": disk_gb,
            "limit": 1,
        });
        let offers = self.search(&query).await?;
        Ok(offers
            .into_iter()
            .find(|o| o.get("id").and_then(Value::as_u64) == Some(id)))
    }

    /// `PUT /api/v0/asks/{offer}/`: rents the offer.
    pub async fn create(&self, offer: u64, body: &Value) -> Result<Value, UpstreamError> {
        self.call(
            "the create",
            Method::PUT,
            &format!("/api/v0/asks/{offer}/"),
            &[],
            Some(body),
            true,
        )
        .await
    }

    /// Every instance of the account, page by page (`GET /api/v1/instances/`),
    /// filtered and ordered upstream as given.
    pub async fn instances(
        &self,
        select_filters: Option<&Value>,
        order_by: Option<&Value>,
    ) -> Result<Vec<Row>, UpstreamError> {
        let what = "the instance list";
        let filters = select_filters.cloned().unwrap_or_else(|| json!({}));
        let order = order_by
            .cloned()
            .unwrap_or_else(|| json!([{"col": "id", "dir": "asc"}]));
        let mut out = Vec::new();
        let mut token: Option<String> = None;
        for _ in 0..MAX_PAGES {
            let mut query = vec![
                ("select_filters", filters.to_string()),
                ("order_by", order.to_string()),
                ("limit", PAGE.to_string()),
            ];
            if let Some(t) = &token {
                query.push(("after_token", t.clone()));
            }
            let v = self
                .call(what, Method::GET, "/api/v1/instances/", &query, None, true)
                .await?;
            token = match v.get("next_token") {
                Some(Value::String(s)) if !s.is_empty() => Some(s.clone()),
                Some(Value::Number(n)) => Some(n.to_string()),
                _ => None,
            };
            out.extend(rows(v, "instances", what)?);
            if token.is_none() {
                return Ok(out);
            }
        }
        Err(UpstreamError::BadAnswer {
            what,
            detail: format!("more than {MAX_PAGES} pages"),
        })
    }

    /// `GET /api/v0/instances/{id}/`: one instance, `None` if there is none.
    pub async fn instance(&self, id: u64) -> Result<Option<Row>, UpstreamError> {
        let what = "an instance";
        let v = self
            .call(
                what,
                Method::GET,
                &format!("/api/v0/instances/{id}/"),
                &[("owner", "me".to_owned())],
                None,
                true,
            )
            .await;
        match v {
            Ok(v) => match v.get("instances") {
                Some(Value::Object(row)) => Ok(Some(row.clone())),
                Some(Value::Null) | None => Ok(None),
                Some(other) => Err(UpstreamError::BadAnswer {
                    what,
                    detail: format!("`instances` is {other}"),
                }),
            },
            Err(UpstreamError::Status { status: 404, .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// `PUT /api/v0/instances/{id}/`: start, stop or label.
    pub async fn manage(&self, id: u64, body: &Value) -> Result<Value, UpstreamError> {
        self.call(
            "a start, stop or label",
            Method::PUT,
            &format!("/api/v0/instances/{id}/"),
            &[],
            Some(body),
            true,
        )
        .await
    }

    /// `DELETE /api/v0/instances/{id}/`.
    pub async fn destroy(&self, id: u64) -> Result<Value, UpstreamError> {
        self.call(
            "the destroy",
            Method::DELETE,
            &format!("/api/v0/instances/{id}/"),
            &[],
            Some(&json!({})),
            true,
        )
        .await
    }
}

fn rows(v: Value, key: &str, what: &'static str) -> Result<Vec<Row>, UpstreamError> {
    match v {
        Value::Object(mut obj) => match obj.remove(key) {
            Some(Value::Array(items)) => Ok(items
                .into_iter()
                .filter_map(|i| match i {
                    Value::Object(row) => Some(row),
                    _ => None,
                })
                .collect()),
            _ => Err(UpstreamError::BadAnswer {
                what,
                detail: format!("no `{key}` list"),
            }),
        },
        _ => Err(UpstreamError::BadAnswer {
            what,
            detail: "not a JSON object".to_owned(),
        }),
    }
}

/// The status an upstream refusal is passed on with: a 4xx that is not
/// about Warden's own key (401/403 mean Warden is misconfigured: 502).
pub fn passable(status: u16) -> Option<StatusCode> {
    match status {
        401 | 403 | 407 | 429 => None,
        400..=499 => StatusCode::from_u16(status).ok(),
        _ => None,
    }
}
