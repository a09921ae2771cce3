//! Applying an allowing decision back to SkyPilot's documents: each
//! mutation is written into the task (or config) where the candidate came
//! from; a changed document is emitted as YAML that PyYAML reads back as the
//! user's document plus Warden's changes, an untouched one is passed on
//! byte for byte.

use std::collections::BTreeMap;

use serde_json::Value;
use warden_core::{Decision, Doc, Mutation, ResourceField};

use super::wire::{parse_doc, refuse_raw_breaks};
use super::yaml::{self, Node};
use crate::error::DoorError;

/// Where a candidate came from in the task document.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum AccRef {
    None,
    Whole,
    /// The entry's place in an `accelerators` mapping.
    Key(usize),
    /// The item's place in an `accelerators` list.
    Index(usize),
}

#[derive(Debug, Clone)]
pub(super) struct Origin {
    /// Index into `resources.any_of` / `resources.ordered`.
    pub(super) alt: Option<usize>,
    /// Where the accelerator entry lives.
    pub(super) acc: AccRef,
    /// Whether `accelerators` is in the alternative (vs the base).
    pub(super) acc_in_alt: bool,
}

/// The task and config as sent and as PyYAML reads them: what the door
/// applies an allowing decision to ([`Rewrite::apply`]).
#[derive(Debug)]
pub struct Rewrite {
    /// The task as PyYAML reads it.
    pub(super) task: Node,
    /// The config as PyYAML reads it, when parsed.
    pub(super) config: Option<Node>,
    pub(super) origins: Vec<Origin>,
    pub(super) alt_key: &'static str,
    pub(super) task_text: String,
    pub(super) config_text: String,
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
