//! Retrying: one [`Backoff`] and one [`Outage`] for every source and sink.
//!
//! A broker that is away is retried with exponential backoff and jitter, so that many
//! clients do not hammer it in step; the backoff starts again at its minimum after a
//! success, so a reconnect after a healthy session is prompt. An outage is logged when it
//! begins and when it ends, never once per retry.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// The longest wait between two attempts.
pub const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// Spreads retries of many clients apart: ±50%.
pub fn jitter(d: Duration) -> Duration {
    use rand::Rng;
    d.mul_f64(rand::rng().random_range(0.5..1.5))
}

/// Exponential backoff from `min` to [`MAX_BACKOFF`], doubling per failure, reset by a
/// success.
#[derive(Clone, Debug)]
pub struct Backoff {
    min: Duration,
    max: Duration,
    next: Duration,
}

impl Backoff {
    pub fn new(min: Duration) -> Backoff {
        Backoff { min, max: MAX_BACKOFF.max(min), next: min }
    }

    /// The wait before the next attempt, without jitter; doubles the one after it.
    pub fn step(&mut self) -> Duration {
        let d = self.next;
        self.next = (self.next * 2).min(self.max);
        d
    }

    /// A success: the next failure waits the minimum again.
    pub fn reset(&mut self) {
        self.next = self.min;
    }

    /// Sleeps for the next step, jittered.
    pub async fn wait(&mut self) {
        tokio::time::sleep(jitter(self.step())).await;
    }
}

/// Whether a component's server is in trouble: a failure begins an outage, a success ends
/// it, and each transition is reported once. Shared with client callbacks on other threads,
/// so atomic.
#[derive(Debug, Default)]
pub struct Outage {
    on: AtomicBool,
}

impl Outage {
    /// A failure; true when it begins an outage (log it then, and only then).
    pub fn failed(&self) -> bool {
        !self.on.swap(true, Ordering::Relaxed)
    }

    /// A success; true when it ends an outage.
    pub fn ended(&self) -> bool {
        self.on.swap(false, Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_to_its_cap_and_a_success_resets_it() {
        let mut b = Backoff::new(Duration::from_millis(200));
        let steps: Vec<_> = (0..10).map(|_| b.step()).collect();
        assert_eq!(steps[0], Duration::from_millis(200));
        assert_eq!(steps[1], Duration::from_millis(400));
        assert_eq!(*steps.last().unwrap(), MAX_BACKOFF);
        b.reset();
        assert_eq!(b.step(), Duration::from_millis(200));
    }

    #[test]
    fn an_outage_is_announced_once_and_ends_once() {
        let o = Outage::default();
        assert!(o.failed());
        assert!(!o.failed());
        assert!(o.ended());
        assert!(!o.ended());
        assert!(o.failed(), "a second outage is announced again");
    }

    #[test]
    fn jitter_stays_within_half_either_way() {
        for _ in 0..100 {
            let d = jitter(Duration::from_secs(1));
            assert!(d >= Duration::from_millis(500) && d <= Duration::from_millis(1500));
        }
    }
}
