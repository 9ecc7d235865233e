//! `/api/v1/snapshots`: the history of committed versions.

use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::Json;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::{ApiError, AppState};
use crate::config::ConfigDocument;

#[derive(Debug, Serialize, ToSchema)]
pub struct SnapshotSummary {
    pub version: u64,
    /// RFC 3339 time of the commit.
    pub created: String,
    pub summary: String,
    /// Who made the change (`X-Sluice-Actor`; empty for the initial version).
    pub actor: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct SnapshotDetail {
    pub version: u64,
    pub created: String,
    pub summary: String,
    pub actor: String,
    /// The configuration document as of this version.
    pub document: ConfigDocument,
}

#[derive(Debug, Deserialize, IntoParams)]
pub struct ListQuery {
    /// At most this many entries, newest first (default 100, max 1000).
    pub limit: Option<u32>,
    /// Only versions older than this one: the next page starts before the last version
    /// of the previous one.
    pub before: Option<u64>,
}

pub fn rfc3339(unix_ms: i64) -> String {
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_millis(unix_ms.max(0) as u64);
    humantime::format_rfc3339_millis(t).to_string()
}

/// Committed versions, newest first.
#[utoipa::path(get, path = "/api/v1/snapshots", tag = "snapshots", params(ListQuery),
    responses((status = 200, body = Vec<SnapshotSummary>)))]
pub async fn list_snapshots(
    State(state): State<AppState>,
    query: Result<Query<ListQuery>, QueryRejection>,
) -> Result<Json<Vec<SnapshotSummary>>, ApiError> {
    let q = super::query(query)?;
    let rows = state
        .store
        .list_snapshots(q.before, q.limit.unwrap_or(100).min(1000))
        .await?;
    Ok(Json(
        rows.into_iter()
            .map(|r| SnapshotSummary {
                version: r.version,
                created: rfc3339(r.created_unix_ms),
                summary: r.summary,
                actor: r.actor,
            })
            .collect(),
    ))
}

/// One version with the document it held (410 once the history retention dropped it).
#[utoipa::path(get, path = "/api/v1/snapshots/{version}", tag = "snapshots",
    params(("version" = u64, Path)),
    responses((status = 200, body = SnapshotDetail), (status = 404, body = super::error::ErrorBody),
              (status = 410, body = super::error::ErrorBody)))]
pub async fn get_snapshot(
    State(state): State<AppState>,
    version: Result<Path<u64>, PathRejection>,
) -> Result<Json<SnapshotDetail>, ApiError> {
    let version = super::path_version(version)?;
    let (row, document) = document_at(&state, version).await?;
    Ok(Json(SnapshotDetail {
        version: row.version,
        created: rfc3339(row.created_unix_ms),
        summary: row.summary,
        actor: row.actor,
        document,
    }))
}

/// Version `version`'s row and document: 404 when there is no such version, 410 when
/// the history retention dropped its document.
pub async fn document_at(
    state: &AppState,
    version: u64,
) -> Result<(crate::store::SnapshotRow, ConfigDocument), ApiError> {
    let row = state
        .store
        .get_snapshot(version)
        .await
        .map_err(|e| match e {
            crate::store::StoreError::NotFound => {
                ApiError::NotFound(format!("no snapshot with version {version}"))
            }
            e => e.into(),
        })?;
    let text = row.document.as_deref().unwrap_or_default();
    if text.is_empty() {
        return Err(ApiError::Gone(format!(
            "version {version}'s document was dropped by the history retention (--history-keep); its summary is in GET /api/v1/snapshots"
        )));
    }
    let document: ConfigDocument = serde_json::from_str(text)
        .map_err(|e| ApiError::Internal(format!("snapshot {version} document: {e}")))?;
    Ok((row, document))
}
