//! A `BufRead` that sees exactly the compressed bytes a gzip decoder consumes.
//!
//! Every hash in the APK v2 format is over compressed gzip-member bytes. `flate2`'s bufread
//! decoders call `consume` with precisely the bytes they used, so hashing in `consume` gives the
//! member hashes in the same single pass that decompresses.

use std::io::{self, BufRead, Read};

use sha1::Digest as _;

/// What to do with the bytes of the current section.
#[derive(Default)]
pub(crate) struct Taps {
    pub sha1: Option<sha1::Sha1>,
    pub sha256: Option<sha2::Sha256>,
    /// The signature digest for signatures that cover everything to EOF.
    pub sig: Option<pallet_keys::DigestContext>,
    /// Keep a copy (small members only: signature and control).
    pub copy: Option<Vec<u8>>,
    /// Bytes seen since the taps were last reset.
    pub count: u64,
}

pub(crate) struct HashingReader<R> {
    inner: R,
    pub taps: Taps,
    /// Bytes consumed in total.
    pub offset: u64,
    /// Refuse to keep more than this in `copy` (a hostile "control" member could be huge).
    pub copy_limit: usize,
    pub copy_overflow: bool,
}

impl<R: BufRead> HashingReader<R> {
    pub fn new(inner: R) -> Self {
        HashingReader {
            inner,
            taps: Taps::default(),
            offset: 0,
            copy_limit: usize::MAX,
            copy_overflow: false,
        }
    }

    /// Whether any byte is left.
    pub fn at_eof(&mut self) -> io::Result<bool> {
        Ok(self.inner.fill_buf()?.is_empty())
    }
}

impl<R: BufRead> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = {
            let avail = self.fill_buf()?;
            let n = avail.len().min(buf.len());
            buf[..n].copy_from_slice(&avail[..n]);
            n
        };
        self.consume(n);
        Ok(n)
    }
}

impl<R: BufRead> BufRead for HashingReader<R> {
    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        self.inner.fill_buf()
    }

    fn consume(&mut self, amt: usize) {
        if amt > 0
            && let Ok(buf) = self.inner.fill_buf()
        {
            let bytes = &buf[..amt.min(buf.len())];
            let t = &mut self.taps;
            if let Some(h) = t.sha1.as_mut() {
                h.update(bytes);
            }
            if let Some(h) = t.sha256.as_mut() {
                h.update(bytes);
            }
            if let Some(h) = t.sig.as_mut() {
                h.update(bytes);
            }
            if let Some(c) = t.copy.as_mut() {
                if c.len() + bytes.len() <= self.copy_limit {
                    c.extend_from_slice(bytes);
                } else {
                    self.copy_overflow = true;
                }
            }
            t.count += bytes.len() as u64;
        }
        self.offset += amt as u64;
        self.inner.consume(amt);
    }
}
