//! Measuring the server and the bench (CPU time and memory from /proc), the latency
//! histogram, and the number formats of the report.

use std::io::IsTerminal;
use std::time::Instant;

use hdrhistogram::Histogram;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// Reading CPU time and memory of a process from /proc.
pub mod procfs {
    /// utime + stime of `pid` (or of this process) in seconds.
    pub fn cpu_seconds(pid: Option<u32>) -> Option<f64> {
        let path = match pid {
            Some(p) => format!("/proc/{p}/stat"),
            None => "/proc/self/stat".to_string(),
        };
        let text = std::fs::read_to_string(path).ok()?;
        // The command name (field 2) may contain spaces and parentheses: start after the last ')'.
        let rest = &text[text.rfind(')')? + 1..];
        let fields: Vec<&str> = rest.split_whitespace().collect();
        // rest[0] is field 3 (state); utime and stime are fields 14 and 15.
        let utime: f64 = fields.get(11)?.parse().ok()?;
        let stime: f64 = fields.get(12)?.parse().ok()?;
        Some((utime + stime) / clk_tck())
    }

    /// Whether `pid` exists and is not a zombie.
    pub fn alive(pid: u32) -> bool {
        std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .ok()
            .and_then(|t| {
                let rest = &t[t.rfind(')')? + 1..];
                rest.split_whitespace()
                    .next()
                    .map(|st| st != "Z" && st != "X")
            })
            .unwrap_or(false)
    }

    fn clk_tck() -> f64 {
        // SAFETY: sysconf has no preconditions.
        let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
        if t > 0 {
            t as f64
        } else {
            100.0
        }
    }

    /// (VmHWM, VmRSS) of `pid` in KiB.
    pub fn mem_kib(pid: Option<u32>) -> Option<(u64, u64)> {
        let path = match pid {
            Some(p) => format!("/proc/{p}/status"),
            None => "/proc/self/status".to_string(),
        };
        let text = std::fs::read_to_string(path).ok()?;
        let field = |name: &str| -> Option<u64> {
            let line = text.lines().find(|l| l.starts_with(name))?;
            line[name.len()..].split_whitespace().next()?.parse().ok()
        };
        Some((field("VmHWM:")?, field("VmRSS:")?))
    }
}

pub fn new_histogram() -> Histogram<u64> {
    // 1 ns .. ~16 min, 3 significant digits.
    Histogram::new_with_bounds(1, 1_000_000_000_000, 3).expect("valid histogram bounds")
}

#[derive(Debug, Clone, Copy, Default)]
pub struct Sample {
    pub at: Option<Instant>,
    pub server_cpu: Option<f64>,
    pub bench_cpu: Option<f64>,
    pub server_mem: Option<(u64, u64)>,
}

/// The server's figures are the sums over `pids` (a cluster: every node and the broker), and
/// none at all if any of them cannot be read: a partial sum would pass for a cheap server.
pub fn sample(pids: &[u32]) -> Sample {
    let sum = |f: &dyn Fn(u32) -> Option<f64>| -> Option<f64> {
        if pids.is_empty() {
            return None;
        }
        pids.iter().map(|&p| f(p)).sum()
    };
    let mem = || -> Option<(u64, u64)> {
        if pids.is_empty() {
            return None;
        }
        pids.iter()
            .map(|&p| procfs::mem_kib(Some(p)))
            .try_fold((0, 0), |(h, r), m| m.map(|(mh, mr)| (h + mh, r + mr)))
    };
    Sample {
        at: Some(Instant::now()),
        server_cpu: sum(&|p| procfs::cpu_seconds(Some(p))),
        bench_cpu: procfs::cpu_seconds(None),
        server_mem: mem(),
    }
}

pub fn progress_bar(len: u64, template: &str) -> ProgressBar {
    let pb = if std::io::stderr().is_terminal() {
        ProgressBar::with_draw_target(Some(len), ProgressDrawTarget::stderr())
    } else {
        ProgressBar::hidden()
    };
    if let Ok(style) = ProgressStyle::with_template(template) {
        pb.set_style(style.progress_chars("=> "));
    }
    pb
}

pub fn round2(v: f64) -> f64 {
    (v * 100.0).round() / 100.0
}

pub fn round3(v: f64) -> f64 {
    (v * 1000.0).round() / 1000.0
}

pub fn human(v: f64) -> String {
    if v >= 1e6 {
        format!("{:.2}M", v / 1e6)
    } else if v >= 1e4 {
        format!("{:.1}k", v / 1e3)
    } else {
        format!("{v:.0}")
    }
}

pub fn fmt_us(us: f64) -> String {
    if us >= 10_000.0 {
        format!("{:.1} ms", us / 1000.0)
    } else {
        format!("{us:.0} µs")
    }
}

pub fn kib(v: Option<u64>) -> String {
    match v {
        Some(k) if k >= 10 * 1024 => format!("{:.1} MiB", k as f64 / 1024.0),
        Some(k) => format!("{k} KiB"),
        None => "?".into(),
    }
}
