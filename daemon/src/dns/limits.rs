//! Per-container query-rate limit for the DNS proxy.
//!
//! A container must not be able to use the proxy to flood the upstream resolver, to churn the
//! ruleset's sets, or to push data out through a high rate of queries. A token bucket allows a
//! short burst (a page load resolving a dozen names) while holding the long-run rate down.
//!
//! Pure: the caller passes the clock. Tokens are counted in billionths so that refill is exact
//! to the nanosecond without floating point.

use std::time::Instant;

/// Units per token: refill is computed per nanosecond.
const UNITS_PER_TOKEN: u128 = 1_000_000_000;

/// A token bucket: `burst` tokens, refilled at `per_second` tokens a second; each query takes one.
#[derive(Clone, Debug)]
pub struct RateLimiter {
    per_second: u32,
    capacity: u128,
    units: u128,
    last: Option<Instant>,
}

impl RateLimiter {
    /// A bucket holding `burst` tokens (at least 1, so that a query can ever pass), starting full,
    /// refilled at `per_second` tokens a second (0: never refilled).
    pub fn new(per_second: u32, burst: u32) -> Self {
        let capacity = u128::from(burst.max(1)) * UNITS_PER_TOKEN;
        Self {
            per_second,
            capacity,
            units: capacity,
            last: None,
        }
    }

    /// Whether a query arriving at `now` may pass (and takes its token if so).
    pub fn allow(&mut self, now: Instant) -> bool {
        if let Some(last) = self.last {
            // Instants from a monotonic clock do not go backwards; if a caller's do, no refill.
            let elapsed = now.saturating_duration_since(last).as_nanos();
            let refill = elapsed.saturating_mul(u128::from(self.per_second));
            self.units = self.units.saturating_add(refill).min(self.capacity);
        }
        // Never move `last` backwards, or the same interval would be refilled twice.
        self.last = Some(self.last.map_or(now, |last| last.max(now)));
        if self.units >= UNITS_PER_TOKEN {
            self.units -= UNITS_PER_TOKEN;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn allowed_count(limiter: &mut RateLimiter, now: Instant, attempts: usize) -> usize {
        (0..attempts).filter(|_| limiter.allow(now)).count()
    }

    #[test]
    fn burst_passes_then_the_bucket_is_empty() {
        let start = Instant::now();
        let mut limiter = RateLimiter::new(10, 5);
        assert_eq!(allowed_count(&mut limiter, start, 20), 5);
        assert!(!limiter.allow(start));
    }

    #[test]
    fn tokens_refill_at_the_rate() {
        let start = Instant::now();
        let mut limiter = RateLimiter::new(10, 5);
        assert_eq!(allowed_count(&mut limiter, start, 5), 5);
        // 10 per second: one token every 100 ms.
        assert!(!limiter.allow(start + Duration::from_millis(99)));
        assert!(limiter.allow(start + Duration::from_millis(100)));
        assert!(!limiter.allow(start + Duration::from_millis(100)));
        // Fractions accumulate: 50 ms + 50 ms make a token.
        assert!(!limiter.allow(start + Duration::from_millis(150)));
        assert!(limiter.allow(start + Duration::from_millis(200)));
        // 300 ms later: three more.
        assert_eq!(
            allowed_count(&mut limiter, start + Duration::from_millis(500), 10),
            3
        );
    }

    #[test]
    fn refill_never_exceeds_the_burst() {
        let start = Instant::now();
        let mut limiter = RateLimiter::new(1000, 3);
        assert_eq!(allowed_count(&mut limiter, start, 3), 3);
        let later = start + Duration::from_secs(3600);
        assert_eq!(allowed_count(&mut limiter, later, 10), 3);
    }

    #[test]
    fn long_run_rate_is_held() {
        let start = Instant::now();
        let mut limiter = RateLimiter::new(20, 10);
        // 100 attempts every 10 ms for 10 s: the burst plus 20 a second.
        let passed = (0..1000)
            .filter(|step| limiter.allow(start + Duration::from_millis(step * 10)))
            .count();
        assert!((200..=210).contains(&passed), "passed {passed}");
    }

    #[test]
    fn zero_rate_allows_only_the_burst_and_zero_burst_allows_one() {
        let start = Instant::now();
        let mut no_refill = RateLimiter::new(0, 2);
        assert_eq!(allowed_count(&mut no_refill, start, 5), 2);
        assert!(!no_refill.allow(start + Duration::from_secs(1000)));

        let mut zero_burst = RateLimiter::new(1, 0);
        assert!(zero_burst.allow(start));
        assert!(!zero_burst.allow(start));
        assert!(zero_burst.allow(start + Duration::from_secs(1)));
    }

    #[test]
    fn a_clock_going_backwards_refills_nothing() {
        let start = Instant::now() + Duration::from_secs(10);
        let mut limiter = RateLimiter::new(1, 1);
        assert!(limiter.allow(start));
        assert!(!limiter.allow(start - Duration::from_secs(5)));
        // The interval up to `start` was not counted, so one second after `start` refills once.
        assert!(!limiter.allow(start + Duration::from_millis(999)));
        assert!(limiter.allow(start + Duration::from_secs(1)));
    }
}
