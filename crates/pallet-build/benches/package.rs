//! Prints the overhead of building a trivial package (sandbox set-up plus assembly) and the
//! assembly throughput of a large tree, next to `tar | pigz` (or gzip) on the same tree.
//! Figures only. Run with `cargo bench -p pallet-build`.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::time::Instant;

use pallet_build::assemble::{Assembly, PackageSpec};
use pallet_build::driver::{Options, Plan, build};
use pallet_build::runner::Step;

fn main() {
    let t = tempfile::tempdir().unwrap();
    // A trivial package in bootstrap mode: the sandbox starts, one step runs, the package is
    // analyzed, assembled and indexed.
    if pallet_build::runner::bwrap_available() {
        let plan = Plan {
            version: "1".into(),
            epoch: 0,
            main: PackageSpec {
                name: "trivial".into(),
                ..Default::default()
            },
            steps: vec![Step {
                name: "touch".into(),
                runs:
                    "mkdir -p melange-out/trivial/etc && echo hi > melange-out/trivial/etc/trivial"
                        .into(),
                workdir: "/home/build".into(),
                env: BTreeMap::new(),
            }],
            ..Default::default()
        };
        let opts = Options {
            out_dir: t.path().join("out"),
            bootstrap: true,
            generate_index: true,
            rm: true,
            ..Default::default()
        };
        build(&plan, &opts).unwrap();
        let n = 10;
        let start = Instant::now();
        for _ in 0..n {
            build(&plan, &opts).unwrap();
        }
        println!(
            "trivial package (bootstrap sandbox + one step + SCA + assembly + index): {:.1} ms",
            start.elapsed().as_secs_f64() * 1e3 / n as f64
        );
    } else {
        println!("SKIPPED trivial build: bwrap is not installed");
    }
    // Assembly throughput on a large tree: /usr/lib and /usr/share of this machine, copied.
    let tree = t.path().join("tree");
    std::fs::create_dir_all(&tree).unwrap();
    for src in ["/usr/share/perl", "/usr/share/doc"] {
        if Path::new(src).exists() {
            let _ = Command::new("cp").args(["-a", src]).arg(&tree).status();
        }
    }
    let size: u64 = walkdir::WalkDir::new(&tree)
        .into_iter()
        .flatten()
        .filter(|e| e.file_type().is_file())
        .map(|e| e.metadata().map(|m| m.len()).unwrap_or(0))
        .sum();
    let asm = Assembly {
        version: "1".into(),
        epoch: 0,
        arch: "x86_64".into(),
        origin: "big".into(),
        namespace: "bench".into(),
        source_date_epoch: 0,
        signing_key: None,
        config_yaml: String::new(),
        workspace: None,
        config_source: Default::default(),
        dependency_log: None,
    };
    let spec = PackageSpec {
        name: "big".into(),
        sca: pallet_build::sca::ScaOptions::default(),
        ..Default::default()
    };
    let start = Instant::now();
    asm.emit(&spec, &tree, &t.path().join("bigout")).unwrap();
    let secs = start.elapsed().as_secs_f64();
    println!(
        "assembly of a {:.0} MB tree (SCA + tar + gzip + hashes): {:.2} s, {:.0} MB/s",
        size as f64 / 1e6,
        secs,
        size as f64 / 1e6 / secs
    );
    let gz = if Command::new("pigz").arg("--version").output().is_ok() {
        "pigz -9"
    } else {
        "gzip -9"
    };
    let start = Instant::now();
    let st = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "tar -C {} -cf - . | {gz} > {}",
            tree.display(),
            t.path().join("ref.tar.gz").display()
        ))
        .status()
        .unwrap();
    let secs = start.elapsed().as_secs_f64();
    println!(
        "tar | {gz} on the same tree: {:.2} s, {:.0} MB/s (exit {st})",
        secs,
        size as f64 / 1e6 / secs
    );
}
