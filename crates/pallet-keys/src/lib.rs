//! RSA keys as apk-tools, abuild, melange and apko use them: PKCS#1 PEM private keys
//! (`BEGIN RSA PRIVATE KEY`), PKIX PEM public keys (`BEGIN PUBLIC KEY`), PKCS#1 v1.5
//! signatures over SHA-1 (`.SIGN.RSA.`) or SHA-256 (`.SIGN.RSA256.`), and keyring folders
//! whose *file names* are what signatures refer to.

use std::fs;

use std::path::{Path, PathBuf};

use aws_lc_rs::encoding::{AsDer, Pkcs8V1Der, PublicKeyX509Der};
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::rsa::{KeyPair, KeySize};
use aws_lc_rs::signature::{self, UnparsedPublicKey};

mod der;

pub use aws_lc_rs::digest::{Context as DigestContext, Digest};

/// The digest a signature is made over; it is part of the `.SIGN.<TYPE>.` entry name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SigAlg {
    /// `.SIGN.RSA.`: SHA-1, what Alpine's abuild and old Wolfi packages use.
    RsaSha1,
    /// `.SIGN.RSA256.`: SHA-256, what melange writes.
    RsaSha256,
    /// `.SIGN.RSA512.`: SHA-512, accepted by apk 2.14 and 3.
    RsaSha512,
}

impl SigAlg {
    /// The `<TYPE>` part of `.SIGN.<TYPE>.<keyname>`.
    pub fn entry_type(self) -> &'static str {
        match self {
            SigAlg::RsaSha1 => "RSA",
            SigAlg::RsaSha256 => "RSA256",
            SigAlg::RsaSha512 => "RSA512",
        }
    }

    /// Split a signature entry name into its algorithm and key name.
    pub fn parse_entry(name: &str) -> Option<(SigAlg, &str)> {
        let rest = name.strip_prefix(".SIGN.")?;
        // The type must be followed by a dot, so RSA does not swallow RSA256.
        for alg in [SigAlg::RsaSha256, SigAlg::RsaSha512, SigAlg::RsaSha1] {
            if let Some(key) = rest
                .strip_prefix(alg.entry_type())
                .and_then(|r| r.strip_prefix('.'))
            {
                return Some((alg, key));
            }
        }
        None
    }
}

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("cannot read key {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "{path} is not an RSA private key in PEM form (expected 'BEGIN RSA PRIVATE KEY' or 'BEGIN PRIVATE KEY'): {reason}"
    )]
    BadPrivateKey { path: PathBuf, reason: String },
    #[error("{path} is not an RSA public key in PEM form (expected 'BEGIN PUBLIC KEY'): {reason}")]
    BadPublicKey { path: PathBuf, reason: String },
    #[error("RSA key generation failed")]
    Generate,
    #[error(
        "key size {0} is not supported: {why}; use 2048, 3072, 4096 (the default) or 8192",
        why = if *.0 < 2048 { "the minimum is 2048 bits (smaller keys are not secure)" } else { "the RSA library makes keys of 2048, 3072, 4096 and 8192 bits only" }
    )]
    KeySize(u32),
    #[error("signing failed")]
    Sign,
}

/// A private signing key and the name signatures made with it carry.
pub struct SigningKey {
    pair: KeyPair,
    /// PKCS#1 `RSAPrivateKey` DER, for the legacy SHA-1 signatures aws-lc-rs's safe API omits.
    pkcs1: Vec<u8>,
    /// The key name stored in `.SIGN.RSA256.<name>`: the base name of the private key file
    /// plus `.pub`, as melange names it, so a keyring holding `NAME.pub` finds it.
    pub key_name: String,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKey")
            .field("key_name", &self.key_name)
            .finish_non_exhaustive()
    }
}

impl SigningKey {
    /// Load a PKCS#1 (`BEGIN RSA PRIVATE KEY`) or PKCS#8 (`BEGIN PRIVATE KEY`) PEM file.
    pub fn load(path: &Path) -> Result<Self, KeyError> {
        let text = fs::read(path).map_err(|source| KeyError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let bad = |reason: String| KeyError::BadPrivateKey {
            path: path.to_path_buf(),
            reason,
        };
        let block = pem::parse(&text).map_err(|e| bad(e.to_string()))?;
        let (pair, pkcs1) = match block.tag() {
            "RSA PRIVATE KEY" => (
                KeyPair::from_der(block.contents()),
                block.contents().to_vec(),
            ),
            "PRIVATE KEY" => (
                KeyPair::from_pkcs8(block.contents()),
                der::pkcs8_to_pkcs1(block.contents()).unwrap_or_default(),
            ),
            other => return Err(bad(format!("found a '{other}' block"))),
        };
        let pair = pair.map_err(|e| bad(e.to_string()))?;
        let base = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        Ok(SigningKey {
            pair,
            pkcs1,
            key_name: format!("{base}.pub"),
        })
    }

    /// Sign `data` (a control member, or a whole unsigned index) with the given digest.
    pub fn sign(&self, alg: SigAlg, data: &[u8]) -> Result<Vec<u8>, KeyError> {
        let enc: &'static dyn signature::RsaEncoding = match alg {
            SigAlg::RsaSha256 => &signature::RSA_PKCS1_SHA256,
            SigAlg::RsaSha512 => &signature::RSA_PKCS1_SHA512,
            SigAlg::RsaSha1 => return sha1_sign(&self.pkcs1, data),
        };
        let mut sig = vec![0u8; self.pair.public_modulus_len()];
        self.pair
            .sign(enc, &SystemRandom::new(), data, &mut sig)
            .map_err(|_| KeyError::Sign)?;
        Ok(sig)
    }

    /// The public half as `melange keygen` writes it (PKIX PEM).
    pub fn public_pem(&self) -> String {
        pem::encode(&pem::Pem::new("PUBLIC KEY", self.public_der()))
    }

    /// The public half, PKIX DER.
    pub fn public_der(&self) -> Vec<u8> {
        use aws_lc_rs::signature::KeyPair as _;
        let der: PublicKeyX509Der<'static> = self
            .pair
            .public_key()
            .as_der()
            .expect("a loaded RSA key always encodes");
        der.as_ref().to_vec()
    }
}

/// PKCS#1 v1.5 over SHA-1, for apk-tools older than 2.12 (`.SIGN.RSA.`). aws-lc-rs only
/// verifies SHA-1 signatures, so this calls the same library's C API directly.
fn sha1_sign(pkcs1: &[u8], data: &[u8]) -> Result<Vec<u8>, KeyError> {
    use aws_lc_rs::digest;
    let d = digest::digest(&digest::SHA1_FOR_LEGACY_USE_ONLY, data);
    // SAFETY: `rsa` is checked for NULL and freed exactly once; the output buffer is
    // RSA_size bytes, the most RSA_sign writes; the input slices outlive the calls.
    unsafe {
        let rsa = aws_lc_sys::RSA_private_key_from_bytes(pkcs1.as_ptr(), pkcs1.len());
        if rsa.is_null() {
            return Err(KeyError::Sign);
        }
        let mut out = vec![0u8; aws_lc_sys::RSA_size(rsa) as usize];
        let mut len: std::os::raw::c_uint = 0;
        let ok = aws_lc_sys::RSA_sign(
            aws_lc_sys::NID_sha1,
            d.as_ref().as_ptr(),
            d.as_ref().len(),
            out.as_mut_ptr(),
            &mut len,
            rsa,
        );
        aws_lc_sys::RSA_free(rsa);
        if ok != 1 {
            return Err(KeyError::Sign);
        }
        out.truncate(len as usize);
        Ok(out)
    }
}

/// A public key that verifies signatures.
#[derive(Clone)]
pub struct PublicKey {
    spki_der: Vec<u8>,
}

impl PublicKey {
    /// Parse PEM text holding a `PUBLIC KEY` (PKIX) or `RSA PUBLIC KEY` (PKCS#1) block.
    pub fn from_pem(text: &[u8], path: &Path) -> Result<Self, KeyError> {
        let bad = |reason: String| KeyError::BadPublicKey {
            path: path.to_path_buf(),
            reason,
        };
        let block = pem::parse(text).map_err(|e| bad(e.to_string()))?;
        let spki_der = match block.tag() {
            "PUBLIC KEY" => block.contents().to_vec(),
            "RSA PUBLIC KEY" => der::pkcs1_public_to_spki(block.contents()),
            other => return Err(bad(format!("found a '{other}' block"))),
        };
        Ok(PublicKey { spki_der })
    }

    pub fn load(path: &Path) -> Result<Self, KeyError> {
        let text = fs::read(path).map_err(|source| KeyError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::from_pem(&text, path)
    }

    /// Check a PKCS#1 v1.5 signature over `data`.
    pub fn verify(&self, alg: SigAlg, data: &[u8], sig: &[u8]) -> bool {
        UnparsedPublicKey::new(verify_params(alg), &self.spki_der)
            .verify(data, sig)
            .is_ok()
    }

    /// Check a signature against a digest computed while streaming (see [`digest_context`]).
    pub fn verify_digest(
        &self,
        alg: SigAlg,
        digest: &aws_lc_rs::digest::Digest,
        sig: &[u8],
    ) -> bool {
        UnparsedPublicKey::new(verify_params(alg), &self.spki_der)
            .verify_digest(digest, sig)
            .is_ok()
    }
}

fn verify_params(alg: SigAlg) -> &'static signature::RsaParameters {
    match alg {
        // Alpine's keys are 4096 bits and older ones 2048; 1024-bit keys still sign old repos.
        SigAlg::RsaSha1 => &signature::RSA_PKCS1_1024_8192_SHA1_FOR_LEGACY_USE_ONLY,
        SigAlg::RsaSha256 => &signature::RSA_PKCS1_1024_8192_SHA256_FOR_LEGACY_USE_ONLY,
        SigAlg::RsaSha512 => &signature::RSA_PKCS1_1024_8192_SHA512_FOR_LEGACY_USE_ONLY,
    }
}

/// A streaming digest of the kind `alg` signs, for data too large to hold in memory.
pub fn digest_context(alg: SigAlg) -> aws_lc_rs::digest::Context {
    use aws_lc_rs::digest;
    aws_lc_rs::digest::Context::new(match alg {
        SigAlg::RsaSha1 => &digest::SHA1_FOR_LEGACY_USE_ONLY,
        SigAlg::RsaSha256 => &digest::SHA256,
        SigAlg::RsaSha512 => &digest::SHA512,
    })
}

/// A folder of `*.pub` keys, looked up by file name as apk does.
#[derive(Clone, Debug, Default)]
pub struct Keyring {
    dirs: Vec<PathBuf>,
    files: Vec<PathBuf>,
}

/// What looking a key name up in a keyring found.
pub enum Lookup {
    Found(PublicKey),
    Missing,
    /// A file of that name exists but is not a usable key.
    Unreadable(KeyError),
}

impl Keyring {
    /// A keyring made of folders (every file in them) and single key files.
    pub fn new(dirs: Vec<PathBuf>, files: Vec<PathBuf>) -> Self {
        Keyring { dirs, files }
    }

    /// Build from paths that may each be a folder or a file.
    pub fn from_paths<I: IntoIterator<Item = PathBuf>>(paths: I) -> Self {
        let mut k = Keyring::default();
        for p in paths {
            if p.is_dir() {
                k.dirs.push(p);
            } else {
                k.files.push(p);
            }
        }
        k
    }

    pub fn is_empty(&self) -> bool {
        self.dirs.is_empty() && self.files.is_empty()
    }

    /// Every key file, for copying into an image's `/etc/apk/keys`.
    pub fn key_files(&self) -> Vec<PathBuf> {
        let mut out = self.files.clone();
        for d in &self.dirs {
            if let Ok(rd) = fs::read_dir(d) {
                let mut v: Vec<PathBuf> = rd
                    .filter_map(Result::ok)
                    .map(|e| e.path())
                    .filter(|p| p.is_file())
                    .collect();
                v.sort();
                out.extend(v);
            }
        }
        out
    }

    /// Find the key a `.SIGN.*.<name>` entry refers to. The name must be a plain file name: a
    /// signature entry cannot point the lookup outside the keyring.
    pub fn lookup(&self, name: &str) -> Lookup {
        if name.is_empty() || name.contains('/') || name == "." || name == ".." {
            return Lookup::Missing;
        }
        let candidate = self
            .files
            .iter()
            .find(|f| f.file_name().is_some_and(|n| n == name))
            .cloned()
            .or_else(|| self.dirs.iter().map(|d| d.join(name)).find(|p| p.is_file()));
        match candidate {
            None => Lookup::Missing,
            Some(p) => match PublicKey::load(&p) {
                Ok(k) => Lookup::Found(k),
                Err(e) => Lookup::Unreadable(e),
            },
        }
    }
}

/// Generate a key pair: `path` gets the PKCS#1 PEM private key (mode 0600), `path.pub` the
/// PKIX PEM public key. Both are written to temporary names and renamed into place.
pub fn generate(path: &Path, bits: u32) -> Result<(), KeyError> {
    let size = match bits {
        2048 => KeySize::Rsa2048,
        3072 => KeySize::Rsa3072,
        4096 => KeySize::Rsa4096,
        8192 => KeySize::Rsa8192,
        n => return Err(KeyError::KeySize(n)),
    };
    let pair = KeyPair::generate(size).map_err(|_| KeyError::Generate)?;
    let pkcs8: Pkcs8V1Der<'static> = pair.as_der().map_err(|_| KeyError::Generate)?;
    let pkcs1 = der::pkcs8_to_pkcs1(pkcs8.as_ref()).ok_or(KeyError::Generate)?;
    let private_pem = pem::encode(&pem::Pem::new("RSA PRIVATE KEY", pkcs1));
    let public = {
        use aws_lc_rs::signature::KeyPair as _;
        let d: PublicKeyX509Der<'static> =
            pair.public_key().as_der().map_err(|_| KeyError::Generate)?;
        d.as_ref().to_vec()
    };
    let public_pem = pem::encode(&pem::Pem::new("PUBLIC KEY", public));
    let mut pub_path = path.as_os_str().to_owned();
    pub_path.push(".pub");
    write_atomic(path, private_pem.as_bytes(), 0o600)?;
    write_atomic(Path::new(&pub_path), public_pem.as_bytes(), 0o644)
}

/// The PKIX PEM (`BEGIN PUBLIC KEY`, `\n` line ends, as Go's `pem.Encode` writes it) of the
/// RSA key with modulus `n` and public exponent `e` (big-endian bytes, as a JWK carries them).
/// Refuses keys the verifier would not accept (modulus outside 1024–8192 bits, even or tiny
/// exponent), so a bad key is reported where it was found rather than at verification.
pub fn rsa_public_pem(n: &[u8], e: &[u8]) -> Result<String, String> {
    let strip = |v: &[u8]| -> Vec<u8> { v.iter().copied().skip_while(|b| *b == 0).collect() };
    let (n, e) = (strip(n), strip(e));
    let bits = n.len() * 8 - n.first().map_or(8, |b| b.leading_zeros() as usize);
    if !(1024..=8192).contains(&bits) {
        return Err(format!(
            "an RSA modulus of {bits} bits (1024 to 8192 are accepted)"
        ));
    }
    if e.is_empty() || e.len() > 8 || e.last().is_some_and(|b| b & 1 == 0) || e == [1] {
        return Err("an RSA public exponent that is not an odd number above 1".into());
    }
    let spki = der::pkcs1_public_to_spki(&der::rsa_public_pkcs1(&n, &e));
    Ok(pem::encode_config(
        &pem::Pem::new("PUBLIC KEY", spki),
        pem::EncodeConfig::new().set_line_ending(pem::LineEnding::LF),
    ))
}

/// Write a file under a temporary name in the same folder and rename it into place.
pub fn write_atomic(path: &Path, data: &[u8], mode: u32) -> Result<(), KeyError> {
    pallet_atomic::write_mode(path, data, mode).map_err(|source| KeyError::Write {
        path: path.to_path_buf(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_size_errors_say_which_rule_was_broken() {
        let small = KeyError::KeySize(1024).to_string();
        assert!(small.contains("the minimum is 2048 bits"), "{small}");
        let odd = KeyError::KeySize(2500).to_string();
        assert!(!odd.contains("minimum"), "{odd}");
        assert!(odd.contains("2048, 3072, 4096 and 8192 bits only"), "{odd}");
    }

    #[test]
    fn entry_names() {
        assert_eq!(
            SigAlg::parse_entry(".SIGN.RSA.alpine@x-1.rsa.pub"),
            Some((SigAlg::RsaSha1, "alpine@x-1.rsa.pub"))
        );
        assert_eq!(
            SigAlg::parse_entry(".SIGN.RSA256.k.rsa.pub"),
            Some((SigAlg::RsaSha256, "k.rsa.pub"))
        );
        assert_eq!(SigAlg::parse_entry(".SIGN.RSAX.k"), None);
        assert_eq!(SigAlg::parse_entry(".PKGINFO"), None);
    }

    #[test]
    fn rsa_components_round_trip_to_a_key_that_verifies() {
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("k.rsa");
        generate(&key, 2048).unwrap();
        let sk = SigningKey::load(&key).unwrap();
        // Take n and e back out of the PKIX DER: SEQUENCE { alg, BIT STRING { 0, RSAPublicKey } }.
        let spki = sk.public_der();
        let (_, body, _) = der_tlv(&spki);
        let (_, _alg, rest) = der_tlv(body);
        let (_, bits, _) = der_tlv(rest);
        let (_, pkcs1, _) = der_tlv(&bits[1..]);
        let (_, n, rest) = der_tlv(pkcs1);
        let (_, e, _) = der_tlv(rest);
        let text = rsa_public_pem(n, e).unwrap();
        assert!(text.starts_with("-----BEGIN PUBLIC KEY-----\n") && !text.contains('\r'));
        let pk = PublicKey::from_pem(text.as_bytes(), Path::new("k")).unwrap();
        let sig = sk.sign(SigAlg::RsaSha256, b"data").unwrap();
        assert!(pk.verify(SigAlg::RsaSha256, b"data", &sig));
        assert!(
            rsa_public_pem(&[0xff; 64], e)
                .unwrap_err()
                .contains("512 bits")
        );
        assert!(rsa_public_pem(n, &[2]).is_err());
    }

    fn der_tlv(d: &[u8]) -> (u8, &[u8], &[u8]) {
        let (len, hdr) = if d[1] < 0x80 {
            (d[1] as usize, 2)
        } else {
            let k = (d[1] & 0x7f) as usize;
            (
                d[2..2 + k].iter().fold(0, |a, b| (a << 8) | *b as usize),
                2 + k,
            )
        };
        (d[0], &d[hdr..hdr + len], &d[hdr + len..])
    }

    #[test]
    fn keygen_sign_verify() {
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("test.rsa");
        generate(&key, 2048).unwrap();
        let private = fs::read_to_string(&key).unwrap();
        assert!(private.starts_with("-----BEGIN RSA PRIVATE KEY-----"));
        let public = fs::read_to_string(dir.path().join("test.rsa.pub")).unwrap();
        assert!(public.starts_with("-----BEGIN PUBLIC KEY-----"));
        let sk = SigningKey::load(&key).unwrap();
        assert_eq!(sk.key_name, "test.rsa.pub");
        let sig = sk.sign(SigAlg::RsaSha256, b"hello").unwrap();
        let ring = Keyring::from_paths([dir.path().to_path_buf()]);
        let Lookup::Found(pk) = ring.lookup("test.rsa.pub") else {
            panic!("key not found");
        };
        assert!(pk.verify(SigAlg::RsaSha256, b"hello", &sig));
        assert!(!pk.verify(SigAlg::RsaSha256, b"hellO", &sig));
        assert!(!pk.verify(SigAlg::RsaSha1, b"hello", &sig));
        let legacy = sk.sign(SigAlg::RsaSha1, b"hello").unwrap();
        assert!(pk.verify(SigAlg::RsaSha1, b"hello", &legacy));
        assert!(!pk.verify(SigAlg::RsaSha256, b"hello", &legacy));
        assert!(matches!(ring.lookup("../test.rsa.pub"), Lookup::Missing));
    }
}
