//! `/api/v1/config`: the whole configuration as one declarative document (GitOps).

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::Json;
use serde::Serialize;
use utoipa::ToSchema;

use super::{etag, if_match, parse_json, ApiError, AppState};
use crate::config::ConfigDocument;
use crate::snapshot::Applied;

/// The result of a write.
#[derive(Debug, Serialize, ToSchema)]
pub struct WriteResult {
    /// The configuration version after the write.
    pub version: u64,
    /// False when the document was already the current one (no new version).
    pub changed: bool,
    pub summary: String,
}

impl From<Applied> for WriteResult {
    fn from(a: Applied) -> Self {
        Self {
            version: a.version,
            changed: a.changed,
            summary: a.summary,
        }
    }
}

pub fn write_response(status: StatusCode, applied: Applied) -> impl IntoResponse {
    let tag = etag(applied.version);
    (status, [tag], Json(WriteResult::from(applied)))
}

/// The current configuration document; the ETag is its version.
#[utoipa::path(get, path = "/api/v1/config", tag = "config",
    responses((status = 200, body = ConfigDocument, headers(("ETag" = String))),
              (status = 401, body = super::error::ErrorBody)))]
pub async fn get_config(State(state): State<AppState>) -> Result<impl IntoResponse, ApiError> {
    let (version, config) = state.config.read().await?;
    Ok(([etag(version)], Json(config.document)))
}

/// Replaces the whole configuration atomically. With `If-Match`, only if it is still at
/// that version. An identical document creates no new version.
#[utoipa::path(put, path = "/api/v1/config", tag = "config", request_body = ConfigDocument,
    params(("If-Match" = Option<String>, Header, description = "expected version, e.g. \"7\"")),
    responses((status = 200, body = WriteResult),
              (status = 400, body = super::error::ErrorBody, description = "malformed JSON; the field is named"),
              (status = 412, body = super::error::ErrorBody, description = "stale If-Match"),
              (status = 422, body = super::error::ErrorBody, description = "invalid configuration; fields are named")))]
pub async fn put_config(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<impl IntoResponse, ApiError> {
    let expected = if_match(&headers)?;
    let actor = super::actor(&headers)?;
    let doc: ConfigDocument = parse_json(&body)?;
    let applied = state
        .config
        .apply(expected, "PUT /api/v1/config", &actor, move |current| {
            current.document = doc;
            Ok(())
        })
        .await?;
    Ok(write_response(StatusCode::OK, applied))
}

/// Dry run: the same checks as a write; stores nothing.
#[utoipa::path(post, path = "/api/v1/config/validate", tag = "config", request_body = ConfigDocument,
    responses((status = 200, description = "valid"),
              (status = 400, body = super::error::ErrorBody),
              (status = 422, body = super::error::ErrorBody)))]
pub async fn validate_config(
    State(s): State<AppState>,
    body: Bytes,
) -> Result<impl IntoResponse, ApiError> {
    let doc: ConfigDocument = parse_json(&body)?;
    s.config.validate(doc).await?;
    Ok(Json(serde_json::json!({ "valid": true })))
}

/// An haproxy.cfg (the request body, as text) as a Sluice configuration document, with
/// a report of every directive that does not map exactly. Stores nothing: `PUT` the
/// document to apply it. Files the configuration names (errorfiles) are not read; they
/// are reported.
#[utoipa::path(post, path = "/api/v1/config/import", tag = "config",
    request_body(content = String, content_type = "text/plain"),
    responses((status = 200, body = crate::import::Imported),
              (status = 400, body = super::error::ErrorBody, description = "a syntax error; the line and column are named")))]
pub async fn import_config(body: Bytes) -> Result<impl IntoResponse, ApiError> {
    let text = std::str::from_utf8(&body).map_err(|e| ApiError::BadRequest {
        code: "invalid_haproxy_config",
        field: "(body)".into(),
        message: format!("not UTF-8: {e}"),
    })?;
    let imported = crate::import::import(text, &|_| None).map_err(|e| ApiError::BadRequest {
        code: "invalid_haproxy_config",
        field: format!("line {}, column {}", e.line, e.column),
        message: e.message,
    })?;
    Ok(Json(imported))
}
