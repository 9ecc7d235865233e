//! Where a change is live, through the real binaries: every node reports the digest of
//! what it runs; each version lists who acked it, rejected it, is behind or drifts; each
//! frontend and backend says the version it last changed in and on how many nodes that
//! is live; and writes with `?wait=live` answer when the change is live, who is not there
//! yet, or who rejected it.

use std::time::Duration;

use serde_json::json;
use sluice_proto::v1::{fleet_client::FleetClient, node_message, Ack, Hello, NodeMessage};
use sluice_tests::harness::{any_port, eventually, ids, simple_config, DataPlane, Fixture};

const WAIT: Duration = Duration::from_secs(15);

#[tokio::test]
async fn each_version_and_object_says_where_it_is_live() {
    let f = Fixture::start(&["alpha", "beta"]).await;
    let b = DataPlane::start(f.dir(), &f.cp, "node-b");
    let api = f.cp.api();
    for id in ["node-a", "node-b"] {
        api.wait_applied(id, 1, WAIT).await;
    }
    let configured = any_port("127.0.0.1");
    let (alpha, beta) = (f.backend("alpha").addr, f.backend("beta").addr);
    let doc = simple_config(
        configured,
        &[("pool_a", &[alpha]), ("pool_b", &[beta])],
        "pool_a",
    );
    let r = api
        .request(
            "PUT",
            "/api/v1/config?wait=live&timeout=10s",
            Some(&doc),
            None,
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.json);
    assert_eq!(ids(&r.json["live"]["acked"]), ["node-a", "node-b"]);
    let v1 = r.json["version"].as_u64().unwrap();

    // The version's digest is what both nodes say they run: no drift.
    let status = api.get(&format!("/api/v1/snapshots/{v1}/nodes")).await.json;
    assert_eq!(ids(&status["acked"]), ["node-a", "node-b"]);
    assert!(status["drift"].as_array().unwrap().is_empty());
    let digest = status["digest"].as_str().unwrap().to_string();
    assert_eq!(digest.len(), 64);
    for n in api.get("/api/v1/nodes").await.json.as_array().unwrap() {
        assert_eq!(n["applied_digest"], digest.as_str(), "{n}");
        assert_eq!(n["drift"], false);
    }

    // A change to one backend: the frontend keeps the version it changed in.
    let mut doc2 = doc.clone();
    doc2["backends"][1]["servers"][0]["weight"] = json!(50);
    let v2 = api.put_config(&doc2).await;
    api.wait_applied("node-a", v2, WAIT).await;
    api.wait_applied("node-b", v2, WAIT).await;
    let fe = api.get("/api/v1/frontends/web").await.json;
    assert_eq!(
        fe["delivery"],
        json!({ "changed_in": v1, "live_on": 2, "of": 2 })
    );
    let be = api.get("/api/v1/backends/pool_b").await.json;
    assert_eq!(be["delivery"]["changed_in"], v2);
    // What GET returns can be sent back as is.
    let r = api
        .request("PUT", "/api/v1/frontends/web", Some(&fe), None)
        .await;
    assert_eq!(r.status, 200, "{}", r.json);

    // A node stopped (frozen): a write waits for it, then names it (202).
    b.proc.freeze(true);
    let mut doc3 = doc2.clone();
    doc3["backends"][1]["servers"][0]["weight"] = json!(60);
    let r = api
        .request(
            "PUT",
            "/api/v1/config?wait=live&timeout=1s",
            Some(&doc3),
            None,
        )
        .await;
    assert_eq!(r.status, 202, "{}", r.json);
    assert_eq!(ids(&r.json["live"]["pending"]), ["node-b"]);
    assert_eq!(ids(&r.json["live"]["acked"]), ["node-a"]);
    let v3 = r.json["version"].as_u64().unwrap();
    let status = api.get(&format!("/api/v1/snapshots/{v3}/nodes")).await.json;
    assert_eq!(ids(&status["behind"]), ["node-b"]);
    b.proc.freeze(false);
    api.wait_applied("node-b", v3, WAIT).await;

    // A node that cannot apply the change: 409 with its reason, at once.
    let squatter = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let mut bad = doc3.clone();
    bad["frontends"][0]["binds"]
        .as_array_mut()
        .unwrap()
        .push(json!({ "address": squatter.local_addr().unwrap().to_string() }));
    let r = api
        .request(
            "PUT",
            "/api/v1/config?wait=live&timeout=10s",
            Some(&bad),
            None,
        )
        .await;
    assert_eq!(r.status, 409, "{}", r.json);
    assert_eq!(r.json["code"], "nacked");
    assert!(
        r.json["live"]["nacked"][0]["reason"]
            .as_str()
            .unwrap()
            .contains("cannot bind"),
        "{}",
        r.json
    );
    let v4 = r.json["version"].as_u64().unwrap();
    eventually(
        WAIT,
        "both nodes' nacks in the version's status",
        || async {
            let status = api.get(&format!("/api/v1/snapshots/{v4}/nodes")).await.json;
            (status["nacked"].as_array()?.len() == 2).then_some(())
        },
    )
    .await;
    // A bad wait parameter is refused before anything is written.
    let r = api
        .request("PUT", "/api/v1/config?wait=soon", Some(&doc3), None)
        .await;
    assert_eq!(r.status, 400);
    assert_eq!(api.version().await, v4);
}

#[tokio::test]
async fn a_node_running_something_else_shows_as_drift() {
    let f = Fixture::start(&["alpha"]).await;
    f.serve_echo("alpha").await;
    let api = f.cp.api();
    let version = api.version().await;
    // A node that acks the version but reports another digest (it misapplied).
    let (tx, mut inbound) = fake_node(&f, "odd-node", &["http2"]).await;
    let snap = inbound.message().await.unwrap().unwrap();
    let Some(sluice_proto::v1::control_message::Msg::Snapshot(s)) = snap.msg else {
        panic!("a snapshot first");
    };
    assert_eq!(s.version, version);
    tx.send(NodeMessage {
        msg: Some(node_message::Msg::Ack(Ack {
            version,
            digest: vec![7; 32],
        })),
    })
    .await
    .unwrap();
    eventually(WAIT, "odd-node flagged as drifting", || async {
        let n = api.node("odd-node").await?;
        (n["drift"] == true && n["applied_version"] == version).then_some(())
    })
    .await;
    let status = api
        .get(&format!("/api/v1/snapshots/{version}/nodes"))
        .await
        .json;
    assert_eq!(ids(&status["drift"]), ["odd-node"]);
    assert_eq!(api.node("node-a").await.unwrap()["drift"], false);
}

/// A fake node's stream: its `Hello` (with `features`), and what the control plane sends.
async fn fake_node(
    f: &Fixture,
    id: &str,
    features: &[&str],
) -> (
    tokio::sync::mpsc::Sender<NodeMessage>,
    tonic::Streaming<sluice_proto::v1::ControlMessage>,
) {
    let mut client = FleetClient::connect(f.cp.node_url.clone()).await.unwrap();
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    tx.send(NodeMessage {
        msg: Some(node_message::Msg::Hello(Hello {
            node_id: id.into(),
            software_version: "0".into(),
            features: features.iter().map(|f| f.to_string()).collect(),
            ..Default::default()
        })),
    })
    .await
    .unwrap();
    let mut request = tonic::Request::new(tokio_stream::wrappers::ReceiverStream::new(rx));
    request.metadata_mut().insert(
        "authorization",
        format!("Bearer {}", f.cp.node_token).parse().unwrap(),
    );
    (tx, client.session(request).await.unwrap().into_inner())
}

#[tokio::test]
async fn a_node_lacking_a_feature_is_not_sent_the_version_and_the_fleet_says_why() {
    let f = Fixture::start(&["alpha"]).await;
    let api = f.cp.api();
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
    let r = api
        .request(
            "POST",
            "/api/v1/certificates",
            Some(&json!({ "name": "site", "cert_pem": cert.cert.pem(), "key_pem": cert.key_pair.serialize_pem() })),
            None,
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.json);
    // A TLS bind offering h2 by ALPN: applying it needs HTTP/2.
    let doc = json!({
        "frontends": [{ "name": "web",
            "binds": [{ "address": "127.0.0.1:0", "tls": { "certificates": ["site"], "alpn": ["h2", "http/1.1"] } }],
            "default_backend": "app" }],
        "backends": [{ "name": "app", "servers": [{ "name": "a1", "address": f.addr("alpha") }] }]
    });
    let version = f.apply(&doc).await;

    // A node from before HTTP/2 announces no features: it is sent nothing.
    let (_old_tx, mut old) = fake_node(&f, "old-node", &[]).await;
    let sent = tokio::time::timeout(Duration::from_millis(800), old.message()).await;
    assert!(
        sent.is_err(),
        "a snapshot was sent to a node without http2: {sent:?}"
    );
    let n = api.node("old-node").await.unwrap();
    assert_eq!(
        n["withheld"],
        json!({ "version": version, "missing": ["http2"] }),
        "{n}"
    );
    let events = api
        .get("/api/v1/events?kind=version_withheld&node=old-node")
        .await
        .json;
    assert_eq!(events[0]["version"], version);
    assert!(events[0]["detail"].as_str().unwrap().contains("http2"));

    // A node that has it gets the version at once.
    let (_new_tx, mut new) = fake_node(&f, "new-node", &["http2"]).await;
    let msg = tokio::time::timeout(WAIT, new.message())
        .await
        .expect("a snapshot")
        .unwrap()
        .unwrap();
    let Some(sluice_proto::v1::control_message::Msg::Snapshot(s)) = msg.msg else {
        panic!("a snapshot");
    };
    assert_eq!(s.version, version);
    let n = api.node("new-node").await.unwrap();
    assert!(n.get("withheld").is_none(), "{n}");
    assert_eq!(n["features"], json!(["http2"]));
    // So does this build of the node.
    assert!(api.node("node-a").await.unwrap().get("withheld").is_none());
}
