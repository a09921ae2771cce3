//! A client for the one thing Warden reads from a SkyPilot API server: the
//! live cluster list (`sky status --all-users`, protocol in
//! `../shared/skypilot-api-status.md`, observed with SkyPilot 0.14.1).
//!
//! One poll is two exchanges:
//!
//! 1. `POST {url}/status` with `{"all_users": true, "refresh": "NONE", ...}`
//!    answers `200 null` and names the queued request in the
//!    `X-Skypilot-Request-ID` response header;
//! 2. `GET {url}/api/get?request_id=ID` long-polls until the request is done
//!    and answers its payload, whose `return_value` is a JSON *string*
//!    holding the cluster records. The server sets no time-out of its own,
//!    so each call has a read time-out and is retried with the same id.
//!
//! Secrets: the service-account token is sent only in the `Authorization`
//! header (marked sensitive), never in a body, a log line or an error; its
//! [`Token`] type has no `Display` and a redacted `Debug`.
//!
//! Transport: plain HTTP/1.1 over one TCP connection per exchange, with
//! hyper's connection API (hyper is already in the tree through axum). No
//! TLS: `https` URLs are refused at config load; see [`ApiUrl::parse`].

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Bytes;
use hyper::header::{self, HeaderName, HeaderValue};
use hyper::{Method, Request, StatusCode, Uri};
use hyper_util::rt::TokioIo;
use serde::{Deserialize, Serialize};
use tokio::net::TcpStream;

use crate::config::{SkypilotApi, TokenSource};

/// The SkyPilot API version Warden speaks (0.14.1's; the server accepts
/// clients back to 24 and down-converts answers for old ones).
pub const API_VERSION: &str = "62";
/// The SkyPilot release the protocol was observed with.
pub const SKYPILOT_VERSION: &str = "0.14.1";
/// How many times `GET /api/get` is tried for one request id before the poll
/// gives up (each try bounded by the client's time-out).
pub const API_GET_ATTEMPTS: u32 = 3;
/// The largest response body read; a status list of thousands of clusters
/// is a few MiB.
pub const MAX_BODY_BYTES: usize = 64 * 1024 * 1024;

const REQUEST_ID_HEADER: &str = "x-skypilot-request-id";
/// How much of an unexpected answer an error quotes.
const DETAIL_CHARS: usize = 300;

/// Why a URL cannot name a SkyPilot API server.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UrlError {
    /// Not a URL at all.
    #[error("`{url}` is not a URL; write e.g. `http://127.0.0.1:46580`")]
    Invalid {
        /// What was given.
        url: String,
    },
    /// An `https` URL: this build has no TLS.
    #[error("`https` is not supported yet (this build has no TLS stack); reach the API server over `http://` on a trusted network, e.g. a sidecar or `127.0.0.1` port-forward")]
    Https,
    /// A scheme other than `http`.
    #[error("scheme `{scheme}` is not supported; use `http://HOST:PORT`")]
    Scheme {
        /// The scheme given.
        scheme: String,
    },
    /// Credentials in the URL; the URL is not echoed, since it holds them.
    #[error("the URL carries credentials (`user:password@`); remove them and name the token with `token_env` or `token_file`")]
    UserInfo,
    /// A query or fragment, which the endpoints are appended after.
    #[error("`{url}` has a query or fragment; give the server's base URL only")]
    Query {
        /// What was given.
        url: String,
    },
}

/// The base URL of a SkyPilot API server: `http://HOST[:PORT][/PREFIX]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiUrl {
    /// `HOST:PORT`, as sent in the `Host` header.
    authority: String,
    /// `HOST:PORT` with the default port filled in, to connect to.
    connect: String,
    /// The path prefix without a trailing `/` (empty at the root).
    prefix: String,
}

impl ApiUrl {
    /// Parses a base URL. Only `http` is accepted: TLS would need a TLS
    /// stack (rustls) that this build does not include.
    pub fn parse(text: &str) -> Result<Self, UrlError> {
        let text = text.trim();
        let invalid = || UrlError::Invalid {
            url: text.to_owned(),
        };
        // Refuse credentials before anything can echo the URL.
        let after_scheme = text.split_once("://").map_or(text, |(_, rest)| rest);
        let authority_part = after_scheme
            .split(['/', '?', '#'])
            .next()
            .unwrap_or_default();
        if authority_part.contains('@') {
            return Err(UrlError::UserInfo);
        }
        let uri: Uri = text.parse().map_err(|_| invalid())?;
        match uri.scheme_str() {
            Some("http") => {}
            Some("https") => return Err(UrlError::Https),
            Some(other) => {
                return Err(UrlError::Scheme {
                    scheme: other.to_owned(),
                })
            }
            None => return Err(invalid()),
        }
        if uri.query().is_some() || text.contains('#') {
            return Err(UrlError::Query {
                url: text.to_owned(),
            });
        }
        let authority = uri.authority().ok_or_else(invalid)?;
        if authority.host().is_empty() {
            return Err(invalid());
        }
        let port = authority.port_u16().unwrap_or(80);
        Ok(Self {
            authority: authority.as_str().to_owned(),
            connect: format!("{}:{port}", authority.host()),
            prefix: uri.path().trim_end_matches('/').to_owned(),
        })
    }

    /// Whether the host is this machine (`127.0.0.1`, `::1`, `localhost`),
    /// where a token sent over plain HTTP stays on the machine.
    pub fn is_loopback(&self) -> bool {
        let host = self
            .connect
            .rsplit_once(':')
            .map_or(self.connect.as_str(), |(host, _)| host);
        let host = host.trim_start_matches('[').trim_end_matches(']');
        host.eq_ignore_ascii_case("localhost")
            || host
                .parse::<std::net::IpAddr>()
                .is_ok_and(|ip| ip.is_loopback())
    }

    /// `http://HOST:PORT/PREFIX{path}`, for messages.
    fn show(&self, path: &str) -> String {
        format!("http://{}{}{path}", self.authority, self.prefix)
    }
}

impl fmt::Display for ApiUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "http://{}{}", self.authority, self.prefix)
    }
}

/// A service-account token (`sky_...`), ready to send as a bearer token.
/// Never displayed: `Debug` prints `Token(<redacted>)`.
#[derive(Clone)]
pub struct Token(HeaderValue);

impl Token {
    /// A token from its text (surrounding white space is dropped). `source`
    /// names where it came from, for the error.
    pub fn new(text: &str, source: &str) -> Result<Self, TokenError> {
        let text = text.trim();
        if text.is_empty() {
            return Err(TokenError::Empty {
                source_name: source.to_owned(),
            });
        }
        let mut value =
            HeaderValue::from_str(&format!("Bearer {text}")).map_err(|_| TokenError::BadChars {
                source_name: source.to_owned(),
            })?;
        value.set_sensitive(true);
        Ok(Self(value))
    }

    /// Reads the token a config names: an environment variable, or a file
    /// that only its owner may read.
    pub fn read(source: &TokenSource) -> Result<Self, TokenError> {
        match source {
            TokenSource::Env(var) => {
                let text =
                    std::env::var(var).map_err(|_| TokenError::EnvMissing { var: var.clone() })?;
                Self::new(&text, &format!("environment variable `{var}`"))
            }
            TokenSource::File(path) => {
                check_private(path)?;
                let text = std::fs::read_to_string(path).map_err(|e| TokenError::FileRead {
                    path: path.clone(),
                    reason: e.to_string(),
                })?;
                Self::new(&text, &format!("token file `{}`", path.display()))
            }
        }
    }
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Token(<redacted>)")
    }
}

/// Refuses a token file that its group or others may access.
fn check_private(path: &Path) -> Result<(), TokenError> {
    use std::os::unix::fs::PermissionsExt as _;
    let meta = std::fs::metadata(path).map_err(|e| TokenError::FileRead {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })?;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(TokenError::FileMode {
            path: path.to_path_buf(),
            mode,
        });
    }
    Ok(())
}

/// Why the service-account token could not be read. No variant holds the
/// token or any part of it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// The environment variable is not set (or not UTF-8).
    #[error("skypilot_api.token_env: environment variable `{var}` is not set; export the service-account token (`sky_...`) in it")]
    EnvMissing {
        /// The variable's name.
        var: String,
    },
    /// The token file cannot be read.
    #[error("skypilot_api.token_file: cannot read `{}`: {reason}", path.display())]
    FileRead {
        /// The file.
        path: PathBuf,
        /// What the OS said.
        reason: String,
    },
    /// The token file is readable by others than its owner.
    #[error("skypilot_api.token_file: `{path}` is accessible by group or others (mode {mode:04o}); run `chmod 600 {path}`", path = path.display())]
    FileMode {
        /// The file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// The token is empty.
    #[error("skypilot_api: the token in {source_name} is empty")]
    Empty {
        /// Where it came from.
        source_name: String,
    },
    /// The token holds characters an HTTP header cannot carry.
    #[error("skypilot_api: the token in {source_name} contains characters not allowed in an HTTP header (a line break inside it?)")]
    BadChars {
        /// Where it came from.
        source_name: String,
    },
}

/// Why a poll of the API server failed. Messages name the URL and endpoint,
/// never the token.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The token could not be read.
    #[error(transparent)]
    Token(#[from] TokenError),
    /// No TCP connection.
    #[error("cannot connect to the SkyPilot API server at `{url}`: {reason}")]
    Connect {
        /// The server's base URL.
        url: String,
        /// What the OS said.
        reason: String,
    },
    /// The HTTP exchange broke off.
    #[error("`{method} {url}` failed: {reason}")]
    Exchange {
        /// `GET` or `POST`.
        method: &'static str,
        /// The endpoint's URL.
        url: String,
        /// What hyper said.
        reason: String,
    },
    /// No complete answer within the time-out.
    #[error("`{method} {url}` did not answer within {} s", after.as_secs_f64())]
    Timeout {
        /// `GET` or `POST`.
        method: &'static str,
        /// The endpoint's URL.
        url: String,
        /// The time-out.
        after: Duration,
    },
    /// The answer body was larger than [`MAX_BODY_BYTES`].
    #[error("`{method} {url}` answered more than {MAX_BODY_BYTES} bytes")]
    TooLarge {
        /// `GET` or `POST`.
        method: &'static str,
        /// The endpoint's URL.
        url: String,
    },
    /// The server refused the credentials.
    #[error("`{method} {url}` answered {status}: {detail}; check the service-account token named by `skypilot_api.token_env` or `skypilot_api.token_file` (a server with auth needs one, with at least the viewer role)")]
    Unauthorized {
        /// `GET` or `POST`.
        method: &'static str,
        /// The endpoint's URL.
        url: String,
        /// 401 or 403.
        status: u16,
        /// The server's `detail`, shortened.
        detail: String,
    },
    /// An HTTP status the protocol does not expect.
    #[error("`{method} {url}` answered {status}: {detail}")]
    Status {
        /// `GET` or `POST`.
        method: &'static str,
        /// The endpoint's URL.
        url: String,
        /// The status code.
        status: u16,
        /// The body, shortened.
        detail: String,
    },
    /// `POST /status` named no request.
    #[error("`POST {url}` answered without an `X-Skypilot-Request-ID` header; is this a SkyPilot API server?")]
    NoRequestId {
        /// The endpoint's URL.
        url: String,
    },
    /// The request id holds characters that cannot go in a query string.
    #[error("the API server named request `{id}`, which is not a request id")]
    BadRequestId {
        /// The id, with control characters escaped.
        id: String,
    },
    /// `GET /api/get` does not know the request (404).
    #[error("the API server no longer knows status request `{request_id}` (404)")]
    RequestNotFound {
        /// The request id.
        request_id: String,
    },
    /// The status request ran and did not succeed.
    #[error("status request `{request_id}` {status}: {kind}: {message}")]
    RequestFailed {
        /// The request id.
        request_id: String,
        /// `FAILED`, `CANCELLED`, ...
        status: String,
        /// The exception type, e.g. `RequestInterruptedError`.
        kind: String,
        /// The exception message, shortened.
        message: String,
    },
    /// An answer that does not decode as the protocol says.
    #[error("cannot decode {what}: {reason}")]
    Decode {
        /// What was being decoded.
        what: &'static str,
        /// What serde said.
        reason: String,
    },
}

/// A cluster's status as `/status` reports it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(into = "String")]
pub enum ClusterStatus {
    /// Provisioning, or found unhealthy.
    Init,
    /// Running.
    Up,
    /// Stopped: holds no GPUs (may still hold disks).
    Stopped,
    /// Stopping because of autostop; still holds its GPUs.
    Autostopping,
    /// A status this version does not know; counted as holding resources.
    Other(String),
}

impl ClusterStatus {
    fn parse(text: &str) -> Self {
        match text {
            "INIT" => Self::Init,
            "UP" => Self::Up,
            "STOPPED" => Self::Stopped,
            "AUTOSTOPPING" => Self::Autostopping,
            other => Self::Other(other.to_owned()),
        }
    }

    /// The status as SkyPilot spells it.
    pub fn as_str(&self) -> &str {
        match self {
            Self::Init => "INIT",
            Self::Up => "UP",
            Self::Stopped => "STOPPED",
            Self::Autostopping => "AUTOSTOPPING",
            Self::Other(s) => s,
        }
    }

    /// Whether a cluster in this status holds its GPUs: every status but
    /// `STOPPED` (an unknown one is assumed to, so quotas stay on the safe
    /// side).
    pub fn holds_gpus(&self) -> bool {
        !matches!(self, Self::Stopped)
    }
}

impl From<ClusterStatus> for String {
    fn from(s: ClusterStatus) -> Self {
        s.as_str().to_owned()
    }
}

impl<'de> Deserialize<'de> for ClusterStatus {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        Ok(Self::parse(&text))
    }
}

impl fmt::Display for ClusterStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One cluster record of `/status` (SkyPilot's `StatusResponse`), the fields
/// that matter for quotas. Unknown fields are ignored; only `name` and
/// `status` are required, so a server that leaves out the rest still syncs.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
pub struct Cluster {
    /// The cluster name (what the SkyPilot door names its allocation).
    pub name: String,
    /// Its status.
    pub status: ClusterStatus,
    /// The owner's SkyPilot user name.
    #[serde(default)]
    pub user_name: Option<String>,
    /// The owner's user hash.
    #[serde(default)]
    pub user_hash: Option<String>,
    /// The SkyPilot workspace it runs in.
    #[serde(default)]
    pub workspace: Option<String>,
    /// Number of nodes.
    #[serde(default)]
    pub nodes: Option<u64>,
    /// GPUs **per node** as a Python dict literal, e.g. `{'H100': 8}`,
    /// `{'T4': 0.5}`; absent or null for CPU clusters. See
    /// [`parse_accelerators`].
    #[serde(default)]
    pub accelerators: Option<String>,
    /// Cloud, e.g. `Kubernetes`, `AWS`.
    #[serde(default)]
    pub cloud: Option<String>,
    /// Region (or Kubernetes context).
    #[serde(default)]
    pub region: Option<String>,
    /// When it was launched, seconds since the epoch.
    #[serde(default)]
    pub launched_at: Option<i64>,
    /// Whether it is a managed job's or service's cluster.
    #[serde(default)]
    pub is_managed: bool,
    /// The short resources summary, e.g. `2x[spot](gpus=H100:8, ...)`.
    #[serde(default)]
    pub resources_str: Option<String>,
}

impl Cluster {
    /// Whether the cluster runs on spot capacity, as far as its resources
    /// summary says (`[spot]`, which SkyPilot prints for spot resources).
    pub fn is_spot(&self) -> bool {
        self.resources_str
            .as_deref()
            .is_some_and(|s| s.contains("[spot]"))
    }
}

/// An `accelerators` value that is not the dict literal SkyPilot prints.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("accelerators `{text}` is not a dict like `{{'H100': 8}}`: {problem}")]
pub struct AcceleratorsError {
    /// The text, shortened.
    pub text: String,
    /// What is wrong at which place.
    pub problem: String,
}

/// Parses the `accelerators` field: the `str()` of a Python dict from GPU
/// model to count per node, e.g. `{'H100': 8}`, `{'T4': 0.5}`, `{}`. Keys
/// may use either quote; counts are Python int or float literals.
pub fn parse_accelerators(text: &str) -> Result<Vec<(String, f64)>, AcceleratorsError> {
    let fail = |problem: String| AcceleratorsError {
        text: shorten(text),
        problem,
    };
    let mut p = Lexer {
        chars: text.char_indices().peekable(),
    };
    p.expect('{').map_err(fail)?;
    let mut out = Vec::new();
    loop {
        p.skip_ws();
        if p.eat('}') {
            break;
        }
        let key = p.string().map_err(fail)?;
        p.skip_ws();
        p.expect(':').map_err(fail)?;
        p.skip_ws();
        let count = p.number().map_err(fail)?;
        out.push((key, count));
        p.skip_ws();
        if p.eat(',') {
            continue;
        }
        p.skip_ws();
        p.expect('}').map_err(fail)?;
        break;
    }
    p.skip_ws();
    if let Some((at, c)) = p.chars.next() {
        return Err(fail(format!(
            "unexpected `{c}` at byte {at} after the dict"
        )));
    }
    Ok(out)
}

struct Lexer<'a> {
    chars: std::iter::Peekable<std::str::CharIndices<'a>>,
}

impl Lexer<'_> {
    fn skip_ws(&mut self) {
        while self.chars.next_if(|(_, c)| c.is_whitespace()).is_some() {}
    }

    fn eat(&mut self, want: char) -> bool {
        self.chars.next_if(|&(_, c)| c == want).is_some()
    }

    fn expect(&mut self, want: char) -> Result<(), String> {
        self.skip_ws();
        match self.chars.next() {
            Some((_, c)) if c == want => Ok(()),
            Some((at, c)) => Err(format!("expected `{want}` at byte {at}, found `{c}`")),
            None => Err(format!("expected `{want}`, found the end")),
        }
    }

    fn string(&mut self) -> Result<String, String> {
        let quote = match self.chars.next() {
            Some((_, q @ ('\'' | '"'))) => q,
            Some((at, c)) => {
                return Err(format!(
                    "expected a quoted GPU name at byte {at}, found `{c}`"
                ))
            }
            None => return Err("expected a quoted GPU name, found the end".to_owned()),
        };
        let mut out = String::new();
        loop {
            match self.chars.next() {
                Some((_, c)) if c == quote => return Ok(out),
                Some((_, '\\')) => match self.chars.next() {
                    Some((_, c)) => out.push(c),
                    None => break,
                },
                Some((_, c)) => out.push(c),
                None => break,
            }
        }
        Err("unterminated GPU name".to_owned())
    }

    fn number(&mut self) -> Result<f64, String> {
        let mut digits = String::new();
        let start = self.chars.peek().map(|&(at, _)| at);
        while let Some((_, c)) = self
            .chars
            .next_if(|(_, c)| c.is_ascii_alphanumeric() || matches!(c, '.' | '+' | '-' | '_'))
        {
            if c != '_' {
                digits.push(c);
            }
        }
        let at = start.map_or_else(|| "the end".to_owned(), |at| format!("byte {at}"));
        let n: f64 = digits
            .parse()
            .map_err(|_| format!("expected a GPU count at {at}, found `{digits}`"))?;
        if !n.is_finite() || n < 0.0 {
            return Err(format!(
                "GPU count `{digits}` at {at} is not a finite count"
            ));
        }
        Ok(n)
    }
}

/// The request body of `POST /status`: every user's clusters, from the
/// server's state without asking the clouds (`refresh: NONE`), without
/// credentials or pickled handles. No `env_vars`: the server then runs the
/// request as its own user (a present `env_vars` must carry a user id).
fn status_body() -> Bytes {
    Bytes::from_static(
        br#"{"cluster_names":null,"all_users":true,"refresh":"NONE","include_credentials":false,"include_handle":false,"summary_response":false}"#,
    )
}

/// What `GET /api/get` answers (or carries under `detail` with a 500).
#[derive(Debug, Deserialize)]
struct RequestPayload {
    #[serde(default)]
    status: Option<String>,
    #[serde(default)]
    return_value: Option<serde_json::Value>,
    #[serde(default)]
    error: Option<serde_json::Value>,
}

/// The `error` of a failed request: a JSON string with `type` and `message`.
#[derive(Debug, Default, Deserialize)]
struct RequestErrorInfo {
    #[serde(default, rename = "type")]
    kind: Option<String>,
    #[serde(default)]
    message: Option<String>,
}

/// The server's version, from `GET /api/health` (never needs auth).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
pub struct Health {
    /// `healthy` when the server is up.
    #[serde(default)]
    pub status: Option<String>,
    /// The server's API version, e.g. `62`.
    #[serde(default)]
    pub api_version: Option<String>,
    /// The SkyPilot release, e.g. `0.14.1`.
    #[serde(default)]
    pub version: Option<String>,
}

/// A client of one SkyPilot API server. Cheap to clone.
#[derive(Debug, Clone)]
pub struct SkypilotClient {
    url: ApiUrl,
    token: Option<Token>,
    timeout: Duration,
}

/// An answer, read whole.
struct Answer {
    status: StatusCode,
    request_id: Option<HeaderValue>,
    body: Bytes,
}

impl SkypilotClient {
    /// A client of the server at `url`; every exchange (connect, send, read
    /// the whole answer) is bounded by `timeout`.
    pub fn new(url: ApiUrl, token: Option<Token>, timeout: Duration) -> Self {
        Self {
            url,
            token,
            timeout,
        }
    }

    /// The client a config describes; reads the token now.
    pub fn from_config(api: &SkypilotApi) -> Result<Self, TokenError> {
        let token = api.token.as_ref().map(Token::read).transpose()?;
        Ok(Self::new(api.url.clone(), token, api.timeout))
    }

    /// The server's base URL.
    pub fn url(&self) -> &ApiUrl {
        &self.url
    }

    /// Whether requests carry a token.
    pub fn has_token(&self) -> bool {
        self.token.is_some()
    }

    /// `GET /api/health`: whether the server is up, and its version.
    pub async fn health(&self) -> Result<Health, ApiError> {
        let path = "/api/health";
        let answer = self.exchange(Method::GET, path, None).await?;
        self.check_status(&answer, "GET", path)?;
        serde_json::from_slice(&answer.body).map_err(|e| ApiError::Decode {
            what: "the `/api/health` answer",
            reason: e.to_string(),
        })
    }

    /// Every live cluster of every user the server shows (see the module
    /// doc for the blind spots).
    pub async fn status(&self) -> Result<Vec<Cluster>, ApiError> {
        let request_id = self.submit_status().await?;
        let mut attempt = 1;
        let payload = loop {
            match self.get_request(&request_id).await {
                Err(ApiError::Timeout { .. }) if attempt < API_GET_ATTEMPTS => {
                    attempt += 1;
                    tracing::debug!(
                        target: "warden::sync",
                        request_id = request_id.as_str(),
                        attempt,
                        "`/api/get` timed out; asking again"
                    );
                }
                other => break other?,
            }
        };
        decode_clusters(&request_id, payload)
    }

    /// `POST /status`; returns the request id.
    async fn submit_status(&self) -> Result<String, ApiError> {
        let path = "/status";
        let answer = self
            .exchange(Method::POST, path, Some(status_body()))
            .await?;
        self.check_status(&answer, "POST", path)?;
        let raw = answer
            .request_id
            .as_ref()
            .ok_or_else(|| ApiError::NoRequestId {
                url: self.url.show(path),
            })?;
        let id = String::from_utf8_lossy(raw.as_bytes());
        // It goes into a query string: accept what request ids look like.
        let plain = |b: u8| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.');
        if id.is_empty() || !id.bytes().all(plain) {
            return Err(ApiError::BadRequestId { id: shorten(&id) });
        }
        Ok(id.into_owned())
    }

    /// One `GET /api/get` for `request_id`.
    async fn get_request(&self, request_id: &str) -> Result<RequestPayload, ApiError> {
        let path = format!("/api/get?request_id={request_id}");
        let answer = self.exchange(Method::GET, &path, None).await?;
        let decode = |body: &[u8]| -> Result<serde_json::Value, ApiError> {
            serde_json::from_slice(body).map_err(|e| ApiError::Decode {
                what: "the `/api/get` answer",
                reason: e.to_string(),
            })
        };
        match answer.status {
            s if s.is_success() => {
                serde_json::from_value(decode(&answer.body)?).map_err(|e| ApiError::Decode {
                    what: "the `/api/get` answer",
                    reason: e.to_string(),
                })
            }
            StatusCode::NOT_FOUND => Err(ApiError::RequestNotFound {
                request_id: request_id.to_owned(),
            }),
            // A failed request comes back as a 500 with its payload under
            // `detail`.
            StatusCode::INTERNAL_SERVER_ERROR => {
                let detail = serde_json::from_slice::<serde_json::Value>(&answer.body)
                    .ok()
                    .and_then(|mut v| v.get_mut("detail").map(serde_json::Value::take))
                    .filter(|d| d.get("status").is_some());
                match detail {
                    Some(d) => serde_json::from_value(d).map_err(|e| ApiError::Decode {
                        what: "the `/api/get` failure",
                        reason: e.to_string(),
                    }),
                    None => Err(self.status_error(&answer, "GET", &path)),
                }
            }
            _ => Err(self.status_error(&answer, "GET", &path)),
        }
    }

    fn check_status(
        &self,
        answer: &Answer,
        method: &'static str,
        path: &str,
    ) -> Result<(), ApiError> {
        if answer.status.is_success() {
            Ok(())
        } else {
            Err(self.status_error(answer, method, path))
        }
    }

    fn status_error(&self, answer: &Answer, method: &'static str, path: &str) -> ApiError {
        let url = self.url.show(path);
        let status = answer.status.as_u16();
        let detail = detail_of(&answer.body);
        if matches!(
            answer.status,
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN
        ) {
            ApiError::Unauthorized {
                method,
                url,
                status,
                detail,
            }
        } else {
            ApiError::Status {
                method,
                url,
                status,
                detail,
            }
        }
    }

    /// One HTTP/1.1 exchange on a fresh connection, bounded by the time-out.
    async fn exchange(
        &self,
        method: Method,
        path: &str,
        body: Option<Bytes>,
    ) -> Result<Answer, ApiError> {
        let method_name = method_name(&method);
        let url = self.url.show(path);
        tokio::time::timeout(self.timeout, self.exchange_unbounded(method, path, body))
            .await
            .unwrap_or_else(|_| {
                Err(ApiError::Timeout {
                    method: method_name,
                    url,
                    after: self.timeout,
                })
            })
    }

    async fn exchange_unbounded(
        &self,
        method: Method,
        path: &str,
        body: Option<Bytes>,
    ) -> Result<Answer, ApiError> {
        let method_name = method_name(&method);
        let url = self.url.show(path);
        let broke = |e: &dyn fmt::Display| ApiError::Exchange {
            method: method_name,
            url: url.clone(),
            reason: e.to_string(),
        };
        let stream =
            TcpStream::connect(&self.url.connect)
                .await
                .map_err(|e| ApiError::Connect {
                    url: self.url.to_string(),
                    reason: e.to_string(),
                })?;
        // Best effort: a poll is two small exchanges.
        let _ = stream.set_nodelay(true);
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| broke(&e))?;

        let mut request = Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.url.prefix))
            .header(header::HOST, &self.url.authority)
            .header(header::ACCEPT, "application/json")
            .header(
                header::USER_AGENT,
                concat!("warden/", env!("CARGO_PKG_VERSION")),
            )
            .header(
                HeaderName::from_static("x-skypilot-api-version"),
                API_VERSION,
            )
            .header(
                HeaderName::from_static("x-skypilot-version"),
                SKYPILOT_VERSION,
            );
        if body.is_some() {
            request = request.header(header::CONTENT_TYPE, "application/json");
        }
        if let Some(token) = &self.token {
            request = request.header(header::AUTHORIZATION, token.0.clone());
        }
        let request = request
            .body(Full::new(body.unwrap_or_default()))
            .map_err(|e| broke(&e))?;

        let exchange = async {
            let response = sender.send_request(request).await.map_err(|e| broke(&e))?;
            let (parts, body) = response.into_parts();
            let body = Limited::new(body, MAX_BODY_BYTES)
                .collect()
                .await
                .map_err(|e| {
                    if e.is::<http_body_util::LengthLimitError>() {
                        ApiError::TooLarge {
                            method: method_name,
                            url: url.clone(),
                        }
                    } else {
                        broke(&e)
                    }
                })?
                .to_bytes();
            Ok(Answer {
                status: parts.status,
                request_id: parts.headers.get(REQUEST_ID_HEADER).cloned(),
                body,
            })
        };
        // The connection future does the I/O; it ends when the answer is
        // read and the sender is dropped, or when the connection breaks.
        tokio::pin!(connection);
        tokio::select! {
            answer = exchange => answer,
            ended = &mut connection => Err(match ended {
                Err(e) => broke(&e),
                Ok(()) => broke(&"the server closed the connection before answering"),
            }),
        }
    }
}

/// The clusters of a finished status request.
fn decode_clusters(request_id: &str, payload: RequestPayload) -> Result<Vec<Cluster>, ApiError> {
    let status = payload.status.unwrap_or_default();
    if status != "SUCCEEDED" {
        let info = match &payload.error {
            Some(serde_json::Value::String(text)) => {
                serde_json::from_str::<RequestErrorInfo>(text).unwrap_or_default()
            }
            Some(v @ serde_json::Value::Object(_)) => {
                serde_json::from_value(v.clone()).unwrap_or_default()
            }
            _ => RequestErrorInfo::default(),
        };
        return Err(ApiError::RequestFailed {
            request_id: request_id.to_owned(),
            status: if status.is_empty() {
                "ended without a status".to_owned()
            } else {
                status
            },
            kind: info.kind.unwrap_or_else(|| "unknown error".to_owned()),
            message: shorten(info.message.as_deref().unwrap_or("(no message)")),
        });
    }
    let decode = |e: serde_json::Error| ApiError::Decode {
        what: "the cluster list (`return_value`)",
        reason: e.to_string(),
    };
    match payload.return_value {
        // The documented form: a JSON string holding the list.
        Some(serde_json::Value::String(text)) => serde_json::from_str(&text).map_err(decode),
        Some(list @ serde_json::Value::Array(_)) => serde_json::from_value(list).map_err(decode),
        _ => Err(ApiError::Decode {
            what: "the cluster list (`return_value`)",
            reason: "it is missing or not a list".to_owned(),
        }),
    }
}

/// The `detail` of an error answer (or its body), shortened for a message.
fn detail_of(body: &[u8]) -> String {
    let parsed: Option<serde_json::Value> = serde_json::from_slice(body).ok();
    let text = match parsed.as_ref().and_then(|v| v.get("detail")) {
        Some(serde_json::Value::String(s)) => s.clone(),
        Some(other) => other.to_string(),
        None => String::from_utf8_lossy(body).into_owned(),
    };
    if text.trim().is_empty() {
        "(empty body)".to_owned()
    } else {
        shorten(text.trim())
    }
}

/// `text` cut to [`DETAIL_CHARS`] characters, control characters escaped.
fn shorten(text: &str) -> String {
    let mut out: String = text
        .chars()
        .take(DETAIL_CHARS)
        .flat_map(|c| {
            if c.is_control() {
                c.escape_default().collect::<Vec<_>>()
            } else {
                vec![c]
            }
        })
        .collect();
    if text.chars().count() > DETAIL_CHARS {
        out.push('…');
    }
    out
}

/// The name of a method this client sends (POST or GET), for messages.
fn method_name(method: &Method) -> &'static str {
    if *method == Method::POST {
        "POST"
    } else {
        "GET"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_plain_http_without_credentials() {
        let u = ApiUrl::parse("http://127.0.0.1:46580").unwrap();
        assert_eq!(u.connect, "127.0.0.1:46580");
        assert_eq!(u.prefix, "");
        assert_eq!(u.to_string(), "http://127.0.0.1:46580");
        let u = ApiUrl::parse("http://sky.internal/api/").unwrap();
        assert_eq!(u.connect, "sky.internal:80");
        assert_eq!(u.prefix, "/api");
        assert_eq!(u.show("/status"), "http://sky.internal/api/status");
        assert_eq!(
            ApiUrl::parse("https://sky.example.com"),
            Err(UrlError::Https)
        );
        let e = ApiUrl::parse("http://admin:hunter2@sky:46580").unwrap_err();
        assert_eq!(e, UrlError::UserInfo);
        assert!(!e.to_string().contains("hunter2"), "{e}");
        assert!(matches!(
            ApiUrl::parse("ftp://sky"),
            Err(UrlError::Scheme { .. })
        ));
        assert!(matches!(
            ApiUrl::parse("127.0.0.1:46580"),
            Err(UrlError::Invalid { .. } | UrlError::Scheme { .. })
        ));
        assert!(matches!(
            ApiUrl::parse("http://sky/?x=1"),
            Err(UrlError::Query { .. })
        ));
    }

    #[test]
    fn accelerators_parse_python_dict_literals() {
        assert_eq!(
            parse_accelerators("{'H100': 8}").unwrap(),
            [("H100".to_owned(), 8.0)]
        );
        assert_eq!(
            parse_accelerators("{'T4': 0.5}").unwrap(),
            [("T4".to_owned(), 0.5)]
        );
        assert_eq!(
            parse_accelerators(r#"{"A100-80GB": 2, 'L4': 1.0,}"#).unwrap(),
            [("A100-80GB".to_owned(), 2.0), ("L4".to_owned(), 1.0)]
        );
        assert_eq!(parse_accelerators(" { } ").unwrap(), []);
        for bad in [
            "H100:8",
            "{'H100' 8}",
            "{'H100': x}",
            "{'H100': 8",
            "{'H100': -1}",
            "{'H100': 8} x",
            "{H100: 8}",
        ] {
            let e = parse_accelerators(bad).unwrap_err();
            assert!(e.to_string().starts_with("accelerators `"), "{bad}: {e}");
        }
    }

    #[test]
    fn tokens_never_show() {
        let t = Token::new(" sky_secret\n", "test").unwrap();
        assert_eq!(format!("{t:?}"), "Token(<redacted>)");
        assert!(t.0.is_sensitive());
        assert_eq!(t.0.to_str().unwrap(), "Bearer sky_secret");
        assert!(matches!(
            Token::new("  ", "x"),
            Err(TokenError::Empty { .. })
        ));
        let e = Token::new("sky_a\nb", "x").unwrap_err();
        assert!(!e.to_string().contains("sky_a"), "{e}");
    }

    #[test]
    fn failed_requests_say_type_and_message() {
        let payload = RequestPayload {
            status: Some("FAILED".to_owned()),
            return_value: Some(serde_json::Value::String("null".to_owned())),
            error: Some(serde_json::Value::String(
                r#"{"object":"gAR=","type":"RequestInterruptedError","message":"server restarted"}"#
                    .to_owned(),
            )),
        };
        let e = decode_clusters("r-1", payload).unwrap_err().to_string();
        assert_eq!(
            e,
            "status request `r-1` FAILED: RequestInterruptedError: server restarted"
        );
    }
}
