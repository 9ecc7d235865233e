//! WebSocket over HTTP/2 (RFC 8441) workloads: streams opened per second, and 64-byte
//! echo on open streams — several streams multiplexed on each h2c connection, as a
//! browser would. The client is hyper's HTTP/2 client; a stream's bytes are the
//! WebSocket frames of [`crate::ws`].

use std::time::{Duration, Instant};

use anyhow::Context;
use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body_util::Empty;
use hyper::client::conn::http2::SendRequest;
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::Value;
use tokio::task::JoinSet;

use crate::stats::CpuWatch;
use crate::workloads::{echo_result, echo_worker, handshake_result, handshake_worker};
use crate::Common;

type Stream = TokioIo<hyper::upgrade::Upgraded>;

/// An HTTP/2 connection with prior knowledge to the target.
async fn connection(c: &Common) -> anyhow::Result<SendRequest<Empty<Bytes>>> {
    let tcp = tokio::net::TcpStream::connect(c.target).await?;
    tcp.set_nodelay(true)?;
    let (sender, conn) = hyper::client::conn::http2::Builder::new(TokioExecutor::new())
        .handshake(TokioIo::new(tcp))
        .await?;
    tokio::spawn(conn);
    Ok(sender)
}

/// Opens a WebSocket stream (extended CONNECT) on `sender`.
async fn open(sender: &mut SendRequest<Empty<Bytes>>, path: &str) -> anyhow::Result<Stream> {
    // The server's SETTINGS may still be on the way right after the handshake.
    for attempt in 0.. {
        let req = Request::builder()
            .method(Method::CONNECT)
            .uri(format!("http://bench.local{path}"))
            .header("sec-websocket-version", "13")
            .extension(hyper::ext::Protocol::from_static("websocket"))
            .body(Empty::new())?;
        match sender.send_request(req).await {
            Ok(resp) if resp.status() == StatusCode::OK => {
                return Ok(TokioIo::new(hyper::upgrade::on(resp).await?));
            }
            Ok(resp) => anyhow::bail!("the stream was answered {}", resp.status()),
            Err(_) if attempt < 50 => tokio::time::sleep(Duration::from_millis(10)).await,
            Err(e) => return Err(e.into()),
        }
    }
    unreachable!("the loop returns")
}

/// `conns` connections, each with `per_conn` workers looping: open a stream, one 64-byte
/// echo, close it.
pub async fn streams(c: &Common, conns: usize, per_conn: usize) -> anyhow::Result<Value> {
    let mut senders = Vec::new();
    for _ in 0..conns {
        senders.push(connection(c).await.context("an h2c connection")?);
    }
    let deadline = Instant::now() + c.duration();
    let cpu = CpuWatch::start(&c.pids);
    let mut set = JoinSet::new();
    for sender in &senders {
        for _ in 0..per_conn {
            let (sender, path) = (sender.clone(), c.path.clone());
            set.spawn(async move {
                handshake_worker(deadline, || {
                    let (mut sender, path) = (sender.clone(), path.clone());
                    async move { open(&mut sender, &path).await }
                })
                .await
            });
        }
    }
    handshake_result(set, cpu).await
}

/// `conns` connections with `per_conn` open streams each, every stream ping-ponging
/// `size`-byte messages.
pub async fn echo(c: &Common, conns: usize, per_conn: usize, size: usize) -> anyhow::Result<Value> {
    let mut streams = Vec::new();
    for _ in 0..conns {
        let mut sender = connection(c).await.context("an h2c connection")?;
        for _ in 0..per_conn {
            streams.push(
                open(&mut sender, &c.path)
                    .await
                    .context("a WebSocket stream")?,
            );
        }
    }
    let deadline = Instant::now() + c.duration();
    let cpu = CpuWatch::start(&c.pids);
    let mut set = JoinSet::new();
    for s in streams {
        set.spawn(echo_worker(s, size, deadline));
    }
    echo_result(set, cpu, size).await
}
