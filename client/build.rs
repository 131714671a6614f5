//! Compiles the public contract with protox (pure Rust): no system protoc needed.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let proto = "proto/cairn/v1/cairn.proto";
    println!("cargo:rerun-if-changed={proto}");
    let descriptors = protox::compile([proto], ["proto"])?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(std::env::var_os("CARGO_FEATURE_SERVER").is_some())
        .compile_fds(descriptors)?;
    Ok(())
}
