//! The node's one wall clock. Durations on the request path use `Instant`; what leaves the
//! node (stats reports, health-change times, cookie dates) uses Unix time from here.

use std::time::{SystemTime, UNIX_EPOCH};

/// Milliseconds since the Unix epoch (0 if the clock is before it).
pub fn unix_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// Seconds since the Unix epoch (0 if the clock is before it).
pub fn unix_s() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// When this process started (Unix ms): the first call, made at start-up by `main`
/// and the stats report. Counters restart with the process, so the report carries it.
pub fn started_unix_ms() -> i64 {
    static STARTED: std::sync::OnceLock<i64> = std::sync::OnceLock::new();
    *STARTED.get_or_init(unix_ms)
}
