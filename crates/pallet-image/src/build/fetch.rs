//! Fetching a package into the package cache: verified once (signature, datahash, checksums,
//! and its control checksum against the signed index), kept as its data tar with what the
//! installer needs of its control section, and read back from there by every later build.

use std::fs;
use std::path::{Path, PathBuf};

use pallet_apk_types::{PackageInfo, checksum};
use pallet_fs::InstalledMeta;

use super::{BuildError, BuildOptions, io_ctx};
use crate::config::Arch;
use crate::resolve::Repo;

pub(super) const PACKAGE_CACHE: &str = "apk-data-v2";

fn cache_path(cache: &Path, identity: &str) -> PathBuf {
    let raw = checksum::decode_q1(identity).unwrap_or_else(|| identity.as_bytes().to_vec());
    let hex: String = raw.iter().map(|b| format!("{b:02x}")).collect();
    cache.join(PACKAGE_CACHE).join(format!("{hex}.tar"))
}

/// A package in the cache: its data tar, what the installer needs of its control section, and
/// its entries.
pub(super) type CachedPackage = (PathBuf, InstalledMeta, Vec<pallet_fs::CachedEntry>);

/// Fetch (from the cache, or verify and cache) one package.
pub(super) fn ensure_cached(
    repo: &Repo,
    info: &PackageInfo,
    arch: Arch,
    opts: &BuildOptions,
) -> Result<CachedPackage, BuildError> {
    let pkg_err = |message: String| BuildError::Package {
        pkg: info.nv(),
        message,
    };
    let identity = info
        .checksum
        .clone()
        .ok_or_else(|| pkg_err("index record has no C: checksum".into()))?;
    let tar = cache_path(&opts.cache_dir, &identity);
    let cached = |tar: &Path| -> Result<Option<CachedPackage>, BuildError> {
        let Some((ctl, entries)) =
            pallet_fs::read_cached(tar).map_err(io_ctx(format!("reading {}", tar.display())))?
        else {
            return Ok(None);
        };
        Ok(decode_control(&ctl).ok().map(|(pkginfo, scripts)| {
            (
                tar.to_path_buf(),
                InstalledMeta {
                    info: merge_info(pkginfo, info),
                    tag: repo.tag.clone(),
                    scripts,
                },
                entries,
            )
        }))
    };
    // A cache file is complete once it has its name: no lock needed to read one.
    if let Some(hit) = cached(&tar)? {
        return Ok(hit);
    }
    // Builds sharing the cache take turns per package: the second waits while the first
    // fetches and unpacks, then finds the entry made instead of fetching it again.
    let _lock = pallet_atomic::EntryLock::acquire(&tar)
        .map_err(io_ctx(format!("locking {}", tar.display())))?;
    if let Some(hit) = cached(&tar)? {
        return Ok(hit);
    }
    fs::create_dir_all(tar.parent().expect("cache path has a parent"))
        .map_err(io_ctx(opts.cache_dir.display().to_string()))?;
    let apk = format!(
        "{}/{}/{}",
        pallet_repo::redact(&repo.url),
        arch.apk(),
        info.file_name()
    );
    let f = opts
        .client()
        .open_package(&repo.url, arch.apk(), &info.file_name())
        .map_err(|e| pkg_err(e.to_string()))?;
    let (meta, entries) = pallet_fs::cache_package(
        f,
        &pallet_apk_stream::ReadOptions::default(),
        &tar,
        |meta| {
            // The signed index vouches for the package through its control checksum, as apk
            // does.
            if !opts.ignore_signatures && meta.identity != identity {
                return Err(format!(
                    "its control checksum {} does not match the signed index ({identity}); the file was tampered with or the index is stale",
                    meta.identity
                ));
            }
            Ok(encode_control(&meta.info.to_pkginfo(), &meta.scripts))
        },
    )
    .map_err(|e| pkg_err(format!("{apk}: {e}")))?;
    Ok((
        tar,
        InstalledMeta {
            info: merge_info(meta.info, info),
            tag: repo.tag.clone(),
            scripts: meta.scripts,
        },
        entries,
    ))
}

/// `.PKGINFO` knows replaces and triggers; the index knows the file size and identity.
fn merge_info(mut pkginfo: PackageInfo, index: &PackageInfo) -> PackageInfo {
    pkginfo.checksum = index.checksum.clone();
    pkginfo.file_size = index.file_size;
    pkginfo.datahash = None;
    pkginfo
}

fn encode_control(pkginfo: &str, scripts: &[(String, Vec<u8>)]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut put = |name: &str, data: &[u8]| {
        out.extend_from_slice(format!("{} {}\n", name, data.len()).as_bytes());
        out.extend_from_slice(data);
    };
    put(".PKGINFO", pkginfo.as_bytes());
    for (n, d) in scripts {
        put(n, d);
    }
    out
}

type Control = (PackageInfo, Vec<(String, Vec<u8>)>);

fn decode_control(mut b: &[u8]) -> Result<Control, ()> {
    let mut info = None;
    let mut scripts = vec![];
    while !b.is_empty() {
        let nl = b.iter().position(|c| *c == b'\n').ok_or(())?;
        let head = std::str::from_utf8(&b[..nl]).map_err(|_| ())?;
        let (name, len) = head.rsplit_once(' ').ok_or(())?;
        let len: usize = len.parse().map_err(|_| ())?;
        let data = b.get(nl + 1..nl + 1 + len).ok_or(())?;
        if name == ".PKGINFO" {
            info =
                Some(PackageInfo::parse_pkginfo(&String::from_utf8_lossy(data)).map_err(|_| ())?);
        } else {
            scripts.push((name.to_string(), data.to_vec()));
        }
        b = &b[nl + 1 + len..];
    }
    Ok((info.ok_or(())?, scripts))
}
