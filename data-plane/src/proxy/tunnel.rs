//! The tunnel: after a 101, bytes flow both ways unmodified until one side is done.
//!
//! Nothing is parsed. Bytes that arrived together with the upgrade (buffered by the HTTP
//! layer on either side) are written first. EOF on one side becomes a write shutdown on
//! the other (half-close), and the tunnel ends when both directions have finished, when
//! either side fails, or when neither direction has moved a byte for the tunnel timeout.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::time::Instant;

/// Why a tunnel ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TunnelEnd {
    /// Both sides closed; `client_first` tells who started.
    Closed { client_first: bool },
    /// No traffic either way for the tunnel timeout.
    Timeout,
    /// Reading from or writing to the client failed.
    ClientError,
    /// Reading from or writing to the server failed.
    ServerError,
}

/// What a finished tunnel did.
#[derive(Debug, Clone, Copy)]
pub struct TunnelReport {
    pub end: TunnelEnd,
    /// Bytes from the client to the server.
    pub up: u64,
    /// Bytes from the server to the client.
    pub down: u64,
}

const BUF: usize = 16 * 1024;

enum Fail {
    Read,
    Write,
}

/// Copies `from` → `to` until EOF, then shuts `to` down for writing.
async fn pump<R, W>(
    from: &mut R,
    to: &mut W,
    moved: &AtomicU64,
    last_activity: &AtomicU64,
    epoch: Instant,
) -> Result<(), Fail>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut buf = vec![0u8; BUF];
    loop {
        let n = from.read(&mut buf).await.map_err(|_| Fail::Read)?;
        if n == 0 {
            let _ = to.shutdown().await;
            return Ok(());
        }
        to.write_all(&buf[..n]).await.map_err(|_| Fail::Write)?;
        moved.fetch_add(n as u64, Relaxed);
        last_activity.store(epoch.elapsed().as_millis() as u64, Relaxed);
    }
}

/// Runs the tunnel to its end. `client_early`/`server_early` are bytes already read from
/// each side past the HTTP exchange, to deliver to the other side first.
pub async fn run<C, S>(
    client: C,
    client_early: &[u8],
    server: S,
    server_early: &[u8],
    idle: Duration,
) -> TunnelReport
where
    C: AsyncRead + AsyncWrite + Unpin,
    S: AsyncRead + AsyncWrite + Unpin,
{
    let (mut cr, mut cw) = tokio::io::split(client);
    let (mut sr, mut sw) = tokio::io::split(server);
    let up = AtomicU64::new(client_early.len() as u64);
    let down = AtomicU64::new(server_early.len() as u64);
    let report = |end| TunnelReport {
        end,
        up: up.load(Relaxed),
        down: down.load(Relaxed),
    };
    if !server_early.is_empty() && cw.write_all(server_early).await.is_err() {
        return report(TunnelEnd::ClientError);
    }
    if !client_early.is_empty() && sw.write_all(client_early).await.is_err() {
        return report(TunnelEnd::ServerError);
    }

    let epoch = Instant::now();
    let last_activity = AtomicU64::new(0);
    let mut upstream = std::pin::pin!(pump(&mut cr, &mut sw, &up, &last_activity, epoch));
    let mut downstream = std::pin::pin!(pump(&mut sr, &mut cw, &down, &last_activity, epoch));
    let mut up_done = false;
    let mut down_done = false;
    let mut client_first = None;
    loop {
        let deadline = epoch + Duration::from_millis(last_activity.load(Relaxed)) + idle;
        tokio::select! {
            r = &mut upstream, if !up_done => match r {
                Ok(()) => {
                    up_done = true;
                    client_first.get_or_insert(true);
                }
                Err(Fail::Read) => return report(TunnelEnd::ClientError),
                Err(Fail::Write) => return report(TunnelEnd::ServerError),
            },
            r = &mut downstream, if !down_done => match r {
                Ok(()) => {
                    down_done = true;
                    client_first.get_or_insert(false);
                }
                Err(Fail::Read) => return report(TunnelEnd::ServerError),
                Err(Fail::Write) => return report(TunnelEnd::ClientError),
            },
            _ = tokio::time::sleep_until(deadline) => {
                // Activity may have happened while we slept; only a full idle period counts.
                let since = epoch + Duration::from_millis(last_activity.load(Relaxed));
                if Instant::now() >= since + idle {
                    return report(TunnelEnd::Timeout);
                }
            }
        }
        if up_done && down_done {
            return report(TunnelEnd::Closed {
                client_first: client_first.unwrap_or(true),
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::duplex;

    #[tokio::test]
    async fn early_bytes_first_then_both_ways_and_half_close() {
        let (client_proxy, mut client) = duplex(1024);
        let (server_proxy, mut server) = duplex(1024);
        let task = tokio::spawn(async move {
            run(
                client_proxy,
                b"early-up",
                server_proxy,
                b"early-down",
                Duration::from_secs(5),
            )
            .await
        });
        let mut buf = [0u8; 10];
        client.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"early-down");
        let mut buf = [0u8; 8];
        server.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"early-up");
        client.write_all(b"hello").await.unwrap();
        let mut buf = [0u8; 5];
        server.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"hello");
        // Client half-closes; the server still gets to answer.
        client.shutdown().await.unwrap();
        let mut rest = Vec::new();
        server.read_to_end(&mut rest).await.unwrap();
        assert!(rest.is_empty());
        server.write_all(b"bye").await.unwrap();
        server.shutdown().await.unwrap();
        let mut got = Vec::new();
        client.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, b"bye");
        let report = task.await.unwrap();
        assert_eq!(report.end, TunnelEnd::Closed { client_first: true });
        assert_eq!((report.up, report.down), (13, 13));
    }

    #[tokio::test(start_paused = true)]
    async fn idle_tunnel_times_out_but_activity_resets_the_clock() {
        let (client_proxy, mut client) = duplex(1024);
        let (server_proxy, mut server) = duplex(1024);
        let task = tokio::spawn(async move {
            run(client_proxy, b"", server_proxy, b"", Duration::from_secs(3)).await
        });
        for _ in 0..3 {
            tokio::time::sleep(Duration::from_secs(2)).await;
            client.write_all(b"x").await.unwrap();
            let mut b = [0u8; 1];
            server.read_exact(&mut b).await.unwrap();
        }
        assert!(!task.is_finished());
        let report = task.await.unwrap();
        assert_eq!(report.end, TunnelEnd::Timeout);
    }
}
