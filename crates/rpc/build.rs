//! Compiles `proto/` with protox (a protobuf compiler in Rust), so building
//! needs no system `protoc`.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Read when the script runs, not when it was compiled: a build script
    // binary cached in a shared target directory may have been compiled for
    // another checkout of this repository.
    let manifest_dir = std::env::var("CARGO_MANIFEST_DIR")?;
    let root = std::path::Path::new(&manifest_dir).join("../../proto");
    let files = [
        root.join("meridian/core/v1/core.proto"),
        root.join("meridian/replication/v1/replication.proto"),
    ];
    println!("cargo:rerun-if-changed={}", root.display());
    let descriptors = protox::compile(&files, [&root])?;
    tonic_prost_build::configure().compile_fds(descriptors)?;
    Ok(())
}
