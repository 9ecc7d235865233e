//! Backend selection and server health through a real node: leastconn, hashing (and the
//! consistent-hash remap bound), backup servers, drain and maint through the REST API with
//! open tunnels left alone, and WebSocket health checks with fall/rise.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::time::Duration;

use serde_json::{json, Value};
use sluice_tests::harness::{
    any_port, eventually, fixture, http_get, ws_connect, ws_connect_from, ws_roundtrip, ws_whoami,
    Fixture,
};
use sluice_tests::raw;

const WAIT: Duration = Duration::from_secs(10);

fn one_backend(bind: SocketAddr, backend: Value) -> Value {
    json!({
        "frontends": [{ "name": "fe", "binds": [{ "address": bind.to_string() }], "default_backend": "be" }],
        "backends": [backend]
    })
}

/// Waits until the node serves the latest config version.
async fn put_and_wait(f: &Fixture, doc: &Value) {
    let api = f.cp.api();
    let v = api.put_config(doc).await;
    api.wait_applied("node-a", v, WAIT).await;
}

/// Sets a server's state through the REST API and waits until node-a serves it.
async fn set_state(f: &Fixture, backend: &str, server: &str, state: &str) {
    let api = f.cp.api();
    let r = api
        .request(
            "PUT",
            &format!("/api/v1/backends/{backend}/servers/{server}/state"),
            Some(&json!({ "state": state })),
            None,
        )
        .await;
    assert_eq!(r.status, 200, "{:?}", r.json);
    api.wait_applied("node-a", r.json["version"].as_u64().unwrap(), WAIT)
        .await;
}

/// The node's view of one server in `GET /api/v1/backends/{name}`.
async fn live_server(f: &Fixture, backend: &str, server: &str) -> Option<Value> {
    let r = f.cp.api().get(&format!("/api/v1/backends/{backend}")).await;
    r.json["live"]
        .as_array()?
        .iter()
        .find(|s| s["server"] == server)?["nodes"]
        .as_array()?
        .iter()
        .find(|n| n["node"] == "node-a")
        .cloned()
}

#[tokio::test]
async fn leastconn_steers_new_tunnels_to_the_idle_server() {
    let f = fixture(&["a", "b"], |bind, addr| {
        one_backend(
            bind,
            json!({ "name": "be", "balance": "leastconn", "servers": [
                { "name": "a", "address": addr("a") }, { "name": "b", "address": addr("b") }
            ]}),
        )
    })
    .await;
    // Four tunnels: two on each server.
    let mut open = Vec::new();
    for _ in 0..4 {
        let mut ws = ws_connect(f.bind, "/t").await;
        let who = ws_roundtrip(&mut ws, "whoami").await;
        open.push((who, ws));
    }
    let on = |n: &str, open: &[(String, _)]| open.iter().filter(|(w, _)| w == n).count();
    assert_eq!((on("a", &open), on("b", &open)), (2, 2));
    // Close both tunnels on b: the next two go to b, which is now idle.
    open.retain(|(w, _)| w != "b");
    eventually(WAIT, "b's tunnels to close", || async {
        (f.backend("b").open_tunnels() == 0).then_some(())
    })
    .await;
    // A config push in between: the counts live outside the plan and carry over, so the
    // idle server still gets the next tunnels.
    let mut doc = f.cp.api().get("/api/v1/config").await.json;
    doc["defaults"]["timeouts"] = json!({ "client": "31s" });
    put_and_wait(&f, &doc).await;
    for _ in 0..2 {
        let mut ws = ws_connect(f.bind, "/t").await;
        assert_eq!(ws_roundtrip(&mut ws, "whoami").await, "b");
        open.push(("b".into(), ws));
    }
}

#[tokio::test]
async fn consistent_hashing_remaps_about_one_in_n_keys() {
    let names = ["s1", "s2", "s3", "s4", "s5"];
    let backend = |count: usize, addr: &dyn Fn(&str) -> String| {
        json!({ "name": "be", "balance": "hdr(X-User)", "hash_type": "consistent",
                "servers": names[..count].iter().map(|n| json!({ "name": n, "address": addr(n) })).collect::<Vec<_>>() })
    };
    let f = fixture(&names, |bind, addr| one_backend(bind, backend(5, addr))).await;
    let keys: Vec<String> = (0..300).map(|k| format!("user-{k}")).collect();
    let mut before = HashMap::new();
    for k in &keys {
        let (status, body) = http_get(f.bind, "/", &[("X-User", k)]).await;
        assert_eq!(status, 200);
        before.insert(k.clone(), body["server"].as_str().unwrap().to_string());
    }
    let used: HashSet<_> = before.values().collect();
    assert_eq!(used.len(), 5, "every server gets keys");
    // The same key keeps its server.
    for k in keys.iter().take(20) {
        assert_eq!(
            http_get(f.bind, "/", &[("X-User", k)]).await.1["server"],
            before[k].as_str()
        );
    }

    // One server of five leaves.
    let addrs: HashMap<String, String> = f
        .backends
        .iter()
        .map(|b| (b.name.clone(), b.addr.to_string()))
        .collect();
    // The same bind as configured (port 0), so the node keeps its listener.
    let doc = one_backend(any_port("127.0.0.1"), backend(4, &|n| addrs[n].clone()));
    put_and_wait(&f, &doc).await;
    let mut moved = 0;
    for k in &keys {
        let now = http_get(f.bind, "/", &[("X-User", k)]).await.1["server"]
            .as_str()
            .unwrap()
            .to_string();
        if before[k] == "s5" {
            moved += 1;
            assert_ne!(now, "s5");
        } else {
            assert_eq!(now, before[k], "key {k} moved though its server stayed");
        }
    }
    assert!(
        (30..=90).contains(&moved),
        "{moved} of 300 keys moved; about 60 expected"
    );
}

#[tokio::test]
async fn source_hashing_keeps_each_client_address_on_one_server() {
    let f = fixture(&["a", "b", "c"], |bind, addr| {
        one_backend(
            bind,
            json!({ "name": "be", "balance": "source", "servers": [
                { "name": "a", "address": addr("a") }, { "name": "b", "address": addr("b") },
                { "name": "c", "address": addr("c") }
            ]}),
        )
    })
    .await;
    let mut seen = HashSet::new();
    for host in 2..14u8 {
        let mut servers = HashSet::new();
        for _ in 0..3 {
            let mut ws = ws_connect_from(f.bind, &format!("127.0.0.{host}"), "/s")
                .await
                .unwrap();
            servers.insert(ws_roundtrip(&mut ws, "whoami").await);
        }
        assert_eq!(
            servers.len(),
            1,
            "client 127.0.0.{host} went to {servers:?}"
        );
        seen.extend(servers);
    }
    assert!(
        seen.len() >= 2,
        "12 client addresses all hashed to {seen:?}"
    );
}

#[tokio::test]
async fn drain_and_maint_leave_open_tunnels_alone_and_backups_take_over() {
    let f = fixture(&["a", "b", "spare"], |bind, addr| {
        one_backend(
            bind,
            json!({ "name": "be", "servers": [
                { "name": "a", "address": addr("a") }, { "name": "b", "address": addr("b") },
                { "name": "spare", "address": addr("spare"), "backup": true }
            ]}),
        )
    })
    .await;
    // A tunnel on a.
    let mut on_a = loop {
        let mut ws = ws_connect(f.bind, "/t").await;
        if ws_roundtrip(&mut ws, "whoami").await == "a" {
            break ws;
        }
    };
    let api = f.cp.api();

    set_state(&f, "be", "a", "drain").await;
    for _ in 0..4 {
        assert_eq!(
            ws_whoami(f.bind, "/t").await,
            "b",
            "no new tunnels on a draining server"
        );
    }
    assert_eq!(ws_roundtrip(&mut on_a, "still here").await, "still here");
    // The operator watches the drain: a still has its tunnel.
    let live = eventually(WAIT, "a's tunnel in the live view", || async {
        live_server(&f, "be", "a")
            .await
            .filter(|n| n["current_tunnels"] == 1)
    })
    .await;
    assert_eq!(live["health"], "unchecked");
    // What GET returns can be sent back as is: the read-only `live` part is ignored.
    let got = api.get("/api/v1/backends/be").await;
    let r = api
        .request("PUT", "/api/v1/backends/be", Some(&got.json), None)
        .await;
    assert_eq!(r.status, 200, "{:?}", r.json);
    assert_eq!(r.json["changed"], false, "{:?}", r.json);

    set_state(&f, "be", "a", "maint").await;
    assert_eq!(ws_roundtrip(&mut on_a, "and now").await, "and now");
    // With b in maintenance too, the backup server takes new traffic.
    set_state(&f, "be", "b", "maint").await;
    for _ in 0..2 {
        assert_eq!(ws_whoami(f.bind, "/t").await, "spare");
    }
    set_state(&f, "be", "b", "ready").await;
    assert_eq!(
        ws_whoami(f.bind, "/t").await,
        "b",
        "backups only while no regular server"
    );
    assert_eq!(ws_roundtrip(&mut on_a, "bye").await, "bye");

    let r = api
        .request(
            "PUT",
            "/api/v1/backends/be/servers/nope/state",
            Some(&json!({ "state": "drain" })),
            None,
        )
        .await;
    assert_eq!(r.status, 404);
    let r = api
        .request(
            "PUT",
            "/api/v1/backends/be/servers/a/state",
            Some(&json!({ "state": "sleepy" })),
            None,
        )
        .await;
    assert_eq!(r.status, 422, "{:?}", r.json);
}

#[tokio::test]
async fn websocket_health_check_marks_a_server_without_101_down_then_up() {
    let f = fixture(&["good", "flaky"], |bind, addr| {
        one_backend(
            bind,
            json!({ "name": "be",
                "health_check": { "type": "websocket", "uri": "/health" },
                "servers": [
                    { "name": "good", "address": addr("good"), "check": { "inter": "150ms", "fall": 3, "rise": 2 } },
                    { "name": "flaky", "address": addr("flaky"), "check": { "inter": "150ms", "fall": 3, "rise": 2 } }
                ]}),
        )
    })
    .await;
    let metrics_url = format!("{}/metrics", f.dp.admin);
    let metric = |name: &'static str, server: &'static str| {
        let url = metrics_url.clone();
        async move {
            let text = reqwest::get(&url).await.ok()?.text().await.ok()?;
            let prefix = format!("{name}{{backend=\"be\",server=\"{server}\"}} ");
            text.lines()
                .find_map(|l| l.strip_prefix(&prefix))
                .and_then(|v| v.trim().parse::<u64>().ok())
        }
    };
    eventually(WAIT, "both servers checked up", || async {
        let live = live_server(&f, "be", "flaky").await?;
        (live["health"] == "up").then_some(())
    })
    .await;

    // flaky answers upgrades with 200 from now on.
    f.backend("flaky")
        .shared
        .refuse_upgrades
        .store(true, Ordering::SeqCst);
    eventually(WAIT, "flaky to be marked down", || async {
        (metric("sluice_server_up", "flaky").await? == 0).then_some(())
    })
    .await;
    // A config push in between does not reset what the checks found.
    let mut doc = f.cp.api().get("/api/v1/config").await.json;
    doc["defaults"]["timeouts"] = json!({ "client": "31s" });
    put_and_wait(&f, &doc).await;
    assert_eq!(metric("sluice_server_up", "flaky").await, Some(0));
    // `fall` consecutive failures were needed.
    assert!(
        metric("sluice_server_check_failures_total", "flaky")
            .await
            .unwrap()
            >= 3
    );
    assert_eq!(
        metric("sluice_server_health_transitions_total", "flaky").await,
        Some(1)
    );
    for _ in 0..4 {
        assert_eq!(ws_whoami(f.bind, "/t").await, "good");
    }
    eventually(
        WAIT,
        "the control plane to show flaky down on node-a",
        || async {
            let live = live_server(&f, "be", "flaky").await?;
            (live["health"] == "down" && live["health_changed"].is_string()).then_some(live)
        },
    )
    .await;

    f.backend("flaky")
        .shared
        .refuse_upgrades
        .store(false, Ordering::SeqCst);
    eventually(WAIT, "flaky to come back up", || async {
        (metric("sluice_server_up", "flaky").await? == 1).then_some(())
    })
    .await;
    assert_eq!(
        metric("sluice_server_health_transitions_total", "flaky").await,
        Some(2)
    );
    let mut seen = HashSet::new();
    for _ in 0..4 {
        seen.insert(ws_whoami(f.bind, "/t").await);
    }
    assert!(seen.contains("flaky"), "{seen:?}");

    // Every check was a real handshake with a fresh key.
    let keys: Vec<String> = f
        .backend("good")
        .requests()
        .iter()
        .filter(|r| r.uri == "/health")
        .flat_map(|r| r.header_values("sec-websocket-key"))
        .collect();
    let distinct: HashSet<_> = keys.iter().collect();
    assert!(keys.len() >= 3 && distinct.len() == keys.len(), "{keys:?}");
}

/// A WebSocket handshake with `extra` headers; the response head.
async fn upgrade_head(bind: SocketAddr, extra: &str) -> String {
    raw::raw_head(bind, &raw::upgrade("/chat", extra))
        .await
        .to_ascii_lowercase()
}

fn served_by(head: &str) -> String {
    head.lines()
        .find_map(|l| l.strip_prefix("x-served-by: "))
        .unwrap_or_else(|| panic!("no x-served-by in {head}"))
        .trim()
        .to_string()
}

#[tokio::test]
async fn cookie_persistence_as_the_article_configures_it() {
    let mut f = fixture(&["ws-01", "ws-02"], |bind, addr| {
        json!({
            "frontends": [{ "name": "fe", "binds": [{ "address": bind.to_string() }], "default_backend": "ws" }],
            "backends": [{
                "name": "ws", "balance": "leastconn", "retries": 1, "redispatch": true,
                "timeouts": { "connect": "1s" },
                "cookie": { "name": "WSID", "mode": "insert", "indirect": true, "nocache": true,
                            "httponly": true, "samesite": "strict" },
                "servers": [
                    { "name": "ws-01", "address": addr("ws-01"), "cookie": "ws01" },
                    { "name": "ws-02", "address": addr("ws-02"), "cookie": "ws02" }
                ]
            }]
        })
    })
    .await;

    // First visit: the 101 carries the cookie with its attributes, non-cacheable.
    let head = upgrade_head(f.bind, "").await;
    assert!(head.starts_with("http/1.1 101"), "{head}");
    let first = served_by(&head);
    let value = first.replace('-', "");
    assert!(
        head.contains(&format!(
            "set-cookie: wsid={value}; path=/; httponly; samesite=strict"
        )),
        "{head}"
    );
    assert!(head.contains("cache-control: private"), "{head}");

    // Returning with it: the same server every time, bypassing leastconn, and no cookie
    // is set again; the server never sees WSID (indirect) but keeps the other cookies.
    for _ in 0..4 {
        let head = upgrade_head(f.bind, &format!("Cookie: theme=dark; WSID={value}\r\n")).await;
        assert_eq!(served_by(&head), first, "{head}");
        assert!(!head.contains("set-cookie"), "{head}");
    }
    let last = f.backend(&first).requests().pop().unwrap();
    assert_eq!(last.header_values("cookie"), ["theme=dark"]);
    // The access log says so as HAProxy does: a new client got a cookie (`NI`), a
    // returning one came with a valid cookie and got none (`VN`), and a cookie naming no
    // server is invalid (`I`) and replaced.
    let head = upgrade_head(f.bind, "Cookie: WSID=nobody\r\n").await;
    assert!(head.contains("set-cookie: wsid="), "{head}");
    for state in ["NI", "VN", "II"] {
        eventually(
            WAIT,
            &format!("a tunnel logged with cookie status {state}"),
            || async {
                f.dp.proc
                    .log_text()
                    .lines()
                    .any(|l| l.contains(" 101 ") && l.contains(&format!("D{state} ")))
                    .then_some(())
            },
        )
        .await;
    }

    // Plain HTTP responses carry the cookie on the same terms.
    let plain = |cookie: &str| {
        let extra = cookie.to_string();
        async move {
            let client = reqwest::Client::new();
            let mut req = client.get(format!("http://{}/page", f.bind));
            if !extra.is_empty() {
                req = req.header("Cookie", extra);
            }
            let resp = req.send().await.unwrap();
            let served = resp.headers()["x-served-by"].to_str().unwrap().to_string();
            let set = resp
                .headers()
                .get("set-cookie")
                .map(|v| v.to_str().unwrap().to_string());
            (served, set)
        }
    };
    let (served, set) = plain(&format!("WSID={value}")).await;
    assert_eq!((served.as_str(), set), (first.as_str(), None));
    let (served, set) = plain("").await;
    let set = set.expect("a cookie for a new client");
    assert!(
        set.starts_with(&format!("WSID={}; path=/", served.replace('-', ""))),
        "{set}"
    );

    // A cookie for a server in maintenance: redispatched, and the cookie rewritten.
    set_state(&f, "ws", &first, "maint").await;
    let other = if first == "ws-01" { "ws-02" } else { "ws-01" };
    let head = upgrade_head(f.bind, &format!("Cookie: WSID={value}\r\n")).await;
    assert_eq!(served_by(&head), other);
    let other_value = other.replace('-', "");
    assert!(
        head.contains(&format!("set-cookie: wsid={other_value};")),
        "{head}"
    );

    // Draining keeps sticky clients (as HAProxy does) but takes no new ones.
    set_state(&f, "ws", &first, "drain").await;
    let head = upgrade_head(f.bind, &format!("Cookie: WSID={value}\r\n")).await;
    assert_eq!(
        served_by(&head),
        first,
        "sticky client of a draining server"
    );
    assert_eq!(served_by(&upgrade_head(f.bind, "").await), other);

    // The sticky server dies: after the retry, redispatch sends the client to the other
    // server and the cookie follows.
    set_state(&f, "ws", &first, "ready").await;
    let dead = f.backends.iter().position(|b| b.name == first).unwrap();
    let gone = f.backends.remove(dead);
    let dead_addr = gone.addr;
    drop(gone);
    eventually(WAIT, "the dead server to refuse connections", || async {
        tokio::net::TcpStream::connect(dead_addr)
            .await
            .is_err()
            .then_some(())
    })
    .await;
    let head = upgrade_head(f.bind, &format!("Cookie: WSID={value}\r\n")).await;
    assert_eq!(served_by(&head), other);
    assert!(
        head.contains(&format!("set-cookie: wsid={other_value};")),
        "{head}"
    );
}

#[tokio::test]
async fn maxconn_queues_requests_until_a_slot_frees_or_timeout_queue() {
    let f = fixture(&["only"], |bind, addr| {
        one_backend(
            bind,
            json!({ "name": "be", "timeouts": { "queue": "1s" },
                    "servers": [{ "name": "only", "address": addr("only"), "maxconn": 1 }] }),
        )
    })
    .await;
    let metrics_url = format!("{}/metrics", f.dp.admin);
    let metric = |line: &'static str| {
        let url = metrics_url.clone();
        async move {
            let text = reqwest::get(&url).await.ok()?.text().await.ok()?;
            text.lines().any(|l| l == line).then_some(())
        }
    };
    let mut first = ws_connect(f.bind, "/one").await;
    assert_eq!(ws_roundtrip(&mut first, "whoami").await, "only");

    // The second tunnel waits in the queue while the only slot is taken...
    let bind = f.bind;
    let second = tokio::spawn(async move {
        let mut ws = ws_connect(bind, "/two").await;
        let who = ws_roundtrip(&mut ws, "whoami").await;
        (who, ws)
    });
    eventually(WAIT, "one request in the queue", || {
        metric("sluice_backend_queue{backend=\"be\"} 1")
    })
    .await;
    assert!(!second.is_finished());
    assert_eq!(f.backend("only").open_tunnels(), 1, "maxconn 1 holds");
    // ...and gets the slot as soon as the first tunnel ends.
    drop(first);
    let (who, mut second) = tokio::time::timeout(WAIT, second)
        .await
        .expect("served once the slot freed")
        .unwrap();
    assert_eq!(who, "only");

    // With the slot taken again, a request waits `timeout queue`, then gets 503.
    let started = std::time::Instant::now();
    let (status, _) = http_get(f.bind, "/", &[]).await;
    assert_eq!(status, 503);
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(900) && waited < Duration::from_secs(5),
        "503 after {waited:?}"
    );
    eventually(WAIT, "the queue timeout counted", || {
        metric("sluice_backend_queue_timeouts_total{backend=\"be\"} 1")
    })
    .await;
    assert_eq!(ws_roundtrip(&mut second, "still fine").await, "still fine");
}

#[tokio::test]
async fn tcp_and_http_checks_with_a_check_port_and_expected_statuses() {
    let f = fixture(&["a", "b"], |bind, addr| {
        let dead_port = addr("nobody").rsplit_once(':').unwrap().1.parse::<u16>().unwrap();
        json!({
            "frontends": [{ "name": "fe", "binds": [{ "address": bind.to_string() }], "default_backend": "tcp" }],
            "backends": [
                { "name": "tcp", "health_check": { "type": "tcp" }, "servers": [
                    // Serves on its address, but its check port has nobody listening.
                    { "name": "a", "address": addr("a"), "check": { "inter": "100ms", "fall": 2, "port": dead_port } },
                    { "name": "b", "address": addr("b"), "check": { "inter": "100ms", "fall": 2 } }
                ]},
                { "name": "ok", "health_check": { "type": "http", "uri": "/status/204", "expect_status": "200-299" },
                  "servers": [{ "name": "a", "address": addr("a"), "check": { "inter": "100ms" } }] },
                { "name": "bad", "health_check": { "type": "http", "uri": "/status/503" },
                  "servers": [{ "name": "a", "address": addr("a"), "check": { "inter": "100ms", "fall": 2 } }] }
            ]
        })
    })
    .await;
    for (backend, server, health) in [
        ("tcp", "a", "down"),
        ("tcp", "b", "up"),
        ("ok", "a", "up"),
        ("bad", "a", "down"),
    ] {
        eventually(WAIT, &format!("{backend}/{server} {health}"), || async {
            let live = live_server(&f, backend, server).await?;
            (live["health"] == health).then_some(())
        })
        .await;
    }
    for _ in 0..3 {
        assert_eq!(ws_whoami(f.bind, "/t").await, "b", "a is down by its check");
    }
    let checks: Vec<_> = f
        .backend("a")
        .requests()
        .into_iter()
        .filter(|r| r.uri.starts_with("/status/"))
        .collect();
    assert!(checks
        .iter()
        .any(|r| r.method == "GET" && r.uri == "/status/204"));
}

/// `check` on a server of a backend without `health_check` is a TCP connect check, as
/// `check` without `option httpchk` is in HAProxy: a server on a dead port goes down and
/// gets no traffic; a live one is shown up, never "unchecked".
#[tokio::test]
async fn check_alone_is_a_tcp_check() {
    let f = fixture(&["b"], |bind, addr| {
        json!({
            "frontends": [{ "name": "fe", "binds": [{ "address": bind.to_string() }], "default_backend": "be" }],
            "backends": [{ "name": "be", "servers": [
                { "name": "dead", "address": addr("nobody"), "check": { "inter": "100ms", "fall": 2 } },
                { "name": "b", "address": addr("b"), "check": { "inter": "100ms" } }
            ]}]
        })
    })
    .await;
    for (server, health) in [("dead", "down"), ("b", "up")] {
        eventually(WAIT, &format!("{server} {health}"), || async {
            let live = live_server(&f, "be", server).await?;
            (live["health"] == health).then_some(())
        })
        .await;
    }
    for _ in 0..4 {
        assert_eq!(
            http_get(f.bind, "/", &[]).await.0,
            200,
            "the dead server gets no request"
        );
    }
}
