//! `timeout http-request` on an HTTP/2 connection. The `h2` crate surfaces a stream only
//! once its whole header block arrived, and a header block in progress holds the whole
//! connection (RFC 9113 §6.10: nothing else may come between HEADERS and its last
//! CONTINUATION), so a client that trickles or stalls one is invisible to the service and
//! blocks every other stream. [`HeadWatch`] reads the client's frame headers as they pass
//! (lengths, types and flags only; payloads are skipped, never copied) and records since
//! when a header block — or the connection preface, or a frame header split across reads —
//! has been in progress, so the connection's driver can close it when that exceeds
//! `timeout http-request`, as the HTTP/1.1 path answers a late head with 408.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::h2::PREFACE;

const HEADERS: u8 = 0x1;
const CONTINUATION: u8 = 0x9;
const END_HEADERS: u8 = 0x4;

/// Since when the connection has been waiting for the rest of a head, shared between
/// [`HeadWatch`] and the connection's driver.
#[derive(Debug)]
pub struct HeadClock {
    epoch: Instant,
    /// Microseconds after `epoch` plus one; 0: nothing pending.
    since: AtomicU64,
}

impl HeadClock {
    /// A clock for a connection accepted at `epoch`; the preface is pending from then.
    pub fn new(epoch: Instant) -> Arc<HeadClock> {
        Arc::new(HeadClock {
            epoch,
            since: AtomicU64::new(1),
        })
    }

    /// Since when a head has been pending, if one is.
    pub fn pending_since(&self) -> Option<Instant> {
        match self.since.load(Relaxed) {
            0 => None,
            us => Some(self.epoch + std::time::Duration::from_micros(us - 1)),
        }
    }

    fn set(&self, pending: bool) {
        let now = self.since.load(Relaxed);
        if pending && now == 0 {
            let us = self.epoch.elapsed().as_micros() as u64;
            self.since.store(us + 1, Relaxed);
        } else if !pending && now != 0 {
            self.since.store(0, Relaxed);
        }
    }
}

/// Where the reader is in the client's byte stream.
#[derive(Debug, Clone, Copy)]
enum At {
    /// Inside the connection preface, this many bytes in.
    Preface(usize),
    /// Inside a frame header, this many of its nine bytes in.
    FrameHead([u8; 9], usize),
    /// Inside a frame's payload: bytes left, and whether a header block is open.
    Payload(usize),
}

/// The frame walker, apart from the I/O so it can be tested on byte slices.
#[derive(Debug)]
struct Walker {
    at: At,
    /// A HEADERS frame without END_HEADERS was seen and its last CONTINUATION was not.
    in_block: bool,
    /// The frame being read ends a header block.
    ends_block: bool,
}

impl Walker {
    fn new() -> Walker {
        Walker {
            at: At::Preface(0),
            in_block: false,
            ends_block: false,
        }
    }

    /// Walks `bytes`, the next bytes from the client.
    fn feed(&mut self, mut bytes: &[u8]) {
        while !bytes.is_empty() {
            match &mut self.at {
                At::Preface(got) => {
                    let n = (PREFACE.len() - *got).min(bytes.len());
                    *got += n;
                    bytes = &bytes[n..];
                    if *got == PREFACE.len() {
                        self.at = At::FrameHead([0; 9], 0);
                    }
                }
                At::FrameHead(head, got) => {
                    let n = (9 - *got).min(bytes.len());
                    head[*got..*got + n].copy_from_slice(&bytes[..n]);
                    *got += n;
                    bytes = &bytes[n..];
                    if *got == 9 {
                        let head = *head;
                        let len = u32::from_be_bytes([0, head[0], head[1], head[2]]) as usize;
                        let (kind, flags) = (head[3], head[4]);
                        self.ends_block = false;
                        if kind == HEADERS || kind == CONTINUATION {
                            self.in_block = true;
                            self.ends_block = flags & END_HEADERS != 0;
                        }
                        self.at = At::Payload(len);
                        self.end_of_payload();
                    }
                }
                At::Payload(left) => {
                    let n = (*left).min(bytes.len());
                    *left -= n;
                    bytes = &bytes[n..];
                    self.end_of_payload();
                }
            }
        }
    }

    fn end_of_payload(&mut self) {
        if let At::Payload(0) = self.at {
            if self.ends_block {
                self.in_block = false;
                self.ends_block = false;
            }
            self.at = At::FrameHead([0; 9], 0);
        }
    }

    /// Whether the client owes the rest of a head: the preface, a frame header, or a
    /// header block.
    fn pending(&self) -> bool {
        match self.at {
            At::Preface(_) => true,
            At::FrameHead(_, got) => got > 0 || self.in_block,
            At::Payload(_) => self.in_block,
        }
    }
}

/// The client side of an HTTP/2 connection, watched for heads in progress.
pub struct HeadWatch<S> {
    inner: S,
    walker: Walker,
    clock: Arc<HeadClock>,
}

impl<S> HeadWatch<S> {
    pub fn new(inner: S, clock: Arc<HeadClock>) -> HeadWatch<S> {
        HeadWatch {
            inner,
            walker: Walker::new(),
            clock,
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for HeadWatch<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        let before = buf.filled().len();
        let r = Pin::new(&mut this.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = r {
            this.walker.feed(&buf.filled()[before..]);
            this.clock.set(this.walker.pending());
        }
        r
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for HeadWatch<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
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

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(kind: u8, flags: u8, len: usize) -> Vec<u8> {
        let mut f = vec![
            (len >> 16) as u8,
            (len >> 8) as u8,
            len as u8,
            kind,
            flags,
            0,
            0,
            0,
            1,
        ];
        f.resize(9 + len, 0xab);
        f
    }

    #[test]
    fn a_head_is_pending_from_its_first_byte_to_its_end_whatever_the_read_boundaries() {
        let mut bytes = PREFACE.to_vec();
        let settings = frame(0x4, 0, 6);
        bytes.extend(&settings);
        let after_settings = bytes.len();
        bytes.extend(frame(HEADERS, 0, 10)); // no END_HEADERS
        bytes.extend(frame(CONTINUATION, 0, 3));
        bytes.extend(frame(CONTINUATION, END_HEADERS, 4));
        let after_block = bytes.len();
        bytes.extend(frame(0x0, 0, 20)); // DATA
        bytes.extend(frame(HEADERS, END_HEADERS | 0x1, 5));
        // Pending after each byte fed, fed one byte at a time and in one slice.
        for chunk in [1, 7, bytes.len()] {
            let mut w = Walker::new();
            let mut seen = Vec::new();
            for piece in bytes.chunks(chunk) {
                w.feed(piece);
                seen.push(w.pending());
            }
            let last = *seen.last().unwrap();
            assert!(!last, "chunk {chunk}: nothing owed at the end");
            if chunk == 1 {
                assert!(seen[..PREFACE.len() - 1].iter().all(|p| *p), "the preface");
                assert!(!seen[after_settings - 1], "between frames");
                assert!(
                    seen[after_settings..after_block - 1].iter().all(|p| *p),
                    "the block"
                );
                assert!(!seen[after_block - 1]);
                // The DATA frame's payload is not a head; its frame header is while split.
                assert!(seen[after_block]);
                assert!(!seen[after_block + 9]);
            }
        }
    }

    #[test]
    fn the_clock_keeps_the_start_of_what_is_pending() {
        let clock = HeadClock::new(Instant::now());
        let first = clock.pending_since().unwrap();
        clock.set(true);
        assert_eq!(clock.pending_since(), Some(first));
        clock.set(false);
        assert_eq!(clock.pending_since(), None);
        std::thread::sleep(std::time::Duration::from_millis(2));
        clock.set(true);
        assert!(clock.pending_since().unwrap() > first);
    }
}
