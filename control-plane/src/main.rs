//! `sluice-cp`: starts the control plane — store, REST API and dashboard, node stream.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use sluice_control_plane::series::Series;
use sluice_control_plane::{
    api, app, auth, clock, grpc, registry, rollout,
    snapshot::ConfigService,
    store::{Database, Store},
};
use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;

/// Sluice control plane.
#[derive(Parser, Debug)]
#[command(name = "sluice-cp", version, about)]
struct Args {
    /// REST API, dashboard and /metrics.
    #[arg(long, env = "SLUICE_API_LISTEN", default_value = "127.0.0.1:7080")]
    api_listen: SocketAddr,
    /// gRPC listener for data-plane nodes.
    #[arg(long, env = "SLUICE_NODE_LISTEN", default_value = "127.0.0.1:7081")]
    node_listen: SocketAddr,
    /// The database: a SQLite file (or `sqlite:` URL), created if missing, or a PostgreSQL
    /// URL (`postgres://user:password@host/db`).
    #[arg(long, env = "SLUICE_DATABASE", default_value = "sluice.db")]
    database: String,
    /// Bearer token for the REST API. Unset: the stored one, or a new one printed once.
    #[arg(long, env = "SLUICE_ADMIN_TOKEN", hide_env_values = true)]
    admin_token: Option<String>,
    /// Token data-plane nodes present. Unset: the stored one, or a new one printed once.
    #[arg(long, env = "SLUICE_NODE_TOKEN", hide_env_values = true)]
    node_token: Option<String>,
    /// Certificate chain (PEM) for TLS on the node listener. With `--node-tls-key`, nodes
    /// connect with `https://` — do this whenever the node stream leaves the host: it
    /// carries the private keys of TLS binds.
    #[arg(long, env = "SLUICE_NODE_TLS_CERT", requires = "node_tls_key")]
    node_tls_cert: Option<std::path::PathBuf>,
    /// Private key (PEM) for `--node-tls-cert`.
    #[arg(long, env = "SLUICE_NODE_TLS_KEY", requires = "node_tls_cert")]
    node_tls_key: Option<std::path::PathBuf>,
    /// A node silent for this long is marked offline.
    #[arg(long, env = "SLUICE_NODE_STALE_AFTER", default_value = "15s", value_parser = humantime::parse_duration)]
    node_stale_after: Duration,
    /// Versions whose full documents are kept for GET /api/v1/snapshots/{version}; older
    /// versions keep their summary in the history.
    #[arg(long, env = "SLUICE_HISTORY_KEEP", default_value_t = 500)]
    history_keep: u64,
    /// This replica's name, when several control planes share one (PostgreSQL)
    /// database: the fleet view says which replica each node is connected to, and the
    /// traffic history keeps each replica's nodes apart. Default: the API address.
    #[arg(long, env = "SLUICE_REPLICA_ID")]
    replica_id: Option<String>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(clap::Subcommand, Debug)]
enum Command {
    /// Prints the Sluice configuration document of an haproxy.cfg on stdout, and on
    /// stderr every directive that does not map exactly (with its line); stores nothing.
    Import {
        /// The haproxy.cfg to read.
        file: std::path::PathBuf,
    },
}

/// `sluice-cp import FILE`.
fn import(file: &std::path::Path) -> anyhow::Result<()> {
    let text =
        std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
    let read = |path: &str| std::fs::read_to_string(path).ok();
    let imported = sluice_control_plane::import::import(&text, &read)
        .map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))?;
    for n in &imported.report {
        let kind = serde_json::to_value(n.kind).unwrap_or_default();
        eprintln!(
            "{}:{}: {} ({}): {}",
            file.display(),
            n.line,
            n.directive,
            kind.as_str().unwrap_or(""),
            n.message
        );
    }
    // In the document's own field order when it reads as one.
    let text = match serde_json::from_value::<sluice_control_plane::config::ConfigDocument>(
        imported.document.clone(),
    ) {
        Ok(doc) => serde_json::to_string_pretty(&doc)?,
        Err(_) => serde_json::to_string_pretty(&imported.document)?,
    };
    println!("{text}");
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,sqlx=warn".into()),
        )
        .init();
    let args = Args::parse();
    if let Some(Command::Import { file }) = &args.command {
        return import(file);
    }

    let store = Store::open(&args.database)
        .await
        .with_context(|| format!("opening database {}", args.database))?;
    let admin_token = auth::establish(&store, "admin token", args.admin_token.as_deref())
        .await
        .context("setting up the admin token")?;
    let node_token = auth::establish(&store, "node token", args.node_token.as_deref())
        .await
        .context("setting up the node token")?;
    let config = Arc::new(
        ConfigService::start(store.clone(), args.history_keep)
            .await
            .context("loading the configuration")?,
    );
    let registry = Arc::new(registry::Registry::default());
    let (shutdown_tx, shutdown_rx) = tokio::sync::watch::channel(false);
    let api_listener = TcpListener::bind(args.api_listen)
        .await
        .with_context(|| format!("binding the API listener on {}", args.api_listen))?;
    let node_listener = TcpListener::bind(args.node_listen)
        .await
        .with_context(|| format!("binding the node listener on {}", args.node_listen))?;
    let api_addr = api_listener.local_addr()?;
    let node_addr = node_listener.local_addr()?;
    let replica = args
        .replica_id
        .clone()
        .unwrap_or_else(|| api_addr.to_string());
    // One replica leads rollouts (on SQLite, this one).
    let (leads_tx, leads) = rollout::lease::leadership(&store);
    tokio::spawn(rollout::lease::run(
        store.clone(),
        leads_tx,
        shutdown_rx.clone(),
    ));
    let seat = rollout::controller::Seat {
        replica: replica.clone(),
        stale_after: args.node_stale_after,
        leads,
    };
    let (rollouts, controller) =
        rollout::controller::start(config.clone(), store.clone(), registry.clone(), seat)
            .await
            .context("resuming rollouts")?;
    tokio::spawn(controller.run(config.subscribe(), shutdown_rx.clone()));
    let series = Series::new(store.clone(), clock::unix_ms(), &replica);
    tokio::spawn(series.clone().run(shutdown_rx.clone()));
    // Events other replicas record reach this replica's live feed.
    tokio::spawn(store.clone().follow_events(shutdown_rx.clone()));
    // Versions other replicas commit on the same database are published here too.
    tokio::spawn(config.clone().follow(shutdown_rx.clone()));
    let shared = store.database() == Database::Postgres;
    tokio::spawn(grpc::heartbeat(
        store.clone(),
        registry.clone(),
        series.clone(),
        replica.clone(),
        // Shared: often enough for another replica's rollout gates to read fresh counters.
        match shared {
            true => (args.node_stale_after / 3).min(Duration::from_secs(2)),
            false => args.node_stale_after / 3,
        },
        shutdown_rx.clone(),
    ));

    let state = api::AppState {
        config: config.clone(),
        store: store.clone(),
        registry: registry.clone(),
        series: series.clone(),
        rollouts: rollouts.clone(),
        admin_token,
        stale_after_ms: args.node_stale_after.as_millis() as i64,
        replica: replica.clone(),
    };
    // A database that can be out of reach (PostgreSQL): keep a copy of the credentials.
    let known = Arc::new(grpc::enroll::KnownCredentials::default());
    if shared {
        tokio::spawn(grpc::enroll::keep_known(
            store.clone(),
            known.clone(),
            shutdown_rx.clone(),
        ));
    }
    let fleet = grpc::FleetService {
        known,
        assignments: rollouts.assignments(),
        store,
        registry,
        series,
        node_token,
        stale_after: args.node_stale_after,
        shutdown: shutdown_rx.clone(),
        replica,
    };

    let mut api_shutdown = shutdown_rx.clone();
    let api_task = tokio::spawn(async move {
        axum::serve(api_listener, app(state))
            .with_graceful_shutdown(async move {
                let _ = api_shutdown.wait_for(|s| *s).await;
            })
            .await
    });
    let mut grpc_shutdown = shutdown_rx.clone();
    let mut grpc = tonic::transport::Server::builder();
    let node_scheme = match (&args.node_tls_cert, &args.node_tls_key) {
        (Some(cert), Some(key)) => {
            let cert =
                std::fs::read(cert).with_context(|| format!("reading {}", cert.display()))?;
            let key = std::fs::read(key).with_context(|| format!("reading {}", key.display()))?;
            grpc = grpc
                .tls_config(
                    tonic::transport::ServerTlsConfig::new()
                        .identity(tonic::transport::Identity::from_pem(cert, key)),
                )
                .context("TLS for the node listener")?;
            "https"
        }
        _ => {
            if !node_addr.ip().is_loopback() {
                tracing::warn!(%node_addr, "the node stream is not encrypted and listens beyond loopback; it carries the keys of TLS binds — set --node-tls-cert/--node-tls-key");
            }
            "http"
        }
    };
    let grpc_task = tokio::spawn(
        grpc.http2_keepalive_interval(Some(Duration::from_secs(10)))
            .http2_keepalive_timeout(Some(Duration::from_secs(20)))
            .add_service(grpc::wire::FleetServer::new(fleet))
            .serve_with_incoming_shutdown(TcpListenerStream::new(node_listener), async move {
                let _ = grpc_shutdown.wait_for(|s| *s).await;
            }),
    );

    tracing::info!(%api_addr, %node_addr, version = config.current().snapshot.version, "control plane started");
    println!("sluice-cp ready api=http://{api_addr} node={node_scheme}://{node_addr}");

    shutdown_signal().await;
    tracing::info!("shutting down");
    let _ = shutdown_tx.send(true);
    let _ = tokio::time::timeout(Duration::from_secs(5), async {
        let _ = api_task.await;
        let _ = grpc_task.await;
    })
    .await;
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("installing the SIGTERM handler");
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}
