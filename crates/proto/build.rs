//! Compiles `proto/` with protox (pure Rust, no system protoc), exports the
//! descriptor set for server reflection and the record catalog, and generates
//! the prost messages and tonic services from it.

use std::{env, error::Error, fs, path::PathBuf};

use heck::ToSnakeCase as _;
use prost::Message;
use tonic_prost_build::manual;

fn main() -> Result<(), Box<dyn Error>> {
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

    served_once_only(&fds)?;

    // Type names let callers pack payloads into `Any` without spelling them.
    let mut config = tonic_prost_build::Config::new();
    config.enable_type_names();
    // Maps as `BTreeMap`: a record's field salts (one entry per payload
    // field) decode into one node instead of a hash table and an entry
    // each — the broker decodes every ingested record — and encode in one
    // order, so an envelope's bytes no longer depend on a hash seed.
    config.btree_map(["."]);
    // A signature's byte fields as `Bytes`: decoded from a `Bytes` buffer
    // (the broker's consumed envelope) they are slices of it, not copies —
    // the certificate, the salts and the proof were ~5 % of an ingest run's
    // CPU as fresh `Vec`s (docs/PROFILING.md) — and the signer's
    // certificate and batch root go on every record of a batch by reference.
    config.bytes([
        ".govbus.v1.RecordSignature",
        ".govbus.v1.BatchInclusion",
        ".govbus.v1.BatchRoot",
    ]);
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        .compile_fds_with_config(fds, config)?;
    Ok(())
}

/// The broker's `OnceOnly` server (`served::once_only_server`): the public
/// service's methods and routes, with `GetEvidence` answering
/// `served::GetEvidenceResponse` (src/served.rs says why).
fn served_once_only(fds: &prost_types::FileDescriptorSet) -> Result<(), Box<dyn Error>> {
    let service = fds
        .file
        .iter()
        .filter(|file| file.package() == "govbus.v1")
        .flat_map(|file| &file.service)
        .find(|service| service.name() == "OnceOnly")
        .ok_or("govbus.v1.OnceOnly is not in proto/")?;
    let mut served = manual::Service::builder()
        .name("OnceOnly")
        .package("govbus.v1");
    for method in &service.method {
        if method.client_streaming() || method.server_streaming() {
            return Err(format!(
                "OnceOnly.{} streams: src/served.rs has no such form",
                method.name()
            )
            .into());
        }
        let output = match method.output_type() {
            ".govbus.v1.GetEvidenceResponse" => "crate::served::GetEvidenceResponse".to_string(),
            other => rust_path(other)?,
        };
        served = served.method(
            manual::Method::builder()
                .name(method.name().to_snake_case())
                .route_name(method.name())
                .input_type(rust_path(method.input_type())?)
                .output_type(output)
                .codec_path("tonic_prost::ProstCodec")
                .build(),
        );
    }
    manual::Builder::new()
        .build_client(false)
        .compile(&[served.build()]);
    Ok(())
}

/// `.govbus.v1.Name` as `crate::v1::Name`.
fn rust_path(proto_name: &str) -> Result<String, Box<dyn Error>> {
    let name = proto_name
        .strip_prefix(".govbus.v1.")
        .ok_or_else(|| format!("{proto_name} is not a govbus.v1 message"))?;
    Ok(format!("crate::v1::{name}"))
}
