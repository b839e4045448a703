//! Compiles `proto/` with protox (pure Rust, no system protoc), exports the
//! descriptor set for server reflection and the record catalog, and generates
//! the prost messages and tonic services from it.

use std::{env, fs, path::PathBuf};

use prost::Message;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = PathBuf::from(env::var("CARGO_MANIFEST_DIR")?).join("../../proto");
    let files = [
        "govbus/v1/record.proto",
        "govbus/v1/adapter.proto",
        "govbus/v1/once_only.proto",
        "govbus/v1/consent.proto",
        "govbus/records/v1/common.proto",
        "govbus/records/v1/civil_registry.proto",
        "govbus/records/v1/interior.proto",
        "govbus/records/v1/cadastre.proto",
    ];
    println!("cargo:rerun-if-changed={}", root.display());

    let mut compiler = protox::Compiler::new([&root])?;
    compiler.include_imports(true).include_source_info(true);
    for file in files {
        compiler.open_file(file)?;
    }
    let fds = compiler.file_descriptor_set();

    let out = PathBuf::from(env::var("OUT_DIR")?);
    fs::write(out.join("govbus_descriptor.bin"), fds.encode_to_vec())?;

    // Type names let callers pack payloads into `Any` without spelling them.
    let mut config = tonic_prost_build::Config::new();
    config.enable_type_names();
    // Maps as `BTreeMap`: a record's field salts (one entry per payload
    // field) decode into one node instead of a hash table and an entry
    // each — the broker decodes every ingested record — and encode in one
    // order, so an envelope's bytes no longer depend on a hash seed.
    config.btree_map(["."]);
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        .compile_fds_with_config(fds, config)?;
    Ok(())
}
