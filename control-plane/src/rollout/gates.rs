//! The gates a rollout stage must hold, read from what nodes report: the error rate of
//! the nodes on the new version against a baseline, and the share of servers they see
//! down. Pure functions of the readings, so each rule is tested on its own.

use serde::{Deserialize, Serialize};
use sluice_proto::v1 as pb;
use utoipa::ToSchema;

use super::policy::Gates;

/// The counters of one node the gates read, cumulative as the node reports them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Totals {
    pub requests: u64,
    /// 5xx responses, server connect errors and tunnels ended by a server error.
    pub errors: u64,
}

impl Totals {
    pub fn of(stats: &pb::Stats) -> Totals {
        let mut t = Totals::default();
        for f in &stats.frontends {
            t.requests += f.total_requests;
            t.errors += f.responses_by_class.get(4).copied().unwrap_or(0);
        }
        for s in stats.backends.iter().flat_map(|b| &b.servers) {
            t.errors += s.connect_errors + s.tunnel_errors;
        }
        t
    }

    /// What was counted since `start`; a node whose counters went down restarted and
    /// counts from zero.
    pub fn since(self, start: Totals) -> Totals {
        if self.requests < start.requests || self.errors < start.errors {
            self
        } else {
            Totals {
                requests: self.requests - start.requests,
                errors: self.errors - start.errors,
            }
        }
    }
}

/// Checked servers a node sees down, and checked servers in all.
pub fn servers_down(stats: &pb::Stats) -> (u64, u64) {
    let mut down = 0;
    let mut checked = 0;
    for s in stats.backends.iter().flat_map(|b| &b.servers) {
        match pb::Health::try_from(s.health) {
            Ok(pb::Health::Down) => {
                down += 1;
                checked += 1;
            }
            Ok(pb::Health::Up) => checked += 1,
            _ => {}
        }
    }
    (down, checked)
}

/// One node as the gates see it during a stage.
#[derive(Debug, Clone, Copy)]
pub struct NodeReading {
    /// Runs the version being rolled out (else the stable one).
    pub on_new: bool,
    /// Counted since the stage started.
    pub delta: Totals,
    pub down: u64,
    pub checked: u64,
}

/// What a stage's gates measured.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct GateReading {
    /// Requests and errors on the new version's nodes since the stage started.
    pub requests: u64,
    pub errors: u64,
    pub error_rate: f64,
    /// What the error rate is held against: `previous_version` (nodes not reached,
    /// same time), `previous_stage`, or `none` (taken as 0).
    pub baseline: String,
    pub baseline_rate: f64,
    /// Share of checked servers the new version's nodes see down, and the others.
    pub servers_down: f64,
    pub baseline_servers_down: f64,
}

fn rate(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        0.0
    } else {
        part as f64 / whole as f64
    }
}

/// Reads the gates over `nodes`; `previous_stage`: the error rate the stage before
/// measured, if any. Returns the reading and, when a gate fails, why.
pub fn evaluate(
    nodes: &[NodeReading],
    gates: &Gates,
    previous_stage: Option<f64>,
) -> (GateReading, Option<String>) {
    let sum = |new: bool| {
        nodes
            .iter()
            .filter(|n| n.on_new == new)
            .fold((Totals::default(), 0, 0), |(t, d, c), n| {
                (
                    Totals {
                        requests: t.requests + n.delta.requests,
                        errors: t.errors + n.delta.errors,
                    },
                    d + n.down,
                    c + n.checked,
                )
            })
    };
    let (new, new_down, new_checked) = sum(true);
    let (old, old_down, old_checked) = sum(false);
    let (baseline, baseline_rate) = if old.requests >= gates.min_requests.max(1) {
        ("previous_version", rate(old.errors, old.requests))
    } else if let Some(r) = previous_stage {
        ("previous_stage", r)
    } else {
        ("none", 0.0)
    };
    let reading = GateReading {
        requests: new.requests,
        errors: new.errors,
        error_rate: rate(new.errors, new.requests),
        baseline: baseline.into(),
        baseline_rate,
        servers_down: rate(new_down, new_checked),
        baseline_servers_down: rate(old_down, old_checked),
    };
    let pct = |f: f64| format!("{:.1}%", f * 100.0);
    let failed = if new.requests >= gates.min_requests
        && reading.error_rate > reading.baseline_rate + gates.max_error_rate_increase
    {
        Some(format!(
            "error rate {} ({} of {} requests) on the new version against {} ({}): more than {} points worse",
            pct(reading.error_rate),
            new.errors,
            new.requests,
            pct(baseline_rate),
            baseline.replace('_', " "),
            pct(gates.max_error_rate_increase).trim_end_matches('%'),
        ))
    } else if new_checked > 0
        && reading.servers_down > gates.max_servers_down
        && reading.servers_down > reading.baseline_servers_down
    {
        Some(format!(
            "servers down: the new version's nodes see {} of checked servers down ({new_down} of {new_checked}) against {} on the others, past {}",
            pct(reading.servers_down),
            pct(reading.baseline_servers_down),
            pct(gates.max_servers_down),
        ))
    } else {
        None
    };
    (reading, failed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(on_new: bool, requests: u64, errors: u64, down: u64, checked: u64) -> NodeReading {
        NodeReading {
            on_new,
            delta: Totals { requests, errors },
            down,
            checked,
        }
    }

    #[test]
    fn the_error_rate_is_held_against_the_nodes_not_reached_then_the_stage_before() {
        let g = Gates::default(); // 5 points, 20 requests, 50 % down
                                  // Canary all errors, the rest clean: fails, against the previous version.
        let (r, failed) = evaluate(
            &[node(true, 40, 40, 0, 2), node(false, 100, 0, 0, 2)],
            &g,
            None,
        );
        assert_eq!(r.baseline, "previous_version");
        assert!(failed
            .unwrap()
            .starts_with("error rate 100.0% (40 of 40 requests)"));
        // Within the margin of the others' rate: holds.
        let (_, failed) = evaluate(
            &[node(true, 100, 7, 0, 2), node(false, 100, 4, 0, 2)],
            &g,
            None,
        );
        assert_eq!(failed, None);
        // Too little traffic to judge: holds.
        let (r, failed) = evaluate(&[node(true, 10, 10, 0, 0)], &g, None);
        assert_eq!((r.error_rate, failed), (1.0, None));
        // Every node reached: the stage before is the baseline.
        let (r, failed) = evaluate(&[node(true, 100, 9, 0, 0)], &g, Some(0.06));
        assert_eq!((r.baseline.as_str(), failed), ("previous_stage", None));
        let (_, failed) = evaluate(&[node(true, 100, 12, 0, 0)], &g, Some(0.06));
        assert!(failed.is_some());
        // Nothing to hold against: 0.
        let (r, failed) = evaluate(&[node(true, 100, 6, 0, 0)], &g, None);
        assert_eq!(r.baseline, "none");
        assert!(failed.is_some());
    }

    #[test]
    fn a_health_collapse_fails_only_when_worse_than_the_others_see() {
        let g = Gates::default();
        let (r, failed) = evaluate(&[node(true, 0, 0, 2, 2), node(false, 0, 0, 0, 2)], &g, None);
        assert_eq!(r.servers_down, 1.0);
        assert!(failed.unwrap().starts_with("servers down"));
        // The same outage everywhere is not the version's doing.
        let (_, failed) = evaluate(&[node(true, 0, 0, 2, 2), node(false, 0, 0, 2, 2)], &g, None);
        assert_eq!(failed, None);
        // Half down is not past 50 %.
        let (_, failed) = evaluate(&[node(true, 0, 0, 1, 2)], &g, None);
        assert_eq!(failed, None);
    }

    #[test]
    fn counters_that_went_down_count_from_zero() {
        let start = Totals {
            requests: 100,
            errors: 5,
        };
        assert_eq!(
            Totals {
                requests: 150,
                errors: 6
            }
            .since(start),
            Totals {
                requests: 50,
                errors: 1
            }
        );
        assert_eq!(
            Totals {
                requests: 30,
                errors: 1
            }
            .since(start),
            Totals {
                requests: 30,
                errors: 1
            }
        );
    }
}
