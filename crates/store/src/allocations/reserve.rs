//! The reservation algorithm: a batch of reservations decided in order in
//! one write transaction ([`Tx::decide`]), each seeing the grants before
//! it, with budgets prepared and counted once per team; and
//! [`Store::reserve`], one reservation in a transaction of its own.

use std::collections::hash_map::Entry;
use std::collections::HashMap;

use serde_json::json;
use warden_core::TeamName;

use super::limits::{check_request, first_exceeded, reserved_micros, Counted};
use super::{AllocationId, AllocationRequest, Denial, Limit, ReserveOutcome};
use crate::audit::NewRecord;
use crate::backend::Tx;
use crate::budget::{held_until, Charge, TeamBudget};
use crate::error::StoreError;
use crate::launches::BucketKey;
use crate::spend::scaled_held;
use crate::time::UnixMicros;
use crate::writer::{Op, Written};
use crate::Store;

fn request_json(req: &AllocationRequest) -> serde_json::Value {
    json!({
        "door": req.door,
        "team": req.team,
        "user": req.user,
        "name": req.name,
        "gpu_model": req.gpu_model,
        "gpus": req.gpus,
        "hourly_micros": req.hourly.micros(),
    })
}

/// A reservation to decide inside a write transaction: [`Store::reserve`]'s
/// arguments, borrowed.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Reservation<'a> {
    pub(crate) request: &'a AllocationRequest,
    pub(crate) limits: &'a [Limit],
    pub(crate) now: UnixMicros,
}

/// The identity of a live allocation: door, team, name.
pub(super) type LiveKey<'a> = (&'a str, &'a str, &'a str);

impl Reservation<'_> {
    pub(super) fn key(&self) -> LiveKey<'_> {
        let req = self.request;
        (req.door.as_str(), req.team.as_str(), req.name.as_str())
    }

    /// `held_until_us` of the allocation it grants: see [`crate::budget`].
    pub(super) fn held_until(&self) -> i64 {
        held_until(
            self.now.micros(),
            self.request.hourly.micros(),
            reserved_micros(self.limits),
        )
    }
}

/// A grant earlier in the batch, not yet inserted, as budgets count it.
#[derive(Debug, Clone, Copy)]
struct BatchGrant {
    hourly_micros: i64,
    started: UnixMicros,
    reserved_micros: i64,
}

impl BatchGrant {
    fn charge(&self) -> Charge {
        Charge::new(
            self.started.micros(),
            self.hourly_micros,
            self.reserved_micros,
        )
    }
}

/// Where a live allocation's id comes from while a batch is decided.
#[derive(Debug, Clone, Copy)]
enum Slot {
    /// Live before the batch.
    Stored(AllocationId),
    /// Granted earlier in the batch: the n-th row to insert.
    New(usize),
}

enum Verdict {
    Granted { slot: Slot, relaunch: bool },
    Denied(Denial),
}

/// An op of a batch while its reservations are decided.
enum Pending<'o> {
    Audit(NewRecord),
    Reservation(&'o Reservation<'o>, Verdict),
}

impl Tx {
    /// Decides the reservations of `ops` in order, as if each ran alone
    /// after the ones before it, and returns every op's audit record to
    /// append (in this transaction), with the decision of each reservation.
    ///
    /// All teams are locked first (see [`Tx::lock_teams`]); each team's
    /// usage summary and budget state are read once after that and kept up
    /// to date in memory as the batch grants, so a reservation sees every
    /// grant of the batch before it; granted rows are inserted, and the
    /// summaries written back, together at the end.
    pub(crate) async fn decide<'o>(
        &mut self,
        ops: &'o [Op<'o>],
    ) -> Result<Vec<(NewRecord, Option<ReserveOutcome>)>, StoreError> {
        let reservations: Vec<&Reservation<'_>> = ops
            .iter()
            .filter_map(|op| match op {
                Op::Reserve(r) => Some(r),
                Op::Audit { .. } => None,
            })
            .collect();
        let teams: Vec<&TeamName> = reservations.iter().map(|r| &r.request.team).collect();
        self.lock_teams(&teams).await?;

        let mut keys: Vec<LiveKey<'_>> = reservations.iter().map(|r| r.key()).collect();
        keys.sort_unstable();
        keys.dedup();
        let stored = self.live_ids(&keys).await?;
        let mut live: HashMap<LiveKey<'_>, Slot> = HashMap::with_capacity(keys.len());
        for (id, door, team, name) in &stored {
            live.insert(
                (door.as_str(), team.as_str(), name.as_str()),
                Slot::Stored(AllocationId(*id)),
            );
        }

        // Usage is needed for the teams of reservations not already live.
        let undecided: Vec<&Reservation<'_>> = reservations
            .iter()
            .copied()
            .filter(|r| !live.contains_key(&r.key()))
            .collect();
        let mut needed: Vec<&TeamName> = undecided.iter().map(|r| &r.request.team).collect();
        needed.sort_unstable();
        needed.dedup();
        let mut usage = self.load_usage(&needed).await?;
        let mut budgets = self.load_budgets(&needed).await?;
        self.prepare_budgets(&needed, &undecided, &mut budgets)
            .await?;
        let mut bucket_keys: Vec<BucketKey> = Vec::new();
        for r in &undecided {
            for key in r.limits.iter().filter_map(|l| BucketKey::of(r.request, l)) {
                if !bucket_keys.contains(&key) {
                    bucket_keys.push(key);
                }
            }
        }
        let mut buckets = self.load_buckets(&bucket_keys).await?;
        let mut fresh: Vec<&Reservation<'_>> = Vec::new();
        let mut batch_grants: HashMap<&str, Vec<BatchGrant>> = HashMap::new();
        let mut pending: Vec<Pending<'o>> = Vec::with_capacity(ops.len());
        for op in ops {
            let r = match op {
                Op::Audit { kind, payload, at } => {
                    pending.push(Pending::Audit(NewRecord {
                        kind: (*kind).to_owned(),
                        payload: (*payload).to_owned(),
                        at: *at,
                    }));
                    continue;
                }
                Op::Reserve(r) => r,
            };
            if let Some(&slot) = live.get(&r.key()) {
                let verdict = Verdict::Granted {
                    slot,
                    relaunch: true,
                };
                pending.push(Pending::Reservation(r, verdict));
                continue;
            }
            let req = r.request;
            let team_name = req.team.as_str();
            let budget_state = budgets.get_mut(team_name);
            let used = self
                .budgets_used(r, budget_state, batch_grants.get(team_name))
                .await?;
            let budget_used = |from: UnixMicros| {
                used.iter()
                    .find(|(f, _)| *f == from)
                    .map_or(0, |(_, used)| *used)
            };
            // The team is one of `needed`, so its usage is loaded.
            let team_usage = usage.entry(team_name).or_default();
            let (team, user) = team_usage.of(req.user.as_deref(), req.gpu_model.as_ref());
            let counted = Counted {
                team,
                user,
                budget_used: &budget_used,
                launch_denied: &|limit| buckets.denies(req, limit, r.now),
            };
            let verdict = match first_exceeded(req, r.limits, &counted) {
                Some(denial) => Verdict::Denied(denial),
                None => {
                    team_usage.grant(req)?;
                    buckets.take(req, r.limits, r.now);
                    let grant = BatchGrant {
                        hourly_micros: req.hourly.micros(),
                        started: r.now,
                        reserved_micros: reserved_micros(r.limits),
                    };
                    if let Some(state) = budgets.get_mut(team_name) {
                        state.grant(&req.team, grant.charge())?;
                    }
                    batch_grants.entry(team_name).or_default().push(grant);
                    let slot = Slot::New(fresh.len());
                    live.insert(r.key(), slot);
                    fresh.push(r);
                    Verdict::Granted {
                        slot,
                        relaunch: false,
                    }
                }
            };
            pending.push(Pending::Reservation(r, verdict));
        }

        let new_ids = self.insert_allocations(&fresh).await?;
        // What is left are writes (and the audit head's read, which they do
        // not touch): on SQLite they go with the commit, in one round trip.
        self.defer_writes();
        self.save_usage(usage.iter().map(|(team, u)| (*team, u)))
            .await?;
        self.save_budgets(budgets.iter_mut().map(|(team, b)| (*team, b)))
            .await?;
        self.save_buckets(&buckets).await?;
        pending
            .into_iter()
            .map(|p| {
                let (r, verdict) = match p {
                    Pending::Audit(record) => return Ok((record, None)),
                    Pending::Reservation(r, verdict) => (r, verdict),
                };
                let req = r.request;
                let context = req.context.as_ref().unwrap_or(&serde_json::Value::Null);
                let (kind, payload, outcome) = match verdict {
                    Verdict::Granted { slot, relaunch } => {
                        let allocation_id = match slot {
                            Slot::Stored(id) => id,
                            Slot::New(n) => *new_ids.get(n).ok_or(sqlx::Error::RowNotFound)?,
                        };
                        let payload = json!({
                            "allocation_id": allocation_id,
                            "relaunch": relaunch,
                            "request": request_json(req),
                            "context": context,
                        });
                        let outcome = ReserveOutcome::Granted {
                            allocation_id,
                            relaunch,
                        };
                        ("allocation.granted", payload, outcome)
                    }
                    Verdict::Denied(denial) => {
                        let payload = json!({
                            "request": request_json(req),
                            "denial": &denial,
                            "message": denial.to_string(),
                            "context": context,
                        });
                        ("allocation.denied", payload, ReserveOutcome::Denied(denial))
                    }
                };
                let record = NewRecord {
                    kind: kind.to_owned(),
                    payload: payload.to_string(),
                    at: r.now,
                };
                Ok((record, Some(outcome)))
            })
            .collect()
    }

    /// Gets the budget states of `needed` ready for the checks of
    /// `undecided` (the batch's reservations not already live): for each
    /// team with a budget to check from before its `now`, builds the state
    /// if the team has none, or moves it to the latest such `now`, then adds
    /// the periods it lacks. Runs before anything is granted.
    async fn prepare_budgets<'t>(
        &mut self,
        needed: &[&'t TeamName],
        undecided: &[&Reservation<'_>],
        budgets: &mut HashMap<&'t str, TeamBudget>,
    ) -> Result<(), StoreError> {
        for &team in needed {
            let mut latest: Option<i64> = None;
            let mut froms: Vec<i64> = Vec::new();
            for r in undecided.iter().filter(|r| r.request.team == *team) {
                let now = r.now.micros();
                for limit in r.limits {
                    if let Limit::Budget { from, .. } = limit {
                        if from.micros() < now {
                            froms.push(from.micros());
                            latest = Some(latest.map_or(now, |l| l.max(now)));
                        }
                    }
                }
            }
            let Some(latest) = latest else { continue };
            let state = match budgets.entry(team.as_str()) {
                Entry::Occupied(state) => {
                    let state = state.into_mut();
                    self.advance_budget(team, state, latest).await?;
                    state
                }
                Entry::Vacant(slot) => slot.insert(self.build_budget(team, latest).await?),
            };
            froms.sort_unstable();
            froms.dedup();
            for from in froms {
                if !state.has_period(from) {
                    self.add_budget_period(team, state, from, latest).await?;
                }
            }
        }
        Ok(())
    }

    /// For each distinct `from` of `r`'s budget limits, what that budget
    /// counts already at `r.now` (scaled as in [`crate::spend`]): spend since
    /// `from` and held reservations, of the stored allocations and of the
    /// team's grants earlier in this batch. From the team's budget `state`
    /// (prepared for `r` by [`Tx::prepare_budgets`], and counting those
    /// grants) when `from` is before `r.now`; otherwise only held
    /// reservations count, read from the team's live allocations and
    /// `batch`, the batch's grants. Empty, and no query, when `r` has no
    /// budget limit.
    async fn budgets_used(
        &mut self,
        r: &Reservation<'_>,
        state: Option<&mut TeamBudget>,
        batch: Option<&Vec<BatchGrant>>,
    ) -> Result<Vec<(UnixMicros, i128)>, StoreError> {
        let mut froms: Vec<UnixMicros> = r
            .limits
            .iter()
            .filter_map(|limit| match limit {
                Limit::Budget { from, .. } => Some(*from),
                _ => None,
            })
            .collect();
        if froms.is_empty() {
            return Ok(Vec::new());
        }
        froms.sort_unstable();
        froms.dedup();
        let (team, now) = (&r.request.team, r.now);
        let (past, future): (Vec<UnixMicros>, Vec<UnixMicros>) =
            froms.into_iter().partition(|from| *from < now);
        let mut used = Vec::with_capacity(past.len() + future.len());
        if !past.is_empty() {
            let state = state.ok_or_else(|| StoreError::Corrupt {
                what: format!("budget state of team `{team}`"),
                detail: "it was not prepared".to_owned(),
            })?;
            let micros: Vec<i64> = past.iter().map(|f| f.micros()).collect();
            let counted = self.budget_used(team, state, &micros, now.micros()).await?;
            used.extend(past.into_iter().zip(counted));
        }
        if !future.is_empty() {
            // Nothing is spent since a start at or after `now`.
            let batch = batch.map_or(&[][..], Vec::as_slice);
            let held = batch
                .iter()
                .map(|g| scaled_held(g.hourly_micros, g.started, g.reserved_micros, now))
                .fold(self.scaled_held(team, now).await?, i128::saturating_add);
            used.extend(future.into_iter().map(|from| (from, held)));
        }
        Ok(used)
    }
}

impl Store {
    /// Checks `limits` (in order) against the live allocations of the
    /// request's team and, if none would be exceeded, records the allocation
    /// as live. Either way an audit record (`allocation.granted` or
    /// `allocation.denied`) is written in the same transaction, so a
    /// decision is never answered without its record.
    ///
    /// Exact under concurrency: the check and the insert are one
    /// transaction, serialized per team on PostgreSQL (any number of
    /// replicas) and per database on SQLite.
    ///
    /// Idempotent per (door, team, name): if that allocation is already
    /// live, the answer is `Granted` with its id and `relaunch: true`, and
    /// nothing new is counted (limits are not re-checked; the stored
    /// allocation is not changed).
    ///
    /// Runs in a transaction of its own; [`Store::write`] with
    /// [`Write::Reserve`](crate::Write::Reserve) decides the same way, committed together with
    /// other waiting writes, for throughput.
    pub async fn reserve(
        &self,
        req: &AllocationRequest,
        limits: &[Limit],
        now: UnixMicros,
    ) -> Result<ReserveOutcome, StoreError> {
        check_request(req, limits)?;
        let op = Op::Reserve(Reservation {
            request: req,
            limits,
            now,
        });
        match self.apply_alone(op).await? {
            Written::Reserved(outcome) => Ok(outcome),
            Written::Audited(_) => Err(StoreError::Unanswered),
        }
    }
}
