//! End to end, remote execution: BuildGrid (from PyPI) on 127.0.0.1 and `pallet worker`s as
//! separate processes; `pallet build --remote-executor` and `--remote-cache` against them.
//! Recipes build in bootstrap mode (the host's root as the guest), so no fixtures are needed.

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use common::*;
use pallet_test_support::buildgrid::Security;

/// A workspace of `n` independent recipes whose step sleeps `sleep` seconds, plus one that
/// needs another's package in its (bootstrap) build order through a runtime dependency.
fn workspace(d: &Path, n: usize, sleep: u32) {
    fs::create_dir_all(d).unwrap();
    let mut names = vec![];
    for k in 0..n {
        let name = format!("r{k:02}");
        fs::write(
            d.join(format!("{name}.yaml")),
            format!(
                "package:\n  name: {name}\n  version: 1.0.{k}\n  epoch: 0\n  description: recipe {k}\n  copyright: [{{license: MIT}}]\npipeline:\n  - runs: |\n      sleep {sleep}\n      mkdir -p ${{{{targets.destdir}}}}/usr/share/{name}\n      cat notes.txt > ${{{{targets.destdir}}}}/usr/share/{name}/notes\n      echo {k} > ${{{{targets.destdir}}}}/usr/share/{name}/k\nsubpackages:\n  - name: {name}-doc\n    description: docs\n    pipeline:\n      - runs: |\n          mkdir -p ${{{{targets.subpkgdir}}}}/usr/share/doc\n          echo doc {k} > ${{{{targets.subpkgdir}}}}/usr/share/doc/{name}\n"
            ),
        )
        .unwrap();
        fs::create_dir_all(d.join(&name)).unwrap();
        fs::write(
            d.join(&name).join("notes.txt"),
            format!("notes of {name}\n"),
        )
        .unwrap();
        names.push(name);
    }
    let recipes: String = names
        .iter()
        .map(|n| format!("  {n}: {{bootstrap: true, source-dir: {n}}}\n"))
        .collect();
    fs::write(d.join("pallet.yaml"), format!("recipes:\n{recipes}")).unwrap();
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

/// A `pallet worker` process, killed (SIGKILL) when dropped.
struct Worker {
    child: Child,
    log: PathBuf,
}

impl Worker {
    fn start(bg: &BuildGrid, dir: &Path, name: &str) -> Worker {
        Worker::start_with(bg, dir, name, &[])
    }

    /// Workers started in the same `dir` share its `cache`.
    fn start_with(bg: &BuildGrid, dir: &Path, name: &str, extra: &[&str]) -> Worker {
        Worker::start_env(bg, dir, name, extra, &[])
    }

    fn start_env(
        bg: &BuildGrid,
        dir: &Path,
        name: &str,
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> Worker {
        fs::create_dir_all(dir).unwrap();
        let log = dir.join(format!("{name}.log"));
        let child = Command::new(pallet())
            .args(["worker", "--executor", &bg.url(), "--name", name])
            .args(extra)
            .envs(env.iter().copied())
            .arg("--work-dir")
            .arg(dir.join(name))
            .arg("--cache-dir")
            .arg(dir.join("cache"))
            .stdout(Stdio::null())
            .stderr(fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        Worker { child, log }
    }

    fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        self.kill();
    }
}

fn packages(d: &Path) -> std::collections::BTreeMap<String, String> {
    tree_digests(&d.join("packages"), &["buildlogs"])
}

/// Each package's control checksum (`C:`) in a workspace's x86_64 index, by file name. The
/// control segment holds the data's hash, and no signature touches either: equal checksums
/// are the same package, whoever signed it.
fn control_checksums(d: &Path) -> std::collections::BTreeMap<String, String> {
    let f = fs::File::open(d.join("packages/x86_64/APKINDEX.tar.gz")).unwrap();
    let mut a = tar::Archive::new(flate2::read::MultiGzDecoder::new(f));
    let mut text = String::new();
    for e in a.entries().unwrap() {
        let mut e = e.unwrap();
        if e.path().unwrap().to_str() == Some("APKINDEX") {
            std::io::Read::read_to_string(&mut e, &mut text).unwrap();
        }
    }
    let mut out = std::collections::BTreeMap::new();
    for rec in text.split("\n\n") {
        let field = |k: &str| {
            rec.lines()
                .find_map(|l| l.strip_prefix(k))
                .unwrap_or_default()
                .to_string()
        };
        if !field("P:").is_empty() {
            out.insert(format!("{}-{}.apk", field("P:"), field("V:")), field("C:"));
        }
    }
    out
}

/// Every package and the index of workspace `ws` verify against its own `melange.rsa.pub`:
/// the client signed them, whoever built them.
fn verify_with_own_key(ws: &Path) {
    for f in fs::read_dir(ws.join("packages/x86_64")).unwrap() {
        let f = f.unwrap().path();
        if f.is_dir() {
            continue;
        }
        let o = run(
            &[
                "verify",
                "--keyring",
                ws.join("melange.rsa.pub").to_str().unwrap(),
                f.to_str().unwrap(),
            ],
            ws,
            &[],
        );
        assert!(
            o.status.success() && text(&o).contains(": OK"),
            "{}",
            text(&o)
        );
    }
}

/// Every build log of a workspace, for failure messages.
fn logs(d: &Path) -> String {
    let mut s = String::new();
    if let Ok(rd) = fs::read_dir(d.join("packages/x86_64/buildlogs")) {
        for e in rd.flatten() {
            s.push_str(&format!(
                "--- {}\n{}",
                e.path().display(),
                fs::read_to_string(e.path()).unwrap_or_default()
            ));
        }
    }
    s
}

fn count(out: &str, needle: &str) -> usize {
    out.lines().filter(|l| l.contains(needle)).count()
}

#[test]
fn remote_builds_match_local_ones_and_a_second_client_only_hits_the_cache() {
    if !have("bwrap") {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let Some(bg) = BuildGrid::start(&t.path().join("bgd"), 10) else {
        return;
    };
    let _w1 = Worker::start(&bg, &t.path().join("workers"), "w1");
    let _w2 = Worker::start(&bg, &t.path().join("workers"), "w2");

    // The same workspace built here, and through the remote.
    let local = t.path().join("local");
    workspace(&local, 3, 0);
    let (ok, out) = build(&local, &t.path().join("cache-local"), &[]);
    assert!(ok, "{out}");
    // The same key pair everywhere: the remote result is signed with it on the client.
    let remote = t.path().join("remote");
    workspace(&remote, 3, 0);
    for f in ["melange.rsa", "melange.rsa.pub"] {
        fs::copy(local.join(f), remote.join(f)).unwrap();
    }
    let (ok, out) = build(
        &remote,
        &t.path().join("cache-remote"),
        &["--remote-executor", &bg.url()],
    );
    assert!(ok, "{out}\nworker: {}\nlogs: {}", _w1.log(), logs(&remote));
    assert_eq!(count(&out, ": executed on "), 3, "{out}");
    let want = packages(&local);
    assert_eq!(want.len(), 7, "{want:?}"); // 3 packages, 3 -doc, the index
    assert_eq!(packages(&remote), want, "{out}");
    // Signed here with the user's key: packages and index verify against it.
    verify_with_own_key(&remote);

    // A second client (another checkout, an empty cache): every package from the
    // ActionCache, no execution, the same bytes.
    let second = t.path().join("second");
    workspace(&second, 3, 0);
    for f in ["melange.rsa", "melange.rsa.pub"] {
        fs::copy(local.join(f), second.join(f)).unwrap();
    }
    let (ok, out) = build(
        &second,
        &t.path().join("cache-second"),
        &["--remote-executor", &bg.url()],
    );
    assert!(ok, "{out}");
    assert_eq!(count(&out, ": cache hit, action "), 3, "{out}");
    assert_eq!(count(&out, ": executed on "), 0, "{out}");
    assert!(out.contains("remote: 0 executed, 3 cache hits"), "{out}");
    assert_eq!(packages(&second), want);
}

#[test]
fn a_worker_killed_mid_lease_has_its_action_retried_elsewhere() {
    // A short keepalive: a bot silent for 3 s loses its leases.
    worker_lost_mid_lease(3, "KILL");
}

#[test]
fn a_worker_stopped_with_sigterm_hands_its_lease_back_at_once() {
    // A keepalive far longer than the build is allowed to take: only the worker's own
    // goodbye (the lease back as UNAVAILABLE) lets another worker run the action in time.
    worker_lost_mid_lease(600, "TERM");
}

fn worker_lost_mid_lease(keepalive: u32, signal: &str) {
    if !have("bwrap") {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let Some(bg) = BuildGrid::start(&t.path().join("bgd"), keepalive) else {
        return;
    };
    let wdir = t.path().join("workers");
    let mut w1 = Worker::start(&bg, &wdir, "doomed");
    let ws = t.path().join("ws");
    workspace(&ws, 1, 4);
    let client = Command::new(pallet())
        .args(["build", "--arch", "x86_64", "--cache-dir"])
        .arg(t.path().join("cache"))
        .args(["--remote-executor", &bg.url()])
        .current_dir(&ws)
        .env("SOURCE_DATE_EPOCH", "1700000000")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Kill the only worker once it holds the lease, then start another.
    let started = std::time::Instant::now();
    while !w1.log().contains(": started") {
        assert!(started.elapsed().as_secs() < 60, "no lease: {}", w1.log());
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    if signal == "KILL" {
        w1.kill();
    } else {
        let _ = Command::new("kill")
            .args([&format!("-{signal}"), &w1.child.id().to_string()])
            .status();
        let _ = w1.child.wait();
    }
    let _w2 = Worker::start(&bg, &wdir, "survivor");
    // A hang guard, far beyond a working run (about 10 s), far below the keepalive of the
    // SIGTERM case.
    let pid = client.id();
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let d = done.clone();
    std::thread::spawn(move || {
        for _ in 0..2400 {
            std::thread::sleep(std::time::Duration::from_millis(100));
            if d.load(std::sync::atomic::Ordering::Relaxed) {
                return;
            }
        }
        let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
    });
    let o = client.wait_with_output().unwrap();
    done.store(true, std::sync::atomic::Ordering::Relaxed);
    let out = text(&o);
    eprintln!("{out}");
    assert!(o.status.success(), "{out}\n{}", logs(&ws));
    assert!(
        out.contains("stopped, or stopped answering); retrying it on another worker"),
        "{out}"
    );
    assert!(out.contains("executed on survivor, action "), "{out}");
    assert!(out.contains("(retried)"), "{out}");
    // The packages are whole and signed.
    verify_with_own_key(&ws);
}

#[test]
fn a_tampered_cached_result_is_rejected_and_rebuilt() {
    if !have("bwrap") {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let Some(bg) = BuildGrid::start(&t.path().join("bgd"), 10) else {
        return;
    };
    let _w = Worker::start(&bg, &t.path().join("workers"), "w");
    let first = t.path().join("first");
    workspace(&first, 1, 0);
    let (ok, out) = build(
        &first,
        &t.path().join("cache1"),
        &["--remote-executor", &bg.url()],
    );
    assert!(ok, "{out}");
    // The lookup action, which every client looks up before it makes the full one.
    let action = out
        .lines()
        .find_map(|l| l.split("result shared as action ").nth(1))
        .and_then(|a| a.split_whitespace().next())
        .expect("the lookup action is named")
        .to_string();
    let (hash, size) = action.split_once('/').unwrap();
    let action = pallet_reapi::proto::Digest {
        hash: hash.into(),
        size_bytes: size.parse().unwrap(),
    };
    // Replace the main package of the cached result by a copy with one byte changed in its
    // data section (its last gzip member), as a poisoned cache would.
    let c = pallet_reapi::Client::connect(&bg.url(), "").unwrap();
    let mut res = c.get_action_result(&action).unwrap().expect("cached");
    let f = res
        .output_files
        .iter_mut()
        .find(|f| f.path.ends_with("/r00-1.0.0-r0.apk"))
        .expect("the package is an output");
    let mut bytes = c.read_blob(f.digest.as_ref().unwrap()).unwrap();
    let at = bytes.len() - 40;
    bytes[at] ^= 0x55;
    let mut blobs = pallet_reapi::tree::Blobs::new();
    f.digest = Some(blobs.add_bytes(bytes));
    c.upload(&blobs).unwrap();
    c.update_action_result(&action, &res).unwrap();

    // Another client with an empty cache: the hit is refused and the action runs again.
    let second = t.path().join("second");
    workspace(&second, 1, 0);
    for f in ["melange.rsa", "melange.rsa.pub"] {
        fs::copy(first.join(f), second.join(f)).unwrap();
    }
    let (ok, out) = build(
        &second,
        &t.path().join("cache2"),
        &["--remote-executor", &bg.url()],
    );
    assert!(ok, "{out}");
    assert!(
        out.contains(&format!(
            "cached result of action {}/{} rejected (",
            action.hash, action.size_bytes
        )),
        "{out}"
    );
    assert!(out.contains("executed on w, action "), "{out}");
    assert_eq!(packages(&second), packages(&first));
}

#[test]
fn a_remote_cache_alone_shares_local_builds_between_clients() {
    if !have("bwrap") {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let Some(bg) = BuildGrid::start(&t.path().join("bgd"), 10) else {
        return;
    };
    // No worker at all: the first client builds here and shares what it built.
    let first = t.path().join("first");
    workspace(&first, 2, 0);
    let (ok, out) = build(&first, &t.path().join("c1"), &["--remote-cache", &bg.url()]);
    assert!(ok, "{out}");
    assert_eq!(
        count(&out, ": built here, result shared as action "),
        2,
        "{out}"
    );
    let plain = t.path().join("plain");
    workspace(&plain, 2, 0);
    for f in ["melange.rsa", "melange.rsa.pub"] {
        fs::copy(first.join(f), plain.join(f)).unwrap();
    }
    let (ok, out) = build(&plain, &t.path().join("c0"), &[]);
    assert!(ok, "{out}");
    // Built unsigned and signed after, the packages are those of a plain local build.
    assert_eq!(packages(&first), packages(&plain));
    let second = t.path().join("second");
    workspace(&second, 2, 0);
    for f in ["melange.rsa", "melange.rsa.pub"] {
        fs::copy(first.join(f), second.join(f)).unwrap();
    }
    let (ok, out) = build(
        &second,
        &t.path().join("c2"),
        &["--remote-cache", &bg.url()],
    );
    assert!(ok, "{out}");
    assert_eq!(count(&out, ": cache hit, action "), 2, "{out}");
    assert_eq!(count(&out, "built here"), 0, "{out}");
    assert_eq!(packages(&second), packages(&first));
}

#[test]
fn two_clients_share_results_through_a_registry() {
    if !(have("bwrap") && have("docker-registry")) {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let reg = Registry::start(t.path(), None, None);
    let r = format!("127.0.0.1:{}/pallet-cache", reg.port);
    let first = t.path().join("first");
    workspace(&first, 2, 0);
    let (ok, out) = build(&first, &t.path().join("c1"), &["--cache-registry", &r]);
    assert!(ok, "{out}");
    assert!(
        out.contains("0 registry hits, 2 pushed to the registry"),
        "{out}"
    );
    let second = t.path().join("second");
    workspace(&second, 2, 0);
    for f in ["melange.rsa", "melange.rsa.pub"] {
        fs::copy(first.join(f), second.join(f)).unwrap();
    }
    let (ok, out) = build(&second, &t.path().join("c2"), &["--cache-registry", &r]);
    assert!(ok, "{out}");
    assert_eq!(count(&out, ": registry hit, action "), 2, "{out}");
    assert!(out.contains("2 registry hits, 0 pushed"), "{out}");
    assert_eq!(packages(&second), packages(&first));

    // A package replaced in the registry (the same tag, another blob) is refused and rebuilt.
    let third = t.path().join("third");
    workspace(&third, 2, 0);
    for f in ["melange.rsa", "melange.rsa.pub"] {
        fs::copy(first.join(f), third.join(f)).unwrap();
    }
    let tags = std::process::Command::new("curl")
        .args([
            "-s",
            &format!("http://127.0.0.1:{}/v2/pallet-cache/tags/list", reg.port),
        ])
        .output()
        .unwrap();
    let tags: serde_json::Value = serde_json::from_slice(&tags.stdout).unwrap();
    let tag = tags["tags"][0].as_str().unwrap().to_string();
    let m = std::process::Command::new("curl")
        .args([
            "-s",
            "-H",
            "Accept: application/vnd.oci.image.manifest.v1+json",
            &format!(
                "http://127.0.0.1:{}/v2/pallet-cache/manifests/{tag}",
                reg.port
            ),
        ])
        .output()
        .unwrap();
    let mut m: serde_json::Value = serde_json::from_slice(&m.stdout).unwrap();
    // The other action's package under this action's tag: a valid package, not this one's.
    let other = tags["tags"][1].as_str().unwrap();
    let o = std::process::Command::new("curl")
        .args([
            "-s",
            "-H",
            "Accept: application/vnd.oci.image.manifest.v1+json",
            &format!(
                "http://127.0.0.1:{}/v2/pallet-cache/manifests/{other}",
                reg.port
            ),
        ])
        .output()
        .unwrap();
    let o: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let title = m["layers"][0]["annotations"]["org.opencontainers.image.title"].clone();
    m["layers"][0] = o["layers"][0].clone();
    m["layers"][0]["annotations"]["org.opencontainers.image.title"] = title;
    let body = t.path().join("m.json");
    fs::write(&body, serde_json::to_vec(&m).unwrap()).unwrap();
    let put = std::process::Command::new("curl")
        .args([
            "-s",
            "-f",
            "-X",
            "PUT",
            "-H",
            "Content-Type: application/vnd.oci.image.manifest.v1+json",
            "--data-binary",
        ])
        .arg(format!("@{}", body.display()))
        .arg(format!(
            "http://127.0.0.1:{}/v2/pallet-cache/manifests/{tag}",
            reg.port
        ))
        .output()
        .unwrap();
    assert!(put.status.success(), "{}", text(&put));
    let (ok, out) = build(&third, &t.path().join("c3"), &["--cache-registry", &r]);
    assert!(ok, "{out}");
    assert_eq!(count(&out, "registry result of action "), 1, "{out}");
    assert!(out.contains("1 registry hits, 1 pushed"), "{out}");
    assert_eq!(packages(&third), packages(&first));
}

const LIB: &str = "package:\n  name: libhello\n  version: 1.0.0\n  epoch: 0\n  description: a library\n  copyright: [{license: MIT}]\nenvironment:\n  contents:\n    packages: [busybox]\npipeline:\n  - runs: |\n      mkdir -p ${{targets.destdir}}/usr/lib\n      echo hello-lib > ${{targets.destdir}}/usr/lib/libhello.txt\nsubpackages:\n  - name: libhello-dev\n    description: headers\n    pipeline:\n      - runs: |\n          mkdir -p ${{targets.subpkgdir}}/usr/include\n          echo '#define HELLO 1' > ${{targets.subpkgdir}}/usr/include/hello.h\n";

const APP: &str = "package:\n  name: app\n  version: 2.0.0\n  epoch: 0\n  description: needs the library's -dev subpackage to build\n  copyright: [{license: MIT}]\nenvironment:\n  contents:\n    packages: [busybox, libhello-dev]\npipeline:\n  - runs: |\n      mkdir -p ${{targets.destdir}}/usr/share/app\n      cp /usr/include/hello.h ${{targets.destdir}}/usr/share/app/\n";

/// Recipes whose environments come from a repository (the Alpine fixture) and from the
/// workspace's own packages, which reach the worker in the action's `repo/`.
fn repo_workspace(d: &Path, alpine: &Path) {
    fs::create_dir_all(d).unwrap();
    let keys = keyring_yaml(&alpine.join("keys")).replace("    - ", "  - ");
    fs::write(
        d.join("pallet.yaml"),
        format!("repositories: [{}]\nkeyring:\n{keys}", alpine.display()),
    )
    .unwrap();
    fs::write(d.join("libhello.yaml"), LIB).unwrap();
    fs::write(d.join("app.yaml"), APP).unwrap();
}

#[test]
fn environments_from_repositories_and_the_workspace_build_remotely_to_the_same_bytes() {
    let Some(s) = shared() else { return };
    if !have("bwrap") {
        return;
    }
    let alpine = s.join("fixtures/alpine-3.19");
    let t = tempfile::tempdir().unwrap();
    let Some(bg) = BuildGrid::start(&t.path().join("bgd"), 10) else {
        return;
    };
    let _w = Worker::start(&bg, &t.path().join("workers"), "w");
    let local = t.path().join("local");
    repo_workspace(&local, &alpine);
    let (ok, out) = build(&local, &t.path().join("c1"), &[]);
    assert!(ok, "{out}");
    let remote = t.path().join("remote");
    repo_workspace(&remote, &alpine);
    for f in ["melange.rsa", "melange.rsa.pub"] {
        fs::copy(local.join(f), remote.join(f)).unwrap();
    }
    let (ok, out) = build(
        &remote,
        &t.path().join("c2"),
        &["--remote-executor", &bg.url()],
    );
    assert!(ok, "{out}\n{}", logs(&remote));
    assert_eq!(count(&out, ": executed on w, action "), 2, "{out}");
    let want = packages(&local);
    assert_eq!(want.len(), 4, "{want:?}");
    assert_eq!(packages(&remote), want);
    // Another checkout elsewhere with an empty cache computes the same two actions, the
    // workspace's own libhello-dev in app's environment included: both are cache hits.
    let second = t.path().join("elsewhere/second");
    repo_workspace(&second, &alpine);
    for f in ["melange.rsa", "melange.rsa.pub"] {
        fs::copy(local.join(f), second.join(f)).unwrap();
    }
    let (ok, out) = build(
        &second,
        &t.path().join("c3"),
        &["--remote-executor", &bg.url()],
    );
    assert!(ok, "{out}\n{}", logs(&second));
    assert_eq!(count(&out, ": cache hit, action "), 2, "{out}");
    assert_eq!(packages(&second), want);
    // A user with a signing key of their own (made by this first build) shares the same
    // results: packages are built unsigned and an environment names the workspace's packages
    // by control checksum, so the key is not part of what results are kept under. Both come
    // from the cache, signed here with the new key, the same packages as everyone else's.
    let own = t.path().join("elsewhere/own-key");
    repo_workspace(&own, &alpine);
    let (ok, out) = build(
        &own,
        &t.path().join("c3b"),
        &["--remote-executor", &bg.url()],
    );
    assert!(ok, "{out}\n{}", logs(&own));
    assert_eq!(count(&out, ": cache hit, action "), 2, "{out}");
    assert_ne!(
        fs::read(own.join("melange.rsa.pub")).unwrap(),
        fs::read(local.join("melange.rsa.pub")).unwrap()
    );
    assert_eq!(control_checksums(&own), control_checksums(&local));
    assert_eq!(control_checksums(&own).len(), 3, "{out}");
    verify_with_own_key(&own);
    // A changed library shared through the cache alone: both nodes miss, build here, and
    // share their results, which takes the Action, the Command and the outputs, not the
    // environment (busybox and musl alone are about 900 KiB).
    let third = t.path().join("third");
    repo_workspace(&third, &alpine);
    fs::write(
        third.join("libhello.yaml"),
        LIB.replace("hello-lib", "hello-lib2"),
    )
    .unwrap();
    for f in ["melange.rsa", "melange.rsa.pub"] {
        fs::copy(local.join(f), third.join(f)).unwrap();
    }
    let (ok, out) = build(&third, &t.path().join("c4"), &["--remote-cache", &bg.url()]);
    eprintln!("{out}");
    assert!(ok, "{out}\n{}", logs(&third));
    assert_eq!(
        count(&out, ": built here, result shared as action "),
        2,
        "{out}"
    );
    assert!(uploaded(&out) < 100.0 * 1024.0, "{out}");
}

/// The blobs (not temporary files) in a worker blob cache.
fn cached_blobs(cache: &Path) -> usize {
    fs::read_dir(cache.join("reapi-blobs"))
        .map(|rd| {
            rd.flatten()
                .filter(|e| !e.file_name().to_string_lossy().starts_with(".tmp-"))
                .count()
        })
        .unwrap_or(0)
}

#[test]
fn workers_sharing_a_bounded_blob_cache_evict_it_and_still_build() {
    if !have("bwrap") {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let Some(bg) = BuildGrid::start(&t.path().join("bgd"), 10) else {
        return;
    };
    // Two workers on one cache folder, bounded to nothing: every checkout evicts what the
    // other may be about to copy, and both must still fetch whole, verified inputs.
    let shared = t.path().join("tight");
    let mut a = Worker::start_with(&bg, &shared, "a", &["--blob-cache-size", "0"]);
    let mut b = Worker::start_with(&bg, &shared, "b", &["--blob-cache-size", "0"]);
    let ws = t.path().join("ws");
    workspace(&ws, 6, 0);
    let (ok, out) = build(
        &ws,
        &t.path().join("c1"),
        &["-j", "6", "--remote-executor", &bg.url()],
    );
    assert!(
        ok,
        "{out}
{}",
        logs(&ws)
    );
    assert_eq!(count(&out, ": executed on "), 6, "{out}");
    assert_eq!(cached_blobs(&shared.join("cache")), 0);
    // The default bound keeps them (only this worker left to run the actions).
    a.kill();
    b.kill();
    let roomy = t.path().join("roomy");
    let _c = Worker::start(&bg, &roomy, "c");
    let ws2 = t.path().join("ws2");
    workspace(&ws2, 2, 0);
    fs::write(ws2.join("r00/notes.txt"), "other notes\n").unwrap();
    fs::write(ws2.join("r01/notes.txt"), "more notes\n").unwrap();
    let (ok, out) = build(
        &ws2,
        &t.path().join("c2"),
        &["--remote-executor", &bg.url()],
    );
    assert!(
        ok,
        "{out}
{}",
        logs(&ws2)
    );
    assert_eq!(count(&out, ": executed on c, action "), 2, "{out}");
    assert!(cached_blobs(&roomy.join("cache")) > 0);
}

const ZINFO: &str = "package:\n  name: zinfo\n  version: 1.0.0\n  epoch: 0\n  description: records what its environment holds\n  copyright: [{license: MIT}]\nenvironment:\n  contents:\n    packages: [busybox, zlib]\npipeline:\n  - runs: |\n      mkdir -p ${{targets.destdir}}/usr/share/zinfo\n      ls /lib/libz.so.1 > ${{targets.destdir}}/usr/share/zinfo/found\n      cat /etc/apk/world > ${{targets.destdir}}/usr/share/zinfo/world\n";

/// Two independent recipes whose environments come from the Alpine fixture served over HTTP
/// at `url`.
fn http_workspace(d: &Path, alpine: &Path, url: &str) {
    fs::create_dir_all(d).unwrap();
    let keys = keyring_yaml(&alpine.join("keys")).replace("    - ", "  - ");
    fs::write(
        d.join("pallet.yaml"),
        format!("repositories: [{url}]\nkeyring:\n{keys}"),
    )
    .unwrap();
    fs::write(d.join("libhello.yaml"), LIB).unwrap();
    fs::write(d.join("zinfo.yaml"), ZINFO).unwrap();
}

/// The jobs BuildGrid's scheduler holds: a job exists once a client has called Execute, which
/// it does only after uploading the action's inputs.
fn jobs(bg: &BuildGrid) -> usize {
    let o = Command::new(buildgrid_venv().join("bin/python"))
        .arg("-c")
        .arg(format!(
            "import sqlite3; print(sqlite3.connect('{}').execute('select count(*) from jobs').fetchone()[0])",
            bg.dir.join("bgd.db").display()
        ))
        .output()
        .unwrap();
    String::from_utf8_lossy(&o.stdout)
        .trim()
        .parse()
        .unwrap_or(0)
}

/// What the summary line says was uploaded, in bytes.
fn uploaded(out: &str) -> f64 {
    let line = out
        .lines()
        .find(|l| l.starts_with("remote: "))
        .unwrap_or_default();
    let part = line
        .rsplit("; ")
        .next()
        .and_then(|p| p.split(" uploaded").next())
        .unwrap_or_default();
    let (n, unit) = part.split_once(' ').unwrap_or(("0", "KiB"));
    let n: f64 = n.parse().unwrap_or(f64::MAX);
    n * if unit == "MiB" { 1048576.0 } else { 1024.0 }
}

/// Waits until nothing listens on loopback `port` any more (a dropped file server).
fn wait_until_closed(port: u16) {
    let gone = std::time::Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
        assert!(
            gone.elapsed().as_secs() < 10,
            "the file server still answers"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

#[test]
fn an_environment_from_a_repository_the_worker_cannot_reach_builds_remotely_to_the_same_bytes() {
    let Some(s) = shared() else { return };
    if !have("bwrap") {
        return;
    }
    let alpine = s.join("fixtures/alpine-3.19");
    let t = tempfile::tempdir().unwrap();
    let Some(bg) = BuildGrid::start(&t.path().join("bgd"), 10) else {
        return;
    };
    let server = FileServer::start(alpine.clone(), None);
    let port = server.port;
    let url = format!("http://127.0.0.1:{port}");
    let local = t.path().join("local");
    http_workspace(&local, &alpine, &url);
    let (ok, out) = build(&local, &t.path().join("c-local"), &[]);
    assert!(ok, "{out}\n{}", logs(&local));

    // The client alone first (no worker yet): it resolves, fetches the environment from the
    // server, uploads the inputs and asks for both actions, which then wait in the queue.
    let remote = t.path().join("remote");
    http_workspace(&remote, &alpine, &url);
    for f in ["melange.rsa", "melange.rsa.pub"] {
        fs::copy(local.join(f), remote.join(f)).unwrap();
    }
    let served_before = server
        .full_responses
        .load(std::sync::atomic::Ordering::Relaxed);
    let client = Command::new(pallet())
        .args(["build", "--arch", "x86_64", "-j", "2", "--cache-dir"])
        .arg(t.path().join("c-remote"))
        .args(["--remote-executor", &bg.url()])
        .current_dir(&remote)
        .env("SOURCE_DATE_EPOCH", "1700000000")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let started = std::time::Instant::now();
    while jobs(&bg) < 2 {
        assert!(
            started.elapsed().as_secs() < 120,
            "the actions never reached the scheduler"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert!(
        server
            .full_responses
            .load(std::sync::atomic::Ordering::Relaxed)
            > served_before,
        "the client fetched nothing from the repository"
    );
    // The repository goes away before any worker exists.
    drop(server);
    wait_until_closed(port);
    let w = Worker::start(&bg, &t.path().join("workers"), "w");
    let o = client.wait_with_output().unwrap();
    let out = text(&o);
    eprintln!("{out}");
    assert!(
        o.status.success(),
        "{out}\nworker: {}\n{}",
        w.log(),
        logs(&remote)
    );
    assert_eq!(count(&out, ": executed on w, action "), 2, "{out}");
    let want = packages(&local);
    assert_eq!(want.len(), 4, "{want:?}"); // libhello, libhello-dev, zinfo, the index
    assert_eq!(packages(&remote), want, "{out}");

    // The repository back (same URL), and a second checkout with one recipe changed: a new
    // action, whose environment is already in the CAS and is not uploaded again.
    let server = FileServer::start_on(alpine.clone(), port);
    let third = t.path().join("third");
    http_workspace(&third, &alpine, &url);
    fs::write(
        third.join("zinfo.yaml"),
        ZINFO.replace("ls /lib", "ls -l /lib"),
    )
    .unwrap();
    for f in ["melange.rsa", "melange.rsa.pub"] {
        fs::copy(local.join(f), third.join(f)).unwrap();
    }
    let (ok, out) = build(
        &third,
        &t.path().join("c-third"),
        &["--remote-executor", &bg.url()],
    );
    eprintln!("{out}");
    assert!(ok, "{out}\n{}", logs(&third));
    assert_eq!(count(&out, ": cache hit, action "), 1, "{out}");
    assert_eq!(count(&out, ": executed on w, action "), 1, "{out}");
    let busybox = fs::metadata(alpine.join("x86_64/busybox-1.36.1-r15.apk"))
        .unwrap()
        .len() as f64;
    assert!(uploaded(&out) < busybox / 4.0, "{out}");
    drop(server);

    // Of the repository only its index is left (the same URL, every package file gone), and
    // two more checkouts start with empty caches, one with the executor and one with the
    // cache alone: each node's key resolves from the index, both results come from the
    // ActionCache under their lookup actions, byte-identical, and no package file is asked
    // for (the server has none, so any download would fail the build).
    wait_until_closed(port);
    let index_only = t.path().join("index-only");
    fs::create_dir_all(index_only.join("x86_64")).unwrap();
    fs::copy(
        alpine.join("x86_64/APKINDEX.tar.gz"),
        index_only.join("x86_64/APKINDEX.tar.gz"),
    )
    .unwrap();
    let server = FileServer::start_on(index_only, port);
    for (name, flag) in [("fourth", "--remote-executor"), ("fifth", "--remote-cache")] {
        let ws = t.path().join(name);
        http_workspace(&ws, &alpine, &url);
        for f in ["melange.rsa", "melange.rsa.pub"] {
            fs::copy(local.join(f), ws.join(f)).unwrap();
        }
        let cache = t.path().join(format!("c-{name}"));
        let (ok, out) = build(&ws, &cache, &[flag, &bg.url()]);
        eprintln!("{out}");
        assert!(ok, "{out}\n{}", logs(&ws));
        assert_eq!(count(&out, ": cache hit, action "), 2, "{out}");
        assert_eq!(count(&out, ": executed on "), 0, "{out}");
        assert_eq!(count(&out, ": built here"), 0, "{out}");
        assert_eq!(packages(&ws), want, "{out}");
        assert!(!cache.join("env-apk").exists(), "{out}");
    }
    // The index, and the repository's optional `apk-configuration` (a 404 here); no package.
    let asked = server.requests.lock().unwrap().clone();
    assert!(
        asked.iter().any(|p| p == "/x86_64/APKINDEX.tar.gz"),
        "{asked:?}"
    );
    assert!(!asked.iter().any(|p| p.ends_with(".apk")), "{asked:?}");
    drop(server);
}

#[test]
fn a_worker_refuses_an_environment_package_that_is_not_the_one_its_lock_names() {
    let Some(s) = shared() else { return };
    if !have("bwrap") {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    // A copy of the fixture whose zlib file holds another (well-formed, signed) package: the
    // index's checksum for zlib no longer matches the file.
    let repo = t.path().join("alpine");
    let o = Command::new("cp")
        .arg("-a")
        .arg(s.join("fixtures/alpine-3.19"))
        .arg(&repo)
        .status()
        .unwrap();
    assert!(o.success());
    fs::copy(
        repo.join("x86_64/yaml-0.2.5-r2.apk"),
        repo.join("x86_64/zlib-1.3.1-r0.apk"),
    )
    .unwrap();
    let Some(bg) = BuildGrid::start(&t.path().join("bgd"), 10) else {
        return;
    };
    let w = Worker::start(&bg, &t.path().join("workers"), "w");
    let ws = t.path().join("ws");
    http_workspace(&ws, &repo, &repo.display().to_string());
    fs::remove_file(ws.join("libhello.yaml")).unwrap();
    let (ok, out) = build(&ws, &t.path().join("c"), &["--remote-executor", &bg.url()]);
    assert!(!ok, "{out}");
    let all = format!("{out}\n{}", logs(&ws));
    // The worker says so (its log comes back as `remote:` lines), and nothing is built.
    assert!(
        all.lines()
            .any(|l| l.starts_with("remote: ") && l.contains("does not match the signed index")),
        "{all}\n{}",
        w.log()
    );
    assert!(!ws.join("packages/x86_64/zinfo-1.0.0-r0.apk").exists());
}

/// BuildGrid over TLS only (its certificate signed by a CA made for the test) and checking a
/// JWT on every call: a worker and a client that both connect with grpcs://, the CA and the
/// token build the same bytes as a local build; without the CA, or without the token, the
/// client stops with an error naming the server and the flag to check.
#[test]
fn builds_over_grpcs_with_a_token_match_local_ones() {
    if !have("bwrap") {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let Some(bg) = BuildGrid::start_secured(&t.path().join("bgd"), 10, Security::TLS_AND_JWT)
    else {
        return;
    };
    let url = bg.url();
    let ca = bg.ca.clone().unwrap();
    let ca = ca.to_str().unwrap();
    let token = bg.bearer();
    let header = "authorization=@env:PALLET_RBE_TOKEN";
    let mut w = Worker::start_env(
        &bg,
        &t.path().join("workers"),
        "w1",
        &["--remote-tls-ca", ca, "--remote-header", header],
        &[("PALLET_RBE_TOKEN", &token)],
    );

    let local = t.path().join("local");
    workspace(&local, 2, 0);
    let (ok, out) = build(&local, &t.path().join("cache-local"), &[]);
    assert!(ok, "{out}");
    let checkout = |name: &str| {
        let d = t.path().join(name);
        workspace(&d, 2, 0);
        for f in ["melange.rsa", "melange.rsa.pub"] {
            fs::copy(local.join(f), d.join(f)).unwrap();
        }
        d
    };

    // Bazel's spelling of the CA flag, and the token from the environment.
    let remote = checkout("remote");
    let cache = t.path().join("cache-remote");
    let o = run(
        &[
            "build",
            "--arch",
            "x86_64",
            "--cache-dir",
            cache.to_str().unwrap(),
            "--remote-executor",
            &url,
            "--tls-certificate",
            ca,
            "--remote-header",
            header,
        ],
        &remote,
        &[
            ("SOURCE_DATE_EPOCH", "1700000000"),
            ("PALLET_RBE_TOKEN", &token),
        ],
    );
    let out = text(&o);
    assert!(
        o.status.success(),
        "{out}\nworker: {}\nlogs: {}\nserver: {}",
        w.log(),
        logs(&remote),
        bg.log()
    );
    assert_eq!(count(&out, ": executed on "), 2, "{out}");
    let want = packages(&local);
    assert_eq!(want.len(), 5, "{want:?}"); // 2 packages, 2 -doc, the index
    assert_eq!(packages(&remote), want, "{out}");
    w.kill();
    assert!(!w.log().contains(&token[7..]), "{}", w.log());

    // No CA: the server's certificate is not trusted, and the error says where to look.
    let (ok, out) = build(
        &checkout("no-ca"),
        &t.path().join("cache-no-ca"),
        &["--remote-executor", &url],
    );
    assert!(!ok, "{out}");
    assert!(
        out.contains(&url) && out.contains("--remote-tls-ca"),
        "{out}"
    );

    // No token: TLS works, the server refuses the first call.
    let (ok, out) = build(
        &checkout("no-token"),
        &t.path().join("cache-no-token"),
        &["--remote-cache", &url, "--remote-tls-ca", ca],
    );
    assert!(!ok, "{out}");
    assert!(
        out.contains(&url) && out.contains("Unauthenticated") && out.contains("--remote-header"),
        "{out}"
    );
}
