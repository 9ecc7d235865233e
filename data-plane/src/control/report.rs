//! The `Stats` report a node sends on its stream: every frontend's and server's counters
//! for the objects of the current plan, read from the atomics the request path updates.

use std::sync::atomic::Ordering::Relaxed;

use sluice_proto::v1 as pb;

use crate::config::Plan;
use crate::counters::Health;

/// The current counters of everything in `plan`.
pub fn report(plan: &Plan, unix_ms: i64) -> pb::Stats {
    let frontends = plan
        .frontends
        .iter()
        .map(|f| {
            let c = &f.counters;
            pb::FrontendStats {
                name: f.name.to_string(),
                current_connections: c.open_connections(),
                total_connections: c.total_connections.load(Relaxed),
                current_tunnels: c.current_tunnels.load(Relaxed),
                total_upgrades: c.total_upgrades.load(Relaxed),
                total_requests: c.total_requests.load(Relaxed),
                bytes_in: c.bytes_in.load(Relaxed),
                bytes_out: c.bytes_out.load(Relaxed),
                denied: c.denied.load(Relaxed),
                responses_by_class: c
                    .responses_by_class
                    .iter()
                    .map(|a| a.load(Relaxed))
                    .collect(),
                bad_requests: c.bad_requests.load(Relaxed),
                tls_handshake_failures: c.tls_handshake_failures.load(Relaxed),
            }
        })
        .collect();
    let backends = plan
        .backends
        .iter()
        .map(|b| pb::BackendStats {
            name: b.name.to_string(),
            servers: b
                .servers
                .iter()
                .map(|s| pb::ServerStats {
                    name: s.name.to_string(),
                    current_connections: s.counters.current_connections.load(Relaxed),
                    total_connections: s.counters.total_connections.load(Relaxed),
                    current_tunnels: s.counters.current_tunnels.load(Relaxed),
                    connect_errors: s.counters.connect_errors.load(Relaxed),
                    health: match s.counters.health.get() {
                        Health::Unchecked => pb::Health::Unchecked,
                        Health::Up => pb::Health::Up,
                        Health::Down => pb::Health::Down,
                    } as i32,
                    health_changed_unix_ms: s.counters.health.changed_unix_ms.load(Relaxed),
                    health_reason: s.counters.health.reason(),
                    total_upgrades: s.counters.total_upgrades.load(Relaxed),
                    bytes_in: s.counters.bytes_in.load(Relaxed),
                    bytes_out: s.counters.bytes_out.load(Relaxed),
                    timeouts: s.counters.timeouts.load(Relaxed),
                    bad_responses: s.counters.bad_responses.load(Relaxed),
                    tunnel_errors: s.counters.tunnel_errors.load(Relaxed),
                    responses_by_class: s
                        .counters
                        .responses_by_class
                        .iter()
                        .map(|a| a.load(Relaxed))
                        .collect(),
                })
                .collect(),
            total_requests: b.counters.total_requests.load(Relaxed),
            no_server: b.counters.no_server.load(Relaxed),
            queued: b.counters.queued.load(Relaxed),
            queue_timeouts: b.counters.queue_timeouts.load(Relaxed),
        })
        .collect();
    pb::Stats {
        applied_version: plan.version,
        unix_ms,
        frontends,
        backends,
        started_unix_ms: crate::clock::started_unix_ms(),
        applied_digest: plan.digest.clone(),
    }
}
