//! `APKINDEX.tar.gz`: read (verifying the signature), write with the fields and order
//! apk-tools writes, sign, and merge; and a cache of parsed indexes ([`read_index_cached`])
//! in a compact form that loads without parsing text ([`compact`]).

pub mod cache;
pub mod compact;

pub use cache::{CachedIndex, read_index_cached};
pub use compact::Records;

use std::fs::File;
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use pallet_apk_stream::{ApkError, ReadOptions, Trust, read_apk, read_signed_archive, tarw};
use pallet_apk_types::{PackageInfo, package};
use pallet_keys::{Keyring, SigAlg, SigningKey};
use rayon::prelude::*;

/// Largest decompressed index accepted (apko's default guard is 300 MiB).
pub const MAX_INDEX_SIZE: u64 = 300 << 20;

static MAX_INDEX: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(MAX_INDEX_SIZE);

/// Set, for this process, the largest decompressed index [`read_index`] accepts; `u64::MAX`
/// for none. apko's `--max-apkindex-decompressed-size`.
pub fn set_max_index_size(bytes: u64) {
    MAX_INDEX.store(bytes, std::sync::atomic::Ordering::Relaxed);
}

/// The limit [`set_max_index_size`] set (or the default).
pub fn max_index_size() -> u64 {
    MAX_INDEX.load(std::sync::atomic::Ordering::Relaxed)
}

#[derive(Debug, thiserror::Error)]
pub enum IndexError {
    #[error("{path}: {source}")]
    Apk {
        path: PathBuf,
        #[source]
        source: ApkError,
    },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{path}: no APKINDEX entry in the archive")]
    NoApkindex { path: PathBuf },
    #[error("{path}: {source}")]
    Parse {
        path: PathBuf,
        #[source]
        source: pallet_apk_types::InfoError,
    },
    #[error("{path}: {source}")]
    Write {
        path: PathBuf,
        #[source]
        source: pallet_apk_stream::WriteError,
    },
}

/// A parsed index.
#[derive(Clone, Debug)]
pub struct Index {
    pub description: Option<String>,
    pub packages: Vec<PackageInfo>,
    pub trust: Trust,
}

/// Read an index from a file, verifying its signature when a keyring is given.
pub fn read_index(path: &Path, keyring: Option<&Keyring>) -> Result<Index, IndexError> {
    let f = File::open(path).map_err(|source| IndexError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    read_index_from(f, path, keyring)
}

/// Read an index from any reader; `path` only names it in errors.
pub fn read_index_from<R: Read>(
    r: R,
    path: &Path,
    keyring: Option<&Keyring>,
) -> Result<Index, IndexError> {
    let (trust, entries) =
        read_signed_archive(r, keyring, max_index_size()).map_err(|source| IndexError::Apk {
            path: path.to_path_buf(),
            source,
        })?;
    let mut description = None;
    let mut text = None;
    for (name, data) in entries {
        match name.as_str() {
            "DESCRIPTION" => description = Some(String::from_utf8_lossy(&data).into_owned()),
            "APKINDEX" => text = Some(String::from_utf8_lossy(&data).into_owned()),
            _ => {}
        }
    }
    let text = text.ok_or_else(|| IndexError::NoApkindex {
        path: path.to_path_buf(),
    })?;
    let packages = package::parse_index(&text).map_err(|source| IndexError::Parse {
        path: path.to_path_buf(),
        source,
    })?;
    Ok(Index {
        description,
        packages,
        trust,
    })
}

/// The index record of one package file: its metadata with `C:` and `S:` filled in. Like
/// `apk index`, only the control section is read; with a keyring the signature is checked.
pub fn record_for(path: &Path, keyring: Option<&Keyring>) -> Result<PackageInfo, IndexError> {
    let err = |source| IndexError::Apk {
        path: path.to_path_buf(),
        source,
    };
    let f = File::open(path).map_err(|e| err(e.into()))?;
    let size = f.metadata().map_err(|e| err(e.into()))?.len();
    let opts = ReadOptions {
        keyring,
        control_only: true,
        ..ReadOptions::default()
    };
    let meta = read_apk(f, &opts, |_, _| Ok(())).map_err(err)?;
    let mut info = meta.info;
    info.checksum = Some(meta.identity);
    info.file_size = size;
    // .PKGINFO carries datahash, but the index does not.
    info.datahash = None;
    Ok(info)
}

/// Records for many packages, read in parallel; the result keeps the input order.
pub fn records_for(
    paths: &[PathBuf],
    keyring: Option<&Keyring>,
) -> Result<Vec<PackageInfo>, IndexError> {
    paths.par_iter().map(|p| record_for(p, keyring)).collect()
}

/// The unsigned index file bytes: one gzip member holding `DESCRIPTION` (when given) and
/// `APKINDEX`, with the end-of-archive blocks.
pub fn unsigned_index(packages: &[PackageInfo], description: Option<&str>, epoch: u64) -> Vec<u8> {
    let mut tar = Vec::new();
    let text = package::write_index(packages);
    let mut entry = |name: &str, data: &[u8]| {
        let h = tarw::EntryHeader::file(name, 0o644, epoch, data.len() as u64);
        tarw::write_entry(&mut tar, &h, data).expect("writing to a Vec cannot fail");
    };
    if let Some(d) = description {
        entry("DESCRIPTION", d.as_bytes());
    }
    entry("APKINDEX", text.as_bytes());
    tarw::write_end(&mut tar).expect("writing to a Vec cannot fail");
    let mut e = flate2::GzBuilder::new()
        .mtime(0)
        .operating_system(3)
        .write(Vec::new(), flate2::Compression::new(9));
    io::Write::write_all(&mut e, &tar).expect("writing to a Vec cannot fail");
    e.finish().expect("writing to a Vec cannot fail")
}

/// Write an index atomically, signed when a key is given.
pub fn write_index(
    packages: &[PackageInfo],
    description: Option<&str>,
    key: Option<&SigningKey>,
    epoch: u64,
    out: &Path,
) -> Result<(), IndexError> {
    let body = unsigned_index(packages, description, epoch);
    let mut file = Vec::new();
    if let Some(k) = key {
        file = pallet_apk_stream::signature_member(k, SigAlg::RsaSha256, &body, epoch).map_err(
            |source| IndexError::Write {
                path: out.to_path_buf(),
                source,
            },
        )?;
    }
    file.extend_from_slice(&body);
    pallet_keys::write_atomic(out, &file, 0o644).map_err(|e| IndexError::Io {
        path: out.to_path_buf(),
        source: io::Error::other(e.to_string()),
    })
}

/// Sign an existing index in place, replacing any signature it had.
pub fn sign_index(path: &Path, key: &SigningKey, epoch: u64) -> Result<(), IndexError> {
    let index = read_index(path, None)?;
    write_index(
        &index.packages,
        index.description.as_deref(),
        Some(key),
        epoch,
        path,
    )
}

/// Whether the index at `path` carries a signature: its first gzip member is a tar whose first
/// entry is a `.SIGN.*` file (what apk-tools and melange write before the index itself).
pub fn is_signed(path: &Path) -> Result<bool, IndexError> {
    use std::io::Read as _;
    let f = File::open(path).map_err(|source| IndexError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    // Only the first member, and only its first tar header, is needed.
    let mut head = [0u8; 512];
    let mut d = flate2::read::GzDecoder::new(std::io::BufReader::new(f));
    let n = d.read(&mut head).unwrap_or(0);
    let mut got = n;
    while got < head.len() {
        match d.read(&mut head[got..]) {
            Ok(0) | Err(_) => break,
            Ok(k) => got += k,
        }
    }
    Ok(got == head.len() && head.starts_with(b".SIGN."))
}

/// Merge new records into existing ones: a record with the same name and version replaces the
/// old one, everything else is kept.
pub fn merge(old: Vec<PackageInfo>, new: Vec<PackageInfo>) -> Vec<PackageInfo> {
    let mut out: Vec<PackageInfo> = old
        .into_iter()
        .filter(|o| {
            !new.iter()
                .any(|n| n.name == o.name && n.version == o.version && n.arch == o.arch)
        })
        .collect();
    out.extend(new);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signed_and_unsigned_indexes_are_told_apart() {
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("k.rsa");
        pallet_keys::generate(&key, 2048).unwrap();
        let key = SigningKey::load(&key).unwrap();
        let p = dir.path().join("APKINDEX.tar.gz");
        write_index(&[], None, None, 0, &p).unwrap();
        assert!(!is_signed(&p).unwrap());
        sign_index(&p, &key, 0).unwrap();
        assert!(is_signed(&p).unwrap());
    }

    #[test]
    fn unsigned_indexes_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("APKINDEX.tar.gz");
        let p = PackageInfo {
            name: "a".into(),
            version: "1.0-r0".into(),
            ..Default::default()
        };
        write_index(std::slice::from_ref(&p), None, None, 0, &out).unwrap();
        assert_eq!(read_index(&out, None).unwrap().packages, vec![p]);
    }

    #[test]
    fn write_sign_and_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let key_path = dir.path().join("k.rsa");
        pallet_keys::generate(&key_path, 2048).unwrap();
        let key = SigningKey::load(&key_path).unwrap();
        let p = PackageInfo {
            name: "a".into(),
            version: "1.0-r0".into(),
            checksum: Some("Q1fjUxL26AIO2/CYDcHHMNKxaJr2o=".into()),
            ..Default::default()
        };
        let out = dir.path().join("APKINDEX.tar.gz");
        write_index(
            std::slice::from_ref(&p),
            Some("test repo"),
            Some(&key),
            0,
            &out,
        )
        .unwrap();
        let ring = Keyring::from_paths([dir.path().join("k.rsa.pub")]);
        let idx = read_index(&out, Some(&ring)).unwrap();
        assert_eq!(idx.packages, vec![p]);
        assert_eq!(idx.description.as_deref(), Some("test repo"));
        assert!(matches!(idx.trust, Trust::Verified { .. }));
        // Without the key it is untrusted; an unrelated key under the same name is a bad signature.
        let other = tempfile::tempdir().unwrap();
        assert!(matches!(
            read_index(
                &out,
                Some(&Keyring::from_paths([other.path().to_path_buf()]))
            ),
            Err(IndexError::Apk {
                source: ApkError::Untrusted { .. },
                ..
            })
        ));
        pallet_keys::generate(&other.path().join("k.rsa"), 2048).unwrap();
        assert!(matches!(
            read_index(
                &out,
                Some(&Keyring::from_paths([other.path().join("k.rsa.pub")]))
            ),
            Err(IndexError::Apk {
                source: ApkError::BadSignature { .. },
                ..
            })
        ));
    }
}
