//! `warden serve --tls-cert --tls-key`: HTTPS with a certificate the test
//! makes, reloaded in place; bad files refused with the reason; and the
//! plain-HTTP rule for credentials from other machines.

use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt;
use tower::ServiceExt;
use warden_core::Policy;
use warden_server::tls::TlsFiles;
use warden_server::{router, AppState};

use crate::skypilot_client::TempDir;

/// A self-signed certificate for `localhost`, written as `cert.pem` and an
/// owner-only `key.pem` under `dir/name`; its PEM for a client to trust.
fn write_cert(dir: &Path, name: &str) -> (std::path::PathBuf, std::path::PathBuf, String) {
    let made = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let sub = dir.join(name);
    std::fs::create_dir_all(&sub).unwrap();
    let cert = sub.join("cert.pem");
    let key = sub.join("key.pem");
    std::fs::write(&cert, made.cert.pem()).unwrap();
    std::fs::write(&key, made.key_pair.serialize_pem()).unwrap();
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    (cert, key, made.cert.pem())
}

/// `GET /healthz` over TLS to `addr` as `localhost`, trusting only the
/// PEM certificate `trust`: the status, or why there is none.
async fn get_healthz(addr: SocketAddr, trust: &str) -> Result<u16, String> {
    use rustls::pki_types::pem::PemObject as _;
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(rustls::pki_types::CertificateDer::from_pem_slice(trust.as_bytes()).unwrap())
        .unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| e.to_string())?;
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let mut tls = connector
        .connect(name, tcp)
        .await
        .map_err(|e| format!("handshake: {e}"))?;
    tls.write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .await
        .map_err(|e| e.to_string())?;
    let mut resp = Vec::new();
    let _ = tls.read_to_end(&mut resp).await;
    let text = String::from_utf8_lossy(&resp);
    text.split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("not an HTTP answer: {text:?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_speaks_https_and_reloads_its_certificate() {
    let dir = TempDir::new("warden-tls");
    let (cert, key, first) = write_cert(&dir.0, "a");
    let config_path = dir.0.join("warden.yaml");
    std::fs::write(&config_path, "storage: none\nteams: {ml: {}}\n").unwrap();
    let config = warden_server::config::load_config(&config_path).unwrap();
    let tls = TlsFiles::load(&cert, &key).unwrap();
    let app = warden_server::Application::build(config, &config_path, "127.0.0.1:0")
        .await
        .unwrap()
        .with_transport(Some(tls.clone()), false);
    let addr = app.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let served = tokio::spawn(app.run(async move {
        let _ = stopped.await;
    }));

    assert_eq!(get_healthz(addr, &first).await, Ok(200));
    // Plain HTTP to the TLS port gets no HTTP answer.
    let plain = tokio::task::spawn_blocking(move || {
        crate::wire::exchange(
            &addr.to_string(),
            "GET",
            "/healthz",
            &[],
            b"",
            std::time::Duration::from_secs(5),
        )
    })
    .await
    .unwrap();
    assert!(plain.map(|(s, _)| s) != Ok(200), "plain HTTP was answered");

    // A new certificate in place of the old: after a reload, new
    // connections get it (a client trusting only the old one fails).
    let (new_cert, new_key, second) = write_cert(&dir.0, "b");
    std::fs::copy(&new_cert, &cert).unwrap();
    std::fs::copy(&new_key, &key).unwrap();
    tls.reload().unwrap();
    assert_eq!(get_healthz(addr, &second).await, Ok(200));
    let old = get_healthz(addr, &first).await;
    assert!(old.is_err(), "the old certificate is still served: {old:?}");

    // A reload that fails keeps the certificate in use.
    std::fs::write(&cert, "not a certificate").unwrap();
    let e = tls.reload().unwrap_err().to_string();
    assert!(e.contains("--tls-cert") && e.contains("holds no"), "{e}");
    assert_eq!(get_healthz(addr, &second).await, Ok(200));

    stop.send(()).unwrap();
    served.await.unwrap().unwrap();
}

#[test]
fn unusable_certificates_and_keys_are_refused_with_the_reason() {
    let dir = TempDir::new("warden-tls-bad");
    let (cert, key, _) = write_cert(&dir.0, "a");
    let (other_cert, _, _) = write_cert(&dir.0, "b");
    let err = |c: &Path, k: &Path| TlsFiles::load(c, k).unwrap_err().to_string();

    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let e = err(&cert, &key);
    assert!(e.contains("--tls-key") && e.contains("chmod 600"), "{e}");
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();

    let e = err(&other_cert, &key);
    assert!(e.contains("the key does not fit the certificate"), "{e}");
    let e = err(&dir.0.join("missing.pem"), &key);
    assert!(
        e.contains("--tls-cert") && e.contains("cannot read it"),
        "{e}"
    );
    let empty = dir.0.join("empty.pem");
    std::fs::write(&empty, "").unwrap();
    let e = err(&empty, &key);
    assert!(
        e.contains("holds no `-----BEGIN CERTIFICATE-----` block"),
        "{e}"
    );
    let not_key = dir.0.join("not-key.pem");
    std::fs::write(&not_key, "hello").unwrap();
    std::fs::set_permissions(&not_key, std::fs::Permissions::from_mode(0o600)).unwrap();
    let e = err(&cert, &not_key);
    assert!(
        e.contains("--tls-key") && e.contains("no PEM private key"),
        "{e}"
    );
}

/// Over plain HTTP, a request with credentials from another machine is
/// refused (they crossed the network in clear); from loopback, or without
/// credentials, it goes on.
#[tokio::test]
async fn credentials_over_plain_http_are_refused_unless_on_loopback() {
    let app = router(AppState::new(
        Policy::from_yaml("teams: {ml: {}}\n").unwrap(),
        None,
    ))
    .layer(axum::middleware::from_fn(
        warden_server::tls::refuse_credentials_in_clear,
    ));
    let call = |peer: [u8; 4], auth: bool| {
        let app = Arc::new(app.clone());
        async move {
            let mut req =
                Request::get("/healthz").extension(ConnectInfo(SocketAddr::from((peer, 50000))));
            if auth {
                req = req.header("authorization", "Bearer wdn_x");
            }
            let resp = (*app)
                .clone()
                .oneshot(req.body(Body::empty()).unwrap())
                .await
                .unwrap();
            let status = resp.status();
            let body = resp.into_body().collect().await.unwrap().to_bytes();
            (status, String::from_utf8(body.to_vec()).unwrap())
        }
    };
    let (status, body) = call([10, 0, 0, 7], true).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert!(
        body.contains("over plain HTTP from `10.0.0.7`") && body.contains("--tls-cert"),
        "{body}"
    );
    assert_eq!(call([10, 0, 0, 7], false).await.0, StatusCode::OK);
    assert_eq!(call([127, 0, 0, 1], true).await.0, StatusCode::OK);
}
