//! The body of a request the node forwards: hyper's, for a request its HTTP/1.1 server
//! read; an HTTP/2 stream's, read from the `h2` crate's stream (`proxy::h2stream`); or
//! none, for a WebSocket upgrade the node read itself (`proxy::direct`). A leaf: the
//! request path and the server connection pool (`pool`) both speak it.

use std::pin::Pin;
use std::task::{ready, Context, Poll};

use bytes::Bytes;
use hyper::body::{Body, Frame, Incoming, SizeHint};

/// A client request's body, as sent on to the server.
#[derive(Debug)]
pub enum ReqBody {
    /// Read by hyper's HTTP/1.1 server.
    Incoming(Incoming),
    /// The data of an HTTP/2 stream, then its trailers.
    H2(H2Body),
    /// No body: an upgrade request read without hyper.
    Empty,
}

/// Why a client's request body could not be read.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    #[error(transparent)]
    Http1(#[from] hyper::Error),
    #[error(transparent)]
    H2(#[from] h2::Error),
}

/// An HTTP/2 stream's request body. Each chunk's flow-control capacity is given back as
/// the chunk is taken, so the client may send the next while this one is forwarded; the
/// `h2` crate checks the data against a declared `content-length` (which goes to the
/// server as the request's length).
#[derive(Debug)]
pub struct H2Body {
    recv: h2::RecvStream,
    /// Set once the data is done: then come the trailers, if any.
    data_done: bool,
}

impl H2Body {
    pub fn new(recv: h2::RecvStream) -> Self {
        H2Body {
            recv,
            data_done: false,
        }
    }
}

/// A `RST_STREAM` with `NO_ERROR` ends a request body early without failing it (RFC 9113
/// §8.1: the server answered before reading it all).
fn early_end(e: h2::Error) -> Option<Result<Frame<Bytes>, BodyError>> {
    (e.reason() != Some(h2::Reason::NO_ERROR)).then(|| Err(e.into()))
}

impl Body for ReqBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let b = match self.get_mut() {
            ReqBody::Incoming(b) => {
                return Pin::new(b)
                    .poll_frame(cx)
                    .map(|f| f.map(|f| f.map_err(BodyError::from)))
            }
            ReqBody::Empty => return Poll::Ready(None),
            ReqBody::H2(b) => b,
        };
        if !b.data_done {
            match ready!(b.recv.poll_data(cx)) {
                Some(Ok(data)) => {
                    let _ = b.recv.flow_control().release_capacity(data.len());
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                Some(Err(e)) => return Poll::Ready(early_end(e)),
                None => b.data_done = true,
            }
        }
        Poll::Ready(match ready!(b.recv.poll_trailers(cx)) {
            Ok(t) => t.map(|t| Ok(Frame::trailers(t))),
            Err(e) => early_end(e),
        })
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ReqBody::Incoming(b) => b.is_end_stream(),
            ReqBody::H2(b) => b.recv.is_end_stream(),
            ReqBody::Empty => true,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ReqBody::Incoming(b) => b.size_hint(),
            ReqBody::H2(_) => SizeHint::default(),
            ReqBody::Empty => SizeHint::with_exact(0),
        }
    }
}
