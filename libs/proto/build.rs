//! Compiles ../../proto with a vendored protoc, so protoc is no system
//! prerequisite, and writes the file descriptor set that the daemons serve
//! through gRPC reflection.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protoc = protoc_bin_vendored::protoc_bin_path()?;
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../proto");
    let files = [
        "bitdust/format/v1/format.proto",
        "bitdust/peer/v1/peer.proto",
        "bitdust/supplier/v1/supplier.proto",
        "bitdust/customer/v1/customer.proto",
        "bitdust/dht/v1/dht.proto",
        "bitdust/dht/v1/service.proto",
        "bitdust/rebuilder/v1/rebuilder.proto",
        "bitdust/router/v1/router.proto",
    ]
    .map(|f| root.join(f));
    for f in &files {
        println!("cargo:rerun-if-changed={}", f.display());
    }
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR")?);
    let mut config = tonic_prost_build::Config::new();
    config.protoc_executable(protoc);
    // File content reaches `bitdustctl` (restores) and the agent (backups)
    // as a slice of the received message, not a copy of it.
    config.bytes([
        ".bitdust.customer.v1.RestoreEvent.content",
        ".bitdust.customer.v1.Content.data",
    ]);
    tonic_prost_build::configure()
        .file_descriptor_set_path(out.join("bitdust_descriptor.bin"))
        .compile_with_config(config, &files, &[root])?;
    Ok(())
}
