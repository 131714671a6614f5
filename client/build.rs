//! Compiles the public contract with protox (pure Rust): no system protoc needed.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protos = ["proto/cairn/v1/cairn.proto", "proto/cairn/v1/auth.proto"];
    for proto in protos {
        println!("cargo:rerun-if-changed={proto}");
    }
    let descriptors = protox::compile(protos, ["proto"])?;
    tonic_prost_build::configure()
        // A recorded event's bytes as `bytes::Bytes`: the node hands the buffer it read the
        // event's group into straight to the encoder, and a client decodes without a copy.
        .bytes(".cairn.v1.RecordedEvent.data")
        .bytes(".cairn.v1.RecordedEvent.metadata")
        .build_client(true)
        .build_server(std::env::var_os("CARGO_FEATURE_SERVER").is_some())
        .compile_fds(descriptors)?;
    Ok(())
}
