#![allow(
    clippy::expect_used,
    clippy::panic,
    reason = "benchmark setup: a broken fixture must stop the run"
)]

//! Core decision cost: 20 built-in rules, and 20 rules each with a CEL
//! condition. Targets (issue #2): ≤ 10 µs and ≤ 50 µs per decision.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion};
use warden_core::{Accelerator, Door, GpuModel, LaunchRequest, Policy, Resource};

fn request() -> LaunchRequest {
    let mut req = LaunchRequest::new(Door::Skypilot, "launch");
    req.principal.user = Some("alice".into());
    req.num_nodes = 2;
    req.resources = vec![
        Resource {
            accelerator: GpuModel::parse("H100")
                .ok()
                .map(|model| Accelerator { model, count: 8 }),
            cloud: Some("aws".into()),
            region: Some("us-east-1".into()),
            ..Resource::default()
        },
        Resource {
            accelerator: GpuModel::parse("A100")
                .ok()
                .map(|model| Accelerator { model, count: 8 }),
            cloud: Some("gcp".into()),
            ..Resource::default()
        },
    ];
    req.labels.insert("project".into(), "alpha".into());
    req.task = serde_json::json!({
        "name": "train", "num_nodes": 2, "run": "python train.py",
        "resources": {"any_of": [{"accelerators": "H100:8", "infra": "aws/us-east-1"}, {"accelerators": "A100:8", "infra": "gcp"}],
                      "labels": {"project": "alpha"}},
        "envs": {"A": "1", "B": "2"}
    });
    req.config = serde_json::json!({"active_workspace": "default", "kubernetes": {"allowed_contexts": ["a"]}});
    req
}

const TEAMS: &str = "teams:\n  ml:\n    users: [alice]\n    allowed_gpus: [H100, A100]\n    max_gpus_per_launch: 64\n    max_nodes: 8\n    max_hourly_usd: 500\n";

/// 20 rules without CEL: 4 team limits + 16 built-in actions.
fn builtin_policy() -> Policy {
    let rules = "rules:
  - {name: r1, max_gpus: 64}
  - {name: r2, max_nodes: 8}
  - {name: r3, max_hourly_usd: 400}
  - {name: r4, allowed_gpus: [H100, A100, L4]}
  - {name: r5, match: {requests: [launch, exec]}, max_autostop_minutes: 120}
  - {name: r6, use_spot: true}
  - {name: r7, add_labels: {team: '${team}', managed-by: warden}}
  - {name: r8, require_labels: [project]}
  - {name: r9, allowed_clouds: [aws, gcp, kubernetes]}
  - {name: r10, allowed_images: ['docker:corp/']}
  - {name: r11, min_client_api_version: 1}
  - {name: r12, match: {teams: [ml]}, max_gpus: 32}
  - {name: r13, match: {requests: ['jobs.*']}, deny: never}
  - {name: r14, default_autostop: {idle_minutes: 30}}
  - {name: r15, add_volumes: {/mnt/data: pvc0}}
  - {name: r16, match: {users: [bob]}, deny: not bob}
";
    Policy::from_yaml(&format!("{TEAMS}{rules}")).expect("builtin policy")
}

/// 20 rules, each with a CEL condition (request, task, config and per-resource).
fn cel_policy() -> Policy {
    let mut rules = String::from("rules:\n");
    let conds = [
        "request.gpus > 1000",
        "task.num_nodes * 8 > 1000",
        "request.hourly_usd > 10000.0",
        "'TPU' in request.gpu_models",
        "has(config.kubernetes) && size(config.kubernetes.allowed_contexts) > 5",
        "request.user == 'mallory'",
        "request.labels.project == 'omega'",
        "request.num_nodes > 100",
        "request.name == 'serve.up' && request.gpus > 8",
        "task.name.startsWith('forbidden')",
    ];
    for i in 0..20 {
        let cond = conds.get(i % conds.len()).copied().unwrap_or("false");
        if i % 4 == 3 {
            rules.push_str(&format!(
                "  - {{name: c{i}, match: {{resource: \"resource.gpus > 64 || resource.cloud == 'azure'\"}}, deny: no}}\n"
            ));
        } else {
            rules.push_str(&format!(
                "  - {{name: c{i}, match: {{when: \"{cond}\"}}, deny: no}}\n"
            ));
        }
    }
    Policy::from_yaml(&format!("{TEAMS}{rules}")).expect("cel policy")
}

fn bench(c: &mut Criterion) {
    let req = request();
    let builtin = builtin_policy();
    assert_eq!(builtin.rules().len(), 20);
    let d = builtin.decide(&req);
    assert!(d.is_allowed() && !d.mutations.is_empty(), "{d:?}");
    c.bench_function("decide/20_builtin_rules", |b| {
        b.iter(|| builtin.decide(black_box(&req)))
    });

    let cel = cel_policy();
    assert_eq!(cel.rules().len(), 24);
    assert!(cel.decide(&req).is_allowed());
    c.bench_function("decide/20_cel_rules", |b| {
        b.iter(|| cel.decide(black_box(&req)))
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
