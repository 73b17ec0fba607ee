//! Property-based fuzzing of everything a peer can send: HTTP request heads, WebSocket
//! frames and protocol v1 commands. Generated inputs go to a real server over real
//! sockets (or to the public codec), and each property says what must happen — checked
//! against a model written from the RFCs and docs/protocol.md, not from the code.
//!
//! - [`handshake`]: arbitrary bytes and request heads as an HTTP request.
//! - [`frames`]: valid frame streams split anywhere, and garbage, on a real connection.
//! - [`v1`]: `wire::v1::parse` on arbitrary text and JSON, and the encoders' round trips.
//!
//! Settings (`src/fuzzing.rs`, shared with the unit properties): a bounded number of
//! cases per property so this file stays well under a minute in a debug build on two
//! busy cores; `PROPTEST_CASES=N` runs N of each for a deeper search. No failure
//! persistence: a failure prints its shrunk input, and a real finding becomes a named
//! regression test next to the code it fixed.
//!
//! Every server-side property also checks that no shard thread panicked and that a
//! bystander client, connected throughout, still gets its stream.

mod common;
#[path = "../src/fuzzing.rs"]
mod fuzzing;

// Crate roots find modules beside them, so the parts under tests/fuzz/ are named.
#[path = "fuzz/frames.rs"]
mod frames;
#[path = "fuzz/handshake.rs"]
mod handshake;
#[path = "fuzz/v1.rs"]
mod v1;

use std::sync::Once;
use std::sync::atomic::{AtomicUsize, Ordering};

use common::*;
use proptest::strategy::Strategy;
use proptest::test_runner::{TestCaseResult, TestRunner};

/// Panics on hubcast's shard threads, in this whole test binary. A panic in a
/// connection's task ends only that task, so without this it could hide behind a
/// dropped connection.
static SHARD_PANICS: AtomicUsize = AtomicUsize::new(0);

fn count_shard_panics() {
    static HOOK: Once = Once::new();
    HOOK.call_once(|| {
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let thread = std::thread::current();
            if thread
                .name()
                .is_some_and(|n| n.starts_with("hubcast-shard"))
            {
                SHARD_PANICS.fetch_add(1, Ordering::SeqCst);
            }
            default(info);
        }));
    });
}

/// Runs a property over real sockets: each case is one `check` on a shared runtime.
/// Shrinking a failure re-runs cases against the live server, so it is bounded.
///
/// The runner gets a thread with a large stack: debug builds keep several copies of
/// the harness's futures (a 64 KiB read buffer each) on the stack while polling them,
/// under proptest's own frames.
fn check_cases<S: Strategy + Send>(
    cases: u32,
    strategy: S,
    check: impl AsyncFn(S::Value) -> TestCaseResult + Send,
) {
    count_shard_panics();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let mut config = fuzzing::config(cases);
    config.max_shrink_time = 60_000;
    std::thread::scope(|scope| {
        let run = std::thread::Builder::new()
            .stack_size(64 << 20)
            .spawn_scoped(scope, move || {
                let mut runner = TestRunner::new(config);
                let result = runner.run(&strategy, |v| rt.block_on(Box::pin(check(v))));
                result.map_err(|e| format!("{e}\n{runner}"))
            })
            .expect("spawn the runner");
        if let Err(e) = run.join().expect("the runner returns") {
            panic!("{e}");
        }
    });
    assert_eq!(
        SHARD_PANICS.load(Ordering::SeqCst),
        0,
        "a shard thread panicked"
    );
}

/// [`check_cases`] beside a [`Bystander`], which is sent a message after every case and
/// must have them all, in order, at the end.
fn check_cases_beside_a_bystander<S: Strategy + Send>(
    server: &TestServer,
    cases: u32,
    strategy: S,
    check: impl AsyncFn(S::Value) -> TestCaseResult + Send + Sync,
) {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let bystander = std::sync::Mutex::new(rt.block_on(Bystander::connect(server, "calm")));
    check_cases(cases, strategy, async |value| {
        check(value).await?;
        bystander.lock().expect("not poisoned").publish(server);
        Ok(())
    });
    let bystander = bystander.into_inner().expect("not poisoned");
    rt.block_on(bystander.still_served());
}

/// A client on its own topic that must keep its stream whatever the others send.
struct Bystander {
    topic: String,
    raw: Raw,
    sent: u64,
}

impl Bystander {
    async fn connect(server: &TestServer, topic: &str) -> Bystander {
        let raw = Raw::connect(server.addr, &format!("?topic={topic}")).await;
        Bystander {
            topic: topic.to_owned(),
            raw,
            sent: 0,
        }
    }

    /// Publishes the next message of its stream (call between cases).
    fn publish(&mut self, server: &TestServer) {
        self.sent += 1;
        let text = format!("calm {}", self.sent);
        server.hub.publish(&self.topic, &text).expect("publish");
    }

    /// Every message published so far arrived, in order, and nothing else.
    async fn still_served(mut self) {
        for n in 1..=self.sent {
            let frame = loop {
                match self.raw.frame().await.expect("the bystander's stream") {
                    (_, 0x9 | 0xA, _) => continue,
                    other => break other,
                }
            };
            assert_eq!(frame, (true, 0x1, format!("calm {n}").into_bytes()));
        }
    }
}
