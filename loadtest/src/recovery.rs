//! The recovery scenario (`--recover N`): per-subscriber state and verdict.
//!
//! Owns what one subscriber goes through — a first connection that subscribes
//! by command and records the position (`offset`, `epoch`) of its reply; a
//! second one, after every subscriber was away while N messages were
//! published, that subscribes with `since` = that position — and the exact
//! check of the second: the reply says `recovered:true`, and the pushes carry
//! exactly the offsets `since+1 ..= since+N`, each once and in order, each with
//! a distinct stamp. The subscriber is *live* once it has the reply and offset
//! `since+N`. It also turns every subscriber's figures into the report's
//! `recovery` object. The coordinator (`run`) drives the phases; the receive
//! path (`subscriber`) feeds replies and pushes in here.

use serde::Serialize;

use crate::payload::Stamp;
use crate::stats::{self, Arrival, LatencySummary, SeqTracker, Tally};
use crate::v1::{Offsets, Reply};

/// Which of its two connections a recovery subscriber is on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// First connection: subscribe, record the reply's position.
    Subscribe,
    /// Second connection: subscribe with `since`, receive the replay.
    Recover,
}

/// One subscriber's recovery figures (cloned to the coordinator at the end).
#[derive(Debug, Clone, Default)]
pub struct Slot {
    /// Global subscriber index.
    pub index: usize,
    /// Position recorded on the first connection: the subscribe reply's
    /// offset (raised by any push that followed it) and epoch.
    pub since: Option<(u64, String)>,
    /// Why the first subscribe failed (error reply, odd reply, disconnect).
    pub subscribe_failure: Option<String>,
    subscribe_settled: bool,
    /// The second connection was attempted.
    pub reconnected: bool,
    /// When its connect attempt began, ns since the run epoch.
    pub start_ns: u64,
    /// Messages published while away: the replay must be `since+1 ..= since+missed`.
    pub missed: u64,
    /// When the second subscribe's reply arrived.
    pub reply_ns: Option<u64>,
    /// Its offset (the topic's position at that moment).
    pub reply_offset: Option<u64>,
    /// Its `recovered` flag.
    pub recovered: Option<bool>,
    /// An error reply (or a reply without `recovered`) to the second subscribe.
    pub reply_error: Option<String>,
    /// Next offset expected.
    pub next: u64,
    /// Pushes within `since+1 ..= since+missed` that advanced the offset.
    pub replayed: u64,
    /// Offsets skipped within the range.
    pub gaps: u64,
    /// Pushes at or below an offset already received (or at or below `since`).
    pub dups: u64,
    /// Pushes above `since+missed`.
    pub extra: u64,
    /// First arrivals by stamp (publisher, sequence).
    pub unique: u64,
    /// Repeated (or unclassifiable) stamps.
    pub seq_dups: u64,
    /// Pushes without a measurement stamp.
    pub foreign: u64,
    /// When it became live (reply + offset `since+missed`).
    pub done_ns: Option<u64>,
    settled: bool,
}

impl Slot {
    /// A slot for subscriber `index`.
    pub fn new(index: usize) -> Self {
        Self {
            index,
            ..Self::default()
        }
    }

    /// Marks the phase's outcome as known; `true` the first time (the caller
    /// counts it, so the coordinator knows when to stop waiting).
    pub fn settle(&mut self, phase: Phase) -> bool {
        let flag = match phase {
            Phase::Subscribe => &mut self.subscribe_settled,
            Phase::Recover => &mut self.settled,
        };
        !std::mem::replace(flag, true)
    }

    /// Prepares the second connection, started at `start_ns`; `None` (and
    /// nothing to do) when the first never got a position.
    pub fn begin_recover(&mut self, start_ns: u64, missed: u64) -> Option<(u64, String)> {
        let since = self.since.clone()?;
        self.reconnected = true;
        self.start_ns = start_ns;
        self.missed = missed;
        self.next = since.0 + 1;
        Some(since)
    }

    fn end(&self) -> u64 {
        self.since.as_ref().map_or(0, |s| s.0) + self.missed
    }

    /// Whether the second connection has the reply and every missed offset.
    fn check_done(&mut self, now_ns: u64) -> bool {
        if self.done_ns.is_none() && self.reply_ns.is_some() && self.next > self.end() {
            self.done_ns = Some(now_ns);
            return self.settle(Phase::Recover);
        }
        false
    }

    /// A reply on the connection of `phase`; `true` when it settles the slot.
    /// On the first connection a position also starts `offsets` for `topic`.
    pub fn on_reply(
        &mut self,
        phase: Phase,
        reply: Reply,
        offsets: &mut Offsets,
        topic: &[u8],
        now_ns: u64,
    ) -> bool {
        let failure = reply.error.as_ref().map(|e| format!("error {}", e.code));
        match phase {
            Phase::Subscribe => {
                match reply.result.and_then(|r| r.offset.zip(r.epoch)) {
                    Some((offset, epoch)) if failure.is_none() => {
                        offsets.set(topic, offset);
                        self.since = Some((offset, epoch));
                    }
                    _ => {
                        self.subscribe_failure =
                            Some(failure.unwrap_or_else(|| "reply without offset/epoch".into()));
                    }
                }
                self.settle(Phase::Subscribe)
            }
            Phase::Recover => {
                if self.reply_ns.is_some() {
                    // One command, one reply: a second one is not ours.
                    self.foreign += 1;
                    return false;
                }
                self.reply_ns = Some(now_ns);
                let result = reply.result.filter(|_| failure.is_none());
                self.reply_offset = result.as_ref().and_then(|r| r.offset);
                self.recovered = result.as_ref().and_then(|r| r.recovered);
                match (failure, self.recovered) {
                    (Some(f), _) => self.reply_error = Some(f),
                    (None, None) => self.reply_error = Some("reply without recovered".into()),
                    (None, Some(_)) => {}
                }
                if self.recovered != Some(true) {
                    // Nothing will be replayed: the outcome is known.
                    return self.settle(Phase::Recover);
                }
                self.check_done(now_ns)
            }
        }
    }

    /// A push on the connection of `phase`; `true` when it settles the slot.
    pub fn on_push(
        &mut self,
        phase: Phase,
        offset: u64,
        stamp: Option<Stamp>,
        seqs: &mut [SeqTracker],
        now_ns: u64,
    ) -> bool {
        if phase == Phase::Subscribe {
            // Only before everyone disconnects (nothing is published then), but
            // a position must cover what was seen.
            if let Some((since, _)) = self.since.as_mut() {
                *since = (*since).max(offset);
            }
            return false;
        }
        if offset > self.end() {
            self.extra += 1;
        } else if offset < self.next {
            self.dups += 1;
        } else {
            self.gaps += offset - self.next;
            self.next = offset + 1;
            self.replayed += 1;
        }
        match stamp.and_then(|s| seqs.get_mut(usize::from(s.publisher)).map(|t| (t, s.seq))) {
            Some((tracker, seq)) => match tracker.observe(seq) {
                Arrival::New { .. } => self.unique += 1,
                Arrival::Duplicate | Arrival::Stale => self.seq_dups += 1,
            },
            None => self.foreign += 1,
        }
        self.check_done(now_ns)
    }

    /// Got exactly `since+1 ..= since+missed`, each once, in order, with
    /// `recovered:true`, distinct stamps and nothing else.
    pub fn exact(&self) -> bool {
        self.recovered == Some(true)
            && self.reply_error.is_none()
            && self.done_ns.is_some()
            && self.replayed == self.missed
            && self.unique == self.missed
            && self.gaps + self.dups + self.extra + self.seq_dups + self.foreign == 0
    }
}

/// The `recovery` object of the report.
#[derive(Debug, Clone, Serialize)]
pub struct RecoveryReport {
    /// The topic.
    pub topic: String,
    /// `--recover N`: messages to publish while the subscribers are away.
    pub messages: u64,
    /// Publish rate while away, msgs/s.
    pub rate: u64,
    /// Messages sent while away.
    pub published: u64,
    /// Of those, accepted (WebSocket: sent; HTTP: 2xx): what every subscriber
    /// must recover.
    pub missed: u64,
    /// Subscribers requested.
    pub subscribers: usize,
    /// Subscribers whose first subscribe was answered with a position.
    pub subscribed: u64,
    /// Why the others were not (error replies, odd replies, no reply).
    pub subscribe_failures: Tally<String>,
    /// Subscribers still connected when publishing began (should be 0).
    pub not_disconnected: u64,
    /// Second connections established.
    pub reconnected: u64,
    /// Second connections that failed, by reason.
    pub reconnect_failures: Tally<String>,
    /// From the first reconnect attempt until every attempt finished, s.
    pub reconnect_s: f64,
    /// Replies `recovered:true`.
    pub recovered_true: u64,
    /// Replies `recovered:false` (the server could not replay: history too
    /// short, `--max-recovery` too low, epoch changed).
    pub recovered_false: u64,
    /// Error replies (or replies without `recovered`), by code.
    pub reply_errors: Tally<String>,
    /// Reconnected subscribers that got no reply.
    pub no_reply: u64,
    /// Replies whose offset is not `since + missed` (someone else published, or
    /// a publish was still in flight).
    pub reply_offset_mismatch: u64,
    /// Subscribers that became live: reply and offset `since+missed` received.
    pub live: u64,
    /// Subscribers that got exactly `since+1 ..= since+missed`, each once, in
    /// order, with `recovered:true` (should equal `subscribers`).
    pub exact: u64,
    /// Pushes within the range, over all subscribers (should be `missed × subscribers`).
    pub replayed: u64,
    /// Offsets skipped, over all subscribers.
    pub offset_gaps: u64,
    /// Pushes repeating (or going back to) an offset, over all subscribers.
    pub offset_dups: u64,
    /// Pushes beyond `since+missed`, over all subscribers.
    pub extra: u64,
    /// First arrivals by stamp (publisher, sequence), over all subscribers.
    pub unique: u64,
    /// Repeated stamps, over all subscribers.
    pub duplicates: u64,
    /// Pushes without a measurement stamp.
    pub foreign: u64,
    /// From the first reconnect attempt until the last subscriber was live, ms
    /// (`null` when some never became live).
    pub all_live_ms: Option<f64>,
    /// Per subscriber: from the first reconnect attempt until it was live, µs.
    pub time_to_live: LatencySummary,
    /// Per subscriber: from its own reconnect attempt until it was live
    /// (connect, handshake, subscribe, replay), µs.
    pub own_time_to_live: LatencySummary,
    /// Every subscriber recovered exactly.
    pub pass: bool,
    /// Why not.
    pub failures: Vec<String>,
}

/// What the coordinator knows besides the slots.
#[derive(Debug, Clone, Default)]
pub struct RunFacts {
    /// The topic.
    pub topic: String,
    /// `--recover N`.
    pub messages: u64,
    /// Publish rate while away.
    pub rate: u64,
    /// Messages sent while away.
    pub published: u64,
    /// Of those, accepted.
    pub missed: u64,
    /// Subscribers requested.
    pub subscribers: usize,
    /// Subscribers not disconnected in time before publishing.
    pub not_disconnected: u64,
    /// Reconnects established.
    pub reconnected: u64,
    /// Reconnect failures by reason.
    pub reconnect_failures: Tally<String>,
    /// Time to finish every reconnect attempt, s.
    pub reconnect_s: f64,
}

/// Sums the subscribers' figures into the report and decides pass/fail.
pub fn summarize(facts: RunFacts, slots: &[Slot]) -> RecoveryReport {
    let count = |f: &dyn Fn(&Slot) -> bool| slots.iter().filter(|s| f(s)).count() as u64;
    let sum = |f: &dyn Fn(&Slot) -> u64| slots.iter().map(f).sum::<u64>();
    let mut subscribe_failures = Tally::default();
    let mut reply_errors = Tally::default();
    for s in slots {
        if s.since.is_none() {
            subscribe_failures.add(
                s.subscribe_failure
                    .clone()
                    .unwrap_or_else(|| "no reply".into()),
            );
        }
        if let Some(e) = &s.reply_error {
            reply_errors.add(e.clone());
        }
    }
    // Subscribers never connected the first time have no slot at all.
    let missing = facts.subscribers.saturating_sub(slots.len());
    if missing > 0 {
        for _ in 0..missing {
            subscribe_failures.add("not connected".to_string());
        }
    }
    let first_start = slots
        .iter()
        .filter(|s| s.reconnected)
        .map(|s| s.start_ns)
        .min()
        .unwrap_or(0);
    let mut since_first = stats::new_histogram();
    let mut since_own = stats::new_histogram();
    for s in slots {
        if let Some(done) = s.done_ns {
            since_first.saturating_record(done.saturating_sub(first_start).max(1));
            since_own.saturating_record(done.saturating_sub(s.start_ns).max(1));
        }
    }
    let reconnected_slots = count(&|s| s.reconnected);
    let live = count(&|s| s.done_ns.is_some());
    let all_live_ms = (live == facts.subscribers as u64 && live > 0).then(|| {
        let last = slots.iter().filter_map(|s| s.done_ns).max().unwrap_or(0);
        last.saturating_sub(first_start) as f64 / 1e6
    });
    let mut r = RecoveryReport {
        topic: facts.topic,
        messages: facts.messages,
        rate: facts.rate,
        published: facts.published,
        missed: facts.missed,
        subscribers: facts.subscribers,
        subscribed: count(&|s| s.since.is_some()),
        subscribe_failures,
        not_disconnected: facts.not_disconnected,
        reconnected: facts.reconnected,
        reconnect_failures: facts.reconnect_failures,
        reconnect_s: facts.reconnect_s,
        recovered_true: count(&|s| s.recovered == Some(true)),
        recovered_false: count(&|s| s.recovered == Some(false)),
        reply_errors,
        no_reply: facts
            .reconnected
            .saturating_sub(count(&|s| s.reply_ns.is_some())),
        reply_offset_mismatch: count(&|s| {
            s.reply_offset
                .is_some_and(|o| s.since.as_ref().map(|x| x.0 + s.missed) != Some(o))
        }),
        live,
        exact: count(&Slot::exact),
        replayed: sum(&|s| s.replayed),
        offset_gaps: sum(&|s| s.gaps),
        offset_dups: sum(&|s| s.dups),
        extra: sum(&|s| s.extra),
        unique: sum(&|s| s.unique),
        duplicates: sum(&|s| s.seq_dups),
        foreign: sum(&|s| s.foreign),
        all_live_ms,
        time_to_live: LatencySummary::from_histogram(&since_first),
        own_time_to_live: LatencySummary::from_histogram(&since_own),
        pass: false,
        failures: Vec::new(),
    };
    let n = r.subscribers as u64;
    let mut f = Vec::new();
    if r.missed < r.messages {
        f.push(format!(
            "only {} of {} messages were accepted while the subscribers were away",
            r.missed, r.messages
        ));
    }
    if r.subscribed < n {
        f.push(format!(
            "{} of {n} subscribers got no position on the first subscribe",
            n - r.subscribed
        ));
    }
    if r.not_disconnected > 0 {
        f.push(format!(
            "{} subscribers were still connected when publishing began",
            r.not_disconnected
        ));
    }
    if r.reconnected < n || reconnected_slots < n {
        f.push(format!("{} of {n} subscribers reconnected", r.reconnected));
    }
    if r.recovered_false > 0 {
        f.push(format!(
            "{} replies recovered:false (server history/--max-recovery below {}?)",
            r.recovered_false, r.missed
        ));
    }
    if r.reply_errors.total() > 0 || r.no_reply > 0 {
        f.push(format!(
            "{} error replies, {} subscribers without a reply",
            r.reply_errors.total(),
            r.no_reply
        ));
    }
    if r.reply_offset_mismatch > 0 {
        f.push(format!(
            "{} replies at an offset other than since + {}",
            r.reply_offset_mismatch, r.missed
        ));
    }
    if r.live < n {
        f.push(format!(
            "{} of {n} subscribers never had all {} missed messages",
            n - r.live,
            r.missed
        ));
    }
    if r.offset_gaps + r.offset_dups + r.extra > 0 {
        f.push(format!(
            "offsets: {} skipped, {} repeated or backwards, {} beyond the range",
            r.offset_gaps, r.offset_dups, r.extra
        ));
    }
    if r.duplicates + r.foreign > 0 {
        f.push(format!(
            "{} repeated stamps, {} pushes without a stamp",
            r.duplicates, r.foreign
        ));
    }
    if r.exact < n {
        f.push(format!("{} of {n} subscribers recovered exactly", r.exact));
    }
    r.pass = f.is_empty();
    r.failures = f;
    r
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::v1::{ReplyError, ReplyResult};

    fn result(offset: u64, epoch: &str, recovered: Option<bool>) -> Reply {
        Reply {
            id: Some(1),
            result: Some(ReplyResult {
                topic: Some("t".into()),
                offset: Some(offset),
                epoch: Some(epoch.into()),
                recovered,
            }),
            error: None,
        }
    }

    fn stamp(seq: u64) -> Option<Stamp> {
        Some(Stamp {
            step: 0,
            publisher: 0,
            seq,
            sent_ns: 0,
        })
    }

    /// A slot that subscribed at offset 41 and reconnected for `missed` messages.
    fn recovering(missed: u64) -> (Slot, Offsets) {
        let mut s = Slot::new(7);
        let mut o = Offsets::default();
        assert!(s.on_reply(Phase::Subscribe, result(41, "e", None), &mut o, b"t", 1));
        assert!(!s.settle(Phase::Subscribe), "settles once");
        assert_eq!(s.begin_recover(100, missed), Some((41, "e".to_string())));
        (s, o)
    }

    #[test]
    fn exact_replay_is_live_at_the_last_offset() {
        let (mut s, mut o) = recovering(3);
        let mut seqs = vec![SeqTracker::default()];
        assert!(!s.on_reply(
            Phase::Recover,
            result(44, "e", Some(true)),
            &mut o,
            b"t",
            150
        ));
        assert!(!s.on_push(Phase::Recover, 42, stamp(0), &mut seqs, 160));
        assert!(!s.on_push(Phase::Recover, 43, stamp(1), &mut seqs, 170));
        assert!(s.on_push(Phase::Recover, 44, stamp(2), &mut seqs, 180));
        assert_eq!(s.done_ns, Some(180));
        assert!(s.exact());
        let r = summarize(
            RunFacts {
                topic: "t".into(),
                messages: 3,
                missed: 3,
                subscribers: 1,
                reconnected: 1,
                ..RunFacts::default()
            },
            &[s],
        );
        assert!(r.pass, "{:?}", r.failures);
        assert_eq!((r.exact, r.live, r.replayed, r.unique), (1, 1, 3, 3));
        assert_eq!(r.all_live_ms, Some(80e-6));
        assert_eq!(r.time_to_live.count, 1);
        assert_eq!(r.reply_offset_mismatch, 0);
    }

    #[test]
    fn gaps_duplicates_and_extras_are_not_exact() {
        let (mut s, mut o) = recovering(3);
        let mut seqs = vec![SeqTracker::default()];
        s.on_reply(
            Phase::Recover,
            result(44, "e", Some(true)),
            &mut o,
            b"t",
            150,
        );
        s.on_push(Phase::Recover, 41, stamp(9), &mut seqs, 151); // at since: a repeat
        s.on_push(Phase::Recover, 43, stamp(1), &mut seqs, 152); // 42 skipped
        s.on_push(Phase::Recover, 43, stamp(1), &mut seqs, 153); // repeated
        assert!(s.on_push(Phase::Recover, 44, stamp(2), &mut seqs, 154));
        s.on_push(Phase::Recover, 45, None, &mut seqs, 155); // beyond, no stamp
        assert_eq!((s.gaps, s.dups, s.extra), (1, 2, 1));
        assert_eq!((s.unique, s.seq_dups, s.foreign), (3, 1, 1));
        assert!(!s.exact());
        let r = summarize(
            RunFacts {
                messages: 3,
                missed: 3,
                subscribers: 2,
                reconnected: 1,
                ..RunFacts::default()
            },
            &[s],
        );
        assert!(!r.pass);
        assert_eq!(r.subscribe_failures.0.get("not connected"), Some(&1));
        assert_eq!(r.all_live_ms, None, "one subscriber never connected");
    }

    #[test]
    fn recovered_false_and_errors_settle_without_replay() {
        let (mut s, mut o) = recovering(3);
        assert!(s.on_reply(
            Phase::Recover,
            result(44, "e", Some(false)),
            &mut o,
            b"t",
            150
        ));
        assert_eq!(s.recovered, Some(false));
        assert!(s.done_ns.is_none() && !s.exact());
        let (mut e, mut o) = recovering(3);
        let err = Reply {
            id: Some(2),
            result: None,
            error: Some(ReplyError {
                code: 102,
                message: "too many topics".into(),
            }),
        };
        assert!(e.on_reply(Phase::Recover, err, &mut o, b"t", 150));
        assert_eq!(e.reply_error.as_deref(), Some("error 102"));
        let r = summarize(
            RunFacts {
                messages: 3,
                missed: 3,
                subscribers: 2,
                reconnected: 2,
                ..RunFacts::default()
            },
            &[s, e],
        );
        assert_eq!((r.recovered_false, r.reply_errors.total()), (1, 1));
        assert!(!r.pass);
        // A first subscribe that fails leaves nothing to recover from.
        let mut f = Slot::new(1);
        let mut o = Offsets::default();
        let err = Reply {
            id: Some(1),
            result: None,
            error: Some(ReplyError {
                code: 104,
                message: String::new(),
            }),
        };
        assert!(f.on_reply(Phase::Subscribe, err, &mut o, b"t", 1));
        assert_eq!(f.begin_recover(5, 3), None);
        assert!(!f.reconnected);
    }

    #[test]
    fn first_connection_pushes_raise_the_position() {
        let mut s = Slot::new(0);
        let mut o = Offsets::default();
        s.on_reply(Phase::Subscribe, result(10, "e", None), &mut o, b"t", 1);
        assert_eq!(o.observe(b"t", 11), crate::v1::OffsetCheck::Next);
        s.on_push(Phase::Subscribe, 11, stamp(0), &mut [], 2);
        assert_eq!(s.since, Some((11, "e".to_string())));
    }
}
