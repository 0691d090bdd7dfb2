//! The system clock.

use clarion_domain::ports::Clock;
use time::OffsetDateTime;

/// The wall clock, in UTC, to the millisecond: the stores keep milliseconds, so a time read
/// back equals the time written.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> OffsetDateTime {
        let now = OffsetDateTime::now_utc();
        now.replace_nanosecond(u32::from(now.millisecond()) * 1_000_000)
            .unwrap_or(now)
    }
}

#[cfg(test)]
mod tests {
    use time::UtcOffset;

    use super::*;

    #[test]
    fn the_system_clock_tells_the_current_time_in_utc() {
        let before = OffsetDateTime::now_utc();

        let now = SystemClock.now();

        let after = OffsetDateTime::now_utc();
        assert_eq!(now.offset(), UtcOffset::UTC);
        assert!(before - time::Duration::milliseconds(1) <= now && now <= after);
        assert_eq!(now.nanosecond() % 1_000_000, 0);
    }
}
