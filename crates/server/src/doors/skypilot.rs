//! The SkyPilot door: SkyPilot's RESTful admin-policy protocol (client 0.14.1).
//!
//! Request body: a JSON string literal whose content is a JSON object
//! (`task` and `skypilot_config` are YAML text; `request_name`,
//! `request_options`, `at_client_side`, `user` (YAML text), versions). A
//! plain JSON object is accepted too, and older clients send only `task` and
//! `skypilot_config`. Answer: 200 with a JSON string literal containing
//! `{"task", "skypilot_config"}`, or 400 `text/plain` with the reasons.
//! Documents are passed back byte-for-byte when no rule changed them; a
//! changed document is written as flow YAML that SkyPilot's loader (PyYAML,
//! YAML 1.1) reads back as the user's document plus Warden's changes
//! ([`yaml`]). Governed fields of the wrong type or value are refused
//! with a 400 naming the field; both JSON layers and every YAML document
//! have a nesting bound.

pub mod sync;
pub mod yaml;

use std::collections::BTreeMap;
use std::fmt::Display;

use serde::Deserialize;
use serde_json::Value;
use warden_core::{
    normalize_cloud, Accelerator, Autostop, Decision, Doc, Door, GpuModel, LaunchRequest, Mutation,
    Policy, Resource, ResourceField,
};

use crate::error::DoorError;
use crate::json_text::{needs_escape as ends_run, Times};
use yaml::{map_get, Kind, Node};

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
    /// The entry's place in an `accelerators` mapping.
    Key(usize),
    /// The item's place in an `accelerators` list.
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
    /// The wire documents, to apply a decision to.
    pub rewrite: Rewrite,
}

/// The task and config as sent and as PyYAML reads them: what the door
/// applies an allowing decision to ([`Rewrite::apply`]).
#[derive(Debug)]
pub struct Rewrite {
    /// The task as PyYAML reads it.
    task: Node,
    /// The config as PyYAML reads it, when parsed.
    config: Option<Node>,
    origins: Vec<Origin>,
    alt_key: &'static str,
    task_text: String,
    config_text: String,
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
        if !json_depth_within(text, JSON_MAX_DEPTH) {
            return Err(DoorError::bad(format!(
                "the request body nests deeper than {JSON_MAX_DEPTH} levels; SkyPilot's requests are a few levels deep"
            )));
        }
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

/// The deepest nesting of JSON arrays and objects a request body may have
/// (each JSON layer; serde_json's own limit, 128, would apply only to the
/// values Warden reads, and skipped values would not count).
pub const JSON_MAX_DEPTH: usize = 64;

/// Whether the JSON text nests at most `max` levels: a count of brackets
/// first (vectorized; SkyPilot's bodies have a handful), then, only when
/// there are more than `max`, a scan that skips strings. Linear either way.
fn json_depth_within(text: &[u8], max: usize) -> bool {
    // `[` (0x5B) and `{` (0x7B) differ only in bit 0x20: one compare a byte.
    let brackets = text.iter().filter(|b| **b | 0x20 == b'{').count();
    if brackets <= max {
        return true;
    }
    let (mut depth, mut in_string, mut escaped) = (0usize, false, false);
    for &b in text {
        if in_string {
            if escaped {
                escaped = false;
            } else if b == b'\\' {
                escaped = true;
            } else if b == b'"' {
                in_string = false;
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                if depth > max {
                    return false;
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    true
}

/// Decodes a JSON string literal: directly when [`unquote`] can, else by
/// `serde_json`, which also explains what is wrong.
fn string_literal(literal: &[u8]) -> Result<String, serde_json::Error> {
    match unquote(literal) {
        Some(text) => Ok(text),
        None => serde_json::from_slice(literal),
    }
}

/// Decodes a JSON string literal (and trailing whitespace) whose escapes are
/// the simple ones SkyPilot's encoder writes (`\"`, `\\`, `\n`, ...); `None`
/// for anything else (`\u` escapes, control characters, a missing close
/// quote, trailing data, bad UTF-8), which `serde_json` then decodes or
/// explains. A unit test holds it to `serde_json`'s answers.
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
/// documents written as YAML that reads back as the recorded values (JSON
/// text would not: `1e20` is a string to YAML 1.1).
pub fn replay_body(input: &Value) -> Result<Vec<u8>, String> {
    let mut v = input.clone();
    let map = v
        .as_object_mut()
        .ok_or("the recorded SkyPilot request is not an object")?;
    for key in ["task", "skypilot_config"] {
        if let Some(doc) = map.get(key) {
            if !doc.is_string() {
                let text = yaml::to_string(&Node::from_json(doc), 256);
                map.insert(key.to_owned(), Value::String(text));
            }
        }
    }
    serde_json::to_vec(&v.to_string()).map_err(|e| e.to_string())
}

/// Reads a document as SkyPilot's `safe_load` does: an empty or null
/// document is `{}`; anything but a mapping is refused.
fn parse_doc(what: &str, text: &str) -> Result<Node, DoorError> {
    if text.trim().is_empty() {
        return Ok(Node::empty_map());
    }
    // PyYAML (YAML 1.1) takes a raw NEL, U+2028 or U+2029 for a line
    // break; reading them as one gives the structure PyYAML sees. (Such a
    // document is passed on as sent, or refused if it must be rewritten:
    // see `refuse_raw_breaks`.)
    let text: std::borrow::Cow<'_, str> = if has_raw_break(text) {
        text.replace(RAW_BREAKS, "\n").into()
    } else {
        text.into()
    };
    match yaml::parse(&text) {
        Ok(None) => Ok(Node::empty_map()),
        Ok(Some(node)) if node.is_null() => Ok(Node::empty_map()),
        Ok(Some(node @ Node::Map(_))) => Ok(node),
        Ok(Some(other)) => Err(DoorError::bad(format!(
            "`{what}` must be a YAML mapping, got {}",
            other.type_name()
        ))),
        Err(e) => Err(DoorError::bad(format!("`{what}` is not valid YAML: {e}"))),
    }
}

/// The JSON view of a document (what `warden replay` records and CEL reads).
fn parse_yaml(what: &str, text: &str) -> Result<Value, DoorError> {
    parse_doc(what, text).map(|n| n.to_json())
}

/// A field's path in the task, for messages (`resources.any_of[1].cpus`);
/// written out only when a message needs it.
#[derive(Clone, Copy)]
struct FieldPath<'a> {
    alt: Option<(&'a str, usize)>,
    key: &'a str,
}

impl Display for FieldPath<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.alt {
            Some((list, i)) => write!(f, "resources.{list}[{i}].{}", self.key),
            None => write!(f, "resources.{}", self.key),
        }
    }
}

fn field_path<'a>(alt: Option<(&'a str, usize)>, key: &'a str) -> FieldPath<'a> {
    FieldPath { alt, key }
}

fn wrong_type(path: &dyn Display, want: &str, got: &Node) -> DoorError {
    DoorError::bad(format!("`{path}` must be {want}, got {}", got.type_name()))
}

/// A scalar's text (strings, numbers, booleans); `None` for null; an error
/// naming the field for lists and mappings.
fn scalar_text(path: &dyn Display, v: Option<&Node>) -> Result<Option<String>, DoorError> {
    match v {
        None => Ok(None),
        Some(n) if n.is_null() => Ok(None),
        Some(Node::Scalar(s)) => Ok(Some(s.text.clone())),
        Some(other) => Err(wrong_type(path, "a single value", other)),
    }
}

/// The most GPUs one accelerator entry may ask for.
const MAX_GPU_COUNT: f64 = 1_000_000.0;

/// A GPU count as SkyPilot reads it: an integer, a finite float (a
/// fraction of a GPU occupies one), or a numeric string.
fn gpu_count(path: &dyn Display, name: &str, count: &Node) -> Result<u32, DoorError> {
    let Node::Scalar(s) = count else {
        return Err(DoorError::bad(format!(
            "`{path}`: the count of `{name}` must be a number, got {}; write e.g. `{name}: 8`",
            count.type_name()
        )));
    };
    let n: f64 = match s.kind {
        // Past 128 bits: as too large as any count past the limit.
        Kind::Int => yaml::int_value(&s.text).map_or(MAX_GPU_COUNT * 2.0, |i| i as f64),
        Kind::Float => yaml::float_value(&s.text).unwrap_or(f64::NAN),
        Kind::Str => s.text.trim().parse().map_err(|_| {
            DoorError::bad(format!(
                "`{path}`: count `{}` of `{name}` is not a number; write e.g. `{name}:8`",
                short(&s.text)
            ))
        })?,
        _ => {
            return Err(DoorError::bad(format!(
                "`{path}`: the count of `{name}` must be a number, got {}",
                count.type_name()
            )))
        }
    };
    let shown = short(&s.text);
    if !n.is_finite() {
        return Err(DoorError::bad(format!(
            "`{path}`: count `{shown}` of `{name}` is not a finite number; write e.g. `{name}:8`"
        )));
    }
    if n <= 0.0 {
        return Err(DoorError::bad(format!(
            "`{path}`: count `{shown}` of `{name}` must be a positive number"
        )));
    }
    if n > MAX_GPU_COUNT {
        return Err(DoorError::bad(format!(
            "`{path}`: count `{shown}` of `{name}` is too large (at most {MAX_GPU_COUNT} per accelerator)"
        )));
    }
    // Rounded up: a fraction of a GPU occupies one.
    Ok(n.ceil() as u32)
}

/// At most 40 characters of user text, for messages.
fn short(text: &str) -> String {
    let mut out: String = text.chars().take(40).collect();
    if out.len() < text.len() {
        out.push('…');
    }
    out
}

fn parse_accelerator(
    path: &dyn Display,
    spec: &str,
    count: Option<&Node>,
) -> Result<Accelerator, DoorError> {
    let (name, count) = match spec.split_once(':') {
        Some((n, c)) => (n.trim(), Some(Node::str(c.trim()))),
        None => (spec.trim(), count.filter(|c| !c.is_null()).cloned()),
    };
    let model = GpuModel::parse(name).map_err(|e| DoorError::bad(format!("`{path}`: {e}")))?;
    let count = match count {
        None => 1,
        Some(c) => gpu_count(path, name, &c)?,
    };
    Ok(Accelerator { model, count })
}

/// A GPU name used as a mapping key.
fn accelerator_key<'a>(path: &dyn Display, key: &'a Node) -> Result<&'a str, DoorError> {
    key.as_str().ok_or_else(|| {
        DoorError::bad(format!(
            "`{path}`: GPU names must be strings, got {} as a key",
            key.type_name()
        ))
    })
}

/// Expands an `accelerators` value into candidates.
fn accelerators(
    path: &dyn Display,
    v: Option<&Node>,
) -> Result<Vec<(Option<Accelerator>, AccRef)>, DoorError> {
    let want = "a string (`H100:8`), a mapping (`{H100: 8}`) or a list (`[H100:8, A100:8]`)";
    match v {
        None => Ok(vec![(None, AccRef::None)]),
        Some(n) if n.is_null() => Ok(vec![(None, AccRef::None)]),
        Some(n @ Node::Scalar(_)) => match n.as_str() {
            Some(s) => Ok(vec![(
                Some(parse_accelerator(path, s, None)?),
                AccRef::Whole,
            )]),
            None => Err(wrong_type(path, want, n)),
        },
        Some(Node::Map(m)) => {
            if m.is_empty() {
                return Ok(vec![(None, AccRef::None)]);
            }
            m.iter()
                .enumerate()
                .map(|(i, (k, c))| {
                    let name = accelerator_key(path, k)?;
                    Ok((
                        Some(parse_accelerator(path, name, Some(c))?),
                        AccRef::Key(i),
                    ))
                })
                .collect()
        }
        Some(Node::Seq(list)) => {
            if list.is_empty() {
                return Ok(vec![(None, AccRef::None)]);
            }
            list.iter()
                .enumerate()
                .map(|(i, item)| {
                    let acc = match item {
                        Node::Scalar(_) if item.as_str().is_some() => {
                            parse_accelerator(path, item.as_str().unwrap_or_default(), None)?
                        }
                        Node::Map(m) if m.len() == 1 => {
                            let (k, c) = m.first().ok_or_else(|| DoorError::bad("empty accelerator"))?;
                            parse_accelerator(path, accelerator_key(path, k)?, Some(c))?
                        }
                        other => {
                            return Err(DoorError::bad(format!(
                                "`{path}[{i}]` must be a string like `H100:8` or a one-entry mapping like `{{H100: 8}}`, got {}",
                                other.type_name()
                            )))
                        }
                    };
                    Ok((Some(acc), AccRef::Index(i)))
                })
                .collect()
        }
        Some(other) => Err(wrong_type(path, want, other)),
    }
}

/// An integer field: an integer, or a string holding one.
fn int_field(path: &dyn Display, v: Option<&Node>) -> Result<Option<i64>, DoorError> {
    let Some(v) = v.filter(|v| !v.is_null()) else {
        return Ok(None);
    };
    let parsed = match v {
        Node::Scalar(s) if s.kind == Kind::Int => yaml::int_value(&s.text),
        Node::Scalar(s) if s.kind == Kind::Str => s.text.trim().parse::<i128>().ok(),
        other => return Err(wrong_type(path, "an integer", other)),
    };
    let text = v.as_scalar().map(|s| short(&s.text)).unwrap_or_default();
    let n = parsed
        .ok_or_else(|| DoorError::bad(format!("`{path}` must be an integer, got `{text}`")))?;
    i64::try_from(n)
        .map(Some)
        .map_err(|_| DoorError::bad(format!("`{path}`: `{text}` is too large")))
}

/// Cloud, region and zone.
type Location = (Option<String>, Option<String>, Option<String>);

/// A mapping's entries.
type Entries = [(Node, Node)];

fn location(alt: Option<(&str, usize)>, m: &[(Node, Node)]) -> Result<Location, DoorError> {
    let text = |k: &str| scalar_text(&field_path(alt, k), map_get(m, k));
    if let Some(infra) = text("infra")? {
        let mut parts = infra.splitn(3, '/').map(|p| {
            let p = p.trim();
            (!p.is_empty() && p != "*").then(|| p.to_owned())
        });
        let cloud = parts.next().flatten().map(|c| normalize_cloud(&c));
        return Ok((cloud, parts.next().flatten(), parts.next().flatten()));
    }
    Ok((
        text("cloud")?.map(|c| normalize_cloud(&c)),
        text("region")?,
        text("zone")?,
    ))
}

fn ports(path: &dyn Display, v: Option<&Node>) -> Result<Vec<String>, DoorError> {
    match v {
        None => Ok(Vec::new()),
        Some(Node::Seq(items)) => items
            .iter()
            .enumerate()
            .filter_map(|(i, item)| scalar_text(&format!("{path}[{i}]"), Some(item)).transpose())
            .collect(),
        Some(other) => Ok(scalar_text(path, Some(other))?.into_iter().collect()),
    }
}

fn bool_field(path: &dyn Display, v: Option<&Node>) -> Result<bool, DoorError> {
    match v {
        None => Ok(false),
        Some(n) if n.is_null() => Ok(false),
        Some(Node::Scalar(s)) if s.kind == Kind::Bool => {
            Ok(yaml::bool_value(&s.text).unwrap_or(false))
        }
        Some(other) => Err(wrong_type(path, "true or false", other)),
    }
}

fn image_id(path: &dyn Display, v: Option<&Node>) -> Result<Option<String>, DoorError> {
    match v {
        // `{null: docker:IMG}` (what SkyPilot itself writes) or per region.
        Some(Node::Map(m)) => {
            let mut images: Vec<String> = Vec::new();
            for (_, image) in m {
                if let Some(text) = scalar_text(path, Some(image))? {
                    if !images.contains(&text) {
                        images.push(text);
                    }
                }
            }
            match images.len() {
                0 => Ok(None),
                1 => Ok(images.pop()),
                _ => Err(DoorError::bad(format!(
                    "`{path}` names {} different images; Warden judges one image per candidate: give each region its own entry under `resources.any_of`",
                    images.len()
                ))),
            }
        }
        other => scalar_text(path, other),
    }
}

/// Parses `autostop`: bool, minutes, `"30m"`/`"2h"`/`"1d"`, or `{idle_minutes, down}`.
fn autostop(path: &dyn Display, v: Option<&Node>) -> Result<Option<Autostop>, DoorError> {
    let minutes = |v: &Node| -> Result<Option<i64>, DoorError> {
        let Node::Scalar(s) = v else {
            return Err(wrong_type(path, "minutes", v));
        };
        match s.kind {
            Kind::Null => Ok(None),
            Kind::Int => yaml::int_value(&s.text)
                .and_then(|i| i64::try_from(i).ok())
                .map(Some)
                .ok_or_else(|| {
                    DoorError::bad(format!(
                        "`{path}`: `{}` minutes is too large",
                        short(&s.text)
                    ))
                }),
            Kind::Str => {
                let t = s.text.trim();
                let (num, mult) = match t.char_indices().last() {
                    Some((i, 'm')) => (t.get(..i).unwrap_or(""), 1),
                    Some((i, 'h')) => (t.get(..i).unwrap_or(""), 60),
                    Some((i, 'd')) => (t.get(..i).unwrap_or(""), 1440),
                    _ => (t, 1),
                };
                num.trim()
                    .parse::<i64>()
                    .map(|n| Some(n.saturating_mul(mult)))
                    .map_err(|_| {
                        DoorError::bad(format!(
                            "`{path}`: cannot read `{}` as minutes; write e.g. `30m`, `2h` or 30",
                            short(t)
                        ))
                    })
            }
            _ => Err(DoorError::bad(format!(
                "`{path}` must be true/false, whole minutes, `30m`/`2h`/`1d` or a mapping, got {}",
                v.type_name()
            ))),
        }
    };
    match v {
        None => Ok(None),
        Some(n) if n.is_null() => Ok(None),
        Some(Node::Scalar(s)) if s.kind == Kind::Bool => {
            if yaml::bool_value(&s.text) == Some(true) {
                // SkyPilot's default idle time for `autostop: true`.
                Ok(Some(Autostop {
                    idle_minutes: 5,
                    down: false,
                }))
            } else {
                Ok(None)
            }
        }
        Some(Node::Map(m)) => {
            let idle = match map_get(m, "idle_minutes") {
                Some(v) => minutes(v)?,
                None => Some(5),
            };
            let down = bool_field(&format!("{path}.down"), map_get(m, "down"))?;
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

/// The labels of a resources mapping: string keys, single values.
fn labels(path: &dyn Display, v: Option<&Node>) -> Result<BTreeMap<String, String>, DoorError> {
    match v {
        None => Ok(BTreeMap::new()),
        Some(n) if n.is_null() => Ok(BTreeMap::new()),
        Some(Node::Map(m)) => {
            let mut out = BTreeMap::new();
            for (k, v) in m {
                let key = k.as_str().ok_or_else(|| {
                    DoorError::bad(format!(
                        "`{path}`: label names must be strings, got {} (quote it)",
                        k.type_name()
                    ))
                })?;
                match scalar_text(&format!("{path}.{key}"), Some(v))? {
                    Some(value) => {
                        out.insert(key.to_owned(), value);
                    }
                    None => {
                        out.remove(key);
                    }
                }
            }
            Ok(out)
        }
        Some(other) => Err(wrong_type(
            path,
            "a mapping of label names to values",
            other,
        )),
    }
}

/// The SkyPilot request names (`AdminPolicyRequestName`, client 0.14.1).
pub const REQUEST_NAMES: &[&str] = &[
    "validate",
    "optimize",
    "launch",
    "exec",
    "jobs.launch",
    "jobs.launch_controller",
    "jobs.pool_apply",
    "jobs.launch_cluster",
    "serve.up",
    "serve.launch_controller",
    "serve.update",
    "serve.launch_replica",
];

/// Normalizes a decoded request for the core.
pub fn normalize(policy: &Policy, req: SkyRequest) -> Result<Normalized, DoorError> {
    if let Some(name) = &req.request_name {
        if !REQUEST_NAMES.contains(&name.as_str()) && !policy.names_request(name) {
            return Err(DoorError::bad(format!(
                "`request_name` `{}` is not a request SkyPilot sends (known: {}); no rule names it, so Warden cannot judge it",
                short(name),
                REQUEST_NAMES.join(", ")
            )));
        }
    }
    let task = parse_doc("task", &req.task)?;
    let config_text = req.skypilot_config.unwrap_or_default();
    let need_config = policy.needs_config() || policy.uses_workspaces();
    let config = if need_config {
        Some(parse_doc("skypilot_config", &config_text)?)
    } else {
        None
    };
    let user = match req.user.as_deref().map(str::trim) {
        None | Some("") => None,
        Some(text) => scalar_text(&"user.name", parse_doc("user", text)?.get("name"))?,
    };
    let workspace = match &config {
        Some(c) => scalar_text(
            &"skypilot_config.active_workspace",
            c.get("active_workspace"),
        )?,
        None => None,
    };

    let (base, alts, alt_key): (&Entries, Vec<&Entries>, &'static str) = match task.get("resources")
    {
        None => (&[], Vec::new(), "any_of"),
        Some(n) if n.is_null() => (&[], Vec::new(), "any_of"),
        Some(Node::Map(m)) => {
            let (key, list) = match (map_get(m, "any_of"), map_get(m, "ordered")) {
                (Some(_), Some(_)) => {
                    return Err(DoorError::bad(
                        "`resources` has both `any_of` and `ordered`; use one of them",
                    ))
                }
                (Some(l), None) => ("any_of", Some(l)),
                (None, Some(l)) => ("ordered", Some(l)),
                (None, None) => ("any_of", None),
            };
            let alts = match list {
                None => Vec::new(),
                Some(n) if n.is_null() => Vec::new(),
                Some(Node::Seq(items)) => items
                    .iter()
                    .enumerate()
                    .map(|(i, item)| {
                        item.as_map().ok_or_else(|| {
                            wrong_type(&format!("resources.{key}[{i}]"), "a mapping", item)
                        })
                    })
                    .collect::<Result<_, _>>()?,
                Some(other) => {
                    return Err(wrong_type(
                        &format!("resources.{key}"),
                        "a list of mappings",
                        other,
                    ))
                }
            };
            (m.as_slice(), alts, key)
        }
        Some(other) => return Err(wrong_type(&"resources", "a mapping", other)),
    };

    let num_nodes = match task.get("num_nodes") {
        None => 1,
        Some(n) if n.is_null() => 1,
        Some(v) => {
            let n = match v {
                Node::Scalar(s) if s.kind == Kind::Int => yaml::int_value(&s.text),
                other => return Err(wrong_type(&"num_nodes", "a positive integer", other)),
            };
            let text = v.as_scalar().map(|s| short(&s.text)).unwrap_or_default();
            match n {
                Some(n) if n >= 1 => u32::try_from(n)
                    .map_err(|_| DoorError::bad(format!("`num_nodes` `{text}` is too large")))?,
                _ => {
                    return Err(DoorError::bad(format!(
                        "`num_nodes` must be a positive integer, got `{text}`"
                    )))
                }
            }
        }
    };

    let mut resources = Vec::new();
    let mut origins = Vec::new();
    let alt_iter: Vec<Option<(usize, &Entries)>> = if alts.is_empty() {
        vec![None]
    } else {
        alts.iter()
            .enumerate()
            .map(|(i, a)| Some((i, *a)))
            .collect()
    };
    // The base's own fields, checked once.
    let base_labels = labels(&"resources.labels", map_get(base, "labels"))?;
    for alt in alt_iter {
        let alt_map = alt.map(|(_, m)| m);
        let at = alt.map(|(i, _)| (alt_key, i));
        // A field of the alternative, else of the base; with its path.
        let get = |k: &'static str| -> (Option<&Node>, FieldPath<'_>) {
            match alt_map.and_then(|a| map_get(a, k)) {
                Some(v) => (Some(v), field_path(at, k)),
                None => (map_get(base, k), field_path(None, k)),
            }
        };
        let acc_in_alt = alt_map.is_some_and(|m| map_get(m, "accelerators").is_some());
        // An alternative naming any location replaces the base's location.
        let (loc_at, loc_map) = match alt_map {
            Some(a)
                if ["infra", "cloud", "region", "zone"]
                    .iter()
                    .any(|k| map_get(a, k).is_some()) =>
            {
                (at, a)
            }
            _ => (None, base),
        };
        let (cloud, region, zone) = location(loc_at, loc_map)?;
        if let Some(a) = alt_map {
            labels(&field_path(at, "labels"), map_get(a, "labels"))?;
            autostop(&field_path(at, "autostop"), map_get(a, "autostop"))?;
        }
        let (disk, disk_path) = get("disk_size");
        let disk_size = int_field(&disk_path, disk)?;
        let (acc_v, acc_path) = get("accelerators");
        let (spot_v, spot_path) = get("use_spot");
        let (cpus_v, cpus_path) = get("cpus");
        let (mem_v, mem_path) = get("memory");
        let (img_v, img_path) = get("image_id");
        let (ports_v, ports_path) = get("ports");
        let spot = bool_field(&spot_path, spot_v)?;
        let cpus = scalar_text(&cpus_path, cpus_v)?;
        let memory = scalar_text(&mem_path, mem_v)?;
        let image = image_id(&img_path, img_v)?;
        let ports = ports(&ports_path, ports_v)?;
        for (accelerator, acc) in accelerators(&acc_path, acc_v)? {
            resources.push(Resource {
                accelerator,
                cloud: cloud.clone(),
                region: region.clone(),
                zone: zone.clone(),
                use_spot: spot,
                cpus: cpus.clone(),
                memory: memory.clone(),
                disk_size,
                image_id: image.clone(),
                ports: ports.clone(),
                quote: None,
                host: None,
            });
            origins.push(Origin {
                alt: alt.map(|(i, _)| i),
                acc,
                acc_in_alt,
            });
        }
    }

    let mut auto = autostop(&"resources.autostop", map_get(base, "autostop"))?;
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
    let volumes = match task.get("volumes") {
        None => BTreeMap::new(),
        Some(n) if n.is_null() => BTreeMap::new(),
        Some(Node::Map(m)) => m
            .iter()
            .map(|(k, v)| match k.as_scalar() {
                Some(s) => Ok((s.text.clone(), v.to_json())),
                None => Err(wrong_type(&"volumes", "a mapping of paths to volumes", k)),
            })
            .collect::<Result<_, _>>()?,
        Some(other) => {
            return Err(wrong_type(
                &"volumes",
                "a mapping of paths to volumes",
                other,
            ))
        }
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
    request.labels = base_labels;
    request.volumes = volumes;
    if policy.needs_task() {
        request.task = task.to_json();
    }
    if policy.needs_config() {
        if let Some(c) = &config {
            request.config = c.to_json();
        }
    }
    Ok(Normalized {
        request,
        rewrite: Rewrite {
            task,
            config,
            origins,
            alt_key,
            task_text: req.task,
            config_text,
        },
    })
}

/// The resources mapping of a task, created when absent.
fn resources_mut(task: &mut Node) -> &mut Node {
    let res = task.entry("resources");
    res.make_map();
    res
}

/// The mapping a candidate's settings live in: its alternative, or the base.
fn target<'a>(task: &'a mut Node, alt_key: &str, alt: Option<usize>) -> Option<&'a mut Node> {
    let res = resources_mut(task);
    match alt {
        None => Some(res),
        Some(i) => {
            let list = res
                .as_map_mut()?
                .iter_mut()
                .rev()
                .find(|(k, _)| k.as_str() == Some(alt_key))?;
            list.1
                .as_seq_mut()?
                .get_mut(i)
                .filter(|n| matches!(n, Node::Map(_)))
        }
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

impl Rewrite {
    fn set_resource(&self, task: &mut Node, idx: usize, field: ResourceField, value: &Value) {
        let Some(origin) = self.origins.get(idx) else {
            return;
        };
        let base_infra = resources_mut(task)
            .get("infra")
            .and_then(Node::as_str)
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
            .and_then(Node::as_str)
            .map(str::to_owned)
            .or_else(|| {
                // An alternative without its own location inherits the base's infra.
                (origin.alt.is_some()
                    && t.get("cloud").is_none()
                    && t.get("region").is_none()
                    && t.get("zone").is_none())
                .then_some(base_infra)
                .flatten()
            });
        match (is_location, infra, value.as_str()) {
            (true, Some(infra), Some(v)) => {
                t.set("infra", Node::str(rewrite_infra(&infra, field, v)));
            }
            _ => t.set(field.as_str(), Node::from_json(value)),
        }
    }

    fn prune(&self, task: &mut Node, removed: &[usize]) {
        // Group removals by container, then remove from the back so indices hold.
        let mut whole_alts: Vec<usize> = Vec::new();
        let mut refs: BTreeMap<(Option<usize>, bool), Vec<usize>> = BTreeMap::new();
        for i in removed {
            let Some(o) = self.origins.get(*i) else {
                continue;
            };
            match (&o.acc, o.alt) {
                (AccRef::Whole | AccRef::None, Some(a)) => whole_alts.push(a),
                (AccRef::Whole | AccRef::None, None) => {}
                (AccRef::Key(at) | AccRef::Index(at), alt) => {
                    refs.entry((alt, o.acc_in_alt)).or_default().push(*at)
                }
            }
        }
        for ((alt, in_alt), mut at) in refs {
            let container = if in_alt { alt } else { None };
            let Some(t) = target(task, self.alt_key, container) else {
                continue;
            };
            let Some(entries) = t.as_map_mut() else {
                continue;
            };
            let Some((_, accs)) = entries
                .iter_mut()
                .rev()
                .find(|(k, _)| k.as_str() == Some("accelerators"))
            else {
                continue;
            };
            at.sort_unstable();
            at.dedup();
            let now_empty = match accs {
                Node::Map(m) => {
                    for i in at.into_iter().rev() {
                        if i < m.len() {
                            m.remove(i);
                        }
                    }
                    m.is_empty()
                }
                Node::Seq(list) => {
                    for i in at.into_iter().rev() {
                        if i < list.len() {
                            list.remove(i);
                        }
                    }
                    list.is_empty()
                }
                _ => false,
            };
            if now_empty {
                if let Some(a) = alt {
                    whole_alts.push(a);
                }
            }
        }
        whole_alts.sort_unstable();
        whole_alts.dedup();
        if let Some((_, list)) = resources_mut(task).as_map_mut().and_then(|m| {
            m.iter_mut()
                .rev()
                .find(|(k, _)| k.as_str() == Some(self.alt_key))
        }) {
            if let Some(list) = list.as_seq_mut() {
                for a in whole_alts.into_iter().rev() {
                    if a < list.len() {
                        list.remove(a);
                    }
                }
            }
        }
    }

    /// Every mapping labels/autostop go to: the base, and alternatives that
    /// carry their own value (which would otherwise shadow the base's).
    fn with_base_and_overrides(&self, task: &mut Node, key: &str, f: &dyn Fn(&mut Node)) {
        let res = resources_mut(task);
        f(res.entry(key));
        let alt_key = self.alt_key;
        if let Some(Node::Seq(list)) = res
            .as_map_mut()
            .and_then(|m| {
                m.iter_mut()
                    .rev()
                    .find(|(k, _)| k.as_str() == Some(alt_key))
            })
            .map(|(_, v)| v)
        {
            for alt in list.iter_mut().filter(|a| matches!(a, Node::Map(_))) {
                if alt.get(key).is_some() {
                    f(alt.entry(key));
                }
            }
        }
    }

    /// Applies an allowing decision; returns the task and config texts.
    /// Takes the documents out of `self` (they are not needed after).
    pub fn apply(&mut self, decision: &Decision) -> Result<(String, String), DoorError> {
        if decision.mutations.is_empty() {
            return Ok((
                std::mem::take(&mut self.task_text),
                std::mem::take(&mut self.config_text),
            ));
        }
        let mut task = std::mem::replace(&mut self.task, Node::empty_map());
        let mut task_changed = false;
        let mut config: Option<Node> = None;
        for applied in &decision.mutations {
            match &applied.mutation {
                Mutation::UseSpot { resources } => {
                    for i in resources {
                        if let Some(o) = self.origins.get(*i) {
                            if let Some(t) = target(&mut task, self.alt_key, o.alt) {
                                t.set("use_spot", Node::from_json(&Value::Bool(true)));
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
                    let v = Node::from_json(
                        &serde_json::json!({"idle_minutes": a.idle_minutes, "down": a.down}),
                    );
                    self.with_base_and_overrides(&mut task, "autostop", &|slot| *slot = v.clone());
                    task_changed = true;
                }
                Mutation::AddLabels { labels } => {
                    self.with_base_and_overrides(&mut task, "labels", &|slot| {
                        for (k, v) in labels {
                            slot.set(k, Node::str(v.clone()));
                        }
                    });
                    task_changed = true;
                }
                Mutation::AddVolumes { volumes } => {
                    let m = task.entry("volumes");
                    for (k, v) in volumes {
                        m.set(k, Node::from_json(v));
                    }
                    task_changed = true;
                }
                Mutation::SetPath {
                    doc: Doc::Task,
                    path,
                    value,
                } => {
                    task.set_path(path, Node::from_json(value));
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
                            let parsed = match self.config.take() {
                                Some(c) => c,
                                None => parse_doc("skypilot_config", &self.config_text)?,
                            };
                            config.insert(parsed)
                        }
                    };
                    cfg.set_path(path, Node::from_json(value));
                }
            }
        }
        let task_text = if task_changed {
            refuse_raw_breaks("task", &self.task_text)?;
            yaml::to_string(&task, self.task_text.len())
        } else {
            std::mem::take(&mut self.task_text)
        };
        let config_text = match config {
            Some(c) => {
                refuse_raw_breaks("skypilot_config", &self.config_text)?;
                yaml::to_string(&c, self.config_text.len())
            }
            None => std::mem::take(&mut self.config_text),
        };
        Ok((task_text, config_text))
    }
}

/// YAML 1.1 line breaks other than `\n` and `\r`.
const RAW_BREAKS: [char; 3] = ['\u{85}', '\u{2028}', '\u{2029}'];

/// Whether `text` holds a raw NEL, U+2028 or U+2029 (ASCII text, the
/// usual case, is ruled out by one vectorized pass).
fn has_raw_break(text: &str) -> bool {
    !text.is_ascii() && text.contains(RAW_BREAKS)
}

/// PyYAML reads a raw NEL, U+2028 or U+2029 as a line break (YAML 1.1);
/// Warden's reader (YAML 1.2) does not, so it cannot promise to rewrite
/// such a document exactly. SkyPilot's client never sends one (it escapes
/// every non-ASCII character); a document that must be changed and holds
/// one is refused rather than altered.
fn refuse_raw_breaks(what: &str, text: &str) -> Result<(), DoorError> {
    if !has_raw_break(text) {
        return Ok(());
    }
    match text.find(RAW_BREAKS) {
        None => Ok(()),
        Some(at) => {
            let line = text.get(..at).unwrap_or_default().matches('\n').count() + 1;
            Err(DoorError::bad(format!(
                "`{what}` line {line} holds a raw YAML 1.1 line break (U+0085, U+2028 or U+2029) that Warden cannot rewrite exactly; write it escaped (`\\N`, `\\L`, `\\P` in a double-quoted string)"
            )))
        }
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
    crate::json_text::push_escaped(&mut out, task, Times::Twice);
    out.push_str(r#"\",\"skypilot_config\":\""#);
    crate::json_text::push_escaped(&mut out, config, Times::Twice);
    out.push_str(r#"\"}""#);
    out
}

/// Handles one request body end to end: decode, normalize, decide, apply.
/// Pure: used by the HTTP door, `warden decide` and `warden test` alike.
pub fn handle(policy: &Policy, body: &[u8]) -> Result<Handled, DoorError> {
    let req = parse_body(body)?;
    handle_request(policy, req)
}

/// Handles a decoded request: normalize, then the gate's store-free
/// decision with this door's apply step.
pub fn handle_request(policy: &Policy, req: SkyRequest) -> Result<Handled, DoorError> {
    let Normalized {
        request,
        mut rewrite,
    } = normalize(policy, req)?;
    let (decision, applied) = crate::gate::decide(policy, &request, |d| {
        rewrite.apply(d).map(crate::gate::Applied::all)
    })?;
    Ok(match applied {
        Some(applied) => {
            let (task, config) = applied.value;
            Handled {
                answer: Answer::Allow(encode_answer(&task, &config)),
                request,
                decision,
                task,
                config,
            }
        }
        None => Handled {
            answer: Answer::Deny(decision.denial_message()),
            request,
            decision,
            task: rewrite.task_text,
            config: rewrite.config_text,
        },
    })
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
}
