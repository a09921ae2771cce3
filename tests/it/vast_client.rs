//! The real `vastai` 1.9.1 CLI against the real `warden` binary, whose Vast
//! door is backed by its embedded simulator (no key configured).
//!
//! The CLI exits 0 on HTTP errors, so every refusal is checked on stderr
//! (`Failed with error N: <msg>`). Each run gets `HOME` in a temp dir (the
//! CLI caches its role and GPU names there), `VAST_URL` pointing at Warden
//! (the GPU-name fetch ignores `--url`) and `VASTAI_NO_UPDATE_CHECK=1`.
//! Needs the venv made by `scripts/setup-venv.sh`; without it the test
//! fails rather than skips.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::cli::warden;
use crate::skypilot_client::{venv_python, Server, TempDir};

/// Bounds one CLI run (a retried 5xx takes a few seconds; this only
/// catches a hang).
const CLI_TIMEOUT: Duration = Duration::from_secs(120);

struct Cli {
    bin: PathBuf,
    home: PathBuf,
    url: String,
}

struct Run {
    stdout: String,
    stderr: String,
}

impl Run {
    fn json(&self) -> Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| {
            panic!(
                "stdout is not JSON ({e})\n--- stdout ---\n{}\n--- stderr ---\n{}",
                self.stdout, self.stderr
            )
        })
    }
}

impl Cli {
    fn run(&self, key: &str, args: &[&str]) -> Run {
        let mut child = Command::new(&self.bin)
            .arg("--url")
            .arg(&self.url)
            .arg("--api-key")
            .arg(key)
            .args(args)
            .env("HOME", &self.home)
            .env("XDG_CONFIG_HOME", self.home.join(".config"))
            .env("XDG_CACHE_HOME", self.home.join(".cache"))
            .env("VAST_URL", &self.url)
            .env("VASTAI_NO_UPDATE_CHECK", "1")
            .env_remove("VAST_API_KEY")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {}: {e}", self.bin.display()));
        // Drained while it runs: a large `--raw` answer would fill the pipe.
        let drain = |pipe: Option<Box<dyn Read + Send>>| {
            std::thread::spawn(move || {
                let mut bytes = Vec::new();
                if let Some(mut pipe) = pipe {
                    let _ = pipe.read_to_end(&mut bytes);
                }
                String::from_utf8_lossy(&bytes).into_owned()
            })
        };
        let stdout = drain(
            child
                .stdout
                .take()
                .map(|p| Box::new(p) as Box<dyn Read + Send>),
        );
        let stderr = drain(
            child
                .stderr
                .take()
                .map(|p| Box::new(p) as Box<dyn Read + Send>),
        );
        let deadline = Instant::now() + CLI_TIMEOUT;
        let status = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("vastai {args:?} did not finish within {CLI_TIMEOUT:?}");
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let run = Run {
            stdout: stdout.join().unwrap(),
            stderr: stderr.join().unwrap(),
        };
        assert!(
            status.success(),
            "vastai {args:?} exited {status}\n--- stdout ---\n{}\n--- stderr ---\n{}",
            run.stdout,
            run.stderr
        );
        run
    }
}

/// Text without ANSI escape sequences (the CLI colours its tables).
fn plain(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

fn key(config: &str, team: &str) -> String {
    let (code, out, err) = warden(&[
        "keys", "create", "--config", config, "--team", team, "--user", "alice",
    ]);
    assert_eq!(code, 0, "{err}");
    out.trim().to_owned()
}

fn gpu(o: &Value) -> &str {
    o["gpu_name"].as_str().unwrap_or_default()
}

fn price(o: &Value) -> f64 {
    o["dph_total"].as_f64().unwrap_or(f64::MAX)
}

fn ids(rows: &Value) -> Vec<u64> {
    rows.as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_u64().unwrap())
        .collect()
}

/// A fake `ssh` that records its arguments: the pre-destroy command runs
/// it from `PATH`.
fn fake_ssh(dir: &Path) -> (PathBuf, PathBuf) {
    let bin = dir.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let log = dir.join("ssh-calls");
    let ssh = bin.join("ssh");
    std::fs::write(
        &ssh,
        format!("#!/bin/sh\nprintf '%s\\n' \"$@\" >> '{}'\n", log.display()),
    )
    .unwrap();
    std::fs::set_permissions(&ssh, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    (bin, log)
}

#[test]
fn the_real_vastai_cli_is_governed_by_warden() {
    let python = venv_python();
    let bin = python.with_file_name("vastai");
    assert!(
        bin.exists(),
        "{} is missing: run scripts/setup-venv.sh (it installs vastai==1.9.1)",
        bin.display()
    );
    let dir = TempDir::new("warden-vastai");
    let db = format!("sqlite://{}", dir.0.join("w.db").display());
    let config = dir.0.join("warden.yaml");
    std::fs::write(
        &config,
        format!(
            "storage: {db}\nteams:\n  ml:\n    allowed_gpus: [RTX_4090, RTX_3090]\n    max_hourly_usd: 1.5\n  cv: {{}}\n  thrifty:\n    budgets: {{daily_usd: 0.1}}\n  sure:\n    vast: {{verified_only: true}}\nvast:\n  pre_destroy_command: /opt/save-checkpoints.sh\n  pre_destroy_timeout_seconds: 30\n"
        ),
    )
    .unwrap();
    let cfg = config.to_str().unwrap();
    let (ml, cv, thrifty) = (key(cfg, "ml"), key(cfg, "cv"), key(cfg, "thrifty"));
    let (ssh_bin, ssh_log) = fake_ssh(&dir.0);
    let path = std::env::var_os("PATH").unwrap_or_default();
    let mut paths = vec![ssh_bin];
    paths.extend(std::env::split_paths(&path));
    let server = Server::start_with_env(
        &config,
        &db,
        &[("PATH", std::env::join_paths(paths).unwrap())],
    );
    assert!(
        server.log().contains("embedded marketplace simulator"),
        "{}",
        server.log()
    );
    let home = dir.0.join("home");
    std::fs::create_dir_all(&home).unwrap();
    let cli = Cli {
        bin,
        home,
        url: format!("http://{}/vast", server.addr),
    };

    // Searches: the unconstrained team sees H100s and pricey offers; ml sees
    // only its GPUs at its price.
    let all = cli
        .run(
            &cv,
            &["search", "offers", "num_gpus>=1", "--limit", "200", "--raw"],
        )
        .json();
    let all = all.as_array().unwrap().clone();
    assert!(all.iter().any(|o| gpu(o).starts_with("H100")), "{all:?}");
    assert!(all.iter().any(|o| price(o) > 1.5));
    let mine = cli
        .run(
            &ml,
            &[
                "search",
                "offers",
                "num_gpus>=1",
                "-o",
                "dph_total",
                "--limit",
                "200",
                "--raw",
            ],
        )
        .json();
    let mine = mine.as_array().unwrap().clone();
    assert!(mine.len() >= 5, "{mine:?}");
    for o in &mine {
        assert!(
            ["RTX 4090", "RTX 3090"].contains(&gpu(o)) && price(o) <= 1.5,
            "{o}"
        );
    }
    let table = cli.run(&ml, &["search", "offers", "gpu_name=RTX_4090"]);
    assert!(
        plain(&table.stdout).contains("RTX_4090") && table.stderr.trim().is_empty(),
        "{}{}",
        table.stdout,
        table.stderr
    );
    let none = cli
        .run(&ml, &["search", "offers", "gpu_name=H100_SXM", "--raw"])
        .json();
    assert_eq!(none, Value::Array(Vec::new()));

    // A verified-only team asking for unverified hosts: the intersection
    // is empty (Warden's answer says why in `warden.empty_because`), and
    // the CLI prints it as an empty result, not an error.
    let sure = key(cfg, "sure");
    let unverified = cli
        .run(&cv, &["search", "offers", "verified=false", "--raw"])
        .json();
    assert!(
        !unverified.as_array().unwrap().is_empty(),
        "the market has unverified offers"
    );
    let empty = cli.run(&sure, &["search", "offers", "verified=false", "--raw"]);
    assert!(empty.stderr.trim().is_empty(), "{}", empty.stderr);
    assert_eq!(empty.json(), Value::Array(Vec::new()));
    let table = cli.run(&sure, &["search", "offers", "verified=false"]);
    assert!(
        table.stderr.trim().is_empty() && plain(&table.stdout).contains("ID"),
        "{}{}",
        table.stdout,
        table.stderr
    );
    let verified = cli
        .run(&sure, &["search", "offers", "verified=any", "--raw"])
        .json();
    let verified = verified.as_array().unwrap();
    assert!(
        !verified.is_empty() && verified.iter().all(|o| o["verified"] == true),
        "{verified:?}"
    );

    // Create the cheapest allowed offer; it is listed for ml only.
    let offer = mine[0]["id"].as_u64().unwrap();
    let created = cli.run(
        &ml,
        &[
            "create",
            "instance",
            &offer.to_string(),
            "--image",
            "pytorch/pytorch",
            "--disk",
            "20",
            "--raw",
        ],
    );
    assert!(created.stderr.trim().is_empty(), "{}", created.stderr);
    let id = created.json()["new_contract"]
        .as_u64()
        .expect("new_contract");
    let listed = cli.run(&ml, &["show", "instances", "--raw"]).json();
    assert_eq!(ids(&listed), [id]);
    let table = plain(&cli.run(&ml, &["show", "instances"]).stdout);
    assert!(
        table.contains(&id.to_string()) && table.contains("Total: 1 instances"),
        "{table}"
    );
    let one = cli
        .run(&ml, &["show", "instance", &id.to_string(), "--raw"])
        .json();
    assert_eq!(one["id"], id);
    assert_eq!(
        ids(&cli.run(&cv, &["show", "instances", "--raw"]).json()),
        Vec::<u64>::new()
    );
    let theirs = cli
        .run(&cv, &["show", "instance", &id.to_string(), "--raw"])
        .json();
    assert_eq!(theirs, serde_json::json!({"instances": null}));

    // A viewer key of ml: it searches and sees the team's instances, but
    // its create fails with the role in the message, and nothing is rented.
    let (code, out, err) = warden(&[
        "keys", "create", "--config", cfg, "--team", "ml", "--user", "fay", "--role", "viewer",
    ]);
    assert_eq!(code, 0, "{err}");
    let viewer = out.trim().to_owned();
    let seen = cli
        .run(&viewer, &["search", "offers", "num_gpus>=1", "--raw"])
        .json();
    assert!(!seen.as_array().unwrap().is_empty(), "{seen}");
    assert_eq!(
        ids(&cli.run(&viewer, &["show", "instances", "--raw"]).json()),
        [id]
    );
    let refused = cli.run(
        &viewer,
        &[
            "create",
            "instance",
            &mine[1]["id"].as_u64().unwrap().to_string(),
            "--image",
            "pytorch/pytorch",
            "--disk",
            "20",
            "--raw",
        ],
    );
    assert!(
        refused.stderr.contains("is `viewer` in team `ml`")
            && refused.stderr.contains("may create launch"),
        "stdout: {}\nstderr: {}",
        refused.stdout,
        refused.stderr
    );
    let refused = cli.run(&viewer, &["destroy", "instance", &id.to_string(), "-y"]);
    assert!(
        format!("{}{}", refused.stdout, refused.stderr).contains("`viewer`"),
        "stdout: {}\nstderr: {}",
        refused.stdout,
        refused.stderr
    );
    assert_eq!(
        ids(&cli.run(&ml, &["show", "instances", "--raw"]).json()),
        [id],
        "the viewer neither rented nor destroyed anything"
    );

    // Refused: a GPU ml may not use, and a launch over thrifty's budget.
    let h100 = all.iter().find(|o| gpu(o).starts_with("H100")).unwrap()["id"]
        .as_u64()
        .unwrap();
    let denied = cli.run(
        &ml,
        &[
            "create",
            "instance",
            &h100.to_string(),
            "--image",
            "pytorch/pytorch",
            "--disk",
            "20",
        ],
    );
    assert!(
        denied.stderr.contains("Failed with error 403")
            && denied.stderr.contains("[team.allowed_gpus] GPU `H100_"),
        "{}",
        denied.stderr
    );
    let pricey = mine
        .iter()
        .find(|o| price(o) > 0.1 && o["id"] != offer)
        .unwrap()["id"]
        .as_u64()
        .unwrap();
    let over = cli.run(
        &thrifty,
        &[
            "create",
            "instance",
            &pricey.to_string(),
            "--image",
            "pytorch/pytorch",
            "--disk",
            "20",
        ],
    );
    assert!(
        over.stderr.contains("Failed with error 403")
            && over
                .stderr
                .contains("[team.budgets] budget exceeded: budget $0.10"),
        "{}",
        over.stderr
    );
    assert_eq!(
        ids(&cli.run(&ml, &["show", "instances", "--raw"]).json()),
        [id]
    );

    // Another team cannot stop or destroy it.
    for args in [
        vec!["destroy", "instance", &id.to_string(), "-y"],
        vec!["stop", "instance", &id.to_string()],
    ] {
        let r = cli.run(&cv, &args);
        assert!(
            r.stderr.contains("Failed with error 404") && r.stderr.contains("not team `cv`'s"),
            "{args:?}: {}",
            r.stderr
        );
    }
    assert_eq!(
        ids(&cli.run(&ml, &["show", "instances", "--raw"]).json()),
        [id]
    );

    // The ledger has it at the instance's $/hour.
    let hourly = one["dph_total"].as_f64().unwrap();
    let (code, out, err) = warden(&["allocations", "list", "--config", cfg, "--team", "ml"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("vast") && out.contains(&id.to_string()),
        "{out}"
    );
    assert!(out.contains(&format!("${hourly}")), "{out} lacks ${hourly}");

    // Destroy: the pre-destroy command ran over (fake) ssh, the allocation
    // ended, the audit log has both.
    let gone = cli.run(&ml, &["destroy", "instance", &id.to_string(), "-y"]);
    assert!(
        gone.stdout.contains(&format!("destroying instance {id}")),
        "{}{}",
        gone.stdout,
        gone.stderr
    );
    assert_eq!(
        ids(&cli.run(&ml, &["show", "instances", "--raw"]).json()),
        Vec::<u64>::new()
    );
    let ssh_args = std::fs::read_to_string(&ssh_log).unwrap_or_default();
    assert!(
        ssh_args.lines().any(|l| l.starts_with("root@"))
            && ssh_args.ends_with("/opt/save-checkpoints.sh\n"),
        "{ssh_args}"
    );
    let (code, out, _) = warden(&["allocations", "list", "--config", cfg, "--team", "ml"]);
    assert_eq!(code, 0);
    assert!(out.contains("0 live allocation(s)"), "{out}");
    let (code, out, err) = warden(&["audit", "export", "--config", cfg]);
    assert_eq!(code, 0, "{err}");
    let records: Vec<Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let ended = records
        .iter()
        .find(|r| {
            r["kind"] == "allocation.ended" && r["payload"]["name"] == id.to_string().as_str()
        })
        .unwrap_or_else(|| panic!("no allocation.ended for {id}:\n{out}"));
    let micros = ended["payload"]["hourly_micros"].as_i64().unwrap();
    assert_eq!(micros, (hourly * 1e6).round() as i64);
    assert!(ended["payload"]["ended_us"].as_i64() > ended["payload"]["started_us"].as_i64());
    assert!(
        records
            .iter()
            .any(|r| r["kind"] == "vast.pre_destroy" && r["payload"]["exit_code"] == 0),
        "{out}"
    );
    let (code, out, _) = warden(&["audit", "verify", "--config", cfg]);
    assert_eq!(code, 0, "{out}");
    drop(server);
}

/// A `warden sim` process; killed on drop.
struct Sim {
    child: std::process::Child,
    addr: String,
}

impl Sim {
    fn start(args: &[&str]) -> Sim {
        use std::io::BufRead;
        let mut child = Command::new(env!("CARGO_BIN_EXE_warden"))
            .args(["sim", "--listen", "127.0.0.1:0"])
            .args(args)
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        // Owned from here: killed and waited for on drop, also on a panic.
        let mut sim = Sim {
            child,
            addr: String::new(),
        };
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                let _ = tx.send(line);
            }
        });
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let line = rx
                .recv_timeout(deadline.saturating_duration_since(Instant::now()))
                .expect("`warden sim` logs `listening`");
            let Ok(event) = serde_json::from_str::<Value>(&line) else {
                continue;
            };
            if event["message"] == "listening" {
                sim.addr = event["addr"].as_str().unwrap().to_owned();
                return sim;
            }
        }
    }
}

impl Drop for Sim {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The real CLI retries a create whose answer was lost (502): Warden finds
/// the instance the first try made instead of renting or reserving again.
/// Upstream: `warden sim` with faults, named by `vast.upstream_url`.
#[test]
fn a_create_whose_answer_is_lost_is_retried_by_the_cli_and_rents_once() {
    let python = venv_python();
    let bin = python.with_file_name("vastai");
    assert!(
        bin.exists(),
        "{} is missing: run scripts/setup-venv.sh",
        bin.display()
    );
    let sim_key = "sim-account-key-for-this-test";
    let sim = Sim::start(&[
        "--api-key",
        sim_key,
        "--fault",
        "create:500-after",
        "--fault",
        "create:drop",
    ]);
    let dir = TempDir::new("warden-vastai-faults");
    let db = format!("sqlite://{}", dir.0.join("w.db").display());
    let config = dir.0.join("warden.yaml");
    std::fs::write(
        &config,
        format!(
            "storage: {db}\nteams:\n  ml: {{allowed_gpus: [RTX_4090, RTX_3090]}}\nvast:\n  upstream_url: http://{}\n  api_key_env: WARDEN_TEST_SIM_KEY\n  timeout_seconds: 10\n",
            sim.addr
        ),
    )
    .unwrap();
    let cfg = config.to_str().unwrap();
    let ml = key(cfg, "ml");
    let server = Server::start_with_env(&config, &db, &[("WARDEN_TEST_SIM_KEY", sim_key.into())]);
    assert!(
        !server.log().contains("embedded marketplace simulator"),
        "{}",
        server.log()
    );
    let home = dir.0.join("home");
    std::fs::create_dir_all(&home).unwrap();
    let cli = Cli {
        bin,
        home,
        url: format!("http://{}/vast/", server.addr),
    };
    let offers = cli
        .run(
            &ml,
            &["search", "offers", "num_gpus=1", "-o", "dph_total", "--raw"],
        )
        .json();
    let offers = offers.as_array().unwrap();
    let mut created = Vec::new();
    for offer in offers.iter().take(2) {
        let id = offer["id"].as_u64().unwrap().to_string();
        let run = cli.run(
            &ml,
            &[
                "create",
                "instance",
                &id,
                "--image",
                "pytorch/pytorch",
                "--disk",
                "20",
                "--raw",
            ],
        );
        assert!(run.stderr.trim().is_empty(), "create {id}: {}", run.stderr);
        created.push(run.json()["new_contract"].as_u64().expect("new_contract"));
    }
    let listed = cli.run(&ml, &["show", "instances", "--raw"]).json();
    let mut got = ids(&listed);
    got.sort_unstable();
    created.sort_unstable();
    assert_eq!(got, created, "each create rented exactly one instance");
    let (code, out, err) = warden(&["allocations", "list", "--config", cfg]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("2 live allocation(s)") && !out.contains("pending:"),
        "{out}"
    );
    // Both faults were used: the first try of each create failed after
    // renting, the CLI's retry got the instance.
    let log = server.log();
    assert_eq!(log.matches("create outcome unknown").count(), 2, "{log}");
    assert_eq!(
        log.matches("a retried create found the instance").count(),
        2,
        "{log}"
    );
    drop(server);
}
