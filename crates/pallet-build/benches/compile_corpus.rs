//! Compiles every melange file of the shared corpus for x86_64 and aarch64, repeatedly, and
//! prints files per second. Figures only. `cargo bench -p pallet-build --bench compile_corpus`.

use std::path::{Path, PathBuf};
use std::time::Instant;

use pallet_build::compile::{CompileOptions, compile_file};
use pallet_image::config::Arch;

fn main() {
    let s = std::env::var_os("PALLET_SHARED")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared"));
    let dir = s.join("corpus/melange");
    if !dir.is_dir() {
        println!("SKIPPED: {} not found (set PALLET_SHARED)", dir.display());
        return;
    }
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    let rounds = 20;
    let start = Instant::now();
    let mut n = 0;
    for _ in 0..rounds {
        for f in &files {
            for arch in [Arch::Amd64, Arch::Arm64] {
                let o = CompileOptions {
                    arch: Some(arch),
                    pipeline_dirs: vec![dir.join("pipelines")],
                    ..Default::default()
                };
                compile_file(f, &o).unwrap();
                n += 1;
            }
        }
    }
    let secs = start.elapsed().as_secs_f64();
    println!(
        "compiled {n} files ({} corpus files x 2 archs x {rounds}) in {:.2} s: {:.0} files/s",
        files.len(),
        secs,
        n as f64 / secs
    );
}
