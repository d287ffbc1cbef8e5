//! Foreign architectures on this x86_64 machine, through qemu-user and binfmt_misc: an aarch64
//! repository made from Debian's arm64 packages (repacked with `pallet mkpkg`), a melange
//! recipe built for aarch64 in the sandbox, a recipe with no `--arch` built for every arch its
//! repositories serve, a two-arch image whose variants both run under runc, and the errors for
//! a missing handler and for `--bootstrap` with a foreign arch.

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;

/// Whether the kernel runs `qemu` binaries through a handler with the F flag.
fn handler(qemu: &str) -> bool {
    let ok = fs::read_to_string(format!("/proc/sys/fs/binfmt_misc/qemu-{qemu}")).is_ok_and(|t| {
        t.starts_with("enabled")
            && t.lines()
                .any(|l| l.starts_with("flags:") && l.contains('F'))
    });
    if !ok {
        eprintln!(
            "SKIPPED: no qemu-{qemu} binfmt_misc handler with the F flag (scripts/install-deps.sh registers it)"
        );
    }
    ok
}

/// Debian packages of `arch` downloaded into `dir`, or `None` (with a SKIPPED line) when apt
/// cannot fetch them (no `dpkg --add-architecture`, no mirror).
fn debs(dir: &Path, arch: &str, names: &[&str]) -> Option<Vec<PathBuf>> {
    fs::create_dir_all(dir).unwrap();
    let o = Command::new("apt-get")
        .arg("download")
        .args(names.iter().map(|n| format!("{n}:{arch}")))
        .current_dir(dir)
        .output()
        .ok()?;
    if !o.status.success() {
        eprintln!(
            "SKIPPED: apt-get download of {arch} packages failed (dpkg --add-architecture {arch}; apt-get update): {}",
            text(&o).lines().last().unwrap_or("")
        );
        return None;
    }
    let mut v: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "deb"))
        .collect();
    v.sort();
    Some(v)
}

fn extract(deb: &Path, to: &Path) {
    fs::create_dir_all(to).unwrap();
    let o = Command::new("dpkg-deb")
        .arg("-x")
        .arg(deb)
        .arg(to)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
}

fn mkpkg(d: &Path, root: &Path, info: &[&str], out: &Path) {
    let mut a = vec!["mkpkg".to_string()];
    for i in info {
        a.push("--info".into());
        a.push(i.to_string());
    }
    a.extend([
        "--files".into(),
        root.display().to_string(),
        "-o".into(),
        out.display().to_string(),
        "--signing-key".into(),
        "repo.rsa".into(),
    ]);
    let refs: Vec<&str> = a.iter().map(String::as_str).collect();
    let o = run(&refs, d, &[("SOURCE_DATE_EPOCH", "1700000000")]);
    assert!(o.status.success(), "{}", text(&o));
}

/// `d/repo/APK_ARCH/`: busybox (with its applet list, read by running the foreign busybox
/// under qemu) and, for aarch64, `hello-bin` (Debian's dynamically linked `hello`), signed
/// with `d/repo.rsa` and indexed.
fn foreign_repo(d: &Path, deb_arch: &str, apk_arch: &str) -> Option<PathBuf> {
    if !d.join("repo.rsa").exists() {
        let o = run(&["keygen", "--bits", "2048", "repo.rsa"], d, &[]);
        assert!(o.status.success(), "{}", text(&o));
    }
    let names: &[&str] = if apk_arch == "aarch64" {
        &["busybox-static", "hello"]
    } else {
        &["busybox-static"]
    };
    let debs = debs(&d.join(format!("debs-{deb_arch}")), deb_arch, names)?;
    let out = d.join("repo").join(apk_arch);
    fs::create_dir_all(&out).unwrap();
    for deb in &debs {
        let root = d.join(format!(
            "root-{apk_arch}-{}",
            deb.file_name().unwrap().to_string_lossy()
        ));
        extract(deb, &root);
        let _ = fs::remove_dir_all(root.join("usr/share"));
        let arch_info = format!("arch={apk_arch}");
        if root.join("bin/busybox").exists() {
            std::os::unix::fs::symlink("busybox", root.join("bin/sh")).unwrap();
            let list = Command::new(root.join("bin/busybox"))
                .arg("--list-full")
                .output()
                .unwrap();
            assert!(
                list.status.success(),
                "the {apk_arch} busybox does not run under qemu"
            );
            fs::create_dir_all(root.join("etc/busybox-paths.d")).unwrap();
            let paths: String = String::from_utf8_lossy(&list.stdout)
                .lines()
                .map(|l| format!("/{l}\n"))
                .collect();
            fs::write(root.join("etc/busybox-paths.d/busybox"), paths).unwrap();
            mkpkg(
                d,
                &root,
                &[
                    "name=busybox",
                    "version=1.35.0-r0",
                    &arch_info,
                    "license=GPL-2.0-only",
                    "provides=/bin/sh",
                ],
                &out.join("busybox-1.35.0-r0.apk"),
            );
        } else {
            mkpkg(
                d,
                &root,
                &[
                    "name=hello-bin",
                    "version=2.10-r3",
                    &arch_info,
                    "license=GPL-3.0-or-later",
                ],
                &out.join("hello-bin-2.10-r3.apk"),
            );
        }
    }
    let mut a = vec![
        "index".to_string(),
        "-o".into(),
        out.join("APKINDEX.tar.gz").display().to_string(),
        "--signing-key".into(),
        "repo.rsa".into(),
    ];
    for e in fs::read_dir(&out).unwrap().flatten() {
        if e.path().extension().is_some_and(|x| x == "apk") {
            a.push(e.path().display().to_string());
        }
    }
    let refs: Vec<&str> = a.iter().map(String::as_str).collect();
    let o = run(&refs, d, &[]);
    assert!(o.status.success(), "{}", text(&o));
    Some(d.join("repo"))
}

const RECIPE: &str = "package:\n  name: which-arch\n  version: 1.0.0\n  epoch: 0\n  description: records the machine it was built on\n  copyright: [{license: MIT}]\nenvironment:\n  contents:\n    repositories: [REPOS]\n    keyring: [KEYS]\n    packages: [busybox, EXTRA]\npipeline:\n  - runs: |\n      mkdir -p ${{targets.destdir}}/usr/share/which-arch ${{targets.destdir}}/usr/bin\n      uname -m > ${{targets.destdir}}/usr/share/which-arch/uname\n      if [ -e /usr/bin/hello ]; then cp /usr/bin/hello ${{targets.destdir}}/usr/bin/hello; fi\n";

#[test]
fn aarch64_packages_and_images_build_under_emulation() {
    let Some(s) = shared() else { return };
    if !(have("bwrap") && have("apt-get") && handler("aarch64")) {
        return;
    }
    let alpine = s.join("fixtures/alpine-3.19");
    let t = tempfile::tempdir().unwrap();
    let d = t.path();
    let Some(repo) = foreign_repo(d, "arm64", "aarch64") else {
        return;
    };
    let o = run(&["keygen", "--bits", "2048", "melange.rsa"], d, &[]);
    assert!(o.status.success(), "{}", text(&o));

    // Built for aarch64: the steps run aarch64 programs, the package says so, SCA names the
    // aarch64 loader, and the package verifies.
    let recipe = RECIPE
        .replace("REPOS", &repo.display().to_string())
        .replace("KEYS", &d.join("repo.rsa.pub").display().to_string())
        .replace("EXTRA", "hello-bin");
    fs::write(d.join("r.yaml"), &recipe).unwrap();
    let o = run(
        &[
            "pkg",
            "build",
            "r.yaml",
            "--arch",
            "aarch64",
            "--signing-key",
            "melange.rsa",
            "--apk-cache-dir",
            "cache",
        ],
        d,
        &[("SOURCE_DATE_EPOCH", "1700000000")],
    );
    assert!(o.status.success(), "{}", text(&o));
    let apk = d.join("packages/aarch64/which-arch-1.0.0-r0.apk");
    assert_eq!(
        apk_member(&apk, "usr/share/which-arch/uname").trim(),
        "aarch64"
    );
    let info = pkginfo(&apk);
    assert!(info.contains("arch = aarch64"), "{info}");
    assert!(
        info.contains("depend = so:ld-linux-aarch64.so.1")
            && info.contains("depend = so:libc.so.6"),
        "{info}"
    );
    let o = run(
        &[
            "verify",
            "--keyring",
            "melange.rsa.pub",
            apk.to_str().unwrap(),
        ],
        d,
        &[],
    );
    assert!(o.status.success(), "{}", text(&o));

    // No --arch: every arch its repository serves (one repository holding Alpine's x86_64
    // fixtures and the repacked aarch64 packages); the others are skipped with a line each.
    let combo = d.join("combo");
    fs::create_dir_all(&combo).unwrap();
    std::os::unix::fs::symlink(alpine.join("x86_64"), combo.join("x86_64")).unwrap();
    std::os::unix::fs::symlink(repo.join("aarch64"), combo.join("aarch64")).unwrap();
    let both = RECIPE
        .replace("REPOS", &combo.display().to_string())
        .replace(
            "KEYS",
            &format!(
                "{}, {}",
                d.join("repo.rsa.pub").display(),
                fs::read_dir(alpine.join("keys"))
                    .unwrap()
                    .flatten()
                    .map(|e| e.path().display().to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        )
        .replace(", EXTRA", "");
    fs::write(d.join("both.yaml"), &both).unwrap();
    let o = run(
        &[
            "pkg",
            "build",
            "both.yaml",
            "--signing-key",
            "melange.rsa",
            "--apk-cache-dir",
            "cache",
            "--out-dir",
            "all",
        ],
        d,
        &[("SOURCE_DATE_EPOCH", "1700000000")],
    );
    let msg = text(&o);
    assert!(o.status.success(), "{msg}");
    for (arch, uname) in [("x86_64", "x86_64"), ("aarch64", "aarch64")] {
        let apk = d.join(format!("all/{arch}/which-arch-1.0.0-r0.apk"));
        assert_eq!(
            apk_member(&apk, "usr/share/which-arch/uname").trim(),
            uname,
            "{msg}"
        );
    }
    assert!(msg.contains("skipping riscv64"), "{msg}");
    let o = run(
        &[
            "pkg",
            "build",
            "both.yaml",
            "--arch",
            "riscv64",
            "--signing-key",
            "melange.rsa",
            "--out-dir",
            "none",
        ],
        d,
        &[],
    );
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        text(&o).contains("skipping riscv64: ")
            && text(&o).contains("has no riscv64/APKINDEX.tar.gz"),
        "{}",
        text(&o)
    );
    assert!(
        !d.join("none/riscv64")
            .join("which-arch-1.0.0-r0.apk")
            .exists()
    );

    // The workspace build, both archs: one node and one key per arch.
    let ws = d.join("ws");
    fs::create_dir_all(&ws).unwrap();
    fs::write(
        ws.join("which-arch.yaml"),
        RECIPE
            .replace("    repositories: [REPOS]\n    keyring: [KEYS]\n", "")
            .replace(", EXTRA", ""),
    )
    .unwrap();
    let keys_yaml: String = fs::read_dir(alpine.join("keys"))
        .unwrap()
        .flatten()
        .map(|e| format!("  - {}\n", e.path().display()))
        .collect();
    fs::write(
        ws.join("pallet.yaml"),
        format!(
            "repositories: [{}]\nkeyring:\n{keys_yaml}  - {}\n",
            combo.display(),
            d.join("repo.rsa.pub").display()
        ),
    )
    .unwrap();
    let o = run(
        &[
            "build",
            "--arch",
            "x86_64,aarch64",
            "--cache-dir",
            "../cache",
        ],
        &ws,
        &[("SOURCE_DATE_EPOCH", "1700000000")],
    );
    assert!(o.status.success(), "{}", text(&o));
    for (arch, uname) in [("x86_64", "x86_64"), ("aarch64", "aarch64")] {
        let apk = ws.join(format!("packages/{arch}/which-arch-1.0.0-r0.apk"));
        assert_eq!(apk_member(&apk, "usr/share/which-arch/uname").trim(), uname);
    }
    let o = run(
        &[
            "build",
            "--plan",
            "--json",
            "--arch",
            "x86_64,aarch64",
            "--cache-dir",
            "../cache",
        ],
        &ws,
        &[("SOURCE_DATE_EPOCH", "1700000000")],
    );
    let p: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let nodes = p["packages"].as_array().unwrap();
    assert_eq!(nodes.len(), 2);
    assert!(nodes.iter().all(|n| n["state"] == "cached"), "{p}");
    assert_ne!(nodes[0]["key"], nodes[1]["key"]);

    // A two-arch image from those repositories: an index with amd64 and arm64/v8, and both
    // variants run under runc and say which machine they are.
    let mut keys: Vec<String> = fs::read_dir(alpine.join("keys"))
        .unwrap()
        .flatten()
        .map(|e| e.path().display().to_string())
        .collect();
    keys.push(d.join("repo.rsa.pub").display().to_string());
    keys.push(d.join("melange.rsa.pub").display().to_string());
    fs::write(
        d.join("img.yaml"),
        format!(
            "contents:\n  repositories: [{}, {}/all]\n  keyring: [{}]\n  packages: [busybox, which-arch]\nentrypoint:\n  command: /bin/sh -c 'echo running on $(uname -m), built on $(cat /usr/share/which-arch/uname)'\narchs: [x86_64, aarch64]\n",
            combo.display(),
            d.display(),
            keys.join(", "),
        ),
    )
    .unwrap();
    fs::create_dir_all(d.join("layout")).unwrap();
    let o = run(
        &[
            "image",
            "build",
            "img.yaml",
            "multi:1",
            "layout",
            "--cache-dir",
            "cache",
            "--sbom=false",
        ],
        d,
        &[("SOURCE_DATE_EPOCH", "1700000000")],
    );
    assert!(o.status.success(), "{}", text(&o));
    if have("skopeo") {
        let o = Command::new("skopeo")
            .args(["inspect", "--raw"])
            .arg(format!("oci:{}:1", d.join("layout").display()))
            .output()
            .unwrap();
        let raw = String::from_utf8_lossy(&o.stdout);
        assert!(
            raw.contains("\"amd64\"") && raw.contains("\"arm64\"") && raw.contains("\"v8\""),
            "{raw}"
        );
    }
    if have("umoci") && have("runc") {
        for (suffix, machine) in [("amd64", "x86_64"), ("arm64", "aarch64")] {
            let out = run_bundle(
                &format!("{}:1-{suffix}", d.join("layout").display()),
                d,
                suffix,
            );
            assert_eq!(
                out.trim(),
                format!("running on {machine}, built on {machine}")
            );
        }
    }
}

#[test]
fn foreign_arch_errors_say_what_to_do() {
    if !have("bwrap") {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let d = t.path();
    fs::write(
        d.join("r.yaml"),
        "package:\n  name: x\n  version: 1\n  epoch: 0\n  description: d\npipeline:\n  - runs: mkdir -p ${{targets.destdir}}/x\n",
    )
    .unwrap();
    // The host's root holds host programs: no bootstrap build for another arch.
    let o = run(
        &["pkg", "build", "--bootstrap", "r.yaml", "--arch", "aarch64"],
        d,
        &[],
    );
    assert!(!o.status.success());
    let msg = text(&o);
    assert!(
        msg.contains("--bootstrap") && msg.contains("cannot build for aarch64"),
        "{msg}"
    );
    assert!(!d.join("packages/aarch64").exists());
    // No handler: the commands that register one.
    let empty = d.join("no-binfmt");
    fs::create_dir_all(&empty).unwrap();
    let o = run(
        &["pkg", "build", "r.yaml", "--arch", "aarch64"],
        d,
        &[("PALLET_BINFMT_MISC", empty.to_str().unwrap())],
    );
    assert!(!o.status.success());
    let msg = text(&o);
    assert!(
        msg.contains("qemu-user-static") && msg.contains("update-binfmts --enable qemu-aarch64"),
        "{msg}"
    );
}

#[test]
fn armv7_guests_run_a_command_under_emulation() {
    if !(have("bwrap") && have("apt-get") && handler("arm")) {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let d = t.path();
    let Some(repo) = foreign_repo(d, "armhf", "armv7") else {
        return;
    };
    let recipe = RECIPE
        .replace("REPOS", &repo.display().to_string())
        .replace("KEYS", &d.join("repo.rsa.pub").display().to_string())
        .replace(", EXTRA", "");
    fs::write(d.join("r.yaml"), recipe).unwrap();
    let o = run(
        &[
            "pkg",
            "build",
            "r.yaml",
            "--arch",
            "armv7",
            "--apk-cache-dir",
            "cache",
        ],
        d,
        &[("SOURCE_DATE_EPOCH", "1700000000")],
    );
    assert!(o.status.success(), "{}", text(&o));
    let apk = d.join("packages/armv7/which-arch-1.0.0-r0.apk");
    assert_eq!(
        apk_member(&apk, "usr/share/which-arch/uname").trim(),
        "armv7l"
    );
    assert!(pkginfo(&apk).contains("arch = armv7"));
}

/// A two-arch tarball through a real Docker daemon: `docker load` takes both per-arch tags
/// (`TAG-amd64`, `TAG-arm64`), `docker inspect` gives each its architecture, and `docker run`
/// of each prints its machine (the arm64 one under qemu-user, through binfmt_misc).
#[test]
fn multi_arch_tarballs_load_into_docker_with_a_tag_per_arch() {
    let Some(s) = shared() else { return };
    if !(have("apt-get") && handler("aarch64")) {
        return;
    }
    let alpine = s.join("fixtures/alpine-3.19");
    let t = tempfile::tempdir().unwrap();
    let d = t.path();
    let Some(repo) = foreign_repo(d, "arm64", "aarch64") else {
        return;
    };
    let Some(daemon) = Daemon::start(&d.join("docker")) else {
        return;
    };
    let combo = d.join("combo");
    fs::create_dir_all(&combo).unwrap();
    std::os::unix::fs::symlink(alpine.join("x86_64"), combo.join("x86_64")).unwrap();
    std::os::unix::fs::symlink(repo.join("aarch64"), combo.join("aarch64")).unwrap();
    let mut keys: Vec<String> = fs::read_dir(alpine.join("keys"))
        .unwrap()
        .flatten()
        .map(|e| e.path().display().to_string())
        .collect();
    keys.push(d.join("repo.rsa.pub").display().to_string());
    fs::write(
        d.join("img.yaml"),
        format!(
            "contents:\n  repositories: [{}]\n  keyring: [{}]\n  packages: [busybox]\nentrypoint:\n  command: /bin/sh -c \"echo machine=$(uname -m)\"\narchs: [x86_64, aarch64]\n",
            combo.display(),
            keys.join(", ")
        ),
    )
    .unwrap();
    let o = run(
        &[
            "image",
            "build",
            "img.yaml",
            "pallet.test/two-arch:v1",
            "two.tar",
            "--cache-dir",
            "cache",
        ],
        d,
        &[("SOURCE_DATE_EPOCH", "1700000000")],
    );
    assert!(o.status.success(), "{}", text(&o));
    let o = Command::new("docker")
        .args(["load", "-i"])
        .arg(d.join("two.tar"))
        .env("DOCKER_HOST", daemon.host())
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    for (suffix, arch, machine) in [("amd64", "amd64", "x86_64"), ("arm64", "arm64", "aarch64")] {
        let tag = format!("pallet.test/two-arch:v1-{suffix}");
        assert!(text(&o).contains(&tag), "{}", text(&o));
        let i = daemon.docker(&["inspect", "--format", "{{.Architecture}} {{.Os}}", &tag]);
        assert_eq!(
            String::from_utf8_lossy(&i.stdout).trim(),
            format!("{arch} linux")
        );
        let r = daemon.docker(&[
            "run",
            "--rm",
            "--network",
            "none",
            "--platform",
            &format!("linux/{arch}"),
            &tag,
        ]);
        assert!(r.status.success(), "{tag}: {}", text(&r));
        assert_eq!(
            String::from_utf8_lossy(&r.stdout).trim(),
            format!("machine={machine}"),
            "{tag}"
        );
    }
}

/// `--runner qemu` for aarch64 on this x86_64 machine: a full-system emulated (TCG) guest
/// booting Debian's arm64 cloud kernel, no qemu-user involved, gives the package the
/// bubblewrap runner makes under qemu-user, byte for byte. The kernel comes per arch
/// (`QEMU_KERNEL_IMAGE_AARCH64`) while `QEMU_KERNEL_IMAGE` names the x86_64 one.
#[test]
fn aarch64_builds_in_an_emulated_vm_as_under_qemu_user() {
    if !(have("bwrap") && have("apt-get") && handler("aarch64")) {
        return;
    }
    let Some(kernel) = qemu_kernel_for("aarch64") else {
        return;
    };
    let t = tempfile::tempdir().unwrap();
    let d = t.path();
    let Some(repo) = foreign_repo(d, "arm64", "aarch64") else {
        return;
    };
    let o = run(&["keygen", "--bits", "2048", "melange.rsa"], d, &[]);
    assert!(o.status.success(), "{}", text(&o));
    let recipe = RECIPE
        .replace("REPOS", &repo.display().to_string())
        .replace("KEYS", &d.join("repo.rsa.pub").display().to_string())
        .replace(", EXTRA", "")
        .replace("uname -m >", "echo $(uname -m) $(id -u) >");
    fs::write(d.join("r.yaml"), &recipe).unwrap();
    fs::create_dir_all(d.join("src")).unwrap();
    let mut shas = vec![];
    for runner in ["bubblewrap", "qemu"] {
        let out = format!("out-{runner}");
        let o = run(
            &[
                "pkg",
                "build",
                "r.yaml",
                "--arch",
                "aarch64",
                "--runner",
                runner,
                "--signing-key",
                "melange.rsa",
                "--apk-cache-dir",
                "cache",
                "--out-dir",
                &out,
                "--source-dir",
                "src",
            ],
            d,
            &[
                ("SOURCE_DATE_EPOCH", "1700000000"),
                ("QEMU_KERNEL_IMAGE", "/nonexistent/x86_64-kernel"),
                ("QEMU_KERNEL_IMAGE_AARCH64", kernel.to_str().unwrap()),
            ],
        );
        assert!(o.status.success(), "{runner}: {}", text(&o));
        if runner == "qemu" {
            assert!(text(&o).contains("aarch64 guest (tcg"), "{}", text(&o));
        }
        let apk = d.join(&out).join("aarch64/which-arch-1.0.0-r0.apk");
        assert_eq!(
            apk_member(&apk, "usr/share/which-arch/uname").trim(),
            "aarch64 1000",
            "{runner}"
        );
        shas.push(sha256_hex(&fs::read(&apk).unwrap()));
    }
    assert_eq!(shas[0], shas[1], "the qemu runner changed the package");
}
