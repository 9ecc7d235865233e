//! Comparing and restoring versions: `GET /api/v1/snapshots/{a}/diff/{b}` (what changed,
//! object by object and as a unified text diff) and `POST /api/v1/snapshots/{v}/rollback`
//! (a new version whose document equals v's; history stays append-only).

use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::Json;
use serde::Serialize;
use serde_json::Value;
use utoipa::ToSchema;

use super::config::write_response;
use super::snapshots::document_at;
use super::{if_match, ApiError, AppState};

#[derive(Debug, Serialize, ToSchema)]
pub struct Change {
    /// Where, e.g. `backends[ws].servers[ws-01].state` (list items by name when they
    /// have one, else by position).
    pub path: String,
    /// `added`, `removed` or `changed`.
    pub change: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Object)]
    pub before: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Object)]
    pub after: Option<Value>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct DiffView {
    pub from: u64,
    pub to: u64,
    pub changes: Vec<Change>,
    /// The two documents as pretty JSON, as a unified diff.
    pub unified: String,
}

/// Items of a list keyed by their `name` when every item has one.
fn keyed(items: &[Value]) -> Option<Vec<(String, &Value)>> {
    items
        .iter()
        .map(|v| {
            v.get("name")
                .and_then(Value::as_str)
                .map(|n| (n.to_string(), v))
        })
        .collect()
}

fn walk(path: &str, a: Option<&Value>, b: Option<&Value>, out: &mut Vec<Change>) {
    let join = |key: &str| {
        if path.is_empty() {
            key.to_string()
        } else {
            format!("{path}.{key}")
        }
    };
    match (a, b) {
        (Some(x), Some(y)) if x == y => {}
        (Some(Value::Object(x)), Some(Value::Object(y))) => {
            for (k, v) in x {
                walk(&join(k), Some(v), y.get(k), out);
            }
            for (k, v) in y.iter().filter(|(k, _)| !x.contains_key(*k)) {
                walk(&join(k), None, Some(v), out);
            }
        }
        (Some(Value::Array(x)), Some(Value::Array(y))) => match (keyed(x), keyed(y)) {
            (Some(kx), Some(ky)) => {
                for (name, v) in &kx {
                    let other = ky.iter().find(|(n, _)| n == name).map(|(_, v)| *v);
                    walk(&format!("{path}[{name}]"), Some(v), other, out);
                }
                for (name, v) in ky.iter().filter(|(n, _)| !kx.iter().any(|(m, _)| m == n)) {
                    walk(&format!("{path}[{name}]"), None, Some(v), out);
                }
            }
            _ => {
                for i in 0..x.len().max(y.len()) {
                    walk(&format!("{path}[{i}]"), x.get(i), y.get(i), out);
                }
            }
        },
        (None, None) => {}
        (before, after) => out.push(Change {
            path: path.to_string(),
            change: match (before, after) {
                (None, _) => "added",
                (_, None) => "removed",
                _ => "changed",
            },
            before: before.cloned(),
            after: after.cloned(),
        }),
    }
}

/// Every difference between two JSON documents, by path.
pub fn changes(a: &Value, b: &Value) -> Vec<Change> {
    let mut out = Vec::new();
    walk("", Some(a), Some(b), &mut out);
    out
}

/// What changed from version `a` to version `b`.
#[utoipa::path(get, path = "/api/v1/snapshots/{a}/diff/{b}", tag = "snapshots",
    params(("a" = u64, Path), ("b" = u64, Path)),
    responses((status = 200, body = DiffView), (status = 404, body = super::error::ErrorBody),
              (status = 410, body = super::error::ErrorBody)))]
pub async fn diff(
    State(state): State<AppState>,
    path: Result<Path<(u64, u64)>, PathRejection>,
) -> Result<Json<DiffView>, ApiError> {
    let (a, b) = super::path_version(path)?;
    let (_, doc_a) = document_at(&state, a).await?;
    let (_, doc_b) = document_at(&state, b).await?;
    let (va, vb) = (
        serde_json::to_value(&doc_a).map_err(|e| ApiError::Internal(e.to_string()))?,
        serde_json::to_value(&doc_b).map_err(|e| ApiError::Internal(e.to_string()))?,
    );
    let pretty = |v: &Value| serde_json::to_string_pretty(v).unwrap_or_default() + "\n";
    let (ta, tb) = (pretty(&va), pretty(&vb));
    let unified = similar::TextDiff::from_lines(&ta, &tb)
        .unified_diff()
        .context_radius(3)
        .header(&format!("v{a}"), &format!("v{b}"))
        .to_string();
    Ok(Json(DiffView {
        from: a,
        to: b,
        changes: changes(&va, &vb),
        unified,
    }))
}

/// Makes a new version whose document equals version `v`'s (certificates are not
/// versioned documents: they stay as they are, and a document that needs a deleted one
/// is refused with 422). `If-Match` applies as for any write; rolling back to what is
/// current creates no version.
#[utoipa::path(post, path = "/api/v1/snapshots/{version}/rollback", tag = "snapshots",
    params(("version" = u64, Path)),
    responses((status = 200, body = super::config::WriteResult),
              (status = 404, body = super::error::ErrorBody),
              (status = 410, body = super::error::ErrorBody),
              (status = 412, body = super::error::ErrorBody),
              (status = 422, body = super::error::ErrorBody)))]
pub async fn rollback(
    State(state): State<AppState>,
    version: Result<Path<u64>, PathRejection>,
    headers: HeaderMap,
) -> Result<impl IntoResponse, ApiError> {
    let version = super::path_version(version)?;
    let expected = if_match(&headers)?;
    let actor = super::actor(&headers)?;
    let (_, document) = document_at(&state, version).await?;
    let what = format!("rollback to v{version}");
    let applied = state
        .config
        .apply(expected, &what, &actor, move |config| {
            config.document = document;
            Ok(())
        })
        .await?;
    Ok(write_response(StatusCode::OK, applied))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn changes_name_list_items_and_fields() {
        let a = json!({"backends": [{"name": "ws", "servers": [
            {"name": "ws-01", "address": "a:1"}, {"name": "ws-02", "address": "a:2"}]}],
            "frontends": []});
        let b = json!({"backends": [{"name": "ws", "servers": [
            {"name": "ws-01", "address": "a:1", "state": "drain"}]}],
            "frontends": [], "defaults": {"timeouts": {"tunnel": "1h"}}});
        let got: Vec<(String, &str)> = changes(&a, &b)
            .into_iter()
            .map(|c| (c.path, c.change))
            .collect();
        assert_eq!(
            got,
            vec![
                ("backends[ws].servers[ws-01].state".to_string(), "added"),
                ("backends[ws].servers[ws-02]".to_string(), "removed"),
                ("defaults".to_string(), "added"),
            ]
        );
        assert!(changes(&a, &a).is_empty());
    }
}
