//! A WebSocket client through a real node to a real echo backend: every kind of message
//! arrives unmodified, and the tunnel carries raw bytes without parsing them.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use sluice_tests::harness::{eventually, Fixture};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{CloseCode, Data, OpCode};
use tokio_tungstenite::tungstenite::protocol::frame::Frame;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Message;

const WAIT: Duration = Duration::from_secs(10);

async fn setup() -> Fixture {
    setup_with(&[]).await
}

/// A node started with `node_args`, in front of one echo backend.
async fn setup_with(node_args: &[&str]) -> Fixture {
    let mut f = Fixture::start_with(&["echo-1"], &[], node_args).await;
    f.bind = f.serve_echo("echo-1").await;
    f
}

#[tokio::test]
async fn messages_of_every_kind_arrive_unmodified() {
    let s = setup().await;
    let (mut ws, resp) = tokio_tungstenite::connect_async(format!("ws://{}/ws/chat", s.bind))
        .await
        .expect("upgrade through the node");
    assert_eq!(resp.status(), 101);

    // Text, including non-ASCII.
    ws.send(Message::text("héllo, wörld ✓")).await.unwrap();
    assert_eq!(
        ws.next().await.unwrap().unwrap(),
        Message::text("héllo, wörld ✓")
    );

    // While the tunnel is open, the node counts it as a connection and as a tunnel.
    let url = format!("{}/metrics", s.dp.admin);
    eventually(WAIT, "the open tunnel in /metrics", || {
        let url = url.clone();
        async move {
            let m = reqwest::get(&url).await.ok()?.text().await.ok()?;
            (m.contains("sluice_frontend_connections{frontend=\"web\"} 1")
                && m.contains("sluice_frontend_tunnels{frontend=\"web\"} 1")
                && m.contains("sluice_server_tunnels{backend=\"echo\",server=\"echo-0\"} 1"))
            .then_some(())
        }
    })
    .await;

    // Binary with every byte value.
    let bin: Vec<u8> = (0..=255u8).cycle().take(4096).collect();
    ws.send(Message::binary(bin.clone())).await.unwrap();
    assert_eq!(ws.next().await.unwrap().unwrap(), Message::binary(bin));

    // A 1 MiB message.
    let big: Vec<u8> = (0..1024 * 1024).map(|i| (i * 7 % 251) as u8).collect();
    ws.send(Message::binary(big.clone())).await.unwrap();
    match ws.next().await.unwrap().unwrap() {
        Message::Binary(b) => assert!(b.as_ref() == big.as_slice(), "1 MiB payload changed"),
        other => panic!("expected the 1 MiB binary echo, got {other:?}"),
    }

    // A fragmented text message: three frames, reassembled by the backend.
    ws.send(Message::Frame(Frame::message(
        "frag-one ",
        OpCode::Data(Data::Text),
        false,
    )))
    .await
    .unwrap();
    ws.send(Message::Frame(Frame::message(
        "frag-two ",
        OpCode::Data(Data::Continue),
        false,
    )))
    .await
    .unwrap();
    ws.send(Message::Frame(Frame::message(
        "frag-three",
        OpCode::Data(Data::Continue),
        true,
    )))
    .await
    .unwrap();
    assert_eq!(
        ws.next().await.unwrap().unwrap(),
        Message::text("frag-one frag-two frag-three")
    );

    // Ping → pong with the same payload, answered by the backend.
    ws.send(Message::Ping(b"are you there".to_vec().into()))
        .await
        .unwrap();
    let pong = match tokio::time::timeout(WAIT, ws.next()).await {
        Ok(Some(Ok(Message::Pong(p)))) => p,
        other => panic!("expected a pong, got {other:?}"),
    };
    assert_eq!(pong.as_ref(), b"are you there");

    // Close with a specific code: the backend echoes code and reason.
    ws.send(Message::Close(Some(CloseFrame {
        code: CloseCode::Library(4001),
        reason: "bye now".into(),
    })))
    .await
    .unwrap();
    let close = loop {
        match ws.next().await {
            Some(Ok(Message::Close(c))) => break c,
            Some(Ok(_)) => continue,
            other => panic!("expected a close frame, got {other:?}"),
        }
    };
    let close = close.expect("a close frame with a code");
    assert_eq!(close.code, CloseCode::Library(4001));
    assert_eq!(close.reason.as_str(), "bye now");
}

#[tokio::test]
async fn the_tunnel_is_raw_bytes_with_half_close() {
    let s = setup().await;
    let mut tcp = TcpStream::connect(s.bind).await.unwrap();
    // The backend's /raw path echoes bytes verbatim after the 101. Bytes sent right
    // behind the request (before the 101 arrives) must not be lost either.
    let request = "GET /raw?greet HTTP/1.1\r\nHost: example.test\r\nUpgrade: websocket\r\n\
                   Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
                   Sec-WebSocket-Version: 13\r\n\r\n";
    let mut first = request.as_bytes().to_vec();
    first.extend_from_slice(b"EARLY\x00\xff");
    tcp.write_all(&first).await.unwrap();

    let mut buf = Vec::new();
    let head_end = loop {
        let mut chunk = [0u8; 1024];
        let n = tcp.read(&mut chunk).await.unwrap();
        assert!(n > 0, "connection closed before the 101");
        buf.extend_from_slice(&chunk[..n]);
        if let Some(p) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break p + 4;
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    assert!(
        head.contains("s3pPLMBiTxaQ9kYGzzhZRbK+xOo="),
        "accept key relayed: {head}"
    );

    // The greeting frame the server sent with its 101, then our early bytes echoed.
    let mut rest = buf[head_end..].to_vec();
    let want_len = 2 + "hello from echo-1".len() + 7;
    while rest.len() < want_len {
        let mut chunk = [0u8; 1024];
        let n = tcp.read(&mut chunk).await.unwrap();
        assert!(n > 0);
        rest.extend_from_slice(&chunk[..n]);
    }
    assert_eq!(rest[0], 0x81);
    assert_eq!(&rest[2..2 + 17], b"hello from echo-1");
    assert_eq!(&rest[19..26], b"EARLY\x00\xff");

    // Arbitrary bytes that are not WebSocket frames at all pass through untouched.
    let junk: Vec<u8> = (0..200_000u32).map(|i| (i % 256) as u8).collect();
    let (mut r, mut w) = tcp.into_split();
    let writer = tokio::spawn(async move {
        w.write_all(&junk).await.unwrap();
        w.shutdown().await.unwrap(); // half-close: the echo must still come back
        junk
    });
    let mut echoed = Vec::new();
    r.read_to_end(&mut echoed).await.unwrap();
    let junk = writer.await.unwrap();
    assert_eq!(echoed.len(), junk.len());
    assert!(echoed == junk, "tunnel altered the bytes");

    // The node's Prometheus metrics account for the tunnel once it has closed.
    let metrics_url = format!("{}/metrics", s.dp.admin);
    let text = eventually(WAIT, "the tunnel to show up closed in /metrics", || {
        let url = metrics_url.clone();
        async move {
            let text = reqwest::get(&url).await.ok()?.text().await.ok()?;
            text.contains("sluice_frontend_tunnels{frontend=\"web\"} 0")
                .then_some(text)
        }
    })
    .await;
    assert!(
        text.contains("sluice_frontend_upgrades_total{frontend=\"web\"} 1"),
        "{text}"
    );
    assert!(
        text.contains("sluice_frontend_responses_total{frontend=\"web\",code=\"1xx\"} 1"),
        "{text}"
    );
    assert!(
        text.contains(
            "sluice_server_connections_opened_total{backend=\"echo\",server=\"echo-0\"} 1"
        ),
        "{text}"
    );
    let bytes_in: u64 = text
        .lines()
        .find_map(|l| l.strip_prefix("sluice_frontend_tunnel_bytes_in_total{frontend=\"web\"} "))
        .and_then(|v| v.trim().parse().ok())
        .expect("a tunnel bytes counter");
    assert!(
        bytes_in >= 200_007,
        "{bytes_in} tunnel bytes counted from the client"
    );
    // The same tunnel, seen from the server it went to.
    assert!(
        text.contains("sluice_server_upgrades_total{backend=\"echo\",server=\"echo-0\"} 1"),
        "{text}"
    );
    assert!(
        text.contains(&format!(
            "sluice_server_tunnel_bytes_in_total{{backend=\"echo\",server=\"echo-0\"}} {bytes_in}"
        )),
        "{text}"
    );
}

#[tokio::test]
async fn a_stopping_node_drains_tunnels_then_closes_the_rest() {
    let mut s = setup_with(&["--drain-timeout", "2s"]).await;
    let url = format!("ws://{}/ws", s.bind);
    let (mut kept, _) = tokio_tungstenite::connect_async(&url).await.unwrap();
    let (mut leaving, _) = tokio_tungstenite::connect_async(&url).await.unwrap();
    kept.send(Message::text("before")).await.unwrap();
    assert_eq!(kept.next().await.unwrap().unwrap(), Message::text("before"));

    let stop_requested = std::time::Instant::now();
    s.dp.proc.terminate();
    // No new connections: the listener is closed.
    eventually(WAIT, "the listener to close", || async {
        TcpStream::connect(s.bind).await.is_err().then_some(())
    })
    .await;
    // Open tunnels keep working while the node drains.
    kept.send(Message::text("during drain")).await.unwrap();
    assert_eq!(
        kept.next().await.unwrap().unwrap(),
        Message::text("during drain")
    );
    // A tunnel whose client leaves during the drain ends normally.
    leaving.close(None).await.unwrap();
    while let Some(Ok(_)) = leaving.next().await {}
    drop(leaving);

    // At the deadline the node closes what is still open and exits.
    let end = tokio::time::timeout(WAIT, kept.next())
        .await
        .expect("closed by the node");
    assert!(!matches!(end, Some(Ok(Message::Text(_)))), "{end:?}");
    let status = s.dp.proc.wait_exit(WAIT).await.expect("the node exits");
    assert!(status.success(), "{status:?}");
    let took = stop_requested.elapsed();
    assert!(
        took >= Duration::from_millis(1900),
        "stopped after {took:?}"
    );
    let log = s.dp.proc.log_text();
    let tunnels: Vec<&str> = log.lines().filter(|l| l.contains(" 101 ")).collect();
    assert_eq!(tunnels.len(), 2, "{log}");
    // The tunnel that ended during the drain: a normal close (the server closes first
    // after the WebSocket close handshake).
    assert!(tunnels.iter().any(|l| l.contains(" SD-- ")), "{log}");
    assert!(tunnels.iter().any(|l| l.contains(" KD-- ")), "{log}");
}

#[tokio::test]
async fn a_stopping_node_with_nothing_open_exits_at_once() {
    let mut s = setup_with(&["--drain-timeout", "60s"]).await;
    // One finished exchange, so the node has served something.
    let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{}/ws", s.bind))
        .await
        .unwrap();
    ws.close(None).await.unwrap();
    while let Some(Ok(_)) = ws.next().await {}
    drop(ws);
    eventually(WAIT, "the tunnel to end", || {
        let url = format!("{}/metrics", s.dp.admin);
        async move {
            let text = reqwest::get(&url).await.ok()?.text().await.ok()?;
            text.contains("sluice_frontend_tunnels{frontend=\"web\"} 0")
                .then_some(())
        }
    })
    .await;
    s.dp.proc.terminate();
    let status =
        s.dp.proc
            .wait_exit(Duration::from_secs(5))
            .await
            .expect("exits well before the drain timeout");
    assert!(status.success(), "{status:?}");
}

#[tokio::test]
async fn a_server_dying_mid_tunnel_closes_only_its_tunnel() {
    let s = setup().await;
    let url = format!("ws://{}/ws", s.bind);
    let (mut doomed, _) = tokio_tungstenite::connect_async(&url).await.unwrap();
    let (mut other, _) = tokio_tungstenite::connect_async(&url).await.unwrap();
    doomed.send(Message::text("die")).await.unwrap();
    // The client sees its connection end promptly (no close frame: the server vanished).
    let end = tokio::time::timeout(WAIT, doomed.next())
        .await
        .expect("the node closes the client side");
    assert!(!matches!(end, Some(Ok(Message::Text(_)))), "{end:?}");
    // The other tunnel, to the same server process, is untouched.
    other.send(Message::text("still")).await.unwrap();
    assert_eq!(other.next().await.unwrap().unwrap(), Message::text("still"));
    // The access log says the server side failed (eD--).
    eventually(WAIT, "the tunnel's log line", || async {
        let log = s.dp.proc.log_text();
        log.lines()
            .any(|l| l.contains(" 101 ") && l.contains(" eD-- "))
            .then_some(())
    })
    .await;
}

#[tokio::test]
async fn json_access_log_has_a_line_per_request_and_per_tunnel() {
    let s = setup_with(&["--log-format", "json"]).await;
    let resp = reqwest::get(format!("http://{}/plain?x=1", s.bind))
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{}/ws/chat", s.bind))
        .await
        .unwrap();
    ws.send(Message::text("hello")).await.unwrap();
    assert_eq!(ws.next().await.unwrap().unwrap(), Message::text("hello"));
    ws.close(None).await.unwrap();
    while let Some(Ok(_)) = ws.next().await {}
    drop(ws);

    // Each access-log record is a line of its own holding one JSON object (a line still
    // being written is skipped until it is complete).
    let records = || -> Vec<serde_json::Value> {
        s.dp.proc
            .log_text()
            .lines()
            .filter(|l| l.starts_with('{'))
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    };
    let (request, tunnel) = eventually(WAIT, "a record for the request and the tunnel", || {
        let all = records();
        let find = |status: u64| all.iter().find(|r| r["status"] == status).cloned();
        std::future::ready(find(200).zip(find(101)))
    })
    .await;
    assert_eq!(request["request"], "GET /plain?x=1 HTTP/1.1");
    assert_eq!(request["frontend"], "web");
    assert_eq!(request["backend"], "echo");
    assert_eq!(request["server"], "echo-0");
    assert_eq!(request["termination"], "----");
    assert!(request["client"]
        .as_str()
        .unwrap()
        .starts_with("127.0.0.1:"));
    // The tunnel's line is written when it closes: after the WebSocket close handshake
    // both sides close, so either may be first, but it is a normal close.
    assert_eq!(tunnel["request"], "GET /ws/chat HTTP/1.1");
    assert_eq!(tunnel["server"], "echo-0");
    let end = tunnel["termination"].as_str().unwrap();
    assert!(end == "CD--" || end == "SD--", "{tunnel}");
    assert!(tunnel["bytes"].as_u64().unwrap() > 0, "{tunnel}");
    assert!(tunnel["ta"].as_i64().unwrap() >= 0, "{tunnel}");
}

/// A server that sends its FIN and goes quiet does not hold its client's tunnel for the
/// tunnel timeout: once the client has been told, `timeout client-fin` ends the tunnel,
/// and the gauges come back to zero.
#[tokio::test]
async fn a_half_closed_tunnel_ends_at_client_fin() {
    let mut f = Fixture::start(&["echo-1"]).await;
    let configured = sluice_tests::harness::any_port("127.0.0.1");
    let mut doc = sluice_tests::harness::simple_config(
        configured,
        &[("echo", &[f.backend("echo-1").addr])],
        "echo",
    );
    doc["defaults"]["timeouts"]["client_fin"] = serde_json::json!("1s");
    f.apply(&doc).await;
    f.bind = f.bound(configured).await;
    let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{}/ws", f.bind))
        .await
        .unwrap();
    ws.send(Message::text("fin")).await.unwrap();
    let half_closed = std::time::Instant::now();
    // The client is told (the server's FIN is passed on), but keeps its side open.
    let end = tokio::time::timeout(WAIT, ws.next())
        .await
        .expect("the FIN passed on");
    assert!(!matches!(end, Some(Ok(Message::Text(_)))), "{end:?}");
    let url = format!("{}/metrics", f.dp.admin);
    eventually(WAIT, "the half-closed tunnel ended", || {
        let url = url.clone();
        async move {
            let m = reqwest::get(&url).await.ok()?.text().await.ok()?;
            (m.contains("sluice_frontend_tunnels{frontend=\"web\"} 0")
                && m.contains("sluice_server_tunnels{backend=\"echo\",server=\"echo-0\"} 0"))
            .then_some(())
        }
    })
    .await;
    eprintln!(
        "figures: the half-closed tunnel ended {:?} after the server's FIN (client_fin 1s)",
        half_closed.elapsed()
    );
    eventually(WAIT, "the tunnel's log line", || async {
        let log = f.dp.proc.log_text();
        log.lines()
            .any(|l| l.contains(" 101 ") && l.contains(" cD-- "))
            .then_some(())
    })
    .await;
    drop(ws);
}
