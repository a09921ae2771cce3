//! The simulator's configuration and its shared state, which is also the
//! handle tests and tools use to inspect and drive it.

use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime};

use serde_json::Value;
use tokio::sync::watch;

use crate::catalog;
use crate::clock::{unix_secs, Clock};
use crate::error::ApiError;
use crate::faults::{Endpoint, Fault, FaultAction, FaultBook};
use crate::market::{InstanceInfo, Market};

/// How to build a simulator. `SimConfig::default()` is a ready marketplace
/// on the system clock that accepts any API key.
#[derive(Clone)]
pub struct SimConfig {
    /// Seed of the offer catalog and of probabilistic faults.
    pub seed: u64,
    /// Number of offers in the catalog (each a whole machine).
    pub offers: usize,
    /// The API keys the simulated account accepts. Empty: any non-empty key.
    pub api_keys: Vec<String>,
    /// Where time comes from; use [`crate::ManualClock`] in tests.
    pub clock: Clock,
    /// How long a created or started instance stays `loading`, on `clock`.
    pub boot_delay: Duration,
    /// The first offer's id; offers are numbered from it.
    pub first_offer_id: u64,
    /// The first instance's id (`new_contract`); instances are numbered from it.
    pub first_instance_id: u64,
    /// The account's credit at start, micro-dollars; spend is subtracted.
    pub credit_micros: u64,
    /// Added to every request, on the real (tokio) clock.
    pub latency: Duration,
    /// Faults pending from the start.
    pub faults: Vec<Fault>,
    /// The SSH address (host, port) every instance reports, e.g. a real
    /// sshd on this machine for tests of SSH-based cleanup; `None`: a
    /// made-up `sshN.sim.invalid` per instance.
    pub ssh_address: Option<(String, u16)>,
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            seed: 1,
            offers: 120,
            api_keys: Vec::new(),
            clock: Clock::System,
            boot_delay: Duration::from_secs(10),
            first_offer_id: 1001,
            first_instance_id: 5001,
            credit_micros: 1_000_000_000,
            latency: Duration::ZERO,
            faults: Vec::new(),
            ssh_address: None,
        }
    }
}

// By hand, so the keys are never printed.
impl fmt::Debug for SimConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SimConfig")
            .field("seed", &self.seed)
            .field("offers", &self.offers)
            .field("api_keys", &format_args!("[{} keys]", self.api_keys.len()))
            .field("clock", &self.clock)
            .field("boot_delay", &self.boot_delay)
            .field("first_offer_id", &self.first_offer_id)
            .field("first_instance_id", &self.first_instance_id)
            .field("credit_micros", &self.credit_micros)
            .field("latency", &self.latency)
            .field("faults", &self.faults)
            .field("ssh_address", &self.ssh_address)
            .finish()
    }
}

/// A snapshot of one offer.
#[derive(Clone, Debug, PartialEq)]
pub struct OfferInfo {
    /// The offer (ask) id, used to create an instance.
    pub id: u64,
    /// GPU model name, e.g. `RTX 4090`.
    pub gpu_name: String,
    /// GPU count.
    pub num_gpus: u64,
    /// GPU price, micro-dollars per hour (storage is priced on top).
    pub dph_base_micros: u64,
    /// Whether the offer's host is verified.
    pub verified: bool,
    /// The instance renting it, if any.
    pub rented_by: Option<u64>,
}

/// The simulator: catalog, instances, clock and faults. Cheap to clone;
/// clones share everything, so a clone kept by a test drives the one the
/// router serves.
#[derive(Clone)]
pub struct SimState {
    inner: Arc<Inner>,
}

impl fmt::Debug for SimState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SimState")
            .field("clock", &self.inner.clock)
            .finish_non_exhaustive()
    }
}

struct Inner {
    api_keys: Vec<String>,
    clock: Clock,
    credit_micros: u64,
    gpu_names: Vec<String>,
    market: Mutex<Market>,
    faults: Mutex<FaultBook>,
    released: watch::Sender<bool>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl SimState {
    /// Builds the catalog and an empty account from `config`.
    pub fn new(config: SimConfig) -> SimState {
        let now = unix_secs(config.clock.now());
        let offers = catalog::generate(config.seed, config.offers, config.first_offer_id, now);
        let gpu_names = catalog::gpu_names(
            offers
                .iter()
                .filter_map(|o| Some(o.fields.get("gpu_name")?.as_str()?.to_owned())),
        );
        SimState {
            inner: Arc::new(Inner {
                api_keys: config.api_keys,
                clock: config.clock,
                credit_micros: config.credit_micros,
                gpu_names,
                market: Mutex::new({
                    let mut m = Market::new(offers, config.first_instance_id, config.boot_delay);
                    m.set_ssh_address(config.ssh_address);
                    m
                }),
                faults: Mutex::new(FaultBook::new(config.faults, config.latency, config.seed)),
                released: watch::channel(false).0,
            }),
        }
    }

    /// The simulator's clock.
    pub fn clock(&self) -> &Clock {
        &self.inner.clock
    }

    /// Moves a manual clock forward; returns false (and does nothing) on the system clock.
    #[must_use]
    pub fn advance_clock(&self, by: Duration) -> bool {
        match &self.inner.clock {
            Clock::Manual(manual) => {
                manual.advance(by);
                true
            }
            Clock::System => false,
        }
    }

    /// The live (not destroyed) instances, by id.
    pub fn instances(&self) -> Vec<InstanceInfo> {
        let now = self.now();
        lock(&self.inner.market)
            .infos(now)
            .filter(|i| i.destroyed_at.is_none())
            .collect()
    }

    /// One instance, including a destroyed one (with its final cost).
    pub fn instance(&self, id: u64) -> Option<InstanceInfo> {
        let now = self.now();
        lock(&self.inner.market).infos(now).find(|i| i.id == id)
    }

    /// Every offer, rented or not, by id.
    pub fn offers(&self) -> Vec<OfferInfo> {
        lock(&self.inner.market)
            .offers()
            .map(|o| OfferInfo {
                id: o.id,
                gpu_name: o
                    .fields
                    .get("gpu_name")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_owned(),
                num_gpus: o
                    .fields
                    .get("num_gpus")
                    .and_then(Value::as_u64)
                    .unwrap_or_default(),
                dph_base_micros: o.dph_base,
                verified: o
                    .fields
                    .get("verified")
                    .and_then(Value::as_bool)
                    .unwrap_or_default(),
                rented_by: o.rented_by,
            })
            .collect()
    }

    /// Number of offers in the catalog.
    pub fn offer_count(&self) -> usize {
        lock(&self.inner.market).offers().count()
    }

    /// Number of offers not rented.
    pub fn available_offer_count(&self) -> usize {
        lock(&self.inner.market)
            .offers()
            .filter(|o| o.rented_by.is_none())
            .count()
    }

    /// Cost accrued by every instance ever created, micro-dollars.
    pub fn spent_micros(&self) -> u64 {
        let now = self.now();
        lock(&self.inner.market).spent_micros(now)
    }

    /// Adds a fault after those pending.
    pub fn push_fault(&self, fault: Fault) {
        lock(&self.inner.faults).faults.push(fault);
    }

    /// The faults not yet used up.
    pub fn pending_faults(&self) -> Vec<Fault> {
        lock(&self.inner.faults).faults.clone()
    }

    /// Removes every pending fault.
    pub fn clear_faults(&self) {
        lock(&self.inner.faults).faults.clear();
    }

    /// Sets the latency added to every request.
    pub fn set_latency(&self, latency: Duration) {
        lock(&self.inner.faults).latency = latency;
    }

    /// Releases every request hung by a fault (each gets a 503), now and later.
    pub fn release_hung(&self) {
        self.inner.released.send_replace(true);
    }

    pub(crate) fn now(&self) -> SystemTime {
        self.inner.clock.now()
    }

    pub(crate) fn market(&self) -> MutexGuard<'_, Market> {
        lock(&self.inner.market)
    }

    pub(crate) fn gpu_names(&self) -> &[String] {
        &self.inner.gpu_names
    }

    pub(crate) fn credit_micros(&self) -> u64 {
        self.inner.credit_micros
    }

    pub(crate) fn next_fault(&self, endpoint: Endpoint) -> (Duration, Option<FaultAction>) {
        let mut book = lock(&self.inner.faults);
        let latency = book.latency;
        (latency, book.take(endpoint))
    }

    /// Waits until hung requests are released.
    pub(crate) async fn hang(&self) -> ApiError {
        let mut released = self.inner.released.subscribe();
        // An error means the sender is gone, which cannot happen while `self` lives.
        let _ = released.wait_for(|r| *r).await;
        ApiError::ShuttingDown
    }

    /// Whether `key` belongs to the simulated account.
    pub(crate) fn accepts(&self, key: &str) -> bool {
        if key.is_empty() {
            return false;
        }
        if self.inner.api_keys.is_empty() {
            return true;
        }
        // Every key is compared in full, so timing does not tell how much matched.
        self.inner.api_keys.iter().fold(false, |found, k| {
            found | constant_time_eq(k.as_bytes(), key.as_bytes())
        })
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}
