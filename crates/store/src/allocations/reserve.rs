//! The reservation algorithm: a batch of reservations decided in order in
//! one write transaction ([`Tx::decide`]), each seeing the grants before
//! it, with budgets prepared and counted once per team; and
//! [`Store::reserve`], one reservation in a transaction of its own.

use std::collections::hash_map::Entry;
use std::collections::HashMap;

use serde::Serialize;
use serde_json::value::RawValue;
use warden_core::{Door, GpuModel, TeamName};

use super::limits::{check_request, first_exceeded, reserved_micros, Counted};
use super::{AllocationId, AllocationName, AllocationRequest, Denial, Limit, ReserveOutcome};
use crate::audit::NewRecord;
use crate::backend::Tx;
use crate::budget::{held_until, Charge, TeamBudget};
use crate::error::{InputError, StoreError};
use crate::launches::BucketKey;
use crate::spend::scaled_held;
use crate::time::UnixMicros;
use crate::writer::{Op, Written};
use crate::Store;

fn json_error(e: serde_json::Error) -> InputError {
    InputError::Json(e.to_string())
}

/// The `request` of a reservation's audit record. Fields, here and in the
/// payloads below, in name order, as a JSON object's keys are written.
#[derive(Serialize)]
struct RequestJson<'a> {
    door: Door,
    gpu_model: Option<&'a GpuModel>,
    gpus: u32,
    hourly_micros: i64,
    name: &'a AllocationName,
    team: &'a TeamName,
    user: Option<&'a str>,
}

impl<'a> RequestJson<'a> {
    fn of(req: &'a AllocationRequest) -> RequestJson<'a> {
        RequestJson {
            door: req.door,
            gpu_model: req.gpu_model.as_ref(),
            gpus: req.gpus,
            hourly_micros: req.hourly.micros(),
            name: &req.name,
            team: &req.team,
            user: req.user.as_deref(),
        }
    }
}

/// The payload of an `allocation.granted` record.
#[derive(Serialize)]
struct GrantedJson<'a> {
    allocation_id: AllocationId,
    context: &'a RawValue,
    relaunch: bool,
    request: RequestJson<'a>,
}

/// The payload of an `allocation.denied` record.
#[derive(Serialize)]
struct DeniedJson<'a> {
    context: &'a RawValue,
    /// As a JSON value, so its keys are in name order too.
    denial: serde_json::Value,
    message: String,
    request: RequestJson<'a>,
}

/// A reservation to decide inside a write transaction: [`Store::reserve`]'s
/// arguments, borrowed.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Reservation<'a> {
    pub(crate) request: &'a AllocationRequest,
    pub(crate) limits: &'a [Limit],
    pub(crate) now: UnixMicros,
    /// `request.context` as JSON text ([`context_json`]), written before
    /// the transaction so the writer only copies it into the record.
    pub(crate) context: &'a RawValue,
}

/// `req.context` as JSON text (`null` when there is none), for its audit
/// record. Done by the caller, off the writer task, whose time every write
/// of a batch waits for: a decision's context is the largest part of its
/// record.
pub(crate) fn context_json(req: &AllocationRequest) -> Result<Box<RawValue>, InputError> {
    serde_json::value::to_raw_value(&req.context).map_err(json_error)
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

/// The reservations among `ops`, in order.
pub(super) fn reservations_of<'o>(ops: &'o [Op<'o>]) -> Vec<&'o Reservation<'o>> {
    ops.iter()
        .filter_map(|op| match op {
            Op::Reserve(r) => Some(r),
            Op::Audit { .. } => None,
        })
        .collect()
}

/// The live keys and the teams of `reservations`, sorted, without
/// repeats: what [`Tx::decide`] reads by.
pub(super) fn batch_keys<'r>(
    reservations: &[&'r Reservation<'_>],
) -> (Vec<LiveKey<'r>>, Vec<&'r TeamName>) {
    let mut keys: Vec<LiveKey<'_>> = reservations.iter().map(|r| r.key()).collect();
    keys.sort_unstable();
    keys.dedup();
    let mut teams: Vec<&TeamName> = reservations.iter().map(|r| &r.request.team).collect();
    teams.sort_unstable();
    teams.dedup();
    (keys, teams)
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
        let reservations = reservations_of(ops);
        let (keys, teams) = batch_keys(&reservations);
        self.lock_teams(&teams).await?;

        // The reads, in the order of `batch_reads`: on SQLite they were
        // read with `BEGIN`.
        let stored = self.live_ids(&keys).await?;
        let next_id = match reservations.is_empty() {
            true => None,
            false => self.next_allocation_id().await?,
        };
        // Every team's: what a team with only relaunches loads is not
        // written back (nothing of it changes).
        let mut usage = self.load_usage(&teams).await?;
        let mut budgets = self.load_budgets(&teams).await?;
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
            // The team is one of `teams`, so its usage is loaded.
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

        // What is left are writes (and the audit head's read, which they do
        // not touch): on SQLite they go with the commit, in one round trip.
        self.defer_writes();
        let new_ids = self.insert_allocations(&fresh, next_id).await?;
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
                let context = r.context;
                let (kind, payload, outcome) = match verdict {
                    Verdict::Granted { slot, relaunch } => {
                        let allocation_id = match slot {
                            Slot::Stored(id) => id,
                            Slot::New(n) => *new_ids.get(n).ok_or(sqlx::Error::RowNotFound)?,
                        };
                        let payload = serde_json::to_string(&GrantedJson {
                            allocation_id,
                            context,
                            relaunch,
                            request: RequestJson::of(req),
                        });
                        let outcome = ReserveOutcome::Granted {
                            allocation_id,
                            relaunch,
                        };
                        ("allocation.granted", payload, outcome)
                    }
                    Verdict::Denied(denial) => {
                        let payload = serde_json::to_value(&denial).and_then(|denial_json| {
                            serde_json::to_string(&DeniedJson {
                                context,
                                denial: denial_json,
                                message: denial.to_string(),
                                request: RequestJson::of(req),
                            })
                        });
                        ("allocation.denied", payload, ReserveOutcome::Denied(denial))
                    }
                };
                let record = NewRecord {
                    kind: kind.to_owned(),
                    payload: payload.map_err(|e| StoreError::Input(json_error(e)))?,
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
        let context = context_json(req)?;
        let op = Op::Reserve(Reservation {
            request: req,
            limits,
            now,
            context: &context,
        });
        match self.apply_alone(op).await? {
            Written::Reserved(outcome) => Ok(outcome),
            Written::Audited(_) => Err(StoreError::Unanswered),
        }
    }
}

#[cfg(test)]
mod tests {
    use warden_core::Usd;

    use super::*;
    use crate::allocations::Scope;

    /// A payload written field by field must read as JSON written from a
    /// value: keys in name order at every level, compact. (Records written
    /// before these structs came from `json!` values.)
    fn assert_canonical(text: &str) {
        let value: serde_json::Value = serde_json::from_str(text).unwrap();
        assert_eq!(text, value.to_string());
    }

    #[test]
    fn reservation_payloads_are_canonical_json() {
        let req = AllocationRequest {
            door: Door::Kubernetes,
            team: TeamName::parse("ml").unwrap(),
            user: Some("alice".to_owned()),
            name: AllocationName::parse("ml/p-1").unwrap(),
            gpu_model: Some(GpuModel::parse("H100").unwrap()),
            gpus: 2,
            hourly: Usd::from_micros(4_500_000),
            context: Some(
                serde_json::json!({"z": 1, "a": {"y": [1, {"b": 2, "a": 1}], "x": null}}),
            ),
        };
        let context = context_json(&req).unwrap();
        assert_eq!(
            context.get(),
            r#"{"a":{"x":null,"y":[1,{"a":1,"b":2}]},"z":1}"#
        );
        let granted = serde_json::to_string(&GrantedJson {
            allocation_id: AllocationId(7),
            context: &context,
            relaunch: false,
            request: RequestJson::of(&req),
        })
        .unwrap();
        assert_canonical(&granted);
        // The same text as the `json!` value records were written from.
        let request = serde_json::json!({
            "door": req.door, "team": req.team, "user": req.user, "name": req.name,
            "gpu_model": req.gpu_model, "gpus": req.gpus, "hourly_micros": 4_500_000,
        });
        let expected = serde_json::json!({
            "allocation_id": 7, "relaunch": false, "request": request, "context": req.context,
        });
        assert_eq!(granted, expected.to_string());
        let denial = Denial {
            limit: Limit::Gpus {
                scope: Scope::Team,
                max: 1,
            },
            in_use: 0,
            requested: 2,
            max: 1,
            retry_at: None,
        };
        let denied = serde_json::to_string(&DeniedJson {
            context: &context,
            denial: serde_json::to_value(&denial).unwrap(),
            message: denial.to_string(),
            request: RequestJson::of(&AllocationRequest {
                context: None,
                ..req
            }),
        })
        .unwrap();
        assert_canonical(&denied);
    }

    /// On SQLite, batches of reservations under quotas and a budget read
    /// all they need with `BEGIN` (no read runs on its own), and the ids
    /// given before the insert are the rows' ids, new and increasing.
    #[tokio::test]
    async fn sqlite_batches_read_with_begin_and_give_the_rows_ids() {
        use crate::{Write, Written};
        let dir =
            std::env::temp_dir().join(format!("warden-reserve-{}-{}", std::process::id(), line!()));
        std::fs::create_dir_all(&dir).unwrap();
        let store = Store::connect(&format!("sqlite://{}", dir.join("w.db").display()))
            .await
            .unwrap();
        let limits = vec![
            Limit::Gpus {
                scope: Scope::Team,
                max: 20,
            },
            Limit::Budget {
                from: UnixMicros::from_micros(0),
                max: Usd::from_micros(1_000_000_000),
                reservation: Usd::from_micros(1_000_000),
            },
        ];
        let request = |team: &str, name: &str| AllocationRequest {
            door: Door::Kubernetes,
            team: TeamName::parse(team).unwrap(),
            user: Some("alice".to_owned()),
            name: AllocationName::parse(name).unwrap(),
            gpu_model: Some(GpuModel::parse("H100").unwrap()),
            gpus: 1,
            hourly: Usd::from_micros(2_000_000),
            context: None,
        };
        let now = UnixMicros::from_micros(1_700_000_000_000_000);
        let mut granted: Vec<(i64, String)> = Vec::new();
        for round in 0..3 {
            // Queued together: the writer takes them as one batch or a few.
            let writes: Vec<_> = (0..10)
                .map(|n| {
                    let team = if n % 2 == 0 { "ml" } else { "cv" };
                    let name = format!("{team}/p-{round}-{n}");
                    let write = Write::Reserve {
                        request: request(team, &name),
                        limits: limits.clone(),
                    };
                    let store = store.clone();
                    tokio::spawn(async move { (name, store.write(write, now).await.unwrap()) })
                })
                .collect();
            for write in writes {
                let (name, written) = write.await.unwrap();
                match written {
                    Written::Reserved(ReserveOutcome::Granted {
                        allocation_id,
                        relaunch: false,
                    }) => granted.push((allocation_id.0, name)),
                    other => panic!("{name}: {other:?}"),
                }
            }
        }
        // 15 of each team fit its 20 GPUs; a relaunch is granted as itself.
        let again = store
            .write(
                Write::Reserve {
                    request: request("ml", "ml/p-0-0"),
                    limits: limits.clone(),
                },
                now,
            )
            .await
            .unwrap();
        let first = granted
            .iter()
            .find(|(_, name)| name == "ml/p-0-0")
            .unwrap()
            .0;
        assert_eq!(
            again,
            Written::Reserved(ReserveOutcome::Granted {
                allocation_id: AllocationId(first),
                relaunch: true,
            })
        );

        let reads = store.writer_reads().await;
        assert_eq!(reads.run, 0, "{reads:?}");
        assert!(reads.prefetched >= 4 * 4, "{reads:?}");
        let mut live: Vec<(i64, String)> = store
            .list_live(None)
            .await
            .unwrap()
            .into_iter()
            .map(|a| (a.id.0, a.name.as_str().to_owned()))
            .collect();
        live.sort();
        granted.sort();
        assert_eq!(live, granted);
        assert_eq!(live.len(), 30);
        // Ids go on from the highest ever given, even after that row is
        // gone.
        let (last, _) = live[29].clone();
        crate::backend::on_pool!(store, |pool| {
            sqlx::query("DELETE FROM allocations WHERE id = $1")
                .bind(last)
                .execute(pool)
                .await
                .unwrap();
        });
        let after = store
            .reserve(&request("cv", "cv/after"), &limits, now)
            .await
            .unwrap();
        assert_eq!(
            after,
            ReserveOutcome::Granted {
                allocation_id: AllocationId(last + 1),
                relaunch: false,
            }
        );
        store.close().await;
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
