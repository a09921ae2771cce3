//! The SkyPilot door's wire format: the request body (a JSON string literal
//! holding SkyPilot's admin-policy object, or the object), its YAML documents
//! as SkyPilot's loader reads them, the answer's encoding, and the request as
//! the audit chain keeps it for `warden replay`.

use serde::Deserialize;
use serde_json::Value;
use warden_core::{Decision, LaunchRequest};

use super::yaml::{self, Node};
use crate::error::DoorError;
use crate::json_text::{needs_escape as ends_run, Times};

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
pub(crate) fn json_depth_within(text: &[u8], max: usize) -> bool {
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

/// A body [`handle`](super::handle) accepts, rebuilt from a [`replay_input`]: the
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
pub(super) fn parse_doc(what: &str, text: &str) -> Result<Node, DoorError> {
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
pub(super) fn refuse_raw_breaks(what: &str, text: &str) -> Result<(), DoorError> {
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

    #[test]
    fn plain_object_and_string_literal_bodies_both_decode() {
        let obj = br#"{"task": "name: x\n", "skypilot_config": ""}"#;
        assert_eq!(parse_body(obj).expect("obj").task, "name: x\n");
        let lit = serde_json::to_vec(&String::from_utf8_lossy(obj).to_string()).expect("lit");
        assert_eq!(parse_body(&lit).expect("lit").task, "name: x\n");
        let err = parse_body(br#"{"task": 5}"#).unwrap_err().to_string();
        assert!(err.contains("field `task`"), "{err}");
    }
}
