//! Request and response rule actions: header names and values checked, regexes and
//! statuses compiled.

use sluice_proto::v1 as pb;

use super::{header_name, header_value, status, PlanError};
use crate::config::{HeaderOp, RequestAction};

fn set(h: &pb::HeaderValue) -> Result<HeaderOp, PlanError> {
    Ok(HeaderOp::Set(
        header_name(&h.name)?,
        header_value(&h.value)?,
    ))
}

fn add(h: &pb::HeaderValue) -> Result<HeaderOp, PlanError> {
    Ok(HeaderOp::Add(
        header_name(&h.name)?,
        header_value(&h.value)?,
    ))
}

fn del(h: &pb::HeaderName) -> Result<HeaderOp, PlanError> {
    Ok(HeaderOp::Del(header_name(&h.name)?))
}

/// A replacement as the regex engine takes it: HAProxy's `\1` back-references become
/// `${1}`; `$1` and `${name}` work as they are.
pub(crate) fn replacement(haproxy: &str) -> String {
    let mut out = String::with_capacity(haproxy.len() + 4);
    let mut chars = haproxy.chars().peekable();
    while let Some(c) = chars.next() {
        match (c, chars.peek()) {
            ('\\', Some(&d)) if d.is_ascii_digit() => {
                out.push_str("${");
                out.push(d);
                out.push('}');
                chars.next();
            }
            _ => out.push(c),
        }
    }
    out
}

impl TryFrom<&pb::http_request_rule::Action> for RequestAction {
    type Error = PlanError;

    fn try_from(action: &pb::http_request_rule::Action) -> Result<Self, PlanError> {
        use pb::http_request_rule::Action as A;
        Ok(match action {
            A::Redirect(rd) => RequestAction::Redirect {
                kind: rd.kind(),
                target: rd.target.clone(),
                code: status(rd.code)?,
            },
            A::Deny(d) => RequestAction::Deny(status(d.status)?),
            A::SetHeader(h) => RequestAction::Header(set(h)?),
            A::AddHeader(h) => RequestAction::Header(add(h)?),
            A::DelHeader(h) => RequestAction::Header(del(h)?),
            A::ReplaceHeader(h) => RequestAction::ReplaceHeader(
                header_name(&h.name)?,
                regex::Regex::new(&h.regex).map_err(PlanError::Regex)?,
                replacement(&h.replacement),
            ),
            A::SetPath(p) => RequestAction::SetPath(p.path.clone()),
            A::ReplacePath(p) => RequestAction::ReplacePath(
                regex::Regex::new(&p.regex).map_err(PlanError::Regex)?,
                replacement(&p.replacement),
            ),
            A::ReturnResponse(rr) => RequestAction::Return {
                status: status(rr.status)?,
                content_type: header_value(&rr.content_type)?,
                body: bytes::Bytes::from(rr.body.clone()),
            },
            A::TrackSc(t) => RequestAction::TrackSc(t.counter),
        })
    }
}

impl TryFrom<&pb::http_response_rule::Action> for HeaderOp {
    type Error = PlanError;

    fn try_from(action: &pb::http_response_rule::Action) -> Result<Self, PlanError> {
        use pb::http_response_rule::Action as A;
        match action {
            A::SetHeader(h) => set(h),
            A::AddHeader(h) => add(h),
            A::DelHeader(h) => del(h),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::replacement;

    #[test]
    fn haproxy_back_references_become_the_regex_engines() {
        assert_eq!(replacement(r"/app/\1"), "/app/${1}");
        // One digit, as HAProxy reads them: `\12` is group 1, then "2".
        assert_eq!(replacement(r"\2.\1-\12"), "${2}.${1}-${1}2");
        assert_eq!(replacement("tenant-$1"), "tenant-$1");
        assert_eq!(replacement(r"a\b\"), r"a\b\");
        let re = regex::Regex::new("^(eu|us)-(.*)$").unwrap();
        assert_eq!(
            re.replace_all("eu-west", replacement(r"\2.\1").as_str()),
            "west.eu"
        );
    }
}
