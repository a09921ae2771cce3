//! The search language the `vastai` CLI sends, evaluated on JSON rows.
//!
//! A query is a JSON object `{field: {op: value, ...}, ...}` with the ops
//! `eq neq gt gte lt lte in notin` (`nin` is taken for `notin`), plus the
//! reserved keys `order`, `limit`, `type`, `allocated_storage` (and ignored
//! `disable_bundling`). Values are coerced to the row field's type: the CLI
//! sends most numbers as strings (`{"num_gpus": {"gte": "2"}}`), booleans as
//! JSON booleans, and a dotted `driver_version` as an integer
//! (`535.86.05` → `535086005`), so a string field compared with a number is
//! read as such a version. `geolocation` equals either the whole text
//! (`"Sweden, SE"`) or its country code (`"SE"`). A missing field matches no
//! condition. The same filters serve `select_filters` of instance listings.

use std::cmp::Ordering;

use serde_json::{Map, Value};

/// A comparison operator.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Op {
    Eq,
    Neq,
    Gt,
    Gte,
    Lt,
    Lte,
    In,
    NotIn,
}

impl Op {
    fn parse(s: &str) -> Option<Op> {
        Some(match s {
            "eq" => Op::Eq,
            "neq" => Op::Neq,
            "gt" => Op::Gt,
            "gte" => Op::Gte,
            "lt" => Op::Lt,
            "lte" => Op::Lte,
            "in" => Op::In,
            "notin" | "nin" => Op::NotIn,
            _ => return None,
        })
    }
}

#[derive(Clone, Debug)]
struct Cond {
    field: String,
    op: Op,
    value: Value,
}

/// A conjunction of field conditions.
#[derive(Clone, Debug, Default)]
pub(crate) struct Filter(Vec<Cond>);

impl Filter {
    /// Reads every key of `obj` except `reserved` as a field condition.
    pub(crate) fn parse(obj: &Map<String, Value>, reserved: &[&str]) -> Result<Filter, String> {
        let mut conds = Vec::new();
        for (field, spec) in obj.iter().filter(|(k, _)| !reserved.contains(&k.as_str())) {
            match spec {
                Value::Object(ops) => {
                    for (op, value) in ops {
                        let op = Op::parse(op).ok_or_else(|| {
                            format!("unknown operator `{op}` on field `{field}`; use eq, neq, gt, gte, lt, lte, in or notin")
                        })?;
                        conds.push(Cond {
                            field: field.clone(),
                            op,
                            value: value.clone(),
                        });
                    }
                }
                // A bare value means equality.
                value => conds.push(Cond {
                    field: field.clone(),
                    op: Op::Eq,
                    value: value.clone(),
                }),
            }
        }
        Ok(Filter(conds))
    }

    /// Whether `row` satisfies every condition.
    pub(crate) fn matches(&self, row: &Map<String, Value>) -> bool {
        self.0.iter().all(|c| match row.get(&c.field) {
            None => false,
            Some(field) => holds(&c.field, field, c.op, &c.value),
        })
    }
}

fn holds(name: &str, field: &Value, op: Op, want: &Value) -> bool {
    let list = || match want {
        Value::Array(items) => items.clone(),
        other => vec![other.clone()],
    };
    match op {
        Op::Eq => equals(name, field, want),
        Op::Neq => !equals(name, field, want),
        Op::In => list().iter().any(|w| equals(name, field, w)),
        Op::NotIn => !list().iter().any(|w| equals(name, field, w)),
        Op::Gt => compare(field, want) == Some(Ordering::Greater),
        Op::Gte => matches!(
            compare(field, want),
            Some(Ordering::Greater | Ordering::Equal)
        ),
        Op::Lt => compare(field, want) == Some(Ordering::Less),
        Op::Lte => matches!(compare(field, want), Some(Ordering::Less | Ordering::Equal)),
    }
}

fn equals(name: &str, field: &Value, want: &Value) -> bool {
    if let (Value::String(have), Value::String(code)) = (field, want) {
        if name == "geolocation" && have.rsplit(", ").next() == Some(code.as_str()) {
            return true;
        }
    }
    compare(field, want) == Some(Ordering::Equal)
}

/// Orders a row's field against a query value, coerced to the field's type.
fn compare(field: &Value, want: &Value) -> Option<Ordering> {
    match field {
        Value::Number(n) => n.as_f64()?.partial_cmp(&as_number(want)?),
        Value::Bool(b) => Some(b.cmp(&as_bool(want)?)),
        Value::String(s) => match want {
            Value::String(w) => Some(s.as_str().cmp(w.as_str())),
            Value::Number(w) => (version_number(s)? as f64).partial_cmp(&w.as_f64()?),
            _ => None,
        },
        Value::Null => want.is_null().then_some(Ordering::Equal),
        _ => None,
    }
}

fn as_number(v: &Value) -> Option<f64> {
    match v {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.trim().parse().ok(),
        Value::Bool(b) => Some(f64::from(u8::from(*b))),
        _ => None,
    }
}

fn as_bool(v: &Value) -> Option<bool> {
    match v {
        Value::Bool(b) => Some(*b),
        Value::String(s) => match s.as_str() {
            "true" | "True" => Some(true),
            "false" | "False" => Some(false),
            _ => None,
        },
        Value::Number(n) => n.as_f64().map(|x| x != 0.0),
        _ => None,
    }
}

/// `"535.86.05"` → `535086005`, as the CLI encodes `driver_version`.
fn version_number(s: &str) -> Option<u64> {
    s.split('.').try_fold(0u64, |acc, part| {
        Some(acc * 1000 + part.parse::<u64>().ok()?)
    })
}

/// Sort keys: `(field, descending)`.
#[derive(Clone, Debug, Default)]
pub(crate) struct Order(Vec<(String, bool)>);

impl Order {
    /// `[["score","desc"], ["dph_total","asc"]]` (searches).
    pub(crate) fn from_pairs(v: &Value) -> Result<Order, String> {
        let bad = || format!("`order` must be a list of [field, \"asc\"|\"desc\"] pairs, not {v}");
        let items = v.as_array().ok_or_else(bad)?;
        let mut keys = Vec::new();
        for item in items {
            let pair = item.as_array().ok_or_else(bad)?;
            let field = pair.first().and_then(Value::as_str).ok_or_else(bad)?;
            let dir = pair.get(1).and_then(Value::as_str).unwrap_or("asc");
            keys.push((field.to_owned(), dir.eq_ignore_ascii_case("desc")));
        }
        Ok(Order(keys))
    }

    /// `[{"col":"id","dir":"asc"}]` (instance listings).
    pub(crate) fn from_cols(v: &Value) -> Result<Order, String> {
        let bad = || {
            format!("`order_by` must be a list of {{\"col\": field, \"dir\": \"asc\"|\"desc\"}}, not {v}")
        };
        let items = v.as_array().ok_or_else(bad)?;
        let mut keys = Vec::new();
        for item in items {
            let col = item.get("col").and_then(Value::as_str).ok_or_else(bad)?;
            let dir = item.get("dir").and_then(Value::as_str).unwrap_or("asc");
            keys.push((col.to_owned(), dir.eq_ignore_ascii_case("desc")));
        }
        Ok(Order(keys))
    }

    /// Sorts rows; a row missing a key sorts after those having it.
    pub(crate) fn sort(&self, rows: &mut [Map<String, Value>]) {
        rows.sort_by(|a, b| {
            for (field, desc) in &self.0 {
                let ord = match (a.get(field), b.get(field)) {
                    (Some(x), Some(y)) => {
                        let o = compare(x, y).unwrap_or(Ordering::Equal);
                        if *desc {
                            o.reverse()
                        } else {
                            o
                        }
                    }
                    (Some(_), None) => Ordering::Less,
                    (None, Some(_)) => Ordering::Greater,
                    (None, None) => Ordering::Equal,
                };
                if ord != Ordering::Equal {
                    return ord;
                }
            }
            Ordering::Equal
        });
    }
}

/// How offers are priced: on demand, interruptible (`bid`) or reserved.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub(crate) enum OfferType {
    #[default]
    OnDemand,
    Bid,
    Reserved,
}

/// Searches return at most this many offers unless `limit` says otherwise.
pub(crate) const DEFAULT_OFFER_LIMIT: usize = 64;

/// A parsed offer search.
#[derive(Clone, Debug)]
pub(crate) struct OfferQuery {
    pub(crate) filter: Filter,
    pub(crate) order: Order,
    pub(crate) limit: usize,
    pub(crate) kind: OfferType,
    pub(crate) allocated_storage: f64,
}

impl OfferQuery {
    pub(crate) fn parse(v: &Value) -> Result<OfferQuery, String> {
        let obj = v
            .as_object()
            .ok_or_else(|| format!("the search query must be a JSON object, not {v}"))?;
        let order = match obj.get("order") {
            Some(o) => Order::from_pairs(o)?,
            None => Order(vec![("score".to_owned(), true)]),
        };
        let limit = match obj.get("limit") {
            None | Some(Value::Null) => DEFAULT_OFFER_LIMIT,
            Some(l) => as_number(l)
                .filter(|n| *n >= 0.0)
                .ok_or_else(|| format!("`limit` must be a number, not {l}"))?
                as usize,
        };
        let kind = match obj.get("type").and_then(Value::as_str) {
            None | Some("on-demand") => OfferType::OnDemand,
            Some("bid" | "interruptible") => OfferType::Bid,
            Some("reserved") => OfferType::Reserved,
            Some(other) => {
                return Err(format!(
                    "unknown offer `type` `{other}`; use on-demand, bid or reserved"
                ))
            }
        };
        let allocated_storage = obj
            .get("allocated_storage")
            .and_then(as_number)
            .unwrap_or(5.0);
        let reserved = [
            "order",
            "limit",
            "type",
            "allocated_storage",
            "disable_bundling",
        ];
        Ok(OfferQuery {
            filter: Filter::parse(obj, &reserved)?,
            order,
            limit,
            kind,
            allocated_storage,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn row(v: Value) -> Map<String, Value> {
        v.as_object().cloned().unwrap_or_default()
    }

    fn filter(v: Value) -> Filter {
        Filter::parse(v.as_object().unwrap_or(&Map::new()), &[]).unwrap_or_default()
    }

    #[test]
    fn string_numbers_compare_as_numbers() {
        let r = row(json!({"num_gpus": 2, "dph_total": 0.61}));
        assert!(filter(json!({"num_gpus": {"gte": "2"}, "dph_total": {"lt": "1"}})).matches(&r));
        assert!(!filter(json!({"num_gpus": {"gt": "2"}})).matches(&r));
        assert!(filter(json!({"num_gpus": {"neq": "3"}})).matches(&r));
        assert!(!filter(json!({"num_gpus": {"eq": "1"}})).matches(&r));
    }

    #[test]
    fn in_notin_bool_and_missing_fields() {
        let r = row(json!({"gpu_name": "RTX 4090", "verified": true, "label": null}));
        assert!(filter(json!({"gpu_name": {"in": ["RTX 3090", "RTX 4090"]}})).matches(&r));
        assert!(!filter(json!({"gpu_name": {"notin": ["RTX 4090"]}})).matches(&r));
        assert!(filter(json!({"verified": {"eq": "True"}})).matches(&r));
        assert!(filter(json!({"label": {"in": [null, "x"]}})).matches(&r));
        assert!(!filter(json!({"absent": {"neq": 1}})).matches(&r));
    }

    #[test]
    fn driver_version_and_country_codes() {
        let r = row(json!({"driver_version": "550.54.15", "geolocation": "Sweden, SE"}));
        assert!(filter(json!({"driver_version": {"gte": 535_086_005}})).matches(&r));
        assert!(!filter(json!({"driver_version": {"gte": 560_000_000}})).matches(&r));
        assert!(filter(json!({"geolocation": {"in": ["NO", "SE"]}})).matches(&r));
        assert!(!filter(json!({"geolocation": {"notin": ["CN", "SE"]}})).matches(&r));
        assert!(filter(json!({"geolocation": {"eq": "Sweden, SE"}})).matches(&r));
    }

    #[test]
    fn unknown_operator_is_an_error_naming_the_field() {
        let err = OfferQuery::parse(&json!({"num_gpus": {"between": [1, 2]}})).err();
        assert!(err.is_some_and(|e| e.contains("`between`") && e.contains("`num_gpus`")));
    }

    #[test]
    fn order_sorts_desc_then_asc_with_missing_last() {
        let mut rows = vec![
            row(json!({"a": 1, "b": 2})),
            row(json!({"b": 9})),
            row(json!({"a": 1, "b": 1})),
            row(json!({"a": 3})),
        ];
        Order::from_pairs(&json!([["a", "desc"], ["b", "asc"]]))
            .unwrap_or_default()
            .sort(&mut rows);
        let got: Vec<Value> = rows.into_iter().map(Value::Object).collect();
        assert_eq!(
            got,
            vec![
                json!({"a": 3}),
                json!({"a": 1, "b": 1}),
                json!({"a": 1, "b": 2}),
                json!({"b": 9})
            ]
        );
    }
}
