//! REST changes reach the node: new connections follow the new routing within a second,
//! and so does the next request of a kept-alive connection, while tunnels opened before
//! keep their server across many further changes; idle
//! tunnels are governed by `timeout tunnel`, not `timeout client`.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use serde_json::json;
use sluice_tests::harness::{
    any_port, simple_config, ws_connect, ws_roundtrip, ws_whoami, Fixture,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const WAIT: Duration = Duration::from_secs(10);

#[tokio::test]
async fn routing_change_reaches_new_connections_and_spares_open_tunnels() {
    let f = Fixture::start(&["alpha", "beta"]).await;
    let (a, b) = (f.backend("alpha"), f.backend("beta"));
    let api = f.cp.api();
    let configured = any_port("127.0.0.1");
    let backends: &[(&str, &[SocketAddr])] = &[("pool_a", &[a.addr]), ("pool_b", &[b.addr])];

    f.apply(&simple_config(configured, backends, "pool_a"))
        .await;
    let bind = f.bound(configured).await;
    assert_eq!(ws_whoami(bind, "/ws/chat").await, "alpha");

    // A tunnel opened under the old routing.
    let mut old = ws_connect(bind, "/ws/chat").await;
    assert_eq!(ws_roundtrip(&mut old, "whoami").await, "alpha");

    // Switch the default backend; new connections must reach beta within 1 s of the
    // REST response.
    api.put_config(&simple_config(configured, backends, "pool_b"))
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
        let mut doc = simple_config(configured, backends, default);
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
async fn the_next_request_of_a_kept_alive_connection_follows_a_routing_change() {
    let f = Fixture::start(&["alpha", "beta"]).await;
    let (a, b) = (f.backend("alpha"), f.backend("beta"));
    let api = f.cp.api();
    let configured = any_port("127.0.0.1");
    let backends: &[(&str, &[SocketAddr])] = &[("pool_a", &[a.addr]), ("pool_b", &[b.addr])];
    f.apply(&simple_config(configured, backends, "pool_a"))
        .await;
    let bind = f.bound(configured).await;
    // One client connection, kept alive across the change.
    let mut conn = tokio::net::TcpStream::connect(bind).await.unwrap();
    let ask = async |conn: &mut tokio::net::TcpStream| {
        conn.write_all(b"GET /who HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        let mut got = Vec::new();
        let mut buf = [0u8; 4096];
        // The answer is small: read until its JSON body is complete.
        while !got.ends_with(b"}") {
            let n = tokio::time::timeout(WAIT, conn.read(&mut buf))
                .await
                .expect("an answer")
                .unwrap();
            assert!(n > 0, "the connection closed");
            got.extend_from_slice(&buf[..n]);
        }
        String::from_utf8_lossy(&got).to_string()
    };
    assert!(ask(&mut conn).await.contains("\"alpha\""));
    let v = api
        .put_config(&simple_config(configured, backends, "pool_b"))
        .await;
    api.wait_applied("node-a", v, WAIT).await;
    let answer = ask(&mut conn).await;
    assert!(answer.contains("\"beta\""), "{answer}");
}

#[tokio::test]
async fn idle_tunnel_outlives_client_timeout_and_closes_at_tunnel_timeout() {
    let f = Fixture::start(&["echo"]).await;
    let configured = any_port("127.0.0.1");
    let mut doc = simple_config(configured, &[("echo", &[f.backend("echo").addr])], "echo");
    doc["defaults"]["timeouts"] = json!({
        "connect": "1s", "client": "1s", "server": "1s", "tunnel": "3s", "http_request": "1s"
    });
    f.apply(&doc).await;
    let bind = f.bound(configured).await;

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
    let f = Fixture::start(&["echo"]).await;
    let backend = f.backend("echo");
    let configured = any_port("127.0.0.1");
    let mut doc = simple_config(configured, &[("echo", &[backend.addr])], "echo");
    doc["defaults"]["timeouts"]["http_request"] = json!("1s");
    f.apply(&doc).await;
    let bind = f.bound(configured).await;

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
    let f = Fixture::start(&["echo"]).await;
    let backend = f.backend("echo");
    let (keep, drop_me) = (any_port("127.0.0.1"), any_port("127.0.0.2"));
    let mut doc = simple_config(keep, &[("echo", &[backend.addr])], "echo");
    doc["frontends"][0]["binds"]
        .as_array_mut()
        .unwrap()
        .push(json!({ "address": drop_me.to_string() }));
    f.apply(&doc).await;
    let (kept, dropped) = (f.bound(keep).await, f.bound(drop_me).await);
    let mut tunnel = ws_connect(dropped, "/ws").await;
    assert_eq!(ws_roundtrip(&mut tunnel, "before").await, "before");

    // Remove the second bind, and add a new frontend on a third address.
    let added = any_port("127.0.0.3");
    let mut doc = simple_config(keep, &[("echo", &[backend.addr])], "echo");
    let mut second = doc["frontends"][0].clone();
    second["name"] = json!("second");
    second["binds"] = json!([{ "address": added.to_string() }]);
    doc["frontends"].as_array_mut().unwrap().push(second);
    f.apply(&doc).await;
    let added = f.bound(added).await;

    assert!(
        tokio::net::TcpStream::connect(dropped).await.is_err(),
        "the removed bind still accepts connections"
    );
    assert_eq!(ws_whoami(added, "/ws").await, "echo");
    assert_eq!(f.bound(keep).await, kept, "the kept bind kept its listener");
    assert_eq!(ws_whoami(kept, "/ws").await, "echo");
    assert_eq!(ws_roundtrip(&mut tunnel, "after").await, "after");
}

/// A configuration of several megabytes — over the REST layer's and gRPC's usual limits —
/// is stored, delivered to the node, and reads back to a PUT that is accepted as is.
#[tokio::test]
async fn a_large_configuration_is_delivered_and_round_trips() {
    let f = Fixture::start(&["echo"]).await;
    let configured = any_port("127.0.0.1");
    let mut doc = simple_config(configured, &[("echo", &[f.backend("echo").addr])], "echo");
    let page = "x".repeat(6 * 1024 * 1024);
    doc["frontends"][0]["http_request"] = json!([
        { "action": "return", "status": 200, "body": page, "if": "{ path /big }" }
    ]);
    let v = f.apply(&doc).await;
    let bind = f.bound(configured).await;
    assert_eq!(ws_whoami(bind, "/ws").await, "echo");
    let api = f.cp.api();
    let read = api.get("/api/v1/config").await;
    assert_eq!(read.etag, Some(format!("\"{v}\"")));
    let again = api
        .request("PUT", "/api/v1/config", Some(&read.json), None)
        .await;
    assert_eq!(again.status, 200, "{}", again.json);
    assert_eq!(again.json["changed"], false);
}
