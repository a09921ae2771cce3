//! warden-sim's integration tests: one binary (link time matters on 2 cores).

#![allow(
    clippy::expect_used,
    clippy::unwrap_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "test code: a failed expectation is the test failure"
)]

mod faults;
mod fixtures;
mod lifecycle;
mod search;
mod support;
