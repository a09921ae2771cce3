//! Ending allocations: [`Store::end`], and [`Tx::end_locked`], which
//! keeps the usage and budget summaries in step (settlements use it too).

use serde_json::json;
use warden_core::TeamName;

use super::{Allocation, EndTarget};
use crate::audit::NewRecord;
use crate::backend::Tx;
use crate::budget::Charge;
use crate::error::StoreError;
use crate::time::UnixMicros;
use crate::Store;

fn allocation_json(a: &Allocation) -> serde_json::Value {
    json!({
        "allocation_id": a.id,
        "door": a.door,
        "team": a.team,
        "user": a.user,
        "name": a.name,
        "gpu_model": a.gpu_model,
        "gpus": a.gpus,
        "hourly_micros": a.hourly.micros(),
        "started_us": a.started,
        "ended_us": a.ended,
    })
}

impl Tx {
    /// Ends the live allocations `target` names among `teams` (locked by the
    /// caller), keeping the usage and budget summaries in step; with `void`,
    /// each ends at its own start and costs nothing. Ordered by id; the
    /// caller writes the audit records.
    pub(crate) async fn end_locked(
        &mut self,
        target: &EndTarget,
        teams: &[&TeamName],
        now: UnixMicros,
        void: bool,
    ) -> Result<Vec<Allocation>, StoreError> {
        // The summaries change with the rows. Budget states move to `now`
        // first, while the rows are still live (see `crate::budget`).
        let mut usage = self.load_usage(teams).await?;
        let mut budgets = self.load_budgets(teams).await?;
        for &team in teams {
            if let Some(state) = budgets.get_mut(team.as_str()) {
                self.advance_budget(team, state, now.micros()).await?;
            }
        }
        let mut ended = Vec::new();
        for &team in teams {
            for (a, reserved) in self.end_in_team(target, team, now, void).await? {
                if let Some(u) = usage.get_mut(team.as_str()) {
                    u.release(&a)?;
                }
                if let Some(state) = budgets.get_mut(team.as_str()) {
                    let charge = Charge::new(a.started.micros(), a.hourly.micros(), reserved);
                    state.end(team, charge, a.ended.unwrap_or(now).micros())?;
                }
                ended.push(a);
            }
        }
        self.save_usage(usage.iter().map(|(team, u)| (*team, u)))
            .await?;
        self.save_budgets(budgets.iter_mut().map(|(team, b)| (*team, b)))
            .await?;
        ended.sort_by_key(|a| a.id);
        Ok(ended)
    }
}

impl Store {
    /// Ends the live allocations `target` names, freeing their quota, and
    /// writes an `allocation.ended` audit record for each in the same
    /// transaction. Returns what was ended: empty if nothing live matched
    /// (ending twice is harmless).
    pub async fn end(
        &self,
        target: &EndTarget,
        now: UnixMicros,
    ) -> Result<Vec<Allocation>, StoreError> {
        self.end_by(target, None, now).await
    }

    /// [`Store::end`], with who asked (`actor`, e.g. `key:0123...`) in each
    /// `allocation.ended` record.
    pub async fn end_by(
        &self,
        target: &EndTarget,
        actor: Option<&str>,
        now: UnixMicros,
    ) -> Result<Vec<Allocation>, StoreError> {
        let mut tx = self.begin_write().await?;
        // Lock the teams before changing their rows, like `reserve`, so an
        // end and a re-launch of the same allocation are ordered.
        let teams = tx.target_teams(target).await?;
        let teams: Vec<&TeamName> = teams.iter().collect();
        tx.lock_teams(&teams).await?;
        let ended = tx.end_locked(target, &teams, now, false).await?;
        let records = ended
            .iter()
            .map(|a| {
                let mut payload = allocation_json(a);
                if let (Some(actor), Some(map)) = (actor, payload.as_object_mut()) {
                    map.insert("actor".to_owned(), actor.into());
                }
                NewRecord {
                    kind: "allocation.ended".to_owned(),
                    payload: payload.to_string(),
                    at: now,
                }
            })
            .collect();
        tx.append_records(records).await?;
        tx.commit().await?;
        Ok(ended)
    }
}
