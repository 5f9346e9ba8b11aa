//! Compiles `schemas/hwsched/v1/*.proto` with protox (pure Rust, no protoc) into
//! prost types plus pbjson serde impls. This is the only place code is generated.
use std::{env, fs, path::PathBuf};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let schemas = PathBuf::from(env::var("CARGO_MANIFEST_DIR")?).join("../../schemas");
    let dir = schemas.join("hwsched/v1");
    let mut files: Vec<PathBuf> = fs::read_dir(&dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "proto"))
        .collect();
    files.sort();
    println!("cargo:rerun-if-changed={}", dir.display());
    for f in &files {
        println!("cargo:rerun-if-changed={}", f.display());
    }

    let fds = protox::compile(&files, [&schemas])?;
    let out = PathBuf::from(env::var("OUT_DIR")?);
    let descriptor_path = out.join("hwsched_descriptor.bin");
    fs::write(&descriptor_path, prost::Message::encode_to_vec(&fds))?;

    // Every protobuf map is a BTreeMap: its JSON (and protobuf encoding) lists keys in
    // order, so the same message gives the same bytes in every process.
    prost_build::Config::new()
        .btree_map(["."])
        .file_descriptor_set_path(&descriptor_path)
        .skip_protoc_run()
        .compile_fds(fds)?;

    let descriptors = fs::read(&descriptor_path)?;
    pbjson_build::Builder::new().register_descriptors(&descriptors)?.btree_map(["."]).build(&[".hwsched"])?;
    Ok(())
}
