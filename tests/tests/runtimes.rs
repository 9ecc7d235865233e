//! The node's two ways of running connections, through the real binary: `--runtime
//! per-core` (the default: a single-threaded runtime per worker thread, each with a
//! listening socket of its own on every bind) and `--runtime shared` (tokio's
//! multi-thread scheduler, one socket per bind). With either, WebSockets on many
//! connections at once are served on a port the kernel chose, `maxconn` holds however
//! many accept loops there are, and a bind the configuration drops is closed on every
//! worker while the tunnels it accepted go on. With one worker, `per-core` serves on the
//! node's own thread and starts no worker thread. With `--busy-polling`, the threads
//! that serve connections keep running between events (HAProxy's `busy-polling`) and
//! serve the same; with `--busy-polling=WINDOW` only for that long after traffic; the
//! shared runtime refuses it.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use sluice_tests::harness::{any_port, closed_addr, eventually, simple_config, Fixture};
use sluice_tests::raw;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;

const WAIT: Duration = Duration::from_secs(10);
const WORKERS: usize = 3;
/// The frontend's `maxconn`, and the tunnels opened to fill it.
const MAXCONN: usize = 30;

/// The node's threads: each one's name and the CPU time it has used (user and system,
/// in clock ticks).
fn threads(pid: u32) -> Vec<(String, u64)> {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return Vec::new();
    };
    tasks
        .filter_map(|t| {
            let dir = t.ok()?.path();
            let name = std::fs::read_to_string(dir.join("comm")).ok()?;
            let stat = std::fs::read_to_string(dir.join("stat")).ok()?;
            // Fields after the parenthesised name: utime is the 14th and stime the 15th
            // of the whole line.
            let rest: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
            let ticks = rest.get(11)?.parse::<u64>().ok()? + rest.get(12)?.parse::<u64>().ok()?;
            Some((name.trim().to_string(), ticks))
        })
        .collect()
}

/// The names of the node's threads.
fn thread_names(pid: u32) -> Vec<String> {
    threads(pid).into_iter().map(|(name, _)| name).collect()
}

/// The CPU time each of the node's threads whose name starts with `prefix` has used.
fn cpu_ticks(pid: u32, prefix: &str) -> Vec<u64> {
    threads(pid)
        .into_iter()
        .filter(|(name, _)| name.starts_with(prefix))
        .map(|(_, ticks)| ticks)
        .collect()
}

/// A node with two worker threads started with `--busy-polling<mode>`, and its pid once
/// both workers run.
async fn two_busy_workers(mode: &str) -> (Fixture, u32) {
    let flag = format!("--busy-polling{mode}");
    let f = Fixture::start_with(&["echo-1"], &[], &["--worker-threads", "2", &flag]).await;
    let pid = f.dp.proc.pid();
    eventually(WAIT, "the node's worker threads", || async {
        (cpu_ticks(pid, "sluice-worker-").len() == 2).then_some(())
    })
    .await;
    (f, pid)
}

/// Runs the whole case on a node started with `runtime` and `workers` worker threads
/// (and `extra` arguments); `worker` names its worker threads, `count` how many of them
/// must exist.
async fn serves_on_every_worker(
    runtime: &str,
    workers: usize,
    (worker, count): (&str, usize),
    extra: &[&str],
) {
    let workers = workers.to_string();
    let mut args = vec!["--runtime", runtime, "--worker-threads", &workers];
    args.extend_from_slice(extra);
    let f = Fixture::start_with(&["echo-1"], &[], &args).await;
    // (A thread takes its name once it runs.)
    let pid = f.dp.proc.pid();
    let named = || {
        thread_names(pid)
            .iter()
            .filter(|n| n.starts_with(worker))
            .count()
    };
    eventually(WAIT, "the node's worker threads", || async {
        (named() >= count).then_some(())
    })
    .await;
    let server = f.backend("echo-1").addr;
    let configured = any_port("127.0.0.1");
    let mut doc = simple_config(configured, &[("echo", &[server])], "echo");
    doc["defaults"]["maxconn"] = MAXCONN.into();
    f.apply(&doc).await;
    let bind = f.bound(configured).await;
    let url = format!("ws://{bind}/ws");

    // Tunnels up to maxconn: the kernel spreads them over the workers' sockets, each is
    // served where it was accepted.
    let mut tunnels = Vec::new();
    for _ in 0..MAXCONN {
        let (ws, resp) = tokio_tungstenite::connect_async(&url)
            .await
            .expect("upgrade through the node");
        assert_eq!(resp.status(), 101);
        tunnels.push(ws);
    }
    for (i, ws) in tunnels.iter_mut().enumerate() {
        ws.send(Message::text(format!("m{i}"))).await.unwrap();
    }
    for (i, ws) in tunnels.iter_mut().enumerate() {
        assert_eq!(
            ws.next().await.unwrap().unwrap(),
            Message::text(format!("m{i}"))
        );
    }

    // Full: a new connection is not served, whichever worker's socket it lands on…
    let mut waiting = TcpStream::connect(bind).await.unwrap();
    waiting
        .write_all(raw::upgrade("/ws", "").as_bytes())
        .await
        .unwrap();
    let mut head = [0u8; 12];
    let early = tokio::time::timeout(Duration::from_millis(700), waiting.read(&mut head)).await;
    assert!(early.is_err(), "served beyond maxconn: {early:?}");
    // …until a tunnel closes.
    drop(tunnels.pop());
    tokio::time::timeout(WAIT, waiting.read_exact(&mut head))
        .await
        .expect("served once a tunnel closed")
        .unwrap();
    assert_eq!(&head, b"HTTP/1.1 101");

    // A configuration on another bind: the old one closes on every worker (no
    // connection gets through on any of its sockets), the tunnels stay open.
    // (A fixed port: `127.0.0.1:0` again would be the same bind.)
    let moved = closed_addr();
    f.apply(&simple_config(moved, &[("echo", &[server])], "echo"))
        .await;
    let new = f.bound(moved).await;
    eventually(WAIT, "the old bind closed on every worker", || async {
        for _ in 0..(8 * WORKERS) {
            if TcpStream::connect(bind).await.is_ok() {
                return None;
            }
        }
        Some(())
    })
    .await;
    for (i, ws) in tunnels.iter_mut().enumerate() {
        ws.send(Message::text(format!("again {i}"))).await.unwrap();
        assert_eq!(
            ws.next().await.unwrap().unwrap(),
            Message::text(format!("again {i}"))
        );
    }
    let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{new}/ws"))
        .await
        .expect("the new bind serves");
    ws.send(Message::text("new")).await.unwrap();
    assert_eq!(ws.next().await.unwrap().unwrap(), Message::text("new"));
    assert_eq!(named(), count, "worker threads: {:?}", thread_names(pid));
}

#[tokio::test]
async fn a_runtime_per_core_accepts_on_each_workers_socket() {
    serves_on_every_worker("per-core", WORKERS, ("sluice-worker-", WORKERS), &[]).await;
}

#[tokio::test]
async fn one_worker_per_core_is_the_nodes_own_thread() {
    serves_on_every_worker("per-core", 1, ("sluice-worker-", 0), &[]).await;
}

#[tokio::test]
async fn the_shared_runtime_serves_the_same() {
    serves_on_every_worker("shared", WORKERS, ("tokio-rt-worker", WORKERS), &[]).await;
}

#[tokio::test]
async fn busy_polling_workers_keep_running_between_events_and_serve_the_same() {
    let (f, pid) = two_busy_workers("").await;
    // With no traffic at all, each worker thread keeps using CPU: a second of it each
    // (100 ticks), where a worker that sleeps between events uses next to none.
    eventually(WAIT, "each idle worker thread running", || async {
        let ticks = cpu_ticks(pid, "sluice-worker-");
        (ticks.len() == 2 && ticks.iter().all(|&t| t >= 100)).then_some(())
    })
    .await;
    // The main thread (the control stream, no connections) sleeps between its events:
    // while the workers use another half second each, it uses a fraction of that.
    let main_before: u64 = cpu_ticks(pid, "sluice-dp").iter().sum();
    let workers_before = *cpu_ticks(pid, "sluice-worker-").iter().min().unwrap();
    eventually(WAIT, "another half second on each worker", || async {
        let ticks = cpu_ticks(pid, "sluice-worker-");
        ticks
            .iter()
            .all(|&t| t >= workers_before + 50)
            .then_some(())
    })
    .await;
    let main_after: u64 = cpu_ticks(pid, "sluice-dp").iter().sum();
    assert!(
        main_after - main_before < 20,
        "the main thread used {} ticks",
        main_after - main_before
    );
    drop(f);
    serves_on_every_worker(
        "per-core",
        WORKERS,
        ("sluice-worker-", WORKERS),
        &["--busy-polling"],
    )
    .await;
    serves_on_every_worker("per-core", 1, ("sluice-worker-", 0), &["--busy-polling"]).await;
}

#[tokio::test]
async fn busy_polling_within_a_window_follows_traffic() {
    let (f, pid) = two_busy_workers("=3s").await;
    let server = f.backend("echo-1").addr;
    let configured = any_port("127.0.0.1");
    f.apply(&simple_config(configured, &[("echo", &[server])], "echo"))
        .await;
    let bind = f.bound(configured).await;
    let total = || cpu_ticks(pid, "sluice-worker-").iter().sum::<u64>();
    // No traffic yet: the workers sleep. Watched over a second, as long as an idle
    // worker that polls would take to use most of one.
    let idle = total();
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(
        total() - idle < 20,
        "idle workers used {} ticks",
        total() - idle
    );

    // One message through: the worker that carried it polls for the window after it…
    let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{bind}/ws"))
        .await
        .expect("upgrade through the node");
    ws.send(Message::text("ping")).await.unwrap();
    assert_eq!(ws.next().await.unwrap().unwrap(), Message::text("ping"));
    let before = total();
    eventually(WAIT, "a worker polling after the traffic", || async {
        (total() >= before + 100).then_some(())
    })
    .await;
    // …and sleeps again once the window has passed with nothing more moved.
    eventually(
        Duration::from_secs(15),
        "the workers asleep again",
        || async {
            let t = total();
            tokio::time::sleep(Duration::from_millis(500)).await;
            (total() - t < 10).then_some(())
        },
    )
    .await;
    ws.send(Message::text("still open")).await.unwrap();
    assert_eq!(
        ws.next().await.unwrap().unwrap(),
        Message::text("still open")
    );
}

#[test]
fn the_shared_runtime_refuses_busy_polling() {
    let out = std::process::Command::new(sluice_tests::harness::bin_dir().join("sluice-dp"))
        .args(["--control-plane", "http://127.0.0.1:1", "--token", "t"])
        .args(["--runtime", "shared", "--busy-polling"])
        .output()
        .expect("run sluice-dp");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--busy-polling needs --runtime per-core"),
        "{err}"
    );
}

#[tokio::test]
async fn a_port_shared_out_by_another_process_is_refused_without_reuse_port() {
    let f = Fixture::start_with(&["echo-1"], &[], &["--worker-threads", "2"]).await;
    // Listening with SO_REUSEPORT, as another node would: the workers' own sockets
    // (SO_REUSEPORT among themselves) must not join it.
    let squatter = tokio::net::TcpSocket::new_v4().unwrap();
    squatter.set_reuseaddr(true).unwrap();
    squatter.set_reuseport(true).unwrap();
    squatter.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let squatter = squatter.listen(16).unwrap();
    let taken = squatter.local_addr().unwrap();
    let server = f.backend("echo-1").addr;
    let api = f.cp.api();
    let bad = api
        .put_config(&simple_config(taken, &[("echo", &[server])], "echo"))
        .await;
    let nack = eventually(WAIT, "the node's nack", || async {
        let node = api.node("node-a").await?;
        let nack = node.get("last_nack")?.clone();
        (nack["version"] == bad).then_some(nack)
    })
    .await;
    let reason = nack["reason"].as_str().unwrap_or_default();
    assert!(
        reason.contains("cannot bind") && reason.contains(&taken.to_string()),
        "{nack}"
    );
}
