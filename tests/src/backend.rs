//! An echo backend: what tests and the demo proxy to.
//!
//! - Plain HTTP: answers 200 with a JSON description of the request it received
//!   (`server`, `method`, `uri`, `headers`), so tests see exactly what was forwarded.
//! - WebSocket upgrade: answers 101 with a correct `Sec-WebSocket-Accept`, echoing the
//!   first offered subprotocol, then echoes every message; the text `whoami` is answered
//!   with the server's name. `?greet` in the URI sends a greeting frame in the same write
//!   as the 101. Paths under `/raw` echo raw bytes after the 101 with no framing at all.
//! - A path ending in `/status/NNN` answers status NNN (upgrades too); an upgrade to a
//!   path with `/no101` answers 200 instead of 101, one with `/badaccept` answers 101
//!   with a wrong `Sec-WebSocket-Accept`.
//!
//! Every request head is recorded so tests can assert on what the proxy sent.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use base64::Engine;
use futures_util::{SinkExt, StreamExt};
use sha1::{Digest, Sha1};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::tungstenite::protocol::Role;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

/// A request as the backend received it.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: String,
    pub uri: String,
    pub headers: Vec<(String, String)>,
    /// Which accepted connection (1, 2, …) the request came on.
    pub connection: usize,
    /// The request body, de-chunked.
    pub body: Vec<u8>,
}

impl Recorded {
    /// All values of a header, case-insensitively.
    pub fn header_values(&self, name: &str) -> Vec<String> {
        self.headers
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.clone())
            .collect()
    }
}

#[derive(Default)]
pub struct Shared {
    pub requests: Mutex<Vec<Recorded>>,
    /// WebSocket sessions currently open.
    pub open_tunnels: AtomicUsize,
    /// Connections accepted so far.
    pub connections: AtomicUsize,
    /// Answer upgrade requests with a plain 200, like a server that lost its WebSocket
    /// endpoint.
    pub refuse_upgrades: std::sync::atomic::AtomicBool,
}

/// A running backend; stops when dropped.
pub struct Backend {
    pub name: String,
    pub addr: SocketAddr,
    pub shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Backend {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Backend {
    /// Starts a backend on `addr` (use port 0 for any free port).
    pub async fn start(name: &str, addr: &str) -> std::io::Result<Backend> {
        let listener = TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared::default());
        let task = tokio::spawn(serve(listener, name.to_string(), shared.clone()));
        Ok(Backend {
            name: name.to_string(),
            addr,
            shared,
            task,
        })
    }

    pub fn requests(&self) -> Vec<Recorded> {
        self.shared.requests.lock().unwrap().clone()
    }

    /// Forgets the requests recorded so far.
    pub fn clear(&self) {
        self.shared.requests.lock().unwrap().clear();
    }

    pub fn open_tunnels(&self) -> usize {
        self.shared.open_tunnels.load(Ordering::SeqCst)
    }
}

/// Serves connections on `listener` forever.
pub async fn serve(listener: TcpListener, name: String, shared: Arc<Shared>) {
    let name: Arc<str> = name.into();
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let (name, shared) = (name.clone(), shared.clone());
        let id = shared.connections.fetch_add(1, Ordering::SeqCst) + 1;
        tokio::spawn(async move {
            let _ = connection(stream, &name, &shared, id).await;
        });
    }
}

/// The `Sec-WebSocket-Accept` value for a key (RFC 6455 §4.2.2).
pub fn accept_key(key: &str) -> String {
    let mut sha = Sha1::new();
    sha.update(key.as_bytes());
    sha.update(b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11");
    base64::engine::general_purpose::STANDARD.encode(sha.finalize())
}

async fn read_head(stream: &mut TcpStream, buf: &mut Vec<u8>) -> std::io::Result<Option<usize>> {
    loop {
        if let Some(pos) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            return Ok(Some(pos + 4));
        }
        if buf.len() > 64 * 1024 {
            return Ok(None);
        }
        let mut chunk = [0u8; 4096];
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Ok(None);
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// Reads more bytes into `buf`; false at end of stream.
async fn fill(stream: &mut TcpStream, buf: &mut Vec<u8>) -> std::io::Result<bool> {
    let mut chunk = [0u8; 4096];
    let n = stream.read(&mut chunk).await?;
    buf.extend_from_slice(&chunk[..n]);
    Ok(n > 0)
}

/// Reads a chunked body from `buf` (refilled from `stream`); returns the data and leaves
/// what follows in `buf`.
async fn read_chunked(
    stream: &mut TcpStream,
    buf: &mut Vec<u8>,
) -> std::io::Result<Option<Vec<u8>>> {
    let mut body = Vec::new();
    loop {
        let line_end = loop {
            if let Some(p) = buf.windows(2).position(|w| w == b"\r\n") {
                break p;
            }
            if !fill(stream, buf).await? {
                return Ok(None);
            }
        };
        let size_text = String::from_utf8_lossy(&buf[..line_end]).to_string();
        let size = usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16)
            .map_err(|_| std::io::Error::other("bad chunk size"))?;
        buf.drain(..line_end + 2);
        if size == 0 {
            // Trailers (none expected) end with an empty line.
            while !buf.starts_with(b"\r\n") {
                if !fill(stream, buf).await? {
                    return Ok(None);
                }
            }
            buf.drain(..2);
            return Ok(Some(body));
        }
        while buf.len() < size + 2 {
            if !fill(stream, buf).await? {
                return Ok(None);
            }
        }
        body.extend_from_slice(&buf[..size]);
        buf.drain(..size + 2);
    }
}

async fn connection(
    mut stream: TcpStream,
    name: &str,
    shared: &Shared,
    id: usize,
) -> std::io::Result<()> {
    let _ = stream.set_nodelay(true);
    let mut buf = Vec::new();
    loop {
        let Some(head_len) = read_head(&mut stream, &mut buf).await? else {
            return Ok(());
        };
        let mut headers = [httparse::EMPTY_HEADER; 64];
        let mut req = httparse::Request::new(&mut headers);
        if req.parse(&buf[..head_len]).is_err() {
            stream
                .write_all(
                    b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
                )
                .await?;
            return Ok(());
        }
        let rec = Recorded {
            method: req.method.unwrap_or("").to_string(),
            uri: req.path.unwrap_or("").to_string(),
            headers: req
                .headers
                .iter()
                .map(|h| {
                    (
                        h.name.to_string(),
                        String::from_utf8_lossy(h.value).into_owned(),
                    )
                })
                .collect(),
            connection: id,
            body: Vec::new(),
        };
        let mut rec = rec;
        let header = |rec: &Recorded, n: &str| rec.header_values(n).into_iter().next();
        let chunked = header(&rec, "transfer-encoding")
            .is_some_and(|v| v.to_ascii_lowercase().contains("chunked"));
        let mut rest = buf.split_off(head_len);
        if chunked {
            let Some(body) = read_chunked(&mut stream, &mut rest).await? else {
                return Ok(());
            };
            rec.body = body;
            buf = rest;
        } else {
            let content_length: usize = header(&rec, "content-length")
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            while rest.len() < content_length {
                if !fill(&mut stream, &mut rest).await? {
                    return Ok(());
                }
            }
            let leftover = rest.split_off(content_length);
            rec.body = rest;
            buf = leftover;
        }
        shared.requests.lock().unwrap().push(rec.clone());
        let header = |n: &str| rec.header_values(n).into_iter().next();

        // A handshake without a key is not one (RFC 6455 §4.2.1): answered as plain HTTP.
        let wants_ws = header("upgrade").is_some_and(|u| u.eq_ignore_ascii_case("websocket"))
            && header("sec-websocket-key").is_some();
        if wants_ws
            && !rec.uri.contains("/no101")
            && !rec.uri.contains("/status/")
            && !shared.refuse_upgrades.load(Ordering::SeqCst)
        {
            let key = header("sec-websocket-key").unwrap_or_default();
            let accept = if rec.uri.contains("/badaccept") {
                "AAAAAAAAAAAAAAAAAAAAAAAAAAA=".to_string()
            } else {
                accept_key(&key)
            };
            let mut resp = format!(
                "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\nX-Served-By: {name}\r\n"
            );
            if let Some(p) = header("sec-websocket-protocol") {
                let first = p.split(',').next().unwrap_or("").trim().to_string();
                resp.push_str(&format!("Sec-WebSocket-Protocol: {first}\r\n"));
            }
            resp.push_str("\r\n");
            let mut out = resp.into_bytes();
            if rec.uri.contains("greet") {
                let msg = format!("hello from {name}");
                out.push(0x81);
                out.push(msg.len() as u8);
                out.extend_from_slice(msg.as_bytes());
            }
            stream.write_all(&out).await?;
            shared.open_tunnels.fetch_add(1, Ordering::SeqCst);
            let result = if rec.uri.starts_with("/raw") {
                raw_echo(stream, buf).await
            } else {
                ws_echo(stream, buf, name).await
            };
            shared.open_tunnels.fetch_sub(1, Ordering::SeqCst);
            return result;
        }

        let (status, reason) = match rec
            .uri
            .split_once("/status/")
            .and_then(|(_, s)| s.parse::<u16>().ok())
        {
            Some(code) => (code, "Status"),
            None => (200, "OK"),
        };
        let body = serde_json::json!({
            "server": name,
            "method": rec.method,
            "uri": rec.uri,
            "headers": rec.headers,
            "connection": rec.connection,
            "body": String::from_utf8_lossy(&rec.body),
        })
        .to_string();
        let keep_alive = !header("connection").is_some_and(|c| c.eq_ignore_ascii_case("close"));
        let resp = format!(
            "HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nx-served-by: {name}\r\n{}\r\n{body}",
            body.len(),
            if keep_alive { "" } else { "connection: close\r\n" }
        );
        stream.write_all(resp.as_bytes()).await?;
        if !keep_alive {
            return Ok(());
        }
    }
}

async fn raw_echo(mut stream: TcpStream, early: Vec<u8>) -> std::io::Result<()> {
    if !early.is_empty() {
        stream.write_all(&early).await?;
    }
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            stream.shutdown().await?;
            return Ok(());
        }
        stream.write_all(&buf[..n]).await?;
    }
}

async fn ws_echo(stream: TcpStream, early: Vec<u8>, name: &str) -> std::io::Result<()> {
    let mut ws = WebSocketStream::from_partially_read(stream, early, Role::Server, None).await;
    while let Some(msg) = ws.next().await {
        let Ok(msg) = msg else { break };
        let reply = match msg {
            Message::Text(t) if t.as_str() == "whoami" => Message::text(name.to_string()),
            // A server dying mid-tunnel: the connection is reset, no close frame.
            Message::Text(t) if t.as_str() == "die" => {
                let _ = ws.get_ref().set_zero_linger();
                return Ok(());
            }
            // A server that goes away politely but leaves its client hanging: it sends its
            // FIN and goes quiet (it never reads or closes again).
            Message::Text(t) if t.as_str() == "fin" => {
                ws.get_mut().shutdown().await?;
                std::future::pending::<()>().await;
                return Ok(());
            }
            Message::Text(_) | Message::Binary(_) => msg,
            // Pings are answered by the protocol layer; closes are echoed by it too.
            _ => continue,
        };
        if ws.send(reply).await.is_err() {
            break;
        }
    }
    Ok(())
}
