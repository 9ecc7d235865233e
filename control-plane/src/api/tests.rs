//! The REST layer through the real router (`app`), request by request with
//! `tower::ServiceExt::oneshot`, over a temporary SQLite store.

use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt;
use serde_json::{json, Value};
use tower::ServiceExt;

use super::AppState;
use crate::auth::TokenDigest;
use crate::registry::Registry;
use crate::snapshot::ConfigService;
use crate::store::Store;

const TOKEN: &str = "test-admin-token";

struct Api {
    state: AppState,
    _dir: tempfile::TempDir,
    /// Keeps the rollout controller running.
    _stop: tokio::sync::watch::Sender<bool>,
}

impl Api {
    async fn new() -> Api {
        Self::keeping(1000).await
    }

    /// With the bodies of the newest `history_keep` versions kept.
    async fn keeping(history_keep: u64) -> Api {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path().join("t.db").to_str().unwrap())
            .await
            .unwrap();
        let config = Arc::new(
            ConfigService::start(store.clone(), history_keep)
                .await
                .unwrap(),
        );
        let registry = Arc::new(Registry::default());
        let seat = crate::rollout::controller::Seat {
            replica: "test".into(),
            stale_after: std::time::Duration::from_secs(15),
            leads: crate::rollout::lease::leadership(&store).1,
        };
        let (rollouts, controller) = crate::rollout::controller::start(
            config.clone(),
            store.clone(),
            registry.clone(),
            seat,
        )
        .await
        .unwrap();
        let (stop, stopped) = tokio::sync::watch::channel(false);
        tokio::spawn(controller.run(config.subscribe(), stopped));
        let state = AppState {
            config,
            series: crate::series::Series::new(store.clone(), 0, "test"),
            rollouts,
            store,
            registry,
            admin_token: TokenDigest::of(TOKEN),
            stale_after_ms: 15_000,
            replica: "test".into(),
        };
        Api {
            state,
            _dir: dir,
            _stop: stop,
        }
    }

    /// One request with the admin token; the status, the ETag and the JSON body.
    async fn call(
        &self,
        method: &str,
        path: &str,
        body: Option<Value>,
    ) -> (StatusCode, Option<String>, Value) {
        self.call_with(
            method,
            path,
            body,
            &[("authorization", &format!("Bearer {TOKEN}"))],
        )
        .await
    }

    async fn call_with(
        &self,
        method: &str,
        path: &str,
        body: Option<Value>,
        headers: &[(&str, &str)],
    ) -> (StatusCode, Option<String>, Value) {
        let mut req = Request::builder().method(method).uri(path);
        for (name, value) in headers {
            req = req.header(*name, *value);
        }
        let body = body.map_or(Body::empty(), |b| Body::from(b.to_string()));
        let resp = crate::app(self.state.clone())
            .oneshot(req.body(body).unwrap())
            .await
            .unwrap();
        let status = resp.status();
        let etag = resp
            .headers()
            .get("etag")
            .map(|v| v.to_str().unwrap().to_string());
        let bytes = resp.into_body().collect().await.unwrap().to_bytes();
        let json = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        (status, etag, json)
    }
}

fn document() -> Value {
    json!({
        "frontends": [{ "name": "web", "binds": [{ "address": "127.0.0.1:8080" }], "default_backend": "app" }],
        "backends": [{ "name": "app", "servers": [{ "name": "s1", "address": "127.0.0.1:9001" }] }]
    })
}

#[tokio::test]
async fn every_endpoint_needs_the_admin_token() {
    let api = Api::new().await;
    for path in [
        "/api/v1/config",
        "/api/v1/nodes",
        "/api/v1/certificates",
        "/api/v1/nowhere",
    ] {
        let (status, _, body) = api.call_with("GET", path, None, &[]).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{path}");
        assert_eq!(body["code"], "unauthorized");
        let (status, _, _) = api
            .call_with("GET", path, None, &[("authorization", "Bearer wrong")])
            .await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{path}");
    }
    let (status, _, body) = api.call("GET", "/api/v1/nowhere", None).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (StatusCode::NOT_FOUND, Some("not_found"))
    );
}

#[tokio::test]
async fn config_writes_are_validated_versioned_and_conditional() {
    let api = Api::new().await;
    let (status, etag, _) = api.call("GET", "/api/v1/config", None).await;
    assert_eq!((status, etag.as_deref()), (StatusCode::OK, Some("\"1\"")));

    // Invalid: 422 naming the field, nothing stored.
    let mut bad = document();
    bad["frontends"][0]["default_backend"] = json!("missing");
    let (status, _, body) = api.call("PUT", "/api/v1/config", Some(bad)).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(body["errors"][0]["field"], "frontends[0].default_backend");
    // Malformed: 400 naming the JSON path.
    let mut malformed = document();
    malformed["backends"][0]["servers"][0]["weight"] = json!("heavy");
    let (status, _, body) = api.call("PUT", "/api/v1/config", Some(malformed)).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["code"], "invalid_json");
    assert_eq!(body["errors"][0]["field"], "backends[0].servers[0].weight");
    let (_, etag, _) = api.call("GET", "/api/v1/config", None).await;
    assert_eq!(etag.as_deref(), Some("\"1\""), "nothing was stored");

    // Valid: a new version, the same body read back.
    let (status, _, body) = api.call("PUT", "/api/v1/config", Some(document())).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        (body["version"].as_u64(), body["changed"].as_bool()),
        (Some(2), Some(true))
    );
    let (_, etag, body) = api.call("GET", "/api/v1/config", None).await;
    assert_eq!(etag.as_deref(), Some("\"2\""));
    assert_eq!(
        body["backends"][0]["servers"][0]["address"],
        "127.0.0.1:9001"
    );

    // A write based on an older version is refused with the current one.
    let drain = |version: &'static str| {
        let auth = format!("Bearer {TOKEN}");
        let api = &api;
        async move {
            api.call_with(
                "PUT",
                "/api/v1/backends/app/servers/s1/state",
                Some(json!({ "state": "drain" })),
                &[("authorization", &auth), ("if-match", version)],
            )
            .await
        }
    };
    let (status, _, body) = drain("\"1\"").await;
    assert_eq!(status, StatusCode::PRECONDITION_FAILED);
    assert_eq!(body["current_version"], 2);
    let (status, _, body) = drain("\"2\"").await;
    assert_eq!(
        (status, body["version"].as_u64()),
        (StatusCode::OK, Some(3))
    );
    let (_, _, body) = api.call("GET", "/api/v1/backends/app", None).await;
    assert_eq!(body["servers"][0]["state"], "drain");
}

#[tokio::test]
async fn a_certificate_key_goes_in_and_never_comes_out() {
    let api = Api::new().await;
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
    let key_pem = cert.key_pair.serialize_pem();
    let (status, _, body) = api
        .call(
            "POST",
            "/api/v1/certificates",
            Some(json!({ "name": "site", "cert_pem": "not PEM", "key_pem": key_pem })),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(body["errors"][0]["field"], "cert_pem");
    let (status, _, body) = api
        .call(
            "POST",
            "/api/v1/certificates",
            Some(json!({ "name": "site", "cert_pem": cert.cert.pem(), "key_pem": key_pem })),
        )
        .await;
    assert_eq!(
        (status, body["version"].as_u64()),
        (StatusCode::CREATED, Some(2))
    );
    let (status, _, body) = api.call("GET", "/api/v1/certificates", None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body[0]["name"], "site");
    assert_eq!(body[0]["chain_length"], 1);
    let text = body.to_string();
    assert!(
        !text.contains("PRIVATE KEY") && !text.contains("key_pem"),
        "{text}"
    );
}

#[tokio::test]
async fn history_pages_and_keeps_summaries_past_its_retention() {
    let api = Api::keeping(2).await;
    for i in 0..5 {
        let mut doc = document();
        doc["defaults"] = json!({ "timeouts": { "tunnel": format!("{}h", i + 1) } });
        let (status, _, _) = api.call("PUT", "/api/v1/config", Some(doc)).await;
        assert_eq!(status, StatusCode::OK);
    }
    // Six versions (the initial empty one and five writes), paged newest first.
    let (_, _, first) = api.call("GET", "/api/v1/snapshots?limit=4", None).await;
    let versions = |page: &Value| -> Vec<u64> {
        page.as_array()
            .unwrap()
            .iter()
            .map(|s| s["version"].as_u64().unwrap())
            .collect()
    };
    assert_eq!(versions(&first), [6, 5, 4, 3]);
    let (_, _, next) = api
        .call("GET", "/api/v1/snapshots?before=3&limit=4", None)
        .await;
    assert_eq!(versions(&next), [2, 1]);
    assert!(next[1]["summary"].as_str().unwrap().contains("initial"));
    // The newest two keep their documents; older ones are gone, with a clear answer.
    let (status, _, body) = api.call("GET", "/api/v1/snapshots/5", None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["document"]["defaults"]["timeouts"]["tunnel"], "4h");
    let (status, _, body) = api.call("GET", "/api/v1/snapshots/4", None).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (StatusCode::GONE, Some("gone"))
    );
    let (status, _, _) = api.call("GET", "/api/v1/snapshots/99", None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn the_event_timeline_records_versions_and_states_and_filters() {
    let api = Api::new().await;
    let (status, _, _) = api.call("PUT", "/api/v1/config", Some(document())).await;
    assert_eq!(status, StatusCode::OK);
    let (status, _, _) = api
        .call(
            "PUT",
            "/api/v1/backends/app/servers/s1/state",
            Some(json!({ "state": "maint" })),
        )
        .await;
    assert_eq!(status, StatusCode::OK);

    let (status, _, all) = api.call("GET", "/api/v1/events", None).await;
    assert_eq!(status, StatusCode::OK);
    let kinds: Vec<_> = all
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["kind"].as_str().unwrap())
        .collect();
    // Newest first: the state, the version it made, the document's version, the first.
    assert_eq!(
        kinds,
        [
            "server_state",
            "version_committed",
            "version_committed",
            "version_committed"
        ]
    );
    assert_eq!(all[0]["backend"], "app");
    assert_eq!(all[0]["server"], "s1");
    assert_eq!(all[0]["detail"], "maint");
    assert_eq!(all[0]["version"], 3);
    assert!(
        all[2]["detail"].as_str().unwrap().contains("+backend app"),
        "{all}"
    );

    let (_, _, states) = api
        .call("GET", "/api/v1/events?kind=server_state", None)
        .await;
    assert_eq!(states.as_array().unwrap().len(), 1);
    let newest = all[0]["id"].as_i64().unwrap();
    let (_, _, page) = api
        .call(
            "GET",
            &format!("/api/v1/events?before={newest}&limit=1"),
            None,
        )
        .await;
    assert_eq!(page.as_array().unwrap().len(), 1);
    assert_eq!(page[0]["id"], all[1]["id"]);
    let (status, _, body) = api.call("GET", "/api/v1/events?limit=x", None).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_query"))
    );
}

#[tokio::test]
async fn versions_diff_and_roll_back_with_who_made_them() {
    let api = Api::new().await;
    let auth = format!("Bearer {TOKEN}");
    let who = |actor: &'static str| [("authorization", auth.as_str()), ("x-sluice-actor", actor)];
    let (status, _, _) = api
        .call_with("PUT", "/api/v1/config", Some(document()), &who("alice"))
        .await;
    assert_eq!(status, StatusCode::OK);
    let mut drained = document();
    drained["backends"][0]["servers"][0]["state"] = json!("drain");
    api.call_with("PUT", "/api/v1/config", Some(drained), &who("bob"))
        .await;

    let (status, _, diff) = api.call("GET", "/api/v1/snapshots/2/diff/3", None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        diff["changes"],
        json!([{ "path": "backends[app].servers[s1].state", "change": "added", "after": "drain" }])
    );
    assert!(
        diff["unified"]
            .as_str()
            .unwrap()
            .contains("+          \"state\": \"drain\""),
        "{}",
        diff["unified"]
    );
    let (status, _, body) = api.call("GET", "/api/v1/snapshots/2/diff/99", None).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (StatusCode::NOT_FOUND, Some("not_found"))
    );

    // Rollback: a new version equal to v2; a stale If-Match is refused first.
    let (status, _, _) = api
        .call_with(
            "POST",
            "/api/v1/snapshots/2/rollback",
            None,
            &[("authorization", auth.as_str()), ("if-match", "\"2\"")],
        )
        .await;
    assert_eq!(status, StatusCode::PRECONDITION_FAILED);
    let (status, etag, body) = api
        .call_with("POST", "/api/v1/snapshots/2/rollback", None, &who("carol"))
        .await;
    assert_eq!(
        (status, etag.as_deref()),
        (StatusCode::OK, Some("\"4\"")),
        "{body}"
    );
    let (_, _, v4) = api.call("GET", "/api/v1/snapshots/4", None).await;
    let (_, _, v2) = api.call("GET", "/api/v1/snapshots/2", None).await;
    assert_eq!(v4["document"], v2["document"]);
    assert_eq!(v4["actor"], "carol");
    assert!(
        v4["summary"]
            .as_str()
            .unwrap()
            .starts_with("rollback to v2"),
        "{v4}"
    );
    let (_, _, history) = api.call("GET", "/api/v1/snapshots", None).await;
    let actors: Vec<&str> = history
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["actor"].as_str().unwrap())
        .collect();
    assert_eq!(actors, ["carol", "bob", "alice", ""]);
    let (_, _, events) = api
        .call("GET", "/api/v1/events?kind=version_committed&limit=1", None)
        .await;
    assert_eq!(events[0]["actor"], "carol");
    // An actor over 64 characters is refused, naming the header.
    let long = "e".repeat(65);
    let (status, _, body) = api
        .call_with(
            "POST",
            "/api/v1/snapshots/2/rollback",
            None,
            &[("authorization", auth.as_str()), ("x-sluice-actor", &long)],
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["errors"][0]["field"], "X-Sluice-Actor");
}

#[tokio::test]
async fn series_queries_name_the_bad_parameter() {
    let api = Api::new().await;
    let (status, _, body) = api
        .call("GET", "/api/v1/series?metric=tunnels&from=-15m", None)
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["series"][0]["kind"], "gauge");
    assert_eq!(
        body["times"].as_array().unwrap().len(),
        body["series"][0]["values"].as_array().unwrap().len()
    );
    for (query, field) in [
        ("metric=nope", "metric"),
        ("metric=tunnels&scope=galaxy:x", "scope"),
        ("metric=tunnels&from=yesterday", "from"),
        ("metric=tunnels&step=fast", "step"),
        ("metric=tunnels&from=-30d&step=10s", "step"),
    ] {
        let (status, _, body) = api
            .call("GET", &format!("/api/v1/series?{query}"), None)
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{query}: {body}");
        assert_eq!(body["errors"][0]["field"], field, "{query}: {body}");
    }
}

#[tokio::test]
async fn an_haproxy_cfg_is_imported_and_nothing_is_stored() {
    let api = Api::new().await;
    let post = |body: &'static str| {
        let req = Request::builder()
            .method("POST")
            .uri("/api/v1/config/import")
            .header("authorization", format!("Bearer {TOKEN}"))
            .header("content-type", "text/plain")
            .body(Body::from(body))
            .unwrap();
        crate::app(api.state.clone()).oneshot(req)
    };
    let resp = post("frontend web\n  bind :8080\n  default_backend app\n  frobnicate\nbackend app\n  server s 127.0.0.1:9000\n")
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let body: Value =
        serde_json::from_slice(&resp.into_body().collect().await.unwrap().to_bytes()).unwrap();
    assert_eq!(
        body["document"]["frontends"][0]["binds"][0]["address"],
        "0.0.0.0:8080"
    );
    assert_eq!(body["report"][0]["line"], 4);
    assert_eq!(body["report"][0]["kind"], "unsupported");
    let resp = post("frontend web\n  acl a \"open\n").await.unwrap();
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    let body: Value =
        serde_json::from_slice(&resp.into_body().collect().await.unwrap().to_bytes()).unwrap();
    assert_eq!(body["errors"][0]["field"], "line 2, column 9");
    // Nothing stored.
    assert_eq!(
        api.call("GET", "/api/v1/config", None).await.1.as_deref(),
        Some("\"1\"")
    );
}
