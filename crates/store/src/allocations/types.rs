//! The public types of allocations: ids and names, what a door asks for
//! ([`AllocationRequest`]), the limits it is checked against ([`Limit`]),
//! the answer ([`ReserveOutcome`], [`Denial`]) and what is recorded
//! ([`Allocation`]).

use std::fmt;
use std::time::Duration;

use serde::Serialize;
use warden_core::{Door, GpuModel, TeamName, Usd};

use crate::error::InputError;
use crate::time::UnixMicros;

/// An allocation's id, assigned by the store; never reused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(transparent)]
pub struct AllocationId(pub(super) i64);

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
///
/// [`Store::reserve`]: crate::Store::reserve
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

/// The answer of [`Store::reserve`](crate::Store::reserve).
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

/// Which allocations [`Store::end`](crate::Store::end) ends.
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

#[cfg(test)]
mod tests {
    use super::*;

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
