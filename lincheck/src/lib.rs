//! cfgnode history checker: is a recorded concurrent history of puts, gets, compare-and-sets
//! and deletes linearizable? Issue 14's Jepsen-style test records one against a cluster under
//! kill -9 and partitions (docs/replication.md, "History checker") and checks it here. Pure: no
//! IO, no clock but the one [`Recorder`] stamps with.
//!
//! # Layout
//!
//! - [`Op`] and [`Outcome`] (`model.rs`): the register every key is, absent (`None`) at first;
//!   what a client asks and what it can be told. [`Op::apply`] is the sequential meaning.
//! - [`History`] (`history.rs`): invocations and how each ended, on caller-supplied `u64` times:
//!   [`History::complete`], [`History::fail`] (definitely did not happen),
//!   [`History::unknown`] (indeterminate: may have happened at any time after its invocation),
//!   and [`History::final_read`] for the reads taken once the cluster healed. Recording
//!   mistakes are a typed [`RecordError`].
//! - [`Recorder`] (`recorder.rs`): the same behind a mutex, stamped from one monotonic clock,
//!   for concurrent clients.
//! - [`Checker`] (`check.rs`): the WGL search (Wing & Gong, with Lowe's memoization), one key at
//!   a time (linearizability is local), bounded by [`Checker::max_states`]. A failure is a
//!   [`CheckError::Violation`] whose [`Violation`] names the key, the longest explainable
//!   prefix, and the answer nothing explains; a search past its bound is
//!   [`CheckError::Inconclusive`].
//! - [`History::acknowledged_writes_survive`] (`survive.rs`): a weaker, direct check that every
//!   acknowledged write is the final value or could have been overwritten ([`LostWrites`]).
//!
//! # Place in the map
//!
//! Depends on no crate of ours, and only tests should depend on it: issue 14's replication test
//! in `cfgnode-tests` records its history with [`Recorder`] and checks it here.

mod check;
mod history;
mod model;
mod recorder;
mod survive;

pub use check::{CheckError, Checker, DEFAULT_MAX_STATES, Violation};
pub use history::{ClientId, FINAL_READER, History, OpId, Record, RecordError, Status};
pub use model::{Op, Outcome};
pub use recorder::Recorder;
pub use survive::{LostWrite, LostWrites};
