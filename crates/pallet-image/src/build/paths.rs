//! `paths:`: the directories, files, links and permission changes the configuration asks
//! for, applied after the packages are installed.

use pallet_apk_stream::tarw::Kind;
use pallet_fs::{Node, Tree};

use super::{BuildError, file};
use crate::config::ImageConfiguration;

/// Apply each entry of `paths:` in order.
pub(super) fn paths(tree: &mut Tree, cfg: &ImageConfiguration) -> Result<(), BuildError> {
    for p in &cfg.paths {
        let path = p.path.trim_start_matches('/').to_string();
        let mode = p.permissions.unwrap_or(0);
        match p.kind.as_str() {
            "directory" => {
                tree.mkdir_all(&path, 0o755, 0);
            }
            "empty-file" => {
                file(tree, &path, vec![], 0o644, 0);
            }
            "symlink" => {
                if tree.get(&path).is_some() {
                    return Err(BuildError::Config(format!(
                        "paths: {}: already exists",
                        p.path
                    )));
                }
                if let Some((dir, _)) = path.rsplit_once('/') {
                    tree.mkdir_all(dir, 0o755, 0);
                }
                tree.put(&path, Node::symlink(p.source.as_deref().unwrap_or(""), 0));
                // A symlink's own mode is meaningless; apko does not chmod the target.
                continue;
            }
            "hardlink" => {
                let src = p.source.as_deref().unwrap_or("").trim_start_matches('/');
                let node = tree.get(src).cloned().ok_or_else(|| {
                    BuildError::Config(format!("paths: {}: source {src} does not exist", p.path))
                })?;
                tree.put(&path, node);
            }
            _ => {}
        }
        // Permissions apply where the entry really is (`/lib/x` is `usr/lib/x` with a
        // usr-merged `/lib`).
        let path = tree.real_path(&path).unwrap_or(path);
        let targets: Vec<String> = if p.recursive {
            tree.nodes
                .keys()
                .filter(|k| **k == path || k.starts_with(&format!("{path}/")))
                .cloned()
                .collect()
        } else {
            vec![path.clone()]
        };
        for t in targets {
            let Some(n) = tree.nodes.get_mut(&t) else {
                return Err(BuildError::Config(format!(
                    "paths: {}: does not exist",
                    p.path
                )));
            };
            if n.kind == Kind::Symlink {
                continue;
            }
            n.mode = mode;
            if p.uid.is_some() || p.gid.is_some() {
                n.uid = p.uid.unwrap_or(0);
                n.gid = p.gid.unwrap_or(0);
            }
        }
    }
    Ok(())
}
