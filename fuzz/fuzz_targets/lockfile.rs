//! apko lock files (`apko.lock.json`) through `lock::read`, and back through JSON.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use pallet_image::lock::{LockFile, read};

fn dir() -> &'static tempfile::TempDir {
    static D: OnceLock<tempfile::TempDir> = OnceLock::new();
    D.get_or_init(|| tempfile::tempdir().expect("temporary folder"))
}

fuzz_target!(|data: &[u8]| {
    let path = dir().path().join("apko.lock.json");
    std::fs::write(&path, data).expect("write");
    let Ok(lock) = read(&path) else {
        return;
    };
    assert_eq!(lock.version, "v1");
    assert!(
        lock.contents
            .packages
            .iter()
            .all(|p| !p.checksum.is_empty())
    );
    // What reads writes back to JSON that reads to the same lock.
    let text = serde_json::to_string_pretty(&lock).expect("lock as JSON");
    let again: LockFile = serde_json::from_str(&text).expect("written lock reads");
    assert_eq!(again, lock);
});
