//! `identity`: how humans sign in. `identity.oidc` names one OpenID
//! Connect issuer whose bearer tokens the HTTP endpoints accept
//! ([`crate::oidc`]).

use std::path::{Path, PathBuf};

use jsonwebtoken::Algorithm;
use reqwest::Url;
use serde::Deserialize;

/// `identity` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct IdentityFile {
    #[serde(default)]
    oidc: Option<OidcFile>,
    #[serde(default)]
    pub(crate) skypilot_user_claim: Option<warden_core::SkypilotUserClaim>,
}

/// `identity.oidc` as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct OidcFile {
    issuer: String,
    audience: String,
    #[serde(default)]
    groups_claim: Option<String>,
    #[serde(default)]
    user_claim: Option<String>,
    #[serde(default)]
    algorithms: Option<Vec<String>>,
    #[serde(default)]
    ca_file: Option<PathBuf>,
}

/// The claim holding a user's groups, by default.
pub const DEFAULT_GROUPS_CLAIM: &str = "groups";
/// The claim naming the user, by default.
pub const DEFAULT_USER_CLAIM: &str = "email";
/// The signature algorithms accepted, by default.
pub const DEFAULT_ALGORITHMS: &[Algorithm] = &[Algorithm::RS256, Algorithm::ES256];
/// The asymmetric JWS algorithms `identity.oidc.algorithms` may name.
pub const ASYMMETRIC_ALGORITHMS: &[Algorithm] = &[
    Algorithm::RS256,
    Algorithm::RS384,
    Algorithm::RS512,
    Algorithm::PS256,
    Algorithm::PS384,
    Algorithm::PS512,
    Algorithm::ES256,
    Algorithm::ES384,
    Algorithm::EdDSA,
];
/// The longest claim name accepted.
const MAX_CLAIM_NAME: usize = 64;

/// `identity.oidc`: the one issuer whose tokens Warden accepts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OidcConfig {
    /// The issuer, exactly as tokens carry it in `iss` (and as its
    /// discovery document names itself).
    pub issuer: String,
    /// `{issuer}/.well-known/openid-configuration`.
    pub discovery_url: Url,
    /// The `aud` a token must carry.
    pub audience: String,
    /// The claim holding the user's groups (a list of strings).
    pub groups_claim: String,
    /// The claim naming the user (a string).
    pub user_claim: String,
    /// The signature algorithms accepted (asymmetric only).
    pub algorithms: Vec<Algorithm>,
    /// A PEM file of CA certificates to trust besides the public roots,
    /// resolved against the config file's directory.
    pub ca_file: Option<PathBuf>,
}

impl OidcConfig {
    /// Whether `alg` is accepted.
    pub fn allows(&self, alg: Algorithm) -> bool {
        self.algorithms.contains(&alg)
    }

    /// The accepted algorithms as written (`RS256, ES256`).
    pub fn algorithm_list(&self) -> String {
        names(&self.algorithms)
    }
}

fn names(algs: &[Algorithm]) -> String {
    algs.iter()
        .map(|a| format!("{a:?}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Whether `url`'s host is this machine (`localhost`, `127.0.0.0/8`, `::1`),
/// the only place plain `http` is accepted (the tests' issuers).
pub fn is_loopback(url: &Url) -> bool {
    let host = url.host_str().unwrap_or_default();
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// Checks a URL Warden fetches keys from: `https`, or `http` to this
/// machine; no credentials, query or fragment. `what` names it in errors.
pub fn check_fetch_url(what: &str, text: &str) -> Result<Url, String> {
    let shown = super::quote::clip(text);
    // Credentials are refused before anything could echo them.
    let authority = text
        .split_once("://")
        .map_or(text, |(_, rest)| rest)
        .split(['/', '?', '#'])
        .next()
        .unwrap_or_default();
    if authority.contains('@') {
        return Err(format!(
            "{what}: the URL carries credentials (`user@`); remove them"
        ));
    }
    let url = Url::parse(text).map_err(|e| {
        format!("{what}: `{shown}` is not a URL ({e}); write e.g. `https://idp.example.com/realms/acme`")
    })?;
    if url.host_str().is_none_or(str::is_empty) {
        return Err(format!("{what}: `{shown}` names no host"));
    }
    match url.scheme() {
        "https" => {}
        "http" if is_loopback(&url) => {}
        "http" => {
            return Err(format!(
                "{what}: `{shown}` is plain `http://` to another machine, where anyone on the path could swap the signing keys; use `https://` (with `identity.oidc.ca_file` for a private CA)"
            ))
        }
        other => {
            return Err(format!(
                "{what}: scheme `{other}` is not supported; use `https://`"
            ))
        }
    }
    if url.query().is_some() || url.fragment().is_some() || text.contains('#') {
        return Err(format!(
            "{what}: `{shown}` has a query or fragment; give the issuer URL only"
        ));
    }
    Ok(url)
}

/// Validates `identity`; the errors are `key.path: problem` lines.
pub(crate) fn oidc_config(
    path: &Path,
    file: IdentityFile,
) -> Result<Option<OidcConfig>, Vec<String>> {
    let Some(f) = file.oidc else {
        return Ok(None);
    };
    let mut problems = Vec::new();
    let issuer = f.issuer.trim().to_owned();
    let discovery_url = match check_fetch_url("identity.oidc.issuer", &issuer) {
        Ok(_) => {
            let text = format!(
                "{}/.well-known/openid-configuration",
                issuer.trim_end_matches('/')
            );
            Url::parse(&text)
                .map_err(|e| problems.push(format!("identity.oidc.issuer: {e}")))
                .ok()
        }
        Err(e) => {
            problems.push(e);
            None
        }
    };
    let audience = f.audience.trim().to_owned();
    if audience.is_empty() {
        problems.push(
            "identity.oidc.audience: empty; name the `aud` Warden's tokens carry (the client id the identity provider issues them for, e.g. `warden`)".to_owned(),
        );
    }
    let mut claim = |key: &str, given: Option<String>, default: &str| {
        let name = given.map_or_else(|| default.to_owned(), |g| g.trim().to_owned());
        if name.is_empty() || name.len() > MAX_CLAIM_NAME {
            problems.push(format!(
                "identity.oidc.{key}: give a claim name of 1 to {MAX_CLAIM_NAME} characters (default `{default}`)"
            ));
        }
        name
    };
    let groups_claim = claim("groups_claim", f.groups_claim, DEFAULT_GROUPS_CLAIM);
    let user_claim = claim("user_claim", f.user_claim, DEFAULT_USER_CLAIM);
    let algorithms = match f.algorithms {
        None => DEFAULT_ALGORITHMS.to_vec(),
        Some(list) => {
            let (algs, bad) = parse_algorithms(&list);
            problems.extend(bad);
            algs
        }
    };
    let base = path.parent().unwrap_or(Path::new(""));
    let ca_file = f.ca_file.map(|file| {
        if file.is_absolute() {
            file
        } else {
            base.join(file)
        }
    });
    if let (Some(_), Some(url)) = (&ca_file, &discovery_url) {
        if url.scheme() != "https" {
            problems.push(format!(
                "identity.oidc.ca_file: the issuer `{issuer}` is not `https://`, so there is no certificate to check; remove `ca_file` or use `https://`"
            ));
        }
    }
    match discovery_url {
        Some(discovery_url) if problems.is_empty() => Ok(Some(OidcConfig {
            issuer,
            discovery_url,
            audience,
            groups_claim,
            user_claim,
            algorithms,
            ca_file,
        })),
        _ => Err(problems),
    }
}

/// `identity.oidc.algorithms`: known asymmetric JWS algorithms, at least
/// one, each once.
fn parse_algorithms(list: &[String]) -> (Vec<Algorithm>, Vec<String>) {
    let mut algs = Vec::new();
    let mut problems = Vec::new();
    if list.is_empty() {
        problems.push(format!(
            "identity.oidc.algorithms: empty, so no token could be accepted; name at least one of {} (default {})",
            names(ASYMMETRIC_ALGORITHMS),
            names(DEFAULT_ALGORITHMS)
        ));
    }
    for (i, text) in list.iter().enumerate() {
        let t = text.trim();
        let at = format!("identity.oidc.algorithms[{i}]");
        match t.parse::<Algorithm>() {
            _ if t.eq_ignore_ascii_case("none") => problems.push(format!(
                "{at}: `none` means unsigned tokens, which anyone can forge; it is never accepted"
            )),
            Ok(a) if !ASYMMETRIC_ALGORITHMS.contains(&a) => problems.push(format!(
                "{at}: `{t}` is a shared-secret (HMAC) algorithm: Warden would need the identity provider's secret, and anyone holding it could mint tokens; use an asymmetric one ({})",
                names(ASYMMETRIC_ALGORITHMS)
            )),
            Ok(a) if algs.contains(&a) => {
                problems.push(format!("{at}: `{t}` is listed twice; list it once"));
            }
            Ok(a) => algs.push(a),
            Err(_) => problems.push(format!(
                "{at}: `{}` is not a JWS algorithm Warden knows; use {}",
                super::quote::clip(t),
                names(ASYMMETRIC_ALGORITHMS)
            )),
        }
    }
    (algs, problems)
}
