//! `sluice-bench-relay LISTEN BACKEND...`: a bare TCP relay, the ceiling a proxy built on
//! tokio's event loop can reach on this machine.
//!
//! No HTTP, no routing, no timeouts, no counters: each accepted connection is connected
//! to the next backend in turn and bytes are copied both ways until either side closes,
//! on one single-threaded runtime. The WebSocket upgrade passes through it as bytes.
//! `bench/run.sh` measures it beside the proxies with `TARGETS="… relay"`, so that what
//! the node's HTTP and tunnel code cost shows as the distance between the two.

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};

/// Copies until EOF or an error, then passes the EOF on.
async fn copy(mut from: OwnedReadHalf, mut to: OwnedWriteHalf) {
    let mut buf = vec![0u8; 16 * 1024];
    while let Ok(n) = from.read(&mut buf).await {
        if n == 0 || to.write_all(&buf[..n]).await.is_err() {
            break;
        }
    }
    let _ = to.shutdown().await;
}

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let listen = args
        .next()
        .ok_or_else(|| anyhow::anyhow!("usage: LISTEN BACKEND..."))?;
    let backends: Vec<String> = args.collect();
    anyhow::ensure!(!backends.is_empty(), "no backend given");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()?;
    runtime.block_on(async move {
        let listener = TcpListener::bind(&listen).await?;
        for next in 0usize.. {
            let (client, _) = listener.accept().await?;
            let backend = backends[next % backends.len()].clone();
            tokio::spawn(async move {
                let Ok(server) = TcpStream::connect(&backend).await else {
                    return;
                };
                let _ = (client.set_nodelay(true), server.set_nodelay(true));
                let (client_read, client_write) = client.into_split();
                let (server_read, server_write) = server.into_split();
                let up = tokio::spawn(copy(client_read, server_write));
                copy(server_read, client_write).await;
                let _ = up.await;
            });
        }
        Ok(())
    })
}
