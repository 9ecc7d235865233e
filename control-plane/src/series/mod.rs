//! Traffic history: time series per fleet, node, frontend, backend and server, built
//! from the stats every node streams, stored downsampled and bounded.
//!
//! Reports are aggregated in memory ([`aggregate`]); every 10 seconds one point per scope
//! is written to the store in one transaction, so the database takes a batch per tick
//! whatever the number of nodes and reports. Coarser tiers are computed from the stored
//! finer one when their bucket closes, which makes them survive a restart:
//!
//! | tier | bucket | kept (fleet, frontends, backends, servers) | kept (per node) |
//! |------|--------|--------------------------------------------|-----------------|
//! | 0    | 10 s   | 6 hours                                    | 1 hour          |
//! | 1    | 1 min  | 7 days                                     | 24 hours        |
//! | 2    | 10 min | 90 days                                    | 7 days          |
//!
//! Per-node history is shorter because it is most of the rows (one scope per node); the
//! figures for 200 nodes are in BENCHMARKS.md. A query picks the coarsest tier whose
//! bucket fits its step and that still covers its start.

pub mod aggregate;
pub mod metric;
pub mod rates;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use sluice_proto::v1 as pb;
use tokio::sync::broadcast;

use crate::clock::unix_ms;
use crate::store::{Database, Store, StoreError};
use aggregate::{Aggregator, HealthChange};
use metric::{add, pack, unpack, Metric, Values, COUNT};

/// One storage tier: its bucket and how long its points are kept.
#[derive(Debug, Clone, Copy)]
pub struct Tier {
    pub step_ms: i64,
    pub keep_ms: i64,
    /// Retention of `node:` scopes.
    pub keep_nodes_ms: i64,
}

/// How long after closing a bucket a replica on a shared database reads the others'
/// points for it.
const MERGE_AFTER_MS: u64 = 1_000;

const MINUTE: i64 = 60_000;
const HOUR: i64 = 60 * MINUTE;
const DAY: i64 = 24 * HOUR;

pub const TIERS: [Tier; 3] = [
    Tier {
        step_ms: 10_000,
        keep_ms: 6 * HOUR,
        keep_nodes_ms: HOUR,
    },
    Tier {
        step_ms: MINUTE,
        keep_ms: 7 * DAY,
        keep_nodes_ms: DAY,
    },
    Tier {
        step_ms: 10 * MINUTE,
        keep_ms: 90 * DAY,
        keep_nodes_ms: 7 * DAY,
    },
];

/// Most buckets one query may return.
pub const MAX_POINTS: i64 = 2000;

/// The point of one bucket, as the live feed sends it.
#[derive(Debug)]
pub struct Tick {
    /// Bucket start (Unix ms).
    pub t: i64,
    pub step_ms: i64,
    pub points: HashMap<String, Values>,
}

impl Tick {
    /// `m` in `scope` as served: a gauge's level or a counter's rate per second.
    pub fn value(&self, scope: &str, m: Metric) -> f64 {
        let v = self.points.get(scope).map_or(0, |v| v[m.id()]) as f64;
        if m.is_gauge() {
            v
        } else {
            v * 1000.0 / self.step_ms as f64
        }
    }
}

/// Why a series query was refused.
#[derive(Debug, thiserror::Error)]
pub enum SeriesError {
    #[error("{field}: {message}")]
    BadQuery {
        field: &'static str,
        message: String,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What to read.
#[derive(Debug, Clone)]
pub struct SeriesQuery {
    pub scope: String,
    pub metrics: Vec<Metric>,
    pub from_ms: i64,
    pub to_ms: i64,
    /// The bucket wanted; `None`: about 300 points over the range.
    pub step_ms: Option<i64>,
}

/// A query's answer, column-wise: one time per bucket, one column per metric (`None`
/// where the control plane was not recording).
#[derive(Debug, Clone)]
pub struct Table {
    pub step_ms: i64,
    /// The bucket of the tier it was read from.
    pub tier_step_ms: i64,
    pub times: Vec<i64>,
    pub columns: Vec<(Metric, Vec<Option<f64>>)>,
}

pub struct Series {
    store: Store,
    agg: Mutex<Aggregator>,
    live: broadcast::Sender<Arc<Tick>>,
    latest: Mutex<Option<Arc<Tick>>>,
    /// This replica's name: its points are its own nodes'; readers add the replicas up.
    replica: String,
    /// Per tier, the start of the next bucket to compute from the finer tier.
    next_bucket: tokio::sync::Mutex<[Option<i64>; 3]>,
}

fn keep(tier: &Tier, scope: &str) -> i64 {
    if scope.starts_with("node:") {
        tier.keep_nodes_ms
    } else {
        tier.keep_ms
    }
}

impl Series {
    /// `started_ms`: when this control plane started (see [`aggregate`]); `replica`: its
    /// name, under which it writes the points of its own nodes.
    pub fn new(store: Store, started_ms: i64, replica: &str) -> Arc<Self> {
        Arc::new(Self {
            store,
            replica: replica.to_string(),
            agg: Mutex::new(Aggregator::new(started_ms)),
            live: broadcast::channel(16).0,
            latest: Mutex::new(None),
            next_bucket: tokio::sync::Mutex::new([None; 3]),
        })
    }

    /// Takes a node's report; returns the server health changes it shows.
    pub fn observe(&self, node: &str, stats: &pb::Stats) -> Vec<HealthChange> {
        self.agg
            .lock()
            .expect("series lock")
            .observe(node, stats, unix_ms())
    }

    pub fn disconnected(&self, node: &str) {
        self.agg.lock().expect("series lock").disconnected(node);
    }

    /// Every bucket's point as it closes.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Tick>> {
        self.live.subscribe()
    }

    /// The newest closed bucket.
    pub fn latest(&self) -> Option<Arc<Tick>> {
        self.latest.lock().expect("series lock").clone()
    }

    /// Closes a bucket every 10 s (on the wall clock's multiples) until shutdown.
    pub async fn run(self: Arc<Self>, mut shutdown: tokio::sync::watch::Receiver<bool>) {
        let step = TIERS[0].step_ms;
        loop {
            let now = unix_ms();
            let next = now - now.rem_euclid(step) + step;
            let wait = std::time::Duration::from_millis((next - now) as u64);
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = shutdown.changed() => return,
            }
            let point = self.agg.lock().expect("series lock").tick(next);
            self.close(next - step, point, next).await;
        }
    }

    /// Records the point of the bucket starting at `t`, publishes it, and computes the
    /// coarser tiers' buckets that closed by `now`.
    pub async fn close(&self, t: i64, point: HashMap<String, Values>, now: i64) {
        let rows: Vec<(String, i64, Vec<u8>)> = point
            .iter()
            .filter(|(scope, v)| *scope == "fleet" || v.iter().any(|&x| x != 0))
            .map(|(scope, v)| (scope.clone(), t, pack(v)))
            .collect();
        let shared = self.store.database() == Database::Postgres;
        let mut own = Some(point);
        if !shared {
            self.publish(t, own.take().unwrap_or_default());
        }
        if let Err(error) = self.store.write_series(0, &self.replica, &rows).await {
            tracing::warn!(%error, "could not record the traffic history");
            if let Some(point) = own.take() {
                self.publish(t, point);
            }
            return;
        }
        if shared {
            // Several replicas may share the database: the live point is the whole
            // fleet's, once the others (closing the same bucket on the wall clock) had a
            // moment to write theirs.
            tokio::time::sleep(std::time::Duration::from_millis(MERGE_AFTER_MS)).await;
            match self.store.read_series(0, (None, None), t, t).await {
                Ok(rows) => {
                    let mut sums: HashMap<String, Values> = HashMap::new();
                    for r in rows {
                        add(sums.entry(r.scope).or_default(), &unpack(&r.vals));
                    }
                    self.publish(t, sums);
                }
                Err(error) => {
                    tracing::warn!(%error, "reading the other replicas' traffic; showing this replica's");
                    self.publish(t, own.take().unwrap_or_default());
                }
            }
        }
        if let Err(error) = self.downsample(now).await {
            tracing::warn!(%error, "could not downsample the traffic history");
        }
    }

    /// Makes the bucket starting at `t` the newest for the API and the live feed.
    fn publish(&self, t: i64, points: HashMap<String, Values>) {
        let tick = Arc::new(Tick {
            t,
            step_ms: TIERS[0].step_ms,
            points,
        });
        *self.latest.lock().expect("series lock") = Some(tick.clone());
        let _ = self.live.send(tick);
    }

    /// Computes every tier-1 and tier-2 bucket that closed by `now` from the finer tier,
    /// and applies the retention when a tier-1 bucket was written.
    pub async fn downsample(&self, now: i64) -> Result<(), StoreError> {
        let mut next = self.next_bucket.lock().await;
        let mut wrote = false;
        for k in 1..TIERS.len() {
            let step = TIERS[k].step_ms;
            let mut b = match next[k] {
                Some(b) => b,
                None => match self.store.last_series_time(k as u8, &self.replica).await? {
                    Some(t) => t + step,
                    None => now - now.rem_euclid(step) - step,
                },
            };
            // After a long stop, start within the finer tier's retention.
            let oldest = now - TIERS[k - 1].keep_ms;
            b = b.max(oldest - oldest.rem_euclid(step));
            while b + step <= now {
                self.fold(k, b).await?;
                wrote = true;
                b += step;
            }
            next[k] = Some(b);
        }
        if wrote {
            for (k, tier) in TIERS.iter().enumerate() {
                self.store
                    .prune_series(k as u8, now - tier.keep_ms, now - tier.keep_nodes_ms)
                    .await?;
            }
        }
        Ok(())
    }

    /// Writes tier `k`'s bucket starting at `b` from tier `k - 1` (this replica's points):
    /// counters summed, gauges averaged over the finer buckets recorded.
    async fn fold(&self, k: usize, b: i64) -> Result<(), StoreError> {
        let rows = self
            .store
            .read_series(
                (k - 1) as u8,
                (None, Some(&self.replica)),
                b,
                b + TIERS[k].step_ms - 1,
            )
            .await?;
        let recorded = rows.iter().filter(|r| r.scope == "fleet").count() as u64;
        if recorded == 0 {
            return Ok(());
        }
        let mut sums: HashMap<String, Values> = HashMap::new();
        for r in rows {
            add(sums.entry(r.scope).or_default(), &unpack(&r.vals));
        }
        let out: Vec<(String, i64, Vec<u8>)> = sums
            .into_iter()
            .map(|(scope, mut v)| {
                for m in Metric::ALL.into_iter().filter(|m| m.is_gauge()) {
                    v[m.id()] = (v[m.id()] + recorded / 2) / recorded;
                }
                (scope, b, pack(&v))
            })
            .collect();
        self.store.write_series(k as u8, &self.replica, &out).await
    }

    /// Reads `q` at `now`.
    pub async fn query(&self, q: &SeriesQuery, now: i64) -> Result<Table, SeriesError> {
        let bad = |field, message: String| Err(SeriesError::BadQuery { field, message });
        if q.to_ms <= q.from_ms {
            return bad("to", "must be after from".into());
        }
        let want = q
            .step_ms
            .unwrap_or(((q.to_ms - q.from_ms) / 300).max(TIERS[0].step_ms));
        if want <= 0 {
            return bad("step", "must be positive".into());
        }
        let age = now - q.from_ms;
        let k = (0..TIERS.len())
            .rev()
            .find(|&k| TIERS[k].step_ms <= want && age <= keep(&TIERS[k], &q.scope))
            .or_else(|| (0..TIERS.len()).find(|&k| age <= keep(&TIERS[k], &q.scope)))
            .unwrap_or(TIERS.len() - 1);
        let tier_step = TIERS[k].step_ms;
        let step = (want + tier_step - 1) / tier_step * tier_step;
        let start = q.from_ms - q.from_ms.rem_euclid(step);
        let buckets = (q.to_ms - start + step - 1) / step;
        if buckets > MAX_POINTS {
            return bad(
                "step",
                format!(
                    "{buckets} points over this range; at most {MAX_POINTS}: use a larger step"
                ),
            );
        }
        let end = start + buckets * step - 1;
        // Every replica's points: each counted its own nodes.
        let rows = self
            .store
            .read_series(k as u8, (Some(&q.scope), None), start, end)
            .await?;
        let mut marks = if q.scope == "fleet" {
            rows.iter().map(|r| r.t).collect::<Vec<_>>()
        } else {
            self.store
                .read_series(k as u8, (Some("fleet"), None), start, end)
                .await?
                .into_iter()
                .map(|r| r.t)
                .collect()
        };
        // A bucket was recorded once however many replicas recorded it.
        marks.sort_unstable();
        marks.dedup();
        let n = buckets as usize;
        let mut sums = vec![[0u64; COUNT]; n];
        let mut recorded = vec![0u64; n];
        let slot = |t: i64| ((t - start) / step) as usize;
        for t in marks {
            recorded[slot(t)] += 1;
        }
        for r in &rows {
            add(&mut sums[slot(r.t)], &unpack(&r.vals));
        }
        let columns = q
            .metrics
            .iter()
            .map(|&m| {
                let col = (0..n)
                    .map(|i| {
                        let got = recorded[i] as f64;
                        (recorded[i] > 0).then(|| {
                            let v = sums[i][m.id()] as f64;
                            if m.is_gauge() {
                                v / got
                            } else {
                                v * 1000.0 / (got * tier_step as f64)
                            }
                        })
                    })
                    .collect();
                (m, col)
            })
            .collect();
        Ok(Table {
            step_ms: step,
            tier_step_ms: tier_step,
            times: (0..buckets).map(|i| start + i * step).collect(),
            columns,
        })
    }
}

#[cfg(test)]
mod tests;
