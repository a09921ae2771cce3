//! The audit chain: an append-only, hash-chained log of decisions and
//! allocation events.
//!
//! # What it guarantees
//!
//! - **Atomic with the change it describes.** A record is appended inside
//!   the transaction of the state change it describes (a reservation, an
//!   end), so after a crash both are there or neither is. Callers that
//!   answer only after the call returns get "audit before answer".
//! - **One chain.** Appends are serialized (the `audit_head` row is locked
//!   on PostgreSQL; SQLite transactions are `BEGIN IMMEDIATE`), so records
//!   are numbered 1, 2, 3, ... with no gap or fork, each record's
//!   `prev_hash` is the previous record's `hash` (64 zeros for record 1),
//!   and the `audit_head` row holds the last record's `seq` and `hash`, even
//!   with several replicas writing to one PostgreSQL.
//! - **Tampering with stored records is detected and located.**
//!   [`crate::Store::verify_audit`] walks the chain in `seq` order and names
//!   the first problem: an edited field of a record, records deleted from
//!   the start or middle, a record moved to another position (reordered or
//!   renumbered), a record replaced by one with a self-consistent hash (the
//!   next record's link breaks), a truncated tail or a record appended
//!   behind the head's back (the head row no longer matches the last
//!   record).
//!
//! # What it does not guarantee
//!
//! - **No secret is involved.** Anyone who can write to the database can
//!   recompute every hash from an edited record onward and update the head
//!   row to match; the chain then verifies. Such a rewrite, or a truncated
//!   tail together with a rewound head, shows only against a head kept
//!   outside the database: keep [`VerifyReport::head`] (or the hash of any
//!   exported record) somewhere else, such as logs, exports or another
//!   system, and check that the chain still has that record with that hash.
//! - **Times are the callers' clocks.** `at_us` is the "now" the caller
//!   passed; with several replicas it may step backwards. The order of
//!   events is `seq`.
//! - **Nothing is secret or signed.** Payloads are stored in clear text and
//!   the chain says nothing about who wrote a record: callers must never put
//!   secrets (keys, tokens) in a payload.
//!
//! # Hash encoding
//!
//! ```text
//! hash = lowercase_hex(SHA-256(
//!     str("warden.audit.v1") || int(seq) || int(at_us) ||
//!     str(kind) || str(payload) || str(prev_hash)))
//! int(n) = the 8-byte big-endian two's complement of n
//! str(s) = int(byte length of s) || the UTF-8 bytes of s
//! ```
//!
//! Every field is length-prefixed, so distinct records never encode to the
//! same bytes. `payload` is hashed exactly as stored (compact JSON text; the
//! PostgreSQL column is `TEXT`, not `JSONB`, which would re-format it), and
//! `prev_hash` as its 64 hex characters. [`chain_hash`] implements this for
//! verifiers outside the store.

use std::fmt;

use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::backend::{on_pool, on_tx, sqlite_padded_chunks, sqlite_values, Param, Tx};
use crate::error::{InputError, StoreError};
use crate::time::UnixMicros;
use crate::writer::{Op, Written};
use crate::Store;

/// The `prev_hash` of the first record: 64 zeros.
pub const GENESIS_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// Records read per query while verifying, to bound memory.
const VERIFY_PAGE: i64 = 1000;

/// How far from a record's position [`Store::verify_audit`] looks for the
/// position it was written at, when its hash does not match where it is.
const MOVE_SEARCH_WINDOW: i64 = 1_000_000;

/// One record of the audit chain, with every stored field.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AuditRecord {
    /// Position in the chain, from 1.
    pub seq: i64,
    /// When it was written (the caller's clock).
    #[serde(rename = "at_us")]
    pub at: UnixMicros,
    /// What happened, e.g. `allocation.granted`.
    pub kind: String,
    /// Details, as compact JSON text exactly as hashed.
    pub payload: String,
    /// The previous record's `hash` ([`GENESIS_HASH`] for record 1).
    pub prev_hash: String,
    /// This record's hash (see the module doc for the encoding).
    pub hash: String,
}

impl AuditRecord {
    /// The hash this record's fields call for; equal to `hash` unless the
    /// record was altered.
    pub fn computed_hash(&self) -> String {
        chain_hash(
            self.seq,
            self.at,
            &self.kind,
            &self.payload,
            &self.prev_hash,
        )
    }
}

/// The hash of a record with these fields, per the encoding in the module
/// doc.
pub fn chain_hash(seq: i64, at: UnixMicros, kind: &str, payload: &str, prev_hash: &str) -> String {
    fn int(h: &mut Sha256, n: i64) {
        h.update(n.to_be_bytes());
    }
    fn str(h: &mut Sha256, s: &str) {
        // A `str` is at most `isize::MAX` bytes, so this never saturates.
        int(h, i64::try_from(s.len()).unwrap_or(i64::MAX));
        h.update(s.as_bytes());
    }
    let mut h = Sha256::new();
    str(&mut h, "warden.audit.v1");
    int(&mut h, seq);
    int(&mut h, at.micros());
    str(&mut h, kind);
    str(&mut h, payload);
    str(&mut h, prev_hash);
    hex(&h.finalize())
}

fn hex(bytes: &[u8]) -> String {
    let digit = |d: u8| char::from_digit(u32::from(d), 16).unwrap_or('0');
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(digit(b >> 4));
        out.push(digit(b & 0x0f));
    }
    out
}

/// The last record of the chain as the `audit_head` row records it. Keep a
/// copy outside the database to detect a rewritten or truncated chain later.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ChainHead {
    /// The last record's `seq` (0 for an empty chain).
    pub seq: i64,
    /// The last record's `hash` ([`GENESIS_HASH`] for an empty chain).
    pub hash: String,
}

/// The outcome of [`Store::verify_audit`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct VerifyReport {
    /// Records found intact before the first problem (all of them when
    /// there is none).
    pub records_checked: u64,
    /// The head row, when it exists.
    pub head: Option<ChainHead>,
    /// The first problem in `seq` order, if any.
    pub problem: Option<ChainProblem>,
}

impl VerifyReport {
    /// Whether the chain verified with no problem.
    pub fn is_intact(&self) -> bool {
        self.problem.is_none()
    }
}

/// The first thing wrong with the chain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "problem", rename_all = "snake_case")]
pub enum ChainProblem {
    /// Records `first..=last` are absent: deleted from the start or the
    /// middle of the chain.
    Missing {
        /// The first missing `seq`.
        first: i64,
        /// The last missing `seq`.
        last: i64,
    },
    /// A record's `seq` is below the position it holds (1 for the first).
    Misnumbered {
        /// The `seq` found.
        seq: i64,
        /// The `seq` that position calls for.
        expected: i64,
    },
    /// A record's fields do not match its hash: it was edited.
    Edited {
        /// The record's `seq`.
        seq: i64,
    },
    /// A record is intact but was written at another position: records
    /// were reordered or renumbered.
    Moved {
        /// Where the record is now.
        seq: i64,
        /// Where it was written.
        original_seq: i64,
    },
    /// A record is intact but does not follow the record before it: that
    /// record was replaced by another with a self-consistent hash.
    Unlinked {
        /// The record whose `prev_hash` does not match.
        seq: i64,
        /// The previous record's hash.
        expected_prev: String,
        /// The `prev_hash` it carries.
        found_prev: String,
    },
    /// The chain ends before the head row says it does: the tail was cut.
    Truncated {
        /// The last record present (0 when none is).
        last_seq: i64,
        /// The last record according to the head row.
        head_seq: i64,
    },
    /// Records follow the one the head row names: they were appended
    /// without going through the store.
    BeyondHead {
        /// The last record according to the head row.
        head_seq: i64,
        /// The last record present.
        last_seq: i64,
    },
    /// The last record's hash differs from the head row's.
    HeadMismatch {
        /// The last record's `seq`.
        seq: i64,
    },
    /// The `audit_head` row is missing.
    NoHead,
}

impl fmt::Display for ChainProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ChainProblem::Missing { first, last } if first == last => {
                write!(f, "record {first} is missing (deleted)")
            }
            ChainProblem::Missing { first, last } => {
                write!(f, "records {first} to {last} are missing (deleted)")
            }
            ChainProblem::Misnumbered { seq, expected } => {
                write!(f, "record {seq} stands where record {expected} belongs (renumbered)")
            }
            ChainProblem::Edited { seq } => {
                write!(f, "record {seq} does not match its hash (edited)")
            }
            ChainProblem::Moved { seq, original_seq } => write!(
                f,
                "record {seq} was written as record {original_seq} (reordered or renumbered)"
            ),
            ChainProblem::Unlinked { seq, .. } => write!(
                f,
                "record {seq} does not follow the record before it (that record was replaced)"
            ),
            ChainProblem::Truncated { last_seq, head_seq } => write!(
                f,
                "the chain ends at record {last_seq} but its head says {head_seq} (tail deleted)"
            ),
            ChainProblem::BeyondHead { head_seq, last_seq } => write!(
                f,
                "records {} to {last_seq} follow the head at {head_seq} (appended outside the store)",
                head_seq.saturating_add(1)
            ),
            ChainProblem::HeadMismatch { seq } => write!(
                f,
                "the head's hash differs from record {seq}'s (head or last record altered)"
            ),
            ChainProblem::NoHead => f.write_str("the audit head row is missing"),
        }
    }
}

/// Audit kinds are short dotted words, e.g. `allocation.granted`.
pub(crate) fn check_kind(kind: &str) -> Result<(), InputError> {
    let ok = !kind.is_empty()
        && kind.len() <= 64
        && kind
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(InputError::AuditKind(kind.to_owned()))
    }
}

type RecordRow = (i64, i64, String, String, String, String);

fn record((seq, at_us, kind, payload, prev_hash, hash): RecordRow) -> AuditRecord {
    AuditRecord {
        seq,
        at: UnixMicros::from_micros(at_us),
        kind,
        payload,
        prev_hash,
        hash,
    }
}

/// A record to append; [`Tx::append_records`] numbers and hashes it.
#[derive(Debug, Clone)]
pub(crate) struct NewRecord {
    pub(crate) kind: String,
    /// Compact JSON text, stored and hashed exactly as given.
    pub(crate) payload: String,
    pub(crate) at: UnixMicros,
}

impl Tx {
    /// Appends `records` to the chain, in order, inside this transaction:
    /// one read of the head, one insert of all the records (hashes computed
    /// here), one update of the head. On PostgreSQL the head row stays
    /// locked until commit, so keep what follows short.
    pub(crate) async fn append_records(
        &mut self,
        records: Vec<NewRecord>,
    ) -> Result<Vec<AuditRecord>, StoreError> {
        if records.is_empty() {
            return Ok(Vec::new());
        }
        for r in &records {
            check_kind(&r.kind)?;
        }
        let corrupt_head = |detail: String| StoreError::Corrupt {
            what: "audit head".to_owned(),
            detail,
        };
        // `FOR UPDATE` makes concurrent appenders queue here and read the
        // head their predecessor committed; SQLite has one writer anyway.
        let read_head = if self.is_postgres() {
            "SELECT seq, hash FROM audit_head WHERE id = 1 FOR UPDATE"
        } else {
            "SELECT seq, hash FROM audit_head WHERE id = 1"
        };
        let head: Option<(i64, String)> = match self.take_audit_head() {
            Some(head) => Some(head),
            None => on_tx!(self, |conn| {
                sqlx::query_as(read_head).fetch_optional(&mut *conn).await?
            }),
        };
        let (mut seq, mut prev_hash) =
            head.ok_or_else(|| corrupt_head("the row is missing".to_owned()))?;

        let mut chained = Vec::with_capacity(records.len());
        for NewRecord { kind, payload, at } in records {
            seq = seq
                .checked_add(1)
                .ok_or_else(|| corrupt_head(format!("seq `{seq}` cannot grow")))?;
            let hash = chain_hash(seq, at, &kind, &payload, &prev_hash);
            let prev = std::mem::replace(&mut prev_hash, hash.clone());
            chained.push(AuditRecord {
                seq,
                at,
                kind,
                payload,
                prev_hash: prev,
                hash,
            });
        }

        match self {
            Tx::Postgres { tx } => {
                sqlx::query(
                    "INSERT INTO audit (seq, at_us, kind, payload, prev_hash, hash) \
                     SELECT * FROM UNNEST($1::BIGINT[], $2::BIGINT[], $3::TEXT[], \
                                          $4::TEXT[], $5::TEXT[], $6::TEXT[])",
                )
                .bind(chained.iter().map(|r| r.seq).collect::<Vec<_>>())
                .bind(chained.iter().map(|r| r.at.micros()).collect::<Vec<_>>())
                .bind(chained.iter().map(|r| r.kind.as_str()).collect::<Vec<_>>())
                .bind(
                    chained
                        .iter()
                        .map(|r| r.payload.as_str())
                        .collect::<Vec<_>>(),
                )
                .bind(
                    chained
                        .iter()
                        .map(|r| r.prev_hash.as_str())
                        .collect::<Vec<_>>(),
                )
                .bind(chained.iter().map(|r| r.hash.as_str()).collect::<Vec<_>>())
                .execute(&mut **tx)
                .await?;
                sqlx::query("UPDATE audit_head SET seq = $1, hash = $2 WHERE id = 1")
                    .bind(seq)
                    .bind(&prev_hash)
                    .execute(&mut **tx)
                    .await?;
            }
            // Written last, these may wait for the commit (`Tx::defer_writes`).
            Tx::Sqlite { tx, .. } => {
                for (range, rows) in sqlite_padded_chunks(chained.len()) {
                    let chunk = chained.get(range).unwrap_or_default();
                    // The padding's NULL rows are filtered out (`seq` is
                    // never NULL).
                    let sql = format!(
                        "INSERT INTO audit (seq, at_us, kind, payload, prev_hash, hash) \
                         SELECT * FROM (VALUES {}) WHERE column1 IS NOT NULL",
                        sqlite_values(rows, 6)
                    );
                    let mut params: Vec<Param> = Vec::with_capacity(rows * 6);
                    for r in chunk {
                        params.extend([
                            r.seq.into(),
                            r.at.micros().into(),
                            r.kind.as_str().into(),
                            r.payload.as_str().into(),
                            r.prev_hash.as_str().into(),
                            r.hash.as_str().into(),
                        ]);
                    }
                    params.resize(rows * 6, Param::Null);
                    tx.run_or_defer(&sql, params).await?;
                }
                tx.run_or_defer(
                    "UPDATE audit_head SET seq = $1, hash = $2 WHERE id = 1",
                    vec![seq.into(), prev_hash.as_str().into()],
                )
                .await?;
            }
        }
        self.keep_audit_head(seq, &prev_hash);
        Ok(chained)
    }
}

impl Store {
    /// Appends a record on its own, e.g. a policy decision that changes no
    /// state, and returns it once committed. `kind` is a short dotted word
    /// (`decision.denied`); `payload` must hold no secret.
    ///
    /// Runs in a transaction of its own; [`Store::write`] with
    /// [`Write::Audit`](crate::Write::Audit) appends the same record, committed together with
    /// other waiting writes, for throughput.
    pub async fn append_audit(
        &self,
        kind: &str,
        payload: &serde_json::Value,
        now: UnixMicros,
    ) -> Result<AuditRecord, StoreError> {
        check_kind(kind)?;
        let payload = payload.to_string();
        let op = Op::Audit {
            kind,
            payload: &payload,
            at: now,
        };
        match self.apply_alone(op).await? {
            Written::Audited(record) => Ok(record),
            Written::Reserved(_) => Err(StoreError::Unanswered),
        }
    }

    /// Records written at `since <= at_us < until`, in chain order.
    pub async fn export_audit(
        &self,
        since: UnixMicros,
        until: UnixMicros,
    ) -> Result<Vec<AuditRecord>, StoreError> {
        let rows: Vec<RecordRow> = on_pool!(self, |pool| {
            sqlx::query_as(
                "SELECT seq, at_us, kind, payload, prev_hash, hash FROM audit \
                 WHERE at_us >= $1 AND at_us < $2 ORDER BY seq",
            )
            .bind(since.micros())
            .bind(until.micros())
            .fetch_all(pool)
            .await?
        });
        Ok(rows.into_iter().map(record).collect())
    }

    /// Walks the whole chain in `seq` order, in one consistent snapshot
    /// (appends may go on meanwhile), and reports the first problem. Memory
    /// use is bounded: records are read a page at a time.
    pub async fn verify_audit(&self) -> Result<VerifyReport, StoreError> {
        let mut tx = self.begin_snapshot().await?;
        let (head, mut walker) = on_tx!(&mut tx, |conn| {
            let head: Option<(i64, String)> =
                sqlx::query_as("SELECT seq, hash FROM audit_head WHERE id = 1")
                    .fetch_optional(&mut *conn)
                    .await?;
            let (max_seq,): (i64,) =
                sqlx::query_as("SELECT CAST(COALESCE(MAX(seq), 0) AS BIGINT) FROM audit")
                    .fetch_one(&mut *conn)
                    .await?;
            let head_seq = head.as_ref().map_or(0, |(seq, _)| *seq);
            let mut walker = Walker::new(max_seq.max(head_seq));
            let mut after = i64::MIN;
            'pages: loop {
                let rows: Vec<RecordRow> = sqlx::query_as(
                    "SELECT seq, at_us, kind, payload, prev_hash, hash FROM audit \
                     WHERE seq > $1 ORDER BY seq LIMIT $2",
                )
                .bind(after)
                .bind(VERIFY_PAGE)
                .fetch_all(&mut *conn)
                .await?;
                let full = i64::try_from(rows.len()).is_ok_and(|n| n == VERIFY_PAGE);
                for row in rows {
                    after = row.0;
                    if walker.step(&record(row)).is_err() {
                        break 'pages;
                    }
                }
                if !full {
                    break;
                }
            }
            (head, walker)
        });
        // Read-only: ending it either way releases the snapshot.
        tx.commit().await?;
        walker.finish(head.as_ref());
        Ok(VerifyReport {
            records_checked: walker.checked,
            head: head.map(|(seq, hash)| ChainHead { seq, hash }),
            problem: walker.problem,
        })
    }
}

/// The verification state while walking the chain in `seq` order.
struct Walker {
    next_seq: i64,
    prev_hash: String,
    checked: u64,
    /// The highest `seq` a moved record can have come from.
    max_seq: i64,
    problem: Option<ChainProblem>,
}

impl Walker {
    fn new(max_seq: i64) -> Self {
        Walker {
            next_seq: 1,
            prev_hash: GENESIS_HASH.to_owned(),
            checked: 0,
            max_seq,
            problem: None,
        }
    }

    /// Checks the next record; `Err` once a problem is found (kept in
    /// `self.problem`).
    fn step(&mut self, r: &AuditRecord) -> Result<(), ()> {
        let problem = if r.seq > self.next_seq {
            Some(ChainProblem::Missing {
                first: self.next_seq,
                last: r.seq.saturating_sub(1),
            })
        } else if r.seq < self.next_seq {
            Some(ChainProblem::Misnumbered {
                seq: r.seq,
                expected: self.next_seq,
            })
        } else if r.computed_hash() != r.hash {
            Some(match self.original_seq(r) {
                Some(original_seq) => ChainProblem::Moved {
                    seq: r.seq,
                    original_seq,
                },
                None => ChainProblem::Edited { seq: r.seq },
            })
        } else if r.prev_hash != self.prev_hash {
            Some(ChainProblem::Unlinked {
                seq: r.seq,
                expected_prev: self.prev_hash.clone(),
                found_prev: r.prev_hash.clone(),
            })
        } else {
            None
        };
        if let Some(problem) = problem {
            self.problem = Some(problem);
            return Err(());
        }
        self.next_seq = r.seq.saturating_add(1);
        self.prev_hash.clone_from(&r.hash);
        self.checked += 1;
        Ok(())
    }

    /// The position an otherwise intact record was written at, if it was
    /// written at another one nearby. Runs only once a mismatch is found.
    fn original_seq(&self, r: &AuditRecord) -> Option<i64> {
        let low = r.seq.saturating_sub(MOVE_SEARCH_WINDOW).max(1);
        let high = r.seq.saturating_add(MOVE_SEARCH_WINDOW).min(self.max_seq);
        (low..=high)
            .filter(|&seq| seq != r.seq)
            .find(|&seq| chain_hash(seq, r.at, &r.kind, &r.payload, &r.prev_hash) == r.hash)
    }

    /// Compares the end of an intact walk with the head row.
    fn finish(&mut self, head: Option<&(i64, String)>) {
        if self.problem.is_some() {
            return;
        }
        let last_seq = self.next_seq.saturating_sub(1);
        self.problem = match head {
            None => Some(ChainProblem::NoHead),
            Some((head_seq, _)) if *head_seq > last_seq => Some(ChainProblem::Truncated {
                last_seq,
                head_seq: *head_seq,
            }),
            Some((head_seq, _)) if *head_seq < last_seq => Some(ChainProblem::BeyondHead {
                head_seq: *head_seq,
                last_seq,
            }),
            Some((_, hash)) if *hash != self.prev_hash => {
                Some(ChainProblem::HeadMismatch { seq: last_seq })
            }
            Some(_) => None,
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_encoding_matches_the_documented_one() {
        // Computed independently (Python's hashlib) from the module doc.
        let got = chain_hash(
            1,
            UnixMicros::from_micros(1_700_000_000_000_000),
            "allocation.granted",
            r#"{"a":1}"#,
            GENESIS_HASH,
        );
        assert_eq!(
            got,
            "b522d99b3f666801990f5c4d1d51e741b690279af80e432acb157085e1623615"
        );
    }

    #[test]
    fn fields_cannot_bleed_into_each_other() {
        let at = UnixMicros::EPOCH;
        assert_ne!(
            chain_hash(1, at, "ab", "c", GENESIS_HASH),
            chain_hash(1, at, "a", "bc", GENESIS_HASH)
        );
    }

    #[test]
    fn kinds_are_short_dotted_words() {
        assert!(check_kind("allocation.granted").is_ok());
        assert!(check_kind("budget.soft_80").is_ok());
        assert!(check_kind("").is_err());
        assert!(check_kind("Allocation").is_err());
        assert!(check_kind("a b").is_err());
        assert!(check_kind(&"a".repeat(65)).is_err());
    }

    fn chain(n: i64) -> Vec<AuditRecord> {
        let mut prev = GENESIS_HASH.to_owned();
        (1..=n)
            .map(|seq| {
                let at = UnixMicros::from_micros(seq * 10);
                let payload = format!(r#"{{"n":{seq}}}"#);
                let hash = chain_hash(seq, at, "test.event", &payload, &prev);
                let r = AuditRecord {
                    seq,
                    at,
                    kind: "test.event".to_owned(),
                    payload,
                    prev_hash: prev.clone(),
                    hash: hash.clone(),
                };
                prev = hash;
                r
            })
            .collect()
    }

    fn walk(records: &[AuditRecord], head: (i64, &str)) -> Option<ChainProblem> {
        let mut w = Walker::new(records.iter().map(|r| r.seq).max().unwrap_or(0));
        for r in records {
            if w.step(r).is_err() {
                break;
            }
        }
        w.finish(Some(&(head.0, head.1.to_owned())));
        w.problem
    }

    #[test]
    fn walker_names_each_kind_of_damage() {
        let good = chain(6);
        let head = (6, good[5].hash.as_str());
        assert_eq!(walk(&good, head), None);

        let mut moved = good.clone();
        moved.swap(2, 3);
        (moved[2].seq, moved[3].seq) = (3, 4);
        assert_eq!(
            walk(&moved, head),
            Some(ChainProblem::Moved {
                seq: 3,
                original_seq: 4
            })
        );

        let mut replaced = good.clone();
        replaced[1].payload = r#"{"n":"forged"}"#.to_owned();
        replaced[1].hash = replaced[1].computed_hash();
        assert!(matches!(
            walk(&replaced, head),
            Some(ChainProblem::Unlinked { seq: 3, .. })
        ));

        assert_eq!(
            walk(&good[..4], head),
            Some(ChainProblem::Truncated {
                last_seq: 4,
                head_seq: 6
            })
        );
        assert_eq!(
            walk(&good, (5, good[4].hash.as_str())),
            Some(ChainProblem::BeyondHead {
                head_seq: 5,
                last_seq: 6
            })
        );
        assert_eq!(
            walk(&good, (6, GENESIS_HASH)),
            Some(ChainProblem::HeadMismatch { seq: 6 })
        );
    }
}

#[cfg(test)]
mod head_tests {
    use super::*;

    /// Appends in one transaction chain on from each other, whether the
    /// head comes from `BEGIN` (SQLite's writer) or from the row, and a
    /// transaction rolled back leaves the head where it was.
    #[tokio::test]
    async fn appends_in_one_transaction_chain_on_and_rollback_keeps_the_head() {
        let dir = std::env::temp_dir().join(format!(
            "warden-audit-head-{}-{}",
            std::process::id(),
            line!()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let store = Store::connect(&format!("sqlite://{}", dir.join("w.db").display()))
            .await
            .unwrap();
        let record = |n: i64| NewRecord {
            kind: "test.append".to_owned(),
            payload: format!(r#"{{"n":{n}}}"#),
            at: UnixMicros::from_micros(1_700_000_000_000_000 + n),
        };
        let mut tx = store.begin_write().await.unwrap();
        let first = tx.append_records(vec![record(1), record(2)]).await.unwrap();
        let second = tx.append_records(vec![record(3)]).await.unwrap();
        tx.commit().await.unwrap();
        assert_eq!(second[0].seq, first[1].seq + 1);
        assert_eq!(second[0].prev_hash, first[1].hash);

        let mut tx = store.begin_write().await.unwrap();
        tx.append_records(vec![record(4)]).await.unwrap();
        drop(tx);
        let mut tx = store.begin_write().await.unwrap();
        let after = tx.append_records(vec![record(5)]).await.unwrap();
        tx.commit().await.unwrap();
        assert_eq!(after[0].seq, second[0].seq + 1);
        assert_eq!(after[0].prev_hash, second[0].hash);

        let report = store.verify_audit().await.unwrap();
        assert!(report.is_intact(), "{report:?}");
        assert_eq!(report.records_checked, 4);
        store.close().await;
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
