//! Instances: create → show → stop → start → destroy, offer availability,
//! cost on the manual clock, listings, auth.

use std::time::Duration;

use axum::body::Body;
use axum::http::{header, Request, StatusCode};
use serde_json::{json, Value};
use warden_sim::InstanceStatus;

use crate::support::{q, sim, Sim, BOOT, KEY, T0};

const HOUR: Duration = Duration::from_secs(3600);

#[tokio::test]
async fn create_show_stop_start_destroy() {
    let sim = sim();
    let offer = sim.offer("RTX 4090", 2);
    let body = json!({"client_id": "me", "image": "pytorch/pytorch", "env": {"FOO": "bar", "-p 8080:8080": "1"},
        "price": null, "disk": 20.0, "label": "train", "onstart": "echo hi", "runtype": "ssh"});
    let r = sim
        .call("PUT", &format!("/api/v0/asks/{offer}/"), Some(body))
        .await;
    assert_eq!(
        (r.status, r.body),
        (
            StatusCode::OK,
            json!({"success": true, "new_contract": 5001})
        )
    );

    let row = sim.show(5001).await;
    let status = |row: &Value| {
        (
            row["actual_status"].clone(),
            row["intended_status"].clone(),
            row["cur_state"].clone(),
        )
    };
    assert_eq!(
        status(&row),
        (json!("loading"), json!("running"), json!("running"))
    );
    assert_eq!(
        (row["gpu_name"].clone(), row["num_gpus"].clone()),
        (json!("RTX 4090"), json!(2))
    );
    assert_eq!(
        (
            row["image_uuid"].clone(),
            row["label"].clone(),
            row["disk_space"].clone()
        ),
        (json!("pytorch/pytorch"), json!("train"), json!(20.0))
    );
    assert_eq!(
        row["extra_env"],
        json!([["FOO", "bar"]]),
        "docker options are not variables"
    );
    assert_eq!(row["start_date"], json!(T0 as f64));
    assert!(row["ssh_port"].is_u64() && row["ssh_host"].is_string() && row["machine_id"].is_u64());

    sim.clock.advance(BOOT);
    let row = sim.show(5001).await;
    assert_eq!(
        status(&row),
        (json!("running"), json!("running"), json!("running"))
    );
    sim.clock.advance(Duration::from_secs(120));
    assert_eq!(sim.show(5001).await["uptime_mins"], json!(2.0));

    let r = sim
        .call(
            "PUT",
            "/api/v0/instances/5001/",
            Some(json!({"state": "stopped"})),
        )
        .await;
    assert_eq!(
        (r.status, r.body),
        (StatusCode::OK, json!({"success": true}))
    );
    assert_eq!(
        status(&sim.show(5001).await),
        (json!("exited"), json!("stopped"), json!("stopped"))
    );

    sim.call(
        "PUT",
        "/api/v0/instances/5001/",
        Some(json!({"state": "running"})),
    )
    .await;
    assert_eq!(sim.show(5001).await["actual_status"], "loading");
    sim.clock.advance(BOOT);
    assert_eq!(sim.show(5001).await["actual_status"], "running");

    sim.call(
        "PUT",
        "/api/v0/instances/5001/",
        Some(json!({"label": "renamed"})),
    )
    .await;
    assert_eq!(sim.show(5001).await["label"], "renamed");

    let r = sim
        .call("DELETE", "/api/v0/instances/5001/", Some(json!({})))
        .await;
    assert_eq!(
        (r.status, r.body),
        (StatusCode::OK, json!({"success": true}))
    );
    assert_eq!(sim.show(5001).await, Value::Null);
    assert_eq!(
        sim.state.instance(5001).unwrap().status,
        InstanceStatus::Destroyed
    );
    assert!(sim.state.instances().is_empty());

    let again = sim.call("DELETE", "/api/v0/instances/5001/", None).await;
    assert_eq!(again.status, StatusCode::NOT_FOUND);
    assert_eq!(
        (again.body["error"].clone(), again.body["msg"].clone()),
        (json!("no_such_instance"), json!("Instance 5001 not found."))
    );
}

/// How many offers a search of `rentable` offers with this id finds.
async fn visible(sim: &Sim, offer: u64) -> usize {
    let query = json!({"rentable": {"eq": true}, "id": {"eq": offer.to_string()}});
    sim.call("POST", "/api/v0/bundles/", Some(query)).await.body["offers"]
        .as_array()
        .unwrap()
        .len()
}

#[tokio::test]
async fn a_rented_offer_is_unavailable_until_its_instance_is_destroyed() {
    let sim = sim();
    let offer = sim.offer("A100 SXM4", 4);
    assert_eq!(visible(&sim, offer).await, 1);
    let id = sim.create(offer, "a").await;
    assert_eq!(visible(&sim, offer).await, 0);
    assert_eq!(sim.state.available_offer_count(), 119);
    let shown = sim
        .call(
            "POST",
            "/api/v0/bundles/",
            Some(json!({"id": {"eq": offer}})),
        )
        .await;
    assert_eq!(
        (
            shown.body["offers"][0]["rented"].clone(),
            shown.body["offers"][0]["rentable"].clone()
        ),
        (json!(true), json!(false))
    );

    // Stopped still holds the machine.
    sim.call(
        "PUT",
        &format!("/api/v0/instances/{id}/"),
        Some(json!({"state": "stopped"})),
    )
    .await;
    let twice = sim
        .call(
            "PUT",
            &format!("/api/v0/asks/{offer}/"),
            Some(json!({"image": "x"})),
        )
        .await;
    assert_eq!(twice.status, StatusCode::NOT_FOUND);
    assert_eq!(twice.body["error"], "no_such_ask");
    assert_eq!(sim.state.instances().len(), 1);

    sim.call("DELETE", &format!("/api/v0/instances/{id}/"), None)
        .await;
    assert_eq!(visible(&sim, offer).await, 1);
    assert_eq!(sim.state.available_offer_count(), 120);
    assert_eq!(sim.create(offer, "b").await, id + 1);
}

#[tokio::test]
async fn cost_accrues_dph_total_while_up_and_storage_while_stopped() {
    let sim = sim();
    let offer = sim.offer("H100 SXM", 8);
    let base = sim
        .state
        .offers()
        .into_iter()
        .find(|o| o.id == offer)
        .unwrap()
        .dph_base_micros;
    let id = sim.create(offer, "cost").await;
    let info = || sim.state.instance(id).unwrap();
    let dph = info().dph_total_micros;
    let storage = dph - base; // the 20 GB disk's share of dph_total
    assert!(storage > 0);
    assert_eq!(info().cost_micros, 0);

    // Loading counts: the machine is held from creation.
    sim.clock.advance(HOUR);
    assert_eq!(info().cost_micros, dph);
    assert!((sim.show(id).await["total_cost"].as_f64().unwrap() - dph as f64 / 1e6).abs() < 1e-9);

    sim.call(
        "PUT",
        &format!("/api/v0/instances/{id}/"),
        Some(json!({"state": "stopped"})),
    )
    .await;
    sim.clock.advance(2 * HOUR);
    assert_eq!(info().cost_micros, dph + 2 * storage);

    sim.call(
        "PUT",
        &format!("/api/v0/instances/{id}/"),
        Some(json!({"state": "running"})),
    )
    .await;
    sim.clock.advance(HOUR / 2);
    let expected = (dph * 3 + storage * 4) / 2; // 1.5 h up, 2 h stopped
    assert_eq!(info().cost_micros, expected);

    sim.call("DELETE", &format!("/api/v0/instances/{id}/"), None)
        .await;
    sim.clock.advance(5 * HOUR);
    assert_eq!(
        info().cost_micros,
        expected,
        "cost is frozen at destruction"
    );
    assert_eq!(sim.state.spent_micros(), expected);
    let user = sim.call("GET", "/api/v0/users/current", None).await.body;
    assert!((user["credit"].as_f64().unwrap() - (1000.0 - expected as f64 / 1e6)).abs() < 1e-6);
    assert_eq!(user["api_key"], KEY);
}

async fn list(sim: &Sim, query: String) -> Value {
    let r = sim
        .call("GET", &format!("/api/v1/instances/?{query}"), None)
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    r.body
}

#[tokio::test]
async fn listings_filter_order_page_and_count_labels() {
    let sim = sim();
    let ids = [
        sim.create(1001, "a").await,
        sim.create(1002, "b").await,
        sim.create(1003, "a").await,
    ];
    sim.call(
        "PUT",
        "/api/v0/instances/",
        Some(json!({"state": "stopped", "ids": [ids[1]]})),
    )
    .await;

    let order = q(&json!([{"col": "id", "dir": "desc"}]));
    let first = list(
        &sim,
        format!("select_filters=%7B%7D&order_by={order}&limit=2"),
    )
    .await;
    let got: Vec<_> = first["instances"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_u64().unwrap())
        .collect();
    assert_eq!(got, vec![ids[2], ids[1]]);
    assert_eq!(
        (
            first["total_instances"].clone(),
            first["next_token"].clone()
        ),
        (json!(3), json!("2"))
    );
    assert_eq!(first["label_counts"], json!({"a": 2, "b": 1}));
    let second = list(
        &sim,
        format!("select_filters=%7B%7D&order_by={order}&limit=2&after_token=2"),
    )
    .await;
    assert_eq!(
        (
            second["instances"][0]["id"].clone(),
            second["next_token"].clone()
        ),
        (json!(ids[0]), Value::Null)
    );

    let running_a =
        q(&json!({"actual_status": {"in": ["loading", "running"]}, "label": {"in": ["a"]}}));
    let cols = q(&json!(["id", "label", "start_date"]));
    let filtered = list(
        &sim,
        format!("select_filters={running_a}&limit=25&select_cols={cols}"),
    )
    .await;
    assert_eq!(filtered["total_instances"], 2);
    assert_eq!(
        filtered["instances"][0],
        json!({"id": ids[0], "label": "a", "start_date": T0 as f64})
    );

    let v0 = sim.call("GET", "/api/v0/instances/", None).await.body;
    assert_eq!(v0["instances"].as_array().unwrap().len(), 3);
    let filters = sim
        .call("GET", "/api/v0/instances/filters/", None)
        .await
        .body;
    assert_eq!(filters["filters"].as_array().unwrap().len(), 3, "{filters}");
}

#[tokio::test]
async fn bulk_stop_and_destroy_are_all_or_nothing() {
    let sim = sim();
    let a = sim.create(1001, "a").await;
    let b = sim.create(1002, "b").await;
    let r = sim
        .call(
            "PUT",
            "/api/v0/instances/",
            Some(json!({"state": "stopped", "ids": [a, b, 999]})),
        )
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert!(sim
        .state
        .instances()
        .iter()
        .all(|i| i.status == InstanceStatus::Loading));
    sim.call(
        "PUT",
        "/api/v0/instances/",
        Some(json!({"state": "stopped", "ids": [a, b]})),
    )
    .await;
    assert!(sim
        .state
        .instances()
        .iter()
        .all(|i| i.status == InstanceStatus::Stopped));
    let r = sim
        .call(
            "DELETE",
            "/api/v0/instances/",
            Some(json!({"instance_ids": [a, b]})),
        )
        .await;
    assert_eq!(r.body, json!({"success": true}));
    assert!(sim.state.instances().is_empty());
}

#[tokio::test]
async fn launch_rents_the_best_matching_offer_and_bids_need_min_bid() {
    let sim = sim();
    let query = json!({"verified": {"eq": true}, "rented": {"eq": false}, "gpu_name": {"eq": "L40S"}, "order": [["dph_total", "asc"]]});
    let cheapest = sim
        .call("POST", "/api/v0/bundles/", Some(query.clone()))
        .await
        .body["offers"][0]["id"]
        .as_u64()
        .unwrap();
    let r = sim
        .call(
            "PUT",
            "/api/v0/launch_instance/",
            Some(json!({"image": "x", "disk": 10.0, "q": query})),
        )
        .await;
    assert_eq!(r.body["success"], true, "{}", r.body);
    let id = r.body["new_contract"].as_u64().unwrap();
    assert_eq!(sim.state.instance(id).unwrap().offer_id, cheapest);

    let offer = sim.offer("RTX 3090", 1);
    let min_bid = sim
        .call(
            "POST",
            "/api/v0/bundles/",
            Some(json!({"id": {"eq": offer}})),
        )
        .await
        .body["offers"][0]["min_bid"]
        .as_f64()
        .unwrap();
    let low = sim
        .call(
            "PUT",
            &format!("/api/v0/asks/{offer}/"),
            Some(json!({"image": "x", "price": min_bid / 2.0})),
        )
        .await;
    assert_eq!(low.status, StatusCode::BAD_REQUEST);
    assert!(low.body["msg"].as_str().unwrap().contains("below"));
    let ok = sim
        .call(
            "PUT",
            &format!("/api/v0/asks/{offer}/"),
            Some(json!({"image": "x", "price": min_bid})),
        )
        .await;
    let row = sim.show(ok.body["new_contract"].as_u64().unwrap()).await;
    assert_eq!(
        (row["is_bid"].clone(), row["dph_base"].clone()),
        (json!(true), json!(min_bid))
    );
}

#[tokio::test]
async fn a_missing_or_wrong_key_is_401_and_api_key_param_is_accepted() {
    let sim = sim();
    let get = |uri: &str, auth: Option<&str>| {
        let mut req = Request::get(uri);
        if let Some(auth) = auth {
            req = req.header(header::AUTHORIZATION, auth);
        }
        req.body(Body::empty()).unwrap()
    };
    for auth in [None, Some("Bearer wrong"), Some("Bearer "), Some(KEY)] {
        let r = sim.send(get("/api/v1/instances/", auth)).await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{auth:?}");
        assert_eq!(
            r.body,
            json!({"success": false, "error": "invalid_user_key", "msg": "Invalid user key"})
        );
        assert_eq!(r.content_type.as_deref(), Some("application/json"));
    }
    let create = Request::put("/api/v0/asks/1001/")
        .body(Body::from(r#"{"image":"x"}"#))
        .unwrap();
    assert_eq!(sim.send(create).await.status, StatusCode::UNAUTHORIZED);
    assert!(sim.state.instances().is_empty());

    let r = sim
        .send(get(&format!("/api/v0/instances/?api_key={KEY}"), None))
        .await;
    assert_eq!(r.status, StatusCode::OK);
    // The CLI sends `//api/v0/...` when its URL ends with a slash.
    let r = sim
        .send(get(
            "//api/v0/users/current",
            Some(&format!("Bearer {KEY}")),
        ))
        .await;
    assert_eq!(r.status, StatusCode::OK);
    let r = sim
        .send(get("/api/v0/nothing/", Some(&format!("Bearer {KEY}"))))
        .await;
    assert_eq!(
        (r.status, r.body["msg"].clone()),
        (
            StatusCode::NOT_FOUND,
            json!("no route GET /api/v0/nothing/")
        )
    );
}
