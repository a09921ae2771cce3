//! Normalization: a SkyPilot request, its task read as PyYAML reads it,
//! becomes the core's [`LaunchRequest`] (one candidate per accelerator
//! choice), with the [`Rewrite`] that applies a decision back. Governed
//! fields of the wrong type or value are refused naming the field.

use std::collections::BTreeMap;
use std::fmt::Display;

use warden_core::{
    normalize_cloud, Accelerator, Autostop, Door, GpuModel, LaunchRequest, Policy, Resource,
};

use super::apply::{AccRef, Origin, Rewrite};
use super::wire::{parse_doc, SkyRequest};
use super::yaml::{self, map_get, Kind, Node};
use crate::error::DoorError;

/// A request normalized for the core, with what the door needs to apply a
/// decision back.
#[derive(Debug)]
pub struct Normalized {
    /// The request for the core.
    pub request: LaunchRequest,
    /// The wire documents, to apply a decision to.
    pub rewrite: Rewrite,
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
        Some(text) => {
            let record = parse_doc("user", text)?;
            let name = scalar_text(&"user.name", record.get("name"))?;
            let id = scalar_text(&"user.id", record.get("id"))?;
            policy
                .skypilot_user_claim()
                .pick(name.as_deref(), id.as_deref())
        }
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
