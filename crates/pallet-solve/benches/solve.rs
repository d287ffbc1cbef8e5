//! Prints how long solving takes on the 5,000-record Alpine indexes (no assertions).

use std::io::Read;
use std::path::PathBuf;
use std::time::Instant;

use pallet_apk_types::{Dependency, package::parse_index};
use pallet_solve::{Repository, solve};

fn main() {
    let shared = std::env::var_os("PALLET_SHARED")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../../shared")));
    for dir in ["alpine-316", "alpine-317"] {
        let p = shared
            .join("fixtures/upstream-testdata/apko")
            .join(dir)
            .join("APKINDEX.tar.gz");
        let Ok(f) = std::fs::File::open(&p) else {
            eprintln!("SKIPPED: {} not found (set PALLET_SHARED)", p.display());
            continue;
        };
        let mut ar = tar::Archive::new(flate2::read::MultiGzDecoder::new(f));
        let mut text = String::new();
        for e in ar.entries().unwrap() {
            let mut e = e.unwrap();
            if e.path().unwrap().to_str() == Some("APKINDEX") {
                e.read_to_string(&mut text).unwrap();
            }
        }
        let repos = [Repository {
            name: dir.into(),
            tag: None,
            packages: parse_index(&text).unwrap(),
        }];
        for w in [
            "alpine-base",
            "python3",
            "gcc",
            "alpine-sdk",
            "alpine-base python3 gcc",
        ] {
            let world = Dependency::parse_list(w).unwrap();
            let runs = 20;
            let t = Instant::now();
            let mut n = String::new();
            for _ in 0..runs {
                n = match solve(&repos, &world) {
                    Ok(s) => format!("{} packages", s.packages.len()),
                    Err(e) => format!("error ({} problems)", e.problems.len()),
                };
            }
            println!(
                "{dir} ({} records) [{w}]: {n}, {:.2} ms per solve",
                repos[0].packages.len(),
                t.elapsed().as_secs_f64() * 1000.0 / runs as f64
            );
        }
    }
}
