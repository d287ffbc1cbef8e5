//! apko's certificate steps on packages made here: `certificates.additional` and
//! `certificates.providers` join the CA bundle and the Java truststore (a JKS made by the
//! JDK's `keytool` when it is installed, and read back by it), and every image gets
//! `sha256sum` sidecars beside its stores, checked with `sha256sum -c`.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use pallet_apk_types::{Dependency, PackageInfo};
use pallet_fs::Tree;
use pallet_image::build::{self, BuildOptions};
use pallet_image::certs::{self, jks};
use pallet_image::config::{self, Arch};

/// Self-signed P-256 certificates made with `openssl req -x509` for this test.
const CERT_A: &str = "-----BEGIN CERTIFICATE-----
MIIBdTCCARqgAwIBAgIBATAKBggqhkjOPQQDAjAYMRYwFAYDVQQDDA1wYWxsZXQg
dGVzdCBhMCAXDTI2MTIwMTIyNTUyOVoYDzIxMjYxMTA3MjI1NTI5WjAYMRYwFAYD
VQQDDA1wYWxsZXQgdGVzdCBhMFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEht0A
anVz/U+caamDhsK8skYatVXLSBflvHYylkfE9TudHzQLmpewGWHKpKLMk4Qprk16
n07pXWwLPWWraHNtWqNTMFEwHQYDVR0OBBYEFNpHZ0TNeMatjVEUID9meVAzmTU4
MB8GA1UdIwQYMBaAFNpHZ0TNeMatjVEUID9meVAzmTU4MA8GA1UdEwEB/wQFMAMB
Af8wCgYIKoZIzj0EAwIDSQAwRgIhAL7WVPWCG6G74JjHxDFjl5jyjZOxxrxPAjdT
tQvuC3TUAiEAoi66wfiXmK82AgrQeyVgsNthx3uDPE8Xho/9hViACa4=
-----END CERTIFICATE-----
";
const FP_A: &str = "3045e906ad880025f95b317fe4458fd86d3d6ce0675c2f70dd68e049af7c42da";
const CERT_B: &str = "-----BEGIN CERTIFICATE-----
MIIBdDCCARqgAwIBAgIBATAKBggqhkjOPQQDAjAYMRYwFAYDVQQDDA1wYWxsZXQg
dGVzdCBiMCAXDTI2MTIwMTIyNTUyOVoYDzIxMjYxMTA3MjI1NTI5WjAYMRYwFAYD
VQQDDA1wYWxsZXQgdGVzdCBiMFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEgCiS
nFDbUu7cs48mtyQtzlUVnEtM6fWy+U4gUAdjkym5J8zn0lwEuK0dYD4mhPJ2ntaI
s+F+k7z6oi6rIYUDPaNTMFEwHQYDVR0OBBYEFCqdtV2xofbS7WrT5qL+WX+xlgGA
MB8GA1UdIwQYMBaAFCqdtV2xofbS7WrT5qL+WX+xlgGAMA8GA1UdEwEB/wQFMAMB
Af8wCgYIKoZIzj0EAwIDSAAwRQIgAsFlrk2tNhGf0V9cCB/e8xKZvisIJwYiPrRC
J/usXdMCIQCkxSGfpq2LU5B0ihd30La8DjafwivD2IEyIO9nBrexoA==
-----END CERTIFICATE-----
";
const FP_B: &str = "c6a2501c97ee3361ab183af43859972998f5db86b555c53d7bf7cf7d42d2118d";
const EPOCH: u64 = 1_700_000_000;
const BUNDLE: &str = "etc/ssl/certs/ca-certificates.crt";
const CACERTS: &str = "etc/ssl/certs/java/cacerts";

fn keytool() -> bool {
    let ok = Command::new("keytool").arg("-help").output().is_ok();
    if !ok {
        eprintln!(
            "SKIPPED: keytool is not installed (scripts/install-deps.sh installs default-jre-headless); the JKS is checked by pallet's own reader only"
        );
    }
    ok
}

/// Stage `files` and write them as package `name` providing `provides`.
fn package(work: &Path, name: &str, provides: &[&str], files: &[(&str, Vec<u8>)]) -> PathBuf {
    let root = work.join(format!("stage-{name}"));
    for (p, data) in files {
        let path = root.join(p);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(&path, data).unwrap();
    }
    let info = PackageInfo {
        name: name.into(),
        version: "1.0-r0".into(),
        arch: "x86_64".into(),
        description: format!("{name} for the certificates test"),
        license: "MIT".into(),
        origin: Some(name.into()),
        provides: provides
            .iter()
            .map(|d| Dependency::parse(d).unwrap())
            .collect(),
        ..PackageInfo::default()
    };
    let out = work.join(format!("repo/x86_64/{name}-1.0-r0.apk"));
    fs::create_dir_all(out.parent().unwrap()).unwrap();
    pallet_apk_stream::writer::write_apk(
        &root,
        &info,
        &[],
        &pallet_apk_stream::writer::WriteOptions::default(),
        &out,
    )
    .unwrap();
    out
}

/// A Java truststore holding CERT_B as `orig`: made by keytool when there is one.
fn truststore(work: &Path) -> Vec<u8> {
    let path = work.join("orig.jks");
    if keytool() {
        fs::write(work.join("b.pem"), CERT_B).unwrap();
        let o = Command::new("keytool")
            .args(["-importcert", "-noprompt", "-alias", "Orig", "-file"])
            .arg(work.join("b.pem"))
            .args(["-keystore"])
            .arg(&path)
            .args(["-storetype", "JKS", "-storepass", "changeit"])
            .output()
            .unwrap();
        assert!(o.status.success(), "{o:?}");
        return fs::read(&path).unwrap();
    }
    let mut ks = jks::KeyStore::default();
    let der = certs::parse_certificate(CERT_B).unwrap().der;
    ks.add_trusted("orig", &der, 1_000);
    ks.write(certs::TRUSTSTORE_PASSWORD).unwrap()
}

/// The repository: a CA bundle and truststore package, a provider of `custom-ca-certificates`
/// with one certificate (plus a two-certificate file and a note, both passed over), and a
/// package providing only a versioned `custom-ca-certificates=1.0`, which apko does not take
/// for the plain name.
fn repo(work: &Path) {
    let bundle_text = CERT_B.to_string();
    let pkgs = [
        package(
            work,
            "ca-stores",
            &[],
            &[
                (BUNDLE, bundle_text.into_bytes()),
                (CACERTS, truststore(work)),
            ],
        ),
        package(
            work,
            "corp-ca",
            &["custom-ca-certificates"],
            &[
                (
                    "usr/local/share/ca-certificates/corp.crt",
                    CERT_A.as_bytes().to_vec(),
                ),
                (
                    "usr/local/share/ca-certificates/both.pem",
                    format!("{CERT_A}{CERT_B}").into_bytes(),
                ),
                (
                    "usr/local/share/ca-certificates/README",
                    b"notes\n".to_vec(),
                ),
            ],
        ),
        package(
            work,
            "versioned-ca",
            &["custom-ca-certificates=1.0"],
            &[(
                "usr/local/share/ca-certificates/versioned.crt",
                CERT_B.as_bytes().to_vec(),
            )],
        ),
    ];
    let records: Vec<PackageInfo> = pkgs
        .iter()
        .map(|p| pallet_index::record_for(p, None).unwrap())
        .collect();
    pallet_index::write_index(
        &records,
        None,
        None,
        0,
        &work.join("repo/x86_64/APKINDEX.tar.gz"),
    )
    .unwrap();
}

fn install(work: &Path, name: &str, packages: &str, extra: &str) -> Tree {
    let yaml = work.join(format!("{name}.yaml"));
    fs::write(
        &yaml,
        format!(
            "contents:\n  repositories: [{}]\n  packages: [{packages}]\n{extra}archs: [x86_64]\n",
            work.join("repo").display()
        ),
    )
    .unwrap();
    let loaded = config::load(&yaml, &[]).unwrap();
    let opts = BuildOptions {
        cache_dir: work.join("cache"),
        epoch: Some(EPOCH),
        ignore_signatures: true,
        ..BuildOptions::default()
    };
    build::install(&loaded.config, Arch::parse("x86_64").unwrap(), &opts)
        .unwrap()
        .tree
}

fn read(t: &Tree, p: &str) -> Vec<u8> {
    t.read(p)
        .unwrap()
        .unwrap_or_else(|| panic!("{p} is missing"))
}

/// The sidecar of `store` holds the store's sum in `sha256sum -c` form, read-only, stamped
/// with the build date.
fn check_sidecar(t: &Tree, work: &Path, store: &str) {
    let side = certs::sidecar(store);
    let n = t.get(&side).unwrap_or_else(|| panic!("no {side}"));
    assert_eq!((n.mode, n.mtime), (0o444, EPOCH), "{side}");
    let dir = work.join("sums");
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).unwrap();
    let base = store.rsplit('/').next().unwrap();
    fs::write(dir.join(base), read(t, store)).unwrap();
    fs::write(dir.join("sidecar"), read(t, &side)).unwrap();
    let o = Command::new("sha256sum")
        .args(["-c", "sidecar"])
        .current_dir(&dir)
        .output()
        .unwrap();
    assert!(o.status.success(), "{side}: {o:?}");
}

#[test]
fn additional_and_provided_certificates_join_the_bundle_and_the_truststore() {
    let tmp = tempfile::tempdir().unwrap();
    let work = tmp.path();
    repo(work);
    let original_store = fs::read(work.join("stage-ca-stores").join(CACERTS)).unwrap();
    let t = install(
        work,
        "with",
        "ca-stores, corp-ca, versioned-ca",
        &format!(
            "certificates:\n  additional:\n    - name: Extra\n      content: |\n{}  providers: [custom-ca-certificates]\n",
            CERT_B
                .lines()
                .map(|l| format!("        {l}\n"))
                .collect::<String>()
        ),
    );
    // The additional certificate's own file, named by its fingerprint.
    let own = format!("usr/local/share/ca-certificates/Extra-{FP_B}.crt");
    assert_eq!(read(&t, &own), CERT_B.as_bytes());
    assert_eq!(
        (t.get(&own).unwrap().mode, t.get(&own).unwrap().mtime),
        (0o644, EPOCH)
    );
    // The bundle: what the package had, then the additional one, then the provider's one
    // (not the two-certificate file, not the versioned provider), each with a blank line.
    let bundle = String::from_utf8(read(&t, BUNDLE)).unwrap();
    assert_eq!(bundle, format!("{CERT_B}{CERT_B}\n{CERT_A}\n"));
    assert_eq!(t.get(BUNDLE).unwrap().mtime, EPOCH);
    // The truststore: the old entry, then the new ones by alias.
    let store = read(&t, CACERTS);
    let ks = jks::KeyStore::read(&store, "changeit").unwrap();
    let aliases: Vec<&str> = ks.entries.keys().map(String::as_str).collect();
    assert_eq!(
        aliases,
        [
            format!("extra-{FP_B}").as_str(),
            "orig",
            format!("pkg-{FP_A}").as_str()
        ]
    );
    let old = jks::KeyStore::read(&original_store, "changeit").unwrap();
    assert_eq!(ks.entries["orig"], old.entries["orig"], "kept as it was");
    match &ks.entries[&format!("pkg-{FP_A}")] {
        jks::Entry::Trusted { created_ms, cert } => {
            assert_eq!(*created_ms, EPOCH * 1000);
            assert_eq!(cert.kind, "X.509");
            assert_eq!(cert.der, certs::parse_certificate(CERT_A).unwrap().der);
        }
        e => panic!("{e:?}"),
    }
    assert_eq!(t.get(CACERTS).unwrap().mtime, EPOCH);
    if keytool() {
        let f = work.join("cacerts.out");
        fs::write(&f, &store).unwrap();
        let o = Command::new("keytool")
            .args(["-list", "-keystore"])
            .arg(&f)
            .args(["-storepass", "changeit"])
            .output()
            .unwrap();
        let out = String::from_utf8_lossy(&o.stdout);
        assert!(
            o.status.success(),
            "{out}{}",
            String::from_utf8_lossy(&o.stderr)
        );
        assert!(out.contains("Your keystore contains 3 entries"), "{out}");
        for a in [
            format!("extra-{FP_B}"),
            "orig".into(),
            format!("pkg-{FP_A}"),
        ] {
            assert!(out.contains(&format!("{a}, ")), "{a} not listed:\n{out}");
        }
    }
    check_sidecar(&t, work, BUNDLE);
    check_sidecar(&t, work, CACERTS);
    // No sidecar for stores the image does not have.
    for b in &certs::BUNDLES[1..] {
        assert!(t.get(&certs::sidecar(b)).is_none());
    }
}

#[test]
fn every_image_with_a_store_gets_sidecars_and_nothing_else_changes() {
    let tmp = tempfile::tempdir().unwrap();
    let work = tmp.path();
    repo(work);
    let t = install(work, "plain", "ca-stores, corp-ca", "");
    // Without `certificates`, providers are not read and the stores stay as packaged.
    assert_eq!(read(&t, BUNDLE), CERT_B.as_bytes());
    assert_eq!(
        read(&t, CACERTS),
        fs::read(work.join("stage-ca-stores").join(CACERTS)).unwrap()
    );
    check_sidecar(&t, work, BUNDLE);
    check_sidecar(&t, work, CACERTS);
    // `certificates` with nothing to add changes no store either.
    let t = install(
        work,
        "none",
        "ca-stores",
        "certificates:\n  providers: [custom-ca-certificates]\n",
    );
    assert_eq!(read(&t, BUNDLE), CERT_B.as_bytes());
    assert_ne!(
        t.get(BUNDLE).unwrap().mtime,
        EPOCH,
        "the package's own time"
    );
    check_sidecar(&t, work, BUNDLE);
    // An image without stores has no sidecars.
    let t = install(work, "bare", "corp-ca", "");
    assert!(t.nodes.keys().all(|k| !k.ends_with(".sha256")));
}
