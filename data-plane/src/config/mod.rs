//! The runtime plan: a snapshot compiled into what the request path reads.
//!
//! [`Plan::compile`] turns a `Snapshot` into immutable routing tables — compiled ACLs,
//! rules, backends with resolved timeouts — once, when the snapshot arrives. A plan is
//! shared as `Arc<Plan>` and swapped atomically; connections hold the `Arc<BindPlan>` they
//! were accepted under, so a swap never changes what an open connection sees. State that
//! must outlive a plan (counters) is looked up by stable name from [`StatsRegistry`].

pub mod acl;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use sluice_proto::v1 as pb;

use crate::balance::Balancer;
use crate::stats::{BackendCounters, FrontendCounters, ServerCounters, StatsRegistry};
use acl::{AclMatcher, Condition};

/// Built-in defaults, as HAProxy's documentation recommends for WebSocket traffic.
pub const DEFAULT_CONNECT: Duration = Duration::from_secs(5);
pub const DEFAULT_CLIENT: Duration = Duration::from_secs(30);
pub const DEFAULT_SERVER: Duration = Duration::from_secs(30);
pub const DEFAULT_HTTP_REQUEST: Duration = Duration::from_secs(10);
pub const DEFAULT_RETRIES: u32 = 3;
/// Largest request head accepted unless configured otherwise.
pub const DEFAULT_MAX_HEADER_BYTES: usize = 64 * 1024;

/// A compiled snapshot.
#[derive(Debug)]
pub struct Plan {
    pub version: u64,
    pub binds: HashMap<SocketAddr, Arc<BindPlan>>,
    pub frontends: Vec<Arc<FrontendPlan>>,
    pub backends: Vec<Arc<BackendPlan>>,
}

/// What a listener needs: its frontend and whether it terminates TLS.
#[derive(Debug)]
pub struct BindPlan {
    pub address: SocketAddr,
    pub frontend: Arc<FrontendPlan>,
    /// Present: the bind terminates TLS.
    pub tls: Option<crate::proxy::tls::Tls>,
}

#[derive(Debug)]
pub enum RequestAction {
    Redirect {
        kind: pb::RedirectKind,
        target: String,
        code: http::StatusCode,
    },
    Deny(http::StatusCode),
    SetHeader(http::HeaderName, http::HeaderValue),
    AddHeader(http::HeaderName, http::HeaderValue),
    DelHeader(http::HeaderName),
    ReplaceHeader(http::HeaderName, regex::Regex, String),
    SetPath(String),
    Return {
        status: http::StatusCode,
        content_type: http::HeaderValue,
        body: bytes::Bytes,
    },
    /// Stick-counter tracking; counters are provided by the stick-table module.
    TrackSc(u32),
}

#[derive(Debug)]
pub enum ResponseAction {
    SetHeader(http::HeaderName, http::HeaderValue),
    AddHeader(http::HeaderName, http::HeaderValue),
    DelHeader(http::HeaderName),
}

/// A body for a status the node generates itself (a configured errorfile).
#[derive(Debug, Clone)]
pub struct ErrorPage {
    pub content_type: http::HeaderValue,
    pub body: bytes::Bytes,
}

/// Errorfiles by status.
pub type ErrorPages = HashMap<u16, ErrorPage>;

#[derive(Debug)]
pub struct FrontendPlan {
    pub name: Arc<str>,
    pub http_request: Vec<(Option<Condition>, RequestAction)>,
    pub http_response: Vec<(Option<Condition>, ResponseAction)>,
    /// Applied to every response sent to a client, the node's own included.
    pub http_after_response: Vec<(Option<Condition>, ResponseAction)>,
    pub errorfiles: ErrorPages,
    /// The complete responses for refusals made before a request exists (408, and the
    /// parser's 400/414/431), rendered once.
    pub refusal_pages: Arc<crate::proxy::io::RefusalPages>,
    /// Largest request head in bytes (431 beyond).
    pub max_header_bytes: usize,
    /// Most header lines per request (431 beyond); `None`: the parser's default of 100.
    pub max_headers: Option<usize>,
    pub use_backend: Vec<(Option<Condition>, Arc<BackendPlan>)>,
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
    pub counters: Arc<ServerCounters>,
    /// Idle keep-alive connections; `None` with `http_server_close`.
    pub pool: Option<Arc<crate::proxy::pool::Pool>>,
}

impl ServerPlan {
    /// Whether new, non-sticky traffic may go here: ready, weighted, not down by health
    /// checks, and below its `maxconn`.
    pub fn accepts_new(&self) -> bool {
        self.up_for_new() && !self.full()
    }

    /// Ready, weighted and not down — whether or not it has a free slot right now.
    pub fn up_for_new(&self) -> bool {
        self.state == pb::ServerState::Ready && self.weight > 0 && !self.counters.health.is_down()
    }

    /// Whether a sticky request may still go here: not in maintenance (draining servers
    /// keep their sticky clients, as HAProxy does), not down, below `maxconn`.
    pub fn accepts_sticky(&self) -> bool {
        self.state != pb::ServerState::Maint && self.usable()
    }

    fn usable(&self) -> bool {
        !self.counters.health.is_down() && !self.full()
    }

    /// Takes a connection slot, unless the server is at its `maxconn`; the slot is given
    /// back when the returned guard drops.
    pub fn try_slot(&self) -> Option<crate::stats::Held<ServerCounters>> {
        use std::sync::atomic::Ordering::Relaxed;
        if self.maxconn > 0 {
            let max = u64::from(self.maxconn);
            let current = &self.counters.current_connections;
            let mut seen = current.load(Relaxed);
            loop {
                if seen >= max {
                    return None;
                }
                // Reserve the slot; the guard below then owns it.
                match current.compare_exchange_weak(seen, seen + 1, Relaxed, Relaxed) {
                    Ok(_) => break,
                    Err(now) => seen = now,
                }
            }
            return Some(crate::stats::Held::server_slot_reserved(
                self.counters.clone(),
            ));
        }
        Some(crate::stats::Held::server_slot(self.counters.clone()))
    }

    /// At its `maxconn`.
    pub fn full(&self) -> bool {
        self.maxconn > 0
            && self
                .counters
                .current_connections
                .load(std::sync::atomic::Ordering::Relaxed)
                >= u64::from(self.maxconn)
    }
}

#[derive(Debug)]
pub struct BackendPlan {
    pub name: Arc<str>,
    pub servers: Vec<ServerPlan>,
    pub connect_timeout: Duration,
    pub server_timeout: Duration,
    /// Inactivity limit once a connection is a tunnel.
    pub tunnel_timeout: Duration,
    pub retries: u32,
    pub redispatch: bool,
    /// How long a request may wait for a server slot when every server is at `maxconn`.
    pub queue_timeout: Duration,
    /// `option http-server-close`: one request per server connection.
    pub server_close: bool,
    pub balancer: Balancer,
    /// Cookie persistence, when configured.
    pub cookie: Option<crate::balance::cookie::CookiePlan>,
    pub counters: Arc<BackendCounters>,
}

fn ms(v: Option<u64>) -> Option<Duration> {
    v.map(Duration::from_millis)
}

fn header_name(name: &str) -> Result<http::HeaderName, String> {
    http::HeaderName::from_bytes(name.as_bytes()).map_err(|_| format!("bad header name {name:?}"))
}

fn header_value(v: &str) -> Result<http::HeaderValue, String> {
    http::HeaderValue::from_str(v).map_err(|_| format!("bad header value {v:?}"))
}

fn status(code: u32) -> Result<http::StatusCode, String> {
    u16::try_from(code)
        .ok()
        .and_then(|c| http::StatusCode::from_u16(c).ok())
        .ok_or_else(|| format!("bad status {code}"))
}

impl Plan {
    /// Compiles a snapshot. Errors say which object could not be compiled; the caller
    /// nacks with that text and keeps the previous plan.
    pub fn compile(snap: &pb::Snapshot, stats: &StatsRegistry) -> Result<Self, String> {
        let defaults = snap.defaults.clone().unwrap_or_default();
        let dt = defaults.timeouts.unwrap_or_default();

        let mut backends_by_name = HashMap::new();
        let mut backends = Vec::new();
        for b in &snap.backends {
            let bt = b.timeouts.unwrap_or_default();
            let server_timeout = ms(bt.server_ms.or(dt.server_ms)).unwrap_or(DEFAULT_SERVER);
            let client_timeout = ms(dt.client_ms).unwrap_or(DEFAULT_CLIENT);
            let server_close = b.http_server_close.unwrap_or(defaults.http_server_close);
            let servers = b
                .servers
                .iter()
                .map(|s| ServerPlan {
                    name: s.name.as_str().into(),
                    address: s.address.clone(),
                    socket_addr: s.address.parse().ok(),
                    weight: s.weight,
                    backup: s.backup,
                    maxconn: s.maxconn,
                    cookie: (!s.cookie.is_empty()).then(|| s.cookie.as_str().into()),
                    state: s.state(),
                    counters: stats.server(&b.name, &s.name),
                    pool: (!server_close).then(Arc::default),
                })
                .collect::<Vec<_>>();
            let plan = Arc::new(BackendPlan {
                name: b.name.as_str().into(),
                balancer: Balancer::new(b.balance.as_ref(), &servers)
                    .map_err(|e| format!("backend {}: {e}", b.name))?,
                servers,
                connect_timeout: ms(bt.connect_ms.or(dt.connect_ms)).unwrap_or(DEFAULT_CONNECT),
                server_timeout,
                // HAProxy: without `timeout tunnel`, the larger of client/server applies.
                tunnel_timeout: ms(bt.tunnel_ms.or(dt.tunnel_ms))
                    .unwrap_or(server_timeout.max(client_timeout)),
                retries: b.retries.or(defaults.retries).unwrap_or(DEFAULT_RETRIES),
                redispatch: b.redispatch.unwrap_or(defaults.redispatch),
                // HAProxy: without `timeout queue`, `timeout connect` applies.
                queue_timeout: ms(bt.queue_ms.or(dt.queue_ms))
                    .or(ms(bt.connect_ms.or(dt.connect_ms)))
                    .unwrap_or(DEFAULT_CONNECT),
                server_close,
                cookie: b
                    .cookie
                    .as_ref()
                    .map(crate::balance::cookie::CookiePlan::new),
                counters: stats.backend(&b.name),
            });
            backends_by_name.insert(b.name.clone(), plan.clone());
            backends.push(plan);
        }
        let backend = |name: &str, fe: &str| {
            backends_by_name
                .get(name)
                .cloned()
                .ok_or_else(|| format!("frontend {fe}: no backend named {name:?}"))
        };

        let certificates: HashMap<&str, &pb::Certificate> = snap
            .certificates
            .iter()
            .map(|c| (c.name.as_str(), c))
            .collect();
        let mut binds = HashMap::new();
        let mut frontends = Vec::new();
        for f in &snap.frontends {
            let ctx = |e: String| format!("frontend {}: {e}", f.name);
            let mut named: HashMap<String, Vec<Arc<AclMatcher>>> = HashMap::new();
            for a in &f.acls {
                let expr = a
                    .expr
                    .as_ref()
                    .ok_or_else(|| ctx(format!("acl {} is empty", a.name)))?;
                let m =
                    AclMatcher::compile(expr).map_err(|e| ctx(format!("acl {}: {e}", a.name)))?;
                named.entry(a.name.clone()).or_default().push(Arc::new(m));
            }
            let cond = |c: &Option<pb::Condition>| -> Result<Option<Condition>, String> {
                c.as_ref()
                    .map(|c| Condition::compile(c, &named))
                    .transpose()
                    .map_err(ctx)
            };
            let mut http_request = Vec::new();
            for r in &f.http_request {
                use pb::http_request_rule::Action as A;
                let action = match r.action.as_ref().ok_or_else(|| ctx("empty rule".into()))? {
                    A::Redirect(rd) => RequestAction::Redirect {
                        kind: rd.kind(),
                        target: rd.target.clone(),
                        code: status(rd.code).map_err(ctx)?,
                    },
                    A::Deny(d) => RequestAction::Deny(status(d.status).map_err(ctx)?),
                    A::SetHeader(h) => RequestAction::SetHeader(
                        header_name(&h.name).map_err(ctx)?,
                        header_value(&h.value).map_err(ctx)?,
                    ),
                    A::AddHeader(h) => RequestAction::AddHeader(
                        header_name(&h.name).map_err(ctx)?,
                        header_value(&h.value).map_err(ctx)?,
                    ),
                    A::DelHeader(h) => RequestAction::DelHeader(header_name(&h.name).map_err(ctx)?),
                    A::ReplaceHeader(h) => RequestAction::ReplaceHeader(
                        header_name(&h.name).map_err(ctx)?,
                        regex::Regex::new(&h.regex).map_err(|e| ctx(e.to_string()))?,
                        h.replacement.clone(),
                    ),
                    A::SetPath(p) => RequestAction::SetPath(p.path.clone()),
                    A::ReturnResponse(rr) => RequestAction::Return {
                        status: status(rr.status).map_err(ctx)?,
                        content_type: header_value(&rr.content_type).map_err(ctx)?,
                        body: bytes::Bytes::from(rr.body.clone()),
                    },
                    A::TrackSc(t) => RequestAction::TrackSc(t.counter),
                };
                http_request.push((cond(&r.cond)?, action));
            }
            let response_rules = |rules: &[pb::HttpResponseRule]| {
                let mut out = Vec::with_capacity(rules.len());
                for r in rules {
                    use pb::http_response_rule::Action as A;
                    let action = match r.action.as_ref().ok_or_else(|| ctx("empty rule".into()))? {
                        A::SetHeader(h) => ResponseAction::SetHeader(
                            header_name(&h.name).map_err(ctx)?,
                            header_value(&h.value).map_err(ctx)?,
                        ),
                        A::AddHeader(h) => ResponseAction::AddHeader(
                            header_name(&h.name).map_err(ctx)?,
                            header_value(&h.value).map_err(ctx)?,
                        ),
                        A::DelHeader(h) => {
                            ResponseAction::DelHeader(header_name(&h.name).map_err(ctx)?)
                        }
                    };
                    out.push((cond(&r.cond)?, action));
                }
                Ok::<_, String>(out)
            };
            let http_response = response_rules(&f.http_response)?;
            let http_after_response = response_rules(&f.http_after_response)?;
            let mut errorfiles = ErrorPages::new();
            // The frontend's own entries override the defaults'.
            for e in defaults.errorfiles.iter().chain(&f.errorfiles) {
                let code = status(e.status).map_err(ctx)?;
                let content_type = if e.content_type.is_empty() {
                    http::HeaderValue::from_static("text/html")
                } else {
                    header_value(&e.content_type).map_err(ctx)?
                };
                errorfiles.insert(
                    code.as_u16(),
                    ErrorPage {
                        content_type,
                        body: bytes::Bytes::from(e.body.clone()),
                    },
                );
            }
            let refusal_page = |status| crate::proxy::error::raw_response(status, &errorfiles);
            let refusal_pages = Arc::new(crate::proxy::io::RefusalPages {
                timeout: refusal_page(http::StatusCode::REQUEST_TIMEOUT),
                bad_request: refusal_page(http::StatusCode::BAD_REQUEST),
                uri_too_long: refusal_page(http::StatusCode::URI_TOO_LONG),
                too_large: refusal_page(http::StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE),
            });
            let mut use_backend = Vec::new();
            for u in &f.use_backend {
                use_backend.push((cond(&u.cond)?, backend(&u.backend, &f.name)?));
            }
            let default_backend = if f.default_backend.is_empty() {
                None
            } else {
                Some(backend(&f.default_backend, &f.name)?)
            };
            let ft = f.timeouts.unwrap_or_default();
            let fe = Arc::new(FrontendPlan {
                name: f.name.as_str().into(),
                http_request,
                http_response,
                http_after_response,
                errorfiles,
                refusal_pages,
                max_header_bytes: f
                    .max_header_bytes
                    .or(defaults.max_header_bytes)
                    .map_or(DEFAULT_MAX_HEADER_BYTES, |b| b as usize),
                max_headers: f
                    .max_headers
                    .or(defaults.max_headers)
                    .map(|h| h as usize)
                    .filter(|&h| h != 100),
                use_backend,
                default_backend,
                client_timeout: ms(ft.client_ms.or(dt.client_ms)).unwrap_or(DEFAULT_CLIENT),
                http_request_timeout: ms(ft.http_request_ms.or(dt.http_request_ms))
                    .unwrap_or(DEFAULT_HTTP_REQUEST),
                forwardfor: f.forwardfor.unwrap_or(defaults.forwardfor),
                maxconn: f.maxconn.or(defaults.maxconn),
                stick: f
                    .stick_table
                    .as_ref()
                    .map(|t| stats.sticks.table(&f.name, crate::stick::Spec::from_pb(t))),
                counters: stats.frontend(&f.name),
            });
            for b in &f.binds {
                let address: SocketAddr = b
                    .address
                    .parse()
                    .map_err(|_| ctx(format!("bind {:?} is not ip:port", b.address)))?;
                let tls = b
                    .tls
                    .as_ref()
                    .map(|t| crate::proxy::tls::acceptor(t, &certificates))
                    .transpose()
                    .map_err(|e| ctx(format!("bind {address}: {e}")))?;
                if binds.contains_key(&address) {
                    return Err(ctx(format!("bind {address} is used twice")));
                }
                binds.insert(
                    address,
                    Arc::new(BindPlan {
                        address,
                        frontend: fe.clone(),
                        tls,
                    }),
                );
            }
            frontends.push(fe);
        }
        Ok(Plan {
            version: snap.version,
            binds,
            frontends,
            backends,
        })
    }

    /// The plan a node serves before its first snapshot: nothing.
    pub fn empty() -> Self {
        Plan {
            version: 0,
            binds: HashMap::new(),
            frontends: Vec::new(),
            backends: Vec::new(),
        }
    }
}
