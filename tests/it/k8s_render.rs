//! `warden k8s render` and `warden k8s diff`: the objects follow the config
//! (quota numbers, role bindings to groups, network isolation, webhook
//! scoping and failure policy), re-rendering gives the same bytes, every
//! object passes the Kubernetes API schemas (`kubernetes-validate` from the
//! venv made by `scripts/setup-venv.sh`), the YAML reads back (PyYAML, a
//! YAML 1.1 reader) as the JSON output, and `diff` names planted drifts and
//! none for a faithful cluster export.

use std::process::Command;

use serde_json::{json, Value};

use crate::cli::warden;
use crate::skypilot_client::{venv_python, TempDir};

const CA: &str = "-----BEGIN CERTIFICATE-----\nMIIBkTCB+wIJAKHBfpegPjMCMA0GCSqGSIb3DQEBCwUAMBExDzANBgNVBAMMBnRl\n-----END CERTIFICATE-----\n";

/// Teams with GPU quotas (total and per model), storage/PVC/pod caps,
/// default limits and YAML-ambiguous labels; group, all-teams and user
/// bindings; system namespaces; a CRD with pod templates; a fail-open
/// webhook with a 10 s timeout.
const FULL: &str = r#"
storage: sqlite://warden.db
teams:
  ml-research:
    quotas: {max_gpus: 16, max_gpus_by_model: {H100: 8, A100: 4}}
    kubernetes:
      requests_storage: 10Ti
      persistent_volume_claims: 20
      pods: 100
      default_requests: {cpu: 500m, memory: 2Gi}
      default_limits: {memory: 8Gi}
      labels: {cost-centre: "1234", flag: "on", mode: "0755", empty: "", "null": "null"}
  inference:
    quotas: {max_gpus: 4}
    kubernetes: {namespace: serving}
  Bad_Team: {}
role_bindings:
  - {group: ml-leads, role: team-lead, team: ml-research}
  - {group: serving-ops, role: inference-operator, team: inference}
  - {group: finance, role: viewer, teams: "*"}
  - {group: platform, role: admin, teams: "*"}
  - {group: researchers, role: ml-engineer, team: ml-research}
  - {group: "true", role: ml-engineer, team: ml-research}
  - {user: alice, role: ml-engineer, team: ml-research}
kubernetes:
  gpu_model_resources: {H100: nvidia.com/gpu-h100}
  system_namespaces: [monitoring, ingress-nginx]
  pod_templates:
    - {api_version: kubeflow.org/v1, kind: PyTorchJob, paths: [spec.pytorchReplicaSpecs.*.template]}
    - {api_version: ray.io/v1, kind: RayCluster, paths: [spec.headGroupSpec.template]}
  webhook: {failure_policy: Ignore, timeout_seconds: 10}
"#;

/// One team, nothing but the defaults.
const MINIMAL: &str = "storage: sqlite://warden.db\nteams:\n  solo: {}\n";

/// A GPU quota only, default webhook settings, a user binding only.
const GPU_ONLY: &str = r#"
storage: sqlite://warden.db
teams:
  vision:
    quotas: {max_gpus: 2}
    kubernetes: {namespace: "vision-1", labels: {"example.com/yes": "yes"}}
role_bindings:
  - {user: bob, role: team-lead, team: vision}
"#;

struct Fixture {
    dir: TempDir,
}

impl Fixture {
    fn new(name: &str) -> Fixture {
        let dir = TempDir::new(name);
        std::fs::write(dir.0.join("ca.pem"), CA).unwrap();
        Fixture { dir }
    }

    fn file(&self, name: &str, text: &str) -> String {
        let p = self.dir.0.join(name);
        std::fs::write(&p, text).unwrap();
        p.display().to_string()
    }

    fn ca(&self) -> String {
        self.dir.0.join("ca.pem").display().to_string()
    }

    /// `k8s render` of `config` with the webhook; panics on failure.
    fn render(&self, config: &str, format: &str) -> (String, String) {
        let ca = self.ca();
        let (code, out, err) = warden(&[
            "k8s",
            "render",
            "--config",
            config,
            "--format",
            format,
            "--webhook",
            "https://warden.warden-system.svc:8443",
            "--ca-file",
            &ca,
        ]);
        assert_eq!(code, 0, "{err}");
        (out, err)
    }
}

fn items(json_out: &str) -> Vec<Value> {
    let list: Value = serde_json::from_str(json_out).unwrap();
    assert_eq!(list["apiVersion"], "v1");
    assert_eq!(list["kind"], "List");
    list["items"].as_array().unwrap().clone()
}

fn find<'a>(items: &'a [Value], kind: &str, ns: &str, name: &str) -> &'a Value {
    items
        .iter()
        .find(|o| {
            o["kind"] == kind
                && o["metadata"]["name"] == name
                && o["metadata"]["namespace"].as_str().unwrap_or("") == ns
        })
        .unwrap_or_else(|| panic!("no {kind} {ns}/{name} in {items:#?}"))
}

fn count(items: &[Value], kind: &str) -> usize {
    items.iter().filter(|o| o["kind"] == kind).count()
}

#[test]
fn render_follows_the_config() {
    let f = Fixture::new("warden-k8s-render");
    let config = f.file("c.yaml", FULL);
    let (out, err) = f.render(&config, "json");
    let items = items(&out);

    // What could not be rendered is said, not silently dropped.
    assert!(
        err.contains("team `Bad_Team`") && err.contains("kubernetes.namespace"),
        "{err}"
    );
    assert!(err.contains("user `alice`"), "{err}");
    assert!(err.contains("A100 quota (4)"), "{err}");
    assert_eq!(count(&items, "Namespace"), 2);

    let ns = find(&items, "Namespace", "", "ml-research");
    assert_eq!(
        ns["metadata"]["labels"],
        json!({"app.kubernetes.io/managed-by": "warden", "warden.dev/team": "ml-research",
               "cost-centre": "1234", "flag": "on", "mode": "0755", "empty": "", "null": "null"})
    );
    // `teams.inference.kubernetes.namespace` names the namespace.
    let serving = find(&items, "Namespace", "", "serving");
    assert_eq!(
        serving["metadata"]["labels"]["warden.dev/team"],
        "inference"
    );

    let quota = find(&items, "ResourceQuota", "ml-research", "warden");
    assert_eq!(
        quota["spec"]["hard"],
        json!({
            "requests.nvidia.com/gpu": "16", "limits.nvidia.com/gpu": "16",
            "requests.amd.com/gpu": "16", "limits.amd.com/gpu": "16",
            "requests.nvidia.com/gpu-h100": "8", "limits.nvidia.com/gpu-h100": "8",
            "requests.storage": "10Ti", "persistentvolumeclaims": "20", "pods": "100",
        })
    );
    let quota = find(&items, "ResourceQuota", "serving", "warden");
    assert_eq!(quota["spec"]["hard"]["requests.nvidia.com/gpu"], "4");
    assert_eq!(quota["spec"]["hard"].as_object().unwrap().len(), 4);

    let lr = find(&items, "LimitRange", "ml-research", "warden");
    assert_eq!(
        lr["spec"]["limits"],
        json!([{"type": "Container", "defaultRequest": {"cpu": "500m", "memory": "2Gi"},
                "default": {"memory": "8Gi"}}])
    );
    let lr = find(&items, "LimitRange", "serving", "warden");
    assert_eq!(
        lr["spec"]["limits"][0]["defaultRequest"],
        json!({"cpu": "1", "memory": "4Gi"})
    );

    // Role bindings: to groups, per team, all-teams bindings in every team.
    let subjects = |ns: &str, name: &str| -> Vec<(String, String)> {
        find(&items, "RoleBinding", ns, name)["subjects"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| {
                assert_eq!(s["apiGroup"], "rbac.authorization.k8s.io");
                (
                    s["kind"].as_str().unwrap().to_owned(),
                    s["name"].as_str().unwrap().to_owned(),
                )
            })
            .collect()
    };
    let g = |n: &str| ("Group".to_owned(), n.to_owned());
    assert_eq!(subjects("ml-research", "warden-team-lead"), [g("ml-leads")]);
    assert_eq!(
        subjects("ml-research", "warden-ml-engineer"),
        [g("researchers"), g("true")]
    );
    assert_eq!(subjects("ml-research", "warden-viewer"), [g("finance")]);
    assert_eq!(subjects("ml-research", "warden-admin"), [g("platform")]);
    assert_eq!(
        subjects("serving", "warden-inference-operator"),
        [g("serving-ops")]
    );
    assert_eq!(subjects("serving", "warden-viewer"), [g("finance")]);
    let rb = find(&items, "RoleBinding", "ml-research", "warden-team-lead");
    assert_eq!(
        rb["roleRef"],
        json!({"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "warden-team-lead"})
    );
    // No binding of another team's group, and none for user `alice`.
    assert!(!items
        .iter()
        .any(|o| o["metadata"]["namespace"] == "serving"
            && o["metadata"]["name"] == "warden-team-lead"));
    assert!(!out.contains("alice"));
    assert_eq!(count(&items, "RoleBinding"), 7);

    // Five cluster roles; the ML engineer creates Jobs and Pods and reads
    // logs, the viewer only reads.
    assert_eq!(count(&items, "ClusterRole"), 5);
    let verbs = |role: &str, group: &str, resource: &str| -> Vec<String> {
        let r = find(&items, "ClusterRole", "", role);
        let mut v: Vec<String> = r["rules"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|rule| {
                rule["apiGroups"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|g| g == group)
                    && rule["resources"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .any(|x| x == resource)
            })
            .flat_map(|rule| {
                rule["verbs"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|v| v.as_str().unwrap().to_owned())
            })
            .collect();
        v.sort();
        v
    };
    assert!(verbs("warden-ml-engineer", "batch", "jobs").contains(&"create".to_owned()));
    assert!(verbs("warden-ml-engineer", "", "pods").contains(&"create".to_owned()));
    assert_eq!(verbs("warden-ml-engineer", "", "pods/log"), ["get"]);
    assert!(
        verbs("warden-ml-engineer", "", "persistentvolumeclaims").contains(&"create".to_owned())
    );
    assert!(verbs("warden-ml-engineer", "apps", "deployments").is_empty());
    assert!(
        verbs("warden-inference-operator", "apps", "deployments/scale")
            .contains(&"update".to_owned())
    );
    assert!(verbs(
        "warden-inference-operator",
        "autoscaling",
        "horizontalpodautoscalers"
    )
    .contains(&"create".to_owned()));
    assert!(verbs("warden-inference-operator", "batch", "jobs").is_empty());
    assert!(verbs("warden-team-lead", "apps", "deployments").contains(&"patch".to_owned()));
    assert_eq!(verbs("warden-viewer", "", "pods"), ["get", "list", "watch"]);
    assert_eq!(
        verbs("warden-viewer", "metrics.k8s.io", "pods"),
        ["get", "list", "watch"]
    );

    // Ingress from the namespace itself and the system namespaces only.
    let np = find(&items, "NetworkPolicy", "ml-research", "warden");
    assert_eq!(
        np["spec"],
        json!({
            "podSelector": {},
            "policyTypes": ["Ingress"],
            "ingress": [{"from": [
                {"podSelector": {}},
                {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "ingress-nginx"}}},
                {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}},
            ]}],
        })
    );

    // Webhooks: one endpoint, team namespaces only, the config's policy.
    for (kind, name) in [
        ("ValidatingWebhookConfiguration", "validate.warden.dev"),
        ("MutatingWebhookConfiguration", "mutate.warden.dev"),
    ] {
        let w = find(&items, kind, "", "warden");
        let hooks = w["webhooks"].as_array().unwrap();
        assert_eq!(hooks.len(), 1);
        let h = &hooks[0];
        assert_eq!(h["name"], name);
        assert_eq!(
            h["clientConfig"]["url"],
            "https://warden.warden-system.svc:8443/k8s/admission"
        );
        use base64::Engine as _;
        let ca = base64::engine::general_purpose::STANDARD
            .decode(h["clientConfig"]["caBundle"].as_str().unwrap())
            .unwrap();
        assert_eq!(ca, CA.as_bytes());
        assert_eq!(
            h["namespaceSelector"],
            json!({"matchExpressions": [{"key": "warden.dev/team", "operator": "Exists"}]})
        );
        assert_eq!(h["failurePolicy"], "Ignore");
        assert_eq!(h["timeoutSeconds"], 10);
        assert_eq!(h["sideEffects"], "NoneOnDryRun");
        assert_eq!(h["matchPolicy"], "Equivalent");
        assert_eq!(h["admissionReviewVersions"], json!(["v1"]));
        let mut covered = Vec::new();
        for rule in h["rules"].as_array().unwrap() {
            assert_eq!(rule["operations"], json!(["CREATE", "UPDATE", "DELETE"]));
            for r in rule["resources"].as_array().unwrap() {
                covered.push(format!(
                    "{}/{}/{}",
                    rule["apiGroups"][0].as_str().unwrap(),
                    rule["apiVersions"][0].as_str().unwrap(),
                    r.as_str().unwrap()
                ));
            }
        }
        covered.sort();
        assert_eq!(
            covered,
            [
                "/v1/pods",
                "apps/v1/deployments",
                "apps/v1/replicasets",
                "apps/v1/statefulsets",
                "batch/v1/cronjobs",
                "batch/v1/jobs",
                "kubeflow.org/v1/pytorchjobs",
                "ray.io/v1/rayclusters",
            ]
        );
        assert_eq!(
            h.get("reinvocationPolicy").is_some(),
            kind.starts_with("Mutating")
        );
    }
    // The webhooks come after the namespaces they select.
    let last_ns = items
        .iter()
        .rposition(|o| o["kind"] == "Namespace")
        .unwrap();
    let first_hook = items
        .iter()
        .position(|o| o["kind"] == "ValidatingWebhookConfiguration")
        .unwrap();
    assert!(last_ns < first_hook);
    // Every object is Warden's.
    for o in &items {
        assert_eq!(
            o["metadata"]["labels"]["app.kubernetes.io/managed-by"], "warden",
            "{o}"
        );
    }
}

#[test]
fn render_defaults_and_team_filter() {
    let f = Fixture::new("warden-k8s-defaults");
    let gpu = f.file("g.yaml", GPU_ONLY);
    let (out, err) = f.render(&gpu, "json");
    let got = items(&out);
    let h = &find(&got, "ValidatingWebhookConfiguration", "", "warden")["webhooks"][0];
    assert_eq!(h["failurePolicy"], "Fail");
    assert_eq!(h["timeoutSeconds"], 5);
    // Only a user binding: no RoleBinding, and stderr says why.
    assert_eq!(count(&got, "RoleBinding"), 0);
    assert!(
        err.contains("user `bob`") && err.contains("bind a group"),
        "{err}"
    );
    // No system namespaces: ingress from the namespace only.
    let np = find(&got, "NetworkPolicy", "vision-1", "warden");
    assert_eq!(
        np["spec"]["ingress"],
        json!([{"from": [{"podSelector": {}}]}])
    );

    // Without --webhook: no registrations. --team: that team only.
    let full = f.file("c.yaml", FULL);
    let (code, out, err) = warden(&[
        "k8s",
        "render",
        "--config",
        &full,
        "--team",
        "inference",
        "--format",
        "json",
    ]);
    assert_eq!(code, 0, "{err}");
    let one = items(&out);
    assert_eq!(count(&one, "Namespace"), 1);
    assert_eq!(count(&one, "ValidatingWebhookConfiguration"), 0);
    assert!(one.iter().all(|o| o["metadata"]["namespace"]
        .as_str()
        .is_none_or(|n| n == "serving")));

    let (code, _, err) = warden(&["k8s", "render", "--config", &full, "--team", "nope"]);
    assert_eq!(code, 1);
    assert!(err.contains("no team `nope`"), "{err}");
    let (code, _, err) = warden(&["k8s", "render", "--config", &full, "--team", "Bad_Team"]);
    assert_eq!(code, 1);
    assert!(err.contains("team `Bad_Team` cannot be rendered"), "{err}");
    let (code, _, err) = warden(&[
        "k8s",
        "render",
        "--config",
        &full,
        "--webhook",
        "http://warden:8080",
        "--ca-file",
        &f.ca(),
    ]);
    assert_eq!(code, 1);
    assert!(err.contains("not an https URL"), "{err}");
    let not_pem = f.file("x.pem", "hello");
    let (code, _, err) = warden(&[
        "k8s",
        "render",
        "--config",
        &full,
        "--webhook",
        "https://w",
        "--ca-file",
        &not_pem,
    ]);
    assert_eq!(code, 1);
    assert!(err.contains("no PEM certificate"), "{err}");
}

#[test]
fn render_without_usable_teams_says_why() {
    let f = Fixture::new("warden-k8s-none");
    let config = f.file(
        "c.yaml",
        "storage: sqlite://warden.db\nteams:\n  Research_Team: {}\n  _ops: {kubernetes: {namespace: ops}}\n",
    );
    let (code, out, err) = warden(&["k8s", "render", "--config", &config]);
    assert_eq!(code, 1, "{out}");
    assert!(out.is_empty(), "{out}");
    assert!(
        err.contains("no team can be rendered for Kubernetes"),
        "{err}"
    );
    assert!(
        err.contains("`Research_Team` is not a namespace name"),
        "{err}"
    );
    assert!(
        err.contains("`_ops` cannot be the value of label `warden.dev/team`"),
        "{err}"
    );
}

#[test]
fn render_is_byte_stable() {
    let f = Fixture::new("warden-k8s-stable");
    for (name, text) in [
        ("full.yaml", FULL),
        ("min.yaml", MINIMAL),
        ("gpu.yaml", GPU_ONLY),
    ] {
        let config = f.file(name, text);
        for format in ["yaml", "json"] {
            let (a, _) = f.render(&config, format);
            let (b, _) = f.render(&config, format);
            assert!(!a.is_empty());
            assert_eq!(a, b, "{name} {format}");
        }
    }
}

/// Reads the YAML stream with PyYAML and compares it with the JSON List,
/// then validates every object (strictly: unknown fields fail) against the
/// Kubernetes 1.37 schemas; a planted unknown field and a wrong type must
/// fail, so the check can fail.
const VALIDATE: &str = r#"
import copy, json, sys, yaml
import kubernetes_validate as kv
docs = list(yaml.safe_load_all(open(sys.argv[1])))
items = json.load(open(sys.argv[2]))["items"]
assert docs == items, "the YAML does not read back as the JSON"
def check(obj):
    try:
        kv.validate(obj, "1.37.0", strict=True)
        return None
    except kv.ValidationError as e:
        return str(e.message)
    except Exception as e:
        return type(e).__name__ + ": " + str(e)
bad = [(o["kind"], o["metadata"]["name"], check(o)) for o in items]
bad = [b for b in bad if b[2] is not None]
assert not bad, "schema failures: %r" % bad
planted = copy.deepcopy(items[-1]); planted["spec"] = {"surprise": 1}
assert check(planted) is not None, "an unknown field passed"
wrong = copy.deepcopy(next(o for o in items if o["kind"] == "NetworkPolicy")); wrong["spec"]["policyTypes"] = "Ingress"
assert check(wrong) is not None, "a wrong type passed"
print("validated %d objects" % len(items))
"#;

#[test]
fn render_output_passes_the_kubernetes_schemas() {
    let python = venv_python();
    let f = Fixture::new("warden-k8s-schema");
    for (name, text) in [
        ("full.yaml", FULL),
        ("min.yaml", MINIMAL),
        ("gpu.yaml", GPU_ONLY),
    ] {
        let config = f.file(name, text);
        let (yaml, _) = f.render(&config, "yaml");
        let (json_out, _) = f.render(&config, "json");
        let n = items(&json_out).len();
        let y = f.file(&format!("{name}.out.yaml"), &yaml);
        let j = f.file(&format!("{name}.out.json"), &json_out);
        let out = Command::new(&python)
            .args(["-c", VALIDATE, &y, &j])
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{name}: {stdout}{stderr}\n{yaml}");
        assert_eq!(stdout.trim(), format!("validated {n} objects"), "{name}");
    }
}

/// A cluster export of `items` as the API server would return them:
/// status, uid, resourceVersion, creationTimestamp, managedFields, server
/// labels and defaults added, quantities in other spellings.
fn as_live(items: &[Value]) -> Value {
    let mut live = Vec::new();
    for (i, o) in items.iter().enumerate() {
        let mut o = o.clone();
        let api_version = o["apiVersion"].clone();
        let meta = o["metadata"].as_object_mut().unwrap();
        meta.insert("uid".into(), json!(format!("0000-{i}")));
        meta.insert("resourceVersion".into(), json!(format!("{}", 1000 + i)));
        meta.insert("creationTimestamp".into(), json!("2026-12-05T10:00:00Z"));
        meta.insert(
            "managedFields".into(),
            json!([{"apiVersion": api_version, "fieldsType": "FieldsV1", "manager": "kubectl",
                    "operation": "Apply", "time": "2026-12-05T10:00:00Z",
                    "fieldsV1": {"f:metadata": {"f:labels": {".": {}, "f:app.kubernetes.io/managed-by": {}}}}}]),
        );
        match o["kind"].as_str().unwrap() {
            "Namespace" => {
                let name = o["metadata"]["name"].clone();
                o["metadata"]["labels"]["kubernetes.io/metadata.name"] = name;
                o["spec"] = json!({"finalizers": ["kubernetes"]});
                o["status"] = json!({"phase": "Active"});
            }
            "ResourceQuota" => {
                o["status"] = json!({"hard": o["spec"]["hard"].clone(), "used": {"pods": "0"}});
                if o["spec"]["hard"].get("requests.storage").is_some() {
                    // 10Ti, as another spelling.
                    o["spec"]["hard"]["requests.storage"] = json!("10240Gi");
                }
            }
            "LimitRange" => {
                let l = &mut o["spec"]["limits"][0];
                if l["defaultRequest"]["cpu"] == "1" {
                    l["defaultRequest"]["cpu"] = json!("1000m");
                }
                if l.get("default").is_none() {
                    // The server copies defaults it derives.
                    l["default"] = l["defaultRequest"].clone();
                }
            }
            "ValidatingWebhookConfiguration" | "MutatingWebhookConfiguration" => {
                // Defaults the server fills in.
                o["webhooks"][0]["objectSelector"] = json!({});
            }
            _ => {}
        }
        live.push(o);
    }
    // Something not Warden's: never drift.
    live.push(
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "kube-system"}}),
    );
    json!({"apiVersion": "v1", "kind": "List", "metadata": {"resourceVersion": ""}, "items": live})
}

fn diff(f: &Fixture, config: &str, live: &Value, webhook: bool) -> (i32, String, String) {
    let path = f.file("live.json", &serde_json::to_string_pretty(live).unwrap());
    let ca = f.ca();
    let mut args = vec!["k8s", "diff", "--config", config, "--live", &path];
    if webhook {
        args.extend([
            "--webhook",
            "https://warden.warden-system.svc:8443",
            "--ca-file",
            &ca,
        ]);
    }
    warden(&args)
}

#[test]
fn diff_is_clean_for_a_faithful_export_and_names_planted_drift() {
    let f = Fixture::new("warden-k8s-diff");
    let config = f.file("c.yaml", FULL);
    let (out, _) = f.render(&config, "json");
    let rendered = items(&out);
    let live = as_live(&rendered);

    let (code, out, err) = diff(&f, &config, &live, true);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.is_empty(), "{out}");
    assert!(err.contains("no drift"), "{err}");

    // The same export on stdin (`--live -`).
    let mut child = Command::new(env!("CARGO_BIN_EXE_warden"))
        .args(["k8s", "diff", "--config", &config, "--live", "-"])
        .args([
            "--webhook",
            "https://warden.warden-system.svc:8443",
            "--ca-file",
            &f.ca(),
        ])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::Write as _;
        let mut stdin = child.stdin.take().unwrap();
        stdin.write_all(live.to_string().as_bytes()).unwrap();
    }
    let piped = child.wait_with_output().unwrap();
    assert_eq!(
        piped.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&piped.stderr)
    );

    let mut planted = live.clone();
    let list = planted["items"].as_array_mut().unwrap();
    // Missing: the serving namespace.
    list.retain(|o| !(o["kind"] == "Namespace" && o["metadata"]["name"] == "serving"));
    // Changed quota number.
    let q = list
        .iter_mut()
        .find(|o| o["kind"] == "ResourceQuota" && o["metadata"]["namespace"] == "ml-research")
        .unwrap();
    q["spec"]["hard"]["requests.nvidia.com/gpu"] = json!("32");
    // Changed role binding subject.
    let rb = list
        .iter_mut()
        .find(|o| {
            o["kind"] == "RoleBinding"
                && o["metadata"]["namespace"] == "ml-research"
                && o["metadata"]["name"] == "warden-team-lead"
        })
        .unwrap();
    rb["subjects"][0]["name"] = json!("someone-else");
    // Extra: a Warden-labelled binding no longer configured; an unlabelled
    // one is not Warden's business.
    list.push(json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
        "metadata": {"name": "warden-old", "namespace": "ml-research",
                     "labels": {"app.kubernetes.io/managed-by": "warden", "warden.dev/team": "ml-research"}},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "warden-viewer"},
        "subjects": [{"kind": "Group", "apiGroup": "rbac.authorization.k8s.io", "name": "old"}]}));
    list.push(
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
        "metadata": {"name": "someone-elses", "namespace": "ml-research"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "view"},
        "subjects": [{"kind": "Group", "apiGroup": "rbac.authorization.k8s.io", "name": "x"}]}),
    );
    // A changed webhook failure policy.
    let w = list
        .iter_mut()
        .find(|o| o["kind"] == "ValidatingWebhookConfiguration")
        .unwrap();
    w["webhooks"][0]["failurePolicy"] = json!("Fail");

    let (code, out, err) = diff(&f, &config, &planted, true);
    assert_eq!(code, 1, "{out}{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        lines,
        [
            "missing: Namespace serving (rendered, not in the cluster)",
            "changed: ResourceQuota ml-research/warden spec.hard[\"requests.nvidia.com/gpu\"]: want \"16\", have \"32\"",
            "changed: RoleBinding ml-research/warden-team-lead subjects[0].name: want \"ml-leads\", have \"someone-else\"",
            "changed: ValidatingWebhookConfiguration warden webhooks[0].failurePolicy: want \"Ignore\", have \"Fail\"",
            "extra: RoleBinding ml-research/warden-old (labelled app.kubernetes.io/managed-by=warden, no longer rendered)",
        ],
        "{out}"
    );
    assert!(err.contains("5 drift(s)"), "{err}");

    // Without --webhook the registrations are neither compared nor extra.
    let (code, out, err) = diff(&f, &config, &live, false);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        err.contains("webhook registrations are not compared"),
        "{err}"
    );
}

#[test]
fn diff_refuses_bad_exports_with_exit_2() {
    let f = Fixture::new("warden-k8s-diff-bad");
    let config = f.file("c.yaml", MINIMAL);
    let cases: [(&str, String, &str); 5] = [
        (
            "not json",
            "this is not json".to_owned(),
            "is not a kubectl JSON export: not JSON: expected",
        ),
        (
            "array",
            "[]".to_owned(),
            "the top level is not a JSON object",
        ),
        (
            "no name",
            r#"{"kind":"List","items":[{"kind":"Namespace","metadata":{}}]}"#.to_owned(),
            "items[0]: no `metadata.name`",
        ),
        (
            "deep",
            format!("{{\"items\": {}{}}}", "[".repeat(65), "]".repeat(65)),
            "nests deeper than 64 levels",
        ),
        (
            "bad items",
            r#"{"kind":"List","items":{}}"#.to_owned(),
            "`items` is not a list",
        ),
    ];
    for (what, text, want) in cases {
        let live = f.file("live.json", &text);
        let (code, out, err) = warden(&["k8s", "diff", "--config", &config, "--live", &live]);
        assert_eq!(code, 2, "{what}: {out}{err}");
        assert!(err.contains(want), "{what}: {err}");
    }
    let (code, _, err) = warden(&[
        "k8s",
        "diff",
        "--config",
        &config,
        "--live",
        "/nonexistent/live.json",
    ]);
    assert_eq!(code, 2);
    assert!(
        err.contains("cannot read `/nonexistent/live.json`"),
        "{err}"
    );
    // Larger than 64 MiB (a sparse file): refused, not truncated.
    let big = f.dir.0.join("big.json");
    std::fs::File::create(&big)
        .unwrap()
        .set_len((64 << 20) + 1)
        .unwrap();
    let (code, _, err) = warden(&[
        "k8s",
        "diff",
        "--config",
        &config,
        "--live",
        big.to_str().unwrap(),
    ]);
    assert_eq!(code, 2);
    assert!(err.contains("is larger than 67108864 bytes"), "{err}");
    let bad_config = f.file("bad.yaml", "teams: {a: {nonsense: 1}}\n");
    let live = f.file("live.json", r#"{"kind":"List","items":[]}"#);
    let (code, _, err) = warden(&["k8s", "diff", "--config", &bad_config, "--live", &live]);
    assert_eq!(code, 2, "{err}");
    // An empty cluster: everything is missing, exit 1.
    let (code, out, _) = warden(&["k8s", "diff", "--config", &config, "--live", &live]);
    assert_eq!(code, 1);
    assert!(out.contains("missing: Namespace solo"), "{out}");
}
