//! Any JSON body a REST client sends: parsed as a configuration document, validated and
//! compiled into a snapshot without panicking (errors are fine).
#![no_main]

use libfuzzer_sys::fuzz_target;
use sluice_control_plane::config::{compile, ConfigDocument};

fuzz_target!(|data: &[u8]| {
    if let Ok(doc) = serde_json::from_slice::<ConfigDocument>(data) {
        let _ = compile(&doc);
    }
});
