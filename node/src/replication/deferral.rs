//! How long a member has left an election to another one (docs/replication.md, "Promotion",
//! step 1): the clock behind "run anyway after [`DEFER`](super::promote::DEFER)". Pure: the
//! caller passes the time.
//!
//! A member that is not the best candidate gives the best one `DEFER` to win, then runs
//! itself: the best one may be unable to (cut off from the others, or dying too). The clock
//! restarts whenever the member waited for, or the position it answered, changes. A best
//! member whose log still grows is being fed by a holder that is alive (this node's view just
//! has not caught up, as right after a partition heals), and running against it would only
//! leave a fence on the live holder's epoch. A history run lost 3.6 s of writes so (session
//! 28): a member promised itself an epoch 20 ms after a heal, because its clock had started
//! during the cut, though the best member's answers showed its log moving.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use cfgnode_ring::{LogPosition, NodeId};

/// Per namespace, whom this node waits for, at which answered position, since when.
#[derive(Debug, Default)]
pub struct Deferrals {
    waits: HashMap<String, Wait>,
}

#[derive(Debug)]
struct Wait {
    member: NodeId,
    position: LogPosition,
    since: Instant,
}

impl Deferrals {
    /// Notes that `member` (the candidate this node leaves the election to) answered
    /// `position` at `now`, and tells whether `defer` has passed since it started to wait for
    /// that member at that position: the wait starts afresh when either changed.
    pub fn waited(
        &mut self,
        namespace: &str,
        member: &str,
        position: LogPosition,
        now: Instant,
        defer: Duration,
    ) -> bool {
        let fresh = || Wait {
            member: member.to_string(),
            position,
            since: now,
        };
        let wait = self
            .waits
            .entry(namespace.to_string())
            .or_insert_with(fresh);
        if wait.member != member || wait.position != position {
            *wait = fresh();
        }
        now.saturating_duration_since(wait.since) >= defer
    }

    /// Forgets the wait for `namespace` (this node runs first itself, or the holder is back).
    pub fn forget(&mut self, namespace: &str) {
        self.waits.remove(namespace);
    }

    /// Keeps only the waits of namespaces `keep` says are still orphaned.
    pub fn retain(&mut self, mut keep: impl FnMut(&str) -> bool) {
        self.waits.retain(|namespace, _| keep(namespace));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEFER: Duration = Duration::from_millis(1500);

    fn at(start: Instant, ms: u64) -> Instant {
        start + Duration::from_millis(ms)
    }

    #[test]
    fn a_best_member_whose_log_stands_still_is_waited_for_only_defer() {
        let (mut d, t) = (Deferrals::default(), Instant::now());
        let p = LogPosition::new(1, 10);
        assert!(!d.waited("ns", "n2", p, t, DEFER));
        assert!(!d.waited("ns", "n2", p, at(t, 1499), DEFER));
        assert!(d.waited("ns", "n2", p, at(t, 1500), DEFER));
    }

    #[test]
    fn a_best_member_whose_log_moves_restarts_the_wait() {
        let (mut d, t) = (Deferrals::default(), Instant::now());
        assert!(!d.waited("ns", "n2", LogPosition::new(1, 10), t, DEFER));
        // Its holder feeds it: the holder is alive, whatever this node's view says.
        assert!(!d.waited("ns", "n2", LogPosition::new(1, 11), at(t, 1400), DEFER));
        assert!(!d.waited("ns", "n2", LogPosition::new(1, 11), at(t, 2000), DEFER));
        assert!(d.waited("ns", "n2", LogPosition::new(1, 11), at(t, 2900), DEFER));
    }

    #[test]
    fn another_member_to_wait_for_restarts_the_wait_and_namespaces_are_apart() {
        let (mut d, t) = (Deferrals::default(), Instant::now());
        let p = LogPosition::new(1, 10);
        assert!(!d.waited("ns", "n2", p, t, DEFER));
        assert!(!d.waited("other", "n2", p, at(t, 1000), DEFER));
        assert!(!d.waited("ns", "n3", p, at(t, 1600), DEFER));
        assert!(d.waited("other", "n2", p, at(t, 2500), DEFER));
        assert!(!d.waited("ns", "n3", p, at(t, 3000), DEFER));
        assert!(d.waited("ns", "n3", p, at(t, 3100), DEFER));
    }

    #[test]
    fn a_forgotten_or_dropped_wait_starts_again() {
        let (mut d, t) = (Deferrals::default(), Instant::now());
        let p = LogPosition::new(1, 10);
        assert!(!d.waited("ns", "n2", p, t, DEFER));
        assert!(!d.waited("gone", "n2", p, t, DEFER));
        d.forget("ns");
        d.retain(|ns| ns != "gone");
        assert!(!d.waited("ns", "n2", p, at(t, 2000), DEFER));
        assert!(!d.waited("gone", "n2", p, at(t, 2000), DEFER));
    }
}
