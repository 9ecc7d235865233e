//! Renders benchmark results (one JSON object per line: `target`, `workload`, `run`,
//! `result`) as the Markdown tables of `BENCHMARKS.md`: median and min–max over runs per
//! target, and the Sluice/HAProxy ratio.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::path::Path;

use serde_json::Value;

type Metric = (&'static str, fn(&Value) -> Option<f64>);

fn ptr(v: &Value, p: &str) -> Option<f64> {
    v.pointer(p).and_then(Value::as_f64)
}

fn proxy_cpu_fraction(v: &Value) -> Option<f64> {
    ptr(v, "/cpu/processes/proxy/cpu_pct")
        .map(|p| p / 100.0)
        .filter(|p| *p > 0.0)
}

fn cpu_of(name: &'static str) -> impl Fn(&Value) -> Option<f64> {
    move |v| ptr(v, &format!("/cpu/processes/{name}/cpu_pct"))
}

fn metrics(workload: &str) -> Vec<Metric> {
    match workload {
        "handshake" | "h2streams" | "tls13handshake" | "tls12handshake" | "tls12resume" => vec![
            ("upgrades/s", |v| ptr(v, "/upgrades_per_s")),
            ("upgrades per proxy CPU-second", |v| {
                Some(ptr(v, "/upgrades_per_s")? / proxy_cpu_fraction(v)?)
            }),
            ("handshake p50 (µs)", |v| ptr(v, "/handshake/p50_us")),
            ("handshake p99 (µs)", |v| ptr(v, "/handshake/p99_us")),
            ("errors", |v| ptr(v, "/errors")),
            ("proxy CPU %", |v| cpu_of("proxy")(v)),
            ("backend CPU %", |v| cpu_of("backend")(v)),
            ("load CPU %", |v| cpu_of("load")(v)),
        ],
        "echo64" | "h2echo64" | "tlsecho64" => vec![
            ("msgs/s", |v| ptr(v, "/msgs_per_s")),
            ("msgs per proxy CPU-second", |v| {
                Some(ptr(v, "/msgs_per_s")? / proxy_cpu_fraction(v)?)
            }),
            ("RTT p50 (µs)", |v| ptr(v, "/rtt/p50_us")),
            ("RTT p99 (µs)", |v| ptr(v, "/rtt/p99_us")),
            ("RTT p99.9 (µs)", |v| ptr(v, "/rtt/p999_us")),
            ("proxy CPU %", |v| cpu_of("proxy")(v)),
            ("backend CPU %", |v| cpu_of("backend")(v)),
            ("load CPU %", |v| cpu_of("load")(v)),
        ],
        "echo16k" => vec![
            ("MB/s (payload, each way)", |v| ptr(v, "/mb_per_s")),
            ("MB per proxy CPU-second", |v| {
                Some(ptr(v, "/mb_per_s")? / proxy_cpu_fraction(v)?)
            }),
            ("RTT p50 (µs)", |v| ptr(v, "/rtt/p50_us")),
            ("RTT p99 (µs)", |v| ptr(v, "/rtt/p99_us")),
            ("proxy CPU %", |v| cpu_of("proxy")(v)),
            ("backend CPU %", |v| cpu_of("backend")(v)),
            ("load CPU %", |v| cpu_of("load")(v)),
        ],
        "latency" | "chat" | "busylatency" => vec![
            ("RTT p50 (µs)", |v| ptr(v, "/rtt/p50_us")),
            ("RTT p99 (µs)", |v| ptr(v, "/rtt/p99_us")),
            ("RTT p99.9 (µs)", |v| ptr(v, "/rtt/p999_us")),
            ("messages", |v| ptr(v, "/msgs")),
            ("late sends (>100 µs)", |v| ptr(v, "/late_sends")),
            ("proxy CPU %", |v| cpu_of("proxy")(v)),
            ("load CPU %", |v| cpu_of("load")(v)),
        ],
        "idle" | "tlsidle" => vec![
            ("KiB per idle tunnel (slope between steps)", |v| {
                ptr(v, "/kib_per_tunnel")
            }),
            ("KiB per idle tunnel (0 → first step)", |v| {
                ptr(v, "/kib_per_tunnel_first_step")
            }),
            ("RSS at 0 tunnels (KiB)", |v| ptr(v, "/points/0/rss_kib")),
            ("RSS at first step (KiB)", |v| ptr(v, "/points/1/rss_kib")),
            ("RSS at last step (KiB)", |v| {
                let pts = v.pointer("/points")?.as_array()?;
                pts.last()?.get("rss_kib")?.as_f64()
            }),
        ],
        "push" => vec![
            ("REST response → all nodes acked, p50 (ms)", |v| {
                ptr(v, "/ack/p50_us").map(|x| x / 1000.0)
            }),
            ("REST response → all nodes acked, p99 (ms)", |v| {
                ptr(v, "/ack/p99_us").map(|x| x / 1000.0)
            }),
            ("REST response → all nodes acked, max (ms)", |v| {
                ptr(v, "/ack/max_us").map(|x| x / 1000.0)
            }),
            ("reload → new connections served, p50 (ms)", |v| {
                ptr(v, "/reload/p50_us").map(|x| x / 1000.0)
            }),
            ("reload → new connections served, p99 (ms)", |v| {
                ptr(v, "/reload/p99_us").map(|x| x / 1000.0)
            }),
            ("tunnels dropped", |v| ptr(v, "/tunnels_dropped")),
            ("echoes during the run", |v| ptr(v, "/echoes")),
        ],
        _ => vec![],
    }
}

fn fmt_num(x: f64) -> String {
    if x.abs() >= 100.0 {
        format!("{x:.0}")
    } else if x.abs() >= 10.0 {
        format!("{x:.1}")
    } else {
        format!("{x:.2}")
    }
}

fn summary(values: &mut [f64]) -> Option<(f64, String)> {
    if values.is_empty() {
        return None;
    }
    values.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
    let median = values[values.len() / 2];
    let text = if values.len() == 1 || values[0] == values[values.len() - 1] {
        fmt_num(median)
    } else {
        format!(
            "{} ({}–{})",
            fmt_num(median),
            fmt_num(values[0]),
            fmt_num(values[values.len() - 1])
        )
    };
    Some((median, text))
}

pub fn render(input: &Path, header: &Path) -> anyhow::Result<String> {
    let text = std::fs::read_to_string(input)?;
    let mut runs: BTreeMap<(String, String), Vec<Value>> = BTreeMap::new();
    let mut order: Vec<String> = Vec::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let v: Value = serde_json::from_str(line)?;
        let workload = v["workload"].as_str().unwrap_or("?").to_string();
        let target = v["target"].as_str().unwrap_or("?").to_string();
        if !order.contains(&workload) {
            order.push(workload.clone());
        }
        runs.entry((workload, target))
            .or_default()
            .push(v["result"].clone());
    }
    let mut out = std::fs::read_to_string(header)?;
    // Targets measured only on request get columns of their own when they were: the node
    // on the shared runtime (`--runtime shared`) and the bare TCP relays (tokio, io_uring).
    let mut targets = vec!["direct", "haproxy", "sluice"];
    let mut names = vec!["direct", "haproxy", "sluice"];
    let mut ratios = vec!["sluice / haproxy"];
    for (t, name, ratio) in [
        ("sluice-shared", "sluice shared", "shared / haproxy"),
        ("relay", "tcp relay", "relay / haproxy"),
        ("uring-relay", "io_uring relay", "io_uring relay / haproxy"),
        (
            "uring-hosted",
            "io_uring hosted",
            "io_uring hosted / haproxy",
        ),
    ] {
        if runs.keys().any(|(_, r)| r == t) {
            targets.push(t);
            names.push(name);
            ratios.push(ratio);
        }
    }
    for workload in &order {
        let _ = writeln!(out, "\n### {workload}\n");
        let _ = writeln!(
            out,
            "| figure | {} | {} |",
            names.join(" | "),
            ratios.join(" | ")
        );
        let _ = writeln!(out, "|---|{}", "---|".repeat(names.len() + ratios.len()));
        for (label, f) in metrics(workload) {
            let mut cells = Vec::new();
            let mut medians = BTreeMap::new();
            for &t in &targets {
                let mut vals: Vec<f64> = runs
                    .get(&(workload.clone(), t.to_string()))
                    .map(|rs| rs.iter().filter_map(f).collect())
                    .unwrap_or_default();
                match summary(&mut vals) {
                    Some((m, s)) => {
                        medians.insert(t, m);
                        cells.push(s);
                    }
                    None => cells.push("–".into()),
                }
            }
            let ratio = |t: &str| match (medians.get(t), medians.get("haproxy")) {
                (Some(s), Some(h)) if *h != 0.0 => format!("{:.2}×", s / h),
                _ => "–".into(),
            };
            let mut row = format!("| {label} | {} |", cells.join(" | "));
            for t in &targets[2..] {
                let _ = write!(row, " {} |", ratio(t));
            }
            let _ = writeln!(out, "{row}");
        }
    }
    Ok(out)
}
