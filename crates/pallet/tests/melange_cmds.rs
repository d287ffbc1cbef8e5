//! End to end: melange's sign, bump, update-cache, package-version, query, scan, rebuild,
//! license-check, source get/pop and version, run through the `melange` name of the binary,
//! each checked by its effect (files rewritten, caches filled, packages verified or rebuilt
//! byte for byte).

mod common;

use std::fs;
use std::path::Path;
use std::process::Output;

use common::*;

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn sha256_hex(b: &[u8]) -> String {
    use sha2::Digest as _;
    sha2::Sha256::digest(b)
        .iter()
        .map(|x| format!("{x:02x}"))
        .collect()
}

/// A gzip tarball of `files` under the folder `top`, written to `out`.
fn tarball(work: &Path, top: &str, files: &[(&str, &str)], out: &Path) {
    let src = work.join("tarball-src").join(top);
    for (name, body) in files {
        let p = src.join(name);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(p, body).unwrap();
    }
    fs::create_dir_all(out.parent().unwrap()).unwrap();
    let st = std::process::Command::new("tar")
        .arg("-czf")
        .arg(out)
        .arg("-C")
        .arg(work.join("tarball-src"))
        .arg(top)
        .status()
        .unwrap();
    assert!(st.success());
    fs::remove_dir_all(work.join("tarball-src")).unwrap();
}

const MIT: &str = "MIT License\n\nCopyright (c) 2024 The Greeters\n\nPermission is hereby granted, free of charge, to any person obtaining a copy\nof this software and associated documentation files (the \"Software\"), to deal\nin the Software without restriction, including without limitation the rights\nto use, copy, modify, merge, publish, distribute, sublicense, and/or sell\ncopies of the Software, and to permit persons to whom the Software is\nfurnished to do so, subject to the following conditions:\n\nThe above copyright notice and this permission notice shall be included in all\ncopies or substantial portions of the Software.\n\nTHE SOFTWARE IS PROVIDED \"AS IS\", WITHOUT WARRANTY OF ANY KIND, EXPRESS OR\nIMPLIED, INCLUDING BUT NOT LIMITED TO THE WARRANTIES OF MERCHANTABILITY.\n";

#[test]
fn every_new_command_has_help_with_examples() {
    let t = tempfile::tempdir().unwrap();
    for cmd in [
        vec!["sign"],
        vec!["bump"],
        vec!["update-cache"],
        vec!["package-version"],
        vec!["query"],
        vec!["scan"],
        vec!["rebuild"],
        vec!["license-check"],
        vec!["source", "get"],
        vec!["source", "pop"],
        vec!["version"],
    ] {
        let mut args = cmd.clone();
        args.push("--help");
        let o = run_melange(t.path(), &args, &[]);
        assert!(o.status.success(), "{cmd:?}: {}", text(&o));
        assert!(stdout(&o).contains("Examples:"), "{cmd:?}: {}", text(&o));
    }
    // The pallet face has them under `pallet pkg`.
    let o = run(&["pkg", "query", "--help"], t.path(), &[]);
    assert!(stdout(&o).contains("Examples:"), "{}", text(&o));
}

#[test]
fn version_under_both_faces() {
    let t = tempfile::tempdir().unwrap();
    let o = run_melange(t.path(), &["version"], &[]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        stdout(&o).contains(&format!("GitVersion:    v{}", env!("CARGO_PKG_VERSION"))),
        "{}",
        text(&o)
    );
    let o = run_melange(t.path(), &["version", "--json"], &[]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["gitVersion"], format!("v{}", env!("CARGO_PKG_VERSION")));
    // `pallet version` is still the APK version comparison.
    let o = run(&["version", "-t", "1.2.3-r0", "1.2.10-r0"], t.path(), &[]);
    assert_eq!(stdout(&o), "<\n");
    let o = run(&["version", "-t", "2.0", "2.0"], t.path(), &[]);
    assert_eq!(stdout(&o), "=\n");
}

#[test]
fn sign_makes_a_package_verify_with_the_key() {
    let t = tempfile::tempdir().unwrap();
    let d = t.path();
    fs::create_dir_all(d.join("root/usr/share/hello")).unwrap();
    fs::write(d.join("root/usr/share/hello/greeting"), "hi\n").unwrap();
    let o = run(
        &[
            "mkpkg",
            "--info",
            "name=hello",
            "--info",
            "version=1.0-r0",
            "--info",
            "arch=x86_64",
            "--files",
            "root",
            "-o",
            "hello-1.0-r0.apk",
        ],
        d,
        &[("SOURCE_DATE_EPOCH", "1700000123")],
    );
    assert!(o.status.success(), "{}", text(&o));
    fs::copy(d.join("hello-1.0-r0.apk"), d.join("other-1.0-r0.apk")).unwrap();
    let o = run_melange(d, &["keygen", "--key-size", "2048", "k.rsa"], &[]);
    assert!(o.status.success(), "{}", text(&o));
    let verify = |f: &str, key: &str| run(&["verify", "--keyring", key, f], d, &[]);
    let o = verify("hello-1.0-r0.apk", "k.rsa.pub");
    assert!(
        !o.status.success() && stdout(&o).contains("UNTRUSTED"),
        "{}",
        text(&o)
    );
    let o = run_melange(
        d,
        &["sign", "--signing-key", "k.rsa", "hello-1.0-r0.apk"],
        &[],
    );
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        text(&o).contains("Processing apk hello-1.0-r0.apk"),
        "{}",
        text(&o)
    );
    let o = verify("hello-1.0-r0.apk", "k.rsa.pub");
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(stdout(&o), "hello-1.0-r0.apk: OK\n");
    // The signature entry carries the package's build date, as melange stamps it.
    let apk = fs::read(d.join("hello-1.0-r0.apk")).unwrap();
    let mut sig = tar::Archive::new(flate2::read::GzDecoder::new(&apk[..]));
    let first = sig.entries().unwrap().next().unwrap().unwrap();
    assert!(
        first
            .path()
            .unwrap()
            .to_string_lossy()
            .starts_with(".SIGN.")
    );
    assert_eq!(first.header().mtime().unwrap(), 1700000123);
    // melange's default key name, local-melange.rsa; re-signing replaces the signature.
    let o = run_melange(
        d,
        &["keygen", "--key-size", "2048", "local-melange.rsa"],
        &[],
    );
    assert!(o.status.success(), "{}", text(&o));
    let o = run_melange(d, &["sign", "hello-1.0-r0.apk", "other-1.0-r0.apk"], &[]);
    assert!(o.status.success(), "{}", text(&o));
    for f in ["hello-1.0-r0.apk", "other-1.0-r0.apk"] {
        assert!(verify(f, "local-melange.rsa.pub").status.success());
    }
    assert!(!verify("hello-1.0-r0.apk", "k.rsa.pub").status.success());
    // A missing key is a clear error.
    let o = run_melange(d, &["sign", "-k", "nope.rsa", "hello-1.0-r0.apk"], &[]);
    assert!(
        !o.status.success() && text(&o).contains("nope.rsa"),
        "{}",
        text(&o)
    );
}

const CHEESE: &str = r#"# Cheese, the library.
package:
  name: cheese
  version: 7.0.1.0 # upstream's version
  epoch: 3
  description: a cheesy library   # keep this comment
  copyright:
    - license: MIT

var-transforms:
  - from: ${{package.version}}
    match: '(\d+\.\d+\.\d+)\.\d+'
    replace: '$1'
    to: short-version

pipeline:
  # The release tarball.
  - uses: fetch
    with:
      uri: http://127.0.0.1:PORT/cheese-${{vars.short-version}}.tar.gz
      expected-sha256: "OLDSUM"

  - uses: git-checkout
    with:
      repository: https://example.invalid/cheese
      tag: v${{package.version}}
      expected-commit: 0000000000000000000000000000000000000000

  - uses: git-checkout
    with:
      repository: https://example.invalid/wine
      tag: v1.0
      expected-commit: 1111111111111111111111111111111111111111

  - runs: |
      make
"#;

#[test]
fn bump_rewrites_version_epoch_checksums_and_commit_keeping_the_file() {
    let t = tempfile::tempdir().unwrap();
    let d = t.path();
    tarball(
        d,
        "cheese-7.0.2",
        &[("README", "new cheese\n")],
        &d.join("www/cheese-7.0.2.tar.gz"),
    );
    let sum = sha256_hex(&fs::read(d.join("www/cheese-7.0.2.tar.gz")).unwrap());
    let srv = FileServer::start(d.join("www"), None);
    let recipe = CHEESE.replace("PORT", &srv.port.to_string());
    fs::write(d.join("cheese.yaml"), &recipe).unwrap();
    let o = run_melange(d, &["package-version", "cheese.yaml"], &[]);
    assert_eq!(stdout(&o), "cheese-7.0.1.0-r3");
    let commit = "2222222222222222222222222222222222222222";
    let o = run_melange(
        d,
        &[
            "bump",
            "cheese.yaml",
            "7.0.2.0",
            "--expected-commit",
            commit,
        ],
        &[],
    );
    assert!(o.status.success(), "{}", text(&o));
    let after = fs::read_to_string(d.join("cheese.yaml")).unwrap();
    // Exactly these values changed; comments, quoting and blank lines are as written. The
    // second checkout's tag does not follow the version, so its commit stays.
    let want = recipe
        .replace(
            "version: 7.0.1.0 # upstream's version",
            "version: \"7.0.2.0\" # upstream's version",
        )
        .replace("epoch: 3", "epoch: 0")
        .replace("\"OLDSUM\"", &format!("\"{sum}\""))
        .replace("0000000000000000000000000000000000000000", commit);
    assert_eq!(after, want);
    assert_eq!(
        stdout(&run_melange(d, &["package-version", "cheese.yaml"], &[])),
        "cheese-7.0.2.0-r0"
    );
    // The same version again only raises the epoch.
    let o = run_melange(d, &["bump", "cheese.yaml", "7.0.2.0"], &[]);
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(
        fs::read_to_string(d.join("cheese.yaml")).unwrap(),
        want.replace("epoch: 0", "epoch: 1")
    );
    // A version whose tarball does not exist fails and leaves the file alone.
    let before = fs::read_to_string(d.join("cheese.yaml")).unwrap();
    let o = run_melange(d, &["bump", "cheese.yaml", "9.9.9.0"], &[]);
    assert!(
        !o.status.success() && text(&o).contains("404"),
        "{}",
        text(&o)
    );
    assert_eq!(fs::read_to_string(d.join("cheese.yaml")).unwrap(), before);
}

#[test]
fn package_version_and_query_print_templates() {
    let t = tempfile::tempdir().unwrap();
    let d = t.path();
    fs::write(
        d.join("hello.yaml"),
        r#"package:
  name: hello
  version: 2.12.1
  epoch: 4
  description: the GNU hello program
  dependencies:
    runtime:
      - busybox
      - ca-certificates-bundle
environment:
  contents:
    packages:
      - build-base
vars:
  mangled: "2_12_1"
pipeline:
  - uses: fetch
    with:
      uri: https://ftp.gnu.org/gnu/hello/hello-${{package.version}}.tar.gz
      expected-sha256: abc
  - runs: make
subpackages:
  - name: hello-doc
    description: docs
  - name: hello-lang
"#,
    )
    .unwrap();
    let o = run_melange(d, &["package-version", "hello.yaml"], &[]);
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(stdout(&o), "hello-2.12.1-r4");
    let q = |tpl: &str| run_melange(d, &["query", "hello.yaml", tpl], &[]);
    for (tpl, want) in [
        ("{{ .Package.Name }}-{{ .Package.Version }}", "hello-2.12.1"),
        (
            "{{ .Package.Name }}-{{ .Package.Version }}-{{ .Package.Epoch }}",
            "hello-2.12.1-4",
        ),
        (
            "{{ .Package.Dependencies.Runtime }}",
            "[busybox ca-certificates-bundle]",
        ),
        (
            "{{ range .Subpackages }}{{ .Name }}\n{{ end }}",
            "hello-doc\nhello-lang\n",
        ),
        ("{{ index .Vars \"mangled\" }}", "2_12_1"),
        ("{{ .Vars.mangled }}", "2_12_1"),
        ("{{ (index .Pipeline 0).Uses }}", "fetch"),
        (
            "{{ range .Pipeline }}{{ with .With }}{{ .uri }}{{ end }}{{ end }}",
            "https://ftp.gnu.org/gnu/hello/hello-2.12.1.tar.gz",
        ),
        ("{{ .Environment.Contents.Packages }}", "[build-base]"),
        ("{{ len .Subpackages }} subpackages", "2 subpackages"),
        (
            "{{ if eq .Package.Name \"hello\" }}yes{{ else }}no{{ end }}",
            "yes",
        ),
        ("[{{ .Package.URL }}]", "[]"),
    ] {
        let o = q(tpl);
        assert!(o.status.success(), "{tpl}: {}", text(&o));
        assert_eq!(stdout(&o), want, "{tpl}");
    }
    // What the subset does not do is refused clearly.
    let o = q("{{ template \"x\" }}");
    assert!(
        !o.status.success() && text(&o).contains("not supported"),
        "{}",
        text(&o)
    );
    let o = q("{{ .Package.Nonsense }}");
    assert!(
        !o.status.success() && text(&o).contains("can't evaluate field Nonsense"),
        "{}",
        text(&o)
    );
    // The pallet face answers the same.
    let o = run(&["pkg", "package-version", "hello.yaml"], d, &[]);
    assert_eq!(stdout(&o), "hello-2.12.1-r4");
}

#[test]
fn update_cache_fills_the_cache_and_the_build_uses_it_offline() {
    let t = tempfile::tempdir().unwrap();
    let d = t.path();
    tarball(
        d,
        "greeter-1.0.0",
        &[("greet.sh", "#!/bin/sh\necho hello from the cache\n")],
        &d.join("www/greeter-1.0.0.tar.gz"),
    );
    let body = fs::read(d.join("www/greeter-1.0.0.tar.gz")).unwrap();
    let sum = sha256_hex(&body);
    let srv = FileServer::start(d.join("www"), None);
    let recipe = |sha: &str| {
        format!(
            "package:\n  name: greeter\n  version: 1.0.0\n  epoch: 0\n  description: says hello\n  copyright:\n    - license: MIT\npipeline:\n  - uses: fetch\n    with:\n      uri: http://127.0.0.1:{}/greeter-${{{{package.version}}}}.tar.gz\n      expected-sha256: {sha}\n  - runs: |\n      mkdir -p ${{{{targets.destdir}}}}/usr/bin\n      install -m755 greet.sh ${{{{targets.destdir}}}}/usr/bin/greet\n",
            srv.port
        )
    };
    fs::create_dir_all(d.join("recipe")).unwrap();
    fs::write(d.join("recipe/greeter.yaml"), recipe(&"0".repeat(64))).unwrap();
    let o = run_melange(
        d,
        &[
            "update-cache",
            "--cache-dir",
            "cache",
            "recipe/greeter.yaml",
        ],
        &[],
    );
    assert!(
        !o.status.success() && text(&o).contains("sha256 mismatch"),
        "{}",
        text(&o)
    );
    assert!(!d.join("cache").join(format!("sha256:{sum}")).exists());
    fs::write(d.join("recipe/greeter.yaml"), recipe(&sum)).unwrap();
    let o = run_melange(
        d,
        &[
            "update-cache",
            "--cache-dir",
            "cache",
            "recipe/greeter.yaml",
        ],
        &[],
    );
    assert!(o.status.success(), "{}", text(&o));
    let cached = d.join("cache").join(format!("sha256:{sum}"));
    assert_eq!(fs::read(&cached).unwrap(), body, "{}", text(&o));
    // One download per run (the refused one included).
    assert_eq!(
        srv.full_responses
            .load(std::sync::atomic::Ordering::Relaxed),
        2
    );
    // With the server gone, a build with that cache still gets its source.
    drop(srv);
    std::thread::sleep(std::time::Duration::from_millis(50));
    if !have("bwrap") {
        return;
    }
    let o = run_melange(
        d,
        &[
            "build",
            "--bootstrap",
            "recipe/greeter.yaml",
            "--arch",
            "x86_64",
            "--cache-dir",
            "cache",
        ],
        &[("SOURCE_DATE_EPOCH", "1700000000")],
    );
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("using cached sha256:"), "{}", text(&o));
    assert!(d.join("packages/x86_64/greeter-1.0.0-r0.apk").is_file());
}

const GREET: &str = r#"package:
  name: greet
  version: 1.0.0
  epoch: 0
  description: says hello
  copyright:
    - license: MIT
  dependencies:
    runtime:
      - busybox
pipeline:
  - runs: |
      mkdir -p ${{targets.destdir}}/usr/bin
      install -m755 greet.sh ${{targets.destdir}}/usr/bin/greet
subpackages:
  - name: greet-doc
    description: greet's documentation
    pipeline:
      - runs: |
          mkdir -p ${{targets.contextdir}}/usr/share/doc/greet
          cp greet.sh ${{targets.contextdir}}/usr/share/doc/greet/
"#;

#[test]
fn scan_and_rebuild_a_bootstrap_build() {
    if !have("bwrap") {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let d = t.path();
    fs::create_dir_all(d.join("recipe")).unwrap();
    fs::write(d.join("recipe/greet.yaml"), GREET).unwrap();
    fs::write(d.join("recipe/greet.sh"), "#!/bin/sh\necho hello\n").unwrap();
    assert!(
        run_melange(d, &["keygen", "--key-size", "2048", "k.rsa"], &[])
            .status
            .success()
    );
    let env = [("SOURCE_DATE_EPOCH", "1700000000")];
    let o = run(
        &[
            "pkg",
            "build",
            "--bootstrap",
            "recipe/greet.yaml",
            "--arch",
            "x86_64",
            "--signing-key",
            "k.rsa",
        ],
        d,
        &env,
    );
    assert!(o.status.success(), "{}", text(&o));
    let main = d.join("packages/x86_64/greet-1.0.0-r0.apk");
    let doc = d.join("packages/x86_64/greet-doc-1.0.0-r0.apk");

    // scan: what the analysis gives now is what the packages say.
    let o = run_melange(d, &["scan", "recipe/greet.yaml", "--diff"], &[]);
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(stdout(&o), "");
    let o = run_melange(d, &["scan", "recipe/greet.yaml"], &[]);
    assert!(o.status.success(), "{}", text(&o));
    let s = stdout(&o);
    let (first, second) = (
        s.find("pkgname = greet-doc").unwrap(),
        s.find("pkgname = greet\n").unwrap(),
    );
    assert!(first < second, "subpackages first: {s}");
    assert!(s.contains("provides = cmd:greet=1.0.0-r0"), "{s}");
    assert!(s.contains("depend = busybox"), "{s}");
    let o = run_melange(d, &["scan", "recipe/greet.yaml", "-p", "greet-doc"], &[]);
    assert!(!stdout(&o).contains("pkgname = greet\n") && stdout(&o).contains("greet-doc"));
    // Edit the recipe's dependencies: the packages no longer say what it gives.
    fs::write(
        d.join("recipe/greet.yaml"),
        GREET.replace("      - busybox\n", "      - busybox\n      - ncurses\n"),
    )
    .unwrap();
    let o = run_melange(d, &["scan", "recipe/greet.yaml", "--diff"], &[]);
    assert!(!o.status.success(), "{}", text(&o));
    let s = stdout(&o);
    assert!(
        s.starts_with("diff greet-1.0.0-r0.apk recipe/greet.yaml\n--- greet-1.0.0-r0.apk\n+++ recipe/greet.yaml\n@@ "),
        "{s}"
    );
    assert!(
        s.contains("\n+depend = ncurses\n") && s.contains("\n depend = busybox\n"),
        "{s}"
    );
    assert!(
        !s.contains("greet-doc"),
        "only the main package changed: {s}"
    );
    assert!(
        text(&o).contains("saw diff for recipe/greet.yaml"),
        "{}",
        text(&o)
    );
    fs::write(d.join("recipe/greet.yaml"), GREET).unwrap();

    // rebuild: the embedded configuration builds the same bytes.
    let o = run_melange(
        d,
        &[
            "rebuild",
            "--bootstrap",
            "--source-dir",
            "recipe",
            "--signing-key",
            "k.rsa",
            main.to_str().unwrap(),
            doc.to_str().unwrap(),
        ],
        &[],
    );
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        text(&o).contains("already rebuilt"),
        "one build per origin: {}",
        text(&o)
    );
    for f in ["greet-1.0.0-r0.apk", "greet-doc-1.0.0-r0.apk"] {
        assert!(
            fs::read(d.join("packages/x86_64").join(f)).unwrap()
                == fs::read(d.join("rebuilt-packages/x86_64").join(f)).unwrap(),
            "{f} differs"
        );
    }
    // A different source gives a different package, and rebuild says where.
    fs::write(d.join("recipe/greet.sh"), "#!/bin/sh\necho goodbye\n").unwrap();
    let o = run_melange(
        d,
        &[
            "rebuild",
            "--bootstrap",
            "--source-dir",
            "recipe",
            "--signing-key",
            "k.rsa",
            "--out-dir",
            "again",
            main.to_str().unwrap(),
        ],
        &[],
    );
    assert!(!o.status.success(), "{}", text(&o));
    let s = text(&o);
    assert!(s.contains("changed: usr/bin/greet: digests"), "{s}");
    assert!(s.contains("changed: .PKGINFO"), "{s}");
    assert!(
        s.contains("-datahash = ") && s.contains("APK digest diff:"),
        "{s}"
    );
}

#[test]
fn license_check_reports_and_fixes_the_copyright() {
    let t = tempfile::tempdir().unwrap();
    let d = t.path();
    tarball(
        d,
        "greeter-1.0.0",
        &[
            ("LICENSE", MIT),
            ("greet.sh", "#!/bin/sh\necho hi\n"),
            ("vendor/lib/COPYING", "GNU GENERAL PUBLIC LICENSE\n"),
        ],
        &d.join("www/greeter-1.0.0.tar.gz"),
    );
    let sum = sha256_hex(&fs::read(d.join("www/greeter-1.0.0.tar.gz")).unwrap());
    let srv = FileServer::start(d.join("www"), None);
    let recipe = format!(
        "package:\n  name: greeter\n  version: 1.0.0\n  epoch: 0\n  description: says hello\n  copyright:\n    # what we thought\n    - license: Apache-2.0\n      license-path: LICENSE\n  dependencies:\n    runtime:\n      - busybox # keep\npipeline:\n  - uses: fetch\n    with:\n      uri: http://127.0.0.1:{}/greeter-${{{{package.version}}}}.tar.gz\n      expected-sha256: {sum}\n  - runs: make\n",
        srv.port
    );
    fs::write(d.join("greeter.yaml"), &recipe).unwrap();
    let o = run_melange(
        d,
        &["license-check", "greeter.yaml", "--workdir", "work"],
        &[],
    );
    assert!(o.status.success(), "{}", text(&o));
    let s = text(&o);
    assert!(s.contains("INFO checking license information"), "{s}");
    assert!(s.contains("INFO   LICENSE: MIT (1.000000) (notice)"), "{s}");
    assert!(s.contains("WARN detected license differences:"), "{s}");
    assert!(s.contains("WARN   LICENSE: MIT != Apache-2.0"), "{s}");
    assert!(s.contains("INFO license information check complete"), "{s}");
    // The shallow scan leaves vendored licences out; the sources were fetched and extracted.
    assert!(!s.contains("vendor/lib/COPYING"), "{s}");
    assert!(d.join("work/greet.sh").is_file());
    // --fix writes what was found, the rest of the file as it was.
    let o = run_melange(d, &["license-check", "greeter.yaml", "--fix"], &[]);
    assert!(o.status.success(), "{}", text(&o));
    let fixed = fs::read_to_string(d.join("greeter.yaml")).unwrap();
    assert_eq!(
        fixed,
        recipe.replace(
            "  copyright:\n    # what we thought\n    - license: Apache-2.0\n      license-path: LICENSE\n",
            "  copyright:\n    - license: MIT\n      license-path: LICENSE\n"
        )
    );
    let o = run_melange(d, &["license-check", "greeter.yaml"], &[]);
    assert!(
        text(&o).contains("WARN no license differences detected"),
        "{}",
        text(&o)
    );
    // A folder is scanned as it is; deep scans see vendored licence files too.
    let o = run_melange(d, &["license-check", "work", "--scan-type", "deep"], &[]);
    let s = text(&o);
    assert!(o.status.success(), "{s}");
    assert!(s.contains("LICENSE: MIT (1.000000) (notice)"), "{s}");
    assert!(
        s.contains("vendor/lib/COPYING: NOASSERTION (0.000000 low-confidence)"),
        "{s}"
    );
    let o = run_melange(d, &["license-check", "work", "--scan-type", "wide"], &[]);
    assert!(!o.status.success() && text(&o).contains("invalid scan-type"));
}

fn git(dir: &Path, args: &[&str]) -> String {
    pallet_test_support::git(dir, args).unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn source_get_applies_patches_and_pop_writes_them_back() {
    if !have("git") {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let d = t.path();
    let up = d.join("upstream");
    fs::create_dir_all(&up).unwrap();
    git(&up, &["init", "-q", "-b", "main"]);
    fs::write(up.join("greet.sh"), "#!/bin/sh\necho hello\n").unwrap();
    git(&up, &["add", "."]);
    git(&up, &["commit", "-q", "-m", "first"]);
    let base = git(&up, &["rev-parse", "HEAD"]);
    // A later upstream commit that the recipe does not want.
    fs::write(up.join("greet.sh"), "#!/bin/sh\necho newer\n").unwrap();
    git(&up, &["commit", "-q", "-am", "newer"]);
    fs::create_dir_all(d.join("greet")).unwrap();
    fs::write(
        d.join("greet/fix.patch"),
        "--- a/greet.sh\n+++ b/greet.sh\n@@ -1,2 +1,2 @@\n #!/bin/sh\n-echo hello\n+echo hello, patched\n",
    )
    .unwrap();
    let recipe = format!(
        "package:\n  name: greet\n  version: 1.0.0\n  epoch: 0\n  description: says hello\n\npipeline:\n  # upstream source\n  - uses: git-checkout\n    with:\n      repository: {}\n      expected-commit: {base}\n\n  - uses: patch\n    with:\n      patches: fix.patch\n\n  - runs: make # build\n",
        up.display()
    );
    fs::write(d.join("greet.yaml"), &recipe).unwrap();
    let o = run_melange(d, &["source", "get", "greet.yaml", "-o", "src"], &[]);
    assert!(o.status.success(), "{}", text(&o));
    let clone = d.join("src/greet");
    assert_eq!(
        fs::read_to_string(clone.join("greet.sh")).unwrap(),
        "#!/bin/sh\necho hello, patched\n"
    );
    assert_eq!(git(&clone, &["rev-list", "--count", "HEAD"]), "2");
    assert_eq!(git(&clone, &["rev-parse", "HEAD~1"]), base);
    // Work on the clone, then pop the commits back into patches and the recipe.
    fs::write(clone.join("NEWS"), "more\n").unwrap();
    git(&clone, &["add", "NEWS"]);
    git(&clone, &["commit", "-q", "-m", "add news"]);
    let o = run_melange(d, &["source", "pop", "greet.yaml", "-o", "src"], &[]);
    assert!(o.status.success(), "{}", text(&o));
    let mut patches: Vec<String> = fs::read_dir(d.join("greet"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("000"))
        .collect();
    patches.sort();
    assert_eq!(patches, ["0001-fix.patch", "0002-add-news.patch"]);
    let after = fs::read_to_string(d.join("greet.yaml")).unwrap();
    assert_eq!(
        after,
        recipe.replace(
            "  - uses: patch\n    with:\n      patches: fix.patch\n",
            "  - uses: git-am\n    with:\n      patches: 0001-fix.patch 0002-add-news.patch\n"
        )
    );
    // get again after pop: the git-am step's patches apply the same way.
    let o = run_melange(d, &["source", "get", "greet.yaml", "-o", "src2"], &[]);
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(
        git(&d.join("src2/greet"), &["rev-list", "--count", "HEAD"]),
        "3"
    );
    assert!(d.join("src2/greet/NEWS").is_file());
    // Without a git-checkout there is nothing to get.
    fs::write(
        d.join("none.yaml"),
        "package:\n  name: none\n  version: 1\n  epoch: 0\npipeline:\n  - runs: true\n",
    )
    .unwrap();
    let o = run_melange(d, &["source", "get", "none.yaml"], &[]);
    assert!(!o.status.success() && text(&o).contains("no git-checkout pipeline"));
}

/// `.melange.yaml` of a package, read with the tar crate (a second reader).
fn embedded_config(apk: &Path) -> String {
    use std::io::Read as _;
    let f = fs::File::open(apk).unwrap();
    let mut ar = tar::Archive::new(flate2::read::MultiGzDecoder::new(f));
    for e in ar.entries().unwrap() {
        let mut e = e.unwrap();
        if e.path().unwrap().to_string_lossy() == ".melange.yaml" {
            let mut s = String::new();
            e.read_to_string(&mut s).unwrap();
            return s;
        }
    }
    panic!("no .melange.yaml in {}", apk.display());
}

#[test]
fn scan_agrees_with_packages_melange_built() {
    let Some(s) = shared() else {
        eprintln!("SKIPPED: no shared fixtures");
        return;
    };
    let gen_dir = s.join("fixtures/upstream-testdata/melange/generated_x86_64");
    let t = tempfile::tempdir().unwrap();
    let d = t.path();
    fs::create_dir_all(d.join("packages/x86_64")).unwrap();
    for name in ["shbang-test-1-r1", "ld-so-conf-d-test-1-r1"] {
        let apk = gen_dir.join(format!("{name}.apk"));
        fs::copy(&apk, d.join("packages/x86_64").join(format!("{name}.apk"))).unwrap();
        fs::write(d.join(format!("{name}.yaml")), embedded_config(&apk)).unwrap();
        // melange's layout (its comment line, maintainer before builddate, no builddate for
        // epoch 0) is kept, so only a real change would show.
        let o = run_melange(
            d,
            &["scan", &format!("{name}.yaml"), "--diff", "--comments"],
            &[],
        );
        assert!(o.status.success(), "{name}: {}", text(&o));
        assert_eq!(stdout(&o), "", "{name}");
    }
    let o = run_melange(d, &["scan", "shbang-test-1-r1.yaml"], &[]);
    let s = stdout(&o);
    assert!(
        s.starts_with("# Generated by melange\npkgname = shbang-test\n"),
        "{s}"
    );
    assert!(
        s.contains("depend = cmd:bash\n") && s.contains("depend = so:libc.so.6\n"),
        "{s}"
    );
}

/// `melange initramfs`: the init package and the extra packages from the named repositories
/// and keys, as a newc archive whose `/init` the kernel runs: the archive is booted in qemu
/// with Debian's kernel and the init prints its line.
#[test]
fn initramfs_boots_with_its_init() {
    let Some(s) = shared() else {
        eprintln!("SKIPPED: no ../shared/fixtures");
        return;
    };
    let alpine = s.join("fixtures/alpine-3.19");
    let t = tempfile::tempdir().unwrap();
    let d = t.path();
    // An init package of our own, in a signed local repository beside Alpine's.
    fs::create_dir_all(d.join("root")).unwrap();
    fs::write(
        d.join("root/init"),
        "#!/bin/sh\nmount -t proc proc /proc\necho PALLET-INITRAMFS-OK\npoweroff -f\n",
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt as _;
    fs::set_permissions(d.join("root/init"), fs::Permissions::from_mode(0o755)).unwrap();
    fs::create_dir_all(d.join("repo/x86_64")).unwrap();
    let apk = "repo/x86_64/test-init-1-r0.apk";
    for args in [
        &[
            "mkpkg",
            "--info",
            "name=test-init",
            "--info",
            "version=1-r0",
            "--info",
            "arch=x86_64",
            "--info",
            "depend=busybox",
            "--files",
            "root",
            "-o",
            apk,
        ][..],
        &["keygen", "k.rsa"][..],
        &[
            "index",
            "-o",
            "repo/x86_64/APKINDEX.tar.gz",
            "--signing-key",
            "k.rsa",
            apk,
        ][..],
    ] {
        let o = run(args, d, &[]);
        assert!(o.status.success(), "{args:?}: {}", text(&o));
    }
    let mut keys: Vec<String> = fs::read_dir(alpine.join("keys"))
        .unwrap()
        .map(|e| e.unwrap().path().display().to_string())
        .collect();
    keys.push("k.rsa.pub".into());
    let repos = format!("{},./repo", alpine.display());
    let keys = keys.join(",");
    let initramfs = |out: &str| {
        run_melange(
            d,
            &[
                "initramfs",
                "--arch",
                "x86_64",
                "-o",
                out,
                "-r",
                &repos,
                "-k",
                &keys,
                "--init-package",
                "test-init",
                "-p",
                "alpine-baselayout-data",
                "--cache-dir",
                "cache",
                "--offline",
            ],
            &[("SOURCE_DATE_EPOCH", "1700000000")],
        )
    };
    let o = initramfs("i.cpio");
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        text(&o).contains("QEMU_BASE_INITRAMFS=i.cpio"),
        "{}",
        text(&o)
    );
    let o = initramfs("i.cpio.gz");
    assert!(o.status.success(), "{}", text(&o));
    // The same archive, gzip-compressed; the same bytes again from the same inputs.
    let raw = fs::read(d.join("i.cpio")).unwrap();
    let mut unzipped = vec![];
    use std::io::Read as _;
    flate2::read::GzDecoder::new(fs::File::open(d.join("i.cpio.gz")).unwrap())
        .read_to_end(&mut unzipped)
        .unwrap();
    assert_eq!(raw, unzipped);
    assert!(initramfs("again.cpio").status.success());
    assert_eq!(fs::read(d.join("again.cpio")).unwrap(), raw);
    let names = String::from_utf8_lossy(&raw).into_owned();
    for want in ["init\0", "bin/busybox\0", "etc/nsswitch.conf\0"] {
        assert!(names.contains(want), "no {want} in the archive");
    }
    // Bad input says what to do.
    let o = run_melange(d, &["initramfs", "-o", "x.cpio"], &[]);
    assert!(
        !o.status.success() && text(&o).contains("--arch"),
        "{}",
        text(&o)
    );
    let o = run_melange(d, &["initramfs", "--arch", "vax", "-o", "x.cpio"], &[]);
    assert!(
        !o.status.success() && text(&o).contains("not an architecture"),
        "{}",
        text(&o)
    );
    assert!(!d.join("x.cpio").exists());

    // The kernel unpacks it and runs its /init.
    let Some(kernel) = qemu_kernel() else {
        eprintln!("SKIPPED part: no kernel to boot the initramfs with");
        return;
    };
    let o = std::process::Command::new("timeout")
        .args([
            "300",
            "qemu-system-x86_64",
            "-nodefaults",
            "-no-user-config",
            "-nographic",
        ])
        .args([
            "-no-reboot",
            "-M",
            "q35,accel=tcg",
            "-cpu",
            "Haswell-v4",
            "-m",
            "512",
        ])
        .arg("-kernel")
        .arg(&kernel)
        .arg("-initrd")
        .arg(d.join("i.cpio.gz"))
        .args([
            "-append",
            "console=ttyS0 panic=-1 quiet",
            "-serial",
            "stdio",
        ])
        .args(["-monitor", "none"])
        .output()
        .unwrap();
    let console = String::from_utf8_lossy(&o.stdout);
    assert!(
        console.contains("PALLET-INITRAMFS-OK"),
        "{console}\n{}",
        text(&o)
    );
}
