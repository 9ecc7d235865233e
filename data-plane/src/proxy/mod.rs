//! The proxy: listeners and accept loops, and the request path by phase — the client
//! connection ([`conn`], [`io`]; a first request that is an upgrade, [`direct`]), routing ([`route`]), the upstream connection and
//! exchange ([`upstream`]; an upgrade's without an HTTP client, [`upgrade`]), the
//! per-request driver ([`request`]), and the tunnel session
//! ([`session`], bytes copied by [`tunnel`]); plus the access log ([`log`]), local
//! responses ([`error`]) and graceful stop ([`drain`]). Which runtimes accept and serve
//! connections, and the listening sockets each gets, is [`workers`]'s.
//!
//! [`Listeners::reconcile`] opens the binds a new plan adds *before* the plan is swapped
//! in (so a bind failure rejects the whole snapshot) and closes the binds it removes after
//! — connections already accepted on a closed bind live on.

pub mod busy;
pub mod conn;
pub mod direct;
pub mod drain;
pub mod error;
pub mod h2;
pub mod h2io;
pub mod h2stream;
pub mod h2watch;
pub mod io;
pub mod log;
pub mod request;
pub mod route;
pub mod session;
pub mod tunnel;
pub mod upgrade;
pub mod upstream;
pub mod workers;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use tokio::net::TcpListener;
use tokio::sync::oneshot;

use crate::config::{FrontendPlan, Plan};
use crate::counters::{FrontendCounters, Held};
pub use workers::Workers;

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

/// An open listener: its accept loops' stop signals and the address it got.
struct Active {
    _stop: Vec<oneshot::Sender<()>>,
    /// The configured address with the port the kernel chose when it was 0.
    bound: SocketAddr,
}

/// The listening sockets of a bind a new plan adds, opened but not accepting yet.
pub struct Opened {
    addr: SocketAddr,
    sockets: Vec<std::net::TcpListener>,
}

#[derive(Default)]
pub struct Listeners {
    /// By configured address.
    active: Mutex<HashMap<SocketAddr, Active>>,
    /// Set SO_REUSEPORT, so several node processes on one host can share binds (the
    /// kernel spreads connections among them) and a new node binary can start beside
    /// the old one.
    pub reuse_port: bool,
    /// The runtimes accept loops run on.
    workers: Workers,
}

impl Listeners {
    pub fn new(reuse_port: bool, workers: Workers) -> Self {
        Self {
            active: Mutex::default(),
            reuse_port,
            workers,
        }
    }

    /// Opens what `next` adds; on any failure closes what it opened and says why.
    /// Returns a commit function that starts the new accept loops and stops removed ones;
    /// call it right after the plan swap.
    pub fn prepare(&self, next: &Plan) -> Result<Vec<Opened>, BindError> {
        let active = self.active.lock().expect("listeners lock");
        let mut opened = Vec::new();
        let mut addrs: Vec<_> = next.binds.keys().copied().collect();
        addrs.sort();
        for addr in addrs {
            if active.contains_key(&addr) {
                continue;
            }
            match self.workers.bind(addr, self.reuse_port) {
                Ok(sockets) => opened.push(Opened { addr, sockets }),
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
    pub fn commit(&self, plan: &Plan, opened: Vec<Opened>, current: Arc<ArcSwap<Plan>>) {
        let mut active = self.active.lock().expect("listeners lock");
        active.retain(|addr, _| {
            let keep = plan.binds.contains_key(addr);
            if !keep {
                tracing::info!(%addr, "closing listener");
            }
            keep
        });
        for Opened { addr, sockets } in opened {
            let bound = sockets
                .first()
                .and_then(|s| s.local_addr().ok())
                .unwrap_or(addr);
            tracing::info!(%addr, %bound, sockets = sockets.len(), "listening");
            let mut stops = Vec::with_capacity(sockets.len());
            for (i, socket) in sockets.into_iter().enumerate() {
                let (stop_tx, stop_rx) = oneshot::channel();
                stops.push(stop_tx);
                let current = current.clone();
                // Registered with the runtime it will accept on.
                self.workers.spawn(i, async move {
                    match TcpListener::from_std(socket) {
                        Ok(listener) => accept_loop(listener, addr, current, stop_rx).await,
                        Err(error) => tracing::error!(%addr, %error, "cannot listen"),
                    }
                });
            }
            active.insert(
                addr,
                Active {
                    _stop: stops,
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
                () = wait_release(&counters) => {}
            }
            continue;
        }
        tokio::select! {
            // Fires when the sender is dropped (bind removed) or used.
            _ = &mut stop => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, src)) => {
                    busy::active();
                    // The connection keeps the bind it was accepted under (TLS, timeouts,
                    // limits); each request routes by the plan current when it comes.
                    let Some(bind) = plan.load().binds.get(&addr).cloned() else {
                        continue;
                    };
                    let current = route::CurrentPlan { plan: plan.clone(), addr };
                    // Counted from the accept, so the maxconn check above sees it at once.
                    let held = tokio::select! {
                        _ = &mut stop => break,
                        held = admit(&bind.frontend) => held,
                    };
                    // Boxed: tokio moves a task's future through several calls and
                    // copies it whole into its cell and again when it completes; a
                    // pointer is cheaper to move than the connection's state.
                    tokio::spawn(Box::pin(conn::serve_connection(stream, src, (bind, current), held)));
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

/// Counts an accepted connection in its frontend. Under `maxconn`, when other accept
/// loops on the same frontend (one per worker, or per bind) filled it meanwhile, the
/// connection waits, accepted but not served and not counted, until one closes.
async fn admit(fe: &FrontendPlan) -> Held<FrontendCounters> {
    loop {
        let held = Held::new(fe.counters.clone(), |c: &FrontendCounters| {
            &c.current_connections
        });
        match fe.maxconn {
            Some(max) if fe.counters.open_connections() > u64::from(max) => {
                // (A loop that saw this count meanwhile looks again within 100 ms.)
                drop(held);
                wait_release(&fe.counters).await;
            }
            _ => return held,
        }
    }
}

/// Until a connection of the frontend closes (or 100 ms: a release may have happened
/// before the wait began).
async fn wait_release(counters: &FrontendCounters) {
    let _ = tokio::time::timeout(Duration::from_millis(100), counters.released.notified()).await;
}
