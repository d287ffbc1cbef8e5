//! End to end: recipes written to attack the packager. Each is built with the real binary and
//! the result checked: nothing the recipe says may add a line to `.PKGINFO` or the index, and a
//! name that reads as a path is refused before anything is written.

mod common;

use std::fs;
use std::path::Path;

use common::*;

fn pkginfo(apk: &Path) -> String {
    let o = std::process::Command::new("tar")
        .args(["-xzOf"])
        .arg(apk)
        .arg(".PKGINFO")
        .output()
        .unwrap();
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// A description holding `\n depend = …` and `\n provides = cmd:sudo` once added those lines to
/// the package's `.PKGINFO` (and an index built from it by apk-tools would have trusted them).
#[test]
fn description_line_breaks_do_not_inject_pkginfo_lines() {
    if !have("bwrap") {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let d = t.path();
    fs::write(
        d.join("inj.yaml"),
        "package:\n  name: inj\n  version: 1.0.0\n  epoch: 0\n  description: \"harmless\\ndepend = evil-dep\\nprovides = cmd:sudo=9\\r\\nlicense = none\"\n  copyright:\n    - license: MIT\npipeline:\n  - runs: mkdir -p ${{targets.destdir}}/usr/share/inj\n",
    )
    .unwrap();
    let o = run(
        &[
            "pkg",
            "build",
            "--bootstrap",
            "inj.yaml",
            "--arch",
            "x86_64",
        ],
        d,
        &[("SOURCE_DATE_EPOCH", "1700000000")],
    );
    assert!(o.status.success(), "{}", text(&o));
    let apk = d.join("packages/x86_64/inj-1.0.0-r0.apk");
    let info = pkginfo(&apk);
    let lines: Vec<&str> = info.lines().collect();
    assert!(
        !lines.iter().any(|l| l.starts_with("depend = evil")
            || l.starts_with("provides = cmd:sudo")
            || l.starts_with("license = none")),
        "{info}"
    );
    assert!(
        lines
            .contains(&"pkgdesc = harmless depend = evil-dep provides = cmd:sudo=9 license = none"),
        "{info}"
    );
    // The index record is one line per field too.
    let o = std::process::Command::new("tar")
        .args(["-xzOf"])
        .arg(d.join("packages/x86_64/APKINDEX.tar.gz"))
        .arg("APKINDEX")
        .output()
        .unwrap();
    let index = String::from_utf8_lossy(&o.stdout);
    assert!(
        !index
            .lines()
            .any(|l| l.starts_with("p:") && l.contains("sudo")),
        "{index}"
    );
}

/// Names that read as paths, and values that would need a second line, are refused with the
/// file and the field named, and leave no package behind.
#[test]
fn path_like_names_and_multi_line_fields_are_refused() {
    if !have("bwrap") {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let d = t.path();
    let cases = [
        (
            "subpkg-dotdot",
            "subpackages:\n  - name: ../../escape\n    pipeline:\n      - runs: 'true'\n",
            "name",
        ),
        (
            "subpkg-slash",
            "subpackages:\n  - name: a/b\n    pipeline:\n      - runs: 'true'\n",
            "name",
        ),
        (
            "subpkg-newline",
            "subpackages:\n  - name: \"x\\ny\"\n    pipeline:\n      - runs: 'true'\n",
            "name",
        ),
        (
            "dep-newline",
            "  dependencies:\n    runtime:\n      - \"busybox\\nprovides = cmd:sudo\"\n",
            "dependencies",
        ),
        (
            "url-newline",
            "  url: \"https://x.invalid/\\ndepend = evil\"\n",
            "url",
        ),
    ];
    for (name, extra, want) in cases {
        // Package-level keys go under `package:`, the others at the top.
        let (pkg_extra, top_extra) = if extra.starts_with("  ") {
            (extra, "")
        } else {
            ("", extra)
        };
        let file = format!("{name}.yaml");
        fs::write(
            d.join(&file),
            format!(
                "package:\n  name: {name}\n  version: 1.0.0\n  epoch: 0\n  description: d\n{pkg_extra}pipeline:\n  - runs: mkdir -p ${{{{targets.destdir}}}}/x\n{top_extra}"
            ),
        )
        .unwrap();
        let o = run(
            &["pkg", "build", "--bootstrap", &file, "--arch", "x86_64"],
            d,
            &[],
        );
        let msg = text(&o);
        assert!(!o.status.success(), "{name} built: {msg}");
        assert!(msg.contains(&file) && msg.contains(want), "{name}: {msg}");
        assert!(
            !d.join(format!("packages/x86_64/{name}-1.0.0-r0.apk"))
                .exists(),
            "{name} left a package"
        );
    }
    assert!(
        !t.path()
            .parent()
            .unwrap()
            .join("escape-1.0.0-r0.apk")
            .exists()
    );
}
