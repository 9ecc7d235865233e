//! Where a change is live: `GET /api/v1/snapshots/{v}/nodes` (which nodes run version v,
//! rejected it, are behind, or drift from it), and `?wait=live&timeout=5s` on any write
//! ([`wait_live`]): the answer comes once every node connected at the write has acked
//! the new version (200), at the first nack of it (409, with the reason), or when the
//! timeout passes (202, naming the nodes not there yet). During a staged rollout only the
//! nodes its first stage reached are waited for; the others are listed as `staged`.

use std::time::Duration;

use axum::body::Body;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, Request, State};
use axum::http::{header, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;
use serde_json::{json, Value};
use utoipa::ToSchema;

use super::nodes::views;
use super::{ApiError, AppState};

#[derive(Debug, Serialize, ToSchema)]
pub struct RejectedBy {
    pub node: String,
    pub reason: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct VersionNodes {
    pub version: u64,
    /// SHA-256 of the version's snapshot (hex).
    pub digest: String,
    /// Nodes that run this version or a newer one.
    pub acked: Vec<String>,
    /// Nodes that rejected it (and run an older one), with why.
    pub nacked: Vec<RejectedBy>,
    /// Connected nodes that run an older version and have not rejected this one.
    pub behind: Vec<String>,
    /// Nodes not connected that run an older version.
    pub offline: Vec<String>,
    /// Nodes on this very version whose digest differs from it.
    pub drift: Vec<String>,
}

/// Which nodes run version `version`, rejected it, are behind or drift from it.
#[utoipa::path(get, path = "/api/v1/snapshots/{version}/nodes", tag = "snapshots",
    params(("version" = u64, Path)),
    responses((status = 200, body = VersionNodes), (status = 404, body = super::error::ErrorBody)))]
pub async fn version_nodes(
    State(state): State<AppState>,
    version: Result<Path<u64>, PathRejection>,
) -> Result<Json<VersionNodes>, ApiError> {
    let version = super::path_version(version)?;
    let digest = state
        .store
        .snapshot_digest(version)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("no snapshot with version {version}")))?;
    let mut out = VersionNodes {
        version,
        digest,
        acked: Vec::new(),
        nacked: Vec::new(),
        behind: Vec::new(),
        offline: Vec::new(),
        drift: Vec::new(),
    };
    for n in views(&state).await? {
        if n.applied_version >= version {
            if n.applied_version == version && n.drift {
                out.drift.push(n.id.clone());
            }
            out.acked.push(n.id);
        } else if let Some(nack) = n.last_nack.filter(|k| k.version == version) {
            out.nacked.push(RejectedBy {
                node: n.id,
                reason: nack.reason,
            });
        } else if n.connected {
            out.behind.push(n.id);
        } else {
            out.offline.push(n.id);
        }
    }
    Ok(Json(out))
}

/// Longest `timeout` a write may wait for.
const MAX_WAIT: Duration = Duration::from_secs(60);

/// `wait=live` and its `timeout` (default 5 s) from a query string.
fn wait_param(query: Option<&str>) -> Result<Option<Duration>, ApiError> {
    let mut wait = false;
    let mut timeout = Duration::from_secs(5);
    for pair in query.unwrap_or("").split('&') {
        match pair.split_once('=') {
            Some(("wait", "live")) => wait = true,
            Some(("wait", other)) => {
                return Err(ApiError::BadRequest {
                    code: "invalid_query",
                    field: "wait".into(),
                    message: format!("{other:?}: the only value is \"live\""),
                })
            }
            Some(("timeout", t)) => {
                timeout = humantime::parse_duration(t)
                    .ok()
                    .filter(|d| *d <= MAX_WAIT)
                    .ok_or_else(|| ApiError::BadRequest {
                        code: "invalid_query",
                        field: "timeout".into(),
                        message: format!("{t:?} is not a duration up to 60s, such as 5s"),
                    })?;
            }
            _ => {}
        }
    }
    Ok(wait.then_some(timeout))
}

/// Where the write's version stands on the nodes connected when it was made.
struct Standing {
    acked: Vec<String>,
    pending: Vec<String>,
    nacked: Vec<(String, String)>,
    /// Nodes a staged rollout has not reached yet.
    staged: Vec<String>,
}

fn standing(state: &AppState, targets: &[String], version: u64) -> Standing {
    let mut s = Standing {
        acked: Vec::new(),
        pending: Vec::new(),
        nacked: Vec::new(),
        staged: Vec::new(),
    };
    let assignment = state.rollouts.assignment();
    for id in targets {
        match state.registry.get(id) {
            Some(n) if n.applied_version >= version => s.acked.push(id.clone()),
            Some(n) if assignment.target(id, &n.labels).snapshot.version < version => {
                s.staged.push(id.clone());
            }
            Some(n) => match n.last_nack.filter(|(v, _)| *v == version) {
                Some((_, reason)) => s.nacked.push((id.clone(), reason)),
                None => s.pending.push(id.clone()),
            },
            None => s.pending.push(id.clone()),
        }
    }
    s
}

/// Middleware: a successful write with `?wait=live` answers once its version is live
/// on every node connected when it was made, or says who is not there yet.
pub async fn wait_live(State(state): State<AppState>, request: Request, next: Next) -> Response {
    if request.method() == Method::GET || request.uri().path().contains("/rollout") {
        return next.run(request).await;
    }
    let timeout = match wait_param(request.uri().query()) {
        Ok(Some(t)) => t,
        Ok(None) => return next.run(request).await,
        Err(e) => return e.into_response(),
    };
    let targets: Vec<String> = state.registry.all().into_iter().map(|(id, _)| id).collect();
    let mut replies = state.registry.replies();
    let response = next.run(request).await;
    let version = response
        .headers()
        .get(header::ETAG)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim_matches('"').parse::<u64>().ok());
    let Some(version) = version.filter(|_| response.status().is_success()) else {
        return response;
    };
    let deadline = tokio::time::Instant::now() + timeout;
    // Whom the version goes to first is decided by the rollout controller, just after
    // the commit.
    let mut assignments = state.rollouts.assignments();
    let _ = tokio::time::timeout_at(
        deadline,
        assignments.wait_for(|a| a.newest.snapshot.version >= version),
    )
    .await;
    let (status, s) = loop {
        let s = standing(&state, &targets, version);
        if !s.nacked.is_empty() {
            break (StatusCode::CONFLICT, s);
        }
        if s.pending.is_empty() {
            break (StatusCode::OK, s);
        }
        tokio::select! {
            changed = replies.changed() => if changed.is_err() { break (StatusCode::ACCEPTED, s) },
            _ = tokio::time::sleep_until(deadline) => break (StatusCode::ACCEPTED, s),
        }
    };
    let (mut parts, body) = response.into_parts();
    let bytes = axum::body::to_bytes(body, 1 << 20)
        .await
        .unwrap_or_default();
    let mut value: Value = serde_json::from_slice(&bytes).unwrap_or_else(|_| json!({}));
    if let Value::Object(o) = &mut value {
        o.insert(
            "live".into(),
            json!({
                "acked": s.acked,
                "pending": s.pending,
                "nacked": s.nacked.iter().map(|(node, reason)| json!({ "node": node, "reason": reason })).collect::<Vec<_>>(),
                "staged": s.staged,
            }),
        );
        if let Some((node, reason)) = s.nacked.first() {
            o.insert("code".into(), json!("nacked"));
            o.insert(
                "message".into(),
                json!(format!("node {node} rejected version {version}: {reason}")),
            );
        }
    }
    parts.status = status;
    parts.headers.remove(header::CONTENT_LENGTH);
    (parts, Body::from(value.to_string())).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_wait_parameters_are_checked() {
        assert_eq!(wait_param(None).unwrap(), None);
        assert_eq!(wait_param(Some("x=1")).unwrap(), None);
        assert_eq!(
            wait_param(Some("wait=live")).unwrap(),
            Some(Duration::from_secs(5))
        );
        assert_eq!(
            wait_param(Some("timeout=250ms&wait=live")).unwrap(),
            Some(Duration::from_millis(250))
        );
        assert!(wait_param(Some("wait=soon")).is_err());
        assert!(wait_param(Some("wait=live&timeout=2h")).is_err());
    }
}
