//! Graceful stop of a node: no new connections, open ones served to their end, and at
//! the drain deadline the tunnels still open are closed (and logged as such).
//!
//! Open tunnels are registered here by id with their task's abort handle; the registry
//! lock is taken once when a tunnel starts and once when it ends, never while bytes flow.

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{LazyLock, Mutex};

use futures_util::FutureExt;
use tokio::task::AbortHandle;

static DRAINING: AtomicBool = AtomicBool::new(false);
/// Requests being served (from head received to response head produced).
static IN_FLIGHT: AtomicU64 = AtomicU64::new(0);
static NEXT_ID: AtomicU64 = AtomicU64::new(0);
static TUNNELS: LazyLock<Mutex<HashMap<u64, AbortHandle>>> = LazyLock::new(Mutex::default);

/// Whether the node is stopping: responses then close their client connection.
pub fn is_draining() -> bool {
    DRAINING.load(Relaxed)
}

pub fn start() {
    DRAINING.store(true, Relaxed);
}

/// Counts a request in flight until dropped.
pub struct InFlight(());

impl InFlight {
    pub fn begin() -> Self {
        IN_FLIGHT.fetch_add(1, Relaxed);
        Self(())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        IN_FLIGHT.fetch_sub(1, Relaxed);
    }
}

/// Runs a tunnel task, registered so a drain can close it.
pub fn spawn_tunnel<F>(task: F)
where
    F: Future<Output = ()> + Send + 'static,
{
    let id = NEXT_ID.fetch_add(1, Relaxed);
    // Held across the spawn, so the task cannot deregister before it is registered.
    let mut open = TUNNELS.lock().expect("tunnel registry");
    let handle = tokio::spawn(registered(task, id));
    open.insert(id, handle.abort_handle());
}

/// `task`, deregistered when it ends or is aborted. Not an `async` block awaiting
/// `task`: that would hold the task's state twice (the captured future and the one being
/// awaited), doubling the memory of every idle tunnel.
pub(crate) fn registered<F>(task: F, id: u64) -> impl Future<Output = ()> + Send + 'static
where
    F: Future<Output = ()> + Send + 'static,
{
    let registered = Registered(id);
    task.map(move |()| drop(registered))
}

struct Registered(u64);

impl Drop for Registered {
    fn drop(&mut self) {
        TUNNELS.lock().expect("tunnel registry").remove(&self.0);
    }
}

/// Tunnels open now.
pub fn open_tunnels() -> usize {
    TUNNELS.lock().expect("tunnel registry").len()
}

/// Requests being served now.
pub fn in_flight() -> u64 {
    IN_FLIGHT.load(Relaxed)
}

/// Closes every open tunnel; returns how many there were.
pub fn close_tunnels() -> usize {
    let open = TUNNELS.lock().expect("tunnel registry");
    for h in open.values() {
        h.abort();
    }
    open.len()
}
