//! Counters, histograms and their Prometheus text rendering (`GET /metrics`).
//!
//! Counters that the fan-out path touches live per shard, each on its own cache line, so
//! shards never contend on them; the fan-out adds once per batch, not once per recipient.
//! A scrape sums them.
//!
//! The timing histograms (fan-out round duration, publish-to-socket latency of local and
//! cross-node messages) are `prometheus-client` histograms, one set per shard so that no
//! two threads share one: a round observes its duration once and each message's latency
//! once per shard — never anything per recipient.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use crossbeam_utils::CachePadded;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::wire::deflate::Inflater;

/// Counters owned by one shard (written by its thread, read by scrapes).
#[derive(Debug, Default)]
pub struct ShardMetrics {
    /// Connections registered on this shard right now.
    pub connections: AtomicU64,
    /// Frames delivered to clients (one per recipient per message).
    pub deliveries: AtomicU64,
    /// Bytes written or queued for client sockets.
    pub bytes_out: AtomicU64,
    /// Fan-out rounds (each writes one batch to every subscriber); deliveries per round
    /// shows how well frames batch.
    pub fanout_rounds: AtomicU64,
    /// Messages received from clients.
    pub messages_in: AtomicU64,
    /// Clients closed because their queue exceeded the client buffer.
    pub slow_consumer_closes: AtomicU64,
    /// Clients closed because they stopped answering pings.
    pub ping_timeouts: AtomicU64,
    /// Clients closed for a protocol error, oversize message or bad UTF-8.
    pub protocol_closes: AtomicU64,
    /// Messages this shard's full inbox refused (the shard was behind).
    pub inbox_dropped: AtomicU64,
    /// v1 subscribes with `since` that replayed what was missed.
    pub recoveries: AtomicU64,
    /// Clients closed because their token expired or they did not `connect` in time.
    pub auth_closes: AtomicU64,
    /// v1 subscribes with `since` answered `recovered: false`.
    pub unrecovered: AtomicU64,
    /// Connections registered on this shard that negotiated permessage-deflate.
    pub deflate_connections: AtomicU64,
    /// Inflate states alive: clients that sent compressed messages (with context
    /// takeover, kept for the connection's life).
    pub inflaters: AtomicU64,
    /// Compressed messages received from clients and inflated.
    pub inflated_messages: AtomicU64,
}

/// Compression on the publish path, from whichever thread publishes.
#[derive(Debug, Default)]
pub struct DeflateMetrics {
    /// Encodings of messages compressed (a message's plain frame and its v1 push count
    /// apart), once each however many clients get them.
    pub messages: AtomicU64,
    /// Compressions that did not make the payload smaller: sent uncompressed.
    pub incompressible: AtomicU64,
    /// Payload bytes of the compressed encodings.
    pub bytes_in: AtomicU64,
    /// Bytes of their compressed frames (headers included).
    pub bytes_out: AtomicU64,
}

/// Why an upgrade was refused; each has its own counter.
#[derive(Debug, Clone, Copy)]
pub enum Rejection {
    /// Origin not allowed (403).
    Origin = 0,
    /// `--max-connections` reached (503).
    Capacity = 1,
    /// The admission hook refused.
    Admission = 2,
    /// Malformed upgrade request or bad topics (400).
    BadRequest = 3,
    /// Shutting down (503).
    ShuttingDown = 4,
    /// No valid token (401).
    Unauthorized = 5,
    /// The token does not grant a topic of the URL (403).
    Forbidden = 6,
}

const REJECTION_LABELS: [&str; 7] = [
    "origin",
    "capacity",
    "admission",
    "bad_request",
    "shutting_down",
    "unauthorized",
    "forbidden",
];

/// Labels of the per-shard histograms.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ShardLabel {
    shard: String,
}

/// Labels of the latency histogram.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct LatencyLabels {
    shard: String,
    /// `local` (published on this node) or `remote` (came through the backplane).
    origin: &'static str,
}

/// One shard's histograms, handles taken once so that observing is one uncontended
/// lock, no label lookup.
#[derive(Debug, Clone)]
pub struct ShardTimings {
    /// Duration of each fan-out round.
    pub round: Histogram,
    /// Publish-to-socket latency of messages published on this node.
    pub local: Histogram,
    /// Publish-to-socket latency of messages from other nodes (from the publishing
    /// node's clock: meaningful when node clocks are synchronised).
    pub remote: Histogram,
}

/// The timing histograms of every shard, and the registry that renders them.
pub struct Timings {
    registry: Registry,
    shards: Box<[ShardTimings]>,
}

impl std::fmt::Debug for Timings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Timings")
            .field("shards", &self.shards.len())
            .finish()
    }
}

impl Timings {
    fn new(shards: usize) -> Self {
        // 10 µs to ~10 s in steps of √2: a round is tens of µs to a few ms, a latency
        // under load up to seconds. Factor-2 steps put 65 and 95 ms in one bucket
        // (docs/benchmarks.md, "The server's own view"); √2 halves that blur with 41
        // buckets per series.
        let buckets = || Histogram::new(exponential_buckets(10e-6, std::f64::consts::SQRT_2, 41));
        let rounds = Family::<ShardLabel, Histogram>::new_with_constructor(buckets);
        let latency = Family::<LatencyLabels, Histogram>::new_with_constructor(buckets);
        let shards = (0..shards)
            .map(|i| {
                let at = |origin| LatencyLabels {
                    shard: i.to_string(),
                    origin,
                };
                // One statement each: `get_or_create` returns a guard on the family's
                // lock, and a guard kept alive across the next call deadlocks it.
                let round = rounds
                    .get_or_create(&ShardLabel {
                        shard: i.to_string(),
                    })
                    .clone();
                let local = latency.get_or_create(&at("local")).clone();
                let remote = latency.get_or_create(&at("remote")).clone();
                ShardTimings {
                    round,
                    local,
                    remote,
                }
            })
            .collect();
        let mut registry = Registry::with_prefix("hubcast");
        registry.register(
            "fanout_round_seconds",
            "Duration of one fan-out round (one batch written to every subscriber), per shard",
            rounds,
        );
        registry.register(
            "publish_to_socket_seconds",
            "From publish until the message was written (or queued) to its last subscriber on the shard, per shard and origin (local or remote node)",
            latency,
        );
        Timings { registry, shards }
    }

    /// The histograms of shard `index`.
    pub fn shard(&self, index: usize) -> &ShardTimings {
        &self.shards[index]
    }

    fn render(&self, out: &mut String) {
        let _ = prometheus_client::encoding::text::encode_registry(out, &self.registry);
    }
}

/// All counters of one server.
#[derive(Debug)]
pub struct Metrics {
    /// Per-shard counters, indexed by shard.
    pub shards: Box<[CachePadded<ShardMetrics>]>,
    /// Messages accepted for publishing (any source).
    pub published: CachePadded<AtomicU64>,
    /// Publishes that had to wait for room in a full shard inbox (back-pressure).
    pub publish_waits: AtomicU64,
    /// TLS handshakes that failed or timed out (the connection was closed).
    pub tls_handshake_failures: AtomicU64,
    /// Certificate reloads that took effect.
    pub tls_reloads: AtomicU64,
    /// Certificate reloads refused (the certificate in use was kept).
    pub tls_reload_failures: AtomicU64,
    /// Compression at publish.
    pub deflate: CachePadded<DeflateMetrics>,
    rejected: [AtomicU64; REJECTION_LABELS.len()],
    /// Fan-out and latency histograms.
    pub timings: Timings,
}

impl Metrics {
    /// Counters for `shards` shards, all zero.
    pub fn new(shards: usize) -> Self {
        Metrics {
            shards: (0..shards)
                .map(|_| CachePadded::new(ShardMetrics::default()))
                .collect(),
            published: CachePadded::new(AtomicU64::new(0)),
            publish_waits: AtomicU64::new(0),
            tls_handshake_failures: AtomicU64::new(0),
            tls_reloads: AtomicU64::new(0),
            tls_reload_failures: AtomicU64::new(0),
            deflate: CachePadded::new(DeflateMetrics::default()),
            rejected: Default::default(),
            timings: Timings::new(shards),
        }
    }

    /// Counts one refused upgrade.
    pub fn reject(&self, why: Rejection) {
        self.rejected[why as usize].fetch_add(1, Relaxed);
    }

    /// Refused upgrades for one reason.
    pub fn rejected(&self, why: Rejection) -> u64 {
        self.rejected[why as usize].load(Relaxed)
    }

    fn sum(&self, f: impl Fn(&ShardMetrics) -> &AtomicU64) -> u64 {
        self.shards.iter().map(|s| f(s).load(Relaxed)).sum()
    }

    /// Current connections over all shards.
    pub fn connections(&self) -> u64 {
        self.sum(|s| &s.connections)
    }

    /// Renders every counter in the Prometheus text exposition format.
    pub fn render(&self) -> String {
        let mut out = String::with_capacity(2048);
        let mut one = |name: &str, kind: &str, help: &str, value: u64| {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}"
            );
        };
        one(
            "hubcast_connections",
            "gauge",
            "Open WebSocket connections.",
            self.connections(),
        );
        one(
            "hubcast_messages_published_total",
            "counter",
            "Messages accepted for publishing.",
            self.published.load(Relaxed),
        );
        one(
            "hubcast_messages_received_total",
            "counter",
            "Data messages received from clients.",
            self.sum(|s| &s.messages_in),
        );
        one(
            "hubcast_deliveries_total",
            "counter",
            "Messages delivered to clients (one per recipient).",
            self.sum(|s| &s.deliveries),
        );
        one(
            "hubcast_fanout_rounds_total",
            "counter",
            "Fan-out rounds: one write per subscriber each, however many frames it carries.",
            self.sum(|s| &s.fanout_rounds),
        );
        one(
            "hubcast_bytes_out_total",
            "counter",
            "Bytes written or queued for client sockets (queued bytes of a client closed as a slow consumer are discarded, but stay counted).",
            self.sum(|s| &s.bytes_out),
        );
        one(
            "hubcast_slow_consumer_closes_total",
            "counter",
            "Clients closed for exceeding the client buffer.",
            self.sum(|s| &s.slow_consumer_closes),
        );
        one(
            "hubcast_ping_timeouts_total",
            "counter",
            "Clients closed for not answering pings.",
            self.sum(|s| &s.ping_timeouts),
        );
        one(
            "hubcast_protocol_closes_total",
            "counter",
            "Clients closed for protocol errors, oversize messages or bad UTF-8.",
            self.sum(|s| &s.protocol_closes),
        );
        one(
            "hubcast_auth_closes_total",
            "counter",
            "Clients closed because their token expired (4401) or they did not connect in time (4408).",
            self.sum(|s| &s.auth_closes),
        );
        one(
            "hubcast_publish_waits_total",
            "counter",
            "Publishes (client or HTTP) that waited for room in a full shard inbox.",
            self.publish_waits.load(Relaxed),
        );
        one(
            "hubcast_recoveries_total",
            "counter",
            "Protocol v1 subscribes with a position that replayed what was missed.",
            self.sum(|s| &s.recoveries),
        );
        one(
            "hubcast_recoveries_failed_total",
            "counter",
            "Protocol v1 subscribes with a position that could not be recovered (recovered:false).",
            self.sum(|s| &s.unrecovered),
        );
        one(
            "hubcast_inbox_dropped_total",
            "counter",
            "Messages dropped because a shard's inbox was full.",
            self.sum(|s| &s.inbox_dropped),
        );
        one(
            "hubcast_tls_handshake_failures_total",
            "counter",
            "TLS handshakes that failed or timed out (plain HTTP to the TLS port, untrusted certificate, stalled client).",
            self.tls_handshake_failures.load(Relaxed),
        );
        one(
            "hubcast_tls_reloads_total",
            "counter",
            "Certificate reloads that took effect.",
            self.tls_reloads.load(Relaxed),
        );
        one(
            "hubcast_tls_reload_failures_total",
            "counter",
            "Certificate reloads refused; the certificate in use was kept.",
            self.tls_reload_failures.load(Relaxed),
        );
        one(
            "hubcast_deflate_connections",
            "gauge",
            "Open connections that negotiated permessage-deflate.",
            self.sum(|s| &s.deflate_connections),
        );
        let d = &self.deflate;
        for (name, help, value) in [
            (
                "hubcast_deflate_messages_total",
                "Message encodings compressed at publish, once each for all their recipients (plain frame and v1 push count apart).",
                &d.messages,
            ),
            (
                "hubcast_deflate_incompressible_total",
                "Compressions that did not make the message smaller (sent uncompressed).",
                &d.incompressible,
            ),
            (
                "hubcast_deflate_input_bytes_total",
                "Payload bytes of the compressed encodings.",
                &d.bytes_in,
            ),
            (
                "hubcast_deflate_output_bytes_total",
                "Bytes of their compressed frames, headers included.",
                &d.bytes_out,
            ),
        ] {
            one(name, "counter", help, value.load(Relaxed));
        }
        let inflaters = self.sum(|s| &s.inflaters);
        one(
            "hubcast_inflate_contexts",
            "gauge",
            "Clients holding an inflate window (they sent compressed messages with context takeover).",
            inflaters,
        );
        one(
            "hubcast_inflate_context_bytes",
            "gauge",
            "Heap held by those inflate windows.",
            inflaters * Inflater::MEMORY as u64,
        );
        one(
            "hubcast_inflated_messages_total",
            "counter",
            "Compressed messages received from clients.",
            self.sum(|s| &s.inflated_messages),
        );
        let _ = writeln!(
            out,
            "# HELP hubcast_shard_connections Open connections per shard.\n# TYPE hubcast_shard_connections gauge"
        );
        for (i, s) in self.shards.iter().enumerate() {
            let _ = writeln!(
                out,
                "hubcast_shard_connections{{shard=\"{i}\"}} {}",
                s.connections.load(Relaxed)
            );
        }
        let _ = writeln!(
            out,
            "# HELP hubcast_rejected_upgrades_total Upgrade requests refused, by reason.\n# TYPE hubcast_rejected_upgrades_total counter"
        );
        for (i, label) in REJECTION_LABELS.iter().enumerate() {
            let _ = writeln!(
                out,
                "hubcast_rejected_upgrades_total{{reason=\"{label}\"}} {}",
                self.rejected[i].load(Relaxed)
            );
        }
        self.timings.render(&mut out);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn render_sums_shards_and_labels_rejections() {
        let m = Metrics::new(2);
        m.shards[0].connections.store(3, Relaxed);
        m.shards[1].connections.store(4, Relaxed);
        m.shards[1].deliveries.store(10, Relaxed);
        m.reject(Rejection::Origin);
        let text = m.render();
        assert!(text.contains("\nhubcast_connections 7\n"), "{text}");
        assert!(text.contains("hubcast_shard_connections{shard=\"1\"} 4"));
        assert!(text.contains("hubcast_deliveries_total 10"));
        assert!(text.contains("hubcast_rejected_upgrades_total{reason=\"origin\"} 1"));
        m.timings.shard(1).round.observe(0.001);
        m.timings.shard(0).remote.observe(0.002);
        let text = m.render();
        assert!(
            text.contains("hubcast_fanout_round_seconds_count{shard=\"1\"} 1"),
            "{text}"
        );
        assert!(
            text.contains(
                "hubcast_publish_to_socket_seconds_count{shard=\"0\",origin=\"remote\"} 1"
            )
        );
    }
}
