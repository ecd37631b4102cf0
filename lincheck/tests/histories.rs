//! Hand-written histories: ones a linearizable register can produce must pass, ones it cannot
//! must fail, each failure naming what it found.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use cfgnode_lincheck::{
    CheckError, Checker, History, Op, OpId, Outcome, RecordError, Recorder, Violation,
};

type Key = &'static str;
type Value = &'static str;

/// Builds histories one operation at a time, each with its interval.
#[derive(Default)]
struct Script {
    history: History<Key, Value>,
}

impl Script {
    fn done(&mut self, key: Key, op: Op<Value>, outcome: Outcome<Value>, span: [u64; 2]) -> OpId {
        let id = self.history.invoke(0, key, op, span[0]);
        self.history
            .complete(id, outcome, span[1])
            .expect("a well-formed script");
        id
    }

    fn put(&mut self, key: Key, value: Value, span: [u64; 2]) -> OpId {
        self.done(key, Op::Put(value), Outcome::Written, span)
    }

    fn get(&mut self, key: Key, observed: Option<Value>, span: [u64; 2]) -> OpId {
        self.done(key, Op::Get, Outcome::Read(observed), span)
    }

    fn cas(
        &mut self,
        key: Key,
        expect: Option<Value>,
        new: Value,
        swapped: bool,
        span: [u64; 2],
    ) -> OpId {
        self.done(key, Op::Cas { expect, new }, Outcome::Cas(swapped), span)
    }

    fn delete(&mut self, key: Key, span: [u64; 2]) -> OpId {
        self.done(key, Op::Delete, Outcome::Written, span)
    }

    /// An operation that never answered (a timeout).
    fn unknown(&mut self, key: Key, op: Op<Value>, invoked_at: u64) -> OpId {
        let id = self.history.invoke(0, key, op, invoked_at);
        self.history.unknown(id).expect("a well-formed script");
        id
    }

    /// An operation that was refused before it changed anything.
    fn failed(&mut self, key: Key, op: Op<Value>, span: [u64; 2]) -> OpId {
        let id = self.history.invoke(0, key, op, span[0]);
        self.history
            .fail(id, span[1])
            .expect("a well-formed script");
        id
    }

    fn final_read(&mut self, key: Key, observed: Option<Value>, at: u64) -> OpId {
        self.history.final_read(key, observed, at)
    }

    fn passes(&self) {
        if let Err(error) = self.history.check() {
            panic!(
                "expected a linearizable history, got:\n{error}\nhistory:\n{}",
                self.history
            );
        }
    }

    fn violation(&self) -> Violation<Key, Value> {
        match self.history.check() {
            Err(CheckError::Violation(violation)) => {
                println!("{violation}");
                *violation
            }
            other => panic!(
                "expected a violation, got {other:?}\nhistory:\n{}",
                self.history
            ),
        }
    }
}

// ---- histories that must pass ----

#[test]
fn a_sequential_history_passes() {
    let mut s = Script::default();
    s.get("k", None, [0, 1]);
    s.put("k", "a", [2, 3]);
    s.get("k", Some("a"), [4, 5]);
    s.cas("k", Some("a"), "b", true, [6, 7]);
    s.cas("k", Some("a"), "c", false, [8, 9]);
    s.get("k", Some("b"), [10, 11]);
    s.delete("k", [12, 13]);
    s.get("k", None, [14, 15]);
    s.cas("k", None, "c", true, [16, 17]);
    s.cas("k", None, "d", false, [18, 19]);
    s.final_read("k", Some("c"), 20);
    s.passes();
}

#[test]
fn overlapping_puts_may_land_in_either_order() {
    for observed in ["a", "b"] {
        let mut s = Script::default();
        s.put("k", "a", [0, 10]);
        s.put("k", "b", [5, 15]);
        s.get("k", Some(observed), [20, 30]);
        s.get("k", Some(observed), [40, 50]);
        s.passes();
    }
}

#[test]
fn a_read_during_a_write_sees_the_old_or_the_new_value() {
    for observed in [Some("a"), Some("b")] {
        let mut s = Script::default();
        s.put("k", "a", [0, 10]);
        s.put("k", "b", [20, 40]);
        s.get("k", observed, [25, 30]);
        s.get("k", Some("b"), [50, 60]);
        s.passes();
    }
}

#[test]
fn a_create_race_has_one_winner_whichever_it_is() {
    for (x_wins, winner) in [(true, "x"), (false, "y")] {
        let mut s = Script::default();
        s.cas("k", None, "x", x_wins, [0, 10]);
        s.cas("k", None, "y", !x_wins, [2, 12]);
        s.get("k", Some(winner), [20, 30]);
        s.passes();
    }
}

#[test]
fn an_unknown_write_may_apply_at_any_time_after_its_invocation_or_never() {
    // Applied before the first read.
    let mut s = Script::default();
    s.put("k", "a", [0, 10]);
    s.unknown("k", Op::Put("b"), 5);
    s.get("k", Some("b"), [20, 30]);
    s.passes();

    // Never applied.
    let mut s = Script::default();
    s.put("k", "a", [0, 10]);
    s.unknown("k", Op::Put("b"), 5);
    s.get("k", Some("a"), [20, 30]);
    s.final_read("k", Some("a"), 100);
    s.passes();

    // Applied long after its client gave up: between two later reads.
    let mut s = Script::default();
    s.put("k", "a", [0, 10]);
    s.unknown("k", Op::Put("b"), 5);
    s.get("k", Some("a"), [20, 30]);
    s.get("k", Some("b"), [40, 50]);
    s.passes();
}

#[test]
fn an_unknown_compare_and_set_may_have_swapped() {
    for observed in ["a", "b"] {
        let mut s = Script::default();
        s.put("k", "a", [0, 10]);
        s.unknown(
            "k",
            Op::Cas {
                expect: Some("a"),
                new: "b",
            },
            20,
        );
        s.final_read("k", Some(observed), 100);
        s.passes();
    }
}

#[test]
fn an_unanswered_operation_counts_as_unknown() {
    let mut s = Script::default();
    s.put("k", "a", [0, 10]);
    s.history.invoke(3, "k", Op::Delete, 15);
    s.get("k", None, [20, 30]);
    s.passes();
}

#[test]
fn a_failed_write_is_left_out() {
    let mut s = Script::default();
    s.put("k", "a", [0, 10]);
    s.failed("k", Op::Put("b"), [5, 15]);
    s.get("k", Some("a"), [20, 30]);
    s.passes();
}

#[test]
fn touching_intervals_count_as_concurrent() {
    // The read's invocation and the put's answer carry the same stamp: either order is fine.
    let mut s = Script::default();
    s.put("k", "a", [0, 10]);
    s.get("k", None, [10, 20]);
    s.passes();
}

#[test]
fn keys_are_checked_apart() {
    // Interleaved in time, each key's own order is linearizable.
    let mut s = Script::default();
    s.put("a", "1", [0, 10]);
    s.put("b", "2", [5, 15]);
    s.get("a", Some("1"), [20, 30]);
    s.get("b", Some("2"), [20, 30]);
    s.delete("a", [40, 50]);
    s.get("b", Some("2"), [60, 70]);
    s.get("a", None, [60, 70]);
    s.passes();
}

#[test]
fn many_unread_timeouts_stay_cheap() {
    // 40 unknown puts of values nobody read, all open to the end. Without the reductions
    // (unread values are one state; equal unknown effects are placed in invocation order)
    // refuting the impossible read at the end would try every subset of them; with them, each
    // point needs a count of them placed, not a subset.
    let script = |last_read: Value| {
        let mut s = Script::default();
        s.put("k", "a", [0, 1]);
        for i in 0..40 {
            let value = &*Box::leak(format!("t{i}").into_boxed_str());
            s.unknown("k", Op::Put(value), 2 + i);
            s.get("k", Some("a"), [2 + i, 3 + i]);
        }
        s.delete("k", [100, 101]);
        s.unknown(
            "k",
            Op::Cas {
                expect: None,
                new: "c",
            },
            105,
        );
        s.cas("k", None, "d", false, [110, 120]);
        s.get("k", Some(last_read), [130, 140]);
        s
    };
    let checker = Checker { max_states: 20_000 };
    if let Err(error) = checker.check(&script("c").history) {
        panic!("expected a pass within 20000 configurations, got:\n{error}");
    }
    match checker.check(&script("d").history) {
        Err(CheckError::Violation(violation)) => assert_eq!(violation.stuck.id, OpId(84)),
        other => panic!("expected a violation within 20000 configurations, got {other:?}"),
    }

    // Between any two of 12 sequential deletes one of the open puts may land: without placing
    // equal effects in invocation order, refuting the impossible read would try every choice
    // of which puts landed where (over a billion).
    let mut s = Script::default();
    for i in 0..40 {
        let value = &*Box::leak(format!("t{i}").into_boxed_str());
        s.unknown("k", Op::Put(value), i);
    }
    for i in 0..12 {
        s.delete("k", [100 + 10 * i, 105 + 10 * i]);
    }
    s.get("k", Some("never"), [300, 310]);
    assert!(matches!(
        checker.check(&s.history),
        Err(CheckError::Violation(_))
    ));
}

// ---- histories that must fail ----

#[test]
fn a_stale_read_after_a_completed_write_is_rejected() {
    let mut s = Script::default();
    let first = s.put("k", "a", [0, 10]);
    let second = s.put("k", "b", [20, 30]);
    let stale = s.get("k", Some("a"), [40, 50]);
    let violation = s.violation();
    assert_eq!(violation.key, "k");
    assert_eq!(violation.stuck.id, stale);
    let prefix: Vec<OpId> = violation.linearized.iter().map(|r| r.id).collect();
    assert_eq!(prefix, [first, second]);
    assert_eq!(violation.state, Some("b"));
    let shown = violation.to_string();
    assert!(shown.contains("key \"k\" is not linearizable"), "{shown}");
    assert!(shown.contains("leaves the key \"b\""), "{shown}");
    assert!(
        shown.contains("#2 client 0 key \"k\": get -> \"a\" [40, 50]"),
        "{shown}"
    );
}

#[test]
fn two_creates_that_both_succeed_are_rejected() {
    let mut s = Script::default();
    s.cas("k", None, "x", true, [0, 10]);
    s.cas("k", None, "y", true, [2, 12]);
    s.violation();
}

#[test]
fn a_read_of_a_value_never_written_is_rejected() {
    let mut s = Script::default();
    s.put("k", "a", [0, 10]);
    s.put("k", "b", [0, 10]);
    let read = s.get("k", Some("z"), [5, 15]);
    assert_eq!(s.violation().stuck.id, read);
}

#[test]
fn a_read_of_a_failed_write_is_rejected() {
    let mut s = Script::default();
    s.put("k", "a", [0, 10]);
    s.failed("k", Op::Put("b"), [5, 15]);
    s.get("k", Some("b"), [20, 30]);
    s.violation();
}

#[test]
fn a_read_cannot_see_a_write_invoked_after_it_answered() {
    let mut s = Script::default();
    s.get("k", Some("b"), [0, 10]);
    s.unknown("k", Op::Put("b"), 20);
    s.violation();
}

#[test]
fn reads_cannot_go_back_in_time() {
    // Once a read saw "b", a later read cannot see "a" again: "a" was written before "b".
    let mut s = Script::default();
    s.put("k", "a", [0, 10]);
    s.put("k", "b", [20, 100]);
    s.get("k", Some("b"), [30, 40]);
    let back = s.get("k", Some("a"), [50, 60]);
    let violation = s.violation();
    assert_eq!(violation.stuck.id, back);
    assert_eq!(violation.state, Some("b"));
}

#[test]
fn a_compare_and_set_from_the_wrong_value_is_rejected() {
    let mut s = Script::default();
    s.put("k", "a", [0, 10]);
    s.cas("k", Some("b"), "c", true, [20, 30]);
    s.violation();
}

#[test]
fn a_compare_and_set_that_refused_on_the_expected_value_is_rejected() {
    let mut s = Script::default();
    s.put("k", "a", [0, 10]);
    let refused = s.cas("k", Some("a"), "b", false, [20, 30]);
    assert_eq!(s.violation().stuck.id, refused);
}

#[test]
fn a_lost_acknowledged_write_shows_in_the_final_read() {
    let mut s = Script::default();
    s.put("k", "a", [0, 10]);
    let lost = s.put("k", "b", [20, 30]);
    s.get("k", Some("b"), [40, 50]);
    s.final_read("k", Some("a"), 1_000);
    s.violation();

    let finals = HashMap::from([("k", Some("a"))]);
    let lost_writes = s
        .history
        .acknowledged_writes_survive(&finals)
        .expect_err("the put of b was acknowledged and is gone");
    println!("{lost_writes}");
    assert_eq!(lost_writes.lost.len(), 1);
    assert_eq!(lost_writes.lost[0].write.id, lost);
    assert_eq!(lost_writes.lost[0].final_value, Some("a"));
}

#[test]
fn the_bad_key_is_named_among_good_ones() {
    let mut s = Script::default();
    s.put("good", "1", [0, 10]);
    s.put("bad", "1", [0, 10]);
    s.get("good", Some("1"), [20, 30]);
    s.delete("bad", [20, 30]);
    s.get("bad", Some("1"), [40, 50]);
    assert_eq!(s.violation().key, "bad");
}

#[test]
fn a_search_past_its_bound_is_inconclusive() {
    // `pairs` concurrent puts, each with a concurrent read of its value, then reads that go
    // back in time: refuting it means trying the concurrent operations' orders first.
    let script = |pairs: usize| {
        let mut s = Script::default();
        for i in 0..pairs {
            let value = &*Box::leak(format!("v{i}").into_boxed_str());
            s.put("k", value, [0, 100]);
            s.get("k", Some(value), [0, 100]);
        }
        s.get("k", Some("v0"), [200, 210]);
        s.get("k", Some("v1"), [220, 230]);
        s.get("k", Some("v0"), [240, 250]);
        s
    };
    let checker = Checker { max_states: 50 };
    match checker.check(&script(12).history) {
        Err(CheckError::Inconclusive {
            key,
            explored,
            max_states,
        }) => {
            assert_eq!((key, max_states), ("k", 50));
            assert!(explored > 50);
        }
        other => panic!("expected an inconclusive search, got {other:?}"),
    }
    // With room to search, a smaller one is a violation.
    script(4).violation();
}

// ---- the acknowledged-writes helper ----

#[test]
fn a_write_overwritten_by_one_that_could_follow_it_survived() {
    // "b" answered first but "a" may still land after it: "b" is not lost.
    let mut s = Script::default();
    s.put("k", "a", [0, 30]);
    s.put("k", "b", [10, 20]);
    // Overwritten by a timed-out delete, which may have applied.
    s.put("j", "c", [0, 10]);
    s.unknown("j", Op::Delete, 5);
    let finals = HashMap::from([("k", Some("a")), ("j", None)]);
    assert_eq!(s.history.acknowledged_writes_survive(&finals), Ok(()));
    s.final_read("k", Some("a"), 100);
    s.final_read("j", None, 100);
    s.passes();
}

#[test]
fn a_write_overwritten_only_by_earlier_writes_is_lost() {
    let mut s = Script::default();
    s.put("k", "a", [0, 10]);
    let lost = s.delete("k", [20, 30]);
    s.cas("k", Some("a"), "x", false, [40, 50]);
    let finals = HashMap::from([("k", Some("a"))]);
    let lost_writes = s
        .history
        .acknowledged_writes_survive(&finals)
        .expect_err("the delete is gone");
    assert_eq!(lost_writes.lost.len(), 1);
    assert_eq!(lost_writes.lost[0].write.id, lost);
}

// ---- recording ----

#[test]
fn a_history_round_trips_through_json_and_tampering_is_refused() {
    let mut s = Script::default();
    s.put("k", "a", [0, 10]);
    s.unknown("k", Op::Delete, 5);
    s.get("k", Some("a"), [20, 30]);
    let json = serde_json::to_string(&s.history).expect("serializable");
    let back: History<String, String> = serde_json::from_str(&json).expect("deserializable");
    assert_eq!(back.len(), 3);
    assert_eq!(back.to_string(), s.history.to_string());
    assert!(back.check().is_ok());

    let tampered = json.replacen("\"Written\"", "{\"Cas\":true}", 1);
    assert_ne!(tampered, json);
    let error = serde_json::from_str::<History<String, String>>(&tampered)
        .expect_err("a put answered with a cas outcome");
    assert!(error.to_string().contains("cannot be answered"), "{error}");
}

#[test]
fn recording_refuses_a_second_answer() {
    let mut s = Script::default();
    let id = s.put("k", "a", [0, 10]);
    assert_eq!(
        s.history.complete(id, Outcome::Written, 20),
        Err(RecordError::AlreadyResolved(id))
    );
}

#[test]
fn threads_recording_against_a_real_register_pass() {
    // Four threads run operations against one mutex-guarded map, which is linearizable by
    // construction (each operation takes effect inside the lock, inside its interval).
    let recorder = Arc::new(Recorder::<String, String>::new());
    let store = Arc::new(Mutex::new(HashMap::<String, String>::new()));
    let threads: Vec<_> = (0..4u64)
        .map(|client| {
            let (recorder, store) = (Arc::clone(&recorder), Arc::clone(&store));
            std::thread::spawn(move || {
                for i in 0..100u64 {
                    let key = format!("k{}", (client + i) % 2);
                    let op = match i % 4 {
                        0 => Op::Put(format!("{client}-{i}")),
                        1 => Op::Get,
                        2 => Op::Cas {
                            expect: Some(format!("{}-{}", (client + 1) % 4, i - 2)),
                            new: format!("{client}-{i}"),
                        },
                        _ => Op::Delete,
                    };
                    let id = recorder.invoke(client, key.clone(), op.clone());
                    let outcome = {
                        let mut store = store.lock().expect("no panics while held");
                        let state = store.get(&key).cloned();
                        let (outcome, after) = op.apply(&state);
                        match after {
                            Some(value) => store.insert(key, value),
                            None => store.remove(&key),
                        };
                        outcome
                    };
                    recorder.complete(id, outcome).expect("well-formed");
                }
            })
        })
        .collect();
    for thread in threads {
        thread.join().expect("client thread");
    }
    let store = store.lock().expect("no panics while held").clone();
    for key in ["k0", "k1"] {
        recorder.final_read(key.to_owned(), store.get(key).cloned());
    }
    let recorder = Arc::into_inner(recorder).expect("the threads are done");
    let history = recorder.into_history();
    assert_eq!(history.len(), 402);
    if let Err(error) = history.check() {
        panic!("{error}");
    }
}
