//! Request, response and after-response rules: each action with the fields it may carry.

use sluice_proto::v1 as pb;

use super::*;

/// Which fields an action may carry besides `action`, `if` and `unless`.
pub(super) fn allowed_fields(action: &str) -> &'static [&'static str] {
    match action {
        "redirect" => &["scheme", "location", "prefix", "code"],
        "deny" => &["status"],
        "set-header" | "add-header" => &["name", "value"],
        "del-header" => &["name"],
        "replace-header" => &["name", "regex", "replacement"],
        "set-path" => &["path"],
        "replace-path" => &["regex", "replacement"],
        "return" => &["status", "content_type", "body"],
        "track-sc0" | "track-sc1" | "track-sc2" => &["key"],
        _ => &[],
    }
}

/// A header rewrite (`set-header`, `add-header`, `del-header`): the same fields and
/// checks in request and response rules.
enum HeaderOp {
    Set(pb::HeaderValue),
    Add(pb::HeaderValue),
    Del(pb::HeaderName),
}

/// The header rewrite of a rule whose action is one (checked by the caller).
fn header_op(errs: &mut Errors, field: &str, r: &HttpRule) -> HeaderOp {
    let name = header_name(errs, field, &r.name);
    match r.action.as_str() {
        "del-header" => HeaderOp::Del(pb::HeaderName { name }),
        action => {
            let h = pb::HeaderValue {
                name,
                value: header_value(errs, field, &r.value),
            };
            if action == "set-header" {
                HeaderOp::Set(h)
            } else {
                HeaderOp::Add(h)
            }
        }
    }
}

pub(super) fn check_extra_fields(errs: &mut Errors, field: &str, r: &HttpRule) {
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

pub(super) fn request_action(
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
            let target_field = match kind {
                pb::RedirectKind::Scheme => "scheme",
                pb::RedirectKind::Location => "location",
                _ => "prefix",
            };
            wire_text(errs, format!("{field}.{target_field}"), target, Text::Token);
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
        "set-header" | "add-header" | "del-header" => match header_op(errs, field, r) {
            HeaderOp::Set(h) => Action::SetHeader(h),
            HeaderOp::Add(h) => Action::AddHeader(h),
            HeaderOp::Del(h) => Action::DelHeader(h),
        },
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
        "replace-path" => {
            let regex = require(errs, field, "regex", &r.regex).to_string();
            if let Err(e) = regex::Regex::new(&regex) {
                errs.add(format!("{field}.regex"), format!("invalid regex: {e}"));
            }
            let replacement = require(errs, field, "replacement", &r.replacement);
            if !replacement.starts_with('/')
                && !replacement.starts_with('\\')
                && !replacement.starts_with('$')
            {
                errs.add(
                    format!("{field}.replacement"),
                    "the path must start with '/' (or a back-reference)",
                );
            }
            Action::ReplacePath(pb::ReplacePath {
                regex,
                replacement: replacement.to_string(),
            })
        }
        "set-path" => {
            let path = require(errs, field, "path", &r.path);
            if !path.starts_with('/') {
                errs.add(format!("{field}.path"), "the path must start with '/'");
            }
            wire_text(errs, format!("{field}.path"), path, Text::Token);
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
            let content_type = r
                .content_type
                .clone()
                .unwrap_or_else(|| "text/plain".into());
            wire_text(
                errs,
                format!("{field}.content_type"),
                &content_type,
                Text::HeaderValue,
            );
            Action::ReturnResponse(pb::ReturnResponse {
                status: status.into(),
                content_type,
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

pub(super) fn response_rules(
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

pub(super) fn response_action(
    errs: &mut Errors,
    field: &str,
    r: &HttpRule,
) -> Option<pb::http_response_rule::Action> {
    use pb::http_response_rule::Action;
    check_extra_fields(errs, field, r);
    Some(match r.action.as_str() {
        "set-header" | "add-header" | "del-header" => match header_op(errs, field, r) {
            HeaderOp::Set(h) => Action::SetHeader(h),
            HeaderOp::Add(h) => Action::AddHeader(h),
            HeaderOp::Del(h) => Action::DelHeader(h),
        },
        other => {
            errs.add(
                format!("{field}.action"),
                format!("unknown http_response action {other:?}"),
            );
            return None;
        }
    })
}
