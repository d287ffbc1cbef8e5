//! Prints how long the APK format work takes on real data: verifying the 100 Alpine 3.19
//! packages, indexing them, and parsing the ~5,000-record Alpine 3.16 index (plainly and
//! through the parsed-index cache). Figures only; no assertions. Run with `cargo bench -p
//! pallet-index`.

use std::path::{Path, PathBuf};
use std::time::Instant;

use pallet_apk_stream::{ReadOptions, read_apk};
use pallet_keys::Keyring;

fn shared() -> Option<PathBuf> {
    let p = std::env::var_os("PALLET_SHARED")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared"));
    p.join("fixtures").is_dir().then_some(p)
}

fn best_of<T>(n: usize, mut f: impl FnMut() -> T) -> (f64, T) {
    let mut best = f64::MAX;
    let mut last = None;
    for _ in 0..n {
        let t = Instant::now();
        last = Some(f());
        best = best.min(t.elapsed().as_secs_f64());
    }
    (best, last.expect("n > 0"))
}

fn main() {
    let Some(s) = shared() else {
        eprintln!("SKIPPED: ../shared/fixtures not found (set PALLET_SHARED)");
        return;
    };
    let a = s.join("fixtures/alpine-3.19");
    let ring = Keyring::from_paths([a.join("keys")]);
    let mut apks: Vec<PathBuf> = std::fs::read_dir(a.join("x86_64"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "apk"))
        .collect();
    apks.sort();
    let bytes: u64 = apks.iter().map(|p| p.metadata().unwrap().len()).sum();

    let (t, ok) = best_of(5, || {
        apks.iter()
            .filter(|p| {
                let f = std::fs::File::open(p).unwrap();
                let o = ReadOptions {
                    keyring: Some(&ring),
                    ..Default::default()
                };
                read_apk(f, &o, |_, _| Ok(())).is_ok()
            })
            .count()
    });
    println!(
        "verify {ok} packages (signature, datahash, every file's SHA-1), one thread: {:.1} ms, {:.0} MB/s",
        t * 1e3,
        bytes as f64 / t / 1e6
    );
    let (t, recs) = best_of(5, || pallet_index::records_for(&apks, Some(&ring)).unwrap());
    println!(
        "index {} packages (control sections, parallel): {:.1} ms",
        recs.len(),
        t * 1e3
    );
    let dir = std::env::temp_dir().join(format!("pallet-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let out = dir.join("APKINDEX.tar.gz");
    let (t, _) = best_of(5, || {
        pallet_index::write_index(&recs, None, None, 0, &out).unwrap()
    });
    println!("write the index: {:.1} ms", t * 1e3);

    for (name, keyring) in [
        (
            "alpine-316",
            Some(Keyring::from_paths([
                s.join("fixtures/upstream-testdata/keys")
            ])),
        ),
        ("alpine-317", None),
    ] {
        let p = s.join(format!(
            "fixtures/upstream-testdata/apko/{name}/APKINDEX.tar.gz"
        ));
        let (t, idx) = best_of(10, || {
            pallet_index::read_index(&p, keyring.as_ref()).unwrap()
        });
        println!(
            "read {name} index ({} records{}): {:.1} ms",
            idx.packages.len(),
            if keyring.is_some() {
                ", signature verified"
            } else {
                ""
            },
            t * 1e3
        );
        // Through the parsed-index cache: the first read parses and writes the compact form,
        // every later one loads it (records decoded only when read).
        let cache = dir.join(format!("cache-{name}"));
        let t = Instant::now();
        pallet_index::read_index_cached(&p, keyring.as_ref(), &cache).unwrap();
        let miss = t.elapsed().as_secs_f64();
        let (hit, _) = best_of(10, || {
            pallet_index::read_index_cached(&p, keyring.as_ref(), &cache).unwrap()
        });
        println!(
            "  through the cache: first read {:.1} ms, then {:.2} ms",
            miss * 1e3,
            hit * 1e3
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}
