//! The store's maintained summaries (live usage, budget states, launch
//! buckets) against a
//! model that recomputes every answer from scratch, straight from the rules
//! in `src/allocations/` and `src/spend.rs`: a seeded random sequence of
//! reservations (alone and in group-commit batches, through two replicas,
//! with clocks that step back as well as forward), ends (by id and by
//! name) and dropped budget states must get exactly the model's answers.
//! Set `WARDEN_MODEL_SEED` to replay one seed.

use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

use warden_core::{Door, GpuModel, TeamName, Usd};
use warden_store::{
    AllocationId, AllocationName, AllocationRequest, Denial, EndTarget, Limit, ReserveOutcome,
    Scope, Store, UnixMicros, Write, Written,
};

use crate::support::{join_in_order, on_both_backends, Backend, TestDb};

/// µs per hour: the scale of budget amounts.
const H: i128 = 3_600_000_000;
const SECOND: i64 = 1_000_000;
const HOUR: i64 = 3600 * SECOND;

/// SplitMix64: small, seedable, good enough to pick test cases.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }

    fn pick<T: Clone>(&mut self, items: &[T]) -> T {
        items[usize::try_from(self.below(items.len() as u64)).unwrap()].clone()
    }

    fn between(&mut self, lo: i64, hi: i64) -> i64 {
        lo + i64::try_from(self.below(u64::try_from(hi - lo + 1).unwrap())).unwrap()
    }
}

/// An allocation as the model keeps it.
#[derive(Debug, Clone)]
struct Row {
    id: AllocationId,
    req: AllocationRequest,
    started: i64,
    ended: Option<i64>,
    reserved: i64,
}

/// Live usage in a limit's scope, counted from scratch.
#[derive(Default)]
struct Counted {
    gpus: i64,
    model_gpus: i64,
    live: i64,
    hourly: i64,
}

/// A launch bucket: team, per-user (with the user), max, per in µs.
type BucketKey = (TeamName, Option<Option<String>>, u32, i64);

#[derive(Default)]
struct Model {
    rows: Vec<Row>,
    /// When each launch bucket is full again, × its max (exact).
    full_at: HashMap<BucketKey, i128>,
}

impl Model {
    fn live_row(&self, req: &AllocationRequest) -> Option<&Row> {
        self.rows.iter().find(|r| {
            r.ended.is_none()
                && r.req.door == req.door
                && r.req.team == req.team
                && r.req.name == req.name
        })
    }

    fn counted(&self, req: &AllocationRequest, scope: Scope, model: Option<&GpuModel>) -> Counted {
        let mut c = Counted::default();
        for r in &self.rows {
            let in_scope = r.req.team == req.team
                && (scope == Scope::Team || r.req.user == req.user)
                && r.ended.is_none();
            if in_scope {
                c.gpus += i64::from(r.req.gpus);
                if model.is_some() && r.req.gpu_model.as_ref() == model {
                    c.model_gpus += i64::from(r.req.gpus);
                }
                c.live += 1;
                c.hourly += r.req.hourly.micros();
            }
        }
        c
    }

    /// `spend(team, from, now) + held(team, now)`, scaled, as `spend.rs`
    /// states it.
    fn budget_used(&self, team: &TeamName, from: i64, now: i64) -> i128 {
        let mut used = 0;
        for r in self.rows.iter().filter(|r| &r.req.team == team) {
            let h = i128::from(r.req.hourly.micros());
            if from < now {
                let end = r.ended.unwrap_or(now).min(now);
                used += h * i128::from((end - r.started.max(from)).max(0));
            }
            if r.ended.is_none() {
                let age = i128::from((now - r.started).max(0));
                used += (i128::from(r.reserved) * H - h * age).max(0);
            }
        }
        used
    }

    fn bucket(req: &AllocationRequest, scope: Scope, max: u32, per: Duration) -> BucketKey {
        let user = (scope == Scope::User).then(|| req.user.clone());
        let per = i64::try_from(per.as_micros()).unwrap();
        (req.team.clone(), user, max, per)
    }

    /// When the bucket next holds a launch, if it holds none at `now`
    /// (`Some(None)`: never). The bucket holds
    /// `max - (full_at - now) × max / per` launches, `max` once full.
    fn launch_denied(&self, key: &BucketKey, now: i64) -> Option<Option<UnixMicros>> {
        let (_, _, max, per) = key;
        if *max == 0 {
            return Some(None);
        }
        let (max, per) = (i128::from(*max), i128::from(*per));
        let full_at = *self.full_at.get(key)?;
        let holds = |t: i128| full_at <= t * max || max * per - (full_at - t * max) >= per;
        if holds(now.into()) {
            return None;
        }
        // The first whole µs at which it holds one: search, to stay apart
        // from the store's closed form.
        // It is full (so holds one) from full_at on.
        let (mut lo, mut hi) = (i128::from(now), full_at.div_euclid(max) + 1);
        while lo + 1 < hi {
            let mid = (lo + hi) / 2;
            if holds(mid) {
                hi = mid
            } else {
                lo = mid
            }
        }
        Some(Some(UnixMicros::from_micros(i64::try_from(hi).unwrap())))
    }

    fn decide(&self, req: &AllocationRequest, limits: &[Limit], now: i64) -> Option<Denial> {
        for limit in limits {
            let gpus = i64::from(req.gpus);
            let (in_use, requested, max) = match limit {
                Limit::ModelGpus { model, scope, max } => {
                    if req.gpu_model.as_ref() != Some(model) {
                        continue;
                    }
                    let c = self.counted(req, *scope, Some(model));
                    (c.model_gpus, gpus, i64::from(*max))
                }
                Limit::Gpus { scope, max } => {
                    (self.counted(req, *scope, None).gpus, gpus, i64::from(*max))
                }
                Limit::LiveAllocations { scope, max } => {
                    (self.counted(req, *scope, None).live, 1, i64::from(*max))
                }
                Limit::HourlyCost { scope, max } => (
                    self.counted(req, *scope, None).hourly,
                    req.hourly.micros(),
                    max.micros(),
                ),
                Limit::Launches { scope, max, per } => {
                    let key = Model::bucket(req, *scope, *max, *per);
                    if let Some(retry_at) = self.launch_denied(&key, now) {
                        return Some(Denial {
                            limit: limit.clone(),
                            in_use: i64::from(*max),
                            requested: 1,
                            max: i64::from(*max),
                            retry_at,
                        });
                    }
                    continue;
                }
                Limit::Budget {
                    from,
                    max,
                    reservation,
                } => {
                    let used = self.budget_used(&req.team, from.micros(), now);
                    let r = reservation.micros();
                    if r > 0 && used + i128::from(r) * H > i128::from(max.micros()) * H {
                        return Some(Denial {
                            limit: limit.clone(),
                            in_use: i64::try_from(used.div_euclid(H)).unwrap_or(i64::MAX),
                            requested: r,
                            max: max.micros(),
                            retry_at: None,
                        });
                    }
                    continue;
                }
            };
            if requested > 0 && in_use + requested > max {
                return Some(Denial {
                    limit: limit.clone(),
                    in_use,
                    requested,
                    max,
                    retry_at: None,
                });
            }
        }
        None
    }

    /// Applies the store's answer after checking it against the model's.
    fn reserve(
        &mut self,
        req: &AllocationRequest,
        limits: &[Limit],
        now: i64,
        got: &ReserveOutcome,
        step: &str,
    ) {
        if let Some(live) = self.live_row(req) {
            let want = ReserveOutcome::Granted {
                allocation_id: live.id,
                relaunch: true,
            };
            assert_eq!(got, &want, "{step}: relaunch of {req:?}");
            return;
        }
        match (self.decide(req, limits, now), got) {
            (
                None,
                ReserveOutcome::Granted {
                    allocation_id,
                    relaunch: false,
                },
            ) => {
                let reserved = limits
                    .iter()
                    .filter_map(|l| match l {
                        Limit::Budget { reservation, .. } => Some(reservation.micros()),
                        _ => None,
                    })
                    .fold(0, i64::max);
                // Each distinct bucket gives one launch.
                let mut taken = BTreeSet::new();
                for limit in limits {
                    if let Limit::Launches { scope, max, per } = limit {
                        let key = Model::bucket(req, *scope, *max, *per);
                        if taken.insert(format!("{key:?}")) {
                            let (m, p) = (i128::from(*max), i128::from(key.3));
                            let full = self.full_at.get(&key).copied().unwrap_or(i128::MIN);
                            self.full_at.insert(key, full.max(i128::from(now) * m) + p);
                        }
                    }
                }
                self.rows.push(Row {
                    id: *allocation_id,
                    req: req.clone(),
                    started: now,
                    ended: None,
                    reserved,
                });
            }
            (Some(want), ReserveOutcome::Denied(denial)) => {
                assert_eq!(denial, &want, "{step}: denial of {req:?} under {limits:?}");
            }
            (want, got) => {
                panic!("{step}: want {want:?}, got {got:?} for {req:?} under {limits:?}")
            }
        }
    }

    /// Ends what `target` names at `now`; returns the ids.
    fn end(&mut self, target: &EndTarget, now: i64) -> BTreeSet<AllocationId> {
        let mut ended = BTreeSet::new();
        for r in self.rows.iter_mut().filter(|r| r.ended.is_none()) {
            let hit = match target {
                EndTarget::Id(id) => r.id == *id,
                EndTarget::Name { door, name } => r.req.door == *door && r.req.name == *name,
            };
            if hit {
                r.ended = Some(now);
                ended.insert(r.id);
            }
        }
        ended
    }
}

/// What a random step asks for.
struct Gen {
    rng: Rng,
    now: i64,
}

impl Gen {
    /// An instant near `now`: mostly now, sometimes a little behind or
    /// ahead (another replica's clock).
    fn jittered(&mut self) -> i64 {
        match self.rng.below(10) {
            0 => self.now - self.rng.between(1, 5 * SECOND),
            1 => self.now + self.rng.between(1, 5 * SECOND),
            2 => self.now - self.rng.between(1, HOUR),
            _ => self.now,
        }
    }

    fn request(&mut self) -> AllocationRequest {
        let team = self.rng.pick(&["ml", "cv"]);
        let user = self.rng.pick(&[None, Some("alice"), Some("bob")]);
        let model = self.rng.pick(&[None, Some("H100"), Some("A100")]);
        let door = self.rng.pick(&[Door::Skypilot, Door::Vast]);
        let name = format!("c{}", self.rng.below(40));
        let hourly = self
            .rng
            .pick(&[0, 1, 7, 999_999, 3_000_000, 24_000_000, 123_456_789]);
        AllocationRequest {
            door,
            team: TeamName::parse(team).unwrap(),
            user: user.map(str::to_owned),
            name: AllocationName::parse(&name).unwrap(),
            gpu_model: model.map(|m| GpuModel::parse(m).unwrap()),
            gpus: u32::try_from(self.rng.below(5)).unwrap(),
            hourly: Usd::from_micros(hourly),
            context: None,
        }
    }

    /// Limits for `req` at `now`; budget maxima are drawn around what the
    /// model says the budget counts, so that decisions fall on both sides
    /// of the line, down to the fraction of a micro-dollar.
    fn limits(&mut self, model: &Model, req: &AllocationRequest, now: i64) -> Vec<Limit> {
        let mut limits = Vec::new();
        let scope = |rng: &mut Rng| rng.pick(&[Scope::Team, Scope::User]);
        if self.rng.chance(30) {
            let model_name = self.rng.pick(&["H100", "A100"]);
            limits.push(Limit::ModelGpus {
                model: GpuModel::parse(model_name).unwrap(),
                scope: scope(&mut self.rng),
                max: u32::try_from(self.rng.below(12)).unwrap(),
            });
        }
        if self.rng.chance(30) {
            limits.push(Limit::Gpus {
                scope: scope(&mut self.rng),
                max: u32::try_from(self.rng.below(16)).unwrap(),
            });
        }
        if self.rng.chance(20) {
            limits.push(Limit::LiveAllocations {
                scope: scope(&mut self.rng),
                max: u32::try_from(self.rng.below(8)).unwrap(),
            });
        }
        // A few fixed launch limits, so buckets are shared and run dry;
        // windows that do not divide by max make retry times round.
        for _ in 0..self.rng.pick(&[0, 0, 0, 1, 1, 2]) {
            let (scope, max, per) = self.rng.pick(&[
                (Scope::User, 2, 10 * SECOND + 1),
                (Scope::User, 3, 10),
                (Scope::Team, 3, HOUR + 1),
                (Scope::Team, 4, 300 * SECOND),
                (Scope::User, 0, SECOND),
            ]);
            limits.push(Limit::Launches {
                scope,
                max,
                per: Duration::from_micros(u64::try_from(per).unwrap()),
            });
        }
        // Sometimes a limit twice: it still counts once.
        if !limits.is_empty() && self.rng.chance(10) {
            let again = self.rng.pick(&limits);
            limits.push(again);
        }
        if self.rng.chance(20) {
            limits.push(Limit::HourlyCost {
                scope: scope(&mut self.rng),
                max: Usd::from_micros(self.rng.between(0, 200_000_000)),
            });
        }
        let budgets = self.rng.below(4);
        for _ in 0..budgets {
            let t = UnixMicros::from_micros(now);
            let from = match self.rng.below(6) {
                0 | 1 => t.start_of_day().micros(),
                2 => t.start_of_month().micros(),
                3 => now - self.rng.between(0, 30 * HOUR),
                4 => now + self.rng.between(0, HOUR),
                _ => self.now - 3 * HOUR,
            };
            let hourly = req.hourly.micros();
            let reservation = self.rng.pick(&[
                0,
                1,
                5,
                3_000_000,
                hourly,
                hourly / 2,
                50_000_000,
                i64::MAX / 4,
            ]);
            let used = model.budget_used(&req.team, from, now);
            let line = used + i128::from(reservation) * H;
            // The largest max that denies is ceil(line / H) - 1.
            let tight = i64::try_from((line + H - 1).div_euclid(H)).unwrap_or(i64::MAX);
            let max = match self.rng.below(5) {
                0 => tight.saturating_sub(1),
                1 => tight,
                2 => tight.saturating_add(1),
                3 => self.rng.between(0, 500_000_000),
                _ => i64::MAX / 2,
            };
            limits.push(Limit::Budget {
                from: UnixMicros::from_micros(from),
                max: Usd::from_micros(max.max(0)),
                reservation: Usd::from_micros(reservation),
            });
        }
        // Shuffle, so that the order of limits varies.
        for i in (1..limits.len()).rev() {
            let j = usize::try_from(self.rng.below(i as u64 + 1)).unwrap();
            limits.swap(i, j);
        }
        limits
    }

    fn step_time(&mut self) {
        self.now += match self.rng.below(12) {
            0 => 0,
            1 => 1,
            2 => self.rng.between(1, 1000),
            3 | 4 => self.rng.between(1, 60 * SECOND),
            5 | 6 => self.rng.between(1, 30 * 60 * SECOND),
            7 => self.rng.between(HOUR, 3 * HOUR),
            8 => self.rng.between(10 * HOUR, 26 * HOUR),
            9 => -self.rng.between(1, 10 * SECOND),
            _ => self.rng.between(1, 10 * 60 * SECOND),
        };
    }
}

async fn replay(db: &TestDb, seed: u64, steps: usize) {
    let replicas = [db.store().await, db.store().await];
    let mut model = Model::default();
    let mut gen = Gen {
        rng: Rng(seed),
        // 2026-11-30T20:00:00Z: a month ends during the run.
        now: 1_796_068_800 * SECOND,
    };
    for step in 0..steps {
        let at = format!("{:?} seed {seed} step {step}", db.backend);
        let store: &Store = &replicas[usize::from(gen.rng.chance(50))];
        match gen.rng.below(20) {
            0..=8 => {
                let now = gen.jittered();
                let req = gen.request();
                let limits = gen.limits(&model, &req, now);
                let got = store
                    .reserve(&req, &limits, UnixMicros::from_micros(now))
                    .await
                    .unwrap();
                model.reserve(&req, &limits, now, &got, &at);
            }
            9..=12 => {
                // A batch: writes queued in order, so they commit in that
                // order, in one or a few transactions; each decided as if
                // alone after the ones before. Limits are drawn against
                // the model before the batch, so their lines are only
                // roughly tight.
                let n = usize::try_from(gen.rng.between(2, 12)).unwrap();
                let mut writes = Vec::new();
                for _ in 0..n {
                    let now = gen.jittered();
                    let req = gen.request();
                    let limits = gen.limits(&model, &req, now);
                    writes.push((req, limits, now));
                }
                let answers = join_in_order(
                    writes
                        .iter()
                        .map(|(req, limits, now)| {
                            let write = Write::Reserve {
                                request: req.clone(),
                                limits: limits.clone(),
                            };
                            store.write(write, UnixMicros::from_micros(*now))
                        })
                        .collect(),
                )
                .await;
                for ((req, limits, now), answer) in writes.iter().zip(answers) {
                    let Written::Reserved(got) = answer.unwrap() else {
                        panic!("{at}: not a reservation");
                    };
                    model.reserve(req, limits, *now, &got, &at);
                }
            }
            13..=15 => {
                let now = gen.jittered();
                let live: Vec<&Row> = model.rows.iter().filter(|r| r.ended.is_none()).collect();
                if live.is_empty() {
                    continue;
                }
                let row = gen.rng.pick(&live).clone();
                let target = if gen.rng.chance(50) {
                    EndTarget::Id(row.id)
                } else {
                    EndTarget::Name {
                        door: row.req.door,
                        name: row.req.name.clone(),
                    }
                };
                let got: BTreeSet<AllocationId> = store
                    .end(&target, UnixMicros::from_micros(now))
                    .await
                    .unwrap()
                    .into_iter()
                    .map(|a| a.id)
                    .collect();
                assert_eq!(got, model.end(&target, now), "{at}: end {target:?}");
            }
            16 => {
                // Budget states are a cache of the allocations: dropping
                // them (all, or the periods only) must change no answer.
                if gen.rng.chance(50) {
                    db.exec("DELETE FROM budget_periods").await;
                } else {
                    db.exec("DELETE FROM budget_periods; DELETE FROM budget_teams")
                        .await;
                }
            }
            _ => gen.step_time(),
        }
    }
    assert_eq!(
        db.usage_mismatches().await,
        0,
        "{:?} seed {seed}",
        db.backend
    );
    let report = replicas[0].verify_audit().await.unwrap();
    assert!(report.is_intact(), "{report:?}");
    // The run must have exercised what it is meant to.
    let ended = model.rows.iter().filter(|r| r.ended.is_some()).count();
    assert!(
        ended > 10 && model.rows.len() > 50,
        "{} rows, {ended} ended",
        model.rows.len()
    );
}

fn seeds() -> Vec<u64> {
    match std::env::var("WARDEN_MODEL_SEED") {
        Ok(seed) => vec![seed.parse().expect("WARDEN_MODEL_SEED is a number")],
        Err(_) => vec![1, 2, 3],
    }
}

on_both_backends! {
    /// Seeded random runs; every answer must equal the model's.
    async fn summaries_answer_like_a_recomputation(db: &TestDb) {
        let steps = if db.backend == Backend::Sqlite { 500 } else { 300 };
        for seed in seeds() {
            let fresh = TestDb::new(db.backend).await;
            replay(&fresh, seed, steps).await;
        }
    }
}
