//! Merkle input roots: a tree of files (from disk or from memory) turned into `Directory`
//! messages whose children are named by digest, and back into files on disk.
//!
//! Canonical form (`remote_execution.proto`, "Directory"): each name is one path segment,
//! unique within its folder, and files and folders are each sorted by name as UTF-8 bytes,
//! which is how `BTreeMap<String, _>` orders them. Every `Directory` is its own blob.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::proto::{Digest, Directory, DirectoryNode, FileNode};
use crate::{Error, digest};

/// Where a blob's bytes are, until they are uploaded.
#[derive(Clone, Debug)]
pub enum Source {
    Memory(Vec<u8>),
    File(PathBuf),
}

/// The blobs a tree (or an action) needs in the CAS, by hash; one entry per distinct content.
#[derive(Clone, Debug, Default)]
pub struct Blobs {
    pub(crate) map: BTreeMap<String, (Digest, Source)>,
}

impl Blobs {
    pub fn new() -> Blobs {
        Blobs::default()
    }

    /// Add bytes; returns their digest.
    pub fn add_bytes(&mut self, b: Vec<u8>) -> Digest {
        let d = digest::of_bytes(&b);
        self.map
            .entry(d.hash.clone())
            .or_insert_with(|| (d.clone(), Source::Memory(b)));
        d
    }

    /// Add a file by its content (read now to hash it, again when uploaded).
    pub fn add_file(&mut self, path: &Path) -> Result<Digest, Error> {
        let d = digest::of_file(path)?;
        self.map
            .entry(d.hash.clone())
            .or_insert_with(|| (d.clone(), Source::File(path.to_path_buf())));
        Ok(d)
    }

    /// Add a file whose digest the caller already knows (it hashed the same file before). A
    /// file changed since still fails its upload: batches are checked here, and the CAS
    /// checks streamed blobs against the digest they are written under.
    pub fn add_file_as(&mut self, path: &Path, d: Digest) -> Digest {
        self.map
            .entry(d.hash.clone())
            .or_insert_with(|| (d.clone(), Source::File(path.to_path_buf())));
        d
    }

    /// Add an encoded message; returns its digest.
    pub fn add_message<M: prost::Message>(&mut self, m: &M) -> Digest {
        let (d, b) = digest::of_message(m);
        self.map
            .entry(d.hash.clone())
            .or_insert_with(|| (d.clone(), Source::Memory(b)));
        d
    }

    /// Every blob of `other` too.
    pub fn extend(&mut self, other: Blobs) {
        for (k, v) in other.map {
            self.map.entry(k).or_insert(v);
        }
    }

    pub fn digests(&self) -> Vec<Digest> {
        self.map.values().map(|(d, _)| d.clone()).collect()
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Total bytes.
    pub fn size(&self) -> u64 {
        self.map.values().map(|(d, _)| digest::size(d)).sum()
    }
}

#[derive(Clone, Debug)]
struct FileEntry {
    digest: Digest,
    executable: bool,
}

#[derive(Clone, Debug, Default)]
struct Dir {
    files: BTreeMap<String, FileEntry>,
    dirs: BTreeMap<String, Dir>,
}

/// A tree of files being assembled into an input root.
#[derive(Clone, Debug, Default)]
pub struct InputTree {
    root: Dir,
    blobs: Blobs,
}

/// The segments of a relative `/`-separated path, refusing anything that could leave the root
/// or that the spec forbids in a name.
pub fn segments(path: &str) -> Result<Vec<&str>, Error> {
    let bad = || Error::Path(path.to_string());
    if path.is_empty() || path.starts_with('/') {
        return Err(bad());
    }
    let segs: Vec<&str> = path.split('/').collect();
    if segs
        .iter()
        .any(|s| s.is_empty() || *s == "." || *s == ".." || s.contains('\0'))
    {
        return Err(bad());
    }
    Ok(segs)
}

impl InputTree {
    pub fn new() -> InputTree {
        InputTree::default()
    }

    fn dir_mut(&mut self, segs: &[&str], path: &str) -> Result<&mut Dir, Error> {
        let mut d = &mut self.root;
        for s in segs {
            if d.files.contains_key(*s) {
                return Err(Error::Path(path.to_string()));
            }
            d = d.dirs.entry((*s).to_string()).or_default();
        }
        Ok(d)
    }

    fn put(&mut self, path: &str, e: FileEntry) -> Result<(), Error> {
        let segs = segments(path)?;
        let (name, parents) = segs.split_last().expect("at least one segment");
        let d = self.dir_mut(parents, path)?;
        if d.dirs.contains_key(*name) {
            return Err(Error::Path(path.to_string()));
        }
        d.files.insert((*name).to_string(), e);
        Ok(())
    }

    /// A file with these bytes at `path`.
    pub fn add_bytes(&mut self, path: &str, b: Vec<u8>, executable: bool) -> Result<(), Error> {
        let digest = self.blobs.add_bytes(b);
        self.put(path, FileEntry { digest, executable })
    }

    /// The file `from` at `path`; executable when any execute bit is set.
    pub fn add_file(&mut self, path: &str, from: &Path) -> Result<(), Error> {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(from)
            .map_err(|source| Error::Io {
                path: from.to_path_buf(),
                source,
            })?
            .permissions()
            .mode();
        let digest = self.blobs.add_file(from)?;
        self.put(
            path,
            FileEntry {
                digest,
                executable: mode & 0o111 != 0,
            },
        )
    }

    /// The file `from` at `path` with a digest known already ([`Blobs::add_file_as`]).
    pub fn add_file_as(
        &mut self,
        path: &str,
        from: &Path,
        digest: Digest,
        executable: bool,
    ) -> Result<(), Error> {
        let digest = self.blobs.add_file_as(from, digest);
        self.put(path, FileEntry { digest, executable })
    }

    /// An empty folder at `path` (kept even with nothing in it).
    pub fn add_dir(&mut self, path: &str) -> Result<(), Error> {
        let segs = segments(path)?;
        self.dir_mut(&segs, path).map(|_| ())
    }

    /// The root's digest and every blob the tree needs: its files and its `Directory`
    /// messages.
    pub fn build(mut self) -> (Digest, Blobs) {
        let root = std::mem::take(&mut self.root);
        let d = encode(&root, &mut self.blobs);
        (d, self.blobs)
    }
}

fn encode(d: &Dir, blobs: &mut Blobs) -> Digest {
    let directories = d
        .dirs
        .iter()
        .map(|(name, sub)| DirectoryNode {
            name: name.clone(),
            digest: Some(encode(sub, blobs)),
        })
        .collect();
    let files = d
        .files
        .iter()
        .map(|(name, f)| FileNode {
            name: name.clone(),
            digest: Some(f.digest.clone()),
            is_executable: f.executable,
            ..Default::default()
        })
        .collect();
    blobs.add_message(&Directory {
        files,
        directories,
        ..Default::default()
    })
}

/// Write the tree `root` into the folder `to` (which must exist), fetching what it needs from
/// the CAS: folders level by level in batches, then the files. Symbolic links are refused
/// (pallet's input roots have none).
pub fn checkout(client: &crate::Client, root: &Digest, to: &Path) -> Result<(), Error> {
    checkout_with_cache(client, root, to, None)
}

/// [`checkout`], taking files from a local cache of blobs by digest (`CACHE/HASH`) when it
/// holds them, and keeping what it downloads there. Files are copied out of the cache, never
/// linked: an action that writes to an input must not change the cache. A blob enters the
/// cache only after its digest was checked on download, under a temporary name renamed into
/// place.
pub fn checkout_with_cache(
    client: &crate::Client,
    root: &Digest,
    to: &Path,
    cache: Option<&Path>,
) -> Result<(), Error> {
    let mut level = vec![(to.to_path_buf(), root.clone())];
    let mut files: Vec<(PathBuf, Digest, bool)> = vec![];
    while !level.is_empty() {
        let digests: Vec<Digest> = level.iter().map(|(_, d)| d.clone()).collect();
        let got = client.read_blobs(&digests)?;
        let mut next = vec![];
        for (dir, d) in level {
            let bytes = got.get(&d.hash).expect("read_blobs returns every digest");
            let msg: Directory =
                prost::Message::decode(bytes.as_slice()).map_err(|e| Error::Protocol {
                    server: client.server().to_string(),
                    call: "BatchReadBlobs",
                    message: format!("directory {} does not decode: {e}", digest::show(&d)),
                })?;
            if !msg.symlinks.is_empty() {
                return Err(Error::Path(format!(
                    "{}: symbolic links in an input root",
                    dir.display()
                )));
            }
            for n in msg.directories {
                segments(&n.name)?;
                let sub = dir.join(&n.name);
                std::fs::create_dir(&sub).map_err(|source| Error::Io {
                    path: sub.clone(),
                    source,
                })?;
                next.push((sub, n.digest.unwrap_or_else(digest::empty)));
            }
            for f in msg.files {
                if segments(&f.name)?.len() != 1 {
                    return Err(Error::Path(f.name));
                }
                files.push((
                    dir.join(&f.name),
                    f.digest.unwrap_or_else(digest::empty),
                    f.is_executable,
                ));
            }
        }
        level = next;
    }
    for (path, d, exec) in files {
        fetch_file(client, &d, &path, cache)?;
        use std::os::unix::fs::PermissionsExt as _;
        let mode = if exec { 0o755 } else { 0o644 };
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).map_err(
            |source| Error::Io {
                path: path.clone(),
                source,
            },
        )?;
    }
    Ok(())
}

/// One file of a checkout, from the cache when it holds the blob at its size.
fn fetch_file(
    client: &crate::Client,
    d: &Digest,
    path: &Path,
    cache: Option<&Path>,
) -> Result<(), Error> {
    let Some(cache) = cache.filter(|_| d.size_bytes > 0) else {
        return client.download(d, path);
    };
    let io = |p: &Path| {
        let p = p.to_path_buf();
        move |source| Error::Io { path: p, source }
    };
    let cached = cache.join(&d.hash);
    if std::fs::metadata(&cached).is_ok_and(|m| m.len() == digest::size(d)) {
        // A hit is marked used (the cache evicts by modification time: atime is often not
        // kept). Another worker sharing the folder may evict it between the look and the
        // copy: then it is downloaded again below, as a miss.
        let _ = std::fs::File::options()
            .append(true)
            .open(&cached)
            .and_then(|f| f.set_modified(std::time::SystemTime::now()));
        match std::fs::copy(&cached, path) {
            Ok(_) => return Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io(path)(e)),
        }
    }
    std::fs::create_dir_all(cache).map_err(io(cache))?;
    let tmp = cache.join(format!(".tmp-{}-{}", d.hash, uuid::Uuid::new_v4()));
    client.download(d, &tmp)?;
    std::fs::rename(&tmp, &cached).map_err(io(&cached))?;
    std::fs::copy(&cached, path).map(|_| ()).map_err(io(path))
}

/// Temporary files older than this in a blob cache belong to a worker that died mid-download.
const STALE_TMP: std::time::Duration = std::time::Duration::from_secs(3600);

/// Bring a blob cache (a folder of `HASH` files, as [`checkout_with_cache`] keeps) down to at
/// most `max_bytes`, removing the least recently used blobs first (by modification time,
/// which a hit renews). Safe while other workers use the same folder: blobs enter it by
/// rename and leave it by unlink, so a reader sees a whole blob or none, and one that loses a
/// blob to eviction fetches it again. Returns the bytes removed.
pub fn evict(cache: &Path, max_bytes: u64) -> Result<u64, Error> {
    let io = |source| Error::Io {
        path: cache.to_path_buf(),
        source,
    };
    let rd = match std::fs::read_dir(cache) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(io(e)),
    };
    let now = std::time::SystemTime::now();
    let mut entries = vec![];
    let mut total = 0u64;
    for e in rd {
        let e = e.map_err(io)?;
        // Gone already (another worker's eviction or rename): nothing to count.
        let Ok(m) = e.metadata() else { continue };
        if !m.is_file() {
            continue;
        }
        let mtime = m.modified().unwrap_or(now);
        if e.file_name().to_string_lossy().starts_with(".tmp-") {
            if now.duration_since(mtime).unwrap_or_default() > STALE_TMP {
                let _ = std::fs::remove_file(e.path());
            }
            continue;
        }
        total += m.len();
        entries.push((mtime, e.path(), m.len()));
    }
    if total <= max_bytes {
        return Ok(0);
    }
    entries.sort();
    let mut removed = 0;
    for (_, p, len) in entries {
        if total <= max_bytes {
            break;
        }
        match std::fs::remove_file(&p) {
            Ok(()) => removed += len,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(source) => return Err(Error::Io { path: p, source }),
        }
        total -= len;
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trees_are_canonical_and_shared_contents_stored_once() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("s"), b"same").unwrap();
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(d.path().join("s"), std::fs::Permissions::from_mode(0o755))
            .unwrap();
        let mut a = InputTree::new();
        a.add_bytes("b/y", b"same".to_vec(), false).unwrap();
        a.add_file("a.sh", &d.path().join("s")).unwrap();
        a.add_bytes("b/x", b"other".to_vec(), false).unwrap();
        a.add_dir("empty").unwrap();
        // The same tree added in another order has the same digest.
        let mut b = InputTree::new();
        b.add_dir("empty").unwrap();
        b.add_bytes("b/x", b"other".to_vec(), false).unwrap();
        b.add_bytes("a.sh", b"same".to_vec(), true).unwrap();
        b.add_bytes("b/y", b"same".to_vec(), false).unwrap();
        let (ra, blobs) = a.build();
        let (rb, _) = b.build();
        assert_eq!(ra, rb);
        // "same", "other", and three folders (root, b, empty).
        assert_eq!(blobs.len(), 5);
        let root: Directory = prost::Message::decode(match &blobs.map[&ra.hash].1 {
            Source::Memory(b) => b.as_slice(),
            Source::File(_) => unreachable!(),
        })
        .unwrap();
        let names: Vec<&str> = root.directories.iter().map(|n| n.name.as_str()).collect();
        assert_eq!(names, ["b", "empty"]);
        assert_eq!(root.files[0].name, "a.sh");
        assert!(root.files[0].is_executable);
    }

    #[test]
    fn paths_that_leave_the_root_or_collide_are_refused() {
        let mut t = InputTree::new();
        for bad in ["", "/abs", "a/../b", "a//b", "./a", "a/"] {
            assert!(t.add_bytes(bad, vec![], false).is_err(), "{bad:?}");
        }
        t.add_bytes("f", vec![], false).unwrap();
        assert!(t.add_bytes("f/g", vec![], false).is_err());
        t.add_dir("d").unwrap();
        assert!(t.add_bytes("d", vec![], false).is_err());
    }

    #[test]
    fn the_blob_cache_is_brought_under_its_bound_oldest_first() {
        let d = tempfile::tempdir().unwrap();
        let c = d.path().join("blobs");
        assert_eq!(evict(&c, 0).unwrap(), 0, "a missing cache is empty");
        std::fs::create_dir(&c).unwrap();
        let t0 = std::time::SystemTime::now() - std::time::Duration::from_secs(7200);
        for (k, name) in ["a", "b", "c", "d"].iter().enumerate() {
            let p = c.join(name);
            std::fs::write(&p, [0u8; 100]).unwrap();
            let f = std::fs::File::options().append(true).open(&p).unwrap();
            f.set_modified(t0 + std::time::Duration::from_secs(60 * k as u64))
                .unwrap();
        }
        // Another worker's download under way is neither counted nor removed; a dead one's is.
        std::fs::write(c.join(".tmp-x-1"), [0u8; 1000]).unwrap();
        let stale = c.join(".tmp-y-2");
        std::fs::write(&stale, [0u8; 10]).unwrap();
        std::fs::File::options()
            .append(true)
            .open(&stale)
            .unwrap()
            .set_modified(t0)
            .unwrap();
        // "a" is the oldest but was just used: it stays, and "b" and "c" go.
        std::fs::File::options()
            .append(true)
            .open(c.join("a"))
            .unwrap()
            .set_modified(std::time::SystemTime::now())
            .unwrap();
        assert_eq!(evict(&c, 400).unwrap(), 0);
        assert_eq!(evict(&c, 250).unwrap(), 200);
        let mut left: Vec<String> = std::fs::read_dir(&c)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        assert_eq!(left, [".tmp-x-1", "a", "d"]);
        assert_eq!(evict(&c, 0).unwrap(), 200);
    }
}
