//! The store goes away under a running `warden serve` (a TCP proxy in front
//! of the real PostgreSQL is cut, so connections are refused and live ones
//! break), then comes back: launches are refused with a 503 that says the
//! store is unreachable well before SkyPilot's 30 s wait runs out, `/readyz`
//! turns not-ready with the reason, the log calls it a store failure, and
//! everything recovers without a restart.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use crate::recording::launch_body_with;
use crate::replicas::Database;
use crate::skypilot_client::{Server, TempDir};

/// How long the test's client waits for an answer: SkyPilot's own bound is
/// 30 s, so an answer after this is one SkyPilot users would never see.
const CLIENT_WAIT: Duration = Duration::from_secs(25);

/// A TCP proxy to PostgreSQL that can be cut and restored on the same port.
struct Proxy {
    port: u16,
    up: Arc<AtomicBool>,
    conns: Arc<Mutex<Vec<TcpStream>>>,
    acceptor: Option<thread::JoinHandle<()>>,
}

impl Proxy {
    fn start(upstream: &str) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let mut proxy = Proxy {
            port,
            up: Arc::new(AtomicBool::new(true)),
            conns: Arc::default(),
            acceptor: None,
        };
        proxy.serve(listener, upstream.to_owned());
        proxy
    }

    fn serve(&mut self, listener: TcpListener, upstream: String) {
        listener.set_nonblocking(true).unwrap();
        let (up, conns) = (Arc::clone(&self.up), Arc::clone(&self.conns));
        self.acceptor = Some(thread::spawn(move || {
            while up.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok((client, _)) => {
                        client.set_nonblocking(false).unwrap();
                        let Ok(server) = TcpStream::connect(&upstream) else {
                            continue;
                        };
                        let mut list = conns.lock().unwrap();
                        list.push(client.try_clone().unwrap());
                        list.push(server.try_clone().unwrap());
                        drop(list);
                        pipe(client.try_clone().unwrap(), server.try_clone().unwrap());
                        pipe(server, client);
                    }
                    Err(_) => thread::sleep(Duration::from_millis(5)),
                }
            }
            // Dropping the listener: new connections are refused.
        }));
    }

    /// Refuses new connections and breaks the live ones.
    fn cut(&mut self) {
        self.up.store(false, Ordering::SeqCst);
        if let Some(t) = self.acceptor.take() {
            t.join().unwrap();
        }
        for c in self.conns.lock().unwrap().drain(..) {
            let _ = c.shutdown(Shutdown::Both);
        }
        assert!(
            TcpStream::connect(("127.0.0.1", self.port)).is_err(),
            "the cut proxy still accepts"
        );
    }

    fn restore(&mut self, upstream: &str) {
        self.up.store(true, Ordering::SeqCst);
        let listener = TcpListener::bind(("127.0.0.1", self.port)).unwrap();
        self.serve(listener, upstream.to_owned());
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.cut();
    }
}

fn pipe(mut from: TcpStream, mut to: TcpStream) {
    thread::spawn(move || {
        let mut buf = [0u8; 16 * 1024];
        loop {
            match from.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if to.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
            }
        }
        let _ = to.shutdown(Shutdown::Write);
    });
}

/// One HTTP exchange, waiting at most [`CLIENT_WAIT`] for the answer.
fn exchange(addr: &str, method: &str, path: &str, body: &[u8]) -> Result<(u16, String), String> {
    crate::wire::exchange(addr, method, path, &[], body, CLIENT_WAIT)
}

#[test]
fn a_store_outage_is_answered_503_in_time_and_recovers_without_restart() {
    let db = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(Database::create());
    let (rest, name) = db.url.rsplit_once('/').unwrap();
    let hostport = rest.rsplit_once('@').map_or(rest, |(_, h)| h);
    let upstream = hostport.trim_start_matches("postgres://").to_owned();
    let mut proxy = Proxy::start(&upstream);
    let user = rest
        .trim_start_matches("postgres://")
        .split_once('@')
        .map_or("postgres", |(u, _)| u);
    let url = format!("postgres://{user}@127.0.0.1:{}/{name}", proxy.port);

    let dir = TempDir::new("warden-outage");
    let config = dir.0.join("warden.yaml");
    std::fs::write(
        &config,
        format!(
            "storage: {url}\nstorage_timeout_seconds: 2\nteams:\n  ml:\n    users: [root]\n    quotas: {{max_live: 100}}\n"
        ),
    )
    .unwrap();
    let server = Server::start_with_storage(&config, &url);
    let addr = server.addr.clone();

    let (status, text) =
        exchange(&addr, "POST", "/skypilot", &launch_body_with("c0", None)).unwrap();
    assert_eq!(status, 200, "{text}");
    let (status, text) = exchange(&addr, "GET", "/readyz", b"").unwrap();
    assert_eq!(status, 200, "{text}");

    proxy.cut();

    // Twenty launches at once: each gets the fail-closed answer while the
    // client still waits, none a time-out.
    let answers: Vec<_> = (0..20)
        .map(|i| {
            let addr = addr.clone();
            thread::spawn(move || {
                exchange(
                    &addr,
                    "POST",
                    "/skypilot",
                    &launch_body_with(&format!("o{i}"), None),
                )
            })
        })
        .collect::<Vec<_>>()
        .into_iter()
        .map(|t| t.join().unwrap())
        .collect();
    for answer in answers {
        let (status, text) = answer.unwrap_or_else(|e| panic!("{e}\n{}", server.log()));
        assert_eq!(status, 503, "{text}");
        assert!(text.contains("store is unreachable"), "{text}");
        assert!(!text.contains("busy"), "{text}");
    }
    let (status, text) = exchange(&addr, "GET", "/readyz", b"").unwrap();
    assert_eq!(status, 503, "{text}");
    assert!(
        text.contains("not ready") && text.contains("unreachable"),
        "{text}"
    );
    let log = server.log();
    assert!(log.contains("store failure"), "{log}");
    assert!(!log.contains("rejected malformed request"), "{log}");

    proxy.restore(&upstream);

    // Back without a restart: the pool opens fresh connections. The first
    // launch may still meet a connection that broke during the outage, so
    // allow a few tries (each answered, none a time-out).
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut n = 0;
    loop {
        n += 1;
        let (status, text) = exchange(
            &addr,
            "POST",
            "/skypilot",
            &launch_body_with(&format!("r{n}"), None),
        )
        .unwrap();
        if status == 200 {
            break;
        }
        assert_eq!(status, 503, "{text}");
        assert!(
            Instant::now() < deadline,
            "no recovery: {text}\n{}",
            server.log()
        );
        thread::sleep(Duration::from_millis(200));
    }
    let (status, text) = exchange(&addr, "GET", "/readyz", b"").unwrap();
    assert_eq!(status, 200, "{text}");
    drop(server);
    drop(proxy);
}

/// One HTTP exchange with a bearer key, waiting at most [`CLIENT_WAIT`].
fn exchange_with_key(
    addr: &str,
    method: &str,
    path: &str,
    key: &str,
    body: &[u8],
) -> Result<(u16, String), String> {
    let auth = format!("Bearer {key}");
    crate::wire::exchange(
        addr,
        method,
        path,
        &[("Authorization", &auth)],
        body,
        CLIENT_WAIT,
    )
}

/// The Vast door in a store outage: refused in time with a 503 that says
/// the store is unreachable, logged as a store failure (not as a
/// malformed request), and back without a restart.
#[test]
fn the_vast_door_says_the_store_is_unreachable_and_logs_a_store_failure() {
    let db = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(Database::create());
    let (rest, name) = db.url.rsplit_once('/').unwrap();
    let hostport = rest.rsplit_once('@').map_or(rest, |(_, h)| h);
    let upstream = hostport.trim_start_matches("postgres://").to_owned();
    let mut proxy = Proxy::start(&upstream);
    let user = rest
        .trim_start_matches("postgres://")
        .split_once('@')
        .map_or("postgres", |(u, _)| u);
    let url = format!("postgres://{user}@127.0.0.1:{}/{name}", proxy.port);

    let dir = TempDir::new("warden-vast-outage");
    let config = dir.0.join("warden.yaml");
    std::fs::write(
        &config,
        format!("storage: {url}\nstorage_timeout_seconds: 2\nteams:\n  ml: {{}}\n"),
    )
    .unwrap();
    let cfg = config.to_str().unwrap();
    let (code, key, err) = crate::cli::warden(&["keys", "create", "--config", cfg, "--team", "ml"]);
    assert_eq!(code, 0, "{err}");
    let key = key.trim().to_owned();
    let server = Server::start_with_storage(&config, &url);
    let addr = server.addr.clone();
    let me = "/vast/api/v0/users/current";
    let (status, text) = exchange_with_key(&addr, "GET", me, &key, b"").unwrap();
    assert_eq!(status, 200, "{text}");

    proxy.cut();

    let started = Instant::now();
    for (method, path, body) in [
        ("GET", me, &b""[..]),
        (
            "PUT",
            "/vast/api/v0/asks/1001/",
            br#"{"image": "x", "env": {}}"#,
        ),
        ("GET", "/vast/api/v1/instances/", b""),
    ] {
        let (status, text) = exchange_with_key(&addr, method, path, &key, body)
            .unwrap_or_else(|e| panic!("{path}: {e}\n{}", server.log()));
        assert_eq!(status, 503, "{path}: {text}");
        let answer: serde_json::Value = serde_json::from_str(&text).unwrap();
        let msg = answer["msg"].as_str().unwrap_or_default();
        assert!(
            msg.starts_with("Warden's store is unreachable, so nothing was done"),
            "{path}: {text}"
        );
    }
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "{:?}",
        started.elapsed()
    );
    let log = server.log();
    assert!(
        log.contains("store failure: request refused undecided"),
        "{log}"
    );
    assert!(!log.contains("rejected malformed request"), "{log}");
    assert!(!log.contains("vast door error"), "{log}");

    proxy.restore(&upstream);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (status, text) = exchange_with_key(&addr, "GET", me, &key, b"").unwrap();
        if status == 200 {
            break;
        }
        assert_eq!(status, 503, "{text}");
        assert!(Instant::now() < deadline, "no recovery: {text}");
        thread::sleep(Duration::from_millis(200));
    }
    drop(server);
    drop(proxy);
}
