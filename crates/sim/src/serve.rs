//! Serving the simulator on a TCP listener, with connections that a `Drop`
//! fault can close without answering.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::extract::connect_info::Connected;
use axum::serve::{IncomingStream, Listener};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};

use crate::{router, SimConfig, SimState};

/// Serves a new simulator built from `config` until `shutdown` completes.
pub async fn serve(
    listener: TcpListener,
    config: SimConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> io::Result<()> {
    serve_state(listener, SimState::new(config), shutdown).await
}

/// Serves `state` until `shutdown` completes; keep a clone of `state` to
/// drive the simulator while it serves. In-flight requests finish first;
/// hung ones (a `Hang` fault) are released with a 503.
pub async fn serve_state(
    listener: TcpListener,
    state: SimState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> io::Result<()> {
    let release = state.clone();
    let shutdown = async move {
        shutdown.await;
        release.release_hung();
    };
    let app = router(state).into_make_service_with_connect_info::<ConnectionKill>();
    axum::serve(SimListener(listener), app)
        .with_graceful_shutdown(shutdown)
        .await
}

/// A TCP listener whose connections can be killed from a handler.
struct SimListener(TcpListener);

impl Listener for SimListener {
    type Io = SimStream;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (SimStream, SocketAddr) {
        let (tcp, addr) = Listener::accept(&mut self.0).await;
        if let Err(error) = tcp.set_nodelay(true) {
            tracing::debug!(%error, "cannot set TCP_NODELAY");
        }
        (
            SimStream {
                tcp,
                killed: Arc::new(AtomicBool::new(false)),
            },
            addr,
        )
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        Listener::local_addr(&self.0)
    }
}

/// A TCP stream that fails every read and write once killed, so the server
/// drops the connection and the peer sees it close without an answer.
struct SimStream {
    tcp: TcpStream,
    killed: Arc<AtomicBool>,
}

impl SimStream {
    fn dead(&self) -> bool {
        self.killed.load(Ordering::Acquire)
    }
}

fn aborted<T>() -> Poll<io::Result<T>> {
    Poll::Ready(Err(io::Error::from(io::ErrorKind::ConnectionAborted)))
}

impl AsyncRead for SimStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.dead() {
            return aborted();
        }
        Pin::new(&mut self.tcp).poll_read(cx, buf)
    }
}

impl AsyncWrite for SimStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if self.dead() {
            return aborted();
        }
        Pin::new(&mut self.tcp).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        if self.dead() {
            return aborted();
        }
        Pin::new(&mut self.tcp).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.tcp.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.dead() {
            return aborted();
        }
        Pin::new(&mut self.tcp).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.tcp).poll_shutdown(cx)
    }
}

/// The kill switch of the connection a request arrived on (a request
/// extension, as `ConnectInfo<ConnectionKill>`).
#[derive(Clone, Debug)]
pub(crate) struct ConnectionKill(Arc<AtomicBool>);

impl ConnectionKill {
    pub(crate) fn kill(&self) {
        self.0.store(true, Ordering::Release);
    }
}

impl Connected<IncomingStream<'_, SimListener>> for ConnectionKill {
    fn connect_info(stream: IncomingStream<'_, SimListener>) -> Self {
        ConnectionKill(Arc::clone(&stream.io().killed))
    }
}
