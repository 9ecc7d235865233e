//! Error pages: the bodies of the responses a node makes itself. A frontend's errorfiles
//! (defaults first, its own entries over them) replace the built-in HAProxy-style pages by
//! status; the refusals made before any request exists are rendered once per plan as
//! complete HTTP/1.1 responses ([`RefusalPages`]).

use std::collections::HashMap;

use bytes::Bytes;
use http::{HeaderValue, StatusCode};

/// A body for a status the node generates itself (a configured errorfile).
#[derive(Debug, Clone)]
pub struct ErrorPage {
    pub content_type: HeaderValue,
    pub body: Bytes,
}

/// Errorfiles by status.
pub type ErrorPages = HashMap<u16, ErrorPage>;

/// The complete responses for refusals made before any request exists, rendered once
/// per frontend and snapshot: the 408 on `timeout http-request`, and the pages replacing
/// the HTTP parser's own 400/414/431 (see `proxy::io`).
#[derive(Debug)]
pub struct RefusalPages {
    /// 408, on `timeout http-request`.
    pub timeout: Bytes,
    pub bad_request: Bytes,
    pub uri_too_long: Bytes,
    pub too_large: Bytes,
}

impl RefusalPages {
    pub fn render(pages: &ErrorPages) -> Self {
        Self {
            timeout: raw_response(StatusCode::REQUEST_TIMEOUT, pages),
            bad_request: raw_response(StatusCode::BAD_REQUEST, pages),
            uri_too_long: raw_response(StatusCode::URI_TOO_LONG, pages),
            too_large: raw_response(StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE, pages),
        }
    }
}

fn explanation(status: StatusCode) -> &'static str {
    match status.as_u16() {
        400 => "Your browser sent an invalid request.",
        403 => "Request forbidden by administrative rules.",
        404 => "The requested URL was not found.",
        408 => "Your browser didn't send a complete request in time.",
        414 => "The requested URL is too long.",
        431 => "Your browser sent request headers that are too large.",
        429 => "You sent too many requests in a given amount of time.",
        502 => "The server returned an invalid or incomplete response.",
        503 => "No server is available to handle this request.",
        504 => "The server didn't respond in time.",
        _ => "",
    }
}

/// The body of a response the node generates itself: the frontend's errorfile for the
/// status, else a small HAProxy-style HTML page.
pub fn page(status: StatusCode, pages: &ErrorPages) -> (HeaderValue, Bytes) {
    if let Some(p) = pages.get(&status.as_u16()) {
        return (p.content_type.clone(), p.body.clone());
    }
    let body = format!(
        "<html><body><h1>{} {}</h1>\n{}\n</body></html>\n",
        status.as_u16(),
        status.canonical_reason().unwrap_or(""),
        explanation(status)
    );
    (HeaderValue::from_static("text/html"), Bytes::from(body))
}

/// A complete HTTP/1.1 response that closes the connection, for the moments no HTTP
/// stack is in charge of the socket (the 408 on `timeout http-request`).
pub fn raw_response(status: StatusCode, pages: &ErrorPages) -> Bytes {
    let (content_type, body) = page(status, pages);
    let mut out = format!(
        "HTTP/1.1 {} {}\r\ncontent-type: {}\r\ncache-control: no-cache\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        status.as_u16(),
        status.canonical_reason().unwrap_or(""),
        content_type.to_str().unwrap_or("text/html"),
        body.len()
    )
    .into_bytes();
    out.extend_from_slice(&body);
    Bytes::from(out)
}
