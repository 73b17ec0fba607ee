//! The connection's life as the NATS client reports it, turned into state, counters and
//! one log line per change.
//!
//! What async-nats 0.51 reports (read from its source): `Connected` after every successful
//! connect (the first one too), `Disconnected` once when a live connection breaks, then —
//! while it retries with backoff — one `ClientError` per failed round over the servers;
//! `SlowConsumer(sid)` per message it drops because a subscription's buffer is full,
//! `ServerError` for `-ERR` lines (permissions, auth), `LameDuckMode` when the server is
//! about to leave. The client itself logs every event at INFO under the `async_nats`
//! target; the lines here are the ones meant for operators.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use async_nats::Event;
use tokio::sync::watch;
use tracing::{debug, info, warn};

use super::State;
use super::backplane::Shared;
use super::metrics::DropReason;
use super::throttle::Throttle;

/// Repeated failures while reconnecting: one line per minute at most.
const RETRY_LOG_PERIOD: Duration = Duration::from_secs(60);

/// The `event_callback` of the backplane's client. It runs on the backplane thread and
/// only does bookkeeping, so it returns a future that is already complete.
pub(crate) fn callback(
    shared: Arc<Shared>,
    state: watch::Sender<State>,
) -> impl Fn(Event) -> std::future::Ready<()> + Send + Sync + 'static {
    let link = Link {
        shared,
        state,
        ever_connected: AtomicBool::new(false),
        retry_log: Throttle::new(RETRY_LOG_PERIOD),
        server_error_log: Throttle::new(RETRY_LOG_PERIOD),
    };
    move |event| {
        link.on_event(event);
        std::future::ready(())
    }
}

struct Link {
    shared: Arc<Shared>,
    /// The same state as `Shared::state`, for tasks that wait for a change.
    state: watch::Sender<State>,
    ever_connected: AtomicBool,
    retry_log: Throttle,
    server_error_log: Throttle,
}

impl Link {
    fn on_event(&self, event: Event) {
        match event {
            Event::Connected => {
                // After a change, the next failure is news again.
                self.retry_log.reset();
                if self.shared.state() == State::Connected {
                    return;
                }
                let reconnect = self.ever_connected.swap(true, Ordering::Relaxed);
                // Counted before the state flips, so whoever sees `Connected` sees the count.
                if reconnect {
                    self.shared.metrics.reconnects.inc();
                }
                self.set(State::Connected);
                if reconnect {
                    info!(
                        node = %self.shared.node_id,
                        "backplane reconnected to NATS (subscriptions re-sent; messages published meanwhile were not carried)"
                    );
                } else {
                    info!(node = %self.shared.node_id, "backplane connected to NATS");
                }
            }
            Event::Disconnected => {
                let previous = self.set(State::Disconnected);
                self.retry_log.reset();
                if previous != State::Disconnected {
                    warn!(
                        node = %self.shared.node_id,
                        "backplane disconnected from NATS; publishes are dropped until it reconnects"
                    );
                }
            }
            Event::ClientError(e) => {
                if let Some(suppressed) = self.retry_log.allow() {
                    warn!(
                        error = %e,
                        failures_since_last_log = suppressed,
                        "backplane cannot reach NATS; retrying in the background"
                    );
                }
            }
            Event::ServerError(e) => {
                if let Some(suppressed) = self.server_error_log.allow() {
                    warn!(error = %e, errors_since_last_log = suppressed, "NATS server error");
                }
            }
            Event::SlowConsumer(sid) => {
                self.shared.drop_message(
                    DropReason::SlowConsumer,
                    "",
                    &format!("NATS subscription {sid} overflowed its buffer"),
                );
            }
            Event::LameDuckMode => {
                info!("NATS server entering lame duck mode; the client will move to another");
            }
            Event::Draining | Event::Closed => debug!(%event, "NATS client"),
        }
    }

    fn set(&self, state: State) -> State {
        self.state.send_replace(state);
        self.shared.set_state(state)
    }
}
