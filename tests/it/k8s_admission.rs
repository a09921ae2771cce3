//! Issue 13, the Kubernetes door: `POST /k8s/admission` judging objects
//! made by the real kubectl (tests/fixtures/kubernetes, see its README)
//! through the one gate: the exact JSONPatch, denials with the message,
//! dry-run, DELETE, UPDATE and `scale` re-judged, controller-made objects
//! not judged twice, malformed reviews refused with a 400; and exact
//! quotas under 200 concurrent admissions (SQLite in process, and two
//! `warden serve` replicas on one PostgreSQL).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use base64::Engine as _;
use http_body_util::BodyExt;
use serde_json::{json, Value};
use tower::ServiceExt;
use warden_server::{router, AppState};
use warden_store::{AllocationState, Store};

use crate::skypilot_client::{Server, TempDir};

const CONFIG: &str = r#"
teams:
  ml:
    kubernetes:
      labels: {cost-centre: cc-1234}
      max_active_deadline_seconds: 86400
    quotas: {max_gpus: 8}
  research:
    kubernetes: {namespace: research-ns}
role_bindings:
  - {group: ml-engineers, role: ml-engineer, teams: "*"}
  - {group: finance, role: viewer, teams: "*"}
rules:
  - name: spot-in-research
    match: {doors: [k8s], teams: [research]}
    use_spot: true
  - name: tag-owner
    match: {doors: [k8s], teams: [research]}
    add_labels: {owner: "${user}"}
  - name: reviewed
    mode: warn
    match: {doors: [k8s], teams: [research]}
    deny: GPU pods in research are reviewed weekly
  - name: no-blocked
    match: {doors: [kubernetes], when: '"blocked" in request.labels'}
    deny: blocked workloads may not run
  - name: vast-only
    match: {doors: [vast]}
    deny: this rule is for the Vast door only
"#;

/// A kubectl-made object from the fixtures.
pub(crate) fn fixture(name: &str) -> Value {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/kubernetes")
        .join(name);
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// The resource (plural) of a kind, as the API server names it.
fn resource_of(kind: &str) -> (&'static str, &'static str, &'static str) {
    match kind {
        "Pod" => ("", "v1", "pods"),
        "Job" => ("batch", "v1", "jobs"),
        "CronJob" => ("batch", "v1", "cronjobs"),
        "Deployment" => ("apps", "v1", "deployments"),
        "ReplicaSet" => ("apps", "v1", "replicasets"),
        other => panic!("no resource for {other}"),
    }
}

/// An `AdmissionReview` around `object` as the API server sends it.
pub(crate) fn review(
    uid: &str,
    op: &str,
    namespace: &str,
    (user, groups): (&str, &[&str]),
    object: Option<&Value>,
    old: Option<&Value>,
    dry_run: bool,
) -> Value {
    let obj = object.or(old).unwrap();
    let kind = obj["kind"].as_str().unwrap();
    let (group, version, resource) = resource_of(kind);
    let name = obj["metadata"]["name"].as_str().unwrap_or_default();
    json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": uid,
            "kind": {"group": group, "version": version, "kind": kind},
            "resource": {"group": group, "version": version, "resource": resource},
            "requestKind": {"group": group, "version": version, "kind": kind},
            "name": name,
            "namespace": namespace,
            "operation": op,
            "userInfo": {"username": user, "uid": "u-1", "groups": groups},
            "object": object,
            "oldObject": old,
            "dryRun": dry_run,
            "options": {"apiVersion": "meta.k8s.io/v1", "kind": "CreateOptions"},
        }
    })
}

fn alice(uid: &str, op: &str, ns: &str, object: Option<&Value>, old: Option<&Value>) -> Value {
    review(
        uid,
        op,
        ns,
        ("alice", &["ml-engineers", "system:authenticated"]),
        object,
        old,
        false,
    )
}

async fn post(app: &axum::Router, body: &[u8]) -> (StatusCode, Value, String) {
    post_from(app, body, Some([127, 0, 0, 1])).await
}

/// `post` from `peer` (`None`: no peer address known).
async fn post_from(
    app: &axum::Router,
    body: &[u8],
    peer: Option<[u8; 4]>,
) -> (StatusCode, Value, String) {
    let mut req = Request::post("/k8s/admission").header("content-type", "application/json");
    if let Some(ip) = peer {
        req = req.extension(axum::extract::ConnectInfo(std::net::SocketAddr::from((
            ip, 40000,
        ))));
    }
    let resp = app
        .clone()
        .oneshot(req.body(Body::from(body.to_vec())).unwrap())
        .await
        .unwrap();
    let status = resp.status();
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    let text = String::from_utf8(bytes.to_vec()).unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::Null),
        text,
    )
}

/// Posts a review; returns its `response` (asserting a 200 and the uid).
async fn admit(app: &axum::Router, review: &Value) -> Value {
    let (status, answer, text) = post(app, review.to_string().as_bytes()).await;
    assert_eq!(status, StatusCode::OK, "{text}");
    assert_eq!(answer["apiVersion"], "admission.k8s.io/v1");
    assert_eq!(answer["kind"], "AdmissionReview");
    assert_eq!(
        answer["response"]["uid"], review["request"]["uid"],
        "{text}"
    );
    answer["response"].clone()
}

/// The JSONPatch of an allowed answer (empty when none).
fn patch_of(response: &Value) -> Value {
    assert_eq!(response["allowed"], true, "{response}");
    match response["patch"].as_str() {
        None => json!([]),
        Some(b64) => {
            assert_eq!(response["patchType"], "JSONPatch");
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(b64)
                .unwrap();
            serde_json::from_slice(&bytes).unwrap()
        }
    }
}

fn denial(response: &Value) -> String {
    assert_eq!(response["allowed"], false, "{response}");
    assert_eq!(response["status"]["code"], 403, "{response}");
    response["status"]["message"].as_str().unwrap().to_owned()
}

/// The live allocations of the door: name → GPUs.
async fn live(store: &Store) -> std::collections::BTreeMap<String, u32> {
    store
        .list_live(None)
        .await
        .unwrap()
        .into_iter()
        .filter(|a| a.door == warden_core::Door::Kubernetes)
        .map(|a| (a.name.as_str().to_owned(), a.gpus))
        .collect()
}

async fn app_with(config_text: &str) -> (TempDir, Store, Arc<AppState>, axum::Router) {
    let dir = TempDir::new("warden-k8s");
    let path = dir.0.join("warden.yaml");
    std::fs::write(
        &path,
        format!(
            "storage: sqlite://{}\n{config_text}",
            dir.0.join("w.db").display()
        ),
    )
    .unwrap();
    let config = warden_server::config::load_config(&path).unwrap();
    let store = Store::connect(config.storage.as_deref().unwrap())
        .await
        .unwrap();
    let state = AppState::with_store(config.policy, None, Some(store.clone()));
    state.apply_settings(config.settings);
    state.set_kubernetes(config.kubernetes);
    let app = router(Arc::clone(&state));
    (dir, store, state, app)
}

/// Applies a JSONPatch of `add`/`remove` ops (what Warden answers).
fn apply_patch(doc: &mut Value, patch: &Value) {
    for op in patch.as_array().unwrap() {
        let path = op["path"].as_str().unwrap();
        let (parent, last) = path.rsplit_once('/').unwrap();
        let last = last.replace("~1", "/").replace("~0", "~");
        let target = doc.pointer_mut(parent).expect("the parent exists");
        match op["op"].as_str().unwrap() {
            "add" => {
                target
                    .as_object_mut()
                    .unwrap()
                    .insert(last, op["value"].clone());
            }
            "remove" => {
                target.as_object_mut().unwrap().remove(&last);
            }
            other => panic!("unexpected op {other}"),
        }
    }
}

#[tokio::test]
async fn kubectl_objects_get_the_documented_answers() {
    let (_dir, store, _state, app) = app_with(CONFIG).await;

    // A pod with 2 H100s: allowed with the exact patch, reserved.
    let pod = fixture("pod-gpu.json");
    let r = admit(&app, &alice("uid-pod", "CREATE", "ml", Some(&pod), None)).await;
    assert_eq!(
        patch_of(&r),
        json!([
            {"op": "add", "path": "/metadata/annotations", "value": {"warden.dev/allocation": "ml/pod/train-pod"}},
            {"op": "add", "path": "/metadata/labels/cost-centre", "value": "cc-1234"},
            {"op": "add", "path": "/metadata/labels/warden.dev~1team", "value": "ml"},
            {"op": "add", "path": "/spec/activeDeadlineSeconds", "value": 86400},
        ])
    );
    let allocations = store.list_live(None).await.unwrap();
    let a = allocations
        .iter()
        .find(|a| a.name.as_str() == "ml/pod/train-pod")
        .expect("the pod's allocation");
    assert_eq!(a.door, warden_core::Door::Kubernetes);
    assert_eq!(a.team.as_str(), "ml");
    assert_eq!(a.user.as_deref(), Some("alice"));
    assert_eq!(a.gpus, 2);
    assert_eq!(a.gpu_model.as_ref().unwrap().as_str(), "H100");
    // 2 H100 on demand at the built-in $3.00.
    assert_eq!(a.hourly.to_string(), "$6.00");

    // A job: 4 pods × 1 A100-80GB (GPU feature discovery's label); its
    // template gets the labels and annotation, the job its deadline.
    let job = fixture("job-gpu.json");
    let r = admit(&app, &alice("uid-job", "CREATE", "ml", Some(&job), None)).await;
    let mut patched = job.clone();
    apply_patch(&mut patched, &patch_of(&r));
    let job_admitted = patched.clone();
    assert_eq!(patched["spec"]["activeDeadlineSeconds"], 86400);
    assert_eq!(
        patched["spec"]["template"]["metadata"]["labels"]["warden.dev/team"],
        "ml"
    );
    assert_eq!(
        patched["spec"]["template"]["metadata"]["annotations"]["warden.dev/allocation"],
        "ml/job/train-1"
    );
    assert_eq!(patched["metadata"]["labels"]["cost-centre"], "cc-1234");
    assert_eq!(
        live(&store).await,
        [("ml/job/train-1".into(), 4), ("ml/pod/train-pod".into(), 2)].into()
    );

    // A deployment of 3 × H100: 6 + 3 > 8, the quota denies it, naming the
    // limit and the fix; nothing is reserved.
    let web = fixture("deployment-gpu.json");
    let msg = denial(&admit(&app, &alice("uid-web", "CREATE", "ml", Some(&web), None)).await);
    assert!(msg.contains("[team.quotas]"), "{msg}");
    assert!(msg.contains("at most 8 concurrent GPUs per team"), "{msg}");
    assert!(msg.contains("kubectl delete"), "{msg}");
    assert_eq!(live(&store).await.len(), 2);

    // Dry run: decided by the policy alone, nothing reserved or recorded.
    let audit_before = store
        .export_audit(
            warden_store::UnixMicros::from_micros(0),
            warden_store::UnixMicros::from_micros(i64::MAX),
        )
        .await
        .unwrap()
        .len();
    let r = admit(
        &app,
        &review(
            "uid-dry",
            "CREATE",
            "ml",
            ("alice", &["ml-engineers"]),
            Some(&web),
            None,
            true,
        ),
    )
    .await;
    assert!(!patch_of(&r).as_array().unwrap().is_empty());
    assert_eq!(live(&store).await.len(), 2);
    assert_eq!(
        store
            .export_audit(
                warden_store::UnixMicros::from_micros(0),
                warden_store::UnixMicros::from_micros(i64::MAX)
            )
            .await
            .unwrap()
            .len(),
        audit_before
    );

    // DELETE of the pod ends its allocation; the deployment fits now.
    let r = admit(
        &app,
        &alice(
            "uid-del",
            "DELETE",
            "ml",
            None,
            Some(&pod_as_admitted(&pod, "ml/pod/train-pod")),
        ),
    )
    .await;
    assert_eq!(r["allowed"], true);
    assert!(!live(&store).await.contains_key("ml/pod/train-pod"));
    let r = admit(&app, &alice("uid-web2", "CREATE", "ml", Some(&web), None)).await;
    let mut web_admitted = web.clone();
    apply_patch(&mut web_admitted, &patch_of(&r));
    assert_eq!(
        live(&store).await,
        [
            ("ml/deployment/web".into(), 3),
            ("ml/job/train-1".into(), 4)
        ]
        .into()
    );

    // UPDATE to 5 replicas: 4 + 5 > 8 with the old 3 credited: denied, the
    // old allocation stays.
    let mut web5 = fixture("deployment-gpu-5.json");
    web5["metadata"] = web_admitted["metadata"].clone();
    web5["spec"]["template"]["metadata"] = web_admitted["spec"]["template"]["metadata"].clone();
    let msg = denial(
        &admit(
            &app,
            &alice("uid-up", "UPDATE", "ml", Some(&web5), Some(&web_admitted)),
        )
        .await,
    );
    assert!(msg.contains("[team.quotas]"), "{msg}");
    assert_eq!(live(&store).await["ml/deployment/web"], 3);
    // An UPDATE that keeps the footprint (a label) is allowed untouched.
    let mut relabeled = web_admitted.clone();
    relabeled["metadata"]["labels"]["tier"] = json!("gold");
    let r = admit(
        &app,
        &alice(
            "uid-lbl",
            "UPDATE",
            "ml",
            Some(&relabeled),
            Some(&web_admitted),
        ),
    )
    .await;
    assert_eq!(patch_of(&r), json!([]));
    // A `kubectl replace` that dropped Warden's marks gets them back.
    let mut replaced = web_admitted.clone();
    replaced["spec"]["template"]["metadata"]
        .as_object_mut()
        .unwrap()
        .remove("annotations");
    let r = admit(
        &app,
        &alice(
            "uid-rep",
            "UPDATE",
            "ml",
            Some(&replaced),
            Some(&web_admitted),
        ),
    )
    .await;
    assert_eq!(
        patch_of(&r),
        json!([{"op": "add", "path": "/spec/template/metadata/annotations",
                "value": {"warden.dev/allocation": "ml/deployment/web"}}])
    );
    // Without the job, 5 fit: one allocation of 5 under the same name.
    let r = admit(
        &app,
        &alice("uid-deljob", "DELETE", "ml", None, Some(&job_admitted)),
    )
    .await;
    assert_eq!(r["allowed"], true);
    let r = admit(
        &app,
        &alice("uid-up2", "UPDATE", "ml", Some(&web5), Some(&web_admitted)),
    )
    .await;
    assert_eq!(patch_of(&r), json!([]), "the marks are there already");
    assert_eq!(live(&store).await, [("ml/deployment/web".into(), 5)].into());
}

/// The pod as the cluster has it after admission (the annotation set).
fn pod_as_admitted(pod: &Value, allocation: &str) -> Value {
    let mut p = pod.clone();
    p["metadata"]["annotations"] = json!({"warden.dev/allocation": allocation});
    p
}

#[tokio::test]
async fn access_rules_controllers_and_namespaces_are_judged_as_documented() {
    let (_dir, store, _state, app) = app_with(CONFIG).await;
    let pod = fixture("pod-gpu.json");

    // A viewer may not create GPU pods, whatever the cluster's RBAC says.
    let r = admit(
        &app,
        &review(
            "uid-v",
            "CREATE",
            "ml",
            ("fay", &["finance"]),
            Some(&pod),
            None,
            false,
        ),
    )
    .await;
    let msg = denial(&r);
    assert!(msg.contains("[access]"), "{msg}");
    assert!(msg.contains("`fay` is `viewer` in team `ml`"), "{msg}");

    // Rules scoped `doors: [k8s]`: spot as the first configured spot node
    // label, labels; the Vast-only rule does not apply.
    let r = admit(
        &app,
        &alice("uid-r", "CREATE", "research-ns", Some(&pod), None),
    )
    .await;
    let mut patched = pod.clone();
    apply_patch(&mut patched, &patch_of(&r));
    assert_eq!(
        patched["spec"]["nodeSelector"],
        json!({"gpu.nvidia.com/class": "H100_NVLINK_80GB", "cloud.google.com/gke-preemptible": "true"})
    );
    assert_eq!(patched["metadata"]["labels"]["owner"], "alice");
    assert_eq!(
        r["warnings"],
        json!(["Warden [reviewed]: would deny: GPU pods in research are reviewed weekly"])
    );
    assert_eq!(patched["metadata"]["labels"]["warden.dev/team"], "research");
    assert!(patched["spec"].get("activeDeadlineSeconds").is_none());
    assert!(live(&store).await.contains_key("research-ns/pod/train-pod"));

    // A rule scoped `doors: [kubernetes]` denies with its name and message.
    let mut blocked = fixture("job-gpu.json");
    blocked["metadata"]["labels"] = json!({"blocked": "yes"});
    let msg = denial(&admit(&app, &alice("uid-b", "CREATE", "ml", Some(&blocked), None)).await);
    assert!(
        msg.contains("[no-blocked] blocked workloads may not run"),
        "{msg}"
    );

    // Pods a ReplicaSet controller makes for a judged owner: not judged again.
    let mut owned = pod.clone();
    owned["metadata"]["name"] = json!("web-7d4b9c-x2x9q");
    owned["metadata"]["ownerReferences"] = json!([{
        "apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "web-7d4b9c",
        "uid": "5f0c", "controller": true, "blockOwnerDeletion": true
    }]);
    let by_controller = review(
        "uid-c",
        "CREATE",
        "ml",
        (
            "system:serviceaccount:kube-system:replicaset-controller",
            &[
                "system:serviceaccounts",
                "system:serviceaccounts:kube-system",
            ],
        ),
        Some(&owned),
        None,
        false,
    );
    let before = live(&store).await;
    assert_eq!(patch_of(&admit(&app, &by_controller).await), json!([]));
    assert_eq!(live(&store).await, before);
    // The same pod sent by a user is judged (an ownerReference is no pass).
    let r = admit(&app, &alice("uid-c2", "CREATE", "ml", Some(&owned), None)).await;
    assert!(!patch_of(&r).as_array().unwrap().is_empty());
    assert!(live(&store).await.contains_key("ml/pod/web-7d4b9c-x2x9q"));

    // No GPUs: allowed untouched, nothing reserved.
    let before = live(&store).await;
    let r = admit(
        &app,
        &alice(
            "uid-cpu",
            "CREATE",
            "ml",
            Some(&fixture("job-cpu.json")),
            None,
        ),
    )
    .await;
    assert_eq!(patch_of(&r), json!([]));
    // A namespace of no team: GPUs denied with the fix, CPU allowed.
    let msg = denial(
        &admit(
            &app,
            &alice("uid-ns", "CREATE", "default", Some(&pod), None),
        )
        .await,
    );
    assert!(
        msg.contains("namespace `default` belongs to no team"),
        "{msg}"
    );
    let r = admit(
        &app,
        &alice(
            "uid-ns2",
            "CREATE",
            "default",
            Some(&fixture("job-cpu.json")),
            None,
        ),
    )
    .await;
    assert_eq!(patch_of(&r), json!([]));
    assert_eq!(live(&store).await, before);
}

#[tokio::test]
async fn generated_names_cronjobs_and_scale_have_stable_identities() {
    let (_dir, store, _state, app) = app_with(CONFIG).await;

    // Only a generateName: named by the review uid; DELETE finds it by the
    // annotation once the API server named the pod.
    let pod = fixture("pod-generate-name.json");
    let r = admit(
        &app,
        &alice("0f6e2d1c-aaaa", "CREATE", "ml", Some(&pod), None),
    )
    .await;
    let mut admitted = pod.clone();
    apply_patch(&mut admitted, &patch_of(&r));
    let name = "ml/pod/probe-@0f6e2d1c-aaaa";
    assert_eq!(
        admitted["metadata"]["annotations"]["warden.dev/allocation"],
        name
    );
    // No model label: judged as `ANY`.
    let a = store.list_live(None).await.unwrap();
    assert_eq!(a[0].name.as_str(), name);
    assert_eq!(a[0].gpu_model.as_ref().unwrap().as_str(), "ANY");
    admitted["metadata"]["name"] = json!("probe-7xk2p");
    admit(&app, &alice("uid-d", "DELETE", "ml", None, Some(&admitted))).await;
    assert!(live(&store).await.is_empty());
    // A dry-run DELETE ends nothing.
    let job = fixture("job-gpu.json");
    let r = admit(&app, &alice("uid-j", "CREATE", "ml", Some(&job), None)).await;
    let mut job_admitted = job.clone();
    apply_patch(&mut job_admitted, &patch_of(&r));
    // A DELETE of an object admission never marked (made before Warden, or
    // this job as it was sent) ends nothing: the usage sync does.
    admit(&app, &alice("uid-jn", "DELETE", "ml", None, Some(&job))).await;
    assert_eq!(live(&store).await["ml/job/train-1"], 4);
    admit(
        &app,
        &review(
            "uid-jd",
            "DELETE",
            "ml",
            ("alice", &["ml-engineers"]),
            None,
            Some(&job_admitted),
            true,
        ),
    )
    .await;
    assert_eq!(live(&store).await["ml/job/train-1"], 4);

    // A CronJob: the deadline cap lands on its job template.
    let cron = fixture("cronjob-gpu.json");
    let r = admit(&app, &alice("uid-cron", "CREATE", "ml", Some(&cron), None)).await;
    let mut patched = cron.clone();
    apply_patch(&mut patched, &patch_of(&r));
    assert_eq!(
        patched["spec"]["jobTemplate"]["spec"]["activeDeadlineSeconds"],
        86400
    );
    assert_eq!(
        patched["spec"]["jobTemplate"]["spec"]["template"]["metadata"]["annotations"]
            ["warden.dev/allocation"],
        "ml/cronjob/nightly"
    );

    // `kubectl scale deployment web --replicas=N` (the scale subresource).
    let web = fixture("deployment-gpu.json");
    admit(
        &app,
        &alice("uid-w", "DELETE", "ml", None, Some(&job_admitted)),
    )
    .await;
    admit(&app, &alice("uid-w2", "CREATE", "ml", Some(&web), None)).await;
    assert_eq!(live(&store).await["ml/deployment/web"], 3);
    let scale = |uid: &str, from: u32, to: u32| {
        let s = |n: u32| json!({"kind": "Scale", "apiVersion": "autoscaling/v1", "metadata": {"name": "web", "namespace": "ml"}, "spec": {"replicas": n}});
        json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": {
            "uid": uid, "kind": {"group": "autoscaling", "version": "v1", "kind": "Scale"},
            "resource": {"group": "apps", "version": "v1", "resource": "deployments"},
            "subResource": "scale", "name": "web", "namespace": "ml", "operation": "UPDATE",
            "userInfo": {"username": "alice", "groups": ["ml-engineers"]},
            "object": s(to), "oldObject": s(from), "dryRun": false}})
    };
    // 1 (cronjob) + 7 = 8 fits; 1 + 9 does not.
    assert_eq!(admit(&app, &scale("uid-s1", 3, 7)).await["allowed"], true);
    assert_eq!(live(&store).await["ml/deployment/web"], 7);
    let msg = denial(&admit(&app, &scale("uid-s2", 7, 9)).await);
    assert!(msg.contains("[team.quotas]"), "{msg}");
    assert_eq!(live(&store).await["ml/deployment/web"], 7);
    // To zero: a zero-GPU marker; up from zero through `scale`: refused.
    assert_eq!(admit(&app, &scale("uid-s3", 7, 0)).await["allowed"], true);
    assert_eq!(live(&store).await["ml/deployment/web"], 0);
    let msg = denial(&admit(&app, &scale("uid-s4", 0, 2)).await);
    assert!(msg.contains("change `spec.replicas`"), "{msg}");
}

#[tokio::test]
async fn malformed_reviews_get_a_400_never_a_5xx() {
    let (_dir, _store, _state, app) = app_with(CONFIG).await;
    let pod = fixture("pod-gpu.json");
    let good = alice("uid-1", "CREATE", "ml", Some(&pod), None);
    let with = |f: &dyn Fn(&mut Value)| {
        let mut v = good.clone();
        f(&mut v);
        v.to_string().into_bytes()
    };
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (b"".to_vec(), "empty"),
        (b"not json".to_vec(), "not JSON"),
        (b"[1,2]".to_vec(), "AdmissionReview object"),
        (
            with(&|v| v["apiVersion"] = json!("admission.k8s.io/v1beta1")),
            "admissionReviewVersions: [v1]",
        ),
        (
            with(&|v| v["kind"] = json!("Pod")),
            "expected `AdmissionReview`",
        ),
        (
            with(&|v| {
                v.as_object_mut().unwrap().remove("request");
            }),
            "no `request`",
        ),
        (
            with(&|v| {
                v["request"].as_object_mut().unwrap().remove("uid");
            }),
            "`request.uid`",
        ),
        (
            with(&|v| v["request"]["uid"] = json!(7)),
            "`request.uid` must be a string",
        ),
        (
            with(&|v| v["request"]["object"] = json!("a pod")),
            "`request.object` must be a Kubernetes object",
        ),
        (
            with(&|v| {
                v["request"].as_object_mut().unwrap().remove("object");
            }),
            "`request.object` is missing",
        ),
        (
            with(&|v| v["request"]["operation"] = json!("PATCH")),
            "`request.operation`",
        ),
        (
            with(&|v| v["request"]["userInfo"]["groups"] = json!("admins")),
            "`request.userInfo.groups`",
        ),
        (
            with(&|v| v["request"]["kind"] = json!("Pod")),
            "`request.kind`",
        ),
        (
            with(&|v| v["request"]["dryRun"] = json!("yes")),
            "`request.dryRun`",
        ),
        (
            format!("{}{}", "[".repeat(200), "]".repeat(200)).into_bytes(),
            "nests deeper",
        ),
        (
            with(&|v| {
                let mut deep = json!(1);
                for _ in 0..80 {
                    deep = json!({"a": deep});
                }
                v["request"]["object"]["metadata"]["annotations"] = deep;
            }),
            "nests deeper",
        ),
    ];
    for (body, want) in cases {
        let (status, _, text) = post(&app, &body).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{want}: {text}");
        assert!(text.contains(want), "{want}: {text}");
    }
    // Absurd sizes: over the body limit is a 413, never a 5xx.
    let big = with(&|v| {
        v["request"]["object"]["metadata"]["annotations"] = json!({"x": "y".repeat(2 << 20)});
    });
    let (status, _, _) = post(&app, &big).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    // A GPU count that is not a whole number: refused inside the review,
    // naming the field (kubectl prints it), never a 5xx.
    let mut odd = pod.clone();
    odd["spec"]["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] = json!("half");
    let (status, answer, text) = post(
        &app,
        alice("uid-odd", "CREATE", "ml", Some(&odd), None)
            .to_string()
            .as_bytes(),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{text}");
    assert_eq!(answer["response"]["allowed"], false);
    assert_eq!(answer["response"]["status"]["code"], 400);
    assert!(
        text.contains("spec.containers[0].resources.limits.nvidia.com/gpu"),
        "{text}"
    );
}

/// `n` one-GPU pods named `p<i>` for `namespace`.
fn gpu_pod(i: usize) -> Value {
    let mut pod = fixture("pod-gpu.json");
    pod["metadata"]["name"] = json!(format!("p{i}"));
    pod["spec"]["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] = json!("1");
    pod
}

const QUOTA: &str = "teams:\n  ml:\n    quotas: {max_gpus: 8}\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_hundred_concurrent_gpu_pods_against_8_gpus_grant_exactly_8_on_sqlite() {
    let (_dir, store, _state, app) = app_with(QUOTA).await;
    let tasks: Vec<_> = (0..200)
        .map(|i| {
            let app = app.clone();
            tokio::spawn(async move {
                let r = admit(
                    &app,
                    &alice(&format!("uid-{i}"), "CREATE", "ml", Some(&gpu_pod(i)), None),
                )
                .await;
                match r["allowed"].as_bool() {
                    Some(true) => true,
                    _ => {
                        let msg = r["status"]["message"].as_str().unwrap();
                        assert!(msg.contains("[team.quotas]"), "{msg}");
                        false
                    }
                }
            })
        })
        .collect();
    let mut granted = 0;
    for t in tasks {
        granted += usize::from(t.await.unwrap());
    }
    assert_eq!(granted, 8, "exactly the quota is granted");
    let live = store.list_live(None).await.unwrap();
    assert_eq!(live.iter().map(|a| a.gpus).sum::<u32>(), 8);
    assert!(live.iter().all(|a| a.state == AllocationState::Live));
}

#[test]
fn two_replicas_on_one_postgres_grant_exactly_8_gpus_of_200_pods() {
    let db = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(crate::replicas::Database::create());
    let dir = TempDir::new("warden-k8s-replicas");
    let config = dir.0.join("warden.yaml");
    std::fs::write(&config, format!("storage: {}\n{QUOTA}", db.url)).unwrap();
    let a = Server::start_with_storage(&config, &db.url);
    let b = Server::start_with_storage(&config, &db.url);
    let addrs = Arc::new([a.addr.clone(), b.addr.clone()]);
    let (granted, denied) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let threads: Vec<_> = (0..50)
        .map(|t| {
            let (addrs, granted, denied) = (
                Arc::clone(&addrs),
                Arc::clone(&granted),
                Arc::clone(&denied),
            );
            std::thread::spawn(move || {
                for i in 0..4 {
                    let n = t * 4 + i;
                    let body = alice(&format!("uid-{n}"), "CREATE", "ml", Some(&gpu_pod(n)), None)
                        .to_string();
                    let (status, text) = crate::wire::exchange(
                        &addrs[n % 2],
                        "POST",
                        "/k8s/admission",
                        &[("Content-Type", "application/json")],
                        body.as_bytes(),
                        std::time::Duration::from_secs(20),
                    )
                    .unwrap();
                    assert_eq!(status, 200, "{text}");
                    let v: Value = serde_json::from_str(&text).unwrap();
                    match v["response"]["allowed"].as_bool() {
                        Some(true) => granted.fetch_add(1, Ordering::SeqCst),
                        _ if text.contains("[team.quotas]") => {
                            denied.fetch_add(1, Ordering::SeqCst)
                        }
                        _ => panic!("unexpected answer: {text}"),
                    };
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    assert_eq!(
        granted.load(Ordering::SeqCst),
        8,
        "exactly the quota is granted"
    );
    assert_eq!(denied.load(Ordering::SeqCst), 192);
    let (code, out, err) =
        crate::cli::warden(&["allocations", "list", "--config", config.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("8 live allocation(s)"), "{out}");
    drop((a, b));
}

/// A pod as `kubectl get pods -A -o json` lists it.
fn listed_pod(ns: &str, name: &str, allocation: Option<&str>, gpus: &str) -> Value {
    let mut meta = json!({"name": name, "namespace": ns});
    if let Some(a) = allocation {
        meta["annotations"] = json!({"warden.dev/allocation": a});
    }
    json!({"apiVersion": "v1", "kind": "Pod", "metadata": meta,
           "spec": {"nodeSelector": {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"},
                    "containers": [{"name": "c", "image": "x", "resources": {"limits": {"nvidia.com/gpu": gpus}}}]},
           "status": {"phase": "Running"}})
}

#[tokio::test]
async fn the_sync_ends_what_is_gone_adopts_what_runs_and_reports_include_the_door() {
    let (dir, store, _state, app) =
        app_with(&format!("kubernetes: {{sync_grace_seconds: 0}}\n{CONFIG}")).await;
    let cfg = dir.0.join("warden.yaml");
    let cfg = cfg.to_str().unwrap();
    admit(
        &app,
        &alice(
            "uid-p",
            "CREATE",
            "ml",
            Some(&fixture("pod-gpu.json")),
            None,
        ),
    )
    .await;
    admit(
        &app,
        &alice(
            "uid-w",
            "CREATE",
            "ml",
            Some(&fixture("deployment-gpu.json")),
            None,
        ),
    )
    .await;
    assert_eq!(
        live(&store).await,
        [
            ("ml/deployment/web".into(), 3),
            ("ml/pod/train-pod".into(), 2)
        ]
        .into()
    );
    // The deployment's 3 pods run; the pod is gone; a GPU pod Warden never
    // saw runs in `ml`; another in a namespace of no team.
    let pods = json!({"apiVersion": "v1", "kind": "List", "items": [
        listed_pod("ml", "web-7d4b9c-a", Some("ml/deployment/web"), "1"),
        listed_pod("ml", "web-7d4b9c-b", Some("ml/deployment/web"), "1"),
        listed_pod("ml", "web-7d4b9c-c", Some("ml/deployment/web"), "1"),
        listed_pod("ml", "rogue", None, "2"),
        listed_pod("sandbox", "stray", None, "1"),
    ]});
    let file = dir.0.join("pods.json");
    std::fs::write(&file, pods.to_string()).unwrap();
    let (code, out, err) = crate::cli::warden(&[
        "sync",
        "k8s",
        "--config",
        cfg,
        "--pods",
        file.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{out}{err}");
    let report: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        report["ended"],
        json!([{"name": "ml/pod/train-pod", "team": "ml", "gpus": 2}])
    );
    assert_eq!(report["adopted"][0]["workload"]["name"], "ml/pod/rogue");
    assert_eq!(report["adopted"][0]["hourly_usd"], "6.00");
    assert_eq!(report["skipped"][0]["name"], "sandbox/pod/stray");
    assert_eq!(
        live(&store).await,
        [("ml/deployment/web".into(), 3), ("ml/pod/rogue".into(), 2)].into()
    );
    // A second sync changes nothing.
    let (code, out, _) = crate::cli::warden(&[
        "sync",
        "k8s",
        "--config",
        cfg,
        "--pods",
        file.to_str().unwrap(),
    ]);
    assert_eq!(code, 0);
    let again: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        (
            again["ended"].as_array().unwrap().len(),
            again["adopted"].as_array().unwrap().len()
        ),
        (0, 0)
    );

    // Reports, budgets and chargeback count the `kubernetes` door as any:
    // one hour of 2 H100 ($6.00) in November.
    let at = |t: &str| {
        warden_store::UnixMicros::from_micros(
            t.parse::<jiff::Timestamp>().unwrap().as_microsecond(),
        )
    };
    let request = warden_store::AllocationRequest {
        door: warden_core::Door::Kubernetes,
        team: warden_core::TeamName::parse("ml").unwrap(),
        user: Some("alice".into()),
        name: warden_store::AllocationName::parse("ml/job/november").unwrap(),
        gpu_model: Some(warden_core::GpuModel::parse("H100").unwrap()),
        gpus: 2,
        hourly: warden_core::Usd::from_dollars(6.0).unwrap(),
        context: None,
    };
    let granted = store
        .reserve(&request, &[], at("2026-11-10T10:00:00Z"))
        .await
        .unwrap();
    let warden_store::ReserveOutcome::Granted { allocation_id, .. } = granted else {
        panic!("{granted:?}")
    };
    store
        .end(
            &warden_store::EndTarget::Id(allocation_id),
            at("2026-11-10T11:00:00Z"),
        )
        .await
        .unwrap();
    let (code, out, err) = crate::cli::warden(&[
        "report",
        "chargeback",
        "--config",
        cfg,
        "--month",
        "2026-11",
        "--format",
        "csv",
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.lines()
            .any(|l| l == "2026-11,charge,ml,H100,1,2.00,6.00"),
        "{out}"
    );
    let (code, out, err) = crate::cli::warden(&[
        "report", "spend", "--config", cfg, "--month", "2026-11", "--by", "team", "--format", "csv",
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.lines()
            .any(|l| l.starts_with("ml,") && l.contains("6.00")),
        "{out}"
    );
    // Replay names why the door's decisions are not re-decided, rather
    // than calling them older than Warden's recorded inputs; the adopted
    // pod was never decided and is not one of them.
    let (code, out, err) = crate::cli::warden(&["replay", "--config", cfg, "--since", "1h"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("replayed 2 recorded decisions")
            && out.contains("2 door:kubernetes: door `kubernetes` cannot be replayed yet"),
        "{out}"
    );
    assert!(
        !out.contains("without_input") && !out.contains("door::"),
        "{out}"
    );
}

/// What the stand-in API server saw and how it answers.
#[derive(Default)]
struct FakeApi {
    /// The `Authorization` header of every request.
    seen: std::sync::Mutex<Vec<String>>,
    /// `exec-t0k-456` is answered 401 (as an expired token would be).
    revoked: std::sync::atomic::AtomicBool,
}

/// A stand-in API server: `GET /api/v1/pods` in two pages, for the bearer
/// tokens `t0k-123`, `exec-t0k-456` and `exec-t0k-789` only (as the real one
/// answers a forbidden list).
async fn fake_api_server() -> (String, Arc<FakeApi>) {
    use axum::extract::State;
    use axum::http::{HeaderMap, Uri};
    async fn pods(
        State(fake): State<Arc<FakeApi>>,
        headers: HeaderMap,
        uri: Uri,
    ) -> (StatusCode, String) {
        let q: std::collections::HashMap<String, String> =
            form_urlencoded::parse(uri.query().unwrap_or_default().as_bytes())
                .into_owned()
                .collect();
        let auth = headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        fake.seen.lock().unwrap().push(auth.clone());
        if auth == "Bearer exec-t0k-456" && fake.revoked.load(Ordering::SeqCst) {
            return (
                StatusCode::UNAUTHORIZED,
                json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
                       "message": "Unauthorized", "reason": "Unauthorized", "code": 401})
                .to_string(),
            );
        }
        if ![
            "Bearer t0k-123",
            "Bearer exec-t0k-456",
            "Bearer exec-t0k-789",
        ]
        .contains(&auth.as_str())
        {
            return (
                StatusCode::FORBIDDEN,
                json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
                       "message": "pods is forbidden: User \"system:anonymous\" cannot list resource \"pods\" in API group \"\" at the cluster scope",
                       "reason": "Forbidden", "code": 403})
                .to_string(),
            );
        }
        assert_eq!(q.get("limit").map(String::as_str), Some("500"));
        let page = match q.get("continue").map(String::as_str) {
            None => {
                json!({"kind": "PodList", "apiVersion": "v1", "metadata": {"continue": "page-2"},
                "items": [listed_pod("ml", "web-a", Some("ml/deployment/web"), "1"),
                          listed_pod("ml", "web-b", Some("ml/deployment/web"), "1")]})
            }
            Some("page-2") => json!({"kind": "PodList", "apiVersion": "v1", "metadata": {},
                "items": [listed_pod("ml", "rogue", None, "2")]}),
            Some(other) => panic!("unexpected continue token {other}"),
        };
        (StatusCode::OK, page.to_string())
    }
    let fake = Arc::new(FakeApi::default());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let router = axum::Router::new()
        .route("/api/v1/pods", axum::routing::get(pods))
        .with_state(Arc::clone(&fake));
    tokio::spawn(async move {
        axum::serve(listener, router).await.unwrap();
    });
    (format!("http://{addr}"), fake)
}

/// A kubeconfig of one context for the API server at `server`.
fn kubeconfig_for(server: &str, user: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Config\ncurrent-context: c\n\
         contexts: [{{name: c, context: {{cluster: k, user: w}}}}]\n\
         clusters: [{{name: k, cluster: {{server: \"{server}\"}}}}]\n\
         users: [{{name: w, user: {user}}}]\n"
    )
}

#[tokio::test]
async fn the_periodic_sync_lists_the_pods_through_the_kubeconfig() {
    use warden_server::doors::kubernetes::{cluster::ClusterClient, sync};
    let (dir, store, state, _app) = app_with(CONFIG).await;
    let (server, fake) = fake_api_server().await;
    std::fs::write(dir.0.join("token"), "t0k-123\n").unwrap();
    let path = dir.0.join("kubeconfig");
    std::fs::write(&path, kubeconfig_for(&server, "{tokenFile: token}")).unwrap();
    let client = ClusterClient::from_kubeconfig(&path).unwrap();
    let now = warden_store::UnixMicros::from_system_time(std::time::SystemTime::now());
    let report = sync::poll_once(&client, &store, &state.policy(), &state.kubernetes(), now)
        .await
        .unwrap();
    let adopted: Vec<(&str, u32)> = report
        .adopted
        .iter()
        .map(|a| (a.workload.name.as_str(), a.workload.gpus))
        .collect();
    assert_eq!(adopted, [("ml/deployment/web", 2), ("ml/pod/rogue", 2)]);
    assert_eq!(
        live(&store).await,
        [("ml/deployment/web".into(), 2), ("ml/pod/rogue".into(), 2)].into()
    );
    assert_eq!(fake.seen.lock().unwrap().as_slice(), ["Bearer t0k-123"; 2]);

    // A token the server refuses (the file is read again at every sync):
    // the error says what Warden needs.
    std::fs::write(dir.0.join("token"), "wrong\n").unwrap();
    let e = sync::poll_once(&client, &store, &state.policy(), &state.kubernetes(), now)
        .await
        .unwrap_err();
    assert!(
        e.contains("HTTP 403") && e.contains("pods is forbidden") && e.contains("ClusterRole"),
        "{e}"
    );

    // An exec plugin's token (`aws eks get-token` and the like): kube-rs
    // runs the plugin; the client is kept from one sync to the next, and
    // made again (the plugin run again) when the server answers 401.
    let plugin = dir.0.join("plugin.sh");
    std::fs::write(
        &plugin,
        "echo run >> \"$(dirname \"$0\")/plugin-runs\"\n\
         printf '{\"apiVersion\": \"client.authentication.k8s.io/v1\", \"kind\": \"ExecCredential\", \"status\": {\"token\": \"%s\"}}' \"$(cat \"$(dirname \"$0\")/plugin-token\")\"\n",
    )
    .unwrap();
    std::fs::write(dir.0.join("plugin-token"), "exec-t0k-456").unwrap();
    let runs = || {
        std::fs::read_to_string(dir.0.join("plugin-runs"))
            .unwrap_or_default()
            .lines()
            .count()
    };
    std::fs::write(
        &path,
        kubeconfig_for(
            &server,
            &format!(
                "{{exec: {{apiVersion: client.authentication.k8s.io/v1, command: sh, args: [\"{}\"]}}}}",
                plugin.display()
            ),
        ),
    )
    .unwrap();
    let client = ClusterClient::from_kubeconfig(&path).unwrap();
    assert_eq!(runs(), 0, "the plugin runs at the first sync, not before");
    // What the API server was sent as `Authorization` during one sync.
    let sent_by_a_sync = async || {
        fake.seen.lock().unwrap().clear();
        sync::poll_once(&client, &store, &state.policy(), &state.kubernetes(), now)
            .await
            .unwrap();
        fake.seen.lock().unwrap().clone()
    };
    assert_eq!(sent_by_a_sync().await, ["Bearer exec-t0k-456"; 2]);
    let first = runs();
    assert!(first > 0);
    sync::poll_once(&client, &store, &state.policy(), &state.kubernetes(), now)
        .await
        .unwrap();
    assert_eq!(runs(), first, "the client is kept");
    fake.revoked.store(true, Ordering::SeqCst);
    std::fs::write(dir.0.join("plugin-token"), "exec-t0k-789").unwrap();
    assert_eq!(
        sent_by_a_sync().await,
        [
            "Bearer exec-t0k-456",
            "Bearer exec-t0k-789",
            "Bearer exec-t0k-789"
        ]
    );
    assert!(runs() > first);

    // A plugin that fails: the sync's error says so.
    std::fs::write(
        &path,
        kubeconfig_for(&server, "{exec: {command: \"false\"}}"),
    )
    .unwrap();
    let client = ClusterClient::from_kubeconfig(&path).unwrap();
    let e = sync::poll_once(&client, &store, &state.policy(), &state.kubernetes(), now)
        .await
        .unwrap_err();
    assert!(
        e.contains("cannot make the client") && e.contains("false"),
        "{e}"
    );

    // What a kubeconfig may not use is refused with the reason.
    std::fs::write(
        &path,
        kubeconfig_for(&server, "{token: x}")
            .replace("server:", "insecure-skip-tls-verify: true, server:"),
    )
    .unwrap();
    let e = ClusterClient::from_kubeconfig(&path).unwrap_err();
    assert!(e.contains("insecure-skip-tls-verify"), "{e}");
}

/// A stand-in API server that answers every request with `head` and then
/// `chunks` chunks of 1 MiB (chunked encoding), on raw TCP.
async fn oversized_api_server(head: &'static str, chunks: usize) -> String {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut request = Vec::new();
                let mut buf = [0u8; 4096];
                while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                    match socket.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => request.extend_from_slice(&buf[..n]),
                    }
                }
                if socket.write_all(head.as_bytes()).await.is_err() {
                    return;
                }
                let chunk = format!("100000\r\n{}\r\n", " ".repeat(1 << 20));
                for _ in 0..chunks {
                    if socket.write_all(chunk.as_bytes()).await.is_err() {
                        return;
                    }
                }
                let _ = socket.write_all(b"0\r\n\r\n").await;
            });
        }
    });
    format!("http://{addr}")
}

/// A page over 64 MiB is refused, whether its `Content-Length` says so or
/// it only turns out so while being read.
#[tokio::test]
async fn a_page_over_the_byte_limit_is_refused_naming_the_limit() {
    use warden_server::doors::kubernetes::cluster::{ClusterClient, MAX_PAGE_BYTES};
    let dir = TempDir::new("warden-k8s-page-limit");
    let path = dir.0.join("kubeconfig");
    let declared = oversized_api_server(
        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 67108865\r\n\r\n",
        0,
    )
    .await;
    let chunked = oversized_api_server(
        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n",
        MAX_PAGE_BYTES / (1 << 20) + 1,
    )
    .await;
    for server in [declared, chunked] {
        std::fs::write(&path, kubeconfig_for(&server, "{token: t0k-123}")).unwrap();
        let client = ClusterClient::from_kubeconfig(&path).unwrap();
        let e = client.pods().await.unwrap_err();
        assert_eq!(
            e,
            format!("a page of the pod list is larger than {MAX_PAGE_BYTES} bytes"),
            "{server}"
        );
    }
}

#[test]
fn serve_refuses_a_kubeconfig_it_cannot_use_naming_the_fix() {
    let dir = TempDir::new("warden-k8s-kubeconfig");
    std::fs::write(
        dir.0.join("kubeconfig"),
        "apiVersion: v1\nkind: Config\ncurrent-context: c\n\
         contexts: [{name: c, context: {cluster: k, user: w}}]\n\
         clusters: [{name: k, cluster: {server: \"https://127.0.0.1:6443\", insecure-skip-tls-verify: true}}]\n\
         users: [{name: w, user: {token: x}}]\n",
    )
    .unwrap();
    let config = dir.0.join("warden.yaml");
    std::fs::write(
        &config,
        format!(
            "storage: sqlite://{}\nkubernetes: {{kubeconfig: kubeconfig}}\n{QUOTA}",
            dir.0.join("w.db").display()
        ),
    )
    .unwrap();
    let (code, _, err) = crate::cli::warden(&[
        "serve",
        "--config",
        config.to_str().unwrap(),
        "--listen",
        "127.0.0.1:0",
    ]);
    assert_ne!(code, 0, "{err}");
    assert!(
        err.contains("kubernetes: kubeconfig")
            && err.contains("`insecure-skip-tls-verify` is refused: name the cluster's CA"),
        "{err}"
    );
}

/// A review names the user it is for: only a trusted API server address
/// (`kubernetes.trusted_api_servers`, default loopback) may send one.
/// From anywhere else it is a 403 naming the key, and nothing is reserved.
#[tokio::test]
async fn reviews_are_judged_only_from_trusted_api_servers() {
    let (_dir, store, _state, app) = app_with(CONFIG).await;
    let pod = fixture("pod-gpu.json");
    let body = alice("uid-forged", "CREATE", "ml", Some(&pod), None).to_string();
    for peer in [Some([10, 0, 0, 9]), None] {
        let (status, _, text) = post_from(&app, body.as_bytes(), peer).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{text}");
        assert!(
            text.contains("kubernetes.trusted_api_servers")
                && text.contains("only the cluster's API server"),
            "{text}"
        );
    }
    assert!(store.list_live(None).await.unwrap().is_empty());

    // A configured address is trusted (and loopback no longer is).
    let (_dir, _store, _state, app) = app_with(&format!(
        "{CONFIG}kubernetes:\n  trusted_api_servers: [10.0.0.0/24]\n"
    ))
    .await;
    let (status, _, text) = post_from(&app, body.as_bytes(), Some([10, 0, 0, 9])).await;
    assert_eq!(status, StatusCode::OK, "{text}");
    let (status, _, text) = post(&app, body.as_bytes()).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{text}");
}

/// A rule that reads the native document (`task`, here the pod) judges
/// the object itself at this door: the door only copies the object into
/// the request when a rule reads it, and must when one does.
#[tokio::test]
async fn rules_that_read_the_task_see_the_kubernetes_object() {
    let (_dir, store, _state, app) = app_with(
        r#"
teams:
  ml:
    quotas: {max_gpus: 8}
rules:
  - name: no-pytorch-latest
    match: {doors: [kubernetes], when: 'task.spec.containers[0].image.endsWith(":latest")'}
    deny: pin the image to a version
"#,
    )
    .await;
    let pinned = fixture("pod-gpu.json");
    let response = admit(&app, &alice("t-1", "CREATE", "ml", Some(&pinned), None)).await;
    assert_eq!(response["allowed"], true, "{response}");
    let mut latest = fixture("pod-gpu.json");
    latest["metadata"]["name"] = json!("latest");
    latest["spec"]["containers"][0]["image"] = json!("pytorch/pytorch:latest");
    let response = admit(&app, &alice("t-2", "CREATE", "ml", Some(&latest), None)).await;
    let message = denial(&response);
    assert!(message.contains("no-pytorch-latest"), "{message}");
    assert!(message.contains("pin the image to a version"), "{message}");
    assert_eq!(live(&store).await.len(), 1);
}
