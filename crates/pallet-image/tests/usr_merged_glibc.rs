//! A Wolfi-shaped image: a usr-merged base (`lib -> usr/lib`, no `/bin`), glibc with an
//! `ld.so.conf`, and busybox in `/usr/bin`. Built from packages made here with the host's own
//! glibc and static busybox, installed by the image build, and then checked the way a user
//! would: the layer listed and extracted by GNU tar, the cache read by glibc's `ldconfig`,
//! and `/usr/bin/sh` run from the extracted root.

use std::fs;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::process::Command;

use pallet_apk_stream::tarw::Kind;
use pallet_apk_types::{Dependency, PackageInfo};
use pallet_fs::{OwnerNames, Tree};
use pallet_image::build::{self, BuildOptions};
use pallet_image::config::{self, Arch};

const HOST_LIBS: &str = "/usr/lib/x86_64-linux-gnu";
const LOADER: &str = "ld-linux-x86-64.so.2";

/// Stage `files` (path, contents) and `links` (path, target) and write them as a package.
fn package(
    work: &Path,
    name: &str,
    depends: &[&str],
    files: &[(&str, Vec<u8>)],
    links: &[(&str, &str)],
) -> PathBuf {
    let root = work.join(format!("stage-{name}"));
    fs::create_dir_all(&root).unwrap();
    for (p, data) in files {
        let path = root.join(p);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(&path, data).unwrap();
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).unwrap();
    }
    for (p, to) in links {
        let path = root.join(p);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        symlink(to, &path).unwrap();
    }
    let info = PackageInfo {
        name: name.into(),
        version: "1.0-r0".into(),
        arch: "x86_64".into(),
        description: format!("{name} for the usr-merge test"),
        license: "MIT".into(),
        origin: Some(name.into()),
        depends: depends
            .iter()
            .map(|d| Dependency::parse(d).unwrap())
            .collect(),
        ..PackageInfo::default()
    };
    let out = work.join(format!("repo/x86_64/{name}-1.0-r0.apk"));
    fs::create_dir_all(out.parent().unwrap()).unwrap();
    pallet_apk_stream::writer::write_apk(
        &root,
        &info,
        &[],
        &pallet_apk_stream::writer::WriteOptions::default(),
        &out,
    )
    .unwrap();
    out
}

fn host_lib(name: &str) -> Vec<u8> {
    fs::read(Path::new(HOST_LIBS).join(name)).unwrap()
}

/// Every entry's parent is a directory in the tree.
fn no_entry_below_a_symlink(t: &Tree) {
    for path in t.nodes.keys() {
        let mut p = path.as_str();
        while let Some((parent, _)) = p.rsplit_once('/') {
            if let Some(n) = t.nodes.get(parent) {
                assert_eq!(
                    n.kind,
                    Kind::Dir,
                    "{path} is below {parent}, a {:?}",
                    n.kind
                );
            }
            p = parent;
        }
    }
}

fn install(work: &Path) -> Tree {
    let layout = package(
        work,
        "layout",
        &[],
        &[
            (
                "etc/ld.so.conf",
                b"# as Wolfi's glibc\ninclude /etc/ld.so.conf.d/*.conf\n".to_vec(),
            ),
            (
                "etc/passwd",
                b"root:x:0:0:root:/root:/usr/bin/sh\n".to_vec(),
            ),
            ("etc/group", b"root:x:0:\n".to_vec()),
            ("usr/bin/.keep", vec![]),
            ("usr/lib/.keep", vec![]),
        ],
        &[("lib", "usr/lib"), ("lib64", "usr/lib")],
    );
    // glibc ships its files under lib/, as a package built without usr-merge does: they
    // must land in usr/lib.
    let glibc = package(
        work,
        "glibc",
        &["layout"],
        &[
            ("lib/libc.so.6", host_lib("libc.so.6")),
            (&format!("lib/{LOADER}"), host_lib(LOADER)),
            ("usr/local/lib/libz.so.1.2.13", host_lib("libz.so.1")),
            ("etc/ld.so.conf.d/local.conf", b"/usr/local/lib\n".to_vec()),
        ],
        &[("usr/local/lib/libz.so.1", "libz.so.1.2.13")],
    );
    let busybox = package(
        work,
        "busybox",
        &["layout"],
        &[
            ("usr/bin/busybox", fs::read("/bin/busybox").unwrap()),
            (
                "etc/busybox-paths.d/busybox",
                b"/usr/bin/sh\n/usr/bin/echo\n/usr/sbin/nologin\n".to_vec(),
            ),
        ],
        &[],
    );
    let records: Vec<PackageInfo> = [layout, glibc, busybox]
        .iter()
        .map(|p| pallet_index::record_for(p, None).unwrap())
        .collect();
    pallet_index::write_index(
        &records,
        None,
        None,
        0,
        &work.join("repo/x86_64/APKINDEX.tar.gz"),
    )
    .unwrap();
    let yaml = work.join("image.yaml");
    fs::write(
        &yaml,
        format!(
            "contents:\n  repositories: [{}]\n  packages: [busybox, glibc]\narchs: [x86_64]\n",
            work.join("repo").display()
        ),
    )
    .unwrap();
    let loaded = config::load(&yaml, &[]).unwrap();
    let opts = BuildOptions {
        cache_dir: work.join("cache"),
        epoch: Some(0),
        ignore_signatures: true,
        ..BuildOptions::default()
    };
    build::install(&loaded.config, Arch::parse("x86_64").unwrap(), &opts)
        .unwrap()
        .tree
}

fn have_inputs() -> bool {
    let needed = [
        PathBuf::from(HOST_LIBS).join("libc.so.6"),
        PathBuf::from(HOST_LIBS).join(LOADER),
        PathBuf::from(HOST_LIBS).join("libz.so.1"),
        PathBuf::from("/bin/busybox"),
    ];
    if cfg!(not(target_arch = "x86_64")) || needed.iter().any(|p| !p.exists()) {
        eprintln!("SKIPPED: needs an x86_64 host with glibc in {HOST_LIBS} and /bin/busybox");
        return false;
    }
    true
}

#[test]
fn usr_merged_glibc_image() {
    if !have_inputs() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let work = tmp.path();
    let tree = install(work);
    no_entry_below_a_symlink(&tree);

    // The apk database, written at lib/apk/db, is in usr/lib/apk/db.
    let db = String::from_utf8(tree.read("usr/lib/apk/db/installed").unwrap().unwrap()).unwrap();
    assert!(
        db.contains("P:glibc\n") && db.contains("R:libc.so.6\n"),
        "{db}"
    );
    assert!(
        db.contains("F:usr/lib\n"),
        "files recorded where they are:\n{db}"
    );
    assert!(tree.nodes.contains_key("usr/lib/libc.so.6"));
    assert_eq!(tree.nodes["lib"].kind, Kind::Symlink);

    // busybox applets point at /usr/bin/busybox; nothing needed a /bin.
    for applet in ["usr/bin/sh", "usr/bin/echo", "usr/sbin/nologin"] {
        let n = &tree.nodes[applet];
        assert_eq!(
            (n.kind, n.link.as_str()),
            (Kind::Symlink, "/usr/bin/busybox"),
            "{applet}"
        );
    }
    assert!(!tree.nodes.contains_key("bin"));

    // The cache, read back by glibc's own ldconfig.
    let cache = tree.nodes["etc/ld.so.cache"].clone();
    assert_eq!(cache.mode, 0o644);
    let cache_file = work.join("ld.so.cache");
    fs::write(&cache_file, tree.content(&cache).unwrap()).unwrap();
    if Path::new("/sbin/ldconfig").exists() {
        let out = Command::new("/sbin/ldconfig")
            .arg("-p")
            .arg("-C")
            .arg(&cache_file)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{text}");
        for line in [
            "libc.so.6 (libc6,x86-64) => /lib/libc.so.6",
            "ld-linux-x86-64.so.2 (libc6,x86-64) => /lib/ld-linux-x86-64.so.2",
            "libz.so.1 (libc6,x86-64) => /usr/local/lib/libz.so.1",
        ] {
            assert!(text.contains(line), "missing {line}:\n{text}");
        }
        assert!(text.starts_with("3 libs found"), "{text}");
    } else {
        eprintln!("SKIPPED: /sbin/ldconfig not found");
    }

    // The layer as GNU tar sees it.
    let names = OwnerNames::from_files(
        &String::from_utf8_lossy(&tree.read("etc/passwd").unwrap().unwrap()),
        &String::from_utf8_lossy(&tree.read("etc/group").unwrap().unwrap()),
    );
    let layer = work.join("layer.tar");
    tree.write_tar(&mut fs::File::create(&layer).unwrap(), &names)
        .unwrap();
    let gnu = Command::new("tar").arg("--version").output();
    if !gnu.is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("GNU tar")) {
        eprintln!("SKIPPED: GNU tar not found");
        return;
    }
    let list = Command::new("tar")
        .arg("-tvf")
        .arg(&layer)
        .output()
        .unwrap();
    assert!(list.status.success());
    let list = String::from_utf8_lossy(&list.stdout).into_owned();
    for l in list.lines() {
        let name = l.split_whitespace().nth(5).unwrap();
        assert!(
            !name.starts_with("lib/") && !name.starts_with("lib64/"),
            "{name} below a symlink:\n{list}"
        );
    }
    let root = work.join("root");
    fs::create_dir(&root).unwrap();
    let x = Command::new("tar")
        .arg("-xf")
        .arg(&layer)
        .arg("-C")
        .arg(&root)
        .args(["--exclude", "dev/*"])
        .output()
        .unwrap();
    assert!(x.status.success(), "{}", String::from_utf8_lossy(&x.stderr));
    assert!(root.join("lib/apk/db/installed").is_file());
    assert!(root.join("etc/ld.so.cache").is_file());

    // The extracted root runs its shell.
    if Command::new("bwrap").arg("--version").output().is_err() {
        eprintln!("SKIPPED: bwrap not found; the shell was not run");
        return;
    }
    let run = Command::new("bwrap")
        .arg("--bind")
        .arg(&root)
        .args(["/", "--proc", "/proc", "--dev", "/dev", "--clearenv"])
        .args(["/usr/bin/sh", "-c", "echo hello from $0"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&run.stderr);
    if err.contains("bwrap:") {
        eprintln!("SKIPPED: bwrap cannot run here: {err}");
        return;
    }
    assert_eq!(
        String::from_utf8_lossy(&run.stdout),
        "hello from /usr/bin/sh\n",
        "{err}"
    );
}
