//! Deterministic parallel gzip: the input is cut into fixed 1 MiB blocks, each compressed on
//! its own core as raw deflate primed with the previous 32 KiB (so the ratio matches a single
//! stream), sync-flushed so the blocks concatenate, and the CRC stitched together. The block
//! size is part of the output format and never depends on the number of threads, so the bytes
//! are the same on any machine. Memory stays bounded: a few blocks in flight, never the whole
//! stream.

use std::io::{self, Write};

use flate2::{Compress, Compression, FlushCompress, Status};
use rayon::prelude::*;

const BLOCK: usize = 1 << 20;
const WINDOW: usize = 32 << 10;
/// Blocks compressed together; fixed so memory is bounded whatever the core count.
const BATCH: usize = 8;

/// A gzip writer that compresses on every core and produces one gzip member.
pub struct ParGzWriter<W: Write> {
    inner: Option<W>,
    level: u32,
    buf: Vec<u8>,
    pending: Vec<Vec<u8>>,
    /// The last 32 KiB of input before the pending blocks (the next dictionary).
    tail: Vec<u8>,
    crc: crc32fast::Hasher,
    len: u64,
    started: bool,
}

fn deflate_block(level: u32, dict: &[u8], data: &[u8], last: bool) -> io::Result<Vec<u8>> {
    let mut c = Compress::new(Compression::new(level), false);
    if !dict.is_empty() {
        c.set_dictionary(dict).map_err(io::Error::other)?;
    }
    let mut out = Vec::with_capacity(data.len() / 2 + 1024);
    let flush = if last {
        FlushCompress::Finish
    } else {
        FlushCompress::Sync
    };
    loop {
        let consumed = c.total_in() as usize;
        if out.capacity() - out.len() < 4096 {
            out.reserve(out.capacity().max(64 << 10));
        }
        let st = c
            .compress_vec(&data[consumed..], &mut out, flush)
            .map_err(io::Error::other)?;
        let done_input = c.total_in() as usize == data.len();
        match st {
            Status::StreamEnd => break,
            // A sync flush is complete when all input is taken and the output had room left.
            _ if !last && done_input && out.len() < out.capacity() => break,
            _ => {}
        }
    }
    Ok(out)
}

impl<W: Write> ParGzWriter<W> {
    pub fn new(inner: W, level: u32) -> Self {
        ParGzWriter {
            inner: Some(inner),
            level,
            buf: Vec::with_capacity(BLOCK),
            pending: vec![],
            tail: vec![],
            crc: crc32fast::Hasher::new(),
            len: 0,
            started: false,
        }
    }

    fn header(&mut self) -> io::Result<()> {
        if !self.started {
            self.started = true;
            // No name, mtime 0, OS unknown: nothing about the machine reaches the output.
            let w = self.inner.as_mut().expect("not finished");
            w.write_all(&[0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff])?;
        }
        Ok(())
    }

    /// Compress the pending blocks in parallel and write them in order.
    fn flush_pending(&mut self, last: bool) -> io::Result<()> {
        self.header()?;
        let blocks = std::mem::take(&mut self.pending);
        let n = blocks.len();
        let level = self.level;
        let mut dicts = Vec::with_capacity(n);
        let mut prev = std::mem::take(&mut self.tail);
        for b in &blocks {
            dicts.push(prev);
            let start = b.len().saturating_sub(WINDOW);
            prev = if b.len() >= WINDOW {
                b[start..].to_vec()
            } else {
                let mut p = dicts.last().cloned().unwrap_or_default();
                p.extend_from_slice(b);
                let s = p.len().saturating_sub(WINDOW);
                p[s..].to_vec()
            };
        }
        self.tail = prev;
        let out: Vec<io::Result<(Vec<u8>, crc32fast::Hasher)>> = blocks
            .par_iter()
            .zip(dicts.par_iter())
            .enumerate()
            .map(|(i, (b, d))| {
                let mut h = crc32fast::Hasher::new();
                h.update(b);
                Ok((deflate_block(level, d, b, last && i + 1 == n)?, h))
            })
            .collect();
        let w = self.inner.as_mut().expect("not finished");
        for r in out {
            let (bytes, h) = r?;
            w.write_all(&bytes)?;
            self.crc.combine(&h);
        }
        Ok(())
    }

    /// Finish the member (trailer with CRC-32 and size) and return the inner writer.
    pub fn finish(mut self) -> io::Result<W> {
        let rest = std::mem::take(&mut self.buf);
        // The final block carries the end of stream, even when it is empty.
        self.pending.push(rest);
        self.flush_pending(true)?;
        let crc = std::mem::replace(&mut self.crc, crc32fast::Hasher::new()).finalize();
        let mut w = self.inner.take().expect("not finished");
        w.write_all(&crc.to_le_bytes())?;
        w.write_all(&(self.len as u32).to_le_bytes())?;
        Ok(w)
    }
}

impl<W: Write> Write for ParGzWriter<W> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let mut rest = data;
        while !rest.is_empty() {
            let take = (BLOCK - self.buf.len()).min(rest.len());
            self.buf.extend_from_slice(&rest[..take]);
            rest = &rest[take..];
            if self.buf.len() == BLOCK {
                let full = std::mem::replace(&mut self.buf, Vec::with_capacity(BLOCK));
                self.pending.push(full);
                if self.pending.len() == BATCH {
                    self.flush_pending(false)?;
                }
            }
        }
        self.len += data.len() as u64;
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    fn gz(data: &[u8], threads: usize) -> Vec<u8> {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap();
        pool.install(|| {
            let mut w = ParGzWriter::new(Vec::new(), 6);
            for chunk in data.chunks(70_001) {
                w.write_all(chunk).unwrap();
            }
            w.finish().unwrap()
        })
    }

    #[test]
    fn round_trips_and_is_the_same_on_any_core_count() {
        let mut data = Vec::new();
        let mut x: u32 = 1;
        while data.len() < 11 * BLOCK + 12345 {
            x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
            // Compressible but not trivial.
            data.extend_from_slice(format!("line {} value {}\n", x % 1000, x >> 20).as_bytes());
        }
        let a = gz(&data, 1);
        let b = gz(&data, 2);
        let c = gz(&data, 4);
        assert!(a == b && b == c, "output depends on the thread count");
        let mut back = Vec::new();
        flate2::read::GzDecoder::new(&a[..])
            .read_to_end(&mut back)
            .unwrap();
        assert!(back == data);
        // As small as a single stream would be, give or take the sync markers.
        let mut single = flate2::write::GzEncoder::new(Vec::new(), Compression::new(6));
        single.write_all(&data).unwrap();
        let single = single.finish().unwrap();
        assert!(
            a.len() < single.len() + single.len() / 50 + 1024,
            "{} vs {}",
            a.len(),
            single.len()
        );
    }

    #[test]
    fn empty_and_tiny_inputs() {
        for data in [&b""[..], b"x", &[7u8; 40_000]] {
            let out = gz(data, 2);
            let mut back = Vec::new();
            flate2::read::GzDecoder::new(&out[..])
                .read_to_end(&mut back)
                .unwrap();
            assert_eq!(back, data);
        }
    }
}
