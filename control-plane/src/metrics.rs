//! Prometheus metrics of the control plane at `/metrics`, rendered on scrape from the
//! current state (configuration version, fleet convergence).

use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use prometheus_client::encoding::text::encode;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::api::AppState;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct NodeLabels {
    node: String,
}

pub async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    let mut registry = Registry::with_prefix("sluice_cp");
    let version = Gauge::<i64>::default();
    version.set(state.config.current().snapshot.version as i64);
    registry.register(
        "config_version",
        "Newest committed configuration version",
        version,
    );
    let connected = Gauge::<i64>::default();
    connected.set(state.registry.connected_count() as i64);
    registry.register(
        "nodes_connected",
        "Data-plane nodes with an open stream",
        connected,
    );
    let applied = Family::<NodeLabels, Gauge>::default();
    let tunnels = Family::<NodeLabels, Gauge>::default();
    if let Ok(nodes) = state.store.list_nodes().await {
        for n in nodes {
            let labels = NodeLabels {
                node: n.node_id.clone(),
            };
            applied.get_or_create(&labels).set(n.applied_version as i64);
            if let Some(stats) = state.registry.get(&n.node_id).and_then(|l| l.stats) {
                let t: u64 = stats.frontends.iter().map(|f| f.current_tunnels).sum();
                tunnels.get_or_create(&labels).set(t as i64);
            }
        }
    }
    registry.register(
        "node_applied_version",
        "Configuration version each node serves",
        applied,
    );
    registry.register(
        "node_tunnels",
        "Open WebSocket tunnels each node reported",
        tunnels,
    );
    let mut body = String::new();
    if encode(&mut body, &registry).is_err() {
        body.clear();
    }
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        body,
    )
}
