//! What Warden's outgoing HTTP clients share (the SkyPilot usage sync, the
//! Vast upstream, the OIDC key fetch): a bounded body read, an error text
//! that says why a transport failed without echoing the URL's query, and
//! reading a private CA's certificates.

use std::error::Error as _;
use std::path::{Path, PathBuf};

/// The largest CA file read (`skypilot_api.ca_file`,
/// `identity.oidc.ca_file`); a bundle of every public root is about 200 KiB.
pub const MAX_CA_FILE_BYTES: u64 = 1024 * 1024;

/// Why a CA file cannot be used; shown as `` `PATH` REASON ``.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{}` {reason}", path.display())]
pub struct CaFileError {
    /// The file.
    pub path: PathBuf,
    /// What is wrong with it.
    pub reason: String,
}

/// The certificates of a PEM file (one or more `CERTIFICATE` blocks), read
/// up to [`MAX_CA_FILE_BYTES`].
pub fn read_ca_file(path: &Path) -> Result<Vec<reqwest::Certificate>, CaFileError> {
    use std::io::Read as _;
    let fail = |reason: String| CaFileError {
        path: path.to_path_buf(),
        reason,
    };
    let file = std::fs::File::open(path).map_err(|e| fail(format!("cannot be read: {e}")))?;
    let mut pem = Vec::new();
    file.take(MAX_CA_FILE_BYTES + 1)
        .read_to_end(&mut pem)
        .map_err(|e| fail(format!("cannot be read: {e}")))?;
    if pem.len() as u64 > MAX_CA_FILE_BYTES {
        return Err(fail(format!(
            "is larger than {MAX_CA_FILE_BYTES} bytes; name a PEM file of CA certificates"
        )));
    }
    let certs = reqwest::Certificate::from_pem_bundle(&pem)
        .map_err(|e| fail(format!("is not a PEM certificate bundle: {e}")))?;
    if certs.is_empty() {
        return Err(fail(
            "holds no `-----BEGIN CERTIFICATE-----` block; name the PEM file of the CA that signed the server's certificate".to_owned(),
        ));
    }
    Ok(certs)
}

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
