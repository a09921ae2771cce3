//! The one HTTP error type: 4xx say precisely what was wrong and how to
//! fix it; 5xx are logged with detail and answered generically.

use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};

/// An error a door or endpoint answers with.
#[derive(Debug, thiserror::Error)]
pub enum DoorError {
    /// The request is malformed; the message says what to fix.
    #[error("{0}")]
    BadRequest(String),
    /// The body is over the size limit.
    #[error("the request body is larger than the {limit_mib} MiB limit")]
    PayloadTooLarge {
        /// The limit in MiB.
        limit_mib: usize,
    },
    /// Warden is not ready to decide (no policy loaded).
    #[error("Warden is not ready: {0}")]
    Unavailable(String),
    /// The store failed (unreachable, or a query failed): the request was
    /// not decided, and is refused (fail closed). 503 with the reason.
    #[error("{0}")]
    StoreFailure(String),
    /// A bug or an I/O failure; logged, answered generically.
    #[error("internal error: {0}")]
    Internal(String),
}

impl DoorError {
    /// A 400 with this message.
    pub fn bad(msg: impl Into<String>) -> Self {
        DoorError::BadRequest(msg.into())
    }

    /// The HTTP status for this error.
    pub fn status_code(&self) -> StatusCode {
        match self {
            DoorError::BadRequest(_) => StatusCode::BAD_REQUEST,
            DoorError::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            DoorError::Unavailable(_) | DoorError::StoreFailure(_) => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            DoorError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

impl IntoResponse for DoorError {
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
