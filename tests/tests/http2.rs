//! HTTP/2 on the front end through the real binaries: h2c with prior knowledge and
//! TLS with ALPN `h2`, requests through the same rules and routing as HTTP/1.1, and
//! WebSocket over HTTP/2 (RFC 8441) bridged to HTTP/1.1 servers — several streams on
//! one connection, routed by the article's ACLs, echoing every frame, sticky by cookie;
//! a server that refuses or answers a wrong accept; bodies beyond the flow-control
//! windows; a stream reset before its answer; abuse limits.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use sluice_tests::h2client::{h2_ws_roundtrip, H2};
use sluice_tests::harness::{eventually, fixture, ws_connect, ws_roundtrip, Fixture};
use tokio_tungstenite::tungstenite::Message;

/// The article's routing: WebSocket upgrades (by its two ACLs) to `chat` or `notify` by
/// path, the rest to `app`; a request rule and a response rule on the frontend.
fn article_like(bind: std::net::SocketAddr, addr: &dyn Fn(&str) -> String) -> Value {
    json!({
        "frontends": [{
            "name": "web",
            "binds": [{ "address": bind.to_string() }],
            "acls": [
                { "name": "is_websocket", "expr": "hdr(Upgrade) -i websocket" },
                { "name": "is_websocket", "expr": "hdr_sub(Connection) -i upgrade" },
                { "name": "is_chat", "expr": "path_beg /chat" },
                { "name": "is_notify", "expr": "path_beg /notify" }
            ],
            "http_request": [
                { "action": "set-header", "name": "X-Via-Node", "value": "yes" }
            ],
            "http_response": [
                { "action": "set-header", "name": "X-Frontend", "value": "web" }
            ],
            "use_backend": [
                { "backend": "chat", "if": "is_websocket is_chat" },
                { "backend": "notify", "if": "is_websocket is_notify" }
            ],
            "default_backend": "app",
            "forwardfor": true,
            "max_header_bytes": 8192
        }],
        "backends": [
            { "name": "chat", "balance": "roundrobin",
              "cookie": { "name": "SRV", "mode": "insert", "indirect": true, "nocache": true },
              "servers": [
                { "name": "chat-01", "address": addr("chat-01"), "cookie": "c1" },
                { "name": "chat-02", "address": addr("chat-02"), "cookie": "c2" }
              ] },
            { "name": "notify", "servers": [{ "name": "notify-01", "address": addr("notify-01") }] },
            { "name": "app", "servers": [{ "name": "app-01", "address": addr("app-01") }] }
        ]
    })
}

async fn article_fixture() -> Fixture {
    fixture(&["chat-01", "chat-02", "notify-01", "app-01"], article_like).await
}

#[tokio::test]
async fn h2c_requests_go_through_the_same_rules_and_routing() {
    let f = article_fixture().await;
    let mut h2 = H2::h2c(f.bind).await;
    let resp = h2.get("/hello?x=1", &[("x-test", "1")]).await;
    assert_eq!(resp.status, 200, "{resp:?}");
    assert_eq!(resp.headers["x-frontend"], "web");
    let seen = resp.json();
    assert_eq!(seen["server"], "app-01");
    assert_eq!(seen["uri"], "/hello?x=1", "origin form to the server");
    let sent = f.backend("app-01").requests().pop().unwrap();
    assert_eq!(
        sent.header_values("host"),
        [f.bind.to_string()],
        ":authority → Host"
    );
    assert_eq!(sent.header_values("x-forwarded-for"), ["127.0.0.1"]);
    assert_eq!(sent.header_values("x-test"), ["1"]);
    assert_eq!(sent.header_values("x-via-node"), ["yes"]);
    // Many requests multiplexed on the one connection.
    let mut all = Vec::new();
    for i in 0..20 {
        let mut c = h2.clone();
        all.push(tokio::spawn(async move {
            c.get(&format!("/n/{i}"), &[]).await.status
        }));
    }
    for t in all {
        assert_eq!(t.await.unwrap(), 200);
    }
    // A body goes through too.
    let resp = h2
        .request(
            "POST",
            "/upload",
            &[("content-type", "text/plain")],
            b"hello body",
        )
        .await
        .unwrap();
    assert_eq!(resp.status, 200);
    assert_eq!(
        f.backend("app-01").requests().pop().unwrap().body,
        b"hello body"
    );
    // Bodies many times the flow-control windows (the node's 256 KiB per stream and
    // 1 MiB per connection; the client's), two streams at once: each window is given
    // back as the data moves on, both ways.
    let big: Vec<u8> = (0..3_000_000u32).map(|i| b'a' + (i % 26) as u8).collect();
    let sends = (0..2).map(|i| {
        let (mut c, body) = (h2.clone(), big.clone());
        tokio::spawn(async move { c.request("POST", &format!("/big/{i}"), &[], &body).await })
    });
    for sent in sends.collect::<Vec<_>>() {
        let resp = tokio::time::timeout(WAIT, sent)
            .await
            .expect("both large exchanges within the wait")
            .unwrap()
            .unwrap();
        assert_eq!(resp.status, 200);
        let seen = resp.json();
        assert_eq!(seen["body"].as_str().map(str::len), Some(big.len()));
        assert!(seen["body"].as_str().unwrap().as_bytes() == &big[..]);
    }
}

#[tokio::test]
async fn websocket_streams_share_one_connection_and_route_by_the_article_acls() {
    let f = article_fixture().await;
    let mut h2 = H2::h2c(f.bind).await;
    let (mut chat, headers) = h2
        .websocket(
            "/chat/room",
            &[("sec-websocket-protocol", "chat.v1, chat.v2")],
        )
        .await
        .unwrap();
    assert_eq!(headers["sec-websocket-protocol"], "chat.v1");
    assert!(headers.get("sec-websocket-accept").is_none());
    let (mut notify, _) = h2.websocket("/notify", &[]).await.unwrap();
    let who = |m: Message| m.into_text().unwrap().to_string();
    assert!(who(h2_ws_roundtrip(&mut chat, Message::text("whoami")).await).starts_with("chat-"));
    assert_eq!(
        who(h2_ws_roundtrip(&mut notify, Message::text("whoami")).await),
        "notify-01"
    );
    // Every kind of data frame comes back unmodified, on both streams at once; a large
    // one (beyond the stream's flow-control window) too.
    let big: Vec<u8> = (0..1_500_000u32).map(|i| (i % 251) as u8).collect();
    for ws in [&mut chat, &mut notify] {
        assert_eq!(
            h2_ws_roundtrip(ws, Message::binary(big.clone())).await,
            Message::binary(big.clone())
        );
        assert_eq!(
            h2_ws_roundtrip(ws, Message::text("ünïcödé ✓")).await,
            Message::text("ünïcödé ✓")
        );
        assert_eq!(
            h2_ws_roundtrip(ws, Message::binary(Vec::new())).await,
            Message::binary(Vec::new())
        );
        // Control frames cross too: a ping is answered by the server's pong.
        ws.send(Message::Ping(b"are you there".to_vec().into()))
            .await
            .unwrap();
        let pong = tokio::time::timeout(WAIT, async {
            loop {
                match ws.next().await {
                    Some(Ok(Message::Pong(p))) => return p,
                    Some(Ok(_)) => continue,
                    other => panic!("stream ended: {other:?}"),
                }
            }
        })
        .await
        .expect("a pong");
        assert_eq!(&pong[..], b"are you there");
    }
    // The tunnels are counted as tunnels, and the upgrade request reached the server
    // as the HTTP/1.1 handshake, key and all.
    let sent = f.backend("notify-01").requests().pop().unwrap();
    assert_eq!(sent.method, "GET");
    assert_eq!(sent.header_values("upgrade"), ["websocket"]);
    assert_eq!(sent.header_values("sec-websocket-key")[0].len(), 24);
    let metrics = f.dp.metrics().await;
    assert!(
        metrics.contains("sluice_frontend_tunnels{frontend=\"web\"} 2"),
        "{metrics}"
    );
    // Closing one stream leaves the other working.
    chat.close(None).await.unwrap();
    assert_eq!(
        who(h2_ws_roundtrip(&mut notify, Message::text("whoami")).await),
        "notify-01"
    );
}

#[tokio::test]
async fn cookie_persistence_holds_across_streams_and_versions() {
    let f = article_fixture().await;
    let mut h2 = H2::h2c(f.bind).await;
    for _ in 0..4 {
        let (mut ws, _) = h2
            .websocket("/chat", &[("cookie", "SRV=c2")])
            .await
            .unwrap();
        let who = h2_ws_roundtrip(&mut ws, Message::text("whoami")).await;
        assert_eq!(
            who.into_text().unwrap().as_str(),
            "chat-02",
            "sticky by SRV=c2"
        );
    }
    // Without the cookie the node sets it on the stream's 200.
    let (_ws, headers) = h2.websocket("/chat", &[]).await.unwrap();
    let set = headers["set-cookie"].to_str().unwrap();
    assert!(set.starts_with("SRV=c"), "{set}");
    // The same configuration serves the HTTP/1.1 handshake beside it.
    let mut ws = ws_connect(f.bind, "/chat").await;
    assert!(ws_roundtrip(&mut ws, "whoami").await.starts_with("chat-"));
}

#[tokio::test]
async fn a_refused_or_bad_bridged_upgrade_gives_the_stream_an_error() {
    let f = article_fixture().await;
    let mut h2 = H2::h2c(f.bind).await;
    let refused = h2.websocket("/chat/status/403", &[]).await.unwrap_err();
    assert_eq!(refused.status, 403);
    // A 200 to the upgrade is not a WebSocket: the stream must not look open.
    let not_upgraded = h2.websocket("/chat/no101", &[]).await.unwrap_err();
    assert_eq!(not_upgraded.status, 502);
    let bad = h2.websocket("/chat/badaccept", &[]).await.unwrap_err();
    assert_eq!(bad.status, 502);
    // A plain CONNECT (no :protocol) is not a reverse proxy's to serve.
    let connect = h2.request("CONNECT", "", &[], b"").await;
    assert!(connect.is_err() || connect.unwrap().status == 405);
    // The connection still serves.
    assert_eq!(h2.get("/after", &[]).await.status, 200);
    let (mut ws, _) = h2.websocket("/chat", &[]).await.unwrap();
    assert!(h2_ws_roundtrip(&mut ws, Message::text("whoami"))
        .await
        .into_text()
        .unwrap()
        .starts_with("chat-"));
}

#[tokio::test]
async fn h2c_can_be_turned_off_per_bind() {
    let f = fixture(&["app-01"], |bind, addr| {
        json!({
            "frontends": [{ "name": "web",
                "binds": [{ "address": bind.to_string(), "http2": { "h2c": false } }],
                "default_backend": "app" }],
            "backends": [{ "name": "app", "servers": [{ "name": "app-01", "address": addr("app-01") }] }]
        })
    })
    .await;
    let tcp = tokio::net::TcpStream::connect(f.bind).await.unwrap();
    let handshake = tokio::time::timeout(
        Duration::from_secs(5),
        hyper::client::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new())
            .handshake::<_, http_body_util::Empty<bytes::Bytes>>(hyper_util::rt::TokioIo::new(tcp)),
    )
    .await
    .expect("an answer");
    // The preface is parsed as an HTTP/1.1 request and refused.
    if let Ok((mut sender, conn)) = handshake {
        tokio::spawn(conn);
        let req = http::Request::get(format!("http://{}/", f.bind))
            .body(http_body_util::Empty::new())
            .unwrap();
        assert!(sender.send_request(req).await.is_err());
    }
    // Out-of-range settings are refused on write, naming the field.
    let api = f.cp.api();
    let mut doc = api.get("/api/v1/config").await.json;
    doc["frontends"][0]["binds"][0]["http2"] = json!({ "max_concurrent_streams": 0 });
    let r = api.request("PUT", "/api/v1/config", Some(&doc), None).await;
    assert_eq!(r.status, 422);
    assert_eq!(
        r.json["errors"][0]["field"],
        "frontends[0].binds[0].http2.max_concurrent_streams"
    );
}

#[tokio::test]
async fn h2c_gets_the_redirect_the_log_line_and_the_stream_limits() {
    let f = fixture(&["ws-01", "app-01"], |bind, addr| {
        json!({
            "frontends": [{
                "name": "web",
                "binds": [{ "address": bind.to_string() }],
                "stick_table": { "type": "ip", "size": 100, "expire": "60s", "store": ["conn_cur", "conn_rate(10s)"] },
                "http_request": [
                    { "action": "redirect", "scheme": "https", "code": 301, "if": "{ path_beg /secure }" },
                    { "action": "track-sc0", "key": "src", "if": "{ hdr(Upgrade) -i websocket }" },
                    { "action": "deny", "status": 429, "if": "{ hdr(Upgrade) -i websocket } { sc_conn_cur(0) gt 2 }" }
                ],
                "use_backend": [{ "backend": "ws", "if": "{ hdr(Upgrade) -i websocket }" }],
                "default_backend": "app"
            }],
            "backends": [
                { "name": "ws", "servers": [{ "name": "ws-01", "address": addr("ws-01") }] },
                { "name": "app", "servers": [{ "name": "app-01", "address": addr("app-01") }] }
            ]
        })
    })
    .await;
    let mut h2 = H2::h2c(f.bind).await;
    // The article's `redirect scheme https` answers an h2c request too.
    let r = h2.get("/secure/page?a=1", &[]).await;
    assert_eq!(r.status, 301);
    assert_eq!(
        r.headers["location"],
        format!("https://{}/secure/page?a=1", f.bind).as_str()
    );
    // Streams of one connection are tracked one by one: two tunnels, the third refused.
    let (mut a, _) = h2.websocket("/a", &[]).await.unwrap();
    let (_b, _) = h2.websocket("/b", &[]).await.unwrap();
    let third = h2.websocket("/c", &[]).await.unwrap_err();
    assert_eq!(third.status, 429);
    assert_eq!(
        h2_ws_roundtrip(&mut a, Message::text("still here")).await,
        Message::text("still here")
    );
    // The access log shows the HTTP/2 request line; a tunnel is logged like a 101.
    drop(a);
    eventually(WAIT, "the access-log lines of HTTP/2 requests", || async {
        let log = f.dp.proc.log_text();
        let redirect = log
            .lines()
            .any(|l| l.contains("\"GET /secure/page?a=1 HTTP/2.0\"") && l.contains(" 301 "));
        let tunnel = log
            .lines()
            .any(|l| l.contains("\"GET /a HTTP/2.0\"") && l.contains(" 101 "));
        (redirect && tunnel).then_some(())
    })
    .await;
}

const WAIT: Duration = Duration::from_secs(10);

#[tokio::test]
async fn abusive_clients_get_goaway_or_431_and_others_are_unaffected() {
    let f = article_fixture().await;
    let mut bystander = H2::h2c(f.bind).await;
    assert_eq!(bystander.get("/before", &[]).await.status, 200);

    // Headers over the frontend's `max_header_bytes` (8 KiB here): the stream is
    // answered 431, as HTTP/1.1 is, and the connection lives on.
    let mut big = H2::h2c(f.bind).await;
    let over = "x".repeat(12_000);
    match big.request("GET", "/big", &[("x-big", &over)], b"").await {
        Ok(r) => assert_eq!(r.status, 431),
        Err(e) => panic!("no 431 for an oversized header list: {e}"),
    }
    assert_eq!(big.get("/after-big", &[]).await.status, 200);
    // A header block spread over many CONTINUATION frames (a flood) ends that
    // connection instead.
    let mut flood = H2::h2c(f.bind).await;
    let huge = "x".repeat(400_000);
    assert!(flood
        .request("GET", "/flood", &[("x-huge", &huge)], b"")
        .await
        .is_err());

    // Rapid reset (CVE-2023-44487): streams opened and cancelled at once, past the
    // bind's limit (20), end the connection with GOAWAY.
    let tcp = tokio::net::TcpStream::connect(f.bind).await.unwrap();
    let (mut client, conn) = h2::client::handshake(tcp).await.unwrap();
    let conn = tokio::spawn(conn);
    for i in 0..1000 {
        client = match client.ready().await {
            Ok(c) => c,
            Err(_) => break,
        };
        let req = http::Request::get(format!("http://{}/reset/{i}", f.bind))
            .body(())
            .unwrap();
        match client.send_request(req, true) {
            Ok((_, mut stream)) => stream.send_reset(h2::Reason::CANCEL),
            Err(_) => break,
        }
    }
    // `client` still holds the connection open: only the node can end it.
    let ended = tokio::time::timeout(WAIT, conn)
        .await
        .expect("the node closes the connection")
        .unwrap();
    let err = ended.expect_err("the node ends the connection");
    // The client reads the GOAWAY, or its next write finds the connection closed.
    if err.is_go_away() {
        assert_eq!(err.reason(), Some(h2::Reason::ENHANCE_YOUR_CALM), "{err:?}");
    } else {
        assert!(err.is_io(), "{err:?}");
    }

    // The other connection was not affected.
    assert_eq!(bystander.get("/after", &[]).await.status, 200);
}

#[tokio::test]
async fn a_header_block_not_finished_within_timeout_http_request_closes_that_connection() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let f = fixture(&["app-01"], |bind, addr| {
        json!({
            "defaults": { "timeouts": { "client": "30s", "http_request": "1s" } },
            "frontends": [{ "name": "web", "binds": [{ "address": bind.to_string() }], "default_backend": "app" }],
            "backends": [{ "name": "app", "servers": [{ "name": "app-01", "address": addr("app-01") }] }]
        })
    })
    .await;
    let mut bystander = H2::h2c(f.bind).await;
    // The preface, empty SETTINGS, then a HEADERS frame without END_HEADERS whose
    // CONTINUATION never comes: the whole connection is held by that block.
    let mut slow = tokio::net::TcpStream::connect(f.bind).await.unwrap();
    let mut bytes = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    bytes.extend([0, 0, 0, 0x4, 0, 0, 0, 0, 0]);
    bytes.extend([0, 0, 1, 0x1, 0x0, 0, 0, 0, 1, 0x82]);
    slow.write_all(&bytes).await.unwrap();
    let started = std::time::Instant::now();
    // The node closes it after `timeout http-request` (1 s), well before `timeout client`.
    let mut sink = Vec::new();
    tokio::time::timeout(WAIT, slow.read_to_end(&mut sink))
        .await
        .expect("the node closes a connection whose head stalls")
        .ok();
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(900),
        "closed after {waited:?}"
    );
    // Counted and logged as the HTTP/1.1 path's 408 is; the other connection serves on.
    eventually(WAIT, "a 408 in the access log", || async {
        let log = f.dp.proc.log_text();
        log.lines()
            .any(|l| l.contains(" 408 ") && l.contains("<BADREQ>"))
            .then_some(())
    })
    .await;
    assert_eq!(bystander.get("/after", &[]).await.status, 200);
}

#[tokio::test]
async fn a_stream_reset_before_its_answer_stops_that_request_only() {
    use tokio::io::AsyncReadExt;
    // A server that accepts, reads, and never answers; it reports each connection the
    // node closes.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let silent_addr = silent.local_addr().unwrap().to_string();
    let (accepted_tx, mut accepted) = tokio::sync::mpsc::unbounded_channel();
    let (closed_tx, mut closed) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = silent.accept().await {
            let _ = accepted_tx.send(());
            let closed_tx = closed_tx.clone();
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                while matches!(s.read(&mut buf).await, Ok(n) if n > 0) {}
                let _ = closed_tx.send(());
            });
        }
    });
    let f = fixture(&["app-01"], move |bind, addr| {
        json!({
            "defaults": { "timeouts": { "server": "60s" } },
            "frontends": [{
                "name": "web",
                "binds": [{ "address": bind.to_string() }],
                "acls": [{ "name": "slow", "expr": "path_beg /slow" }],
                "use_backend": [{ "backend": "slow", "if": "slow" }],
                "default_backend": "app"
            }],
            "backends": [
                { "name": "slow", "servers": [{ "name": "s1", "address": silent_addr.clone() }] },
                { "name": "app", "servers": [{ "name": "app-01", "address": addr("app-01") }] }
            ]
        })
    })
    .await;
    let tcp = tokio::net::TcpStream::connect(f.bind).await.unwrap();
    let (client, conn) = h2::client::handshake(tcp).await.unwrap();
    tokio::spawn(conn);
    let mut client = client.ready().await.unwrap();
    let req = http::Request::get(format!("http://{}/slow/page", f.bind))
        .body(())
        .unwrap();
    let (_answer, mut stream) = client.send_request(req, true).unwrap();
    tokio::time::timeout(WAIT, accepted.recv())
        .await
        .expect("the request reaches the server");
    // The client gives up on the stream: the node stops that request and closes its
    // server connection, long before `timeout server`.
    stream.send_reset(h2::Reason::CANCEL);
    tokio::time::timeout(WAIT, closed.recv())
        .await
        .expect("the server connection is closed after the reset");
    // The connection and its other streams carry on.
    let mut client = client.ready().await.unwrap();
    let req = http::Request::get(format!("http://{}/after", f.bind))
        .body(())
        .unwrap();
    let (answer, _) = client.send_request(req, true).unwrap();
    let answer = tokio::time::timeout(WAIT, answer).await.unwrap().unwrap();
    assert_eq!(answer.status(), 200);
}
