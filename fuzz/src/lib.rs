//! Helpers shared by the fuzz targets: a mutator that sees through gzip, input splitting, and
//! the keyring the verifying targets use.

use std::io::{Read, Write};
use std::path::PathBuf;
use std::sync::OnceLock;

use pallet_keys::Keyring;

/// Largest decompressed member the mutator works on; bigger ones are left as they are, so a
/// member that inflates to gigabytes cannot stall mutation.
const MAX_PLAIN: u64 = 4 << 20;

/// One gzip member of a file: its compressed bytes as found and, when it inflated within
/// [`MAX_PLAIN`], its content.
struct Member {
    raw: Vec<u8>,
    plain: Option<Vec<u8>>,
}

/// Split `data` into gzip members; whatever does not inflate ends up in the last member as raw
/// bytes only.
fn members(data: &[u8]) -> Vec<Member> {
    let mut out = Vec::new();
    let mut rest = data;
    while !rest.is_empty() {
        let mut d = flate2::bufread::GzDecoder::new(rest);
        let mut plain = Vec::new();
        let ok = (&mut d).take(MAX_PLAIN + 1).read_to_end(&mut plain).is_ok()
            && plain.len() as u64 <= MAX_PLAIN;
        let left = d.into_inner();
        let used = rest.len() - left.len();
        if !ok || used == 0 {
            out.push(Member {
                raw: rest.to_vec(),
                plain: None,
            });
            break;
        }
        out.push(Member {
            raw: rest[..used].to_vec(),
            plain: Some(plain),
        });
        rest = left;
    }
    out
}

fn gzip(plain: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(plain).expect("writing to a Vec");
    e.finish().expect("writing to a Vec")
}

/// A small deterministic generator for the mutator's choices (libFuzzer hands us a seed).
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % n.max(1) as u64) as usize
    }
}

/// Mutate a file made of gzip members (an `.apk`, an `APKINDEX.tar.gz`) mostly *inside* its
/// members: inflate one, let libFuzzer mutate the tar it holds, deflate it again. Random byte
/// flips on compressed data almost never get past the gzip CRC, so without this the tar,
/// `.PKGINFO` and index parsers behind the decompressor would hardly be reached. Members left
/// alone keep their exact bytes, so a signature over an untouched control member still holds.
/// One call in four mutates the raw bytes, so the gzip framing is fuzzed as well, and now and
/// then a member is split in two (apk's data section may be several members).
pub fn gz_mutate(data: &mut [u8], size: usize, max_size: usize, seed: u32) -> usize {
    let mut rng = Rng(u64::from(seed) | 1 << 40);
    let mut ms = members(&data[..size]);
    let inflatable: Vec<usize> = (0..ms.len()).filter(|i| ms[*i].plain.is_some()).collect();
    if rng.below(4) == 0 || inflatable.is_empty() {
        return libfuzzer_sys::fuzzer_mutate(data, size, max_size);
    }
    let i = inflatable[rng.below(inflatable.len())];
    let mut plain = ms[i].plain.take().unwrap_or_default();
    if rng.below(16) == 0 && plain.len() > 1 {
        // Split the member in two at a random point: same content, one more member.
        let at = rng.below(plain.len());
        let second = gzip(&plain[at..]);
        ms[i].raw = gzip(&plain[..at]);
        ms.insert(
            i + 1,
            Member {
                raw: second,
                plain: None,
            },
        );
    } else {
        let len = plain.len();
        let cap = len + 4096;
        plain.resize(cap, 0);
        let n = libfuzzer_sys::fuzzer_mutate(&mut plain, len, cap);
        plain.truncate(n);
        ms[i].raw = gzip(&plain);
    }
    let total: usize = ms.iter().map(|m| m.raw.len()).sum();
    if total > max_size {
        return libfuzzer_sys::fuzzer_mutate(data, size, max_size);
    }
    let mut at = 0;
    for m in &ms {
        data[at..at + m.raw.len()].copy_from_slice(&m.raw);
        at += m.raw.len();
    }
    at
}

/// The keyring the verifying targets check signatures against: the folder named by
/// `PALLET_FUZZ_KEYRING` (scripts/fuzz.sh copies the fixtures' public keys there, so the
/// unmutated seeds verify), else an empty folder (every signed input is then untrusted).
pub fn keyring() -> &'static Keyring {
    static K: OnceLock<(Keyring, Option<tempfile::TempDir>)> = OnceLock::new();
    &K.get_or_init(|| match std::env::var_os("PALLET_FUZZ_KEYRING") {
        Some(d) if PathBuf::from(&d).is_dir() => (Keyring::from_paths([PathBuf::from(d)]), None),
        _ => {
            let t = tempfile::tempdir().expect("temporary folder");
            (Keyring::from_paths([t.path().to_path_buf()]), Some(t))
        }
    })
    .0
}

/// Split `data` at every occurrence of `sep` (at most `max` parts; the last keeps the rest).
pub fn split<'a>(data: &'a [u8], sep: &[u8], max: usize) -> Vec<&'a [u8]> {
    let mut out = Vec::new();
    let mut rest = data;
    while out.len() + 1 < max {
        match rest.windows(sep.len()).position(|w| w == sep) {
            Some(p) => {
                out.push(&rest[..p]);
                rest = &rest[p + sep.len()..];
            }
            None => break,
        }
    }
    out.push(rest);
    out
}
