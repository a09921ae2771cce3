//! The one error type of the simulated API, answered in Vast's error shape:
//! `{"success": false, "error": "<code>", "msg": "<text>"}` with
//! `Content-Type: application/json`. The `vastai` CLI prints `msg` to stderr
//! as `Failed with error <status>: <msg>`.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

/// An error the simulator answers with.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ApiError {
    /// No key, or a key the simulator was not configured with.
    #[error("Invalid user key")]
    Unauthorized,
    /// The request is malformed; the message says what to fix.
    #[error("{0}")]
    BadRequest(String),
    /// The offer does not exist or is rented.
    #[error("Instance type by id {0} is not available.")]
    NoSuchAsk(u64),
    /// No offer matched a `launch instance` query.
    #[error("no offer matches the launch query")]
    NoMatchingOffer,
    /// The instance does not exist (or was destroyed).
    #[error("Instance {0} not found.")]
    NoSuchInstance(u64),
    /// Nothing is served at this method and path.
    #[error("no route {0}")]
    NoRoute(String),
    /// A fault injected on purpose (see [`crate::Fault`]).
    #[error("simulated failure (injected fault, HTTP {})", .0.as_u16())]
    Injected(StatusCode),
    /// A hung request released because the simulator is stopping.
    #[error("the simulator is shutting down")]
    ShuttingDown,
}

impl ApiError {
    pub(crate) fn bad(msg: impl Into<String>) -> Self {
        ApiError::BadRequest(msg.into())
    }

    /// The HTTP status for this error.
    pub(crate) fn status_code(&self) -> StatusCode {
        match self {
            ApiError::Unauthorized => StatusCode::UNAUTHORIZED,
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::NoSuchAsk(_)
            | ApiError::NoMatchingOffer
            | ApiError::NoSuchInstance(_)
            | ApiError::NoRoute(_) => StatusCode::NOT_FOUND,
            ApiError::Injected(status) => *status,
            ApiError::ShuttingDown => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    /// Vast's machine-readable `error` code.
    fn code(&self) -> &'static str {
        match self {
            ApiError::Unauthorized => "invalid_user_key",
            ApiError::BadRequest(_) => "invalid_args",
            ApiError::NoSuchAsk(_) => "no_such_ask",
            ApiError::NoMatchingOffer => "no_such_ask",
            ApiError::NoSuchInstance(_) => "no_such_instance",
            ApiError::NoRoute(_) => "not_found",
            ApiError::Injected(_) => "injected_fault",
            ApiError::ShuttingDown => "shutting_down",
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status_code();
        let body = json!({"success": false, "error": self.code(), "msg": self.to_string()});
        (status, Json(body)).into_response()
    }
}
