//! Lanes: a shard's fan-out round, served in slices of clients.
//!
//! A round to 10,000 sockets takes tens of milliseconds on a loaded core (one write per
//! socket, almost all of it kernel time). Served in one go, a message published just
//! after a round began waits for the whole round to end and then for the next round to
//! reach its socket: up to two rounds. Lanes cut that to about one.
//!
//! The shard's clients are split by slab key into lanes of [`LANE_KEYS`]; a key never
//! changes, so neither does a client's lane. Frames drained from the inbox go into one
//! log shared by all lanes, and each lane remembers how far into the log it has been
//! served. A round serves the lanes in turn, draining the inbox again before each one, so
//! a frame that arrives mid-round goes out with the rest of this round, and the lanes
//! already passed get it in the next. A socket still sees at most one write per lane
//! visit, and the log is the only copy of the frames: a lane is served with a slice of
//! it.
//!
//! A lane is never served a frame twice (its position only moves forward), and never
//! skips one: a frame leaves the log only once every lane has been served it. A client
//! registered meanwhile is in a lane whose position is at or before the log's end, so
//! it gets every frame drained after it registered.

use std::ops::Range;

use crate::engine::fanout::Published;

/// Slab keys per lane. A shard with fewer clients has one lane and serves each round in
/// one go, exactly as without lanes.
pub(crate) const LANE_KEYS: usize = 1024;

/// The frames on their way out of one shard, and how far each lane has been served.
#[derive(Debug, Default)]
pub(crate) struct Lanes {
    /// Frames not yet served to every lane, oldest first.
    log: Vec<Published>,
    /// The position (counting every frame ever logged) of `log[0]`.
    base: u64,
    /// Per lane: the position of the first frame it has not been served.
    next: Vec<u64>,
}

impl Lanes {
    /// The position just past the newest frame.
    fn end(&self) -> u64 {
        self.base + self.log.len() as u64
    }

    /// Frames held (not yet served to every lane).
    pub(crate) fn len(&self) -> usize {
        self.log.len()
    }

    /// Lanes so far (they only grow: slab keys are reused, never given back).
    pub(crate) fn count(&self) -> usize {
        self.next.len()
    }

    /// Logs a frame for every lane.
    pub(crate) fn push(&mut self, p: Published) {
        self.log.push(p);
    }

    /// Makes sure the lane of slab key `key` exists. A new lane starts at the end of the
    /// log: its clients registered just now and want only what comes next.
    pub(crate) fn open(&mut self, key: usize) {
        let lane = key / LANE_KEYS;
        if lane >= self.next.len() {
            let end = self.end();
            self.next.resize(lane + 1, end);
        }
    }

    /// The slab keys of `lane`.
    pub(crate) fn keys(lane: usize) -> Range<u32> {
        let start = lane * LANE_KEYS;
        // Keys are u32 in snapshots; a shard never holds 4 billion clients.
        start as u32..(start + LANE_KEYS) as u32
    }

    /// The frames `lane` has not been served yet.
    pub(crate) fn pending(&self, lane: usize) -> &[Published] {
        let from = self.next.get(lane).map_or(self.end(), |&n| n);
        &self.log[(from - self.base) as usize..]
    }

    /// Marks `lane` as served everything logged so far.
    pub(crate) fn served(&mut self, lane: usize) {
        let end = self.end();
        if let Some(n) = self.next.get_mut(lane) {
            *n = end;
        }
    }

    /// Whether some lane has not been served every frame.
    pub(crate) fn behind(&self) -> bool {
        let end = self.end();
        self.next.iter().any(|&n| n < end)
    }

    /// Takes out the frames every lane has been served, oldest first (into `done`).
    pub(crate) fn retire(&mut self, done: &mut Vec<Published>) {
        let end = self.end();
        let oldest = self.next.iter().copied().min().unwrap_or(end);
        let n = (oldest - self.base) as usize;
        done.extend(self.log.drain(..n));
        self.base = oldest;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::frame::{Opcode, encode};
    use std::sync::Arc;

    fn frame(i: u8) -> Published {
        Published::new(Arc::from("t"), encode(Opcode::Binary, &[i]))
    }

    fn payloads(frames: &[Published]) -> Vec<u8> {
        frames.iter().map(|p| p.frame[2]).collect()
    }

    #[test]
    fn a_frame_logged_mid_round_reaches_the_later_lanes_now_and_the_earlier_ones_next() {
        let mut lanes = Lanes::default();
        lanes.open(0);
        lanes.open(LANE_KEYS); // lane 1
        lanes.push(frame(1));
        assert_eq!(payloads(lanes.pending(0)), [1]);
        lanes.served(0);
        lanes.push(frame(2)); // arrives between the two lanes
        assert_eq!(payloads(lanes.pending(1)), [1, 2]);
        lanes.served(1);
        let mut done = Vec::new();
        lanes.retire(&mut done);
        assert_eq!(payloads(&done), [1], "frame 2 is still owed to lane 0");
        assert!(lanes.behind());
        assert_eq!(payloads(lanes.pending(0)), [2]);
        lanes.served(0);
        assert!(!lanes.behind());
        lanes.retire(&mut done);
        assert_eq!(payloads(&done), [1, 2]);
        assert_eq!(lanes.len(), 0);
    }

    #[test]
    fn a_new_lane_starts_at_the_end_and_an_old_one_keeps_its_place() {
        let mut lanes = Lanes::default();
        lanes.open(5);
        lanes.push(frame(1));
        lanes.open(3 * LANE_KEYS + 1); // lanes 1 to 3, all new
        assert_eq!(lanes.count(), 4);
        assert!(lanes.pending(3).is_empty());
        assert!(lanes.pending(1).is_empty());
        lanes.open(7); // lane 0 exists: nothing moves
        assert_eq!(payloads(lanes.pending(0)), [1]);
        assert_eq!(Lanes::keys(3), 3 * LANE_KEYS as u32..4 * LANE_KEYS as u32);
    }

    #[test]
    fn without_lanes_nothing_is_held() {
        let mut lanes = Lanes::default();
        lanes.push(frame(1));
        assert!(!lanes.behind());
        let mut done = Vec::new();
        lanes.retire(&mut done);
        assert_eq!(payloads(&done), [1]);
        assert_eq!(lanes.len(), 0);
    }
}
