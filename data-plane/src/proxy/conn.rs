//! One client connection: TLS termination when the bind has it, the choice of HTTP
//! version (ALPN `h2` on TLS, the HTTP/2 preface on cleartext binds with h2c; HTTP/2
//! connections are served by [`super::h2`]), the connection's state shared by its
//! requests ([`Conn`]), HTTP/1.1 keep-alive under hyper, and the log lines of requests
//! refused before they reached the service (400/408/414/431). Each request is handled by
//! [`super::request`]; a `101` turns the connection into a tunnel ([`super::session`]).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use bytes::BytesMut;
use http::{Response, StatusCode};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

use super::direct;
use super::io::{ClientIo, ConnState};
use super::log;
use super::request::{self, Arrival};
use super::route::{Client, CurrentPlan};
use super::session::ClientSide;
use super::Body;
use crate::config::{BindPlan, FrontendPlan};
use crate::counters::{FrontendCounters, Held};

/// What every request on one HTTP/1.1 client connection shares.
pub struct Conn {
    /// The client as the routing phase sees it.
    pub client: Client,
    /// Shared with the socket wrapper: requests in flight and received so far (the
    /// first request's Tq counts from the accept).
    pub state: Arc<ConnState>,
    pub accepted: Instant,
    pub accepted_at: SystemTime,
}

/// Serves one accepted client connection until it closes or becomes a tunnel.
/// `current` is the frontend's connection count, taken at accept time; `plan`, where its
/// requests find the current plan.
pub async fn serve_connection(
    stream: TcpStream,
    src: SocketAddr,
    (bind, plan): (Arc<BindPlan>, CurrentPlan),
    current: Held<FrontendCounters>,
) {
    let started = Instant::now();
    let fe = bind.frontend.clone();
    fe.counters.total_connections.fetch_add(1, Relaxed);
    // TCP_NODELAY is inherited from the listener. The local address is the bind's,
    // unless the bind is a wildcard or left the port to the kernel.
    let local = if bind.address.ip().is_unspecified() || bind.address.port() == 0 {
        stream.local_addr().unwrap_or(bind.address)
    } else {
        bind.address
    };
    match bind.tls.clone() {
        None => match bind.http2 {
            Some(h2)
                if h2.h2c
                    && super::h2::starts_with_preface(&stream, fe.http_request_timeout).await =>
            {
                let conn = new_conn((&bind, plan), src, local, None, Arc::default());
                // Boxed, as TLS is: an HTTP/1.1 connection's task must not carry it.
                Box::pin(super::h2::serve(stream, conn, h2, started)).await
            }
            // The wait for the first bytes counts against `timeout http-request`.
            _ => {
                let due = started + fe.http_request_timeout;
                serve_plain(stream, (bind, plan), src, local, (started, due)).await
            }
        },
        // Boxed: a TLS connection's state is large, and must not make every plain
        // connection's task that large too (it is copied into the task at each accept).
        Some(tls) => Box::pin(serve_tls(stream, tls, (bind, plan), src, local, started)).await,
    }
    drop(current);
    fe.counters.released.notify_waiters();
}

/// Terminates TLS on an accepted connection, then serves HTTP over it.
async fn serve_tls(
    stream: TcpStream,
    tls: crate::tls::Tls,
    (bind, plan): (Arc<BindPlan>, CurrentPlan),
    src: SocketAddr,
    local: SocketAddr,
    started: Instant,
) {
    let fe = bind.frontend.clone();
    // The handshake counts against `timeout http-request`, as in HAProxy.
    match tokio::time::timeout(fe.http_request_timeout, tls.0.accept(stream)).await {
        Ok(Ok(stream)) => {
            let alpn = stream.get_ref().1.alpn_protocol().map(<[u8]>::to_vec);
            match bind.http2 {
                Some(h2) if alpn.as_deref() == Some(b"h2") => {
                    let conn = new_conn((&bind, plan), src, local, Some(alpn), Arc::default());
                    super::h2::serve(stream, conn, h2, Instant::now()).await
                }
                _ => {
                    let due = Instant::now() + fe.http_request_timeout;
                    let io = client_io(stream, &fe, due);
                    let conn = new_conn((&bind, plan), src, local, Some(alpn), io.state.clone());
                    serve_http(io, conn, None, started).await
                }
            }
        }
        Ok(Err(e)) => {
            tracing::debug!(client = %src, error = %e, "TLS handshake failed");
            fe.counters.tls_handshake_failures.fetch_add(1, Relaxed);
        }
        Err(_) => {
            tracing::debug!(client = %src, "TLS handshake timed out");
            fe.counters.tls_handshake_failures.fetch_add(1, Relaxed);
        }
    }
}

/// The client socket with the frontend's HTTP-phase timeouts, the first head due by
/// `first_head`.
fn client_io<S>(stream: S, fe: &FrontendPlan, first_head: Instant) -> ClientIo<S>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    ClientIo::new(
        stream,
        fe.client_timeout,
        (first_head.into(), fe.http_request_timeout),
        fe.refusal_pages.clone(),
    )
}

/// Serves a cleartext HTTP/1.1 connection: a first request that is a WebSocket upgrade
/// and arrives whole is served without hyper's server ([`super::direct`]); anything else,
/// and every later request, by hyper, with the bytes already read replayed. `(started,
/// first_head)`: when the connection was accepted, and when its first head is due.
async fn serve_plain(
    stream: TcpStream,
    (bind, plan): (Arc<BindPlan>, CurrentPlan),
    src: SocketAddr,
    local: SocketAddr,
    (started, first_head): (Instant, Instant),
) {
    let fe = bind.frontend.clone();
    let mut io = client_io(stream, &fe, first_head);
    let conn = new_conn((&bind, plan), src, local, None, io.state.clone());
    let mut buf = BytesMut::with_capacity(direct::FIRST_READ);
    // A failed read (a timeout's 408 is already on its way) is hyper's to meet again.
    let _ = io.read_buf(&mut buf).await;
    let buf = buf.freeze();
    let mut prepared = None;
    if let Some((req, head)) = direct::parse(&buf, (fe.max_header_bytes, fe.max_headers)) {
        // Boxed, as hyper boxes its requests' futures: a connection's task stays small.
        let served = Box::pin(request::handle_read(
            req,
            &conn.client,
            arrival(&conn),
            true,
        ));
        match served.await {
            (resp, Some(tunnel)) => {
                let early = buf.slice(head..);
                let mut stream = io.into_inner();
                direct::write_head(&mut stream, &direct::encode_head(&resp), fe.client_timeout)
                    .await;
                tunnel.start(ClientSide::Direct(stream, early), None);
                return;
            }
            (resp, None) => prepared = Some(Box::new(resp)),
        }
    }
    io.replay(buf);
    // Boxed: hyper's connection state is large, and must not make the task of every
    // connection served on the direct path that large too.
    Box::pin(serve_http(io, conn, prepared, started)).await
}

/// When the next request of `conn` arrived, for its log line (the first request's counts
/// from the accept); counts it as received.
fn arrival(conn: &Conn) -> Arrival {
    let started = Instant::now();
    if conn.state.requests.fetch_add(1, Relaxed) == 0 {
        Arrival {
            at: conn.accepted_at,
            head_ms: started.duration_since(conn.accepted).as_millis() as i64,
            started,
        }
    } else {
        Arrival {
            at: SystemTime::now(),
            head_ms: 0,
            started,
        }
    }
}

/// Serves HTTP/1.1 with hyper on a client connection (plain, or TLS) until it closes or
/// becomes a tunnel. `prepared`: the answer to the first request, already served (an
/// upgrade that did not switch, see [`serve_plain`]); `started`: the accept.
async fn serve_http<S>(
    io: ClientIo<S>,
    conn: Arc<Conn>,
    prepared: Option<Box<Response<Body>>>,
    started: Instant,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    // The limits the connection was accepted with.
    let fe = conn.client.bind.frontend.clone();
    let src = conn.client.src;
    let state = io.state.clone();
    let prepared = std::sync::Mutex::new(prepared);
    let svc = service_fn(move |req| {
        let conn = conn.clone();
        let prepared = prepared.lock().ok().and_then(|mut p| p.take());
        async move {
            if let Some(resp) = prepared {
                // The replayed request's: it was served before hyper took over.
                conn.state.answered.fetch_add(1, Relaxed);
                return Ok::<_, Infallible>(*resp);
            }
            let _busy = Busy::new(&conn.state);
            let resp = request::handle(req, &conn.client, arrival(&conn)).await;
            // A status line written from now on may be this response's (see `ClientIo`).
            conn.state.answered.fetch_add(1, Relaxed);
            Ok::<_, Infallible>(resp)
        }
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    // `timeout http-request` is enforced by `ClientIo`, which answers 408 on it.
    builder
        .header_read_timeout(None)
        .max_header_size(fe.max_header_bytes);
    if let Some(n) = fe.max_headers {
        builder.max_headers(n);
    }
    let served = builder
        .serve_connection(TokioIo::new(io), svc)
        .with_upgrades()
        .await;
    if let Err(e) = &served {
        tracing::debug!(client = %src, error = %e, "client connection ended with an error");
    }
    // Requests that never reached the service still count and get a log line. (A
    // timeout before any byte ends the connection without an error from hyper.)
    let refused = match StatusCode::from_u16(state.refused.load(Relaxed)) {
        Ok(StatusCode::REQUEST_TIMEOUT) => Some((StatusCode::REQUEST_TIMEOUT, "cR--")),
        Ok(page) => Some((page, "PR--")),
        Err(_) => match &served {
            Err(e) if e.is_parse_too_large() => {
                Some((StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE, "PR--"))
            }
            Err(e) if e.is_parse() => Some((StatusCode::BAD_REQUEST, "PR--")),
            _ => None,
        },
    };
    if let Some((status, termination)) = refused {
        count_refused(&fe, src, started, status, termination);
    }
}

/// A request refused before it reached the service (a malformed, oversized or late
/// head): counted as a bad request with its status, and given an access-log line.
pub(super) fn count_refused(
    fe: &FrontendPlan,
    src: SocketAddr,
    started: Instant,
    status: StatusCode,
    termination: &'static str,
) {
    fe.counters.count_response(status);
    fe.counters.bad_requests.fetch_add(1, Relaxed);
    if log::enabled() {
        log::Entry {
            client: src.to_string(),
            accepted: Some(SystemTime::now()),
            frontend: fe.name.to_string(),
            backend: "<NOSRV>".into(),
            server: "<NOSRV>".into(),
            timers: [-1, -1, -1, -1, started.elapsed().as_millis() as i64],
            status: status.as_u16(),
            termination,
            fe_conn: fe.counters.open_connections(),
            request: "<BADREQ>".into(),
            ..log::Entry::default()
        }
        .emit();
    }
}

/// What a connection's requests share. `tls`: the ALPN result when it came in over TLS;
/// `state`: its socket wrapper's ([`ClientIo`]), or a fresh one (HTTP/2).
fn new_conn(
    (bind, plan): (&Arc<BindPlan>, CurrentPlan),
    src: SocketAddr,
    local: SocketAddr,
    tls: Option<Option<Vec<u8>>>,
    state: Arc<ConnState>,
) -> Arc<Conn> {
    Arc::new(Conn {
        state,
        client: Client {
            bind: bind.clone(),
            current: Some(plan),
            src,
            local,
            tracked: std::sync::Mutex::default(),
            tls: tls.is_some(),
            alpn: tls.flatten(),
        },
        accepted: Instant::now(),
        accepted_at: SystemTime::now(),
    })
}

/// Marks a request in flight (suspends the client timeouts) until dropped.
pub(super) struct Busy<'a>(&'a ConnState);

impl<'a> Busy<'a> {
    pub(super) fn new(state: &'a ConnState) -> Self {
        state.busy.fetch_add(1, Relaxed);
        Self(state)
    }
}

impl Drop for Busy<'_> {
    fn drop(&mut self) {
        self.0.busy.fetch_sub(1, Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_proto::v1 as pb;

    /// Every accepted connection's task state is allocated and copied at spawn: a plain
    /// connection's must not carry the TLS path's (it was 7.5 KB with it, 1.5 KB without).
    #[tokio::test]
    async fn a_plain_connection_task_stays_small() {
        let snap = pb::Snapshot {
            frontends: vec![pb::Frontend {
                name: "fe".into(),
                binds: vec![pb::Bind {
                    address: "127.0.0.1:1".into(),
                    tls: None,
                    http2: None,
                }],
                ..Default::default()
            }],
            ..Default::default()
        };
        let plan = crate::config::Plan::compile(&snap, &Default::default()).unwrap();
        let bind = plan.binds.values().next().unwrap().clone();
        let plan = Arc::new(arc_swap::ArcSwap::from_pointee(plan));
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let s = TcpStream::connect(l.local_addr().unwrap()).await.unwrap();
        let held = Held::new(bind.frontend.counters.clone(), |c: &FrontendCounters| {
            &c.current_connections
        });
        let current = CurrentPlan {
            plan,
            addr: bind.address,
        };
        let task = serve_connection(s, "127.0.0.1:2".parse().unwrap(), (bind, current), held);
        let size = std::mem::size_of_val(&task);
        assert!(size <= 2048, "a connection task's state is {size} bytes");
    }
}
