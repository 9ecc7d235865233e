//! Any bytes a node receives as a snapshot: decoded and compiled into a plan without
//! panicking (a snapshot it cannot apply is nacked, never a crash).
#![no_main]

use libfuzzer_sys::fuzz_target;
use prost::Message;
use sluice_data_plane::config::Plan;
use sluice_data_plane::counters::Registry;
use sluice_proto::v1 as pb;

fuzz_target!(|data: &[u8]| {
    if let Ok(snap) = pb::Snapshot::decode(data) {
        let _ = Plan::compile(&snap, &Registry::default());
    }
});
