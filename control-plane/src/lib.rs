//! Sluice control plane: the only stateful part of a Sluice deployment.
//!
//! It stores the configuration in SQLite ([`store`]), accepts changes through the REST API
//! ([`api`]), validates each change as a whole and turns it into an immutable, versioned
//! snapshot ([`config`], [`snapshot`]), and streams snapshots to data-plane nodes over
//! gRPC ([`grpc`]), recording their acks, nacks and stats. It also serves the dashboard
//! ([`ui`]) and Prometheus metrics ([`metrics`]).
//!
//! Flow of a write: REST handler → [`snapshot::ConfigService::apply`] (serialized) →
//! [`config::compile`] (validate + build protobuf) → [`store::Store::commit`] (one
//! transaction, conditional version bump) → `watch` publish → every node stream.

pub mod api;
pub mod auth;
pub mod clock;
pub mod config;
pub mod events;
pub mod grpc;
pub mod import;
pub mod metrics;
pub mod registry;
pub mod rollout;
pub mod series;
pub mod snapshot;
pub mod store;
pub mod ui;

use axum::routing::get;
use axum::Router;

/// The whole HTTP surface on the API listener: `/api/v1`, `/metrics`, the dashboard.
pub fn app(state: api::AppState) -> Router {
    Router::new()
        .route("/", get(ui::index))
        .route("/ui/{*path}", get(ui::asset))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/metrics", get(metrics::metrics))
        .with_state(state.clone())
        .nest("/api/v1", api::router(state))
}
