//! A backend's health check: tcp, http (method, URI, headers, expected statuses) or a
//! WebSocket handshake.

use sluice_proto::v1 as pb;

use super::*;

pub(super) fn health_check(errs: &mut Errors, field: &str, h: &HealthCheck) -> pb::HealthCheck {
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
        wire_text(errs, format!("{field}.uri"), uri, Text::Token);
    }
    if let Some(method) = &h.method {
        if method.is_empty() || http_header_name_invalid(method) {
            errs.add(
                format!("{field}.method"),
                format!("{method:?} is not a method (a token such as GET)"),
            );
        }
    }
    if let Some(version) = &h.version {
        if !matches!(version.as_str(), "HTTP/1.0" | "HTTP/1.1") {
            errs.add(
                format!("{field}.version"),
                format!("{version:?} is not HTTP/1.0 or HTTP/1.1"),
            );
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
        wire_text(
            errs,
            format!("{field}.headers.{name}"),
            value,
            Text::HeaderValue,
        );
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
