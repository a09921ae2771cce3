//! `Store::claim_budget_alert`: each soft threshold fires once per period,
//! however many callers notice it at once, with its audit record.

use warden_core::{TeamName, Usd};
use warden_store::{BudgetAlert, Period, PeriodKind};

use crate::support::{at, join_in_order, on_both_backends};

fn alert(team: &str, start: i64, percent: u32) -> BudgetAlert {
    BudgetAlert {
        team: TeamName::parse(team).unwrap(),
        period: Period {
            kind: PeriodKind::Day,
            start: at(start),
            end: at(start + 86_400),
        },
        percent,
        spend: Usd::from_micros(50_000_000),
        budget: Usd::from_micros(100_000_000),
    }
}

on_both_backends! {
    /// Twenty concurrent claims of one alert: exactly one wins, and the
    /// audit chain holds exactly one `budget.alert` for it. Another
    /// threshold, period or team is a different alert.
    async fn an_alert_fires_once_per_period_and_threshold(db: &TestDb) {
        let store = db.store().await;
        let a = alert("ml", 0, 50);
        let claims: Vec<_> = (0..20).map(|_| store.claim_budget_alert(&a, at(10))).collect();
        let won = join_in_order(claims)
            .await
            .into_iter()
            .map(Result::unwrap)
            .filter(|claimed| *claimed)
            .count();
        assert_eq!(won, 1);
        assert!(!store.claim_budget_alert(&a, at(20)).await.unwrap());
        assert!(store.claim_budget_alert(&alert("ml", 0, 80), at(20)).await.unwrap());
        assert!(store.claim_budget_alert(&alert("ml", 86_400, 50), at(86_410)).await.unwrap());
        assert!(store.claim_budget_alert(&alert("cv", 0, 50), at(30)).await.unwrap());

        let records = store.export_audit(at(0), at(100_000)).await.unwrap();
        let alerts: Vec<_> = records.iter().filter(|r| r.kind == "budget.alert").collect();
        assert_eq!(alerts.len(), 4);
        let first: serde_json::Value = serde_json::from_str(&alerts[0].payload).unwrap();
        assert_eq!(first["team"], "ml");
        assert_eq!(first["percent"], 50);
        assert_eq!(first["period"], "day");
        assert_eq!(first["spend_usd"], Usd::from_micros(50_000_000).to_string());
        assert!(store.verify_audit().await.unwrap().is_intact());

        let stored = store.budget_alerts(at(0)).await.unwrap();
        assert_eq!(stored.len(), 4);
        assert_eq!(stored[0].team, "ml");
        assert_eq!(stored[0].at, at(10));
        assert_eq!(store.budget_alerts(at(25)).await.unwrap().len(), 2);
    }
}
