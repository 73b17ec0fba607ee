//! Which topics the node subscribes to on the broker: the interest bookkeeping, free of I/O
//! and clocks so that it can be tested with explicit time.
//!
//! Shards report per topic whether they have local subscribers (`on`) or no longer have any
//! (`off`). A topic is *interesting* while at least one shard has it on. The rules, as
//! Centrifugo applies them:
//!
//! - **Subscribe at once** when a topic becomes interesting and has no live subscription.
//! - **Unsubscribe late**: only after the topic stayed uninteresting for `linger`, so that a
//!   client that reconnects, or churn on a busy topic, does not make the SUB/UNSUB flap.
//! - **Coalesce**: changes are applied in batches and [`Interest::poll`] reports what to do
//!   afterwards, so 10,000 connects to one topic, or an on/off/on within one batch, cost at
//!   most one SUB (and an on/off within one batch for an unsubscribed topic costs nothing).
//!
//! Reports are idempotent: a shard's set of topics is a set, so a repeated `on` or a
//! stray `off` changes nothing.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(Debug)]
struct Topic {
    /// The map's key, shared with the queues.
    name: Arc<str>,
    /// Shards with local subscribers, without duplicates (a handful at most).
    shards: Vec<usize>,
    /// A subscription is live on the broker (or was requested from the client).
    subscribed: bool,
    /// The topic is queued in `to_subscribe`.
    queued: bool,
    /// Since when the topic is subscribed without interest.
    idle_since: Option<Instant>,
}

impl Topic {
    fn new(name: Arc<str>) -> Self {
        Topic {
            name,
            shards: Vec::new(),
            subscribed: false,
            queued: false,
            idle_since: None,
        }
    }
}

/// What the driver must do after a batch of changes.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Actions {
    /// Topics to subscribe to now.
    pub(crate) subscribe: Vec<Arc<str>>,
    /// Topics to unsubscribe from now.
    pub(crate) unsubscribe: Vec<Arc<str>>,
}

#[cfg(test)]
impl Actions {
    fn is_empty(&self) -> bool {
        self.subscribe.is_empty() && self.unsubscribe.is_empty()
    }
}

/// The interest bookkeeping of one node.
#[derive(Debug)]
pub(crate) struct Interest {
    linger: Duration,
    topics: HashMap<Arc<str>, Topic>,
    /// Topics that became interesting without a subscription, in arrival order.
    to_subscribe: Vec<Arc<str>>,
    /// Topics that lost their last shard while subscribed, oldest first. `linger` is the
    /// same for all, so deadlines are in order too. Entries go stale when a topic regains
    /// interest; they are skipped when they come due (lazy deletion, no search).
    lingering: VecDeque<(Instant, Arc<str>)>,
    subscribed: usize,
}

impl Interest {
    pub(crate) fn new(linger: Duration) -> Self {
        Interest {
            linger,
            topics: HashMap::new(),
            to_subscribe: Vec::new(),
            lingering: VecDeque::new(),
            subscribed: 0,
        }
    }

    /// Records that `shard` has (`on`) or no longer has local subscribers of `topic`.
    pub(crate) fn apply(&mut self, shard: usize, topic: &str, on: bool, now: Instant) {
        if on {
            if !self.topics.contains_key(topic) {
                let name: Arc<str> = Arc::from(topic);
                self.topics.insert(name.clone(), Topic::new(name));
            }
            let Some(t) = self.topics.get_mut(topic) else {
                return;
            };
            if !t.shards.contains(&shard) {
                t.shards.push(shard);
            }
            t.idle_since = None;
            if !t.subscribed && !t.queued {
                t.queued = true;
                self.to_subscribe.push(t.name.clone());
            }
        } else if let Some(t) = self.topics.get_mut(topic) {
            t.shards.retain(|&s| s != shard);
            if !t.shards.is_empty() || t.idle_since.is_some() {
                return;
            }
            if t.subscribed {
                t.idle_since = Some(now);
                self.lingering.push_back((now, t.name.clone()));
            } else if !t.queued {
                self.topics.remove(topic);
            }
            // Queued but not yet subscribed: `poll` drops it without a SUB.
        }
    }

    /// What to do at `now`: subscribe to topics that gained interest, unsubscribe from
    /// topics idle for `linger` or longer. The bookkeeping assumes the driver does it.
    pub(crate) fn poll(&mut self, now: Instant) -> Actions {
        let mut actions = Actions::default();
        for key in self.to_subscribe.drain(..) {
            let Some(t) = self.topics.get_mut(&key) else {
                continue;
            };
            t.queued = false;
            if t.shards.is_empty() {
                // Interest came and went within one batch: nothing to tell the broker.
                if !t.subscribed {
                    self.topics.remove(&key);
                }
                continue;
            }
            if !t.subscribed {
                t.subscribed = true;
                self.subscribed += 1;
                actions.subscribe.push(key);
            }
        }
        while let Some((since, _)) = self.lingering.front() {
            if *since + self.linger > now {
                break;
            }
            let Some((since, key)) = self.lingering.pop_front() else {
                break;
            };
            let due = self
                .topics
                .get(&key)
                .is_some_and(|t| t.subscribed && t.idle_since == Some(since));
            if due {
                self.topics.remove(&key);
                self.subscribed -= 1;
                actions.unsubscribe.push(key);
            }
        }
        actions
    }

    /// Forgets a subscription the driver could not make, so that the topic is tried again
    /// when interest comes back.
    pub(crate) fn subscribe_failed(&mut self, topic: &str) {
        if let Some(t) = self.topics.get_mut(topic)
            && t.subscribed
        {
            t.subscribed = false;
            self.subscribed -= 1;
            if t.shards.is_empty() && !t.queued {
                self.topics.remove(topic);
            }
        }
    }

    /// When [`Interest::poll`] next has something to do without new changes: the earliest
    /// linger deadline (possibly of a stale entry, which costs one empty poll).
    pub(crate) fn next_deadline(&self) -> Option<Instant> {
        self.lingering
            .front()
            .map(|(since, _)| *since + self.linger)
    }

    /// Topics with a live subscription.
    pub(crate) fn subscribed(&self) -> usize {
        self.subscribed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LINGER: Duration = Duration::from_secs(1);

    fn topics(v: &[&str]) -> Vec<Arc<str>> {
        v.iter().map(|s| Arc::from(*s)).collect()
    }

    fn subs(v: &[&str]) -> Actions {
        Actions {
            subscribe: topics(v),
            unsubscribe: vec![],
        }
    }

    fn unsubs(v: &[&str]) -> Actions {
        Actions {
            subscribe: vec![],
            unsubscribe: topics(v),
        }
    }

    #[test]
    fn first_interest_subscribes_at_once() {
        let t0 = Instant::now();
        let mut i = Interest::new(LINGER);
        i.apply(0, "a", true, t0);
        assert_eq!(i.poll(t0), subs(&["a"]));
        assert_eq!(i.subscribed(), 1);
        assert!(i.poll(t0).is_empty());
    }

    #[test]
    fn a_burst_costs_one_subscribe() {
        let t0 = Instant::now();
        let mut i = Interest::new(LINGER);
        for n in 0..10_000 {
            i.apply(n % 4, "hot", true, t0);
        }
        assert_eq!(i.poll(t0), subs(&["hot"]));
        // More shards joining later: still one subscription.
        i.apply(7, "hot", true, t0);
        assert!(i.poll(t0).is_empty());
    }

    #[test]
    fn unsubscribe_waits_for_the_linger() {
        let t0 = Instant::now();
        let mut i = Interest::new(LINGER);
        i.apply(0, "a", true, t0);
        i.apply(1, "a", true, t0);
        i.poll(t0);
        i.apply(0, "a", false, t0);
        assert!(i.poll(t0 + 2 * LINGER).is_empty(), "shard 1 still has it");
        let t1 = t0 + Duration::from_millis(100);
        i.apply(1, "a", false, t1);
        assert_eq!(i.next_deadline(), Some(t1 + LINGER));
        assert!(i.poll(t1 + LINGER - Duration::from_millis(1)).is_empty());
        assert_eq!(i.poll(t1 + LINGER), unsubs(&["a"]));
        assert_eq!(i.subscribed(), 0);
        assert!(i.poll(t1 + 5 * LINGER).is_empty());
    }

    #[test]
    fn interest_back_within_the_linger_keeps_the_subscription() {
        let t0 = Instant::now();
        let mut i = Interest::new(LINGER);
        i.apply(0, "a", true, t0);
        i.poll(t0);
        // Churn: off/on many times, never idle for a whole linger.
        for k in 1..50u32 {
            let t = t0 + Duration::from_millis(u64::from(k) * 100);
            i.apply(0, "a", false, t);
            assert!(i.poll(t).is_empty());
            i.apply(0, "a", true, t + Duration::from_millis(50));
            assert!(i.poll(t + Duration::from_millis(50)).is_empty());
        }
        assert_eq!(i.subscribed(), 1);
        // Stale linger entries come due and are skipped.
        assert!(i.poll(t0 + 10 * LINGER).is_empty());
        assert_eq!(i.next_deadline(), None);
    }

    #[test]
    fn later_off_restarts_the_linger() {
        let t0 = Instant::now();
        let mut i = Interest::new(LINGER);
        i.apply(0, "a", true, t0);
        i.poll(t0);
        i.apply(0, "a", false, t0);
        i.apply(0, "a", true, t0 + Duration::from_millis(900));
        let t1 = t0 + Duration::from_millis(950);
        i.apply(0, "a", false, t1);
        assert!(i.poll(t0 + LINGER).is_empty(), "the first off is stale");
        assert_eq!(i.poll(t1 + LINGER), unsubs(&["a"]));
    }

    #[test]
    fn on_off_within_one_batch_sends_nothing() {
        let t0 = Instant::now();
        let mut i = Interest::new(LINGER);
        i.apply(0, "a", true, t0);
        i.apply(0, "a", false, t0);
        assert!(i.poll(t0).is_empty());
        assert!(i.poll(t0 + 2 * LINGER).is_empty());
        assert_eq!(i.subscribed(), 0);
        // And the topic can come back normally.
        i.apply(0, "a", true, t0);
        assert_eq!(i.poll(t0), subs(&["a"]));
    }

    #[test]
    fn resubscribe_after_unsubscribe() {
        let t0 = Instant::now();
        let mut i = Interest::new(LINGER);
        i.apply(0, "a", true, t0);
        i.poll(t0);
        i.apply(0, "a", false, t0);
        assert_eq!(i.poll(t0 + LINGER), unsubs(&["a"]));
        i.apply(2, "a", true, t0 + 2 * LINGER);
        assert_eq!(i.poll(t0 + 2 * LINGER), subs(&["a"]));
    }

    #[test]
    fn stray_and_repeated_reports_are_harmless() {
        let t0 = Instant::now();
        let mut i = Interest::new(LINGER);
        i.apply(3, "never", false, t0);
        assert!(i.poll(t0).is_empty());
        i.apply(0, "a", true, t0);
        i.apply(0, "a", true, t0);
        i.poll(t0);
        i.apply(0, "a", false, t0);
        i.apply(0, "a", false, t0 + Duration::from_millis(500));
        // The second off does not push the deadline back.
        assert_eq!(i.poll(t0 + LINGER), unsubs(&["a"]));
    }

    #[test]
    fn many_topics_keep_their_order_and_deadlines() {
        let t0 = Instant::now();
        let mut i = Interest::new(LINGER);
        for (n, t) in ["a", "b", "c"].iter().enumerate() {
            i.apply(n, t, true, t0);
        }
        assert_eq!(i.poll(t0), subs(&["a", "b", "c"]));
        i.apply(0, "a", false, t0);
        i.apply(2, "c", false, t0 + Duration::from_millis(300));
        assert_eq!(i.poll(t0 + LINGER), unsubs(&["a"]));
        assert_eq!(i.next_deadline(), Some(t0 + Duration::from_millis(1300)));
        assert_eq!(i.poll(t0 + 2 * LINGER), unsubs(&["c"]));
        assert_eq!(i.subscribed(), 1);
    }

    #[test]
    fn failed_subscribe_is_retried_on_new_interest() {
        let t0 = Instant::now();
        let mut i = Interest::new(LINGER);
        i.apply(0, "a", true, t0);
        i.poll(t0);
        i.subscribe_failed("a");
        assert_eq!(i.subscribed(), 0);
        i.apply(0, "a", false, t0);
        assert!(i.poll(t0 + LINGER).is_empty());
        i.apply(1, "a", true, t0 + LINGER);
        assert_eq!(i.poll(t0 + LINGER), subs(&["a"]));
    }
}
