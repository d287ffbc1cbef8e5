//! End to end: `melange build` / `pallet pkg build` in bubblewrap, the packages verified and
//! indexed, rebuilt byte-identically, and an image built from them run under runc.

mod common;

use std::fs;
use std::path::Path;

use common::*;

fn examples() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples")
}

#[test]
fn bootstrap_build_sign_index_rebuild_and_run() {
    if !have("bwrap") || !have("gcc") {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let d = t.path();
    let env = [("SOURCE_DATE_EPOCH", "1700000000")];
    let o = run_melange(d, &["keygen", "--key-size", "2048", "melange.rsa"], &[]);
    assert!(o.status.success(), "{}", text(&o));
    let ex = examples();
    for name in ["busybox", "hello-c"] {
        let cfg = ex.join(name).join("melange.yaml");
        let o = run_melange(
            d,
            &[
                "build",
                "--bootstrap",
                cfg.to_str().unwrap(),
                "--arch",
                "x86_64",
                "--signing-key",
                "melange.rsa",
                "--source-dir",
                ex.join(name).to_str().unwrap(),
            ],
            &env,
        );
        assert!(o.status.success(), "{name}: {}", text(&o));
    }
    let apk = d.join("packages/x86_64/hello-c-1.0.0-r0.apk");
    let first = fs::read(&apk).unwrap();
    let o = run(
        &[
            "verify",
            "--keyring",
            "melange.rsa.pub",
            apk.to_str().unwrap(),
            "packages/x86_64/APKINDEX.tar.gz",
        ],
        d,
        &[],
    );
    assert!(o.status.success(), "{}", text(&o));
    let o = run(&["info", "--json", apk.to_str().unwrap()], d, &[]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert!(
        v["provides"].to_string().contains("cmd:hello=1.0.0-r0"),
        "{v}"
    );
    assert!(
        v["files"]
            .to_string()
            .contains("var/lib/db/sbom/hello-c-1.0.0-r0.spdx.json")
    );
    let idx = run(
        &["info", "--json", "packages/x86_64/hello-c-doc-1.0.0-r0.apk"],
        d,
        &[],
    );
    assert!(idx.status.success());
    // Building again gives the same bytes.
    let cfg = ex.join("hello-c/melange.yaml");
    let o = run(
        &[
            "pkg",
            "build",
            "--bootstrap",
            cfg.to_str().unwrap(),
            "--arch",
            "x86_64",
            "--signing-key",
            "melange.rsa",
            "--source-dir",
            ex.join("hello-c").to_str().unwrap(),
        ],
        d,
        &env,
    );
    assert!(o.status.success(), "{}", text(&o));
    assert!(fs::read(&apk).unwrap() == first, "rebuild differs");
    // An image from that repository runs what the package installed.
    let img = d.join("image.yaml");
    fs::write(&img, fs::read_to_string(ex.join("image.yaml")).unwrap()).unwrap();
    fs::create_dir(d.join("layout")).unwrap();
    let o = run(
        &[
            "image",
            "build",
            "image.yaml",
            "demo:1",
            "layout",
            "--cache-dir",
            "c",
            "--sbom=false",
        ],
        d,
        &[],
    );
    assert!(o.status.success(), "{}", text(&o));
    if have("umoci") && have("runc") {
        let out = run_bundle(&format!("{}:1", d.join("layout").display()), d, "pkg");
        assert_eq!(out.trim(), "hello from a package pallet built (uid 1000)");
    }
}

#[test]
fn alpine_guest_generates_musl_dependencies() {
    let Some(s) = shared() else { return };
    if !have("bwrap") {
        return;
    }
    let a = s.join("fixtures/alpine-3.19");
    let t = tempfile::tempdir().unwrap();
    let d = t.path();
    let keys: Vec<String> = fs::read_dir(a.join("keys"))
        .unwrap()
        .map(|e| format!("      - {}\n", e.unwrap().path().display()))
        .collect();
    fs::write(
        d.join("box.yaml"),
        format!(
            "package:\n  name: mybox\n  version: 2.0\n  epoch: 1\n  description: busybox copied from the guest\n  copyright:\n    - license: GPL-2.0-only\nenvironment:\n  contents:\n    repositories:\n      - {}\n    keyring:\n{}    packages:\n      - busybox\n      - musl\npipeline:\n  - runs: |\n      mkdir -p ${{{{targets.destdir}}}}/usr/bin\n      cp /bin/busybox ${{{{targets.destdir}}}}/usr/bin/mybox\n",
            a.display(),
            keys.concat()
        ),
    )
    .unwrap();
    let o = run(
        &[
            "pkg",
            "build",
            "box.yaml",
            "--arch",
            "x86_64",
            "--apk-cache-dir",
            "cache",
        ],
        d,
        &[],
    );
    assert!(o.status.success(), "{}", text(&o));
    let o = run(
        &["info", "--json", "packages/x86_64/mybox-2.0-r1.apk"],
        d,
        &[],
    );
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert!(
        v["depends"]
            .to_string()
            .contains("so:libc.musl-x86_64.so.1"),
        "{v}"
    );
    assert!(
        v["provides"].to_string().contains("cmd:mybox=2.0-r1"),
        "{v}"
    );
    // The embedded configuration records the environment as installed, pinned.
    let o = std::process::Command::new("tar")
        .args(["-xzOf", "packages/x86_64/mybox-2.0-r1.apk", ".melange.yaml"])
        .current_dir(d)
        .output()
        .unwrap();
    let cfg = String::from_utf8_lossy(&o.stdout);
    assert!(cfg.contains("busybox=") && cfg.contains("musl="), "{cfg}");
}

#[test]
fn failures_are_clear() {
    if !have("bwrap") {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let d = t.path();
    fs::write(d.join("bad.yaml"), "package:\n  name: bad\n  version: 1\npipeline:\n  - name: explode\n    runs: |\n      echo going down >&2\n      exit 42\n").unwrap();
    let o = run(&["pkg", "build", "--bootstrap", "bad.yaml"], d, &[]);
    assert!(!o.status.success());
    let msg = text(&o);
    assert!(
        msg.contains("'explode'") && msg.contains("42") && msg.contains("going down"),
        "{msg}"
    );
    assert!(!d.join("packages/x86_64/bad-1-r0.apk").exists());
    fs::write(d.join("ok.yaml"), "package:\n  name: ok\n  version: 1\npipeline:\n  - runs: mkdir -p ${{targets.destdir}}/etc\n").unwrap();
    let o = run(
        &[
            "pkg",
            "build",
            "--bootstrap",
            "ok.yaml",
            "--signing-key",
            "missing.rsa",
        ],
        d,
        &[],
    );
    assert!(
        !o.status.success() && text(&o).contains("missing.rsa"),
        "{}",
        text(&o)
    );
    let o = run(
        &["pkg", "build", "--bootstrap", "ok.yaml"],
        d,
        &[("PATH", "/nonexistent")],
    );
    assert!(
        !o.status.success() && text(&o).contains("apt-get install bubblewrap"),
        "{}",
        text(&o)
    );
    fs::write(d.join("undef.yaml"), "package:\n  name: u\n  version: 1\npipeline:\n  - name: uses-undefined\n    runs: echo ${{vars.nope}}\n").unwrap();
    let o = run(&["pkg", "build", "--bootstrap", "undef.yaml"], d, &[]);
    assert!(
        !o.status.success()
            && text(&o).contains("is not defined")
            && text(&o).contains("uses-undefined"),
        "{}",
        text(&o)
    );
}

/// `fetch` over HTTP from a server on 127.0.0.1 (with a checksum; a wrong one fails the build),
/// a `patch` step, a `split/manpages` subpackage, then `pallet pkg test` runs the package's
/// test in a fresh guest built from Alpine packages plus the package itself.
#[test]
fn fetch_patch_split_and_test() {
    let Some(s) = shared() else { return };
    if !have("bwrap") || !have("patch") {
        return;
    }
    use sha2::Digest as _;
    let t = tempfile::tempdir().unwrap();
    let d = t.path();
    // The upstream source: a tarball served over HTTP.
    let src = d.join("upstream/greeter-1.0.0");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("greet.sh"), "#!/bin/sh\necho hello from greeter\n").unwrap();
    fs::create_dir_all(d.join("www")).unwrap();
    let st = std::process::Command::new("tar")
        .args([
            "-czf",
            d.join("www/greeter-1.0.0.tar.gz").to_str().unwrap(),
            "-C",
            d.join("upstream").to_str().unwrap(),
            "greeter-1.0.0",
        ])
        .status()
        .unwrap();
    assert!(st.success());
    let sum: String = sha2::Sha256::digest(fs::read(d.join("www/greeter-1.0.0.tar.gz")).unwrap())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let srv = FileServer::start(d.join("www"), None);
    fs::create_dir_all(d.join("recipe")).unwrap();
    fs::write(d.join("recipe/fix.patch"), "--- a/greet.sh\n+++ b/greet.sh\n@@ -1,2 +1,2 @@\n #!/bin/sh\n-echo hello from greeter\n+echo hello from patched greeter\n").unwrap();
    let a = s.join("fixtures/alpine-3.19");
    let keys: String = fs::read_dir(a.join("keys"))
        .unwrap()
        .map(|e| format!("        - {}\n", e.unwrap().path().display()))
        .collect();
    let recipe = |sha: &str| {
        format!(
            "package:\n  name: greeter\n  version: 1.0.0\n  epoch: 0\n  description: says hello\n  copyright:\n    - license: MIT\npipeline:\n  - uses: fetch\n    with:\n      uri: http://127.0.0.1:{}/greeter-1.0.0.tar.gz\n      expected-sha256: {sha}\n  - uses: patch\n    with:\n      patches: fix.patch\n  - runs: |\n      mkdir -p ${{{{targets.destdir}}}}/usr/bin ${{{{targets.destdir}}}}/usr/share/man/man1\n      install -m755 greet.sh ${{{{targets.destdir}}}}/usr/bin/greet\n      echo '.TH GREET 1' > ${{{{targets.destdir}}}}/usr/share/man/man1/greet.1\nsubpackages:\n  - name: greeter-doc\n    description: greeter manual\n    pipeline:\n      - uses: split/manpages\ntest:\n  environment:\n    contents:\n      repositories:\n        - {}\n      keyring:\n{keys}      packages:\n        - busybox\n  pipeline:\n    - runs: greet | grep 'patched greeter'\n",
            srv.port,
            a.display()
        )
    };
    fs::write(d.join("recipe/greeter.yaml"), recipe(&"0".repeat(64))).unwrap();
    let env = [("SOURCE_DATE_EPOCH", "1700000000")];
    let o = run(
        &[
            "pkg",
            "build",
            "--bootstrap",
            "recipe/greeter.yaml",
            "--arch",
            "x86_64",
            "--signing-key",
            "k.rsa",
        ],
        d,
        &env,
    );
    assert!(!o.status.success(), "a wrong checksum must fail the build");
    // (the key does not exist yet either; make it and build with the right checksum)
    assert!(
        run(&["keygen", "--bits", "2048", "k.rsa"], d, &[])
            .status
            .success()
    );
    let o = run(
        &[
            "pkg",
            "build",
            "--bootstrap",
            "recipe/greeter.yaml",
            "--arch",
            "x86_64",
            "--signing-key",
            "k.rsa",
        ],
        d,
        &env,
    );
    assert!(
        !o.status.success() && text(&o).contains("fetch"),
        "{}",
        text(&o)
    );
    fs::write(d.join("recipe/greeter.yaml"), recipe(&sum)).unwrap();
    let o = run(
        &[
            "pkg",
            "build",
            "--bootstrap",
            "recipe/greeter.yaml",
            "--arch",
            "x86_64",
            "--signing-key",
            "k.rsa",
        ],
        d,
        &env,
    );
    assert!(o.status.success(), "{}", text(&o));
    let info = |f: &str| -> serde_json::Value {
        serde_json::from_slice(&run(&["info", "--json", f], d, &[]).stdout).unwrap()
    };
    let main = info("packages/x86_64/greeter-1.0.0-r0.apk");
    let doc = info("packages/x86_64/greeter-doc-1.0.0-r0.apk");
    assert!(
        main["files"].to_string().contains("usr/bin/greet")
            && !main["files"].to_string().contains("man1"),
        "{main}"
    );
    assert!(
        doc["files"]
            .to_string()
            .contains("usr/share/man/man1/greet.1"),
        "{doc}"
    );
    // The test pipeline runs against the built package in a fresh Alpine guest.
    let o = run(
        &[
            "pkg",
            "test",
            "recipe/greeter.yaml",
            "--arch",
            "x86_64",
            "-r",
            d.join("packages").to_str().unwrap(),
            "-k",
            d.join("k.rsa.pub").to_str().unwrap(),
            "--apk-cache-dir",
            "cache",
        ],
        d,
        &env,
    );
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("PASS greeter"), "{}", text(&o));
    // A package whose files break a required lint rule is refused.
    fs::write(d.join("recipe/bad.yaml"), "package:\n  name: badperm\n  version: 1\n  description: x\n  copyright:\n    - license: MIT\npipeline:\n  - runs: |\n      mkdir -p ${{targets.destdir}}/usr/bin\n      echo x > ${{targets.destdir}}/usr/bin/open\n      chmod 0666 ${{targets.destdir}}/usr/bin/open\n").unwrap();
    let o = run(
        &[
            "pkg",
            "build",
            "--bootstrap",
            "recipe/bad.yaml",
            "--arch",
            "x86_64",
        ],
        d,
        &env,
    );
    assert!(
        !o.status.success() && text(&o).contains("worldwrite"),
        "{}",
        text(&o)
    );
}

/// The rest of the melange face as seed users type it: compile, lint, index, sign-index.
#[test]
fn melange_face_compile_lint_index_sign_index() {
    let t = tempfile::tempdir().unwrap();
    let d = t.path();
    let cfg = examples().join("hello-c/melange.yaml");
    let o = run_melange(
        d,
        &["compile", cfg.to_str().unwrap(), "--arch", "aarch64"],
        &[],
    );
    assert!(o.status.success(), "{}", text(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["arch"], "aarch64");
    assert!(
        v["pipeline"][0]["runs"]
            .as_str()
            .unwrap()
            .contains("gcc -static -O2 -o /home/build/melange-out/hello-c/usr/bin/hello hello.c")
    );
    let o = run(&["pkg", "compile", cfg.to_str().unwrap(), "--yaml"], d, &[]);
    assert!(
        o.status.success() && String::from_utf8_lossy(&o.stdout).contains("name: hello-c"),
        "{}",
        text(&o)
    );
    // Configuration lint: a fetch without a checksum over plain http is reported.
    fs::write(d.join("lint.yaml"), "package:\n  name: l\n  version: 1.0.0\npipeline:\n  - uses: fetch\n    with:\n      uri: http://example.invalid/l.tar.gz\n      expected-none: yes\n").unwrap();
    let o = run(&["pkg", "lint", "lint.yaml", "--json"], d, &[]);
    let findings: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let rules: Vec<&str> = findings
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["rule"].as_str().unwrap())
        .collect();
    assert!(
        rules.contains(&"valid-pipeline-fetch-uri")
            && rules.contains(&"valid-pipeline-fetch-digest")
            && rules.contains(&"valid-copyright"),
        "{rules:?}"
    );
    // Package lint on an .apk: a world-writable file is a required-rule error (exit 1).
    fs::create_dir_all(d.join("root/usr/bin")).unwrap();
    fs::write(d.join("root/usr/bin/x"), "x").unwrap();
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(d.join("root/usr/bin/x"), fs::Permissions::from_mode(0o666)).unwrap();
    assert!(
        run(
            &[
                "mkpkg",
                "--info",
                "name=ww",
                "--info",
                "version=1-r0",
                "--files",
                "root",
                "-o",
                "ww-1-r0.apk"
            ],
            d,
            &[]
        )
        .status
        .success()
    );
    let o = run(&["pkg", "lint", "ww-1-r0.apk"], d, &[]);
    assert!(
        !o.status.success() && text(&o).contains("[worldwrite]"),
        "{}",
        text(&o)
    );
    // --lint-require/--lint-warn replace the default lists: worldwrite only warns now.
    let o = run(
        &[
            "pkg",
            "lint",
            "ww-1-r0.apk",
            "--lint-require",
            "",
            "--lint-warn",
            "worldwrite,empty",
        ],
        d,
        &[],
    );
    assert!(
        o.status.success() && text(&o).contains("warning: ww: [worldwrite]"),
        "{}",
        text(&o)
    );
    let o = run(
        &[
            "pkg",
            "lint",
            "ww-1-r0.apk",
            "--persist-lint-results",
            "--out-dir",
            "lr",
        ],
        d,
        &[],
    );
    let arch = fs::read_dir(d.join("lr"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let saved = fs::read_to_string(arch.join("lint-ww-1-r0.json")).unwrap();
    // melange's layout: the package and its findings by linter.
    let v: serde_json::Value = serde_json::from_str(&saved).unwrap();
    assert_eq!(v["package_name"], "ww-1-r0", "{saved} {}", text(&o));
    assert!(
        v["findings"]["worldwrite"][0]["message"].is_string(),
        "{saved}"
    );
    // A URL is linted as melange lints it: its body read as the file (a loopback server).
    fs::create_dir_all(d.join("served")).unwrap();
    fs::copy(d.join("ww-1-r0.apk"), d.join("served/ww-1-r0.apk")).unwrap();
    let server = FileServer::start(d.join("served"), None);
    let url = format!("http://127.0.0.1:{}/ww-1-r0.apk", server.port);
    let o = run_melange(d, &["lint", &url], &[]);
    assert!(
        o.status.code() == Some(1) && text(&o).contains("ww: [worldwrite]"),
        "{}",
        text(&o)
    );
    // melange's deprecated flag is taken and named as deprecated.
    let o = run_melange(d, &["lint", "--fail-on-lint-warning", &url], &[]);
    assert!(
        o.status.code() == Some(1)
            && text(&o).contains("--fail-on-lint-warning has been deprecated"),
        "{}",
        text(&o)
    );
    let missing = format!("http://127.0.0.1:{}/nope.apk", server.port);
    let o = run_melange(d, &["lint", &missing], &[]);
    assert!(
        !o.status.success() && text(&o).contains("HTTP 404") && text(&o).contains("nope.apk"),
        "{}",
        text(&o)
    );
    let o = run(
        &["pkg", "lint", "ww-1-r0.apk", "--lint-warn", "no-such-rule"],
        d,
        &[],
    );
    assert!(
        !o.status.success() && text(&o).contains("no-such-rule"),
        "{}",
        text(&o)
    );
    // A package whose arch would lead the results file out of --out-dir is refused.
    let o = run(
        &[
            "mkpkg",
            "--info",
            "name=evil",
            "--info",
            "version=1-r0",
            "--info",
            "arch=../../escaped",
            "--files",
            "root",
            "-o",
            "evil.apk",
        ],
        d,
        &[],
    );
    assert!(o.status.success(), "{}", text(&o));
    let o = run(
        &[
            "pkg",
            "lint",
            "evil.apk",
            "--persist-lint-results",
            "--out-dir",
            "lr/deep",
        ],
        d,
        &[],
    );
    assert!(
        !o.status.success() && text(&o).contains("not a plain file name"),
        "{}",
        text(&o)
    );
    assert!(!d.join("escaped").exists());
    // melange keygen / index / sign-index.
    assert!(
        run_melange(d, &["keygen", "--key-size", "2048"], &[])
            .status
            .success()
    );
    assert!(d.join("melange.rsa").exists() && d.join("melange.rsa.pub").exists());
    let o = run_melange(d, &["index", "-o", "APKINDEX.tar.gz", "ww-1-r0.apk"], &[]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        !run(
            &["verify", "--keyring", "melange.rsa.pub", "APKINDEX.tar.gz"],
            d,
            &[]
        )
        .status
        .success(),
        "unsigned index verified"
    );
    let o = run_melange(
        d,
        &[
            "sign-index",
            "--signing-key",
            "melange.rsa",
            "APKINDEX.tar.gz",
        ],
        &[],
    );
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        run(
            &["verify", "--keyring", "melange.rsa.pub", "APKINDEX.tar.gz"],
            d,
            &[]
        )
        .status
        .success()
    );
}

/// The `split/*` pipelines with their default inputs move what melange's move: one recipe with
/// a file for each, every subpackage's contents checked.
#[test]
fn split_pipelines_with_default_patterns() {
    if !have("bwrap") {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let d = t.path();
    fs::write(
        d.join("s.yaml"),
        r#"package:
  name: demo
  version: 1.2.3
  epoch: 0
  description: demo
pipeline:
  - runs: |
      o=${{targets.destdir}}
      mkdir -p $o/usr/lib/pkgconfig $o/usr/include $o/usr/share/man/man1 $o/usr/share/info $o/usr/share/locale/de $o/usr/bin $o/usr/share/doc/demo
      echo x > $o/usr/lib/libdemo.so.1
      ln -s libdemo.so.1 $o/usr/lib/libdemo.so
      echo a > $o/usr/lib/libdemo.a
      echo pc > $o/usr/lib/pkgconfig/demo.pc
      echo h > $o/usr/include/demo.h
      echo m > $o/usr/share/man/man1/demo.1
      echo i > $o/usr/share/info/demo.info
      echo l > $o/usr/share/locale/de/demo.mo
      echo d > $o/usr/share/doc/demo/README.md
      printf '#!/bin/sh\n' > $o/usr/bin/demo; chmod +x $o/usr/bin/demo
subpackages:
  - name: demo-static
    pipeline:
      - uses: split/static
  - name: demo-dev
    pipeline:
      - uses: split/dev
  - name: demo-libs
    pipeline:
      - uses: split/lib
  - name: demo-doc
    pipeline:
      - uses: split/manpages
  - name: demo-info
    pipeline:
      - uses: split/infodir
  - name: demo-lang
    pipeline:
      - uses: split/locales
  - name: demo-alldocs
    pipeline:
      - uses: split/alldocs
  - name: demo-bin
    pipeline:
      - uses: split/bin
"#,
    )
    .unwrap();
    let o = run(
        &["pkg", "build", "--bootstrap", "s.yaml", "--arch", "x86_64"],
        d,
        &[],
    );
    assert!(o.status.success(), "{}", text(&o));
    let files = |pkg: &str| -> Vec<String> {
        let o = std::process::Command::new("tar")
            .arg("-tzf")
            .arg(d.join(format!("packages/x86_64/{pkg}-1.2.3-r0.apk")))
            .output()
            .unwrap();
        let mut v: Vec<String> = String::from_utf8_lossy(&o.stdout)
            .lines()
            .filter(|l| {
                !l.starts_with('.') && !l.starts_with("var/lib/db/sbom") && !l.ends_with('/')
            })
            .filter(|l| l.contains('.') || l.starts_with("usr/bin/"))
            .map(str::to_string)
            .collect();
        v.sort();
        v
    };
    assert_eq!(files("demo-static"), ["usr/lib/libdemo.a"]);
    assert_eq!(
        files("demo-dev"),
        [
            "usr/include/demo.h",
            "usr/lib/libdemo.so",
            "usr/lib/pkgconfig/demo.pc"
        ]
    );
    assert_eq!(files("demo-libs"), ["usr/lib/libdemo.so.1"]);
    assert_eq!(files("demo-doc"), ["usr/share/man/man1/demo.1"]);
    assert_eq!(files("demo-info"), ["usr/share/info/demo.info"]);
    assert_eq!(files("demo-lang"), ["usr/share/locale/de/demo.mo"]);
    assert_eq!(files("demo-alldocs"), ["usr/share/doc/demo/README.md"]);
    assert_eq!(files("demo-bin"), ["usr/bin/demo"]);
    assert_eq!(files("demo"), Vec::<String>::new());
}

/// The package SBOM: SPDX licence ids pass through, a custom licence gets its text from
/// `license-path` (a file of the workspace, never a host file reached through `..` or a link),
/// `package.cpe` becomes a cpe23Type reference, and the document passes pyspdxtools.
#[test]
fn package_sbom_licences_and_cpe() {
    if !have("bwrap") {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let d = t.path();
    let src = d.join("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("LICENSE.acme"), "Acme Public Licence: be nice.\n").unwrap();
    let secret = d.join("host-secret");
    fs::write(&secret, "host secret 9917\n").unwrap();
    std::os::unix::fs::symlink(&secret, src.join("LICENSE.link")).unwrap();
    fs::write(
        d.join("l.yaml"),
        "package:\n  name: lic\n  version: 2.0.1\n  epoch: 3\n  description: d\n  copyright:\n    - license: MIT\n    - license: Acme-Public\n      license-path: LICENSE.acme\n    - license: Sneaky-One\n      license-path: LICENSE.link\n    - license: Sneaky-Two\n      license-path: ../host-secret\n  cpe:\n    vendor: acme\n    product: lic\npipeline:\n  - runs: mkdir -p ${{targets.destdir}}/usr/share/lic\n",
    )
    .unwrap();
    let o = run(
        &[
            "pkg",
            "build",
            "--bootstrap",
            "l.yaml",
            "--arch",
            "x86_64",
            "--source-dir",
            src.to_str().unwrap(),
        ],
        d,
        &[("SOURCE_DATE_EPOCH", "1700000000")],
    );
    assert!(o.status.success(), "{}", text(&o));
    let o = std::process::Command::new("tar")
        .args([
            "-xzOf",
            "packages/x86_64/lic-2.0.1-r3.apk",
            "var/lib/db/sbom/lic-2.0.1-r3.spdx.json",
        ])
        .current_dir(d)
        .output()
        .unwrap();
    let text_sbom = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(!text_sbom.contains("host secret"), "{text_sbom}");
    let v: serde_json::Value = serde_json::from_str(&text_sbom).unwrap();
    let declared = v["packages"][0]["licenseDeclared"].as_str().unwrap();
    assert!(
        declared.starts_with("MIT AND LicenseRef-Acme-Public"),
        "{declared}"
    );
    let extracted = v["hasExtractedLicensingInfos"].to_string();
    assert!(
        extracted.contains("Acme Public Licence: be nice."),
        "{extracted}"
    );
    assert!(!extracted.contains("\"MIT\""), "{extracted}");
    assert!(
        v["packages"][0]["externalRefs"]
            .to_string()
            .contains("cpe:2.3:a:acme:lic:2.0.1:*:*:*:*:*:*:*"),
        "{}",
        v["packages"][0]
    );
    if have("pyspdxtools") {
        let f = d.join("sbom.spdx.json");
        fs::write(&f, &text_sbom).unwrap();
        let o = std::process::Command::new("pyspdxtools")
            .arg("-i")
            .arg(&f)
            .output()
            .unwrap();
        assert!(o.status.success(), "pyspdxtools: {}", text(&o));
    }
}

/// `melange index -a ARCH` skips other architectures, `-s EXISTING` merges into an existing
/// index, `sign-index` leaves a signed index alone unless `--force`, and `keygen` names the
/// smallest key size it makes.
#[test]
fn melange_index_sign_index_and_keygen_behave_as_melange() {
    let t = tempfile::tempdir().unwrap();
    let d = t.path();
    fs::create_dir_all(d.join("files/usr/share")).unwrap();
    for (name, arch) in [("a", "x86_64"), ("b", "aarch64"), ("c", "x86_64")] {
        let o = run(
            &[
                "mkpkg",
                "--info",
                &format!("name={name}"),
                "--info",
                "version=1.0-r0",
                "--info",
                &format!("arch={arch}"),
                "--files",
                "files",
                "-o",
                &format!("{name}.apk"),
            ],
            d,
            &[],
        );
        assert!(o.status.success(), "{}", text(&o));
    }
    let names = |idx: &str| -> Vec<String> {
        let o = std::process::Command::new("tar")
            .args(["-xzOf", idx, "APKINDEX"])
            .current_dir(d)
            .output()
            .unwrap();
        String::from_utf8_lossy(&o.stdout)
            .lines()
            .filter_map(|l| l.strip_prefix("P:").map(str::to_string))
            .collect()
    };
    let o = run_melange(
        d,
        &[
            "index",
            "-a",
            "x86_64",
            "-o",
            "one.tar.gz",
            "a.apk",
            "b.apk",
        ],
        &[],
    );
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("skipping b-1.0-r0"), "{}", text(&o));
    assert_eq!(names("one.tar.gz"), ["a"]);
    let o = run_melange(
        d,
        &["index", "-s", "one.tar.gz", "-o", "two.tar.gz", "c.apk"],
        &[],
    );
    assert!(o.status.success(), "{}", text(&o));
    let mut two = names("two.tar.gz");
    two.sort();
    assert_eq!(two, ["a", "c"]);
    // keygen: a size below the minimum is refused with the minimum named.
    let o = run_melange(d, &["keygen", "--key-size", "1024", "small.rsa"], &[]);
    assert!(
        !o.status.success() && text(&o).contains("2048"),
        "{}",
        text(&o)
    );
    let o = run_melange(d, &["keygen", "--key-size", "2048"], &[]);
    assert!(o.status.success(), "{}", text(&o));
    // sign-index: the default key is melange.rsa; a signed index is left alone without --force.
    let o = run_melange(d, &["sign-index", "two.tar.gz"], &[]);
    assert!(o.status.success(), "{}", text(&o));
    let signed = fs::read(d.join("two.tar.gz")).unwrap();
    let o = run_melange(d, &["sign-index", "two.tar.gz"], &[]);
    assert!(
        o.status.success() && text(&o).contains("already signed"),
        "{}",
        text(&o)
    );
    assert_eq!(fs::read(d.join("two.tar.gz")).unwrap(), signed);
    let o = run_melange(d, &["sign-index", "--force", "two.tar.gz"], &[]);
    assert!(o.status.success(), "{}", text(&o));
    let o = run(
        &["verify", "--keyring", "melange.rsa.pub", "two.tar.gz"],
        d,
        &[],
    );
    assert!(o.status.success(), "{}", text(&o));
}

/// `--lint-require` makes a warning rule fail the build; `--lint-warn` keeps it a warning;
/// an unknown rule name is an error that names it.
#[test]
fn lint_require_and_lint_warn() {
    if !have("bwrap") {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let d = t.path();
    fs::write(
        d.join("o.yaml"),
        "package:\n  name: optpkg\n  version: 1.0.0\n  epoch: 0\n  description: d\npipeline:\n  - runs: mkdir -p ${{targets.destdir}}/opt/x && echo x > ${{targets.destdir}}/opt/x/f\n",
    )
    .unwrap();
    let build = |extra: &[&str]| {
        let mut args = vec!["build", "--bootstrap", "o.yaml", "--arch", "x86_64"];
        args.extend_from_slice(extra);
        run_melange(d, &args, &[])
    };
    let o = build(&[]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("opt"), "{}", text(&o));
    let o = build(&["--lint-require", "opt"]);
    assert!(!o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("opt"), "{}", text(&o));
    let o = build(&["--lint-warn", "opt,dev"]);
    assert!(o.status.success(), "{}", text(&o));
    let o = build(&["--lint-require", "no-such-rule"]);
    assert!(
        !o.status.success() && text(&o).contains("no-such-rule"),
        "{}",
        text(&o)
    );
}
