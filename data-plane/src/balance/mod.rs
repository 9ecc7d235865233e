//! Server choice, end to end: which server of a backend takes a request, and the slot it
//! holds there.
//!
//! 1. **Persistence** ([`cookie`]): a valid cookie naming a server that can take the
//!    request wins, if that server has a free slot.
//! 2. **Eligibility**: new traffic goes to servers that are `ready`, weighted, not down by
//!    health checks and below their `maxconn`; sticky traffic also to `drain` servers.
//!    Backup servers only while no regular server is up.
//! 3. **Algorithm** ([`algorithm`]): round robin, leastconn, random, hashing.
//! 4. **Slot and queue**: a server's `maxconn` slot is reserved at pick time (CAS); when
//!    every eligible server is full the request waits in the backend's FIFO queue for a
//!    slot, at most `timeout queue`.
//! 5. **Retry and redispatch**: a failed connect is retried `retries` times, after a
//!    turn-around pause of `min(timeout connect, 1 s)` so a restarting server is not hit
//!    again in the same millisecond (HAProxy's rule); with `redispatch`, the last retry
//!    goes to another server if there is one, at once.
//!
//! The connect itself is the caller's (`proxy::upstream`): [`dispatch`] is given it, so
//! this module decides and the proxy does I/O.

mod algorithm;
pub mod cookie;

use std::fmt::Display;
use std::future::Future;
use std::net::IpAddr;
use std::sync::atomic::Ordering::Relaxed;

use http::request::Parts;
use sluice_proto::v1 as pb;

use crate::config::{BackendPlan, ServerPlan};
use crate::counters::{BackendCounters, Held, ServerCounters};

/// What the hashing algorithms may look at in a request.
pub struct PickInput<'a> {
    pub src: IpAddr,
    pub parts: &'a Parts,
}

/// Why no server connection could be had.
#[derive(Debug, thiserror::Error)]
pub enum ChoiceError {
    #[error("backend {0}: no server available")]
    NoServer(String),
    #[error("backend {0}: no server slot within timeout queue")]
    QueueTimeout(String),
    #[error("server {server}: connect failed after {attempts} attempt(s): {reason}")]
    Connect {
        server: String,
        attempts: u32,
        reason: String,
    },
}

impl ServerPlan {
    /// Whether new, non-sticky traffic may go here: ready, weighted, not down by health
    /// checks, and below its `maxconn`.
    pub fn accepts_new(&self) -> bool {
        self.up_for_new() && !self.full()
    }

    /// Ready, weighted and not down — whether or not it has a free slot right now.
    pub fn up_for_new(&self) -> bool {
        self.state == pb::ServerState::Ready && self.weight > 0 && !self.counters.health.is_down()
    }

    /// Whether a sticky request may still go here: not in maintenance (draining servers
    /// keep their sticky clients, as HAProxy does), not down, below `maxconn`.
    pub fn accepts_sticky(&self) -> bool {
        self.state != pb::ServerState::Maint && !self.counters.health.is_down() && !self.full()
    }

    /// Takes a connection slot, unless the server is at its `maxconn`; the slot is given
    /// back when the returned guard drops.
    pub fn try_slot(&self) -> Option<Held<ServerCounters>> {
        if self.maxconn > 0 {
            let max = u64::from(self.maxconn);
            let current = &self.counters.current_connections;
            let mut seen = current.load(Relaxed);
            loop {
                if seen >= max {
                    return None;
                }
                // Reserve the slot; the guard below then owns it.
                match current.compare_exchange_weak(seen, seen + 1, Relaxed, Relaxed) {
                    Ok(_) => break,
                    Err(now) => seen = now,
                }
            }
            return Some(Held::server_slot_reserved(self.counters.clone()));
        }
        Some(Held::server_slot(self.counters.clone()))
    }

    /// At its `maxconn`.
    pub fn full(&self) -> bool {
        self.maxconn > 0
            && self.counters.current_connections.load(Relaxed) >= u64::from(self.maxconn)
    }
}

/// The longest pause before connecting again to a server that just refused.
const TURN_AROUND: std::time::Duration = std::time::Duration::from_secs(1);

/// A server chosen, with its connection.
pub struct Chosen<T> {
    /// Index in the backend's servers.
    pub server: usize,
    pub conn: T,
    /// Connect attempts that failed before this one.
    pub retries: u32,
    /// The server's connection slot: held as long as the request or tunnel uses it.
    pub slot: Held<ServerCounters>,
}

/// What [`dispatch`] did: the time spent in the queue (Tw, -1 if the request never got
/// that far) and its result.
pub struct Dispatch<T> {
    pub queue_ms: i64,
    pub result: Result<Chosen<T>, ChoiceError>,
}

/// Chooses a server of `backend` and gets a connection to it with `connect`, retrying
/// `retries` times; with `redispatch`, the last retry goes to another server if there is
/// one. `sticky`: the server persistence designates, tried first if it has a free slot.
pub async fn dispatch<'b, T, E, F, Fut>(
    backend: &'b BackendPlan,
    input: &PickInput<'_>,
    sticky: Option<usize>,
    mut connect: F,
) -> Dispatch<T>
where
    F: FnMut(&'b ServerPlan) -> Fut,
    Fut: Future<Output = Result<T, E>>,
    E: Display,
{
    // A sticky request whose server has no free slot is balanced like any other.
    let sticky = sticky.and_then(|i| backend.servers[i].try_slot().map(|slot| (i, slot)));
    let (queue_ms, (mut idx, mut slot)) = match sticky {
        Some(taken) => (0, taken),
        None => match choose(backend, input).await {
            (queue_ms, Ok(chosen)) => (queue_ms, chosen),
            (queue_ms, Err(e)) => {
                return Dispatch {
                    queue_ms,
                    result: Err(e),
                }
            }
        },
    };
    let mut attempts = 0;
    let result = loop {
        attempts += 1;
        let server = &backend.servers[idx];
        let reason = match connect(server).await {
            Ok(conn) => {
                break Ok(Chosen {
                    server: idx,
                    conn,
                    retries: attempts - 1,
                    slot,
                })
            }
            Err(reason) => reason.to_string(),
        };
        server.counters.connect_errors.fetch_add(1, Relaxed);
        tracing::debug!(backend = %backend.name, server = %server.name, %reason, attempts, "connect failed");
        if attempts > backend.retries {
            break Err(ChoiceError::Connect {
                server: format!("{}/{}", backend.name, server.name),
                attempts,
                reason,
            });
        }
        let failed = idx;
        if backend.redispatch && attempts == backend.retries {
            let other = backend.balancer.pick(&backend.servers, input, |i, s| {
                i != failed && s.accepts_new()
            });
            if let Some((other, other_slot)) =
                other.and_then(|o| Some((o, backend.servers[o].try_slot()?)))
            {
                idx = other;
                slot = other_slot;
            }
        }
        if idx == failed {
            tokio::time::sleep(backend.connect_timeout.min(TURN_AROUND)).await;
        }
    };
    Dispatch { queue_ms, result }
}

/// Picks a server with a free slot. When every available server is at its `maxconn`, the
/// request waits in the backend's queue (first come, first served) for a slot, at most
/// `timeout queue`. Backup servers are used only while no regular server is up — not
/// because regular ones are busy. Returns the time spent queueing with the result.
async fn choose(
    backend: &BackendPlan,
    input: &PickInput<'_>,
) -> (i64, Result<(usize, Held<ServerCounters>), ChoiceError>) {
    let started = tokio::time::Instant::now();
    let waited = || started.elapsed().as_millis() as i64;
    let regular_up = backend.servers.iter().any(|s| !s.backup && s.up_for_new());
    let tier = |s: &ServerPlan| !regular_up || !s.backup;
    let deadline = tokio::time::Instant::now() + backend.queue_timeout;
    let mut queued = None;
    loop {
        // Registered before looking, so a slot freed in between is not missed.
        let freed = backend.counters.slot_freed.notified();
        tokio::pin!(freed);
        freed.as_mut().enable();
        if let Some(i) = backend
            .balancer
            .pick(&backend.servers, input, |_, s| tier(s) && s.accepts_new())
        {
            // Another request may have taken the last slot since the pick looked.
            match backend.servers[i].try_slot() {
                Some(slot) => return (waited(), Ok((i, slot))),
                None => continue,
            }
        }
        if !backend.servers.iter().any(|s| tier(s) && s.up_for_new()) {
            return (-1, Err(ChoiceError::NoServer(backend.name.to_string())));
        }
        queued.get_or_insert_with(|| {
            Held::new(backend.counters.clone(), |c: &BackendCounters| &c.queued)
        });
        if tokio::time::timeout_at(deadline, freed).await.is_err() {
            backend.counters.queue_timeouts.fetch_add(1, Relaxed);
            return (
                waited(),
                Err(ChoiceError::QueueTimeout(backend.name.to_string())),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::balance::{Algorithm, BalancePlan};
    use crate::counters::ServerCounters;
    use std::sync::atomic::AtomicUsize;
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    fn backend(servers: &[&str], retries: u32, redispatch: bool) -> BackendPlan {
        let counters = Arc::new(BackendCounters::default());
        BackendPlan {
            name: "be".into(),
            servers: servers
                .iter()
                .map(|n| ServerPlan {
                    name: (*n).into(),
                    address: "127.0.0.1:1".into(),
                    socket_addr: None,
                    weight: 1,
                    backup: false,
                    maxconn: 0,
                    cookie: None,
                    state: pb::ServerState::Ready,
                    check: None,
                    counters: Arc::new(ServerCounters {
                        backend: counters.clone(),
                        ..ServerCounters::default()
                    }),
                    pool: None,
                })
                .collect(),
            connect_timeout: Duration::from_secs(5),
            server_timeout: Duration::from_secs(5),
            tunnel: crate::config::TunnelTimeouts {
                idle_ms: 1000,
                client_fin_ms: 1000,
                server_fin_ms: 1000,
            },
            retries,
            redispatch,
            queue_timeout: Duration::from_secs(1),
            server_close: true,
            balancer: BalancePlan {
                algorithm: Algorithm::RoundRobin,
                rr: Mutex::new(vec![0; servers.len()]),
                ring: Vec::new(),
                turn: AtomicUsize::new(0),
            },
            cookie: None,
            counters,
        }
    }

    /// Each attempt: which server, and when.
    async fn attempts(backend: &BackendPlan) -> (Vec<(String, tokio::time::Instant)>, bool) {
        let parts = http::Request::new(()).into_parts().0;
        let input = PickInput {
            src: "127.0.0.1".parse().unwrap(),
            parts: &parts,
        };
        let seen = Mutex::new(Vec::new());
        let d = dispatch(backend, &input, None, |s| {
            seen.lock()
                .unwrap()
                .push((s.name.to_string(), tokio::time::Instant::now()));
            async { Err::<(), _>("connection refused") }
        })
        .await;
        (seen.into_inner().unwrap(), d.result.is_ok())
    }

    #[tokio::test(start_paused = true)]
    async fn a_refused_connect_is_retried_after_a_turn_around_pause() {
        let (seen, ok) = attempts(&backend(&["a"], 2, false)).await;
        assert!(!ok);
        assert_eq!(seen.len(), 3, "one attempt and two retries");
        for pair in seen.windows(2) {
            assert_eq!(pair[1].1 - pair[0].1, Duration::from_secs(1), "{seen:?}");
        }
        // With redispatch the last retry goes to another server, without waiting.
        let (seen, _) = attempts(&backend(&["a", "b"], 2, true)).await;
        let servers: Vec<_> = seen.iter().map(|(s, _)| s.as_str()).collect();
        assert_eq!(servers, ["a", "a", "b"]);
        assert_eq!(seen[1].1 - seen[0].1, Duration::from_secs(1));
        assert_eq!(seen[2].1, seen[1].1, "a redispatch does not wait");
    }
}
