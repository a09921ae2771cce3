//! The captured vastai 1.9.1 requests (tests/fixtures/vastai-1.9.1), replayed
//! against the simulator. Every answer must be JSON with `Content-Type:
//! application/json` and have the shape of the captured answer: each key it
//! had, with the same JSON type (integer and float told apart).
//!
//! The captured answers are what the CLI printed with `--raw`; where it only
//! printed a message (`stopping instance N.`), the answer is the one that
//! message needs (`{"success": true}`).

use std::path::PathBuf;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use serde_json::{json, Value};
use warden_sim::SimConfig;

use crate::support::{sim_with, Reply, Sim};

fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/vastai-1.9.1")
}

/// One captured request.
#[derive(Clone, Debug)]
struct Captured {
    method: String,
    target: String,
    auth: Option<String>,
    body: String,
}

/// `cases/NAME.requests.jsonl`.
fn case(name: &str) -> Vec<Captured> {
    let text = std::fs::read_to_string(dir().join(format!("cases/{name}.requests.jsonl"))).unwrap();
    text.lines()
        .map(|line| {
            let r: Value = serde_json::from_str(line).unwrap();
            let auth = r["headers"]
                .as_array()
                .unwrap()
                .iter()
                .find(|h| h[0] == "Authorization")
                .map(|h| h[1].as_str().unwrap().to_owned());
            // request_line keeps what was on the wire, e.g. `GET //api/v0/...`.
            let target = r["request_line"]
                .as_str()
                .unwrap()
                .split(' ')
                .nth(1)
                .unwrap()
                .to_owned();
            Captured {
                method: r["method"].as_str().unwrap().to_owned(),
                target,
                auth,
                body: r["body_raw"].as_str().unwrap().to_owned(),
            }
        })
        .collect()
}

/// `req-NN.http`, sent to a proxy mounted at `/vast`: the prefix is dropped.
fn http_file(n: u32) -> Captured {
    let text = std::fs::read_to_string(dir().join(format!("req-{n:02}.http"))).unwrap();
    let (head, body) = text.split_once("\n\n").unwrap();
    let mut lines = head.lines();
    let mut request_line = lines.next().unwrap().split(' ');
    let method = request_line.next().unwrap().to_owned();
    let target = request_line
        .next()
        .unwrap()
        .strip_prefix("/vast")
        .unwrap()
        .to_owned();
    let auth = lines
        .find_map(|l| l.strip_prefix("Authorization: "))
        .map(str::to_owned);
    Captured {
        method,
        target,
        auth,
        body: body.trim_end().to_owned(),
    }
}

/// What the CLI printed: JSON for `--raw`.
fn stdout_json(name: &str) -> Value {
    serde_json::from_str(
        &std::fs::read_to_string(dir().join(format!("cases/{name}.stdout"))).unwrap(),
    )
    .unwrap()
}

async fn send(sim: &Sim, c: &Captured, rewrite: &[(&str, String)]) -> Reply {
    let (mut target, mut body) = (c.target.clone(), c.body.clone());
    for (from, to) in rewrite {
        target = target.replace(from, to);
        body = body.replace(from, to);
    }
    let mut req = Request::builder()
        .method(c.method.as_str())
        .uri(target)
        .header("User-Agent", "vastai-cli/1.9.1");
    if let Some(auth) = &c.auth {
        req = req.header("Authorization", auth);
    }
    if !body.is_empty() {
        req = req.header("Content-Type", "application/json");
    }
    let reply = sim.send(req.body(Body::from(body)).unwrap()).await;
    assert_eq!(
        reply.status,
        StatusCode::OK,
        "{} {}: {}",
        c.method,
        c.target,
        reply.body
    );
    assert_eq!(
        reply.content_type.as_deref(),
        Some("application/json"),
        "{} {}",
        c.method,
        c.target
    );
    reply
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "bool",
        Value::Number(n) if n.is_f64() => "float",
        Value::Number(_) => "integer",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// Differences between the shapes; `null` in `want` accepts any value, and
/// every element of an array must have the shape of `want`'s first (whether
/// an array may be empty is for each test to say).
fn shape_errors(want: &Value, got: &Value, at: &str, errors: &mut Vec<String>) {
    match (want, got) {
        (Value::Null, _) => {}
        (Value::Object(w), Value::Object(g)) => {
            for (key, wv) in w {
                match g.get(key) {
                    Some(gv) => shape_errors(wv, gv, &format!("{at}.{key}"), errors),
                    None => errors.push(format!("{at}.{key}: missing")),
                }
            }
        }
        (Value::Array(w), Value::Array(g)) => {
            if let Some(first) = w.first() {
                for (i, gv) in g.iter().enumerate() {
                    shape_errors(first, gv, &format!("{at}[{i}]"), errors);
                }
            }
        }
        (w, g) if kind(w) != kind(g) => errors.push(format!(
            "{at}: {} where the capture had {}",
            kind(g),
            kind(w)
        )),
        _ => {}
    }
}

fn assert_shape(name: &str, want: &Value, got: &Value) {
    let mut errors = Vec::new();
    shape_errors(want, got, name, &mut errors);
    assert!(errors.is_empty(), "{}\nanswer: {got}", errors.join("\n"));
}

/// The listing the CLI asked for: rows keep only `select_cols` when it is sent.
fn listing_want(target: &str) -> Value {
    let mut want = stdout_json("24_show_instances_limit_raw");
    let query = target.split_once('?').map_or("", |(_, q)| q);
    let cols = form_urlencoded::parse(query.as_bytes()).find(|(k, _)| k == "select_cols");
    if let Some((_, cols)) = cols {
        let cols: Vec<String> = serde_json::from_str(&cols).unwrap();
        for row in want["instances"].as_array_mut().unwrap() {
            row.as_object_mut().unwrap().retain(|k, _| cols.contains(k));
        }
    }
    want
}

/// `show instance --raw` printed the row after adding `duration` and turning
/// `extra_env` into an object; this is the row as the server sent it.
fn show_want() -> Value {
    let mut row = stdout_json("30_show_instance_raw");
    let obj = row.as_object_mut().unwrap();
    obj.remove("duration");
    let env: Vec<Value> = obj["extra_env"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| json!([k, v]))
        .collect();
    obj.insert("extra_env".to_owned(), json!(env));
    json!({"instances": row})
}

fn success() -> Value {
    json!({"success": true})
}

fn any_key() -> Sim {
    sim_with(|c| {
        *c = SimConfig {
            clock: c.clock.clone(),
            boot_delay: c.boot_delay,
            ..SimConfig::default()
        }
    })
}

/// An available offer of this model and count, other than those taken.
fn free_offer(sim: &Sim, gpu: &str, taken: &[u64]) -> u64 {
    let offers = sim.state.offers();
    offers
        .iter()
        .find(|o| o.gpu_name == gpu && o.rented_by.is_none() && !taken.contains(&o.id))
        .unwrap()
        .id
}

#[tokio::test]
async fn captured_cases_get_answers_of_the_captured_shape() {
    let sim = any_key();

    for name in [
        "01_search_offers_raw_firstrun",
        "02_search_offers_complex",
        "03_search_offers_ops",
        "04_search_offers_nodefault_bid",
        "05_search_offers_reserved",
        "06_search_offers_new",
        "15_search_offers_order_alias",
    ] {
        let want = json!({"offers": stdout_json(name)});
        let search = case(name).pop().unwrap();
        let got = send(&sim, &search, &[]).await.body;
        if [
            "01_search_offers_raw_firstrun",
            "06_search_offers_new",
            "15_search_offers_order_alias",
        ]
        .contains(&name)
        {
            assert!(
                !got["offers"].as_array().unwrap().is_empty(),
                "{name} found no offer"
            );
        }
        assert_shape(name, &want, &got);
    }

    // Creates: the captures rented offer 12345678 (ids 111 and 222 in bulk).
    let created = stdout_json("11_create_instance_raw");
    let offer = free_offer(&sim, "RTX 4090", &[]);
    let got = send(
        &sim,
        &case("11_create_instance_raw")[0],
        &[("12345678", offer.to_string())],
    )
    .await
    .body;
    assert_shape("11_create_instance_raw", &created, &got);
    let first = got["new_contract"].as_u64().unwrap();
    // A $0.25/h bid needs an offer whose minimum bid is lower: an RTX 3090.
    let offer = free_offer(&sim, "RTX 3090", &[]);
    let got = send(
        &sim,
        &case("12_create_instance_bid_args")[0],
        &[("12345678", offer.to_string())],
    )
    .await
    .body;
    assert_shape("12_create_instance_bid_args", &created, &got);
    let got = send(&sim, &case("13_launch_instance")[0], &[]).await.body;
    assert_shape("13_launch_instance", &created, &got);
    let a = free_offer(&sim, "L40S", &[]);
    let b = free_offer(&sim, "L40S", &[a]);
    let got = send(
        &sim,
        &case("14_create_instances_bulk")[0],
        &[("[111, 222]", format!("[{a}, {b}]"))],
    )
    .await
    .body;
    assert_shape("14_create_instances_bulk", &success(), &got);
    let ids: Vec<u64> = sim.state.instances().iter().map(|i| i.id).collect();
    assert_eq!(ids.len(), 5);

    let instance = [("7835610", first.to_string())];
    for name in [
        "20_show_instances_raw",
        "24_show_instances_limit_raw",
        "23_show_instances_verbose_filters",
    ] {
        for request in case(name) {
            let got = send(&sim, &request, &[]).await.body;
            if request.target.starts_with("/api/v0/instances/filters/") {
                // What the CLI's "Filterable Values" panel showed.
                let want = json!({"filters": [{"actual_status": "running", "verification": "verified", "gpu_name": "RTX 4090"}]});
                assert_shape(name, &want, &got);
            } else {
                // 23 asked for label `training`, which no instance here has.
                let rows = if name.starts_with("23") { 0 } else { 5 };
                assert_eq!(got["instances"].as_array().unwrap().len(), rows, "{name}");
                assert_shape(name, &listing_want(&request.target), &got);
            }
        }
    }
    let got = send(&sim, &case("30_show_instance_raw")[0], &instance)
        .await
        .body;
    assert_shape("30_show_instance_raw", &show_want(), &got);
    assert_eq!(got["instances"]["id"], first);

    for name in ["50_stop_instance", "51_start_instance", "54_label_instance"] {
        let got = send(&sim, &case(name)[0], &instance).await.body;
        assert_shape(name, &success(), &got);
    }
    assert_eq!(
        sim.state.instance(first).unwrap().label.as_deref(),
        Some("foo")
    );
    let pair = format!("[{}, {}]", ids[1], ids[2]);
    let got = send(
        &sim,
        &case("52_stop_instances_bulk")[0],
        &[("[1, 2]", pair)],
    )
    .await
    .body;
    assert_shape("52_stop_instances_bulk", &success(), &got);

    for name in ["60_show_user_raw", "auth_10_url_trailing_slash"] {
        let got = send(&sim, &case(name)[0], &[]).await.body;
        assert_shape(name, &stdout_json("60_show_user_raw"), &got);
    }

    let got = send(&sim, &case("40_destroy_instance")[0], &instance)
        .await
        .body;
    assert_shape("40_destroy_instance", &success(), &got);
    let three = format!("[{}, {}, {}]", ids[1], ids[2], ids[3]);
    let got = send(
        &sim,
        &case("43_destroy_instances_bulk")[0],
        &[("[1, 2, 3]", three)],
    )
    .await
    .body;
    assert_shape("43_destroy_instances_bulk", &success(), &got);
    let left: Vec<u64> = sim.state.instances().iter().map(|i| i.id).collect();
    assert_eq!(left, vec![ids[4]]);
}

/// The session in req-01..12 replays verbatim: the default catalog starts at
/// offer 1001 and the first instance is 5001, the ids the session used.
#[tokio::test]
async fn the_captured_session_replays_verbatim() {
    let sim = any_key();
    let mut answers = Vec::new();
    for n in 1..=12 {
        let request = http_file(n);
        let got = send(&sim, &request, &[]).await.body;
        answers.push((request, got));
    }
    let get = |n: usize| answers[n - 1].1.clone();
    assert_shape("req-01", &stdout_json("60_show_user_raw"), &get(1));
    assert_shape("req-04", &stdout_json("11_create_instance_raw"), &get(4));
    assert_eq!(get(4)["new_contract"], 5001);
    for n in [6, 7] {
        assert_eq!(get(n)["instances"][0]["id"], 5001, "req-{n:02}");
        assert_shape(
            &format!("req-{n:02}"),
            &listing_want(&answers[n - 1].0.target),
            &get(n),
        );
    }
    assert!(get(2)["offers"].is_array() && get(3)["offers"].is_array());
    assert_shape("req-08", &show_want(), &get(8));
    for n in [9, 10, 12] {
        assert_eq!(get(n), success(), "req-{n:02}");
    }
    assert!(sim.state.instances().is_empty());
    assert_eq!(sim.state.instance(5001).unwrap().offer_id, 1001);
}
