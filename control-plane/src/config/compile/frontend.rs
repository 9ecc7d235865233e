//! A frontend: binds (addresses, TLS), ACLs, rules, routing, header limits, errorfiles
//! and its stick table.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;

use sluice_proto::v1 as pb;

use super::rules::{request_action, response_rules};
use super::*;
use crate::config::acl::{parse_acl_expr, parse_condition};

pub(super) fn compile_frontend(
    errs: &mut Errors,
    field: &str,
    f: &Frontend,
    backend_names: &HashSet<&str>,
    bound: &mut HashMap<SocketAddr, String>,
) -> pb::Frontend {
    if f.binds.is_empty() {
        errs.add(
            format!("{field}.binds"),
            "a frontend needs at least one bind",
        );
    }
    let mut binds = Vec::new();
    for (j, b) in f.binds.iter().enumerate() {
        let bfield = format!("{field}.binds[{j}].address");
        match b.address.parse::<SocketAddr>() {
            Ok(addr) => {
                // Port 0: each node lets the kernel pick a free port (its admin listener
                // reports it at `/listeners`); only the same address twice clashes.
                let clash = bound.iter().find(|(other, _)| {
                    other.port() == addr.port()
                        && (other.ip() == addr.ip()
                            || (addr.port() != 0
                                && (other.ip().is_unspecified() || addr.ip().is_unspecified())))
                });
                if let Some((_, owner)) = clash {
                    errs.add(
                        bfield.clone(),
                        format!("{} is already bound by {owner}", b.address),
                    );
                }
                bound.insert(addr, bfield);
            }
            Err(_) => errs.add(bfield, format!("{:?} is not an ip:port address", b.address)),
        }
        let tls = b.tls.as_ref().map(|t| {
            let tfield = format!("{field}.binds[{j}].tls");
            if t.certificates.is_empty() {
                errs.add(
                    format!("{tfield}.certificates"),
                    "at least one certificate is needed",
                );
            }
            if let Some(v) = &t.min_version {
                if !matches!(v.as_str(), "TLSv1.2" | "TLSv1.3") {
                    errs.add(
                        format!("{tfield}.min_version"),
                        format!("{v:?} is not supported (TLSv1.2 or TLSv1.3)"),
                    );
                }
            }
            for (c, cipher) in t.ciphers.iter().enumerate() {
                if !TLS12_CIPHERS.contains(&cipher.as_str()) {
                    errs.add(
                        format!("{tfield}.ciphers[{c}]"),
                        format!("{cipher:?} is not supported (one of {TLS12_CIPHERS:?})"),
                    );
                }
            }
            for (a, proto) in t.alpn.iter().enumerate() {
                if proto.is_empty() || proto.len() > 255 {
                    errs.add(format!("{tfield}.alpn[{a}]"), "1–255 bytes");
                }
            }
            pb::BindTls {
                certificates: t.certificates.clone(),
                alpn: t.alpn.clone(),
                min_version: t.min_version.clone().unwrap_or_default(),
                ciphers: t.ciphers.clone(),
                session_tickets: t.session_tickets.unwrap_or(false),
            }
        });
        let http2 = http2(errs, &format!("{field}.binds[{j}].http2"), b.http2.as_ref());
        binds.push(pb::Bind {
            address: b.address.clone(),
            tls,
            http2: Some(http2),
        });
    }

    let mut acls = Vec::new();
    for (j, a) in f.acls.iter().enumerate() {
        check_name(errs, format!("{field}.acls[{j}].name"), &a.name);
        match parse_acl_expr(&a.expr) {
            Ok(expr) => acls.push(pb::Acl {
                name: a.name.clone(),
                expr: Some(expr),
            }),
            Err(e) => errs.add(format!("{field}.acls[{j}].expr"), e.to_string()),
        }
    }
    let acl_names: HashSet<&str> = f.acls.iter().map(|a| a.name.as_str()).collect();
    let exists = |n: &str| acl_names.contains(n);

    let cond = |errs: &mut Errors,
                rfield: &str,
                cond_if: &Option<String>,
                unless: &Option<String>|
     -> Option<pb::Condition> {
        match (cond_if, unless) {
            (Some(_), Some(_)) => {
                errs.add(
                    format!("{rfield}.unless"),
                    "use either \"if\" or \"unless\", not both",
                );
                None
            }
            (Some(c), None) => parse_condition(c, false, &exists)
                .map_err(|e| errs.add(format!("{rfield}.if"), e.to_string()))
                .ok(),
            (None, Some(c)) => parse_condition(c, true, &exists)
                .map_err(|e| errs.add(format!("{rfield}.unless"), e.to_string()))
                .ok(),
            (None, None) => None,
        }
    };

    let mut http_request = Vec::new();
    for (j, r) in f.http_request.iter().enumerate() {
        let rfield = format!("{field}.http_request[{j}]");
        let c = cond(errs, &rfield, &r.cond_if, &r.unless);
        if let Some(action) = request_action(errs, &rfield, r, f.stick_table.is_some()) {
            http_request.push(pb::HttpRequestRule {
                cond: c,
                action: Some(action),
            });
        }
    }
    let http_response = response_rules(
        errs,
        &format!("{field}.http_response"),
        &f.http_response,
        &cond,
    );
    let http_after_response = response_rules(
        errs,
        &format!("{field}.http_after_response"),
        &f.http_after_response,
        &cond,
    );
    let mut use_backend = Vec::new();
    for (j, u) in f.use_backend.iter().enumerate() {
        let rfield = format!("{field}.use_backend[{j}]");
        if !backend_names.contains(u.backend.as_str()) {
            errs.add(
                format!("{rfield}.backend"),
                format!("no backend named {:?}", u.backend),
            );
        }
        let c = cond(errs, &rfield, &u.cond_if, &u.unless);
        use_backend.push(pb::UseBackend {
            backend: u.backend.clone(),
            cond: c,
        });
    }
    if let Some(d) = &f.default_backend {
        if !backend_names.contains(d.as_str()) {
            errs.add(
                format!("{field}.default_backend"),
                format!("no backend named {d:?}"),
            );
        }
    }
    let stick_table = f
        .stick_table
        .as_ref()
        .map(|s| stick_table(errs, &format!("{field}.stick_table"), s));
    pb::Frontend {
        name: f.name.clone(),
        binds,
        acls,
        http_request,
        http_response,
        use_backend,
        default_backend: f.default_backend.clone().unwrap_or_default(),
        timeouts: f
            .timeouts
            .as_ref()
            .map(|t| timeouts(errs, &format!("{field}.timeouts"), t)),
        maxconn: f.maxconn,
        stick_table,
        forwardfor: f.forwardfor,
        http_after_response,
        errorfiles: errorfiles(errs, &format!("{field}.errorfiles"), &f.errorfiles),
        max_header_bytes: header_limits(errs, field, f.max_header_bytes, f.max_headers),
        max_headers: f.max_headers,
    }
}

/// Checks the request-head limits; returns the byte limit as given.
pub(super) fn header_limits(
    errs: &mut Errors,
    field: &str,
    bytes: Option<u32>,
    headers: Option<u32>,
) -> Option<u32> {
    if let Some(b) = bytes {
        if !(1024..=1024 * 1024).contains(&b) {
            errs.add(
                format!("{field}.max_header_bytes"),
                format!("{b} is outside 1024–1048576"),
            );
        }
    }
    if let Some(h) = headers {
        if !(1..=1000).contains(&h) {
            errs.add(
                format!("{field}.max_headers"),
                format!("{h} is outside 1–1000"),
            );
        }
    }
    bytes
}

/// TLS 1.2 cipher suites a bind may list, by their OpenSSL names (TLS 1.3 suites are
/// always on, as with OpenSSL's separate `ciphersuites`).
pub const TLS12_CIPHERS: [&str; 6] = [
    "ECDHE-ECDSA-AES128-GCM-SHA256",
    "ECDHE-RSA-AES128-GCM-SHA256",
    "ECDHE-ECDSA-AES256-GCM-SHA384",
    "ECDHE-RSA-AES256-GCM-SHA384",
    "ECDHE-ECDSA-CHACHA20-POLY1305",
    "ECDHE-RSA-CHACHA20-POLY1305",
];

/// Statuses a node may generate itself, hence may carry an errorfile (HAProxy's list).
const ERRORFILE_STATUSES: [u16; 18] = [
    200, 400, 401, 403, 404, 405, 407, 408, 410, 413, 425, 429, 431, 500, 501, 502, 503, 504,
];

/// Largest errorfile body: it is sent from memory with every such response.
pub(super) const ERRORFILE_MAX: usize = 64 * 1024;

pub(super) fn errorfiles(
    errs: &mut Errors,
    field: &str,
    files: &[ErrorFile],
) -> Vec<pb::ErrorFile> {
    let mut seen = HashSet::new();
    let mut out = Vec::with_capacity(files.len());
    for (i, e) in files.iter().enumerate() {
        let efield = format!("{field}[{i}]");
        if !ERRORFILE_STATUSES.contains(&e.status) {
            errs.add(
                format!("{efield}.status"),
                format!(
                    "{} is not a status the node generates (one of {ERRORFILE_STATUSES:?})",
                    e.status
                ),
            );
        } else if !seen.insert(e.status) {
            errs.add(
                format!("{efield}.status"),
                format!("a second errorfile for {}", e.status),
            );
        }
        if let Some(ct) = &e.content_type {
            if ct.is_empty() || axum::http::HeaderValue::from_str(ct).is_err() {
                errs.add(
                    format!("{efield}.content_type"),
                    format!("{ct:?} is not a valid header value"),
                );
            }
        }
        if e.body.len() > ERRORFILE_MAX {
            errs.add(
                format!("{efield}.body"),
                format!(
                    "{} bytes is over the {ERRORFILE_MAX}-byte limit",
                    e.body.len()
                ),
            );
        }
        out.push(pb::ErrorFile {
            status: u32::from(e.status),
            content_type: e.content_type.clone().unwrap_or_default(),
            body: e.body.clone(),
        });
    }
    out
}

pub(super) fn stick_table(errs: &mut Errors, field: &str, s: &StickTable) -> pb::StickTable {
    if s.key_type != "ip" {
        errs.add(
            format!("{field}.type"),
            format!("{:?} is not supported (ip)", s.key_type),
        );
    }
    if s.size == 0 {
        errs.add(format!("{field}.size"), "size must be at least 1");
    }
    let expire_ms = duration(errs, format!("{field}.expire"), &Some(s.expire.clone()));
    let mut store = Vec::new();
    for (k, entry) in s.store.iter().enumerate() {
        let sfield = format!("{field}.store[{k}]");
        let (name, arg) = call(entry);
        let kind = match name {
            "conn_cur" => pb::CounterKind::ConnCur,
            "conn_cnt" => pb::CounterKind::ConnCnt,
            "conn_rate" => pb::CounterKind::ConnRate,
            "http_req_cnt" => pb::CounterKind::HttpReqCnt,
            "http_req_rate" => pb::CounterKind::HttpReqRate,
            _ => {
                errs.add(sfield, format!("unknown counter {entry:?}"));
                continue;
            }
        };
        let is_rate = matches!(
            kind,
            pb::CounterKind::ConnRate | pb::CounterKind::HttpReqRate
        );
        let period_ms = match (is_rate, arg) {
            (true, Some(p)) => duration(errs, sfield, &Some(p.to_string())).unwrap_or(0),
            (true, None) => {
                errs.add(sfield, format!("{name} needs a period, e.g. {name}(10s)"));
                0
            }
            (false, Some(_)) => {
                errs.add(sfield, format!("{name} takes no period"));
                0
            }
            (false, None) => 0,
        };
        store.push(pb::StickCounter {
            kind: kind as i32,
            period_ms,
        });
    }
    pb::StickTable {
        key_type: pb::StickKeyType::Ip as i32,
        size: s.size,
        expire_ms: expire_ms.unwrap_or(0),
        store,
    }
}

/// A bind's HTTP/2 settings with their defaults, each checked against its range.
fn http2(errs: &mut Errors, field: &str, h: Option<&BindHttp2>) -> pb::Http2 {
    let mut pick =
        |name: &str, value: Option<u32>, default: u32, range: std::ops::RangeInclusive<u32>| {
            let v = value.unwrap_or(default);
            if !range.contains(&v) {
                errs.add(
                    format!("{field}.{name}"),
                    format!("{v} is out of range ({}–{})", range.start(), range.end()),
                );
            }
            v
        };
    pb::Http2 {
        h2c: h.and_then(|h| h.h2c).unwrap_or(true),
        max_concurrent_streams: pick(
            "max_concurrent_streams",
            h.and_then(|h| h.max_concurrent_streams),
            100,
            1..=10_000,
        ),
        initial_window_size: pick(
            "initial_window_size",
            h.and_then(|h| h.initial_window_size),
            256 * 1024,
            65_535..=16 * 1024 * 1024,
        ),
        connection_window_size: pick(
            "connection_window_size",
            h.and_then(|h| h.connection_window_size),
            1024 * 1024,
            65_535..=i32::MAX as u32,
        ),
        max_reset_streams: pick(
            "max_reset_streams",
            h.and_then(|h| h.max_reset_streams),
            20,
            1..=10_000,
        ),
    }
}
