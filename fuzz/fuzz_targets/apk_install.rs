//! A package's data section on its way into an image: verified and cached as a tar
//! (`cache_package`), read back by the tar reader into the image tree (`Tree::install`, apk's
//! placement and conflict rules, usr-merge symlinks), the installed database it leads to, the
//! layer tar, and a sandbox root written from the tree (`materialize`).
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::{fuzz_mutator, fuzz_target};
use pallet_apk_stream::ReadOptions;
use pallet_apk_types::installed::{parse_installed, write_installed};
use pallet_fs::{InstalledMeta, Node, OwnerNames, Tree, cache_package};

fuzz_mutator!(|data: &mut [u8], size: usize, max_size: usize, seed: u32| {
    pallet_fuzz::gz_mutate(data, size, max_size, seed)
});

fn dir() -> &'static tempfile::TempDir {
    static D: OnceLock<tempfile::TempDir> = OnceLock::new();
    D.get_or_init(|| tempfile::tempdir().expect("temporary folder"))
}

fn listing(d: &std::path::Path) -> Vec<std::ffi::OsString> {
    let mut v: Vec<_> = std::fs::read_dir(d)
        .expect("read_dir")
        .map(|e| e.expect("entry").file_name())
        .collect();
    v.sort();
    v
}

fuzz_target!(|data: &[u8]| {
    let d = dir().path();
    let cached = d.join("data.tar");
    let opts = ReadOptions {
        keyring: None,
        max_control_size: 1 << 20,
        max_data_size: 8 << 20,
        control_only: false,
    };
    let Ok((meta, _)) = cache_package(data, &opts, &cached, |_| Ok(vec![])) else {
        return;
    };
    for usr_merge in [false, true] {
        let mut tree = Tree::new();
        if usr_merge {
            tree.mkdir_all("usr/lib", 0o755, 0);
            tree.mkdir_all("usr/bin", 0o755, 0);
            tree.put("lib", Node::symlink("usr/lib", 0));
            tree.put("bin", Node::symlink("/usr/bin", 0));
        }
        let m = InstalledMeta {
            info: meta.info.clone(),
            tag: None,
            scripts: meta.scripts.clone(),
        };
        if tree.install(m.clone(), &cached).is_err() {
            continue;
        }
        // The same package again under another name: every file is someone else's now.
        let mut other = m.clone();
        other.info.name.push_str("-again");
        let _ = tree.install(other, &cached);
        // The installed database the image gets must read back, as apk would read it.
        let db = write_installed(&tree.installed_db());
        let back = parse_installed(&db).unwrap_or_else(|e| panic!("installed db: {e}\n{db}"));
        assert_eq!(write_installed(&back), db);
        // The layer is a tar the tar reader takes, with one entry per node.
        let mut layer = Vec::new();
        let n = tree
            .write_tar(&mut layer, &OwnerNames::default())
            .expect("writing the layer");
        assert_eq!(n, tree.nodes.len());
        let mut ar = tar::Archive::new(layer.as_slice());
        let read = ar
            .entries()
            .expect("layer entries")
            .map(|e| e.expect("entry"))
            .count();
        assert_eq!(read, n);
        // A sandbox root from the tree never writes beside (or above) its folder.
        let root = d.join("root");
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir(&root).expect("mkdir root");
        let before = listing(d);
        let _ = tree.materialize(&root);
        assert_eq!(listing(d), before, "materialize wrote outside its root");
    }
});
