//! The SkyPilot door: SkyPilot's RESTful admin-policy protocol (client 0.14.1).
//!
//! Request body: a JSON string literal whose content is a JSON object
//! (`task` and `skypilot_config` are YAML text; `request_name`,
//! `request_options`, `at_client_side`, `user` (YAML text), versions). A
//! plain JSON object is accepted too, and older clients send only `task` and
//! `skypilot_config`. Answer: 200 with a JSON string literal containing
//! `{"task", "skypilot_config"}`, or 400 `text/plain` with the reasons.
//! Documents are passed back byte-for-byte when no rule changed them; a
//! changed document is written as flow YAML that SkyPilot's loader (PyYAML,
//! YAML 1.1) reads back as the user's document plus Warden's changes
//! ([`yaml`]). Governed fields of the wrong type or value are refused
//! with a 400 naming the field; both JSON layers and every YAML document
//! have a nesting bound.
//!
//! The door is three steps around the gate ([`crate::gate`]): the wire
//! format (`wire.rs`: decode the body, encode the answer), normalization to
//! the core's launch request (`normalize.rs`) and applying the decision back
//! to the documents (`apply.rs`). [`yaml`] reads and writes the documents as
//! PyYAML does; [`sync`] is the door's lifecycle side, ending allocations
//! whose clusters are gone.

mod apply;
mod normalize;
pub mod sync;
pub(crate) mod wire;
pub(crate) use wire::json_depth_within;
pub mod yaml;

pub use apply::Rewrite;
pub use normalize::{normalize, Normalized, REQUEST_NAMES};
pub use wire::{
    encode_answer, parse_body, replay_body, replay_input, Answer, Handled, RequestOptions,
    SkyRequest, JSON_MAX_DEPTH,
};

use warden_core::Policy;

use crate::error::DoorError;

/// Handles one request body end to end: decode, normalize, decide, apply.
/// Pure: used by the HTTP door, `warden decide` and `warden test` alike.
pub fn handle(policy: &Policy, body: &[u8]) -> Result<Handled, DoorError> {
    let req = parse_body(body)?;
    handle_request(policy, req)
}

/// Handles a decoded request: normalize, then the gate's store-free
/// decision with this door's apply step.
pub fn handle_request(policy: &Policy, req: SkyRequest) -> Result<Handled, DoorError> {
    let Normalized {
        request,
        mut rewrite,
    } = normalize(policy, req)?;
    let (decision, applied) = crate::gate::decide(policy, &request, |d| {
        rewrite.apply(d).map(crate::gate::Applied::all)
    })?;
    Ok(match applied {
        Some(applied) => {
            let (task, config) = applied.value;
            Handled {
                answer: Answer::Allow(encode_answer(&task, &config)),
                request,
                decision,
                task,
                config,
            }
        }
        None => Handled {
            answer: Answer::Deny(decision.denial_message()),
            request,
            decision,
            task: rewrite.task_text,
            config: rewrite.config_text,
        },
    })
}

#[cfg(test)]
mod tests;
