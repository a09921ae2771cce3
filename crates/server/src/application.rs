//! Startup and shutdown: [`Application::build`] turns a loaded config into
//! a bound server with everything the config describes wired in (store,
//! budget alert watch, SkyPilot usage sync, Vast door with its upstream or
//! the embedded simulator, Vast reconciler, OIDC sign-in). `warden serve` parses its
//! arguments and calls it; tests build the app the same way.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use axum::serve::ListenerExt;
use tokio::net::TcpListener;

use crate::app::{router, AppState};
use crate::config::Config;
use crate::doors::vast::EmbeddedSim;
use crate::tls::TlsFiles;

/// Connections the kernel completes and queues for Warden before it
/// accepts them. The operating system caps it at `net.core.somaxconn`
/// (4096 on current Linux). The standard library's 128 made a burst of
/// 1000 connections see resets.
pub const LISTEN_BACKLOG: u32 = 4096;

/// Why the server could not start. Each names what to fix.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The store named by the config cannot be opened.
    #[error("cannot open the store named by {}: {source}", config.display())]
    Store {
        /// The config file.
        config: PathBuf,
        /// Why.
        #[source]
        source: warden_store::StoreError,
    },
    /// The SkyPilot usage sync cannot start (token, CA file).
    #[error("{}: cannot start the SkyPilot usage sync: {source}", config.display())]
    Sync {
        /// The config file.
        config: PathBuf,
        /// Why.
        #[source]
        source: crate::doors::skypilot::sync::client::ClientError,
    },
    /// The Vast door cannot start (upstream key, upstream URL, simulator).
    #[error("{}: cannot start the Vast door: {reason}", config.display())]
    Vast {
        /// The config file.
        config: PathBuf,
        /// Why.
        reason: String,
    },
    /// OIDC sign-in cannot be set up (`identity.oidc.ca_file`).
    #[error("{}: cannot set up OIDC sign-in: {reason}", config.display())]
    Oidc {
        /// The config file.
        config: PathBuf,
        /// Why.
        reason: String,
    },
    /// The Kubernetes usage sync cannot start (its kubeconfig).
    #[error("{}: kubernetes: {reason}", config.display())]
    Kubernetes {
        /// The config file.
        config: PathBuf,
        /// Why.
        reason: String,
    },
    /// The listen address cannot be bound.
    #[error("cannot listen on {listen}: {source}")]
    Listen {
        /// The address given.
        listen: String,
        /// What the OS said.
        #[source]
        source: std::io::Error,
    },
}

/// A bound, not yet running server.
pub struct Application {
    listener: TcpListener,
    state: Arc<AppState>,
    /// The embedded marketplace simulator, when it is the Vast upstream;
    /// it serves as long as the application lives.
    _embedded_sim: Option<EmbeddedSim>,
    /// HTTPS, when `serve --tls-cert/--tls-key` asked for it.
    tls: Option<TlsFiles>,
    /// `serve --insecure-http`: credentials over plain HTTP from other
    /// machines are accepted.
    insecure_http: bool,
    /// Threads serving HTTP, each with its own event loop
    /// ([`Application::with_http_threads`]).
    http_threads: usize,
}

/// Threads serving HTTP by default: one fewer than the CPUs Warden may
/// use, at least one. The CPU left over is for the store's writer task and
/// its database thread, which every reserving request (a launch, a rental,
/// a GPU pod) waits on in turn: on 2 CPUs, two HTTP threads kept it waiting
/// for a core (Kubernetes admission bench, 32 connections: 8.6–9.9k GPU
/// pods/s, p99 6.2–9.2 ms, against 10.7–11.2k/s, p99 5.6–6.6 ms with one).
pub fn default_http_threads() -> usize {
    http_threads_for(std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get))
}

/// [`default_http_threads`] for `cpus` CPUs.
fn http_threads_for(cpus: usize) -> usize {
    cpus.saturating_sub(1).max(1)
}

/// The most HTTP threads `serve --http-threads` accepts.
pub const MAX_HTTP_THREADS: usize = 256;

impl Application {
    /// Wires what `config` (loaded from `config_path`) describes and binds
    /// `listen`: opens the store, starts the budget alert watch, the
    /// SkyPilot usage sync (with `skypilot_api`), the Vast door and its
    /// reconciler (with a store), then binds. Background tasks run on the
    /// current Tokio runtime.
    pub async fn build(
        config: Config,
        config_path: &Path,
        listen: &str,
    ) -> Result<Self, StartError> {
        let Config {
            policy,
            storage,
            store_options,
            skypilot_api,
            settings,
            vast,
            oidc,
            kubernetes,
        } = config;
        let store = match &storage {
            Some(url) => Some(
                warden_store::Store::connect_with(url, store_options)
                    .await
                    .map_err(|source| StartError::Store {
                        config: config_path.to_path_buf(),
                        source,
                    })?,
            ),
            None => None,
        };
        let state = AppState::with_store(policy, Some(config_path.to_path_buf()), store);
        state.apply_settings(settings);
        state.set_kubernetes(kubernetes);
        // OIDC sign-in: the issuer's keys are fetched in the background now,
        // so the first sign-in does not wait (and a failure is logged
        // early); a token arriving first fetches them itself.
        if let Some(oidc) = oidc {
            let verifier = Arc::new(crate::oidc::OidcVerifier::new(oidc).map_err(|reason| {
                StartError::Oidc {
                    config: config_path.to_path_buf(),
                    reason,
                }
            })?);
            state.set_oidc(Some(Arc::clone(&verifier)));
            tokio::spawn(async move {
                // A failure is logged by the fetch itself.
                let _ = verifier.prefetch().await;
            });
        }
        // Budget alerts for spend that accrues between launches.
        crate::alerts::spawn_watch(Arc::clone(&state));
        // Exceptions that ran out are recorded in the audit chain (they
        // stop applying at their end whether or not this has run).
        if let Some(store) = state.store() {
            spawn_exception_expiry(store.clone());
        }
        // The usage sync with SkyPilot's API server: a background task, off
        // the decision path (`crate::doors::skypilot::sync`).
        if let Some(api) = &skypilot_api {
            crate::doors::skypilot::sync::spawn_skypilot(&state, api).map_err(|source| {
                StartError::Sync {
                    config: config_path.to_path_buf(),
                    source,
                }
            })?;
        }
        // The Kubernetes usage sync, when `kubernetes.kubeconfig` is set.
        crate::doors::kubernetes::sync::spawn(&state).map_err(|reason| StartError::Kubernetes {
            config: config_path.to_path_buf(),
            reason,
        })?;
        // The Vast door, in front of Vast.ai or the embedded simulator.
        let embedded_sim = if state.store().is_some() {
            let (door, sim) =
                crate::doors::vast::start(&vast)
                    .await
                    .map_err(|reason| StartError::Vast {
                        config: config_path.to_path_buf(),
                        reason,
                    })?;
            match &sim {
                Some(sim) => tracing::info!(
                    upstream = %format!("http://{}", sim.addr),
                    "Vast door: no Vast API key is configured (`vast.api_key_env`/`api_key_file`, or `VAST_API_KEY`), so the embedded marketplace simulator is the upstream; point `vastai --url http://HOST:PORT/vast` at Warden"
                ),
                None => tracing::info!(upstream = door.upstream().base(), "Vast door upstream"),
            }
            state.enable_vast(Arc::new(door));
            crate::doors::vast::reconcile::spawn(&state);
            sim
        } else {
            tracing::warn!("the Vast door is off: it needs a store (`storage` is `none`)");
            None
        };
        let mut app = Self::bind(Arc::clone(&state), listen)
            .await
            .map_err(|source| StartError::Listen {
                listen: listen.to_owned(),
                source,
            })?;
        app._embedded_sim = embedded_sim;
        let policy = state.policy();
        tracing::info!(
            addr = %app.local_addr().map_or_else(|_| listen.to_owned(), |a| a.to_string()),
            config = %config_path.display(),
            teams = policy.team_count(),
            rules = policy.rules().len(),
            store = state.store().map_or("none", |s| s.backend_name()),
            "listening"
        );
        Ok(app)
    }

    /// Binds `listen` for an already wired `state` (port 0 picks a free
    /// port; a host name is resolved and its first address that binds is
    /// used), with a listen queue of [`LISTEN_BACKLOG`] connections.
    pub async fn bind(state: Arc<AppState>, listen: &str) -> std::io::Result<Self> {
        let mut last = None;
        for addr in tokio::net::lookup_host(listen).await? {
            match bind_with_backlog(addr) {
                Ok(listener) => {
                    return Ok(Self {
                        listener,
                        state,
                        _embedded_sim: None,
                        tls: None,
                        insecure_http: false,
                        http_threads: default_http_threads(),
                    })
                }
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!("`{listen}` resolves to no address"),
            )
        }))
    }

    /// Serves HTTPS with `tls` (`None`: plain HTTP). With plain HTTP,
    /// a request carrying credentials from another machine is refused
    /// unless `insecure_http` ([`crate::tls::refuse_credentials_in_clear`]).
    pub fn with_transport(mut self, tls: Option<TlsFiles>, insecure_http: bool) -> Self {
        let plain_elsewhere = tls.is_none()
            && !insecure_http
            && self.local_addr().is_ok_and(|a| !a.ip().is_loopback());
        if plain_elsewhere {
            tracing::warn!(
                "serving plain HTTP beyond loopback: requests with keys or tokens from other machines are refused; serve with --tls-cert and --tls-key (or --insecure-http on a trusted network)"
            );
        }
        self.tls = tls;
        self.insecure_http = insecure_http;
        self
    }

    /// Serves HTTP on `n` threads (at least 1, at most
    /// [`MAX_HTTP_THREADS`]; default [`default_http_threads`]).
    ///
    /// Each thread runs its own single-threaded event loop; one accept
    /// loop hands new connections to the threads in turn, and a connection
    /// stays on the thread it was handed to. The shared state (policy, store, key cache)
    /// is the same for all. Against one work-stealing runtime this saves
    /// the wake-ups and hand-overs between threads that cost more than the
    /// door's own work at high request rates (see `bench/README.md`).
    /// Background work (store writer, syncs, alerts) stays on the runtime
    /// that calls [`Application::run`].
    pub fn with_http_threads(mut self, n: usize) -> Self {
        self.http_threads = n.clamp(1, MAX_HTTP_THREADS);
        self
    }

    /// The shared state (policy, store, doors).
    pub fn state(&self) -> &Arc<AppState> {
        &self.state
    }

    /// The bound address.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// The bound port.
    pub fn port(&self) -> u16 {
        self.local_addr().map_or(0, |a| a.port())
    }

    /// Serves until SIGTERM or SIGINT, then drains in-flight requests.
    /// SIGHUP reloads the config file, keeping the old policy if the new one
    /// is invalid.
    pub async fn run_until_signal(self) -> std::io::Result<()> {
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = signal(SignalKind::terminate())?;
        let mut int = signal(SignalKind::interrupt())?;
        let mut hup = signal(SignalKind::hangup())?;
        let state = Arc::clone(&self.state);
        let tls = self.tls.clone();
        tokio::spawn(async move {
            while hup.recv().await.is_some() {
                if let Some(tls) = &tls {
                    match tls.reload() {
                        Ok(()) => tracing::info!("TLS certificate and key reloaded"),
                        Err(error) => tracing::error!(
                            %error,
                            "TLS reload failed; keeping the certificate in use"
                        ),
                    }
                }
                match state.reload() {
                    Ok(()) => {
                        let p = state.policy();
                        tracing::info!(
                            teams = p.team_count(),
                            rules = p.rules().len(),
                            "config reloaded"
                        );
                    }
                    Err(error) => tracing::error!(
                        error = error.as_str(),
                        "config reload failed; keeping the previous policy"
                    ),
                }
            }
        });
        let shutdown = async move {
            tokio::select! {
                _ = term.recv() => tracing::info!("SIGTERM received; draining in-flight requests"),
                _ = int.recv() => tracing::info!("SIGINT received; draining in-flight requests"),
            }
        };
        self.run(shutdown).await
    }

    /// Serves until `shutdown` completes, then drains in-flight requests on
    /// every HTTP thread.
    ///
    /// One accept loop (on the calling runtime) hands each new connection
    /// to the HTTP threads in turn, so they share the connections evenly
    /// (a thread that accepted for itself would take most of a burst).
    pub async fn run(
        self,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        // The peer's address: the SkyPilot door trusts server-side
        // requests only from `skypilot.trusted_servers`.
        let local = self.listener.local_addr()?;
        let mut app = router(self.state);
        // Bound to loopback, every peer is on loopback: the check could
        // refuse nothing, so it is not installed.
        if self.tls.is_none() && !self.insecure_http && !local.ip().is_loopback() {
            app = app.layer(axum::middleware::from_fn(
                crate::tls::refuse_credentials_in_clear,
            ));
        }
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let (done_tx, mut done) = tokio::sync::mpsc::unbounded_channel();
        let mut threads = Vec::with_capacity(self.http_threads);
        for i in 0..self.http_threads {
            let (handed, connections) = tokio::sync::mpsc::unbounded_channel();
            threads.push(handed);
            let listener = Handed { connections, local };
            let (app, tls, mut stopped, done_tx) = (
                app.clone(),
                self.tls.clone(),
                stopped.clone(),
                done_tx.clone(),
            );
            std::thread::Builder::new()
                .name(format!("warden-http-{i}"))
                .spawn(move || {
                    let stop = async move {
                        // A dropped sender (the caller gave up) stops too.
                        let _ = stopped.wait_for(|s| *s).await;
                    };
                    let result = tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                        .and_then(|rt| rt.block_on(serve_thread(listener, app, tls, stop)));
                    let _ = done_tx.send(result);
                })?;
        }
        drop(done_tx);
        let mut listener = self.listener;
        let mut accepting = stopped.clone();
        let acceptor = tokio::spawn(async move {
            let mut next = 0;
            loop {
                let (stream, peer) = tokio::select! {
                    conn = axum::serve::Listener::accept(&mut listener) => conn,
                    _ = accepting.wait_for(|s| *s) => break,
                };
                // Answers are small and complete: send them at once (no
                // Nagle delay).
                if let Err(error) = stream.set_nodelay(true) {
                    tracing::debug!(%error, "cannot set TCP_NODELAY");
                }
                match stream.into_std() {
                    Ok(stream) => {
                        if let Some(thread) = threads.get(next) {
                            let _ = thread.send((stream, peer));
                        }
                        next = (next + 1) % threads.len().max(1);
                    }
                    Err(error) => tracing::debug!(%error, %peer, "cannot hand over a connection"),
                }
            }
            // Dropping the listener closes the port.
        });
        let mut running = self.http_threads;
        let mut first_error = None;
        tokio::pin!(shutdown);
        // Until the signal, or until a thread ends on its own (an error).
        tokio::select! {
            () = &mut shutdown => {}
            Some(result) = done.recv() => {
                running -= 1;
                first_error = result.err();
            }
        }
        let _ = stop.send(true);
        let _ = acceptor.await;
        while running > 0 {
            match done.recv().await {
                Some(result) => {
                    running -= 1;
                    if let (None, Err(e)) = (&first_error, result) {
                        first_error = Some(e);
                    }
                }
                None => break,
            }
        }
        match first_error {
            Some(e) => Err(e),
            None => {
                tracing::info!("stopped");
                Ok(())
            }
        }
    }
}

/// The connections the accept loop hands to one HTTP thread, as a listener
/// for that thread's server.
struct Handed {
    connections: tokio::sync::mpsc::UnboundedReceiver<(std::net::TcpStream, SocketAddr)>,
    local: SocketAddr,
}

impl axum::serve::Listener for Handed {
    type Io = tokio::net::TcpStream;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            match self.connections.recv().await {
                Some((stream, peer)) => match tokio::net::TcpStream::from_std(stream) {
                    Ok(io) => return (io, peer),
                    Err(error) => tracing::debug!(%error, %peer, "cannot take over a connection"),
                },
                // No more connections (shutting down): the server's
                // graceful shutdown ends it.
                None => std::future::pending::<()>().await,
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(self.local)
    }
}

/// One HTTP thread: serves the connections handed to it until `stop`, then
/// drains them.
async fn serve_thread(
    listener: Handed,
    app: axum::Router,
    tls: Option<TlsFiles>,
    stop: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let app = app.into_make_service_with_connect_info::<SocketAddr>();
    match tls {
        Some(tls) => {
            // TapIo only to reach axum's ConnectInfo for the listener's
            // SocketAddr.
            let listener = tls.listener(listener)?.tap_io(|_| {});
            axum::serve(listener, app)
                .with_graceful_shutdown(stop)
                .await
        }
        None => {
            // Answers written together with those of the other connections
            // ready at the same time (see `crate::cork`).
            tokio::spawn(crate::cork::flusher());
            // TapIo only to reach axum's ConnectInfo (TCP_NODELAY is set
            // by the accept loop).
            axum::serve(CorkedListener(listener).tap_io(|_| {}), app)
                .with_graceful_shutdown(stop)
                .await
        }
    }
}

/// [`Handed`] connections wrapped in [`crate::cork::Corked`].
struct CorkedListener(Handed);

impl axum::serve::Listener for CorkedListener {
    type Io = crate::cork::Corked;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        let (io, peer) = self.0.accept().await;
        (crate::cork::Corked::new(io), peer)
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        self.0.local_addr()
    }
}

/// How often ended exceptions are looked for, to record their expiry.
pub const EXCEPTION_EXPIRY_CHECK: std::time::Duration = std::time::Duration::from_secs(30);

fn spawn_exception_expiry(store: warden_store::Store) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(EXCEPTION_EXPIRY_CHECK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let now = warden_store::UnixMicros::from_system_time(std::time::SystemTime::now());
            match store.expire_exceptions(now).await {
                Ok(ended) => {
                    for x in ended {
                        tracing::info!(
                            target: "warden::exceptions",
                            exception = x.id,
                            team = %x.team,
                            rule = x.rule.as_str(),
                            "exception expired"
                        );
                    }
                }
                Err(error) => tracing::warn!(
                    target: "warden::exceptions",
                    %error,
                    "cannot record expired exceptions; will try again"
                ),
            }
        }
    });
}

fn bind_with_backlog(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_threads_leave_a_cpu_to_the_store_writer() {
        assert_eq!(http_threads_for(1), 1);
        assert_eq!(http_threads_for(2), 1);
        assert_eq!(http_threads_for(8), 7);
        assert_eq!(http_threads_for(0), 1);
    }
}
