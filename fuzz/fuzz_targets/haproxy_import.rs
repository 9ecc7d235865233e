//! The haproxy.cfg importer on arbitrary text: an error or a document, never a panic; a
//! document it produces always reads as a configuration document or is refused with a
//! field named (never a crash of the checks either).
#![no_main]

use libfuzzer_sys::fuzz_target;
use sluice_control_plane::config::ConfigDocument;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(imported) = sluice_control_plane::import::import(text, &|_| None) {
        let _ = serde_json::from_value::<ConfigDocument>(imported.document);
    }
});
