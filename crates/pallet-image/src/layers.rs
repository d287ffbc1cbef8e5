//! Layer blobs made of cached, separately compressed parts.
//!
//! A layer is written as a row of parts ([`pallet_fs::Tree::layer_parts`]: the directories, one
//! part per package, the generated files). Each part is compressed on its own into gzip members
//! of at most [`CHUNK`] uncompressed bytes, and the layer blob is those members back to back: a
//! valid gzip file, whose uncompressed bytes are the parts' tar entries one after the other and
//! the end-of-archive blocks at the end of the last part.
//!
//! The cache (`segments-v2/`) keeps each compressed part under a key computed from the tree
//! without reading content ([`pallet_fs::Tree::entries_key`]), the compression level and the
//! compressor, so a rebuild only compresses the parts whose bytes changed. An entry ends with a
//! footer giving its length, so one cut short (written unsynced, then a power loss) is known
//! for what it is and made again. `layers-v3/` maps
//! the key of a whole layer (its parts' keys in order) to its digest, diff_id and size, so a
//! rebuild of the same layer only copies and hashes the compressed parts; a record whose
//! digest does not match what the parts give is ignored and the layer made again.
//!
//! Determinism: the chunk size is fixed and every chunk is compressed alone, so the bytes depend
//! on the parts only, never on the number of threads or the order in which they finish.

use std::fs::{self, File};
use std::io::{self, BufWriter, Read, Seek as _, Write};
use std::path::{Path, PathBuf};

use rayon::prelude::*;
use sha2::{Digest, Sha256};

use crate::oci::Blob;

/// Uncompressed bytes per gzip member: large enough that starting each member with an empty
/// window costs well under a percent of ratio, small enough to spread one big package over
/// every core and to keep memory bounded.
pub const CHUNK: usize = 1 << 20;
/// The layer compression level (libdeflate's scale). Measured on the 38 MB layer of the Alpine
/// 3.19 benchmark image, 1 MiB members, one core, in one run: level 1 gives 15.71 MB in 221 ms,
/// level 2 14.98 MB in 302 ms, level 3 14.87 MB in 338 ms, level 5 14.53 MB in 393 ms, and
/// `gzip -6` (apko's level) 14.69 MB. Compression is about half the CPU of a cold image build,
/// which is CPU-bound on both cores, and the speed goal (a cold build in at most 0.15x the time
/// of apk-tools plus `tar | gzip -6`) is not met at level 2: eight cold builds of the benchmark
/// image each, alternating two binaries that differ only here, took 418-572 ms (median 500) at
/// level 1 and 565-635 ms (median 587) at level 2 on a busy 2-core machine. Level 1 costs 7% of
/// size against apko's layer (5% against level 2); a rebuild reuses the compressed parts, so
/// the level only matters for parts that changed.
pub const DEFAULT_LEVEL: u32 = 1;
/// Chunks compressed together within one part (bounds memory: in and out buffers of this many
/// chunks per part being compressed).
const BATCH: usize = 4;
/// Names what makes a part's compressed bytes: bump it when the compressor or the framing
/// changes, so no earlier cache entry is taken for the new format.
const SEGMENT_FORMAT: &str = "pallet-segment-v2 libdeflate-1.26 chunk=1MiB";
const SEGMENTS: &str = "segments-v2";
/// Ends every segment entry, followed by the length of the gzip members before it (u64 LE).
const SEGMENT_FOOTER: &[u8; 8] = b"PLTSEG2\n";
const LAYER_FORMAT: &str = "pallet-layer-v3";

/// Writes a part's uncompressed bytes (called once to compress it, once to hash it).
pub type Produce<'a> = Box<dyn Fn(&mut dyn Write) -> io::Result<()> + Sync + 'a>;

/// One part of a layer: a key that determines its uncompressed bytes, and how to write them.
pub struct Part<'a> {
    pub key: [u8; 32],
    pub produce: Produce<'a>,
}

fn hex(d: impl AsRef<[u8]>) -> String {
    d.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

fn segment_path(cache: &Path, level: u32, key: &[u8; 32]) -> PathBuf {
    let mut h = Sha256::new();
    h.update(SEGMENT_FORMAT.as_bytes());
    h.update(level.to_le_bytes());
    h.update(key);
    cache
        .join(SEGMENTS)
        .join(format!("{}.gz", hex(h.finalize())))
}

/// The length of a segment entry's gzip members, when the entry is there and whole.
fn segment_len(path: &Path) -> Option<u64> {
    use std::os::unix::fs::FileExt as _;
    let f = File::open(path).ok()?;
    let len = f.metadata().ok()?.len();
    let body = len.checked_sub(16)?;
    let mut foot = [0u8; 16];
    f.read_exact_at(&mut foot, body).ok()?;
    let n = u64::from_le_bytes(foot[8..].try_into().expect("8 bytes"));
    (&foot[..8] == SEGMENT_FOOTER && n == body).then_some(n)
}

/// Hashes and counts what passes through.
struct HashCount<W> {
    inner: W,
    hash: Sha256,
    n: u64,
}

impl<W: Write> Write for HashCount<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hash.update(&buf[..n]);
        self.n += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

thread_local! {
    static COMPRESSOR: std::cell::RefCell<Option<(u32, libdeflater::Compressor)>> =
        const { std::cell::RefCell::new(None) };
}

/// Chunk-sized buffers given back for the next chunk: a fresh MiB for every chunk would cost a
/// page fault every 4 KiB. At most [`POOL_MAX`] are kept.
static POOL: std::sync::Mutex<Vec<Vec<u8>>> = std::sync::Mutex::new(Vec::new());
const POOL_MAX: usize = 24;

fn take_buf() -> Vec<u8> {
    let mut v = POOL
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .pop()
        .unwrap_or_default();
    v.clear();
    v
}

fn give_buf(v: Vec<u8>) {
    let mut p = POOL.lock().unwrap_or_else(|e| e.into_inner());
    if p.len() < POOL_MAX {
        p.push(v);
    }
}

/// One chunk as one gzip member (header with no name, mtime 0 and OS "unknown") into `out`
/// (its length grown to the bound, never shrunk); returns the member's length.
fn gzip_chunk(level: u32, data: &[u8], out: &mut Vec<u8>) -> io::Result<usize> {
    COMPRESSOR.with(|c| {
        let mut c = c.borrow_mut();
        if c.as_ref().is_none_or(|(l, _)| *l != level) {
            let lvl = libdeflater::CompressionLvl::new(level.clamp(1, 12) as i32)
                .map_err(|_| io::Error::other(format!("gzip level {level} is not supported")))?;
            *c = Some((level, libdeflater::Compressor::new(lvl)));
        }
        let (_, comp) = c.as_mut().expect("just made");
        let bound = comp.gzip_compress_bound(data.len());
        if out.len() < bound {
            out.resize(bound, 0);
        }
        comp.gzip_compress(data, out)
            .map_err(|e| io::Error::other(format!("gzip: {e:?}")))
    })
}

/// Cuts what is written into [`CHUNK`]s and writes each as a gzip member, [`BATCH`] at a time
/// on every core, in order.
struct ChunkedGz<W: Write> {
    inner: W,
    level: u32,
    /// Spread a batch over rayon's threads, or compress it on the calling thread.
    parallel: bool,
    buf: Vec<u8>,
    full: Vec<Vec<u8>>,
}

impl<W: Write> ChunkedGz<W> {
    fn flush_full(&mut self) -> io::Result<()> {
        let level = self.level;
        let one = |c: &Vec<u8>| {
            let mut out = take_buf();
            let n = gzip_chunk(level, c, &mut out);
            (out, n)
        };
        let out: Vec<(Vec<u8>, io::Result<usize>)> = if self.parallel {
            self.full.par_iter().map(one).collect()
        } else {
            self.full.iter().map(one).collect()
        };
        for c in self.full.drain(..) {
            give_buf(c);
        }
        let mut res = Ok(());
        for (o, n) in out {
            if res.is_ok() {
                res = n.and_then(|n| self.inner.write_all(&o[..n]));
            }
            give_buf(o);
        }
        res
    }

    fn finish(mut self) -> io::Result<W> {
        if !self.buf.is_empty() {
            let last = std::mem::take(&mut self.buf);
            self.full.push(last);
        }
        self.flush_full()?;
        Ok(self.inner)
    }
}

impl<W: Write> Write for ChunkedGz<W> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let mut rest = data;
        while !rest.is_empty() {
            if self.buf.capacity() == 0 {
                self.buf = take_buf();
                self.buf.reserve_exact(CHUNK);
            }
            let take = (CHUNK - self.buf.len()).min(rest.len());
            self.buf.extend_from_slice(&rest[..take]);
            rest = &rest[take..];
            if self.buf.len() == CHUNK {
                let full = std::mem::take(&mut self.buf);
                self.full.push(full);
                if self.full.len() == BATCH {
                    self.flush_full()?;
                }
            }
        }
        Ok(data.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Compress one part into its cache entry (a locked temporary renamed into place).
fn compress_part(path: &Path, level: u32, part: &Part<'_>, parallel: bool) -> io::Result<()> {
    // Unsynced: the footer tells a cut entry (see the module doc).
    pallet_atomic::write_cache_with(path, |t| {
        let mut gz = ChunkedGz {
            inner: BufWriter::with_capacity(1 << 20, &mut *t),
            level,
            parallel,
            buf: Vec::new(),
            full: Vec::new(),
        };
        (part.produce)(&mut gz)?;
        let mut w = gz.finish()?;
        w.flush()?;
        drop(w);
        let n = t.file().stream_position()?;
        t.write_all(SEGMENT_FOOTER)?;
        t.write_all(&n.to_le_bytes())
    })
}

/// Concatenate the parts' cache entries into a blob in `blobs`, hashing as it goes. With
/// `expect`, the blob must have that digest (a layer record's), else nothing is kept.
fn assemble(blobs: &Path, segments: &[PathBuf], expect: Option<&str>) -> io::Result<Option<Blob>> {
    assemble_when(blobs, segments, expect, |_| Ok(()))
}

/// [`assemble`], calling `ready(i)` before segment `i` is copied: it returns once that segment
/// is made, so the copy can trail the compression.
fn assemble_when(
    blobs: &Path,
    segments: &[PathBuf],
    expect: Option<&str>,
    mut ready: impl FnMut(usize) -> io::Result<()>,
) -> io::Result<Option<Blob>> {
    static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let partial = blobs.join(format!(".layer-{}-{n}.partial", std::process::id()));
    let mut w = HashCount {
        inner: BufWriter::with_capacity(1 << 20, File::create(&partial)?),
        hash: Sha256::new(),
        n: 0,
    };
    let mut buf = vec![0u8; 1 << 20];
    let res = (|| -> io::Result<()> {
        for (i, s) in segments.iter().enumerate() {
            ready(i)?;
            let n = segment_len(s).ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("{}: not a whole segment", s.display()),
                )
            })?;
            let mut f = File::open(s)?.take(n);
            loop {
                let k = f.read(&mut buf)?;
                if k == 0 {
                    break;
                }
                w.write_all(&buf[..k])?;
            }
        }
        w.flush()
    })();
    let digest = format!("sha256:{}", hex(w.hash.finalize()));
    let size = w.n;
    drop(w.inner);
    if res.is_err() || expect.is_some_and(|e| e != digest) {
        let _ = fs::remove_file(&partial);
        return res.map(|_| None);
    }
    // The work folder is itself a locked temporary: no need to sync what it holds.
    let path = blobs.join(digest.trim_start_matches("sha256:"));
    fs::rename(&partial, &path)?;
    Ok(Some(Blob { digest, size, path }))
}

/// The layer holding the nodes of `tree` that `filter` names (all when `None`), with owner
/// names from `names`, as a blob in `blobs`; see [`layer`].
pub fn tree_layer(
    tree: &pallet_fs::Tree,
    names: &pallet_fs::OwnerNames,
    filter: Option<&std::collections::BTreeSet<String>>,
    cache: &Path,
    blobs: &Path,
    level: u32,
) -> io::Result<(Blob, String)> {
    crate::timing::mark("layer start");
    let parts = match filter {
        None => tree.layer_parts(|_, _| true),
        Some(set) => tree.layer_parts(|p, _| set.contains(p)),
    };
    let parts: Vec<Part<'_>> = parts
        .into_iter()
        .map(|part| tree_part(tree, names, part))
        .collect();
    crate::timing::mark("layer: part keys");
    layer(cache, blobs, level, &parts)
}

/// A layer part with its cache key: every byte of its entries as the tree names them (see
/// [`pallet_fs::Tree::entries_key`]), and for the last part the end-of-archive blocks.
fn tree_part<'a>(
    tree: &'a pallet_fs::Tree,
    names: &'a pallet_fs::OwnerNames,
    part: pallet_fs::LayerPart<'a>,
) -> Part<'a> {
    let last = part.kind == pallet_fs::PartKind::Rest;
    let mut h = Sha256::new();
    h.update(b"pallet-part-v1\0");
    h.update([u8::from(last)]);
    tree.entries_key(names, &part.paths, &mut |b| h.update(b));
    let paths = part.paths;
    Part {
        key: h.finalize().into(),
        produce: Box::new(move |w| {
            tree.write_entries(w, names, &paths)?;
            if last {
                pallet_apk_stream::tarw::write_end(w)?;
            }
            Ok(())
        }),
    }
}

/// Compresses packages' parts while the build is still fetching and installing later packages,
/// on the thread that would otherwise wait for them. A part is compressed as the tree is at
/// that moment, with the owner names its `/etc/passwd` and `/etc/group` give then, and cached
/// under the key of those bytes; the layer itself is still made from the final tree, so a part
/// that came out differently (a later package took over one of its files, `paths:` changed a
/// mode, accounts renamed an owner) is simply compressed again then. What gets written never
/// depends on what was guessed here, only how much is left to do at the end.
pub struct Speculator {
    cache: PathBuf,
    level: u32,
    queue: std::collections::VecDeque<usize>,
}

impl Speculator {
    pub fn new(cache: &Path, level: u32) -> Self {
        Speculator {
            cache: cache.to_path_buf(),
            level,
            queue: Default::default(),
        }
    }

    /// The package with this index is installed in the tree.
    pub fn installed(&mut self, idx: usize) {
        self.queue.push_back(idx);
    }

    /// Compress the part of the oldest installed package not yet done; false when none is
    /// left. Failures are left for the final layer to meet and report.
    pub fn work(&mut self, tree: &pallet_fs::Tree) -> bool {
        let Some(idx) = self.queue.pop_front() else {
            return false;
        };
        let Some(part) = tree.package_part(idx) else {
            return true;
        };
        let names = owner_names(tree);
        let part = tree_part(tree, &names, part);
        let seg = segment_path(&self.cache, self.level, &part.key);
        if segment_len(&seg).is_none()
            && let Some(dir) = seg.parent()
            && fs::create_dir_all(dir).is_ok()
        {
            let _ = compress_part(&seg, self.level, &part, false);
        }
        true
    }
}

/// uid and gid names as the tree's `/etc/passwd` and `/etc/group` give them.
pub fn owner_names(tree: &pallet_fs::Tree) -> pallet_fs::OwnerNames {
    let read = |p: &str| {
        String::from_utf8_lossy(&tree.read(p).ok().flatten().unwrap_or_default()).into_owned()
    };
    pallet_fs::OwnerNames::from_files(&read("etc/passwd"), &read("etc/group"))
}

/// The layer made of `parts`, as a blob in `blobs`, through the part and layer caches under
/// `cache`; returns the blob and the diff_id (the digest of the uncompressed tar).
pub fn layer(
    cache: &Path,
    blobs: &Path,
    level: u32,
    parts: &[Part<'_>],
) -> io::Result<(Blob, String)> {
    let segments: Vec<PathBuf> = parts
        .iter()
        .map(|p| segment_path(cache, level, &p.key))
        .collect();
    let mut lk = Sha256::new();
    lk.update(LAYER_FORMAT.as_bytes());
    for s in &segments {
        lk.update(s.file_name().unwrap_or_default().as_encoded_bytes());
    }
    let record = cache.join("layers-v3").join(hex(lk.finalize()));
    if let Ok(text) = fs::read_to_string(&record)
        && let [digest, diff_id] = text.split_whitespace().collect::<Vec<_>>()[..]
        && segments.iter().all(|s| segment_len(s).is_some())
    {
        if let Some(blob) = assemble(blobs, &segments, Some(digest))? {
            return Ok((blob, diff_id.to_string()));
        }
        // Some part's entry is not what it was when the record was made: make them all again.
        for s in &segments {
            let _ = fs::remove_file(s);
        }
    }
    crate::timing::mark("layer: keys and record checked");
    let dir = cache.join(SEGMENTS);
    fs::create_dir_all(&dir)?;
    // What killed builds left half-written (their locks are gone).
    pallet_atomic::sweep(&dir);
    // The diff_id needs every uncompressed byte in order, and nothing of the compression: hash
    // while the missing parts are compressed. The blob is put together in order on a thread of
    // its own, each part as soon as it is made, so that little is left to copy at the end.
    let have: Vec<bool> = segments.iter().map(|s| segment_len(s).is_some()).collect();
    crate::timing::mark(&format!(
        "layer: {} of {} parts cached",
        have.iter().filter(|h| **h).count(),
        have.len()
    ));
    let mut made = have.clone();
    let (tx, rx) = std::sync::mpsc::channel::<usize>();
    let (diff, compressed, blob) = std::thread::scope(|sc| {
        let segments = &segments;
        let assembler = sc.spawn(move || {
            assemble_when(blobs, segments, None, |i| {
                while !made[i] {
                    // Every sender gone with parts missing: compression failed, and says why.
                    let j = rx
                        .recv()
                        .map_err(|_| io::Error::other("a layer part was not made"))?;
                    made[j] = true;
                }
                Ok(())
            })
        });
        let (diff, compressed) = rayon::join(
            || -> io::Result<String> {
                let mut sink = HashCount {
                    inner: io::sink(),
                    hash: Sha256::new(),
                    n: 0,
                };
                for p in parts {
                    (p.produce)(&mut sink)?;
                }
                Ok(format!("sha256:{}", hex(sink.hash.finalize())))
            },
            || {
                parts
                    .par_iter()
                    .zip(segments)
                    .enumerate()
                    .filter(|(i, _)| !have[*i])
                    .try_for_each_with(tx, |tx, (i, (p, s))| {
                        compress_part(s, level, p, true)?;
                        let _ = tx.send(i);
                        Ok::<(), io::Error>(())
                    })
            },
        );
        let blob = assembler
            .join()
            .unwrap_or_else(|_| Err(io::Error::other("the layer assembler panicked")));
        (diff, compressed, blob)
    });
    compressed?;
    crate::timing::mark("layer: parts compressed and hashed");
    let (diff_id, blob) = (diff?, blob?.expect("no digest to match"));
    crate::timing::mark("layer: assembled");
    if let Some(dir) = record.parent()
        && fs::create_dir_all(dir).is_ok()
    {
        // The blob's digest is checked against a record before the record is believed: no sync.
        let line = format!("{} {diff_id}\n", blob.digest);
        let _ = pallet_atomic::write_cache(&record, line.as_bytes());
    }
    Ok((blob, diff_id))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn part(key: u8, bytes: Vec<u8>) -> Part<'static> {
        Part {
            key: [key; 32],
            produce: Box::new(move |w| w.write_all(&bytes)),
        }
    }

    fn gunzip(b: &[u8]) -> Vec<u8> {
        let mut out = vec![];
        flate2::read::MultiGzDecoder::new(b)
            .read_to_end(&mut out)
            .unwrap();
        out
    }

    #[test]
    fn parts_concatenate_into_one_gzip_stream_and_are_reused() {
        let cache = tempfile::tempdir().unwrap();
        let blobs = tempfile::tempdir().unwrap();
        let big: Vec<u8> = (0..3 * CHUNK + 7).map(|i| (i % 251) as u8).collect();
        let parts = vec![
            part(1, b"first".to_vec()),
            part(2, vec![]),
            part(3, big.clone()),
        ];
        let (blob, diff_id) = layer(cache.path(), blobs.path(), 6, &parts).unwrap();
        let bytes = fs::read(&blob.path).unwrap();
        let mut want = b"first".to_vec();
        want.extend_from_slice(&big);
        assert_eq!(gunzip(&bytes), want);
        assert_eq!(diff_id, crate::oci::sha256_digest(&want));
        assert_eq!(blob.digest, crate::oci::sha256_digest(&bytes));
        // The same parts again: from the record, same blob.
        let blobs2 = tempfile::tempdir().unwrap();
        let (again, d2) = layer(cache.path(), blobs2.path(), 6, &parts).unwrap();
        assert_eq!(
            (again.digest.as_str(), d2.as_str()),
            (blob.digest.as_str(), diff_id.as_str())
        );
        // One part changed: only it is compressed again, and the result is what a cold
        // build of the same parts gives.
        let changed = vec![
            part(1, b"first".to_vec()),
            part(2, vec![]),
            part(4, big[..CHUNK + 3].to_vec()),
        ];
        let (warm, _) = layer(cache.path(), blobs2.path(), 6, &changed).unwrap();
        let cold_cache = tempfile::tempdir().unwrap();
        let (cold, _) = layer(cold_cache.path(), blobs.path(), 6, &changed).unwrap();
        assert_eq!(warm.digest, cold.digest);
        // A record whose digest the parts do not give is not trusted.
        let seg = segment_path(cache.path(), 6, &[3; 32]);
        fs::write(&seg, b"junk").unwrap();
        let b3 = tempfile::tempdir().unwrap();
        let (fixed, _) = layer(cache.path(), b3.path(), 6, &parts).unwrap();
        assert_eq!(fixed.digest, blob.digest);
        // An entry cut short (as an unsynced write can be after a power loss) is made again,
        // never copied into a blob.
        for cut in [&parts, &changed] {
            let seg = segment_path(cache.path(), 6, &[1; 32]);
            let len = fs::metadata(&seg).unwrap().len();
            File::options()
                .write(true)
                .open(&seg)
                .unwrap()
                .set_len(len - 3)
                .unwrap();
            let b4 = tempfile::tempdir().unwrap();
            let (again, _) = layer(cache.path(), b4.path(), 6, cut).unwrap();
            let (want, _) = layer(tempfile::tempdir().unwrap().path(), b4.path(), 6, cut).unwrap();
            assert_eq!(again.digest, want.digest);
            assert_eq!(gunzip(&fs::read(&again.path).unwrap())[..5], *b"first");
        }
    }
}
