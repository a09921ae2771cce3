//! The cluster's pods for the periodic usage sync (`kubernetes.kubeconfig`):
//! the kubeconfig's current context, then `GET /api/v1/pods` page by page.
//!
//! What a kubeconfig may use here: the cluster's `server`,
//! `certificate-authority` or `certificate-authority-data`; the user's
//! `token` or `tokenFile` (read again at every sync: service-account tokens
//! rotate), or `client-certificate(-data)` with `client-key(-data)`.
//! Relative paths are relative to the kubeconfig. Refused with the reason:
//! `exec` and `auth-provider` users (a cloud CLI run by Warden) and
//! `insecure-skip-tls-verify`. In the cluster, point a kubeconfig at the
//! pod's service account:
//!
//! ```yaml
//! apiVersion: v1
//! kind: Config
//! current-context: in-cluster
//! contexts: [{name: in-cluster, context: {cluster: local, user: warden}}]
//! clusters: [{name: local, cluster: {server: "https://kubernetes.default.svc",
//!   certificate-authority: /var/run/secrets/kubernetes.io/serviceaccount/ca.crt}}]
//! users: [{name: warden, user: {tokenFile: /var/run/secrets/kubernetes.io/serviceaccount/token}}]
//! ```
//!
//! Every answer is bounded ([`MAX_PAGE_BYTES`] a page, [`MAX_PAGES`] pages)
//! and every request times out ([`TIMEOUT`]).

use std::path::{Path, PathBuf};
use std::time::Duration;

use base64::Engine as _;
use serde::Deserialize;
use serde_json::Value;

use crate::http_client::{read_limited, transport_detail, ReadError};

/// The largest pod list read, in bytes (a cluster of 10 000 pods exports
/// about 100 MB).
pub const MAX_POD_LIST_BYTES: usize = 256 * 1024 * 1024;
/// The deepest nesting a pod list may have.
pub const MAX_POD_LIST_DEPTH: usize = 64;

/// A pod list (`kubectl get pods -A -o json`, or one page of the API
/// server's), bounded in size and depth before it is parsed.
pub fn parse_pod_list(text: &[u8]) -> Result<Value, String> {
    if text.len() > MAX_POD_LIST_BYTES {
        return Err(format!(
            "the pod list is {} bytes, over the {MAX_POD_LIST_BYTES}-byte limit; export one namespace at a time",
            text.len()
        ));
    }
    if !crate::doors::skypilot::json_depth_within(text, MAX_POD_LIST_DEPTH) {
        return Err(format!(
            "the pod list nests deeper than {MAX_POD_LIST_DEPTH} levels; is it `kubectl get pods -A -o json`?"
        ));
    }
    serde_json::from_slice(text).map_err(|e| format!("the pod list is not JSON: {e}"))
}

/// The largest page of the pod list read.
pub const MAX_PAGE_BYTES: usize = 64 * 1024 * 1024;
/// Pods asked for per page.
pub const PAGE_SIZE: usize = 500;
/// The most pages read in one sync (a million pods).
pub const MAX_PAGES: usize = 2000;
/// How long one request may take.
pub const TIMEOUT: Duration = Duration::from_secs(30);
/// The largest kubeconfig, token or certificate file read.
const MAX_FILE_BYTES: u64 = 1024 * 1024;

#[derive(Debug, Default, Deserialize)]
struct Kubeconfig {
    #[serde(rename = "current-context", default)]
    current_context: Option<String>,
    #[serde(default)]
    contexts: Vec<Named<ContextSpec>>,
    #[serde(default)]
    clusters: Vec<NamedCluster>,
    #[serde(default)]
    users: Vec<NamedUser>,
}

#[derive(Debug, Deserialize)]
struct Named<T> {
    name: String,
    context: T,
}

#[derive(Debug, Deserialize)]
struct ContextSpec {
    cluster: String,
    #[serde(default)]
    user: Option<String>,
}

#[derive(Debug, Deserialize)]
struct NamedCluster {
    name: String,
    cluster: ClusterSpec,
}

#[derive(Debug, Deserialize)]
struct ClusterSpec {
    server: String,
    #[serde(rename = "certificate-authority", default)]
    ca_file: Option<PathBuf>,
    #[serde(rename = "certificate-authority-data", default)]
    ca_data: Option<String>,
    #[serde(rename = "insecure-skip-tls-verify", default)]
    insecure: bool,
}

#[derive(Debug, Deserialize)]
struct NamedUser {
    name: String,
    user: UserSpec,
}

#[derive(Debug, Default, Deserialize)]
struct UserSpec {
    #[serde(default)]
    token: Option<String>,
    #[serde(rename = "tokenFile", default)]
    token_file: Option<PathBuf>,
    #[serde(rename = "client-certificate", default)]
    cert_file: Option<PathBuf>,
    #[serde(rename = "client-certificate-data", default)]
    cert_data: Option<String>,
    #[serde(rename = "client-key", default)]
    key_file: Option<PathBuf>,
    #[serde(rename = "client-key-data", default)]
    key_data: Option<String>,
    #[serde(default)]
    exec: Option<Value>,
    #[serde(rename = "auth-provider", default)]
    auth_provider: Option<Value>,
}

/// How the client proves who it is.
#[derive(Debug, Clone)]
enum Bearer {
    None,
    Token(String),
    File(PathBuf),
}

/// A client of one cluster's API server.
#[derive(Debug, Clone)]
pub struct ClusterClient {
    http: reqwest::Client,
    server: String,
    bearer: Bearer,
}

fn read_file(path: &Path, what: &str) -> Result<Vec<u8>, String> {
    use std::io::Read as _;
    let file = std::fs::File::open(path)
        .map_err(|e| format!("cannot read the {what} `{}`: {e}", path.display()))?;
    let mut out = Vec::new();
    file.take(MAX_FILE_BYTES + 1)
        .read_to_end(&mut out)
        .map_err(|e| format!("cannot read the {what} `{}`: {e}", path.display()))?;
    if out.len() as u64 > MAX_FILE_BYTES {
        return Err(format!(
            "the {what} `{}` is larger than {MAX_FILE_BYTES} bytes",
            path.display()
        ));
    }
    Ok(out)
}

fn data_or_file(
    data: Option<&String>,
    file: Option<&PathBuf>,
    base: &Path,
    what: &str,
) -> Result<Option<Vec<u8>>, String> {
    if let Some(d) = data {
        return base64::engine::general_purpose::STANDARD
            .decode(d.trim())
            .map(Some)
            .map_err(|e| format!("the {what} data is not base64: {e}"));
    }
    file.map(|f| read_file(&base.join(f), what)).transpose()
}

impl ClusterClient {
    /// The client of the current context of the kubeconfig at `path`; the
    /// error says what in it cannot be used.
    pub fn from_kubeconfig(path: &Path) -> Result<ClusterClient, String> {
        let at = |e: String| format!("kubeconfig `{}`: {e}", path.display());
        let text = read_file(path, "kubeconfig")?;
        let text = String::from_utf8(text).map_err(|_| at("not UTF-8 text".to_owned()))?;
        warden_core::check_depth(&text, warden_core::MAX_CONFIG_DEPTH)
            .map_err(|e| at(e.to_string()))?;
        let config: Kubeconfig =
            serde_norway::from_str(&text).map_err(|e| at(format!("not a kubeconfig: {e}")))?;
        let base = path.parent().unwrap_or(Path::new(""));
        let context_name = config
            .current_context
            .clone()
            .or_else(|| config.contexts.first().map(|c| c.name.clone()))
            .ok_or_else(|| at("no `current-context` and no context".to_owned()))?;
        let context = config
            .contexts
            .iter()
            .find(|c| c.name == context_name)
            .ok_or_else(|| at(format!("no context named `{context_name}`")))?;
        let cluster = config
            .clusters
            .iter()
            .find(|c| c.name == context.context.cluster)
            .ok_or_else(|| at(format!("no cluster named `{}`", context.context.cluster)))?;
        let no_user = UserSpec::default();
        let user: &UserSpec = match &context.context.user {
            Some(name) => {
                &config
                    .users
                    .iter()
                    .find(|u| &u.name == name)
                    .ok_or_else(|| at(format!("no user named `{name}`")))?
                    .user
            }
            None => &no_user,
        };
        if user.exec.is_some() || user.auth_provider.is_some() {
            return Err(at(format!(
                "user of context `{context_name}` authenticates with `exec`/`auth-provider` (a command Warden would run); give Warden a service-account token (`tokenFile`) or a client certificate instead"
            )));
        }
        if cluster.cluster.insecure {
            return Err(at(
                "`insecure-skip-tls-verify` is refused: name the cluster's CA (`certificate-authority`)"
                    .to_owned(),
            ));
        }
        let mut builder = reqwest::Client::builder().timeout(TIMEOUT).use_rustls_tls();
        if let Some(pem) = data_or_file(
            cluster.cluster.ca_data.as_ref(),
            cluster.cluster.ca_file.as_ref(),
            base,
            "certificate authority",
        )
        .map_err(at)?
        {
            let certs = reqwest::Certificate::from_pem_bundle(&pem)
                .map_err(|e| at(format!("the certificate authority is not PEM: {e}")))?;
            for c in certs {
                builder = builder.add_root_certificate(c);
            }
        }
        let cert = data_or_file(
            user.cert_data.as_ref(),
            user.cert_file.as_ref(),
            base,
            "client certificate",
        )
        .map_err(at)?;
        let key = data_or_file(
            user.key_data.as_ref(),
            user.key_file.as_ref(),
            base,
            "client key",
        )
        .map_err(at)?;
        match (cert, key) {
            (Some(mut cert), Some(key)) => {
                cert.push(b'\n');
                cert.extend_from_slice(&key);
                let identity = reqwest::Identity::from_pem(&cert).map_err(|e| {
                    at(format!(
                        "the client certificate and key cannot be used: {e}"
                    ))
                })?;
                builder = builder.identity(identity);
            }
            (None, None) => {}
            _ => {
                return Err(at(
                    "a client certificate needs its key, and a key its certificate".to_owned(),
                ))
            }
        }
        let bearer = match (&user.token, &user.token_file) {
            (Some(t), _) => Bearer::Token(t.trim().to_owned()),
            (None, Some(f)) => Bearer::File(base.join(f)),
            (None, None) => Bearer::None,
        };
        let http = builder
            .build()
            .map_err(|e| at(format!("cannot make an HTTP client: {e}")))?;
        Ok(ClusterClient {
            http,
            server: cluster.cluster.server.trim_end_matches('/').to_owned(),
            bearer,
        })
    }

    /// The API server's URL.
    pub fn server(&self) -> &str {
        &self.server
    }

    fn token(&self) -> Result<Option<String>, String> {
        Ok(match &self.bearer {
            Bearer::None => None,
            Bearer::Token(t) => Some(t.clone()),
            Bearer::File(f) => Some(
                String::from_utf8_lossy(&read_file(f, "token file")?)
                    .trim()
                    .to_owned(),
            ),
        })
    }

    /// Every pod of the cluster, as `{"items": [...]}` (the shape of
    /// `kubectl get pods -A -o json`).
    pub async fn pods(&self) -> Result<Value, String> {
        let token = self.token()?;
        let mut items = Vec::new();
        let mut next: Option<String> = None;
        for _ in 0..MAX_PAGES {
            let mut req = self
                .http
                .get(format!("{}/api/v1/pods", self.server))
                .query(&[("limit", PAGE_SIZE.to_string())]);
            if let Some(c) = &next {
                req = req.query(&[("continue", c)]);
            }
            if let Some(t) = &token {
                req = req.bearer_auth(t);
            }
            let mut answer = req.send().await.map_err(|e| {
                format!(
                    "cannot list pods at {}: {}",
                    self.server,
                    transport_detail(e)
                )
            })?;
            let status = answer.status();
            let body = read_limited(&mut answer, MAX_PAGE_BYTES)
                .await
                .map_err(|e| match e {
                    ReadError::TooLarge => {
                        format!("a page of the pod list is larger than {MAX_PAGE_BYTES} bytes")
                    }
                    ReadError::Transport(t) => format!("cannot read the pod list: {t}"),
                })?;
            if !status.is_success() {
                let message = serde_json::from_slice::<Value>(&body)
                    .ok()
                    .and_then(|v| v.get("message").and_then(Value::as_str).map(str::to_owned))
                    .unwrap_or_default();
                return Err(format!(
                    "the API server at {} answered HTTP {status} to listing pods{}{message}; Warden needs `list` on `pods` in every namespace (a ClusterRole)",
                    self.server,
                    if message.is_empty() { "" } else { ": " }
                ));
            }
            let mut page = parse_pod_list(&body)?;
            if let Some(Value::Array(list)) = page.get_mut("items").map(Value::take) {
                items.extend(list);
            }
            next = page
                .get("metadata")
                .and_then(|m| m.get("continue"))
                .and_then(Value::as_str)
                .filter(|c| !c.is_empty())
                .map(str::to_owned);
            if next.is_none() {
                return Ok(serde_json::json!({"kind": "List", "items": items}));
            }
        }
        Err(format!(
            "the pod list has more than {MAX_PAGES} pages of {PAGE_SIZE}"
        ))
    }
}
