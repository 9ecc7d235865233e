//! One request, from its head to its response, and its access-log line.
//!
//! [`handle`] serves a request hyper read and starts the tunnel after a `101`;
//! [`handle_read`], a request the node read itself (an upgrade read by
//! [`super::direct`], an HTTP/2 stream's), returning the tunnel for its caller to start. Both go through `respond`, the bookkeeping (counters,
//! the log entry, `http_after_response` rules, a draining node's `Connection: close`);
//! [`forward`] runs the phases in order, each returning what the next needs:
//!
//! 1. **route** ([`super::route`]): request rules, `forwardfor`, backend choice;
//! 2. **connect** ([`super::upstream::connect`]): server choice with persistence, queue,
//!    retries and redispatch ([`crate::balance`]), and a server connection;
//! 3. **exchange** ([`super::upstream`]): the request sent, the response head awaited
//!    under `timeout server` (→ 504; garbage → 502), response rules;
//! 4. **upgrade** ([`switch`]): a `101` to an upgrade request becomes the client's `101`
//!    and a tunnel ([`super::session::Pending`]).
//!
//! See `docs/request-flow.md` for the whole flow and its timeouts.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::request::Parts;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;

use super::busy;
use super::drain;
use super::error::{local_response, ProxyError, ServerRef};
use super::h2::{self, Bridged};
use super::log;
use super::route::{self, Client, Route, Routed};
use super::session::{ClientSide, Pending, ServerSide};
use super::upgrade;
use super::upstream::{self, Exchange, Replay, Upstream};
use super::Body;
use crate::balance::cookie::Persistence;
use crate::balance::{ChoiceError, Dispatch, PickInput};
use crate::body::ReqBody;
use crate::config::{BackendPlan, FrontendPlan, ServerPlan};
use crate::counters::ServerCounters;

/// What a request went through, for the access log and the counters.
struct Trace {
    backend: Option<Arc<BackendPlan>>,
    server: Option<(Arc<str>, Arc<ServerCounters>)>,
    /// Time spent in the backend queue (Tw); -1: never queued.
    queue_ms: i64,
    connect_ms: i64,
    response_ms: i64,
    retries: u32,
    /// The request as the response rules see it (see [`Routed::view`]).
    view: Option<Parts>,
    /// Answered by a rule: `LR--` (redirect, return) or `PR--` (deny), as HAProxy logs
    /// them.
    local: Option<&'static str>,
    /// The persistence cookie's status for the log (see `log::Entry::cookie`).
    cookie: Option<[u8; 2]>,
}

impl Default for Trace {
    fn default() -> Self {
        Trace {
            backend: None,
            server: None,
            queue_ms: -1,
            connect_ms: -1,
            response_ms: -1,
            retries: 0,
            view: None,
            local: None,
            cookie: None,
        }
    }
}

/// What [`forward`] gives the client.
enum Forwarded {
    Response(Response<Body>),
    /// A `101`: the response, and the server side of the tunnel to start with it.
    Upgrade(Response<Body>, ServerSide),
}

/// When a request arrived, for the access log.
pub struct Arrival {
    /// When its head started: the first request's counts from the accept.
    pub at: SystemTime,
    /// Time waiting for its head (Tq), in ms.
    pub head_ms: i64,
    pub started: Instant,
}

/// Serves one request hyper's HTTP/1.1 server read from a client connection; a `101`
/// starts the tunnel on hyper's upgrade of it.
pub async fn handle(
    mut req: Request<Incoming>,
    client: &Client,
    arrival: Arrival,
) -> Response<Body> {
    let upgrade = route::is_upgrade_request(req.headers());
    let client_upgrade = upgrade.then(|| hyper::upgrade::on(&mut req));
    let (parts, body) = req.into_parts();
    let (resp, tunnel) = respond(parts, ReqBody::Incoming(body), client, arrival, upgrade).await;
    if let (Some(tunnel), Some(client_upgrade)) = (tunnel, client_upgrade) {
        // One tunnel per HTTP/1.1 connection: no count of tunnels on it to keep.
        tunnel.start(ClientSide::Hyper(client_upgrade), None);
    }
    resp
}

/// Serves a request the node read itself — a WebSocket upgrade ([`super::direct`]) or
/// an HTTP/2 stream's request ([`super::h2stream`]), `upgrade` saying whether it is one
/// (the reader knows): the response, and after a `101` (a bridged stream's `200`) the
/// tunnel for the caller to start once it has written the head.
pub async fn handle_read(
    req: Request<ReqBody>,
    client: &Client,
    arrival: Arrival,
    upgrade: bool,
) -> (Response<Body>, Option<Pending>) {
    let (parts, body) = req.into_parts();
    respond(parts, body, client, arrival, upgrade).await
}

/// The request's bookkeeping around [`forward`]: counters, the log entry, the
/// `http_after_response` rules, a draining node's `Connection: close`.
async fn respond(
    parts: Parts,
    body: ReqBody,
    client: &Client,
    arrival: Arrival,
    upgrade: bool,
) -> (Response<Body>, Option<Pending>) {
    busy::active();
    let _in_flight = drain::InFlight::begin();
    let started = arrival.started;
    let fe = client.bind_now().frontend.clone();
    fe.counters.total_requests.fetch_add(1, Relaxed);
    // Build the log entry only when the access log is on.
    let mut entry = log::enabled().then(|| log::Entry {
        client: client.src.to_string(),
        accepted: Some(arrival.at),
        frontend: fe.name.to_string(),
        timers: [arrival.head_ms, 0, -1, -1, -1],
        request: format!("{} {} {:?}", parts.method, parts.uri, parts.version),
        termination: "----",
        ..log::Entry::default()
    });
    let (trace, forwarded) = forward(parts, body, client, &fe, upgrade).await;
    let (mut resp, tunnel) = match forwarded {
        Ok(Forwarded::Response(r)) => (r, None),
        Ok(Forwarded::Upgrade(r, server)) => (r, Some(server)),
        Err(e) => {
            tracing::debug!(client = %client.src, frontend = %fe.name, error = %e, "request failed");
            if let Some(en) = entry.as_mut() {
                en.termination = e.termination();
            }
            count_failure(&e, &trace);
            let mut resp = local_response(e.status(), &fe.errorfiles);
            if matches!(e, ProxyError::BadRequest(_) | ProxyError::NotImplemented(_)) {
                // Where this request ends, and so where the next one starts, is not
                // known for sure: the connection ends with the response.
                fe.counters.bad_requests.fetch_add(1, Relaxed);
                resp.headers_mut()
                    .insert(header::CONNECTION, HeaderValue::from_static("close"));
            }
            (resp, None)
        }
    };
    if let (Some(termination), Some(en)) = (trace.local, entry.as_mut()) {
        en.termination = termination;
    }
    if let Some(view) = trace
        .view
        .as_ref()
        .filter(|_| !fe.http_after_response.is_empty())
    {
        route::response_rules(
            resp.headers_mut(),
            view,
            client,
            &fe.http_after_response,
            &client.sc(&fe),
        );
    }
    if drain::is_draining() && resp.status() != StatusCode::SWITCHING_PROTOCOLS {
        // A stopping node closes client connections after their current response.
        resp.headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    fe.counters.count_response(resp.status());
    if let Some(mut en) = entry.take() {
        fill_entry(&mut en, &trace);
        if tunnel.is_some() {
            // The tunnel completes the line and writes it when it closes.
            en.status = 101;
            entry = Some(en);
        } else {
            en.timers[4] = started.elapsed().as_millis() as i64;
            en.status = resp.status().as_u16();
            en.bytes = content_length(&resp);
            en.fe_conn = fe.counters.open_connections();
            en.srv_conn = trace
                .server
                .as_ref()
                .map_or(0, |(_, c)| c.current_connections.load(Relaxed));
            en.emit();
        }
    }
    let tunnel = tunnel.map(|server| Pending {
        frontend: fe.counters.clone(),
        client: client.src,
        server,
        log: entry.map(Box::new),
        tracked: client.sc(&fe),
    });
    (resp, tunnel)
}

/// Records the backend and server, the timers and retries on a log entry.
fn fill_entry(en: &mut log::Entry, trace: &Trace) {
    en.backend = trace
        .backend
        .as_ref()
        .map_or("<NOSRV>", |b| &*b.name)
        .to_string();
    en.server = trace
        .server
        .as_ref()
        .map_or("<NOSRV>", |(name, _)| &**name)
        .to_string();
    en.timers[1] = trace.queue_ms;
    en.timers[2] = trace.connect_ms;
    en.timers[3] = trace.response_ms;
    en.retries = trace.retries;
    en.cookie = trace.cookie;
}

fn content_length(resp: &Response<Body>) -> u64 {
    resp.headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse().ok())
        .unwrap_or(0)
}

/// Counts a failed request against the server or backend that caused it.
fn count_failure(e: &ProxyError, trace: &Trace) {
    let server = trace.server.as_ref().map(|(_, c)| c);
    match e {
        ProxyError::ServerTimeout(_) => {
            if let Some(s) = server {
                s.timeouts.fetch_add(1, Relaxed);
            }
        }
        ProxyError::BadResponse { .. } => {
            if let Some(s) = server {
                s.bad_responses.fetch_add(1, Relaxed);
            }
        }
        ProxyError::Choice(ChoiceError::NoServer(_)) => {
            if let Some(b) = &trace.backend {
                b.counters.no_server.fetch_add(1, Relaxed);
            }
        }
        _ => {}
    }
}

/// The phases of a request: route → connect → exchange → upgrade. Returns what the
/// request went through with the result.
async fn forward(
    mut parts: Parts,
    body: ReqBody,
    client: &Client,
    fe: &FrontendPlan,
    upgrade: bool,
) -> (Trace, Result<Forwarded, ProxyError>) {
    if let Err(e) = check_head(&parts) {
        return (Trace::default(), Err(e));
    }
    let Routed { route, view } = route::route(&mut parts, client, fe);
    let mut trace = Trace {
        view,
        ..Trace::default()
    };
    let backend = match route {
        Route::Answered(resp) => {
            trace.local = Some("LR--");
            return (trace, Ok(Forwarded::Response(resp)));
        }
        Route::Denied(resp) => {
            trace.local = Some("PR--");
            return (trace, Ok(Forwarded::Response(resp)));
        }
        Route::NoBackend => return (trace, Err(ProxyError::NoBackend)),
        Route::Backend(b) => b,
    };
    backend.counters.total_requests.fetch_add(1, Relaxed);
    trace.backend = Some(backend.clone());
    let bridged = parts.extensions.remove::<Bridged>();

    // Connect. Upgrades always get a connection of their own: it becomes the tunnel's.
    let connect_started = Instant::now();
    let pooled = !upgrade && !backend.server_close;
    let persistence = Persistence::of_request(&backend, &mut parts.headers);
    if backend.cookie.is_some() {
        trace.cookie = Some([persistence.status, b'-']);
    }
    let input = PickInput {
        src: client.src.ip(),
        parts: &parts,
    };
    let Dispatch { queue_ms, result } =
        upstream::connect(&backend, &input, persistence.server, pooled).await;
    trace.queue_ms = queue_ms;
    let chosen = match result {
        Ok(chosen) => chosen,
        Err(e) => return (trace, Err(e.into())),
    };
    trace.connect_ms = connect_started.elapsed().as_millis() as i64;
    trace.retries = chosen.retries;
    if let Some(c) = trace.cookie.as_mut() {
        c[0] = persistence.status_for(chosen.server);
    }
    let server = &backend.servers[chosen.server];
    trace.server = Some((server.name.clone(), server.counters.clone()));
    let server_name = ServerRef {
        backend: backend.name.clone(),
        server: server.name.clone(),
    };
    server.counters.total_connections.fetch_add(1, Relaxed);

    // Exchange.
    if upgrade {
        // The client's connection options are its own (RFC 9110 §7.6.1): the server gets
        // the protocol it asked for and the node's `Connection: upgrade`, nothing else.
        upstream::strip_hop_by_hop(&mut parts.headers, true);
        parts
            .headers
            .insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    } else {
        upstream::strip_hop_by_hop(&mut parts.headers, false);
        if backend.server_close {
            // One request per server connection (option http-server-close).
            parts
                .headers
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
    }
    // Servers are spoken to in HTTP/1.1, whatever the client spoke.
    if parts.version == http::Version::HTTP_2 {
        parts.version = http::Version::HTTP_11;
    }
    let request = Request::from_parts(parts, body);
    let sent_at = Instant::now();
    let response = if pooled {
        let exchanged = upstream::exchange_pooled(
            request,
            chosen.conn,
            server,
            &backend,
            &server_name,
            chosen.slot,
        )
        .await;
        trace.response_ms = sent_at.elapsed().as_millis() as i64;
        match exchanged {
            Ok(resp) => resp,
            Err(e) => return (trace, Err(e)),
        }
    } else {
        let Upstream::Fresh(stream) = chosen.conn else {
            unreachable!("only pooled exchanges take pooled connections");
        };
        let exchanged = if upgrade {
            upgrade::exchange(request, stream, backend.server_timeout, &server_name).await
        } else {
            upstream::exchange(
                request,
                Replay::fresh(stream),
                backend.server_timeout,
                &server_name,
                false,
            )
            .await
        };
        trace.response_ms = sent_at.elapsed().as_millis() as i64;
        match exchanged {
            Err(e) => return (trace, Err(e)),
            // Upgrade.
            Ok(Exchange::Switched(head, io)) => {
                // An HTTP/2 WebSocket stream: the node made the key, so the node checks
                // the accept.
                if bridged
                    .as_ref()
                    .is_some_and(|b| !h2::accepts(b, &head.headers))
                {
                    return (
                        trace,
                        Err(ProxyError::BadResponse {
                            server: server_name,
                            reason: "Sec-WebSocket-Accept does not match the key".into(),
                        }),
                    );
                }
                let mut set = b'-';
                let mut resp = switch(head, fe, server, |h| {
                    set = persistence.on_response(&backend, server, h);
                    route::server_response_rules(h, trace.view.as_ref(), client, fe);
                });
                if bridged.is_some() {
                    // The stream's answer is a 200.
                    h2::stream_answer(&mut resp);
                }
                if let Some(c) = trace.cookie.as_mut() {
                    c[1] = set;
                }
                let server_side = ServerSide {
                    counters: server.counters.clone(),
                    limits: backend.tunnel,
                    slot: chosen.slot,
                    io,
                };
                return (trace, Ok(Forwarded::Upgrade(resp, server_side)));
            }
            Ok(Exchange::Response(resp)) if bridged.is_some() && resp.status().is_success() => {
                // A success on an HTTP/2 stream would read as an open WebSocket.
                return (
                    trace,
                    Err(ProxyError::BadResponse {
                        server: server_name,
                        reason: format!("{} to a WebSocket upgrade", resp.status()),
                    }),
                );
            }
            Ok(Exchange::Response(resp)) => {
                // The server connection (and its slot) lives until the body has been
                // relayed.
                let slot = chosen.slot;
                resp.map(|body| {
                    body.map_frame(move |f| {
                        let _ = &slot;
                        f
                    })
                    .boxed()
                })
            }
        }
    };
    let (mut rparts, rbody) = response.into_parts();
    server.counters.count_response(rparts.status);
    upstream::strip_hop_by_hop(&mut rparts.headers, false);
    route::server_response_rules(&mut rparts.headers, trace.view.as_ref(), client, fe);
    let set = persistence.on_response(&backend, server, &mut rparts.headers);
    if let Some(c) = trace.cookie.as_mut() {
        c[1] = set;
    }
    (
        trace,
        Ok(Forwarded::Response(Response::from_parts(rparts, rbody))),
    )
}

/// What the HTTP parser accepts but a proxy must not forward (RFC 9112 §3.2, §6.1): an
/// HTTP/1.1 request without exactly one `Host`, and a transfer coding other than
/// `chunked` alone, which the node would forward changed (it re-frames bodies).
fn check_head(parts: &Parts) -> Result<(), ProxyError> {
    let hosts = parts.headers.get_all(header::HOST).iter().count();
    if hosts > 1 {
        return Err(ProxyError::BadRequest("more than one Host header"));
    }
    if hosts == 0 && parts.version == http::Version::HTTP_11 {
        return Err(ProxyError::BadRequest("no Host header on HTTP/1.1"));
    }
    let mut codings = parts
        .headers
        .get_all(header::TRANSFER_ENCODING)
        .iter()
        .flat_map(|v| v.to_str().unwrap_or("?").split(','))
        .map(str::trim)
        .filter(|c| !c.is_empty());
    match (codings.next(), codings.next()) {
        (None, _) => Ok(()),
        (Some(c), None) if c.eq_ignore_ascii_case("chunked") => Ok(()),
        _ => Err(ProxyError::NotImplemented(
            "a transfer coding other than chunked",
        )),
    }
}

/// The upgrade phase: the server's `101` becomes the client's, its headers finished by
/// `headers` (persistence cookie, response rules), and the upgrade is counted.
fn switch(
    mut head: http::response::Parts,
    fe: &FrontendPlan,
    server: &ServerPlan,
    headers: impl FnOnce(&mut http::HeaderMap),
) -> Response<Body> {
    let status = head.status;
    let mut out = Response::new(
        Full::new(Bytes::new())
            .map_err(|never| match never {})
            .boxed(),
    );
    *out.status_mut() = status;
    *out.headers_mut() = std::mem::take(&mut head.headers);
    headers(out.headers_mut());
    fe.counters.total_upgrades.fetch_add(1, Relaxed);
    server.counters.total_upgrades.fetch_add(1, Relaxed);
    server.counters.count_response(status);
    out
}
