//! `--server URL`: `warden keys` and `warden exceptions` over the admin API
//! (`/api/v1`) of a running Warden instead of the store, with the caller's
//! own credential from `WARDEN_TOKEN` (a Warden key or an OIDC token), so a
//! team lead can manage the team's keys and exceptions without access to
//! the database. What the caller may do is then its role's, checked by the
//! server.

use std::time::Duration;

use anyhow::Context as _;
use serde_json::Value;
use warden_store::UnixMicros;

use crate::table::{Align, Table};

/// The variable holding the credential for `--server`.
pub const TOKEN_ENV: &str = "WARDEN_TOKEN";
/// Bound on one call.
const TIMEOUT: Duration = Duration::from_secs(30);
/// The largest answer read.
const MAX_ANSWER_BYTES: usize = 16 * 1024 * 1024;

/// A Warden server and the credential to call it with.
pub struct Remote {
    base: String,
    token: String,
    client: reqwest::Client,
}

impl Remote {
    /// `server` (`https://warden.example.com`, or `http://` to this
    /// machine: the token must not cross a network in clear) and the token
    /// in `WARDEN_TOKEN`.
    pub fn new(server: &str) -> anyhow::Result<Remote> {
        let base = server.trim().trim_end_matches('/').to_owned();
        let url: reqwest::Url = base
            .parse()
            .map_err(|e| anyhow::anyhow!("--server: `{base}` is not a URL ({e})"))?;
        let loopback = match url.host() {
            Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
            Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
            Some(url::Host::Domain(d)) => d == "localhost",
            None => false,
        };
        match url.scheme() {
            "https" => {}
            "http" if loopback => {}
            "http" => anyhow::bail!(
                "--server: `{base}` would send your token in clear to another machine; use https://"
            ),
            other => anyhow::bail!("--server: `{other}://` is not http(s)"),
        }
        let token = std::env::var(TOKEN_ENV)
            .ok()
            .map(|t| t.trim().to_owned())
            .filter(|t| !t.is_empty())
            .ok_or_else(|| {
                anyhow::anyhow!(
                    "--server needs your credential in {TOKEN_ENV} (a Warden key `wdn_...` or an OIDC token)"
                )
            })?;
        let client = reqwest::Client::builder()
            .timeout(TIMEOUT)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .context("cannot make the HTTP client")?;
        Ok(Remote {
            base,
            token,
            client,
        })
    }

    /// Calls `method path` with an optional JSON body; the JSON answer, or
    /// an error with the server's own message.
    pub async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> anyhow::Result<Value> {
        let mut req = self
            .client
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(&self.token);
        if let Some(body) = body {
            req = req
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(body.to_string());
        }
        let resp = req
            .send()
            .await
            .map_err(|e| anyhow::anyhow!("cannot reach {}: {e}", self.base))?;
        let status = resp.status();
        let bytes = resp
            .bytes()
            .await
            .map_err(|e| anyhow::anyhow!("reading the answer of {}: {e}", self.base))?;
        if bytes.len() > MAX_ANSWER_BYTES {
            anyhow::bail!("the answer of {} is larger than 16 MiB", self.base);
        }
        let text = String::from_utf8_lossy(&bytes);
        if !status.is_success() {
            anyhow::bail!(
                "{} answered {}: {}",
                self.base,
                status.as_u16(),
                text.trim()
            );
        }
        serde_json::from_str(&text)
            .map_err(|e| anyhow::anyhow!("the answer of {} is not JSON: {e}", self.base))
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    crate::admin::runtime()
}

fn text(v: &Value, key: &str) -> String {
    match v.get(key) {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Null) | None => "-".to_owned(),
        Some(other) => other.to_string(),
    }
}

fn instant(v: &Value, key: &str) -> String {
    v.get(key)
        .and_then(Value::as_i64)
        .map_or("never".to_owned(), |us| {
            UnixMicros::from_micros(us).to_string()
        })
}

fn team_query(team: Option<&str>) -> String {
    team.map(|t| {
        format!(
            "?team={}",
            form_urlencoded::byte_serialize(t.as_bytes()).collect::<String>()
        )
    })
    .unwrap_or_default()
}

/// `warden keys create --server`: prints the key once on stdout.
pub fn keys_create(server: &str, body: Value) -> anyhow::Result<std::process::ExitCode> {
    let remote = Remote::new(server)?;
    let answer =
        runtime()?.block_on(remote.call(reqwest::Method::POST, "/api/v1/keys", Some(body)))?;
    let key = answer
        .get("key")
        .and_then(Value::as_str)
        .ok_or_else(|| anyhow::anyhow!("the server's answer holds no key"))?;
    say!("{key}");
    let stored = answer.get("stored").cloned().unwrap_or(Value::Null);
    eprintln!(
        "{} key {} of team `{}`; expires: {}. This is the only time the key is shown: Warden keeps only its hash.",
        text(&stored, "role"),
        text(&stored, "id"),
        text(&stored, "team"),
        instant(&stored, "expires_us")
    );
    Ok(std::process::ExitCode::SUCCESS)
}

/// `warden keys list --server`.
pub fn keys_list(server: &str, team: Option<&str>) -> anyhow::Result<std::process::ExitCode> {
    let remote = Remote::new(server)?;
    let path = format!("/api/v1/keys{}", team_query(team));
    let answer = runtime()?.block_on(remote.call(reqwest::Method::GET, &path, None))?;
    let keys = answer
        .get("keys")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let mut table = Table::new(&[
        ("id", Align::Left),
        ("team", Align::Left),
        ("role", Align::Left),
        ("user", Align::Left),
        ("name", Align::Left),
        ("created", Align::Left),
        ("expires", Align::Left),
        ("revoked", Align::Left),
    ]);
    for k in &keys {
        table.row([
            text(k, "id"),
            text(k, "team"),
            text(k, "role"),
            text(k, "user"),
            text(k, "name"),
            instant(k, "created_us"),
            instant(k, "expires_us"),
            k.get("revoked_us")
                .and_then(Value::as_i64)
                .map_or("-".to_owned(), |us| UnixMicros::from_micros(us).to_string()),
        ]);
    }
    for line in table.lines() {
        say!("{line}");
    }
    say!("{} key(s)", keys.len());
    Ok(std::process::ExitCode::SUCCESS)
}

/// `warden keys revoke --server`.
pub fn keys_revoke(server: &str, id: &str) -> anyhow::Result<std::process::ExitCode> {
    let remote = Remote::new(server)?;
    let path = format!(
        "/api/v1/keys/{}",
        form_urlencoded::byte_serialize(id.trim().as_bytes()).collect::<String>()
    );
    let answer = runtime()?.block_on(remote.call(reqwest::Method::DELETE, &path, None))?;
    let k = answer.get("revoked").cloned().unwrap_or(Value::Null);
    say!(
        "revoked {} key {} of team `{}`",
        text(&k, "role"),
        text(&k, "id"),
        text(&k, "team")
    );
    Ok(std::process::ExitCode::SUCCESS)
}

/// `warden exceptions grant --server`.
pub fn exceptions_grant(server: &str, body: Value) -> anyhow::Result<std::process::ExitCode> {
    let remote = Remote::new(server)?;
    let answer = runtime()?.block_on(remote.call(
        reqwest::Method::POST,
        "/api/v1/exceptions",
        Some(body),
    ))?;
    let x = answer.get("granted").cloned().unwrap_or(Value::Null);
    say!(
        "granted exception {}: team `{}` may go past `{}` until {} ({})",
        text(&x, "id"),
        text(&x, "team"),
        text(&x, "rule"),
        instant(&x, "until_us"),
        text(&x, "reason")
    );
    Ok(std::process::ExitCode::SUCCESS)
}

/// `warden exceptions list --server`.
pub fn exceptions_list(server: &str, team: Option<&str>) -> anyhow::Result<std::process::ExitCode> {
    let remote = Remote::new(server)?;
    let path = format!("/api/v1/exceptions{}", team_query(team));
    let answer = runtime()?.block_on(remote.call(reqwest::Method::GET, &path, None))?;
    let all = answer
        .get("exceptions")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let mut table = Table::new(&[
        ("id", Align::Right),
        ("team", Align::Left),
        ("user", Align::Left),
        ("rule", Align::Left),
        ("until", Align::Left),
        ("active", Align::Left),
        ("reason", Align::Left),
    ]);
    for row in &all {
        let x = row.get("exception").cloned().unwrap_or(Value::Null);
        table.row([
            text(&x, "id"),
            text(&x, "team"),
            text(&x, "user"),
            text(&x, "rule"),
            instant(&x, "until_us"),
            text(row, "active"),
            text(&x, "reason"),
        ]);
    }
    for line in table.lines() {
        say!("{line}");
    }
    say!("{} exception(s)", all.len());
    Ok(std::process::ExitCode::SUCCESS)
}

/// `warden exceptions revoke --server`.
pub fn exceptions_revoke(server: &str, id: i64) -> anyhow::Result<std::process::ExitCode> {
    let remote = Remote::new(server)?;
    let answer = runtime()?.block_on(remote.call(
        reqwest::Method::DELETE,
        &format!("/api/v1/exceptions/{id}"),
        None,
    ))?;
    let x = answer.get("revoked").cloned().unwrap_or(Value::Null);
    say!(
        "revoked exception {} (team `{}`, rule `{}`)",
        text(&x, "id"),
        text(&x, "team"),
        text(&x, "rule")
    );
    Ok(std::process::ExitCode::SUCCESS)
}
