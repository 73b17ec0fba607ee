//! The backplane handle and its thread: what callers see, and the lifecycle behind it.
//!
//! ```text
//! publish ──try_send──► outgoing queue (bounded) ──► publisher task ──► NATS
//! set_interest ──send──► interest queue (unbounded, rare) ──► receiver task
//!                                        SUB/UNSUB ◄──┘   └──► one task per topic ──► Deliver
//! ```
//! All tasks, and the client's own connection task, run on one thread with a
//! current-thread runtime: the backplane costs at most one core and never touches a shard.

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use tokio::sync::{mpsc, oneshot, watch};
use tracing::{debug, warn};

use super::config::ClusterConfig;
use super::error::ClusterError;
use super::log::{self, Appending, LogConfig};
use super::metrics::{DropReason, Metrics, Stats};
use super::presence::{self, Presence};
use super::publisher::{self, Outgoing};
use super::receiver::{self, InterestChange};
use super::subject::Subjects;
use super::throttle::Throttle;
use super::wire::{self, Rejected};
use super::{Deliver, Kind, State, events};
use crate::engine::backplane::Ack;

/// How often each kind of loss may write a log line.
const LOG_PERIOD: Duration = Duration::from_secs(10);

/// A node's link to the other nodes through NATS. Cheap to clone; every clone drives the
/// same connection. See the [module doc](super) for the guarantees.
///
/// Dropping the last clone without [`Backplane::shutdown`] stops the thread too, but
/// without waiting for it.
#[derive(Clone)]
pub struct Backplane {
    inner: Arc<Inner>,
}

struct Inner {
    shared: Arc<Shared>,
    outgoing: mpsc::Sender<Outgoing>,
    /// Local messages for the shared log, when it is kept.
    appending: Option<mpsc::Sender<Appending>>,
    interest: mpsc::UnboundedSender<InterestChange>,
    life: Mutex<Option<Life>>,
}

/// What `shutdown` needs, taken once.
struct Life {
    stop: oneshot::Sender<()>,
    thread: JoinHandle<()>,
}

/// State shared by the handle and the tasks.
pub(crate) struct Shared {
    pub(crate) node_id: String,
    pub(crate) subjects: Subjects,
    pub(crate) metrics: Metrics,
    state: AtomicU8,
    pub(crate) deliver: Arc<dyn Deliver>,
    /// The other nodes' subscriber counts.
    pub(crate) presence: Presence,
    /// One log throttle per drop reason, indexed by `DropReason as usize`.
    drop_log: [Throttle; DropReason::COUNT],
    /// The log throttle of the history stream's troubles.
    stream_log: Throttle,
}

impl std::fmt::Debug for Backplane {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Backplane")
            .field("node_id", &self.inner.shared.node_id)
            .field("state", &self.state())
            .finish()
    }
}

impl Backplane {
    /// Starts the backplane on its own thread with its own tokio runtime.
    ///
    /// Returns at once, even when no broker is reachable: the client keeps connecting in
    /// the background with backoff, and [`Backplane::state`] says how it goes. Fails only
    /// on configuration that can never work (see [`ClusterError`]).
    pub fn start(
        config: ClusterConfig,
        deliver: Arc<dyn Deliver>,
    ) -> Result<Backplane, ClusterError> {
        let node_id = format!("{:016x}", rand::random::<u64>());
        let prepared = config.prepare(&node_id)?;
        let shared = Arc::new(Shared {
            node_id,
            subjects: prepared.subjects,
            metrics: Metrics::new(),
            state: AtomicU8::new(State::Connecting as u8),
            deliver,
            presence: Presence::default(),
            drop_log: std::array::from_fn(|_| Throttle::new(LOG_PERIOD)),
            stream_log: Throttle::new(LOG_PERIOD),
        });
        let (state_tx, state_rx) = watch::channel(State::Connecting);
        let options = prepared
            .options
            .event_callback(events::callback(shared.clone(), state_tx));
        let (outgoing, outgoing_rx) = mpsc::channel(config.queue_capacity);
        let (appending, appending_rx) = match config.history {
            Some(_) => {
                let (tx, rx) = mpsc::channel(config.queue_capacity);
                (Some(tx), Some(rx))
            }
            None => (None, None),
        };
        let (interest, interest_rx) = mpsc::unbounded_channel();
        let (stop, stop_rx) = oneshot::channel();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;

        // The client must be created inside the runtime (it spawns its connection task);
        // the thread reports back once it exists, which takes no network round trip.
        let (ready_tx, ready_rx) = std::sync::mpsc::sync_channel(1);
        let tasks = Tasks {
            shared: shared.clone(),
            state: state_rx,
            outgoing: outgoing_rx,
            appending: appending_rx,
            history: config.history.clone(),
            interest: interest_rx,
            stop: stop_rx,
            linger: config.linger,
            shutdown_timeout: config.shutdown_timeout,
        };
        let servers = prepared.servers;
        let thread = std::thread::Builder::new()
            .name("hubcast-cluster".into())
            .spawn(move || {
                runtime.block_on(async move {
                    match options.connect(servers).await {
                        Ok(client) => {
                            let _ = ready_tx.send(Ok(()));
                            tasks.run(client).await;
                        }
                        Err(e) => {
                            let _ = ready_tx.send(Err(ClusterError::Client(e.to_string())));
                        }
                    }
                });
                // Dropping the runtime here ends what is left (receive tasks, the
                // client's connection task) and closes the socket.
            })?;
        match ready_rx.recv() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                let _ = thread.join();
                return Err(e);
            }
            Err(_) => {
                let _ = thread.join();
                return Err(ClusterError::Client(
                    "the backplane thread ended while starting".into(),
                ));
            }
        }
        Ok(Backplane {
            inner: Arc::new(Inner {
                shared,
                outgoing,
                appending,
                interest,
                life: Mutex::new(Some(Life { stop, thread })),
            }),
        })
    }

    /// Queues a message for the other nodes. Non-blocking, callable from any thread.
    ///
    /// Never waits on the broker: a full queue, a disconnected broker or a backplane that
    /// was shut down each make a counted drop (`queue_full`, `disconnected`, `shutdown`)
    /// and a rate-limited log line. Messages go out in the order of the calls.
    pub fn publish(&self, topic: &str, kind: Kind, payload: Bytes) {
        let shared = &self.inner.shared;
        if self.inner.outgoing.is_closed() {
            shared.drop_message(DropReason::Shutdown, topic, "the backplane is shut down");
            return;
        }
        if shared.state() != State::Connected {
            shared.drop_message(DropReason::Disconnected, topic, "not connected to NATS");
            return;
        }
        let out = Outgoing {
            // The subject is built here, on the caller's thread, to spread that work.
            subject: shared.subjects.topic(topic),
            kind,
            payload,
            sent_unix_nanos: unix_nanos(),
        };
        match self.inner.outgoing.try_send(out) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(_)) => {
                shared.drop_message(DropReason::QueueFull, topic, "the publish queue is full");
            }
            Err(mpsc::error::TrySendError::Closed(_)) => {
                shared.drop_message(DropReason::Shutdown, topic, "the backplane is shut down");
            }
        }
    }

    /// Whether this backplane keeps the cluster's history in JetStream (see the `log`
    /// module): then local messages go through [`Backplane::append`], not
    /// [`Backplane::publish`].
    pub fn keeps_log(&self) -> bool {
        self.inner.appending.is_some()
    }

    /// Queues a local message for the shared log; `ack` learns its offset (or
    /// [`crate::error::PublishError::Unavailable`]). Non-blocking, callable from any
    /// thread; a full queue or a broken link refuses at once (counted).
    pub fn append(&self, topic: &str, kind: Kind, payload: Bytes, ack: Option<Ack>) {
        let shared = &self.inner.shared;
        let refuse = |ack: Option<Ack>, reason, why| {
            shared.drop_message(reason, topic, why);
            if let Some(ack) = ack {
                let _ = ack.send(Err(crate::error::PublishError::Unavailable));
            }
        };
        let Some(appending) = &self.inner.appending else {
            return refuse(ack, DropReason::Shutdown, "this backplane keeps no log");
        };
        if shared.state() != State::Connected {
            return refuse(ack, DropReason::Disconnected, "not connected to NATS");
        }
        let out = Appending {
            subject: shared.subjects.topic(topic),
            kind,
            payload,
            sent_unix_nanos: unix_nanos(),
            ack,
        };
        match appending.try_send(out) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(out)) => {
                refuse(out.ack, DropReason::QueueFull, "the publish queue is full")
            }
            Err(mpsc::error::TrySendError::Closed(out)) => {
                refuse(out.ack, DropReason::Shutdown, "the backplane is shut down")
            }
        }
    }

    /// Subscribers of `topic` on the other nodes, by their latest reports (see the
    /// `presence` module).
    pub fn remote_subscribers(&self, topic: &str) -> usize {
        self.inner
            .shared
            .presence
            .remote(topic, std::time::Instant::now())
    }

    /// Reports that `shard` now has (`on`) or no longer has (`off`) local subscribers of
    /// `topic`. Non-blocking, callable from any thread; idempotent per (shard, topic).
    ///
    /// The node subscribes at once on the first shard's `on` and unsubscribes once no
    /// shard has had the topic for the configured linger; bursts coalesce into at most one
    /// SUB/UNSUB per topic.
    pub fn set_interest(&self, shard: usize, topic: &str, on: bool) {
        if self.keeps_log() {
            // Every node reads the whole log; per-topic subscriptions would deliver
            // each message a second time.
            return;
        }
        // Fails only after shutdown, when interest no longer matters.
        let _ = self.inner.interest.send(InterestChange {
            shard,
            topic: topic.into(),
            on,
        });
    }

    /// The link to the broker right now.
    pub fn state(&self) -> State {
        self.inner.shared.state()
    }

    /// This node's id, as sent in the `Hubcast-Node` header (16 hex digits, random per
    /// start).
    pub fn node_id(&self) -> &str {
        &self.inner.shared.node_id
    }

    /// The counters at this moment.
    pub fn stats(&self) -> Stats {
        self.inner.shared.metrics.stats()
    }

    /// Appends the `hubcast_backplane_*` metrics in the Prometheus text format (0.0.4),
    /// rendered by `prometheus-client` from the backplane's own registry: ready to be
    /// appended to the rest of `/metrics`.
    pub fn render_metrics(&self, out: &mut String) {
        self.inner.shared.metrics.render(out);
    }

    /// Stops the backplane: refuses new publishes, sends what is queued (waiting at most
    /// the configured `shutdown_timeout`), closes the connection and joins the thread.
    /// Idempotent; must not be called from [`Deliver::deliver`].
    pub fn shutdown(&self) {
        let life = self
            .inner
            .life
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        let Some(life) = life else {
            return;
        };
        let _ = life.stop.send(());
        if life.thread.thread().id() == std::thread::current().id() {
            warn!("Backplane::shutdown called on the backplane's own thread; not waiting for it");
            return;
        }
        if life.thread.join().is_err() {
            warn!("the backplane thread panicked");
        }
    }
}

impl Shared {
    pub(crate) fn state(&self) -> State {
        // Acquire/release: whoever sees a state also sees the counters updated before it.
        match self.state.load(Ordering::Acquire) {
            s if s == State::Connected as u8 => State::Connected,
            s if s == State::Disconnected as u8 => State::Disconnected,
            _ => State::Connecting,
        }
    }

    /// Sets the state, returning the previous one.
    pub(crate) fn set_state(&self, state: State) -> State {
        let previous = self.state.swap(state as u8, Ordering::AcqRel);
        self.metrics
            .connected
            .set(i64::from(state == State::Connected));
        match previous {
            p if p == State::Connected as u8 => State::Connected,
            p if p == State::Disconnected as u8 => State::Disconnected,
            _ => State::Connecting,
        }
    }

    /// Counts a lost message and logs it, at most once per reason per [`LOG_PERIOD`].
    pub(crate) fn drop_message(&self, reason: DropReason, topic: &str, why: &str) {
        self.metrics.drop_one(reason);
        if let Some(suppressed) = self.drop_log[reason as usize].allow() {
            warn!(
                reason = reason.label(),
                topic,
                why,
                similar_drops_since_last_log = suppressed,
                "backplane dropped a message"
            );
        }
    }

    /// Logs a problem with the history stream, at most once per [`LOG_PERIOD`].
    pub(crate) fn log_trouble(&self, why: &str) {
        if let Some(suppressed) = self.stream_log.allow() {
            warn!(why, similar_since_last_log = suppressed, "cluster history");
        }
    }

    /// [`Shared::drop_message`] for a message known by its subject.
    pub(crate) fn drop_subject(&self, reason: DropReason, subject: &str, why: &str) {
        let topic = self.subjects.topic_of(subject);
        self.drop_message(reason, topic.as_deref().unwrap_or(subject), why);
    }

    /// Handles one message from NATS: skip echoes, refuse malformed ones, hand the rest to
    /// the local shards.
    pub(crate) fn on_message(&self, topic: &str, message: async_nats::Message) {
        let accepted =
            match wire::classify(message.headers.as_ref(), &message.payload, &self.node_id) {
                Ok(accepted) => accepted,
                Err(Rejected::Echo) => {
                    self.metrics.echo_skipped.inc();
                    debug!(topic, "skipped own echo");
                    return;
                }
                Err(why) => {
                    self.metrics.received.inc();
                    self.drop_message(DropReason::Malformed, topic, why.describe());
                    return;
                }
            };
        self.metrics.received.inc();
        let handed_at = unix_nanos();
        match self.deliver.deliver(
            topic,
            accepted.kind,
            message.payload,
            accepted.sent_unix_nanos,
        ) {
            Ok(()) => {
                if let Some(sent) = accepted.sent_unix_nanos {
                    // A receiver whose clock is behind the sender's sees 0.
                    let nanos = handed_at.saturating_sub(sent);
                    self.metrics.latency.observe(nanos as f64 / 1e9);
                }
            }
            Err(super::Dropped) => {
                self.drop_message(DropReason::InboxFull, topic, "the local inbox is full");
            }
        }
    }
}

/// Everything the backplane thread runs.
struct Tasks {
    shared: Arc<Shared>,
    state: watch::Receiver<State>,
    outgoing: mpsc::Receiver<Outgoing>,
    appending: Option<mpsc::Receiver<Appending>>,
    history: Option<LogConfig>,
    interest: mpsc::UnboundedReceiver<InterestChange>,
    stop: oneshot::Receiver<()>,
    linger: Duration,
    shutdown_timeout: Duration,
}

impl Tasks {
    async fn run(self, client: async_nats::Client) {
        let (stopping_tx, stopping) = watch::channel(false);
        let mut publisher = tokio::spawn(publisher::run(
            self.shared.clone(),
            client.clone(),
            self.outgoing,
            self.state,
            stopping.clone(),
        ));
        let receiver = tokio::spawn(receiver::run(
            self.shared.clone(),
            client.clone(),
            self.interest,
            self.linger,
        ));
        let presence = tokio::spawn(presence::run(self.shared.clone(), client.clone(), stopping));
        let mut log_tasks = Vec::new();
        if let (Some(config), Some(appending)) = (self.history, self.appending) {
            let js = async_nats::jetstream::new(client.clone());
            log_tasks.push(tokio::spawn(log::append(
                self.shared.clone(),
                client.clone(),
                js.clone(),
                appending,
            )));
            log_tasks.push(tokio::spawn(log::read(
                self.shared.clone(),
                client,
                js,
                config,
            )));
        }
        // `shutdown`, or the last handle dropped (the sender with it).
        tokio::select! {
            _ = self.stop => {}
            // Every handle dropped: the publisher saw its queue close and ended.
            _ = &mut publisher => {}
        }
        let _ = stopping_tx.send(true);
        if !publisher.is_finished()
            && tokio::time::timeout(self.shutdown_timeout, &mut publisher)
                .await
                .is_err()
        {
            warn!(
                timeout = ?self.shutdown_timeout,
                "backplane shutdown: queued messages did not all reach NATS in time and are lost"
            );
        }
        receiver.abort();
        // The last report says this node leaves (bounded like the rest of shutdown).
        let _ = tokio::time::timeout(self.shutdown_timeout, presence).await;
        for task in log_tasks {
            task.abort();
        }
        self.shared.set_state(State::Disconnected);
        debug!("backplane stopped");
    }
}

/// Now, in nanoseconds since the Unix epoch (0 if the clock is before it).
fn unix_nanos() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}
