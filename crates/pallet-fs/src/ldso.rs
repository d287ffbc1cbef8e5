//! glibc's `/etc/ld.so.cache` without running `ldconfig`: the `ld.so.conf` syntax, the ELF
//! facts the cache needs (SONAME, machine, ABI flags), the order the dynamic loader's binary
//! search expects, and the "glibc-ld.so.cache1.1" file format. Nothing here touches a
//! filesystem: ELF files are read through [`ReadAt`], and the encoder turns entries into bytes.
//! The walk over an image tree is in `ldcache.rs`.

use std::cmp::Ordering;
use std::io;

/// Magic and version of the format glibc 2.32+ writes on its own (no libc5-era header).
const MAGIC: &[u8; 17] = b"glibc-ld.so.cache";
const VERSION: &[u8; 3] = b"1.1";
/// `struct cache_file_new` without its entries.
const HEADER_LEN: usize = 48;
/// `struct file_entry_new`: flags, key, value, osversion, hwcap.
const ENTRY_LEN: usize = 24;
/// `cache_file_new_flags_endian_little` / `_big`: the loader refuses a cache whose byte order
/// differs from its own, which this lets it detect instead of misreading offsets.
const ENDIAN_LITTLE: u8 = 2;
const ENDIAN_BIG: u8 = 3;

/// `FLAG_ELF_LIBC6`: a glibc (libc.so.6) ELF library. The high byte says which ABI.
pub const FLAG_ELF_LIBC6: u32 = 0x0003;
const FLAG_S390_LIB64: u32 = 0x0400;
const FLAG_POWERPC_LIB64: u32 = 0x0500;
const FLAG_X8664_LIB64: u32 = 0x0300;
const FLAG_X8664_LIBX32: u32 = 0x0800;
const FLAG_ARM_LIBHF: u32 = 0x0900;
const FLAG_AARCH64_LIB64: u32 = 0x0a00;
const FLAG_ARM_LIBSF: u32 = 0x0b00;
const FLAG_RISCV_FLOAT_ABI_SOFT: u32 = 0x0f00;
const FLAG_RISCV_FLOAT_ABI_DOUBLE: u32 = 0x1000;
const FLAG_LARCH_FLOAT_ABI_SOFT: u32 = 0x1100;
const FLAG_LARCH_FLOAT_ABI_DOUBLE: u32 = 0x1200;

const EM_386: u16 = 3;
const EM_PPC: u16 = 20;
const EM_PPC64: u16 = 21;
const EM_S390: u16 = 22;
const EM_ARM: u16 = 40;
const EM_X86_64: u16 = 62;
const EM_AARCH64: u16 = 183;
const EM_RISCV: u16 = 243;
const EM_LOONGARCH: u16 = 258;

const ET_DYN: u16 = 3;
const PT_LOAD: u32 = 1;
const PT_DYNAMIC: u32 = 2;
const DT_NULL: u64 = 0;
const DT_STRTAB: u64 = 5;
const DT_STRSZ: u64 = 10;
const DT_SONAME: u64 = 14;

/// Headers larger than this are not a real library's: refuse them instead of allocating.
const MAX_TABLE: u64 = 1 << 20;
/// Longest SONAME read; real ones are a few dozen bytes.
const MAX_NAME: u64 = 4096;

/// Positioned reads from a file whose size is known: just enough to read an ELF header and
/// its dynamic section without loading a whole library.
pub trait ReadAt {
    /// Size in bytes.
    fn size(&self) -> u64;
    /// Fill `buf` from `offset`; reading past the end is an error.
    fn read_exact_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()>;
}

impl ReadAt for [u8] {
    fn size(&self) -> u64 {
        self.len() as u64
    }
    fn read_exact_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        let start = usize::try_from(offset).map_err(|_| short())?;
        let src = start
            .checked_add(buf.len())
            .and_then(|end| self.get(start..end))
            .ok_or_else(short)?;
        buf.copy_from_slice(src);
        Ok(())
    }
}

fn short() -> io::Error {
    io::Error::new(
        io::ErrorKind::UnexpectedEof,
        "read past the end of the file",
    )
}

#[derive(Debug, thiserror::Error)]
pub enum ElfError {
    #[error("not an ELF file")]
    NotElf,
    #[error("not a shared object (ELF type {0})")]
    NotShared(u16),
    #[error("no dynamic section")]
    NoDynamic,
    #[error("malformed ELF: {0}")]
    Malformed(&'static str),
    #[error("{0}")]
    Io(#[from] io::Error),
}

/// What the cache needs to know of one shared object.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ElfInfo {
    pub class64: bool,
    pub big_endian: bool,
    pub machine: u16,
    /// `e_flags`: the float ABI on ARM, RISC-V and LoongArch.
    pub flags: u32,
    /// `DT_SONAME` values (normally one, sometimes none).
    pub sonames: Vec<String>,
}

/// Integer reads in the file's own byte order and word size.
#[derive(Clone, Copy)]
struct Layout {
    big: bool,
    wide: bool,
}

impl Layout {
    fn u16(self, b: &[u8], at: usize) -> u16 {
        let v = [b[at], b[at + 1]];
        if self.big {
            u16::from_be_bytes(v)
        } else {
            u16::from_le_bytes(v)
        }
    }
    fn u32(self, b: &[u8], at: usize) -> u32 {
        let v: [u8; 4] = b[at..at + 4].try_into().expect("4 bytes");
        if self.big {
            u32::from_be_bytes(v)
        } else {
            u32::from_le_bytes(v)
        }
    }
    fn u64(self, b: &[u8], at: usize) -> u64 {
        let v: [u8; 8] = b[at..at + 8].try_into().expect("8 bytes");
        if self.big {
            u64::from_be_bytes(v)
        } else {
            u64::from_le_bytes(v)
        }
    }
    /// An address-sized field: 8 bytes in ELF64, 4 in ELF32.
    fn word(self, b: &[u8], at: usize) -> u64 {
        if self.wide {
            self.u64(b, at)
        } else {
            u64::from(self.u32(b, at))
        }
    }
}

/// One program header, reduced to what locating the dynamic strings needs.
struct Segment {
    kind: u32,
    offset: u64,
    vaddr: u64,
    filesz: u64,
}

fn read_vec(f: &(impl ReadAt + ?Sized), offset: u64, len: u64) -> Result<Vec<u8>, ElfError> {
    if len > MAX_TABLE {
        return Err(ElfError::Malformed("table too large"));
    }
    let end = offset
        .checked_add(len)
        .ok_or(ElfError::Malformed("offset overflows"))?;
    if end > f.size() {
        return Err(ElfError::Malformed("truncated"));
    }
    let mut v = vec![0; len as usize];
    f.read_exact_at(offset, &mut v)?;
    Ok(v)
}

/// Read the ELF header, the program headers and the dynamic section, as glibc's ldconfig
/// does: through `PT_DYNAMIC` and the `PT_LOAD` that maps `DT_STRTAB`, not through section
/// headers, so stripped libraries work too.
pub fn read_elf(f: &(impl ReadAt + ?Sized)) -> Result<ElfInfo, ElfError> {
    if f.size() < 52 {
        return Err(ElfError::NotElf);
    }
    let mut ident = [0u8; 6];
    f.read_exact_at(0, &mut ident)?;
    if &ident[..4] != b"\x7fELF" {
        return Err(ElfError::NotElf);
    }
    let wide = match ident[4] {
        1 => false,
        2 => true,
        _ => return Err(ElfError::NotElf),
    };
    let big = match ident[5] {
        1 => false,
        2 => true,
        _ => return Err(ElfError::NotElf),
    };
    let l = Layout { big, wide };
    let h = read_vec(f, 0, if wide { 64 } else { 52 })?;
    let e_type = l.u16(&h, 16);
    if e_type != ET_DYN {
        return Err(ElfError::NotShared(e_type));
    }
    let machine = l.u16(&h, 18);
    let (phoff, flags, phentsize, phnum) = if wide {
        (l.u64(&h, 32), l.u32(&h, 48), l.u16(&h, 54), l.u16(&h, 56))
    } else {
        (
            u64::from(l.u32(&h, 28)),
            l.u32(&h, 36),
            l.u16(&h, 42),
            l.u16(&h, 44),
        )
    };
    let min_ph = if wide { 56 } else { 32 };
    if usize::from(phentsize) < min_ph {
        return Err(ElfError::Malformed("program header entries too small"));
    }
    let ph = read_vec(f, phoff, u64::from(phentsize) * u64::from(phnum))?;
    let segments: Vec<Segment> = ph
        .chunks_exact(usize::from(phentsize))
        .map(|p| {
            if wide {
                Segment {
                    kind: l.u32(p, 0),
                    offset: l.u64(p, 8),
                    vaddr: l.u64(p, 16),
                    filesz: l.u64(p, 32),
                }
            } else {
                Segment {
                    kind: l.u32(p, 0),
                    offset: u64::from(l.u32(p, 4)),
                    vaddr: u64::from(l.u32(p, 8)),
                    filesz: u64::from(l.u32(p, 16)),
                }
            }
        })
        .collect();
    let dynamic = segments
        .iter()
        .find(|s| s.kind == PT_DYNAMIC && s.filesz > 0)
        .ok_or(ElfError::NoDynamic)?;
    let dyn_bytes = read_vec(f, dynamic.offset, dynamic.filesz)?;
    let entry = if wide { 16 } else { 8 };
    let (mut strtab, mut strsz, mut names) = (None, None, Vec::new());
    for d in dyn_bytes.chunks_exact(entry) {
        let (tag, val) = (l.word(d, 0), l.word(d, entry / 2));
        match tag {
            DT_NULL => break,
            DT_STRTAB => strtab = Some(val),
            DT_STRSZ => strsz = Some(val),
            DT_SONAME => names.push(val),
            _ => {}
        }
    }
    let mut sonames = Vec::new();
    if !names.is_empty() {
        let addr = strtab.ok_or(ElfError::Malformed("DT_SONAME without DT_STRTAB"))?;
        // DT_STRTAB is an address; the PT_LOAD that maps it gives its place in the file
        // (ldconfig falls back to reading the address as an offset, and so do we).
        let base = segments
            .iter()
            .find(|s| s.kind == PT_LOAD && addr >= s.vaddr && addr - s.vaddr < s.filesz)
            .map_or(addr, |s| addr - s.vaddr + s.offset);
        for off in names {
            let start = base
                .checked_add(off)
                .ok_or(ElfError::Malformed("SONAME offset overflows"))?;
            let mut room = f.size().saturating_sub(start).min(MAX_NAME);
            if let Some(sz) = strsz {
                room = room.min(sz.saturating_sub(off));
            }
            let raw = read_vec(f, start, room)?;
            let end = raw
                .iter()
                .position(|b| *b == 0)
                .ok_or(ElfError::Malformed("unterminated SONAME"))?;
            sonames.push(String::from_utf8_lossy(&raw[..end]).into_owned());
        }
    }
    Ok(ElfInfo {
        class64: wide,
        big_endian: big,
        machine,
        flags,
        sonames,
    })
}

/// The cache flags ldconfig gives a library of this machine and ABI, or `None` for one the
/// loader of no glibc port would take (ldconfig skips those too).
pub fn cache_flags(e: &ElfInfo) -> Option<u32> {
    let abi = match (e.machine, e.class64) {
        (EM_X86_64, true) => FLAG_X8664_LIB64,
        (EM_X86_64, false) => FLAG_X8664_LIBX32,
        (EM_386, false) | (EM_PPC, false) | (EM_S390, false) => 0,
        (EM_AARCH64, true) => FLAG_AARCH64_LIB64,
        (EM_PPC64, true) => FLAG_POWERPC_LIB64,
        (EM_S390, true) => FLAG_S390_LIB64,
        (EM_ARM, false) => {
            // Only EABI version 5 objects say which float ABI they use; older or unmarked
            // ones are taken as compatible with both, as glibc does.
            let eabi5 = e.flags & 0xff00_0000 == 0x0500_0000;
            if eabi5 && e.flags & 0x400 != 0 {
                FLAG_ARM_LIBHF
            } else if eabi5 && e.flags & 0x200 != 0 {
                FLAG_ARM_LIBSF
            } else {
                0
            }
        }
        (EM_RISCV, _) => {
            // glibc supports the soft and double float ABIs, with or without compressed
            // instructions; any other flag means a library it cannot load.
            if e.flags & !0x7 != 0 {
                return None;
            }
            match e.flags & 0x6 {
                0 => FLAG_RISCV_FLOAT_ABI_SOFT,
                4 => FLAG_RISCV_FLOAT_ABI_DOUBLE,
                _ => return None,
            }
        }
        (EM_LOONGARCH, true) => match e.flags & 0x7 {
            1 => FLAG_LARCH_FLOAT_ABI_SOFT,
            3 => FLAG_LARCH_FLOAT_ABI_DOUBLE,
            _ => return None,
        },
        _ => return None,
    };
    Some(FLAG_ELF_LIBC6 | abi)
}

/// Split a library file name into its name and version (`libfoo.so.1` → `libfoo`, `1`).
/// ldconfig(8) looks only at `lib*.so*` and `ld-*.so*`; anything else is `None`.
pub fn parse_lib_filename(name: &str) -> Option<(&str, &str)> {
    if !name.starts_with("lib") && !name.starts_with("ld-") {
        return None;
    }
    if let Some(base) = name.strip_suffix(".so") {
        return Some((base, ""));
    }
    let i = name.rfind(".so.")?;
    Some((&name[..i], &name[i + 4..]))
}

/// glibc's `_dl_cache_libcmp`, the comparison the loader binary-searches the cache with:
/// runs of digits compare as numbers and a digit sorts after any other byte. The cache must
/// be ordered by exactly this (descending), or the loader misses libraries that are in it.
/// Bytes compare unsigned; glibc's `char` is signed on some ports, which only matters for
/// non-ASCII names.
pub fn libcmp(a: &str, b: &str) -> Ordering {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    let (mut i, mut j) = (0, 0);
    while i < a.len() && j < b.len() {
        let (x, y) = (a[i], b[j]);
        match (x.is_ascii_digit(), y.is_ascii_digit()) {
            (true, true) => {
                // The loader does this in `int`; wrapping keeps its answer for absurdly long
                // digit runs too.
                let (mut v, mut w) = (0i32, 0i32);
                while i < a.len() && a[i].is_ascii_digit() {
                    v = v.wrapping_mul(10).wrapping_add(i32::from(a[i] - b'0'));
                    i += 1;
                }
                while j < b.len() && b[j].is_ascii_digit() {
                    w = w.wrapping_mul(10).wrapping_add(i32::from(b[j] - b'0'));
                    j += 1;
                }
                if v != w {
                    return v.cmp(&w);
                }
            }
            (true, false) => return Ordering::Greater,
            (false, true) => return Ordering::Less,
            _ if x != y => return x.cmp(&y),
            _ => {
                i += 1;
                j += 1;
            }
        }
    }
    (a.len() - i).cmp(&(b.len() - j))
}

/// One line of the cache: the name a program asks for and the file the loader opens.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CacheEntry {
    pub flags: u32,
    /// What `dlopen`/`DT_NEEDED` ask for, e.g. `libz.so.1`.
    pub key: String,
    /// The absolute path, e.g. `/lib/libz.so.1`. It must end with `/` + `key`.
    pub value: String,
    pub hwcap: u64,
}

/// Put entries in the loader's order: names descending by [`libcmp`], then flags
/// descending, and otherwise as given. The sort is stable, so for one name the directory
/// listed first in `ld.so.conf` stays first, which is the one the loader picks.
pub fn sort_entries(entries: &mut [CacheEntry]) {
    entries.sort_by(|x, y| {
        libcmp(&y.key, &x.key)
            .then(y.flags.cmp(&x.flags))
            .then(y.hwcap.cmp(&x.hwcap))
    });
}

/// Encode a cache in the "glibc-ld.so.cache1.1" format: header, entries, then one string
/// per entry (its path), with each key pointing into the tail of its path as ldconfig's
/// string table does. Offsets count from the start of the file. Call [`sort_entries`]
/// first. Byte order is the target's: a cache for s390x is big-endian whatever the host.
pub fn encode_cache(entries: &[CacheEntry], big_endian: bool) -> Vec<u8> {
    let u32b = |v: u32| {
        if big_endian {
            v.to_be_bytes()
        } else {
            v.to_le_bytes()
        }
    };
    let u64b = |v: u64| {
        if big_endian {
            v.to_be_bytes()
        } else {
            v.to_le_bytes()
        }
    };
    let strings_at = HEADER_LEN + entries.len() * ENTRY_LEN;
    let mut strings: Vec<u8> = Vec::new();
    let mut table: Vec<u8> = Vec::with_capacity(entries.len() * ENTRY_LEN);
    for e in entries {
        let value = strings_at + strings.len();
        strings.extend_from_slice(e.value.as_bytes());
        strings.push(0);
        let key = if e.value.ends_with(&format!("/{}", e.key)) {
            value + e.value.len() - e.key.len()
        } else {
            // A key that is not its path's tail needs a string of its own.
            let k = strings_at + strings.len();
            strings.extend_from_slice(e.key.as_bytes());
            strings.push(0);
            k
        };
        table.extend_from_slice(&u32b(e.flags));
        table.extend_from_slice(&u32b(key as u32));
        table.extend_from_slice(&u32b(value as u32));
        // osversion: unused since glibc 2.33, always zero.
        table.extend_from_slice(&u32b(0));
        table.extend_from_slice(&u64b(e.hwcap));
    }
    let mut out = Vec::with_capacity(strings_at + strings.len());
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(VERSION);
    out.extend_from_slice(&u32b(entries.len() as u32));
    out.extend_from_slice(&u32b(strings.len() as u32));
    out.push(if big_endian {
        ENDIAN_BIG
    } else {
        ENDIAN_LITTLE
    });
    out.extend_from_slice(&[0; 3]);
    // extension_offset 0: no extension directory (ldconfig's only records its own version
    // and glibc-hwcaps subdirectories, which apko does not scan either).
    out.extend_from_slice(&u32b(0));
    out.extend_from_slice(&[0; 12]);
    debug_assert_eq!(out.len(), HEADER_LEN);
    out.extend_from_slice(&table);
    out.extend_from_slice(&strings);
    out
}

/// One directive of an `ld.so.conf` file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ConfLine {
    /// A directory to scan, as written (trailing slashes removed).
    Dir(String),
    /// An `include` glob of further configuration files.
    Include(String),
}

/// Parse `ld.so.conf` as glibc's ldconfig does: `#` starts a comment anywhere, a line is
/// one directory (with an obsolete `=TYPE` suffix dropped), `include` takes one or more
/// blank-separated globs, and `hwcap` lines are ignored.
pub fn parse_conf(text: &str) -> Vec<ConfLine> {
    let mut out = Vec::new();
    for line in text.lines() {
        let line = line.split('#').next().unwrap_or("");
        let line = line.trim_start();
        if line.is_empty() {
            continue;
        }
        let blank_after = |word: &str| {
            line.len() > word.len()
                && line.is_char_boundary(word.len())
                && matches!(line.as_bytes()[word.len()], b' ' | b'\t')
        };
        if line.starts_with("include") && blank_after("include") {
            out.extend(
                line["include".len()..]
                    .split([' ', '\t'])
                    .filter(|p| !p.is_empty())
                    .map(|p| ConfLine::Include(p.to_string())),
            );
            continue;
        }
        if line
            .get(..5)
            .is_some_and(|w| w.eq_ignore_ascii_case("hwcap"))
            && blank_after("hwcap")
        {
            continue;
        }
        let dir = line.split('=').next().unwrap_or("");
        let dir = dir.trim_end().trim_end_matches('/');
        if !dir.is_empty() {
            out.push(ConfLine::Dir(dir.to_string()));
        }
    }
    out
}

/// Whether `name` matches the shell glob `pat` (`*`, `?`, `[...]` with `!`/`^` and ranges,
/// `\` escapes), as `glob(3)` matches one path component: a leading `.` only matches a
/// leading `.` in the pattern.
pub fn glob_match(pat: &str, name: &str) -> bool {
    if name.starts_with('.') && !pat.starts_with('.') {
        return false;
    }
    glob_bytes(pat.as_bytes(), name.as_bytes())
}

fn glob_bytes(p: &[u8], n: &[u8]) -> bool {
    // Iterative matching with one backtrack point for the last `*`: linear enough for
    // configuration globs and no recursion to blow up.
    let (mut pi, mut ni) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ni < n.len() {
        let step = match p.get(pi) {
            Some(b'*') => {
                star = Some((pi, ni));
                pi += 1;
                continue;
            }
            Some(b'?') => Some(1),
            Some(b'[') => class_match(&p[pi..], n[ni]),
            Some(b'\\') if pi + 1 < p.len() => (p[pi + 1] == n[ni]).then_some(2),
            Some(c) => (*c == n[ni]).then_some(1),
            None => None,
        };
        match step {
            Some(len) => {
                pi += len;
                ni += 1;
            }
            None => match star {
                Some((sp, sn)) => {
                    pi = sp + 1;
                    ni = sn + 1;
                    star = Some((sp, sn + 1));
                }
                None => return false,
            },
        }
    }
    p[pi..].iter().all(|c| *c == b'*')
}

/// Match one byte against a `[...]` class at the start of `p`; the class's length if it
/// matches. An unterminated `[` stands for itself, as in `glob(3)`.
fn class_match(p: &[u8], c: u8) -> Option<usize> {
    let mut start = 1;
    let negate = matches!(p.get(start), Some(b'!' | b'^'));
    if negate {
        start += 1;
    }
    // A `]` right after the opening (and negation) is a member, not the end.
    let Some(end) = p
        .iter()
        .skip(start + 1)
        .position(|b| *b == b']')
        .map(|k| k + start + 1)
        .filter(|_| p.len() > start)
    else {
        return (c == b'[').then_some(1);
    };
    let set = &p[start..end];
    let mut hit = false;
    let mut i = 0;
    while i < set.len() {
        if i + 2 < set.len() && set[i + 1] == b'-' {
            hit |= set[i] <= c && c <= set[i + 2];
            i += 3;
        } else {
            hit |= set[i] == c;
            i += 1;
        }
    }
    (hit != negate).then_some(end + 1)
}
