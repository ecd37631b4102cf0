//! A circuit breaker per node address (pure: time is passed in).
//!
//! After `threshold` consecutive failures the breaker opens and calls skip that address for
//! `cooldown`; then one probe call is let through (half-open). Its success closes the breaker,
//! its failure opens it again. A dead node therefore costs one timeout per cooldown instead of
//! one per call.

use std::time::{Duration, Instant};

/// The breaker's state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BreakerState {
    /// Calls flow; counts consecutive failures.
    Closed {
        /// Consecutive failures so far.
        failures: u32,
    },
    /// Calls are refused until the instant given.
    Open {
        /// When a probe may be let through.
        until: Instant,
    },
    /// One probe is in flight; other calls are refused.
    HalfOpen,
}

/// A circuit breaker.
#[derive(Clone, Debug)]
pub struct CircuitBreaker {
    threshold: u32,
    cooldown: Duration,
    state: BreakerState,
}

impl CircuitBreaker {
    /// Opens after `threshold` consecutive failures, for `cooldown`.
    pub fn new(threshold: u32, cooldown: Duration) -> Self {
        CircuitBreaker {
            threshold: threshold.max(1),
            cooldown,
            state: BreakerState::Closed { failures: 0 },
        }
    }

    /// The current state.
    pub fn state(&self) -> BreakerState {
        self.state
    }

    /// Whether a call may go out now; an open breaker past its cooldown lets one probe out.
    pub fn try_acquire(&mut self, now: Instant) -> bool {
        match self.state {
            BreakerState::Closed { .. } => true,
            BreakerState::Open { until } if now >= until => {
                self.state = BreakerState::HalfOpen;
                true
            }
            BreakerState::Open { .. } | BreakerState::HalfOpen => false,
        }
    }

    /// The call reached the node (whatever the node answered).
    pub fn on_success(&mut self) {
        self.state = BreakerState::Closed { failures: 0 };
    }

    /// The call could not reach the node (connection failure, timeout).
    pub fn on_failure(&mut self, now: Instant) {
        self.state = match self.state {
            BreakerState::Closed { failures } if failures + 1 < self.threshold => {
                BreakerState::Closed {
                    failures: failures + 1,
                }
            }
            _ => BreakerState::Open {
                until: now + self.cooldown,
            },
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opens_after_threshold_probes_after_cooldown_and_recovers() {
        let t0 = Instant::now();
        let cooldown = Duration::from_secs(5);
        let mut b = CircuitBreaker::new(3, cooldown);
        for _ in 0..2 {
            assert!(b.try_acquire(t0));
            b.on_failure(t0);
        }
        assert!(b.try_acquire(t0), "still closed after 2 of 3 failures");
        b.on_failure(t0);
        assert_eq!(
            b.state(),
            BreakerState::Open {
                until: t0 + cooldown
            }
        );
        assert!(!b.try_acquire(t0 + Duration::from_secs(1)));
        assert!(b.try_acquire(t0 + cooldown), "one probe after the cooldown");
        assert!(!b.try_acquire(t0 + cooldown), "only one probe at a time");
        b.on_failure(t0 + cooldown);
        assert!(matches!(b.state(), BreakerState::Open { .. }));
        assert!(b.try_acquire(t0 + cooldown * 2));
        b.on_success();
        assert_eq!(b.state(), BreakerState::Closed { failures: 0 });
    }

    #[test]
    fn a_success_resets_the_failure_count() {
        let t0 = Instant::now();
        let mut b = CircuitBreaker::new(2, Duration::from_secs(1));
        b.on_failure(t0);
        b.on_success();
        b.on_failure(t0);
        assert!(b.try_acquire(t0));
    }
}
