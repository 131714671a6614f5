//! Compiles the Raft-internal protocol with protox (pure Rust): no system protoc needed.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let proto = "proto/raft.proto";
    println!("cargo:rerun-if-changed={proto}");
    let descriptors = protox::compile([proto], ["proto"])?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_fds(descriptors)?;
    Ok(())
}
