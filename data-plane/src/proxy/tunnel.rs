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

use super::busy;
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
    /// `last`: the other direction is done, so passing on EOF ends the tunnel.
    fn flush(&mut self, to: &TcpStream, last: bool) -> Result<bool, Fail> {
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
        self.pass_eof(to, last);
        Ok(moved)
    }

    /// Shuts `to`'s write side once the source's EOF is reached and everything before it
    /// written. When this ends the tunnel (`last`: `to` already sent its own EOF and it
    /// was passed on), the socket is about to be closed, and the close sends the FIN: its
    /// receive queue is empty (its EOF was read), so no reset is sent instead, and the
    /// `shutdown` call is saved.
    fn pass_eof(&mut self, to: &TcpStream, last: bool) {
        if self.eof && !self.shut && !self.has_pending() {
            if !last {
                let _ = socket2::SockRef::from(to).shutdown(Shutdown::Write);
            }
            self.shut = true;
        }
    }

    /// Moves what `from` has to `to`: `Ready(Ok(true))` if bytes moved or EOF was seen,
    /// `Pending` once `from` has nothing (this task is then woken when it has). `last`, as
    /// for [`Flow::flush`].
    ///
    /// Reads go through `AsyncRead::poll_read`, which treats a short read as "drained"
    /// and clears readiness without the extra `EAGAIN` read `try_read` would need.
    fn pump(
        &mut self,
        cx: &mut Context<'_>,
        from: &mut TcpStream,
        to: &TcpStream,
        last: bool,
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
                    self.pass_eof(to, last);
                    return Poll::Ready(Ok(true));
                }
                moved = true;
                busy::active();
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
                    let last = if upstream { down.done() } else { up.done() };
                    let (flow, from, to) = if upstream {
                        (&mut up, &mut client, &server)
                    } else {
                        (&mut down, &mut server, &client)
                    };
                    if flow.has_pending() {
                        match to.poll_write_ready(cx) {
                            Poll::Ready(Ok(())) => {
                                ready = true;
                                match flow.flush(to, last) {
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
                        match flow.pump(cx, from, to, last) {
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
                Poll::Ready(Ok(true)) => {
                    busy::active();
                    touch();
                }
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
mod tests;
