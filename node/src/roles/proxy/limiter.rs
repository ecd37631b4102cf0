//! Per-client rate limits (pure, with the clock passed in): a token bucket per client IP.
//!
//! A bucket holds up to `burst` tokens (at least one) and refills at `per_client_per_minute`
//! / 60 per second; a request takes one token or is refused with how long until one is back
//! (`Retry-After`). Memory is bounded: past [`MAX_CLIENTS`] buckets, the ones that have
//! refilled completely (idle clients, indistinguishable from new ones) are dropped first.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::route::RateLimit;

/// Most client buckets one limiter keeps.
pub const MAX_CLIENTS: usize = 100_000;

#[derive(Clone, Copy, Debug)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

/// One route's limiter.
#[derive(Debug)]
pub struct Limiter {
    limit: RateLimit,
    buckets: Mutex<HashMap<IpAddr, Bucket>>,
}

impl Limiter {
    /// A limiter for `limit`, with no client seen yet.
    pub fn new(limit: RateLimit) -> Limiter {
        Limiter {
            limit,
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// The limit it enforces.
    pub fn limit(&self) -> RateLimit {
        self.limit
    }

    fn capacity(&self) -> f64 {
        f64::from(self.limit.burst.max(1))
    }

    fn per_second(&self) -> f64 {
        f64::from(self.limit.per_client_per_minute) / 60.0
    }

    /// Takes a token for `client` at `now`: `Err(wait)` when none is left, `wait` being how
    /// long until one is.
    pub fn take(&self, client: IpAddr, now: Instant) -> Result<(), Duration> {
        let (capacity, rate) = (self.capacity(), self.per_second());
        let mut buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        if buckets.len() >= MAX_CLIENTS && !buckets.contains_key(&client) {
            buckets.retain(|_, b| refilled(b, now, rate) < capacity);
        }
        let bucket = buckets.entry(client).or_insert(Bucket {
            tokens: capacity,
            at: now,
        });
        bucket.tokens = refilled(bucket, now, rate).min(capacity);
        bucket.at = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            return Ok(());
        }
        let missing = 1.0 - bucket.tokens;
        Err(Duration::from_secs_f64(missing / rate))
    }

    /// How many clients it tracks.
    #[cfg(test)]
    pub fn clients(&self) -> usize {
        self.buckets.lock().unwrap_or_else(|p| p.into_inner()).len()
    }
}

fn refilled(bucket: &Bucket, now: Instant, rate: f64) -> f64 {
    bucket.tokens + now.saturating_duration_since(bucket.at).as_secs_f64() * rate
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, 1));
    const B: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, 2));

    #[test]
    fn a_burst_passes_then_the_rate_holds() {
        let limiter = Limiter::new(RateLimit {
            per_client_per_minute: 60,
            burst: 3,
        });
        let t0 = Instant::now();
        for _ in 0..3 {
            assert_eq!(limiter.take(A, t0), Ok(()));
        }
        let wait = limiter.take(A, t0).expect_err("the burst is spent");
        assert!(
            wait > Duration::from_millis(900) && wait <= Duration::from_secs(1),
            "{wait:?}"
        );
        assert_eq!(limiter.take(B, t0), Ok(()), "clients are apart");
        assert_eq!(
            limiter.take(A, t0 + Duration::from_secs(1)),
            Ok(()),
            "one token per second"
        );
        assert!(limiter.take(A, t0 + Duration::from_secs(1)).is_err());
        // Idle long enough: the bucket is full again, but never above the burst.
        let later = t0 + Duration::from_secs(100);
        for _ in 0..3 {
            assert_eq!(limiter.take(A, later), Ok(()));
        }
        assert!(limiter.take(A, later).is_err());
    }

    #[test]
    fn a_zero_burst_still_lets_one_through() {
        let limiter = Limiter::new(RateLimit {
            per_client_per_minute: 6,
            burst: 0,
        });
        let t0 = Instant::now();
        assert_eq!(limiter.take(A, t0), Ok(()));
        let wait = limiter.take(A, t0).expect_err("limited");
        assert!(wait <= Duration::from_secs(10), "{wait:?}");
    }

    #[test]
    fn idle_clients_are_dropped_first_when_full() {
        let limiter = Limiter::new(RateLimit {
            per_client_per_minute: 60_000,
            burst: 1,
        });
        let t0 = Instant::now();
        for i in 0..MAX_CLIENTS as u32 {
            let ip = IpAddr::V4(std::net::Ipv4Addr::from(i));
            let _ = limiter.take(ip, t0);
        }
        assert_eq!(limiter.clients(), MAX_CLIENTS);
        // A second later every bucket refilled: a new client makes room.
        let _ = limiter.take(
            IpAddr::V4(std::net::Ipv4Addr::from(u32::MAX)),
            t0 + Duration::from_secs(1),
        );
        assert!(limiter.clients() < 10, "{}", limiter.clients());
    }
}
