//! Remote repositories: an image builds from a real HTTP server on 127.0.0.1, the cache makes
//! a second build need no package download, `--offline` works from the cache alone, a mirror
//! rewrites a public URL to a local folder, and credentials are sent.

mod common;

use std::fs;
use std::sync::atomic::Ordering;

use common::*;

fn cfg(dir: &std::path::Path, repo: &str, keys: &std::path::Path) -> std::path::PathBuf {
    let p = dir.join("c.yaml");
    fs::write(
        &p,
        format!(
            "contents:\n  repositories:\n    - {repo}\n  keyring:\n{}  packages: [busybox, alpine-baselayout-data]\nentrypoint:\n  command: /bin/busybox true\narchs: [x86_64]\n",
            keyring_yaml(keys)
        ),
    )
    .unwrap();
    p
}

#[test]
fn http_cache_offline_mirror_and_auth() {
    let Some(s) = shared() else { return };
    let a = s.join("fixtures/alpine-3.19");
    let t = tempfile::tempdir().unwrap();
    let srv = FileServer::start(a.clone(), Some(("reader", "s3cret")));
    let cache = t.path().join("cache");
    let build = |c: &std::path::Path, extra: &[&str], out: &str| {
        let cache_arg = if extra.contains(&"--cache-dir") {
            vec![]
        } else {
            vec!["--cache-dir", cache.to_str().unwrap()]
        };
        let mut args = vec![
            "image",
            "build",
            c.to_str().unwrap(),
            "h:1",
            out,
            "--sbom=false",
        ];
        args.extend(cache_arg);
        args.extend_from_slice(extra);
        run(&args, t.path(), &[])
    };
    // Wrong credentials: a clear error naming the repository without the password.
    let c = cfg(
        t.path(),
        &format!("http://reader:wrong@127.0.0.1:{}", srv.port),
        &a.join("keys"),
    );
    let o = build(&c, &[], "x.tar");
    assert!(!o.status.success());
    assert!(
        text(&o).contains("401") && !text(&o).contains("wrong"),
        "{}",
        text(&o)
    );
    // Right credentials in the URL.
    let c = cfg(
        t.path(),
        &format!("http://reader:s3cret@127.0.0.1:{}", srv.port),
        &a.join("keys"),
    );
    let o = build(&c, &[], "one.tar");
    assert!(o.status.success(), "{}", text(&o));
    let first = srv.full_responses.load(Ordering::Relaxed);
    assert!(first >= 3, "index and packages downloaded ({first})");
    // Second build: the index revalidates with its ETag (304) and packages come from the cache.
    let o = build(&c, &[], "two.tar");
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(
        srv.full_responses.load(Ordering::Relaxed),
        first,
        "nothing downloaded again"
    );
    assert_eq!(
        fs::read(t.path().join("one.tar")).unwrap(),
        fs::read(t.path().join("two.tar")).unwrap()
    );
    // Offline: the server is gone, the cache is enough.
    drop(srv);
    let o = build(&c, &["--offline"], "three.tar");
    assert!(o.status.success(), "{}", text(&o));
    // A config naming a public repository builds air-gapped through a mirror.
    let c = cfg(
        t.path(),
        "https://dl-cdn.alpinelinux.org/alpine/v3.19/main",
        &a.join("keys"),
    );
    let mirror = format!(
        "https://dl-cdn.alpinelinux.org/alpine/v3.19/main={}",
        a.display()
    );
    let o = build(
        &c,
        &[
            "--mirror",
            &mirror,
            "--cache-dir",
            t.path().join("c2").to_str().unwrap(),
        ],
        "four.tar",
    );
    assert!(o.status.success(), "{}", text(&o));
    // Offline with an empty cache fails clearly.
    let c = cfg(t.path(), "http://127.0.0.1:9/none", &a.join("keys"));
    let o = build(
        &c,
        &[
            "--offline",
            "--cache-dir",
            t.path().join("empty").to_str().unwrap(),
        ],
        "five.tar",
    );
    assert!(!o.status.success());
    assert!(text(&o).contains("offline"), "{}", text(&o));
}

/// `contents.keyring` and `--keyring-append` given as URLs (as every Wolfi configuration gives
/// them): fetched from a server on 127.0.0.1, cached by URL with their ETag, revalidated on the
/// next build without a second download, used offline with the server gone, and a key that
/// cannot be had is an error naming its URL. Plain http to another host is refused.
#[test]
fn keyrings_given_as_urls() {
    let Some(s) = shared() else { return };
    let a = s.join("fixtures/alpine-3.19");
    let t = tempfile::tempdir().unwrap();
    let srv = FileServer::start(a.clone(), None);
    let base = format!("http://127.0.0.1:{}", srv.port);
    let mut keys: Vec<String> = fs::read_dir(a.join("keys"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    keys.sort();
    // All but one key in the YAML, the last one through --keyring-append.
    let last = keys.pop().unwrap();
    let yaml_keys: String = keys
        .iter()
        .map(|k| format!("    - {base}/keys/{k}\n"))
        .collect();
    let c = t.path().join("c.yaml");
    fs::write(
        &c,
        format!(
            "contents:\n  repositories:\n    - {base}\n  keyring:\n{yaml_keys}  packages: [busybox]\narchs: [x86_64]\n"
        ),
    )
    .unwrap();
    let append = format!("{base}/keys/{last}");
    let build = |out: &str, extra: &[&str]| {
        let mut args = vec![
            "image",
            "build",
            c.to_str().unwrap(),
            "k:1",
            out,
            "--sbom=false",
            "--cache-dir",
            "cache",
            "--keyring-append",
            &append,
        ];
        args.extend_from_slice(extra);
        run(&args, t.path(), &[])
    };
    let o = build("a.tar", &[]);
    assert!(o.status.success(), "{}", text(&o));
    let cached: Vec<_> = walk(&t.path().join("cache/keys-v1"));
    assert_eq!(
        cached.iter().filter(|p| p.ends_with(".pub")).count(),
        keys.len() + 1,
        "{cached:?}"
    );
    // A second build revalidates (304) instead of downloading the keys again.
    let before = srv.full_responses.load(Ordering::Relaxed);
    let o = build("b.tar", &[]);
    assert!(o.status.success(), "{}", text(&o));
    let after = srv.full_responses.load(Ordering::Relaxed);
    assert_eq!(after, before, "keys or index downloaded again");
    // A key that is not cached and cannot be fetched: the error names its URL.
    let missing = format!("{base}/keys/not-there.rsa.pub");
    let o = run(
        &[
            "image",
            "build",
            c.to_str().unwrap(),
            "k:1",
            "d.tar",
            "--cache-dir",
            "cache",
            "--keyring-append",
            &missing,
        ],
        t.path(),
        &[],
    );
    assert!(!o.status.success());
    assert!(text(&o).contains(&missing), "{}", text(&o));
    assert!(!t.path().join("d.tar").exists());
    // Offline, with the server gone: the cached keys serve.
    drop(srv);
    let o = build("c.tar", &["--offline"]);
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(
        fs::read(t.path().join("b.tar")).unwrap(),
        fs::read(t.path().join("c.tar")).unwrap()
    );
    // Plain http to a host that is not this machine is refused before anything is fetched.
    let o = run(
        &[
            "image",
            "build",
            c.to_str().unwrap(),
            "k:1",
            "e.tar",
            "--cache-dir",
            "cache",
            "--offline",
            "--keyring-append",
            "http://keys.example.invalid/k.rsa.pub",
        ],
        t.path(),
        &[],
    );
    assert!(
        !o.status.success() && text(&o).contains("https"),
        "{}",
        text(&o)
    );
}

fn walk(dir: &std::path::Path) -> Vec<String> {
    let mut out = vec![];
    for e in fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p.display().to_string());
        }
    }
    out
}

/// Two, then four builds started at once on one cache folder: all succeed with the same image,
/// every package and the index are downloaded exactly once (per-entry locks make the others
/// wait and then find the entry), and the cache holds no temporary files afterwards.
#[test]
fn concurrent_builds_share_one_cache() {
    let Some(s) = shared() else { return };
    let a = s.join("fixtures/alpine-3.19");
    let t = tempfile::tempdir().unwrap();
    let srv = FileServer::start(a.clone(), None);
    let c = t.path().join("c.yaml");
    fs::write(
        &c,
        format!(
            "contents:\n  repositories:\n    - http://127.0.0.1:{}\n  keyring:\n{}  packages: [alpine-base, openssl]\narchs: [x86_64]\n",
            srv.port,
            keyring_yaml(&a.join("keys"))
        ),
    )
    .unwrap();
    for (round, n) in [(0, 2), (1, 4)] {
        let cache = t.path().join(format!("cache-{round}"));
        let before = srv.full_responses.load(Ordering::Relaxed);
        let children: Vec<_> = (0..n)
            .map(|i| {
                std::process::Command::new(pallet())
                    .args(["image", "build", c.to_str().unwrap(), "c:1"])
                    .arg(t.path().join(format!("out-{round}-{i}.tar")))
                    .args(["--sbom=false", "--cache-dir"])
                    .arg(&cache)
                    .env("SOURCE_DATE_EPOCH", "1700000000")
                    .stdout(std::process::Stdio::piped())
                    .stderr(std::process::Stdio::piped())
                    .spawn()
                    .unwrap()
            })
            .collect();
        let mut outputs = vec![];
        for (i, ch) in children.into_iter().enumerate() {
            let o = ch.wait_with_output().unwrap();
            assert!(o.status.success(), "build {i} of {n}: {}", text(&o));
            outputs.push(fs::read(t.path().join(format!("out-{round}-{i}.tar"))).unwrap());
        }
        assert!(
            outputs.windows(2).all(|w| w[0] == w[1]),
            "{n} builds differ"
        );
        let packages = fs::read_dir(cache.join("apk-data-v2"))
            .unwrap()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().ends_with(".tar"))
            .count();
        let downloads = srv.full_responses.load(Ordering::Relaxed) - before;
        assert_eq!(
            downloads,
            packages + 1,
            "{n} builds: {downloads} downloads for {packages} packages and one index"
        );
        let leftovers: Vec<String> = walk(&cache)
            .into_iter()
            .filter(|p| p.contains(".pallet-tmp."))
            .collect();
        assert!(leftovers.is_empty(), "{leftovers:?}");
    }
}

/// Two, then four package builds started at once, each a different recipe, on one package
/// cache and one output folder: all succeed, the environment's packages are downloaded once,
/// and the shared index lists every package (each build's index update waits for the others).
#[test]
fn concurrent_package_builds_share_one_cache_and_index() {
    let Some(s) = shared() else { return };
    if !have("bwrap") {
        return;
    }
    let a = s.join("fixtures/alpine-3.19");
    let t = tempfile::tempdir().unwrap();
    let srv = FileServer::start(a.clone(), None);
    let o = run(&["keygen", "--bits", "2048", "k.rsa"], t.path(), &[]);
    assert!(o.status.success(), "{}", text(&o));
    for (round, n) in [(0, 2), (1, 4)] {
        let cache = t.path().join(format!("apk-cache-{round}"));
        let out = t.path().join(format!("out-{round}"));
        let before = srv.full_responses.load(Ordering::Relaxed);
        let children: Vec<_> = (0..n)
            .map(|i| {
                let f = t.path().join(format!("r{round}-{i}.yaml"));
                fs::write(
                    &f,
                    format!(
                        "package:\n  name: p{i}\n  version: 1\n  epoch: 0\n  description: d\nenvironment:\n  contents:\n    repositories:\n      - http://127.0.0.1:{}\n    keyring:\n{}    packages: [busybox]\npipeline:\n  - runs: mkdir -p ${{{{targets.destdir}}}}/p && echo {i} > ${{{{targets.destdir}}}}/p/{i}\n",
                        srv.port,
                        keyring_yaml(&a.join("keys"))
                    ),
                )
                .unwrap();
                std::process::Command::new(pallet())
                    .args(["pkg", "build", f.to_str().unwrap(), "--arch", "x86_64", "--signing-key", "k.rsa"])
                    .arg("--apk-cache-dir")
                    .arg(&cache)
                    .arg("--out-dir")
                    .arg(&out)
                    .current_dir(t.path())
                    .stdout(std::process::Stdio::piped())
                    .stderr(std::process::Stdio::piped())
                    .spawn()
                    .unwrap()
            })
            .collect();
        for (i, ch) in children.into_iter().enumerate() {
            let o = ch.wait_with_output().unwrap();
            assert!(o.status.success(), "build {i} of {n}: {}", text(&o));
        }
        let o = run(
            &[
                "verify",
                "--keyring",
                "k.rsa.pub",
                out.join("x86_64/APKINDEX.tar.gz").to_str().unwrap(),
            ],
            t.path(),
            &[],
        );
        assert!(o.status.success(), "{}", text(&o));
        let idx = pallet_index_names(&out.join("x86_64/APKINDEX.tar.gz"));
        let want: Vec<String> = (0..n).map(|i| format!("p{i}")).collect();
        assert_eq!(idx, want, "the index lost packages");
        let packages = fs::read_dir(cache.join("apk-data-v2"))
            .unwrap()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().ends_with(".tar"))
            .count();
        let downloads = srv.full_responses.load(Ordering::Relaxed) - before;
        assert_eq!(
            downloads,
            packages + 1,
            "{n} builds: {downloads} downloads for {packages} packages and one index"
        );
    }
}

/// The package names an index lists, sorted.
fn pallet_index_names(index: &std::path::Path) -> Vec<String> {
    let o = std::process::Command::new("tar")
        .arg("-xzOf")
        .arg(index)
        .arg("APKINDEX")
        .output()
        .unwrap();
    let mut v: Vec<String> = String::from_utf8_lossy(&o.stdout)
        .lines()
        .filter_map(|l| l.strip_prefix("P:").map(str::to_string))
        .collect();
    v.sort();
    v
}
