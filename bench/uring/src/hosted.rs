//! The relay's ring hosted in tokio's current-thread runtime, as a tokio program would
//! add io_uring: tokio accepts and connects, the ring relays. tokio's epoll watches an
//! eventfd the ring signals when completions are due; each wake-up enters the ring
//! (running its deferred completions, submitting what they led to) until it has nothing
//! more to report.

use std::cell::RefCell;
use std::net::SocketAddr;
use std::os::fd::{FromRawFd, IntoRawFd, OwnedFd};
use std::rc::Rc;

use anyhow::Context as _;
use io_uring::IoUring;
use tokio::io::unix::AsyncFd;

use crate::relay::Relay;

/// `io_uring_enter`'s flag to reap completions (and run deferred ones).
const IORING_ENTER_GETEVENTS: u32 = 1;

struct Engine {
    ring: IoUring,
    relay: Relay,
    done: Vec<(u64, i32, u32)>,
}

impl Engine {
    /// Submits what is queued and handles the completions that follow, until none come.
    fn pass(&mut self) -> std::io::Result<()> {
        loop {
            crate::queue(&mut self.ring, &mut self.relay)?;
            let to_submit = self.ring.submission().len() as u32;
            // SAFETY: no argument pointer is passed; GETEVENTS with no minimum runs the
            // ring's deferred completions without waiting.
            unsafe {
                self.ring.submitter().enter::<libc::sigset_t>(
                    to_submit,
                    0,
                    IORING_ENTER_GETEVENTS,
                    None,
                )?
            };
            if crate::reap(&mut self.ring, &mut self.relay, &mut self.done) == 0 {
                return Ok(());
            }
        }
    }
}

pub fn run(listen: SocketAddr, backends: Vec<String>) -> anyhow::Result<()> {
    let backends = backends
        .iter()
        .map(|b| b.parse().context(b.clone()))
        .collect::<anyhow::Result<Vec<SocketAddr>>>()?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()?;
    let local = tokio::task::LocalSet::new();
    local.block_on(&runtime, async move {
        let (ring, relay) = crate::ring(-1, Vec::new())?;
        // SAFETY: a plain system call; the descriptor is owned right after.
        let eventfd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
        anyhow::ensure!(eventfd >= 0, "eventfd: {}", std::io::Error::last_os_error());
        // SAFETY: a new descriptor, owned by nothing else.
        let eventfd = unsafe { OwnedFd::from_raw_fd(eventfd) };
        ring.submitter()
            .register_eventfd(std::os::fd::AsRawFd::as_raw_fd(&eventfd))?;
        // SAFETY: the `OwnedFd` is moved into the `AsyncFd` and closed only with it.
        let wake = unsafe { AsyncFd::register(eventfd) }?;
        let engine = Rc::new(RefCell::new(Engine {
            ring,
            relay,
            done: Vec::with_capacity(4096),
        }));
        let driver = Rc::clone(&engine);
        tokio::task::spawn_local(async move {
            loop {
                // Edge-triggered: each signal of the eventfd is a new event, so it is
                // never read (its counter is of no use here).
                let Ok(mut ready) = wake.readable().await else {
                    return;
                };
                ready.clear_ready();
                if driver.borrow_mut().pass().is_err() {
                    return;
                }
            }
        });
        let listener = tokio::net::TcpListener::bind(listen).await?;
        for next in 0usize.. {
            let (client, _) = listener.accept().await?;
            let backend = backends[next % backends.len()];
            let engine = Rc::clone(&engine);
            tokio::task::spawn_local(async move {
                let Ok(server) = tokio::net::TcpStream::connect(backend).await else {
                    return;
                };
                let _ = (client.set_nodelay(true), server.set_nodelay(true));
                let (Ok(client), Ok(server)) = (client.into_std(), server.into_std()) else {
                    return;
                };
                let mut engine = engine.borrow_mut();
                engine
                    .relay
                    .adopt(client.into_raw_fd(), server.into_raw_fd());
                let _ = engine.pass();
            });
        }
        Ok(())
    })
}
