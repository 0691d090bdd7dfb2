//! Rate limits as token buckets: the API's, one bucket for each credential that
//! authenticated, and the admin sign-in's, one for each client address. Buckets are keyed by
//! the SHA-256 of what they count, so that no credential is kept in memory longer than its
//! request.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use clarion_domain::auth::KeyHash;

/// Above this many buckets, full ones (credentials idle long enough to have refilled) are
/// dropped, so that the map does not grow with every client token ever seen. When that is not
/// enough (many credentials or addresses, each used within its refill time, as a sign-in flood
/// from many addresses is), the least recently used are dropped down to half: memory stays
/// bounded, and a dropped bucket only starts full again.
const PRUNE_ABOVE: usize = 10_000;

/// Token buckets by credential or address: `burst` requests at once, refilled at
/// `per_second`.
#[derive(Debug)]
pub(crate) struct RateLimiter {
    per_second: f64,
    burst: f64,
    buckets: Mutex<HashMap<KeyHash, Bucket>>,
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

impl Bucket {
    fn refill(&mut self, now: Instant, per_second: f64, burst: f64) {
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        self.tokens = (self.tokens + elapsed * per_second).min(burst);
        self.at = now;
    }
}

impl RateLimiter {
    /// The limiter of `per_second` requests on average and `burst` at once; `None` (no limit)
    /// when either is 0.
    pub(crate) fn new(per_second: u32, burst: u32) -> Option<RateLimiter> {
        if per_second == 0 || burst == 0 {
            return None;
        }
        Some(RateLimiter {
            per_second: f64::from(per_second),
            burst: f64::from(burst),
            buckets: Mutex::new(HashMap::new()),
        })
    }

    /// The limiter of `per_minute` requests at once, refilled evenly over a minute; `None` (no
    /// limit) when it is 0.
    pub(crate) fn per_minute(per_minute: u32) -> Option<RateLimiter> {
        if per_minute == 0 {
            return None;
        }
        Some(RateLimiter {
            per_second: f64::from(per_minute) / 60.0,
            burst: f64::from(per_minute),
            buckets: Mutex::new(HashMap::new()),
        })
    }

    /// Takes one request from the credential's bucket, or says how long to wait for one.
    pub(crate) fn check(&self, credential: &str) -> Result<(), Duration> {
        self.check_at(credential, Instant::now())
    }

    fn check_at(&self, credential: &str, now: Instant) -> Result<(), Duration> {
        let key = KeyHash::of(credential);
        let mut buckets = self.buckets.lock().unwrap_or_else(PoisonError::into_inner);
        if buckets.len() >= PRUNE_ABOVE {
            let (per_second, burst) = (self.per_second, self.burst);
            // A copy is refilled, so that each bucket's `at` stays the time of its last use.
            buckets.retain(|_, bucket| {
                let mut refilled = *bucket;
                refilled.refill(now, per_second, burst);
                refilled.tokens < burst
            });
            if buckets.len() >= PRUNE_ABOVE {
                let mut used: Vec<Instant> = buckets.values().map(|bucket| bucket.at).collect();
                let (_, newest_dropped, _) = used.select_nth_unstable(buckets.len() / 2);
                let cutoff = *newest_dropped;
                buckets.retain(|_, bucket| bucket.at > cutoff);
            }
        }
        let bucket = buckets.entry(key).or_insert(Bucket {
            tokens: self.burst,
            at: now,
        });
        bucket.refill(now, self.per_second, self.burst);
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            return Ok(());
        }
        Err(Duration::from_secs_f64(
            (1.0 - bucket.tokens) / self.per_second,
        ))
    }
}

/// A wait as a `Retry-After` value: whole seconds, rounded up, at least 1.
pub(crate) fn retry_after_secs(wait: Duration) -> u64 {
    wait.as_secs_f64().ceil().max(1.0) as u64
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn a_zero_rate_or_burst_turns_the_limit_off() {
        assert!(RateLimiter::new(0, 10).is_none());
        assert!(RateLimiter::new(10, 0).is_none());
        assert!(RateLimiter::new(1, 1).is_some());
    }

    #[test]
    fn a_credential_gets_its_burst_then_waits_for_the_refill() {
        let limiter = RateLimiter::new(2, 3).unwrap();
        let start = Instant::now();

        for _ in 0..3 {
            assert!(limiter.check_at("key-a", start).is_ok());
        }
        let wait = limiter.check_at("key-a", start).unwrap_err();

        assert_eq!(wait, Duration::from_millis(500));
        assert_eq!(retry_after_secs(wait), 1);
        let later = start + Duration::from_millis(500);
        assert!(limiter.check_at("key-a", later).is_ok());
        assert!(limiter.check_at("key-a", later).is_err());
    }

    #[test]
    fn a_per_minute_limit_allows_its_count_at_once_then_one_more_each_share_of_the_minute() {
        let limiter = RateLimiter::per_minute(3).unwrap();
        let start = Instant::now();

        for _ in 0..3 {
            assert!(limiter.check_at("127.0.0.1", start).is_ok());
        }
        let wait = limiter.check_at("127.0.0.1", start).unwrap_err();

        assert_eq!(retry_after_secs(wait), 20);
        assert!(limiter.check_at("127.0.0.2", start).is_ok());
        assert!(RateLimiter::per_minute(0).is_none());
    }

    #[test]
    fn each_credential_has_its_own_bucket() {
        let limiter = RateLimiter::new(1, 1).unwrap();
        let now = Instant::now();

        assert!(limiter.check_at("key-a", now).is_ok());
        assert!(limiter.check_at("key-a", now).is_err());

        assert!(limiter.check_at("key-b", now).is_ok());
    }

    #[test]
    fn the_buckets_are_keyed_by_hash_not_by_credential() {
        let limiter = RateLimiter::new(1, 1).unwrap();

        limiter.check("clk_secret-credential").unwrap();

        let buckets = limiter.buckets.lock().unwrap();
        let kept = format!("{:?}", buckets.keys().collect::<Vec<_>>());
        assert!(!kept.contains("secret-credential"), "{kept}");
        assert!(buckets.contains_key(&KeyHash::of("clk_secret-credential")));
    }

    #[test]
    fn many_busy_credentials_keep_the_buckets_bounded_by_dropping_the_least_recently_used() {
        let limiter = RateLimiter::per_minute(10).unwrap();
        let start = Instant::now();

        // Every address is used within its refill time, so none of their buckets is full.
        for i in 0..3 * PRUNE_ABOVE {
            let at = start + Duration::from_micros(u64::try_from(i).unwrap());
            assert!(limiter.check_at(&format!("10.0.{i}"), at).is_ok());
        }

        let kept = limiter.buckets.lock().unwrap().len();
        assert!(kept <= PRUNE_ABOVE, "{kept} buckets");
        // The most recent address keeps its count.
        let last = format!("10.0.{}", 3 * PRUNE_ABOVE - 1);
        let at = start + Duration::from_micros(u64::try_from(3 * PRUNE_ABOVE).unwrap());
        for _ in 0..9 {
            assert!(limiter.check_at(&last, at).is_ok());
        }
        assert!(limiter.check_at(&last, at).is_err());
    }

    #[test]
    fn retry_after_rounds_up_to_whole_seconds() {
        assert_eq!(retry_after_secs(Duration::from_millis(1)), 1);
        assert_eq!(retry_after_secs(Duration::from_millis(1500)), 2);
        assert_eq!(retry_after_secs(Duration::from_secs(3)), 3);
    }
}
