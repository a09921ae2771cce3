//! `warden report spend|chargeback` (the real binary, on a SQLite store),
//! and the report endpoints (router driven in-process, on SQLite and on
//! PostgreSQL), over one month of allocations:
//!
//! | team/user  | model | GPUs | $/h   | runs (UTC)                         | in March 2024    |
//! |------------|-------|------|-------|------------------------------------|------------------|
//! | ml/alice   | H100  | 2    | 6     | 03-10 00:00 to 10:00               | $60, 20 GPU-h    |
//! | ml/bob     | A100  | 1    | 1.001 | from 03-31 23:00, live             | $1.001, 1 GPU-h  |
//! | cv/carol   | H100  | 1    | 3     | 02-29 22:00 to 03-01 02:00         | $6, 2 GPU-h      |
//! | cv/-       | -     | 0    | 0.01  | 03-15 00:00 to 00:30               | $0.005           |
//! | ml/alice   | H100  | 8    | 24    | 04-01 00:00 to 01:00 (April)       | -                |
//!
//! Team `nlp` is configured but spent nothing.

use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt;
use tower::ServiceExt;
use warden_core::access::Role;
use warden_core::{Door, GpuModel, Policy, TeamName, Usd};
use warden_server::config::Settings;
use warden_server::reports::routes;
use warden_server::AppState;
use warden_store::{
    AllocationName, AllocationRequest, EndTarget, NewKey, ReserveOutcome, Store, UnixMicros,
};

use crate::cli::warden;
use crate::replicas::Database;
use crate::skypilot_client::TempDir;

const TEAMS: &str = "teams:\n  ml:\n    users: [alice, bob]\n    budgets: {daily_usd: 100, monthly_usd: 1000}\n  cv:\n    users: [carol]\n  nlp: {}\n";

fn at(text: &str) -> UnixMicros {
    UnixMicros::parse_rfc3339(text).unwrap()
}

/// Records a launch running over [start, end) (`None`: still live).
#[expect(clippy::too_many_arguments, reason = "one row of the table above")]
async fn ran(
    store: &Store,
    team: &str,
    user: Option<&str>,
    name: &str,
    model: Option<&str>,
    gpus: u32,
    hourly_micros: i64,
    (start, end): (&str, Option<&str>),
) {
    let req = AllocationRequest {
        door: Door::Skypilot,
        team: TeamName::parse(team).unwrap(),
        user: user.map(str::to_owned),
        name: AllocationName::parse(name).unwrap(),
        gpu_model: model.map(|m| GpuModel::parse(m).unwrap()),
        gpus,
        hourly: Usd::from_micros(hourly_micros),
        context: None,
    };
    let id = match store.reserve(&req, &[], at(start)).await.unwrap() {
        ReserveOutcome::Granted { allocation_id, .. } => allocation_id,
        denied => panic!("{denied:?}"),
    };
    if let Some(end) = end {
        store.end(&EndTarget::Id(id), at(end)).await.unwrap();
    }
}

async fn seed(url: &str) {
    let store = Store::connect(url).await.unwrap();
    let s = &store;
    let h100 = Some("H100");
    ran(
        s,
        "ml",
        Some("alice"),
        "a",
        h100,
        2,
        6_000_000,
        ("2024-03-10", Some("2024-03-10T10:00")),
    )
    .await;
    ran(
        s,
        "ml",
        Some("bob"),
        "b",
        Some("A100"),
        1,
        1_001_000,
        ("2024-03-31T23:00", None),
    )
    .await;
    ran(
        s,
        "cv",
        Some("carol"),
        "c",
        h100,
        1,
        3_000_000,
        ("2024-02-29T22:00", Some("2024-03-01T02:00")),
    )
    .await;
    ran(
        s,
        "cv",
        None,
        "d",
        None,
        0,
        10_000,
        ("2024-03-15", Some("2024-03-15T00:30")),
    )
    .await;
    ran(
        s,
        "ml",
        Some("alice"),
        "e",
        h100,
        8,
        24_000_000,
        ("2024-04-01", Some("2024-04-01T01:00")),
    )
    .await;
    store.close().await;
}

/// A config beside its SQLite store, seeded.
async fn seeded_config(dir: &TempDir) -> String {
    let config = dir.0.join("warden.yaml");
    std::fs::write(&config, format!("storage: sqlite://state.db\n{TEAMS}")).unwrap();
    seed(&format!("sqlite://{}", dir.0.join("state.db").display())).await;
    config.to_str().unwrap().to_owned()
}

#[tokio::test]
async fn spend_reports_by_team_user_and_gpu_in_every_format() {
    let dir = TempDir::new("warden-report-spend");
    let cfg = seeded_config(&dir).await;
    let spend = |args: &[&str]| {
        let mut all = vec!["report", "spend", "--config", cfg.as_str()];
        all.extend(args);
        warden(&all)
    };

    // The month, per team, with the monthly budget; nlp spent nothing.
    let (code, out, err) = spend(&["--month", "2024-03", "--format", "csv"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        out,
        "team,allocations,gpu_hours,spend_usd,budget_usd,budget_used_pct\n\
         ml,2,21.00,61.001,1000.00,6.1\n\
         cv,2,2.00,6.005,,\n\
         nlp,0,0.00,0.000,,\n"
    );

    // The same as a table, with a total line.
    let (code, out, err) = spend(&["--period", "month", "--month", "2024-03"]);
    assert_eq!(code, 0, "{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert!(
        lines[0].starts_with("Spend by team, 2024-03 (UTC) [2024-03-01T00:00:00.000000Z, 2024-04-01T00:00:00.000000Z), as of "),
        "{out}"
    );
    let cells = |line: &str| {
        line.split_whitespace()
            .map(str::to_owned)
            .collect::<Vec<_>>()
    };
    assert_eq!(
        cells(lines[1]),
        [
            "team",
            "allocations",
            "gpu_hours",
            "spend",
            "budget",
            "used"
        ]
    );
    assert_eq!(
        cells(lines[2]),
        ["ml", "2", "21.00", "$61.001", "$1000.00", "6.1%"]
    );
    assert_eq!(cells(lines[3]), ["cv", "2", "2.00", "$6.005", "-", "-"]);
    assert_eq!(cells(lines[4]), ["nlp", "0", "0.00", "$0.000", "-", "-"]);
    assert_eq!(cells(lines[5]), ["total", "4", "23.00", "$67.006"]);
    assert_eq!(lines.len(), 6, "{out}");
    // Every amount of a column has the column's decimals, and the column
    // lines up: each spend cell ends where the header does.
    let spend_end = lines[1].find("spend").unwrap() + "spend".len();
    for line in &lines[2..] {
        let cell = line[..spend_end].rsplit(' ').next().unwrap();
        assert!(
            cell.starts_with('$') && cell.split('.').nth(1).unwrap().len() == 3,
            "{line:?} in\n{out}"
        );
    }

    // One day, per team (daily budget), as JSON.
    let (code, out, err) = spend(&["--date", "2024-03-10", "--team", "ml", "--format", "json"]);
    assert_eq!(code, 0, "{err}");
    let json: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(json["period"]["kind"], "day");
    assert_eq!(json["period"]["time_zone"], "UTC");
    assert_eq!(json["period"]["until"], "2024-03-11T00:00:00.000000Z");
    assert_eq!(json["team"], "ml");
    assert_eq!(
        json["rows"],
        serde_json::json!([{
            "team": "ml", "allocations": 1, "gpu_hours": "20.00", "spend_usd": "60.00",
            "budget_usd": "100.00", "budget_used_pct": "60.0"
        }])
    );

    // Days and months are those of the config's `time_zone`: in New York,
    // March 10 2024 is the 23 hours from 05:00 UTC (clocks go forward),
    // and holds five of alice's ten hours.
    let ny = dir.0.join("new-york.yaml");
    std::fs::write(
        &ny,
        format!("storage: sqlite://state.db\ntime_zone: America/New_York\n{TEAMS}"),
    )
    .unwrap();
    let (code, out, err) = warden(&[
        "report",
        "spend",
        "--config",
        ny.to_str().unwrap(),
        "--date",
        "2024-03-10",
        "--team",
        "ml",
        "--format",
        "json",
    ]);
    assert_eq!(code, 0, "{err}");
    let json: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        json["period"],
        serde_json::json!({
            "kind": "day", "label": "2024-03-10", "time_zone": "America/New_York",
            "from": "2024-03-10T05:00:00.000000Z", "until": "2024-03-11T04:00:00.000000Z"
        })
    );
    assert_eq!(json["rows"][0]["spend_usd"], "30.00");
    assert_eq!(json["rows"][0]["gpu_hours"], "10.00");

    // Per user over the month.
    let (code, out, err) = spend(&["--month", "2024-03", "--by", "user", "--format", "csv"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        out,
        "team,user,allocations,gpu_hours,spend_usd\n\
         ml,alice,1,20.00,60.000\n\
         cv,carol,1,2.00,6.000\n\
         ml,bob,1,1.00,1.001\n\
         cv,,1,0.00,0.005\n"
    );

    // Any window, per GPU model: the hour around midnight of April 1.
    let (code, out, err) = spend(&[
        "--period",
        "custom",
        "--from",
        "2024-03-31T23:30:00Z",
        "--until",
        "2024-04-01T00:30:00Z",
        "--by",
        "gpu",
        "--format",
        "json",
    ]);
    assert_eq!(code, 0, "{err}");
    let json: serde_json::Value = serde_json::from_str(&out).unwrap();
    // bob's A100 for the whole hour; alice's 8 H100s ($24/h) for 30 min.
    assert_eq!(
        json["rows"],
        serde_json::json!([
            {"gpu_model": "H100", "allocations": 1, "gpu_hours": "4.00", "spend_usd": "12.00"},
            {"gpu_model": "A100", "allocations": 1, "gpu_hours": "1.00", "spend_usd": "1.001"},
        ])
    );
    assert_eq!(json["total"]["spend_usd"], "13.001");

    // Mistakes name the flag and the fix.
    let (code, _, err) = spend(&["--period", "day", "--month", "2024-03"]);
    assert_eq!(code, 1);
    assert!(
        err.contains("--month: does not apply to the `day` period"),
        "{err}"
    );
    let (code, _, err) = spend(&["--date", "2024-02-30"]);
    assert_eq!(code, 1);
    assert!(err.contains("--date: `2024-02-30` is not a date"), "{err}");
    let (code, _, err) = spend(&["--period", "custom"]);
    assert_eq!(code, 1);
    assert!(
        err.contains("--from: required for the `custom` period"),
        "{err}"
    );
    let (code, _, err) = spend(&["--by", "model"]);
    assert_eq!(code, 2, "clap rejects it: {err}");
}

#[tokio::test]
async fn chargeback_lines_add_up_to_the_total() {
    let dir = TempDir::new("warden-report-chargeback");
    let cfg = seeded_config(&dir).await;

    // cv's unknown-model line costs half a cent: the total, 6700.6 cents,
    // rounds to 6701, and the cent missing from the rounded-down lines
    // goes to the largest remainder (0.5, against ml/A100's 0.1).
    let (code, out, err) = warden(&[
        "report",
        "chargeback",
        "--config",
        &cfg,
        "--month",
        "2024-03",
    ]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        out,
        "month,line,team,gpu_model,allocations,gpu_hours,amount_usd\n\
         2024-03,charge,cv,,1,0.00,0.01\n\
         2024-03,charge,cv,H100,1,2.00,6.00\n\
         2024-03,charge,ml,A100,1,1.00,1.00\n\
         2024-03,charge,ml,H100,1,20.00,60.00\n\
         2024-03,total,,,4,23.00,67.01\n"
    );
    assert!(err.is_empty(), "a past month is complete: {err}");

    let (code, out, err) = warden(&[
        "report",
        "chargeback",
        "--config",
        &cfg,
        "--month",
        "2024-03",
        "--format",
        "json",
    ]);
    assert_eq!(code, 0, "{err}");
    let json: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(json["complete"], true);
    assert_eq!(json["currency"], "USD");
    assert_eq!(
        json["teams"],
        serde_json::json!([
            {"team": "cv", "allocations": 2, "gpu_hours": "2.00", "amount_usd": "6.01"},
            {"team": "ml", "allocations": 2, "gpu_hours": "21.00", "amount_usd": "61.00"},
        ])
    );
    assert_eq!(json["total"]["amount_usd"], "67.01");

    // A month not over is month-to-date, and says so.
    let (code, out, err) = warden(&[
        "report",
        "chargeback",
        "--config",
        &cfg,
        "--month",
        "2999-01",
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(out.ends_with("\n2999-01,total,,,0,0.00,0.00\n"), "{out}");
    assert!(
        err.contains("2999-01 is not over; amounts are month-to-date"),
        "{err}"
    );

    let (code, _, err) = warden(&[
        "report",
        "chargeback",
        "--config",
        &cfg,
        "--month",
        "2024-3",
    ]);
    assert_eq!(code, 1);
    assert!(
        err.contains("--month: `2024-3` is not a month; write e.g. `2026-11`"),
        "{err}"
    );
    let (code, _, err) = warden(&["report", "chargeback", "--config", &cfg]);
    assert_eq!(code, 2, "--month is required: {err}");
}

async fn get(app: &axum::Router, key: Option<&str>, uri: &str) -> (StatusCode, String) {
    let mut req = Request::get(uri);
    if let Some(key) = key {
        req = req.header("authorization", format!("Bearer {key}"));
    }
    let resp = app
        .clone()
        .oneshot(req.body(Body::empty()).unwrap())
        .await
        .unwrap();
    let status = resp.status();
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8(bytes.to_vec()).unwrap())
}

/// A key of `team` with `role`.
async fn key(store: &Store, team: &str, role: Role) -> String {
    let issued = store
        .create_key(
            NewKey {
                team: TeamName::parse(team).unwrap(),
                user: None,
                name: None,
                expires: None,
                role,
            },
            UnixMicros::from_system_time(std::time::SystemTime::now()),
        )
        .await
        .unwrap();
    issued.secret.expose().to_owned()
}

/// Who may read which report: no key 401; a viewer its team's spend and
/// nothing across teams (403, with the role and what to do); an ML
/// engineer not its team's spend (only its own); an admin everything.
async fn access_is_checked(app: &axum::Router, store: &Store) {
    let month = "period=month&month=2024-03";
    for uri in [
        format!("/reports/spend?{month}"),
        "/reports/chargeback?month=2024-03".to_owned(),
    ] {
        let (status, body) = get(app, None, &uri).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{uri}: {body}");
        assert!(body.contains("needs a Warden key"), "{body}");
        let (status, body) = get(app, Some("wdn_0123456789abcdef_nope"), &uri).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{uri}: {body}");
    }
    let viewer = key(store, "cv", Role::Viewer).await;
    let (status, body) = get(
        app,
        Some(&viewer),
        &format!("/reports/spend?{month}&team=cv"),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let json: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(json["total"]["spend_usd"], "6.005", "{json}");
    let (status, body) = get(
        app,
        Some(&viewer),
        &format!("/reports/spend?{month}&team=ml"),
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert!(body.contains("has no role in team `ml`"), "{body}");
    let (status, body) = get(app, Some(&viewer), &format!("/reports/spend?{month}")).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert!(
        body.contains("(`viewer` of team `cv`) may not read spend of every team")
            && body.contains("`team=cv`"),
        "{body}"
    );
    let (status, body) = get(app, Some(&viewer), "/reports/chargeback?month=2024-03").await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    let engineer = key(store, "ml", Role::MlEngineer).await;
    let (status, body) = get(
        app,
        Some(&engineer),
        &format!("/reports/spend?{month}&team=ml"),
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert!(
        body.contains("`ml-engineer` may read only its own spend"),
        "{body}"
    );
    let lead = key(store, "ml", Role::TeamLead).await;
    let (status, body) = get(app, Some(&lead), &format!("/reports/spend?{month}&team=ml")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
}

/// The endpoints answer what the CLI prints, from either backend.
async fn endpoints_answer_json(url: &str) {
    seed(url).await;
    let policy = Policy::from_yaml(TEAMS).unwrap();
    let store = Store::connect(url).await.unwrap();
    let state = AppState::with_store(policy, None, Some(store.clone()));
    let app = routes().with_state(Arc::clone(&state));
    let admin = key(&store, "ml", Role::Admin).await;
    access_is_checked(&app, &store).await;

    let (status, body) = get(&app, Some(&admin), "/reports/chargeback?month=2024-03").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let json: serde_json::Value = serde_json::from_str(&body).unwrap();
    let cents =
        |v: &serde_json::Value| -> i64 { v.as_str().unwrap().replace('.', "").parse().unwrap() };
    let lines = json["lines"].as_array().unwrap();
    assert_eq!(lines.len(), 4);
    assert_eq!(
        lines.iter().map(|l| cents(&l["amount_usd"])).sum::<i64>(),
        6701
    );
    assert_eq!(cents(&json["total"]["amount_usd"]), 6701);

    let (status, body) = get(
        &app,
        Some(&admin),
        "/reports/spend?period=month&month=2024-03&by=user",
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let json: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(json["by"], "user");
    assert_eq!(
        json["rows"][3],
        serde_json::json!({
            "team": "cv", "user": null, "allocations": 1, "gpu_hours": "0.00", "spend_usd": "0.005"
        })
    );
    assert_eq!(json["total"]["spend_usd"], "67.006");

    // The configured time zone applies to days and months.
    state.apply_settings(Settings {
        time_zone: warden_store::parse_time_zone("America/New_York").unwrap(),
        ..Settings::default()
    });
    let (status, body) = get(&app, Some(&admin), "/reports/chargeback?month=2024-03").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let json: serde_json::Value = serde_json::from_str(&body).unwrap();
    // March in New York is [05:00 UTC on the 1st, 04:00 UTC on April 1):
    // carol's hours are February's, bob's A100 runs 5 hours, alice's
    // April 1 hour at $24 is March's. Half a cent each on cv's line and
    // ml/A100: the one cent left over goes to the earlier line.
    assert_eq!(json["period"]["from"], "2024-03-01T05:00:00.000000Z");
    let lines: Vec<(String, String, String)> = json["lines"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| {
            (
                l["team"].as_str().unwrap().to_owned(),
                l["gpu_model"].as_str().unwrap_or("-").to_owned(),
                l["amount_usd"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let line = |t: &str, m: &str, a: &str| (t.to_owned(), m.to_owned(), a.to_owned());
    assert_eq!(
        lines,
        [
            line("cv", "-", "0.01"),
            line("ml", "A100", "5.00"),
            line("ml", "H100", "84.00")
        ]
    );
    assert_eq!(json["total"]["amount_usd"], "89.01");
    state.apply_settings(Settings::default());

    let (status, body) =
        get(&app, Some(&admin), "/reports/spend?period=custom&from=2024-03-31T23%3A30%3A00Z&until=2024-04-01T00:30:00Z&by=gpu").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let json: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(json["total"]["spend_usd"], "13.001");

    for (uri, want) in [
        ("/reports/spend?period=week", "query parameter `period`: `week` is not a period; use `day`, `month` or `custom`"),
        ("/reports/spend?by=model", "query parameter `by`: cannot group by `model`; use `team`, `user` or `gpu`"),
        ("/reports/spend?sort=spend", "unknown query parameter `sort`; use `period`, `date`, `month`, `from`, `until`, `by`, `team`"),
        ("/reports/spend?team=a%20b", "query parameter `team`: "),
        ("/reports/spend?from=2024-04-01&until=2024-03-01", "query parameter `until`: the window is empty"),
        ("/reports/chargeback", "query parameter `month` is required"),
        ("/reports/chargeback?month=March", "query parameter `month`: `March` is not a month"),
    ] {
        let (status, body) = get(&app, Some(&admin), uri).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{uri}: {body}");
        assert!(body.starts_with(&format!("Warden: {want}")), "{uri}: {body}");
    }
    store.close().await;
}

#[tokio::test]
async fn endpoints_answer_json_on_sqlite() {
    let dir = TempDir::new("warden-report-http");
    endpoints_answer_json(&format!("sqlite://{}", dir.0.join("state.db").display())).await;
}

#[tokio::test]
async fn endpoints_answer_json_on_postgres() {
    let db = Database::create().await;
    endpoints_answer_json(&db.url).await;
}

#[tokio::test]
async fn endpoints_without_a_store_answer_503() {
    let app = routes().with_state(AppState::new(Policy::from_yaml(TEAMS).unwrap(), None));
    for uri in ["/reports/spend", "/reports/chargeback?month=2024-03"] {
        let (status, body) = get(&app, None, uri).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{uri}");
        assert!(body.contains("`storage: none`"), "{body}");
    }
    // Without a store no key can be checked: 503 before the parameters.
    let (status, _) = get(&app, Some("wdn_x"), "/reports/spend?period=week").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
}

/// The CLI refuses a config that names no store.
#[test]
fn report_without_a_store_says_so() {
    let dir = TempDir::new("warden-report-none");
    let config = dir.0.join("warden.yaml");
    std::fs::write(&config, "storage: none\nteams: {ml: {}}\n").unwrap();
    let (code, _, err) = warden(&["report", "spend", "--config", config.to_str().unwrap()]);
    assert_eq!(code, 1);
    assert!(
        err.contains("`storage: none` names no store to report on"),
        "{err}"
    );
}
