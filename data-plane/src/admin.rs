//! The node's admin listener (`--admin-listen`, default `127.0.0.1:7082`): Prometheus
//! metrics at `/metrics`, rendered on scrape from the counters in [`crate::counters`], a
//! liveness probe at `/healthz`, a readiness probe at `/readyz` (ready: a plan is serving),
//! and the open listeners at `/listeners` (with the port the
//! kernel chose for a bind configured with port 0). Not for clients: bind it to an address only operators
//! and the monitoring system reach.

use std::convert::Infallible;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use bytes::Bytes;
use http::{header, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use prometheus_client::encoding::text::encode;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;

use crate::Node;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FrontendLabels {
    frontend: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ClassLabels {
    frontend: String,
    code: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ServerLabels {
    backend: String,
    server: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ServerClassLabels {
    backend: String,
    server: String,
    code: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ServerErrorLabels {
    backend: String,
    server: String,
    /// `connect`, `timeout` (no response within timeout server) or `response` (invalid).
    kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BackendLabels {
    backend: String,
}

/// The registry is built afresh for every scrape, so a counter is exposed by adding the
/// cumulative value read from the node's atomics to a new zero counter.
fn counter_family<L>() -> Family<L, Counter>
where
    L: Clone + std::hash::Hash + Eq + EncodeLabelSet + std::fmt::Debug + Send + Sync + 'static,
{
    Family::default()
}

/// Adds a cumulative value to a fresh counter.
fn count<L>(family: &Family<L, Counter>, labels: &L, value: u64)
where
    L: Clone + std::hash::Hash + Eq + EncodeLabelSet + std::fmt::Debug + Send + Sync + 'static,
{
    family.get_or_create(labels).inc_by(value);
}

fn gauge<L>(family: &Family<L, Gauge>, labels: &L, value: i64)
where
    L: Clone + std::hash::Hash + Eq + EncodeLabelSet + std::fmt::Debug + Send + Sync + 'static,
{
    family.get_or_create(labels).set(value);
}

/// Renders the node's metrics in the Prometheus text format.
pub fn render(node: &Node) -> String {
    let plan = node.plan.load();
    let mut reg = Registry::with_prefix("sluice");
    let version = Gauge::<i64>::default();
    version.set(plan.version as i64);
    reg.register(
        "config_version",
        "Configuration version this node serves",
        version,
    );

    let fe_conns = Family::<FrontendLabels, Gauge>::default();
    let fe_tunnels = Family::<FrontendLabels, Gauge>::default();
    let fe_conns_total = counter_family::<FrontendLabels>();
    let fe_upgrades = counter_family::<FrontendLabels>();
    let fe_requests = counter_family::<FrontendLabels>();
    let fe_bytes_in = counter_family::<FrontendLabels>();
    let fe_bytes_out = counter_family::<FrontendLabels>();
    let fe_denied = counter_family::<FrontendLabels>();
    let fe_bad = counter_family::<FrontendLabels>();
    let fe_stick = Family::<FrontendLabels, Gauge>::default();
    let fe_tls_failures = counter_family::<FrontendLabels>();
    let fe_responses = counter_family::<ClassLabels>();
    for f in &plan.frontends {
        let l = FrontendLabels {
            frontend: f.name.to_string(),
        };
        let c = &f.counters;
        fe_conns.get_or_create(&l).set(c.open_connections() as i64);
        gauge(&fe_tunnels, &l, c.current_tunnels.load(Relaxed) as i64);
        count(&fe_conns_total, &l, c.total_connections.load(Relaxed));
        count(&fe_upgrades, &l, c.total_upgrades.load(Relaxed));
        count(&fe_requests, &l, c.total_requests.load(Relaxed));
        count(&fe_bytes_in, &l, c.bytes_in.load(Relaxed));
        count(&fe_bytes_out, &l, c.bytes_out.load(Relaxed));
        count(&fe_denied, &l, c.denied.load(Relaxed));
        count(&fe_bad, &l, c.bad_requests.load(Relaxed));
        count(&fe_tls_failures, &l, c.tls_handshake_failures.load(Relaxed));
        if let Some(t) = &f.stick {
            gauge(&fe_stick, &l, t.len() as i64);
        }
        for (i, n) in c.responses_by_class.iter().enumerate() {
            fe_responses
                .get_or_create(&ClassLabels {
                    frontend: f.name.to_string(),
                    code: format!("{}xx", i + 1),
                })
                .inc_by(n.load(Relaxed));
        }
    }
    reg.register("frontend_connections", "Open client connections", fe_conns);
    reg.register("frontend_tunnels", "Open WebSocket tunnels", fe_tunnels);
    reg.register(
        "frontend_connections_accepted",
        "Client connections accepted",
        fe_conns_total,
    );
    reg.register(
        "frontend_upgrades",
        "Upgrades relayed with a 101",
        fe_upgrades,
    );
    reg.register("frontend_requests", "HTTP requests received", fe_requests);
    reg.register(
        "frontend_tunnel_bytes_in",
        "Tunnel bytes from clients",
        fe_bytes_in,
    );
    reg.register(
        "frontend_tunnel_bytes_out",
        "Tunnel bytes to clients",
        fe_bytes_out,
    );
    reg.register("frontend_denied", "Requests denied by rules", fe_denied);
    reg.register(
        "frontend_tls_handshake_failures",
        "TLS handshakes that failed or timed out",
        fe_tls_failures,
    );
    reg.register(
        "stick_table_entries",
        "Entries in the frontend's stick table",
        fe_stick,
    );
    reg.register(
        "frontend_invalid_requests",
        "Requests refused before routing (malformed, head too large, timeout http-request)",
        fe_bad,
    );
    reg.register(
        "frontend_responses",
        "Responses by status class",
        fe_responses,
    );

    let be_requests = counter_family::<BackendLabels>();
    let be_no_server = counter_family::<BackendLabels>();
    let be_queue = Family::<BackendLabels, Gauge>::default();
    let be_queue_timeouts = counter_family::<BackendLabels>();
    let srv_conns = Family::<ServerLabels, Gauge>::default();
    let srv_tunnels = Family::<ServerLabels, Gauge>::default();
    let srv_conns_total = counter_family::<ServerLabels>();
    let srv_upgrades = counter_family::<ServerLabels>();
    let srv_bytes_in = counter_family::<ServerLabels>();
    let srv_bytes_out = counter_family::<ServerLabels>();
    let srv_errors = counter_family::<ServerErrorLabels>();
    let srv_responses = counter_family::<ServerClassLabels>();
    let srv_up = Family::<ServerLabels, Gauge>::default();
    let srv_check_failures = counter_family::<ServerLabels>();
    let srv_transitions = counter_family::<ServerLabels>();
    for b in &plan.backends {
        let bl = BackendLabels {
            backend: b.name.to_string(),
        };
        count(&be_requests, &bl, b.counters.total_requests.load(Relaxed));
        count(&be_no_server, &bl, b.counters.no_server.load(Relaxed));
        gauge(&be_queue, &bl, b.counters.queued.load(Relaxed) as i64);
        count(
            &be_queue_timeouts,
            &bl,
            b.counters.queue_timeouts.load(Relaxed),
        );
        for s in &b.servers {
            let l = ServerLabels {
                backend: b.name.to_string(),
                server: s.name.to_string(),
            };
            let c = &s.counters;
            srv_up.get_or_create(&l).set(i64::from(!c.health.is_down()));
            count(&srv_check_failures, &l, c.check_failures.load(Relaxed));
            count(&srv_transitions, &l, c.health_transitions.load(Relaxed));
            gauge(&srv_conns, &l, c.current_connections.load(Relaxed) as i64);
            gauge(&srv_tunnels, &l, c.current_tunnels.load(Relaxed) as i64);
            count(&srv_conns_total, &l, c.total_connections.load(Relaxed));
            count(&srv_upgrades, &l, c.total_upgrades.load(Relaxed));
            count(&srv_bytes_in, &l, c.bytes_in.load(Relaxed));
            count(&srv_bytes_out, &l, c.bytes_out.load(Relaxed));
            for (kind, n) in [
                ("connect", &c.connect_errors),
                ("timeout", &c.timeouts),
                ("response", &c.bad_responses),
                ("tunnel", &c.tunnel_errors),
            ] {
                srv_errors
                    .get_or_create(&ServerErrorLabels {
                        backend: l.backend.clone(),
                        server: l.server.clone(),
                        kind,
                    })
                    .inc_by(n.load(Relaxed));
            }
            for (i, n) in c.responses_by_class.iter().enumerate() {
                srv_responses
                    .get_or_create(&ServerClassLabels {
                        backend: l.backend.clone(),
                        server: l.server.clone(),
                        code: format!("{}xx", i + 1),
                    })
                    .inc_by(n.load(Relaxed));
            }
        }
    }
    reg.register(
        "backend_requests",
        "Requests routed to the backend",
        be_requests,
    );
    reg.register(
        "backend_no_server",
        "Requests that found no usable server (503)",
        be_no_server,
    );
    reg.register(
        "backend_queue",
        "Requests waiting for a server slot (maxconn)",
        be_queue,
    );
    reg.register(
        "backend_queue_timeouts",
        "Requests that waited past timeout queue (503)",
        be_queue_timeouts,
    );
    reg.register(
        "server_up",
        "1 unless health checks from this node mark the server down",
        srv_up,
    );
    reg.register(
        "server_check_failures",
        "Failed health checks",
        srv_check_failures,
    );
    reg.register(
        "server_health_transitions",
        "Up/down changes decided by health checks",
        srv_transitions,
    );
    reg.register(
        "server_connections",
        "Open connections to the server",
        srv_conns,
    );
    reg.register("server_tunnels", "Open tunnels to the server", srv_tunnels);
    reg.register(
        "server_connections_opened",
        "Requests and upgrades sent to the server",
        srv_conns_total,
    );
    reg.register(
        "server_upgrades",
        "Upgrades the server accepted",
        srv_upgrades,
    );
    reg.register(
        "server_tunnel_bytes_in",
        "Tunnel bytes from clients to the server",
        srv_bytes_in,
    );
    reg.register(
        "server_tunnel_bytes_out",
        "Tunnel bytes from the server to clients",
        srv_bytes_out,
    );
    reg.register(
        "server_errors",
        "Server-side failures by kind: connect, timeout, response",
        srv_errors,
    );
    reg.register(
        "server_responses",
        "Server responses by status class",
        srv_responses,
    );

    let mut out = String::new();
    if encode(&mut out, &reg).is_err() {
        out.clear();
    }
    out
}

/// The open listeners as JSON: `[{"frontend", "address", "bound"}]`, where `bound` is the
/// address the node accepts on (the kernel's choice for a configured port 0).
fn listeners(node: &Node) -> String {
    let plan = node.plan.load();
    let list: Vec<serde_json::Value> = node
        .listeners()
        .into_iter()
        .map(|(address, bound)| {
            let frontend = plan
                .binds
                .get(&address)
                .map(|b| b.frontend.name.to_string());
            serde_json::json!({ "frontend": frontend, "address": address, "bound": bound })
        })
        .collect();
    serde_json::Value::Array(list).to_string()
}

/// Serves the admin endpoints on `listener` until the process exits.
pub async fn serve(listener: TcpListener, node: Arc<Node>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let node = node.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |req: Request<Incoming>| {
                let node = node.clone();
                async move {
                    let (status, ctype, body) = match req.uri().path() {
                        "/metrics" => (
                            StatusCode::OK,
                            "text/plain; version=0.0.4; charset=utf-8",
                            render(&node),
                        ),
                        "/healthz" => (StatusCode::OK, "text/plain", "ok\n".to_string()),
                        "/readyz" if node.ready() => {
                            (StatusCode::OK, "text/plain", "ready\n".to_string())
                        }
                        "/readyz" => (
                            StatusCode::SERVICE_UNAVAILABLE,
                            "text/plain",
                            "no plan is serving\n".to_string(),
                        ),
                        "/listeners" => (StatusCode::OK, "application/json", listeners(&node)),
                        _ => (
                            StatusCode::NOT_FOUND,
                            "text/plain",
                            "not found\n".to_string(),
                        ),
                    };
                    let mut resp = Response::new(Full::new(Bytes::from(body)));
                    *resp.status_mut() = status;
                    resp.headers_mut().insert(
                        header::CONTENT_TYPE,
                        header::HeaderValue::from_static(ctype),
                    );
                    Ok::<_, Infallible>(resp)
                }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
    }
}
