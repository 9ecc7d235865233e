//! The record of one version's rollout, as the REST API shows it and the store keeps it:
//! the policy it follows, each stage's nodes and gate reading, its state and why it
//! stopped.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::gates::GateReading;
use super::policy::{RolloutPolicy, Select};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum RolloutState {
    /// Advancing stage by stage.
    Running,
    /// Held at its stage by an operator (its gates still watched).
    Paused,
    /// Every stage passed (or promoted): the version runs on every node.
    Completed,
    /// A gate failed: the nodes went back to the previous version.
    RolledBack,
    /// Stopped by an operator: the nodes went back to the previous version.
    Aborted,
    /// A newer version was committed before it finished.
    Superseded,
}

impl RolloutState {
    pub fn as_str(self) -> &'static str {
        match self {
            RolloutState::Running => "running",
            RolloutState::Paused => "paused",
            RolloutState::Completed => "completed",
            RolloutState::RolledBack => "rolled_back",
            RolloutState::Aborted => "aborted",
            RolloutState::Superseded => "superseded",
        }
    }

    pub fn is_finished(self) -> bool {
        !matches!(self, RolloutState::Running | RolloutState::Paused)
    }
}

impl std::fmt::Display for RolloutState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct StageRecord {
    pub name: String,
    pub select: Select,
    pub bake_ms: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub started_unix_ms: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub passed_unix_ms: Option<i64>,
    /// Connected nodes the rollout had reached during this stage (earlier stages' too).
    pub nodes: Vec<String>,
    /// The gates as last read during this stage.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reading: Option<GateReading>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Rollout {
    /// The version being rolled out.
    pub version: u64,
    /// The version the fleet ran before, which nodes not reached keep running.
    pub from_version: u64,
    pub state: RolloutState,
    /// The stage in progress (or the last one reached), from 0.
    pub stage: usize,
    pub stages: Vec<StageRecord>,
    /// Why it stopped: the failed gate, who aborted or promoted it, what superseded it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The version committed to take the configuration back (rolled back or aborted).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rollback_version: Option<u64>,
    /// Milliseconds the current stage has baked (while running).
    pub baked_ms: u64,
    pub started_unix_ms: i64,
    pub updated_unix_ms: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub finished_unix_ms: Option<i64>,
    /// The policy revision it follows, and the policy as it was then.
    pub policy_revision: u64,
    pub policy: RolloutPolicy,
    /// The control-plane replica running it (the one leading rollouts).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub leader: Option<String>,
}

impl Rollout {
    pub fn new(
        version: u64,
        from_version: u64,
        policy: RolloutPolicy,
        revision: u64,
        now: i64,
    ) -> Rollout {
        Rollout {
            version,
            from_version,
            state: RolloutState::Running,
            stage: 0,
            stages: policy
                .stages
                .iter()
                .map(|s| StageRecord {
                    name: s.name.clone(),
                    select: s.select.clone(),
                    bake_ms: s.bake_ms(),
                    started_unix_ms: None,
                    passed_unix_ms: None,
                    nodes: Vec::new(),
                    reading: None,
                })
                .collect(),
            reason: None,
            rollback_version: None,
            baked_ms: 0,
            started_unix_ms: now,
            updated_unix_ms: now,
            finished_unix_ms: None,
            policy_revision: revision,
            policy,
            leader: None,
        }
    }
}
