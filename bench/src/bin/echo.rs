//! `sluice-bench-echo ADDR...`: a lean WebSocket echo server for benchmarks.
//!
//! Hand-rolled so the backend costs as little CPU as possible: one read buffer per
//! connection, frames unmasked in place and echoed unmasked with the same opcode, no
//! per-message allocation. Plain HTTP requests get a tiny 200. Single-threaded.

use std::io;

use base64::Engine;
use sha1::{Digest, Sha1};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

fn accept_key(key: &[u8]) -> String {
    let mut sha = Sha1::new();
    sha.update(key);
    sha.update(b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11");
    base64::engine::general_purpose::STANDARD.encode(sha.finalize())
}

fn find_key(head: &[u8]) -> Option<&[u8]> {
    for line in head.split(|b| *b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.len() > 18 && line[..18].eq_ignore_ascii_case(b"sec-websocket-key:") {
            return Some(line[18..].trim_ascii());
        }
    }
    None
}

async fn connection(mut s: TcpStream) -> io::Result<()> {
    s.set_nodelay(true)?;
    let mut buf = vec![0u8; 64 * 1024];
    let mut len = 0;
    let head_end = loop {
        let n = s.read(&mut buf[len..]).await?;
        if n == 0 {
            return Ok(());
        }
        len += n;
        if let Some(p) = buf[..len].windows(4).position(|w| w == b"\r\n\r\n") {
            break p + 4;
        }
        if len == buf.len() {
            return Ok(());
        }
    };
    let Some(key) = find_key(&buf[..head_end]) else {
        s.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok")
            .await?;
        return Ok(());
    };
    let resp = format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {}\r\n\r\n",
        accept_key(key)
    );
    s.write_all(resp.as_bytes()).await?;
    buf.copy_within(head_end..len, 0);
    len -= head_end;
    let mut out: Vec<u8> = Vec::with_capacity(64 * 1024);
    loop {
        // Echo every complete frame in the buffer.
        let mut pos = 0;
        out.clear();
        loop {
            let avail = &buf[pos..len];
            if avail.len() < 2 {
                break;
            }
            let opcode = avail[0] & 0x0f;
            let masked = avail[1] & 0x80 != 0;
            let (plen, mut hlen) = match avail[1] & 0x7f {
                126 if avail.len() >= 4 => (u16::from_be_bytes([avail[2], avail[3]]) as usize, 4),
                127 if avail.len() >= 10 => (
                    u64::from_be_bytes(avail[2..10].try_into().expect("8 bytes")) as usize,
                    10,
                ),
                126 | 127 => break,
                n => (n as usize, 2),
            };
            let mask_at = hlen;
            if masked {
                hlen += 4;
            }
            if avail.len() < hlen + plen {
                if hlen + plen > buf.len() {
                    buf.resize(hlen + plen + 1024, 0);
                }
                break;
            }
            let mask = if masked {
                [
                    avail[mask_at],
                    avail[mask_at + 1],
                    avail[mask_at + 2],
                    avail[mask_at + 3],
                ]
            } else {
                [0; 4]
            };
            out.push(avail[0]);
            if plen < 126 {
                out.push(plen as u8);
            } else if plen <= u16::MAX as usize {
                out.push(126);
                out.extend_from_slice(&(plen as u16).to_be_bytes());
            } else {
                out.push(127);
                out.extend_from_slice(&(plen as u64).to_be_bytes());
            }
            let start = out.len();
            out.extend_from_slice(&avail[hlen..hlen + plen]);
            if mask != [0; 4] {
                for (i, b) in out[start..].iter_mut().enumerate() {
                    *b ^= mask[i & 3];
                }
            }
            pos += hlen + plen;
            if opcode == 0x8 {
                s.write_all(&out).await?;
                return Ok(());
            }
        }
        if !out.is_empty() {
            s.write_all(&out).await?;
        }
        buf.copy_within(pos..len, 0);
        len -= pos;
        let n = s.read(&mut buf[len..]).await?;
        if n == 0 {
            return Ok(());
        }
        len += n;
    }
}

fn main() -> anyhow::Result<()> {
    let addrs: Vec<String> = std::env::args().skip(1).collect();
    anyhow::ensure!(!addrs.is_empty(), "usage: sluice-bench-echo ADDR...");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        for a in addrs {
            let l = TcpListener::bind(&a).await?;
            tokio::spawn(async move {
                loop {
                    if let Ok((s, _)) = l.accept().await {
                        tokio::spawn(connection(s));
                    }
                }
            });
        }
        println!("sluice-bench-echo ready");
        std::future::pending::<()>().await;
        #[allow(unreachable_code)]
        Ok(())
    })
}
