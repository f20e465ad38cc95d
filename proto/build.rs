//! Generates the gRPC code from `shield/v1/shield.proto` with protox, so no `protoc` is needed.
#![allow(
    clippy::expect_used,
    reason = "a build script reports failure by panicking"
)]

use std::path::PathBuf;

fn main() {
    let out_dir = PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    let fds = protox::compile(["shield/v1/shield.proto"], ["."]).expect("shield.proto compiles");
    std::fs::write(
        out_dir.join("shield_descriptor.bin"),
        prost::Message::encode_to_vec(&fds),
    )
    .expect("descriptor set written");
    tonic_prost_build::configure()
        .compile_fds(fds)
        .expect("gRPC code generated");
    println!("cargo:rerun-if-changed=shield/v1/shield.proto");
}
