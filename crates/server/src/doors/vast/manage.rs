//! Start, stop, label and destroy: only the caller's own instances, each
//! kept in step with the ledger.
//!
//! - **stop** ends the instance's allocation once the upstream stopped it
//!   (a stopped instance holds no GPU; Vast bills its disk only, which
//!   Warden does not count);
//! - **start** is a launch again: decided by the policy and reserved
//!   against quotas and budgets (a team over budget cannot restart), then
//!   passed on; an upstream refusal voids the new allocation;
//! - **destroy** runs the optional pre-destroy command over SSH (audited,
//!   bounded by its time-out; its failure does not stop the destroy), then
//!   ends the allocation once the upstream destroyed the instance (or says
//!   it is gone);
//! - bulk forms (`PUT /instances/` with `ids`, `DELETE /instances/` with
//!   `instance_ids`) are governed id by id, after checking that every id is
//!   the caller's.
//!
//! An unclear upstream failure (5xx, time-out) leaves the ledger as it was;
//! the reconciler brings it in step with what the upstream then lists.

use std::process::Stdio;
use std::time::Instant;

use serde_json::{json, Value};
use warden_core::access::{Resource as AccessResource, Verb};
use warden_core::{Accelerator, Door, LaunchRequest, Principal, Quote, Resource};
use warden_store::{AllocationName, EndTarget, Write};

use super::instances::{self, ssh_address};
use super::search::model_of;
use super::upstream::Row;
use super::{now, owners, store_error, upstream_error, Caller, DoorError, VastDoor};
use crate::app::AppState;

fn name(id: u64) -> Result<AllocationName, DoorError> {
    AllocationName::parse(&id.to_string()).map_err(|e| DoorError::Internal(e.to_string()))
}

/// Refuses unless every id is the caller's team's, and the caller's role
/// may do `verb` on each (an ML engineer on its own instances, an
/// inference operator on the team's inference endpoints, a team lead on
/// all; a viewer on none).
async fn require_permitted(
    door: &VastDoor,
    caller: &Caller,
    ids: &[u64],
    verb: Verb,
) -> Result<(), DoorError> {
    let owners = owners(&caller.store, ids).await?;
    let foreign: Vec<String> = ids
        .iter()
        .filter(|id| owners.get(id).map(|o| &o.team) != Some(caller.team_name()))
        .map(u64::to_string)
        .collect();
    if !foreign.is_empty() {
        return Err(DoorError::NotFound {
            code: "no_such_instance",
            msg: format!(
                "instance(s) {} do not exist or are not team `{}`'s (`vastai show instances` lists yours); nothing was changed",
                foreign.join(", "),
                caller.team_name()
            ),
        });
    }
    for id in ids {
        let Some(owner) = owners.get(id) else {
            continue;
        };
        let launch = caller.review(verb, AccessResource::Launch, Some(owner));
        let serve = caller.review(verb, AccessResource::Serve, Some(owner));
        let review = match (launch.allowed, serve.allowed) {
            (true, true) => continue,
            (false, false) => launch,
            // Which it is depends on the instance's label.
            _ => match door.upstream.instance(*id).await.map_err(upstream_error)? {
                Some(row) => caller.review_instance(verb, &row, owner),
                None => continue,
            },
        };
        if !review.allowed {
            return Err(DoorError::Forbidden(format!(
                "instance {id}: {}; nothing was changed",
                review.reason
            )));
        }
    }
    Ok(())
}

async fn audit(caller: &Caller, kind: &str, payload: Value) -> Result<(), DoorError> {
    let write = Write::Audit {
        kind: kind.to_owned(),
        payload,
    };
    caller
        .store
        .write(write, now())
        .await
        .map_err(store_error)?;
    Ok(())
}

/// `PUT /instances/{id}/` and its bulk form: `state` and/or `label`.
pub async fn manage(
    door: &VastDoor,
    state: &AppState,
    caller: &Caller,
    ids: &[u64],
    body: &Value,
) -> Result<Value, DoorError> {
    super::request::manage_body(body)?;
    let running = match body.get("state") {
        None => None,
        Some(s) if s == "running" => Some(true),
        Some(s) if s == "stopped" => Some(false),
        Some(other) => {
            return Err(DoorError::bad(format!(
                "`state` must be \"running\" or \"stopped\", not {other}"
            )))
        }
    };
    let label = body.get("label");
    if running.is_none() && label.is_none() {
        return Err(DoorError::bad(
            "nothing to change: send {\"state\": \"running\"|\"stopped\"} and/or {\"label\": \"...\"}",
        ));
    }
    // Stopping, starting and relabelling change the instance.
    require_permitted(door, caller, ids, Verb::Update).await?;
    // What is passed on per id: the state and the label, nothing else.
    let mut one = serde_json::Map::new();
    if let Some(s) = body.get("state") {
        one.insert("state".to_owned(), s.clone());
    }
    if let Some(l) = label {
        one.insert("label".to_owned(), l.clone());
    }
    let one = Value::Object(one);
    let mut last = json!({"success": true});
    for &id in ids {
        last = match running {
            Some(false) => stop(door, caller, id, &one).await?,
            Some(true) => start(door, state, caller, id, &one).await?,
            None => door
                .upstream
                .manage(id, &one)
                .await
                .map_err(upstream_error)?,
        };
        audit(
            caller,
            "vast.instance",
            json!({
                "action": match running { Some(true) => "start", Some(false) => "stop", None => "label" },
                "instance": id,
                "team": caller.team_name(),
                "key": caller.key.id.as_str(),
                "request_id": caller.request_id,
            }),
        )
        .await?;
    }
    Ok(if ids.len() == 1 {
        last
    } else {
        json!({"success": true})
    })
}

async fn stop(door: &VastDoor, caller: &Caller, id: u64, body: &Value) -> Result<Value, DoorError> {
    let answer = door
        .upstream
        .manage(id, body)
        .await
        .map_err(upstream_error)?;
    let target = EndTarget::Name {
        door: Door::Vast,
        name: name(id)?,
    };
    caller
        .store
        .end(&target, now())
        .await
        .map_err(store_error)?;
    Ok(answer)
}

/// The request to run `row` again.
pub(super) fn restart_request(
    principal: Principal,
    row: &Row,
    id: u64,
    body: &Value,
) -> Result<LaunchRequest, DoorError> {
    let gpu = row
        .get("gpu_name")
        .and_then(Value::as_str)
        .and_then(model_of);
    let count = row
        .get("num_gpus")
        .and_then(Value::as_u64)
        .and_then(|n| u32::try_from(n).ok())
        .unwrap_or(0);
    let hourly = instances::dph_total(row).ok_or_else(|| {
        DoorError::UpstreamFailed(format!(
            "instance {id} as the Vast API describes it has no `dph_total`; it cannot be judged, so it is not started"
        ))
    })?;
    let mut req = LaunchRequest::new(Door::Vast, "launch");
    req.target = Some(id.to_string());
    req.principal = principal;
    req.resources = vec![Resource {
        accelerator: gpu
            .filter(|_| count > 0)
            .map(|model| Accelerator { model, count }),
        cloud: Some("vast".to_owned()),
        region: row
            .get("geolocation")
            .and_then(Value::as_str)
            .map(str::to_owned),
        use_spot: row.get("is_bid").and_then(Value::as_bool).unwrap_or(false),
        image_id: row
            .get("image_uuid")
            .and_then(Value::as_str)
            .map(str::to_owned),
        quote: Some(Quote {
            on_demand: hourly,
            spot: hourly,
        }),
        host: Some(super::create::host_facts(row)),
        ..Resource::default()
    }];
    req.labels = super::create::labels_of(row.get("label").and_then(Value::as_str));
    req.task = body.clone();
    req.config = Value::Object(row.clone());
    Ok(req)
}

async fn start(
    door: &VastDoor,
    state: &AppState,
    caller: &Caller,
    id: u64,
    body: &Value,
) -> Result<Value, DoorError> {
    let started = std::time::Instant::now();
    let live = caller
        .store
        .list_live(Some(caller.team_name()))
        .await
        .map_err(store_error)?;
    if live
        .iter()
        .any(|a| a.door == Door::Vast && a.name.as_str() == id.to_string())
    {
        // Counted already (running, or a start whose answer was lost).
        return door.upstream.manage(id, body).await.map_err(upstream_error);
    }
    let row = door
        .upstream
        .instance(id)
        .await
        .map_err(upstream_error)?
        .ok_or_else(|| DoorError::NotFound {
            code: "no_such_instance",
            msg: format!("instance {id} no longer exists"),
        })?;
    let req = restart_request(caller.principal(), &row, id, body)?;
    let admission = crate::gate::Admission {
        door: "vast",
        request_id: &caller.request_id,
        request: &req,
        key: Some(caller.key.id.as_str()),
        input: Some(
            json!({"start": id, "instance_facts": super::offline::decision_facts(&row), "body": body, "key_role": caller.key.role}),
        ),
        started,
        replaces: None,
    };
    let admitted = crate::gate::admit(state, &caller.policy, admission, |_| {
        Ok(crate::gate::Applied::all(()))
    })
    .await?;
    if let crate::gate::Admitted::Denied { message, .. } = admitted {
        return Err(DoorError::Denied(message));
    }
    match door.upstream.manage(id, body).await {
        Ok(answer) => Ok(answer),
        Err(e) if e.is_definite_refusal() => {
            let live = caller
                .store
                .list_live(Some(caller.team_name()))
                .await
                .map_err(store_error)?;
            if let Some(a) = live
                .iter()
                .find(|a| a.door == Door::Vast && a.name.as_str() == id.to_string())
            {
                caller
                    .store
                    .void(a.id, &format!("the Vast API refused the start: {e}"), now())
                    .await
                    .map_err(store_error)?;
            }
            Err(upstream_error(e))
        }
        Err(e) => Err(upstream_error(e)),
    }
}

/// `DELETE /instances/{id}/` and its bulk form.
pub async fn destroy(door: &VastDoor, caller: &Caller, ids: &[u64]) -> Result<Value, DoorError> {
    require_permitted(door, caller, ids, Verb::Delete).await?;
    let mut last = json!({"success": true});
    for &id in ids {
        let cleanup = match &door.config.pre_destroy {
            Some(pre) => Some(pre_destroy(door, caller, id, pre).await?),
            None => None,
        };
        let answer = match door.upstream.destroy(id).await {
            Ok(answer) => answer,
            // Gone already: the ledger must still close.
            Err(super::UpstreamError::Status { status: 404, .. }) => {
                json!({"success": true, "msg": "already gone"})
            }
            Err(e) => return Err(upstream_error(e)),
        };
        let target = EndTarget::Name {
            door: Door::Vast,
            name: name(id)?,
        };
        caller
            .store
            .end(&target, now())
            .await
            .map_err(store_error)?;
        audit(
            caller,
            "vast.instance",
            json!({
                "action": "destroy",
                "instance": id,
                "team": caller.team_name(),
                "key": caller.key.id.as_str(),
                "request_id": caller.request_id,
            }),
        )
        .await?;
        last = match (answer, cleanup) {
            (Value::Object(mut m), Some(c)) => {
                m.insert("warden_pre_destroy".to_owned(), c);
                Value::Object(m)
            }
            (answer, _) => answer,
        };
    }
    Ok(if ids.len() == 1 {
        last
    } else {
        json!({"success": true})
    })
}

/// Runs the pre-destroy command on a running instance and audits the
/// outcome (`vast.pre_destroy`): exit code, time-out, duration and the end
/// of its stderr. Never fails the destroy: a failure is recorded.
async fn pre_destroy(
    door: &VastDoor,
    caller: &Caller,
    id: u64,
    settings: &crate::config::PreDestroy,
) -> Result<Value, DoorError> {
    let command = settings.command.as_str();
    let timeout = settings.timeout;
    let row = door.upstream.instance(id).await.map_err(upstream_error)?;
    let target = row
        .as_ref()
        .filter(|r| instances::is_active(r))
        .and_then(ssh_address);
    let started = Instant::now();
    let outcome = match target {
        None => {
            json!({"ran": false, "reason": "the instance is not running or has no SSH address"})
        }
        Some((host, port)) => {
            let mut cmd = tokio::process::Command::new(&door.ssh_program);
            cmd.arg("-p").arg(port.to_string()).args([
                "-o",
                "BatchMode=yes",
                "-o",
                "StrictHostKeyChecking=accept-new",
                "-o",
                "ConnectTimeout=10",
            ]);
            if let Some(key) = &settings.identity {
                cmd.arg("-i").arg(key).args(["-o", "IdentitiesOnly=yes"]);
            }
            if let Some(file) = &settings.known_hosts {
                cmd.arg("-o")
                    .arg(format!("UserKnownHostsFile={}", file.display()));
            }
            cmd.arg(format!("{}@{host}", settings.user))
                .arg(command)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .kill_on_drop(true);
            match tokio::time::timeout(timeout, cmd.output()).await {
                Err(_) => {
                    json!({"ran": true, "host": host, "port": port, "timed_out": true, "timeout_seconds": timeout.as_secs()})
                }
                Ok(Err(e)) => {
                    json!({"ran": false, "host": host, "port": port, "reason": format!("cannot run `{}`: {e}", door.ssh_program.display())})
                }
                Ok(Ok(out)) => {
                    let stderr = String::from_utf8_lossy(&out.stderr);
                    let tail: String = stderr
                        .chars()
                        .rev()
                        .take(300)
                        .collect::<Vec<_>>()
                        .into_iter()
                        .rev()
                        .collect();
                    json!({"ran": true, "host": host, "port": port, "timed_out": false, "exit_code": out.status.code(), "stderr_tail": tail})
                }
            }
        }
    };
    let mut payload = json!({
        "instance": id,
        "team": caller.team_name(),
        "command": command,
        "duration_ms": u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
        "request_id": caller.request_id,
    });
    if let (Value::Object(p), Value::Object(o)) = (&mut payload, &outcome) {
        p.extend(o.clone());
    }
    tracing::info!(target: "warden::vast", instance = id, team = caller.team_name().as_str(), outcome = %outcome, "pre-destroy command");
    audit(caller, "vast.pre_destroy", payload).await?;
    Ok(outcome)
}
