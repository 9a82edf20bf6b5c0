//! The clock: the one place herald reads the wall clock (the pipeline hands it to every
//! source and sink that needs wall time).
//!
//! The wall clock is read once, at start; from then on wall time is that reading plus the
//! time tokio's monotonic clock says has passed. So a wall clock stepped by NTP cannot make
//! engine time jump, and tokio's paused test clock moves herald's wall time too: the
//! daemon's live behaviour (wake-ups, the commit interval, the clamp of future records) is
//! tested deterministically, without sleeping.

use tokio::time::Instant;

use crate::model::Timestamp;

#[derive(Clone, Copy, Debug)]
pub struct Clock {
    wall: Timestamp,
    base: Instant,
}

impl Clock {
    /// The system's wall clock, read now.
    pub fn system() -> Clock {
        let since =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
        Clock::starting_at(Timestamp(i64::try_from(since.as_nanos()).unwrap_or(i64::MAX)))
    }

    /// A clock that reads `wall` now (tests pick their own epoch).
    pub fn starting_at(wall: Timestamp) -> Clock {
        Clock { wall, base: Instant::now() }
    }

    /// Wall time now.
    pub fn now(&self) -> Timestamp {
        let passed = Instant::now().saturating_duration_since(self.base);
        self.wall.saturating_add(crate::model::Nanos::from_std(passed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test(start_paused = true)]
    async fn wall_time_follows_the_paused_test_clock() {
        let clock = Clock::starting_at(Timestamp(1_000));
        assert_eq!(clock.now(), Timestamp(1_000));
        tokio::time::advance(Duration::from_millis(1500)).await;
        assert_eq!(clock.now(), Timestamp(1_000 + 1_500_000_000));
    }
}
