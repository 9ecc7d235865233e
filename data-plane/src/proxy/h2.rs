//! HTTP/2 on the front end: one client connection, run by the `h2` crate's server. Each
//! stream is a task of its own ([`super::h2stream`]) whose request goes through the same
//! request path as an HTTP/1.1 one (route, connect, exchange, upgrade; rules, balancing,
//! persistence, logs and counters). Servers are spoken to in HTTP/1.1.
//!
//! WebSocket over HTTP/2 (RFC 8441): the node announces `SETTINGS_ENABLE_CONNECT_PROTOCOL`;
//! an extended CONNECT with `:protocol = websocket` becomes an HTTP/1.1 upgrade request
//! with a `Sec-WebSocket-Key` the node makes ([`Bridged`]); the exchange checks the
//! server's `Sec-WebSocket-Accept` against it ([`accepts`]) and the stream is answered
//! `200` ([`stream_answer`]), then carries the tunnel's client side.
//!
//! To stick tables each stream is a connection: `track-sc*` tracks it, `sc_conn_cur`
//! counts it while it is open (a WebSocket stream: while its tunnel is), and a refused
//! stream counts in `sc_conn_rate` as a refused HTTP/1.1 connection does.
//!
//! Abuse limits come from the bind ([`Http2Plan`]): concurrent streams, flow-control
//! windows, the header list size (`max_header_bytes`), and a count of streams reset
//! before they were answered (rapid reset) past which the connection gets GOAWAY;
//! CONTINUATION floods are refused by the `h2` crate itself. A head (the preface, or a
//! stream's header block) not complete within `timeout http-request` closes the
//! connection, counted and logged as the HTTP/1.1 path's 408 is ([`super::h2watch`]). A
//! connection with no stream in flight and no tunnel for `timeout client` is closed with
//! GOAWAY.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header;
use http::{Response, StatusCode};
use tokio::net::TcpStream;

use super::conn::Conn;
use super::h2stream;
use super::h2watch::{HeadClock, HeadWatch};
use super::session::ConnTunnels;
use super::Body;
use crate::config::Http2Plan;

/// The client connection preface of HTTP/2 (RFC 9113 §3.4).
pub const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// The largest frame the node accepts (the protocol's initial value).
const MAX_FRAME_SIZE: u32 = 16 * 1024;
/// How much a stream may have queued for sending beyond what the client's window
/// admits, before writing to it waits.
const MAX_SEND_BUFFER: usize = 400 * 1024;

/// Marks a request bridged from an HTTP/2 WebSocket stream: the key the node sent the
/// server, whose accept the exchange checks.
#[derive(Debug, Clone)]
pub struct Bridged {
    pub key: String,
}

/// Whether a cleartext connection opens with the HTTP/2 preface, looked at without
/// consuming anything (`peek`). No HTTP/1 request line starts with `PRI `; a client that
/// sends fewer bytes than that first is waited for, up to `timeout`.
pub async fn starts_with_preface(stream: &TcpStream, timeout: Duration) -> bool {
    let deadline = tokio::time::Instant::now() + timeout;
    let mut buf = [0u8; 4];
    loop {
        let n = match tokio::time::timeout_at(deadline, stream.peek(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => n,
            _ => return false,
        };
        if !PREFACE.starts_with(&buf[..n]) {
            return false;
        }
        if n == buf.len() {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Whether the server's `101` to a bridged request accepts the key the node sent.
pub fn accepts(bridged: &Bridged, headers: &http::HeaderMap) -> bool {
    headers
        .get(header::SEC_WEBSOCKET_ACCEPT)
        .is_some_and(|a| a.as_bytes() == crate::wskey::accept_key(&bridged.key).as_bytes())
}

/// The bridged stream's answer, made from the server's `101`: `200`, without the
/// HTTP/1.1 handshake's own headers (`Sec-WebSocket-Protocol` and `-Extensions` stay).
pub fn stream_answer(resp: &mut Response<Body>) {
    *resp.status_mut() = StatusCode::OK;
    let h = resp.headers_mut();
    for name in [
        header::UPGRADE,
        header::CONNECTION,
        header::SEC_WEBSOCKET_ACCEPT,
    ] {
        h.remove(name);
    }
}

/// Serves HTTP/2 on an accepted connection (TLS with ALPN `h2`, or cleartext with the
/// preface) until the client goes away or it is idle for `timeout client`. `started`:
/// when the wait for the client's first head began.
pub async fn serve<S>(io: S, conn: Arc<Conn>, h2: Http2Plan, started: Instant)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let fe = conn.client.bind.frontend.clone();
    let tunnels = Arc::new(ConnTunnels::default());
    let mut builder = h2::server::Builder::new();
    builder
        .enable_connect_protocol()
        .max_concurrent_streams(h2.max_concurrent_streams)
        .initial_window_size(h2.initial_window_size)
        .initial_connection_window_size(h2.connection_window_size)
        .max_frame_size(MAX_FRAME_SIZE)
        .max_send_buffer_size(MAX_SEND_BUFFER)
        .max_header_list_size(u32::try_from(fe.max_header_bytes).unwrap_or(u32::MAX))
        .max_pending_accept_reset_streams(h2.max_reset_streams as usize)
        .max_local_error_reset_streams(Some(h2.max_reset_streams as usize));
    let clock = HeadClock::new(started);
    let period = fe
        .client_timeout
        .min(fe.http_request_timeout)
        .min(Duration::from_secs(1));
    let mut check = tokio::time::interval(period);
    let head_late = || {
        clock
            .pending_since()
            .is_some_and(|t| t.elapsed() >= fe.http_request_timeout)
    };
    let handshake = builder.handshake::<_, Bytes>(HeadWatch::new(io, clock.clone()));
    tokio::pin!(handshake);
    let mut connection = loop {
        tokio::select! {
            r = &mut handshake => match r {
                Ok(c) => break c,
                Err(e) => {
                    tracing::debug!(client = %conn.client.src, error = %e, "HTTP/2 handshake failed");
                    return;
                }
            },
            _ = check.tick() => if head_late() {
                head_timed_out(&conn, started);
                return;
            }
        }
    };
    let mut active = Instant::now();
    let mut closing = false;
    loop {
        tokio::select! {
            next = connection.accept() => match next {
                Some(Ok((req, respond))) => {
                    // Boxed, as a connection's task is (`accept_loop`).
                    tokio::spawn(Box::pin(h2stream::serve(req, respond, conn.clone(), tunnels.clone())));
                }
                Some(Err(e)) => {
                    tracing::debug!(client = %conn.client.src, error = %e, "HTTP/2 connection ended with an error");
                    break;
                }
                None => break,
            },
            _ = check.tick() => {
                if head_late() {
                    head_timed_out(&conn, started);
                    break;
                }
                if closing {
                    continue;
                }
                if conn.state.busy.load(Relaxed) > 0 || tunnels.open.load(Relaxed) > 0 {
                    active = Instant::now();
                } else if active.elapsed() >= fe.client_timeout {
                    connection.graceful_shutdown();
                    closing = true;
                }
            }
        }
    }
}

/// A head the client did not finish in time: the connection is closed (no stream exists
/// to answer 408 on), and it counts and logs as the HTTP/1.1 path's 408 does.
fn head_timed_out(conn: &Conn, started: Instant) {
    tracing::debug!(client = %conn.client.src, "HTTP/2 head not complete within timeout http-request");
    let fe = &conn.client.bind.frontend;
    super::conn::count_refused(
        fe,
        conn.client.src,
        started,
        StatusCode::REQUEST_TIMEOUT,
        "cR--",
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_preface_is_told_from_an_http1_request_line() {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        for (sent, h2) in [
            (PREFACE, true),
            (&b"PRI * HTTP/2.0"[..], true),
            (&b"POST / HTTP/1.1\r\n"[..], false),
            (&b"PUT / HTTP/1.1\r\n"[..], false),
            (&b"P"[..], false), // then silence: HTTP/1 after the timeout
        ] {
            let mut c = TcpStream::connect(addr).await.unwrap();
            let (s, _) = l.accept().await.unwrap();
            tokio::io::AsyncWriteExt::write_all(&mut c, sent)
                .await
                .unwrap();
            let got = starts_with_preface(&s, Duration::from_millis(100)).await;
            assert_eq!(got, h2, "{:?}", String::from_utf8_lossy(sent));
            // Nothing was consumed.
            let mut first = [0u8; 1];
            assert_eq!(s.peek(&mut first).await.unwrap(), 1);
            assert_eq!(first[0], sent[0]);
        }
    }
}
