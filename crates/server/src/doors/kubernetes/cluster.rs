//! The cluster's pods for the periodic usage sync (`kubernetes.kubeconfig`):
//! the kubeconfig's current context, then `GET /api/v1/pods` page by page,
//! through kube-rs (the `kube` crate) for the kubeconfig, auth and TLS.
//!
//! What a kubeconfig may use here is what kube-rs supports: the cluster's
//! `server`, `certificate-authority(-data)`, `tls-server-name` and
//! `proxy-url`; the user's `token` or `tokenFile` (read again at every
//! sync: service-account tokens rotate), `client-certificate(-data)` with
//! `client-key(-data)`, `username`/`password`, an `exec` credential plugin
//! (`aws eks get-token`, `gke-gcloud-auth-plugin`, `kubelogin`, ... run by
//! Warden, never interactively, whose token kube-rs refreshes when it
//! expires) and the `gcp` auth-provider. Relative paths are relative to the
//! kubeconfig, and so is an exec `command` with a `/` in it (as kubectl
//! does). Refused with the reason: `insecure-skip-tls-verify`, an exec
//! plugin with `interactiveMode: Always` (no one answers a prompt), and
//! the other auth-providers (`oidc`, whose token kube-rs would not refresh
//! here, and `azure`: use their exec plugin, `kubelogin`). Without a
//! `proxy-url`, `HTTPS_PROXY` is used unless `NO_PROXY` names the server.
//! In the cluster, point a kubeconfig at the pod's service account:
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
//! Every answer is bounded ([`MAX_PAGE_BYTES`] a page, read as it arrives;
//! [`MAX_PAGES`] pages) and every request, and every making of the client
//! (which runs an exec plugin, on a blocking thread), times out
//! ([`TIMEOUT`]); a plugin that hangs is left running (kube-rs waits for it
//! and cannot be told to stop). The client is kept from one sync to the
//! next and made again when the token file changed, when an exec plugin's
//! client certificate is about to expire, or when the API server answers
//! 401 (a credential without an expiry that went stale), as kubectl does.
//! An exec token with an `expirationTimestamp` is renewed by kube-rs itself
//! when it is a minute from expiring, running the plugin inside the request
//! (on the runtime of the syncs, not on the HTTP threads).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use http_body_util::BodyExt as _;
use kube::config::{
    AuthInfo, ExecInteractiveMode, Kubeconfig, NamedAuthInfo, NamedCluster, NamedContext,
};
use serde_json::Value;

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
/// How long one request may take, and making the client (an exec plugin
/// included).
pub const TIMEOUT: Duration = Duration::from_secs(30);
/// The largest kubeconfig, token, certificate or key file read.
const MAX_FILE_BYTES: u64 = 1024 * 1024;
/// A client whose certificate (from an exec plugin) expires within this
/// many seconds is made again before a sync.
const EXPIRY_MARGIN_SECS: i64 = 60;

/// A client of one cluster's API server.
#[derive(Clone)]
pub struct ClusterClient {
    /// kube-rs's settings, made once from the kubeconfig: its files read
    /// in, but for the token file.
    config: kube::Config,
    /// The user's `tokenFile`, read at every sync.
    token_file: Option<PathBuf>,
    server: String,
    /// The client of the last sync, and the token file's token it has.
    built: Arc<tokio::sync::Mutex<Option<Built>>>,
}

struct Built {
    client: kube::Client,
    token: Option<String>,
}

impl std::fmt::Debug for ClusterClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterClient")
            .field("server", &self.server)
            .finish_non_exhaustive()
    }
}

/// Why listing the pods failed; a 401 is tried again with a new client.
enum ListError {
    Unauthorized(String),
    Other(String),
}

impl ListError {
    fn into_message(self) -> String {
        match self {
            ListError::Unauthorized(m) | ListError::Other(m) => m,
        }
    }
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

/// The kubeconfig's `file` (relative to `base`) read in, bounded, as its
/// base64 `data` (which kube-rs then reads instead), unless `data` is set.
fn read_in<T: From<String>>(
    data: &mut Option<T>,
    file: &mut Option<String>,
    base: &Path,
    what: &str,
) -> Result<(), String> {
    if let Some(f) = file.take() {
        if data.is_none() {
            let bytes = read_file(&base.join(f), what)?;
            *data = Some(T::from(
                base64::engine::general_purpose::STANDARD.encode(bytes),
            ));
        }
    }
    Ok(())
}

/// An error and its causes, each said once (kube-rs's errors often repeat
/// their cause in their own text).
fn detail(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = s.source();
    }
    out
}

/// Whether a `NO_PROXY` list names `host`: `*`, the host, a domain it is
/// in (`example.com`, `.example.com`), or its IP address or network.
fn no_proxy_names(list: &str, host: &str) -> bool {
    let host = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_ascii_lowercase();
    let ip = host.parse::<std::net::IpAddr>().ok();
    list.split(',')
        .map(str::trim)
        .filter(|e| !e.is_empty())
        .any(|entry| {
            if entry == "*" {
                return true;
            }
            if let Some(ip) = ip {
                return match entry.parse::<ipnet::IpNet>() {
                    Ok(net) => net.contains(&ip),
                    Err(_) => entry.parse::<std::net::IpAddr>() == Ok(ip),
                };
            }
            let name = entry
                .trim_start_matches('*')
                .trim_start_matches('.')
                .to_ascii_lowercase();
            let name = name.split(':').next().unwrap_or_default();
            !name.is_empty()
                && (host == name
                    || host
                        .strip_suffix(name)
                        .is_some_and(|rest| rest.ends_with('.')))
        })
}

impl ClusterClient {
    /// The client of the current context of the kubeconfig at `path`; the
    /// error says what in it cannot be used. Nothing is run and nothing is
    /// sent yet: an exec plugin runs at the first sync.
    pub fn from_kubeconfig(path: &Path) -> Result<ClusterClient, String> {
        let at = |e: String| format!("kubeconfig `{}`: {e}", path.display());
        let text = read_file(path, "kubeconfig")?;
        let text = String::from_utf8(text).map_err(|_| at("not UTF-8 text".to_owned()))?;
        warden_core::check_depth(&text, warden_core::MAX_CONFIG_DEPTH)
            .map_err(|e| at(e.to_string()))?;
        let file = Kubeconfig::from_yaml(&text)
            .map_err(|e| at(format!("not a kubeconfig: {}", detail(&e))))?;
        let base = path.parent().unwrap_or(Path::new(""));
        let context_name = file
            .current_context
            .clone()
            .or_else(|| file.contexts.first().map(|c| c.name.clone()))
            .ok_or_else(|| at("no `current-context` and no context".to_owned()))?;
        let context = file
            .contexts
            .iter()
            .find(|c| c.name == context_name)
            .and_then(|c| c.context.clone())
            .ok_or_else(|| at(format!("no context named `{context_name}`")))?;
        let mut cluster = file
            .clusters
            .iter()
            .find(|c| c.name == context.cluster)
            .and_then(|c| c.cluster.clone())
            .ok_or_else(|| at(format!("no cluster named `{}`", context.cluster)))?;
        let mut user = match &context.user {
            Some(name) => file
                .auth_infos
                .iter()
                .find(|u| &u.name == name)
                .ok_or_else(|| at(format!("no user named `{name}`")))?
                .auth_info
                .clone()
                .unwrap_or_default(),
            None => AuthInfo::default(),
        };
        if cluster.insecure_skip_tls_verify == Some(true) {
            return Err(at(
                "`insecure-skip-tls-verify` is refused: name the cluster's CA (`certificate-authority`)"
                    .to_owned(),
            ));
        }
        let server = cluster
            .server
            .as_deref()
            .map(|s| s.trim_end_matches('/').to_owned())
            .filter(|s| !s.is_empty())
            .ok_or_else(|| at(format!("cluster `{}` has no `server`", context.cluster)))?;
        let fix =
            "use an `exec` plugin, a service-account token (`tokenFile`) or a client certificate";
        match user.auth_provider.as_ref().map(|p| p.name.as_str()) {
            None | Some("gcp") => {}
            Some("oidc") => {
                return Err(at(format!(
                    "user of context `{context_name}` uses the `oidc` auth-provider, whose token Warden's client would not refresh; {fix} (`kubelogin get-token` is the exec plugin for OIDC)"
                )))
            }
            Some(other) => {
                return Err(at(format!(
                    "user of context `{context_name}` uses the `{other}` auth-provider, which Warden's client (kube-rs) does not support; {fix}"
                )))
            }
        }
        if let Some(exec) = &mut user.exec {
            if exec.interactive_mode == Some(ExecInteractiveMode::Always) {
                return Err(at(format!(
                    "the exec plugin of context `{context_name}` has `interactiveMode: Always`, but Warden runs it with no one to answer a prompt; use a plugin that needs none"
                )));
            }
            exec.interactive_mode = Some(ExecInteractiveMode::Never);
            match &mut exec.command {
                None => {
                    return Err(at(format!(
                        "the exec plugin of context `{context_name}` has no `command`"
                    )))
                }
                // As kubectl: a command with a `/` is relative to the
                // kubeconfig, one without is looked up in PATH.
                Some(c) if c.contains('/') && Path::new(c.as_str()).is_relative() => {
                    *c = base.join(c.as_str()).to_string_lossy().into_owned();
                }
                Some(_) => {}
            }
        }
        let runs_a_command = user.exec.is_some() || user.auth_provider.is_some();
        read_in(
            &mut cluster.certificate_authority_data,
            &mut cluster.certificate_authority,
            base,
            "certificate authority",
        )
        .map_err(at)?;
        read_in(
            &mut user.client_certificate_data,
            &mut user.client_certificate,
            base,
            "client certificate",
        )
        .map_err(at)?;
        read_in(
            &mut user.client_key_data,
            &mut user.client_key,
            base,
            "client key",
        )
        .map_err(at)?;
        if user.client_certificate_data.is_some() != user.client_key_data.is_some() {
            return Err(at(
                "a client certificate needs its key, and a key its certificate".to_owned(),
            ));
        }
        // An inline token wins over the file, as in kubectl.
        let token_file = user
            .token_file
            .take()
            .filter(|_| user.token.is_none())
            .map(|f| base.join(f));
        let own_proxy = cluster.proxy_url.as_deref().is_some_and(|p| !p.is_empty());
        let cluster_name = context.cluster.clone();
        let user_name = context.user.clone().unwrap_or_default();
        let mut config = kube::Config::try_from(Kubeconfig {
            current_context: Some(context_name.clone()),
            contexts: vec![NamedContext {
                name: context_name,
                context: Some(context),
            }],
            clusters: vec![NamedCluster {
                name: cluster_name,
                cluster: Some(cluster),
            }],
            auth_infos: vec![NamedAuthInfo {
                name: user_name,
                auth_info: Some(user),
            }],
            ..Kubeconfig::default()
        })
        .map_err(|e| at(detail(&e)))?;
        // kube-rs takes HTTPS_PROXY when the kubeconfig names no proxy, but
        // not NO_PROXY.
        if !own_proxy {
            let no_proxy = std::env::var("NO_PROXY")
                .or_else(|_| std::env::var("no_proxy"))
                .unwrap_or_default();
            if no_proxy_names(&no_proxy, config.cluster_url.host().unwrap_or_default()) {
                config.proxy_url = None;
            }
        }
        config.connect_timeout = Some(TIMEOUT);
        config.read_timeout = Some(TIMEOUT);
        config.write_timeout = Some(TIMEOUT);
        // The CA and the client certificate are checked now, unless the
        // credentials come from a command (run at the first sync).
        if !runs_a_command {
            use kube::client::ConfigExt as _;
            config.rustls_client_config().map_err(|e| at(detail(&e)))?;
        }
        Ok(ClusterClient {
            config,
            token_file,
            server,
            built: Arc::new(tokio::sync::Mutex::new(None)),
        })
    }

    /// The API server's URL.
    pub fn server(&self) -> &str {
        &self.server
    }

    /// A new kube-rs client with `token` (the token file's). Made on a
    /// blocking thread: kube-rs runs an exec plugin there and waits for it.
    async fn make(&self, token: Option<String>) -> Result<kube::Client, String> {
        let mut config = self.config.clone();
        if let Some(t) = token {
            config.auth_info.token = Some(t.into());
        }
        let making = tokio::task::spawn_blocking(move || kube::Client::try_from(config));
        match tokio::time::timeout(TIMEOUT, making).await {
            Ok(Ok(Ok(client))) => Ok(client),
            Ok(Ok(Err(e))) => Err(format!(
                "cannot make the client of {}: {}",
                self.server,
                detail(&e)
            )),
            Ok(Err(e)) => Err(format!("cannot make the client of {}: {e}", self.server)),
            Err(_) => Err(format!(
                "making the client of {} took longer than {} s (an exec plugin that does not answer?)",
                self.server,
                TIMEOUT.as_secs()
            )),
        }
    }

    /// Every pod of the cluster, as `{"items": [...]}` (the shape of
    /// `kubectl get pods -A -o json`).
    pub async fn pods(&self) -> Result<Value, String> {
        let token = self
            .token_file
            .as_deref()
            .map(|f| {
                read_file(f, "token file").map(|t| String::from_utf8_lossy(&t).trim().to_owned())
            })
            .transpose()?;
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
        let mut built = self.built.lock().await;
        let kept = built
            .as_ref()
            .filter(|b| {
                b.token == token
                    && !b
                        .client
                        .valid_until()
                        .is_some_and(|t| t.timestamp() <= now.saturating_add(EXPIRY_MARGIN_SECS))
            })
            .map(|b| b.client.clone());
        let fresh = kept.is_none();
        let client = match kept {
            Some(c) => c,
            None => self.make(token.clone()).await?,
        };
        *built = Some(Built {
            client: client.clone(),
            token: token.clone(),
        });
        match self.list(&client).await {
            Ok(list) => Ok(list),
            Err(ListError::Unauthorized(_)) if !fresh => {
                tracing::info!(
                    target: "warden::sync",
                    server = self.server,
                    "the API server answered 401; making the client again (an expired credential?)"
                );
                let client = self.make(token.clone()).await?;
                *built = Some(Built {
                    client: client.clone(),
                    token,
                });
                self.list(&client).await.map_err(ListError::into_message)
            }
            Err(e) => Err(e.into_message()),
        }
    }

    async fn list(&self, client: &kube::Client) -> Result<Value, ListError> {
        let mut items = Vec::new();
        let mut next: Option<String> = None;
        for _ in 0..MAX_PAGES {
            let (status, body) = tokio::time::timeout(TIMEOUT, self.page(client, next.as_deref()))
                .await
                .map_err(|_| {
                    ListError::Other(format!(
                        "listing pods at {} took longer than {} s",
                        self.server,
                        TIMEOUT.as_secs()
                    ))
                })?
                .map_err(ListError::Other)?;
            if !status.is_success() {
                let message = serde_json::from_slice::<Value>(&body)
                    .ok()
                    .and_then(|v| v.get("message").and_then(Value::as_str).map(str::to_owned))
                    .unwrap_or_default();
                let text = format!(
                    "the API server at {} answered HTTP {status} to listing pods{}{message}; Warden needs `list` on `pods` in every namespace (a ClusterRole)",
                    self.server,
                    if message.is_empty() { "" } else { ": " }
                );
                return Err(if status == http::StatusCode::UNAUTHORIZED {
                    ListError::Unauthorized(text)
                } else {
                    ListError::Other(text)
                });
            }
            let mut page = parse_pod_list(&body).map_err(ListError::Other)?;
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
        Err(ListError::Other(format!(
            "the pod list has more than {MAX_PAGES} pages of {PAGE_SIZE}"
        )))
    }

    /// One page: its status and body, read up to [`MAX_PAGE_BYTES`] (a
    /// `Content-Length` over it is refused before reading).
    async fn page(
        &self,
        client: &kube::Client,
        next: Option<&str>,
    ) -> Result<(http::StatusCode, Vec<u8>), String> {
        let query = {
            let mut query = form_urlencoded::Serializer::new(String::new());
            query.append_pair("limit", &PAGE_SIZE.to_string());
            if let Some(c) = next {
                query.append_pair("continue", c);
            }
            query.finish()
        };
        let request = http::Request::get(format!("/api/v1/pods?{query}"))
            .body(kube::client::Body::empty())
            .map_err(|e| format!("cannot make the request listing pods: {e}"))?;
        let answer = client
            .send(request)
            .await
            .map_err(|e| format!("cannot list pods at {}: {}", self.server, detail(&e)))?;
        let status = answer.status();
        let too_large = || format!("a page of the pod list is larger than {MAX_PAGE_BYTES} bytes");
        if answer
            .headers()
            .get(http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok())
            .is_some_and(|n| n > MAX_PAGE_BYTES as u64)
        {
            return Err(too_large());
        }
        let mut body = answer.into_body();
        let mut out = Vec::new();
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| format!("cannot read the pod list: {}", detail(&e)))?;
            if let Ok(data) = frame.into_data() {
                if out.len() + data.len() > MAX_PAGE_BYTES {
                    return Err(too_large());
                }
                out.extend_from_slice(&data);
            }
        }
        Ok((status, out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_proxy_names_hosts_domains_and_networks() {
        let list = " .svc, example.com:443, 10.0.0.0/8 ,::1, localhost";
        for host in [
            "kubernetes.default.svc",
            "example.com",
            "api.example.com",
            "10.1.2.3",
            "[::1]",
            "LOCALHOST",
        ] {
            assert!(no_proxy_names(list, host), "{host}");
        }
        for host in [
            "svc.example.org",
            "notexample.com",
            "11.0.0.1",
            "::2",
            "kube",
        ] {
            assert!(!no_proxy_names(list, host), "{host}");
        }
        assert!(no_proxy_names("*", "anything"));
        assert!(!no_proxy_names("", "anything"));
    }

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        path
    }

    #[test]
    fn what_a_kubeconfig_may_not_use_is_refused_with_the_reason() {
        let dir = std::env::temp_dir().join(format!("warden-cluster-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let config = |cluster: &str, user: &str| {
            format!(
                "apiVersion: v1\nkind: Config\ncurrent-context: c\n\
                 contexts: [{{name: c, context: {{cluster: k, user: w}}}}]\n\
                 clusters: [{{name: k, cluster: {{server: \"https://127.0.0.1:6443\"{cluster}}}}}]\n\
                 users: [{{name: w, user: {user}}}]\n"
            )
        };
        let refused = |cluster: &str, user: &str| {
            ClusterClient::from_kubeconfig(&write(&dir, "kubeconfig", &config(cluster, user)))
                .unwrap_err()
        };
        let e = refused(", insecure-skip-tls-verify: true", "{token: x}");
        assert!(e.contains("`insecure-skip-tls-verify` is refused"), "{e}");
        let e = refused("", "{auth-provider: {name: azure}}");
        assert!(
            e.contains("`azure` auth-provider") && e.contains("`exec`"),
            "{e}"
        );
        let e = refused("", "{auth-provider: {name: oidc, config: {id-token: x}}}");
        assert!(e.contains("kubelogin"), "{e}");
        let e = refused("", "{exec: {command: x, interactiveMode: Always}}");
        assert!(e.contains("interactiveMode: Always"), "{e}");
        let e = refused("", "{exec: {args: [x]}}");
        assert!(e.contains("no `command`"), "{e}");
        let e = refused(
            "",
            "{client-certificate: missing.crt, client-key: missing.key}",
        );
        assert!(e.contains("cannot read the client certificate"), "{e}");
        write(&dir, "c.crt", "not a certificate");
        let e = refused("", "{client-certificate: c.crt}");
        assert!(e.contains("needs its key"), "{e}");
        write(&dir, "c.key", "not a key");
        let e = refused("", "{client-certificate: c.crt, client-key: c.key}");
        assert!(e.contains("identity PEM"), "{e}");
        let e = refused(", certificate-authority: missing-ca.crt", "{token: x}");
        assert!(e.contains("cannot read the certificate authority"), "{e}");
        // An exec command with a `/` is relative to the kubeconfig, one
        // without is looked up in PATH; neither runs before the sync.
        for (command, run) in [
            ("./bin/plugin", dir.join("./bin/plugin")),
            ("aws", PathBuf::from("aws")),
        ] {
            let client = ClusterClient::from_kubeconfig(&write(
                &dir,
                "kubeconfig",
                &config("", &format!("{{exec: {{command: {command}}}}}")),
            ))
            .unwrap();
            let exec = client.config.auth_info.exec.unwrap();
            assert_eq!(exec.command.map(PathBuf::from), Some(run));
            assert_eq!(exec.interactive_mode, Some(ExecInteractiveMode::Never));
        }
        // Accepted: a token file not there yet is read at the sync.
        ClusterClient::from_kubeconfig(&write(&dir, "kubeconfig", &config("", "{tokenFile: t}")))
            .unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
