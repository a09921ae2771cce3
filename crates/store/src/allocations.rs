//! Allocations (granted launches) and the quotas checked against them.
//!
//! [`Store::reserve`] checks every [`Limit`] against the team's live
//! allocations and records the new one in one transaction that is exact
//! under concurrency: callers racing for the last GPU of a quota, in one
//! process or in several replicas on one PostgreSQL, are granted exactly as
//! many as fit. How each backend serializes is explained in `src/backend.rs`.
//! Budgets ([`Limit::Budget`]) are checked in the same transaction; what
//! they count is in [`crate::spend`].

use std::collections::hash_map::Entry;
use std::collections::HashMap;
use std::fmt;
use std::time::Duration;

use serde::Serialize;
use serde_json::json;
use warden_core::{Door, GpuModel, TeamName, Usd};

use crate::audit::NewRecord;
use crate::backend::{on_pool, on_tx, sqlite_chunks, values_params, Tx};
use crate::budget::{held_until, Charge, TeamBudget};
use crate::error::{InputError, StoreError};
use crate::launches::{per_micros, BucketKey};
use crate::spend::{scaled_held, unscale, MICROS_PER_HOUR};
use crate::time::UnixMicros;
use crate::usage::Usage;
use crate::writer::{Op, Written};
use crate::Store;

/// An allocation's id, assigned by the store; never reused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(transparent)]
pub struct AllocationId(i64);

impl AllocationId {
    /// An id as stored, e.g. parsed from an admin's command line.
    pub const fn new(id: i64) -> Self {
        Self(id)
    }

    /// The id as stored.
    pub const fn get(self) -> i64 {
        self.0
    }
}

impl fmt::Display for AllocationId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// What the door calls the allocation: a SkyPilot cluster name, a Vast
/// instance id, a Kubernetes `namespace/name`. Any text of 1 to 255 bytes
/// without control characters.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(transparent)]
pub struct AllocationName(String);

impl AllocationName {
    /// The longest name accepted, in bytes.
    pub const MAX_LEN: usize = 255;

    /// Parses a name.
    pub fn parse(raw: &str) -> Result<Self, InputError> {
        if raw.is_empty() {
            return Err(InputError::EmptyName);
        }
        if raw.len() > Self::MAX_LEN {
            return Err(InputError::NameTooLong {
                value: raw.to_owned(),
                max: Self::MAX_LEN,
            });
        }
        if raw.chars().any(char::is_control) {
            return Err(InputError::NameControlChar {
                value: raw.escape_default().to_string(),
            });
        }
        Ok(Self(raw.to_owned()))
    }

    /// The name as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for AllocationName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A launch to be recorded if the quotas allow it.
#[derive(Debug, Clone, PartialEq)]
pub struct AllocationRequest {
    /// The door it came through.
    pub door: Door,
    /// The team it is charged to.
    pub team: TeamName,
    /// The user, when the door knows one. Per-user limits put all requests
    /// without a user into one shared bucket, so an unknown user can never
    /// use more than a known one.
    pub user: Option<String>,
    /// The door's name for it; with `door` and `team`, the key that makes a
    /// re-launch count once.
    pub name: AllocationName,
    /// The GPU model, if the launch uses GPUs of a known model.
    pub gpu_model: Option<GpuModel>,
    /// GPUs in total: GPUs per node × nodes.
    pub gpus: u32,
    /// Estimated price per hour of the whole allocation.
    pub hourly: Usd,
    /// Extra JSON for the audit record, e.g. the policy decision's rule
    /// names. Must hold no secret.
    pub context: Option<serde_json::Value>,
}

/// Whose usage a [`Limit`] counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Scope {
    /// All live allocations of the request's team.
    Team,
    /// The live allocations of the request's team and user.
    User,
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Scope::Team => "per team",
            Scope::User => "per user",
        })
    }
}

/// A quota on live allocations, or a budget on spend, always within the
/// request's team.
///
/// A request is denied by a limit when it adds something to what the limit
/// counts and the total would then exceed `max`. A request that adds nothing
/// (a CPU-only launch against a GPU limit, a launch of another GPU model) is
/// never denied by it, even if usage is already above `max` (say, after the
/// limit was lowered).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "limit", rename_all = "snake_case")]
pub enum Limit {
    /// Concurrent GPUs of one model.
    ModelGpus {
        /// The model counted.
        model: GpuModel,
        /// Whose GPUs.
        scope: Scope,
        /// The most allowed.
        max: u32,
    },
    /// Concurrent GPUs of any model.
    Gpus {
        /// Whose GPUs.
        scope: Scope,
        /// The most allowed.
        max: u32,
    },
    /// Live allocations (e.g. active clusters).
    LiveAllocations {
        /// Whose allocations.
        scope: Scope,
        /// The most allowed.
        max: u32,
    },
    /// The summed estimated price per hour of live allocations.
    HourlyCost {
        /// Whose allocations.
        scope: Scope,
        /// The most allowed.
        max: Usd,
    },
    /// A launch rate: at most `max` launches per `per` (say, 5 per
    /// minute), per user or per team, as a token bucket of capacity `max`
    /// refilled continuously at `max / per`, shared by all replicas (see
    /// [`crate::launches`]). A reservation that would create a new
    /// allocation needs a token and, if granted, takes it; a re-launch of a
    /// live allocation is granted without checks and takes none, and a
    /// denied reservation takes none. The denial says when a token is
    /// available again ([`Denial::retry_at`]). `per` is counted in whole
    /// microseconds and must be at least 1 µs.
    Launches {
        /// Whose launches.
        scope: Scope,
        /// The most in a burst; 0 allows none.
        max: u32,
        /// The window over which `max` launches refill.
        #[serde(rename = "per_us", serialize_with = "serialize_micros")]
        per: Duration,
    },
    /// A hard budget: what the team's allocations cost since `from`, plus
    /// what its live allocations still hold of their reservations, plus
    /// this request's `reservation`, must not exceed `max`. Always per
    /// team. The exact rule is in [`crate::spend`]; the grant stores
    /// `reservation` with the allocation, which then holds it (less what it
    /// has accrued) while live.
    Budget {
        /// Start of the budget's period (say, midnight UTC for a daily
        /// budget); spend before it is not counted.
        from: UnixMicros,
        /// The most the period may cost.
        max: Usd,
        /// What this launch reserves: its estimated price per hour × the
        /// reservation window. Zero or less reserves nothing and is never
        /// denied.
        reservation: Usd,
    },
}

impl Limit {
    /// Whose usage the limit counts.
    pub fn scope(&self) -> Scope {
        match self {
            Limit::ModelGpus { scope, .. }
            | Limit::Gpus { scope, .. }
            | Limit::LiveAllocations { scope, .. }
            | Limit::HourlyCost { scope, .. }
            | Limit::Launches { scope, .. } => *scope,
            Limit::Budget { .. } => Scope::Team,
        }
    }

    /// Formats an amount in this limit's unit.
    fn amount(&self, n: i64) -> String {
        match self {
            Limit::HourlyCost { .. } => format!("{}/h", Usd::from_micros(n)),
            Limit::Budget { .. } => Usd::from_micros(n).to_string(),
            Limit::ModelGpus { .. }
            | Limit::Gpus { .. }
            | Limit::LiveAllocations { .. }
            | Limit::Launches { .. } => n.to_string(),
        }
    }
}

impl fmt::Display for Limit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Limit::ModelGpus { model, scope, max } => {
                write!(f, "at most {max} concurrent `{model}` GPUs {scope}")
            }
            Limit::Gpus { scope, max } => write!(f, "at most {max} concurrent GPUs {scope}"),
            Limit::LiveAllocations { scope, max } => {
                write!(f, "at most {max} live allocations {scope}")
            }
            Limit::HourlyCost { scope, max } => {
                write!(f, "at most {max}/h of live allocations {scope}")
            }
            Limit::Launches { scope, max, per } => {
                write!(f, "at most {max} launches per {} {scope}", Window(*per))
            }
            Limit::Budget { from, max, .. } => {
                write!(f, "budget {max} per team since {from}")
            }
        }
    }
}

/// Serializes a duration as whole microseconds (saturating).
fn serialize_micros<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_u64(u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
}

/// A launch window for messages: `1h`, `90s`, `250ms`, in the largest unit
/// that divides it.
struct Window(Duration);

impl fmt::Display for Window {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let us = self.0.as_micros();
        let units: [(u128, &str); 6] = [
            (86_400_000_000, "d"),
            (3_600_000_000, "h"),
            (60_000_000, "m"),
            (1_000_000, "s"),
            (1_000, "ms"),
            (1, "µs"),
        ];
        let (size, unit) = units
            .into_iter()
            .find(|(size, _)| us > 0 && us % size == 0)
            .unwrap_or((1, "µs"));
        write!(f, "{}{unit}", us / size)
    }
}

/// Why [`Store::reserve`] said no: the first limit, in the order given, that
/// the request would exceed. Amounts are in the limit's unit: GPUs,
/// allocations, micro-dollars per hour, or, for [`Limit::Budget`],
/// micro-dollars: `in_use` is what the budget counts already (spend since
/// `from` plus what live allocations still hold of their reservations,
/// rounded down to the micro-dollar), `requested` the reservation, `max`
/// the budget. For [`Limit::Launches`], launches: `in_use` is `max` (the
/// bucket holds less than one launch), `requested` 1, and `retry_at` says
/// when a launch is possible again.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Denial {
    /// The limit exceeded.
    pub limit: Limit,
    /// What live allocations already use.
    pub in_use: i64,
    /// What the request adds.
    pub requested: i64,
    /// The limit's maximum.
    pub max: i64,
    /// For [`Limit::Launches`]: the first instant at which the bucket holds
    /// a launch again (for a caller to say "retry after"); `None` when no
    /// launch is ever allowed (`max` 0), and for every other limit.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retry_at: Option<UnixMicros>,
}

impl fmt::Display for Denial {
    /// `quota exceeded: at most 8 concurrent `H100` GPUs per team; 8 in
    /// use, 1 requested`
    ///
    /// `budget exceeded: budget $100.00 per team since
    /// 2026-11-23T00:00:00.000000Z; $95.00 spent or held by live
    /// allocations, this launch reserves $10.00`
    ///
    /// `launch rate exceeded: at most 5 launches per 1m per user; next
    /// launch possible at 2026-11-23T14:05:12.000000Z`
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Limit::Launches { .. } = self.limit {
            return match self.retry_at {
                Some(at) => write!(
                    f,
                    "launch rate exceeded: {}; next launch possible at {at}",
                    self.limit
                ),
                None => write!(f, "launch rate exceeded: {}", self.limit),
            };
        }
        if let Limit::Budget { .. } = self.limit {
            return write!(
                f,
                "budget exceeded: {}; {} spent or held by live allocations, \
                 this launch reserves {}",
                self.limit,
                self.limit.amount(self.in_use),
                self.limit.amount(self.requested)
            );
        }
        write!(
            f,
            "quota exceeded: {}; {} in use, {} requested",
            self.limit,
            self.limit.amount(self.in_use),
            self.limit.amount(self.requested)
        )
    }
}

/// The answer of [`Store::reserve`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum ReserveOutcome {
    /// The allocation is live.
    Granted {
        /// Its id.
        allocation_id: AllocationId,
        /// Whether it was already live (a re-launch of the same door, team
        /// and name): nothing new was counted.
        relaunch: bool,
    },
    /// A limit would be exceeded; nothing was recorded but the audit record.
    Denied(Denial),
}

/// Whether an allocation still holds its resources.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AllocationState {
    /// Counted against quotas.
    Live,
    /// Gone; kept for reports.
    Ended,
}

/// A recorded allocation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Allocation {
    /// Its id.
    pub id: AllocationId,
    /// The door it came through.
    pub door: Door,
    /// The team it is charged to.
    pub team: TeamName,
    /// The user, when known.
    pub user: Option<String>,
    /// The door's name for it.
    pub name: AllocationName,
    /// The GPU model, when known.
    pub gpu_model: Option<GpuModel>,
    /// GPUs in total.
    pub gpus: u32,
    /// Estimated price per hour.
    pub hourly: Usd,
    /// When it was granted.
    pub started: UnixMicros,
    /// When it ended, if it has.
    pub ended: Option<UnixMicros>,
    /// Live or ended.
    pub state: AllocationState,
}

/// Which allocations [`Store::end`] ends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EndTarget {
    /// The allocation with this id.
    Id(AllocationId),
    /// Every live allocation with this door and name, whatever its team
    /// (what a reconciler knows when a cluster disappears).
    Name {
        /// The door.
        door: Door,
        /// The door's name for it.
        name: AllocationName,
    },
}

/// What the limits of one reservation are checked against.
struct Counted<'a> {
    /// Live usage of the request's team.
    team: Usage,
    /// Live usage of the request's user within it.
    user: Usage,
    /// For a [`Limit::Budget`] from a given instant, what the budget counts
    /// already (scaled as in [`crate::spend`]).
    budget_used: &'a dyn Fn(UnixMicros) -> i128,
    /// For a [`Limit::Launches`]: `None` if its bucket holds a launch, else
    /// when it will (`Some(None)`: never).
    launch_denied: &'a dyn Fn(&Limit) -> Option<Option<UnixMicros>>,
}

/// The first limit `req` would exceed, given what is `counted`.
fn first_exceeded(
    req: &AllocationRequest,
    limits: &[Limit],
    counted: &Counted<'_>,
) -> Option<Denial> {
    let (team, user, budget_used) = (&counted.team, &counted.user, counted.budget_used);
    limits.iter().find_map(|limit| {
        let usage = match limit.scope() {
            Scope::Team => team,
            Scope::User => user,
        };
        let gpus = i64::from(req.gpus);
        let (in_use, requested, max) = match limit {
            Limit::ModelGpus { model, max, .. } => {
                if req.gpu_model.as_ref() != Some(model) {
                    return None;
                }
                (usage.model_gpus, gpus, i64::from(*max))
            }
            Limit::Gpus { max, .. } => (usage.gpus, gpus, i64::from(*max)),
            Limit::LiveAllocations { max, .. } => (usage.live, 1, i64::from(*max)),
            Limit::HourlyCost { max, .. } => {
                (usage.hourly_micros, req.hourly.micros(), max.micros())
            }
            Limit::Budget {
                from,
                max,
                reservation,
            } => {
                // Compared exactly, before any rounding.
                let used = budget_used(*from);
                let total = used.saturating_add(i128::from(reservation.micros()) * MICROS_PER_HOUR);
                let exceeds =
                    reservation.micros() > 0 && total > i128::from(max.micros()) * MICROS_PER_HOUR;
                return exceeds.then(|| Denial {
                    limit: limit.clone(),
                    in_use: unscale(used),
                    requested: reservation.micros(),
                    max: max.micros(),
                    retry_at: None,
                });
            }
            Limit::Launches { max, .. } => {
                return (counted.launch_denied)(limit).map(|retry_at| Denial {
                    limit: limit.clone(),
                    in_use: i64::from(*max),
                    requested: 1,
                    max: i64::from(*max),
                    retry_at,
                });
            }
        };
        let exceeds = requested > 0 && in_use.checked_add(requested).is_none_or(|t| t > max);
        exceeds.then(|| Denial {
            limit: limit.clone(),
            in_use,
            requested,
            max,
            retry_at: None,
        })
    })
}

fn request_json(req: &AllocationRequest) -> serde_json::Value {
    json!({
        "door": req.door,
        "team": req.team,
        "user": req.user,
        "name": req.name,
        "gpu_model": req.gpu_model,
        "gpus": req.gpus,
        "hourly_micros": req.hourly.micros(),
    })
}

fn allocation_json(a: &Allocation) -> serde_json::Value {
    json!({
        "allocation_id": a.id,
        "door": a.door,
        "team": a.team,
        "user": a.user,
        "name": a.name,
        "gpu_model": a.gpu_model,
        "gpus": a.gpus,
        "hourly_micros": a.hourly.micros(),
        "started_us": a.started,
        "ended_us": a.ended,
    })
}

/// The columns of an allocation row, in [`AllocationRow`] order.
macro_rules! allocation_columns {
    () => {
        "id, door, team, user_name, name, gpu_model, gpus, hourly_micros, \
         started_us, ended_us, state"
    };
}

pub(crate) use allocation_columns;

/// An allocation row as read with [`allocation_columns`].
pub(crate) type AllocationRow = (
    i64,
    String,
    String,
    Option<String>,
    String,
    Option<String>,
    i64,
    i64,
    i64,
    Option<i64>,
    String,
);

/// Parses a row read with [`allocation_columns`].
pub(crate) fn allocation(row: AllocationRow) -> Result<Allocation, StoreError> {
    let (id, door, team, user, name, gpu_model, gpus, hourly, started, ended, state) = row;
    let corrupt = |detail: String| StoreError::Corrupt {
        what: format!("allocation `{id}`"),
        detail,
    };
    let door = match door.as_str() {
        "skypilot" => Door::Skypilot,
        "vast" => Door::Vast,
        "kubernetes" => Door::Kubernetes,
        other => return Err(corrupt(format!("unknown door `{other}`"))),
    };
    let state = match state.as_str() {
        "live" => AllocationState::Live,
        "ended" => AllocationState::Ended,
        other => return Err(corrupt(format!("unknown state `{other}`"))),
    };
    Ok(Allocation {
        id: AllocationId(id),
        door,
        team: TeamName::parse(&team).map_err(|e| corrupt(e.to_string()))?,
        user,
        name: AllocationName::parse(&name).map_err(|e| corrupt(e.to_string()))?,
        gpu_model: gpu_model
            .map(|m| GpuModel::parse(&m))
            .transpose()
            .map_err(|e| corrupt(e.to_string()))?,
        gpus: u32::try_from(gpus).map_err(|_| corrupt(format!("gpus `{gpus}` out of range")))?,
        hourly: Usd::from_micros(hourly),
        started: UnixMicros::from_micros(started),
        ended: ended.map(UnixMicros::from_micros),
        state,
    })
}

/// A reservation to decide inside a write transaction: [`Store::reserve`]'s
/// arguments, borrowed.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Reservation<'a> {
    pub(crate) request: &'a AllocationRequest,
    pub(crate) limits: &'a [Limit],
    pub(crate) now: UnixMicros,
}

/// The identity of a live allocation: door, team, name.
type LiveKey<'a> = (&'a str, &'a str, &'a str);

impl Reservation<'_> {
    fn key(&self) -> LiveKey<'_> {
        let req = self.request;
        (req.door.as_str(), req.team.as_str(), req.name.as_str())
    }

    /// `held_until_us` of the allocation it grants: see [`crate::budget`].
    fn held_until(&self) -> i64 {
        held_until(
            self.now.micros(),
            self.request.hourly.micros(),
            reserved_micros(self.limits),
        )
    }
}

/// What a grant under `limits` reserves against its team's budgets: the
/// largest positive `reservation` of its [`Limit::Budget`]s, else 0.
fn reserved_micros(limits: &[Limit]) -> i64 {
    limits
        .iter()
        .filter_map(|limit| match limit {
            Limit::Budget { reservation, .. } => Some(reservation.micros()),
            _ => None,
        })
        .fold(0, i64::max)
}

/// A grant earlier in the batch, not yet inserted, as budgets count it.
#[derive(Debug, Clone, Copy)]
struct BatchGrant {
    hourly_micros: i64,
    started: UnixMicros,
    reserved_micros: i64,
}

impl BatchGrant {
    fn charge(&self) -> Charge {
        Charge::new(
            self.started.micros(),
            self.hourly_micros,
            self.reserved_micros,
        )
    }
}

/// Checks what the store cannot represent, before any transaction.
pub(crate) fn check_request(req: &AllocationRequest, limits: &[Limit]) -> Result<(), InputError> {
    if req.hourly.micros() < 0 {
        return Err(InputError::NegativeHourly(req.hourly));
    }
    for limit in limits {
        if let Limit::Launches { per, .. } = limit {
            if per_micros(*per).is_none() {
                return Err(InputError::LaunchWindow(*per));
            }
        }
    }
    Ok(())
}

/// Where a live allocation's id comes from while a batch is decided.
#[derive(Debug, Clone, Copy)]
enum Slot {
    /// Live before the batch.
    Stored(AllocationId),
    /// Granted earlier in the batch: the n-th row to insert.
    New(usize),
}

enum Verdict {
    Granted { slot: Slot, relaunch: bool },
    Denied(Denial),
}

/// An op of a batch while its reservations are decided.
enum Pending<'o> {
    Audit(NewRecord),
    Reservation(&'o Reservation<'o>, Verdict),
}

/// Columns of the key-returning statements: id, door, team, name.
type KeyRow = (i64, String, String, String);

impl Tx {
    /// Decides the reservations of `ops` in order, as if each ran alone
    /// after the ones before it, and returns every op's audit record to
    /// append (in this transaction), with the decision of each reservation.
    ///
    /// All teams are locked first (see [`Tx::lock_teams`]); each team's
    /// usage summary and budget state are read once after that and kept up
    /// to date in memory as the batch grants, so a reservation sees every
    /// grant of the batch before it; granted rows are inserted, and the
    /// summaries written back, together at the end.
    pub(crate) async fn decide<'o>(
        &mut self,
        ops: &'o [Op<'o>],
    ) -> Result<Vec<(NewRecord, Option<ReserveOutcome>)>, StoreError> {
        let reservations: Vec<&Reservation<'_>> = ops
            .iter()
            .filter_map(|op| match op {
                Op::Reserve(r) => Some(r),
                Op::Audit { .. } => None,
            })
            .collect();
        let teams: Vec<&TeamName> = reservations.iter().map(|r| &r.request.team).collect();
        self.lock_teams(&teams).await?;

        let mut keys: Vec<LiveKey<'_>> = reservations.iter().map(|r| r.key()).collect();
        keys.sort_unstable();
        keys.dedup();
        let stored = self.live_ids(&keys).await?;
        let mut live: HashMap<LiveKey<'_>, Slot> = HashMap::with_capacity(keys.len());
        for (id, door, team, name) in &stored {
            live.insert(
                (door.as_str(), team.as_str(), name.as_str()),
                Slot::Stored(AllocationId(*id)),
            );
        }

        // Usage is needed for the teams of reservations not already live.
        let undecided: Vec<&Reservation<'_>> = reservations
            .iter()
            .copied()
            .filter(|r| !live.contains_key(&r.key()))
            .collect();
        let mut needed: Vec<&TeamName> = undecided.iter().map(|r| &r.request.team).collect();
        needed.sort_unstable();
        needed.dedup();
        let mut usage = self.load_usage(&needed).await?;
        let mut budgets = self.load_budgets(&needed).await?;
        self.prepare_budgets(&needed, &undecided, &mut budgets)
            .await?;
        let mut bucket_keys: Vec<BucketKey> = Vec::new();
        for r in &undecided {
            for key in r.limits.iter().filter_map(|l| BucketKey::of(r.request, l)) {
                if !bucket_keys.contains(&key) {
                    bucket_keys.push(key);
                }
            }
        }
        let mut buckets = self.load_buckets(&bucket_keys).await?;
        let mut fresh: Vec<&Reservation<'_>> = Vec::new();
        let mut batch_grants: HashMap<&str, Vec<BatchGrant>> = HashMap::new();
        let mut pending: Vec<Pending<'o>> = Vec::with_capacity(ops.len());
        for op in ops {
            let r = match op {
                Op::Audit { kind, payload, at } => {
                    pending.push(Pending::Audit(NewRecord {
                        kind: (*kind).to_owned(),
                        payload: (*payload).to_owned(),
                        at: *at,
                    }));
                    continue;
                }
                Op::Reserve(r) => r,
            };
            if let Some(&slot) = live.get(&r.key()) {
                let verdict = Verdict::Granted {
                    slot,
                    relaunch: true,
                };
                pending.push(Pending::Reservation(r, verdict));
                continue;
            }
            let req = r.request;
            let team_name = req.team.as_str();
            let budget_state = budgets.get_mut(team_name);
            let used = self
                .budgets_used(r, budget_state, batch_grants.get(team_name))
                .await?;
            let budget_used = |from: UnixMicros| {
                used.iter()
                    .find(|(f, _)| *f == from)
                    .map_or(0, |(_, used)| *used)
            };
            // The team is one of `needed`, so its usage is loaded.
            let team_usage = usage.entry(team_name).or_default();
            let (team, user) = team_usage.of(req.user.as_deref(), req.gpu_model.as_ref());
            let counted = Counted {
                team,
                user,
                budget_used: &budget_used,
                launch_denied: &|limit| buckets.denies(req, limit, r.now),
            };
            let verdict = match first_exceeded(req, r.limits, &counted) {
                Some(denial) => Verdict::Denied(denial),
                None => {
                    team_usage.grant(req)?;
                    buckets.take(req, r.limits, r.now);
                    let grant = BatchGrant {
                        hourly_micros: req.hourly.micros(),
                        started: r.now,
                        reserved_micros: reserved_micros(r.limits),
                    };
                    if let Some(state) = budgets.get_mut(team_name) {
                        state.grant(&req.team, grant.charge())?;
                    }
                    batch_grants.entry(team_name).or_default().push(grant);
                    let slot = Slot::New(fresh.len());
                    live.insert(r.key(), slot);
                    fresh.push(r);
                    Verdict::Granted {
                        slot,
                        relaunch: false,
                    }
                }
            };
            pending.push(Pending::Reservation(r, verdict));
        }

        let new_ids = self.insert_allocations(&fresh).await?;
        self.save_usage(usage.iter().map(|(team, u)| (*team, u)))
            .await?;
        self.save_budgets(budgets.iter_mut().map(|(team, b)| (*team, b)))
            .await?;
        self.save_buckets(&buckets).await?;
        pending
            .into_iter()
            .map(|p| {
                let (r, verdict) = match p {
                    Pending::Audit(record) => return Ok((record, None)),
                    Pending::Reservation(r, verdict) => (r, verdict),
                };
                let req = r.request;
                let context = req.context.as_ref().unwrap_or(&serde_json::Value::Null);
                let (kind, payload, outcome) = match verdict {
                    Verdict::Granted { slot, relaunch } => {
                        let allocation_id = match slot {
                            Slot::Stored(id) => id,
                            Slot::New(n) => *new_ids.get(n).ok_or(sqlx::Error::RowNotFound)?,
                        };
                        let payload = json!({
                            "allocation_id": allocation_id,
                            "relaunch": relaunch,
                            "request": request_json(req),
                            "context": context,
                        });
                        let outcome = ReserveOutcome::Granted {
                            allocation_id,
                            relaunch,
                        };
                        ("allocation.granted", payload, outcome)
                    }
                    Verdict::Denied(denial) => {
                        let payload = json!({
                            "request": request_json(req),
                            "denial": &denial,
                            "message": denial.to_string(),
                            "context": context,
                        });
                        ("allocation.denied", payload, ReserveOutcome::Denied(denial))
                    }
                };
                let record = NewRecord {
                    kind: kind.to_owned(),
                    payload: payload.to_string(),
                    at: r.now,
                };
                Ok((record, Some(outcome)))
            })
            .collect()
    }

    /// Gets the budget states of `needed` ready for the checks of
    /// `undecided` (the batch's reservations not already live): for each
    /// team with a budget to check from before its `now`, builds the state
    /// if the team has none, or moves it to the latest such `now`, then adds
    /// the periods it lacks. Runs before anything is granted.
    async fn prepare_budgets<'t>(
        &mut self,
        needed: &[&'t TeamName],
        undecided: &[&Reservation<'_>],
        budgets: &mut HashMap<&'t str, TeamBudget>,
    ) -> Result<(), StoreError> {
        for &team in needed {
            let mut latest: Option<i64> = None;
            let mut froms: Vec<i64> = Vec::new();
            for r in undecided.iter().filter(|r| r.request.team == *team) {
                let now = r.now.micros();
                for limit in r.limits {
                    if let Limit::Budget { from, .. } = limit {
                        if from.micros() < now {
                            froms.push(from.micros());
                            latest = Some(latest.map_or(now, |l| l.max(now)));
                        }
                    }
                }
            }
            let Some(latest) = latest else { continue };
            let state = match budgets.entry(team.as_str()) {
                Entry::Occupied(state) => {
                    let state = state.into_mut();
                    self.advance_budget(team, state, latest).await?;
                    state
                }
                Entry::Vacant(slot) => slot.insert(self.build_budget(team, latest).await?),
            };
            froms.sort_unstable();
            froms.dedup();
            for from in froms {
                if !state.has_period(from) {
                    self.add_budget_period(team, state, from, latest).await?;
                }
            }
        }
        Ok(())
    }

    /// For each distinct `from` of `r`'s budget limits, what that budget
    /// counts already at `r.now` (scaled as in [`crate::spend`]): spend since
    /// `from` and held reservations, of the stored allocations and of the
    /// team's grants earlier in this batch. From the team's budget `state`
    /// (prepared for `r` by [`Tx::prepare_budgets`], and counting those
    /// grants) when `from` is before `r.now`; otherwise only held
    /// reservations count, read from the team's live allocations and
    /// `batch`, the batch's grants. Empty, and no query, when `r` has no
    /// budget limit.
    async fn budgets_used(
        &mut self,
        r: &Reservation<'_>,
        state: Option<&mut TeamBudget>,
        batch: Option<&Vec<BatchGrant>>,
    ) -> Result<Vec<(UnixMicros, i128)>, StoreError> {
        let mut froms: Vec<UnixMicros> = r
            .limits
            .iter()
            .filter_map(|limit| match limit {
                Limit::Budget { from, .. } => Some(*from),
                _ => None,
            })
            .collect();
        if froms.is_empty() {
            return Ok(Vec::new());
        }
        froms.sort_unstable();
        froms.dedup();
        let (team, now) = (&r.request.team, r.now);
        let (past, future): (Vec<UnixMicros>, Vec<UnixMicros>) =
            froms.into_iter().partition(|from| *from < now);
        let mut used = Vec::with_capacity(past.len() + future.len());
        if !past.is_empty() {
            let state = state.ok_or_else(|| StoreError::Corrupt {
                what: format!("budget state of team `{team}`"),
                detail: "it was not prepared".to_owned(),
            })?;
            let micros: Vec<i64> = past.iter().map(|f| f.micros()).collect();
            let counted = self.budget_used(team, state, &micros, now.micros()).await?;
            used.extend(past.into_iter().zip(counted));
        }
        if !future.is_empty() {
            // Nothing is spent since a start at or after `now`.
            let batch = batch.map_or(&[][..], Vec::as_slice);
            let held = batch
                .iter()
                .map(|g| scaled_held(g.hourly_micros, g.started, g.reserved_micros, now))
                .fold(self.scaled_held(team, now).await?, i128::saturating_add);
            used.extend(future.into_iter().map(|from| (from, held)));
        }
        Ok(used)
    }

    /// The live allocations with these keys: `(id, door, team, name)`.
    async fn live_ids(&mut self, keys: &[LiveKey<'_>]) -> Result<Vec<KeyRow>, StoreError> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        match self {
            Tx::Postgres { tx } => {
                let doors: Vec<&str> = keys.iter().map(|k| k.0).collect();
                let teams: Vec<&str> = keys.iter().map(|k| k.1).collect();
                let names: Vec<&str> = keys.iter().map(|k| k.2).collect();
                // One index probe per key, whatever the planner thinks of
                // the table's size: a LATERAL subquery with LIMIT cannot
                // become a hash join over a scan of every allocation (which
                // stale statistics on a fast-growing table can pick).
                Ok(sqlx::query_as(
                    "SELECT a.id, a.door, a.team, a.name \
                     FROM UNNEST($1::TEXT[], $2::TEXT[], $3::TEXT[]) AS k(door, team, name) \
                     CROSS JOIN LATERAL ( \
                       SELECT id, door, team, name FROM allocations \
                       WHERE door = k.door AND team = k.team AND name = k.name \
                         AND state = 'live' \
                       LIMIT 1) a",
                )
                .bind(doors)
                .bind(teams)
                .bind(names)
                .fetch_all(&mut **tx)
                .await?)
            }
            Tx::Sqlite { tx, .. } => {
                let mut rows = Vec::new();
                for range in sqlite_chunks(keys.len()) {
                    let chunk = keys.get(range).unwrap_or_default();
                    // A join, not `(door, team, name) IN (VALUES ...)`:
                    // SQLite plans that as a scan of every live row.
                    let sql = format!(
                        "SELECT a.id, a.door, a.team, a.name FROM (VALUES {}) AS k \
                         CROSS JOIN allocations a \
                           ON a.door = k.column1 AND a.team = k.column2 \
                          AND a.name = k.column3 \
                         WHERE a.state = 'live'",
                        values_params(chunk.len(), 3)
                    );
                    let mut query = sqlx::query_as(&sql);
                    for (door, team, name) in chunk {
                        query = query.bind(*door).bind(*team).bind(*name);
                    }
                    rows.extend(query.fetch_all(&mut **tx).await?);
                }
                Ok(rows)
            }
        }
    }

    /// Inserts `fresh` as live allocations, each started at its `now`, and
    /// returns their ids in the same order.
    async fn insert_allocations(
        &mut self,
        fresh: &[&Reservation<'_>],
    ) -> Result<Vec<AllocationId>, StoreError> {
        if fresh.is_empty() {
            return Ok(Vec::new());
        }
        let mut returned: Vec<KeyRow> = Vec::with_capacity(fresh.len());
        match self {
            Tx::Postgres { tx } => {
                let reqs = || fresh.iter().map(|r| r.request);
                returned = sqlx::query_as(
                    "INSERT INTO allocations \
                       (door, team, user_name, name, gpu_model, gpus, hourly_micros, \
                        started_us, ended_us, state, reserved_micros, held_until_us) \
                     SELECT door, team, user_name, name, gpu_model, gpus, hourly_micros, \
                        started_us, NULL, 'live', reserved_micros, held_until_us \
                     FROM UNNEST($1::TEXT[], $2::TEXT[], $3::TEXT[], $4::TEXT[], $5::TEXT[], \
                                 $6::BIGINT[], $7::BIGINT[], $8::BIGINT[], $9::BIGINT[], \
                                 $10::BIGINT[]) \
                       AS x(door, team, user_name, name, gpu_model, gpus, hourly_micros, \
                            started_us, reserved_micros, held_until_us) \
                     RETURNING id, door, team, name",
                )
                .bind(reqs().map(|q| q.door.as_str()).collect::<Vec<_>>())
                .bind(reqs().map(|q| q.team.as_str()).collect::<Vec<_>>())
                .bind(reqs().map(|q| q.user.as_deref()).collect::<Vec<_>>())
                .bind(reqs().map(|q| q.name.as_str()).collect::<Vec<_>>())
                .bind(
                    reqs()
                        .map(|q| q.gpu_model.as_ref().map(GpuModel::as_str))
                        .collect::<Vec<_>>(),
                )
                .bind(reqs().map(|q| i64::from(q.gpus)).collect::<Vec<_>>())
                .bind(reqs().map(|q| q.hourly.micros()).collect::<Vec<_>>())
                .bind(fresh.iter().map(|r| r.now.micros()).collect::<Vec<_>>())
                .bind(
                    fresh
                        .iter()
                        .map(|r| reserved_micros(r.limits))
                        .collect::<Vec<_>>(),
                )
                .bind(fresh.iter().map(|r| r.held_until()).collect::<Vec<_>>())
                .fetch_all(&mut **tx)
                .await?;
            }
            Tx::Sqlite { tx, .. } => {
                for range in sqlite_chunks(fresh.len()) {
                    let chunk = fresh.get(range).unwrap_or_default();
                    let sql = format!(
                        "INSERT INTO allocations \
                           (door, team, user_name, name, gpu_model, gpus, hourly_micros, \
                            started_us, ended_us, state, reserved_micros, held_until_us) \
                         VALUES {} RETURNING id, door, team, name",
                        values_params(chunk.len(), 12)
                    );
                    let mut query = sqlx::query_as(&sql);
                    for r in chunk {
                        let q = r.request;
                        query = query
                            .bind(q.door.as_str())
                            .bind(q.team.as_str())
                            .bind(q.user.as_deref())
                            .bind(q.name.as_str())
                            .bind(q.gpu_model.as_ref().map(GpuModel::as_str))
                            .bind(i64::from(q.gpus))
                            .bind(q.hourly.micros())
                            .bind(r.now.micros())
                            .bind(None::<i64>)
                            .bind("live")
                            .bind(reserved_micros(r.limits))
                            .bind(r.held_until());
                    }
                    returned.extend(query.fetch_all(&mut **tx).await?);
                }
            }
        }
        // RETURNING order is unspecified (SQLite says so): match by key,
        // which is unique among live rows.
        let ids: HashMap<LiveKey<'_>, i64> = returned
            .iter()
            .map(|(id, door, team, name)| ((door.as_str(), team.as_str(), name.as_str()), *id))
            .collect();
        fresh
            .iter()
            .map(|r| {
                ids.get(&r.key())
                    .map(|&id| AllocationId(id))
                    .ok_or_else(|| sqlx::Error::RowNotFound.into())
            })
            .collect()
    }

    /// Teams of the live allocations `target` names, for locking.
    async fn target_teams(&mut self, target: &EndTarget) -> Result<Vec<TeamName>, StoreError> {
        let rows: Vec<(String,)> = on_tx!(self, |conn| match target {
            EndTarget::Id(id) => {
                sqlx::query_as("SELECT team FROM allocations WHERE id = $1 AND state = 'live'")
                    .bind(id.get())
                    .fetch_all(&mut *conn)
                    .await?
            }
            EndTarget::Name { door, name } => {
                sqlx::query_as(
                    "SELECT DISTINCT team FROM allocations \
                     WHERE door = $1 AND name = $2 AND state = 'live'",
                )
                .bind(door.as_str())
                .bind(name.as_str())
                .fetch_all(&mut *conn)
                .await?
            }
        });
        rows.into_iter()
            .map(|(team,)| {
                TeamName::parse(&team).map_err(|e| StoreError::Corrupt {
                    what: "allocation team".to_owned(),
                    detail: e.to_string(),
                })
            })
            .collect()
    }

    /// Ends the live allocations of `target` within `team`; returns each
    /// with what it reserved.
    /// With `void`, each row ends at its own start instead of `now`: it
    /// never ran, so it costs nothing.
    async fn end_in_team(
        &mut self,
        target: &EndTarget,
        team: &TeamName,
        now: UnixMicros,
        void: bool,
    ) -> Result<Vec<(Allocation, i64)>, StoreError> {
        type EndedRow = (
            i64,
            String,
            String,
            Option<String>,
            String,
            Option<String>,
            i64,
            i64,
            i64,
            Option<i64>,
            String,
            i64,
        );
        let rows: Vec<EndedRow> = on_tx!(self, |conn| match target {
            EndTarget::Id(id) => {
                sqlx::query_as(concat!(
                    "UPDATE allocations SET state = 'ended', \
                       ended_us = CASE WHEN $4 THEN started_us ELSE $1 END \
                     WHERE id = $2 AND team = $3 AND state = 'live' RETURNING ",
                    allocation_columns!(),
                    ", reserved_micros"
                ))
                .bind(now.micros())
                .bind(id.get())
                .bind(team.as_str())
                .bind(void)
                .fetch_all(&mut *conn)
                .await?
            }
            EndTarget::Name { door, name } => {
                sqlx::query_as(concat!(
                    "UPDATE allocations SET state = 'ended', \
                       ended_us = CASE WHEN $5 THEN started_us ELSE $1 END \
                     WHERE door = $2 AND name = $3 AND team = $4 AND state = 'live' RETURNING ",
                    allocation_columns!(),
                    ", reserved_micros"
                ))
                .bind(now.micros())
                .bind(door.as_str())
                .bind(name.as_str())
                .bind(team.as_str())
                .bind(void)
                .fetch_all(&mut *conn)
                .await?
            }
        });
        rows.into_iter()
            .map(
                |(
                    id,
                    door,
                    team,
                    user,
                    name,
                    model,
                    gpus,
                    hourly,
                    started,
                    ended,
                    state,
                    reserved,
                )| {
                    let row = (
                        id, door, team, user, name, model, gpus, hourly, started, ended, state,
                    );
                    Ok((allocation(row)?, reserved))
                },
            )
            .collect()
    }
}

impl Tx {
    /// Ends the live allocations `target` names among `teams` (locked by the
    /// caller), keeping the usage and budget summaries in step; with `void`,
    /// each ends at its own start and costs nothing. Ordered by id; the
    /// caller writes the audit records.
    pub(crate) async fn end_locked(
        &mut self,
        target: &EndTarget,
        teams: &[&TeamName],
        now: UnixMicros,
        void: bool,
    ) -> Result<Vec<Allocation>, StoreError> {
        // The summaries change with the rows. Budget states move to `now`
        // first, while the rows are still live (see `crate::budget`).
        let mut usage = self.load_usage(teams).await?;
        let mut budgets = self.load_budgets(teams).await?;
        for &team in teams {
            if let Some(state) = budgets.get_mut(team.as_str()) {
                self.advance_budget(team, state, now.micros()).await?;
            }
        }
        let mut ended = Vec::new();
        for &team in teams {
            for (a, reserved) in self.end_in_team(target, team, now, void).await? {
                if let Some(u) = usage.get_mut(team.as_str()) {
                    u.release(&a)?;
                }
                if let Some(state) = budgets.get_mut(team.as_str()) {
                    let charge = Charge::new(a.started.micros(), a.hourly.micros(), reserved);
                    state.end(team, charge, a.ended.unwrap_or(now).micros())?;
                }
                ended.push(a);
            }
        }
        self.save_usage(usage.iter().map(|(team, u)| (*team, u)))
            .await?;
        self.save_budgets(budgets.iter_mut().map(|(team, b)| (*team, b)))
            .await?;
        ended.sort_by_key(|a| a.id);
        Ok(ended)
    }
}

impl Store {
    /// Checks `limits` (in order) against the live allocations of the
    /// request's team and, if none would be exceeded, records the allocation
    /// as live. Either way an audit record (`allocation.granted` or
    /// `allocation.denied`) is written in the same transaction, so a
    /// decision is never answered without its record.
    ///
    /// Exact under concurrency: the check and the insert are one
    /// transaction, serialized per team on PostgreSQL (any number of
    /// replicas) and per database on SQLite.
    ///
    /// Idempotent per (door, team, name): if that allocation is already
    /// live, the answer is `Granted` with its id and `relaunch: true`, and
    /// nothing new is counted (limits are not re-checked; the stored
    /// allocation is not changed).
    ///
    /// Runs in a transaction of its own; [`Store::write`] with
    /// [`Write::Reserve`](crate::Write::Reserve) decides the same way, committed together with
    /// other waiting writes, for throughput.
    pub async fn reserve(
        &self,
        req: &AllocationRequest,
        limits: &[Limit],
        now: UnixMicros,
    ) -> Result<ReserveOutcome, StoreError> {
        check_request(req, limits)?;
        let op = Op::Reserve(Reservation {
            request: req,
            limits,
            now,
        });
        match self.apply_alone(op).await? {
            Written::Reserved(outcome) => Ok(outcome),
            Written::Audited(_) => Err(StoreError::Unanswered),
        }
    }

    /// Ends the live allocations `target` names, freeing their quota, and
    /// writes an `allocation.ended` audit record for each in the same
    /// transaction. Returns what was ended: empty if nothing live matched
    /// (ending twice is harmless).
    pub async fn end(
        &self,
        target: &EndTarget,
        now: UnixMicros,
    ) -> Result<Vec<Allocation>, StoreError> {
        let mut tx = self.begin_write().await?;
        // Lock the teams before changing their rows, like `reserve`, so an
        // end and a re-launch of the same allocation are ordered.
        let teams = tx.target_teams(target).await?;
        let teams: Vec<&TeamName> = teams.iter().collect();
        tx.lock_teams(&teams).await?;
        let ended = tx.end_locked(target, &teams, now, false).await?;
        let records = ended
            .iter()
            .map(|a| NewRecord {
                kind: "allocation.ended".to_owned(),
                payload: allocation_json(a).to_string(),
                at: now,
            })
            .collect();
        tx.append_records(records).await?;
        tx.commit().await?;
        Ok(ended)
    }

    /// Live allocations, of one team or of all, oldest first.
    pub async fn list_live(&self, team: Option<&TeamName>) -> Result<Vec<Allocation>, StoreError> {
        let rows: Vec<AllocationRow> = on_pool!(self, |pool| {
            sqlx::query_as(concat!(
                "SELECT ",
                allocation_columns!(),
                " FROM allocations WHERE state = 'live' \
                 AND ($1 IS NULL OR team = $1) ORDER BY id"
            ))
            .bind(team.map(TeamName::as_str))
            .fetch_all(pool)
            .await?
        });
        rows.into_iter().map(allocation).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(gpus: u32, hourly: i64) -> AllocationRequest {
        AllocationRequest {
            door: Door::Skypilot,
            team: TeamName::parse("ml").unwrap(),
            user: Some("alice".to_owned()),
            name: AllocationName::parse("c1").unwrap(),
            gpu_model: Some(GpuModel::parse("H100").unwrap()),
            gpus,
            hourly: Usd::from_micros(hourly),
            context: None,
        }
    }

    /// `first_exceeded` with no budget spent and every launch bucket full.
    fn check(
        req: &AllocationRequest,
        limits: &[Limit],
        team: Usage,
        user: Usage,
    ) -> Option<Denial> {
        let counted = Counted {
            team,
            user,
            budget_used: &|_| 0,
            launch_denied: &|_| None,
        };
        first_exceeded(req, limits, &counted)
    }

    #[test]
    fn first_exceeded_limit_in_order_wins() {
        let req = request(2, 5_000_000);
        let team = Usage {
            gpus: 7,
            model_gpus: 7,
            live: 3,
            hourly_micros: 20_000_000,
        };
        let user = Usage::default();
        let limits = [
            Limit::LiveAllocations {
                scope: Scope::User,
                max: 1,
            },
            Limit::HourlyCost {
                scope: Scope::Team,
                max: Usd::from_micros(24_000_000),
            },
            Limit::Gpus {
                scope: Scope::Team,
                max: 8,
            },
        ];
        let denial = check(&req, &limits, team, user).unwrap();
        assert_eq!(denial.in_use, 20_000_000);
        assert_eq!(denial.requested, 5_000_000);
        assert_eq!(denial.max, 24_000_000);
        assert_eq!(
            denial.to_string(),
            "quota exceeded: at most $24.00/h of live allocations per team; \
             $20.00/h in use, $5.00/h requested"
        );
    }

    #[test]
    fn a_request_that_adds_nothing_is_not_denied() {
        let over = Usage {
            gpus: 99,
            model_gpus: 99,
            live: 0,
            hourly_micros: 0,
        };
        let limits = [
            Limit::Gpus {
                scope: Scope::Team,
                max: 8,
            },
            Limit::ModelGpus {
                model: GpuModel::parse("A100").unwrap(),
                scope: Scope::Team,
                max: 0,
            },
        ];
        assert_eq!(check(&request(0, 0), &limits, over, over), None);
        // Another model's limit does not apply to an H100 launch.
        let fresh = Usage::default();
        assert_eq!(check(&request(1, 0), &limits[1..], fresh, fresh), None);
    }

    #[test]
    fn names_reject_empty_long_and_control() {
        assert!(AllocationName::parse("sky-1234-alice").is_ok());
        assert!(AllocationName::parse("ns/pod").is_ok());
        assert_eq!(AllocationName::parse(""), Err(InputError::EmptyName));
        assert!(AllocationName::parse(&"x".repeat(256)).is_err());
        let err = AllocationName::parse("a\nb").unwrap_err().to_string();
        assert!(err.contains(r"`a\nb`"), "{err}");
    }
}
