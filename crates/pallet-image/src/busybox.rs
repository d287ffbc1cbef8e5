//! What busybox's skipped post-install (`busybox --install -s`) would have done: a symlink to
//! the busybox binary for every applet listed in `/etc/busybox-paths.d/*` (Alpine and Wolfi
//! ship these lists), leaving files and links that already exist alone.

use pallet_apk_stream::tarw::Kind;
use pallet_fs::{Node, Tree};

use crate::build::BuildError;

/// Where busybox packages put the binary, in the order apko looks. `/bin/busybox` also finds
/// it in `/usr/bin` when `/bin` links there; the second entry is for trees that have
/// `/usr/bin/busybox` and no `/bin` at all, whose applets would otherwise point nowhere.
const BUSYBOX: &[&str] = &["bin/busybox", "usr/bin/busybox"];

/// Create the applet links. Each link's target is the path busybox was found at, so it
/// resolves inside the image whatever the usr-merge layout.
pub(crate) fn install_links(tree: &mut Tree) -> Result<(), BuildError> {
    let Some((bin, mtime)) = BUSYBOX.iter().find_map(|p| {
        tree.follow(p)
            .filter(|(_, n)| n.kind == Kind::File)
            .map(|(_, n)| (*p, n.mtime))
    }) else {
        return Ok(());
    };
    let target = format!("/{bin}");
    let Some(dir) = tree.resolve_dir("etc/busybox-paths.d") else {
        return Ok(());
    };
    let lists: Vec<String> = tree
        .children(&dir)
        .map(|(name, _)| format!("{dir}/{name}"))
        .collect();
    for l in lists {
        let Some((_, n)) = tree.follow(&l).filter(|(_, n)| n.kind == Kind::File) else {
            continue;
        };
        let text = tree.content(n).map_err(|source| BuildError::Io {
            context: l.clone(),
            source,
        })?;
        for line in String::from_utf8_lossy(&text).lines() {
            let p = line.trim().trim_start_matches('/');
            if p.is_empty() || p.starts_with('#') || tree.get(p).is_some() {
                continue;
            }
            if let Some((parent, _)) = p.rsplit_once('/') {
                // Through symlinks: with `bin -> usr/bin` the link lands in `usr/bin`.
                tree.try_mkdir_all(parent, 0o755, mtime)?;
            }
            tree.put(p, Node::symlink(&target, mtime));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tree_with(busybox: &str, dirs: &[&str], links: &[(&str, &str)], list: &str) -> Tree {
        let mut t = Tree::new();
        for d in dirs {
            t.mkdir_all(d, 0o755, 7);
        }
        for (path, to) in links {
            t.put(path, Node::symlink(to, 7));
        }
        t.mkdir_all("etc/busybox-paths.d", 0o755, 7);
        t.put(
            "etc/busybox-paths.d/busybox",
            Node::file(list.as_bytes().to_vec(), 0o644, 7),
        );
        t.put(busybox, Node::file(b"\x7fELF".to_vec(), 0o755, 42));
        t
    }

    fn link(t: &Tree, path: &str) -> Option<String> {
        t.nodes
            .get(path)
            .filter(|n| n.kind == Kind::Symlink)
            .map(|n| n.link.clone())
    }

    #[test]
    fn usr_bin_busybox_without_bin_gets_usr_bin_sh() {
        let mut t = tree_with(
            "usr/bin/busybox",
            &["usr/bin", "usr/sbin"],
            &[],
            "/usr/bin/sh\n/usr/sbin/init\n/bin/ls\n",
        );
        install_links(&mut t).unwrap();
        assert_eq!(link(&t, "usr/bin/sh").as_deref(), Some("/usr/bin/busybox"));
        assert_eq!(
            link(&t, "usr/sbin/init").as_deref(),
            Some("/usr/bin/busybox")
        );
        // A listed directory that does not exist is created, and its link still resolves.
        assert_eq!(link(&t, "bin/ls").as_deref(), Some("/usr/bin/busybox"));
        assert_eq!(t.nodes["bin"].mtime, 42);
        assert!(t.follow("usr/bin/sh").is_some());
    }

    #[test]
    fn bin_symlink_to_usr_bin_puts_links_in_the_real_directory() {
        let mut t = tree_with(
            "usr/bin/busybox",
            &["usr/bin"],
            &[("bin", "usr/bin")],
            "/bin/sh\n/bin/busybox\n",
        );
        install_links(&mut t).unwrap();
        // apko's spelling: /bin/busybox reaches the binary through the usr-merge link.
        assert_eq!(link(&t, "usr/bin/sh").as_deref(), Some("/bin/busybox"));
        assert!(!t.nodes.keys().any(|k| k.starts_with("bin/")));
        assert_eq!(t.nodes["usr/bin/busybox"].kind, Kind::File);
    }

    #[test]
    fn alpine_layout_links_to_bin_busybox_and_keeps_existing_files() {
        let mut t = tree_with(
            "bin/busybox",
            &["bin", "usr/bin"],
            &[],
            "# applets\n/bin/sh\n/usr/bin/env\n/bin/busybox\n",
        );
        t.put("usr/bin/env", Node::file(b"real env".to_vec(), 0o755, 1));
        install_links(&mut t).unwrap();
        assert_eq!(link(&t, "bin/sh").as_deref(), Some("/bin/busybox"));
        assert_eq!(t.nodes["usr/bin/env"].kind, Kind::File);
        assert_eq!(t.nodes["bin/busybox"].kind, Kind::File);
    }

    #[test]
    fn no_busybox_no_links() {
        let mut t = tree_with("usr/bin/other", &["usr/bin"], &[], "/bin/sh\n");
        install_links(&mut t).unwrap();
        assert!(t.get("bin/sh").is_none());
    }
}
