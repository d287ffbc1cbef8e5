//! Publishing to Debian's docker-registry on 127.0.0.1: the registry holds what a local build
//! makes, the image pulls back and runs, a second push uploads nothing, credentials work and
//! wrong ones fail clearly, SBOMs are attached, two architectures give two manifests, and a
//! registry that goes away mid-push leaves no tag.

mod common;

use std::fs;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use common::*;

fn skopeo(args: &[&str]) -> std::process::Output {
    Command::new("skopeo").args(args).output().unwrap()
}

/// A repository with a static busybox package for x86_64 and a data package for aarch64.
fn repo(d: &Path) -> PathBuf {
    let ok = |o: std::process::Output| assert!(o.status.success(), "{}", text(&o));
    ok(run(&["keygen", "--bits", "2048", "k.rsa"], d, &[]));
    for arch in ["x86_64", "aarch64"] {
        let root = d.join(format!("root-{arch}"));
        fs::create_dir_all(root.join("etc")).unwrap();
        fs::write(
            root.join("etc/hello"),
            format!("published-and-pulled {arch}\n"),
        )
        .unwrap();
        if arch == "x86_64" {
            fs::create_dir_all(root.join("bin")).unwrap();
            fs::copy("/bin/busybox", root.join("bin/busybox")).unwrap();
        }
        fs::create_dir_all(d.join(format!("repo/{arch}"))).unwrap();
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
    let cfg = d.join("img.yaml");
    fs::write(
        &cfg,
        format!(
            "contents:\n  repositories: [{}]\n  keyring: [{}]\n  packages: [hello]\nentrypoint:\n  command: /bin/busybox cat /etc/hello\narchs: [x86_64]\n",
            d.join("repo").display(),
            d.join("k.rsa.pub").display()
        ),
    )
    .unwrap();
    cfg
}

fn tools() -> bool {
    have("docker-registry") && have("skopeo") && Path::new("/bin/busybox").exists()
}

const EPOCH: [(&str, &str); 1] = [("SOURCE_DATE_EPOCH", "1700000000")];

#[test]
fn publish_pull_run_and_push_nothing_twice() {
    if !tools() {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let d = t.path();
    let cfg = repo(d);
    let reg = Registry::start(d, None, None);
    let r = format!("127.0.0.1:{}/team/app:1", reg.port);
    let o = run(
        &[
            "image",
            "publish",
            cfg.to_str().unwrap(),
            &r,
            &format!("127.0.0.1:{}/team/app:latest", reg.port),
            "--cache-dir",
            "c",
            "--image-refs",
            "refs.txt",
        ],
        d,
        &EPOCH,
    );
    assert!(o.status.success(), "{}", text(&o));
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    // The registry holds exactly what a local build makes.
    let raw = skopeo(&[
        "inspect",
        "--tls-verify=false",
        "--raw",
        &format!("docker://{r}"),
    ]);
    assert!(raw.status.success(), "{}", text(&raw));
    let remote = sha256_hex(&raw.stdout);
    fs::create_dir(d.join("layout")).unwrap();
    let o = run(
        &[
            "image",
            "build",
            cfg.to_str().unwrap(),
            "x:1",
            "layout",
            "--cache-dir",
            "c",
            "--sbom=false",
        ],
        d,
        &EPOCH,
    );
    assert!(o.status.success());
    let local = String::from_utf8_lossy(&o.stdout).trim().to_string();
    assert_eq!(
        format!("sha256:{remote}"),
        local,
        "registry index differs from a local build"
    );
    // As apko: one line, the first tag's repository at the index digest.
    assert_eq!(
        out,
        format!("127.0.0.1:{}/team/app@sha256:{remote}\n", reg.port),
        "{out}"
    );
    // --image-refs: the first repository's image, then its index, by digest.
    let refs = fs::read_to_string(d.join("refs.txt")).unwrap();
    let lines: Vec<&str> = refs.lines().collect();
    assert_eq!(lines.len(), 2, "{refs}");
    assert!(
        lines[0].starts_with(&format!("127.0.0.1:{}/team/app@sha256:", reg.port)),
        "{refs}"
    );
    assert_eq!(lines[1], out.trim_end(), "{refs}");
    // The SBOM is attached through the sha256-<digest> referrers tag (docker-registry 2.8 has
    // no referrers API).
    let idx: serde_json::Value = serde_json::from_slice(&raw.stdout).unwrap();
    let manifest = idx["manifests"][0]["digest"].as_str().unwrap().to_string();
    let fallback = format!(
        "127.0.0.1:{}/team/app:{}",
        reg.port,
        manifest.replace(':', "-")
    );
    let refs_idx = skopeo(&[
        "inspect",
        "--tls-verify=false",
        "--raw",
        &format!("docker://{fallback}"),
    ]);
    assert!(
        refs_idx.status.success()
            && String::from_utf8_lossy(&refs_idx.stdout).contains("application/spdx+json"),
        "{}",
        text(&refs_idx)
    );
    // Pull it back and run it.
    let o = skopeo(&[
        "copy",
        "-q",
        "--src-tls-verify=false",
        &format!("docker://{r}"),
        &format!("oci:{}:p", d.join("pulled").display()),
    ]);
    assert!(o.status.success(), "{}", text(&o));
    if have("umoci") && have("runc") {
        let out = run_bundle(&format!("{}:p", d.join("pulled").display()), d, "pub");
        assert_eq!(out.trim(), "published-and-pulled x86_64");
    }
    // Another repository on the same registry mounts the blobs instead of uploading them.
    let other = format!("127.0.0.1:{}/team/copy:1", reg.port);
    let o = run(
        &[
            "image",
            "publish",
            cfg.to_str().unwrap(),
            &r,
            &other,
            "--cache-dir",
            "c",
        ],
        d,
        &EPOCH,
    );
    assert!(o.status.success(), "{}", text(&o));
    let copy_line = text(&o)
        .lines()
        .find(|l| l.starts_with(&format!("pushed {other}")))
        .unwrap_or("")
        .to_string();
    assert!(
        copy_line.contains(" 0 blobs uploaded") && !copy_line.contains(" 0 mounted"),
        "{}",
        text(&o)
    );
    // A second publish uploads no blob.
    let o = run(
        &[
            "image",
            "publish",
            cfg.to_str().unwrap(),
            &r,
            "--cache-dir",
            "c",
        ],
        d,
        &EPOCH,
    );
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains(" 0 blobs uploaded"), "{}", text(&o));
}

#[test]
fn basic_auth_login_and_wrong_password() {
    if !tools() || !have("htpasswd") {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let d = t.path();
    let cfg = repo(d);
    let h = d.join("htpasswd");
    let o = Command::new("htpasswd")
        .args(["-Bbc", h.to_str().unwrap(), "alice", "s3cret"])
        .output()
        .unwrap();
    assert!(o.status.success());
    let reg = Registry::start(d, Some(h), None);
    let r = format!("127.0.0.1:{}/private/app:1", reg.port);
    let docker = d.join("docker");
    let env = [
        ("SOURCE_DATE_EPOCH", "1700000000"),
        ("DOCKER_CONFIG", docker.to_str().unwrap()),
    ];
    let o = run(
        &[
            "image",
            "publish",
            cfg.to_str().unwrap(),
            &r,
            "--cache-dir",
            "c",
        ],
        d,
        &env,
    );
    assert!(!o.status.success());
    assert!(
        text(&o).contains("refused anonymous access"),
        "{}",
        text(&o)
    );
    let o = run(
        &[
            "login",
            &format!("127.0.0.1:{}", reg.port),
            "-u",
            "alice",
            "-p",
            "wrong",
        ],
        d,
        &env,
    );
    assert!(o.status.success());
    let o = run(
        &[
            "image",
            "publish",
            cfg.to_str().unwrap(),
            &r,
            "--cache-dir",
            "c",
        ],
        d,
        &env,
    );
    assert!(
        !o.status.success() && text(&o).contains("refused the credentials"),
        "{}",
        text(&o)
    );
    let o = run(
        &[
            "login",
            &format!("127.0.0.1:{}", reg.port),
            "-u",
            "alice",
            "-p",
            "s3cret",
        ],
        d,
        &env,
    );
    assert!(o.status.success());
    let o = run(
        &[
            "image",
            "publish",
            cfg.to_str().unwrap(),
            &r,
            "--cache-dir",
            "c",
        ],
        d,
        &env,
    );
    assert!(o.status.success(), "{}", text(&o));
    let o = skopeo(&[
        "inspect",
        "--tls-verify=false",
        "--creds",
        "alice:s3cret",
        "--raw",
        &format!("docker://{r}"),
    ]);
    assert!(o.status.success(), "{}", text(&o));
    let _ = reg.htpasswd.as_ref();
}

#[test]
fn two_architectures_publish_as_one_index() {
    if !tools() {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let d = t.path();
    let cfg = repo(d);
    fs::write(
        &cfg,
        fs::read_to_string(&cfg)
            .unwrap()
            .replace("archs: [x86_64]", "archs: [x86_64, aarch64]"),
    )
    .unwrap();
    let reg = Registry::start(d, None, None);
    let r = format!("127.0.0.1:{}/multi/app:1", reg.port);
    let o = run(
        &[
            "image",
            "publish",
            cfg.to_str().unwrap(),
            &r,
            "--cache-dir",
            "c",
        ],
        d,
        &EPOCH,
    );
    assert!(o.status.success(), "{}", text(&o));
    let raw = skopeo(&[
        "inspect",
        "--tls-verify=false",
        "--raw",
        &format!("docker://{r}"),
    ]);
    let idx: serde_json::Value = serde_json::from_slice(&raw.stdout).unwrap();
    let plats: Vec<String> = idx["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["platform"]["architecture"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(plats, ["amd64", "arm64"]);
    assert_eq!(idx["manifests"][1]["platform"]["variant"], "v8");
}

/// Forwards 127.0.0.1:<port> to the registry and kills the registry once `limit` bytes went
/// upstream: the registry goes away in the middle of a blob upload.
fn cutting_proxy(upstream: u16, limit: u64, kill: Arc<AtomicBool>) -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let sent = Arc::new(AtomicU64::new(0));
    std::thread::spawn(move || {
        for c in l.incoming().flatten() {
            let Ok(up) = TcpStream::connect(("127.0.0.1", upstream)) else {
                continue;
            };
            let (mut c2, mut up2) = (c.try_clone().unwrap(), up.try_clone().unwrap());
            let (sent, kill) = (sent.clone(), kill.clone());
            std::thread::spawn(move || {
                let mut buf = [0u8; 16384];
                let mut c = c;
                let mut up = up;
                while let Ok(n) = c.read(&mut buf) {
                    if n == 0 || up.write_all(&buf[..n]).is_err() {
                        break;
                    }
                    if sent.fetch_add(n as u64, Ordering::SeqCst) + n as u64 > limit {
                        kill.store(true, Ordering::SeqCst);
                        break;
                    }
                }
                let _ = up.shutdown(std::net::Shutdown::Both);
            });
            std::thread::spawn(move || {
                let _ = std::io::copy(&mut up2, &mut c2);
                let _ = c2.shutdown(std::net::Shutdown::Both);
            });
        }
    });
    port
}

#[test]
fn registry_going_away_mid_push_leaves_no_tag() {
    if !tools() {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let d = t.path();
    let cfg = repo(d);
    let mut reg = Registry::start(d, None, None);
    let kill = Arc::new(AtomicBool::new(false));
    let proxy = cutting_proxy(reg.port, 200_000, kill.clone());
    let watcher = {
        let kill = kill.clone();
        let pid = reg.child.id();
        std::thread::spawn(move || {
            for _ in 0..600 {
                if kill.load(Ordering::SeqCst) {
                    let _ = Command::new("kill").arg("-9").arg(pid.to_string()).status();
                    return;
                }
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
        })
    };
    let r = format!("127.0.0.1:{proxy}/gone/app:1");
    let o = run(
        &[
            "image",
            "publish",
            cfg.to_str().unwrap(),
            &r,
            "--cache-dir",
            "c",
        ],
        d,
        &EPOCH,
    );
    watcher.join().unwrap();
    assert!(
        !o.status.success(),
        "publish succeeded although the registry died"
    );
    let msg = text(&o);
    assert!(msg.contains("registry") || msg.contains("blob"), "{msg}");
    // Bring the registry back on its storage: the tag must not exist.
    reg.stop();
    let reg2 = Registry::start(&reg.dir, None, Some(reg.port));
    let o = skopeo(&[
        "inspect",
        "--tls-verify=false",
        "--raw",
        &format!("docker://127.0.0.1:{}/gone/app:1", reg2.port),
    ]);
    assert!(!o.status.success(), "a tag exists after a failed push");
}
