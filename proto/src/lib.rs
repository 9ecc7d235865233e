//! `sluice-proto`: the one contract both sides share.
//!
//! `sluice/v1/config.proto` defines [`v1::Snapshot`], the immutable, versioned configuration
//! the control plane pushes; `sluice/v1/fleet.proto` defines the [`v1::fleet_server::Fleet`]
//! node stream (hello, ack/nack, stats one way; snapshots the other). The `.proto` comments
//! are the normative description of the protocol.

/// Generated types for package `sluice.v1`.
#[allow(clippy::all, missing_docs)]
pub mod v1 {
    tonic::include_proto!("sluice.v1");
}
