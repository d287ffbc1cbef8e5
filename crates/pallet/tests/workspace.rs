//! End to end: `pallet build` on a workspace of five recipes (a library with a -dev
//! subpackage, a program that needs the subpackage, a recipe with a patch that needs the
//! program and zlib from an external repository, …) and two images, against the real Alpine
//! fixtures; the image is then run under runc.

mod common;

use std::fs;
use std::path::Path;

use common::*;

const LIBHELLO: &str = r##"package:
  name: libhello
  version: 1.0.0
  epoch: 0
  description: a library
  copyright: [{license: MIT}]
environment:
  contents:
    packages: [busybox]
pipeline:
  - runs: |
      mkdir -p ${{targets.destdir}}/usr/lib
      echo "hello-lib-v1" > ${{targets.destdir}}/usr/lib/libhello.txt
subpackages:
  - name: libhello-dev
    description: headers
    pipeline:
      - runs: |
          mkdir -p ${{targets.subpkgdir}}/usr/include
          echo "#define HELLO 1" > ${{targets.subpkgdir}}/usr/include/hello.h
"##;

const HELLO: &str = r##"# a program that needs the library's -dev subpackage
package:
  name: hello
  version: 2.0.0
  epoch: 0
  description: a program
  copyright: [{license: MIT}]
  dependencies:
    runtime: [libhello]
environment:
  contents:
    packages: [busybox, libhello-dev]
pipeline:
  - runs: |
      test -f /usr/include/hello.h
      mkdir -p ${{targets.destdir}}/usr/bin
      printf '#!/bin/sh\necho "hello from the workspace: $(cat /usr/lib/libhello.txt) $(cat /usr/share/greet/greeting.txt)"\n' > ${{targets.destdir}}/usr/bin/hello
      chmod 755 ${{targets.destdir}}/usr/bin/hello
"##;

const GREET: &str = r##"package:
  name: greet
  version: 0.1.0
  epoch: 0
  description: patched sources, zlib from the external repository
  copyright: [{license: MIT}]
environment:
  contents:
    packages: [busybox, zlib, hello]
pipeline:
  - runs: |
      test -e /lib/libz.so.1
      mkdir -p ${{targets.destdir}}/usr/share/greet
      # Alpine's busybox has no patch applet: apply the one-line patch by hand.
      sed -n 's/^+\([^+].*\)/\1/p' fix.patch > ${{targets.destdir}}/usr/share/greet/greeting.txt
"##;

const TOOLS: &str = r##"package:
  name: tools
  version: 3
  epoch: 1
  description: needs a subpackage of the library
  copyright: [{license: MIT}]
environment:
  contents:
    packages: [busybox, libhello-dev]
pipeline:
  - runs: |
      mkdir -p ${{targets.destdir}}/usr/share/tools
      cp /usr/include/hello.h ${{targets.destdir}}/usr/share/tools/
test:
  environment:
    contents:
      packages: [busybox]
  pipeline:
    - runs: |
        grep -q HELLO /usr/share/tools/hello.h
        echo tools test ran
"##;

const STANDALONE: &str = r##"package:
  name: standalone
  version: 1
  epoch: 0
  description: needs nothing of the workspace
  copyright: [{license: MIT}]
environment:
  contents:
    packages: [busybox]
pipeline:
  - runs: |
      mkdir -p ${{targets.destdir}}/usr/share/standalone
      cat notes.txt > ${{targets.destdir}}/usr/share/standalone/notes
"##;

fn patch(to: &str) -> String {
    format!("--- a/greeting.txt\n+++ b/greeting.txt\n@@ -1 +1 @@\n-hi\n+{to}\n")
}

/// The workspace, in wolfi-os's flat layout: `NAME.yaml` with `NAME/` holding its sources.
fn workspace(d: &Path, alpine: &Path) {
    let keys: String = {
        let mut v: Vec<String> = fs::read_dir(alpine.join("keys"))
            .unwrap()
            .map(|e| format!("  - {}\n", e.unwrap().path().display()))
            .collect();
        v.sort();
        v.concat()
    };
    fs::write(
        d.join("pallet.yaml"),
        format!("repositories: [{}]\nkeyring:\n{keys}", alpine.display()),
    )
    .unwrap();
    fs::write(d.join("libhello.yaml"), LIBHELLO).unwrap();
    fs::write(d.join("hello.yaml"), HELLO).unwrap();
    fs::write(d.join("greet.yaml"), GREET).unwrap();
    fs::create_dir_all(d.join("greet")).unwrap();
    fs::write(d.join("greet/greeting.txt"), "hi\n").unwrap();
    fs::write(d.join("greet/fix.patch"), patch("good morning")).unwrap();
    fs::write(d.join("tools.yaml"), TOOLS).unwrap();
    fs::write(d.join("standalone.yaml"), STANDALONE).unwrap();
    fs::create_dir_all(d.join("standalone")).unwrap();
    fs::write(d.join("standalone/notes.txt"), "notes\n").unwrap();
    fs::write(
        d.join("app.yaml"),
        "contents:\n  packages: [busybox, hello, greet]\nentrypoint:\n  command: /usr/bin/hello\naccounts:\n  run-as: 65532\n  users:\n    - username: nonroot\n      uid: 65532\n      gid: 65532\n  groups:\n    - groupname: nonroot\n      gid: 65532\narchs: [x86_64]\n",
    )
    .unwrap();
    fs::write(
        d.join("base.apko.yaml"),
        "contents:\n  packages: [busybox, libhello]\narchs: [x86_64]\n",
    )
    .unwrap();
}

fn build(d: &Path, cache: &Path, extra: &[&str]) -> (bool, String) {
    let mut args = vec![
        "build",
        "--arch",
        "x86_64",
        "--cache-dir",
        cache.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    let o = run(&args, d, &[("SOURCE_DATE_EPOCH", "1700000000")]);
    (o.status.success(), text(&o))
}

fn plan(d: &Path, cache: &Path) -> serde_json::Value {
    let o = run(
        &[
            "build",
            "--plan",
            "--json",
            "--arch",
            "x86_64",
            "--cache-dir",
            cache.to_str().unwrap(),
        ],
        d,
        &[("SOURCE_DATE_EPOCH", "1700000000")],
    );
    assert!(o.status.success(), "{}", text(&o));
    serde_json::from_slice(&o.stdout).unwrap()
}

/// `(name, state, reason)` of every node of a plan.
fn states(p: &serde_json::Value) -> Vec<(String, String, String)> {
    let mut v = vec![];
    for (list, key) in [("packages", "package"), ("images", "image")] {
        for n in p[list].as_array().unwrap() {
            v.push((
                n[key].as_str().unwrap().to_string(),
                n["state"].as_str().unwrap().to_string(),
                n["reason"].as_str().unwrap().to_string(),
            ));
        }
    }
    v
}

fn state_of(p: &serde_json::Value, name: &str) -> (String, String) {
    states(p)
        .into_iter()
        .find(|(n, _, _)| n == name)
        .map(|(_, s, r)| (s, r))
        .unwrap_or_else(|| panic!("{name} not in the plan"))
}

fn built_lines(out: &str) -> Vec<String> {
    let mut v: Vec<String> = out
        .lines()
        .filter_map(|l| l.strip_prefix("built   "))
        .map(|l| {
            l.split(' ')
                .take(if l.starts_with("image ") { 2 } else { 1 })
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect();
    v.sort();
    v
}

fn outputs(d: &Path) -> std::collections::BTreeMap<String, String> {
    let mut m = tree_digests(&d.join("packages"), &["buildlogs"]);
    for (k, v) in tree_digests(&d.join("images"), &["buildlogs"]) {
        m.insert(format!("images/{k}"), v);
    }
    m
}

#[test]
fn workspace_builds_in_order_then_only_what_changed() {
    let Some(s) = shared() else { return };
    if !have("bwrap") {
        return;
    }
    let alpine = s.join("fixtures/alpine-3.19");
    let t = tempfile::tempdir().unwrap();
    let d = &t.path().join("ws");
    fs::create_dir_all(d).unwrap();
    workspace(d, &alpine);
    let cache = &t.path().join("cache");

    // The plan, before anything exists: a valid order, externals named, everything new.
    let p = plan(d, cache);
    let order: Vec<String> = p["packages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["package"].as_str().unwrap().to_string())
        .collect();
    let pos = |n: &str| order.iter().position(|x| x == n).unwrap();
    assert!(pos("libhello") < pos("hello") && pos("hello") < pos("greet"));
    assert!(pos("libhello") < pos("tools"));
    let greet = p["packages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["package"] == "greet")
        .unwrap();
    // hello runs with libhello installed (its runtime dependency), so greet waits for both.
    assert_eq!(greet["after"], serde_json::json!(["hello", "libhello"]));
    assert!(
        greet["external"]
            .as_array()
            .unwrap()
            .contains(&serde_json::json!("zlib"))
    );
    assert!(
        states(&p)
            .iter()
            .all(|(_, s, r)| s == "build" && r == "new"),
        "{p}"
    );

    // First build: everything, and the key made on the way.
    let (ok, out) = build(d, cache, &[]);
    assert!(ok, "{out}");
    assert_eq!(
        built_lines(&out),
        [
            "greet",
            "hello",
            "image app",
            "image base",
            "libhello",
            "standalone",
            "tools"
        ],
        "{out}"
    );
    assert!(d.join("melange.rsa").is_file() && d.join("melange.rsa.pub").is_file());
    assert!(d.join("packages/x86_64/buildlogs/greet.log").is_file());
    for f in [
        "greet-0.1.0-r0.apk",
        "libhello-dev-1.0.0-r0.apk",
        "tools-3-r1.apk",
        "APKINDEX.tar.gz",
    ] {
        assert!(d.join("packages/x86_64").join(f).is_file(), "{f}");
    }
    let o = run(
        &[
            "verify",
            "--keyring",
            "melange.rsa.pub",
            "packages/x86_64/APKINDEX.tar.gz",
            "packages/x86_64/greet-0.1.0-r0.apk",
        ],
        d,
        &[],
    );
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        d.join("images/app.tar").is_file()
            && d.join("images/app.sbom/sbom-x86_64.spdx.json").is_file()
    );
    let first = outputs(d);

    // Second build: all cached, nothing built.
    let (ok, out) = build(d, cache, &[]);
    assert!(ok, "{out}");
    assert!(built_lines(&out).is_empty(), "{out}");
    assert!(out.contains("0 built, 7 cached"), "{out}");
    assert!(
        states(&plan(d, cache))
            .iter()
            .all(|(_, s, _)| s == "cached")
    );

    // A comment changes nothing.
    fs::write(d.join("hello.yaml"), format!("# another comment\n{HELLO}")).unwrap();
    let app = fs::read_to_string(d.join("app.yaml")).unwrap();
    fs::write(d.join("app.yaml"), format!("# the image\n{app}")).unwrap();
    assert!(
        states(&plan(d, cache))
            .iter()
            .all(|(_, s, _)| s == "cached")
    );
    let (ok, out) = build(d, cache, &[]);
    assert!(ok && built_lines(&out).is_empty(), "{out}");

    // A patch changes: that package and what reaches it, nothing else.
    fs::write(d.join("greet/fix.patch"), patch("good evening")).unwrap();
    let p = plan(d, cache);
    assert_eq!(
        state_of(&p, "greet"),
        ("build".into(), "source file greet/fix.patch changed".into())
    );
    assert_eq!(state_of(&p, "hello").0, "cached");
    assert_eq!(state_of(&p, "app").0, "build");
    let (ok, out) = build(d, cache, &[]);
    assert!(ok, "{out}");
    assert_eq!(built_lines(&out), ["greet", "image app"], "{out}");

    // A change that leaves the output as it was stops there (early cutoff): a file added to
    // the source folder that the build does not read.
    fs::write(d.join("standalone/unused.txt"), "x\n").unwrap();
    let (ok, out) = build(d, cache, &[]);
    assert!(ok, "{out}");
    assert_eq!(built_lines(&out), ["standalone"], "{out}");
    assert!(out.contains("output unchanged"), "{out}");

    // An output dependency that changes bytes propagates with its reason.
    fs::write(
        d.join("libhello.yaml"),
        LIBHELLO.replace("hello-lib-v1", "hello-lib-v2"),
    )
    .unwrap();
    let (ok, out) = build(d, cache, &["-j", "1"]);
    assert!(ok, "{out}");
    assert!(
        out.contains("build libhello (x86_64): recipe changed"),
        "{out}"
    );
    assert!(
        out.contains(
            "build hello (x86_64): dependency libhello-dev rebuilt with different contents"
        ),
        "{out}"
    );
    assert_eq!(
        built_lines(&out),
        [
            "greet",
            "hello",
            "image app",
            "image base",
            "libhello",
            "tools"
        ],
        "{out}"
    );
    let after_change = outputs(d);

    // The image runs what the workspace built.
    if have("skopeo") && have("umoci") && have("runc") {
        let layout = t.path().join("layout");
        let o = std::process::Command::new("skopeo")
            .args(["copy", "--quiet"])
            .arg(format!(
                "docker-archive:{}",
                d.join("images/app.tar").display()
            ))
            .arg(format!("oci:{}:app", layout.display()))
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", text(&o));
        let printed = run_bundle(&format!("{}:app", layout.display()), t.path(), "ws");
        assert_eq!(
            printed.trim(),
            "hello from the workspace: hello-lib-v2 good evening"
        );
    }

    // Without the cache, the same bytes again.
    fs::remove_dir_all(cache).unwrap();
    fs::remove_dir_all(d.join("packages")).unwrap();
    fs::remove_dir_all(d.join("images")).unwrap();
    let (ok, out) = build(d, cache, &[]);
    assert!(ok, "{out}");
    assert_eq!(outputs(d), after_change);
    assert_ne!(first, after_change);

    // A failing recipe: the build stops; with --keep-going the rest is built and what waits
    // for the failure is named.
    fs::write(
        d.join("broken.yaml"),
        "package:\n  name: broken\n  version: 1\n  epoch: 0\n  description: fails\n  copyright: [{license: MIT}]\nenvironment:\n  contents:\n    packages: [busybox]\npipeline:\n  - runs: |\n      echo about to fail\n      exit 3\n",
    )
    .unwrap();
    fs::write(
        d.join("needs-broken.yaml"),
        STANDALONE
            .replace("name: standalone", "name: needs-broken")
            .replace("packages: [busybox]", "packages: [busybox, broken]"),
    )
    .unwrap();
    fs::write(d.join("standalone/notes.txt"), "changed\n").unwrap();
    let (ok, out) = build(d, cache, &["-j", "1"]);
    assert!(!ok, "{out}");
    assert!(
        out.contains("FAILED  broken (x86_64)") && out.contains("about to fail"),
        "{out}"
    );
    assert!(
        out.contains("log: ") && out.contains("buildlogs/broken.log"),
        "{out}"
    );
    assert!(out.contains("1 failed"), "{out}");
    let (ok, out) = build(d, cache, &["--keep-going"]);
    assert!(!ok, "{out}");
    assert!(
        built_lines(&out).contains(&"standalone".to_string()),
        "{out}"
    );
    assert!(
        out.contains("skipped needs-broken (x86_64): broken (x86_64) failed"),
        "{out}"
    );
}

#[test]
fn two_checkouts_and_two_caches_give_the_same_keys_and_bytes() {
    let Some(s) = shared() else { return };
    if !have("bwrap") {
        return;
    }
    let alpine = s.join("fixtures/alpine-3.19");
    let t = tempfile::tempdir().unwrap();
    let a = &t.path().join("one/ws");
    let b = &t.path().join("elsewhere/deeper/checkout");
    for d in [a, b] {
        fs::create_dir_all(d).unwrap();
        workspace(d, &alpine);
    }
    // One key for both (as a team shares it), two caches.
    let (ok, out) = build(a, &t.path().join("cache-a"), &[]);
    assert!(ok, "{out}");
    fs::copy(a.join("melange.rsa"), b.join("melange.rsa")).unwrap();
    fs::copy(a.join("melange.rsa.pub"), b.join("melange.rsa.pub")).unwrap();
    let (ok, out) = build(b, &t.path().join("cache-b"), &[]);
    assert!(ok, "{out}");
    assert_eq!(outputs(a), outputs(b));
    let keys = |d: &Path, c: &str| -> Vec<(String, String)> {
        let p = plan(d, &t.path().join(c));
        let mut v = vec![];
        for (list, key) in [("packages", "package"), ("images", "image")] {
            for n in p[list].as_array().unwrap() {
                v.push((
                    n[key].as_str().unwrap().to_string(),
                    n["key"].as_str().unwrap().to_string(),
                ));
            }
        }
        v
    };
    assert_eq!(keys(a, "cache-a"), keys(b, "cache-b"));
}

#[test]
fn bad_workspaces_say_what_is_wrong() {
    let t = tempfile::tempdir().unwrap();
    let d = t.path();
    fs::write(d.join("pallet.yaml"), "signing_key: x\n").unwrap();
    let o = run(&["build", "--plan"], d, &[]);
    assert!(!o.status.success());
    assert!(
        text(&o).contains("pallet.yaml") && text(&o).contains("signing_key"),
        "{}",
        text(&o)
    );
    fs::write(d.join("pallet.yaml"), "").unwrap();
    fs::write(d.join("bad.yaml"), "package:\n  name: a/b\n  version: 1\n").unwrap();
    let o = run(&["build", "--plan"], d, &[]);
    assert!(!o.status.success());
    assert!(text(&o).contains("bad.yaml"), "{}", text(&o));
    fs::remove_file(d.join("bad.yaml")).unwrap();
    let o = run(&["build", "nothing-here"], d, &[]);
    assert!(!o.status.success());
    assert!(text(&o).contains("'nothing-here'"), "{}", text(&o));
}

#[test]
fn plan_of_a_wolfi_sized_workspace_keeps_its_order() {
    let t = tempfile::tempdir().unwrap();
    let d = t.path();
    pallet_test_support::synthetic_workspace(d, 3400, 7);
    let o = run(
        &[
            "build",
            "--plan",
            "--json",
            "--cache-dir",
            d.join(".cache").to_str().unwrap(),
        ],
        d,
        &[],
    );
    assert!(o.status.success(), "{}", text(&o));
    let p: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_order(&p, 3400);
}

/// Every package comes after each workspace package it waits for (cycles are reported and
/// their members wait for nobody inside them).
fn assert_order(p: &serde_json::Value, n: usize) {
    let pk = p["packages"].as_array().unwrap();
    assert_eq!(pk.len(), n);
    let mut seen = std::collections::BTreeSet::new();
    for x in pk {
        for a in x["after"].as_array().unwrap() {
            assert!(
                seen.contains(a.as_str().unwrap()),
                "{} before {a}",
                x["package"]
            );
        }
        seen.insert(x["package"].as_str().unwrap().to_string());
    }
}

#[test]
fn real_wolfi_tree_plans_in_a_valid_order() {
    // The wolfi-os checkout, when one is at hand (PALLET_WOLFI_OS).
    let Some(dir) = std::env::var_os("PALLET_WOLFI_OS").map(std::path::PathBuf::from) else {
        eprintln!("SKIPPED: set PALLET_WOLFI_OS to a wolfi-os checkout");
        return;
    };
    let t = tempfile::tempdir().unwrap();
    let o = run(
        &[
            "build",
            "--plan",
            "--json",
            "--cache-dir",
            t.path().to_str().unwrap(),
            "-C",
            dir.to_str().unwrap(),
        ],
        t.path(),
        &[],
    );
    assert!(o.status.success(), "{}", text(&o));
    let p: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let n = p["packages"].as_array().unwrap().len();
    assert!(n > 1000, "{n}");
    assert_order(&p, n);
}

#[test]
fn tests_run_once_per_key() {
    let Some(s) = shared() else { return };
    if !have("bwrap") {
        return;
    }
    let alpine = s.join("fixtures/alpine-3.19");
    let t = tempfile::tempdir().unwrap();
    let d = &t.path().join("ws");
    fs::create_dir_all(d).unwrap();
    workspace(d, &alpine);
    let cache = t.path().join("cache");
    let test = |targets: &[&str]| {
        let mut args = vec![
            "test",
            "--arch",
            "x86_64",
            "--cache-dir",
            cache.to_str().unwrap(),
        ];
        args.extend_from_slice(targets);
        let o = run(&args, d, &[("SOURCE_DATE_EPOCH", "1700000000")]);
        (o.status.success(), text(&o))
    };
    let (ok, out) = test(&["tools"]);
    assert!(ok, "{out}");
    assert!(out.contains("passed  test tools (x86_64)"), "{out}");
    // Only what tools needs was built.
    assert!(
        !d.join("packages/x86_64/greet-0.1.0-r0.apk").exists(),
        "{out}"
    );
    assert!(
        fs::read_to_string(d.join("packages/x86_64/buildlogs/tools.test.log"))
            .unwrap()
            .contains("tools test ran")
    );
    let (ok, out) = test(&["tools"]);
    assert!(ok && out.contains("cached  test tools (x86_64)"), "{out}");
    // A failing test fails the command and names its log.
    fs::write(
        d.join("tools.yaml"),
        TOOLS.replace("grep -q HELLO", "grep -q NOPE"),
    )
    .unwrap();
    let (ok, out) = test(&["tools"]);
    assert!(!ok, "{out}");
    assert!(
        out.contains("FAILED  test tools (x86_64)") && out.contains("tools.test.log"),
        "{out}"
    );
}

#[test]
fn images_publish_to_a_registry_once_per_key() {
    let Some(s) = shared() else { return };
    if !(have("bwrap") && have("docker-registry") && have("skopeo")) {
        return;
    }
    let alpine = s.join("fixtures/alpine-3.19");
    let t = tempfile::tempdir().unwrap();
    let d = &t.path().join("ws");
    fs::create_dir_all(d).unwrap();
    workspace(d, &alpine);
    let reg = Registry::start(t.path(), None, None);
    let target = format!("127.0.0.1:{}/ws/app:1", reg.port);
    let settings = fs::read_to_string(d.join("pallet.yaml")).unwrap();
    fs::write(
        d.join("pallet.yaml"),
        format!("{settings}images:\n  app:\n    tags: ['app:1']\n    publish: ['{target}']\n"),
    )
    .unwrap();
    let cache = t.path().join("cache");
    let (ok, out) = build(d, &cache, &["app"]);
    assert!(ok, "{out}");
    let o = std::process::Command::new("skopeo")
        .args(["inspect", "--tls-verify=false", "--raw"])
        .arg(format!("docker://{target}"))
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("manifests"),
        "{}",
        text(&o)
    );
    // The same key is not pushed again; a new target is.
    let (ok, out) = build(d, &cache, &["app"]);
    assert!(ok && out.contains("cached  image app"), "{out}");
    let other = format!("127.0.0.1:{}/ws/other:1", reg.port);
    fs::write(
        d.join("pallet.yaml"),
        format!(
            "{settings}images:\n  app:\n    tags: ['app:1']\n    publish: ['{target}', '{other}']\n"
        ),
    )
    .unwrap();
    let (ok, out) = build(d, &cache, &["app"]);
    assert!(ok, "{out}");
    assert!(
        out.contains(&format!("not yet published to {other}")),
        "{out}"
    );
}

#[test]
fn targets_rdeps_and_the_graph() {
    let Some(s) = shared() else { return };
    let alpine = s.join("fixtures/alpine-3.19");
    let t = tempfile::tempdir().unwrap();
    let d = t.path();
    workspace(d, &alpine);
    let names = |args: &[&str]| -> Vec<String> {
        let mut a = vec!["build", "--plan", "--json", "--arch", "x86_64"];
        a.extend_from_slice(args);
        let o = run(&a, d, &[]);
        assert!(o.status.success(), "{}", text(&o));
        let p: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        let mut v: Vec<String> = p["packages"]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| n["package"].as_str().unwrap().to_string())
            .chain(
                p["images"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|n| format!("image {}", n["image"].as_str().unwrap())),
            )
            .collect();
        v.sort();
        v
    };
    // A subpackage names its recipe; a target brings what it needs.
    assert_eq!(names(&["libhello-dev"]), ["libhello"]);
    assert_eq!(names(&["greet"]), ["greet", "hello", "libhello"]);
    assert_eq!(names(&["greet.yaml"]), ["greet", "hello", "libhello"]);
    assert_eq!(names(&["base"]), ["image base", "libhello"]);
    // --rdeps: and everything downstream of it.
    assert_eq!(
        names(&["hello", "--rdeps"]),
        ["greet", "hello", "image app", "libhello"]
    );
    // Per-image and per-recipe settings have flags too.
    let o = run(
        &[
            "build",
            "--plan",
            "--json",
            "--tag",
            "base=b:2",
            "--tag",
            "base=b:3",
            "--bootstrap",
            "nope",
        ],
        d,
        &[],
    );
    assert!(
        !o.status.success() && text(&o).contains("recipes.nope"),
        "{}",
        text(&o)
    );
    let o = run(
        &[
            "build", "--plan", "--json", "--tag", "base=b:2", "--tag", "base=b:3", "base",
        ],
        d,
        &[],
    );
    assert!(o.status.success(), "{}", text(&o));
    let p: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(p["images"][0]["tags"], serde_json::json!(["b:2", "b:3"]));
    let o = run(&["build", "--dot", "--arch", "x86_64"], d, &[]);
    let dot = String::from_utf8_lossy(&o.stdout).to_string();
    assert!(dot.starts_with("digraph workspace {"), "{dot}");
    assert!(
        dot.contains("\"greet (x86_64)\" -> \"hello (x86_64)\";"),
        "{dot}"
    );
    assert!(dot.contains("\"image app\" [shape=box"), "{dot}");
}
