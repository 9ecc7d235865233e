//! The balancing algorithms: which server of a backend's tier gets a request.
//!
//! - `roundrobin`: smooth weighted round robin (as NGINX does it): over any window of
//!   Σweights picks each server gets its weight's share, interleaved rather than in bursts.
//! - `leastconn`: the server with the fewest open connections relative to its weight; the
//!   counts include tunnels and requests in flight and live outside the plan, so they
//!   survive config swaps. Ties rotate.
//! - `random`: power of two choices — two servers drawn by weight, the less loaded wins.
//! - `source`, `uri`, `hdr(name)`, `url_param(name)`: a hash of the client address, the
//!   path, a header or a query parameter picks the server, so the same key keeps reaching
//!   the same server (on every node: the hash is xxh3, unseeded). `map-based` spreads keys
//!   over the available servers by weight; `consistent` places servers on a ring by name,
//!   so adding or removing one of N servers moves only about 1/N of the keys. A request
//!   without the key (no such header or parameter) is balanced round robin, as HAProxy
//!   does.
//!
//! Backup servers are used only when no regular server can take traffic.

use std::net::IpAddr;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Mutex;

use xxhash_rust::xxh3::xxh3_64;

use crate::config::balance::{Algorithm, BalancePlan, HashKey};
use crate::config::ServerPlan;

use super::PickInput;

impl HashKey {
    fn hash(&self, input: &PickInput<'_>) -> Option<u64> {
        match self {
            HashKey::Source => Some(match input.src.to_canonical() {
                IpAddr::V4(v4) => xxh3_64(&v4.octets()),
                IpAddr::V6(v6) => xxh3_64(&v6.octets()),
            }),
            HashKey::Uri => Some(xxh3_64(input.parts.uri.path().as_bytes())),
            HashKey::Header(name) => input.parts.headers.get(name).map(|v| xxh3_64(v.as_bytes())),
            HashKey::UrlParam(name) => input.parts.uri.query().and_then(|q| {
                q.split('&')
                    .filter_map(|kv| kv.split_once('=').or(Some((kv, ""))))
                    .find(|(k, _)| *k == name)
                    .map(|(_, v)| xxh3_64(v.as_bytes()))
            }),
        }
    }
}

impl BalancePlan {
    /// Picks a server index among those `eligible` accepts, regular servers first, or
    /// None when there is none.
    pub fn pick(
        &self,
        servers: &[ServerPlan],
        input: &PickInput<'_>,
        eligible: impl Fn(usize, &ServerPlan) -> bool,
    ) -> Option<usize> {
        [false, true].into_iter().find_map(|backup| {
            self.pick_tier(servers, input, |i, s| s.backup == backup && eligible(i, s))
        })
    }

    fn pick_tier(
        &self,
        servers: &[ServerPlan],
        input: &PickInput<'_>,
        eligible: impl Fn(usize, &ServerPlan) -> bool,
    ) -> Option<usize> {
        match &self.algorithm {
            Algorithm::RoundRobin => round_robin(&self.rr, servers, eligible),
            Algorithm::LeastConn => {
                let start = self.turn.fetch_add(1, Relaxed);
                least_loaded(servers, start, &eligible)
            }
            Algorithm::Random => power_of_two(servers, &eligible),
            Algorithm::Hash { key, consistent } => match key.hash(input) {
                None => round_robin(&self.rr, servers, eligible),
                Some(h) if *consistent => self.on_ring(h, servers, &eligible),
                Some(h) => map_based(h, servers, &eligible),
            },
        }
    }

    /// The first eligible server clockwise from `h` on the ring.
    fn on_ring(
        &self,
        h: u64,
        servers: &[ServerPlan],
        eligible: &impl Fn(usize, &ServerPlan) -> bool,
    ) -> Option<usize> {
        if self.ring.is_empty() {
            return None;
        }
        let start = self.ring.partition_point(|(p, _)| *p < h);
        (0..self.ring.len())
            .map(|k| self.ring[(start + k) % self.ring.len()].1)
            .find(|&i| eligible(i, &servers[i]))
    }
}

/// The eligible servers' total weight.
fn total_weight(servers: &[ServerPlan], eligible: &impl Fn(usize, &ServerPlan) -> bool) -> u64 {
    servers
        .iter()
        .enumerate()
        .filter(|(i, s)| eligible(*i, s))
        .map(|(_, s)| u64::from(s.weight))
        .sum()
}

/// The eligible server whose share of the weight holds `slot` (< the total weight).
fn by_weight(
    mut slot: u64,
    servers: &[ServerPlan],
    eligible: &impl Fn(usize, &ServerPlan) -> bool,
) -> Option<usize> {
    for (i, s) in servers.iter().enumerate() {
        if !eligible(i, s) {
            continue;
        }
        let w = u64::from(s.weight);
        if slot < w {
            return Some(i);
        }
        slot -= w;
    }
    None
}

/// `h` modulo the eligible servers' total weight, walked over their weights.
fn map_based(
    h: u64,
    servers: &[ServerPlan],
    eligible: &impl Fn(usize, &ServerPlan) -> bool,
) -> Option<usize> {
    match total_weight(servers, eligible) {
        0 => None,
        total => by_weight(h % total, servers, eligible),
    }
}

fn load(s: &ServerPlan) -> u64 {
    s.counters.current_connections.load(Relaxed)
}

/// `a` is less loaded than `b` relative to their weights (load/weight, compared exactly).
fn lighter(a: &ServerPlan, b: &ServerPlan) -> bool {
    u128::from(load(a)) * u128::from(b.weight) < u128::from(load(b)) * u128::from(a.weight)
}

fn least_loaded(
    servers: &[ServerPlan],
    start: usize,
    eligible: &impl Fn(usize, &ServerPlan) -> bool,
) -> Option<usize> {
    let n = servers.len();
    let mut best: Option<usize> = None;
    for k in 0..n {
        let i = (start + k) % n;
        let s = &servers[i];
        if s.weight == 0 || !eligible(i, s) {
            continue;
        }
        if best.is_none_or(|b| lighter(s, &servers[b])) {
            best = Some(i);
        }
    }
    best
}

/// Two servers drawn at random by weight; the less loaded one.
fn power_of_two(
    servers: &[ServerPlan],
    eligible: &impl Fn(usize, &ServerPlan) -> bool,
) -> Option<usize> {
    let total = total_weight(servers, eligible);
    if total == 0 {
        return None;
    }
    let a = by_weight(rand::random_range(0..total), servers, eligible)?;
    let b = by_weight(rand::random_range(0..total), servers, eligible)?;
    Some(if lighter(&servers[b], &servers[a]) {
        b
    } else {
        a
    })
}

/// Smooth weighted round robin over the eligible servers, advancing `current`.
fn round_robin(
    current: &Mutex<Vec<i64>>,
    servers: &[ServerPlan],
    eligible: impl Fn(usize, &ServerPlan) -> bool,
) -> Option<usize> {
    let mut current = current.lock().expect("round-robin lock");
    let mut total = 0i64;
    let mut best: Option<usize> = None;
    for (i, s) in servers.iter().enumerate() {
        if !eligible(i, s) {
            continue;
        }
        let w = i64::from(s.weight);
        current[i] += w;
        total += w;
        if best.is_none_or(|b| current[i] > current[b]) {
            best = Some(i);
        }
    }
    if let Some(b) = best {
        current[b] -= total;
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::counters::ServerCounters;
    use http::request::Parts;
    use sluice_proto::v1 as pb;
    use sluice_proto::v1::ServerState;
    use std::collections::HashSet;
    use std::sync::Arc;

    fn server(name: &str, weight: u32, backup: bool) -> ServerPlan {
        ServerPlan {
            name: name.into(),
            address: "127.0.0.1:1".into(),
            socket_addr: None,
            weight,
            backup,
            maxconn: 0,
            cookie: None,
            state: ServerState::Ready,
            check: None,
            counters: Arc::new(ServerCounters::default()),
            pool: None,
        }
    }

    fn balancer(
        algo: pb::BalanceAlgorithm,
        consistent: bool,
        servers: &[ServerPlan],
    ) -> BalancePlan {
        let b = pb::Balance {
            algorithm: algo as i32,
            arg: "x-user".into(),
            hash_type: if consistent {
                pb::HashType::Consistent
            } else {
                pb::HashType::MapBased
            } as i32,
        };
        BalancePlan::compile(Some(&b), &weights(servers)).unwrap()
    }

    fn request(user: &str) -> Parts {
        http::Request::builder()
            .uri("/x")
            .header("x-user", user)
            .body(())
            .unwrap()
            .into_parts()
            .0
    }

    fn weights(servers: &[ServerPlan]) -> Vec<(&str, u32)> {
        servers.iter().map(|s| (&*s.name, s.weight)).collect()
    }

    fn pick(b: &BalancePlan, servers: &[ServerPlan], parts: &Parts) -> Option<usize> {
        let input = PickInput {
            src: "127.0.0.1".parse().unwrap(),
            parts,
        };
        b.pick(servers, &input, |_, s| s.accepts_new())
    }

    #[test]
    fn weights_are_respected_and_interleaved() {
        let servers = vec![
            server("a", 5, false),
            server("b", 1, false),
            server("c", 1, false),
        ];
        let b = balancer(pb::BalanceAlgorithm::Roundrobin, false, &servers);
        let parts = request("u");
        let picks: Vec<usize> = (0..7)
            .map(|_| pick(&b, &servers, &parts).unwrap())
            .collect();
        assert_eq!(
            picks,
            vec![0, 0, 1, 0, 2, 0, 0],
            "smooth, not a burst of five"
        );
    }

    #[test]
    fn backups_only_when_no_regular_server() {
        let servers = vec![server("a", 1, false), server("bk", 1, true)];
        let b = balancer(pb::BalanceAlgorithm::Roundrobin, false, &servers);
        let parts = request("u");
        let input = PickInput {
            src: "127.0.0.1".parse().unwrap(),
            parts: &parts,
        };
        for _ in 0..4 {
            assert_eq!(b.pick(&servers, &input, |_, s| s.accepts_new()), Some(0));
        }
        assert_eq!(b.pick(&servers, &input, |i, _| i != 0), Some(1));
        assert_eq!(b.pick(&servers, &input, |_, _| false), None);
    }

    #[test]
    fn leastconn_prefers_the_lightest_by_weight() {
        let servers = vec![server("a", 1, false), server("b", 2, false)];
        servers[0].counters.current_connections.store(3, Relaxed);
        servers[1].counters.current_connections.store(5, Relaxed);
        let b = balancer(pb::BalanceAlgorithm::Leastconn, false, &servers);
        // 3/1 against 5/2: b is lighter.
        assert_eq!(pick(&b, &servers, &request("u")), Some(1));
        servers[1].counters.current_connections.store(7, Relaxed);
        assert_eq!(pick(&b, &servers, &request("u")), Some(0));
    }

    #[test]
    fn consistent_hashing_moves_only_the_removed_servers_keys() {
        let names = ["s1", "s2", "s3", "s4", "s5"];
        let all: Vec<_> = names.iter().map(|n| server(n, 1, false)).collect();
        let four: Vec<_> = names[..4].iter().map(|n| server(n, 1, false)).collect();
        let b5 = balancer(pb::BalanceAlgorithm::Hdr, true, &all);
        let b4 = balancer(pb::BalanceAlgorithm::Hdr, true, &four);
        let mut moved = 0;
        let mut per_server = [0usize; 5];
        for k in 0..5000 {
            let parts = request(&format!("user-{k}"));
            let before = pick(&b5, &all, &parts).unwrap();
            let after = pick(&b4, &four, &parts).unwrap();
            per_server[before] += 1;
            if before != 4 {
                assert_eq!(all[before].name, four[after].name, "key {k} moved");
            } else {
                moved += 1;
            }
        }
        // About 1/5 of the keys lived on the removed server.
        assert!((700..1300).contains(&moved), "{moved} of 5000 moved");
        assert!(per_server.iter().all(|&n| n > 600), "{per_server:?}");
    }

    #[test]
    fn a_missing_hash_key_falls_back_to_round_robin() {
        let servers = vec![server("a", 1, false), server("b", 1, false)];
        let b = balancer(pb::BalanceAlgorithm::Hdr, false, &servers);
        let parts = http::Request::builder()
            .uri("/")
            .body(())
            .unwrap()
            .into_parts()
            .0;
        let picks: Vec<_> = (0..4)
            .map(|_| pick(&b, &servers, &parts).unwrap())
            .collect();
        assert_eq!(picks, vec![0, 1, 0, 1]);
        // With the key: always the same server.
        let keyed = request("alice");
        let first = pick(&b, &servers, &keyed);
        assert!((0..10).all(|_| pick(&b, &servers, &keyed) == first));
    }

    #[test]
    fn uri_and_url_param_hash_their_part_of_the_request() {
        let servers: Vec<_> = (0..8).map(|i| server(&format!("s{i}"), 1, false)).collect();
        let req = |uri: &str| {
            http::Request::builder()
                .uri(uri)
                .body(())
                .unwrap()
                .into_parts()
                .0
        };
        let by_uri = balancer(pb::BalanceAlgorithm::Uri, false, &servers);
        // The path decides; the query does not.
        let a = pick(&by_uri, &servers, &req("/room/42?x=1"));
        assert_eq!(a, pick(&by_uri, &servers, &req("/room/42?x=2")));
        let spread: HashSet<_> = (0..40)
            .map(|i| pick(&by_uri, &servers, &req(&format!("/room/{i}"))))
            .collect();
        assert!(spread.len() >= 4, "{spread:?}");

        let b = pb::Balance {
            algorithm: pb::BalanceAlgorithm::UrlParam as i32,
            arg: "room".into(),
            hash_type: pb::HashType::MapBased as i32,
        };
        let by_param = BalancePlan::compile(Some(&b), &weights(&servers)).unwrap();
        let one = pick(&by_param, &servers, &req("/a?user=1&room=7"));
        assert_eq!(one, pick(&by_param, &servers, &req("/b?room=7")));
    }

    #[test]
    fn random_two_choices_avoid_the_loaded_server() {
        let servers = vec![server("busy", 1, false), server("idle", 1, false)];
        servers[0].counters.current_connections.store(50, Relaxed);
        let b = balancer(pb::BalanceAlgorithm::Random, false, &servers);
        let parts = request("u");
        let idle = (0..200)
            .filter(|_| pick(&b, &servers, &parts) == Some(1))
            .count();
        // The busy server wins only when both draws land on it (about 1 in 4).
        assert!(idle > 120, "{idle} of 200 went to the idle server");
    }
}
