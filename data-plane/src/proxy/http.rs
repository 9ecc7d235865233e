//! One client connection: HTTP/1.1 with keep-alive, routing, forwarding, and the
//! WebSocket upgrade that turns the connection into a tunnel.
//!
//! Request phases, in order (see `docs/request-flow.md`):
//! 1. headers read (hyper, under `timeout http-request`; malformed → 400, too large → 431);
//! 2. `http_request` rules in configured order (redirect/deny/return stop here);
//! 3. `option forwardfor`;
//! 4. backend choice: first matching `use_backend`, else `default_backend`, else 503;
//! 5. server choice and connect, with `retries` and `redispatch` (failure → 503);
//! 6. request forwarded, response awaited under `timeout server` (→ 504; garbage → 502);
//! 7. `http_response` rules; a 101 to an upgrade request becomes a tunnel.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::request::Parts;
use http::{Request, Response, StatusCode, Uri};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use sluice_proto::v1 as pb;
use tokio::net::TcpStream;

use super::drain;
use super::error::{local_response, ProxyError, ServerRef};
use super::io::{ClientIo, ConnState};
use super::log;
use super::pool::{self, PooledBody};
use super::tunnel::{self, TunnelEnd};

/// A client connection that came in over TLS.
type TlsStream = tokio_rustls::server::TlsStream<TcpStream>;
use super::Body;
use crate::balance::PickInput;
use crate::config::acl::{holds, Condition, RequestCtx, Tracked};
use crate::config::{
    BackendPlan, BindPlan, FrontendPlan, RequestAction, ResponseAction, ServerPlan,
};
use crate::stats::{BackendCounters, FrontendCounters, Held, ServerCounters};

/// What every request on one client connection shares.
struct Conn {
    bind: Arc<BindPlan>,
    src: SocketAddr,
    local: SocketAddr,
    /// Shared with the socket wrapper: requests in flight and received so far (the
    /// first request's Tq counts from the accept).
    state: Arc<ConnState>,
    accepted: Instant,
    accepted_at: SystemTime,
    /// Stick counters this connection tracks (`track-sc0/1/2`), held until it closes — or,
    /// once it is a tunnel, until the tunnel does.
    tracked: std::sync::Mutex<Tracked>,
    /// Whether the connection came in over TLS (`ssl_fc`), and the ALPN protocol agreed.
    tls: bool,
    alpn: Option<Vec<u8>>,
}

impl Conn {
    /// What ACLs see of a request on this connection.
    fn ctx<'a>(&'a self, parts: &'a Parts, sc: &'a Tracked) -> RequestCtx<'a> {
        RequestCtx {
            parts,
            src: self.src,
            local: self.local,
            tls: self.tls,
            alpn: self.alpn.as_deref(),
            sc,
        }
    }

    /// The tracked stick counters, copied (cheap: three optional `Arc`s) when the
    /// frontend has a stick table, else none.
    fn sc(&self, fe: &FrontendPlan) -> Tracked {
        if fe.stick.is_some() {
            self.tracked.lock().expect("tracked lock").clone()
        } else {
            Tracked::default()
        }
    }
}

/// What a request went through, for the access log.
struct Phases {
    backend: Option<Arc<str>>,
    server: Option<Arc<str>>,
    /// Time spent in the backend queue (Tw).
    queue_ms: i64,
    connect_ms: i64,
    response_ms: i64,
    retries: u32,
    server_counters: Option<Arc<ServerCounters>>,
    backend_counters: Option<Arc<BackendCounters>>,
    /// The request as the response rules see it (after `http_request` rules), kept only
    /// when the frontend has response rules.
    view: Option<Parts>,
}

impl Default for Phases {
    fn default() -> Self {
        Phases {
            backend: None,
            server: None,
            queue_ms: -1,
            connect_ms: -1,
            response_ms: -1,
            retries: 0,
            server_counters: None,
            backend_counters: None,
            view: None,
        }
    }
}

/// Serves one accepted client connection until it closes or becomes a tunnel.
/// `current` is the frontend's connection count, taken at accept time.
pub async fn serve_connection(
    stream: TcpStream,
    src: SocketAddr,
    bind: Arc<BindPlan>,
    current: Held<FrontendCounters>,
) {
    let started = Instant::now();
    let fe = bind.frontend.clone();
    fe.counters.total_connections.fetch_add(1, Relaxed);
    // TCP_NODELAY is inherited from the listener. The local address is the bind's,
    // unless the bind is a wildcard.
    let local = if bind.address.ip().is_unspecified() {
        stream.local_addr().unwrap_or(bind.address)
    } else {
        bind.address
    };
    match bind.tls.clone() {
        None => serve_http(stream, None, bind, src, local, started).await,
        // Boxed: a TLS connection's state is large, and must not make every plain
        // connection's task that large too (it is copied into the task at each accept).
        Some(tls) => Box::pin(serve_tls(stream, tls, bind, src, local, started)).await,
    }
    drop(current);
    fe.counters.released.notify_waiters();
}

/// Terminates TLS on an accepted connection, then serves HTTP over it.
async fn serve_tls(
    stream: TcpStream,
    tls: super::tls::Tls,
    bind: Arc<BindPlan>,
    src: SocketAddr,
    local: SocketAddr,
    started: Instant,
) {
    let fe = bind.frontend.clone();
    // The handshake counts against `timeout http-request`, as in HAProxy.
    match tokio::time::timeout(fe.http_request_timeout, tls.0.accept(stream)).await {
        Ok(Ok(stream)) => {
            let alpn = stream.get_ref().1.alpn_protocol().map(<[u8]>::to_vec);
            serve_http(stream, Some(alpn), bind, src, local, started).await
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

/// Serves HTTP/1.1 on an accepted connection (plain, or TLS with its ALPN result) until
/// it closes or becomes a tunnel.
async fn serve_http<S>(
    stream: S,
    tls: Option<Option<Vec<u8>>>,
    bind: Arc<BindPlan>,
    src: SocketAddr,
    local: SocketAddr,
    started: Instant,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let fe = bind.frontend.clone();
    let io = ClientIo::new(
        stream,
        fe.client_timeout,
        fe.http_request_timeout,
        fe.refusal_pages.clone(),
    );
    let state = io.state.clone();
    let conn = Arc::new(Conn {
        state: state.clone(),
        bind,
        src,
        local,
        accepted: Instant::now(),
        accepted_at: SystemTime::now(),
        tracked: std::sync::Mutex::default(),
        tls: tls.is_some(),
        alpn: tls.flatten(),
    });
    let svc = service_fn(move |req| {
        let conn = conn.clone();
        async move {
            let resp = handle(req, conn.clone()).await;
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
}

/// Marks a request in flight (suspends the client timeouts) until dropped.
struct Busy<'a>(&'a ConnState);

impl<'a> Busy<'a> {
    fn new(state: &'a ConnState) -> Self {
        state.busy.fetch_add(1, Relaxed);
        Self(state)
    }
}

impl Drop for Busy<'_> {
    fn drop(&mut self) {
        self.0.busy.fetch_sub(1, Relaxed);
    }
}

async fn handle(mut req: Request<Incoming>, conn: Arc<Conn>) -> Response<Body> {
    let _busy = Busy::new(&conn.state);
    let _in_flight = drain::InFlight::begin();
    let started = Instant::now();
    let first = conn.state.requests.fetch_add(1, Relaxed) == 0;
    let fe = conn.bind.frontend.clone();
    fe.counters.total_requests.fetch_add(1, Relaxed);
    let upgrade = is_upgrade_request(req.headers());
    let client_upgrade = upgrade.then(|| hyper::upgrade::on(&mut req));
    let (parts, body) = req.into_parts();
    // Build the log entry only when the access log is on.
    let mut entry = log::enabled().then(|| log::Entry {
        client: conn.src.to_string(),
        accepted: Some(if first {
            conn.accepted_at
        } else {
            SystemTime::now()
        }),
        frontend: fe.name.to_string(),
        timers: [
            if first {
                started.duration_since(conn.accepted).as_millis() as i64
            } else {
                0
            },
            0,
            -1,
            -1,
            -1,
        ],
        request: format!("{} {} {:?}", parts.method, parts.uri, parts.version),
        termination: "----",
        ..log::Entry::default()
    });
    let mut phases = Phases::default();
    let resp = match forward(
        parts,
        body,
        &conn,
        &fe,
        client_upgrade,
        &mut phases,
        &mut entry,
    )
    .await
    {
        Ok(r) => r,
        Err(e) => {
            tracing::debug!(client = %conn.src, frontend = %fe.name, error = %e, "request failed");
            if let Some(en) = entry.as_mut() {
                en.termination = e.termination();
            }
            match (&e, &phases.server_counters, &phases.backend_counters) {
                (ProxyError::ServerTimeout(_), Some(s), _) => {
                    s.timeouts.fetch_add(1, Relaxed);
                }
                (ProxyError::BadResponse { .. }, Some(s), _) => {
                    s.bad_responses.fetch_add(1, Relaxed);
                }
                (ProxyError::NoServer(_), _, Some(b)) => {
                    b.no_server.fetch_add(1, Relaxed);
                }
                _ => {}
            }
            local_response(e.status(), &fe.errorfiles)
        }
    };
    let mut resp = resp;
    if !fe.http_after_response.is_empty() {
        if let Some(view) = &phases.view {
            apply_response_rules(
                resp.headers_mut(),
                view,
                &conn,
                &fe.http_after_response,
                &conn.sc(&fe),
            );
        }
    }
    if drain::is_draining() && resp.status() != StatusCode::SWITCHING_PROTOCOLS {
        // A stopping node closes client connections after their current response.
        resp.headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    fe.counters.count_response(resp.status());
    // A tunnel is logged when it closes; everything else now.
    if let Some(mut en) = entry {
        en.backend = phases.backend.as_deref().unwrap_or("<NOSRV>").to_string();
        en.server = phases.server.as_deref().unwrap_or("<NOSRV>").to_string();
        en.timers[1] = phases.queue_ms;
        en.timers[2] = phases.connect_ms;
        en.timers[3] = phases.response_ms;
        en.timers[4] = started.elapsed().as_millis() as i64;
        en.status = resp.status().as_u16();
        en.bytes = resp
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok()?.parse().ok())
            .unwrap_or(0);
        en.retries = phases.retries;
        en.fe_conn = fe.counters.open_connections();
        en.srv_conn = phases
            .server_counters
            .map_or(0, |c| c.current_connections.load(Relaxed));
        en.emit();
    }
    resp
}

/// `Connection: upgrade` plus an `Upgrade` header (RFC 9110 §7.8).
fn is_upgrade_request(h: &HeaderMap) -> bool {
    h.contains_key(header::UPGRADE) && has_token(h, header::CONNECTION, "upgrade")
}

fn has_token(h: &HeaderMap, name: HeaderName, token: &str) -> bool {
    h.get_all(name).iter().any(|v| {
        v.to_str()
            .is_ok_and(|s| s.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
    })
}

/// Runs `http_request` rules; `Some(response)` ends the request here.
fn apply_request_rules(
    parts: &mut Parts,
    conn: &Conn,
    fe: &FrontendPlan,
) -> Option<Response<Body>> {
    let mut sc = conn.sc(fe);
    for (cond, action) in &fe.http_request {
        let ctx = conn.ctx(parts, &sc);
        if !holds(cond, &ctx) {
            continue;
        }
        match action {
            RequestAction::Redirect { kind, target, code } => {
                let pq = parts
                    .uri
                    .path_and_query()
                    .map(|p| p.as_str())
                    .unwrap_or("/");
                let location = match kind {
                    pb::RedirectKind::Scheme => {
                        let host = parts
                            .headers
                            .get(header::HOST)
                            .and_then(|h| h.to_str().ok())
                            .map(str::to_string)
                            .unwrap_or_else(|| conn.local.to_string());
                        format!("{target}://{host}{pq}")
                    }
                    pb::RedirectKind::Prefix => format!("{}{pq}", target.trim_end_matches('/')),
                    _ => target.clone(),
                };
                let mut resp = empty_response(*code);
                if let Ok(v) = HeaderValue::from_str(&location) {
                    resp.headers_mut().insert(header::LOCATION, v);
                }
                return Some(resp);
            }
            RequestAction::Deny(status) => {
                fe.counters.denied.fetch_add(1, Relaxed);
                return Some(local_response(*status, &fe.errorfiles));
            }
            RequestAction::Return {
                status,
                content_type,
                body,
            } => {
                let mut resp = Response::new(
                    Full::new(body.clone())
                        .map_err(|never| match never {})
                        .boxed(),
                );
                *resp.status_mut() = *status;
                resp.headers_mut()
                    .insert(header::CONTENT_TYPE, content_type.clone());
                return Some(resp);
            }
            RequestAction::SetHeader(name, value) => {
                parts.headers.insert(name.clone(), value.clone());
            }
            RequestAction::AddHeader(name, value) => {
                parts.headers.append(name.clone(), value.clone());
            }
            RequestAction::DelHeader(name) => {
                parts.headers.remove(name);
            }
            RequestAction::ReplaceHeader(name, regex, replacement) => {
                let values: Vec<HeaderValue> = parts
                    .headers
                    .get_all(name)
                    .iter()
                    .map(|v| match v.to_str() {
                        Ok(s) => HeaderValue::from_str(&regex.replace_all(s, replacement.as_str()))
                            .unwrap_or_else(|_| v.clone()),
                        Err(_) => v.clone(),
                    })
                    .collect();
                parts.headers.remove(name);
                for v in values {
                    parts.headers.append(name.clone(), v);
                }
            }
            RequestAction::SetPath(path) => {
                let pq = match parts.uri.query() {
                    Some(q) => format!("{path}?{q}"),
                    None => path.clone(),
                };
                if let Ok(uri) = pq.parse::<Uri>() {
                    parts.uri = uri;
                }
            }
            RequestAction::TrackSc(n) => {
                let Some(table) = &fe.stick else { continue };
                let slot = &mut sc[(*n as usize).min(2)];
                match slot {
                    // Already tracked by this connection: one more request.
                    Some(t) => t.entry.count_request(),
                    None => {
                        let t = table.track(conn.src.ip());
                        t.entry.count_request();
                        *slot = Some(t);
                        *conn.tracked.lock().expect("tracked lock") = sc.clone();
                    }
                }
            }
        }
    }
    None
}

fn empty_response(status: StatusCode) -> Response<Body> {
    let mut resp = Response::new(
        Full::new(Bytes::new())
            .map_err(|never| match never {})
            .boxed(),
    );
    *resp.status_mut() = status;
    resp
}

fn choose_backend(parts: &Parts, conn: &Conn, fe: &FrontendPlan) -> Option<Arc<BackendPlan>> {
    let sc = conn.sc(fe);
    let ctx = conn.ctx(parts, &sc);
    fe.use_backend
        .iter()
        .find(|(cond, _)| holds(cond, &ctx))
        .map(|(_, b)| b.clone())
        .or_else(|| fe.default_backend.clone())
}

/// A server connection for one request: a new socket, or an idle pooled connection.
enum Upstream {
    Fresh(TcpStream),
    Pooled(pool::Sender),
}

async fn connect_server(server: &ServerPlan, timeout: Duration) -> Result<TcpStream, String> {
    let connecting = async {
        match server.socket_addr {
            Some(addr) => TcpStream::connect(addr).await,
            None => TcpStream::connect(server.address.as_str()).await,
        }
    };
    match tokio::time::timeout(timeout, connecting).await {
        Ok(Ok(stream)) => {
            let _ = stream.set_nodelay(true);
            Ok(stream)
        }
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err("timeout connect".to_string()),
    }
}

/// Picks a server of `backend` and gets a connection to it: an idle pooled one when
/// `pooled`, else a new one, retrying `retries` times; with `redispatch`, the last retry
/// goes to another server if there is one.
async fn connect(
    backend: &BackendPlan,
    input: &PickInput<'_>,
    sticky: Option<usize>,
    pooled: bool,
    queue_ms: &mut i64,
) -> Result<(usize, Upstream, u32, Held<ServerCounters>), ProxyError> {
    // A sticky request whose server has no free slot is balanced like any other.
    let sticky = sticky.and_then(|i| backend.servers[i].try_slot().map(|slot| (i, slot)));
    let (mut idx, mut slot) = match sticky {
        Some(taken) => {
            *queue_ms = 0;
            taken
        }
        None => pick_or_queue(backend, input, queue_ms).await?,
    };
    let mut attempts = 0;
    loop {
        attempts += 1;
        let server = &backend.servers[idx];
        if pooled {
            if let Some(sender) = server.pool.as_ref().and_then(|p| p.take()) {
                return Ok((idx, Upstream::Pooled(sender), attempts - 1, slot));
            }
        }
        let reason = match connect_server(server, backend.connect_timeout).await {
            Ok(stream) => return Ok((idx, Upstream::Fresh(stream), attempts - 1, slot)),
            Err(reason) => reason,
        };
        server.counters.connect_errors.fetch_add(1, Relaxed);
        tracing::debug!(backend = %backend.name, server = %server.name, %reason, attempts, "connect failed");
        if attempts > backend.retries {
            return Err(ProxyError::Connect {
                server: format!("{}/{}", backend.name, server.name),
                attempts,
                reason,
            });
        }
        if backend.redispatch && attempts == backend.retries {
            let failed = idx;
            let other = backend.balancer.pick(&backend.servers, input, |i, s| {
                i != failed && s.accepts_new()
            });
            if let Some((other, other_slot)) =
                other.and_then(|o| Some((o, backend.servers[o].try_slot()?)))
            {
                idx = other;
                slot = other_slot;
            }
        }
    }
}

/// Picks a server with a free slot. When every available server is at its `maxconn`, the
/// request waits in the backend's queue (first come, first served) for a slot, at most
/// `timeout queue`. Backup servers are used only while no regular server is up — not
/// because regular ones are busy.
async fn pick_or_queue(
    backend: &BackendPlan,
    input: &PickInput<'_>,
    queue_ms: &mut i64,
) -> Result<(usize, Held<ServerCounters>), ProxyError> {
    let started = tokio::time::Instant::now();
    let regular_up = backend.servers.iter().any(|s| !s.backup && s.up_for_new());
    let tier = |s: &ServerPlan| !regular_up || !s.backup;
    let deadline = tokio::time::Instant::now() + backend.queue_timeout;
    let mut queued = None;
    loop {
        // Registered before looking, so a slot freed in between is not missed.
        let freed = backend.counters.slot_freed.notified();
        tokio::pin!(freed);
        freed.as_mut().enable();
        if let Some(i) = backend
            .balancer
            .pick(&backend.servers, input, |_, s| tier(s) && s.accepts_new())
        {
            // Another request may have taken the last slot since the pick looked.
            match backend.servers[i].try_slot() {
                Some(slot) => {
                    *queue_ms = started.elapsed().as_millis() as i64;
                    return Ok((i, slot));
                }
                None => continue,
            }
        }
        if !backend.servers.iter().any(|s| tier(s) && s.up_for_new()) {
            return Err(ProxyError::NoServer(backend.name.to_string()));
        }
        queued.get_or_insert_with(|| {
            Held::new(backend.counters.clone(), |c: &BackendCounters| &c.queued)
        });
        if tokio::time::timeout_at(deadline, freed).await.is_err() {
            *queue_ms = started.elapsed().as_millis() as i64;
            backend.counters.queue_timeouts.fetch_add(1, Relaxed);
            return Err(ProxyError::QueueTimeout(backend.name.to_string()));
        }
    }
}

/// Sends a plain (non-upgrade) request on a keep-alive server connection and relays the
/// response; the connection returns to the server's pool once the body has been relayed.
/// A pooled connection the server closed meanwhile is replaced by a new one, as long as
/// the request has not been sent on it.
async fn exchange_pooled(
    mut request: Request<Incoming>,
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
            .map_err(|reason| ProxyError::Connect {
                server: server_name.to_string(),
                attempts: 1,
                reason,
            })
    };
    let exchange = async {
        loop {
            let (mut sender, reused) = match upstream {
                Upstream::Pooled(s) => (s, true),
                Upstream::Fresh(stream) => {
                    let (s, connection) = hyper::client::conn::http1::Builder::new()
                        .handshake::<_, Incoming>(TokioIo::new(stream))
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

/// Hop-by-hop headers (RFC 9110 §7.6.1) that must not be forwarded on plain requests.
fn strip_hop_by_hop(h: &mut HeaderMap) {
    let listed: Vec<HeaderName> = h
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|s| s.split(','))
        .filter_map(|t| HeaderName::from_bytes(t.trim().as_bytes()).ok())
        .collect();
    for name in listed {
        h.remove(name);
    }
    for name in [
        header::CONNECTION,
        HeaderName::from_static("keep-alive"),
        HeaderName::from_static("proxy-connection"),
        header::TE,
        header::TRAILER,
        header::TRANSFER_ENCODING,
        header::UPGRADE,
    ] {
        h.remove(name);
    }
}

fn apply_response_rules(
    h: &mut HeaderMap,
    parts: &Parts,
    conn: &Conn,
    rules: &[(Option<Condition>, ResponseAction)],
    sc: &Tracked,
) {
    let ctx = conn.ctx(parts, sc);
    for (cond, action) in rules {
        if !holds(cond, &ctx) {
            continue;
        }
        match action {
            ResponseAction::SetHeader(n, v) => {
                h.insert(n.clone(), v.clone());
            }
            ResponseAction::AddHeader(n, v) => {
                h.append(n.clone(), v.clone());
            }
            ResponseAction::DelHeader(n) => {
                h.remove(n);
            }
        }
    }
}

/// What the headers of a plain server response go through before the client sees them.
fn server_response_headers(h: &mut HeaderMap, phases: &Phases, conn: &Conn, fe: &FrontendPlan) {
    strip_hop_by_hop(h);
    if let Some(view) = phases
        .view
        .as_ref()
        .filter(|_| !fe.http_response.is_empty())
    {
        apply_response_rules(h, view, conn, &fe.http_response, &conn.sc(fe));
    }
}

async fn forward(
    mut parts: Parts,
    body: Incoming,
    conn: &Conn,
    fe: &Arc<FrontendPlan>,
    client_upgrade: Option<hyper::upgrade::OnUpgrade>,
    phases: &mut Phases,
    entry: &mut Option<log::Entry>,
) -> Result<Response<Body>, ProxyError> {
    let answered = apply_request_rules(&mut parts, conn, fe);
    // Keep a copy of what the response rules may look at; the request itself moves on.
    if !fe.http_response.is_empty() || !fe.http_after_response.is_empty() {
        let mut p = Request::new(()).into_parts().0;
        p.method = parts.method.clone();
        p.uri = parts.uri.clone();
        p.headers = parts.headers.clone();
        phases.view = Some(p);
    }
    if let Some(resp) = answered {
        // Answered by a rule (redirect, deny, return): "locally processed".
        if let Some(en) = entry.as_mut() {
            en.termination = "LR--";
        }
        return Ok(resp);
    }
    if fe.forwardfor {
        let ip = conn.src.ip().to_canonical().to_string();
        parts.headers.append(
            HeaderName::from_static("x-forwarded-for"),
            HeaderValue::from_str(&ip).expect("an IP is a valid header value"),
        );
    }
    let backend = choose_backend(&parts, conn, fe).ok_or(ProxyError::NoBackend)?;
    phases.backend = Some(backend.name.clone());
    backend.counters.total_requests.fetch_add(1, Relaxed);
    phases.backend_counters = Some(backend.counters.clone());
    let connect_started = Instant::now();
    // Upgrades always get a connection of their own: it becomes the tunnel's.
    let pooled = client_upgrade.is_none() && !backend.server_close;
    // Persistence: a valid cookie naming a server that can take the request wins.
    let presented = backend
        .cookie
        .as_ref()
        .and_then(|c| c.presented(&parts.headers));
    let sticky = presented.as_ref().filter(|p| p.fresh).and_then(|p| {
        backend
            .servers
            .iter()
            .position(|s| s.cookie.as_deref() == Some(p.server.as_str()) && s.accepts_sticky())
    });
    if let Some(c) = &backend.cookie {
        c.strip_request(&mut parts.headers);
    }
    let input = PickInput {
        src: conn.src.ip(),
        parts: &parts,
    };
    let (idx, upstream, retries, held) =
        connect(&backend, &input, sticky, pooled, &mut phases.queue_ms).await?;
    phases.connect_ms = connect_started.elapsed().as_millis() as i64;
    phases.retries = retries;
    let server = &backend.servers[idx];
    let persist = |h: &mut HeaderMap| {
        if let (Some(c), Some(value)) = (&backend.cookie, &server.cookie) {
            c.on_response(h, value, presented.as_ref());
        }
    };
    phases.server = Some(server.name.clone());
    phases.server_counters = Some(server.counters.clone());
    let server_name = ServerRef {
        backend: backend.name.clone(),
        server: server.name.clone(),
    };
    server.counters.total_connections.fetch_add(1, Relaxed);

    if client_upgrade.is_none() {
        strip_hop_by_hop(&mut parts.headers);
        if backend.server_close {
            // One request per server connection (option http-server-close).
            parts
                .headers
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
    }
    let request = Request::from_parts(parts, body);
    if pooled {
        let sent_at = Instant::now();
        let resp = exchange_pooled(request, upstream, server, &backend, &server_name, held).await;
        phases.response_ms = sent_at.elapsed().as_millis() as i64;
        let (mut rparts, rbody) = resp?.into_parts();
        server.counters.count_response(rparts.status);
        server_response_headers(&mut rparts.headers, phases, conn, fe);
        persist(&mut rparts.headers);
        return Ok(Response::from_parts(rparts, rbody));
    }
    let Upstream::Fresh(stream) = upstream else {
        unreachable!("only pooled exchanges take pooled connections");
    };

    let (mut sender, connection) = hyper::client::conn::http1::Builder::new()
        .handshake::<_, Incoming>(TokioIo::new(stream))
        .await
        .map_err(|e| ProxyError::BadResponse {
            server: server_name.clone(),
            reason: e.to_string(),
        })?;
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
    let sent_at = Instant::now();
    let exchanged = tokio::time::timeout(backend.server_timeout, exchange).await;
    phases.response_ms = sent_at.elapsed().as_millis() as i64;
    let mut resp = match exchanged {
        Err(_) => return Err(ProxyError::ServerTimeout(server_name)),
        Ok(Err(e)) => {
            let reason = match &connection_done {
                Some(Err(ce)) => ce.to_string(),
                _ => e.to_string(),
            };
            return Err(ProxyError::BadResponse {
                server: server_name,
                reason,
            });
        }
        Ok(Ok(r)) => r,
    };

    let status = resp.status();
    if status == StatusCode::SWITCHING_PROTOCOLS {
        let Some(client_upgrade) = client_upgrade else {
            return Err(ProxyError::BadResponse {
                server: server_name,
                reason: "101 to a request that did not ask to upgrade".into(),
            });
        };
        let server_upgrade = hyper::upgrade::on(&mut resp);
        // With the 101 read, the connection hands its socket over and completes. (The
        // sender must stay alive until then, or the connection would just close.)
        let connected = match connection_done {
            Some(r) => r,
            None => connection.await,
        };
        let upgraded = match connected {
            Ok(()) => server_upgrade.await,
            Err(e) => {
                return Err(ProxyError::BadResponse {
                    server: server_name,
                    reason: e.to_string(),
                })
            }
        };
        drop(sender);
        let server_io = match upgraded.map(|u| u.downcast::<TokioIo<TcpStream>>()) {
            Ok(Ok(parts)) => (parts.io.into_inner(), parts.read_buf),
            _ => {
                return Err(ProxyError::BadResponse {
                    server: server_name,
                    reason: "the upgraded server connection is not a TCP stream".into(),
                })
            }
        };
        let mut out = Response::new(
            Full::new(Bytes::new())
                .map_err(|never| match never {})
                .boxed(),
        );
        *out.status_mut() = status;
        *out.headers_mut() = std::mem::take(resp.headers_mut());
        persist(out.headers_mut());
        if let Some(view) = phases
            .view
            .as_ref()
            .filter(|_| !fe.http_response.is_empty())
        {
            apply_response_rules(
                out.headers_mut(),
                view,
                conn,
                &fe.http_response,
                &conn.sc(fe),
            );
        }
        fe.counters.total_upgrades.fetch_add(1, Relaxed);
        server.counters.total_upgrades.fetch_add(1, Relaxed);
        server.counters.count_response(status);
        // The tunnel writes the access-log line when it closes.
        let log = entry.take().map(|mut en| {
            en.backend = backend.name.to_string();
            en.server = server.name.to_string();
            en.timers[1] = phases.queue_ms;
            en.timers[2] = phases.connect_ms;
            en.timers[3] = phases.response_ms;
            en.status = 101;
            en.retries = phases.retries;
            Box::new(en)
        });
        // Counted as a tunnel from now on, before the HTTP connection stops counting, so
        // `maxconn` never sees a gap.
        let fe_tunnel = Held::new(fe.counters.clone(), |c: &FrontendCounters| {
            &c.current_tunnels
        });
        let ctx = TunnelCtx {
            fe_tunnel,
            frontend: fe.counters.clone(),
            server: server.counters.clone(),
            client: conn.src,
            idle: backend.tunnel_timeout,
            held,
            log,
            _tracked: conn.sc(fe),
        };
        drain::spawn_tunnel(ctx.run(client_upgrade, server_io));
        return Ok(out);
    }
    // A plain response: the connection must keep running while the body is relayed.
    if connection_done.is_none() {
        tokio::spawn(connection);
    }

    let (mut rparts, rbody) = resp.into_parts();
    server.counters.count_response(rparts.status);
    server_response_headers(&mut rparts.headers, phases, conn, fe);
    persist(&mut rparts.headers);
    // The server connection (and its count) lives until the body has been relayed.
    let body = rbody.map_frame(move |f| {
        let _ = &held;
        f
    });
    Ok(Response::from_parts(rparts, body.boxed()))
}

/// Everything a tunnel task needs once the 101 has been relayed. Deliberately small: the
/// plan is not kept alive by open tunnels.
struct TunnelCtx {
    /// The frontend's tunnel count, held until the tunnel ends.
    fe_tunnel: Held<FrontendCounters>,
    frontend: Arc<FrontendCounters>,
    server: Arc<ServerCounters>,
    client: SocketAddr,
    idle: std::time::Duration,
    /// The server's connection count, held until the tunnel ends.
    held: Held<ServerCounters>,
    /// The access-log entry to complete and write at close (None when logging is off).
    /// Boxed: it is big, and absent unless logging is on.
    log: Option<Box<log::Entry>>,
    /// Stick counters the connection tracked: its `conn_cur` lasts as long as the tunnel.
    _tracked: Tracked,
}

impl TunnelCtx {
    /// The tunnel task. Its state is kept small (an idle tunnel is mostly this future):
    /// the context moves into the bookkeeping guard before the first await, so it is held
    /// once, not twice.
    fn run(
        self,
        client: hyper::upgrade::OnUpgrade,
        server: (TcpStream, Bytes),
    ) -> impl std::future::Future<Output = ()> + Send {
        let idle = self.idle;
        let mut ended = TunnelEnded {
            _srv_tunnel: Held::new(self.server.clone(), |c: &ServerCounters| &c.current_tunnels),
            started: Instant::now(),
            meter: tunnel::Meter::default(),
            end: None,
            ctx: Some(self),
        };
        async move {
            let peer = ended.ctx.as_ref().map(|c| c.client);
            let upgraded = match client.await {
                Ok(c) => c,
                Err(e) => {
                    tracing::debug!(client = ?peer, error = %e, "client upgrade did not complete");
                    ended.finish(TunnelEnd::ClientError);
                    return;
                }
            };
            // Take the raw socket back from hyper: the tunnel works on the sockets
            // themselves. A TLS client connection keeps its TLS stream.
            let report = match upgraded.downcast::<TokioIo<ClientIo>>() {
                Ok(c) => {
                    // Unpacked in a block, so nothing of hyper's parts stays in this
                    // task's state while the tunnel runs.
                    let (client, early) = {
                        let c = c;
                        (c.io.into_inner().into_inner(), c.read_buf)
                    };
                    ended.started = Instant::now();
                    tunnel::run(client, early, server.0, server.1, idle, &ended.meter).await
                }
                // A TLS client: boxed, since a TLS stream and its buffered copies are
                // large and must not make every plain tunnel's task that large too.
                Err(upgraded) => {
                    match Box::pin(tls_tunnel(upgraded, server, idle, &ended.meter)).await {
                        Some(report) => report,
                        None => {
                            tracing::error!(client = ?peer, "upgraded client connection of an unknown kind; closing");
                            ended.finish(TunnelEnd::ClientError);
                            return;
                        }
                    }
                }
            };
            ended.finish(report.end);
        }
    }
}

/// The tunnel of a client on a TLS bind; `None` if the upgraded connection is not one.
async fn tls_tunnel(
    upgraded: hyper::upgrade::Upgraded,
    server: (TcpStream, Bytes),
    idle: Duration,
    meter: &tunnel::Meter,
) -> Option<tunnel::TunnelReport> {
    let c = upgraded.downcast::<TokioIo<ClientIo<TlsStream>>>().ok()?;
    let client = c.io.into_inner().into_inner();
    Some(tunnel::run_stream(client, c.read_buf, server.0, server.1, idle, meter).await)
}

/// A tunnel's bookkeeping, done when the tunnel task ends however it ends: at the
/// tunnel's own end, or when a draining node aborts the task (logged `KD--`).
struct TunnelEnded {
    ctx: Option<TunnelCtx>,
    /// The server's tunnel count.
    _srv_tunnel: Held<ServerCounters>,
    started: Instant,
    meter: tunnel::Meter,
    end: Option<TunnelEnd>,
}

impl TunnelEnded {
    /// Records how the tunnel ended (without it, the drop logs a close by the node).
    fn finish(&mut self, end: TunnelEnd) {
        self.end = Some(end);
    }
}

impl Drop for TunnelEnded {
    fn drop(&mut self) {
        let Some(ctx) = self.ctx.take() else { return };
        let up = self.meter.up.load(Relaxed);
        let down = self.meter.down.load(Relaxed);
        ctx.frontend.bytes_in.fetch_add(up, Relaxed);
        ctx.frontend.bytes_out.fetch_add(down, Relaxed);
        ctx.server.bytes_in.fetch_add(up, Relaxed);
        ctx.server.bytes_out.fetch_add(down, Relaxed);
        if let Some(mut en) = ctx.log {
            en.timers[4] = en.timers[0].max(0) + self.started.elapsed().as_millis() as i64;
            en.bytes = down;
            en.termination = match self.end {
                Some(TunnelEnd::Closed { client_first: true }) => "CD--",
                Some(TunnelEnd::Closed {
                    client_first: false,
                }) => "SD--",
                Some(TunnelEnd::Timeout) => "cD--",
                Some(TunnelEnd::ClientError) => "ED--",
                Some(TunnelEnd::ServerError) => "eD--",
                // Closed by the node itself: its drain deadline passed.
                None => "KD--",
            };
            en.fe_conn = ctx.frontend.open_connections();
            en.srv_conn = ctx.server.current_connections.load(Relaxed);
            en.emit();
        }
        // Stick counters first: once the tunnel no longer counts, neither does its source.
        let TunnelCtx {
            _tracked,
            held,
            fe_tunnel,
            frontend,
            ..
        } = ctx;
        drop(_tracked);
        drop(held);
        drop(fe_tunnel);
        frontend.released.notify_waiters();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An idle tunnel is mostly its task's state, so that state is watched: a plain
    /// tunnel's task must not carry the TLS path's (large) state, nor hold its context
    /// twice. Both happened once and tripled the RSS per idle tunnel.
    #[tokio::test]
    async fn a_tunnel_task_stays_small() {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let s = TcpStream::connect(l.local_addr().unwrap()).await.unwrap();
        let counters = Arc::new(ServerCounters::default());
        let fe = Arc::new(FrontendCounters::default());
        let ctx = TunnelCtx {
            fe_tunnel: Held::new(fe.clone(), |c: &FrontendCounters| &c.current_tunnels),
            frontend: fe,
            server: counters.clone(),
            client: "127.0.0.1:1".parse().unwrap(),
            idle: Duration::from_secs(1),
            held: Held::server_slot(counters),
            log: None,
            _tracked: Tracked::default(),
        };
        let mut req = Request::new(());
        // What is spawned: the tunnel, registered for a drain.
        let task = drain::registered(
            ctx.run(hyper::upgrade::on(&mut req), (s, Bytes::new())),
            u64::MAX,
        );
        let size = std::mem::size_of_val(&task);
        assert!(size <= 1536, "a tunnel task's state is {size} bytes");
    }

    /// Every accepted connection's task state is copied into the task at spawn: a plain
    /// connection's must not carry the TLS path's (it was 7.5 KB with it, 1.5 KB without).
    #[tokio::test]
    async fn a_plain_connection_task_stays_small() {
        let snap = pb::Snapshot {
            frontends: vec![pb::Frontend {
                name: "fe".into(),
                binds: vec![pb::Bind {
                    address: "127.0.0.1:1".into(),
                    tls: None,
                }],
                ..Default::default()
            }],
            ..Default::default()
        };
        let plan = crate::config::Plan::compile(&snap, &Default::default()).unwrap();
        let bind = plan.binds.values().next().unwrap().clone();
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let s = TcpStream::connect(l.local_addr().unwrap()).await.unwrap();
        let held = Held::new(bind.frontend.counters.clone(), |c: &FrontendCounters| {
            &c.current_connections
        });
        let task = serve_connection(s, "127.0.0.1:2".parse().unwrap(), bind, held);
        let size = std::mem::size_of_val(&task);
        assert!(size <= 2048, "a connection task's state is {size} bytes");
    }
}
