//! Test fixtures for Sluice's end-to-end tests and the demo: an echo backend that speaks
//! HTTP and WebSocket ([`backend`]), the browser scripts' runner ([`browser`]), an HTTP/2 client
//! ([`h2client`]), and a harness that runs the real `sluice-cp` and
//! `sluice-dp` binaries on loopback ports with temporary databases ([`harness`]), and
//! steady request traffic through nodes ([`traffic`]), and a reader of the live feed
//! ([`live`]); control-plane replicas on one database ([`replica`]); TLS for clients
//! ([`tls`]).

pub mod backend;
pub mod browser;
pub mod h2client;
pub mod harness;
pub mod live;
pub mod raw;
pub mod replica;
pub mod tls;
pub mod traffic;
