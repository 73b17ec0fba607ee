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

use super::{Backplane, ClusterConfig, ClusterError, Dropped, Kind, State};
use crate::engine::backplane::Backplane as Seam;
use crate::engine::hub::Hub;
use crate::error::PublishError;
use crate::wire::frame::Opcode;

/// Starts the backplane for `hub` and plugs it in: from now on, local publishes also go
/// to other nodes, and other nodes' publishes to this node's subscribers.
pub fn attach(hub: &Hub, config: ClusterConfig) -> Result<Backplane, ClusterError> {
    let weak = hub.downgrade();
    let deliver = Arc::new(
        move |topic: &str, kind: Kind, payload: Bytes, sent: Option<u64>| {
            deliver(&weak, topic, kind, &payload, sent)
        },
    );
    let backplane = Backplane::start(config, deliver)?;
    if !hub.set_backplane(Arc::new(backplane.clone())) {
        backplane.shutdown();
        return Err(ClusterError::Config(
            "this hub already has a backplane".into(),
        ));
    }
    Ok(backplane)
}

fn deliver(
    hub: &Weak<crate::engine::hub::HubInner>,
    topic: &str,
    kind: Kind,
    payload: &[u8],
    sent: Option<u64>,
) -> Result<(), Dropped> {
    let Some(hub) = Hub::upgrade_weak(hub) else {
        return Err(Dropped);
    };
    let opcode = match kind {
        Kind::Text => Opcode::Text,
        Kind::Binary => Opcode::Binary,
    };
    match hub.publish_from_peer(topic, opcode, payload, born(sent)) {
        Ok(_) => Ok(()),
        // Too big or a bad topic for this node's limits, full inboxes, shutting down:
        // all counted by the backplane as not handed over.
        Err(PublishError::Overloaded { .. })
        | Err(PublishError::ShuttingDown)
        | Err(PublishError::TooLarge { .. })
        | Err(PublishError::InvalidTopic) => Err(Dropped),
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
