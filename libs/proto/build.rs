//! Compiles ../../proto with a vendored protoc, so protoc is no system prerequisite.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protoc = protoc_bin_vendored::protoc_bin_path()?;
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../proto");
    let files = ["bitdust/format/v1/format.proto"].map(|f| root.join(f));
    for f in &files {
        println!("cargo:rerun-if-changed={}", f.display());
    }
    prost_build::Config::new()
        .protoc_executable(protoc)
        .compile_protos(&files, &[root])?;
    Ok(())
}
