//! The `Fleet` gRPC service: one bidirectional stream per data-plane node.
//!
//! Authenticates the node token, takes the node's `Hello`, sends the version the
//! rollout's assignment gives the node (the newest, outside a staged rollout) and then
//! each one it changes to, and records the node's acks,
//! nacks (in the registry and the store) and stats (in the registry and the traffic
//! history, whose health changes become events). A stream ends when the node goes away, when it is silent past
//! the stale deadline, when a newer stream of the same node id replaces it, or at
//! shutdown. The protocol rules are in `proto/sluice/v1/fleet.proto`.

pub mod enroll;
pub mod wire;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use prost::Message;
use sluice_proto::v1::{self as pb, node_message, NodeMessage};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use crate::auth::TokenDigest;
use crate::clock::unix_ms;
use crate::config::compile::valid_name;
use crate::config::features;
use crate::events;
use crate::registry::{Registry, Reply};
use crate::rollout::assign::Assignment;
use crate::series::rates::NodeRates;
use crate::series::Series;
use crate::store::{NodeBeat, NodeHello, NodeReply, Store};
use wire::ControlStream;

/// What each node should run, as it changes (`Rollouts::assignments`).
pub type Assignments = tokio::sync::watch::Receiver<Arc<Assignment>>;

pub struct FleetService {
    pub assignments: Assignments,
    /// Where node hellos, replies and last-seen times are recorded.
    pub store: Store,
    pub registry: Arc<Registry>,
    /// Where stats reports become traffic history.
    pub series: Arc<Series>,
    pub node_token: TokenDigest,
    /// A node silent for longer than this is considered gone.
    pub stale_after: Duration,
    pub shutdown: tokio::sync::watch::Receiver<bool>,
    /// This control-plane replica's name, recorded with the nodes it serves.
    pub replica: String,
    /// The credentials as last read, for while the database cannot be reached.
    pub known: Arc<enroll::KnownCredentials>,
}

/// Labels as a node announced them, in order.
fn labels_of(
    labels: &std::collections::HashMap<String, String>,
) -> std::collections::BTreeMap<String, String> {
    labels.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
}

/// Every `every` (a third of the stale deadline, at most two seconds) records that this
/// replica's connected nodes are alive, with their latest report, headline rates and
/// withheld version: the other replicas on the database show them connected, with their
/// traffic, and the rollout leader's gates read them.
pub async fn heartbeat(
    store: Store,
    registry: Arc<Registry>,
    series: Arc<Series>,
    replica: String,
    every: Duration,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) {
    let shared = store.database() == crate::store::Database::Postgres;
    let mut tick = tokio::time::interval(every);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.changed() => break,
        }
        // Reports and rates are for other replicas: none on SQLite.
        let latest = shared.then(|| series.latest()).flatten();
        let seen: Vec<NodeBeat> = registry
            .all()
            .into_iter()
            .map(|(id, n)| NodeBeat {
                rates: latest
                    .as_ref()
                    .and_then(|t| serde_json::to_string(&NodeRates::of(t, &id)).ok())
                    .unwrap_or_default(),
                stats: n
                    .stats
                    .as_ref()
                    .filter(|_| shared)
                    .map(Message::encode_to_vec)
                    .unwrap_or_default(),
                withheld_version: n.withheld.as_ref().map(|(v, _)| *v),
                last_seen_ms: n.last_seen_unix_ms,
                node_id: id,
            })
            .collect();
        if seen.is_empty() {
            continue;
        }
        if let Err(e) = store.heartbeat_nodes(&seen, &replica).await {
            tracing::warn!(error = %e, "recording that this replica's nodes are alive");
        }
    }
}

/// Most labels a node may carry.
pub const MAX_LABELS: usize = 32;
/// Longest label value, and longest software version.
pub const MAX_LABEL_VALUE: usize = 256;

/// A node's identity is bounded before anything of it is stored or logged: the id and
/// label keys follow the configuration's name rule (1-128 of `A-Z a-z 0-9 _ - . :`),
/// label values and the software version are at most 256 characters without control
/// characters, and there are at most 32 labels.
pub(crate) fn check_hello(hello: &pb::Hello) -> Result<(), Status> {
    let bad = |what: String| Err(Status::invalid_argument(what));
    if !valid_name(&hello.node_id) {
        return bad(format!(
            "node_id {:?} is not 1-128 of A-Z a-z 0-9 _ - . :",
            hello.node_id.chars().take(160).collect::<String>()
        ));
    }
    if hello.labels.len() > MAX_LABELS {
        return bad(format!(
            "{} labels: at most {MAX_LABELS}",
            hello.labels.len()
        ));
    }
    let text_ok =
        |v: &str| v.chars().count() <= MAX_LABEL_VALUE && !v.chars().any(char::is_control);
    for (key, value) in &hello.labels {
        if !valid_name(key) {
            return bad(format!(
                "label key {:?} is not 1-128 of A-Z a-z 0-9 _ - . :",
                key.chars().take(160).collect::<String>()
            ));
        }
        if !text_ok(value) {
            return bad(format!(
                "label {key}: the value must be at most {MAX_LABEL_VALUE} characters without control characters"
            ));
        }
    }
    if hello.features.len() > MAX_LABELS || !hello.features.iter().all(|f| valid_name(f)) {
        return bad(format!(
            "features: at most {MAX_LABELS}, each 1-128 of A-Z a-z 0-9 _ - . :"
        ));
    }
    if !text_ok(&hello.software_version) {
        return bad(format!(
            "software_version must be at most {MAX_LABEL_VALUE} characters without control characters"
        ));
    }
    Ok(())
}

impl FleetService {
    /// One node's `Fleet.Session`: authenticate, take the `Hello`, then stream versions
    /// from a session task.
    pub async fn session(
        &self,
        request: Request<Streaming<NodeMessage>>,
    ) -> Result<Response<ControlStream>, Status> {
        let presented = match self.authenticate(&request).await {
            Ok(p) => p,
            Err(status) => {
                tracing::warn!(remote = ?request.remote_addr(), reason = status.message(), "node stream refused");
                return Err(status);
            }
        };
        let mut inbound = request.into_inner();
        let hello = match tokio::time::timeout(Duration::from_secs(10), inbound.message()).await {
            Ok(Ok(Some(NodeMessage {
                msg: Some(node_message::Msg::Hello(h)),
            }))) => h,
            Ok(Ok(_)) => return Err(Status::invalid_argument("the first message must be Hello")),
            Ok(Err(status)) => return Err(status),
            Err(_) => return Err(Status::deadline_exceeded("no Hello within 10s")),
        };
        check_hello(&hello)?;
        if let Err(status) = self.admit(&presented, &hello.node_id).await {
            tracing::warn!(node = %hello.node_id, reason = status.message(), "node stream refused");
            return Err(status);
        }
        let now = unix_ms();
        let labels = serde_json::to_string(&hello.labels).unwrap_or_else(|_| "{}".into());
        let seen = NodeHello {
            node_id: &hello.node_id,
            labels_json: &labels,
            software_version: &hello.software_version,
            applied_version: hello.applied_version,
            replica: &self.replica,
        };
        match self.store.upsert_node(&seen, now).await {
            Ok(()) => {}
            // The node is served all the same; its replica records it once the database
            // is back (the heartbeat).
            Err(e) if e.is_unavailable() => {
                tracing::warn!(error = %e, node = %hello.node_id, "database unavailable: the node's hello is not recorded")
            }
            Err(e) => {
                tracing::error!(error = %e, "recording node hello");
                return Err(Status::internal("could not record the node"));
            }
        }
        let digest = crate::snapshot::hex(&hello.applied_digest);
        if let Err(e) = self.store.record_node_digest(&hello.node_id, &digest).await {
            tracing::warn!(error = %e, "recording the node's digest");
        }
        let labels = labels_of(&hello.labels);
        let session = self.registry.connect(
            &hello.node_id,
            labels.clone(),
            (
                hello.applied_version,
                hello.applied_digest.clone(),
                hello.features.clone(),
            ),
            now,
        );
        tracing::info!(node = %hello.node_id, applied = hello.applied_version, "node connected");
        let mut connected = events::event(
            "node_connected",
            format!("applied version {}", hello.applied_version),
        );
        connected.node = Some(hello.node_id.clone());
        connected.version = Some(hello.applied_version);
        events::record(&self.store, connected).await;

        let (tx, rx) = mpsc::channel(4);
        let task = NodeSession {
            features: hello.features.clone(),
            node_id: hello.node_id,
            labels,
            session,
            assignments: self.assignments.clone(),
            store: self.store.clone(),
            registry: self.registry.clone(),
            series: self.series.clone(),
            stale_after: self.stale_after,
            replica: self.replica.clone(),
            shutdown: self.shutdown.clone(),
        };
        tokio::spawn(task.run(inbound, tx));
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}

struct NodeSession {
    node_id: String,
    replica: String,
    labels: std::collections::BTreeMap<String, String>,
    /// The snapshot features the node announced.
    features: Vec<String>,
    session: u64,
    assignments: Assignments,
    store: Store,
    registry: Arc<Registry>,
    series: Arc<Series>,
    stale_after: Duration,
    shutdown: tokio::sync::watch::Receiver<bool>,
}

/// Why a stream ended, as its event says.
const SILENT: &str = "node silent past the stale deadline";

impl NodeSession {
    async fn run(
        mut self,
        mut inbound: Streaming<NodeMessage>,
        tx: mpsc::Sender<Result<Bytes, Status>>,
    ) {
        let mut assignments = self.assignments.clone();
        let (id, labels) = (self.node_id.clone(), self.labels.clone());
        let target = move |a: &Assignment| a.target(&id, &labels).clone();
        let mut pending = Some(target(&assignments.borrow_and_update()));
        // The version last offered (sent or withheld): an assignment that changes for
        // other nodes does not send it again.
        let mut offered = None;
        let mut replaced = tokio::time::interval(Duration::from_secs(1));
        // The deadline runs from the node's last message, across the loop's other
        // wake-ups (a timeout around each read would restart with every tick).
        let silent = tokio::time::sleep(self.stale_after);
        tokio::pin!(silent);
        let end = loop {
            if let Some(published) = pending
                .take()
                .filter(|p| Some(p.snapshot.version) != offered)
            {
                let version = published.snapshot.version;
                offered = Some(version);
                let missing = features::missing(&published.features, &self.features);
                if missing.is_empty() {
                    // The version's message, encoded once for every session.
                    if tx.send(Ok(published.message.clone())).await.is_err() {
                        break "stream closed by the node";
                    }
                    tracing::debug!(node = %self.node_id, version, "snapshot sent");
                } else {
                    // A node too old for this version keeps its plan; the fleet view and
                    // the timeline say why.
                    tracing::warn!(node = %self.node_id, version, ?missing, "snapshot withheld: the node lacks features it uses");
                    let mut e = events::event(
                        "version_withheld",
                        format!("the node lacks {}", missing.join(", ")),
                    );
                    e.node = Some(self.node_id.clone());
                    e.version = Some(version);
                    events::record(&self.store, e).await;
                }
                self.registry
                    .record_withheld(&self.node_id, self.session, version, missing);
            }
            tokio::select! {
                changed = assignments.changed() => {
                    if changed.is_err() {
                        break "control plane shutting down";
                    }
                    pending = Some(target(&assignments.borrow_and_update()));
                }
                () = &mut silent => break SILENT,
                msg = inbound.message() => match msg {
                    Ok(Some(m)) => {
                        silent
                            .as_mut()
                            .reset(tokio::time::Instant::now() + self.stale_after);
                        self.handle(m).await;
                    }
                    Ok(None) => break "node closed the stream",
                    Err(status) => {
                        tracing::debug!(node = %self.node_id, %status, "node stream error");
                        break "node stream error";
                    }
                },
                _ = replaced.tick() => {
                    if self.registry.is_revoked(&self.node_id) {
                        break "node revoked";
                    }
                    if !self.registry.is_current(&self.node_id, self.session) {
                        break "replaced by a newer stream of the same node";
                    }
                }
                _ = self.shutdown.changed() => break "control plane shutting down",
                _ = tx.closed() => break "stream closed by the node",
            }
        };
        if self.registry.is_current(&self.node_id, self.session) {
            self.series.disconnected(&self.node_id);
        }
        self.registry.disconnect(&self.node_id, self.session);
        let _ = self
            .store
            .touch_node(&self.node_id, unix_ms(), &self.replica)
            .await;
        tracing::info!(node = %self.node_id, reason = end, "node disconnected");
        let kind = if end == SILENT {
            "node_stale"
        } else {
            "node_disconnected"
        };
        let mut gone = events::event(kind, end);
        gone.node = Some(self.node_id.clone());
        events::record(&self.store, gone).await;
    }

    async fn handle(&mut self, m: NodeMessage) {
        let now = unix_ms();
        let store = &self.store;
        // The registry first (the fleet view is current at once), then the store.
        let result = match m.msg {
            Some(node_message::Msg::Ack(pb::Ack { version, digest })) => {
                tracing::info!(node = %self.node_id, version, "node applied snapshot");
                self.registry.record_reply(
                    &self.node_id,
                    self.session,
                    Reply::Ack {
                        version,
                        digest: &digest,
                    },
                    now,
                );
                let mut acked = events::event("version_acked", "applied");
                acked.node = Some(self.node_id.clone());
                acked.version = Some(version);
                events::record(store, acked).await;
                store
                    .record_node_reply(
                        &self.node_id,
                        version,
                        NodeReply::Ack {
                            digest_hex: &crate::snapshot::hex(&digest),
                        },
                        now,
                    )
                    .await
            }
            Some(node_message::Msg::Nack(pb::Nack { version, reason })) => {
                // The reason is the node's text: logged escaped (Debug), never raw.
                tracing::warn!(node = %self.node_id, version, ?reason, "node rejected snapshot");
                self.registry.record_reply(
                    &self.node_id,
                    self.session,
                    Reply::Nack {
                        version,
                        reason: &reason,
                    },
                    now,
                );
                // The node's text, bounded.
                let mut nacked = events::event(
                    "version_nacked",
                    reason.chars().take(1024).collect::<String>(),
                );
                nacked.node = Some(self.node_id.clone());
                nacked.version = Some(version);
                events::record(store, nacked).await;
                store
                    .record_node_reply(
                        &self.node_id,
                        version,
                        NodeReply::Nack { reason: &reason },
                        now,
                    )
                    .await
            }
            // Stats only update the live view; the store learns the last-seen time when
            // the stream ends, so reporting costs no disk write.
            Some(node_message::Msg::Stats(stats)) => {
                if !self.registry.is_current(&self.node_id, self.session) {
                    return;
                }
                for change in self.series.observe(&self.node_id, &stats) {
                    let state = if change.up { "up" } else { "down" };
                    let mut e =
                        events::event("server_health", format!("{state}: {}", change.reason));
                    e.node = Some(self.node_id.clone());
                    e.backend = Some(change.backend);
                    e.server = Some(change.server);
                    events::record(store, e).await;
                }
                self.registry
                    .record_stats(&self.node_id, self.session, stats);
                Ok(())
            }
            Some(node_message::Msg::Hello(_)) | None => Ok(()),
        };
        if let Err(e) = result {
            tracing::error!(node = %self.node_id, error = %e, "recording node message");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hello(node_id: &str, labels: &[(&str, String)]) -> pb::Hello {
        pb::Hello {
            node_id: node_id.into(),
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.clone()))
                .collect(),
            software_version: "0.1.0".into(),
            ..Default::default()
        }
    }

    #[test]
    fn node_identity_is_bounded() {
        assert!(check_hello(&hello("edge-1", &[("zone", "a".into())])).is_ok());
        for (what, h) in [
            ("a newline in the id", hello("edge-1\nforged line", &[])),
            ("an empty id", hello("", &[])),
            ("an id of 129", hello(&"n".repeat(129), &[])),
            (
                "a 100 KB label",
                hello("edge-1", &[("zone", "x".repeat(100_000))]),
            ),
            (
                "a control character in a label",
                hello("edge-1", &[("zone", "a\rb".into())]),
            ),
            (
                "a bad label key",
                hello("edge-1", &[("zone a", "a".into())]),
            ),
        ] {
            let status = check_hello(&h).expect_err(what);
            assert_eq!(status.code(), tonic::Code::InvalidArgument, "{what}");
            assert!(
                !status.message().contains('\n'),
                "{what}: {:?}",
                status.message()
            );
        }
        let many: Vec<(&str, String)> = Vec::new();
        let mut h = hello("edge-1", &many);
        for i in 0..33 {
            h.labels.insert(format!("k{i}"), "v".into());
        }
        assert!(check_hello(&h).is_err(), "33 labels");
    }
}
