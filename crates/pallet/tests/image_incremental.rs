//! The image build's caches never change what it writes: a cold build, a warm one, a build in
//! which one package changed since the cache was filled, and builds on one thread or two, of
//! the same final inputs, give the same bytes; and a build whose repository changed is not
//! taken for "nothing changed".

mod common;

use std::fs;
use std::path::Path;
use std::process::Command;

use common::*;

const EPOCH: (&str, &str) = ("SOURCE_DATE_EPOCH", "1700000000");

/// A repository in `repo/` holding every Alpine fixture package (as links), indexed and signed
/// with `k.rsa`.
fn index(d: &Path) {
    let mut args = vec![
        "index".to_string(),
        "-o".into(),
        d.join("repo/x86_64/APKINDEX.tar.gz").display().to_string(),
        "--signing-key".into(),
        d.join("k.rsa").display().to_string(),
    ];
    let mut apks: Vec<String> = fs::read_dir(d.join("repo/x86_64"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "apk"))
        .map(|p| p.display().to_string())
        .collect();
    apks.sort();
    args.extend(apks);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let o = run(&args, d, &[]);
    assert!(o.status.success(), "{}", text(&o));
}

/// openssh at `-r1` instead of `-r0`: its files plus one more, its metadata otherwise the same.
fn bump_openssh(d: &Path, alpine: &Path) {
    let old = fs::read_dir(alpine.join("x86_64"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| {
            let n = p.file_name().unwrap().to_string_lossy();
            n.starts_with("openssh-") && n.as_bytes().get(8).is_some_and(u8::is_ascii_digit)
        })
        .expect("the fixture has openssh");
    fs::remove_file(d.join("repo/x86_64").join(old.file_name().unwrap())).unwrap();
    let files = d.join("ssh-files");
    fs::create_dir_all(&files).unwrap();
    let st = Command::new("tar")
        .arg("-xzf")
        .arg(&old)
        .arg("-C")
        .arg(&files)
        .args(["--exclude=.PKGINFO", "--exclude=.SIGN*"])
        .output()
        .unwrap();
    assert!(files.join("usr").is_dir(), "{st:?}");
    fs::create_dir_all(files.join("usr/share/doc/openssh")).unwrap();
    fs::write(files.join("usr/share/doc/openssh/NEWS"), "r1\n").unwrap();
    let info = pkginfo(&old);
    let mut args: Vec<String> = vec!["mkpkg".into()];
    let mut version = String::new();
    for line in info.lines() {
        let Some((k, v)) = line.split_once(" = ") else {
            continue;
        };
        match k {
            "pkgver" => version = v.to_string(),
            "pkgname" | "arch" | "pkgdesc" | "url" | "license" | "origin" | "maintainer"
            | "depend" | "provides" => {
                args.push("--info".into());
                args.push(format!("{k}={v}"));
            }
            _ => {}
        }
    }
    let new = version.replace("-r0", "-r1");
    assert_ne!(new, version);
    let out = d.join(format!("repo/x86_64/openssh-{new}.apk"));
    args.extend([
        "--info".into(),
        format!("version={new}"),
        "--files".into(),
        files.display().to_string(),
        "-o".into(),
        out.display().to_string(),
        "--signing-key".into(),
        d.join("k.rsa").display().to_string(),
    ]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let o = run(&args, d, &[]);
    assert!(o.status.success(), "{}", text(&o));
    index(d);
}

/// Build `cfg` into `out` with `cache`, on `threads` threads; returns the printed digest.
fn build(d: &Path, cfg: &str, out: &str, cache: &str, threads: &str) -> String {
    let o = run(
        &[
            "image",
            "build",
            cfg,
            "inc:1",
            out,
            "--cache-dir",
            cache,
            "--sbom=false",
        ],
        d,
        &[EPOCH, ("RAYON_NUM_THREADS", threads)],
    );
    assert!(o.status.success(), "{}", text(&o));
    String::from_utf8_lossy(&o.stdout).trim().to_string()
}

fn same_inputs_same_bytes(extra: &str) {
    let Some(s) = shared() else { return };
    let alpine = s.join("fixtures/alpine-3.19");
    let t = tempfile::tempdir().unwrap();
    let d = t.path();
    let o = run(&["keygen", "k.rsa"], d, &[]);
    assert!(o.status.success(), "{}", text(&o));
    fs::create_dir_all(d.join("repo/x86_64")).unwrap();
    for e in fs::read_dir(alpine.join("x86_64")).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|x| x == "apk") {
            std::os::unix::fs::symlink(&p, d.join("repo/x86_64").join(p.file_name().unwrap()))
                .unwrap();
        }
    }
    index(d);
    fs::write(
        d.join("c.yaml"),
        format!(
            "contents:\n  repositories: [{}]\n  keyring: [{}]\n  packages: [alpine-base, openssh, openssh-server, libcrypto3, wpa_supplicant]\n{extra}archs: [x86_64]\n",
            d.join("repo").display(),
            d.join("k.rsa.pub").display()
        ),
    )
    .unwrap();
    // The old repository fills the cache; then openssh changes and the same command runs again.
    let old = build(d, "c.yaml", "out.tar", "cache", "2");
    let old_bytes = fs::read(d.join("out.tar")).unwrap();
    bump_openssh(d, &alpine);
    let changed = build(d, "c.yaml", "out.tar", "cache", "2");
    assert_ne!(
        old, changed,
        "the changed repository was taken for nothing changed"
    );
    assert_ne!(fs::read(d.join("out.tar")).unwrap(), old_bytes);
    // Cold on one thread, cold on two, and warm: the same bytes as the incremental build.
    let cold1 = build(d, "c.yaml", "cold1.tar", "cache1", "1");
    let cold2 = build(d, "c.yaml", "cold2.tar", "cache2", "2");
    let warm = build(d, "c.yaml", "warm.tar", "cache1", "2");
    assert_eq!(cold1, changed);
    assert_eq!(cold2, changed);
    assert_eq!(warm, changed);
    let bytes = fs::read(d.join("out.tar")).unwrap();
    for f in ["cold1.tar", "cold2.tar", "warm.tar"] {
        assert!(fs::read(d.join(f)).unwrap() == bytes, "{f} differs");
    }
    // Nothing changed: the same digest, the output left as it is.
    let stamp = || {
        use std::os::unix::fs::MetadataExt;
        let m = fs::metadata(d.join("out.tar")).unwrap();
        (m.ino(), m.mtime(), m.mtime_nsec())
    };
    let before = stamp();
    assert_eq!(build(d, "c.yaml", "out.tar", "cache", "2"), changed);
    assert_eq!(stamp(), before);
    // The layer is still a tar every reader takes: every path once, parents first.
    check_layers(d, "out.tar");
}

/// Every layer of a docker-archive tarball lists each path once and each entry's parent
/// directory before it (or in a layer below it).
fn check_layers(d: &Path, tarball: &str) {
    let x = d.join("x");
    fs::create_dir_all(&x).unwrap();
    let st = Command::new("tar")
        .arg("-xf")
        .arg(d.join(tarball))
        .arg("-C")
        .arg(&x)
        .status()
        .unwrap();
    assert!(st.success());
    let manifest: serde_json::Value =
        serde_json::from_slice(&fs::read(x.join("manifest.json")).unwrap()).unwrap();
    let mut below = std::collections::BTreeSet::new();
    for l in manifest[0]["Layers"].as_array().unwrap() {
        let o = Command::new("tar")
            .arg("-tzf")
            .arg(x.join(l.as_str().unwrap()))
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let mut seen = std::collections::BTreeSet::new();
        for name in String::from_utf8_lossy(&o.stdout).lines() {
            let p = name.trim_end_matches('/').to_string();
            if let Some((parent, _)) = p.rsplit_once('/') {
                assert!(
                    seen.contains(parent) || below.contains(parent),
                    "{p} comes before its parent"
                );
            }
            assert!(seen.insert(p.clone()), "{p} twice in one layer");
        }
        below.extend(seen);
    }
}

#[test]
fn cold_warm_changed_and_thread_counts_give_the_same_image() {
    same_inputs_same_bytes("");
}

#[test]
fn the_same_holds_for_layering_by_origin() {
    same_inputs_same_bytes("layering:\n  strategy: origin\n  budget: 4\n");
}
