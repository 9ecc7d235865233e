//! Stick tables: per-frontend counters keyed by client address, for `track-sc0/1/2 src`
//! and the `sc_conn_cur`, `sc_conn_rate`, `sc_http_req_rate` fetches — the article's
//! per-source limits on WebSocket upgrades.
//!
//! An entry counts, for one address: connections currently tracked (`conn_cur`; a
//! connection that became a tunnel stays counted until the tunnel closes), the rate of
//! newly tracked connections and the rate of tracked HTTP requests. Rates are HAProxy's
//! sliding window over the configured period (`conn_rate(10s)`): the current period's
//! count plus the previous period's, weighted by how much of it is still in the window.
//! Entries unused (no tracked connection) for `expire` are removed; when the table holds
//! `size` entries, the least recently used unused one makes room. Tables live outside the
//! plan, so a config push keeps their counts.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sluice_proto::v1 as pb;

/// Rate period when the table does not name one.
const DEFAULT_PERIOD: Duration = Duration::from_secs(10);
/// How often a table is swept for expired entries (at most).
const SWEEP_EVERY: Duration = Duration::from_secs(1);

/// A table's definition; a change of definition starts a new table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Spec {
    pub size: usize,
    pub expire: Duration,
    pub conn_rate_period: Duration,
    pub http_req_rate_period: Duration,
}

impl Spec {
    pub fn from_pb(t: &pb::StickTable) -> Self {
        let period = |kind: pb::CounterKind| {
            t.store
                .iter()
                .find(|c| c.kind() == kind && c.period_ms > 0)
                .map_or(DEFAULT_PERIOD, |c| Duration::from_millis(c.period_ms))
        };
        Spec {
            size: usize::try_from(t.size).unwrap_or(usize::MAX).max(1),
            expire: Duration::from_millis(t.expire_ms.max(1)),
            conn_rate_period: period(pb::CounterKind::ConnRate),
            http_req_rate_period: period(pb::CounterKind::HttpReqRate),
        }
    }
}

/// Events per period over a sliding window.
#[derive(Debug)]
struct Rate {
    period: Duration,
    start: Instant,
    curr: u64,
    prev: u64,
}

impl Rate {
    fn new(period: Duration, now: Instant) -> Self {
        Rate {
            period,
            start: now,
            curr: 0,
            prev: 0,
        }
    }

    fn roll(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.start);
        if elapsed < self.period {
            return;
        }
        self.prev = if elapsed < 2 * self.period {
            self.curr
        } else {
            0
        };
        self.curr = 0;
        let periods = (elapsed.as_nanos() / self.period.as_nanos().max(1)) as u32;
        self.start += self.period * periods;
    }

    fn add(&mut self, now: Instant) {
        self.roll(now);
        self.curr += 1;
    }

    fn value(&mut self, now: Instant) -> u64 {
        self.roll(now);
        let into = now.saturating_duration_since(self.start).as_nanos();
        let period = self.period.as_nanos().max(1);
        let weight = period.saturating_sub(into);
        self.curr + (u128::from(self.prev) * weight / period) as u64
    }
}

#[derive(Debug)]
struct Rates {
    conn: Rate,
    http_req: Rate,
    last_seen: Instant,
}

/// The counters of one client address.
#[derive(Debug)]
pub struct Entry {
    pub conn_cur: AtomicU64,
    rates: Mutex<Rates>,
}

impl Entry {
    pub fn conn_rate(&self) -> u64 {
        self.rates
            .lock()
            .expect("entry lock")
            .conn
            .value(Instant::now())
    }

    pub fn http_req_rate(&self) -> u64 {
        self.rates
            .lock()
            .expect("entry lock")
            .http_req
            .value(Instant::now())
    }

    /// Counts one HTTP request of a tracked connection.
    pub fn count_request(&self) {
        let now = Instant::now();
        let mut r = self.rates.lock().expect("entry lock");
        r.http_req.add(now);
        r.last_seen = now;
    }
}

/// A connection tracked in a table: counted in its entry's `conn_cur` until dropped.
#[derive(Debug)]
pub struct Track {
    pub entry: Arc<Entry>,
}

impl Drop for Track {
    fn drop(&mut self) {
        self.entry.conn_cur.fetch_sub(1, Relaxed);
        self.entry.rates.lock().expect("entry lock").last_seen = Instant::now();
    }
}

#[derive(Debug)]
pub struct StickTable {
    pub spec: Spec,
    entries: Mutex<HashMap<IpAddr, Arc<Entry>>>,
    last_sweep: Mutex<Instant>,
}

impl StickTable {
    pub fn new(spec: Spec) -> Self {
        StickTable {
            spec,
            entries: Mutex::default(),
            last_sweep: Mutex::new(Instant::now()),
        }
    }

    pub fn len(&self) -> usize {
        self.entries.lock().expect("table lock").len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Starts tracking a connection from `key`: its entry's `conn_cur` and connection
    /// rate go up, and the returned guard gives `conn_cur` back.
    pub fn track(&self, key: IpAddr) -> Arc<Track> {
        let key = key.to_canonical();
        let now = Instant::now();
        self.maybe_sweep(now);
        let entry = {
            let mut entries = self.entries.lock().expect("table lock");
            if !entries.contains_key(&key) && entries.len() >= self.spec.size {
                self.make_room(&mut entries, now);
            }
            entries
                .entry(key)
                .or_insert_with(|| {
                    Arc::new(Entry {
                        conn_cur: AtomicU64::new(0),
                        rates: Mutex::new(Rates {
                            conn: Rate::new(self.spec.conn_rate_period, now),
                            http_req: Rate::new(self.spec.http_req_rate_period, now),
                            last_seen: now,
                        }),
                    })
                })
                .clone()
        };
        entry.conn_cur.fetch_add(1, Relaxed);
        {
            let mut r = entry.rates.lock().expect("entry lock");
            r.conn.add(now);
            r.last_seen = now;
        }
        Arc::new(Track { entry })
    }

    fn unused_since(e: &Entry) -> Option<Instant> {
        (e.conn_cur.load(Relaxed) == 0).then(|| e.rates.lock().expect("entry lock").last_seen)
    }

    /// Removes the least recently used entry that no connection uses.
    fn make_room(&self, entries: &mut HashMap<IpAddr, Arc<Entry>>, now: Instant) {
        Self::purge(entries, now, self.spec.expire);
        if entries.len() < self.spec.size {
            return;
        }
        let oldest = entries
            .iter()
            .filter_map(|(k, e)| Some((*k, Self::unused_since(e)?)))
            .min_by_key(|(_, seen)| *seen)
            .map(|(k, _)| k);
        if let Some(k) = oldest {
            entries.remove(&k);
        }
    }

    fn purge(entries: &mut HashMap<IpAddr, Arc<Entry>>, now: Instant, expire: Duration) {
        entries.retain(|_, e| {
            Self::unused_since(e).is_none_or(|seen| now.saturating_duration_since(seen) < expire)
        });
    }

    fn maybe_sweep(&self, now: Instant) {
        {
            let mut last = self.last_sweep.lock().expect("sweep lock");
            if now.saturating_duration_since(*last) < SWEEP_EVERY {
                return;
            }
            *last = now;
        }
        let mut entries = self.entries.lock().expect("table lock");
        Self::purge(&mut entries, now, self.spec.expire);
    }
}

/// Tables by frontend name, kept across config pushes while their definition holds.
#[derive(Debug, Default)]
pub struct StickRegistry {
    tables: Mutex<HashMap<String, Arc<StickTable>>>,
}

impl StickRegistry {
    pub fn table(&self, frontend: &str, spec: Spec) -> Arc<StickTable> {
        let mut tables = self.tables.lock().expect("stick registry lock");
        match tables.get(frontend) {
            Some(t) if t.spec == spec => t.clone(),
            _ => {
                let t = Arc::new(StickTable::new(spec));
                tables.insert(frontend.to_string(), t.clone());
                t
            }
        }
    }

    /// Forgets tables no plan uses any more.
    pub fn prune(&self) {
        self.tables
            .lock()
            .expect("stick registry lock")
            .retain(|_, t| Arc::strong_count(t) > 1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(size: usize) -> Spec {
        Spec {
            size,
            expire: Duration::from_secs(60),
            conn_rate_period: Duration::from_secs(10),
            http_req_rate_period: Duration::from_secs(10),
        }
    }

    #[test]
    fn sliding_window_rate() {
        let t0 = Instant::now();
        let mut r = Rate::new(Duration::from_secs(10), t0);
        for _ in 0..30 {
            r.add(t0);
        }
        assert_eq!(r.value(t0 + Duration::from_secs(5)), 30);
        // Half-way through the next period, half of the previous one still counts.
        assert_eq!(r.value(t0 + Duration::from_secs(15)), 15);
        assert_eq!(r.value(t0 + Duration::from_secs(25)), 0);
    }

    #[test]
    fn conn_cur_follows_tracked_connections() {
        let table = StickTable::new(spec(10));
        let ip: IpAddr = "10.0.0.1".parse().unwrap();
        let a = table.track(ip);
        let b = table.track(ip);
        assert_eq!(a.entry.conn_cur.load(Relaxed), 2);
        assert_eq!(a.entry.conn_rate(), 2);
        drop(b);
        assert_eq!(a.entry.conn_cur.load(Relaxed), 1);
        // IPv4-mapped addresses share the IPv4 entry.
        let mapped = table.track("::ffff:10.0.0.1".parse().unwrap());
        assert_eq!(mapped.entry.conn_cur.load(Relaxed), 2);
    }

    #[test]
    fn a_full_table_evicts_the_least_recently_used_unused_entry() {
        let table = StickTable::new(spec(2));
        let busy = table.track("10.0.0.1".parse().unwrap());
        drop(table.track("10.0.0.2".parse().unwrap()));
        let _third = table.track("10.0.0.3".parse().unwrap());
        assert_eq!(table.len(), 2);
        let entries = table.entries.lock().unwrap();
        assert!(entries.contains_key(&"10.0.0.1".parse::<IpAddr>().unwrap()));
        assert!(!entries.contains_key(&"10.0.0.2".parse::<IpAddr>().unwrap()));
        drop(entries);
        drop(busy);
    }
}
