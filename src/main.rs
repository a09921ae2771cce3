//! The `warden` command: serve the doors, check a config, run policy tests,
//! decide one captured request, administer the store (audit, allocations,
//! keys).

/// Prints a line on stdout; a closed pipe (`warden test ... | head`) ends
/// the program quietly instead of panicking.
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        if let Err(e) = writeln!(std::io::stdout().lock(), $($arg)*) {
            if e.kind() == std::io::ErrorKind::BrokenPipe {
                std::process::exit(0);
            }
        }
    }};
}

mod access;
mod admin;
mod doctor;
mod exceptions;
mod k8s;
mod keys;
mod remote;
mod report;
mod table;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use warden_server::cases;
use warden_server::config::{load_config, load_policy};
use warden_server::doors::skypilot::{self, Answer};
use warden_server::Application;

/// Warden: one policy for every door a GPU launch can come through.
#[derive(Parser)]
#[command(name = "warden", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the doors (`POST /skypilot`, `GET /healthz`, `GET /readyz`).
    /// SIGHUP reloads the config; SIGTERM drains in-flight requests and exits.
    Serve {
        /// Policy/config file (YAML).
        #[arg(long, default_value = "examples/warden.yaml")]
        config: PathBuf,
        /// Address to listen on (`127.0.0.1:0` picks a free port).
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: String,
        /// Store URL, overriding the config's `storage` (`sqlite://PATH`,
        /// `postgres://USER@HOST/DB`, or `none` to decide without recording).
        #[arg(long)]
        storage: Option<String>,
        /// Serve HTTPS with this PEM certificate chain (leaf first); needs
        /// `--tls-key`. SIGHUP reloads both files.
        #[arg(long, requires = "tls_key")]
        tls_cert: Option<PathBuf>,
        /// The PEM private key of `--tls-cert` (readable by its owner only).
        #[arg(long, requires = "tls_cert")]
        tls_key: Option<PathBuf>,
        /// Without TLS, accept keys and tokens over plain HTTP from other
        /// machines too (by default only over loopback): for a network you
        /// trust, e.g. behind a TLS-terminating proxy on the same host.
        #[arg(long, conflicts_with = "tls_cert")]
        insecure_http: bool,
        /// Threads serving HTTP, each with its own event loop (1 to 256;
        /// default: one fewer than the CPUs, at least 1).
        #[arg(long, value_parser = clap::value_parser!(u16).range(1..=256))]
        http_threads: Option<u16>,
    },
    /// Validate a config file; exit 0 if valid, 1 with every problem if not.
    Check {
        /// Policy/config file (YAML).
        #[arg(long)]
        config: PathBuf,
    },
    /// Run policy test cases offline (no server); exit 0 if all pass.
    Test {
        /// Policy used by cases that do not carry their own.
        #[arg(long)]
        config: Option<PathBuf>,
        /// Case files or directories of case files.
        #[arg(required = true)]
        cases: Vec<PathBuf>,
    },
    /// Print the decision and the mutated task/config for one captured
    /// SkyPilot request body, or the decision and create body for a Vast
    /// request (`{"vast": {team, offer, offer_facts, body}}`, the shape the
    /// audit record keeps).
    Decide {
        /// Policy/config file (YAML).
        #[arg(long)]
        config: PathBuf,
        /// A request body as SkyPilot sends it (JSON string literal or
        /// object), or a JSON object `{"vast": {...}}`.
        request: PathBuf,
    },
    /// The audit chain in the store named by the config (`storage`).
    #[command(subcommand)]
    Audit(AuditCommand),
    /// Live allocations (granted launches) in the store.
    #[command(subcommand)]
    Allocations(AllocationsCommand),
    /// What-if: re-decide the requests recorded in the audit log under
    /// another config's policy and print what would change, per team
    /// (newly denied, newly allowed, different mutations). Quotas and
    /// budgets are not replayed.
    Replay {
        /// The new config (its policy is replayed; its `storage` names the
        /// store unless --storage is given).
        #[arg(long)]
        config: PathBuf,
        /// The store holding the audit log, overriding the config's `storage`.
        #[arg(long)]
        storage: Option<String>,
        /// From this UTC instant (`2026-11-01`) or age (`7d`, `12h`).
        #[arg(long, default_value = "7d")]
        since: String,
        /// Up to (excluding) this instant or age; default now.
        #[arg(long)]
        until: Option<String>,
        /// `table` (default) or `json`.
        #[arg(long, value_enum, default_value = "table")]
        format: admin::ReplayFormat,
    },
    /// Team API keys in the store: create (shown once), list, revoke, rotate.
    #[command(subcommand)]
    Keys(keys::KeysCommand),
    /// The security checklist: secret files' modes, Warden keys' expiry and
    /// age, the Vast.ai key's age, the listen address, a password in the
    /// store URL, and (`--scan`) keys committed to git. Prints a table of
    /// findings; exit 1 if any is serious.
    Doctor(doctor::DoctorArgs),
    /// Who may do what, by the config's `role_bindings`: `can-i`, `who-can`.
    #[command(subcommand)]
    Access(access::AccessCommand),
    /// Kubernetes: `render` the objects of each team's namespace (and the
    /// webhook registrations) for `kubectl apply`, `diff` them with a
    /// cluster export.
    #[command(subcommand)]
    K8s(k8s::K8sCommand),
    /// Time-limited exceptions in the store: grant, list, revoke.
    #[command(subcommand)]
    Exceptions(exceptions::ExceptionsCommand),
    /// Reconcile allocations with a platform's live resources once (what
    /// `warden serve` does every `skypilot_api.interval_seconds`).
    #[command(subcommand)]
    Sync(SyncCommand),
    /// Spend and chargeback reports over the store.
    #[command(subcommand)]
    Report(ReportCommand),
    /// Serve the Vast.ai marketplace simulator (the Vast door's embedded
    /// default upstream) on its own, e.g. to benchmark against it.
    Sim {
        /// Address to listen on (`127.0.0.1:0` picks a free port).
        #[arg(long, default_value = "127.0.0.1:8081")]
        listen: String,
        /// Seed of the offer catalog.
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// An API key the simulated account accepts (repeatable); none: any key.
        #[arg(long = "api-key")]
        api_keys: Vec<String>,
        /// A fault to inject, `ENDPOINT:ACTION[:TRIGGER]` (repeatable), e.g.
        /// `create:drop`, `*:503:p0.1`, `search:delay=250ms:3`.
        #[arg(long = "fault")]
        faults: Vec<String>,
    },
}

#[derive(Subcommand)]
enum ReportCommand {
    /// Spend per team (with its budget), user or GPU model over a day, a
    /// month (in the config's `time_zone`) or any window; live allocations
    /// accrued to now.
    Spend(report::SpendArgs),
    /// A month's charges per team and GPU model for finance, in cents that
    /// add up to the total.
    Chargeback(report::ChargebackArgs),
}

#[derive(Subcommand)]
enum SyncCommand {
    /// Poll the SkyPilot API server named by `skypilot_api`, end the
    /// allocations of clusters that are gone or stopped, record clusters
    /// Warden never saw, and print the report (JSON); exit 1 if anything
    /// failed.
    Skypilot {
        /// Config file (`storage` and `skypilot_api`).
        #[arg(long)]
        config: PathBuf,
    },
    /// Reconcile the `kubernetes` allocations with the GPU pods of a
    /// `kubectl get pods -A -o json` export: end allocations whose pods are
    /// gone (after `kubernetes.sync_grace_seconds`), record GPU workloads
    /// Warden never saw, and print the report (JSON); exit 1 if anything
    /// failed.
    K8s {
        /// Config file (`storage`, `teams`, `kubernetes`).
        #[arg(long)]
        config: PathBuf,
        /// The pod list (`kubectl get pods -A -o json > pods.json`).
        #[arg(long)]
        pods: PathBuf,
    },
}

#[derive(Subcommand)]
enum AuditCommand {
    /// Check the hash chain; exit 0 if intact, 1 naming the first edited,
    /// deleted, reordered or truncated record.
    Verify {
        /// Config file (its `storage` names the store).
        #[arg(long)]
        config: PathBuf,
    },
    /// Print audit records, oldest first.
    Export {
        /// Config file (its `storage` names the store).
        #[arg(long)]
        config: PathBuf,
        /// From this UTC instant (`2026-11-01`, `2026-11-01T08:00:00Z`) or age (`7d`, `12h`).
        #[arg(long)]
        since: Option<String>,
        /// Up to (excluding) this instant or age.
        #[arg(long)]
        until: Option<String>,
        /// `jsonl` (default) or `csv`.
        #[arg(long, value_enum, default_value = "jsonl")]
        format: admin::ExportFormat,
    },
}

#[derive(Subcommand)]
enum AllocationsCommand {
    /// List live allocations.
    List {
        /// Config file (its `storage` names the store).
        #[arg(long)]
        config: PathBuf,
        /// Only this team.
        #[arg(long)]
        team: Option<String>,
    },
    /// End live allocations (audited): by id, or by door and name.
    End {
        /// Config file (its `storage` names the store).
        #[arg(long)]
        config: PathBuf,
        /// The allocation id (from `list`).
        #[arg(long)]
        id: Option<i64>,
        /// The door (`skypilot`, `vast`, `kubernetes`), with --name.
        #[arg(long)]
        door: Option<String>,
        /// The cluster or instance name, with --door.
        #[arg(long)]
        name: Option<String>,
    },
}

// The door is allocation-heavy (YAML and JSON documents); mimalloc measured
// markedly faster than glibc malloc under the 2-worker server load.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// JSON log lines on stderr through one process-wide buffer
/// ([`warden_server::logging`]): tracing's events and the hand-written
/// decision lines are appended to it whole, and a background thread writes
/// it out at most `FLUSH_INTERVAL` (5 ms) after a line arrives, so a
/// decision never waits on the terminal or pipe and a burst costs one
/// syscall. Not lossy: when the buffer is full, logging waits rather than
/// dropping lines. Keep the guard alive until exit: dropping it writes out
/// what is buffered.
fn init_logging() -> Option<warden_server::logging::SinkGuard> {
    let filter = tracing_subscriber::EnvFilter::try_from_env("WARDEN_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let subscriber = tracing_subscriber::fmt()
        .json()
        .flatten_event(true)
        .with_current_span(false)
        .with_env_filter(filter);
    match warden_server::logging::init_global(std::io::stderr()) {
        Some((sink, guard)) => {
            subscriber.with_writer(move || sink.writer()).init();
            Some(guard)
        }
        // No writer thread: unbuffered stderr, decision lines included.
        None => {
            subscriber.with_writer(std::io::stderr).init();
            None
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Serve {
            config,
            listen,
            storage,
            tls_cert,
            tls_key,
            insecure_http,
            http_threads,
        } => serve(
            config,
            listen,
            storage,
            tls_cert.zip(tls_key),
            insecure_http,
            http_threads.map(usize::from),
        ),
        Command::Check { config } => check(&config),
        Command::Test { config, cases } => test(config, &cases),
        Command::Decide { config, request } => decide(&config, &request),
        Command::Audit(AuditCommand::Verify { config }) => admin::audit_verify(&config),
        Command::Audit(AuditCommand::Export {
            config,
            since,
            until,
            format,
        }) => admin::audit_export(&config, since.as_deref(), until.as_deref(), format),
        Command::Allocations(AllocationsCommand::List { config, team }) => {
            admin::allocations_list(&config, team.as_deref())
        }
        Command::Allocations(AllocationsCommand::End {
            config,
            id,
            door,
            name,
        }) => admin::allocations_end(&config, id, door.as_deref(), name.as_deref()),
        Command::Keys(command) => keys::run(command),
        Command::Exceptions(command) => exceptions::run(command),
        Command::Doctor(args) => doctor::run(&args),
        Command::Access(command) => access::run(command),
        Command::K8s(command) => k8s::run(command),
        Command::Sync(SyncCommand::Skypilot { config }) => admin::sync_skypilot(&config),
        Command::Sync(SyncCommand::K8s { config, pods }) => admin::sync_k8s(&config, &pods),
        Command::Sim {
            listen,
            seed,
            api_keys,
            faults,
        } => sim(&listen, seed, api_keys, &faults),
        Command::Replay {
            config,
            storage,
            since,
            until,
            format,
        } => admin::replay(
            &config,
            storage.as_deref(),
            &since,
            until.as_deref(),
            format,
        ),
        Command::Report(ReportCommand::Spend(args)) => report::spend(&args),
        Command::Report(ReportCommand::Chargeback(args)) => report::chargeback(&args),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn serve(
    config: PathBuf,
    listen: String,
    storage: Option<String>,
    tls: Option<(PathBuf, PathBuf)>,
    insecure_http: bool,
    http_threads: Option<usize>,
) -> anyhow::Result<ExitCode> {
    let _log_guard = init_logging();
    let mut cfg = load_config(&config).map_err(anyhow::Error::msg)?;
    let tls = tls
        .map(|(cert, key)| warden_server::tls::TlsFiles::load(&cert, &key))
        .transpose()?;
    if let Some(s) = storage {
        cfg.storage =
            warden_server::config::storage_url(&config, Some(&s)).map_err(anyhow::Error::msg)?;
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async move {
        let app = Application::build(cfg, &config, &listen)
            .await?
            .with_transport(tls, insecure_http);
        let app = match http_threads {
            Some(n) => app.with_http_threads(n),
            None => app,
        };
        app.run_until_signal().await?;
        Ok(ExitCode::SUCCESS)
    })
}

fn sim(
    listen: &str,
    seed: u64,
    api_keys: Vec<String>,
    faults: &[String],
) -> anyhow::Result<ExitCode> {
    let _log_guard = init_logging();
    let faults = faults
        .iter()
        .map(|f| f.parse::<warden_sim::Fault>())
        .collect::<Result<Vec<_>, _>>()?;
    let config = warden_sim::SimConfig {
        seed,
        api_keys,
        faults,
        ..warden_sim::SimConfig::default()
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async move {
        use tokio::signal::unix::{signal, SignalKind};
        let listener = tokio::net::TcpListener::bind(listen)
            .await
            .with_context(|| format!("cannot listen on {listen}"))?;
        let addr = listener.local_addr()?;
        tracing::info!(addr = %addr, seed, offers = config.offers, "listening");
        let mut term = signal(SignalKind::terminate())?;
        let mut int = signal(SignalKind::interrupt())?;
        let shutdown = async move {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
        };
        warden_sim::serve(listener, config, shutdown).await?;
        Ok(ExitCode::SUCCESS)
    })
}

fn check(config: &std::path::Path) -> anyhow::Result<ExitCode> {
    let loaded = load_config(config).and_then(|c| {
        let problems = warden_server::config::secret_file_problems(&c);
        if problems.is_empty() {
            Ok(c.policy)
        } else {
            Err(problems
                .iter()
                .map(|p| format!("{}: {p}", config.display()))
                .collect::<Vec<_>>()
                .join("\n"))
        }
    });
    match loaded {
        Ok(p) => {
            say!(
                "{}: ok ({} teams, {} rules including team limits)",
                config.display(),
                p.team_count(),
                p.rules().len()
            );
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            eprintln!("{e}");
            Ok(ExitCode::FAILURE)
        }
    }
}

fn test(config: Option<PathBuf>, inputs: &[PathBuf]) -> anyhow::Result<ExitCode> {
    let policy = match &config {
        Some(c) => Some(load_policy(c).map_err(anyhow::Error::msg)?),
        None => None,
    };
    let mut files = Vec::new();
    for input in inputs {
        if input.is_dir() {
            files.extend(
                cases::find_case_files(input)
                    .with_context(|| format!("cannot list {}", input.display()))?,
            );
        } else {
            files.push(input.clone());
        }
    }
    let (mut passed, mut failed) = (0usize, 0usize);
    for file in &files {
        match cases::run_file(file, policy.as_ref()) {
            Ok(results) => {
                for r in results {
                    if r.passed() {
                        passed += 1;
                        say!("PASS {}", r.name);
                    } else {
                        failed += 1;
                        say!("FAIL {}", r.name);
                        for f in &r.failures {
                            say!("    {f}");
                        }
                    }
                }
            }
            Err(e) => {
                failed += 1;
                say!("FAIL {e}");
            }
        }
    }
    say!("{passed} passed, {failed} failed");
    Ok(if failed == 0 && passed > 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// `warden decide` of a Vast request (`{"vast": {team, user, offer,
/// offer_facts, body}}` or `{"vast": {team, start, instance_facts}}`).
fn decide_vast(
    policy: &warden_core::Policy,
    request: &std::path::Path,
    vast: &serde_json::Value,
) -> anyhow::Result<ExitCode> {
    let Some(team) = vast.get("team").and_then(serde_json::Value::as_str) else {
        eprintln!(
            "{}: vast.team: name the team whose key makes the request",
            request.display()
        );
        return Ok(ExitCode::FAILURE);
    };
    let user = vast.get("user").and_then(serde_json::Value::as_str);
    match warden_server::doors::vast::offline::decide(policy, team, user, vast) {
        Ok(d) => {
            let status = if d.decision.is_allowed() { 200 } else { 403 };
            let message = (!d.decision.is_allowed()).then(|| d.decision.denial_message());
            let out = serde_json::json!({
                "status": status,
                "decision": d.decision,
                "message": message,
                "body": d.body,
            });
            say!("{}", serde_json::to_string_pretty(&out)?);
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            eprintln!(
                "{}: the door would answer {}: {e}",
                request.display(),
                e.status_code()
            );
            Ok(ExitCode::FAILURE)
        }
    }
}

fn decide(config: &std::path::Path, request: &std::path::Path) -> anyhow::Result<ExitCode> {
    let policy = load_policy(config).map_err(anyhow::Error::msg)?;
    let body =
        std::fs::read(request).with_context(|| format!("cannot read {}", request.display()))?;
    // A Vast request as the audit record keeps it: `{"vast": {...}}`.
    if let Ok(serde_json::Value::Object(top)) = serde_json::from_slice(&body) {
        if let Some(vast) = top.get("vast") {
            return decide_vast(&policy, request, vast);
        }
    }
    let handled = match skypilot::handle(&policy, &body) {
        Ok(h) => h,
        Err(e) => {
            eprintln!(
                "{}: the door would answer {}: {e}",
                request.display(),
                e.status_code()
            );
            return Ok(ExitCode::FAILURE);
        }
    };
    let doc = |text: &str| -> serde_json::Value {
        // What SkyPilot's YAML loader reads (YAML 1.1), shown as JSON.
        match warden_server::doors::skypilot::yaml::parse(text) {
            Ok(Some(node)) => node.to_json(),
            Ok(None) => serde_json::Value::Null,
            Err(_) => serde_json::Value::String(text.to_owned()),
        }
    };
    let (status, message) = match &handled.answer {
        Answer::Allow(_) => (200, None),
        Answer::Deny(m) => (400, Some(m.clone())),
    };
    let out = serde_json::json!({
        "status": status,
        "decision": handled.decision,
        "message": message,
        "task": doc(&handled.task),
        "skypilot_config": doc(&handled.config),
    });
    say!("{}", serde_json::to_string_pretty(&out)?);
    Ok(ExitCode::SUCCESS)
}
