//! Normalization: an admission review as the core's launch request, and
//! the judging of CREATE, UPDATE, `scale` and DELETE through the gate (see
//! the door's module documentation for the semantics).

use std::time::Instant;

use serde_json::{Map, Value};
use warden_core::{Accelerator, Door, GpuModel, LaunchRequest, Principal, Resource};

use super::patch::{self, Patch, ALLOCATION_ANNOTATION};
use super::wire::{self, Review};
use super::workload::{self, WorkloadAsk, ANY_MODEL};
use super::{finish_resize, live_named};
use crate::app::AppState;
use crate::config::KubernetesConfig;
use crate::error::DoorError;
use crate::gate::{Admission, Admitted, Applied};

/// User names of Kubernetes' own controllers, whose objects made for a
/// judged owner are not judged again.
fn is_cluster_controller(user: Option<&str>) -> bool {
    user.is_some_and(|u| {
        u.starts_with("system:serviceaccount:kube-system:") || u == "system:kube-controller-manager"
    })
}

/// The allocation name an object of `kind` named `name` (or, with only a
/// `generateName`, made by review `uid`) in `namespace` has.
pub fn allocation_name(
    namespace: &str,
    kind: &str,
    object: &Map<String, Value>,
    review: &Review,
) -> String {
    let meta = object.get("metadata");
    let name = meta
        .and_then(|m| m.get("name"))
        .and_then(Value::as_str)
        .filter(|n| !n.is_empty())
        .unwrap_or(review.name.as_str());
    let kind = kind.to_ascii_lowercase();
    if !name.is_empty() {
        return format!("{namespace}/{kind}/{name}");
    }
    let generate = meta
        .and_then(|m| m.get("generateName"))
        .and_then(Value::as_str)
        .unwrap_or_default();
    format!("{namespace}/{kind}/{generate}@{}", review.uid)
}

/// The allocation an existing object is counted under: its
/// [`ALLOCATION_ANNOTATION`] when that is its own (its name, or its
/// `generateName` and a review uid), else the name it would get.
pub fn existing_allocation(
    namespace: &str,
    kind: &str,
    object: &Map<String, Value>,
    review: &Review,
) -> String {
    let derived = allocation_name(namespace, kind, object, review);
    let meta = object.get("metadata");
    let annotated = meta
        .and_then(|m| m.get("annotations"))
        .and_then(|a| a.get(ALLOCATION_ANNOTATION))
        .and_then(Value::as_str);
    let generate = meta
        .and_then(|m| m.get("generateName"))
        .and_then(Value::as_str)
        .filter(|g| !g.is_empty());
    match (annotated, generate) {
        (Some(a), _) if a == derived => derived,
        (Some(a), Some(g))
            if a.starts_with(&format!("{namespace}/{}/{g}@", kind.to_ascii_lowercase())) =>
        {
            a.to_owned()
        }
        _ => derived,
    }
}

/// The allocation a DELETE ends: the one the object was admitted as.
pub fn deleted_allocation(config: &KubernetesConfig, review: &Review) -> Option<String> {
    let api_version = review.api_version();
    if review.sub_resource.is_some() || !workload::is_judged(config, &api_version, &review.kind) {
        return None;
    }
    let Some(old) = review.old_object.as_ref().and_then(Value::as_object) else {
        // An API server that sends no `oldObject`: the name says it.
        return Some(format!(
            "{}/{}/{}",
            review.namespace,
            review.kind.to_ascii_lowercase(),
            review.name
        ));
    };
    // Only an object admission marked as its own allocation has one (a
    // Deployment's pods carry the Deployment's name): deleting anything
    // else costs no store write. What Warden never admitted (made before
    // it, or while the webhook was ignored) is ended by the usage sync.
    let own = existing_allocation(&review.namespace, &review.kind, old, review);
    let marked = old
        .get("metadata")
        .and_then(|m| m.get("annotations"))
        .and_then(|a| a.get(ALLOCATION_ANNOTATION))
        .and_then(Value::as_str)
        == Some(own.as_str());
    marked.then_some(own)
}

/// The normalized request for `ask` in `team`. Its `task` is a copy of
/// `object` when the policy reads it (`needs_task`), else left empty: the
/// copy is the costliest part of a request, and nothing else reads it.
fn launch_request(
    review: &Review,
    team: &str,
    ask: &WorkloadAsk,
    object: Option<&Map<String, Value>>,
    target: &str,
) -> Result<LaunchRequest, DoorError> {
    let mut req = LaunchRequest::new(Door::Kubernetes, "launch");
    req.target = Some(target.to_owned());
    req.principal = Principal {
        user: review.username.clone(),
        team: Some(team.to_owned()),
        workspace: None,
        role: None,
        groups: review.groups.clone(),
    };
    req.num_nodes = ask.gpu_pods;
    let models = if ask.models.is_empty() {
        vec![GpuModel::parse(ANY_MODEL).map_err(|e| DoorError::Internal(e.to_string()))?]
    } else {
        ask.models.clone()
    };
    req.resources = models
        .into_iter()
        .map(|model| Resource {
            accelerator: (ask.gpus_per_pod > 0).then_some(Accelerator {
                model,
                count: ask.gpus_per_pod,
            }),
            cloud: Some("kubernetes".to_owned()),
            region: Some(review.namespace.clone()),
            use_spot: ask.spot,
            image_id: ask.image.clone(),
            ..Resource::default()
        })
        .collect();
    req.labels = ask.labels.clone();
    if let Some(object) = object {
        req.task = Value::Object(object.clone());
    }
    Ok(req)
}

/// Whether two asks take the same GPUs.
fn same_footprint(a: &WorkloadAsk, b: &WorkloadAsk) -> bool {
    (a.gpu_pods, a.gpus_per_pod, &a.models, a.spot)
        == (b.gpu_pods, b.gpus_per_pod, &b.models, b.spot)
}

/// CREATE or UPDATE of an object.
pub async fn judge(
    state: &AppState,
    config: &KubernetesConfig,
    review: &Review,
    request_id: &str,
    started: Instant,
) -> Result<wire::Answer, DoorError> {
    let allow = || Ok(wire::allow(&review.uid, &Patch::none(), &[]));
    let api_version = review.api_version();
    if !workload::is_judged(config, &api_version, &review.kind) {
        return allow();
    }
    let Some(value) = review.object.as_ref() else {
        return allow();
    };
    let Some(object) = value.as_object() else {
        return allow();
    };
    if let Some((owner_version, owner_kind, _)) = workload::controller_owner(object) {
        let builtin_owner = workload::is_builtin(&owner_version, &owner_kind);
        if workload::is_judged(config, &owner_version, &owner_kind)
            && (!builtin_owner || is_cluster_controller(review.username.as_deref()))
        {
            return allow();
        }
    }
    let ask = workload::workload_ask(config, &api_version, &review.kind, value)?;
    let old_ask = match (&review.old_object, review.operation) {
        (Some(old), wire::Operation::Update) => Some(workload::workload_ask(
            config,
            &api_version,
            &review.kind,
            old,
        )?),
        _ => None,
    };
    let asks_gpus = ask.gpus_per_pod > 0;
    let policy = state.policy();
    let name = match &review.old_object {
        Some(Value::Object(old)) if review.operation == wire::Operation::Update => {
            existing_allocation(&review.namespace, &review.kind, old, review)
        }
        _ => allocation_name(&review.namespace, &review.kind, object, review),
    };
    if let Some(old) = &old_ask {
        if same_footprint(old, &ask) {
            // Not judged again; Warden's marks are kept (a `kubectl replace`
            // may have dropped them, and the pods' annotation is how the
            // sync counts them).
            let Some(team) = policy.team_of_namespace(&review.namespace) else {
                return allow();
            };
            if !asks_gpus {
                return allow();
            }
            let fixed = patch::Fixed {
                team: team.name.as_str(),
                labels: &team.kubernetes.labels,
                max_deadline: team.kubernetes.max_active_deadline_seconds,
                allocation: &name,
                kind: &review.kind,
            };
            let (patch, _) = patch::patch_for(config, &[], &fixed, &ask.templates, value);
            return Ok(wire::allow(&review.uid, &patch, &[]));
        }
        if !asks_gpus {
            // No GPUs any more: the allocation ends with the old size.
            if !review.dry_run {
                if let Some(a) = live_named(state, &name).await? {
                    if let Some(store) = state.store() {
                        store
                            .end_by(
                                &warden_store::EndTarget::Id(a.id),
                                Some("kubernetes:update"),
                                super::now(),
                            )
                            .await
                            .map_err(super::store_error)?;
                    }
                }
            }
            return allow();
        }
    }
    if !asks_gpus {
        return allow();
    }
    let Some(team) = policy.team_of_namespace(&review.namespace) else {
        return Ok(wire::deny(
            &review.uid,
            403,
            &format!(
                "Warden denied this request: namespace `{}` belongs to no team, so its GPUs would be nobody's spend; run GPU workloads in a team's namespace (`teams.<team>.kubernetes.namespace`), or ask a platform admin to give this namespace to a team",
                review.namespace
            ),
        ));
    };
    let replaces = match &old_ask {
        Some(_) if !review.dry_run => live_named(state, &name).await?,
        _ => None,
    };
    let target = match &replaces {
        Some(_) => format!("{name}#{}", review.uid),
        None => name.clone(),
    };
    let task = policy.needs_task().then_some(object);
    let req = launch_request(review, team.name.as_str(), &ask, task, &target)?;
    let fixed = patch::Fixed {
        team: team.name.as_str(),
        labels: &team.kubernetes.labels,
        max_deadline: team.kubernetes.max_active_deadline_seconds,
        allocation: &name,
        kind: &review.kind,
    };
    let apply = |d: &warden_core::Decision| {
        let (patch, not_applicable) =
            patch::patch_for(config, &d.mutations, &fixed, &ask.templates, value);
        Ok(Applied {
            value: patch,
            not_applicable,
        })
    };
    if review.dry_run {
        let (decision, applied) = crate::gate::decide(&policy, &req, apply)?;
        return Ok(match applied {
            Some(applied) => wire::allow(&review.uid, &applied.value, &warnings(&decision)),
            None => wire::deny(&review.uid, 403, &decision.denial_message()),
        });
    }
    let admission = Admission {
        door: "kubernetes",
        request_id,
        request: &req,
        key: None,
        input: None,
        started,
        replaces: replaces.as_ref(),
    };
    match crate::gate::admit(state, &policy, admission, apply).await? {
        Admitted::Allowed {
            decision, applied, ..
        } => {
            if let Some(old) = &replaces {
                finish_resize(state, old, &target, &name).await?;
            }
            Ok(wire::allow(&review.uid, &applied, &warnings(&decision)))
        }
        Admitted::Denied { message, .. } => Ok(wire::deny(&review.uid, 403, &message)),
    }
}

/// The decision's warnings, as kubectl prints them.
fn warnings(d: &warden_core::Decision) -> Vec<String> {
    d.reasons
        .iter()
        .filter(|r| r.effect == warden_core::Effect::Warn)
        .map(|r| format!("Warden [{}]: {}", r.rule, r.message))
        .collect()
}

/// The workload kind a `scale` review is about, from its resource.
fn scaled_kind(review: &Review) -> Option<&'static str> {
    match review.resource.as_str() {
        "deployments" => Some("Deployment"),
        "statefulsets" => Some("StatefulSet"),
        "replicasets" => Some("ReplicaSet"),
        _ => None,
    }
}

fn replicas(o: Option<&Value>) -> Option<u32> {
    o?.get("spec")?
        .get("replicas")
        .and_then(Value::as_u64)
        .and_then(|n| u32::try_from(n).ok())
}

/// An UPDATE of a workload's `scale` subresource.
pub async fn scale(
    state: &AppState,
    _config: &KubernetesConfig,
    review: &Review,
    request_id: &str,
    started: Instant,
) -> Result<wire::Answer, DoorError> {
    let allow = || Ok(wire::allow(&review.uid, &Patch::none(), &[]));
    let Some(kind) = scaled_kind(review) else {
        return allow();
    };
    let name = format!(
        "{}/{}/{}",
        review.namespace,
        kind.to_ascii_lowercase(),
        review.name
    );
    let Some(live) = live_named(state, &name).await? else {
        // Not a GPU workload Warden reserved for.
        return allow();
    };
    let (Some(before), Some(after)) = (
        replicas(review.old_object.as_ref()),
        replicas(review.object.as_ref()),
    ) else {
        return Err(DoorError::bad(
            "a scale review must carry `spec.replicas` in `object` and `oldObject`",
        ));
    };
    if after == before {
        return allow();
    }
    if before == 0 || live.gpus == 0 || live.gpus % before != 0 {
        return Ok(wire::deny(
            &review.uid,
            403,
            &format!(
                "Warden denied this request: `{name}` asks for GPUs and Warden cannot tell its size from a scale request alone; change `spec.replicas` of the {kind} itself (`kubectl patch {} {} -p '{{\"spec\":{{\"replicas\":{after}}}}}'`), which Warden judges against its pod template",
                kind.to_ascii_lowercase(),
                review.name
            ),
        ));
    }
    let policy = state.policy();
    let per_pod = live.gpus / before;
    let ask = WorkloadAsk {
        gpu_pods: after,
        gpus_per_pod: per_pod,
        models: live.gpu_model.clone().into_iter().collect(),
        spot: false,
        image: None,
        labels: Default::default(),
        templates: Vec::new(),
    };
    let target = format!("{name}#{}", review.uid);
    let empty = Map::new();
    let task = policy.needs_task().then(|| {
        review
            .object
            .as_ref()
            .and_then(Value::as_object)
            .unwrap_or(&empty)
    });
    let req = launch_request(review, live.team.as_str(), &ask, task, &target)?;
    let no_patch = |_: &warden_core::Decision| Ok(Applied::all(Patch::none()));
    if review.dry_run {
        let (decision, applied) = crate::gate::decide(&policy, &req, no_patch)?;
        return Ok(match applied {
            Some(_) => wire::allow(&review.uid, &Patch::none(), &warnings(&decision)),
            None => wire::deny(&review.uid, 403, &decision.denial_message()),
        });
    }
    let admission = Admission {
        door: "kubernetes",
        request_id,
        request: &req,
        key: None,
        input: None,
        started,
        replaces: Some(&live),
    };
    match crate::gate::admit(state, &policy, admission, no_patch).await? {
        Admitted::Allowed { decision, .. } => {
            finish_resize(state, &live, &target, &name).await?;
            Ok(wire::allow(
                &review.uid,
                &Patch::none(),
                &warnings(&decision),
            ))
        }
        Admitted::Denied { message, .. } => Ok(wire::deny(&review.uid, 403, &message)),
    }
}
