//! Writing `.apk` packages deterministically: sorted entries, clamped mtimes, root owners, a
//! fixed gzip header, PAX checksums on every file and symlink, and cut control and signature
//! tars (format notes §1.7).

use std::collections::{BTreeMap, HashMap};
use std::fs::{self, File};
use std::io::{self, BufReader, BufWriter, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use flate2::{Compression, GzBuilder};
use pallet_apk_types::{PackageInfo, checksum};
use pallet_keys::{SigAlg, SigningKey};
use sha1::Digest as _;

use crate::hashing::HashingReader;
use crate::tarw::{self, EntryHeader, Kind};

#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{path}: {what}")]
    Unsupported { path: PathBuf, what: String },
    #[error(transparent)]
    Key(#[from] pallet_keys::KeyError),
    #[error("{path} is not a valid package: {reason}")]
    BadInput { path: PathBuf, reason: String },
    #[error("invalid package metadata: {0}")]
    Metadata(String),
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> WriteError + '_ {
    move |source| WriteError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Feeds written bytes to a digest (RustCrypto 0.11 digests no longer implement `Write`).
pub struct HashWriter<'a, D>(pub &'a mut D);

impl<D: sha1::Digest> Write for HashWriter<'_, D> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.update(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// How to write a package.
#[derive(Debug)]
pub struct WriteOptions<'a> {
    /// Every mtime is clamped to this (`SOURCE_DATE_EPOCH`).
    pub source_date_epoch: u64,
    pub signing_key: Option<&'a SigningKey>,
    pub sig_alg: SigAlg,
    /// gzip level for the data section.
    pub level: u32,
    /// Carry the extended attributes of the staged files and folders as `SCHILY.xattr.*` PAX
    /// records, as melange does with its workspace (minus [`crate::xattr::IGNORED`]).
    pub read_xattrs: bool,
    /// Extended attributes to give entries whatever the files carry, by package-relative path
    /// (`usr/bin/ping`): melange's `package.setcap` becomes `security.capability` here. They
    /// replace a staged attribute of the same name.
    pub xattrs: BTreeMap<String, Vec<(String, Vec<u8>)>>,
}

impl Default for WriteOptions<'_> {
    fn default() -> Self {
        WriteOptions {
            source_date_epoch: 0,
            signing_key: None,
            sig_alg: SigAlg::RsaSha256,
            level: 9,
            read_xattrs: false,
            xattrs: BTreeMap::new(),
        }
    }
}

/// What was written.
#[derive(Clone, Debug)]
pub struct Written {
    /// The final metadata: installed size, datahash, file size and identity filled in.
    pub info: PackageInfo,
}

/// The gzip member header every section gets: no name, mtime 0, a fixed OS byte.
fn gz<W: Write>(w: W, level: u32) -> flate2::write::GzEncoder<W> {
    GzBuilder::new()
        .mtime(0)
        .operating_system(3)
        .write(w, Compression::new(level))
}

fn gzip_bytes(data: &[u8], level: u32) -> Vec<u8> {
    let mut e = gz(Vec::new(), level);
    e.write_all(data).expect("writing to a Vec cannot fail");
    e.finish().expect("writing to a Vec cannot fail")
}

fn root_header(path: &str, kind: Kind, mode: u32, mtime: u64) -> EntryHeader<'_> {
    EntryHeader {
        kind,
        ..EntryHeader::file(path, mode, mtime, 0)
    }
}

/// A staged tree walked in the order the package lists it: depth first, names sorted by bytes.
fn walk(root: &Path) -> Result<Vec<(String, PathBuf, fs::Metadata)>, WriteError> {
    let mut out = Vec::new();
    for e in walkdir::WalkDir::new(root)
        .min_depth(1)
        .follow_links(false)
        .sort_by(|a, b| a.file_name().cmp(b.file_name()))
    {
        let e = e.map_err(|e| WriteError::Io {
            path: e.path().unwrap_or(root).to_path_buf(),
            source: e
                .into_io_error()
                .unwrap_or_else(|| io::Error::other("walk failed")),
        })?;
        let rel = e
            .path()
            .strip_prefix(root)
            .expect("walkdir yields paths under its root");
        let rel = rel.to_str().ok_or_else(|| WriteError::Unsupported {
            path: e.path().to_path_buf(),
            what: "file name is not UTF-8".into(),
        })?;
        let md = e.metadata().map_err(|err| WriteError::Io {
            path: e.path().to_path_buf(),
            source: err.into(),
        })?;
        out.push((rel.to_string(), e.path().to_path_buf(), md));
    }
    Ok(out)
}

/// Write the data tar of `root` into `w`, returning the installed size.
fn write_data_tar<W: Write>(
    root: &Path,
    opts: &WriteOptions<'_>,
    w: &mut W,
) -> Result<u64, WriteError> {
    let epoch = opts.source_date_epoch;
    // The xattr PAX records of a file or folder (melange gives them to no other entry type),
    // sorted by name as Go's archive/tar writes its records.
    let xattr_records = |rel: &str, path: &Path| -> Result<Vec<(String, Vec<u8>)>, WriteError> {
        let mut attrs: BTreeMap<String, Vec<u8>> = if opts.read_xattrs {
            crate::xattr::read(path)
                .map_err(io_err(path))?
                .into_iter()
                .collect()
        } else {
            BTreeMap::new()
        };
        if let Some(extra) = opts.xattrs.get(rel) {
            attrs.extend(extra.iter().cloned());
        }
        Ok(attrs
            .into_iter()
            .map(|(k, v)| (format!("SCHILY.xattr.{k}"), v))
            .collect())
    };
    let mut size = 0u64;
    let mut inodes: HashMap<(u64, u64), String> = HashMap::new();
    for (rel, path, md) in walk(root)? {
        let ft = md.file_type();
        let mode = md.mode() & 0o7777;
        let mtime = (md.mtime().max(0) as u64).min(epoch);
        let hardlink_to = if ft.is_file() && md.nlink() > 1 {
            let key = (md.dev(), md.ino());
            match inodes.get(&key) {
                Some(first) => Some(first.clone()),
                None => {
                    inodes.insert(key, rel.clone());
                    None
                }
            }
        } else {
            None
        };
        let mut h = root_header(&rel, Kind::Dir, mode, mtime);
        if ft.is_dir() {
            let pax = xattr_records(&rel, &path)?;
            h.pax = &pax;
            tarw::write_header(w, &h).map_err(io_err(&path))?;
        } else if ft.is_symlink() {
            let target = fs::read_link(&path).map_err(io_err(&path))?;
            let target = target.to_str().ok_or_else(|| WriteError::Unsupported {
                path: path.clone(),
                what: "symlink target is not UTF-8".into(),
            })?;
            let sum = hex::encode(sha1::Sha1::digest(target.as_bytes()));
            let pax = [("APK-TOOLS.checksum.SHA1".to_string(), sum.into_bytes())];
            h.kind = Kind::Symlink;
            h.mode = 0o777;
            h.link = target;
            h.pax = &pax;
            tarw::write_header(w, &h).map_err(io_err(&path))?;
        } else if ft.is_file() {
            if let Some(first) = &hardlink_to {
                h.kind = Kind::HardLink;
                h.link = first;
                tarw::write_header(w, &h).map_err(io_err(&path))?;
                continue;
            }
            // Hash first, then stream: files can be large and must not be held in memory.
            let mut f = File::open(&path).map_err(io_err(&path))?;
            let mut hasher = sha1::Sha1::new();
            let n = io::copy(&mut f, &mut HashWriter(&mut hasher)).map_err(io_err(&path))?;
            let mut pax = vec![(
                "APK-TOOLS.checksum.SHA1".to_string(),
                hex::encode(hasher.finalize()).into_bytes(),
            )];
            pax.extend(xattr_records(&rel, &path)?);
            h.kind = Kind::File;
            h.size = n;
            h.pax = &pax;
            tarw::write_header(w, &h).map_err(io_err(&path))?;
            f.seek(SeekFrom::Start(0)).map_err(io_err(&path))?;
            let copied = io::copy(&mut (&mut f).take(n), w).map_err(io_err(&path))?;
            if copied != n {
                return Err(WriteError::Unsupported {
                    path,
                    what: "file changed size while being packed".into(),
                });
            }
            w.write_all(&[0u8; 512][..tarw::padding(n)])
                .map_err(io_err(&path))?;
            size += n;
        } else if ft.is_fifo() {
            h.kind = Kind::Fifo;
            tarw::write_header(w, &h).map_err(io_err(&path))?;
        } else if ft.is_char_device() || ft.is_block_device() {
            h.kind = if ft.is_char_device() {
                Kind::Char
            } else {
                Kind::Block
            };
            let rdev = md.rdev();
            h.dev_major = libc_major(rdev);
            h.dev_minor = libc_minor(rdev);
            tarw::write_header(w, &h).map_err(io_err(&path))?;
        } else {
            return Err(WriteError::Unsupported {
                path,
                what: "sockets cannot be packaged".into(),
            });
        }
    }
    tarw::write_end(w).map_err(io_err(root))?;
    Ok(size)
}

fn libc_major(dev: u64) -> u32 {
    (((dev >> 32) & 0xffff_f000) | ((dev >> 8) & 0x0000_0fff)) as u32
}
fn libc_minor(dev: u64) -> u32 {
    (((dev >> 12) & 0xffff_ff00) | (dev & 0x0000_00ff)) as u32
}

/// A cut tar (no end blocks) of small in-memory entries, gzipped.
fn cut_tar_gz(entries: &[(&str, &[u8], u32)], epoch: u64, level: u32) -> Vec<u8> {
    let mut tar = Vec::new();
    for (name, data, mode) in entries {
        let h = root_header(name, Kind::File, *mode, epoch);
        tarw::write_entry(&mut tar, &h, data).expect("writing to a Vec cannot fail");
    }
    gzip_bytes(&tar, level)
}

/// The signature member for `signed` bytes.
pub fn signature_member(
    key: &SigningKey,
    alg: SigAlg,
    signed: &[u8],
    epoch: u64,
) -> Result<Vec<u8>, WriteError> {
    let sig = key.sign(alg, signed)?;
    let name = format!(".SIGN.{}.{}", alg.entry_type(), key.key_name);
    Ok(cut_tar_gz(&[(&name, &sig, 0o644)], epoch, 9))
}

/// Write `parts` then the content of `tail` to `out` atomically: a locked temporary beside it
/// (swept by a later build if this one is killed), renamed into place when complete.
fn assemble(out: &Path, parts: &[&[u8]], tail: Option<&mut File>) -> Result<u64, WriteError> {
    let err = |source| WriteError::Io {
        path: out.to_path_buf(),
        source,
    };
    let dir = out
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let hint = out
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut tmp = pallet_atomic::TempFile::new_in(dir, &hint).map_err(err)?;
    let result = (|| -> io::Result<u64> {
        let mut w = BufWriter::new(tmp.file().try_clone()?);
        let mut n = 0u64;
        for p in parts {
            w.write_all(p)?;
            n += p.len() as u64;
        }
        if let Some(t) = tail {
            t.seek(SeekFrom::Start(0))?;
            n += io::copy(t, &mut w)?;
        }
        w.flush()?;
        Ok(n)
    })();
    let n = result.map_err(err)?;
    tmp.persist(out).map_err(err)?;
    Ok(n)
}

/// Build a package from the staged tree `root` with metadata `info` and install scripts
/// (`(".post-install", bytes)` …), writing it atomically to `out`.
pub fn write_apk(
    root: &Path,
    info: &PackageInfo,
    scripts: &[(String, Vec<u8>)],
    opts: &WriteOptions<'_>,
    out: &Path,
) -> Result<Written, WriteError> {
    if info.name.is_empty() {
        return Err(WriteError::Metadata("the package has no name".into()));
    }
    if !pallet_apk_types::version::is_valid(&info.version) {
        return Err(WriteError::Metadata(format!(
            "'{}' is not a valid APK version (e.g. 1.2.3-r0)",
            info.version
        )));
    }
    let dir = out
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let mut data_file = tempfile::tempfile_in(dir).map_err(io_err(dir))?;
    let installed = {
        let mut enc = crate::pgzip::ParGzWriter::new(BufWriter::new(&mut data_file), opts.level);
        let size = write_data_tar(root, opts, &mut enc)?;
        let bw = enc.finish().map_err(io_err(out))?;
        bw.into_inner().map_err(|e| WriteError::Io {
            path: out.to_path_buf(),
            source: e.into_error(),
        })?;
        size
    };
    data_file.seek(SeekFrom::Start(0)).map_err(io_err(out))?;
    let mut sha = sha2::Sha256::new();
    io::copy(&mut data_file, &mut HashWriter(&mut sha)).map_err(io_err(out))?;
    let mut info = info.clone();
    // apk does not unpack a package whose size is 0, so a package with only empty files or
    // only directories still declares one byte, as abuild does.
    info.installed_size = installed.max(1);
    info.datahash = Some(hex::encode(sha.finalize()));
    info.checksum = None;
    info.file_size = 0;
    let pkginfo = info.to_pkginfo();
    let mut control_entries: Vec<(&str, &[u8], u32)> =
        vec![(".PKGINFO", pkginfo.as_bytes(), 0o644)];
    let mut sorted: Vec<&(String, Vec<u8>)> = scripts.iter().collect();
    sorted.sort_by(|a, b| a.0.cmp(&b.0));
    for (name, data) in sorted {
        // Install scripts are executable; other control files (melange's `.melange.yaml`) not.
        let script = [
            ".pre-install",
            ".post-install",
            ".pre-deinstall",
            ".post-deinstall",
            ".pre-upgrade",
            ".post-upgrade",
            ".trigger",
        ];
        let mode = if script.contains(&name.as_str()) {
            0o755
        } else {
            0o644
        };
        control_entries.push((name, data, mode));
    }
    let control = cut_tar_gz(&control_entries, opts.source_date_epoch, 9);
    let sig = match opts.signing_key {
        Some(k) => signature_member(k, opts.sig_alg, &control, opts.source_date_epoch)?,
        None => Vec::new(),
    };
    let size = assemble(out, &[&sig, &control], Some(&mut data_file))?;
    info.checksum = Some(checksum::q1(&sha1::Sha1::digest(&control)));
    info.file_size = size;
    Ok(Written { info })
}

/// Sign (or re-sign) a package in place: any existing signature member is replaced. The
/// signature entry's time is `epoch`, or with `None` the package's own `builddate` (as
/// `melange sign` stamps it; 0 when the package has none).
pub fn resign_apk(
    path: &Path,
    key: &SigningKey,
    alg: SigAlg,
    epoch: Option<u64>,
) -> Result<(), WriteError> {
    let bad = |reason: String| WriteError::BadInput {
        path: path.to_path_buf(),
        reason,
    };
    let f = File::open(path).map_err(io_err(path))?;
    let mut hr = HashingReader::new(BufReader::new(f));
    // Find where the signature member (if any) ends, by decoding the first member.
    let mut first = Vec::new();
    flate2::bufread::GzDecoder::new(&mut hr)
        .take(10 << 20)
        .read_to_end(&mut first)
        .map_err(|e| bad(e.to_string()))?;
    let first_end = hr.offset;
    let signed = first.starts_with(b".SIGN.");
    let body_start = if signed { first_end } else { 0 };
    // Decode the control member to learn whether the package has a datahash.
    let mut f = File::open(path).map_err(io_err(path))?;
    f.seek(SeekFrom::Start(body_start)).map_err(io_err(path))?;
    let mut hr = HashingReader::new(BufReader::new(f));
    hr.taps.copy = Some(Vec::new());
    let mut control = Vec::new();
    flate2::bufread::GzDecoder::new(&mut hr)
        .take(10 << 20)
        .read_to_end(&mut control)
        .map_err(|e| bad(e.to_string()))?;
    let control_bytes = hr.taps.copy.take().unwrap_or_default();
    let text = String::from_utf8_lossy(&control);
    let has_datahash = text.contains("\ndatahash = ");
    let epoch = epoch.unwrap_or_else(|| {
        text.split('\n')
            .find_map(|l| l.strip_prefix("builddate = "))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0)
    });
    let mut rest = File::open(path).map_err(io_err(path))?;
    rest.seek(SeekFrom::Start(body_start))
        .map_err(io_err(path))?;
    let sig = if has_datahash {
        signature_member(key, alg, &control_bytes, epoch)?
    } else {
        let mut all = Vec::new();
        rest.read_to_end(&mut all).map_err(io_err(path))?;
        rest.seek(SeekFrom::Start(body_start))
            .map_err(io_err(path))?;
        signature_member(key, alg, &all, epoch)?
    };
    // Copy the body into a temp file so the original can be replaced atomically.
    let mut body = tempfile::tempfile().map_err(io_err(path))?;
    io::copy(&mut rest, &mut body).map_err(io_err(path))?;
    assemble(path, &[&sig], Some(&mut body))?;
    Ok(())
}
