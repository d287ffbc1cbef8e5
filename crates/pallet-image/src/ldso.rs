//! apko's `updateCache` post-install step: glibc images get an `/etc/ld.so.cache`, since the
//! glibc package's `ldconfig` trigger never runs. The cache itself comes from
//! [`pallet_fs::Tree::ld_so_cache`].

use pallet_fs::{Node, Tree};

use crate::build::BuildError;

/// Write `/etc/ld.so.cache` (0644, mtime 0 like the other files apko generates) when the
/// tree has an `/etc/ld.so.conf`; otherwise leave the tree as it is.
pub(crate) fn update_cache(tree: &mut Tree) -> Result<(), BuildError> {
    if let Some(bytes) = tree.ld_so_cache()? {
        tree.try_mkdir_all("etc", 0o755, 0)?;
        tree.put("etc/ld.so.cache", Node::file(bytes, 0o644, 0));
    }
    Ok(())
}
