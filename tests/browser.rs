//! The browser client (`/hubcast.js`) and the demo page (`/`) in a real headless
//! Chromium, driven by Playwright for Python (`tests/python/browser_test.py`): subscribe
//! through the page, receive with offsets, lose the connection, miss messages while it
//! is down, and see them replayed after the automatic reconnect ("recovered"); with
//! compression on, Chromium negotiates permessage-deflate and gets a large message
//! compressed and intact. `tests/python/browser_auth_test.py` checks the client's JWT
//! support: a token sent as `connect`, refreshed before it expires, a bad one refused.
//!
//! Needs Debian's `chromium` at `/usr/bin/chromium` and Playwright in the interpreter
//! named by `HUBCAST_PYTHON`; `scripts/test` installs both. Without them this test
//! fails (it never skips), saying what is missing.

mod common;

use std::io::Read;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::start;

const CHROMIUM: &str = "/usr/bin/chromium";

/// A backstop for the whole script: each of its waits is bounded (20 s) on its own.
const SCRIPT_DEADLINE: Duration = Duration::from_secs(180);

/// Reads a child's pipe to the end on a thread (so a full pipe never blocks the child).
fn drain(mut pipe: impl Read + Send + 'static) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut bytes = Vec::new();
        let _ = pipe.read_to_end(&mut bytes);
        let _ = tx.send(String::from_utf8_lossy(&bytes).into_owned());
    });
    rx
}

/// Runs one Playwright script (in `tests/python/`) with `args`, and fails the test with
/// its output unless it exits 0 within [`SCRIPT_DEADLINE`].
fn run_script(name: &str, args: &[&str]) {
    assert!(
        Path::new(CHROMIUM).exists(),
        "{CHROMIUM} is missing: this test drives Debian's chromium. Run the tests through \
         scripts/test, which installs it, or `apt-get install chromium`."
    );
    let python = std::env::var("HUBCAST_PYTHON").unwrap_or_else(|_| "python3".into());
    let script = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/python")
        .join(name);
    let mut child = Command::new(&python)
        .arg(script)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| {
            panic!("cannot run {python} (run the tests through scripts/test): {e}")
        });
    let stdout = drain(child.stdout.take().expect("stdout"));
    let stderr = drain(child.stderr.take().expect("stderr"));
    let deadline = Instant::now() + SCRIPT_DEADLINE;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for the script") {
            break Some(status);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    // The browser (a grandchild) may hold the pipes a moment longer: wait a little.
    let read = |rx: mpsc::Receiver<String>| {
        rx.recv_timeout(Duration::from_secs(10))
            .unwrap_or_else(|_| "(not readable)".into())
    };
    let (stdout, stderr) = (read(stdout), read(stderr));
    print!("{stdout}");
    match status {
        Some(s) if s.success() => {}
        Some(s) => panic!("{name} failed ({s}):\n--- stdout:\n{stdout}\n--- stderr:\n{stderr}"),
        None => panic!(
            "{name} ran longer than {SCRIPT_DEADLINE:?} and was killed:\n\
             --- stdout:\n{stdout}\n--- stderr:\n{stderr}"
        ),
    }
}

#[test]
fn demo_page_shows_messages_and_recovers_missed_ones_after_a_lost_connection() {
    let server = start(|c| {
        c.history_size = 1000;
        c.compression = true;
    });
    run_script("browser_test.py", &[&format!("http://{}", server.addr)]);
    server.stop();
}

#[test]
fn the_browser_client_connects_with_a_token_and_refreshes_it_before_it_expires() {
    const SECRET: &str = "browser-test-secret-of-at-least-32-bytes";
    let server = start(|c| {
        c.history_size = 100;
        c.jwt_secret = Some(SECRET.to_owned());
    });
    run_script(
        "browser_auth_test.py",
        &[&format!("http://{}", server.addr), SECRET],
    );
    server.stop();
}
