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
