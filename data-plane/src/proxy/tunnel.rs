//! The tunnel: after a 101, bytes flow both ways unmodified until one side is done.
//!
//! Nothing is parsed. Bytes that arrived together with the upgrade (buffered by the HTTP
//! layer on either side) are written first. EOF on one side becomes a write shutdown on
//! the other (half-close); the tunnel ends when both directions have finished, when
//! either side fails, or when neither direction has moved a byte for the tunnel timeout —
//! or, once one side has half-closed, for HAProxy's `client-fin` (the server sent its FIN,
//! the client has not closed) or `server-fin` (the reverse) timeout: a server that went
//! away must not hold its client's tunnel for the tunnel timeout.
//!
//! Memory: an idle tunnel owns no buffer. The task waits for readiness on both sockets;
//! when one is readable, bytes are read into a per-thread scratch buffer and written
//! straight to the other socket. Only bytes the other side cannot take yet are copied
//! into a buffer owned by the tunnel, which is freed as soon as it drains (and reading
//! that direction pauses meanwhile, so a slow reader applies back-pressure). The idle
//! timer is reset lazily: it fires at most once per idle period and re-arms to the real
//! deadline, instead of being re-registered for every message.

use std::cell::RefCell;
use std::future::Future;
use std::io;
use std::net::Shutdown;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use tokio::io::{AsyncRead, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::Instant;

use crate::config::TunnelTimeouts;

/// Why a tunnel ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TunnelEnd {
    /// Both sides closed; `client_first` tells who started.
    Closed { client_first: bool },
    /// No traffic either way for the tunnel timeout.
    Timeout,
    /// Reading from or writing to the client failed.
    ClientError,
    /// Reading from or writing to the server failed.
    ServerError,
}

/// What a finished tunnel did.
#[derive(Debug, Clone, Copy)]
pub struct TunnelReport {
    pub end: TunnelEnd,
    /// Bytes from the client to the server.
    pub up: u64,
    /// Bytes from the server to the client.
    pub down: u64,
}

/// Bytes moved so far, readable while the tunnel runs (and after it was aborted).
#[derive(Debug, Default)]
pub struct Meter {
    /// Client to server.
    pub up: AtomicU64,
    /// Server to client.
    pub down: AtomicU64,
}

/// Scratch space for moving bytes; one per thread, never held across an `.await`.
const SCRATCH: usize = 64 * 1024;

thread_local! {
    static SCRATCH_BUF: RefCell<Box<[u8]>> = RefCell::new(vec![0u8; SCRATCH].into_boxed_slice());
}

/// Reads at most this many scratch buffers from one side before yielding to the other.
const BURST: usize = 4;

enum Fail {
    Read,
    Write,
}

/// One direction of the tunnel.
#[derive(Default)]
struct Flow {
    /// Bytes read but not yet written (empty, and unallocated, most of the time).
    pending: Vec<u8>,
    written: usize,
    /// The source sent EOF.
    eof: bool,
    /// The EOF has been passed on as a write shutdown.
    shut: bool,
    bytes: u64,
}

impl Flow {
    fn with_early(early: Bytes) -> Self {
        Flow {
            pending: early.to_vec(),
            ..Flow::default()
        }
    }

    fn has_pending(&self) -> bool {
        self.written < self.pending.len()
    }

    fn can_read(&self) -> bool {
        !self.eof && !self.has_pending()
    }

    fn done(&self) -> bool {
        self.shut
    }

    /// Writes what is pending; passes on EOF once drained. Returns whether bytes moved.
    fn flush(&mut self, to: &TcpStream) -> Result<bool, Fail> {
        let mut moved = false;
        while self.has_pending() {
            match to.try_write(&self.pending[self.written..]) {
                Ok(n) => {
                    self.written += n;
                    self.bytes += n as u64;
                    moved = true;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(moved),
                Err(_) => return Err(Fail::Write),
            }
        }
        // Drained: give the memory back.
        self.pending = Vec::new();
        self.written = 0;
        self.pass_eof(to);
        Ok(moved)
    }

    fn pass_eof(&mut self, to: &TcpStream) {
        if self.eof && !self.shut && !self.has_pending() {
            let _ = socket2::SockRef::from(to).shutdown(Shutdown::Write);
            self.shut = true;
        }
    }

    /// Moves what `from` has to `to`: `Ready(Ok(true))` if bytes moved or EOF was seen,
    /// `Pending` once `from` has nothing (this task is then woken when it has).
    ///
    /// Reads go through `AsyncRead::poll_read`, which treats a short read as "drained"
    /// and clears readiness without the extra `EAGAIN` read `try_read` would need.
    fn pump(
        &mut self,
        cx: &mut Context<'_>,
        from: &mut TcpStream,
        to: &TcpStream,
    ) -> Poll<Result<bool, Fail>> {
        SCRATCH_BUF.with(|scratch| {
            let mut scratch = scratch.borrow_mut();
            let mut moved = false;
            for _ in 0..BURST {
                let mut buf = ReadBuf::new(&mut scratch);
                match Pin::new(&mut *from).poll_read(cx, &mut buf) {
                    Poll::Pending if moved => return Poll::Ready(Ok(true)),
                    Poll::Pending => return Poll::Pending,
                    Poll::Ready(Err(_)) => return Poll::Ready(Err(Fail::Read)),
                    Poll::Ready(Ok(())) => {}
                }
                let data = buf.filled();
                let n = data.len();
                if n == 0 {
                    self.eof = true;
                    self.pass_eof(to);
                    return Poll::Ready(Ok(true));
                }
                moved = true;
                let mut sent = 0;
                while sent < n {
                    match to.try_write(&data[sent..]) {
                        Ok(m) => sent += m,
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                        Err(_) => return Poll::Ready(Err(Fail::Write)),
                    }
                }
                self.bytes += sent as u64;
                if sent < n {
                    // The other side is full: keep the rest and stop reading until it drains.
                    self.pending = data[sent..].to_vec();
                    self.written = 0;
                    return Poll::Ready(Ok(true));
                }
                if n < SCRATCH {
                    // A short read: the socket is drained (and its readiness cleared).
                    return Poll::Ready(Ok(true));
                }
            }
            Poll::Ready(Ok(moved))
        })
    }
}

/// Readiness-driven passes over both flows per wake-up before yielding to other tasks.
const PASSES_PER_POLL: usize = 8;

/// Runs the tunnel to its end. `client_early`/`server_early` are bytes already read from
/// each side past the HTTP exchange, delivered to the other side first.
///
/// Written as one `poll_fn` over the sockets' readiness rather than a `select!` of
/// readiness futures: the state is just the two sockets, two [`Flow`]s and a timer,
/// which keeps an idle tunnel small.
pub async fn run(
    mut client: TcpStream,
    client_early: Bytes,
    mut server: TcpStream,
    server_early: Bytes,
    limits: TunnelTimeouts,
    meter: &Meter,
) -> TunnelReport {
    let mut up = Flow::with_early(client_early);
    let mut down = Flow::with_early(server_early);
    let mut last_activity = Instant::now();
    let timer = tokio::time::sleep(limits.idle());
    // Whether the timer was brought forward to a fin timeout.
    let mut fin_armed = false;
    tokio::pin!(timer);
    let mut client_first = None;

    let end = std::future::poll_fn(|cx| {
        let r = 'poll: {
            for _ in 0..PASSES_PER_POLL {
                let mut ready = false;
                let mut moved = false;
                // Client → server, then server → client.
                for upstream in [true, false] {
                    let (flow, from, to) = if upstream {
                        (&mut up, &mut client, &server)
                    } else {
                        (&mut down, &mut server, &client)
                    };
                    if flow.has_pending() {
                        match to.poll_write_ready(cx) {
                            Poll::Ready(Ok(())) => {
                                ready = true;
                                match flow.flush(to) {
                                    Ok(m) => moved |= m,
                                    Err(f) => break 'poll Poll::Ready(side(f, upstream)),
                                }
                            }
                            Poll::Ready(Err(_)) => {
                                break 'poll Poll::Ready(side(Fail::Write, upstream))
                            }
                            Poll::Pending => {}
                        }
                    }
                    if flow.can_read() {
                        match flow.pump(cx, from, to) {
                            Poll::Ready(Ok(m)) => {
                                ready = true;
                                moved |= m;
                            }
                            Poll::Ready(Err(f)) => break 'poll Poll::Ready(side(f, upstream)),
                            Poll::Pending => {}
                        }
                    }
                    if flow.eof && client_first.is_none() {
                        client_first = Some(upstream);
                    }
                }
                if moved {
                    last_activity = Instant::now();
                }
                if !fin_armed && (up.eof || down.eof) {
                    // Half-closed: the shorter fin timeout applies from now on.
                    fin_armed = true;
                    timer
                        .as_mut()
                        .reset(last_activity + limits.current(up.eof, down.eof));
                }
                if up.done() && down.done() {
                    break 'poll Poll::Ready(TunnelEnd::Closed {
                        client_first: client_first.unwrap_or(true),
                    });
                }
                if !ready {
                    // Every socket we care about has registered this task's waker.
                    loop {
                        match timer.as_mut().poll(cx) {
                            Poll::Pending => break 'poll Poll::Pending,
                            Poll::Ready(()) => {
                                let deadline = last_activity + limits.current(up.eof, down.eof);
                                if Instant::now() >= deadline {
                                    break 'poll Poll::Ready(TunnelEnd::Timeout);
                                }
                                timer.as_mut().reset(deadline);
                            }
                        }
                    }
                }
            }
            // Still busy after several passes: let other tasks run, then continue.
            cx.waker().wake_by_ref();
            Poll::Pending
        };
        // One plain store per wake-up keeps the meter current.
        meter.up.store(up.bytes, Relaxed);
        meter.down.store(down.bytes, Relaxed);
        r
    })
    .await;
    TunnelReport {
        end,
        up: up.bytes,
        down: down.bytes,
    }
}

/// The tunnel for a client that is not a plain socket (TLS): the same rules — early bytes
/// first, half-close passed on, `idle` without a byte either way ends it — with each
/// direction polled through the stream (a TLS stream cannot be driven by socket
/// readiness alone) and, like the socket tunnel, no buffer held while idle.
pub async fn run_stream<C>(
    client: C,
    client_early: Bytes,
    mut server: TcpStream,
    server_early: Bytes,
    limits: TunnelTimeouts,
    meter: &Meter,
) -> TunnelReport
where
    C: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let started = Instant::now();
    // Milliseconds since `started` of the last byte moved, either way.
    let last = AtomicU64::new(0);
    let touch = || last.store(started.elapsed().as_millis() as u64, Relaxed);
    let (mut cr, mut cw) = tokio::io::split(client);
    let (mut sr, mut sw) = server.split();
    // Which direction saw its EOF first (true: the client's), and which have.
    let first_eof = std::sync::OnceLock::new();
    let (client_fin, server_fin) = (AtomicBool::new(false), AtomicBool::new(false));
    let fin_seen = tokio::sync::Notify::new();

    let up = copy_half(&mut cr, &mut sw, client_early, &meter.up, &touch, || {
        let _ = first_eof.set(true);
        client_fin.store(true, Relaxed);
        fin_seen.notify_one();
    });
    let down = copy_half(&mut sr, &mut cw, server_early, &meter.down, &touch, || {
        let _ = first_eof.set(false);
        server_fin.store(true, Relaxed);
        fin_seen.notify_one();
    });
    let idle_watch = async {
        loop {
            let limit = limits.current(client_fin.load(Relaxed), server_fin.load(Relaxed));
            let deadline = started + Duration::from_millis(last.load(Relaxed)) + limit;
            if Instant::now() >= deadline {
                return;
            }
            // A FIN may bring the deadline forward: look again when one arrives.
            tokio::select! {
                () = tokio::time::sleep_until(deadline) => {}
                () = fin_seen.notified() => {}
            }
        }
    };
    let both = async {
        tokio::pin!(up, down);
        let (mut up_done, mut down_done) = (false, false);
        while !(up_done && down_done) {
            tokio::select! {
                r = &mut up, if !up_done => match r {
                    Ok(()) => up_done = true,
                    Err(f) => return side(f, true),
                },
                r = &mut down, if !down_done => match r {
                    Ok(()) => down_done = true,
                    Err(f) => return side(f, false),
                },
            }
        }
        TunnelEnd::Closed {
            client_first: first_eof.get().copied().unwrap_or(true),
        }
    };
    let end = tokio::select! {
        end = both => end,
        () = idle_watch => TunnelEnd::Timeout,
    };
    TunnelReport {
        end,
        up: meter.up.load(Relaxed),
        down: meter.down.load(Relaxed),
    }
}

/// One direction of a stream tunnel: `early` first, then everything `from` sends; at its
/// EOF, `on_eof` runs and `to` is shut down for writing. As in the socket tunnel, an
/// idle direction owns no buffer: bytes are read into the per-thread scratch buffer
/// when the source has some and written straight on; only what the destination cannot
/// take yet is copied into a buffer of its own, freed once written (reading pauses
/// meanwhile).
async fn copy_half<R, W>(
    from: &mut R,
    to: &mut W,
    early: Bytes,
    count: &AtomicU64,
    touch: &impl Fn(),
    on_eof: impl FnOnce(),
) -> Result<(), Fail>
where
    R: tokio::io::AsyncRead + Unpin,
    W: tokio::io::AsyncWrite + Unpin,
{
    let mut pending: Vec<u8> = early.to_vec();
    // `early` shares the HTTP layer's whole read buffer: let it go now, not with the
    // tunnel.
    drop(early);
    let mut written = 0;
    // A TLS writer holds records until flushed.
    let mut unflushed = false;
    let mut eof = false;
    let mut on_eof = Some(on_eof);
    std::future::poll_fn(|cx| {
        let mut reads = 0;
        loop {
            while written < pending.len() {
                match Pin::new(&mut *to).poll_write(cx, &pending[written..]) {
                    Poll::Ready(Ok(0)) | Poll::Ready(Err(_)) => {
                        return Poll::Ready(Err(Fail::Write))
                    }
                    Poll::Ready(Ok(n)) => {
                        written += n;
                        count.fetch_add(n as u64, Relaxed);
                        unflushed = true;
                    }
                    Poll::Pending => return Poll::Pending,
                }
            }
            if !pending.is_empty() {
                pending = Vec::new();
                written = 0;
                touch();
            }
            if unflushed {
                match Pin::new(&mut *to).poll_flush(cx) {
                    Poll::Ready(Ok(())) => unflushed = false,
                    Poll::Ready(Err(_)) => return Poll::Ready(Err(Fail::Write)),
                    Poll::Pending => return Poll::Pending,
                }
            }
            if eof {
                return Pin::new(&mut *to).poll_shutdown(cx).map(|_| Ok(()));
            }
            if reads == BURST {
                // Busy: let the other direction and other tasks run, then continue.
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
            reads += 1;
            let step = SCRATCH_BUF.with(|scratch| {
                let mut scratch = scratch.borrow_mut();
                let mut rb = ReadBuf::new(&mut scratch[..]);
                match Pin::new(&mut *from).poll_read(cx, &mut rb) {
                    Poll::Pending => Poll::Pending,
                    Poll::Ready(Err(_)) => Poll::Ready(Err(Fail::Read)),
                    Poll::Ready(Ok(())) => {
                        let data = rb.filled();
                        if data.is_empty() {
                            return Poll::Ready(Ok(false));
                        }
                        let took = match Pin::new(&mut *to).poll_write(cx, data) {
                            Poll::Ready(Ok(0)) | Poll::Ready(Err(_)) => {
                                return Poll::Ready(Err(Fail::Write))
                            }
                            Poll::Ready(Ok(n)) => n,
                            Poll::Pending => 0,
                        };
                        count.fetch_add(took as u64, Relaxed);
                        unflushed |= took > 0;
                        if took < data.len() {
                            pending = data[took..].to_vec();
                        }
                        Poll::Ready(Ok(true))
                    }
                }
            });
            match step {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Err(f)) => return Poll::Ready(Err(f)),
                Poll::Ready(Ok(true)) => touch(),
                Poll::Ready(Ok(false)) => {
                    eof = true;
                    if let Some(f) = on_eof.take() {
                        f();
                    }
                }
            }
        }
    })
    .await
}

/// Maps a failure in the client→server (`upstream`) or server→client flow to the side
/// at fault: a read failure is the source's, a write failure the destination's.
fn side(f: Fail, upstream: bool) -> TunnelEnd {
    match (f, upstream) {
        (Fail::Read, true) | (Fail::Write, false) => TunnelEnd::ClientError,
        (Fail::Read, false) | (Fail::Write, true) => TunnelEnd::ServerError,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    /// Inactivity `idle`, fin timeouts as long (they never shorten it).
    fn limits(idle: Duration) -> TunnelTimeouts {
        let ms = idle.as_millis() as u32;
        TunnelTimeouts {
            idle_ms: ms,
            client_fin_ms: ms,
            server_fin_ms: ms,
        }
    }

    /// Runs a tunnel and checks that its meter agrees with its report.
    async fn metered(
        client: TcpStream,
        client_early: Bytes,
        server: TcpStream,
        server_early: Bytes,
        idle: Duration,
    ) -> TunnelReport {
        let meter = Meter::default();
        let report = run(
            client,
            client_early,
            server,
            server_early,
            limits(idle),
            &meter,
        )
        .await;
        assert_eq!(meter.up.load(Relaxed), report.up);
        assert_eq!(meter.down.load(Relaxed), report.down);
        report
    }

    /// Two connected socket pairs: (client end, proxy's client side), (proxy's server
    /// side, server end).
    async fn pairs() -> (TcpStream, TcpStream, TcpStream, TcpStream) {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let a = TcpStream::connect(l.local_addr().unwrap()).await.unwrap();
        let (b, _) = l.accept().await.unwrap();
        let c = TcpStream::connect(l.local_addr().unwrap()).await.unwrap();
        let (d, _) = l.accept().await.unwrap();
        (a, b, c, d)
    }

    #[tokio::test]
    async fn early_bytes_first_then_both_ways_and_half_close() {
        let (mut client, proxy_c, proxy_s, mut server) = pairs().await;
        let task = tokio::spawn(metered(
            proxy_c,
            Bytes::from_static(b"early-up"),
            proxy_s,
            Bytes::from_static(b"early-down"),
            Duration::from_secs(5),
        ));
        let mut buf = [0u8; 10];
        client.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"early-down");
        let mut buf = [0u8; 8];
        server.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"early-up");
        client.write_all(b"hello").await.unwrap();
        let mut buf = [0u8; 5];
        server.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"hello");
        // Client half-closes; the server still gets to answer.
        client.shutdown().await.unwrap();
        let mut rest = Vec::new();
        server.read_to_end(&mut rest).await.unwrap();
        assert!(rest.is_empty());
        server.write_all(b"bye").await.unwrap();
        server.shutdown().await.unwrap();
        let mut got = Vec::new();
        client.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, b"bye");
        let report = task.await.unwrap();
        assert_eq!(report.end, TunnelEnd::Closed { client_first: true });
        assert_eq!((report.up, report.down), (13, 13));
    }

    /// A server that half-closes and goes quiet does not hold its client's tunnel for the
    /// tunnel timeout: `client-fin` (waiting for the client) ends it — on the socket path
    /// and the stream path.
    #[tokio::test]
    async fn a_half_closed_tunnel_ends_at_its_fin_timeout() {
        let fin = TunnelTimeouts {
            idle_ms: 3_600_000,
            client_fin_ms: 300,
            server_fin_ms: 3_600_000,
        };
        for stream in [false, true] {
            let (client, proxy_c, proxy_s, mut server) = pairs().await;
            let meter = Meter::default();
            let started = Instant::now();
            let tunnel = async {
                if stream {
                    run_stream(proxy_c, Bytes::new(), proxy_s, Bytes::new(), fin, &meter).await
                } else {
                    run(proxy_c, Bytes::new(), proxy_s, Bytes::new(), fin, &meter).await
                }
            };
            // The server sends its FIN; the client never answers and never closes.
            server.shutdown().await.unwrap();
            let report = tokio::time::timeout(Duration::from_secs(10), tunnel)
                .await
                .expect("the half-closed tunnel ended");
            assert_eq!(report.end, TunnelEnd::Timeout, "stream: {stream}");
            let took = started.elapsed();
            assert!(
                took >= Duration::from_millis(300),
                "stream: {stream}: ended after {took:?}, before client-fin"
            );
            drop(client);
        }
    }

    #[tokio::test]
    async fn large_transfers_with_a_slow_reader_lose_nothing() {
        let (mut client, proxy_c, proxy_s, mut server) = pairs().await;
        let task = tokio::spawn(metered(
            proxy_c,
            Bytes::new(),
            proxy_s,
            Bytes::new(),
            Duration::from_secs(5),
        ));
        let data: Vec<u8> = (0..8 * 1024 * 1024u32)
            .map(|i| (i * 31 % 251) as u8)
            .collect();
        let sent = data.clone();
        let writer = tokio::spawn(async move {
            client.write_all(&sent).await.unwrap();
            client.shutdown().await.unwrap();
            client
        });
        let mut got = Vec::new();
        let mut chunk = vec![0u8; 1000];
        loop {
            // A slow reader: small reads with pauses, so the proxy must hold back.
            let n = server.read(&mut chunk).await.unwrap();
            if n == 0 {
                break;
            }
            got.extend_from_slice(&chunk[..n]);
            if got.len() % 100_000 < 1000 {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        }
        assert!(got == data, "bytes changed or lost");
        server.shutdown().await.unwrap();
        drop(writer.await.unwrap());
        let report = task.await.unwrap();
        assert_eq!(report.up, data.len() as u64);
    }

    #[tokio::test(start_paused = true)]
    async fn idle_tunnel_times_out_but_activity_resets_the_clock() {
        let (mut client, proxy_c, proxy_s, mut server) = pairs().await;
        let task = tokio::spawn(metered(
            proxy_c,
            Bytes::new(),
            proxy_s,
            Bytes::new(),
            Duration::from_secs(3),
        ));
        for _ in 0..3 {
            tokio::time::sleep(Duration::from_secs(2)).await;
            client.write_all(b"x").await.unwrap();
            let mut b = [0u8; 1];
            server.read_exact(&mut b).await.unwrap();
        }
        assert!(!task.is_finished());
        let started = Instant::now();
        let report = task.await.unwrap();
        assert_eq!(report.end, TunnelEnd::Timeout);
        assert!(started.elapsed() >= Duration::from_secs(2));
    }

    /// The stream tunnel (TLS clients) keeps the same rules: early bytes first, both ways,
    /// half-close passed on, counted.
    #[tokio::test]
    async fn stream_tunnel_relays_and_passes_half_close() {
        let (client, proxy_c) = tokio::io::duplex(64 * 1024);
        let (_, _, proxy_s, mut server) = pairs().await;
        let meter = Arc::new(Meter::default());
        let m = meter.clone();
        let task = tokio::spawn(async move {
            run_stream(
                proxy_c,
                Bytes::from_static(b"up-early"),
                proxy_s,
                Bytes::from_static(b"down-early"),
                limits(Duration::from_secs(5)),
                &m,
            )
            .await
        });
        let (mut cr, mut cw) = tokio::io::split(client);
        let mut buf = [0u8; 10];
        cr.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"down-early");
        let mut buf = [0u8; 8];
        server.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"up-early");
        cw.write_all(b"ping").await.unwrap();
        cw.shutdown().await.unwrap();
        let mut got = Vec::new();
        server.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, b"ping", "client EOF reaches the server as EOF");
        server.write_all(b"pong").await.unwrap();
        server.shutdown().await.unwrap();
        let mut back = Vec::new();
        cr.read_to_end(&mut back).await.unwrap();
        assert_eq!(back, b"pong");
        let report = task.await.unwrap();
        assert_eq!(report.end, TunnelEnd::Closed { client_first: true });
        assert_eq!((report.up, report.down), (12, 14));
        assert_eq!(meter.up.load(Relaxed), 12);
    }

    /// A client slower than its server: what the client cannot take yet waits in the
    /// tunnel (reading the server pauses) and every byte arrives, in order.
    #[tokio::test]
    async fn stream_tunnel_holds_back_for_a_slow_client_and_loses_nothing() {
        // A 4 KiB pipe to the client: most of each 64 KiB read must wait.
        let (client, proxy_c) = tokio::io::duplex(4 * 1024);
        let (_, _, proxy_s, mut server) = pairs().await;
        let meter = Arc::new(Meter::default());
        let m = meter.clone();
        let task = tokio::spawn(async move {
            run_stream(
                proxy_c,
                Bytes::new(),
                proxy_s,
                Bytes::new(),
                limits(Duration::from_secs(5)),
                &m,
            )
            .await
        });
        let sent: Vec<u8> = (0..1_000_000u32).map(|i| (i % 251) as u8).collect();
        let body = sent.clone();
        let writer = tokio::spawn(async move {
            server.write_all(&body).await.unwrap();
            server.shutdown().await.unwrap();
            server
        });
        let (mut cr, mut cw) = tokio::io::split(client);
        let mut got = Vec::new();
        let mut chunk = [0u8; 1000];
        loop {
            let n = cr.read(&mut chunk).await.unwrap();
            if n == 0 {
                break;
            }
            got.extend_from_slice(&chunk[..n]);
            tokio::task::yield_now().await;
        }
        assert!(
            got == sent,
            "{} of {} bytes, in order",
            got.len(),
            sent.len()
        );
        cw.shutdown().await.unwrap();
        drop(writer.await.unwrap());
        let report = task.await.unwrap();
        assert_eq!(report.down, sent.len() as u64);
    }

    #[tokio::test(start_paused = true)]
    async fn stream_tunnel_times_out_when_idle() {
        let (_client, proxy_c) = tokio::io::duplex(1024);
        let (_, _, proxy_s, _server) = pairs().await;
        let started = tokio::time::Instant::now();
        let report = run_stream(
            proxy_c,
            Bytes::new(),
            proxy_s,
            Bytes::new(),
            limits(Duration::from_secs(30)),
            &Meter::default(),
        )
        .await;
        assert_eq!(report.end, TunnelEnd::Timeout);
        assert!(started.elapsed() >= Duration::from_secs(30));
    }
}
