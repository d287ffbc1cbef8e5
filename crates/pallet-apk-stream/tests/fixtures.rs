//! Real packages made by others (`../shared/fixtures`): they must verify, and every kind of
//! tampering must be caught with its own error.

use pallet_test_support::shared;
use std::fs;
use std::path::{Path, PathBuf};

use pallet_apk_stream::{ApkError, ReadOptions, Trust, read_apk};
use pallet_keys::{Keyring, SigAlg};

fn verify(path: &Path, ring: &Keyring) -> Result<Trust, ApkError> {
    let f = fs::File::open(path)?;
    let opts = ReadOptions {
        keyring: Some(ring),
        ..ReadOptions::default()
    };
    read_apk(f, &opts, |_, _| Ok(())).map(|m| m.trust)
}

fn apks(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "apk"))
        .collect();
    v.sort();
    v
}

#[test]
fn all_alpine_packages_verify() {
    let Some(s) = shared() else { return };
    let a = s.join("fixtures/alpine-3.19");
    let ring = Keyring::from_paths([a.join("keys")]);
    let pkgs = apks(&a.join("x86_64"));
    assert_eq!(pkgs.len(), 100);
    for p in &pkgs {
        match verify(p, &ring) {
            Ok(Trust::Verified { alg, .. }) => assert_eq!(alg, SigAlg::RsaSha1),
            other => panic!("{}: {other:?}", p.display()),
        }
    }
}

#[test]
fn wolfi_sha1_packages_verify() {
    let Some(s) = shared() else { return };
    let w = s.join("fixtures/wolfi");
    let ring = Keyring::from_paths([w.join("keys")]);
    let pkgs = apks(&w.join("x86_64"));
    assert_eq!(pkgs.len(), 3);
    for p in &pkgs {
        verify(p, &ring).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    }
}

/// Offsets of the gzip members, found by decoding them one after another.
fn member_bounds(bytes: &[u8]) -> Vec<(usize, usize)> {
    use std::io::{BufRead, Read};
    let mut out = vec![];
    let mut cur = bytes;
    let mut start = 0;
    while !cur.is_empty() {
        let before = cur.len();
        let mut d = flate2::bufread::GzDecoder::new(&mut cur);
        std::io::copy(&mut d, &mut std::io::sink()).unwrap();
        let _ = d.read(&mut []);
        let _ = (&mut cur).fill_buf();
        let used = before - cur.len();
        out.push((start, start + used));
        start += used;
    }
    out
}

#[test]
fn tampering_is_caught() {
    let Some(s) = shared() else { return };
    let a = s.join("fixtures/alpine-3.19");
    let ring = Keyring::from_paths([a.join("keys")]);
    let pkg = a.join("x86_64/zlib-1.3.1-r0.apk");
    let bytes = fs::read(&pkg).unwrap();
    let bounds = member_bounds(&bytes);
    assert_eq!(bounds.len(), 3, "signature, control, data");
    let dir = tempfile::tempdir().unwrap();
    for (i, (lo, hi)) in bounds.iter().enumerate() {
        let mut b = bytes.clone();
        b[(lo + hi) / 2] ^= 0x55;
        let p = dir.path().join(format!("t{i}.apk"));
        fs::write(&p, &b).unwrap();
        let err = verify(&p, &ring).expect_err("flipped byte accepted");
        eprintln!("stream {i}: {err}");
    }
    // A different key stored under the right name: a bad signature, not "untrusted".
    let wrong = tempfile::tempdir().unwrap();
    let imposter = a.join("keys/alpine-devel@lists.alpinelinux.org-4a6a0840.rsa.pub");
    for k in fs::read_dir(a.join("keys")).unwrap() {
        let k = k.unwrap();
        fs::copy(&imposter, wrong.path().join(k.file_name())).unwrap();
    }
    let err = verify(&pkg, &Keyring::from_paths([wrong.path().to_path_buf()])).unwrap_err();
    assert!(matches!(err, ApkError::BadSignature { .. }), "{err}");
    let none = tempfile::tempdir().unwrap();
    let err = verify(&pkg, &Keyring::from_paths([none.path().to_path_buf()])).unwrap_err();
    assert!(matches!(err, ApkError::Untrusted { .. }), "{err}");
    let p = dir.path().join("trunc.apk");
    fs::write(&p, &bytes[..30000]).unwrap();
    let err = verify(&p, &ring).unwrap_err();
    assert!(matches!(err, ApkError::Io(_)), "{err}");
}

#[test]
fn upstream_rsa256_index_verifies() {
    let Some(s) = shared() else { return };
    let idx = s.join("fixtures/upstream-testdata/apko/rsa256-signed");
    let ring = Keyring::from_paths([idx.join("test-rsa256.rsa.pub")]);
    let (trust, entries) = pallet_apk_stream::read_signed_archive(
        fs::File::open(idx.join("APKINDEX.tar.gz")).unwrap(),
        Some(&ring),
        1 << 30,
    )
    .unwrap();
    assert!(matches!(
        trust,
        Trust::Verified {
            alg: SigAlg::RsaSha256,
            ..
        }
    ));
    assert!(entries.iter().any(|(n, _)| n == "APKINDEX"));
}
