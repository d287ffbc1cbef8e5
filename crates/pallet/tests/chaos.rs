//! Kill -9 at any moment: `pallet pkg build` and `pallet image build` are killed with SIGKILL at
//! random moments on one shared cache and output folder. After every kill, whatever output
//! exists is complete (packages and the index verify), and a rerun succeeds with the clean
//! build's exact bytes and leaves no temporary file behind. The count of kills and of corrupt
//! states is printed.

mod common;

use std::fs;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

/// A small deterministic generator, seeded per run: which moments are hit changes from run to
/// run, and a failure prints the seed.
struct Lcg(u64);

impl Lcg {
    fn below(&mut self, n: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 33) % n.max(1)
    }
}

fn seed() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
        ^ u64::from(std::process::id())
}

/// Start `args`, kill it after `after`, and wait for it.
fn kill_after(args: &[&str], cwd: &Path, after: Duration) -> bool {
    let mut c = Command::new(pallet())
        .args(args)
        .current_dir(cwd)
        .env("SOURCE_DATE_EPOCH", "1700000000")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(after);
    let killed = matches!(c.try_wait(), Ok(None));
    let _ = c.kill();
    let _ = c.wait();
    killed
}

fn temporaries(dir: &Path) -> Vec<String> {
    let mut out = vec![];
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            let name = e.file_name().to_string_lossy().into_owned();
            if name.starts_with(".pallet-tmp.") || name.contains(".tmp") {
                out.push(p.display().to_string());
            } else if p.is_dir() {
                stack.push(p);
            }
        }
    }
    out
}

#[test]
fn pkg_build_survives_kill_9_at_any_moment() {
    if !have("bwrap") {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let d = t.path();
    let o = run(&["keygen", "--bits", "2048", "k.rsa"], d, &[]);
    assert!(o.status.success(), "{}", text(&o));
    // Enough files that assembly, signing and indexing each take a moment.
    fs::write(
        d.join("r.yaml"),
        "package:\n  name: chaos\n  version: 1.0.0\n  epoch: 0\n  description: d\n  copyright:\n    - license: MIT\npipeline:\n  - runs: |\n      mkdir -p ${{targets.destdir}}/usr/share/chaos\n      i=0; while [ $i -lt 400 ]; do head -c 4096 /dev/zero | tr '\\0' x > ${{targets.destdir}}/usr/share/chaos/f$i; i=$((i+1)); done\nsubpackages:\n  - name: chaos-doc\n    pipeline:\n      - runs: mkdir -p ${{targets.contextdir}}/usr/share/doc && echo d > ${{targets.contextdir}}/usr/share/doc/x\n",
    )
    .unwrap();
    let args = [
        "pkg",
        "build",
        "--bootstrap",
        "r.yaml",
        "--arch",
        "x86_64",
        "--signing-key",
        "k.rsa",
        "--out-dir",
        "out",
    ];
    let start = Instant::now();
    let o = run(&args, d, &[("SOURCE_DATE_EPOCH", "1700000000")]);
    assert!(o.status.success(), "{}", text(&o));
    let span = start.elapsed().as_millis() as u64;
    let clean: Vec<Vec<u8>> = ["chaos-1.0.0-r0.apk", "chaos-doc-1.0.0-r0.apk"]
        .iter()
        .map(|f| fs::read(d.join("out/x86_64").join(f)).unwrap())
        .collect();
    let seed = seed();
    let mut rng = Lcg(seed);
    let (mut kills, mut corrupt, mut wrong) = (0, 0, 0);
    for i in 0..12 {
        if i % 3 == 0 {
            let _ = fs::remove_dir_all(d.join("out"));
        }
        if kill_after(&args, d, Duration::from_millis(rng.below(span + 1))) {
            kills += 1;
        }
        // Whatever is there now must be whole: every package and the index verify.
        let dir = d.join("out/x86_64");
        let files: Vec<String> = fs::read_dir(&dir)
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.path())
            .filter(|p| {
                let n = p.file_name().unwrap().to_string_lossy();
                n.ends_with(".apk") || n == "APKINDEX.tar.gz"
            })
            .map(|p| p.display().to_string())
            .collect();
        if !files.is_empty() {
            let mut a = vec!["verify", "--keyring", "k.rsa.pub"];
            a.extend(files.iter().map(String::as_str));
            let o = run(&a, d, &[]);
            if !o.status.success() {
                corrupt += 1;
                eprintln!("seed {seed}, kill {i}: {}", text(&o));
            }
        }
        let o = run(&args, d, &[("SOURCE_DATE_EPOCH", "1700000000")]);
        let same = ["chaos-1.0.0-r0.apk", "chaos-doc-1.0.0-r0.apk"]
            .iter()
            .zip(&clean)
            .all(|(f, c)| fs::read(dir.join(f)).ok().as_ref() == Some(c));
        if !o.status.success() || !same {
            wrong += 1;
            eprintln!("seed {seed}, rerun {i}: {}", text(&o));
        }
    }
    let left = temporaries(&d.join("out"));
    println!(
        "pkg build: {kills} kills in 12 tries (clean build {span} ms, seed {seed}): {corrupt} corrupt states, {wrong} wrong reruns, {} temporaries left",
        left.len()
    );
    assert_eq!((corrupt, wrong), (0, 0), "seed {seed}");
    assert!(left.is_empty(), "{left:?}");
}

#[test]
fn image_build_survives_kill_9_at_any_moment() {
    let Some(s) = shared() else { return };
    let a = s.join("fixtures/alpine-3.19");
    let t = tempfile::tempdir().unwrap();
    let d = t.path();
    fs::write(
        d.join("c.yaml"),
        format!(
            "contents:\n  repositories:\n    - {}\n  keyring:\n{}  packages: [alpine-base, openssl]\narchs: [x86_64]\n",
            a.display(),
            keyring_yaml(&a.join("keys"))
        ),
    )
    .unwrap();
    let args = |out: &str| {
        vec![
            "image".to_string(),
            "build".into(),
            "c.yaml".into(),
            "k:1".into(),
            out.into(),
            "--cache-dir".into(),
            "cache".into(),
            "--sbom=false".into(),
        ]
    };
    let clean_args = args("clean.tar");
    let clean_refs: Vec<&str> = clean_args.iter().map(String::as_str).collect();
    let start = Instant::now();
    let o = run(&clean_refs, d, &[("SOURCE_DATE_EPOCH", "1700000000")]);
    assert!(o.status.success(), "{}", text(&o));
    let span = start.elapsed().as_millis() as u64;
    let clean = fs::read(d.join("clean.tar")).unwrap();
    let seed = seed();
    let mut rng = Lcg(seed);
    let (mut kills, mut partial, mut wrong) = (0, 0, 0);
    let out_args = args("o.tar");
    let out_refs: Vec<&str> = out_args.iter().map(String::as_str).collect();
    for i in 0..12 {
        let _ = fs::remove_file(d.join("o.tar"));
        if i % 3 == 0 {
            let _ = fs::remove_dir_all(d.join("cache"));
        }
        if kill_after(&out_refs, d, Duration::from_millis(rng.below(span + 1))) {
            kills += 1;
        }
        if let Ok(b) = fs::read(d.join("o.tar"))
            && b != clean
        {
            partial += 1;
        }
        let o = run(&out_refs, d, &[("SOURCE_DATE_EPOCH", "1700000000")]);
        if !o.status.success() || fs::read(d.join("o.tar")).ok() != Some(clean.clone()) {
            wrong += 1;
            eprintln!("seed {seed}, rerun {i}: {}", text(&o));
        }
    }
    let left = temporaries(d);
    println!(
        "image build: {kills} kills in 12 tries (clean build {span} ms, seed {seed}): {partial} partial outputs, {wrong} wrong reruns, {} temporaries left",
        left.len()
    );
    assert_eq!((partial, wrong), (0, 0), "seed {seed}");
    assert!(left.is_empty(), "{left:?}");
}
