//! `search offers`: the CLI's query language over the seeded catalog.

use axum::http::StatusCode;
use serde_json::{json, Value};
use warden_sim::{SimConfig, SimState};

use crate::support::{q, sim};

/// The filters the CLI adds to every search unless `-n` is given.
fn cli_query(extra: Value) -> Value {
    let mut query = json!({"verified": {"eq": true}, "external": {"eq": false}, "rentable": {"eq": true},
        "order": [["score", "desc"]], "type": "on-demand", "allocated_storage": 5.0});
    query
        .as_object_mut()
        .unwrap()
        .extend(extra.as_object().unwrap().clone());
    query
}

async fn offers(sim: &crate::support::Sim, query: Value) -> Vec<Value> {
    let r = sim.call("POST", "/api/v0/bundles/", Some(query)).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    // The CLI rejects any other Content-Type, even with `; charset=utf-8`.
    assert_eq!(r.content_type.as_deref(), Some("application/json"));
    r.body["offers"].as_array().unwrap().clone()
}

#[tokio::test]
async fn string_numbers_and_default_filters_select_offers() {
    let sim = sim();
    let query = cli_query(
        json!({"gpu_name": {"eq": "RTX 4090"}, "num_gpus": {"gte": "2"}, "dph_total": {"lt": "3"}}),
    );
    let found = offers(&sim, query).await;
    assert!(!found.is_empty());
    for o in &found {
        assert_eq!(o["gpu_name"], "RTX 4090");
        assert!(o["num_gpus"].as_u64().unwrap() >= 2);
        assert!(o["dph_total"].as_f64().unwrap() < 3.0);
        assert_eq!(
            (
                o["verified"].clone(),
                o["rentable"].clone(),
                o["external"].clone()
            ),
            (json!(true), json!(true), json!(false))
        );
    }
    let scores: Vec<f64> = found.iter().map(|o| o["score"].as_f64().unwrap()).collect();
    assert!(
        scores.windows(2).all(|w| w[0] >= w[1]),
        "not by score desc: {scores:?}"
    );
    // Without the CLI defaults, unverified offers of that model show too.
    let all = offers(
        &sim,
        json!({"gpu_name": {"eq": "RTX 4090"}, "num_gpus": {"gte": "2"}, "dph_total": {"lt": "3"}}),
    )
    .await;
    assert!(all.len() > found.len());
}

#[tokio::test]
async fn in_notin_order_and_limit() {
    let sim = sim();
    let query = json!({"geolocation": {"in": ["SE", "NO", "United States, US"]}, "num_gpus": {"neq": "8"},
        "order": [["dph_total", "asc"], ["id", "desc"]], "limit": 5});
    let found = offers(&sim, query).await;
    assert_eq!(found.len(), 5);
    for o in &found {
        let place = o["geolocation"].as_str().unwrap();
        assert!(
            place.ends_with(", SE") || place.ends_with(", NO") || place == "United States, US",
            "{place}"
        );
        assert_ne!(o["num_gpus"], 8);
    }
    let prices: Vec<f64> = found
        .iter()
        .map(|o| o["dph_total"].as_f64().unwrap())
        .collect();
    assert!(
        prices.windows(2).all(|w| w[0] <= w[1]),
        "not by price asc: {prices:?}"
    );

    let excluded = offers(
        &sim,
        json!({"geolocation": {"notin": ["SE", "US"]}, "limit": 1000}),
    )
    .await;
    assert_eq!(
        excluded.len()
            + offers(
                &sim,
                json!({"geolocation": {"in": ["SE", "US"]}, "limit": 1000})
            )
            .await
            .len(),
        120
    );
    assert!(excluded
        .iter()
        .all(|o| !o["geolocation"].as_str().unwrap().ends_with(", US")));
}

#[tokio::test]
async fn scaled_fields_and_versions_as_the_cli_sends_them() {
    // `gpu_ram>=40 cuda_vers>=12.4 driver_version>=550.0.0 reliability>0.95`
    let sim = sim();
    let query = json!({"gpu_ram": {"gte": 40000.0}, "cuda_max_good": {"gte": "12.4"},
        "driver_version": {"gte": 550_000_000}, "reliability": {"gt": "0.95"}, "limit": 1000});
    let found = offers(&sim, query).await;
    assert!(!found.is_empty());
    for o in &found {
        assert!(o["gpu_ram"].as_u64().unwrap() >= 40000);
        assert!(o["cuda_max_good"].as_f64().unwrap() >= 12.4);
        assert!(!o["driver_version"].as_str().unwrap().starts_with("535."));
        assert!(o["reliability"].as_f64().unwrap() > 0.95);
    }
}

#[tokio::test]
async fn bid_type_and_allocated_storage_change_the_price() {
    let sim = sim();
    let id = sim.offer("H100 SXM", 8);
    let price = |o: &Value, k: &str| o[k].as_f64().unwrap();
    let demand = offers(&sim, json!({"id": {"eq": id}})).await.remove(0);
    let bid = offers(&sim, json!({"id": {"eq": id}, "type": "bid"}))
        .await
        .remove(0);
    let big_disk = offers(&sim, json!({"id": {"eq": id}, "allocated_storage": 725.0}))
        .await
        .remove(0);
    assert_eq!(bid["is_bid"], true);
    assert!(
        (price(&bid, "dph_total") - price(&bid, "min_bid") - price(&bid, "storage_total_cost"))
            .abs()
            < 1e-9
    );
    assert!(price(&bid, "dph_total") < price(&demand, "dph_total"));
    // 720 GB more for one hour of a $/GB/month price: one storage_cost more.
    let extra = price(&big_disk, "dph_total") - price(&demand, "dph_total");
    assert!(
        (extra - price(&demand, "storage_cost")).abs() < 2e-6,
        "{extra}"
    );
}

#[tokio::test]
async fn search_asks_and_get_with_q_answer_like_bundles() {
    let sim = sim();
    let query = cli_query(json!({"num_gpus": {"eq": "1"}, "limit": 3}));
    let want = offers(&sim, query.clone()).await;
    let new = sim
        .call(
            "PUT",
            "/api/v0/search/asks/",
            Some(json!({"select_cols": ["*"], "q": query})),
        )
        .await;
    assert_eq!(new.body["offers"], json!(want));
    let old = sim
        .call("GET", &format!("/api/v0/bundles/?q={}", q(&query)), None)
        .await;
    assert_eq!(old.body["offers"], json!(want));
}

#[tokio::test]
async fn a_bad_operator_is_a_400_in_vast_error_shape() {
    let sim = sim();
    let r = sim
        .call(
            "POST",
            "/api/v0/bundles/",
            Some(json!({"num_gpus": {"about": "2"}})),
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(r.body["success"], false);
    assert_eq!(r.body["error"], "invalid_args");
    assert!(r.body["msg"]
        .as_str()
        .unwrap()
        .contains("unknown operator `about` on field `num_gpus`"));
}

#[tokio::test]
async fn the_catalog_is_seeded_and_gpu_names_need_no_key() {
    let a = SimState::new(SimConfig::default());
    let b = SimState::new(SimConfig::default());
    let c = SimState::new(SimConfig {
        seed: 2,
        ..SimConfig::default()
    });
    assert_eq!(a.offer_count(), 120);
    assert_eq!(a.offers(), b.offers());
    assert_ne!(a.offers(), c.offers());

    let sim = sim();
    let req = axum::http::Request::get("/api/v0/gpu_names/unique/")
        .body(axum::body::Body::empty())
        .unwrap();
    let r = sim.send(req).await;
    assert_eq!(r.status, StatusCode::OK);
    let names = r.body["gpu_names"].as_array().unwrap();
    assert_eq!(names.len(), 8);
    assert!(names.contains(&json!("A100 SXM4")) && names.contains(&json!("RTX 3090")));
}
