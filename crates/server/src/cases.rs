//! Policy test cases: YAML files of requests and expected decisions, run
//! offline through the same door code the server uses (`warden test`).
//!
//! ```yaml
//! policy: { teams: {...}, rules: [...] }   # optional; else --config
//! cases:
//!   - note: GPU tasks are switched to spot
//!     policy: {...}                        # optional per-case override
//!     request:
//!       request_name: launch               # default launch
//!       user: alice                        # server-side user (omit: client side)
//!       task: { resources: { accelerators: H100:8 } }
//!       config: { active_workspace: research }
//!       request_options: { idle_minutes_to_autostop: 30 }
//!       client_api_version: 62
//!       # or: body: path/to/captured.json (relative to this file)
//!       # or, at the Vast door, what its audit record keeps, with the team:
//!       # vast: {team: ml, user: alice, offer: 1033,
//!       #        offer_facts: {gpu_name: RTX 4090, num_gpus: 1, dph_total: 0.5,
//!       #                      reliability2: 0.99, verified: true, host_id: 12},
//!       #        body: {image: pytorch/pytorch, disk: 20}}
//!       # (or start: ID with instance_facts: {...} for a restart)
//!     want:
//!       verdict: allow                     # allow | deny
//!       team: ml                           # or null
//!       denied: [rule, ...]                # exact, in order
//!       warned: [rule, ...]
//!       mutated: [rule, ...]
//!       message: [substring, ...]          # in the denial message
//!       task: { resources: { use_spot: true } }   # subset of the returned task
//!                                          # (Vast: of the create body sent upstream)
//!       config: { ... }                    # subset of the returned config
//! ```

use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_json::Value;
use warden_core::{Policy, PolicySpec};

use crate::doors::skypilot::{self, RequestOptions, SkyRequest};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CaseFile {
    #[serde(default)]
    policy: Option<Value>,
    cases: Vec<Case>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Case {
    note: String,
    #[serde(default)]
    policy: Option<Value>,
    request: CaseRequest,
    want: Want,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CaseRequest {
    #[serde(default)]
    body: Option<PathBuf>,
    #[serde(default)]
    vast: Option<Value>,
    #[serde(default)]
    request_name: Option<String>,
    #[serde(default)]
    user: Option<String>,
    #[serde(default)]
    at_client_side: Option<bool>,
    #[serde(default)]
    task: Option<Value>,
    #[serde(default)]
    config: Option<Value>,
    #[serde(default)]
    request_options: Option<Value>,
    #[serde(default)]
    client_api_version: Option<i64>,
    #[serde(default)]
    client_version: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Want {
    #[serde(default)]
    verdict: Option<String>,
    #[serde(default)]
    team: Option<Option<String>>,
    #[serde(default)]
    denied: Option<Vec<String>>,
    #[serde(default)]
    warned: Option<Vec<String>>,
    #[serde(default)]
    mutated: Option<Vec<String>>,
    #[serde(default)]
    message: Option<Vec<String>>,
    #[serde(default)]
    task: Option<Value>,
    #[serde(default)]
    config: Option<Value>,
}

/// The outcome of one case.
#[derive(Debug)]
pub struct CaseResult {
    /// `file: note`.
    pub name: String,
    /// Empty when the case passed; else one line per mismatch.
    pub failures: Vec<String>,
}

impl CaseResult {
    /// Whether the case passed.
    pub fn passed(&self) -> bool {
        self.failures.is_empty()
    }
}

fn policy_from_value(v: &Value) -> Result<Policy, String> {
    let spec: PolicySpec = serde_path_to_error::deserialize(v).map_err(|e| {
        let path = e.path().to_string();
        format!("policy.{path}: {}", e.into_inner())
    })?;
    Policy::compile(spec).map_err(|e| {
        e.problems
            .iter()
            .map(|p| format!("policy.{p}"))
            .collect::<Vec<_>>()
            .join("; ")
    })
}

fn yaml_text(v: &Value) -> Result<String, String> {
    match v {
        Value::String(s) => Ok(s.clone()),
        other => serde_norway::to_string(other).map_err(|e| e.to_string()),
    }
}

fn build_request(dir: &Path, r: &CaseRequest) -> Result<SkyRequest, String> {
    if let Some(body) = &r.body {
        let path = dir.join(body);
        let bytes =
            std::fs::read(&path).map_err(|e| format!("cannot read `{}`: {e}", path.display()))?;
        return skypilot::parse_body(&bytes).map_err(|e| format!("`{}`: {e}", path.display()));
    }
    let task = yaml_text(
        r.task
            .as_ref()
            .unwrap_or(&Value::Object(Default::default())),
    )?;
    let config = yaml_text(
        r.config
            .as_ref()
            .unwrap_or(&Value::Object(Default::default())),
    )?;
    let request_options = match &r.request_options {
        None => None,
        Some(v) => Some(
            serde_json::from_value::<RequestOptions>(v.clone())
                .map_err(|e| format!("request.request_options: {e}"))?,
        ),
    };
    Ok(SkyRequest {
        task,
        skypilot_config: Some(config),
        request_name: Some(
            r.request_name
                .clone()
                .unwrap_or_else(|| "launch".to_owned()),
        ),
        request_options,
        at_client_side: r.at_client_side.unwrap_or(r.user.is_none()),
        user: Some(
            r.user
                .as_ref()
                .map(|u| format!("id: test\nname: {u}\n"))
                .unwrap_or_default(),
        ),
        client_api_version: r.client_api_version,
        client_version: r.client_version.clone(),
    })
}

/// Checks that every key in `want` is in `got` with an equal value
/// (maps compared as subsets, everything else exactly).
fn subset(path: &str, want: &Value, got: Option<&Value>, out: &mut Vec<String>) {
    match (want, got) {
        (Value::Object(w), Some(Value::Object(g))) => {
            for (k, wv) in w {
                subset(&format!("{path}.{k}"), wv, g.get(k), out);
            }
        }
        (Value::Null, None) => {}
        (w, Some(g)) if w == g => {}
        (w, g) => out.push(format!(
            "{path}: want {w}, got {}",
            g.map_or("(absent)".to_owned(), Value::to_string)
        )),
    }
}

/// A Vast case: its decision, and the create body as the door would send
/// it upstream (YAML text, empty when nothing would be sent).
fn vast_case(policy: &Policy, vast: &Value) -> Result<(warden_core::Decision, String), String> {
    let team = vast
        .get("team")
        .and_then(Value::as_str)
        .ok_or("request.vast.team: name the team whose key makes the request")?;
    let user = vast.get("user").and_then(Value::as_str);
    let decided = crate::doors::vast::offline::decide(policy, team, user, vast)
        .map_err(|e| format!("the door rejected the request: {e}"))?;
    let body = match &decided.body {
        Some(b) => yaml_text(b)?,
        None => String::new(),
    };
    Ok((decided.decision, body))
}

fn check(want: &Want, d: &warden_core::Decision, task: &str, config: &str) -> Vec<String> {
    let mut out = Vec::new();
    let reasons = || {
        d.reasons
            .iter()
            .map(|r| format!("\n      {:?} {}: {}", r.effect, r.rule, r.message))
            .collect::<String>()
    };
    if let Some(v) = &want.verdict {
        let got = if d.is_allowed() { "allow" } else { "deny" };
        if v != got {
            out.push(format!(
                "verdict: want {v}, got {got}; reasons:{}",
                reasons()
            ));
        }
    }
    if let Some(t) = &want.team {
        let got = d.team.as_ref().map(|t| t.to_string());
        if *t != got {
            out.push(format!("team: want {t:?}, got {got:?}"));
        }
    }
    for (what, want_list, got) in [
        ("denied", &want.denied, d.denied_by()),
        ("warned", &want.warned, d.warned_by()),
        ("mutated", &want.mutated, d.mutated_by()),
    ] {
        if let Some(w) = want_list {
            let got: Vec<String> = got.iter().map(|r| r.to_string()).collect();
            if *w != got {
                out.push(format!(
                    "{what}: want {w:?}, got {got:?}; reasons:{}",
                    reasons()
                ));
            }
        }
    }
    if let Some(parts) = &want.message {
        let msg = d.denial_message();
        for p in parts {
            if !msg.contains(p.as_str()) {
                out.push(format!(
                    "message: want it to contain {p:?}, got:\n      {msg}"
                ));
            }
        }
    }
    for (what, want_doc, text) in [("task", &want.task, task), ("config", &want.config, config)] {
        if let Some(w) = want_doc {
            // Read as SkyPilot reads it (PyYAML, YAML 1.1).
            match skypilot::yaml::parse(text).map(|n| n.map_or(Value::Null, |n| n.to_json())) {
                Ok(got) => subset(what, w, Some(&got), &mut out),
                Err(e) => out.push(format!("{what}: the returned document does not parse: {e}")),
            }
        }
    }
    out
}

/// Runs every case in a file. `default_policy` is used for cases whose file
/// and case give no `policy`.
pub fn run_file(path: &Path, default_policy: Option<&Policy>) -> Result<Vec<CaseResult>, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("{}: cannot read: {e}", path.display()))?;
    warden_core::check_depth(&text, warden_core::MAX_CONFIG_DEPTH)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    let de = serde_norway::Deserializer::from_str(&text);
    let file: CaseFile = serde_path_to_error::deserialize(de).map_err(|e| {
        let at = e.path().to_string();
        format!("{}: {at}: {}", path.display(), e.into_inner())
    })?;
    let dir = path.parent().unwrap_or(Path::new("."));
    let file_policy = match &file.policy {
        Some(v) => Some(policy_from_value(v).map_err(|e| format!("{}: {e}", path.display()))?),
        None => None,
    };
    let mut results = Vec::new();
    for (i, case) in file.cases.iter().enumerate() {
        let name = format!("{}: [{i}] {}", path.display(), case.note);
        let case_policy = match &case.policy {
            Some(v) => match policy_from_value(v) {
                Ok(p) => Some(p),
                Err(e) => {
                    results.push(CaseResult {
                        name,
                        failures: vec![e],
                    });
                    continue;
                }
            },
            None => None,
        };
        let Some(policy) = case_policy
            .as_ref()
            .or(file_policy.as_ref())
            .or(default_policy)
        else {
            results.push(CaseResult {
                name,
                failures: vec![
                    "no policy: give `policy` in the file or the case, or pass --config".to_owned(),
                ],
            });
            continue;
        };
        let failures = match &case.request.vast {
            Some(vast) => match vast_case(policy, vast) {
                Ok((decision, body)) => check(&case.want, &decision, &body, ""),
                Err(e) => vec![e],
            },
            None => match build_request(dir, &case.request).and_then(|req| {
                skypilot::handle_request(policy, req)
                    .map_err(|e| format!("the door rejected the request: {e}"))
            }) {
                Ok(h) => check(&case.want, &h.decision, &h.task, &h.config),
                Err(e) => vec![e],
            },
        };
        results.push(CaseResult { name, failures });
    }
    Ok(results)
}

/// Lists `*.yaml` files under `dir`, recursively, sorted.
pub fn find_case_files(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d)? {
            let p = entry?.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|e| e == "yaml" || e == "yml") {
                out.push(p);
            }
        }
    }
    out.sort();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A case file holds a policy: it is depth-checked like a config
    /// before serde_norway reads it.
    #[test]
    fn deep_case_files_are_refused_before_parsing() {
        let path =
            std::env::temp_dir().join(format!("warden-deep-cases-{}.yaml", std::process::id()));
        let text = format!(
            "policy: {}{}\ncases: []\n",
            "[".repeat(100_000),
            "]".repeat(100_000)
        );
        std::fs::write(&path, text).unwrap();
        let out = run_file(&path, None);
        std::fs::remove_file(&path).ok();
        let e = out.unwrap_err();
        assert!(
            e.contains("line 1, column ")
                && e.contains("nested deeper than the limit of 64 levels"),
            "{e}"
        );
    }
}
