//! `sluice-proto`: the one contract both sides share.
//!
//! `sluice/v1/config.proto` defines [`v1::Snapshot`], the immutable, versioned configuration
//! the control plane pushes; `sluice/v1/fleet.proto` defines the `Fleet` node stream
//! (hello, ack/nack, stats one way; snapshots the other). The `.proto` comments are the
//! normative description of the protocol.

/// The largest configuration Sluice stores and delivers, one limit for every place a
/// configuration passes: a REST body, a document as JSON, a snapshot as protobuf (the
/// control plane refuses a write over it, 422), and a `ControlMessage` on the node
/// stream (with [`STREAM_OVERHEAD`] for its framing). Whatever can be stored can be
/// delivered to a node and read back and written again.
pub const MAX_CONFIG_BYTES: usize = 16 * 1024 * 1024;

/// What a `ControlMessage` adds to the snapshot it carries, with room to spare.
pub const STREAM_OVERHEAD: usize = 64 * 1024;

/// Generated types for package `sluice.v1`.
#[allow(clippy::all, missing_docs)]
pub mod v1 {
    tonic::include_proto!("sluice.v1");
}
