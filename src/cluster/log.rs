//! The shared log: the cluster's history kept in NATS JetStream, so that a position
//! `{offset, epoch}` means the same message on every node.
//!
//! When the node keeps history (`--history-size` > 0) and is clustered, one JetStream
//! stream holds every topic's recent messages:
//!
//! - **Subjects**: `<prefix>.t.>` — the topics' own subjects, so nothing is published
//!   twice. Limits: `max_msgs_per_subject` = history size, `max_age` = history ttl,
//!   `max_msgs` = size × topic cap (the total stays bounded), discard old.
//! - **Offsets** are the stream's sequence numbers: increasing per topic, shared by all
//!   topics, so *not contiguous* within one topic.
//! - **The epoch** is the stream's creation time: every node reads the same one, and a
//!   re-created stream (deleted, or lost with a memory-backed broker) is a new epoch.
//!
//! Two tasks, both on the backplane's thread:
//!
//! - [`append`] publishes local messages to the stream and, for callers that wait, hands
//!   back the offset from JetStream's ack. At most [`ACKS_IN_FLIGHT`] acks are pending
//!   (async-nats' context deadlocks past its own limit of 5,000 with backpressure on).
//! - [`read`] follows the stream with an ordered push consumer, from where this node
//!   stopped, and hands every message in log order to the engine, **the node's own
//!   included**: local subscribers get a local publish once the log has it, so that
//!   every node delivers a topic's messages in the same order with the same offsets. At
//!   start it first reads what the stream holds (history, not news: recorded, not
//!   delivered) and turns live when nothing is pending. Every couple of seconds it
//!   checks the stream's creation time, and starts over on a new epoch when it changed.

use std::sync::Arc;
use std::time::Duration;

use async_nats::connection::State as ClientState;
use async_nats::jetstream::consumer::DeliverPolicy;
use async_nats::jetstream::consumer::push::OrderedConfig;
use async_nats::jetstream::context::PublishAckFuture;
use async_nats::jetstream::stream::{Config as StreamConfig, DiscardPolicy, StorageType};
use async_nats::jetstream::{self, Context};
use bytes::Bytes;
use futures_util::StreamExt;
use tokio::sync::mpsc;
use tracing::{debug, info, warn};

use super::backplane::Shared;
use super::metrics::DropReason;
use super::wire;
use super::{Kind, Logged};
use crate::engine::backplane::Ack;
use crate::error::PublishError;

/// Most publish acks awaited at once.
pub(crate) const ACKS_IN_FLIGHT: usize = 1_024;

/// How often the reader checks that the stream is still the one it reads.
const EPOCH_CHECK: Duration = Duration::from_secs(2);

/// How long to wait before trying again when the stream cannot be reached.
const RETRY: Duration = Duration::from_millis(500);

/// How the stream is kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Storage {
    /// On the broker's disk: survives a broker restart (the default).
    #[default]
    File,
    /// In the broker's memory: faster; a broker restart loses it (a new epoch).
    Memory,
}

/// The shared log's settings (derived from the node's history settings).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogConfig {
    /// Messages kept per topic (the stream's `max_msgs_per_subject`).
    pub size: usize,
    /// How long a message is kept (`max_age`); `None` = until pushed out.
    pub ttl: Option<Duration>,
    /// Topics the total is sized for: the stream keeps at most `size × max_topics`
    /// messages.
    pub max_topics: usize,
    /// Where the broker keeps the stream.
    pub storage: Storage,
}

/// One local message waiting to be appended.
pub(crate) struct Appending {
    pub(crate) subject: String,
    pub(crate) kind: Kind,
    pub(crate) payload: Bytes,
    pub(crate) sent_unix_nanos: u64,
    pub(crate) ack: Option<Ack>,
}

/// The stream's name for a subject prefix: JetStream names allow no `.`.
pub(crate) fn stream_name(prefix: &str) -> String {
    let clean: String = prefix
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    format!("{clean}_history")
}

/// An epoch from the stream's creation time: nanoseconds, base 36.
fn epoch_of(created: &jetstream::stream::Info) -> String {
    let mut n = u128::try_from(created.created.unix_timestamp_nanos()).unwrap_or(0);
    let mut out = Vec::new();
    loop {
        out.push(b"0123456789abcdefghijklmnopqrstuvwxyz"[(n % 36) as usize]);
        n /= 36;
        if n == 0 {
            break;
        }
    }
    out.reverse();
    String::from_utf8(out).unwrap_or_default()
}

fn stream_config(shared: &Shared, config: &LogConfig) -> StreamConfig {
    let size = i64::try_from(config.size).unwrap_or(i64::MAX);
    StreamConfig {
        name: stream_name(shared.subjects.prefix()),
        subjects: vec![shared.subjects.all()],
        max_messages_per_subject: size,
        max_messages: size.saturating_mul(i64::try_from(config.max_topics).unwrap_or(i64::MAX)),
        max_age: config.ttl.unwrap_or_default(),
        discard: DiscardPolicy::Old,
        storage: match config.storage {
            Storage::File => StorageType::File,
            Storage::Memory => StorageType::Memory,
        },
        ..StreamConfig::default()
    }
}

/// Creates the stream, or brings an existing one to these limits; returns its info.
async fn ensure_stream(
    js: &Context,
    config: &StreamConfig,
) -> Result<jetstream::stream::Info, String> {
    js.create_or_update_stream(config.clone())
        .await
        .map_err(|e| e.to_string())
}

/// Publishes local messages to the stream in call order. Their acks go, in the same
/// order, to [`settle`], which tells waiting callers their offsets; when
/// [`ACKS_IN_FLIGHT`] are pending, this task waits (and the queue in front of it fills).
pub(crate) async fn append(
    shared: Arc<Shared>,
    client: async_nats::Client,
    js: Context,
    mut queue: mpsc::Receiver<Appending>,
) {
    let (acks, awaited) = mpsc::channel(ACKS_IN_FLIGHT);
    let settler = tokio::spawn(settle(shared.clone(), awaited));
    let mut batch = Vec::with_capacity(256);
    while queue.recv_many(&mut batch, 256).await > 0 {
        for out in batch.drain(..) {
            if client.connection_state() != ClientState::Connected {
                shared.drop_subject(
                    DropReason::Disconnected,
                    &out.subject,
                    "not connected to NATS",
                );
                refuse(out.ack);
                continue;
            }
            let headers = wire::headers(&shared.node_id, out.kind, out.sent_unix_nanos);
            match js
                .publish_with_headers(out.subject.clone(), headers, out.payload)
                .await
            {
                Ok(ack) => {
                    if acks.send((ack, out.ack, out.subject)).await.is_err() {
                        return; // the settler is gone: shutting down
                    }
                }
                Err(e) => {
                    shared.drop_subject(DropReason::PublishError, &out.subject, &e.to_string());
                    refuse(out.ack);
                }
            }
        }
    }
    drop(acks);
    let _ = settler.await;
}

/// Awaits the acks in publish order and tells each waiting caller.
async fn settle(
    shared: Arc<Shared>,
    mut awaited: mpsc::Receiver<(PublishAckFuture, Option<Ack>, String)>,
) {
    while let Some((ack, caller, subject)) = awaited.recv().await {
        match ack.await {
            Ok(ack) => {
                shared.metrics.published.inc();
                if let Some(caller) = caller {
                    let _ = caller.send(Ok(ack.sequence));
                }
            }
            Err(e) => {
                shared.drop_subject(DropReason::PublishError, &subject, &e.to_string());
                refuse(caller);
            }
        }
    }
}

fn refuse(caller: Option<Ack>) {
    if let Some(caller) = caller {
        let _ = caller.send(Err(PublishError::Unavailable));
    }
}

/// Follows the stream and hands its messages to the engine in log order, until the
/// backplane's runtime ends. Never gives up: an unreachable stream is retried.
pub(crate) async fn read(
    shared: Arc<Shared>,
    client: async_nats::Client,
    js: Context,
    config: LogConfig,
) {
    let stream = stream_config(&shared, &config);
    // The epoch being read, once known.
    let mut epoch: Option<String> = None;
    loop {
        let info = match ensure_stream(&js, &stream).await {
            Ok(info) => info,
            Err(e) => {
                shared.log_trouble(&format!("the history stream is unreachable: {e}"));
                tokio::time::sleep(RETRY).await;
                continue;
            }
        };
        let this = epoch_of(&info);
        let (start, history_until) = if epoch.as_deref() == Some(this.as_str()) {
            // The same log: go on after what this node has read.
            (shared.deliver.log_position() + 1, 0)
        } else {
            // Start (or a new epoch): take the log from the top of what the stream
            // holds. At the node's start that is history, not news.
            let first = info.state.first_sequence.max(1);
            shared.deliver.follow_log(&this, first - 1);
            let history_until = if epoch.is_none() {
                info.state.last_sequence
            } else {
                0
            };
            if epoch.is_some() {
                warn!(epoch = %this, "the history stream was re-created: a new epoch");
            }
            info!(epoch = %this, from = first, "reading the cluster's history stream");
            epoch = Some(this.clone());
            (first, history_until)
        };
        let consumer = js
            .create_consumer_on_stream(
                OrderedConfig {
                    deliver_subject: client.new_inbox(),
                    filter_subject: shared.subjects.all(),
                    deliver_policy: DeliverPolicy::ByStartSequence {
                        start_sequence: start,
                    },
                    ..OrderedConfig::default()
                },
                &stream.name,
            )
            .await;
        let mut messages = match consumer {
            Ok(consumer) => match consumer.messages().await {
                Ok(messages) => messages,
                Err(e) => {
                    shared.log_trouble(&format!("cannot read the history stream: {e}"));
                    tokio::time::sleep(RETRY).await;
                    continue;
                }
            },
            Err(e) => {
                shared.log_trouble(&format!("cannot read the history stream: {e}"));
                tokio::time::sleep(RETRY).await;
                continue;
            }
        };
        // At start, the catch-up read ends with the message at `history_until` or
        // when the consumer has nothing pending, whichever comes first.
        let mut catching_up = history_until > 0;
        if !catching_up {
            shared.deliver.log_caught_up();
        }
        let mut check = tokio::time::interval(EPOCH_CHECK);
        check.tick().await; // the first tick is immediate
        loop {
            tokio::select! {
                message = messages.next() => match message {
                    Some(Ok(message)) => {
                        let (offset, pending) = take(&shared, &message, history_until);
                        if catching_up && (offset >= history_until || pending == 0) {
                            catching_up = false;
                            shared.deliver.log_caught_up();
                        }
                    }
                    // The ordered consumer re-creates itself after gaps and reconnects.
                    Some(Err(e)) => debug!(error = %e, "history stream consumer"),
                    None => break,
                },
                _ = check.tick() => {
                    // Also re-creates a stream that was deleted (a new epoch, then).
                    // Unreachable: carry on; the ordered consumer waits for the broker.
                    if let Ok(info) = ensure_stream(&js, &stream).await
                        && epoch.as_deref() != Some(epoch_of(&info).as_str())
                    {
                        break;
                    }
                }
            }
        }
    }
}

/// Hands one message of the log to the engine; a message that cannot be read is still
/// passed (as skipped), so that positions after it stay valid.
/// Returns the message's offset and how many more the consumer has pending.
fn take(shared: &Shared, message: &jetstream::Message, history_until: u64) -> (u64, u64) {
    let Ok(info) = message.info() else {
        debug!("a history message without JetStream info");
        return (0, u64::MAX);
    };
    let (offset, pending) = (info.stream_sequence, info.pending);
    let topic = shared.subjects.topic_of(&message.subject);
    // No node id can be empty: every message is judged, none is an echo here.
    let accepted = wire::classify(message.headers.as_ref(), &message.payload, "");
    let (Some(topic), Ok(accepted)) = (topic, accepted) else {
        shared.deliver.skip_logged(offset);
        shared.metrics.received.inc();
        let why = match wire::classify(message.headers.as_ref(), &message.payload, "") {
            Err(why) => why.describe(),
            Ok(_) => "not a topic subject",
        };
        shared.drop_subject(DropReason::Malformed, &message.subject, why);
        return (offset, pending);
    };
    let remote = message
        .headers
        .as_ref()
        .and_then(|h| h.get(wire::NODE))
        .is_none_or(|n| n.as_str() != shared.node_id);
    shared.metrics.received.inc();
    let logged = Logged {
        topic,
        kind: accepted.kind,
        payload: message.payload.clone(),
        offset,
        sent_at_unix_nanos: accepted.sent_unix_nanos,
        remote,
        live: offset > history_until,
    };
    let topic_for_log = logged.topic.clone();
    if shared.deliver.deliver_logged(logged).is_err() {
        shared.drop_message(
            DropReason::InboxFull,
            &topic_for_log,
            "the local inbox is full",
        );
    }
    (offset, pending)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_names_have_no_dots() {
        assert_eq!(stream_name("hubcast"), "hubcast_history");
        assert_eq!(stream_name("acme.feeds-1"), "acme_feeds_1_history");
    }
}
