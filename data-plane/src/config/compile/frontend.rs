//! A frontend: its ACLs, rules, errorfiles, backend choice, limits and binds.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use sluice_proto::v1 as pb;

use super::{header_value, ms, status, Context, PlanError};
use crate::config::acl::{AclMatcher, Condition};
use crate::config::pages::{ErrorPage, ErrorPages, RefusalPages};
use crate::config::{
    BackendPlan, BindPlan, FrontendPlan, Http2Plan, RequestAction, ResponseAction, Rule,
    DEFAULT_CLIENT, DEFAULT_HTTP_REQUEST, DEFAULT_MAX_HEADER_BYTES,
};

/// The frontend's named ACLs (several may share a name: they are ORed, as in HAProxy).
type NamedAcls = HashMap<String, Vec<Arc<AclMatcher>>>;

pub(super) fn compile(
    f: &pb::Frontend,
    cx: &Context<'_>,
    backends: &HashMap<&str, &Arc<BackendPlan>>,
    certificates: &HashMap<&str, &pb::Certificate>,
) -> Result<(Arc<FrontendPlan>, Vec<BindPlan>), PlanError> {
    let defaults = cx.defaults;
    let mut named = NamedAcls::new();
    for a in &f.acls {
        let expr = a
            .expr
            .as_ref()
            .ok_or_else(|| PlanError::EmptyAcl(a.name.clone()))?;
        let m = AclMatcher::compile(expr).map_err(|error| PlanError::Acl {
            name: a.name.clone(),
            error,
        })?;
        named.entry(a.name.clone()).or_default().push(Arc::new(m));
    }
    let cond = |c: &Option<pb::Condition>| -> Result<Option<Condition>, PlanError> {
        c.as_ref()
            .map(|c| Condition::compile(c, &named))
            .transpose()
            .map_err(PlanError::Condition)
    };
    let http_request = f
        .http_request
        .iter()
        .map(|r| {
            let action = r.action.as_ref().ok_or(PlanError::EmptyRule)?;
            Ok((cond(&r.cond)?, RequestAction::try_from(action)?))
        })
        .collect::<Result<Vec<Rule<RequestAction>>, PlanError>>()?;
    let response_rules = |rules: &[pb::HttpResponseRule]| {
        rules
            .iter()
            .map(|r| {
                let action = r.action.as_ref().ok_or(PlanError::EmptyRule)?;
                Ok((cond(&r.cond)?, ResponseAction::try_from(action)?))
            })
            .collect::<Result<Vec<Rule<ResponseAction>>, PlanError>>()
    };
    let http_response = response_rules(&f.http_response)?;
    let http_after_response = response_rules(&f.http_after_response)?;
    // The frontend's own entries override the defaults'.
    let mut errorfiles = ErrorPages::new();
    for e in defaults.errorfiles.iter().chain(&f.errorfiles) {
        let (code, page) = error_page(e)?;
        errorfiles.insert(code, page);
    }
    let backend = |name: &str| {
        backends
            .get(name)
            .map(|b| Arc::clone(b))
            .ok_or_else(|| PlanError::NoBackend(name.to_string()))
    };
    let use_backend = f
        .use_backend
        .iter()
        .map(|u| Ok((cond(&u.cond)?, backend(&u.backend)?)))
        .collect::<Result<Vec<_>, PlanError>>()?;
    let default_backend = if f.default_backend.is_empty() {
        None
    } else {
        Some(backend(&f.default_backend)?)
    };
    let t = cx.timeouts(f.timeouts);
    let fe = Arc::new(FrontendPlan {
        name: f.name.as_str().into(),
        http_request,
        http_response,
        http_after_response,
        refusal_pages: Arc::new(RefusalPages::render(&errorfiles)),
        errorfiles,
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
        client_timeout: ms(t.client_ms).unwrap_or(DEFAULT_CLIENT),
        http_request_timeout: ms(t.http_request_ms).unwrap_or(DEFAULT_HTTP_REQUEST),
        forwardfor: f.forwardfor.unwrap_or(defaults.forwardfor),
        maxconn: f.maxconn.or(defaults.maxconn),
        stick: f.stick_table.as_ref().map(|t| {
            cx.registry
                .sticks
                .table(&f.name, crate::stick::Spec::from_pb(t))
        }),
        counters: cx.registry.frontend(&f.name),
    });
    let binds = f
        .binds
        .iter()
        .map(|b| {
            let address: SocketAddr = b
                .address
                .parse()
                .map_err(|_| PlanError::BindAddress(b.address.clone()))?;
            let tls = b
                .tls
                .as_ref()
                .map(|t| crate::tls::acceptor(t, certificates, b.http2.is_some()))
                .transpose()
                .map_err(|error| PlanError::BindTls { address, error })?;
            Ok(BindPlan {
                address,
                frontend: fe.clone(),
                tls,
                http2: b.http2.as_ref().map(http2),
            })
        })
        .collect::<Result<Vec<_>, PlanError>>()?;
    Ok((fe, binds))
}

/// A bind's HTTP/2 settings; a zero (a field an older control plane does not send)
/// takes the default.
fn http2(h: &pb::Http2) -> Http2Plan {
    let or = |v: u32, d: u32| if v == 0 { d } else { v };
    Http2Plan {
        h2c: h.h2c,
        max_concurrent_streams: or(h.max_concurrent_streams, 100),
        initial_window_size: or(h.initial_window_size, 256 * 1024),
        connection_window_size: or(h.connection_window_size, 1024 * 1024),
        max_reset_streams: or(h.max_reset_streams, 20),
    }
}

/// An errorfile: its status and page (`text/html` unless it names a content type).
fn error_page(e: &pb::ErrorFile) -> Result<(u16, ErrorPage), PlanError> {
    let code = status(e.status)?;
    let content_type = if e.content_type.is_empty() {
        http::HeaderValue::from_static("text/html")
    } else {
        header_value(&e.content_type)?
    };
    Ok((
        code.as_u16(),
        ErrorPage {
            content_type,
            body: bytes::Bytes::from(e.body.clone()),
        },
    ))
}
