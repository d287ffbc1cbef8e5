//! A layer as a row of parts that can each be compressed and cached on their own.
//!
//! A tar stream may be cut anywhere between entries, and a gzip file may hold several members
//! back to back, so a layer can be made of separately compressed pieces: one per package (the
//! entries it owns in the final tree) between a first part holding every directory and a last
//! part holding what the build generated. A rebuild in which one package changed then
//! recompresses that package's part, the directories and the generated files, and copies the
//! rest. Each part has a key computed from the tree alone (every header byte, and where each
//! file's content comes from), never from reading the content, so looking a part up in a cache
//! costs nothing like writing it.
//!
//! What a reader sees is the same as with one sorted tar: every path once, parents before
//! children (all directories come first, with their final modes and owners), and a hard link
//! after its target (a link whose target is in another part moves to the last part).

use std::fs::File;
use std::io::{self, Write};
use std::path::PathBuf;
use std::sync::Arc;

use pallet_apk_stream::tarw::{self, EntryHeader, Kind};

use crate::{Content, Node, OwnerNames, Tree};

/// What a part of a layer holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PartKind {
    /// Every directory of the layer, sorted.
    Dirs,
    /// The entries the installed package with this index owns in the final tree, sorted, hard
    /// links last.
    Package(usize),
    /// What no package owns (generated files, accounts, the apk database), and hard links whose
    /// target is in another part; the layer's end-of-archive blocks follow it.
    Rest,
}

/// The paths of one part, in the order they are written.
#[derive(Clone, Debug)]
pub struct LayerPart<'a> {
    pub kind: PartKind,
    pub paths: Vec<&'a str>,
}

/// Writes tree entries to a tar stream, keeping the last cached tar open (entries of one
/// package come from the same file).
pub(crate) struct EntryWriter<'a> {
    names: &'a OwnerNames,
    open: Option<(Arc<PathBuf>, File)>,
    buf: Vec<u8>,
    pax: Vec<(String, Vec<u8>)>,
}

thread_local! {
    /// The copy buffer of the last writer on this thread, for the next one: parts are written
    /// one after another, and a fresh 256 KiB each time costs a page fault every 4 KiB.
    static COPY_BUF: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

impl Drop for EntryWriter<'_> {
    fn drop(&mut self) {
        let buf = std::mem::take(&mut self.buf);
        COPY_BUF.with(|b| *b.borrow_mut() = buf);
    }
}

impl<'a> EntryWriter<'a> {
    pub(crate) fn new(names: &'a OwnerNames) -> Self {
        EntryWriter {
            names,
            open: None,
            buf: COPY_BUF.with(|b| std::mem::take(&mut *b.borrow_mut())),
            pax: Vec::new(),
        }
    }

    fn header<'b>(&'b mut self, path: &'b str, n: &'b Node) -> EntryHeader<'b> {
        self.pax.clear();
        self.pax.extend(
            n.xattrs
                .iter()
                .map(|(k, v)| (format!("SCHILY.xattr.{k}"), v.clone())),
        );
        EntryHeader {
            path,
            kind: n.kind,
            mode: n.mode,
            uid: n.uid,
            gid: n.gid,
            uname: self.names.user(n.uid),
            gname: self.names.group(n.gid),
            mtime: n.mtime,
            size: n.size,
            link: &n.link,
            dev_major: n.dev.0,
            dev_minor: n.dev.1,
            pax: &self.pax,
        }
    }

    /// One entry: its header, then its content and padding.
    pub(crate) fn write<W: Write + ?Sized>(
        &mut self,
        w: &mut W,
        path: &str,
        n: &Node,
    ) -> io::Result<()> {
        let h = self.header(path, n);
        tarw::write_header(w, &h)?;
        if n.kind != Kind::File {
            return Ok(());
        }
        match &n.content {
            Content::None => {}
            Content::Bytes(b) => w.write_all(b)?,
            Content::Extent { file, offset, len } => {
                if self
                    .open
                    .as_ref()
                    .is_none_or(|(p, _)| !Arc::ptr_eq(p, file))
                {
                    self.open = Some((file.clone(), File::open(file.as_ref())?));
                }
                if self.buf.is_empty() {
                    self.buf = vec![0u8; 256 << 10];
                }
                let f = &self.open.as_ref().expect("just opened").1;
                // Positioned reads: no seek per file, one syscall per 256 KiB.
                use std::os::unix::fs::FileExt;
                let (mut pos, end) = (*offset, offset + len);
                while pos < end {
                    let k = ((end - pos) as usize).min(self.buf.len());
                    f.read_exact_at(&mut self.buf[..k], pos).map_err(|e| {
                        io::Error::other(format!(
                            "cached package data for {path} is truncated: {e}"
                        ))
                    })?;
                    w.write_all(&self.buf[..k])?;
                    pos += k as u64;
                }
            }
        }
        w.write_all(&[0u8; 512][..tarw::padding(n.size)])
    }

    /// What [`EntryWriter::write`] would write, named without reading any content: the header
    /// bytes, then the content itself when it is in memory, or the cached tar and extent it
    /// would be copied from (cached tars are content-addressed and never change).
    fn key(&mut self, feed: &mut dyn FnMut(&[u8]), path: &str, n: &Node) {
        let mut hdr = Vec::with_capacity(1024);
        let h = self.header(path, n);
        tarw::write_header(&mut hdr, &h).expect("writing to memory cannot fail");
        feed(&hdr);
        if n.kind != Kind::File {
            return;
        }
        match &n.content {
            Content::None => feed(b"N"),
            Content::Bytes(b) => {
                feed(b"B");
                feed(&(b.len() as u64).to_le_bytes());
                feed(b);
            }
            Content::Extent { file, offset, len } => {
                let p = file.as_os_str().as_encoded_bytes();
                feed(b"E");
                feed(&(p.len() as u64).to_le_bytes());
                feed(p);
                feed(&offset.to_le_bytes());
                feed(&len.to_le_bytes());
            }
        }
    }
}

impl Tree {
    /// The parts of a layer holding the nodes `keep` accepts: [`PartKind::Dirs`] first, then
    /// one part per installed package that owns any of them (in install order), then
    /// [`PartKind::Rest`] (always present, possibly empty). Every accepted path is in exactly
    /// one part.
    pub fn layer_parts(&self, keep: impl Fn(&str, &Node) -> bool) -> Vec<LayerPart<'_>> {
        let mut dirs = vec![];
        let mut rest = vec![];
        let mut rest_links = vec![];
        let mut pkgs: Vec<(Vec<&str>, Vec<&str>)> = vec![(vec![], vec![]); self.packages.len()];
        for (path, n) in self.nodes.iter().filter(|(p, n)| keep(p, n)) {
            match (n.kind, n.owner) {
                (Kind::Dir, _) => dirs.push(path.as_str()),
                (Kind::HardLink, Some(o)) if o < pkgs.len() => {
                    // Extracting a hard link needs its target extracted first: fine inside one
                    // part (links go last), otherwise the link waits for the last part.
                    let target = self.real_path(&n.link).unwrap_or_else(|| n.link.clone());
                    let same = self.nodes.get(&target).is_some_and(|t| {
                        t.owner == Some(o) && !matches!(t.kind, Kind::HardLink | Kind::Dir)
                    }) && keep(&target, &self.nodes[&target]);
                    if same {
                        pkgs[o].1.push(path.as_str());
                    } else {
                        rest_links.push(path.as_str());
                    }
                }
                (Kind::HardLink, _) => rest_links.push(path.as_str()),
                (_, Some(o)) if o < pkgs.len() => pkgs[o].0.push(path.as_str()),
                _ => rest.push(path.as_str()),
            }
        }
        let mut out = vec![LayerPart {
            kind: PartKind::Dirs,
            paths: dirs,
        }];
        for (i, (mut paths, links)) in pkgs.into_iter().enumerate() {
            if paths.is_empty() && links.is_empty() {
                continue;
            }
            paths.extend(links);
            out.push(LayerPart {
                kind: PartKind::Package(i),
                paths,
            });
        }
        rest.extend(rest_links);
        out.push(LayerPart {
            kind: PartKind::Rest,
            paths: rest,
        });
        out
    }

    /// The part of the installed package `idx` as [`Tree::layer_parts`] would give it if the
    /// tree were final now, found from what the package shipped instead of a walk of the whole
    /// tree (for compressing a package's part while later packages are still being installed).
    pub fn package_part(&self, idx: usize) -> Option<LayerPart<'_>> {
        let mut paths: Vec<&str> = self
            .shipped
            .get(idx)?
            .iter()
            .filter_map(|p| {
                let (k, n) = self.nodes.get_key_value(p)?;
                (n.owner == Some(idx) && n.kind != Kind::Dir).then_some(k.as_str())
            })
            .collect();
        paths.sort_unstable();
        paths.dedup();
        let (mut regular, mut links) = (vec![], vec![]);
        for p in paths {
            let n = &self.nodes[p];
            if n.kind != Kind::HardLink {
                regular.push(p);
                continue;
            }
            let target = self.real_path(&n.link).unwrap_or_else(|| n.link.clone());
            let same = self.nodes.get(&target).is_some_and(|t| {
                t.owner == Some(idx) && !matches!(t.kind, Kind::HardLink | Kind::Dir)
            });
            if !same {
                // Goes to the last part in the final layer.
                continue;
            }
            links.push(p);
        }
        regular.extend(links);
        (!regular.is_empty()).then_some(LayerPart {
            kind: PartKind::Package(idx),
            paths: regular,
        })
    }

    /// Write the entries of `paths` (tree paths, as [`Tree::layer_parts`] gives them) as tar
    /// entries, without end-of-archive blocks.
    pub fn write_entries<W: Write + ?Sized>(
        &self,
        w: &mut W,
        names: &OwnerNames,
        paths: &[&str],
    ) -> io::Result<()> {
        let mut ew = EntryWriter::new(names);
        for p in paths {
            let n = self
                .nodes
                .get(*p)
                .ok_or_else(|| io::Error::other(format!("{p}: not in the tree")))?;
            ew.write(w, p, n)?;
        }
        Ok(())
    }

    /// Feed `feed` a description that determines, byte for byte, what
    /// [`Tree::write_entries`] writes for `paths` with `names`, without reading any content.
    pub fn entries_key(&self, names: &OwnerNames, paths: &[&str], feed: &mut dyn FnMut(&[u8])) {
        let mut ew = EntryWriter::new(names);
        for p in paths {
            if let Some(n) = self.nodes.get(*p) {
                ew.key(feed, p, n);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::InstalledMeta;

    fn meta(name: &str) -> InstalledMeta {
        InstalledMeta {
            info: pallet_apk_types::PackageInfo {
                name: name.into(),
                version: "1".into(),
                ..Default::default()
            },
            tag: None,
            scripts: vec![],
        }
    }

    fn owned(mut n: Node, o: usize) -> Node {
        n.owner = Some(o);
        n
    }

    fn entry(path: &str, kind: Kind, link: &str) -> crate::CachedEntry {
        crate::CachedEntry {
            path: path.into(),
            kind,
            mode: 0o755,
            uid: 0,
            gid: 0,
            mtime: 0,
            size: 0,
            link: link.into(),
            dev: (0, 0),
            xattrs: vec![],
            sha1: None,
            offset: 0,
        }
    }

    #[test]
    fn a_package_part_is_what_the_whole_layer_gives_it() {
        let mut t = Tree::new();
        let tar = std::path::Path::new("/nonexistent.tar");
        t.install_entries(
            meta("a"),
            tar,
            &[
                entry("usr", Kind::Dir, ""),
                entry("usr/bin", Kind::Dir, ""),
                entry("usr/bin/z", Kind::File, ""),
                entry("usr/bin/b", Kind::HardLink, "usr/bin/z"),
                entry("usr/bin/s", Kind::Symlink, "z"),
            ],
        )
        .unwrap();
        let mut m = meta("b");
        m.info.replaces = vec![pallet_apk_types::Dependency::parse("a").unwrap()];
        t.install_entries(
            m,
            tar,
            &[
                entry("usr", Kind::Dir, ""),
                entry("usr/bin", Kind::Dir, ""),
                entry("usr/bin/s", Kind::File, ""),
                entry("usr/bin/c", Kind::HardLink, "usr/bin/z"),
            ],
        )
        .unwrap();
        let all = t.layer_parts(|_, _| true);
        for (i, want) in [(0, vec!["usr/bin/z", "usr/bin/b"]), (1, vec!["usr/bin/s"])] {
            assert_eq!(t.package_part(i).unwrap().paths, want);
            let whole = all.iter().find(|p| p.kind == PartKind::Package(i)).unwrap();
            assert_eq!(whole.paths, want);
        }
        assert_eq!(all.last().unwrap().paths, vec!["usr/bin/c"]);
    }

    #[test]
    fn parts_hold_every_path_once_directories_first_and_links_after_targets() {
        let mut t = Tree::new();
        t.packages = vec![meta("a"), meta("b")];
        t.put("usr", owned(Node::dir(0o755, 0), 0));
        t.put("usr/bin", owned(Node::dir(0o755, 0), 1));
        t.put("usr/bin/a", owned(Node::file(b"a".to_vec(), 0o755, 0), 0));
        t.put("usr/bin/b", owned(Node::file(b"b".to_vec(), 0o755, 0), 1));
        let link = |to: &str, o| {
            owned(
                Node {
                    kind: Kind::HardLink,
                    link: to.into(),
                    ..Node::dir(0o755, 0)
                },
                o,
            )
        };
        // Sorts before its target, which is in the same part: written after it.
        t.put("usr/bin/0", link("usr/bin/b", 1));
        // Its target belongs to another package: waits for the last part.
        t.put("usr/bin/c", link("usr/bin/a", 1));
        t.put("etc", Node::dir(0o755, 0));
        t.put("etc/passwd", Node::file(vec![], 0o644, 0));
        let parts = t.layer_parts(|_, _| true);
        // Nothing was installed through `install`, so no package shipped anything.
        assert!(t.package_part(0).is_none());
        let shape: Vec<(PartKind, Vec<&str>)> =
            parts.iter().map(|p| (p.kind, p.paths.clone())).collect();
        assert_eq!(
            shape,
            vec![
                (PartKind::Dirs, vec!["etc", "usr", "usr/bin"]),
                (PartKind::Package(0), vec!["usr/bin/a"]),
                (PartKind::Package(1), vec!["usr/bin/b", "usr/bin/0"]),
                (PartKind::Rest, vec!["etc/passwd", "usr/bin/c"]),
            ]
        );
        // The key follows every byte of the header and content, and nothing else.
        let names = OwnerNames::default();
        let key = |t: &Tree, paths: &[&str]| {
            let mut v = vec![];
            t.entries_key(&names, paths, &mut |b| v.extend_from_slice(b));
            v
        };
        let before = key(&t, &["usr/bin/a"]);
        assert_eq!(before, key(&t, &["usr/bin/a"]));
        t.nodes.get_mut("usr/bin/a").unwrap().mode = 0o700;
        assert_ne!(before, key(&t, &["usr/bin/a"]));
        let mut tar = vec![];
        t.write_entries(&mut tar, &names, &["usr/bin/a", "usr/bin/b"])
            .unwrap();
        assert_eq!(tar.len(), 4 * 512);
    }
}
