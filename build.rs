//! Generates Rust types (prost) for the Prometheus protos in
//! `proto/prometheus/` (the protobuf exposition and remote write), compiled
//! by protox so that no `protoc` is needed. One output file per protobuf
//! package in OUT_DIR, included by `src/proto.rs`.

use std::path::{Path, PathBuf};

fn protos(dir: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
    for e in std::fs::read_dir(dir)? {
        let p = e?.path();
        if p.is_dir() {
            protos(&p, out)?;
        } else if p.extension().is_some_and(|x| x == "proto") {
            out.push(p);
        }
    }
    Ok(())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = Path::new("proto/prometheus");
    println!("cargo:rerun-if-changed={}", root.display());
    let mut files = Vec::new();
    if root.is_dir() {
        protos(root, &mut files)?;
    }
    files.sort();
    for f in &files {
        println!("cargo:rerun-if-changed={}", f.display());
    }
    if files.is_empty() {
        return Ok(());
    }
    let fds = protox::compile(&files, [root])?;
    prost_build::Config::new().compile_fds(fds)?;
    Ok(())
}
