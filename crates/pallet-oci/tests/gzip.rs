use std::io::{Read, Write};

use pallet_oci::gzip::{LayerWriter, compress};

fn data(n: usize) -> Vec<u8> {
    // Mixed data: text-like runs and pseudo-random bytes.
    let mut x: u32 = 12345;
    (0..n)
        .map(|i| {
            x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
            if (i / 4096) % 2 == 0 {
                b"hello world "[i % 12]
            } else {
                (x >> 16) as u8
            }
        })
        .collect()
}

fn gunzip(b: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    flate2::read::MultiGzDecoder::new(b)
        .read_to_end(&mut out)
        .unwrap();
    out
}

fn in_pool<T: Send>(threads: usize, f: impl FnOnce() -> T + Send) -> T {
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .unwrap()
        .install(f)
}

#[test]
fn identical_with_one_and_two_threads_and_round_trips() {
    let d = data(9 * 1024 * 1024 + 777);
    let a = in_pool(1, || compress(&d, 6).unwrap());
    let b = in_pool(2, || compress(&d, 6).unwrap());
    assert_eq!(a.0, b.0);
    assert_eq!(a.1, b.1);
    assert_eq!(gunzip(&a.0), d);
    // Write sizes do not change the output either.
    let c = in_pool(2, || {
        let mut w = LayerWriter::with_level(Vec::new(), 6);
        for chunk in d.chunks(70_001) {
            w.write_all(chunk).unwrap();
        }
        w.finish().unwrap()
    });
    assert_eq!(c.0, a.0);
    let hex = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&d));
    assert_eq!(a.1.diff_id, format!("sha256:{hex}"));
    assert_eq!(a.1.size, a.0.len() as u64);
}

#[test]
fn small_and_empty_layers() {
    for n in [0usize, 1, 100, 40_000, 1 << 20, (1 << 20) + 1] {
        let d = data(n);
        let (gz, dg) = compress(&d, 6).unwrap();
        assert_eq!(gunzip(&gz), d, "size {n}");
        assert_eq!(dg.uncompressed_size, n as u64);
    }
}

#[test]
fn appended_cached_members_concatenate() {
    let a = data(3 * 1024 * 1024 + 5);
    let b = data(200_000);
    let (seg_b, _) = compress(&b, 6).unwrap();
    let mut w = LayerWriter::new(Vec::new());
    w.write_all(&a).unwrap();
    w.append_member(seg_b.as_slice()).unwrap();
    w.write_all(b"tail").unwrap();
    let (gz, dg) = w.finish().unwrap();
    let mut all = a.clone();
    all.extend_from_slice(&b);
    all.extend_from_slice(b"tail");
    assert_eq!(gunzip(&gz), all);
    let hex = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&all));
    assert_eq!(dg.diff_id, format!("sha256:{hex}"));
    assert_eq!(dg.uncompressed_size, all.len() as u64);
    let hexc = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&gz));
    assert_eq!(dg.digest, format!("sha256:{hexc}"));
    // A corrupt cached segment is an error, not a bad layer.
    let mut bad = seg_b.clone();
    let n = bad.len();
    bad[n - 6] ^= 0xff;
    let mut w = LayerWriter::new(Vec::new());
    assert!(w.append_member(bad.as_slice()).is_err());
}
