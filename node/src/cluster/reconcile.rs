//! The reconcile loop: watches the map and the membership, and starts a handoff (`handoff.rs`)
//! for every namespace this node holds whose desired owner is another alive node. A failed
//! handoff is retried with exponential backoff ([`RetryBackoff`]: 250 ms doubling to 10 s).
//!
//! The loop ([`run`]) takes what it works on as a [`Reconciled`] (the node's [`Cluster`], or a
//! stand-in in tests) and reads time from tokio's clock only, so a paused-time test drives the
//! real loop and its timers: it shows that a failing handoff waits its backoff, and that the
//! loop sleeps between wakeups instead of spinning.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use cfgnode_ring::{NodeId, handoff_target};
use tokio::sync::{Semaphore, watch};
use tokio::time::Instant;

use super::Cluster;
use super::handoff::hand_off;

/// How often the reconcile loop looks for namespaces to hand off even without a change.
const RECONCILE_EVERY: Duration = Duration::from_secs(1);
/// First delay before retrying a failed handoff of a namespace (doubles at each failure).
const RETRY_FIRST: Duration = Duration::from_millis(250);
/// Longest delay between retries of a failing handoff.
const RETRY_MAX: Duration = Duration::from_secs(10);
/// Handoffs running at once per node.
const PARALLEL_HANDOFFS: usize = 4;

/// Watches the map and the membership, and hands off every namespace this node holds whose
/// desired owner is another alive node. Runs until `stop`.
pub async fn reconcile(cluster: Cluster, stop: watch::Receiver<bool>) {
    let map_changes = cluster.map_state().subscribe();
    let members = cluster.membership().subscribe();
    run(cluster, map_changes, members, stop).await;
}

/// What the reconcile loop works on. The loop owns the schedule (when to look, when to retry,
/// how many at once); this says what is due and carries one handoff out.
trait Reconciled: Clone + Send + Sync + 'static {
    /// The namespaces to hand off now, each with the node it should go to.
    fn due(&self) -> Vec<(String, NodeId)>;
    /// Marks `namespace` as being handed off; false when it already is (a handoff still runs).
    fn begin(&self, namespace: &str) -> bool;
    /// Lifts the mark of [`Reconciled::begin`].
    fn end(&self, namespace: &str);
    /// Hands `namespace` off to `to`; true when it moved.
    fn hand_off(&self, namespace: String, to: NodeId) -> impl Future<Output = bool> + Send;
}

/// The loop: wakes on a change of the map or the membership, every [`RECONCILE_EVERY`], when a
/// failed handoff's backoff ends, and when a handoff finishes; then starts every due handoff
/// whose backoff allows it, at most [`PARALLEL_HANDOFFS`] at once. Ends at `stop` or when a
/// change feed closes.
async fn run<W, A, B>(
    work: W,
    mut map_changes: watch::Receiver<A>,
    mut members: watch::Receiver<B>,
    mut stop: watch::Receiver<bool>,
) where
    W: Reconciled,
{
    let mut tick = tokio::time::interval(RECONCILE_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let slots = Arc::new(Semaphore::new(PARALLEL_HANDOFFS));
    let (done_tx, mut done_rx) = tokio::sync::mpsc::unbounded_channel::<(String, bool)>();
    let mut backoff = RetryBackoff::new(RETRY_FIRST, RETRY_MAX);
    // The handoffs under way: each holds the store, so they end with this loop (a handoff cut
    // short is a giver that crashed, which every step allows for).
    let mut handoffs = tokio::task::JoinSet::new();
    loop {
        while handoffs.try_join_next().is_some() {}
        let next_retry = backoff.next_wakeup(Instant::now());
        tokio::select! {
            _ = stop.wait_for(|s| *s) => break,
            _ = tick.tick() => {}
            _ = sleep_until(next_retry), if next_retry.is_some() => {}
            r = map_changes.changed() => if r.is_err() { break },
            r = members.changed() => if r.is_err() { break },
            Some((namespace, ok)) = done_rx.recv() => {
                if ok {
                    backoff.succeeded(&namespace);
                } else {
                    backoff.failed(namespace, Instant::now());
                }
            }
        }
        for (namespace, to) in work.due() {
            if !backoff.may_try(&namespace, Instant::now()) || !work.begin(&namespace) {
                continue;
            }
            let Ok(slot) = Arc::clone(&slots).try_acquire_owned() else {
                work.end(&namespace);
                break;
            };
            let work = work.clone();
            let done = done_tx.clone();
            handoffs.spawn(async move {
                let ok = work.hand_off(namespace.clone(), to).await;
                work.end(&namespace);
                drop(slot);
                let _ = done.send((namespace, ok));
            });
        }
    }
    handoffs.shutdown().await;
}

impl Reconciled for Cluster {
    fn due(&self) -> Vec<(String, NodeId)> {
        let view = self.view();
        self.metrics()
            .namespaces_held
            .set(i64::try_from(self.held().len()).unwrap_or(i64::MAX));
        self.map_state().read(|map| {
            map.holders()
                .filter(|(_, r)| r.holder == self.me())
                .filter_map(|(ns, _)| {
                    let placement = view.desired(ns, map);
                    handoff_target(self.me(), ns, map, placement.as_ref(), &view.alive)
                        .map(|to| (ns.clone(), to))
                })
                .collect()
        })
    }

    fn begin(&self, namespace: &str) -> bool {
        self.inner.giving.insert(namespace)
    }

    fn end(&self, namespace: &str) {
        self.inner.giving.remove(namespace);
    }

    async fn hand_off(&self, namespace: String, to: NodeId) -> bool {
        let started = std::time::Instant::now();
        let result = hand_off(self, &namespace, &to).await;
        let outcome = if result.is_ok() { "ok" } else { "failed" };
        self.metrics()
            .handoffs
            .get_or_create(&crate::metrics::OutcomeLabels { outcome })
            .inc();
        match &result {
            Ok(revision) => {
                self.metrics()
                    .handoff_duration
                    .observe(started.elapsed().as_secs_f64());
                tracing::info!(
                    namespace,
                    to,
                    revision,
                    millis = started.elapsed().as_millis() as u64,
                    "namespace handed off"
                );
            }
            Err(e) => tracing::warn!(namespace, to, error = %e, "handoff failed; will retry"),
        }
        result.is_ok()
    }
}

/// When each failed handoff may be tried again: [`RETRY_FIRST`] after the first failure,
/// doubling at each further one up to [`RETRY_MAX`], forgotten at the first success. Kept apart
/// from the loop, with the time passed in, so the schedule is tested without a clock.
#[derive(Debug)]
struct RetryBackoff {
    first: Duration,
    max: Duration,
    /// Namespace -> (not before, the delay that led there) after a failure.
    waits: HashMap<String, (Instant, Duration)>,
}

impl RetryBackoff {
    fn new(first: Duration, max: Duration) -> Self {
        RetryBackoff {
            first,
            max,
            waits: HashMap::new(),
        }
    }

    /// Records a failed handoff of `namespace` at `now`; returns the delay before the next try.
    fn failed(&mut self, namespace: String, now: Instant) -> Duration {
        let delay = self
            .waits
            .get(&namespace)
            .map_or(self.first, |(_, d)| (*d * 2).min(self.max));
        self.waits.insert(namespace, (now + delay, delay));
        delay
    }

    /// A handoff of `namespace` succeeded: the next failure starts from the first delay again.
    fn succeeded(&mut self, namespace: &str) {
        self.waits.remove(namespace);
    }

    /// Whether a handoff of `namespace` may start at `now`.
    fn may_try(&self, namespace: &str, now: Instant) -> bool {
        self.waits
            .get(namespace)
            .is_none_or(|(not_before, _)| now >= *not_before)
    }

    /// The next moment a waiting namespace becomes due after `now`, for the loop to wake up
    /// then. Namespaces already due are left out: the loop has seen them (a retry runs, or the
    /// namespace no longer needs one), and waking for them would turn the loop into a spin.
    fn next_wakeup(&self, now: Instant) -> Option<Instant> {
        self.waits
            .values()
            .map(|(at, _)| *at)
            .filter(|at| *at > now)
            .min()
    }
}

async fn sleep_until(at: Option<Instant>) {
    if let Some(at) = at {
        tokio::time::sleep_until(at).await;
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn retries_wait_the_first_delay_then_double_up_to_the_cap_and_reset_on_success() {
        let start = Instant::now();
        let mut backoff = RetryBackoff::new(RETRY_FIRST, RETRY_MAX);
        assert!(backoff.may_try("ns", start), "no failure yet: try at once");
        assert_eq!(backoff.next_wakeup(start), None);

        // First failure: not before RETRY_FIRST.
        assert_eq!(backoff.failed("ns".into(), start), RETRY_FIRST);
        assert!(!backoff.may_try("ns", start));
        assert!(!backoff.may_try("ns", start + RETRY_FIRST - ms(1)));
        assert!(backoff.may_try("ns", start + RETRY_FIRST));
        assert_eq!(backoff.next_wakeup(start), Some(start + RETRY_FIRST));
        // Other namespaces are not held back.
        assert!(backoff.may_try("other", start));

        // Each further failure doubles the delay, from the moment of the failure, up to the cap.
        let mut now = start + RETRY_FIRST;
        let mut expected = RETRY_FIRST;
        let mut delays = Vec::new();
        for _ in 0..10 {
            expected = (expected * 2).min(RETRY_MAX);
            let delay = backoff.failed("ns".into(), now);
            assert_eq!(delay, expected);
            assert!(!backoff.may_try("ns", now + delay - ms(1)));
            assert!(backoff.may_try("ns", now + delay));
            assert_eq!(backoff.next_wakeup(now), Some(now + delay));
            delays.push(delay);
            now += delay;
        }
        assert_eq!(
            delays[..6],
            [ms(500), ms(1000), ms(2000), ms(4000), ms(8000), RETRY_MAX]
        );
        assert!(delays[5..].iter().all(|d| *d == RETRY_MAX), "{delays:?}");

        // A success forgets the namespace: the next failure waits RETRY_FIRST again.
        backoff.succeeded("ns");
        assert!(backoff.may_try("ns", now));
        assert_eq!(backoff.next_wakeup(now), None);
        assert_eq!(backoff.failed("ns".into(), now), RETRY_FIRST);
    }

    #[test]
    fn a_namespace_already_due_does_not_wake_the_loop_again() {
        let start = Instant::now();
        let mut backoff = RetryBackoff::new(RETRY_FIRST, RETRY_MAX);
        backoff.failed("a".into(), start);
        backoff.failed("b".into(), start + ms(100));
        assert_eq!(backoff.next_wakeup(start), Some(start + RETRY_FIRST));
        // Once "a" is due (its retry runs, or it needs none any more), only "b" is ahead.
        let later = start + RETRY_FIRST;
        assert_eq!(
            backoff.next_wakeup(later),
            Some(start + ms(100) + RETRY_FIRST)
        );
        assert_eq!(backoff.next_wakeup(start + ms(100) + RETRY_FIRST), None);
        assert!(backoff.may_try("a", later));
    }

    // ---- the real loop, on tokio's paused clock ------------------------------------------

    /// More wakeups than this in one test can only be a spin (a few dozen are expected): the
    /// stand-in panics then, so a spinning loop fails the test instead of hanging it (a spin
    /// never lets the paused clock advance).
    const SPIN: usize = 10_000;

    /// A stand-in for the cluster: one namespace that should go to `n2`, whose handoff always
    /// fails; due for its first `due_for` attempts only (then another node took it over).
    #[derive(Clone)]
    struct Failing {
        due_for: usize,
        started: Instant,
        seen: Arc<Mutex<Seen>>,
    }

    #[derive(Default)]
    struct Seen {
        /// When each handoff attempt started, in milliseconds since the loop started.
        attempts: Vec<u64>,
        /// How often the loop woke up and asked what is due.
        wakeups: usize,
        giving: bool,
    }

    impl Failing {
        fn new(due_for: usize) -> Self {
            Failing {
                due_for,
                started: Instant::now(),
                seen: Arc::default(),
            }
        }

        fn seen(&self) -> std::sync::MutexGuard<'_, Seen> {
            self.seen
                .lock()
                .expect("no test thread panicked holding it")
        }
    }

    impl Reconciled for Failing {
        fn due(&self) -> Vec<(String, NodeId)> {
            let mut seen = self.seen();
            seen.wakeups += 1;
            assert!(seen.wakeups < SPIN, "the reconcile loop spins");
            if seen.attempts.len() < self.due_for {
                vec![("ns".to_string(), "n2".to_string())]
            } else {
                Vec::new()
            }
        }

        fn begin(&self, _: &str) -> bool {
            !std::mem::replace(&mut self.seen().giving, true)
        }

        fn end(&self, _: &str) {
            self.seen().giving = false;
        }

        async fn hand_off(&self, _: String, _: NodeId) -> bool {
            let at = Instant::now().duration_since(self.started);
            self.seen()
                .attempts
                .push(u64::try_from(at.as_millis()).unwrap_or(u64::MAX));
            false
        }
    }

    /// Runs the real loop over `work` for `virtual_time` of tokio's paused clock, then stops it.
    async fn run_for(work: Failing, virtual_time: Duration) {
        let (_map_tx, map_changes) = watch::channel(0u64);
        let (_members_tx, members) = watch::channel(());
        let (stop_tx, stop) = watch::channel(false);
        let task = tokio::spawn(run(work, map_changes, members, stop));
        // Paused clock: this sleep advances virtual time from timer to timer, no real waiting.
        tokio::time::sleep(virtual_time).await;
        stop_tx.send(true).expect("the loop still runs");
        task.await.expect("the loop ends at stop without panicking");
    }

    #[tokio::test(start_paused = true)]
    async fn the_loop_retries_a_failing_handoff_after_its_backoff_and_no_sooner() {
        let work = Failing::new(usize::MAX);
        run_for(work.clone(), Duration::from_secs(30)).await;
        let seen = work.seen();
        // At once, then 250 ms, 500 ms, 1 s, 2 s, 4 s, 8 s after each failure, then the 10 s cap:
        // the once-a-second tick and the failure notices in between start nothing.
        assert_eq!(
            seen.attempts,
            [0, 250, 750, 1750, 3750, 7750, 15750, 25750],
            "attempts (ms of virtual time)"
        );
        // Woken by the tick (about 31 in 30 s), each backoff's end and each failure: no more.
        assert!(seen.wakeups <= 31 + 2 * 8 + 2, "{} wakeups", seen.wakeups);
    }

    #[tokio::test(start_paused = true)]
    async fn the_loop_sleeps_once_a_failed_namespace_is_no_longer_due() {
        // Two failures, then the namespace needs no handoff any more: its backoff entry is in
        // the past from then on, and must not wake the loop again and again.
        let work = Failing::new(2);
        run_for(work.clone(), Duration::from_secs(20)).await;
        let seen = work.seen();
        assert_eq!(seen.attempts, [0, 250], "attempts (ms of virtual time)");
        assert!(seen.wakeups <= 21 + 2 * 2 + 2, "{} wakeups", seen.wakeups);
    }
}
