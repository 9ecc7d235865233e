//! The HTTP layer's rules and defences through a real node: ACL fetches, matchers and
//! conditions, rewrites, errorfiles and after-response rules, request smuggling, server
//! keep-alive pools and header limits.

use std::time::{Duration, Instant};

use serde_json::{json, Value};
use sluice_tests::harness::{any_port, eventually, fixture, ws_whoami};
use sluice_tests::raw::{
    get, metrics, raw_exchange, raw_head, read_response, read_until_closed, upgrade,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const WAIT: Duration = Duration::from_secs(10);

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
    let r = read_response(&mut tcp).await;
    assert!(r.starts_with("HTTP/1.1 200"), "{r}");
    let mut chunk = [0u8; 4096];
    let idle = tokio::time::timeout(Duration::from_millis(1200), tcp.read(&mut chunk)).await;
    assert!(idle.is_err(), "idle keep-alive connection got {idle:?}");
    tcp.write_all(get("/", close).as_bytes()).await.unwrap();
    let r = read_response(&mut tcp).await;
    assert!(r.starts_with("HTTP/1.1 200"), "{r}");

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
    // Framing or routing a proxy must not guess at (RFC 9112 §3.2, §6.1).
    for (what, request, status) in [
        (
            "two Host headers",
            "GET / HTTP/1.1\r\nHost: a\r\nHost: victim\r\n\r\n".to_string(),
            400,
        ),
        (
            "no Host on HTTP/1.1",
            "GET / HTTP/1.1\r\nX-A: 1\r\n\r\n".to_string(),
            400,
        ),
        (
            "a coding before chunked",
            post("Transfer-Encoding: gzip, chunked\r\n", "0\r\n\r\n"),
            501,
        ),
    ] {
        let r = raw_exchange(f.bind, &request).await;
        assert!(r.starts_with(&format!("HTTP/1.1 {status}")), "{what}: {r}");
    }
    assert!(
        f.backend("app-01").requests().is_empty(),
        "{:?}",
        f.backend("app-01").requests()
    );
    // A malformed chunked body is the client's fault: 400, no server error counted.
    for (what, body) in [
        ("a chunk size that is not hex", "zz\r\nhello\r\n0\r\n\r\n"),
        (
            "a chunk size of 19 digits",
            "1000000000000000000\r\nhello\r\n0\r\n\r\n",
        ),
        ("bare LF framing", "5\nhello\n0\n\n"),
    ] {
        let r = raw_exchange(f.bind, &post("Transfer-Encoding: chunked\r\n", body)).await;
        assert!(r.starts_with("HTTP/1.1 400"), "{what}: {r}");
    }
    let m = metrics(&f).await;
    assert!(
        !m.lines()
            .any(|l| l.starts_with("sluice_server_errors_total") && !l.ends_with(" 0")),
        "a client's bad body counted against the server: {m}"
    );
    f.backend("app-01").clear();
    // HTTP/1.0 needs no Host.
    let r = raw_exchange(f.bind, "GET /old HTTP/1.0\r\n\r\n").await;
    assert!(r.starts_with("HTTP/1.0 200"), "{r}");
    f.backend("app-01").clear();

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
    let v6_configured = any_port("[::1]");
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
                "binds": [{ "address": bind.to_string() }, { "address": v6_configured.to_string() }],
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
    let v6 = f.bound(v6_configured).await;
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
                    // HAProxy's back-references, as an imported haproxy.cfg writes them.
                    { "action": "replace-header", "name": "X-Region", "regex": "^(eu|us)-(.*)$", "replacement": "\\2.\\1" },
                    { "action": "replace-path", "regex": "^/legacy/(.*)$", "replacement": "/app/\\1" },
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

    // replace-path keeps the query string; a path it does not match is left alone.
    let head = raw_head(
        f.bind,
        &get(
            "/legacy/orders/7?full=1",
            "X-Region: eu-west
",
        ),
    )
    .await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let seen = f.backend("app-01").requests().pop().unwrap();
    assert_eq!(seen.uri, "/app/orders/7?full=1");
    assert_eq!(seen.header_values("x-region"), ["west.eu"]);
    raw_head(f.bind, &get("/new/legacy/x", "")).await;
    assert_eq!(
        f.backend("app-01").requests().pop().unwrap().uri,
        "/new/legacy/x"
    );
}

#[tokio::test]
async fn header_limits_are_configurable() {
    let wide_configured = any_port("127.0.0.2");
    let f = fixture(&["app-01"], |bind, addr| {
        json!({
            "defaults": { "max_header_bytes": 2048, "max_headers": 5 },
            "frontends": [
                { "name": "fe", "binds": [{ "address": bind.to_string() }], "default_backend": "app" },
                { "name": "wide", "binds": [{ "address": wide_configured.to_string() }], "default_backend": "app",
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
    // The same limits for an upgrade request that arrives whole in the node's first read
    // (its five header lines are the limit).
    let r = raw_exchange(
        f.bind,
        &upgrade("/ws", &format!("X-Big: {}\r\n", "b".repeat(1500))),
    )
    .await;
    assert!(
        r.starts_with("HTTP/1.1 431"),
        "an upgrade over max_header_bytes: {r}"
    );
    let r = raw_exchange(f.bind, &upgrade("/ws", "X-One: more\r\n")).await;
    assert!(
        r.starts_with("HTTP/1.1 431"),
        "an upgrade over max_headers: {r}"
    );
    assert_eq!(f.backend("app-01").requests().len(), 1);

    // Under a head limit above 64 KiB, a request target over 64 KiB is refused with 414
    // (the default page), logged and counted as such.
    let long = format!("GET /{} HTTP/1.1\r\nHost: x\r\n\r\n", "u".repeat(70 * 1024));
    let wide = f.bound(wide_configured).await;
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
