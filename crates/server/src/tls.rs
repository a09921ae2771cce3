//! HTTPS for `warden serve --tls-cert FILE --tls-key FILE` (rustls, TLS 1.2
//! and 1.3, HTTP/1.1), and the rule for plain HTTP: a request carrying
//! credentials (`Authorization`) over plain HTTP is refused unless it
//! comes over loopback, or `--insecure-http` says the network is trusted.
//!
//! The certificate chain and key are read at start and again on SIGHUP
//! ([`TlsFiles::reload`]); a reload that fails keeps the certificate in
//! use. The key file must be readable by its owner only (checked on the
//! opened file, as for every credential). Handshakes run off the accept
//! loop, each bounded by [`HANDSHAKE_TIMEOUT`], so a slow or silent client
//! holds up nobody else.

use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use axum::extract::ConnectInfo;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::serve::Listener;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::ServerConfig;
use tokio::net::TcpStream;
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;

use crate::error::DoorError;
use crate::secret::{read_private_text, Credential};

/// The longest a TLS handshake may take.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Handshakes finished but not yet taken by the server.
const ACCEPT_QUEUE: usize = 1024;
/// The largest certificate chain file read.
const MAX_CERT_FILE_BYTES: u64 = 1024 * 1024;

const TLS_KEY: Credential = Credential {
    noun: "TLS private key",
    example_env: "WARDEN_TLS_KEY",
};

/// Why the certificate or key cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// The certificate file cannot be read or holds no certificate.
    #[error("--tls-cert `{path}`: {reason}")]
    Cert {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// The key file cannot be read, is readable by others or holds no key.
    #[error("--tls-key `{path}`: {reason}")]
    Key {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// The key does not go with the certificate, or rustls refused them.
    #[error("--tls-cert and --tls-key: {0}")]
    Pair(String),
}

/// The certificate chain and key files, and the configuration made from
/// them that new handshakes use.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    cert: PathBuf,
    key: PathBuf,
    current: Arc<ArcSwap<ServerConfig>>,
}

impl TlsFiles {
    /// Reads `cert` (PEM, leaf first) and `key` (PEM, PKCS#8, PKCS#1 or
    /// SEC1; owner-only) and checks they make a server configuration.
    pub fn load(cert: &Path, key: &Path) -> Result<Self, TlsError> {
        let config = server_config(cert, key)?;
        Ok(Self {
            cert: cert.to_path_buf(),
            key: key.to_path_buf(),
            current: Arc::new(ArcSwap::from_pointee(config)),
        })
    }

    /// Reads the files again; new handshakes use them from now on. On an
    /// error the configuration in use stays.
    pub fn reload(&self) -> Result<(), TlsError> {
        let config = server_config(&self.cert, &self.key)?;
        self.current.store(Arc::new(config));
        Ok(())
    }

    /// A listener that accepts TCP connections on `tcp` and completes
    /// their TLS handshakes off the accept loop.
    pub fn listener<L>(&self, tcp: L) -> io::Result<TlsListener>
    where
        L: Listener<Io = TcpStream, Addr = SocketAddr>,
    {
        let local = tcp.local_addr()?;
        let (tx, rx) = tokio::sync::mpsc::channel(ACCEPT_QUEUE);
        let current = Arc::clone(&self.current);
        tokio::spawn(async move {
            let mut tcp = tcp;
            loop {
                // Ends (closing the port) when the server drops its listener.
                let (stream, peer) = tokio::select! {
                    conn = Listener::accept(&mut tcp) => conn,
                    () = tx.closed() => break,
                };
                if let Err(error) = stream.set_nodelay(true) {
                    tracing::debug!(%error, "cannot set TCP_NODELAY");
                }
                let acceptor = TlsAcceptor::from(current.load_full());
                let tx = tx.clone();
                tokio::spawn(async move {
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                        Ok(Ok(tls)) => {
                            let _ = tx.send((tls, peer)).await;
                        }
                        Ok(Err(error)) => {
                            tracing::debug!(%peer, %error, "TLS handshake failed");
                        }
                        Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                    }
                });
            }
        });
        Ok(TlsListener { rx, local })
    }
}

fn server_config(cert: &Path, key: &Path) -> Result<ServerConfig, TlsError> {
    let cert_error = |reason: String| TlsError::Cert {
        path: cert.to_path_buf(),
        reason,
    };
    let bytes = read_bounded(cert, MAX_CERT_FILE_BYTES).map_err(cert_error)?;
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<_, _>>()
        .map_err(|e| cert_error(format!("not a PEM certificate chain ({e})")))?;
    if chain.is_empty() {
        return Err(cert_error(
            "holds no `-----BEGIN CERTIFICATE-----` block".to_owned(),
        ));
    }
    let key_error = |reason: String| TlsError::Key {
        path: key.to_path_buf(),
        reason,
    };
    let text = read_private_text(key, TLS_KEY).map_err(|e| key_error(e.to_string()))?;
    let private = PrivateKeyDer::from_pem_slice(text.as_bytes())
        .map_err(|e| key_error(format!("holds no PEM private key ({e})")))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Pair(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(chain, private)
        .map_err(|e| {
            TlsError::Pair(format!(
                "the key does not fit the certificate or is not usable ({e})"
            ))
        })?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

fn read_bounded(path: &Path, limit: u64) -> Result<Vec<u8>, String> {
    use std::io::Read as _;
    let file = std::fs::File::open(path).map_err(|e| format!("cannot read it ({e})"))?;
    let mut bytes = Vec::new();
    file.take(limit + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| format!("cannot read it ({e})"))?;
    if bytes.len() as u64 > limit {
        return Err(format!("larger than {} KiB", limit / 1024));
    }
    Ok(bytes)
}

/// Established TLS connections, for `axum::serve`.
#[derive(Debug)]
pub struct TlsListener {
    rx: tokio::sync::mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
    local: SocketAddr,
}

impl Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.rx.recv().await {
            Some(conn) => conn,
            // The accept loop ended (it never does while the listener
            // lives): wait for shutdown.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        Ok(self.local)
    }
}

/// Middleware for plain HTTP: refuses (403) a request that carries an
/// `Authorization` header unless its peer is on loopback, so keys and
/// tokens are not used across a network in clear. Not installed with TLS
/// or `--insecure-http`.
pub async fn refuse_credentials_in_clear(
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    if req.headers().contains_key(header::AUTHORIZATION) {
        let peer = req
            .extensions()
            .get::<ConnectInfo<SocketAddr>>()
            .map(|ConnectInfo(addr)| addr.ip());
        let loopback = peer.is_some_and(|ip| match ip {
            std::net::IpAddr::V6(v6) => v6
                .to_ipv4_mapped()
                .map_or(v6.is_loopback(), |v4| v4.is_loopback()),
            v4 => v4.is_loopback(),
        });
        if !loopback {
            return DoorError::Forbidden(format!(
                "this request carries credentials (`Authorization`) over plain HTTP from {}, so they crossed the network in clear: Warden refuses them. Serve Warden with `--tls-cert` and `--tls-key` and use https, or reach it over loopback; on a network you trust, a platform admin may start it with `--insecure-http`. Rotate the key if the network is not trusted",
                peer.map_or_else(|| "an unknown address".to_owned(), |p| format!("`{p}`"))
            ))
            .into_response();
        }
    }
    next.run(req).await
}
