//! Kernel versions as melange's kernel SCA finds them: the version a kernel image announces
//! (x86 bzImage header, gzip-wrapped or ARM zImage payloads, UKI `.linux` sections, or a
//! plain `Linux version ` string) and the `vermagic=` of kernel modules, plain or gzip, xz or
//! zstd compressed.

use std::io::Read;

/// Decompressed data is capped, so that a hostile file cannot exhaust memory.
const MAX_UNPACKED: u64 = 1 << 30;

fn read_capped(mut r: impl Read) -> std::io::Result<Vec<u8>> {
    let mut out = vec![];
    (&mut r).take(MAX_UNPACKED).read_to_end(&mut out)?;
    Ok(out)
}

/// The leading `[0-9.\-_A-Za-z]+` of a version line (`6.12.57-x (gcc …)` → `6.12.57-x`).
pub(crate) fn version_prefix(s: &str) -> &str {
    let end = s
        .find(|c: char| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_')))
        .unwrap_or(s.len());
    &s[..end]
}

/// The rest of the line after the first `prefix` in `data` (to NUL, line break or end),
/// trimmed; `None` when absent or empty.
fn scan_for_prefix(data: &[u8], prefix: &[u8]) -> Option<String> {
    let i = data.windows(prefix.len()).position(|w| w == prefix)?;
    let rest = &data[i + prefix.len()..];
    let end = rest
        .iter()
        .position(|b| *b == 0 || *b == b'\n')
        .unwrap_or(rest.len());
    let s = String::from_utf8_lossy(&rest[..end]).trim().to_string();
    (!s.is_empty()).then_some(s)
}

fn gunzip(data: &[u8]) -> Option<std::io::Result<Vec<u8>>> {
    // A gzip header is enough to commit to gzip, as Go's gzip.NewReader does.
    if data.len() < 10 || data[0] != 0x1f || data[1] != 0x8b || data[2] != 8 {
        return None;
    }
    Some(read_capped(flate2::read::MultiGzDecoder::new(data)))
}

/// A module's bytes, decompressed when gzip, xz or zstd.
fn unpack_module(data: &[u8]) -> std::io::Result<Vec<u8>> {
    if let Some(r) = gunzip(data) {
        return r;
    }
    if data.starts_with(b"\xfd7zXZ\0") {
        let mut out = vec![];
        lzma_rs::xz_decompress(&mut std::io::BufReader::new(data), &mut out)
            .map_err(|e| std::io::Error::other(format!("xz: {e:?}")))?;
        return Ok(out);
    }
    if let Ok(d) = ruzstd::decoding::StreamingDecoder::new(data)
        && let Ok(out) = read_capped(d)
    {
        return Ok(out);
    }
    Ok(data.to_vec())
}

/// The `vermagic=` value of a kernel module.
pub(crate) fn module_vermagic(data: &[u8]) -> Option<String> {
    let data = unpack_module(data).ok()?;
    scan_for_prefix(&data, b"vermagic=")
}

/// The `.linux` section of a PE file (a unified kernel image).
fn uki_linux(data: &[u8]) -> Option<&[u8]> {
    if !data.starts_with(b"MZ") {
        return None;
    }
    let u16_at = |o: usize| Some(u16::from_le_bytes(data.get(o..o + 2)?.try_into().ok()?));
    let u32_at = |o: usize| Some(u32::from_le_bytes(data.get(o..o + 4)?.try_into().ok()?));
    let pe = u32_at(0x3c)? as usize;
    if data.get(pe..pe + 4)? != b"PE\0\0" {
        return None;
    }
    let coff = pe + 4;
    let nsections = u16_at(coff + 2)? as usize;
    let opt_size = u16_at(coff + 16)? as usize;
    let table = coff + 20 + opt_size;
    for i in 0..nsections {
        let s = table + i * 40;
        let name = data.get(s..s + 8)?;
        if name.split(|b| *b == 0).next() == Some(b".linux") {
            let size = u32_at(s + 16)? as usize;
            let at = u32_at(s + 20)? as usize;
            return data.get(at..at.checked_add(size)?);
        }
    }
    None
}

/// The version a kernel image announces.
pub(crate) fn kernel_version(data: &[u8]) -> Option<String> {
    let unwrapped;
    let data = match gunzip(data) {
        Some(r) => {
            unwrapped = r.ok()?;
            &unwrapped[..]
        }
        None => uki_linux(data).unwrap_or(data),
    };
    // 1. The x86 boot header: "HdrS" at 514, a pointer at 526 to the version string.
    if data.get(514..518) == Some(b"HdrS") {
        let ptr = u16::from_le_bytes([data[526], *data.get(527)?]) as usize;
        if ptr != 0
            && let Some(rest) = data.get(ptr + 0x200..)
        {
            let end = rest
                .iter()
                .position(|b| *b == 0 || *b == b'\n')
                .unwrap_or(rest.len());
            let s = String::from_utf8_lossy(&rest[..end]).trim().to_string();
            if !s.is_empty() {
                return Some(s);
            }
        }
    }
    // 2. An embedded gzip stream (ARM zImage), read as far as it goes.
    if let Some(at) = data.windows(3).position(|w| w == [0x1f, 0x8b, 0x08]) {
        let mut out = vec![];
        let mut d = flate2::read::GzDecoder::new(&data[at..]).take(MAX_UNPACKED);
        // The zImage footer makes the stream end badly: keep what was decoded.
        let mut buf = [0u8; 64 << 10];
        loop {
            match d.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => out.extend_from_slice(&buf[..n]),
            }
        }
        if let Some(v) = scan_for_prefix(&out, b"Linux version ") {
            return Some(v);
        }
    }
    // 3. Anything else: the version string itself.
    scan_for_prefix(data, b"Linux version ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions() {
        assert_eq!(
            version_prefix("6.12.57-example (amelia@fw) (gcc 14.3.0) # SMP"),
            "6.12.57-example"
        );
        assert_eq!(version_prefix("6.6.1 SMP preempt mod_unload"), "6.6.1");
        assert_eq!(version_prefix("(odd)"), "");
        let m = b"\0license=GPL\0vermagic=6.6.1-0-lts SMP mod_unload \0name=x\0";
        assert_eq!(
            module_vermagic(m).as_deref(),
            Some("6.6.1-0-lts SMP mod_unload")
        );
        assert_eq!(module_vermagic(b"nothing here"), None);
        let k = b"junk Linux version 6.17.7 (root@x) (gcc) #1 SMP\njunk";
        assert_eq!(
            kernel_version(k).as_deref(),
            Some("6.17.7 (root@x) (gcc) #1 SMP")
        );
        // A bzImage header: HdrS at 514 and the version at pointer + 0x200.
        let mut bz = vec![0u8; 0x400];
        bz[514..518].copy_from_slice(b"HdrS");
        bz[526..528].copy_from_slice(&0x100u16.to_le_bytes());
        bz[0x300..0x30f].copy_from_slice(b"6.1.2-bz (b@x)\0");
        assert_eq!(kernel_version(&bz).as_deref(), Some("6.1.2-bz (b@x)"));
    }

    #[test]
    fn compressed_modules() {
        use std::io::Write;
        let m = b"\x7fELF....vermagic=6.17.7 SMP preempt mod_unload\0author=x\0".repeat(3);
        let mut gz = flate2::write::GzEncoder::new(vec![], flate2::Compression::default());
        gz.write_all(&m).unwrap();
        let gz = gz.finish().unwrap();
        assert_eq!(
            module_vermagic(&gz).as_deref(),
            Some("6.17.7 SMP preempt mod_unload")
        );
        let mut xz = vec![];
        lzma_rs::xz_compress(&mut std::io::BufReader::new(&m[..]), &mut xz).unwrap();
        assert_eq!(
            module_vermagic(&xz).as_deref(),
            Some("6.17.7 SMP preempt mod_unload")
        );
        // zstd from the host's tool, when there is one.
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("m.ko");
        std::fs::write(&p, &m).unwrap();
        match std::process::Command::new("zstd")
            .arg("-q")
            .arg(&p)
            .status()
        {
            Ok(s) if s.success() => {
                let z = std::fs::read(dir.path().join("m.ko.zst")).unwrap();
                assert_eq!(
                    module_vermagic(&z).as_deref(),
                    Some("6.17.7 SMP preempt mod_unload")
                );
            }
            _ => eprintln!("SKIPPED: zstd module: no zstd tool"),
        }
    }
}
