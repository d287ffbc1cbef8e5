//! Paths through the tree's symlinks: with Wolfi's `lib -> usr/lib`, whatever is written at
//! `lib/…` lands in `usr/lib/…`, so a layer never has an entry below a symlink and GNU tar
//! extracts it as it is.

use std::fs;
use std::path::Path;
use std::process::Command;

use pallet_apk_stream::tarw::Kind;
use pallet_fs::{FsError, Node, OwnerNames, Tree};

fn usr_merged() -> Tree {
    let mut t = Tree::new();
    for d in ["usr", "usr/lib", "usr/bin", "etc"] {
        t.put(d, Node::dir(0o755, 0));
    }
    t.put("lib", Node::symlink("usr/lib", 0));
    t.put("bin", Node::symlink("/usr/bin", 0));
    t.put("lib64", Node::symlink("lib", 0));
    t
}

/// Every entry's parent is a directory entry of the tree (or the root).
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

#[test]
fn writes_resolve_their_parent() {
    let mut t = usr_merged();
    assert_eq!(
        t.try_mkdir_all("lib/apk/db", 0o755, 5).unwrap(),
        "usr/lib/apk/db"
    );
    t.put(
        "lib/apk/db/installed",
        Node::file(b"P:x\n".to_vec(), 0o644, 5),
    );
    assert!(t.nodes.contains_key("usr/lib/apk/db/installed"));
    // Through a chain of links, and an absolute one.
    t.put("lib64/ld.so", Node::file(vec![], 0o755, 0));
    assert!(t.nodes.contains_key("usr/lib/ld.so"));
    t.mkdir_all("bin/sub", 0o755, 0);
    assert!(t.nodes.contains_key("usr/bin/sub"));
    // Reads see the same place.
    assert_eq!(t.read("lib/apk/db/installed").unwrap().unwrap(), b"P:x\n");
    assert!(t.get("lib64/apk/db/installed").is_some());
    assert_eq!(
        t.real_path("lib/apk/db/installed").unwrap(),
        "usr/lib/apk/db/installed"
    );
    // The last component is not followed: `lib` itself is the link.
    assert_eq!(t.real_path("lib").unwrap(), "lib");
    assert_eq!(t.get("lib").unwrap().kind, Kind::Symlink);
    no_entry_below_a_symlink(&t);
}

#[test]
fn links_never_leave_the_root() {
    let mut t = usr_merged();
    t.put("usr/lib/up", Node::symlink("../../../../etc", 0));
    t.put("usr/lib/abs", Node::symlink("/../../etc", 0));
    t.put(
        "etc/passwd",
        Node::file(b"root:x:0:0::/root:/bin/sh\n".to_vec(), 0o644, 0),
    );
    assert_eq!(t.resolve_dir("lib/up").unwrap(), "etc");
    assert_eq!(t.resolve_dir("lib/abs").unwrap(), "etc");
    assert_eq!(t.follow("lib/up/passwd").unwrap().0, "etc/passwd");
    t.put("lib/up/group", Node::file(vec![], 0o644, 0));
    assert!(t.nodes.contains_key("etc/group"));
    no_entry_below_a_symlink(&t);
}

#[test]
fn dangling_links_loops_and_files_in_the_way() {
    let mut t = usr_merged();
    // A dangling link: mkdir -p creates its target, inside the root.
    t.put("var", Node::dir(0o755, 0));
    t.put("var/run", Node::symlink("../run", 0));
    assert_eq!(
        t.try_mkdir_all("var/run/lock", 0o755, 0).unwrap(),
        "run/lock"
    );
    // A loop is an error, not a hang.
    t.put("a", Node::symlink("b", 0));
    t.put("b", Node::symlink("a", 0));
    assert!(matches!(
        t.try_mkdir_all("a/x", 0o755, 0),
        Err(FsError::NotADirectory { .. })
    ));
    assert!(t.follow("a").is_none());
    assert!(t.resolve_dir("a").is_none());
    // A file in the way.
    t.put("etc/hostname", Node::file(vec![], 0o644, 0));
    let e = t.try_mkdir_all("etc/hostname/x", 0o755, 0).unwrap_err();
    assert!(
        e.to_string().contains("etc/hostname is not a directory"),
        "{e}"
    );
    no_entry_below_a_symlink(&t);
}

#[test]
fn follow_and_children() {
    let mut t = usr_merged();
    t.put("usr/lib/libz.so.1.3", Node::file(b"z".to_vec(), 0o755, 0));
    t.put("usr/lib/libz.so.1", Node::symlink("libz.so.1.3", 0));
    t.put("usr/lib/libz.so", Node::symlink("/lib/libz.so.1", 0));
    t.put(
        "usr/lib/hard",
        Node {
            kind: Kind::HardLink,
            link: "usr/lib/libz.so.1.3".into(),
            ..Node::dir(0o755, 0)
        },
    );
    t.mkdir_all("usr/lib/python3/site", 0o755, 0);
    t.put("usr/lib/python3/site/x.py", Node::file(vec![], 0o644, 0));
    t.put("usr/lib/python3-x", Node::file(vec![], 0o644, 0));
    t.put("usr/lib/python3.so", Node::file(vec![], 0o644, 0));
    for p in ["lib/libz.so", "lib64/libz.so.1", "usr/lib/hard"] {
        let (real, n) = t.follow(p).unwrap();
        assert_eq!(
            (real.as_str(), n.kind),
            ("usr/lib/libz.so.1.3", Kind::File),
            "{p}"
        );
    }
    let names: Vec<&str> = t.children("usr/lib").map(|(n, _)| n).collect();
    assert_eq!(
        names,
        [
            "hard",
            "libz.so",
            "libz.so.1",
            "libz.so.1.3",
            "python3",
            "python3-x",
            "python3.so"
        ]
    );
    let top: Vec<&str> = t.children("").map(|(n, _)| n).collect();
    assert_eq!(top, ["bin", "etc", "lib", "lib64", "usr"]);
}

#[test]
fn layer_extracts_with_gnu_tar() {
    let mut t = usr_merged();
    // What the image build writes after install, spelled the apk-tools 2 way.
    for (p, body) in [
        ("lib/apk/db/installed", "P:musl\nV:1\n\n"),
        ("lib/apk/db/triggers", ""),
        ("lib/apk/db/lock", ""),
        ("bin/sh-wrapper", "#!/bin/sh\n"),
    ] {
        let dir = p.rsplit_once('/').unwrap().0;
        t.mkdir_all(dir, 0o755, 0);
        t.put(p, Node::file(body.as_bytes().to_vec(), 0o644, 0));
    }
    t.put("bin/sh", Node::symlink("/usr/bin/busybox", 0));
    no_entry_below_a_symlink(&t);

    let tmp = tempfile::tempdir().unwrap();
    let tar = tmp.path().join("layer.tar");
    let mut f = fs::File::create(&tar).unwrap();
    t.write_tar(&mut f, &OwnerNames::default()).unwrap();
    drop(f);
    let gnu = Command::new("tar").arg("--version").output();
    if !gnu.is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("GNU tar")) {
        eprintln!("SKIPPED: GNU tar not found");
        return;
    }
    let list = Command::new("tar").arg("-tvf").arg(&tar).output().unwrap();
    assert!(list.status.success());
    let list = String::from_utf8_lossy(&list.stdout).into_owned();
    let names: Vec<&str> = list
        .lines()
        .filter_map(|l| l.split_whitespace().nth(5))
        .collect();
    for n in &names {
        for link in ["lib/", "bin/", "lib64/"] {
            assert!(!n.starts_with(link), "entry {n} below a symlink:\n{list}");
        }
    }
    assert!(names.contains(&"usr/lib/apk/db/installed"), "{list}");
    assert!(list.contains("lib -> usr/lib"), "{list}");

    let out = tmp.path().join("root");
    fs::create_dir(&out).unwrap();
    let x = Command::new("tar")
        .arg("-xf")
        .arg(&tar)
        .arg("-C")
        .arg(&out)
        .output()
        .unwrap();
    assert!(x.status.success(), "{}", String::from_utf8_lossy(&x.stderr));
    assert!(
        fs::symlink_metadata(out.join("lib"))
            .unwrap()
            .file_type()
            .is_symlink()
    );
    assert!(fs::symlink_metadata(out.join("usr/lib")).unwrap().is_dir());
    assert_eq!(
        fs::read_to_string(out.join("usr/lib/apk/db/installed")).unwrap(),
        "P:musl\nV:1\n\n"
    );
    // And through the link, as programs in the image will read it.
    assert!(Path::new(&out.join("lib/apk/db/installed")).is_file());
    assert_eq!(
        fs::read_link(out.join("usr/bin/sh")).unwrap(),
        Path::new("/usr/bin/busybox")
    );
}
