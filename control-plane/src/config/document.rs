//! Serde types of the declarative document. Field names are the public contract (see
//! `docs/config.md`); unknown fields are rejected so a typo is an error, not a silent no-op.

use indexmap::IndexMap;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

fn is_false(b: &bool) -> bool {
    !*b
}

/// The whole configuration: defaults, frontends and backends.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ConfigDocument {
    #[serde(default)]
    pub defaults: Defaults,
    #[serde(default)]
    pub frontends: Vec<Frontend>,
    #[serde(default)]
    pub backends: Vec<Backend>,
}

/// Values frontends and backends inherit unless they set their own.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Defaults {
    #[serde(default)]
    pub timeouts: Timeouts,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub maxconn: Option<u32>,
    /// `option forwardfor`: append the client address to `X-Forwarded-For`.
    #[serde(default, skip_serializing_if = "is_false")]
    pub forwardfor: bool,
    /// `option http-server-close`: one request per server connection.
    #[serde(default, skip_serializing_if = "is_false")]
    pub http_server_close: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retries: Option<u32>,
    #[serde(default, skip_serializing_if = "is_false")]
    pub redispatch: bool,
    /// Bodies for the responses nodes generate themselves (HAProxy `errorfile`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub errorfiles: Vec<ErrorFile>,
    /// Largest request head in bytes (1024–1048576, default 65536); larger gets 431.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_header_bytes: Option<u32>,
    /// Most header lines per request (1–1000, default 100); more gets 431.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_headers: Option<u32>,
}

/// Replaces the body of a response a node generates itself — a denial, 408 on slow
/// headers, 502/503/504 when servers fail — as HAProxy's `errorfile` does.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ErrorFile {
    /// One of 200, 400, 401, 403, 404, 405, 407, 408, 410, 413, 425, 429, 431, 500, 501,
    /// 502, 503, 504.
    pub status: u16,
    /// Default `text/html`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_type: Option<String>,
    pub body: String,
}

/// Timeouts by phase, as HAProxy durations (`"5s"`, `"1h"`, `"500ms"`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Timeouts {
    /// TCP connect to a server.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connect: Option<String>,
    /// Client inactivity before the upgrade (and on keep-alive HTTP).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client: Option<String>,
    /// Server inactivity before the upgrade.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server: Option<String>,
    /// Inactivity in either direction once the connection is a tunnel.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tunnel: Option<String>,
    /// Time allowed to receive complete request headers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http_request: Option<String>,
    /// Time a request may wait in a backend queue.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queue: Option<String>,
    /// Time a health check may take.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub check: Option<String>,
    /// HAProxy's `timeout client-fin`: how long a tunnel whose server has closed its side
    /// waits for the client to close too; default 30s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_fin: Option<String>,
    /// `timeout server-fin`: how long a tunnel whose client has closed its side waits for
    /// the server; default 30s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_fin: Option<String>,
}

/// A frontend: where clients connect, and how their requests are routed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Frontend {
    pub name: String,
    pub binds: Vec<Bind>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stick_table: Option<StickTable>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub acls: Vec<Acl>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub http_request: Vec<HttpRule>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub http_response: Vec<HttpRule>,
    /// Header rules for every response sent to clients, the node's own included.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub http_after_response: Vec<HttpRule>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub use_backend: Vec<UseBackend>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_backend: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeouts: Option<Timeouts>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub maxconn: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub forwardfor: Option<bool>,
    /// Overrides `defaults.errorfiles` status by status.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub errorfiles: Vec<ErrorFile>,
    /// Override `defaults.max_header_bytes` / `defaults.max_headers`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_header_bytes: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_headers: Option<u32>,
}

/// A listening address, optionally terminating TLS.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Bind {
    /// `"ip:port"`, e.g. `"127.0.0.1:8080"` or `"[::1]:8080"`.
    pub address: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<BindTls>,
    /// HTTP/2: on TLS binds when `tls.alpn` lists `h2`; on cleartext binds with prior
    /// knowledge (h2c) unless `http2.h2c` is false. Limits default as documented.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http2: Option<BindHttp2>,
}

/// HTTP/2 settings of a bind.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BindHttp2 {
    /// Cleartext binds: accept HTTP/2 with prior knowledge (detected by its connection
    /// preface, as HAProxy does). Default true.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub h2c: Option<bool>,
    /// Streams open at once per connection (1–10000; default 100).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_concurrent_streams: Option<u32>,
    /// Flow-control window per stream in bytes (65535–16777216; default 262144).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub initial_window_size: Option<u32>,
    /// Flow-control window per connection in bytes (65535–2147483647; default 1048576).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connection_window_size: Option<u32>,
    /// Streams a client may reset before they are answered, per connection, before
    /// the connection is closed with GOAWAY (rapid reset; 1–10000; default 20).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_reset_streams: Option<u32>,
}

/// TLS settings of a bind; certificates are referenced by name.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BindTls {
    pub certificates: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub alpn: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_version: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ciphers: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_tickets: Option<bool>,
}

/// Per-source counters, as HAProxy's `stick-table type ip ... store ...`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StickTable {
    /// Key type; `"ip"`.
    #[serde(rename = "type")]
    pub key_type: String,
    pub size: u64,
    pub expire: String,
    /// `conn_cur`, `conn_cnt`, `conn_rate(10s)`, `http_req_cnt`, `http_req_rate(10s)`.
    #[serde(default)]
    pub store: Vec<String>,
}

/// A named ACL in HAProxy syntax, e.g. `{"name": "is_websocket", "expr": "hdr(Upgrade) -i websocket"}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Acl {
    pub name: String,
    pub expr: String,
}

/// An `http-request` or `http-response` rule: an action, its arguments, and an optional
/// `if`/`unless` condition in HAProxy syntax. Which arguments apply depends on `action`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct HttpRule {
    /// `redirect`, `deny`, `set-header`, `add-header`, `del-header`, `replace-header`,
    /// `set-path`, `return`, `track-sc0`, `track-sc1`, `track-sc2` (requests);
    /// `set-header`, `add-header`, `del-header` (responses).
    pub action: String,
    /// Header name (header actions).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Header value (set-header, add-header).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    /// redirect: new scheme.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scheme: Option<String>,
    /// redirect: fixed location.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub location: Option<String>,
    /// redirect: prefix put before the original URI.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix: Option<String>,
    /// redirect: status code (301, 302, 303, 307, 308; default 302).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<u16>,
    /// deny/return: status code (deny default 403, return default 200).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    /// track-scN: the key (`src`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// return: response body.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<String>,
    /// return: body content type.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_type: Option<String>,
    /// set-path: the new path.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// replace-header: regex matched against each value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub regex: Option<String>,
    /// replace-header: replacement (`\1` style back-references allowed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replacement: Option<String>,
    /// Condition under which the rule applies.
    #[serde(rename = "if", default, skip_serializing_if = "Option::is_none")]
    pub cond_if: Option<String>,
    /// Condition under which the rule does not apply.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unless: Option<String>,
}

/// `use_backend NAME if|unless COND`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UseBackend {
    pub backend: String,
    #[serde(rename = "if", default, skip_serializing_if = "Option::is_none")]
    pub cond_if: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unless: Option<String>,
}

/// A pool of servers and how to pick one.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Backend {
    pub name: String,
    /// `roundrobin` (default), `leastconn`, `source`, `uri`, `random`, `hdr(name)`, `url_param(name)`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub balance: Option<String>,
    /// `map-based` (default) or `consistent`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hash_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cookie: Option<Cookie>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeouts: Option<Timeouts>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_check: Option<HealthCheck>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retries: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redispatch: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http_server_close: Option<bool>,
    #[serde(default)]
    pub servers: Vec<Server>,
}

/// Cookie persistence, as HAProxy's `cookie NAME insert indirect nocache ...`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Cookie {
    pub name: String,
    /// `insert` (default), `rewrite` or `prefix`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<String>,
    #[serde(default, skip_serializing_if = "is_false")]
    pub indirect: bool,
    #[serde(default, skip_serializing_if = "is_false")]
    pub nocache: bool,
    #[serde(default, skip_serializing_if = "is_false")]
    pub httponly: bool,
    #[serde(default, skip_serializing_if = "is_false")]
    pub secure: bool,
    /// `strict`, `lax` or `none`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub samesite: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub maxidle: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub maxlife: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub domain: Option<String>,
}

/// How servers are probed: `tcp`, `http` or `websocket`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct HealthCheck {
    #[serde(rename = "type")]
    pub check_type: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uri: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    #[serde(default, skip_serializing_if = "IndexMap::is_empty")]
    pub headers: IndexMap<String, String>,
    /// A status (`101`) or an inclusive range (`"200-399"`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub expect_status: Option<serde_json::Value>,
}

/// One server of a backend.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Server {
    pub name: String,
    /// `"host:port"`.
    pub address: String,
    /// 0–256, default 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weight: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub maxconn: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cookie: Option<String>,
    #[serde(default, skip_serializing_if = "is_false")]
    pub backup: bool,
    /// `ready` (default), `drain` or `maint`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<String>,
    /// Present: the backend's health check runs against this server.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub check: Option<ServerCheck>,
}

/// Health-check cadence of one server.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ServerCheck {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inter: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fall: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rise: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
}
