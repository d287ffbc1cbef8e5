//! apko's certificate steps (`pkg/build/certificates.go`): `certificates.additional` and
//! `certificates.providers` join the image's CA bundles and Java truststore, and every image
//! then gets `sha256sum` sidecars beside those stores.
//!
//! The rules followed, all from apko:
//! - a certificate is exactly one PEM `CERTIFICATE` block holding an X.509 certificate; it is
//!   re-encoded (text around the block is dropped) and named by the SHA-256 of its DER bytes;
//! - an additional certificate is written to `usr/local/share/ca-certificates/<name>-<fp>.crt`
//!   and joins the truststore as `<name>-<fp>`; a provider's files (`.crt` or `.pem` under
//!   that folder, owned by an installed package one of whose `provides` is listed, compared
//!   as whole strings) join in path order as `pkg-<fp>`, and a file that is not exactly one
//!   certificate is skipped;
//! - the bundles and the truststore are only changed when they exist (symlinks followed), and
//!   only when there is a certificate to add; nothing creates them;
//! - the sidecars are written whether or not `certificates` is configured, for each store the
//!   image has.

use std::collections::BTreeMap;

use pallet_apk_stream::tarw::Kind;
use pallet_apk_types::InstalledPackage;
use pallet_fs::{Node, Tree};

use crate::config::ImageConfiguration;

/// Where update-ca-certificates reads single certificates from.
pub const CA_CERTS_DIR: &str = "usr/local/share/ca-certificates";

/// The PEM bundles apko appends to: Alpine's and Wolfi's, AWS ECS's and kaniko's.
pub const BUNDLES: [&str; 3] = [
    "etc/ssl/certs/ca-certificates.crt",
    "var/lib/ecs/deps/execute-command/certs/tls-ca-bundle.pem",
    "kaniko/ssl/certs/ca-certificates.crt",
];

/// The Java truststores apko adds to.
pub const TRUSTSTORES: [&str; 1] = ["etc/ssl/certs/java/cacerts"];

/// The password every JDK ships its `cacerts` with.
pub const TRUSTSTORE_PASSWORD: &str = "changeit";

#[derive(Debug, thiserror::Error)]
pub enum CertError {
    #[error("certificates.additional `{name}`: {message}")]
    Additional { name: String, message: String },
    #[error(
        "Failed to read certificate file `{path}` (listed by a `certificates.providers` package)"
    )]
    ProviderFileMissing { path: String },
    #[error("`{path}` is not a regular file, so certificates cannot be added to it")]
    NotAFile { path: String },
    #[error("Failed to load Java truststore `{path}`")]
    Truststore {
        path: String,
        #[source]
        source: jks::JksError,
    },
    #[error("Failed to read `{path}`")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

/// One certificate as apko keeps it: the DER bytes, the re-encoded PEM and the hex SHA-256
/// of the DER.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Certificate {
    pub der: Vec<u8>,
    pub pem: String,
    pub fingerprint: String,
}

/// Where a path finally leads when opened (each symlink followed, at most 40), whether or not
/// the last one exists: apko's file system opens, appends to and stamps a link's target.
fn target(tree: &Tree, path: &str) -> Option<String> {
    let mut p = path.trim_start_matches('/').to_string();
    for _ in 0..40 {
        let real = tree.real_path(&p)?;
        match tree.nodes.get(&real) {
            Some(n) if n.kind == Kind::Symlink => {
                p = if let Some(abs) = n.link.strip_prefix('/') {
                    abs.to_string()
                } else {
                    match real.rsplit_once('/') {
                        Some((dir, _)) => format!("{dir}/{}", n.link),
                        None => n.link.clone(),
                    }
                };
            }
            // A hard link reads as the file it names.
            Some(n) if n.kind == Kind::HardLink => p = n.link.trim_start_matches('/').to_string(),
            _ => return Some(normalize(&real)),
        }
    }
    None
}

/// `a/./b/../c` as `a/c`: link targets may climb.
fn normalize(p: &str) -> String {
    let mut out: Vec<&str> = vec![];
    for c in p.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                out.pop();
            }
            c => out.push(c),
        }
    }
    out.join("/")
}

/// The regular file `path` leads to, if any: `Ok(None)` when nothing is there (or a link
/// dangles), an error when it is a directory or a device, as opening it is in apko.
fn existing_file(tree: &Tree, path: &str) -> Result<Option<String>, CertError> {
    let Some(real) = target(tree, path) else {
        return Ok(None);
    };
    match tree.nodes.get(&real) {
        None => Ok(None),
        Some(n) if n.kind == Kind::File => Ok(Some(real)),
        Some(_) => Err(CertError::NotAFile { path: real }),
    }
}

fn read(tree: &Tree, real: &str) -> Result<Vec<u8>, CertError> {
    tree.read(real)
        .map_err(|source| CertError::Read {
            path: real.to_string(),
            source,
        })
        .map(Option::unwrap_or_default)
}

/// Write a file where `path` leads; an existing file keeps its mode, a new one gets `mode`.
fn write(tree: &mut Tree, path: &str, data: Vec<u8>, mode: u32, mtime: u64) {
    let real = target(tree, path).unwrap_or_else(|| path.to_string());
    let mode = tree
        .nodes
        .get(&real)
        .filter(|n| n.kind == Kind::File)
        .map_or(mode, |n| n.mode);
    let old = tree.nodes.get(&real).cloned();
    let mut node = Node::file(data, mode, mtime);
    if let Some(o) = old.filter(|n| n.kind == Kind::File) {
        // Ownership and attributes stay, as a rewrite in place keeps them.
        node.uid = o.uid;
        node.gid = o.gid;
        node.xattrs = o.xattrs;
        node.owner = o.owner;
    }
    tree.nodes.insert(real, node);
}

/// apko's `installCertificates`. `base` are the packages of a base image, which apko counts
/// as installed too.
pub fn install(
    tree: &mut Tree,
    cfg: &ImageConfiguration,
    base: &[InstalledPackage],
    epoch: u64,
) -> Result<(), CertError> {
    let Some(c) = &cfg.certificates else {
        return Ok(());
    };
    // (certificate, truststore alias)
    let mut certs: Vec<(Certificate, String)> = vec![];
    if !c.additional.is_empty() {
        // apko creates the folder with a zero time, which a layer writes as 0.
        tree.mkdir_all(CA_CERTS_DIR, 0o755, 0);
        for a in &c.additional {
            let cert = parse_certificate(&a.content).map_err(|message| CertError::Additional {
                name: a.name.clone(),
                message,
            })?;
            write(
                tree,
                &format!("{CA_CERTS_DIR}/{}-{}.crt", a.name, cert.fingerprint),
                cert.pem.clone().into_bytes(),
                0o644,
                epoch,
            );
            let alias = format!("{}-{}", a.name, cert.fingerprint);
            certs.push((cert, alias));
        }
    }
    if !c.providers.is_empty() {
        let mut files: Vec<String> = vec![];
        let installed = tree.installed_db();
        for p in base.iter().chain(&installed) {
            if !p
                .info
                .provides
                .iter()
                .any(|d| c.providers.contains(&d.to_string()))
            {
                continue;
            }
            for d in &p.dirs {
                for f in &d.files {
                    let name = if d.path.is_empty() {
                        f.name.clone()
                    } else {
                        format!("{}/{}", d.path, f.name)
                    };
                    if name.starts_with(&format!("{CA_CERTS_DIR}/"))
                        && (name.ends_with(".crt") || name.ends_with(".pem"))
                    {
                        files.push(name);
                    }
                }
            }
        }
        files.sort();
        for f in files {
            let real = existing_file(tree, &f)?
                .ok_or(CertError::ProviderFileMissing { path: f.clone() })?;
            let data = read(tree, &real)?;
            // Bundles and keys that happen to sit there are not certificates: skipped.
            let Ok(cert) = parse_certificate(&String::from_utf8_lossy(&data)) else {
                continue;
            };
            let alias = format!("pkg-{}", cert.fingerprint);
            certs.push((cert, alias));
        }
    }
    if certs.is_empty() {
        return Ok(());
    }
    // Two bundle paths leading to one file each get the certificates, as two appending
    // handles would.
    let mut bundles = vec![];
    for b in BUNDLES {
        if let Some(real) = existing_file(tree, b)? {
            bundles.push(real);
        }
    }
    let mut stores = vec![];
    for t in TRUSTSTORES {
        if let Some(real) = existing_file(tree, t)? {
            let ks = jks::KeyStore::read(&read(tree, &real)?, TRUSTSTORE_PASSWORD).map_err(
                |source| CertError::Truststore {
                    path: real.clone(),
                    source,
                },
            )?;
            stores.push((real, ks));
        }
    }
    let mut appended: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    for (cert, alias) in &certs {
        for b in &bundles {
            let data = match appended.get_mut(b) {
                Some(d) => d,
                None => {
                    let old = read(tree, b)?;
                    appended.entry(b.clone()).or_insert(old)
                }
            };
            // A blank line after each, as update-ca-certificates leaves them.
            data.extend_from_slice(cert.pem.as_bytes());
            data.push(b'\n');
        }
        for (_, ks) in &mut stores {
            ks.add_trusted(alias, &cert.der, epoch.saturating_mul(1000));
        }
    }
    for (b, data) in appended {
        write(tree, &b, data, 0o644, epoch);
    }
    for (path, ks) in stores {
        let bytes = ks
            .write(TRUSTSTORE_PASSWORD)
            .map_err(|source| CertError::Truststore {
                path: path.clone(),
                source,
            })?;
        write(tree, &path, bytes, 0o644, epoch);
    }
    Ok(())
}

/// The sidecar apko writes beside a store: `etc/ssl/certs/.ca-certificates.crt.sha256`.
pub fn sidecar(path: &str) -> String {
    match path.rsplit_once('/') {
        Some((dir, base)) => format!("{dir}/.{base}.sha256"),
        None => format!(".{path}.sha256"),
    }
}

/// apko's `writeCABundleChecksums`: for every CA bundle and truststore the image has, a
/// read-only `sha256sum -c` line beside it, so integrity tools can later tell whether the
/// store changed after the build. It runs for every image, certificates configured or not.
pub fn write_checksums(tree: &mut Tree, epoch: u64) -> Result<(), CertError> {
    use sha2::Digest as _;
    for path in BUNDLES.iter().chain(&TRUSTSTORES) {
        let Some(real) = existing_file(tree, path)? else {
            continue;
        };
        let data = read(tree, &real)?;
        let base = path.rsplit('/').next().unwrap_or(path);
        let line = format!("{}  {base}\n", hex(&sha2::Sha256::digest(&data)));
        write(tree, &sidecar(path), line.into_bytes(), 0o444, epoch);
    }
    Ok(())
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|b| format!("{b:02x}")).collect()
}

/// One PEM block as Go's `encoding/pem` reads it.
#[derive(Debug, PartialEq, Eq)]
struct PemBlock {
    kind: String,
    headers: BTreeMap<String, String>,
    bytes: Vec<u8>,
}

/// A line without its `\n` (and a `\r` before it) and trailing blanks, and what follows.
fn get_line(data: &[u8]) -> (&[u8], &[u8]) {
    let (mut line, rest) = match data.iter().position(|&c| c == b'\n') {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &data[data.len()..]),
    };
    if rest.len() < data.len() && line.ends_with(b"\r") {
        line = &line[..line.len() - 1];
    }
    while let Some(l) = line.strip_suffix(b" ").or_else(|| line.strip_suffix(b"\t")) {
        line = l;
    }
    (line, rest)
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// The first PEM block in `data` and what follows it, with Go's rules: a block that does not
/// end properly or whose base64 is bad is passed over and the search goes on after its
/// `BEGIN` line.
fn pem_decode(data: &[u8]) -> Option<(PemBlock, &[u8])> {
    use base64::Engine as _;
    // Go's StdEncoding: padded, but loose about the unused bits of the last character.
    const B64: base64::engine::GeneralPurpose = base64::engine::GeneralPurpose::new(
        &base64::alphabet::STANDARD,
        base64::engine::GeneralPurposeConfig::new().with_decode_allow_trailing_bits(true),
    );
    let mut rest = data;
    loop {
        if let Some(r) = rest.strip_prefix(b"-----BEGIN ") {
            rest = r;
        } else {
            let i = find(rest, b"\n-----BEGIN ")?;
            rest = &rest[i + 12..];
        }
        let (type_line, after) = get_line(rest);
        rest = after;
        let Some(kind) = type_line.strip_suffix(b"-----") else {
            continue;
        };
        let mut headers = BTreeMap::new();
        loop {
            if rest.is_empty() {
                return None;
            }
            let (line, next) = get_line(rest);
            let Some(colon) = line.iter().position(|&c| c == b':') else {
                break;
            };
            let key = String::from_utf8_lossy(&line[..colon]).trim().to_string();
            let val = String::from_utf8_lossy(&line[colon + 1..])
                .trim()
                .to_string();
            headers.insert(key, val);
            rest = next;
        }
        let (end, trailer_at) = if headers.is_empty() && rest.starts_with(b"-----END ") {
            (0, 9)
        } else {
            match find(rest, b"\n-----END ") {
                Some(i) => (i, i + 10),
                None => continue,
            }
        };
        let trailer = &rest[trailer_at..];
        let want = kind.len() + 5;
        if trailer.len() < want
            || !trailer[..want].starts_with(kind)
            || !trailer[..want].ends_with(b"-----")
        {
            continue;
        }
        if !get_line(&trailer[want..]).0.is_empty() {
            continue;
        }
        let b64: Vec<u8> = rest[..end]
            .iter()
            .copied()
            .filter(|c| !matches!(c, b' ' | b'\t' | b'\r' | b'\n'))
            .collect();
        let Ok(bytes) = B64.decode(&b64) else {
            continue;
        };
        let (_, after) = get_line(&rest[end + 9..]);
        return Some((
            PemBlock {
                kind: String::from_utf8_lossy(kind).into_owned(),
                headers,
                bytes,
            },
            after,
        ));
    }
}

/// Go's `pem.Encode`: `Proc-Type` first, other headers sorted, base64 in 64-column lines.
fn pem_encode(b: &PemBlock) -> String {
    use base64::Engine as _;
    let mut out = format!("-----BEGIN {}-----\n", b.kind);
    if !b.headers.is_empty() {
        if let Some(v) = b.headers.get("Proc-Type") {
            out.push_str(&format!("Proc-Type: {v}\n"));
        }
        for (k, v) in b.headers.iter().filter(|(k, _)| *k != "Proc-Type") {
            out.push_str(&format!("{k}: {v}\n"));
        }
        out.push('\n');
    }
    let text = base64::engine::general_purpose::STANDARD.encode(&b.bytes);
    for chunk in text.as_bytes().chunks(64) {
        out.push_str(&String::from_utf8_lossy(chunk));
        out.push('\n');
    }
    out.push_str(&format!("-----END {}-----\n", b.kind));
    out
}

/// apko's `parseCertificates`: exactly one PEM block, of type `CERTIFICATE`, holding an X.509
/// certificate.
pub fn parse_certificate(text: &str) -> Result<Certificate, String> {
    use sha2::Digest as _;
    if text.is_empty() {
        return Err("no certificate data provided".into());
    }
    let mut found: Option<Certificate> = None;
    let mut rest = text.as_bytes();
    while let Some((block, after)) = pem_decode(rest) {
        rest = after;
        if found.is_some() {
            return Err("expected exactly one PEM certificate, found more".into());
        }
        if block.kind != "CERTIFICATE" {
            return Err(format!("expected a CERTIFICATE block, got {}", block.kind));
        }
        x509_shape(&block.bytes).map_err(|e| format!("not an X.509 certificate: {e}"))?;
        found = Some(Certificate {
            fingerprint: hex(&sha2::Sha256::digest(&block.bytes)),
            pem: pem_encode(&block),
            der: block.bytes,
        });
    }
    found.ok_or_else(|| "expected exactly one PEM certificate, found none".into())
}

/// One DER element: tag, contents, and what follows. Lengths must be minimal, as Go's
/// parser requires.
fn der(b: &[u8]) -> Result<(u8, &[u8], &[u8]), String> {
    let (&tag, b) = b.split_first().ok_or("truncated")?;
    if tag & 0x1f == 0x1f {
        return Err("high tag numbers are not used in certificates".into());
    }
    let (&l0, b) = b.split_first().ok_or("truncated")?;
    let (len, b) = if l0 < 0x80 {
        (usize::from(l0), b)
    } else {
        let n = usize::from(l0 & 0x7f);
        if n == 0 || n > 4 || b.len() < n {
            return Err("bad length".into());
        }
        let len = b[..n]
            .iter()
            .fold(0usize, |a, &x| (a << 8) | usize::from(x));
        if b[0] == 0 || len < 0x80 {
            return Err("length not minimally encoded".into());
        }
        (len, &b[n..])
    };
    if b.len() < len {
        return Err("truncated".into());
    }
    Ok((tag, &b[..len], &b[len..]))
}

/// The outline of an X.509 certificate (RFC 5280 §4.1): what Go's `x509.ParseCertificate`
/// checks first. The contents of names, times, keys and extensions are not judged.
fn x509_shape(b: &[u8]) -> Result<(), String> {
    let expect = |b: &[u8], want: u8, what: &str| -> Result<(Vec<u8>, Vec<u8>), String> {
        let (tag, body, rest) = der(b).map_err(|e| format!("{what}: {e}"))?;
        if tag != want {
            return Err(format!("{what}: unexpected tag {tag:#04x}"));
        }
        Ok((body.to_vec(), rest.to_vec()))
    };
    let (cert, rest) = expect(b, 0x30, "certificate")?;
    if !rest.is_empty() {
        return Err("trailing data".into());
    }
    let (tbs, rest) = expect(&cert, 0x30, "tbsCertificate")?;
    let (_, rest) = expect(&rest, 0x30, "signatureAlgorithm")?;
    let (_, rest) = expect(&rest, 0x03, "signatureValue")?;
    if !rest.is_empty() {
        return Err("trailing data in certificate".into());
    }
    let mut t = tbs;
    if t.first() == Some(&0xa0) {
        let (ver, rest) = expect(&t, 0xa0, "version")?;
        expect(&ver, 0x02, "version")?;
        t = rest;
    }
    for (want, what) in [
        (0x02, "serialNumber"),
        (0x30, "signature"),
        (0x30, "issuer"),
        (0x30, "validity"),
        (0x30, "subject"),
        (0x30, "subjectPublicKeyInfo"),
    ] {
        t = expect(&t, want, what)?.1;
    }
    while !t.is_empty() {
        let (tag, _, rest) = der(&t)?;
        if !matches!(tag, 0x81 | 0x82 | 0xa1 | 0xa2 | 0xa3) {
            return Err(format!("unexpected field {tag:#04x} in tbsCertificate"));
        }
        t = rest.to_vec();
    }
    Ok(())
}

/// Java KeyStore (JKS) files as the JDK writes them and as apko reads and writes them
/// (through keystore-go): big-endian, magic `0xFEEDFEED`, version 2 (1 is read too), a count,
/// the entries, then a SHA-1 over the password (each byte as a UTF-16 unit), the words
/// "Mighty Aphrodite" and everything before it.
pub mod jks {
    use std::collections::BTreeMap;

    const MAGIC: u32 = 0xfeed_feed;
    const PRIVATE_KEY: u32 = 1;
    const TRUSTED_CERT: u32 = 2;
    const WHITENER: &[u8] = b"Mighty Aphrodite";

    #[derive(Debug, thiserror::Error, PartialEq, Eq)]
    pub enum JksError {
        #[error("not a JKS keystore (magic {0:#010x}; a PKCS#12 store is not read)")]
        Magic(u32),
        #[error("unknown JKS version {0}")]
        Version(u32),
        #[error("unknown JKS entry tag {0}")]
        Tag(u32),
        #[error("the keystore ends early")]
        Truncated,
        #[error("the keystore's integrity hash does not match (wrong password or a damaged file)")]
        Digest,
        #[error("`{0}` is too long for a JKS string")]
        TooLong(String),
    }

    /// A certificate with its type (`X.509`, or `X509` from version 1 files).
    #[derive(Clone, Debug, PartialEq, Eq)]
    pub struct Cert {
        pub kind: String,
        pub der: Vec<u8>,
    }

    #[derive(Clone, Debug, PartialEq, Eq)]
    pub enum Entry {
        /// A key kept as the file has it (encrypted), with its chain.
        PrivateKey {
            created_ms: u64,
            key: Vec<u8>,
            chain: Vec<Cert>,
        },
        Trusted {
            created_ms: u64,
            cert: Cert,
        },
    }

    /// The entries by alias. Written in byte order of the aliases, which is apko's
    /// "ordered aliases" and keeps the file reproducible.
    #[derive(Clone, Debug, Default, PartialEq, Eq)]
    pub struct KeyStore {
        pub entries: BTreeMap<String, Entry>,
    }

    /// The password as the digest takes it: each byte after a zero byte.
    fn password_units(password: &str) -> Vec<u8> {
        password.bytes().flat_map(|b| [0, b]).collect()
    }

    struct Reader<'a> {
        b: &'a [u8],
        at: usize,
    }

    impl Reader<'_> {
        fn take(&mut self, n: usize) -> Result<&[u8], JksError> {
            let end = self.at.checked_add(n).ok_or(JksError::Truncated)?;
            let s = self.b.get(self.at..end).ok_or(JksError::Truncated)?;
            self.at = end;
            Ok(s)
        }
        fn u16(&mut self) -> Result<u16, JksError> {
            Ok(u16::from_be_bytes(
                self.take(2)?.try_into().expect("2 bytes"),
            ))
        }
        fn u32(&mut self) -> Result<u32, JksError> {
            Ok(u32::from_be_bytes(
                self.take(4)?.try_into().expect("4 bytes"),
            ))
        }
        fn u64(&mut self) -> Result<u64, JksError> {
            Ok(u64::from_be_bytes(
                self.take(8)?.try_into().expect("8 bytes"),
            ))
        }
        fn string(&mut self) -> Result<String, JksError> {
            let n = self.u16()?;
            Ok(String::from_utf8_lossy(self.take(usize::from(n))?).into_owned())
        }
        fn bytes(&mut self) -> Result<Vec<u8>, JksError> {
            let n = self.u32()? as usize;
            Ok(self.take(n)?.to_vec())
        }
        fn cert(&mut self, version: u32) -> Result<Cert, JksError> {
            let kind = if version == 1 {
                "X509".to_string()
            } else {
                self.string()?
            };
            Ok(Cert {
                kind,
                der: self.bytes()?,
            })
        }
    }

    struct Writer(Vec<u8>);

    impl Writer {
        fn string(&mut self, s: &str) -> Result<(), JksError> {
            let n = u16::try_from(s.len()).map_err(|_| JksError::TooLong(s.to_string()))?;
            self.0.extend_from_slice(&n.to_be_bytes());
            self.0.extend_from_slice(s.as_bytes());
            Ok(())
        }
        fn bytes(&mut self, b: &[u8]) -> Result<(), JksError> {
            let n = u32::try_from(b.len()).map_err(|_| JksError::TooLong("an entry".into()))?;
            self.0.extend_from_slice(&n.to_be_bytes());
            self.0.extend_from_slice(b);
            Ok(())
        }
        fn cert(&mut self, c: &Cert) -> Result<(), JksError> {
            self.string(&c.kind)?;
            self.bytes(&c.der)
        }
    }

    fn digest(password: &str, body: &[u8]) -> [u8; 20] {
        use sha1::Digest as _;
        let mut h = sha1::Sha1::new();
        h.update(password_units(password));
        h.update(WHITENER);
        h.update(body);
        h.finalize().into()
    }

    impl KeyStore {
        /// Read a keystore and check its integrity hash with `password`. Bytes after the
        /// hash are ignored, as Java and keystore-go ignore them.
        pub fn read(b: &[u8], password: &str) -> Result<KeyStore, JksError> {
            let mut r = Reader { b, at: 0 };
            let magic = r.u32()?;
            if magic != MAGIC {
                return Err(JksError::Magic(magic));
            }
            let version = r.u32()?;
            if version != 1 && version != 2 {
                return Err(JksError::Version(version));
            }
            let mut ks = KeyStore::default();
            for _ in 0..r.u32()? {
                let tag = r.u32()?;
                let alias = r.string()?;
                let entry = match tag {
                    PRIVATE_KEY => {
                        let created_ms = r.u64()?;
                        let key = r.bytes()?;
                        let n = r.u32()?;
                        let mut chain = vec![];
                        for _ in 0..n {
                            chain.push(r.cert(version)?);
                        }
                        Entry::PrivateKey {
                            created_ms,
                            key,
                            chain,
                        }
                    }
                    TRUSTED_CERT => Entry::Trusted {
                        created_ms: r.u64()?,
                        cert: r.cert(version)?,
                    },
                    t => return Err(JksError::Tag(t)),
                };
                // A repeated alias keeps the later entry.
                ks.entries.insert(alias, entry);
            }
            let body = &b[..r.at];
            if r.take(20)? != digest(password, body) {
                return Err(JksError::Digest);
            }
            Ok(ks)
        }

        /// Add (or replace) a trusted certificate. The alias is lower-cased, as the JDK and
        /// keystore-go treat aliases.
        pub fn add_trusted(&mut self, alias: &str, der: &[u8], created_ms: u64) {
            self.entries.insert(
                alias.to_lowercase(),
                Entry::Trusted {
                    created_ms,
                    cert: Cert {
                        kind: "X.509".into(),
                        der: der.to_vec(),
                    },
                },
            );
        }

        /// The keystore as a version 2 JKS file.
        pub fn write(&self, password: &str) -> Result<Vec<u8>, JksError> {
            let mut w = Writer(Vec::new());
            w.0.extend_from_slice(&MAGIC.to_be_bytes());
            w.0.extend_from_slice(&2u32.to_be_bytes());
            let n = u32::try_from(self.entries.len())
                .map_err(|_| JksError::TooLong("the entry count".into()))?;
            w.0.extend_from_slice(&n.to_be_bytes());
            for (alias, e) in &self.entries {
                match e {
                    Entry::PrivateKey {
                        created_ms,
                        key,
                        chain,
                    } => {
                        w.0.extend_from_slice(&PRIVATE_KEY.to_be_bytes());
                        w.string(alias)?;
                        w.0.extend_from_slice(&created_ms.to_be_bytes());
                        w.bytes(key)?;
                        let n = u32::try_from(chain.len())
                            .map_err(|_| JksError::TooLong("a chain".into()))?;
                        w.0.extend_from_slice(&n.to_be_bytes());
                        for c in chain {
                            w.cert(c)?;
                        }
                    }
                    Entry::Trusted { created_ms, cert } => {
                        w.0.extend_from_slice(&TRUSTED_CERT.to_be_bytes());
                        w.string(alias)?;
                        w.0.extend_from_slice(&created_ms.to_be_bytes());
                        w.cert(cert)?;
                    }
                }
            }
            let d = digest(password, &w.0);
            w.0.extend_from_slice(&d);
            Ok(w.0)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two self-signed P-256 certificates made with `openssl req -x509` for these tests, and
    /// their SHA-256 fingerprints as `openssl x509 -fingerprint -sha256` prints them.
    pub(crate) const CERT_A: &str = "-----BEGIN CERTIFICATE-----
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
    pub(crate) const CERT_B: &str = "-----BEGIN CERTIFICATE-----
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
    /// `keytool -importcert -alias Orig -file b.pem -storetype JKS -storepass changeit`
    /// (OpenJDK 17), base64: one trusted entry, the alias lower-cased by keytool.
    const KEYTOOL_JKS: &str = "/u3+7QAAAAIAAAABAAAAAgAEb3JpZwAAAaIz0hl3AAVYLjUwOQAAAXgwggF0MIIBGqADAgECAgEBMAoGCCqGSM49BAMCMBgxFjAUBgNVBAMMDXBhbGxldCB0ZXN0IGIwIBcNMjYxMjAxMjI1NTI5WhgPMjEyNjExMDcyMjU1MjlaMBgxFjAUBgNVBAMMDXBhbGxldCB0ZXN0IGIwWTATBgcqhkjOPQIBBggqhkjOPQMBBwNCAASAKJKcUNtS7tyzjya3JC3OVRWcS0zp9bL5TiBQB2OTKbknzOfSXAS4rR1gPiaE8nae1oiz4X6TvPqiLqshhQM9o1MwUTAdBgNVHQ4EFgQUKp21XbGh9tLtatPmov5Zf7GWAYAwHwYDVR0jBBgwFoAUKp21XbGh9tLtatPmov5Zf7GWAYAwDwYDVR0TAQH/BAUwAwEB/zAKBggqhkjOPQQDAgNIADBFAiACwWWuTa02EZ/RX1wIH97zEpm+KwgnBiI+tEIn+6xd0wIhAKTFIZ+mrYtTkHSKF3fQtrwONp/CK8PYgTIg72cGt7GgqpXQ3wOOXMlztsB4G56XeChxC08=";

    fn keytool_jks() -> Vec<u8> {
        use base64::Engine as _;
        base64::engine::general_purpose::STANDARD
            .decode(KEYTOOL_JKS)
            .unwrap()
    }

    #[test]
    fn certificates_are_fingerprinted_by_their_der_and_reencoded() {
        let a = parse_certificate(CERT_A).unwrap();
        assert_eq!(a.fingerprint, FP_A);
        assert_eq!(a.pem, CERT_A);
        // Text around the block, CRLF line ends and odd wrapping are dropped by re-encoding.
        let noisy = format!(
            "subject=CN = pallet test b\r\n{}\r\n",
            CERT_B
                .replace('\n', "\r\n")
                .replacen("MIIBdDCCARqg", "MIIBdDCC\r\nARqg", 1)
        );
        let b = parse_certificate(&noisy).unwrap();
        assert_eq!((b.fingerprint.as_str(), b.pem.as_str()), (FP_B, CERT_B));
    }

    #[test]
    fn only_one_x509_certificate_is_a_certificate() {
        for (text, want) in [
            ("", "no certificate data"),
            ("hello\n", "found none"),
            (&format!("{CERT_A}{CERT_B}")[..], "found more"),
            (
                "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
                "got PRIVATE KEY",
            ),
            // Base64 that decodes, but to no certificate.
            (
                "-----BEGIN CERTIFICATE-----\nMIIBszCCAVmgAwIBAgIUTESTTESTTESTTESTTESTTESTTEST\n-----END CERTIFICATE-----\n",
                "not an X.509 certificate",
            ),
        ] {
            let err = parse_certificate(text).unwrap_err();
            assert!(err.contains(want), "{text:?}: {err}");
        }
        // A block whose END line is broken is passed over, as Go's decoder does.
        let broken = CERT_A.replace("-----END CERTIFICATE-----", "-----END CERT-----");
        assert!(
            parse_certificate(&broken)
                .unwrap_err()
                .contains("found none")
        );
        // Trailing bytes after the DER are refused.
        let mut der = parse_certificate(CERT_A).unwrap().der;
        der.push(0);
        assert!(x509_shape(&der).is_err());
    }

    #[test]
    fn pem_headers_are_kept_in_go_order() {
        let b = PemBlock {
            kind: "CERTIFICATE".into(),
            headers: [("Z", "1"), ("Proc-Type", "4,ENCRYPTED"), ("A", "2")]
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            bytes: vec![1, 2, 3],
        };
        let text = pem_encode(&b);
        assert_eq!(
            text,
            "-----BEGIN CERTIFICATE-----\nProc-Type: 4,ENCRYPTED\nA: 2\nZ: 1\n\nAQID\n-----END CERTIFICATE-----\n"
        );
        assert_eq!(pem_decode(text.as_bytes()).unwrap().0, b);
    }

    #[test]
    fn a_keytool_store_reads_and_writes_back_the_same_bytes() {
        let bytes = keytool_jks();
        let ks = jks::KeyStore::read(&bytes, TRUSTSTORE_PASSWORD).unwrap();
        let der = parse_certificate(CERT_B).unwrap().der;
        assert_eq!(ks.entries.len(), 1);
        match &ks.entries["orig"] {
            jks::Entry::Trusted { cert, created_ms } => {
                assert_eq!((cert.kind.as_str(), &cert.der), ("X.509", &der));
                assert!(*created_ms > 1_700_000_000_000);
            }
            e => panic!("{e:?}"),
        }
        assert_eq!(ks.write(TRUSTSTORE_PASSWORD).unwrap(), bytes);
        assert_eq!(
            jks::KeyStore::read(&bytes, "wrong"),
            Err(jks::JksError::Digest)
        );
        let mut cut = bytes.clone();
        cut.truncate(bytes.len() - 1);
        assert_eq!(
            jks::KeyStore::read(&cut, TRUSTSTORE_PASSWORD),
            Err(jks::JksError::Truncated)
        );
        assert!(matches!(
            jks::KeyStore::read(b"\x30\x82\x01\x00rest", TRUSTSTORE_PASSWORD),
            Err(jks::JksError::Magic(_))
        ));
    }

    #[test]
    fn added_entries_are_lower_cased_and_written_in_alias_order() {
        let mut ks = jks::KeyStore::read(&keytool_jks(), TRUSTSTORE_PASSWORD).unwrap();
        let a = parse_certificate(CERT_A).unwrap();
        ks.add_trusted(&format!("Corp-{}", a.fingerprint), &a.der, 1_000);
        ks.add_trusted(&format!("pkg-{}", a.fingerprint), &a.der, 1_000);
        let bytes = ks.write(TRUSTSTORE_PASSWORD).unwrap();
        let back = jks::KeyStore::read(&bytes, TRUSTSTORE_PASSWORD).unwrap();
        let aliases: Vec<&str> = back.entries.keys().map(String::as_str).collect();
        assert_eq!(
            aliases,
            [
                format!("corp-{FP_A}").as_str(),
                "orig",
                format!("pkg-{FP_A}").as_str()
            ]
        );
        // The layout, by hand: magic, version 2, count 3, then the first entry's tag and alias.
        assert_eq!(
            &bytes[..12],
            b"\xfe\xed\xfe\xed\x00\x00\x00\x02\x00\x00\x00\x03"
        );
        assert_eq!(&bytes[12..16], &2u32.to_be_bytes());
        let alias = format!("corp-{FP_A}");
        assert_eq!(&bytes[16..18], &(alias.len() as u16).to_be_bytes());
        assert_eq!(&bytes[18..18 + alias.len()], alias.as_bytes());
        assert_eq!(
            &bytes[18 + alias.len()..26 + alias.len()],
            &1_000u64.to_be_bytes()
        );
    }

    /// Key entries pass through untouched; version 1 stores (no certificate types) read, and
    /// are written as version 2 with keystore-go's `X509` type.
    #[test]
    fn key_entries_and_version_1_stores_survive_a_rewrite() {
        let der = parse_certificate(CERT_A).unwrap().der;
        let mut ks = jks::KeyStore::default();
        ks.entries.insert(
            "Key".into(),
            jks::Entry::PrivateKey {
                created_ms: 7,
                key: vec![1, 2, 3],
                chain: vec![jks::Cert {
                    kind: "X.509".into(),
                    der: der.clone(),
                }],
            },
        );
        let bytes = ks.write("changeit").unwrap();
        assert_eq!(jks::KeyStore::read(&bytes, "changeit").unwrap(), ks);
        // The same trusted entry in version 1 form, with its hash made by hand.
        let mut v1 =
            b"\xfe\xed\xfe\xed\x00\x00\x00\x01\x00\x00\x00\x01\x00\x00\x00\x02\x00\x01a".to_vec();
        v1.extend_from_slice(&5u64.to_be_bytes());
        v1.extend_from_slice(&(der.len() as u32).to_be_bytes());
        v1.extend_from_slice(&der);
        use sha1::Digest as _;
        let mut h = sha1::Sha1::new();
        h.update(b"\0c\0h\0a\0n\0g\0e\0i\0t");
        h.update(b"Mighty Aphrodite");
        h.update(&v1);
        v1.extend_from_slice(&h.finalize());
        let read = jks::KeyStore::read(&v1, "changeit").unwrap();
        assert_eq!(
            read.entries["a"],
            jks::Entry::Trusted {
                created_ms: 5,
                cert: jks::Cert {
                    kind: "X509".into(),
                    der
                }
            }
        );
        assert_eq!(&read.write("changeit").unwrap()[4..8], &2u32.to_be_bytes());
    }

    /// A bundle that is a symlink (as Debian lays it out) is followed: the certificates and
    /// the new time go to its target, the sidecar beside the link names the link.
    #[test]
    fn symlinked_bundles_are_followed_as_apko_opens_them() {
        use sha2::Digest as _;
        let mut tree = Tree::new();
        tree.mkdir_all("etc/ssl/certs", 0o755, 0);
        tree.mkdir_all("etc/pki", 0o755, 0);
        tree.put("etc/pki/bundle.crt", Node::file(CERT_A.into(), 0o640, 5));
        tree.put(
            "etc/ssl/certs/ca-certificates.crt",
            Node::symlink("/etc/pki/bundle.crt", 5),
        );
        // kaniko's bundle path, through a linked folder, leads to the same file: two handles
        // appending in apko, so it gets each certificate twice.
        tree.put("kaniko", Node::symlink("etc", 5));
        let cfg: ImageConfiguration = serde_saphyr::from_str(&format!(
            "certificates:\n  additional:\n    - name: b\n      content: |\n{}",
            CERT_B
                .lines()
                .map(|l| format!("        {l}\n"))
                .collect::<String>()
        ))
        .unwrap();
        install(&mut tree, &cfg, &[], 9).unwrap();
        let n = &tree.nodes["etc/pki/bundle.crt"];
        assert_eq!((n.mode, n.mtime), (0o640, 9), "mode kept, time set");
        assert_eq!(
            tree.read("etc/pki/bundle.crt").unwrap().unwrap(),
            format!("{CERT_A}{CERT_B}\n{CERT_B}\n").as_bytes()
        );
        assert_eq!(
            tree.nodes["etc/ssl/certs/ca-certificates.crt"].kind,
            Kind::Symlink
        );
        write_checksums(&mut tree, 9).unwrap();
        let side = tree
            .read("etc/ssl/certs/.ca-certificates.crt.sha256")
            .unwrap()
            .unwrap();
        let want = format!(
            "{}  ca-certificates.crt\n",
            hex(&sha2::Sha256::digest(
                tree.read("etc/pki/bundle.crt").unwrap().unwrap()
            ))
        );
        assert_eq!(side, want.as_bytes());
        assert!(
            tree.get("kaniko/ssl/certs/.ca-certificates.crt.sha256")
                .is_some()
        );
        assert_eq!(
            tree.nodes["etc/ssl/certs/.ca-certificates.crt.sha256"].mode,
            0o444
        );
    }

    #[test]
    fn sidecars_sit_beside_their_store() {
        assert_eq!(
            sidecar("etc/ssl/certs/ca-certificates.crt"),
            "etc/ssl/certs/.ca-certificates.crt.sha256"
        );
        assert_eq!(
            sidecar("etc/ssl/certs/java/cacerts"),
            "etc/ssl/certs/java/.cacerts.sha256"
        );
    }
}
