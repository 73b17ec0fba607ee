//! Test-only: the proptest settings every property of the crate shares — the unit
//! properties beside the code and `tests/fuzz.rs` (which includes this file).
//!
//! - **Cases.** Each property names a count that keeps the debug suite fast on two
//!   shared cores; `PROPTEST_CASES=N` overrides them all for a deeper local run.
//! - **No failure persistence** (no `proptest-regressions/` files), deliberately: a
//!   failure prints its shrunk input, and every real finding becomes a named regression
//!   test that spells that input out. A persisted seed only replays what the *current*
//!   generator makes of it, so after a generator changes it silently tests something
//!   else; and test runs should not write into the source tree.
//! - **Random seeds** (proptest's default): every run explores new inputs.

use proptest::test_runner::Config;

/// The shared settings with `cases` cases (unless `PROPTEST_CASES` says otherwise).
pub(crate) fn config(cases: u32) -> Config {
    let mut config = Config::default(); // reads PROPTEST_CASES and the other variables
    if std::env::var_os("PROPTEST_CASES").is_none() {
        config.cases = cases;
    }
    config.failure_persistence = None;
    config
}
