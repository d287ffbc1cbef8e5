//! The image filesystem: an in-memory tree of metadata whose file contents stay in the
//! package cache (extents of cached, verified, uncompressed data tars) until the layer is
//! written. Installing follows apk's extraction and file-conflict rules; nothing from a package
//! is ever executed or written to the host outside the cache.

mod cache;
mod layer;
mod ldcache;
pub mod ldso;

pub use cache::{
    CacheError, CachedEntry, cache_package, cached_entries, read_cached, scan_data_tar,
};
pub use layer::{LayerPart, PartKind};

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::PathBuf;
use std::sync::Arc;

use pallet_apk_stream::tarw::{self, Kind};
use pallet_apk_types::{InstalledDir, InstalledFile, PackageInfo, checksum, installed::Acl};

/// Where a file's bytes are.
#[derive(Clone, Debug)]
pub enum Content {
    None,
    Bytes(Arc<Vec<u8>>),
    /// `len` bytes at `offset` in a cached uncompressed tar.
    Extent {
        file: Arc<PathBuf>,
        offset: u64,
        len: u64,
    },
}

/// One path in the image.
#[derive(Clone, Debug)]
pub struct Node {
    pub kind: Kind,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub mtime: u64,
    pub link: String,
    pub dev: (u32, u32),
    pub xattrs: Vec<(String, Vec<u8>)>,
    pub content: Content,
    pub size: u64,
    /// Index of the installed package that owns it (for the installed db and conflicts).
    pub owner: Option<usize>,
    pub sha1: Option<[u8; 20]>,
}

impl Node {
    pub fn dir(mode: u32, mtime: u64) -> Self {
        Node {
            kind: Kind::Dir,
            mode,
            uid: 0,
            gid: 0,
            mtime,
            link: String::new(),
            dev: (0, 0),
            xattrs: vec![],
            content: Content::None,
            size: 0,
            owner: None,
            sha1: None,
        }
    }
    pub fn file(data: Vec<u8>, mode: u32, mtime: u64) -> Self {
        Node {
            kind: Kind::File,
            size: data.len() as u64,
            content: Content::Bytes(Arc::new(data)),
            ..Node::dir(mode, mtime)
        }
    }
    pub fn symlink(target: &str, mtime: u64) -> Self {
        Node {
            kind: Kind::Symlink,
            link: target.to_string(),
            ..Node::dir(0o777, mtime)
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum FsError {
    #[error("{pkg}: trying to overwrite {path} owned by {owner}")]
    Conflict {
        pkg: String,
        path: String,
        owner: String,
    },
    #[error("{pkg}: {path}: {reason}")]
    Layout {
        pkg: String,
        path: String,
        reason: String,
    },
    #[error("cannot create directory {path}: {blocked} is not a directory")]
    NotADirectory { path: String, blocked: String },
    #[error("{0}")]
    Io(#[from] io::Error),
}

/// What the installer knows of a package while installing it.
#[derive(Clone, Debug)]
pub struct InstalledMeta {
    pub info: PackageInfo,
    pub tag: Option<String>,
    pub scripts: Vec<(String, Vec<u8>)>,
}

/// The image tree plus the packages installed into it.
#[derive(Default, Debug)]
pub struct Tree {
    pub nodes: BTreeMap<String, Node>,
    pub packages: Vec<InstalledMeta>,
    /// Per package, the paths it shipped in archive order (for the installed db).
    shipped: Vec<Vec<String>>,
}

/// Where [`Tree::walk`] ended.
enum Walk {
    /// The real path of the whole path.
    Done(String),
    /// The real path of the first component that does not exist.
    Missing(String),
    /// A component that exists but is not a directory.
    NotDir(String),
    /// Too many symlinks.
    Loop(String),
}

/// A normalised relative path without leading or trailing slashes.
fn norm(p: &str) -> String {
    p.trim_matches('/').to_string()
}

fn parent(p: &str) -> Option<&str> {
    p.rsplit_once('/').map(|(a, _)| a)
}

impl Tree {
    pub fn new() -> Self {
        Tree::default()
    }

    /// Walk `path` component by component through the tree's directories, following
    /// symlinks the way the kernel would inside a chroot: absolute targets start again at the
    /// image root and `..` never climbs above it, so a link can never lead outside the image.
    /// Stops at the first component that is missing.
    fn walk(&self, path: &str) -> Walk {
        let mut cur = String::new();
        let mut hops = 0;
        let mut parts: Vec<String> = path
            .split('/')
            .filter(|s| !s.is_empty())
            .map(String::from)
            .collect();
        parts.reverse();
        while let Some(part) = parts.pop() {
            if part == "." {
                continue;
            }
            if part == ".." {
                cur = parent(&cur).unwrap_or("").to_string();
                continue;
            }
            let next = if cur.is_empty() {
                part.clone()
            } else {
                format!("{cur}/{part}")
            };
            match self.nodes.get(&next) {
                Some(n) if n.kind == Kind::Dir => cur = next,
                Some(n) if n.kind == Kind::Symlink => {
                    // The same bound as the kernel's ELOOP, so a link cycle cannot hang a build.
                    hops += 1;
                    if hops > 40 {
                        return Walk::Loop(next);
                    }
                    if n.link.starts_with('/') {
                        cur.clear();
                    }
                    parts.extend(
                        n.link
                            .split('/')
                            .filter(|s| !s.is_empty())
                            .rev()
                            .map(String::from),
                    );
                }
                Some(_) => return Walk::NotDir(next),
                None => return Walk::Missing(next),
            }
        }
        Walk::Done(cur)
    }

    /// Follow symlinks in the tree for a directory path (`lib` → `usr/lib`), bounded so a
    /// loop cannot hang the build. Returns the real directory path (`""` for the root).
    pub fn resolve_dir(&self, path: &str) -> Option<String> {
        match self.walk(path) {
            Walk::Done(p) => Some(p),
            _ => None,
        }
    }

    /// Where an entry named `path` really lives: its parent resolved through the tree's
    /// symlinks, its last component kept as it is (a symlink there is the entry itself).
    /// `None` when the parent is missing or not a directory.
    pub fn real_path(&self, path: &str) -> Option<String> {
        let p = norm(path);
        match p.rsplit_once('/') {
            None => Some(p),
            Some((dir, base)) => {
                let real = self.resolve_dir(dir)?;
                Some(if real.is_empty() {
                    base.to_string()
                } else {
                    format!("{real}/{base}")
                })
            }
        }
    }

    /// The node `path` finally names, following symlinks and hard links (what `stat` sees),
    /// with its real path. `None` for a missing, dangling or looping path.
    pub fn follow(&self, path: &str) -> Option<(String, &Node)> {
        let mut p = norm(path);
        for _ in 0..40 {
            let real = self.real_path(&p)?;
            let n = self.nodes.get(&real)?;
            p = match n.kind {
                Kind::Symlink if n.link.starts_with('/') => n.link.clone(),
                Kind::Symlink => match parent(&real) {
                    Some(dir) => format!("{dir}/{}", n.link),
                    None => n.link.clone(),
                },
                // A hard link names its target by its path in the image.
                Kind::HardLink => n.link.clone(),
                _ => return Some((real, n)),
            };
        }
        None
    }

    /// The entries directly inside the real directory `dir` (`""` for the root), by name in
    /// byte order. Subtrees are skipped rather than walked, so listing `usr/lib` does not
    /// visit every file below it.
    pub fn children<'a>(
        &'a self,
        dir: &str,
    ) -> impl Iterator<Item = (&'a str, &'a Node)> + use<'a> {
        use std::ops::Bound;
        let prefix = if dir.is_empty() {
            String::new()
        } else {
            format!("{}/", norm(dir))
        };
        let mut from = Bound::Excluded(prefix.clone());
        std::iter::from_fn(move || {
            loop {
                let (k, n) = self
                    .nodes
                    .range::<String, _>((from.clone(), Bound::Unbounded))
                    .next()?;
                let rest = k.strip_prefix(prefix.as_str())?;
                match rest.find('/') {
                    None => {
                        from = Bound::Excluded(k.clone());
                        return Some((rest, n));
                    }
                    // Everything from `name/` up to `name0` (`0` follows `/`) is inside `name`.
                    Some(i) => from = Bound::Included(format!("{prefix}{}0", &rest[..i])),
                }
            }
        })
    }

    /// Insert a node created by the builder (accounts, paths, generated files), replacing
    /// whatever was there. The parent is resolved through the tree's symlinks, so with
    /// `lib -> usr/lib` a node put at `lib/x` lands at `usr/lib/x`: a layer never holds an
    /// entry below a symlink, which GNU tar would refuse or extract wrongly.
    pub fn put(&mut self, path: &str, node: Node) {
        let p = self.real_path(path).unwrap_or_else(|| norm(path));
        self.nodes.insert(p, node);
    }

    /// Create a directory and its missing parents (root owned), following symlinks on the
    /// way like `mkdir -p` (a dangling link gets its target created). A component that is a
    /// file, or a link loop, stops it; [`Tree::try_mkdir_all`] reports that.
    pub fn mkdir_all(&mut self, path: &str, mode: u32, mtime: u64) {
        let _ = self.try_mkdir_all(path, mode, mtime);
    }

    /// [`Tree::mkdir_all`], returning the real path of the directory.
    pub fn try_mkdir_all(&mut self, path: &str, mode: u32, mtime: u64) -> Result<String, FsError> {
        loop {
            match self.walk(path) {
                Walk::Done(p) => return Ok(p),
                Walk::Missing(p) => {
                    self.nodes.insert(p, Node::dir(mode, mtime));
                }
                Walk::NotDir(p) | Walk::Loop(p) => {
                    return Err(FsError::NotADirectory {
                        path: norm(path),
                        blocked: p,
                    });
                }
            }
        }
    }

    /// The node at `path`, its parent resolved through symlinks.
    pub fn get(&self, path: &str) -> Option<&Node> {
        self.nodes
            .get(&self.real_path(path).unwrap_or_else(|| norm(path)))
    }

    /// The bytes of a file in the tree (generated or from a package).
    pub fn read(&self, path: &str) -> io::Result<Option<Vec<u8>>> {
        let Some(n) = self.get(path) else {
            return Ok(None);
        };
        self.content(n).map(Some)
    }

    /// The bytes of a node's content.
    pub fn content(&self, n: &Node) -> io::Result<Vec<u8>> {
        Ok(match &n.content {
            Content::None => vec![],
            Content::Bytes(b) => b.as_ref().clone(),
            Content::Extent { file, offset, len } => {
                let mut f = File::open(file.as_ref())?;
                f.seek(SeekFrom::Start(*offset))?;
                let mut v = vec![0; *len as usize];
                f.read_exact(&mut v)?;
                v
            }
        })
    }

    /// Install one package whose data section was cached as an uncompressed tar at `tar_path`
    /// (written by [`cache_package`]), its entries read from the index beside it (or from the
    /// tar when there is none). See [`Tree::install_entries`].
    pub fn install(
        &mut self,
        meta: InstalledMeta,
        tar_path: &std::path::Path,
    ) -> Result<(), FsError> {
        let entries = cache::cached_entries(tar_path)?;
        self.install_entries(meta, tar_path, &entries)
    }

    /// Install one package from its cached data tar at `tar_path` and that tar's `entries`.
    /// Applies apk's rules: the parent must be a directory (possibly through a symlink), and a
    /// file owned by another package may be replaced only if the contents are identical, the
    /// packages share an origin, or `replaces` allows it.
    pub fn install_entries(
        &mut self,
        meta: InstalledMeta,
        tar_path: &std::path::Path,
        entries: &[CachedEntry],
    ) -> Result<(), FsError> {
        let idx = self.packages.len();
        let nv = meta.info.nv();
        let file = Arc::new(tar_path.to_path_buf());
        let mut shipped = Vec::new();
        for e in entries {
            let path = norm(&e.path);
            let kind = e.kind;
            // Place the entry under the real directory if its parent is a symlink to one.
            let path = match parent(&path) {
                Some(par) => {
                    let real = self.resolve_dir(par).ok_or_else(|| FsError::Layout {
                        pkg: nv.clone(),
                        path: path.clone(),
                        reason: "parent is not a directory in the image".into(),
                    })?;
                    let base = path.rsplit_once('/').map(|(_, b)| b).unwrap_or(&path);
                    if real.is_empty() {
                        base.to_string()
                    } else {
                        format!("{real}/{base}")
                    }
                }
                None => path,
            };
            let node = Node {
                kind,
                mode: e.mode & 0o7777,
                uid: e.uid,
                gid: e.gid,
                mtime: e.mtime,
                link: if kind == Kind::HardLink {
                    norm(&e.link)
                } else {
                    e.link.clone()
                },
                dev: e.dev,
                xattrs: e.xattrs.clone(),
                size: if kind == Kind::File { e.size } else { 0 },
                content: if kind == Kind::File {
                    Content::Extent {
                        file: file.clone(),
                        offset: e.offset,
                        len: e.size,
                    }
                } else {
                    Content::None
                },
                owner: Some(idx),
                sha1: e.sha1,
            };
            if let Some(old) = self.nodes.get(&path) {
                if kind == Kind::Dir && old.kind == Kind::Dir {
                    // Directories are shared; the first package's metadata stays, like apk.
                    shipped.push(path);
                    continue;
                }
                if kind == Kind::Dir && old.kind == Kind::Symlink {
                    // A usr-merge symlink standing where a package ships a directory.
                    continue;
                }
                if let Some(o) = old.owner.filter(|o| *o != idx) {
                    let prev = &self.packages[o].info;
                    let same_content = old.sha1.is_some() && old.sha1 == node.sha1;
                    let same_origin = prev.origin.is_some() && prev.origin == meta.info.origin;
                    let new_replaces = meta.info.replaces.iter().any(|d| d.name == prev.name);
                    let old_replaces = prev.replaces.iter().any(|d| d.name == meta.info.name);
                    if same_content || old_replaces {
                        continue;
                    }
                    if !(same_origin || new_replaces) {
                        return Err(FsError::Conflict {
                            pkg: nv,
                            path,
                            owner: prev.nv(),
                        });
                    }
                    // The file moves to the new package.
                    self.shipped[o].retain(|p| p != &path);
                }
            }
            shipped.push(path.clone());
            self.nodes.insert(path, node);
        }
        self.packages.push(meta);
        self.shipped.push(shipped);
        Ok(())
    }

    /// The installed database records, in install order.
    pub fn installed_db(&self) -> Vec<pallet_apk_types::InstalledPackage> {
        let mut out = Vec::new();
        for (i, meta) in self.packages.iter().enumerate() {
            let mut dirs: Vec<InstalledDir> = Vec::new();
            let mut seen_dirs: BTreeMap<String, usize> = BTreeMap::new();
            for path in &self.shipped[i] {
                let Some(n) = self.nodes.get(path) else {
                    continue;
                };
                let acl = Acl::new(n.uid, n.gid, n.mode);
                if n.kind == Kind::Dir {
                    if !seen_dirs.contains_key(path) {
                        seen_dirs.insert(path.clone(), dirs.len());
                        dirs.push(InstalledDir {
                            path: path.clone(),
                            acl,
                            files: vec![],
                        });
                    }
                    continue;
                }
                let (dir, name) = match path.rsplit_once('/') {
                    Some((d, f)) => (d.to_string(), f.to_string()),
                    None => (String::new(), path.clone()),
                };
                let di = match seen_dirs.get(&dir) {
                    Some(d) => *d,
                    None => {
                        seen_dirs.insert(dir.clone(), dirs.len());
                        dirs.push(InstalledDir {
                            path: dir.clone(),
                            acl: Acl::new(0, 0, 0o755),
                            files: vec![],
                        });
                        dirs.len() - 1
                    }
                };
                dirs[di].files.push(InstalledFile {
                    name,
                    acl,
                    checksum: n.sha1.map(|s| checksum::q1(&s)),
                });
            }
            out.push(pallet_apk_types::InstalledPackage {
                info: meta.info.clone(),
                tag: meta.tag.clone(),
                flags: None,
                dirs,
            });
        }
        out
    }

    /// Write the whole tree as one tar stream (entries sorted depth first by name, no leading
    /// `/`, directories without a trailing `/`), ending with the end-of-archive blocks.
    /// Returns the number of entries.
    pub fn write_tar<W: Write + ?Sized>(&self, w: &mut W, names: &OwnerNames) -> io::Result<usize> {
        self.write_tar_filtered(w, names, |_, _| true)
    }

    /// The paths a layer holding `keep` needs: those nodes plus every directory above them.
    pub fn with_parents(
        &self,
        keep: impl Fn(&str, &Node) -> bool,
    ) -> std::collections::BTreeSet<String> {
        let mut out = std::collections::BTreeSet::new();
        for (path, n) in &self.nodes {
            if keep(path, n) {
                let mut p = path.as_str();
                out.insert(p.to_string());
                while let Some((parent, _)) = p.rsplit_once('/') {
                    if !out.insert(parent.to_string()) {
                        break;
                    }
                    p = parent;
                }
            }
        }
        out
    }

    /// [`Tree::write_tar`] for the nodes `keep` accepts (one layer of a multi-layer image).
    pub fn write_tar_filtered<W: Write + ?Sized>(
        &self,
        w: &mut W,
        names: &OwnerNames,
        keep: impl Fn(&str, &Node) -> bool,
    ) -> io::Result<usize> {
        let mut ew = layer::EntryWriter::new(names);
        let mut count = 0;
        // BTreeMap order is byte order of the full path; tar consumers need parents first,
        // which byte order guarantees ("a" < "a/b"), so no separate walk is needed.
        for (path, n) in self.nodes.iter().filter(|(p, n)| keep(p, n)) {
            ew.write(w, path, n)?;
            count += 1;
        }
        tarw::write_end(w)?;
        Ok(count)
    }
}

/// uid/gid → names from the image's own `/etc/passwd` and `/etc/group`.
#[derive(Default, Debug)]
pub struct OwnerNames {
    users: BTreeMap<u32, String>,
    groups: BTreeMap<u32, String>,
}

impl OwnerNames {
    pub fn from_files(passwd: &str, group: &str) -> Self {
        let parse = |text: &str| {
            text.lines()
                .filter_map(|l| {
                    let f: Vec<&str> = l.split(':').collect();
                    Some((f.get(2)?.parse().ok()?, f.first()?.to_string()))
                })
                .fold(BTreeMap::new(), |mut m, (id, name): (u32, String)| {
                    m.entry(id).or_insert(name);
                    m
                })
        };
        OwnerNames {
            users: parse(passwd),
            groups: parse(group),
        }
    }
    pub(crate) fn user(&self, id: u32) -> &str {
        self.users.get(&id).map(String::as_str).unwrap_or("")
    }
    pub(crate) fn group(&self, id: u32) -> &str {
        self.groups.get(&id).map(String::as_str).unwrap_or("")
    }
}

impl Tree {
    /// Write the tree into the empty folder `dir` (a build sandbox's root). Parents are always
    /// created as real directories before their children, and nothing is written through a
    /// symlink, so a package's links cannot redirect writes outside `dir`. Device nodes are
    /// skipped: the sandbox mounts its own `/dev`.
    pub fn materialize(&self, dir: &std::path::Path) -> io::Result<()> {
        use std::os::unix::fs::{PermissionsExt, symlink};
        let mut dirs: Vec<(&String, &Node)> = vec![];
        for (path, n) in &self.nodes {
            let target = dir.join(path);
            if let Some(parent) = target.parent() {
                let md = std::fs::symlink_metadata(parent)?;
                if !md.is_dir() {
                    return Err(io::Error::other(format!(
                        "{path}: parent is not a directory"
                    )));
                }
            }
            match n.kind {
                Kind::Dir => {
                    std::fs::create_dir(&target).or_else(|e| {
                        if e.kind() == io::ErrorKind::AlreadyExists
                            && target.symlink_metadata()?.is_dir()
                        {
                            Ok(())
                        } else {
                            Err(e)
                        }
                    })?;
                    dirs.push((path, n));
                }
                Kind::File => {
                    let mut f = std::fs::OpenOptions::new()
                        .write(true)
                        .create_new(true)
                        .open(&target)?;
                    match &n.content {
                        Content::None => {}
                        Content::Bytes(b) => f.write_all(b)?,
                        Content::Extent { file, offset, len } => {
                            let mut src = File::open(file.as_ref())?;
                            src.seek(SeekFrom::Start(*offset))?;
                            io::copy(&mut src.take(*len), &mut f)?;
                        }
                    }
                    std::fs::set_permissions(&target, std::fs::Permissions::from_mode(n.mode))?;
                    let _ = std::os::unix::fs::chown(&target, Some(n.uid), Some(n.gid));
                }
                Kind::Symlink => symlink(&n.link, &target)?,
                Kind::HardLink => std::fs::hard_link(dir.join(&n.link), &target)?,
                Kind::Char | Kind::Block | Kind::Fifo => {}
            }
        }
        // Directory modes last, deepest first, so a read-only directory does not stop its
        // own children from being written.
        for (path, n) in dirs.into_iter().rev() {
            let target = dir.join(path);
            let _ = std::os::unix::fs::chown(&target, Some(n.uid), Some(n.gid));
            std::fs::set_permissions(&target, std::fs::Permissions::from_mode(n.mode))?;
        }
        Ok(())
    }
}
