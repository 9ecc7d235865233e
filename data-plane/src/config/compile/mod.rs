//! Snapshot → [`Plan`]: validation that needs the node (regexes, header values, TLS
//! keys, bind addresses) and every default resolved once.
//!
//! Each part of the snapshot compiles in its own module ([`frontend`], [`backend`],
//! [`rules`]); errors are a typed [`PlanError`] that names the object, so the node nacks
//! with a reason an operator can act on and keeps its previous plan.

mod backend;
mod frontend;
mod rules;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use sluice_proto::v1 as pb;

use super::acl::AclError;
use super::Plan;
use crate::counters::Registry;
use crate::tls::TlsError;

/// Why a snapshot cannot be compiled.
#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    #[error("frontend {name}: {error}")]
    Frontend { name: String, error: Box<PlanError> },
    #[error("backend {name}: {error}")]
    Backend { name: String, error: Box<PlanError> },
    #[error("acl {0} is empty")]
    EmptyAcl(String),
    #[error("acl {name}: {error}")]
    Acl { name: String, error: AclError },
    #[error("{0}")]
    Condition(AclError),
    #[error("empty rule")]
    EmptyRule,
    #[error("bad header name {0:?}")]
    HeaderName(String),
    #[error("bad header value {0:?}")]
    HeaderValue(String),
    #[error("bad status {0}")]
    Status(u32),
    #[error("{0}")]
    Regex(regex::Error),
    #[error("no backend named {0:?}")]
    NoBackend(String),
    #[error("bind {0:?} is not ip:port")]
    BindAddress(String),
    #[error("bind {address}: {error}")]
    BindTls {
        address: SocketAddr,
        error: TlsError,
    },
    #[error("bind {0} is used twice")]
    BindTwice(SocketAddr),
    #[error("balance hdr({0}): bad header name")]
    BalanceHeader(String),
}

impl PlanError {
    fn in_frontend(self, name: &str) -> Self {
        PlanError::Frontend {
            name: name.to_string(),
            error: Box::new(self),
        }
    }

    fn in_backend(self, name: &str) -> Self {
        PlanError::Backend {
            name: name.to_string(),
            error: Box::new(self),
        }
    }
}

/// What every object's compilation shares: the document's defaults and the registry of
/// state that outlives plans.
struct Context<'a> {
    defaults: &'a pb::Defaults,
    /// The defaults' timeouts (each object's own override them field by field).
    timeouts: pb::Timeouts,
    registry: &'a Registry,
}

impl Context<'_> {
    /// An object's timeouts with the document's defaults under them.
    fn timeouts(&self, own: Option<pb::Timeouts>) -> pb::Timeouts {
        let own = own.unwrap_or_default();
        let d = &self.timeouts;
        pb::Timeouts {
            connect_ms: own.connect_ms.or(d.connect_ms),
            client_ms: own.client_ms.or(d.client_ms),
            server_ms: own.server_ms.or(d.server_ms),
            tunnel_ms: own.tunnel_ms.or(d.tunnel_ms),
            http_request_ms: own.http_request_ms.or(d.http_request_ms),
            queue_ms: own.queue_ms.or(d.queue_ms),
            check_ms: own.check_ms.or(d.check_ms),
            client_fin_ms: own.client_fin_ms.or(d.client_fin_ms),
            server_fin_ms: own.server_fin_ms.or(d.server_fin_ms),
        }
    }
}

fn ms(v: Option<u64>) -> Option<Duration> {
    v.map(Duration::from_millis)
}

fn header_name(name: &str) -> Result<http::HeaderName, PlanError> {
    http::HeaderName::from_bytes(name.as_bytes())
        .map_err(|_| PlanError::HeaderName(name.to_string()))
}

fn header_value(v: &str) -> Result<http::HeaderValue, PlanError> {
    http::HeaderValue::from_str(v).map_err(|_| PlanError::HeaderValue(v.to_string()))
}

fn status(code: u32) -> Result<http::StatusCode, PlanError> {
    u16::try_from(code)
        .ok()
        .and_then(|c| http::StatusCode::from_u16(c).ok())
        .ok_or(PlanError::Status(code))
}

/// SHA-256 of `snap` encoded again from what was decoded (fields this node does not
/// know are not in it: a node too old for a snapshot shows as drift).
pub fn digest(snap: &pb::Snapshot) -> Vec<u8> {
    use prost::Message as _;
    use sha2::Digest as _;
    sha2::Sha256::digest(snap.encode_to_vec()).to_vec()
}

impl Plan {
    /// Compiles a snapshot, taking the counters and stick tables of its objects from
    /// `registry` (so they carry over from the previous plan). Errors say which object
    /// could not be compiled; the caller nacks with that text and keeps the previous plan.
    pub fn compile(snap: &pb::Snapshot, registry: &Registry) -> Result<Self, PlanError> {
        let defaults = snap.defaults.clone().unwrap_or_default();
        let cx = Context {
            timeouts: defaults.timeouts.unwrap_or_default(),
            defaults: &defaults,
            registry,
        };
        let mut backends = Vec::with_capacity(snap.backends.len());
        for b in &snap.backends {
            let plan = backend::compile(b, &cx).map_err(|e| e.in_backend(&b.name))?;
            backends.push(Arc::new(plan));
        }
        let by_name: HashMap<&str, &Arc<super::BackendPlan>> =
            backends.iter().map(|b| (&*b.name, b)).collect();
        let certificates: HashMap<&str, &pb::Certificate> = snap
            .certificates
            .iter()
            .map(|c| (c.name.as_str(), c))
            .collect();
        let mut binds = HashMap::new();
        let mut frontends = Vec::with_capacity(snap.frontends.len());
        for f in &snap.frontends {
            let (fe, fe_binds) = frontend::compile(f, &cx, &by_name, &certificates)
                .map_err(|e| e.in_frontend(&f.name))?;
            for bind in fe_binds {
                if binds.contains_key(&bind.address) {
                    return Err(PlanError::BindTwice(bind.address).in_frontend(&f.name));
                }
                binds.insert(bind.address, Arc::new(bind));
            }
            frontends.push(fe);
        }
        Ok(Plan {
            version: snap.version,
            digest: digest(snap),
            binds,
            frontends,
            backends,
        })
    }
}

#[cfg(test)]
mod tests;
