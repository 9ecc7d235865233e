//! Raw HTTP/1.1 on a socket, for what an HTTP client library would hide: exact heads,
//! pipelining, malformed requests, connections the node closes.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::harness::Fixture;

const WAIT: Duration = Duration::from_secs(10);

/// Writes `request` on `s` (any stream, TLS too) and reads until the node closes it.
/// A read that fails after some bytes (a TLS peer closing without `close_notify`) still
/// returns what came before it.
pub async fn exchange<S: AsyncReadExt + AsyncWriteExt + Unpin>(mut s: S, request: &str) -> String {
    s.write_all(request.as_bytes()).await.unwrap();
    let (out, _) = read_to_close(&mut s).await;
    String::from_utf8_lossy(&out).into_owned()
}

/// What `s` sends until it closes (within [`WAIT`]), and how the reading ended.
async fn read_to_close<S: AsyncReadExt + Unpin>(s: &mut S) -> (Vec<u8>, std::io::Result<usize>) {
    let mut out = Vec::new();
    let end = tokio::time::timeout(WAIT, s.read_to_end(&mut out))
        .await
        .expect("the node closes the connection");
    (out, end)
}

/// A WebSocket handshake for `path` with `extra` header lines (each ending in CRLF).
pub fn upgrade(path: &str, extra: &str) -> String {
    format!(
        "GET {path} HTTP/1.1\r\nHost: chat.example\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n{extra}\r\n"
    )
}

/// A `GET` for `path` with `extra` header lines (each ending in CRLF).
pub fn get(path: &str, extra: &str) -> String {
    format!("GET {path} HTTP/1.1\r\nHost: shop.example\r\n{extra}\r\n")
}

/// Sends a raw request and returns the response head.
pub async fn raw_head(bind: SocketAddr, request: &str) -> String {
    let mut tcp = TcpStream::connect(bind).await.unwrap();
    tcp.write_all(request.as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    tokio::time::timeout(WAIT, async {
        loop {
            let mut chunk = [0u8; 4096];
            let n = tcp.read(&mut chunk).await.unwrap();
            if n == 0 {
                break;
            }
            buf.extend_from_slice(&chunk[..n]);
            if buf.windows(4).any(|w| w == b"\r\n\r\n") {
                break;
            }
        }
    })
    .await
    .expect("a response head");
    String::from_utf8_lossy(&buf).to_string()
}

/// The node's Prometheus metrics, as text.
pub async fn metrics(f: &Fixture) -> String {
    let url = format!("{}/metrics", f.dp.admin);
    reqwest::get(url).await.unwrap().text().await.unwrap()
}

/// Sends a raw request and returns everything the node sends until it closes.
pub async fn raw_exchange(bind: SocketAddr, request: &str) -> String {
    let mut tcp = TcpStream::connect(bind).await.unwrap();
    tcp.write_all(request.as_bytes()).await.unwrap();
    read_until_closed(&mut tcp).await
}

/// One complete response (head and its `content-length` body) from a connection that
/// stays open.
pub async fn read_response(tcp: &mut TcpStream) -> String {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let text = String::from_utf8_lossy(&buf).to_string();
        if let Some(end) = text.find("\r\n\r\n") {
            let length = text[..end]
                .lines()
                .find_map(|l| {
                    let (name, value) = l.split_once(':')?;
                    name.eq_ignore_ascii_case("content-length")
                        .then(|| value.trim().parse::<usize>().ok())?
                })
                .unwrap_or(0);
            if buf.len() >= end + 4 + length {
                return text;
            }
        }
        let n = tokio::time::timeout(WAIT, tcp.read(&mut chunk))
            .await
            .expect("a response")
            .unwrap();
        assert!(n > 0, "closed after {text:?}");
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// Everything the node sends until it closes the connection.
pub async fn read_until_closed(tcp: &mut TcpStream) -> String {
    let (buf, end) = read_to_close(tcp).await;
    end.unwrap();
    String::from_utf8_lossy(&buf).to_string()
}
