//! Fault injection: statuses before and after the action, used-up counts,
//! config text, delays, hung requests and dropped connections.

use std::time::Duration;

use axum::http::StatusCode;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use warden_sim::{serve_state, Endpoint, Fault, FaultAction, SimState};

use crate::support::{sim, sim_with, KEY};

fn create_body() -> serde_json::Value {
    json!({"client_id": "me", "image": "pytorch/pytorch", "disk": 20.0})
}

#[tokio::test]
async fn fail_answers_before_and_fail_after_answers_after_performing() {
    let sim = sim();
    sim.state.push_fault(Fault::next(
        Endpoint::CreateInstance,
        FaultAction::Fail(503),
    ));
    let r = sim
        .call("PUT", "/api/v0/asks/1001/", Some(create_body()))
        .await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(
        (r.body["success"].clone(), r.body["error"].clone()),
        (json!(false), json!("injected_fault"))
    );
    assert!(
        sim.state.instances().is_empty(),
        "a failed-before create performs nothing"
    );

    sim.state.push_fault(Fault::next(
        Endpoint::CreateInstance,
        FaultAction::FailAfter(500),
    ));
    let r = sim
        .call("PUT", "/api/v0/asks/1001/", Some(create_body()))
        .await;
    assert_eq!(r.status, StatusCode::INTERNAL_SERVER_ERROR);
    let created = sim.state.instances();
    assert_eq!(created.len(), 1, "a failed-after create is performed");
    assert_eq!(created[0].offer_id, 1001);
    assert!(sim.state.pending_faults().is_empty());

    let r = sim
        .call("PUT", "/api/v0/asks/1002/", Some(create_body()))
        .await;
    assert_eq!(r.status, StatusCode::OK, "the faults were used up");
}

#[tokio::test]
async fn configured_faults_target_their_endpoint_for_the_next_n_requests() {
    let sim =
        sim_with(|c| c.faults = vec!["search:429:2".parse().unwrap(), "*:502:p0".parse().unwrap()]);
    let search = || sim.call("POST", "/api/v0/bundles/", Some(json!({"limit": 1})));
    assert_eq!(
        sim.call("GET", "/api/v0/users/current", None).await.status,
        StatusCode::OK
    );
    assert_eq!(search().await.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(search().await.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(search().await.status, StatusCode::OK);
    assert_eq!(
        sim.state.pending_faults(),
        vec!["*:502:p0".parse().unwrap()]
    );

    sim.state.clear_faults();
    sim.state.push_fault("*:502:p1".parse().unwrap());
    for path in [
        "/api/v0/users/current",
        "/api/v1/instances/",
        "/api/v0/instances/5001/",
    ] {
        assert_eq!(
            sim.call("GET", path, None).await.status,
            StatusCode::BAD_GATEWAY,
            "{path}"
        );
    }
}

// The tokio clock is paused: it jumps to the next timer when every task is
// idle, so these tests wait no real time and cannot race.
#[tokio::test(start_paused = true)]
async fn delays_and_latency_hold_the_answer_on_the_tokio_clock() {
    let sim = sim();
    sim.state.set_latency(Duration::from_millis(30));
    sim.state.push_fault("search:delay=500ms".parse().unwrap());
    let start = tokio::time::Instant::now();
    let r = sim
        .call("POST", "/api/v0/bundles/", Some(json!({"limit": 1})))
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(start.elapsed(), Duration::from_millis(530));
}

#[tokio::test(start_paused = true)]
async fn hang_performs_the_action_and_never_answers_until_released() {
    let sim = sim();
    let id = sim.create(1001, "x").await;
    sim.state
        .push_fault(Fault::next(Endpoint::DestroyInstance, FaultAction::Hang));
    let path = format!("/api/v0/instances/{id}/");
    let destroy = sim.call("DELETE", &path, None);
    assert!(
        tokio::time::timeout(Duration::from_secs(3600), destroy)
            .await
            .is_err(),
        "answered"
    );
    assert!(
        sim.state.instances().is_empty(),
        "the destroy was performed"
    );
    assert_eq!(sim.state.available_offer_count(), 120);

    sim.state.release_hung();
    sim.state
        .push_fault(Fault::next(Endpoint::ShowUser, FaultAction::Hang));
    let r = sim.call("GET", "/api/v0/users/current", None).await;
    assert_eq!(
        (r.status, r.body["error"].clone()),
        (StatusCode::SERVICE_UNAVAILABLE, json!("shutting_down"))
    );
}

/// Sends one HTTP/1.1 request on a new connection and reads until it
/// closes (the requests say `Connection: close`, so an answer ends it too).
async fn raw_request(addr: std::net::SocketAddr, request: &str) -> Vec<u8> {
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    tcp.write_all(request.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    // A reset is as good as a close here: either way no answer came.
    let _ = tcp.read_to_end(&mut answer).await;
    answer
}

#[tokio::test]
async fn drop_performs_the_create_and_closes_the_connection_unanswered() {
    let state = SimState::new(warden_sim::SimConfig {
        api_keys: vec![KEY.to_owned()],
        ..Default::default()
    });
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(serve_state(listener, state.clone(), async move {
        let _ = stopped.await;
    }));
    state.push_fault("create:drop".parse().unwrap());

    let body = r#"{"client_id": "me", "image": "pytorch/pytorch", "disk": 20.0}"#;
    let create = format!(
        "PUT /api/v0/asks/1001/ HTTP/1.1\r\nHost: sim\r\nAuthorization: Bearer {KEY}\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let answer = raw_request(addr, &create).await;
    assert!(
        answer.is_empty(),
        "got an answer: {}",
        String::from_utf8_lossy(&answer)
    );
    let created = state.instances();
    assert_eq!(
        (created.len(), created[0].offer_id),
        (1, 1001),
        "the create was performed"
    );

    let user = format!("GET /api/v0/users/current HTTP/1.1\r\nHost: sim\r\nAuthorization: Bearer {KEY}\r\nConnection: close\r\n\r\n");
    let answer = String::from_utf8(raw_request(addr, &user).await).unwrap();
    assert!(answer.starts_with("HTTP/1.1 200 OK\r\n"), "{answer}");
    assert!(
        answer
            .to_ascii_lowercase()
            .contains("content-type: application/json\r\n"),
        "{answer}"
    );

    stop.send(()).unwrap();
    server.await.unwrap().unwrap();
}
