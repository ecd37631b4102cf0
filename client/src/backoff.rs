//! Exponential backoff with full jitter (pure, given a random source).
//!
//! The delay before retry `n` is uniform in `[0, min(max, base * 2^n)]`: spreading retries over
//! the whole window keeps many clients that failed together from retrying together.

use std::time::Duration;

/// Retry delays for one call.
#[derive(Clone, Debug)]
pub struct Backoff {
    base: Duration,
    max: Duration,
    attempt: u32,
}

impl Backoff {
    /// Delays start around `base` and never exceed `max`.
    pub fn new(base: Duration, max: Duration) -> Self {
        Backoff {
            base,
            max,
            attempt: 0,
        }
    }

    /// The next delay, given a uniform random number in `[0, 1)`.
    pub fn next_delay(&mut self, unit_random: f64) -> Duration {
        let factor = 2u32.saturating_pow(self.attempt.min(20));
        let ceiling = self.base.saturating_mul(factor).min(self.max);
        self.attempt = self.attempt.saturating_add(1);
        ceiling.mul_f64(unit_random.clamp(0.0, 1.0))
    }

    /// Retries handed out so far.
    pub fn attempts(&self) -> u32 {
        self.attempt
    }
}

/// A uniform random number in `[0, 1)` from the OS (0.5 if the OS has none to give).
pub fn unit_random() -> f64 {
    let mut bytes = [0u8; 8];
    if getrandom::fill(&mut bytes).is_err() {
        return 0.5;
    }
    (u64::from_le_bytes(bytes) >> 11) as f64 / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ceilings_double_up_to_the_max_and_jitter_scales() {
        let mut b = Backoff::new(Duration::from_millis(50), Duration::from_secs(1));
        let ceilings: Vec<u128> = (0..8).map(|_| b.next_delay(1.0).as_millis()).collect();
        assert_eq!(ceilings, vec![50, 100, 200, 400, 800, 1000, 1000, 1000]);
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_secs(1));
        assert_eq!(b.next_delay(0.0), Duration::ZERO);
        assert_eq!(b.next_delay(0.5), Duration::from_millis(100));
        assert_eq!(b.attempts(), 2);
        for _ in 0..100 {
            let r = unit_random();
            assert!((0.0..1.0).contains(&r));
        }
    }
}
