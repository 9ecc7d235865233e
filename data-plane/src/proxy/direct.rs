//! The client side of a WebSocket upgrade without an HTTP server: the first request of a
//! cleartext HTTP/1.1 connection is read by the node itself and, when it is an upgrade
//! that arrived whole, parsed with `httparse` and served without hyper's server; after
//! the server's `101` the client's is written in one `write` and the socket goes
//! straight to its tunnel.
//!
//! Anything else is hyper's, with the bytes already read replayed in front of the socket
//! ([`super::io::ClientIo::replay`]), so it is served or refused exactly as on the plain
//! path: a head not complete in the first read, malformed, over the frontend's size or
//! field limits or over [`MAX_HEADERS`] fields, a request that is not an upgrade `GET`
//! over HTTP/1.1, one with a body (`Content-Length`, `Transfer-Encoding`) or an
//! `Expect`, and every later request of the connection. An upgrade the server (or a
//! rule) answers with anything but a `101` is also written by hyper: the connection is
//! given to hyper's server with its request replayed and that answer prepared for it.
//!
//! Why: hyper's server builds a dispatcher per connection, parses the head into its own
//! buffer, and hands an upgraded connection over through a channel to another poll of
//! the tunnel; on the handshake path that is user-space work per upgrade
//! (BENCHMARKS.md).

use std::time::Duration;

use bytes::Bytes;
use http::header;
use http::{Method, Request, Response, Uri, Version};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use super::Body;
use super::{route, upgrade};
use crate::body::ReqBody;

/// The first read's buffer: an upgrade request's head is usually 200–600 bytes. Smaller
/// than hyper's first read (8 KiB), so that a replay is taken in one read.
pub const FIRST_READ: usize = 4096;
/// Request heads with more fields than this go to hyper.
pub const MAX_HEADERS: usize = 64;

/// The upgrade request at the start of `buf` and the length of its head, when `buf`
/// holds a complete one this path takes (see the module docs) within the frontend's
/// limits (`max_header_bytes`, `max_headers`); `None` leaves the request to hyper.
///
/// The target and the field values are slices of `buf`, not copies (as hyper's parser
/// makes them).
pub fn parse(
    buf: &Bytes,
    (max_bytes, max_fields): (usize, Option<usize>),
) -> Option<(Request<ReqBody>, usize)> {
    let mut fields = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut fields);
    let httparse::Status::Complete(len) = req.parse(buf).ok()? else {
        return None;
    };
    if len > max_bytes || max_fields.is_some_and(|n| req.headers.len() > n) {
        return None;
    }
    if req.method? != "GET" || req.version? != 1 {
        return None;
    }
    let uri = Uri::from_maybe_shared(buf.slice_ref(req.path?.as_bytes())).ok()?;
    let headers = upgrade::field_map(buf, req.headers)?;
    if [
        header::CONTENT_LENGTH,
        header::TRANSFER_ENCODING,
        header::EXPECT,
    ]
    .iter()
    .any(|h| headers.contains_key(h))
    {
        return None;
    }
    if !route::is_upgrade_request(&headers) {
        return None;
    }
    let mut request = Request::new(ReqBody::Empty);
    *request.method_mut() = Method::GET;
    *request.uri_mut() = uri;
    *request.version_mut() = Version::HTTP_11;
    *request.headers_mut() = headers;
    Some((request, len))
}

/// The head of a `101` as hyper's server writes it: the status line with the canonical
/// reason, the fields in the map's order with their names in lower case, no length
/// fields (a `101` has no body). No `Date` is added: the server's passes through.
pub fn encode_head(resp: &Response<Body>) -> Vec<u8> {
    let status = resp.status();
    let fields: usize = resp
        .headers()
        .iter()
        .map(|(n, v)| n.as_str().len() + v.len() + 4)
        .sum();
    let mut out = Vec::with_capacity(40 + fields);
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(status.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(status.canonical_reason().unwrap_or("<none>").as_bytes());
    out.extend_from_slice(b"\r\n");
    let fields = resp.headers().iter();
    upgrade::put_fields(
        &mut out,
        fields.filter(|(n, _)| *n != header::CONTENT_LENGTH && *n != header::TRANSFER_ENCODING),
    );
    out
}

/// Writes `head` to the client: at once when the socket takes it (nearly always), else
/// within `timeout` (`timeout client`). A failure is left to the tunnel, which meets the
/// closed or stuck socket next and ends with the client's error.
pub async fn write_head(stream: &mut TcpStream, head: &[u8], timeout: Duration) {
    // Straight to the socket: tokio's own `try_write` would wait for a readiness event
    // the reactor may not have delivered yet.
    let sent = match socket2::SockRef::from(&*stream).send(head) {
        Ok(n) => n,
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => 0,
        Err(_) => return,
    };
    if sent < head.len() {
        let _ = tokio::time::timeout(timeout, stream.write_all(&head[sent..])).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::header::HeaderValue;
    use http::StatusCode;
    use http_body_util::{BodyExt, Empty};

    /// The frontend's defaults: 16 KiB, the parser's own field limit.
    const LIMITS: (usize, Option<usize>) = (16384, None);

    const UPGRADE: &[u8] = b"GET /chat?room=1 HTTP/1.1\r\nHost: example.com\r\n\
        Upgrade: websocket\r\nConnection: keep-alive, Upgrade\r\n\
        Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n";

    #[test]
    fn a_whole_upgrade_is_taken_with_what_follows_it() {
        let wire = Bytes::from([UPGRADE, b"\x81\x82abcd"].concat());
        let (req, len) = parse(&wire, LIMITS).expect("taken");
        assert_eq!(len, UPGRADE.len());
        assert_eq!(req.method(), Method::GET);
        assert_eq!(req.uri(), "/chat?room=1");
        assert_eq!(req.version(), Version::HTTP_11);
        assert_eq!(req.headers()["host"], "example.com");
        assert_eq!(req.headers()["sec-websocket-version"], "13");
        assert_eq!(req.headers().len(), 5);
        assert!(matches!(req.body(), ReqBody::Empty));
    }

    #[test]
    fn anything_else_is_left_to_hyper() {
        let upgrade = std::str::from_utf8(UPGRADE).unwrap();
        let cases = [
            // Not complete in the first read.
            upgrade[..40].to_string(),
            // Not an upgrade.
            "GET / HTTP/1.1\r\nHost: a\r\n\r\n".to_string(),
            "GET / HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\n\r\n".to_string(),
            // Another method or version.
            upgrade.replacen("GET", "POST", 1),
            upgrade.replacen("HTTP/1.1", "HTTP/1.0", 1),
            // A body, or an expectation.
            upgrade.replacen("\r\n\r\n", "\r\nContent-Length: 2\r\n\r\nhi", 1),
            upgrade.replacen(
                "\r\n\r\n",
                "\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
                1,
            ),
            upgrade.replacen("\r\n\r\n", "\r\nExpect: 100-continue\r\n\r\n", 1),
            // Malformed.
            upgrade.replacen("Host: example.com", "Host example.com", 1),
            upgrade.replacen("/chat", "/ch at", 1),
            "garbage\r\n\r\n".to_string(),
        ];
        for wire in &cases {
            assert!(
                parse(&Bytes::from(wire.clone()), LIMITS).is_none(),
                "{wire:?}"
            );
        }
        let many: String = (0..MAX_HEADERS).map(|i| format!("x-{i}: v\r\n")).collect();
        let wire = upgrade.replacen("\r\n\r\n", &format!("\r\n{many}\r\n"), 1);
        assert!(parse(&Bytes::from(wire), LIMITS).is_none());
        // The frontend's own limits.
        let (upgrade, len) = (Bytes::from_static(UPGRADE), UPGRADE.len());
        assert!(parse(&upgrade, (len, Some(5))).is_some());
        assert!(parse(&upgrade, (len - 1, None)).is_none());
        assert!(parse(&upgrade, (len, Some(4))).is_none());
    }

    #[test]
    fn the_101_is_written_as_hyper_writes_it() {
        let mut resp = Response::new(Empty::new().map_err(|never| match never {}).boxed());
        *resp.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
        let h = resp.headers_mut();
        h.insert("upgrade", HeaderValue::from_static("websocket"));
        h.insert("connection", HeaderValue::from_static("Upgrade"));
        h.insert(
            "sec-websocket-accept",
            HeaderValue::from_static("s3pPLMBiTxaQ9kYGzzhZRbK+xOo="),
        );
        h.insert("content-length", HeaderValue::from_static("0"));
        h.append("set-cookie", HeaderValue::from_static("SERVERID=s1"));
        assert_eq!(
            String::from_utf8(encode_head(&resp)).unwrap(),
            "HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\nconnection: Upgrade\r\n\
             sec-websocket-accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\nset-cookie: SERVERID=s1\r\n\r\n"
        );
    }
}
