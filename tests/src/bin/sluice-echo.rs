//! `sluice-echo`: demo WebSocket/HTTP echo backends for the quickstart.
//! `sluice-echo 127.0.0.11:9001=chat-01 127.0.0.12:9001=chat-02 ...`

use clap::Parser;
use sluice_tests::backend::Backend;

#[derive(Parser)]
#[command(
    name = "sluice-echo",
    about = "Echo backends (HTTP + WebSocket) for trying Sluice"
)]
struct Args {
    /// `ADDRESS=NAME` pairs, one backend each.
    #[arg(required = true)]
    backends: Vec<String>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let mut running = Vec::new();
    for spec in &args.backends {
        let (addr, name) = spec
            .split_once('=')
            .unwrap_or((spec.as_str(), spec.as_str()));
        let b = Backend::start(name, addr)
            .await
            .map_err(|e| anyhow::anyhow!("listening on {addr}: {e}"))?;
        println!("echo backend {} on {}", b.name, b.addr);
        running.push(b);
    }
    println!("sluice-echo ready");
    tokio::signal::ctrl_c().await?;
    Ok(())
}
