//! Flap damping (pure): how check outcomes become a status.
//!
//! A healthy instance turns unhealthy after `unhealthy_after` consecutive failures, and an
//! unhealthy one turns healthy after `healthy_after` consecutive successes, so one lost packet
//! does not pull an instance out of rotation and one lucky answer does not put a broken one
//! back. An instance whose status is `unknown` (new, or its check changed) takes the first
//! outcome at once: traffic should reach a new instance after one good check, not two.
//!
//! The counters live only in the holder's memory; only status changes are written. After a
//! move or a restart the new holder starts the counters from zero at the stored status, so a
//! status change can be delayed by at most one threshold, never lost or invented.

use cfgnode_transport::registry::WireStatus;

/// One instance's damping state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Damper {
    status: WireStatus,
    /// Consecutive outcomes that disagree with `status` (reset by one that agrees).
    against: u32,
}

impl Damper {
    /// Starts from the status the record holds.
    pub fn new(status: WireStatus) -> Damper {
        Damper { status, against: 0 }
    }

    /// Takes one outcome; `Some(new status)` when it changes the status.
    pub fn observe(
        &mut self,
        ok: bool,
        unhealthy_after: u32,
        healthy_after: u32,
    ) -> Option<WireStatus> {
        let (agrees, target, needed) = match self.status {
            WireStatus::Unknown => (false, outcome_status(ok), 1),
            WireStatus::Healthy => (ok, WireStatus::Unhealthy, unhealthy_after),
            WireStatus::Unhealthy => (!ok, WireStatus::Healthy, healthy_after),
        };
        if agrees {
            self.against = 0;
            return None;
        }
        self.against += 1;
        if self.against < needed.max(1) {
            return None;
        }
        self.status = target;
        self.against = 0;
        Some(target)
    }
}

fn outcome_status(ok: bool) -> WireStatus {
    if ok {
        WireStatus::Healthy
    } else {
        WireStatus::Unhealthy
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use WireStatus::*;

    fn run(start: WireStatus, outcomes: &[bool]) -> Vec<Option<WireStatus>> {
        let mut damper = Damper::new(start);
        outcomes
            .iter()
            .map(|ok| damper.observe(*ok, 3, 2))
            .collect()
    }

    #[test]
    fn unknown_takes_the_first_outcome() {
        assert_eq!(run(Unknown, &[true]), [Some(Healthy)]);
        assert_eq!(run(Unknown, &[false]), [Some(Unhealthy)]);
    }

    #[test]
    fn healthy_needs_consecutive_failures() {
        assert_eq!(
            run(Healthy, &[false, false, true, false, false, false, false]),
            [None, None, None, None, None, Some(Unhealthy), None]
        );
    }

    #[test]
    fn unhealthy_needs_consecutive_successes() {
        assert_eq!(
            run(Unhealthy, &[true, false, true, true, true]),
            [None, None, None, Some(Healthy), None]
        );
    }

    #[test]
    fn a_threshold_of_one_flips_at_once_and_zero_is_treated_as_one() {
        let mut damper = Damper::new(Healthy);
        assert_eq!(damper.observe(false, 1, 0), Some(Unhealthy));
        assert_eq!(damper.observe(true, 1, 0), Some(Healthy));
    }
}
