//! The tunnel session: a client connection and its server connection after a `101`,
//! from the handover to the close — counters, stick-counter tracking, the access-log line
//! with its close cause, and a draining node's deadline. The bytes themselves are copied
//! by [`super::tunnel`].

use std::net::SocketAddr;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use super::drain;
use super::h2io::StreamIo;
use super::io::ClientIo;
use super::log;
use super::tunnel::{self, TunnelEnd};
use crate::config::acl::Tracked;
use crate::config::TunnelTimeouts;
use crate::counters::{FrontendCounters, Held, ServerCounters};

/// A client connection that came in over TLS.
type TlsStream = tokio_rustls::server::TlsStream<TcpStream>;

/// The server side of a tunnel, ready once the server's `101` is in.
pub struct ServerSide {
    pub counters: Arc<ServerCounters>,
    /// `timeout tunnel`, `client-fin`, `server-fin`.
    pub limits: TunnelTimeouts,
    /// The server's connection slot, held until the tunnel ends.
    pub slot: Held<ServerCounters>,
    /// The server socket, with any bytes the server sent past the `101`.
    pub io: (TcpStream, Bytes),
}

/// The tunnels open on one client connection that carries several (HTTP/2): a
/// connection with open tunnels is not idle.
#[derive(Debug, Default)]
pub struct ConnTunnels {
    pub open: std::sync::atomic::AtomicU64,
}

/// Everything a tunnel task needs once the 101 has been relayed. Deliberately small: the
/// plan is not kept alive by open tunnels.
pub struct Session {
    /// The frontend's tunnel count, held until the tunnel ends.
    pub fe_tunnel: Held<FrontendCounters>,
    pub frontend: Arc<FrontendCounters>,
    pub server: Arc<ServerCounters>,
    pub client: SocketAddr,
    pub limits: TunnelTimeouts,
    /// The server's connection count, held until the tunnel ends.
    pub held: Held<ServerCounters>,
    /// The access-log entry to complete and write at close (None when logging is off).
    /// Boxed: it is big, and absent unless logging is on.
    pub log: Option<Box<log::Entry>>,
    /// Stick counters the connection tracked: its `conn_cur` lasts as long as the tunnel.
    pub tracked: Tracked,
    /// The count of tunnels on its client connection, when that carries several.
    pub on_conn: Option<Held<ConnTunnels>>,
}

/// The client side of a tunnel.
pub enum ClientSide {
    /// hyper's upgrade of the connection: the socket comes back once hyper has written
    /// the `101`.
    Hyper(hyper::upgrade::OnUpgrade),
    /// The client socket itself, its `101` already written, with the bytes the client
    /// sent past its request head (an upgrade read by [`super::direct`]).
    Direct(TcpStream, Bytes),
    /// An HTTP/2 stream, its `200` already sent.
    H2(StreamIo),
}

/// A tunnel whose server side is ready (the server's `101` is in) and whose client side
/// the caller gives when it starts it.
pub struct Pending {
    pub frontend: Arc<FrontendCounters>,
    pub client: SocketAddr,
    pub server: ServerSide,
    pub log: Option<Box<log::Entry>>,
    pub tracked: Tracked,
}

impl Pending {
    /// Starts the tunnel between the client and the server, registered for a drain.
    /// Counted as a tunnel from now on, before the HTTP connection stops counting, so
    /// `maxconn` never sees a gap. `on_conn`: the count of tunnels on the client
    /// connection, when that carries several (HTTP/2).
    pub fn start(self, client_side: ClientSide, on_conn: Option<Arc<ConnTunnels>>) {
        let Pending {
            frontend,
            client,
            server,
            log,
            tracked,
        } = self;
        let session = Session {
            fe_tunnel: Held::new(frontend.clone(), |c: &FrontendCounters| &c.current_tunnels),
            frontend,
            server: server.counters,
            client,
            limits: server.limits,
            held: server.slot,
            log,
            tracked,
            on_conn: on_conn.map(|c| Held::new(c, |c: &ConnTunnels| &c.open)),
        };
        drain::spawn_tunnel(session.run(client_side, server.io));
    }
}

impl Session {
    /// The tunnel task. Its state is kept small (an idle tunnel is mostly this future):
    /// the context moves into the bookkeeping guard before the first await, so it is held
    /// once, not twice.
    fn run(
        self,
        client: ClientSide,
        server: (TcpStream, Bytes),
    ) -> impl std::future::Future<Output = ()> + Send {
        let limits = self.limits;
        let mut ended = TunnelEnded {
            _srv_tunnel: Held::new(self.server.clone(), |c: &ServerCounters| &c.current_tunnels),
            started: Instant::now(),
            meter: tunnel::Meter::default(),
            end: None,
            ctx: Some(self),
        };
        async move {
            let (client, early) = match client {
                ClientSide::Direct(client, early) => (client, early),
                // Boxed, as a TLS client's tunnel is: its state must not make every plain
                // tunnel's task larger.
                ClientSide::H2(stream) => {
                    let report = Box::pin(tunnel::run_stream(
                        stream,
                        Bytes::new(),
                        server.0,
                        server.1,
                        limits,
                        &ended.meter,
                    ))
                    .await;
                    ended.finish(report.end);
                    return;
                }
                ClientSide::Hyper(upgrade) => {
                    let peer = ended.ctx.as_ref().map(|c| c.client);
                    let upgraded = match upgrade.await {
                        Ok(c) => c,
                        Err(e) => {
                            tracing::debug!(client = ?peer, error = %e, "client upgrade did not complete");
                            ended.finish(TunnelEnd::ClientError);
                            return;
                        }
                    };
                    // Take the raw socket back from hyper: the tunnel works on the sockets
                    // themselves. A TLS client connection keeps its TLS stream.
                    match upgraded.downcast::<TokioIo<ClientIo>>() {
                        // Unpacked in a block, so nothing of hyper's parts stays in this
                        // task's state while the tunnel runs.
                        Ok(c) => {
                            let (client, unread) = c.io.into_inner().into_parts();
                            let early = if unread.is_empty() {
                                c.read_buf
                            } else {
                                [c.read_buf, unread].concat().into()
                            };
                            (client, early)
                        }
                        // A TLS client (or another kind of upgraded connection): boxed,
                        // since a TLS stream and its buffered copies are large and must
                        // not make every plain tunnel's task that large too.
                        Err(upgraded) => {
                            let report =
                                Box::pin(stream_tunnel(upgraded, server, limits, &ended.meter))
                                    .await;
                            ended.finish(report.end);
                            return;
                        }
                    }
                }
            };
            ended.started = Instant::now();
            let report = tunnel::run(client, early, server.0, server.1, limits, &ended.meter).await;
            ended.finish(report.end);
        }
    }
}

/// The tunnel of a client whose socket is not a plain TCP one: a TLS bind's stream, or
/// any other upgraded connection (whatever the front-end protocol), copied through
/// buffers.
async fn stream_tunnel(
    upgraded: hyper::upgrade::Upgraded,
    server: (TcpStream, Bytes),
    limits: TunnelTimeouts,
    meter: &tunnel::Meter,
) -> tunnel::TunnelReport {
    match upgraded.downcast::<TokioIo<ClientIo<TlsStream>>>() {
        Ok(c) => {
            let client = c.io.into_inner().into_inner();
            tunnel::run_stream(client, c.read_buf, server.0, server.1, limits, meter).await
        }
        Err(other) => {
            let client = TokioIo::new(other);
            tunnel::run_stream(client, Bytes::new(), server.0, server.1, limits, meter).await
        }
    }
}

/// A tunnel's bookkeeping, done when the tunnel task ends however it ends: at the
/// tunnel's own end, or when a draining node aborts the task (logged `KD--`).
struct TunnelEnded {
    ctx: Option<Session>,
    /// The server's tunnel count.
    _srv_tunnel: Held<ServerCounters>,
    started: Instant,
    meter: tunnel::Meter,
    end: Option<TunnelEnd>,
}

impl TunnelEnded {
    /// Records how the tunnel ended (without it, the drop logs a close by the node).
    fn finish(&mut self, end: TunnelEnd) {
        self.end = Some(end);
    }
}

impl Drop for TunnelEnded {
    fn drop(&mut self) {
        let Some(ctx) = self.ctx.take() else { return };
        let up = self.meter.up.load(Relaxed);
        let down = self.meter.down.load(Relaxed);
        ctx.frontend.bytes_in.fetch_add(up, Relaxed);
        ctx.frontend.bytes_out.fetch_add(down, Relaxed);
        ctx.server.bytes_in.fetch_add(up, Relaxed);
        ctx.server.bytes_out.fetch_add(down, Relaxed);
        if let Some(TunnelEnd::ServerError) = self.end {
            ctx.server.tunnel_errors.fetch_add(1, Relaxed);
        }
        if let Some(mut en) = ctx.log {
            en.timers[4] = en.timers[0].max(0) + self.started.elapsed().as_millis() as i64;
            en.bytes = down;
            en.termination = match self.end {
                Some(TunnelEnd::Closed { client_first: true }) => "CD--",
                Some(TunnelEnd::Closed {
                    client_first: false,
                }) => "SD--",
                Some(TunnelEnd::Timeout) => "cD--",
                Some(TunnelEnd::ClientError) => "ED--",
                Some(TunnelEnd::ServerError) => "eD--",
                // Closed by the node itself: its drain deadline passed.
                None => "KD--",
            };
            en.fe_conn = ctx.frontend.open_connections();
            en.srv_conn = ctx.server.current_connections.load(Relaxed);
            en.emit();
        }
        // Stick counters first: once the tunnel no longer counts, neither does its source.
        let Session {
            tracked,
            held,
            fe_tunnel,
            frontend,
            ..
        } = ctx;
        drop(tracked);
        drop(held);
        drop(fe_tunnel);
        frontend.released.notify_waiters();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::Request;

    /// An idle tunnel is mostly its task's state, so that state is watched: a plain
    /// tunnel's task must not carry the TLS path's (large) state, nor hold its context
    /// twice. Both happened once and tripled the RSS per idle tunnel.
    #[tokio::test]
    async fn a_tunnel_task_stays_small() {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let s = TcpStream::connect(l.local_addr().unwrap()).await.unwrap();
        let counters = Arc::new(ServerCounters::default());
        let fe = Arc::new(FrontendCounters::default());
        let ctx = Session {
            fe_tunnel: Held::new(fe.clone(), |c: &FrontendCounters| &c.current_tunnels),
            frontend: fe,
            server: counters.clone(),
            client: "127.0.0.1:1".parse().unwrap(),
            limits: TunnelTimeouts {
                idle_ms: 1000,
                client_fin_ms: 1000,
                server_fin_ms: 1000,
            },
            held: Held::server_slot(counters),
            log: None,
            tracked: Tracked::default(),
            on_conn: None,
        };
        let mut req = Request::new(());
        // What is spawned: the tunnel, registered for a drain.
        let task = drain::registered(
            ctx.run(
                ClientSide::Hyper(hyper::upgrade::on(&mut req)),
                (s, Bytes::new()),
            ),
            u64::MAX,
        );
        let size = std::mem::size_of_val(&task);
        assert!(size <= 1536, "a tunnel task's state is {size} bytes");
    }
}
