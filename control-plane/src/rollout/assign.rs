//! Which version each node should run. Outside a rollout every node runs the newest
//! version; during one, the nodes the rollout has reached run the new version and the
//! others the stable one (the version the fleet ran before). Node sessions watch the
//! [`Assignment`] and send their node whatever it says.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use crate::snapshot::Published;

/// The nodes a rollout has reached.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Reach {
    /// Chosen by id (share stages, and label stages' nodes as they were met).
    pub nodes: BTreeSet<String>,
    /// Label selectors of the stages started: nodes that connect later and match them are
    /// reached too.
    pub labels: Vec<BTreeMap<String, String>>,
    /// Every node.
    pub all: bool,
}

impl Reach {
    pub fn includes(&self, node_id: &str, labels: &BTreeMap<String, String>) -> bool {
        self.all
            || self.nodes.contains(node_id)
            || self
                .labels
                .iter()
                .any(|want| want.iter().all(|(k, v)| labels.get(k) == Some(v)))
    }
}

/// What the fleet should run now.
#[derive(Debug, Clone)]
pub struct Assignment {
    /// The newest committed version.
    pub newest: Arc<Published>,
    /// The version nodes the rollout has not reached run (the newest, outside a rollout).
    pub stable: Arc<Published>,
    pub reach: Reach,
}

impl Assignment {
    /// Every node on `p`.
    pub fn settled(p: Arc<Published>) -> Arc<Assignment> {
        Arc::new(Assignment {
            newest: p.clone(),
            stable: p,
            reach: Reach {
                all: true,
                ..Reach::default()
            },
        })
    }

    /// The version the node `node_id` with `labels` should run.
    pub fn target(&self, node_id: &str, labels: &BTreeMap<String, String>) -> &Arc<Published> {
        if self.reach.includes(node_id, labels) {
            &self.newest
        } else {
            &self.stable
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_proto::v1 as pb;

    fn published(version: u64) -> Arc<Published> {
        Arc::new(Published {
            snapshot: pb::Snapshot {
                version,
                ..Default::default()
            },
            ..Default::default()
        })
    }

    #[test]
    fn reached_nodes_get_the_new_version_the_others_the_stable_one() {
        let settled = Assignment::settled(published(3));
        assert_eq!(settled.target("any", &BTreeMap::new()).snapshot.version, 3);
        let a = Assignment {
            newest: published(5),
            stable: published(4),
            reach: Reach {
                nodes: ["n1".to_string()].into(),
                labels: vec![[("zone".to_string(), "canary".to_string())].into()],
                all: false,
            },
        };
        let canary: BTreeMap<_, _> = [("zone".to_string(), "canary".to_string())].into();
        assert_eq!(a.target("n1", &BTreeMap::new()).snapshot.version, 5);
        assert_eq!(a.target("late", &canary).snapshot.version, 5);
        assert_eq!(a.target("n2", &BTreeMap::new()).snapshot.version, 4);
    }
}
