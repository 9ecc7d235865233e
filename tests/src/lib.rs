//! Test fixtures for Sluice's end-to-end tests and the demo: an echo backend that speaks
//! HTTP and WebSocket ([`backend`]), an HTTP/2 client
//! ([`h2client`]), and a harness that runs the real `sluice-cp` and
//! `sluice-dp` binaries on loopback ports with temporary databases ([`harness`]).

pub mod backend;
pub mod h2client;
pub mod harness;
pub mod raw;
