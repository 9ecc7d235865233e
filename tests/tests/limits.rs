//! Per-source limits on WebSocket upgrades with a stick table, as the article configures
//! them: `track-sc0 src` on upgrades, then 429 past a number of concurrent tunnels or a
//! connection rate per address.

use std::time::Duration;

use serde_json::json;
use sluice_tests::harness::{eventually, fixture, http_get, ws_connect_from, ws_roundtrip};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const WAIT: Duration = Duration::from_secs(10);

#[tokio::test]
async fn upgrades_are_limited_per_source_address() {
    let f = fixture(&["ws-01"], |bind, addr| {
        json!({
            "frontends": [{
                "name": "fe",
                "binds": [{ "address": bind.to_string() }],
                "stick_table": { "type": "ip", "size": 1000, "expire": "120s", "store": ["conn_cur", "conn_rate(10s)"] },
                "http_request": [
                    { "action": "track-sc0", "key": "src", "if": "{ hdr(Upgrade) -i websocket }" },
                    { "action": "deny", "status": 429, "if": "{ hdr(Upgrade) -i websocket } { sc_conn_cur(0) gt 2 }" },
                    { "action": "deny", "status": 429, "if": "{ hdr(Upgrade) -i websocket } { sc_conn_rate(0) gt 5 }" }
                ],
                "default_backend": "ws"
            }],
            "backends": [{ "name": "ws", "servers": [{ "name": "w1", "address": addr("ws-01") }] }]
        })
    })
    .await;

    // Two concurrent tunnels per address; the third is refused, other addresses are not.
    let mut a1 = ws_connect_from(f.bind, "127.0.0.2", "/a").await.unwrap();
    let a2 = ws_connect_from(f.bind, "127.0.0.2", "/a").await.unwrap();
    assert_eq!(
        ws_connect_from(f.bind, "127.0.0.2", "/a").await.err(),
        Some(429)
    );
    let _b1 = ws_connect_from(f.bind, "127.0.0.3", "/b").await.unwrap();
    // Plain requests from the same address are not tracked or limited.
    assert_eq!(http_get(f.bind, "/", &[]).await.0, 200);

    // The counts live outside the plan: a config push changes nothing.
    let api = f.cp.api();
    let mut doc = api.get("/api/v1/config").await.json;
    doc["defaults"]["timeouts"] = json!({ "client": "31s" });
    let v = api.put_config(&doc).await;
    api.wait_applied("node-a", v, WAIT).await;
    assert_eq!(
        ws_connect_from(f.bind, "127.0.0.2", "/a").await.err(),
        Some(429)
    );

    // One tunnel closes: room for one more.
    // (Each attempt, refused or not, counts in the connection rate: wait for the close
    // to be seen rather than retrying.)
    drop(a2);
    let metrics_url = format!("{}/metrics", f.dp.admin);
    eventually(WAIT, "the closed tunnel to be released", || async {
        let text = reqwest::get(&metrics_url).await.ok()?.text().await.ok()?;
        text.contains("sluice_frontend_tunnels{frontend=\"fe\"} 2")
            .then_some(())
    })
    .await;
    let a3 = ws_connect_from(f.bind, "127.0.0.2", "/a").await.unwrap();
    assert_eq!(ws_roundtrip(&mut a1, "hi").await, "hi");

    // The rate: short-lived tunnels, never more than one open at a time, from a fresh
    // address — the sixth within 10 s is over `conn_rate(10s) gt 5`.
    // (The node sees a close after the client made it: wait for each to be released, or
    // the next one could still count two open tunnels.)
    drop((a1, a3));
    let open_tunnels = |n: u32| {
        let url = metrics_url.clone();
        let line = format!("sluice_frontend_tunnels{{frontend=\"fe\"}} {n}");
        async move {
            let text = reqwest::get(&url).await.ok()?.text().await.ok()?;
            text.contains(&line).then_some(())
        }
    };
    eventually(WAIT, "the earlier tunnels to be released", || {
        open_tunnels(1)
    })
    .await;
    for i in 0..5 {
        let ws = ws_connect_from(f.bind, "127.0.0.4", "/r").await;
        assert!(ws.is_ok(), "connection {i}: {:?}", ws.err());
        drop(ws);
        eventually(WAIT, "the tunnel to be released", || open_tunnels(1)).await;
    }
    assert_eq!(
        ws_connect_from(f.bind, "127.0.0.4", "/r").await.err(),
        Some(429)
    );

    let metrics = f.dp.metrics().await;
    assert!(
        metrics.contains("sluice_stick_table_entries{frontend=\"fe\"} 3"),
        "{metrics}"
    );
    assert!(
        metrics.contains("sluice_frontend_denied_total{frontend=\"fe\"} 3"),
        "{metrics}"
    );
}

/// The status of a plain GET sent from source address `src`.
async fn get_from(bind: std::net::SocketAddr, src: &str) -> String {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind(format!("{src}:0").parse().unwrap()).unwrap();
    let mut tcp = socket.connect(bind).await.unwrap();
    tcp.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut buf = Vec::new();
    tokio::time::timeout(WAIT, tcp.read_to_end(&mut buf))
        .await
        .expect("a response")
        .unwrap();
    String::from_utf8_lossy(&buf)
        .chars()
        .skip(9)
        .take(3)
        .collect()
}

#[tokio::test]
async fn requests_are_limited_per_source_by_request_rate() {
    let f = fixture(&["app-01"], |bind, addr| {
        json!({
            "frontends": [{
                "name": "fe",
                "binds": [{ "address": bind.to_string() }],
                "stick_table": { "type": "ip", "size": 1000, "expire": "60s", "store": ["http_req_rate(10s)"] },
                "http_request": [
                    { "action": "track-sc0", "key": "src" },
                    { "action": "deny", "status": 429, "if": "{ sc_http_req_rate(0) gt 3 }" }
                ],
                "default_backend": "app"
            }],
            "backends": [{ "name": "app", "servers": [{ "name": "a1", "address": addr("app-01") }] }]
        })
    })
    .await;
    // Three requests within 10 s pass; the fourth from the same address is over the rate.
    for i in 0..3 {
        assert_eq!(get_from(f.bind, "127.0.0.6").await, "200", "request {i}");
    }
    assert_eq!(get_from(f.bind, "127.0.0.6").await, "429");
    // Another address has its own count.
    assert_eq!(get_from(f.bind, "127.0.0.7").await, "200");
}
