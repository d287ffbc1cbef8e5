//! Digests and the canonical encoding REAPI names things by.
//!
//! A blob's digest is its SHA-256 (lowercase hex) with its size, the only function BuildGrid
//! offers. A message's digest is the digest of its binary encoding: prost writes fields in tag
//! order and never writes unknown or duplicate fields, which is the canonical form
//! `remote_execution.proto` asks for, provided the repeated fields the spec wants sorted
//! (directory entries, environment variables, platform properties, output paths) are sorted
//! by whoever builds the message ([`crate::tree`] and [`crate::action`] do).

use std::io::Read as _;
use std::path::Path;

use prost::Message;
use sha2::{Digest as _, Sha256};

use crate::Error;
use crate::proto::Digest;

/// Lowercase hex of bytes.
pub fn hex(b: &[u8]) -> String {
    const H: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(b.len() * 2);
    for x in b {
        s.push(H[usize::from(x >> 4)] as char);
        s.push(H[usize::from(x & 15)] as char);
    }
    s
}

/// The digest of a blob held in memory.
pub fn of_bytes(b: &[u8]) -> Digest {
    Digest {
        hash: hex(&Sha256::digest(b)),
        size_bytes: i64::try_from(b.len()).expect("a blob fits in i64"),
    }
}

/// The digest of a message (of its canonical encoding), with the encoding.
pub fn of_message<M: Message>(m: &M) -> (Digest, Vec<u8>) {
    let b = m.encode_to_vec();
    (of_bytes(&b), b)
}

/// The digest of a file, read once in 64 KiB pieces.
pub fn of_file(path: &Path) -> Result<Digest, Error> {
    let io = |source| Error::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut f = std::fs::File::open(path).map_err(io)?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    let mut n = 0u64;
    loop {
        let k = f.read(&mut buf).map_err(io)?;
        if k == 0 {
            break;
        }
        h.update(&buf[..k]);
        n += k as u64;
    }
    Ok(Digest {
        hash: hex(&h.finalize()),
        size_bytes: i64::try_from(n).expect("a file fits in i64"),
    })
}

/// `HASH/SIZE`, as digests are shown and as ByteStream names them.
pub fn show(d: &Digest) -> String {
    format!("{}/{}", d.hash, d.size_bytes)
}

/// The size of a digest, which the spec makes part of its identity (never negative).
pub fn size(d: &Digest) -> u64 {
    u64::try_from(d.size_bytes).unwrap_or(0)
}

/// Whether `d` is a well-formed SHA-256 digest: 64 lowercase hex digits and a size that is not
/// negative. Names from a server are checked before they reach a path or a resource name.
pub fn is_valid(d: &Digest) -> bool {
    d.hash.len() == 64
        && d.hash
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        && d.size_bytes >= 0
}

/// The digest of the empty blob, which servers must behave as though they always hold.
pub fn empty() -> Digest {
    of_bytes(b"")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digests_are_sha256_hex_with_the_size() {
        let d = of_bytes(b"hello world\n");
        assert_eq!(
            d.hash,
            "a948904f2f0f479b8f8197694b30184b0d2ed1c1cd2a1ec0fb85d299a192a447"
        );
        assert_eq!(d.size_bytes, 12);
        assert_eq!(show(&d), format!("{}/12", d.hash));
        assert!(is_valid(&d));
        assert!(!is_valid(&Digest {
            hash: "../etc".into(),
            size_bytes: 1
        }));
        assert_eq!(
            empty().hash,
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        let t = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(t.path(), b"hello world\n").unwrap();
        assert_eq!(of_file(t.path()).unwrap(), d);
    }

    #[test]
    fn a_message_digest_is_that_of_its_encoding_in_tag_order() {
        // Digest{hash=1, size_bytes=2}: field 1 (string) comes first, then field 2 (varint).
        let m = Digest {
            hash: "ab".into(),
            size_bytes: 3,
        };
        let (d, b) = of_message(&m);
        assert_eq!(b, [0x0a, 0x02, b'a', b'b', 0x10, 0x03]);
        assert_eq!(d, of_bytes(&b));
    }
}
