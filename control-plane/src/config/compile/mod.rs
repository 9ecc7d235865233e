//! Whole-document validation and translation into the protobuf snapshot.
//!
//! Every write through the REST API ends here: the resulting document is checked as a
//! whole (names unique, references resolved, ports, durations, ACL syntax) and, if every
//! check passes, becomes the `Snapshot` body that is versioned, stored and pushed. All
//! errors are collected, each naming the JSON path of the field at fault.
//!
//! One file per concept: [`frontend`] (binds, ACLs, routing, limits, errorfiles, stick
//! tables), [`rules`] (request and response rules), [`backend`] (servers, balancing,
//! persistence) and [`health`] (checks); this module holds the whole-document checks
//! (unique names, references) and the field helpers they share.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;

use serde::Serialize;
use sluice_proto::v1 as pb;
use utoipa::ToSchema;

use super::document::*;
use super::duration::parse_ms;

mod backend;
mod frontend;
pub use frontend::TLS12_CIPHERS;
mod health;
mod rules;

use backend::compile_backend;
use frontend::{compile_frontend, errorfiles, header_limits};

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
            errs.add(field, m.to_string());
            None
        }
    }
}

/// A timeout: a duration of at least 1 ms. Zero is refused rather than read as HAProxy's
/// "no timeout" (which HAProxy itself warns about): a tunnel or a request without any
/// limit is how idle sockets pile up; a very long limit (`24h`) says it on purpose.
fn timeout(errs: &mut Errors, field: String, value: &Option<String>) -> Option<u64> {
    match duration(errs, field.clone(), value) {
        Some(0) => {
            errs.add(
                field,
                "a timeout of 0 is not allowed: omit it for the default, or give a long one such as 24h",
            );
            None
        }
        ms => ms,
    }
}

fn timeouts(errs: &mut Errors, field: &str, t: &Timeouts) -> pb::Timeouts {
    let f = |n: &str| format!("{field}.{n}");
    pb::Timeouts {
        connect_ms: timeout(errs, f("connect"), &t.connect),
        client_ms: timeout(errs, f("client"), &t.client),
        server_ms: timeout(errs, f("server"), &t.server),
        tunnel_ms: timeout(errs, f("tunnel"), &t.tunnel),
        http_request_ms: timeout(errs, f("http_request"), &t.http_request),
        queue_ms: timeout(errs, f("queue"), &t.queue),
        check_ms: timeout(errs, f("check"), &t.check),
        client_fin_ms: timeout(errs, f("client_fin"), &t.client_fin),
        server_fin_ms: timeout(errs, f("server_fin"), &t.server_fin),
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
    wire_text(errs, format!("{field}.value"), value, Text::HeaderValue);
    value.to_string()
}

/// What kind of text reaches a wire or a log.
#[derive(Clone, Copy)]
enum Text {
    /// A header value: HTAB is allowed (RFC 9110 §5.5).
    HeaderValue,
    /// A method, URI, path, location, content type: no control character, no space.
    Token,
}

/// The one check for every value that a node writes on a wire (a request or response
/// line, a header) or in a log: no CR, LF, NUL or other control character — any of them
/// could end a line and start another (a second request on a health check's connection,
/// a forged log line).
fn wire_text(errs: &mut Errors, field: impl Into<String>, value: &str, kind: Text) {
    let bad = value.chars().find(|&c| match kind {
        Text::HeaderValue => c.is_control() && c != '\t',
        Text::Token => c.is_control() || c == ' ',
    });
    if let Some(c) = bad {
        let what = match kind {
            Text::HeaderValue => "control characters",
            Text::Token => "spaces or control characters",
        };
        errs.add(field, format!("cannot contain {what} (found {c:?})"));
    }
}

#[cfg(test)]
mod tests;
