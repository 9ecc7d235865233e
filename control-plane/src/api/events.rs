//! `/api/v1/events`: the fleet's event timeline, newest first, filtered and paged.

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::Json;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::snapshots::rfc3339;
use super::{ApiError, AppState};
use crate::store::{Event, EventFilter};

#[derive(Debug, Serialize, ToSchema)]
pub struct EventView {
    /// Increasing; `before=` this id gives the next page.
    pub id: i64,
    /// RFC 3339.
    pub time: String,
    pub unix_ms: i64,
    /// `node_connected`, `node_disconnected`, `node_stale`, `version_committed`,
    /// `version_acked`, `version_nacked`, `version_withheld`, `server_state`,
    /// `server_health`.
    pub kind: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub backend: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub server: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<u64>,
    /// The summary of a version, a nack's reason, why a node went away, a state set,
    /// a health check's result.
    pub detail: String,
    /// Who made the change (`X-Sluice-Actor`), for changes made through the API.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub actor: Option<String>,
}

impl From<Event> for EventView {
    fn from(e: Event) -> Self {
        EventView {
            id: e.id,
            time: rfc3339(e.unix_ms),
            unix_ms: e.unix_ms,
            kind: e.kind,
            node: e.node,
            backend: e.backend,
            server: e.server,
            version: e.version,
            detail: e.detail,
            actor: e.actor,
        }
    }
}

#[derive(Debug, Deserialize, IntoParams)]
pub struct EventQuery {
    /// From this time (Unix ms), inclusive.
    pub from: Option<i64>,
    /// Up to this time (Unix ms), inclusive.
    pub to: Option<i64>,
    pub kind: Option<String>,
    pub node: Option<String>,
    pub backend: Option<String>,
    pub server: Option<String>,
    /// Only events older than this id (the next page).
    pub before: Option<i64>,
    /// At most this many (default 100, max 1000).
    pub limit: Option<u32>,
}

/// Events, newest first.
#[utoipa::path(get, path = "/api/v1/events", tag = "events", params(EventQuery),
    responses((status = 200, body = Vec<EventView>)))]
pub async fn list_events(
    State(state): State<AppState>,
    query: Result<Query<EventQuery>, QueryRejection>,
) -> Result<Json<Vec<EventView>>, ApiError> {
    let q = super::query(query)?;
    let filter = EventFilter {
        from_ms: q.from,
        to_ms: q.to,
        kind: q.kind,
        node: q.node,
        backend: q.backend,
        server: q.server,
        before_id: q.before,
        limit: q.limit.unwrap_or(100).min(1000),
    };
    let events = state.store.list_events(&filter).await?;
    Ok(Json(events.into_iter().map(EventView::from).collect()))
}
