//! Group commit: the store's writer task commits many writes in one
//! transaction.
//!
//! [`Store::write`] queues a [`Write`] for the task and waits for its
//! answer. The task takes the first waiting write and every write queued
//! behind it, up to [`MAX_BATCH`], applies them in arrival order in one
//! write transaction, commits, and only then answers each caller. The costs
//! paid per transaction (the commit's flush to disk, the round trips of
//! `BEGIN` and `COMMIT`, the audit head's read and update, the locks) are
//! then paid once per batch: a batch of reservations reads each team's usage
//! once (one statement for all teams on PostgreSQL) and inserts all granted
//! rows and all audit records with one statement each (PostgreSQL binds
//! whole columns as arrays; SQLite takes a multi-row `VALUES` list padded
//! to a power of two rows). Hashes are computed in Rust. On SQLite, where
//! every statement is a round trip to the connection's worker thread, the
//! batch runs on the store's one writer connection in two round trips
//! whatever its size, when its teams' budget states need no rebuilding:
//! its reads (the audit head, the live allocations of its keys, the next
//! allocation id, its teams' usage summaries and budget states) go with
//! `BEGIN` ([`batch_reads`](crate::allocations::batch_reads)), and its
//! writes (the allocations, with ids given from that next id, the
//! summaries, the audit records and head) go with the `COMMIT`
//! ([`Tx::defer_writes`](crate::backend)).
//!
//! Arrival order is the order in which [`Store::write`] calls got their
//! place in the queue. Each [`Store`] (each replica) has one writer task;
//! replicas' batches serialize with each other through the database locks
//! below, like any two transactions.
//!
//! # What it guarantees
//!
//! - **The same answers as one transaction per write.** A batch decides its
//!   writes in arrival order as if each ran alone after the ones before it:
//!   a reservation sees the grants of the reservations before it in the
//!   batch, so quotas stay exact; audit records (a [`Write::Audit`]'s, or a
//!   reservation's `allocation.granted`/`allocation.denied`) are chained in
//!   arrival order. Across batches, replicas and the one-call methods
//!   ([`Store::reserve`], [`Store::end`], ...) the locking is the same as
//!   for one reservation: on PostgreSQL the batch first locks every team it
//!   reserves for (advisory locks in key order, `Tx::lock_teams`), reads
//!   and inserts, and locks the audit head row last, just before appending
//!   its records: the order the one-call methods use, so replicas stay
//!   exact and never deadlock, and the head, which every batch of every
//!   replica needs, is held for the shortest time. On SQLite the batch
//!   holds the database's write lock (`BEGIN IMMEDIATE`) throughout.
//! - **Audit before answer.** `Ok` comes back only after the transaction
//!   holding the write and its audit record committed.
//! - **All or nothing, fail closed.** If the batch's transaction fails, it
//!   is tried once more when the failure is contention
//!   ([`StoreError::is_retryable`]); if it fails again, or for any other
//!   reason, every write of the batch is answered with the error and none of
//!   it is recorded: nothing is granted. The next batch starts afresh.
//! - **An outage is answered within the timeout.** When the database cannot
//!   be reached ([`StoreError::Unreachable`], after the store's connection
//!   timeout), the batch is not retried, and the writes that queued while it
//!   waited are answered with the same error at once rather than each
//!   waiting out the timeout in turn.
//! - **Bad input fails alone.** A write the store cannot accept (an invalid
//!   audit kind, a negative price) is refused by [`Store::write`] before it
//!   is queued, so it never fails the batch of others.
//!
//! # Cancellation
//!
//! Dropping the future of [`Store::write`] never disturbs a batch. Dropped
//! before its write was queued (waiting for room in a full queue), nothing
//! is recorded. Dropped after, **the write is still committed** with its
//! batch and its answer discarded: a caller that gives up (say, on a
//! timeout) cannot tell whether its write was recorded and must not assume
//! it was not; a reservation granted that way stays live until ended, like
//! one whose answer was lost on the network.
//!
//! # Lifetime
//!
//! The task is spawned by [`Store::connect`] on the caller's tokio runtime
//! and shared by all clones of the [`Store`]. It stops when the last clone
//! is dropped, after committing what was queued, or on [`Store::close`],
//! which also waits for it; writes after that fail with
//! [`StoreError::Closed`]. It also ends with its runtime: use the store on
//! the runtime that connected it.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use serde::Serialize;
use serde_json::value::RawValue;
use tokio::sync::{mpsc, oneshot, Mutex, Notify};
use tokio::task::JoinHandle;

use crate::allocations::{batch_reads, check_request, context_json, Reservation};
use crate::audit::check_kind;
use crate::backend::{Backend, Tx};
use crate::error::{InputError, StoreError};
use crate::time::UnixMicros;
use crate::{AllocationRequest, AuditRecord, Limit, ReserveOutcome, Store};

/// The most writes committed in one transaction. Bounds a batch's
/// statement sizes and how long it holds the locks.
pub const MAX_BATCH: usize = 256;

/// Writes that may wait for the writer; [`Store::write`] waits for room
/// beyond that (in arrival order), which pushes back on callers.
const QUEUE_CAPACITY: usize = 4096;

/// One write for [`Store::write`].
#[derive(Debug, Clone, PartialEq)]
pub enum Write {
    /// Append a record to the audit chain, e.g. a policy decision that
    /// changes no state: see [`Store::append_audit`].
    Audit {
        /// A short dotted word, e.g. `decision`.
        kind: String,
        /// Details; must hold no secret.
        payload: serde_json::Value,
    },
    /// Check quotas and record an allocation if they allow it, with its
    /// audit record (which carries the request's `context`, e.g. the policy
    /// decision): see [`Store::reserve`].
    Reserve {
        /// The launch.
        request: AllocationRequest,
        /// The quotas it is checked against, in order.
        limits: Vec<Limit>,
    },
}

/// What a committed [`Write`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Written {
    /// The record appended for a [`Write::Audit`].
    Audited(AuditRecord),
    /// The decision on a [`Write::Reserve`], as [`Store::reserve`] answers.
    Reserved(ReserveOutcome),
}

/// Counts of what a store's writer task did since [`Store::connect`], for
/// metrics: `writes / batches` is the mean batch size.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct WriteStats {
    /// Batches taken from the queue (counted when taken, before their
    /// transaction runs); a batch tried twice counts once.
    pub batches: u64,
    /// Writes in those batches.
    pub writes: u64,
    /// Batches tried a second time after contention.
    pub retried: u64,
    /// Batches that failed, all their writes answered with an error.
    pub failed: u64,
}

/// A write the store has accepted: validated, payload serialized (in the
/// caller's task, off the writer's).
#[derive(Debug)]
enum Entry {
    Audit {
        kind: String,
        payload: String,
        at: UnixMicros,
    },
    Reserve {
        request: AllocationRequest,
        limits: Vec<Limit>,
        now: UnixMicros,
        context: Box<RawValue>,
    },
}

impl Entry {
    fn new(write: Write, now: UnixMicros) -> Result<Entry, InputError> {
        Ok(match write {
            Write::Audit { kind, payload } => {
                check_kind(&kind)?;
                Entry::Audit {
                    kind,
                    payload: payload.to_string(),
                    at: now,
                }
            }
            Write::Reserve {
                mut request,
                limits,
            } => {
                check_request(&request, &limits)?;
                let context = context_json(&request)?;
                // Written out above, the value itself is dropped here, not
                // on the writer task.
                request.context = None;
                Entry::Reserve {
                    context,
                    request,
                    limits,
                    now,
                }
            }
        })
    }

    fn op(&self) -> Op<'_> {
        match self {
            Entry::Audit { kind, payload, at } => Op::Audit {
                kind,
                payload,
                at: *at,
            },
            Entry::Reserve {
                request,
                limits,
                now,
                context,
            } => Op::Reserve(Reservation {
                request,
                limits,
                now: *now,
                context,
            }),
        }
    }
}

/// One validated write, borrowed: what a transaction applies. The one-call
/// methods build these from their arguments, the writer from its queue.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Op<'a> {
    Audit {
        kind: &'a str,
        /// Compact JSON text.
        payload: &'a str,
        at: UnixMicros,
    },
    Reserve(Reservation<'a>),
}

impl Tx {
    /// Applies `ops` in order: decides the reservations (locking their
    /// teams first), then appends every op's audit record in one go (locking
    /// the head last). One answer per op, in order.
    pub(crate) async fn apply<'o>(
        &mut self,
        ops: &'o [Op<'o>],
    ) -> Result<Vec<Written>, StoreError> {
        let decided = self.decide(ops).await?;
        let (records, outcomes): (Vec<_>, Vec<_>) = decided.into_iter().unzip();
        let appended = self.append_records(records).await?;
        Ok(outcomes
            .into_iter()
            .zip(appended)
            .map(|(outcome, record)| match outcome {
                Some(outcome) => Written::Reserved(outcome),
                None => Written::Audited(record),
            })
            .collect())
    }
}

impl Store {
    /// Queues `write` for the store's writer task, which commits the writes
    /// waiting at that moment together in one transaction, in arrival
    /// order, and returns once that transaction committed. Answers exactly
    /// as [`Store::append_audit`] or [`Store::reserve`] would; see the
    /// [module doc](crate::writer) for what batching guarantees.
    ///
    /// Errors: [`StoreError::Input`] for a write the store cannot accept
    /// (not queued, nothing recorded); [`StoreError::Closed`] after
    /// [`Store::close`]; a failed batch answers each of its writes with
    /// [`StoreError::Batch`] (or the plain error when it held one write),
    /// and recorded none of them.
    ///
    /// Cancel safety: dropping the future before the write is queued
    /// records nothing; after, the write still commits and its answer is
    /// discarded.
    pub async fn write(&self, write: Write, now: UnixMicros) -> Result<Written, StoreError> {
        let entry = Entry::new(write, now)?;
        let (reply, answer) = oneshot::channel();
        self.writer
            .queue
            .send(Job { entry, reply })
            .await
            .map_err(|_| StoreError::Closed)?;
        answer.await.map_err(|_| StoreError::Unanswered)?
    }

    /// What the writer task did so far.
    pub fn write_stats(&self) -> WriteStats {
        let c = &self.writer.counters;
        WriteStats {
            batches: c.batches.load(Ordering::Relaxed),
            writes: c.writes.load(Ordering::Relaxed),
            retried: c.retried.load(Ordering::Relaxed),
            failed: c.failed.load(Ordering::Relaxed),
        }
    }

    /// Applies one op in a transaction of its own, in the caller's task.
    pub(crate) async fn apply_alone(&self, op: Op<'_>) -> Result<Written, StoreError> {
        let ops = [op];
        let mut tx = self.begin_write_reading(|| batch_reads(&ops)).await?;
        let written = tx.apply(&ops).await?.pop().ok_or(StoreError::Unanswered)?;
        tx.commit().await?;
        Ok(written)
    }
}

/// A queued write and where its answer goes.
#[derive(Debug)]
struct Job {
    entry: Entry,
    reply: oneshot::Sender<Result<Written, StoreError>>,
}

#[derive(Debug, Default)]
struct Counters {
    batches: AtomicU64,
    writes: AtomicU64,
    retried: AtomicU64,
    failed: AtomicU64,
}

/// The handle on a store's writer task, shared by the store's clones.
#[derive(Debug)]
pub(crate) struct Writer {
    queue: mpsc::Sender<Job>,
    shutdown: Arc<Notify>,
    task: Mutex<Option<JoinHandle<()>>>,
    counters: Arc<Counters>,
}

impl Writer {
    /// Spawns the writer task on the current tokio runtime.
    pub(crate) fn spawn(backend: Backend) -> Writer {
        let (queue, jobs) = mpsc::channel(QUEUE_CAPACITY);
        let shutdown = Arc::new(Notify::new());
        let counters = Arc::new(Counters::default());
        let task = tokio::spawn(run(
            backend,
            jobs,
            Arc::clone(&shutdown),
            Arc::clone(&counters),
        ));
        Writer {
            queue,
            shutdown,
            task: Mutex::new(Some(task)),
            counters,
        }
    }

    /// Stops taking writes, lets the task commit and answer what is queued,
    /// and waits for it to end.
    pub(crate) async fn close(&self) {
        // A stored permit: the task sees it even if it is busy right now.
        self.shutdown.notify_one();
        let task = self.task.lock().await.take();
        if let Some(task) = task {
            // A task that ended abnormally has nothing left to wait for.
            let _ = task.await;
        }
    }
}

/// The writer task: batches until the queue is closed (on shutdown) or all
/// senders (the store's clones) are gone, and drained.
async fn run(
    backend: Backend,
    mut jobs: mpsc::Receiver<Job>,
    shutdown: Arc<Notify>,
    counters: Arc<Counters>,
) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    let mut closing = false;
    let mut analyze = AnalyzeSchedule::default();
    loop {
        let received = if closing {
            jobs.recv_many(&mut batch, MAX_BATCH).await
        } else {
            tokio::select! {
                biased;
                () = shutdown.notified() => {
                    // Refuse new writes; the queued ones are still received.
                    jobs.close();
                    closing = true;
                    continue;
                }
                n = jobs.recv_many(&mut batch, MAX_BATCH) => n,
            }
        };
        if received == 0 {
            return;
        }
        // Let the tasks that are ready run once before the batch closes:
        // callers answered by the previous batch queue their next write
        // within microseconds, and taking them too makes batches markedly
        // larger under load (PostgreSQL's `commit_delay` idea, without the
        // sleep). Costs one trip through the scheduler.
        if batch.len() < MAX_BATCH {
            tokio::task::yield_now().await;
            while batch.len() < MAX_BATCH {
                let Ok(job) = jobs.try_recv() else { break };
                batch.push(job);
            }
        }
        let (failed, inserted) =
            commit_batch(&backend, std::mem::take(&mut batch), &counters).await;
        if analyze.add(inserted) {
            backend.spawn_analyze_allocations();
        }
        // The writes that queued while the batch waited for an unreachable
        // database would wait as long again: answer them now with the same
        // failure (fail closed), so no caller waits much past the store's
        // timeout. Writes queued after this try the database afresh.
        if let Some(why) = failed {
            while let Ok(job) = jobs.try_recv() {
                let _ = job.reply.send(Err(StoreError::Unreachable(why.clone())));
            }
        }
    }
}

/// When the writer has the planner's statistics of `allocations` refreshed
/// (PostgreSQL): after [`FIRST_ANALYZE`] allocations inserted by this
/// process, then each time that count doubles, up to [`LAST_ANALYZE`].
///
/// Why: a new database has no statistics, and a burst of launches grows
/// the table faster than autovacuum (which looks once a minute) analyzes
/// it; meanwhile the planner may read a live-allocation lookup through an
/// index on the team alone and filter every live row of the team, which
/// was measured to cut admissions on a fresh database from thousands a
/// second to about 800. Past a million rows, autovacuum's own schedule
/// keeps up.
#[derive(Debug)]
struct AnalyzeSchedule {
    inserted: u64,
    next: u64,
}

/// New allocations before the first refresh.
const FIRST_ANALYZE: u64 = 1_000;

/// No refresh is scheduled past this many new allocations.
const LAST_ANALYZE: u64 = 1_024_000;

impl Default for AnalyzeSchedule {
    fn default() -> Self {
        AnalyzeSchedule {
            inserted: 0,
            next: FIRST_ANALYZE,
        }
    }
}

impl AnalyzeSchedule {
    /// Counts `n` more allocations inserted; true when a refresh is due.
    fn add(&mut self, n: u64) -> bool {
        self.inserted = self.inserted.saturating_add(n);
        if self.next > LAST_ANALYZE || self.inserted < self.next {
            return false;
        }
        while self.next <= self.inserted && self.next <= LAST_ANALYZE {
            self.next = self.next.saturating_mul(2);
        }
        true
    }
}

/// Runs one batch's transaction, retried once on contention, and answers
/// every caller. Callers that left are skipped: their writes committed all
/// the same. Returns why, when the batch failed because the database could
/// not be reached, and how many allocations the batch inserted.
async fn commit_batch(
    backend: &Backend,
    jobs: Vec<Job>,
    counters: &Counters,
) -> (Option<String>, u64) {
    counters.batches.fetch_add(1, Ordering::Relaxed);
    counters.writes.fetch_add(
        u64::try_from(jobs.len()).unwrap_or(u64::MAX),
        Ordering::Relaxed,
    );
    let ops: Vec<Op<'_>> = jobs.iter().map(|job| job.entry.op()).collect();
    let mut result = attempt(backend, &ops).await;
    if result.as_ref().is_err_and(StoreError::is_retryable) {
        counters.retried.fetch_add(1, Ordering::Relaxed);
        result = attempt(backend, &ops).await;
    }
    drop(ops);
    match result {
        Ok(written) => {
            let inserted = written
                .iter()
                .filter(|w| {
                    matches!(
                        w,
                        Written::Reserved(ReserveOutcome::Granted {
                            relaunch: false,
                            ..
                        })
                    )
                })
                .count();
            for (job, written) in jobs.into_iter().zip(written) {
                let _ = job.reply.send(Ok(written));
            }
            (None, u64::try_from(inserted).unwrap_or(u64::MAX))
        }
        Err(err) => {
            let unreachable = match &err {
                StoreError::Unreachable(why) => Some(why.clone()),
                _ => None,
            };
            counters.failed.fetch_add(1, Ordering::Relaxed);
            let mut jobs = jobs.into_iter();
            if jobs.len() == 1 {
                if let Some(job) = jobs.next() {
                    let _ = job.reply.send(Err(err));
                }
            } else {
                let err = Arc::new(err);
                for job in jobs {
                    let _ = job.reply.send(Err(StoreError::Batch(Arc::clone(&err))));
                }
            }
            (unreachable, 0)
        }
    }
}

/// One try of a batch: begin, apply, commit. An error rolls everything back.
async fn attempt(backend: &Backend, ops: &[Op<'_>]) -> Result<Vec<Written>, StoreError> {
    let mut tx = backend.begin_write_reading(|| batch_reads(ops)).await?;
    let written = tx.apply(ops).await?;
    tx.commit().await?;
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statistics_are_refreshed_at_each_doubling_then_left_to_autovacuum() {
        let mut schedule = AnalyzeSchedule::default();
        let mut due = Vec::new();
        let mut total = 0;
        // Batches of 300: due on the batch that crosses 1,000, 2,000,
        // 4,000, ... once each, and never past LAST_ANALYZE.
        for _ in 0..10_000 {
            total += 300;
            if schedule.add(300) {
                due.push(total);
            }
        }
        let expected: Vec<u64> = [1_000u64, 2_000, 4_000, 8_000, 16_000, 32_000, 64_000]
            .iter()
            .chain(&[128_000, 256_000, 512_000, 1_024_000])
            .map(|t| t.div_ceil(300) * 300)
            .collect();
        assert_eq!(due, expected);
        // One huge batch crosses several thresholds: one refresh.
        let mut schedule = AnalyzeSchedule::default();
        assert!(!schedule.add(999));
        assert!(schedule.add(10_000));
        assert!(!schedule.add(5_000));
        assert!(schedule.add(1_000));
        assert!(!schedule.add(0));
    }
}
