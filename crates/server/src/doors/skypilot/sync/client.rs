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
//! [`Token`] type has no `Display` and a redacted `Debug`. It is read by the
//! one credential loader ([`crate::secret`]). The config refuses a token
//! sent over plain `http://` to a host that is not this machine.
//!
//! Transport: reqwest with rustls (the client the Vast door and the alert
//! webhooks use), so `https://` servers work; a private CA is trusted with
//! `skypilot_api.ca_file`. Redirects are not followed (the token must not
//! travel on to another host).

use std::fmt;
use std::path::Path;
use std::time::Duration;

use reqwest::header::{self, HeaderName, HeaderValue};
use reqwest::{Method, StatusCode, Url};
use serde::{Deserialize, Serialize};

use crate::config::SkypilotApi;
use crate::http_client::{read_limited, transport_detail, ReadError};
use crate::secret::{Credential, SecretError, SecretSource};

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
/// The largest CA file read (`skypilot_api.ca_file`).
pub const MAX_CA_FILE_BYTES: u64 = crate::http_client::MAX_CA_FILE_BYTES;
/// The service-account token, for messages.
pub const SKYPILOT_TOKEN: Credential = Credential {
    noun: "SkyPilot service-account token",
    example_env: "SKYPILOT_TOKEN",
};

const REQUEST_ID_HEADER: &str = "x-skypilot-request-id";
/// How much of an unexpected answer an error quotes.
const DETAIL_CHARS: usize = 300;

/// Why a URL cannot name a SkyPilot API server.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UrlError {
    /// Not a URL at all.
    #[error(
        "`{url}` is not a URL; write e.g. `https://sky.example.com` or `http://127.0.0.1:46580`"
    )]
    Invalid {
        /// What was given.
        url: String,
    },
    /// A scheme other than `http` and `https`.
    #[error("scheme `{scheme}` is not supported; use `https://HOST[:PORT]` (or `http://` to this machine)")]
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

/// The base URL of a SkyPilot API server:
/// `http(s)://HOST[:PORT][/PREFIX]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiUrl {
    /// The base, its path without a trailing `/`.
    base: Url,
}

impl ApiUrl {
    /// Parses a base URL (`http` or `https`, no credentials, query or
    /// fragment).
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
        if !text.contains("://") {
            return Err(invalid());
        }
        let mut base = Url::parse(text).map_err(|_| invalid())?;
        match base.scheme() {
            "http" | "https" => {}
            other => {
                return Err(UrlError::Scheme {
                    scheme: other.to_owned(),
                })
            }
        }
        if base.query().is_some() || base.fragment().is_some() || text.contains('#') {
            return Err(UrlError::Query {
                url: text.to_owned(),
            });
        }
        if base.host_str().is_none_or(str::is_empty) {
            return Err(invalid());
        }
        let path = base.path().trim_end_matches('/').to_owned();
        base.set_path(&path);
        Ok(Self { base })
    }

    /// Whether the URL is `https`.
    pub fn is_https(&self) -> bool {
        self.base.scheme() == "https"
    }

    /// Whether the host is this machine (`127.0.0.1`, `::1`, `localhost`),
    /// where a token sent over plain HTTP stays on the machine.
    pub fn is_loopback(&self) -> bool {
        let host = self.base.host_str().unwrap_or_default();
        let host = host.trim_start_matches('[').trim_end_matches(']');
        host.eq_ignore_ascii_case("localhost")
            || host
                .parse::<std::net::IpAddr>()
                .is_ok_and(|ip| ip.is_loopback())
    }

    /// `SCHEME://HOST:PORT/PREFIX{path}`: an endpoint's URL.
    fn show(&self, path: &str) -> String {
        format!("{self}{path}")
    }
}

impl fmt::Display for ApiUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.base.as_str().trim_end_matches('/'))
    }
}

/// A service-account token (`sky_...`), ready to send as a bearer token.
/// Never displayed: `Debug` prints `Token(<redacted>)`.
#[derive(Clone)]
pub struct Token(HeaderValue);

impl Token {
    /// Reads the token a config names (an environment variable, or a file
    /// that only its owner may read), with the one credential loader.
    pub fn read(source: &SecretSource) -> Result<Self, SecretError> {
        let secret = source.load(SKYPILOT_TOKEN)?;
        let mut value =
            HeaderValue::from_str(&format!("Bearer {}", secret.expose())).map_err(|_| {
                SecretError::BadChars {
                    what: SKYPILOT_TOKEN,
                    source_name: match source {
                        SecretSource::Env(var) => format!("environment variable `{var}`"),
                        SecretSource::File(path) => format!("file `{}`", path.display()),
                    },
                }
            })?;
        value.set_sensitive(true);
        Ok(Self(value))
    }
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Token(<redacted>)")
    }
}

/// Why the client could not be set up from its config.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The token could not be read.
    #[error("skypilot_api.{}: {source}", match source { SecretError::EnvName { .. } | SecretError::EnvMissing { .. } => "token_env", _ => "token_file" })]
    Token {
        /// Why.
        #[source]
        source: SecretError,
    },
    /// The CA file cannot be read or holds no certificate.
    #[error("skypilot_api.ca_file: `{}` {reason}", path.display())]
    CaFile {
        /// The file.
        path: std::path::PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The HTTP client could not be built (the TLS stack refused).
    #[error("skypilot_api: cannot set up the HTTP client: {reason}")]
    Build {
        /// What reqwest said.
        reason: String,
    },
}

/// The certificates of a PEM file (one or more `CERTIFICATE` blocks).
pub fn read_ca_file(path: &Path) -> Result<Vec<reqwest::Certificate>, ClientError> {
    crate::http_client::read_ca_file(path).map_err(|e| ClientError::CaFile {
        path: path.to_path_buf(),
        reason: e.reason,
    })
}

/// Why a poll of the API server failed. Messages name the URL and endpoint,
/// never the token.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
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
        /// What the HTTP client said.
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
fn status_body() -> &'static [u8] {
    br#"{"cluster_names":null,"all_users":true,"refresh":"NONE","include_credentials":false,"include_handle":false,"summary_response":false}"#
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
    http: reqwest::Client,
}

/// An answer, read whole.
struct Answer {
    status: StatusCode,
    request_id: Option<HeaderValue>,
    body: Vec<u8>,
}

impl SkypilotClient {
    /// A client of the server at `url`, trusting the public roots and
    /// `extra_roots`; every exchange (connect, send, read the whole answer)
    /// is bounded by `timeout`.
    pub fn new(
        url: ApiUrl,
        token: Option<Token>,
        timeout: Duration,
        extra_roots: Vec<reqwest::Certificate>,
    ) -> Result<Self, ClientError> {
        let mut builder = reqwest::Client::builder()
            .connect_timeout(timeout)
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("warden/", env!("CARGO_PKG_VERSION")));
        for cert in extra_roots {
            builder = builder.add_root_certificate(cert);
        }
        let http = builder.build().map_err(|e| ClientError::Build {
            reason: transport_detail(e),
        })?;
        Ok(Self {
            url,
            token,
            timeout,
            http,
        })
    }

    /// The client a config describes; reads the token and the CA file now.
    pub fn from_config(api: &SkypilotApi) -> Result<Self, ClientError> {
        let token = api
            .token
            .as_ref()
            .map(Token::read)
            .transpose()
            .map_err(|source| ClientError::Token { source })?;
        let roots = match &api.ca_file {
            Some(path) => read_ca_file(path)?,
            None => Vec::new(),
        };
        Self::new(api.url.clone(), token, api.timeout, roots)
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

    /// One exchange, bounded by the time-out (connect, send, read the answer).
    async fn exchange(
        &self,
        method: Method,
        path: &str,
        body: Option<&'static [u8]>,
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
        body: Option<&'static [u8]>,
    ) -> Result<Answer, ApiError> {
        let method_name = method_name(&method);
        let url = self.url.show(path);
        let mut request = self
            .http
            .request(method, &url)
            .header(header::ACCEPT, "application/json")
            .header(
                HeaderName::from_static("x-skypilot-api-version"),
                API_VERSION,
            )
            .header(
                HeaderName::from_static("x-skypilot-version"),
                SKYPILOT_VERSION,
            );
        if let Some(body) = body {
            request = request
                .header(header::CONTENT_TYPE, "application/json")
                .body(body);
        }
        if let Some(token) = &self.token {
            request = request.header(header::AUTHORIZATION, token.0.clone());
        }
        let mut response = request.send().await.map_err(|e| {
            if e.is_connect() {
                ApiError::Connect {
                    url: self.url.to_string(),
                    reason: transport_detail(e),
                }
            } else {
                ApiError::Exchange {
                    method: method_name,
                    url: url.clone(),
                    reason: transport_detail(e),
                }
            }
        })?;
        let status = response.status();
        let request_id = response.headers().get(REQUEST_ID_HEADER).cloned();
        let body = read_limited(&mut response, MAX_BODY_BYTES)
            .await
            .map_err(|e| match e {
                ReadError::TooLarge => ApiError::TooLarge {
                    method: method_name,
                    url: url.clone(),
                },
                ReadError::Transport(reason) => ApiError::Exchange {
                    method: method_name,
                    url: url.clone(),
                    reason,
                },
            })?;
        Ok(Answer {
            status,
            request_id,
            body,
        })
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
    fn urls_are_http_or_https_without_credentials() {
        let u = ApiUrl::parse("http://127.0.0.1:46580").unwrap();
        assert_eq!(u.to_string(), "http://127.0.0.1:46580");
        assert!(u.is_loopback() && !u.is_https());
        let u = ApiUrl::parse("http://sky.internal/api/").unwrap();
        assert_eq!(u.show("/status"), "http://sky.internal/api/status");
        assert!(!u.is_loopback());
        let u = ApiUrl::parse("https://sky.example.com:8443/").unwrap();
        assert!(u.is_https());
        assert_eq!(
            u.show("/api/get?request_id=x"),
            "https://sky.example.com:8443/api/get?request_id=x"
        );
        for local in ["http://localhost:1", "http://[::1]:1", "http://127.0.0.2"] {
            assert!(ApiUrl::parse(local).unwrap().is_loopback(), "{local}");
        }
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
        assert!(matches!(
            ApiUrl::parse("http://sky/#x"),
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
        let source = SecretSource::Env("WARDEN_TEST_SKY_TOKEN_NEVER_SET".to_owned());
        let e = Token::read(&source).unwrap_err();
        assert!(
            e.to_string().contains("SkyPilot service-account token"),
            "{e}"
        );
        let secret = crate::secret::Secret::generated("sky_secret".to_owned());
        let t = Token(HeaderValue::from_str(&format!("Bearer {}", secret.expose())).unwrap());
        assert_eq!(format!("{t:?}"), "Token(<redacted>)");
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
