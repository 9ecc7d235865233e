//! The benchmark workloads. Each returns one JSON object with its figures and the CPU
//! used by the processes named with `--pid`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::task::JoinSet;

use crate::stats::{percentiles, rss_kib, CpuWatch};
use crate::tls::Stream;
use crate::{ws, Common};

fn us(d: Duration) -> u32 {
    d.as_micros().min(u32::MAX as u128) as u32
}

/// Opens `n` tunnels, at most 200 handshakes in flight at a time.
async fn open_tunnels(c: &Common, n: usize) -> anyhow::Result<Vec<Stream>> {
    let mut out = Vec::with_capacity(n);
    let mut set = JoinSet::new();
    let mut started = 0;
    while out.len() < n {
        while started < n && set.len() < 200 {
            let c = c.clone();
            set.spawn(async move { c.connect().await });
            started += 1;
        }
        match set.join_next().await {
            Some(r) => out.push(r?.with_context(|| format!("opening tunnel {}", out.len() + 1))?),
            None => break,
        }
    }
    Ok(out)
}

/// One handshake worker: until `deadline`, opens a tunnel with `open`, echoes 64 bytes
/// once and closes it. Returns (handshakes, errors, handshake latencies in µs).
pub async fn handshake_worker<F, Fut, S>(deadline: Instant, mut open: F) -> (u64, u64, Vec<u32>)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<S>>,
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let frame = ws::client_frame(&[b'x'; 64]);
    let mut resp = [0u8; 66];
    let (mut ok, mut errors, mut lat) = (0u64, 0u64, Vec::new());
    while Instant::now() < deadline {
        let t0 = Instant::now();
        let r = async {
            let mut s = open().await?;
            let hs = t0.elapsed();
            s.write_all(&frame).await?;
            s.read_exact(&mut resp).await?;
            anyhow::Ok(hs)
        }
        .await;
        match r {
            Ok(hs) => {
                ok += 1;
                lat.push(us(hs));
            }
            Err(_) => {
                errors += 1;
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        }
    }
    (ok, errors, lat)
}

/// The handshake figures from the workers' results.
pub async fn handshake_result(
    mut set: JoinSet<(u64, u64, Vec<u32>)>,
    cpu: CpuWatch,
) -> anyhow::Result<Value> {
    let (mut ok, mut errors, mut lat) = (0, 0, Vec::new());
    while let Some(r) = set.join_next().await {
        let (o, e, l) = r?;
        ok += o;
        errors += e;
        lat.extend(l);
    }
    let cpu = cpu.finish();
    let wall = cpu["wall_s"].as_f64().unwrap_or(1.0);
    Ok(json!({
        "upgrades_per_s": ok as f64 / wall,
        "upgrades": ok,
        "errors": errors,
        "handshake": percentiles(lat),
        "cpu": cpu,
    }))
}

pub async fn handshake(c: &Common, workers: usize) -> anyhow::Result<Value> {
    let deadline = Instant::now() + c.duration();
    let cpu = CpuWatch::start(&c.pids);
    let mut set = JoinSet::new();
    for _ in 0..workers {
        let c = c.clone();
        set.spawn(async move {
            handshake_worker(deadline, || {
                let c = c.clone();
                async move { Ok(c.connect().await?) }
            })
            .await
        });
    }
    handshake_result(set, cpu).await
}

/// One echo tunnel: ping-pongs `size`-byte messages until `deadline`; the round trips in µs.
pub async fn echo_worker<S>(mut s: S, size: usize, deadline: Instant) -> std::io::Result<Vec<u32>>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let frame = ws::client_frame(&vec![b'x'; size]);
    let mut resp = vec![0u8; ws::server_frame_len(size)];
    let mut lat = Vec::new();
    while Instant::now() < deadline {
        let t0 = Instant::now();
        s.write_all(&frame).await?;
        s.read_exact(&mut resp).await?;
        lat.push(us(t0.elapsed()));
    }
    Ok(lat)
}

/// The echo figures from the tunnels' round trips.
pub async fn echo_result(
    mut set: JoinSet<std::io::Result<Vec<u32>>>,
    cpu: CpuWatch,
    size: usize,
) -> anyhow::Result<Value> {
    let mut lat = Vec::new();
    while let Some(r) = set.join_next().await {
        lat.extend(r?.context("a tunnel failed during the run")?);
    }
    let cpu = cpu.finish();
    let wall = cpu["wall_s"].as_f64().unwrap_or(1.0);
    let msgs = lat.len() as f64;
    Ok(json!({
        "msgs_per_s": msgs / wall,
        "mb_per_s": msgs * size as f64 / wall / 1e6,
        "rtt": percentiles(lat),
        "cpu": cpu,
    }))
}

pub async fn echo(c: &Common, conns: usize, size: usize) -> anyhow::Result<Value> {
    let tunnels = open_tunnels(c, conns).await?;
    let deadline = Instant::now() + c.duration();
    let cpu = CpuWatch::start(&c.pids);
    let mut set = JoinSet::new();
    for s in tunnels {
        set.spawn(echo_worker(s, size, deadline));
    }
    echo_result(set, cpu, size).await
}

pub async fn latency(c: &Common, conns: usize, rate: u64) -> anyhow::Result<Value> {
    let tunnels = open_tunnels(c, conns).await?;
    let mut writers = Vec::new();
    let mut readers = Vec::new();
    for t in tunnels {
        let std = t
            .into_plain()
            .context("the latency workload runs over plain TCP")?
            .into_std()?;
        writers.push(std.try_clone()?);
        readers.push(TcpStream::from_std(std)?);
    }
    let total = (rate as f64 * c.seconds) as u64;
    let interval = Duration::from_nanos(1_000_000_000 / rate);
    let start = Instant::now() + Duration::from_millis(50);
    let cpu = CpuWatch::start(&c.pids);

    // The pacer: its own thread, sleeping when far from the next send and yielding the
    // core while close, so sends follow the schedule to within microseconds.
    let pacer = std::thread::spawn(move || -> std::io::Result<u64> {
        use std::io::Write;
        let mut payload = [b'x'; 64];
        let mut late = 0u64;
        for k in 0..total {
            let due = start + interval * k as u32;
            loop {
                let now = Instant::now();
                if now >= due {
                    if now - due > Duration::from_micros(100) {
                        late += 1;
                    }
                    break;
                }
                let left = due - now;
                if left > Duration::from_micros(300) {
                    std::thread::sleep(left - Duration::from_micros(200));
                } else {
                    std::thread::yield_now();
                }
            }
            // Timestamp = intended send time, so a late sender shows up as latency.
            let nanos = (due - start).as_nanos() as u64;
            payload[..8].copy_from_slice(&nanos.to_le_bytes());
            let frame = ws::client_frame(&payload);
            let n = writers.len();
            let w = &mut writers[(k as usize) % n];
            let mut sent = 0;
            while sent < frame.len() {
                match w.write(&frame[sent..]) {
                    Ok(n) => sent += n,
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                        std::thread::yield_now()
                    }
                    Err(e) => return Err(e),
                }
            }
        }
        Ok(late)
    });

    let per_conn = total / conns as u64;
    let extra = total % conns as u64;
    let mut set = JoinSet::new();
    for (i, mut r) in readers.into_iter().enumerate() {
        let expect = per_conn + u64::from((i as u64) < extra);
        set.spawn(async move {
            let mut buf = [0u8; 66];
            let mut lat = Vec::with_capacity(expect as usize);
            for _ in 0..expect {
                r.read_exact(&mut buf).await?;
                let sent = u64::from_le_bytes(buf[2..10].try_into().expect("8 bytes"));
                let now = start.elapsed().as_nanos() as u64;
                lat.push((now.saturating_sub(sent) / 1000) as u32);
            }
            std::io::Result::Ok(lat)
        });
    }
    let mut lat = Vec::new();
    let collect = async {
        while let Some(r) = set.join_next().await {
            lat.extend(r??);
        }
        anyhow::Ok(())
    };
    tokio::time::timeout(c.duration() + Duration::from_secs(10), collect)
        .await
        .context("responses did not all arrive")??;
    let late = pacer
        .join()
        .map_err(|_| anyhow::anyhow!("pacer panicked"))??;
    let cpu = cpu.finish();
    Ok(json!({
        "rate": rate,
        "msgs": lat.len(),
        "late_sends": late,
        "rtt": percentiles(lat),
        "cpu": cpu,
    }))
}

pub async fn idle(c: &Common, steps: &[usize]) -> anyhow::Result<Value> {
    let proxy = c
        .pids
        .iter()
        .find(|(n, _)| n == "proxy")
        .map(|(_, p)| *p)
        .context("idle needs --pid proxy=PID")?;
    let settle = || tokio::time::sleep(Duration::from_millis(1500));
    settle().await;
    let base = rss_kib(proxy).context("reading the proxy's RSS")?;
    let mut tunnels: Vec<Stream> = Vec::new();
    let mut points = vec![json!({ "tunnels": 0, "rss_kib": base })];
    for &step in steps {
        let more = open_tunnels(c, step - tunnels.len()).await?;
        tunnels.extend(more);
        settle().await;
        let rss = rss_kib(proxy).context("reading the proxy's RSS")?;
        points.push(json!({ "tunnels": tunnels.len(), "rss_kib": rss }));
    }
    // The tunnels must still work.
    let frame = ws::client_frame(&[b'y'; 64]);
    let mut resp = [0u8; 66];
    let stride = (tunnels.len() / 20).max(1);
    for s in tunnels.iter_mut().step_by(stride) {
        s.write_all(&frame).await?;
        s.read_exact(&mut resp).await?;
    }
    let first = &points[1];
    let last = &points[points.len() - 1];
    let slope = (last["rss_kib"].as_f64().unwrap() - first["rss_kib"].as_f64().unwrap())
        / (last["tunnels"].as_f64().unwrap() - first["tunnels"].as_f64().unwrap());
    let first_slope =
        (first["rss_kib"].as_f64().unwrap() - base as f64) / first["tunnels"].as_f64().unwrap();
    Ok(json!({
        "points": points,
        "kib_per_tunnel": slope,
        "kib_per_tunnel_first_step": first_slope,
    }))
}

/// Keeps `tunnels` busy with one 64 B echo per tunnel per second; counts tunnels that
/// fail. Returns the drop counter and a stop flag.
fn echo_load(
    tunnels: Vec<Stream>,
) -> (
    Arc<AtomicU64>,
    Arc<AtomicU64>,
    tokio::sync::watch::Sender<bool>,
) {
    let dropped = Arc::new(AtomicU64::new(0));
    let echoed = Arc::new(AtomicU64::new(0));
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    for (i, mut s) in tunnels.into_iter().enumerate() {
        let (dropped, echoed, mut stop) = (dropped.clone(), echoed.clone(), stop_rx.clone());
        tokio::spawn(async move {
            let frame = ws::client_frame(&[b'z'; 64]);
            let mut resp = [0u8; 66];
            // Spread the tunnels over the second.
            tokio::time::sleep(Duration::from_micros((i as u64 * 997) % 1_000_000)).await;
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            loop {
                tokio::select! {
                    _ = tick.tick() => {}
                    _ = stop.changed() => return,
                }
                let ok = async {
                    s.write_all(&frame).await?;
                    tokio::time::timeout(Duration::from_secs(5), s.read_exact(&mut resp))
                        .await
                        .map_err(|_| std::io::Error::other("echo timeout"))??;
                    std::io::Result::Ok(())
                }
                .await;
                match ok {
                    Ok(()) => {
                        echoed.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(_) => {
                        dropped.fetch_add(1, Ordering::Relaxed);
                        return;
                    }
                }
            }
        });
    }
    (dropped, echoed, stop_tx)
}

pub async fn push(
    c: &Common,
    api: &str,
    token: &str,
    tunnels: usize,
    changes: usize,
    backend: &str,
    nodes: usize,
) -> anyhow::Result<Value> {
    let http = reqwest::Client::new();
    let url = |p: &str| format!("{}/api/v1{p}", api.trim_end_matches('/'));
    let open = open_tunnels(c, tunnels).await?;
    let (dropped, echoed, stop) = echo_load(open);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let cpu = CpuWatch::start(&c.pids);
    let mut doc: Value = http
        .get(url(&format!("/backends/{backend}")))
        .bearer_auth(token)
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    let mut times = Vec::new();
    for i in 0..changes {
        doc["servers"][0]["weight"] = json!(1 + (i % 2) + 1);
        let resp = http
            .put(url(&format!("/backends/{backend}")))
            .bearer_auth(token)
            .json(&doc)
            .send()
            .await?;
        let t0 = Instant::now();
        let body: Value = resp.error_for_status()?.json().await?;
        let version = body["version"]
            .as_u64()
            .context("no version in the reply")?;
        loop {
            let list: Value = http
                .get(url("/nodes"))
                .bearer_auth(token)
                .send()
                .await?
                .json()
                .await?;
            let acked = list
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter(|n| {
                            n["connected"] == true && n["applied_version"].as_u64() >= Some(version)
                        })
                        .count()
                })
                .unwrap_or(0);
            if acked >= nodes {
                break;
            }
            if t0.elapsed() > Duration::from_secs(30) {
                bail!("change {i} (version {version}): only {acked}/{nodes} nodes acked in 30 s");
            }
            tokio::time::sleep(Duration::from_micros(500)).await;
        }
        times.push(us(t0.elapsed()));
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let _ = stop.send(true);
    let cpu = cpu.finish();
    Ok(json!({
        "changes": changes,
        "nodes": nodes,
        "tunnels": tunnels,
        "ack": percentiles(times),
        "tunnels_dropped": dropped.load(Ordering::Relaxed),
        "echoes": echoed.load(Ordering::Relaxed),
        "cpu": cpu,
    }))
}

pub async fn reload(
    c: &Common,
    tunnels: usize,
    reloads: usize,
    cmd: &str,
) -> anyhow::Result<Value> {
    let open = open_tunnels(c, tunnels).await?;
    let (dropped, echoed, stop) = echo_load(open);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let mut times = Vec::new();
    for i in 0..reloads {
        let t0 = Instant::now();
        let status = tokio::process::Command::new("sh")
            .arg("-c")
            .arg(cmd)
            .status()
            .await?;
        if !status.success() {
            bail!("reload {i} failed: {status}");
        }
        // Done when a new connection is served again.
        loop {
            if c.connect().await.is_ok() {
                break;
            }
            if t0.elapsed() > Duration::from_secs(30) {
                bail!("no new connection accepted 30 s after reload {i}");
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        times.push(us(t0.elapsed()));
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let _ = stop.send(true);
    Ok(json!({
        "reloads": reloads,
        "tunnels": tunnels,
        "reload": percentiles(times),
        "tunnels_dropped": dropped.load(Ordering::Relaxed),
        "echoes": echoed.load(Ordering::Relaxed),
    }))
}
