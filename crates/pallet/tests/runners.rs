//! The three runners of melange: one recipe built with bubblewrap, docker (a private daemon)
//! and qemu (a microVM booting Debian's cloud kernel) gives three byte-identical packages; the
//! qemu runner's errors name what is missing; `-i/--interactive` opens a shell in the guest of
//! a failed step on a real terminal (tmux), where `exit 0` continues the build and any other
//! status stops it.

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;

/// A recipe on the Alpine fixture whose step prints who runs it, where, and an environment
/// variable; `runs` replaces the step.
fn recipe(d: &Path, a: &Path, runs: &str) -> PathBuf {
    let p = d.join(format!("r-{}.yaml", &sha256_hex(runs.as_bytes())[..12]));
    fs::write(
        &p,
        format!(
            "package: {{name: same-everywhere, version: 1.2.3, epoch: 0, description: runner check, copyright: [{{license: MIT}}]}}\nenvironment:\n  contents:\n    repositories: [{}]\n    keyring:\n{}    packages: [busybox]\n  environment:\n    GREETING: hello\npipeline:\n  - working-directory: sub\n    runs: |\n      {runs}\n",
            a.display(),
            keyring_yaml(&a.join("keys"))
        ),
    )
    .unwrap();
    p
}

const WHO: &str = "mkdir -p ${{targets.destdir}}/usr/share/s && echo \"built by $(id -u) in $(pwd) saying $GREETING\" > ${{targets.destdir}}/usr/share/s/who";

/// `pallet pkg build` of `recipe` with `runner`, into `out`.
fn build(
    d: &Path,
    recipe: &Path,
    runner: &str,
    out: &str,
    env: &[(&str, String)],
) -> std::process::Output {
    let mut c = Command::new(pallet());
    c.args(["pkg", "build"])
        .arg(recipe)
        .args([
            "--arch",
            "x86_64",
            "--runner",
            runner,
            "--signing-key",
            "k.rsa",
        ])
        .args([
            "--out-dir",
            out,
            "--apk-cache-dir",
            "cache",
            "--source-dir",
            "src",
        ])
        .current_dir(d)
        .env("SOURCE_DATE_EPOCH", "1700000000")
        // This machine's KVM may be slower than emulation; the tests do not wait to find out.
        .env("PALLET_QEMU_ACCEL", "tcg");
    for (k, v) in env {
        c.env(k, v);
    }
    c.output().unwrap()
}

fn setup() -> Option<(tempfile::TempDir, PathBuf)> {
    let s = shared()?;
    if !have("bwrap") {
        return None;
    }
    let t = tempfile::tempdir().unwrap();
    let o = run(&["keygen", "--bits", "2048", "k.rsa"], t.path(), &[]);
    assert!(o.status.success(), "{}", text(&o));
    fs::create_dir_all(t.path().join("src")).unwrap();
    Some((t, s.join("fixtures/alpine-3.19")))
}

#[test]
fn bubblewrap_docker_and_qemu_build_the_same_bytes() {
    let Some((t, a)) = setup() else { return };
    let d = t.path();
    let r = recipe(d, &a, WHO);
    let mut runners: Vec<(&str, Vec<(&str, String)>)> = vec![("bubblewrap", vec![])];
    let daemon = Daemon::start(&d.join("docker"));
    if let Some(daemon) = &daemon {
        runners.push(("docker", vec![("DOCKER_HOST", daemon.host())]));
    }
    if let Some(k) = qemu_kernel() {
        runners.push(("qemu", vec![("QEMU_KERNEL_IMAGE", k.display().to_string())]));
    }
    let mut shas = vec![];
    for (runner, env) in &runners {
        let out = format!("out-{runner}");
        let o = build(d, &r, runner, &out, env);
        assert!(o.status.success(), "{runner}: {}", text(&o));
        let apk = d.join(&out).join("x86_64/same-everywhere-1.2.3-r0.apk");
        let who = Command::new("tar")
            .arg("-xzOf")
            .arg(&apk)
            .arg("usr/share/s/who")
            .output()
            .unwrap();
        assert_eq!(
            String::from_utf8_lossy(&who.stdout).trim(),
            "built by 1000 in /home/build/sub saying hello",
            "{runner}"
        );
        shas.push((runner.to_string(), sha256_hex(&fs::read(apk).unwrap())));
    }
    for (runner, sha) in &shas[1..] {
        assert_eq!(sha, &shas[0].1, "the {runner} runner changed the package");
    }
    println!("runners giving identical packages: {shas:?}");
}

#[test]
fn qemu_runner_failures_name_what_is_missing() {
    let Some((t, a)) = setup() else { return };
    let d = t.path();
    let r = recipe(d, &a, WHO);
    let o = build(
        d,
        &r,
        "qemu",
        "out",
        &[(
            "QEMU_KERNEL_IMAGE",
            d.join("no-kernel").display().to_string(),
        )],
    );
    assert!(!o.status.success());
    let msg = text(&o);
    assert!(
        msg.contains("no kernel for x86_64")
            && msg.contains("no-kernel")
            && msg.contains("apt-get download linux-image-cloud-amd64"),
        "{msg}"
    );
    // Said once: the cause is not printed again after the message that holds it.
    assert_eq!(msg.matches("no kernel for x86_64").count(), 1, "{msg}");
    fs::write(d.join("not-a-kernel"), b"hello").unwrap();
    let o = build(
        d,
        &r,
        "qemu",
        "out",
        &[(
            "QEMU_KERNEL_IMAGE",
            d.join("not-a-kernel").display().to_string(),
        )],
    );
    assert!(
        text(&o).contains("is not a Linux kernel image"),
        "{}",
        text(&o)
    );
    let Some(k) = qemu_kernel() else { return };
    // A failing step in the guest fails the build with its status and output.
    let bad = recipe(d, &a, "echo going wrong in the vm; exit 7");
    let o = build(
        d,
        &bad,
        "qemu",
        "out-bad",
        &[("QEMU_KERNEL_IMAGE", k.display().to_string())],
    );
    assert!(!o.status.success());
    assert!(
        text(&o).contains("exit status 7") && text(&o).contains("going wrong in the vm"),
        "{}",
        text(&o)
    );
    assert!(
        !d.join("out-bad/x86_64/same-everywhere-1.2.3-r0.apk")
            .exists()
    );
}

/// A failed step under `-i` on a terminal: the shell is in the guest, as the build user, in
/// the step's folder, with its environment; `exit 0` goes on, `exit 3` stops the build.
fn interactive(runner: &str, env: &[(&str, String)]) {
    let Some((t, a)) = setup() else { return };
    let d = t.path();
    let r = recipe(
        d,
        &a,
        "mkdir -p ${{targets.destdir}}/x; echo going wrong; exit 7",
    );
    for (exit, builds) in [("0", true), ("3", false)] {
        let out = format!("out-{exit}");
        // The build's scratch folder (the qemu runner's console log) stays where a failure
        // can show it.
        let tmp = d.join(format!("tmp-{exit}"));
        fs::create_dir_all(&tmp).unwrap();
        let mut cmd = format!(
            "cd {} && env SOURCE_DATE_EPOCH=1700000000 PALLET_QEMU_ACCEL=tcg TMPDIR={}",
            d.display(),
            tmp.display()
        );
        for (k, v) in env {
            cmd.push_str(&format!(" {k}={v}"));
        }
        cmd.push_str(&format!(
            " {} pkg build {} --arch x86_64 -i --runner {runner} --out-dir {out} --apk-cache-dir cache --source-dir src; echo BUILD-EXIT=$?; sleep 600",
            pallet().display(),
            r.display()
        ));
        let Some(tm) = Tmux::start(&format!("pallet-{runner}-{exit}"), &cmd) else {
            return;
        };
        // An emulated guest on a loaded machine may take minutes to boot; a build that ends
        // instead of offering the shell is reported at once.
        match tm.wait_for_any(&["any other exit stops it", "BUILD-EXIT="], 600) {
            Ok(s) if s.contains("any other exit stops it") => {}
            Ok(s) | Err(s) => panic!("{runner}: no shell offered:\n{s}\n{}", guest_logs(&tmp)),
        }
        tm.send("echo INSIDE-$((6*7)) $(id -u) $(pwd) $GREETING");
        tm.wait_for("INSIDE-42 1000 /home/build/sub hello", 120)
            .unwrap_or_else(|s| {
                panic!(
                    "{runner}: the shell is not the step's:\n{s}\n{}",
                    guest_logs(&tmp)
                )
            });
        tm.send(&format!("exit {exit}"));
        let screen = tm.wait_for("BUILD-EXIT=", 600).unwrap_or_else(|s| {
            panic!(
                "{runner}: the build did not end:\n{s}\n{}",
                guest_logs(&tmp)
            )
        });
        let apk = d.join(&out).join("x86_64/same-everywhere-1.2.3-r0.apk");
        if builds {
            assert!(screen.contains("BUILD-EXIT=0"), "{runner}:\n{screen}");
            assert!(apk.exists(), "{runner}");
        } else {
            assert!(screen.contains("BUILD-EXIT=1"), "{runner}:\n{screen}");
            assert!(!apk.exists(), "{runner}");
        }
    }
}

/// The qemu runner's console and qemu's own messages of every build under `tmp`.
fn guest_logs(tmp: &Path) -> String {
    let mut out = String::new();
    for e in walkdir::WalkDir::new(tmp).into_iter().flatten() {
        let name = e.file_name().to_string_lossy();
        if name == "qemu-console.log" || name == "qemu-stderr.log" {
            let text = fs::read(e.path()).unwrap_or_default();
            let text = String::from_utf8_lossy(&text);
            let tail: Vec<&str> = text.lines().rev().take(40).collect();
            out.push_str(&format!("--- {}:\n", e.path().display()));
            for l in tail.into_iter().rev() {
                out.push_str(l);
                out.push('\n');
            }
        }
    }
    if out.is_empty() {
        out.push_str("(no guest logs)");
    }
    out
}

#[test]
fn interactive_shell_in_bubblewrap() {
    interactive("bubblewrap", &[]);
}

#[test]
fn interactive_shell_in_qemu() {
    let Some(k) = qemu_kernel() else { return };
    interactive("qemu", &[("QEMU_KERNEL_IMAGE", k.display().to_string())]);
}

#[test]
fn interactive_shell_in_docker() {
    let t = tempfile::tempdir().unwrap();
    let Some(daemon) = Daemon::start(&t.path().join("docker")) else {
        return;
    };
    interactive("docker", &[("DOCKER_HOST", daemon.host())]);
}
