//! The wire format: an `AdmissionReview` (`admission.k8s.io/v1`) in, the
//! same kind out with a `response` echoing the request's `uid`.
//!
//! Everything a review carries is bounded before Warden reads it: the body
//! by the server's limit ([`crate::app::BODY_LIMIT_BYTES`]), its nesting by
//! [`JSON_MAX_DEPTH`]; a review that is not JSON, is of another
//! `apiVersion` or `kind`, has no `request` or `uid`, or whose `object` is
//! not an object is refused with a 400 naming the field.

use base64::Engine as _;
use serde::Serialize;
use serde_json::{Map, Value};

use super::patch::Patch;
use crate::error::DoorError;

/// The only review version Warden speaks (Kubernetes 1.16 and later).
pub const API_VERSION: &str = "admission.k8s.io/v1";

/// The deepest nesting of arrays and objects a review may have. Real pod
/// specs nest about 15 levels (affinity terms are the deepest).
pub const JSON_MAX_DEPTH: usize = 64;

/// The longest `uid` accepted (the API server sends a 36-byte UUID).
pub const MAX_UID_LEN: usize = 128;

/// What the review asks to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    /// A new object.
    Create,
    /// A change to an object (also a scale).
    Update,
    /// An object going away.
    Delete,
    /// `kubectl exec`/`attach`/`port-forward`: not judged.
    Connect,
}

/// The parts of an `AdmissionReview` request Warden reads.
#[derive(Debug, Clone)]
pub struct Review {
    /// The request's `uid`, echoed in the answer.
    pub uid: String,
    /// `request.kind.group` (empty for the core group).
    pub group: String,
    /// `request.kind.version`.
    pub version: String,
    /// `request.kind.kind` (`Pod`, `Job`, `Scale`, ...).
    pub kind: String,
    /// `request.resource.resource` (`pods`, `deployments`).
    pub resource: String,
    /// `request.subResource`, when the review is about one (`scale`).
    pub sub_resource: Option<String>,
    /// `request.namespace` (empty for cluster-scoped objects).
    pub namespace: String,
    /// `request.name` (empty on a CREATE with only `generateName`).
    pub name: String,
    /// What is done.
    pub operation: Operation,
    /// `userInfo.username`.
    pub username: Option<String>,
    /// `userInfo.groups`.
    pub groups: Vec<String>,
    /// The new object (CREATE, UPDATE); always a JSON object.
    pub object: Option<Value>,
    /// The object before (UPDATE, DELETE); always a JSON object.
    pub old_object: Option<Value>,
    /// `dryRun`: decide, change nothing.
    pub dry_run: bool,
}

impl Review {
    /// `apiVersion` of the reviewed object's kind (`batch/v1`, `v1`).
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.clone()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }
}

fn field<'a>(m: &'a Map<String, Value>, key: &str) -> Option<&'a Value> {
    m.get(key).filter(|v| !v.is_null())
}

fn string(m: &Map<String, Value>, at: &str, key: &str) -> Result<String, DoorError> {
    match field(m, key) {
        None => Ok(String::new()),
        Some(Value::String(s)) => Ok(s.clone()),
        Some(other) => Err(DoorError::bad(format!(
            "`{at}{key}` must be a string, not {}",
            kind_of(other)
        ))),
    }
}

/// A JSON value's kind, for messages.
pub fn kind_of(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

/// Takes `m[key]`, which must be an object or absent.
fn take_object(m: &mut Map<String, Value>, key: &str) -> Result<Option<Value>, DoorError> {
    match m.remove(key) {
        None | Some(Value::Null) => Ok(None),
        Some(o @ Value::Object(_)) => Ok(Some(o)),
        Some(other) => Err(DoorError::bad(format!(
            "`request.{key}` must be a Kubernetes object (a JSON object), not {}",
            kind_of(&other)
        ))),
    }
}

/// Decodes a review body; see the module documentation for what is refused.
pub fn parse_review(body: &[u8]) -> Result<Review, DoorError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(DoorError::bad(
            "the request body is empty; expected an AdmissionReview (admission.k8s.io/v1) from the Kubernetes API server",
        ));
    }
    if !crate::doors::skypilot::json_depth_within(body, JSON_MAX_DEPTH) {
        return Err(DoorError::bad(format!(
            "the AdmissionReview nests deeper than {JSON_MAX_DEPTH} levels; Kubernetes objects are far shallower"
        )));
    }
    let value: Value = serde_json::from_slice(body)
        .map_err(|e| DoorError::bad(format!("the request body is not JSON: {e}")))?;
    let Value::Object(mut top) = value else {
        return Err(DoorError::bad(format!(
            "the request body must be an AdmissionReview object, not {}",
            kind_of(&value)
        )));
    };
    let api_version = string(&top, "", "apiVersion")?;
    if api_version != API_VERSION {
        return Err(DoorError::bad(format!(
            "`apiVersion` is `{api_version}`; Warden speaks `{API_VERSION}`: set `admissionReviewVersions: [v1]` in the webhook configuration"
        )));
    }
    let kind = string(&top, "", "kind")?;
    if kind != "AdmissionReview" {
        return Err(DoorError::bad(format!(
            "`kind` is `{kind}`; expected `AdmissionReview`"
        )));
    }
    let mut request =
        match top.remove("request") {
            Some(Value::Object(r)) => r,
            None | Some(Value::Null) => return Err(DoorError::bad(
                "the AdmissionReview has no `request`; the API server sends one with every review",
            )),
            Some(other) => {
                return Err(DoorError::bad(format!(
                    "`request` must be an object, not {}",
                    kind_of(&other)
                )))
            }
        };
    let uid = string(&request, "request.", "uid")?;
    if uid.is_empty() {
        return Err(DoorError::bad(
            "`request.uid` is missing or empty; the answer must echo it",
        ));
    }
    if uid.len() > MAX_UID_LEN || uid.chars().any(char::is_control) {
        return Err(DoorError::bad(format!(
            "`request.uid` is not a Kubernetes uid (at most {MAX_UID_LEN} printable characters)"
        )));
    }
    let (group, version, kind) = match request.get("kind") {
        Some(Value::Object(k)) => (
            string(k, "request.kind.", "group")?,
            string(k, "request.kind.", "version")?,
            string(k, "request.kind.", "kind")?,
        ),
        None | Some(Value::Null) => {
            return Err(DoorError::bad(
                "`request.kind` is missing; expected `{group, version, kind}` of the object",
            ))
        }
        Some(other) => {
            return Err(DoorError::bad(format!(
                "`request.kind` must be an object `{{group, version, kind}}`, not {}",
                kind_of(other)
            )))
        }
    };
    if kind.is_empty() || version.is_empty() {
        return Err(DoorError::bad(
            "`request.kind` must name the object's `version` and `kind`",
        ));
    }
    let operation = match string(&request, "request.", "operation")?.as_str() {
        "CREATE" => Operation::Create,
        "UPDATE" => Operation::Update,
        "DELETE" => Operation::Delete,
        "CONNECT" => Operation::Connect,
        other => {
            return Err(DoorError::bad(format!(
                "`request.operation` is `{other}`; expected CREATE, UPDATE, DELETE or CONNECT"
            )))
        }
    };
    let (username, groups) = match request.get("userInfo") {
        Some(Value::Object(u)) => {
            let name = string(u, "request.userInfo.", "username")?;
            let groups = match field(u, "groups") {
                None => Vec::new(),
                Some(Value::Array(list)) => list
                    .iter()
                    .map(|g| {
                        g.as_str().map(str::to_owned).ok_or_else(|| {
                            DoorError::bad("`request.userInfo.groups` must be a list of strings")
                        })
                    })
                    .collect::<Result<_, _>>()?,
                Some(other) => {
                    return Err(DoorError::bad(format!(
                        "`request.userInfo.groups` must be a list, not {}",
                        kind_of(other)
                    )))
                }
            };
            ((!name.is_empty()).then_some(name), groups)
        }
        None | Some(Value::Null) => (None, Vec::new()),
        Some(other) => {
            return Err(DoorError::bad(format!(
                "`request.userInfo` must be an object, not {}",
                kind_of(other)
            )))
        }
    };
    let dry_run = match field(&request, "dryRun") {
        None => false,
        Some(Value::Bool(b)) => *b,
        Some(other) => {
            return Err(DoorError::bad(format!(
                "`request.dryRun` must be true or false, not {}",
                kind_of(other)
            )))
        }
    };
    // Moved out, not copied: the objects are most of the review.
    let object = take_object(&mut request, "object")?;
    let old_object = take_object(&mut request, "oldObject")?;
    match operation {
        Operation::Create | Operation::Update if object.is_none() => {
            return Err(DoorError::bad(
                "`request.object` is missing; a CREATE or UPDATE review carries the object",
            ))
        }
        _ => {}
    }
    let resource = match request.get("resource") {
        Some(Value::Object(r)) => string(r, "request.resource.", "resource")?,
        _ => String::new(),
    };
    let sub_resource = Some(string(&request, "request.", "subResource")?).filter(|s| !s.is_empty());
    Ok(Review {
        uid,
        group,
        version,
        kind,
        resource,
        sub_resource,
        namespace: string(&request, "request.", "namespace")?,
        name: string(&request, "request.", "name")?,
        operation,
        username,
        groups,
        object,
        old_object,
        dry_run,
    })
}

/// An answer to a review, as the API server reads it: the same
/// `AdmissionReview` kind with a `response` echoing the request's `uid`.
/// Written straight to JSON text ([`Answer::to_json`]) from borrowed parts.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Answer {
    #[serde(rename = "apiVersion")]
    api_version: &'static str,
    kind: &'static str,
    response: Response,
}

/// `response` of an [`Answer`].
#[derive(Debug, Clone, PartialEq, Serialize)]
struct Response {
    uid: String,
    allowed: bool,
    #[serde(rename = "patchType", skip_serializing_if = "Option::is_none")]
    patch_type: Option<&'static str>,
    /// The JSONPatch's text, base64-encoded.
    #[serde(skip_serializing_if = "Option::is_none")]
    patch: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    warnings: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    status: Option<Status>,
}

/// `response.status` of a refusal.
#[derive(Debug, Clone, PartialEq, Serialize)]
struct Status {
    status: &'static str,
    code: u16,
    reason: &'static str,
    message: String,
}

impl Answer {
    fn new(response: Response) -> Answer {
        Answer {
            api_version: API_VERSION,
            kind: "AdmissionReview",
            response,
        }
    }

    /// Whether the object is let through.
    pub fn allowed(&self) -> bool {
        self.response.allowed
    }

    /// The answer as JSON text, the body of the webhook's reply.
    pub fn to_json(&self) -> String {
        // Plain strings, numbers and booleans: writing cannot fail.
        serde_json::to_string(self).unwrap_or_else(|_| {
            format!(
                r#"{{"apiVersion":"{API_VERSION}","kind":"AdmissionReview","response":{{"uid":{},"allowed":false}}}}"#,
                serde_json::Value::from(self.response.uid.as_str())
            )
        })
    }
}

/// The answer: allowed, with a JSONPatch (applied by the API server) and
/// warnings (printed by kubectl as `Warning: ...`).
pub fn allow(uid: &str, patch: &Patch, warnings: &[String]) -> Answer {
    let patch = patch
        .text()
        .map(|text| base64::engine::general_purpose::STANDARD.encode(text));
    Answer::new(Response {
        uid: uid.to_owned(),
        allowed: true,
        patch_type: patch.as_ref().map(|_| "JSONPatch"),
        patch,
        warnings: warnings.to_vec(),
        status: None,
    })
}

/// The answer: refused with `code` (403 for a denial, 503 when Warden could
/// not decide) and `message`, which kubectl prints verbatim.
pub fn deny(uid: &str, code: u16, message: &str) -> Answer {
    let reason = if code == 403 {
        "Forbidden"
    } else {
        "ServiceUnavailable"
    };
    Answer::new(Response {
        uid: uid.to_owned(),
        allowed: false,
        patch_type: None,
        patch: None,
        warnings: Vec::new(),
        status: Some(Status {
            status: "Failure",
            code,
            reason,
            message: message.to_owned(),
        }),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn err(body: &str) -> String {
        parse_review(body.as_bytes()).unwrap_err().to_string()
    }

    #[test]
    fn malformed_reviews_name_what_is_wrong() {
        assert!(err("").contains("empty"));
        assert!(err("{").contains("not JSON"));
        assert!(err("[]").contains("AdmissionReview object"));
        assert!(
            err(r#"{"apiVersion":"admission.k8s.io/v1beta1","kind":"AdmissionReview"}"#)
                .contains("admissionReviewVersions")
        );
        assert!(err(r#"{"apiVersion":"admission.k8s.io/v1","kind":"Pod"}"#).contains("`kind`"));
        assert!(
            err(r#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview"}"#)
                .contains("no `request`")
        );
        assert!(err(
            r#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"kind":{"version":"v1","kind":"Pod"}}}"#
        )
        .contains("request.uid"));
        assert!(err(
            r#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"uid":"u","kind":{"version":"v1","kind":"Pod"},"operation":"CREATE","object":[1]}}"#
        )
        .contains("`request.object` must be a Kubernetes object"));
        let deep = format!("{}{}", "[".repeat(100), "]".repeat(100));
        assert!(err(&deep).contains("nests deeper"));
    }

    #[test]
    fn answers_echo_the_uid_and_carry_the_patch_in_base64() {
        let new = json!({"x": 1});
        let answer = allow(
            "u-1",
            &Patch::of(&super::super::patch::diff(&json!({}), &new)),
            &["careful".to_owned()],
        );
        assert!(answer.allowed());
        let a: Value = serde_json::from_str(&answer.to_json()).unwrap();
        assert_eq!(a["apiVersion"], API_VERSION);
        assert_eq!(a["kind"], "AdmissionReview");
        assert_eq!(a["response"]["allowed"], true);
        assert_eq!(a["response"]["warnings"], json!(["careful"]));
        assert!(a["response"].get("status").is_none());
        assert_eq!(a["response"]["uid"], "u-1");
        assert_eq!(a["response"]["patchType"], "JSONPatch");
        let text = base64::engine::general_purpose::STANDARD
            .decode(a["response"]["patch"].as_str().unwrap())
            .unwrap();
        assert_eq!(
            String::from_utf8(text).unwrap(),
            r#"[{"op":"add","path":"/x","value":1}]"#
        );
        let plain: Value =
            serde_json::from_str(&allow("u-3", &Patch::none(), &[]).to_json()).unwrap();
        assert_eq!(
            plain,
            json!({"apiVersion": API_VERSION, "kind": "AdmissionReview", "response": {"uid": "u-3", "allowed": true}})
        );
        let answer = deny("u-2", 403, "no");
        assert!(!answer.allowed());
        let d: Value = serde_json::from_str(&answer.to_json()).unwrap();
        assert_eq!(d["response"]["uid"], "u-2");
        assert_eq!(d["response"]["status"]["reason"], "Forbidden");
        assert_eq!(d["response"]["allowed"], false);
        assert_eq!(d["response"]["status"]["code"], 403);
        assert_eq!(d["response"]["status"]["message"], "no");
    }
}
