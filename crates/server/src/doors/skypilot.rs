//! The SkyPilot door: SkyPilot's RESTful admin-policy protocol (client 0.14.1).
//!
//! Request body: a JSON string literal whose content is a JSON object
//! (`task` and `skypilot_config` are YAML text; `request_name`,
//! `request_options`, `at_client_side`, `user` (YAML text), versions). A
//! plain JSON object is accepted too, and older clients send only `task` and
//! `skypilot_config`. Answer: 200 with a JSON string literal containing
//! `{"task", "skypilot_config"}`, or 400 `text/plain` with the reasons.
//! Documents are passed back byte-for-byte when no rule changed them; a
//! changed document is returned as JSON text (which SkyPilot's YAML loader
//! reads), with every field Warden does not govern kept as it was.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::{Map, Value};
use warden_core::{
    normalize_cloud, set_path, Accelerator, Autostop, Decision, Doc, Door, GpuModel, LaunchRequest,
    Mutation, Policy, Resource, ResourceField,
};

use crate::error::DoorError;

/// The decoded request body.
#[derive(Debug, Clone, Deserialize)]
pub struct SkyRequest {
    /// Task YAML.
    pub task: String,
    /// Client config YAML.
    #[serde(default)]
    pub skypilot_config: Option<String>,
    /// What the client is doing.
    #[serde(default)]
    pub request_name: Option<String>,
    /// `cluster_name`, `idle_minutes_to_autostop`, `down`, `dryrun`.
    #[serde(default)]
    pub request_options: Option<RequestOptions>,
    /// Evaluated on the user's machine.
    #[serde(default)]
    pub at_client_side: bool,
    /// User YAML (`name`, `id`), or `""` on the client side.
    #[serde(default)]
    pub user: Option<String>,
    /// Client API version.
    #[serde(default)]
    pub client_api_version: Option<i64>,
    /// Client version.
    #[serde(default)]
    pub client_version: Option<String>,
}

/// SkyPilot's `RequestOptions`.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct RequestOptions {
    /// Cluster name.
    #[serde(default)]
    pub cluster_name: Option<String>,
    /// `-i` minutes.
    #[serde(default)]
    pub idle_minutes_to_autostop: Option<i64>,
    /// `--down`.
    #[serde(default)]
    pub down: Option<bool>,
    /// `--dryrun`.
    #[serde(default)]
    pub dryrun: Option<bool>,
}

/// Where a candidate came from in the task document.
#[derive(Debug, Clone, PartialEq)]
enum AccRef {
    None,
    Whole,
    Key(String),
    Index(usize),
}

#[derive(Debug, Clone)]
struct Origin {
    /// Index into `resources.any_of` / `resources.ordered`.
    alt: Option<usize>,
    /// Where the accelerator entry lives.
    acc: AccRef,
    /// Whether `accelerators` is in the alternative (vs the base).
    acc_in_alt: bool,
}

/// A request normalized for the core, with what the door needs to apply a
/// decision back.
#[derive(Debug)]
pub struct Normalized {
    /// The request for the core.
    pub request: LaunchRequest,
    origins: Vec<Origin>,
    alt_key: &'static str,
    task_text: String,
    config_text: String,
    config_parsed: bool,
}

/// What the door answers.
#[derive(Debug)]
pub enum Answer {
    /// 200: the JSON-string-literal body.
    Allow(String),
    /// 400: the message.
    Deny(String),
}

/// One handled request: the decision and the answer.
#[derive(Debug)]
pub struct Handled {
    /// The normalized request.
    pub request: LaunchRequest,
    /// The core's decision.
    pub decision: Decision,
    /// The task text SkyPilot continues with.
    pub task: String,
    /// The config text SkyPilot continues with.
    pub config: String,
    /// The HTTP answer.
    pub answer: Answer,
}

/// Decodes a body: a JSON string literal holding a JSON object, or the object.
pub fn parse_body(body: &[u8]) -> Result<SkyRequest, DoorError> {
    let trimmed = body.trim_ascii_start();
    if trimmed.is_empty() {
        return Err(DoorError::bad(
            "the request body is empty; expected SkyPilot's admin-policy JSON",
        ));
    }
    let parse_obj = |text: &[u8]| -> Result<SkyRequest, DoorError> {
        // Fast path; on error, parse again with path tracking for the message.
        if let Ok(req) = serde_json::from_slice(text) {
            return Ok(req);
        }
        let de = &mut serde_json::Deserializer::from_slice(text);
        serde_path_to_error::deserialize(de).map_err(|e| {
            let path = e.path().to_string();
            let inner = e.into_inner();
            if path == "." || path == "?" || path.is_empty() {
                DoorError::bad(format!(
                    "the request body is not a SkyPilot admin-policy request: {inner}"
                ))
            } else {
                DoorError::bad(format!("field `{path}`: {inner}"))
            }
        })
    };
    if trimmed.first() == Some(&b'"') {
        let inner = string_literal(trimmed).map_err(|e| {
            DoorError::bad(format!(
                "the request body is not a valid JSON string literal: {e}"
            ))
        })?;
        parse_obj(inner.as_bytes())
    } else {
        parse_obj(trimmed)
    }
}

/// Decodes a JSON string literal (and trailing whitespace) whose escapes are
/// the simple ones SkyPilot's encoder writes (`\"`, `\\`, `\n`, ...); `None`
/// for anything else (`\u` escapes, control characters, a missing close
/// quote, trailing data, bad UTF-8), which `serde_json` then decodes or
/// explains. A unit test holds it to `serde_json`'s answers.
/// Bytes that end a run of plain JSON string content: `"`, `\` and the
/// control characters (a table lookup beats three comparisons per byte).
#[expect(
    clippy::indexing_slicing,
    reason = "indices below 256 into a 256-entry table, checked at compile time"
)]
static ENDS_RUN: [bool; 256] = {
    let mut table = [false; 256];
    let mut b = 0;
    while b < 0x20 {
        table[b] = true;
        b += 1;
    }
    table[b'"' as usize] = true;
    table[b'\\' as usize] = true;
    table
};

#[expect(
    clippy::indexing_slicing,
    reason = "a u8 always indexes a 256-entry table"
)]
fn ends_run(b: u8) -> bool {
    ENDS_RUN[usize::from(b)]
}

/// Decodes a JSON string literal: directly when [`unquote`] can, else by
/// `serde_json`, which also explains what is wrong.
fn string_literal(literal: &[u8]) -> Result<String, serde_json::Error> {
    match unquote(literal) {
        Some(text) => Ok(text),
        None => serde_json::from_slice(literal),
    }
}

fn unquote(literal: &[u8]) -> Option<String> {
    let body = literal.strip_prefix(b"\"")?;
    let mut out = Vec::with_capacity(body.len());
    let mut rest = body;
    loop {
        let at = rest.iter().position(|&c| ends_run(c))?;
        out.extend_from_slice(rest.get(..at)?);
        match rest.get(at)? {
            b'"' => {
                let tail = rest.get(at + 1..)?;
                if !tail
                    .iter()
                    .all(|c| matches!(c, b' ' | b'\t' | b'\n' | b'\r'))
                {
                    return None;
                }
                return String::from_utf8(out).ok();
            }
            b'\\' => {
                out.push(match rest.get(at + 1)? {
                    b'"' => b'"',
                    b'\\' => b'\\',
                    b'/' => b'/',
                    b'n' => b'\n',
                    b't' => b'\t',
                    b'r' => b'\r',
                    b'b' => 0x08,
                    b'f' => 0x0c,
                    _ => return None,
                });
                rest = rest.get(at + 2..)?;
            }
            _ => return None,
        }
    }
}

/// The request as the audit chain keeps it for `warden replay`: the body's
/// object with `task` and `skypilot_config` parsed from YAML and secrets
/// redacted ([`crate::redact`]). `None` when the body cannot be decoded
/// (such a request was answered 4xx and decided nothing).
pub fn replay_input(body: &[u8]) -> Option<Value> {
    let trimmed = body.trim_ascii_start();
    let mut v: Value = if trimmed.first() == Some(&b'"') {
        let inner = string_literal(trimmed).ok()?;
        serde_json::from_str(&inner).ok()?
    } else {
        serde_json::from_slice(trimmed).ok()?
    };
    let map = v.as_object_mut()?;
    for key in ["task", "skypilot_config"] {
        if let Some(Value::String(text)) = map.get(key) {
            let mut doc = parse_yaml(key, text).ok()?;
            crate::redact::redact(&mut doc);
            map.insert(key.to_owned(), doc);
        }
    }
    Some(v)
}

/// A body [`handle`] accepts, rebuilt from a [`replay_input`]: the
/// documents as JSON text (which is YAML).
pub fn replay_body(input: &Value) -> Result<Vec<u8>, String> {
    let mut v = input.clone();
    let map = v
        .as_object_mut()
        .ok_or("the recorded SkyPilot request is not an object")?;
    for key in ["task", "skypilot_config"] {
        if let Some(doc) = map.get(key) {
            if !doc.is_string() {
                let text = doc.to_string();
                map.insert(key.to_owned(), Value::String(text));
            }
        }
    }
    serde_json::to_vec(&v.to_string()).map_err(|e| e.to_string())
}

fn parse_yaml(what: &str, text: &str) -> Result<Value, DoorError> {
    if text.trim().is_empty() {
        return Ok(Value::Object(Map::new()));
    }
    // SkyPilot's block-style YAML takes the fast path; anything else (and
    // every error message) comes from the full parser.
    let v: Value = match crate::yaml::parse(text) {
        Some(v) => v,
        None => serde_norway::from_str(text)
            .map_err(|e| DoorError::bad(format!("`{what}` is not valid YAML: {e}")))?,
    };
    match v {
        Value::Object(_) => Ok(v),
        Value::Null => Ok(Value::Object(Map::new())),
        _ => Err(DoorError::bad(format!("`{what}` must be a YAML mapping"))),
    }
}

fn scalar_string(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

fn parse_accelerator(spec: &str, count: Option<&Value>) -> Result<Accelerator, DoorError> {
    let (name, count_text) = match spec.split_once(':') {
        Some((n, c)) => (n.trim(), Some(c.trim().to_owned())),
        None => (spec.trim(), count.and_then(scalar_string)),
    };
    let model = GpuModel::parse(name)
        .map_err(|e| DoorError::bad(format!("`resources.accelerators`: {e}")))?;
    let count = match count_text {
        None => 1,
        Some(c) => {
            let n: f64 = c.parse().map_err(|_| {
                DoorError::bad(format!(
                    "`resources.accelerators`: count `{c}` of `{name}` is not a number; write e.g. `{name}:8`"
                ))
            })?;
            if !n.is_finite() || n <= 0.0 || n > 1_000_000.0 {
                return Err(DoorError::bad(format!(
                    "`resources.accelerators`: count `{c}` of `{name}` must be a positive number"
                )));
            }
            // Rounded up: a fraction of a GPU occupies one.
            n.ceil() as u32
        }
    };
    Ok(Accelerator { model, count })
}

/// Expands an `accelerators` value into candidates.
fn accelerators(v: Option<&Value>) -> Result<Vec<(Option<Accelerator>, AccRef)>, DoorError> {
    match v {
        None | Some(Value::Null) => Ok(vec![(None, AccRef::None)]),
        Some(Value::String(s)) => Ok(vec![(Some(parse_accelerator(s, None)?), AccRef::Whole)]),
        Some(Value::Object(m)) => {
            if m.is_empty() {
                return Ok(vec![(None, AccRef::None)]);
            }
            m.iter()
                .map(|(k, c)| {
                    let count = if c.is_null() { None } else { Some(c) };
                    Ok((Some(parse_accelerator(k, count)?), AccRef::Key(k.clone())))
                })
                .collect()
        }
        Some(Value::Array(list)) => {
            if list.is_empty() {
                return Ok(vec![(None, AccRef::None)]);
            }
            list.iter()
                .enumerate()
                .map(|(i, item)| {
                    let acc = match item {
                        Value::String(s) => parse_accelerator(s, None)?,
                        Value::Object(m) if m.len() == 1 => {
                            let (k, c) = m.iter().next().ok_or_else(|| DoorError::bad("empty accelerator"))?;
                            parse_accelerator(k, Some(c))?
                        }
                        _ => {
                            return Err(DoorError::bad(
                                "`resources.accelerators` list items must be strings like `H100:8`",
                            ))
                        }
                    };
                    Ok((Some(acc), AccRef::Index(i)))
                })
                .collect()
        }
        Some(_) => Err(DoorError::bad(
            "`resources.accelerators` must be a string (`H100:8`), a mapping (`{H100: 8}`) or a list",
        )),
    }
}

fn int_field(m: &Map<String, Value>, key: &str) -> Result<Option<i64>, DoorError> {
    match m.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => n
            .as_i64()
            .map(Some)
            .ok_or_else(|| DoorError::bad(format!("`resources.{key}` must be an integer"))),
        Some(Value::String(s)) => s.trim().parse::<i64>().map(Some).map_err(|_| {
            DoorError::bad(format!("`resources.{key}` must be an integer, got `{s}`"))
        }),
        Some(_) => Err(DoorError::bad(format!(
            "`resources.{key}` must be an integer"
        ))),
    }
}

fn location(m: &Map<String, Value>) -> (Option<String>, Option<String>, Option<String>) {
    if let Some(infra) = m.get("infra").and_then(Value::as_str) {
        let mut parts = infra.splitn(3, '/').map(|p| {
            let p = p.trim();
            (!p.is_empty() && p != "*").then(|| p.to_owned())
        });
        let cloud = parts.next().flatten().map(|c| normalize_cloud(&c));
        return (cloud, parts.next().flatten(), parts.next().flatten());
    }
    let get = |k: &str| m.get(k).and_then(scalar_string);
    (
        get("cloud").map(|c| normalize_cloud(&c)),
        get("region"),
        get("zone"),
    )
}

fn ports(v: Option<&Value>) -> Vec<String> {
    match v {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(a)) => a.iter().filter_map(scalar_string).collect(),
        Some(other) => scalar_string(other).into_iter().collect(),
    }
}

/// Parses `autostop`: bool, minutes, `"30m"`/`"2h"`/`"1d"`, or `{idle_minutes, down}`.
fn autostop(v: Option<&Value>) -> Result<Option<Autostop>, DoorError> {
    let minutes = |v: &Value| -> Result<Option<i64>, DoorError> {
        match v {
            Value::Null => Ok(None),
            Value::Number(n) => n
                .as_i64()
                .map(Some)
                .ok_or_else(|| DoorError::bad("`resources.autostop` minutes must be an integer")),
            Value::String(s) => {
                let s = s.trim();
                let (num, mult) = match s.char_indices().last() {
                    Some((i, 'm')) => (s.get(..i).unwrap_or(""), 1),
                    Some((i, 'h')) => (s.get(..i).unwrap_or(""), 60),
                    Some((i, 'd')) => (s.get(..i).unwrap_or(""), 1440),
                    _ => (s, 1),
                };
                num.trim()
                    .parse::<i64>()
                    .map(|n| Some(n.saturating_mul(mult)))
                    .map_err(|_| {
                        DoorError::bad(format!(
                            "`resources.autostop`: cannot read `{s}` as minutes"
                        ))
                    })
            }
            _ => Err(DoorError::bad(
                "`resources.autostop` must be a bool, minutes or a mapping",
            )),
        }
    };
    match v {
        None | Some(Value::Null) | Some(Value::Bool(false)) => Ok(None),
        // SkyPilot's default idle time for `autostop: true`.
        Some(Value::Bool(true)) => Ok(Some(Autostop {
            idle_minutes: 5,
            down: false,
        })),
        Some(Value::Object(m)) => {
            let idle = match m.get("idle_minutes") {
                Some(v) => minutes(v)?,
                None => Some(5),
            };
            let down = m.get("down").and_then(Value::as_bool).unwrap_or(false);
            Ok(idle
                .filter(|i| *i >= 0)
                .map(|idle_minutes| Autostop { idle_minutes, down }))
        }
        Some(other) => Ok(minutes(other)?
            .filter(|i| *i >= 0)
            .map(|idle_minutes| Autostop {
                idle_minutes,
                down: false,
            })),
    }
}

fn merged<'a>(
    base: &'a Map<String, Value>,
    alt: Option<&'a Map<String, Value>>,
) -> impl Fn(&str) -> Option<&'a Value> {
    move |k| alt.and_then(|a| a.get(k)).or_else(|| base.get(k))
}

/// Normalizes a decoded request for the core.
pub fn normalize(policy: &Policy, req: SkyRequest) -> Result<Normalized, DoorError> {
    let task = parse_yaml("task", &req.task)?;
    let config_text = req.skypilot_config.unwrap_or_default();
    let need_config = policy.needs_config() || policy.uses_workspaces();
    let config = if need_config {
        parse_yaml("skypilot_config", &config_text)?
    } else {
        Value::Null
    };
    let user = match req.user.as_deref().map(str::trim) {
        None | Some("") => None,
        Some(text) => {
            let v = parse_yaml("user", text)?;
            v.get("name").and_then(scalar_string)
        }
    };
    let workspace = config.get("active_workspace").and_then(scalar_string);

    let empty = Map::new();
    let resources_v = task.get("resources");
    let (base, alts, alt_key): (&Map<String, Value>, Vec<&Map<String, Value>>, &'static str) =
        match resources_v {
            None | Some(Value::Null) => (&empty, Vec::new(), "any_of"),
            Some(Value::Object(m)) => {
                let (key, list) = if let Some(l) = m.get("any_of") {
                    ("any_of", Some(l))
                } else if let Some(l) = m.get("ordered") {
                    ("ordered", Some(l))
                } else {
                    ("any_of", None)
                };
                let alts = match list {
                    None | Some(Value::Null) => Vec::new(),
                    Some(Value::Array(items)) => items
                        .iter()
                        .map(|i| {
                            i.as_object().ok_or_else(|| {
                                DoorError::bad(format!("`resources.{key}` items must be mappings"))
                            })
                        })
                        .collect::<Result<_, _>>()?,
                    Some(_) => {
                        return Err(DoorError::bad(format!(
                            "`resources.{key}` must be a list of mappings"
                        )))
                    }
                };
                (m, alts, key)
            }
            Some(_) => return Err(DoorError::bad("`resources` must be a mapping")),
        };

    let num_nodes = match task.get("num_nodes") {
        None | Some(Value::Null) => 1,
        Some(v) => v
            .as_u64()
            .filter(|n| *n >= 1)
            .and_then(|n| u32::try_from(n).ok())
            .ok_or_else(|| {
                DoorError::bad(format!("`num_nodes` must be a positive integer, got `{v}`"))
            })?,
    };

    let mut resources = Vec::new();
    let mut origins = Vec::new();
    let alt_iter: Vec<Option<(usize, &Map<String, Value>)>> = if alts.is_empty() {
        vec![None]
    } else {
        alts.iter()
            .enumerate()
            .map(|(i, a)| Some((i, *a)))
            .collect()
    };
    for alt in alt_iter {
        let alt_map = alt.map(|(_, m)| m);
        let get = merged(base, alt_map);
        let acc_in_alt = alt_map.is_some_and(|m| m.contains_key("accelerators"));
        // An alternative naming any location replaces the base's location.
        let loc_map = match alt_map {
            Some(a)
                if ["infra", "cloud", "region", "zone"]
                    .iter()
                    .any(|k| a.contains_key(*k)) =>
            {
                a
            }
            _ => base,
        };
        let (cloud, region, zone) = location(loc_map);
        let disk_size = match alt_map {
            Some(a) if a.contains_key("disk_size") => int_field(a, "disk_size")?,
            _ => int_field(base, "disk_size")?,
        };
        for (accelerator, acc) in accelerators(get("accelerators"))? {
            resources.push(Resource {
                accelerator,
                cloud: cloud.clone(),
                region: region.clone(),
                zone: zone.clone(),
                use_spot: get("use_spot").and_then(Value::as_bool).unwrap_or(false),
                cpus: get("cpus").and_then(scalar_string),
                memory: get("memory").and_then(scalar_string),
                disk_size,
                image_id: get("image_id").and_then(Value::as_str).map(str::to_owned),
                ports: ports(get("ports")),
                quote: None,
            });
            origins.push(Origin {
                alt: alt.map(|(i, _)| i),
                acc,
                acc_in_alt,
            });
        }
    }

    let mut auto = autostop(base.get("autostop"))?;
    if auto.is_none() {
        if let Some(opts) = &req.request_options {
            if let Some(idle) = opts.idle_minutes_to_autostop.filter(|i| *i >= 0) {
                auto = Some(Autostop {
                    idle_minutes: idle,
                    down: opts.down.unwrap_or(false),
                });
            }
        }
    }
    let labels: BTreeMap<String, String> = match base.get("labels") {
        Some(Value::Object(m)) => m
            .iter()
            .filter_map(|(k, v)| scalar_string(v).map(|v| (k.clone(), v)))
            .collect(),
        _ => BTreeMap::new(),
    };
    let volumes = match task.get("volumes") {
        Some(Value::Object(m)) => m.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
        _ => BTreeMap::new(),
    };

    let mut request = LaunchRequest::new(
        Door::Skypilot,
        req.request_name.unwrap_or_else(|| "unknown".to_owned()),
    );
    request.target = req
        .request_options
        .as_ref()
        .and_then(|o| o.cluster_name.clone());
    request.principal.user = user;
    request.principal.workspace = workspace;
    request.at_client_side = req.at_client_side;
    request.client_api_version = req.client_api_version;
    request.client_version = req.client_version;
    request.num_nodes = num_nodes;
    request.resources = resources;
    request.autostop = auto;
    request.labels = labels;
    request.volumes = volumes;
    request.task = task;
    request.config = config;
    Ok(Normalized {
        request,
        origins,
        alt_key,
        task_text: req.task,
        config_text,
        config_parsed: need_config,
    })
}

fn obj(v: &mut Value) -> &mut Map<String, Value> {
    if !v.is_object() {
        *v = Value::Object(Map::new());
    }
    match v {
        Value::Object(m) => m,
        // Unreachable: replaced by an object just above.
        _ => unreachable_object(),
    }
}

#[expect(clippy::panic, reason = "obj() has just made the value an object")]
fn unreachable_object() -> ! {
    panic!("value was just made an object")
}

/// The resources mapping of a task, created when absent.
fn resources_mut(task: &mut Value) -> &mut Map<String, Value> {
    let root = obj(task);
    obj(root.entry("resources").or_insert(Value::Null))
}

/// The mapping a candidate's settings live in: its alternative, or the base.
fn target<'a>(
    task: &'a mut Value,
    alt_key: &str,
    alt: Option<usize>,
) -> Option<&'a mut Map<String, Value>> {
    let res = resources_mut(task);
    match alt {
        None => Some(res),
        Some(i) => res
            .get_mut(alt_key)
            .and_then(Value::as_array_mut)
            .and_then(|a| a.get_mut(i))
            .and_then(Value::as_object_mut),
    }
}

fn rewrite_infra(infra: &str, field: ResourceField, value: &str) -> String {
    let mut parts: Vec<String> = infra.split('/').map(str::to_owned).collect();
    let idx = match field {
        ResourceField::Cloud => 0,
        ResourceField::Region => 1,
        _ => 2,
    };
    while parts.len() <= idx {
        parts.push("*".to_owned());
    }
    if let Some(p) = parts.get_mut(idx) {
        *p = value.to_owned();
    }
    parts.join("/")
}

impl Normalized {
    fn set_resource(&self, task: &mut Value, idx: usize, field: ResourceField, value: &Value) {
        let Some(origin) = self.origins.get(idx) else {
            return;
        };
        let base_infra = resources_mut(task)
            .get("infra")
            .and_then(Value::as_str)
            .map(str::to_owned);
        let Some(t) = target(task, self.alt_key, origin.alt) else {
            return;
        };
        let is_location = matches!(
            field,
            ResourceField::Cloud | ResourceField::Region | ResourceField::Zone
        );
        let infra = t
            .get("infra")
            .and_then(Value::as_str)
            .map(str::to_owned)
            .or_else(|| {
                // An alternative without its own location inherits the base's infra.
                (origin.alt.is_some()
                    && !t.contains_key("cloud")
                    && !t.contains_key("region")
                    && !t.contains_key("zone"))
                .then_some(base_infra)
                .flatten()
            });
        match (is_location, infra, value.as_str()) {
            (true, Some(infra), Some(v)) => {
                t.insert(
                    "infra".to_owned(),
                    Value::String(rewrite_infra(&infra, field, v)),
                );
            }
            _ => {
                t.insert(field.as_str().to_owned(), value.clone());
            }
        }
    }

    fn prune(&self, task: &mut Value, removed: &[usize]) {
        // Group removals by container, then remove from the back so indices hold.
        let mut whole_alts: Vec<usize> = Vec::new();
        let mut keys: BTreeMap<(Option<usize>, bool), Vec<AccRef>> = BTreeMap::new();
        for i in removed {
            let Some(o) = self.origins.get(*i) else {
                continue;
            };
            match (&o.acc, o.alt) {
                (AccRef::Whole | AccRef::None, Some(a)) => whole_alts.push(a),
                (AccRef::Whole | AccRef::None, None) => {}
                (acc, alt) => keys
                    .entry((alt, o.acc_in_alt))
                    .or_default()
                    .push(acc.clone()),
            }
        }
        for ((alt, in_alt), refs) in keys {
            let container = if in_alt { alt } else { None };
            let Some(t) = target(task, self.alt_key, container) else {
                continue;
            };
            let mut now_empty = false;
            match t.get_mut("accelerators") {
                Some(Value::Object(m)) => {
                    for r in &refs {
                        if let AccRef::Key(k) = r {
                            m.remove(k);
                        }
                    }
                    now_empty = m.is_empty();
                }
                Some(Value::Array(list)) => {
                    let mut idx: Vec<usize> = refs
                        .iter()
                        .filter_map(|r| {
                            if let AccRef::Index(i) = r {
                                Some(*i)
                            } else {
                                None
                            }
                        })
                        .collect();
                    idx.sort_unstable();
                    for i in idx.into_iter().rev() {
                        if i < list.len() {
                            list.remove(i);
                        }
                    }
                    now_empty = list.is_empty();
                }
                _ => {}
            }
            if now_empty {
                if let Some(a) = alt {
                    whole_alts.push(a);
                }
            }
        }
        whole_alts.sort_unstable();
        whole_alts.dedup();
        if let Some(list) = resources_mut(task)
            .get_mut(self.alt_key)
            .and_then(Value::as_array_mut)
        {
            for a in whole_alts.into_iter().rev() {
                if a < list.len() {
                    list.remove(a);
                }
            }
        }
    }

    /// Every mapping labels/autostop go to: the base, and alternatives that
    /// carry their own value (which would otherwise shadow the base's).
    fn with_base_and_overrides(&self, task: &mut Value, key: &str, f: &dyn Fn(&mut Value)) {
        let res = resources_mut(task);
        f(res.entry(key).or_insert(Value::Null));
        if let Some(list) = res.get_mut(self.alt_key).and_then(Value::as_array_mut) {
            for alt in list.iter_mut().filter_map(Value::as_object_mut) {
                if let Some(v) = alt.get_mut(key) {
                    f(v);
                }
            }
        }
    }

    /// Applies an allowing decision; returns the task and config texts.
    /// Takes the task document out of `self.request` (it is not needed after).
    pub fn apply(&mut self, decision: &Decision) -> Result<(String, String), DoorError> {
        if decision.mutations.is_empty() {
            return Ok((
                std::mem::take(&mut self.task_text),
                std::mem::take(&mut self.config_text),
            ));
        }
        let mut task = std::mem::take(&mut self.request.task);
        let mut task_changed = false;
        let mut config: Option<Value> = None;
        for applied in &decision.mutations {
            match &applied.mutation {
                Mutation::UseSpot { resources } => {
                    for i in resources {
                        if let Some(o) = self.origins.get(*i) {
                            if let Some(t) = target(&mut task, self.alt_key, o.alt) {
                                t.insert("use_spot".to_owned(), Value::Bool(true));
                            }
                        }
                    }
                    task_changed = true;
                }
                Mutation::SetResource {
                    resources,
                    field,
                    value,
                } => {
                    for i in resources {
                        self.set_resource(&mut task, *i, *field, value);
                    }
                    task_changed = true;
                }
                Mutation::PruneResources { resources } => {
                    self.prune(&mut task, resources);
                    task_changed = true;
                }
                Mutation::SetAutostop(a) => {
                    let v = serde_json::json!({"idle_minutes": a.idle_minutes, "down": a.down});
                    self.with_base_and_overrides(&mut task, "autostop", &|slot| *slot = v.clone());
                    task_changed = true;
                }
                Mutation::AddLabels { labels } => {
                    self.with_base_and_overrides(&mut task, "labels", &|slot| {
                        let m = obj(slot);
                        for (k, v) in labels {
                            m.insert(k.clone(), Value::String(v.clone()));
                        }
                    });
                    task_changed = true;
                }
                Mutation::AddVolumes { volumes } => {
                    let root = obj(&mut task);
                    let m = obj(root.entry("volumes").or_insert(Value::Null));
                    for (k, v) in volumes {
                        m.insert(k.clone(), v.clone());
                    }
                    task_changed = true;
                }
                Mutation::SetPath {
                    doc: Doc::Task,
                    path,
                    value,
                } => {
                    set_path(&mut task, path, value.clone());
                    task_changed = true;
                }
                Mutation::SetPath {
                    doc: Doc::Config,
                    path,
                    value,
                } => {
                    let cfg = match config.as_mut() {
                        Some(c) => c,
                        None => {
                            let parsed = if self.config_parsed {
                                std::mem::take(&mut self.request.config)
                            } else {
                                parse_yaml("skypilot_config", &self.config_text)?
                            };
                            config.insert(parsed)
                        }
                    };
                    set_path(cfg, path, value.clone());
                }
            }
        }
        let task_text = if task_changed {
            serde_json::to_string(&task).map_err(|e| DoorError::Internal(e.to_string()))?
        } else {
            std::mem::take(&mut self.task_text)
        };
        let config_text = match config {
            Some(c) => serde_json::to_string(&c).map_err(|e| DoorError::Internal(e.to_string()))?,
            None => std::mem::take(&mut self.config_text),
        };
        Ok((task_text, config_text))
    }
}

/// Encodes the success body: a JSON string literal of `{task, skypilot_config}`.
///
/// One pass: each document is escaped for the inner JSON object and again
/// for the outer string literal at once, byte for byte what
/// `serde_json::to_string(&serde_json::to_string(&{task, skypilot_config}))`
/// gives (a unit test holds the two together).
pub fn encode_answer(task: &str, config: &str) -> String {
    let mut out = String::with_capacity(task.len() + config.len() + task.len() / 8 + 48);
    out.push_str(r#""{\"task\":\""#);
    push_escaped_twice(&mut out, task);
    out.push_str(r#"\",\"skypilot_config\":\""#);
    push_escaped_twice(&mut out, config);
    out.push_str(r#"\"}""#);
    out
}

/// Appends `s` escaped as JSON string content, then escaped again.
fn push_escaped_twice(out: &mut String, s: &str) {
    let mut plain = 0;
    for (i, b) in s.bytes().enumerate() {
        if !ends_run(b) {
            continue;
        }
        let twice: &str = match b {
            b'"' => r#"\\\""#,
            b'\\' => r#"\\\\"#,
            b'\n' => r"\\n",
            b'\r' => r"\\r",
            b'\t' => r"\\t",
            0x08 => r"\\b",
            0x0c => r"\\f",
            // Other control characters (`ends_run` lets nothing else by).
            _ => "",
        };
        out.push_str(s.get(plain..i).unwrap_or_default());
        plain = i + 1;
        if twice.is_empty() {
            // Other control characters: `\u00XX` inside, its backslash escaped.
            use std::fmt::Write as _;
            let _ = write!(out, r"\\u{b:04x}");
        } else {
            out.push_str(twice);
        }
    }
    out.push_str(s.get(plain..).unwrap_or_default());
}

/// Handles one request body end to end: decode, normalize, decide, apply.
/// Pure: used by the HTTP door, `warden decide` and `warden test` alike.
pub fn handle(policy: &Policy, body: &[u8]) -> Result<Handled, DoorError> {
    let req = parse_body(body)?;
    handle_request(policy, req)
}

/// Handles a decoded request.
pub fn handle_request(policy: &Policy, req: SkyRequest) -> Result<Handled, DoorError> {
    let mut normalized = normalize(policy, req)?;
    let decision = policy.decide(&normalized.request);
    if decision.is_allowed() {
        let (task, config) = normalized.apply(&decision)?;
        let answer = Answer::Allow(encode_answer(&task, &config));
        Ok(Handled {
            request: normalized.request,
            decision,
            task,
            config,
            answer,
        })
    } else {
        let message = decision.denial_message();
        Ok(Handled {
            request: normalized.request,
            decision,
            task: normalized.task_text,
            config: normalized.config_text,
            answer: Answer::Deny(message),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unquote_agrees_with_serde_json() {
        let mut cases: Vec<Vec<u8>> = vec![
            br#""""#.to_vec(),
            br#""plain""#.to_vec(),
            br#""a\"b\\c\/d\ne\tf\rg\bh\fi"  "#.to_vec(),
            b"\"a\" \n\r\t".to_vec(),
            br#""\u00e9""#.to_vec(),
            br#""unterminated"#.to_vec(),
            br#""a" x"#.to_vec(),
            b"\"a\x01b\"".to_vec(),
            br#""bad \q escape""#.to_vec(),
            b"\"\xff\"".to_vec(),
            "\"é 日本\"".as_bytes().to_vec(),
            br#""a" "b""#.to_vec(),
            b"\"x\"\x0c".to_vec(),
        ];
        for entry in std::fs::read_dir(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../tests/fixtures/skypilot-0.14.1"
        ))
        .unwrap()
        {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|x| x == "json") {
                cases.push(std::fs::read(path).unwrap());
            }
        }
        for case in &cases {
            let want = serde_json::from_slice::<String>(case).ok();
            if let Some(got) = unquote(case) {
                assert_eq!(Some(got), want, "{}", String::from_utf8_lossy(case));
            }
        }
        // The captured bodies take the fast path.
        for case in cases.iter().filter(|c| c.len() > 200) {
            assert!(unquote(case).is_some(), "{}", String::from_utf8_lossy(case));
        }
    }

    #[test]
    fn encode_answer_matches_serde_json_twice() {
        #[derive(serde::Serialize)]
        struct Out<'a> {
            task: &'a str,
            skypilot_config: &'a str,
        }
        let mut samples: Vec<String> = vec![
            String::new(),
            "name: x\nrun: 'a \"b\" \\\\ c'\n".to_owned(),
            "é 日本 🚀 \u{7f}".to_owned(),
        ];
        samples.push((0u8..0x80).map(char::from).collect());
        for task in &samples {
            for config in &samples {
                let inner = serde_json::to_string(&Out {
                    task,
                    skypilot_config: config,
                })
                .unwrap();
                let want = serde_json::to_string(&inner).unwrap();
                assert_eq!(encode_answer(task, config), want);
            }
        }
    }

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
    fn plain_object_and_string_literal_bodies_both_decode() {
        let obj = br#"{"task": "name: x\n", "skypilot_config": ""}"#;
        assert_eq!(parse_body(obj).expect("obj").task, "name: x\n");
        let lit = serde_json::to_vec(&String::from_utf8_lossy(obj).to_string()).expect("lit");
        assert_eq!(parse_body(&lit).expect("lit").task, "name: x\n");
        let err = parse_body(br#"{"task": 5}"#).unwrap_err().to_string();
        assert!(err.contains("field `task`"), "{err}");
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
            &body(
                "resources:\n  any_of:\n    - accelerators: H100:8\n    - accelerators: A100:8\n",
            ),
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

    #[test]
    fn untouched_documents_pass_through_byte_for_byte() {
        let p = policy("default_team: t\nteams:\n  t: {}\n");
        let task = "name: x\nenvs:\n  A: '1'\n";
        let h = handle(&p, &body(task)).expect("ok");
        assert_eq!(h.task, task);
        assert_eq!(h.config, "a: 1\n");
    }
}
