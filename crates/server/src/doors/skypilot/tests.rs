//! The SkyPilot door end to end: request bodies through [`handle`], from
//! normalization to the documents SkyPilot continues with.

use serde_json::Value;
use warden_core::Policy;

use super::*;

fn policy(yaml: &str) -> Policy {
    Policy::from_yaml(yaml).expect("policy")
}

#[test]
fn replay_input_round_trips_without_secrets() {
    let inner = serde_json::json!({
        "task": "name: t\nenvs:\n  HF_TOKEN: hf_secret\nresources:\n  accelerators: H100:8\n",
        "skypilot_config": "api_server:\n  service_account_token: sky_secret\n",
        "request_name": "launch",
        "at_client_side": false,
    });
    let body = serde_json::to_vec(&inner.to_string()).unwrap();
    let input = replay_input(&body).unwrap();
    let text = input.to_string();
    assert!(
        !text.contains("hf_secret") && !text.contains("sky_secret"),
        "{text}"
    );
    assert_eq!(input["task"]["resources"]["accelerators"], "H100:8");
    let p = policy("rules:\n  - name: spot\n    use_spot: true\n");
    let original = handle(&p, &body).unwrap();
    let replayed = handle(&p, &replay_body(&input).unwrap()).unwrap();
    assert_eq!(replayed.decision, original.decision);
    assert!(replay_input(b"not json").is_none());
}

fn body(task: &str) -> Vec<u8> {
    let inner = serde_json::json!({"task": task, "skypilot_config": "a: 1\n", "request_name": "launch",
        "user": "name: alice\nid: x\n", "at_client_side": false});
    serde_json::to_vec(&inner.to_string()).expect("json")
}

#[test]
fn candidate_sets_expand_and_prune() {
    let p = policy(
        "default_team: t\nteams:\n  t: {allowed_gpus: [A100], prune_disallowed_gpus: true}\n",
    );
    let h = handle(
        &p,
        &body("resources:\n  accelerators: {H100: 8, A100: 8}\n"),
    )
    .expect("handled");
    assert!(h.decision.is_allowed(), "{:?}", h.decision);
    let task: Value = serde_json::from_str(&h.task).expect("json task");
    assert_eq!(
        task["resources"]["accelerators"],
        serde_json::json!({"A100": 8})
    );

    let h = handle(
        &p,
        &body("resources:\n  any_of:\n    - accelerators: H100:8\n    - accelerators: A100:8\n"),
    )
    .expect("handled");
    let task: Value = serde_json::from_str(&h.task).expect("json task");
    assert_eq!(
        task["resources"]["any_of"],
        serde_json::json!([{"accelerators": "A100:8"}])
    );
}

#[test]
fn infra_is_rewritten_for_zone() {
    let p = policy(
        "default_team: t\nteams:\n  t: {}\nrules:\n  - name: part\n    match: {resource: 'resource.cloud == \"slurm\"'}\n    set_resource: {zone: gpu}\n",
    );
    let h = handle(
        &p,
        &body("resources:\n  infra: slurm/mycluster\n  accelerators: H100:1\n"),
    )
    .expect("ok");
    let task: Value = serde_json::from_str(&h.task).expect("json task");
    assert_eq!(task["resources"]["infra"], "slurm/mycluster/gpu");
}

fn err(p: &Policy, task: &str) -> String {
    match handle(p, &body(task)) {
        Ok(h) => panic!("{task:?} was accepted: {:?}", h.answer),
        Err(e) => e.to_string(),
    }
}

#[test]
fn governed_fields_of_the_wrong_type_or_value_are_refused_naming_the_field() {
    let p = policy("default_team: t\nteams:\n  t: {max_gpus_per_launch: 1}\nrules:\n  - name: l\n    add_labels: {team: t}\n");
    for (task, words) in [
        (
            "resources:\n  labels: [team=x]\n",
            "`resources.labels` must be a mapping",
        ),
        (
            "resources:\n  labels: {1: x}\n",
            "label names must be strings",
        ),
        (
            "resources:\n  labels: {team: [x]}\n",
            "`resources.labels.team` must be a single value",
        ),
        (
            "resources:\n  accelerators: {H100: .inf}\n",
            "not a finite number",
        ),
        (
            "resources:\n  accelerators: {H100: -.inf}\n",
            "not a finite number",
        ),
        (
            "resources:\n  accelerators: {H100: .nan}\n",
            "not a finite number",
        ),
        (
            "resources:\n  accelerators: {H100: [8]}\n",
            "must be a number, got a list",
        ),
        (
            "resources:\n  accelerators: {H100: {n: 8}}\n",
            "must be a number, got a mapping",
        ),
        (
            "resources:\n  accelerators: {H100: true}\n",
            "must be a number, got a boolean",
        ),
        (
            "resources:\n  accelerators: {H100: 0}\n",
            "must be a positive number",
        ),
        ("resources:\n  accelerators: H100:1e12\n", "is too large"),
        (
            "resources:\n  accelerators: {H100: 99999999999999999999999999999999999999999}\n",
            "is too large",
        ),
        (
            "resources:\n  accelerators: {null: 8}\n",
            "GPU names must be strings",
        ),
        (
            "resources:\n  accelerators: [[H100]]\n",
            "`resources.accelerators[0]` must be",
        ),
        (
            "resources:\n  use_spot: 'yes'\n",
            "`resources.use_spot` must be true or false",
        ),
        ("num_nodes: 1.5\n", "`num_nodes` must be a positive integer"),
        ("num_nodes: '2'\n", "`num_nodes` must be a positive integer"),
        ("num_nodes: 99999999999\n", "too large"),
        (
            "resources:\n  any_of: [x]\n",
            "`resources.any_of[0]` must be a mapping",
        ),
        (
            "resources:\n  any_of: [{}]\n  ordered: [{}]\n",
            "both `any_of` and `ordered`",
        ),
        (
            "resources:\n  any_of: [{cpus: [4]}]\n",
            "`resources.any_of[0].cpus` must be a single value",
        ),
        (
            "resources:\n  autostop: 1.5\n",
            "`resources.autostop` must be",
        ),
        (
            "resources:\n  image_id: {us-east-1: a, us-west-2: b}\n",
            "different images",
        ),
        ("resources: !!python/tuple [1]\n", "tag `!!python/tuple`"),
        ("a: =\n", "cannot be read"),
    ] {
        let e = err(&p, task);
        assert!(e.contains(words), "{task:?}: want {words:?} in {e}");
    }
    // 1.5 GPUs occupy 2, and 2 > 1: denied, not miscounted as one.
    let h = handle(&p, &body("resources:\n  accelerators: {H100: 1.5}\n")).expect("handled");
    assert!(!h.decision.is_allowed());
}

#[test]
fn a_changed_document_keeps_keys_of_every_kind_order_and_yaml_1_1_scalars() {
    let p = policy(
        "default_team: t\nteams:\n  t: {}\nrules:\n  - name: l\n    add_labels: {team: t}\n",
    );
    let task = "name: x\nresources:\n  image_id:\n    null: docker:ubuntu:22.04\n  cpus: 4+\nenvs:\n  LR: 1e-4\n  T: 1:30\n  B: yes\n  O: 0o17\n  Z: 0777\n  D: 2024-01-31\n  S: \"\\x7f\\x85\\u2028\"\n  true: on\n  8080: x\n";
    let h = handle(&p, &body(task)).expect("handled");
    assert_eq!(
        h.task,
        concat!(
            r#"{"name": "x", "resources": {"image_id": {null: "docker:ubuntu:22.04"}, "cpus": "4+", "labels": {"team": "t"}}, "#,
            r#""envs": {"LR": "1e-4", "T": 1:30, "B": yes, "O": "0o17", "Z": 0777, "D": 2024-01-31, "S": "\x7f\x85\u2028", true: on, 8080: "x"}}"#
        )
    );
}

#[test]
fn untouched_documents_pass_through_byte_for_byte() {
    let p = policy("default_team: t\nteams:\n  t: {}\n");
    let task = "name: x\nenvs:\n  A: '1'\n";
    let h = handle(&p, &body(task)).expect("ok");
    assert_eq!(h.task, task);
    assert_eq!(h.config, "a: 1\n");
}

/// `identity.skypilot_user_claim` picks the field of the API server's user
/// record that names the user: the name (default), its part before `@`, or
/// the id; the team and the role bindings see that name.
#[test]
fn the_skypilot_user_claim_picks_the_field_that_names_the_user() {
    let with_claim = |claim: warden_core::SkypilotUserClaim| {
        let mut spec: warden_core::PolicySpec = serde_norway::from_str(
            "teams:\n  by-name: {users: [alice@example.com]}\n  by-local: {users: [alice]}\n  by-id: {users: [fcd1e5cf]}\n",
        )
        .unwrap();
        spec.skypilot_user_claim = claim;
        Policy::compile(spec).unwrap()
    };
    let inner = serde_json::json!({"task": "resources:\n  accelerators: H100:1\n",
        "skypilot_config": "a: 1\n", "request_name": "launch",
        "user": "id: fcd1e5cf\n\nname: alice@example.com\n\nuser_type: null\n", "at_client_side": false});
    let body = serde_json::to_vec(&inner.to_string()).unwrap();
    for (claim, user, team) in [
        (
            warden_core::SkypilotUserClaim::Name,
            "alice@example.com",
            "by-name",
        ),
        (
            warden_core::SkypilotUserClaim::EmailLocalPart,
            "alice",
            "by-local",
        ),
        (warden_core::SkypilotUserClaim::Id, "fcd1e5cf", "by-id"),
    ] {
        let h = handle(&with_claim(claim), &body).unwrap();
        assert_eq!(h.request.principal.user.as_deref(), Some(user), "{claim:?}");
        assert_eq!(
            h.decision.team.as_ref().map(|t| t.as_str()),
            Some(team),
            "{claim:?}"
        );
    }
    // A name without `@` is taken whole by `email_local_part`.
    let inner = serde_json::json!({"task": "name: t\n", "request_name": "launch",
        "user": "id: x\nname: root\n", "at_client_side": false});
    let body = serde_json::to_vec(&inner.to_string()).unwrap();
    let h = handle(
        &with_claim(warden_core::SkypilotUserClaim::EmailLocalPart),
        &body,
    )
    .unwrap();
    assert_eq!(h.request.principal.user.as_deref(), Some("root"));
}
