//! Whole-document validation and translation into the protobuf snapshot.
//!
//! Every write through the REST API ends here: the resulting document is checked as a
//! whole (names unique, references resolved, ports, durations, ACL syntax) and, if every
//! check passes, becomes the `Snapshot` body that is versioned, stored and pushed. All
//! errors are collected, each naming the JSON path of the field at fault.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;

use serde::Serialize;
use sluice_proto::v1 as pb;
use utoipa::ToSchema;

use super::acl::{parse_acl_expr, parse_condition};
use super::document::*;
use super::duration::parse_ms;

/// One problem with one field of the document.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct FieldError {
    /// JSON path of the field, e.g. `frontends[0].use_backend[1].backend`.
    pub field: String,
    pub message: String,
}

impl std::fmt::Display for FieldError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

/// A document that failed validation; holds every error found.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", .0.iter().map(|e| e.to_string()).collect::<Vec<_>>().join("; "))]
pub struct Invalid(pub Vec<FieldError>);

#[derive(Default)]
struct Errors(Vec<FieldError>);

impl Errors {
    fn add(&mut self, field: impl Into<String>, message: impl Into<String>) {
        self.0.push(FieldError {
            field: field.into(),
            message: message.into(),
        });
    }
}

/// The rule for every name in the configuration (objects, ACLs, certificates).
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 128
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | ':'))
}

fn check_name(errs: &mut Errors, field: String, name: &str) {
    if !valid_name(name) {
        errs.add(
            field,
            format!("{name:?} is not a valid name (1-128 of A-Z a-z 0-9 _ - . :)"),
        );
    }
}

fn duration(errs: &mut Errors, field: String, value: &Option<String>) -> Option<u64> {
    let text = value.as_ref()?;
    match parse_ms(text) {
        Ok(ms) => Some(ms),
        Err(m) => {
            errs.add(field, m);
            None
        }
    }
}

fn timeouts(errs: &mut Errors, field: &str, t: &Timeouts) -> pb::Timeouts {
    let f = |n: &str| format!("{field}.{n}");
    pb::Timeouts {
        connect_ms: duration(errs, f("connect"), &t.connect),
        client_ms: duration(errs, f("client"), &t.client),
        server_ms: duration(errs, f("server"), &t.server),
        tunnel_ms: duration(errs, f("tunnel"), &t.tunnel),
        http_request_ms: duration(errs, f("http_request"), &t.http_request),
        queue_ms: duration(errs, f("queue"), &t.queue),
        check_ms: duration(errs, f("check"), &t.check),
    }
}

/// Splits `name(arg)` into its parts.
fn call(text: &str) -> (&str, Option<&str>) {
    match text.split_once('(') {
        Some((name, rest)) => (name, rest.strip_suffix(')')),
        None => (text, None),
    }
}

/// Validates `doc` and builds the snapshot body (version and time are set by the caller).
pub fn compile(doc: &ConfigDocument) -> Result<pb::Snapshot, Invalid> {
    let mut errs = Errors::default();
    let defaults = pb::Defaults {
        timeouts: Some(timeouts(
            &mut errs,
            "defaults.timeouts",
            &doc.defaults.timeouts,
        )),
        maxconn: doc.defaults.maxconn,
        forwardfor: doc.defaults.forwardfor,
        http_server_close: doc.defaults.http_server_close,
        retries: doc.defaults.retries,
        redispatch: doc.defaults.redispatch,
        errorfiles: errorfiles(&mut errs, "defaults.errorfiles", &doc.defaults.errorfiles),
        max_header_bytes: header_limits(
            &mut errs,
            "defaults",
            doc.defaults.max_header_bytes,
            doc.defaults.max_headers,
        ),
        max_headers: doc.defaults.max_headers,
    };

    let backend_names: HashSet<&str> = doc.backends.iter().map(|b| b.name.as_str()).collect();
    let mut seen_backends = HashSet::new();
    let mut backends = Vec::with_capacity(doc.backends.len());
    for (i, b) in doc.backends.iter().enumerate() {
        let field = format!("backends[{i}]");
        check_name(&mut errs, format!("{field}.name"), &b.name);
        if !seen_backends.insert(b.name.as_str()) {
            errs.add(
                format!("{field}.name"),
                format!("duplicate backend name {:?}", b.name),
            );
        }
        backends.push(compile_backend(&mut errs, &field, b));
    }

    let mut seen_frontends = HashSet::new();
    let mut bound: HashMap<SocketAddr, String> = HashMap::new();
    let mut frontends = Vec::with_capacity(doc.frontends.len());
    for (i, f) in doc.frontends.iter().enumerate() {
        let field = format!("frontends[{i}]");
        check_name(&mut errs, format!("{field}.name"), &f.name);
        if !seen_frontends.insert(f.name.as_str()) {
            errs.add(
                format!("{field}.name"),
                format!("duplicate frontend name {:?}", f.name),
            );
        }
        frontends.push(compile_frontend(
            &mut errs,
            &field,
            f,
            &backend_names,
            &mut bound,
        ));
    }

    if errs.0.is_empty() {
        Ok(pb::Snapshot {
            version: 0,
            created_unix_ms: 0,
            defaults: Some(defaults),
            frontends,
            backends,
            certificates: Vec::new(),
        })
    } else {
        Err(Invalid(errs.0))
    }
}

fn compile_frontend(
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
            Ok(addr) if addr.port() == 0 => {
                errs.add(bfield, format!("{:?}: port must be 1-65535", b.address))
            }
            Ok(addr) => {
                let clash = bound.iter().find(|(other, _)| {
                    other.port() == addr.port()
                        && (other.ip() == addr.ip()
                            || other.ip().is_unspecified()
                            || addr.ip().is_unspecified())
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
        binds.push(pb::Bind {
            address: b.address.clone(),
            tls,
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
fn header_limits(
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
const ERRORFILE_MAX: usize = 64 * 1024;

fn errorfiles(errs: &mut Errors, field: &str, files: &[ErrorFile]) -> Vec<pb::ErrorFile> {
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

fn stick_table(errs: &mut Errors, field: &str, s: &StickTable) -> pb::StickTable {
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

fn require<'a>(errs: &mut Errors, field: &str, name: &str, v: &'a Option<String>) -> &'a str {
    match v {
        Some(s) if !s.is_empty() => s,
        _ => {
            errs.add(format!("{field}.{name}"), "missing field");
            ""
        }
    }
}

fn header_name(errs: &mut Errors, field: &str, v: &Option<String>) -> String {
    let name = require(errs, field, "name", v);
    if !name.is_empty() && http_header_name_invalid(name) {
        errs.add(
            format!("{field}.name"),
            format!("{name:?} is not a valid header name"),
        );
    }
    name.to_string()
}

fn http_header_name_invalid(name: &str) -> bool {
    !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

fn header_value(errs: &mut Errors, field: &str, v: &Option<String>) -> String {
    let value = require(errs, field, "value", v);
    if value.bytes().any(|b| b == b'\r' || b == b'\n' || b == 0) {
        errs.add(
            format!("{field}.value"),
            "header values cannot contain CR, LF or NUL",
        );
    }
    value.to_string()
}

/// Which fields an action may carry besides `action`, `if` and `unless`.
fn allowed_fields(action: &str) -> &'static [&'static str] {
    match action {
        "redirect" => &["scheme", "location", "prefix", "code"],
        "deny" => &["status"],
        "set-header" | "add-header" => &["name", "value"],
        "del-header" => &["name"],
        "replace-header" => &["name", "regex", "replacement"],
        "set-path" => &["path"],
        "return" => &["status", "content_type", "body"],
        "track-sc0" | "track-sc1" | "track-sc2" => &["key"],
        _ => &[],
    }
}

fn check_extra_fields(errs: &mut Errors, field: &str, r: &HttpRule) {
    let present: [(&str, bool); 13] = [
        ("name", r.name.is_some()),
        ("value", r.value.is_some()),
        ("scheme", r.scheme.is_some()),
        ("location", r.location.is_some()),
        ("prefix", r.prefix.is_some()),
        ("code", r.code.is_some()),
        ("status", r.status.is_some()),
        ("key", r.key.is_some()),
        ("body", r.body.is_some()),
        ("content_type", r.content_type.is_some()),
        ("path", r.path.is_some()),
        ("regex", r.regex.is_some()),
        ("replacement", r.replacement.is_some()),
    ];
    let allowed = allowed_fields(&r.action);
    for (name, is_set) in present {
        if is_set && !allowed.contains(&name) {
            errs.add(
                format!("{field}.{name}"),
                format!("not used by action {:?}", r.action),
            );
        }
    }
}

fn request_action(
    errs: &mut Errors,
    field: &str,
    r: &HttpRule,
    has_stick_table: bool,
) -> Option<pb::http_request_rule::Action> {
    use pb::http_request_rule::Action;
    check_extra_fields(errs, field, r);
    Some(match r.action.as_str() {
        "redirect" => {
            let set = [&r.scheme, &r.location, &r.prefix]
                .iter()
                .filter(|v| v.is_some())
                .count();
            if set != 1 {
                errs.add(
                    field.to_string(),
                    "redirect needs exactly one of \"scheme\", \"location\" or \"prefix\"",
                );
                return None;
            }
            let code = r.code.unwrap_or(302);
            if ![301, 302, 303, 307, 308].contains(&code) {
                errs.add(
                    format!("{field}.code"),
                    format!("{code} is not a redirect code (301, 302, 303, 307, 308)"),
                );
            }
            let (kind, target) = if let Some(s) = &r.scheme {
                if !matches!(s.as_str(), "http" | "https") {
                    errs.add(
                        format!("{field}.scheme"),
                        format!("{s:?} is not http or https"),
                    );
                }
                (pb::RedirectKind::Scheme, s)
            } else if let Some(l) = &r.location {
                (pb::RedirectKind::Location, l)
            } else {
                (
                    pb::RedirectKind::Prefix,
                    r.prefix.as_ref().expect("counted above"),
                )
            };
            Action::Redirect(pb::Redirect {
                kind: kind as i32,
                target: target.clone(),
                code: code.into(),
            })
        }
        "deny" => {
            let status = r.status.unwrap_or(403);
            if !(400..=599).contains(&status) {
                errs.add(
                    format!("{field}.status"),
                    format!("{status} is not a 4xx/5xx status"),
                );
            }
            Action::Deny(pb::Deny {
                status: status.into(),
            })
        }
        "set-header" | "add-header" => {
            let hv = pb::HeaderValue {
                name: header_name(errs, field, &r.name),
                value: header_value(errs, field, &r.value),
            };
            if r.action == "set-header" {
                Action::SetHeader(hv)
            } else {
                Action::AddHeader(hv)
            }
        }
        "del-header" => Action::DelHeader(pb::HeaderName {
            name: header_name(errs, field, &r.name),
        }),
        "replace-header" => {
            let name = header_name(errs, field, &r.name);
            let regex = require(errs, field, "regex", &r.regex).to_string();
            if let Err(e) = regex::Regex::new(&regex) {
                errs.add(format!("{field}.regex"), format!("invalid regex: {e}"));
            }
            Action::ReplaceHeader(pb::ReplaceHeader {
                name,
                regex,
                replacement: r.replacement.clone().unwrap_or_default(),
            })
        }
        "set-path" => {
            let path = require(errs, field, "path", &r.path);
            if !path.starts_with('/') {
                errs.add(format!("{field}.path"), "the path must start with '/'");
            }
            Action::SetPath(pb::SetPath {
                path: path.to_string(),
            })
        }
        "return" => {
            let status = r.status.unwrap_or(200);
            if !(200..=599).contains(&status) {
                errs.add(
                    format!("{field}.status"),
                    format!("{status} is not a valid status"),
                );
            }
            Action::ReturnResponse(pb::ReturnResponse {
                status: status.into(),
                content_type: r
                    .content_type
                    .clone()
                    .unwrap_or_else(|| "text/plain".into()),
                body: r.body.clone().unwrap_or_default(),
            })
        }
        a @ ("track-sc0" | "track-sc1" | "track-sc2") => {
            let key = r.key.as_deref().unwrap_or("src");
            if key != "src" {
                errs.add(
                    format!("{field}.key"),
                    format!("{key:?} is not supported (src)"),
                );
            }
            if !has_stick_table {
                errs.add(
                    format!("{field}.action"),
                    format!("{a} needs the frontend to have a stick_table"),
                );
            }
            Action::TrackSc(pb::TrackSc {
                counter: u32::from(a.as_bytes()[8] - b'0'),
                key: pb::TrackKey::Src as i32,
            })
        }
        other => {
            errs.add(
                format!("{field}.action"),
                format!("unknown http_request action {other:?}"),
            );
            return None;
        }
    })
}

/// Parses a rule's `if`/`unless` into a condition (the frontend's ACL names in scope).
type CondParser<'a> =
    dyn Fn(&mut Errors, &str, &Option<String>, &Option<String>) -> Option<pb::Condition> + 'a;

fn response_rules(
    errs: &mut Errors,
    field: &str,
    rules: &[HttpRule],
    cond: &CondParser<'_>,
) -> Vec<pb::HttpResponseRule> {
    let mut out = Vec::with_capacity(rules.len());
    for (j, r) in rules.iter().enumerate() {
        let rfield = format!("{field}[{j}]");
        let c = cond(errs, &rfield, &r.cond_if, &r.unless);
        if let Some(action) = response_action(errs, &rfield, r) {
            out.push(pb::HttpResponseRule {
                cond: c,
                action: Some(action),
            });
        }
    }
    out
}

fn response_action(
    errs: &mut Errors,
    field: &str,
    r: &HttpRule,
) -> Option<pb::http_response_rule::Action> {
    use pb::http_response_rule::Action;
    check_extra_fields(errs, field, r);
    Some(match r.action.as_str() {
        "set-header" => Action::SetHeader(pb::HeaderValue {
            name: header_name(errs, field, &r.name),
            value: header_value(errs, field, &r.value),
        }),
        "add-header" => Action::AddHeader(pb::HeaderValue {
            name: header_name(errs, field, &r.name),
            value: header_value(errs, field, &r.value),
        }),
        "del-header" => Action::DelHeader(pb::HeaderName {
            name: header_name(errs, field, &r.name),
        }),
        other => {
            errs.add(
                format!("{field}.action"),
                format!("unknown http_response action {other:?}"),
            );
            return None;
        }
    })
}

fn compile_backend(errs: &mut Errors, field: &str, b: &Backend) -> pb::Backend {
    use pb::BalanceAlgorithm as A;
    let balance_text = b.balance.as_deref().unwrap_or("roundrobin");
    let (name, arg) = call(balance_text);
    let algorithm = match (name, arg) {
        ("roundrobin", None) => A::Roundrobin,
        ("leastconn", None) => A::Leastconn,
        ("source", None) => A::Source,
        ("uri", None) => A::Uri,
        ("random", None) => A::Random,
        ("hdr", Some(h)) if !h.is_empty() => A::Hdr,
        ("url_param", Some(p)) if !p.is_empty() => A::UrlParam,
        _ => {
            errs.add(
                format!("{field}.balance"),
                format!(
                    "{balance_text:?} is not a balance algorithm \
                     (roundrobin, leastconn, source, uri, random, hdr(name), url_param(name))"
                ),
            );
            A::Roundrobin
        }
    };
    let hash_type = match b.hash_type.as_deref() {
        None | Some("map-based") => pb::HashType::MapBased,
        Some("consistent") => pb::HashType::Consistent,
        Some(other) => {
            errs.add(
                format!("{field}.hash_type"),
                format!("{other:?} is not map-based or consistent"),
            );
            pb::HashType::MapBased
        }
    };
    let cookie = b.cookie.as_ref().map(|c| {
        let cfield = format!("{field}.cookie");
        if c.name.is_empty() || http_header_name_invalid(&c.name) {
            errs.add(
                format!("{cfield}.name"),
                format!("{:?} is not a valid cookie name", c.name),
            );
        }
        let mode = match c.mode.as_deref() {
            None | Some("insert") => pb::CookieMode::Insert,
            Some("rewrite") => pb::CookieMode::Rewrite,
            Some("prefix") => pb::CookieMode::Prefix,
            Some(other) => {
                errs.add(
                    format!("{cfield}.mode"),
                    format!("{other:?} is not insert, rewrite or prefix"),
                );
                pb::CookieMode::Insert
            }
        };
        let samesite = match c.samesite.as_deref() {
            None => pb::SameSite::Unspecified,
            Some("strict") => pb::SameSite::Strict,
            Some("lax") => pb::SameSite::Lax,
            Some("none") => pb::SameSite::None,
            Some(other) => {
                errs.add(
                    format!("{cfield}.samesite"),
                    format!("{other:?} is not strict, lax or none"),
                );
                pb::SameSite::Unspecified
            }
        };
        pb::Cookie {
            name: c.name.clone(),
            mode: mode as i32,
            indirect: c.indirect,
            nocache: c.nocache,
            httponly: c.httponly,
            secure: c.secure,
            samesite: samesite as i32,
            maxidle_ms: duration(errs, format!("{cfield}.maxidle"), &c.maxidle),
            maxlife_ms: duration(errs, format!("{cfield}.maxlife"), &c.maxlife),
            domain: c.domain.clone().unwrap_or_default(),
        }
    });
    let health_check = b
        .health_check
        .as_ref()
        .map(|h| health_check(errs, &format!("{field}.health_check"), h));

    let mut servers = Vec::new();
    let mut names = HashSet::new();
    let mut cookies = HashSet::new();
    for (k, s) in b.servers.iter().enumerate() {
        let sfield = format!("{field}.servers[{k}]");
        check_name(errs, format!("{sfield}.name"), &s.name);
        if !names.insert(s.name.as_str()) {
            errs.add(
                format!("{sfield}.name"),
                format!("duplicate server name {:?}", s.name),
            );
        }
        check_server_address(errs, &format!("{sfield}.address"), &s.address);
        let weight = s.weight.unwrap_or(1);
        if weight > 256 {
            errs.add(format!("{sfield}.weight"), format!("{weight} is over 256"));
        }
        if let Some(c) = &s.cookie {
            if c.is_empty() || c.contains([';', ',', ' ', '"']) {
                errs.add(
                    format!("{sfield}.cookie"),
                    format!("{c:?} is not a valid cookie value"),
                );
            } else if !cookies.insert(c.as_str()) {
                errs.add(
                    format!("{sfield}.cookie"),
                    format!("cookie value {c:?} is used twice"),
                );
            }
        }
        let state = match s.state.as_deref() {
            None | Some("ready") => pb::ServerState::Ready,
            Some("drain") => pb::ServerState::Drain,
            Some("maint") => pb::ServerState::Maint,
            Some(other) => {
                errs.add(
                    format!("{sfield}.state"),
                    format!("{other:?} is not ready, drain or maint"),
                );
                pb::ServerState::Ready
            }
        };
        let check = s.check.as_ref().map(|c| {
            let f = format!("{sfield}.check");
            if c.fall == Some(0) {
                errs.add(format!("{f}.fall"), "fall must be at least 1");
            }
            if c.rise == Some(0) {
                errs.add(format!("{f}.rise"), "rise must be at least 1");
            }
            if c.port == Some(0) {
                errs.add(format!("{f}.port"), "port must be 1-65535");
            }
            pb::ServerCheck {
                inter_ms: duration(errs, format!("{f}.inter"), &c.inter).unwrap_or(2_000),
                fall: c.fall.unwrap_or(3),
                rise: c.rise.unwrap_or(2),
                port: c.port.map(u32::from),
            }
        });
        servers.push(pb::Server {
            name: s.name.clone(),
            address: s.address.clone(),
            weight,
            maxconn: s.maxconn.unwrap_or(0),
            cookie: s.cookie.clone().unwrap_or_default(),
            backup: s.backup,
            state: state as i32,
            check,
        });
    }

    pb::Backend {
        name: b.name.clone(),
        balance: Some(pb::Balance {
            algorithm: algorithm as i32,
            arg: arg.unwrap_or_default().to_string(),
            hash_type: hash_type as i32,
        }),
        cookie,
        timeouts: b
            .timeouts
            .as_ref()
            .map(|t| timeouts(errs, &format!("{field}.timeouts"), t)),
        health_check,
        servers,
        retries: b.retries,
        redispatch: b.redispatch,
        http_server_close: b.http_server_close,
    }
}

fn check_server_address(errs: &mut Errors, field: &str, address: &str) {
    let Some((host, port)) = address.rsplit_once(':') else {
        errs.add(field, format!("{address:?} is not host:port"));
        return;
    };
    match port.parse::<u16>() {
        Ok(p) if p > 0 => {}
        _ => errs.add(field, format!("{address:?}: port must be 1-65535")),
    }
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let is_ip = host.parse::<std::net::IpAddr>().is_ok();
    let is_hostname = !host.is_empty()
        && host
            .split('.')
            .all(|l| !l.is_empty() && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-'));
    if !is_ip && !is_hostname {
        errs.add(
            field,
            format!("{address:?}: {host:?} is not an IP address or host name"),
        );
    }
}

fn health_check(errs: &mut Errors, field: &str, h: &HealthCheck) -> pb::HealthCheck {
    let check_type = match h.check_type.as_str() {
        "tcp" => pb::CheckType::Tcp,
        "http" => pb::CheckType::Http,
        "websocket" => pb::CheckType::Websocket,
        other => {
            errs.add(
                format!("{field}.type"),
                format!("{other:?} is not tcp, http or websocket"),
            );
            pb::CheckType::Tcp
        }
    };
    let mut expect_status = Vec::new();
    if let Some(v) = &h.expect_status {
        let range = match v {
            serde_json::Value::Number(n) => n.as_u64().map(|n| (n, n)),
            serde_json::Value::String(s) => match s.split_once('-') {
                Some((a, b)) => a.trim().parse().ok().zip(b.trim().parse().ok()),
                None => s.trim().parse().ok().map(|n| (n, n)),
            },
            _ => None,
        };
        match range {
            Some((min, max)) if (100..=599).contains(&min) && (min..=599).contains(&max) => {
                expect_status.push(pb::StatusRange {
                    min: min as u32,
                    max: max as u32,
                })
            }
            _ => errs.add(
                format!("{field}.expect_status"),
                format!("{v} is not a status (e.g. 101) or range (e.g. \"200-399\")"),
            ),
        }
    }
    if let Some(uri) = &h.uri {
        if !uri.starts_with('/') {
            errs.add(format!("{field}.uri"), "the uri must start with '/'");
        }
    }
    let mut headers = Vec::new();
    for (name, value) in &h.headers {
        if http_header_name_invalid(name) {
            errs.add(
                format!("{field}.headers"),
                format!("{name:?} is not a valid header name"),
            );
        }
        headers.push(pb::HeaderValue {
            name: name.clone(),
            value: value.clone(),
        });
    }
    pb::HealthCheck {
        check_type: check_type as i32,
        method: h.method.clone().unwrap_or_else(|| "GET".into()),
        uri: h.uri.clone().unwrap_or_else(|| "/".into()),
        version: h.version.clone().unwrap_or_else(|| "HTTP/1.1".into()),
        headers,
        expect_status,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn article() -> ConfigDocument {
        let text = include_str!("../../../docs/examples/article.json");
        serde_json::from_str(text).expect("the article example parses")
    }

    #[test]
    fn article_example_compiles() {
        let snap = compile(&article()).expect("valid");
        assert_eq!(snap.frontends.len(), 1);
        assert_eq!(snap.backends.len(), 4);
        let fe = &snap.frontends[0];
        assert_eq!(fe.use_backend.len(), 3);
        assert_eq!(fe.http_request.len(), 7);
        assert_eq!(
            snap.defaults.unwrap().timeouts.unwrap().tunnel_ms,
            Some(3_600_000)
        );
    }

    #[test]
    fn errors_name_the_field() {
        let mut doc = article();
        doc.frontends[0].use_backend[1].backend = "ws_chatt".into();
        doc.backends[0].servers[0].address = "127.0.0.1:0".into();
        doc.defaults.timeouts.connect = Some("5 parsecs".into());
        doc.frontends[0].http_request[5].cond_if = Some("is_websockt".into());
        let Invalid(errors) = compile(&doc).unwrap_err();
        let fields: Vec<_> = errors.iter().map(|e| e.field.as_str()).collect();
        assert!(
            fields.contains(&"frontends[0].use_backend[1].backend"),
            "{errors:?}"
        );
        assert!(fields.contains(&"backends[0].servers[0].address"));
        assert!(fields.contains(&"defaults.timeouts.connect"));
        assert!(errors.iter().any(|e| e.to_string()
            == "frontends[0].http_request[5].if: unknown ACL \"is_websockt\" at column 1"));
    }

    #[test]
    fn duplicate_names_and_binds_are_rejected() {
        let mut doc = article();
        doc.backends.push(doc.backends[0].clone());
        let mut fe = doc.frontends[0].clone();
        fe.name = "other".into();
        fe.binds.truncate(1);
        fe.binds[0].address = "0.0.0.0:8080".into();
        doc.frontends.push(fe);
        let Invalid(errors) = compile(&doc).unwrap_err();
        assert!(errors.iter().any(|e| e.field == "backends[4].name"));
        assert!(errors
            .iter()
            .any(|e| e.field == "frontends[1].binds[0].address"
                && e.message.contains("already bound")));
    }

    #[test]
    fn errorfiles_and_after_response_rules_are_checked() {
        let mut doc = article();
        let page = |status: u16, content_type: Option<&str>, body: String| ErrorFile {
            status,
            content_type: content_type.map(str::to_string),
            body,
        };
        doc.defaults.errorfiles = vec![
            page(503, None, "<p>down</p>".into()),
            page(302, None, "x".into()),
            page(503, None, "again".into()),
        ];
        doc.frontends[0].errorfiles = vec![
            page(403, Some("text/plain\r\nX-Evil: 1"), "no".into()),
            page(429, None, "x".repeat(ERRORFILE_MAX + 1)),
        ];
        doc.frontends[0].http_after_response = vec![serde_json::from_value(
            serde_json::json!({ "action": "set-header", "name": "X-A", "value": "1", "if": "is_websockt" }),
        )
        .unwrap()];
        let Invalid(errors) = compile(&doc).unwrap_err();
        let fields: Vec<_> = errors.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(
            fields,
            [
                "defaults.errorfiles[1].status",
                "defaults.errorfiles[2].status",
                "frontends[0].http_after_response[0].if",
                "frontends[0].errorfiles[0].content_type",
                "frontends[0].errorfiles[1].body",
            ],
            "{errors:?}"
        );

        let mut doc = article();
        doc.defaults.errorfiles = vec![page(503, None, "<p>down</p>".into())];
        let snap = compile(&doc).unwrap();
        let files = &snap.defaults.unwrap().errorfiles;
        assert_eq!(files[0].status, 503);
        assert_eq!(files[0].body, "<p>down</p>");
    }
}
