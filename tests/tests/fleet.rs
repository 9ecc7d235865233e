//! The node stream: restarts of the control plane, wrong tokens, and snapshots a node
//! cannot apply.

use std::net::SocketAddr;
use std::time::Duration;

use serde_json::json;
use sluice_tests::backend::Backend;
use sluice_tests::harness::{
    eventually, free_port, simple_config, ws_connect, ws_roundtrip, ws_whoami, ControlPlane,
    DataPlane,
};

const WAIT: Duration = Duration::from_secs(15);

fn bind_addr() -> SocketAddr {
    format!("127.0.0.1:{}", free_port()).parse().unwrap()
}

#[tokio::test]
async fn node_keeps_serving_through_a_control_plane_restart() {
    let dir = tempfile::tempdir().unwrap();
    let backend = Backend::start("echo", "127.0.0.1:0").await.unwrap();
    let mut cp = ControlPlane::start(dir.path());
    let _dp = DataPlane::start(dir.path(), &cp, "node-a");
    let bind = bind_addr();
    let api = cp.api();
    let v = api
        .put_config(&simple_config(bind, &[("echo", &[backend.addr])], "echo"))
        .await;
    api.wait_applied("node-a", v, WAIT).await;
    let mut tunnel = ws_connect(bind, "/ws").await;

    cp.stop();
    // With the control plane gone, the node keeps its plan: old tunnels and new
    // connections both work.
    assert_eq!(
        ws_roundtrip(&mut tunnel, "during outage").await,
        "during outage"
    );
    assert_eq!(ws_whoami(bind, "/ws").await, "echo");

    cp.restart();
    let api = cp.api();
    let r = api.get("/api/v1/config").await;
    assert_eq!(r.etag, Some(format!("\"{v}\"")), "version persisted");
    api.wait_applied("node-a", v, WAIT).await;
    let node = api.node("node-a").await.unwrap();
    assert_eq!(node["applied_version"], v);
    assert_eq!(node["labels"]["zone"], "test");
    assert_eq!(
        ws_roundtrip(&mut tunnel, "after restart").await,
        "after restart"
    );

    // And it follows changes made after the restart.
    let mut doc = simple_config(bind, &[("echo", &[backend.addr])], "echo");
    doc["defaults"]["timeouts"]["tunnel"] = json!("2h");
    let v2 = api.put_config(&doc).await;
    assert_eq!(v2, v + 1);
    api.wait_applied("node-a", v2, WAIT).await;
}

#[tokio::test]
async fn a_node_with_a_wrong_token_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let backend = Backend::start("echo", "127.0.0.1:0").await.unwrap();
    let cp = ControlPlane::start(dir.path());
    let bind = bind_addr();
    let api = cp.api();
    api.put_config(&simple_config(bind, &[("echo", &[backend.addr])], "echo"))
        .await;
    let mut intruder = DataPlane::start_with_token(dir.path(), &cp, "intruder", "not-the-token");
    eventually(WAIT, "the refusal in the node's log", || {
        let log = intruder.proc.log_text();
        async move { log.contains("refused this node's token").then_some(()) }
    })
    .await;
    assert!(
        api.node("intruder").await.is_none(),
        "a refused node is not registered"
    );
    assert!(
        tokio::net::TcpStream::connect(bind).await.is_err(),
        "a refused node got no configuration, so it listens on nothing"
    );
    assert!(
        intruder.proc.is_running(),
        "it keeps retrying rather than exiting"
    );
    assert!(cp.proc.log_text().contains("node stream refused"));
    assert!(
        !cp.proc.log_text().contains("not-the-token"),
        "tokens are never logged"
    );
}

#[tokio::test]
async fn an_unappliable_snapshot_is_nacked_and_the_old_plan_keeps_serving() {
    let dir = tempfile::tempdir().unwrap();
    let a = Backend::start("alpha", "127.0.0.1:0").await.unwrap();
    let b = Backend::start("beta", "127.0.0.1:0").await.unwrap();
    let cp = ControlPlane::start(dir.path());
    let _dp = DataPlane::start(dir.path(), &cp, "node-a");
    let api = cp.api();
    let bind = bind_addr();
    let backends: &[(&str, &[SocketAddr])] = &[("pool_a", &[a.addr]), ("pool_b", &[b.addr])];
    let good = api
        .put_config(&simple_config(bind, backends, "pool_a"))
        .await;
    api.wait_applied("node-a", good, WAIT).await;
    let mut tunnel = ws_connect(bind, "/ws").await;

    // Something else on the node's host holds this port.
    let squatter = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let taken = squatter.local_addr().unwrap();
    let mut doc = simple_config(bind, backends, "pool_b");
    doc["frontends"][0]["binds"]
        .as_array_mut()
        .unwrap()
        .push(json!({ "address": taken.to_string() }));
    let bad = api.put_config(&doc).await;

    let nack = eventually(WAIT, "the nack in GET /api/v1/nodes", || async {
        let n = api.node("node-a").await?;
        let nack = n.get("last_nack")?.clone();
        (nack["version"] == bad).then_some((n, nack))
    })
    .await;
    let (node, nack) = nack;
    let reason = nack["reason"].as_str().unwrap();
    assert!(
        reason.contains(&taken.to_string()) && reason.contains("cannot bind"),
        "{reason}"
    );
    assert_eq!(
        node["applied_version"], good,
        "the node still serves the last good plan"
    );
    // Traffic keeps flowing on the previous plan: routing unchanged, tunnel alive.
    assert_eq!(ws_whoami(bind, "/ws").await, "alpha");
    assert_eq!(ws_roundtrip(&mut tunnel, "still fine").await, "still fine");

    // Once the port is free, the next change applies and the nack is gone.
    drop(squatter);
    let mut doc2 = doc.clone();
    doc2["defaults"]["timeouts"]["tunnel"] = json!("2h");
    let fixed = api.put_config(&doc2).await;
    api.wait_applied("node-a", fixed, WAIT).await;
    assert!(api.node("node-a").await.unwrap().get("last_nack").is_none());
    assert_eq!(ws_whoami(bind, "/ws").await, "beta");
    assert_eq!(ws_whoami(taken, "/ws").await, "beta");
}

#[tokio::test]
async fn the_node_stream_runs_over_tls_and_nodes_verify_the_control_plane() {
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, text: String| {
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        path.display().to_string()
    };
    let cert =
        rcgen::generate_simple_self_signed(vec!["localhost".into(), "127.0.0.1".into()]).unwrap();
    let crt = write("node-listener.crt", cert.cert.pem());
    let key = write("node-listener.key", cert.key_pair.serialize_pem());
    let cp = ControlPlane::start_with_args(
        dir.path(),
        &["--node-tls-cert", &crt, "--node-tls-key", &key],
    );
    assert!(cp.node_url.starts_with("https://"), "{}", cp.node_url);

    // A node that trusts the control plane's certificate connects and serves.
    let backend = Backend::start("echo-1", "127.0.0.1:0").await.unwrap();
    let bind = bind_addr();
    let _trusting = DataPlane::start_with_args(
        dir.path(),
        &cp,
        "node-a",
        &cp.node_token.clone(),
        &["--control-plane-ca", &crt],
    );
    let api = cp.api();
    let v = api
        .put_config(&simple_config(bind, &[("echo", &[backend.addr])], "echo"))
        .await;
    api.wait_applied("node-a", v, WAIT).await;
    assert_eq!(ws_whoami(bind, "/t").await, "echo-1");

    // A node that trusts someone else refuses the connection and never gets a snapshot.
    let stranger = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
    let other_ca = write("other-ca.crt", stranger.cert.pem());
    let wary = DataPlane::start_with_args(
        dir.path(),
        &cp,
        "node-b",
        &cp.node_token.clone(),
        &["--control-plane-ca", &other_ca],
    );
    eventually(WAIT, "node-b to report the failed connection", || async {
        wary.proc
            .log_text()
            .contains("cannot reach the control plane")
            .then_some(())
    })
    .await;
    assert!(api.node("node-b").await.is_none());
}
