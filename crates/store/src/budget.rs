//! Budget state: what each [`Limit::Budget`](crate::Limit::Budget) of a
//! team counts, kept up to date by every grant and end so that a check
//! reads a few rows, however many allocations are live or fall in the
//! budget's period. The answers are exactly those of the rule in
//! [`crate::spend`]; this module only changes how they are computed.
//!
//! # The rule, allocation by allocation
//!
//! A budget from `f` checked at `t > f` counts `spend(f, t) + held(t)`:
//! each allocation contributes its cost over `[f, t)` and, while live, what
//! it still holds of its reservation. Write `h` for its hourly price, `s`
//! for its start, `R` for its reservation (micro-dollars), `a = max(s, f)`,
//! and let amounts be scaled by 3,600,000,000 (µs per hour) so that every
//! one is an integer: `R·H` with `H` that factor, `h·d` for a duration `d`
//! in µs. Its reservation is used up at
//! `x = s + ceil(R·H / h)` (`held_until_us`; `x = s` when `R = 0`, never
//! when `h = 0`). Then, for `t > f`:
//!
//! - a **live** allocation contributes `R·H - h·(a - s)` ("holding",
//!   a constant) while `t < x`, and `h·(t - a)` ("accruing") from `x` on;
//! - an **ended** allocation contributes `h·max(0, min(t, e) - a)` with
//!   `e` its end: the constant `h·max(0, e - a)` once `t >= e`.
//!
//! (Before `x`, `held = R·H - h·(t - s)` when `t >= s`, which plus the
//! spend `h·(t - a)` is the constant; when `t < s` it is `R·H`, spend 0, and
//! `a = s`, the same constant. From `x` on, nothing is held.) So every
//! allocation's contribution is a constant or grows at its own `h`, and
//! changes regime at one instant, `x` or `e`: a "break".
//!
//! # What is stored
//!
//! Per team (`budget_teams`): an instant `swept_us` (`W`), at which every
//! live allocation with `x <= W` is accruing and every other one holding;
//! the sum of the accruing allocations' `h`; a lower bound on the holding
//! ones' `x` (`fresh_until_us`); and an upper bound on every break at or
//! before `W` (`last_break_us`). Per (team, `f`) (`budget_periods`):
//! `U(W)`, the budget's exact count at `W`. Every end is applied at
//! `e <= W` (`W` is first moved to `e`), so ended allocations are constants
//! in `U(W)`. The count at `t`, for `f < t <= W`, is then
//!
//! ```text
//! U(t) = U(W) - Σ accruing h × (W - t) + corrections
//! ```
//!
//! where the corrections are for the allocations with a break in
//! `(t, W]`: accruing ones with `x > t` held at `t`, ended ones with
//! `e > t` had accrued only up to `t`. There are none when
//! `t >= last_break_us`; otherwise they are the allocations swept or
//! granted in this transaction (in memory) and the ones an indexed range
//! query finds (rare: a caller whose clock is behind another's).
//!
//! Moving `W` forward to `W'` adds `Σ accruing h × (W' - W)` to every
//! period, and moves the allocations with `x` in `(W, W']` from holding to
//! accruing: none when `W' < fresh_until_us`; otherwise one indexed range
//! query (`allocations_live_held`), so each allocation is swept once. A
//! grant or an end changes each period by what the allocation contributes
//! at `W`. A reservation batch moves `W` to the latest `now` among its
//! budget checks of the team, before anything else.
//!
//! The team state is built from the allocations when the team's first
//! budget is checked, and a period's when a budget with its start is first
//! checked (one scan of the team's live allocations and those ended since
//! `f`); at most [`MAX_PERIODS`] periods are kept per team, the least
//! recently checked dropped (and built again if needed). Everything is
//! computed in `i128`, never rounded; `U(W)` is stored as its decimal text
//! (`used`), since it needs more than 64 bits. A step past the `i128` range
//! (amounts beyond 10^22 dollars) fails the transaction
//! ([`StoreError::Overflow`]).
//!
//! A budget whose start is not before the check's `now` counts only what is
//! held; that rare case reads the team's live allocations as before.

use std::collections::HashMap;

use warden_core::TeamName;

use crate::backend::{on_tx, sqlite_chunks, sqlite_values, Param, Tx};
use crate::error::StoreError;
use crate::spend::MICROS_PER_HOUR;

/// `held_until_us` of an allocation whose reservation is never used up.
pub(crate) const NEVER: i64 = i64::MAX;

/// Periods kept per team; daily and monthly budgets need two.
pub(crate) const MAX_PERIODS: usize = 8;

/// When an allocation's reservation is used up: the first instant `t` with
/// `hourly × (t - started) >= reserved` (scaled), `started` if it reserved
/// nothing, [`NEVER`] if it is free or that instant is not representable.
pub(crate) fn held_until(started: i64, hourly: i64, reserved: i64) -> i64 {
    if reserved <= 0 {
        return started;
    }
    if hourly <= 0 {
        return NEVER;
    }
    let h = i128::from(hourly);
    // Both positive: ceil(a / b) = (a + b - 1) / b.
    let micros = (i128::from(reserved) * MICROS_PER_HOUR + h - 1) / h;
    i64::try_from(i128::from(started) + micros).unwrap_or(NEVER)
}

/// An allocation as budgets count it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Charge {
    pub(crate) started: i64,
    pub(crate) hourly: i64,
    pub(crate) reserved: i64,
    pub(crate) held_until: i64,
}

impl Charge {
    pub(crate) fn new(started: i64, hourly: i64, reserved: i64) -> Charge {
        Charge {
            started,
            hourly,
            reserved,
            held_until: held_until(started, hourly, reserved),
        }
    }

    /// Whether its reservation is used up at `t`.
    fn accruing_at(&self, t: i64) -> bool {
        self.held_until != NEVER && self.held_until <= t
    }

    /// `h × (t - max(s, f))`, not clamped.
    fn slope(&self, from: i64, t: i64) -> i128 {
        let start = i128::from(self.started.max(from));
        i128::from(self.hourly) * (i128::from(t) - start)
    }

    /// What it cost over `[f, t)` had it run until `t`: `slope` clamped at 0.
    fn accrued(&self, from: i64, t: i64) -> i128 {
        self.slope(from, t).max(0)
    }

    /// What a live, holding allocation counts: `R·H - h·(max(s, f) - s)`.
    fn holding(&self, from: i64) -> i128 {
        // slope(f, s) = -h·(max(s, f) - s)
        i128::from(self.reserved) * MICROS_PER_HOUR + self.slope(from, self.started)
    }

    /// What it counts while live at `t` (`t > f`), holding or accruing as
    /// classified at `w`: the state's view when `t = w`.
    fn live(&self, from: i64, t: i64, w: i64) -> i128 {
        if self.accruing_at(w) {
            self.slope(from, t)
        } else {
            self.holding(from)
        }
    }
}

/// One budget period's state.
#[derive(Debug, Clone)]
struct Period {
    from: i64,
    /// `U(W)`, scaled.
    used: i128,
    /// The latest `now` it was checked at.
    touched: i64,
}

/// A team's budget state, as loaded (or built) under its lock and changed
/// in this transaction.
#[derive(Debug)]
pub(crate) struct TeamBudget {
    swept: i64,
    accruing_hourly: i128,
    fresh_until: i64,
    last_break: i64,
    periods: Vec<Period>,
    /// `swept` and `last_break` as stored when the transaction began: the
    /// allocations in the database with a break in `(.., base_swept]` are
    /// accounted for in the stored state.
    base_swept: i64,
    base_last_break: i64,
    /// Accruing allocations with a break after `base_swept` or not yet in
    /// the database: swept or granted in this transaction.
    recent: Vec<Charge>,
    /// Whether something was granted: `W` must not move after that, as the
    /// sweep reads the database, which does not have the grants yet.
    granted: bool,
    dirty: bool,
    dropped: Vec<i64>,
}

/// What [`Tx::load_budgets`] reads, of the teams asked for.
pub(crate) const BUDGET_SELECT: &str = "SELECT t.team, t.swept_us, t.accruing_hourly_micros, \
       t.fresh_until_us, t.last_break_us, \
       p.from_us, p.used, p.touched_us \
     FROM budget_teams t LEFT JOIN budget_periods p ON p.team = t.team";

/// The column [`BUDGET_SELECT`] is filtered on.
pub(crate) const BUDGET_TEAM: &str = "t.team";

/// A row of the load query: team, swept, accruing hourly, fresh until,
/// last break, then the period's from, used, touched.
type StateRow = (
    String,
    i64,
    i64,
    i64,
    i64,
    Option<i64>,
    Option<String>,
    Option<i64>,
);

/// Allocation columns a budget needs: started, hourly, reserved, ended.
type ChargeRow = (i64, i64, i64, Option<i64>);

impl TeamBudget {
    fn new(swept: i64) -> TeamBudget {
        TeamBudget {
            swept,
            accruing_hourly: 0,
            fresh_until: NEVER,
            last_break: i64::MIN,
            periods: Vec::new(),
            base_swept: swept,
            base_last_break: i64::MIN,
            recent: Vec::new(),
            granted: false,
            dirty: true,
            dropped: Vec::new(),
        }
    }

    /// Whether the state has the period starting at `from`.
    pub(crate) fn has_period(&self, from: i64) -> bool {
        self.periods.iter().any(|p| p.from == from)
    }

    /// Counts a newly granted allocation.
    pub(crate) fn grant(&mut self, team: &TeamName, c: Charge) -> Result<(), StoreError> {
        let w = self.swept;
        for p in &mut self.periods {
            p.used = add(team, p.used, c.live(p.from, w, w))?;
        }
        if c.accruing_at(w) {
            self.accruing_hourly = add(team, self.accruing_hourly, c.hourly.into())?;
            self.last_break = self.last_break.max(c.held_until);
            self.recent.push(c);
        } else {
            self.fresh_until = self.fresh_until.min(c.held_until);
        }
        self.granted = true;
        self.dirty = true;
        Ok(())
    }

    /// Counts the end, at `ended`, of a live allocation; `W` must already
    /// be at or after `ended` ([`Tx::advance_budget`]).
    pub(crate) fn end(&mut self, team: &TeamName, c: Charge, ended: i64) -> Result<(), StoreError> {
        let w = self.swept;
        if ended > w {
            return Err(corrupt(team, format!("an end at `{ended}` after `{w}`")));
        }
        for p in &mut self.periods {
            let change = sub(team, c.accrued(p.from, ended), c.live(p.from, w, w))?;
            p.used = add(team, p.used, change)?;
        }
        if c.accruing_at(w) {
            self.accruing_hourly = sub(team, self.accruing_hourly, c.hourly.into())?;
        }
        self.last_break = self.last_break.max(ended);
        self.dirty = true;
        Ok(())
    }
}

fn corrupt(team: &TeamName, detail: String) -> StoreError {
    StoreError::Corrupt {
        what: format!("budget state of team `{team}`"),
        detail,
    }
}

fn overflow(team: &TeamName) -> StoreError {
    StoreError::Overflow {
        what: format!("budget state of team `{team}`"),
    }
}

// Scaled amounts are exact `i128`s; a step past its range fails the
// transaction rather than wrap or saturate (either would make the state
// wrong from then on). Only amounts beyond 10^22 dollars get there.

fn add(team: &TeamName, a: i128, b: i128) -> Result<i128, StoreError> {
    a.checked_add(b).ok_or_else(|| overflow(team))
}

fn sub(team: &TeamName, a: i128, b: i128) -> Result<i128, StoreError> {
    a.checked_sub(b).ok_or_else(|| overflow(team))
}

fn mul(team: &TeamName, a: i128, b: i128) -> Result<i128, StoreError> {
    a.checked_mul(b).ok_or_else(|| overflow(team))
}

impl Tx {
    /// The stored budget states of `teams` (locked); teams without one are
    /// absent. One statement on PostgreSQL.
    pub(crate) async fn load_budgets<'t>(
        &mut self,
        teams: &[&'t TeamName],
    ) -> Result<HashMap<&'t str, TeamBudget>, StoreError> {
        let rows: Vec<StateRow> = self
            .rows_for_teams(BUDGET_SELECT, BUDGET_TEAM, teams)
            .await?;
        let mut states: HashMap<&str, TeamBudget> = HashMap::new();
        for (team, swept, accruing, fresh_until, last_break, from, used, touched) in rows {
            let Some(&name) = teams.iter().find(|t| t.as_str() == team) else {
                continue;
            };
            let name = name.as_str();
            let state = states.entry(name).or_insert_with(|| TeamBudget {
                accruing_hourly: i128::from(accruing),
                fresh_until,
                last_break,
                base_last_break: last_break,
                dirty: false,
                ..TeamBudget::new(swept)
            });
            if let (Some(from), Some(used), Some(touched)) = (from, used, touched) {
                let used = used.parse().map_err(|_| StoreError::Corrupt {
                    what: format!("budget period of team `{team}` from `{from}`"),
                    detail: format!("`used` is `{used}`, not an integer"),
                })?;
                state.periods.push(Period {
                    from,
                    used,
                    touched,
                });
            }
        }
        Ok(states)
    }

    /// Builds the budget state of `team` (locked) from its allocations, with
    /// `W` at `at` or at its latest end if later, and no period yet. Fills
    /// in `held_until_us` where it is missing (rows from before the
    /// migration that added it).
    pub(crate) async fn build_budget(
        &mut self,
        team: &TeamName,
        at: i64,
    ) -> Result<TeamBudget, StoreError> {
        let (last_end,): (Option<i64>,) = on_tx!(self, |conn| {
            sqlx::query_as(
                "SELECT MAX(ended_us) FROM allocations \
                 WHERE team = $1 AND ended_us IS NOT NULL",
            )
            .bind(team.as_str())
            .fetch_one(&mut *conn)
            .await?
        });
        let live: Vec<(i64, i64, i64, i64, Option<i64>)> = on_tx!(self, |conn| {
            sqlx::query_as(
                "SELECT id, started_us, hourly_micros, reserved_micros, held_until_us \
                 FROM allocations WHERE team = $1 AND state = 'live'",
            )
            .bind(team.as_str())
            .fetch_all(&mut *conn)
            .await?
        });
        let w = last_end.map_or(at, |e| e.max(at));
        let mut state = TeamBudget::new(w);
        state.last_break = last_end.unwrap_or(i64::MIN);
        for (id, started, hourly, reserved, stored) in live {
            let c = Charge::new(started, hourly, reserved);
            if stored != Some(c.held_until) {
                on_tx!(self, |conn| {
                    sqlx::query("UPDATE allocations SET held_until_us = $1 WHERE id = $2")
                        .bind(c.held_until)
                        .bind(id)
                        .execute(&mut *conn)
                        .await?;
                });
            }
            if c.accruing_at(w) {
                state.accruing_hourly = add(team, state.accruing_hourly, hourly.into())?;
                state.last_break = state.last_break.max(c.held_until);
            } else {
                state.fresh_until = state.fresh_until.min(c.held_until);
            }
        }
        state.base_last_break = state.last_break;
        Ok(state)
    }

    /// Adds the period starting at `from` (before `W`) to `state`, computed
    /// from the team's allocations (`state` must not have grants of this
    /// transaction yet).
    pub(crate) async fn add_budget_period(
        &mut self,
        team: &TeamName,
        state: &mut TeamBudget,
        from: i64,
        at: i64,
    ) -> Result<(), StoreError> {
        let w = state.swept;
        if from >= w || state.granted {
            return Err(corrupt(team, format!("a period from `{from}` at `{w}`")));
        }
        let rows: Vec<ChargeRow> = on_tx!(self, |conn| {
            sqlx::query_as(
                "SELECT started_us, hourly_micros, reserved_micros, ended_us \
                 FROM allocations WHERE team = $1 AND state = 'live' \
                 UNION ALL \
                 SELECT started_us, hourly_micros, reserved_micros, ended_us \
                 FROM allocations WHERE team = $1 AND ended_us > $2",
            )
            .bind(team.as_str())
            .bind(from)
            .fetch_all(&mut *conn)
            .await?
        });
        let mut used: i128 = 0;
        for (started, hourly, reserved, ended) in rows {
            let c = Charge::new(started, hourly, reserved);
            let counted = match ended {
                None => c.live(from, w, w),
                Some(e) if e <= w => c.accrued(from, e),
                Some(e) => return Err(corrupt(team, format!("an end at `{e}` after `{w}`"))),
            };
            used = add(team, used, counted)?;
        }
        state.periods.push(Period {
            from,
            used,
            touched: at,
        });
        state.dirty = true;
        Ok(())
    }

    /// Moves `state`'s `W` forward to `to` (nothing if it is there already),
    /// sweeping the allocations whose reservations are used up by then.
    /// Must come before any grant or end of the transaction is counted.
    pub(crate) async fn advance_budget(
        &mut self,
        team: &TeamName,
        state: &mut TeamBudget,
        to: i64,
    ) -> Result<(), StoreError> {
        let w = state.swept;
        if to <= w {
            return Ok(());
        }
        if state.granted {
            return Err(corrupt(team, format!("a sweep to `{to}` after a grant")));
        }
        let mut swept: Vec<Charge> = Vec::new();
        if to >= state.fresh_until {
            let rows: Vec<(i64, i64, i64)> = on_tx!(self, |conn| {
                sqlx::query_as(
                    "SELECT started_us, hourly_micros, reserved_micros FROM allocations \
                     WHERE team = $1 AND state = 'live' \
                       AND held_until_us > $2 AND held_until_us <= $3",
                )
                .bind(team.as_str())
                .bind(w)
                .bind(to)
                .fetch_all(&mut *conn)
                .await?
            });
            let (next,): (Option<i64>,) = on_tx!(self, |conn| {
                sqlx::query_as(
                    "SELECT MIN(held_until_us) FROM allocations \
                     WHERE team = $1 AND state = 'live' AND held_until_us > $2",
                )
                .bind(team.as_str())
                .bind(to)
                .fetch_one(&mut *conn)
                .await?
            });
            swept = rows
                .into_iter()
                .map(|(s, h, r)| Charge::new(s, h, r))
                .collect();
            state.fresh_until = next.unwrap_or(NEVER);
        }
        let elapsed = i128::from(to) - i128::from(w);
        let accrued = mul(team, state.accruing_hourly, elapsed)?;
        for p in &mut state.periods {
            p.used = add(team, p.used, accrued)?;
            for c in &swept {
                let change = sub(team, c.slope(p.from, to), c.holding(p.from))?;
                p.used = add(team, p.used, change)?;
            }
        }
        for c in &swept {
            state.accruing_hourly = add(team, state.accruing_hourly, c.hourly.into())?;
            state.last_break = state.last_break.max(c.held_until);
        }
        state.recent.extend(swept);
        state.swept = to;
        state.dirty = true;
        Ok(())
    }

    /// What the budgets of `state` from each of `froms` count at `at`,
    /// scaled: every `from` must be before `at`, with its period in
    /// `state`, and `at` at or before `W`.
    pub(crate) async fn budget_used(
        &mut self,
        team: &TeamName,
        state: &mut TeamBudget,
        froms: &[i64],
        at: i64,
    ) -> Result<Vec<i128>, StoreError> {
        let w = state.swept;
        if at > w {
            return Err(corrupt(team, format!("a check at `{at}` after `{w}`")));
        }
        // Allocations with a break in (at, base_swept] that the database
        // has and the state does not (rare: `at` is behind a previous
        // transaction's `now`).
        let mut late: Vec<ChargeRow> = Vec::new();
        if at < state.base_swept && at < state.base_last_break {
            late = on_tx!(self, |conn| {
                sqlx::query_as(
                    "SELECT started_us, hourly_micros, reserved_micros, ended_us \
                     FROM allocations WHERE team = $1 AND state = 'live' \
                       AND held_until_us > $2 AND held_until_us <= $3 \
                     UNION ALL \
                     SELECT started_us, hourly_micros, reserved_micros, ended_us \
                     FROM allocations WHERE team = $1 AND ended_us > $2 AND ended_us <= $3",
                )
                .bind(team.as_str())
                .bind(at)
                .bind(state.base_swept)
                .fetch_all(&mut *conn)
                .await?
            });
        }
        let mut out = Vec::with_capacity(froms.len());
        for &from in froms {
            let p = state
                .periods
                .iter_mut()
                .find(|p| p.from == from)
                .filter(|_| from < at)
                .ok_or_else(|| corrupt(team, format!("no period from `{from}` at `{at}`")))?;
            let since = mul(team, state.accruing_hourly, i128::from(w) - i128::from(at))?;
            let mut used = sub(team, p.used, since)?;
            for c in state.recent.iter().filter(|c| !c.accruing_at(at)) {
                used = add(team, used, sub(team, c.holding(from), c.slope(from, at))?)?;
            }
            for &(started, hourly, reserved, ended) in &late {
                let c = Charge::new(started, hourly, reserved);
                let change = match ended {
                    None => sub(team, c.holding(from), c.slope(from, at))?,
                    Some(e) => sub(team, c.accrued(from, at), c.accrued(from, e))?,
                };
                used = add(team, used, change)?;
            }
            p.touched = p.touched.max(at);
            out.push(used);
        }
        state.dirty = true;
        Ok(out)
    }

    /// Writes back the states that changed, dropping the least recently
    /// checked periods beyond [`MAX_PERIODS`] per team.
    pub(crate) async fn save_budgets<'s>(
        &mut self,
        states: impl IntoIterator<Item = (&'s str, &'s mut TeamBudget)>,
    ) -> Result<(), StoreError> {
        type TeamRow<'a> = (&'a str, i64, i64, i64, i64);
        type PeriodRow<'a> = (&'a str, i64, String, i64);
        let mut teams: Vec<TeamRow<'_>> = Vec::new();
        let mut periods: Vec<PeriodRow<'_>> = Vec::new();
        let mut dropped: Vec<(&str, i64)> = Vec::new();
        for (name, state) in states {
            let team = TeamName::parse(name).map_err(|e| StoreError::Corrupt {
                what: "budget team".to_owned(),
                detail: e.to_string(),
            })?;
            if !state.dirty {
                continue;
            }
            if state.periods.len() > MAX_PERIODS {
                state.periods.sort_by_key(|p| std::cmp::Reverse(p.touched));
                for p in state.periods.split_off(MAX_PERIODS) {
                    state.dropped.push(p.from);
                }
            }
            let accruing = i64::try_from(state.accruing_hourly).map_err(|_| overflow(&team))?;
            teams.push((
                name,
                state.swept,
                accruing,
                state.fresh_until,
                state.last_break,
            ));
            for p in &state.periods {
                periods.push((name, p.from, p.used.to_string(), p.touched));
            }
            dropped.extend(state.dropped.iter().map(|&from| (name, from)));
        }
        match self {
            Tx::Postgres { tx } => {
                if !teams.is_empty() {
                    sqlx::query(
                        "INSERT INTO budget_teams (team, swept_us, accruing_hourly_micros, \
                           fresh_until_us, last_break_us) \
                         SELECT * FROM UNNEST($1::TEXT[], $2::BIGINT[], $3::BIGINT[], \
                                              $4::BIGINT[], $5::BIGINT[]) \
                         ON CONFLICT (team) DO UPDATE SET swept_us = excluded.swept_us, \
                           accruing_hourly_micros = excluded.accruing_hourly_micros, \
                           fresh_until_us = excluded.fresh_until_us, \
                           last_break_us = excluded.last_break_us",
                    )
                    .bind(teams.iter().map(|r| r.0).collect::<Vec<_>>())
                    .bind(teams.iter().map(|r| r.1).collect::<Vec<_>>())
                    .bind(teams.iter().map(|r| r.2).collect::<Vec<_>>())
                    .bind(teams.iter().map(|r| r.3).collect::<Vec<_>>())
                    .bind(teams.iter().map(|r| r.4).collect::<Vec<_>>())
                    .execute(&mut **tx)
                    .await?;
                }
                if !dropped.is_empty() {
                    sqlx::query(
                        "DELETE FROM budget_periods p \
                         USING UNNEST($1::TEXT[], $2::BIGINT[]) AS k(team, from_us) \
                         WHERE p.team = k.team AND p.from_us = k.from_us",
                    )
                    .bind(dropped.iter().map(|r| r.0).collect::<Vec<_>>())
                    .bind(dropped.iter().map(|r| r.1).collect::<Vec<_>>())
                    .execute(&mut **tx)
                    .await?;
                }
                if !periods.is_empty() {
                    sqlx::query(
                        "INSERT INTO budget_periods (team, from_us, used, touched_us) \
                         SELECT * FROM UNNEST($1::TEXT[], $2::BIGINT[], $3::TEXT[], \
                                              $4::BIGINT[]) \
                         ON CONFLICT (team, from_us) DO UPDATE SET \
                           used = excluded.used, touched_us = excluded.touched_us",
                    )
                    .bind(periods.iter().map(|r| r.0).collect::<Vec<_>>())
                    .bind(periods.iter().map(|r| r.1).collect::<Vec<_>>())
                    .bind(periods.iter().map(|r| r.2.as_str()).collect::<Vec<_>>())
                    .bind(periods.iter().map(|r| r.3).collect::<Vec<_>>())
                    .execute(&mut **tx)
                    .await?;
                }
            }
            Tx::Sqlite { tx, .. } => {
                for range in sqlite_chunks(teams.len()) {
                    let chunk = teams.get(range).unwrap_or_default();
                    let sql = format!(
                        "INSERT INTO budget_teams (team, swept_us, accruing_hourly_micros, \
                           fresh_until_us, last_break_us) VALUES {} \
                         ON CONFLICT (team) DO UPDATE SET swept_us = excluded.swept_us, \
                           accruing_hourly_micros = excluded.accruing_hourly_micros, \
                           fresh_until_us = excluded.fresh_until_us, \
                           last_break_us = excluded.last_break_us",
                        sqlite_values(chunk.len(), 5)
                    );
                    let mut params: Vec<Param> = Vec::with_capacity(chunk.len() * 5);
                    for &(team, swept, accruing, fresh_until, last_break) in chunk {
                        params.extend([
                            team.into(),
                            swept.into(),
                            accruing.into(),
                            fresh_until.into(),
                            last_break.into(),
                        ]);
                    }
                    tx.run_or_defer(&sql, params).await?;
                }
                for (team, from) in dropped {
                    tx.run_or_defer(
                        "DELETE FROM budget_periods WHERE team = $1 AND from_us = $2",
                        vec![team.into(), from.into()],
                    )
                    .await?;
                }
                for range in sqlite_chunks(periods.len()) {
                    let chunk = periods.get(range).unwrap_or_default();
                    let sql = format!(
                        "INSERT INTO budget_periods (team, from_us, used, touched_us) \
                         VALUES {} \
                         ON CONFLICT (team, from_us) DO UPDATE SET \
                           used = excluded.used, touched_us = excluded.touched_us",
                        sqlite_values(chunk.len(), 4)
                    );
                    let mut params: Vec<Param> = Vec::with_capacity(chunk.len() * 4);
                    for (team, from, used, touched) in chunk {
                        params.extend([
                            (*team).into(),
                            (*from).into(),
                            used.as_str().into(),
                            (*touched).into(),
                        ]);
                    }
                    tx.run_or_defer(&sql, params).await?;
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spend::{overlap, scaled_cost};

    const H: i128 = MICROS_PER_HOUR;

    #[test]
    fn held_until_is_when_accrual_reaches_the_reservation() {
        // $10/h reserving $10: one hour.
        assert_eq!(held_until(5, 10_000_000, 10_000_000), 5 + 3_600_000_000);
        // Rounded up: the first instant at which the accrual reaches the
        // reservation, not one µs earlier or later.
        for (hourly, reserved) in [(7, 1), (3, 2), (1_000_001, 999_999), (24_000_000, 1)] {
            let x = i128::from(held_until(100, hourly, reserved) - 100);
            let (h, r) = (i128::from(hourly), i128::from(reserved) * H);
            assert!(h * x >= r && h * (x - 1) < r, "{hourly} {reserved}: {x}");
        }
        assert_eq!(held_until(0, 7, 1), 514_285_715);
        assert_eq!(held_until(9, 3, 0), 9);
        assert_eq!(held_until(9, 0, 3), NEVER);
        assert_eq!(held_until(i64::MAX - 1, 1, i64::MAX), NEVER);
    }

    /// The contribution of one allocation per the rule in `crate::spend`,
    /// from scratch.
    fn rule(c: &Charge, ended: Option<i64>, from: i64, t: i64) -> i128 {
        let end = ended.unwrap_or(t);
        let spend = scaled_cost(c.hourly, overlap(c.started, end, from, t));
        let held = if ended.is_none() {
            let age = (t - c.started).max(0);
            (i128::from(c.reserved) * H - i128::from(c.hourly) * i128::from(age)).max(0)
        } else {
            0
        };
        spend + held
    }

    #[test]
    fn contributions_match_the_rule() {
        let cases = [
            Charge::new(100, 7, 1),
            Charge::new(100, 3_000_000, 3_000_000),
            Charge::new(100, 0, 5),
            Charge::new(100, 5, 0),
            Charge::new(-50, 1_000, 1),
        ];
        for c in cases {
            for from in [-100, 0, 100, 150, 10_000] {
                for t in [
                    from + 1,
                    120,
                    5_000,
                    c.held_until,
                    c.held_until.saturating_add(1),
                ] {
                    if t <= from || t == NEVER {
                        continue;
                    }
                    assert_eq!(
                        c.live(from, t, t),
                        rule(&c, None, from, t),
                        "{c:?} {from} {t}"
                    );
                    for e in [from - 10, 90, t - 1, t] {
                        assert_eq!(c.accrued(from, e.min(t)), rule(&c, Some(e), from, t));
                    }
                }
            }
        }
    }
}
