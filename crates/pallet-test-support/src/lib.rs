//! What the workspace's tests and benchmarks share: where the real fixtures made by others
//! are (`../shared` beside the checkout, or `$PALLET_SHARED`), and a clear word when they are
//! absent, so that no test passes silently without them.

use std::path::{Path, PathBuf};

/// The shared folder, or `None` after printing `SKIPPED: …` when it (or `sub`) is absent.
pub fn shared_with(sub: &str) -> Option<PathBuf> {
    let p = std::env::var_os("PALLET_SHARED")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared"));
    if p.join(sub).is_dir() {
        Some(p)
    } else {
        eprintln!(
            "SKIPPED: shared {sub} not found at {} (set PALLET_SHARED)",
            p.display()
        );
        None
    }
}

/// The shared folder when its `fixtures` are there.
pub fn shared() -> Option<PathBuf> {
    shared_with("fixtures")
}
