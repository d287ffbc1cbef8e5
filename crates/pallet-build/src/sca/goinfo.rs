//! The build settings Go records in its binaries, read as Go's `debug/buildinfo` finds them:
//! the `\xff Go buildinf:` header (16-byte aligned) in `.go.buildinfo` or the first
//! writable data segment, with the version and module strings inline (Go 1.18+) or behind
//! pointers (older toolchains).

use super::elf::Elf;

const MAGIC: &[u8] = b"\xff Go buildinf:";
const ALIGN: usize = 16;
const HEADER: usize = 32;

/// The `build KEY=VALUE` settings of a Go binary; `None` when it is not one.
pub(crate) fn build_settings(elf: &Elf) -> Option<Vec<(String, String)>> {
    let (addr, size) = elf.go_data_start()?;
    if size == 0 {
        return None;
    }
    let mut data = elf.read_vaddr(addr, size)?;
    loop {
        let i = data.windows(MAGIC.len()).position(|w| w == MAGIC)?;
        if data.len() - i < HEADER {
            return None;
        }
        if i.is_multiple_of(ALIGN) {
            data = &data[i..];
            break;
        }
        data = data.get((i + ALIGN - 1) & !(ALIGN - 1)..)?;
    }
    let ptr_size = data[14] as usize;
    let flags = data[15];
    let (vers, module) = if flags & 2 != 0 {
        let (v, rest) = decode_string(&data[HEADER..]);
        let (m, _) = decode_string(rest);
        (v, m)
    } else {
        if ptr_size != 4 && ptr_size != 8 {
            return None;
        }
        let big = flags != 0;
        let read_ptr = |b: &[u8]| -> u64 {
            let b = &b[..ptr_size.min(b.len())];
            let mut v = 0u64;
            if big {
                for x in b {
                    v = (v << 8) | *x as u64;
                }
            } else {
                for (i, x) in b.iter().enumerate() {
                    v |= (*x as u64) << (8 * i);
                }
            }
            v
        };
        let read_string = |addr: u64| -> Vec<u8> {
            let Some(hdr) = elf.read_vaddr(addr, 2 * ptr_size as u64) else {
                return vec![];
            };
            if hdr.len() < 2 * ptr_size {
                return vec![];
            }
            let (at, len) = (read_ptr(hdr), read_ptr(&hdr[ptr_size..]));
            if len > 1 << 32 {
                return vec![];
            }
            match elf.read_vaddr(at, len) {
                Some(d) if d.len() as u64 == len => d.to_vec(),
                _ => vec![],
            }
        };
        (
            read_string(read_ptr(&data[16..])),
            read_string(read_ptr(&data[16 + ptr_size..])),
        )
    };
    if vers.is_empty() {
        return None;
    }
    // The module text is framed by 16-byte sentinels.
    let module = if module.len() >= 33 && module[module.len() - 17] == b'\n' {
        &module[16..module.len() - 16]
    } else {
        &[][..]
    };
    let text = String::from_utf8_lossy(module);
    let mut out = vec![];
    for line in text.lines() {
        let Some(kv) = line.strip_prefix("build\t") else {
            continue;
        };
        let (key, value) = kv.split_once('=')?;
        let unquote = |s: &str| -> String {
            if s.len() >= 2
                && (s.starts_with('"') && s.ends_with('"')
                    || s.starts_with('`') && s.ends_with('`'))
            {
                s[1..s.len() - 1]
                    .replace("\\\"", "\"")
                    .replace("\\\\", "\\")
            } else {
                s.to_string()
            }
        };
        out.push((unquote(key), unquote(value)));
    }
    Some(out)
}

/// A uvarint-prefixed string and what follows it; empty when malformed.
fn decode_string(data: &[u8]) -> (Vec<u8>, &[u8]) {
    let mut len = 0u64;
    let mut shift = 0;
    for (i, b) in data.iter().enumerate().take(10) {
        len |= ((b & 0x7f) as u64) << shift;
        if b & 0x80 == 0 {
            let start = i + 1;
            return match usize::try_from(len)
                .ok()
                .and_then(|n| Some((n, start.checked_add(n)?)))
            {
                Some((_, end)) if end <= data.len() => (data[start..end].to_vec(), &data[end..]),
                _ => (vec![], &[]),
            };
        }
        shift += 7;
    }
    (vec![], &[])
}

#[cfg(test)]
pub(crate) mod testing {
    /// A Go 1.18+ build-info blob (inline strings) carrying `settings`.
    pub fn blob(settings: &[(&str, &str)]) -> Vec<u8> {
        let mut b = super::MAGIC.to_vec();
        b.push(8);
        b.push(2);
        b.resize(super::HEADER, 0);
        let put = |b: &mut Vec<u8>, s: &[u8]| {
            let mut n = s.len();
            loop {
                let byte = (n & 0x7f) as u8;
                n >>= 7;
                if n == 0 {
                    b.push(byte);
                    break;
                }
                b.push(byte | 0x80);
            }
            b.extend_from_slice(s);
        };
        put(&mut b, b"go1.24.1");
        let mut module = vec![0x30u8; 16];
        module.extend_from_slice(b"path\texample.com/x\nmod\texample.com/x\t(devel)\t\n");
        for (k, v) in settings {
            module.extend_from_slice(format!("build\t{k}={v}\n").as_bytes());
        }
        module.extend_from_slice(&[0x31u8; 16]);
        put(&mut b, &module);
        b
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strings_and_framing() {
        assert_eq!(decode_string(b"\x03abcdef"), (b"abc".to_vec(), &b"def"[..]));
        assert_eq!(decode_string(b"\x09abc").0, b"");
        assert_eq!(decode_string(b"").0, b"");
    }
}
