//! The node's side of the `Fleet` stream: enroll once (a bootstrap token for the node's
//! own credential, [`crate::credential`]), connect, say hello, apply snapshots, ack or
//! nack, report stats; on any break, reconnect with exponential backoff and jitter while
//! the current plan keeps serving. Protocol rules: `proto/sluice/v1/fleet.proto`.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use rand::Rng;
use sluice_proto::v1::{
    self as pb, control_message, fleet_client::FleetClient, node_message, NodeMessage,
};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Endpoint;

use crate::cache::SnapshotCache;
use crate::Node;

pub mod report;

/// How to reach and identify with the control plane.
#[derive(Debug, Clone)]
pub struct ControlConfig {
    /// The control plane's replicas: tried in turn; a node whose replica goes away
    /// connects to the next.
    pub endpoints: Vec<String>,
    /// The bootstrap token (or the fleet-wide node token) to enroll with.
    pub token: String,
    /// The node's own credential, once enrolled.
    pub credential: Arc<crate::credential::Credential>,
    pub node_id: String,
    pub labels: HashMap<String, String>,
    pub stats_interval: Duration,
    /// CA certificates (PEM) to verify an `https://` control plane with; `None`: the
    /// endpoint must be `http://`.
    pub ca_pem: Option<Vec<u8>>,
    /// Where each applied snapshot is kept for the next boot (`--state-dir`).
    pub cache: Option<SnapshotCache>,
}

const BACKOFF_MIN: Duration = Duration::from_millis(200);
const BACKOFF_MAX: Duration = Duration::from_secs(10);

/// First and longest wait before applying again a snapshot that failed for a cause that
/// may pass.
const RETRY_MIN: Duration = Duration::from_millis(500);
const RETRY_MAX: Duration = Duration::from_secs(30);

/// Applies a snapshot and says what to answer; the snapshot comes back when it failed
/// for a cause that may pass (it is then tried again).
/// Snapshot features this node applies (announced in its `Hello`).
pub const FEATURES: &[&str] = &["http2", "replace-path"];

fn apply(
    cfg: &ControlConfig,
    node: &Node,
    snap: pb::Snapshot,
) -> (node_message::Msg, Option<pb::Snapshot>) {
    let version = snap.version;
    match node.apply(&snap) {
        Ok(()) => {
            tracing::info!(version, "applied snapshot");
            if let Some(cache) = cfg.cache.clone() {
                save(cache, snap);
            }
            let digest = node.plan.load().digest.clone();
            (node_message::Msg::Ack(pb::Ack { version, digest }), None)
        }
        Err(error) => {
            let transient = error.is_transient();
            tracing::warn!(version, %error, transient, "rejected snapshot; keeping version {}", node.applied_version());
            let nack = node_message::Msg::Nack(pb::Nack {
                version,
                reason: error.to_string(),
            });
            (nack, transient.then_some(snap))
        }
    }
}

/// Keeps `snap` for the next boot, off the stream's task (it syncs to disk).
fn save(cache: SnapshotCache, snap: pb::Snapshot) {
    tokio::task::spawn_blocking(move || {
        if let Err(error) = cache.save(&snap) {
            tracing::warn!(%error, version = snap.version, "could not keep the snapshot for the next boot");
        }
    });
}

/// The token to open the session with: the node's credential, or a new one from
/// enrolling with the bootstrap token; a control plane without enrollment takes the
/// bootstrap token (its fleet-wide node token) on the stream itself.
async fn credential(
    cfg: &ControlConfig,
    client: &mut FleetClient<tonic::transport::Channel>,
) -> Result<String, SessionEnd> {
    if let Some(c) = cfg.credential.get() {
        return Ok(c);
    }
    let mut request = tonic::Request::new(pb::EnrollRequest {
        node_id: cfg.node_id.clone(),
    });
    match format!("Bearer {}", cfg.token).parse() {
        Ok(v) => {
            request.metadata_mut().insert("authorization", v);
        }
        Err(_) => {
            return Err(SessionEnd::Failed(
                "the node token is not a valid header value".into(),
            ))
        }
    }
    match client.enroll(request).await {
        Ok(reply) => {
            let credential = reply.into_inner().credential;
            if let Err(e) = cfg.credential.set(credential.clone()) {
                tracing::warn!(error = %e, "could not keep the credential for the next boot");
            }
            tracing::info!(node_id = %cfg.node_id, "enrolled: the node has its own credential");
            Ok(credential)
        }
        Err(status) if status.code() == tonic::Code::Unimplemented => Ok(cfg.token.clone()),
        Err(status) if status.code() == tonic::Code::PermissionDenied => {
            tracing::error!(reason = status.message(), "this node is revoked");
            Err(SessionEnd::Failed(format!("refused: {}", status.message())))
        }
        Err(status) => {
            tracing::error!(code = ?status.code(), reason = status.message(), "enrollment refused");
            Err(SessionEnd::Failed(format!(
                "enrollment refused: {}",
                status.message()
            )))
        }
    }
}

/// Why a session ended.
enum SessionEnd {
    /// The session had been established (a snapshot was received): retry soon.
    AfterSnapshot(String),
    /// Nothing was received: back off further.
    Failed(String),
}

/// Runs until `shutdown` flips to true.
pub async fn run(
    cfg: ControlConfig,
    node: Arc<Node>,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) {
    let mut backoff = BACKOFF_MIN;
    // Which replica to try, and how many in a row failed: the next replica is tried at
    // once, and the backoff grows only once every one has failed.
    let (mut at, mut failed) = (0, 0);
    loop {
        let endpoint = &cfg.endpoints[at % cfg.endpoints.len()];
        let end = tokio::select! {
            end = session(&cfg, &node, endpoint) => end,
            _ = shutdown.wait_for(|s| *s) => return,
        };
        at += 1;
        match end {
            SessionEnd::AfterSnapshot(why) => {
                tracing::warn!(endpoint = %endpoint, reason = %why, "control plane stream ended; serving the last good plan");
                backoff = BACKOFF_MIN;
                failed = 0;
            }
            SessionEnd::Failed(why) => {
                failed += 1;
                tracing::warn!(endpoint = %endpoint, reason = %why, retry_in = ?backoff, "cannot reach the control plane; serving the last good plan");
                if failed < cfg.endpoints.len() {
                    continue;
                }
                failed = 0;
            }
        }
        // Full jitter in [backoff/2, backoff] so a fleet does not reconnect in lockstep.
        let half = backoff.as_millis() as u64 / 2;
        let wait = Duration::from_millis(half + rand::rng().random_range(0..=half));
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = shutdown.wait_for(|s| *s) => return,
        }
        backoff = (backoff * 2).min(BACKOFF_MAX);
    }
}

async fn session(cfg: &ControlConfig, node: &Arc<Node>, at: &str) -> SessionEnd {
    let endpoint = match Endpoint::from_shared(at.to_string()) {
        Ok(e) => e
            .connect_timeout(Duration::from_secs(5))
            .tcp_nodelay(true)
            .http2_keep_alive_interval(Duration::from_secs(10))
            .keep_alive_timeout(Duration::from_secs(20))
            .keep_alive_while_idle(true),
        Err(e) => return SessionEnd::Failed(format!("bad control-plane address: {e}")),
    };
    let endpoint = match &cfg.ca_pem {
        Some(ca) => match endpoint.tls_config(
            tonic::transport::ClientTlsConfig::new()
                .ca_certificate(tonic::transport::Certificate::from_pem(ca)),
        ) {
            Ok(e) => e,
            Err(e) => return SessionEnd::Failed(format!("TLS to the control plane: {e}")),
        },
        None => endpoint,
    };
    let channel = match endpoint.connect().await {
        Ok(c) => c,
        Err(e) => return SessionEnd::Failed(format!("connect: {e}")),
    };
    let mut client = FleetClient::new(channel)
        .max_decoding_message_size(sluice_proto::MAX_CONFIG_BYTES + sluice_proto::STREAM_OVERHEAD);
    let token = match credential(cfg, &mut client).await {
        Ok(t) => t,
        Err(end) => return end,
    };
    let (tx, rx) = mpsc::channel::<NodeMessage>(16);
    let hello = pb::Hello {
        node_id: cfg.node_id.clone(),
        labels: cfg.labels.clone(),
        software_version: env!("CARGO_PKG_VERSION").to_string(),
        applied_version: node.applied_version(),
        applied_digest: node.plan.load().digest.clone(),
        features: FEATURES.iter().map(|f| f.to_string()).collect(),
    };
    let _ = tx
        .send(NodeMessage {
            msg: Some(node_message::Msg::Hello(hello)),
        })
        .await;
    let mut request = tonic::Request::new(ReceiverStream::new(rx));
    match format!("Bearer {token}").parse() {
        Ok(v) => {
            request.metadata_mut().insert("authorization", v);
        }
        Err(_) => return SessionEnd::Failed("the node token is not a valid header value".into()),
    }
    let mut inbound = match client.session(request).await {
        Ok(r) => r.into_inner(),
        Err(status) if status.code() == tonic::Code::Unauthenticated => {
            if cfg.credential.get().is_some() {
                // Voided (the node enrolled again elsewhere, or the control plane lost
                // it): the next attempt enrolls again.
                tracing::error!(
                    reason = status.message(),
                    "the control plane refused this node's credential; enrolling again"
                );
                cfg.credential.forget();
            } else {
                tracing::error!(
                    reason = status.message(),
                    "the control plane refused this node's token"
                );
            }
            return SessionEnd::Failed("unauthenticated".into());
        }
        Err(status) if status.code() == tonic::Code::PermissionDenied => {
            tracing::error!(reason = status.message(), "this node is revoked");
            return SessionEnd::Failed(format!("refused: {}", status.message()));
        }
        Err(status) => return SessionEnd::Failed(format!("session refused: {status}")),
    };
    tracing::info!(endpoint = %at, node_id = %cfg.node_id, "connected to the control plane");

    let mut got_snapshot = false;
    let mut stats_tick = tokio::time::interval(cfg.stats_interval);
    stats_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // The newest snapshot, when it failed for a cause that may pass: tried again with
    // backoff until it applies, fails for good, or a newer one arrives.
    let mut retry: Option<(pb::Snapshot, Duration)> = None;
    let retry_at = tokio::time::sleep(Duration::ZERO);
    tokio::pin!(retry_at);
    let end = loop {
        tokio::select! {
            msg = inbound.message() => match msg {
                Ok(Some(pb::ControlMessage { msg: Some(control_message::Msg::Snapshot(snap)) })) => {
                    got_snapshot = true;
                    let (reply, transient) = apply(cfg, node, snap);
                    retry = transient.map(|snap| (snap, RETRY_MIN));
                    if let Some((_, wait)) = &retry {
                        retry_at.as_mut().reset(tokio::time::Instant::now() + *wait);
                    }
                    if tx.send(NodeMessage { msg: Some(reply) }).await.is_err() {
                        break "stream closed".to_string();
                    }
                }
                Ok(Some(_)) => {}
                Ok(None) => break "the control plane closed the stream".to_string(),
                Err(status) => break format!("stream error: {status}"),
            },
            _ = &mut retry_at, if retry.is_some() => {
                let (snap, wait) = retry.take().expect("guarded by the branch condition");
                let version = snap.version;
                let (reply, transient) = apply(cfg, node, snap);
                match transient {
                    // Still failing for the same kind of cause: the nack already says why.
                    Some(snap) => {
                        let wait = (wait * 2).min(RETRY_MAX);
                        tracing::debug!(version, retry_in = ?wait, "snapshot still cannot apply");
                        retry_at.as_mut().reset(tokio::time::Instant::now() + wait);
                        retry = Some((snap, wait));
                    }
                    None => {
                        if tx.send(NodeMessage { msg: Some(reply) }).await.is_err() {
                            break "stream closed".to_string();
                        }
                    }
                }
            }
            _ = stats_tick.tick() => {
                let stats = report::report(&node.plan.load(), crate::clock::unix_ms());
                // Never block the stream on stats: if the channel is full, skip this round.
                let _ = tx.try_send(NodeMessage { msg: Some(node_message::Msg::Stats(stats)) });
            }
        }
    };
    if got_snapshot {
        SessionEnd::AfterSnapshot(end)
    } else {
        SessionEnd::Failed(end)
    }
}
