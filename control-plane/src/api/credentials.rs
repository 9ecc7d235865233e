//! Node credentials over REST: bootstrap tokens (`POST /api/v1/bootstrap-tokens` makes
//! one — its token is in that answer only —, `GET` lists them, `DELETE
//! /bootstrap-tokens/{id}` revokes one) and node revocation (`DELETE /api/v1/nodes/{id}`:
//! the node's stream is closed and its id refused from then on).

use axum::body::Bytes;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::Json;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::snapshots::rfc3339;
use super::{parse_json, ApiError, AppState};
use crate::auth::{random_token, TokenDigest};
use crate::clock::unix_ms;
use crate::config::duration::parse_ms;
use crate::events;
use crate::store::BootstrapRow;

/// Longest a bootstrap token may stay valid.
const MAX_EXPIRY_MS: u64 = 365 * 24 * 3600 * 1000;

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BootstrapTokenRequest {
    /// What the token is for (at most 256 characters).
    #[serde(default)]
    pub description: String,
    /// How long it is valid, e.g. `1h` (default 24h, at most 365d).
    #[serde(default)]
    pub expires_in: Option<String>,
    /// How many nodes may enroll with it (default: any number until it expires).
    #[serde(default)]
    pub uses: Option<u64>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct BootstrapTokenView {
    pub id: String,
    pub description: String,
    /// `active`, `expired`, `used_up` or `revoked`.
    pub state: &'static str,
    pub created: String,
    pub expires: Option<String>,
    /// Enrollments left (absent: no limit).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub uses_left: Option<u64>,
    pub used: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub revoked: Option<String>,
    pub actor: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct BootstrapTokenCreated {
    #[serde(flatten)]
    pub view: BootstrapTokenView,
    /// The token: give it to the node (`sluice-dp --token`). Shown this once.
    pub token: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct NodeRevoked {
    pub id: String,
    pub revoked: String,
}

fn view(r: BootstrapRow, now: i64) -> BootstrapTokenView {
    let state = if r.revoked_unix_ms.is_some() {
        "revoked"
    } else if r.expires_unix_ms.is_some_and(|e| e <= now) {
        "expired"
    } else if r.uses_left == Some(0) {
        "used_up"
    } else {
        "active"
    };
    BootstrapTokenView {
        id: r.id,
        description: r.description,
        state,
        created: rfc3339(r.created_unix_ms),
        expires: r.expires_unix_ms.map(rfc3339),
        uses_left: r.uses_left,
        used: r.used,
        revoked: r.revoked_unix_ms.map(rfc3339),
        actor: r.actor,
    }
}

fn bad(field: &str, message: String) -> ApiError {
    ApiError::BadRequest {
        code: "invalid_field",
        field: field.into(),
        message,
    }
}

/// Makes a bootstrap token: a node enrolls with it once and receives its own credential.
#[utoipa::path(post, path = "/api/v1/bootstrap-tokens", tag = "nodes", request_body = BootstrapTokenRequest,
    responses((status = 201, body = BootstrapTokenCreated)))]
pub async fn create_bootstrap_token(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<impl IntoResponse, ApiError> {
    let actor = super::actor(&headers)?;
    let req: BootstrapTokenRequest = if body.is_empty() {
        parse_json(b"{}")?
    } else {
        parse_json(&body)?
    };
    if req.description.chars().count() > 256 || req.description.chars().any(char::is_control) {
        return Err(bad(
            "description",
            "at most 256 characters without control characters".into(),
        ));
    }
    let expires_ms = match req.expires_in.as_deref() {
        None => 24 * 3600 * 1000,
        Some(t) => match parse_ms(t) {
            Ok(ms) if (1..=MAX_EXPIRY_MS).contains(&ms) => ms,
            Ok(_) => return Err(bad("expires_in", "from 1ms to 365d".into())),
            Err(e) => return Err(bad("expires_in", e.to_string())),
        },
    };
    if req.uses == Some(0) {
        return Err(bad("uses", "at least 1".into()));
    }
    let now = unix_ms();
    let token = random_token();
    let row = BootstrapRow {
        id: format!("bt-{}", &TokenDigest::of(&random_token()).to_hex()[..12]),
        description: req.description,
        created_unix_ms: now,
        expires_unix_ms: Some(now + expires_ms as i64),
        uses_left: req.uses,
        used: 0,
        revoked_unix_ms: None,
        actor: actor.clone(),
    };
    state
        .store
        .create_bootstrap_token(&row, &TokenDigest::of(&token).to_hex())
        .await?;
    let mut e = events::event("bootstrap_token", format!("{} created", row.id));
    e.actor = Some(actor);
    events::record(&state.store, e).await;
    Ok((
        StatusCode::CREATED,
        Json(BootstrapTokenCreated {
            view: view(row, now),
            token,
        }),
    ))
}

/// Every bootstrap token, newest first (never the tokens themselves).
#[utoipa::path(get, path = "/api/v1/bootstrap-tokens", tag = "nodes",
    responses((status = 200, body = [BootstrapTokenView])))]
pub async fn list_bootstrap_tokens(
    State(state): State<AppState>,
) -> Result<Json<Vec<BootstrapTokenView>>, ApiError> {
    let now = unix_ms();
    let rows = state.store.bootstrap_tokens().await?;
    Ok(Json(rows.into_iter().map(|r| view(r, now)).collect()))
}

/// Revokes a bootstrap token: nodes can no longer enroll with it (nodes already enrolled
/// keep their credentials).
#[utoipa::path(delete, path = "/api/v1/bootstrap-tokens/{id}", tag = "nodes",
    params(("id" = String, Path)),
    responses((status = 200, body = BootstrapTokenView), (status = 404, body = super::error::ErrorBody)))]
pub async fn revoke_bootstrap_token(
    State(state): State<AppState>,
    headers: HeaderMap,
    id: Result<Path<String>, PathRejection>,
) -> Result<Json<BootstrapTokenView>, ApiError> {
    let actor = super::actor(&headers)?;
    let id = super::path_param(id, "id")?;
    if !state.store.revoke_bootstrap_token(&id, unix_ms()).await? {
        return Err(ApiError::NotFound(format!("no bootstrap token {id:?}")));
    }
    let mut e = events::event("bootstrap_token", format!("{id} revoked"));
    e.actor = Some(actor);
    events::record(&state.store, e).await;
    let row = state
        .store
        .bootstrap_token(&id)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("no bootstrap token {id:?}")))?;
    Ok(Json(view(row, unix_ms())))
}

/// Revokes a node: its stream is closed (within a second) and it is refused from then on
/// — with its credential, a bootstrap token or the fleet token alike; other nodes are
/// not touched. The id stays revoked.
#[utoipa::path(delete, path = "/api/v1/nodes/{id}", tag = "nodes",
    params(("id" = String, Path)),
    responses((status = 200, body = NodeRevoked), (status = 404, body = super::error::ErrorBody)))]
pub async fn revoke_node(
    State(state): State<AppState>,
    headers: HeaderMap,
    id: Result<Path<String>, PathRejection>,
) -> Result<Json<NodeRevoked>, ApiError> {
    let actor = super::actor(&headers)?;
    let id = super::path_param(id, "id")?;
    let known = state.registry.get(&id).is_some()
        || state
            .store
            .list_nodes()
            .await?
            .iter()
            .any(|n| n.node_id == id);
    if !known {
        return Err(ApiError::NotFound(format!("no node {id:?}")));
    }
    let at = state.store.revoke_node(&id, unix_ms()).await?;
    state.registry.revoke(&id);
    tracing::info!(node = %id, "node revoked");
    let mut e = events::event(
        "node_revoked",
        "credential voided; the node is refused from now on",
    );
    e.node = Some(id.clone());
    e.actor = Some(actor);
    events::record(&state.store, e).await;
    Ok(Json(NodeRevoked {
        id,
        revoked: rfc3339(at),
    }))
}
