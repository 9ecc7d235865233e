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
    pub stats: Option<pb::Stats>,
}

#[derive(Default)]
pub struct Registry {
    next_session: AtomicU64,
    live: Mutex<HashMap<String, LiveNode>>,
}

impl Registry {
    /// Registers a new stream for `node_id` and returns its session number.
    pub fn connect(&self, node_id: &str, now_ms: i64) -> u64 {
        let session = self.next_session.fetch_add(1, Ordering::Relaxed) + 1;
        self.live.lock().expect("registry lock").insert(
            node_id.to_string(),
            LiveNode {
                session,
                connected_unix_ms: now_ms,
                stats: None,
            },
        );
        session
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

    pub fn connected_count(&self) -> usize {
        self.live.lock().expect("registry lock").len()
    }
}
