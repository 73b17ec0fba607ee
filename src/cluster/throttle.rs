//! Rate-limited logging: a loss must never be silent, but a broker outage at 100 k msgs/s
//! must not write 100 k log lines either.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

/// Lets one event through per period and counts the ones it holds back, so that the next
/// line can say how many it stands for. Lock-free: callable from shards.
#[derive(Debug)]
pub(crate) struct Throttle {
    origin: Instant,
    period_ms: u64,
    /// Milliseconds since `origin` before which nothing gets through.
    next_ms: AtomicU64,
    suppressed: AtomicU64,
}

impl Throttle {
    pub(crate) fn new(period: Duration) -> Self {
        Throttle {
            origin: Instant::now(),
            period_ms: u64::try_from(period.as_millis()).unwrap_or(u64::MAX),
            next_ms: AtomicU64::new(0),
            suppressed: AtomicU64::new(0),
        }
    }

    /// `Some(n)` when this event should be logged, `n` being the events held back since
    /// the last one that was; `None` when it should not.
    pub(crate) fn allow(&self) -> Option<u64> {
        let now = u64::try_from(self.origin.elapsed().as_millis()).unwrap_or(u64::MAX);
        let next = self.next_ms.load(Relaxed);
        if now >= next
            && self
                .next_ms
                .compare_exchange(next, now.saturating_add(self.period_ms), Relaxed, Relaxed)
                .is_ok()
        {
            return Some(self.suppressed.swap(0, Relaxed));
        }
        self.suppressed.fetch_add(1, Relaxed);
        None
    }

    /// Lets the next event through whatever the period (after a state change, the first
    /// failure is news again).
    pub(crate) fn reset(&self) {
        self.next_ms.store(0, Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_per_period_and_a_count_of_the_rest() {
        let t = Throttle::new(Duration::from_secs(3600));
        assert_eq!(t.allow(), Some(0));
        assert_eq!(t.allow(), None);
        assert_eq!(t.allow(), None);
        t.reset();
        assert_eq!(t.allow(), Some(2));
        assert_eq!(t.allow(), None);
    }

    #[test]
    fn a_zero_period_lets_everything_through() {
        let t = Throttle::new(Duration::ZERO);
        assert_eq!(t.allow(), Some(0));
        assert_eq!(t.allow(), Some(0));
    }
}
