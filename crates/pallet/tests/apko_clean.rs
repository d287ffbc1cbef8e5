//! End to end, through the `apko` name of the real binary: `clean` (only inside the cache
//! folder, links not followed), the deprecated `resolve` and the `erofs` note.

mod common;

use std::fs;

use common::*;

#[test]
fn clean_empties_the_cache_but_not_what_links_point_to() {
    let t = tempfile::tempdir().unwrap();
    let d = t.path();
    fs::create_dir_all(d.join("cache/repo/x86_64")).unwrap();
    fs::write(d.join("cache/repo/x86_64/APKINDEX.tar.gz"), vec![0u8; 2048]).unwrap();
    fs::create_dir_all(d.join("precious")).unwrap();
    fs::write(d.join("precious/keep"), b"k").unwrap();
    std::os::unix::fs::symlink(d.join("precious"), d.join("cache/link")).unwrap();

    let o = apko(d, &["clean", "--cache-dir", "cache", "--dry-run"]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("Dry run mode"), "{}", text(&o));
    assert!(d.join("cache/repo/x86_64/APKINDEX.tar.gz").exists());

    let o = apko(d, &["clean", "--cache-dir", "cache"]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("cleaned successfully"), "{}", text(&o));
    assert_eq!(fs::read_dir(d.join("cache")).unwrap().count(), 0);
    assert!(d.join("precious/keep").exists());

    let o = apko(d, &["clean", "--cache-dir", "nowhere"]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("nothing to clean"), "{}", text(&o));
}

#[test]
fn erofs_is_taken_with_a_note_and_exit_2() {
    let t = tempfile::tempdir().unwrap();
    for args in [
        &["erofs", "ls", "img.erofs", "--arch", "x86_64"][..],
        &[
            "erofs",
            "mount",
            "img.erofs",
            "/mnt",
            "--mode",
            "fuse",
            "--rw",
        ][..],
        &["erofs", "umount", "/mnt"][..],
    ] {
        let o = apko(t.path(), args);
        assert_eq!(o.status.code(), Some(2), "{}", text(&o));
        assert!(text(&o).contains("no EROFS support"), "{}", text(&o));
    }
}

#[test]
fn resolve_is_lock_with_a_deprecation_line() {
    let Some(s) = pallet_test_support::shared_with("fixtures/alpine-3.19") else {
        return;
    };
    let a = s.join("fixtures/alpine-3.19");
    let t = tempfile::tempdir().unwrap();
    let cfg = t.path().join("c.yaml");
    fs::write(
        &cfg,
        format!(
            "contents:\n  repositories:\n    - {}\n  keyring:\n{}  packages: [busybox]\narchs: [x86_64]\n",
            a.display(),
            keyring_yaml(&a.join("keys"))
        ),
    )
    .unwrap();
    let o = apko(t.path(), &["resolve", "c.yaml", "--cache-dir", "cache"]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("deprecated"), "{}", text(&o));
    let lock: serde_json::Value =
        serde_json::from_slice(&fs::read(t.path().join("c.resolved.json")).unwrap()).unwrap();
    assert_eq!(lock["version"], "v1");
}
