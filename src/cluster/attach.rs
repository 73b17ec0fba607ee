//! Plugging the backplane into a hub: the cluster floor implements the engine's
//! [`Backplane`](crate::engine::backplane::Backplane) seam, and the engine delivers what
//! other nodes publish.
//!
//! Messages from other nodes enter the hub through `Hub::publish_from_peer`: encoded
//! once on this node, handed to each shard's inbox like a local publish, never forwarded
//! again. The backplane holds the hub weakly, so a stopped server is not kept alive by
//! its broker connection.

use std::sync::{Arc, Weak};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;

use super::{
    Backplane, ClusterConfig, ClusterError, Deliver, Dropped, Kind, LogConfig, Logged, State,
    Storage,
};
use crate::engine::backplane::{Ack, Backplane as Seam};
use crate::engine::hub::{Hub, HubInner};
use crate::error::PublishError;
use crate::wire::frame::Opcode;

/// Starts the backplane for `hub` and plugs it in: from now on, local publishes also go
/// to other nodes, and other nodes' publishes to this node's subscribers.
pub fn attach(hub: &Hub, mut config: ClusterConfig) -> Result<Backplane, ClusterError> {
    let settings = hub.config();
    if config.history.is_none() && settings.history_size > 0 {
        config.history = Some(LogConfig {
            size: settings.history_size,
            ttl: settings.history_ttl,
            max_topics: settings.history_topics,
            storage: Storage::default(),
        });
    }
    let deliver = Arc::new(HubDeliver {
        hub: hub.downgrade(),
    });
    let backplane = Backplane::start(config, deliver)?;
    if !hub.set_backplane(Arc::new(backplane.clone())) {
        backplane.shutdown();
        return Err(ClusterError::Config(
            "this hub already has a backplane".into(),
        ));
    }
    Ok(backplane)
}

/// The engine, as the backplane sees it.
struct HubDeliver {
    hub: Weak<HubInner>,
}

impl HubDeliver {
    fn hub(&self) -> Option<Hub> {
        Hub::upgrade_weak(&self.hub)
    }
}

impl Deliver for HubDeliver {
    fn deliver(
        &self,
        topic: &str,
        kind: Kind,
        payload: Bytes,
        sent: Option<u64>,
    ) -> Result<(), Dropped> {
        let hub = self.hub().ok_or(Dropped)?;
        // Too big or a bad topic for this node's limits, full inboxes, shutting down:
        // all counted by the backplane as not handed over.
        hub.publish_from_peer(topic, opcode(kind), &payload, born(sent))
            .map(|_| ())
            .map_err(|_| Dropped)
    }

    fn deliver_logged(&self, m: Logged) -> Result<(), Dropped> {
        let hub = self.hub().ok_or(Dropped)?;
        let born = born(m.sent_at_unix_nanos);
        match hub.publish_from_log(
            &m.topic,
            opcode(m.kind),
            &m.payload,
            m.offset,
            born,
            m.remote,
            m.live,
        ) {
            Ok(_) => Ok(()),
            // Recorded, but some shard could not take it.
            Err(PublishError::Overloaded { .. }) => Err(Dropped),
            // Not this node's to deliver (limits) or shutting down: skipped, not lost
            // to a full inbox.
            Err(_) => Ok(()),
        }
    }

    fn skip_logged(&self, offset: u64) {
        if let Some(hub) = self.hub() {
            hub.history().advance(offset);
        }
    }

    fn follow_log(&self, epoch: &str, start: u64) {
        if let Some(hub) = self.hub() {
            hub.history().follow_log(epoch, start);
        }
    }

    fn log_caught_up(&self) {
        if let Some(hub) = self.hub() {
            hub.history().caught_up();
        }
    }

    fn log_position(&self) -> u64 {
        self.hub().map_or(0, |hub| hub.history().watermark())
    }

    fn local_subscribers(&self) -> Vec<(String, usize)> {
        self.hub().map_or_else(Vec::new, |hub| hub.topics())
    }
}

fn opcode(kind: Kind) -> Opcode {
    match kind {
        Kind::Text => Opcode::Text,
        Kind::Binary => Opcode::Binary,
    }
}

/// The instant, on this node's monotonic clock, that corresponds to the publishing
/// node's wall-clock `sent` time (now when unknown or in the future).
fn born(sent: Option<u64>) -> Instant {
    let now = Instant::now();
    let Some(sent) = sent else { return now };
    let wall = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX));
    now.checked_sub(Duration::from_nanos(wall.saturating_sub(sent)))
        .unwrap_or(now)
}

impl Seam for Backplane {
    fn publish(&self, topic: &str, opcode: Opcode, payload: Bytes) {
        let kind = match opcode {
            Opcode::Binary => Kind::Binary,
            _ => Kind::Text,
        };
        Backplane::publish(self, topic, kind, payload);
    }

    fn keeps_log(&self) -> bool {
        Backplane::keeps_log(self)
    }

    fn append(&self, topic: &str, opcode: Opcode, payload: Bytes, ack: Option<Ack>) {
        let kind = match opcode {
            Opcode::Binary => Kind::Binary,
            _ => Kind::Text,
        };
        Backplane::append(self, topic, kind, payload, ack);
    }

    fn remote_subscribers(&self, topic: &str) -> usize {
        Backplane::remote_subscribers(self, topic)
    }

    fn set_interest(&self, shard: usize, topic: &str, on: bool) {
        Backplane::set_interest(self, shard, topic, on);
    }

    fn status(&self) -> &'static str {
        match self.state() {
            State::Connecting => "connecting",
            State::Connected => "connected",
            State::Disconnected => "disconnected",
        }
    }

    fn render_metrics(&self, out: &mut String) {
        Backplane::render_metrics(self, out);
    }

    fn shutdown(&self) {
        Backplane::shutdown(self);
    }
}
