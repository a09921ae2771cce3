#![allow(
    clippy::expect_used,
    clippy::panic,
    reason = "benchmark setup: a broken fixture must stop the run"
)]

//! The SkyPilot door's CPU cost per request, without HTTP: decode,
//! normalize, decide, apply, encode, for captured fixture 01.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion};
use warden_core::Policy;
use warden_server::doors::skypilot;

const POLICY: &str = "default_team: bench\nteams:\n  bench: {}\nrules:\n  - {name: spot-for-gpu, match: {resource: 'resource.gpus > 0'}, use_spot: true}\n  - {name: managed-label, add_labels: {managed-by: warden}}\n";

fn bench(c: &mut Criterion) {
    let body = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../tests/fixtures/skypilot-0.14.1/01_gpu_h100x8_sky_launch_client.json"
    ))
    .expect("fixture 01");
    let policy = Policy::from_yaml(POLICY).expect("policy");
    let h = skypilot::handle(&policy, &body).expect("handled");
    assert!(h.decision.is_allowed() && h.decision.mutations.len() == 2);

    c.bench_function("door/parse_body", |b| {
        b.iter(|| skypilot::parse_body(black_box(&body)))
    });
    let req = skypilot::parse_body(&body).expect("body");
    c.bench_function("door/normalize", |b| {
        b.iter(|| skypilot::normalize(&policy, black_box(req.clone())))
    });
    let n = skypilot::normalize(&policy, req.clone()).expect("normalized");
    c.bench_function("door/decide", |b| {
        b.iter(|| policy.decide(black_box(&n.request)))
    });
    c.bench_function("door/handle_fixture_01", |b| {
        b.iter(|| skypilot::handle(&policy, black_box(&body)))
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
