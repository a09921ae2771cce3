//! The store's integration tests. Every test body runs twice, on a fresh
//! SQLite file and on a fresh PostgreSQL database (see `support`). The
//! PostgreSQL tests fail, never skip, when the server is not answering.

#![allow(
    clippy::expect_used,
    clippy::unwrap_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "tests fail loudly on anything unexpected"
)]

mod support;

mod alerts;
mod allocations;
mod audit;
mod exceptions;
mod keys;
mod launches;
mod migrations;
mod model;
mod report;
mod settle;
mod spend;
mod writer;
