//! Sluice data-plane node: stateless, configured entirely by the control plane.
//!
//! [`control`] keeps the gRPC stream to the control plane open and hands each snapshot to
//! [`Node::apply`], which compiles it into a [`config::Plan`], opens the listeners it
//! adds, swaps it in atomically and closes the listeners it removes. [`proxy`] serves
//! client connections under the plan they were accepted with; [`balance`] chooses
//! servers; [`health`] checks them; [`counters`] and [`stick`] hold the state that
//! outlives a plan; [`admin`] exposes it to Prometheus. The module graph has no cycle:
//! `config` is a leaf above the state modules (`counters`, `stick`, `tls`, `pool`,
//! `clock`; `body`, the forwarded request body, is a leaf under `pool`), and everything else reads the plan (see `docs/architecture.md`).

pub mod admin;
pub mod balance;
pub mod body;
pub mod cache;
pub mod clock;
pub mod config;
pub mod control;
pub mod counters;
pub mod credential;
pub mod health;
pub mod pool;
pub mod proxy;
pub mod stick;
pub mod tls;
pub mod wskey;

use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;
use sluice_proto::v1 as pb;

use config::{Plan, PlanError};
use proxy::{BindError, Listeners, Workers};

/// Why a snapshot was not applied (the node nacks with it and keeps its plan).
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    #[error(transparent)]
    Plan(#[from] PlanError),
    #[error(transparent)]
    Bind(#[from] BindError),
}

impl ApplyError {
    /// Whether the same snapshot may apply later without a change: a port another process
    /// holds, or an address not (yet) on this host. A plan that does not compile never
    /// will.
    pub fn is_transient(&self) -> bool {
        matches!(self, ApplyError::Bind(b) if matches!(
            b.error.kind(),
            std::io::ErrorKind::AddrInUse | std::io::ErrorKind::AddrNotAvailable
        ))
    }
}

/// The node's state: the current plan, its listeners and its counters.
pub struct Node {
    pub plan: Arc<ArcSwap<Plan>>,
    /// Counters and stick tables: state that outlives plans.
    pub counters: counters::Registry,
    listeners: Listeners,
    checks: health::Checks,
    /// Applies are serialized; requests never take this lock.
    apply_lock: Mutex<()>,
    /// Set by [`Node::stop_accepting`].
    stopping: std::sync::atomic::AtomicBool,
}

impl Default for Node {
    fn default() -> Self {
        Self::new(false)
    }
}

impl Node {
    /// A node with no plan yet; `reuse_port` sets SO_REUSEPORT on its listeners.
    pub fn new(reuse_port: bool) -> Self {
        Self::with_workers(reuse_port, Workers::Shared)
    }

    /// A node whose connections run on `workers`.
    pub fn with_workers(reuse_port: bool, workers: Workers) -> Self {
        Self {
            plan: Arc::new(ArcSwap::from_pointee(Plan::empty())),
            counters: counters::Registry::default(),
            listeners: Listeners::new(reuse_port, workers),
            checks: health::Checks::default(),
            apply_lock: Mutex::new(()),
            stopping: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// Closes every listener (a stopping node takes no new connections). Snapshots
    /// applied afterwards open none.
    pub fn stop_accepting(&self) {
        let _guard = self.apply_lock.lock().expect("apply lock");
        self.stopping
            .store(true, std::sync::atomic::Ordering::Relaxed);
        self.listeners.close_all();
    }

    /// Every open listener: configured address and bound address (see
    /// [`Listeners::bound`]).
    pub fn listeners(&self) -> Vec<(std::net::SocketAddr, std::net::SocketAddr)> {
        self.listeners.bound()
    }

    /// Ready for traffic: a plan is serving and the node is not stopping (`/readyz`).
    pub fn ready(&self) -> bool {
        self.applied_version() > 0 && !self.stopping.load(std::sync::atomic::Ordering::Relaxed)
    }

    pub fn applied_version(&self) -> u64 {
        self.plan.load().version
    }

    /// Applies a snapshot, or explains why not; on error the current plan stays.
    /// Must be called within a tokio runtime (listeners are registered with it).
    pub fn apply(&self, snap: &pb::Snapshot) -> Result<(), ApplyError> {
        let _guard = self.apply_lock.lock().expect("apply lock");
        if snap.version != 0 && snap.version == self.applied_version() {
            return Ok(());
        }
        let plan = Plan::compile(snap, &self.counters)?;
        let plan = Arc::new(plan);
        if self.stopping.load(std::sync::atomic::Ordering::Relaxed) {
            // Open connections keep their plan; nothing new is listened on.
            self.checks.reconcile(&plan);
            self.plan.store(plan);
            return Ok(());
        }
        let opened = self.listeners.prepare(&plan)?;
        self.checks.reconcile(&plan);
        self.plan.store(plan.clone());
        self.listeners.commit(&plan, opened, self.plan.clone());
        self.counters.prune();
        Ok(())
    }
}
