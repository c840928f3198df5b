//! Generates the gRPC API's Rust code (prost messages, tonic client and server) from
//! `proto/ferry/v1/broker.proto`, with the protoc binary that `protoc-bin-vendored` ships, so no
//! system protoc is needed.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../proto");
    let proto = root.join("ferry/v1/broker.proto");
    println!("cargo:rerun-if-changed={}", proto.display());
    let mut config = tonic_prost_build::Config::new();
    config.protoc_executable(protoc_bin_vendored::protoc_bin_path()?);
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        // Bodies are `bytes::Bytes`: published bodies are sliced from the request buffer and
        // delivered bodies point into the topic log's memory, without a copy.
        .bytes(".ferry.v1.PublishRequest.bodies")
        .bytes(".ferry.v1.Message.body")
        .compile_with_config(config, &[proto.as_path()], &[root.as_path()])?;
    Ok(())
}
