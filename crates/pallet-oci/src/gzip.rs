//! Deterministic parallel gzip, pigz style.
//!
//! The input is cut into fixed [`BLOCK_SIZE`] blocks; each is compressed by a
//! fresh raw deflate stream primed with the previous 32 KiB as dictionary and
//! ended with a sync flush (the last block of a member with finish). The block
//! size is part of the output format, so it never depends on the thread count:
//! the bytes are identical with 1 or N rayon threads.
//!
//! A layer may be several gzip members back to back (skopeo, umoci and runc
//! accept it), so a caller can append an already compressed, cached member with
//! [`LayerWriter::append_member`].
//!
//! Design choice for the diff_id of cached members: SHA-256 states cannot be
//! combined, so the diff_id of the whole layer needs every uncompressed byte.
//! We decompress a cached member while appending it (inflate runs at ~200 MB/s
//! per core, four times faster than deflate at level 6) rather than caching the
//! uncompressed bytes too, which would double the cache size. The decoded bytes
//! are also checked against the member's CRC, so a corrupt cache entry is caught.

use std::io::{self, Read, Write};

use flate2::{Compress, Compression, FlushCompress, Status};
use rayon::prelude::*;
use sha2::{Digest, Sha256};

/// Uncompressed block size; part of the output format.
pub const BLOCK_SIZE: usize = 1 << 20;
const DICT: usize = 32 * 1024;
/// Blocks compressed per parallel batch; bounds memory to a few MiB. Does not
/// influence the output.
const BATCH: usize = 4;
/// Default level: 6 measured ~46 MB/s per core with ratio .394, level 1 ~130
/// MB/s with ratio .509 (see `benches/gzip.rs`).
pub const DEFAULT_LEVEL: u32 = 6;

/// Fixed gzip header: no name, mtime 0, XFL 0, OS 255 (unknown), so the
/// bytes do not depend on the build host or time.
const HEADER: [u8; 10] = [0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 255];

/// What a finished layer is known by.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayerDigests {
    /// `sha256:<hex>` of the compressed bytes (the layer digest).
    pub digest: String,
    /// Compressed size in bytes.
    pub size: u64,
    /// `sha256:<hex>` of the uncompressed tar bytes.
    pub diff_id: String,
    /// Uncompressed size in bytes.
    pub uncompressed_size: u64,
}

/// Writes a gzip layer to `W`, compressing blocks in parallel, hashing both
/// sides. `write` feeds uncompressed tar bytes; `finish` ends the last member.
pub struct LayerWriter<W: Write> {
    out: W,
    level: u32,
    pending: Vec<u8>,
    /// Last up-to-32 KiB of the previous block of the current member.
    dict: Vec<u8>,
    member_open: bool,
    crc: crc32fast::Hasher,
    member_len: u64,
    diff: Sha256,
    uncompressed: u64,
    compressed: Sha256,
    size: u64,
}

impl<W: Write> LayerWriter<W> {
    /// A writer at [`DEFAULT_LEVEL`].
    pub fn new(out: W) -> Self {
        Self::with_level(out, DEFAULT_LEVEL)
    }

    /// A writer at `level` (0-9).
    pub fn with_level(out: W, level: u32) -> Self {
        LayerWriter {
            out,
            level: level.min(9),
            pending: Vec::with_capacity(BLOCK_SIZE * (BATCH + 1)),
            dict: Vec::new(),
            member_open: false,
            crc: crc32fast::Hasher::new(),
            member_len: 0,
            diff: Sha256::new(),
            uncompressed: 0,
            compressed: Sha256::new(),
            size: 0,
        }
    }

    fn emit(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.out.write_all(bytes)?;
        self.compressed.update(bytes);
        self.size += bytes.len() as u64;
        Ok(())
    }

    /// Compresses `pending` blocks; the last one is finished when `last`.
    fn compress_pending(&mut self, last: bool) -> io::Result<()> {
        if !self.member_open {
            self.emit(&HEADER)?;
            self.member_open = true;
        }
        let data = std::mem::take(&mut self.pending);
        let mut blocks: Vec<&[u8]> = data.chunks(BLOCK_SIZE).collect();
        if blocks.is_empty() {
            blocks.push(&[]);
        }
        let n = blocks.len();
        let level = self.level;
        let first_dict = std::mem::take(&mut self.dict);
        let results: Vec<io::Result<(Vec<u8>, crc32fast::Hasher)>> = blocks
            .par_iter()
            .enumerate()
            .map(|(i, block)| {
                let dict: &[u8] = if i == 0 {
                    &first_dict
                } else {
                    let prev = blocks[i - 1];
                    &prev[prev.len().saturating_sub(DICT)..]
                };
                let flush = if last && i == n - 1 {
                    FlushCompress::Finish
                } else {
                    FlushCompress::Sync
                };
                let out = deflate_block(block, dict, level, flush)?;
                let mut crc = crc32fast::Hasher::new();
                crc.update(block);
                Ok((out, crc))
            })
            .collect();
        for r in results {
            let (out, crc) = r?;
            self.emit(&out)?;
            self.crc.combine(&crc);
        }
        // Every block but the batch's last is full, so the next dictionary is
        // the last 32 KiB of the old dictionary followed by this batch.
        let dict = if data.len() >= DICT {
            data[data.len() - DICT..].to_vec()
        } else {
            let mut d = first_dict;
            d.extend_from_slice(&data);
            d[d.len().saturating_sub(DICT)..].to_vec()
        };
        self.dict = dict;
        let mut data = data;
        data.clear();
        self.pending = data;
        if last {
            let crc = std::mem::replace(&mut self.crc, crc32fast::Hasher::new()).finalize();
            let isize = (self.member_len & 0xffff_ffff) as u32;
            let mut trailer = [0u8; 8];
            trailer[..4].copy_from_slice(&crc.to_le_bytes());
            trailer[4..].copy_from_slice(&isize.to_le_bytes());
            self.emit(&trailer)?;
            self.member_open = false;
            self.member_len = 0;
            self.dict.clear();
        }
        Ok(())
    }

    /// Ends the current member, if any data was written since the last one.
    pub fn finish_member(&mut self) -> io::Result<()> {
        if self.member_open || !self.pending.is_empty() {
            self.compress_pending(true)?;
        }
        Ok(())
    }

    /// Appends a complete, already compressed gzip member (or several) read
    /// from `member`, e.g. a cached per-package segment. Any data written
    /// before is closed as its own member first. The segment is decompressed to
    /// hash its bytes into the diff_id (see the module docs); returns its
    /// uncompressed length.
    pub fn append_member<R: Read>(&mut self, member: R) -> io::Result<u64> {
        self.finish_member()?;
        let mut tee = TeeRead {
            inner: member,
            sink: Vec::with_capacity(64 * 1024),
        };
        let mut total = 0u64;
        {
            let mut dec = flate2::read::MultiGzDecoder::new(&mut tee);
            let mut buf = vec![0u8; 256 * 1024];
            loop {
                let n = dec.read(&mut buf)?;
                if n == 0 {
                    break;
                }
                self.diff.update(&buf[..n]);
                total += n as u64;
                // Pass compressed bytes on as they are consumed to keep memory bounded.
                let chunk = std::mem::take(&mut dec.get_mut().sink);
                self.emit(&chunk)?;
            }
            let chunk = std::mem::take(&mut dec.get_mut().sink);
            self.emit(&chunk)?;
        }
        // Bytes read past the end of the gzip data (there should be none).
        let rest = std::mem::take(&mut tee.sink);
        self.emit(&rest)?;
        self.uncompressed += total;
        Ok(total)
    }

    /// Ends the layer and returns its digests and the inner writer.
    pub fn finish(mut self) -> io::Result<(W, LayerDigests)> {
        // An empty layer still needs one valid gzip member.
        if self.size == 0 || self.member_open || !self.pending.is_empty() {
            self.compress_pending(true)?;
        }
        self.out.flush()?;
        let digests = LayerDigests {
            digest: format!("sha256:{}", hex::encode(self.compressed.finalize())),
            size: self.size,
            diff_id: format!("sha256:{}", hex::encode(self.diff.finalize())),
            uncompressed_size: self.uncompressed,
        };
        Ok((self.out, digests))
    }
}

impl<W: Write> Write for LayerWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        // Keep at least one byte unflushed: the last block must end with finish,
        // and we only know which is last at finish time.
        let room = BLOCK_SIZE * BATCH - self.pending.len();
        if room == 0 {
            self.compress_pending(false)?;
            return self.write(buf);
        }
        let n = buf.len().min(room);
        self.pending.extend_from_slice(&buf[..n]);
        self.diff.update(&buf[..n]);
        self.uncompressed += n as u64;
        self.crc_len_add(n);
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}

impl<W: Write> LayerWriter<W> {
    fn crc_len_add(&mut self, n: usize) {
        self.member_len += n as u64;
    }
}

struct TeeRead<R> {
    inner: R,
    sink: Vec<u8>,
}

impl<R: Read> Read for TeeRead<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.sink.extend_from_slice(&buf[..n]);
        Ok(n)
    }
}

fn deflate_block(
    block: &[u8],
    dict: &[u8],
    level: u32,
    flush: FlushCompress,
) -> io::Result<Vec<u8>> {
    let mut c = Compress::new(Compression::new(level), false);
    if !dict.is_empty() {
        c.set_dictionary(dict).map_err(io::Error::other)?;
    }
    let mut out = Vec::with_capacity(block.len() / 2 + 1024);
    loop {
        let consumed = c.total_in() as usize;
        if out.capacity() - out.len() < 64 {
            out.reserve(out.capacity().max(4096));
        }
        let status = c
            .compress_vec(&block[consumed..], &mut out, flush)
            .map_err(io::Error::other)?;
        let done_input = c.total_in() as usize == block.len();
        match (status, flush) {
            (Status::StreamEnd, _) => break,
            (_, FlushCompress::Sync) if done_input && out.len() < out.capacity() => break,
            _ => {}
        }
    }
    Ok(out)
}

/// Compresses `data` in one go (convenience for tests and small layers).
pub fn compress(data: &[u8], level: u32) -> io::Result<(Vec<u8>, LayerDigests)> {
    let mut w = LayerWriter::with_level(Vec::new(), level);
    w.write_all(data)?;
    w.finish()
}
