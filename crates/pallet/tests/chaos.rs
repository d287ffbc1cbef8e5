//! Kill -9 at any moment: `pallet pkg build`, `pallet image build` and the workspace build
//! `pallet build` are killed with SIGKILL at random moments (100 in all) on one shared cache
//! and output folder. After every kill, whatever output
//! exists is complete (packages and the index verify), and a rerun succeeds with the clean
//! build's exact bytes and leaves no temporary file behind. The count of kills and of corrupt
//! states is printed.

mod common;

use std::fs;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

/// Kill moments per test: pkg and image builds 25 each, the workspace build 50.
const TRIES: usize = 25;

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

/// Every package and index in `dir` (temporaries aside: a killed writer's are not outputs)
/// verifies against `key`.
fn verify_outputs(cwd: &Path, dir: &Path, key: &str) -> Result<(), String> {
    let files: Vec<String> = fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            let n = p.file_name().unwrap().to_string_lossy();
            !n.starts_with(".pallet-tmp.") && (n.ends_with(".apk") || n == "APKINDEX.tar.gz")
        })
        .map(|p| p.display().to_string())
        .collect();
    if files.is_empty() || !cwd.join(key).exists() {
        return Ok(());
    }
    let mut a = vec!["verify", "--keyring", key];
    a.extend(files.iter().map(String::as_str));
    let o = run(&a, cwd, &[]);
    if o.status.success() {
        Ok(())
    } else {
        Err(text(&o))
    }
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
    for i in 0..TRIES {
        if i % 3 == 0 {
            let _ = fs::remove_dir_all(d.join("out"));
        }
        if kill_after(&args, d, Duration::from_millis(rng.below(span + 1))) {
            kills += 1;
        }
        // Whatever is there now must be whole: every package and the index verify.
        let dir = d.join("out/x86_64");
        if let Err(e) = verify_outputs(d, &dir, "k.rsa.pub") {
            corrupt += 1;
            eprintln!("seed {seed}, kill {i}: {e}");
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
        "pkg build: {kills} kills in {TRIES} tries (clean build {span} ms, seed {seed}): {corrupt} corrupt states, {wrong} wrong reruns, {} temporaries left",
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
    for i in 0..TRIES {
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
        "image build: {kills} kills in {TRIES} tries (clean build {span} ms, seed {seed}): {partial} partial outputs, {wrong} wrong reruns, {} temporaries left",
        left.len()
    );
    assert_eq!((partial, wrong), (0, 0), "seed {seed}");
    assert!(left.is_empty(), "{left:?}");
}

/// A workspace of bootstrap recipes (no repository needed) and an image made of them.
fn chaos_workspace(d: &Path) {
    let mut settings = String::from("recipes:\n");
    for (i, needs) in [(0, ""), (1, "c0"), (2, "c0"), (3, "c1")] {
        let env = if needs.is_empty() {
            String::new()
        } else {
            format!("environment:\n  contents:\n    packages: [{needs}]\n")
        };
        fs::write(
            d.join(format!("c{i}.yaml")),
            format!(
                "package:\n  name: c{i}\n  version: 1\n  epoch: 0\n  description: chaos\n  copyright: [{{license: MIT}}]\n{env}pipeline:\n  - runs: |\n      mkdir -p ${{{{targets.destdir}}}}/usr/share/c{i}\n      n=0; while [ $n -lt 200 ]; do echo $n-{i} > ${{{{targets.destdir}}}}/usr/share/c{i}/f$n; n=$((n+1)); done\n"
            ),
        )
        .unwrap();
        settings.push_str(&format!("  c{i}: {{bootstrap: true}}\n"));
    }
    fs::write(d.join("pallet.yaml"), settings).unwrap();
    fs::write(
        d.join("img.yaml"),
        "contents:\n  packages: [c3, c2]\narchs: [x86_64]\n",
    )
    .unwrap();
}

#[test]
fn workspace_build_survives_kill_9_at_any_moment() {
    if !have("bwrap") {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let d = &t.path().join("ws");
    fs::create_dir_all(d).unwrap();
    chaos_workspace(d);
    let args = ["build", "--arch", "x86_64", "--cache-dir", "../cache"];
    let start = Instant::now();
    let o = run(&args, d, &[("SOURCE_DATE_EPOCH", "1700000000")]);
    assert!(o.status.success(), "{}", text(&o));
    let span = start.elapsed().as_millis() as u64;
    let outputs = |d: &Path| {
        let mut m = tree_digests(&d.join("packages"), &["buildlogs"]);
        m.extend(tree_digests(&d.join("images"), &["buildlogs"]));
        m
    };
    let clean = outputs(d);
    assert!(clean.keys().any(|k| k.ends_with("img.tar")), "{clean:?}");
    // Each try does real work of one kind, and is killed within the time that kind takes: a
    // cold build (no cache, no outputs), a rebuild after a leaf recipe changed (one package
    // and the image), and outputs restored from the cache.
    let leaf = |on: bool| {
        let r = fs::read_to_string(d.join("c3.yaml")).unwrap();
        let r = if on {
            r.replace("-3 >", "-3x >")
        } else {
            r.replace("-3x >", "-3 >")
        };
        fs::write(d.join("c3.yaml"), r).unwrap();
    };
    let prepare = |kind: usize| match kind {
        0 => {
            let _ = fs::remove_dir_all(t.path().join("cache"));
            let _ = fs::remove_dir_all(d.join("packages"));
            let _ = fs::remove_dir_all(d.join("images"));
        }
        1 => leaf(true),
        _ => {
            let _ = fs::remove_dir_all(d.join("packages"));
            let _ = fs::remove_dir_all(d.join("images"));
        }
    };
    let mut spans = [span, 0, 0];
    for (kind, slot) in [(1, 1), (2, 2)] {
        prepare(kind);
        let s0 = Instant::now();
        let o = run(&args, d, &[("SOURCE_DATE_EPOCH", "1700000000")]);
        assert!(o.status.success(), "{}", text(&o));
        spans[slot] = s0.elapsed().as_millis() as u64;
        if kind == 1 {
            leaf(false);
            let o = run(&args, d, &[("SOURCE_DATE_EPOCH", "1700000000")]);
            assert!(o.status.success(), "{}", text(&o));
        }
    }
    let seed = seed();
    let mut rng = Lcg(seed);
    let (mut kills, mut corrupt, mut wrong) = (0, 0, 0);
    for i in 0..2 * TRIES {
        let kind = i % 3;
        prepare(kind);
        if kill_after(&args, d, Duration::from_millis(rng.below(spans[kind] + 1))) {
            kills += 1;
        }
        // What is there is whole: packages and index verify, every cache blob matches its
        // digest, the tarball (if any) is one the builds make.
        let dir = d.join("packages/x86_64");
        if let Err(e) = verify_outputs(d, &dir, "melange.rsa.pub") {
            corrupt += 1;
            eprintln!("seed {seed}, kill {i}: {e}");
        }
        for (name, sha) in tree_digests(
            &t.path().join("cache/workspace-v1/blobs"),
            &[".pallet-tmp."],
        ) {
            if !name.ends_with(&sha) {
                corrupt += 1;
                eprintln!("seed {seed}, kill {i}: cache blob {name} does not match its digest");
            }
        }
        if let Ok(b) = fs::read(d.join("images/img.tar")) {
            let tar_sha = sha256_hex(&b);
            if fs::read_dir(t.path().join("cache/workspace-v1/blobs")).is_err()
                || !tree_digests(&t.path().join("cache/workspace-v1/blobs"), &[])
                    .values()
                    .any(|v| *v == tar_sha)
            {
                corrupt += 1;
                eprintln!("seed {seed}, kill {i}: images/img.tar is not an image a build made");
            }
        }
        let o = run(&args, d, &[("SOURCE_DATE_EPOCH", "1700000000")]);
        // After the leaf changed, the outputs differ from the first clean build; when it is
        // the first recipe again, they must match it.
        let now = outputs(d);
        let expect_clean = !fs::read_to_string(d.join("c3.yaml"))
            .unwrap()
            .contains("-3x >");
        if !o.status.success() || (expect_clean && now != clean) {
            wrong += 1;
            let differ: Vec<&String> = now
                .keys()
                .chain(clean.keys())
                .filter(|k| now.get(*k) != clean.get(*k))
                .collect();
            eprintln!(
                "seed {seed}, rerun {i}: {}\ndiffering: {differ:?}",
                text(&o)
            );
        }
        if kind == 1 {
            leaf(false);
        }
    }
    let mut left = temporaries(&d.join("packages"));
    left.extend(temporaries(&d.join("images")));
    left.extend(temporaries(&t.path().join("cache/workspace-v1/keys")));
    left.extend(temporaries(&t.path().join("cache/workspace-v1/blobs")));
    left.extend(temporaries(&t.path().join("cache/workspace-v1/tmp")));
    println!(
        "workspace build: {kills} kills in {} tries (cold build {} ms, leaf rebuild {} ms, restore {} ms, seed {seed}): {corrupt} corrupt states, {wrong} wrong reruns, {} temporaries left",
        2 * TRIES,
        spans[0],
        spans[1],
        spans[2],
        left.len()
    );
    assert_eq!((corrupt, wrong), (0, 0), "seed {seed}");
    assert!(left.is_empty(), "{left:?}");
}
