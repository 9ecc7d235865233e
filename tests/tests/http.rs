//! The HTTP layer through a real node: the article's upgrade/path routing, what reaches
//! the server, keep-alive and the client timeout, weighted round robin, and the errors a
//! client sees when servers fail.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use sluice_tests::harness::{eventually, fixture, http_get, ws_whoami};
use sluice_tests::raw::{get, metrics, raw_head};
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
    // The client's connection options stay with the client: the server gets the node's.
    assert_eq!(seen.header_values("connection"), vec!["upgrade"]);
    assert_eq!(seen.header_values("upgrade"), vec!["WebSocket"]);

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
    // As HAProxy logs them: a deny is refused by the proxy (PR--), a redirect answered
    // locally (LR--).
    for (uri, status, termination) in [
        ("/admin/users", " 403 ", " PR-- "),
        ("/old-home", " 308 ", " LR-- "),
    ] {
        eventually(WAIT, &format!("{uri} logged{termination}"), || async {
            f.dp.proc
                .log_text()
                .lines()
                .any(|l| l.contains(uri) && l.contains(status) && l.contains(termination))
                .then_some(())
        })
        .await;
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
