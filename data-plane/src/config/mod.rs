//! The runtime plan: what a snapshot compiles into, and all the request path reads.
//!
//! A leaf of the node's module graph: plan types depend on the snapshot's messages and on
//! the leaf modules that hold state outliving a plan ([`crate::counters`],
//! [`crate::stick`]) or built with it ([`crate::tls`], [`crate::pool`]) — never on the
//! proxy, balancing or reporting code that reads them. Compilation is in [`compile`]
//! (`Plan::compile`, typed [`PlanError`]); behaviour on these types lives with its owner
//! (server choice in `balance`, checks in `health`, the request path in `proxy`).
//!
//! A plan is immutable and shared as `Arc<Plan>`, swapped atomically; connections hold
//! the `Arc<BindPlan>` they were accepted under, so a swap never changes what an open
//! connection sees. Every default (the document's `defaults`, then the built-in ones
//! below) is resolved at compile time: the request path never falls back by hand.

pub mod acl;
pub mod balance;
pub mod compile;
pub mod cookie;
pub mod pages;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use sluice_proto::v1 as pb;

use crate::counters::{BackendCounters, FrontendCounters, ServerCounters};
use acl::Condition;
use balance::BalancePlan;
pub use compile::PlanError;
use cookie::CookiePlan;
use pages::{ErrorPages, RefusalPages};

/// Built-in defaults, as HAProxy's documentation recommends for WebSocket traffic.
pub const DEFAULT_CONNECT: Duration = Duration::from_secs(5);
pub const DEFAULT_CLIENT: Duration = Duration::from_secs(30);
pub const DEFAULT_SERVER: Duration = Duration::from_secs(30);
pub const DEFAULT_HTTP_REQUEST: Duration = Duration::from_secs(10);
pub const DEFAULT_RETRIES: u32 = 3;
/// Inactivity allowed on a half-closed tunnel unless configured otherwise.
pub const DEFAULT_FIN: Duration = Duration::from_secs(30);
/// Largest request head accepted unless configured otherwise.
pub const DEFAULT_MAX_HEADER_BYTES: usize = 64 * 1024;

/// A compiled snapshot.
#[derive(Debug)]
pub struct Plan {
    pub version: u64,
    /// SHA-256 of the snapshot this plan was compiled from, as decoded here and encoded
    /// again: what the node runs, reported with every ack and stats (drift detection).
    /// Empty for the empty plan.
    pub digest: Vec<u8>,
    pub binds: HashMap<SocketAddr, Arc<BindPlan>>,
    pub frontends: Vec<Arc<FrontendPlan>>,
    pub backends: Vec<Arc<BackendPlan>>,
}

impl Plan {
    /// The plan a node serves before its first snapshot: nothing.
    pub fn empty() -> Self {
        Plan {
            version: 0,
            digest: Vec::new(),
            binds: HashMap::new(),
            frontends: Vec::new(),
            backends: Vec::new(),
        }
    }
}

/// What a listener needs: its frontend and whether it terminates TLS.
#[derive(Debug)]
pub struct BindPlan {
    pub address: SocketAddr,
    pub frontend: Arc<FrontendPlan>,
    /// Present: the bind terminates TLS.
    pub tls: Option<crate::tls::Tls>,
    /// Present: the bind speaks HTTP/2 (by ALPN on TLS, by prior knowledge on cleartext
    /// when `h2c`).
    pub http2: Option<Http2Plan>,
}

/// HTTP/2 settings of a bind (see `Http2` in `config.proto`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Http2Plan {
    pub h2c: bool,
    pub max_concurrent_streams: u32,
    pub initial_window_size: u32,
    pub connection_window_size: u32,
    pub max_reset_streams: u32,
}

/// A rule's condition (`None`: always) and what it does.
pub type Rule<A> = (Option<Condition>, A);

#[derive(Debug)]
pub enum RequestAction {
    Redirect {
        kind: pb::RedirectKind,
        target: String,
        code: http::StatusCode,
    },
    Deny(http::StatusCode),
    Header(HeaderOp),
    /// Each value of the header matched by the regex, rewritten.
    ReplaceHeader(http::HeaderName, regex::Regex, String),
    SetPath(String),
    /// The path matched by the regex, rewritten (the query string kept).
    ReplacePath(regex::Regex, String),
    Return {
        status: http::StatusCode,
        content_type: http::HeaderValue,
        body: bytes::Bytes,
    },
    /// Stick-counter tracking; counters are provided by the stick-table module.
    TrackSc(u32),
}

/// A header rewrite: the same in request and response rules.
#[derive(Debug)]
pub enum HeaderOp {
    Set(http::HeaderName, http::HeaderValue),
    Add(http::HeaderName, http::HeaderValue),
    Del(http::HeaderName),
}

/// What a response rule does: response rules only rewrite headers.
pub type ResponseAction = HeaderOp;

#[derive(Debug)]
pub struct FrontendPlan {
    pub name: Arc<str>,
    pub http_request: Vec<Rule<RequestAction>>,
    pub http_response: Vec<Rule<ResponseAction>>,
    /// Applied to every response sent to a client, the node's own included.
    pub http_after_response: Vec<Rule<ResponseAction>>,
    pub errorfiles: ErrorPages,
    /// The complete responses for refusals made before a request exists (408, and the
    /// parser's 400/414/431), rendered once.
    pub refusal_pages: Arc<RefusalPages>,
    /// Largest request head in bytes (431 beyond).
    pub max_header_bytes: usize,
    /// Most header lines per request (431 beyond); `None`: the parser's default of 100.
    pub max_headers: Option<usize>,
    pub use_backend: Vec<Rule<Arc<BackendPlan>>>,
    pub default_backend: Option<Arc<BackendPlan>>,
    /// Client inactivity before the upgrade and between keep-alive requests.
    pub client_timeout: Duration,
    /// Time to receive complete request headers.
    pub http_request_timeout: Duration,
    pub forwardfor: bool,
    pub maxconn: Option<u32>,
    /// The frontend's stick table, when it has one.
    pub stick: Option<Arc<crate::stick::StickTable>>,
    pub counters: Arc<FrontendCounters>,
}

#[derive(Debug)]
pub struct ServerPlan {
    pub name: Arc<str>,
    pub address: String,
    /// `address` when it is a literal `ip:port` (no name resolution needed).
    pub socket_addr: Option<SocketAddr>,
    pub weight: u32,
    pub backup: bool,
    /// Concurrent connections (requests in flight and tunnels) allowed; 0: unlimited.
    pub maxconn: u32,
    /// The persistence cookie value designating this server, when set.
    pub cookie: Option<Arc<str>>,
    pub state: pb::ServerState,
    /// The server's active health check, when it has one.
    pub check: Option<CheckPlan>,
    pub counters: Arc<ServerCounters>,
    /// Idle keep-alive connections; `None` with `http_server_close`.
    pub pool: Option<Arc<crate::pool::Pool>>,
}

#[derive(Debug)]
pub struct BackendPlan {
    pub name: Arc<str>,
    pub servers: Vec<ServerPlan>,
    pub connect_timeout: Duration,
    pub server_timeout: Duration,
    /// Inactivity limits once a connection is a tunnel.
    pub tunnel: TunnelTimeouts,
    pub retries: u32,
    pub redispatch: bool,
    /// How long a request may wait for a server slot when every server is at `maxconn`.
    pub queue_timeout: Duration,
    /// `option http-server-close`: one request per server connection.
    pub server_close: bool,
    pub balancer: BalancePlan,
    /// Cookie persistence, when configured.
    pub cookie: Option<CookiePlan>,
    pub counters: Arc<BackendCounters>,
}

/// A tunnel's inactivity limits, in milliseconds (kept small: every idle tunnel holds
/// them).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TunnelTimeouts {
    /// No byte either way for this long ends the tunnel (`timeout tunnel`).
    pub idle_ms: u32,
    /// `timeout client-fin`: the server sent its FIN (passed on to the client), the
    /// client has not closed yet — a server that went away.
    pub client_fin_ms: u32,
    /// `timeout server-fin`: the client sent its FIN, the server has not closed yet.
    pub server_fin_ms: u32,
}

impl TunnelTimeouts {
    /// The inactivity limit that applies given which sides have sent their FIN.
    pub fn current(&self, client_sent_fin: bool, server_sent_fin: bool) -> Duration {
        let ms = match (client_sent_fin, server_sent_fin) {
            (false, true) => self.client_fin_ms.min(self.idle_ms),
            (true, false) => self.server_fin_ms.min(self.idle_ms),
            _ => self.idle_ms,
        };
        Duration::from_millis(u64::from(ms))
    }

    /// The limit before any FIN.
    pub fn idle(&self) -> Duration {
        Duration::from_millis(u64::from(self.idle_ms))
    }
}

/// What a health check sends and expects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CheckKind {
    /// A connect.
    Tcp,
    /// A request; healthy when the status is expected.
    Http,
    /// A real upgrade with a fresh key; healthy on a 101 with the right accept.
    Websocket,
}

/// One server's health check, every default resolved. A check whose plan is unchanged
/// by a new snapshot keeps running (and keeps its `fall`/`rise` progress).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckPlan {
    /// Where to connect: the server's address, with the check port if set.
    pub target: String,
    pub kind: CheckKind,
    pub method: String,
    pub uri: String,
    pub version: String,
    /// Sent in order.
    pub headers: Vec<(String, String)>,
    /// Healthy statuses, inclusive ranges (never empty).
    pub expect: Vec<(u16, u16)>,
    pub inter: Duration,
    pub timeout: Duration,
    pub fall: u32,
    pub rise: u32,
}
