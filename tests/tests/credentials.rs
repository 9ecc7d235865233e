//! Node credentials through the real binaries: a node enrolls once with a bootstrap token
//! (made through the API with an expiry and a use count) and keeps its own credential in
//! `--state-dir`; a used-up, expired or revoked bootstrap token enrolls nobody; a revoked
//! node is disconnected and refused from then on while the others keep serving; no
//! secret is ever returned after its creation or logged.

use std::time::Duration;

use serde_json::{json, Value};
use sluice_tests::harness::{
    any_port, eventually, simple_config, ws_connect, ws_roundtrip, Api, DataPlane, Fixture,
};

const WAIT: Duration = Duration::from_secs(15);

async fn make_token(api: &Api, body: Value) -> (String, String) {
    let r = api
        .request("POST", "/api/v1/bootstrap-tokens", Some(&body), None)
        .await;
    assert_eq!(r.status, 201, "{}", r.json);
    (
        r.json["id"].as_str().unwrap().to_string(),
        r.json["token"].as_str().unwrap().to_string(),
    )
}

async fn token_state(api: &Api, id: &str) -> Value {
    let list = api.get("/api/v1/bootstrap-tokens").await.json;
    let t = list
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["id"] == id)
        .cloned()
        .unwrap();
    assert!(
        t.get("token").is_none(),
        "a listed token never shows its secret: {t}"
    );
    t
}

async fn refused(node: &DataPlane, what: &str) {
    eventually(WAIT, &format!("{} refused ({what})", node.node_id), || {
        let log = node.proc.log_text();
        let what = what.to_string();
        async move { log.contains(&what).then_some(()) }
    })
    .await;
}

/// Applies one echo backend on a fresh port: the configured bind and the version.
async fn echo_config(f: &Fixture) -> (std::net::SocketAddr, u64) {
    let configured = any_port("127.0.0.1");
    let doc = simple_config(configured, &[("echo", &[f.backend("echo").addr])], "echo");
    (configured, f.cp.api().put_config(&doc).await)
}

#[tokio::test]
async fn a_node_enrolls_once_with_a_bootstrap_token_and_keeps_its_credential() {
    let f = Fixture::start(&["echo"]).await;
    let api = f.cp.api();
    let (_, v) = echo_config(&f).await;
    let (id, token) = make_token(
        &api,
        json!({ "description": "edge rack 4", "expires_in": "1h", "uses": 1 }),
    )
    .await;
    let state = tempfile::tempdir().unwrap();
    let state_dir = state.path().display().to_string();
    let args = ["--state-dir", state_dir.as_str()];
    let mut edge = DataPlane::start_with_args(f.dir(), &f.cp, "edge-1", &token, &args);
    api.wait_applied("edge-1", v, WAIT).await;
    let node = api.node("edge-1").await.unwrap();
    assert_eq!(node["enrolled"], true, "{node}");
    let t = token_state(&api, &id).await;
    assert_eq!(
        (t["state"].as_str(), t["used"].as_u64()),
        (Some("used_up"), Some(1)),
        "{t}"
    );
    assert_eq!(t["description"], "edge rack 4");
    let kept = std::fs::read_to_string(state.path().join("credential")).unwrap();
    assert!(kept.starts_with("edge-1\n"));
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(state.path().join("credential"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    // Restarted with the spent token: its own credential connects it.
    edge.proc.kill();
    let edge = DataPlane::start_with_args(f.dir(), &f.cp, "edge-1", &token, &args);
    let mut doc = api.get("/api/v1/config").await.json;
    doc["defaults"]["timeouts"]["tunnel"] = json!("2h");
    let v2 = api.put_config(&doc).await;
    api.wait_applied("edge-1", v2, WAIT).await;

    // The spent token enrolls nobody else; neither does an expired or a revoked one.
    let other = DataPlane::start_with_token(f.dir(), &f.cp, "edge-2", &token);
    let (_, short) = make_token(&api, json!({ "expires_in": "1ms" })).await;
    let late = DataPlane::start_with_token(f.dir(), &f.cp, "edge-3", &short);
    let (revoked_id, revoked) = make_token(&api, json!({})).await;
    let r = api
        .request(
            "DELETE",
            &format!("/api/v1/bootstrap-tokens/{revoked_id}"),
            None,
            None,
        )
        .await;
    assert_eq!((r.status, r.json["state"].as_str()), (200, Some("revoked")));
    let third = DataPlane::start_with_token(f.dir(), &f.cp, "edge-4", &revoked);
    for n in [&other, &late, &third] {
        refused(n, "enrollment refused").await;
        assert!(
            api.node(&n.node_id).await.is_none(),
            "{} is not registered",
            n.node_id
        );
    }
    // No secret in the control plane's log or any answer.
    let log = f.cp.proc.log_text();
    for secret in [&token, &short, &revoked] {
        assert!(!log.contains(secret.as_str()), "a token was logged");
    }
    assert!(!kept.is_empty() && !log.contains(kept.lines().nth(1).unwrap()));
    drop(edge);
}

#[tokio::test]
async fn a_revoked_node_is_disconnected_and_refused_while_the_others_keep_serving() {
    let f = Fixture::start(&["echo"]).await;
    let api = f.cp.api();
    let b = DataPlane::start(f.dir(), &f.cp, "node-b");
    let (configured, v) = echo_config(&f).await;
    api.wait_applied("node-a", v, WAIT).await;
    api.wait_applied("node-b", v, WAIT).await;
    let a_bind = f.bound(configured).await;
    let mut tunnel = ws_connect(a_bind, "/ws").await;
    assert_eq!(ws_roundtrip(&mut tunnel, "before").await, "before");

    let r = api
        .request("DELETE", "/api/v1/nodes/node-b", None, None)
        .await;
    assert_eq!(r.status, 200, "{}", r.json);
    // Its stream is closed and it is refused when it reconnects.
    eventually(WAIT, "node-b disconnected", || async {
        (api.node("node-b").await?["connected"] == false).then_some(())
    })
    .await;
    refused(&b, "this node is revoked").await;
    let node = api.node("node-b").await.unwrap();
    assert!(node["revoked"].as_str().is_some(), "{node}");
    // Even with the fleet token a new process under its id is refused.
    let again = DataPlane::start(f.dir(), &f.cp, "node-b");
    refused(&again, "is revoked").await;

    // node-a was not touched: its tunnel echoes, and changes still reach it.
    assert_eq!(ws_roundtrip(&mut tunnel, "after").await, "after");
    let mut doc = api.get("/api/v1/config").await.json;
    doc["defaults"]["timeouts"]["tunnel"] = json!("2h");
    let v2 = api.put_config(&doc).await;
    api.wait_applied("node-a", v2, WAIT).await;
    assert_eq!(api.node("node-b").await.unwrap()["applied_version"], v);
    let kinds: Vec<Value> = api
        .get("/api/v1/events?node=node-b")
        .await
        .json
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["kind"].clone())
        .collect();
    assert!(kinds.contains(&json!("node_revoked")), "{kinds:?}");
    assert_eq!(
        api.request("DELETE", "/api/v1/nodes/nobody", None, None)
            .await
            .status,
        404
    );
}
