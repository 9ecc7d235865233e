//! Traffic history and the live feed through the real binaries: every upgrade made
//! through a node is counted once in `GET /api/v1/series` — across the node's
//! restart (its counters start over) and the control plane's restart (it meets a node
//! whose counters it has already recorded) — and `GET /api/v1/live` streams events and
//! closed buckets as they happen.

use std::time::Duration;

use serde_json::{json, Value};
use sluice_tests::harness::{
    any_port, eventually, ws_connect, ws_roundtrip, Api, DataPlane, Fixture,
};

const WAIT: Duration = Duration::from_secs(30);

/// Upgrades counted in the fleet's history over the last 10 minutes (rates × 10 s).
async fn upgrades_recorded(api: &Api, scope: &str) -> Option<f64> {
    let s = api
        .get(&format!(
            "/api/v1/series?metric=upgrades&scope={scope}&from=-10m&step=10s"
        ))
        .await
        .json;
    let values = s["series"][0]["values"].as_array()?.clone();
    Some(values.iter().filter_map(Value::as_f64).sum::<f64>() * 10.0)
}

async fn wait_recorded(api: &Api, scope: &str, count: f64) {
    eventually(
        WAIT,
        &format!("{count} upgrades in {scope}'s history"),
        || async {
            let got = upgrades_recorded(api, scope).await?;
            assert!(
                got <= count + 0.001,
                "{got} upgrades recorded, {count} made"
            );
            ((got - count).abs() < 0.001).then_some(())
        },
    )
    .await;
}

async fn upgrade(bind: std::net::SocketAddr, n: usize) {
    for _ in 0..n {
        let mut ws = ws_connect(bind, "/chat").await;
        assert_eq!(ws_roundtrip(&mut ws, "whoami").await, "ws-01");
    }
}

#[tokio::test]
async fn upgrades_are_counted_once_across_node_and_control_plane_restarts() {
    let mut f = Fixture::start(&["ws-01"]).await;
    let configured = any_port("127.0.0.1");
    let doc = json!({
        "frontends": [{ "name": "web", "binds": [{ "address": configured.to_string() }], "default_backend": "ws" }],
        "backends": [{ "name": "ws", "servers": [{ "name": "ws-01", "address": f.addr("ws-01") }] }]
    });
    f.apply(&doc).await;
    let api = f.cp.api();
    upgrade(f.bound(configured).await, 5).await;
    wait_recorded(&api, "fleet", 5.0).await;
    wait_recorded(&api, "node:node-a", 5.0).await;
    wait_recorded(&api, "server:ws/ws-01", 5.0).await;

    // The node restarts: its counters start from zero; 3 more, not 3 - 5.
    f.dp.proc.kill();
    f.dp = DataPlane::start(f.dir(), &f.cp, "node-a");
    let version = api.version().await;
    api.wait_applied("node-a", version, WAIT).await;
    upgrade(f.dp.bound(configured).await, 3).await;
    wait_recorded(&api, "fleet", 8.0).await;

    // The control plane restarts: what the node counted so far is already in the
    // history and is not counted again; 2 more upgrades are.
    f.cp.restart();
    let api = f.cp.api();
    api.wait_applied("node-a", version, WAIT).await;
    // Its first report after the restart only sets the baseline: wait for it.
    eventually(WAIT, "node-a's traffic reported again", || async {
        let n = api.node("node-a").await?;
        n["traffic"].is_object().then_some(())
    })
    .await;
    upgrade(f.dp.bound(configured).await, 2).await;
    wait_recorded(&api, "fleet", 10.0).await;
    wait_recorded(&api, "frontend:web", 10.0).await;
}

#[tokio::test]
async fn a_silent_node_is_marked_stale_then_online_again() {
    let f = Fixture::start(&[]).await;
    let api = f.cp.api();
    api.wait_applied("node-a", 1, WAIT).await;
    // Frozen, the node keeps its stream open and sends nothing: past the stale
    // deadline (5 s in these tests) the control plane ends the stream and says why.
    f.dp.proc.freeze(true);
    eventually(WAIT, "node-a shown stale", || async {
        let n = api.node("node-a").await?;
        (n["status"] == "stale").then_some(())
    })
    .await;
    eventually(WAIT, "a node_stale event", || async {
        let e = api
            .get("/api/v1/events?kind=node_stale&node=node-a")
            .await
            .json;
        let first = e.as_array()?.first()?.clone();
        assert_eq!(first["detail"], "node silent past the stale deadline");
        Some(())
    })
    .await;
    assert_eq!(api.node("node-a").await.unwrap()["status"], "offline");
    f.dp.proc.freeze(false);
    eventually(WAIT, "node-a online again", || async {
        let n = api.node("node-a").await?;
        (n["status"] == "online").then_some(())
    })
    .await;
}

/// Reads the live feed until `want` returns a value.
async fn live_until<T>(
    api_base: &str,
    token: &str,
    want: impl FnMut(&str, &Value) -> Option<T>,
) -> T {
    sluice_tests::live::live_until(api_base, token, WAIT, want).await
}

#[tokio::test]
async fn the_live_feed_streams_events_and_buckets_and_needs_the_token() {
    let f = Fixture::start(&["ws-01"]).await;
    let configured = any_port("127.0.0.1");
    let api = f.cp.api();
    let refused = reqwest::get(format!("{}/api/v1/live", f.cp.api))
        .await
        .unwrap();
    assert_eq!(refused.status(), 401);

    // A change made while the feed is open arrives as an event, with who made it.
    let base = f.cp.api.clone();
    let token = f.cp.admin_token.clone();
    let watcher = tokio::spawn(async move {
        live_until(&base, &token, |kind, v| {
            (kind == "event" && v["kind"] == "version_committed").then(|| v.clone())
        })
        .await
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let doc = json!({
        "frontends": [{ "name": "web", "binds": [{ "address": configured.to_string() }], "default_backend": "ws" }],
        "backends": [{ "name": "ws", "servers": [{ "name": "ws-01", "address": f.addr("ws-01") }] }]
    });
    f.apply(&doc).await;
    let event = watcher.await.unwrap();
    assert_eq!(event["actor"], "api");
    assert!(
        event["detail"].as_str().unwrap().contains("+frontend web"),
        "{event}"
    );

    // A tunnel is open: a closed bucket carries it, fleet-wide and for the node.
    let mut ws = ws_connect(f.bound(configured).await, "/chat").await;
    assert_eq!(ws_roundtrip(&mut ws, "whoami").await, "ws-01");
    let tick = live_until(&f.cp.api, &f.cp.admin_token, |kind, v| {
        (kind == "tick" && v["fleet"]["tunnels"] == 1.0).then(|| v.clone())
    })
    .await;
    assert_eq!(tick["step_ms"], 10_000);
    assert_eq!(tick["nodes"]["node-a"]["tunnels"], 1.0, "{tick}");
    drop(api);
}
