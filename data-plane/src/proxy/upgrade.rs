//! The server side of a WebSocket upgrade without an HTTP client: the request head is
//! written to the new server connection in one `write`, and the response head is read
//! and parsed with `httparse`. A complete `101` — the answer to nearly every upgrade —
//! hands the socket over at once, with whatever the server sent past the head.
//!
//! Anything else is given to hyper's client with the bytes already read replayed in
//! front of the socket ([`Replay`]), so it is relayed or refused exactly as on the plain
//! path: another status with a body to relay, an interim `1xx` before the `101`, a head
//! that is malformed, has more than [`MAX_HEADERS`] fields or exceeds [`MAX_HEAD`]
//! bytes, or a connection closed before the head was complete. A request with a body
//! (rare for an upgrade) goes to hyper from the start.
//!
//! Why: hyper's client builds a dispatcher and a request channel per connection and
//! drives the exchange through them; on the handshake path that is user-space work per
//! upgrade and a later request write, which lands more often after the server went back
//! to sleep (one more wake-up of the server, measured in BENCHMARKS.md).

use std::io;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::header::{HeaderMap, HeaderName, HeaderValue};
use http::{Request, StatusCode};
use hyper::body::Body as _;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::time::Instant;

use super::error::{ProxyError, ServerRef};
use super::upstream::{self, Exchange, Replay};
use crate::body::ReqBody;

/// Response heads longer than this go to hyper (which takes up to its own limit).
pub const MAX_HEAD: usize = 16 * 1024;
/// Response heads with more fields than this go to hyper.
pub const MAX_HEADERS: usize = 64;
/// The first read's buffer; a `101` with its WebSocket headers is ~130 bytes.
const FIRST_READ: usize = 2048;

/// Sends the upgrade `request` on a new server connection and waits for the response
/// head within `timeout` (`timeout server`).
pub async fn exchange(
    request: Request<ReqBody>,
    mut stream: TcpStream,
    timeout: Duration,
    server_name: &ServerRef,
) -> Result<Exchange, ProxyError> {
    if !request.body().is_end_stream() {
        return upstream::exchange(request, Replay::fresh(stream), timeout, server_name, true)
            .await;
    }
    let deadline = Instant::now() + timeout;
    let bad = |what: &str, e: io::Error| ProxyError::BadResponse {
        server: server_name.clone(),
        reason: format!("{what}: {e}"),
    };
    let head = encode_head(&request);
    let timed_out = || ProxyError::ServerTimeout(server_name.clone());
    // Written straight away: the connection is usually established and the server still
    // awake from its handshake (see `upstream::connect_server`).
    let sent = match socket2::SockRef::from(&stream).send(&head) {
        Ok(n) => n,
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => 0,
        Err(e) => return Err(bad("writing the request", e)),
    };
    match tokio::time::timeout_at(deadline, stream.write_all(&head[sent..])).await {
        Err(_) => return Err(timed_out()),
        Ok(Err(e)) => return Err(bad("writing the request", e)),
        Ok(Ok(())) => {}
    }
    drop(head);
    let mut buf = BytesMut::with_capacity(FIRST_READ);
    loop {
        let read = tokio::io::AsyncReadExt::read_buf(&mut stream, &mut buf);
        let n = match tokio::time::timeout_at(deadline, read).await {
            Err(_) => return Err(timed_out()),
            Ok(Err(e)) => return Err(bad("reading the response", e)),
            Ok(Ok(n)) => n,
        };
        // Parsed frozen, so the head's values are slices of what was read; a partial
        // head gets its buffer back to read on (no copy: nothing else holds it).
        let read = buf.freeze();
        match parse_switch(&read) {
            Parsed::Switched(parts, len) => {
                return Ok(Exchange::Switched(parts, (stream, read.slice(len..))));
            }
            Parsed::Partial if n > 0 && read.len() < MAX_HEAD => {
                buf = read
                    .try_into_mut()
                    .unwrap_or_else(|b| BytesMut::from(&b[..]));
                if buf.capacity() == buf.len() {
                    buf.reserve(buf.len());
                }
                continue;
            }
            // Not a plain 101, or not one this parser takes: hyper answers for it.
            _ => {}
        }
        let replay = Replay::after(stream, read);
        let left = deadline.saturating_duration_since(Instant::now());
        return upstream::exchange(request, replay, left, server_name, true).await;
    }
}

/// The request line and header fields, as hyper's client would write them: the target as
/// given (the request path makes it origin-form), `HTTP/1.1` unless the client spoke
/// HTTP/1.0, fields in the map's order with their names in lower case.
fn encode_head<B>(request: &Request<B>) -> Vec<u8> {
    let uri = request.uri();
    let target = uri.path_and_query().map_or("/", |p| p.as_str());
    let target = if uri.authority().is_some() {
        // Absolute form stays absolute, as hyper sends it.
        std::borrow::Cow::Owned(uri.to_string())
    } else {
        std::borrow::Cow::Borrowed(target)
    };
    let fields: usize = request
        .headers()
        .iter()
        .map(|(n, v)| n.as_str().len() + v.len() + 4)
        .sum();
    let mut out = Vec::with_capacity(request.method().as_str().len() + target.len() + 16 + fields);
    out.extend_from_slice(request.method().as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(target.as_bytes());
    out.extend_from_slice(if request.version() == http::Version::HTTP_10 {
        b" HTTP/1.0\r\n"
    } else {
        b" HTTP/1.1\r\n"
    });
    put_fields(&mut out, request.headers());
    out
}

/// Writes header fields as hyper writes them (names in lower case, in the given order),
/// then the empty line that ends a head.
pub fn put_fields<'a>(
    out: &mut Vec<u8>,
    fields: impl IntoIterator<Item = (&'a HeaderName, &'a HeaderValue)>,
) {
    for (name, value) in fields {
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
}

/// The header map of parsed `fields`, the values slices of `buf` (the buffer parsed, as
/// hyper's parser makes them: no copy); `None` when a field is not valid for the `http`
/// types.
pub fn field_map(buf: &Bytes, fields: &[httparse::Header<'_>]) -> Option<HeaderMap> {
    let mut map = HeaderMap::with_capacity(fields.len());
    for field in fields {
        let name = HeaderName::from_bytes(field.name.as_bytes()).ok()?;
        map.append(
            name,
            HeaderValue::from_maybe_shared(buf.slice_ref(field.value)).ok()?,
        );
    }
    Some(map)
}

/// What the bytes read so far are.
enum Parsed {
    /// A complete `101` head of `usize` bytes.
    Switched(http::response::Parts, usize),
    /// Not complete yet.
    Partial,
    /// Anything else: for hyper.
    Other,
}

fn parse_switch(buf: &Bytes) -> Parsed {
    let mut fields = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut resp = httparse::Response::new(&mut fields);
    let len = match resp.parse(buf) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Parsed::Partial,
        Err(_) => return Parsed::Other,
    };
    if resp.code != Some(101) || resp.version != Some(1) {
        return Parsed::Other;
    }
    let Some(headers) = field_map(buf, resp.headers) else {
        return Parsed::Other;
    };
    let mut head = http::Response::new(());
    *head.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    *head.headers_mut() = headers;
    Parsed::Switched(head.into_parts().0, len)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_head_is_written_as_hyper_writes_it() {
        let request = Request::get("/chat?room=1")
            .header("host", "example.com")
            .header("upgrade", "websocket")
            .header("connection", "upgrade")
            .header("x-forwarded-for", "10.0.0.1")
            .header("x-forwarded-for", "10.0.0.2")
            .body(())
            .unwrap();
        assert_eq!(
            String::from_utf8(encode_head(&request)).unwrap(),
            "GET /chat?room=1 HTTP/1.1\r\nhost: example.com\r\nupgrade: websocket\r\n\
             connection: upgrade\r\nx-forwarded-for: 10.0.0.1\r\nx-forwarded-for: 10.0.0.2\r\n\r\n"
        );
        let old = Request::get("/")
            .version(http::Version::HTTP_10)
            .body(())
            .unwrap();
        assert_eq!(encode_head(&old), b"GET / HTTP/1.0\r\n\r\n");
    }

    #[test]
    fn a_complete_101_is_switched_with_what_follows_it() {
        let wire = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: abc=\r\n\r\n\x81\x02hi";
        let Parsed::Switched(parts, len) = parse_switch(&Bytes::from_static(wire)) else {
            panic!("not switched");
        };
        assert_eq!(parts.status, StatusCode::SWITCHING_PROTOCOLS);
        assert_eq!(parts.headers["sec-websocket-accept"], "abc=");
        assert_eq!(&wire[len..], b"\x81\x02hi");
    }

    #[test]
    fn anything_but_a_complete_101_is_not_switched_here() {
        assert!(matches!(
            parse_switch(&Bytes::from_static(
                b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: web"
            )),
            Parsed::Partial
        ));
        for wire in [
            &b"HTTP/1.1 403 Forbidden\r\ncontent-length: 0\r\n\r\n"[..],
            b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 101 Switching Protocols\r\n\r\n",
            b"HTTP/1.0 101 Switching Protocols\r\n\r\n",
            b"HTTP/1.1 101 Switching Protocols\r\nbad header\r\n\r\n",
            b"garbage\r\n\r\n",
        ] {
            assert!(
                matches!(parse_switch(&Bytes::copy_from_slice(wire)), Parsed::Other),
                "{:?}",
                String::from_utf8_lossy(wire)
            );
        }
        let many: String = (0..=MAX_HEADERS).map(|i| format!("x-{i}: v\r\n")).collect();
        let wire = format!("HTTP/1.1 101 Switching Protocols\r\n{many}\r\n");
        assert!(matches!(parse_switch(&Bytes::from(wire)), Parsed::Other));
    }
}
