//! What the soak watches on the server, every `--sample-every`: resident memory and
//! open file descriptors from /proc, connections and counters from `/metrics`; one CSV
//! row per sample; and the memory verdict over the whole series.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use serde::Serialize;

use crate::procfs;
use crate::target::Target;

/// Counters read from hubcast's `/metrics`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Metrics {
    /// `hubcast_connections`: registered connections.
    pub connections: u64,
    /// `hubcast_deliveries_total`.
    pub deliveries: u64,
    /// `hubcast_slow_consumer_closes_total`.
    pub slow_consumer_closes: u64,
    /// `hubcast_protocol_closes_total`.
    pub protocol_closes: u64,
    /// `hubcast_ping_timeouts_total`.
    pub ping_timeouts: u64,
    /// `hubcast_inbox_dropped_total`.
    pub inbox_dropped: u64,
}

impl Metrics {
    /// Reads the counters from the Prometheus text; a missing one is an error (the
    /// server is not hubcast, or renamed it).
    pub fn parse(text: &str) -> Result<Metrics> {
        let get = |name: &str| -> Result<u64> {
            text.lines()
                .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
                .and_then(|v| v.trim().parse::<f64>().ok())
                .map(|v| v as u64)
                .with_context(|| format!("{name} missing from /metrics"))
        };
        Ok(Metrics {
            connections: get("hubcast_connections")?,
            deliveries: get("hubcast_deliveries_total")?,
            slow_consumer_closes: get("hubcast_slow_consumer_closes_total")?,
            protocol_closes: get("hubcast_protocol_closes_total")?,
            ping_timeouts: get("hubcast_ping_timeouts_total")?,
            inbox_dropped: get("hubcast_inbox_dropped_total")?,
        })
    }

    /// `GET /metrics` (one blocking request, `Connection: close`, 15 s at most).
    pub fn fetch(target: &Target) -> Result<Metrics> {
        let timeout = Duration::from_secs(15);
        let mut s = TcpStream::connect_timeout(&target.addr, timeout)
            .with_context(|| format!("connecting to {}", target.url))?;
        s.set_read_timeout(Some(timeout))?;
        s.set_write_timeout(Some(timeout))?;
        write!(
            s,
            "GET {} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
            target.path, target.host_header
        )?;
        let mut response = String::new();
        s.read_to_string(&mut response)
            .with_context(|| format!("reading {}", target.url))?;
        let Some((head, body)) = response.split_once("\r\n\r\n") else {
            bail!("{}: no complete response", target.url);
        };
        if !head.starts_with("HTTP/1.1 200") {
            bail!(
                "{}: {}",
                target.url,
                head.lines().next().unwrap_or_default()
            );
        }
        Metrics::parse(body)
    }
}

/// The server's resources at one instant.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Server {
    /// VmRSS, bytes.
    pub rss_bytes: u64,
    /// Entries of /proc/PID/fd.
    pub fds: u64,
    /// Threads.
    pub threads: u64,
}

impl Server {
    /// Samples `/proc/PID/{stat,status,fd}`.
    pub fn sample(pid: u32) -> Result<Server> {
        let p = procfs::sample(pid)?;
        let fds = std::fs::read_dir(format!("/proc/{pid}/fd"))
            .with_context(|| format!("listing /proc/{pid}/fd"))?
            .count() as u64;
        Ok(Server {
            rss_bytes: p.rss_bytes,
            fds,
            threads: p.threads,
        })
    }
}

/// One row of the series.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Row {
    /// Seconds since the start of the steady phase (negative while connecting).
    pub t_s: f64,
    /// The server's resources.
    pub server: Server,
    /// Its counters.
    pub metrics: Metrics,
    /// Connections the load generator holds (clients, slow readers, leaked ones).
    pub client_connections: u64,
    /// Connects so far.
    pub connects: u64,
    /// Clients that left (closed by us) so far.
    pub churned: u64,
    /// Numbered messages the server accepted so far.
    pub published: u64,
    /// Messages healthy clients missed so far (every kind; 0 for a passing run).
    pub missed: u64,
}

/// The CSV header matching [`Row::csv`].
pub const CSV_HEADER: &str = "t_s,rss_bytes,fds,threads,server_connections,client_connections,\
                              connects,churned,published,deliveries,slow_consumer_closes,\
                              protocol_closes,ping_timeouts,inbox_dropped,missed";

impl Row {
    /// The row as CSV (no newline).
    pub fn csv(&self) -> String {
        let (s, m) = (&self.server, &self.metrics);
        format!(
            "{:.1},{},{},{},{},{},{},{},{},{},{},{},{},{},{}",
            self.t_s,
            s.rss_bytes,
            s.fds,
            s.threads,
            m.connections,
            self.client_connections,
            self.connects,
            self.churned,
            self.published,
            m.deliveries,
            m.slow_consumer_closes,
            m.protocol_closes,
            m.ping_timeouts,
            m.inbox_dropped,
            self.missed
        )
    }
}

/// How a resource (RSS, fds) moved after the warm-up: its value at the end against
/// its value right after the warm-up, each the median of a window of samples.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Growth {
    /// Median of the first window at or after the warm-up.
    pub baseline: u64,
    /// Median of the last window.
    pub end: u64,
    /// Samples per window: a tenth of those after the warm-up, at least three.
    pub window: usize,
    /// Highest sample after the warm-up.
    pub peak: u64,
    /// `end / baseline − 1`.
    pub growth: f64,
    /// `peak / baseline − 1` (reported, not judged: a peak that goes away is no leak).
    pub peak_growth: f64,
}

fn median(v: &[u64]) -> u64 {
    let mut v = v.to_vec();
    v.sort_unstable();
    v[v.len() / 2]
}

/// Growth over `(t_s, value)` samples of the steady phase, from the warm-up on: the
/// median of the last tenth of them (at least three) against the median of the first
/// tenth. Medians keep spikes (a burst of queued frames, an allocator returning memory
/// late) from deciding; a leak moves the whole window. Needs at least six samples
/// after the warm-up.
pub fn growth(samples: &[(f64, u64)], warmup_s: f64) -> Result<Growth, String> {
    let after: Vec<u64> = samples
        .iter()
        .filter(|(t, _)| *t >= warmup_s)
        .map(|(_, rss)| *rss)
        .collect();
    if after.len() < 6 {
        return Err(format!(
            "{} samples after the warm-up: too few to judge (need 6; a longer \
             --duration or a shorter --sample-every)",
            after.len()
        ));
    }
    let window = (after.len() / 10).max(3);
    let baseline = median(&after[..window]);
    let end = median(&after[after.len() - window..]);
    let peak = after.iter().copied().max().unwrap_or(0);
    let rel = |x: u64| x as f64 / baseline.max(1) as f64 - 1.0;
    Ok(Growth {
        baseline,
        end,
        window,
        peak,
        growth: rel(end),
        peak_growth: rel(peak),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const METRICS: &str = "# TYPE hubcast_connections gauge\nhubcast_connections 10012\n\
        hubcast_connections_per_shard 3\nhubcast_deliveries_total 123456789\n\
        hubcast_slow_consumer_closes_total 4\nhubcast_protocol_closes_total 0\n\
        hubcast_ping_timeouts_total 1\nhubcast_inbox_dropped_total 0\n";

    #[test]
    fn metrics_are_read_by_exact_name() {
        let m = Metrics::parse(METRICS).expect("parse");
        assert_eq!(m.connections, 10_012, "not the _per_shard line");
        assert_eq!(m.deliveries, 123_456_789);
        assert_eq!((m.slow_consumer_closes, m.ping_timeouts), (4, 1));
        let missing = METRICS.replace("hubcast_inbox_dropped_total 0\n", "");
        let e = Metrics::parse(&missing).expect_err("missing");
        assert!(e.to_string().contains("hubcast_inbox_dropped_total"), "{e}");
    }

    #[test]
    fn csv_rows_match_the_header() {
        let row = Row {
            t_s: 12.34,
            missed: 3,
            ..Row::default()
        };
        let csv = row.csv();
        assert_eq!(csv.split(',').count(), CSV_HEADER.split(',').count());
        assert!(csv.starts_with("12.3,0,"), "{csv}");
        assert!(csv.ends_with(",3"), "{csv}");
    }

    fn series(rss: &[u64]) -> Vec<(f64, u64)> {
        rss.iter()
            .enumerate()
            .map(|(i, r)| (i as f64 * 10.0, *r))
            .collect()
    }

    #[test]
    fn flat_memory_with_a_spike_does_not_grow() {
        // Warm-up (t < 20) ignored, one spike after it.
        let s = series(&[10, 50, 100, 101, 99, 100, 180, 100, 102, 100, 101]);
        let g = growth(&s, 20.0).expect("enough samples");
        assert_eq!((g.baseline, g.end, g.peak), (100, 101, 180));
        assert!((g.growth - 0.01).abs() < 1e-9, "{g:?}");
        assert!((g.peak_growth - 0.8).abs() < 1e-9);
    }

    #[test]
    fn a_leak_grows() {
        let s = series(&(0..20).map(|i| 1000 + i * 10).collect::<Vec<_>>());
        let g = growth(&s, 50.0).expect("enough samples");
        assert_eq!((g.baseline, g.end), (1060, 1180));
        assert!(g.growth > 0.05, "{g:?}");
    }

    #[test]
    fn long_runs_judge_a_tenth_at_each_end() {
        // 100 samples after the warm-up: windows of 10, which one outlier per window
        // cannot move.
        let mut rss: Vec<u64> = vec![100; 100];
        rss[3] = 1;
        rss[95] = 500;
        rss[90..].iter_mut().for_each(|r| *r += 4);
        let g = growth(&series(&rss), 0.0).expect("enough");
        assert_eq!((g.window, g.baseline, g.end, g.peak), (10, 100, 104, 504));
    }

    #[test]
    fn too_few_samples_are_no_verdict() {
        let s = series(&[1, 2, 3, 4, 5, 6, 7]);
        assert!(growth(&s, 20.0).is_err(), "5 samples after the warm-up");
        assert!(growth(&s, 10.0).is_ok());
    }

    #[test]
    fn this_process_can_be_sampled() {
        let me = Server::sample(std::process::id()).expect("self");
        assert!(me.rss_bytes > 0 && me.fds >= 3 && me.threads >= 1, "{me:?}");
    }
}
