//! The parsed-index cache: an index read once is kept in its [compact](crate::compact) form,
//! keyed by the SHA-256 of the `APKINDEX.tar.gz` bytes, and a signature that verified is
//! remembered for that digest and that keyring.
//!
//! ```text
//! CACHE/apkindex-v1/
//!   <sha256 of the index file>.idx            the compact records (self-checking header)
//!   <sha256 of the index file>.<keyring>.trust  "verified by key K": the keyring part is the
//!                                             SHA-256 of every key file's name and contents
//! ```
//!
//! Both are written under a temporary name and renamed into place, so readers see whole files
//! or none; a file that fails its checks (truncated, corrupt, another format version) is read
//! as a miss and rewritten. A verification is remembered only for the same index bytes and
//! the same keys, so a changed keyring verifies again. The bucket keeps the newest
//! [`MAX_ENTRIES`] indexes; older ones are removed when a new one is written.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use pallet_apk_stream::{Trust, read_signed_archive};
use pallet_keys::{Keyring, SigAlg};
use sha2::{Digest as _, Sha256};

use crate::compact::Records;
use crate::{IndexError, max_index_size};

/// The cache bucket, named with its layout version.
pub const BUCKET: &str = "apkindex-v1";

/// Indexes kept in the bucket; an index of a busy workspace changes with every package built.
pub const MAX_ENTRIES: usize = 64;

const TRUST_MAGIC: &[u8; 8] = b"PALLETVT";
const TRUST_VERSION: u32 = 1;

/// An index read through the cache.
#[derive(Clone, Debug)]
pub struct CachedIndex {
    pub description: Option<String>,
    pub packages: Records,
    pub trust: Trust,
    /// SHA-256 of the index file.
    pub digest: [u8; 32],
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// SHA-256 over every key file of `ring`, in lookup order: its name and its contents, which
/// are all a signature check reads of it.
pub fn keyring_fingerprint(ring: &Keyring) -> [u8; 32] {
    let mut h = Sha256::new();
    for f in ring.key_files() {
        let name = f.file_name().map(|n| n.as_encoded_bytes()).unwrap_or(b"");
        h.update((name.len() as u64).to_le_bytes());
        h.update(name);
        match fs::read(&f) {
            Ok(data) => {
                h.update([1]);
                h.update((data.len() as u64).to_le_bytes());
                h.update(&data);
            }
            Err(_) => h.update([0]),
        }
    }
    h.finalize().into()
}

fn alg_code(a: SigAlg) -> u8 {
    match a {
        SigAlg::RsaSha1 => 1,
        SigAlg::RsaSha256 => 2,
        SigAlg::RsaSha512 => 3,
    }
}

fn alg_of(c: u8) -> Option<SigAlg> {
    Some(match c {
        1 => SigAlg::RsaSha1,
        2 => SigAlg::RsaSha256,
        3 => SigAlg::RsaSha512,
        _ => return None,
    })
}

/// A trust record: magic, version, CRC-32 of the rest, then digest, keyring, algorithm and
/// key name.
fn encode_trust(digest: &[u8; 32], ring: &[u8; 32], key: &str, alg: SigAlg) -> Vec<u8> {
    let mut body = Vec::new();
    body.extend_from_slice(digest);
    body.extend_from_slice(ring);
    body.push(alg_code(alg));
    body.extend_from_slice(key.as_bytes());
    let mut out = TRUST_MAGIC.to_vec();
    out.extend_from_slice(&TRUST_VERSION.to_le_bytes());
    out.extend_from_slice(&crc32fast::hash(&body).to_le_bytes());
    out.extend_from_slice(&body);
    out
}

fn decode_trust(data: &[u8], digest: &[u8; 32], ring: &[u8; 32]) -> Option<Trust> {
    let body = data.get(16..)?;
    if &data[..8] != TRUST_MAGIC
        || data[8..12] != TRUST_VERSION.to_le_bytes()
        || data[12..16] != crc32fast::hash(body).to_le_bytes()
        || body.len() < 65
        || &body[..32] != digest
        || &body[32..64] != ring
    {
        return None;
    }
    Some(Trust::Verified {
        alg: alg_of(body[64])?,
        key: String::from_utf8(body[65..].to_vec()).ok()?,
    })
}

/// Where the entries of the index with `digest` live.
fn paths(dir: &Path, digest: &[u8; 32], ring: Option<&[u8; 32]>) -> (PathBuf, Option<PathBuf>) {
    let d = hex(digest);
    (
        dir.join(format!("{d}.idx")),
        ring.map(|r| dir.join(format!("{d}.{}.trust", hex(r)))),
    )
}

/// SHA-256 of a file, read in pieces.
fn file_digest(path: &Path) -> io::Result<[u8; 32]> {
    use std::io::Read as _;
    let mut f = fs::File::open(path)?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 64 << 10];
    loop {
        match f.read(&mut buf) {
            Ok(0) => return Ok(h.finalize().into()),
            Ok(n) => h.update(&buf[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

/// The cached records of the index at `path` (whose SHA-256 is `digest`) when there are
/// some: made from these very bytes, read within a limit no larger than today's (a lower limit
/// now might refuse the index, so that case reads it again), and, with a keyring, verified
/// with these keys before or now.
fn cached(
    path: &Path,
    digest: &[u8; 32],
    keyring: Option<&Keyring>,
    ring: Option<&[u8; 32]>,
    dir: &Path,
    limit: u64,
) -> Result<Option<CachedIndex>, IndexError> {
    let (idx_path, trust_path) = paths(dir, digest, ring);
    let Some(packages) = fs::read(&idx_path)
        .ok()
        .and_then(|data| Records::load(data, Some(digest)).ok())
        .filter(|r| r.size_limit().is_some_and(|l| l <= limit))
    else {
        return Ok(None);
    };
    let trust = match (keyring, &trust_path, ring) {
        (Some(k), Some(tp), Some(fp)) => {
            match fs::read(tp).ok().and_then(|d| decode_trust(&d, digest, fp)) {
                Some(t) => t,
                None => {
                    let bytes = fs::read(path).map_err(|source| IndexError::Io {
                        path: path.to_path_buf(),
                        source,
                    })?;
                    if Sha256::digest(&bytes)[..] != digest[..] {
                        // Changed since it was hashed: read it as a new index.
                        return Ok(None);
                    }
                    let (t, _) =
                        read_signed_archive(&bytes[..], Some(k), limit).map_err(|source| {
                            IndexError::Apk {
                                path: path.to_path_buf(),
                                source,
                            }
                        })?;
                    write_trust(dir, tp, digest, fp, &t);
                    t
                }
            }
        }
        _ => Trust::NotChecked,
    };
    Ok(Some(CachedIndex {
        description: packages.description(),
        packages,
        trust,
        digest: *digest,
    }))
}

/// Read the index at `path` as [`crate::read_index`] does (verifying it against `keyring`
/// when one is given, within the size limit), through the cache in `cache_dir`. Anything
/// wrong with the cache is a miss; failing to write it is not an error.
pub fn read_index_cached(
    path: &Path,
    keyring: Option<&Keyring>,
    cache_dir: &Path,
) -> Result<CachedIndex, IndexError> {
    let io_err = |source| IndexError::Io {
        path: path.to_path_buf(),
        source,
    };
    let dir = cache_dir.join(BUCKET);
    let ring = keyring.map(keyring_fingerprint);
    let limit = max_index_size();
    // A hit needs only the digest, hashed as the file streams by; the bytes themselves are
    // read only to verify or parse them.
    let digest = file_digest(path).map_err(io_err)?;
    if let Some(hit) = cached(path, &digest, keyring, ring.as_ref(), &dir, limit)? {
        return Ok(hit);
    }
    let bytes = fs::read(path).map_err(io_err)?;
    // The digest of the bytes parsed, should the file have changed since it was hashed.
    let digest: [u8; 32] = Sha256::digest(&bytes).into();
    let (idx_path, trust_path) = paths(&dir, &digest, ring.as_ref());
    let index = crate::read_index_from(&bytes[..], path, keyring)?;
    let mut packages = None;
    if let Ok(data) = crate::compact::encode(
        &index.packages,
        index.description.as_deref(),
        &digest,
        limit,
    ) {
        pallet_atomic::sweep(&dir);
        prune(&dir);
        let _ = write(&dir, &idx_path, &data);
        packages = Records::load(data, Some(&digest)).ok();
    }
    if let (Some(tp), Some(fp)) = (&trust_path, &ring) {
        write_trust(&dir, tp, &digest, fp, &index.trust);
    }
    Ok(CachedIndex {
        description: index.description,
        packages: packages.unwrap_or_else(|| Records::from(index.packages)),
        trust: index.trust,
        digest,
    })
}

fn write(dir: &Path, path: &Path, data: &[u8]) -> io::Result<()> {
    fs::create_dir_all(dir)?;
    // Both records carry a CRC-32 of their body, so a cut one reads as a miss: no sync.
    pallet_atomic::write_cache(path, data)
}

fn write_trust(dir: &Path, path: &Path, digest: &[u8; 32], ring: &[u8; 32], t: &Trust) {
    if let Trust::Verified { key, alg } = t {
        let _ = write(dir, path, &encode_trust(digest, ring, key, *alg));
    }
}

/// Keep the newest [`MAX_ENTRIES`] - 1 indexes (by modification time), making room for one
/// more; an index removed goes with its trust records.
fn prune(dir: &Path) {
    let Ok(rd) = fs::read_dir(dir) else { return };
    let mut idx: Vec<(std::time::SystemTime, String)> = rd
        .filter_map(Result::ok)
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            let stem = name.strip_suffix(".idx")?.to_string();
            Some((e.metadata().ok()?.modified().ok()?, stem))
        })
        .collect();
    if idx.len() < MAX_ENTRIES {
        return;
    }
    idx.sort();
    let old = idx.len() + 1 - MAX_ENTRIES;
    let gone: std::collections::HashSet<String> = idx.drain(..old).map(|(_, s)| s).collect();
    let Ok(rd) = fs::read_dir(dir) else { return };
    for e in rd.filter_map(Result::ok) {
        let name = e.file_name();
        let Some(name) = name.to_str() else { continue };
        let stem = name.split('.').next().unwrap_or("");
        if gone.contains(stem) && (name.ends_with(".idx") || name.ends_with(".trust")) {
            let _ = fs::remove_file(e.path());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pallet_apk_types::PackageInfo;
    use pallet_keys::SigningKey;

    struct Fixture {
        dir: tempfile::TempDir,
        index: PathBuf,
        ring: Keyring,
    }

    fn fixture() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("k.rsa");
        pallet_keys::generate(&key, 2048).unwrap();
        let keys = dir.path().join("keys");
        fs::create_dir(&keys).unwrap();
        fs::copy(dir.path().join("k.rsa.pub"), keys.join("k.rsa.pub")).unwrap();
        let packages: Vec<PackageInfo> = (0..50)
            .map(|i| PackageInfo {
                name: format!("p{i}"),
                version: "1.0-r0".into(),
                depends: pallet_apk_types::Dependency::parse_list(&format!("p{}", i + 1)).unwrap(),
                ..Default::default()
            })
            .collect();
        let index = dir.path().join("APKINDEX.tar.gz");
        let k = SigningKey::load(&key).unwrap();
        crate::write_index(&packages, Some("d"), Some(&k), 0, &index).unwrap();
        Fixture {
            ring: Keyring::from_paths([keys]),
            dir,
            index,
        }
    }

    fn bucket(f: &Fixture) -> PathBuf {
        f.dir.path().join("cache").join(BUCKET)
    }

    fn entries(f: &Fixture, ext: &str) -> Vec<PathBuf> {
        let mut v: Vec<PathBuf> = fs::read_dir(bucket(f))
            .map(|rd| {
                rd.map(|e| e.unwrap().path())
                    .filter(|p| p.to_string_lossy().ends_with(ext))
                    .collect()
            })
            .unwrap_or_default();
        v.sort();
        v
    }

    fn read(f: &Fixture, ring: Option<&Keyring>) -> Result<CachedIndex, IndexError> {
        read_index_cached(&f.index, ring, &f.dir.path().join("cache"))
    }

    #[test]
    fn a_hit_gives_what_a_plain_read_gives() {
        let f = fixture();
        let plain = crate::read_index(&f.index, Some(&f.ring)).unwrap();
        let miss = read(&f, Some(&f.ring)).unwrap();
        assert_eq!(entries(&f, ".idx").len(), 1);
        assert_eq!(entries(&f, ".trust").len(), 1);
        let hit = read(&f, Some(&f.ring)).unwrap();
        for got in [&miss, &hit] {
            assert_eq!(got.packages.to_vec(), plain.packages);
            assert_eq!(got.description, plain.description);
            assert_eq!(got.trust, plain.trust);
        }
        assert!(format!("{:?}", hit.packages).contains("compact"));
        // Without a keyring nothing is checked, from the cache as from the file.
        assert_eq!(read(&f, None).unwrap().trust, Trust::NotChecked);
    }

    #[test]
    fn corrupt_truncated_and_foreign_cache_files_are_rebuilt() {
        let f = fixture();
        let want = crate::read_index(&f.index, None).unwrap().packages;
        read(&f, None).unwrap();
        let idx = entries(&f, ".idx").remove(0);
        let good = fs::read(&idx).unwrap();
        let mut flipped = good.clone();
        let at = flipped.len() - 10;
        flipped[at] ^= 1;
        let mut version = good.clone();
        version[8] ^= 0xff;
        for bad in [
            flipped,
            good[..good.len() / 2].to_vec(),
            version,
            b"garbage".to_vec(),
            Vec::new(),
        ] {
            fs::write(&idx, &bad).unwrap();
            let got = read(&f, None).unwrap();
            assert_eq!(got.packages.to_vec(), want);
            // Rewritten whole.
            assert_eq!(fs::read(&idx).unwrap(), good);
        }
    }

    #[test]
    fn a_trust_record_needs_the_same_keys() {
        let f = fixture();
        read(&f, Some(&f.ring)).unwrap();
        let trust = entries(&f, ".trust");
        assert_eq!(trust.len(), 1);
        // Another key under the same name: not the remembered keyring, so it verifies again
        // and fails as a plain read does.
        let other = tempfile::tempdir().unwrap();
        pallet_keys::generate(&other.path().join("k.rsa"), 2048).unwrap();
        let ring2 = Keyring::from_paths([other.path().join("k.rsa.pub")]);
        assert!(matches!(
            read(&f, Some(&ring2)),
            Err(IndexError::Apk {
                source: pallet_apk_stream::ApkError::BadSignature { .. },
                ..
            })
        ));
        // A keyring without the key: untrusted, cache or not.
        let empty = Keyring::from_paths([other.path().join("none")]);
        assert!(matches!(
            read(&f, Some(&empty)),
            Err(IndexError::Apk {
                source: pallet_apk_stream::ApkError::Untrusted { .. },
                ..
            })
        ));
        // A damaged trust record is verified again and rewritten.
        fs::write(&trust[0], b"PALLETVT junk").unwrap();
        assert!(matches!(
            read(&f, Some(&f.ring)).unwrap().trust,
            Trust::Verified { .. }
        ));
        assert!(fs::read(&trust[0]).unwrap().len() > 80);
    }

    #[test]
    fn a_trust_record_is_not_taken_for_other_bytes() {
        let f = fixture();
        read(&f, Some(&f.ring)).unwrap();
        // Tamper with the index: new bytes, new digest, so neither entry applies, and the
        // signature check fails.
        let mut b = fs::read(&f.index).unwrap();
        let n = b.len();
        b[n - 30] ^= 0x55;
        fs::write(&f.index, &b).unwrap();
        assert!(read(&f, Some(&f.ring)).is_err());
    }

    #[test]
    fn a_lower_size_limit_reads_the_file_again() {
        let f = fixture();
        read(&f, None).unwrap();
        let e = entries(&f, ".idx").remove(0);
        let r = Records::load(fs::read(&e).unwrap(), None).unwrap();
        assert_eq!(r.size_limit(), Some(max_index_size()));
        // A record claiming a larger limit than today's is not a hit: simulate by writing one
        // made under a larger limit.
        let packages = r.to_vec();
        let digest: [u8; 32] = Sha256::digest(fs::read(&f.index).unwrap()).into();
        let big = crate::compact::encode(&packages, Some("d"), &digest, u64::MAX).unwrap();
        fs::write(&e, &big).unwrap();
        read(&f, None).unwrap();
        assert_ne!(fs::read(&e).unwrap(), big);
    }

    #[test]
    fn the_bucket_keeps_the_newest_entries() {
        let f = fixture();
        let dir = bucket(&f);
        fs::create_dir_all(&dir).unwrap();
        for i in 0..MAX_ENTRIES + 5 {
            let stem = format!("{i:064x}");
            fs::write(dir.join(format!("{stem}.idx")), b"x").unwrap();
            fs::write(dir.join(format!("{stem}.{}.trust", "0".repeat(64))), b"x").unwrap();
            let t = std::time::SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(i as u64);
            fs::File::options()
                .write(true)
                .open(dir.join(format!("{stem}.idx")))
                .unwrap()
                .set_modified(t)
                .unwrap();
        }
        read(&f, None).unwrap();
        assert_eq!(entries(&f, ".idx").len(), MAX_ENTRIES);
        assert!(!dir.join(format!("{:064x}.idx", 5)).exists());
        assert!(dir.join(format!("{:064x}.idx", 6)).exists());
        assert_eq!(entries(&f, ".trust").len(), MAX_ENTRIES - 1);
    }
}
