//! The upstream phase: a connection to the chosen server, and the exchange on it.
//!
//! - **connect**: [`connect`] hands [`balance::dispatch`](crate::balance::dispatch) the
//!   way to reach a server: an idle pooled connection when the request may use one, else
//!   a new socket under `timeout connect`.
//! - **exchange**: a plain request on a keep-alive connection ([`exchange_pooled`]; the
//!   connection goes back to the server's pool once the body has been relayed), or one
//!   request on a connection of its own ([`exchange`]) — which, for a WebSocket upgrade
//!   answered `101`, hands the server socket over for the tunnel ([`Exchange::Switched`]).
//!   The response head must come within `timeout server`.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName};
use http::{Request, Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::{Body as _, Frame, Incoming, SizeHint};
use hyper_util::rt::TokioIo;
use socket2::{Domain, Protocol, Socket, Type};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

use super::error::{ProxyError, ServerRef};
use super::Body;
use crate::balance::{self, ChoiceError, Dispatch, PickInput};
use crate::body::ReqBody;
use crate::config::{BackendPlan, ServerPlan};
use crate::counters::{Held, ServerCounters};
use crate::pool::{Pool, Sender};

/// A server connection for one request: a new socket, or an idle pooled connection.
pub enum Upstream {
    Fresh(TcpStream),
    Pooled(Sender),
}

/// Why a new server connection could not be made.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("timeout connect")]
    Timeout,
}

/// A new connection to `server` within `timeout`.
pub async fn connect_server(
    server: &ServerPlan,
    timeout: Duration,
) -> Result<TcpStream, ConnectError> {
    let connecting = async {
        match server.socket_addr {
            Some(addr) => connect_addr(addr).await,
            None => {
                let stream = TcpStream::connect(server.address.as_str()).await?;
                let _ = stream.set_nodelay(true);
                Ok(stream)
            }
        }
    };
    match tokio::time::timeout(timeout, connecting).await {
        Ok(Ok(stream)) => Ok(stream),
        Ok(Err(e)) => Err(e.into()),
        Err(_) => Err(ConnectError::Timeout),
    }
}

/// Connects to `addr`, returning as soon as the connection is established. A
/// non-blocking `connect(2)` to a server on the same host has usually completed the TCP
/// handshake by the time it returns: then the connection is used at once, and the
/// request reaches the server while it is still awake from the handshake, instead of
/// after a pass through the event loop, by which time it has often gone back to sleep
/// (one more wake-up of the server per upgrade, measured in BENCHMARKS.md). Otherwise
/// this waits for the socket to become writable, as usual.
async fn connect_addr(addr: SocketAddr) -> io::Result<TcpStream> {
    let socket = Socket::new(
        Domain::for_address(addr),
        Type::STREAM.nonblocking(),
        Some(Protocol::TCP),
    )?;
    socket.set_tcp_nodelay(true)?;
    match socket.connect(&addr.into()) {
        Ok(()) => {}
        Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => {}
        Err(e) => return Err(e),
    }
    let stream = TcpStream::from_std(socket.into())?;
    // Only an established connection has a peer.
    if stream.peer_addr().is_ok() {
        return Ok(stream);
    }
    stream.writable().await?;
    match stream.take_error()? {
        Some(e) => Err(e),
        None => Ok(stream),
    }
}

/// Chooses a server of `backend` and connects to it: an idle pooled connection when
/// `pooled`, else a new one (see [`balance::dispatch`] for retries and redispatch).
pub async fn connect(
    backend: &BackendPlan,
    input: &PickInput<'_>,
    sticky: Option<usize>,
    pooled: bool,
) -> Dispatch<Upstream> {
    balance::dispatch(backend, input, sticky, |server| async move {
        if pooled {
            if let Some(sender) = server.pool.as_ref().and_then(|p| p.take()) {
                return Ok(Upstream::Pooled(sender));
            }
        }
        connect_server(server, backend.connect_timeout)
            .await
            .map(Upstream::Fresh)
    })
    .await
}

/// Sends a plain (non-upgrade) request on a keep-alive server connection and relays the
/// response; the connection returns to the server's pool once the body has been relayed.
/// A pooled connection the server closed meanwhile is replaced by a new one, as long as
/// the request has not been sent on it.
pub async fn exchange_pooled(
    mut request: Request<ReqBody>,
    mut upstream: Upstream,
    server: &ServerPlan,
    backend: &BackendPlan,
    server_name: &ServerRef,
    held: Held<ServerCounters>,
) -> Result<Response<Body>, ProxyError> {
    let pool = server.pool.clone().expect("a pooled exchange needs a pool");
    let bad = |reason: String| ProxyError::BadResponse {
        server: server_name.clone(),
        reason,
    };
    let fresh = || async {
        connect_server(server, backend.connect_timeout)
            .await
            .map(Upstream::Fresh)
            .map_err(|e| {
                ProxyError::Choice(ChoiceError::Connect {
                    server: server_name.to_string(),
                    attempts: 1,
                    reason: e.to_string(),
                })
            })
    };
    let exchange = async {
        loop {
            let (mut sender, reused) = match upstream {
                Upstream::Pooled(s) => (s, true),
                Upstream::Fresh(stream) => {
                    let (s, connection) = hyper::client::conn::http1::Builder::new()
                        .handshake::<_, ReqBody>(TokioIo::new(stream))
                        .await
                        .map_err(|e| bad(e.to_string()))?;
                    tokio::spawn(async move {
                        let _ = connection.await;
                    });
                    (s, false)
                }
            };
            let result = match sender.ready().await {
                Ok(()) => sender.try_send_request(request).await,
                Err(e) if reused => {
                    tracing::debug!(server = %server_name, error = %e, "pooled connection closed; reconnecting");
                    upstream = fresh().await?;
                    continue;
                }
                Err(e) => return Err(bad(e.to_string())),
            };
            match result {
                Ok(resp) => return Ok((resp, sender)),
                Err(mut e) => match e.take_message() {
                    Some(unsent) if reused => {
                        tracing::debug!(server = %server_name, error = %e.error(), "pooled connection failed before sending; reconnecting");
                        request = unsent;
                        upstream = fresh().await?;
                    }
                    _ if e.error().is_user() => return Err(client_body_error()),
                    _ => return Err(bad(e.into_error().to_string())),
                },
            }
        }
    };
    let (resp, sender) = match tokio::time::timeout(backend.server_timeout, exchange).await {
        Err(_) => return Err(ProxyError::ServerTimeout(server_name.clone())),
        Ok(r) => r?,
    };
    let (parts, body) = resp.into_parts();
    Ok(Response::from_parts(
        parts,
        PooledBody::new(body, sender, pool, held).boxed(),
    ))
}

/// The request body the client sent could not be read (a malformed chunked body, say):
/// the client's fault, not the server's — a 400, and no server error counted.
fn client_body_error() -> ProxyError {
    ProxyError::BadRequest("malformed request body")
}

/// What one request on a server connection of its own gave.
pub enum Exchange {
    /// A response to relay; the server connection keeps running (in its own task) while
    /// the body is relayed.
    Response(Response<Incoming>),
    /// A `101` to an upgrade: its head, and the server socket with any bytes the server
    /// sent past the head.
    Switched(http::response::Parts, (TcpStream, Bytes)),
}

/// Sends one request on a new server connection through hyper's client and waits for the
/// response head within `timeout server`. `upgrade`: the client asked to upgrade, so a
/// `101` hands the socket over instead of relaying a body (upgrades come here from
/// [`super::upgrade`] only when its direct path does not apply).
pub async fn exchange(
    request: Request<ReqBody>,
    stream: Replay,
    timeout: Duration,
    server_name: &ServerRef,
    upgrade: bool,
) -> Result<Exchange, ProxyError> {
    let bad = |reason: String| ProxyError::BadResponse {
        server: server_name.clone(),
        reason,
    };
    let (mut sender, connection) = hyper::client::conn::http1::Builder::new()
        .handshake::<_, ReqBody>(TokioIo::new(stream))
        .await
        .map_err(|e| bad(e.to_string()))?;
    // The server connection is driven from this task until the response head is in:
    // no extra task and no cross-task wake-up on the handshake path.
    let mut connection = Box::pin(connection.with_upgrades());
    // The connection may finish first: on a 101 it completes as soon as it has handed
    // the socket over, possibly before the response is picked up here.
    let mut connection_done = None;
    let exchange = async {
        let mut send = std::pin::pin!(sender.send_request(request));
        tokio::select! {
            biased;
            r = &mut send => r,
            r = &mut connection => {
                connection_done = Some(r);
                send.await
            }
        }
    };
    let mut resp = match tokio::time::timeout(timeout, exchange).await {
        Err(_) => return Err(ProxyError::ServerTimeout(server_name.clone())),
        Ok(Err(e)) => {
            let connection_error = match &connection_done {
                Some(Err(ce)) => Some(ce),
                _ => None,
            };
            if e.is_user() || connection_error.is_some_and(|ce| ce.is_user()) {
                return Err(client_body_error());
            }
            return Err(bad(
                connection_error.map_or_else(|| e.to_string(), |ce| ce.to_string())
            ));
        }
        Ok(Ok(r)) => r,
    };
    if resp.status() == StatusCode::SWITCHING_PROTOCOLS {
        if !upgrade {
            return Err(bad("101 to a request that did not ask to upgrade".into()));
        }
        let server_upgrade = hyper::upgrade::on(&mut resp);
        // With the 101 read, the connection hands its socket over and completes. (The
        // sender must stay alive until then, or the connection would just close.)
        let connected = match connection_done {
            Some(r) => r,
            None => connection.await,
        };
        let upgraded = match connected {
            Ok(()) => server_upgrade.await,
            Err(e) => return Err(bad(e.to_string())),
        };
        drop(sender);
        return match upgraded.map(|u| u.downcast::<TokioIo<Replay>>()) {
            Ok(Ok(parts)) => {
                // What hyper read past the head comes first, then what it left unread.
                let (stream, unread) = parts.io.into_inner().into_parts();
                let early = if unread.is_empty() {
                    parts.read_buf
                } else {
                    [parts.read_buf, unread].concat().into()
                };
                Ok(Exchange::Switched(resp.into_parts().0, (stream, early)))
            }
            _ => Err(bad(
                "the upgraded server connection is not a TCP stream".into()
            )),
        };
    }
    // A plain response: the connection must keep running while the body is relayed.
    if connection_done.is_none() {
        tokio::spawn(connection);
    }
    Ok(Exchange::Response(resp))
}

/// A server socket for hyper's client, with bytes already read from it in front; when
/// `sent`, the request was already written and hyper's writes of it are dropped.
pub struct Replay {
    stream: TcpStream,
    read: Bytes,
    sent: bool,
    /// Reads wait until hyper has written its (dropped) request: hyper's client takes
    /// bytes that come before its request is out as an unexpected message.
    held: Option<Option<Waker>>,
}

impl Replay {
    /// A socket nothing was written to or read from yet.
    pub fn fresh(stream: TcpStream) -> Self {
        Replay {
            stream,
            read: Bytes::new(),
            sent: false,
            held: None,
        }
    }

    /// A socket the request was written to and `read` read from.
    pub fn after(stream: TcpStream, read: Bytes) -> Self {
        Replay {
            stream,
            read,
            sent: true,
            held: Some(None),
        }
    }

    /// Lets reads through once hyper has written its request.
    fn release(&mut self) {
        if let Some(Some(reader)) = self.held.take() {
            reader.wake();
        }
    }

    /// The socket, and what was read from it that hyper did not take.
    pub fn into_parts(self) -> (TcpStream, Bytes) {
        (self.stream, self.read)
    }
}

impl AsyncRead for Replay {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if let Some(waiting) = self.held.as_mut() {
            *waiting = Some(cx.waker().clone());
            return Poll::Pending;
        }
        if self.read.is_empty() {
            return Pin::new(&mut self.stream).poll_read(cx, buf);
        }
        let n = self.read.len().min(buf.remaining());
        buf.put_slice(&self.read.split_to(n));
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for Replay {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if self.sent {
            self.release();
            return Poll::Ready(Ok(buf.len()));
        }
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        if self.sent {
            self.release();
            return Poll::Ready(Ok(bufs.iter().map(|b| b.len()).sum()));
        }
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

/// The hop-by-hop fields every message loses (RFC 9110 §7.6.1), besides those its
/// `Connection` lists; `Upgrade` last.
const HOP_BY_HOP: [HeaderName; 7] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

/// Removes the hop-by-hop fields (RFC 9110 §7.6.1) from a message to forward: those its
/// `Connection` lists and the fixed ones, except `Upgrade` when `keep_upgrade` (an
/// upgrade request keeps the protocols it asks for).
pub fn strip_hop_by_hop(h: &mut HeaderMap, keep_upgrade: bool) {
    // Usually empty (`Connection: upgrade` or `keep-alive` lists only fixed ones), and so
    // no allocation.
    let listed: Vec<HeaderName> = h
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|s| s.split(','))
        .map(str::trim)
        .filter(|t| {
            !HOP_BY_HOP
                .iter()
                .any(|f| t.eq_ignore_ascii_case(f.as_str()))
        })
        .filter_map(|t| HeaderName::from_bytes(t.as_bytes()).ok())
        .collect();
    for name in listed {
        h.remove(name);
    }
    let fixed = if keep_upgrade {
        &HOP_BY_HOP[..HOP_BY_HOP.len() - 1]
    } else {
        &HOP_BY_HOP[..]
    };
    for name in fixed {
        h.remove(name);
    }
}

/// A server's response body on a pooled connection: relays the frames and gives the
/// connection back to the pool once the body has ended.
pub struct PooledBody {
    inner: Incoming,
    back: Option<(Sender, Arc<Pool>)>,
    /// The server's connection count, held until the body has been relayed.
    _held: Held<ServerCounters>,
}

impl PooledBody {
    pub fn new(
        inner: Incoming,
        sender: Sender,
        pool: Arc<Pool>,
        held: Held<ServerCounters>,
    ) -> Self {
        let mut body = Self {
            inner,
            back: Some((sender, pool)),
            _held: held,
        };
        // A body that is already complete may never be polled.
        if body.inner.is_end_stream() {
            body.release();
        }
        body
    }

    fn release(&mut self) {
        if let Some((s, pool)) = self.back.take() {
            pool.put(s);
        }
    }
}

impl hyper::body::Body for PooledBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let r = Pin::new(&mut self.inner).poll_frame(cx);
        match &r {
            // A writer that knows the length stops polling after the last byte, so the
            // end is also recognised right after the last frame.
            Poll::Ready(None) => self.release(),
            Poll::Ready(Some(Ok(_))) if self.inner.is_end_stream() => self.release(),
            Poll::Ready(Some(Err(_))) => self.back = None,
            _ => {}
        }
        r
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_connection_is_usable_as_soon_as_it_is_established() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let mut stream = connect_addr(addr).await.unwrap();
        assert_eq!(stream.peer_addr().unwrap(), addr);
        assert!(stream.nodelay().unwrap());
        let (mut accepted, _) = listener.accept().await.unwrap();
        tokio::io::AsyncWriteExt::write_all(&mut stream, b"hi")
            .await
            .unwrap();
        let mut got = [0u8; 2];
        tokio::io::AsyncReadExt::read_exact(&mut accepted, &mut got)
            .await
            .unwrap();
        assert_eq!(&got, b"hi");
    }

    #[tokio::test]
    async fn a_refused_connection_is_a_connect_error() {
        let addr = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let error = connect_addr(addr).await.unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::ConnectionRefused);
    }
}
