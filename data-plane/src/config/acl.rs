//! Compiled ACLs and conditions, evaluated per request.
//!
//! The control plane has parsed and validated every expression; here each one is
//! compiled once per snapshot into a [`Matcher`] (lower-cased values for `-i`, regexes,
//! parsed CIDRs) so evaluating a request allocates nothing but what a fetch must build.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use http::request::Parts;
use regex::Regex;
use sluice_proto::v1 as pb;

/// Why an ACL or condition of a snapshot cannot be compiled.
#[derive(Debug, thiserror::Error)]
pub enum AclError {
    #[error("ACL without a fetch")]
    NoFetch,
    #[error("ACL without a match")]
    NoMatch,
    #[error("{0:?} is not a header name")]
    HeaderName(String),
    #[error("{0:?} is not an IP")]
    Ip(String),
    #[error("{0:?} has a bad prefix")]
    Prefix(String),
    #[error("{0:?}: stick counter {1} (0-2)")]
    StickCounter(String, usize),
    #[error("{0:?}: unknown fetch")]
    Fetch(String),
    #[error("{0:?} is not an integer")]
    Integer(String),
    #[error("regex {0:?}: {1}")]
    Regex(String, regex::Error),
    #[error("{0:?}: unknown matcher")]
    Matcher(String),
    #[error("condition {0:?}: unknown ACL {1:?}")]
    UnknownAcl(String, String),
    #[error("condition {0:?}: empty term")]
    EmptyTerm(String),
}

/// What a request looks like to an ACL.
pub struct RequestCtx<'a> {
    pub parts: &'a Parts,
    pub src: SocketAddr,
    pub local: SocketAddr,
    pub tls: bool,
    pub alpn: Option<&'a [u8]>,
    /// The stick counters the connection tracks (`track-sc0/1/2`).
    pub sc: &'a Tracked,
}

/// Stick counters 0, 1 and 2 of a connection.
pub type Tracked = [Option<std::sync::Arc<crate::stick::Track>>; 3];

/// No stick counter tracked.
pub static UNTRACKED: Tracked = [const { None }; 3];

#[derive(Debug, Clone, Copy)]
enum ScKind {
    ConnCur,
    ConnRate,
    HttpReqRate,
}

#[derive(Debug)]
enum FetchSpec {
    Hdr(Option<http::HeaderName>),
    HdrCnt(Option<http::HeaderName>),
    Path,
    Url,
    Query,
    UrlParam(String),
    Host,
    Method,
    Src,
    DstPort,
    SslFc,
    SslFcAlpn,
    Cookie(String),
    /// A counter of stick counter 0-2; untracked, it yields no sample.
    StickCounter(usize, ScKind),
}

#[derive(Debug, Clone, Copy)]
enum IntOp {
    Eq,
    Gt,
    Ge,
    Lt,
    Le,
}

#[derive(Debug)]
enum Matcher {
    Str(Vec<String>),
    Beg(Vec<String>),
    End(Vec<String>),
    Sub(Vec<String>),
    Reg(Vec<Regex>),
    Found,
    Len(Option<IntOp>, Vec<i64>),
    Int(Option<IntOp>, Vec<i64>),
    Ip(Vec<(IpAddr, u8)>),
    Bool,
    Dir(Vec<String>),
    Dom(Vec<String>),
}

/// One compiled ACL expression.
#[derive(Debug)]
pub struct AclMatcher {
    fetch: FetchSpec,
    matcher: Matcher,
    case_insensitive: bool,
}

/// A sample produced by a fetch.
enum Sample<'a> {
    Str(std::borrow::Cow<'a, str>),
    Int(i64),
    Bool(bool),
    Ip(IpAddr),
}

fn header_name(arg: &str) -> Result<Option<http::HeaderName>, AclError> {
    if arg.is_empty() {
        return Ok(None);
    }
    http::HeaderName::from_bytes(arg.as_bytes())
        .map(Some)
        .map_err(|_| AclError::HeaderName(arg.to_string()))
}

fn parse_cidr(text: &str) -> Result<(IpAddr, u8), AclError> {
    let (ip, prefix) = match text.split_once('/') {
        Some((ip, p)) => (ip, Some(p)),
        None => (text, None),
    };
    let ip: IpAddr = ip.parse().map_err(|_| AclError::Ip(text.to_string()))?;
    let max = if ip.is_ipv4() { 32 } else { 128 };
    let prefix = match prefix {
        Some(p) => p
            .parse::<u8>()
            .ok()
            .filter(|p| *p <= max)
            .ok_or_else(|| AclError::Prefix(text.to_string()))?,
        None => max,
    };
    Ok((ip, prefix))
}

fn ip_in(addr: IpAddr, net: IpAddr, prefix: u8) -> bool {
    // Compare IPv4-mapped IPv6 clients as IPv4.
    let addr = match addr {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(addr),
        v4 => v4,
    };
    match (addr, net) {
        (IpAddr::V4(a), IpAddr::V4(n)) => {
            let mask = if prefix == 0 {
                0
            } else {
                u32::MAX << (32 - prefix)
            };
            u32::from(a) & mask == u32::from(n) & mask
        }
        (IpAddr::V6(a), IpAddr::V6(n)) => {
            let mask = if prefix == 0 {
                0
            } else {
                u128::MAX << (128 - prefix)
            };
            u128::from(a) & mask == u128::from(n) & mask
        }
        _ => false,
    }
}

impl AclMatcher {
    pub fn compile(expr: &pb::AclExpr) -> Result<Self, AclError> {
        let fetch = expr.fetch.as_ref().ok_or(AclError::NoFetch)?;
        let m = expr.r#match.as_ref().ok_or(AclError::NoMatch)?;
        let ci = m.case_insensitive;
        let fetch_spec = match fetch.kind() {
            pb::FetchKind::Hdr => FetchSpec::Hdr(header_name(&fetch.arg)?),
            pb::FetchKind::HdrCnt => FetchSpec::HdrCnt(header_name(&fetch.arg)?),
            pb::FetchKind::Path => FetchSpec::Path,
            pb::FetchKind::Url => FetchSpec::Url,
            pb::FetchKind::Query => FetchSpec::Query,
            pb::FetchKind::UrlParam => FetchSpec::UrlParam(fetch.arg.clone()),
            pb::FetchKind::Host => FetchSpec::Host,
            pb::FetchKind::Method => FetchSpec::Method,
            pb::FetchKind::Src => FetchSpec::Src,
            pb::FetchKind::DstPort => FetchSpec::DstPort,
            pb::FetchKind::SslFc => FetchSpec::SslFc,
            pb::FetchKind::SslFcAlpn => FetchSpec::SslFcAlpn,
            pb::FetchKind::Cookie => FetchSpec::Cookie(fetch.arg.clone()),
            kind @ (pb::FetchKind::ScConnCur
            | pb::FetchKind::ScConnRate
            | pb::FetchKind::ScHttpReqRate) => {
                let n: usize = fetch.arg.parse().unwrap_or(0);
                if n > 2 {
                    return Err(AclError::StickCounter(expr.source.clone(), n));
                }
                let which = match kind {
                    pb::FetchKind::ScConnCur => ScKind::ConnCur,
                    pb::FetchKind::ScConnRate => ScKind::ConnRate,
                    _ => ScKind::HttpReqRate,
                };
                FetchSpec::StickCounter(n, which)
            }
            pb::FetchKind::Unspecified => return Err(AclError::Fetch(expr.source.clone())),
        };
        let strings = || -> Vec<String> {
            m.values
                .iter()
                .map(|v| {
                    if ci {
                        v.to_ascii_lowercase()
                    } else {
                        v.clone()
                    }
                })
                .collect()
        };
        let ints = || -> Result<Vec<i64>, AclError> {
            m.values
                .iter()
                .map(|v| v.parse::<i64>().map_err(|_| AclError::Integer(v.clone())))
                .collect()
        };
        let op = match m.int_op() {
            pb::IntOp::Unspecified => None,
            pb::IntOp::Eq => Some(IntOp::Eq),
            pb::IntOp::Gt => Some(IntOp::Gt),
            pb::IntOp::Ge => Some(IntOp::Ge),
            pb::IntOp::Lt => Some(IntOp::Lt),
            pb::IntOp::Le => Some(IntOp::Le),
        };
        let matcher = match m.kind() {
            pb::MatchKind::Str => Matcher::Str(strings()),
            pb::MatchKind::Beg => Matcher::Beg(strings()),
            pb::MatchKind::End => Matcher::End(strings()),
            pb::MatchKind::Sub => Matcher::Sub(strings()),
            pb::MatchKind::Dir => Matcher::Dir(strings()),
            pb::MatchKind::Dom => Matcher::Dom(strings()),
            pb::MatchKind::Reg => Matcher::Reg(
                m.values
                    .iter()
                    .map(|v| {
                        let p = if ci { format!("(?i){v}") } else { v.clone() };
                        Regex::new(&p).map_err(|e| AclError::Regex(v.clone(), e))
                    })
                    .collect::<Result<_, _>>()?,
            ),
            pb::MatchKind::Found => Matcher::Found,
            pb::MatchKind::Len => Matcher::Len(op, ints()?),
            pb::MatchKind::Int => Matcher::Int(op, ints()?),
            pb::MatchKind::Ip => Matcher::Ip(
                m.values
                    .iter()
                    .map(|v| parse_cidr(v))
                    .collect::<Result<_, _>>()?,
            ),
            pb::MatchKind::Bool => Matcher::Bool,
            pb::MatchKind::Unspecified => return Err(AclError::Matcher(expr.source.clone())),
        };
        Ok(Self {
            fetch: fetch_spec,
            matcher,
            case_insensitive: ci,
        })
    }

    /// Whether any sample the fetch produces matches.
    pub fn matches(&self, ctx: &RequestCtx<'_>) -> bool {
        let mut hit = false;
        self.for_each_sample(ctx, &mut |s| {
            if !hit && self.match_sample(s) {
                hit = true;
            }
        });
        hit
    }

    fn for_each_sample<'a>(&self, ctx: &RequestCtx<'a>, f: &mut dyn FnMut(Sample<'a>)) {
        use std::borrow::Cow;
        let parts = ctx.parts;
        match &self.fetch {
            FetchSpec::Hdr(name) => {
                let values: Box<dyn Iterator<Item = &http::HeaderValue>> = match name {
                    Some(n) => Box::new(parts.headers.get_all(n).iter()),
                    None => Box::new(parts.headers.values()),
                };
                for v in values {
                    let Ok(text) = v.to_str() else { continue };
                    for item in text.split(',') {
                        f(Sample::Str(Cow::Borrowed(item.trim())));
                    }
                }
            }
            FetchSpec::HdrCnt(name) => {
                let count = match name {
                    Some(n) => parts
                        .headers
                        .get_all(n)
                        .iter()
                        .map(|v| v.as_bytes().split(|b| *b == b',').count())
                        .sum::<usize>(),
                    None => parts.headers.len(),
                };
                f(Sample::Int(count as i64));
            }
            FetchSpec::Path => f(Sample::Str(Cow::Borrowed(parts.uri.path()))),
            FetchSpec::Url => {
                let url = parts
                    .uri
                    .path_and_query()
                    .map(|p| p.as_str())
                    .unwrap_or("/");
                f(Sample::Str(Cow::Borrowed(url)))
            }
            FetchSpec::Query => {
                if let Some(q) = parts.uri.query() {
                    f(Sample::Str(Cow::Borrowed(q)))
                }
            }
            FetchSpec::UrlParam(name) => {
                if let Some(q) = parts.uri.query() {
                    for pair in q.split('&') {
                        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
                        if k == name {
                            f(Sample::Str(Cow::Borrowed(v)));
                        }
                    }
                }
            }
            FetchSpec::Host => {
                let host = parts
                    .headers
                    .get(http::header::HOST)
                    .and_then(|h| h.to_str().ok())
                    .or_else(|| parts.uri.host());
                if let Some(h) = host {
                    f(Sample::Str(Cow::Owned(strip_port(h).to_ascii_lowercase())))
                }
            }
            FetchSpec::Method => f(Sample::Str(Cow::Borrowed(parts.method.as_str()))),
            FetchSpec::Src => f(Sample::Ip(ctx.src.ip())),
            FetchSpec::DstPort => f(Sample::Int(ctx.local.port() as i64)),
            FetchSpec::SslFc => f(Sample::Bool(ctx.tls)),
            FetchSpec::SslFcAlpn => {
                if let Some(a) = ctx.alpn.and_then(|a| std::str::from_utf8(a).ok()) {
                    f(Sample::Str(Cow::Borrowed(a)))
                }
            }
            FetchSpec::Cookie(name) => {
                for v in parts.headers.get_all(http::header::COOKIE) {
                    let Ok(text) = v.to_str() else { continue };
                    for pair in text.split(';') {
                        let (k, val) = pair.trim().split_once('=').unwrap_or((pair.trim(), ""));
                        if k == name {
                            f(Sample::Str(Cow::Borrowed(val)));
                        }
                    }
                }
            }
            FetchSpec::StickCounter(n, which) => {
                // An untracked counter gives no sample: the ACL does not match.
                if let Some(t) = &ctx.sc[*n] {
                    let e = &t.entry;
                    let v = match which {
                        ScKind::ConnCur => e.conn_cur.load(std::sync::atomic::Ordering::Relaxed),
                        ScKind::ConnRate => e.conn_rate(),
                        ScKind::HttpReqRate => e.http_req_rate(),
                    };
                    f(Sample::Int(v as i64))
                }
            }
        }
    }

    /// Whether `sample` matches. With `-i` the values were lowered when compiled and the
    /// sample is compared ignoring ASCII case where it stands, not lowered into a copy
    /// (a regex got `(?i)` instead).
    fn match_sample(&self, sample: Sample<'_>) -> bool {
        let ci = self.case_insensitive;
        let owned;
        let text: &str = match &sample {
            Sample::Str(s) => s,
            Sample::Int(i) => {
                owned = i.to_string();
                &owned
            }
            Sample::Bool(_) | Sample::Ip(_) => "",
        };
        let eq = |a: &str, v: &str| same(a.as_bytes(), v.as_bytes(), ci);
        let t = text.as_bytes();
        match &self.matcher {
            Matcher::Found => true,
            Matcher::Bool => match sample {
                Sample::Bool(b) => b,
                Sample::Int(i) => i != 0,
                _ => !text.is_empty(),
            },
            Matcher::Str(vals) => vals.iter().any(|v| eq(text, v)),
            Matcher::Beg(vals) => vals
                .iter()
                .any(|v| t.len() >= v.len() && same(&t[..v.len()], v.as_bytes(), ci)),
            Matcher::End(vals) => vals
                .iter()
                .any(|v| t.len() >= v.len() && same(&t[t.len() - v.len()..], v.as_bytes(), ci)),
            Matcher::Sub(vals) if ci => vals.iter().any(|v| {
                v.is_empty()
                    || t.windows(v.len())
                        .any(|w| w.eq_ignore_ascii_case(v.as_bytes()))
            }),
            Matcher::Sub(vals) => vals.iter().any(|v| text.contains(v.as_str())),
            Matcher::Reg(res) => res.iter().any(|r| r.is_match(text)),
            Matcher::Dir(vals) => vals.iter().any(|v| text.split('/').any(|part| eq(part, v))),
            Matcher::Dom(vals) => vals
                .iter()
                .any(|v| text.split(['.', '/', ':']).any(|part| eq(part, v))),
            Matcher::Len(op, vals) => int_match(text.len() as i64, *op, vals),
            Matcher::Int(op, vals) => match sample {
                Sample::Int(i) => int_match(i, *op, vals),
                _ => text.parse().is_ok_and(|i| int_match(i, *op, vals)),
            },
            Matcher::Ip(nets) => match sample {
                Sample::Ip(ip) => nets.iter().any(|(n, p)| ip_in(ip, *n, *p)),
                _ => text
                    .parse::<IpAddr>()
                    .is_ok_and(|ip| nets.iter().any(|(n, p)| ip_in(ip, *n, *p))),
            },
        }
    }
}

/// `a == b`, ignoring ASCII case when `ci`.
fn same(a: &[u8], b: &[u8], ci: bool) -> bool {
    if ci {
        a.eq_ignore_ascii_case(b)
    } else {
        a == b
    }
}

fn int_match(value: i64, op: Option<IntOp>, vals: &[i64]) -> bool {
    match op {
        None | Some(IntOp::Eq) => vals.contains(&value),
        Some(IntOp::Gt) => value > vals[0],
        Some(IntOp::Ge) => value >= vals[0],
        Some(IntOp::Lt) => value < vals[0],
        Some(IntOp::Le) => value <= vals[0],
    }
}

/// `example.com:8080` → `example.com`; `[::1]:80` → `[::1]`.
pub fn strip_port(host: &str) -> &str {
    if host.starts_with('[') {
        return host.split_inclusive(']').next().unwrap_or(host);
    }
    match host.rsplit_once(':') {
        Some((h, p)) if p.bytes().all(|b| b.is_ascii_digit()) => h,
        _ => host,
    }
}

/// A compiled condition: OR of groups, each an AND of (possibly negated) terms. A term
/// naming an ACL matches if any ACL of that name matches.
#[derive(Debug)]
pub struct Condition {
    unless: bool,
    groups: Vec<Vec<(bool, Vec<Arc<AclMatcher>>)>>,
}

impl Condition {
    pub fn compile(
        cond: &pb::Condition,
        named: &std::collections::HashMap<String, Vec<Arc<AclMatcher>>>,
    ) -> Result<Self, AclError> {
        let mut groups = Vec::with_capacity(cond.groups.len());
        for g in &cond.groups {
            let mut terms = Vec::with_capacity(g.terms.len());
            for t in &g.terms {
                let matchers = match &t.term {
                    Some(pb::condition_term::Term::Acl(name)) => named
                        .get(name)
                        .cloned()
                        .ok_or_else(|| AclError::UnknownAcl(cond.source.clone(), name.clone()))?,
                    Some(pb::condition_term::Term::Inline(expr)) => {
                        vec![Arc::new(AclMatcher::compile(expr)?)]
                    }
                    None => return Err(AclError::EmptyTerm(cond.source.clone())),
                };
                terms.push((t.negate, matchers));
            }
            groups.push(terms);
        }
        Ok(Self {
            unless: cond.unless,
            groups,
        })
    }

    pub fn eval(&self, ctx: &RequestCtx<'_>) -> bool {
        let hit = self.groups.iter().any(|terms| {
            terms
                .iter()
                .all(|(negate, ms)| ms.iter().any(|m| m.matches(ctx)) != *negate)
        });
        hit != self.unless
    }
}

/// Evaluates an optional condition: absent means "always".
pub fn holds(cond: &Option<Condition>, ctx: &RequestCtx<'_>) -> bool {
    cond.as_ref().is_none_or(|c| c.eval(ctx))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn expr(
        fetch: pb::FetchKind,
        arg: &str,
        kind: pb::MatchKind,
        ci: bool,
        vals: &[&str],
    ) -> pb::AclExpr {
        pb::AclExpr {
            source: String::new(),
            fetch: Some(pb::Fetch {
                kind: fetch as i32,
                arg: arg.into(),
            }),
            r#match: Some(pb::Match {
                kind: kind as i32,
                values: vals.iter().map(|v| v.to_string()).collect(),
                case_insensitive: ci,
                int_op: 0,
            }),
        }
    }

    fn ctx_for(req: &http::Request<()>) -> (Parts, SocketAddr) {
        let (parts, _) = http::Request::builder()
            .method(req.method())
            .uri(req.uri())
            .body(())
            .unwrap()
            .into_parts();
        let mut parts = parts;
        parts.headers = req.headers().clone();
        (parts, "10.1.2.3:5555".parse().unwrap())
    }

    /// A cleartext request from and to `src`, no stick counters tracked.
    fn plain_ctx(parts: &Parts, src: SocketAddr) -> RequestCtx<'_> {
        RequestCtx {
            parts,
            src,
            local: src,
            tls: false,
            alpn: None,
            sc: &UNTRACKED,
        }
    }

    #[test]
    fn header_matching_is_per_value_and_case_insensitive() {
        let req = http::Request::builder()
            .uri("/ws/chat?room=1")
            .header("Upgrade", "WebSocket")
            .header("Connection", "keep-alive, Upgrade")
            .body(())
            .unwrap();
        let (parts, src) = ctx_for(&req);
        let ctx = plain_ctx(&parts, src);
        let up = AclMatcher::compile(&expr(
            pb::FetchKind::Hdr,
            "Upgrade",
            pb::MatchKind::Str,
            true,
            &["websocket"],
        ))
        .unwrap();
        assert!(up.matches(&ctx));
        let conn = AclMatcher::compile(&expr(
            pb::FetchKind::Hdr,
            "Connection",
            pb::MatchKind::Str,
            true,
            &["upgrade"],
        ))
        .unwrap();
        assert!(conn.matches(&ctx), "each comma-separated value is a sample");
        let cs = AclMatcher::compile(&expr(
            pb::FetchKind::Hdr,
            "Upgrade",
            pb::MatchKind::Str,
            false,
            &["websocket"],
        ))
        .unwrap();
        assert!(!cs.matches(&ctx));
        let path = AclMatcher::compile(&expr(
            pb::FetchKind::Path,
            "",
            pb::MatchKind::Beg,
            false,
            &["/ws/chat"],
        ))
        .unwrap();
        assert!(path.matches(&ctx));
        let src_m = AclMatcher::compile(&expr(
            pb::FetchKind::Src,
            "",
            pb::MatchKind::Ip,
            false,
            &["10.0.0.0/8"],
        ))
        .unwrap();
        assert!(src_m.matches(&ctx));
        let p = AclMatcher::compile(&expr(
            pb::FetchKind::UrlParam,
            "room",
            pb::MatchKind::Str,
            false,
            &["1"],
        ))
        .unwrap();
        assert!(p.matches(&ctx));
    }

    #[test]
    fn each_string_matcher_ignores_case_with_i_and_only_then() {
        let req = http::Request::builder()
            .uri("/Chat/Room")
            .header("X-Value", "Web.Socket:Chat/Room")
            .body(())
            .unwrap();
        let (parts, src) = ctx_for(&req);
        let ctx = plain_ctx(&parts, src);
        let m = |kind: pb::MatchKind, ci: bool, val: &str| {
            AclMatcher::compile(&expr(pb::FetchKind::Hdr, "X-Value", kind, ci, &[val]))
                .unwrap()
                .matches(&ctx)
        };
        use pb::MatchKind::*;
        for (kind, hit, miss) in [
            (Str, "WEB.SOCKET:chat/room", "web.socket:chat/roo"),
            (Beg, "wEB.s", "socket"),
            (End, "/ROOM", "/roo"),
            (Sub, "SOCKET:c", "socketc"),
            (Dir, "ROOM", "roo"),
            (Dom, "SOCKET", "sock"),
            (Reg, "^web\\.SOCKET:", "^socket"),
        ] {
            assert!(m(kind, true, hit), "{kind:?} -i {hit}");
            assert!(!m(kind, true, miss), "{kind:?} -i {miss}");
            assert!(!m(kind, false, hit), "{kind:?} {hit} is case-sensitive");
        }
        // Without -i the exact case matches; an empty substring is in every sample.
        assert!(m(Str, false, "Web.Socket:Chat/Room"));
        assert!(m(Beg, false, "Web."));
        assert!(m(End, false, "/Room"));
        assert!(m(Sub, false, "Socket:C"));
        assert!(m(Sub, true, ""));
        assert!(m(Dir, false, "Room"));
        assert!(m(Dom, false, "Socket"));
    }

    #[test]
    fn ip_matching_covers_v4_v6_and_mapped_clients() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert!(ip_in(ip("10.1.2.3"), ip("10.0.0.0"), 8));
        assert!(!ip_in(ip("11.1.2.3"), ip("10.0.0.0"), 8));
        assert!(ip_in(ip("192.0.2.7"), ip("0.0.0.0"), 0));
        assert!(ip_in(ip("2001:db8::1"), ip("2001:db8::"), 32));
        assert!(!ip_in(ip("2001:db9::1"), ip("2001:db8::"), 32));
        assert!(ip_in(ip("::1"), ip("::1"), 128));
        // A client on a dual-stack listener arrives as ::ffff:a.b.c.d.
        assert!(ip_in(ip("::ffff:10.9.8.7"), ip("10.0.0.0"), 8));
        assert!(!ip_in(ip("10.9.8.7"), ip("2001:db8::"), 32));
    }
}
