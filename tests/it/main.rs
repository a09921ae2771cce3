//! Warden's integration tests: one binary (link time matters on 2 cores).

#![allow(
    clippy::expect_used,
    clippy::unwrap_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "test code: a failed expectation is the test failure"
)]

mod admin;
mod api;
mod cases;
mod cli;
mod doctor;
mod door_limits;
mod exceptions;
mod gate;
mod http;
mod k8s_admission;
mod k8s_render;
mod keys;
mod oidc;
mod recording;
mod replay;
mod replicas;
mod report;
mod skypilot_client;
mod skypilot_sync;
mod store_outage;
mod tls;
mod vast;
mod vast_client;
mod wire;
mod yaml_contract;
