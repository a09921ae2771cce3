//! Warden's store: what changes while Warden runs (allocations, the audit
//! chain), behind one async interface over SQLite (the embedded default) or
//! PostgreSQL (several replicas on one database). No SQL exists outside this
//! crate, and callers never see which backend they talk to.
//!
//! ```no_run
//! # async fn demo() -> Result<(), warden_store::StoreError> {
//! use warden_core::{Door, GpuModel, TeamName, Usd};
//! use warden_store::{
//!     AllocationName, AllocationRequest, Limit, Scope, Store, UnixMicros, Write, Written,
//! };
//!
//! let store = Store::connect("sqlite:///var/lib/warden/warden.db").await?;
//! let req = AllocationRequest {
//!     door: Door::Skypilot,
//!     team: TeamName::parse("ml").unwrap(),
//!     user: Some("alice".into()),
//!     name: AllocationName::parse("sky-train-1").unwrap(),
//!     gpu_model: Some(GpuModel::parse("H100").unwrap()),
//!     gpus: 8,
//!     hourly: Usd::from_micros(24_000_000),
//!     context: None,
//! };
//! let limits = [Limit::Gpus { scope: Scope::Team, max: 16 }];
//! let now = UnixMicros::from_system_time(std::time::SystemTime::now());
//! let outcome = store.reserve(&req, &limits, now).await?;
//!
//! // Or through the store's writer task, committed in one transaction with
//! // whatever other writes are waiting (group commit); here, a re-launch.
//! let write = Write::Reserve { request: req, limits: limits.to_vec() };
//! let written: Written = store.write(write, now).await?;
//! # Ok(()) }
//! ```
//!
//! # Writing: one call, one transaction, or group commit
//!
//! [`Store::reserve`], [`Store::append_audit`] and [`Store::end`] each run a
//! transaction of their own in the caller's task; a commit (a flush to disk)
//! per call caps them at the disk's flush rate (1,000 to 2,000 calls a
//! second on a small VM). [`Store::write`] hands
//! a [`Write`] to the store's writer task instead, which commits all the
//! writes waiting at that moment in one transaction, in arrival order, with
//! the same answers: use it on hot paths. See [`writer`] for what batching
//! guarantees, and how a dropped caller's write still commits.
//!
//! # Schema
//!
//! The migrations live in `migrations/sqlite` and `migrations/postgres`,
//! one directory per dialect with equivalent schemas, embedded in the binary
//! and applied by [`Store::connect`]. Money columns are BIGINT micro-dollars
//! ([`warden_core::Usd`]); instants are BIGINT microseconds since the Unix
//! epoch, UTC ([`UnixMicros`]), on both backends.
//!
//! - `allocations(id, door, team, user_name, name, gpu_model, gpus,
//!   hourly_micros, started_us, ended_us, state, reserved_micros)`: granted
//!   launches. `gpus` is GPUs per node × nodes; `state` is `live` or
//!   `ended`, and `ended_us` is set exactly when it is `ended`. A partial
//!   unique index allows one live row per (door, team, name), which makes
//!   re-launches idempotent. `reserved_micros` is what the grant reserved
//!   against its team's budgets (see [`spend`]); an index on
//!   `(team, started_us)` serves spend over a window.
//!   `held_until_us` is when that reservation is used up (see
//!   `src/budget.rs`), indexed among live rows; ended rows are indexed by
//!   `(team, ended_us)`.
//! - `live_usage(id, team, user_name, gpu_model, gpus, live,
//!   hourly_micros)`: live allocations summed per (team, user, GPU model),
//!   what quotas read (`src/usage.rs`).
//! - `budget_teams(team, ...)` and `budget_periods(team, from_us, used,
//!   touched_us)`: budget states, what budget checks read
//!   (`src/budget.rs`). Both summaries change in the transactions that
//!   grant or end allocations, under the team's lock, so a check costs the
//!   same however many allocations are live or fall in a period.
//! - `launch_buckets(id, team, scope, user_name, max_launches, per_us,
//!   full_at_us, full_at_frac)`: the token buckets of launch rate limits
//!   ([`Limit::Launches`]; see [`launches`]).
//! - `audit(seq, at_us, kind, payload, prev_hash, hash)`: the hash-chained
//!   audit log; `payload` is JSON text. See [`audit`].
//! - `audit_head(id = 1, seq, hash)`: the chain's last record, updated by
//!   every transaction that appends; it serializes appends and exposes a
//!   truncated tail.
//! - `api_keys(id, hash, name, team, user_name, created_us, expires_us,
//!   revoked_us, rotated_to, role)`: team API keys, stored as hashes; `id` is the
//!   public part of the key and the primary key. See [`keys`].
//! - `exceptions(id, team, user_name, rule, reason, granted_by,
//!   granted_us, until_us, revoked_us, expired_us)`: time-limited
//!   exceptions. See [`exceptions`].
//!
//! # Guarantees
//!
//! - **Quotas are exact under concurrency.** [`Store::reserve`] checks the
//!   limits and records the allocation in one transaction ([`Store::write`]:
//!   in the batch's transaction, after the batch's earlier reservations,
//!   all of whose teams it locks first). On PostgreSQL,
//!   reservations of one team serialize on a transaction-scoped advisory
//!   lock, so any number of processes on one database grant exactly what
//!   fits; on SQLite, write transactions begin with `BEGIN IMMEDIATE` and
//!   hold the database's write lock. The lock choices are explained on
//!   `Tx::lock_teams` and `Store::begin_write` in `src/backend.rs`.
//! - **Budgets are exact too.** A [`Limit::Budget`] is checked in the same
//!   transaction, under the same team lock, against [`Store::spend`] since
//!   its start plus what live allocations (stored, or granted earlier in
//!   the batch) still hold of their reservations; the rule is in [`spend`].
//!   Quotas and budgets read summaries kept exactly in step with the
//!   allocations (see Schema), not the allocations themselves.
//! - **Launch rates are exact too.** A [`Limit::Launches`] bucket is read,
//!   checked and debited in the same transaction, under the same team lock.
//! - **Audit before answer.** Every reservation (granted or denied) and
//!   every end writes its audit record in the same transaction as the
//!   change; a call that returned `Ok` has both committed. So does a
//!   [`Store::write`], whose batch committed before it is answered.
//! - **Tamper-evident audit chain**, with the limits stated in [`audit`].
//! - **Fail closed.** Every failure is a [`StoreError`]; nothing is granted
//!   unless the transaction that recorded it committed. A batch that fails
//!   fails every write in it ([`StoreError::Batch`]).
//!
//! Builds never need a database: all queries are checked at run time
//! (`sqlx::query` with `.bind`), and the tests run each body against both
//! backends.

pub mod alerts;
pub mod allocations;
pub mod audit;
mod backend;
mod budget;
pub mod error;
pub mod exceptions;
pub mod keys;
pub mod launches;
pub mod report;
pub mod settle;
pub mod spend;
pub mod time;
mod usage;
pub mod writer;

pub use alerts::{BudgetAlert, StoredAlert};
pub use allocations::{
    Allocation, AllocationId, AllocationName, AllocationRequest, AllocationState, Denial,
    EndTarget, Limit, ReserveOutcome, Scope,
};
pub use audit::{chain_hash, AuditRecord, ChainHead, ChainProblem, VerifyReport, GENESIS_HASH};
pub use backend::{Store, StoreOptions, DEFAULT_STORE_TIMEOUT};
pub use error::{InputError, StoreError};
pub use exceptions::{ExceptionError, NewException, StoredException};
pub use keys::{
    ApiKey, ApiKeyId, IssuedKey, KeyAdminError, KeyError, KeyInputError, KeyName, KeyPrincipal,
    KeySecret, KeyState, KeyUser, NewKey, Rotated, RotatedExpiry,
};
pub use report::{GroupBy, GroupKey, GroupUsage, UsageQuery, COST_SCALE};
pub use settle::Settled;
pub use time::{parse_time_zone, Period, PeriodKind, TimeZone, UnixMicros};
pub use writer::{Write, WriteStats, Written, MAX_BATCH};
