//! The REST API under `/api/v1`: JSON, bearer admin token on every endpoint.
//!
//! Handlers are thin: they parse input (with the JSON path of any bad field), call the
//! [`ConfigService`] (configuration reads and the one write path) or the store (history,
//! nodes), and map results to HTTP. Config responses
//! carry the configuration version as an `ETag`; writes honour `If-Match` (412 when
//! stale). One file per resource.

pub mod certificates;
pub mod config;
pub mod credentials;
pub mod delivery;
pub mod error;
pub mod events;
pub mod history;
pub mod live;
pub mod nodes;
pub mod objects;
pub mod openapi;
pub mod rollouts;
pub mod series;
pub mod snapshots;

use std::sync::Arc;

use axum::extract::rejection::QueryRejection;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{header, HeaderMap, HeaderValue};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::{delete, get, post, put};
use axum::Router;
use serde::de::DeserializeOwned;

use crate::auth::TokenDigest;
use crate::registry::Registry;
use crate::rollout::Rollouts;
use crate::series::Series;
use crate::snapshot::ConfigService;
use crate::store::Store;
pub use error::ApiError;

#[derive(Clone)]
pub struct AppState {
    /// Configuration reads and the write path.
    pub config: Arc<ConfigService>,
    /// History and the node registry's durable half (read-only here).
    pub store: Store,
    pub registry: Arc<Registry>,
    /// Traffic history and its live feed.
    pub series: Arc<Series>,
    /// Staged rollouts: what each node should run, records, commands.
    pub rollouts: Rollouts,
    pub admin_token: TokenDigest,
    /// A node whose last message is older than this is shown as disconnected.
    pub stale_after_ms: i64,
    /// This control-plane replica's name.
    pub replica: String,
}

/// The `/api/v1` router, with authentication applied to every route.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/config", get(config::get_config).put(config::put_config))
        .route("/config/validate", post(config::validate_config))
        .route("/config/import", post(config::import_config))
        .route(
            "/frontends",
            get(objects::list_frontends).post(objects::create_frontend),
        )
        .route(
            "/frontends/{name}",
            get(objects::get_frontend)
                .put(objects::put_frontend)
                .delete(objects::delete_frontend),
        )
        .route(
            "/backends",
            get(objects::list_backends).post(objects::create_backend),
        )
        .route(
            "/backends/{name}",
            get(objects::get_backend)
                .put(objects::put_backend)
                .delete(objects::delete_backend),
        )
        .route(
            "/backends/{name}/servers/{server}/state",
            put(objects::put_server_state),
        )
        .route(
            "/certificates",
            get(certificates::list_certificates).post(certificates::create_certificate),
        )
        .route(
            "/certificates/{name}",
            get(certificates::get_certificate)
                .put(certificates::put_certificate)
                .delete(certificates::delete_certificate),
        )
        .route("/snapshots", get(snapshots::list_snapshots))
        .route("/snapshots/{version}", get(snapshots::get_snapshot))
        .route("/snapshots/{a}/diff/{b}", get(history::diff))
        .route("/snapshots/{version}/nodes", get(delivery::version_nodes))
        .route("/snapshots/{version}/rollback", post(history::rollback))
        .route("/nodes", get(nodes::list_nodes))
        .route("/nodes/{id}", delete(credentials::revoke_node))
        .route(
            "/bootstrap-tokens",
            get(credentials::list_bootstrap_tokens).post(credentials::create_bootstrap_token),
        )
        .route(
            "/bootstrap-tokens/{id}",
            delete(credentials::revoke_bootstrap_token),
        )
        .route(
            "/rollout-policy",
            get(rollouts::get_policy)
                .put(rollouts::put_policy)
                .delete(rollouts::delete_policy),
        )
        .route("/rollout-policy/revisions", get(rollouts::policy_revisions))
        .route("/rollouts", get(rollouts::list_rollouts))
        .route("/rollouts/{version}", get(rollouts::get_rollout))
        .route("/rollouts/{version}/{action}", post(rollouts::command))
        .route("/events", get(events::list_events))
        .route("/series", get(series::get_series))
        .route("/live", get(live::live))
        .route("/openapi.json", get(openapi::openapi_json))
        .fallback(|| async { ApiError::NotFound("no such endpoint".into()) })
        // `?wait=live` on writes: answered once the version is live (or who is not).
        .layer(middleware::from_fn_with_state(
            state.clone(),
            delivery::wait_live,
        ))
        // A body up to the configuration limit: whatever GET returns can be PUT back.
        .layer(DefaultBodyLimit::max(sluice_proto::MAX_CONFIG_BYTES))
        .layer(middleware::from_fn_with_state(state.clone(), require_admin))
        .with_state(state)
}

async fn require_admin(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let token = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    match token {
        Some(t) if state.admin_token.matches(t) => Ok(next.run(request).await),
        _ => Err(ApiError::Unauthorized),
    }
}

/// A version path segment that parsed, or the JSON 400 (code `invalid_path`) naming it.
pub fn path_version<T>(
    p: Result<axum::extract::Path<T>, axum::extract::rejection::PathRejection>,
) -> Result<T, ApiError> {
    path_param(p, "version")
}

/// A path parameter that parsed, or the JSON 400 naming `field`.
pub fn path_param<T>(
    p: Result<axum::extract::Path<T>, axum::extract::rejection::PathRejection>,
    field: &str,
) -> Result<T, ApiError> {
    p.map(|axum::extract::Path(v)| v)
        .map_err(|e| ApiError::BadRequest {
            code: "invalid_path",
            field: field.into(),
            message: e.body_text(),
        })
}

/// A query string that deserialized, or the JSON 400 (code `invalid_query`) saying why.
pub fn query<T>(q: Result<axum::extract::Query<T>, QueryRejection>) -> Result<T, ApiError> {
    q.map(|axum::extract::Query(q)| q)
        .map_err(|e| ApiError::BadRequest {
            code: "invalid_query",
            field: "(query)".into(),
            message: e.body_text(),
        })
}

/// Parses a JSON body; errors name the JSON path of the bad field.
pub fn parse_json<T: DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    let de = &mut serde_json::Deserializer::from_slice(body);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        let msg = inner.to_string();
        // "missing field `name` at line 1 column 2" → field "<path>.name"
        let msg = msg
            .rsplit_once(" at line ")
            .map(|(m, _)| m.to_string())
            .unwrap_or(msg);
        let field = match msg
            .strip_prefix("missing field `")
            .and_then(|r| r.strip_suffix('`'))
        {
            Some(missing) if path == "." => missing.to_string(),
            Some(missing) => format!("{path}.{missing}"),
            None if path == "." => "(body)".to_string(),
            None => path,
        };
        ApiError::BadRequest {
            code: "invalid_json",
            field,
            message: msg,
        }
    })
}

/// The version in an `If-Match` header: `"7"`, `W/"7"`, `7`; `*` or absent means any.
pub fn if_match(headers: &HeaderMap) -> Result<Option<u64>, ApiError> {
    let Some(v) = headers.get(header::IF_MATCH) else {
        return Ok(None);
    };
    let text = v.to_str().unwrap_or("").trim();
    if text == "*" {
        return Ok(None);
    }
    let digits = text.trim_start_matches("W/").trim_matches('"');
    digits
        .parse::<u64>()
        .map(Some)
        .map_err(|_| ApiError::BadRequest {
            code: "invalid_if_match",
            field: "If-Match".into(),
            message: format!("{text:?} is not a configuration version ETag such as \"7\""),
        })
}

/// Header naming who makes a change; recorded with the version and its events.
pub const ACTOR_HEADER: &str = "x-sluice-actor";
/// The actor when a client names none.
pub const DEFAULT_ACTOR: &str = "api";

/// Who makes a change: the `X-Sluice-Actor` header (1-64 printable characters, e.g. a
/// user name or `dashboard`), else `api`. The admin token is shared, so this is what the
/// client says, recorded for the history — not an identity the API verified.
pub fn actor(headers: &HeaderMap) -> Result<String, ApiError> {
    let Some(v) = headers.get(ACTOR_HEADER) else {
        return Ok(DEFAULT_ACTOR.to_string());
    };
    match v.to_str().map(str::trim) {
        Ok(text)
            if (1..=64).contains(&text.chars().count()) && !text.chars().any(char::is_control) =>
        {
            Ok(text.to_string())
        }
        _ => Err(ApiError::BadRequest {
            code: "invalid_actor",
            field: "X-Sluice-Actor".into(),
            message: "must be 1-64 printable characters".into(),
        }),
    }
}

pub fn etag(version: u64) -> (header::HeaderName, HeaderValue) {
    (
        header::ETAG,
        HeaderValue::from_str(&format!("\"{version}\"")).expect("digits are a valid header"),
    )
}

#[cfg(test)]
mod tests;
