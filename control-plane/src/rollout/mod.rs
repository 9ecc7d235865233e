//! Staged rollout: a new version goes to the fleet a stage at a time under the stored
//! rollout policy ([`policy`]), each stage baking while its gates ([`gates`]) hold; a
//! failed gate (or an operator's abort) sends every node back to the version the fleet
//! ran before and commits that configuration again as a new version, so the history
//! says what happened and the next change builds on what runs. Without a policy every
//! version goes to every node at once.
//!
//! One task ([`controller::Controller`]) owns the state: it learns each committed version,
//! reads node replies and stats ([`fleet`]), and publishes the [`assign::Assignment`]
//! node sessions follow. With several control-plane replicas on one database, the
//! replica holding the lease ([`lease`]) leads: it decides for the whole fleet and writes
//! the assignment to the store; the others apply what it wrote to their own nodes and
//! pass operators' commands to it through the store. [`Rollouts`] is the handle the REST API uses: the rollout in
//! progress as of the last tick, records from the store, and commands (pause, resume,
//! promote, abort) answered by the task.

pub mod assign;
pub mod controller;
pub mod fleet;
pub mod gates;
pub mod lease;
pub mod policy;
pub mod record;

use std::sync::{Arc, Mutex};

use tokio::sync::{mpsc, oneshot, watch};

use crate::store::{Store, StoreError};
use assign::Assignment;
pub use record::{Rollout, RolloutState};

/// What an operator can do to a rollout in progress.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Hold it at its stage (the gates are still watched).
    Pause,
    Resume,
    /// Send the version to every node now and finish.
    Promote,
    /// Send every node back to the previous version.
    Abort,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Pause => "pause",
            Action::Resume => "resume",
            Action::Promote => "promote",
            Action::Abort => "abort",
        }
    }

    pub fn parse(s: &str) -> Option<Action> {
        Some(match s {
            "pause" => Action::Pause,
            "resume" => Action::Resume,
            "promote" => Action::Promote,
            "abort" => Action::Abort,
            _ => return None,
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RolloutError {
    #[error("no rollout of version {0}")]
    NotFound(u64),
    #[error("the rollout of version {version} is {state}")]
    NotApplicable { version: u64, state: RolloutState },
    #[error("the rollout controller has stopped")]
    Stopped,
    #[error(
        "no control-plane replica leads rollouts right now (it changes within seconds); retry"
    )]
    NoLeader,
    #[error("the leading replica failed: {0}")]
    Leader(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("a stored rollout record does not parse")]
    Corrupt(#[from] serde_json::Error),
}

pub(crate) struct Command {
    version: u64,
    action: Action,
    actor: String,
    reply: oneshot::Sender<Result<Rollout, RolloutError>>,
}

/// The API's handle on rollouts.
#[derive(Clone)]
pub struct Rollouts {
    assignments: watch::Receiver<Arc<Assignment>>,
    commands: mpsc::Sender<Command>,
    /// The rollout in progress, as of the controller's last tick.
    live: Arc<Mutex<Option<Rollout>>>,
    store: Store,
}

impl Rollouts {
    /// What each node should run, as it changes.
    pub fn assignments(&self) -> watch::Receiver<Arc<Assignment>> {
        self.assignments.clone()
    }

    /// What each node should run now.
    pub fn assignment(&self) -> Arc<Assignment> {
        self.assignments.borrow().clone()
    }

    /// The rollout in progress, if any.
    pub fn in_progress(&self) -> Option<Rollout> {
        self.live.lock().expect("rollout lock").clone()
    }

    /// The rollout of `version`, in progress or finished.
    pub async fn get(&self, version: u64) -> Result<Option<Rollout>, RolloutError> {
        if let Some(r) = self.in_progress().filter(|r| r.version == version) {
            return Ok(Some(r));
        }
        match self.store.rollout(version).await? {
            Some(body) => Ok(Some(serde_json::from_str(&body)?)),
            None => Ok(None),
        }
    }

    /// The newest rollouts, newest first (the one in progress as of now).
    pub async fn list(&self, limit: u32) -> Result<Vec<Rollout>, RolloutError> {
        let live = self.in_progress();
        let mut out = Vec::new();
        for body in self.store.rollouts(limit).await? {
            let r: Rollout = serde_json::from_str(&body)?;
            match &live {
                Some(l) if l.version == r.version => out.push(l.clone()),
                _ => out.push(r),
            }
        }
        Ok(out)
    }

    /// Pauses, resumes, promotes or aborts the rollout of `version`.
    pub async fn command(
        &self,
        version: u64,
        action: Action,
        actor: &str,
    ) -> Result<Rollout, RolloutError> {
        let (reply, answer) = oneshot::channel();
        let cmd = Command {
            version,
            action,
            actor: actor.to_string(),
            reply,
        };
        self.commands
            .send(cmd)
            .await
            .map_err(|_| RolloutError::Stopped)?;
        answer.await.map_err(|_| RolloutError::Stopped)?
    }
}
