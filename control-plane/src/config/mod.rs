//! The declarative configuration document (`PUT /api/v1/config`) and its compilation.
//!
//! [`ConfigDocument`] is the JSON shape operators write — the field names of
//! `examples/article.json` — with HAProxy's vocabulary kept as strings (`"5s"`,
//! `"hdr(Upgrade) -i websocket"`, `"leastconn"`). [`compile::compile`] validates a whole
//! document and turns it into the protobuf [`sluice_proto::v1::Snapshot`] nodes receive, so
//! a node never parses HAProxy syntax or JSON. Nothing here touches the database.

pub mod acl;
pub mod compile;
pub mod document;
pub mod duration;

pub use compile::{compile, FieldError, Invalid};
pub use document::*;
