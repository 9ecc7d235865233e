//! The declarative configuration document (`PUT /api/v1/config`) and its compilation.
//!
//! [`ConfigDocument`] is the JSON shape operators write — the field names of
//! `examples/article.json` — with HAProxy's vocabulary kept as strings (`"5s"`,
//! `"hdr(Upgrade) -i websocket"`, `"leastconn"`). [`compile::compile`] validates a whole
//! document and turns it into the protobuf [`sluice_proto::v1::Snapshot`] nodes receive, so
//! a node never parses HAProxy syntax or JSON. TLS certificates are the other part of a
//! versioned configuration ([`certificates`]); [`snapshot`] checks both together and
//! builds what a version ships. All validation of a configuration is here; nothing here
//! touches the database.

pub mod acl;
pub mod certificates;
pub mod compile;
pub mod document;
pub mod duration;
pub mod features;

pub use certificates::Certificate;
pub use compile::{compile, FieldError, Invalid};
pub use document::*;

use sluice_proto::v1 as pb;

/// What one configuration version holds: the document and the certificate set.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Configuration {
    pub document: ConfigDocument,
    /// By name.
    pub certificates: Vec<Certificate>,
}

/// Validates a whole configuration and builds the snapshot body it ships (version and
/// time are set by the caller): the compiled document with the certificates its binds
/// use, and only those (a node gets no key it does not serve).
pub fn snapshot(config: &Configuration) -> Result<pb::Snapshot, Invalid> {
    let mut snap = compile(&config.document)?;
    certificates::attach(&mut snap, &config.certificates)?;
    check_size(&config.document, &snap)?;
    Ok(snap)
}

/// A configuration over [`sluice_proto::MAX_CONFIG_BYTES`], as the JSON a `GET` returns or
/// as the snapshot a node receives, is refused: it could be stored but not read back
/// through `PUT`, or not delivered.
fn check_size(document: &ConfigDocument, snap: &pb::Snapshot) -> Result<(), Invalid> {
    use prost::Message;
    let max = sluice_proto::MAX_CONFIG_BYTES;
    let json = serde_json::to_vec(document).map_or(usize::MAX, |j| j.len());
    let encoded = snap.encoded_len();
    let too_large = |what: &str, size: usize| {
        Invalid(vec![FieldError {
            field: "(document)".into(),
            message: format!("the configuration is {size} bytes {what}; at most {max}"),
        }])
    };
    if json > max {
        return Err(too_large("as JSON", json));
    }
    if encoded > max {
        return Err(too_large("as a snapshot (certificates included)", encoded));
    }
    Ok(())
}
