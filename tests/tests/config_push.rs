//! REST changes reach the node: new connections follow the new routing within a second,
//! while tunnels opened before keep their server across many further changes; idle
//! tunnels are governed by `timeout tunnel`, not `timeout client`.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use serde_json::json;
use sluice_tests::backend::Backend;
use sluice_tests::harness::{
    free_port, simple_config, ws_connect, ws_roundtrip, ws_whoami, ControlPlane, DataPlane,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const WAIT: Duration = Duration::from_secs(10);

fn bind_addr() -> SocketAddr {
    format!("127.0.0.1:{}", free_port()).parse().unwrap()
}

#[tokio::test]
async fn routing_change_reaches_new_connections_and_spares_open_tunnels() {
    let dir = tempfile::tempdir().unwrap();
    let a = Backend::start("alpha", "127.0.0.1:0").await.unwrap();
    let b = Backend::start("beta", "127.0.0.1:0").await.unwrap();
    let cp = ControlPlane::start(dir.path());
    let _dp = DataPlane::start(dir.path(), &cp, "node-a");
    let api = cp.api();
    let bind = bind_addr();
    let backends: &[(&str, &[SocketAddr])] = &[("pool_a", &[a.addr]), ("pool_b", &[b.addr])];

    let v = api
        .put_config(&simple_config(bind, backends, "pool_a"))
        .await;
    api.wait_applied("node-a", v, WAIT).await;
    assert_eq!(ws_whoami(bind, "/ws/chat").await, "alpha");

    // A tunnel opened under the old routing.
    let mut old = ws_connect(bind, "/ws/chat").await;
    assert_eq!(ws_roundtrip(&mut old, "whoami").await, "alpha");

    // Switch the default backend; new connections must reach beta within 1 s of the
    // REST response.
    api.put_config(&simple_config(bind, backends, "pool_b"))
        .await;
    let switched = Instant::now();
    loop {
        if ws_whoami(bind, "/ws/chat").await == "beta" {
            break;
        }
        assert!(
            switched.elapsed() < Duration::from_secs(1),
            "new connections still routed to alpha 1 s after the change"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    // 20 further changes; the old tunnel keeps echoing and stays on alpha throughout.
    let mut last = 0;
    for i in 0..20 {
        let default = if i % 2 == 0 { "pool_a" } else { "pool_b" };
        let mut doc = simple_config(bind, backends, default);
        doc["defaults"]["timeouts"]["server"] = json!(format!("{}s", 30 + i));
        last = api.put_config(&doc).await;
        let echo = ws_roundtrip(&mut old, &format!("message {i}")).await;
        assert_eq!(echo, format!("message {i}"));
    }
    api.wait_applied("node-a", last, WAIT).await;
    assert_eq!(ws_roundtrip(&mut old, "whoami").await, "alpha");
    assert_eq!(
        a.open_tunnels(),
        1,
        "the old tunnel is the only one left on alpha"
    );
    // The last change (i = 19) routes to beta.
    assert_eq!(ws_whoami(bind, "/x").await, "beta");
}

#[tokio::test]
async fn idle_tunnel_outlives_client_timeout_and_closes_at_tunnel_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let backend = Backend::start("echo", "127.0.0.1:0").await.unwrap();
    let cp = ControlPlane::start(dir.path());
    let _dp = DataPlane::start(dir.path(), &cp, "node-a");
    let api = cp.api();
    let bind = bind_addr();
    let mut doc = simple_config(bind, &[("echo", &[backend.addr])], "echo");
    doc["defaults"]["timeouts"] = json!({
        "connect": "1s", "client": "1s", "server": "1s", "tunnel": "3s", "http_request": "1s"
    });
    let v = api.put_config(&doc).await;
    api.wait_applied("node-a", v, WAIT).await;

    let mut ws = ws_connect(bind, "/ws/chat").await;
    assert_eq!(ws_roundtrip(&mut ws, "first").await, "first");
    // Idle for twice `timeout client`: the tunnel is governed by `timeout tunnel`.
    tokio::time::sleep(Duration::from_millis(2_000)).await;
    assert_eq!(ws_roundtrip(&mut ws, "still here").await, "still here");

    // Now stay idle: the node closes the tunnel once 3 s pass without traffic.
    let idle_from = Instant::now();
    use futures_util::StreamExt;
    let ended = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match ws.next().await {
                None
                | Some(Err(_))
                | Some(Ok(tokio_tungstenite::tungstenite::Message::Close(_))) => break,
                Some(Ok(_)) => continue,
            }
        }
    })
    .await;
    assert!(ended.is_ok(), "the idle tunnel was not closed within 10 s");
    let idle = idle_from.elapsed();
    assert!(
        idle >= Duration::from_millis(2_900),
        "closed after {idle:?}, before timeout tunnel (3 s)"
    );
}

#[tokio::test]
async fn slow_request_headers_are_cut_at_http_request_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let backend = Backend::start("echo", "127.0.0.1:0").await.unwrap();
    let cp = ControlPlane::start(dir.path());
    let _dp = DataPlane::start(dir.path(), &cp, "node-a");
    let api = cp.api();
    let bind = bind_addr();
    let mut doc = simple_config(bind, &[("echo", &[backend.addr])], "echo");
    doc["defaults"]["timeouts"]["http_request"] = json!("1s");
    let v = api.put_config(&doc).await;
    api.wait_applied("node-a", v, WAIT).await;

    let mut tcp = tokio::net::TcpStream::connect(bind).await.unwrap();
    tcp.write_all(b"GET / HTTP/1.1\r\nHost: slow\r\n")
        .await
        .unwrap();
    let started = Instant::now();
    let mut buf = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), tcp.read_to_end(&mut buf)).await;
    assert!(
        read.is_ok(),
        "a client that never finishes its headers was kept for 10 s"
    );
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(900),
        "cut after only {waited:?}"
    );
    let text = String::from_utf8_lossy(&buf);
    assert!(
        text.is_empty() || text.starts_with("HTTP/1.1 408"),
        "unexpected answer: {text}"
    );
    assert!(
        backend.requests().is_empty(),
        "an incomplete request reached the server"
    );
}

#[tokio::test]
async fn removed_binds_close_but_their_open_tunnels_live_on() {
    let dir = tempfile::tempdir().unwrap();
    let backend = Backend::start("echo", "127.0.0.1:0").await.unwrap();
    let cp = ControlPlane::start(dir.path());
    let _dp = DataPlane::start(dir.path(), &cp, "node-a");
    let api = cp.api();
    let (keep, drop_me) = (bind_addr(), bind_addr());
    let mut doc = simple_config(keep, &[("echo", &[backend.addr])], "echo");
    doc["frontends"][0]["binds"]
        .as_array_mut()
        .unwrap()
        .push(json!({ "address": drop_me.to_string() }));
    let v = api.put_config(&doc).await;
    api.wait_applied("node-a", v, WAIT).await;
    let mut tunnel = ws_connect(drop_me, "/ws").await;
    assert_eq!(ws_roundtrip(&mut tunnel, "before").await, "before");

    // Remove the second bind, and add a new frontend on a third address.
    let added = bind_addr();
    let mut doc = simple_config(keep, &[("echo", &[backend.addr])], "echo");
    let mut second = doc["frontends"][0].clone();
    second["name"] = json!("second");
    second["binds"] = json!([{ "address": added.to_string() }]);
    doc["frontends"].as_array_mut().unwrap().push(second);
    let v = api.put_config(&doc).await;
    api.wait_applied("node-a", v, WAIT).await;

    assert!(
        tokio::net::TcpStream::connect(drop_me).await.is_err(),
        "the removed bind still accepts connections"
    );
    assert_eq!(ws_whoami(added, "/ws").await, "echo");
    assert_eq!(ws_whoami(keep, "/ws").await, "echo");
    assert_eq!(ws_roundtrip(&mut tunnel, "after").await, "after");
}
