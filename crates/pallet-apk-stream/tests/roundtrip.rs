//! Packages pallet writes read back to the same metadata and files, byte-identically each time;
//! hostile archives are refused without panicking.

use std::fs;
use std::io::Write;
use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::Path;

use pallet_apk_stream::tarw::{self, EntryHeader, Kind};
use pallet_apk_stream::{ApkError, ReadOptions, WriteOptions, read_apk, write_apk};
use pallet_apk_types::{Dependency, PackageInfo};
use pallet_keys::{Keyring, SigningKey};

fn stage(root: &Path) {
    fs::create_dir_all(root.join("usr/bin")).unwrap();
    fs::create_dir_all(root.join("etc/app")).unwrap();
    fs::write(root.join("usr/bin/hello"), b"#!/bin/sh\necho hello\n").unwrap();
    fs::set_permissions(
        root.join("usr/bin/hello"),
        fs::Permissions::from_mode(0o755),
    )
    .unwrap();
    fs::write(root.join("etc/app/conf"), b"x=1\n").unwrap();
    fs::set_permissions(root.join("etc/app/conf"), fs::Permissions::from_mode(0o640)).unwrap();
    symlink("hello", root.join("usr/bin/hi")).unwrap();
    fs::hard_link(root.join("usr/bin/hello"), root.join("usr/bin/hello2")).unwrap();
    fs::write(root.join("usr/bin/empty"), b"").unwrap();
}

fn info() -> PackageInfo {
    PackageInfo {
        name: "hello".into(),
        version: "1.0-r0".into(),
        arch: "x86_64".into(),
        description: "says hello".into(),
        license: "MIT".into(),
        origin: Some("hello".into()),
        depends: vec![Dependency::parse("busybox").unwrap()],
        provides: vec![Dependency::parse("cmd:hello=1.0-r0").unwrap()],
        build_time: 1_700_000_000,
        ..Default::default()
    }
}

#[test]
fn round_trip_and_byte_identical() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    stage(&root);
    pallet_keys::generate(&dir.path().join("k.rsa"), 2048).unwrap();
    let key = SigningKey::load(&dir.path().join("k.rsa")).unwrap();
    let opts = WriteOptions {
        source_date_epoch: 1_700_000_000,
        signing_key: Some(&key),
        ..Default::default()
    };
    let scripts = vec![(".post-install".to_string(), b"#!/bin/sh\ntrue\n".to_vec())];
    let a = dir.path().join("a.apk");
    let w1 = write_apk(&root, &info(), &scripts, &opts, &a).unwrap();
    // Touch the tree (mtimes move on) and write again: the bytes must not change.
    std::thread::sleep(std::time::Duration::from_millis(1100));
    fs::write(root.join("etc/app/conf"), b"x=1\n").unwrap();
    let b = dir.path().join("b.apk");
    let w2 = write_apk(&root, &info(), &scripts, &opts, &b).unwrap();
    assert!(
        fs::read(&a).unwrap() == fs::read(&b).unwrap(),
        "the two packages differ"
    );
    assert_eq!(w1.info.checksum, w2.info.checksum);

    let ring = Keyring::from_paths([dir.path().join("k.rsa.pub")]);
    let mut files = vec![];
    let meta = read_apk(
        fs::File::open(&a).unwrap(),
        &ReadOptions {
            keyring: Some(&ring),
            ..Default::default()
        },
        |e, r| {
            let mut content = vec![];
            r.read_to_end(&mut content).unwrap();
            files.push((e.path.clone(), e.kind, e.mode, e.link.clone(), content));
            Ok(())
        },
    )
    .unwrap();
    let mut want = info();
    want.installed_size = meta.info.installed_size;
    want.datahash = meta.info.datahash.clone();
    assert_eq!(meta.info, want);
    assert_eq!(meta.identity, w1.info.checksum.unwrap());
    assert_eq!(meta.scripts, scripts);
    let paths: Vec<&str> = files.iter().map(|f| f.0.as_str()).collect();
    assert_eq!(
        paths,
        [
            "etc",
            "etc/app",
            "etc/app/conf",
            "usr",
            "usr/bin",
            "usr/bin/empty",
            "usr/bin/hello",
            "usr/bin/hello2",
            "usr/bin/hi"
        ]
    );
    let conf = &files[2];
    assert_eq!((conf.2, conf.4.as_slice()), (0o640, &b"x=1\n"[..]));
    assert_eq!(files[7].1, Kind::HardLink);
    assert_eq!(files[7].3, "usr/bin/hello");
    assert_eq!((files[8].1, files[8].3.as_str()), (Kind::Symlink, "hello"));
}

/// A hand-made unsigned package whose data section holds `entries`.
fn handmade(entries: &[(EntryHeader<'_>, &[u8])], pkginfo: &str) -> Vec<u8> {
    let gz = |b: &[u8]| {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        e.write_all(b).unwrap();
        e.finish().unwrap()
    };
    let mut control = vec![];
    let h = EntryHeader {
        path: ".PKGINFO",
        ..base("")
    };
    tarw::write_entry(&mut control, &h, pkginfo.as_bytes()).unwrap();
    let mut out = gz(&control);
    out.extend(handmade_data(entries));
    out
}

fn base(path: &str) -> EntryHeader<'_> {
    EntryHeader {
        path,
        kind: Kind::File,
        mode: 0o644,
        uid: 0,
        gid: 0,
        uname: "root",
        gname: "root",
        mtime: 0,
        size: 0,
        link: "",
        dev_major: 0,
        dev_minor: 0,
        pax: &[],
    }
}

fn read(bytes: &[u8], max_data: u64) -> Result<usize, ApkError> {
    let mut n = 0;
    read_apk(
        bytes,
        &ReadOptions {
            max_data_size: max_data,
            ..Default::default()
        },
        |_, _| {
            n += 1;
            Ok(())
        },
    )
    .map(|_| n)
}

const PKGINFO: &str = "pkgname = evil\npkgver = 1-r0\n";

#[test]
fn hostile_entries_are_refused() {
    let dir = |p| EntryHeader {
        kind: Kind::Dir,
        mode: 0o755,
        ..base(p)
    };
    let cases: Vec<Vec<(EntryHeader<'_>, &[u8])>> = vec![
        vec![(base("../escape"), b"x")],
        vec![(base("/etc/passwd"), b"x")],
        vec![(dir("a"), b""), (base("a/../../x"), b"x")],
        vec![(base("nodir/file"), b"x")],
        vec![(
            EntryHeader {
                kind: Kind::HardLink,
                link: "/etc/shadow",
                ..base("link")
            },
            b"",
        )],
        vec![(
            EntryHeader {
                kind: Kind::HardLink,
                link: "later",
                ..base("link")
            },
            b"",
        )],
        vec![(base("bad\nname"), b"x")],
    ];
    for (i, c) in cases.iter().enumerate() {
        let err = read(&handmade(c, PKGINFO), 1 << 30).expect_err(&format!("case {i} accepted"));
        assert!(matches!(err, ApkError::Malicious { .. }), "case {i}: {err}");
    }
    // Absolute symlink targets are legitimate (they resolve inside the image at run time).
    let ok = vec![
        (dir("bin"), &b""[..]),
        (
            EntryHeader {
                kind: Kind::Symlink,
                link: "/bin/busybox",
                ..base("bin/sh")
            },
            b"",
        ),
    ];
    assert_eq!(read(&handmade(&ok, PKGINFO), 1 << 30).unwrap(), 2);
}

#[test]
fn bad_checksum_and_bombs() {
    let pax = [(
        "APK-TOOLS.checksum.SHA1".to_string(),
        b"0000000000000000000000000000000000000000".to_vec(),
    )];
    let bad = vec![(
        EntryHeader {
            pax: &pax,
            ..base("f")
        },
        &b"content"[..],
    )];
    let err = read(&handmade(&bad, PKGINFO), 1 << 30).unwrap_err();
    assert!(
        matches!(err, ApkError::BadChecksum { ref path } if path == "f"),
        "{err}"
    );
    // A data section that inflates past the limit stops at the limit.
    let zeros = vec![0u8; 4 << 20];
    let big = vec![(base("big"), zeros.as_slice())];
    let err = read(&handmade(&big, PKGINFO), 1 << 20).unwrap_err();
    assert!(matches!(err, ApkError::TooLarge { .. }), "{err}");
    // No package name in .PKGINFO.
    let err = read(&handmade(&[], "garbage line\n= =\n"), 1 << 30).unwrap_err();
    assert!(matches!(err, ApkError::Format(_)), "{err}");
}

/// A package whose data section matches its datahash vouches for every byte of it, the
/// per-file checksums included: a wrong one is taken as given, as apk-tools takes it (into its
/// database, without computing it). A section that does not match is refused whatever its
/// per-file checksums say.
#[test]
fn a_datahash_vouches_for_the_files_and_a_wrong_one_refuses_them() {
    use sha2::Digest as _;
    let pax = [(
        "APK-TOOLS.checksum.SHA1".to_string(),
        b"0000000000000000000000000000000000000000".to_vec(),
    )];
    let entries = vec![(
        EntryHeader {
            pax: &pax,
            ..base("f")
        },
        &b"content"[..],
    )];
    // The data member is made the same way every time: its hash is the package's datahash.
    let data_member = handmade_data(&entries);
    let hash = hex::encode(sha2::Sha256::digest(&data_member));
    let with = |h: &str| {
        let info = format!("{PKGINFO}datahash = {h}\n");
        handmade(&entries, &info)
    };
    let mut seen = None;
    read_apk(&with(&hash)[..], &ReadOptions::default(), |e, _| {
        seen = e.sha1;
        Ok(())
    })
    .expect("the datahash matches");
    assert_eq!(
        seen,
        Some([0u8; 20]),
        "the checksum as the package gives it"
    );
    let err = read(&with(&"0".repeat(64)), 1 << 30).unwrap_err();
    assert!(
        matches!(err, ApkError::BadDatahash | ApkError::BadChecksum { .. }),
        "{err}"
    );
}

/// The data member `handmade` makes of `entries`.
fn handmade_data(entries: &[(EntryHeader<'_>, &[u8])]) -> Vec<u8> {
    let mut data = vec![];
    for (h, content) in entries {
        tarw::write_entry(&mut data, h, content).unwrap();
    }
    tarw::write_end(&mut data).unwrap();
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(&data).unwrap();
    e.finish().unwrap()
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(256))]
    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..4096)) {
        let _ = read(&bytes, 1 << 20);
        let _ = pallet_apk_stream::read_signed_archive(&bytes[..], None, 1 << 20);
    }

    #[test]
    fn corrupted_real_package_never_panics(pos in 0usize..2000, val in proptest::num::u8::ANY) {
        let mut b = handmade(&[(base("f"), b"hello")], PKGINFO);
        let p = pos % b.len();
        b[p] ^= val;
        let _ = read(&b, 1 << 20);
    }
}
