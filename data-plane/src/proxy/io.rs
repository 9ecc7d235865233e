//! The client socket as the HTTP layer sees it: a `TcpStream` with the client-side
//! timeouts of the HTTP phase.
//!
//! - `timeout http-request`: a request head must be complete within this time, counted
//!   from the accept for the first request and from its first byte for later ones. When it
//!   expires the client gets the frontend's 408 page and the connection closes.
//! - `timeout client`: while no request is in flight (between keep-alive requests, or
//!   before the first), a read that stays pending this long closes the connection
//!   silently. While a request is being served the server-side timeouts apply instead.
//!
//! Both deadlines share one lazily created timer. After a 101 the HTTP layer takes the
//! raw `TcpStream` back and the tunnel timeout takes over.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::{Instant, Sleep};

/// What the HTTP service and the socket wrapper share about one client connection.
#[derive(Default)]
pub struct ConnState {
    /// Requests in flight (set by the HTTP service).
    pub busy: AtomicUsize,
    /// Requests whose head was received so far.
    pub requests: AtomicUsize,
    /// Set when the connection ended on `timeout http-request` (a 408 was sent).
    pub head_timed_out: AtomicBool,
}

pub struct ClientIo<S = TcpStream> {
    inner: S,
    idle: Duration,
    head_timeout: Duration,
    pub state: Arc<ConnState>,
    /// `requests` when the head deadline was set; a change means that head arrived.
    generation: usize,
    head_deadline: Option<Instant>,
    idle_deadline: Option<Instant>,
    timer: Option<Pin<Box<Sleep>>>,
    /// The complete 408 response, written when the head deadline passes.
    timeout_page: Bytes,
    /// Bytes of `timeout_page` still to write, once it is being sent.
    sending: Option<Bytes>,
}

impl<S: AsyncRead + AsyncWrite + Unpin> ClientIo<S> {
    pub fn new(inner: S, idle: Duration, head_timeout: Duration, timeout_page: Bytes) -> Self {
        Self {
            inner,
            idle,
            head_timeout,
            state: Arc::default(),
            generation: 0,
            head_deadline: Some(Instant::now() + head_timeout),
            idle_deadline: None,
            timer: None,
            timeout_page,
            sending: None,
        }
    }

    pub fn into_inner(self) -> S {
        self.inner
    }

    /// Writes what is left of the 408 page; then the read side reports the timeout.
    fn poll_send_timeout_page(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while let Some(rest) = self.sending.as_mut().filter(|r| !r.is_empty()) {
            match ready!(Pin::new(&mut self.inner).poll_write(cx, rest)) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    let _ = rest.split_to(n);
                }
            }
        }
        self.sending = Some(Bytes::new());
        Poll::Ready(Err(io::Error::new(
            io::ErrorKind::TimedOut,
            "timeout http-request",
        )))
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for ClientIo<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if this.sending.is_some() {
            return this.poll_send_timeout_page(cx);
        }
        let requests = this.state.requests.load(Relaxed);
        if requests != this.generation {
            // The head being timed arrived; the next one is timed from its first byte.
            this.generation = requests;
            this.head_deadline = None;
        }
        let before = buf.filled().len();
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(r) => {
                this.idle_deadline = None;
                if r.is_ok()
                    && buf.filled().len() > before
                    && this.head_deadline.is_none()
                    && this.state.busy.load(Relaxed) == 0
                {
                    this.head_deadline = Some(Instant::now() + this.head_timeout);
                }
                Poll::Ready(r)
            }
            Poll::Pending => {
                if this.state.busy.load(Relaxed) > 0 {
                    this.idle_deadline = None;
                    return Poll::Pending;
                }
                let idle = *this
                    .idle_deadline
                    .get_or_insert_with(|| Instant::now() + this.idle);
                let deadline = this.head_deadline.map_or(idle, |h| h.min(idle));
                let timer = this
                    .timer
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
                if timer.deadline() != deadline {
                    timer.as_mut().reset(deadline);
                }
                ready!(timer.as_mut().poll(cx));
                if this.head_deadline.is_some_and(|h| h <= Instant::now()) {
                    this.state.head_timed_out.store(true, Relaxed);
                    this.sending = Some(this.timeout_page.clone());
                    return this.poll_send_timeout_page(cx);
                }
                Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "client timeout",
                )))
            }
        }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for ClientIo<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, buf);
        if matches!(r, Poll::Ready(Ok(_))) {
            // Progress on the client side restarts the idle clock.
            self.idle_deadline = None;
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
        let r = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if matches!(r, Poll::Ready(Ok(_))) {
            self.idle_deadline = None;
        }
        r
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}
