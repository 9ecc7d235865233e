//! The client socket as the HTTP layer sees it: a `TcpStream` with the client-side
//! timeouts of the HTTP phase.
//!
//! - `timeout http-request`: a request head must be complete within this time, counted
//!   from the accept for the first request and from its first byte for later ones. When it
//!   expires the client gets the frontend's 408 page and the connection closes.
//! - `timeout client`: while no request is in flight (between keep-alive requests, or
//!   before the first), a read that stays pending this long closes the connection —
//!   silently when nothing of a next request has arrived, with the 408 page when part of
//!   its head has. While a request is being served the server-side timeouts apply instead.
//!
//! Both deadlines share one lazily created timer. After a 101 the HTTP layer takes the
//! raw `TcpStream` back and the tunnel timeout takes over.
//!
//! It also gives the frontend's pages to the refusals the HTTP parser writes on its own
//! (400 malformed head, 414, 431 head too large): the parser answers those before any
//! request exists, with a bare head (`content-length: 0`, no body). A write that is
//! exactly such a head, while no response of the service is waiting for its head to be
//! written, can only be the parser's, and is replaced by the frontend's complete page (its
//! errorfile, else the default page), which closes the connection.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU16, AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::{Instant, Sleep};

use crate::config::pages::RefusalPages;

/// What the HTTP service and the socket wrapper share about one client connection.
#[derive(Default)]
pub struct ConnState {
    /// Requests in flight (set by the HTTP service).
    pub busy: AtomicUsize,
    /// Requests whose head was received so far.
    pub requests: AtomicUsize,
    /// Responses the HTTP service returned whose head is not written yet (incremented by
    /// the service, decremented once a head is written). While it is zero, a status line
    /// written is not the service's.
    pub answered: AtomicUsize,
    /// The status of the refusal page sent, if any (0: none): 408 on `timeout
    /// http-request`, or the page replacing the parser's own 400/414/431.
    pub refused: AtomicU16,
}

impl RefusalPages {
    /// The status and page replacing what the parser wrote, if `head` is one of its
    /// refusals: a complete, short head with an empty body.
    fn for_parser_head(&self, head: &[u8]) -> Option<(u16, &Bytes)> {
        if head.len() > 256
            || !head.ends_with(b"\r\n\r\n")
            || !head
                .windows(21)
                .any(|w| w.eq_ignore_ascii_case(b"\r\ncontent-length: 0\r\n"))
        {
            return None;
        }
        match head.strip_prefix(b"HTTP/1.1 ")?.get(..4)? {
            b"400 " => Some((400, &self.bad_request)),
            b"414 " => Some((414, &self.uri_too_long)),
            b"431 " => Some((431, &self.too_large)),
            _ => None,
        }
    }
}

/// What a write to the client carries, as far as refusals are concerned.
enum Write {
    /// The parser's own refusal: replaced by the frontend's page.
    ParserRefusal,
    /// The head of a response the service returned.
    ServiceHead,
    Other,
}

pub struct ClientIo<S = TcpStream> {
    inner: S,
    idle: Duration,
    head_timeout: Duration,
    pub state: Arc<ConnState>,
    /// `requests` when the head deadline was set; a change means that head arrived.
    generation: usize,
    head_deadline: Option<Instant>,
    /// Bytes of the next request head have arrived (it is incomplete until `requests`
    /// changes).
    partial_head: bool,
    idle_deadline: Option<Instant>,
    timer: Option<Pin<Box<Sleep>>>,
    pages: Arc<RefusalPages>,
    /// Bytes of a refusal page still to write, once one is being sent; after it the
    /// connection carries nothing else.
    sending: Option<Bytes>,
    /// Bytes read from the socket before the HTTP parser took over, given to it first
    /// (see [`ClientIo::replay`]).
    replay: Bytes,
}

impl<S: AsyncRead + AsyncWrite + Unpin> ClientIo<S> {
    /// The first head is due by `first_head` (the wait before it, such as the HTTP/2
    /// preface check, counts); later heads get `head_timeout` each.
    pub fn new(
        inner: S,
        idle: Duration,
        (first_head, head_timeout): (Instant, Duration),
        pages: Arc<RefusalPages>,
    ) -> Self {
        Self {
            inner,
            idle,
            head_timeout,
            state: Arc::default(),
            generation: 0,
            head_deadline: Some(first_head),
            partial_head: false,
            idle_deadline: None,
            timer: None,
            pages,
            sending: None,
            replay: Bytes::new(),
        }
    }

    pub fn into_inner(self) -> S {
        self.inner
    }

    /// The socket, and what is left of the replayed bytes (none once the parser has read
    /// past them, as it has by the time a request is served).
    pub fn into_parts(self) -> (S, Bytes) {
        (self.inner, self.replay)
    }

    /// Has the next reads return `bytes` (read through this wrapper before, so already
    /// timed as part of a head) before anything more from the socket.
    pub fn replay(&mut self, bytes: Bytes) {
        self.replay = bytes;
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

    /// Writes what is left of a refusal page and flushes it, for the read side, which
    /// reports the end of the connection next.
    fn poll_send_page_flushed(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        ready!(self.poll_send_page(cx));
        let _ = ready!(Pin::new(&mut self.inner).poll_flush(cx));
        Poll::Ready(())
    }

    /// What a write starting with `head` (the whole write: `len` bytes) is; a parser
    /// refusal has the frontend's page queued in its place.
    fn classify(&mut self, head: &[u8], len: usize) -> Write {
        if !head.starts_with(b"HTTP/1.") {
            return Write::Other;
        }
        if self.state.answered.load(Relaxed) > 0 {
            return Write::ServiceHead;
        }
        match self.pages.for_parser_head(head) {
            Some((status, page)) if head.len() == len => {
                self.state.refused.store(status, Relaxed);
                self.sending = Some(page.clone());
                Write::ParserRefusal
            }
            _ => Write::Other,
        }
    }

    /// Bookkeeping after a write reached the socket.
    fn wrote(&mut self, kind: Write, r: &Poll<io::Result<usize>>) {
        if let Poll::Ready(Ok(n)) = r {
            if *n > 0 {
                // Progress on the client side restarts the idle clock.
                self.idle_deadline = None;
                if matches!(kind, Write::ServiceHead) {
                    self.state.answered.fetch_sub(1, Relaxed);
                }
            }
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
            ready!(this.poll_send_page_flushed(cx));
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
            this.partial_head = false;
        }
        if !this.replay.is_empty() {
            let n = this.replay.len().min(buf.remaining());
            buf.put_slice(&this.replay.split_to(n));
            return Poll::Ready(Ok(()));
        }
        let before = buf.filled().len();
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(r) => {
                this.idle_deadline = None;
                if r.is_ok() && buf.filled().len() > before && this.state.busy.load(Relaxed) == 0 {
                    this.partial_head = true;
                    if this.head_deadline.is_none() {
                        this.head_deadline = Some(Instant::now() + this.head_timeout);
                    }
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
                // `timeout http-request`, or `timeout client` in the middle of a head: the
                // client gets its 408 either way. An idle connection closes silently.
                if this.head_deadline.is_some_and(|h| h <= Instant::now()) || this.partial_head {
                    this.state.refused.store(408, Relaxed);
                    this.sending = Some(this.pages.timeout.clone());
                    ready!(this.poll_send_page_flushed(cx));
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
        // After a refusal page nothing else goes out.
        let kind = match self.sending {
            Some(_) => Write::ParserRefusal,
            None => self.classify(buf, buf.len()),
        };
        if let Write::ParserRefusal = kind {
            let _ = self.poll_send_page(cx);
            return Poll::Ready(Ok(buf.len()));
        }
        let r = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.wrote(kind, &r);
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
        let len = bufs.iter().map(|b| b.len()).sum();
        let kind = match self.sending {
            Some(_) => Write::ParserRefusal,
            None => {
                let head = bufs
                    .iter()
                    .find(|b| !b.is_empty())
                    .map_or(&[][..], |b| &b[..]);
                self.classify(head, len)
            }
        };
        if let Write::ParserRefusal = kind {
            let _ = self.poll_send_page(cx);
            return Poll::Ready(Ok(len));
        }
        let r = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.wrote(kind, &r);
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

    /// A `ClientIo` over `inner` with recognisable pages.
    fn client_io(inner: tokio::io::DuplexStream) -> ClientIo<tokio::io::DuplexStream> {
        let pages = Arc::new(RefusalPages {
            timeout: Bytes::from_static(b"408 page"),
            bad_request: Bytes::from_static(b"400 page"),
            uri_too_long: Bytes::from_static(b"414 page"),
            too_large: Bytes::from_static(b"431 page"),
        });
        let head = Duration::from_secs(5);
        ClientIo::new(inner, head, (Instant::now() + head, head), pages)
    }

    /// Writes `bytes` through a `ClientIo` (with `answered` service responses pending)
    /// and returns what the client receives, and the refusal status recorded.
    async fn client_sees(answered: usize, bytes: &[u8]) -> (Vec<u8>, u16) {
        let (near, mut far) = tokio::io::duplex(4096);
        let mut io = client_io(near);
        io.state.answered.store(answered, Relaxed);
        io.write_all(bytes).await.unwrap();
        io.flush().await.unwrap();
        let refused = io.state.refused.load(Relaxed);
        drop(io);
        let mut got = Vec::new();
        far.read_to_end(&mut got).await.unwrap();
        (got, refused)
    }

    /// `timeout client` (1 s here) passing in the middle of a request head gets the 408
    /// page like `timeout http-request` (10 s here); an idle connection is closed silently.
    #[tokio::test(start_paused = true)]
    async fn a_head_cut_off_by_the_client_timeout_gets_its_408() {
        for (sent, expect) in [
            (&b"GET / HTTP/1.1\r\nHo"[..], &b"408 page"[..]),
            (&b""[..], &b""[..]),
        ] {
            let (near, mut far) = tokio::io::duplex(4096);
            let pages = client_io(tokio::io::duplex(1).0).pages;
            let mut io = ClientIo::new(
                near,
                Duration::from_secs(1),
                (
                    Instant::now() + Duration::from_secs(10),
                    Duration::from_secs(10),
                ),
                pages,
            );
            // The first request was served: its head is not what is being timed.
            io.state.requests.store(1, Relaxed);
            far.write_all(sent).await.unwrap();
            let mut buf = [0u8; 64];
            if !sent.is_empty() {
                assert_eq!(io.read(&mut buf).await.unwrap(), sent.len());
            }
            let err = io.read(&mut buf).await.unwrap_err();
            assert_eq!(err.kind(), io::ErrorKind::TimedOut);
            drop(io);
            let mut got = Vec::new();
            far.read_to_end(&mut got).await.unwrap();
            assert_eq!(got, expect, "after {sent:?}");
        }
    }

    const BARE_400: &[u8] =
        b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\ndate: Fri, 27 Nov 2026 05:00:00 GMT\r\n\r\n";

    #[tokio::test]
    async fn only_the_parsers_own_refusals_are_replaced() {
        assert_eq!(client_sees(0, BARE_400).await, (b"400 page".to_vec(), 400));
        let bare = b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-length: 0\r\n\r\n";
        assert_eq!(client_sees(0, bare).await, (b"431 page".to_vec(), 431));
        // The service's own 400 (a server's, relayed) goes out as written, even in the
        // parser's form.
        assert_eq!(client_sees(1, BARE_400).await, (BARE_400.to_vec(), 0));
        // Bytes that only start like a refusal (a body chunk quoting one) are not one.
        let quoted = b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\nmore";
        assert_eq!(client_sees(0, quoted).await, (quoted.to_vec(), 0));
        // Other statuses, and bytes that are not a status line, are never touched.
        let cont = b"HTTP/1.1 100 Continue\r\n\r\n";
        assert_eq!(client_sees(0, cont).await, (cont.to_vec(), 0));
        assert_eq!(
            client_sees(0, b"body bytes").await,
            (b"body bytes".to_vec(), 0)
        );
    }

    /// A service response whose head cannot be written at once (the client is not
    /// reading) is still the service's when the write is retried.
    #[tokio::test]
    async fn a_delayed_service_head_is_not_taken_for_a_refusal() {
        let (near, mut far) = tokio::io::duplex(16);
        let mut io = client_io(near);
        // The client's buffer is full: the head's first write attempt is Pending.
        io.write_all(&[b'x'; 16]).await.unwrap();
        io.state.answered.store(1, Relaxed);
        let (wrote, got) = tokio::join!(
            async {
                io.write_all(BARE_400).await.unwrap();
                io.flush().await.unwrap();
                drop(io);
            },
            async {
                let mut got = Vec::new();
                far.read_to_end(&mut got).await.unwrap();
                got
            }
        );
        let () = wrote;
        assert_eq!(&got[..16], &[b'x'; 16]);
        assert_eq!(&got[16..], BARE_400);
    }
}
