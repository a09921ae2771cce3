//! Benchmark ceiling: a bare axum server that answers `POST /skypilot` with a
//! fixed, realistic success body (the answer a policy server gives to fixture
//! 01 of SkyPilot 0.14.1) without parsing the request. It measures what the
//! HTTP stack (tokio + hyper + axum) alone costs on this machine, so Warden's
//! throughput can be expressed as a fraction of it.
//!
//! Usage: `warden-bench-ceiling [--listen ADDR]` (default 127.0.0.1:18082).

use std::net::SocketAddr;

use axum::http::header::CONTENT_TYPE;
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::Router;

const DEFAULT_LISTEN: &str = "127.0.0.1:18082";

/// A JSON string literal whose content is `{"task": ..., "skypilot_config": ...}`
/// (537 bytes), byte for byte what the FastAPI baseline answers for fixture 01.
const BODY: &[u8] = include_bytes!("fixed_response.json");

async fn skypilot() -> impl IntoResponse {
    ([(CONTENT_TYPE, "application/json")], BODY)
}

async fn healthz() -> &'static str {
    "ok"
}

fn parse_listen() -> Result<SocketAddr, Box<dyn std::error::Error>> {
    let mut listen = DEFAULT_LISTEN.to_owned();
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        if arg == "--listen" {
            listen = args.next().ok_or("--listen needs an address")?;
        } else if let Some(value) = arg.strip_prefix("--listen=") {
            value.clone_into(&mut listen);
        } else if arg == "-h" || arg == "--help" {
            println!("usage: warden-bench-ceiling [--listen ADDR] (default {DEFAULT_LISTEN})");
            std::process::exit(0);
        } else {
            return Err(format!("unknown argument: {arg}").into());
        }
    }
    Ok(listen.parse()?)
}

async fn shutdown_signal() {
    let ctrl_c = async {
        // If the handler cannot be installed, never resolve: SIGTERM still works.
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut sig) => {
                sig.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = term => {}
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let addr = parse_listen()?;
    let app = Router::new()
        .route("/skypilot", post(skypilot))
        .route("/healthz", get(healthz));
    let listener = tokio::net::TcpListener::bind(addr).await?;
    eprintln!(
        "warden-bench-ceiling listening on {}",
        listener.local_addr()?
    );
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown_signal())
        .await?;
    Ok(())
}
