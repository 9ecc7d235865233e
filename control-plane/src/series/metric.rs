//! The traffic metrics the control plane keeps history of, and how one bucket's values
//! are packed into a row.
//!
//! A metric is a gauge (a level: connections open, servers up; a bucket keeps its mean)
//! or a counter (events: upgrades, bytes; a bucket keeps its total, served as a rate per
//! second). Each has a fixed one-byte id, the row format's key: ids are never reused.

/// How many metrics there are: the length of [`Values`].
pub const COUNT: usize = 22;

/// One bucket's value of every metric, indexed by [`Metric::id`].
pub type Values = [u64; COUNT];

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u8)]
pub enum Metric {
    /// Open client connections (HTTP and tunnels) or, for a server, open connections to it.
    Connections = 0,
    /// Open WebSocket (and other upgraded) tunnels.
    Tunnels = 1,
    /// Requests waiting for a server slot (`maxconn`).
    Queued = 2,
    /// Servers up (unchecked counts as up), counted once per node that sees them.
    ServersUp = 3,
    ServersDown = 4,
    Upgrades = 5,
    Requests = 6,
    Responses1xx = 7,
    Responses2xx = 8,
    Responses3xx = 9,
    Responses4xx = 10,
    Responses5xx = 11,
    /// Requests refused by `deny` rules and rate limits (403, 429).
    Denied = 12,
    /// Bytes from clients (tunnel payload).
    BytesIn = 13,
    /// Bytes to clients (tunnel payload).
    BytesOut = 14,
    ErrorsConnect = 15,
    /// No response within `timeout server` (504).
    ErrorsTimeout = 16,
    /// Invalid or missing response (502).
    ErrorsBadResponse = 17,
    /// No usable server (503).
    ErrorsNoServer = 18,
    /// Waited past `timeout queue` (503).
    ErrorsQueueTimeout = 19,
    /// Malformed, oversized or too slow request heads (400, 408, 431).
    ErrorsBadRequest = 20,
    ErrorsTls = 21,
}

impl Metric {
    pub const ALL: [Metric; COUNT] = [
        Metric::Connections,
        Metric::Tunnels,
        Metric::Queued,
        Metric::ServersUp,
        Metric::ServersDown,
        Metric::Upgrades,
        Metric::Requests,
        Metric::Responses1xx,
        Metric::Responses2xx,
        Metric::Responses3xx,
        Metric::Responses4xx,
        Metric::Responses5xx,
        Metric::Denied,
        Metric::BytesIn,
        Metric::BytesOut,
        Metric::ErrorsConnect,
        Metric::ErrorsTimeout,
        Metric::ErrorsBadResponse,
        Metric::ErrorsNoServer,
        Metric::ErrorsQueueTimeout,
        Metric::ErrorsBadRequest,
        Metric::ErrorsTls,
    ];

    /// The errors that make a node's error count (5xx responses are counted apart).
    pub const ERRORS: [Metric; 7] = [
        Metric::ErrorsConnect,
        Metric::ErrorsTimeout,
        Metric::ErrorsBadResponse,
        Metric::ErrorsNoServer,
        Metric::ErrorsQueueTimeout,
        Metric::ErrorsBadRequest,
        Metric::ErrorsTls,
    ];

    pub fn id(self) -> usize {
        self as usize
    }

    /// The name used by the REST API.
    pub fn name(self) -> &'static str {
        match self {
            Metric::Connections => "connections",
            Metric::Tunnels => "tunnels",
            Metric::Queued => "queued",
            Metric::ServersUp => "servers_up",
            Metric::ServersDown => "servers_down",
            Metric::Upgrades => "upgrades",
            Metric::Requests => "requests",
            Metric::Responses1xx => "responses_1xx",
            Metric::Responses2xx => "responses_2xx",
            Metric::Responses3xx => "responses_3xx",
            Metric::Responses4xx => "responses_4xx",
            Metric::Responses5xx => "responses_5xx",
            Metric::Denied => "denied",
            Metric::BytesIn => "bytes_in",
            Metric::BytesOut => "bytes_out",
            Metric::ErrorsConnect => "errors_connect",
            Metric::ErrorsTimeout => "errors_timeout",
            Metric::ErrorsBadResponse => "errors_bad_response",
            Metric::ErrorsNoServer => "errors_no_server",
            Metric::ErrorsQueueTimeout => "errors_queue_timeout",
            Metric::ErrorsBadRequest => "errors_bad_request",
            Metric::ErrorsTls => "errors_tls",
        }
    }

    pub fn parse(name: &str) -> Option<Metric> {
        Metric::ALL.into_iter().find(|m| m.name() == name)
    }

    /// A level (mean per bucket) rather than a count of events (rate per second).
    pub fn is_gauge(self) -> bool {
        (self as u8) < 5
    }
}

/// The bucket's non-zero values as (id: u8, LEB128 varint) pairs.
pub fn pack(values: &Values) -> Vec<u8> {
    let mut out = Vec::with_capacity(16);
    for (id, &v) in values.iter().enumerate() {
        if v != 0 {
            out.push(id as u8);
            prost::encoding::encode_varint(v, &mut out);
        }
    }
    out
}

/// The inverse of [`pack`]; unknown ids (a newer writer's) are skipped, a truncated
/// row keeps what decoded.
pub fn unpack(mut bytes: &[u8]) -> Values {
    let mut values = [0u64; COUNT];
    while let Some((&id, rest)) = bytes.split_first() {
        bytes = rest;
        let Ok(v) = prost::encoding::decode_varint(&mut bytes) else {
            break;
        };
        if let Some(slot) = values.get_mut(usize::from(id)) {
            *slot = v;
        }
    }
    values
}

/// `into[m] += from[m]` for every metric.
pub fn add(into: &mut Values, from: &Values) {
    for (a, b) in into.iter_mut().zip(from) {
        *a += b;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_ids_are_positions() {
        for (i, m) in Metric::ALL.into_iter().enumerate() {
            assert_eq!(m.id(), i);
            assert_eq!(Metric::parse(m.name()), Some(m));
        }
        assert!(Metric::Queued.is_gauge() && Metric::ServersDown.is_gauge());
        assert!(!Metric::Upgrades.is_gauge());
    }

    #[test]
    fn packing_keeps_non_zero_values_only() {
        let mut v = [0u64; COUNT];
        v[Metric::Tunnels.id()] = 3;
        v[Metric::BytesOut.id()] = u64::MAX;
        let packed = pack(&v);
        assert_eq!(packed.len(), 2 + 1 + 10);
        assert_eq!(unpack(&packed), v);
        assert!(pack(&[0; COUNT]).is_empty());
        // A truncated row and an unknown id do not panic.
        assert_eq!(unpack(&packed[..3])[Metric::Tunnels.id()], 3);
        assert_eq!(unpack(&[200, 1, 1, 5])[Metric::Tunnels.id()], 5);
    }
}
