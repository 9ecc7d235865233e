//! The REST API as an operator uses it: auth, validation that names the field and stores
//! nothing, optimistic concurrency, history, per-object CRUD, the article's document.

use serde_json::{json, Value};
use sluice_tests::harness::{ControlPlane, Reply};

fn article() -> Value {
    let text = include_str!("../../docs/examples/article.json");
    serde_json::from_str(text).unwrap()
}

/// A small valid document to start from.
fn base() -> Value {
    json!({
        "defaults": { "timeouts": { "connect": "5s", "client": "30s", "server": "30s", "tunnel": "1h" } },
        "frontends": [{
            "name": "web",
            "binds": [{ "address": "127.0.0.1:18080" }],
            "acls": [{ "name": "is_ws", "expr": "hdr(Upgrade) -i websocket" }],
            "use_backend": [{ "backend": "ws", "if": "is_ws" }],
            "default_backend": "app"
        }],
        "backends": [
            { "name": "ws", "servers": [{ "name": "ws-1", "address": "127.0.0.1:9001" }] },
            { "name": "app", "servers": [{ "name": "app-1", "address": "127.0.0.1:9002" }] }
        ]
    })
}

fn fields(r: &Reply) -> Vec<String> {
    r.json["errors"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|e| e["field"].as_str().unwrap_or("").to_string())
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test]
async fn every_endpoint_requires_the_admin_token() {
    let dir = tempfile::tempdir().unwrap();
    let cp = ControlPlane::start(dir.path());
    let api = cp.api();
    // Every operation the OpenAPI document lists, path parameters filled in.
    let doc = api.get("/api/v1/openapi.json").await.json;
    let mut operations: Vec<(String, String)> = Vec::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        let concrete = path
            .split('/')
            .map(|seg| if seg.starts_with('{') { "x" } else { seg })
            .collect::<Vec<_>>()
            .join("/");
        for method in item.as_object().unwrap().keys() {
            operations.push((method.to_uppercase(), concrete.clone()));
        }
    }
    assert!(operations.len() >= 15, "{operations:?}");
    operations.push(("GET".into(), "/api/v1/openapi.json".into()));
    // No token, a wrong one, and the node token: each is refused everywhere.
    for token in ["", "wrong-token", cp.node_token.as_str()] {
        let anon = api.with_token(token);
        for (method, path) in &operations {
            let (method, path) = (method.as_str(), path.as_str());
            let r = anon.request(method, path, Some(&base()), None).await;
            assert_eq!(
                r.status, 401,
                "{method} {path} with token {token:?}: {}",
                r.json
            );
            assert_eq!(r.json["code"], "unauthorized");
        }
    }
    // Nothing was stored by the refused PUT.
    assert_eq!(api.version().await, 1);
    // The token is never echoed back.
    let r = api.get("/api/v1/config").await;
    assert!(!r.json.to_string().contains(&cp.admin_token));
}

#[tokio::test]
async fn invalid_documents_name_the_field_and_store_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let cp = ControlPlane::start(dir.path());
    let api = cp.api();
    let good = api.put_config(&base()).await;
    let before = api.get("/api/v1/config").await;

    let mut cases: Vec<(&str, Value, &str)> = Vec::new();
    let mut d = base();
    d["frontends"][0]["use_backend"][0]["backend"] = json!("ws_chatt");
    cases.push(("unknown backend", d, "frontends[0].use_backend[0].backend"));
    let mut d = base();
    d["backends"][1]["name"] = json!("ws");
    cases.push(("duplicate name", d, "backends[1].name"));
    let mut d = base();
    d["frontends"][0]["binds"][0]["address"] = json!("127.0.0.1:65536");
    cases.push(("port out of range", d, "frontends[0].binds[0].address"));
    let mut d = base();
    d["backends"][0]["servers"][0]["address"] = json!("127.0.0.1:0");
    cases.push(("server port 0", d, "backends[0].servers[0].address"));
    let mut d = base();
    d["defaults"]["timeouts"]["tunnel"] = json!("an hour");
    cases.push(("bad timeout", d, "defaults.timeouts.tunnel"));
    let mut d = base();
    d["frontends"][0]["use_backend"][0]["if"] = json!("is_websockt");
    cases.push(("unknown ACL", d, "frontends[0].use_backend[0].if"));
    let mut d = base();
    d["frontends"][0]["acls"][0]["expr"] = json!("hdr(Upgrade) -q websocket");
    cases.push(("bad ACL flag", d, "frontends[0].acls[0].expr"));

    for (what, doc, field) in &cases {
        let r = api.request("PUT", "/api/v1/config", Some(doc), None).await;
        assert_eq!(r.status, 422, "{what}: {}", r.json);
        assert_eq!(r.json["code"], "invalid_config", "{what}");
        assert!(
            fields(&r).iter().any(|f| f == field),
            "{what}: expected {field} in {}",
            r.json
        );
        assert!(
            r.json["message"].as_str().unwrap().contains(field),
            "{what}: message names the field"
        );
        // The dry run says the same and stores nothing either.
        let v = api
            .request("POST", "/api/v1/config/validate", Some(doc), None)
            .await;
        assert_eq!(v.status, 422, "{what} (validate)");
    }
    let r = api
        .request("PUT", "/api/v1/config", Some(&cases[5].1), None)
        .await;
    assert!(r.json["message"]
        .as_str()
        .unwrap()
        .contains("frontends[0].use_backend[0].if: unknown ACL \"is_websockt\" at column 1"));

    // Shape errors: 400 naming the field.
    let mut d = base();
    d["frontends"][0].as_object_mut().unwrap().remove("name");
    let r = api.request("PUT", "/api/v1/config", Some(&d), None).await;
    assert_eq!(r.status, 400, "{}", r.json);
    assert_eq!(fields(&r), vec!["frontends[0].name"]);
    let mut d = base();
    d["backends"][0]["servers"][0]["wieght"] = json!(3);
    let r = api.request("PUT", "/api/v1/config", Some(&d), None).await;
    assert_eq!(r.status, 400);
    assert!(
        r.json["message"].as_str().unwrap().contains("wieght"),
        "{}",
        r.json
    );
    let mut d = base();
    d["backends"][0]["servers"][0]["weight"] = json!("heavy");
    let r = api.request("PUT", "/api/v1/config", Some(&d), None).await;
    assert_eq!(r.status, 400);
    assert_eq!(fields(&r), vec!["backends[0].servers[0].weight"]);

    // Nothing changed: same document, same version, no new snapshot.
    let after = api.get("/api/v1/config").await;
    assert_eq!(after.json, before.json);
    assert_eq!(after.etag, before.etag);
    assert_eq!(api.version().await, good);
    let valid = api
        .request("POST", "/api/v1/config/validate", Some(&base()), None)
        .await;
    assert_eq!(valid.status, 200);
    assert_eq!(api.version().await, good, "a dry run creates no version");
}

#[tokio::test]
async fn stale_if_match_loses_and_nothing_is_lost() {
    let dir = tempfile::tempdir().unwrap();
    let cp = ControlPlane::start(dir.path());
    let api = cp.api();
    api.put_config(&base()).await;
    let current = api.get("/api/v1/config").await;
    let etag = current.etag.clone().unwrap();

    // Two writers start from the same ETag and race.
    let mut one = current.json.clone();
    one["backends"][0]["servers"][0]["weight"] = json!(7);
    let mut two = current.json.clone();
    two["backends"][1]["servers"][0]["weight"] = json!(9);
    let (r1, r2) = tokio::join!(
        api.request("PUT", "/api/v1/config", Some(&one), Some(&etag)),
        api.request("PUT", "/api/v1/config", Some(&two), Some(&etag)),
    );
    let mut statuses = [r1.status, r2.status];
    statuses.sort();
    assert_eq!(statuses, [200, 412], "{} / {}", r1.json, r2.json);
    let (winner, loser_doc) = if r1.status == 200 {
        (&one, &two)
    } else {
        (&two, &one)
    };
    let loser = if r1.status == 412 { &r1 } else { &r2 };
    assert_eq!(loser.json["code"], "version_mismatch");

    let now = api.get("/api/v1/config").await;
    assert_eq!(
        &now.json, winner,
        "the winner's change is stored, the loser's is not"
    );

    // The loser re-reads, re-applies its change on top, and succeeds: nothing is lost.
    let mut merged = now.json.clone();
    if loser_doc == &two {
        merged["backends"][1]["servers"][0]["weight"] = json!(9);
    } else {
        merged["backends"][0]["servers"][0]["weight"] = json!(7);
    }
    let r = api
        .request("PUT", "/api/v1/config", Some(&merged), now.etag.as_deref())
        .await;
    assert_eq!(r.status, 200, "{}", r.json);
    let end = api.get("/api/v1/config").await;
    assert_eq!(end.json["backends"][0]["servers"][0]["weight"], 7);
    assert_eq!(end.json["backends"][1]["servers"][0]["weight"], 9);

    // Per-object writes honour If-Match too.
    let r = api
        .request("DELETE", "/api/v1/frontends/web", None, Some(&etag))
        .await;
    assert_eq!(r.status, 412);
}

#[tokio::test]
async fn objects_history_and_the_article_document() {
    let dir = tempfile::tempdir().unwrap();
    let cp = ControlPlane::start(dir.path());
    let api = cp.api();

    // Its HTTPS bind names a certificate, which must exist first: refused, nothing stored.
    let r = api
        .request("PUT", "/api/v1/config", Some(&article()), None)
        .await;
    assert_eq!(r.status, 422, "{}", r.json);
    assert!(
        fields(&r).contains(&"frontends[0].binds[0].tls.certificates[0]".to_string()),
        "{}",
        r.json
    );
    assert_eq!(
        api.get("/api/v1/config").await.etag.as_deref(),
        Some("\"1\"")
    );
    let cert = rcgen::generate_simple_self_signed(vec!["solvethenetwork.com".into()]).unwrap();
    let r = api
        .request(
            "POST",
            "/api/v1/certificates",
            Some(
                &json!({ "name": "solvethenetwork", "cert_pem": cert.cert.pem(),
                          "key_pem": cert.key_pair.serialize_pem() }),
            ),
            None,
        )
        .await;
    assert_eq!((r.status, r.json["version"].clone()), (201, json!(2)));

    // The article's complete configuration is accepted as is and reads back unchanged.
    let v = api.put_config(&article()).await;
    assert_eq!(v, 3);
    let got = api.get("/api/v1/config").await;
    assert_eq!(got.json, article());
    assert_eq!(got.etag.as_deref(), Some("\"3\""));
    // Re-applying the same document is a no-op, not a new version.
    let r = api
        .request("PUT", "/api/v1/config", Some(&article()), None)
        .await;
    assert_eq!((r.status, r.json["changed"].clone()), (200, json!(false)));
    assert_eq!(r.json["version"], 3);

    // Per-object CRUD goes through the same validation and versioning.
    let backend = json!({ "name": "extra", "balance": "leastconn",
        "servers": [{ "name": "x-1", "address": "127.0.0.1:9100" }] });
    let r = api
        .request("POST", "/api/v1/backends", Some(&backend), None)
        .await;
    assert_eq!(r.status, 201, "{}", r.json);
    assert_eq!(r.json["version"], 4);
    let r = api
        .request("POST", "/api/v1/backends", Some(&backend), None)
        .await;
    assert_eq!(r.status, 409);
    let r = api.get("/api/v1/backends/extra").await;
    assert_eq!(r.json["balance"], "leastconn");
    // A backend still referenced cannot be deleted; the referencing field is named.
    let r = api
        .request("DELETE", "/api/v1/backends/ws_chat_backends", None, None)
        .await;
    assert_eq!(r.status, 422);
    assert!(
        fields(&r).contains(&"frontends[0].use_backend[0].backend".to_string()),
        "{}",
        r.json
    );
    let r = api
        .request("DELETE", "/api/v1/backends/extra", None, None)
        .await;
    assert_eq!(r.status, 200);
    let r = api.get("/api/v1/backends/extra").await;
    assert_eq!(r.status, 404);
    let mut fe = article()["frontends"][0].clone();
    fe["default_backend"] = json!("ws_backends");
    let r = api
        .request("PUT", "/api/v1/frontends/https_frontend", Some(&fe), None)
        .await;
    assert_eq!(r.status, 200, "{}", r.json);
    let r = api.get("/api/v1/frontends").await;
    assert_eq!(r.json[0]["default_backend"], "ws_backends");

    // History: every committed version, newest first, each retrievable.
    let r = api.get("/api/v1/snapshots").await;
    let versions: Vec<u64> = r
        .json
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["version"].as_u64().unwrap())
        .collect();
    assert_eq!(versions, vec![6, 5, 4, 3, 2, 1]);
    assert!(r.json[0]["summary"]
        .as_str()
        .unwrap()
        .contains("frontend https_frontend"));
    let r = api.get("/api/v1/snapshots/3").await;
    assert_eq!(r.json["document"], article());
    // History holds documents, never certificate keys.
    assert!(!api
        .get("/api/v1/snapshots/3")
        .await
        .json
        .to_string()
        .contains("PRIVATE KEY"));
    assert_eq!(api.get("/api/v1/snapshots/99").await.status, 404);

    // The OpenAPI document is generated from the code and covers the endpoints.
    let r = api.get("/api/v1/openapi.json").await;
    assert_eq!(r.status, 200);
    for path in [
        "/api/v1/config",
        "/api/v1/config/validate",
        "/api/v1/frontends/{name}",
        "/api/v1/nodes",
        "/api/v1/snapshots/{version}",
    ] {
        assert!(
            r.json["paths"][path].is_object(),
            "{path} missing from OpenAPI"
        );
    }
    assert!(r.json["components"]["schemas"]["ConfigDocument"].is_object());

    // Prometheus metrics on the API listener.
    let metrics = reqwest::get(format!("{}/metrics", cp.api))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(metrics.contains("sluice_cp_config_version 6"), "{metrics}");

    // Restart: configuration and version persist.
    let mut cp = cp;
    cp.restart();
    let api = cp.api();
    let r = api.get("/api/v1/config").await;
    assert_eq!(r.etag.as_deref(), Some("\"6\""));
    assert_eq!(r.json["frontends"][0]["default_backend"], "ws_backends");
    // Certificates persist too (and still without their key).
    let r = api.get("/api/v1/certificates/solvethenetwork").await;
    assert_eq!(r.status, 200);
    assert!(!r.json.to_string().contains("PRIVATE KEY"));
}
