//! The relay's state machine: connections, the provided-buffer ring, and what each
//! completion leads to. It only queues operations ([`Relay::submit`]); the loop that
//! owns the ring submits them.

use std::collections::VecDeque;
use std::os::fd::{IntoRawFd, RawFd};
use std::sync::atomic::{AtomicU16, Ordering};

use io_uring::{cqueue, opcode, squeue, types};

/// Size of each provided buffer: one recv completion carries at most this much.
const BUF_SIZE: usize = 16 * 1024;
/// Provided buffers (a power of two): 64 MiB in all, plenty for a benchmark's tunnels.
pub const BUFFERS: u16 = 4096;
pub const GROUP: u16 = 7;

/// Operation kinds, the low 4 bits of a completion's user data (the connection's slot
/// above them). `RECV`, `SEND` and `SHUT` are per direction, even: `+ d` (the low bit)
/// for the bytes read from side `d` (0 client, 1 server).
const ACCEPT: u64 = 0;
const CONNECT: u64 = 1;
const RECV: u64 = 2;
const SEND: u64 = 4;
const SHUT: u64 = 6;
const CLOSE: u64 = 8;

fn user_data(slot: usize, kind: u64) -> u64 {
    ((slot as u64) << 4) | kind
}

/// The provided-buffer ring: the kernel picks a buffer for each recv completion, and the
/// relay gives it back once its bytes are sent.
pub struct Buffers {
    /// `BUFFERS` entries of `io_uring_buf` (16 bytes each), page-aligned, registered with
    /// the ring; the tail shares the first entry's last two bytes.
    pub ring: *mut u8,
    tail: u16,
    data: Vec<u8>,
    pub unpublished: bool,
}

impl Buffers {
    pub fn new() -> anyhow::Result<Self> {
        // SAFETY: an anonymous private mapping, owned for the process's life.
        let ring = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                BUFFERS as usize * 16,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        anyhow::ensure!(
            ring != libc::MAP_FAILED,
            "mmap: {}",
            std::io::Error::last_os_error()
        );
        let mut buffers = Self {
            ring: ring.cast(),
            tail: 0,
            data: vec![0; BUF_SIZE * BUFFERS as usize],
            unpublished: false,
        };
        for id in 0..BUFFERS {
            buffers.give_back(id);
        }
        buffers.publish();
        Ok(buffers)
    }

    /// Queues buffer `id` for the kernel; [`publish`](Self::publish) makes it visible.
    fn give_back(&mut self, id: u16) {
        let entry = (self.tail & (BUFFERS - 1)) as usize * 16;
        let addr = self.data.as_ptr() as u64 + u64::from(id) * BUF_SIZE as u64;
        // SAFETY: `entry` is within the mapping; the fields are written one by one so
        // that the first entry's tail (bytes 14..16) is left alone.
        unsafe {
            let e = self.ring.add(entry);
            e.cast::<u64>().write(addr);
            e.add(8).cast::<u32>().write(BUF_SIZE as u32);
            e.add(12).cast::<u16>().write(id);
        }
        self.tail = self.tail.wrapping_add(1);
        self.unpublished = true;
    }

    pub fn publish(&mut self) {
        // SAFETY: the tail of a registered buffer ring, read by the kernel.
        let tail = unsafe { &*self.ring.add(14).cast::<AtomicU16>() };
        tail.store(self.tail, Ordering::Release);
        self.unpublished = false;
    }

    fn bytes(&self, id: u16, offset: u32) -> *const u8 {
        self.data[id as usize * BUF_SIZE + offset as usize..].as_ptr()
    }
}

/// One relayed connection: the client (side 0) and its server connection (side 1).
#[derive(Default)]
struct Conn {
    fds: [RawFd; 2],
    connected: bool,
    /// Operations submitted and not yet completed (a multishot recv counts until its last
    /// completion); the slot is reused only when none is left.
    ops: u32,
    /// Per direction: received buffers not yet sent on, as (buffer, offset, length).
    queued: [VecDeque<(u16, u32, u32)>; 2],
    sending: [bool; 2],
    eof: [bool; 2],
    shut: [bool; 2],
    closing: bool,
    closes: u32,
}

/// The relay's state: its connections and what it has to submit next.
pub struct Relay {
    conns: Vec<Conn>,
    free: Vec<usize>,
    pub buffers: Buffers,
    /// Operations to submit with the next `io_uring_enter`.
    pub submit: Vec<squeue::Entry>,
    backends: Box<[libc::sockaddr_in]>,
    next: usize,
    listener: RawFd,
}

impl Relay {
    /// A relay accepting on `listener` (for [`accept`](Self::accept)) and connecting to
    /// `backends` in turn; neither is used when connections are [adopted](Self::adopt).
    pub fn new(buffers: Buffers, listener: RawFd, backends: Vec<libc::sockaddr_in>) -> Self {
        Self {
            conns: Vec::new(),
            free: Vec::new(),
            buffers,
            submit: Vec::new(),
            backends: backends.into_boxed_slice(),
            next: 0,
            listener,
        }
    }

    fn slot(&mut self) -> usize {
        self.free.pop().unwrap_or_else(|| {
            self.conns.push(Conn::default());
            self.conns.len() - 1
        })
    }

    /// Relays between `client` and `server`, both connected already (owned from now on).
    pub fn adopt(&mut self, client: RawFd, server: RawFd) {
        let slot = self.slot();
        self.conns[slot] = Conn {
            fds: [client, server],
            connected: true,
            ops: 2,
            ..Conn::default()
        };
        self.recv(slot, 0);
        self.recv(slot, 1);
    }

    fn accepted(&mut self, client: RawFd) {
        let server = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)
            .and_then(|s| s.set_tcp_nodelay(true).map(|()| s.into_raw_fd()));
        let Ok(server) = server else {
            // SAFETY: the accepted descriptor is ours, and nothing else refers to it.
            unsafe { libc::close(client) };
            return;
        };
        let slot = self.slot();
        self.conns[slot] = Conn {
            fds: [client, server],
            ops: 2,
            ..Conn::default()
        };
        // The addresses live in a boxed slice that outlives every connect op.
        let addr = &self.backends[self.next % self.backends.len()];
        self.next += 1;
        let len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
        let connect = opcode::Connect::new(
            types::Fd(server),
            (addr as *const libc::sockaddr_in).cast(),
            len,
        );
        self.submit
            .push(connect.build().user_data(user_data(slot, CONNECT)));
        self.recv(slot, 0);
    }

    fn recv(&mut self, slot: usize, side: usize) {
        let fd = self.conns[slot].fds[side];
        let recv = opcode::RecvMulti::new(types::Fd(fd), GROUP);
        self.submit
            .push(recv.build().user_data(user_data(slot, RECV + side as u64)));
    }

    /// Sends the next queued buffer of direction `d`, unless one is in flight.
    fn send(&mut self, slot: usize, d: usize) {
        let c = &mut self.conns[slot];
        if c.sending[d] || !c.connected || c.closing {
            return;
        }
        let Some(&(id, offset, len)) = c.queued[d].front() else {
            return;
        };
        c.sending[d] = true;
        c.ops += 1;
        let send = opcode::Send::new(types::Fd(c.fds[1 - d]), self.buffers.bytes(id, offset), len);
        self.submit
            .push(send.build().user_data(user_data(slot, SEND + d as u64)));
    }

    /// Passes direction `d`'s EOF on once everything read before it is sent.
    fn pass_eof(&mut self, slot: usize, d: usize) {
        let c = &mut self.conns[slot];
        if c.closing
            || !c.connected
            || !c.eof[d]
            || c.shut[d]
            || c.sending[d]
            || !c.queued[d].is_empty()
        {
            return;
        }
        c.shut[d] = true;
        c.ops += 1;
        let shutdown = opcode::Shutdown::new(types::Fd(c.fds[1 - d]), libc::SHUT_WR);
        self.submit
            .push(shutdown.build().user_data(user_data(slot, SHUT + d as u64)));
    }

    /// Ends a connection on an error: both sockets shut down, which ends their recvs.
    fn abort(&mut self, slot: usize) {
        let c = &mut self.conns[slot];
        if c.closing {
            return;
        }
        c.closing = true;
        for fd in c.fds {
            // SAFETY: descriptors this relay owns.
            unsafe { libc::shutdown(fd, libc::SHUT_RDWR) };
        }
        for (d, queue) in c.queued.iter_mut().enumerate() {
            // A buffer being sent stays queued until its send completes: the kernel may
            // still be reading it.
            let keep = usize::from(c.sending[d]).min(queue.len());
            for (id, _, _) in queue.drain(keep..) {
                self.buffers.give_back(id);
            }
        }
    }

    /// Closes both sockets once both EOFs are passed on (or the connection failed) and no
    /// operation on them is left.
    fn settle(&mut self, slot: usize) {
        let c = &mut self.conns[slot];
        if c.shut[0] && c.shut[1] && c.ops == 0 {
            c.closing = true;
        }
        if c.closing && c.ops == 0 && c.closes == 0 {
            c.closes = 2;
            c.ops = 2;
            for fd in c.fds {
                let close = opcode::Close::new(types::Fd(fd));
                self.submit
                    .push(close.build().user_data(user_data(slot, CLOSE)));
            }
        }
    }

    /// Handles one completion.
    pub fn complete(&mut self, data: u64, res: i32, flags: u32) {
        let (slot, kind) = ((data >> 4) as usize, data & 15);
        match kind {
            ACCEPT => {
                if res >= 0 {
                    self.accepted(res);
                }
                if !cqueue::more(flags) {
                    self.accept();
                }
                return;
            }
            CONNECT => {
                self.conns[slot].ops -= 1;
                if res < 0 {
                    self.abort(slot);
                } else {
                    self.conns[slot].connected = true;
                    self.conns[slot].ops += 1;
                    self.recv(slot, 1);
                    self.send(slot, 0);
                    self.pass_eof(slot, 0);
                }
            }
            k if k & !1 == RECV => {
                let d = (k & 1) as usize;
                if res > 0 {
                    let id = cqueue::buffer_select(flags).expect("a recv with bytes has a buffer");
                    if self.conns[slot].closing {
                        self.buffers.give_back(id);
                    } else {
                        self.conns[slot].queued[d].push_back((id, 0, res as u32));
                        self.send(slot, d);
                    }
                }
                if !cqueue::more(flags) {
                    let c = &mut self.conns[slot];
                    c.ops -= 1;
                    if c.closing {
                    } else if res == 0 {
                        c.eof[d] = true;
                        self.pass_eof(slot, d);
                    } else if res > 0 || res == -libc::ENOBUFS {
                        c.ops += 1;
                        self.recv(slot, d);
                    } else {
                        self.abort(slot);
                    }
                }
            }
            k if k & !1 == SEND => {
                let d = (k & 1) as usize;
                let c = &mut self.conns[slot];
                c.ops -= 1;
                c.sending[d] = false;
                if c.closing {
                    // Aborted meanwhile: only the buffer of this send was left queued.
                    if let Some((id, _, _)) = c.queued[d].pop_front() {
                        self.buffers.give_back(id);
                    }
                } else if res < 0 {
                    self.abort(slot);
                } else {
                    let front = c.queued[d]
                        .front_mut()
                        .expect("a send has its buffer queued");
                    front.1 += res as u32;
                    front.2 -= res as u32;
                    if front.2 == 0 {
                        let id = front.0;
                        c.queued[d].pop_front();
                        self.buffers.give_back(id);
                    }
                    self.send(slot, d);
                    self.pass_eof(slot, d);
                }
            }
            k if k & !1 == SHUT => self.conns[slot].ops -= 1,
            CLOSE => {
                let c = &mut self.conns[slot];
                c.ops -= 1;
                c.closes -= 1;
                if c.closes == 0 {
                    self.free.push(slot);
                }
                return;
            }
            _ => unreachable!("unknown operation {kind}"),
        }
        self.settle(slot);
    }

    /// Arms the multishot accept on the listener.
    pub fn accept(&mut self) {
        let accept = opcode::AcceptMulti::new(types::Fd(self.listener));
        self.submit
            .push(accept.build().user_data(user_data(0, ACCEPT)));
    }
}
