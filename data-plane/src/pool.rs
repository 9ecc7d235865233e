//! Idle keep-alive connections to one server, reused by later requests when the backend
//! does not use `http_server_close`.
//!
//! A connection goes back to the pool when its response body has been relayed in full,
//! waits at most [`PURGE_DELAY`] (HAProxy's `pool-purge-delay` default), and at most
//! [`MAX_IDLE`] wait per server. WebSocket upgrades never use pooled connections: a
//! connection that becomes a tunnel belongs to that tunnel alone.
//!
//! The plan holds one pool per server (so idle connections live with the plan that opened
//! them); the request path takes and returns connections (`proxy::upstream`).

use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use hyper::client::conn::http1::SendRequest;
use tokio::time::Instant;

use crate::body::ReqBody;

/// How long an idle server connection is kept.
pub const PURGE_DELAY: Duration = Duration::from_secs(5);
/// Idle connections kept per server.
pub const MAX_IDLE: usize = 64;

pub type Sender = SendRequest<ReqBody>;

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
