//! The controller with several replicas: the leader writes each assignment to the store
//! and answers the commands other replicas leave there; a follower applies the stored
//! assignment to its own nodes, shows the stored rollout, and leaves its operators'
//! commands for the leader. Taking over picks up where the previous leader stopped.

use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use super::Controller;
use crate::clock::unix_ms;
use crate::rollout::assign::{Assignment, Reach};
use crate::rollout::record::{Rollout, RolloutState};
use crate::rollout::{Action, Command, RolloutError};
use crate::snapshot::{ChangeError, Published};
use crate::store::{AssignmentRow, Database, Store};

/// How long a follower waits for the leader to answer a command.
const ANSWER_WITHIN: Duration = Duration::from_secs(5);
/// Commands older than this are not acted on (their sender gave up).
const COMMAND_TTL_MS: i64 = 10_000;

/// The leader's answer to a command, as stored.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
enum Answer {
    Done { rollout: Box<Rollout> },
    NotFound,
    NotApplicable { state: RolloutState },
    Failed { message: String },
}

impl Answer {
    fn of(r: Result<Rollout, RolloutError>) -> Answer {
        match r {
            Ok(rollout) => Answer::Done {
                rollout: Box::new(rollout),
            },
            Err(RolloutError::NotFound(_)) => Answer::NotFound,
            Err(RolloutError::NotApplicable { state, .. }) => Answer::NotApplicable { state },
            Err(e) => Answer::Failed {
                message: e.to_string(),
            },
        }
    }

    fn into_result(self, version: u64) -> Result<Rollout, RolloutError> {
        match self {
            Answer::Done { rollout } => Ok(*rollout),
            Answer::NotFound => Err(RolloutError::NotFound(version)),
            Answer::NotApplicable { state } => Err(RolloutError::NotApplicable { version, state }),
            Answer::Failed { message } => Err(RolloutError::Leader(message)),
        }
    }
}

/// A follower's command: left in the store for the leader, answered when it answers (or
/// withdrawn after five seconds).
pub(super) fn forward(store: Store, cmd: Command) {
    tokio::spawn(async move {
        let answer = ask_leader(&store, cmd.version, cmd.action, &cmd.actor).await;
        let _ = cmd.reply.send(answer);
    });
}

async fn ask_leader(
    store: &Store,
    version: u64,
    action: Action,
    actor: &str,
) -> Result<Rollout, RolloutError> {
    let id = store
        .post_rollout_command(version, action.as_str(), actor, unix_ms())
        .await?;
    let deadline = Instant::now() + ANSWER_WITHIN;
    loop {
        if let Some(text) = store.rollout_command_answer(id).await? {
            let answer: Answer = serde_json::from_str(&text)?;
            return answer.into_result(version);
        }
        if Instant::now() >= deadline {
            store.withdraw_rollout_command(id).await?;
            return Err(RolloutError::NoLeader);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

impl Controller {
    /// Sends `assignment` to this replica's node sessions and, when leading, to the
    /// other replicas through the store.
    pub(super) async fn assign_all(&self, assignment: Arc<Assignment>) {
        let row = self.leading.then(|| AssignmentRow {
            newest: assignment.newest.snapshot.version,
            stable: assignment.stable.snapshot.version,
            reach: serde_json::to_string(&assignment.reach).unwrap_or_default(),
            leader: self.replica.clone(),
            updated_unix_ms: unix_ms(),
        });
        self.assign.send_replace(assignment);
        if let Some(row) = row {
            if let Err(e) = self.store.save_assignment(&row).await {
                tracing::warn!(error = %e, "recording the assignment for the other replicas");
            }
        }
    }

    /// The leader answers the commands other replicas left for it (there are none on
    /// SQLite, which one replica owns).
    pub(super) async fn serve_commands(&mut self) {
        if self.store.database() != Database::Postgres {
            return;
        }
        let now = unix_ms();
        let pending = match self
            .store
            .pending_rollout_commands(now - COMMAND_TTL_MS)
            .await
        {
            Ok(p) => p,
            Err(e) => return tracing::debug!(error = %e, "reading rollout commands"),
        };
        for c in pending {
            let answer = match Action::parse(&c.action) {
                Some(action) => Answer::of(self.on_command(c.version, action, &c.actor).await),
                None => Answer::Failed {
                    message: format!("unknown action {:?}", c.action),
                },
            };
            let text = serde_json::to_string(&answer).unwrap_or_default();
            if let Err(e) = self
                .store
                .answer_rollout_command(c.id, &text, now - 3_600_000)
                .await
            {
                tracing::warn!(error = %e, id = c.id, "answering a rollout command");
            }
        }
    }

    /// The published version `v`, loaded from the store unless already at hand.
    async fn published(&self, v: u64) -> Result<Arc<Published>, ChangeError> {
        let current = self.config.current();
        let assigned = self.assign.borrow().clone();
        for p in [&current, &assigned.newest, &assigned.stable, &self.stable] {
            if p.snapshot.version == v {
                return Ok(p.clone());
            }
        }
        Published::load(&self.store, v).await
    }

    /// A follower applies the leader's assignment and shows the stored rollout.
    pub(super) async fn follow(&mut self) {
        let read = async {
            let row = self.store.assignment().await?;
            let live = self.store.unfinished_rollout().await?;
            Ok::<_, ChangeError>((row, live))
        };
        let (row, live) = match read.await {
            Ok(r) => r,
            Err(e) => {
                if !self.follow_failing {
                    tracing::warn!(error = %e, "reading the leader's assignment; nodes keep what they run");
                }
                self.follow_failing = true;
                return;
            }
        };
        self.follow_failing = false;
        *self.live.lock().expect("rollout lock") =
            live.and_then(|body| serde_json::from_str::<Rollout>(&body).ok());
        // Before any leader wrote one, every node runs the newest version.
        let Some(row) = row else {
            let current = self.config.current();
            if self.assign.borrow().newest.snapshot.version != current.snapshot.version {
                self.stable = current.clone();
                self.assign.send_replace(Assignment::settled(current));
            }
            return;
        };
        let reach: Reach = match serde_json::from_str(&row.reach) {
            Ok(r) => r,
            Err(e) => return tracing::warn!(error = %e, "the stored assignment does not parse"),
        };
        let now = self.assign.borrow().clone();
        if now.newest.snapshot.version == row.newest
            && now.stable.snapshot.version == row.stable
            && now.reach == reach
        {
            return;
        }
        let (newest, stable) = match (
            self.published(row.newest).await,
            self.published(row.stable).await,
        ) {
            (Ok(n), Ok(s)) => (n, s),
            (Err(e), _) | (_, Err(e)) => {
                return tracing::warn!(error = %e, "loading the versions the leader assigned")
            }
        };
        tracing::debug!(newest = row.newest, stable = row.stable, leader = %row.leader, "applying the leader's assignment");
        self.stable = stable.clone();
        self.assign.send_replace(Arc::new(Assignment {
            newest,
            stable,
            reach,
        }));
    }

    /// Becomes the leader: resumes the rollout the store says is in progress, or settles
    /// the fleet where the previous leader left it and handles any version it did not.
    pub(super) async fn take_over(&mut self) -> Result<(), ChangeError> {
        self.leading = true;
        self.active = None;
        let current = self.config.current();
        let row = self.store.assignment().await?;
        self.stable = match &row {
            Some(r) => self.published(r.stable).await?,
            None => current.clone(),
        };
        tracing::info!(
            stable = self.stable.snapshot.version,
            newest = current.snapshot.version,
            "leading rollouts"
        );
        if let Some(body) = self.store.unfinished_rollout().await? {
            match serde_json::from_str::<Rollout>(&body) {
                Ok(record) => {
                    self.resume_stored(record, current.clone()).await;
                    if self.active.is_some() {
                        return Ok(());
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "a stored rollout record does not parse; ignored")
                }
            }
        }
        // The newest version's rollout, if it had one, ended: completed, it is what every
        // node runs; rolled back or aborted, the stable version stays.
        match self.get_stored(current.snapshot.version).await {
            Some(r) if r.state == RolloutState::Completed => self.settle(current).await,
            Some(_) => self.publish().await,
            None => {
                self.publish().await;
                self.on_version(current).await;
            }
        }
        Ok(())
    }

    /// Another replica leads from now on: this one follows what it writes.
    pub(super) fn step_down(&mut self) {
        self.leading = false;
        if let Some(a) = self.active.take() {
            tracing::warn!(
                version = a.record.version,
                "no longer leading; the rollout continues on the replica that leads"
            );
        }
    }
}
