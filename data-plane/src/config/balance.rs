//! A backend's balancing plan: the algorithm with its key, the consistent-hash ring, and
//! the small state cells the algorithms advance (round-robin weights, the leastconn
//! turn). Built by `compile::backend`; the algorithms themselves are
//! `balance::algorithm`.

use std::sync::atomic::AtomicUsize;
use std::sync::Mutex;

/// What a hashing algorithm hashes.
#[derive(Debug)]
pub enum HashKey {
    Source,
    Uri,
    Header(http::HeaderName),
    UrlParam(String),
}

#[derive(Debug)]
pub enum Algorithm {
    RoundRobin,
    LeastConn,
    Random,
    Hash { key: HashKey, consistent: bool },
}

/// The balancing plan of one backend.
#[derive(Debug)]
pub struct BalancePlan {
    pub algorithm: Algorithm,
    /// Smooth weighted round-robin: each server's current weight.
    pub rr: Mutex<Vec<i64>>,
    /// Consistent-hash ring: (point, server index), sorted by point.
    pub ring: Vec<(u64, usize)>,
    /// Rotates where `leastconn` starts looking, so ties spread.
    pub turn: AtomicUsize,
}
