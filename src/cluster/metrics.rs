//! The backplane's metrics, kept in a `prometheus-client` registry of its own.
//!
//! Everything is counted once per message or per event, never per recipient: what
//! happens to a message after [`super::Deliver::deliver`] is the engine's to count.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use prometheus_client::encoding::text::encode_registry;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Registry, Unit};

/// Why a message did not make it across the backplane (the `reason` label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum DropReason {
    /// Outgoing: the publish queue was full (the broker or this thread is behind).
    QueueFull = 0,
    /// Outgoing: not connected to the broker (core NATS would lose it anyway).
    Disconnected = 1,
    /// Incoming: the local inbox refused it ([`super::Dropped`]).
    InboxFull = 2,
    /// Incoming: not a hubcast message (headers missing or wrong, text not UTF-8).
    Malformed = 3,
    /// Outgoing: the client refused it (over the broker's `max_payload`, client closed).
    PublishError = 4,
    /// Incoming: the NATS client's subscription buffer overflowed (one per event it
    /// reports; the client's event queue is lossy, so this is a lower bound).
    SlowConsumer = 5,
    /// Outgoing: published after [`super::Backplane::shutdown`].
    Shutdown = 6,
}

impl DropReason {
    pub(crate) const COUNT: usize = 7;
    const ALL: [DropReason; Self::COUNT] = [
        DropReason::QueueFull,
        DropReason::Disconnected,
        DropReason::InboxFull,
        DropReason::Malformed,
        DropReason::PublishError,
        DropReason::SlowConsumer,
        DropReason::Shutdown,
    ];

    pub(crate) fn label(self) -> &'static str {
        match self {
            DropReason::QueueFull => "queue_full",
            DropReason::Disconnected => "disconnected",
            DropReason::InboxFull => "inbox_full",
            DropReason::Malformed => "malformed",
            DropReason::PublishError => "publish_error",
            DropReason::SlowConsumer => "slow_consumer",
            DropReason::Shutdown => "shutdown",
        }
    }
}

type Labels = [(&'static str, &'static str); 1];

/// The backplane's counters (cheap atomic handles) and the registry that renders them.
#[derive(Debug)]
pub(crate) struct Metrics {
    registry: Registry,
    pub(crate) connected: Gauge,
    pub(crate) published: Counter,
    pub(crate) received: Counter,
    dropped: [Counter; DropReason::ALL.len()],
    pub(crate) reconnects: Counter,
    pub(crate) subscribed_topics: Gauge,
    pub(crate) subscribes: Counter,
    pub(crate) unsubscribes: Counter,
    pub(crate) latency: Histogram,
    pub(crate) echo_skipped: Counter,
}

impl Metrics {
    pub(crate) fn new() -> Self {
        let mut registry = Registry::default();
        let connected = Gauge::default();
        registry.register(
            "hubcast_backplane_connected",
            "1 while connected to a NATS server, else 0",
            connected.clone(),
        );
        // prometheus-client appends `_total` to counters.
        let published = Counter::default();
        registry.register(
            "hubcast_backplane_published",
            "Messages handed to the NATS connection",
            published.clone(),
        );
        let received = Counter::default();
        registry.register(
            "hubcast_backplane_received",
            "Messages from other nodes taken from NATS (own echoes excluded); those not delivered are also in dropped",
            received.clone(),
        );
        let family = Family::<Labels, Counter>::default();
        registry.register(
            "hubcast_backplane_dropped",
            "Messages lost on the way through the backplane, by reason",
            family.clone(),
        );
        // Created up front so that every reason shows (as 0) before its first drop.
        let dropped = DropReason::ALL.map(|r| family.get_or_create_owned(&[("reason", r.label())]));
        let reconnects = Counter::default();
        registry.register(
            "hubcast_backplane_reconnects",
            "Connections re-established after a disconnect",
            reconnects.clone(),
        );
        let subscribed_topics = Gauge::default();
        registry.register(
            "hubcast_backplane_subscribed_topics",
            "Topics this node is subscribed to on NATS",
            subscribed_topics.clone(),
        );
        let subscribes = Counter::default();
        registry.register(
            "hubcast_backplane_subscribes",
            "NATS subscriptions made (first local interest in a topic)",
            subscribes.clone(),
        );
        let unsubscribes = Counter::default();
        registry.register(
            "hubcast_backplane_unsubscribes",
            "NATS subscriptions ended (a topic without local interest for the linger time)",
            unsubscribes.clone(),
        );
        // 100 µs … 13 s.
        let latency = Histogram::new(exponential_buckets(0.000_1, 2.0, 18));
        registry.register_with_unit(
            "hubcast_backplane_cross_node_latency",
            "From publish on the sending node to the hand-over to the local shards on this one (includes clock skew between nodes)",
            Unit::Seconds,
            latency.clone(),
        );
        let echo_skipped = Counter::default();
        // A debugging aid (the client asks the server not to echo, so this stays 0
        // unless that breaks); release builds keep the count but do not export it.
        #[cfg(debug_assertions)]
        registry.register(
            "hubcast_backplane_echo_skipped",
            "Own messages that came back and were skipped (debug builds only)",
            echo_skipped.clone(),
        );
        Metrics {
            registry,
            connected,
            published,
            received,
            dropped,
            reconnects,
            subscribed_topics,
            subscribes,
            unsubscribes,
            latency,
            echo_skipped,
        }
    }

    /// Counts one lost message.
    pub(crate) fn drop_one(&self, reason: DropReason) {
        self.dropped[reason as usize].inc();
    }

    pub(crate) fn dropped(&self, reason: DropReason) -> u64 {
        self.dropped[reason as usize].get()
    }

    /// Appends the metrics in the Prometheus text format (0.0.4), like the rest of
    /// hubcast's `/metrics`.
    ///
    /// prometheus-client writes OpenMetrics, whose counter families are named without
    /// `_total` in `# HELP`/`# TYPE` while their samples carry it; in the 0.0.4 format
    /// they must match, so those lines get the suffix, and `# UNIT` lines (OpenMetrics
    /// only) are left out. Runs per scrape, never on the message path.
    pub(crate) fn render(&self, out: &mut String) {
        let mut open_metrics = String::with_capacity(4096);
        // Writing into a String cannot fail.
        let _ = encode_registry(&mut open_metrics, &self.registry);
        let counters: Vec<&str> = open_metrics
            .lines()
            .filter_map(|l| l.strip_prefix("# TYPE ")?.strip_suffix(" counter"))
            .collect();
        for line in open_metrics.lines() {
            if line.starts_with("# UNIT ") {
                continue;
            }
            let meta = ["# HELP ", "# TYPE "]
                .into_iter()
                .find_map(|p| Some((p, line.strip_prefix(p)?)));
            match meta {
                Some((p, rest)) => {
                    let (name, tail) = rest.split_once(' ').unwrap_or((rest, ""));
                    if counters.contains(&name) {
                        let _ = writeln!(out, "{p}{name}_total {tail}");
                    } else {
                        out.push_str(line);
                        out.push('\n');
                    }
                }
                None => {
                    out.push_str(line);
                    out.push('\n');
                }
            }
        }
    }

    pub(crate) fn stats(&self) -> Stats {
        Stats {
            connected: self.connected.get() == 1,
            published: self.published.get(),
            received: self.received.get(),
            dropped: DropReason::ALL
                .iter()
                .map(|&r| (r.label(), self.dropped(r)))
                .collect(),
            reconnects: self.reconnects.get(),
            subscribed_topics: u64::try_from(self.subscribed_topics.get()).unwrap_or(0),
            subscribes: self.subscribes.get(),
            unsubscribes: self.unsubscribes.get(),
            echo_skipped: self.echo_skipped.get(),
        }
    }
}

/// The backplane's counters at one moment (for tests, `/healthz` and logs; `/metrics`
/// uses [`super::Backplane::render_metrics`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stats {
    /// Connected to a NATS server.
    pub connected: bool,
    /// Messages handed to the NATS connection.
    pub published: u64,
    /// Messages from other nodes taken from NATS.
    pub received: u64,
    /// Lost messages by reason: `queue_full`, `disconnected`, `inbox_full`, `malformed`,
    /// `publish_error`, `slow_consumer`, `shutdown`.
    pub dropped: BTreeMap<&'static str, u64>,
    /// Connections re-established after a disconnect.
    pub reconnects: u64,
    /// Topics subscribed to on NATS right now.
    pub subscribed_topics: u64,
    /// NATS subscriptions made.
    pub subscribes: u64,
    /// NATS subscriptions ended.
    pub unsubscribes: u64,
    /// Own messages that came back and were skipped.
    pub echo_skipped: u64,
}

impl Stats {
    /// Lost messages of one reason (0 for an unknown reason).
    pub fn dropped(&self, reason: &str) -> u64 {
        self.dropped.get(reason).copied().unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_every_metric_with_its_final_name() {
        let m = Metrics::new();
        m.published.inc();
        m.drop_one(DropReason::InboxFull);
        m.latency.observe(0.002);
        let mut out = String::new();
        m.render(&mut out);
        for line in [
            "hubcast_backplane_connected 0",
            "hubcast_backplane_published_total 1",
            "hubcast_backplane_received_total 0",
            "hubcast_backplane_dropped_total{reason=\"inbox_full\"} 1",
            "hubcast_backplane_dropped_total{reason=\"queue_full\"} 0",
            "hubcast_backplane_reconnects_total 0",
            "hubcast_backplane_subscribed_topics 0",
            "hubcast_backplane_subscribes_total 0",
            "hubcast_backplane_unsubscribes_total 0",
            "hubcast_backplane_cross_node_latency_seconds_count 1",
        ] {
            assert!(out.lines().any(|l| l == line), "missing {line:?} in\n{out}");
        }
        for line in [
            "# TYPE hubcast_backplane_published_total counter",
            "# HELP hubcast_backplane_published_total Messages handed to the NATS connection.",
            "# TYPE hubcast_backplane_dropped_total counter",
            "# TYPE hubcast_backplane_connected gauge",
            "# TYPE hubcast_backplane_cross_node_latency_seconds histogram",
        ] {
            assert!(out.lines().any(|l| l == line), "missing {line:?} in\n{out}");
        }
        assert!(!out.contains("# EOF") && !out.contains("# UNIT") && !out.contains(".."));
        assert_eq!(m.stats().dropped("inbox_full"), 1);
    }
}
