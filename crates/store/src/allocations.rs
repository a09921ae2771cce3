//! Allocations (granted launches) and the quotas checked against them.
//!
//! [`Store::reserve`] checks every [`Limit`] against the team's live
//! allocations and records the new one in one transaction that is exact
//! under concurrency: callers racing for the last GPU of a quota, in one
//! process or in several replicas on one PostgreSQL, are granted exactly as
//! many as fit. How each backend serializes is explained in `src/backend.rs`.
//! Budgets ([`Limit::Budget`]) are checked in the same transaction; what
//! they count is in [`crate::spend`].
//!
//! The public types are in `allocations/types.rs`; limit checking, without
//! I/O, in `limits.rs`; the batch reservation algorithm in `reserve.rs`;
//! ending in `end.rs`; and their SQL in `sql.rs`.
//!
//! [`Store::reserve`]: crate::Store::reserve

mod end;
mod limits;
mod reserve;
mod sql;
mod types;

pub(crate) use limits::check_request;
pub(crate) use reserve::{context_json, Reservation};
pub(crate) use sql::{allocation, allocation_columns, batch_reads, AllocationRow};
pub use types::{
    Allocation, AllocationId, AllocationName, AllocationRequest, AllocationState, Denial,
    EndTarget, Limit, ReserveOutcome, Scope,
};
