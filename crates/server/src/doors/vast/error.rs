//! The Vast door's one error type. Every answer is Vast's own error shape,
//! `{"success": false, "error": CODE, "msg": TEXT}`, because the `vastai`
//! CLI prints `msg` (and exits 0, so `msg` is all a user sees).
//!
//! Status choice matters: the CLI retries 429, 502, 503 and 504 (three
//! times, also for creates), so refusals are 4xx and never one of those.
//! 502 and 504 are kept for upstream failures, where a retry is what the
//! user wants and the create path is made safe to repeat.

use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};

/// An error the Vast door answers with.
#[derive(Debug, thiserror::Error)]
pub enum VastError {
    /// No key, or a key that is not valid (401).
    #[error("{0}")]
    Unauthorized(String),
    /// Policy, quota or budget said no (403).
    #[error("{0}")]
    Denied(String),
    /// A call Warden does not govern, so does not pass on (403).
    #[error("{0}")]
    NotSupported(String),
    /// An offer or instance the caller cannot use or see (404).
    #[error("{msg}")]
    NotFound {
        /// Vast's error code (`no_such_ask`, `no_such_instance`).
        code: &'static str,
        /// What to do.
        msg: String,
    },
    /// The same create is in progress (409).
    #[error("{0}")]
    Conflict(String),
    /// A malformed request (400).
    #[error("{0}")]
    BadRequest(String),
    /// The upstream refused the request itself (its 4xx, passed on).
    #[error("the Vast API answered HTTP {status}")]
    UpstreamRefused {
        /// The upstream's status.
        status: u16,
        /// The upstream's JSON body (never holding Warden's key).
        body: Value,
    },
    /// The upstream failed or answered nonsense (502).
    #[error("{0}")]
    UpstreamFailed(String),
    /// The upstream did not answer in time (504).
    #[error("{0}")]
    UpstreamTimeout(String),
    /// Warden cannot serve the request (no store configured): 503.
    #[error("{0}")]
    Unavailable(String),
    /// The store failed (unreachable, or a query failed): nothing was
    /// done, fail closed (503); logged as a store failure.
    #[error("{0}")]
    StoreFailure(String),
    /// A bug; logged, answered generically (500).
    #[error("internal error: {0}")]
    Internal(String),
}

impl VastError {
    /// A 400 with this message.
    pub fn bad(msg: impl Into<String>) -> Self {
        VastError::BadRequest(msg.into())
    }

    /// The answer to a store failure: it says when the store is
    /// unreachable (an outage), as the SkyPilot door does.
    pub fn store(e: &warden_store::StoreError) -> Self {
        VastError::StoreFailure(if e.is_unreachable() {
            format!("Warden's store is unreachable, so nothing was done (Warden fails closed); try again when it is back ({e})")
        } else {
            format!("Warden's store cannot be used ({e}); nothing was done, try again later")
        })
    }

    /// The HTTP status for this error.
    pub fn status_code(&self) -> StatusCode {
        match self {
            VastError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            VastError::Denied(_) | VastError::NotSupported(_) => StatusCode::FORBIDDEN,
            VastError::NotFound { .. } => StatusCode::NOT_FOUND,
            VastError::Conflict(_) => StatusCode::CONFLICT,
            VastError::BadRequest(_) => StatusCode::BAD_REQUEST,
            VastError::UpstreamRefused { status, .. } => {
                StatusCode::from_u16(*status).unwrap_or(StatusCode::BAD_REQUEST)
            }
            VastError::UpstreamFailed(_) => StatusCode::BAD_GATEWAY,
            VastError::UpstreamTimeout(_) => StatusCode::GATEWAY_TIMEOUT,
            VastError::Unavailable(_) | VastError::StoreFailure(_) => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            VastError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// Vast's error code for this error.
    pub fn code(&self) -> &'static str {
        match self {
            VastError::Unauthorized(_) => "invalid_user_key",
            VastError::Denied(_) => "denied_by_warden",
            VastError::NotSupported(_) => "not_supported_by_warden",
            VastError::NotFound { code, .. } => code,
            VastError::Conflict(_) => "in_progress",
            VastError::BadRequest(_) => "invalid_args",
            VastError::UpstreamRefused { .. } => "upstream_refused",
            VastError::UpstreamFailed(_) => "upstream_error",
            VastError::UpstreamTimeout(_) => "upstream_timeout",
            VastError::Unavailable(_) | VastError::StoreFailure(_) => "warden_unavailable",
            VastError::Internal(_) => "internal_error",
        }
    }

    /// The JSON body answered.
    pub fn body(&self) -> Value {
        match self {
            VastError::UpstreamRefused { body, .. } if body.get("msg").is_some() => body.clone(),
            VastError::UpstreamRefused { status, body } => json!({
                "success": false,
                "error": "upstream_refused",
                "msg": format!("the Vast API refused the request (HTTP {status}): {body}"),
            }),
            VastError::Internal(_) => json!({
                "success": false,
                "error": self.code(),
                "msg": "Warden hit an internal error; the request was not performed. Check Warden's log.",
            }),
            other => json!({"success": false, "error": other.code(), "msg": other.to_string()}),
        }
    }
}

impl From<crate::error::DoorError> for VastError {
    /// The gate's errors, in the Vast door's shape.
    fn from(e: crate::error::DoorError) -> Self {
        use crate::error::DoorError;
        match e {
            DoorError::StoreFailure(msg) => VastError::StoreFailure(msg),
            DoorError::BadRequest(msg) => VastError::BadRequest(msg),
            e @ DoorError::PayloadTooLarge { .. } => VastError::BadRequest(e.to_string()),
            DoorError::Unavailable(msg) => VastError::Unavailable(msg),
            DoorError::Internal(msg) => VastError::Internal(msg),
        }
    }
}

impl From<super::request::RequestError> for VastError {
    fn from(e: super::request::RequestError) -> Self {
        VastError::BadRequest(e.to_string())
    }
}

impl IntoResponse for VastError {
    fn into_response(self) -> Response {
        let status = self.status_code();
        if let VastError::StoreFailure(_) = self {
            tracing::error!(target: "warden::vast", status = status.as_u16(), error = %self, "store failure: request refused undecided (fail closed)");
        } else if status.is_server_error() {
            tracing::error!(target: "warden::vast", status = status.as_u16(), error = %self, "vast door error");
        }
        (
            status,
            [(header::CONTENT_TYPE, "application/json")],
            self.body().to_string(),
        )
            .into_response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_are_never_statuses_the_cli_retries() {
        let retried = [429, 502, 503, 504];
        for e in [
            VastError::Unauthorized("x".into()),
            VastError::Denied("x".into()),
            VastError::NotSupported("x".into()),
            VastError::NotFound {
                code: "no_such_instance",
                msg: "x".into(),
            },
            VastError::Conflict("x".into()),
            VastError::bad("x"),
        ] {
            assert!(!retried.contains(&e.status_code().as_u16()), "{e:?}");
            assert_eq!(e.body()["success"], false);
            assert_eq!(e.body()["msg"], "x");
        }
        let internal = VastError::Internal("secret detail".into()).body();
        assert!(!internal.to_string().contains("secret detail"));
    }

    #[test]
    fn an_unreachable_store_is_said_to_be_unreachable() {
        let down = VastError::store(&warden_store::StoreError::Unreachable(
            "connection refused".into(),
        ));
        assert_eq!(down.status_code(), StatusCode::SERVICE_UNAVAILABLE);
        assert!(
            down.to_string()
                .starts_with("Warden's store is unreachable, so nothing was done"),
            "{down}"
        );
        let closed = VastError::store(&warden_store::StoreError::Closed);
        assert!(
            closed
                .to_string()
                .starts_with("Warden's store cannot be used"),
            "{closed}"
        );
        assert!(matches!(closed, VastError::StoreFailure(_)));
    }
}
