//! Live usage: what quotas count, summed per (team, user, GPU model) in the
//! `live_usage` table.
//!
//! Every transaction that grants or ends allocations updates the summary
//! rows of their groups, after locking the team ([`Tx::lock_teams`]) and
//! reading the rows it changes; so, like the allocations themselves, the
//! summary changes only under the team's lock, and a reservation reads one
//! row per group of its team (a few), however many allocations are live.
//! The migration that created the table filled it from the live
//! allocations. A group whose allocations all ended has no row.

use std::collections::HashMap;

use warden_core::{GpuModel, TeamName};

use crate::allocations::{Allocation, AllocationRequest};
use crate::backend::{sqlite_chunks, sqlite_values, Param, Tx};
use crate::error::StoreError;

/// Live usage of one team, or of one user within it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Usage {
    pub(crate) gpus: i64,
    /// GPUs of the model the request asks for.
    pub(crate) model_gpus: i64,
    pub(crate) live: i64,
    pub(crate) hourly_micros: i64,
}

impl Usage {
    /// Adds `other`; a sum past `i64::MAX` saturates, which only denies.
    fn add(&mut self, other: &Usage, model_matches: bool) {
        self.gpus = self.gpus.saturating_add(other.gpus);
        if model_matches {
            self.model_gpus = self.model_gpus.saturating_add(other.gpus);
        }
        self.live = self.live.saturating_add(other.live);
        self.hourly_micros = self.hourly_micros.saturating_add(other.hourly_micros);
    }
}

/// A team's `live_usage` rows, as read under its lock and changed since.
#[derive(Debug, Default)]
pub(crate) struct TeamUsage {
    groups: Vec<UsageGroup>,
}

#[derive(Debug)]
struct UsageGroup {
    user: Option<String>,
    model: Option<String>,
    /// The sums; `model_gpus` unused.
    usage: Usage,
    /// The group's row, if the table has one.
    id: Option<i64>,
    /// Whether `usage` differs from that row.
    changed: bool,
}

impl TeamUsage {
    /// Usage of the whole team and of `user` within it, counting GPUs of
    /// `model` (when given) as `model_gpus`.
    pub(crate) fn of(&self, user: Option<&str>, model: Option<&GpuModel>) -> (Usage, Usage) {
        let (mut team, mut mine) = (Usage::default(), Usage::default());
        for g in &self.groups {
            let model_matches = model.is_some_and(|m| g.model.as_deref() == Some(m.as_str()));
            team.add(&g.usage, model_matches);
            if g.user.as_deref() == user {
                mine.add(&g.usage, model_matches);
            }
        }
        (team, mine)
    }

    fn group(&mut self, user: Option<&str>, model: Option<&str>) -> &mut UsageGroup {
        let at = self
            .groups
            .iter()
            .position(|g| g.user.as_deref() == user && g.model.as_deref() == model);
        let at = at.unwrap_or_else(|| {
            self.groups.push(UsageGroup {
                user: user.map(str::to_owned),
                model: model.map(str::to_owned),
                usage: Usage::default(),
                id: None,
                changed: false,
            });
            self.groups.len() - 1
        });
        #[expect(clippy::indexing_slicing, reason = "`at` was found or pushed above")]
        &mut self.groups[at]
    }

    /// Counts a newly granted allocation. Sums past `i64::MAX` are an
    /// error: the row could not be stored.
    pub(crate) fn grant(&mut self, req: &AllocationRequest) -> Result<(), StoreError> {
        let team = req.team.as_str();
        let g = self.group(
            req.user.as_deref(),
            req.gpu_model.as_ref().map(GpuModel::as_str),
        );
        let overflow = || StoreError::Overflow {
            what: format!("live usage of team `{team}`"),
        };
        g.usage.gpus = g
            .usage
            .gpus
            .checked_add(i64::from(req.gpus))
            .ok_or_else(overflow)?;
        g.usage.live = g.usage.live.checked_add(1).ok_or_else(overflow)?;
        g.usage.hourly_micros = g
            .usage
            .hourly_micros
            .checked_add(req.hourly.micros())
            .ok_or_else(overflow)?;
        g.changed = true;
        Ok(())
    }

    /// Stops counting an allocation that ended. A summary that does not
    /// hold it is corrupt.
    pub(crate) fn release(&mut self, a: &Allocation) -> Result<(), StoreError> {
        let g = self.group(
            a.user.as_deref(),
            a.gpu_model.as_ref().map(GpuModel::as_str),
        );
        let left = Usage {
            gpus: g.usage.gpus - i64::from(a.gpus),
            model_gpus: 0,
            live: g.usage.live - 1,
            hourly_micros: g.usage.hourly_micros - a.hourly.micros(),
        };
        if left.gpus < 0 || left.live < 0 || left.hourly_micros < 0 {
            return Err(StoreError::Corrupt {
                what: format!("live usage of team `{}`", a.team),
                detail: format!("it does not count live allocation `{}`", a.id),
            });
        }
        g.usage = left;
        g.changed = true;
        Ok(())
    }
}

/// A `live_usage` row: id, team, user, model, gpus, live, hourly.
type UsageRow = (i64, String, Option<String>, Option<String>, i64, i64, i64);

/// The column [`USAGE_SELECT`] is filtered on.
pub(crate) const USAGE_TEAM: &str = "team";

/// What [`Tx::load_usage`] reads, of the teams asked for.
pub(crate) const USAGE_SELECT: &str =
    "SELECT id, team, user_name, gpu_model, gpus, live, hourly_micros FROM live_usage";

impl Tx {
    /// The `live_usage` rows of `teams` (locked), one statement on
    /// PostgreSQL. Every team asked for is in the map.
    pub(crate) async fn load_usage<'t>(
        &mut self,
        teams: &[&'t TeamName],
    ) -> Result<HashMap<&'t str, TeamUsage>, StoreError> {
        let rows: Vec<UsageRow> = self.rows_for_teams(USAGE_SELECT, USAGE_TEAM, teams).await?;
        let mut usage: HashMap<&str, TeamUsage> = teams
            .iter()
            .map(|t| (t.as_str(), TeamUsage::default()))
            .collect();
        for (id, team, user, model, gpus, live, hourly_micros) in rows {
            if let Some(team_usage) = usage.get_mut(team.as_str()) {
                team_usage.groups.push(UsageGroup {
                    user,
                    model,
                    usage: Usage {
                        gpus,
                        model_gpus: 0,
                        live,
                        hourly_micros,
                    },
                    id: Some(id),
                    changed: false,
                });
            }
        }
        Ok(usage)
    }

    /// Writes the changed groups back: updates the rows of groups still
    /// live (in place, so PostgreSQL can keep the updates HOT), deletes the
    /// others' and inserts new groups' (one statement of each on
    /// PostgreSQL).
    pub(crate) async fn save_usage<'u>(
        &mut self,
        usage: impl IntoIterator<Item = (&'u str, &'u TeamUsage)>,
    ) -> Result<(), StoreError> {
        let mut updated: Vec<(i64, &Usage)> = Vec::new();
        let mut deleted: Vec<i64> = Vec::new();
        let mut inserted: Vec<(&str, &UsageGroup)> = Vec::new();
        for (team, u) in usage {
            for g in u.groups.iter().filter(|g| g.changed) {
                match (g.id, g.usage.live > 0) {
                    (Some(id), true) => updated.push((id, &g.usage)),
                    (Some(id), false) => deleted.push(id),
                    (None, true) => inserted.push((team, g)),
                    (None, false) => {}
                }
            }
        }
        match self {
            Tx::Postgres { tx } => {
                if !updated.is_empty() {
                    sqlx::query(
                        "UPDATE live_usage u \
                         SET gpus = k.gpus, live = k.live, hourly_micros = k.hourly_micros \
                         FROM UNNEST($1::BIGINT[], $2::BIGINT[], $3::BIGINT[], $4::BIGINT[]) \
                           AS k(id, gpus, live, hourly_micros) \
                         WHERE u.id = k.id",
                    )
                    .bind(updated.iter().map(|(id, _)| *id).collect::<Vec<_>>())
                    .bind(updated.iter().map(|(_, u)| u.gpus).collect::<Vec<_>>())
                    .bind(updated.iter().map(|(_, u)| u.live).collect::<Vec<_>>())
                    .bind(
                        updated
                            .iter()
                            .map(|(_, u)| u.hourly_micros)
                            .collect::<Vec<_>>(),
                    )
                    .execute(&mut **tx)
                    .await?;
                }
                if !deleted.is_empty() {
                    sqlx::query("DELETE FROM live_usage WHERE id = ANY($1::BIGINT[])")
                        .bind(&deleted)
                        .execute(&mut **tx)
                        .await?;
                }
                if !inserted.is_empty() {
                    sqlx::query(
                        "INSERT INTO live_usage \
                           (team, user_name, gpu_model, gpus, live, hourly_micros) \
                         SELECT * FROM UNNEST($1::TEXT[], $2::TEXT[], $3::TEXT[], \
                                              $4::BIGINT[], $5::BIGINT[], $6::BIGINT[])",
                    )
                    .bind(inserted.iter().map(|(t, _)| *t).collect::<Vec<_>>())
                    .bind(
                        inserted
                            .iter()
                            .map(|(_, g)| g.user.as_deref())
                            .collect::<Vec<_>>(),
                    )
                    .bind(
                        inserted
                            .iter()
                            .map(|(_, g)| g.model.as_deref())
                            .collect::<Vec<_>>(),
                    )
                    .bind(
                        inserted
                            .iter()
                            .map(|(_, g)| g.usage.gpus)
                            .collect::<Vec<_>>(),
                    )
                    .bind(
                        inserted
                            .iter()
                            .map(|(_, g)| g.usage.live)
                            .collect::<Vec<_>>(),
                    )
                    .bind(
                        inserted
                            .iter()
                            .map(|(_, g)| g.usage.hourly_micros)
                            .collect::<Vec<_>>(),
                    )
                    .execute(&mut **tx)
                    .await?;
                }
            }
            Tx::Sqlite { tx, .. } => {
                for range in sqlite_chunks(updated.len()) {
                    let chunk = updated.get(range).unwrap_or_default();
                    let sql = format!(
                        "UPDATE live_usage \
                         SET gpus = k.column2, live = k.column3, hourly_micros = k.column4 \
                         FROM (VALUES {}) AS k WHERE live_usage.id = k.column1",
                        sqlite_values(chunk.len(), 4)
                    );
                    let mut params: Vec<Param> = Vec::with_capacity(chunk.len() * 4);
                    for (id, u) in chunk {
                        params.extend([
                            (*id).into(),
                            u.gpus.into(),
                            u.live.into(),
                            u.hourly_micros.into(),
                        ]);
                    }
                    tx.run_or_defer(&sql, params).await?;
                }
                for id in deleted {
                    tx.run_or_defer("DELETE FROM live_usage WHERE id = $1", vec![id.into()])
                        .await?;
                }
                for range in sqlite_chunks(inserted.len()) {
                    let chunk = inserted.get(range).unwrap_or_default();
                    let sql = format!(
                        "INSERT INTO live_usage \
                           (team, user_name, gpu_model, gpus, live, hourly_micros) VALUES {}",
                        sqlite_values(chunk.len(), 6)
                    );
                    let mut params: Vec<Param> = Vec::with_capacity(chunk.len() * 6);
                    for (team, g) in chunk {
                        params.extend([
                            (*team).into(),
                            g.user.as_deref().into(),
                            g.model.as_deref().into(),
                            g.usage.gpus.into(),
                            g.usage.live.into(),
                            g.usage.hourly_micros.into(),
                        ]);
                    }
                    tx.run_or_defer(&sql, params).await?;
                }
            }
        }
        Ok(())
    }
}
