//! How the Vast door renders the one HTTP error type ([`DoorError`]):
//! Vast's own error shape, `{"success": false, "error": CODE, "msg": TEXT}`,
//! because the `vastai` CLI prints `msg` (and exits 0, so `msg` is all a
//! user sees).
//!
//! Status choice matters: the CLI retries 429, 502, 503 and 504 (three
//! times, also for creates), so refusals are 4xx and never one of those.
//! 502 and 504 are kept for upstream failures, where a retry is what the
//! user wants and the create path is made safe to repeat.

use axum::http::header;
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};

pub use crate::error::DoorError;

/// Vast's error code for an error.
pub fn vast_code(e: &DoorError) -> &'static str {
    match e {
        DoorError::Unauthorized(_) => "invalid_user_key",
        DoorError::Denied(_) => "denied_by_warden",
        DoorError::Forbidden(_) => "forbidden_by_role",
        DoorError::NotSupported(_) => "not_supported_by_warden",
        DoorError::NotFound { code, .. } => code,
        DoorError::Conflict(_) => "in_progress",
        DoorError::BadRequest(_) | DoorError::PayloadTooLarge { .. } => "invalid_args",
        DoorError::UpstreamRefused { .. } => "upstream_refused",
        DoorError::UpstreamFailed(_) => "upstream_error",
        DoorError::UpstreamTimeout(_) => "upstream_timeout",
        DoorError::Unavailable(_) | DoorError::StoreFailure(_) => "warden_unavailable",
        DoorError::Internal(_) => "internal_error",
    }
}

/// The JSON body the Vast door answers for an error.
pub fn vast_body(e: &DoorError) -> Value {
    match e {
        DoorError::UpstreamRefused { body, .. } if body.get("msg").is_some() => body.clone(),
        DoorError::UpstreamRefused { status, body } => json!({
            "success": false,
            "error": "upstream_refused",
            "msg": format!("the Vast API refused the request (HTTP {status}): {body}"),
        }),
        DoorError::Internal(_) => json!({
            "success": false,
            "error": vast_code(e),
            "msg": "Warden hit an internal error; the request was not performed. Check Warden's log.",
        }),
        other => json!({"success": false, "error": vast_code(other), "msg": other.to_string()}),
    }
}

/// The Vast door's answer for an error: its JSON shape, with the status;
/// store failures and 5xx are logged.
pub fn vast_response(e: DoorError) -> Response {
    let status = e.status_code();
    if let DoorError::StoreFailure(_) = e {
        tracing::error!(target: "warden::vast", status = status.as_u16(), error = %e, "store failure: request refused undecided (fail closed)");
    } else if status.is_server_error() {
        tracing::error!(target: "warden::vast", status = status.as_u16(), error = %e, "vast door error");
    }
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        vast_body(&e).to_string(),
    )
        .into_response()
}

impl From<super::request::RequestError> for DoorError {
    fn from(e: super::request::RequestError) -> Self {
        DoorError::BadRequest(e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use axum::http::StatusCode;

    use super::*;

    #[test]
    fn refusals_are_never_statuses_the_cli_retries() {
        let retried = [429, 502, 503, 504];
        for e in [
            DoorError::Unauthorized("x".into()),
            DoorError::Denied("x".into()),
            DoorError::Forbidden("x".into()),
            DoorError::NotSupported("x".into()),
            DoorError::NotFound {
                code: "no_such_instance",
                msg: "x".into(),
            },
            DoorError::Conflict("x".into()),
            DoorError::bad("x"),
        ] {
            assert!(!retried.contains(&e.status_code().as_u16()), "{e:?}");
            assert_ne!(e.status_code(), StatusCode::INTERNAL_SERVER_ERROR);
            assert_eq!(vast_body(&e)["success"], false);
            assert_eq!(vast_body(&e)["msg"], "x");
        }
        let internal = vast_body(&DoorError::Internal("secret detail".into()));
        assert!(!internal.to_string().contains("secret detail"));
    }
}
