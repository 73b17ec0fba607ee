//! The soak's publishers: numbered messages for the healthy clients, bulk for the slow
//! readers, each one keep-alive HTTP connection posting at a steady rate (requests
//! pipelined, answers in order) until the run stops publishing.
//!
//! The numbered publisher is what healthy clients check against: [`Seqs::sent`] is
//! raised *before* a message's request is written, so a client that reads it right
//! after its `101` knows every later number was published after it was registered and
//! is owed to it; [`Seqs::acked`] is raised when the server answered `200` (the message
//! is in every shard's inbox), so a client that leaves knows what it must have first.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::Instant;

use super::{C, Shared};
use crate::http1;
use crate::payload::{self, Stamp};
use crate::target::Target;
use crate::{conn, worker::ns_since};

/// Publisher ids in the stamps.
pub(super) const NUMBERED: u16 = 0;
/// The bulk publisher's id.
pub(super) const BULK: u16 = 1;

/// How long a request may wait for its answer before it counts as failed; one slower
/// than [`ANSWER_SLOW`] is only noted.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(30);
/// An answer slower than this is noted.
const ANSWER_SLOW: Duration = Duration::from_secs(5);
/// Pause before reconnecting after a failed request.
const RECONNECT_PAUSE: Duration = Duration::from_millis(100);
/// Requests in flight on the connection (HTTP/1.1 pipelining keeps their order).
const IN_FLIGHT: usize = 64;

/// Where the numbered messages stand.
#[derive(Debug, Default)]
pub struct Seqs {
    /// Highest number whose request has started (numbers start at 1).
    pub sent: AtomicU64,
    /// Highest number the server accepted.
    pub acked: AtomicU64,
}

/// What one publisher posts.
pub(super) struct Feed {
    pub target: Target,
    pub id: u16,
    pub rate: f64,
    pub size: usize,
}

/// What the publisher does next.
enum Step {
    Send,
    Read(std::io::Result<usize>),
    Stuck,
}

/// Posts at `feed.rate` until the run stops publishing, then collects the answers.
/// Requests are pipelined on one connection: the server handles them in order, so
/// numbers reach every shard in order, and the rate holds when answers are slow.
pub(super) async fn run(shared: Arc<Shared>, feed: Feed) {
    if feed.rate <= 0.0 {
        return;
    }
    let numbered = feed.id == NUMBERED;
    let (ok, failed) = match numbered {
        true => (C::Published, C::PublishErrors),
        false => (C::BulkPublished, C::BulkPublishErrors),
    };
    let head = http1::post_head(
        &feed.target.host_header,
        &feed.target.path,
        feed.size,
        None,
        false,
    );
    let mut request = Vec::with_capacity(head.len() + feed.size);
    let start = Instant::now();
    let mut seq = 0u64;
    while shared.publishing() {
        let mut stream = match conn::connect_tcp(feed.target.addr, None).await {
            Ok(s) => s,
            Err(e) => {
                shared.fail(failed, format!("publish: {}", e.reason()));
                tokio::time::sleep(RECONNECT_PAUSE).await;
                continue;
            }
        };
        let (mut rd, mut wr) = stream.split();
        let mut buf = Vec::with_capacity(4096);
        // Numbers in flight, and when each was sent.
        let mut in_flight: VecDeque<(u64, Instant)> = VecDeque::new();
        let lost = loop {
            let publishing = shared.publishing();
            if !publishing && in_flight.is_empty() {
                break None;
            }
            // Open loop: message n is due n / rate seconds after the start.
            let due = start + Duration::from_secs_f64(seq as f64 / feed.rate);
            let oldest = in_flight.front().map_or(due, |(_, at)| *at);
            let step = tokio::select! {
                () = tokio::time::sleep_until(due), if publishing && in_flight.len() < IN_FLIGHT => Step::Send,
                r = rd.read_buf(&mut buf), if !in_flight.is_empty() => Step::Read(r),
                () = tokio::time::sleep_until(oldest + ANSWER_TIMEOUT), if !in_flight.is_empty() => Step::Stuck,
            };
            match step {
                Step::Send => {
                    seq += 1;
                    if numbered && shared.cfg.inject_gap == Some(seq) {
                        seq += 1; // test mode: this number is never published
                    }
                    if numbered {
                        shared.seqs.sent.store(seq, Ordering::SeqCst);
                    }
                    request.clear();
                    request.extend_from_slice(&head);
                    let at = request.len();
                    request.resize(at + feed.size, 0);
                    let stamp = Stamp {
                        step: 0,
                        publisher: feed.id,
                        seq,
                        sent_ns: ns_since(shared.epoch, std::time::Instant::now()),
                    };
                    payload::write(&mut request[at..], stamp);
                    in_flight.push_back((seq, Instant::now()));
                    if let Err(e) = wr.write_all(&request).await {
                        break Some(e.to_string());
                    }
                }
                Step::Read(Ok(0)) => break Some("connection closed".into()),
                Step::Read(Err(e)) => break Some(e.to_string()),
                Step::Read(Ok(_)) => {
                    if let Err(e) = answers(&shared, &mut buf, &mut in_flight, ok, failed) {
                        break Some(e);
                    }
                }
                Step::Stuck => break Some(format!("no answer within {ANSWER_TIMEOUT:?}")),
            }
        };
        if let Some(why) = lost {
            for _ in in_flight.drain(..) {
                shared.fail(failed, format!("publish: {why}"));
            }
            tokio::time::sleep(RECONNECT_PAUSE).await;
        }
    }
}

/// Takes the complete answers off the front of `buf`, each for the oldest request in
/// flight; `Err` when the connection cannot go on.
fn answers(
    shared: &Shared,
    buf: &mut Vec<u8>,
    in_flight: &mut VecDeque<(u64, Instant)>,
    ok: C,
    failed: C,
) -> Result<(), String> {
    while let Some(r) = http1::parse_response(buf)? {
        buf.drain(..r.len);
        if r.interim {
            continue;
        }
        let (seq, sent) = in_flight.pop_front().ok_or("an answer to no request")?;
        if sent.elapsed() > ANSWER_SLOW {
            shared.note(format!("publish: answered after more than {ANSWER_SLOW:?}"));
        }
        if (200..300).contains(&r.status) {
            shared.add(ok, 1);
            if ok == C::Published {
                shared.seqs.acked.store(seq, Ordering::SeqCst);
            }
        } else {
            shared.fail(failed, format!("publish: HTTP {}", r.status));
        }
        if r.close {
            return Err("the server closed the connection".into());
        }
    }
    Ok(())
}
