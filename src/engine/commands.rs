//! Protocol v1 commands of one client, run on its shard: subscribe (with recovery),
//! unsubscribe, publish, presence, and — when auth is configured — connect and refresh.
//!
//! **Grants.** With auth, every command is checked against the client's grant
//! (`engine::grant`): subscribe and presence need the `topics` claim to cover the topic,
//! publish the publish rule; a refusal is error 103 and the connection stays. A client
//! admitted without a token may only `connect` (anything else: error 110) until its
//! deadline; `refresh` swaps the token of a connected client for one of the same subject
//! that still covers every topic it is subscribed to, which moves its expiry.
//!
//! The reader hands every text message of a `hubcast.v1` client here. Replies go through
//! the client's single writer like everything else, so a reply is always in order with
//! the pushes around it.
//!
//! **The switch from replay to live.** A subscribe reads the topic's position and the
//! messages after `since` in one step, under the topic's sequencer lock — every message
//! at or below that position has already been handed to this shard's inbox, every later
//! one has not. The reply and the replay are queued at once; the client joins the topic
//! at the shard's next snapshot rebuild, which happens before its next fan-out, with a
//! *floor* at the position: live pushes at or below it (still in the inbox) are skipped
//! for this client, later ones delivered. No gap, no duplicate, and no O(clients) work
//! per subscribe (the rebuild is shared by every change since the last round).

use std::rc::Rc;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;

use crate::engine::client::Client;
use crate::engine::grant::{AccessState, Grant, TokenError};
use crate::engine::history::Replay;
use crate::engine::hub::check_topic;
use crate::engine::registry::ClientRef;
use crate::engine::shard::Shard;
use crate::error::PublishError;
use crate::wire::frame::{self, Opcode};
use crate::wire::v1::{self, Command, ErrorCode, Malformed, Payload, Request};

/// How long a v1 publish may wait for room in full shard inboxes (like `POST /publish`).
const PUBLISH_PATIENCE: std::time::Duration = std::time::Duration::from_secs(1);

/// How long a subscribe waits for this node to read the shared log up to the client's
/// position (see [`catch_up`]).
const CATCH_UP_PATIENCE: std::time::Duration = std::time::Duration::from_secs(2);

/// A command stream the connection cannot go on with: close code and reason.
pub(crate) type Violation = (u16, &'static str);

/// Runs one message of a v1 client. Only garbage that is not JSON at all ends the
/// connection; a malformed command gets an error reply.
pub(crate) async fn handle(
    shard: &Rc<Shard>,
    who: ClientRef,
    text: &[u8],
) -> Result<(), Violation> {
    let Request { id, command } = match v1::parse(text) {
        Ok(r) => r,
        Err(Malformed::NotJson) => return Err((1002, "hubcast.v1 messages are JSON commands")),
        Err(Malformed::BadCommand { id, message }) => {
            reply(
                shard,
                who,
                v1::error(id, ErrorCode::BadCommand, Some(&message)),
            );
            return Ok(());
        }
    };
    // With auth, a connection admitted without a token may only connect.
    let pending = match shard.registry.borrow_mut().get_mut(who) {
        Some(c) => c.access.is_some() && c.grant().is_none(),
        None => return Ok(()),
    };
    let answer = match command {
        Command::Connect { token } => connect(shard, who, id, &token),
        Command::Refresh { token } => refresh(shard, who, id, &token),
        _ if pending => v1::error(Some(id), ErrorCode::Unauthenticated, None),
        Command::Subscribe { topic, since } => {
            let since = since.as_ref().map(|s| (s.offset, s.epoch.as_str()));
            if let Some((offset, _)) = since {
                catch_up(shard, offset).await;
            }
            subscribe(shard, who, id, &topic, since);
            return Ok(());
        }
        Command::Unsubscribe { topic } => unsubscribe(shard, who, id, &topic),
        Command::Publish { topic, payload } => publish(shard, who, id, &topic, payload).await,
        Command::Presence { topic } => {
            if check_topic(&topic).is_err() {
                v1::error(Some(id), ErrorCode::BadTopic, None)
            } else if !allowed(shard, who, |c| c.may_subscribe(&topic)) {
                v1::error(Some(id), ErrorCode::PermissionDenied, Some(NOT_GRANTED))
            } else {
                v1::presence(id, &topic, shard.hub.presence(&topic) as u64)
            }
        }
    };
    reply(shard, who, answer);
    Ok(())
}

/// Error 103's message when the token does not cover the topic.
const NOT_GRANTED: &str = "the token does not grant this topic";

/// Whether the client passes `check` (false when it is gone).
fn allowed(shard: &Shard, who: ClientRef, check: impl FnOnce(&Client) -> bool) -> bool {
    shard
        .registry
        .borrow_mut()
        .get_mut(who)
        .is_some_and(|c| check(c))
}

fn reply(shard: &Rc<Shard>, who: ClientRef, json: impl AsRef<[u8]>) {
    shard.send_frame(who, &frame::encode(Opcode::Text, json.as_ref()));
}

/// With a cluster's shared log, a client moving from another node may hold a position
/// this node has not read the log to yet (nodes read it at slightly different times):
/// wait, briefly, until it has — the recovery then decides on what this node knows. A
/// position the log never reaches in time is judged as it stands (unrecoverable).
async fn catch_up(shard: &Rc<Shard>, since: u64) {
    let history = shard.hub.history();
    if !history.is_external() || since <= history.watermark() {
        return;
    }
    let deadline = Instant::now() + CATCH_UP_PATIENCE;
    while history.watermark() < since && Instant::now() < deadline {
        // Nodes trail each other by a broker hop; this runs only in that window.
        tokio::time::sleep(std::time::Duration::from_millis(1)).await;
    }
}

fn subscribe(shard: &Rc<Shard>, who: ClientRef, id: u64, topic: &str, since: Option<(u64, &str)>) {
    let cfg = &shard.hub.inner.config;
    let refuse = |code| reply(shard, who, v1::error(Some(id), code, None));
    if check_topic(topic).is_err() {
        return refuse(ErrorCode::BadTopic);
    }
    {
        let mut reg = shard.registry.borrow_mut();
        let Some(c) = reg.get_mut(who) else { return };
        if !c.may_subscribe(topic) {
            drop(reg);
            return reply(
                shard,
                who,
                v1::error(Some(id), ErrorCode::PermissionDenied, Some(NOT_GRANTED)),
            );
        }
        if c.has_topic(topic) {
            drop(reg);
            return refuse(ErrorCode::AlreadySubscribed);
        }
        if c.topics.len() >= cfg.max_topics_per_client {
            drop(reg);
            return refuse(ErrorCode::TooManyTopics);
        }
    }
    let rec = shard
        .hub
        .history()
        .recover(topic, since, cfg.max_recovery, Instant::now());
    let (recovered, replay) = match rec.replay {
        Replay::NotAsked => (None, Vec::new()),
        Replay::Complete(entries) => (Some(true), entries),
        Replay::Unrecoverable => (Some(false), Vec::new()),
    };
    // The reply, then the replay, as one buffer: nothing can come between them.
    let mut frames: Vec<Bytes> = Vec::with_capacity(1 + replay.len());
    frames.push(frame::encode(
        Opcode::Text,
        v1::subscribed(id, topic, rec.offset, &rec.epoch, recovered).as_ref(),
    ));
    for e in &replay {
        frames.push(frame::encode(
            Opcode::Text,
            &v1::push(topic, e.offset, e.opcode, &e.payload),
        ));
    }
    let metrics = shard.metrics();
    metrics.recoveries.fetch_add(
        u64::from(recovered == Some(true)),
        std::sync::atomic::Ordering::Relaxed,
    );
    metrics.unrecovered.fetch_add(
        u64::from(recovered == Some(false)),
        std::sync::atomic::Ordering::Relaxed,
    );
    {
        let mut reg = shard.registry.borrow_mut();
        let interned: Arc<str> = reg.intern(topic);
        let Some(c) = reg.get_mut(who) else { return };
        c.subscribe(interned, rec.offset);
        reg.note_change(who.key);
    }
    shard.send_frame(who, &frame::join(&frames));
    shard.changed();
}

fn unsubscribe(shard: &Rc<Shard>, who: ClientRef, id: u64, topic: &str) -> Vec<u8> {
    let mut reg = shard.registry.borrow_mut();
    let Some(c) = reg.get_mut(who) else {
        return Vec::new();
    };
    if !c.unsubscribe(topic) {
        return v1::error(Some(id), ErrorCode::NotSubscribed, None);
    }
    reg.note_change(who.key);
    drop(reg);
    shard.changed();
    v1::unsubscribed(id, topic)
}

async fn publish(
    shard: &Rc<Shard>,
    who: ClientRef,
    id: u64,
    topic: &str,
    payload: Payload,
) -> Vec<u8> {
    let hub = &shard.hub;
    let feed = hub.inner.config.feed;
    if !allowed(shard, who, |c| c.may_publish(topic, feed)) {
        let why = if hub.verifier().is_some() {
            "the token does not allow publishing to this topic"
        } else {
            "this server is a feed"
        };
        return v1::error(Some(id), ErrorCode::PermissionDenied, Some(why));
    }
    let (opcode, bytes) = match &payload {
        Payload::Text(t) => (Opcode::Text, t.as_bytes()),
        Payload::Binary(b) => (Opcode::Binary, b.as_slice()),
    };
    shard
        .metrics()
        .messages_in
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    match hub
        .publish_message_wait(topic, opcode, bytes, PUBLISH_PATIENCE)
        .await
    {
        Ok(r) => v1::published(id, topic, r.offset),
        Err(PublishError::InvalidTopic) => v1::error(Some(id), ErrorCode::BadTopic, None),
        Err(PublishError::TooLarge { .. }) => v1::error(Some(id), ErrorCode::MessageTooLarge, None),
        Err(PublishError::Overloaded { .. }) => v1::error(Some(id), ErrorCode::Overloaded, None),
        Err(PublishError::ShuttingDown) => v1::error(Some(id), ErrorCode::ShuttingDown, None),
        Err(PublishError::Unavailable) => v1::error(Some(id), ErrorCode::Unavailable, None),
    }
}

/// `connect`: a connection admitted without a token presents one. On success the grant
/// applies and the reply names the subject and expiry; on failure (error 111) the client
/// may try again until its deadline.
fn connect(shard: &Rc<Shard>, who: ClientRef, id: u64, token: &str) -> Vec<u8> {
    let Some(verifier) = shard.hub.verifier() else {
        return v1::error(Some(id), ErrorCode::BadCommand, Some(NO_AUTH));
    };
    if allowed(shard, who, |c| c.grant().is_some()) {
        return v1::error(
            Some(id),
            ErrorCode::BadCommand,
            Some("already connected: use refresh to change the token"),
        );
    }
    match verifier.verify(token) {
        Ok(verified) => apply_grant(shard, who, id, verified.grant),
        Err(e) => v1::error(Some(id), ErrorCode::InvalidToken, Some(&e.to_string())),
    }
}

/// `refresh`: a connected client swaps its token before it expires. The new token must
/// be valid, name the same subject, and still grant every topic the client is
/// subscribed to (error 103 otherwise: unsubscribe first); its `exp` becomes the
/// connection's deadline, and its claims apply from now on.
fn refresh(shard: &Rc<Shard>, who: ClientRef, id: u64, token: &str) -> Vec<u8> {
    let Some(verifier) = shard.hub.verifier() else {
        return v1::error(Some(id), ErrorCode::BadCommand, Some(NO_AUTH));
    };
    let subject = {
        let mut reg = shard.registry.borrow_mut();
        match reg
            .get_mut(who)
            .map(|c| c.grant().map(|g| g.subject.clone()))
        {
            Some(Some(subject)) => subject,
            Some(None) => return v1::error(Some(id), ErrorCode::Unauthenticated, None),
            None => return Vec::new(),
        }
    };
    let new = match verifier.verify(token) {
        Ok(v) if v.grant.subject == subject => v.grant,
        Ok(_) => {
            let message = TokenError::OtherSubject.to_string();
            return v1::error(Some(id), ErrorCode::InvalidToken, Some(&message));
        }
        Err(e) => return v1::error(Some(id), ErrorCode::InvalidToken, Some(&e.to_string())),
    };
    if !allowed(shard, who, |c| {
        c.topics.iter().all(|t| new.may_subscribe(t))
    }) {
        return v1::error(
            Some(id),
            ErrorCode::PermissionDenied,
            Some("the new token does not grant every subscribed topic"),
        );
    }
    apply_grant(shard, who, id, new)
}

/// Error 100's message for `connect` and `refresh` on a server without auth.
const NO_AUTH: &str = "this server does not use tokens";

/// Gives the client `grant` (from `connect` or `refresh`), moves its deadline and
/// answers with the subject and expiry.
fn apply_grant(shard: &Rc<Shard>, who: ClientRef, id: u64, grant: Grant) -> Vec<u8> {
    let answer = v1::authenticated(id, &grant.subject, grant.expires);
    tracing::debug!(
        client = who.id,
        sub = &*grant.subject,
        "client authenticated"
    );
    {
        let mut reg = shard.registry.borrow_mut();
        let Some(access) = reg.get_mut(who).and_then(|c| c.access.as_deref_mut()) else {
            return Vec::new();
        };
        access.state = AccessState::Granted(grant);
    }
    shard.access_changed(who);
    answer
}
