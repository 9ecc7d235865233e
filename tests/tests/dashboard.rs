//! The dashboard in a real browser: a control plane with three real nodes, real
//! backends (one of them down) and WebSocket traffic through every node; Debian's
//! Chromium, driven by `tests/browser/dashboard.mjs` (playwright-core), checks the fleet,
//! a traffic chart with upgrades, the server × node matrix, drains a server from the UI
//! and watches its tunnels fall on every node, finds the health failure in the events,
//! and diffs and rolls back a version. Screenshots of each page are saved
//! (`$SLUICE_SCREENSHOTS`, default `target/screenshots`).

use std::process::Stdio;
use std::time::Duration;

use serde_json::json;
use sluice_tests::browser;
use sluice_tests::harness::{eventually, fixture, ws_connect, ws_roundtrip, DataPlane, Ws};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

const WAIT: Duration = Duration::from_secs(20);

#[tokio::test]
async fn an_operator_watches_and_acts_on_three_nodes_in_a_browser() {
    browser::require();
    let f = fixture(&["ws-01", "ws-02"], |bind, addr| {
        json!({
            "frontends": [{ "name": "web", "binds": [{ "address": bind.to_string() }], "default_backend": "ws" }],
            "backends": [{
                "name": "ws",
                "balance": "roundrobin",
                "health_check": { "type": "websocket", "uri": "/health" },
                "servers": [
                    { "name": "ws-01", "address": addr("ws-01"), "check": { "inter": "200ms" } },
                    { "name": "ws-02", "address": addr("ws-02"), "check": { "inter": "200ms" } },
                    { "name": "ws-03", "address": addr("ws-03"), "check": { "inter": "200ms" } }
                ]
            }]
        })
    })
    .await;
    // Every node binds the configured `127.0.0.1:0` on a port of its own.
    let configured: std::net::SocketAddr = "127.0.0.1:0".parse().unwrap();
    let others: Vec<DataPlane> = ["node-b", "node-c"]
        .iter()
        .map(|id| DataPlane::start(f.dir(), &f.cp, id))
        .collect();
    let api = f.cp.api();
    let version = api.version().await;
    for id in ["node-a", "node-b", "node-c"] {
        api.wait_applied(id, version, WAIT).await;
    }
    // Every node sees ws-03 down before traffic starts, so the tunnels land on ws-01/02.
    eventually(WAIT, "ws-03 down on three nodes", || async {
        let b = api.get("/api/v1/backends/ws").await.json;
        let on = b["live"][2]["nodes"].as_array()?.clone();
        (on.len() == 3 && on.iter().all(|n| n["health"] == "down")).then_some(())
    })
    .await;

    // Four tunnels through each node: two on ws-01 and two on ws-02.
    let mut binds = vec![f.bind];
    for n in &others {
        binds.push(n.bound(configured).await);
    }
    let mut on_ws01: Vec<Ws> = Vec::new();
    let mut rest: Vec<Ws> = Vec::new();
    for bind in &binds {
        for _ in 0..4 {
            let mut ws = ws_connect(*bind, "/chat").await;
            match ws_roundtrip(&mut ws, "whoami").await.as_str() {
                "ws-01" => on_ws01.push(ws),
                _ => rest.push(ws),
            }
        }
    }
    assert!(on_ws01.len() >= 3, "{} tunnels on ws-01", on_ws01.len());
    // The upgrades are in the history once the 10 s bucket closes.
    eventually(WAIT, "upgrades in the fleet's history", || async {
        let s = api
            .get("/api/v1/series?metric=upgrades&from=-2m&step=10s")
            .await
            .json;
        let values = s["series"][0]["values"].as_array()?.clone();
        values.iter().any(|v| v.as_f64() > Some(0.0)).then_some(())
    })
    .await;

    let shots = browser::screenshots();
    let mut script = tokio::process::Command::new("node")
        .arg(browser::dir().join("dashboard.mjs"))
        .env("SLUICE_URL", &f.cp.api)
        .env("SLUICE_TOKEN", &f.cp.admin_token)
        .env("SLUICE_NODES", "node-a,node-b,node-c")
        .env("SLUICE_SHOTS", &shots)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("running node (Node.js) for the browser test");
    let mut stdin = script.stdin.take().unwrap();
    let mut lines = BufReader::new(script.stdout.take().unwrap()).lines();
    let mut finished = false;
    let mut before_rollout = 0;
    let run = tokio::time::timeout(Duration::from_secs(120), async {
        while let Some(line) = lines.next_line().await.unwrap() {
            match line.as_str() {
                "STEP drained" => {
                    // The drain is on every node: the tunnels already open stay until
                    // their clients close them, one after the other.
                    for mut ws in on_ws01.drain(..) {
                        let _ = futures_util::SinkExt::close(&mut ws).await;
                        tokio::time::sleep(Duration::from_millis(200)).await;
                    }
                    stdin.write_all(b"GO\n").await.unwrap();
                }
                "STEP rollout" => {
                    before_rollout = api.version().await;
                    let policy = serde_json::json!({ "stages": [
                        { "name": "one", "select": { "share": 33 }, "bake": "1h" },
                        { "name": "all", "select": { "share": 100 }, "bake": "0s" }
                    ] });
                    let r = api
                        .request("PUT", "/api/v1/rollout-policy", Some(&policy), None)
                        .await;
                    assert_eq!(r.status, 200, "{}", r.json);
                    let mut doc = api.get("/api/v1/config").await.json;
                    doc["defaults"]["timeouts"]["tunnel"] = serde_json::json!("2h");
                    api.put_config(&doc).await;
                    stdin.write_all(b"GO\n").await.unwrap();
                }
                "OK" => finished = true,
                other => println!("browser: {other}"),
            }
        }
    })
    .await;
    let status = script.wait().await.unwrap();
    assert!(
        run.is_ok() && status.success() && finished,
        "the browser run failed ({status}); screenshots in {}",
        shots.display()
    );

    // What the browser did is what the API says: the rollback left ws-01 without the
    // drain, pushed to all three nodes; new tunnels reach ws-01 again.
    let newest = before_rollout;
    assert_eq!(newest, version + 2, "the drain and the rollback");
    let history = api
        .get(&format!("/api/v1/snapshots?before={}&limit=2", newest + 1))
        .await
        .json;
    assert_eq!(history[0]["actor"], "dashboard");
    assert!(history[0]["summary"]
        .as_str()
        .unwrap()
        .starts_with(&format!("rollback to v{version}")));
    let b = api.get("/api/v1/backends/ws").await.json;
    assert!(b["servers"][0].get("state").is_none(), "{b}");
    for id in ["node-a", "node-b", "node-c"] {
        api.wait_applied(id, newest, WAIT).await;
    }
    let mut seen = std::collections::HashSet::new();
    for _ in 0..4 {
        let mut ws = ws_connect(binds[1], "/chat").await;
        seen.insert(ws_roundtrip(&mut ws, "whoami").await);
        rest.push(ws);
    }
    assert!(seen.contains("ws-01"), "{seen:?}");
    // The staged change was promoted from the dashboard: every node runs it.
    let rolled = api
        .get(&format!("/api/v1/rollouts/{}", before_rollout + 1))
        .await
        .json;
    assert_eq!(rolled["state"], "completed", "{rolled}");
    assert_eq!(rolled["reason"], "promoted by dashboard", "{rolled}");
    for id in ["node-a", "node-b", "node-c"] {
        api.wait_applied(id, before_rollout + 1, WAIT).await;
    }
    for name in [
        "fleet", "traffic", "backends", "events", "config", "rollout",
    ] {
        assert!(shots.join(format!("{name}.png")).exists(), "{name}.png");
    }
    drop(others);
}
