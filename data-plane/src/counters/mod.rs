//! Traffic counters and health cells: the runtime state that outlives a plan, kept in a
//! [`Registry`] keyed by stable names so a snapshot swap picks up the same counters. The
//! plan holds `Arc`s to them; the request path only touches atomics. A leaf: it knows
//! nothing of plans (the `Stats` report is built in `control::report`).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};

#[derive(Debug, Default)]
pub struct FrontendCounters {
    /// Client connections still speaking HTTP (a connection that became a tunnel moves
    /// to `current_tunnels`); see [`FrontendCounters::open_connections`].
    pub current_connections: AtomicU64,
    pub total_connections: AtomicU64,
    pub current_tunnels: AtomicU64,
    pub total_upgrades: AtomicU64,
    pub total_requests: AtomicU64,
    /// Tunnel payload bytes from clients.
    pub bytes_in: AtomicU64,
    /// Tunnel payload bytes to clients.
    pub bytes_out: AtomicU64,
    pub denied: AtomicU64,
    /// Requests refused before routing: malformed, head too large, head too slow.
    pub bad_requests: AtomicU64,
    /// TLS handshakes that failed or timed out.
    pub tls_handshake_failures: AtomicU64,
    pub responses_by_class: [AtomicU64; 5],
    /// Signalled when a client connection or tunnel ends, for accept loops waiting
    /// below `maxconn`.
    pub released: tokio::sync::Notify,
}

impl FrontendCounters {
    /// All open client connections: HTTP ones and tunnels.
    pub fn open_connections(&self) -> u64 {
        self.current_connections.load(Relaxed) + self.current_tunnels.load(Relaxed)
    }

    pub fn count_response(&self, status: http::StatusCode) {
        self.responses_by_class[class(status)].fetch_add(1, Relaxed);
    }
}

/// Index of a status in `responses_by_class` (1xx → 0 … 5xx → 4).
fn class(status: http::StatusCode) -> usize {
    (status.as_u16() / 100).clamp(1, 5) as usize - 1
}

/// A server's health as this node's checks see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Health {
    /// No health check configured (or none finished yet): treated as up.
    Unchecked,
    Up,
    Down,
}

#[derive(Debug, Default)]
pub struct HealthCell {
    state: std::sync::atomic::AtomicU8,
    /// When it last changed (Unix ms); 0: never.
    pub changed_unix_ms: std::sync::atomic::AtomicI64,
    /// Why it is in its state: the failed check's error when down, the passing checks
    /// when up. Written only on a change, read by the stats report.
    reason: std::sync::Mutex<String>,
}

impl HealthCell {
    pub fn get(&self) -> Health {
        match self.state.load(Relaxed) {
            1 => Health::Up,
            2 => Health::Down,
            _ => Health::Unchecked,
        }
    }

    pub fn is_down(&self) -> bool {
        self.state.load(Relaxed) == 2
    }

    pub fn set(&self, h: Health) {
        let v = match h {
            Health::Unchecked => 0,
            Health::Up => 1,
            Health::Down => 2,
        };
        if self.state.swap(v, Relaxed) != v {
            self.changed_unix_ms.store(crate::clock::unix_ms(), Relaxed);
        }
    }

    /// Sets the state with the reason the change was decided for.
    pub fn set_because(&self, h: Health, reason: String) {
        *self.reason.lock().expect("health reason lock") = reason;
        self.set(h);
    }

    /// Why the server is in its current state ("" before any check decided).
    pub fn reason(&self) -> String {
        self.reason.lock().expect("health reason lock").clone()
    }
}

#[derive(Debug, Default)]
pub struct ServerCounters {
    /// Health-check state, kept here so it survives config swaps.
    pub health: HealthCell,
    pub current_connections: AtomicU64,
    pub total_connections: AtomicU64,
    pub current_tunnels: AtomicU64,
    pub total_upgrades: AtomicU64,
    /// Tunnel payload bytes from clients to this server.
    pub bytes_in: AtomicU64,
    /// Tunnel payload bytes from this server to clients.
    pub bytes_out: AtomicU64,
    pub connect_errors: AtomicU64,
    /// No response headers within `timeout server` (504).
    pub timeouts: AtomicU64,
    /// Invalid or missing responses (502).
    pub bad_responses: AtomicU64,
    pub responses_by_class: [AtomicU64; 5],
    /// Tunnels ended because reading from or writing to the server failed.
    pub tunnel_errors: AtomicU64,
    /// Failed health checks.
    pub check_failures: AtomicU64,
    /// Up↔down changes decided by health checks.
    pub health_transitions: AtomicU64,
    /// The counters of the backend this server belongs to.
    pub backend: Arc<BackendCounters>,
}

impl ServerCounters {
    pub fn count_response(&self, status: http::StatusCode) {
        self.responses_by_class[class(status)].fetch_add(1, Relaxed);
    }
}

#[derive(Debug, Default)]
pub struct BackendCounters {
    /// Requests routed to this backend.
    pub total_requests: AtomicU64,
    /// Requests that found no usable server (503).
    pub no_server: AtomicU64,
    /// Requests waiting for a server slot (`maxconn`) right now.
    pub queued: AtomicU64,
    /// Requests that waited past `timeout queue` (503).
    pub queue_timeouts: AtomicU64,
    /// Signalled when a server of this backend frees a connection slot.
    pub slot_freed: tokio::sync::Notify,
}

/// A gauge held up for as long as this value lives: incremented on creation,
/// decremented on drop, so every exit path (errors and panics included) gives it back.
pub struct Held<T: Send + Sync + 'static> {
    owner: Arc<T>,
    gauge: fn(&T) -> &AtomicU64,
    /// Runs after the gauge went down.
    on_release: Option<fn(&T)>,
}

impl<T: Send + Sync + 'static> Held<T> {
    pub fn new(owner: Arc<T>, gauge: fn(&T) -> &AtomicU64) -> Self {
        gauge(&owner).fetch_add(1, Relaxed);
        Self {
            owner,
            gauge,
            on_release: None,
        }
    }
}

impl Held<ServerCounters> {
    /// A connection slot of a server (`maxconn`): its release wakes the backend's queue.
    pub fn server_slot(owner: Arc<ServerCounters>) -> Self {
        owner.current_connections.fetch_add(1, Relaxed);
        Self::server_slot_reserved(owner)
    }

    /// The guard of a slot already counted in `current_connections`.
    pub fn server_slot_reserved(owner: Arc<ServerCounters>) -> Self {
        Self {
            owner,
            gauge: |c| &c.current_connections,
            on_release: Some(|c| c.backend.slot_freed.notify_one()),
        }
    }
}

impl<T: Send + Sync + 'static> Drop for Held<T> {
    fn drop(&mut self) {
        (self.gauge)(&self.owner).fetch_sub(1, Relaxed);
        if let Some(hook) = self.on_release {
            hook(&self.owner);
        }
    }
}

#[derive(Debug, Default)]
pub struct Registry {
    frontends: Mutex<HashMap<String, Arc<FrontendCounters>>>,
    backends: Mutex<HashMap<String, Arc<BackendCounters>>>,
    servers: Mutex<HashMap<(String, String), Arc<ServerCounters>>>,
    /// Stick tables by frontend.
    pub sticks: crate::stick::StickRegistry,
}

impl Registry {
    pub fn frontend(&self, name: &str) -> Arc<FrontendCounters> {
        self.frontends
            .lock()
            .expect("stats lock")
            .entry(name.to_string())
            .or_default()
            .clone()
    }

    pub fn backend(&self, name: &str) -> Arc<BackendCounters> {
        self.backends
            .lock()
            .expect("stats lock")
            .entry(name.to_string())
            .or_default()
            .clone()
    }

    pub fn server(&self, backend: &str, server: &str) -> Arc<ServerCounters> {
        let backend_counters = self.backend(backend);
        self.servers
            .lock()
            .expect("stats lock")
            .entry((backend.to_string(), server.to_string()))
            .or_insert_with(|| {
                Arc::new(ServerCounters {
                    backend: backend_counters,
                    ..ServerCounters::default()
                })
            })
            .clone()
    }

    /// Drops counters of objects the plan no longer has and nothing else references.
    pub fn prune(&self) {
        self.sticks.prune();
        self.frontends
            .lock()
            .expect("stats lock")
            .retain(|_, c| Arc::strong_count(c) > 1);
        self.backends
            .lock()
            .expect("stats lock")
            .retain(|_, c| Arc::strong_count(c) > 1);
        self.servers
            .lock()
            .expect("stats lock")
            .retain(|_, c| Arc::strong_count(c) > 1);
    }
}
