//! Proxy failures, which side caused them, and the one place they become HTTP statuses.

use bytes::Bytes;
use http::{header, HeaderValue, Response, StatusCode};
use http_body_util::{BodyExt, Full};

use super::Body;
use crate::config::ErrorPages;

/// `backend/server`, formatted only when an error or a log line needs it.
#[derive(Debug, Clone)]
pub struct ServerRef {
    pub backend: std::sync::Arc<str>,
    pub server: std::sync::Arc<str>,
}

impl std::fmt::Display for ServerRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.backend, self.server)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    #[error("no backend matched and there is no default backend")]
    NoBackend,
    #[error("backend {0}: no server available")]
    NoServer(String),
    #[error("server {server}: connect failed after {attempts} attempt(s): {reason}")]
    Connect {
        server: String,
        attempts: u32,
        reason: String,
    },
    #[error("backend {0}: no server slot within timeout queue")]
    QueueTimeout(String),
    #[error("server {0}: no response within timeout server")]
    ServerTimeout(ServerRef),
    #[error("server {server}: invalid or missing response: {reason}")]
    BadResponse { server: ServerRef, reason: String },
}

impl ProxyError {
    /// HAProxy-style termination state for the access log: who caused the end (`S`
    /// server, `s` server timeout) and in which phase (`C` connect, `H` headers).
    pub fn termination(&self) -> &'static str {
        match self {
            ProxyError::NoBackend | ProxyError::NoServer(_) => "SC--",
            ProxyError::Connect { .. } => "SC--",
            ProxyError::QueueTimeout(_) => "sQ--",
            ProxyError::ServerTimeout(_) => "sH--",
            ProxyError::BadResponse { .. } => "SH--",
        }
    }

    pub fn status(&self) -> StatusCode {
        match self {
            ProxyError::NoBackend
            | ProxyError::NoServer(_)
            | ProxyError::Connect { .. }
            | ProxyError::QueueTimeout(_) => StatusCode::SERVICE_UNAVAILABLE,
            ProxyError::ServerTimeout(_) => StatusCode::GATEWAY_TIMEOUT,
            ProxyError::BadResponse { .. } => StatusCode::BAD_GATEWAY,
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
fn page(status: StatusCode, pages: &ErrorPages) -> (HeaderValue, Bytes) {
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

/// A response the node generates itself (errors, denials).
pub fn local_response(status: StatusCode, pages: &ErrorPages) -> Response<Body> {
    let (content_type, body) = page(status, pages);
    let mut resp = Response::new(Full::new(body).map_err(|never| match never {}).boxed());
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, content_type);
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    resp
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
