//! `sluice-dp`: a data-plane node. Needs only the control plane's address and a token.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::Parser;
use sluice_data_plane::cache::SnapshotCache;
use sluice_data_plane::proxy::busy::{self, BusyPolling};
use sluice_data_plane::proxy::{workers, Workers};
use sluice_data_plane::{control, Node};

/// mimalloc: cheaper small allocations on the request path than the system allocator
/// (≈ 6 % more upgrades per CPU-second in the handshake benchmark), and, in its v2 line,
/// less resident memory per idle tunnel than both the system allocator and mimalloc v3,
/// which keeps freed pages resident until it is next called (1.7 vs 2.2 vs 3.6–4.1 KiB
/// per tunnel measured with `bench/run.sh`'s idle workload).
#[cfg(feature = "mimalloc")]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Sluice data-plane node.
#[derive(Parser, Debug)]
#[command(name = "sluice-dp", version, about)]
struct Args {
    /// The control plane's node endpoint; several replicas comma-separated, tried in turn.
    #[arg(
        long,
        env = "SLUICE_CONTROL_PLANE",
        default_value = "http://127.0.0.1:7081"
    )]
    control_plane: String,
    /// CA certificate(s), PEM, to verify an `https://` control plane with (its
    /// `--node-tls-cert` or the CA that issued it).
    #[arg(long, env = "SLUICE_CONTROL_PLANE_CA")]
    control_plane_ca: Option<std::path::PathBuf>,
    /// A bootstrap token (from `POST /api/v1/bootstrap-tokens`) or the control plane's
    /// fleet-wide node token: the node enrolls with it once for a credential of its own,
    /// kept in `--state-dir` and used from then on.
    #[arg(long, env = "SLUICE_NODE_TOKEN", hide_env_values = true)]
    token: String,
    /// This node's identity in the fleet (default: the host name).
    #[arg(long, env = "SLUICE_NODE_ID")]
    node_id: Option<String>,
    /// Labels, e.g. `zone=a,role=edge`.
    #[arg(long, env = "SLUICE_NODE_LABELS", default_value = "")]
    labels: String,
    /// How often traffic counters are reported.
    #[arg(long, env = "SLUICE_STATS_INTERVAL", default_value = "2s", value_parser = humantime::parse_duration)]
    stats_interval: Duration,
    /// Where the last applied snapshot is kept, so the node serves it at once when it
    /// starts while the control plane is away (it holds TLS keys: keep it private).
    /// Without it the node serves nothing until the control plane answers.
    #[arg(long, env = "SLUICE_STATE_DIR")]
    state_dir: Option<std::path::PathBuf>,
    /// Admin listener: Prometheus metrics at /metrics, liveness at /healthz, readiness at
    /// /readyz, listeners at /listeners.
    #[arg(long, env = "SLUICE_ADMIN_LISTEN", default_value = "127.0.0.1:7082")]
    admin_listen: std::net::SocketAddr,
    /// Access-log format: `haproxy` (like `option httplog`) or `json`. The log goes to
    /// stderr, one bare record per line, under the `sluice::access` target.
    #[arg(long, env = "SLUICE_LOG_FORMAT", default_value = "haproxy", value_parser = ["haproxy", "json"])]
    log_format: String,
    /// Share listening ports with other processes (SO_REUSEPORT): several nodes on one
    /// host, or a new node binary started beside the old one.
    #[arg(long, env = "SLUICE_REUSE_PORT")]
    reuse_port: bool,
    /// Worker threads serving connections (default: one per core).
    #[arg(long, env = "SLUICE_WORKER_THREADS")]
    worker_threads: Option<usize>,
    /// How connections are spread over the worker threads: `per-core` — a
    /// single-threaded runtime per thread with its own listening socket on every bind
    /// (SO_REUSEPORT), so a connection and its tunnel never change threads, with the
    /// control stream, health checks and admin listener on the main thread (with one
    /// worker, on that thread, the node then a single thread); `shared` —
    /// tokio's multi-thread scheduler, threads stealing work from each other, one
    /// listening socket per bind. `per-core` measured lower latency and more messages
    /// per CPU-second (BENCHMARKS.md); with `shared`, an idle thread takes work queued on
    /// a busy one.
    #[arg(long, env = "SLUICE_RUNTIME", default_value = "per-core", value_parser = ["per-core", "shared"])]
    runtime: String,
    /// On SIGTERM/SIGINT: stop accepting, let open connections and tunnels finish for at
    /// most this long, then close the tunnels still open and exit. A second signal exits
    /// at once.
    #[arg(long, env = "SLUICE_DRAIN_TIMEOUT", default_value = "30s", value_parser = humantime::parse_duration)]
    drain_timeout: Duration,
    /// Keep the threads serving connections polling for I/O instead of sleeping between
    /// events: `always` (the default when no value is given; HAProxy's `busy-polling`),
    /// each worker thread then using a whole core at all times; or within a window of
    /// the last traffic a thread moved (`--busy-polling=200us`), so that an idle node
    /// still sleeps. No message then waits for a sleeping CPU to wake: on a virtual
    /// machine that halts its idle CPUs this cut the added latency at 10k msgs/s from
    /// about 200 µs to 80–130 µs (BENCHMARKS.md, `busylatency`). Needs `--runtime per-core`.
    #[arg(long, env = "SLUICE_BUSY_POLLING", value_name = "always|WINDOW", num_args = 0..=1,
          require_equals = true, default_missing_value = "always")]
    busy_polling: Option<BusyPolling>,
}

fn parse_labels(s: &str) -> anyhow::Result<HashMap<String, String>> {
    let mut out = HashMap::new();
    for pair in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let Some((k, v)) = pair.split_once('=') else {
            bail!("label {pair:?} is not key=value");
        };
        out.insert(k.trim().to_string(), v.trim().to_string());
    }
    Ok(out)
}

/// The node's id: `--node-id`, else the host name. The control plane refuses ids outside
/// its name rule, so a bad one is refused here, at start, with the reason.
fn node_id(given: Option<String>) -> anyhow::Result<String> {
    let id = given.unwrap_or_else(default_node_id);
    let valid = !id.is_empty()
        && id.len() <= 128
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | ':'));
    anyhow::ensure!(
        valid,
        "--node-id {id:?} is not 1-128 of A-Z a-z 0-9 _ - . : (set --node-id)"
    );
    Ok(id)
}

/// Serves the cached snapshot, if there is a usable one, before the control plane is
/// reached; anything wrong with it is logged and the node waits for its control plane.
fn boot_from_cache(node: &Node, cache: &SnapshotCache) {
    match cache.load() {
        Ok(Some(snap)) => match node.apply(&snap) {
            Ok(()) => tracing::info!(
                version = snap.version,
                "serving the cached snapshot until the control plane answers"
            ),
            Err(error) => {
                tracing::warn!(%error, version = snap.version, "the cached snapshot does not apply; ignoring it")
            }
        },
        Ok(None) => tracing::info!("no cached snapshot yet"),
        Err(error) => tracing::warn!(%error, "ignoring the snapshot cache"),
    }
}

fn default_node_id() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "sluice-dp".to_string())
}

fn main() -> anyhow::Result<()> {
    sluice_data_plane::clock::started_unix_ms();
    init_logging();
    let args = Args::parse();
    sluice_data_plane::proxy::log::set_format(if args.log_format == "json" {
        sluice_data_plane::proxy::log::LogFormat::Json
    } else {
        sluice_data_plane::proxy::log::LogFormat::Haproxy
    });
    let cfg = control::ControlConfig {
        endpoints: args
            .control_plane
            .split(',')
            .map(|e| e.trim().to_string())
            .filter(|e| !e.is_empty())
            .collect(),
        token: args.token.clone(),
        credential: Arc::new(
            sluice_data_plane::credential::Credential::load(
                &node_id(args.node_id.clone())?,
                args.state_dir.clone(),
            )
            .context("reading the kept credential")?,
        ),
        node_id: node_id(args.node_id.clone())?,
        labels: parse_labels(&args.labels).context("parsing --labels")?,
        stats_interval: args.stats_interval,
        ca_pem: match &args.control_plane_ca {
            Some(path) => {
                Some(std::fs::read(path).with_context(|| format!("reading {}", path.display()))?)
            }
            None => None,
        },
        cache: args.state_dir.clone().map(SnapshotCache::new),
    };
    if cfg.endpoints.is_empty() {
        bail!("--control-plane names no endpoint");
    }
    if cfg.endpoints.iter().any(|e| e.starts_with("https://")) && cfg.ca_pem.is_none() {
        bail!("an https:// control plane needs --control-plane-ca");
    }
    if args.busy_polling.is_some() && args.runtime != "per-core" {
        bail!("--busy-polling needs --runtime per-core (a thread of tokio's shared scheduler cannot be kept to one task)");
    }
    let threads = args.worker_threads.unwrap_or_else(|| {
        std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
    });
    let mut builder = if args.runtime == "per-core" {
        let mut main = tokio::runtime::Builder::new_current_thread();
        if args.busy_polling.is_some() && threads <= 1 {
            // With one worker this runtime serves connections (see `Workers::per_core`);
            // with more, the workers' runtimes get the hook and this one sleeps.
            main.on_thread_park(busy::before_park);
        }
        main
    } else {
        let mut shared = tokio::runtime::Builder::new_multi_thread();
        shared.worker_threads(threads);
        shared
    };
    let runtime = builder
        .enable_all()
        .build()
        .context("starting the runtime")?;
    let workers = if args.runtime == "per-core" {
        Workers::per_core(threads, runtime.handle(), args.busy_polling)
            .context("starting the worker threads")?
    } else {
        Workers::Shared
    };
    runtime.block_on(async move {
        // The worker runtimes anchor their own timers; this is the main one's (which
        // serves connections with one worker per core, or as the shared runtime).
        tokio::spawn(workers::anchor_timers());
        let node = Arc::new(Node::with_workers(args.reuse_port, workers));
        let admin = tokio::net::TcpListener::bind(args.admin_listen)
            .await
            .with_context(|| format!("binding the admin listener on {}", args.admin_listen))?;
        let admin_addr = admin.local_addr()?;
        tokio::spawn(sluice_data_plane::admin::serve(admin, node.clone()));
        if let Some(cache) = &cfg.cache {
            boot_from_cache(&node, cache);
        }
        let (shutdown_tx, shutdown_rx) = tokio::sync::watch::channel(false);
        println!(
            "sluice-dp ready node_id={} control_plane={} admin=http://{admin_addr}",
            cfg.node_id,
            cfg.endpoints.join(",")
        );
        let control = tokio::spawn(control::run(cfg, node.clone(), shutdown_rx));
        shutdown_signal().await;
        drain(&node, args.drain_timeout).await;
        let _ = shutdown_tx.send(true);
        let _ = control.await;
        anyhow::Ok(())
    })
}

/// Diagnostics and the access log, both on stderr and filtered by `RUST_LOG`. Access-log
/// records are written bare, one per line (an HAProxy-style line, or a JSON object with
/// `--log-format json`, ready for a log shipper), and carry their own date; everything
/// else gets the usual timestamp, level and target.
fn init_logging() {
    use tracing_subscriber::filter::filter_fn;
    use tracing_subscriber::prelude::*;
    const ACCESS: &str = "sluice::access";
    let access = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .without_time()
        .with_level(false)
        .with_target(false)
        .with_filter(filter_fn(|m| m.target() == ACCESS));
    let diagnostics = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_filter(filter_fn(|m| m.target() != ACCESS));
    tracing_subscriber::registry()
        .with(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with(access)
        .with(diagnostics)
        .init();
}

/// Stops accepting, waits for open requests and tunnels to finish (at most `timeout`, or
/// until a second signal), then closes the tunnels still open.
async fn drain(node: &Node, timeout: Duration) {
    use sluice_data_plane::proxy::drain;
    node.stop_accepting();
    drain::start();
    tracing::info!(
        tunnels = drain::open_tunnels(),
        ?timeout,
        "stopping: no new connections; draining open ones"
    );
    let deadline = tokio::time::Instant::now() + timeout;
    let mut again = std::pin::pin!(shutdown_signal());
    loop {
        if drain::open_tunnels() == 0 && drain::in_flight() == 0 {
            tracing::info!("drained");
            return;
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(50)) => {}
            _ = tokio::time::sleep_until(deadline) => break,
            _ = &mut again => break,
        }
    }
    let closed = drain::close_tunnels();
    tracing::info!(
        tunnels = closed,
        "drain ended: closing the tunnels still open"
    );
    // Give the aborted tunnels a moment to write their log lines.
    let until = tokio::time::Instant::now() + Duration::from_secs(1);
    while drain::open_tunnels() > 0 && tokio::time::Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn shutdown_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("installing the SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
