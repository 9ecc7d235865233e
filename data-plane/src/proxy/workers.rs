//! Where the node's connections run, and the listening sockets that feed them.
//!
//! - [`Workers::Shared`] (`--runtime shared`): the runtime the node was started in —
//!   tokio's multi-thread scheduler, whose threads share one run queue and steal work
//!   from each other — with one listening socket per bind.
//! - [`Workers::PerCore`] (`--runtime per-core`, the node's default): one single-threaded runtime per worker
//!   thread, each with a listening socket of its own on every bind (`SO_REUSEPORT`: the
//!   kernel spreads new connections over them). A connection, its server connection and
//!   its tunnel then live and die on the thread that accepted it: no task moves between
//!   threads and no thread wakes another for it. The control stream, health checks and
//!   the admin listener run on the node's main thread; with one worker, that thread is
//!   also the worker, and the node a single thread.
//!
//! Each runtime that serves connections also runs [`anchor_timers`], and the busy poller
//! when the node was asked to poll (`--busy-polling`, [`super::busy`]).
//!
//! The workers' sockets share each port through `SO_REUSEPORT`, which would also let
//! another process of the same user bind it; unless `--reuse-port` asks for that, a port
//! someone else already listens on is refused as it is with a single socket.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;

use socket2::{Domain, Protocol, Socket, Type};
use tokio::runtime::Handle;

use super::busy::{self, BusyPolling};

/// Listen backlog for frontend binds.
const BACKLOG: i32 = 4096;

/// The runtimes that accept and serve connections.
#[derive(Clone, Default)]
pub enum Workers {
    /// The runtime current when a listener is started.
    #[default]
    Shared,
    /// One single-threaded runtime per thread, each accepting on its own sockets.
    PerCore(Arc<[Handle]>),
}

impl Workers {
    /// Starts `threads` threads, each running a single-threaded runtime until the
    /// process exits. With one, connections are served on `main` (the node's own
    /// single-threaded runtime) and the node is one thread, as HAProxy is with
    /// `nbthread 1`: the kernel then skips the reference counting of the file table that
    /// every system call on a socket pays in a multi-threaded process.
    ///
    /// With `busy`, each runtime that serves connections polls as it says (with one
    /// thread that is `main`, which must then have been built with [`busy::before_park`]
    /// as its park hook).
    pub fn per_core(threads: usize, main: &Handle, busy: Option<BusyPolling>) -> io::Result<Self> {
        if threads <= 1 {
            if let Some(mode) = busy {
                main.spawn(busy::poller(mode));
            }
            return Ok(Workers::PerCore(Arc::new([main.clone()])));
        }
        let mut handles = Vec::with_capacity(threads);
        for i in 0..threads {
            let mut builder = tokio::runtime::Builder::new_current_thread();
            if busy.is_some() {
                builder.on_thread_park(busy::before_park);
            }
            let runtime = builder.enable_all().build()?;
            handles.push(runtime.handle().clone());
            runtime.spawn(anchor_timers());
            if let Some(mode) = busy {
                runtime.spawn(busy::poller(mode));
            }
            std::thread::Builder::new()
                .name(format!("sluice-worker-{i}"))
                .spawn(move || runtime.block_on(std::future::pending::<()>()))?;
        }
        Ok(Workers::PerCore(handles.into()))
    }

    /// How many listening sockets each bind gets.
    pub fn sockets_per_bind(&self) -> usize {
        match self {
            Workers::Shared => 1,
            Workers::PerCore(handles) => handles.len(),
        }
    }

    /// Runs `task` on worker `i`'s runtime (the current one when shared).
    pub fn spawn<F>(&self, i: usize, task: F)
    where
        F: std::future::Future<Output = ()> + Send + 'static,
    {
        match self {
            Workers::Shared => drop(tokio::spawn(task)),
            Workers::PerCore(handles) => drop(handles[i % handles.len()].spawn(task)),
        }
    }

    /// Opens `addr`'s listening sockets, one per worker: when the port is 0, the others
    /// take the port the kernel gave the first. Several sockets share the port with
    /// `SO_REUSEPORT`, which `reuse_port` also sets for one (to share it with other
    /// processes).
    pub fn bind(
        &self,
        addr: SocketAddr,
        reuse_port: bool,
    ) -> io::Result<Vec<std::net::TcpListener>> {
        let n = self.sockets_per_bind();
        if n > 1 && !reuse_port && addr.port() != 0 {
            // Bound without SO_REUSEPORT, this fails if anyone else listens there.
            probe(addr)?;
        }
        let reuse_port = reuse_port || n > 1;
        let first = bind_one(addr, reuse_port)?;
        let bound = first.local_addr()?;
        let mut out = vec![first];
        for _ in 1..n {
            out.push(bind_one(bound, reuse_port)?);
        }
        Ok(out)
    }
}

/// Keeps a timer due within the next second on the current runtime, for as long as it
/// runs, so that registering the timers of connections costs no system call.
///
/// tokio's timer driver remembers when it promised to wake up next (`next_wake`, set
/// from the earliest timer when it parks) and, whenever a timer is registered that is
/// due before that, unparks the driver by writing to its eventfd, even from the thread
/// that runs it. With no timer due soon (only connections' timeouts, all seconds away,
/// most cancelled within milliseconds) nearly every registration was earlier than the
/// promise: the node wrote to the eventfd 2.4 times per upgrade (a connection's
/// `timeout http-request`, a tunnel's fin timeout) and its next `epoll_wait` returned at
/// once for it. With a timer always due within a second, a timeout of a second or more
/// is never earlier, and those writes are gone; the cost is one wake-up per second.
pub async fn anchor_timers() {
    let mut every = tokio::time::interval(std::time::Duration::from_secs(1));
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        every.tick().await;
    }
}

/// Binds `addr` without `SO_REUSEPORT`, and lets it go.
fn probe(addr: SocketAddr) -> io::Result<()> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    socket.bind(&addr.into())
}

fn bind_one(addr: SocketAddr, reuse_port: bool) -> io::Result<std::net::TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    // Accepted sockets inherit TCP_NODELAY from the listener: one system call per
    // connection saved.
    socket.set_tcp_nodelay(true)?;
    if reuse_port {
        socket.set_reuse_port(true)?;
    }
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(BACKLOG)?;
    Ok(socket.into())
}
