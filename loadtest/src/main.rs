//! `hubcast-loadtest` command: parse flags, run, print the table or JSON, exit.
//!
//! Exit codes: 0 = at least one step met the SLO (idle mode: every subscriber
//! connected and held; `soak`: the soak passed), 1 = no step met it (the soak
//! failed), 2 = configuration or runtime error.

use std::io::Write;
use std::process::ExitCode;

use clap::Parser;
use hubcast_loadtest::cli::{Args, Command};
use hubcast_loadtest::run::{self, ProgressMode};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let args = Args::parse();
    if let Some(Command::Soak(soak)) = args.command {
        return hubcast_loadtest::soak::main(soak);
    }
    let json = args.json;
    let quiet = args.quiet;
    let cfg = match args.into_config() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e:#}");
            return ExitCode::from(2);
        }
    };
    let report = match run::run_with_progress(&cfg, ProgressMode::detect(quiet, json)) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: {e:#}");
            return ExitCode::from(2);
        }
    };
    let mut out = std::io::stdout().lock();
    let written = if json {
        report.write_json(&mut out)
    } else {
        report.write_table(&mut out)
    };
    if let Err(e) = written.and_then(|()| out.flush()) {
        eprintln!("error: writing the report: {e}");
        return ExitCode::from(2);
    }
    ExitCode::from(u8::try_from(report.summary.exit_code).unwrap_or(1))
}
