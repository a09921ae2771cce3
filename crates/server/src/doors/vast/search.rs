//! Offer searches: the team's constraints go into the query the upstream
//! sees, and every offer of the answer is checked against them again
//! (defense in depth: an upstream that ignores a filter, or a filter
//! spelled in a way Warden did not foresee, cannot show a team an offer it
//! could not rent).
//!
//! GPU names: Vast writes `RTX 4090`, the CLI's query language
//! `RTX_4090`; Warden's config uses the CLI spelling (a GPU model has no
//! spaces), compared without regard to case: `allowed_gpus: [RTX_4090,
//! H100_SXM]`.

use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{json, Map, Value};
use warden_core::{GpuModel, LaunchLimits, Usd, VastTeam};

use super::upstream::Row;

/// The GPU model of a Vast GPU name (`RTX 4090` → `RTX_4090`).
pub fn model_of(vast_name: &str) -> Option<GpuModel> {
    GpuModel::parse(&vast_name.trim().replace(' ', "_")).ok()
}

/// What a team may rent, as offer fields.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct OfferConstraints {
    /// GPU models allowed; `None` = any.
    pub models: Option<Vec<GpuModel>>,
    /// Most GPUs in one offer.
    pub max_gpus: Option<u64>,
    /// Most `dph_total` ($/hour).
    pub max_dph: Option<Usd>,
    /// Least `reliability2`.
    pub min_reliability: Option<f64>,
    /// Verified hosts only.
    pub verified_only: bool,
}

impl OfferConstraints {
    /// A team's constraints from its launch limits and Vast options.
    pub fn of(limits: &LaunchLimits, vast: &VastTeam) -> Self {
        OfferConstraints {
            models: limits.allowed_gpus.clone(),
            max_gpus: limits.max_gpus,
            max_dph: limits.max_hourly,
            min_reliability: vast.min_reliability,
            verified_only: vast.verified_only,
        }
    }

    /// Whether the team may rent `offer` (missing fields fail closed).
    pub fn allows(&self, offer: &Row) -> bool {
        let field = |k: &str| offer.get(k).cloned();
        self.allows_fields(&OfferFields {
            gpu_name: field("gpu_name"),
            num_gpus: field("num_gpus"),
            dph_total: field("dph_total"),
            reliability2: field("reliability2"),
            verified: field("verified"),
        })
    }

    fn allows_fields(&self, offer: &OfferFields) -> bool {
        let num = |v: &Option<Value>| v.as_ref().and_then(number);
        if let Some(models) = &self.models {
            let model = offer
                .gpu_name
                .as_ref()
                .and_then(Value::as_str)
                .and_then(model_of);
            if !model.is_some_and(|m| models.contains(&m)) {
                return false;
            }
        }
        if let Some(max) = self.max_gpus {
            if !num(&offer.num_gpus).is_some_and(|n| n <= max as f64) {
                return false;
            }
        }
        if let Some(max) = self.max_dph {
            if !num(&offer.dph_total).is_some_and(|d| d <= max.as_dollars_f64() + 1e-9) {
                return false;
            }
        }
        if let Some(min) = self.min_reliability {
            if !num(&offer.reliability2).is_some_and(|r| r >= min) {
                return false;
            }
        }
        if self.verified_only && offer.verified.as_ref().and_then(Value::as_bool) != Some(true) {
            return false;
        }
        true
    }
}

/// The fields of an offer the constraints read; the rest is skipped
/// unparsed.
#[derive(Debug, Default, Deserialize)]
struct OfferFields {
    #[serde(default)]
    gpu_name: Option<Value>,
    #[serde(default)]
    num_gpus: Option<Value>,
    #[serde(default)]
    dph_total: Option<Value>,
    #[serde(default)]
    reliability2: Option<Value>,
    #[serde(default)]
    verified: Option<Value>,
}

#[derive(Deserialize)]
struct RawOffers<'a> {
    #[serde(borrow)]
    offers: Vec<&'a RawValue>,
}

/// The `{"offers": [...]}` answer keeping the offers of the upstream's
/// answer `raw` that the constraints allow, each exactly as written.
pub fn filter_raw(raw: &[u8], c: &OfferConstraints) -> Result<String, String> {
    let parsed: RawOffers<'_> =
        serde_json::from_slice(raw).map_err(|e| format!("not an offer list: {e}"))?;
    let mut out = String::with_capacity(raw.len() + 16);
    out.push_str("{\"offers\":[");
    let mut first = true;
    for offer in parsed.offers {
        let fields: OfferFields = serde_json::from_str(offer.get()).unwrap_or_default();
        if c.allows_fields(&fields) {
            if !first {
                out.push(',');
            }
            out.push_str(offer.get());
            first = false;
        }
    }
    out.push_str("]}");
    Ok(out)
}

/// A JSON number, or a string holding one (the CLI sends `"2"`).
pub fn number(v: &Value) -> Option<f64> {
    match v {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
    .filter(|f: &f64| f.is_finite())
}

/// Why a query is not passed on as the team's intersection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum QueryError {
    /// The user's conditions and the team's have an empty intersection:
    /// the answer is no offer, and this says why.
    NothingAllowed(String),
    /// A condition Warden must intersect with the team's cannot be read
    /// (400).
    Unreadable(String),
}

/// A team's bound on a numeric offer field.
#[derive(Debug, Clone, Copy)]
enum Bound {
    AtMost(f64),
    AtLeast(f64),
}

impl Bound {
    fn admits(self, v: f64) -> bool {
        match self {
            Bound::AtMost(max) => v <= max + 1e-9,
            Bound::AtLeast(min) => v >= min - 1e-9,
        }
    }
}

/// An operand as the upstream compares it with a number.
fn operand(field: &str, op: &str, v: &Value) -> Result<f64, QueryError> {
    number(v).ok_or_else(|| {
        QueryError::Unreadable(format!(
            "the search condition `{field} {op} {v}` needs a number"
        ))
    })
}

/// Refuses when the user's condition `cond` on `field` admits no value the
/// team's `bound` admits (as far as Warden reads its operators: eq, in,
/// gt, gte, lt, lte; the rest is left to the upstream).
fn check_overlap(
    field: &str,
    cond: &Map<String, Value>,
    bound: Bound,
    team_says: &str,
) -> Result<(), QueryError> {
    let empty = |op: &str, v: &Value| {
        QueryError::NothingAllowed(format!(
            "your search asks for `{field} {op} {v}`, but {team_says}; no offer your team may rent matches"
        ))
    };
    for (op, v) in cond {
        let disjoint = match (op.as_str(), bound) {
            ("eq", b) => !b.admits(operand(field, op, v)?),
            ("in", b) => {
                let items = v.as_array().map_or_else(|| vec![v.clone()], Clone::clone);
                let mut any = false;
                for item in &items {
                    any |= b.admits(operand(field, op, item)?);
                }
                !any
            }
            ("gt", Bound::AtMost(max)) => operand(field, op, v)? >= max,
            ("gte", Bound::AtMost(max)) => operand(field, op, v)? > max + 1e-9,
            ("lt", Bound::AtLeast(min)) => operand(field, op, v)? <= min,
            ("lte", Bound::AtLeast(min)) => operand(field, op, v)? < min - 1e-9,
            _ => false,
        };
        if disjoint {
            return Err(empty(op, v));
        }
    }
    Ok(())
}

/// A boolean as the upstream compares it.
fn as_bool(v: &Value) -> Option<bool> {
    match v {
        Value::Bool(b) => Some(*b),
        Value::String(s) => match s.trim() {
            "true" | "True" => Some(true),
            "false" | "False" => Some(false),
            _ => None,
        },
        Value::Number(n) => n.as_f64().map(|x| x != 0.0),
        _ => None,
    }
}

/// The team rents from verified hosts only: the user's `verified`
/// condition intersected with `verified = true`, which is `{"eq": true}`
/// if the user's condition admits `true` (other operators kept), and
/// nothing otherwise.
fn require_verified(query: &mut Map<String, Value>) -> Result<(), QueryError> {
    let cond = take_cond(query, "verified");
    let unreadable = |op: &str, v: &Value| {
        QueryError::Unreadable(format!(
            "the search condition `verified {op} {v}` needs true or false"
        ))
    };
    let mut kept = Map::new();
    for (op, v) in cond {
        let list = || v.as_array().map_or_else(|| vec![v.clone()], Clone::clone);
        let admits_true = match op.as_str() {
            "eq" => as_bool(&v).ok_or_else(|| unreadable(&op, &v))?,
            "neq" => !as_bool(&v).ok_or_else(|| unreadable(&op, &v))?,
            "in" => list().iter().any(|i| as_bool(i) == Some(true)),
            "notin" | "nin" => !list().iter().any(|i| as_bool(i) == Some(true)),
            _ => {
                kept.insert(op, v);
                continue;
            }
        };
        if !admits_true {
            return Err(QueryError::NothingAllowed(format!(
                "your search asks for `verified {op} {v}`, but your team rents from verified hosts only; no offer your team may rent matches"
            )));
        }
    }
    kept.insert("eq".to_owned(), json!(true));
    query.insert("verified".to_owned(), Value::Object(kept));
    Ok(())
}

fn same_gpu(a: &str, b: &str) -> bool {
    a.trim()
        .replace('_', " ")
        .eq_ignore_ascii_case(&b.trim().replace('_', " "))
}

/// Takes the field's condition object out of the query (empty when
/// absent; a bare value is read as `eq`); put it back with `insert`.
fn take_cond(query: &mut Map<String, Value>, field: &str) -> Map<String, Value> {
    match query.remove(field) {
        None => Map::new(),
        Some(Value::Object(m)) => m,
        Some(v) => {
            let mut m = Map::new();
            m.insert("eq".to_owned(), v);
            m
        }
    }
}

/// Intersects the user's condition on a numeric field with the team's
/// bound: refuses an empty intersection (saying why), and makes `op` the
/// stricter of the user's and ours, keeping every other condition.
fn tighten(
    query: &mut Map<String, Value>,
    field: &str,
    bound: Bound,
    team_says: &str,
) -> Result<(), QueryError> {
    let mut c = take_cond(query, field);
    check_overlap(field, &c, bound, team_says)?;
    let (op, ours, stricter): (&str, f64, fn(f64, f64) -> f64) = match bound {
        Bound::AtMost(max) => ("lte", max, f64::min),
        Bound::AtLeast(min) => ("gte", min, f64::max),
    };
    let value = match c.get(op) {
        Some(theirs) => stricter(operand(field, op, theirs)?, ours),
        None => ours,
    };
    c.insert(op.to_owned(), json!(value));
    query.insert(field.to_owned(), Value::Object(c));
    Ok(())
}

/// Puts the constraints into a search query (the CLI's filter object):
/// each of the user's conditions is intersected with the team's, never
/// replaced by it. `gpu_names` is the upstream's list of GPU names; the
/// allowed ones are what the `gpu_name` condition may match, intersected
/// with what the user asked for. Fails, saying why, when nothing could
/// match.
pub fn constrain(
    query: &mut Map<String, Value>,
    c: &OfferConstraints,
    gpu_names: &[String],
) -> Result<(), QueryError> {
    if let Some(models) = &c.models {
        let mut names: Vec<String> = gpu_names
            .iter()
            .filter(|n| model_of(n).is_some_and(|m| models.contains(&m)))
            .cloned()
            .collect();
        let user = take_cond(query, "gpu_name");
        let mut kept = Map::new();
        for (op, v) in user {
            let text = |v: &Value| v.as_str().map(str::to_owned);
            let list = |v: &Value| -> Vec<String> {
                v.as_array()
                    .map(|a| a.iter().filter_map(text).collect())
                    .unwrap_or_default()
            };
            match op.as_str() {
                "eq" => {
                    let want = text(&v);
                    names.retain(|n| want.as_deref().is_some_and(|w| same_gpu(n, w)));
                }
                "neq" => {
                    let not = text(&v);
                    names.retain(|n| !not.as_deref().is_some_and(|w| same_gpu(n, w)));
                }
                "in" => {
                    let want = list(&v);
                    names.retain(|n| want.iter().any(|w| same_gpu(n, w)));
                }
                "notin" | "nin" => {
                    let not = list(&v);
                    names.retain(|n| !not.iter().any(|w| same_gpu(n, w)));
                }
                _ => {
                    kept.insert(op, v);
                }
            }
        }
        if names.is_empty() {
            let allowed = models
                .iter()
                .map(|m| format!("`{m}`"))
                .collect::<Vec<_>>()
                .join(", ");
            return Err(QueryError::NothingAllowed(format!(
                "no GPU model your team may rent matches this search; allowed: {allowed}"
            )));
        }
        kept.insert("in".to_owned(), json!(names));
        query.insert("gpu_name".to_owned(), Value::Object(kept));
    }
    if let Some(max) = c.max_gpus {
        tighten(
            query,
            "num_gpus",
            Bound::AtMost(max as f64),
            &format!("your team may rent at most {max} GPUs at once"),
        )?;
    }
    if let Some(max) = c.max_dph {
        tighten(
            query,
            "dph_total",
            Bound::AtMost(max.as_dollars_f64()),
            &format!("your team may rent at most {max}/hour at once"),
        )?;
    }
    if let Some(min) = c.min_reliability {
        tighten(
            query,
            "reliability2",
            Bound::AtLeast(min),
            &format!("your team rents from hosts of reliability {min} or more only"),
        )?;
    }
    if c.verified_only {
        require_verified(query)?;
    }
    query.insert("rentable".to_owned(), json!({"eq": true}));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names() -> Vec<String> {
        ["RTX 3090", "RTX 4090", "H100 SXM", "A100 PCIE"]
            .iter()
            .map(|s| (*s).to_owned())
            .collect()
    }

    fn constraints() -> OfferConstraints {
        OfferConstraints {
            models: Some(vec![
                GpuModel::parse("RTX_4090").unwrap(),
                GpuModel::parse("rtx_3090").unwrap(),
            ]),
            max_gpus: Some(4),
            max_dph: Some(Usd::from_micros(1_500_000)),
            min_reliability: Some(0.95),
            verified_only: true,
        }
    }

    fn q(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn vast_names_map_to_models_with_underscores() {
        assert_eq!(model_of("RTX 4090").unwrap().as_str(), "RTX_4090");
        assert_eq!(model_of(" h100 sxm ").unwrap().as_str(), "H100_SXM");
        assert!(model_of("").is_none());
    }

    #[test]
    fn the_users_gpu_filter_is_intersected_with_the_allowed_models() {
        let c = constraints();
        let mut query = q(json!({
            "gpu_name": {"eq": "RTX 4090"}, "num_gpus": {"gte": "2", "lte": "8"},
            "dph_total": {"lt": "1"}, "order": [["score", "desc"]], "type": "on-demand",
            "verified": {"eq": true}
        }));
        constrain(&mut query, &c, &names()).unwrap();
        assert_eq!(query["gpu_name"], json!({"in": ["RTX 4090"]}));
        assert_eq!(query["num_gpus"], json!({"gte": "2", "lte": 4.0}));
        assert_eq!(query["dph_total"], json!({"lt": "1", "lte": 1.5}));
        assert_eq!(query["reliability2"], json!({"gte": 0.95}));
        assert_eq!(query["verified"], json!({"eq": true}));
        assert_eq!(query["rentable"], json!({"eq": true}));
        assert_eq!(query["order"], json!([["score", "desc"]]));

        // No GPU filter: every allowed name; a stricter user bound stays.
        let mut query = q(json!({"dph_total": {"lte": "0.5"}, "reliability2": {"gte": "0.99"}}));
        constrain(&mut query, &c, &names()).unwrap();
        assert_eq!(query["gpu_name"], json!({"in": ["RTX 3090", "RTX 4090"]}));
        assert_eq!(query["dph_total"], json!({"lte": 0.5}));
        assert_eq!(query["reliability2"], json!({"gte": 0.99}));

        // neq/notin/in narrow it; underscores as the CLI user may write them.
        let mut query = q(json!({"gpu_name": {"in": ["RTX_3090", "H100 SXM"]}}));
        constrain(&mut query, &c, &names()).unwrap();
        assert_eq!(query["gpu_name"], json!({"in": ["RTX 3090"]}));
        let mut query = q(json!({"gpu_name": {"neq": "RTX 3090"}}));
        constrain(&mut query, &c, &names()).unwrap();
        assert_eq!(query["gpu_name"], json!({"in": ["RTX 4090"]}));
    }

    #[test]
    fn asking_only_for_disallowed_gpus_matches_nothing() {
        let mut query = q(json!({"gpu_name": {"eq": "H100 SXM"}}));
        let err = constrain(&mut query, &constraints(), &names()).unwrap_err();
        assert!(
            matches!(&err, QueryError::NothingAllowed(m) if m.contains("`RTX_4090`")),
            "{err:?}"
        );
    }

    fn refused(query: Value) -> QueryError {
        constrain(&mut q(query), &constraints(), &names()).unwrap_err()
    }

    fn nothing(query: Value) -> String {
        match refused(query.clone()) {
            QueryError::NothingAllowed(why) => why,
            other => panic!("{query}: {other:?}"),
        }
    }

    #[test]
    fn the_users_verified_filter_is_intersected_never_replaced() {
        // Asking for unverified hosts of a verified-only team: nothing, and why.
        for cond in [
            json!({"eq": false}),
            json!({"eq": "False"}),
            json!(false),
            json!({"neq": true}),
            json!({"in": [false]}),
            json!({"notin": [true]}),
        ] {
            let why = nothing(json!({ "verified": cond }));
            assert!(
                why.starts_with("your search asks for `verified ")
                    && why.contains("your team rents from verified hosts only"),
                "{cond}: {why}"
            );
        }
        // Admitting verified hosts (or not asking): verified ones.
        for cond in [
            json!({"eq": true}),
            json!({"in": [true, false]}),
            json!({"neq": false}),
        ] {
            let mut query = q(json!({ "verified": cond }));
            constrain(&mut query, &constraints(), &names()).unwrap();
            assert_eq!(query["verified"], json!({"eq": true}), "{cond}");
        }
        let mut query = q(json!({}));
        constrain(&mut query, &constraints(), &names()).unwrap();
        assert_eq!(query["verified"], json!({"eq": true}));
        // Without the team option the user's filter is left alone.
        let mut query = q(json!({"verified": {"eq": false}}));
        constrain(&mut query, &OfferConstraints::default(), &names()).unwrap();
        assert_eq!(query["verified"], json!({"eq": false}));
        assert!(matches!(
            refused(json!({"verified": {"eq": "maybe"}})),
            QueryError::Unreadable(_)
        ));
    }

    #[test]
    fn numeric_filters_outside_the_teams_limits_match_nothing_and_say_why() {
        // max_gpus 4, max $1.50/h, reliability >= 0.95.
        for (query, field) in [
            (json!({"num_gpus": {"gte": "8"}}), "num_gpus gte \"8\""),
            (json!({"num_gpus": {"eq": "8"}}), "num_gpus eq \"8\""),
            (json!({"num_gpus": "8"}), "num_gpus eq \"8\""),
            (json!({"num_gpus": {"gt": "4"}}), "num_gpus gt \"4\""),
            (
                json!({"num_gpus": {"in": ["8", "16"]}}),
                "num_gpus in [\"8\",\"16\"]",
            ),
            (json!({"dph_total": {"gte": "2"}}), "dph_total gte \"2\""),
            (
                json!({"reliability2": {"lt": "0.95"}}),
                "reliability2 lt \"0.95\"",
            ),
            (
                json!({"reliability2": {"lte": "0.5"}}),
                "reliability2 lte \"0.5\"",
            ),
        ] {
            let why = nothing(query.clone());
            assert!(
                why.starts_with(&format!("your search asks for `{field}`, but your team")),
                "{query}: {why}"
            );
        }
        assert!(nothing(json!({"num_gpus": {"gte": "8"}})).contains("at most 4 GPUs"));
        assert!(nothing(json!({"dph_total": {"gt": "1.5"}})).contains("at most $1.50/hour"));
        assert!(
            nothing(json!({"reliability2": {"lt": "0.9"}})).contains("reliability 0.95 or more")
        );
        // Overlapping ones are kept beside the team's bound (the upstream
        // applies both), the same operator tightened.
        let mut query =
            q(json!({"num_gpus": {"in": ["2", "8"], "lte": "6"}, "reliability2": {"lte": "0.99"}}));
        constrain(&mut query, &constraints(), &names()).unwrap();
        assert_eq!(query["num_gpus"], json!({"in": ["2", "8"], "lte": 4.0}));
        assert_eq!(query["reliability2"], json!({"lte": "0.99", "gte": 0.95}));
        // An operand that is not a number is not replaced by the team's: 400.
        assert!(matches!(
            refused(json!({"num_gpus": {"lte": "many"}})),
            QueryError::Unreadable(_)
        ));
    }

    #[test]
    fn no_constraints_only_requires_rentable() {
        let mut query = q(json!({"gpu_name": {"eq": "H100 SXM"}}));
        constrain(&mut query, &OfferConstraints::default(), &names()).unwrap();
        assert_eq!(
            Value::Object(query),
            json!({"gpu_name": {"eq": "H100 SXM"}, "rentable": {"eq": true}})
        );
    }

    #[test]
    fn raw_answers_keep_allowed_offers_as_written() {
        let raw = br#"{"offers": [{"id": 1, "gpu_name": "RTX 4090", "num_gpus": 2, "dph_total": 1.2, "reliability2": 0.99, "verified": true, "x": {"deep": [1, 2]}},
                                   {"id": 2, "gpu_name": "H100 SXM", "num_gpus": 1, "dph_total": 1.0, "reliability2": 0.99, "verified": true},
                                   {"id": 3, "gpu_name": "RTX 3090", "num_gpus": "1", "dph_total": "0.3", "reliability2": 0.97, "verified": true},
                                   "not an offer"]}"#;
        let out = filter_raw(raw, &constraints()).unwrap();
        let v: Value = serde_json::from_str(&out).unwrap();
        let ids: Vec<u64> = v["offers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|o| o["id"].as_u64().unwrap())
            .collect();
        assert_eq!(ids, [1, 3]);
        assert!(out.contains(r#""x": {"deep": [1, 2]}"#), "{out}");
        assert_eq!(
            filter_raw(br#"{"offers": []}"#, &constraints()).unwrap(),
            r#"{"offers":[]}"#
        );
        assert!(filter_raw(b"{}", &constraints()).is_err());
    }

    #[test]
    fn answers_are_checked_again() {
        let c = constraints();
        let ok = q(
            json!({"gpu_name": "RTX 4090", "num_gpus": 2, "dph_total": 1.2, "reliability2": 0.99, "verified": true}),
        );
        assert!(c.allows(&ok));
        for (k, v) in [
            ("gpu_name", json!("H100 SXM")),
            ("num_gpus", json!(8)),
            ("dph_total", json!(1.51)),
            ("reliability2", json!(0.5)),
            ("verified", json!(false)),
        ] {
            let mut bad = ok.clone();
            bad.insert(k.to_owned(), v);
            assert!(!c.allows(&bad), "{k}");
            bad.remove(k);
            assert!(!c.allows(&bad), "missing {k}");
        }
    }
}
