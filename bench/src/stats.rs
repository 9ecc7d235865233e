//! Latency percentiles and per-process CPU time from `/proc`.

use std::collections::BTreeMap;

/// Percentiles (µs) of a sample.
pub fn percentiles(mut us: Vec<u32>) -> serde_json::Value {
    if us.is_empty() {
        return serde_json::json!({});
    }
    us.sort_unstable();
    let at = |q: f64| us[((us.len() as f64 * q) as usize).min(us.len() - 1)];
    serde_json::json!({ "p50_us": at(0.50), "p99_us": at(0.99), "p999_us": at(0.999), "max_us": us[us.len() - 1] })
}

/// CPU seconds (user + system) a process has used so far.
pub fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name, which is in parentheses and may contain spaces.
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let utime: f64 = f.get(11)?.parse().ok()?;
    let stime: f64 = f.get(12)?.parse().ok()?;
    Some((utime + stime) / 100.0)
}

/// Resident set size of a process in KiB.
pub fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
}

/// CPU accounting across a measured interval for named processes.
pub struct CpuWatch {
    pids: Vec<(String, u32)>,
    start: Vec<Option<f64>>,
    self_start: Option<f64>,
    wall: std::time::Instant,
}

impl CpuWatch {
    pub fn start(pids: &[(String, u32)]) -> Self {
        Self {
            start: pids.iter().map(|(_, p)| cpu_seconds(*p)).collect(),
            pids: pids.to_vec(),
            self_start: cpu_seconds(std::process::id()),
            wall: std::time::Instant::now(),
        }
    }

    /// CPU use of each process over the interval, in percent of one core.
    pub fn finish(&self) -> serde_json::Value {
        let wall = self.wall.elapsed().as_secs_f64();
        let mut out = BTreeMap::new();
        for ((name, pid), start) in self.pids.iter().zip(&self.start) {
            if let (Some(a), Some(b)) = (start, cpu_seconds(*pid)) {
                out.insert(
                    name.clone(),
                    serde_json::json!({ "cpu_s": b - a, "cpu_pct": 100.0 * (b - a) / wall }),
                );
            }
        }
        if let (Some(a), Some(b)) = (self.self_start, cpu_seconds(std::process::id())) {
            out.insert(
                "load".into(),
                serde_json::json!({ "cpu_s": b - a, "cpu_pct": 100.0 * (b - a) / wall }),
            );
        }
        serde_json::json!({ "wall_s": wall, "processes": out })
    }
}
