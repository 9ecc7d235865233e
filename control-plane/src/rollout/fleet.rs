//! The fleet as rollouts see it: every connected node with its labels, the version it
//! runs, its last nack and its latest stats report (what the gates read). Nodes on this
//! replica come from the live registry; nodes on other replicas (PostgreSQL) from what
//! their replica last recorded — acks and nacks as they arrive, reports with each
//! heartbeat.

use std::collections::BTreeMap;

use prost::Message as _;
use sluice_proto::v1 as pb;

use super::gates::{self, Totals};
use crate::registry::{LiveNode, Registry};
use crate::store::{Database, RemoteNode, Store, StoreError};

/// One connected node.
#[derive(Debug, Clone, Default)]
pub struct Member {
    pub labels: BTreeMap<String, String>,
    pub applied_version: u64,
    pub last_nack: Option<(u64, String)>,
    pub stats: Option<pb::Stats>,
    /// The newest version not sent to it for lacking a feature.
    pub withheld: Option<u64>,
}

impl Member {
    pub fn totals(&self) -> Totals {
        self.stats.as_ref().map(Totals::of).unwrap_or_default()
    }

    /// Whether its latest report was made running the snapshot with `digest` (version
    /// `version`; a report without a digest goes by the version the node acked).
    pub fn reports_on(&self, digest: &[u8], version: u64) -> bool {
        match &self.stats {
            Some(s) if !s.applied_digest.is_empty() => s.applied_digest == digest,
            _ => self.applied_version == version,
        }
    }

    /// Checked servers it sees down, and checked servers in all.
    pub fn servers_down(&self) -> (u64, u64) {
        self.stats
            .as_ref()
            .map(gates::servers_down)
            .unwrap_or((0, 0))
    }

    fn local(n: LiveNode) -> Member {
        Member {
            labels: n.labels,
            applied_version: n.applied_version,
            last_nack: n.last_nack,
            stats: n.stats,
            withheld: n.withheld.map(|(v, _)| v),
        }
    }

    fn remote(n: RemoteNode) -> Member {
        Member {
            labels: serde_json::from_str(&n.labels).unwrap_or_default(),
            applied_version: n.applied_version,
            last_nack: n.last_nack,
            stats: n
                .stats
                .and_then(|bytes| pb::Stats::decode(bytes.as_slice()).ok()),
            withheld: n.withheld_version,
        }
    }
}

/// This replica's connected nodes, by id.
pub fn members_here(registry: &Registry) -> Vec<(String, Member)> {
    registry
        .all()
        .into_iter()
        .map(|(id, n)| (id, Member::local(n)))
        .collect()
}

/// Every connected node, by id: this replica's own, and on PostgreSQL those other
/// replicas heard from since `fresh_since_ms` (a node on two replicas counts as this
/// one's).
pub async fn members(
    registry: &Registry,
    store: &Store,
    replica: &str,
    fresh_since_ms: i64,
) -> Result<Vec<(String, Member)>, StoreError> {
    let mut all: BTreeMap<String, Member> = members_here(registry).into_iter().collect();
    if store.database() == Database::Postgres {
        for n in store.nodes_elsewhere(replica, fresh_since_ms).await? {
            if !all.contains_key(&n.node_id) {
                all.insert(n.node_id.clone(), Member::remote(n));
            }
        }
    }
    Ok(all.into_iter().collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_remote_node_reads_as_its_replica_recorded_it() {
        let stats = pb::Stats {
            frontends: vec![pb::FrontendStats {
                total_requests: 40,
                responses_by_class: vec![0, 30, 0, 0, 10],
                ..Default::default()
            }],
            ..Default::default()
        };
        let m = Member::remote(RemoteNode {
            node_id: "n".into(),
            labels: r#"{"zone":"a"}"#.into(),
            applied_version: 3,
            last_nack: None,
            stats: Some(stats.encode_to_vec()),
            withheld_version: Some(4),
        });
        assert_eq!(
            m.totals(),
            Totals {
                requests: 40,
                errors: 10
            }
        );
        assert_eq!(m.labels.get("zone").map(String::as_str), Some("a"));
        assert_eq!(m.withheld, Some(4));
        // Before its first report: nothing counted, nothing down.
        let quiet = Member::remote(RemoteNode {
            node_id: "q".into(),
            labels: "{}".into(),
            applied_version: 3,
            last_nack: None,
            stats: None,
            withheld_version: None,
        });
        assert_eq!(
            (quiet.totals(), quiet.servers_down()),
            (Totals::default(), (0, 0))
        );
        // Which version a report was made on: by its digest, else by the version acked.
        let mut on = m.clone();
        on.stats.as_mut().unwrap().applied_digest = vec![7; 32];
        assert!(on.reports_on(&[7; 32], 9));
        assert!(!on.reports_on(&[8; 32], 3));
        assert!(m.reports_on(&[8; 32], 3) && !m.reports_on(&[8; 32], 4));
    }
}
