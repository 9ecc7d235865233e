//! Live view of the fleet: which nodes have an open stream, and their latest stats.
//! Durable facts (first/last seen, applied version, last nack) are in the store; this
//! holds what only matters while the process runs.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use sluice_proto::v1 as pb;

#[derive(Debug, Clone)]
pub struct LiveNode {
    /// Distinguishes a node's successive streams; a newer stream replaces an older one.
    pub session: u64,
    /// The labels the node announced.
    pub labels: BTreeMap<String, String>,
    pub connected_unix_ms: i64,
    /// The version the node serves, as of its hello or latest ack. Kept here so the fleet
    /// view converges as soon as an ack arrives, before the store has recorded it.
    pub applied_version: u64,
    /// The newest version the node rejected, and why.
    pub last_nack: Option<(u64, String)>,
    /// The digest of the snapshot the node says it runs (hello, ack, stats).
    pub applied_digest: Vec<u8>,
    /// The newest version not sent to the node, and the features it lacks for it.
    pub withheld: Option<(u64, Vec<&'static str>)>,
    /// The snapshot features the node announced.
    pub features: Vec<String>,
    pub last_seen_unix_ms: i64,
    pub stats: Option<pb::Stats>,
}

/// A node's answer to a snapshot.
#[derive(Debug, Clone, Copy)]
pub enum Reply<'a> {
    Ack { version: u64, digest: &'a [u8] },
    Nack { version: u64, reason: &'a str },
}

pub struct Registry {
    next_session: AtomicU64,
    /// Nodes revoked while this process runs: their streams end at their next check.
    revoked: Mutex<std::collections::HashSet<String>>,
    live: Mutex<HashMap<String, LiveNode>>,
    replies: tokio::sync::watch::Sender<u64>,
}

impl Default for Registry {
    fn default() -> Self {
        Self {
            next_session: AtomicU64::new(0),
            revoked: Mutex::default(),
            live: Mutex::default(),
            replies: tokio::sync::watch::channel(0).0,
        }
    }
}

impl Registry {
    /// Registers a new stream for `node_id` and returns its session number.
    pub fn connect(
        &self,
        node_id: &str,
        labels: BTreeMap<String, String>,
        (applied_version, applied_digest, features): (u64, Vec<u8>, Vec<String>),
        now_ms: i64,
    ) -> u64 {
        let session = self.next_session.fetch_add(1, Ordering::Relaxed) + 1;
        self.live.lock().expect("registry lock").insert(
            node_id.to_string(),
            LiveNode {
                session,
                labels,
                connected_unix_ms: now_ms,
                applied_version,
                last_nack: None,
                applied_digest,
                withheld: None,
                features,
                last_seen_unix_ms: now_ms,
                stats: None,
            },
        );
        session
    }

    /// Records a reply from the current stream of `node_id`: an ack (with the digest of
    /// what the node now runs) or a nack.
    pub fn record_reply(&self, node_id: &str, session: u64, reply: Reply<'_>, now_ms: i64) {
        let mut live = self.live.lock().expect("registry lock");
        if let Some(n) = live.get_mut(node_id).filter(|n| n.session == session) {
            match reply {
                Reply::Ack { version, digest } => {
                    n.applied_version = version;
                    n.applied_digest = digest.to_vec();
                }
                Reply::Nack { version, reason } => {
                    n.last_nack = Some((version, reason.to_string()));
                }
            }
            n.last_seen_unix_ms = now_ms;
        }
        drop(live);
        self.replies.send_modify(|n| *n += 1);
    }

    /// Changes every time a node acks or nacks (for writes that wait until live).
    pub fn replies(&self) -> tokio::sync::watch::Receiver<u64> {
        self.replies.subscribe()
    }

    /// Records that `version` was not sent to the node for lacking `missing` (empty:
    /// the version was sent).
    pub fn record_withheld(
        &self,
        node_id: &str,
        session: u64,
        version: u64,
        missing: Vec<&'static str>,
    ) {
        let mut live = self.live.lock().expect("registry lock");
        if let Some(n) = live.get_mut(node_id).filter(|n| n.session == session) {
            n.withheld = (!missing.is_empty()).then_some((version, missing));
        }
    }

    /// Ends the node's stream (within a second) and keeps any new one out.
    pub fn revoke(&self, node_id: &str) {
        self.revoked
            .lock()
            .expect("registry lock")
            .insert(node_id.to_string());
    }

    pub fn is_revoked(&self, node_id: &str) -> bool {
        self.revoked
            .lock()
            .expect("registry lock")
            .contains(node_id)
    }

    /// Whether `session` is still the current stream of `node_id`.
    pub fn is_current(&self, node_id: &str, session: u64) -> bool {
        self.live
            .lock()
            .expect("registry lock")
            .get(node_id)
            .is_some_and(|n| n.session == session)
    }

    /// Removes the node if `session` is still its current stream.
    pub fn disconnect(&self, node_id: &str, session: u64) {
        let mut live = self.live.lock().expect("registry lock");
        if live.get(node_id).is_some_and(|n| n.session == session) {
            live.remove(node_id);
        }
        drop(live);
        // A node gone is one fewer to wait for.
        self.replies.send_modify(|n| *n += 1);
    }

    pub fn record_stats(&self, node_id: &str, session: u64, stats: pb::Stats) {
        let mut live = self.live.lock().expect("registry lock");
        if let Some(n) = live.get_mut(node_id).filter(|n| n.session == session) {
            n.last_seen_unix_ms = stats.unix_ms.max(n.last_seen_unix_ms);
            if !stats.applied_digest.is_empty() {
                n.applied_digest.clone_from(&stats.applied_digest);
            }
            n.stats = Some(stats);
        }
    }

    pub fn get(&self, node_id: &str) -> Option<LiveNode> {
        self.live
            .lock()
            .expect("registry lock")
            .get(node_id)
            .cloned()
    }

    /// Every node with an open stream, by id.
    pub fn all(&self) -> Vec<(String, LiveNode)> {
        let live = self.live.lock().expect("registry lock");
        let mut nodes: Vec<_> = live.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        nodes.sort_by(|a, b| a.0.cmp(&b.0));
        nodes
    }

    pub fn connected_count(&self) -> usize {
        self.live.lock().expect("registry lock").len()
    }
}
