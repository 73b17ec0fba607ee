//! The incoming side: one task turns interest changes into SUB/UNSUB (through
//! [`Interest`]), and each subscription gets a task of its own that hands its messages to
//! [`super::Deliver`] in arrival order. A task per topic (not per message) keeps per-topic
//! order and wakes only for topics that have traffic.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::{Client, Subscriber};
use futures_util::StreamExt;
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, error};

use super::backplane::Shared;
use super::interest::Interest;

/// Interest changes taken per wake-up: a connect storm is applied in big batches, so the
/// coalescing in [`Interest`] sees it whole.
const BATCH: usize = 4_096;

/// Longest wait for the server to confirm a batch of new subscriptions.
const FLUSH_PATIENCE: Duration = Duration::from_secs(1);

/// One `set_interest` call.
pub(crate) struct InterestChange {
    pub(crate) shard: usize,
    pub(crate) topic: Box<str>,
    pub(crate) on: bool,
}

pub(crate) async fn run(
    shared: Arc<Shared>,
    client: Client,
    mut changes: mpsc::UnboundedReceiver<InterestChange>,
    linger: Duration,
) {
    let mut interest = Interest::new(linger);
    // Per subscribed topic: the switch that stops its receive task.
    let mut live: HashMap<Arc<str>, oneshot::Sender<()>> = HashMap::new();
    let mut batch = Vec::with_capacity(64);
    loop {
        let deadline = interest.next_deadline().map(tokio::time::Instant::from_std);
        tokio::select! {
            n = changes.recv_many(&mut batch, BATCH) => {
                if n == 0 {
                    return; // every handle dropped
                }
                let now = Instant::now();
                for c in batch.drain(..) {
                    interest.apply(c.shard, &c.topic, c.on, now);
                }
            }
            _ = sleep_until(deadline) => {}
        }
        let actions = interest.poll(Instant::now());
        for topic in actions.unsubscribe {
            if let Some(stop) = live.remove(&topic) {
                let _ = stop.send(());
                shared.metrics.unsubscribes.inc();
                debug!(topic = %topic, "unsubscribed (no local interest)");
            }
        }
        let had_subscribes = !actions.subscribe.is_empty();
        for topic in actions.subscribe {
            // Queued in the client's command queue; while disconnected it is sent after
            // the reconnect, together with the re-sent SUBs of the live subscriptions.
            match client.subscribe(shared.subjects.topic(&topic)).await {
                Ok(subscriber) => {
                    let (stop, stopped) = oneshot::channel();
                    live.insert(topic.clone(), stop);
                    tokio::spawn(receive(shared.clone(), topic, subscriber, stopped));
                    shared.metrics.subscribes.inc();
                }
                Err(e) => {
                    // Only an invalid subject (impossible after escaping) or a closed
                    // client get here; interest coming back retries.
                    error!(topic = %topic, error = %e, "backplane cannot subscribe");
                    interest.subscribe_failed(&topic);
                }
            }
        }
        if had_subscribes {
            // A subscription counts once the server has it (a flush is a round trip), so
            // the gauge below means "messages of these topics reach this node". Bounded:
            // during an outage the SUBs go out with the reconnect anyway.
            let _ = tokio::time::timeout(FLUSH_PATIENCE, client.flush()).await;
        }
        shared
            .metrics
            .subscribed_topics
            .set(i64::try_from(interest.subscribed()).unwrap_or(i64::MAX));
    }
}

async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

/// Hands one subscription's messages to the local shards until told to stop.
async fn receive(
    shared: Arc<Shared>,
    topic: Arc<str>,
    mut subscriber: Subscriber,
    mut stop: oneshot::Receiver<()>,
) {
    loop {
        tokio::select! {
            biased;
            // Ok: unsubscribe; Err: the driver is gone (shutdown).
            _ = &mut stop => break,
            message = subscriber.next() => match message {
                Some(message) => shared.on_message(&topic, message),
                None => return, // the client closed
            },
        }
    }
    if let Err(e) = subscriber.unsubscribe().await {
        debug!(topic = %topic, error = %e, "unsubscribe failed");
    }
}
