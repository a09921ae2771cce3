//! Instance rows: what the door reads from them, and listings cut down to
//! one team's instances with their totals and paging recomputed (the CLI
//! pages on `next_token` and shows `total_instances`).

use std::collections::BTreeMap;

use serde_json::{json, Map, Value};
use warden_core::Usd;

use super::search::number;
use super::upstream::Row;

/// The env var Warden adds to every create, naming the placeholder's
/// token, so the instance can be matched with its reservation when the
/// create's answer is lost.
pub const CREATE_ENV: &str = "WARDEN_CREATE_ID";
/// The env var naming the team an instance belongs to.
pub const TEAM_ENV: &str = "WARDEN_TEAM";

/// The instance id of a row.
pub fn id(row: &Row) -> Option<u64> {
    row.get("id").and_then(Value::as_u64)
}

/// The value of env var `key` in a row's `extra_env` (`[[k, v], ...]`, or
/// an object).
pub fn env<'r>(row: &'r Row, key: &str) -> Option<&'r str> {
    match row.get("extra_env")? {
        Value::Array(pairs) => pairs.iter().find_map(|p| {
            let pair = p.as_array()?;
            (pair.first()?.as_str()? == key).then(|| pair.get(1)?.as_str())?
        }),
        Value::Object(vars) => vars.get(key)?.as_str(),
        _ => None,
    }
}

/// Whether the instance is meant to run (and so holds its GPUs and costs
/// its full `dph_total`): loading or running, not stopped.
pub fn is_active(row: &Row) -> bool {
    let s = |k: &str| row.get(k).and_then(Value::as_str);
    match s("intended_status").or(s("cur_state")) {
        Some(state) => state == "running",
        None => matches!(s("actual_status"), Some("running" | "loading" | "created")),
    }
}

/// The instance's price per hour.
pub fn dph_total(row: &Row) -> Option<Usd> {
    row.get("dph_total")
        .and_then(number)
        .and_then(|d| Usd::from_dollars(d).ok())
}

/// Makes a row safe for the CLI's `--raw` paths, which crash on a missing
/// or non-numeric `start_date` and a missing `extra_env` list.
pub fn normalize(row: &mut Row) {
    if !row.get("start_date").is_some_and(Value::is_number) {
        let start = row.get("start_date").and_then(number).unwrap_or(0.0);
        row.insert("start_date".to_owned(), json!(start));
    }
    let env = match row.remove("extra_env") {
        Some(Value::Array(pairs)) => Value::Array(pairs),
        Some(Value::Object(vars)) => {
            Value::Array(vars.into_iter().map(|(k, v)| json!([k, v])).collect())
        }
        _ => json!([]),
    };
    row.insert("extra_env".to_owned(), env);
}

/// The `GET /api/v1/instances/` answer for `rows` (already one team's,
/// filtered and ordered): the page after `after_token` (an offset), of at
/// most `limit` rows, with `select_cols` applied, the totals and the next
/// token.
pub fn page(
    rows: Vec<Row>,
    limit: usize,
    after_token: usize,
    select_cols: Option<&[String]>,
) -> Value {
    let total = rows.len();
    let mut label_counts = BTreeMap::<String, u64>::new();
    for label in rows.iter().filter_map(|r| r.get("label")?.as_str()) {
        *label_counts.entry(label.to_owned()).or_default() += 1;
    }
    let limit = limit.max(1);
    let page: Vec<Value> = rows
        .into_iter()
        .skip(after_token)
        .take(limit)
        .map(|mut row| {
            if let Some(cols) = select_cols {
                row.retain(|k, _| cols.iter().any(|c| c == k));
            }
            Value::Object(row)
        })
        .collect();
    let next = after_token.saturating_add(limit);
    let next_token = if next < total {
        json!(next.to_string())
    } else {
        Value::Null
    };
    json!({
        "instances": page,
        "next_token": next_token,
        "total_instances": total,
        "label_counts": label_counts,
    })
}

/// The `GET /api/v0/instances/filters/` answer for one team's rows.
pub fn filters(rows: &[Row]) -> Value {
    let mut combos: Vec<Value> = rows
        .iter()
        .map(|r| {
            json!({
                "actual_status": r.get("actual_status"),
                "verification": r.get("verification"),
                "gpu_name": r.get("gpu_name"),
            })
        })
        .collect();
    combos.sort_by_key(Value::to_string);
    combos.dedup();
    json!({"filters": combos})
}

/// A row's `ssh_host` and `ssh_port`, when it has both.
pub fn ssh_address(row: &Row) -> Option<(String, u16)> {
    let host = row.get("ssh_host")?.as_str()?.to_owned();
    let port = row
        .get("ssh_port")
        .and_then(number)
        .filter(|p| (1.0..=65535.0).contains(p))? as u16;
    Some((host, port))
}

/// An empty row map (for tests and callers building rows).
pub fn row(v: Value) -> Row {
    match v {
        Value::Object(m) => m,
        _ => Map::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_are_normalized_for_the_raw_cli() {
        let mut r = row(json!({"id": 1, "start_date": null, "extra_env": {"A": "1"}}));
        normalize(&mut r);
        assert_eq!(r["start_date"], json!(0.0));
        assert_eq!(r["extra_env"], json!([["A", "1"]]));
        let mut r = row(json!({"id": 1, "start_date": "1700000000.5"}));
        normalize(&mut r);
        assert_eq!(r["start_date"], json!(1_700_000_000.5));
        assert_eq!(r["extra_env"], json!([]));
    }

    #[test]
    fn env_and_state_are_read() {
        let r = row(
            json!({"extra_env": [["WARDEN_CREATE_ID", "abc"], ["X", "y"]], "intended_status": "stopped", "actual_status": "exited"}),
        );
        assert_eq!(env(&r, CREATE_ENV), Some("abc"));
        assert_eq!(env(&r, "nope"), None);
        assert!(!is_active(&r));
        assert!(is_active(&row(json!({"actual_status": "loading"}))));
    }

    #[test]
    fn pages_recompute_totals_and_tokens() {
        let rows: Vec<Row> = (1..=5)
            .map(|i| row(json!({"id": i, "label": if i % 2 == 0 { "even" } else { "odd" }, "gpu_name": "RTX 4090"})))
            .collect();
        let p = page(rows.clone(), 2, 0, None);
        assert_eq!(p["total_instances"], 5);
        assert_eq!(p["next_token"], "2");
        assert_eq!(p["label_counts"], json!({"even": 2, "odd": 3}));
        assert_eq!(p["instances"].as_array().unwrap().len(), 2);
        let last = page(rows.clone(), 2, 4, Some(&["id".to_owned()]));
        assert_eq!(last["instances"], json!([{"id": 5}]));
        assert_eq!(last["next_token"], Value::Null);
        assert_eq!(page(Vec::new(), 25, 0, None)["total_instances"], 0);
    }
}
