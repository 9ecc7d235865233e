//! The control plane's ACL and condition parsers answer any text without panicking.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sluice_control_plane::config::acl::{parse_acl_expr, parse_condition};

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = parse_acl_expr(text);
        let _ = parse_condition(text, false, &|name: &str| name.len() % 2 == 0);
    }
});
