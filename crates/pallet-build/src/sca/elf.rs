//! A small ELF reader with the semantics of Go's `debug/elf` where melange relies on them:
//! the header (class, byte order, machine), section headers with their names, program
//! headers, `PT_INTERP`, and `DynString` (strings of one tag from the `SHT_DYNAMIC` section,
//! through the string table its `sh_link` names). 32 and 64-bit, either byte order.

pub(crate) const EM_386: u16 = 3;
pub(crate) const EM_ARM: u16 = 40;
pub(crate) const EM_X86_64: u16 = 62;
pub(crate) const EM_AARCH64: u16 = 183;

pub(crate) const DT_NEEDED: u64 = 1;
pub(crate) const DT_SONAME: u64 = 14;

const PT_LOAD: u32 = 1;
const PT_INTERP: u32 = 3;
pub(crate) const PF_X: u32 = 1;
pub(crate) const PF_W: u32 = 2;
const SHT_DYNAMIC: u32 = 6;
const SHT_NOBITS: u32 = 8;

#[derive(Clone, Debug)]
pub(crate) struct Section {
    pub name: String,
    pub kind: u32,
    pub addr: u64,
    pub offset: u64,
    pub size: u64,
    pub link: u32,
}

#[derive(Clone, Debug)]
pub(crate) struct Segment {
    pub kind: u32,
    pub flags: u32,
    pub offset: u64,
    pub vaddr: u64,
    pub filesz: u64,
    pub memsz: u64,
}

pub(crate) struct Elf<'a> {
    data: &'a [u8],
    pub is64: bool,
    le: bool,
    pub machine: u16,
    pub sections: Vec<Section>,
    pub segments: Vec<Segment>,
}

/// Whether `data` starts with the ELF magic.
pub(crate) fn is_elf(data: &[u8]) -> bool {
    data.starts_with(b"\x7fELF")
}

impl<'a> Elf<'a> {
    /// Parse the headers; an error for anything Go's `elf.NewFile` would refuse (bad class,
    /// byte order or version, truncated or out-of-range headers).
    pub fn parse(data: &'a [u8]) -> Result<Elf<'a>, String> {
        if !is_elf(data) || data.len() < 16 {
            return Err("bad magic number".into());
        }
        let is64 = match data[4] {
            1 => false,
            2 => true,
            c => return Err(format!("unknown ELF class {c}")),
        };
        let le = match data[5] {
            1 => true,
            2 => false,
            d => return Err(format!("unknown ELF data encoding {d}")),
        };
        if data[6] != 1 {
            return Err(format!("unknown ELF version {}", data[6]));
        }
        let mut elf = Elf {
            data,
            is64,
            le,
            machine: 0,
            sections: vec![],
            segments: vec![],
        };
        let hdr = if is64 { 64 } else { 52 };
        if data.len() < hdr {
            return Err("truncated ELF header".into());
        }
        elf.machine = elf.u16(18)?;
        let (phoff, shoff, rest) = if is64 {
            (elf.u64(32)?, elf.u64(40)?, 48)
        } else {
            (elf.u32(28)? as u64, elf.u32(32)? as u64, 36)
        };
        let phentsize = elf.u16(rest + 6)? as u64;
        let phnum = elf.u16(rest + 8)? as u64;
        let shentsize = elf.u16(rest + 10)? as u64;
        let shnum = elf.u16(rest + 12)? as u64;
        let shstrndx = elf.u16(rest + 14)? as u64;
        for i in 0..phnum {
            let o = usize::try_from(phoff + i * phentsize).map_err(|_| "bad phoff")?;
            let seg = if is64 {
                Segment {
                    kind: elf.u32(o)?,
                    flags: elf.u32(o + 4)?,
                    offset: elf.u64(o + 8)?,
                    vaddr: elf.u64(o + 16)?,
                    filesz: elf.u64(o + 32)?,
                    memsz: elf.u64(o + 40)?,
                }
            } else {
                Segment {
                    kind: elf.u32(o)?,
                    offset: elf.u32(o + 4)? as u64,
                    vaddr: elf.u32(o + 8)? as u64,
                    filesz: elf.u32(o + 16)? as u64,
                    memsz: elf.u32(o + 20)? as u64,
                    flags: elf.u32(o + 24)?,
                }
            };
            elf.segments.push(seg);
        }
        let mut raw = vec![];
        for i in 0..shnum {
            let o = usize::try_from(shoff + i * shentsize).map_err(|_| "bad shoff")?;
            let (name, kind, addr, offset, size, link) = if is64 {
                (
                    elf.u32(o)?,
                    elf.u32(o + 4)?,
                    elf.u64(o + 16)?,
                    elf.u64(o + 24)?,
                    elf.u64(o + 32)?,
                    elf.u32(o + 40)?,
                )
            } else {
                (
                    elf.u32(o)?,
                    elf.u32(o + 4)?,
                    elf.u32(o + 12)? as u64,
                    elf.u32(o + 16)? as u64,
                    elf.u32(o + 20)? as u64,
                    elf.u32(o + 24)?,
                )
            };
            raw.push((name, kind, addr, offset, size, link));
        }
        if !raw.is_empty() && shstrndx as usize >= raw.len() {
            return Err("invalid ELF shstrndx".into());
        }
        let names = raw.get(shstrndx as usize).map(|s| (s.3, s.4));
        for (name, kind, addr, offset, size, link) in raw {
            let name = names
                .and_then(|(o, s)| data.get(o as usize..(o + s) as usize))
                .and_then(|tab| cstr(tab, name as usize))
                .unwrap_or_default();
            elf.sections.push(Section {
                name,
                kind,
                addr,
                offset,
                size,
                link,
            });
        }
        Ok(elf)
    }

    fn bytes(&self, o: usize, n: usize) -> Result<&'a [u8], String> {
        self.data
            .get(o..o.checked_add(n).ok_or("overflow")?)
            .ok_or_else(|| "truncated ELF file".to_string())
    }

    fn u16(&self, o: usize) -> Result<u16, String> {
        let b: [u8; 2] = self.bytes(o, 2)?.try_into().expect("2");
        Ok(if self.le {
            u16::from_le_bytes(b)
        } else {
            u16::from_be_bytes(b)
        })
    }

    fn u32(&self, o: usize) -> Result<u32, String> {
        let b: [u8; 4] = self.bytes(o, 4)?.try_into().expect("4");
        Ok(if self.le {
            u32::from_le_bytes(b)
        } else {
            u32::from_be_bytes(b)
        })
    }

    fn u64(&self, o: usize) -> Result<u64, String> {
        let b: [u8; 8] = self.bytes(o, 8)?.try_into().expect("8");
        Ok(if self.le {
            u64::from_le_bytes(b)
        } else {
            u64::from_be_bytes(b)
        })
    }

    /// A pointer-sized (or `size`-byte) unsigned number in the file's byte order.
    pub fn uint(&self, b: &[u8]) -> u64 {
        let mut v = 0u64;
        if self.le {
            for (i, x) in b.iter().take(8).enumerate() {
                v |= (*x as u64) << (8 * i);
            }
        } else {
            for x in b.iter().take(8) {
                v = (v << 8) | *x as u64;
            }
        }
        v
    }

    pub fn section(&self, name: &str) -> Option<&Section> {
        self.sections.iter().find(|s| s.name == name)
    }

    /// A section's bytes (empty for `SHT_NOBITS`).
    pub fn section_data(&self, s: &Section) -> &'a [u8] {
        if s.kind == SHT_NOBITS {
            return &[];
        }
        s.offset
            .checked_add(s.size)
            .and_then(|end| self.data.get(s.offset as usize..end as usize))
            .unwrap_or(&[])
    }

    /// The `PT_INTERP` path with its NUL bytes trimmed, or empty.
    pub fn interpreter(&self) -> String {
        self.segments
            .iter()
            .find(|p| p.kind == PT_INTERP)
            .and_then(|p| {
                self.data
                    .get(p.offset as usize..p.offset.saturating_add(p.filesz) as usize)
            })
            .map(|b| String::from_utf8_lossy(b).trim_matches('\0').to_string())
            .unwrap_or_default()
    }

    /// Go's `DynString`: every string value of `tag` in the `SHT_DYNAMIC` section; nothing
    /// (no error) when there is no such section.
    pub fn dyn_strings(&self, tag: u64) -> Result<Vec<String>, String> {
        let Some(ds) = self.sections.iter().find(|s| s.kind == SHT_DYNAMIC) else {
            return Ok(vec![]);
        };
        let d = self.section_data(ds);
        let size = if self.is64 { 16 } else { 8 };
        if !d.len().is_multiple_of(size) {
            return Err("length of dynamic section is not a multiple of dynamic entry size".into());
        }
        let strtab = self
            .sections
            .get(ds.link as usize)
            .map(|s| self.section_data(s))
            .ok_or("invalid ELF string table link")?;
        let mut out = vec![];
        for e in d.chunks_exact(size) {
            let (t, v) = e.split_at(size / 2);
            if self.uint(t) == tag
                && let Some(s) = cstr(strtab, self.uint(v) as usize)
            {
                out.push(s);
            }
        }
        Ok(out)
    }

    /// `size` bytes at virtual address `addr`, read through the `PT_LOAD` segment holding it
    /// (cut at the end of its file data), as Go's `buildinfo` reads memory.
    pub fn read_vaddr(&self, addr: u64, size: u64) -> Option<&'a [u8]> {
        let p = self.segments.iter().find(|p| {
            p.kind == PT_LOAD && p.vaddr <= addr && addr - p.vaddr <= p.filesz.saturating_sub(1)
        })?;
        let off = addr - p.vaddr;
        let n = size.min(p.filesz - off);
        let start = p.offset.checked_add(off)?;
        self.data
            .get(start as usize..start.checked_add(n)? as usize)
    }

    /// Go's `buildinfo` data start: the `.go.buildinfo` section, else the first writable,
    /// non-executable `PT_LOAD` segment.
    pub fn go_data_start(&self) -> Option<(u64, u64)> {
        if let Some(s) = self.section(".go.buildinfo") {
            return Some((s.addr, s.size));
        }
        self.segments
            .iter()
            .find(|p| p.kind == PT_LOAD && p.flags & (PF_X | PF_W) == PF_W)
            .map(|p| (p.vaddr, p.memsz))
    }
}

/// The NUL-terminated string at `at` in `tab`.
fn cstr(tab: &[u8], at: usize) -> Option<String> {
    let rest = tab.get(at..)?;
    let end = rest.iter().position(|b| *b == 0)?;
    Some(String::from_utf8_lossy(&rest[..end]).into_owned())
}

/// The machine's name as melange's binaryarch linter reports it.
pub(crate) fn machine_name(m: u16) -> String {
    match m {
        EM_X86_64 => "amd64".into(),
        EM_AARCH64 => "arm64".into(),
        EM_386 => "i386".into(),
        EM_ARM => "arm".into(),
        21 => "ppc64".into(),
        22 => "s390".into(),
        8 => "mips".into(),
        243 => "riscv".into(),
        // Go prints the constant's name for the others it knows.
        2 => "unknown (EM_SPARC)".into(),
        4 => "unknown (EM_68K)".into(),
        20 => "unknown (EM_PPC)".into(),
        43 => "unknown (EM_SPARCV9)".into(),
        50 => "unknown (EM_IA_64)".into(),
        258 => "unknown (EM_LOONGARCH)".into(),
        n => format!("unknown ({n})"),
    }
}

#[cfg(test)]
pub(crate) mod testing {
    //! Hand-made ELF files for tests: a header, optional sections and a `PT_INTERP`.

    /// A little-endian ELF64 file for `machine` with the named sections (name, bytes).
    pub fn elf64(machine: u16, sections: &[(&str, &[u8])]) -> Vec<u8> {
        let mut shstr = vec![0u8];
        let mut names = vec![];
        for (n, _) in sections {
            names.push(shstr.len() as u32);
            shstr.extend_from_slice(n.as_bytes());
            shstr.push(0);
        }
        let shstr_name = shstr.len() as u32;
        shstr.extend_from_slice(b".shstrtab\0");
        let mut body = vec![0u8; 64];
        let mut offs = vec![];
        for (_, d) in sections {
            offs.push(body.len() as u64);
            body.extend_from_slice(d);
        }
        let shstr_off = body.len() as u64;
        body.extend_from_slice(&shstr);
        while !body.len().is_multiple_of(8) {
            body.push(0);
        }
        let shoff = body.len() as u64;
        let mut sh = |name: u32, kind: u32, off: u64, size: u64| {
            let mut e = vec![];
            e.extend_from_slice(&name.to_le_bytes());
            e.extend_from_slice(&kind.to_le_bytes());
            e.extend_from_slice(&0u64.to_le_bytes()); // flags
            e.extend_from_slice(&0u64.to_le_bytes()); // addr
            e.extend_from_slice(&off.to_le_bytes());
            e.extend_from_slice(&size.to_le_bytes());
            e.extend_from_slice(&[0u8; 24]); // link, info, align, entsize
            body.extend_from_slice(&e);
        };
        sh(0, 0, 0, 0);
        for (i, (_, d)) in sections.iter().enumerate() {
            sh(names[i], 1, offs[i], d.len() as u64);
        }
        sh(shstr_name, 3, shstr_off, shstr.len() as u64);
        let shnum = sections.len() as u16 + 2;
        let h = &mut body[..64];
        h[..4].copy_from_slice(b"\x7fELF");
        h[4] = 2;
        h[5] = 1;
        h[6] = 1;
        h[16..18].copy_from_slice(&2u16.to_le_bytes()); // ET_EXEC
        h[18..20].copy_from_slice(&machine.to_le_bytes());
        h[20..24].copy_from_slice(&1u32.to_le_bytes());
        h[40..48].copy_from_slice(&shoff.to_le_bytes());
        h[52..54].copy_from_slice(&64u16.to_le_bytes());
        h[56..58].copy_from_slice(&56u16.to_le_bytes());
        h[58..60].copy_from_slice(&64u16.to_le_bytes());
        h[60..62].copy_from_slice(&shnum.to_le_bytes());
        h[62..64].copy_from_slice(&(shnum - 1).to_le_bytes());
        body
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hand_made_headers_and_sections() {
        let f = testing::elf64(EM_AARCH64, &[(".text", b"abc"), (".debug_info", b"x")]);
        let e = Elf::parse(&f).unwrap();
        assert_eq!(e.machine, EM_AARCH64);
        assert!(e.is64);
        let names: Vec<&str> = e.sections.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["", ".text", ".debug_info", ".shstrtab"]);
        assert_eq!(e.section_data(e.section(".text").unwrap()), b"abc");
        assert_eq!(e.dyn_strings(DT_NEEDED).unwrap(), Vec::<String>::new());
        assert_eq!(e.interpreter(), "");
        assert!(Elf::parse(&f[..40]).is_err());
        assert!(Elf::parse(b"\x7fELF\x03\x01\x01").is_err());
        assert_eq!(machine_name(EM_ARM), "arm");
        assert_eq!(machine_name(9999), "unknown (9999)");
    }

    #[test]
    fn the_hosts_own_programs() {
        // This test binary is a dynamically linked program of the host: an interpreter, some
        // needed libraries, and the host's machine.
        let me = std::fs::read(std::env::current_exe().unwrap()).unwrap();
        let e = Elf::parse(&me).unwrap();
        assert!(e.interpreter().contains("ld-"), "{}", e.interpreter());
        let needed = e.dyn_strings(DT_NEEDED).unwrap();
        assert!(
            needed.iter().any(|n| n.starts_with("libc.so")),
            "{needed:?}"
        );
        let host = if cfg!(target_arch = "x86_64") {
            EM_X86_64
        } else {
            EM_AARCH64
        };
        assert_eq!(e.machine, host);
    }
}
