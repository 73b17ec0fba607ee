//! Open-loop rate pacing by absolute time.
//!
//! Owns the arithmetic that says how many messages (or connection attempts)
//! should have gone out by a given instant, and the split of a total rate over
//! publishers and threads. Senders wake on a coarse timer (~1 ms), ask
//! [`due`] how far the schedule has advanced and send the difference in one
//! burst, so timer jitter never accumulates into rate error and there is no
//! per-message wakeup. A sender that falls behind catches up on its next wake
//! (its backlog is reported), and nothing is sent past the step's window.

use std::time::Duration;

/// Messages that should have been sent `elapsed` into a window of `window`
/// that carries `total` messages, spread uniformly (never more than `total`).
#[inline]
pub fn due(elapsed: Duration, window: Duration, total: u64) -> u64 {
    let w = window.as_nanos();
    let e = elapsed.as_nanos();
    if e >= w || w == 0 {
        return total;
    }
    // u128: total (< 2^64) × elapsed (< 2^64 ns) cannot overflow.
    let n = u128::from(total) * e / w;
    u64::try_from(n).unwrap_or(total).min(total)
}

/// Total messages for a step at `rate` msgs/s over `window` (rounded to nearest).
pub fn step_total(rate: u64, window: Duration) -> u64 {
    let n = (u128::from(rate) * window.as_nanos() + 500_000_000) / 1_000_000_000;
    u64::try_from(n).unwrap_or(u64::MAX)
}

/// Splits `total` into `parts` near-equal integer shares (first ones get the
/// remainder) so that the shares add up to `total` exactly.
pub fn split(total: u64, parts: usize) -> Vec<u64> {
    if parts == 0 {
        return Vec::new();
    }
    let p = parts as u64;
    let (base, rem) = (total / p, total % p);
    (0..p).map(|i| base + u64::from(i < rem)).collect()
}

/// Seconds between consecutive events at `rate` per second (`None` = unlimited).
pub fn interval(rate: f64) -> Option<Duration> {
    if rate > 0.0 && rate.is_finite() {
        Some(Duration::from_secs_f64(1.0 / rate))
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);

    #[test]
    fn due_is_linear_and_capped() {
        let w = Duration::from_secs(10);
        assert_eq!(due(Duration::ZERO, w, 10_000), 0);
        assert_eq!(due(Duration::from_millis(1), w, 10_000), 1);
        assert_eq!(due(Duration::from_millis(999), w, 10_000), 999);
        assert_eq!(due(Duration::from_secs(5), w, 10_000), 5_000);
        assert_eq!(due(w, w, 10_000), 10_000);
        assert_eq!(due(Duration::from_secs(60), w, 10_000), 10_000);
        assert_eq!(due(Duration::from_secs(1), Duration::ZERO, 7), 7);
    }

    #[test]
    fn due_never_decreases_and_bursts_are_small() {
        // 1 M msgs/s over 2 s checked at 1 ms ticks: ~1000 per tick, monotone.
        let w = 2 * S;
        let total = step_total(1_000_000, w);
        assert_eq!(total, 2_000_000);
        let mut last = 0;
        for ms in 0..=2_000u64 {
            let d = due(Duration::from_millis(ms), w, total);
            assert!(d >= last);
            assert!(d - last <= 1_000);
            last = d;
        }
        assert_eq!(last, total);
    }

    #[test]
    fn due_no_overflow_at_extremes() {
        let w = Duration::from_secs(1_000_000);
        assert_eq!(due(w / 2, w, u64::MAX), u64::MAX / 2);
    }

    #[test]
    fn totals_and_splits_add_up() {
        assert_eq!(step_total(1000, Duration::from_millis(2500)), 2500);
        assert_eq!(step_total(3, Duration::from_millis(500)), 2); // 1.5 rounds up
        assert_eq!(step_total(0, 10 * S), 0);
        let parts = split(1003, 4);
        assert_eq!(parts, vec![251, 251, 251, 250]);
        assert_eq!(parts.iter().sum::<u64>(), 1003);
        assert_eq!(split(2, 5), vec![1, 1, 0, 0, 0]);
        assert!(split(10, 0).is_empty());
    }

    #[test]
    fn intervals() {
        assert_eq!(interval(1000.0), Some(Duration::from_millis(1)));
        assert_eq!(interval(0.0), None);
        assert_eq!(interval(f64::INFINITY), None);
    }
}
