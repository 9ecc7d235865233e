//! Proxy failures, which side caused them, and the one place they become HTTP statuses.

use http::{header, HeaderValue, Response, StatusCode};
use http_body_util::{BodyExt, Full};

use super::Body;
use crate::balance::ChoiceError;
use crate::config::pages::{page, ErrorPages};

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
    #[error(transparent)]
    Choice(#[from] ChoiceError),
    #[error("server {0}: no response within timeout server")]
    ServerTimeout(ServerRef),
    #[error("server {server}: invalid or missing response: {reason}")]
    BadResponse { server: ServerRef, reason: String },
    /// A request head the node refuses before routing (400).
    #[error("bad request: {0}")]
    BadRequest(&'static str),
    /// A request the node cannot forward unchanged (501).
    #[error("not implemented: {0}")]
    NotImplemented(&'static str),
}

impl ProxyError {
    /// HAProxy-style termination state for the access log: who caused the end (`S`
    /// server, `s` server timeout) and in which phase (`C` connect, `H` headers).
    pub fn termination(&self) -> &'static str {
        match self {
            ProxyError::NoBackend
            | ProxyError::Choice(ChoiceError::NoServer(_) | ChoiceError::Connect { .. }) => "SC--",
            ProxyError::Choice(ChoiceError::QueueTimeout(_)) => "sQ--",
            ProxyError::ServerTimeout(_) => "sH--",
            ProxyError::BadResponse { .. } => "SH--",
            // Refused by the node in the request phase.
            ProxyError::BadRequest(_) | ProxyError::NotImplemented(_) => "PR--",
        }
    }

    pub fn status(&self) -> StatusCode {
        match self {
            ProxyError::NoBackend | ProxyError::Choice(_) => StatusCode::SERVICE_UNAVAILABLE,
            ProxyError::ServerTimeout(_) => StatusCode::GATEWAY_TIMEOUT,
            ProxyError::BadResponse { .. } => StatusCode::BAD_GATEWAY,
            ProxyError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ProxyError::NotImplemented(_) => StatusCode::NOT_IMPLEMENTED,
        }
    }
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
