//! Runs the Python clients of `tests/python/` (interpreter from `HUBCAST_PYTHON`).

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

pub type FirstLine = (
    Option<String>,
    std::io::Lines<BufReader<std::process::ChildStdout>>,
);

/// Starts `tests/python/SCRIPT ARGS` with `HUBCAST_PYTHON`; the task yields the first line
/// it prints (its "ready" signal) and the rest of its output.
pub fn python_script(
    script: &str,
    args: &[&str],
) -> (std::process::Child, tokio::task::JoinHandle<FirstLine>) {
    let python = std::env::var("HUBCAST_PYTHON").unwrap_or_else(|_| "python3".into());
    let path = format!("{}/tests/python/{script}", env!("CARGO_MANIFEST_DIR"));
    let mut child = Command::new(&python)
        .arg(&path)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap_or_else(|e| {
            panic!("cannot run {python} (run the tests through scripts/test): {e}")
        });
    let stdout = child.stdout.take().expect("stdout");
    let lines = tokio::task::spawn_blocking(move || {
        let mut lines = BufReader::new(stdout).lines();
        let ready = lines.next().and_then(Result::ok);
        (ready, lines)
    });
    (child, lines)
}
