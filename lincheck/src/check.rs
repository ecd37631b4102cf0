//! The linearizability check: Wing & Gong's search as Lowe made it fast (WGL), one key at a time.
//!
//! # Why per key
//!
//! Linearizability is local (Herlihy & Wing): a history of independent objects is linearizable
//! exactly when each object's sub-history is. Every key is its own register, so the history is
//! split by key and each part searched alone, which keeps the search exponential only in the
//! concurrency of one key, not of the whole history.
//!
//! # The search
//!
//! Every operation becomes a call entry (its invocation) and, if it completed, a return entry
//! (its answer), in one list ordered by time; at equal times calls come first, so stamps that
//! touch count as concurrent. The search walks the list: at a call it tries to place that
//! operation next in the linearization (the register's rules allow its answer from the current
//! state); placed, the operation's entries leave the list and the walk restarts at the head. At
//! a return whose operation is not placed yet, that answer arrived before the operation could
//! take effect in this order: the search takes back the last placed operation and tries the
//! next candidate after it. The history is linearizable when the list holds no return entry any
//! more. A cache of (placed set as a bitset, register state) cuts every configuration already
//! explored (Lowe's memoization), and bounds the work: past [`Checker::max_states`] cached
//! configurations on one key the answer is [`CheckError::Inconclusive`], not a hang.
//!
//! # Unknown operations
//!
//! An unknown (or pending) operation has no return entry: its answer never arrives, so nothing
//! forces it to be placed, and it may be placed at any point after its call (it took effect
//! then) or never (it did not). Its answer is unconstrained, so only its effect is applied, and
//! it is tried only where it changes the state (elsewhere placing it equals leaving it out). An
//! unknown read constrains nothing and is dropped, as is every failed operation.
//!
//! # Two reductions that keep unknown writes cheap
//!
//! - Values that no completed read observed and no compare-and-set expects are
//!   indistinguishable to every operation, so the state interns them all as one value.
//! - Unknown operations with the same effect (after that interning) are interchangeable: if a
//!   linearization places a later-invoked one before an earlier-invoked one, swapping them gives
//!   another linearization. So they are placed in invocation order only. Timeouts of writes
//!   that nobody read then cost a counter, not a subset: `k` of them make `k + 1`
//!   configurations, not `2^k`.

use std::collections::{HashMap, HashSet};
use std::fmt::{self, Debug};
use std::hash::Hash;

use crate::history::{History, Record, Status};
use crate::model::{Op, Outcome, Shown};

/// The default bound on cached configurations per key: a few million configurations of a key
/// with a few hundred operations fit in a few hundred MB and take seconds at most.
pub const DEFAULT_MAX_STATES: usize = 2_000_000;

/// How many operations of a violation's prefix its `Display` shows (the last ones: the ones
/// next to where the search got stuck).
const SHOWN_PREFIX: usize = 10;

/// Checks histories for linearizability, with a bound on the search.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Checker {
    /// The most configurations the search caches for one key before it gives up with
    /// [`CheckError::Inconclusive`]. Each costs about one bit per operation on the key.
    pub max_states: usize,
}

impl Default for Checker {
    fn default() -> Self {
        Checker {
            max_states: DEFAULT_MAX_STATES,
        }
    }
}

/// Why a history did not pass.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CheckError<K, V> {
    /// One key's operations have no linearization: the system broke its promise.
    Violation(Box<Violation<K, V>>),
    /// The search on `key` passed its bound before it found a linearization or ruled every
    /// order out: neither a pass nor a failure.
    Inconclusive {
        /// The key whose search was cut.
        key: K,
        /// How many configurations were cached when it was cut.
        explored: usize,
        /// The bound ([`Checker::max_states`]).
        max_states: usize,
    },
}

/// One key's history has no linearization; the fields describe where the search got furthest.
///
/// The search's deepest point is the most useful description: the operations in `linearized`
/// explain every answer up to there, and `stuck` is an answer that no order of the operations
/// still open (`open`) could explain next.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Violation<K, V> {
    /// The key.
    pub key: K,
    /// How many operations on the key were checked (failed ones and unknown reads excluded).
    pub checked: usize,
    /// The longest prefix of a linearization the search found, in linearization order.
    pub linearized: Vec<Record<K, V>>,
    /// The register's value after `linearized`.
    pub state: Option<V>,
    /// A completed operation whose answer arrived before the search could place it after
    /// `linearized`: from `state`, it could not take effect, and no open operation placed first
    /// led to a linearization.
    pub stuck: Record<K, V>,
    /// The other operations invoked before `stuck`'s answer and not in `linearized`: the
    /// candidates that were tried before it.
    pub open: Vec<Record<K, V>>,
}

impl Checker {
    /// Checks every key's sub-history, in the order keys first appear; stops at the first key
    /// that is not linearizable or whose search passed the bound.
    pub fn check<K, V>(&self, history: &History<K, V>) -> Result<(), CheckError<K, V>>
    where
        K: Clone + Eq + Hash + Debug,
        V: Clone + Eq + Hash + Debug,
    {
        let mut by_key: HashMap<&K, Vec<usize>> = HashMap::new();
        for (index, record) in history.records().iter().enumerate() {
            by_key.entry(&record.key).or_default().push(index);
        }
        for key in history.keys() {
            let indices = by_key.get(key).map(Vec::as_slice).unwrap_or_default();
            let records: Vec<&Record<K, V>> =
                indices.iter().map(|&i| &history.records()[i]).collect();
            KeySearch::new(&records).run(self.max_states, key)?;
        }
        Ok(())
    }
}

/// The interned state of the register: [`ABSENT`], [`UNREFERENCED`] or a referenced value's id.
type State = u32;

/// The key is absent.
const ABSENT: State = 0;
/// Any value that no completed read observed and no compare-and-set expects.
const UNREFERENCED: State = 1;

/// Marks the end of the entry list.
const NIL: usize = usize::MAX;
/// The list's head sentinel.
const HEAD: usize = 0;

/// An operation in the register's rules, on interned values.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Step {
    /// A put (`Write(value)`) or a delete (`Write(ABSENT)`).
    Write(State),
    /// A completed read that observed this.
    Read(State),
    /// A compare-and-set; `swapped` is its answer (unused when the operation is unknown).
    Cas {
        expect: State,
        new: State,
        swapped: bool,
    },
}

/// One operation of the key being searched.
struct KeyOp<'a, K, V> {
    record: &'a Record<K, V>,
    step: Step,
    /// Indeterminate: placed only for its effect, and never forced.
    unknown: bool,
    /// For an unknown operation: the previous unknown operation (by invocation) with the same
    /// effect, which must be placed before this one may be.
    after: Option<usize>,
    /// Its return entry, if it completed.
    ret: Option<usize>,
}

impl<K, V> KeyOp<'_, K, V> {
    /// The state after placing this operation in `state`, or `None` when it cannot go there:
    /// its answer contradicts the state, or (unknown) it would change nothing.
    fn place(&self, state: State) -> Option<State> {
        let after = match self.step {
            Step::Write(value) => value,
            Step::Read(observed) => (state == observed).then_some(state)?,
            Step::Cas { expect, new, .. } if self.unknown => {
                if state == expect {
                    new
                } else {
                    state
                }
            }
            Step::Cas {
                expect,
                new,
                swapped: true,
            } => (state == expect).then_some(new)?,
            Step::Cas {
                expect,
                swapped: false,
                ..
            } => (state != expect).then_some(state)?,
        };
        if self.unknown && after == state {
            return None;
        }
        Some(after)
    }
}

/// An entry of the time-ordered list: an operation's call or its return.
#[derive(Clone, Copy)]
struct Entry {
    op: usize,
    is_call: bool,
}

/// The furthest the search got, kept to describe a violation.
struct Deepest {
    prefix: Vec<usize>,
    stuck: usize,
    open: Vec<usize>,
}

/// The WGL search over one key's operations.
struct KeySearch<'a, K, V> {
    ops: Vec<KeyOp<'a, K, V>>,
    /// `entries[0]` is the head sentinel; the rest in time order.
    entries: Vec<Entry>,
    prev: Vec<usize>,
    next: Vec<usize>,
}

impl<'a, K, V> KeySearch<'a, K, V>
where
    K: Clone + Eq + Hash + Debug,
    V: Clone + Eq + Hash + Debug,
{
    fn new(records: &[&'a Record<K, V>]) -> Self {
        let kept: Vec<&Record<K, V>> = records
            .iter()
            .copied()
            .filter(|record| match record.status {
                Status::Failed { .. } => false,
                Status::Unknown | Status::Pending => record.op != Op::Get,
                Status::Completed { .. } => true,
            })
            .collect();

        // Intern the values some operation can tell apart: observed by a completed read, or
        // expected by a compare-and-set. Everything else is UNREFERENCED.
        let mut referenced: HashMap<&V, State> = HashMap::new();
        for record in &kept {
            let value = match (&record.op, record.outcome()) {
                (Op::Get, Some(Outcome::Read(Some(value)))) => value,
                (
                    Op::Cas {
                        expect: Some(value),
                        ..
                    },
                    _,
                ) => value,
                _ => continue,
            };
            let id = referenced.len() as State + 2;
            referenced.entry(value).or_insert(id);
        }
        let intern = |value: Option<&V>| match value {
            None => ABSENT,
            Some(value) => referenced.get(value).copied().unwrap_or(UNREFERENCED),
        };

        let mut ops: Vec<KeyOp<K, V>> = kept
            .iter()
            .map(|&record| {
                let step = match (&record.op, record.outcome()) {
                    (Op::Put(value), _) => Step::Write(intern(Some(value))),
                    (Op::Delete, _) => Step::Write(ABSENT),
                    (Op::Get, Some(Outcome::Read(observed))) => {
                        Step::Read(intern(observed.as_ref()))
                    }
                    (Op::Cas { expect, new }, outcome) => Step::Cas {
                        expect: intern(expect.as_ref()),
                        new: intern(Some(new)),
                        swapped: outcome == Some(&Outcome::Cas(true)),
                    },
                    // Never taken: `History::complete` and deserialization refuse a get
                    // answered with anything but a read, and unknown gets were dropped above.
                    (Op::Get, _) => Step::Read(ABSENT),
                };
                KeyOp {
                    record,
                    step,
                    unknown: record.is_indeterminate(),
                    after: None,
                    ret: None,
                }
            })
            .collect();

        // Chain unknown operations with the same effect in invocation order.
        let mut by_invocation: Vec<usize> = (0..ops.len()).filter(|&i| ops[i].unknown).collect();
        by_invocation.sort_by_key(|&i| (ops[i].record.invoked_at, i));
        let mut last_of_effect: HashMap<Step, usize> = HashMap::new();
        for i in by_invocation {
            let effect = match ops[i].step {
                Step::Cas { expect, new, .. } => Step::Cas {
                    expect,
                    new,
                    swapped: false,
                },
                step => step,
            };
            ops[i].after = last_of_effect.insert(effect, i);
        }

        // The time-ordered list: calls before returns at the same time (touching intervals
        // are concurrent).
        let mut events: Vec<(u64, bool, usize)> = Vec::with_capacity(ops.len() * 2);
        for (i, op) in ops.iter().enumerate() {
            events.push((op.record.invoked_at, false, i));
            if let Some(at) = op.record.completed_at() {
                events.push((at, true, i));
            }
        }
        events.sort_unstable();
        let mut entries = vec![Entry {
            op: usize::MAX,
            is_call: false,
        }];
        for (_, is_return, i) in events {
            if is_return {
                ops[i].ret = Some(entries.len());
            }
            entries.push(Entry {
                op: i,
                is_call: !is_return,
            });
        }
        let len = entries.len();
        let prev = (0..len).map(|i| i.checked_sub(1).unwrap_or(NIL)).collect();
        let next = (0..len)
            .map(|i| if i + 1 < len { i + 1 } else { NIL })
            .collect();
        KeySearch {
            ops,
            entries,
            prev,
            next,
        }
    }

    fn run(mut self, max_states: usize, key: &K) -> Result<(), CheckError<K, V>> {
        let words = self.ops.len().div_ceil(64);
        let mut placed = vec![0u64; words];
        let mut cache: HashSet<(Box<[u64]>, State)> = HashSet::new();
        // Each placed operation's call entry and the state before it.
        let mut stack: Vec<(usize, State)> = Vec::new();
        let mut state = ABSENT;
        let mut deepest: Option<Deepest> = None;
        let mut entry = self.next[HEAD];

        while entry != NIL {
            let Entry { op, is_call } = self.entries[entry];
            if is_call {
                let key_op = &self.ops[op];
                let in_turn = key_op.after.is_none_or(|before| is_set(&placed, before));
                if in_turn && let Some(after) = key_op.place(state) {
                    set(&mut placed, op, true);
                    if cache.insert((placed.clone().into_boxed_slice(), after)) {
                        if cache.len() > max_states {
                            return Err(CheckError::Inconclusive {
                                key: key.clone(),
                                explored: cache.len(),
                                max_states,
                            });
                        }
                        stack.push((entry, state));
                        state = after;
                        self.lift(entry);
                        entry = self.next[HEAD];
                        continue;
                    }
                    set(&mut placed, op, false);
                }
                entry = self.next[entry];
            } else {
                // This answer arrived and its operation is not placed: every order from here
                // fails. Take back the last placed operation and try the next candidate.
                if deepest
                    .as_ref()
                    .is_none_or(|deepest| stack.len() > deepest.prefix.len())
                {
                    deepest = Some(self.describe(&stack, op, entry));
                }
                let Some((call, before)) = stack.pop() else {
                    let deepest = deepest.expect("recorded just above");
                    return Err(CheckError::Violation(Box::new(
                        self.violation(key, deepest),
                    )));
                };
                state = before;
                set(&mut placed, self.entries[call].op, false);
                self.unlift(call);
                entry = self.next[call];
            }
        }
        Ok(())
    }

    /// Takes a placed operation's call and return entries out of the list.
    fn lift(&mut self, call: usize) {
        self.unlink(call);
        if let Some(ret) = self.ops[self.entries[call].op].ret {
            self.unlink(ret);
        }
    }

    /// Puts them back, in the reverse order (the removed entries kept their links).
    fn unlift(&mut self, call: usize) {
        if let Some(ret) = self.ops[self.entries[call].op].ret {
            self.relink(ret);
        }
        self.relink(call);
    }

    fn unlink(&mut self, entry: usize) {
        let (prev, next) = (self.prev[entry], self.next[entry]);
        self.next[prev] = next;
        if next != NIL {
            self.prev[next] = prev;
        }
    }

    fn relink(&mut self, entry: usize) {
        let (prev, next) = (self.prev[entry], self.next[entry]);
        self.next[prev] = entry;
        if next != NIL {
            self.prev[next] = entry;
        }
    }

    fn describe(&self, stack: &[(usize, State)], stuck: usize, ret: usize) -> Deepest {
        let mut open = Vec::new();
        let mut entry = self.next[HEAD];
        while entry != ret && entry != NIL {
            let Entry { op, is_call } = self.entries[entry];
            if is_call {
                open.push(op);
            }
            entry = self.next[entry];
        }
        open.retain(|&op| op != stuck);
        Deepest {
            prefix: stack
                .iter()
                .map(|&(call, _)| self.entries[call].op)
                .collect(),
            stuck,
            open,
        }
    }

    fn violation(&self, key: &K, deepest: Deepest) -> Violation<K, V> {
        let linearized: Vec<Record<K, V>> = deepest
            .prefix
            .iter()
            .map(|&op| self.ops[op].record.clone())
            .collect();
        // Replay with the real values (the search only kept interned ones).
        let state = linearized
            .iter()
            .fold(None, |state, record| record.op.effect(&state));
        Violation {
            key: key.clone(),
            checked: self.ops.len(),
            linearized,
            state,
            stuck: self.ops[deepest.stuck].record.clone(),
            open: deepest
                .open
                .iter()
                .map(|&op| self.ops[op].record.clone())
                .collect(),
        }
    }
}

fn is_set(bits: &[u64], index: usize) -> bool {
    bits[index / 64] & (1 << (index % 64)) != 0
}

fn set(bits: &mut [u64], index: usize, on: bool) {
    if on {
        bits[index / 64] |= 1 << (index % 64);
    } else {
        bits[index / 64] &= !(1 << (index % 64));
    }
}

impl<K: Debug, V: Debug> fmt::Display for Violation<K, V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "key {:?} is not linearizable: no order of its {} operations explains every answer.",
            self.key, self.checked
        )?;
        writeln!(
            f,
            "The longest explainable prefix has {} operations and leaves the key {}:",
            self.linearized.len(),
            Shown(&self.state)
        )?;
        let omitted = self.linearized.len().saturating_sub(SHOWN_PREFIX);
        if omitted > 0 {
            writeln!(f, "  ... {omitted} earlier operations")?;
        }
        for record in &self.linearized[omitted..] {
            writeln!(f, "  {record}")?;
        }
        writeln!(f, "and then this answer cannot be explained:")?;
        writeln!(f, "  {}", self.stuck)?;
        if self.open.is_empty() {
            write!(f, "(no other operation was open when it answered)")
        } else {
            writeln!(
                f,
                "by any order of the operations still open when it answered:"
            )?;
            for (i, record) in self.open.iter().enumerate() {
                if i > 0 {
                    writeln!(f)?;
                }
                write!(f, "  {record}")?;
            }
            Ok(())
        }
    }
}

impl<K: Debug, V: Debug> fmt::Display for CheckError<K, V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CheckError::Violation(violation) => fmt::Display::fmt(violation, f),
            CheckError::Inconclusive {
                key,
                explored,
                max_states,
            } => write!(
                f,
                "inconclusive: the search on key {key:?} cached {explored} configurations, past \
                 its bound of {max_states}, before it found a linearization or ruled them all \
                 out; raise Checker::max_states, or run fewer concurrent clients per key or \
                 shorter timeouts (each unknown write stays open to the end)"
            ),
        }
    }
}

impl<K: Debug, V: Debug> std::error::Error for CheckError<K, V> {}
