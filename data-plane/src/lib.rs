//! Sluice data-plane node: stateless, configured entirely by the control plane.
//!
//! [`control`] keeps the gRPC stream to the control plane open and hands each snapshot to
//! [`Node::apply`], which compiles it into a [`config::Plan`], opens the listeners it
//! adds, swaps it in atomically and closes the listeners it removes. [`proxy`] serves
//! client connections under the plan they were accepted with; [`balance`] picks servers;
//! [`stats`] counts traffic across plan swaps; [`admin`] exposes it to Prometheus.

pub mod admin;
pub mod balance;
pub mod config;
pub mod control;
pub mod health;
pub mod proxy;
pub mod stats;
pub mod stick;

use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;
use sluice_proto::v1 as pb;

use config::Plan;
use proxy::Listeners;
use stats::StatsRegistry;

/// The node's state: the current plan, its listeners and its counters.
pub struct Node {
    pub plan: Arc<ArcSwap<Plan>>,
    pub stats: StatsRegistry,
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
        Self {
            plan: Arc::new(ArcSwap::from_pointee(Plan::empty())),
            stats: StatsRegistry::default(),
            listeners: Listeners::new(reuse_port),
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

    pub fn applied_version(&self) -> u64 {
        self.plan.load().version
    }

    /// Applies a snapshot, or explains why not; on error the current plan stays.
    /// Must be called within a tokio runtime (listeners are registered with it).
    pub fn apply(&self, snap: &pb::Snapshot) -> Result<(), String> {
        let _guard = self.apply_lock.lock().expect("apply lock");
        if snap.version != 0 && snap.version == self.applied_version() {
            return Ok(());
        }
        let plan = Plan::compile(snap, &self.stats)?;
        let plan = Arc::new(plan);
        if self.stopping.load(std::sync::atomic::Ordering::Relaxed) {
            // Open connections keep their plan; nothing new is listened on.
            self.checks.reconcile(snap, &plan);
            self.plan.store(plan);
            return Ok(());
        }
        let opened = self.listeners.prepare(&plan)?;
        self.checks.reconcile(snap, &plan);
        self.plan.store(plan.clone());
        self.listeners.commit(&plan, opened, self.plan.clone());
        self.stats.prune();
        Ok(())
    }
}
