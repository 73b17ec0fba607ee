//! The outgoing side: one task takes queued messages in call order and hands them to the
//! NATS client, one after the other — no task per message, so order per publisher holds.
//!
//! The client's own command queue (2,048 commands) sits between this task and the socket.
//! Handing a message over normally completes at once. When it does not, the connection is
//! behind (back-pressure: our queue fills, and `publish` drops `queue_full`) or broken;
//! async-nats stops draining its command queue while it reconnects, so waiting for room
//! would park the whole backplane for an outage. So the task waits only until the link is
//! reported down, then drops (`disconnected`) until it is back.

use std::sync::Arc;

use async_nats::connection::State as ClientState;
use async_nats::{Client, Subject};
use bytes::Bytes;
use futures_util::FutureExt;
use tokio::sync::{mpsc, watch};
use tracing::debug;

use super::backplane::Shared;
use super::metrics::DropReason;
use super::{Kind, State, wire};

/// Messages taken from the queue per wake-up.
const BATCH: usize = 512;

/// One message waiting for the NATS connection.
pub(crate) struct Outgoing {
    pub(crate) subject: String,
    pub(crate) kind: Kind,
    pub(crate) payload: Bytes,
    pub(crate) sent_unix_nanos: u64,
}

pub(crate) async fn run(
    shared: Arc<Shared>,
    client: Client,
    mut queue: mpsc::Receiver<Outgoing>,
    mut state: watch::Receiver<State>,
    mut stopping: watch::Receiver<bool>,
) {
    let mut batch = Vec::with_capacity(BATCH);
    loop {
        tokio::select! {
            biased;
            // Ok: shutdown asked (the flag only ever goes false → true); Err: the
            // backplane thread is ending anyway.
            _ = stopping.changed() => break,
            n = queue.recv_many(&mut batch, BATCH) => {
                if n == 0 {
                    break; // every handle dropped
                }
                send(&shared, &client, &mut state, &mut batch).await;
            }
        }
    }
    // Shutdown: refuse new messages (`publish` counts them as `shutdown`), send the rest.
    queue.close();
    while queue.recv_many(&mut batch, BATCH).await > 0 {
        send(&shared, &client, &mut state, &mut batch).await;
    }
    if client.connection_state() == ClientState::Connected
        && let Err(e) = client.flush().await
    {
        debug!(error = %e, "backplane shutdown: flush failed");
    }
}

async fn send(
    shared: &Shared,
    client: &Client,
    state: &mut watch::Receiver<State>,
    batch: &mut Vec<Outgoing>,
) {
    for out in batch.drain(..) {
        // The client's own view is updated the moment its connection task sees the socket
        // break, before the event reaches us: ask it per message (a read lock).
        // Bytes inside: the clone kept for log lines is a reference count.
        let subject = Subject::from(out.subject);
        if client.connection_state() != ClientState::Connected {
            shared.drop_subject(DropReason::Disconnected, &subject, "not connected to NATS");
            continue;
        }
        let headers = wire::headers(&shared.node_id, out.kind, out.sent_unix_nanos);
        let publish = client.publish_with_headers(subject.clone(), headers, out.payload);
        tokio::pin!(publish);
        let result = match (&mut publish).now_or_never() {
            Some(result) => Some(result),
            // Dropping the pending publish withdraws the message: it is not sent.
            None => tokio::select! {
                result = &mut publish => Some(result),
                _ = disconnected(state) => None,
            },
        };
        match result {
            Some(Ok(())) => {
                shared.metrics.published.inc();
            }
            Some(Err(e)) => {
                shared.drop_subject(DropReason::PublishError, &subject, &e.to_string());
            }
            None => {
                shared.drop_subject(
                    DropReason::Disconnected,
                    &subject,
                    "the NATS connection broke",
                );
            }
        }
    }
}

/// Resolves when the link is reported down (at once if it already is).
async fn disconnected(state: &mut watch::Receiver<State>) {
    // The guard `wait_for` returns is not `Send`: drop it here.
    let _ = state
        .wait_for(|s| *s == State::Disconnected)
        .await
        .map(|_| ());
}
