//! The normalized launch request every door builds from its own wire format.

use std::collections::BTreeMap;
use std::fmt;

use serde::Serialize;

use crate::ids::GpuModel;
use crate::money::Usd;

/// Which door a request came through.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Door {
    /// SkyPilot's RESTful admin-policy protocol.
    Skypilot,
    /// The Vast.ai API proxy.
    Vast,
    /// Kubernetes admission.
    Kubernetes,
}

impl Door {
    /// The door's name as used in config (`match.doors`).
    pub fn as_str(self) -> &'static str {
        match self {
            Door::Skypilot => "skypilot",
            Door::Vast => "vast",
            Door::Kubernetes => "kubernetes",
        }
    }
}

impl fmt::Display for Door {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A GPU ask: model and count per node. Fractional counts (`A100:0.5`) are
/// rounded up: a slice of a GPU occupies a GPU for limits and prices.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Accelerator {
    /// The GPU model.
    pub model: GpuModel,
    /// GPUs per node.
    pub count: u32,
}

/// One concrete resource candidate. A request with a candidate set
/// (`accelerators: [H100:8, A100:8]`, `any_of`, `ordered`) has several; the
/// cloud picks one, so limits judge every candidate and the worst counts.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Resource {
    /// The GPU ask, if any.
    pub accelerator: Option<Accelerator>,
    /// Cloud (`aws`, `gcp`, `kubernetes`, `slurm`, ...), lower case.
    pub cloud: Option<String>,
    /// Region (or Kubernetes context, Slurm cluster).
    pub region: Option<String>,
    /// Zone (or Slurm partition).
    pub zone: Option<String>,
    /// Whether the candidate uses spot / interruptible capacity.
    pub use_spot: bool,
    /// vCPU ask as written (`4+`, `8`).
    pub cpus: Option<String>,
    /// Memory ask as written (`16+`, `64`, `4x`).
    pub memory: Option<String>,
    /// Disk size in GB.
    pub disk_size: Option<i64>,
    /// Machine or container image.
    pub image_id: Option<String>,
    /// Ports to open.
    pub ports: Vec<String>,
    /// The price the door was quoted for one node of this candidate (a
    /// marketplace offer's `dph_total`), when it knows one: limits and the
    /// recorded cost then use it instead of the price table.
    pub quote: Option<Quote>,
    /// What a marketplace says about the host, when the door knows it
    /// (the Vast door fills it from the offer or the instance; CEL reads
    /// `resource.reliability`, `resource.verified`, `resource.host_id`).
    pub host: Option<HostFacts>,
}

/// Marketplace facts about the machine a candidate runs on.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct HostFacts {
    /// The host's reliability score, 0 to 1 (Vast's `reliability2`).
    pub reliability: Option<f64>,
    /// Whether the marketplace verified the host.
    pub verified: Option<bool>,
    /// The host (provider) id.
    pub host_id: Option<String>,
}

/// A price quoted for one node of a candidate, per hour: what this very
/// machine costs, on demand and as spot (interruptible) capacity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Quote {
    /// On-demand $/hour.
    pub on_demand: Usd,
    /// Spot (interruptible) $/hour.
    pub spot: Usd,
}

impl Resource {
    /// GPUs per node (0 for CPU-only).
    pub fn gpus_per_node(&self) -> u32 {
        self.accelerator.as_ref().map_or(0, |a| a.count)
    }

    /// The memory ask in GB, when written as a number (`64`, `64+`, `64GB`).
    pub fn memory_gb(&self) -> Option<f64> {
        let m = self.memory.as_deref()?.trim();
        let m = m.trim_end_matches('+').trim();
        let m = m
            .strip_suffix("GB")
            .or_else(|| m.strip_suffix("gb"))
            .unwrap_or(m);
        m.trim().parse::<f64>().ok().filter(|v| v.is_finite())
    }
}

/// Autostop settings: stop (or tear down) after this many idle minutes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Autostop {
    /// Idle minutes before stopping.
    pub idle_minutes: i64,
    /// Tear down instead of stopping.
    pub down: bool,
}

/// Who is asking. Doors fill what their protocol carries; the core resolves
/// the team (see [`crate::Policy::resolve_team`]).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Principal {
    /// The user name, when the door knows it (SkyPilot server side, Vast key).
    pub user: Option<String>,
    /// A team the door already authenticated (e.g. from a team key).
    pub team: Option<String>,
    /// The workspace the request runs in (SkyPilot `active_workspace`).
    pub workspace: Option<String>,
    /// The role of the Warden key the door authenticated, if any (a key
    /// holds this role in `team`; see [`crate::access`]).
    pub role: Option<crate::access::Role>,
    /// The groups the door's identity source vouches for (Kubernetes
    /// `userInfo.groups`), matched by group role bindings.
    pub groups: Vec<String>,
}

/// The label that marks a launch as an inference endpoint where the door
/// has no separate verb for one (a Vast instance labelled
/// `workload=inference`): creating, starting or stopping it is `serve`.
pub const WORKLOAD_LABEL: (&str, &str) = ("workload", "inference");

impl LaunchRequest {
    /// What launching this request is, for [`crate::access`]: `create
    /// serve` for SkyPilot `serve.up`/`serve.launch_replica` and for a launch
    /// labelled [`WORKLOAD_LABEL`], `update serve` for `serve.update`,
    /// `create launch` for every other launch. `None` for what allocates
    /// nothing by itself (`validate`, `optimize`) and for controllers
    /// (Warden's own decision of the user's request covers them).
    pub fn access_question(&self) -> Option<(crate::access::Verb, crate::access::Resource)> {
        use crate::access::{Resource as R, Verb as V};
        let name = self.request_name.as_str();
        if self.is_controller() || matches!(name, "validate" | "optimize") {
            return None;
        }
        let inference =
            self.labels.get(WORKLOAD_LABEL.0).map(String::as_str) == Some(WORKLOAD_LABEL.1);
        Some(match name {
            "serve.update" => (V::Update, R::Serve),
            n if n.starts_with("serve.") => (V::Create, R::Serve),
            _ if inference => (V::Create, R::Serve),
            _ => (V::Create, R::Launch),
        })
    }
}

/// A launch request, the same shape from every door.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LaunchRequest {
    /// The door it came through.
    pub door: Door,
    /// What the client is doing (`launch`, `exec`, `jobs.launch`, `validate`, ...).
    pub request_name: String,
    /// What the launch is called at the door, when known: the SkyPilot
    /// cluster name, a Vast instance id.
    pub target: Option<String>,
    /// Who is asking.
    pub principal: Principal,
    /// Whether the request was evaluated on the user's machine (SkyPilot
    /// client-side policy) rather than by a server the admin controls.
    pub at_client_side: bool,
    /// The client's API version, when sent.
    pub client_api_version: Option<i64>,
    /// The client's version string, when sent.
    pub client_version: Option<String>,
    /// Number of nodes.
    pub num_nodes: u32,
    /// Resource candidates; at least one (a CPU-only candidate when the
    /// request names no resources).
    pub resources: Vec<Resource>,
    /// Autostop requested, if any.
    pub autostop: Option<Autostop>,
    /// Labels on the launch.
    pub labels: BTreeMap<String, String>,
    /// Volumes: mount path to volume name or spec.
    pub volumes: BTreeMap<String, serde_json::Value>,
    /// The door's native task document (for CEL `task` and raw paths).
    pub task: serde_json::Value,
    /// The door's native config document (for CEL `config` and raw paths),
    /// `Null` when the door has none or did not need to parse it.
    pub config: serde_json::Value,
    /// The time-limited exceptions active for the request's team now
    /// (filled by the gate from the store; see [`crate::exception`]).
    #[serde(skip)]
    pub exceptions: Vec<crate::exception::Exception>,
}

impl LaunchRequest {
    /// A request with one CPU-only candidate and empty documents; doors and
    /// tests fill in the rest.
    pub fn new(door: Door, request_name: impl Into<String>) -> Self {
        Self {
            door,
            request_name: request_name.into(),
            target: None,
            principal: Principal::default(),
            at_client_side: false,
            client_api_version: None,
            client_version: None,
            num_nodes: 1,
            resources: vec![Resource::default()],
            autostop: None,
            labels: BTreeMap::new(),
            volumes: BTreeMap::new(),
            task: serde_json::Value::Null,
            config: serde_json::Value::Null,
            exceptions: Vec::new(),
        }
    }

    /// Whether this request provisions a SkyPilot jobs/serve controller
    /// (`jobs.launch_controller`, `serve.launch_controller`): exempt from
    /// rules unless a rule opts in with `controllers: true`.
    pub fn is_controller(&self) -> bool {
        self.request_name.ends_with("launch_controller")
    }

    /// Total GPUs of one candidate across all nodes.
    pub fn total_gpus(&self, r: &Resource) -> u64 {
        u64::from(r.gpus_per_node()) * u64::from(self.num_nodes)
    }

    /// The worst-case total GPUs over all candidates.
    pub fn max_total_gpus(&self) -> u64 {
        self.resources
            .iter()
            .map(|r| self.total_gpus(r))
            .max()
            .unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_gb_reads_plain_and_plus_forms() {
        let mut r = Resource::default();
        for (m, want) in [
            ("64", Some(64.0)),
            ("16+", Some(16.0)),
            ("4x", None),
            ("128GB", Some(128.0)),
        ] {
            r.memory = Some(m.into());
            assert_eq!(r.memory_gb(), want, "{m}");
        }
    }

    #[test]
    fn controller_requests_are_recognised() {
        assert!(LaunchRequest::new(Door::Skypilot, "jobs.launch_controller").is_controller());
        assert!(LaunchRequest::new(Door::Skypilot, "serve.launch_controller").is_controller());
        assert!(!LaunchRequest::new(Door::Skypilot, "jobs.launch").is_controller());
    }
}
