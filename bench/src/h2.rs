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
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::task::JoinSet;

use crate::stats::{percentiles, CpuWatch};
use crate::{ws, Common};

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
            let mut sender = sender.clone();
            let path = c.path.clone();
            set.spawn(async move {
                let frame = ws::client_frame(&[b'x'; 64]);
                let mut resp = [0u8; 66];
                let (mut ok, mut errors, mut lat) = (0u64, 0u64, Vec::new());
                while Instant::now() < deadline {
                    let t0 = Instant::now();
                    let r = async {
                        let mut s = open(&mut sender, &path).await?;
                        let opened = t0.elapsed();
                        s.write_all(&frame).await?;
                        s.read_exact(&mut resp).await?;
                        anyhow::Ok(opened)
                    }
                    .await;
                    match r {
                        Ok(d) => {
                            ok += 1;
                            lat.push(d.as_micros().min(u32::MAX as u128) as u32);
                        }
                        Err(_) => {
                            errors += 1;
                            tokio::time::sleep(Duration::from_millis(1)).await;
                        }
                    }
                }
                (ok, errors, lat)
            });
        }
    }
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
    for mut s in streams {
        set.spawn(async move {
            let frame = ws::client_frame(&vec![b'x'; size]);
            let mut resp = vec![0u8; ws::server_frame_len(size)];
            let mut lat = Vec::new();
            while Instant::now() < deadline {
                let t0 = Instant::now();
                s.write_all(&frame).await?;
                s.read_exact(&mut resp).await?;
                lat.push(t0.elapsed().as_micros().min(u32::MAX as u128) as u32);
            }
            std::io::Result::Ok(lat)
        });
    }
    let mut lat = Vec::new();
    while let Some(r) = set.join_next().await {
        lat.extend(r?.context("a stream failed during the run")?);
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
