//! Budget alerts: when a team's spend in a day or month reaches a soft
//! threshold of its budget (`teams.T.budgets.alert_percent`, default 50, 80
//! and 100 %), Warden says so once per period per threshold: a `warn` log
//! line (target `warden::budget`), a `budget.alert` record in the audit
//! chain, and, when `budget_alerts.webhook_url` is set, a JSON POST.
//!
//! Spend is checked after every granted launch (in a task of its own, so
//! the answer never waits for it) and every `budget_alerts.check_interval_seconds`
//! for all teams, because running allocations keep spending between
//! launches. Which caller sends an alert is decided by the store
//! ([`Store::claim_budget_alert`]): exactly one, across replicas.
//!
//! The webhook never blocks a decision: alerts go to a bounded queue served
//! by one task, which POSTs each with a time-out and retries with backoff
//! (1 s, 2 s, 4 s, ..., at most 60 s) up to `webhook_attempts` tries. A
//! full queue or a last failed try is logged; the alert stays in the audit
//! chain either way.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use warden_core::Team;
use warden_store::alerts::alerts_for;
use warden_store::{BudgetAlert, PeriodKind, Store, StoreError, TimeZone, UnixMicros};

use crate::config::AlertSettings;

/// Alerts waiting for the webhook beyond this are dropped (and logged).
const QUEUE: usize = 1024;

/// The alerts `team`'s spend at `now` has newly reached, claimed in the
/// store (so no other caller sends them). Each claimed alert also got its
/// audit record; the caller logs and delivers it ([`Alerter::notify`]).
pub async fn check_team(
    store: &Store,
    team: &Team,
    tz: &TimeZone,
    now: UnixMicros,
) -> Result<Vec<BudgetAlert>, StoreError> {
    let b = &team.budgets;
    if b.alert_percent.is_empty() {
        return Ok(Vec::new());
    }
    let mut claimed = Vec::new();
    for (kind, budget) in [(PeriodKind::Day, b.daily), (PeriodKind::Month, b.monthly)] {
        let Some(budget) = budget else { continue };
        let period = now.period(kind, tz);
        let spend = store.spend(&team.name, period.start, now).await?;
        for alert in alerts_for(&team.name, period, spend, budget, &b.alert_percent) {
            if store.claim_budget_alert(&alert, now).await? {
                claimed.push(alert);
            }
        }
    }
    Ok(claimed)
}

/// Delivers claimed alerts: the log line at once, the webhook in the
/// background.
#[derive(Debug, Clone)]
pub struct Alerter {
    webhook: Option<mpsc::Sender<BudgetAlert>>,
}

impl Alerter {
    /// An alerter that only logs.
    pub fn log_only() -> Self {
        Self { webhook: None }
    }

    /// Starts the webhook task when `settings` names a URL. Needs a tokio
    /// runtime.
    pub fn start(settings: &AlertSettings) -> Self {
        let Some(url) = settings.webhook_url.clone() else {
            return Self::log_only();
        };
        let (tx, rx) = mpsc::channel(QUEUE);
        let delivery = Delivery {
            url,
            timeout: settings.webhook_timeout,
            attempts: settings.webhook_attempts,
            client: reqwest::Client::new(),
        };
        tokio::spawn(delivery.run(rx));
        Self { webhook: Some(tx) }
    }

    /// Logs `alert` and queues it for the webhook, never waiting.
    pub fn notify(&self, alert: BudgetAlert) {
        tracing::warn!(
            target: "warden::budget",
            team = alert.team.as_str(),
            period = alert.period.kind.as_str(),
            period_start = %alert.period.start,
            percent = alert.percent,
            spend_usd = %alert.spend,
            budget_usd = %alert.budget,
            "budget alert: {}",
            message(&alert)
        );
        if let Some(queue) = &self.webhook {
            if let Err(e) = queue.try_send(alert) {
                tracing::error!(
                    target: "warden::budget",
                    error = %e,
                    "budget alert not sent to the webhook: its queue is full or closed (the alert is in the audit chain)"
                );
            }
        }
    }
}

/// The one-line text of an alert, also the webhook's `text` (Slack and
/// most chat webhooks show it).
pub fn message(alert: &BudgetAlert) -> String {
    format!(
        "team `{}` has spent {} of its {} {} budget ({} % threshold; the {} began {})",
        alert.team,
        alert.spend,
        alert.budget,
        match alert.period.kind {
            PeriodKind::Day => "daily",
            PeriodKind::Month => "monthly",
        },
        alert.percent,
        alert.period.kind.as_str(),
        alert.period.start
    )
}

/// The webhook body: the alert's fields plus `text` and `kind`.
pub fn webhook_body(alert: &BudgetAlert) -> serde_json::Value {
    let mut body = alert.payload();
    if let Some(map) = body.as_object_mut() {
        map.insert("kind".into(), "budget.alert".into());
        map.insert("text".into(), message(alert).into());
    }
    body
}

struct Delivery {
    url: String,
    timeout: Duration,
    attempts: u32,
    client: reqwest::Client,
}

impl Delivery {
    async fn run(self, mut rx: mpsc::Receiver<BudgetAlert>) {
        while let Some(alert) = rx.recv().await {
            self.deliver(&alert).await;
        }
    }

    async fn deliver(&self, alert: &BudgetAlert) {
        let body = webhook_body(alert).to_string();
        let mut backoff = Duration::from_secs(1);
        for attempt in 1..=self.attempts {
            let sent = self
                .client
                .post(&self.url)
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .timeout(self.timeout)
                .body(body.clone())
                .send()
                .await;
            let problem = match sent {
                Ok(r) if r.status().is_success() => return,
                Ok(r) => format!("answered HTTP {}", r.status().as_u16()),
                Err(e) if e.is_timeout() => format!("no answer within {:?}", self.timeout),
                Err(e) => format!("could not be reached ({})", without_url(&e)),
            };
            if attempt == self.attempts {
                tracing::error!(
                    target: "warden::budget",
                    team = alert.team.as_str(),
                    attempts = self.attempts,
                    "budget alert webhook {problem}; giving up (the alert is in the audit chain)"
                );
                return;
            }
            tracing::warn!(
                target: "warden::budget",
                team = alert.team.as_str(),
                attempt,
                retry_in_secs = backoff.as_secs(),
                "budget alert webhook {problem}; retrying"
            );
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(60));
        }
    }
}

/// A reqwest error without its URL (which may carry a token in its path).
fn without_url(e: &reqwest::Error) -> String {
    let mut text = e.to_string();
    if let Some(url) = e.url() {
        text = text.replace(url.as_str(), "<webhook>");
    }
    text
}

/// Checks `team` in the background and notifies what it claimed; errors
/// are logged. Used after every granted launch.
pub fn spawn_check(store: Store, team: Team, tz: TimeZone, alerter: Arc<Alerter>, now: UnixMicros) {
    if team.budgets.alert_percent.is_empty()
        || (team.budgets.daily.is_none() && team.budgets.monthly.is_none())
    {
        return;
    }
    tokio::spawn(async move {
        match check_team(&store, &team, &tz, now).await {
            Ok(alerts) => alerts.into_iter().for_each(|a| alerter.notify(a)),
            Err(error) => tracing::error!(
                target: "warden::budget",
                team = team.name.as_str(),
                %error,
                "budget alert check failed"
            ),
        }
    });
}

/// Checks every team with budgets every `budget_alerts.check_interval_seconds`
/// (read anew each round, so a reload applies), for the spend that running
/// allocations add between launches.
pub fn spawn_watch(state: Arc<crate::app::AppState>) -> Option<tokio::task::JoinHandle<()>> {
    let store = state.store()?.clone();
    Some(tokio::spawn(async move {
        loop {
            let settings = state.settings();
            tokio::time::sleep(settings.alerts.check_interval).await;
            let policy = state.policy();
            let now = UnixMicros::from_system_time(std::time::SystemTime::now());
            for team in policy.teams() {
                match check_team(&store, team, &settings.time_zone, now).await {
                    Ok(alerts) => {
                        let alerter = state.alerter();
                        alerts.into_iter().for_each(|a| alerter.notify(a));
                    }
                    Err(error) => tracing::error!(
                        target: "warden::budget",
                        team = team.name.as_str(),
                        %error,
                        "budget alert check failed"
                    ),
                }
            }
        }
    }))
}
