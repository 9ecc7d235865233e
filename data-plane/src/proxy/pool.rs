//! Idle keep-alive connections to one server, reused by later requests when the backend
//! does not use `http_server_close`.
//!
//! A connection goes back to the pool when its response body has been relayed in full,
//! waits at most [`PURGE_DELAY`] (HAProxy's `pool-purge-delay` default), and at most
//! [`MAX_IDLE`] wait per server. WebSocket upgrades never use pooled connections: a
//! connection that becomes a tunnel belongs to that tunnel alone.

use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::client::conn::http1::SendRequest;
use tokio::time::Instant;

use crate::stats::{Held, ServerCounters};

/// How long an idle server connection is kept.
pub const PURGE_DELAY: Duration = Duration::from_secs(5);
/// Idle connections kept per server.
pub const MAX_IDLE: usize = 64;

pub type Sender = SendRequest<Incoming>;

#[derive(Debug, Default)]
pub struct Pool {
    idle: Mutex<Vec<(Sender, Instant)>>,
    janitor: AtomicBool,
}

impl Pool {
    /// The most recently used idle connection that is still open.
    pub fn take(&self) -> Option<Sender> {
        let mut idle = self.idle.lock().expect("pool lock");
        let now = Instant::now();
        while let Some((s, since)) = idle.pop() {
            if !s.is_closed() && now.duration_since(since) < PURGE_DELAY {
                return Some(s);
            }
        }
        None
    }

    /// Returns a connection whose exchange is complete.
    pub fn put(self: &Arc<Self>, s: Sender) {
        if s.is_closed() {
            return;
        }
        {
            let mut idle = self.idle.lock().expect("pool lock");
            if idle.len() >= MAX_IDLE {
                return;
            }
            idle.push((s, Instant::now()));
        }
        if !self.janitor.swap(true, Relaxed) {
            tokio::spawn(janitor(Arc::downgrade(self)));
        }
    }

    /// Drops expired and closed connections; true when none is left.
    fn purge(&self) -> bool {
        let mut idle = self.idle.lock().expect("pool lock");
        let now = Instant::now();
        idle.retain(|(s, since)| !s.is_closed() && now.duration_since(*since) < PURGE_DELAY);
        idle.is_empty()
    }
}

/// Closes idle connections past the purge delay; runs while the pool has any.
async fn janitor(pool: Weak<Pool>) {
    loop {
        tokio::time::sleep(PURGE_DELAY).await;
        let Some(pool) = pool.upgrade() else { return };
        if pool.purge() {
            pool.janitor.store(false, Relaxed);
            // A connection put back between the purge and the store found the flag still
            // set and started no janitor: keep watching unless another one took over.
            if pool.purge() || pool.janitor.swap(true, Relaxed) {
                return;
            }
        }
    }
}

/// A server's response body on a pooled connection: relays the frames and gives the
/// connection back to the pool once the body has ended.
pub struct PooledBody {
    inner: Incoming,
    back: Option<(Sender, Arc<Pool>)>,
    /// The server's connection count, held until the body has been relayed.
    _held: Held<ServerCounters>,
}

impl PooledBody {
    pub fn new(
        inner: Incoming,
        sender: Sender,
        pool: Arc<Pool>,
        held: Held<ServerCounters>,
    ) -> Self {
        let mut body = Self {
            inner,
            back: Some((sender, pool)),
            _held: held,
        };
        // A body that is already complete may never be polled.
        if body.inner.is_end_stream() {
            body.release();
        }
        body
    }

    fn release(&mut self) {
        if let Some((s, pool)) = self.back.take() {
            pool.put(s);
        }
    }
}

impl Body for PooledBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let r = Pin::new(&mut self.inner).poll_frame(cx);
        match &r {
            // A writer that knows the length stops polling after the last byte, so the
            // end is also recognised right after the last frame.
            Poll::Ready(None) => self.release(),
            Poll::Ready(Some(Ok(_))) if self.inner.is_end_stream() => self.release(),
            Poll::Ready(Some(Err(_))) => self.back = None,
            _ => {}
        }
        r
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
