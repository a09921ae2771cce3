//! The one HTTP error type of every door and endpoint: a status and a
//! precise message. 4xx say what was wrong and how to fix it; 5xx are
//! logged with detail and answered generically. Each door renders it in its
//! own wire format: `text/plain` here ([`IntoResponse`], the SkyPilot door
//! and the reports), Vast's JSON shape in
//! [`crate::doors::vast::error::vast_response`].

use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::Value;

/// An error a door or endpoint answers with.
#[derive(Debug, thiserror::Error)]
pub enum DoorError {
    /// The request is malformed; the message says what to fix (400).
    #[error("{0}")]
    BadRequest(String),
    /// The body is over the size limit (413).
    #[error("the request body is larger than the {limit_mib} MiB limit")]
    PayloadTooLarge {
        /// The limit in MiB.
        limit_mib: usize,
    },
    /// No key, or a key that is not valid (401).
    #[error("{0}")]
    Unauthorized(String),
    /// The caller is known, but its role does not allow this (403); the
    /// message names the role and what it may not do.
    #[error("{0}")]
    Forbidden(String),
    /// Policy, quota or budget said no, at a door that answers a denial
    /// as 403 (the SkyPilot door answers its denials itself).
    #[error("{0}")]
    Denied(String),
    /// A call Warden does not govern, so does not pass on (403).
    #[error("{0}")]
    NotSupported(String),
    /// Something the caller cannot use or see (404).
    #[error("{msg}")]
    NotFound {
        /// The marketplace's error code (`no_such_ask`, `no_such_instance`).
        code: &'static str,
        /// What to do.
        msg: String,
    },
    /// The same operation is in progress (409).
    #[error("{0}")]
    Conflict(String),
    /// The upstream refused the request itself (its 4xx, passed on).
    #[error("the upstream answered HTTP {status}")]
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
    /// Warden is not ready or not set up for this (503).
    #[error("Warden is not ready: {0}")]
    Unavailable(String),
    /// The store failed (unreachable, or a query failed): the request was
    /// not decided, and is refused (fail closed). 503 with the reason;
    /// logged as a store failure.
    #[error("{0}")]
    StoreFailure(String),
    /// A bug or an I/O failure; logged, answered generically (500).
    #[error("internal error: {0}")]
    Internal(String),
}

impl DoorError {
    /// A 400 with this message.
    pub fn bad(msg: impl Into<String>) -> Self {
        DoorError::BadRequest(msg.into())
    }

    /// The answer to a store failure, the same at every door: it says
    /// when the store is unreachable (an outage).
    pub fn store(e: &warden_store::StoreError) -> Self {
        DoorError::StoreFailure(if e.is_unreachable() {
            format!("Warden's store is unreachable, so nothing was done: the request was not decided and is refused until the store is back (Warden fails closed); try again then ({e})")
        } else {
            format!("Warden's store cannot be used ({e}); nothing was done: the request was not decided and is refused, try again later")
        })
    }

    /// The HTTP status for this error.
    pub fn status_code(&self) -> StatusCode {
        match self {
            DoorError::BadRequest(_) => StatusCode::BAD_REQUEST,
            DoorError::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            DoorError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            DoorError::Forbidden(_) | DoorError::Denied(_) | DoorError::NotSupported(_) => {
                StatusCode::FORBIDDEN
            }
            DoorError::NotFound { .. } => StatusCode::NOT_FOUND,
            DoorError::Conflict(_) => StatusCode::CONFLICT,
            DoorError::UpstreamRefused { status, .. } => {
                StatusCode::from_u16(*status).unwrap_or(StatusCode::BAD_REQUEST)
            }
            DoorError::UpstreamFailed(_) => StatusCode::BAD_GATEWAY,
            DoorError::UpstreamTimeout(_) => StatusCode::GATEWAY_TIMEOUT,
            DoorError::Unavailable(_) | DoorError::StoreFailure(_) => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            DoorError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

impl IntoResponse for DoorError {
    /// `text/plain`: `Warden: <message>`.
    fn into_response(self) -> Response {
        let status = self.status_code();
        let body = match &self {
            DoorError::Internal(detail) => {
                tracing::error!(error = %detail, "internal error");
                "Warden hit an internal error; the request was not decided. Check Warden's log."
                    .to_owned()
            }
            other => format!("Warden: {other}"),
        };
        (
            status,
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            body,
        )
            .into_response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unreachable_store_is_said_to_be_unreachable() {
        let down = DoorError::store(&warden_store::StoreError::Unreachable(
            "connection refused".into(),
        ));
        assert_eq!(down.status_code(), StatusCode::SERVICE_UNAVAILABLE);
        assert!(
            down.to_string()
                .starts_with("Warden's store is unreachable, so nothing was done"),
            "{down}"
        );
        let closed = DoorError::store(&warden_store::StoreError::Closed);
        assert!(
            closed
                .to_string()
                .starts_with("Warden's store cannot be used"),
            "{closed}"
        );
        assert!(matches!(closed, DoorError::StoreFailure(_)));
    }
}
