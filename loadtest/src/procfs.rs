//! Process figures from the kernel: CPU time, resident memory, fd limits.
//!
//! Owns the `/proc` parsing (server processes via `--server-pid`, our own worker
//! threads) and the few syscalls the tool needs, all through safe wrappers:
//! `RLIMIT_NOFILE` raising and process CPU time via `rustix`, clock ticks via
//! `sysconf(_SC_CLK_TCK)`. Parsers take the file text so they are unit-tested
//! on fixed samples.

use std::fs;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use serde::Serialize;

/// Fields we need from `/proc/PID/stat`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stat {
    /// User CPU time, clock ticks (field 14).
    pub utime_ticks: u64,
    /// System CPU time, clock ticks (field 15).
    pub stime_ticks: u64,
    /// Number of threads (field 20).
    pub num_threads: u64,
}

/// Parses `/proc/PID/stat`. The command name (field 2) may contain spaces
/// and parentheses, so fields are counted from the last `)`.
pub fn parse_stat(text: &str) -> Result<Stat> {
    let close = text.rfind(')').context("no ')' in stat")?;
    let rest: Vec<&str> = text[close + 1..].split_whitespace().collect();
    // rest[0] is field 3 (state), so field N is rest[N - 3].
    let field = |n: usize| -> Result<u64> {
        let raw = rest
            .get(n - 3)
            .with_context(|| format!("stat has no field {n}"))?;
        raw.parse::<u64>()
            .with_context(|| format!("stat field {n} {raw:?}"))
    };
    Ok(Stat {
        utime_ticks: field(14)?,
        stime_ticks: field(15)?,
        num_threads: field(20)?,
    })
}

/// Reads a `kB` line such as `VmRSS:   1234 kB` from `/proc/PID/status`, in bytes.
pub fn parse_status_kb(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|line| {
        let rest = line.strip_prefix(key)?.strip_prefix(':')?;
        let kb: u64 = rest.split_whitespace().next()?.parse().ok()?;
        Some(kb * 1024)
    })
}

/// First field of `/proc/.../schedstat`: time spent on a CPU, in ns.
pub fn parse_schedstat(text: &str) -> Option<u64> {
    text.split_whitespace().next()?.parse().ok()
}

/// Machine-wide CPU time from the `cpu` line of `/proc/stat`, in ticks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MachineCpu {
    /// Ticks spent doing anything but idle/iowait (steal included).
    pub busy: u64,
    /// All ticks.
    pub total: u64,
}

impl MachineCpu {
    /// Busy fraction between two samples (0 when no time passed).
    pub fn busy_since(&self, earlier: &MachineCpu) -> f64 {
        let total = self.total.saturating_sub(earlier.total);
        if total == 0 {
            return 0.0;
        }
        self.busy.saturating_sub(earlier.busy) as f64 / total as f64
    }
}

/// Parses the aggregate `cpu` line of `/proc/stat`.
pub fn parse_proc_stat(text: &str) -> Option<MachineCpu> {
    let line = text.lines().find(|l| l.starts_with("cpu "))?;
    let v: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .map(|x| x.parse().ok())
        .collect::<Option<_>>()?;
    // user nice system idle iowait irq softirq steal [guest guest_nice] — guest
    // time is already counted in user/nice.
    let total: u64 = v.iter().take(8).sum();
    let idle = v.get(3).copied().unwrap_or(0) + v.get(4).copied().unwrap_or(0);
    Some(MachineCpu {
        busy: total.saturating_sub(idle),
        total,
    })
}

/// Samples machine-wide CPU time.
pub fn machine_cpu() -> Option<MachineCpu> {
    parse_proc_stat(&fs::read_to_string("/proc/stat").ok()?)
}

/// Clock ticks per second for `/proc/*/stat` CPU fields (normally 100).
pub fn clock_ticks_per_second() -> u64 {
    match rustix::param::clock_ticks_per_second() {
        0 => 100,
        n => n,
    }
}

/// One sample of a process (or the sum over several, see [`ProcSample::total`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct ProcSample {
    /// utime + stime, ns (tick resolution, usually 10 ms); = `user_ns + system_ns`.
    pub cpu_ns: u64,
    /// utime (`/proc/PID/stat` field 14), ns.
    pub user_ns: u64,
    /// stime (`/proc/PID/stat` field 15), ns.
    pub system_ns: u64,
    /// Resident set size, bytes.
    pub rss_bytes: u64,
    /// Peak resident set size (VmHWM), bytes.
    pub hwm_bytes: u64,
    /// Threads.
    pub threads: u64,
}

impl ProcSample {
    /// Builds a sample from the texts of `/proc/PID/stat` and `/proc/PID/status`
    /// (`hz`: clock ticks per second). `None` without a `VmRSS` line (zombie).
    pub fn from_proc(stat: &Stat, status: &str, hz: u64) -> Option<Self> {
        let hz = hz.max(1);
        let user_ns = stat.utime_ticks.saturating_mul(1_000_000_000) / hz;
        let system_ns = stat.stime_ticks.saturating_mul(1_000_000_000) / hz;
        let rss = parse_status_kb(status, "VmRSS")?;
        Some(Self {
            cpu_ns: user_ns.saturating_add(system_ns),
            user_ns,
            system_ns,
            rss_bytes: rss,
            hwm_bytes: parse_status_kb(status, "VmHWM").unwrap_or(rss),
            threads: stat.num_threads,
        })
    }

    /// The field-by-field sum of several processes' samples (CPU times, RSS,
    /// the sum of their peaks, threads).
    pub fn total<'a>(samples: impl IntoIterator<Item = &'a ProcSample>) -> ProcSample {
        samples
            .into_iter()
            .fold(ProcSample::default(), |acc, s| ProcSample {
                cpu_ns: acc.cpu_ns.saturating_add(s.cpu_ns),
                user_ns: acc.user_ns.saturating_add(s.user_ns),
                system_ns: acc.system_ns.saturating_add(s.system_ns),
                rss_bytes: acc.rss_bytes.saturating_add(s.rss_bytes),
                hwm_bytes: acc.hwm_bytes.saturating_add(s.hwm_bytes),
                threads: acc.threads.saturating_add(s.threads),
            })
    }
}

/// Samples `/proc/PID/stat` and `/proc/PID/status`.
pub fn sample(pid: u32) -> Result<ProcSample> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("reading /proc/{pid}/stat (is --server-pid {pid} right?)"))?;
    let status = fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("reading /proc/{pid}/status"))?;
    let st = parse_stat(&stat).with_context(|| format!("parsing /proc/{pid}/stat"))?;
    let Some(s) = ProcSample::from_proc(&st, &status, clock_ticks_per_second()) else {
        bail!("no VmRSS in /proc/{pid}/status (zombie process?)");
    };
    Ok(s)
}

/// Samples each of `pids`, in order.
pub fn sample_all(pids: &[u32]) -> Result<Vec<ProcSample>> {
    pids.iter().map(|&pid| sample(pid)).collect()
}

/// CPU time consumed by this whole process so far (ns resolution).
pub fn process_cpu() -> Duration {
    let ts = rustix::time::clock_gettime(rustix::time::ClockId::ProcessCPUTime);
    Duration::new(
        u64::try_from(ts.tv_sec).unwrap_or(0),
        u32::try_from(ts.tv_nsec).unwrap_or(0),
    )
}

/// Id of the calling thread (for [`thread_cpu_ns`]).
pub fn current_tid() -> i32 {
    rustix::thread::gettid().as_raw_nonzero().get()
}

/// CPU time of one of our own threads, ns, from its schedstat.
pub fn thread_cpu_ns(tid: i32) -> Option<u64> {
    let text = fs::read_to_string(format!("/proc/self/task/{tid}/schedstat")).ok()?;
    parse_schedstat(&text)
}

/// Our own resident set size, bytes.
pub fn self_rss_bytes() -> Option<u64> {
    let text = fs::read_to_string("/proc/self/status").ok()?;
    parse_status_kb(&text, "VmRSS")
}

/// Raises the soft `RLIMIT_NOFILE` to the hard limit; returns (soft, hard) after.
pub fn raise_nofile_limit() -> Result<(u64, Option<u64>)> {
    use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
    let lim = getrlimit(Resource::Nofile);
    if lim.current != lim.maximum {
        setrlimit(
            Resource::Nofile,
            Rlimit {
                current: lim.maximum,
                maximum: lim.maximum,
            },
        )
        .context("setrlimit(RLIMIT_NOFILE)")?;
    }
    let now = getrlimit(Resource::Nofile);
    Ok((now.current.unwrap_or(u64::MAX), now.maximum))
}

/// The local port range (`ip_local_port_range`), or Linux's default.
pub fn local_port_range() -> (u16, u16) {
    fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|t| {
            let mut it = t.split_whitespace().map(|s| s.parse::<u16>());
            match (it.next(), it.next()) {
                (Some(Ok(a)), Some(Ok(b))) if a <= b => Some((a, b)),
                _ => None,
            }
        })
        .unwrap_or((32768, 60999))
}

#[cfg(test)]
mod tests {
    use super::*;

    const STAT: &str = "12345 (hub cast) (x)) S 1 12345 12345 0 -1 4194560 2735 0 0 0 \
        731 262 0 0 20 0 9 0 8765432 1234567890 45678 18446744073709551615 1 1 0 0 0 0 0 \
        4096 17987 0 0 0 17 1 0 0 0 0 0";

    const STATUS: &str = "Name:\thubcast\nUmask:\t0022\nState:\tS (sleeping)\n\
        VmPeak:\t  900000 kB\nVmHWM:\t  190000 kB\nVmRSS:\t  182716 kB\nRssAnon:\t  170000 kB\n\
        Threads:\t9\n";

    #[test]
    fn stat_fields_with_awkward_comm() {
        let s = parse_stat(STAT).expect("parse");
        assert_eq!(
            s,
            Stat {
                utime_ticks: 731,
                stime_ticks: 262,
                num_threads: 9
            }
        );
    }

    #[test]
    fn stat_errors() {
        assert!(parse_stat("garbage").is_err());
        assert!(parse_stat("1 (x) S 1 2").is_err());
        assert!(parse_stat("1 (x) S 1 2 3 4 5 6 7 8 9 10 oops 12 13 14 15 16 17 18").is_err());
    }

    #[test]
    fn status_kb_lines() {
        assert_eq!(parse_status_kb(STATUS, "VmRSS"), Some(182_716 * 1024));
        assert_eq!(parse_status_kb(STATUS, "VmHWM"), Some(190_000 * 1024));
        assert_eq!(parse_status_kb(STATUS, "VmSwap"), None);
        // "VmRSS" must not match "RssAnon" or a prefix of another key.
        assert_eq!(parse_status_kb("VmRSSx:\t1 kB\n", "VmRSS"), None);
    }

    #[test]
    fn schedstat() {
        assert_eq!(
            parse_schedstat("179662208 12782537 404\n"),
            Some(179_662_208)
        );
        assert_eq!(parse_schedstat(""), None);
    }

    #[test]
    fn proc_stat_busy_fraction() {
        let a = parse_proc_stat("cpu  100 0 50 800 50 0 0 0 0 0\ncpu0 1 2 3\n").expect("parse");
        assert_eq!(
            a,
            MachineCpu {
                busy: 150,
                total: 1000
            }
        );
        let b = parse_proc_stat("cpu  400 0 200 1100 50 20 30 0 0 0\n").expect("parse");
        assert!((b.busy_since(&a) - 500.0 / 800.0).abs() < 1e-9);
        assert_eq!(a.busy_since(&a), 0.0);
        assert!(parse_proc_stat("intr 1 2 3").is_none());
        assert!(machine_cpu().is_some());
    }

    #[test]
    fn sample_from_proc_texts_splits_user_and_system() {
        let st = parse_stat(STAT).expect("parse");
        let s = ProcSample::from_proc(&st, STATUS, 100).expect("sample");
        assert_eq!(s.user_ns, 7_310_000_000);
        assert_eq!(s.system_ns, 2_620_000_000);
        assert_eq!(s.cpu_ns, 9_930_000_000);
        assert_eq!(s.rss_bytes, 182_716 * 1024);
        assert_eq!(s.hwm_bytes, 190_000 * 1024);
        assert_eq!(s.threads, 9);
        let s = ProcSample::from_proc(&st, STATUS, 250).expect("sample");
        assert_eq!((s.user_ns, s.system_ns), (2_924_000_000, 1_048_000_000));
        assert!(ProcSample::from_proc(&st, "Name:\tzombie\n", 100).is_none());
    }

    #[test]
    fn samples_sum_field_by_field() {
        let a = ProcSample {
            cpu_ns: 30,
            user_ns: 20,
            system_ns: 10,
            rss_bytes: 1000,
            hwm_bytes: 1500,
            threads: 4,
        };
        let b = ProcSample {
            cpu_ns: 7,
            user_ns: 5,
            system_ns: 2,
            rss_bytes: 300,
            hwm_bytes: 400,
            threads: 1,
        };
        assert_eq!(
            ProcSample::total([&a, &b, &b]),
            ProcSample {
                cpu_ns: 44,
                user_ns: 30,
                system_ns: 14,
                rss_bytes: 1600,
                hwm_bytes: 2300,
                threads: 6,
            }
        );
        assert_eq!(ProcSample::total([&a]), a);
        assert_eq!(ProcSample::total(&[]), ProcSample::default());
    }

    #[test]
    fn live_self_sample() {
        let me = sample(std::process::id()).expect("sample self");
        assert!(me.rss_bytes > 0);
        assert!(me.threads >= 1);
        assert_eq!(me.cpu_ns, me.user_ns + me.system_ns);
        let both = sample_all(&[std::process::id(), std::process::id()]).expect("two");
        assert_eq!(both.len(), 2);
        let e = sample_all(&[std::process::id(), u32::MAX]).expect_err("no such pid");
        assert!(format!("{e:#}").contains(&u32::MAX.to_string()));
        assert!(thread_cpu_ns(current_tid()).is_some());
        assert!(self_rss_bytes().is_some());
        let (lo, hi) = local_port_range();
        assert!(lo <= hi);
    }
}
