//! End to end: recipes written to attack the packager. Each is built with the real binary and
//! the result checked: nothing the recipe says may add a line to `.PKGINFO` or the index, and a
//! name that reads as a path is refused before anything is written.

mod common;

use std::fs;
use std::path::Path;

use common::*;

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

fn write_recipe(d: &Path, name: &str, top: &str, pkg: &str, runs: &str) -> String {
    let file = format!("{name}.yaml");
    let runs: String = runs.lines().map(|l| format!("      {l}\n")).collect();
    fs::write(
        d.join(&file),
        format!(
            "package:\n  name: {name}\n  version: 1.0.0\n  epoch: 0\n  description: d\n{pkg}{top}pipeline:\n  - name: main\n    runs: |\n{runs}"
        ),
    )
    .unwrap();
    file
}

/// Steps run as melange's build user (uid 1000) with Docker's default capabilities, never as
/// root with all of them: a step cannot write the host's files (the bootstrap guest is the
/// host's root, read-only), and `capabilities.add` is what grants more.
#[test]
fn steps_run_unprivileged() {
    if !have("bwrap") {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let d = t.path();
    let probe = "mkdir -p ${{targets.destdir}}/out\nid -u > ${{targets.destdir}}/out/uid\ngrep CapEff /proc/self/status | awk '{print $2}' > ${{targets.destdir}}/out/capeff\nif touch /etc/pallet-escape 2>/dev/null; then echo yes; else echo no; fi > ${{targets.destdir}}/out/wrote-etc";
    let a = write_recipe(d, "plain", "", "", probe);
    let b = write_recipe(
        d,
        "admin",
        "capabilities:\n  add: [CAP_SYS_ADMIN]\n  drop: [chown]\n",
        "",
        probe,
    );
    for f in [&a, &b] {
        let o = run(
            &["pkg", "build", "--bootstrap", f, "--arch", "x86_64"],
            d,
            &[],
        );
        assert!(o.status.success(), "{f}: {}", text(&o));
    }
    let get = |pkg: &str, f: &str| {
        let o = std::process::Command::new("tar")
            .arg("-xzOf")
            .arg(d.join(format!("packages/x86_64/{pkg}-1.0.0-r0.apk")))
            .arg(format!("out/{f}"))
            .output()
            .unwrap();
        String::from_utf8_lossy(&o.stdout).trim().to_string()
    };
    assert_eq!(get("plain", "uid"), "1000");
    assert_eq!(get("plain", "wrote-etc"), "no");
    assert!(!Path::new("/etc/pallet-escape").exists());
    let caps = |pkg| u64::from_str_radix(&get(pkg, "capeff"), 16).unwrap();
    let (sys_admin, chown) = (1u64 << 21, 1u64);
    assert_eq!(caps("plain") & sys_admin, 0, "{:x}", caps("plain"));
    assert_ne!(caps("admin") & sys_admin, 0, "{:x}", caps("admin"));
    assert_eq!(caps("admin") & chown, 0, "{:x}", caps("admin"));
    // An unknown capability is named.
    let c = write_recipe(
        d,
        "badcap",
        "capabilities:\n  add: [CAP_WIZARD]\n",
        "",
        probe,
    );
    let o = run(&["pkg", "build", "--bootstrap", &c], d, &[]);
    assert!(
        !o.status.success() && text(&o).contains("CAP_WIZARD"),
        "{}",
        text(&o)
    );
}

/// `package.timeout` stops a build that runs too long, with a message that names the step and
/// the limit; a process a step leaves running in the background dies with the sandbox.
#[test]
fn timeouts_and_leftover_processes_end_with_the_build() {
    if !have("bwrap") {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let d = t.path();
    let slow = write_recipe(d, "slow", "", "  timeout: 2s\n", "echo starting\nsleep 120");
    let start = std::time::Instant::now();
    let o = run(&["pkg", "build", "--bootstrap", &slow], d, &[]);
    let took = start.elapsed();
    let msg = text(&o);
    assert!(!o.status.success(), "{msg}");
    assert!(
        msg.contains("timeout") && msg.contains("'main'") && msg.contains("starting"),
        "{msg}"
    );
    assert!(took < std::time::Duration::from_secs(60), "{took:?}");
    assert!(!d.join("packages/x86_64/slow-1.0.0-r0.apk").exists());
    // A step that leaves `sleep` running: the build ends, and so does the sleeper.
    let marker = format!("31{}.25", std::process::id() % 1000);
    let fork = write_recipe(
        d,
        "fork",
        "",
        "",
        &format!(
            "mkdir -p ${{{{targets.destdir}}}}/x\n(sleep {marker}; echo late) &\necho left it running"
        ),
    );
    let o = run(&["pkg", "build", "--bootstrap", &fork], d, &[]);
    assert!(o.status.success(), "{}", text(&o));
    let ps = std::process::Command::new("pgrep")
        .args(["-f", &format!("sleep {marker}")])
        .output()
        .unwrap();
    assert!(
        ps.stdout.is_empty(),
        "a step's background process outlived the build: {}",
        String::from_utf8_lossy(&ps.stdout)
    );
}

/// Symlinks a step leaves in its output are packaged as symlinks: the packager runs on the host
/// and must never read the host file a link points at, nor walk a host folder when the output
/// folder itself was replaced by a link.
#[test]
fn output_symlinks_never_read_host_files() {
    if !have("bwrap") {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let d = t.path();
    let secret_dir = tempfile::tempdir().unwrap();
    let secret = secret_dir.path().join("secret.txt");
    fs::write(&secret, "host secret 4711\n").unwrap();
    let s = secret.display();
    let sd = secret_dir.path().display();
    let links = "links.yaml".to_string();
    // The recipe text is easier to read written out whole.
    fs::write(
        d.join(&links),
        format!(
            "package:\n  name: links\n  version: 1.0.0\n  epoch: 0\n  description: d\npipeline:\n  - runs: |\n      mkdir -p ${{{{targets.destdir}}}}/etc\n      ln -s {s} ${{{{targets.destdir}}}}/etc/shadow-link\n      ln -s /etc/shadow ${{{{targets.destdir}}}}/etc/shadow\n      ln -s {sd} ${{{{targets.destdir}}}}/hostdir\nsubpackages:\n  - name: links-swapped\n    pipeline:\n      - runs: |\n          rm -rf ${{{{targets.contextdir}}}}\n          ln -s {sd} ${{{{targets.contextdir}}}}\n"
        ),
    )
    .unwrap();
    let o = run(
        &["pkg", "build", "--bootstrap", &links, "--arch", "x86_64"],
        d,
        &[],
    );
    let msg = text(&o);
    // Whether the build refuses the swapped output folder or packages it empty, no package may
    // hold the secret's bytes.
    for e in fs::read_dir(d.join("packages/x86_64"))
        .into_iter()
        .flatten()
        .flatten()
    {
        let bytes = fs::read(e.path()).unwrap();
        let o = std::process::Command::new("sh")
            .arg("-c")
            .arg(format!(
                "tar -xzOf '{}' 2>/dev/null | grep -c 'host secret 4711' || true",
                e.path().display()
            ))
            .output()
            .unwrap();
        assert_eq!(
            String::from_utf8_lossy(&o.stdout).trim(),
            "0",
            "{} holds the host file's bytes ({} bytes)",
            e.path().display(),
            bytes.len()
        );
    }
    let main = d.join("packages/x86_64/links-1.0.0-r0.apk");
    if main.exists() {
        let o = std::process::Command::new("tar")
            .arg("-tvzf")
            .arg(&main)
            .output()
            .unwrap();
        let listing = String::from_utf8_lossy(&o.stdout);
        assert!(
            listing.contains(&format!("etc/shadow-link -> {s}")),
            "{listing}"
        );
    } else {
        assert!(msg.contains("links-swapped"), "{msg}");
    }
}

/// Build `file` (in `work`) in a guest made from packages, caching them and writing the
/// outputs under `root`.
fn build_in_guest(root: &Path, work: &Path, file: &str) -> std::process::Output {
    run(
        &[
            "pkg",
            "build",
            file,
            "--arch",
            "x86_64",
            "--apk-cache-dir",
            root.join("apk-cache").to_str().unwrap(),
            "--out-dir",
            root.join("packages").to_str().unwrap(),
        ],
        work,
        &[],
    )
}

/// Digest of what a build must never touch on the host: a few sensitive files and folders,
/// plus the folders around the build's own working folder.
fn host_state(around: &Path) -> Vec<(String, String)> {
    use sha2::Digest as _;
    let mut out = vec![];
    let mut add = |p: &Path| {
        let mut h = sha2::Sha256::new();
        let mut stack = vec![p.to_path_buf()];
        while let Some(x) = stack.pop() {
            let Ok(md) = fs::symlink_metadata(&x) else {
                continue;
            };
            h.update(x.display().to_string().as_bytes());
            if md.is_dir() {
                let mut kids: Vec<_> = fs::read_dir(&x)
                    .into_iter()
                    .flatten()
                    .flatten()
                    .map(|e| e.path())
                    .collect();
                kids.sort();
                stack.extend(kids);
            } else if md.is_file() {
                h.update(fs::read(&x).unwrap_or_default());
            }
        }
        out.push((
            p.display().to_string(),
            h.finalize()
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect::<String>(),
        ));
    };
    for p in [
        "/etc/passwd",
        "/etc/shadow",
        "/etc/hostname",
        "/root/.bashrc",
    ] {
        add(Path::new(p));
    }
    add(around);
    out
}

/// Steps that try to write the host: into `/etc`, up out of the workspace with `../..`, and
/// through `/proc/self/root`. In an Alpine guest every write lands in the guest's own root; the
/// host is byte-for-byte unchanged and the package holds only what was written to its folder.
#[test]
fn steps_cannot_write_the_host() {
    let Some(s) = shared() else { return };
    if !have("bwrap") {
        return;
    }
    let a = s.join("fixtures/alpine-3.19");
    let t = tempfile::tempdir().unwrap();
    let d = t.path().join("work");
    fs::create_dir_all(&d).unwrap();
    let keys: String = fs::read_dir(a.join("keys"))
        .unwrap()
        .map(|e| format!("      - {}\n", e.unwrap().path().display()))
        .collect();
    fs::write(
        d.join("evil.yaml"),
        format!(
            "package:\n  name: evil\n  version: 1.0.0\n  epoch: 0\n  description: d\nenvironment:\n  contents:\n    repositories:\n      - {}\n    keyring:\n{keys}    packages:\n      - busybox\npipeline:\n  - runs: |\n      mkdir -p ${{{{targets.destdir}}}}/ok\n      echo fine > ${{{{targets.destdir}}}}/ok/file\n      echo evil >> /etc/passwd || true\n      echo evil > /etc/pallet-evil || true\n      echo evil > ../../pallet-evil-up || true\n      echo evil > ../../../../../../tmp/pallet-evil-up || true\n      echo evil > /proc/self/root/pallet-evil-proc || true\n      echo evil > /proc/1/root/pallet-evil-pid1 || true\n      mkdir -p /root/.ssh 2>/dev/null; echo evil > /root/.ssh/authorized_keys || true\n",
            a.display()
        ),
    )
    .unwrap();
    let before = host_state(t.path());
    let o = build_in_guest(t.path(), &d, "evil.yaml");
    assert!(o.status.success(), "{}", text(&o));
    for p in [
        "/etc/pallet-evil",
        "/pallet-evil-proc",
        "/pallet-evil-pid1",
        "/tmp/pallet-evil-up",
    ] {
        assert!(!Path::new(p).exists(), "{p} was written on the host");
    }
    // The package cache and outputs are the build's own; everything else around is unchanged.
    let after: Vec<_> = host_state(t.path());
    let strip = |v: Vec<(String, String)>| -> Vec<(String, String)> {
        v.into_iter()
            .filter(|(p, _)| !p.starts_with(&t.path().display().to_string()))
            .collect()
    };
    assert_eq!(strip(before), strip(after));
    assert!(!t.path().join("pallet-evil-up").exists());
    let o = std::process::Command::new("tar")
        .arg("-tzf")
        .arg(t.path().join("packages/x86_64/evil-1.0.0-r0.apk"))
        .output()
        .unwrap();
    let listing = String::from_utf8_lossy(&o.stdout);
    assert!(listing.contains("ok/file"), "{listing}");
    assert!(!listing.contains("pallet-evil"), "{listing}");
}

/// A tar.gz whose entries try to leave the extraction folder: `../`, an absolute name, and a
/// symlink to `/tmp` followed by a file written through it.
fn escaping_archive() -> Vec<u8> {
    let mut raw = Vec::new();
    {
        let mut b = tar::Builder::new(&mut raw);
        let mut put = |name: &[u8], kind: tar::EntryType, link: Option<&str>, body: &[u8]| {
            let mut h = tar::Header::new_gnu();
            // Names are set as raw bytes: the tar crate would refuse these paths.
            h.as_old_mut().name[..name.len()].copy_from_slice(name);
            h.set_entry_type(kind);
            h.set_mode(0o644);
            h.set_size(body.len() as u64);
            if let Some(l) = link {
                h.set_link_name(l).unwrap();
            }
            h.set_cksum();
            b.append(&h, body).unwrap();
        };
        put(b"src/ok.txt", tar::EntryType::Regular, None, b"fine\n");
        put(
            b"src/../../pallet-arc-up",
            tar::EntryType::Regular,
            None,
            b"evil\n",
        );
        put(
            b"/tmp/pallet-arc-abs",
            tar::EntryType::Regular,
            None,
            b"evil\n",
        );
        put(b"src/lnk", tar::EntryType::Symlink, Some("/tmp"), b"");
        put(
            b"src/lnk/pallet-arc-through",
            tar::EntryType::Regular,
            None,
            b"evil\n",
        );
        b.finish().unwrap();
    }
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    std::io::Write::write_all(&mut gz, &raw).unwrap();
    gz.finish().unwrap()
}

/// `fetch` of an archive whose entries escape (`../`, absolute, symlink then write-through),
/// served from 127.0.0.1: extraction happens inside the sandbox, so the host is unchanged,
/// and nothing but what the steps put in the package's folder is packaged.
#[test]
fn fetched_archives_cannot_escape_to_the_host() {
    let Some(s) = shared() else { return };
    if !have("bwrap") {
        return;
    }
    use sha2::Digest as _;
    let a = s.join("fixtures/alpine-3.19");
    let t = tempfile::tempdir().unwrap();
    let www = t.path().join("www");
    fs::create_dir_all(&www).unwrap();
    let arc = escaping_archive();
    let sha: String = sha2::Sha256::digest(&arc)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    fs::write(www.join("evil.tar.gz"), &arc).unwrap();
    let srv = FileServer::start(www, None);
    let d = t.path().join("work");
    fs::create_dir_all(&d).unwrap();
    let keys: String = fs::read_dir(a.join("keys"))
        .unwrap()
        .map(|e| format!("      - {}\n", e.unwrap().path().display()))
        .collect();
    fs::write(
        d.join("arc.yaml"),
        format!(
            "package:\n  name: arc\n  version: 1.0.0\n  epoch: 0\n  description: d\nenvironment:\n  contents:\n    repositories:\n      - {}\n    keyring:\n{keys}    packages:\n      - busybox\npipeline:\n  - uses: fetch\n    with:\n      uri: http://127.0.0.1:{}/evil.tar.gz\n      expected-sha256: {sha}\n      strip-components: 0\n  - runs: |\n      mkdir -p ${{{{targets.destdir}}}}/usr/share/arc\n      cp src/ok.txt ${{{{targets.destdir}}}}/usr/share/arc/\n",
            a.display(),
            srv.port
        ),
    )
    .unwrap();
    let before = host_state(t.path());
    let o = build_in_guest(t.path(), &d, "arc.yaml");
    // Whether the guest's tar refuses the entries (failing the step) or writes them inside the
    // sandbox, nothing reaches the host.
    for p in [
        "/tmp/pallet-arc-abs",
        "/tmp/pallet-arc-through",
        "/pallet-arc-up",
    ] {
        assert!(!Path::new(p).exists(), "{p} was written on the host");
    }
    assert!(!t.path().join("pallet-arc-up").exists());
    assert!(!d.join("pallet-arc-up").exists());
    let strip = |v: Vec<(String, String)>| -> Vec<(String, String)> {
        v.into_iter()
            .filter(|(p, _)| !p.starts_with(&t.path().display().to_string()))
            .collect()
    };
    assert_eq!(strip(before), strip(host_state(t.path())));
    if o.status.success() {
        let o = std::process::Command::new("tar")
            .arg("-tzf")
            .arg(t.path().join("packages/x86_64/arc-1.0.0-r0.apk"))
            .output()
            .unwrap();
        let listing = String::from_utf8_lossy(&o.stdout);
        assert!(listing.contains("usr/share/arc/ok.txt"), "{listing}");
        assert!(!listing.contains("pallet-arc"), "{listing}");
    } else {
        eprintln!("the guest's tar refused the archive: {}", text(&o));
    }
}

/// A `patch` whose file names leave the source tree (`../../`, absolute) and a `patches:` entry
/// naming a host file: patching happens inside the sandbox, so nothing on the host changes
/// whatever the guest's `patch` decides.
#[test]
fn patches_cannot_reach_outside_the_source_tree() {
    if !(have("bwrap") && have("patch")) {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let d = &t.path().join("work");
    fs::create_dir_all(d).unwrap();
    let victim = t.path().join("victim.txt");
    fs::write(&victim, "original\n").unwrap();
    let up = format!(
        "../../{}",
        victim.display().to_string().trim_start_matches('/')
    );
    fs::write(
        d.join("evil.patch"),
        format!(
            "--- a/{up}\n+++ b/{up}\n@@ -1 +1 @@\n-original\n+patched\n--- /etc/hostname\n+++ /etc/hostname\n@@ -0,0 +1 @@\n+pwned\n--- a/../pallet-patch-new\n+++ b/../pallet-patch-new\n@@ -0,0 +1 @@\n+new\n"
        ),
    )
    .unwrap();
    let hostname = fs::read("/etc/hostname").ok();
    let before = host_state(t.path());
    let file = write_recipe(
        d,
        "patchy",
        "",
        "",
        &format!(
            "patch -p1 --batch < evil.patch || echo patch refused\npatch -p0 --batch < {} || echo host file refused\nmkdir -p ${{{{targets.destdir}}}}/x",
            victim.display()
        ),
    );
    let o = run(&["pkg", "build", "--bootstrap", &file], d, &[]);
    eprintln!("{}", text(&o));
    assert_eq!(fs::read_to_string(&victim).unwrap(), "original\n");
    assert_eq!(fs::read("/etc/hostname").ok(), hostname);
    assert!(!t.path().join("pallet-patch-new").exists());
    assert!(!Path::new("/pallet-patch-new").exists());
    let strip = |v: Vec<(String, String)>| -> Vec<(String, String)> {
        v.into_iter()
            .filter(|(p, _)| !p.starts_with(&t.path().display().to_string()))
            .collect()
    };
    // The folder around holds the build's own outputs; the victim in it was checked above.
    assert_eq!(strip(before), strip(host_state(t.path())));
}

/// A build that fills its disk: the step fails with the system's own words, the build ends
/// with an error naming the step, and no package is written. The build's scratch folder is
/// put on an 8 MiB tmpfs (this needs root to mount; skipped otherwise).
#[test]
fn a_build_that_fills_the_disk_ends_with_a_clear_error() {
    if !have("bwrap") {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let small = t.path().join("small");
    fs::create_dir_all(&small).unwrap();
    let mounted = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=8m", "tmpfs"])
        .arg(&small)
        .status()
        .is_ok_and(|s| s.success());
    if !mounted {
        eprintln!("SKIPPED: cannot mount a small tmpfs (needs root)");
        return;
    }
    struct Unmount(std::path::PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = std::process::Command::new("umount").arg(&self.0).status();
        }
    }
    let _u = Unmount(small.clone());
    let d = &t.path().join("work");
    fs::create_dir_all(d).unwrap();
    let file = write_recipe(
        d,
        "filler",
        "",
        "",
        "mkdir -p ${{targets.destdir}}/x\nhead -c 64m /dev/zero > ${{targets.destdir}}/x/big\necho not reached",
    );
    let start = std::time::Instant::now();
    let o = run(
        &["pkg", "build", "--bootstrap", &file],
        d,
        &[("TMPDIR", small.to_str().unwrap())],
    );
    let msg = text(&o);
    assert!(!o.status.success(), "{msg}");
    assert!(
        msg.contains("No space left on device") && msg.contains("'main'"),
        "{msg}"
    );
    assert!(!msg.contains("not reached"), "{msg}");
    assert!(start.elapsed() < std::time::Duration::from_secs(120));
    assert!(!d.join("packages/x86_64/filler-1.0.0-r0.apk").exists());
    // The scratch folder went with the build.
    let left: Vec<_> = fs::read_dir(&small).unwrap().flatten().collect();
    assert!(left.is_empty(), "{left:?}");
}
