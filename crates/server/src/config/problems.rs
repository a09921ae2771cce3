//! Every problem of a config file that does not deserialize, not just the
//! first, and error text that stays short whatever the file holds.
//!
//! serde stops at the first error. When the whole file does not
//! deserialize, [`parse_problems`] reads it again as a YAML tree and
//! deserializes each top-level key on its own, and each entry of `teams`,
//! `prices` and `rules` on its own, so one bad team does not hide another.
//! A tree has no line numbers, so each problem's line comes from an index
//! of where every key path starts ([`key_lines`]).

use std::collections::HashMap;

use saphyr_parser::{Event, Parser};
use serde::de::DeserializeOwned;
use serde_norway::Value;

use super::quote::{cap, clip, clip_quoted};
use super::{vast, BudgetAlertsFile, SkypilotApiFile};
use warden_core::policy::{PriceSpec, RuleSpec, TeamFromLabel, TeamSpec};

/// The top-level keys a config file may have.
pub(super) const TOP_LEVEL_KEYS: &[&str] = &[
    "storage",
    "storage_timeout_seconds",
    "default_team",
    "team_from_label",
    "teams",
    "prices",
    "rules",
    "role_bindings",
    "skypilot_api",
    "time_zone",
    "budget_alerts",
    "vast",
    "keys",
    "skypilot",
    "exceptions",
    "identity",
    "kubernetes",
];

/// The problems of a config text that does not deserialize, each as
/// `path: problem (line N)`. Empty when the text is not a mapping of
/// mappings this pass can read (the caller then reports serde's own error).
pub(super) fn parse_problems(text: &str) -> Vec<String> {
    let Ok(Value::Mapping(top)) = serde_norway::from_str::<Value>(text) else {
        return Vec::new();
    };
    let mut found: Vec<(String, String)> = Vec::new();
    for (key, value) in top {
        let Value::String(key) = key else {
            found.push((
                ".".to_owned(),
                format!(
                    "a top-level key is not a string ({}); known keys: {}",
                    clip(&describe(&key)),
                    TOP_LEVEL_KEYS.join(", ")
                ),
            ));
            continue;
        };
        match key.as_str() {
            "teams" => entries::<TeamSpec>("teams", value, &mut found),
            "prices" => entries::<PriceSpec>("prices", value, &mut found),
            "rules" => items::<RuleSpec>("rules", value, &mut found),
            "role_bindings" => {
                items::<warden_core::access::RoleBindingSpec>("role_bindings", value, &mut found)
            }
            "storage" | "default_team" | "time_zone" => {
                one::<Option<String>>(&key, value, &mut found);
            }
            "storage_timeout_seconds" => one::<Option<u64>>(&key, value, &mut found),
            "team_from_label" => one::<TeamFromLabel>(&key, value, &mut found),
            "skypilot_api" => one::<Option<SkypilotApiFile>>(&key, value, &mut found),
            "budget_alerts" => one::<Option<BudgetAlertsFile>>(&key, value, &mut found),
            "vast" => one::<Option<vast::VastFile>>(&key, value, &mut found),
            "keys" => one::<Option<super::KeysFile>>(&key, value, &mut found),
            "skypilot" => one::<Option<super::SkypilotDoorFile>>(&key, value, &mut found),
            "exceptions" => one::<Option<super::ExceptionsFile>>(&key, value, &mut found),
            "identity" => one::<Option<super::identity::IdentityFile>>(&key, value, &mut found),
            "kubernetes" => {
                one::<Option<super::kubernetes::KubernetesFile>>(&key, value, &mut found);
            }
            other => found.push((
                other.to_owned(),
                format!(
                    "unknown key `{}`; known keys: {}",
                    clip(other),
                    TOP_LEVEL_KEYS.join(", ")
                ),
            )),
        }
    }
    let lines = key_lines(text);
    found
        .into_iter()
        .map(|(path, problem)| {
            let problem = clip_quoted(&problem);
            match line_of(&lines, &path) {
                Some(line) => format!("line {line}: {path}: {problem}"),
                None => format!("{path}: {problem}"),
            }
        })
        .map(|line| cap(&line))
        .collect()
}

/// Deserializes `value` as `T`; a problem is `(prefix.path, message)`.
fn one<T: DeserializeOwned>(prefix: &str, value: Value, found: &mut Vec<(String, String)>) {
    if let Err(e) = serde_path_to_error::deserialize::<_, T>(value) {
        let path = join(prefix, &e.path().to_string());
        found.push((path, e.into_inner().to_string()));
    }
}

/// Each entry of the mapping `value` as a `T` on its own.
fn entries<T: DeserializeOwned>(key: &str, value: Value, found: &mut Vec<(String, String)>) {
    match value {
        Value::Null => {}
        Value::Mapping(map) => {
            for (name, entry) in map {
                match name {
                    Value::String(name) => one::<T>(&format!("{key}.{name}"), entry, found),
                    other => found.push((
                        key.to_owned(),
                        format!("a name is not a string ({})", clip(&describe(&other))),
                    )),
                }
            }
        }
        other => found.push((
            key.to_owned(),
            format!("expected a mapping of names, found {}", describe(&other)),
        )),
    }
}

/// Each item of the list `value` as a `T` on its own.
fn items<T: DeserializeOwned>(key: &str, value: Value, found: &mut Vec<(String, String)>) {
    match value {
        Value::Null => {}
        Value::Sequence(list) => {
            for (i, item) in list.into_iter().enumerate() {
                one::<T>(&format!("{key}[{i}]"), item, found);
            }
        }
        other => found.push((
            key.to_owned(),
            format!("expected a list, found {}", describe(&other)),
        )),
    }
}

/// `prefix` and serde_path_to_error's path below it (`.` for none).
fn join(prefix: &str, below: &str) -> String {
    // A `?` segment is a place serde could not name (inside a key): the
    // path up to it is the precise part.
    let below = below.split(".?").next().unwrap_or("");
    match below {
        "" | "." | "?" => prefix.to_owned(),
        b if b.starts_with('[') => format!("{prefix}{b}"),
        b => format!("{prefix}.{b}"),
    }
}

fn describe(v: &Value) -> String {
    match v {
        Value::Null => "null".to_owned(),
        Value::Bool(b) => format!("the boolean `{b}`"),
        Value::Number(n) => format!("the number `{n}`"),
        Value::String(s) => format!("the string `{s}`"),
        Value::Sequence(_) => "a list".to_owned(),
        Value::Mapping(_) => "a mapping".to_owned(),
        Value::Tagged(_) => "a tagged value".to_owned(),
    }
}

/// The line of `path`, or of the nearest enclosing key that has one.
fn line_of(lines: &HashMap<String, usize>, path: &str) -> Option<usize> {
    let mut p = path;
    loop {
        if let Some(line) = lines.get(p) {
            return Some(*line);
        }
        let cut = p.rfind(['.', '['])?;
        p = p.get(..cut)?;
    }
}

/// Where each key path of the first document starts (`teams.ml.quotas`,
/// `rules[0].name`), for scalar keys. Stops quietly at a syntax error.
pub(super) fn key_lines(text: &str) -> HashMap<String, usize> {
    enum Frame {
        /// A mapping: the path of its key awaiting a value, if any.
        Map { path: String, key: Option<String> },
        /// A sequence: its path and the index of its next item.
        Seq { path: String, next: usize },
    }
    fn child_path(stack: &mut [Frame]) -> Option<String> {
        match stack.last_mut() {
            None => Some(String::new()),
            Some(Frame::Map { key, .. }) => key.take(),
            Some(Frame::Seq { path, next }) => {
                let p = format!("{path}[{next}]");
                *next += 1;
                Some(p)
            }
        }
    }
    let mut lines = HashMap::new();
    let mut stack: Vec<Frame> = Vec::new();
    for event in Parser::new_from_str(text) {
        let Ok((event, span)) = event else { break };
        match event {
            Event::DocumentEnd => break,
            Event::MappingStart(..) | Event::SequenceStart(..) => {
                let path = child_path(&mut stack).unwrap_or_default();
                stack.push(match event {
                    Event::MappingStart(..) => Frame::Map { path, key: None },
                    _ => Frame::Seq { path, next: 0 },
                });
            }
            Event::MappingEnd | Event::SequenceEnd => {
                stack.pop();
            }
            Event::Scalar(value, ..) => {
                let is_key_position = matches!(stack.last(), Some(Frame::Map { key: None, .. }));
                if is_key_position {
                    if let Some(Frame::Map { path, key }) = stack.last_mut() {
                        let full = if path.is_empty() {
                            value.to_string()
                        } else {
                            format!("{path}.{value}")
                        };
                        lines.entry(full.clone()).or_insert(span.start.line());
                        *key = Some(full);
                    }
                } else {
                    let _ = child_path(&mut stack);
                }
            }
            Event::Alias(_) => {
                let _ = child_path(&mut stack);
            }
            _ => {}
        }
        if lines.len() > 100_000 {
            break;
        }
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every top-level key the config file takes is known here too: a
    /// key missing from the list would be reported as unknown whenever
    /// another part of the file is wrong. serde's own list of the fields of
    /// the file is the reference.
    #[test]
    fn the_known_keys_are_the_config_files_keys() {
        let e = serde_norway::from_str::<super::super::ConfigFile>("no_such_key_x: 1\n")
            .unwrap_err()
            .to_string();
        let listed = e.split("expected one of").nth(1).unwrap_or_default();
        let mut fields: Vec<&str> = listed
            .split(',')
            .map(|f| {
                f.trim()
                    .trim_matches(|c: char| !c.is_ascii_alphanumeric() && c != '_')
            })
            .filter(|f| !f.is_empty())
            .collect();
        fields.sort_unstable();
        let mut known = TOP_LEVEL_KEYS.to_vec();
        known.sort_unstable();
        assert_eq!(fields, known, "{e}");

        // A wrong value inside `kubernetes` is named by its path, beside a
        // problem elsewhere.
        let p = parse_problems("teams: 7\nkubernetes:\n  gpu_resources: 5\n");
        assert!(
            p.iter().any(|l| l.contains("kubernetes.gpu_resources")),
            "{p:#?}"
        );
        assert!(!p.iter().any(|l| l.contains("unknown key")), "{p:#?}");
    }

    #[test]
    fn every_bad_section_and_entry_is_named_with_its_line() {
        let text = "storage: none\nteams:\n  ml:\n    quotas: {max_gpus: -3}\n    bogus: 1\n  ops:\n    users: 7\n  ok: {}\nrules:\n  - name: x\n    bad: 1\nwhat: 1\n";
        let p = parse_problems(text);
        assert_eq!(p.len(), 4, "{p:#?}");
        assert!(
            p.iter()
                .any(|l| l.starts_with("line 4: teams.ml.quotas.max_gpus: ")),
            "{p:#?}"
        );
        assert!(
            p.iter().any(|l| l.starts_with("line 7: teams.ops.users: ")),
            "{p:#?}"
        );
        assert!(
            p.iter().any(|l| l.starts_with("line 11: rules[0].bad: ")
                || l.starts_with("line 10: rules[0]: ")),
            "{p:#?}"
        );
        assert!(
            p.iter()
                .any(|l| l.starts_with("line 12: what: unknown key `what`")),
            "{p:#?}"
        );
        // Each path once.
        for l in &p {
            let path = format!("{}:", l.split(": ").nth(1).unwrap());
            assert_eq!(l.matches(&path).count(), 1, "{l}");
        }
    }

    #[test]
    fn long_values_are_quoted_short() {
        let big = "a".repeat(5_000_000);
        let text = format!("teams:\n  ml:\n    users: {big}\n");
        let p = parse_problems(&text);
        assert_eq!(p.len(), 1, "{p:?}");
        assert!(p[0].len() < 400, "{} bytes", p[0].len());
        assert!(p[0].contains("5000000 bytes in all"), "{}", p[0]);
        assert!(p[0].starts_with("line 3: teams.ml.users: "), "{}", p[0]);
        // Clipping a clipped message changes nothing.
        assert_eq!(clip_quoted(&p[0]), p[0]);
    }

    #[test]
    fn key_lines_follow_maps_and_lists() {
        let l = key_lines("a:\n  b: 1\n  c:\n    - x: 1\n    - {y: 2}\nd: [1, {z: 3}]\n");
        assert_eq!(l.get("a.b"), Some(&2));
        assert_eq!(l.get("a.c[0].x"), Some(&4));
        assert_eq!(l.get("a.c[1].y"), Some(&5));
        assert_eq!(l.get("d[1].z"), Some(&6));
        assert_eq!(line_of(&l, "a.c[1].y.deeper"), Some(5));
    }
}
