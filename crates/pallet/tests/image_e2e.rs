//! End to end: `pallet image build` on real Alpine packages, read by skopeo, unpacked by umoci
//! and run by runc; reproducibility; SBOM validation; bad input.

mod common;

use std::fs;
use std::path::Path;
use std::process::Command;

use common::*;

fn alpine_config(dir: &Path, a: &Path, packages: &str, extra: &str) -> std::path::PathBuf {
    config_with_keys(dir, a, &a.join("keys"), packages, extra)
}

fn config_with_keys(
    dir: &Path,
    a: &Path,
    keys: &Path,
    packages: &str,
    extra: &str,
) -> std::path::PathBuf {
    let p = dir.join("c.yaml");
    fs::write(
        &p,
        format!(
            "contents:\n  repositories:\n    - {}\n  keyring:\n{}  packages: [{packages}]\n{extra}archs: [x86_64]\n",
            a.display(),
            keyring_yaml(keys)
        ),
    )
    .unwrap();
    p
}

#[test]
fn alpine_base_runs_under_runc_as_configured_user() {
    let Some(s) = shared() else { return };
    let a = s.join("fixtures/alpine-3.19");
    let t = tempfile::tempdir().unwrap();
    let cfg = alpine_config(
        t.path(),
        &a,
        "alpine-base",
        "accounts:\n  groups: [{groupname: app, gid: 10000}]\n  users: [{username: app, uid: 10000, gid: 10000}]\n  run-as: app\nentrypoint:\n  command: /bin/sh -c \"echo hello-from-pallet; id -u; cat /etc/apk/world | wc -l\"\n",
    );
    let cache = t.path().join("cache");
    let tar = t.path().join("img.tar");
    let o = run(
        &[
            "image",
            "build",
            cfg.to_str().unwrap(),
            "e2e/alpine:test",
            tar.to_str().unwrap(),
            "--cache-dir",
            cache.to_str().unwrap(),
            "--sbom-path",
            t.path().join("sbom").to_str().unwrap(),
        ],
        t.path(),
        &[],
    );
    assert!(o.status.success(), "{}", text(&o));
    let layout = t.path().join("layout");
    fs::create_dir(&layout).unwrap();
    let o = run(
        &[
            "image",
            "build",
            cfg.to_str().unwrap(),
            "e2e/alpine:test",
            layout.to_str().unwrap(),
            "--cache-dir",
            cache.to_str().unwrap(),
            "--sbom=false",
        ],
        t.path(),
        &[],
    );
    assert!(o.status.success(), "{}", text(&o));
    // The SBOM lists all 25 packages and passes the reference validator.
    let sbom = t.path().join("sbom/sbom-x86_64.spdx.json");
    let doc: serde_json::Value = serde_json::from_slice(&fs::read(&sbom).unwrap()).unwrap();
    let purls = doc["packages"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["externalRefs"].to_string().contains("pkg:apk/alpine/"))
        .count();
    assert_eq!(purls, 25, "alpine-base is 25 packages");
    if have("pyspdxtools") {
        let o = Command::new("pyspdxtools")
            .arg("-i")
            .arg(&sbom)
            .output()
            .unwrap();
        assert!(o.status.success(), "pyspdxtools: {}", text(&o));
    }
    if !(have("skopeo") && have("umoci") && have("runc")) {
        return;
    }
    for r in [
        format!("docker-archive:{}", tar.display()),
        format!("oci:{}:test", layout.display()),
    ] {
        let o = Command::new("skopeo")
            .args(["inspect", &r])
            .output()
            .unwrap();
        assert!(o.status.success(), "skopeo inspect {r}: {}", text(&o));
        assert!(String::from_utf8_lossy(&o.stdout).contains("\"Architecture\": \"amd64\""));
    }
    let out = run_bundle(&format!("{}:test", layout.display()), t.path(), "alpine");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines, ["hello-from-pallet", "10000", "25"], "{out}");
}

#[test]
fn same_digest_across_tz_umask_and_cwd() {
    let Some(s) = shared() else { return };
    let a = s.join("fixtures/alpine-3.19");
    let t = tempfile::tempdir().unwrap();
    let cfg = alpine_config(
        t.path(),
        &a,
        "busybox, alpine-baselayout",
        "entrypoint:\n  command: /bin/busybox\n",
    );
    let mut outs = vec![];
    for (i, (tz, umask)) in [("UTC", "022"), ("Asia/Tokyo", "077")].iter().enumerate() {
        let dir = t.path().join(format!("w{i}/deeper"));
        fs::create_dir_all(&dir).unwrap();
        let out = dir.join("i.tar");
        let script = format!(
            "umask {umask}; exec {} image build {} r:1 {} --cache-dir {} --sbom=false",
            pallet().display(),
            cfg.display(),
            out.display(),
            t.path().join(format!("cache{i}")).display()
        );
        let o = Command::new("sh")
            .args(["-c", &script])
            .current_dir(&dir)
            .env("TZ", tz)
            .env("SOURCE_DATE_EPOCH", "1700000000")
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", text(&o));
        outs.push(fs::read(out).unwrap());
    }
    assert!(outs[0] == outs[1], "the two tarballs differ");
}

#[test]
fn bad_input_fails_clearly_and_leaves_no_output() {
    let Some(s) = shared() else { return };
    let a = s.join("fixtures/alpine-3.19");
    let t = tempfile::tempdir().unwrap();
    let cases: Vec<(&str, String, &str)> = vec![
        ("unknown key", format!("contents:\n  repositories: [{}]\n  pakages: [busybox]\n", a.display()), "pakages"),
        ("unknown package", fs::read_to_string(alpine_config(t.path(), &a, "no-such-pkg", "")).unwrap(), "no-such-pkg (no such package)"),
        ("conflict", fs::read_to_string(alpine_config(t.path(), &a, "vlan, ifupdown-ng", "")).unwrap(), "breaks: ifupdown-ng-0.12.1-r4[!vlan]"),
        ("unreachable repository", "contents:\n  repositories: [/nonexistent/repo]\n  packages: [busybox]\narchs: [x86_64]\n".to_string(), "/nonexistent/repo"),
        ("bad signature", format!("contents:\n  repositories: [{}]\n  keyring: [{}]\n  packages: [busybox]\narchs: [x86_64]\n", a.display(), s.join("fixtures/wolfi/keys/wolfi-signing.rsa.pub").display()), "UNTRUSTED"),
    ];
    for (name, yaml, needle) in cases {
        let cfg = t.path().join("bad.yaml");
        fs::write(&cfg, yaml).unwrap();
        let out = t.path().join("out.tar");
        let o = run(
            &[
                "image",
                "build",
                cfg.to_str().unwrap(),
                "x:1",
                out.to_str().unwrap(),
                "--cache-dir",
                t.path().join("c").to_str().unwrap(),
            ],
            t.path(),
            &[],
        );
        assert!(!o.status.success(), "{name}: accepted");
        assert!(
            text(&o).contains(needle),
            "{name}: message lacks '{needle}': {}",
            text(&o)
        );
        assert!(!out.exists(), "{name}: left an output file");
        let leftovers: Vec<_> = fs::read_dir(t.path())
            .unwrap()
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().starts_with(".pallet-build"))
            .collect();
        assert!(leftovers.is_empty(), "{name}: left a work folder");
    }
    // A corrupted package in an otherwise valid repository.
    let repo = t.path().join("repo/x86_64");
    fs::create_dir_all(&repo).unwrap();
    for e in fs::read_dir(a.join("x86_64")).unwrap() {
        let e = e.unwrap();
        fs::copy(e.path(), repo.join(e.file_name())).unwrap();
    }
    let victim = repo.join("busybox-1.36.1-r15.apk");
    let mut b = fs::read(&victim).unwrap();
    let n = b.len();
    b[n / 2] ^= 0x40;
    fs::write(&victim, b).unwrap();
    let fresh = config_with_keys(
        t.path(),
        &t.path().join("repo"),
        &a.join("keys"),
        "busybox",
        "",
    );
    let out = t.path().join("out.tar");
    let o = run(
        &[
            "image",
            "build",
            fresh.to_str().unwrap(),
            "x:1",
            out.to_str().unwrap(),
            "--cache-dir",
            t.path().join("c2").to_str().unwrap(),
        ],
        t.path(),
        &[],
    );
    assert!(!o.status.success(), "corrupted package accepted");
    assert!(text(&o).contains("busybox-1.36.1-r15"), "{}", text(&o));
    assert!(!out.exists());
}

#[test]
fn corpus_configs_load() {
    let Some(s) = shared() else { return };
    let mut n = 0;
    let mut failures = vec![];
    for sub in ["corpus/apko/examples", "corpus/apko/images"] {
        let Ok(rd) = fs::read_dir(s.join(sub)) else {
            continue;
        };
        let mut files: Vec<_> = rd.filter_map(|e| e.ok()).map(|e| e.path()).collect();
        files.sort();
        for f in files
            .iter()
            .filter(|f| f.extension().is_some_and(|e| e == "yaml" || e == "yml"))
        {
            n += 1;
            // apko's own examples name includes relative to the repository root.
            let root = s.join("corpus/apko");
            let o = run(
                &[
                    "image",
                    "show-config",
                    f.to_str().unwrap(),
                    "--include-paths",
                    root.to_str().unwrap(),
                ],
                f.parent().unwrap(),
                &[],
            );
            if !o.status.success() {
                failures.push(format!(
                    "{}: {}",
                    f.file_name().unwrap().to_string_lossy(),
                    text(&o).lines().next().unwrap_or("")
                ));
            }
        }
    }
    eprintln!(
        "{n} corpus files; {} rejected:\n{}",
        failures.len(),
        failures.join("\n")
    );
    assert!(n > 50);
    // apko decodes with KnownFields(true) and its ImageAccounts has no `recursive`, so these
    // three old chainguard-images files are rejected by apko for the same reason.
    for f in &failures {
        assert!(
            f.contains("unknown field `recursive`"),
            "unexpected rejection: {f}"
        );
    }
    assert_eq!(failures.len(), 3, "{failures:?}");
}

#[test]
fn lock_then_build_exactly_the_locked_packages() {
    let Some(s) = shared() else { return };
    let a = s.join("fixtures/alpine-3.19");
    let t = tempfile::tempdir().unwrap();
    let cfg = alpine_config(
        t.path(),
        &a,
        "busybox, alpine-baselayout",
        "entrypoint:\n  command: /bin/busybox true\n",
    );
    let o = run(&["image", "lock", cfg.to_str().unwrap()], t.path(), &[]);
    assert!(o.status.success(), "{}", text(&o));
    let lock_path = t.path().join("c.lock.json");
    let lock: serde_json::Value = serde_json::from_slice(&fs::read(&lock_path).unwrap()).unwrap();
    assert_eq!(lock["version"], "v1");
    let pkgs = lock["contents"]["packages"].as_array().unwrap();
    let bb = pkgs.iter().find(|p| p["name"] == "busybox").unwrap();
    assert!(bb["checksum"].as_str().unwrap().starts_with("Q1"));
    assert!(
        bb["control"]["range"]
            .as_str()
            .unwrap()
            .starts_with("bytes=")
    );
    assert!(
        bb["data"]["checksum"]
            .as_str()
            .unwrap()
            .starts_with("sha256-")
    );
    let build = |extra: &[&str], out: &str| {
        let mut args = vec![
            "image",
            "build",
            cfg.to_str().unwrap(),
            "l:1",
            out,
            "--sbom=false",
            "--cache-dir",
            "cache",
        ];
        args.extend_from_slice(extra);
        run(&args, t.path(), &[("SOURCE_DATE_EPOCH", "1700000000")])
    };
    let o = build(&[], "resolved.tar");
    assert!(o.status.success(), "{}", text(&o));
    let o = build(
        &["--lockfile", lock_path.to_str().unwrap(), "--offline"],
        "locked.tar",
    );
    assert!(o.status.success(), "{}", text(&o));
    let same = fs::read(t.path().join("resolved.tar")).unwrap()
        == fs::read(t.path().join("locked.tar")).unwrap();
    assert!(same, "the locked build differs from the resolved one");
    // A config that changed since the lock was made is refused.
    fs::write(
        &cfg,
        fs::read_to_string(&cfg)
            .unwrap()
            .replace("busybox true", "busybox false"),
    )
    .unwrap();
    let o = build(&["--lockfile", lock_path.to_str().unwrap()], "stale.tar");
    assert!(!o.status.success());
    assert!(text(&o).contains("lock"), "{}", text(&o));
}

/// Packages pallet makes itself for two architectures, so this runs without ../shared.
fn two_arch_repo(d: &Path) {
    let ok = |o: std::process::Output| assert!(o.status.success(), "{}", text(&o));
    ok(run(&["keygen", "--bits", "2048", "k.rsa"], d, &[]));
    for arch in ["x86_64", "aarch64"] {
        let root = d.join(format!("root-{arch}"));
        fs::create_dir_all(root.join("etc")).unwrap();
        fs::write(root.join("etc/hello"), format!("hello from {arch}\n")).unwrap();
        fs::create_dir_all(d.join(format!("repo/{arch}"))).unwrap();
        if arch == "x86_64" && Path::new("/bin/busybox").exists() {
            fs::create_dir_all(root.join("bin")).unwrap();
            fs::copy("/bin/busybox", root.join("bin/busybox")).unwrap();
        }
        let out = format!("repo/{arch}/hello-1.0-r0.apk");
        ok(run(
            &[
                "mkpkg",
                "--info",
                "name=hello",
                "--info",
                "version=1.0-r0",
                "--info",
                &format!("arch={arch}"),
                "--files",
                root.to_str().unwrap(),
                "-o",
                &out,
                "--signing-key",
                "k.rsa",
            ],
            d,
            &[],
        ));
        ok(run(
            &[
                "index",
                "-o",
                &format!("repo/{arch}/APKINDEX.tar.gz"),
                "--signing-key",
                "k.rsa",
                &out,
            ],
            d,
            &[],
        ));
    }
}

#[test]
fn two_architectures_give_an_index_with_two_platforms() {
    let t = tempfile::tempdir().unwrap();
    let d = t.path();
    two_arch_repo(d);
    let cfg = d.join("multi.yaml");
    fs::write(
        &cfg,
        format!(
            "contents:\n  repositories: [{}]\n  keyring: [{}]\n  packages: [hello]\nentrypoint:\n  command: /bin/busybox cat /etc/hello\narchs: [amd64, arm64]\n",
            d.join("repo").display(),
            d.join("k.rsa.pub").display()
        ),
    )
    .unwrap();
    let layout = d.join("layout");
    fs::create_dir(&layout).unwrap();
    let o = run(
        &[
            "image",
            "build",
            cfg.to_str().unwrap(),
            "multi:1",
            layout.to_str().unwrap(),
            "--cache-dir",
            "c",
            "--sbom-path",
            "sbom",
        ],
        d,
        &[],
    );
    assert!(o.status.success(), "{}", text(&o));
    let index_json: serde_json::Value =
        serde_json::from_slice(&fs::read(layout.join("index.json")).unwrap()).unwrap();
    let idx_digest = index_json["manifests"][0]["digest"]
        .as_str()
        .unwrap()
        .trim_start_matches("sha256:")
        .to_string();
    let idx: serde_json::Value =
        serde_json::from_slice(&fs::read(layout.join("blobs/sha256").join(idx_digest)).unwrap())
            .unwrap();
    let plats: Vec<String> = idx["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            format!(
                "{}/{}",
                m["platform"]["architecture"].as_str().unwrap(),
                m["platform"]["variant"].as_str().unwrap_or("")
            )
        })
        .collect();
    assert_eq!(plats, ["amd64/", "arm64/v8"]);
    assert!(
        d.join("sbom/sbom-x86_64.spdx.json").exists()
            && d.join("sbom/sbom-aarch64.spdx.json").exists()
    );
    // The docker-archive holds one image per architecture, tagged TAG-ARCH.
    let tar = d.join("multi.tar");
    let o = run(
        &[
            "image",
            "build",
            cfg.to_str().unwrap(),
            "multi:1",
            tar.to_str().unwrap(),
            "--cache-dir",
            "c",
            "--sbom=false",
        ],
        d,
        &[],
    );
    assert!(o.status.success(), "{}", text(&o));
    if have("skopeo") {
        let o = Command::new("skopeo")
            .args(["inspect", "--raw", &format!("oci:{}:1", layout.display())])
            .output()
            .unwrap();
        assert!(
            o.status.success() && String::from_utf8_lossy(&o.stdout).contains("arm64"),
            "{}",
            text(&o)
        );
        let o = Command::new("skopeo")
            .args([
                "inspect",
                &format!("docker-archive:{}:multi:1-arm64", tar.display()),
            ])
            .output()
            .unwrap();
        assert!(
            o.status.success()
                && String::from_utf8_lossy(&o.stdout).contains("\"Architecture\": \"arm64\""),
            "{}",
            text(&o)
        );
    }
    if Path::new("/bin/busybox").exists() && have("umoci") && have("runc") {
        let out = run_bundle(&format!("{}:1-amd64", layout.display()), d, "multi");
        assert_eq!(out.trim(), "hello from x86_64");
    }
    // A package missing on one architecture is reported with that architecture.
    fs::remove_file(d.join("repo/aarch64/hello-1.0-r0.apk")).unwrap();
    let root = d.join("root-other");
    fs::create_dir_all(root.join("etc")).unwrap();
    fs::write(root.join("etc/other"), "x").unwrap();
    let ok = |o: std::process::Output| assert!(o.status.success(), "{}", text(&o));
    ok(run(
        &[
            "mkpkg",
            "--info",
            "name=other",
            "--info",
            "version=1.0-r0",
            "--info",
            "arch=aarch64",
            "--files",
            root.to_str().unwrap(),
            "-o",
            "repo/aarch64/other-1.0-r0.apk",
            "--signing-key",
            "k.rsa",
        ],
        d,
        &[],
    ));
    ok(run(
        &[
            "index",
            "-o",
            "repo/aarch64/APKINDEX.tar.gz",
            "--signing-key",
            "k.rsa",
            "repo/aarch64/other-1.0-r0.apk",
        ],
        d,
        &[],
    ));
    let o = run(
        &[
            "image",
            "build",
            cfg.to_str().unwrap(),
            "multi:1",
            "x.tar",
            "--cache-dir",
            "c",
        ],
        d,
        &[],
    );
    assert!(!o.status.success());
    assert!(
        text(&o).contains("hello (no such package)") && text(&o).contains("for aarch64"),
        "{}",
        text(&o)
    );
    assert!(!d.join("x.tar").exists());
}

/// A signed, indexed package whose data section holds `../escape`: the build must refuse it
/// and leave nothing behind.
#[test]
fn a_package_with_a_dotdot_entry_fails_the_build() {
    use pallet_apk_stream::tarw::{self, EntryHeader, Kind};
    use std::io::Write;
    let t = tempfile::tempdir().unwrap();
    let d = t.path();
    let ok = |o: std::process::Output| assert!(o.status.success(), "{}", text(&o));
    ok(run(&["keygen", "--bits", "2048", "k.rsa"], d, &[]));
    let gz = |b: &[u8]| {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        e.write_all(b).unwrap();
        e.finish().unwrap()
    };
    let h = |path: &'static str| EntryHeader {
        path,
        kind: Kind::File,
        mode: 0o644,
        uid: 0,
        gid: 0,
        uname: "root",
        gname: "root",
        mtime: 0,
        size: 0,
        link: "",
        dev_major: 0,
        dev_minor: 0,
        pax: &[],
    };
    let mut data = vec![];
    tarw::write_entry(&mut data, &h("../escape"), b"owned").unwrap();
    tarw::write_end(&mut data).unwrap();
    let data_gz = gz(&data);
    let datahash: String = {
        use sha2::Digest as _;
        sha2::Sha256::digest(&data_gz)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    };
    let mut control = vec![];
    let pkginfo = format!(
        "pkgname = evil\npkgver = 1.0-r0\narch = x86_64\nsize = 5\ndatahash = {datahash}\n"
    );
    tarw::write_entry(&mut control, &h(".PKGINFO"), pkginfo.as_bytes()).unwrap();
    let mut apk = gz(&control);
    apk.extend(data_gz);
    fs::create_dir_all(d.join("repo/x86_64")).unwrap();
    fs::write(d.join("repo/x86_64/evil-1.0-r0.apk"), apk).unwrap();
    ok(run(
        &[
            "sign",
            "--signing-key",
            "k.rsa",
            "repo/x86_64/evil-1.0-r0.apk",
        ],
        d,
        &[],
    ));
    ok(run(
        &[
            "index",
            "-o",
            "repo/x86_64/APKINDEX.tar.gz",
            "--signing-key",
            "k.rsa",
            "repo/x86_64/evil-1.0-r0.apk",
        ],
        d,
        &[],
    ));
    let cfg = d.join("c.yaml");
    fs::write(&cfg, format!("contents:\n  repositories: [{}]\n  keyring: [{}]\n  packages: [evil]\narchs: [x86_64]\n", d.join("repo").display(), d.join("k.rsa.pub").display())).unwrap();
    let o = run(
        &[
            "image",
            "build",
            cfg.to_str().unwrap(),
            "e:1",
            "out.tar",
            "--cache-dir",
            "c",
        ],
        d,
        &[],
    );
    assert!(!o.status.success());
    assert!(
        text(&o).contains("evil-1.0-r0") && text(&o).contains("../escape"),
        "{}",
        text(&o)
    );
    assert!(!d.join("out.tar").exists() && !t.path().parent().unwrap().join("escape").exists());
    // The lock file is the cache's own (one per folder, kept); no entry may be there.
    let cached: Vec<_> = fs::read_dir(d.join("c/apk-data-v2"))
        .map(|r| {
            r.flatten()
                .filter(|e| !e.file_name().to_string_lossy().ends_with(".lock"))
                .collect()
        })
        .unwrap_or_default();
    assert!(
        cached.is_empty(),
        "a refused package was cached: {cached:?}"
    );
}

#[test]
fn additional_certificates_join_the_bundle() {
    let Some(s) = shared() else { return };
    let a = s.join("fixtures/alpine-3.19");
    let t = tempfile::tempdir().unwrap();
    // A self-signed P-256 certificate made with `openssl req -x509` for this test: apko takes
    // only a real X.509 certificate.
    let cert = "-----BEGIN CERTIFICATE-----
MIIBdTCCARqgAwIBAgIBATAKBggqhkjOPQQDAjAYMRYwFAYDVQQDDA1wYWxsZXQg
dGVzdCBhMCAXDTI2MTIwMTIyNTUyOVoYDzIxMjYxMTA3MjI1NTI5WjAYMRYwFAYD
VQQDDA1wYWxsZXQgdGVzdCBhMFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEht0A
anVz/U+caamDhsK8skYatVXLSBflvHYylkfE9TudHzQLmpewGWHKpKLMk4Qprk16
n07pXWwLPWWraHNtWqNTMFEwHQYDVR0OBBYEFNpHZ0TNeMatjVEUID9meVAzmTU4
MB8GA1UdIwQYMBaAFNpHZ0TNeMatjVEUID9meVAzmTU4MA8GA1UdEwEB/wQFMAMB
Af8wCgYIKoZIzj0EAwIDSQAwRgIhAL7WVPWCG6G74JjHxDFjl5jyjZOxxrxPAjdT
tQvuC3TUAiEAoi66wfiXmK82AgrQeyVgsNthx3uDPE8Xho/9hViACa4=
-----END CERTIFICATE-----
";
    let extra = format!(
        "certificates:\n  additional:\n    - name: corp\n      content: |\n{}",
        cert.lines()
            .map(|l| format!("        {l}\n"))
            .collect::<String>()
    );
    let cfg = alpine_config(t.path(), &a, "ca-certificates-bundle, busybox", &extra);
    let out = t.path().join("rootfs.tar.gz");
    let o = run(
        &[
            "image",
            "build-minirootfs",
            cfg.to_str().unwrap(),
            out.to_str().unwrap(),
            "--build-arch",
            "x86_64",
            "--cache-dir",
            "c",
        ],
        t.path(),
        &[],
    );
    assert!(o.status.success(), "{}", text(&o));
    let x = t.path().join("x");
    fs::create_dir(&x).unwrap();
    assert!(
        Command::new("tar")
            .args(["xzf", out.to_str().unwrap(), "-C", x.to_str().unwrap()])
            .status()
            .unwrap()
            .success()
    );
    let bundle = fs::read_to_string(x.join("etc/ssl/certs/ca-certificates.crt")).unwrap();
    // Each added certificate is followed by a blank line, as apko writes it.
    assert!(
        bundle.ends_with(&format!("{cert}\n")) && bundle.len() > cert.len() * 10,
        "appended to the real bundle"
    );
    let own: Vec<String> = fs::read_dir(x.join("usr/local/share/ca-certificates"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        own,
        ["corp-3045e906ad880025f95b317fe4458fd86d3d6ce0675c2f70dd68e049af7c42da.crt"],
        "named by the SHA-256 of the DER"
    );
    // The bundle's sidecar, as `sha256sum -c` reads it.
    let o = Command::new("sha256sum")
        .args(["-c", ".ca-certificates.crt.sha256"])
        .current_dir(x.join("etc/ssl/certs"))
        .output()
        .unwrap();
    assert!(o.status.success(), "{o:?}");
    // Two certificates in one entry are refused.
    let twice = alpine_config(
        t.path(),
        &a,
        "busybox",
        &extra.replace(
            "content: |\n",
            &format!(
                "content: |\n{}",
                cert.lines()
                    .map(|l| format!("        {l}\n"))
                    .collect::<String>()
            ),
        ),
    );
    let o = run(
        &[
            "image",
            "build-minirootfs",
            twice.to_str().unwrap(),
            out.to_str().unwrap(),
            "--build-arch",
            "x86_64",
            "--cache-dir",
            "c",
        ],
        t.path(),
        &[],
    );
    assert!(
        !o.status.success() && text(&o).contains("exactly one PEM certificate"),
        "{}",
        text(&o)
    );
}

#[test]
fn layering_by_origin_gives_budget_plus_one_layers_and_still_runs() {
    let Some(s) = shared() else { return };
    let a = s.join("fixtures/alpine-3.19");
    let t = tempfile::tempdir().unwrap();
    let cfg = alpine_config(
        t.path(),
        &a,
        "alpine-base",
        "layering:\n  strategy: origin\n  budget: 3\nentrypoint:\n  command: /bin/sh -c \"echo layered; ls /etc/apk/world\"\n",
    );
    fs::create_dir(t.path().join("layout")).unwrap();
    let o = run(
        &[
            "image",
            "build",
            cfg.to_str().unwrap(),
            "l:1",
            "layout",
            "--cache-dir",
            "c",
            "--sbom=false",
        ],
        t.path(),
        &[],
    );
    assert!(o.status.success(), "{}", text(&o));
    let index: serde_json::Value =
        serde_json::from_slice(&fs::read(t.path().join("layout/index.json")).unwrap()).unwrap();
    let m = index["manifests"][1]["digest"]
        .as_str()
        .unwrap()
        .trim_start_matches("sha256:")
        .to_string();
    let manifest: serde_json::Value =
        serde_json::from_slice(&fs::read(t.path().join("layout/blobs/sha256").join(m)).unwrap())
            .unwrap();
    assert_eq!(
        manifest["layers"].as_array().unwrap().len(),
        4,
        "budget 3: two origin layers, an overflow layer and the top layer"
    );
    if have("umoci") && have("runc") {
        let out = run_bundle(
            &format!("{}:1", t.path().join("layout").display()),
            t.path(),
            "layered",
        );
        assert_eq!(
            out.lines().collect::<Vec<_>>(),
            ["layered", "/etc/apk/world"]
        );
    }
}

#[test]
fn an_unchanged_tarball_is_left_alone_and_a_damaged_one_rewritten() {
    let t = tempfile::tempdir().unwrap();
    let d = t.path();
    two_arch_repo(d);
    let cfg = d.join("one.yaml");
    fs::write(
        &cfg,
        format!("contents:\n  repositories: [{}]\n  keyring: [{}]\n  packages: [hello]\narchs: [x86_64]\n", d.join("repo").display(), d.join("k.rsa.pub").display()),
    )
    .unwrap();
    let build = || {
        run(
            &[
                "image",
                "build",
                cfg.to_str().unwrap(),
                "one:1",
                "out.tar",
                "--cache-dir",
                "c",
                "--sbom=false",
            ],
            d,
            &EPOCH_ENV,
        )
    };
    assert!(build().status.success());
    let good = fs::read(d.join("out.tar")).unwrap();
    let stamp = || {
        use std::os::unix::fs::MetadataExt;
        let m = fs::metadata(d.join("out.tar")).unwrap();
        (m.ino(), m.mtime_nsec())
    };
    let before = stamp();
    std::thread::sleep(std::time::Duration::from_millis(20));
    // A build killed after its outputs and record were complete, but before its work folder
    // was removed, leaves nothing to build: the no-op run removes that folder all the same
    // (a live build's folder is locked, and kept).
    let dead = d.join(".pallet-tmp.4194304.0.build");
    fs::create_dir_all(dead.join("blobs")).unwrap();
    assert!(build().status.success());
    assert_eq!(stamp(), before, "an unchanged output was rewritten");
    assert!(!dead.exists(), "a dead build's work folder was left");
    fs::write(d.join("out.tar"), b"damaged").unwrap();
    assert!(build().status.success());
    assert!(
        fs::read(d.join("out.tar")).unwrap() == good,
        "a damaged output was not rebuilt"
    );
}

const EPOCH_ENV: [(&str, &str); 1] = [("SOURCE_DATE_EPOCH", "1700000000")];

#[test]
fn alpine_base_resolves_to_apks_25_packages_and_everything_conflicts() {
    let Some(s) = shared() else { return };
    let a = s.join("fixtures/alpine-3.19");
    let t = tempfile::tempdir().unwrap();
    let cfg = alpine_config(t.path(), &a, "alpine-base", "");
    let o = run(
        &[
            "image",
            "show-packages",
            cfg.to_str().unwrap(),
            "--format",
            // apko's `name-version` preset is `NAME VERSION`; a template gives apk's spelling.
            "{{ .Name }}-{{ .Version }}",
            "--cache-dir",
            "c",
        ],
        t.path(),
        &[],
    );
    assert!(o.status.success(), "{}", text(&o));
    let mut got: Vec<String> = String::from_utf8_lossy(&o.stdout)
        .lines()
        .map(String::from)
        .collect();
    got.sort();
    let want = [
        "alpine-base-3.19.1-r0",
        "alpine-baselayout-3.4.3-r2",
        "alpine-baselayout-data-3.4.3-r2",
        "alpine-conf-3.17.2-r0",
        "alpine-keys-2.4-r1",
        "alpine-release-3.19.1-r0",
        "apk-tools-2.14.0-r5",
        "busybox-1.36.1-r15",
        "busybox-binsh-1.36.1-r15",
        "busybox-mdev-openrc-1.36.1-r15",
        "busybox-openrc-1.36.1-r15",
        "busybox-suid-1.36.1-r15",
        "ca-certificates-bundle-20230506-r0",
        "ifupdown-ng-0.12.1-r4",
        "libc-utils-0.7.2-r5",
        "libcap2-2.69-r1",
        "libcrypto3-3.1.4-r5",
        "libssl3-3.1.4-r5",
        "mdev-conf-4.6-r0",
        "musl-1.2.4_git20230717-r4",
        "musl-utils-1.2.4_git20230717-r4",
        "openrc-0.52.1-r2",
        "scanelf-1.3.7-r2",
        "ssl_client-1.36.1-r15",
        "zlib-1.3.1-r0",
    ];
    assert_eq!(got, want);
    // Every package of the fixture at once: the real vlan / ifupdown-ng conflict, both named.
    let mut all: Vec<String> = fs::read_dir(a.join("x86_64"))
        .unwrap()
        .filter_map(|e| {
            let n = e.unwrap().file_name().to_string_lossy().into_owned();
            let stem = n.strip_suffix(".apk")?;
            let mut parts: Vec<&str> = stem.split('-').collect();
            parts.truncate(parts.len() - 2);
            Some(parts.join("-"))
        })
        .collect();
    all.sort();
    let every = alpine_config(t.path(), &a, &all.join(", "), "");
    let o = run(
        &[
            "image",
            "show-packages",
            every.to_str().unwrap(),
            "--cache-dir",
            "c",
        ],
        t.path(),
        &[],
    );
    assert!(!o.status.success());
    let msg = text(&o);
    assert!(
        msg.contains("vlan-2.3-r1") && msg.contains("breaks: ifupdown-ng-0.12.1-r4[!vlan]"),
        "{msg}"
    );
}
