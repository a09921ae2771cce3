//! The wire format: an `AdmissionReview` (`admission.k8s.io/v1`) in, the
//! same kind out with a `response` echoing the request's `uid`.
//!
//! Everything a review carries is bounded before Warden reads it: the body
//! by the server's limit ([`crate::app::BODY_LIMIT_BYTES`]), its nesting by
//! [`JSON_MAX_DEPTH`]; a review that is not JSON, is of another
//! `apiVersion` or `kind`, has no `request` or `uid`, or whose `object` is
//! not an object is refused with a 400 naming the field.

use std::borrow::Cow;
use std::marker::PhantomData;

use base64::Engine as _;
use serde::de::value::MapAccessDeserializer;
use serde::de::{Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Serialize};
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

/// A member of the review as it stands: of the kind Warden expects (`Is`),
/// or the kind it is instead (`Not`, for the message). Reading the review
/// into these, rather than into a [`Value`] tree, builds no map for the
/// envelope and copies no string without escapes; only the objects are
/// read into trees, which the door walks and patches.
enum Member<T> {
    Is(T),
    Not(&'static str),
}

/// What a [`Member`] accepts; every other kind is skipped over and named.
trait Accept<'de>: Sized {
    /// A string borrowed from the body (it has no escapes).
    fn string(_: &'de str) -> Option<Self> {
        None
    }
    /// A string with escapes, which the reader unescaped into a buffer of
    /// its own: copied by those that keep it.
    fn unescaped(_: &str) -> Option<Self> {
        None
    }
    fn boolean(_: bool) -> Option<Self> {
        None
    }
    fn list<A: SeqAccess<'de>>(mut seq: A) -> Result<Member<Self>, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(Member::Not("a list"))
    }
    fn object<A: MapAccess<'de>>(mut map: A) -> Result<Member<Self>, A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(Member::Not("an object"))
    }
}

impl<'de: 'a, 'a> Accept<'de> for Cow<'a, str> {
    fn string(s: &'de str) -> Option<Self> {
        Some(Cow::Borrowed(s))
    }
    fn unescaped(s: &str) -> Option<Self> {
        Some(Cow::Owned(s.to_owned()))
    }
}

impl<'de> Accept<'de> for bool {
    fn boolean(b: bool) -> Option<Self> {
        Some(b)
    }
}

impl<'de: 'a, 'a> Accept<'de> for Vec<Member<Cow<'a, str>>> {
    fn list<A: SeqAccess<'de>>(mut seq: A) -> Result<Member<Self>, A::Error> {
        let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(64));
        while let Some(item) = seq.next_element()? {
            items.push(item);
        }
        Ok(Member::Is(items))
    }
}

impl<'de> Accept<'de> for Map<String, Value> {
    fn object<A: MapAccess<'de>>(map: A) -> Result<Member<Self>, A::Error> {
        Map::deserialize(MapAccessDeserializer::new(map)).map(Member::Is)
    }
}

/// The envelope's objects read as structs.
macro_rules! accept_struct {
    ($($t:ident),*) => {$(
        impl<'de: 'a, 'a> Accept<'de> for $t<'a> {
            fn object<A: MapAccess<'de>>(map: A) -> Result<Member<Self>, A::Error> {
                $t::deserialize(MapAccessDeserializer::new(map)).map(Member::Is)
            }
        }
    )*};
}
accept_struct!(Envelope, Request, KindRef, ResourceRef, UserInfo);

struct MemberVisitor<T>(PhantomData<T>);

impl<'de, T: Accept<'de>> Visitor<'de> for MemberVisitor<T> {
    type Value = Member<T>;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_bool<E>(self, b: bool) -> Result<Member<T>, E> {
        Ok(T::boolean(b).map_or(Member::Not("a boolean"), Member::Is))
    }
    fn visit_i64<E>(self, _: i64) -> Result<Member<T>, E> {
        Ok(Member::Not("a number"))
    }
    fn visit_u64<E>(self, _: u64) -> Result<Member<T>, E> {
        Ok(Member::Not("a number"))
    }
    fn visit_f64<E>(self, _: f64) -> Result<Member<T>, E> {
        Ok(Member::Not("a number"))
    }
    fn visit_unit<E>(self) -> Result<Member<T>, E> {
        Ok(Member::Not("null"))
    }
    fn visit_borrowed_str<E>(self, s: &'de str) -> Result<Member<T>, E> {
        Ok(T::string(s).map_or(Member::Not("a string"), Member::Is))
    }
    fn visit_str<E>(self, s: &str) -> Result<Member<T>, E> {
        Ok(T::unescaped(s).map_or(Member::Not("a string"), Member::Is))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Member<T>, A::Error> {
        T::list(seq)
    }
    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Member<T>, A::Error> {
        T::object(map)
    }
}

impl<'de, T: Accept<'de>> Deserialize<'de> for Member<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(MemberVisitor(PhantomData))
    }
}

/// A member that is a string or absent; `null` counts as absent (serde
/// reads `null` into `None`).
type Text<'a> = Option<Member<Cow<'a, str>>>;

#[derive(Deserialize)]
struct Envelope<'a> {
    #[serde(rename = "apiVersion", borrow)]
    api_version: Text<'a>,
    #[serde(borrow)]
    kind: Text<'a>,
    #[serde(borrow)]
    request: Option<Member<Request<'a>>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Request<'a> {
    #[serde(borrow)]
    uid: Text<'a>,
    #[serde(borrow)]
    kind: Option<Member<KindRef<'a>>>,
    #[serde(borrow)]
    resource: Option<Member<ResourceRef<'a>>>,
    #[serde(borrow)]
    sub_resource: Text<'a>,
    #[serde(borrow)]
    namespace: Text<'a>,
    #[serde(borrow)]
    name: Text<'a>,
    #[serde(borrow)]
    operation: Text<'a>,
    #[serde(borrow)]
    user_info: Option<Member<UserInfo<'a>>>,
    object: Option<Member<Map<String, Value>>>,
    old_object: Option<Member<Map<String, Value>>>,
    dry_run: Option<Member<bool>>,
}

#[derive(Deserialize)]
struct KindRef<'a> {
    #[serde(borrow)]
    group: Text<'a>,
    #[serde(borrow)]
    version: Text<'a>,
    #[serde(borrow)]
    kind: Text<'a>,
}

#[derive(Deserialize)]
struct ResourceRef<'a> {
    #[serde(borrow)]
    resource: Text<'a>,
}

#[derive(Deserialize)]
struct UserInfo<'a> {
    #[serde(borrow)]
    username: Text<'a>,
    #[serde(borrow)]
    groups: Option<Member<Vec<Member<Cow<'a, str>>>>>,
}

/// The string `at` names, empty when absent.
fn string(member: Text<'_>, at: &str) -> Result<String, DoorError> {
    match member {
        None => Ok(String::new()),
        Some(Member::Is(s)) => Ok(s.into_owned()),
        Some(Member::Not(kind)) => Err(DoorError::bad(format!(
            "`{at}` must be a string, not {kind}"
        ))),
    }
}

/// The Kubernetes object `at` names, if any.
fn object_of(
    member: Option<Member<Map<String, Value>>>,
    at: &str,
) -> Result<Option<Value>, DoorError> {
    match member {
        None => Ok(None),
        Some(Member::Is(o)) => Ok(Some(Value::Object(o))),
        Some(Member::Not(kind)) => Err(DoorError::bad(format!(
            "`{at}` must be a Kubernetes object (a JSON object), not {kind}"
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
    // Checked once here, so that reading does not check each string again
    // (and members Warden skips are UTF-8 too).
    let text = std::str::from_utf8(body).map_err(|e| {
        DoorError::bad(format!(
            "the request body is not JSON: it is not UTF-8 (invalid byte at offset {})",
            e.valid_up_to()
        ))
    })?;
    let top = serde_json::from_str::<Member<Envelope>>(text).map_err(|e| match e.classify() {
        // Valid JSON read as a review: a member given twice.
        serde_json::error::Category::Data => {
            DoorError::bad(format!("the AdmissionReview is malformed: {e}"))
        }
        _ => DoorError::bad(format!("the request body is not JSON: {e}")),
    })?;
    let top = match top {
        Member::Is(top) => top,
        Member::Not(kind) => {
            return Err(DoorError::bad(format!(
                "the request body must be an AdmissionReview object, not {kind}"
            )))
        }
    };
    let api_version = string(top.api_version, "apiVersion")?;
    if api_version != API_VERSION {
        return Err(DoorError::bad(format!(
            "`apiVersion` is `{api_version}`; Warden speaks `{API_VERSION}`: set `admissionReviewVersions: [v1]` in the webhook configuration"
        )));
    }
    let kind = string(top.kind, "kind")?;
    if kind != "AdmissionReview" {
        return Err(DoorError::bad(format!(
            "`kind` is `{kind}`; expected `AdmissionReview`"
        )));
    }
    let request =
        match top.request {
            Some(Member::Is(r)) => r,
            None => return Err(DoorError::bad(
                "the AdmissionReview has no `request`; the API server sends one with every review",
            )),
            Some(Member::Not(kind)) => {
                return Err(DoorError::bad(format!(
                    "`request` must be an object, not {kind}"
                )))
            }
        };
    let uid = string(request.uid, "request.uid")?;
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
    let (group, version, kind) = match request.kind {
        Some(Member::Is(k)) => (
            string(k.group, "request.kind.group")?,
            string(k.version, "request.kind.version")?,
            string(k.kind, "request.kind.kind")?,
        ),
        None => {
            return Err(DoorError::bad(
                "`request.kind` is missing; expected `{group, version, kind}` of the object",
            ))
        }
        Some(Member::Not(kind)) => {
            return Err(DoorError::bad(format!(
                "`request.kind` must be an object `{{group, version, kind}}`, not {kind}"
            )))
        }
    };
    if kind.is_empty() || version.is_empty() {
        return Err(DoorError::bad(
            "`request.kind` must name the object's `version` and `kind`",
        ));
    }
    let operation = match string(request.operation, "request.operation")?.as_str() {
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
    let (username, groups) = match request.user_info {
        Some(Member::Is(u)) => {
            let name = string(u.username, "request.userInfo.username")?;
            let groups = match u.groups {
                None => Vec::new(),
                Some(Member::Is(list)) => list
                    .into_iter()
                    .map(|g| match g {
                        Member::Is(g) => Ok(g.into_owned()),
                        Member::Not(_) => Err(DoorError::bad(
                            "`request.userInfo.groups` must be a list of strings",
                        )),
                    })
                    .collect::<Result<_, _>>()?,
                Some(Member::Not(kind)) => {
                    return Err(DoorError::bad(format!(
                        "`request.userInfo.groups` must be a list, not {kind}"
                    )))
                }
            };
            ((!name.is_empty()).then_some(name), groups)
        }
        None => (None, Vec::new()),
        Some(Member::Not(kind)) => {
            return Err(DoorError::bad(format!(
                "`request.userInfo` must be an object, not {kind}"
            )))
        }
    };
    let dry_run = match request.dry_run {
        None => false,
        Some(Member::Is(b)) => b,
        Some(Member::Not(kind)) => {
            return Err(DoorError::bad(format!(
                "`request.dryRun` must be true or false, not {kind}"
            )))
        }
    };
    let object = object_of(request.object, "request.object")?;
    let old_object = object_of(request.old_object, "request.oldObject")?;
    match operation {
        Operation::Create | Operation::Update if object.is_none() => {
            return Err(DoorError::bad(
                "`request.object` is missing; a CREATE or UPDATE review carries the object",
            ))
        }
        _ => {}
    }
    let resource = match request.resource {
        Some(Member::Is(r)) => string(r.resource, "request.resource.resource")?,
        _ => String::new(),
    };
    let sub_resource =
        Some(string(request.sub_resource, "request.subResource")?).filter(|s| !s.is_empty());
    Ok(Review {
        uid,
        group,
        version,
        kind,
        resource,
        sub_resource,
        namespace: string(request.namespace, "request.namespace")?,
        name: string(request.name, "request.name")?,
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

    /// The answer as JSON text, the body of the webhook's reply: what
    /// `serde_json` writes for it, written by hand so that the patch, which
    /// is base64 and has nothing to escape, is copied as it is rather than
    /// scanned byte by byte.
    pub fn to_json(&self) -> String {
        use crate::json_text::push_string as string;
        let r = &self.response;
        let mut out = String::with_capacity(
            120 + r.uid.len()
                + r.patch.as_ref().map_or(0, String::len)
                + r.warnings.iter().map(|w| w.len() + 3).sum::<usize>()
                + r.status.as_ref().map_or(0, |s| 80 + s.message.len()),
        );
        out.push_str("{\"apiVersion\":");
        string(&mut out, self.api_version);
        out.push_str(",\"kind\":");
        string(&mut out, self.kind);
        out.push_str(",\"response\":{\"uid\":");
        string(&mut out, &r.uid);
        out.push_str(if r.allowed {
            ",\"allowed\":true"
        } else {
            ",\"allowed\":false"
        });
        if let Some(patch_type) = r.patch_type {
            out.push_str(",\"patchType\":");
            string(&mut out, patch_type);
        }
        if let Some(patch) = &r.patch {
            // Only `allow` sets it, to base64 (`A-Z a-z 0-9 + / =`).
            out.push_str(",\"patch\":\"");
            out.push_str(patch);
            out.push('"');
        }
        if !r.warnings.is_empty() {
            out.push_str(",\"warnings\":[");
            for (i, warning) in r.warnings.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                string(&mut out, warning);
            }
            out.push(']');
        }
        if let Some(status) = &r.status {
            out.push_str(",\"status\":{\"status\":");
            string(&mut out, status.status);
            out.push_str(",\"code\":");
            out.push_str(&status.code.to_string());
            out.push_str(",\"reason\":");
            string(&mut out, status.reason);
            out.push_str(",\"message\":");
            string(&mut out, &status.message);
            out.push('}');
        }
        out.push_str("}}");
        out
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

    /// The reader this module had before it read the envelope into
    /// [`Member`]s: every member into one [`Value`] tree, then picked out.
    /// The new reader must give the same review or the same message.
    mod value_tree {
        use super::super::{Operation, Review, API_VERSION, JSON_MAX_DEPTH, MAX_UID_LEN};
        use crate::error::DoorError;
        use serde_json::{Map, Value};

        /// A JSON value's kind, for messages.
        fn kind_of(v: &Value) -> &'static str {
            match v {
                Value::Null => "null",
                Value::Bool(_) => "a boolean",
                Value::Number(_) => "a number",
                Value::String(_) => "a string",
                Value::Array(_) => "a list",
                Value::Object(_) => "an object",
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
                None | Some(Value::Null) => return Err(DoorError::bad(
                    "`request.kind` is missing; expected `{group, version, kind}` of the object",
                )),
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
                                    DoorError::bad(
                                        "`request.userInfo.groups` must be a list of strings",
                                    )
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
            let sub_resource =
                Some(string(&request, "request.", "subResource")?).filter(|s| !s.is_empty());
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
    }

    /// Every member of a review, each replaced by each kind of JSON value
    /// (and removed): the same review or the same message as reading the
    /// whole review into a tree.
    #[test]
    fn members_of_every_kind_read_as_the_value_tree_reader_read_them() {
        let base = json!({
            "apiVersion": API_VERSION, "kind": "AdmissionReview",
            "request": {
                "uid": "u-1", "kind": {"group": "batch", "version": "v1", "kind": "Job"},
                "resource": {"group": "batch", "version": "v1", "resource": "jobs"},
                "subResource": "", "namespace": "ml", "name": "j", "operation": "CREATE",
                "userInfo": {"username": "alice", "groups": ["g1", "system:authenticated"], "uid": "x"},
                "object": {"kind": "Job", "metadata": {"name": "j\u{e9}"}},
                "oldObject": null, "dryRun": false, "options": {"kind": "CreateOptions"},
                "requestKind": {"group": "batch", "version": "v1", "kind": "Job"}
            }
        });
        let paths: &[&[&str]] = &[
            &[],
            &["apiVersion"],
            &["kind"],
            &["request"],
            &["request", "uid"],
            &["request", "kind"],
            &["request", "kind", "group"],
            &["request", "kind", "version"],
            &["request", "kind", "kind"],
            &["request", "resource"],
            &["request", "resource", "resource"],
            &["request", "subResource"],
            &["request", "namespace"],
            &["request", "name"],
            &["request", "operation"],
            &["request", "userInfo"],
            &["request", "userInfo", "username"],
            &["request", "userInfo", "groups"],
            &["request", "object"],
            &["request", "oldObject"],
            &["request", "dryRun"],
            &["request", "options"],
        ];
        let values = [
            json!(null),
            json!(true),
            json!(false),
            json!(3),
            json!(-2),
            json!(2.5),
            json!(""),
            json!("x"),
            json!("q\"uo\\te\u{1}"),
            json!("CREATE"),
            json!("DELETE"),
            json!("UPDATE"),
            json!("CONNECT"),
            json!(API_VERSION),
            json!("AdmissionReview"),
            json!([]),
            json!(["a"]),
            json!(["a", 1]),
            json!([null]),
            json!({}),
            json!({"group": "", "version": "v1", "kind": "Pod", "resource": "pods"}),
            json!({"version": 1}),
            json!({"username": ["x"]}),
            json!({"groups": "g"}),
            json!({"groups": [1]}),
            json!({"a": {"b": [1, {"c": null}]}}),
        ];
        let mut cases = 0;
        for path in paths {
            for value in values.iter().map(Some).chain([None]) {
                let mut review = base.clone();
                match path.split_last() {
                    None => review = value.cloned().unwrap_or(Value::Null),
                    Some((last, parents)) => {
                        let mut at = &mut review;
                        for p in parents {
                            at = &mut at[*p];
                        }
                        let map = at.as_object_mut().unwrap();
                        match value {
                            Some(v) => map.insert((*last).to_owned(), v.clone()),
                            None => map.remove(*last),
                        };
                    }
                }
                let body = serde_json::to_vec(&review).unwrap();
                let show = |r: Result<Review, DoorError>| match r {
                    Ok(r) => format!("{r:?}"),
                    Err(e) => format!("error: {e}"),
                };
                assert_eq!(
                    show(parse_review(&body)),
                    show(value_tree::parse_review(&body)),
                    "{}",
                    String::from_utf8_lossy(&body)
                );
                cases += 1;
            }
        }
        // Texts that are not a review, or not JSON.
        for body in [
            "", " ", "{", "[]", "3", "\"x\"", "null", "{\"a\":}", "{} {}", "[{]",
        ] {
            let (new, old) = (
                parse_review(body.as_bytes()),
                value_tree::parse_review(body.as_bytes()),
            );
            assert_eq!(
                new.unwrap_err().to_string(),
                old.unwrap_err().to_string(),
                "{body}"
            );
            cases += 1;
        }
        assert_eq!(cases, paths.len() * (values.len() + 1) + 10);
    }

    #[test]
    fn a_member_given_twice_or_bytes_that_are_not_utf8_are_refused() {
        let twice = format!(
            r#"{{"apiVersion":"{API_VERSION}","kind":"AdmissionReview","request":{{"uid":"a","uid":"b"}}}}"#
        );
        assert!(
            err(&twice).contains("malformed: duplicate field `uid`"),
            "{}",
            err(&twice)
        );
        let mut bytes =
            format!(r#"{{"apiVersion":"{API_VERSION}","kind":"AdmissionReview","x":"ab"}}"#)
                .into_bytes();
        let at = bytes.len() - 3;
        bytes[at] = 0xff;
        let message = parse_review(&bytes).unwrap_err().to_string();
        assert!(
            message.contains(&format!("not UTF-8 (invalid byte at offset {at})")),
            "{message}"
        );
    }

    /// The hand-written text is what serde_json writes for the answer.
    #[test]
    fn answers_are_written_as_serde_json_writes_them() {
        let (empty, new) = (json!({}), json!({"a\"b": "\u{1}é/~", "n": [1, 2.5]}));
        let ops = super::super::patch::diff(&empty, &new);
        let uids = ["u", "", "q\"u\\o\n\u{7f}\u{1f}é😀"];
        let warnings = [
            vec![],
            vec!["w".to_owned()],
            vec!["a\tb".to_owned(), String::new()],
        ];
        let mut seen = 0;
        for uid in uids {
            for warnings in &warnings {
                for patch in [Patch::none(), Patch::of(&ops)] {
                    let answer = allow(uid, &patch, warnings);
                    assert_eq!(answer.to_json(), serde_json::to_string(&answer).unwrap());
                    seen += 1;
                }
            }
            for (code, message) in [(403, "no: rule `r`\nfix it"), (503, ""), (403, "\"\\\u{0}")] {
                let answer = deny(uid, code, message);
                assert_eq!(answer.to_json(), serde_json::to_string(&answer).unwrap());
                seen += 1;
            }
        }
        assert_eq!(seen, 3 * (3 * 2 + 3));
    }
}
