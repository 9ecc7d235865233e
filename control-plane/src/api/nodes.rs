//! `/api/v1/nodes`: the fleet as the control plane sees it.

use std::collections::{BTreeMap, HashMap};

use axum::extract::State;
use axum::Json;
use prost::Message as _;
use serde::Serialize;
use sluice_proto::v1 as pb;
use utoipa::ToSchema;

use super::snapshots::rfc3339;
use super::{ApiError, AppState};
use crate::clock::unix_ms;
use crate::series::rates::NodeRates;

#[derive(Debug, Serialize, ToSchema)]
pub struct NodeView {
    pub id: String,
    pub labels: BTreeMap<String, String>,
    pub software_version: String,
    /// True while the node's stream is open and it has been heard from recently.
    pub connected: bool,
    /// The control-plane replica its stream is on ("" when offline).
    pub replica: String,
    /// `online`; `stale` (stream open but silent for over a third of the stale
    /// deadline, about to be dropped); `offline`.
    pub status: &'static str,
    /// When the node's process started (RFC 3339), as last reported.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub started: Option<String>,
    /// Seconds since the node's process started.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub uptime_s: Option<i64>,
    /// Per-second rates over the last closed 10-second bucket (of the replica the node is
    /// connected to).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rates: Option<NodeRates>,
    pub first_seen: String,
    pub last_seen: String,
    /// The snapshot version the node serves.
    pub applied_version: u64,
    /// The version the node should run: the newest, or during a staged rollout the
    /// previous one until the rollout reaches the node.
    pub target_version: u64,
    /// SHA-256 (hex) of the snapshot the node says it runs, computed by the node from
    /// what it applied.
    pub applied_digest: String,
    /// The node runs something other than its version's snapshot (its digest differs):
    /// a node that misapplied, or one too old to know every field of the snapshot.
    pub drift: bool,
    /// The newest version the node rejected, and why.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_nack: Option<NackView>,
    /// The newest version not sent to the node because it lacks features the version
    /// uses (its `Hello` did not list them): it keeps its current plan.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub withheld: Option<WithheldView>,
    /// The snapshot features the node announced.
    pub features: Vec<String>,
    /// The node enrolled and has a credential of its own (else it uses the fleet token).
    pub enrolled: bool,
    /// When the node was revoked: its id is refused from then on.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub revoked: Option<String>,
    /// Current traffic as last reported (to this replica, or as the node's replica last
    /// recorded it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub traffic: Option<TrafficView>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct WithheldView {
    pub version: u64,
    /// The features the version uses that the node lacks.
    pub missing: Vec<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct NackView {
    pub version: u64,
    pub reason: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct TrafficView {
    pub reported: String,
    pub current_connections: u64,
    pub current_tunnels: u64,
    pub total_connections: u64,
    pub total_upgrades: u64,
    pub total_requests: u64,
    pub frontends: Vec<FrontendTraffic>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct FrontendTraffic {
    pub name: String,
    pub current_connections: u64,
    pub current_tunnels: u64,
    pub total_connections: u64,
    pub total_upgrades: u64,
    pub total_requests: u64,
    pub bytes_in: u64,
    pub bytes_out: u64,
    /// Responses by class: 1xx, 2xx, 3xx, 4xx, 5xx.
    pub responses_by_class: Vec<u64>,
}

fn traffic(stats: &pb::Stats) -> TrafficView {
    let frontends: Vec<FrontendTraffic> = stats
        .frontends
        .iter()
        .map(|f| FrontendTraffic {
            name: f.name.clone(),
            current_connections: f.current_connections,
            current_tunnels: f.current_tunnels,
            total_connections: f.total_connections,
            total_upgrades: f.total_upgrades,
            total_requests: f.total_requests,
            bytes_in: f.bytes_in,
            bytes_out: f.bytes_out,
            responses_by_class: f.responses_by_class.clone(),
        })
        .collect();
    let sum = |f: fn(&FrontendTraffic) -> u64| frontends.iter().map(f).sum();
    TrafficView {
        reported: rfc3339(stats.unix_ms),
        current_connections: sum(|f| f.current_connections),
        current_tunnels: sum(|f| f.current_tunnels),
        total_connections: sum(|f| f.total_connections),
        total_upgrades: sum(|f| f.total_upgrades),
        total_requests: sum(|f| f.total_requests),
        frontends,
    }
}

/// Every node ever seen, with its connection state, applied version and last nack.
#[utoipa::path(get, path = "/api/v1/nodes", tag = "nodes",
    responses((status = 200, body = Vec<NodeView>)))]
pub async fn list_nodes(State(state): State<AppState>) -> Result<Json<Vec<NodeView>>, ApiError> {
    Ok(Json(views(&state).await?))
}

/// The digests of `versions` (hex; "" when unknown), the newest from memory.
async fn digests(
    state: &AppState,
    versions: impl Iterator<Item = u64>,
) -> Result<HashMap<u64, String>, ApiError> {
    let newest = state.config.current();
    let mut out = HashMap::new();
    for v in versions {
        if out.contains_key(&v) {
            continue;
        }
        let d = if v == newest.snapshot.version {
            crate::snapshot::hex(&newest.digest)
        } else {
            state.store.snapshot_digest(v).await?.unwrap_or_default()
        };
        out.insert(v, d);
    }
    Ok(out)
}

/// Every node ever seen, as `GET /api/v1/nodes` shows it.
pub async fn views(state: &AppState) -> Result<Vec<NodeView>, ApiError> {
    let rows = state.store.list_nodes().await?;
    let now = unix_ms();
    let tick = state.series.latest();
    // A connected node's live state is newer than what the store has recorded.
    let rows: Vec<_> = rows
        .into_iter()
        .map(|r| {
            let live = state.registry.get(&r.node_id);
            (r, live)
        })
        .collect();
    let versions = rows.iter().map(|(r, live)| {
        live.as_ref()
            .map_or(r.applied_version, |l| l.applied_version)
    });
    let digests = digests(state, versions).await?;
    let assignment = state.rollouts.assignment();
    let credentials = state.store.node_credentials().await?;
    let views = rows
        .into_iter()
        .map(|(r, live)| {
            let last_seen_ms = live
                .as_ref()
                .map_or(r.last_seen_ms, |l| l.last_seen_unix_ms);
            // A node on another replica is connected while that replica keeps its
            // record fresh.
            let elsewhere = live.is_none() && !r.replica.is_empty() && r.replica != state.replica;
            let connected =
                (live.is_some() || elsewhere) && now - last_seen_ms <= state.stale_after_ms;
            let status = match (&live, now - last_seen_ms) {
                (None, silent) if elsewhere && silent <= state.stale_after_ms => "online",
                (None, _) => "offline",
                (Some(_), silent) if silent > state.stale_after_ms / 3 => "stale",
                _ => "online",
            };
            // A node on another replica: its report and rates as that replica recorded
            // them.
            let stats = match &live {
                Some(l) => l.stats.clone(),
                None if connected => r.stats.as_deref().and_then(|b| pb::Stats::decode(b).ok()),
                None => None,
            };
            let started_ms = stats
                .as_ref()
                .map(|s| s.started_unix_ms)
                .filter(|&ms| ms > 0);
            let rates = match &live {
                Some(_) => tick.as_ref().map(|t| NodeRates::of(t, &r.node_id)),
                None if connected => serde_json::from_str(&r.rates).ok(),
                None => None,
            };
            let applied_version = live
                .as_ref()
                .map_or(r.applied_version, |l| l.applied_version);
            let stored_nack = r.last_nack_version.zip(r.last_nack_reason);
            let nack = match live.as_ref().and_then(|l| l.last_nack.clone()) {
                Some(n) if stored_nack.as_ref().is_none_or(|s| n.0 >= s.0) => Some(n),
                _ => stored_nack,
            };
            let applied_digest = live.as_ref().map_or(r.applied_digest.clone(), |l| {
                crate::snapshot::hex(&l.applied_digest)
            });
            let expected = digests.get(&applied_version).cloned().unwrap_or_default();
            let drift = !applied_digest.is_empty()
                && !expected.is_empty()
                && applied_version > 0
                && applied_digest != expected;
            // Only report the nack if it is newer than what the node applied since.
            let last_nack = nack
                .filter(|(v, _)| *v > applied_version)
                .map(|(version, reason)| NackView { version, reason });
            let labels: BTreeMap<String, String> =
                serde_json::from_str(&r.labels).unwrap_or_default();
            let target_version = assignment.target(&r.node_id, &labels).snapshot.version;
            let (enrolled, revoked) = credentials.get(&r.node_id).copied().unwrap_or_default();
            let replica = match &live {
                Some(_) => state.replica.clone(),
                None if connected => r.replica.clone(),
                None => String::new(),
            };
            NodeView {
                replica,
                enrolled,
                revoked: revoked.map(rfc3339),
                labels,
                target_version,
                id: r.node_id,
                software_version: r.software_version,
                connected,
                status,
                started: started_ms.map(rfc3339),
                uptime_s: started_ms.map(|ms| (now - ms).max(0) / 1000),
                rates,
                first_seen: rfc3339(r.first_seen_ms),
                last_seen: rfc3339(last_seen_ms),
                applied_version,
                applied_digest,
                drift,
                last_nack,
                withheld: live.as_ref().and_then(|l| l.withheld.clone()).map(
                    |(version, missing)| WithheldView {
                        version,
                        missing: missing.iter().map(|m| m.to_string()).collect(),
                    },
                ),
                features: live
                    .as_ref()
                    .map(|l| l.features.clone())
                    .unwrap_or_default(),
                traffic: stats.as_ref().map(traffic),
            }
        })
        .collect();
    Ok(views)
}
