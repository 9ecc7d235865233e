//! Steady HTTP requests through a set of nodes while a test changes what they run: each
//! node's answers other than 200 are counted, so a test can say which nodes failed
//! requests and which served throughout.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

/// Requests through every node until dropped (at most two minutes).
pub struct Traffic {
    stop: Arc<AtomicBool>,
    failures: Arc<HashMap<String, AtomicU64>>,
}

impl Traffic {
    /// `GET /ping` through each of `binds` (node id, address) in turn, every 10 ms.
    pub fn start(binds: Vec<(String, SocketAddr)>) -> Traffic {
        let stop = Arc::new(AtomicBool::new(false));
        let failures: Arc<HashMap<String, AtomicU64>> = Arc::new(
            binds
                .iter()
                .map(|(id, _)| (id.clone(), AtomicU64::new(0)))
                .collect(),
        );
        let (stop2, fail2) = (stop.clone(), failures.clone());
        tokio::spawn(async move {
            let client = reqwest::Client::new();
            let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
            while !stop2.load(Relaxed) && tokio::time::Instant::now() < deadline {
                for (id, addr) in &binds {
                    let ok = client
                        .get(format!("http://{addr}/ping"))
                        .timeout(Duration::from_secs(2))
                        .send()
                        .await
                        .is_ok_and(|r| r.status() == 200);
                    if !ok {
                        fail2[id].fetch_add(1, Relaxed);
                    }
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        });
        Traffic { stop, failures }
    }

    /// Requests through `node` that did not get a 200 so far.
    pub fn failures(&self, node: &str) -> u64 {
        self.failures.get(node).map_or(0, |n| n.load(Relaxed))
    }
}

impl Drop for Traffic {
    fn drop(&mut self) {
        self.stop.store(true, Relaxed);
    }
}
