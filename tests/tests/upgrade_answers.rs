//! However a server answers an upgrade, the client gets that answer through a real node:
//! a `101` in pieces, a `101` after an interim `100 Continue`, a `101` with a head larger
//! than the node's direct parser takes, bytes the server sends right behind its `101`,
//! and a refusal with a body. The scripted server below speaks raw bytes, so each shape
//! is exact. The client side too: an upgrade request in pieces, one with a frame right
//! behind its head, and a refused upgrade followed by another request on the same
//! connection.

use std::net::SocketAddr;
use std::time::Duration;

use sluice_tests::harness::{any_port, simple_config, Fixture};
use sluice_tests::raw;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const WAIT: Duration = Duration::from_secs(10);

const SWITCH: &str = "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\
                      Connection: Upgrade\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n";

/// What the server sends for a request path, in pieces written with a pause between
/// them; after a `101` it echoes bytes back.
fn script(path: &str) -> Vec<Vec<u8>> {
    let switch_with = |extra: &str| format!("{SWITCH}{extra}\r\n").into_bytes();
    match path {
        "/split" => {
            let whole = switch_with("");
            let (a, b) = whole.split_at(20);
            let (b, c) = b.split_at(40);
            vec![a.to_vec(), b.to_vec(), [c, b"HELLO"].concat()]
        }
        "/continue" => vec![
            b"HTTP/1.1 100 Continue\r\n\r\n".to_vec(),
            [switch_with("").as_slice(), b"HELLO"].concat(),
        ],
        "/bighead" => {
            let big = format!("X-Big: {}\r\n", "b".repeat(20_000));
            vec![[switch_with(&big).as_slice(), b"HELLO"].concat()]
        }
        "/behind" => vec![[switch_with("").as_slice(), b"HELLO"].concat()],
        _ => vec![b"HTTP/1.1 403 Forbidden\r\ncontent-length: 5\r\n\r\nnope!".to_vec()],
    }
}

async fn serve(listener: TcpListener) {
    loop {
        let Ok((mut s, _)) = listener.accept().await else {
            return;
        };
        tokio::spawn(async move {
            let mut head = Vec::new();
            while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                let mut chunk = [0u8; 4096];
                match s.read(&mut chunk).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => head.extend_from_slice(&chunk[..n]),
                }
            }
            let text = String::from_utf8_lossy(&head).into_owned();
            let path = text.split(' ').nth(1).unwrap_or("/").to_string();
            let pieces = script(&path);
            for piece in &pieces {
                if s.write_all(piece).await.is_err() {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(30)).await;
            }
            if text.contains("upgrade") && !pieces.iter().any(|p| p.starts_with(b"HTTP/1.1 4")) {
                let (mut r, mut w) = s.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
            }
        });
    }
}

async fn upgrade(bind: SocketAddr, path: &str) -> TcpStream {
    let mut tcp = TcpStream::connect(bind).await.unwrap();
    tcp.write_all(raw::upgrade(path, "").as_bytes())
        .await
        .unwrap();
    tcp
}

/// Reads until `want` bytes came after the head, or the node closes; returns the head
/// and what followed it.
async fn read_answer(tcp: &mut TcpStream, want: usize) -> (String, Vec<u8>) {
    let mut buf = Vec::new();
    tokio::time::timeout(WAIT, async {
        loop {
            if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                if buf.len() >= end + 4 + want {
                    break;
                }
            }
            let mut chunk = [0u8; 8192];
            let n = tcp.read(&mut chunk).await.unwrap();
            if n == 0 {
                break;
            }
            buf.extend_from_slice(&chunk[..n]);
        }
    })
    .await
    .expect("an answer");
    let end = buf
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a complete head")
        + 4;
    (
        String::from_utf8_lossy(&buf[..end]).into_owned(),
        buf[end..].to_vec(),
    )
}

/// A node whose one backend is the scripted server; the node and its bound address.
async fn scripted_node() -> (Fixture, SocketAddr) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let server = listener.local_addr().unwrap();
    tokio::spawn(serve(listener));
    let f = Fixture::start(&[]).await;
    let configured = any_port("127.0.0.1");
    f.apply(&simple_config(
        configured,
        &[("scripted", &[server])],
        "scripted",
    ))
    .await;
    let bind = f.bound(configured).await;
    (f, bind)
}

/// Reads exactly `n` bytes of the tunnel.
async fn read_n(tcp: &mut TcpStream, n: usize) -> Vec<u8> {
    let mut got = vec![0u8; n];
    tokio::time::timeout(WAIT, tcp.read_exact(&mut got))
        .await
        .expect("the bytes")
        .unwrap();
    got
}

#[tokio::test]
async fn every_shape_of_a_server_answer_reaches_the_client() {
    let (_f, bind) = scripted_node().await;

    for path in ["/split", "/continue", "/bighead", "/behind"] {
        let mut tcp = upgrade(bind, path).await;
        let (head, after) = read_answer(&mut tcp, 5).await;
        assert!(head.starts_with("HTTP/1.1 101"), "{path}: {head}");
        assert!(
            head.contains("s3pPLMBiTxaQ9kYGzzhZRbK+xOo="),
            "{path}: accept relayed: {head}"
        );
        if path == "/bighead" {
            assert!(head.contains(&"b".repeat(20_000)), "{path}: the big field");
        }
        assert_eq!(after, b"HELLO", "{path}: the bytes behind the 101");
        // The tunnel is open both ways.
        tcp.write_all(b"ping\x00\xff").await.unwrap();
        let mut echo = [0u8; 6];
        tokio::time::timeout(WAIT, tcp.read_exact(&mut echo))
            .await
            .expect("the echo")
            .unwrap();
        assert_eq!(&echo, b"ping\x00\xff", "{path}");
    }

    let mut tcp = upgrade(bind, "/refused").await;
    let (head, body) = read_answer(&mut tcp, 5).await;
    assert!(head.starts_with("HTTP/1.1 403"), "{head}");
    assert_eq!(body, b"nope!");
}

#[tokio::test]
async fn every_shape_of_an_upgrade_request_reaches_the_server() {
    let (_f, bind) = scripted_node().await;
    let request = raw::upgrade("/behind", "");

    // The head in pieces, the second after a pause.
    let mut tcp = TcpStream::connect(bind).await.unwrap();
    let (a, b) = request.as_bytes().split_at(30);
    tcp.write_all(a).await.unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    tcp.write_all(b).await.unwrap();
    let (head, after) = read_answer(&mut tcp, 5).await;
    assert!(head.starts_with("HTTP/1.1 101"), "in pieces: {head}");
    assert_eq!(after, b"HELLO");
    tcp.write_all(b"ping").await.unwrap();
    assert_eq!(read_n(&mut tcp, 4).await, b"ping", "in pieces: the tunnel");

    // A frame written with the head, before any answer: the server gets it, once.
    let mut tcp = TcpStream::connect(bind).await.unwrap();
    let frame = b"\x81\x85abcd\x29\x07\x0f\x08\x0e";
    tcp.write_all(&[request.as_bytes(), frame].concat())
        .await
        .unwrap();
    let (head, after) = read_answer(&mut tcp, 5).await;
    assert!(head.starts_with("HTTP/1.1 101"), "with a frame: {head}");
    assert!(
        head.contains("s3pPLMBiTxaQ9kYGzzhZRbK+xOo="),
        "accept relayed: {head}"
    );
    assert_eq!(after, b"HELLO");
    assert_eq!(
        read_n(&mut tcp, frame.len()).await,
        frame,
        "the early frame, echoed"
    );
    tcp.write_all(b"next").await.unwrap();
    assert_eq!(read_n(&mut tcp, 4).await, b"next");

    // A refused upgrade keeps the connection for the next request.
    let mut tcp = TcpStream::connect(bind).await.unwrap();
    tcp.write_all(raw::upgrade("/refused", "").as_bytes())
        .await
        .unwrap();
    let (head, body) = read_answer(&mut tcp, 5).await;
    assert!(head.starts_with("HTTP/1.1 403"), "{head}");
    assert_eq!(body, b"nope!");
    tcp.write_all(raw::get("/again", "").as_bytes())
        .await
        .unwrap();
    let (head, body) = read_answer(&mut tcp, 5).await;
    assert!(
        head.starts_with("HTTP/1.1 403"),
        "the next request on the same connection: {head}"
    );
    assert_eq!(body, b"nope!");
}
