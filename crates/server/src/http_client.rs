//! What Warden's outgoing HTTP clients share (the SkyPilot usage sync, the
//! Vast upstream): a bounded body read and an error text that says why a
//! transport failed without echoing the URL's query.

use std::error::Error as _;

/// Why an answer body could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReadError {
    /// The body is longer than the caller's bound.
    TooLarge,
    /// The connection broke while reading.
    Transport(String),
}

/// Reads a response body, refusing one longer than `max` bytes as soon as
/// it is (a `Content-Length` over the bound is refused before reading).
pub async fn read_limited(
    response: &mut reqwest::Response,
    max: usize,
) -> Result<Vec<u8>, ReadError> {
    if response.content_length().is_some_and(|n| n > max as u64) {
        return Err(ReadError::TooLarge);
    }
    let mut body = Vec::new();
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(|e| ReadError::Transport(transport_detail(e)))?
    {
        if body.len() + chunk.len() > max {
            return Err(ReadError::TooLarge);
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// A transport error with its causes (`error sending request: connection
/// refused`, `invalid peer certificate: UnknownIssuer`), without the URL.
pub fn transport_detail(e: reqwest::Error) -> String {
    let e = e.without_url();
    let mut detail = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        detail.push_str(": ");
        detail.push_str(&s.to_string());
        source = s.source();
    }
    detail
}
