//! `PUT /api/v0/asks/{offer}/`: a create, decided and reserved before the
//! upstream rents anything.
//!
//! 1. One create of an offer per team at a time (in this process): a second
//!    one gets 409.
//! 2. A live placeholder of an earlier create of the same offer (its answer
//!    was lost: the CLI retries 502 and 504) is resolved first: if its
//!    instance exists it is settled and that instance is the answer, so a
//!    retry never rents or reserves twice; otherwise it is voided. An
//!    earlier create of the same offer already settled within
//!    [`RETRY_WINDOW`] (its answer lost, a reconciler found the instance)
//!    whose instance still runs is the answer too: a retry is never told
//!    the offer it rented is "not available".
//! 3. The offer is read upstream, priced for the requested disk: its GPU
//!    model and count, its `dph_total` (on demand) and its bid price.
//! 4. The policy core decides a [`LaunchRequest`] quoting that price; the
//!    team's Vast options (reliability, verified hosts) are checked; the
//!    decision is recorded and, if allowed, reserved against quotas and
//!    budgets under the placeholder `pending:<offer>:<token>` in the same
//!    transaction. A denial is a 403 naming every reason.
//! 5. The decision's mutations are applied to the create body (disk, image,
//!    spot as an interruptible bid at the offer's minimum, labels, raw
//!    `task.*` paths); `WARDEN_TEAM` and `WARDEN_CREATE_ID` are added to the
//!    instance's env (the second is how a lost answer is matched later).
//! 6. The upstream create's answer settles the placeholder: the instance id
//!    on success; voided (no cost) on a 4xx, which means nothing was rented;
//!    left for the reconciler on a 5xx, a time-out or a dropped connection,
//!    which may come after the instance was created.

use serde_json::{json, Map, Value};
use warden_core::access::Role;
use warden_core::{
    eval::set_path, Accelerator, Decision, Doc, Door, HostFacts, LaunchRequest, Mutation,
    Principal, Quote, Resource, ResourceField, Usd,
};
use warden_store::{AllocationName, AllocationRequest, AllocationState, Settled, UnixMicros};

use super::instances::{CREATE_ENV, TEAM_ENV};
use super::search::{model_of, number};
use super::upstream::Row;
use super::{
    now, settle_matches, store_error, upstream_error, Caller, DoorError, Pending, VastDoor,
};
use crate::app::AppState;
use crate::redact::{redact, REDACTED};

/// Disk the simulator and Vast assume when a create names none, GB.
pub const DEFAULT_DISK_GB: f64 = 10.0;

pub(super) fn token() -> Result<String, DoorError> {
    let mut bytes = [0u8; 8];
    getrandom::getrandom(&mut bytes)
        .map_err(|e| DoorError::Internal(format!("no OS randomness: {e}")))?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

fn dollars(v: Option<&Value>) -> Option<Usd> {
    v.and_then(number).and_then(|d| Usd::from_dollars(d).ok())
}

/// `k=v` words of a Vast label, as labels of the request.
pub fn labels_of(label: Option<&str>) -> std::collections::BTreeMap<String, String> {
    label
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|w| {
            let (k, v) = w.split_once('=')?;
            (!k.is_empty()).then(|| (k.to_owned(), v.to_owned()))
        })
        .collect()
}

/// The normalized request for renting `offer` with `body`, quoting the
/// offer's own prices.
pub fn launch_request(
    principal: Principal,
    offer: &Row,
    body: &Map<String, Value>,
    target: &str,
) -> Result<LaunchRequest, DoorError> {
    let offer_id = offer.get("id").and_then(Value::as_u64).unwrap_or_default();
    let bad_offer = |what: &str| {
        DoorError::UpstreamFailed(format!(
            "offer {offer_id} as the Vast API describes it has no usable `{what}`; it cannot be judged, so it is not rented"
        ))
    };
    let gpu_name = offer
        .get("gpu_name")
        .and_then(Value::as_str)
        .ok_or_else(|| bad_offer("gpu_name"))?;
    let model = model_of(gpu_name).ok_or_else(|| bad_offer("gpu_name"))?;
    let count = offer
        .get("num_gpus")
        .and_then(Value::as_u64)
        .and_then(|n| u32::try_from(n).ok())
        .ok_or_else(|| bad_offer("num_gpus"))?;
    let on_demand = dollars(offer.get("dph_total")).ok_or_else(|| bad_offer("dph_total"))?;
    // Storage is priced into dph_total on top of the GPU price (dph_base);
    // a bid replaces the GPU price only.
    let storage = dollars(offer.get("dph_base")).map_or(Usd::ZERO, |base| {
        Usd::from_micros((on_demand.micros() - base.micros()).max(0))
    });
    let bid = match body.get("price") {
        None | Some(Value::Null) => None,
        Some(p) => Some(
            number(p)
                .filter(|p| *p > 0.0)
                .and_then(|p| Usd::from_dollars(p).ok())
                .ok_or_else(|| {
                    DoorError::bad(format!("`price` must be a positive bid in $/hour, not {p}"))
                })?,
        ),
    };
    let min_bid = dollars(offer.get("min_bid"));
    let spot = bid.or(min_bid).map_or(on_demand, |b| {
        Usd::from_micros(b.micros() + storage.micros())
    });
    let mut req = LaunchRequest::new(Door::Vast, "launch");
    req.target = Some(target.to_owned());
    req.principal = principal;
    req.resources = vec![Resource {
        accelerator: (count > 0).then_some(Accelerator { model, count }),
        cloud: Some("vast".to_owned()),
        region: offer
            .get("geolocation")
            .and_then(Value::as_str)
            .map(str::to_owned),
        use_spot: bid.is_some(),
        disk_size: body.get("disk").and_then(number).map(|d| d.ceil() as i64),
        image_id: body.get("image").and_then(Value::as_str).map(str::to_owned),
        quote: Some(Quote { on_demand, spot }),
        host: Some(host_facts(offer)),
        ..Resource::default()
    }];
    req.labels = labels_of(body.get("label").and_then(Value::as_str));
    req.task = Value::Object(body.clone());
    req.config = Value::Object(offer.clone());
    Ok(req)
}

/// What an offer or an instance row says about its host, for the core to
/// judge (`teams.<t>.vast`, CEL `resource.reliability` ...): `reliability2`,
/// `verified` (an offer) or `verification` (an instance), `host_id`.
pub fn host_facts(row: &Row) -> HostFacts {
    HostFacts {
        reliability: row.get("reliability2").and_then(number),
        verified: row.get("verified").and_then(Value::as_bool).or_else(|| {
            row.get("verification")
                .and_then(Value::as_str)
                .map(|v| v == "verified")
        }),
        host_id: row.get("host_id").and_then(|h| match h {
            Value::String(s) => Some(s.clone()),
            Value::Number(n) => Some(n.to_string()),
            _ => None,
        }),
    }
}

/// Applies the decision's mutations to the create body; returns what had
/// no meaning at this door (logged), e.g. autostop.
pub fn apply_mutations(d: &Decision, offer: &Row, body: &mut Map<String, Value>) -> Vec<String> {
    let mut skipped = Vec::new();
    for applied in &d.mutations {
        let rule = applied.rule.as_str();
        match &applied.mutation {
            Mutation::UseSpot { .. } => {
                if body.get("price").is_none_or(Value::is_null) {
                    match offer.get("min_bid").and_then(number) {
                        Some(min_bid) => {
                            body.insert("price".to_owned(), json!(min_bid));
                        }
                        None => skipped.push(format!("{rule}: spot (the offer has no `min_bid`)")),
                    }
                }
            }
            Mutation::SetResource { field, value, .. } => match field {
                ResourceField::DiskSize => {
                    body.insert("disk".to_owned(), value.clone());
                }
                ResourceField::ImageId => {
                    body.insert("image".to_owned(), value.clone());
                }
                other => skipped.push(format!("{rule}: {}", other.as_str())),
            },
            Mutation::AddLabels { labels } => {
                let current = body
                    .get("label")
                    .and_then(Value::as_str)
                    .unwrap_or_default();
                let mut words: Vec<String> = current
                    .split_whitespace()
                    .filter(|w| {
                        w.split_once('=')
                            .is_none_or(|(k, _)| !labels.contains_key(k))
                    })
                    .map(str::to_owned)
                    .collect();
                words.extend(
                    labels
                        .iter()
                        .map(|(k, v)| format!("{k}={}", v.replace(' ', "_"))),
                );
                body.insert("label".to_owned(), json!(words.join(" ")));
            }
            Mutation::SetPath {
                doc: Doc::Task,
                path,
                value,
            } => {
                let mut doc = Value::Object(std::mem::take(body));
                set_path(&mut doc, path, value.clone());
                if let Value::Object(m) = doc {
                    *body = m;
                }
            }
            Mutation::SetPath {
                doc: Doc::Config,
                path,
                ..
            } => {
                skipped.push(format!("{rule}: config.{}", path.join(".")));
            }
            Mutation::SetAutostop(_) => skipped.push(format!("{rule}: autostop")),
            Mutation::AddVolumes { .. } => skipped.push(format!("{rule}: volumes")),
            Mutation::PruneResources { .. } => {}
        }
    }
    skipped
}

/// Adds Warden's env vars to the create body.
fn tag_env(body: &mut Map<String, Value>, team: &str, token: &str) {
    let env = body
        .entry("env".to_owned())
        .or_insert_with(|| Value::Object(Map::new()));
    if !env.is_object() {
        *env = Value::Object(Map::new());
    }
    if let Value::Object(vars) = env {
        vars.insert(TEAM_ENV.to_owned(), json!(team));
        vars.insert(CREATE_ENV.to_owned(), json!(token));
    }
}

/// Fields of a create body kept only as `"<redacted>"` in the audit chain:
/// the registry login, and the start-up commands and arguments, which like
/// SkyPilot's run/setup scripts routinely carry tokens.
const REDACTED_FIELDS: &[&str] = &[
    "image_login",
    "onstart",
    "onstart_cmd",
    "entrypoint",
    "args",
];

/// The body as the audit chain keeps it (for `warden replay`): env values,
/// registry logins, start-up commands and arguments redacted.
fn replay_input(offer: u64, row: &Row, body: &Map<String, Value>, role: Role) -> Value {
    let mut body = Value::Object(body.clone());
    redact(&mut body);
    for field in REDACTED_FIELDS {
        if let Some(v) = body.get_mut(*field).filter(|v| !v.is_null()) {
            *v = json!(REDACTED);
        }
    }
    json!({"offer": offer, "offer_facts": super::offline::decision_facts(row), "body": body, "key_role": role})
}

/// An earlier, unanswered create of `offer` by the caller's team: settled
/// if its instance exists (its id returned), voided if not.
async fn recover(door: &VastDoor, caller: &Caller, offer: u64) -> Result<Option<u64>, DoorError> {
    let live = caller
        .store
        .list_live(Some(caller.team_name()))
        .await
        .map_err(store_error)?;
    let earlier: Vec<_> = live
        .into_iter()
        .filter(|a| {
            a.door == Door::Vast
                && Pending::parse(a.name.as_str()).is_some_and(|p| p.offer == offer)
        })
        .collect();
    if earlier.is_empty() {
        return Ok(None);
    }
    let rows = door
        .upstream
        .instances(None, None)
        .await
        .map_err(upstream_error)?;
    let settled = settle_matches(door, &caller.store, &earlier, &rows, "create retry").await?;
    for a in &earlier {
        if !settled.iter().any(|(s, _)| s.id == a.id) {
            caller
                .store
                .void(
                    a.id,
                    "a retried create found no instance for this earlier create",
                    now(),
                )
                .await
                .map_err(store_error)?;
        }
    }
    Ok(settled.first().map(|(_, id)| *id))
}

/// How long after an earlier create of the same offer was settled a create
/// is taken for its retry: the CLI retries a 502 or 504 three times within
/// minutes, and a user told "a retry of the same create finds it" may
/// retry by hand later.
pub const RETRY_WINDOW: std::time::Duration = std::time::Duration::from_secs(3600);

/// The instance of an earlier create of `offer` by the caller's team that
/// was settled within [`RETRY_WINDOW`] (by this door, by a listing or by
/// the reconciler, after its answer was lost) and still runs.
async fn recently_settled(caller: &Caller, offer: u64) -> Result<Option<u64>, DoorError> {
    let window = i64::try_from(RETRY_WINDOW.as_micros()).unwrap_or(i64::MAX);
    let since = UnixMicros::from_micros(now().micros().saturating_sub(window));
    let prefix = format!("{}{offer}:", Pending::PREFIX);
    let settled = caller
        .store
        .settled_since(Door::Vast, caller.team_name(), &prefix, since)
        .await
        .map_err(store_error)?;
    Ok(settled
        .iter()
        .filter(|(a, _)| a.state == AllocationState::Live)
        .find_map(|(a, _)| a.name.as_str().parse::<u64>().ok()))
}

/// Handles one create; see the module documentation.
pub async fn create(
    door: &VastDoor,
    state: &AppState,
    caller: Caller,
    offer_id: u64,
    body: Value,
) -> Result<Value, DoorError> {
    let started = std::time::Instant::now();
    let body = super::request::create_body(body)?;
    let team = caller.team_name().clone();
    let token = token()?;
    let _guard = door.begin_create(&team, offer_id, &token)?;
    if let Some(id) = recover(door, &caller, offer_id).await? {
        tracing::info!(target: "warden::vast", team = team.as_str(), offer = offer_id, instance = id, "a retried create found the instance of the earlier one");
        return Ok(json!({"success": true, "new_contract": id}));
    }
    if let Some(id) = recently_settled(&caller, offer_id).await? {
        tracing::info!(target: "warden::vast", team = team.as_str(), offer = offer_id, instance = id, "a retried create found the instance its earlier attempt became");
        return Ok(json!({"success": true, "new_contract": id}));
    }
    let disk = body
        .get("disk")
        .and_then(number)
        .filter(|d| *d > 0.0)
        .unwrap_or(DEFAULT_DISK_GB);
    let offer = door
        .upstream
        .offer(offer_id, disk)
        .await
        .map_err(upstream_error)?
        .filter(|o| o.get("rentable").and_then(Value::as_bool) != Some(false))
        .ok_or_else(|| DoorError::NotFound {
            code: "no_such_ask",
            msg: format!("offer {offer_id} is not available (unknown, or rented already); run `vastai search offers` again"),
        })?;
    let pending = Pending {
        offer: offer_id,
        token: token.clone(),
    };
    let req = launch_request(caller.principal(), &offer, &body, &pending.name())?;
    let admission = crate::gate::Admission {
        door: "vast",
        request_id: &caller.request_id,
        request: &req,
        key: Some(caller.key.id.as_str()),
        input: Some(replay_input(offer_id, &offer, &body, caller.key.role)),
        started,
        replaces: None,
    };
    let admitted = crate::gate::admit(state, &caller.policy, admission, |d| {
        let mut mutated = body.clone();
        let not_applicable = apply_mutations(d, &offer, &mut mutated);
        Ok(crate::gate::Applied {
            value: mutated,
            not_applicable,
        })
    })
    .await?;
    let (decision, mut mutated) = match admitted {
        crate::gate::Admitted::Allowed {
            decision, applied, ..
        } => (decision, applied),
        crate::gate::Admitted::Denied { message, .. } => return Err(DoorError::Denied(message)),
    };
    tag_env(&mut mutated, team.as_str(), &token);
    let placeholder =
        AllocationName::parse(&pending.name()).map_err(|e| DoorError::Internal(e.to_string()))?;
    match door
        .upstream
        .create(offer_id, &Value::Object(mutated))
        .await
    {
        Ok(answer) => {
            let id = answer.get("new_contract").and_then(Value::as_u64);
            let refused = answer.get("success") == Some(&Value::Bool(false));
            match id {
                Some(id) if !refused => {
                    settle(&caller, &req, &decision, &placeholder, id).await?;
                    Ok(answer)
                }
                _ if refused => {
                    void(&caller, &placeholder, "the Vast API refused the create").await?;
                    Err(DoorError::UpstreamRefused {
                        status: 400,
                        body: answer,
                    })
                }
                _ => Err(DoorError::UpstreamFailed(format!(
                    "the Vast API accepted the create of offer {offer_id} without naming the instance; Warden keeps the reservation until the instance shows up (`vastai show instances`)"
                ))),
            }
        }
        Err(e) if e.is_definite_refusal() => {
            void(
                &caller,
                &placeholder,
                &format!("the Vast API refused the create: {e}"),
            )
            .await?;
            Err(upstream_error(e))
        }
        Err(e) => {
            tracing::warn!(target: "warden::vast", team = team.as_str(), offer = offer_id, placeholder = placeholder.as_str(), error = %e, "create outcome unknown; the placeholder stays for the reconciler");
            let hint = "; the instance may or may not exist: Warden keeps the reservation until it knows, and a retry of the same create finds it";
            Err(match upstream_error(e) {
                DoorError::UpstreamTimeout(m) => DoorError::UpstreamTimeout(format!("{m}{hint}")),
                DoorError::UpstreamFailed(m) => DoorError::UpstreamFailed(format!("{m}{hint}")),
                other => other,
            })
        }
    }
}

async fn void(
    caller: &Caller,
    placeholder: &AllocationName,
    reason: &str,
) -> Result<(), DoorError> {
    let live = caller
        .store
        .list_live(Some(caller.team_name()))
        .await
        .map_err(store_error)?;
    if let Some(a) = live
        .iter()
        .find(|a| a.door == Door::Vast && a.name == *placeholder)
    {
        caller
            .store
            .void(a.id, reason, now())
            .await
            .map_err(store_error)?;
    }
    Ok(())
}

/// Renames the placeholder to the instance id; if a reconciler elsewhere
/// voided it meanwhile, records the instance anyway (it exists and costs).
async fn settle(
    caller: &Caller,
    req: &LaunchRequest,
    decision: &Decision,
    placeholder: &AllocationName,
    id: u64,
) -> Result<(), DoorError> {
    let name =
        AllocationName::parse(&id.to_string()).map_err(|e| DoorError::Internal(e.to_string()))?;
    let team = caller.team_name();
    let outcome = caller
        .store
        .settle(Door::Vast, team, placeholder, &name, now())
        .await
        .map_err(store_error)?;
    if outcome == Settled::Missing {
        let r = req.resources.first();
        let request = AllocationRequest {
            door: Door::Vast,
            team: team.clone(),
            user: req.principal.user.clone(),
            name,
            gpu_model: r.and_then(|r| r.accelerator.as_ref().map(|a| a.model.clone())),
            gpus: r.map_or(0, |r| r.gpus_per_node()),
            hourly: decision.hourly_usd.unwrap_or_default(),
            context: Some(
                json!({"source": "vast-create", "instance": id, "note": "the placeholder was voided before the create answered"}),
            ),
        };
        caller
            .store
            .reserve(&request, &[], now())
            .await
            .map_err(store_error)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::doors::vast::instances::row;

    #[test]
    fn labels_are_read_from_key_value_words() {
        let l = labels_of(Some("train run=7 team=ml =x"));
        assert_eq!(l.len(), 2);
        assert_eq!(l["run"], "7");
        assert!(labels_of(None).is_empty());
    }

    #[test]
    fn mutations_reach_the_create_body() {
        let p = warden_core::Policy::from_yaml(
            r#"
teams: {ml: {}}
rules:
  - {name: spot, use_spot: true}
  - {name: tags, add_labels: {team: "${team}"}}
  - {name: disk, set_resource: {disk_size: 50}}
  - {name: onstart, set: {task.onstart: "echo governed"}}
  - {name: cap, max_autostop_minutes: 60}
"#,
        )
        .unwrap();
        let mut req = LaunchRequest::new(Door::Vast, "launch");
        req.principal.team = Some("ml".into());
        let d = p.decide(&req);
        let offer = row(json!({"id": 1001, "min_bid": 0.21}));
        let mut body = row(
            json!({"image": "pytorch/pytorch", "price": null, "disk": 20.0, "label": "mine team=x"}),
        );
        let skipped = apply_mutations(&d, &offer, &mut body);
        assert_eq!(body["price"], json!(0.21));
        assert_eq!(body["disk"], json!(50));
        assert_eq!(body["label"], json!("mine team=ml"));
        assert_eq!(body["onstart"], json!("echo governed"));
        assert_eq!(skipped, ["cap: autostop"]);
    }

    #[test]
    fn replay_input_hides_env_values_and_logins() {
        let body = row(
            json!({"env": {"HF_TOKEN": "hf_secret"}, "image_login": "-u a -p pass", "image": "x"}),
        );
        let input = replay_input(7, &Map::new(), &body, Role::MlEngineer);
        let text = input.to_string();
        assert!(
            !text.contains("hf_secret") && !text.contains("pass"),
            "{text}"
        );
        assert!(text.contains("HF_TOKEN"), "{text}");
    }

    #[test]
    fn replay_input_hides_start_up_commands_and_arguments() {
        let body = row(json!({
            "onstart": "huggingface-cli login --token hf_onstart",
            "onstart_cmd": "export WANDB_API_KEY=wb_cmd",
            "entrypoint": "/bin/sh -c 'curl -H \"Authorization: Bearer ep_secret\" x'",
            "args": ["--token", "args_secret"],
            "runtype": "args",
            "label": "run=7",
        }));
        let input = replay_input(7, &Map::new(), &body, Role::MlEngineer);
        let text = input.to_string();
        for secret in ["hf_onstart", "wb_cmd", "ep_secret", "args_secret"] {
            assert!(!text.contains(secret), "{secret} left in {text}");
        }
        for field in ["onstart", "onstart_cmd", "entrypoint", "args"] {
            assert_eq!(input["body"][field], REDACTED, "{field}");
        }
        assert_eq!(input["body"]["runtype"], "args");
        assert_eq!(input["body"]["label"], "run=7");
        let none = replay_input(
            7,
            &Map::new(),
            &row(json!({"onstart": null})),
            Role::MlEngineer,
        );
        assert_eq!(none["body"]["onstart"], Value::Null);
    }
}
