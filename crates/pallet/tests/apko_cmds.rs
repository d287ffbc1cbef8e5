//! End to end, through the `apko` name of the real binary: key discovery (Alpine's
//! releases.json and Chainguard's apk-configuration, from a server on 127.0.0.1),
//! `install-keys`, `show-packages` formats, `dot`, `build-cpio` (read back with GNU cpio) and
//! `version`.

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::Ordering;

use base64::Engine as _;
use common::*;

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn link(target: &Path, at: &Path) {
    fs::create_dir_all(at.parent().unwrap()).unwrap();
    std::os::unix::fs::symlink(target, at).unwrap();
}

/// A configuration with the given repository and keyring lines (no keyring when empty).
fn config(d: &Path, name: &str, repo: &str, keyring: &str, packages: &str) -> PathBuf {
    let keys = if keyring.is_empty() {
        String::new()
    } else {
        format!("  keyring:\n{keyring}")
    };
    let p = d.join(name);
    fs::write(
        &p,
        format!(
            "contents:\n  repositories:\n    - {repo}\n{keys}  packages: [{packages}]\narchs: [x86_64]\n"
        ),
    )
    .unwrap();
    p
}

/// Every member name of a .tar.gz, read by GNU tar.
fn tar_names(tgz: &Path) -> Vec<String> {
    let o = Command::new("tar").arg("-tzf").arg(tgz).output().unwrap();
    assert!(o.status.success(), "{}", text(&o));
    stdout(&o)
        .lines()
        .map(|l| l.trim_end_matches('/').to_string())
        .collect()
}

/// One DER TLV: (content, rest).
fn tlv(d: &[u8]) -> (&[u8], &[u8]) {
    let (len, hdr) = if d[1] < 0x80 {
        (d[1] as usize, 2)
    } else {
        let k = (d[1] & 0x7f) as usize;
        (
            d[2..2 + k].iter().fold(0, |a, b| (a << 8) | *b as usize),
            2 + k,
        )
    };
    (&d[hdr..hdr + len], &d[hdr + len..])
}

/// The DER of a PEM public key file.
fn pem_der(p: &Path) -> Vec<u8> {
    let t = fs::read_to_string(p).unwrap();
    let b64: String = t.lines().filter(|l| !l.starts_with("-----")).collect();
    base64::engine::general_purpose::STANDARD
        .decode(b64.trim())
        .unwrap()
}

/// A PKIX RSA public key as a JWK with the given kid.
fn jwk(p: &Path, kid: &str) -> serde_json::Value {
    let der = pem_der(p);
    let (spki, _) = tlv(&der);
    let (_alg, rest) = tlv(spki);
    let (bits, _) = tlv(rest);
    let (pkcs1, _) = tlv(&bits[1..]);
    let (n, rest) = tlv(pkcs1);
    let (e, _) = tlv(rest);
    let b = |v: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v);
    serde_json::json!({"kty": "RSA", "kid": kid, "use": "sig", "alg": "RS256", "n": b(n), "e": b(e)})
}

fn fixture_keys(a: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = fs::read_dir(a.join("keys"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    v.sort();
    v
}

/// An Alpine repository listed without a keyring gets its keys as apko finds them: the URL's
/// release branch looked up in releases.json (here served by a loopback server that a mirror
/// puts in place of alpinelinux.org), deprecated keys left out, `%20` read as `@`. The keys are
/// cached (a second build downloads nothing, an offline build works) and end up in the image.
#[test]
fn alpine_repositories_find_their_keys_through_releases_json() {
    let Some(s) = shared() else { return };
    let a = s.join("fixtures/alpine-3.19");
    let t = tempfile::tempdir().unwrap();
    let d = t.path();
    let www = d.join("www");
    link(&a, &www.join("alpine/v3.19/main"));
    link(&a, &www.join("alpine/v3.18/main"));
    // The key files under the names a server decodes `%40` and `%20`-turned-`@` to, and
    // under their escaped names too (the test server does not decode URLs).
    for k in fixture_keys(&a) {
        let name = k.file_name().unwrap().to_string_lossy().into_owned();
        link(&k, &www.join("alpinelinux.org/keys").join(&name));
        link(
            &k,
            &www.join("alpinelinux.org/keys")
                .join(name.replace('@', "%40")),
        );
    }
    let mut keys: Vec<serde_json::Value> = fixture_keys(&a)
        .iter()
        .map(|k| {
            let name = k.file_name().unwrap().to_string_lossy().into_owned();
            // The published list writes the @ of some key names as %20 (apko's KeysFor fix).
            let escaped = if name.contains("6165ee59") {
                name.replace('@', "%20")
            } else {
                name.replace('@', "%40")
            };
            serde_json::json!({"url": format!("https://alpinelinux.org/keys/{escaped}")})
        })
        .collect();
    // A deprecated key is not fetched (it would 404 and fail the discovery).
    keys.push(serde_json::json!({"url": "https://alpinelinux.org/keys/gone.rsa.pub", "deprecated_since": "2001-02-03"}));
    let releases = serde_json::json!({
        "latest_stable": "v3.19",
        "release_branches": [
            {"rel_branch": "v3.19", "git_branch": "3.19-stable", "arches": ["x86_64"],
             "keys": {"x86_64": keys, "aarch64": []}},
        ]
    });
    fs::write(
        www.join("alpinelinux.org/releases.json"),
        serde_json::to_vec_pretty(&releases).unwrap(),
    )
    .unwrap();
    let srv = FileServer::start(www.clone(), None);
    let base = format!("http://127.0.0.1:{}", srv.port);
    let mirror = format!("https://alpinelinux.org/={base}/alpinelinux.org/");
    let cfg = config(
        d,
        "c.yaml",
        &format!("{base}/alpine/v3.19/main"),
        "",
        "busybox",
    );
    let build = |out: &str, extra: &[&str]| {
        let mut args = vec![
            "build-minirootfs",
            cfg.to_str().unwrap(),
            out,
            "--build-arch",
            "x86_64",
            "--cache-dir",
            "cache",
            "--mirror",
            &mirror,
        ];
        args.extend_from_slice(extra);
        apko(d, &args)
    };
    let o = build("one.tar.gz", &[]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(!text(&o).contains("discovery"), "{}", text(&o));
    let names = tar_names(&d.join("one.tar.gz"));
    assert!(
        names.contains(&"etc/apk/keys/alpine-devel@lists.alpinelinux.org-6165ee59.rsa.pub".into()),
        "{names:?}"
    );
    assert!(!names.iter().any(|n| n.contains("gone")));
    assert!(names.contains(&"bin/busybox".to_string()));
    // Again: releases.json, the keys and the index are revalidated by ETag, nothing is sent
    // again in full.
    let before = srv.full_responses.load(Ordering::Relaxed);
    let o = build("two.tar.gz", &[]);
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(srv.full_responses.load(Ordering::Relaxed), before);
    // Offline, from the cache alone.
    drop(srv);
    let o = build("three.tar.gz", &["--offline"]);
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(
        fs::read(d.join("one.tar.gz")).unwrap(),
        fs::read(d.join("three.tar.gz")).unwrap()
    );
    // A branch releases.json does not list has no keys to discover: the index is untrusted.
    let srv = FileServer::start(www.clone(), None);
    let base = format!("http://127.0.0.1:{}", srv.port);
    let mirror = format!("https://alpinelinux.org/={base}/alpinelinux.org/");
    let cfg = config(
        d,
        "old.yaml",
        &format!("{base}/alpine/v3.18/main"),
        "",
        "busybox",
    );
    let o = apko(
        d,
        &[
            "show-packages",
            cfg.to_str().unwrap(),
            "--cache-dir",
            "cache-old",
            "--mirror",
            &mirror,
        ],
    );
    assert!(!o.status.success());
    assert!(text(&o).contains("6165ee59"), "{}", text(&o));
}

/// The server side of Chainguard-style discovery: `<repo>/apk-configuration` naming a JWKS
/// that holds the fixture's keys (and an EC key, which is skipped).
fn chainguard_server(a: &Path, www: &Path, jwks_at: &str) {
    link(&a.join("x86_64"), &www.join("cg/os/x86_64"));
    let mut keys: Vec<serde_json::Value> = fixture_keys(a)
        .iter()
        .map(|k| {
            let name = k.file_name().unwrap().to_string_lossy().into_owned();
            jwk(k, name.trim_end_matches(".rsa.pub"))
        })
        .collect();
    keys.push(
        serde_json::json!({"kty": "EC", "kid": "ec-key", "crv": "P-256",
        "x": "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU",
        "y": "x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"}),
    );
    fs::create_dir_all(www.join("cg/os")).unwrap();
    fs::write(
        www.join("cg/jwks.json"),
        serde_json::to_vec(&serde_json::json!({ "keys": keys })).unwrap(),
    )
    .unwrap();
    fs::write(
        www.join("cg/os/apk-configuration"),
        serde_json::to_vec(&serde_json::json!({ "jwks_uri": jwks_at })).unwrap(),
    )
    .unwrap();
}

/// A Chainguard-style repository without a keyring: its apk-configuration names the JWKS the
/// keys come from. `install-keys` writes those keys into ROOT/etc/apk/keys for the
/// repositories ROOT/etc/apk/repositories lists, and they verify the repository's index.
#[test]
fn chainguard_discovery_and_install_keys() {
    let Some(s) = shared() else { return };
    let a = s.join("fixtures/alpine-3.19");
    let t = tempfile::tempdir().unwrap();
    let d = t.path();
    let www = d.join("www");
    let srv = FileServer::start(www.clone(), None);
    let base = format!("http://127.0.0.1:{}", srv.port);
    chainguard_server(&a, &www, &format!("{base}/cg/jwks.json"));
    let repo = format!("{base}/cg/os");
    let cfg = config(d, "c.yaml", &repo, "", "busybox");
    let o = apko(
        d,
        &[
            "show-packages",
            cfg.to_str().unwrap(),
            "--cache-dir",
            "cache",
        ],
    );
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        stdout(&o).lines().any(|l| l == "busybox 1.36.1-r15"),
        "{}",
        text(&o)
    );
    assert!(text(&o).contains("skipped key \"ec-key\""), "{}", text(&o));
    // The lock records the discovered keys, with their content, as apko's does.
    let o = apko(d, &["lock", cfg.to_str().unwrap(), "--cache-dir", "cache"]);
    assert!(o.status.success(), "{}", text(&o));
    let lock: serde_json::Value =
        serde_json::from_slice(&fs::read(d.join("c.lock.json")).unwrap()).unwrap();
    let locked = lock["contents"]["keyring"].as_array().unwrap();
    assert_eq!(locked.len(), fixture_keys(&a).len(), "{lock}");
    for k in fixture_keys(&a) {
        let name = k.file_name().unwrap().to_string_lossy().into_owned();
        let url = format!("{repo}/{name}");
        let e = locked
            .iter()
            .find(|e| e["url"] == url.as_str())
            .unwrap_or_else(|| panic!("{url} not in {lock}"));
        assert_eq!(e["name"], url.trim_start_matches("http://"));
        let pem = e["content"].as_str().unwrap();
        assert!(pem.starts_with("-----BEGIN PUBLIC KEY-----\n"), "{pem}");
    }
    // Without discovery (a plain local copy of the same repository) the index is untrusted.
    let cfg2 = config(d, "local.yaml", &a.display().to_string(), "", "busybox");
    let o = apko(
        d,
        &[
            "show-packages",
            cfg2.to_str().unwrap(),
            "--cache-dir",
            "cache",
        ],
    );
    assert!(!o.status.success(), "{}", text(&o));

    // install-keys into a root that is not the host's.
    let root = d.join("root");
    fs::create_dir_all(root.join("etc/apk")).unwrap();
    fs::write(
        root.join("etc/apk/repositories"),
        format!("# the distribution\n@cg {repo}\n\n{base}/nothing-here\n/srv/local/repo\n"),
    )
    .unwrap();
    let o = apko(
        d,
        &[
            "install-keys",
            "--root",
            root.to_str().unwrap(),
            "--cache-dir",
            "cache2",
        ],
    );
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        text(&o).contains("nothing-here: offers no keys"),
        "{}",
        text(&o)
    );
    for k in fixture_keys(&a) {
        let written = root.join("etc/apk/keys").join(k.file_name().unwrap());
        assert!(
            written.is_file(),
            "{} missing: {}",
            written.display(),
            text(&o)
        );
        // The same key as the fixture's, PEM-encoded as apko writes it.
        assert_eq!(pem_der(&written), pem_der(&k));
        let pem = fs::read_to_string(&written).unwrap();
        assert!(pem.starts_with("-----BEGIN PUBLIC KEY-----\n") && !pem.contains('\r'));
    }
    assert!(!root.join("etc/apk/keys/ec-key.rsa.pub").exists());
    let o = run(
        &[
            "verify",
            "--keyring",
            root.join("etc/apk/keys").to_str().unwrap(),
            a.join("x86_64/APKINDEX.tar.gz").to_str().unwrap(),
        ],
        d,
        &[],
    );
    assert!(
        o.status.success() && stdout(&o).contains(": OK"),
        "{}",
        text(&o)
    );
    // pallet's own name for it, offline from the cache: the same keys.
    let root2 = d.join("root2");
    fs::create_dir_all(root2.join("etc/apk")).unwrap();
    fs::copy(
        root.join("etc/apk/repositories"),
        root2.join("etc/apk/repositories"),
    )
    .unwrap();
    drop(srv);
    let o = run(
        &[
            "image",
            "install-keys",
            "--root",
            root2.to_str().unwrap(),
            "--cache-dir",
            "cache2",
            "--offline",
        ],
        d,
        &[],
    );
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(
        fs::read_dir(root2.join("etc/apk/keys")).unwrap().count(),
        fixture_keys(&a).len()
    );
    // A root without a repositories file is an error naming it.
    let o = apko(
        d,
        &["install-keys", "--root", d.join("empty").to_str().unwrap()],
    );
    assert!(!o.status.success());
    assert!(text(&o).contains("etc/apk/repositories"), "{}", text(&o));
}

/// A JWKS served over plain http from a host other than this one is not trusted (unless
/// --insecure-keyring): the document naming it is not even read.
#[test]
fn discovery_refuses_plain_http_keys_from_other_hosts() {
    let t = tempfile::tempdir().unwrap();
    let d = t.path();
    let root = d.join("root");
    fs::create_dir_all(root.join("etc/apk")).unwrap();
    fs::write(
        root.join("etc/apk/repositories"),
        "http://packages.example.invalid/os\n",
    )
    .unwrap();
    let o = apko(
        d,
        &[
            "install-keys",
            "--root",
            root.to_str().unwrap(),
            "--cache-dir",
            "c",
        ],
    );
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("skipped (plain http"), "{}", text(&o));
    assert!(!root.join("etc/apk/keys").exists());
}

fn local_config(d: &Path, a: &Path, packages: &str) -> PathBuf {
    config(
        d,
        "c.yaml",
        &a.display().to_string(),
        &keyring_yaml(&a.join("keys")),
        packages,
    )
}

/// `show-packages`: apko's default (`NAME VERSION`), every preset, Go templates over .Name,
/// .Version and .Source, and a clear refusal of template constructs outside the subset.
#[test]
fn show_packages_presets_and_templates() {
    let Some(s) = shared() else { return };
    let a = s.join("fixtures/alpine-3.19");
    let t = tempfile::tempdir().unwrap();
    let d = t.path();
    local_config(d, &a, "busybox");
    let show = |extra: &[&str]| {
        let mut args = vec!["show-packages", "c.yaml", "--cache-dir", "cache"];
        args.extend_from_slice(extra);
        apko(d, &args)
    };
    let o = show(&[]);
    assert!(o.status.success(), "{}", text(&o));
    let lines: Vec<String> = stdout(&o).lines().map(String::from).collect();
    assert!(
        lines.contains(&"busybox 1.36.1-r15".to_string()),
        "{lines:?}"
    );
    assert!(
        lines.iter().any(|l| l.starts_with("musl 1.2.4")),
        "{lines:?}"
    );
    // musl comes before busybox, which needs it (install order).
    let pos = |n: &str| lines.iter().position(|l| l.starts_with(n)).unwrap();
    assert!(pos("musl ") < pos("busybox "));
    let src = |n: &str, v: &str| format!("{}/x86_64/{n}-{v}.apk", a.display());
    let busybox_line = |fmt: &str| {
        let o = show(&["--format", fmt]);
        assert!(o.status.success(), "{fmt}: {}", text(&o));
        let out = stdout(&o);
        assert_eq!(out.lines().count(), lines.len(), "{fmt}: {out}");
        out.lines()
            .find(|l| l.contains("busybox") && l.contains("1.36.1-r15"))
            .unwrap()
            .to_string()
    };
    let bs = src("busybox", "1.36.1-r15");
    assert_eq!(busybox_line("name-version"), "busybox 1.36.1-r15");
    assert_eq!(
        busybox_line("name-version-source"),
        format!("busybox 1.36.1-r15 {bs}")
    );
    assert_eq!(busybox_line("name=version"), "busybox=1.36.1-r15");
    assert_eq!(
        busybox_line("name=version-source"),
        format!("busybox=1.36.1-r15 {bs}")
    );
    assert_eq!(busybox_line("name-(version)"), "busybox (1.36.1-r15)");
    assert_eq!(
        busybox_line("name-(version)-source"),
        format!("busybox (1.36.1-r15) {bs}")
    );
    assert_eq!(busybox_line("packagelock"), "- busybox=1.36.1-r15");
    assert_eq!(
        busybox_line("packagelock-source"),
        format!("- busybox=1.36.1-r15 # {bs}")
    );
    assert_eq!(busybox_line("{{.Name}}@{{.Version}}"), "busybox@1.36.1-r15");
    assert_eq!(
        busybox_line("{{ printf \"%-12s|\" .Name }}{{ .Version }}"),
        "busybox     |1.36.1-r15"
    );
    assert_eq!(
        busybox_line("{{- .Source | printf \"%q\" -}}"),
        format!("\"{bs}\"")
    );
    for (bad, why) in [
        ("{{ .Arch }}", "no field .Arch"),
        ("{{ if .Name }}x{{ end }}", "{{if}} is not supported"),
        ("{{ .Name", "unclosed"),
    ] {
        let o = show(&["--format", bad]);
        assert!(!o.status.success(), "{bad}");
        assert!(o.stdout.is_empty(), "{bad}");
        assert!(text(&o).contains(why), "{bad}: {}", text(&o));
    }
    let o = apko(d, &["show-packages", "--help"]);
    assert!(stdout(&o).contains("packagelock-source") && stdout(&o).contains("Examples:"));
}

/// `dot`: the configuration, the requested packages, each resolved package labelled
/// name-version with its dependencies, a versioned provide drawn as a box pointing at its
/// provider; the output is valid Graphviz (checked with `dot` when installed). A package that
/// cannot be resolved is drawn as an error node; `--web` is refused with what to do instead.
#[test]
fn dot_draws_the_package_graph() {
    let Some(s) = shared() else { return };
    let a = s.join("fixtures/alpine-3.19");
    let t = tempfile::tempdir().unwrap();
    let d = t.path();
    local_config(d, &a, "busybox");
    let o = apko(d, &["dot", "c.yaml", "--cache-dir", "cache"]);
    assert!(o.status.success(), "{}", text(&o));
    let g = stdout(&o);
    assert!(
        g.starts_with("digraph images {\ngraph [\n  rankdir=LR;\n];\n\"c.yaml\";\n"),
        "{g}"
    );
    assert!(g.ends_with("}\n\n"), "{g}");
    assert!(g.contains("\"c.yaml\" -> busybox\n"), "{g}");
    assert!(
        g.contains("busybox [label=\"busybox-1.36.1-r15\", tooltip="),
        "{g}"
    );
    assert!(
        g.contains("busybox -> \"so:libc.musl-x86_64.so.1\"\n"),
        "{g}"
    );
    assert!(
        g.contains("\"so:libc.musl-x86_64.so.1\" [shape=rect];\n"),
        "{g}"
    );
    assert!(g.contains("\"so:libc.musl-x86_64.so.1\" -> musl\n"), "{g}");
    let edges = |g: &str| g.lines().filter(|l| l.contains(" -> ")).count();
    let o = apko(d, &["dot", "-S", "c.yaml", "--cache-dir", "cache"]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(edges(&stdout(&o)) <= edges(&g));
    if have("dot") {
        let mut c = Command::new("dot")
            .arg("-Tsvg")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        use std::io::Write as _;
        c.stdin.take().unwrap().write_all(g.as_bytes()).unwrap();
        let out = c.wait_with_output().unwrap();
        assert!(out.status.success() && String::from_utf8_lossy(&out.stdout).contains("<svg"));
    }
    // Resolution problems are part of the graph, as apko draws them.
    let cfg = local_config(d, &a, "busybox, no-such-package");
    let o = apko(d, &["dot", cfg.to_str().unwrap(), "--cache-dir", "cache"]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        stdout(&o).contains("\"❌ error\" -> \"❌ no-such-package"),
        "{}",
        text(&o)
    );
    let o = apko(d, &["dot", "--web", "c.yaml"]);
    assert!(!o.status.success());
    assert!(text(&o).contains("dot -Tsvg"), "{}", text(&o));
}

/// newc records read back: (name, mode, uid, data).
fn newc(b: &[u8]) -> Vec<(String, u32, u32, Vec<u8>)> {
    let mut out = vec![];
    let mut i = 0;
    let f = |h: &[u8], k: usize| {
        u32::from_str_radix(std::str::from_utf8(&h[6 + 8 * k..14 + 8 * k]).unwrap(), 16).unwrap()
    };
    loop {
        let h = &b[i..i + 110];
        assert_eq!(&h[..6], b"070701");
        let (mode, uid, size, nlen) = (f(h, 1), f(h, 2), f(h, 6) as usize, f(h, 11) as usize);
        let name = String::from_utf8(b[i + 110..i + 110 + nlen - 1].to_vec()).unwrap();
        i = (i + 110 + nlen).div_ceil(4) * 4;
        let data = b[i..i + size].to_vec();
        i = (i + size).div_ceil(4) * 4;
        if name == "TRAILER!!!" {
            return out;
        }
        out.push((name, mode, uid, data));
    }
}

/// `build-cpio`: the same filesystem as `build-minirootfs`, as a newc archive that GNU cpio
/// lists (and gzip-compressed when the name ends in .gz); an account's home keeps its owner.
#[test]
fn build_cpio_writes_the_filesystem_as_newc() {
    let Some(s) = shared() else { return };
    let a = s.join("fixtures/alpine-3.19");
    let t = tempfile::tempdir().unwrap();
    let d = t.path();
    let cfg = local_config(d, &a, "busybox");
    let mut body = fs::read_to_string(&cfg).unwrap();
    body.push_str(
        "accounts:\n  users:\n    - username: app\n      uid: 1234\n  groups:\n    - groupname: app\n      gid: 1234\n",
    );
    fs::write(&cfg, body).unwrap();
    let common = ["--build-arch", "x86_64", "--cache-dir", "cache"];
    let mut args = vec!["build-cpio", "c.yaml", "init.cpio"];
    args.extend_from_slice(&common);
    let o = apko(d, &args);
    assert!(o.status.success(), "{}", text(&o));
    let mut args = vec!["build-cpio", "c.yaml", "init.cpio.gz"];
    args.extend_from_slice(&common);
    let o = apko(d, &args);
    assert!(o.status.success(), "{}", text(&o));
    let mut args = vec!["build-minirootfs", "c.yaml", "rootfs.tar.gz"];
    args.extend_from_slice(&common);
    let o = apko(d, &args);
    assert!(o.status.success(), "{}", text(&o));

    let raw = fs::read(d.join("init.cpio")).unwrap();
    let mut gz = vec![];
    use std::io::Read as _;
    flate2::read::GzDecoder::new(fs::File::open(d.join("init.cpio.gz")).unwrap())
        .read_to_end(&mut gz)
        .unwrap();
    assert_eq!(raw, gz);
    let recs = newc(&raw);
    assert_eq!(recs[0].0, ".");
    let names: Vec<&str> = recs[1..].iter().map(|r| r.0.as_str()).collect();
    let mut tar = tar_names(&d.join("rootfs.tar.gz"));
    tar.sort();
    let mut sorted: Vec<String> = names.iter().map(|s| s.to_string()).collect();
    sorted.sort();
    assert_eq!(sorted, tar);
    let get = |n: &str| recs.iter().find(|r| r.0 == n).unwrap();
    assert_eq!(get("bin/sh").1 & 0o170000, 0o120000);
    assert_eq!(get("bin/sh").3, b"/bin/busybox");
    assert_eq!(get("dev/null").1, 0o020666);
    assert_eq!(get("home/app").2, 1234);
    assert!(String::from_utf8_lossy(&get("etc/passwd").3).contains("app:x:1234:1234"));
    if have("cpio") {
        let o = Command::new("cpio")
            .args(["-itv", "--quiet"])
            .stdin(fs::File::open(d.join("init.cpio")).unwrap())
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", text(&o));
        let listing = stdout(&o);
        assert!(
            listing.lines().any(|l| l.ends_with(" bin/busybox")),
            "{listing}"
        );
        assert!(
            listing
                .lines()
                .any(|l| l.ends_with(" bin/sh -> /bin/busybox")),
            "{listing}"
        );
        assert!(
            listing
                .lines()
                .any(|l| l.starts_with("crw-rw-rw-") && l.ends_with(" dev/null"))
        );
        assert_eq!(listing.lines().count(), recs.len());
    }
}

/// `version` prints release-utils' fields in apko's layout (and JSON with --json); the new
/// commands all have help with examples.
#[test]
fn version_and_help() {
    let t = tempfile::tempdir().unwrap();
    let d = t.path();
    let o = apko(d, &["version"]);
    assert!(o.status.success(), "{}", text(&o));
    let out = stdout(&o);
    assert!(out.contains("\napko\n\n"), "{out}");
    for k in [
        "GitVersion:",
        "GitCommit:",
        "GitTreeState:",
        "BuildDate:",
        "GoVersion:",
        "Compiler:",
        "Platform:",
    ] {
        let line = out
            .lines()
            .find(|l| l.starts_with(k))
            .unwrap_or_else(|| panic!("{k}: {out}"));
        // tabwriter alignment: every value starts in column 16.
        assert_eq!(line[..15].trim_end(), k, "{line}");
        assert!(line.len() > 15 && !line[15..].starts_with(' '), "{line}");
    }
    assert!(out.contains(&format!("GitVersion:    v{}\n", env!("CARGO_PKG_VERSION"))));
    let o = apko(d, &["version", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let keys: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
    assert_eq!(
        keys,
        [
            "gitVersion",
            "gitCommit",
            "gitTreeState",
            "buildDate",
            "goVersion",
            "compiler",
            "platform"
        ]
    );
    for cmd in [
        "dot",
        "build-cpio",
        "install-keys",
        "version",
        "show-packages",
    ] {
        let o = apko(d, &[cmd, "--help"]);
        assert!(
            o.status.success() && stdout(&o).contains("Examples:"),
            "{cmd}: {}",
            text(&o)
        );
    }
    for cmd in ["dot", "build-cpio", "install-keys"] {
        let o = run(&["image", cmd, "--help"], d, &[]);
        assert!(
            o.status.success() && stdout(&o).contains("Examples:"),
            "{cmd}: {}",
            text(&o)
        );
    }
    let o = apko(d, &["install-keys", "--help"]);
    assert!(stdout(&o).contains("--root"));
}

/// Flags a command takes but cannot use say so in one line (none is dropped silently), and
/// `--arch` picks the one architecture of `build-minirootfs` as `--build-arch` does.
#[test]
fn flags_that_do_not_apply_say_so() {
    let Some(s) = shared() else { return };
    let a = s.join("fixtures/alpine-3.19");
    let t = tempfile::tempdir().unwrap();
    let d = t.path();
    local_config(d, &a, "busybox");
    let plain = apko(d, &["show-config", "c.yaml"]);
    assert!(plain.status.success(), "{}", text(&plain));
    assert!(!text(&plain).contains("note:"), "{}", text(&plain));
    let with = apko(
        d,
        &[
            "show-config",
            "c.yaml",
            "-k",
            "x.pub",
            "-r",
            "/r",
            "--offline",
        ],
    );
    assert!(with.status.success(), "{}", text(&with));
    assert_eq!(stdout(&with), stdout(&plain));
    let err = String::from_utf8_lossy(&with.stderr);
    assert!(
        err.contains("note: -k/--keyring-append, -r/--repository-append, --offline change how an image is built"),
        "{err}"
    );
    // An unknown SBOM format is refused before anything is built or written.
    let o = apko(
        d,
        &[
            "build",
            "c.yaml",
            "x:1",
            "out.tar",
            "--cache-dir",
            "cache-sbom",
            "--sbom-formats",
            "spdx,bogus",
        ],
    );
    assert!(
        !o.status.success() && text(&o).contains("--sbom-formats: unknown format 'bogus'"),
        "{}",
        text(&o)
    );
    assert!(!d.join("out.tar").exists() && !d.join("cache-sbom").exists());
    let dot = apko(d, &["dot", "c.yaml", "--cache-dir", "cache", "-e", "x.dev"]);
    assert!(dot.status.success(), "{}", text(&dot));
    assert!(
        text(&dot).contains("-e/--registry-explorer has no effect"),
        "{}",
        text(&dot)
    );
    // --arch names the architecture; two different ones are refused.
    let one = apko(
        d,
        &[
            "build-minirootfs",
            "c.yaml",
            "r.tar.gz",
            "--cache-dir",
            "cache",
            "--arch",
            "x86_64",
        ],
    );
    assert!(one.status.success(), "{}", text(&one));
    let two = apko(
        d,
        &[
            "build-minirootfs",
            "c.yaml",
            "r.tar.gz",
            "--cache-dir",
            "cache",
            "--arch",
            "aarch64",
            "--build-arch",
            "x86_64",
        ],
    );
    assert!(!two.status.success());
    assert!(
        text(&two).contains("builds one architecture: give it with --build-arch"),
        "{}",
        text(&two)
    );
}
