use super::*;
use crate::sca::elf::{self, testing::elf64};
use std::fs;
use std::os::unix::fs::PermissionsExt;

fn e(path: &str, mode: u32) -> Entry {
    Entry {
        path: path.into(),
        is_dir: false,
        is_symlink: false,
        mode,
        size: 1,
    }
}

fn dir(path: &str) -> Entry {
    Entry {
        is_dir: true,
        ..e(path, 0o755)
    }
}

/// A package of in-memory files: entries and contents.
struct Pkg {
    files: Vec<Entry>,
    data: BTreeMap<String, Vec<u8>>,
}

impl Pkg {
    fn new() -> Pkg {
        Pkg {
            files: vec![],
            data: BTreeMap::new(),
        }
    }

    fn file(mut self, path: &str, mode: u32, data: impl Into<Vec<u8>>) -> Pkg {
        let data = data.into();
        self.files.push(Entry {
            size: data.len() as u64,
            ..e(path, mode)
        });
        self.data.insert(path.into(), data);
        self
    }

    fn path(mut self, path: &str) -> Pkg {
        self.files.push(e(path, 0o644));
        self
    }

    fn lint_as(&self, name: &str, arch: Option<&str>, tests: Tests, rule: &str) -> Vec<Finding> {
        let policy = Policy {
            require: vec![],
            warn: vec![rule.to_string()],
        };
        lint(
            &Target {
                name,
                files: &self.files,
                contents: &self.data,
                arch,
                tests,
            },
            &policy,
        )
    }

    fn lint(&self, rule: &str) -> Vec<Finding> {
        self.lint_as("pkg", Some("x86_64"), Tests::Unknown, rule)
    }
}

#[test]
fn required_and_warn_rules() {
    let files = vec![
        e("usr/lib/libx.la", 0o644),
        e("usr/bin/su", 0o4755),
        e("tmp/x", 0o644),
        e("usr/lib/x.a", 0o644),
        e("usr/share/man/man1/x.1", 0o644),
    ];
    let f = lint_package("x", &files, &[], &[]);
    let rules: Vec<(&str, Severity)> = f.iter().map(|x| (x.rule, x.severity)).collect();
    assert!(rules.contains(&("libtool/la-files", Severity::Require)));
    assert!(rules.contains(&("setuidgid", Severity::Require)));
    assert!(rules.contains(&("tempdir", Severity::Require)));
    assert!(rules.contains(&("staticarchive", Severity::Warn)));
    assert!(rules.contains(&("maninfo", Severity::Warn)));
    let f = lint_package("x", &files, &["setuidgid".into()], &[]);
    assert!(
        f.iter()
            .any(|x| x.rule == "setuidgid" && x.severity == Severity::Warn)
    );
    assert!(lint_package("x-dev", &[e("usr/lib/x.a", 0o644)], &[], &[]).is_empty());
    // Ignored rules run only when asked for.
    assert!(lint_package("x", &[], &[], &[]).is_empty());
    let f = lint_package("x", &[], &[], &["empty".into()]);
    assert_eq!(f[0].rule, "empty");
    assert_eq!(f[0].severity, Severity::Warn);
}

#[test]
fn policies_as_melange_flags_make_them() {
    let d = Policy::default();
    assert_eq!(
        d.require,
        [
            "dev",
            "infodir",
            "libtool/la-files",
            "setuidgid",
            "tempdir",
            "usrmerge",
            "varempty",
            "worldwrite"
        ]
    );
    assert_eq!(d.warn.len(), 20);
    assert!(d.warn.contains(&"strip".to_string()) && d.warn.contains(&"duplicate".to_string()));
    assert_eq!(d.severity("empty"), None);
    // A list given replaces its default; values may be comma-separated.
    let p = Policy::from_flags(Some(&["strip,duplicate".into()]), None).unwrap();
    assert_eq!(p.require, ["strip", "duplicate"]);
    assert_eq!(p.severity("strip"), Some(Severity::Require));
    assert_eq!(p.severity("dev"), None);
    assert_eq!(p.severity("opt"), Some(Severity::Warn));
    let p = Policy::from_flags(Some(&[]), Some(&["empty".into()])).unwrap();
    assert!(p.require.is_empty());
    assert_eq!(p.warn, ["empty"]);
    let err = Policy::from_flags(None, Some(&["nope".into()])).unwrap_err();
    assert_eq!(err.to_string(), "unknown linter: \"nope\"");
    // checks.disabled moves a rule from require to warn.
    let p = d.for_package(&["worldwrite".into()]);
    assert_eq!(p.severity("worldwrite"), Some(Severity::Warn));
    assert_eq!(p.severity("dev"), Some(Severity::Require));
    // A required rule that is also a warning is required.
    let p = Policy {
        require: vec!["opt".into()],
        warn: vec!["opt".into()],
    };
    assert_eq!(p.severity("opt"), Some(Severity::Require));
}

#[test]
fn binaryarch_reports_foreign_machines() {
    let p = Pkg::new()
        .file("usr/bin/native", 0o755, elf64(elf::EM_X86_64, &[]))
        .file("usr/bin/arm", 0o755, elf64(elf::EM_AARCH64, &[]))
        .file("usr/lib/libr.so", 0o644, elf64(243, &[]))
        .file("usr/share/x/data.bin", 0o644, elf64(243, &[]))
        .file("usr/bin/script", 0o755, "#!/bin/sh\n")
        .file("var/lib/db/sbom/x", 0o755, elf64(8, &[]));
    let f = p.lint("binaryarch");
    assert_eq!(f.len(), 1);
    assert_eq!(
        f[0].message,
        "pkg contains 2 binaries compiled for unsupported architecture(s)"
    );
    assert_eq!(
        f[0].details,
        [
            "usr/bin/arm (arm64, in a package for x86_64)",
            "usr/lib/libr.so (riscv)"
        ]
    );
    assert_eq!(f[0].severity, Severity::Warn);
    assert!(
        f[0].explain
            .starts_with("This package contains binaries compiled")
    );
    // melange's rule alone when the architecture is not known: aarch64 is supported.
    let f = p.lint_as("pkg", None, Tests::Unknown, "binaryarch");
    assert_eq!(
        f[0].message,
        "pkg contains 1 binary compiled for unsupported architecture(s)"
    );
    // An aarch64 package holding an aarch64 binary is fine.
    let q = Pkg::new().file("usr/bin/arm", 0o755, elf64(elf::EM_AARCH64, &[]));
    assert!(
        q.lint_as("pkg", Some("aarch64"), Tests::Unknown, "binaryarch")
            .is_empty()
    );
    // Required through --lint-require, it fails.
    let policy = Policy::from_flags(Some(&["binaryarch".into()]), Some(&[])).unwrap();
    let f = lint(
        &Target {
            name: "q",
            files: &q.files,
            contents: &q.data,
            arch: Some("x86_64"),
            tests: Tests::Unknown,
        },
        &policy,
    );
    assert_eq!(f[0].severity, Severity::Require);
    // Without contents the rule cannot judge, and says nothing.
    assert!(lint_package("q", &q.files, &[], &[]).is_empty());
}

#[test]
fn strip_reports_debug_sections() {
    let p = Pkg::new()
        .file(
            "usr/bin/debug",
            0o755,
            elf64(elf::EM_X86_64, &[(".text", b"x"), (".debug_info", b"d")]),
        )
        .file(
            "usr/lib/libz.so.1",
            0o755,
            elf64(elf::EM_X86_64, &[(".zdebug_line", b"d")]),
        )
        .file(
            "usr/bin/clean",
            0o755,
            elf64(elf::EM_X86_64, &[(".text", b"x")]),
        )
        .file(
            "usr/share/doc/x.debug",
            0o644,
            elf64(elf::EM_X86_64, &[(".debug", b"d")]),
        );
    let f = p.lint("strip");
    assert_eq!(f[0].message, "pkg contains 2 unstripped binaries");
    assert_eq!(f[0].details, ["usr/bin/debug", "usr/lib/libz.so.1"]);
    let broken = Pkg::new().file("usr/bin/bad", 0o755, b"\x7fELF\x09\x01\x01".to_vec());
    let f = broken.lint("strip");
    assert!(
        f[0].message
            .starts_with("could not open file \"usr/bin/bad\" as executable:"),
        "{}",
        f[0].message
    );
    assert!(
        Pkg::new()
            .file("usr/bin/clean", 0o755, elf64(elf::EM_X86_64, &[]))
            .lint("strip")
            .is_empty()
    );
}

#[test]
fn strip_and_binaryarch_on_gcc_output() {
    let d = tempfile::tempdir().unwrap();
    fs::write(d.path().join("m.c"), "int main(void) { return 0; }\n").unwrap();
    let ok = std::process::Command::new("gcc")
        .args(["-g", "-o", "m", "m.c"])
        .current_dir(d.path())
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        eprintln!("SKIPPED: no gcc on this machine");
        return;
    }
    let root = d.path().join("root");
    fs::create_dir_all(root.join("usr/bin")).unwrap();
    fs::copy(d.path().join("m"), root.join("usr/bin/m")).unwrap();
    let host = if cfg!(target_arch = "x86_64") {
        "x86_64"
    } else {
        "aarch64"
    };
    let other = if host == "x86_64" {
        "aarch64"
    } else {
        "x86_64"
    };
    let b = BuildLint::default();
    let f = b.lint_dir(&root, "m", host, &[]).unwrap();
    let rules: Vec<&str> = f.iter().map(|f| f.rule).collect();
    assert_eq!(rules, ["strip"], "{f:?}");
    let f = b.lint_dir(&root, "m", other, &[]).unwrap();
    let rules: Vec<&str> = f.iter().map(|f| f.rule).collect();
    assert_eq!(rules, ["binaryarch", "strip"], "{f:?}");
    let stripped = std::process::Command::new("strip")
        .arg(root.join("usr/bin/m"))
        .status()
        .is_ok_and(|s| s.success());
    if stripped {
        assert!(b.lint_dir(&root, "m", host, &[]).unwrap().is_empty());
    }
    // A checks.disabled name that is no rule stops the build, as in melange.
    let err = b.lint_dir(&root, "m", host, &["strpi".into()]).unwrap_err();
    assert_eq!(err.to_string(), "unknown linter: \"strpi\"");
}

#[test]
fn duplicate_files() {
    let content = "same content ".repeat(100) + "\n";
    let p = Pkg::new()
        .file("usr/lib/duplicate.txt", 0o644, content.clone())
        .file("usr/share/duplicate.txt", 0o644, content.clone())
        .file("usr/share/other.txt", 0o644, content.clone());
    let f = p.lint("duplicate");
    assert_eq!(
        f[0].message,
        "pkg contains 1 duplicate file(s) with same name in different directories (wasting 1.3 kB total)"
    );
    assert_eq!(
        f[0].details,
        [
            "2 copies of 'duplicate.txt' (1.3 kB each, wasting 1.3 kB):",
            "  usr/lib/duplicate.txt",
            "  usr/share/duplicate.txt"
        ]
    );
    let vendored = "vendored dependency ".repeat(100) + "\n";
    let p = Pkg::new()
        .file("usr/lib/file.so", 0o644, vendored.clone())
        .file("usr/share/file.so", 0o644, vendored.clone())
        .file("opt/file.so", 0o644, vendored.clone())
        .file("usr/lib/duplicate.txt", 0o644, content.clone())
        .file("usr/share/duplicate.txt", 0o644, content.clone());
    let f = p.lint("duplicate");
    assert_eq!(
        f[0].message,
        "pkg contains 2 duplicate file(s) with same name in different directories (wasting 5.3 kB total)"
    );
    assert_eq!(
        f[0].details[0],
        "3 copies of 'file.so' (2.0 kB each, wasting 4.0 kB):"
    );
    // Different contents, small files and licence files are no duplicates.
    let lic = "Apache License Version 2.0\n".repeat(100);
    let p = Pkg::new()
        .file("usr/lib/file.txt", 0o644, "content one ".repeat(100))
        .file("usr/share/file.txt", 0o644, "content two ".repeat(100))
        .file("usr/lib/python3.11/foo/__init__.py", 0o644, "")
        .file("usr/lib/python3.11/bar/__init__.py", 0o644, "")
        .file("usr/share/doc/foo/LICENSE", 0o644, lic.clone())
        .file("usr/share/doc/bar/LICENSE", 0o644, lic.clone())
        .file(
            "usr/share/licenses/a/COPYING-1.2.3-x.txt",
            0o644,
            lic.clone(),
        )
        .file("usr/share/licenses/b/COPYING-1.2.3-x.txt", 0o644, lic);
    assert!(p.lint("duplicate").is_empty(), "{:?}", p.lint("duplicate"));
}

#[test]
fn sizes_and_licence_names() {
    for (n, want) in [
        (0, "0 B"),
        (9, "9 B"),
        (500, "500 B"),
        (1024, "1.0 kB"),
        (1301, "1.3 kB"),
        (12345, "12 kB"),
        (999_999, "1000 kB"),
        (5_300_000, "5.3 MB"),
    ] {
        assert_eq!(content::humanize_bytes(n), want, "{n}");
    }
    for name in [
        "LICENSE",
        "usr/share/doc/x/license.txt",
        "COPYING",
        "COPYRIGHT.md",
        "LICENSE-MIT",
        "MIT-LICENSE",
        "OFL.txt",
        "PATENTS",
        "UNLICENSE",
        "x/rust-1.86.0-src/LICENSE-APACHE",
    ] {
        assert!(content::is_license_file(name), "{name}");
    }
    for name in [
        "README",
        "license.go",
        "LICENSE.xml",
        "lib/libcopy.so",
        "mylicense.py",
    ] {
        assert!(!content::is_license_file(name), "{name}");
    }
}

#[test]
fn unsupported_architecture_paths() {
    for (path, flagged) in [
        ("usr/lib/i386/libfoo.so", true),
        ("usr/lib/libfoo-i686.so", true),
        ("usr/lib/ppc64le/libbar.so", true),
        ("usr/lib/riscv64/libtest.so", true),
        ("usr/lib/s390x/libfoo.so", true),
        ("usr/lib/aarch64/libfoo.so", false),
        ("usr/lib/x86_64/libfoo.so", false),
        ("usr/lib/libfoo-amd64.so", false),
        ("usr/lib/libfoo-i386-x86_64.so", false),
        ("usr/lib/libfoo.so", false),
        ("i386/top-level-folder", false),
    ] {
        let p = Pkg::new().path(path);
        let f = p.lint("unsupportedarch");
        assert_eq!(!f.is_empty(), flagged, "{path}: {f:?}");
    }
    let f = Pkg::new()
        .path("usr/lib/i386/a.so")
        .path("usr/share/x.mips.txt")
        .lint("unsupportedarch");
    assert_eq!(
        f[0].message,
        "pkg contains 2 unsupported architecture reference(s)"
    );
    assert_eq!(
        f[0].details,
        ["usr/lib/i386/a.so (i386)", "usr/share/x.mips.txt (mips)"]
    );
}

#[test]
fn python_rules() {
    let base = "usr/lib/python3.14/site-packages";
    let mut p = Pkg::new();
    p.files.push(dir(&format!("{base}/foo")));
    let check = |p: &Pkg| p.lint("python/multiple");
    assert!(check(&p).is_empty());
    for extra in [
        "fooegg-0.1-py3.14.egg-info",
        "foodist-0.1-py3.14.dist-info",
        "foopth-0.1-py3.14.pth",
        "foo.so",
        "__pycache__",
        "tests",
        "docs",
    ] {
        p.files.push(e(&format!("{base}/{extra}"), 0o644));
        assert!(check(&p).is_empty(), "{extra}: {:?}", check(&p));
    }
    p.files.push(dir(&format!("{base}/bar")));
    let f = check(&p);
    assert_eq!(
        f[0].message,
        "multiple Python packages detected: 2 found (\"bar\", \"foo\")"
    );
    // tests and docs at the top of site-packages (not deeper).
    let deep = Pkg::new()
        .path(&format!("{base}/foo/tests/test_x.py"))
        .path(&format!("{base}/foo/docs/x.txt"));
    assert!(deep.lint("python/test").is_empty());
    assert!(deep.lint("python/docs").is_empty());
    let top = Pkg::new()
        .path(&format!("{base}/tests/test_x.py"))
        .path(&format!("{base}/docs/x.txt"));
    assert_eq!(
        top.lint("python/test")[0].message,
        "tests directory encountered in Python site-packages directory"
    );
    assert_eq!(
        top.lint("python/docs")[0].message,
        "docs directory encountered in Python site-packages directory"
    );
    // Two interpreters: each python rule says so.
    let two = Pkg::new()
        .path("usr/lib/python3.12/site-packages/a/x.py")
        .path("usr/lib/python3.13/site-packages/b/x.py");
    for rule in ["python/docs", "python/multiple", "python/test"] {
        assert_eq!(
            two.lint(rule)[0].message,
            "more than one Python version detected: 2 found"
        );
    }
}

#[test]
fn test_pipelines_for_libraries_and_pkgconfig() {
    let p = Pkg::new()
        .path("usr/lib/libfoo.so.1.2")
        .path("usr/lib/libfoo.so.1")
        .path("usr/lib/libfoo.so.1.2.3a")
        .path("usr/lib/pkgconfig/foo.pc")
        .path("usr/share/pkgconfig/bar.pc")
        .path("usr/local/lib/pkgconfig/baz.pc");
    let none: Vec<String> = vec![];
    let f = p.lint_as("foo", None, Tests::Uses(&none), "lddcheck");
    assert_eq!(
        f[0].message,
        "foo contains shared objects but test/ldd-check is not configured"
    );
    assert_eq!(
        f[0].details,
        ["usr/lib/libfoo.so.1.2", "usr/lib/libfoo.so.1"]
    );
    let f = p.lint_as("foo", None, Tests::NoConfiguration, "lddcheck");
    assert_eq!(
        f[0].message,
        "foo contains shared objects but missing .melange.yaml"
    );
    let f = p.lint_as("foo", None, Tests::Uses(&none), "pkgconf");
    assert_eq!(
        f[0].message,
        "foo contains pkgconfig files but test/pkgconf is not configured"
    );
    assert_eq!(
        f[0].details,
        ["usr/lib/pkgconfig/foo.pc", "usr/share/pkgconfig/bar.pc"]
    );
    let tested: Vec<String> = vec!["test/tw/ldd-check".into(), "test/pkgconf".into()];
    assert!(
        p.lint_as("foo", None, Tests::Uses(&tested), "lddcheck")
            .is_empty()
    );
    assert!(
        p.lint_as("foo", None, Tests::Uses(&tested), "pkgconf")
            .is_empty()
    );
    assert!(
        p.lint_as("foo", None, Tests::Unknown, "lddcheck")
            .is_empty()
    );
}

#[test]
fn a_build_lints_with_its_tests_and_policy() {
    let d = tempfile::tempdir().unwrap();
    let root = d.path().join("foo");
    fs::create_dir_all(root.join("usr/lib/pkgconfig")).unwrap();
    fs::write(root.join("usr/lib/libfoo.so.1"), "x").unwrap();
    fs::write(root.join("usr/lib/pkgconfig/foo.pc"), "Name: foo\n").unwrap();
    let mut b = BuildLint::default();
    let rules = |f: Vec<Finding>| f.iter().map(|f| (f.rule, f.severity)).collect::<Vec<_>>();
    assert_eq!(
        rules(b.lint_dir(&root, "foo", "x86_64", &[]).unwrap()),
        [("lddcheck", Severity::Warn), ("pkgconf", Severity::Warn)]
    );
    b.tests.insert(
        "foo".into(),
        vec!["test/ldd-check".into(), "test/pkgconf".into()],
    );
    assert!(b.lint_dir(&root, "foo", "x86_64", &[]).unwrap().is_empty());
    // --lint-require pkgconf: a package without the test fails; disabled, it warns.
    b.tests.clear();
    b.policy = Policy::from_flags(Some(&["pkgconf".into()]), Some(&[])).unwrap();
    assert_eq!(
        rules(b.lint_dir(&root, "foo", "x86_64", &[]).unwrap()),
        [("pkgconf", Severity::Require)]
    );
    assert_eq!(
        rules(
            b.lint_dir(&root, "foo", "x86_64", &["pkgconf".into()])
                .unwrap()
        ),
        [("pkgconf", Severity::Warn)]
    );
}

#[test]
fn finished_packages() {
    let d = tempfile::tempdir().unwrap();
    let root = d.path().join("root");
    fs::create_dir_all(root.join("usr/bin")).unwrap();
    fs::create_dir_all(root.join("usr/lib")).unwrap();
    fs::write(
        root.join("usr/bin/arm"),
        elf64(elf::EM_AARCH64, &[(".debug_str", b"s")]),
    )
    .unwrap();
    fs::set_permissions(root.join("usr/bin/arm"), fs::Permissions::from_mode(0o755)).unwrap();
    fs::write(root.join("usr/lib/libx.so.1"), "x").unwrap();
    let info = pallet_apk_types::PackageInfo {
        name: "x-libs".into(),
        version: "1.0-r0".into(),
        arch: "x86_64".into(),
        ..Default::default()
    };
    let yaml = "package:\n  name: x\n  version: 1.0\nsubpackages:\n  - name: x-libs\n    test:\n      pipeline:\n        - uses: test/ldd-check\n";
    let out = d.path().join("x-libs-1.0-r0.apk");
    pallet_apk_stream::write_apk(
        &root,
        &info,
        &[(".melange.yaml".into(), yaml.as_bytes().to_vec())],
        &pallet_apk_stream::WriteOptions::default(),
        &out,
    )
    .unwrap();
    let r = lint_apk(fs::File::open(&out).unwrap(), &Policy::default()).unwrap();
    assert_eq!((r.name.as_str(), r.arch.as_str()), ("x-libs", "x86_64"));
    let rules: Vec<&str> = r.findings.iter().map(|f| f.rule).collect();
    assert_eq!(rules, ["binaryarch", "strip"], "{:?}", r.findings);
    // Without .melange.yaml, lddcheck says so.
    pallet_apk_stream::write_apk(
        &root,
        &info,
        &[],
        &pallet_apk_stream::WriteOptions::default(),
        &out,
    )
    .unwrap();
    let r = lint_apk(fs::File::open(&out).unwrap(), &Policy::default()).unwrap();
    let f = r.findings.iter().find(|f| f.rule == "lddcheck").unwrap();
    assert_eq!(
        f.message,
        "x-libs contains shared objects but missing .melange.yaml"
    );
    assert_eq!(
        tests_in_yaml(
            "package:\n  name: x\ntest:\n  pipeline:\n    - uses: test/pkgconf\n    - runs: true\n",
            "x"
        ),
        Some(vec!["test/pkgconf".to_string()])
    );
    assert_eq!(tests_in_yaml("package:\n  name: x\n", "y"), Some(vec![]));
}

#[test]
fn a_compiled_recipe_names_each_packages_tests() {
    let d = tempfile::tempdir().unwrap();
    fs::create_dir_all(d.path().join("pipelines/test")).unwrap();
    fs::write(
        d.path().join("pipelines/test/pkgconf.yaml"),
        "name: pkgconf\npipeline:\n  - runs: pkgconf --version\n",
    )
    .unwrap();
    let yaml = "package:\n  name: foo\n  version: 1.0\n  epoch: 0\n  description: d\n  copyright:\n    - license: MIT\npipeline:\n  - runs: true\nsubpackages:\n  - name: foo-dev\n    pipeline:\n      - runs: true\n    test:\n      pipeline:\n        - uses: test/pkgconf\n        - runs: true\ntest:\n  pipeline:\n    - runs: true\n";
    fs::write(d.path().join("foo.yaml"), yaml).unwrap();
    let plan = crate::recipe::load(
        &d.path().join("foo.yaml"),
        pallet_image::config::Arch::Amd64,
        &[d.path().join("pipelines")],
        &BTreeMap::new(),
    )
    .unwrap();
    assert_eq!(plan.lint.tests["foo-dev"], ["test/pkgconf"]);
    assert!(plan.lint.tests["foo"].is_empty());
    assert_eq!(plan.lint.policy, Policy::default());
    assert_eq!(plan.main.sca.relatives, ["foo", "foo-dev"]);
    assert_eq!(plan.subpackages[0].0.sca.relatives, ["foo", "foo-dev"]);
}
