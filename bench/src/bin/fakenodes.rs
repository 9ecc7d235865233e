//! `sluice-bench-fakenodes`: many light data-plane nodes for measuring the control
//! plane. Each opens its own `Fleet.Session` (its own connection, as real nodes do),
//! says `Hello`, acks every snapshot, and reports `Stats` for a fixed set of objects
//! every `--interval` with counters growing at a steady rate — what the control plane's
//! traffic history takes in from a fleet. Runs for `--seconds`, then exits.

use std::collections::HashMap;
use std::time::Duration;

use clap::Parser;
use sha2::Digest as _;
use sluice_proto::v1::{self as pb, fleet_client::FleetClient, node_message, NodeMessage};
use tokio_stream::wrappers::ReceiverStream;

#[derive(Parser)]
#[command(name = "sluice-bench-fakenodes")]
struct Args {
    /// The control plane's node endpoint, e.g. http://127.0.0.1:7081.
    #[arg(long)]
    control_plane: String,
    #[arg(long)]
    token: String,
    /// How many nodes.
    #[arg(long, default_value_t = 200)]
    nodes: usize,
    /// Stats interval of each node (the node's default is 2 s).
    #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
    interval: Duration,
    /// How long to run.
    #[arg(long, default_value_t = 600)]
    seconds: u64,
    /// Frontends per node.
    #[arg(long, default_value_t = 2)]
    frontends: usize,
    /// Backends per node, each with `--servers` servers.
    #[arg(long, default_value_t = 3)]
    backends: usize,
    #[arg(long, default_value_t = 4)]
    servers: usize,
    /// Node ids are `<prefix>-NNNN` (several processes on one fleet need different ones).
    #[arg(long, default_value = "fake")]
    prefix: String,
    /// Print `acked <node> <version> <unix ms>` on stdout for every snapshot acked, to
    /// time how long a version takes to reach the fleet.
    #[arg(long)]
    log_acks: bool,
}

/// The node's report after `ticks` intervals: every counter grows by a per-object rate,
/// gauges wave around a level.
fn stats(a: &Args, node: usize, started: i64, ticks: u64) -> pb::Stats {
    let grow = |rate: u64| rate * ticks;
    let wave = |level: u64| level + (ticks + node as u64) % 7;
    pb::Stats {
        applied_version: 0,
        unix_ms: started + (ticks as i64) * a.interval.as_millis() as i64,
        started_unix_ms: started,
        frontends: (0..a.frontends)
            .map(|f| pb::FrontendStats {
                name: format!("fe-{f}"),
                current_connections: wave(20),
                total_connections: grow(40),
                current_tunnels: wave(100),
                total_upgrades: grow(10),
                total_requests: grow(40),
                bytes_in: grow(50_000),
                bytes_out: grow(200_000),
                denied: grow(1),
                responses_by_class: vec![grow(10), grow(27), grow(1), grow(1), ticks / 5],
                bad_requests: ticks / 10,
                tls_handshake_failures: 0,
            })
            .collect(),
        backends: (0..a.backends)
            .map(|b| pb::BackendStats {
                name: format!("be-{b}"),
                servers: (0..a.servers)
                    .map(|s| pb::ServerStats {
                        name: format!("srv-{s}"),
                        current_connections: wave(5),
                        total_connections: grow(8),
                        current_tunnels: wave(15),
                        connect_errors: ticks / 20,
                        health: pb::Health::Up as i32,
                        health_changed_unix_ms: started,
                        health_reason: "2 check(s) passed".into(),
                        total_upgrades: grow(2),
                        bytes_in: grow(8_000),
                        bytes_out: grow(30_000),
                        timeouts: 0,
                        bad_responses: 0,
                        tunnel_errors: 0,
                        responses_by_class: vec![grow(2), grow(6), 0, 0, 0],
                    })
                    .collect(),
                total_requests: grow(30),
                no_server: 0,
                queued: 0,
                queue_timeouts: 0,
            })
            .collect(),
        // Reported with acks; stats leave it empty.
        applied_digest: Vec::new(),
    }
}

async fn node(a: &Args, i: usize) -> anyhow::Result<()> {
    let channel = tonic::transport::Endpoint::from_shared(a.control_plane.clone())?
        .connect()
        .await?;
    let mut client = FleetClient::new(channel);
    let (tx, rx) = tokio::sync::mpsc::channel(8);
    tx.send(NodeMessage {
        msg: Some(node_message::Msg::Hello(pb::Hello {
            node_id: format!("{}-{i:04}", a.prefix),
            labels: HashMap::from([("zone".to_string(), format!("z{}", i % 4))]),
            software_version: "bench".into(),
            features: vec!["http2".into()],
            ..Default::default()
        })),
    })
    .await?;
    let mut request = tonic::Request::new(ReceiverStream::new(rx));
    request
        .metadata_mut()
        .insert("authorization", format!("Bearer {}", a.token).parse()?);
    let mut inbound = client.session(request).await?.into_inner();
    let started = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_millis() as i64;
    let mut tick = tokio::time::interval(a.interval);
    // Spread the nodes' reports over the interval, as real start times do.
    tokio::time::sleep(a.interval.mul_f64(i as f64 / a.nodes as f64)).await;
    let mut ticks = 0u64;
    loop {
        tokio::select! {
            msg = inbound.message() => match msg? {
                Some(pb::ControlMessage { msg: Some(pb::control_message::Msg::Snapshot(s)) }) => {
                    // As a node does: the digest of what it decoded, encoded again.
                    let digest = sha2::Sha256::digest(prost::Message::encode_to_vec(&s)).to_vec();
                    tx.send(NodeMessage { msg: Some(node_message::Msg::Ack(pb::Ack { version: s.version, digest })) }).await?;
                    if a.log_acks {
                        let now = std::time::SystemTime::now()
                            .duration_since(std::time::UNIX_EPOCH)?
                            .as_millis();
                        println!("acked {}-{i:04} {} {now}", a.prefix, s.version);
                    }
                }
                Some(_) => {}
                None => anyhow::bail!("the control plane closed the stream"),
            },
            _ = tick.tick() => {
                ticks += 1;
                let report = stats(a, i, started, ticks);
                tx.send(NodeMessage { msg: Some(node_message::Msg::Stats(report)) }).await?;
            }
        }
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: &'static Args = Box::leak(Box::new(Args::parse()));
    let mut tasks = Vec::new();
    for i in 0..args.nodes {
        tasks.push(tokio::spawn(async move {
            if let Err(e) = node(args, i).await {
                eprintln!("{}-{i:04}: {e}", args.prefix);
            }
        }));
    }
    eprintln!(
        "{} fake nodes reporting every {:?}",
        args.nodes, args.interval
    );
    tokio::time::sleep(Duration::from_secs(args.seconds)).await;
    for t in tasks {
        t.abort();
    }
    Ok(())
}
