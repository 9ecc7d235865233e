//! Live view of the fleet: which nodes have an open stream, and their latest stats.
//! Durable facts (first/last seen, applied version, last nack) are in the store; this
//! holds what only matters while the process runs.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use sluice_proto::v1 as pb;

#[derive(Debug, Clone)]
pub struct LiveNode {
    /// Distinguishes a node's successive streams; a newer stream replaces an older one.
    pub session: u64,
    pub connected_unix_ms: i64,
    /// The version the node serves, as of its hello or latest ack. Kept here so the fleet
    /// view converges as soon as an ack arrives, before the store has recorded it.
    pub applied_version: u64,
    /// The newest version the node rejected, and why.
    pub last_nack: Option<(u64, String)>,
    pub last_seen_unix_ms: i64,
    pub stats: Option<pb::Stats>,
}

#[derive(Default)]
pub struct Registry {
    next_session: AtomicU64,
    live: Mutex<HashMap<String, LiveNode>>,
}

impl Registry {
    /// Registers a new stream for `node_id` and returns its session number.
    pub fn connect(&self, node_id: &str, applied_version: u64, now_ms: i64) -> u64 {
        let session = self.next_session.fetch_add(1, Ordering::Relaxed) + 1;
        self.live.lock().expect("registry lock").insert(
            node_id.to_string(),
            LiveNode {
                session,
                connected_unix_ms: now_ms,
                applied_version,
                last_nack: None,
                last_seen_unix_ms: now_ms,
                stats: None,
            },
        );
        session
    }

    /// Records an ack (`nack` None) or a nack from the current stream of `node_id`.
    pub fn record_reply(
        &self,
        node_id: &str,
        session: u64,
        version: u64,
        nack: Option<&str>,
        now_ms: i64,
    ) {
        let mut live = self.live.lock().expect("registry lock");
        if let Some(n) = live.get_mut(node_id).filter(|n| n.session == session) {
            match nack {
                None => n.applied_version = version,
                Some(reason) => n.last_nack = Some((version, reason.to_string())),
            }
            n.last_seen_unix_ms = now_ms;
        }
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
    }

    pub fn record_stats(&self, node_id: &str, session: u64, stats: pb::Stats) {
        let mut live = self.live.lock().expect("registry lock");
        if let Some(n) = live.get_mut(node_id).filter(|n| n.session == session) {
            n.last_seen_unix_ms = stats.unix_ms.max(n.last_seen_unix_ms);
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
