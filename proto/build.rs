//! Compiles the `.proto` contract with protox (pure Rust), so no system `protoc` is needed.
use std::{env, fs, path::PathBuf};

use protox::prost::Message;

fn main() -> std::io::Result<()> {
    let protos = ["sluice/v1/config.proto", "sluice/v1/fleet.proto"];
    let includes = ["."];
    for p in protos {
        println!("cargo:rerun-if-changed={p}");
    }
    let fds = protox::compile(protos, includes).map_err(std::io::Error::other)?;
    let fds_path =
        PathBuf::from(env::var_os("OUT_DIR").expect("OUT_DIR is set by cargo")).join("sluice.fds");
    fs::write(&fds_path, fds.encode_to_vec())?;
    tonic_prost_build::configure()
        .build_server(false)
        .build_client(true)
        .file_descriptor_set_path(&fds_path)
        .skip_protoc_run()
        .compile_protos(&protos, &includes)
}
