//! Graceful stop of a node: no new connections, open ones served to their end, and at
//! the drain deadline the tunnels still open are closed (and logged as such).
//!
//! Open tunnels are registered here by id with their task's abort handle; a registry lock
//! is taken once when a tunnel starts and once when it ends, never while bytes flow. The
//! registry is split in shards, one per thread that starts tunnels (up to [`SHARDS`]), so
//! that the node's workers, each starting its own connections' tunnels, do not contend
//! for one lock and one cache line; a tunnel's id names its shard, so it is removed from
//! the right one whichever thread it ends on. The count of requests in flight is kept in
//! the same shards.

use std::cell::Cell;
use std::collections::HashMap;
use std::future::Future;
use std::hash::{BuildHasherDefault, DefaultHasher};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::{Mutex, MutexGuard};

use futures_util::FutureExt;
use tokio::task::AbortHandle;

static DRAINING: AtomicBool = AtomicBool::new(false);

/// Registry shards (a power of two): more than a node has workers on most machines.
const SHARDS: usize = 16;

/// Ids are unique and ours: no need for a keyed hash.
type Ids = BuildHasherDefault<DefaultHasher>;

/// One shard, on a cache line of its own.
#[repr(align(128))]
struct Shard {
    tunnels: Mutex<HashMap<u64, AbortHandle, Ids>>,
    /// Requests being served (from head received to response head produced) that began
    /// on this shard's thread.
    in_flight: AtomicU64,
}

impl Shard {
    const fn new() -> Self {
        Shard {
            tunnels: Mutex::new(HashMap::with_hasher(BuildHasherDefault::new())),
            in_flight: AtomicU64::new(0),
        }
    }
}

/// The shards (tunnels and requests in flight); constant-initialised, so using them
/// costs no initialisation check.
static SHARD: [Shard; SHARDS] = [const { Shard::new() }; SHARDS];
static NEXT_SHARD: AtomicUsize = AtomicUsize::new(0);

/// No shard assigned to this thread yet.
const UNASSIGNED: usize = usize::MAX;

thread_local! {
    /// This thread's shard, assigned at its first use.
    static LOCAL_SHARD: Cell<usize> = const { Cell::new(UNASSIGNED) };
    /// The sequence this thread's tunnel ids are drawn from.
    static LOCAL_SEQ: Cell<u64> = const { Cell::new(0) };
    /// The tunnel this thread is spawning (`NO_TUNNEL`: none), and whether its task ended
    /// inside that spawn.
    static SPAWNING: Cell<(u64, bool)> = const { Cell::new((NO_TUNNEL, false)) };
}

/// No tunnel id (ids count up from 0 per thread, never this far).
const NO_TUNNEL: u64 = u64::MAX;

/// This thread's shard.
fn local_shard() -> usize {
    LOCAL_SHARD.with(|shard| {
        if shard.get() == UNASSIGNED {
            shard.set(NEXT_SHARD.fetch_add(1, Relaxed) % SHARDS);
        }
        shard.get()
    })
}

/// The tunnels of the shard of tunnel `id`: its low bits.
fn shard(id: u64) -> MutexGuard<'static, HashMap<u64, AbortHandle, Ids>> {
    SHARD[id as usize % SHARDS]
        .tunnels
        .lock()
        .expect("tunnel registry")
}

/// A new tunnel id, in this thread's shard: the shard in the low bits, a per-thread
/// sequence above them.
fn next_id() -> u64 {
    let n = LOCAL_SEQ.with(|seq| seq.replace(seq.get() + 1));
    (n * SHARDS as u64) | local_shard() as u64
}

/// Whether the node is stopping: responses then close their client connection.
pub fn is_draining() -> bool {
    DRAINING.load(Relaxed)
}

pub fn start() {
    DRAINING.store(true, Relaxed);
}

/// Counts a request in flight until dropped, in the shard of the thread it began on
/// (and taken off that shard's count wherever it ends, so no count goes below zero).
pub struct InFlight(u8);

impl InFlight {
    pub fn begin() -> Self {
        let shard = local_shard();
        SHARD[shard].in_flight.fetch_add(1, Relaxed);
        Self(shard as u8)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        SHARD[self.0 as usize].in_flight.fetch_sub(1, Relaxed);
    }
}

/// Runs a tunnel task, registered so a drain can close it.
pub fn spawn_tunnel<F>(task: F)
where
    F: Future<Output = ()> + Send + 'static,
{
    let id = next_id();
    // Held across the spawn, so the task cannot deregister before it is registered.
    let mut open = shard(id);
    SPAWNING.set((id, false));
    // Boxed, as a connection's task is (`accept_loop`): fewer copies of its state.
    let handle = tokio::spawn(registered(Box::pin(task), id));
    // A runtime shutting down drops a new task inside `spawn`: it is gone already.
    let (_, ended) = SPAWNING.replace((NO_TUNNEL, false));
    if !ended {
        open.insert(id, handle.abort_handle());
    }
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
        // Dropped inside its own spawn (by a runtime shutting down): this thread holds
        // the shard's lock and has not registered it, so there is nothing to remove.
        let in_own_spawn = SPAWNING.with(|s| {
            let (id, _) = s.get();
            (id == self.0).then(|| s.set((id, true))).is_some()
        });
        if !in_own_spawn {
            shard(self.0).remove(&self.0);
        }
    }
}

/// Tunnels open now.
pub fn open_tunnels() -> usize {
    SHARD
        .iter()
        .map(|s| s.tunnels.lock().expect("tunnel registry").len())
        .sum()
}

/// Requests being served now.
pub fn in_flight() -> u64 {
    SHARD.iter().map(|s| s.in_flight.load(Relaxed)).sum()
}

/// Closes every open tunnel; returns how many there were.
pub fn close_tunnels() -> usize {
    let mut closed = 0;
    for shard in SHARD.iter() {
        let open = shard.tunnels.lock().expect("tunnel registry");
        for h in open.values() {
            h.abort();
        }
        closed += open.len();
    }
    closed
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::time::Duration;

    #[test]
    fn each_thread_draws_ids_from_a_shard_of_its_own() {
        let on = || {
            std::thread::spawn(|| (next_id(), next_id()))
                .join()
                .unwrap()
        };
        let (a1, a2) = on();
        let (b1, b2) = on();
        assert_eq!(a1 % SHARDS as u64, a2 % SHARDS as u64);
        assert_ne!(a1 % SHARDS as u64, b1 % SHARDS as u64);
        assert_ne!(a1, a2);
        assert_ne!(b1, b2);
    }

    #[test]
    fn a_request_ending_on_another_thread_leaves_its_own_shard() {
        let request = std::thread::spawn(InFlight::begin).join().unwrap();
        let shard = request.0 as usize;
        let before = SHARD[shard].in_flight.load(Relaxed);
        assert!(before >= 1);
        assert!(in_flight() >= 1);
        drop(request);
        assert_eq!(SHARD[shard].in_flight.load(Relaxed), before - 1);
    }

    /// A runtime shutting down drops the tasks it still holds; one whose drop starts a
    /// tunnel has that tunnel dropped inside `spawn`, while the registry's lock is held.
    /// It once deadlocked there; it must neither hang nor leave an entry behind.
    #[test]
    fn a_tunnel_started_while_its_runtime_shuts_down_is_not_left_registered() {
        struct StartsTunnelOnDrop;
        impl Drop for StartsTunnelOnDrop {
            fn drop(&mut self) {
                spawn_tunnel(std::future::pending::<()>());
            }
        }
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .build()
                .unwrap();
            rt.block_on(async {
                tokio::spawn(async move {
                    let _guard = StartsTunnelOnDrop;
                    std::future::pending::<()>().await;
                });
                tokio::task::yield_now().await;
            });
            // The id the tunnel started at the runtime's drop gets (this thread's next).
            let id = next_id() + SHARDS as u64;
            drop(rt);
            let started = next_id() == id + SHARDS as u64;
            let registered = shard(id).contains_key(&id);
            let _ = tx.send((started, registered));
        });
        let (started, registered) = rx
            .recv_timeout(Duration::from_secs(10))
            .expect("the runtime's drop returned (no deadlock)");
        assert!(started, "the tunnel was started during the runtime's drop");
        assert!(
            !registered,
            "a tunnel dropped at its start is left registered"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn tunnels_started_on_several_threads_are_counted_and_closed() {
        struct Ended(Arc<AtomicUsize>);
        impl Drop for Ended {
            fn drop(&mut self) {
                self.0.fetch_add(1, Relaxed);
            }
        }
        let ended = Arc::new(AtomicUsize::new(0));
        for _ in 0..3 {
            let (handle, ended) = (tokio::runtime::Handle::current(), ended.clone());
            std::thread::spawn(move || {
                let _entered = handle.enter();
                let guard = Ended(ended);
                spawn_tunnel(async move {
                    let _guard = guard;
                    std::future::pending::<()>().await;
                });
            })
            .join()
            .unwrap();
        }
        // Other tests of this binary may hold tunnels of their own: at least ours.
        assert!(open_tunnels() >= 3, "{} open", open_tunnels());
        assert!(close_tunnels() >= 3);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while ended.load(Relaxed) < 3 {
            assert!(tokio::time::Instant::now() < deadline, "tunnels not closed");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}
