//! Turning the nodes' cumulative stats reports into per-bucket points, in memory.
//!
//! Nodes report cumulative counters and current gauges every few seconds. For each node
//! the aggregator keeps the last counters it saw, adds the difference to the current
//! bucket of every scope the object counts in (its own, its backend's, the node's and
//! the fleet's), and keeps the node's latest gauges. A bucket's point is taken at each
//! tick: the counted differences plus the gauges of the nodes connected then.
//!
//! Counting each event once:
//! - a node that reconnects continues from the counters it had (same process start);
//! - a node that restarted (new `started_unix_ms`), or an object whose counter went
//!   down (removed and added again), counts its counters from zero;
//! - a node first heard of by this process only sets its baseline, unless it started
//!   after the control plane did (then all it counted is new): the history already
//!   holds what was counted before a control-plane restart.

use std::collections::HashMap;

use sluice_proto::v1 as pb;

use super::metric::{add, Metric, Values, COUNT};

/// A node forgotten this long after its last report starts from a fresh baseline.
const FORGET_AFTER_MS: i64 = 24 * 3600 * 1000;

/// A server's health as one node saw it change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthChange {
    pub backend: String,
    pub server: String,
    pub up: bool,
    pub reason: String,
}

#[derive(Debug)]
struct NodeTrack {
    started_ms: i64,
    /// Object scope → the cumulative counters of the last report.
    counters: HashMap<String, Values>,
    /// Scope → the gauges this node adds to it (its own `node:` scope included).
    gauges: HashMap<String, Values>,
    /// Server scope → health as last reported.
    health: HashMap<String, i32>,
    connected: bool,
    last_report_ms: i64,
}

/// Which metrics of an object count in a wider scope.
#[derive(Clone, Copy)]
enum Mask {
    All,
    Only(&'static [Metric]),
}

impl Mask {
    fn apply(self, v: &Values) -> Values {
        match self {
            Mask::All => *v,
            Mask::Only(ms) => {
                let mut out = [0; COUNT];
                for m in ms {
                    out[m.id()] = v[m.id()];
                }
                out
            }
        }
    }
}

/// What of a backend's own counters make the node's: queueing and no-server errors
/// (its requests are already the frontends').
const BACKEND_TO_NODE: Mask = Mask::Only(&[
    Metric::Queued,
    Metric::ErrorsNoServer,
    Metric::ErrorsQueueTimeout,
]);
/// What of a server's make the node's: its errors and health (its traffic is already
/// the frontends').
const SERVER_TO_NODE: Mask = Mask::Only(&[
    Metric::ErrorsConnect,
    Metric::ErrorsTimeout,
    Metric::ErrorsBadResponse,
    Metric::ServersUp,
    Metric::ServersDown,
]);

/// One object of a report: its scope, cumulative counters, gauges, and the wider
/// scopes it counts in.
struct Object {
    scope: String,
    counters: Values,
    gauges: Values,
    into: Vec<(String, Mask)>,
}

fn values(pairs: &[(Metric, u64)]) -> Values {
    let mut v = [0; COUNT];
    for &(m, x) in pairs {
        v[m.id()] = x;
    }
    v
}

fn classes(by_class: &[u64]) -> [(Metric, u64); 5] {
    let c = |i: usize| by_class.get(i).copied().unwrap_or(0);
    [
        (Metric::Responses1xx, c(0)),
        (Metric::Responses2xx, c(1)),
        (Metric::Responses3xx, c(2)),
        (Metric::Responses4xx, c(3)),
        (Metric::Responses5xx, c(4)),
    ]
}

fn objects(node_scope: &str, stats: &pb::Stats) -> Vec<Object> {
    let mut out = Vec::new();
    for f in &stats.frontends {
        let mut counters = vec![
            (Metric::Upgrades, f.total_upgrades),
            (Metric::Requests, f.total_requests),
            (Metric::Denied, f.denied),
            (Metric::BytesIn, f.bytes_in),
            (Metric::BytesOut, f.bytes_out),
            (Metric::ErrorsBadRequest, f.bad_requests),
            (Metric::ErrorsTls, f.tls_handshake_failures),
        ];
        counters.extend(classes(&f.responses_by_class));
        out.push(Object {
            scope: format!("frontend:{}", f.name),
            counters: values(&counters),
            gauges: values(&[
                (Metric::Connections, f.current_connections),
                (Metric::Tunnels, f.current_tunnels),
            ]),
            into: vec![(node_scope.to_string(), Mask::All)],
        });
    }
    for b in &stats.backends {
        let backend_scope = format!("backend:{}", b.name);
        out.push(Object {
            scope: backend_scope.clone(),
            counters: values(&[
                (Metric::Requests, b.total_requests),
                (Metric::ErrorsNoServer, b.no_server),
                (Metric::ErrorsQueueTimeout, b.queue_timeouts),
            ]),
            gauges: values(&[(Metric::Queued, b.queued)]),
            into: vec![(node_scope.to_string(), BACKEND_TO_NODE)],
        });
        for s in &b.servers {
            let down = s.health == pb::Health::Down as i32;
            let mut counters = vec![
                (Metric::Upgrades, s.total_upgrades),
                (Metric::BytesIn, s.bytes_in),
                (Metric::BytesOut, s.bytes_out),
                (Metric::ErrorsConnect, s.connect_errors),
                (Metric::ErrorsTimeout, s.timeouts),
                (Metric::ErrorsBadResponse, s.bad_responses),
            ];
            counters.extend(classes(&s.responses_by_class));
            out.push(Object {
                scope: format!("server:{}/{}", b.name, s.name),
                counters: values(&counters),
                gauges: values(&[
                    (Metric::Connections, s.current_connections),
                    (Metric::Tunnels, s.current_tunnels),
                    (Metric::ServersUp, u64::from(!down)),
                    (Metric::ServersDown, u64::from(down)),
                ]),
                into: vec![
                    (backend_scope.clone(), Mask::All),
                    (node_scope.to_string(), SERVER_TO_NODE),
                ],
            });
        }
    }
    out
}

/// How a report's counters are taken.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Baseline {
    /// Only remembered: counted before this process knew the node.
    Remember,
    /// Everything counted is new (the node restarted, or started after us).
    AllNew,
    /// The difference from the last report.
    Difference,
}

fn delta(prev: Option<&Values>, cur: &Values, how: Baseline) -> Values {
    match (how, prev) {
        (Baseline::Remember, _) => [0; COUNT],
        (Baseline::AllNew, _) | (Baseline::Difference, None) => *cur,
        (Baseline::Difference, Some(p)) => {
            let mut d = [0; COUNT];
            for i in 0..COUNT {
                // A counter that went down restarted from zero.
                d[i] = if cur[i] >= p[i] {
                    cur[i] - p[i]
                } else {
                    cur[i]
                };
            }
            d
        }
    }
}

#[derive(Debug)]
pub struct Aggregator {
    /// When this control plane started (Unix ms).
    started_ms: i64,
    nodes: HashMap<String, NodeTrack>,
    /// Counter differences since the last tick, per scope.
    pending: HashMap<String, Values>,
}

impl Aggregator {
    pub fn new(started_ms: i64) -> Self {
        Self {
            started_ms,
            nodes: HashMap::new(),
            pending: HashMap::new(),
        }
    }

    /// Takes one report of `node`; returns the health changes it shows.
    pub fn observe(&mut self, node: &str, stats: &pb::Stats, now_ms: i64) -> Vec<HealthChange> {
        let node_scope = format!("node:{node}");
        let how = match self.nodes.get(node) {
            None if stats.started_unix_ms >= self.started_ms => Baseline::AllNew,
            None => Baseline::Remember,
            Some(t) if t.started_ms != stats.started_unix_ms => Baseline::AllNew,
            Some(_) => Baseline::Difference,
        };
        let track = self
            .nodes
            .entry(node.to_string())
            .or_insert_with(|| NodeTrack {
                started_ms: stats.started_unix_ms,
                counters: HashMap::new(),
                gauges: HashMap::new(),
                health: HashMap::new(),
                connected: true,
                last_report_ms: now_ms,
            });
        if how == Baseline::AllNew {
            track.counters.clear();
            track.started_ms = stats.started_unix_ms;
        }
        track.connected = true;
        track.last_report_ms = now_ms;
        let mut counters = HashMap::new();
        let mut gauges: HashMap<String, Values> = HashMap::new();
        for o in objects(&node_scope, stats) {
            let d = delta(track.counters.get(&o.scope), &o.counters, how);
            let add_to = |pending: &mut HashMap<String, Values>, scope: &str, v: &Values| {
                add(pending.entry(scope.to_string()).or_default(), v);
            };
            add_to(&mut self.pending, &o.scope, &d);
            add(gauges.entry(o.scope.clone()).or_default(), &o.gauges);
            for (scope, mask) in &o.into {
                add_to(&mut self.pending, scope, &mask.apply(&d));
                add(
                    gauges.entry(scope.clone()).or_default(),
                    &mask.apply(&o.gauges),
                );
                if *scope == node_scope {
                    add_to(&mut self.pending, "fleet", &mask.apply(&d));
                }
            }
            counters.insert(o.scope, o.counters);
        }
        track.counters = counters;
        track.gauges = gauges;

        let mut changes = Vec::new();
        for b in &stats.backends {
            for s in &b.servers {
                let scope = format!("server:{}/{}", b.name, s.name);
                let prev = track.health.insert(scope, s.health);
                let down = pb::Health::Down as i32;
                let up = pb::Health::Up as i32;
                let changed = (s.health == down && prev != Some(down))
                    || (s.health == up && prev == Some(down));
                if changed {
                    changes.push(HealthChange {
                        backend: b.name.clone(),
                        server: s.name.clone(),
                        up: s.health == up,
                        // The node's text, bounded and on one line.
                        reason: s
                            .health_reason
                            .chars()
                            .take(512)
                            .map(|c| if c.is_control() { ' ' } else { c })
                            .collect(),
                    });
                }
            }
        }
        changes
    }

    /// The node's stream ended: its gauges no longer count; its counters are kept for
    /// when it comes back.
    pub fn disconnected(&mut self, node: &str) {
        if let Some(t) = self.nodes.get_mut(node) {
            t.connected = false;
        }
    }

    /// The point of the bucket that just ended, per scope (the fleet's always present):
    /// the counted differences and the gauges of the connected nodes.
    pub fn tick(&mut self, now_ms: i64) -> HashMap<String, Values> {
        let mut point = std::mem::take(&mut self.pending);
        point.entry("fleet".into()).or_default();
        self.nodes
            .retain(|_, t| t.connected || now_ms - t.last_report_ms < FORGET_AFTER_MS);
        for (node, t) in self.nodes.iter().filter(|(_, t)| t.connected) {
            for (scope, g) in &t.gauges {
                add(point.entry(scope.clone()).or_default(), g);
            }
            if let Some(g) = t.gauges.get(&format!("node:{node}")) {
                add(point.entry("fleet".into()).or_default(), g);
            }
        }
        point
    }
}

#[cfg(test)]
#[path = "aggregate_tests.rs"]
mod tests;
