//! `sluice-bench`: the load side of the benchmark, and the report.
//!
//! Each workload subcommand drives a proxy (or a backend directly), measures, and prints
//! one JSON object: the workload's figures plus the CPU each named process (`--pid
//! name=PID`) used during the measured interval. `bench/run.sh` runs them against each
//! target and `sluice-bench report` turns the collected lines into `BENCHMARKS.md`.

mod h2;
mod report;
mod stats;
mod tls;
mod workloads;
mod ws;

use std::net::SocketAddr;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "sluice-bench",
    about = "WebSocket load generator for Sluice vs HAProxy"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Args, Clone)]
pub struct Common {
    /// Address of the proxy (or backend) under test.
    #[arg(long)]
    pub target: SocketAddr,
    /// Request path of the upgrade.
    #[arg(long, default_value = "/ws/bench")]
    pub path: String,
    /// Measured duration, in seconds.
    #[arg(long, default_value_t = 5.0)]
    pub seconds: f64,
    /// Processes whose CPU time to report, as name=PID (repeatable).
    #[arg(long = "pid", value_parser = parse_pid)]
    pub pids: Vec<(String, u32)>,
    /// Speak TLS to the target: this version, with one cipher suite (TLS 1.3:
    /// TLS_AES_128_GCM_SHA256; TLS 1.2: ECDHE-ECDSA-AES128-GCM-SHA256).
    #[arg(long, requires = "tls_ca")]
    pub tls: Option<tls::Version>,
    /// The certificate (PEM) the target serves, the only one trusted.
    #[arg(long)]
    pub tls_ca: Option<std::path::PathBuf>,
    /// Resume TLS sessions (one cache for the whole workload); off: a full handshake
    /// every time.
    #[arg(long)]
    pub tls_resume: bool,
    /// The TLS client, built once from the flags above.
    #[arg(skip)]
    pub client: Option<tls::Client>,
}

fn parse_pid(s: &str) -> Result<(String, u32), String> {
    let (name, pid) = s.split_once('=').ok_or("expected name=PID")?;
    Ok((name.to_string(), pid.parse().map_err(|_| "bad PID")?))
}

impl Common {
    pub fn duration(&self) -> Duration {
        Duration::from_secs_f64(self.seconds)
    }

    /// Builds the TLS client the flags ask for.
    fn prepare(&mut self) -> anyhow::Result<()> {
        if let (Some(version), Some(ca)) = (self.tls, &self.tls_ca) {
            self.client = Some(tls::Client::new(version, ca, self.tls_resume)?);
        }
        Ok(())
    }

    /// A connection to the target (TCP, or TLS with `--tls`) upgraded to a WebSocket.
    pub async fn connect(&self) -> std::io::Result<tls::Stream> {
        let mut s = match &self.client {
            Some(client) => client.connect(self.target).await?,
            None => {
                let tcp = tokio::net::TcpStream::connect(self.target).await?;
                tcp.set_nodelay(true)?;
                tls::Stream::Plain(tcp)
            }
        };
        ws::upgrade(&mut s, &self.path).await?;
        Ok(s)
    }
}

#[derive(Subcommand)]
enum Cmd {
    /// Workers each loop: connect, upgrade, one echo, close.
    Handshake {
        #[command(flatten)]
        common: Common,
        #[arg(long, default_value_t = 50)]
        workers: usize,
    },
    /// Open tunnels ping-ponging messages of a fixed size as fast as they can.
    Echo {
        #[command(flatten)]
        common: Common,
        #[arg(long, default_value_t = 100)]
        conns: usize,
        #[arg(long, default_value_t = 64)]
        size: usize,
    },
    /// A fixed message rate spread over open tunnels, paced with a microsecond clock.
    Latency {
        #[command(flatten)]
        common: Common,
        #[arg(long, default_value_t = 100)]
        conns: usize,
        #[arg(long, default_value_t = 10_000)]
        rate: u64,
    },
    /// WebSocket over HTTP/2: workers open a stream (extended CONNECT), echo 64 bytes
    /// once and close it, `--per-conn` workers on each of `--conns` h2c connections.
    H2Streams {
        #[command(flatten)]
        common: Common,
        #[arg(long, default_value_t = 10)]
        conns: usize,
        #[arg(long, default_value_t = 5)]
        per_conn: usize,
    },
    /// WebSocket over HTTP/2: `--per-conn` open streams on each of `--conns` h2c
    /// connections ping-ponging messages of a fixed size.
    H2Echo {
        #[command(flatten)]
        common: Common,
        #[arg(long, default_value_t = 10)]
        conns: usize,
        #[arg(long, default_value_t = 10)]
        per_conn: usize,
        #[arg(long, default_value_t = 64)]
        size: usize,
    },
    /// Idle tunnels opened in steps; the RSS of `--pid proxy=PID` after each step.
    Idle {
        #[command(flatten)]
        common: Common,
        #[arg(long, value_delimiter = ',', default_values_t = [1000usize, 9000])]
        steps: Vec<usize>,
    },
    /// Tunnels under echo load while configuration changes are pushed through the REST
    /// API; measures REST response → every node acked.
    Push {
        #[command(flatten)]
        common: Common,
        #[arg(long)]
        api: String,
        #[arg(long)]
        token: String,
        #[arg(long, default_value_t = 1000)]
        tunnels: usize,
        #[arg(long, default_value_t = 100)]
        changes: usize,
        /// Backend whose server weight the changes alternate.
        #[arg(long, default_value = "bench")]
        backend: String,
        /// Number of nodes that must ack each change.
        #[arg(long, default_value_t = 20)]
        nodes: usize,
    },
    /// Tunnels under echo load while a reload command runs repeatedly (HAProxy -sf).
    Reload {
        #[command(flatten)]
        common: Common,
        #[arg(long, default_value_t = 1000)]
        tunnels: usize,
        #[arg(long, default_value_t = 10)]
        reloads: usize,
        /// Shell command that performs one reload and returns when it is done.
        #[arg(long)]
        cmd: String,
    },
    /// Writes the benchmark's self-signed certificate (bench.crt, bench.key, bench.pem).
    Cert {
        #[arg(long)]
        dir: std::path::PathBuf,
    },
    /// Renders results (JSON lines) as Markdown.
    Report {
        #[arg(long)]
        input: std::path::PathBuf,
        /// Free text describing the machine and versions.
        #[arg(long)]
        header: std::path::PathBuf,
    },
}

fn main() -> anyhow::Result<()> {
    let mut cli = Cli::parse();
    match &mut cli.cmd {
        Cmd::Report { input, header } => {
            print!("{}", report::render(input, header)?);
            return Ok(());
        }
        Cmd::Cert { dir } => return tls::write_certificate(dir),
        Cmd::Handshake { common, .. }
        | Cmd::Echo { common, .. }
        | Cmd::Latency { common, .. }
        | Cmd::H2Streams { common, .. }
        | Cmd::H2Echo { common, .. }
        | Cmd::Idle { common, .. }
        | Cmd::Push { common, .. }
        | Cmd::Reload { common, .. } => common.prepare()?,
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let out = rt.block_on(async move {
        match cli.cmd {
            Cmd::Handshake { common, workers } => workloads::handshake(&common, workers).await,
            Cmd::Echo {
                common,
                conns,
                size,
            } => workloads::echo(&common, conns, size).await,
            Cmd::Latency {
                common,
                conns,
                rate,
            } => workloads::latency(&common, conns, rate).await,
            Cmd::Idle { common, steps } => workloads::idle(&common, &steps).await,
            Cmd::H2Streams {
                common,
                conns,
                per_conn,
            } => h2::streams(&common, conns, per_conn).await,
            Cmd::H2Echo {
                common,
                conns,
                per_conn,
                size,
            } => h2::echo(&common, conns, per_conn, size).await,
            Cmd::Push {
                common,
                api,
                token,
                tunnels,
                changes,
                backend,
                nodes,
            } => workloads::push(&common, &api, &token, tunnels, changes, &backend, nodes).await,
            Cmd::Reload {
                common,
                tunnels,
                reloads,
                cmd,
            } => workloads::reload(&common, tunnels, reloads, &cmd).await,
            Cmd::Report { .. } | Cmd::Cert { .. } => unreachable!("handled above"),
        }
    })?;
    println!("{out}");
    Ok(())
}
