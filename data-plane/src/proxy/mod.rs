//! The proxy: listeners and accept loops, and the request path by phase — the client
//! connection ([`conn`], [`io`]), routing ([`route`]), the upstream connection and
//! exchange ([`upstream`]; an upgrade's without an HTTP client, [`upgrade`]), the
//! per-request driver ([`request`]), and the tunnel session
//! ([`session`], bytes copied by [`tunnel`]); plus the access log ([`log`]), local
//! responses ([`error`]) and graceful stop ([`drain`]).
//!
//! [`Listeners::reconcile`] opens the binds a new plan adds *before* the plan is swapped
//! in (so a bind failure rejects the whole snapshot) and closes the binds it removes after
//! — connections already accepted on a closed bind live on.

pub mod conn;
pub mod drain;
pub mod error;
pub mod h2;
pub mod h2watch;
pub mod io;
pub mod log;
pub mod request;
pub mod route;
pub mod session;
pub mod tunnel;
pub mod upgrade;
pub mod upstream;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use tokio::net::{TcpListener, TcpSocket};
use tokio::sync::oneshot;

use crate::config::Plan;
use crate::counters::{FrontendCounters, Held};

/// Response body type of the proxy.
pub type Body = BoxBody<Bytes, hyper::Error>;

/// A listener a plan needs could not be opened.
#[derive(Debug, thiserror::Error)]
#[error("frontend {frontend}: cannot bind {address}: {error}")]
pub struct BindError {
    pub frontend: String,
    pub address: SocketAddr,
    pub error: std::io::Error,
}

/// Listen backlog for frontend binds.
const BACKLOG: u32 = 4096;

/// An open listener: its accept loop's stop signal and the address it got.
struct Active {
    _stop: oneshot::Sender<()>,
    /// The configured address with the port the kernel chose when it was 0.
    bound: SocketAddr,
}

#[derive(Default)]
pub struct Listeners {
    /// By configured address.
    active: Mutex<HashMap<SocketAddr, Active>>,
    /// Set SO_REUSEPORT, so several node processes on one host can share binds (the
    /// kernel spreads connections among them) and a new node binary can start beside
    /// the old one.
    pub reuse_port: bool,
}

fn bind(addr: SocketAddr, reuse_port: bool) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    // Accepted sockets inherit TCP_NODELAY from the listener: one syscall per
    // connection saved.
    socket.set_nodelay(true)?;
    if reuse_port {
        socket.set_reuseport(true)?;
    }
    socket.bind(addr)?;
    socket.listen(BACKLOG)
}

impl Listeners {
    pub fn new(reuse_port: bool) -> Self {
        Self {
            active: Mutex::default(),
            reuse_port,
        }
    }

    /// Opens what `next` adds; on any failure closes what it opened and says why.
    /// Returns a commit function that starts the new accept loops and stops removed ones;
    /// call it right after the plan swap.
    pub fn prepare(&self, next: &Plan) -> Result<Vec<(SocketAddr, TcpListener)>, BindError> {
        let active = self.active.lock().expect("listeners lock");
        let mut opened = Vec::new();
        let mut addrs: Vec<_> = next.binds.keys().copied().collect();
        addrs.sort();
        for addr in addrs {
            if active.contains_key(&addr) {
                continue;
            }
            match bind(addr, self.reuse_port) {
                Ok(l) => opened.push((addr, l)),
                Err(error) => {
                    return Err(BindError {
                        frontend: next.binds[&addr].frontend.name.to_string(),
                        address: addr,
                        error,
                    });
                }
            }
        }
        Ok(opened)
    }

    /// Stops every accept loop and closes the listening sockets; accepted connections
    /// live on.
    pub fn close_all(&self) {
        let mut active = self.active.lock().expect("listeners lock");
        for addr in active.keys() {
            tracing::info!(%addr, "closing listener");
        }
        active.clear();
    }

    /// Starts accept loops for `opened` and stops the loops of binds `plan` no longer has.
    pub fn commit(
        &self,
        plan: &Plan,
        opened: Vec<(SocketAddr, TcpListener)>,
        current: Arc<ArcSwap<Plan>>,
    ) {
        let mut active = self.active.lock().expect("listeners lock");
        active.retain(|addr, _| {
            let keep = plan.binds.contains_key(addr);
            if !keep {
                tracing::info!(%addr, "closing listener");
            }
            keep
        });
        for (addr, listener) in opened {
            let (stop_tx, stop_rx) = oneshot::channel();
            let bound = listener.local_addr().unwrap_or(addr);
            tracing::info!(%addr, %bound, "listening");
            tokio::spawn(accept_loop(listener, addr, current.clone(), stop_rx));
            active.insert(
                addr,
                Active {
                    _stop: stop_tx,
                    bound,
                },
            );
        }
    }

    /// Every open listener: its configured address and the address it is bound to
    /// (they differ when the configured port is 0: the kernel picked one).
    pub fn bound(&self) -> Vec<(SocketAddr, SocketAddr)> {
        let active = self.active.lock().expect("listeners lock");
        let mut out: Vec<_> = active.iter().map(|(a, l)| (*a, l.bound)).collect();
        out.sort();
        out
    }
}

async fn accept_loop(
    listener: TcpListener,
    addr: SocketAddr,
    plan: Arc<ArcSwap<Plan>>,
    mut stop: oneshot::Receiver<()>,
) {
    loop {
        // maxconn: while the frontend is full, stop accepting; the kernel queues new
        // connections in the listen backlog, as with HAProxy.
        let full = plan.load().binds.get(&addr).and_then(|b| {
            let fe = &b.frontend;
            let max = u64::from(fe.maxconn?);
            (fe.counters.open_connections() >= max).then(|| fe.counters.clone())
        });
        if let Some(counters) = full {
            tokio::select! {
                _ = &mut stop => break,
                // The timeout covers a release that happened before we started waiting.
                _ = tokio::time::timeout(Duration::from_millis(100), counters.released.notified()) => {}
            }
            continue;
        }
        tokio::select! {
            // Fires when the sender is dropped (bind removed) or used.
            _ = &mut stop => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, src)) => {
                    // The connection keeps the bind it was accepted under (TLS, timeouts,
                    // limits); each request routes by the plan current when it comes.
                    let Some(bind) = plan.load().binds.get(&addr).cloned() else {
                        continue;
                    };
                    let current = route::CurrentPlan { plan: plan.clone(), addr };
                    // Counted from the accept, so the maxconn check above sees it at once.
                    let held = Held::new(bind.frontend.counters.clone(), |c: &FrontendCounters| {
                        &c.current_connections
                    });
                    tokio::spawn(conn::serve_connection(stream, src, (bind, current), held));
                }
                Err(e) => {
                    // Typically EMFILE: back off instead of spinning.
                    tracing::warn!(%addr, error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    }
}
