//! Bytes in and out of one HTTP/2 stream, on the `h2` crate's stream handles: the
//! client side of a WebSocket tunnel over HTTP/2 ([`StreamIo`], read and written by the
//! tunnel like a socket), and a response body sent on a stream ([`send_body`]). Both
//! honour the stream's flow control: data read gives its window back as the tunnel takes
//! it, and data is sent only as far as the peer's window allows, so a slow reader holds
//! back the writer instead of filling the node's memory. A leaf.

use std::future::poll_fn;
use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use bytes::{Buf, Bytes};
use h2::{Reason, RecvStream, SendStream};
use hyper::body::Body as _;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// A response body as the request path gives it.
type Body = http_body_util::combinators::BoxBody<Bytes, hyper::Error>;

/// One HTTP/2 stream as a byte stream: its DATA frames read, and written, in order; the
/// write side's shutdown ends the stream (`END_STREAM`). Dropped before both ends closed,
/// the stream is reset (`CANCEL`) by the `h2` crate.
pub struct StreamIo {
    send: SendStream<Bytes>,
    recv: RecvStream,
    /// Received and not yet read.
    unread: Bytes,
    ended: bool,
}

impl StreamIo {
    pub fn new(send: SendStream<Bytes>, recv: RecvStream) -> Self {
        StreamIo {
            send,
            recv,
            unread: Bytes::new(),
            ended: false,
        }
    }
}

fn io_error(e: h2::Error) -> io::Error {
    if e.is_io() {
        e.into_io().unwrap_or_else(|| io::ErrorKind::Other.into())
    } else {
        io::Error::other(e)
    }
}

/// Waits until the stream may send at least one byte of `wanted`, and says how many.
/// `None`: the stream can no longer send (reset, or its send side closed).
fn poll_room(
    send: &mut SendStream<Bytes>,
    wanted: usize,
    cx: &mut Context<'_>,
) -> Poll<Result<usize, h2::Error>> {
    if send.capacity() == 0 {
        send.reserve_capacity(wanted);
    }
    loop {
        let room = send.capacity();
        if room > 0 {
            return Poll::Ready(Ok(room.min(wanted)));
        }
        match ready!(send.poll_capacity(cx)) {
            Some(Ok(_)) => {}
            Some(Err(e)) => return Poll::Ready(Err(e)),
            None => return Poll::Ready(Err(Reason::STREAM_CLOSED.into())),
        }
    }
}

impl AsyncRead for StreamIo {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let me = self.get_mut();
        while me.unread.is_empty() {
            match ready!(me.recv.poll_data(cx)) {
                // END_STREAM: the client's end of the tunnel.
                None => return Poll::Ready(Ok(())),
                Some(Ok(data)) => me.unread = data,
                // A reset with no error, or a cancel, ends the stream as a close would.
                Some(Err(e)) if matches!(e.reason(), Some(Reason::NO_ERROR | Reason::CANCEL)) => {
                    return Poll::Ready(Ok(()))
                }
                Some(Err(e)) => return Poll::Ready(Err(io_error(e))),
            }
        }
        let n = me.unread.len().min(buf.remaining());
        buf.put_slice(&me.unread[..n]);
        me.unread.advance(n);
        let _ = me.recv.flow_control().release_capacity(n);
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for StreamIo {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if buf.is_empty() {
            return Poll::Ready(Ok(0));
        }
        let me = self.get_mut();
        let n = ready!(poll_room(&mut me.send, buf.len(), cx)).map_err(io_error)?;
        me.send
            .send_data(Bytes::copy_from_slice(&buf[..n]), false)
            .map_err(io_error)?;
        Poll::Ready(Ok(n))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        // The connection's task writes what was sent.
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        let me = self.get_mut();
        if !me.ended {
            me.ended = true;
            me.send.send_data(Bytes::new(), true).map_err(io_error)?;
        }
        Poll::Ready(Ok(()))
    }
}

/// Why a response body did not reach the client whole.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    #[error("HTTP/2 stream: {0}")]
    Stream(#[from] h2::Error),
    #[error("response body: {0}")]
    Body(hyper::Error),
}

/// Sends a response body on a stream whose head is sent, then ends the stream (with the
/// body's trailers, if any). A body that fails resets the stream, so the client does not
/// take a truncated body for a whole one; a client that resets the stream stops it.
pub async fn send_body(mut body: Body, mut tx: SendStream<Bytes>) -> Result<(), SendError> {
    loop {
        let frame = poll_fn(|cx| {
            if let Poll::Ready(r) = tx.poll_reset(cx) {
                return Poll::Ready(Err(r.map_or_else(|e| e, h2::Error::from)));
            }
            Pin::new(&mut body).poll_frame(cx).map(Ok)
        })
        .await?;
        let frame = match frame {
            None => return Ok(tx.send_data(Bytes::new(), true)?),
            Some(Err(e)) => {
                tx.send_reset(Reason::INTERNAL_ERROR);
                return Err(SendError::Body(e));
            }
            Some(Ok(frame)) => frame,
        };
        match frame.into_data() {
            Ok(mut data) => {
                let end = body.is_end_stream();
                // As far as the window allows, the rest as it opens.
                loop {
                    if data.is_empty() {
                        if end {
                            tx.send_data(data, true)?;
                        }
                        break;
                    }
                    let n = poll_fn(|cx| poll_room(&mut tx, data.len(), cx)).await?;
                    let chunk = data.split_to(n);
                    let last = end && data.is_empty();
                    tx.send_data(chunk, last)?;
                    if last {
                        break;
                    }
                }
                if end {
                    return Ok(());
                }
            }
            Err(frame) => {
                if let Ok(trailers) = frame.into_trailers() {
                    return Ok(tx.send_trailers(trailers)?);
                }
            }
        }
    }
}
