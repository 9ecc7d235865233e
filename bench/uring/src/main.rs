//! `sluice-bench-uring-relay [--hosted] LISTEN BACKEND...`: the bare TCP relay of
//! `sluice-bench-relay`, on io_uring, to measure what that kernel interface costs
//! against tokio's epoll loop on this machine, in two shapes:
//!
//! - **owned loop** (the default): one thread, one ring (`SINGLE_ISSUER`,
//!   `DEFER_TASKRUN`) that is the whole event loop — a multishot accept on the listener;
//!   per connection a `socket(2)` to the next backend (round robin) and a connect op; a
//!   multishot recv on each side into one shared ring of provided buffers; sends,
//!   shutdowns and closes as ops. All submissions of a pass go to the kernel in the one
//!   `io_uring_enter` that also waits for the next completions, so a pass over many ready
//!   sockets costs one system call, where an epoll loop pays one per read and write.
//! - **hosted** (`--hosted`): how a tokio program would add io_uring — accept and connect
//!   on tokio's current-thread runtime, then both sockets handed to the same ring, which
//!   tokio's epoll watches through an eventfd registered with the ring; each wake-up runs
//!   the ring's completions in `io_uring_enter` calls and submits what they lead to.
//!
//! No HTTP, no timeouts, no counters; IPv4 backends only.

mod hosted;
mod relay;

use std::net::SocketAddr;
use std::os::fd::IntoRawFd;

use anyhow::Context as _;
use io_uring::IoUring;

use relay::{Buffers, Relay, BUFFERS, GROUP};

/// A ring and a relay with its provided buffers registered.
fn ring(relay_listener: i32, backends: Vec<libc::sockaddr_in>) -> anyhow::Result<(IoUring, Relay)> {
    let ring: IoUring = IoUring::builder()
        .setup_single_issuer()
        .setup_defer_taskrun()
        .setup_coop_taskrun()
        .setup_cqsize(32 * 1024)
        .build(4096)
        .context("io_uring setup")?;
    let buffers = Buffers::new()?;
    // SAFETY: the buffer ring stays mapped, and its buffers allocated, as long as the
    // relay that owns them, which lives as long as the ring (both live until exit).
    unsafe {
        ring.submitter()
            .register_buf_ring_with_flags(buffers.ring as u64, BUFFERS, GROUP, 0)
    }
    .context("registering the buffer ring")?;
    Ok((ring, Relay::new(buffers, relay_listener, backends)))
}

/// Moves what the relay queued into the submission queue (submitting early only if it
/// is full) and publishes given-back buffers; the caller's `io_uring_enter` submits.
fn queue(ring: &mut IoUring, relay: &mut Relay) -> std::io::Result<()> {
    let (submitter, mut sq, _) = ring.split();
    for entry in relay.submit.drain(..) {
        // SAFETY: every pointer in the entries (buffers, addresses) outlives its op.
        while unsafe { sq.push(&entry) }.is_err() {
            sq.sync();
            submitter.submit()?;
            sq.sync();
        }
    }
    sq.sync();
    if relay.buffers.unpublished {
        relay.buffers.publish();
    }
    Ok(())
}

/// Hands every completion waiting in the ring to the relay; returns how many there were.
fn reap(ring: &mut IoUring, relay: &mut Relay, done: &mut Vec<(u64, i32, u32)>) -> usize {
    done.clear();
    done.extend(
        ring.completion()
            .map(|c| (c.user_data(), c.result(), c.flags())),
    );
    for &(data, res, flags) in done.iter() {
        relay.complete(data, res, flags);
    }
    done.len()
}

fn sockaddr(addr: &str) -> anyhow::Result<libc::sockaddr_in> {
    let SocketAddr::V4(addr) = addr.parse::<SocketAddr>().context(addr.to_owned())? else {
        anyhow::bail!("{addr}: IPv4 backends only");
    };
    Ok(libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: addr.port().to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from(*addr.ip()).to_be(),
        },
        sin_zero: [0; 8],
    })
}

fn main() -> anyhow::Result<()> {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let hosted = args.first().is_some_and(|a| a == "--hosted");
    if hosted {
        args.remove(0);
    }
    let usage = || anyhow::anyhow!("usage: [--hosted] LISTEN BACKEND...");
    let listen: SocketAddr = args.first().ok_or_else(usage)?.parse().context("LISTEN")?;
    anyhow::ensure!(args.len() > 1, usage());
    if hosted {
        return hosted::run(listen, args[1..].to_vec());
    }
    let backends = args[1..]
        .iter()
        .map(|a| sockaddr(a))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let listener = socket2::Socket::new(
        socket2::Domain::for_address(listen),
        socket2::Type::STREAM,
        None,
    )?;
    listener.set_reuse_address(true)?;
    // Accepted sockets inherit TCP_NODELAY; the backlog is tokio's.
    listener.set_tcp_nodelay(true)?;
    listener.bind(&listen.into())?;
    listener.listen(1024)?;
    let (mut ring, mut relay) = ring(listener.into_raw_fd(), backends)?;
    relay.accept();
    let mut done = Vec::with_capacity(4096);
    loop {
        queue(&mut ring, &mut relay)?;
        match ring.submit_and_wait(1) {
            Ok(_) => {}
            Err(e) if matches!(e.raw_os_error(), Some(libc::EINTR | libc::EBUSY)) => {}
            Err(e) => return Err(e.into()),
        }
        reap(&mut ring, &mut relay, &mut done);
    }
}
