//! Staged rollout over REST: the rollout policy (`GET`/`PUT`/`DELETE
//! /api/v1/rollout-policy`, revisions under `/revisions`; each write is a new revision,
//! `If-Match` takes the expected one), rollout records (`GET /api/v1/rollouts`,
//! `/rollouts/{version}`) and operators' commands (`POST
//! /api/v1/rollouts/{version}/pause|resume|promote|abort`).

use axum::body::Bytes;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderValue};
use axum::response::IntoResponse;
use axum::Json;
use serde::Serialize;
use utoipa::ToSchema;

use super::{if_match, ApiError, AppState};
use crate::clock::unix_ms;
use crate::events;
use crate::rollout::policy::RolloutPolicy;
use crate::rollout::{Action, Rollout, RolloutError};
use crate::store::PolicyRow;

impl From<RolloutError> for ApiError {
    fn from(e: RolloutError) -> Self {
        match e {
            RolloutError::NotFound(v) => ApiError::NotFound(format!("no rollout of version {v}")),
            e @ RolloutError::NotApplicable { .. } => ApiError::Conflict(e.to_string()),
            RolloutError::Store(s) => s.into(),
            e @ RolloutError::NoLeader => ApiError::Busy {
                code: "no_rollout_leader",
                message: e.to_string(),
            },
            e => ApiError::Internal(e.to_string()),
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct PolicyView {
    /// 0 when no policy was ever written.
    pub revision: u64,
    /// The policy in force; `null`: none (every version goes to every node at once).
    pub policy: Option<RolloutPolicy>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub created_unix_ms: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub actor: Option<String>,
}

fn view(row: Option<PolicyRow>) -> Result<PolicyView, ApiError> {
    let Some(row) = row else {
        return Ok(PolicyView {
            revision: 0,
            policy: None,
            created_unix_ms: None,
            actor: None,
        });
    };
    let policy = match row.body {
        Some(b) => Some(
            serde_json::from_str(&b)
                .map_err(|e| ApiError::Internal(format!("stored rollout policy: {e}")))?,
        ),
        None => None,
    };
    Ok(PolicyView {
        revision: row.revision,
        policy,
        created_unix_ms: Some(row.created_unix_ms),
        actor: Some(row.actor),
    })
}

fn with_revision(v: PolicyView) -> impl IntoResponse {
    let tag = HeaderValue::from_str(&format!("\"{}\"", v.revision)).expect("digits");
    ([(header::ETAG, tag)], Json(v))
}

/// The rollout policy in force.
#[utoipa::path(get, path = "/api/v1/rollout-policy", tag = "rollouts",
    responses((status = 200, body = PolicyView)))]
pub async fn get_policy(State(state): State<AppState>) -> Result<impl IntoResponse, ApiError> {
    Ok(with_revision(view(state.store.rollout_policy().await?)?))
}

/// Sets the rollout policy (a new revision). Versions committed from now on roll out
/// under it; a rollout in progress keeps the policy it started with.
#[utoipa::path(put, path = "/api/v1/rollout-policy", tag = "rollouts", request_body = RolloutPolicy,
    params(("If-Match" = Option<String>, Header, description = "expected revision, e.g. \"3\"")),
    responses((status = 200, body = PolicyView),
              (status = 412, body = super::error::ErrorBody, description = "stale If-Match"),
              (status = 422, body = super::error::ErrorBody, description = "invalid policy; fields are named")))]
pub async fn put_policy(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<impl IntoResponse, ApiError> {
    let expected = if_match(&headers)?;
    let actor = super::actor(&headers)?;
    let policy: RolloutPolicy = super::parse_json(&body)?;
    policy.check().map_err(ApiError::Invalid)?;
    let text = serde_json::to_string(&policy).expect("a policy encodes");
    write_policy(&state, expected, Some(&text), &actor).await
}

/// Removes the rollout policy (a new revision without one): versions go to every node
/// at once again.
#[utoipa::path(delete, path = "/api/v1/rollout-policy", tag = "rollouts",
    params(("If-Match" = Option<String>, Header, description = "expected revision")),
    responses((status = 200, body = PolicyView), (status = 412, body = super::error::ErrorBody)))]
pub async fn delete_policy(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<impl IntoResponse, ApiError> {
    let expected = if_match(&headers)?;
    let actor = super::actor(&headers)?;
    write_policy(&state, expected, None, &actor).await
}

async fn write_policy(
    state: &AppState,
    expected: Option<u64>,
    body: Option<&str>,
    actor: &str,
) -> Result<impl IntoResponse, ApiError> {
    let revision = state
        .store
        .put_rollout_policy(expected, body, actor, unix_ms())
        .await
        .map_err(|e| match e {
            crate::store::StoreError::Conflict { current } => ApiError::Conflict(format!(
                "the rollout policy is at revision {current}, not the one in If-Match"
            )),
            e => e.into(),
        })?;
    let what = if body.is_some() { "set" } else { "removed" };
    let mut e = events::event(
        "rollout_policy",
        format!("revision {revision}: policy {what}"),
    );
    e.actor = Some(actor.to_string());
    events::record(&state.store, e).await;
    Ok(with_revision(view(state.store.rollout_policy().await?)?))
}

/// The rollout policy's revisions, newest first.
#[utoipa::path(get, path = "/api/v1/rollout-policy/revisions", tag = "rollouts",
    responses((status = 200, body = [PolicyView])))]
pub async fn policy_revisions(
    State(state): State<AppState>,
) -> Result<Json<Vec<PolicyView>>, ApiError> {
    let rows = state.store.rollout_policy_revisions(100).await?;
    Ok(Json(
        rows.into_iter()
            .map(|r| view(Some(r)))
            .collect::<Result<_, _>>()?,
    ))
}

/// The newest rollouts, newest first.
#[utoipa::path(get, path = "/api/v1/rollouts", tag = "rollouts",
    responses((status = 200, body = [Rollout])))]
pub async fn list_rollouts(State(state): State<AppState>) -> Result<Json<Vec<Rollout>>, ApiError> {
    Ok(Json(state.rollouts.list(50).await?))
}

/// The rollout of a version: its stages, the nodes each reached, the gates' readings,
/// its state and why it stopped.
#[utoipa::path(get, path = "/api/v1/rollouts/{version}", tag = "rollouts",
    params(("version" = u64, Path)),
    responses((status = 200, body = Rollout), (status = 404, body = super::error::ErrorBody)))]
pub async fn get_rollout(
    State(state): State<AppState>,
    version: Result<Path<u64>, PathRejection>,
) -> Result<Json<Rollout>, ApiError> {
    let version = super::path_version(version)?;
    state
        .rollouts
        .get(version)
        .await?
        .map(Json)
        .ok_or_else(|| ApiError::NotFound(format!("no rollout of version {version}")))
}

/// `pause` (hold at the stage; gates still watched), `resume`, `promote` (every node
/// now) or `abort` (every node back to the previous version, committed as a new one).
#[utoipa::path(post, path = "/api/v1/rollouts/{version}/{action}", tag = "rollouts",
    params(("version" = u64, Path), ("action" = String, Path, description = "pause, resume, promote or abort")),
    responses((status = 200, body = Rollout),
              (status = 404, body = super::error::ErrorBody),
              (status = 409, body = super::error::ErrorBody, description = "the rollout is not in a state the action applies to")))]
pub async fn command(
    State(state): State<AppState>,
    path: Result<Path<(u64, String)>, PathRejection>,
    headers: HeaderMap,
) -> Result<Json<Rollout>, ApiError> {
    let (version, action) = super::path_version(path)?;
    let Some(action) = Action::parse(&action) else {
        return Err(ApiError::BadRequest {
            code: "invalid_path",
            field: "action".into(),
            message: format!("{action:?}: one of pause, resume, promote, abort"),
        });
    };
    let actor = super::actor(&headers)?;
    Ok(Json(state.rollouts.command(version, action, &actor).await?))
}
