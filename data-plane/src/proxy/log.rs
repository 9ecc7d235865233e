//! Access log: one line per request, and one per tunnel when it closes, written to the
//! `sluice::access` tracing target (so `RUST_LOG=sluice::access=off` silences it), which
//! `sluice-dp` prints bare: the record alone on its line.
//!
//! The default format follows HAProxy's `option httplog`:
//!
//! ```text
//! 127.0.0.1:52614 [27/Nov/2026:00:21:22.756] web ws/ws-01 0/0/1/2/5003 101 1520 - - CD-- 1/1/0/1/0 0/0 "GET /ws/chat HTTP/1.1"
//! ```
//!
//! client address, accept date, frontend, backend/server, timers Tq/Tw/Tc/Tr/Ta in ms
//! (headers received, queue, connect, response, total — for a tunnel Ta runs until it
//! closes), status, bytes sent to the client, two unused capture fields, the termination
//! state, connection counts (frontend/frontend/backend/server/retries as HAProxy prints
//! actconn/feconn/beconn/srv_conn/retries), queues, and the request line. Termination
//! states: `----` normal end; for tunnels the first letter says who ended it — `C`
//! client closed, `S` server closed, `c` tunnel timeout, `E` error on the client side,
//! `e` error on the server side — and the second is `D` (data phase). `--log-format json`
//! writes the same fields as one JSON object per line.

use std::sync::OnceLock;
use std::time::{SystemTime, UNIX_EPOCH};

/// Access-log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Haproxy,
    Json,
}

static FORMAT: OnceLock<LogFormat> = OnceLock::new();

/// Sets the format once at start-up (the default is HAProxy's).
pub fn set_format(f: LogFormat) {
    let _ = FORMAT.set(f);
}

/// One access-log record.
#[derive(Debug, Default, Clone)]
pub struct Entry {
    pub client: String,
    pub accepted: Option<SystemTime>,
    pub frontend: String,
    pub backend: String,
    pub server: String,
    /// Tq/Tw/Tc/Tr/Ta in milliseconds; -1 when the phase was not reached.
    pub timers: [i64; 5],
    pub status: u16,
    pub bytes: u64,
    /// Who ended the session and in which phase (`SC--`, `CD--`, ...).
    pub termination: &'static str,
    /// The persistence cookie's status (the request's, then the response's), as HAProxy
    /// writes them in the termination state's third and fourth characters; `None` when
    /// the backend has no cookie persistence (`--`).
    pub cookie: Option<[u8; 2]>,
    pub fe_conn: u64,
    pub srv_conn: u64,
    pub retries: u32,
    pub request: String,
}

/// `27/Nov/2026:00:21:22.756` in UTC.
fn haproxy_date(t: SystemTime) -> String {
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs() as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Civil date from days since 1970-01-01 (H. Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{day:02}/{}/{year}:{:02}:{:02}:{:02}.{:03}",
        MONTHS[(month - 1) as usize],
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        d.subsec_millis()
    )
}

impl Entry {
    /// The four-character termination state: the end's two, then the cookie's.
    fn state(&self) -> std::borrow::Cow<'static, str> {
        match (self.cookie, self.termination.get(..2)) {
            (Some([req, resp]), Some(end)) => {
                format!("{end}{}{}", req as char, resp as char).into()
            }
            _ => self.termination.into(),
        }
    }

    pub fn format(&self, f: LogFormat) -> String {
        let date = haproxy_date(self.accepted.unwrap_or_else(SystemTime::now));
        let [tq, tw, tc, tr, ta] = self.timers;
        match f {
            LogFormat::Haproxy => format!(
                "{} [{date}] {} {}/{} {tq}/{tw}/{tc}/{tr}/{ta} {} {} - - {} {}/{}/{}/{}/{} 0/0 \"{}\"",
                self.client,
                self.frontend,
                self.backend,
                self.server,
                self.status,
                self.bytes,
                self.state(),
                self.fe_conn,
                self.fe_conn,
                self.srv_conn,
                self.srv_conn,
                self.retries,
                self.request.escape_debug(),
            ),
            LogFormat::Json => json(self, &date),
        }
    }

    /// Writes the record to the access log.
    pub fn emit(&self) {
        let f = *FORMAT.get_or_init(|| LogFormat::Haproxy);
        tracing::info!(target: "sluice::access", "{}", self.format(f));
    }
}

/// The record as one JSON object, fields in the HAProxy line's order.
fn json(e: &Entry, date: &str) -> String {
    #[derive(serde::Serialize)]
    struct Record<'a> {
        client: &'a str,
        date: &'a str,
        frontend: &'a str,
        backend: &'a str,
        server: &'a str,
        tq: i64,
        tw: i64,
        tc: i64,
        tr: i64,
        ta: i64,
        status: u16,
        bytes: u64,
        termination: &'a str,
        fe_conn: u64,
        srv_conn: u64,
        retries: u32,
        request: &'a str,
    }
    let [tq, tw, tc, tr, ta] = e.timers;
    serde_json::to_string(&Record {
        client: &e.client,
        date,
        frontend: &e.frontend,
        backend: &e.backend,
        server: &e.server,
        tq,
        tw,
        tc,
        tr,
        ta,
        status: e.status,
        bytes: e.bytes,
        termination: &e.state(),
        fe_conn: e.fe_conn,
        srv_conn: e.srv_conn,
        retries: e.retries,
        request: &e.request,
    })
    .expect("a record of strings and numbers serializes")
}

/// Whether access logging is on at all (so callers can skip building entries).
pub fn enabled() -> bool {
    tracing::enabled!(target: "sluice::access", tracing::Level::INFO)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn haproxy_line_and_json() {
        let e = Entry {
            client: "127.0.0.1:52614".into(),
            accepted: Some(UNIX_EPOCH + Duration::from_millis(1_795_739_282_756)),
            frontend: "web".into(),
            backend: "ws".into(),
            server: "ws-01".into(),
            timers: [0, 0, 1, 2, 5003],
            status: 101,
            bytes: 1520,
            termination: "CD--",
            cookie: None,
            fe_conn: 1,
            srv_conn: 1,
            retries: 0,
            request: "GET /ws/chat HTTP/1.1".into(),
        };
        assert_eq!(
            e.format(LogFormat::Haproxy),
            "127.0.0.1:52614 [27/Nov/2026:00:28:02.756] web ws/ws-01 0/0/1/2/5003 101 1520 - - CD-- 1/1/1/1/0 0/0 \"GET /ws/chat HTTP/1.1\""
        );
        assert_eq!(
            e.format(LogFormat::Json),
            "{\"client\":\"127.0.0.1:52614\",\"date\":\"27/Nov/2026:00:28:02.756\",\"frontend\":\"web\",\"backend\":\"ws\",\"server\":\"ws-01\",\"tq\":0,\"tw\":0,\"tc\":1,\"tr\":2,\"ta\":5003,\"status\":101,\"bytes\":1520,\"termination\":\"CD--\",\"fe_conn\":1,\"srv_conn\":1,\"retries\":0,\"request\":\"GET /ws/chat HTTP/1.1\"}"
        );
        let j: serde_json::Value = serde_json::from_str(&e.format(LogFormat::Json)).unwrap();
        assert_eq!(j["termination"], "CD--");
        assert_eq!(j["ta"], 5003);
        assert_eq!(j["request"], "GET /ws/chat HTTP/1.1");
        // The persistence cookie's status fills the last two characters.
        let sticky = Entry {
            cookie: Some(*b"VN"),
            ..e.clone()
        };
        assert!(sticky
            .format(LogFormat::Haproxy)
            .contains(" CDVN 1/1/1/1/0 "));
        // Control characters and quotes in a request line stay inside the string.
        let odd = Entry {
            request: "GET /\"a\"\u{1}b HTTP/1.1".into(),
            ..e
        };
        let j: serde_json::Value = serde_json::from_str(&odd.format(LogFormat::Json)).unwrap();
        assert_eq!(j["request"], "GET /\"a\"\u{1}b HTTP/1.1");
    }
}
