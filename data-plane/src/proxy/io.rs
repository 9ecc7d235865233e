//! The client socket as the HTTP layer sees it: a `TcpStream` with the client timeout.
//!
//! While no request is in flight (between keep-alive requests, or before the first), a
//! read that stays pending past `timeout client` fails the connection. While a request is
//! being served, the server-side timeouts apply instead. After a 101 the HTTP layer hands
//! the raw `TcpStream` back and the tunnel timeout takes over.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::{Instant, Sleep};

pub struct ClientIo {
    inner: TcpStream,
    idle: Duration,
    /// Requests in flight on this connection (set by the HTTP service).
    pub busy: Arc<AtomicUsize>,
    timer: Pin<Box<Sleep>>,
    armed: bool,
}

impl ClientIo {
    pub fn new(inner: TcpStream, idle: Duration) -> Self {
        Self {
            inner,
            idle,
            busy: Arc::new(AtomicUsize::new(0)),
            timer: Box::pin(tokio::time::sleep(idle)),
            armed: false,
        }
    }

    pub fn into_inner(self) -> TcpStream {
        self.inner
    }
}

impl AsyncRead for ClientIo {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(r) => {
                this.armed = false;
                Poll::Ready(r)
            }
            Poll::Pending => {
                if this.busy.load(Ordering::Relaxed) > 0 {
                    this.armed = false;
                    return Poll::Pending;
                }
                if !this.armed {
                    this.armed = true;
                    let deadline = Instant::now() + this.idle;
                    this.timer.as_mut().reset(deadline);
                }
                match this.timer.as_mut().poll(cx) {
                    Poll::Ready(()) => Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "client timeout",
                    ))),
                    Poll::Pending => Poll::Pending,
                }
            }
        }
    }
}

impl AsyncWrite for ClientIo {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, buf);
        if matches!(r, Poll::Ready(Ok(_))) {
            // Progress on the client side restarts the idle clock.
            self.armed = false;
        }
        r
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}
