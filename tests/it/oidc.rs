//! OIDC bearer tokens (`identity.oidc`) against an issuer the test runs:
//! discovery and JWKS served over HTTP on 127.0.0.1 by a small axum app,
//! signing keys made here (ECDSA P-256 by rcgen; one fixed RSA test key),
//! tokens minted with jsonwebtoken's encoder. Then one end-to-end run of
//! `/reports/chargeback` with a token, a role binding by group, and none.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::body::Body;
use axum::extract::State;
use axum::http::{Request, StatusCode};
use axum::routing;
use axum::{Json, Router};
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine as _;
use http_body_util::BodyExt;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{json, Value};
use tower::ServiceExt;
use warden_server::config::{load_config, OidcConfig};
use warden_server::oidc::{OidcError, OidcOptions, OidcVerifier, MAX_TOKEN_BYTES};
use warden_server::AppState;
use warden_store::Store;

use crate::skypilot_client::TempDir;
use crate::skypilot_sync::{test_pki, TlsFront};

const AUDIENCE: &str = "warden";

/// What the test issuer publishes, and how often it was asked.
#[derive(Default)]
struct Published {
    issuer: Mutex<String>,
    jwks: Mutex<Vec<Value>>,
    discovery_hits: AtomicUsize,
    jwks_hits: AtomicUsize,
}

/// An OIDC issuer on 127.0.0.1: `GET {issuer}/.well-known/openid-configuration`
/// and `GET {issuer}/jwks`.
struct Issuer {
    url: String,
    published: Arc<Published>,
}

impl Issuer {
    async fn start() -> Issuer {
        let published = Arc::new(Published::default());
        let app = Router::new()
            .route(
                "/realms/test/.well-known/openid-configuration",
                routing::get(|State(p): State<Arc<Published>>| async move {
                    p.discovery_hits.fetch_add(1, Ordering::SeqCst);
                    let issuer = p.issuer.lock().unwrap().clone();
                    Json(json!({
                        "issuer": issuer,
                        "jwks_uri": format!("{issuer}/jwks"),
                        "id_token_signing_alg_values_supported": ["RS256", "ES256"],
                    }))
                }),
            )
            .route(
                "/realms/test/jwks",
                routing::get(|State(p): State<Arc<Published>>| async move {
                    p.jwks_hits.fetch_add(1, Ordering::SeqCst);
                    let keys = p.jwks.lock().unwrap().clone();
                    Json(json!({ "keys": keys }))
                }),
            )
            .with_state(Arc::clone(&published));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!(
            "http://127.0.0.1:{}/realms/test",
            listener.local_addr().unwrap().port()
        );
        *published.issuer.lock().unwrap() = url.clone();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Issuer { url, published }
    }

    fn publish(&self, keys: &[&Key]) {
        *self.published.jwks.lock().unwrap() = keys.iter().map(|k| k.jwk.clone()).collect();
    }

    fn jwks_hits(&self) -> usize {
        self.published.jwks_hits.load(Ordering::SeqCst)
    }

    fn discovery_hits(&self) -> usize {
        self.published.discovery_hits.load(Ordering::SeqCst)
    }

    fn config(&self) -> OidcConfig {
        OidcConfig {
            issuer: self.url.clone(),
            discovery_url: format!("{}/.well-known/openid-configuration", self.url)
                .parse()
                .unwrap(),
            audience: AUDIENCE.to_owned(),
            groups_claim: "groups".to_owned(),
            user_claim: "email".to_owned(),
            algorithms: vec![Algorithm::RS256, Algorithm::ES256],
            ca_file: None,
        }
    }

    fn verifier(&self, options: OidcOptions) -> OidcVerifier {
        OidcVerifier::with_options(self.config(), options).unwrap()
    }

    /// Claims of a token of this issuer for `email`, valid for 10 minutes.
    fn claims(&self, email: &str) -> Value {
        let now = now();
        json!({
            "iss": self.url,
            "aud": AUDIENCE,
            "sub": "4b8e1f0c",
            "email": email,
            "groups": ["finance", "staff"],
            "iat": now,
            "nbf": now - 5,
            "exp": now + 600,
        })
    }
}

/// A signing key and its public JWK.
struct Key {
    kid: String,
    alg: Algorithm,
    encoding: EncodingKey,
    jwk: Value,
}

impl Key {
    /// A fresh ECDSA P-256 key (ES256), its JWK's x and y from the public
    /// point `04 || x || y`.
    fn es256(kid: &str) -> Key {
        let pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let point = pair.public_key_raw();
        assert_eq!((point.len(), point[0]), (65, 4), "uncompressed P-256 point");
        let jwk = json!({
            "kty": "EC", "crv": "P-256", "use": "sig", "alg": "ES256", "kid": kid,
            "x": URL_SAFE_NO_PAD.encode(&point[1..33]),
            "y": URL_SAFE_NO_PAD.encode(&point[33..]),
        });
        Key {
            kid: kid.to_owned(),
            alg: Algorithm::ES256,
            encoding: EncodingKey::from_ec_der(&pair.serialize_der()),
            jwk,
        }
    }

    /// The fixed RSA test key (RS256): neither ring nor rcgen make RSA
    /// keys, so it was made once with `openssl genrsa -traditional 2048`.
    fn rs256(kid: &str) -> Key {
        let der = STANDARD.decode(RSA_PKCS1_DER_B64).unwrap();
        Key {
            kid: kid.to_owned(),
            alg: Algorithm::RS256,
            encoding: EncodingKey::from_rsa_der(&der),
            jwk: json!({ "kty": "RSA", "use": "sig", "kid": kid, "n": RSA_N, "e": "AQAB" }),
        }
    }

    fn mint(&self, claims: &Value) -> String {
        mint_as(self, &self.kid, claims)
    }
}

/// A token signed by `key` whose header names `kid`.
fn mint_as(key: &Key, kid: &str, claims: &Value) -> String {
    warden_server::oidc::install_crypto();
    let mut header = Header::new(key.alg);
    header.kid = Some(kid.to_owned());
    jsonwebtoken::encode(&header, claims, &key.encoding).unwrap()
}

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

fn err_text(e: &OidcError) -> String {
    e.to_string()
}

#[tokio::test]
async fn a_valid_token_makes_a_user_with_groups_and_a_repeat_is_cached() {
    let issuer = Issuer::start().await;
    let (ec, rsa) = (Key::es256("ec-1"), Key::rs256("rsa-1"));
    issuer.publish(&[&ec, &rsa]);
    let v = issuer.verifier(OidcOptions::default());
    let token = ec.mint(&issuer.claims("ada@acme.example"));
    let user = v.verify(&token).await.unwrap();
    assert_eq!(user.user, "ada@acme.example");
    assert_eq!(user.groups, ["finance", "staff"]);
    let subject = user.subject();
    assert_eq!(subject.user.as_deref(), Some("ada@acme.example"));
    assert!(subject.key.is_none());
    // RS256 with a JWK of modulus and exponent.
    let user = v
        .verify(&rsa.mint(&issuer.claims("bo@acme.example")))
        .await
        .unwrap();
    assert_eq!(user.user, "bo@acme.example");
    assert_eq!((issuer.discovery_hits(), issuer.jwks_hits()), (1, 1));
    // A repeat is answered from the cache: the same user, shared.
    let again = v.verify(&token).await.unwrap();
    let third = v.verify(&token).await.unwrap();
    assert!(Arc::ptr_eq(&again, &third));
    assert_eq!(issuer.jwks_hits(), 1);
    // Without `groups`, no groups; another user claim may be named.
    let mut claims = issuer.claims("cy@acme.example");
    claims.as_object_mut().unwrap().remove("groups");
    let user = v.verify(&ec.mint(&claims)).await.unwrap();
    assert!(user.groups.is_empty());
    let mut by_sub = issuer.config();
    by_sub.user_claim = "sub".to_owned();
    let v = OidcVerifier::new(by_sub).unwrap();
    assert_eq!(v.verify(&token).await.unwrap().user, "4b8e1f0c");
}

#[tokio::test]
async fn expired_and_not_yet_valid_tokens_are_refused_with_the_time() {
    let issuer = Issuer::start().await;
    let ec = Key::es256("ec-1");
    issuer.publish(&[&ec]);
    let v = issuer.verifier(OidcOptions::default());
    let mut claims = issuer.claims("ada@acme.example");
    // 2 minutes ago: past the 60 s leeway.
    let exp = now() - 120;
    claims["exp"] = json!(exp);
    claims["nbf"] = json!(exp - 600);
    let e = v.verify(&ec.mint(&claims)).await.unwrap_err();
    let at = jiff::Timestamp::from_second(exp).unwrap().to_string();
    assert_eq!(
        err_text(&e),
        format!("the token expired at {at} (leeway 60 s); sign in again for a fresh one")
    );
    // 30 s ago: within the leeway.
    claims["exp"] = json!(now() - 30);
    v.verify(&ec.mint(&claims)).await.unwrap();
    // Not before 5 minutes from now.
    let mut claims = issuer.claims("ada@acme.example");
    let nbf = now() + 300;
    claims["nbf"] = json!(nbf);
    claims["exp"] = json!(nbf + 600);
    let e = v.verify(&ec.mint(&claims)).await.unwrap_err();
    let at = jiff::Timestamp::from_second(nbf).unwrap().to_string();
    assert!(
        err_text(&e).starts_with(&format!("the token is not valid before {at} (`nbf`")),
        "{e}"
    );
    // `exp` is required, and must be a number (not a string that a lax
    // reader would skip).
    let mut claims = issuer.claims("ada@acme.example");
    claims.as_object_mut().unwrap().remove("exp");
    let e = v.verify(&ec.mint(&claims)).await.unwrap_err();
    assert!(
        err_text(&e).starts_with("the token has no `exp` claim"),
        "{e}"
    );
    let mut claims = issuer.claims("ada@acme.example");
    claims["nbf"] = json!("99999999999");
    let e = v.verify(&ec.mint(&claims)).await.unwrap_err();
    assert_eq!(
        err_text(&e),
        "the token's `nbf` claim is the string `99999999999`, not a number of seconds"
    );
}

#[tokio::test]
async fn wrong_audience_and_wrong_issuer_are_refused() {
    let issuer = Issuer::start().await;
    let ec = Key::es256("ec-1");
    issuer.publish(&[&ec]);
    let v = issuer.verifier(OidcOptions::default());
    let mut claims = issuer.claims("ada@acme.example");
    claims["aud"] = json!(["grafana", "account"]);
    let e = v.verify(&ec.mint(&claims)).await.unwrap_err();
    assert_eq!(
        err_text(&e),
        "wrong audience: the token is for the list [`grafana`, `account`], not `warden` (`identity.oidc.audience`)"
    );
    // One of several audiences is enough.
    claims["aud"] = json!(["grafana", AUDIENCE]);
    v.verify(&ec.mint(&claims)).await.unwrap();
    let mut claims = issuer.claims("ada@acme.example");
    claims["iss"] = json!("https://evil.example");
    let e = v.verify(&ec.mint(&claims)).await.unwrap_err();
    assert_eq!(
        err_text(&e),
        format!(
            "wrong issuer: the token was issued by the string `https://evil.example`, not `{}` (`identity.oidc.issuer`)",
            issuer.url
        )
    );
    claims.as_object_mut().unwrap().remove("iss");
    let e = v.verify(&ec.mint(&claims)).await.unwrap_err();
    assert!(
        err_text(&e).starts_with("the token has no `iss` claim"),
        "{e}"
    );
}

#[tokio::test]
async fn a_bad_signature_is_refused() {
    let issuer = Issuer::start().await;
    let (ec, forger) = (Key::es256("ec-1"), Key::es256("forger"));
    issuer.publish(&[&ec]);
    let v = issuer.verifier(OidcOptions::default());
    let claims = issuer.claims("ada@acme.example");
    // Signed by another key, naming the issuer's.
    let e = v
        .verify(&mint_as(&forger, "ec-1", &claims))
        .await
        .unwrap_err();
    assert_eq!(
        e,
        OidcError::BadSignature {
            kid: "ec-1".to_owned()
        }
    );
    assert!(err_text(&e).contains("does not verify with the issuer's key `ec-1`"));
    // A good token with its claims changed.
    let token = ec.mint(&claims);
    let parts: Vec<&str> = token.split('.').collect();
    let mut forged = claims.clone();
    forged["groups"] = json!(["admins"]);
    let forged = format!(
        "{}.{}.{}",
        parts[0],
        URL_SAFE_NO_PAD.encode(forged.to_string()),
        parts[2]
    );
    let e = v.verify(&forged).await.unwrap_err();
    assert!(matches!(e, OidcError::BadSignature { .. }), "{e}");
    // The genuine one still passes, and the refusals were not cached.
    v.verify(&token).await.unwrap();
    assert!(v.verify(&forged).await.is_err());
    // An RSA key named for an ES256 token.
    let rsa = Key::rs256("rsa-1");
    issuer.publish(&[&ec, &rsa]);
    let v = issuer.verifier(OidcOptions::default());
    let e = v.verify(&mint_as(&ec, "rsa-1", &claims)).await.unwrap_err();
    assert!(
        err_text(&e)
            .starts_with("signing key `rsa-1` is not usable for `ES256` (it is an RSA key)"),
        "{e}"
    );
}

#[tokio::test]
async fn unsigned_and_shared_secret_tokens_are_refused_before_any_key_is_fetched() {
    let issuer = Issuer::start().await;
    let ec = Key::es256("ec-1");
    issuer.publish(&[&ec]);
    let v = issuer.verifier(OidcOptions::default());
    let claims = issuer.claims("ada@acme.example");
    let segment = |v: &Value| URL_SAFE_NO_PAD.encode(v.to_string());
    for alg in ["none", "None"] {
        let unsigned = format!(
            "{}.{}.",
            segment(&json!({"alg": alg, "typ": "JWT", "kid": "ec-1"})),
            segment(&claims)
        );
        let e = v.verify(&unsigned).await.unwrap_err();
        assert_eq!(e, OidcError::Unsigned);
        assert_eq!(
            err_text(&e),
            "the token is unsigned (`alg: none`), which is never accepted"
        );
    }
    // HS256 with the issuer's public JWK as the "secret" (the classic
    // confusion), and with any secret.
    for secret in [ec.jwk.to_string().into_bytes(), b"secret".to_vec()] {
        let hs = Key {
            kid: "ec-1".to_owned(),
            alg: Algorithm::HS256,
            encoding: EncodingKey::from_secret(&secret),
            jwk: json!({}),
        };
        let e = v.verify(&hs.mint(&claims)).await.unwrap_err();
        assert_eq!(
            err_text(&e),
            "the token is signed with `HS256`, a shared-secret algorithm, which is never accepted"
        );
    }
    // A real algorithm the config does not list.
    let ps = format!(
        "{}.{}.AAAA",
        segment(&json!({"alg": "PS256", "kid": "ec-1"})),
        segment(&claims)
    );
    let e = v.verify(&ps).await.unwrap_err();
    assert_eq!(
        err_text(&e),
        "the token is signed with `PS256`, which `identity.oidc.algorithms` does not allow (RS256, ES256)"
    );
    for (junk, want) in [
        ("not-a-jwt", "it has 1 dot-separated parts, not 3"),
        ("a.b.c.d.e", "it has 5 dot-separated parts, not 3"),
        ("%%%.e30.", "its header is not base64url"),
    ] {
        let e = v.verify(junk).await.unwrap_err();
        assert!(err_text(&e).contains(want), "{junk}: {e}");
    }
    let crit = format!(
        "{}.{}.AAAA",
        segment(&json!({"alg": "ES256", "kid": "ec-1", "crit": ["exp"]})),
        segment(&claims)
    );
    let e = v.verify(&crit).await.unwrap_err();
    assert!(err_text(&e).contains("critical extensions (`crit`)"), "{e}");
    assert_eq!((issuer.discovery_hits(), issuer.jwks_hits()), (0, 0));
}

#[tokio::test]
async fn an_oversized_token_is_refused_unread() {
    let issuer = Issuer::start().await;
    let ec = Key::es256("ec-1");
    issuer.publish(&[&ec]);
    let v = issuer.verifier(OidcOptions::default());
    let mut claims = issuer.claims("ada@acme.example");
    claims["groups"] = json!((0..800).map(|i| format!("group-{i}")).collect::<Vec<_>>());
    let token = ec.mint(&claims);
    assert!(token.len() > MAX_TOKEN_BYTES);
    let e = v.verify(&token).await.unwrap_err();
    assert_eq!(
        e,
        OidcError::TooLarge {
            bytes: token.len(),
            limit: MAX_TOKEN_BYTES
        }
    );
    assert!(
        err_text(&e).contains("over the 8192-byte limit (too large)"),
        "{e}"
    );
    assert_eq!(issuer.jwks_hits(), 0);
    // Just under the limit is read.
    claims["groups"] = json!(["finance"]);
    claims["pad"] = json!("");
    let base = ec.mint(&claims).len();
    claims["pad"] = json!("x".repeat((MAX_TOKEN_BYTES - base - 200) * 3 / 4));
    let token = ec.mint(&claims);
    assert!(
        token.len() <= MAX_TOKEN_BYTES && token.len() > MAX_TOKEN_BYTES - 400,
        "{}",
        token.len()
    );
    v.verify(&token).await.unwrap();
}

#[tokio::test]
async fn ill_typed_claims_are_refused_with_the_reason() {
    let issuer = Issuer::start().await;
    let ec = Key::es256("ec-1");
    issuer.publish(&[&ec]);
    let v = issuer.verifier(OidcOptions::default());
    for (groups, found) in [
        (json!("finance"), "the string `finance`"),
        (json!({"finance": true}), "an object"),
        (json!(["finance", 7]), "a list holding the number `7`"),
        (json!(null), "null"),
    ] {
        let mut claims = issuer.claims("ada@acme.example");
        claims["groups"] = groups;
        let e = v.verify(&ec.mint(&claims)).await.unwrap_err();
        assert_eq!(
            err_text(&e),
            format!("the token's `groups` claim is {found}, not a list of strings (`identity.oidc.groups_claim`)")
        );
    }
    let mut claims = issuer.claims("ada@acme.example");
    claims.as_object_mut().unwrap().remove("email");
    let e = v.verify(&ec.mint(&claims)).await.unwrap_err();
    assert!(
        err_text(&e).starts_with(
            "the token has no `email` claim, which names the user (`identity.oidc.user_claim`)"
        ),
        "{e}"
    );
    claims["email"] = json!(42);
    let e = v.verify(&ec.mint(&claims)).await.unwrap_err();
    assert!(
        err_text(&e)
            .starts_with("the token's `email` claim is the number `42`, not a non-empty string"),
        "{e}"
    );
    claims["email"] = json!("ada@acme.example");
    claims["email_verified"] = json!(false);
    let e = v.verify(&ec.mint(&claims)).await.unwrap_err();
    assert_eq!(e, OidcError::EmailNotVerified);
    claims["email_verified"] = json!(true);
    v.verify(&ec.mint(&claims)).await.unwrap();
}

/// Key rotation: a token signed by a key the cache lacks fetches the JWKS
/// once; another unknown key within the interval does not fetch again.
#[tokio::test]
async fn a_new_key_is_fetched_at_most_once_per_interval() {
    let issuer = Issuer::start().await;
    let (k1, k2, k3) = (Key::es256("k1"), Key::es256("k2"), Key::es256("k3"));
    issuer.publish(&[&k1]);
    let interval = Duration::from_millis(800);
    let v = issuer.verifier(OidcOptions {
        refetch_interval: interval,
        ..OidcOptions::default()
    });
    let claims = issuer.claims("ada@acme.example");
    v.verify(&k1.mint(&claims)).await.unwrap();
    assert_eq!(issuer.jwks_hits(), 1);
    // Within the interval of that fetch, k2 is not fetched for.
    issuer.publish(&[&k1, &k2]);
    let e = v.verify(&k2.mint(&claims)).await.unwrap_err();
    assert!(
        err_text(&e).starts_with(
            "unknown signing key `k2`: the issuer did not publish it when its keys were fetched at"
        ),
        "{e}"
    );
    assert!(
        err_text(&e).contains("if the issuer has just rotated its keys, try again then"),
        "{e}"
    );
    assert_eq!(issuer.jwks_hits(), 1);
    // After it, one fetch brings k2.
    tokio::time::sleep(interval + Duration::from_millis(100)).await;
    let user = v.verify(&k2.mint(&claims)).await.unwrap();
    assert_eq!(user.user, "ada@acme.example");
    assert_eq!(issuer.jwks_hits(), 2);
    // A second new key right after: no fetch, 401.
    issuer.publish(&[&k1, &k2, &k3]);
    for _ in 0..5 {
        let e = v.verify(&k3.mint(&claims)).await.unwrap_err();
        assert!(
            matches!(e, OidcError::UnknownKey { ref kid, .. } if kid == "k3"),
            "{e}"
        );
    }
    assert_eq!(issuer.jwks_hits(), 2);
    // Discovery was needed once only.
    assert_eq!(issuer.discovery_hits(), 1);
    // A key the issuer never publishes: one fetch, then said so.
    tokio::time::sleep(interval + Duration::from_millis(100)).await;
    let stranger = Key::es256("stranger");
    let e = v.verify(&stranger.mint(&claims)).await.unwrap_err();
    assert!(
        err_text(&e).starts_with("unknown signing key `stranger`: the issuer does not publish it (its keys were fetched just now"),
        "{e}"
    );
    assert_eq!(issuer.jwks_hits(), 3);
    // k3 came with that fetch.
    v.verify(&k3.mint(&claims)).await.unwrap();
}

/// Keys older than `keys_max_age` are fetched again when used: a key the
/// issuer withdrew stops working, also for tokens verified before.
#[tokio::test]
async fn a_withdrawn_key_stops_working_once_the_keys_are_old() {
    let issuer = Issuer::start().await;
    let (k1, k2) = (Key::es256("k1"), Key::es256("k2"));
    issuer.publish(&[&k1]);
    let v = issuer.verifier(OidcOptions {
        refetch_interval: Duration::from_millis(100),
        keys_max_age: Duration::from_millis(300),
        cached_tokens: 100,
    });
    let token = k1.mint(&issuer.claims("ada@acme.example"));
    v.verify(&token).await.unwrap();
    issuer.publish(&[&k2]);
    tokio::time::sleep(Duration::from_millis(400)).await;
    // A new token (not cached) makes the refetch; the withdrawn key is gone
    // and so is the memory of tokens it signed.
    let e = v
        .verify(&k1.mint(&issuer.claims("bo@acme.example")))
        .await
        .unwrap_err();
    assert!(matches!(e, OidcError::UnknownKey { .. }), "{e}");
    let e = v.verify(&token).await.unwrap_err();
    assert!(matches!(e, OidcError::UnknownKey { .. }), "{e}");
    assert_eq!(issuer.jwks_hits(), 2);
    v.verify(&k2.mint(&issuer.claims("ada@acme.example")))
        .await
        .unwrap();
}

/// An issuer that cannot be reached, or whose discovery document names
/// another issuer: 503 with the reason, and a retry once per interval.
#[tokio::test]
async fn unreachable_or_mismatched_issuers_are_said_so() {
    let issuer = Issuer::start().await;
    let ec = Key::es256("ec-1");
    issuer.publish(&[&ec]);
    let claims = issuer.claims("ada@acme.example");
    // The discovery document names the issuer with a trailing slash.
    *issuer.published.issuer.lock().unwrap() = format!("{}/", issuer.url);
    let v = issuer.verifier(OidcOptions {
        refetch_interval: Duration::from_millis(300),
        ..OidcOptions::default()
    });
    let e = v.verify(&ec.mint(&claims)).await.unwrap_err();
    assert!(
        err_text(&e).contains(&format!(
            "names the issuer `{}/`, not `{}`",
            issuer.url, issuer.url
        )),
        "{e}"
    );
    assert!(matches!(e, OidcError::KeysUnavailable(_)));
    assert_eq!(
        warden_server::DoorError::from(e).status_code(),
        StatusCode::SERVICE_UNAVAILABLE
    );
    // Within the interval: not asked again.
    let e = v.verify(&ec.mint(&claims)).await.unwrap_err();
    assert!(err_text(&e).contains("the next try is after"), "{e}");
    assert_eq!(issuer.discovery_hits(), 1);
    *issuer.published.issuer.lock().unwrap() = issuer.url.clone();
    tokio::time::sleep(Duration::from_millis(400)).await;
    v.verify(&ec.mint(&claims)).await.unwrap();
    // Nothing listening.
    let mut gone = issuer.config();
    gone.discovery_url = "http://127.0.0.1:9/.well-known/openid-configuration"
        .parse()
        .unwrap();
    let v = OidcVerifier::new(gone).unwrap();
    let e = v.verify(&ec.mint(&claims)).await.unwrap_err();
    assert!(
        err_text(&e).starts_with("the identity provider's signing keys cannot be fetched, so no OIDC token can be checked: the discovery document at `http://127.0.0.1:9/"),
        "{e}"
    );
}

/// Over https: the keys are fetched through TLS trusting
/// `identity.oidc.ca_file`; without it the issuer's certificate is not
/// trusted and the refusal says so. `warden check` reports a CA file that
/// is not PEM.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_are_fetched_over_https_trusting_the_configured_ca() {
    let plain = Issuer::start().await;
    let ec = Key::es256("ec-1");
    plain.publish(&[&ec]);
    let pki = test_pki();
    let front = TlsFront::start(
        &pki,
        plain
            .url
            .trim_start_matches("http://")
            .split('/')
            .next()
            .unwrap()
            .to_owned(),
    )
    .await;
    let url = format!("https://localhost:{}/realms/test", front.port);
    *plain.published.issuer.lock().unwrap() = url.clone();
    let dir = TempDir::new("warden-oidc-https");
    std::fs::write(dir.0.join("idp-ca.pem"), &pki.ca_pem).unwrap();
    let path = dir.0.join("warden.yaml");
    std::fs::write(
        &path,
        format!("storage: none\nteams:\n  ml: {{}}\nidentity:\n  oidc:\n    issuer: {url}\n    audience: {AUDIENCE}\n    ca_file: idp-ca.pem\n"),
    )
    .unwrap();
    let config = load_config(&path).unwrap().oidc.unwrap();
    let mut claims = plain.claims("ada@acme.example");
    claims["iss"] = json!(url);
    let token = ec.mint(&claims);
    let user = OidcVerifier::new(config.clone())
        .unwrap()
        .verify(&token)
        .await
        .unwrap();
    assert_eq!(user.user, "ada@acme.example");
    assert_eq!((plain.discovery_hits(), plain.jwks_hits()), (1, 1));

    let untrusting = OidcVerifier::new(OidcConfig {
        ca_file: None,
        ..config
    })
    .unwrap();
    let e = untrusting.verify(&token).await.unwrap_err();
    assert!(matches!(e, OidcError::KeysUnavailable(_)), "{e}");
    assert!(err_text(&e).to_lowercase().contains("certificate"), "{e}");
    assert_eq!(
        plain.discovery_hits(),
        1,
        "a request got through untrusted TLS"
    );

    std::fs::write(dir.0.join("idp-ca.pem"), "not a certificate\n").unwrap();
    let (code, _, err) = tokio::task::spawn_blocking(move || {
        crate::cli::warden(&["check", "--config", path.to_str().unwrap()])
    })
    .await
    .unwrap();
    assert_ne!(code, 0);
    assert!(err.contains("identity.oidc.ca_file: `"), "{err}");
    assert!(
        err.contains("holds no `-----BEGIN CERTIFICATE-----` block"),
        "{err}"
    );
}

async fn get(app: &Router, bearer: Option<&str>, uri: &str) -> (StatusCode, String) {
    let mut req = Request::get(uri);
    if let Some(token) = bearer {
        req = req.header("authorization", format!("Bearer {token}"));
    }
    let resp = app
        .clone()
        .oneshot(req.body(Body::empty()).unwrap())
        .await
        .unwrap();
    let status = resp.status();
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8(bytes.to_vec()).unwrap())
}

/// `/reports/chargeback` with OIDC, from a config file: a user in group
/// `finance`, bound as viewer of every team, reads it; a user no binding
/// names is refused by name; no token, a bad one, and a token where OIDC
/// is not configured are 401.
#[tokio::test]
async fn chargeback_with_an_oidc_token_by_group_binding() {
    let issuer = Issuer::start().await;
    let ec = Key::es256("ec-1");
    issuer.publish(&[&ec]);
    let dir = TempDir::new("warden-oidc-e2e");
    let path = dir.0.join("warden.yaml");
    std::fs::write(
        &path,
        format!(
            "storage: sqlite://state.db\nteams:\n  ml: {{}}\n  cv: {{}}\nrole_bindings:\n  - {{group: finance, role: viewer, teams: \"*\"}}\nidentity:\n  oidc:\n    issuer: {}\n    audience: {AUDIENCE}\n    algorithms: [ES256]\n",
            issuer.url
        ),
    )
    .unwrap();
    let config = load_config(&path).unwrap();
    let store = Store::connect(config.storage.as_deref().unwrap())
        .await
        .unwrap();
    let state = AppState::with_store(config.policy, Some(path.clone()), Some(store.clone()));
    state.set_oidc(Some(Arc::new(
        OidcVerifier::new(config.oidc.unwrap()).unwrap(),
    )));
    let app = warden_server::reports::routes().with_state(Arc::clone(&state));
    let uri = "/reports/chargeback?month=2024-03";

    let finance = ec.mint(&issuer.claims("fin@acme.example"));
    let (status, body) = get(&app, Some(&finance), uri).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let json: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(json["total"]["amount_usd"], "0.00", "{json}");

    let mut claims = issuer.claims("eve@acme.example");
    claims["groups"] = json!(["engineering"]);
    let (status, body) = get(&app, Some(&ec.mint(&claims)), uri).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert!(
        body.contains(
            "user `eve@acme.example` (groups `engineering`) may not read spend of every team"
        ) && body.contains("`eve@acme.example` has no role in team"),
        "{body}"
    );
    // One team of the user's own is not enough either: `/reports/spend`
    // for a team the user has no role in says so by name.
    let (status, body) = get(&app, Some(&ec.mint(&claims)), "/reports/spend?team=ml").await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert!(
        body.contains(
            "user `eve@acme.example`: denied: `eve@acme.example` has no role in team `ml`"
        ),
        "{body}"
    );

    let (status, body) = get(&app, None, uri).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    assert!(
        body.contains("needs a Warden key") && body.contains("OIDC token"),
        "{body}"
    );
    let mut expired = issuer.claims("fin@acme.example");
    expired["exp"] = json!(now() - 3600);
    let token = ec.mint(&expired);
    let (status, body) = get(&app, Some(&token), uri).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    assert!(body.starts_with("Warden: the token expired at "), "{body}");
    assert!(!body.contains(&token), "the token is never echoed");
    let (status, body) = get(&app, Some("wdn_0123456789abcdef_nope"), uri).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");

    // Without `identity.oidc` (a reload of the config without it), a
    // token is 401 saying so.
    std::fs::write(
        &path,
        "storage: sqlite://state.db\nteams:\n  ml: {}\n  cv: {}\nrole_bindings:\n  - {group: finance, role: viewer, teams: \"*\"}\n",
    )
    .unwrap();
    state.reload().unwrap();
    assert!(state.oidc().is_none());
    let (status, body) = get(&app, Some(&finance), uri).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    assert!(
        body.contains("is not a Warden key (`wdn_...`), and this Warden does not accept OIDC tokens (`identity.oidc` is not configured)"),
        "{body}"
    );
    store.close().await;
}

/// A reload with the same `identity.oidc` keeps the verifier (and its
/// keys); a changed one replaces it.
#[tokio::test]
async fn a_reload_keeps_an_unchanged_verifier() {
    let issuer = Issuer::start().await;
    let dir = TempDir::new("warden-oidc-reload");
    let path = dir.0.join("warden.yaml");
    let write = |audience: &str| {
        std::fs::write(
            &path,
            format!(
                "storage: none\nteams:\n  ml: {{}}\nidentity:\n  oidc: {{issuer: '{}', audience: {audience}}}\n",
                issuer.url
            ),
        )
        .unwrap();
    };
    write("warden");
    let state = AppState::new(load_config(&path).unwrap().policy, Some(path.clone()));
    state.reload().unwrap();
    let first = state.oidc().unwrap();
    state.reload().unwrap();
    assert!(Arc::ptr_eq(&first, &state.oidc().unwrap()));
    write("warden-2");
    state.reload().unwrap();
    let second = state.oidc().unwrap();
    assert!(!Arc::ptr_eq(&first, &second));
    assert_eq!(second.config().audience, "warden-2");
}

/// A 2048-bit RSA private key (PKCS#1 DER), for these tests only: it signs
/// nothing anywhere else.
const RSA_PKCS1_DER_B64: &str = concat!(
    "MIIEpQIBAAKCAQEA65L04RoIc8f/foZnRE2R/grul4pLKXTrVFHjkumIOg8J/GrgqoGzObydkvEI",
    "Ed06HotKexQp+kF/Eup6AQNz97KKh4EbWBXiID+muz3WKSdOcNirOJWD6rp1RHNRh4NwK7hbwbCO",
    "iB5D6Nc1J1wU2pOFL0WRJyLMMOpM/Fgii7EMx+ObQnpnF+oFe4lAnFiR/cYnzOxLq/ZrNEUfXDxk",
    "wMAo5PYq2Dy9O4h4/0LRLzu3a8/D51rnPUNZCH7eD741xVzh6hlloOYCbU2EXJz8YUqPcjZyEGJr",
    "WEe7OZeuNLx9JVYyi6+UKBEo50CtPaTvoT+fuXevyawbiUHd6bhPIwIDAQABAoIBAF7z7SCOjbmd",
    "c65cHmO5oI71eRY79+/N4M0r9L7SwsYkKbJEoioX/VXYYOtJnCcXNMX6/xp9Fi55F+9X87VU3vmI",
    "Ta4wrATlTTASd/IhCqGr5kI2E03LdlC2t23PzZ0BrcTxmoqHz+utx1Gi7RngU8eGjrhvIgLUU9mj",
    "l0Rfgg0rmitdl83LbLnZGi8vObJniEq5Pi32LXBcQ5rKdStBMgYGL3qGsrop8Beek53Air70WREz",
    "7GuUZlfTY39m7fiYBW4EJP0ByHfn7lvtEtZsMnCDGWO9DOYMROdsuBNqguatgwCqI/AagDvHJs1/",
    "iQLiKWOOyUb94khtKCJs+lSkX4ECgYEA+cwHjGI2OKQ+5lmiB0RLC1PPxBxhcj2YccRUST55I6XH",
    "F1aySkv6nu0NK9bLQbkYwp9TLeQUshmyzpJsPLq9FJszw1thE3PVWZmkoiRoyHnqPMYNqI19sErK",
    "G3xTwNPqdByCKqdDrjdcSGhWgFCNYO8mimCF6HZ5OHVOYQ+Fzm8CgYEA8WyC3or0Ed7BuI8gqg4U",
    "FwAo2hVxTzYkaNrzAfEzE8IzUR9W0h6Chd6ys/8ucikU7F8zRE1iQR1sTX8ewAm+UaOiCP5Lukfi",
    "21aSkT7heKBOZTaQNFDgSG3ruDyyk75Q7wCjTFQT+jEjkCGCOU6rhLdyHfmDwMBdXgrogpLiJI0C",
    "gYEAuVcLGrwcIvaqvNswf1fKnoL3Gzk7jDnrjC3xo864rxxnlgd7jejF8XlNVoOul/swRedVHi2m",
    "tWaf5ul5aa3ccRee1opMgtRlLm/zWWLOZEEg7Sq+I5un8E/tmWsr8VzLDo/AfMlSTEdDL25LEDW0",
    "UIHhBLcNZCfTVXKkTxvnWf0CgYEAhebWaxIMrwCq129jAY7Pa7Zl8hdkgjeYWCPgFlquJq5Wgg7s",
    "u5u6bv+GhDjrjNvmQ/fFWoPFFDJ6iD0SVBbTXTpxu6U3YTlPxLGulyqWKa5X7OEneCzHSMTWsZfQ",
    "wAsVnonvCH21mtW4UM+VB63viaupeqCSh8zpvCg2r31COl0CgYEAqjnfUdqczV5kktPKFvAU1kLs",
    "k+8oJeoy9VASoSFK1Lm6pGXb1BCs1uNI38RZAYEr+QOi4viSrt+gEX1gp15dOUfeLGqBM7eEop22",
    "9ywqg/tLatTm3gVMszeFrrcjF4nxlUjK0yVP6+eTnyJkmfHArCQRsNTeGEEVZ37GQ/gCrdM=",
);
/// Its modulus, base64url (the JWK's `n`; `e` is 65537).
const RSA_N: &str = concat!(
    "65L04RoIc8f_foZnRE2R_grul4pLKXTrVFHjkumIOg8J_GrgqoGzObydkvEIEd06HotKexQp-kF_",
    "Eup6AQNz97KKh4EbWBXiID-muz3WKSdOcNirOJWD6rp1RHNRh4NwK7hbwbCOiB5D6Nc1J1wU2pOF",
    "L0WRJyLMMOpM_Fgii7EMx-ObQnpnF-oFe4lAnFiR_cYnzOxLq_ZrNEUfXDxkwMAo5PYq2Dy9O4h4",
    "_0LRLzu3a8_D51rnPUNZCH7eD741xVzh6hlloOYCbU2EXJz8YUqPcjZyEGJrWEe7OZeuNLx9JVYy",
    "i6-UKBEo50CtPaTvoT-fuXevyawbiUHd6bhPIw",
);

/// The role matrix of the admin API again, for people signed in with OIDC:
/// each role comes from a group binding in team `ml` (an admin's over every
/// team), and each walks every endpoint in its own team and another.
#[tokio::test]
async fn every_role_by_group_gets_what_the_roles_table_gives_at_every_endpoint() {
    use warden_core::access::Role;
    let issuer = Issuer::start().await;
    let ec = Key::es256("ec-1");
    issuer.publish(&[&ec]);
    let dir = TempDir::new("warden-oidc-matrix");
    let path = dir.0.join("warden.yaml");
    std::fs::write(
        &path,
        format!(
            "storage: sqlite://state.db\nteams:\n  ml: {{users: [kim]}}\n  cv: {{}}\nrules:\n  - {{name: gpu-cap, match: {{when: 'request.gpus > 8'}}, deny: \"at most 8\"}}\nexceptions: {{max_hours: 24, team_leads_may_lift: [gpu-cap]}}\nrole_bindings:\n  - {{group: g-admin, role: admin, teams: \"*\"}}\n  - {{group: g-lead, role: team-lead, team: ml}}\n  - {{group: g-ml, role: ml-engineer, team: ml}}\n  - {{group: g-io, role: inference-operator, team: ml}}\n  - {{group: g-view, role: viewer, team: ml}}\nidentity:\n  oidc:\n    issuer: {}\n    audience: {AUDIENCE}\n    algorithms: [ES256]\n",
            issuer.url
        ),
    )
    .unwrap();
    let config = load_config(&path).unwrap();
    let store = Store::connect(config.storage.as_deref().unwrap())
        .await
        .unwrap();
    let state = AppState::with_store(config.policy, Some(path.clone()), Some(store.clone()));
    state.apply_settings(config.settings);
    state.set_oidc(Some(Arc::new(
        OidcVerifier::new(config.oidc.unwrap()).unwrap(),
    )));
    let app = warden_server::router(Arc::clone(&state));
    let mut callers = Vec::new();
    for (role, group) in [
        (Role::Admin, "g-admin"),
        (Role::TeamLead, "g-lead"),
        (Role::MlEngineer, "g-ml"),
        (Role::InferenceOperator, "g-io"),
        (Role::Viewer, "g-view"),
    ] {
        let mut claims = issuer.claims(&format!("{group}@acme.example"));
        claims["groups"] = json!([group]);
        callers.push((role, ec.mint(&claims)));
    }
    crate::api::walk_role_matrix(&app, &callers).await;
    // Writes name the person.
    let (status, text) = crate::api::call(
        &app,
        &callers[1].1,
        "POST",
        "/api/v1/keys",
        Some(json!({"team": "ml", "role": "viewer"})),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{text}");
    let (_, text) = crate::api::call(
        &app,
        &callers[0].1,
        "GET",
        "/api/v1/audit?kind=key.created&limit=1000",
        None,
    )
    .await;
    assert!(
        text.contains("\"actor\":\"user:g-lead@acme.example\""),
        "{text}"
    );
    store.close().await;
}
