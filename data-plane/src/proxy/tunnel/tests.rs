//! The tunnel's rules on real sockets and in-memory pipes: bytes both ways, early bytes,
//! half-close, back-pressure, timeouts.

use super::*;
use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// Inactivity `idle`, fin timeouts as long (they never shorten it).
fn limits(idle: Duration) -> TunnelTimeouts {
    let ms = idle.as_millis() as u32;
    TunnelTimeouts {
        idle_ms: ms,
        client_fin_ms: ms,
        server_fin_ms: ms,
    }
}

/// Runs a tunnel and checks that its meter agrees with its report.
async fn metered(
    client: TcpStream,
    client_early: Bytes,
    server: TcpStream,
    server_early: Bytes,
    idle: Duration,
) -> TunnelReport {
    let meter = Meter::default();
    let report = run(
        client,
        client_early,
        server,
        server_early,
        limits(idle),
        &meter,
    )
    .await;
    assert_eq!(meter.up.load(Relaxed), report.up);
    assert_eq!(meter.down.load(Relaxed), report.down);
    report
}

/// Two connected socket pairs: (client end, proxy's client side), (proxy's server
/// side, server end).
async fn pairs() -> (TcpStream, TcpStream, TcpStream, TcpStream) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let a = TcpStream::connect(l.local_addr().unwrap()).await.unwrap();
    let (b, _) = l.accept().await.unwrap();
    let c = TcpStream::connect(l.local_addr().unwrap()).await.unwrap();
    let (d, _) = l.accept().await.unwrap();
    (a, b, c, d)
}

/// What both kinds of tunnel must carry, seen from its two ends: the early bytes first
/// (`up` reaches the server, `down` the client), a client message, the client's
/// half-close passed on as EOF while the server can still answer, then the server's
/// answer and its close.
async fn half_close_exchange<C>(client: C, server: &mut TcpStream, (up, down): (&[u8], &[u8]))
where
    C: tokio::io::AsyncRead + tokio::io::AsyncWrite,
{
    let (mut cr, mut cw) = tokio::io::split(client);
    let mut buf = vec![0u8; down.len()];
    cr.read_exact(&mut buf).await.unwrap();
    assert_eq!(buf, down);
    let mut buf = vec![0u8; up.len()];
    server.read_exact(&mut buf).await.unwrap();
    assert_eq!(buf, up);
    cw.write_all(b"ping").await.unwrap();
    cw.shutdown().await.unwrap();
    let mut got = Vec::new();
    server.read_to_end(&mut got).await.unwrap();
    assert_eq!(got, b"ping", "client EOF reaches the server as EOF");
    server.write_all(b"pong").await.unwrap();
    server.shutdown().await.unwrap();
    let mut back = Vec::new();
    cr.read_to_end(&mut back).await.unwrap();
    assert_eq!(back, b"pong");
}

#[tokio::test]
async fn early_bytes_first_then_both_ways_and_half_close() {
    let (client, proxy_c, proxy_s, mut server) = pairs().await;
    let task = tokio::spawn(metered(
        proxy_c,
        Bytes::from_static(b"early-up"),
        proxy_s,
        Bytes::from_static(b"early-down"),
        Duration::from_secs(5),
    ));
    half_close_exchange(client, &mut server, (b"early-up", b"early-down")).await;
    let report = task.await.unwrap();
    assert_eq!(report.end, TunnelEnd::Closed { client_first: true });
    assert_eq!((report.up, report.down), (12, 14));
}

/// A server that half-closes and goes quiet does not hold its client's tunnel for the
/// tunnel timeout: `client-fin` (waiting for the client) ends it — on the socket path
/// and the stream path.
#[tokio::test]
async fn a_half_closed_tunnel_ends_at_its_fin_timeout() {
    let fin = TunnelTimeouts {
        idle_ms: 3_600_000,
        client_fin_ms: 300,
        server_fin_ms: 3_600_000,
    };
    for stream in [false, true] {
        let (client, proxy_c, proxy_s, mut server) = pairs().await;
        let meter = Meter::default();
        let started = Instant::now();
        let tunnel = async {
            if stream {
                run_stream(proxy_c, Bytes::new(), proxy_s, Bytes::new(), fin, &meter).await
            } else {
                run(proxy_c, Bytes::new(), proxy_s, Bytes::new(), fin, &meter).await
            }
        };
        // The server sends its FIN; the client never answers and never closes.
        server.shutdown().await.unwrap();
        let report = tokio::time::timeout(Duration::from_secs(10), tunnel)
            .await
            .expect("the half-closed tunnel ended");
        assert_eq!(report.end, TunnelEnd::Timeout, "stream: {stream}");
        let took = started.elapsed();
        assert!(
            took >= Duration::from_millis(300),
            "stream: {stream}: ended after {took:?}, before client-fin"
        );
        drop(client);
    }
}

#[tokio::test]
async fn large_transfers_with_a_slow_reader_lose_nothing() {
    let (mut client, proxy_c, proxy_s, mut server) = pairs().await;
    let task = tokio::spawn(metered(
        proxy_c,
        Bytes::new(),
        proxy_s,
        Bytes::new(),
        Duration::from_secs(5),
    ));
    let data: Vec<u8> = (0..8 * 1024 * 1024u32)
        .map(|i| (i * 31 % 251) as u8)
        .collect();
    let sent = data.clone();
    let writer = tokio::spawn(async move {
        client.write_all(&sent).await.unwrap();
        client.shutdown().await.unwrap();
        client
    });
    let mut got = Vec::new();
    let mut chunk = vec![0u8; 1000];
    loop {
        // A slow reader: small reads with pauses, so the proxy must hold back.
        let n = server.read(&mut chunk).await.unwrap();
        if n == 0 {
            break;
        }
        got.extend_from_slice(&chunk[..n]);
        if got.len() % 100_000 < 1000 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
    assert!(got == data, "bytes changed or lost");
    server.shutdown().await.unwrap();
    drop(writer.await.unwrap());
    let report = task.await.unwrap();
    assert_eq!(report.up, data.len() as u64);
}

#[tokio::test(start_paused = true)]
async fn idle_tunnel_times_out_but_activity_resets_the_clock() {
    let (mut client, proxy_c, proxy_s, mut server) = pairs().await;
    let task = tokio::spawn(metered(
        proxy_c,
        Bytes::new(),
        proxy_s,
        Bytes::new(),
        Duration::from_secs(3),
    ));
    for _ in 0..3 {
        tokio::time::sleep(Duration::from_secs(2)).await;
        client.write_all(b"x").await.unwrap();
        let mut b = [0u8; 1];
        server.read_exact(&mut b).await.unwrap();
    }
    assert!(!task.is_finished());
    let started = Instant::now();
    let report = task.await.unwrap();
    assert_eq!(report.end, TunnelEnd::Timeout);
    assert!(started.elapsed() >= Duration::from_secs(2));
}

/// A stream tunnel between an in-memory client and a server socket, with early bytes
/// each way, idle timeout 5 s; its task and meter.
fn spawn_stream(
    client: tokio::io::DuplexStream,
    server: TcpStream,
    (up, down): (&'static [u8], &'static [u8]),
) -> (tokio::task::JoinHandle<TunnelReport>, Arc<Meter>) {
    let meter = Arc::new(Meter::default());
    let m = meter.clone();
    let task = tokio::spawn(async move {
        let limits = limits(Duration::from_secs(5));
        let (up, down) = (Bytes::from_static(up), Bytes::from_static(down));
        run_stream(client, up, server, down, limits, &m).await
    });
    (task, meter)
}

/// The stream tunnel (TLS clients) keeps the same rules: early bytes first, both ways,
/// half-close passed on, counted.
#[tokio::test]
async fn stream_tunnel_relays_and_passes_half_close() {
    let (client, proxy_c) = tokio::io::duplex(64 * 1024);
    let (_, _, proxy_s, mut server) = pairs().await;
    let (task, meter) = spawn_stream(proxy_c, proxy_s, (b"up-early", b"down-early"));
    half_close_exchange(client, &mut server, (b"up-early", b"down-early")).await;
    let report = task.await.unwrap();
    assert_eq!(report.end, TunnelEnd::Closed { client_first: true });
    assert_eq!((report.up, report.down), (12, 14));
    assert_eq!(meter.up.load(Relaxed), 12);
}

/// A client slower than its server: what the client cannot take yet waits in the
/// tunnel (reading the server pauses) and every byte arrives, in order.
#[tokio::test]
async fn stream_tunnel_holds_back_for_a_slow_client_and_loses_nothing() {
    // A 4 KiB pipe to the client: most of each 64 KiB read must wait.
    let (client, proxy_c) = tokio::io::duplex(4 * 1024);
    let (_, _, proxy_s, mut server) = pairs().await;
    let (task, _meter) = spawn_stream(proxy_c, proxy_s, (b"", b""));
    let sent: Vec<u8> = (0..1_000_000u32).map(|i| (i % 251) as u8).collect();
    let body = sent.clone();
    let writer = tokio::spawn(async move {
        server.write_all(&body).await.unwrap();
        server.shutdown().await.unwrap();
        server
    });
    let (mut cr, mut cw) = tokio::io::split(client);
    let mut got = Vec::new();
    let mut chunk = [0u8; 1000];
    loop {
        let n = cr.read(&mut chunk).await.unwrap();
        if n == 0 {
            break;
        }
        got.extend_from_slice(&chunk[..n]);
        tokio::task::yield_now().await;
    }
    assert!(
        got == sent,
        "{} of {} bytes, in order",
        got.len(),
        sent.len()
    );
    cw.shutdown().await.unwrap();
    drop(writer.await.unwrap());
    let report = task.await.unwrap();
    assert_eq!(report.down, sent.len() as u64);
}

#[tokio::test(start_paused = true)]
async fn stream_tunnel_times_out_when_idle() {
    let (_client, proxy_c) = tokio::io::duplex(1024);
    let (_, _, proxy_s, _server) = pairs().await;
    let started = tokio::time::Instant::now();
    let report = run_stream(
        proxy_c,
        Bytes::new(),
        proxy_s,
        Bytes::new(),
        limits(Duration::from_secs(30)),
        &Meter::default(),
    )
    .await;
    assert_eq!(report.end, TunnelEnd::Timeout);
    assert!(started.elapsed() >= Duration::from_secs(30));
}
