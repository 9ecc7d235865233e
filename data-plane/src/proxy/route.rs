//! The routing phase: what the frontend's rules make of a request, and which backend it
//! goes to. Independent of the client protocol: it sees the request head and the
//! [`Client`] it came from.
//!
//! 1. `http_request` rules in configured order (redirect/deny/return answer here);
//! 2. `option forwardfor`;
//! 3. backend choice: first matching `use_backend`, else `default_backend`, else 503.
//!
//! Response rules (`http_response` on server responses, `http_after_response` on every
//! response) see the request as the request rules left it ([`Routed::view`]).

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::request::Parts;
use http::{Request, Response, StatusCode, Uri};
use http_body_util::{BodyExt, Full};
use sluice_proto::v1 as pb;

use super::error::local_response;
use super::Body;
use crate::config::acl::{holds, RequestCtx, Tracked};
use crate::config::{
    BackendPlan, BindPlan, FrontendPlan, HeaderOp, Plan, RequestAction, ResponseAction, Rule,
};
use arc_swap::ArcSwap;

/// Where a connection's requests find the plan they run under: the node's current plan,
/// at the bind address the connection was accepted on.
#[derive(Clone)]
pub struct CurrentPlan {
    pub plan: Arc<ArcSwap<Plan>>,
    pub addr: SocketAddr,
}

/// The client side of a connection, as rules see it; shared by its requests.
pub struct Client {
    /// The bind the connection was accepted under (its TLS, timeouts, HTTP/2 limits).
    pub bind: Arc<BindPlan>,
    /// Where each request finds the current plan (none: requests keep `bind`'s).
    pub current: Option<CurrentPlan>,
    pub src: SocketAddr,
    pub local: SocketAddr,
    /// Whether the connection came in over TLS (`ssl_fc`), and the ALPN protocol agreed.
    pub tls: bool,
    pub alpn: Option<Vec<u8>>,
    /// Stick counters this connection tracks (`track-sc0/1/2`), held until it closes — or,
    /// once it is a tunnel, until the tunnel does.
    pub tracked: Mutex<Tracked>,
}

impl Client {
    /// The bind a new request runs under: the current plan's at this connection's
    /// address, so a kept-alive connection follows configuration changes request by
    /// request; the connection's own when the current plan no longer has that bind.
    pub fn bind_now(&self) -> Arc<BindPlan> {
        self.current
            .as_ref()
            .and_then(|c| c.plan.load().binds.get(&c.addr).cloned())
            .unwrap_or_else(|| self.bind.clone())
    }

    /// What ACLs see of a request on this connection.
    fn ctx<'a>(&'a self, parts: &'a Parts, sc: &'a Tracked) -> RequestCtx<'a> {
        RequestCtx {
            parts,
            src: self.src,
            local: self.local,
            tls: self.tls,
            alpn: self.alpn.as_deref(),
            sc,
        }
    }

    /// The tracked stick counters, copied (cheap: three optional `Arc`s) when the
    /// frontend has a stick table, else none.
    pub fn sc(&self, fe: &FrontendPlan) -> Tracked {
        if fe.stick.is_some() {
            self.tracked.lock().expect("tracked lock").clone()
        } else {
            Tracked::default()
        }
    }
}

/// Where the routing phase sends a request.
pub enum Route {
    /// Answered by a rule (redirect, return): "locally processed".
    Answered(Response<Body>),
    /// Refused by a `deny` rule.
    Denied(Response<Body>),
    Backend(Arc<BackendPlan>),
    /// No `use_backend` matched and there is no default backend.
    NoBackend,
}

/// The routing phase's result.
pub struct Routed {
    pub route: Route,
    /// The request as the response rules see it (after the request rules), kept only
    /// when the frontend has response rules.
    pub view: Option<Parts>,
}

/// Runs the routing phase on a request head (rewritten in place).
pub fn route(parts: &mut Parts, client: &Client, fe: &FrontendPlan) -> Routed {
    let answered = request_rules(parts, client, fe);
    // Keep a copy of what the response rules may look at; the request itself moves on.
    let view = (!fe.http_response.is_empty() || !fe.http_after_response.is_empty()).then(|| {
        let mut p = Request::new(()).into_parts().0;
        p.method = parts.method.clone();
        p.uri = parts.uri.clone();
        p.headers = parts.headers.clone();
        p
    });
    if let Some(route) = answered {
        return Routed { route, view };
    }
    if fe.forwardfor {
        parts.headers.append(
            HeaderName::from_static("x-forwarded-for"),
            ip_value(client.src.ip().to_canonical()),
        );
    }
    let sc = client.sc(fe);
    let ctx = client.ctx(parts, &sc);
    let backend = fe
        .use_backend
        .iter()
        .find(|(cond, _)| holds(cond, &ctx))
        .map(|(_, b)| b.clone())
        .or_else(|| fe.default_backend.clone());
    Routed {
        route: backend.map_or(Route::NoBackend, Route::Backend),
        view,
    }
}

/// `ip` as a header value: an IPv4 address's digits written directly (the formatting
/// machinery costs more than the rest of `option forwardfor`), IPv6 as `Display` writes it.
fn ip_value(ip: IpAddr) -> HeaderValue {
    let text = match ip {
        IpAddr::V4(v4) => {
            let mut buf = [0u8; 15];
            let mut n = 0;
            for (i, octet) in v4.octets().into_iter().enumerate() {
                if i > 0 {
                    buf[n] = b'.';
                    n += 1;
                }
                if octet >= 100 {
                    buf[n] = b'0' + octet / 100;
                    n += 1;
                }
                if octet >= 10 {
                    buf[n] = b'0' + octet / 10 % 10;
                    n += 1;
                }
                buf[n] = b'0' + octet % 10;
                n += 1;
            }
            Bytes::copy_from_slice(&buf[..n])
        }
        IpAddr::V6(v6) => Bytes::from(v6.to_string()),
    };
    HeaderValue::from_maybe_shared(text).expect("an IP is a valid header value")
}

/// `Connection: upgrade` plus an `Upgrade` header (RFC 9110 §7.8).
pub fn is_upgrade_request(h: &HeaderMap) -> bool {
    h.contains_key(header::UPGRADE) && has_token(h, header::CONNECTION, "upgrade")
}

fn has_token(h: &HeaderMap, name: HeaderName, token: &str) -> bool {
    h.get_all(name).iter().any(|v| {
        v.to_str()
            .is_ok_and(|s| s.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
    })
}

/// Runs `http_request` rules; `Some(route)` ends the request here.
fn request_rules(parts: &mut Parts, client: &Client, fe: &FrontendPlan) -> Option<Route> {
    let mut sc = client.sc(fe);
    for (cond, action) in &fe.http_request {
        let ctx = client.ctx(parts, &sc);
        if !holds(cond, &ctx) {
            continue;
        }
        match action {
            RequestAction::Redirect { kind, target, code } => {
                let pq = parts
                    .uri
                    .path_and_query()
                    .map(|p| p.as_str())
                    .unwrap_or("/");
                let location = match kind {
                    pb::RedirectKind::Scheme => {
                        let host = parts
                            .headers
                            .get(header::HOST)
                            .and_then(|h| h.to_str().ok())
                            .map(str::to_string)
                            .unwrap_or_else(|| client.local.to_string());
                        format!("{target}://{host}{pq}")
                    }
                    pb::RedirectKind::Prefix => format!("{}{pq}", target.trim_end_matches('/')),
                    _ => target.clone(),
                };
                let mut resp = empty_response(*code);
                if let Ok(v) = HeaderValue::from_str(&location) {
                    resp.headers_mut().insert(header::LOCATION, v);
                }
                return Some(Route::Answered(resp));
            }
            RequestAction::Deny(status) => {
                fe.counters.denied.fetch_add(1, Relaxed);
                return Some(Route::Denied(local_response(*status, &fe.errorfiles)));
            }
            RequestAction::Return {
                status,
                content_type,
                body,
            } => {
                let mut resp = Response::new(
                    Full::new(body.clone())
                        .map_err(|never| match never {})
                        .boxed(),
                );
                *resp.status_mut() = *status;
                resp.headers_mut()
                    .insert(header::CONTENT_TYPE, content_type.clone());
                return Some(Route::Answered(resp));
            }
            RequestAction::Header(op) => rewrite(&mut parts.headers, op),
            RequestAction::ReplaceHeader(name, regex, replacement) => {
                let values: Vec<HeaderValue> = parts
                    .headers
                    .get_all(name)
                    .iter()
                    .map(|v| match v.to_str() {
                        Ok(s) => HeaderValue::from_str(&regex.replace_all(s, replacement.as_str()))
                            .unwrap_or_else(|_| v.clone()),
                        Err(_) => v.clone(),
                    })
                    .collect();
                parts.headers.remove(name);
                for v in values {
                    parts.headers.append(name.clone(), v);
                }
            }
            RequestAction::SetPath(path) => set_path(&mut parts.uri, path),
            RequestAction::ReplacePath(regex, replacement) => {
                let path = regex.replace_all(parts.uri.path(), replacement.as_str());
                if path != parts.uri.path() {
                    let path = path.into_owned();
                    set_path(&mut parts.uri, &path);
                }
            }
            RequestAction::TrackSc(n) => {
                let Some(table) = &fe.stick else { continue };
                let slot = &mut sc[(*n as usize).min(2)];
                match slot {
                    // Already tracked by this connection: one more request.
                    Some(t) => t.entry.count_request(),
                    None => {
                        let t = table.track(client.src.ip());
                        t.entry.count_request();
                        *slot = Some(t);
                        *client.tracked.lock().expect("tracked lock") = sc.clone();
                    }
                }
            }
        }
    }
    None
}

/// A response with no body.
pub fn empty_response(status: StatusCode) -> Response<Body> {
    let mut resp = Response::new(
        Full::new(Bytes::new())
            .map_err(|never| match never {})
            .boxed(),
    );
    *resp.status_mut() = status;
    resp
}

/// Runs response rules (`http_response` or `http_after_response`) on a response's headers;
/// they see the request as `view` holds it.
pub fn response_rules(
    h: &mut HeaderMap,
    view: &Parts,
    client: &Client,
    rules: &[Rule<ResponseAction>],
    sc: &Tracked,
) {
    let ctx = client.ctx(view, sc);
    for (cond, action) in rules {
        if !holds(cond, &ctx) {
            continue;
        }
        rewrite(h, action);
    }
}

/// Applies a header rewrite of a request or response rule.
/// Replaces the path of `uri`, keeping its query string.
fn set_path(uri: &mut Uri, path: &str) {
    let pq = match uri.query() {
        Some(q) => format!("{path}?{q}"),
        None => path.to_string(),
    };
    if let Ok(new) = pq.parse::<Uri>() {
        *uri = new;
    }
}

fn rewrite(h: &mut HeaderMap, op: &HeaderOp) {
    match op {
        HeaderOp::Set(name, value) => {
            h.insert(name.clone(), value.clone());
        }
        HeaderOp::Add(name, value) => {
            h.append(name.clone(), value.clone());
        }
        HeaderOp::Del(name) => {
            h.remove(name);
        }
    }
}

/// `http_response` rules on a server's response, when the frontend has any.
pub fn server_response_rules(
    h: &mut HeaderMap,
    view: Option<&Parts>,
    client: &Client,
    fe: &FrontendPlan,
) {
    if let Some(view) = view.filter(|_| !fe.http_response.is_empty()) {
        response_rules(h, view, client, &fe.http_response, &client.sc(fe));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_forwarded_for_value_reads_as_the_address_displays() {
        let mut ips: Vec<IpAddr> = [
            "0.0.0.0",
            "255.255.255.255",
            "10.0.5.99",
            "1.20.100.7",
            "::1",
            "2001:db8::2:1",
        ]
        .iter()
        .map(|s| s.parse().unwrap())
        .collect();
        ips.extend((0..=255u8).map(|b| IpAddr::from([b, 255 - b, b / 3, b % 10])));
        for ip in ips {
            assert_eq!(ip_value(ip).to_str().unwrap(), ip.to_string());
        }
    }
}
