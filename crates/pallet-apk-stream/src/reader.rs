//! Reading and verifying `.apk` packages and signed `APKINDEX.tar.gz` files in one streaming
//! pass, following apk-tools' verification state machine (format notes §1.6).

use std::io::{self, BufRead, BufReader, Read};

use flate2::bufread::{GzDecoder, MultiGzDecoder};
use pallet_apk_types::{PackageInfo, checksum};
use pallet_keys::{Keyring, Lookup, PublicKey, SigAlg};
use sha1::Digest as _;

use crate::hashing::{HashingReader, Taps};
use crate::tarw::Kind;

/// Why a package or index was refused.
#[derive(Debug, thiserror::Error)]
pub enum ApkError {
    #[error("IO ERROR: {0}")]
    Io(#[from] io::Error),
    #[error("bad format: {0}")]
    Format(String),
    #[error("BAD signature (key {key})")]
    BadSignature { key: String },
    #[error("UNTRUSTED: no key in the keyring matches {}", if keys.is_empty() { "(no signature)".to_string() } else { keys.join(", ") })]
    Untrusted { keys: Vec<String> },
    #[error("BAD signature: the data section does not match its datahash")]
    BadDatahash,
    #[error("BAD checksum: {path}")]
    BadChecksum { path: String },
    #[error("malicious entry '{path}': {reason}")]
    Malicious { path: String, reason: &'static str },
    #[error("{what} is larger than the limit of {limit} bytes")]
    TooLarge { what: &'static str, limit: u64 },
    #[error("{0}")]
    Extract(String),
}

/// What the signature check concluded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Trust {
    /// A signature by a key in the keyring verified.
    Verified { key: String, alg: SigAlg },
    /// Signatures were not checked (no keyring given).
    NotChecked,
}

/// Limits and checks for reading.
#[derive(Clone, Debug)]
pub struct ReadOptions<'a> {
    /// Keys to verify against; `None` skips the signature check (never the checksums).
    pub keyring: Option<&'a Keyring>,
    /// Largest decompressed signature or control section.
    pub max_control_size: u64,
    /// Largest decompressed data section.
    pub max_data_size: u64,
    /// Stop after the control section (what `apk index` does).
    pub control_only: bool,
}

/// Default largest decompressed signature or control section: apk-tools' own control sections
/// are a few KiB; 10 MiB is apko's default for `--max-apk-control-size`.
pub const DEFAULT_MAX_CONTROL_SIZE: u64 = 10 << 20;
/// Default largest decompressed data section: the biggest real packages (toolchains, CUDA) are
/// a few GiB unpacked; 16 GiB is apko's default for `--max-apk-data-size`. This bound, not a
/// ratio, is what stops a decompression bomb: deflate cannot expand more than about 1032:1, so
/// a bomb needs a large download too, and the download is bounded by the index's size field.
pub const DEFAULT_MAX_DATA_SIZE: u64 = 16 << 30;
/// Longest entry path: Linux's PATH_MAX; no longer name could be created in the image anyway.
pub const MAX_PATH_BYTES: usize = 4096;
/// Deepest entry path, in components: real packages stay under 30; deeper trees only serve to
/// make every later walk of the image slow or overflow a recursive one.
pub const MAX_PATH_DEPTH: usize = 256;
/// Most entries in one data section: the largest Wolfi and Alpine packages hold about 100,000
/// files; each entry costs memory in the installed database and the image tree.
pub const MAX_ENTRIES: usize = 2_000_000;

static DEFAULT_MAX_CONTROL: std::sync::atomic::AtomicU64 =
    std::sync::atomic::AtomicU64::new(DEFAULT_MAX_CONTROL_SIZE);
static DEFAULT_MAX_DATA: std::sync::atomic::AtomicU64 =
    std::sync::atomic::AtomicU64::new(DEFAULT_MAX_DATA_SIZE);

/// Set, for this process, the limits [`ReadOptions::default`] starts from (10 MiB control,
/// 16 GiB data unless set); `u64::MAX` for none. apko's `--max-apk-control-size` and
/// `--max-apk-data-size`.
pub fn set_default_limits(max_control_size: u64, max_data_size: u64) {
    use std::sync::atomic::Ordering::Relaxed;
    DEFAULT_MAX_CONTROL.store(max_control_size, Relaxed);
    DEFAULT_MAX_DATA.store(max_data_size, Relaxed);
}

impl Default for ReadOptions<'_> {
    fn default() -> Self {
        use std::sync::atomic::Ordering::Relaxed;
        ReadOptions {
            keyring: None,
            max_control_size: DEFAULT_MAX_CONTROL.load(Relaxed),
            max_data_size: DEFAULT_MAX_DATA.load(Relaxed),
            control_only: false,
        }
    }
}

/// Everything the signature and control sections say, plus the hashes of the sections.
#[derive(Clone, Debug)]
pub struct ApkMeta {
    pub info: PackageInfo,
    /// The package identity (`C:`), `Q1` + base64 SHA-1 of the compressed control member.
    pub identity: String,
    /// Install scripts by control name (`.post-install`, …), and `.trigger`.
    pub scripts: Vec<(String, Vec<u8>)>,
    pub trust: Trust,
    /// Size of the whole file; known only when the data section was read.
    pub file_size: Option<u64>,
}

/// One entry of the data section, as handed to the caller.
#[derive(Clone, Debug)]
pub struct DataEntry {
    /// Relative path, no leading `./` and no trailing `/`.
    pub path: String,
    pub kind: Kind,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub uname: String,
    pub gname: String,
    pub mtime: u64,
    pub size: u64,
    /// Symlink target, or the hard link's target path (relative, normalised).
    pub link: String,
    pub dev_major: u32,
    pub dev_minor: u32,
    pub xattrs: Vec<(String, Vec<u8>)>,
    /// The `APK-TOOLS.checksum.SHA1` value, raw 20 bytes.
    pub sha1: Option<[u8; 20]>,
}

struct Signature {
    alg: SigAlg,
    key: String,
    sig: Vec<u8>,
}

fn too_large(what: &'static str, limit: u64) -> ApkError {
    ApkError::TooLarge { what, limit }
}

/// Decompress one gzip member fully into memory, within `limit`.
fn read_member<R: BufRead>(r: R, limit: u64, what: &'static str) -> Result<Vec<u8>, ApkError> {
    let mut out = Vec::new();
    let mut d = GzDecoder::new(r).take(limit.saturating_add(1));
    d.read_to_end(&mut out)?;
    if out.len() as u64 > limit {
        return Err(too_large(what, limit));
    }
    Ok(out)
}

/// Parse a cut tar (no end blocks) held in memory into (name, content) pairs.
fn small_tar(bytes: &[u8]) -> Result<Vec<(String, Vec<u8>)>, ApkError> {
    let mut out = Vec::new();
    let mut ar = tar::Archive::new(bytes);
    for e in ar.entries()? {
        let mut e = e?;
        let name = String::from_utf8_lossy(&e.path_bytes()).into_owned();
        let mut data = Vec::new();
        e.read_to_end(&mut data)?;
        out.push((name, data));
    }
    Ok(out)
}

fn choose_key(sigs: Vec<Signature>, keyring: &Keyring) -> Result<(Signature, PublicKey), ApkError> {
    let names: Vec<String> = sigs.iter().map(|s| s.key.clone()).collect();
    // apk takes the first signature whose key file exists and parses, and checks only that one.
    for s in sigs {
        if let Lookup::Found(k) = keyring.lookup(&s.key) {
            return Ok((s, k));
        }
    }
    Err(ApkError::Untrusted { keys: names })
}

fn parse_signatures(entries: &[(String, Vec<u8>)]) -> Vec<Signature> {
    entries
        .iter()
        .filter_map(|(name, data)| {
            let (alg, key) = SigAlg::parse_entry(name)?;
            Some(Signature {
                alg,
                key: key.to_string(),
                sig: data.clone(),
            })
        })
        .collect()
}

/// Read a package from `r`, verifying as it goes, and hand each data entry with its content to
/// `on_entry`. The content reader is checked against the entry's PAX checksum after the callback
/// returns (whatever it did not read is read and hashed then), unless the data section was
/// checked against its datahash before any entry (a section small enough to hold: see
/// `read_data`); either way a callback that writes files must treat an `Err` from this
/// function as "discard what was written".
pub fn read_apk<R: Read>(
    r: R,
    opts: &ReadOptions<'_>,
    mut on_entry: impl FnMut(&DataEntry, &mut dyn Read) -> Result<(), ApkError>,
) -> Result<ApkMeta, ApkError> {
    let mut hr = HashingReader::new(BufReader::with_capacity(256 << 10, r));
    hr.copy_limit = opts.max_control_size as usize;
    if hr.at_eof()? {
        return Err(ApkError::Format("empty file".into()));
    }
    hr.taps = Taps {
        sha1: Some(sha1::Sha1::new()),
        copy: Some(Vec::new()),
        ..Taps::default()
    };
    let first = read_member(&mut hr, opts.max_control_size, "the first section")?;
    let first_entries = small_tar(&first)?;
    let signed = first_entries
        .first()
        .is_some_and(|(n, _)| n.starts_with(".SIGN."));
    let mut chosen: Option<(Signature, PublicKey)> = None;
    let control_entries = if signed {
        if let Some(k) = opts.keyring {
            chosen = Some(choose_key(parse_signatures(&first_entries), k)?);
        }
        hr.taps = Taps {
            sha1: Some(sha1::Sha1::new()),
            copy: Some(Vec::new()),
            sig: chosen
                .as_ref()
                .map(|(s, _)| pallet_keys::digest_context(s.alg)),
            ..Taps::default()
        };
        if hr.at_eof()? {
            return Err(ApkError::Format(
                "no control section after the signature".into(),
            ));
        }
        let control = read_member(&mut hr, opts.max_control_size, "the control section")?;
        small_tar(&control)?
    } else {
        if opts.keyring.is_some() {
            return Err(ApkError::Untrusted { keys: vec![] });
        }
        first_entries
    };
    if hr.copy_overflow {
        return Err(too_large("the control section", opts.max_control_size));
    }
    let control_copy = hr.taps.copy.take().unwrap_or_default();
    let control_sha1: [u8; 20] = hr.taps.sha1.take().unwrap_or_default().finalize().into();

    let mut info = None;
    let mut scripts = Vec::new();
    for (name, data) in control_entries {
        if name == ".PKGINFO" {
            let text = String::from_utf8_lossy(&data);
            info = Some(
                PackageInfo::parse_pkginfo(&text)
                    .map_err(|e| ApkError::Format(format!(".PKGINFO {e}")))?,
            );
        } else if name.starts_with('.') && !name.contains('/') {
            scripts.push((name, data));
        } else {
            return Err(ApkError::Format(format!(
                "'{name}' in the control section (only dot files belong there)"
            )));
        }
    }
    let info = info.ok_or_else(|| ApkError::Format("no .PKGINFO in the control section".into()))?;

    let mut trust = Trust::NotChecked;
    if let Some((sig, key)) = &chosen {
        if info.datahash.is_some() && !key.verify(sig.alg, &control_copy, &sig.sig) {
            return Err(ApkError::BadSignature {
                key: sig.key.clone(),
            });
        }
        trust = Trust::Verified {
            key: sig.key.clone(),
            alg: sig.alg,
        };
    }
    let identity_control = checksum::q1(&control_sha1);
    let mut meta = ApkMeta {
        identity: identity_control,
        info,
        scripts,
        trust,
        file_size: None,
    };
    if opts.control_only {
        if meta.info.datahash.is_none() && chosen.is_some() {
            // Without a datahash the signature covers the data too: read on to check it.
        } else {
            return Ok(meta);
        }
    }

    hr.taps.sha256 = Some(sha2::Sha256::new());
    hr.taps.copy = None;
    // Very old packages without datahash have an identity over control and data.
    if meta.info.datahash.is_none() {
        hr.taps.sha1 = Some(sha1::Sha1::new());
        if let Some(h) = hr.taps.sha1.as_mut() {
            h.update(&control_copy)
        }
    }
    if hr.at_eof()? {
        return Err(ApkError::Format("no data section".into()));
    }
    {
        // A data section small enough to hold is read whole (hashed as it is read) and
        // decompressed in one call; a bigger one, or one that call does not take, streams.
        // The compressed bytes' buffer is kept for the next package read on this thread.
        let mut head = HEAD.with(|h| std::mem::take(&mut *h.borrow_mut()));
        head.clear();
        (&mut hr)
            .take(WHOLE_MAX_COMPRESSED + 1)
            .read_to_end(&mut head)?;
        let held = head.len() as u64 <= WHOLE_MAX_COMPRESSED;
        // Held whole, the section is hashed before a single entry is read: its datahash is
        // checked first, and then it vouches for every byte of every file, their checksums
        // included, so the per-file SHA-1s are taken as given (what apk-tools does: it copies
        // them into its database without computing them). Streamed, or without a datahash,
        // each file is hashed and checked against its own checksum as it goes. A section that
        // does not match is read on as before, so that the error says what is wrong with it (a
        // truncated file fails to decompress; anything else fails the datahash at the end).
        let content_verified = held
            && matches!((&meta.info.datahash, &hr.taps.sha256), (Some(want), Some(h))
                if datahash_matches(want, h.clone().finalize().into()));
        let whole = if held {
            crate::inflate::with_whole_member(
                &head,
                opts.max_data_size.min(WHOLE_MAX_DATA),
                |tar| data_section(tar, opts.max_data_size, content_verified, &mut on_entry),
            )
        } else {
            None
        };
        match whole {
            Some(r) => r?,
            None => data_section(
                MultiGzDecoder::new(Read::chain(&head[..], &mut hr)),
                opts.max_data_size,
                content_verified,
                &mut on_entry,
            )?,
        }
        if head.capacity() as u64 <= WHOLE_MAX_COMPRESSED * 2 {
            head.clear();
            HEAD.with(|h| *h.borrow_mut() = head);
        }
    }
    if !hr.at_eof()? {
        return Err(ApkError::Format(
            "trailing bytes after the data section".into(),
        ));
    }
    let data_sha256: [u8; 32] = hr.taps.sha256.take().unwrap_or_default().finalize().into();
    match &meta.info.datahash {
        Some(h) => {
            if !datahash_matches(h, data_sha256) {
                return Err(ApkError::BadDatahash);
            }
        }
        None => {
            if let Some(h) = hr.taps.sha1.take() {
                let all: [u8; 20] = h.finalize().into();
                meta.identity = checksum::q1(&all);
            }
            if let (Some((sig, key)), Some(ctx)) = (&chosen, hr.taps.sig.take())
                && !key.verify_digest(sig.alg, &ctx.finish(), &sig.sig)
            {
                return Err(ApkError::BadSignature {
                    key: sig.key.clone(),
                });
            }
        }
    }
    meta.file_size = Some(hr.offset);
    Ok(meta)
}

/// Whether the SHA-256 of a data section is the `datahash` its `.PKGINFO` gives (hex, any case).
fn datahash_matches(datahash: &str, sha256: [u8; 32]) -> bool {
    datahash.eq_ignore_ascii_case(&hex::encode(sha256))
}

/// Largest compressed data section read whole into memory, and largest uncompressed one
/// decompressed whole: with two of each in flight (one per core), a build stays well under
/// 100 MB however large its packages are; bigger sections stream.
const WHOLE_MAX_COMPRESSED: u64 = 8 << 20;
thread_local! {
    /// See [`read_apk`]'s data section: a fresh buffer per package costs page faults.
    static HEAD: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}
const WHOLE_MAX_DATA: u64 = 16 << 20;

/// Read the decompressed data section `r` (within `limit` bytes) entry by entry, and to its end;
/// `content_verified`: its datahash was checked already (see [`read_data`]).
fn data_section<R: Read>(
    r: R,
    limit: u64,
    content_verified: bool,
    on_entry: &mut impl FnMut(&DataEntry, &mut dyn Read) -> Result<(), ApkError>,
) -> Result<(), ApkError> {
    let mut limited = LimitReader {
        inner: r,
        left: limit,
        exceeded: false,
    };
    let res = read_data(&mut limited, content_verified, on_entry)
        .and_then(|_| Ok(io::copy(&mut limited, &mut io::sink()).map(|_| ())?));
    // The tar reader reports the cut-off as a truncated entry; say what really happened.
    if limited.exceeded {
        return Err(too_large("the data section", limit));
    }
    res
}

/// Stops a decompression bomb: reading past `left` bytes is an error, remembered in `exceeded`.
struct LimitReader<R> {
    inner: R,
    left: u64,
    exceeded: bool,
}

impl<R: Read> Read for LimitReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        let want = buf
            .len()
            .min(self.left.saturating_add(1).min(usize::MAX as u64) as usize);
        let n = self.inner.read(&mut buf[..want])?;
        if n as u64 > self.left {
            self.exceeded = true;
            return Err(io::Error::other("decompressed size limit exceeded"));
        }
        self.left -= n as u64;
        Ok(n)
    }
}

/// Hashes what the caller reads, so the checksum is checked without a second pass.
struct Sha1Tee<'a, R> {
    inner: R,
    h: &'a mut sha1::Sha1,
}

impl<R: Read> Read for Sha1Tee<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.h.update(&buf[..n]);
        Ok(n)
    }
}

/// apk's rules for names in the data section (`apk_db_install_archive_entry`).
pub fn check_path(path: &str) -> Result<(), &'static str> {
    if path.is_empty() {
        return Err("empty name");
    }
    if path.starts_with('/') {
        return Err("absolute path");
    }
    if path.chars().any(char::is_control) {
        return Err("control character in the name");
    }
    if path.split('/').any(|c| c == "..") {
        return Err("'..' component");
    }
    if path.starts_with("./") || path.contains("/./") {
        return Err("'.' component");
    }
    if path.len() > MAX_PATH_BYTES {
        return Err("name longer than PATH_MAX (4096 bytes)");
    }
    if path.split('/').count() > MAX_PATH_DEPTH {
        return Err("more than 256 path components");
    }
    Ok(())
}

fn kind_of(t: tar::EntryType) -> Option<Kind> {
    Some(match t {
        tar::EntryType::Regular | tar::EntryType::Continuous => Kind::File,
        tar::EntryType::Link => Kind::HardLink,
        tar::EntryType::Symlink => Kind::Symlink,
        tar::EntryType::Char => Kind::Char,
        tar::EntryType::Block => Kind::Block,
        tar::EntryType::Directory => Kind::Dir,
        tar::EntryType::Fifo => Kind::Fifo,
        _ => return None,
    })
}

/// Every entry of the data tar `r`, checked against apk's rules. Each file's content is hashed
/// and checked against its `APK-TOOLS.checksum.SHA1` unless `content_verified` says the whole
/// section already matched the signed datahash, which covers those checksums and the content.
fn read_data<R: Read>(
    r: R,
    content_verified: bool,
    on_entry: &mut impl FnMut(&DataEntry, &mut dyn Read) -> Result<(), ApkError>,
) -> Result<(), ApkError> {
    let mut ar = tar::Archive::new(r);
    let mut seen_dirs: std::collections::HashSet<String> = Default::default();
    let mut seen_files: std::collections::HashSet<String> = Default::default();
    for (n, e) in ar.entries()?.enumerate() {
        if n >= MAX_ENTRIES {
            return Err(ApkError::Format(format!(
                "the data section has more than {MAX_ENTRIES} entries"
            )));
        }
        let mut e = e?;
        let raw = String::from_utf8_lossy(&e.path_bytes()).into_owned();
        let path = raw.trim_end_matches('/').to_string();
        if path.is_empty() || path == "." {
            continue;
        }
        if let Err(reason) = check_path(&path) {
            return Err(ApkError::Malicious { path, reason });
        }
        // apk ignores dot entries at the top of the data section.
        if path.starts_with('.') && !path.contains('/') {
            continue;
        }
        let Some(kind) = kind_of(e.header().entry_type()) else {
            continue;
        };
        let mut sha1 = None;
        let mut xattrs = Vec::new();
        if let Some(exts) = e.pax_extensions()? {
            for x in exts {
                let x = x?;
                let Ok(key) = x.key() else { continue };
                if key == "APK-TOOLS.checksum.SHA1" {
                    let v = x.value().unwrap_or("");
                    let bytes = hex::decode(v.trim()).ok().filter(|b| b.len() == 20);
                    let Some(bytes) = bytes else {
                        return Err(ApkError::Format(format!(
                            "{path}: APK-TOOLS.checksum.SHA1 is not 40 hex digits"
                        )));
                    };
                    sha1 = Some(<[u8; 20]>::try_from(bytes.as_slice()).unwrap_or_default());
                } else if let Some(name) = key.strip_prefix("SCHILY.xattr.") {
                    xattrs.push((name.to_string(), x.value_bytes().to_vec()));
                }
            }
        }
        xattrs.sort();
        if let Some((parent, _)) = path.rsplit_once('/')
            && !seen_dirs.contains(parent)
        {
            return Err(ApkError::Malicious {
                path,
                reason: "its parent directory is not an earlier entry of the package",
            });
        }
        let link = match kind {
            Kind::Symlink | Kind::HardLink => e
                .link_name_bytes()
                .map(|b| String::from_utf8_lossy(&b).into_owned())
                .unwrap_or_default(),
            _ => String::new(),
        };
        let link = if kind == Kind::HardLink {
            let l = link.trim_start_matches("./").to_string();
            if check_path(&l).is_err() || !seen_files.contains(&l) {
                return Err(ApkError::Malicious {
                    path,
                    reason: "hard link target is not an earlier file of the package",
                });
            }
            l
        } else {
            link
        };
        let h = e.header();
        let entry = DataEntry {
            mode: h.mode()? & 0o7777,
            uid: h.uid()? as u32,
            gid: h.gid()? as u32,
            uname: h.username().ok().flatten().unwrap_or_default().to_string(),
            gname: h.groupname().ok().flatten().unwrap_or_default().to_string(),
            mtime: h.mtime().unwrap_or(0),
            size: if kind == Kind::File { h.size()? } else { 0 },
            dev_major: h.device_major().ok().flatten().unwrap_or(0),
            dev_minor: h.device_minor().ok().flatten().unwrap_or(0),
            path: path.clone(),
            kind,
            link,
            xattrs,
            sha1,
        };
        match kind {
            Kind::Dir => {
                seen_dirs.insert(path.clone());
            }
            Kind::File | Kind::Symlink | Kind::HardLink => {
                seen_files.insert(path.clone());
            }
            _ => {}
        }
        if kind == Kind::File && content_verified {
            // Whatever the callback leaves unread, the tar reader skips.
            on_entry(&entry, &mut e)?;
            continue;
        }
        let mut hasher = sha1::Sha1::new();
        if kind == Kind::File {
            let mut tee = Sha1Tee {
                inner: &mut e,
                h: &mut hasher,
            };
            on_entry(&entry, &mut tee)?;
            io::copy(&mut tee, &mut io::sink())?;
        } else {
            on_entry(&entry, &mut io::empty())?;
            if kind == Kind::Symlink {
                hasher.update(entry.link.as_bytes());
            }
        }
        if let (Some(want), Kind::File | Kind::Symlink) = (entry.sha1, kind) {
            let got: [u8; 20] = hasher.finalize().into();
            if got != want {
                return Err(ApkError::BadChecksum { path });
            }
        }
    }
    Ok(())
}

/// A named entry of a small archive held in memory.
pub type Member = (String, Vec<u8>);

/// An index (or other signed archive without datahash): the signature member covers every
/// byte that follows it. Returns the trust and the (name, content) entries of the archive.
pub fn read_signed_archive<R: Read>(
    r: R,
    keyring: Option<&Keyring>,
    max_size: u64,
) -> Result<(Trust, Vec<Member>), ApkError> {
    let mut hr = HashingReader::new(BufReader::new(r));
    if hr.at_eof()? {
        return Err(ApkError::Format("empty file".into()));
    }
    hr.taps.copy = Some(Vec::new());
    hr.copy_limit = max_size as usize;
    let first = read_member(&mut hr, max_size, "the first section")?;
    let first_entries = small_tar(&first)?;
    let signed = first_entries
        .first()
        .is_some_and(|(n, _)| n.starts_with(".SIGN."));
    if !signed {
        if keyring.is_some() {
            return Err(ApkError::Untrusted { keys: vec![] });
        }
        // Unsigned: the first member is the archive itself; more members may follow.
        let mut rest = Vec::new();
        if !hr.at_eof()? {
            MultiGzDecoder::new(&mut hr)
                .take(max_size.saturating_add(1))
                .read_to_end(&mut rest)?;
        }
        let mut all = first;
        all.extend(rest);
        return Ok((Trust::NotChecked, small_tar(&all)?));
    }
    hr.taps.copy = Some(Vec::new());
    let mut body = Vec::new();
    MultiGzDecoder::new(&mut hr)
        .take(max_size.saturating_add(1))
        .read_to_end(&mut body)?;
    if body.len() as u64 > max_size || hr.copy_overflow {
        return Err(too_large("the index", max_size));
    }
    let signed_bytes = hr.taps.copy.take().unwrap_or_default();
    let mut trust = Trust::NotChecked;
    if let Some(k) = keyring {
        let (sig, key) = choose_key(parse_signatures(&first_entries), k)?;
        if !key.verify(sig.alg, &signed_bytes, &sig.sig) {
            return Err(ApkError::BadSignature { key: sig.key });
        }
        trust = Trust::Verified {
            key: sig.key,
            alg: sig.alg,
        };
    }
    Ok((trust, small_tar(&body)?))
}

/// Where one gzip member of a file lies, with its hashes (what apko's lock file records).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemberRange {
    pub start: u64,
    /// Exclusive end.
    pub end: u64,
    pub sha1: [u8; 20],
    pub sha256: [u8; 32],
}

/// Split a file into its gzip members without keeping any of them: offsets and hashes only.
pub fn member_ranges<R: Read>(r: R) -> Result<Vec<MemberRange>, ApkError> {
    let mut hr = HashingReader::new(BufReader::new(r));
    let mut out = Vec::new();
    while !hr.at_eof()? {
        let start = hr.offset;
        hr.taps = Taps {
            sha1: Some(sha1::Sha1::new()),
            sha256: Some(sha2::Sha256::new()),
            ..Taps::default()
        };
        let mut d = GzDecoder::new(&mut hr);
        io::copy(&mut d, &mut io::sink())?;
        drop(d);
        if hr.offset == start {
            return Err(ApkError::Format("not a gzip stream".into()));
        }
        out.push(MemberRange {
            start,
            end: hr.offset,
            sha1: hr.taps.sha1.take().unwrap_or_default().finalize().into(),
            sha256: hr.taps.sha256.take().unwrap_or_default().finalize().into(),
        });
    }
    Ok(out)
}

#[cfg(test)]
mod limit_tests {
    use super::*;

    #[test]
    fn paths_past_the_limits_are_refused() {
        assert!(check_path("usr/bin/x").is_ok());
        let long = "a/".repeat(MAX_PATH_BYTES / 2) + "b";
        assert_eq!(
            check_path(&long),
            Err("name longer than PATH_MAX (4096 bytes)")
        );
        let deep = vec!["d"; MAX_PATH_DEPTH + 1].join("/");
        assert_eq!(check_path(&deep), Err("more than 256 path components"));
        assert!(check_path(&vec!["d"; MAX_PATH_DEPTH].join("/")).is_ok());
    }
}
