//! End to end for the APK format commands, on real packages made by others and on packages
//! pallet makes itself.

mod common;

use std::fs;

use common::*;

#[test]
fn verify_reports_each_file() {
    let Some(s) = shared() else { return };
    let a = s.join("fixtures/alpine-3.19");
    let t = tempfile::tempdir().unwrap();
    let good = a.join("x86_64/zlib-1.3.1-r0.apk");
    let bad = t.path().join("bad.apk");
    let mut b = fs::read(&good).unwrap();
    let n = b.len();
    b[n - 2000] ^= 1;
    fs::write(&bad, b).unwrap();
    let o = run(
        &[
            "verify",
            "--keyring",
            a.join("keys").to_str().unwrap(),
            good.to_str().unwrap(),
            bad.to_str().unwrap(),
            a.join("x86_64/APKINDEX.tar.gz").to_str().unwrap(),
        ],
        t.path(),
        &[],
    );
    let out = text(&o);
    assert!(!o.status.success());
    assert!(out.contains("zlib-1.3.1-r0.apk: OK"), "{out}");
    assert!(out.contains("APKINDEX.tar.gz: OK"), "{out}");
    assert!(
        out.lines()
            .any(|l| l.starts_with(bad.to_str().unwrap()) && !l.ends_with(": OK")),
        "{out}"
    );
    let o = run(
        &[
            "verify",
            "--keyring",
            t.path().to_str().unwrap(),
            good.to_str().unwrap(),
        ],
        t.path(),
        &[],
    );
    assert!(!o.status.success());
    assert!(text(&o).contains(": UNTRUSTED"), "{}", text(&o));
}

#[test]
fn index_reproduces_alpine() {
    let Some(s) = shared() else { return };
    let a = s.join("fixtures/alpine-3.19/x86_64");
    let t = tempfile::tempdir().unwrap();
    let out = t.path().join("APKINDEX.tar.gz");
    let mut args = vec!["index".to_string(), "-o".into(), out.display().to_string()];
    let mut apks: Vec<String> = fs::read_dir(&a)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "apk"))
        .map(|p| p.display().to_string())
        .collect();
    apks.sort();
    args.extend(apks);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let o = run(&args, t.path(), &[]);
    assert!(o.status.success(), "{}", text(&o));
    let ours = pallet_index_records(&out);
    let theirs = pallet_index_records(&a.join("APKINDEX.tar.gz"));
    assert_eq!(ours.len(), 100);
    for (key, rec) in &theirs {
        let mine = ours.get(key).unwrap_or_else(|| panic!("{key:?} missing"));
        for f in [
            'C', 'S', 'I', 'D', 'p', 'i', 'k', 'o', 'L', 'A', 'T', 'U', 'm', 'c',
        ] {
            let mut x = rec.get(&f).cloned().unwrap_or_default();
            let mut y = mine.get(&f).cloned().unwrap_or_default();
            if "Dpi".contains(f) {
                x.sort();
                y.sort();
            }
            assert_eq!(x, y, "{key:?} field {f}");
        }
    }
}

type Records =
    std::collections::BTreeMap<(String, String), std::collections::BTreeMap<char, Vec<String>>>;

/// The index text as records of field → values, independent of pallet's own parser.
fn pallet_index_records(p: &std::path::Path) -> Records {
    use std::io::Read;
    let mut d = flate2::read::MultiGzDecoder::new(fs::File::open(p).unwrap());
    let mut raw = vec![];
    d.read_to_end(&mut raw).unwrap();
    let mut ar = tar::Archive::new(&raw[..]);
    let mut text = String::new();
    for e in ar.entries().unwrap() {
        let mut e = e.unwrap();
        if e.path().unwrap().to_str() == Some("APKINDEX") {
            e.read_to_string(&mut text).unwrap();
        }
    }
    let mut out = Records::new();
    for block in text.trim().split("\n\n") {
        let mut r: std::collections::BTreeMap<char, Vec<String>> = Default::default();
        for l in block.lines() {
            let (k, v) = l.split_at(2);
            r.entry(k.chars().next().unwrap())
                .or_default()
                .extend(v.split(' ').map(String::from));
        }
        let key = (r[&'P'][0].clone(), r[&'V'][0].clone());
        out.insert(key, r);
    }
    out
}

#[test]
fn keygen_mkpkg_sign_index_verify_offline() {
    let t = tempfile::tempdir().unwrap();
    let d = t.path();
    let ok = |o: std::process::Output| assert!(o.status.success(), "{}", text(&o));
    ok(run(&["keygen", "--bits", "2048", "k.rsa"], d, &[]));
    assert!(
        fs::read_to_string(d.join("k.rsa"))
            .unwrap()
            .contains("BEGIN RSA PRIVATE KEY")
    );
    assert!(
        fs::read_to_string(d.join("k.rsa.pub"))
            .unwrap()
            .contains("BEGIN PUBLIC KEY")
    );
    fs::create_dir_all(d.join("root/usr/bin")).unwrap();
    fs::write(d.join("root/usr/bin/hello"), "#!/bin/sh\necho hi\n").unwrap();
    fs::create_dir_all(d.join("repo/x86_64")).unwrap();
    let mk = |out: &str, env: &[(&str, &str)]| {
        run(
            &[
                "mkpkg",
                "--info",
                "name=hello",
                "--info",
                "version=1.0-r0",
                "--info",
                "arch=x86_64",
                "--info",
                "depend=busybox",
                "--files",
                "root",
                "-o",
                out,
                "--signing-key",
                "k.rsa",
            ],
            d,
            env,
        )
    };
    ok(mk(
        "repo/x86_64/hello-1.0-r0.apk",
        &[("SOURCE_DATE_EPOCH", "1700000000"), ("TZ", "UTC")],
    ));
    ok(mk(
        "again.apk",
        &[("SOURCE_DATE_EPOCH", "1700000000"), ("TZ", "Asia/Tokyo")],
    ));
    assert_eq!(
        fs::read(d.join("repo/x86_64/hello-1.0-r0.apk")).unwrap(),
        fs::read(d.join("again.apk")).unwrap()
    );
    ok(run(
        &[
            "index",
            "-o",
            "repo/x86_64/APKINDEX.tar.gz",
            "--signing-key",
            "k.rsa",
            "repo/x86_64/hello-1.0-r0.apk",
        ],
        d,
        &[],
    ));
    ok(run(
        &[
            "verify",
            "--keyring",
            "k.rsa.pub",
            "repo/x86_64/hello-1.0-r0.apk",
            "repo/x86_64/APKINDEX.tar.gz",
        ],
        d,
        &[],
    ));
    // Re-signing with another key: the old keyring no longer trusts it, the new one does.
    ok(run(&["keygen", "--bits", "2048", "other.rsa"], d, &[]));
    ok(run(
        &["sign", "--signing-key", "other.rsa", "again.apk"],
        d,
        &[],
    ));
    assert!(
        !run(&["verify", "--keyring", "k.rsa.pub", "again.apk"], d, &[])
            .status
            .success()
    );
    ok(run(
        &["verify", "--keyring", "other.rsa.pub", "again.apk"],
        d,
        &[],
    ));
    let o = run(&["info", "--json", "again.apk"], d, &[]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["name"], "hello");
    assert_eq!(v["depends"][0], "busybox");
    assert!(v["files"].to_string().contains("usr/bin/hello"));
    let o = run(&["version", "-t", "1.2.10-r0", "1.2.9-r3"], d, &[]);
    assert_eq!(String::from_utf8_lossy(&o.stdout).trim(), ">");
    // An unreadable signing key is a clear error.
    let o = run(
        &["sign", "--signing-key", "missing.rsa", "again.apk"],
        d,
        &[],
    );
    assert!(!o.status.success());
    assert!(text(&o).contains("missing.rsa"), "{}", text(&o));
}
