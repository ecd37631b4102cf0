//! Generated histories: recorded from a real sequential execution with random overlapping
//! intervals around each operation's moment, they must pass; with one read corrupted to a value
//! it provably cannot have seen, they must fail.

use std::collections::HashMap;
use std::time::Instant;

use cfgnode_lincheck::{CheckError, History, Op, Outcome};
use proptest::prelude::*;

/// How one operation of a plan ends.
#[derive(Clone, Copy, Debug)]
enum Fate {
    /// Took effect and was answered.
    Answered,
    /// Took effect, but the client timed out.
    AppliedThenTimedOut,
    /// Never took effect, and the client timed out.
    LostThenTimedOut,
    /// Refused before it changed anything.
    Refused,
}

/// Which compare-and-set a plan asks.
#[derive(Clone, Copy, Debug)]
enum Expect {
    /// The value the key holds (it swaps, unless something else wins first).
    Current,
    /// Absent: create only.
    Absent,
    /// Some value written to the key earlier (by index, modulo how many there are).
    Earlier(usize),
}

#[derive(Clone, Copy, Debug)]
enum Kind {
    Put,
    Get,
    Cas(Expect),
    Delete,
}

/// One planned operation: which key, what, how long before and after its moment its
/// interval reaches, and how it ends.
#[derive(Clone, Copy, Debug)]
struct Plan {
    key: usize,
    kind: Kind,
    lead: u64,
    lag: u64,
    fate: Fate,
}

/// How a recorded operation ended, before it goes into a `History`.
#[derive(Clone, Debug)]
enum End {
    Answered(Outcome<String>, u64),
    Unknown,
    Failed(u64),
}

/// One recorded operation, editable before it becomes a `History`.
#[derive(Clone, Debug)]
struct Recorded {
    key: String,
    op: Op<String>,
    invoked_at: u64,
    end: End,
}

const KEYS: usize = 3;
/// Time between two operations' moments; intervals reach up to 2.5 of these either side, so up
/// to five operations overlap.
const STEP: u64 = 100;

fn plan() -> impl Strategy<Value = Plan> {
    let kind = prop_oneof![
        3 => Just(Kind::Put),
        4 => Just(Kind::Get),
        1 => Just(Kind::Cas(Expect::Current)),
        1 => Just(Kind::Cas(Expect::Absent)),
        1 => any::<usize>().prop_map(|i| Kind::Cas(Expect::Earlier(i))),
        1 => Just(Kind::Delete),
    ];
    let fate = prop_oneof![
        8 => Just(Fate::Answered),
        1 => Just(Fate::AppliedThenTimedOut),
        1 => Just(Fate::LostThenTimedOut),
        1 => Just(Fate::Refused),
    ];
    (0..KEYS, kind, 0..=250u64, 0..=250u64, fate).prop_map(|(key, kind, lead, lag, fate)| Plan {
        key,
        kind,
        lead,
        lag,
        fate,
    })
}

/// Runs the plans one after another on real registers, operation `i` at moment
/// `(i + 3) * STEP`, and records each inside its interval; then reads every key at the end.
fn execute(plans: &[Plan]) -> Vec<Recorded> {
    let mut state: Vec<Option<String>> = vec![None; KEYS];
    let mut written: Vec<Vec<String>> = vec![Vec::new(); KEYS];
    let mut recorded = Vec::new();
    for (i, plan) in plans.iter().enumerate() {
        let moment = (i as u64 + 3) * STEP;
        let value = format!("v{i}");
        let key_state = &state[plan.key];
        let op = match plan.kind {
            Kind::Put => Op::Put(value.clone()),
            Kind::Get => Op::Get,
            Kind::Delete => Op::Delete,
            Kind::Cas(expect) => Op::Cas {
                expect: match expect {
                    Expect::Current => key_state.clone(),
                    Expect::Absent => None,
                    Expect::Earlier(n) => {
                        let earlier = &written[plan.key];
                        (!earlier.is_empty()).then(|| earlier[n % earlier.len()].clone())
                    }
                },
                new: value.clone(),
            },
        };
        let (outcome, after) = op.apply(key_state);
        let applied = matches!(plan.fate, Fate::Answered | Fate::AppliedThenTimedOut);
        if applied {
            state[plan.key] = after;
        }
        if !matches!(op, Op::Get) {
            written[plan.key].push(value);
        }
        let completed_at = moment + plan.lag;
        recorded.push(Recorded {
            key: format!("k{}", plan.key),
            op,
            invoked_at: moment - plan.lead,
            end: match plan.fate {
                Fate::Answered => End::Answered(outcome, completed_at),
                Fate::AppliedThenTimedOut | Fate::LostThenTimedOut => End::Unknown,
                Fate::Refused => End::Failed(completed_at),
            },
        });
    }
    let end = (plans.len() as u64 + 10) * STEP;
    for (key, observed) in state.into_iter().enumerate() {
        recorded.push(Recorded {
            key: format!("k{key}"),
            op: Op::Get,
            invoked_at: end,
            end: End::Answered(Outcome::Read(observed), end),
        });
    }
    recorded
}

fn to_history(recorded: &[Recorded]) -> History<String, String> {
    let mut history = History::new();
    for (client, r) in recorded.iter().enumerate() {
        let id = history.invoke(client as u64, r.key.clone(), r.op.clone(), r.invoked_at);
        let result = match &r.end {
            End::Answered(outcome, at) => history.complete(id, outcome.clone(), *at),
            End::Unknown => history.unknown(id),
            End::Failed(at) => history.fail(id, *at),
        };
        result.expect("the generator records well-formed operations");
    }
    history
}

/// Changes one answered read (chosen by `pick`) to a value it cannot have seen: one written
/// only by an operation invoked after the read answered (values are unique), if `future` and
/// there is one, else one nobody wrote. Returns the read's key, or `None` without reads.
fn corrupt(recorded: &mut [Recorded], pick: usize, future: bool) -> Option<String> {
    let reads: Vec<usize> = (0..recorded.len())
        .filter(|&i| {
            matches!(recorded[i].op, Op::Get) && matches!(recorded[i].end, End::Answered(..))
        })
        .collect();
    let read = *reads.get(pick % reads.len().max(1))?;
    let End::Answered(_, answered_at) = recorded[read].end else {
        return None;
    };
    let key = recorded[read].key.clone();
    let later_value = recorded.iter().find_map(|r| match &r.op {
        Op::Put(value) | Op::Cas { new: value, .. }
            if r.key == key && r.invoked_at > answered_at =>
        {
            Some(value.clone())
        }
        _ => None,
    });
    let impossible = match later_value {
        Some(value) if future => value,
        _ => "never-written".to_owned(),
    };
    recorded[read].end = End::Answered(Outcome::Read(Some(impossible)), answered_at);
    Some(key)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn recorded_executions_are_linearizable(plans in prop::collection::vec(plan(), 1..40)) {
        let recorded = execute(&plans);
        let history = to_history(&recorded);
        if let Err(error) = history.check() {
            return Err(TestCaseError::fail(format!("{error}\nhistory:\n{history}")));
        }
        // The final reads are the last KEYS operations: every acknowledged write survived.
        let finals: HashMap<String, Option<String>> = recorded[recorded.len() - KEYS..]
            .iter()
            .map(|r| match &r.end {
                End::Answered(Outcome::Read(observed), _) => (r.key.clone(), observed.clone()),
                _ => unreachable!("final reads are answered reads"),
            })
            .collect();
        if let Err(lost) = history.acknowledged_writes_survive(&finals) {
            return Err(TestCaseError::fail(format!("{lost}\nhistory:\n{history}")));
        }
    }

    #[test]
    fn an_impossible_read_is_rejected(
        plans in prop::collection::vec(plan(), 1..40),
        pick in any::<usize>(),
        future in any::<bool>(),
    ) {
        let mut recorded = execute(&plans);
        let key = corrupt(&mut recorded, pick, future).expect("the final reads are reads");
        let history = to_history(&recorded);
        match history.check() {
            Err(CheckError::Violation(violation)) => prop_assert_eq!(violation.key, key),
            other => {
                return Err(TestCaseError::fail(format!(
                    "expected a violation on {key}, got {other:?}\nhistory:\n{history}"
                )));
            }
        }
    }
}

/// A deterministic xorshift generator, so the performance history is the same every run.
struct Xorshift(u64);

impl Xorshift {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

/// Five clients, each running 200 operations one at a time on three keys, with random
/// latencies; each operation takes effect at a random moment inside its interval, and about
/// one in thirty times out (half of those took effect).
fn five_clients(rng: &mut Xorshift) -> Vec<Recorded> {
    struct Timed {
        client: u64,
        key: usize,
        kind: u64,
        invoked_at: u64,
        moment: u64,
        completed_at: u64,
        fate: u64,
    }
    let mut timed = Vec::new();
    for client in 0..5 {
        let mut clock = client * 7;
        for _ in 0..200 {
            let invoked_at = clock + rng.below(20);
            let moment = invoked_at + 1 + rng.below(100);
            let completed_at = moment + 1 + rng.below(100);
            clock = completed_at + 1 + rng.below(20);
            timed.push(Timed {
                client,
                key: rng.below(KEYS as u64) as usize,
                kind: rng.below(100),
                invoked_at,
                moment,
                completed_at,
                fate: rng.below(60),
            });
        }
    }
    timed.sort_by_key(|t| (t.moment, t.client));
    let mut state: Vec<Option<String>> = vec![None; KEYS];
    let mut recorded = Vec::new();
    for (i, t) in timed.iter().enumerate() {
        let value = format!("c{}-{i}", t.client);
        let op = match t.kind {
            0..40 => Op::Get,
            40..65 => Op::Put(value),
            65..75 => Op::Cas {
                expect: state[t.key].clone(),
                new: value,
            },
            75..85 => Op::Cas {
                expect: None,
                new: value,
            },
            _ => Op::Delete,
        };
        let (outcome, after) = op.apply(&state[t.key]);
        let end = match t.fate {
            0 => End::Unknown,
            1 => {
                state[t.key] = after;
                End::Unknown
            }
            _ => {
                state[t.key] = after;
                End::Answered(outcome, t.completed_at)
            }
        };
        recorded.push(Recorded {
            key: format!("k{}", t.key),
            op,
            invoked_at: t.invoked_at,
            end,
        });
    }
    let end = timed.iter().map(|t| t.completed_at).max().unwrap_or(0) + 1_000;
    for (key, observed) in state.into_iter().enumerate() {
        recorded.push(Recorded {
            key: format!("k{key}"),
            op: Op::Get,
            invoked_at: end,
            end: End::Answered(Outcome::Read(observed), end),
        });
    }
    recorded
}

#[test]
fn five_clients_by_two_hundred_operations_check_quickly() {
    let mut rng = Xorshift(0x9e37_79b9_7f4a_7c15);
    let mut recorded = five_clients(&mut rng);
    let history = to_history(&recorded);
    assert_eq!(history.len(), 1_000 + KEYS);

    let started = Instant::now();
    let verdict = history.check();
    println!(
        "1000 operations on 3 keys, linearizable: checked in {:?}",
        started.elapsed()
    );
    if let Err(error) = verdict {
        panic!("{error}");
    }

    let key = corrupt(&mut recorded, 500, false).expect("there are reads");
    let history = to_history(&recorded);
    let started = Instant::now();
    let verdict = history.check();
    println!(
        "the same with one impossible read: checked in {:?}",
        started.elapsed()
    );
    match verdict {
        Err(CheckError::Violation(violation)) => assert_eq!(violation.key, key),
        other => panic!("expected a violation on {key}, got {other:?}"),
    }
}
