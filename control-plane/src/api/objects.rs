//! Per-object CRUD for frontends and backends. Each write is a change to the whole
//! document through the same validated, versioned path as `PUT /api/v1/config`, so a
//! delete that would leave a dangling reference is refused with the referencing field.

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::Json;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use sluice_proto::v1 as pb;
use utoipa::ToSchema;

use super::config::write_response;
use super::snapshots::rfc3339;
use super::{etag, if_match, parse_json, ApiError, AppState};
use crate::config::{Backend, ConfigDocument, Frontend};
use crate::snapshot::ChangeError;

/// A named object kept in a list of the document.
trait Named: Serialize + DeserializeOwned + Send + 'static {
    const KIND: &'static str;
    fn name(&self) -> &str;
    fn list(doc: &mut ConfigDocument) -> &mut Vec<Self>;
}

impl Named for Frontend {
    const KIND: &'static str = "frontend";
    fn name(&self) -> &str {
        &self.name
    }
    fn list(doc: &mut ConfigDocument) -> &mut Vec<Self> {
        &mut doc.frontends
    }
}

impl Named for Backend {
    const KIND: &'static str = "backend";
    fn name(&self) -> &str {
        &self.name
    }
    fn list(doc: &mut ConfigDocument) -> &mut Vec<Self> {
        &mut doc.backends
    }
}

fn not_found<T: Named>(name: &str) -> ChangeError {
    ChangeError::NotFound(format!("no {} named {name:?}", T::KIND))
}

async fn list<T: Named>(state: AppState) -> Result<impl IntoResponse, ApiError> {
    let (version, mut config) = state.config.read().await?;
    let items = std::mem::take(T::list(&mut config.document));
    Ok(([etag(version)], Json(items)))
}

async fn create<T: Named>(
    state: AppState,
    headers: HeaderMap,
    body: Bytes,
) -> Result<impl IntoResponse, ApiError> {
    let expected = if_match(&headers)?;
    let actor = super::actor(&headers)?;
    let item: T = parse_json(&body)?;
    let what = format!("create {} {}", T::KIND, item.name());
    let applied = state
        .config
        .apply(expected, &what, &actor, move |config| {
            let items = T::list(&mut config.document);
            if items.iter().any(|i| i.name() == item.name()) {
                return Err(ChangeError::Conflict(format!(
                    "a {} named {:?} already exists",
                    T::KIND,
                    item.name()
                )));
            }
            items.push(item);
            Ok(())
        })
        .await?;
    Ok(write_response(StatusCode::CREATED, applied))
}

async fn replace<T: Named>(
    state: AppState,
    name: String,
    headers: HeaderMap,
    body: Bytes,
) -> Result<impl IntoResponse, ApiError> {
    let expected = if_match(&headers)?;
    let actor = super::actor(&headers)?;
    let item: T = parse_json(&body)?;
    if item.name() != name {
        return Err(ApiError::BadRequest {
            code: "name_mismatch",
            field: "name".into(),
            message: format!("{:?} does not match the URL's {name:?}", item.name()),
        });
    }
    let what = format!("update {} {name}", T::KIND);
    let applied = state
        .config
        .apply(expected, &what, &actor, move |config| {
            let items = T::list(&mut config.document);
            match items.iter_mut().find(|i| i.name() == name) {
                Some(slot) => *slot = item,
                None => items.push(item),
            }
            Ok(())
        })
        .await?;
    Ok(write_response(StatusCode::OK, applied))
}

async fn delete<T: Named>(
    state: AppState,
    name: String,
    headers: HeaderMap,
) -> Result<impl IntoResponse, ApiError> {
    let expected = if_match(&headers)?;
    let actor = super::actor(&headers)?;
    let what = format!("delete {} {name}", T::KIND);
    let applied = state
        .config
        .apply(expected, &what, &actor, move |config| {
            let items = T::list(&mut config.document);
            let before = items.len();
            items.retain(|i| i.name() != name);
            if items.len() == before {
                return Err(not_found::<T>(&name));
            }
            Ok(())
        })
        .await?;
    Ok(write_response(StatusCode::OK, applied))
}

/// All frontends, in document order.
#[utoipa::path(get, path = "/api/v1/frontends", tag = "frontends",
    responses((status = 200, body = Vec<Frontend>)))]
pub async fn list_frontends(State(s): State<AppState>) -> Result<impl IntoResponse, ApiError> {
    list::<Frontend>(s).await
}

/// One frontend, with the version it last changed in and on how many connected nodes
/// that is live.
#[utoipa::path(get, path = "/api/v1/frontends/{name}", tag = "frontends",
    params(("name" = String, Path)),
    responses((status = 200, body = FrontendView), (status = 404, body = super::error::ErrorBody)))]
pub async fn get_frontend(
    State(s): State<AppState>,
    Path(name): Path<String>,
) -> Result<impl IntoResponse, ApiError> {
    let (version, mut config) = s.config.read().await?;
    let frontend = std::mem::take(&mut config.document.frontends)
        .into_iter()
        .find(|f| f.name == name)
        .ok_or_else(|| ApiError::from(not_found::<Frontend>(&name)))?;
    let delivery = delivery(&s, "frontends", &name).await?;
    Ok(([etag(version)], Json(FrontendView { frontend, delivery })))
}

/// Adds a frontend (409 if the name exists).
#[utoipa::path(post, path = "/api/v1/frontends", tag = "frontends", request_body = Frontend,
    responses((status = 201, body = super::config::WriteResult),
              (status = 409, body = super::error::ErrorBody),
              (status = 422, body = super::error::ErrorBody)))]
pub async fn create_frontend(
    State(s): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<impl IntoResponse, ApiError> {
    create::<Frontend>(s, headers, body).await
}

/// Creates or replaces a frontend.
#[utoipa::path(put, path = "/api/v1/frontends/{name}", tag = "frontends", request_body = Frontend,
    params(("name" = String, Path)),
    responses((status = 200, body = super::config::WriteResult),
              (status = 422, body = super::error::ErrorBody)))]
pub async fn put_frontend(
    State(s): State<AppState>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<impl IntoResponse, ApiError> {
    replace::<Frontend>(s, name, headers, without_views(body)).await
}

/// Removes a frontend; its listeners close, accepted connections live on.
#[utoipa::path(delete, path = "/api/v1/frontends/{name}", tag = "frontends",
    params(("name" = String, Path)),
    responses((status = 200, body = super::config::WriteResult),
              (status = 404, body = super::error::ErrorBody)))]
pub async fn delete_frontend(
    State(s): State<AppState>,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> Result<impl IntoResponse, ApiError> {
    delete::<Frontend>(s, name, headers).await
}

/// All backends, in document order.
#[utoipa::path(get, path = "/api/v1/backends", tag = "backends",
    responses((status = 200, body = Vec<Backend>)))]
pub async fn list_backends(State(s): State<AppState>) -> Result<impl IntoResponse, ApiError> {
    list::<Backend>(s).await
}

/// A backend as configured, with what every connected node sees of its servers.
#[derive(Debug, Serialize, ToSchema)]
pub struct BackendView {
    #[serde(flatten)]
    pub backend: Backend,
    /// Read-only, per server and node; ignored when the object is sent back with PUT.
    pub live: Vec<ServerLive>,
    /// Read-only: where this object's current form is live.
    pub delivery: Delivery,
}

/// Where an object's current form is live (read-only; ignored by PUT).
#[derive(Debug, Serialize, ToSchema)]
pub struct Delivery {
    /// The version it last changed in.
    pub changed_in: u64,
    /// Connected nodes running that version or a newer one…
    pub live_on: usize,
    /// …of this many connected nodes.
    pub of: usize,
}

/// Where the object `(table, name)` (`frontends` or `backends`) is live.
async fn delivery(s: &AppState, table: &str, name: &str) -> Result<Delivery, ApiError> {
    let changed_in = s.store.object_version(table, name).await?;
    let nodes = s.registry.all();
    Ok(Delivery {
        changed_in,
        live_on: nodes
            .iter()
            .filter(|(_, n)| n.applied_version >= changed_in)
            .count(),
        of: nodes.len(),
    })
}

/// A frontend as configured, with where it is live.
#[derive(Debug, Serialize, ToSchema)]
pub struct FrontendView {
    #[serde(flatten)]
    pub frontend: Frontend,
    pub delivery: Delivery,
}

/// What GET returns may be sent back as is: its read-only parts are dropped.
fn without_views(body: Bytes) -> Bytes {
    match serde_json::from_slice::<serde_json::Value>(&body) {
        Ok(serde_json::Value::Object(mut o))
            if o.contains_key("live") || o.contains_key("delivery") =>
        {
            o.remove("live");
            o.remove("delivery");
            Bytes::from(serde_json::to_vec(&o).unwrap_or_default())
        }
        _ => body,
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ServerLive {
    pub server: String,
    pub nodes: Vec<ServerOnNode>,
}

/// One server as one node last reported it.
#[derive(Debug, Serialize, ToSchema)]
pub struct ServerOnNode {
    pub node: String,
    /// `up`, `down` (by this node's health checks) or `unchecked` (no check configured).
    pub health: String,
    /// When this node last saw the health change (RFC 3339), if it did.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub health_changed: Option<String>,
    /// Why: the last failed check when down, the passing checks when up.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub health_reason: String,
    /// Requests in flight and tunnels open to the server through this node.
    pub current_connections: u64,
    pub current_tunnels: u64,
    pub total_connections: u64,
    pub connect_errors: u64,
    /// When the node sent these figures (RFC 3339).
    pub reported: String,
}

/// One backend, with its servers' live state on every connected node (health as each
/// node's checks see it, open connections and tunnels — e.g. to watch a drain finish).
#[utoipa::path(get, path = "/api/v1/backends/{name}", tag = "backends",
    params(("name" = String, Path)),
    responses((status = 200, body = BackendView), (status = 404, body = super::error::ErrorBody)))]
pub async fn get_backend(
    State(s): State<AppState>,
    Path(name): Path<String>,
) -> Result<impl IntoResponse, ApiError> {
    let (version, config) = s.config.read().await?;
    let backend = config
        .document
        .backends
        .into_iter()
        .find(|b| b.name == name)
        .ok_or_else(|| ApiError::from(not_found::<Backend>(&name)))?;
    let nodes = s.registry.all();
    let live = backend
        .servers
        .iter()
        .map(|server| ServerLive {
            server: server.name.clone(),
            nodes: nodes
                .iter()
                .filter_map(|(id, n)| {
                    let stats = n.stats.as_ref()?;
                    let st = stats
                        .backends
                        .iter()
                        .find(|b| b.name == backend.name)?
                        .servers
                        .iter()
                        .find(|x| x.name == server.name)?;
                    Some(ServerOnNode {
                        node: id.clone(),
                        health: match st.health() {
                            pb::Health::Up => "up",
                            pb::Health::Down => "down",
                            _ => "unchecked",
                        }
                        .to_string(),
                        health_changed: (st.health_changed_unix_ms > 0)
                            .then(|| rfc3339(st.health_changed_unix_ms)),
                        health_reason: st.health_reason.chars().take(512).collect(),
                        current_connections: st.current_connections,
                        current_tunnels: st.current_tunnels,
                        total_connections: st.total_connections,
                        connect_errors: st.connect_errors,
                        reported: rfc3339(stats.unix_ms),
                    })
                })
                .collect(),
        })
        .collect();
    let delivery = delivery(&s, "backends", &name).await?;
    Ok((
        [etag(version)],
        Json(BackendView {
            backend,
            live,
            delivery,
        }),
    ))
}

/// The body of a server state change.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StateChange {
    /// `ready`, `drain` (no new connections except sticky ones) or `maint` (none at all).
    /// Open tunnels are left alone either way.
    pub state: String,
}

/// Sets one server's administrative state — a versioned config change, pushed to every
/// node (HAProxy's `set server <backend>/<server> state`).
#[utoipa::path(put, path = "/api/v1/backends/{name}/servers/{server}/state", tag = "backends",
    request_body = StateChange,
    params(("name" = String, Path), ("server" = String, Path)),
    responses((status = 200, body = super::config::WriteResult),
              (status = 404, body = super::error::ErrorBody),
              (status = 422, body = super::error::ErrorBody)))]
pub async fn put_server_state(
    State(s): State<AppState>,
    Path((name, server)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<impl IntoResponse, ApiError> {
    let expected = if_match(&headers)?;
    let actor = super::actor(&headers)?;
    let change: StateChange = parse_json(&body)?;
    let what = format!("set server {name}/{server} state {}", change.state);
    let mut event = crate::events::event("server_state", change.state.clone());
    event.backend = Some(name.clone());
    event.server = Some(server.clone());
    event.actor = Some(actor.clone());
    let applied = s
        .config
        .apply(expected, &what, &actor, move |config| {
            let backend = config
                .document
                .backends
                .iter_mut()
                .find(|b| b.name == name)
                .ok_or_else(|| not_found::<Backend>(&name))?;
            let slot = backend
                .servers
                .iter_mut()
                .find(|x| x.name == server)
                .ok_or_else(|| {
                    ChangeError::NotFound(format!("backend {name:?} has no server {server:?}"))
                })?;
            slot.state = Some(change.state);
            Ok(())
        })
        .await?;
    if applied.changed {
        event.version = Some(applied.version);
        crate::events::record(&s.store, event).await;
    }
    Ok(write_response(StatusCode::OK, applied))
}

/// Adds a backend (409 if the name exists).
#[utoipa::path(post, path = "/api/v1/backends", tag = "backends", request_body = Backend,
    responses((status = 201, body = super::config::WriteResult),
              (status = 409, body = super::error::ErrorBody),
              (status = 422, body = super::error::ErrorBody)))]
pub async fn create_backend(
    State(s): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<impl IntoResponse, ApiError> {
    create::<Backend>(s, headers, body).await
}

/// Creates or replaces a backend (servers, states, timeouts...).
#[utoipa::path(put, path = "/api/v1/backends/{name}", tag = "backends", request_body = Backend,
    params(("name" = String, Path)),
    responses((status = 200, body = super::config::WriteResult),
              (status = 422, body = super::error::ErrorBody)))]
pub async fn put_backend(
    State(s): State<AppState>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<impl IntoResponse, ApiError> {
    replace::<Backend>(s, name, headers, without_views(body)).await
}

/// Removes a backend; refused (422) while a frontend still references it.
#[utoipa::path(delete, path = "/api/v1/backends/{name}", tag = "backends",
    params(("name" = String, Path)),
    responses((status = 200, body = super::config::WriteResult),
              (status = 404, body = super::error::ErrorBody),
              (status = 422, body = super::error::ErrorBody)))]
pub async fn delete_backend(
    State(s): State<AppState>,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> Result<impl IntoResponse, ApiError> {
    delete::<Backend>(s, name, headers).await
}
