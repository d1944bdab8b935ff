//! The rate limit: a token bucket holding one token, refilled every `1 / rate` seconds, so
//! requests (retries included) leave at most `rate` per second, evenly spaced, never in bursts
//! that a third-party API would answer with 429s.

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Hands out send times at least `interval` apart.
#[derive(Debug)]
pub(crate) struct RateLimiter {
    interval: Duration,
    next: Mutex<Option<Instant>>,
}

impl RateLimiter {
    /// A limiter allowing `per_second` requests per second (positive and finite: checked with
    /// the options).
    pub fn new(per_second: f64) -> Self {
        Self { interval: Duration::from_secs_f64(1.0 / per_second), next: Mutex::new(None) }
    }

    /// Reserves the earliest send time at or after `now` and returns it; the next reservation
    /// comes at least one interval later.
    pub fn reserve(&self, now: Instant) -> Instant {
        // A poisoned lock only means another request panicked while holding a plain Instant.
        let mut next = self.next.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let at = next.map_or(now, |next| next.max(now));
        *next = Some(at + self.interval);
        at
    }

    /// Waits for this request's turn.
    pub async fn acquire(&self) {
        let at = self.reserve(Instant::now());
        tokio::time::sleep_until(at.into()).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reservations_are_spaced_by_the_interval_and_idle_time_is_not_saved_up() {
        let limiter = RateLimiter::new(4.0);
        let start = Instant::now();
        let times: Vec<Duration> = (0..4).map(|_| limiter.reserve(start) - start).collect();
        assert_eq!(times, [0, 250, 500, 750].map(Duration::from_millis));
        // Long after the last reservation: the next one is immediate, but only one is.
        let later = start + Duration::from_secs(10);
        assert_eq!(limiter.reserve(later), later);
        assert_eq!(limiter.reserve(later), later + Duration::from_millis(250));
    }
}
