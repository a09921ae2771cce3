#![allow(
    clippy::expect_used,
    clippy::panic,
    clippy::print_stdout,
    clippy::indexing_slicing,
    reason = "benchmark program: a broken setup must stop the run; the result is printed"
)]

//! Per-request authentication cost (issue 12): what every key-holding
//! request pays before its handler runs, `auth::key` (header parse, one
//! store read by primary key, a SHA-256 and a constant-time comparison)
//! plus the role review, on SQLite (a temp file) and, when
//! `WARDEN_BENCH_PG` names a database URL, on PostgreSQL; and the same for
//! an OIDC token already verified once (`auth::authenticate`: header
//! parse, a SHA-256 of the token and a cache lookup, plus the review by
//! group binding), against an issuer served on 127.0.0.1. Sequential calls
//! on one runtime thread; prints p50, p90 and p99 per row.
//!
//!   cargo bench -p warden-server --bench auth
//!   WARDEN_BENCH_PG=postgres://postgres@127.0.0.1:5432/warden_auth_bench cargo bench -p warden-server --bench auth

use std::time::{Duration, Instant};

use axum::http::{header, HeaderMap, HeaderValue};
use warden_core::access::{Resource, Role, Verb};
use warden_core::{Policy, TeamName};
use warden_server::auth::{self, Authenticated};
use warden_store::{NewKey, Store, UnixMicros};

const CALLS: usize = 20_000;
const WARMUP: usize = 2_000;

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted
        .get(i.min(sorted.len().saturating_sub(1)))
        .copied()
        .unwrap_or_default()
}

async fn run(name: &str, url: &str) {
    let store = Store::connect(url).await.expect("store");
    let now = UnixMicros::from_system_time(std::time::SystemTime::now());
    let issued = store
        .create_key(
            NewKey {
                team: TeamName::parse("ml").expect("team"),
                user: None,
                name: None,
                expires: None,
                role: Role::Viewer,
            },
            now,
        )
        .await
        .expect("key");
    let policy = Policy::from_yaml("teams:\n  ml: {}\n").expect("policy");
    let team = TeamName::parse("ml").expect("team");
    let mut headers = HeaderMap::new();
    headers.insert(
        header::AUTHORIZATION,
        HeaderValue::from_str(&format!("Bearer {}", issued.secret.expose())).expect("header"),
    );
    let mut times = Vec::with_capacity(CALLS);
    for i in 0..WARMUP + CALLS {
        let started = Instant::now();
        let key = auth::key(&store, &headers, now, "no key")
            .await
            .expect("authenticated");
        let caller = Authenticated::Key(key);
        assert!(
            caller
                .review(&policy, Verb::Read, Resource::Spend, &team)
                .allowed
        );
        if i >= WARMUP {
            times.push(started.elapsed());
        }
    }
    times.sort_unstable();
    println!(
        "| {name} | {CALLS} | {:.1} | {:.1} | {:.1} |",
        percentile(&times, 0.5).as_secs_f64() * 1e6,
        percentile(&times, 0.9).as_secs_f64() * 1e6,
        percentile(&times, 0.99).as_secs_f64() * 1e6,
    );
    store.close().await;
}

/// A cached OIDC token: an ES256 key made here, published by a local
/// issuer; the first call fetches the keys, the timed ones hit the cache.
async fn run_oidc(url: &str) {
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine as _;
    use ring::signature::KeyPair as _;
    use warden_server::oidc::{install_crypto, OidcVerifier};

    let rng = ring::rand::SystemRandom::new();
    let alg = &ring::signature::ECDSA_P256_SHA256_FIXED_SIGNING;
    let pkcs8 = ring::signature::EcdsaKeyPair::generate_pkcs8(alg, &rng).expect("key");
    let pair =
        ring::signature::EcdsaKeyPair::from_pkcs8(alg, pkcs8.as_ref(), &rng).expect("key pair");
    let point = pair.public_key().as_ref().to_vec();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let issuer = format!(
        "http://127.0.0.1:{}",
        listener.local_addr().expect("addr").port()
    );
    let discovery = serde_json::json!({"issuer": issuer, "jwks_uri": format!("{issuer}/jwks")});
    let jwks = serde_json::json!({"keys": [{
        "kty": "EC", "crv": "P-256", "kid": "k1", "alg": "ES256",
        "x": URL_SAFE_NO_PAD.encode(&point[1..33]),
        "y": URL_SAFE_NO_PAD.encode(&point[33..]),
    }]});
    let app = axum::Router::new()
        .route(
            "/.well-known/openid-configuration",
            axum::routing::get(move || async move { axum::Json(discovery) }),
        )
        .route(
            "/jwks",
            axum::routing::get(move || async move { axum::Json(jwks) }),
        );
    let server = tokio::spawn(async move { axum::serve(listener, app).await });

    let config = warden_server::config::OidcConfig {
        issuer: issuer.clone(),
        discovery_url: format!("{issuer}/.well-known/openid-configuration")
            .parse()
            .expect("url"),
        audience: "warden".to_owned(),
        groups_claim: "groups".to_owned(),
        user_claim: "email".to_owned(),
        algorithms: vec![jsonwebtoken::Algorithm::ES256],
        ca_file: None,
    };
    install_crypto();
    let now_s = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs();
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256);
    header.kid = Some("k1".to_owned());
    let token = jsonwebtoken::encode(
        &header,
        &serde_json::json!({
            "iss": issuer, "aud": "warden", "email": "fin@acme.example",
            "groups": ["finance", "staff", "everyone"], "exp": now_s + 3600, "nbf": now_s,
        }),
        &jsonwebtoken::EncodingKey::from_ec_der(pkcs8.as_ref()),
    )
    .expect("token");
    let verifier = OidcVerifier::new(config).expect("verifier");
    let store = Store::connect(url).await.expect("store");
    let policy = Policy::from_yaml(
        "teams:\n  ml: {}\nrole_bindings:\n  - {group: finance, role: viewer, teams: \"*\"}\n",
    )
    .expect("policy");
    let team = TeamName::parse("ml").expect("team");
    let mut headers = HeaderMap::new();
    headers.insert(
        header::AUTHORIZATION,
        HeaderValue::from_str(&format!("Bearer {token}")).expect("header"),
    );
    let now = UnixMicros::from_system_time(std::time::SystemTime::now());
    let mut times = Vec::with_capacity(CALLS);
    for i in 0..WARMUP + CALLS {
        let started = Instant::now();
        let caller = auth::authenticate(&store, Some(&verifier), &headers, now, "no token")
            .await
            .expect("authenticated");
        assert!(
            caller
                .review(&policy, Verb::Read, Resource::Spend, &team)
                .allowed
        );
        if i >= WARMUP {
            times.push(started.elapsed());
        }
    }
    times.sort_unstable();
    println!(
        "| oidc (cached JWT, {} bytes) | {CALLS} | {:.1} | {:.1} | {:.1} |",
        token.len(),
        percentile(&times, 0.5).as_secs_f64() * 1e6,
        percentile(&times, 0.9).as_secs_f64() * 1e6,
        percentile(&times, 0.99).as_secs_f64() * 1e6,
    );
    server.abort();
    store.close().await;
}

fn main() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let dir = std::env::temp_dir().join(format!("warden-auth-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    println!("| backend | calls | p50 µs | p90 µs | p99 µs |");
    println!("|---|---|---|---|---|");
    rt.block_on(run(
        "sqlite",
        &format!("sqlite://{}", dir.join("auth.db").display()),
    ));
    if let Ok(url) = std::env::var("WARDEN_BENCH_PG") {
        rt.block_on(run("postgres", &url));
    }
    rt.block_on(run_oidc(&format!(
        "sqlite://{}",
        dir.join("oidc.db").display()
    )));
    let _ = std::fs::remove_dir_all(&dir);
}
