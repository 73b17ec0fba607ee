//! Presence across the cluster: how many subscribers a topic has on the *other* nodes.
//!
//! Every node publishes, once per [`PERIOD`], its local subscriber counts on
//! `<prefix>.presence` — one small JSON message per node, whatever the number of
//! clients — and keeps the latest report of every other node. A report older than
//! [`EXPIRY`] counts for nothing: a node that died stops counting within a few seconds,
//! and one that shuts down says so at once with an empty report.
//!
//! Answers are therefore a local read (no broker round trip per `presence` command or
//! `GET /topics/{topic}`), and up to about one period old for other nodes' clients.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use tracing::debug;

use super::backplane::Shared;

/// How often a node reports its counts.
pub(crate) const PERIOD: Duration = Duration::from_secs(1);

/// A report older than this is ignored (three missed periods and a half).
pub(crate) const EXPIRY: Duration = Duration::from_millis(3_500);

/// One node's report.
#[derive(Debug, Serialize, Deserialize)]
struct Report {
    node: String,
    /// Topic → local subscribers, for topics with any.
    topics: HashMap<String, usize>,
}

/// Topic → subscribers, as one node reported them.
type Counts = HashMap<String, usize>;

/// The other nodes' latest reports.
#[derive(Default)]
pub(crate) struct Presence {
    /// Node id → when its last report came, and the report.
    nodes: Mutex<HashMap<String, (Instant, Counts)>>,
}

impl Presence {
    /// Subscribers of `topic` on the other nodes, by their reports still fresh at `now`.
    pub(crate) fn remote(&self, topic: &str, now: Instant) -> usize {
        let nodes = self.nodes.lock().unwrap_or_else(PoisonError::into_inner);
        nodes
            .values()
            .filter(|(at, _)| now.saturating_duration_since(*at) <= EXPIRY)
            .filter_map(|(_, topics)| topics.get(topic))
            .sum()
    }

    /// Keeps `node`'s report received at `now` (replacing its last one).
    fn record(&self, node: String, topics: Counts, now: Instant) {
        let mut nodes = self.nodes.lock().unwrap_or_else(PoisonError::into_inner);
        nodes.retain(|_, (at, _)| now.saturating_duration_since(*at) <= EXPIRY);
        if topics.is_empty() {
            nodes.remove(&node);
        } else {
            nodes.insert(node, (now, topics));
        }
    }
}

/// Reports this node's counts every period and takes the other nodes' reports, until
/// the backplane's runtime ends. On `stop`, sends an empty report (this node leaves).
pub(crate) async fn run(
    shared: Arc<Shared>,
    client: async_nats::Client,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let subject = shared.subjects.presence();
    let mut reports = match client.subscribe(subject.clone()).await {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = %e, "presence: cannot subscribe");
            return;
        }
    };
    let mut tick = tokio::time::interval(PERIOD);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {
                let topics = shared.deliver.local_subscribers().into_iter().collect();
                publish(&shared, &client, &subject, topics).await;
            }
            report = reports.next() => {
                let Some(message) = report else { return };
                match serde_json::from_slice::<Report>(&message.payload) {
                    Ok(r) if r.node != shared.node_id => {
                        shared.presence.record(r.node, r.topics, Instant::now());
                    }
                    Ok(_) => {}
                    Err(e) => debug!(error = %e, "presence: unreadable report"),
                }
            }
            _ = stop.changed() => {
                publish(&shared, &client, &subject, HashMap::new()).await;
                let _ = client.flush().await;
                return;
            }
        }
    }
}

async fn publish(
    shared: &Shared,
    client: &async_nats::Client,
    subject: &str,
    topics: HashMap<String, usize>,
) {
    let report = Report {
        node: shared.node_id.clone(),
        topics,
    };
    match serde_json::to_vec(&report) {
        Ok(body) => {
            if let Err(e) = client.publish(subject.to_owned(), body.into()).await {
                debug!(error = %e, "presence: report not sent");
            }
        }
        Err(e) => debug!(error = %e, "presence: report not encoded"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counts(v: &[(&str, usize)]) -> HashMap<String, usize> {
        v.iter().map(|(t, n)| (t.to_string(), *n)).collect()
    }

    #[test]
    fn sums_fresh_reports_of_other_nodes() {
        let p = Presence::default();
        let t0 = Instant::now();
        p.record("a".into(), counts(&[("x", 2), ("y", 1)]), t0);
        p.record("b".into(), counts(&[("x", 3)]), t0);
        assert_eq!(p.remote("x", t0), 5);
        assert_eq!(p.remote("y", t0), 1);
        assert_eq!(p.remote("z", t0), 0);
        // A newer report replaces the node's last one.
        p.record("a".into(), counts(&[("x", 1)]), t0);
        assert_eq!(p.remote("x", t0), 4);
    }

    #[test]
    fn stale_and_empty_reports_count_for_nothing() {
        let p = Presence::default();
        let t0 = Instant::now();
        p.record("a".into(), counts(&[("x", 2)]), t0);
        p.record("b".into(), counts(&[("x", 3)]), t0 + Duration::from_secs(3));
        assert_eq!(p.remote("x", t0 + EXPIRY), 5);
        assert_eq!(p.remote("x", t0 + EXPIRY + Duration::from_millis(1)), 3);
        // A node that leaves says so.
        p.record("b".into(), HashMap::new(), t0 + Duration::from_secs(4));
        assert_eq!(p.remote("x", t0 + Duration::from_secs(4)), 0);
    }
}
