//! The node stream: restarts of the control plane, wrong tokens, and snapshots a node
//! cannot apply.

use std::net::SocketAddr;
use std::time::Duration;

use serde_json::json;
use sluice_tests::harness::{
    any_port, eventually, simple_config, ws_connect, ws_roundtrip, ws_whoami, DataPlane, Fixture,
};

const WAIT: Duration = Duration::from_secs(15);

#[tokio::test]
async fn node_keeps_serving_through_a_control_plane_restart() {
    let mut f = Fixture::start(&["echo"]).await;
    let echo = f.backend("echo").addr;
    let configured = any_port("127.0.0.1");
    let v = f
        .apply(&simple_config(configured, &[("echo", &[echo])], "echo"))
        .await;
    let bind = f.bound(configured).await;
    let mut tunnel = ws_connect(bind, "/ws").await;

    f.cp.stop();
    // With the control plane gone, the node keeps its plan: old tunnels and new
    // connections both work.
    assert_eq!(
        ws_roundtrip(&mut tunnel, "during outage").await,
        "during outage"
    );
    assert_eq!(ws_whoami(bind, "/ws").await, "echo");

    f.cp.restart();
    let api = f.cp.api();
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
    let mut doc = simple_config(configured, &[("echo", &[echo])], "echo");
    doc["defaults"]["timeouts"]["tunnel"] = json!("2h");
    let v2 = api.put_config(&doc).await;
    assert_eq!(v2, v + 1);
    api.wait_applied("node-a", v2, WAIT).await;
}

#[tokio::test]
async fn a_node_with_a_wrong_token_is_refused() {
    let f = Fixture::start(&["echo"]).await;
    let cp = &f.cp;
    let api = cp.api();
    f.serve_echo("echo").await;
    let mut intruder = DataPlane::start_with_token(f.dir(), cp, "intruder", "not-the-token");
    eventually(WAIT, "the refusal in the node's log", || {
        let log = intruder.proc.log_text();
        async move { log.contains("enrollment refused").then_some(()) }
    })
    .await;
    assert!(
        api.node("intruder").await.is_none(),
        "a refused node is not registered"
    );
    assert!(
        intruder.listeners().await.is_empty(),
        "a refused node got no configuration, so it listens on nothing"
    );
    assert!(
        intruder.proc.is_running(),
        "it keeps retrying rather than exiting"
    );
    assert!(cp.proc.log_text().contains("enrollment refused"));
    assert!(
        !cp.proc.log_text().contains("not-the-token"),
        "tokens are never logged"
    );
}

#[tokio::test]
async fn an_unappliable_snapshot_is_nacked_and_the_old_plan_keeps_serving() {
    let f = Fixture::start(&["alpha", "beta"]).await;
    let api = f.cp.api();
    let configured = any_port("127.0.0.1");
    let (a, b) = (f.backend("alpha").addr, f.backend("beta").addr);
    let backends: &[(&str, &[SocketAddr])] = &[("pool_a", &[a]), ("pool_b", &[b])];
    let good = f
        .apply(&simple_config(configured, backends, "pool_a"))
        .await;
    let bind = f.bound(configured).await;
    let mut tunnel = ws_connect(bind, "/ws").await;

    // Something else on the node's host holds this port.
    let squatter = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let taken = squatter.local_addr().unwrap();
    let mut doc = simple_config(configured, backends, "pool_b");
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
    // The timeline has the node's arrival and its nack, with the reason.
    let events = api.get("/api/v1/events?node=node-a").await.json;
    let kinds: Vec<_> = events
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["kind"].as_str().unwrap().to_string())
        .collect();
    assert!(kinds.contains(&"node_connected".to_string()), "{events}");
    let nack = events
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["kind"] == "version_nacked")
        .expect("a nack event");
    assert_eq!(nack["version"], bad);
    assert!(
        nack["detail"].as_str().unwrap().contains("cannot bind"),
        "{nack}"
    );
    // Traffic keeps flowing on the previous plan: routing unchanged, tunnel alive.
    assert_eq!(ws_whoami(bind, "/ws").await, "alpha");
    assert_eq!(ws_roundtrip(&mut tunnel, "still fine").await, "still fine");

    // Once the port is free, the node applies the same version on its own (a bind that
    // failed because the port was taken is retried with backoff)...
    drop(squatter);
    api.wait_applied("node-a", bad, WAIT).await;
    assert_eq!(ws_whoami(taken, "/ws").await, "beta");
    // ...and follows the next change.
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
    // A node that trusts the control plane's certificate connects and serves.
    let f = Fixture::start_with(
        &["echo-1"],
        &["--node-tls-cert", &crt, "--node-tls-key", &key],
        &["--control-plane-ca", &crt],
    )
    .await;
    let cp = &f.cp;
    assert!(cp.node_url.starts_with("https://"), "{}", cp.node_url);
    let bind = f.serve_echo("echo-1").await;
    let api = cp.api();
    assert_eq!(ws_whoami(bind, "/t").await, "echo-1");

    // A node that trusts someone else refuses the connection and never gets a snapshot.
    let stranger = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
    let other_ca = write("other-ca.crt", stranger.cert.pem());
    let wary = DataPlane::start_with_args(
        f.dir(),
        cp,
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

#[tokio::test]
async fn a_hello_that_breaks_the_identity_limits_is_refused_and_logged_escaped() {
    use sluice_proto::v1::{fleet_client::FleetClient, node_message, Hello, NodeMessage};
    let f = Fixture::start(&["echo"]).await;
    f.serve_echo("echo").await;
    let hostile = |node_id: &str, labels: &[(&str, String)]| {
        let hello = Hello {
            node_id: node_id.into(),
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.clone()))
                .collect(),
            software_version: "0".into(),
            ..Default::default()
        };
        let url = f.cp.node_url.clone();
        let token = f.cp.node_token.clone();
        async move {
            let mut client = FleetClient::connect(url).await.unwrap();
            let first = NodeMessage {
                msg: Some(node_message::Msg::Hello(hello)),
            };
            let mut request = tonic::Request::new(tokio_stream::iter([first]));
            request
                .metadata_mut()
                .insert("authorization", format!("Bearer {token}").parse().unwrap());
            client.session(request).await.map(|_| ()).unwrap_err()
        }
    };
    let status = hostile("edge-9\nINFO forged: node edge-7 connected", &[]).await;
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    assert!(status.message().contains("node_id"), "{}", status.message());
    let status = hostile("edge-10", &[("zone", "x".repeat(100_000))]).await;
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    assert!(
        status.message().contains("label zone"),
        "{}",
        status.message()
    );

    let api = f.cp.api();
    let nodes = api.get("/api/v1/nodes").await.json;
    let ids: Vec<_> = nodes
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(ids, ["node-a"], "only the well-formed node is registered");
    assert!(
        !f.cp
            .proc
            .log_text()
            .lines()
            .any(|l| l.starts_with("INFO forged")),
        "a node-supplied newline reached the control plane's log"
    );
}

async fn readyz(dp: &DataPlane) -> u16 {
    reqwest::get(format!("{}/readyz", dp.admin))
        .await
        .unwrap()
        .status()
        .as_u16()
}

/// With `--state-dir`, a node restarted while its control plane is down serves the last
/// plan it applied at once, is ready, and resyncs when the control plane is back; a
/// damaged cache is reported and ignored.
#[tokio::test]
async fn a_node_restarted_without_its_control_plane_serves_its_cached_plan() {
    let state = tempfile::tempdir().unwrap();
    let state_dir = state.path().display().to_string();
    let node_args = ["--state-dir", state_dir.as_str()];
    let mut f = Fixture::start_with(&["echo"], &[], &node_args).await;
    let bind = f.serve_echo("echo").await;
    assert_eq!(ws_whoami(bind, "/ws").await, "echo");
    assert_eq!(readyz(&f.dp).await, 200);
    let version = f.cp.api().node("node-a").await.unwrap()["applied_version"].clone();

    f.cp.stop();
    f.dp.proc.kill();
    let token = f.cp.node_token.clone();
    let restarted = std::time::Instant::now();
    f.dp = DataPlane::start_with_args(f.dir(), &f.cp, "node-a", &token, &node_args);
    // No control plane: the cached plan serves, on the port this start got.
    let bind = f.bound(any_port("127.0.0.1")).await;
    assert_eq!(ws_whoami(bind, "/ws").await, "echo");
    eprintln!(
        "figures: restarted without its control plane, the node served a WebSocket {:?} after its start",
        restarted.elapsed()
    );
    assert_eq!(readyz(&f.dp).await, 200);
    assert!(f.dp.proc.log_text().contains("serving the cached snapshot"));

    // The control plane comes back: the node resyncs (same version) and follows changes.
    f.cp.restart();
    let api = f.cp.api();
    api.wait_applied("node-a", version.as_u64().unwrap(), WAIT)
        .await;
    let mut doc = api.get("/api/v1/config").await.json;
    doc["defaults"]["timeouts"]["tunnel"] = json!("2h");
    let v = api.put_config(&doc).await;
    api.wait_applied("node-a", v, WAIT).await;

    // A damaged cache: reported, ignored, and the node is not ready without a plan.
    let damaged = tempfile::tempdir().unwrap();
    std::fs::write(damaged.path().join("snapshot.bin"), b"not a snapshot").unwrap();
    f.cp.stop();
    let damaged_dir = damaged.path().display().to_string();
    let other = DataPlane::start_with_args(
        f.dir(),
        &f.cp,
        "node-b",
        &token,
        &["--state-dir", &damaged_dir],
    );
    eventually(WAIT, "the damaged cache reported", || {
        let log = other.proc.log_text();
        async move { log.contains("ignoring the snapshot cache").then_some(()) }
    })
    .await;
    assert_eq!(readyz(&other).await, 503);
    assert!(other.listeners().await.is_empty());
}
