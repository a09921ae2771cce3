//! The real SkyPilot 0.14.1 client against the real `warden` binary.
//!
//! Starts `warden serve` on tests/client/skypilot-compat.yaml and runs
//! tests/client/skypilot_compat.py, which sends requests through SkyPilot's
//! own admin-policy code and checks what SkyPilot would go on to launch.
//! Needs the venv made by `scripts/setup-venv.sh`; without it the test fails
//! rather than skips, so a missing client cannot pass for a working one.

#![allow(
    clippy::expect_used,
    clippy::panic,
    reason = "test code: a failed expectation is the test failure"
)]

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Every scenario of skypilot_compat.py; all must pass.
const SCENARIOS: [&str; 5] = [
    "mutation",
    "rejection",
    "viewer",
    "unresolved",
    "passthrough",
];
const STARTUP_TIMEOUT: Duration = Duration::from_secs(30);
/// Importing SkyPilot takes ~3 s and each policy call well under 1 s; this
/// only bounds a hang.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(300);

#[test]
fn real_skypilot_client_sees_policy_decisions() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let python = venv_python();
    let workdir = TempDir::new("warden-skypilot-client");
    let server = Server::start(&root.join("tests/client/skypilot-compat.yaml"));
    let url = format!("http://{}/skypilot", server.addr);

    let run = run_client(
        &python,
        &root.join("tests/client/skypilot_compat.py"),
        &url,
        &workdir.0,
    );

    let report = || {
        format!(
            "client exit status: {}\n--- client stdout ---\n{}\n--- client stderr ---\n{}\n--- warden stderr ---\n{}",
            run.status,
            run.stdout,
            run.stderr,
            server.log()
        )
    };
    let last_line = run
        .stdout
        .lines()
        .rev()
        .find(|line| !line.trim().is_empty())
        .unwrap_or_default();
    let summary: serde_json::Value = serde_json::from_str(last_line).unwrap_or_else(|e| {
        panic!(
            "last stdout line of the client is not its JSON summary ({e}): {last_line:?}\n{}",
            report()
        )
    });
    let passed: Vec<&str> = summary
        .get("passed")
        .and_then(serde_json::Value::as_array)
        .map(|names| names.iter().filter_map(serde_json::Value::as_str).collect())
        .unwrap_or_default();
    let failed = summary
        .get("failed")
        .and_then(serde_json::Value::as_array)
        .cloned()
        .unwrap_or_default();
    let missing: Vec<&str> = SCENARIOS
        .iter()
        .copied()
        .filter(|name| !passed.contains(name))
        .collect();

    assert!(
        failed.is_empty() && missing.is_empty() && run.status.success(),
        "SkyPilot client scenarios did not all pass\nfailed: {}\nnot passed: {missing:?}\n{}",
        serde_json::to_string_pretty(&failed).unwrap_or_default(),
        report()
    );
}

/// `${WARDEN_VENV:-$HOME/.cache/warden/venv}/bin/python`, as made by
/// scripts/setup-venv.sh.
pub(crate) fn venv_python() -> PathBuf {
    let venv = match std::env::var_os("WARDEN_VENV") {
        Some(dir) if !dir.is_empty() => PathBuf::from(dir),
        _ => {
            let home = std::env::var_os("HOME").expect(
                "HOME is not set: set WARDEN_VENV to the venv made by scripts/setup-venv.sh",
            );
            PathBuf::from(home).join(".cache/warden/venv")
        }
    };
    let python = venv.join("bin/python");
    assert!(
        python.exists(),
        "no client venv: {} does not exist; run scripts/setup-venv.sh first \
         (WARDEN_VENV selects the venv directory)",
        python.display()
    );
    python
}

/// A running `warden serve`; killed on drop, also when the test panics.
pub(crate) struct Server {
    pub(crate) child: Child,
    /// Holds the server's SQLite store; removed when the server is dropped.
    _state: TempDir,
    pub(crate) addr: String,
    log: Arc<Mutex<String>>,
}

impl Server {
    pub(crate) fn start(config: &Path) -> Server {
        let state = TempDir::new("warden-store");
        let storage = format!("sqlite://{}", state.0.join("warden.db").display());
        Self::spawn(config, &storage, state)
    }

    /// Starts `warden serve` on the given store.
    pub(crate) fn start_with_storage(config: &Path, storage: &str) -> Server {
        Self::spawn(config, storage, TempDir::new("warden-unused"))
    }

    /// Starts `warden serve` on the given store with extra environment
    /// variables (e.g. a `PATH` holding a fake `ssh`).
    pub(crate) fn start_with_env(
        config: &Path,
        storage: &str,
        env: &[(&str, std::ffi::OsString)],
    ) -> Server {
        Self::spawn_with(config, storage, TempDir::new("warden-unused"), env)
    }

    fn spawn(config: &Path, storage: &str, state: TempDir) -> Server {
        Self::spawn_with(config, storage, state, &[])
    }

    fn spawn_with(
        config: &Path,
        storage: &str,
        state: TempDir,
        env: &[(&str, std::ffi::OsString)],
    ) -> Server {
        let mut child = Command::new(env!("CARGO_BIN_EXE_warden"))
            .envs(env.iter().map(|(k, v)| (*k, v)))
            // Never a real Vast.ai account: the Vast door uses its embedded
            // simulator when no key is configured.
            .env_remove("VAST_API_KEY")
            .arg("serve")
            .arg("--config")
            .arg(config)
            .arg("--storage")
            .arg(storage)
            .arg("--listen")
            .arg("127.0.0.1:0")
            // The server's own default log level must apply: the `listening`
            // line is how the test learns the port.
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn the warden binary");
        let stderr = child.stderr.take().expect("warden stderr is piped");
        let log = Arc::new(Mutex::new(String::new()));
        let (lines_tx, lines_rx) = mpsc::channel();
        let sink = Arc::clone(&log);
        // Drains stderr for the server's whole life, so it never blocks on a
        // full pipe; lines also go to the channel until startup stops reading.
        thread::spawn(move || {
            let mut reader = BufReader::new(stderr);
            let mut buf = Vec::new();
            loop {
                buf.clear();
                match reader.read_until(b'\n', &mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {}
                }
                let line = String::from_utf8_lossy(&buf).trim_end().to_owned();
                if let Ok(mut log) = sink.lock() {
                    log.push_str(&line);
                    log.push('\n');
                }
                let _ = lines_tx.send(line);
            }
        });

        let mut server = Server {
            child,
            _state: state,
            addr: String::new(),
            log,
        };
        let deadline = Instant::now() + STARTUP_TIMEOUT;
        loop {
            match lines_rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
                Ok(line) => {
                    if let Some(addr) = listening_addr(&line) {
                        server.addr = addr;
                        return server;
                    }
                }
                Err(RecvTimeoutError::Timeout) => panic!(
                    "warden did not log `listening` on stderr within {STARTUP_TIMEOUT:?}; stderr so far:\n{}",
                    server.log()
                ),
                Err(RecvTimeoutError::Disconnected) => {
                    let status = server
                        .child
                        .wait()
                        .map_or_else(|e| format!("unknown: {e}"), |s| s.to_string());
                    panic!(
                        "warden exited ({status}) before logging `listening`; stderr:\n{}",
                        server.log()
                    )
                }
            }
        }
    }

    pub(crate) fn log(&self) -> String {
        self.log.lock().map(|log| log.clone()).unwrap_or_default()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The `addr` of a JSON log line whose message is `listening`. Accepts the
/// event fields at the top level or nested under `fields` (tracing's JSON
/// formatter does either, depending on `flatten_event`).
fn listening_addr(line: &str) -> Option<String> {
    let event: serde_json::Value = serde_json::from_str(line).ok()?;
    let fields = [Some(&event), event.get("fields")];
    let is_listening = fields
        .iter()
        .flatten()
        .any(|f| f.get("message").and_then(serde_json::Value::as_str) == Some("listening"));
    if !is_listening {
        return None;
    }
    fields
        .iter()
        .flatten()
        .find_map(|f| f.get("addr").and_then(serde_json::Value::as_str))
        .map(str::to_owned)
}

struct ClientRun {
    status: ExitStatus,
    stdout: String,
    stderr: String,
}

fn run_client(python: &Path, script: &Path, url: &str, workdir: &Path) -> ClientRun {
    let mut child = Command::new(python)
        .arg(script)
        .arg("--url")
        .arg(url)
        .arg("--workdir")
        .arg(workdir)
        .current_dir(workdir)
        .env_remove("PYTHONPATH")
        .env_remove("PYTHONHOME")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {}: {e}", python.display()));
    let stdout = read_in_background(child.stdout.take().expect("client stdout is piped"));
    let stderr = read_in_background(child.stderr.take().expect("client stderr is piped"));

    let deadline = Instant::now() + CLIENT_TIMEOUT;
    let status = loop {
        if let Some(status) = child.try_wait().expect("poll the client process") {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "the SkyPilot client did not finish within {CLIENT_TIMEOUT:?}\n--- stdout ---\n{}\n--- stderr ---\n{}",
                stdout.join().unwrap_or_default(),
                stderr.join().unwrap_or_default()
            );
        }
        thread::sleep(Duration::from_millis(50));
    };
    ClientRun {
        status,
        stdout: stdout.join().expect("client stdout reader"),
        stderr: stderr.join().expect("client stderr reader"),
    }
}

fn read_in_background(mut pipe: impl Read + Send + 'static) -> JoinHandle<String> {
    thread::spawn(move || {
        let mut bytes = Vec::new();
        let _ = pipe.read_to_end(&mut bytes);
        String::from_utf8_lossy(&bytes).into_owned()
    })
}

/// A fresh directory under the system temp dir, removed on drop.
pub(crate) struct TempDir(pub(crate) PathBuf);

impl TempDir {
    pub(crate) fn new(prefix: &str) -> TempDir {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default();
        let dir = std::env::temp_dir().join(format!("{prefix}-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&dir)
            .unwrap_or_else(|e| panic!("create temp dir {}: {e}", dir.display()));
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
