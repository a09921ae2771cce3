//! `warden k8s render` and `warden k8s diff`: the Kubernetes objects of a
//! config, for `kubectl apply --server-side -f -`, and their drift from a
//! cluster export ([`warden_server::kubernetes`]).

use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Subcommand, ValueEnum};
use warden_server::config::load_config;
use warden_server::kubernetes::diff::{self, MAX_LIVE_BYTES};
use warden_server::kubernetes::render::{
    self, RenderOptions, Rendered, WebhookTarget, MAX_CA_BYTES,
};

/// `warden k8s ...`.
#[derive(Subcommand)]
pub enum K8sCommand {
    /// Print each team's Namespace, ResourceQuota, LimitRange,
    /// NetworkPolicy and RoleBindings, the five ClusterRoles, and (with
    /// --webhook and --ca-file) the admission webhook registrations, for
    /// `kubectl apply --server-side -f -`. What is left out is said on
    /// stderr.
    Render {
        #[command(flatten)]
        args: RenderArgs,
        /// Only this team's objects.
        #[arg(long)]
        team: Option<String>,
        /// `yaml` (a `---` stream, default) or `json` (a `v1` `List`).
        #[arg(long, value_enum, default_value = "yaml")]
        format: Format,
    },
    /// Compare the rendered objects (every team) with a cluster export and
    /// name every drift; exit 0 none, 1 drift, 2 error. Export with
    /// `kubectl get <kinds> -A -o json`, kinds:
    /// `ns,resourcequota,limitrange,rolebinding,clusterrole,networkpolicy,validatingwebhookconfiguration,mutatingwebhookconfiguration`.
    Diff {
        #[command(flatten)]
        args: RenderArgs,
        /// The export (JSON; `-` for stdin), at most 64 MiB.
        #[arg(long)]
        live: PathBuf,
    },
}

/// What both commands render.
#[derive(clap::Args)]
pub struct RenderArgs {
    /// Config file.
    #[arg(long)]
    config: PathBuf,
    /// Warden's base URL as the API server reaches it
    /// (`https://warden.warden-system.svc:8443`); renders the webhook
    /// registrations for `POST /k8s/admission`. Needs --ca-file.
    #[arg(long, requires = "ca_file")]
    webhook: Option<String>,
    /// PEM CA that signed Warden's serving certificate (the registrations'
    /// `caBundle`).
    #[arg(long, requires = "webhook")]
    ca_file: Option<PathBuf>,
}

/// Output format of `k8s render`.
#[derive(Clone, Copy, ValueEnum)]
pub enum Format {
    /// A multi-document YAML stream.
    Yaml,
    /// A `v1` `List`.
    Json,
}

/// Runs a `k8s` command.
pub fn run(command: K8sCommand) -> anyhow::Result<ExitCode> {
    match command {
        K8sCommand::Render { args, team, format } => {
            let rendered = render_args(&args, team)?;
            warn(&rendered);
            match format {
                Format::Yaml => print!("{}", rendered.to_yaml()),
                Format::Json => print!("{}", rendered.to_json()),
            }
            Ok(ExitCode::SUCCESS)
        }
        K8sCommand::Diff { args, live } => Ok(match diff_cmd(&args, &live) {
            Ok(code) => code,
            Err(e) => {
                eprintln!("error: {e:#}");
                ExitCode::from(2)
            }
        }),
    }
}

fn warn(rendered: &Rendered) {
    for w in &rendered.warnings {
        eprintln!("warning: {w}");
    }
}

fn render_args(args: &RenderArgs, team: Option<String>) -> anyhow::Result<Rendered> {
    let config = load_config(&args.config).map_err(anyhow::Error::msg)?;
    let webhook = match (&args.webhook, &args.ca_file) {
        (Some(url), Some(ca)) => Some(WebhookTarget::new(url, read_bounded(ca, MAX_CA_BYTES)?)?),
        _ => None,
    };
    let opts = RenderOptions { team, webhook };
    Ok(render::render(&config.policy, &config.kubernetes, &opts)?)
}

/// Reads at most `max` bytes of `path` (`-`: stdin); more is an error.
fn read_bounded(path: &Path, max: u64) -> anyhow::Result<Vec<u8>> {
    let mut buf = Vec::new();
    let read = if path == Path::new("-") {
        std::io::stdin().lock().take(max + 1).read_to_end(&mut buf)
    } else {
        std::fs::File::open(path).and_then(|f| f.take(max + 1).read_to_end(&mut buf))
    };
    read.with_context(|| format!("cannot read `{}`", path.display()))?;
    if buf.len() as u64 > max {
        anyhow::bail!(
            "`{}` is larger than {} bytes; that is not what this option takes",
            path.display(),
            max
        );
    }
    Ok(buf)
}

fn diff_cmd(args: &RenderArgs, live: &Path) -> anyhow::Result<ExitCode> {
    // Every team, so that the objects of a removed team show as extra.
    let rendered = render_args(args, None)?;
    warn(&rendered);
    let bytes = read_bounded(live, MAX_LIVE_BYTES)?;
    let live_objects = diff::parse_live(&bytes).with_context(|| format!("`{}`", live.display()))?;
    let drift = diff::diff(&rendered.objects, &live_objects, rendered.with_webhook);
    if !rendered.with_webhook {
        eprintln!(
            "note: webhook registrations are not compared (give --webhook and --ca-file to \
             compare them)"
        );
    }
    for d in &drift {
        say!("{d}");
    }
    if drift.is_empty() {
        eprintln!(
            "no drift: {} rendered objects match the cluster",
            rendered.objects.len()
        );
        Ok(ExitCode::SUCCESS)
    } else {
        eprintln!("{} drift(s)", drift.len());
        Ok(ExitCode::from(1))
    }
}
