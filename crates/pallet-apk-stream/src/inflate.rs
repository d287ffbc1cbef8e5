//! Whole-buffer gzip decompression with libdeflate, for data sections small enough to hold.
//!
//! libdeflate decompresses about twice as fast as a streaming inflater and checks the CRC with
//! carry-less multiplication, but it needs all the input at once and an output buffer of the
//! final size. A data section is the last member of the file, so its trailer (the last four
//! bytes) says the size. Anything unusual (a size over the limit, several members, a trailer
//! that lies, bad data) gives `None`, and the caller decodes the same bytes with the streaming
//! decoder, whose result and errors are then exactly what they always were.

use std::cell::RefCell;
use std::ptr::NonNull;

use libdeflate_sys::{
    libdeflate_alloc_decompressor, libdeflate_decompressor, libdeflate_free_decompressor,
    libdeflate_gzip_decompress_ex, libdeflate_result_LIBDEFLATE_SUCCESS,
};

/// One libdeflate decompressor, freed when dropped.
struct Decompressor(NonNull<libdeflate_decompressor>);

impl Decompressor {
    fn new() -> Option<Self> {
        // SAFETY: no arguments; a null return (out of memory) is checked.
        NonNull::new(unsafe { libdeflate_alloc_decompressor() }).map(Decompressor)
    }
}

impl Drop for Decompressor {
    fn drop(&mut self) {
        // SAFETY: allocated by libdeflate_alloc_decompressor and freed only here.
        unsafe { libdeflate_free_decompressor(self.0.as_ptr()) }
    }
}

thread_local! {
    static DECOMPRESSOR: RefCell<Option<Decompressor>> = const { RefCell::new(None) };
    /// The last output buffer, kept for the next package read on this thread: a fresh buffer
    /// of several MiB costs a page fault and a zeroed page every 4 KiB, about a tenth of the
    /// decompression itself.
    static OUT: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// Decompress `gz`, which must be exactly one gzip member whose uncompressed size is at most
/// `max_out` bytes, and give the bytes to `f`; `None` without calling `f` otherwise (see the
/// module doc).
pub(crate) fn with_whole_member<R>(
    gz: &[u8],
    max_out: u64,
    f: impl FnOnce(&[u8]) -> R,
) -> Option<R> {
    // The smallest member: a 10-byte header, an empty block, the 8-byte trailer.
    if gz.len() < 20 {
        return None;
    }
    let size = u32::from_le_bytes(gz[gz.len() - 4..].try_into().expect("4 bytes")) as u64;
    if size > max_out {
        return None;
    }
    // Taken out of the thread's slot while in use, so a nested call (from `f`) gets its own.
    let mut out = OUT.with(|o| std::mem::take(&mut *o.borrow_mut()));
    out.clear();
    out.reserve_exact(size as usize);
    let ok = DECOMPRESSOR.with(|cell| {
        let mut cell = cell.borrow_mut();
        if cell.is_none() {
            *cell = Decompressor::new();
        }
        let Some(d) = cell.as_ref() else {
            return false;
        };
        let (mut used_in, mut used_out) = (0usize, 0usize);
        // SAFETY: the pointers and lengths are those of a live slice and of the buffer's spare
        // capacity (at least `size` bytes); libdeflate writes at most `size` bytes there and
        // reads at most `gz.len()` bytes of `gz`.
        let ret = unsafe {
            libdeflate_gzip_decompress_ex(
                d.0.as_ptr(),
                gz.as_ptr().cast(),
                gz.len(),
                out.as_mut_ptr().cast(),
                size as usize,
                &mut used_in,
                &mut used_out,
            )
        };
        let ok = ret == libdeflate_result_LIBDEFLATE_SUCCESS
            && used_in == gz.len()
            && used_out == size as usize;
        if ok {
            // SAFETY: libdeflate initialized exactly `used_out` bytes, within the capacity.
            unsafe { out.set_len(used_out) };
        }
        ok
    });
    let res = ok.then(|| f(&out));
    out.clear();
    OUT.with(|o| *o.borrow_mut() = out);
    res
}

/// [`with_whole_member`] into a vector of its own.
#[cfg(test)]
fn whole_member(gz: &[u8], max_out: u64) -> Option<Vec<u8>> {
    with_whole_member(gz, max_out, <[u8]>::to_vec)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write as _;

    fn gz(data: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    #[test]
    fn one_member_is_decompressed_and_anything_else_is_left_to_the_stream() {
        let data: Vec<u8> = (0..300_000u32).map(|i| (i % 253) as u8).collect();
        let one = gz(&data);
        assert_eq!(whole_member(&one, 1 << 20).as_deref(), Some(&data[..]));
        // Over the limit.
        assert_eq!(whole_member(&one, 1000), None);
        // Two members: the streaming decoder reads both.
        let mut two = gz(b"first");
        two.extend_from_slice(&gz(b"second"));
        assert_eq!(whole_member(&two, 1 << 20), None);
        // A trailer that lies about the size, or a flipped byte.
        let mut lie = one.clone();
        let n = lie.len();
        lie[n - 4] ^= 1;
        assert_eq!(whole_member(&lie, 1 << 20), None);
        let mut flip = one.clone();
        flip[n / 2] ^= 0x40;
        assert_eq!(whole_member(&flip, 1 << 20), None);
        // Cut short, and nothing at all.
        assert_eq!(whole_member(&one[..n - 1], 1 << 20), None);
        assert_eq!(whole_member(&[], 1 << 20), None);
    }
}
