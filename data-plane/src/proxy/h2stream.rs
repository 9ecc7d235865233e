//! One HTTP/2 stream, in a task of its own: its request made to look like the HTTP/1.1
//! one the request path expects ([`normalize`]), handled by
//! [`super::request::handle_read`] as any request is, and its answer sent on the stream —
//! a response with its body ([`super::h2io::send_body`]), or, for a WebSocket stream the
//! server accepted, a `200` and the stream itself as the client side of the tunnel
//! ([`super::h2io::StreamIo`]). A client that resets the stream before its answer stops
//! the request where it is.

use std::future::{poll_fn, Future};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::task::Poll;
use std::time::{Instant, SystemTime};

use bytes::Bytes;
use h2::server::SendResponse;
use h2::RecvStream;
use http::header::{self, HeaderValue};
use http::request::Parts;
use http::{Method, Request, Response, StatusCode, Uri};
use hyper::body::Body as _;

use super::conn::{Busy, Conn};
use super::error::local_response;
use super::h2::Bridged;
use super::h2io::{self, StreamIo};
use super::request::{self, Arrival};
use super::route::Client;
use super::session::{ClientSide, ConnTunnels};
use super::upstream;
use crate::body::{H2Body, ReqBody};

/// Serves one stream of an HTTP/2 connection to its end (a tunnel's: to its start).
pub async fn serve(
    req: Request<RecvStream>,
    mut respond: SendResponse<Bytes>,
    conn: Arc<Conn>,
    tunnels: Arc<ConnTunnels>,
) {
    let started = Instant::now();
    let busy = Busy::new(&conn.state);
    conn.state.requests.fetch_add(1, Relaxed);
    let (mut parts, recv) = req.into_parts();
    let (resp, tunnel, recv) = match normalize(&mut parts) {
        Ok(bridged) => {
            // A WebSocket stream's data is the tunnel's, not a body.
            let (body, recv) = if bridged {
                (ReqBody::Empty, Some(recv))
            } else {
                (ReqBody::H2(H2Body::new(recv)), None)
            };
            let arrival = Arrival {
                at: SystemTime::now(),
                head_ms: 0,
                started,
            };
            // Each stream is a connection of its own to stick tables: it tracks, and
            // counts in `conn_cur`, while it is open (a tunnel: as long as the tunnel).
            let client = Client {
                bind: conn.client.bind.clone(),
                current: conn.client.current.clone(),
                src: conn.client.src,
                local: conn.client.local,
                tls: conn.client.tls,
                alpn: conn.client.alpn.clone(),
                tracked: std::sync::Mutex::default(),
            };
            let handled =
                request::handle_read(Request::from_parts(parts, body), &client, arrival, bridged);
            tokio::pin!(handled);
            let answered = poll_fn(|cx| {
                if let Poll::Ready(done) = handled.as_mut().poll(cx) {
                    return Poll::Ready(Some(done));
                }
                // The client may give up on the stream while it waits.
                respond.poll_reset(cx).map(|_| None)
            })
            .await;
            let Some((resp, tunnel)) = answered else {
                tracing::debug!(client = %conn.client.src, "HTTP/2 stream reset before its answer");
                return;
            };
            (resp, tunnel, recv)
        }
        Err(status) => {
            let fe = &conn.client.bind.frontend;
            fe.counters.total_requests.fetch_add(1, Relaxed);
            fe.counters.count_response(status);
            (local_response(status, &fe.errorfiles), None, None)
        }
    };
    drop(busy);
    let (head, body) = resp.into_parts();
    let mut head = Response::from_parts(head, ());
    // HTTP/2 has no place for connection-specific fields (RFC 9113 §8.2.2): a server's
    // were stripped when its response came in, but the node's own answers may carry
    // `Connection: close`.
    upstream::strip_hop_by_hop(head.headers_mut(), false);
    let sent = match (tunnel, recv) {
        (Some(tunnel), Some(recv)) => {
            // The server's `101`, made a `200` (`super::h2::stream_answer`): the stream
            // stays open as the tunnel's client side.
            head.headers_mut().remove(header::CONTENT_LENGTH);
            respond
                .send_response(head, false)
                .map(|send| tunnel.start(ClientSide::H2(StreamIo::new(send, recv)), Some(tunnels)))
        }
        _ => {
            let end = body.is_end_stream();
            if let Some(n) = body.size_hint().exact().filter(|_| !end) {
                head.headers_mut()
                    .entry(header::CONTENT_LENGTH)
                    .or_insert_with(|| HeaderValue::from(n));
            }
            match respond.send_response(head, end) {
                Ok(tx) if !end => {
                    if let Err(e) = h2io::send_body(body, tx).await {
                        tracing::debug!(client = %conn.client.src, error = %e, "HTTP/2 response body not sent whole");
                    }
                    Ok(())
                }
                other => other.map(drop),
            }
        }
    };
    if let Err(e) = sent {
        tracing::debug!(client = %conn.client.src, error = %e, "HTTP/2 response not sent");
    }
}

/// Makes an HTTP/2 request look like the HTTP/1.1 one the request path expects: `Host`
/// from `:authority`, an origin-form target, and an extended CONNECT for a WebSocket
/// (RFC 8441) made the HTTP/1.1 upgrade request (`GET`, `Upgrade: websocket`,
/// `Connection: upgrade`, a `Sec-WebSocket-Key` the node makes, marked [`Bridged`]),
/// which the configuration's ACLs match as they would the HTTP/1.1 handshake. Returns
/// whether it was one; a request the node cannot serve over HTTP/2 gets its answer
/// instead.
pub fn normalize(parts: &mut Parts) -> Result<bool, StatusCode> {
    if !parts.headers.contains_key(header::HOST) {
        if let Some(host) = parts
            .uri
            .authority()
            .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
        {
            parts.headers.insert(header::HOST, host);
        }
    }
    let mut bridged = false;
    if parts.method == Method::CONNECT {
        let websocket = parts
            .extensions
            .get::<h2::ext::Protocol>()
            .is_some_and(|p| p.as_str().eq_ignore_ascii_case("websocket"));
        if !websocket {
            // A plain CONNECT asks for a TCP tunnel to anywhere: not a reverse proxy's job.
            return Err(StatusCode::METHOD_NOT_ALLOWED);
        }
        let key = crate::wskey::new_key();
        parts.method = Method::GET;
        let h = &mut parts.headers;
        h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        h.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        h.entry(header::SEC_WEBSOCKET_VERSION)
            .or_insert(HeaderValue::from_static("13"));
        h.insert(
            header::SEC_WEBSOCKET_KEY,
            HeaderValue::from_str(&key).expect("base64 is a valid header value"),
        );
        parts.extensions.insert(Bridged { key });
        bridged = true;
    }
    // Servers get the origin form (`/path?query`), as from an HTTP/1.1 client.
    if parts.uri.authority().is_some() {
        parts.uri = parts
            .uri
            .path_and_query()
            .map_or("/", |p| p.as_str())
            .parse::<Uri>()
            .unwrap_or_else(|_| Uri::from_static("/"));
    }
    Ok(bridged)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connection_fields_are_stripped_with_those_connection_names() {
        use super::upstream::strip_hop_by_hop;
        use http::HeaderMap;
        let mut h = HeaderMap::new();
        h.insert(header::CONNECTION, HeaderValue::from_static("close, x-hop"));
        h.insert("x-hop", HeaderValue::from_static("1"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert(
            header::TRANSFER_ENCODING,
            HeaderValue::from_static("chunked"),
        );
        h.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
        strip_hop_by_hop(&mut h, false);
        assert_eq!(h.len(), 1, "{h:?}");
        assert!(h.contains_key(header::CONTENT_TYPE));
    }

    #[test]
    fn an_extended_connect_becomes_an_upgrade_request_in_origin_form() {
        let mut req = Request::builder()
            .method(Method::CONNECT)
            .uri("https://chat.example:8443/ws?room=1")
            .body(())
            .unwrap();
        req.extensions_mut()
            .insert(h2::ext::Protocol::from_static("websocket"));
        let (mut parts, ()) = req.into_parts();
        assert_eq!(normalize(&mut parts), Ok(true));
        assert_eq!(parts.method, Method::GET);
        assert_eq!(parts.uri, "/ws?room=1");
        assert_eq!(parts.headers[header::HOST], "chat.example:8443");
        assert_eq!(parts.headers[header::UPGRADE], "websocket");
        assert!(parts.extensions.get::<Bridged>().is_some());

        let (mut plain, ()) = Request::builder()
            .method(Method::CONNECT)
            .uri("chat.example:443")
            .body(())
            .unwrap()
            .into_parts();
        assert_eq!(normalize(&mut plain), Err(StatusCode::METHOD_NOT_ALLOWED));
    }
}
