//! Delivery accounting: what was sent, what arrived, and how late.
//!
//! Owns the per-(subscriber, publisher) sequence tracker that classifies every
//! arrival as first-time (in order or reordered), duplicate or stale, the
//! per-thread counters and latency histograms (one per step), and their merge
//! across threads. Loss is *not* inferred from sequence gaps: it is computed
//! exactly as `expected − unique`, where `expected` is messages accepted for
//! sending × subscribers and `unique` counts first arrivals only. Gaps are
//! only used to tell a late first arrival (reorder) from a duplicate.
//! Everything here is plain data so it can be unit-tested and merged.

use std::collections::BTreeMap;

use hdrhistogram::Histogram;
use serde::Serialize;

/// How far behind the newest sequence number the tracker can still tell a
/// late first arrival from a duplicate.
pub const REORDER_WINDOW: u64 = 128;

/// Highest latency the histograms track (60 s, in ns); larger values saturate.
pub const MAX_LATENCY_NS: u64 = 60_000_000_000;

/// Classification of one arrival.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arrival {
    /// First arrival of this sequence number. `reordered` when a higher one
    /// had already arrived.
    New {
        /// Arrived after a higher sequence number from the same publisher.
        reordered: bool,
    },
    /// This sequence number had already arrived.
    Duplicate,
    /// Older than the window: cannot be classified; counted neither as
    /// unique nor as duplicate (so loss is, if anything, over-reported).
    Stale,
}

/// Sequence state for one (subscriber, publisher) pair: 24 bytes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SeqTracker {
    /// Highest sequence number seen + 1 (0 = nothing seen yet).
    next: u64,
    /// Bit `i` set ⇔ sequence `next - 1 - i` has arrived.
    window: u128,
}

impl SeqTracker {
    /// Classifies `seq` and records it.
    #[inline]
    pub fn observe(&mut self, seq: u64) -> Arrival {
        if seq >= self.next {
            let shift = seq - self.next + 1;
            self.window = if shift >= 128 {
                0
            } else {
                self.window << shift
            };
            self.window |= 1;
            self.next = seq + 1;
            Arrival::New { reordered: false }
        } else {
            let age = self.next - 1 - seq;
            if age >= REORDER_WINDOW {
                return Arrival::Stale;
            }
            let bit = 1u128 << age;
            if self.window & bit != 0 {
                Arrival::Duplicate
            } else {
                self.window |= bit;
                Arrival::New { reordered: true }
            }
        }
    }
}

/// Receive-side figures of one step, as seen by one thread's subscribers.
#[derive(Debug, Clone)]
pub struct StepRecv {
    /// Data messages of this step received by subscribers (including duplicates).
    pub received: u64,
    /// First arrivals.
    pub unique: u64,
    /// Repeated arrivals.
    pub duplicates: u64,
    /// First arrivals that came after a higher sequence number.
    pub reorders: u64,
    /// Arrivals too old to classify (see [`Arrival::Stale`]).
    pub stale: u64,
    /// Protocol v1: offsets skipped before this step's pushes (a push whose
    /// offset is not its topic's previous + 1 adds the difference).
    pub offset_gaps: u64,
    /// Protocol v1: this step's pushes at or below an offset already seen.
    pub offset_dups: u64,
    /// Earliest and latest receive time (ns since epoch); `u64::MAX`/0 when none.
    pub first_recv_ns: u64,
    /// See `first_recv_ns`.
    pub last_recv_ns: u64,
    /// Send→receive latency of first arrivals, in ns.
    pub latency: Histogram<u64>,
}

impl StepRecv {
    /// Records what a push's offset said (protocol v1).
    #[inline]
    pub fn record_offset(&mut self, check: crate::v1::OffsetCheck) {
        match check {
            crate::v1::OffsetCheck::Gap(n) => self.offset_gaps += n,
            crate::v1::OffsetCheck::Back => self.offset_dups += 1,
            crate::v1::OffsetCheck::First | crate::v1::OffsetCheck::Next => {}
        }
    }

    /// Empty figures with a histogram covering 1 ns..60 s at 3 significant digits.
    pub fn new() -> Self {
        Self {
            received: 0,
            unique: 0,
            duplicates: 0,
            reorders: 0,
            stale: 0,
            offset_gaps: 0,
            offset_dups: 0,
            first_recv_ns: u64::MAX,
            last_recv_ns: 0,
            latency: new_histogram(),
        }
    }

    /// Records one arrival whose classification is `arrival`.
    #[inline]
    pub fn record(&mut self, arrival: Arrival, latency_ns: u64, now_ns: u64) {
        self.received += 1;
        match arrival {
            Arrival::New { reordered } => {
                self.unique += 1;
                if reordered {
                    self.reorders += 1;
                }
                self.latency.saturating_record(latency_ns);
                if now_ns < self.first_recv_ns {
                    self.first_recv_ns = now_ns;
                }
                if now_ns > self.last_recv_ns {
                    self.last_recv_ns = now_ns;
                }
            }
            Arrival::Duplicate => self.duplicates += 1,
            Arrival::Stale => self.stale += 1,
        }
    }

    /// Adds another thread's figures.
    pub fn merge(&mut self, other: &StepRecv) {
        self.received += other.received;
        self.unique += other.unique;
        self.duplicates += other.duplicates;
        self.reorders += other.reorders;
        self.stale += other.stale;
        self.offset_gaps += other.offset_gaps;
        self.offset_dups += other.offset_dups;
        self.first_recv_ns = self.first_recv_ns.min(other.first_recv_ns);
        self.last_recv_ns = self.last_recv_ns.max(other.last_recv_ns);
        // Same bounds on both sides, so addition cannot fail.
        let _ = self.latency.add(&other.latency);
    }
}

impl Default for StepRecv {
    fn default() -> Self {
        Self::new()
    }
}

/// A latency histogram with the bounds used everywhere in this crate.
pub fn new_histogram() -> Histogram<u64> {
    match Histogram::new_with_bounds(1, MAX_LATENCY_NS, 3) {
        Ok(h) => h,
        // The bounds are constants that hdrhistogram accepts.
        Err(e) => unreachable!("histogram bounds: {e}"),
    }
}

/// Send-side figures of one step, summed over one thread's publishers.
#[derive(Debug, Clone, Default)]
pub struct StepSend {
    /// Messages handed to the socket (WebSocket) or requests written (HTTP).
    pub sent: u64,
    /// Messages the server accepted: equal to `sent` for WebSocket
    /// publishers, 2xx responses for HTTP publishers.
    pub accepted: u64,
    /// HTTP responses other than 2xx.
    pub rejected: u64,
    /// HTTP requests without a response (connection lost).
    pub unanswered: u64,
    /// Largest backlog seen (messages due but not yet sent) on one publisher.
    pub max_backlog: u64,
    /// When the last message of the step was handed to a socket (ns since epoch).
    pub last_send_ns: u64,
    /// HTTP status code counts.
    pub http_status: Tally<u16>,
}

impl StepSend {
    /// Adds another thread's figures.
    pub fn merge(&mut self, other: &StepSend) {
        self.sent += other.sent;
        self.accepted += other.accepted;
        self.rejected += other.rejected;
        self.unanswered += other.unanswered;
        self.max_backlog = self.max_backlog.max(other.max_backlog);
        self.last_send_ns = self.last_send_ns.max(other.last_send_ns);
        self.http_status.merge(&other.http_status);
    }
}

/// Counts per key (close codes, error reasons, HTTP statuses).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct Tally<K: Ord>(pub BTreeMap<K, u64>);

impl<K: Ord> Default for Tally<K> {
    fn default() -> Self {
        Self(BTreeMap::new())
    }
}

impl<K: Ord + Clone> Tally<K> {
    /// Adds one to `key`.
    pub fn add(&mut self, key: K) {
        *self.0.entry(key).or_insert(0) += 1;
    }

    /// Adds all counts of `other`.
    pub fn merge(&mut self, other: &Tally<K>) {
        for (k, v) in &other.0 {
            *self.0.entry(k.clone()).or_insert(0) += v;
        }
    }

    /// Sum of all counts.
    pub fn total(&self) -> u64 {
        self.0.values().sum()
    }

    /// `self − earlier`, per key (for figures kept cumulatively).
    pub fn since(&self, earlier: &Tally<K>) -> Tally<K> {
        let mut out = Tally::default();
        for (k, v) in &self.0 {
            let before = earlier.0.get(k).copied().unwrap_or(0);
            if *v > before {
                out.0.insert(k.clone(), v - before);
            }
        }
        out
    }
}

/// How connections ended before we asked them to (cumulative).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Disconnects {
    /// Server close frames, by close code (1005 = close frame without code).
    pub close_codes: Tally<u16>,
    /// TCP EOF without a close frame.
    pub eof: u64,
    /// Socket errors, by message.
    pub errors: Tally<String>,
    /// Protocol violations by the server, by description.
    pub protocol: Tally<String>,
}

impl Disconnects {
    /// Total number of disconnects.
    pub fn total(&self) -> u64 {
        self.close_codes.total() + self.eof + self.errors.total() + self.protocol.total()
    }

    /// Adds another thread's figures.
    pub fn merge(&mut self, other: &Disconnects) {
        self.close_codes.merge(&other.close_codes);
        self.eof += other.eof;
        self.errors.merge(&other.errors);
        self.protocol.merge(&other.protocol);
    }

    /// `self − earlier`.
    pub fn since(&self, earlier: &Disconnects) -> Disconnects {
        Disconnects {
            close_codes: self.close_codes.since(&earlier.close_codes),
            eof: self.eof.saturating_sub(earlier.eof),
            errors: self.errors.since(&earlier.errors),
            protocol: self.protocol.since(&earlier.protocol),
        }
    }
}

/// Everything one worker thread accounts; snapshotted (cloned) by the coordinator.
#[derive(Debug, Clone, Default)]
pub struct ThreadStats {
    /// Receive figures by step index (created when the step starts).
    pub recv: Vec<Option<StepRecv>>,
    /// Send figures by step index.
    pub send: Vec<StepSend>,
    /// Messages that did not carry a valid stamp, or named an unknown step/publisher.
    pub foreign: u64,
    /// Data messages received by publisher connections (chat echo), not measured.
    pub pub_received: u64,
    /// Subscriber disconnects (cumulative).
    pub sub_disconnects: Disconnects,
    /// Publisher disconnects (cumulative).
    pub pub_disconnects: Disconnects,
    /// HTTP publisher reconnects.
    pub http_reconnects: u64,
    /// Protocol v1: offsets skipped, over every push (with or without a stamp).
    pub offset_gaps: u64,
    /// Protocol v1: pushes at or below an offset already seen, over every push.
    pub offset_dups: u64,
}

impl ThreadStats {
    /// Makes sure step `step` has receive and send slots.
    pub fn ensure_step(&mut self, step: usize) {
        if self.recv.len() <= step {
            self.recv.resize_with(step + 1, || None);
        }
        if self.recv[step].is_none() {
            self.recv[step] = Some(StepRecv::new());
        }
        if self.send.len() <= step {
            self.send.resize_with(step + 1, StepSend::default);
        }
    }

    /// Send slot for `step` (created on demand).
    pub fn send_mut(&mut self, step: usize) -> &mut StepSend {
        if self.send.len() <= step {
            self.send.resize_with(step + 1, StepSend::default);
        }
        &mut self.send[step]
    }

    /// Adds another thread's figures.
    pub fn merge(&mut self, other: &ThreadStats) {
        for (i, r) in other.recv.iter().enumerate() {
            if let Some(r) = r {
                self.ensure_step(i);
                if let Some(mine) = self.recv[i].as_mut() {
                    mine.merge(r);
                }
            }
        }
        for (i, s) in other.send.iter().enumerate() {
            self.send_mut(i).merge(s);
        }
        self.foreign += other.foreign;
        self.pub_received += other.pub_received;
        self.sub_disconnects.merge(&other.sub_disconnects);
        self.pub_disconnects.merge(&other.pub_disconnects);
        self.http_reconnects += other.http_reconnects;
        self.offset_gaps += other.offset_gaps;
        self.offset_dups += other.offset_dups;
    }
}

/// Percentile summary of a latency histogram, in microseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct LatencySummary {
    /// Samples recorded.
    pub count: u64,
    /// Mean.
    pub mean_us: f64,
    /// Median.
    pub p50_us: f64,
    /// 90th percentile.
    pub p90_us: f64,
    /// 99th percentile.
    pub p99_us: f64,
    /// 99.9th percentile.
    pub p999_us: f64,
    /// Maximum.
    pub max_us: f64,
}

impl LatencySummary {
    /// Summarises a histogram of nanosecond values.
    pub fn from_histogram(h: &Histogram<u64>) -> Self {
        if h.is_empty() {
            return Self::default();
        }
        let us = |ns: u64| ns as f64 / 1_000.0;
        Self {
            count: h.len(),
            mean_us: h.mean() / 1_000.0,
            p50_us: us(h.value_at_quantile(0.50)),
            p90_us: us(h.value_at_quantile(0.90)),
            p99_us: us(h.value_at_quantile(0.99)),
            p999_us: us(h.value_at_quantile(0.999)),
            max_us: us(h.max()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(seqs: &[u64]) -> StepRecv {
        let mut t = SeqTracker::default();
        let mut r = StepRecv::new();
        for &s in seqs {
            r.record(t.observe(s), 1_000, 1);
        }
        r
    }

    #[test]
    fn in_order_stream() {
        let r = run(&(0..1000).collect::<Vec<_>>());
        assert_eq!(
            (r.received, r.unique, r.duplicates, r.reorders),
            (1000, 1000, 0, 0)
        );
    }

    #[test]
    fn gaps_are_loss_not_reorders() {
        // 0..10 with 3, 4 and 7 missing: 7 unique, loss = 10 - 7 = 3.
        let r = run(&[0, 1, 2, 5, 6, 8, 9]);
        assert_eq!((r.unique, r.duplicates, r.reorders, r.stale), (7, 0, 0, 0));
        assert_eq!(10 - r.unique, 3);
    }

    #[test]
    fn late_arrival_is_a_reorder_then_a_duplicate() {
        let r = run(&[0, 1, 3, 2, 2, 3, 0, 4]);
        assert_eq!(r.received, 8);
        assert_eq!(r.unique, 5);
        assert_eq!(r.reorders, 1);
        assert_eq!(r.duplicates, 3);
    }

    #[test]
    fn window_edges() {
        let mut t = SeqTracker::default();
        assert_eq!(t.observe(200), Arrival::New { reordered: false });
        // 200 - 127 = 73 is the oldest still inside the window.
        assert_eq!(t.observe(73), Arrival::New { reordered: true });
        assert_eq!(t.observe(73), Arrival::Duplicate);
        assert_eq!(t.observe(72), Arrival::Stale);
        // A jump of more than the window clears it.
        assert_eq!(t.observe(1_000), Arrival::New { reordered: false });
        assert_eq!(t.observe(999), Arrival::New { reordered: true });
        assert_eq!(t.observe(1_000), Arrival::Duplicate);
        assert_eq!(t.observe(200), Arrival::Stale);
        // Exactly 128 ahead.
        assert_eq!(t.observe(1_128), Arrival::New { reordered: false });
        assert_eq!(t.observe(1_001), Arrival::New { reordered: true });
        assert_eq!(t.observe(1_000), Arrival::Stale);
    }

    #[test]
    fn first_message_need_not_be_zero() {
        let mut t = SeqTracker::default();
        assert_eq!(t.observe(5), Arrival::New { reordered: false });
        assert_eq!(t.observe(0), Arrival::New { reordered: true });
        assert_eq!(t.observe(5), Arrival::Duplicate);
    }

    #[test]
    fn percentiles_of_known_distribution() {
        let mut h = new_histogram();
        for us in 1..=1000u64 {
            h.saturating_record(us * 1_000);
        }
        let s = LatencySummary::from_histogram(&h);
        assert_eq!(s.count, 1000);
        let close = |a: f64, b: f64| (a - b).abs() / b < 0.002;
        assert!(close(s.p50_us, 500.0), "{s:?}");
        assert!(close(s.p90_us, 900.0), "{s:?}");
        assert!(close(s.p99_us, 990.0), "{s:?}");
        assert!(close(s.p999_us, 999.0), "{s:?}");
        assert!(close(s.max_us, 1000.0), "{s:?}");
        assert!(close(s.mean_us, 500.5), "{s:?}");
        assert_eq!(LatencySummary::from_histogram(&new_histogram()).count, 0);
    }

    #[test]
    fn histograms_merge_across_threads() {
        let mut a = StepRecv::new();
        let mut b = StepRecv::new();
        for i in 0..900u64 {
            a.record(Arrival::New { reordered: false }, 1_000 + i, 10);
        }
        for _ in 0..100 {
            b.record(Arrival::New { reordered: false }, 1_000_000, 20);
        }
        b.record(Arrival::Duplicate, 5, 30);
        a.merge(&b);
        assert_eq!(a.unique, 1000);
        assert_eq!(a.received, 1001);
        assert_eq!(a.duplicates, 1);
        assert_eq!((a.first_recv_ns, a.last_recv_ns), (10, 20));
        let s = LatencySummary::from_histogram(&a.latency);
        assert_eq!(s.count, 1000);
        assert!(s.p50_us < 2.0);
        assert!((s.p99_us - 1000.0).abs() < 1.0, "{s:?}");
        // Saturation instead of an error for absurd values.
        a.latency.saturating_record(u64::MAX);
        assert!(a.latency.max() >= MAX_LATENCY_NS);
    }

    #[test]
    fn thread_stats_merge_and_tallies() {
        let mut a = ThreadStats::default();
        a.ensure_step(1);
        a.send_mut(1).sent = 5;
        a.sub_disconnects.close_codes.add(1001);
        let mut b = ThreadStats::default();
        b.ensure_step(2);
        b.send_mut(2).sent = 7;
        b.sub_disconnects.close_codes.add(1001);
        b.sub_disconnects.eof = 2;
        let before = a.sub_disconnects.clone();
        a.merge(&b);
        assert_eq!(a.send[1].sent, 5);
        assert_eq!(a.send[2].sent, 7);
        assert!(a.recv[2].is_some());
        assert_eq!(a.sub_disconnects.total(), 4);
        let d = a.sub_disconnects.since(&before);
        assert_eq!(d.total(), 3);
        assert_eq!(d.close_codes.0.get(&1001), Some(&1));
    }
}
