//! End to end: apko behaviours that real configurations and command lines rely on, checked on
//! the root filesystem the real binary writes (`build-minirootfs`, read back with GNU tar).

mod common;

use std::fs;
use std::path::Path;
use std::process::Command;

use common::*;

fn config(dir: &Path, a: &Path, body: &str) -> std::path::PathBuf {
    let p = dir.join("c.yaml");
    fs::write(
        &p,
        format!(
            "contents:\n  repositories:\n    - {}\n  keyring:\n{}{body}archs: [x86_64]\n",
            a.display(),
            keyring_yaml(&a.join("keys"))
        ),
    )
    .unwrap();
    p
}

/// One file of a `.tar.gz` root filesystem, or `None`.
fn member(tgz: &Path, name: &str) -> Option<String> {
    let o = Command::new("tar")
        .arg("-xzOf")
        .arg(tgz)
        .arg(name)
        .output()
        .unwrap();
    o.status
        .success()
        .then(|| String::from_utf8_lossy(&o.stdout).into_owned())
}

fn rootfs(d: &Path, cfg: &Path, extra: &[&str]) -> (std::process::Output, std::path::PathBuf) {
    let out = d.join("rootfs.tar.gz");
    let _ = fs::remove_file(&out);
    let mut args = vec![
        "image",
        "build-minirootfs",
        cfg.to_str().unwrap(),
        out.to_str().unwrap(),
        "--build-arch",
        "x86_64",
        "--cache-dir",
        "cache",
    ];
    args.extend_from_slice(extra);
    (run(&args, d, &[("SOURCE_DATE_EPOCH", "1700000000")]), out)
}

/// Legacy `os-release:` loads with a deprecation warning that names the file, and writes
/// `/etc/os-release` when no package ships one; a package's file wins.
#[test]
fn legacy_os_release_is_honoured_with_a_warning() {
    let Some(s) = shared() else { return };
    let a = s.join("fixtures/alpine-3.19");
    let t = tempfile::tempdir().unwrap();
    let d = t.path();
    let cfg = config(
        d,
        &a,
        "  packages: [busybox]\nos-release:\n  id: acme\n  name: Acme Linux\n  version-id: \"2.1\"\n",
    );
    let (o, out) = rootfs(d, &cfg, &[]);
    assert!(o.status.success(), "{}", text(&o));
    let msg = text(&o);
    assert!(
        msg.contains("deprecated") && msg.contains("c.yaml") && msg.contains("os-release"),
        "{msg}"
    );
    let os = member(&out, "etc/os-release").expect("etc/os-release written");
    assert_eq!(os, "ID=acme\nNAME=\"Acme Linux\"\nVERSION_ID=2.1\n");
    // alpine-release ships /etc/os-release: the package's file is kept.
    let cfg = config(
        d,
        &a,
        "  packages: [busybox, alpine-release]\nos-release:\n  id: acme\n",
    );
    let (o, out) = rootfs(d, &cfg, &[]);
    assert!(o.status.success(), "{}", text(&o));
    let os = member(&out, "etc/os-release").unwrap();
    assert!(os.contains("ID=alpine"), "{os}");
}

/// An unknown key stays an error with the file, line and column, and a near miss gets a hint.
#[test]
fn unknown_keys_say_what_was_meant() {
    let Some(s) = shared() else { return };
    let a = s.join("fixtures/alpine-3.19");
    let t = tempfile::tempdir().unwrap();
    let d = t.path();
    let cfg = config(d, &a, "  pakages: [busybox]\n");
    let (o, out) = rootfs(d, &cfg, &[]);
    let msg = text(&o);
    assert!(!o.status.success());
    assert!(
        msg.contains("c.yaml")
            && msg.contains("line 22 column 3")
            && msg.contains("pakages")
            && msg.contains("did you mean `packages`?"),
        "{msg}"
    );
    assert!(!out.exists());
}

/// `-r/--repository-append` repositories are used to resolve and are written to the image's
/// `/etc/apk/repositories` with the configured ones (apko's postBuildSetApk); `-b` ones are not.
#[test]
fn appended_repositories_reach_the_image() {
    let Some(s) = shared() else { return };
    let a = s.join("fixtures/alpine-3.19");
    let t = tempfile::tempdir().unwrap();
    let d = t.path();
    // The same repository under two more names, so each flag has a distinct line to show.
    std::os::unix::fs::symlink(&a, d.join("appended")).unwrap();
    std::os::unix::fs::symlink(&a, d.join("build-only")).unwrap();
    let cfg = config(d, &a, "  packages: [busybox]\n");
    let appended = d.join("appended").display().to_string();
    let build_only = d.join("build-only").display().to_string();
    let (o, out) = rootfs(d, &cfg, &["-r", &appended, "-b", &build_only]);
    assert!(o.status.success(), "{}", text(&o));
    let repos = member(&out, "etc/apk/repositories").unwrap();
    let lines: Vec<&str> = repos.lines().collect();
    assert!(lines.contains(&a.display().to_string().as_str()), "{repos}");
    assert!(lines.contains(&appended.as_str()), "{repos}");
    assert!(!lines.contains(&build_only.as_str()), "{repos}");
}

/// `--sbom-formats spdx,cyclonedx`: the CycloneDX files an image build writes pass the
/// CycloneDX schema check of PyPI's cyclonedx-python-lib (`scripts/validate-cyclonedx.py`).
#[test]
fn cyclonedx_sboms_of_a_build_pass_the_schema() {
    let Some(s) = shared() else { return };
    let a = s.join("fixtures/alpine-3.19");
    let t = tempfile::tempdir().unwrap();
    let d = t.path();
    let cfg = config(d, &a, "  packages: [alpine-base]\n");
    let o = run(
        &[
            "image",
            "build",
            cfg.to_str().unwrap(),
            "cdx:1",
            "img.tar",
            "--cache-dir",
            "cache",
            "--sbom-path",
            "sboms",
            "--sbom-formats",
            "spdx,cyclonedx",
        ],
        d,
        &[("SOURCE_DATE_EPOCH", "1700000000")],
    );
    assert!(o.status.success(), "{}", text(&o));
    let cdx: Vec<_> = fs::read_dir(d.join("sboms"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.to_string_lossy().contains(".cdx"))
        .collect();
    assert!(!cdx.is_empty(), "no CycloneDX file written");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/validate-cyclonedx.py");
    let o = Command::new("python3")
        .arg(script)
        .args(&cdx)
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&o.stdout);
    if o.status.code() == Some(3) {
        eprintln!("SKIPPED: {}", out.trim());
        return;
    }
    assert!(o.status.success(), "{out}");
}

/// `--vcs` (on by default): a configuration in a git checkout with an `origin` gets the source
/// (credentials removed) and revision annotations; `--vcs=false` and a non-checkout get none.
#[test]
fn vcs_probing_annotates_the_index() {
    let Some(s) = shared() else { return };
    if !have("git") {
        return;
    }
    let a = s.join("fixtures/alpine-3.19");
    let t = tempfile::tempdir().unwrap();
    let d = t.path();
    let git = |args: &[&str]| pallet_test_support::git(d, args).unwrap_or_else(|e| panic!("{e}"));
    let cfg = config(d, &a, "  packages: [busybox]\n");
    git(&["init", "-q"]);
    git(&[
        "remote",
        "add",
        "origin",
        "https://bot:s3cret@git.example.invalid/acme/img.git",
    ]);
    git(&["add", "c.yaml"]);
    git(&["commit", "-q", "-m", "x"]);
    let head = git(&["rev-parse", "HEAD"]);
    let annotations = |extra: &[&str]| -> serde_json::Value {
        let out = d.join("layout");
        let _ = fs::remove_dir_all(&out);
        fs::create_dir_all(&out).unwrap();
        let mut args = vec![
            "image",
            "build",
            cfg.to_str().unwrap(),
            "v:1",
            out.to_str().unwrap(),
            "--sbom=false",
            "--cache-dir",
            "cache",
        ];
        args.extend_from_slice(extra);
        let o = run(&args, d, &[("SOURCE_DATE_EPOCH", "1700000000")]);
        assert!(o.status.success(), "{}", text(&o));
        let idx: serde_json::Value =
            serde_json::from_slice(&fs::read(out.join("index.json")).unwrap()).unwrap();
        let inner = idx["manifests"][0]["digest"]
            .as_str()
            .unwrap()
            .replace("sha256:", "");
        let blob = |d: &str| -> serde_json::Value {
            let d = d.trim_start_matches("sha256:");
            serde_json::from_slice(&fs::read(out.join("blobs/sha256").join(d)).unwrap()).unwrap()
        };
        let inner = blob(&inner);
        // apko's config labels are the manifest's annotations, VCS and created time included.
        let manifest = blob(inner["manifests"][0]["digest"].as_str().unwrap());
        let config = blob(manifest["config"]["digest"].as_str().unwrap());
        assert_eq!(
            config["config"]["Labels"], manifest["annotations"],
            "labels {config} against {manifest}"
        );
        assert_eq!(manifest["annotations"], inner["annotations"]);
        inner["annotations"].clone()
    };
    let on = annotations(&[]);
    assert_eq!(
        on["org.opencontainers.image.source"], "https://git.example.invalid/acme/img.git",
        "{on}"
    );
    assert_eq!(
        on["org.opencontainers.image.revision"],
        head.as_str(),
        "{on}"
    );
    let off = annotations(&["--vcs=false"]);
    assert!(
        off.get("org.opencontainers.image.source").is_none(),
        "{off}"
    );
}

/// `/etc/apko.json` is the locked ImageConfiguration as apko's Go encoder writes it: the
/// configuration's own keys at the top, every installed package pinned and sorted, apko's
/// architecture names, one line, mode 0444.
#[test]
fn etc_apko_json_is_the_locked_configuration() {
    let Some(s) = shared() else { return };
    let a = s.join("fixtures/alpine-3.19");
    let t = tempfile::tempdir().unwrap();
    let d = t.path();
    let cfg = config(
        d,
        &a,
        "  packages: [busybox]\naccounts:\n  run-as: nonroot\n  users: [{username: nonroot, uid: 65532}]\n\
         annotations: {a: \"x<y\"}\n",
    );
    let (o, out) = rootfs(d, &cfg, &[]);
    assert!(o.status.success(), "{}", text(&o));
    let raw = member(&out, "etc/apko.json").expect("etc/apko.json in the root filesystem");
    assert!(
        raw.ends_with("}\n") && raw.matches('\n').count() == 1,
        "one line: {raw}"
    );
    assert!(raw.contains("x\\u003cy"), "Go escapes <: {raw}");
    let v: serde_json::Value = serde_json::from_str(&raw).unwrap();
    let keys: Vec<&str> = v.as_object().unwrap().keys().map(|k| k.as_str()).collect();
    assert_eq!(
        keys,
        ["contents", "entrypoint", "accounts", "archs", "annotations"],
        "{raw}"
    );
    assert_eq!(v["archs"], serde_json::json!(["amd64"]));
    assert_eq!(v["accounts"]["users"][0]["username"], "nonroot");
    let pins: Vec<&str> = v["contents"]["packages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p.as_str().unwrap())
        .collect();
    let world = member(&out, "etc/apk/world").unwrap();
    let mut want: Vec<&str> = world.lines().collect();
    want.sort();
    assert_eq!(
        pins, want,
        "every installed package, pinned as in /etc/apk/world"
    );
    assert!(pins.iter().any(|p| p.starts_with("busybox=")), "{pins:?}");
    let listing = Command::new("tar")
        .arg("-tvzf")
        .arg(&out)
        .arg("etc/apko.json")
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&listing.stdout).starts_with("-r--r--r--"),
        "{}",
        text(&listing)
    );
}

/// Hostile values in a configuration, through the real binary: a `runtime_keyring` name that
/// would be written outside `etc/apk/keys`, or a value that would add a line to a generated
/// file, stops the build with the key named, and nothing is written; a plain name lands where
/// it should.
#[test]
fn hostile_configuration_values_are_refused_before_anything_is_written() {
    let Some(s) = shared() else { return };
    let a = s.join("fixtures/alpine-3.19");
    let t = tempfile::tempdir().unwrap();
    let d = t.path();
    for (body, want) in [
        (
            "  runtime_keyring:\n    - name: ../../../escaped.pub\n      content: x\n  packages: [busybox]\n",
            "contents.runtime_keyring name",
        ),
        (
            "  runtime_keyring:\n    - name: \"k\\u0007.pub\"\n      content: x\n  packages: [busybox]\n",
            "contents.runtime_keyring name",
        ),
        (
            "  packages: [busybox]\naccounts:\n  users:\n    - username: \"a\\nroot2::0:0::/:/bin/sh\"\n      uid: 5\n",
            "line break",
        ),
    ] {
        let cfg = config(d, &a, body);
        let (o, out) = rootfs(d, &cfg, &[]);
        let msg = text(&o);
        assert!(!o.status.success(), "{msg}");
        assert!(msg.contains(want), "{msg}");
        assert!(msg.contains("c.yaml"), "the file is named: {msg}");
        assert!(!out.exists(), "{msg}");
        assert!(
            !d.join("escaped.pub").exists()
                && !t.path().parent().unwrap().join("escaped.pub").exists()
        );
    }
    let cfg = config(
        d,
        &a,
        "  runtime_keyring:\n    - name: mine.rsa.pub\n      content: KEY\n  packages: [busybox]\n",
    );
    let (o, out) = rootfs(d, &cfg, &[]);
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(
        member(&out, "etc/apk/keys/mine.rsa.pub").as_deref(),
        Some("KEY")
    );
}

/// Stage `files` (path, bytes, mode) and `links` (path, target) in `work/stage-NAME` and make
/// them a signed package of `repo/x86_64` with `pallet mkpkg`.
fn mkpkg(
    work: &Path,
    name: &str,
    depends: &[&str],
    files: &[(&str, Vec<u8>, u32)],
    links: &[(&str, &str)],
) {
    use std::os::unix::fs::PermissionsExt as _;
    let root = work.join(format!("stage-{name}"));
    for (p, data, mode) in files {
        let path = root.join(p);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(&path, data).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(*mode)).unwrap();
    }
    for (p, to) in links {
        let path = root.join(p);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::os::unix::fs::symlink(to, &path).unwrap();
    }
    fs::create_dir_all(&root).unwrap();
    fs::create_dir_all(work.join("repo/x86_64")).unwrap();
    let out = work.join(format!("repo/x86_64/{name}-1.0-r0.apk"));
    let mut args = vec![
        "mkpkg".to_string(),
        "--info".into(),
        format!("name={name}"),
        "--info".into(),
        "version=1.0-r0".into(),
        "--info".into(),
        "arch=x86_64".into(),
        "--info".into(),
        format!("description={name} of a Wolfi-shaped distribution"),
    ];
    for d in depends {
        args.extend(["--info".to_string(), format!("depend={d}")]);
    }
    args.extend([
        "--files".to_string(),
        root.display().to_string(),
        "-o".into(),
        out.display().to_string(),
        "--signing-key".into(),
        work.join("k.rsa").display().to_string(),
    ]);
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let o = run(&refs, work, &[]);
    assert!(o.status.success(), "{}", text(&o));
}

/// A glibc distribution laid out as Wolfi's, through the real binary: usr-merged (`lib ->
/// usr/lib`, no `/bin`), `etc/ld.so.conf`, busybox in `/usr/bin`, and a library package that
/// ships its files under `lib/`. The root filesystem gets an `/etc/ld.so.cache` that glibc's
/// own `ldconfig -p -C` reads, with the library found; busybox's applets point at
/// `/usr/bin/busybox`; GNU tar takes the archive, which holds nothing below a symlink (the
/// library and the apk database land in `usr/lib`).
#[test]
fn a_usr_merged_glibc_distribution_gets_its_ld_so_cache_and_busybox_links() {
    let host_libs = Path::new("/usr/lib/x86_64-linux-gnu");
    if !host_libs.join("libz.so.1").exists()
        || !host_libs.join("liblzma.so.5").exists()
        || !Path::new("/bin/busybox").exists()
        || !Path::new("/sbin/ldconfig").exists()
    {
        println!("SKIPPED: needs the host's libz and liblzma, /bin/busybox and ldconfig");
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let d = t.path();
    let o = run(&["keygen", d.join("k.rsa").to_str().unwrap()], d, &[]);
    assert!(o.status.success(), "{}", text(&o));
    mkpkg(
        d,
        "layout",
        &[],
        &[
            (
                "etc/ld.so.conf",
                b"include /etc/ld.so.conf.d/*.conf\n".to_vec(),
                0o644,
            ),
            (
                "etc/ld.so.conf.d/local.conf",
                b"/usr/local/lib\n".to_vec(),
                0o644,
            ),
            (
                "etc/passwd",
                b"root:x:0:0:root:/root:/usr/bin/sh\n".to_vec(),
                0o644,
            ),
            ("etc/group", b"root:x:0:\n".to_vec(), 0o644),
            ("usr/bin/.keep", vec![], 0o644),
            ("usr/lib/.keep", vec![], 0o644),
        ],
        &[("lib", "usr/lib"), ("lib64", "usr/lib")],
    );
    mkpkg(
        d,
        "zlib",
        &["layout"],
        &[
            (
                "lib/libz.so.1.3",
                fs::read(host_libs.join("libz.so.1")).unwrap(),
                0o755,
            ),
            (
                "usr/local/lib/liblzma.so.5.4",
                fs::read(host_libs.join("liblzma.so.5")).unwrap(),
                0o755,
            ),
        ],
        &[
            ("lib/libz.so.1", "libz.so.1.3"),
            ("usr/local/lib/liblzma.so.5", "liblzma.so.5.4"),
        ],
    );
    mkpkg(
        d,
        "busybox",
        &["layout"],
        // As Wolfi's busybox: its applet paths in etc/busybox-paths.d.
        &[
            ("usr/bin/busybox", fs::read("/bin/busybox").unwrap(), 0o755),
            (
                "etc/busybox-paths.d/busybox",
                b"/usr/bin/sh\n/usr/bin/echo\n".to_vec(),
                0o644,
            ),
        ],
        &[],
    );
    let apks: Vec<String> = ["layout", "zlib", "busybox"]
        .iter()
        .map(|n| {
            d.join(format!("repo/x86_64/{n}-1.0-r0.apk"))
                .display()
                .to_string()
        })
        .collect();
    let mut args = vec![
        "index",
        "-o",
        "repo/x86_64/APKINDEX.tar.gz",
        "--signing-key",
        "k.rsa",
    ];
    args.extend(apks.iter().map(String::as_str));
    let o = run(&args, d, &[]);
    assert!(o.status.success(), "{}", text(&o));
    let cfg = d.join("wolfi-like.yaml");
    fs::write(
        &cfg,
        format!(
            "contents:\n  repositories: [{}]\n  keyring: [{}]\n  packages: [layout, zlib, busybox]\narchs: [x86_64]\n",
            d.join("repo").display(),
            d.join("k.rsa.pub").display()
        ),
    )
    .unwrap();
    let (o, out) = rootfs(d, &cfg, &[]);
    assert!(o.status.success(), "{}", text(&o));
    // GNU tar lists and extracts it; no path has a symlink as its parent.
    let list = Command::new("tar").arg("-tzf").arg(&out).output().unwrap();
    assert!(list.status.success(), "{}", text(&list));
    let names: Vec<String> = String::from_utf8_lossy(&list.stdout)
        .lines()
        .map(|l| l.trim_start_matches("./").trim_end_matches('/').to_string())
        .collect();
    for n in &names {
        for link in ["lib/", "lib64/", "bin/"] {
            assert!(!n.starts_with(link), "{n} is below a symlink: {names:?}");
        }
    }
    assert!(
        names.iter().any(|n| n == "usr/lib/libz.so.1.3"),
        "{names:?}"
    );
    assert!(
        names.iter().any(|n| n == "usr/lib/apk/db/installed"),
        "{names:?}"
    );
    let root = d.join("root");
    fs::create_dir_all(&root).unwrap();
    let x = Command::new("tar")
        .arg("-xzf")
        .arg(&out)
        .arg("-C")
        .arg(&root)
        .output()
        .unwrap();
    assert!(x.status.success(), "{}", text(&x));
    // glibc's ldconfig reads the cache and finds both libraries where the loader would.
    let p = Command::new("/sbin/ldconfig")
        .arg("-p")
        .arg("-C")
        .arg(root.join("etc/ld.so.cache"))
        .output()
        .unwrap();
    let cache = String::from_utf8_lossy(&p.stdout);
    assert!(p.status.success(), "{}", text(&p));
    assert!(
        cache.contains("libz.so.1 ") && cache.contains("/lib/libz.so.1"),
        "{cache}"
    );
    assert!(
        cache.contains("liblzma.so.5 ") && cache.contains("=> /usr/local/lib/liblzma.so.5"),
        "the include of ld.so.conf.d is followed: {cache}"
    );
    // busybox's applets are links to wherever busybox is installed.
    assert_eq!(
        fs::read_link(root.join("usr/bin/sh")).unwrap(),
        Path::new("/usr/bin/busybox")
    );
}
