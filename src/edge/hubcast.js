/*
 * hubcast.js — a dependency-free browser client for hubcast's protocol v1 (the
 * `hubcast.v1` WebSocket subprotocol, see docs/protocol.md). Served at /hubcast.js.
 *
 * A classic script, not a module: `<script src="/hubcast.js"></script>` defines
 * `window.Hubcast` (in a worker, `importScripts("/hubcast.js")` defines it on `self`).
 *
 *   const hc = new Hubcast("/ws", { onState(state, info) {} });
 *   const sub = hc.subscribe("prices", {
 *     onMessage(data, { topic, offset }) {},          // each push, in offset order
 *     onSubscribed({ offset, epoch, recovered }) {},  // after every (re)subscribe
 *     onError(err) {},                                // subscribe refused (err.code)
 *   });
 *   const { offset } = await hc.publish("prices", { EURUSD: 1.0842 });
 *   const n = await hc.presence("prices");            // subscribers of the topic
 *   await sub.unsubscribe();
 *   hc.close();
 *
 * - States (`onState(state, info)`, also `hc.state`): "connecting", "open",
 *   "reconnecting" (waiting `info.delay` ms before attempt `info.attempt`), "closed"
 *   (after `close()` only: every other loss of the connection is retried forever).
 * - Reconnects back off exponentially with full jitter: attempt n waits a uniformly
 *   random time in [0, min(maxDelay, minDelay·2^n)], so clients that lost the same
 *   server do not all come back in the same instant. A successful open resets n.
 * - Recovery: the client remembers, per topic, the {offset, epoch} of the last message
 *   it saw and re-subscribes with it as `since` on every reconnect. The server then
 *   replays what was missed right after its reply (`recovered: true`), or cannot
 *   (`recovered: false`: history too short or lost — resync from elsewhere).
 *   `recovered` is null on the first subscribe, when there is nothing to recover.
 * - Requests (publish, presence, unsubscribe) are rejected at once when not connected,
 *   and after `timeout` ms without a reply. A subscribe without a reply in time means
 *   the server is not serving us: the connection is dropped and re-established.
 * - Data: a push's `data` is the published JSON value (text that is not JSON arrives as
 *   a string); binary messages arrive as a Uint8Array. Errors carry the protocol's
 *   `code` (e.g. 101 bad topic, 102 too many topics, 107 message too large).
 * - One subscription per topic per client; subscribing twice throws.
 * - Auth (a server run with --jwt-*): pass `token`, a string or a function returning
 *   one (or a Promise of one). It is sent as the first command (`connect`) on every
 *   (re)connect, so it never appears in a URL or a log; the client is "open" once the
 *   server accepted it. Before the token's `exp` the function is called again and the
 *   new token sent as `refresh`, so the connection outlives any one token. A refused
 *   token is reported to `onAuthError(err)` (err.code 111) and retried on reconnect.
 */
(function (root) {
  "use strict";

  const PROTOCOL = "hubcast.v1";
  const DEFAULTS = {
    minDelay: 500, // ms: the first reconnect waits up to this...
    maxDelay: 20000, // ...doubling per failed attempt, up to this
    timeout: 10000, // ms: a request without a reply by then is rejected
    refreshBefore: 30000, // ms before a token's exp to fetch and send the next one
  };

  /** "/ws" or "http://host/ws" (resolved against the page) → "ws://host/ws". */
  function wsUrl(url) {
    const u = new URL(url, root.location && root.location.href);
    if (u.protocol === "http:") u.protocol = "ws:";
    if (u.protocol === "https:") u.protocol = "wss:";
    return u.href;
  }

  /** Standard base64 (a binary push's `b64`) → bytes. */
  function fromBase64(b64) {
    const s = atob(b64);
    const bytes = new Uint8Array(s.length);
    for (let i = 0; i < s.length; i++) bytes[i] = s.charCodeAt(i);
    return bytes;
  }

  /** Calls an application callback; if it throws, reports it without breaking us. */
  function call(fn, ...args) {
    if (!fn) return;
    try {
      fn(...args);
    } catch (e) {
      setTimeout(() => {
        throw e;
      });
    }
  }

  /** A subscription: handed to the caller, remembered by the client across reconnects. */
  class Subscription {
    constructor(client, topic, handlers) {
      this.client = client;
      this.topic = topic;
      this.handlers = handlers;
      this.offset = null; // last position seen: where to resume after a reconnect
      this.epoch = null; // null until the first subscribe reply
      this.live = false; // acknowledged on the current connection: pushes are ours
      this.active = true; // false once unsubscribed or refused
    }

    /** Stops the subscription. Resolves once the server confirmed or the connection is
     *  gone (which ends it too); never rejects. */
    unsubscribe() {
      return this.client._unsubscribe(this);
    }
  }

  class Hubcast {
    constructor(url, options = {}) {
      this.url = wsUrl(url);
      this.options = Object.assign({}, DEFAULTS, options);
      this.state = null;
      this.subs = new Map(); // topic → Subscription
      this.pending = new Map(); // request id → { resolve, reject, timer }
      this.nextId = 1;
      this.attempt = 0; // failed attempts since the last open
      this.ws = null;
      this.timer = null; // the pending reconnect
      this.refreshTimer = null; // the pending token refresh
      this.closed = false;
      // Back online: no need to wait out the backoff.
      this._online = () => {
        if (this.state === "reconnecting") this._reconnectNow();
      };
      if (root.addEventListener) root.addEventListener("online", this._online);
      this._connect();
    }

    subscribe(topic, handlers = {}) {
      if (this.closed) throw new Error("hubcast: client is closed");
      if (this.subs.has(topic)) throw new Error(`hubcast: already subscribed to ${topic}`);
      const sub = new Subscription(this, topic, handlers);
      this.subs.set(topic, sub);
      if (this.state === "open") this._sendSubscribe(sub); // else: sent on open
      return sub;
    }

    publish(topic, data) {
      return this._request({ publish: { topic, data } }).then((r) => ({ offset: r.offset }));
    }

    presence(topic) {
      return this._request({ presence: { topic } }).then((r) => r.subscribers);
    }

    /** Closes for good: no reconnect; pending requests are rejected. */
    close() {
      if (this.closed) return;
      this.closed = true;
      clearTimeout(this.timer);
      if (root.removeEventListener) root.removeEventListener("online", this._online);
      this._teardown(this.ws, "client closed");
      this._setState("closed", {});
    }

    /** Test hook: drops the connection the way a network failure would. The client is
     *  not told it was on purpose, so it reconnects and recovers by itself. */
    _dropForTest() {
      this._teardown(this.ws, "dropped for a test");
    }

    _setState(state, info) {
      this.state = state;
      call(this.options.onState, state, info);
    }

    _connect() {
      this.timer = null;
      this._setState("connecting", { attempt: this.attempt });
      let ws;
      try {
        ws = new WebSocket(this.url, PROTOCOL);
      } catch (e) {
        // A malformed URL: retrying cannot help, but keep the contract (never give up).
        this._scheduleReconnect();
        return;
      }
      this.ws = ws;
      ws.onopen = () => {
        if (!this.options.token) return this._opened();
        // Authenticate first: until `connect` succeeds the server takes nothing else.
        this._authenticate(ws, "connect").then(
          () => this._opened(),
          (err) => {
            call(this.options.onAuthError, err);
            this._teardown(ws, `connect refused: ${err.message}`);
          },
        );
      };
      ws.onmessage = (e) => this._onMessage(e.data);
      // Every failure (refused, lost, closed by the server) ends in `close`; `error`
      // carries nothing more, so it is not listened to.
      ws.onclose = (e) => this._teardown(ws, `closed (${e.code})`);
    }

    _opened() {
      this.attempt = 0;
      this._setState("open", {});
      for (const sub of this.subs.values()) this._sendSubscribe(sub);
    }

    /** Gets a token from the `token` option and sends it as `connect` or `refresh` on
     *  `ws`; on success, schedules the next refresh before the token's `exp`. */
    _authenticate(ws, verb) {
      const source = this.options.token;
      return Promise.resolve(typeof source === "function" ? source() : source)
        .then((token) => this._send(ws, { [verb]: { token: String(token) } }))
        .then((r) => {
          if (ws !== this.ws) return r;
          clearTimeout(this.refreshTimer);
          const left = r.exp * 1000 - Date.now();
          // A fixed token cannot be renewed: the server will close at exp, and the
          // reconnect sends it again (refused if it expired: onAuthError).
          if (typeof source === "function" && left > 0) {
            const at = Math.max(left / 2, left - this.options.refreshBefore);
            this.refreshTimer = setTimeout(() => {
              this._authenticate(ws, "refresh").catch((err) => {
                call(this.options.onAuthError, err);
              });
            }, at);
          }
          return r;
        });
    }

    /** Forgets `ws` (if it is still the current socket), fails what waited on it and,
     *  unless the client was closed, schedules the next attempt. */
    _teardown(ws, why) {
      if (!ws || ws !== this.ws) return; // a late event of an old socket
      this.ws = null;
      clearTimeout(this.refreshTimer);
      ws.onopen = ws.onmessage = ws.onclose = null;
      if (ws.readyState <= WebSocket.OPEN) ws.close();
      for (const sub of this.subs.values()) sub.live = false;
      for (const p of this.pending.values()) {
        clearTimeout(p.timer);
        p.reject(new Error(`hubcast: connection lost: ${why}`));
      }
      this.pending.clear();
      if (!this.closed) this._scheduleReconnect();
    }

    _scheduleReconnect() {
      const { minDelay, maxDelay } = this.options;
      const delay = Math.random() * Math.min(maxDelay, minDelay * 2 ** this.attempt);
      this.attempt++;
      this.timer = setTimeout(() => this._connect(), delay);
      this._setState("reconnecting", { attempt: this.attempt, delay });
    }

    _reconnectNow() {
      clearTimeout(this.timer);
      this._connect();
    }

    /** Sends one command; resolves with its `result`, rejects with its `error`. */
    _request(command, onTimeout) {
      if (this.state !== "open") {
        return Promise.reject(new Error(`hubcast: not connected (${this.state})`));
      }
      return this._send(this.ws, command, onTimeout);
    }

    /** Sends one command on `ws` whatever the state (`connect` goes before "open"). */
    _send(ws, command, onTimeout) {
      if (ws !== this.ws || ws.readyState !== WebSocket.OPEN) {
        return Promise.reject(new Error("hubcast: connection lost"));
      }
      const id = this.nextId++;
      const text = JSON.stringify(Object.assign({ id }, command));
      return new Promise((resolve, reject) => {
        const timer = setTimeout(() => {
          this.pending.delete(id);
          reject(new Error("hubcast: no reply in time"));
          if (onTimeout) onTimeout();
        }, this.options.timeout);
        this.pending.set(id, { resolve, reject, timer });
        ws.send(text);
      });
    }

    _sendSubscribe(sub) {
      const ws = this.ws;
      const resuming = sub.epoch !== null;
      const command = { topic: sub.topic };
      if (resuming) command.since = { offset: sub.offset, epoch: sub.epoch };
      this._request({ subscribe: command }, () => this._teardown(ws, "subscribe timed out")).then(
        (r) => {
          if (!sub.active) return; // unsubscribed while waiting
          // With recovered:true the missed pushes follow this reply and advance
          // `offset` themselves; otherwise live pushes continue from the reply's offset.
          if (!r.recovered) sub.offset = r.offset;
          sub.epoch = r.epoch;
          sub.live = true;
          const recovered = resuming ? r.recovered === true : null;
          call(sub.handlers.onSubscribed, { offset: r.offset, epoch: r.epoch, recovered });
        },
        (err) => {
          // Lost connection or timeout: the next connection subscribes again.
          if (err.code === undefined || !sub.active) return;
          sub.active = false;
          if (this.subs.get(sub.topic) === sub) this.subs.delete(sub.topic);
          if (sub.handlers.onError) call(sub.handlers.onError, err);
          else console.warn(`hubcast: subscribe ${sub.topic}:`, err);
        },
      );
    }

    _unsubscribe(sub) {
      if (!sub.active) return Promise.resolve();
      sub.active = false;
      sub.live = false;
      if (this.subs.get(sub.topic) === sub) this.subs.delete(sub.topic);
      if (this.state !== "open") return Promise.resolve(); // the server forgot it already
      const done = () => undefined;
      return this._request({ unsubscribe: { topic: sub.topic } }).then(done, done);
    }

    _onMessage(text) {
      let m;
      try {
        m = JSON.parse(text);
      } catch (e) {
        return; // a v1 server sends only JSON text
      }
      if (m.id !== undefined) {
        const p = this.pending.get(m.id);
        if (!p) return; // timed out already
        this.pending.delete(m.id);
        clearTimeout(p.timer);
        if (m.error) {
          const err = new Error(`hubcast: ${m.error.message}`);
          err.code = m.error.code;
          p.reject(err);
        } else {
          p.resolve(m.result);
        }
        return;
      }
      if (m.error) {
        console.warn("hubcast: error without id:", m.error);
        return;
      }
      // A push. The server sends none of a topic before its subscribe reply, so a push
      // for a subscription not yet acknowledged belongs to an older one: dropped.
      const sub = this.subs.get(m.topic);
      if (!sub || !sub.live) return;
      sub.offset = m.offset;
      const data = m.b64 !== undefined ? fromBase64(m.b64) : m.data;
      call(sub.handlers.onMessage, data, { topic: m.topic, offset: m.offset });
    }
  }

  root.Hubcast = Hubcast;
})(typeof self !== "undefined" ? self : globalThis);
