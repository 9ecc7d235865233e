//! A node's headline rates over the newest closed bucket: what the fleet view shows per
//! node, and what a replica records with its heartbeat so that the others show it too.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::metric::Metric;
use super::Tick;

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct NodeRates {
    pub upgrades_per_s: f64,
    pub requests_per_s: f64,
    /// Errors of every kind (connect, timeout, bad response, no server, queue timeout,
    /// bad request, TLS) and 5xx responses per second.
    pub errors_per_s: f64,
    /// Errors per request (0 without requests).
    pub error_rate: f64,
}

impl NodeRates {
    /// `node`'s rates in `tick`.
    pub fn of(tick: &Tick, node: &str) -> NodeRates {
        let scope = format!("node:{node}");
        let errors: f64 = Metric::ERRORS
            .into_iter()
            .chain([Metric::Responses5xx])
            .map(|m| tick.value(&scope, m))
            .sum();
        let requests = tick.value(&scope, Metric::Requests);
        NodeRates {
            upgrades_per_s: tick.value(&scope, Metric::Upgrades),
            requests_per_s: requests,
            errors_per_s: errors,
            error_rate: if requests > 0.0 {
                errors / requests
            } else {
                0.0
            },
        }
    }
}
