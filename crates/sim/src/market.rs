//! The marketplace model: offers, instances, their lifecycle and their cost.
//!
//! Lifecycle: create → `loading` (for the configured boot delay, on the sim
//! clock) → `running`; stop → `exited` (intended `stopped`); start →
//! `loading` again → `running`; destroy → gone from every listing. Status is
//! computed from the clock when asked, so no timers run.
//!
//! Cost: while loading or running the instance accrues its `dph_total` (the
//! GPU price plus its disk's storage price); while stopped only the storage
//! price (`storage_cost` $/GB/month × disk GB / 720 h). Cost is kept as
//! integer micro-dollars from the exact time spent in each state.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use serde_json::{json, Map, Value};

use crate::catalog::{self, usd, Offer};
use crate::clock::{elapsed, unix_secs};
use crate::error::ApiError;
use crate::query::{OfferQuery, OfferType};

/// Where an instance is in its lifecycle.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InstanceStatus {
    /// Created or started, booting (`actual_status: "loading"`).
    Loading,
    /// Booted (`actual_status: "running"`).
    Running,
    /// Stopped by its owner (`actual_status: "exited"`, `intended_status: "stopped"`).
    Stopped,
    /// Destroyed: no longer listed; its offer is available again.
    Destroyed,
}

/// A snapshot of one instance, for tests and tools driving the simulator.
#[derive(Clone, Debug, PartialEq)]
pub struct InstanceInfo {
    /// The instance id (`new_contract`).
    pub id: u64,
    /// The offer it was created from.
    pub offer_id: u64,
    /// The API key that created it.
    pub owner_key: String,
    /// Lifecycle state now.
    pub status: InstanceStatus,
    /// GPU model name, as in the offer.
    pub gpu_name: String,
    /// GPU count.
    pub num_gpus: u64,
    /// Docker image.
    pub image: String,
    /// Label, if any.
    pub label: Option<String>,
    /// Disk size in GB.
    pub disk_gb: f64,
    /// Price while loading or running, micro-dollars per hour (GPU + storage).
    pub dph_total_micros: u64,
    /// Cost accrued so far (frozen at destruction), micro-dollars.
    pub cost_micros: u64,
    /// When it was created.
    pub start_date: SystemTime,
    /// When it was destroyed, if it was.
    pub destroyed_at: Option<SystemTime>,
}

/// The fields of a create (`PUT /asks/{id}/`) or launch body the simulator uses.
#[derive(Clone, Debug)]
pub(crate) struct CreateRequest {
    image: String,
    disk_gb: f64,
    label: Option<String>,
    env: Vec<(String, String)>,
    onstart: Option<String>,
    runtype: Option<String>,
    args: Value,
    /// Bid price in $/h: rents interruptibly at that price.
    price: Option<f64>,
}

impl CreateRequest {
    pub(crate) fn parse(body: &Value) -> Result<CreateRequest, ApiError> {
        let text = |key: &str| body.get(key).and_then(Value::as_str).map(str::to_owned);
        let image = text("image").ok_or_else(|| {
            ApiError::bad("`image` is required: the docker image to run, e.g. pytorch/pytorch")
        })?;
        let disk_gb = match body.get("disk") {
            None | Some(Value::Null) => 10.0,
            Some(d) => d.as_f64().filter(|d| *d > 0.0).ok_or_else(|| {
                ApiError::bad(format!("`disk` must be a positive number of GB, not {d}"))
            })?,
        };
        let price = match body.get("price") {
            None | Some(Value::Null) => None,
            Some(p) => Some(p.as_f64().filter(|p| *p > 0.0).ok_or_else(|| {
                ApiError::bad(format!("`price` must be a positive bid in $/hour, not {p}"))
            })?),
        };
        // Keys starting with '-' are docker options (`-p 8080:8080`, `-h name`), not variables.
        let env = match body.get("env") {
            Some(Value::Object(vars)) => vars
                .iter()
                .filter(|(k, _)| !k.starts_with('-'))
                .map(|(k, v)| {
                    (
                        k.clone(),
                        v.as_str().map_or_else(|| v.to_string(), str::to_owned),
                    )
                })
                .collect(),
            _ => Vec::new(),
        };
        Ok(CreateRequest {
            image,
            disk_gb,
            label: text("label"),
            env,
            onstart: text("onstart"),
            runtype: text("runtype"),
            args: body.get("args").cloned().unwrap_or(Value::Null),
            price,
        })
    }
}

#[derive(Clone, Copy, Debug)]
enum Run {
    Active {
        since: SystemTime,
        ready_at: SystemTime,
    },
    Stopped {
        since: SystemTime,
    },
}

#[derive(Clone, Debug)]
struct Instance {
    id: u64,
    offer_id: u64,
    owner_key: String,
    req: CreateRequest,
    is_bid: bool,
    dph_base: u64,
    dph_total: u64,
    storage_per_hour: u64,
    min_bid: u64,
    hardware: Map<String, Value>,
    created: SystemTime,
    run: Run,
    active: Duration,
    stopped: Duration,
    destroyed: Option<SystemTime>,
}

/// Offer fields an instance row repeats.
#[rustfmt::skip]
const HARDWARE_FIELDS: [&str; 16] = [
    "machine_id",
    "host_id",
    "gpu_name",
    "gpu_arch",
    "num_gpus",
    "gpu_ram",
    "cpu_cores_effective",
    "cpu_ram",
    "geolocation",
    "inet_up",
    "inet_down",
    "reliability2",
    "verification",
    "end_date",
    "cuda_max_good",
    "driver_version",
];

const NANOS_PER_HOUR: u128 = 3_600_000_000_000;

impl Instance {
    fn status(&self, now: SystemTime) -> InstanceStatus {
        match (self.destroyed, self.run) {
            (Some(_), _) => InstanceStatus::Destroyed,
            (None, Run::Stopped { .. }) => InstanceStatus::Stopped,
            (None, Run::Active { ready_at, .. }) if now < ready_at => InstanceStatus::Loading,
            (None, Run::Active { .. }) => InstanceStatus::Running,
        }
    }

    /// Closes the current billing segment at `now`.
    fn close(&mut self, now: SystemTime) {
        match &mut self.run {
            Run::Active { since, .. } => {
                self.active += elapsed(*since, now);
                *since = now;
            }
            Run::Stopped { since } => {
                self.stopped += elapsed(*since, now);
                *since = now;
            }
        }
    }

    fn cost_micros(&self, now: SystemTime) -> u64 {
        let end = self.destroyed.unwrap_or(now);
        let (active, stopped) = match self.run {
            Run::Active { since, .. } => (self.active + elapsed(since, end), self.stopped),
            Run::Stopped { since } => (self.active, self.stopped + elapsed(since, end)),
        };
        let micros = (u128::from(self.dph_total) * active.as_nanos()
            + u128::from(self.storage_per_hour) * stopped.as_nanos())
            / NANOS_PER_HOUR;
        u64::try_from(micros).unwrap_or(u64::MAX)
    }

    fn info(&self, now: SystemTime) -> InstanceInfo {
        let hw = |k: &str| self.hardware.get(k);
        InstanceInfo {
            id: self.id,
            offer_id: self.offer_id,
            owner_key: self.owner_key.clone(),
            status: self.status(now),
            gpu_name: hw("gpu_name")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned(),
            num_gpus: hw("num_gpus").and_then(Value::as_u64).unwrap_or_default(),
            image: self.req.image.clone(),
            label: self.req.label.clone(),
            disk_gb: self.req.disk_gb,
            dph_total_micros: self.dph_total,
            cost_micros: self.cost_micros(now),
            start_date: self.created,
            destroyed_at: self.destroyed,
        }
    }

    /// The instance as `show instance(s)` answers it.
    fn row(&self, now: SystemTime) -> Map<String, Value> {
        let status = self.status(now);
        let (actual, intended, msg) = match status {
            InstanceStatus::Loading => ("loading", "running", "pulling image"),
            InstanceStatus::Running => ("running", "running", "success, running"),
            InstanceStatus::Stopped => ("exited", "stopped", "stopped"),
            InstanceStatus::Destroyed => ("offline", "stopped", "destroyed"),
        };
        let uptime_mins = match self.run {
            Run::Active { ready_at, .. } if status == InstanceStatus::Running => {
                elapsed(ready_at, now).as_secs_f64() / 60.0
            }
            _ => 0.0,
        };
        let idx = self.id % 10;
        let mut row = self.hardware.clone();
        let fields = json!({
            "id": self.id,
            "actual_status": actual,
            "intended_status": intended,
            "cur_state": if intended == "running" { "running" } else { "stopped" },
            "next_state": intended,
            "status_msg": msg,
            "image_uuid": self.req.image,
            "image_runtype": self.req.runtype.as_deref().unwrap_or("ssh"),
            "image_args": self.req.args,
            "onstart": self.req.onstart,
            "label": self.req.label,
            "extra_env": self.req.env.iter().map(|(k, v)| json!([k, v])).collect::<Vec<_>>(),
            "disk_space": self.req.disk_gb,
            "disk_usage": 0.0,
            "disk_util": 0.0,
            "gpu_util": 0.0,
            "dph_base": usd(self.dph_base),
            "dph_total": usd(self.dph_total),
            "min_bid": usd(self.min_bid),
            "is_bid": self.is_bid,
            "start_date": unix_secs(self.created),
            "uptime_mins": uptime_mins,
            "ssh_idx": idx.to_string(),
            "ssh_host": format!("ssh{idx}.sim.invalid"),
            "ssh_port": 20_000 + self.id % 40_000,
            "public_ipaddr": format!("198.51.100.{}", self.id % 250 + 1),
            "template_id": null,
            "template_name": null,
            "volume_info": [],
            // Simulator only: Vast does not report accrued cost per instance.
            "total_cost": usd(self.cost_micros(now)),
        });
        if let Value::Object(fields) = fields {
            row.extend(fields);
        }
        row
    }
}

/// Offers and instances, behind the simulator's one lock.
#[derive(Debug)]
pub(crate) struct Market {
    offers: BTreeMap<u64, Offer>,
    instances: BTreeMap<u64, Instance>,
    next_instance_id: u64,
    boot_delay: Duration,
    /// Where every instance says its SSH server is, when set.
    ssh_address: Option<(String, u16)>,
}

impl Market {
    /// Every instance reports this SSH address (a real sshd for tests).
    pub(crate) fn set_ssh_address(&mut self, address: Option<(String, u16)>) {
        self.ssh_address = address;
    }

    fn with_ssh(&self, mut row: Map<String, Value>) -> Map<String, Value> {
        if let Some((host, port)) = &self.ssh_address {
            row.insert("ssh_host".to_owned(), Value::String(host.clone()));
            row.insert("ssh_port".to_owned(), Value::from(*port));
        }
        row
    }

    pub(crate) fn new(offers: Vec<Offer>, first_instance_id: u64, boot_delay: Duration) -> Market {
        Market {
            offers: offers.into_iter().map(|o| (o.id, o)).collect(),
            instances: BTreeMap::new(),
            next_instance_id: first_instance_id,
            boot_delay,
            ssh_address: None,
        }
    }

    pub(crate) fn offers(&self) -> impl Iterator<Item = &Offer> {
        self.offers.values()
    }

    pub(crate) fn search(&self, q: &OfferQuery) -> Vec<Map<String, Value>> {
        let mut rows: Vec<_> = self
            .offers
            .values()
            .map(|o| o.render(q.allocated_storage, q.kind))
            .filter(|row| q.filter.matches(row))
            .collect();
        q.order.sort(&mut rows);
        rows.truncate(q.limit);
        rows
    }

    pub(crate) fn create(
        &mut self,
        offer_id: u64,
        req: &CreateRequest,
        owner: &str,
        now: SystemTime,
    ) -> Result<u64, ApiError> {
        let offer = self
            .offers
            .get(&offer_id)
            .filter(|o| o.rented_by.is_none())
            .ok_or(ApiError::NoSuchAsk(offer_id))?;
        let disk_space = offer
            .fields
            .get("disk_space")
            .and_then(Value::as_f64)
            .unwrap_or(0.0);
        if req.disk_gb > disk_space {
            return Err(ApiError::bad(format!(
                "`disk` {} GB is more than offer {offer_id} has ({disk_space} GB)",
                req.disk_gb
            )));
        }
        let dph_base = match req.price {
            None => offer.dph_base,
            Some(bid) => {
                let bid = (bid * 1e6).round() as u64;
                if bid < offer.min_bid {
                    return Err(ApiError::bad(format!(
                        "bid ${} is below offer {offer_id}'s minimum bid ${}",
                        usd(bid),
                        usd(offer.min_bid)
                    )));
                }
                bid
            }
        };
        let storage_per_hour = catalog::storage_per_hour(offer.storage_cost, req.disk_gb);
        let id = self.next_instance_id;
        let instance = Instance {
            id,
            offer_id,
            owner_key: owner.to_owned(),
            req: req.clone(),
            is_bid: req.price.is_some(),
            dph_base,
            dph_total: dph_base + storage_per_hour,
            storage_per_hour,
            min_bid: offer.min_bid,
            hardware: HARDWARE_FIELDS
                .iter()
                .filter_map(|k| Some(((*k).to_owned(), offer.fields.get(*k)?.clone())))
                .collect(),
            created: now,
            run: Run::Active {
                since: now,
                ready_at: now + self.boot_delay,
            },
            active: Duration::ZERO,
            stopped: Duration::ZERO,
            destroyed: None,
        };
        if let Some(offer) = self.offers.get_mut(&offer_id) {
            offer.rented_by = Some(id);
        }
        self.instances.insert(id, instance);
        self.next_instance_id += 1;
        Ok(id)
    }

    /// Creates one instance per offer, or none if any offer is unavailable.
    pub(crate) fn create_many(
        &mut self,
        offer_ids: &[u64],
        req: &CreateRequest,
        owner: &str,
        now: SystemTime,
    ) -> Result<Vec<u64>, ApiError> {
        if let Some(gone) = offer_ids
            .iter()
            .find(|id| self.offers.get(id).is_none_or(|o| o.rented_by.is_some()))
        {
            return Err(ApiError::NoSuchAsk(*gone));
        }
        offer_ids
            .iter()
            .map(|id| self.create(*id, req, owner, now))
            .collect()
    }

    /// Rents the best available offer matching `q` (`launch instance`).
    pub(crate) fn launch(
        &mut self,
        q: &OfferQuery,
        req: &CreateRequest,
        owner: &str,
        now: SystemTime,
    ) -> Result<u64, ApiError> {
        let best = self
            .search(&OfferQuery {
                limit: usize::MAX,
                kind: OfferType::OnDemand,
                ..q.clone()
            })
            .into_iter()
            .filter_map(|row| row.get("id").and_then(Value::as_u64))
            .find(|id| self.offers.get(id).is_some_and(|o| o.rented_by.is_none()))
            .ok_or(ApiError::NoMatchingOffer)?;
        self.create(best, req, owner, now)
    }

    fn live_ids(&self, ids: &[u64]) -> Result<(), ApiError> {
        match ids
            .iter()
            .find(|id| self.instances.get(id).is_none_or(|i| i.destroyed.is_some()))
        {
            Some(missing) => Err(ApiError::NoSuchInstance(*missing)),
            None => Ok(()),
        }
    }

    /// Starts (`running`) or stops instances; all ids must be live.
    pub(crate) fn set_running(
        &mut self,
        ids: &[u64],
        running: bool,
        now: SystemTime,
    ) -> Result<(), ApiError> {
        self.live_ids(ids)?;
        let boot_delay = self.boot_delay;
        for id in ids {
            let Some(inst) = self.instances.get_mut(id) else {
                continue;
            };
            match (inst.run, running) {
                (Run::Active { .. }, false) => {
                    inst.close(now);
                    inst.run = Run::Stopped { since: now };
                }
                (Run::Stopped { .. }, true) => {
                    inst.close(now);
                    inst.run = Run::Active {
                        since: now,
                        ready_at: now + boot_delay,
                    };
                }
                _ => {}
            }
        }
        Ok(())
    }

    pub(crate) fn set_label(&mut self, id: u64, label: Option<String>) -> Result<(), ApiError> {
        self.live_ids(&[id])?;
        if let Some(inst) = self.instances.get_mut(&id) {
            inst.req.label = label;
        }
        Ok(())
    }

    /// Destroys instances and frees their offers; all ids must be live.
    pub(crate) fn destroy(&mut self, ids: &[u64], now: SystemTime) -> Result<(), ApiError> {
        self.live_ids(ids)?;
        for id in ids {
            let Some(inst) = self.instances.get_mut(id) else {
                continue;
            };
            inst.close(now);
            inst.destroyed = Some(now);
            if let Some(offer) = self.offers.get_mut(&inst.offer_id) {
                offer.rented_by = None;
            }
        }
        Ok(())
    }

    /// Rows of the live instances, by id.
    pub(crate) fn rows(&self, now: SystemTime) -> Vec<Map<String, Value>> {
        self.instances
            .values()
            .filter(|i| i.destroyed.is_none())
            .map(|i| self.with_ssh(i.row(now)))
            .collect()
    }

    pub(crate) fn row(&self, id: u64, now: SystemTime) -> Option<Map<String, Value>> {
        self.instances
            .get(&id)
            .filter(|i| i.destroyed.is_none())
            .map(|i| self.with_ssh(i.row(now)))
    }

    pub(crate) fn infos(&self, now: SystemTime) -> impl Iterator<Item = InstanceInfo> + '_ {
        self.instances.values().map(move |i| i.info(now))
    }

    /// Cost accrued by every instance ever created, micro-dollars.
    pub(crate) fn spent_micros(&self, now: SystemTime) -> u64 {
        self.instances.values().map(|i| i.cost_micros(now)).sum()
    }
}
