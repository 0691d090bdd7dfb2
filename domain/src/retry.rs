//! The retry policy: how many attempts a message gets, how long to wait between them, and how
//! old a message may grow before it is given up.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// When and how often a message that failed for a transient reason is sent again.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RetryPolicy {
    /// Attempts in all, the first included: 4 means the first send plus 3 retries (pymess).
    pub max_attempts: u32,
    /// The wait after the first failed attempt, before jitter; it doubles with each attempt.
    #[serde(with = "seconds")]
    pub base_delay: Duration,
    /// The longest wait between two attempts, before the provider's Retry-After is applied.
    #[serde(with = "seconds")]
    pub max_delay: Duration,
    /// A message older than this becomes ERROR without another attempt.
    #[serde(with = "seconds")]
    pub max_age: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: 4,
            base_delay: Duration::from_secs(30),
            max_delay: Duration::from_secs(600),
            max_age: Duration::from_secs(3600),
        }
    }
}

/// Why a retry policy was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RetryPolicyError {
    /// `max_attempts` is 0: a message would never be sent.
    #[error("retry.max_attempts must be at least 1")]
    NoAttempts,
    /// `base_delay` is 0: retries would follow each other without a pause.
    #[error("retry.base_delay must be more than 0 seconds")]
    ZeroDelay,
    /// `max_delay` is shorter than `base_delay`, so the cap would undercut the first wait.
    #[error("retry.max_delay must not be shorter than retry.base_delay")]
    MaxBelowBase,
}

impl RetryPolicy {
    /// Checks the policy's values.
    ///
    /// # Errors
    /// A [`RetryPolicyError`] naming the setting that is wrong.
    pub fn validate(&self) -> Result<(), RetryPolicyError> {
        if self.max_attempts == 0 {
            return Err(RetryPolicyError::NoAttempts);
        }
        if self.base_delay.is_zero() {
            return Err(RetryPolicyError::ZeroDelay);
        }
        if self.max_delay < self.base_delay {
            return Err(RetryPolicyError::MaxBelowBase);
        }
        Ok(())
    }

    /// The wait after `attempts_made` failed attempts (1 after the first): exponential backoff
    /// capped at `max_delay`, with "equal jitter" (between half and all of the backoff, as
    /// `jitter` goes from 0 to 1), and never less than the provider's `Retry-After`.
    #[must_use]
    pub fn delay(
        &self,
        attempts_made: u32,
        jitter: f64,
        retry_after: Option<Duration>,
    ) -> Duration {
        let doublings = attempts_made.saturating_sub(1).min(31);
        let backoff = self
            .base_delay
            .saturating_mul(1u32 << doublings)
            .min(self.max_delay);
        let jitter = if jitter.is_finite() {
            jitter.clamp(0.0, 1.0)
        } else {
            0.0
        };
        let half = backoff / 2;
        let jittered = half + half.mul_f64(jitter);
        match retry_after {
            Some(floor) if floor > jittered => floor,
            _ => jittered,
        }
    }

    /// Whether another attempt may follow `attempts_made` attempts.
    #[must_use]
    pub fn attempts_left(&self, attempts_made: u32) -> bool {
        attempts_made < self.max_attempts
    }
}

/// A deterministic jitter in `[0, 1)` for one message's attempt, so that messages that failed
/// together are not retried together, without a source of randomness in the domain.
#[must_use]
pub fn jitter_for(seed: i64, attempt: u32) -> f64 {
    // SplitMix64 finaliser over the message id and attempt number.
    let mut z = (seed as u64) ^ (u64::from(attempt).wrapping_mul(0x9E37_79B9_7F4A_7C15));
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^= z >> 31;
    (z >> 11) as f64 / (1u64 << 53) as f64
}

mod seconds {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(value: &Duration, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_u64(value.as_secs())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Duration, D::Error> {
        u64::deserialize(deserializer).map(Duration::from_secs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn the_default_policy_is_four_attempts_within_an_hour() {
        let policy = RetryPolicy::default();
        assert!(policy.attempts_left(3));
        assert!(!policy.attempts_left(4));
        assert_eq!(policy.max_age, Duration::from_secs(3600));
    }

    #[test]
    fn backoff_doubles_and_is_capped() {
        let policy = RetryPolicy::default();
        assert_eq!(policy.delay(1, 1.0, None), Duration::from_secs(30));
        assert_eq!(policy.delay(2, 1.0, None), Duration::from_secs(60));
        assert_eq!(policy.delay(3, 0.0, None), Duration::from_secs(60));
        assert_eq!(policy.delay(30, 1.0, None), Duration::from_secs(600));
    }

    #[test]
    fn retry_after_is_a_floor() {
        let policy = RetryPolicy::default();
        assert_eq!(
            policy.delay(1, 0.5, Some(Duration::from_secs(120))),
            Duration::from_secs(120)
        );
        assert_eq!(
            policy.delay(2, 1.0, Some(Duration::from_secs(5))),
            Duration::from_secs(60)
        );
    }

    #[test]
    fn invalid_policies_name_the_setting() {
        let policy = RetryPolicy {
            max_attempts: 0,
            ..RetryPolicy::default()
        };
        assert_eq!(
            policy.validate().map_err(|e| e.to_string()),
            Err("retry.max_attempts must be at least 1".to_owned())
        );
    }

    proptest! {
        #[test]
        fn jitter_stays_in_the_unit_interval(seed in any::<i64>(), attempt in any::<u32>()) {
            let j = jitter_for(seed, attempt);
            prop_assert!((0.0..1.0).contains(&j));
        }

        #[test]
        fn the_delay_is_between_half_the_backoff_and_the_cap(attempt in 1u32..64, jitter in 0.0f64..1.0, floor in proptest::option::of(0u64..10_000)) {
            let policy = RetryPolicy::default();
            let delay = policy.delay(attempt, jitter, floor.map(Duration::from_secs));
            prop_assert!(delay >= policy.base_delay / 2);
            prop_assert!(delay <= policy.max_delay.max(Duration::from_secs(floor.unwrap_or(0))));
            if let Some(floor) = floor {
                prop_assert!(delay >= Duration::from_secs(floor));
            }
        }
    }
}
