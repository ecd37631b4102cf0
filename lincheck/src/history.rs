//! A recorded history: every operation's invocation, and how it ended.
//!
//! Times are caller-supplied `u64`s (nanoseconds of one monotonic clock in practice; any
//! increasing counter in tests). An operation's interval is `[invoked_at, completed_at]`; two
//! operations are ordered in real time only when one completed strictly before the other was
//! invoked, so equal stamps count as concurrent (the permissive reading of a coarse clock).
//!
//! An operation ends one of four ways ([`Status`]):
//! - **completed**: the client got an answer; the operation took effect once, inside its
//!   interval, and the answer is what it saw.
//! - **failed**: definitely did not happen (a request refused before it changed anything). The
//!   checker leaves it out.
//! - **unknown**: indeterminate (a timeout, a lost connection): it may have taken effect at any
//!   time after its invocation, or never; its answer is unobserved.
//! - **pending**: never resolved by the harness; checked as unknown.

use std::collections::HashSet;
use std::fmt::{self, Debug};
use std::hash::Hash;

use serde::{Deserialize, Serialize};

use crate::check::{CheckError, Checker};
use crate::model::{Op, Outcome};

/// Names the client (a process, a task) that issued an operation. Only for reports: the checker
/// does not need one operation at a time per client.
pub type ClientId = u64;

/// The client [`History::final_read`] records its reads under.
pub const FINAL_READER: ClientId = u64::MAX;

/// Names one recorded operation: its index in [`History::records`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct OpId(pub usize);

impl fmt::Display for OpId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "#{}", self.0)
    }
}

/// How an operation ended; see the module docs for what each means to the checker.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Status<V> {
    /// Invoked and not resolved yet; checked as [`Status::Unknown`].
    Pending,
    /// Answered at `at` with `outcome`.
    Completed {
        /// What the client was told.
        outcome: Outcome<V>,
        /// When the answer arrived (at or after the invocation).
        at: u64,
    },
    /// Definitely did not take effect; `at` is when the client learnt so (kept for reports).
    Failed {
        /// When the refusal arrived.
        at: u64,
    },
    /// May or may not have taken effect, at any time after the invocation; answer unobserved.
    Unknown,
}

/// One operation in a history.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record<K, V> {
    /// Its place in the history.
    pub id: OpId,
    /// Who issued it (reports only).
    pub client: ClientId,
    /// The register it acted on: the checker splits the history by this.
    pub key: K,
    /// What was asked.
    pub op: Op<V>,
    /// When it was sent (at or before the request left the client).
    pub invoked_at: u64,
    /// How it ended.
    pub status: Status<V>,
}

impl<K, V> Record<K, V> {
    /// When the answer arrived, for a completed operation.
    pub fn completed_at(&self) -> Option<u64> {
        match self.status {
            Status::Completed { at, .. } => Some(at),
            _ => None,
        }
    }

    /// The answer, for a completed operation.
    pub fn outcome(&self) -> Option<&Outcome<V>> {
        match &self.status {
            Status::Completed { outcome, .. } => Some(outcome),
            _ => None,
        }
    }

    /// Whether the operation may have taken effect without an answer (unknown or pending).
    pub fn is_indeterminate(&self) -> bool {
        matches!(self.status, Status::Unknown | Status::Pending)
    }
}

impl<K: Debug, V: Debug> fmt::Display for Record<K, V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let client = if self.client == FINAL_READER {
            "final read".to_owned()
        } else {
            format!("client {}", self.client)
        };
        write!(
            f,
            "{} {client} key {:?}: {} -> ",
            self.id, self.key, self.op
        )?;
        match &self.status {
            Status::Completed { outcome, at } => {
                write!(f, "{outcome} [{}, {at}]", self.invoked_at)
            }
            Status::Failed { at } => write!(f, "failed [{}, {at}]", self.invoked_at),
            Status::Unknown => write!(f, "unknown [{}, never answered)", self.invoked_at),
            Status::Pending => write!(f, "pending [{}, never answered)", self.invoked_at),
        }
    }
}

/// A recording mistake, refused so that a harness bug never passes for a cluster bug.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RecordError {
    /// The id was not returned by this history's `invoke`.
    NoSuchOp(OpId),
    /// The operation was already completed, failed or marked unknown.
    AlreadyResolved(OpId),
    /// The answer is not the kind the operation gives (a read's answer for a put).
    WrongOutcome {
        /// The operation.
        id: OpId,
        /// The operation's kind (`put`, `get`, `cas`, `delete`).
        op: String,
        /// The answer's kind (`written`, `read`, `cas`).
        outcome: String,
    },
    /// The answer's time is before the invocation's: the harness stamped times from two
    /// clocks, or in the wrong order.
    AnsweredBeforeInvoked {
        /// The operation.
        id: OpId,
        /// When it was invoked.
        invoked_at: u64,
        /// The earlier time given for its answer.
        at: u64,
    },
}

impl fmt::Display for RecordError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RecordError::NoSuchOp(id) => write!(
                f,
                "operation {id} was never invoked in this history: pass the id `invoke` returned"
            ),
            RecordError::AlreadyResolved(id) => write!(
                f,
                "operation {id} already ended: resolve each operation once (complete, fail or unknown)"
            ),
            RecordError::WrongOutcome { id, op, outcome } => write!(
                f,
                "operation {id} (a {op}) cannot be answered with a {outcome} outcome: puts and \
                 deletes answer Outcome::Written, gets Outcome::Read, compare-and-sets Outcome::Cas"
            ),
            RecordError::AnsweredBeforeInvoked { id, invoked_at, at } => write!(
                f,
                "operation {id} answered at {at}, before its invocation at {invoked_at}: stamp \
                 both from one monotonic clock, the answer after it arrived"
            ),
        }
    }
}

impl std::error::Error for RecordError {}

/// A history of operations on independent keys, each key a register (see the crate docs).
///
/// It serializes as `{"records": [...]}` (dump it when a test fails, check it again offline);
/// deserializing validates the records as [`History::complete`] would, so a hand-edited dump
/// cannot hold a put answered with a read.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "RawHistory<K, V>")]
pub struct History<K = String, V = String> {
    records: Vec<Record<K, V>>,
}

/// The serialized form of a [`History`], before validation.
#[derive(Deserialize)]
struct RawHistory<K, V> {
    records: Vec<Record<K, V>>,
}

impl<K, V> TryFrom<RawHistory<K, V>> for History<K, V> {
    type Error = RecordError;

    fn try_from(raw: RawHistory<K, V>) -> Result<Self, RecordError> {
        for (index, record) in raw.records.iter().enumerate() {
            if record.id != OpId(index) {
                return Err(RecordError::NoSuchOp(record.id));
            }
            let at = match &record.status {
                Status::Completed { outcome, at } => {
                    if !record.op.answers_with(outcome) {
                        return Err(RecordError::WrongOutcome {
                            id: record.id,
                            op: record.op.kind().to_owned(),
                            outcome: outcome.kind().to_owned(),
                        });
                    }
                    *at
                }
                Status::Failed { at } => *at,
                Status::Pending | Status::Unknown => continue,
            };
            if at < record.invoked_at {
                return Err(RecordError::AnsweredBeforeInvoked {
                    id: record.id,
                    invoked_at: record.invoked_at,
                    at,
                });
            }
        }
        Ok(History {
            records: raw.records,
        })
    }
}

impl<K, V> Default for History<K, V> {
    fn default() -> Self {
        History {
            records: Vec::new(),
        }
    }
}

impl<K, V> History<K, V>
where
    K: Clone + Eq + Hash + Debug,
    V: Clone + Eq + Hash + Debug,
{
    /// An empty history.
    pub fn new() -> Self {
        Self::default()
    }

    /// Records that `client` sent `op` on `key` at `at`; resolve the returned id later with
    /// [`complete`](Self::complete), [`fail`](Self::fail) or [`unknown`](Self::unknown).
    pub fn invoke(&mut self, client: ClientId, key: K, op: Op<V>, at: u64) -> OpId {
        let id = OpId(self.records.len());
        self.records.push(Record {
            id,
            client,
            key,
            op,
            invoked_at: at,
            status: Status::Pending,
        });
        id
    }

    /// Records the answer `outcome` to `id`, received at `at`.
    pub fn complete(&mut self, id: OpId, outcome: Outcome<V>, at: u64) -> Result<(), RecordError> {
        let record = self.pending_mut(id, Some(at))?;
        if !record.op.answers_with(&outcome) {
            return Err(RecordError::WrongOutcome {
                id,
                op: record.op.kind().to_owned(),
                outcome: outcome.kind().to_owned(),
            });
        }
        record.status = Status::Completed { outcome, at };
        Ok(())
    }

    /// Records that `id` definitely did not take effect (learnt at `at`): the checker leaves
    /// it out. Use it only when the system guarantees nothing changed (a refusal before the
    /// write path); anything less certain is [`unknown`](Self::unknown).
    pub fn fail(&mut self, id: OpId, at: u64) -> Result<(), RecordError> {
        self.pending_mut(id, Some(at))?.status = Status::Failed { at };
        Ok(())
    }

    /// Records that the outcome of `id` is indeterminate (timeout, connection lost): it may
    /// have taken effect at any time after its invocation, or never.
    pub fn unknown(&mut self, id: OpId) -> Result<(), RecordError> {
        self.pending_mut(id, None)?.status = Status::Unknown;
        Ok(())
    }

    /// Records a read of `key` that observed `observed` at `at`, invoked and answered at that
    /// instant, under [`FINAL_READER`]. Taken after every other operation answered (once the
    /// cluster healed), it makes the linearizability check also prove that every acknowledged
    /// write survived or was overwritten by a write that could follow it.
    pub fn final_read(&mut self, key: K, observed: Option<V>, at: u64) -> OpId {
        let id = self.invoke(FINAL_READER, key, Op::Get, at);
        self.records[id.0].status = Status::Completed {
            outcome: Outcome::Read(observed),
            at,
        };
        id
    }

    /// Every operation, in invocation-call order (the order `invoke` was called).
    pub fn records(&self) -> &[Record<K, V>] {
        &self.records
    }

    /// The operation `id`, if it is in this history.
    pub fn record(&self, id: OpId) -> Option<&Record<K, V>> {
        self.records.get(id.0)
    }

    /// How many operations were recorded.
    pub fn len(&self) -> usize {
        self.records.len()
    }

    /// Whether nothing was recorded.
    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    /// The keys, in the order they first appear.
    pub fn keys(&self) -> Vec<&K> {
        let mut seen = HashSet::new();
        self.records
            .iter()
            .map(|record| &record.key)
            .filter(|key| seen.insert(*key))
            .collect()
    }

    /// Checks the history with the default [`Checker`] (its state bound).
    pub fn check(&self) -> Result<(), CheckError<K, V>> {
        Checker::default().check(self)
    }

    fn pending_mut(&mut self, id: OpId, at: Option<u64>) -> Result<&mut Record<K, V>, RecordError> {
        let record = self
            .records
            .get_mut(id.0)
            .ok_or(RecordError::NoSuchOp(id))?;
        if record.status != Status::Pending {
            return Err(RecordError::AlreadyResolved(id));
        }
        if let Some(at) = at
            && at < record.invoked_at
        {
            return Err(RecordError::AnsweredBeforeInvoked {
                id,
                invoked_at: record.invoked_at,
                at,
            });
        }
        Ok(record)
    }
}

impl<K: Debug, V: Debug> fmt::Display for History<K, V> {
    /// One line per operation, for a failed test's output.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for record in &self.records {
            writeln!(f, "{record}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recording_mistakes_are_refused() {
        let mut history = History::<&str, &str>::new();
        let put = history.invoke(1, "k", Op::Put("a"), 10);
        assert_eq!(
            history.complete(put, Outcome::Read(None), 20),
            Err(RecordError::WrongOutcome {
                id: put,
                op: "put".into(),
                outcome: "read".into()
            })
        );
        assert_eq!(
            history.complete(put, Outcome::Written, 5),
            Err(RecordError::AnsweredBeforeInvoked {
                id: put,
                invoked_at: 10,
                at: 5
            })
        );
        assert_eq!(history.complete(put, Outcome::Written, 20), Ok(()));
        assert_eq!(history.unknown(put), Err(RecordError::AlreadyResolved(put)));
        assert_eq!(
            history.fail(OpId(7), 30),
            Err(RecordError::NoSuchOp(OpId(7)))
        );
    }

    #[test]
    fn records_show_their_interval_and_answer() {
        let mut history = History::<&str, &str>::new();
        let put = history.invoke(1, "k", Op::Put("a"), 10);
        history.complete(put, Outcome::Written, 20).expect("valid");
        let lost = history.invoke(2, "k", Op::Delete, 15);
        history.unknown(lost).expect("valid");
        history.final_read("k", Some("a"), 40);
        assert_eq!(
            history.to_string(),
            "#0 client 1 key \"k\": put \"a\" -> ok [10, 20]\n\
             #1 client 2 key \"k\": delete -> unknown [15, never answered)\n\
             #2 final read key \"k\": get -> \"a\" [40, 40]\n"
        );
    }
}
