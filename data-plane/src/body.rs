//! The body of a request the node forwards: hyper's, for a request its HTTP server read,
//! or none, for a WebSocket upgrade the node read itself (`proxy::direct`). A leaf: the
//! request path and the server connection pool (`pool`) both speak it.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use hyper::body::{Body, Frame, Incoming, SizeHint};

/// A client request's body, as sent on to the server.
#[derive(Debug)]
pub enum ReqBody {
    /// Read by hyper's server (HTTP/1.1 or an HTTP/2 stream).
    Incoming(Incoming),
    /// No body: an upgrade request read without hyper.
    Empty,
}

impl Body for ReqBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        match self.get_mut() {
            ReqBody::Incoming(b) => Pin::new(b).poll_frame(cx),
            ReqBody::Empty => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ReqBody::Incoming(b) => b.is_end_stream(),
            ReqBody::Empty => true,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ReqBody::Incoming(b) => b.size_hint(),
            ReqBody::Empty => SizeHint::with_exact(0),
        }
    }
}
