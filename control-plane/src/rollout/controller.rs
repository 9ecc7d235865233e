//! The task that runs rollouts: it starts one when a version is committed under a policy,
//! moves it stage by stage as bake times pass with every gate holding, rolls it back on
//! the first failed gate, obeys operators' commands, and publishes the resulting
//! [`Assignment`]. Its record is saved at every change of state (not at every reading),
//! and a control plane that restarts mid-rollout resumes it at the same stage, that
//! stage's bake time starting over.
//!
//! Only the replica that leads ([`super::lease`]) decides; the others follow what it
//! writes to the store ([`replicas`]).

mod replicas;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sha2::Digest as _;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use super::assign::{Assignment, Reach};
use super::fleet::{self, Member};
use super::gates::{self, NodeReading, Totals};
use super::policy::RolloutPolicy;
use super::record::{Rollout, RolloutState};
use super::{Action, Command, RolloutError, Rollouts};
use crate::clock::unix_ms;
use crate::config::ConfigDocument;
use crate::events;
use crate::registry::Registry;
use crate::snapshot::{ChangeError, ConfigService, Published};
use crate::store::{Database, Store};

/// How often gates are read and bake times checked.
const TICK: Duration = Duration::from_millis(500);

/// The actor recorded for what the controller does by itself.
pub const ACTOR: &str = "rollout";

/// A rollout in progress.
struct Active {
    record: Rollout,
    candidate: Arc<Published>,
    reach: Reach,
    /// Each node's counters when the stage started (or when first seen in it).
    start: HashMap<String, Totals>,
    /// Bake time accumulated up to the last pause, and since when it runs again (None:
    /// paused).
    baked: Duration,
    running_since: Option<Instant>,
}

impl Active {
    fn baked(&self) -> Duration {
        self.baked + self.running_since.map_or(Duration::ZERO, |t| t.elapsed())
    }

    fn version(&self) -> u64 {
        self.record.version
    }
}

pub struct Controller {
    config: Arc<ConfigService>,
    store: Store,
    registry: Arc<Registry>,
    assign: watch::Sender<Arc<Assignment>>,
    live: Arc<Mutex<Option<Rollout>>>,
    commands: mpsc::Receiver<Command>,
    /// The version the fleet runs outside the rollout.
    stable: Arc<Published>,
    active: Option<Active>,
    /// A version this task committed to roll back: it goes to every node at once.
    rollback_commit: Option<u64>,
    /// This replica's name, and how long a node on another replica counts as connected
    /// after it was last heard of.
    replica: String,
    stale_ms: i64,
    /// Whether this replica leads, as the lease says and as this task acts.
    leads: watch::Receiver<bool>,
    leading: bool,
    /// The follower's last read of the store failed (logged once until it works again).
    follow_failing: bool,
}

/// A node's position in a share-of-fleet selection: stable for a version, spread across
/// versions.
fn rank(node_id: &str, version: u64) -> [u8; 32] {
    let mut h = sha2::Sha256::new();
    h.update(version.to_be_bytes());
    h.update(node_id.as_bytes());
    h.finalize().into()
}

/// Where the controller runs: this replica's name, the stale deadline of nodes, and
/// whether it leads.
pub struct Seat {
    pub replica: String,
    pub stale_after: Duration,
    pub leads: watch::Receiver<bool>,
}

/// Builds the controller and its handle. A leader resumes a rollout the store says was in
/// progress, if its version is still the newest; a follower starts from the assignment
/// the leader wrote.
pub async fn start(
    config: Arc<ConfigService>,
    store: Store,
    registry: Arc<Registry>,
    seat: Seat,
) -> Result<(Rollouts, Controller), ChangeError> {
    let newest = config.current();
    let (assign, assignments) = watch::channel(Assignment::settled(newest.clone()));
    let (tx, commands) = mpsc::channel(16);
    let live = Arc::new(Mutex::new(None));
    let mut c = Controller {
        config,
        store: store.clone(),
        registry,
        assign,
        live: live.clone(),
        commands,
        stable: newest.clone(),
        active: None,
        rollback_commit: None,
        replica: seat.replica,
        stale_ms: seat.stale_after.as_millis() as i64,
        leading: false,
        leads: seat.leads,
        follow_failing: false,
    };
    if *c.leads.borrow_and_update() {
        c.take_over().await?;
    } else {
        c.follow().await;
    }
    let handle = Rollouts {
        assignments,
        commands: tx,
        live,
        store,
    };
    Ok((handle, c))
}

impl Controller {
    /// Runs until shutdown.
    pub async fn run(
        mut self,
        mut versions: watch::Receiver<Arc<Published>>,
        mut shutdown: watch::Receiver<bool>,
    ) {
        versions.borrow_and_update();
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // A follower hears of each assignment the leader writes at once (PostgreSQL).
        let mut listener = match self.store.assignment_listener().await {
            Ok(l) => l,
            Err(e) => {
                tracing::warn!(error = %e, "no assignment notifications; checking every tick");
                None
            }
        };
        loop {
            let heard = async {
                match listener.as_mut() {
                    Some(l) => l.try_recv().await.map(|_| ()),
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                changed = versions.changed() => {
                    if changed.is_err() {
                        break;
                    }
                    let p = versions.borrow_and_update().clone();
                    if self.leading {
                        self.on_version(p).await;
                    }
                }
                Some(cmd) = self.commands.recv() => {
                    if self.leading {
                        let answer = self.on_command(cmd.version, cmd.action, &cmd.actor).await;
                        let _ = cmd.reply.send(answer);
                    } else {
                        replicas::forward(self.store.clone(), cmd);
                    }
                }
                _ = tick.tick() => {
                    if self.leading {
                        self.serve_commands().await;
                        self.on_tick().await;
                    } else {
                        self.follow().await;
                    }
                }
                r = heard => match r {
                    Err(e) => {
                        tracing::warn!(error = %e, "assignment notifications lost; checking every tick");
                        listener = None;
                    }
                    Ok(()) if !self.leading => self.follow().await,
                    Ok(()) => {}
                },
                Ok(()) = self.leads.changed() => {
                    let leads = *self.leads.borrow_and_update();
                    if leads && !self.leading {
                        if let Err(e) = self.take_over().await {
                            tracing::error!(error = %e, "taking over rollouts");
                        }
                    } else if !leads && self.leading {
                        self.step_down();
                    }
                }
                _ = shutdown.changed() => break,
            }
        }
    }

    async fn resume_stored(&mut self, mut record: Rollout, newest: Arc<Published>) {
        if record.version != newest.snapshot.version {
            record.reason = Some("a newer version was committed".into());
            self.finish_record(&mut record, RolloutState::Superseded)
                .await;
            return;
        }
        let stable = match Published::load(&self.store, record.from_version).await {
            Ok(s) => s,
            Err(e) => {
                record.reason = Some(format!("cannot resume: {e}"));
                self.finish_record(&mut record, RolloutState::Superseded)
                    .await;
                return;
            }
        };
        let mut reach = Reach::default();
        for s in &record.stages[..=record.stage.min(record.stages.len() - 1)] {
            reach.nodes.extend(s.nodes.iter().cloned());
            if let Some(l) = &s.select.labels {
                reach.labels.push(l.clone());
            }
            reach.all |= s.select.is_all();
        }
        let paused = record.state == RolloutState::Paused;
        tracing::info!(
            version = record.version,
            stage = record.stage,
            "resuming a rollout"
        );
        self.stable = stable;
        self.active = Some(Active {
            record,
            candidate: newest,
            reach,
            start: HashMap::new(),
            baked: Duration::ZERO,
            running_since: (!paused).then(Instant::now),
        });
        self.publish().await;
    }

    /// Makes what the fleet should run known to node sessions, the API and the other
    /// replicas.
    async fn publish(&self) {
        let assignment = match &self.active {
            Some(a) => Arc::new(Assignment {
                newest: a.candidate.clone(),
                stable: self.stable.clone(),
                reach: a.reach.clone(),
            }),
            None => Assignment::settled(self.stable.clone()),
        };
        self.assign_all(assignment).await;
        self.publish_live();
    }

    fn publish_live(&self) {
        let live = self.active.as_ref().map(|a| {
            let mut r = a.record.clone();
            r.baked_ms = a.baked().as_millis() as u64;
            r.leader = Some(self.replica.clone());
            r
        });
        *self.live.lock().expect("rollout lock") = live;
    }

    async fn save(&self, record: &Rollout) {
        let mut record = record.clone();
        record.leader = Some(self.replica.clone());
        let body = match serde_json::to_string(&record) {
            Ok(b) => b,
            Err(e) => return tracing::error!(error = %e, "encoding a rollout record"),
        };
        if let Err(e) = self
            .store
            .save_rollout(record.version, record.state.as_str(), &body, unix_ms())
            .await
        {
            tracing::error!(error = %e, version = record.version, "saving a rollout record");
        }
    }

    async fn finish_record(&self, record: &mut Rollout, state: RolloutState) {
        let now = unix_ms();
        record.state = state;
        record.updated_unix_ms = now;
        record.finished_unix_ms = Some(now);
        self.save(record).await;
    }

    async fn event(&self, kind: &str, version: u64, detail: String, actor: &str) {
        let mut e = events::event(kind, detail);
        e.version = Some(version);
        e.actor = Some(actor.to_string());
        events::record(&self.store, e).await;
    }

    /// The rollout policy in force, with its revision.
    async fn policy(&self) -> Option<(u64, RolloutPolicy)> {
        match self.store.rollout_policy().await {
            Ok(Some(row)) => {
                let body = row.body?;
                match RolloutPolicy::parse(body.as_bytes()) {
                    Ok(p) => Some((row.revision, p)),
                    Err(e) => {
                        tracing::error!(
                            ?e,
                            "the stored rollout policy does not parse; versions go to every node"
                        );
                        None
                    }
                }
            }
            Ok(None) => None,
            Err(e) => {
                tracing::error!(error = %e, "reading the rollout policy; this version goes to every node");
                None
            }
        }
    }

    async fn on_version(&mut self, p: Arc<Published>) {
        let version = p.snapshot.version;
        if version <= self.assign.borrow().newest.snapshot.version {
            return;
        }
        let rollback = self.rollback_commit == Some(version);
        if let Some(mut a) = self.active.take() {
            a.record.reason = Some(format!("superseded by version {version}"));
            self.finish_record(&mut a.record, RolloutState::Superseded)
                .await;
            self.event(
                "rollout_superseded",
                a.version(),
                format!("superseded by version {version}"),
                ACTOR,
            )
            .await;
        }
        if rollback || p.same_plan(&self.stable) {
            return self.settle(p).await;
        }
        let Some((revision, policy)) = self.policy().await else {
            return self.settle(p).await;
        };
        let record = Rollout::new(
            version,
            self.stable.snapshot.version,
            policy,
            revision,
            unix_ms(),
        );
        let names: Vec<_> = record.stages.iter().map(|s| s.name.as_str()).collect();
        let detail = format!(
            "from version {} under policy revision {revision}: stages {}",
            record.from_version,
            names.join(", ")
        );
        self.active = Some(Active {
            record,
            candidate: p,
            reach: Reach::default(),
            start: HashMap::new(),
            baked: Duration::ZERO,
            running_since: Some(Instant::now()),
        });
        self.event("rollout_started", version, detail, ACTOR).await;
        self.enter_stage(0).await;
    }

    /// Every node on `p`.
    async fn settle(&mut self, p: Arc<Published>) {
        self.stable = p;
        self.active = None;
        self.publish().await;
    }

    /// Every connected node, on this replica and (as last recorded) on the others; this
    /// replica's alone when the store cannot say.
    async fn members(&self) -> Vec<(String, Member)> {
        let fresh_since = unix_ms() - self.stale_ms;
        match fleet::members(&self.registry, &self.store, &self.replica, fresh_since).await {
            Ok(m) => m,
            Err(e) => {
                tracing::warn!(error = %e, "reading the nodes of other replicas; counting this replica's alone");
                fleet::members_here(&self.registry)
            }
        }
    }

    /// Starts stage `i`: reaches its nodes, takes the counters the gates start from.
    async fn enter_stage(&mut self, i: usize) {
        let nodes = self.members().await;
        let Some(a) = self.active.as_mut() else {
            return;
        };
        let stage = a.record.policy.stages[i].clone();
        if let Some(labels) = &stage.select.labels {
            a.reach.labels.push(labels.clone());
        }
        if let Some(share) = stage.select.share {
            if share >= 100 {
                a.reach.all = true;
            } else {
                let want = (nodes.len() * share as usize).div_ceil(100);
                let reached = nodes
                    .iter()
                    .filter(|(id, n)| a.reach.includes(id, &n.labels))
                    .count();
                let mut rest: Vec<_> = nodes
                    .iter()
                    .filter(|(id, n)| !a.reach.includes(id, &n.labels))
                    .map(|(id, _)| (rank(id, a.record.version), id.clone()))
                    .collect();
                rest.sort();
                let more = want.saturating_sub(reached);
                a.reach
                    .nodes
                    .extend(rest.into_iter().take(more).map(|(_, id)| id));
            }
        }
        // Label stages' nodes as they were met, so a resumed rollout keeps them.
        for (id, n) in &nodes {
            if a.reach.includes(id, &n.labels) {
                a.reach.nodes.insert(id.clone());
            }
        }
        a.start = nodes
            .iter()
            .map(|(id, n)| (id.clone(), n.totals()))
            .collect();
        a.baked = Duration::ZERO;
        if a.running_since.is_some() {
            a.running_since = Some(Instant::now());
        }
        let now = unix_ms();
        a.record.stage = i;
        a.record.updated_unix_ms = now;
        let stages = a.record.stages.len();
        let s = &mut a.record.stages[i];
        s.started_unix_ms = Some(now);
        s.nodes = reached_ids(&a.reach, &nodes);
        let detail = format!(
            "stage {} of {} ({}): {} node(s){}",
            i + 1,
            stages,
            s.name,
            s.nodes.len(),
            if a.reach.all { ", every node" } else { "" }
        );
        let (version, record) = (a.record.version, a.record.clone());
        self.save(&record).await;
        self.event("rollout_stage", version, detail, ACTOR).await;
        self.publish().await;
    }

    async fn on_tick(&mut self) {
        if self.active.is_none() {
            return;
        }
        let nodes = self.members().await;
        let Some(a) = self.active.as_mut() else {
            return;
        };
        let version = a.version();
        let i = a.record.stage;
        a.record.stages[i].nodes = reached_ids(&a.reach, &nodes);
        if let Some((id, reason)) = nodes.iter().find_map(|(id, n)| {
            n.last_nack
                .as_ref()
                .filter(|(v, _)| *v == version && a.reach.includes(id, &n.labels))
                .map(|(_, r)| (id, r))
        }) {
            let reason = format!("node {id} rejected version {version}: {reason}");
            return self
                .roll_back(reason, RolloutState::RolledBack, ACTOR)
                .await;
        }
        let digest = a.candidate.digest.clone();
        let readings: Vec<NodeReading> = nodes
            .iter()
            .map(|(id, n)| {
                let now = n.totals();
                let start = a.start.entry(id.clone()).or_insert(now);
                // A node reached counts from its first report made on the new version:
                // what it counted before (reports lag its ack, by a stats interval and,
                // on another replica, a heartbeat) belongs to the version it ran then.
                let on_new = n.reports_on(&digest, version);
                if a.reach.includes(id, &n.labels) && !on_new {
                    *start = now;
                }
                let (down, checked) = n.servers_down();
                NodeReading {
                    on_new,
                    delta: now.since(*start),
                    down,
                    checked,
                }
            })
            .collect();
        let previous = i
            .checked_sub(1)
            .and_then(|p| a.record.stages[p].reading.as_ref())
            .map(|r| r.error_rate);
        let (reading, failed) = gates::evaluate(&readings, &a.record.policy.gates, previous);
        a.record.stages[i].reading = Some(reading);
        if let Some(reason) = failed {
            let reason = format!("stage {} ({}): {reason}", i + 1, a.record.stages[i].name);
            return self
                .roll_back(reason, RolloutState::RolledBack, ACTOR)
                .await;
        }
        // Every reached node runs it (a node too old for it is not waited for).
        let applied = nodes
            .iter()
            .filter(|(id, n)| a.reach.includes(id, &n.labels))
            .filter(|(_, n)| n.withheld != Some(version))
            .all(|(_, n)| n.applied_version == version);
        let bake = Duration::from_millis(a.record.stages[i].bake_ms);
        if a.running_since.is_some() && applied && a.baked() >= bake {
            a.record.stages[i].passed_unix_ms = Some(unix_ms());
            if i + 1 < a.record.stages.len() {
                return self.enter_stage(i + 1).await;
            }
            return self.complete(None).await;
        }
        self.publish_live();
        // Other replicas show the rollout as stored: keep its readings and bake current.
        if self.store.database() == Database::Postgres {
            let live = self.live.lock().expect("rollout lock").clone();
            if let Some(record) = live {
                self.save(&record).await;
            }
        }
    }

    /// The version goes to every node and becomes the stable one.
    async fn complete(&mut self, promoted_by: Option<&str>) {
        let Some(mut a) = self.active.take() else {
            return;
        };
        a.record.reason = promoted_by.map(|who| format!("promoted by {who}"));
        a.record.baked_ms = a.baked().as_millis() as u64;
        self.finish_record(&mut a.record, RolloutState::Completed)
            .await;
        let detail = match promoted_by {
            Some(who) => format!("promoted by {who} at stage {}", a.record.stage + 1),
            None => format!("all {} stages passed", a.record.stages.len()),
        };
        self.event(
            "rollout_completed",
            a.version(),
            detail,
            promoted_by.unwrap_or(ACTOR),
        )
        .await;
        self.settle(a.candidate).await;
    }

    /// Every node back to the stable version at once, and its configuration committed
    /// again as a new version.
    async fn roll_back(&mut self, reason: String, state: RolloutState, actor: &str) {
        let Some(mut a) = self.active.take() else {
            return;
        };
        let version = a.version();
        tracing::warn!(version, %reason, "rolling back");
        a.record.reason = Some(reason.clone());
        a.record.baked_ms = a.baked().as_millis() as u64;
        // The nodes first: the stable version is what they get from now on.
        self.assign_all(Arc::new(Assignment {
            newest: a.candidate.clone(),
            stable: self.stable.clone(),
            reach: Reach::default(),
        }))
        .await;
        *self.live.lock().expect("rollout lock") = None;
        let kind = if state == RolloutState::Aborted {
            "rollout_aborted"
        } else {
            "rollout_rolled_back"
        };
        self.event(kind, version, reason.clone(), actor).await;
        match self
            .commit_rollback(version, a.record.from_version, &reason)
            .await
        {
            Ok(Some(v)) => a.record.rollback_version = Some(v),
            Ok(None) => {}
            Err(e) => {
                tracing::warn!(error = %e, version, "could not commit the rollback; the nodes run the previous version")
            }
        }
        self.finish_record(&mut a.record, state).await;
    }

    /// Commits the configuration of `from` again; the new version, when one was made.
    async fn commit_rollback(
        &mut self,
        version: u64,
        from: u64,
        reason: &str,
    ) -> Result<Option<u64>, ChangeError> {
        let row = self.store.get_snapshot(from).await?;
        let text = row.document.filter(|d| !d.is_empty()).ok_or_else(|| {
            ChangeError::NotFound(format!("the document of version {from} is no longer kept"))
        })?;
        let document: ConfigDocument = serde_json::from_str(&text)
            .map_err(|e| ChangeError::Conflict(format!("stored document {from}: {e}")))?;
        let what = format!("rollback of version {version} to version {from} ({reason})");
        let applied = self
            .config
            .apply(None, &what, ACTOR, move |c| {
                c.document = document;
                Ok(())
            })
            .await?;
        if applied.changed {
            self.rollback_commit = Some(applied.version);
            return Ok(Some(applied.version));
        }
        Ok(None)
    }

    async fn on_command(
        &mut self,
        version: u64,
        action: Action,
        actor: &str,
    ) -> Result<Rollout, RolloutError> {
        let Some(a) = self.active.as_mut().filter(|a| a.version() == version) else {
            return Err(match self.store.rollout(version).await? {
                Some(body) => {
                    let r: Rollout = serde_json::from_str(&body)?;
                    RolloutError::NotApplicable {
                        version,
                        state: r.state,
                    }
                }
                None => RolloutError::NotFound(version),
            });
        };
        let state = a.record.state;
        match (action, state) {
            (Action::Pause, RolloutState::Running) => {
                a.baked += a
                    .running_since
                    .take()
                    .map_or(Duration::ZERO, |t| t.elapsed());
                a.record.state = RolloutState::Paused;
            }
            (Action::Resume, RolloutState::Paused) => {
                a.running_since = Some(Instant::now());
                a.record.state = RolloutState::Running;
            }
            (Action::Pause | Action::Resume, _) => {
                return Err(RolloutError::NotApplicable { version, state });
            }
            (Action::Promote, _) => {
                let mut record = a.record.clone();
                self.complete(Some(actor)).await;
                record.state = RolloutState::Completed;
                return Ok(self.get_stored(version).await.unwrap_or(record));
            }
            (Action::Abort, _) => {
                let record = a.record.clone();
                self.roll_back(format!("aborted by {actor}"), RolloutState::Aborted, actor)
                    .await;
                return Ok(self.get_stored(version).await.unwrap_or(record));
            }
        }
        a.record.updated_unix_ms = unix_ms();
        let record = a.record.clone();
        let kind = if action == Action::Pause {
            "rollout_paused"
        } else {
            "rollout_resumed"
        };
        self.save(&record).await;
        self.event(
            kind,
            version,
            format!("{kind} by {actor}").replace("rollout_", ""),
            actor,
        )
        .await;
        self.publish_live();
        Ok(self
            .live
            .lock()
            .expect("rollout lock")
            .clone()
            .unwrap_or(record))
    }

    async fn get_stored(&self, version: u64) -> Option<Rollout> {
        let body = self.store.rollout(version).await.ok()??;
        serde_json::from_str(&body).ok()
    }
}

/// The connected nodes `reach` includes, by id.
fn reached_ids(reach: &Reach, nodes: &[(String, Member)]) -> Vec<String> {
    nodes
        .iter()
        .filter(|(id, n)| reach.includes(id, &n.labels))
        .map(|(id, _)| id.clone())
        .collect()
}
