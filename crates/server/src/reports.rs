//! Reports over the store: spend per team, user or GPU model over a period
//! (with each team's budget for the period), and the monthly chargeback
//! finance invoices from.
//!
//! The service functions ([`spend_report`], [`chargeback()`]) take the
//! store, the policy, the resolved period and `now`, and return plain data;
//! `warden report` renders it as a table, CSV or JSON, and the read-only
//! endpoints answer it as JSON:
//!
//! - `GET /reports/spend?period=day|month|custom&date=&month=&from=&until=&by=team|user|gpu&team=`
//! - `GET /reports/chargeback?month=2026-11`
//!
//! Days and months are calendar days and months in the config's
//! `time_zone`, as for budgets ([`resolve_period`]); a custom window is two
//! UTC instants.
//!
//! Bad parameters are a 400 naming the parameter; without a store
//! (`storage: none`) the answer is 503. The endpoints are not yet restricted
//! by role: serve them only where everyone who can reach them may see every
//! team's spend (roles come with the admin API).
//!
//! # Amounts
//!
//! Costs follow [`warden_store::report`] exactly (hourly price × overlap
//! with the period; live allocations up to `now`).
//!
//! - Spend reports give each group's cost in micro-dollars rounded down
//!   once per group, as budgets count it; the total is the whole cost
//!   rounded down once, so it may exceed the sum of the rows by less than a
//!   micro-dollar per row. GPU-hours are rounded down to 0.01.
//! - Chargeback amounts are in cents. The total is the exact cost of the
//!   month rounded half up to the cent. Each line (team and GPU model) gets
//!   its exact cost rounded down to the cent, and the cents still missing
//!   from the total go one each to the lines with the largest remainders
//!   (ties: in line order), so the lines add up to the total exactly and
//!   each differs from its exact cost by less than a cent. GPU-hours are
//!   split the same way in hundredths of an hour.
//!
//! Periods are parsed and resolved in `reports/period.rs`; the spend report
//! is in `spend.rs`, the chargeback and its apportioning in
//! `chargeback.rs`, the [`Fixed`] decimals and rounding units both use in
//! `amounts.rs`, and the endpoints in `http.rs`.

mod amounts;
mod chargeback;
mod http;
mod period;
mod spend;

pub use amounts::Fixed;
pub use chargeback::{chargeback, Chargeback, ChargebackLine, ChargebackTeam, ChargebackTotal};
pub use http::{chargeback_handler, routes, spend};
pub use period::{parse_month, resolve_period, ParamError, Period, PeriodKind, PeriodParams};
pub use spend::{spend_report, BudgetUse, SpendBy, SpendQuery, SpendReport, SpendRow, SpendTotal};
