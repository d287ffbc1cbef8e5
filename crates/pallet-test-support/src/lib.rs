//! What the workspace's tests and benchmarks share: where the real fixtures made by others
//! are (`../shared` beside the checkout, or `$PALLET_SHARED`), and a clear word when they are
//! absent, so that no test passes silently without them.

pub mod buildgrid;

use std::path::{Path, PathBuf};

/// The shared folder, or `None` after printing `SKIPPED: …` when it (or `sub`) is absent.
pub fn shared_with(sub: &str) -> Option<PathBuf> {
    let p = std::env::var_os("PALLET_SHARED")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared"));
    if p.join(sub).is_dir() {
        Some(p)
    } else {
        eprintln!(
            "SKIPPED: shared {sub} not found at {} (set PALLET_SHARED)",
            p.display()
        );
        None
    }
}

/// The shared folder when its `fixtures` are there.
pub fn shared() -> Option<PathBuf> {
    shared_with("fixtures")
}

/// A workspace of `n` melange recipes shaped like wolfi-os, for plan tests and benchmarks:
/// flat `pkgN.yaml` files, each with `-dev` and `-doc` subpackages, built with `fetch`,
/// `autoconf/*`-style steps and `split/*` pipelines, needing `build-base` and `busybox` from
/// outside and a few `-dev` packages of earlier recipes (most often of the first fifty, as
/// wolfi's core libraries are), plus a pair that needs each other and one that needs itself.
/// `seed` picks the edges.
pub fn synthetic_workspace(dir: &Path, n: usize, seed: u64) {
    let mut state = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    let mut next = move |m: usize| -> usize {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((state >> 33) as usize) % m.max(1)
    };
    for i in 0..n {
        let mut needs = vec!["build-base".to_string(), "busybox".to_string()];
        if i > 0 {
            for _ in 0..next(7) {
                let j = if next(2) == 0 {
                    next(i.min(50))
                } else {
                    next(i)
                };
                let d = format!("pkg{j}-dev");
                if !needs.contains(&d) {
                    needs.push(d);
                }
            }
        }
        // pkg10 and pkg11 need each other (a cycle); pkg20 needs its own older copy.
        if i == 10 {
            needs.push("pkg11".into());
        }
        if i == 11 {
            needs.push("pkg10".into());
        }
        if i == 20 {
            needs.push("pkg20".into());
        }
        let env: String = needs.iter().map(|d| format!("      - {d}\n")).collect();
        let text = format!(
            "package:\n  name: pkg{i}\n  version: 1.{i}.0\n  epoch: {e}\n  description: synthetic package {i}\n  copyright:\n    - license: MIT\n  dependencies:\n    provides:\n      - so:libpkg{i}.so.1\nenvironment:\n  contents:\n    packages:\n{env}pipeline:\n  - uses: fetch\n    with:\n      uri: https://example.invalid/pkg{i}-${{{{package.version}}}}.tar.gz\n      expected-sha256: {zero}\n  - runs: |\n      ./configure --prefix=/usr\n      make -j$(nproc)\n      make install DESTDIR=${{{{targets.destdir}}}}\n  - uses: strip\nsubpackages:\n  - name: pkg{i}-dev\n    pipeline:\n      - uses: split/dev\n    dependencies:\n      runtime:\n        - pkg{i}\n  - name: pkg{i}-doc\n    pipeline:\n      - uses: split/manpages\nupdate:\n  enabled: true\n",
            e = i % 3,
            zero = "0".repeat(64),
        );
        std::fs::write(dir.join(format!("pkg{i}.yaml")), text).expect("write a recipe");
    }
}

/// Run `git ARGS` in `dir` with a fixed identity and no user configuration, so commits work
/// on any machine and give the same kind of checkout everywhere. The trimmed stdout, or what
/// git printed when it failed or could not start (no git installed).
pub fn git(dir: &Path, args: &[&str]) -> Result<String, String> {
    let o = std::process::Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(args)
        .env("GIT_AUTHOR_NAME", "t")
        .env("GIT_AUTHOR_EMAIL", "t@example.invalid")
        .env("GIT_COMMITTER_NAME", "t")
        .env("GIT_COMMITTER_EMAIL", "t@example.invalid")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .output()
        .map_err(|e| format!("git {args:?}: {e}"))?;
    if o.status.success() {
        Ok(String::from_utf8_lossy(&o.stdout).trim().to_string())
    } else {
        Err(format!(
            "git {args:?}: {}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        ))
    }
}
