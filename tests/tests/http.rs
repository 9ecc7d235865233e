//! The HTTP layer through a real node: the article's upgrade/path routing, what reaches
//! the server, keep-alive and the client timeout, weighted round robin, and the errors a
//! client sees when servers fail.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use sluice_tests::harness::{eventually, fixture, free_port, http_get, ws_whoami, Fixture};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const WAIT: Duration = Duration::from_secs(10);

/// The article's frontend (without TLS) in front of echo backends.
fn article_like(bind: SocketAddr, addr: &dyn Fn(&str) -> String) -> Value {
    json!({
        "defaults": {
            "timeouts": { "connect": "2s", "client": "30s", "server": "30s", "tunnel": "1h", "http_request": "5s" },
            "forwardfor": true
        },
        "frontends": [{
            "name": "fe",
            "binds": [{ "address": bind.to_string() }],
            "acls": [
                { "name": "is_websocket", "expr": "hdr(Upgrade) -i websocket" },
                { "name": "is_ws_connection", "expr": "hdr_sub(Connection) -i upgrade" },
                { "name": "ws_path_chat", "expr": "path_beg /ws/chat" },
                { "name": "ws_path_notify", "expr": "path_beg /ws/notifications" }
            ],
            "http_request": [
                { "action": "del-header", "name": "X-Forwarded-For" },
                { "action": "set-header", "name": "X-Forwarded-Proto", "value": "https", "if": "{ ssl_fc }" },
                { "action": "set-header", "name": "X-Forwarded-Proto", "value": "http", "unless": "{ ssl_fc }" },
                { "action": "deny", "status": 403, "if": "{ path_beg /admin } !{ src 10.0.0.0/8 }" },
                { "action": "redirect", "location": "/new-home", "code": 308, "if": "{ path /old-home } || { path /older-home }" }
            ],
            "http_response": [
                { "action": "set-header", "name": "Strict-Transport-Security", "value": "max-age=63072000; includeSubDomains; preload" }
            ],
            "use_backend": [
                { "backend": "chat", "if": "is_websocket is_ws_connection ws_path_chat" },
                { "backend": "notify", "if": "is_websocket is_ws_connection ws_path_notify" },
                { "backend": "ws", "if": "is_websocket is_ws_connection" }
            ],
            "default_backend": "app"
        }],
        "backends": [
            { "name": "chat", "servers": [{ "name": "c1", "address": addr("chat-01") }] },
            { "name": "notify", "servers": [{ "name": "n1", "address": addr("notify-01") }] },
            { "name": "ws", "servers": [{ "name": "w1", "address": addr("ws-01") }] },
            { "name": "app", "servers": [{ "name": "a1", "address": addr("app-01") }] }
        ]
    })
}

/// Sends a raw request and returns the response head.
async fn raw_head(bind: SocketAddr, request: &str) -> String {
    let mut tcp = TcpStream::connect(bind).await.unwrap();
    tcp.write_all(request.as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    tokio::time::timeout(WAIT, async {
        loop {
            let mut chunk = [0u8; 4096];
            let n = tcp.read(&mut chunk).await.unwrap();
            if n == 0 {
                break;
            }
            buf.extend_from_slice(&chunk[..n]);
            if buf.windows(4).any(|w| w == b"\r\n\r\n") {
                break;
            }
        }
    })
    .await
    .expect("a response head");
    String::from_utf8_lossy(&buf).to_string()
}

fn upgrade_request(path: &str, upgrade: &str, connection: Option<&str>) -> String {
    let mut r = format!(
        "GET {path} HTTP/1.1\r\nHost: chat.example\r\nUpgrade: {upgrade}\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\
         Origin: https://chat.example\r\nSec-WebSocket-Protocol: chat, superchat\r\n\
         Sec-WebSocket-Extensions: permessage-deflate\r\n"
    );
    if let Some(c) = connection {
        r.push_str(&format!("Connection: {c}\r\n"));
    }
    r.push_str("\r\n");
    r
}

#[tokio::test]
async fn article_routing_by_upgrade_headers_and_path() {
    let f = fixture(&["chat-01", "notify-01", "ws-01", "app-01"], article_like).await;
    assert_eq!(ws_whoami(f.bind, "/ws/chat/room-1").await, "chat-01");
    assert_eq!(ws_whoami(f.bind, "/ws/notifications").await, "notify-01");
    assert_eq!(ws_whoami(f.bind, "/live").await, "ws-01");

    // Odd case and a Connection header with several tokens still route as WebSocket.
    let head = raw_head(
        f.bind,
        &upgrade_request("/ws/chat", "WebSocket", Some("keep-alive, Upgrade")),
    )
    .await;
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    assert!(
        head.contains("X-Served-By: chat-01")
            || head.to_lowercase().contains("x-served-by: chat-01"),
        "{head}"
    );
    // The server's chosen subprotocol comes back; the handshake headers reached it intact.
    assert!(
        head.to_lowercase()
            .contains("sec-websocket-protocol: chat\r\n"),
        "{head}"
    );
    assert!(
        head.to_lowercase()
            .contains("sec-websocket-accept: s3pplmbitxaq9kygzzhzrbk+xoo="),
        "{head}"
    );
    let seen = f.backend("chat-01").requests().last().cloned().unwrap();
    assert_eq!(seen.header_values("origin"), vec!["https://chat.example"]);
    assert_eq!(
        seen.header_values("sec-websocket-protocol"),
        vec!["chat, superchat"]
    );
    assert_eq!(
        seen.header_values("sec-websocket-extensions"),
        vec!["permessage-deflate"]
    );
    assert_eq!(
        seen.header_values("sec-websocket-key"),
        vec!["dGhlIHNhbXBsZSBub25jZQ=="]
    );

    // Upgrade without Connection: upgrade is not a WebSocket request: HTTP backend.
    let head = raw_head(f.bind, &upgrade_request("/ws/chat", "websocket", None)).await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(head.contains("x-served-by: app-01"), "{head}");

    // Plain HTTP goes to the default backend, with HSTS on the response.
    let (status, body) = http_get(f.bind, "/index.html", &[]).await;
    assert_eq!((status, body["server"].as_str()), (200, Some("app-01")));
    let head = raw_head(f.bind, "GET / HTTP/1.1\r\nHost: x\r\n\r\n").await;
    assert!(
        head.contains("strict-transport-security: max-age=63072000; includeSubDomains; preload"),
        "{head}"
    );

    // deny with a negated inline ACL; redirect with `||`.
    let (status, _) = http_get(f.bind, "/admin/users", &[]).await;
    assert_eq!(status, 403);
    for p in ["/old-home", "/older-home"] {
        let head = raw_head(f.bind, &format!("GET {p} HTTP/1.1\r\nHost: x\r\n\r\n")).await;
        assert!(head.starts_with("HTTP/1.1 308"), "{head}");
        assert!(head.contains("location: /new-home"), "{head}");
    }
}

#[tokio::test]
async fn requests_reach_the_server_as_sent_with_forwarding_headers() {
    let f = fixture(&["chat-01", "notify-01", "ws-01", "app-01"], article_like).await;
    let (status, body) = http_get(
        f.bind,
        "/some/Path%20x?b=2&a=1&a=3",
        &[
            ("Host", "shop.example:8080"),
            ("X-Forwarded-For", "6.6.6.6"),
            ("X-Custom", "kept"),
        ],
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(
        body["uri"], "/some/Path%20x?b=2&a=1&a=3",
        "URI byte-identical"
    );
    let headers: Vec<(String, String)> = serde_json::from_value(body["headers"].clone()).unwrap();
    let get = |n: &str| -> Vec<&str> {
        headers
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case(n))
            .map(|(_, v)| v.as_str())
            .collect()
    };
    assert_eq!(get("host"), vec!["shop.example:8080"]);
    assert_eq!(
        get("x-forwarded-for"),
        vec!["127.0.0.1"],
        "spoofed XFF removed, client IP added"
    );
    assert_eq!(get("x-forwarded-proto"), vec!["http"]);
    assert_eq!(get("x-custom"), vec!["kept"]);
}

#[tokio::test]
async fn keep_alive_serves_several_requests_then_client_timeout_closes() {
    let f = fixture(&["app-01"], |bind, addr| {
        json!({
            "defaults": { "timeouts": { "client": "1s", "http_request": "5s" } },
            "frontends": [{ "name": "fe", "binds": [{ "address": bind.to_string() }], "default_backend": "app" }],
            "backends": [{ "name": "app", "servers": [{ "name": "a1", "address": addr("app-01") }] }]
        })
    })
    .await;
    let mut tcp = TcpStream::connect(f.bind).await.unwrap();
    for i in 0..3 {
        tcp.write_all(format!("GET /r{i} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
            .await
            .unwrap();
        let mut buf = Vec::new();
        while !String::from_utf8_lossy(&buf).contains(&format!("\"uri\":\"/r{i}\"")) {
            let mut chunk = [0u8; 4096];
            let n = tokio::time::timeout(WAIT, tcp.read(&mut chunk))
                .await
                .unwrap()
                .unwrap();
            assert!(n > 0, "keep-alive connection closed after {i} responses");
            buf.extend_from_slice(&chunk[..n]);
        }
    }
    assert_eq!(f.backend("app-01").requests().len(), 3);
    // Idle past `timeout client`: the node closes the connection.
    let idle = Instant::now();
    let mut rest = Vec::new();
    let closed = tokio::time::timeout(WAIT, tcp.read_to_end(&mut rest)).await;
    assert!(
        closed.is_ok(),
        "an idle keep-alive connection outlived 10 s"
    );
    assert!(
        idle.elapsed() >= Duration::from_millis(900),
        "closed after {:?}",
        idle.elapsed()
    );
}

#[tokio::test]
async fn weighted_round_robin_shares_by_weight() {
    let f = fixture(&["heavy", "light"], |bind, addr| {
        json!({
            "frontends": [{ "name": "fe", "binds": [{ "address": bind.to_string() }], "default_backend": "app" }],
            "backends": [{ "name": "app", "balance": "roundrobin", "servers": [
                { "name": "heavy", "address": addr("heavy"), "weight": 3 },
                { "name": "light", "address": addr("light"), "weight": 1 },
                { "name": "off", "address": addr("off"), "weight": 1, "state": "maint" }
            ] }]
        })
    })
    .await;
    let mut counts = std::collections::HashMap::new();
    for _ in 0..40 {
        let (status, body) = http_get(f.bind, "/", &[]).await;
        assert_eq!(status, 200);
        *counts
            .entry(body["server"].as_str().unwrap().to_string())
            .or_insert(0) += 1;
    }
    assert_eq!(counts.get("heavy"), Some(&30), "{counts:?}");
    assert_eq!(counts.get("light"), Some(&10), "{counts:?}");
}

#[tokio::test]
async fn failures_get_clear_statuses() {
    // A server that accepts and never answers.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let silent_addr = silent.local_addr().unwrap().to_string();
    let _hold = tokio::spawn(async move {
        let mut open = Vec::new();
        while let Ok((s, _)) = silent.accept().await {
            open.push(s);
        }
    });
    let f = fixture(&["app-01"], move |bind, addr| {
        json!({
            "defaults": { "timeouts": { "connect": "1s", "server": "1s" }, "retries": 1 },
            "frontends": [{
                "name": "fe",
                "binds": [{ "address": bind.to_string() }],
                "acls": [
                    { "name": "down", "expr": "path_beg /down" },
                    { "name": "slow", "expr": "path_beg /slow" },
                    { "name": "empty", "expr": "path_beg /empty" },
                    { "name": "nowhere", "expr": "path_beg /nowhere" }
                ],
                "use_backend": [
                    { "backend": "down", "if": "down" },
                    { "backend": "slow", "if": "slow" },
                    { "backend": "empty", "if": "empty" },
                    { "backend": "app", "unless": "nowhere" }
                ]
            }],
            "backends": [
                { "name": "down", "servers": [{ "name": "d1", "address": addr("nobody-listens") }] },
                { "name": "slow", "servers": [{ "name": "s1", "address": silent_addr.clone() }] },
                { "name": "empty", "servers": [{ "name": "m1", "address": addr("app-01"), "state": "maint" }] },
                { "name": "app", "servers": [{ "name": "a1", "address": addr("app-01") }] }
            ]
        })
    })
    .await;
    assert_eq!(
        http_get(f.bind, "/down", &[]).await.0,
        503,
        "connect refused after retries"
    );
    let started = Instant::now();
    assert_eq!(
        http_get(f.bind, "/slow", &[]).await.0,
        504,
        "no response within timeout server"
    );
    assert!(started.elapsed() >= Duration::from_millis(900));
    assert_eq!(
        http_get(f.bind, "/empty", &[]).await.0,
        503,
        "only a server in maintenance"
    );
    assert_eq!(
        http_get(f.bind, "/nowhere", &[]).await.0,
        503,
        "no backend matched, no default"
    );
    let head = raw_head(f.bind, "GET / HTTP/1.1\r\nHost x\r\n\r\n").await;
    assert!(
        head.starts_with("HTTP/1.1 400"),
        "malformed request: {head}"
    );
    let huge = format!(
        "GET / HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n",
        "a".repeat(100 * 1024)
    );
    let head = raw_head(f.bind, &huge).await;
    assert!(head.starts_with("HTTP/1.1 431"), "oversized head: {head}");
    // The node is unharmed.
    assert_eq!(http_get(f.bind, "/", &[]).await.0, 200);

    // Each failure is counted by kind where it happened.
    let metrics = metrics(&f).await;
    for line in [
        "sluice_server_errors_total{backend=\"down\",server=\"d1\",kind=\"connect\"} 2",
        "sluice_server_errors_total{backend=\"slow\",server=\"s1\",kind=\"timeout\"} 1",
        "sluice_backend_no_server_total{backend=\"empty\"} 1",
        "sluice_server_responses_total{backend=\"app\",server=\"a1\",code=\"2xx\"} 1",
        "sluice_frontend_invalid_requests_total{frontend=\"fe\"} 2",
        "sluice_frontend_responses_total{frontend=\"fe\",code=\"4xx\"} 2",
        "sluice_frontend_responses_total{frontend=\"fe\",code=\"5xx\"} 4",
    ] {
        assert!(
            metrics.lines().any(|l| l == line),
            "no {line:?} in\n{metrics}"
        );
    }
}

#[tokio::test]
async fn maxconn_holds_new_connections_until_one_closes() {
    let f = fixture(&["ws-01"], |bind, addr| {
        json!({
            "defaults": { "maxconn": 2 },
            "frontends": [{ "name": "fe", "binds": [{ "address": bind.to_string() }], "default_backend": "ws" }],
            "backends": [{ "name": "ws", "servers": [{ "name": "w1", "address": addr("ws-01") }] }]
        })
    })
    .await;
    let first = sluice_tests::harness::ws_connect(f.bind, "/a").await;
    let _second = sluice_tests::harness::ws_connect(f.bind, "/b").await;

    // The third connection is queued by the kernel, not served.
    let mut third = TcpStream::connect(f.bind).await.unwrap();
    third
        .write_all(upgrade_request("/c", "websocket", Some("Upgrade")).as_bytes())
        .await
        .unwrap();
    let mut buf = [0u8; 1024];
    let early = tokio::time::timeout(Duration::from_millis(700), third.read(&mut buf)).await;
    assert!(early.is_err(), "served beyond maxconn: {early:?}");
    assert_eq!(f.backend("ws-01").open_tunnels(), 2);

    // One tunnel closes: the waiting connection gets its 101.
    drop(first);
    let n = tokio::time::timeout(WAIT, third.read(&mut buf))
        .await
        .expect("served once a slot was free")
        .unwrap();
    let head = String::from_utf8_lossy(&buf[..n]).to_string();
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
}

/// The node's Prometheus metrics, as text.
async fn metrics(f: &Fixture) -> String {
    let url = format!("{}/metrics", f.dp.admin);
    reqwest::get(url).await.unwrap().text().await.unwrap()
}

/// Sends a raw request and returns everything the node sends until it closes.
async fn raw_exchange(bind: SocketAddr, request: &str) -> String {
    let mut tcp = TcpStream::connect(bind).await.unwrap();
    tcp.write_all(request.as_bytes()).await.unwrap();
    read_until_closed(&mut tcp).await
}

/// One complete response (head and its `content-length` body) from a connection that
/// stays open.
async fn read_response(tcp: &mut TcpStream) -> String {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let text = String::from_utf8_lossy(&buf).to_string();
        if let Some(end) = text.find("\r\n\r\n") {
            let length = text[..end]
                .lines()
                .find_map(|l| {
                    let (name, value) = l.split_once(':')?;
                    name.eq_ignore_ascii_case("content-length")
                        .then(|| value.trim().parse::<usize>().ok())?
                })
                .unwrap_or(0);
            if buf.len() >= end + 4 + length {
                return text;
            }
        }
        let n = tokio::time::timeout(WAIT, tcp.read(&mut chunk))
            .await
            .expect("a response")
            .unwrap();
        assert!(n > 0, "closed after {text:?}");
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// Everything the node sends until it closes the connection.
async fn read_until_closed(tcp: &mut TcpStream) -> String {
    let mut buf = Vec::new();
    tokio::time::timeout(WAIT, tcp.read_to_end(&mut buf))
        .await
        .expect("the node closes the connection")
        .unwrap();
    String::from_utf8_lossy(&buf).to_string()
}

/// One row of the article table: a raw request and what the client must see.
struct Case {
    what: &'static str,
    request: String,
    status: u16,
    /// `x-served-by` the response must carry (the server that answered), if any.
    served_by: Option<&'static str>,
    /// Lines the response head must contain (lower-case header names).
    head_has: &'static [&'static str],
}

fn get(path: &str, extra: &str) -> String {
    format!("GET {path} HTTP/1.1\r\nHost: shop.example\r\n{extra}\r\n")
}

#[tokio::test]
async fn article_examples_table() {
    let f = fixture(&["chat-01", "notify-01", "ws-01", "app-01"], |bind, addr| {
        let mut doc = article_like(bind, addr);
        let rules = doc["frontends"][0]["http_request"].as_array_mut().unwrap();
        // The article's `redirect scheme https code 301 unless { ssl_fc }`, limited to one
        // host here so the rest of the table stays on plain HTTP.
        rules.insert(
            0,
            json!({ "action": "redirect", "scheme": "https", "code": 301,
                    "if": "{ hdr(host) -i secure.example } !{ ssl_fc }" }),
        );
        rules.push(json!({ "action": "deny", "status": 429,
                           "if": "{ hdr_cnt(X-Probe) gt 1 } or { url_param(probe) -m found }" }));
        rules.push(json!({ "action": "return", "status": 200, "content_type": "text/plain", "body": "pong",
                           "if": "{ path /ping } !{ method POST }" }));
        doc
    })
    .await;
    let ws = |path: &str, upgrade: &str, connection: Option<&str>| {
        upgrade_request(path, upgrade, connection)
    };
    let cases = [
        Case {
            what: "upgrade headers in odd case",
            request: ws("/ws/chat/1", "WebSocket", Some("upgrade")),
            status: 101,
            served_by: Some("chat-01"),
            head_has: &["sec-websocket-protocol: chat"],
        },
        Case {
            what: "Connection: keep-alive, Upgrade",
            request: ws(
                "/ws/notifications",
                "websocket",
                Some("keep-alive, Upgrade"),
            ),
            status: 101,
            served_by: Some("notify-01"),
            head_has: &[],
        },
        Case {
            what: "any other WebSocket path → generic pool",
            request: ws("/feed", "websocket", Some("Upgrade")),
            status: 101,
            served_by: Some("ws-01"),
            head_has: &[],
        },
        Case {
            what: "Upgrade without Connection → HTTP backend",
            request: ws("/ws/chat/1", "websocket", None),
            status: 200,
            served_by: Some("app-01"),
            head_has: &[],
        },
        Case {
            what: "Connection: upgrade without Upgrade → HTTP backend",
            request: get("/ws/chat/1", "Connection: Upgrade\r\n"),
            status: 200,
            served_by: Some("app-01"),
            head_has: &[],
        },
        Case {
            what: "plain request → default backend, HSTS added",
            request: get("/", ""),
            status: 200,
            served_by: Some("app-01"),
            head_has: &["strict-transport-security: max-age=63072000; includeSubDomains; preload"],
        },
        Case {
            what: "redirect to https unless TLS",
            request: "GET /login?x=1 HTTP/1.1\r\nHost: secure.example\r\n\r\n".to_string(),
            status: 301,
            served_by: None,
            head_has: &["location: https://secure.example/login?x=1"],
        },
        Case {
            what: "deny with ! on an inline src ACL",
            request: get("/admin/x", ""),
            status: 403,
            served_by: None,
            head_has: &[],
        },
        Case {
            what: "or between groups (first)",
            request: get("/old-home", ""),
            status: 308,
            served_by: None,
            head_has: &["location: /new-home"],
        },
        Case {
            what: "or between groups (second)",
            request: get("/older-home", ""),
            status: 308,
            served_by: None,
            head_has: &["location: /new-home"],
        },
        Case {
            what: "hdr_cnt gt",
            request: get("/", "X-Probe: a\r\nX-Probe: b\r\n"),
            status: 429,
            served_by: None,
            head_has: &[],
        },
        Case {
            what: "hdr_cnt not gt",
            request: get("/", "X-Probe: a\r\n"),
            status: 200,
            served_by: Some("app-01"),
            head_has: &[],
        },
        Case {
            what: "url_param -m found",
            request: get("/search?q=1&probe", ""),
            status: 429,
            served_by: None,
            head_has: &[],
        },
        Case {
            what: "return, negated method",
            request: get("/ping", ""),
            status: 200,
            served_by: None,
            head_has: &["content-type: text/plain"],
        },
        Case {
            what: "return skipped for POST",
            request: "POST /ping HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n".to_string(),
            status: 200,
            served_by: Some("app-01"),
            head_has: &[],
        },
    ];
    for case in &cases {
        let head = raw_head(f.bind, &case.request).await;
        let lower = head.to_ascii_lowercase();
        assert!(
            head.starts_with(&format!("HTTP/1.1 {}", case.status)),
            "{}: {head}",
            case.what
        );
        match case.served_by {
            Some(s) => assert!(
                lower.contains(&format!("x-served-by: {s}")),
                "{}: {head}",
                case.what
            ),
            None => assert!(!lower.contains("x-served-by"), "{}: {head}", case.what),
        }
        for line in case.head_has {
            assert!(
                lower.contains(&line.to_ascii_lowercase()),
                "{}: no {line:?} in {head}",
                case.what
            );
        }
    }
}

#[tokio::test]
async fn errorfiles_after_response_rules_and_slow_headers() {
    let f = fixture(&["app-01"], |bind, addr| {
        json!({
            "defaults": {
                "timeouts": { "connect": "1s", "http_request": "600ms" },
                "retries": 0,
                "errorfiles": [
                    { "status": 503, "content_type": "application/json", "body": "{\"error\":\"maintenance\"}" },
                    { "status": 408, "body": "<p>too slow</p>" },
                    { "status": 403, "body": "<p>defaults 403</p>" },
                    { "status": 400, "content_type": "text/plain", "body": "bad request page" },
                    { "status": 431, "content_type": "text/plain", "body": "too large page" }
                ],
                "max_headers": 5
            },
            "frontends": [{
                "name": "fe",
                "binds": [{ "address": bind.to_string() }],
                "errorfiles": [{ "status": 403, "content_type": "text/plain", "body": "frontend 403" }],
                "http_request": [{ "action": "deny", "status": 403, "if": "{ path_beg /private }" }],
                "http_after_response": [
                    { "action": "set-header", "name": "X-Via", "value": "sluice" },
                    { "action": "del-header", "name": "X-Served-By", "if": "{ path_beg /hide }" }
                ],
                "use_backend": [{ "backend": "down", "if": "{ path_beg /down }" }],
                "default_backend": "app"
            }],
            "backends": [
                { "name": "down", "servers": [{ "name": "d1", "address": addr("nobody-listens") }] },
                { "name": "app", "servers": [{ "name": "a1", "address": addr("app-01") }] }
            ]
        })
    })
    .await;
    let close = "Connection: close\r\n";

    // 503 from the node: the configured body and type, and the after-response header.
    let r = raw_exchange(f.bind, &get("/down", close)).await;
    assert!(r.starts_with("HTTP/1.1 503"), "{r}");
    assert!(r.contains("content-type: application/json"), "{r}");
    assert!(r.ends_with("{\"error\":\"maintenance\"}"), "{r}");
    assert!(r.to_ascii_lowercase().contains("x-via: sluice"), "{r}");

    // A denial: the frontend's errorfile wins over the defaults'.
    let r = raw_exchange(f.bind, &get("/private", close)).await;
    assert!(r.starts_with("HTTP/1.1 403"), "{r}");
    assert!(r.ends_with("frontend 403"), "{r}");
    assert!(r.to_ascii_lowercase().contains("x-via: sluice"), "{r}");

    // Server responses get after-response rules too, conditions included.
    let head = raw_head(f.bind, &get("/", "")).await.to_ascii_lowercase();
    assert!(
        head.contains("x-via: sluice") && head.contains("x-served-by: app-01"),
        "{head}"
    );
    let head = raw_head(f.bind, &get("/hide", ""))
        .await
        .to_ascii_lowercase();
    assert!(
        head.contains("x-via: sluice") && !head.contains("x-served-by"),
        "{head}"
    );

    // The parser's own refusals, answered before a request exists, carry the errorfiles
    // too and close the connection.
    let r = raw_exchange(f.bind, "GET / HTTP/1.1\r\nHost x\r\n\r\n").await;
    assert!(r.starts_with("HTTP/1.1 400"), "{r}");
    assert!(r.contains("content-type: text/plain"), "{r}");
    assert!(r.contains("connection: close"), "{r}");
    assert!(r.ends_with("bad request page"), "{r}");
    let many: String = (0..8).map(|i| format!("X-H{i}: v\r\n")).collect();
    let r = raw_exchange(f.bind, &get("/", &many)).await;
    assert!(r.starts_with("HTTP/1.1 431"), "{r}");
    assert!(r.ends_with("too large page"), "{r}");
    // Also after a complete exchange on the same connection: the first response is the
    // server's, the refusal of the malformed second request is the node's page.
    let mut tcp = TcpStream::connect(f.bind).await.unwrap();
    tcp.write_all(get("/", "").as_bytes()).await.unwrap();
    let first = read_response(&mut tcp).await;
    assert!(first.starts_with("HTTP/1.1 200"), "{first}");
    tcp.write_all(b"GET / HTTP/1.1\r\nHost x\r\n\r\n")
        .await
        .unwrap();
    let r = read_until_closed(&mut tcp).await;
    assert!(
        r.starts_with("HTTP/1.1 400") && r.ends_with("bad request page"),
        "{r}"
    );
    // A server's own 400 and 431 reach the client as the server sent them.
    for status in ["400", "431"] {
        let r = raw_exchange(f.bind, &get(&format!("/status/{status}"), close)).await;
        assert!(r.starts_with(&format!("HTTP/1.1 {status}")), "{r}");
        assert!(
            r.contains("x-served-by: app-01") && !r.contains(" page"),
            "{r}"
        );
    }

    // Headers that never complete: 408 with the errorfile once timeout http-request
    // passes, then the connection closes. Trickling bytes does not extend it.
    let started = Instant::now();
    let mut tcp = TcpStream::connect(f.bind).await.unwrap();
    tcp.write_all(b"GET / HTTP/1.1\r\nHost: a\r\n")
        .await
        .unwrap();
    for _ in 0..3 {
        tokio::time::sleep(Duration::from_millis(150)).await;
        let _ = tcp.write_all(b"X-Slow: 1\r\n").await;
    }
    let r = read_until_closed(&mut tcp).await;
    assert!(r.starts_with("HTTP/1.1 408"), "{r}");
    assert!(r.ends_with("<p>too slow</p>"), "{r}");
    let waited = started.elapsed();
    assert!(waited >= Duration::from_millis(550), "408 after {waited:?}");

    // A connection that sends nothing gets the same 408.
    let r = raw_exchange(f.bind, "").await;
    assert!(r.starts_with("HTTP/1.1 408"), "{r}");

    // A keep-alive connection idle after a complete exchange is not answered with 408:
    // the timer only runs from the first byte of a next request.
    let mut tcp = TcpStream::connect(f.bind).await.unwrap();
    tcp.write_all(get("/", "").as_bytes()).await.unwrap();
    let mut chunk = [0u8; 4096];
    let n = tcp.read(&mut chunk).await.unwrap();
    assert!(String::from_utf8_lossy(&chunk[..n]).starts_with("HTTP/1.1 200"));
    let idle = tokio::time::timeout(Duration::from_millis(1200), tcp.read(&mut chunk)).await;
    assert!(idle.is_err(), "idle keep-alive connection got {idle:?}");
    tcp.write_all(get("/", close).as_bytes()).await.unwrap();
    let n = tcp.read(&mut chunk).await.unwrap();
    assert!(String::from_utf8_lossy(&chunk[..n]).starts_with("HTTP/1.1 200"));

    // The refused requests show in the node's metrics.
    let metrics = metrics(&f).await;
    let invalid = metrics
        .lines()
        .find(|l| l.starts_with("sluice_frontend_invalid_requests_total{frontend=\"fe\"}"))
        .unwrap_or_else(|| panic!("no invalid-requests metric in {metrics}"));
    // Two 408s, two 400s, one 431.
    assert!(invalid.ends_with(" 5"), "{invalid}");
}

#[tokio::test]
async fn request_smuggling_defences() {
    let f = fixture(&["app-01"], |bind, addr| {
        json!({
            "frontends": [{ "name": "fe", "binds": [{ "address": bind.to_string() }], "default_backend": "app" }],
            "backends": [{ "name": "app", "servers": [{ "name": "a1", "address": addr("app-01") }] }]
        })
    })
    .await;
    let post = |headers: &str, body: &str| {
        format!("POST /upload HTTP/1.1\r\nHost: a\r\n{headers}\r\n{body}")
    };
    // Refused outright, and nothing reaches the server.
    for (what, request) in [
        (
            "conflicting Content-Length",
            post("Content-Length: 5\r\nContent-Length: 6\r\n", "hello!"),
        ),
        (
            "Content-Length not a number",
            post("Content-Length: 5x\r\n", "hello"),
        ),
        (
            "unsupported Transfer-Encoding",
            post("Transfer-Encoding: gzip\r\n", "hello"),
        ),
        (
            "chunked not last",
            post("Transfer-Encoding: chunked, gzip\r\n", "0\r\n\r\n"),
        ),
        (
            "Transfer-Encoding on HTTP/1.0",
            "POST /upload HTTP/1.0\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
                .to_string(),
        ),
        (
            "space before the colon",
            post("Content-Length : 5\r\n", "hello"),
        ),
    ] {
        let r = raw_exchange(f.bind, &request).await;
        assert!(r.starts_with("HTTP/1.1 400"), "{what}: {r}");
    }
    assert!(
        f.backend("app-01").requests().is_empty(),
        "{:?}",
        f.backend("app-01").requests()
    );

    // Content-Length with chunked: chunked wins (RFC 9112 §6.1), the length is dropped,
    // and the client connection closes after the response.
    let request = post(
        "Content-Length: 4\r\nTransfer-Encoding: chunked\r\n",
        "5\r\nhello\r\n6\r\n world\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: a\r\n\r\n",
    );
    let r = raw_exchange(f.bind, &request).await;
    assert!(r.starts_with("HTTP/1.1 200"), "{r}");
    assert_eq!(r.matches("HTTP/1.1").count(), 1, "one response only: {r}");
    let seen = f.backend("app-01").requests();
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert_eq!(seen[0].body, b"hello world");
    assert!(
        seen[0].header_values("content-length").is_empty(),
        "{seen:?}"
    );
}

#[tokio::test]
async fn server_keep_alive_pool_versus_http_server_close() {
    let f = fixture(&["pooled-01", "closing-01"], |bind, addr| {
        json!({
            "frontends": [{
                "name": "fe",
                "binds": [{ "address": bind.to_string() }],
                "use_backend": [{ "backend": "closing", "if": "{ path_beg /close }" }],
                "default_backend": "pooled"
            }],
            "backends": [
                { "name": "pooled", "servers": [{ "name": "p1", "address": addr("pooled-01") }] },
                { "name": "closing", "http_server_close": true, "servers": [{ "name": "c1", "address": addr("closing-01") }] }
            ]
        })
    })
    .await;
    // Separate client connections, one request each, one after the other.
    for i in 0..4 {
        let r = raw_exchange(f.bind, &get(&format!("/p{i}"), "Connection: close\r\n")).await;
        assert!(r.starts_with("HTTP/1.1 200"), "{r}");
        let r = raw_exchange(f.bind, &get(&format!("/close{i}"), "Connection: close\r\n")).await;
        assert!(r.starts_with("HTTP/1.1 200"), "{r}");
    }
    let pooled = f.backend("pooled-01").requests();
    assert_eq!(pooled.len(), 4);
    assert!(
        pooled.iter().all(|r| r.connection == pooled[0].connection),
        "keep-alive to the server reuses one connection: {:?}",
        pooled.iter().map(|r| r.connection).collect::<Vec<_>>()
    );
    assert!(
        pooled
            .iter()
            .all(|r| r.header_values("connection").is_empty()),
        "{pooled:?}"
    );
    let closing = f.backend("closing-01").requests();
    let conns: std::collections::HashSet<_> = closing.iter().map(|r| r.connection).collect();
    assert_eq!(
        conns.len(),
        4,
        "http-server-close: a connection per request"
    );
    assert!(
        closing
            .iter()
            .all(|r| r.header_values("connection") == ["close"]),
        "{closing:?}"
    );

    // The upgrade path works with both and never takes a pooled connection.
    assert_eq!(ws_whoami(f.bind, "/ws").await, "pooled-01");
    assert_eq!(ws_whoami(f.bind, "/close/ws").await, "closing-01");
    let last = f.backend("pooled-01").requests().last().unwrap().connection;
    assert_ne!(
        last, pooled[0].connection,
        "the upgrade got its own server connection"
    );
}

#[tokio::test]
async fn acl_fetches_matchers_and_conditions_table() {
    // Each row adds `x-acl-N: 1` to the request when its condition holds; the backend
    // records what arrived, so every row is judged on the real request path.
    // (condition, holds for request A, holds for request B)
    let rows: Vec<(String, bool, bool)> = {
        vec![
            ("{ hdr(upgrade) -i WEBSOCKET }", true, false),
            ("{ hdr(Upgrade) WebSocket }", false, false),
            ("{ hdr(Upgrade) websocket }", true, false),
            ("{ hdr_sub(connection) -i upgrade }", true, false),
            ("{ hdr_beg(user-agent) Mozilla }", true, false),
            ("{ hdr_end(user-agent) Firefox }", true, false),
            ("{ hdr_reg(user-agent) ^Moz.*fox$ }", true, false),
            ("{ hdr_cnt(x-multi) eq 2 }", true, false),
            ("{ hdr_cnt(x-multi) gt 2 }", false, false),
            ("{ hdr_cnt(x-multi) lt 1 }", false, true),
            ("{ hdr(x-missing) -m found }", false, false),
            ("{ hdr(upgrade) -m found }", true, false),
            ("{ hdr(upgrade) -m len 9 }", true, false),
            ("{ hdr(x-multi) b }", true, false),
            ("{ path /ws/chat/room.html }", true, false),
            ("{ path_beg /ws/ }", true, false),
            ("{ path_end .html }", true, false),
            ("{ path_sub chat }", true, false),
            ("{ path_reg ^/ws/[a-z]+/ }", true, false),
            ("{ path -m beg /api }", false, true),
            ("{ path -m end .html }", true, false),
            ("{ path -m reg ^/api/v[0-9]+$ }", false, true),
            ("{ hdr_cnt(x-multi) le 2 }", true, true),
            ("{ url_param(room) 42 }", true, false),
            ("{ url_param(user) -m beg bo }", true, false),
            ("{ url_param(x) -m found }", false, true),
            ("{ query -m sub user=bob }", true, false),
            ("{ host -i chat.example.com }", true, false),
            // `host` is lower-cased (hostnames are case-insensitive), port stripped.
            ("{ host chat.example.com }", true, false),
            ("{ host Chat.Example.com }", false, false),
            ("{ host other.example }", false, true),
            ("{ method GET }", true, false),
            ("{ method POST PUT }", false, true),
            ("{ src 127.0.0.0/8 }", true, true),
            ("{ src 10.0.0.0/8 192.168.0.0/16 }", false, false),
            ("{ src 127.0.0.1 }", true, true),
            // IPv6 addresses and prefixes: no match for these IPv4 clients (an IPv6
            // client follows below).
            ("{ src ::1 }", false, false),
            ("{ src 2001:db8::/32 ::1/128 }", false, false),
            ("{ dst_port lt 1 }", false, false),
            ("{ dst_port ge 1 }", true, true),
            ("{ ssl_fc }", false, false),
            ("{ cookie(WSID) ws02 }", true, false),
            ("{ cookie(SESSION) -m beg ab }", true, false),
            ("{ cookie(NOPE) -m found }", false, false),
            ("{ sc_conn_cur(0) gt 100 }", false, false),
            ("is_ws", true, false),
            ("multi", true, true),
            ("{ path_beg /ws } { method GET }", true, false),
            ("{ path_beg /ws } { method POST }", false, false),
            ("{ path_beg /nope } || { method GET }", true, false),
            ("{ path_beg /nope } or { method POST }", false, true),
            ("!{ path_beg /nope }", true, true),
            ("!is_ws", false, true),
            ("is_ws !{ ssl_fc } or { host other.example }", true, true),
        ]
        .into_iter()
        .map(|(c, a, b)| (c.to_string(), a, b))
        .collect()
    };
    let table = rows.clone();
    let v6: SocketAddr = format!("[::1]:{}", free_port()).parse().unwrap();
    let f = fixture(&["app-01"], move |bind, addr| {
        let rules: Vec<Value> = table
            .iter()
            .enumerate()
            .map(|(i, (c, _, _))| json!({ "action": "add-header", "name": format!("x-acl-{i}"), "value": "1", "if": c }))
            .chain([json!({ "action": "add-header", "name": "x-acl-unless", "value": "1", "unless": "{ method GET }" })])
            .collect();
        json!({
            "frontends": [{
                "name": "fe",
                "binds": [{ "address": bind.to_string() }, { "address": v6.to_string() }],
                "acls": [
                    { "name": "is_ws", "expr": "hdr(Upgrade) -i websocket" },
                    { "name": "multi", "expr": "path_beg /nope" },
                    { "name": "multi", "expr": "path_beg /ws /api" }
                ],
                "http_request": rules,
                "default_backend": "app"
            }],
            "backends": [{ "name": "app", "servers": [{ "name": "a1", "address": addr("app-01") }] }]
        })
    })
    .await;
    let a = "GET /ws/chat/room.html?room=42&user=bob HTTP/1.1\r\nHost: Chat.Example.com:8080\r\n\
             Upgrade: websocket\r\nConnection: keep-alive, Upgrade\r\nCookie: SESSION=abc; WSID=ws02\r\n\
             X-Multi: a\r\nX-Multi: b\r\nUser-Agent: Mozilla/5.0 Firefox\r\nConnection: close\r\n\r\n";
    let b = "POST /api/v1?x=1 HTTP/1.1\r\nHost: other.example\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";
    for (which, request) in [("A", a), ("B", b)] {
        let r = raw_exchange(f.bind, request).await;
        assert!(r.starts_with("HTTP/1.1 200"), "request {which}: {r}");
        let seen = f.backend("app-01").requests().pop().unwrap();
        for (i, (cond, in_a, in_b)) in rows.iter().enumerate() {
            let expected = if which == "A" { *in_a } else { *in_b };
            let got = !seen.header_values(&format!("x-acl-{i}")).is_empty();
            assert_eq!(got, expected, "request {which}: `{cond}`");
        }
        let unless = !seen.header_values("x-acl-unless").is_empty();
        assert_eq!(
            unless,
            which == "B",
            "request {which}: unless {{ method GET }}"
        );
    }
    // Request A from an IPv6 client: the IPv6 `src` rows hold, the IPv4 ones do not.
    let r = raw_exchange(v6, a).await;
    assert!(r.starts_with("HTTP/1.1 200"), "IPv6 client: {r}");
    let seen = f.backend("app-01").requests().pop().unwrap();
    for (cond, holds) in [
        ("{ src ::1 }", true),
        ("{ src 2001:db8::/32 ::1/128 }", true),
        ("{ src 127.0.0.0/8 }", false),
        ("{ path_beg /ws/ }", true),
    ] {
        let i = rows.iter().position(|(c, _, _)| c == cond).unwrap();
        let got = !seen.header_values(&format!("x-acl-{i}")).is_empty();
        assert_eq!(got, holds, "IPv6 client: `{cond}`");
    }
}

#[tokio::test]
async fn request_and_response_rewrites() {
    let f = fixture(&["app-01"], |bind, addr| {
        json!({
            "frontends": [{
                "name": "fe",
                "binds": [{ "address": bind.to_string() }],
                "http_request": [
                    { "action": "redirect", "prefix": "https://new.example", "code": 302, "if": "{ path_beg /moved }" },
                    { "action": "redirect", "location": "/login", "code": 303, "if": "{ path /account } !{ cookie(SESSION) -m found }" },
                    { "action": "redirect", "location": "/upload-here", "code": 307, "if": "{ path /upload }" },
                    { "action": "set-path", "path": "/v2/items", "if": "{ path /v1/items }" },
                    { "action": "replace-header", "name": "X-Tenant", "regex": "^acme-(.*)$", "replacement": "tenant-$1" },
                    { "action": "add-header", "name": "X-Trace", "value": "node" },
                    // Later rules see the rewritten request.
                    { "action": "set-header", "name": "X-Saw-V2", "value": "yes", "if": "{ path_beg /v2 }" }
                ],
                "http_response": [
                    { "action": "del-header", "name": "X-Served-By", "if": "{ path_beg /v2 }" },
                    { "action": "add-header", "name": "X-Resp", "value": "1" }
                ],
                "default_backend": "app"
            }],
            "backends": [{ "name": "app", "servers": [{ "name": "a1", "address": addr("app-01") }] }]
        })
    })
    .await;
    let head = raw_head(f.bind, &get("/moved/x?y=1", "")).await;
    assert!(head.starts_with("HTTP/1.1 302"), "{head}");
    assert!(
        head.contains("location: https://new.example/moved/x?y=1"),
        "{head}"
    );
    let head = raw_head(f.bind, &get("/account", "")).await;
    assert!(
        head.starts_with("HTTP/1.1 303") && head.contains("location: /login"),
        "{head}"
    );
    let head = raw_head(f.bind, &get("/account", "Cookie: SESSION=1\r\n")).await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let head = raw_head(f.bind, &get("/upload", "")).await;
    assert!(
        head.starts_with("HTTP/1.1 307") && head.contains("location: /upload-here"),
        "{head}"
    );

    let head = raw_head(
        f.bind,
        &get(
            "/v1/items?page=2",
            "X-Tenant: acme-blue\r\nX-Trace: client\r\n",
        ),
    )
    .await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let lower = head.to_ascii_lowercase();
    assert!(
        lower.contains("x-resp: 1") && !lower.contains("x-served-by"),
        "{head}"
    );
    let seen = f.backend("app-01").requests().pop().unwrap();
    assert_eq!(seen.uri, "/v2/items?page=2", "the query survives set-path");
    assert_eq!(seen.header_values("x-tenant"), ["tenant-blue"]);
    assert_eq!(seen.header_values("x-trace"), ["client", "node"]);
    assert_eq!(seen.header_values("x-saw-v2"), ["yes"]);
}

#[tokio::test]
async fn header_limits_are_configurable() {
    let wide: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let f = fixture(&["app-01"], |bind, addr| {
        json!({
            "defaults": { "max_header_bytes": 2048, "max_headers": 5 },
            "frontends": [
                { "name": "fe", "binds": [{ "address": bind.to_string() }], "default_backend": "app" },
                { "name": "wide", "binds": [{ "address": wide.to_string() }], "default_backend": "app",
                  "max_header_bytes": 131072 }
            ],
            "backends": [{ "name": "app", "servers": [{ "name": "a1", "address": addr("app-01") }] }]
        })
    })
    .await;
    let close = "Connection: close\r\n";
    let r = raw_exchange(f.bind, &get("/", &format!("X-A: 1\r\nX-B: 2\r\n{close}"))).await;
    assert!(r.starts_with("HTTP/1.1 200"), "{r}");
    let many: String = (0..8).map(|i| format!("X-H{i}: v\r\n")).collect();
    let r = raw_exchange(f.bind, &get("/", &format!("{many}{close}"))).await;
    assert!(r.starts_with("HTTP/1.1 431"), "more than max_headers: {r}");
    let big = format!("X-Big: {}\r\n{close}", "b".repeat(3000));
    let r = raw_exchange(f.bind, &get("/", &big)).await;
    assert!(r.starts_with("HTTP/1.1 431"), "over max_header_bytes: {r}");
    assert_eq!(f.backend("app-01").requests().len(), 1);

    // Under a head limit above 64 KiB, a request target over 64 KiB is refused with 414
    // (the default page), logged and counted as such.
    let long = format!("GET /{} HTTP/1.1\r\nHost: x\r\n\r\n", "u".repeat(70 * 1024));
    let r = raw_exchange(wide, &long).await;
    assert!(r.starts_with("HTTP/1.1 414"), "{}", &r[..r.len().min(200)]);
    assert!(r.contains("<h1>414 URI Too Long</h1>"), "{r}");
    eventually(WAIT, "the 414 in the access log", || async {
        f.dp.proc
            .log_text()
            .lines()
            .any(|l| {
                l.contains(" wide <NOSRV>/<NOSRV> ") && l.contains(" 414 ") && l.contains(" PR-- ")
            })
            .then_some(())
    })
    .await;
    assert_eq!(f.backend("app-01").requests().len(), 1);

    // Out-of-range limits are refused by the API, naming the field.
    let r =
        f.cp.api()
            .request(
                "POST",
                "/api/v1/config/validate",
                Some(&json!({ "defaults": { "max_header_bytes": 10, "max_headers": 0 } })),
                None,
            )
            .await;
    assert_eq!(r.status, 422, "{:?}", r.json);
    let text = r.json.to_string();
    assert!(
        text.contains("defaults.max_header_bytes") && text.contains("defaults.max_headers"),
        "{text}"
    );
}
