//! The `Fleet` gRPC service: one bidirectional stream per data-plane node.
//!
//! Authenticates the node token, takes the node's `Hello`, sends the newest snapshot and
//! then every newer one from the write path's watch channel, and records the node's acks,
//! nacks (in the registry and the store) and stats (in the registry). A stream ends when the node goes away, when it is silent past
//! the stale deadline, when a newer stream of the same node id replaces it, or at
//! shutdown. The protocol rules are in `proto/sluice/v1/fleet.proto`.

pub mod registry;
pub mod wire;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use sluice_proto::v1::{self as pb, node_message, NodeMessage};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use crate::auth::TokenDigest;
use crate::clock::unix_ms;
use crate::snapshot::Published;
use crate::store::Store;
use registry::Registry;
use wire::ControlStream;

/// Every committed version, newest last (`ConfigService::subscribe`).
pub type Snapshots = tokio::sync::watch::Receiver<Arc<Published>>;

pub struct FleetService {
    pub snapshots: Snapshots,
    /// Where node hellos, replies and last-seen times are recorded.
    pub store: Store,
    pub registry: Arc<Registry>,
    pub node_token: TokenDigest,
    /// A node silent for longer than this is considered gone.
    pub stale_after: Duration,
    pub shutdown: tokio::sync::watch::Receiver<bool>,
}

impl FleetService {
    /// One node's `Fleet.Session`: authenticate, take the `Hello`, then stream versions
    /// from a session task.
    pub async fn session(
        &self,
        request: Request<Streaming<NodeMessage>>,
    ) -> Result<Response<ControlStream>, Status> {
        let presented = request
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        if !presented.is_some_and(|t| self.node_token.matches(t)) {
            tracing::warn!(remote = ?request.remote_addr(), "node stream refused: bad or missing token");
            return Err(Status::unauthenticated("invalid node token"));
        }
        let mut inbound = request.into_inner();
        let hello = match tokio::time::timeout(Duration::from_secs(10), inbound.message()).await {
            Ok(Ok(Some(NodeMessage {
                msg: Some(node_message::Msg::Hello(h)),
            }))) => h,
            Ok(Ok(_)) => return Err(Status::invalid_argument("the first message must be Hello")),
            Ok(Err(status)) => return Err(status),
            Err(_) => return Err(Status::deadline_exceeded("no Hello within 10s")),
        };
        if hello.node_id.is_empty() || hello.node_id.len() > 128 {
            return Err(Status::invalid_argument("node_id must be 1-128 characters"));
        }
        let now = unix_ms();
        let labels = serde_json::to_string(&hello.labels).unwrap_or_else(|_| "{}".into());
        self.store
            .upsert_node(
                &hello.node_id,
                &labels,
                &hello.software_version,
                hello.applied_version,
                now,
            )
            .await
            .map_err(|e| {
                tracing::error!(error = %e, "recording node hello");
                Status::internal("could not record the node")
            })?;
        let session = self
            .registry
            .connect(&hello.node_id, hello.applied_version, now);
        tracing::info!(node = %hello.node_id, applied = hello.applied_version, "node connected");

        let (tx, rx) = mpsc::channel(4);
        let task = NodeSession {
            node_id: hello.node_id,
            session,
            snapshots: self.snapshots.clone(),
            store: self.store.clone(),
            registry: self.registry.clone(),
            stale_after: self.stale_after,
            shutdown: self.shutdown.clone(),
        };
        tokio::spawn(task.run(inbound, tx));
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}

struct NodeSession {
    node_id: String,
    session: u64,
    snapshots: Snapshots,
    store: Store,
    registry: Arc<Registry>,
    stale_after: Duration,
    shutdown: tokio::sync::watch::Receiver<bool>,
}

impl NodeSession {
    async fn run(
        mut self,
        mut inbound: Streaming<NodeMessage>,
        tx: mpsc::Sender<Result<Bytes, Status>>,
    ) {
        let mut snapshots = self.snapshots.clone();
        let mut pending = Some(snapshots.borrow_and_update().clone());
        let mut replaced = tokio::time::interval(Duration::from_secs(1));
        let end = loop {
            if let Some(published) = pending.take() {
                let version = published.snapshot.version;
                // The version's message, encoded once for every session.
                if tx.send(Ok(published.message.clone())).await.is_err() {
                    break "stream closed by the node";
                }
                tracing::debug!(node = %self.node_id, version, "snapshot sent");
            }
            tokio::select! {
                changed = snapshots.changed() => {
                    if changed.is_err() {
                        break "control plane shutting down";
                    }
                    pending = Some(snapshots.borrow_and_update().clone());
                }
                msg = tokio::time::timeout(self.stale_after, inbound.message()) => match msg {
                    Err(_) => break "node silent past the stale deadline",
                    Ok(Ok(Some(m))) => self.handle(m).await,
                    Ok(Ok(None)) => break "node closed the stream",
                    Ok(Err(status)) => {
                        tracing::debug!(node = %self.node_id, %status, "node stream error");
                        break "node stream error";
                    }
                },
                _ = replaced.tick() => {
                    if !self.registry.is_current(&self.node_id, self.session) {
                        break "replaced by a newer stream of the same node";
                    }
                }
                _ = self.shutdown.changed() => break "control plane shutting down",
                _ = tx.closed() => break "stream closed by the node",
            }
        };
        self.registry.disconnect(&self.node_id, self.session);
        let _ = self.store.touch_node(&self.node_id, unix_ms()).await;
        tracing::info!(node = %self.node_id, reason = end, "node disconnected");
    }

    async fn handle(&mut self, m: NodeMessage) {
        let now = unix_ms();
        let store = &self.store;
        // The registry first (the fleet view is current at once), then the store.
        let result = match m.msg {
            Some(node_message::Msg::Ack(pb::Ack { version })) => {
                tracing::info!(node = %self.node_id, version, "node applied snapshot");
                self.registry
                    .record_reply(&self.node_id, self.session, version, None, now);
                store
                    .record_node_reply(&self.node_id, version, None, now)
                    .await
            }
            Some(node_message::Msg::Nack(pb::Nack { version, reason })) => {
                tracing::warn!(node = %self.node_id, version, %reason, "node rejected snapshot");
                self.registry.record_reply(
                    &self.node_id,
                    self.session,
                    version,
                    Some(&reason),
                    now,
                );
                store
                    .record_node_reply(&self.node_id, version, Some(&reason), now)
                    .await
            }
            // Stats only update the live view; the store learns the last-seen time when
            // the stream ends, so reporting costs no disk write.
            Some(node_message::Msg::Stats(stats)) => {
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
