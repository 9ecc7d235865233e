//! Which replica leads rollouts. One task tries to take the store's lease every second
//! (on a connection it keeps for that) and, while it holds it, checks every second that
//! it still does; it publishes whether this replica leads. A replica that dies or loses
//! the database loses the lease with its connection, and another takes it within about a
//! second. On SQLite the one process always leads.

use std::time::Duration;

use tokio::sync::watch;

use crate::store::{Database, Lease, LeaseTries, Store};

/// How often the lease is tried or checked, and how long either may take.
const EVERY: Duration = Duration::from_secs(1);
const WITHIN: Duration = Duration::from_secs(2);

/// A watch of whether this replica leads, and the task that keeps it true.
pub fn leadership(store: &Store) -> (watch::Sender<bool>, watch::Receiver<bool>) {
    watch::channel(store.database() == Database::Sqlite)
}

/// Runs until shutdown.
pub async fn run(store: Store, leads: watch::Sender<bool>, mut shutdown: watch::Receiver<bool>) {
    let mut lease: Option<Lease> = None;
    let mut tries = LeaseTries::default();
    let mut tick = tokio::time::interval(EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.changed() => break,
        }
        match lease.as_mut() {
            Some(l) => {
                let held = matches!(tokio::time::timeout(WITHIN, l.check()).await, Ok(Ok(())));
                if !held {
                    // Dropping the connection releases the lock wherever it still holds.
                    lease = None;
                    tracing::warn!("lost the rollout lease; another replica will lead");
                    leads.send_replace(false);
                }
            }
            None => {
                let attempt = store.try_lease(&mut tries);
                if let Ok(Ok(Some(l))) = tokio::time::timeout(WITHIN, attempt).await {
                    lease = Some(l);
                    tracing::info!("this replica leads rollouts");
                    leads.send_replace(true);
                }
            }
        }
    }
}
