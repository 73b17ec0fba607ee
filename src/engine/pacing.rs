//! When a shard's next fan-out round may start: latency-aware batching.
//!
//! A round of small frames costs about one write per subscriber however many frames it
//! carries, so letting frames pile up between rounds cuts the syscalls per delivery on
//! both ends of every socket. But waiting only pays when something arrives meanwhile:
//! at 100 messages per second a 10 ms wait collects one message and only adds latency.
//!
//! So a shard waits only when waiting buys something. [`Pacer`] keeps an estimate of the
//! rate at which frames reach the shard (an exponentially weighted average over rounds)
//! and, after a round that wrote to many sockets, holds the next one back only if at
//! least [`MIN_PILE_UP`] more frames are expected within the latency budget
//! (`--coalesce`). A lightly loaded shard therefore writes at once; a busy one batches,
//! and no frame waits longer than the budget for batching's sake — except that after a
//! round costing more than half the budget, the next one waits twice that round's cost
//! (at most [`MAX_WAIT_BUDGETS`] budgets), which keeps an overloaded shard's rounds
//! large instead of many and small. A shard whose rounds take longer than the wait never
//! waits at all.

use std::time::{Duration, Instant};

/// A fan-out round this long is "heavy": it wrote to many sockets. Lighter rounds are
/// cheap enough to repeat per frame.
pub(crate) const HEAVY_ROUND: Duration = Duration::from_micros(250);

/// Batches up to this size cost about one write per subscriber, whatever their size.
pub(crate) const SMALL_BATCH: usize = 64 << 10;

/// Frames that must be expected within the budget before a shard waits for them.
pub(crate) const MIN_PILE_UP: f64 = 2.0;

/// The longest wait after a costly round, in budgets.
pub(crate) const MAX_WAIT_BUDGETS: u32 = 4;

/// Weight of the newest round in the rate estimate.
const RATE_WEIGHT: f64 = 0.25;

/// Decides, round after round, when the next fan-out round may start.
#[derive(Debug, Clone)]
pub(crate) struct Pacer {
    budget: Duration,
    /// Frames per second reaching the shard (weighted average over rounds).
    rate: f64,
    /// When the previous round started.
    last_start: Option<Instant>,
}

impl Pacer {
    /// A pacer with latency budget `budget` (0: never wait).
    pub(crate) fn new(budget: Duration) -> Self {
        Pacer {
            budget,
            rate: 0.0,
            last_start: None,
        }
    }

    /// The estimated arrival rate, in frames per second.
    #[cfg(test)]
    pub(crate) fn rate(&self) -> f64 {
        self.rate
    }

    /// Takes note of a round that started at `started`, took `took` and carried
    /// `frames` frames of `bytes` bytes; returns the earliest start of the next round,
    /// or `None` to go on at once.
    pub(crate) fn after_round(
        &mut self,
        started: Instant,
        took: Duration,
        frames: usize,
        bytes: usize,
    ) -> Option<Instant> {
        if let Some(last) = self.last_start.replace(started) {
            // Everything this round carried arrived since the last round began.
            let span = started.saturating_duration_since(last).as_secs_f64();
            if span > 0.0 {
                let now = frames as f64 / span;
                self.rate += RATE_WEIGHT * (now - self.rate);
            }
        }
        if self.budget.is_zero() || took < HEAVY_ROUND {
            return None;
        }
        if self.rate * self.budget.as_secs_f64() < MIN_PILE_UP {
            // Light load: the wait would collect almost nothing.
            return None;
        }
        let wait = if bytes <= SMALL_BATCH {
            self.budget
                .max(took * 2)
                .min(self.budget * MAX_WAIT_BUDGETS)
        } else {
            // Large batches cost per byte: batching them saves little.
            self.budget
        };
        (took < wait).then(|| started + wait)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SMALL: usize = 1_000;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    /// A pacer that has seen rounds of `frames` frames every `every`, up to `t`.
    fn warmed(budget: Duration, frames: usize, every: Duration, t: Instant) -> Pacer {
        let mut p = Pacer::new(budget);
        for i in (1..=40).rev() {
            p.after_round(t - every * i, Duration::ZERO, frames, SMALL);
        }
        p
    }

    #[test]
    fn the_rate_follows_the_arrivals() {
        let t = Instant::now();
        let p = warmed(ms(5), 1, ms(10), t);
        assert!((p.rate() - 100.0).abs() < 1.0, "{}", p.rate());
        let p = warmed(ms(5), 5, ms(5), t);
        assert!((p.rate() - 1_000.0).abs() < 10.0, "{}", p.rate());
    }

    #[test]
    fn a_light_load_never_waits() {
        let t = Instant::now();
        // 100 frames/s: a 5 ms wait would collect half a frame.
        let mut p = warmed(ms(5), 1, ms(10), t);
        assert_eq!(p.after_round(t, ms(2), 1, SMALL), None);
        // Heavy traffic but light rounds (few subscribers): no wait either.
        let mut p = warmed(ms(5), 10, ms(1), t);
        assert_eq!(
            p.after_round(t, Duration::from_micros(100), 10, SMALL),
            None
        );
    }

    #[test]
    fn a_busy_shard_waits_within_the_budget() {
        let t = Instant::now();
        // 1,000 frames/s: five expected within 5 ms.
        let mut p = warmed(ms(5), 5, ms(5), t);
        assert_eq!(p.after_round(t, ms(1), 5, SMALL), Some(t + ms(5)));
        // A round costing more than half the budget: twice its cost, at most 4 budgets.
        let mut p = warmed(ms(5), 5, ms(5), t);
        assert_eq!(p.after_round(t, ms(4), 5, SMALL), Some(t + ms(8)));
        let mut p = warmed(ms(5), 5, ms(5), t);
        assert_eq!(p.after_round(t, ms(15), 5, SMALL), Some(t + ms(20)));
        // Overloaded: the round took longer than any wait.
        let mut p = warmed(ms(5), 5, ms(5), t);
        assert_eq!(p.after_round(t, ms(25), 5, SMALL), None);
        // Large batches: the budget only.
        let mut p = warmed(ms(5), 5, ms(5), t);
        assert_eq!(p.after_round(t, ms(4), 5, 1 << 20), Some(t + ms(5)));
    }

    #[test]
    fn a_larger_budget_waits_at_lower_rates_and_zero_never() {
        let t = Instant::now();
        // 100 frames/s with a 50 ms budget: five expected, so it waits.
        let mut p = warmed(ms(50), 1, ms(10), t);
        assert_eq!(p.after_round(t, ms(1), 1, SMALL), Some(t + ms(50)));
        let mut p = warmed(Duration::ZERO, 50, ms(1), t);
        assert_eq!(p.after_round(t, ms(2), 50, SMALL), None);
    }
}
