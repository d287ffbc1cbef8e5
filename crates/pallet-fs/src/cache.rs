//! The package cache's file per package: the verified data section as an uncompressed tar of
//! normalised entries (whose extents the image tree points into), followed by what the caller
//! keeps of the control section, an entry index with every entry's metadata and the offset of
//! its content in the tar, and a fixed trailer giving both lengths:
//!
//! ```text
//! data tar (entries, end-of-archive blocks) | control | index | "PLTCACH1" control_len index_len
//! ```
//!
//! A tar reader stops at the end-of-archive blocks, so the file is still the data tar; installing
//! a cached package reads the trailer and the few KiB before it instead of walking the whole tar.
//! Everything is written in the same pass that decompresses and verifies the package, under a
//! temporary name renamed into place once complete: one file, one rename. The index
//! holds exactly what reading the tar back would give (the same masks and the same limits of
//! the ustar fields), so a tree installed from the index and one installed from the tar are the
//! same.

use std::fs::File;
use std::io::{self, Read, Write};
use std::path::Path;

use pallet_apk_stream::tarw::{self, EntryHeader, Kind};

/// One entry of a cached data tar: what the installer needs to know without reading the tar.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CachedEntry {
    /// Relative path, no leading or trailing `/`.
    pub path: String,
    pub kind: Kind,
    /// Permission bits (and setuid, setgid, sticky).
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub mtime: u64,
    /// Content length (regular files only; 0 otherwise).
    pub size: u64,
    /// Symlink target, or the hard link's target path.
    pub link: String,
    pub dev: (u32, u32),
    pub xattrs: Vec<(String, Vec<u8>)>,
    /// The package's `APK-TOOLS.checksum.SHA1` of the content.
    pub sha1: Option<[u8; 20]>,
    /// Where the content starts in the tar.
    pub offset: u64,
}

/// First bytes of an index file; a new layout gets a new number.
const MAGIC: &[u8; 8] = b"PLTIDX1\n";

/// What a ustar numeric field of `digits` octal digits keeps of `v`: the tar writer leaves a
/// value that does not fit as zero, and the index must say what the tar says.
fn fits(v: u32, digits: u32) -> u32 {
    if u64::from(v) < 8u64.pow(digits) {
        v
    } else {
        0
    }
}

fn kind_code(k: Kind) -> u8 {
    match k {
        Kind::File => 0,
        Kind::HardLink => 1,
        Kind::Symlink => 2,
        Kind::Char => 3,
        Kind::Block => 4,
        Kind::Dir => 5,
        Kind::Fifo => 6,
    }
}

fn kind_from(c: u8) -> Option<Kind> {
    Some(match c {
        0 => Kind::File,
        1 => Kind::HardLink,
        2 => Kind::Symlink,
        3 => Kind::Char,
        4 => Kind::Block,
        5 => Kind::Dir,
        6 => Kind::Fifo,
        _ => return None,
    })
}

/// The index file's bytes: the magic, the entry count, then each entry's fields in a fixed
/// little-endian layout with length-prefixed strings.
pub fn encode_index(entries: &[CachedEntry]) -> Vec<u8> {
    let mut out = Vec::with_capacity(64 + entries.len() * 96);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&(entries.len() as u64).to_le_bytes());
    let bytes = |out: &mut Vec<u8>, b: &[u8]| {
        out.extend_from_slice(&(b.len() as u32).to_le_bytes());
        out.extend_from_slice(b);
    };
    for e in entries {
        out.push(kind_code(e.kind));
        for v in [e.mode, e.uid, e.gid, e.dev.0, e.dev.1] {
            out.extend_from_slice(&v.to_le_bytes());
        }
        for v in [e.mtime, e.size, e.offset] {
            out.extend_from_slice(&v.to_le_bytes());
        }
        match &e.sha1 {
            Some(s) => {
                out.push(1);
                out.extend_from_slice(s);
            }
            None => out.push(0),
        }
        bytes(&mut out, e.path.as_bytes());
        bytes(&mut out, e.link.as_bytes());
        out.extend_from_slice(&(e.xattrs.len() as u32).to_le_bytes());
        for (k, v) in &e.xattrs {
            bytes(&mut out, k.as_bytes());
            bytes(&mut out, v);
        }
    }
    out
}

/// Read an index written by [`encode_index`]; `None` for anything else (another format, a cut
/// file), and the caller then reads the tar instead.
pub fn decode_index(b: &[u8]) -> Option<Vec<CachedEntry>> {
    struct Cur<'a>(&'a [u8]);
    impl<'a> Cur<'a> {
        fn take(&mut self, n: usize) -> Option<&'a [u8]> {
            if self.0.len() < n {
                return None;
            }
            let (a, b) = self.0.split_at(n);
            self.0 = b;
            Some(a)
        }
        fn u8(&mut self) -> Option<u8> {
            Some(self.take(1)?[0])
        }
        fn u32(&mut self) -> Option<u32> {
            Some(u32::from_le_bytes(self.take(4)?.try_into().ok()?))
        }
        fn u64(&mut self) -> Option<u64> {
            Some(u64::from_le_bytes(self.take(8)?.try_into().ok()?))
        }
        fn bytes(&mut self) -> Option<&'a [u8]> {
            let n = self.u32()? as usize;
            self.take(n)
        }
        fn string(&mut self) -> Option<String> {
            String::from_utf8(self.bytes()?.to_vec()).ok()
        }
    }
    let mut c = Cur(b);
    if c.take(MAGIC.len())? != MAGIC {
        return None;
    }
    let n = c.u64()?;
    // Every entry takes at least 54 bytes: a count larger than the file allows is a bad file,
    // not a reason to reserve memory.
    if n > (b.len() / 54) as u64 {
        return None;
    }
    let mut out = Vec::with_capacity(n as usize);
    for _ in 0..n {
        let kind = kind_from(c.u8()?)?;
        let (mode, uid, gid, major, minor) = (c.u32()?, c.u32()?, c.u32()?, c.u32()?, c.u32()?);
        let (mtime, size, offset) = (c.u64()?, c.u64()?, c.u64()?);
        let sha1 = match c.u8()? {
            0 => None,
            1 => Some(c.take(20)?.try_into().ok()?),
            _ => return None,
        };
        let path = c.string()?;
        let link = c.string()?;
        let nx = c.u32()?;
        let mut xattrs = Vec::new();
        for _ in 0..nx {
            let k = c.string()?;
            xattrs.push((k, c.bytes()?.to_vec()));
        }
        out.push(CachedEntry {
            path,
            kind,
            mode,
            uid,
            gid,
            mtime,
            size,
            link,
            dev: (major, minor),
            xattrs,
            sha1,
            offset,
        });
    }
    c.0.is_empty().then_some(out)
}

/// Ends a cache file: this magic, then the control and index lengths (little-endian u64).
const TRAILER_MAGIC: &[u8; 8] = b"PLTCACH1";
const TRAILER_LEN: u64 = 24;

/// The control bytes and entries of a cache file written by [`cache_package`]; `None` when the
/// file is missing or is not one (a plain tar, a cut file, another format).
pub fn read_cached(path: &Path) -> io::Result<Option<(Vec<u8>, Vec<CachedEntry>)>> {
    use std::os::unix::fs::FileExt as _;
    let f = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let len = f.metadata()?.len();
    if len < TRAILER_LEN {
        return Ok(None);
    }
    let mut t = [0u8; TRAILER_LEN as usize];
    f.read_exact_at(&mut t, len - TRAILER_LEN)?;
    if &t[..8] != TRAILER_MAGIC {
        return Ok(None);
    }
    let n = |b: &[u8]| u64::from_le_bytes(b.try_into().expect("8 bytes"));
    let (ctl_len, idx_len) = (n(&t[8..16]), n(&t[16..24]));
    let Some(meta_len) = ctl_len
        .checked_add(idx_len)
        .filter(|m| *m <= len - TRAILER_LEN)
    else {
        return Ok(None);
    };
    let mut meta = vec![0u8; meta_len as usize];
    f.read_exact_at(&mut meta, len - TRAILER_LEN - meta_len)?;
    let index = meta.split_off(ctl_len as usize);
    Ok(decode_index(&index).map(|entries| (meta, entries)))
}

/// The entries of a cached data tar: from its index when it is a cache file, else read from
/// the tar itself.
pub fn cached_entries(tar: &Path) -> io::Result<Vec<CachedEntry>> {
    match read_cached(tar)? {
        Some((_, entries)) => Ok(entries),
        None => scan_data_tar(tar),
    }
}

/// Walk a cached data tar (headers only matter; contents are passed over) into its entries.
pub fn scan_data_tar(tar_path: &Path) -> io::Result<Vec<CachedEntry>> {
    // Buffered and read straight through: far fewer syscalls than seeking past contents.
    let mut ar = tar::Archive::new(io::BufReader::with_capacity(
        256 << 10,
        File::open(tar_path)?,
    ));
    let mut out = Vec::new();
    for e in ar.entries()? {
        let mut e = e?;
        let raw = String::from_utf8_lossy(&e.path_bytes()).into_owned();
        let path = raw.trim_matches('/').to_string();
        let mut sha1 = None;
        let mut xattrs = vec![];
        if let Some(exts) = e.pax_extensions()? {
            for x in exts.flatten() {
                match x.key() {
                    Ok("APK-TOOLS.checksum.SHA1") => {
                        sha1 = x.value().ok().and_then(hex_20);
                    }
                    Ok(k) if k.starts_with("SCHILY.xattr.") => xattrs.push((
                        k["SCHILY.xattr.".len()..].to_string(),
                        x.value_bytes().to_vec(),
                    )),
                    _ => {}
                }
            }
        }
        let h = e.header();
        let kind = match h.entry_type() {
            tar::EntryType::Directory => Kind::Dir,
            tar::EntryType::Symlink => Kind::Symlink,
            tar::EntryType::Link => Kind::HardLink,
            tar::EntryType::Char => Kind::Char,
            tar::EntryType::Block => Kind::Block,
            tar::EntryType::Fifo => Kind::Fifo,
            _ => Kind::File,
        };
        let link = e
            .link_name_bytes()
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default();
        out.push(CachedEntry {
            path,
            kind,
            mode: h.mode()? & 0o7777,
            uid: h.uid()? as u32,
            gid: h.gid()? as u32,
            mtime: h.mtime().unwrap_or(0),
            size: if kind == Kind::File { h.size()? } else { 0 },
            link,
            dev: (
                h.device_major().ok().flatten().unwrap_or(0),
                h.device_minor().ok().flatten().unwrap_or(0),
            ),
            xattrs,
            sha1,
            offset: e.raw_file_position(),
        });
    }
    Ok(out)
}

pub(crate) fn hex_20(v: &str) -> Option<[u8; 20]> {
    let v = v.trim();
    if v.len() != 40 {
        return None;
    }
    let mut out = [0u8; 20];
    for i in 0..20 {
        out[i] = u8::from_str_radix(&v[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(out)
}

/// Counts what passes through, so each entry's content offset is known as it is written.
struct Counting<W> {
    inner: W,
    n: u64,
}

impl<W: Write> Write for Counting<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.n += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Why a package was not cached.
#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    /// Reading or verifying the package failed.
    #[error(transparent)]
    Apk(#[from] pallet_apk_stream::ApkError),
    /// The caller's `control` refused the package (its identity is not the expected one, say).
    #[error("{0}")]
    Refused(String),
}

impl From<io::Error> for CacheError {
    fn from(e: io::Error) -> Self {
        CacheError::Apk(e.into())
    }
}

/// Verify a package and cache it at `out` (see the module doc): its data section as an
/// uncompressed tar of normalised entries, then the bytes `control` makes of its metadata
/// (or its refusal, and then nothing is kept), then the entry index. Written under a temporary
/// name and renamed, so a killed build never leaves a partial file. Returns the package's
/// control metadata and the entries.
pub fn cache_package<R: Read>(
    apk: R,
    opts: &pallet_apk_stream::ReadOptions<'_>,
    out: &Path,
    control: impl FnOnce(&pallet_apk_stream::ApkMeta) -> Result<Vec<u8>, String>,
) -> Result<(pallet_apk_stream::ApkMeta, Vec<CachedEntry>), CacheError> {
    let dir = out.parent().unwrap_or(Path::new("."));
    // A locked temporary: removed on every error path by its Drop, and swept by the next build
    // if this process is killed.
    let mut tmp = pallet_atomic::TempFile::new_in(dir, "data.tar")?;
    let mut w = Counting {
        inner: io::BufWriter::with_capacity(256 << 10, tmp.file().try_clone()?),
        n: 0,
    };
    let mut entries = Vec::new();
    let res = pallet_apk_stream::read_apk(apk, opts, |e, r| {
        let mut pax: Vec<(String, Vec<u8>)> = Vec::new();
        if let Some(s) = e.sha1 {
            pax.push((
                "APK-TOOLS.checksum.SHA1".into(),
                hex::encode(s).into_bytes(),
            ));
        }
        for (k, v) in &e.xattrs {
            pax.push((format!("SCHILY.xattr.{k}"), v.clone()));
        }
        let h = EntryHeader {
            path: &e.path,
            kind: e.kind,
            mode: e.mode,
            uid: e.uid,
            gid: e.gid,
            uname: &e.uname,
            gname: &e.gname,
            mtime: e.mtime,
            size: e.size,
            link: &e.link,
            dev_major: e.dev_major,
            dev_minor: e.dev_minor,
            pax: &pax,
        };
        tarw::write_header(&mut w, &h)?;
        let offset = w.n;
        if e.kind == Kind::File {
            let n = io::copy(r, &mut w)?;
            if n != e.size {
                return Err(pallet_apk_stream::ApkError::Format(format!(
                    "{}: short file",
                    e.path
                )));
            }
            w.write_all(&[0u8; 512][..tarw::padding(n)])?;
        }
        // What the tar says, field by field (see `fits`): 7 octal digits for ids and device
        // numbers, 11 for the time.
        let dev = matches!(e.kind, Kind::Char | Kind::Block);
        entries.push(CachedEntry {
            path: e.path.trim_matches('/').to_string(),
            kind: e.kind,
            mode: e.mode & 0o7777,
            uid: fits(e.uid, 7),
            gid: fits(e.gid, 7),
            mtime: e.mtime.min(0o77777777777),
            size: if e.kind == Kind::File { e.size } else { 0 },
            link: e.link.clone(),
            dev: if dev {
                (fits(e.dev_major, 7), fits(e.dev_minor, 7))
            } else {
                (0, 0)
            },
            xattrs: e.xattrs.clone(),
            sha1: e.sha1,
            offset,
        });
        Ok(())
    });
    let meta = res?;
    let ctl = control(&meta).map_err(CacheError::Refused)?;
    let index = encode_index(&entries);
    tarw::write_end(&mut w)?;
    w.write_all(&ctl)?;
    w.write_all(&index)?;
    w.write_all(TRAILER_MAGIC)?;
    w.write_all(&(ctl.len() as u64).to_le_bytes())?;
    w.write_all(&(index.len() as u64).to_le_bytes())?;
    drop(w.inner.into_inner().map_err(|e| e.into_error())?);
    // A cut file has no trailer and reads as a miss, so no sync (see `persist_unsynced`).
    tmp.persist_unsynced(out)?;
    Ok((meta, entries))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(path: &str, kind: Kind) -> CachedEntry {
        CachedEntry {
            path: path.into(),
            kind,
            mode: 0o755,
            uid: 0,
            gid: 0,
            mtime: 1,
            size: 0,
            link: String::new(),
            dev: (0, 0),
            xattrs: vec![],
            sha1: None,
            offset: 0,
        }
    }

    #[test]
    fn the_index_round_trips_and_refuses_what_it_did_not_write() {
        let v = vec![
            entry("usr", Kind::Dir),
            CachedEntry {
                size: 5,
                offset: 1536,
                sha1: Some([7; 20]),
                xattrs: vec![("security.capability".into(), vec![1, 2, 3])],
                ..entry("usr/bin/x", Kind::File)
            },
            CachedEntry {
                link: "x".into(),
                ..entry("usr/bin/y", Kind::Symlink)
            },
        ];
        let b = encode_index(&v);
        assert_eq!(decode_index(&b).unwrap(), v);
        for cut in [0, 7, 8, 20, b.len() - 1] {
            assert!(decode_index(&b[..cut]).is_none(), "{cut}");
        }
        let mut longer = b.clone();
        longer.push(0);
        assert!(decode_index(&longer).is_none());
    }

    #[test]
    fn a_plain_tar_is_not_taken_for_a_cache_file() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("x.tar");
        std::fs::write(&p, [0u8; 1024]).unwrap();
        assert!(read_cached(&p).unwrap().is_none());
        assert!(read_cached(&d.path().join("missing")).unwrap().is_none());
        let mut b = vec![0u8; 1024];
        b.extend_from_slice(b"ctl");
        b.extend_from_slice(&encode_index(&[entry("a", Kind::Dir)]));
        let idx_len = b.len() as u64 - 1027;
        b.extend_from_slice(TRAILER_MAGIC);
        b.extend_from_slice(&3u64.to_le_bytes());
        b.extend_from_slice(&idx_len.to_le_bytes());
        std::fs::write(&p, &b).unwrap();
        let (ctl, entries) = read_cached(&p).unwrap().unwrap();
        assert_eq!((ctl.as_slice(), entries.len()), (&b"ctl"[..], 1));
        // Lengths that do not fit the file.
        let n = b.len();
        b[n - 8..].copy_from_slice(&u64::MAX.to_le_bytes());
        std::fs::write(&p, &b).unwrap();
        assert!(read_cached(&p).unwrap().is_none());
    }

    #[test]
    fn ids_that_do_not_fit_a_ustar_field_read_back_as_zero() {
        assert_eq!(fits(0o7777777, 7), 0o7777777);
        assert_eq!(fits(0o10000000, 7), 0);
    }
}
