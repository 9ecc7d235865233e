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
                h.replacement.clone(),
            ),
            A::SetPath(p) => RequestAction::SetPath(p.path.clone()),
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
