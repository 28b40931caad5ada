//! Generates Rust types (prost) for the Prometheus protos in
//! `proto/prometheus/` (the protobuf exposition and remote write), compiled
//! by protox so that no `protoc` is needed. One output file per protobuf
//! package in OUT_DIR, included by `src/proto.rs`. Also sets the link
//! arguments that shrink what the binary maps (`link_args`).

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

/// Link arguments of the `geometra-sidecar` binary that cut the memory it
/// maps (BENCHMARKS.md, "Issue 12: memory"). Only on x86_64 Linux with
/// glibc, where rustc links with lld by default and glibc (2.36+, Debian 12)
/// reads packed relocations. `GEOMETRA_PLAIN_LINK=1` turns them off (another
/// linker, an older glibc).
fn link_args() {
    println!("cargo:rerun-if-env-changed=GEOMETRA_PLAIN_LINK");
    let target = std::env::var("TARGET").unwrap_or_default();
    if target != "x86_64-unknown-linux-gnu" || std::env::var_os("GEOMETRA_PLAIN_LINK").is_some() {
        return;
    }
    let arg = |a: &str| println!("cargo:rustc-link-arg-bin=geometra-sidecar={a}");
    // DT_RELR: the ~20k relative relocations of a PIE (vtables, string
    // tables) in a few KiB instead of 0.5 MB that ld.so reads at every start
    arg("-Wl,-z,pack-relative-relocs");
    // the functions that run (start-up, traces, logs, scrapes: recorded by
    // benches/symbol_order.sh) laid out together, hottest first, so the
    // 64 KiB windows the kernel maps around each fault of .text hold code
    // that runs rather than its cold neighbours. Names that no longer exist
    // are skipped, new ones land after the list: a stale list costs memory,
    // never correctness.
    let order = Path::new("link/symbol-order.txt");
    println!("cargo:rerun-if-changed={}", order.display());
    if let Ok(abs) = order.canonicalize() {
        arg(&format!("-Wl,--symbol-ordering-file={}", abs.display()));
        arg("-Wl,--no-warn-symbol-ordering");
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    link_args();
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
