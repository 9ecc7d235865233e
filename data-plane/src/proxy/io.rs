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
//!
//! It also gives the frontend's pages to the refusals the HTTP parser writes on its own
//! (400 malformed head, 414, 431 head too large): the parser answers those before any
//! request exists, with an empty body. A write that starts with such a status line while
//! no service response is waiting to be written can only be the parser's, and is
//! replaced by the frontend's complete page (its errorfile, else the default page), which
//! closes the connection.

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
    /// Set by the HTTP service when it returns a response, cleared by the next write of
    /// a status line: while it is clear, a status line written is the parser's own.
    pub answered: AtomicBool,
}

/// The complete responses for refusals made before any request exists, rendered once
/// per frontend and snapshot (see the module docs).
#[derive(Debug)]
pub struct RefusalPages {
    /// 408, on `timeout http-request`.
    pub timeout: Bytes,
    pub bad_request: Bytes,
    pub uri_too_long: Bytes,
    pub too_large: Bytes,
}

impl RefusalPages {
    /// The page replacing what the parser wrote, if `head` is one of its refusals.
    fn for_parser_head(&self, head: &[u8]) -> Option<&Bytes> {
        let status = head.strip_prefix(b"HTTP/1.1 ")?.get(..4)?;
        match status {
            b"400 " => Some(&self.bad_request),
            b"414 " => Some(&self.uri_too_long),
            b"431 " => Some(&self.too_large),
            _ => None,
        }
    }
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
    pages: Arc<RefusalPages>,
    /// Bytes of a refusal page still to write, once one is being sent; after it the
    /// connection carries nothing else.
    sending: Option<Bytes>,
}

impl<S: AsyncRead + AsyncWrite + Unpin> ClientIo<S> {
    pub fn new(inner: S, idle: Duration, head_timeout: Duration, pages: Arc<RefusalPages>) -> Self {
        Self {
            inner,
            idle,
            head_timeout,
            state: Arc::default(),
            generation: 0,
            head_deadline: Some(Instant::now() + head_timeout),
            idle_deadline: None,
            timer: None,
            pages,
            sending: None,
        }
    }

    pub fn into_inner(self) -> S {
        self.inner
    }

    /// Writes what is left of a refusal page. Errors end the sending quietly: the
    /// connection is closing either way.
    fn poll_send_page(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        while let Some(rest) = self.sending.as_mut().filter(|r| !r.is_empty()) {
            match ready!(Pin::new(&mut self.inner).poll_write(cx, rest)) {
                Ok(0) | Err(_) => rest.clear(),
                Ok(n) => {
                    let _ = rest.split_to(n);
                }
            }
        }
        Poll::Ready(())
    }

    /// Whether a write starting with `head` is the parser's own refusal; if so, the
    /// frontend's page is queued in its place.
    fn replaces_parser_refusal(&mut self, head: &[u8]) -> bool {
        if self.sending.is_some() {
            // A page went out already; nothing may follow it.
            return true;
        }
        if !head.starts_with(b"HTTP/1.") {
            return false;
        }
        if self.state.answered.swap(false, Relaxed) {
            // The head of the response the service just returned.
            return false;
        }
        match self.pages.for_parser_head(head) {
            Some(page) => {
                self.sending = Some(page.clone());
                true
            }
            None => false,
        }
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
            // A refusal page is going out: the connection reads nothing more.
            ready!(this.poll_send_page(cx));
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::ConnectionAborted,
                "connection closing after a refusal",
            )));
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
                    this.sending = Some(this.pages.timeout.clone());
                    ready!(this.poll_send_page(cx));
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "timeout http-request",
                    )));
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
        if self.replaces_parser_refusal(buf) {
            let _ = self.poll_send_page(cx);
            return Poll::Ready(Ok(buf.len()));
        }
        let r = Pin::new(&mut self.inner).poll_write(cx, buf);
        if matches!(r, Poll::Ready(Ok(_))) {
            // Progress on the client side restarts the idle clock.
            self.idle_deadline = None;
        }
        r
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.poll_send_page(cx));
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.poll_send_page(cx));
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let head = bufs
            .iter()
            .find(|b| !b.is_empty())
            .map_or(&[][..], |b| &b[..]);
        if self.replaces_parser_refusal(head) {
            let _ = self.poll_send_page(cx);
            return Poll::Ready(Ok(bufs.iter().map(|b| b.len()).sum()));
        }
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

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    fn pages() -> Arc<RefusalPages> {
        Arc::new(RefusalPages {
            timeout: Bytes::from_static(b"408 page"),
            bad_request: Bytes::from_static(b"400 page"),
            uri_too_long: Bytes::from_static(b"414 page"),
            too_large: Bytes::from_static(b"431 page"),
        })
    }

    /// Writes `head` through a `ClientIo` and returns what the client receives.
    async fn client_sees(answered: bool, head: &[u8]) -> Vec<u8> {
        let (near, mut far) = tokio::io::duplex(4096);
        let mut io = ClientIo::new(
            near,
            Duration::from_secs(5),
            Duration::from_secs(5),
            pages(),
        );
        io.state.answered.store(answered, Relaxed);
        io.write_all(head).await.unwrap();
        io.flush().await.unwrap();
        drop(io);
        let mut got = Vec::new();
        far.read_to_end(&mut got).await.unwrap();
        got
    }

    #[tokio::test]
    async fn only_the_parsers_own_refusals_are_replaced() {
        let bare = b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n";
        assert_eq!(client_sees(false, bare).await, b"400 page");
        let bare = b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-length: 0\r\n\r\n";
        assert_eq!(client_sees(false, bare).await, b"431 page");
        // The service's own 400 (a server's, relayed) goes out as written.
        let relayed = b"HTTP/1.1 400 Bad Request\r\ncontent-length: 3\r\n\r\nabc";
        assert_eq!(client_sees(true, relayed).await, relayed);
        // Other statuses, and bytes that are not a status line, are never touched.
        let cont = b"HTTP/1.1 100 Continue\r\n\r\n";
        assert_eq!(client_sees(false, cont).await, cont);
        assert_eq!(client_sees(false, b"body bytes").await, b"body bytes");
    }
}
