//! OIDC bearer tokens: who a human caller is, by a token from the one
//! issuer named in `identity.oidc`.
//!
//! What it guarantees. A token is accepted only if, in this order: it is
//! at most [`MAX_TOKEN_BYTES`] long (checked before any parsing); its
//! header names an algorithm `identity.oidc.algorithms` allows (`none` and
//! the shared-secret `HS*` are refused whatever the config says); its
//! signature verifies with a key the issuer publishes in its JWKS, chosen
//! by the token's `kid` and matching the key's type, curve and `alg`; its
//! `iss` is the configured issuer, its `aud` holds the configured
//! audience, its `exp` is in the future and its `nbf` (if any) in the past,
//! both within [`LEEWAY`]; and its user claim is a non-empty string (not
//! an unverified e-mail address). The groups claim, when present, must be
//! a list of strings. The caller is then the user the claim names, with
//! those groups, for [`warden_core::access`] to judge.
//!
//! Keys. The issuer's discovery document (`{issuer}/.well-known/
//! openid-configuration`, which must name the same issuer) gives the JWKS
//! URL; both are fetched over `https` (or `http` to this machine), bounded
//! in size and time, without following redirects. The keys are cached. A
//! token signed by a key not in the cache triggers one fetch, and fetches
//! happen at most once per [`OidcOptions::refetch_interval`] (a minute):
//! a flood of tokens naming made-up keys costs the issuer one request a
//! minute. Keys older than [`OidcOptions::keys_max_age`] are fetched again
//! when next used, so a key the issuer withdraws stops working; while the
//! issuer cannot be reached the keys in hand still serve.
//!
//! Verified tokens. A verified token is remembered by its SHA-256 until
//! its `exp` (at most [`OidcOptions::cached_tokens`] of them), so a repeat
//! costs a hash and a map lookup. A fetch of new keys empties this cache.
//!
//! Messages say precisely why a token was refused and never repeat it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwapOption;
use base64::Engine as _;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, AlgorithmFamily, DecodingKey, Validation};
use reqwest::Url;
use serde_json::{Map, Value};
use warden_core::access::Subject;

use crate::config::{check_fetch_url, OidcConfig};
use crate::http_client::{read_limited, transport_detail, ReadError};

mod error;
mod provider;

pub use error::OidcError;

/// The longest bearer token looked at; a longer one is refused unread.
pub const MAX_TOKEN_BYTES: usize = 8 * 1024;
/// Clock skew allowed on `exp` and `nbf` between Warden and the issuer.
pub const LEEWAY: Duration = Duration::from_secs(60);
/// The largest discovery document read.
pub const MAX_DISCOVERY_BYTES: usize = 64 * 1024;
/// The largest JWKS read.
pub const MAX_JWKS_BYTES: usize = 256 * 1024;
/// Bound on one fetch (connect, send, read the whole answer).
pub const FETCH_TIMEOUT: Duration = Duration::from_secs(10);

/// Makes jsonwebtoken use `ring` (see `oidc/provider.rs`). Every use of
/// jsonwebtoken in this process must come after it: [`OidcVerifier::new`]
/// calls it, and so must a test that mints tokens first.
pub fn install_crypto() {
    provider::install();
}

/// How often keys are fetched and how many tokens are remembered. The
/// defaults are what `warden serve` uses; tests shorten the intervals.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OidcOptions {
    /// The least time between two fetches of the keys (one minute).
    pub refetch_interval: Duration,
    /// Keys older than this are fetched again when next used (one hour).
    pub keys_max_age: Duration,
    /// The most verified tokens remembered (10,000).
    pub cached_tokens: usize,
}

impl Default for OidcOptions {
    fn default() -> Self {
        Self {
            refetch_interval: Duration::from_secs(60),
            keys_max_age: Duration::from_secs(3600),
            cached_tokens: 10_000,
        }
    }
}

/// A signed-in human: the user claim and the groups claim of a token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OidcUser {
    /// The user claim (`identity.oidc.user_claim`, default `email`).
    pub user: String,
    /// The groups claim (`identity.oidc.groups_claim`, default `groups`).
    pub groups: Vec<String>,
}

impl OidcUser {
    /// The caller as the access model sees it: a user with groups, no key.
    pub fn subject(&self) -> Subject {
        Subject {
            user: Some(self.user.clone()),
            groups: self.groups.clone(),
            key: None,
        }
    }
}

/// Verifies the bearer tokens of the issuer in `identity.oidc`.
pub struct OidcVerifier {
    config: OidcConfig,
    options: OidcOptions,
    http: reqwest::Client,
    keys: ArcSwapOption<KeySet>,
    refresh: tokio::sync::Mutex<Refresh>,
    tokens: TokenCache,
}

impl std::fmt::Debug for OidcVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OidcVerifier")
            .field("issuer", &self.config.issuer)
            .finish_non_exhaustive()
    }
}

/// The issuer's keys as last fetched.
struct KeySet {
    keys: Vec<SigningKey>,
    /// When (for the age check).
    fetched: Instant,
    /// When (for messages).
    fetched_at: SystemTime,
}

/// One usable key of the JWKS.
struct SigningKey {
    kid: Option<String>,
    /// The JWK's `alg`, if it names one.
    alg: Option<Algorithm>,
    family: AlgorithmFamily,
    /// The JWK's `crv`, for EC and OKP keys.
    curve: Option<String>,
    key: DecodingKey,
}

/// The fetch state, behind one async lock so concurrent misses wait for
/// one fetch instead of each making their own.
#[derive(Default)]
struct Refresh {
    last_attempt: Option<(Instant, SystemTime)>,
    jwks_uri: Option<Url>,
    last_error: Option<String>,
}

enum Selected<'a> {
    Key(&'a DecodingKey, String),
    Unknown,
}

impl KeySet {
    /// The key for a token with `kid` and `alg`; `Unknown` for a `kid` the
    /// set lacks (a fetch may bring it).
    fn select(&self, kid: Option<&str>, alg: Algorithm) -> Result<Selected<'_>, OidcError> {
        let fits = |k: &SigningKey| -> Result<(), String> {
            let want = provider::family(alg);
            if k.family != want {
                return Err(format!("it is {}", family_name(k.family)));
            }
            if let Some(a) = k.alg.filter(|a| *a != alg) {
                return Err(format!("the issuer publishes it for `{a:?}`"));
            }
            let curve = match alg {
                Algorithm::ES256 => Some("P-256"),
                Algorithm::ES384 => Some("P-384"),
                Algorithm::EdDSA => Some("Ed25519"),
                _ => None,
            };
            match (curve, k.curve.as_deref()) {
                (Some(want), Some(have)) if want != have => {
                    Err(format!("it is a `{}` key", shown(have)))
                }
                (Some(want), None) => {
                    Err(format!("it names no curve, and `{alg:?}` needs `{want}`"))
                }
                _ => Ok(()),
            }
        };
        match kid {
            Some(kid) => {
                let mut named = self.keys.iter().filter(|k| k.kid.as_deref() == Some(kid));
                let Some(first) = named.next() else {
                    return Ok(Selected::Unknown);
                };
                let mut why = match fits(first) {
                    Ok(()) => return Ok(Selected::Key(&first.key, kid.to_owned())),
                    Err(why) => why,
                };
                for k in named {
                    match fits(k) {
                        Ok(()) => return Ok(Selected::Key(&k.key, kid.to_owned())),
                        Err(w) => why = w,
                    }
                }
                Err(OidcError::KeyMismatch {
                    kid: shown(kid),
                    alg: format!("{alg:?}"),
                    why,
                })
            }
            None => {
                let fitting: Vec<&SigningKey> =
                    self.keys.iter().filter(|k| fits(k).is_ok()).collect();
                match fitting.as_slice() {
                    [one] => Ok(Selected::Key(
                        &one.key,
                        one.kid.clone().unwrap_or_else(|| "(no kid)".to_owned()),
                    )),
                    other => Err(OidcError::NoKeyId {
                        alg: format!("{alg:?}"),
                        candidates: other.len(),
                    }),
                }
            }
        }
    }
}

impl OidcVerifier {
    /// A verifier for `config` with the default [`OidcOptions`]. Reads the
    /// CA file now; fetches nothing until a token arrives or
    /// [`OidcVerifier::prefetch`] runs.
    pub fn new(config: OidcConfig) -> Result<Self, String> {
        Self::with_options(config, OidcOptions::default())
    }

    /// A verifier with other fetch intervals or cache size (tests).
    pub fn with_options(config: OidcConfig, options: OidcOptions) -> Result<Self, String> {
        install_crypto();
        let mut builder = reqwest::Client::builder()
            .timeout(FETCH_TIMEOUT)
            .connect_timeout(FETCH_TIMEOUT)
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("warden/", env!("CARGO_PKG_VERSION")));
        if let Some(path) = &config.ca_file {
            let certs = crate::http_client::read_ca_file(path)
                .map_err(|e| format!("identity.oidc.ca_file: {e}"))?;
            for cert in certs {
                builder = builder.add_root_certificate(cert);
            }
        }
        let http = builder.build().map_err(|e| {
            format!(
                "identity.oidc: cannot set up the HTTP client: {}",
                transport_detail(e)
            )
        })?;
        Ok(Self {
            tokens: TokenCache::new(options.cached_tokens),
            config,
            options,
            http,
            keys: ArcSwapOption::empty(),
            refresh: tokio::sync::Mutex::default(),
        })
    }

    /// The configuration it verifies against.
    pub fn config(&self) -> &OidcConfig {
        &self.config
    }

    /// Fetches the discovery document and the keys now (at startup, so the
    /// first sign-in does not wait), unless a fetch is not due yet.
    pub async fn prefetch(&self) -> Result<(), OidcError> {
        let mut refresh = self.refresh.lock().await;
        if self.keys.load().is_some() || !self.may_fetch(&refresh) {
            return Ok(());
        }
        self.fetch_into(&mut refresh)
            .await
            .map(|_| ())
            .map_err(OidcError::KeysUnavailable)
    }

    /// Who `token` says the caller is, if the token is good.
    pub async fn verify(&self, token: &str) -> Result<Arc<OidcUser>, OidcError> {
        if token.len() > MAX_TOKEN_BYTES {
            return Err(OidcError::TooLarge {
                bytes: token.len(),
                limit: MAX_TOKEN_BYTES,
            });
        }
        let hash = TokenCache::hash(token);
        let now = unix_now();
        if let Some(user) = self.tokens.get(&hash, now) {
            return Ok(user);
        }
        let (alg, kid) = self.read_header(token)?;
        let (key, kid) = self.key_for(kid.as_deref(), alg).await?;
        let mut validation = Validation::new(alg);
        validation.set_issuer(&[&self.config.issuer]);
        validation.set_audience(&[&self.config.audience]);
        validation.set_required_spec_claims(&["exp", "iss", "aud"]);
        validation.leeway = LEEWAY.as_secs();
        validation.validate_exp = true;
        validation.validate_nbf = true;
        let claims = match jsonwebtoken::decode::<Map<String, Value>>(token, &key, &validation) {
            Ok(data) => data.claims,
            Err(e) => return Err(self.refusal(e.kind(), token, &kid)),
        };
        let user = Arc::new(self.user_of(&claims)?);
        // `exp` was checked to be an integer by the validation above.
        if let Some(exp) = claims.get("exp").and_then(Value::as_u64) {
            self.tokens.insert(hash, Arc::clone(&user), exp, now);
        }
        Ok(user)
    }

    /// The token's `alg` (allowed) and `kid`, from its header alone.
    fn read_header(&self, token: &str) -> Result<(Algorithm, Option<String>), OidcError> {
        let parts: Vec<&str> = token.split('.').collect();
        let [header, _, _] = parts.as_slice() else {
            return Err(OidcError::Malformed(format!(
                "it has {} dot-separated parts, not 3",
                parts.len()
            )));
        };
        let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(header)
            .map_err(|_| OidcError::Malformed("its header is not base64url".to_owned()))?;
        let header: Map<String, Value> = serde_json::from_slice(&bytes)
            .map_err(|_| OidcError::Malformed("its header is not a JSON object".to_owned()))?;
        if header.contains_key("crit") {
            return Err(OidcError::Malformed(
                "its header has critical extensions (`crit`), which Warden does not support"
                    .to_owned(),
            ));
        }
        let Some(alg) = header.get("alg").and_then(Value::as_str) else {
            return Err(OidcError::Malformed(
                "its header names no algorithm (`alg`)".to_owned(),
            ));
        };
        if alg.eq_ignore_ascii_case("none") {
            return Err(OidcError::Unsigned);
        }
        let parsed = alg.parse::<Algorithm>().ok();
        if let Some(a @ (Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512)) = parsed {
            return Err(OidcError::Symmetric(format!("{a:?}")));
        }
        let alg = match parsed {
            Some(a) if self.config.allows(a) => a,
            _ => {
                return Err(OidcError::AlgorithmNotAllowed {
                    alg: shown(alg),
                    allowed: self.config.algorithm_list(),
                })
            }
        };
        let kid = match header.get("kid") {
            None => None,
            Some(Value::String(kid)) => Some(kid.clone()),
            Some(_) => {
                return Err(OidcError::Malformed(
                    "its key id (`kid`) is not a string".to_owned(),
                ))
            }
        };
        Ok((alg, kid))
    }

    /// The key a token names, fetching the issuer's keys when none are in
    /// hand, when they are older than `keys_max_age`, or when the `kid` is
    /// unknown, at most once per `refetch_interval`.
    async fn key_for(
        &self,
        kid: Option<&str>,
        alg: Algorithm,
    ) -> Result<(DecodingKey, String), OidcError> {
        if let Some(set) = self.keys.load().as_ref() {
            if set.fetched.elapsed() < self.options.keys_max_age {
                if let Selected::Key(key, kid) = set.select(kid, alg)? {
                    return Ok((key.clone(), kid));
                }
            }
        }
        let mut refresh = self.refresh.lock().await;
        // Another request may have fetched while this one waited.
        let current = self.keys.load_full();
        if let Some(set) = &current {
            if set.fetched.elapsed() < self.options.keys_max_age {
                if let Selected::Key(key, kid) = set.select(kid, alg)? {
                    return Ok((key.clone(), kid));
                }
            }
        }
        if self.may_fetch(&refresh) {
            match self.fetch_into(&mut refresh).await {
                Ok(set) => {
                    return match set.select(kid, alg)? {
                        Selected::Key(key, kid) => Ok((key.clone(), kid)),
                        Selected::Unknown => Err(OidcError::UnknownKey {
                            kid: shown(kid.unwrap_or_default()),
                            detail: format!(
                                "the issuer does not publish it (its keys were fetched just now, at {})",
                                rfc3339(set.fetched_at)
                            ),
                        }),
                    };
                }
                Err(reason) => {
                    // The keys in hand still serve while the issuer is
                    // out of reach.
                    if let Some(set) = &current {
                        if let Selected::Key(key, kid) = set.select(kid, alg)? {
                            return Ok((key.clone(), kid));
                        }
                    }
                    return Err(OidcError::KeysUnavailable(reason));
                }
            }
        }
        let next = refresh
            .last_attempt
            .map(|(_, at)| rfc3339(at + self.options.refetch_interval))
            .unwrap_or_default();
        match &current {
            Some(set) => match set.select(kid, alg)? {
                Selected::Key(key, kid) => Ok((key.clone(), kid)),
                Selected::Unknown => Err(OidcError::UnknownKey {
                    kid: shown(kid.unwrap_or_default()),
                    detail: format!(
                        "the issuer did not publish it when its keys were fetched at {}, and they are fetched at most every {} s (next after {next}); if the issuer has just rotated its keys, try again then",
                        rfc3339(set.fetched_at),
                        self.options.refetch_interval.as_secs()
                    ),
                }),
            },
            None => Err(OidcError::KeysUnavailable(format!(
                "{}; the next try is after {next}",
                refresh.last_error.as_deref().unwrap_or("not fetched yet")
            ))),
        }
    }

    fn may_fetch(&self, refresh: &Refresh) -> bool {
        refresh
            .last_attempt
            .is_none_or(|(at, _)| at.elapsed() >= self.options.refetch_interval)
    }

    /// One fetch (discovery when its result is not in hand, then the
    /// JWKS); on success the new keys replace the old and the verified
    /// tokens are forgotten.
    async fn fetch_into(&self, refresh: &mut Refresh) -> Result<Arc<KeySet>, String> {
        refresh.last_attempt = Some((Instant::now(), SystemTime::now()));
        let fetched = self.fetch(refresh).await;
        match fetched {
            Ok(set) => {
                let set = Arc::new(set);
                self.keys.store(Some(Arc::clone(&set)));
                self.tokens.clear();
                refresh.last_error = None;
                tracing::info!(
                    target: "warden::oidc",
                    issuer = %self.config.issuer,
                    keys = set.keys.len(),
                    "fetched the identity provider's signing keys"
                );
                Ok(set)
            }
            Err(reason) => {
                // Discover again next time: the JWKS may have moved.
                refresh.jwks_uri = None;
                refresh.last_error = Some(reason.clone());
                tracing::warn!(
                    target: "warden::oidc",
                    issuer = %self.config.issuer,
                    error = %reason,
                    "cannot fetch the identity provider's signing keys"
                );
                Err(reason)
            }
        }
    }

    async fn fetch(&self, refresh: &mut Refresh) -> Result<KeySet, String> {
        let jwks_uri = match &refresh.jwks_uri {
            Some(uri) => uri.clone(),
            None => {
                let uri = self.discover().await?;
                refresh.jwks_uri = Some(uri.clone());
                uri
            }
        };
        let doc = self.get_json(&jwks_uri, MAX_JWKS_BYTES, "the JWKS").await?;
        let Some(listed) = doc.get("keys").and_then(Value::as_array) else {
            return Err(format!("the JWKS at `{jwks_uri}` has no `keys` list"));
        };
        let keys: Vec<SigningKey> = listed.iter().filter_map(signing_key).collect();
        if !keys.iter().any(|k| {
            self.config
                .algorithms
                .iter()
                .any(|a| provider::family(*a) == k.family)
        }) {
            return Err(format!(
                "the JWKS at `{jwks_uri}` holds {} keys, none of them a signing key for {}",
                listed.len(),
                self.config.algorithm_list()
            ));
        }
        Ok(KeySet {
            keys,
            fetched: Instant::now(),
            fetched_at: SystemTime::now(),
        })
    }

    /// The JWKS URL, from the discovery document, which must name the
    /// configured issuer exactly.
    async fn discover(&self) -> Result<Url, String> {
        let url = &self.config.discovery_url;
        let doc = self
            .get_json(url, MAX_DISCOVERY_BYTES, "the discovery document")
            .await?;
        let issuer = doc.get("issuer").and_then(Value::as_str);
        if issuer != Some(self.config.issuer.as_str()) {
            return Err(match issuer {
                Some(named) => format!(
                    "the discovery document at `{url}` names the issuer `{}`, not `{}`; `identity.oidc.issuer` must be written exactly as the issuer names itself",
                    shown(named),
                    self.config.issuer
                ),
                None => format!("the discovery document at `{url}` names no `issuer`"),
            });
        }
        let Some(jwks_uri) = doc.get("jwks_uri").and_then(Value::as_str) else {
            return Err(format!(
                "the discovery document at `{url}` names no `jwks_uri`"
            ));
        };
        check_fetch_url("the discovery document's `jwks_uri`", jwks_uri)
    }

    async fn get_json(&self, url: &Url, max: usize, what: &str) -> Result<Value, String> {
        let mut response = self
            .http
            .get(url.clone())
            .header(reqwest::header::ACCEPT, "application/json")
            .send()
            .await
            .map_err(|e| format!("{what} at `{url}`: {}", transport_detail(e)))?;
        let status = response.status();
        if !status.is_success() {
            return Err(format!("{what} at `{url}` answered HTTP {status}"));
        }
        let body = read_limited(&mut response, max)
            .await
            .map_err(|e| match e {
                ReadError::TooLarge => format!("{what} at `{url}` is larger than {max} bytes"),
                ReadError::Transport(detail) => format!("{what} at `{url}`: {detail}"),
            })?;
        serde_json::from_slice(&body).map_err(|e| format!("{what} at `{url}` is not JSON: {e}"))
    }

    /// Why jsonwebtoken refused a token, in words. Past the signature
    /// check (expiry, audience, issuer) the claims are read again only to
    /// say what they were.
    fn refusal(&self, kind: &ErrorKind, token: &str, kid: &str) -> OidcError {
        let claims = || {
            jsonwebtoken::dangerous::insecure_decode::<Map<String, Value>>(token)
                .map(|d| d.claims)
                .unwrap_or_default()
        };
        let time = |claim: &str| {
            claims().get(claim).and_then(Value::as_u64).map_or_else(
                || "?".to_owned(),
                |s| rfc3339(UNIX_EPOCH + Duration::from_secs(s)),
            )
        };
        match kind {
            ErrorKind::InvalidSignature => OidcError::BadSignature { kid: shown(kid) },
            ErrorKind::ExpiredSignature => OidcError::Expired {
                at: time("exp"),
                leeway_s: LEEWAY.as_secs(),
            },
            ErrorKind::ImmatureSignature => OidcError::NotYetValid {
                at: time("nbf"),
                leeway_s: LEEWAY.as_secs(),
            },
            ErrorKind::InvalidAudience => OidcError::WrongAudience {
                got: describe(claims().get("aud")),
                want: self.config.audience.clone(),
            },
            ErrorKind::InvalidIssuer => OidcError::WrongIssuer {
                got: describe(claims().get("iss")),
                want: self.config.issuer.clone(),
            },
            ErrorKind::MissingRequiredClaim(claim) => OidcError::MissingClaim {
                claim: claim.clone(),
                hint: " (Warden requires `exp`, `iss` and `aud`)".to_owned(),
            },
            ErrorKind::InvalidClaimFormat(claim) => OidcError::ClaimType {
                claim: claim.clone(),
                want: "a number of seconds",
                found: describe(claims().get(claim.as_str())),
                hint: String::new(),
            },
            ErrorKind::InvalidAlgorithm | ErrorKind::InvalidKeyFormat => OidcError::KeyMismatch {
                kid: shown(kid),
                alg: "its algorithm".to_owned(),
                why: "the key type does not match".to_owned(),
            },
            ErrorKind::Base64(_) => OidcError::Malformed("a part is not base64url".to_owned()),
            ErrorKind::Json(_) | ErrorKind::Utf8(_) => {
                OidcError::Malformed("its claims are not a JSON object".to_owned())
            }
            other => OidcError::Malformed(format!("{other:?}")),
        }
    }

    /// The user and groups of verified claims.
    fn user_of(&self, claims: &Map<String, Value>) -> Result<OidcUser, OidcError> {
        let user_claim = &self.config.user_claim;
        let user = match claims.get(user_claim) {
            None => {
                return Err(OidcError::MissingClaim {
                    claim: user_claim.clone(),
                    hint: ", which names the user (`identity.oidc.user_claim`); have the identity provider put it in Warden's tokens, or name another claim (e.g. `sub`)"
                        .to_owned(),
                })
            }
            Some(Value::String(s)) if !s.trim().is_empty() => s.clone(),
            Some(other) => {
                return Err(OidcError::ClaimType {
                    claim: user_claim.clone(),
                    want: "a non-empty string",
                    found: describe(Some(other)),
                    hint: " (`identity.oidc.user_claim`)".to_owned(),
                })
            }
        };
        if user_claim == "email"
            && matches!(claims.get("email_verified"), Some(Value::Bool(false)))
                | matches!(claims.get("email_verified"), Some(Value::String(s)) if s == "false")
        {
            return Err(OidcError::EmailNotVerified);
        }
        let groups_claim = &self.config.groups_claim;
        let wrong = |found: String| OidcError::ClaimType {
            claim: groups_claim.clone(),
            want: "a list of strings",
            found,
            hint: " (`identity.oidc.groups_claim`)".to_owned(),
        };
        let groups = match claims.get(groups_claim) {
            None => Vec::new(),
            Some(Value::Array(items)) => items
                .iter()
                .map(|v| match v {
                    Value::String(s) => Ok(s.clone()),
                    other => Err(wrong(format!("a list holding {}", describe(Some(other))))),
                })
                .collect::<Result<Vec<_>, _>>()?,
            Some(other) => return Err(wrong(describe(Some(other)))),
        };
        Ok(OidcUser { user, groups })
    }
}

/// A JWKS entry Warden can verify with: a public RSA, EC or OKP key not
/// marked for encryption, whose `alg` (if any) is a JWS algorithm. Others
/// (`oct` shared secrets, encryption keys, unknown types) are skipped.
fn signing_key(entry: &Value) -> Option<SigningKey> {
    let text = |k: &str| entry.get(k).and_then(Value::as_str);
    if text("use").is_some_and(|u| u != "sig") {
        return None;
    }
    let family = match text("kty")? {
        "RSA" => AlgorithmFamily::Rsa,
        "EC" => AlgorithmFamily::Ec,
        "OKP" => AlgorithmFamily::Ed,
        _ => return None,
    };
    let alg = match text("alg") {
        None => None,
        Some(a) => Some(a.parse::<Algorithm>().ok()?),
    };
    let jwk: jsonwebtoken::jwk::Jwk = serde_json::from_value(entry.clone()).ok()?;
    let key = DecodingKey::from_jwk(&jwk).ok()?;
    if key.family() != family {
        return None;
    }
    Some(SigningKey {
        kid: text("kid").map(str::to_owned),
        alg,
        family,
        curve: text("crv").map(str::to_owned),
        key,
    })
}

fn family_name(family: AlgorithmFamily) -> &'static str {
    match family {
        AlgorithmFamily::Rsa => "an RSA key",
        AlgorithmFamily::Ec => "an EC key",
        AlgorithmFamily::Ed => "an OKP (Ed25519) key",
        AlgorithmFamily::Hmac => "a shared secret",
    }
}

/// Verified tokens by SHA-256, each until its `exp`, at most `capacity`.
struct TokenCache {
    capacity: usize,
    entries: Mutex<HashMap<[u8; 32], Cached>>,
}

struct Cached {
    user: Arc<OidcUser>,
    exp: u64,
}

impl TokenCache {
    fn new(capacity: usize) -> Self {
        Self {
            capacity,
            entries: Mutex::new(HashMap::new()),
        }
    }

    fn hash(token: &str) -> [u8; 32] {
        let digest = ring::digest::digest(&ring::digest::SHA256, token.as_bytes());
        let mut out = [0u8; 32];
        out.copy_from_slice(digest.as_ref());
        out
    }

    /// The user of a token verified before and not expired at `now`.
    fn get(&self, hash: &[u8; 32], now: u64) -> Option<Arc<OidcUser>> {
        let entries = self.entries.lock().ok()?;
        entries
            .get(hash)
            .filter(|c| now < c.exp)
            .map(|c| Arc::clone(&c.user))
    }

    fn insert(&self, hash: [u8; 32], user: Arc<OidcUser>, exp: u64, now: u64) {
        let Ok(mut entries) = self.entries.lock() else {
            return;
        };
        if entries.len() >= self.capacity {
            entries.retain(|_, c| now < c.exp);
        }
        while entries.len() >= self.capacity {
            // Full of live tokens: any one goes (it is verified again when
            // it comes back).
            let Some(victim) = entries.keys().next().copied() else {
                break;
            };
            entries.remove(&victim);
        }
        if self.capacity > 0 {
            entries.insert(hash, Cached { user, exp });
        }
    }

    fn clear(&self) {
        if let Ok(mut entries) = self.entries.lock() {
            entries.clear();
        }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.entries.lock().map_or(0, |e| e.len())
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// An instant as RFC 3339 in UTC, to the second.
fn rfc3339(t: SystemTime) -> String {
    let secs = t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    i64::try_from(secs)
        .ok()
        .and_then(|s| jiff::Timestamp::from_second(s).ok())
        .map_or_else(|| format!("{secs} s after the epoch"), |ts| ts.to_string())
}

/// A value taken from a token, for a message: short, escaped.
fn shown(text: &str) -> String {
    const MAX: usize = 64;
    let clipped: String = text.chars().take(MAX).collect();
    let escaped = clipped.escape_default().to_string();
    if text.chars().count() > MAX {
        format!("{escaped}…")
    } else {
        escaped
    }
}

/// What a claim holds, for a message.
fn describe(value: Option<&Value>) -> String {
    match value {
        None => "nothing (absent)".to_owned(),
        Some(Value::Null) => "null".to_owned(),
        Some(Value::Bool(b)) => format!("the boolean `{b}`"),
        Some(Value::Number(n)) => format!("the number `{n}`"),
        Some(Value::String(s)) => format!("the string `{}`", shown(s)),
        Some(Value::Array(items)) => format!(
            "the list [{}]",
            items
                .iter()
                .take(5)
                .map(|v| match v {
                    Value::String(s) => format!("`{}`", shown(s)),
                    other => describe(Some(other)),
                })
                .collect::<Vec<_>>()
                .join(", ")
        ),
        Some(Value::Object(_)) => "an object".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(name: &str) -> Arc<OidcUser> {
        Arc::new(OidcUser {
            user: name.to_owned(),
            groups: vec![],
        })
    }

    #[test]
    fn the_token_cache_keeps_tokens_until_exp_and_stays_bounded() {
        let cache = TokenCache::new(2);
        let (a, b, c) = (
            TokenCache::hash("a"),
            TokenCache::hash("b"),
            TokenCache::hash("c"),
        );
        cache.insert(a, user("a"), 100, 10);
        assert_eq!(cache.get(&a, 99).unwrap().user, "a");
        assert!(cache.get(&a, 100).is_none(), "not at or after exp");
        cache.insert(b, user("b"), 50, 10);
        cache.insert(c, user("c"), 200, 60);
        // b had expired at 60: it made room.
        assert_eq!(cache.len(), 2);
        assert!(cache.get(&a, 60).is_some() && cache.get(&c, 60).is_some());
        // Full of live tokens: one goes, the new one is in.
        cache.insert(b, user("b"), 300, 60);
        assert_eq!(cache.len(), 2);
        assert!(cache.get(&b, 60).is_some());
        cache.clear();
        assert_eq!(cache.len(), 0);
    }

    #[test]
    fn values_from_tokens_are_shown_short_and_escaped() {
        assert_eq!(shown("k1"), "k1");
        assert_eq!(shown("a\nb"), "a\\nb");
        let long = "x".repeat(500);
        assert_eq!(shown(&long).chars().count(), 65);
        assert_eq!(
            describe(Some(&serde_json::json!(["a", 1]))),
            "the list [`a`, the number `1`]"
        );
        assert_eq!(
            rfc3339(UNIX_EPOCH + Duration::from_secs(86_400)),
            "1970-01-02T00:00:00Z"
        );
    }
}
