//! The control plane on PostgreSQL (`--database postgres://…`), through the real
//! binaries: configuration, history, the fleet view, events and rollouts are stored there
//! and survive a restart of the control plane, and nodes follow changes as on SQLite.

use std::time::Duration;

use serde_json::json;
use sluice_tests::harness::{
    any_port, postgres_database, simple_config, ws_whoami, ControlPlane, DataPlane,
};

const WAIT: Duration = Duration::from_secs(15);

#[tokio::test]
async fn the_control_plane_runs_on_postgresql_and_keeps_its_state_across_a_restart() {
    let Some(url) = postgres_database().await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let backend = sluice_tests::backend::Backend::start("alpha", "127.0.0.1:0")
        .await
        .unwrap();
    let mut cp = ControlPlane::start_with_args(dir.path(), &["--database", &url]);
    let dp = DataPlane::start(dir.path(), &cp, "node-a");
    let api = cp.api();
    let configured = any_port("127.0.0.1");
    let v = api
        .put_config(&simple_config(
            configured,
            &[("pool", &[backend.addr])],
            "pool",
        ))
        .await;
    api.wait_applied("node-a", v, WAIT).await;
    let bind = dp.bound(configured).await;
    assert_eq!(ws_whoami(bind, "/ws").await, "alpha");
    // A rollout policy and a bootstrap token live there too.
    let policy = json!({ "stages": [{ "name": "all", "select": { "share": 100 }, "bake": "0s" }] });
    let r = api
        .request("PUT", "/api/v1/rollout-policy", Some(&policy), None)
        .await;
    assert_eq!(r.status, 200, "{}", r.json);
    let r = api
        .request(
            "POST",
            "/api/v1/bootstrap-tokens",
            Some(&json!({ "uses": 2 })),
            None,
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.json);

    cp.restart();
    let api = cp.api();
    assert_eq!(api.version().await, v, "the configuration survived");
    let history = api.get("/api/v1/snapshots").await.json;
    assert_eq!(history[0]["version"], v, "{history}");
    api.wait_applied("node-a", v, WAIT).await;
    let node = api.node("node-a").await.unwrap();
    assert_eq!(node["enrolled"], true, "{node}");
    assert_eq!(api.get("/api/v1/rollout-policy").await.json["revision"], 1);
    assert_eq!(
        api.get("/api/v1/bootstrap-tokens")
            .await
            .json
            .as_array()
            .unwrap()
            .len(),
        1
    );
    let events = api.get("/api/v1/events?kind=version_committed").await.json;
    assert!(!events.as_array().unwrap().is_empty(), "{events}");

    // A change after the restart goes out under the stored policy and reaches the node.
    let mut doc = api.get("/api/v1/config").await.json;
    doc["defaults"]["timeouts"]["tunnel"] = json!("2h");
    let v2 = api.put_config(&doc).await;
    api.wait_applied("node-a", v2, WAIT).await;
    let rollout = sluice_tests::harness::eventually(WAIT, "the rollout completed", || async {
        let r = api.get(&format!("/api/v1/rollouts/{v2}")).await;
        (r.json["state"] == "completed").then_some(r.json)
    })
    .await;
    assert_eq!(rollout["from_version"], v);
}
