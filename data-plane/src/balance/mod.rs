//! Server selection. `roundrobin` is smooth weighted round robin (as NGINX does it): over
//! any window of Σweights picks, each server gets its weight's share, interleaved rather
//! than in bursts. Backup servers are used only when no regular server can take traffic.

use std::sync::Mutex;

use crate::config::ServerPlan;

/// Smooth weighted round-robin state of one backend.
#[derive(Debug)]
pub struct RoundRobin {
    current: Mutex<Vec<i64>>,
}

impl RoundRobin {
    pub fn new(servers: usize) -> Self {
        Self {
            current: Mutex::new(vec![0; servers]),
        }
    }

    /// Picks a server index among those `eligible` accepts, or None.
    pub fn pick(
        &self,
        servers: &[ServerPlan],
        eligible: impl Fn(usize, &ServerPlan) -> bool,
    ) -> Option<usize> {
        for backup in [false, true] {
            if let Some(i) = self.pick_among(servers, |i, s| s.backup == backup && eligible(i, s)) {
                return Some(i);
            }
        }
        None
    }

    fn pick_among(
        &self,
        servers: &[ServerPlan],
        eligible: impl Fn(usize, &ServerPlan) -> bool,
    ) -> Option<usize> {
        let mut current = self.current.lock().expect("round-robin lock");
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
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::ServerCounters;
    use sluice_proto::v1::ServerState;
    use std::sync::Arc;

    fn server(name: &str, weight: u32, backup: bool) -> ServerPlan {
        ServerPlan {
            name: name.into(),
            address: "127.0.0.1:1".into(),
            socket_addr: None,
            weight,
            backup,
            state: ServerState::Ready,
            counters: Arc::new(ServerCounters::default()),
            pool: None,
        }
    }

    #[test]
    fn weights_are_respected_and_interleaved() {
        let servers = vec![
            server("a", 5, false),
            server("b", 1, false),
            server("c", 1, false),
        ];
        let rr = RoundRobin::new(3);
        let picks: Vec<usize> = (0..7)
            .map(|_| rr.pick(&servers, |_, s| s.accepts_new()).unwrap())
            .collect();
        assert_eq!(picks.iter().filter(|&&i| i == 0).count(), 5);
        assert_eq!(picks.iter().filter(|&&i| i == 1).count(), 1);
        assert_eq!(
            picks,
            vec![0, 0, 1, 0, 2, 0, 0],
            "smooth, not a burst of five"
        );
    }

    #[test]
    fn backups_only_when_no_regular_server() {
        let servers = vec![server("a", 1, false), server("bk", 1, true)];
        let rr = RoundRobin::new(2);
        for _ in 0..4 {
            assert_eq!(rr.pick(&servers, |_, s| s.accepts_new()), Some(0));
        }
        assert_eq!(rr.pick(&servers, |i, _| i != 0), Some(1));
        assert_eq!(rr.pick(&servers, |_, _| false), None);
    }
}
