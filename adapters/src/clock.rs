//! The system clock.

use clarion_domain::ports::Clock;
use time::OffsetDateTime;

/// The wall clock, in UTC.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> OffsetDateTime {
        OffsetDateTime::now_utc()
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
        assert!(before <= now && now <= after);
    }
}
