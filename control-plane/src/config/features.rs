//! Snapshot features: what a node must know to apply a snapshot as meant. A node
//! announces the features it supports in its `Hello`; the control plane does not send it
//! a snapshot that uses one it lacks, so a fleet can run two software versions during a
//! rolling upgrade without an older node silently serving less than the configuration
//! says. Everything every node has ever supported is not a feature.

use sluice_proto::v1 as pb;

/// HTTP/2 on a bind that asks for it by ALPN (`tls.alpn` lists `h2`); a node without it
/// would offer HTTP/1.1 only. (h2c is on by default and degrades to HTTP/1.1 harmlessly,
/// so it does not make a snapshot need the feature.)
pub const HTTP2: &str = "http2";

/// `http-request replace-path`: a node without it would drop the rule (an unknown action)
/// and forward the path unchanged.
pub const REPLACE_PATH: &str = "replace-path";

/// The features `snap` uses.
pub fn used(snap: &pb::Snapshot) -> Vec<&'static str> {
    let mut out = Vec::new();
    let replace_path = snap
        .frontends
        .iter()
        .flat_map(|f| &f.http_request)
        .any(|r| {
            matches!(
                r.action,
                Some(pb::http_request_rule::Action::ReplacePath(_))
            )
        });
    let h2 = snap
        .frontends
        .iter()
        .flat_map(|f| &f.binds)
        .filter_map(|b| b.tls.as_ref())
        .any(|t| t.alpn.iter().any(|p| p == "h2"));
    if h2 {
        out.push(HTTP2);
    }
    if replace_path {
        out.push(REPLACE_PATH);
    }
    out
}

/// The features of `used` that a node announcing `supported` lacks.
pub fn missing(used: &[&'static str], supported: &[String]) -> Vec<&'static str> {
    used.iter()
        .copied()
        .filter(|f| !supported.iter().any(|s| s == f))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alpn_h2_needs_http2_and_replace_path_its_feature() {
        let mut snap = pb::Snapshot {
            frontends: vec![pb::Frontend {
                binds: vec![pb::Bind {
                    address: "127.0.0.1:1".into(),
                    tls: Some(pb::BindTls {
                        alpn: vec!["http/1.1".into()],
                        ..Default::default()
                    }),
                    http2: Some(pb::Http2::default()),
                }],
                ..Default::default()
            }],
            ..Default::default()
        };
        assert!(used(&snap).is_empty());
        snap.frontends[0].binds[0].tls.as_mut().unwrap().alpn = vec!["h2".into()];
        assert_eq!(used(&snap), [HTTP2]);
        assert_eq!(missing(&[HTTP2], &[]), [HTTP2]);
        snap.frontends[0].http_request = vec![pb::HttpRequestRule {
            cond: None,
            action: Some(pb::http_request_rule::Action::ReplacePath(
                pb::ReplacePath::default(),
            )),
        }];
        assert_eq!(used(&snap), [HTTP2, REPLACE_PATH]);
        assert!(missing(&[HTTP2], &["http2".to_string()]).is_empty());
    }
}
