//! The Docker daemon as a real consumer: each test starts its own `dockerd` (Debian's
//! docker.io) on a socket in a temporary folder with its own data and exec roots, no bridge
//! and no iptables; containers run with `--network none`. A pallet tarball goes through
//! `docker load` and `docker run`, `docker inspect` shows the configuration, and `apko publish
//! --local` loads the image through the Engine API.

mod common;

use std::fs;
use std::path::PathBuf;
use std::process::Command;

use common::*;

#[test]
fn docker_loads_runs_and_inspects_pallet_images() {
    let Some(s) = shared() else { return };
    let a = s.join("fixtures/alpine-3.19");
    let t = tempfile::tempdir().unwrap();
    let Some(daemon) = Daemon::start(&t.path().join("docker")) else {
        return;
    };
    let d = t.path();
    fs::write(
        d.join("c.yaml"),
        format!(
            "contents:\n  repositories: [{}]\n  keyring:\n{}  packages: [alpine-base]\nentrypoint:\n  command: /bin/sh -c 'echo boo from $(id -u); echo $GREETING'\nwork-dir: /tmp\nenvironment: {{GREETING: hello-env}}\naccounts: {{users: [{{username: u, uid: 10000}}], groups: [{{groupname: u, gid: 10000}}], run-as: 10000}}\nannotations: {{org.example.who: pallet}}\narchs: [x86_64]\n",
            a.display(),
            keyring_yaml(&a.join("keys"))
        ),
    )
    .unwrap();
    let o = run(
        &[
            "image",
            "build",
            "c.yaml",
            "pallet-docker:test",
            "i.tar",
            "--cache-dir",
            "cache",
        ],
        d,
        &[("SOURCE_DATE_EPOCH", "1700000000")],
    );
    assert!(o.status.success(), "{}", text(&o));
    let o = Command::new("docker")
        .args(["load", "-i"])
        .arg(d.join("i.tar"))
        .env("DOCKER_HOST", daemon.host())
        .output()
        .unwrap();
    assert!(o.status.success(), "docker load: {}", text(&o));
    let o = daemon.docker(&["run", "--rm", "--network", "none", "pallet-docker:test"]);
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(
        String::from_utf8_lossy(&o.stdout).trim(),
        "boo from 10000\nhello-env"
    );
    let o = daemon.docker(&["inspect", "pallet-docker:test"]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let c = &v[0]["Config"];
    assert_eq!(c["User"], "10000");
    assert_eq!(c["WorkingDir"], "/tmp");
    assert!(
        c["Env"]
            .as_array()
            .unwrap()
            .contains(&serde_json::json!("GREETING=hello-env")),
        "{c}"
    );
    assert_eq!(c["Entrypoint"][0], "/bin/sh");

    // apko publish --local: through the Engine API, under apko's local name and the tag.
    let apko = d.join("apko");
    std::os::unix::fs::symlink(pallet(), &apko).unwrap();
    let o = Command::new(&apko)
        .args([
            "publish",
            "--local",
            "c.yaml",
            "local-test:1",
            "--cache-dir",
            "cache",
        ])
        .current_dir(d)
        .env("DOCKER_HOST", daemon.host())
        .env("SOURCE_DATE_EPOCH", "1700000000")
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    // stdout, as apko's, names the local image it loaded.
    let local = String::from_utf8_lossy(&o.stdout).trim().to_string();
    assert!(local.starts_with("apko.local/cache:"), "{}", text(&o));
    let o = daemon.docker(&["run", "--rm", "--network", "none", &local]);
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("boo from 10000"),
        "{}",
        text(&o)
    );
    let o = daemon.docker(&["run", "--rm", "--network", "none", "local-test:1"]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(String::from_utf8_lossy(&o.stdout).contains("boo from 10000"));
    let o = daemon.docker(&["images", "--format", "{{.Repository}}:{{.Tag}}"]);
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("apko.local/cache:"),
        "{}",
        text(&o)
    );

    // No daemon there: an error that says where it looked.
    let o = Command::new(&apko)
        .args([
            "publish",
            "--local",
            "c.yaml",
            "x:1",
            "--cache-dir",
            "cache",
        ])
        .current_dir(d)
        .env(
            "DOCKER_HOST",
            format!("unix://{}", d.join("nothing.sock").display()),
        )
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(
        text(&o).contains("cannot reach the Docker daemon") && text(&o).contains("nothing.sock"),
        "{}",
        text(&o)
    );
}

/// `melange build --runner docker`: the guest is imported into the daemon and every step runs
/// in its container as the build user; the package is byte for byte the bubblewrap runner's.
/// A failing step fails the same way, and the daemon keeps no container or image afterwards.
#[test]
fn docker_runner_builds_the_same_bytes_as_bubblewrap() {
    let Some(s) = shared() else { return };
    if !have("bwrap") {
        return;
    }
    let a = s.join("fixtures/alpine-3.19");
    let t = tempfile::tempdir().unwrap();
    let Some(daemon) = Daemon::start(&t.path().join("docker")) else {
        return;
    };
    let d = t.path();
    let o = run(&["keygen", "--bits", "2048", "k.rsa"], d, &[]);
    assert!(o.status.success(), "{}", text(&o));
    let recipe = |runs: &str| {
        format!(
            "package: {{name: same-everywhere, version: 1.2.3, epoch: 0, description: runner check, copyright: [{{license: MIT}}]}}\nenvironment:\n  contents:\n    repositories: [{}]\n    keyring:\n{}    packages: [busybox]\npipeline:\n  - runs: |\n      {runs}\n",
            a.display(),
            keyring_yaml(&a.join("keys"))
        )
    };
    fs::write(
        d.join("r.yaml"),
        recipe("mkdir -p ${{targets.destdir}}/usr/share/s && echo \"built by $(id -u) in $(pwd)\" > ${{targets.destdir}}/usr/share/s/who"),
    )
    .unwrap();
    let mut shas = vec![];
    fs::create_dir_all(d.join("src")).unwrap();
    for runner in ["bubblewrap", "docker"] {
        let out = format!("out-{runner}");
        let o = Command::new(pallet())
            .args([
                "pkg",
                "build",
                "r.yaml",
                "--arch",
                "x86_64",
                "--runner",
                runner,
                "--signing-key",
                "k.rsa",
                "--out-dir",
                &out,
                "--apk-cache-dir",
                "cache",
                "--source-dir",
                "src",
            ])
            .current_dir(d)
            .env("DOCKER_HOST", daemon.host())
            .env("SOURCE_DATE_EPOCH", "1700000000")
            .output()
            .unwrap();
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
            "built by 1000 in /home/build"
        );
        shas.push(sha256_hex(&fs::read(apk).unwrap()));
    }
    assert_eq!(shas[0], shas[1], "the docker runner changed the package");
    fs::write(d.join("bad.yaml"), recipe("echo going wrong; exit 7")).unwrap();
    let o = Command::new(pallet())
        .args([
            "pkg",
            "build",
            "bad.yaml",
            "--arch",
            "x86_64",
            "--runner",
            "docker",
            "--apk-cache-dir",
            "cache",
            "--out-dir",
            "out-bad",
            // Its own source folder: the test's folder holds the daemon's state.
            "--source-dir",
            "src",
        ])
        .current_dir(d)
        .env("DOCKER_HOST", daemon.host())
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(
        text(&o).contains("exit status 7") && text(&o).contains("going wrong"),
        "{}",
        text(&o)
    );
    let ps = daemon.docker(&["ps", "-aq"]);
    assert!(
        String::from_utf8_lossy(&ps.stdout).trim().is_empty(),
        "containers left: {}",
        text(&ps)
    );
    let imgs = daemon.docker(&["images", "-q", "melange"]);
    assert!(
        String::from_utf8_lossy(&imgs.stdout).trim().is_empty(),
        "images left: {}",
        text(&imgs)
    );
}

/// `pallet build --runner docker` (and `--runner qemu`): a workspace built in the daemon's
/// containers, or in microVMs, gives the packages the bubblewrap build gives.
#[test]
fn workspace_builds_with_the_docker_runner() {
    let Some(s) = shared() else { return };
    if !have("bwrap") {
        return;
    }
    let a = s.join("fixtures/alpine-3.19");
    let t = tempfile::tempdir().unwrap();
    let Some(daemon) = Daemon::start(&t.path().join("docker")) else {
        return;
    };
    let keys: String = fs::read_dir(a.join("keys"))
        .unwrap()
        .flatten()
        .map(|e| format!("  - {}\n", e.path().display()))
        .collect();
    let mut outs = vec![];
    let kernel = qemu_kernel();
    let runners: Vec<&str> = ["bubblewrap", "docker"]
        .into_iter()
        .chain(kernel.as_ref().map(|_| "qemu"))
        .collect();
    for runner in runners {
        let ws = t.path().join(format!("ws-{runner}"));
        fs::create_dir_all(&ws).unwrap();
        fs::write(
            ws.join("pallet.yaml"),
            format!("repositories: [{}]\nkeyring:\n{keys}", a.display()),
        )
        .unwrap();
        fs::write(
            ws.join("w.yaml"),
            "package: {name: w, version: 1, epoch: 0, description: d, copyright: [{license: MIT}]}\nenvironment:\n  contents:\n    packages: [busybox]\npipeline:\n  - runs: mkdir -p ${{targets.destdir}}/w && id -u > ${{targets.destdir}}/w/uid\n",
        )
        .unwrap();
        if let Some(k) = outs.first().map(|(k, _): &(PathBuf, _)| k.clone()) {
            fs::copy(k.join("melange.rsa"), ws.join("melange.rsa")).unwrap();
            fs::copy(k.join("melange.rsa.pub"), ws.join("melange.rsa.pub")).unwrap();
        }
        let cache = t.path().join(format!("cache-{runner}"));
        let o = Command::new(pallet())
            .args([
                "build",
                "--arch",
                "x86_64",
                "--runner",
                runner,
                "--cache-dir",
            ])
            .arg(&cache)
            .current_dir(&ws)
            .env("DOCKER_HOST", daemon.host())
            .env("SOURCE_DATE_EPOCH", "1700000000")
            .env("QEMU_KERNEL_IMAGE", kernel.clone().unwrap_or_default())
            .env("PALLET_QEMU_ACCEL", "tcg")
            .output()
            .unwrap();
        assert!(o.status.success(), "{runner}: {}", text(&o));
        let apk = fs::read(ws.join("packages/x86_64/w-1-r0.apk")).unwrap();
        outs.push((ws, sha256_hex(&apk)));
    }
    for (ws, sha) in &outs[1..] {
        assert_eq!(sha, &outs[0].1, "{}", ws.display());
    }
}
