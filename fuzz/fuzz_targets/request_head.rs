//! Any bytes a client sends on a node's connection: the HTTP/1.1 head is parsed (hyper,
//! under the node's socket wrapper with its refusal pages) and the routing phase runs the
//! frontend's request rules and ACLs on it, in memory, without panicking.
#![no_main]

use std::convert::Infallible;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use libfuzzer_sys::fuzz_target;
use serde_json::json;
use sluice_data_plane::config::{BindPlan, Plan};
use sluice_data_plane::counters::Registry;
use sluice_data_plane::proxy::io::ClientIo;
use sluice_data_plane::proxy::route::{self, Client, Route};
use tokio::io::AsyncWriteExt;

/// A frontend with rules of every kind, compiled once through the control plane's own
/// compiler, as a node would receive it.
fn bind() -> Arc<BindPlan> {
    static BIND: OnceLock<Arc<BindPlan>> = OnceLock::new();
    BIND.get_or_init(|| {
        let doc: sluice_control_plane::config::ConfigDocument = serde_json::from_value(json!({
            "frontends": [{
                "name": "fe",
                "binds": [{ "address": "127.0.0.1:8080" }],
                "stick_table": { "type": "ip", "size": 100, "expire": "10s", "store": ["conn_cur", "http_req_rate(10s)"] },
                "acls": [
                    { "name": "is_ws", "expr": "hdr(Upgrade) -i websocket" },
                    { "name": "conn_up", "expr": "hdr_sub(Connection) -i upgrade" },
                    { "name": "chat", "expr": "path_beg /ws/chat" },
                    { "name": "api", "expr": "path_reg ^/api/v[0-9]+/" },
                    { "name": "host", "expr": "hdr_dom(host) -i example.com" },
                    { "name": "param", "expr": "url_param(room) -m int gt 10" },
                    { "name": "many", "expr": "hdr_cnt(x-forwarded-for) gt 2" },
                    { "name": "local", "expr": "src 127.0.0.0/8 ::1" },
                    { "name": "cookie", "expr": "cook(SESSION) -m found" }
                ],
                "http_request": [
                    { "action": "track-sc0", "key": "src", "if": "is_ws" },
                    { "action": "deny", "status": 429, "if": "is_ws { sc_http_req_rate(0) gt 1000 }" },
                    { "action": "redirect", "scheme": "https", "code": 301, "if": "host !{ ssl_fc }" },
                    { "action": "redirect", "prefix": "https://other.example", "if": "{ path_beg /moved }" },
                    { "action": "set-header", "name": "X-Forwarded-Proto", "value": "http" },
                    { "action": "add-header", "name": "X-Via", "value": "sluice", "unless": "local" },
                    { "action": "del-header", "name": "Proxy" },
                    { "action": "replace-header", "name": "Host", "regex": "^(.*)\\.internal$", "replacement": "\\1" },
                    { "action": "set-path", "path": "/v2", "if": "api" },
                    { "action": "return", "status": 200, "content_type": "text/plain", "body": "ok", "if": "{ path /health }" }
                ],
                "use_backend": [
                    { "backend": "ws", "if": "is_ws conn_up chat or param" },
                    { "backend": "app", "if": "many || cookie" }
                ],
                "default_backend": "app"
            }],
            "backends": [
                { "name": "ws", "servers": [{ "name": "w", "address": "127.0.0.1:1" }] },
                { "name": "app", "servers": [{ "name": "a", "address": "127.0.0.1:2" }] }
            ]
        }))
        .expect("a valid document");
        let snap = sluice_control_plane::config::compile(&doc).expect("it compiles");
        let plan = Plan::compile(&snap, &Registry::default()).expect("a plan");
        plan.binds.values().next().expect("one bind").clone()
    })
    .clone()
}

fuzz_target!(|data: &[u8]| {
    let bind = bind();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("a runtime");
    let data = data.to_vec();
    runtime.block_on(async move {
        let fe = bind.frontend.clone();
        let (near, mut far) = tokio::io::duplex(64 * 1024);
        let io = ClientIo::new(
            near,
            Duration::from_millis(200),
            Duration::from_millis(200),
            fe.refusal_pages.clone(),
        );
        let client = Arc::new(Client {
            bind: bind.clone(),
            src: "127.0.0.1:40000".parse().unwrap(),
            local: bind.address,
            tls: false,
            alpn: None,
            tracked: Mutex::default(),
        });
        let svc = service_fn(move |req: http::Request<hyper::body::Incoming>| {
            let client = client.clone();
            let fe = fe.clone();
            async move {
                let (mut parts, _body) = req.into_parts();
                let routed = route::route(&mut parts, &client, &fe);
                let resp = match routed.route {
                    Route::Answered(r) | Route::Denied(r) => r,
                    Route::Backend(_) | Route::NoBackend => {
                        http::Response::new(Full::new(bytes::Bytes::new()).map_err(|n| match n {}).boxed())
                    }
                };
                Ok::<_, Infallible>(resp)
            }
        });
        let serve = hyper::server::conn::http1::Builder::new()
            .serve_connection(TokioIo::new(io), svc)
            .with_upgrades();
        let feed = async move {
            let _ = far.write_all(&data).await;
            let _ = far.shutdown().await;
            // Drain what the node answers, so it never blocks on a full pipe.
            let mut sink = Vec::new();
            let _ = tokio::io::AsyncReadExt::read_to_end(&mut far, &mut sink).await;
        };
        let _ = tokio::time::timeout(Duration::from_secs(2), async {
            let _ = tokio::join!(serve, feed);
        })
        .await;
    });
});
