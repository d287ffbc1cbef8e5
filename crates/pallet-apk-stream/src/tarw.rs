//! A minimal, deterministic ustar writer.
//!
//! APK control and signature tars must end without the end-of-archive blocks, image layers are
//! built from per-package segments concatenated later, and every byte must be a function of the
//! input alone: so the headers are written here by hand rather than through a general builder.

use std::io::{self, Write};

/// What a tar entry is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    File,
    HardLink,
    Symlink,
    Char,
    Block,
    Dir,
    Fifo,
}

impl Kind {
    fn flag(self) -> u8 {
        match self {
            Kind::File => b'0',
            Kind::HardLink => b'1',
            Kind::Symlink => b'2',
            Kind::Char => b'3',
            Kind::Block => b'4',
            Kind::Dir => b'5',
            Kind::Fifo => b'6',
        }
    }
}

/// One entry's header fields.
#[derive(Clone, Debug)]
pub struct EntryHeader<'a> {
    pub path: &'a str,
    pub kind: Kind,
    /// Permission bits (and setuid/setgid/sticky).
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub uname: &'a str,
    pub gname: &'a str,
    pub mtime: u64,
    pub size: u64,
    pub link: &'a str,
    pub dev_major: u32,
    pub dev_minor: u32,
    /// Extra PAX records (`APK-TOOLS.checksum.SHA1`, `SCHILY.xattr.*`), written in this order.
    pub pax: &'a [(String, Vec<u8>)],
}

impl<'a> EntryHeader<'a> {
    /// A root-owned regular file (the entries pallet itself generates).
    pub fn file(path: &'a str, mode: u32, mtime: u64, size: u64) -> Self {
        EntryHeader {
            path,
            kind: Kind::File,
            mode,
            uid: 0,
            gid: 0,
            uname: "root",
            gname: "root",
            mtime,
            size,
            link: "",
            dev_major: 0,
            dev_minor: 0,
            pax: &[],
        }
    }
}

fn octal(field: &mut [u8], v: u64) -> bool {
    let digits = field.len() - 1;
    let s = format!("{v:0digits$o}");
    if s.len() > digits {
        return false;
    }
    field[..digits].copy_from_slice(s.as_bytes());
    field[digits] = 0;
    true
}

fn pax_record(out: &mut Vec<u8>, key: &str, value: &[u8]) {
    // The length prefix counts itself, so find the fixed point.
    let base = key.len() + value.len() + 3;
    let mut len = base + 1;
    while len != base + len.to_string().len() {
        len = base + len.to_string().len();
    }
    out.extend_from_slice(format!("{len} {key}=").as_bytes());
    out.extend_from_slice(value);
    out.push(b'\n');
}

/// Pad `n` bytes of content up to the next 512-byte boundary.
pub fn padding(n: u64) -> usize {
    ((512 - (n % 512)) % 512) as usize
}

fn raw_header(
    name: &[u8],
    kind_flag: u8,
    h: &EntryHeader<'_>,
    size: u64,
    link: &[u8],
) -> [u8; 512] {
    let mut b = [0u8; 512];
    let n = name.len().min(100);
    b[..n].copy_from_slice(&name[..n]);
    octal(&mut b[100..108], u64::from(h.mode & 0o7777));
    octal(&mut b[108..116], u64::from(h.uid));
    octal(&mut b[116..124], u64::from(h.gid));
    if !octal(&mut b[124..136], size) {
        // Sizes past 8 GiB use the base-256 form GNU tar and Go read.
        b[124] = 0x80;
        b[128..136].copy_from_slice(&size.to_be_bytes());
    }
    octal(&mut b[136..148], h.mtime.min(0o77777777777));
    b[156] = kind_flag;
    let l = link.len().min(100);
    b[157..157 + l].copy_from_slice(&link[..l]);
    b[257..263].copy_from_slice(b"ustar\0");
    b[263..265].copy_from_slice(b"00");
    let un = h.uname.len().min(31);
    b[265..265 + un].copy_from_slice(&h.uname.as_bytes()[..un]);
    let gn = h.gname.len().min(31);
    b[297..297 + gn].copy_from_slice(&h.gname.as_bytes()[..gn]);
    if matches!(h.kind, Kind::Char | Kind::Block) {
        octal(&mut b[329..337], u64::from(h.dev_major));
        octal(&mut b[337..345], u64::from(h.dev_minor));
    }
    b[148..156].copy_from_slice(b"        ");
    let sum: u32 = b.iter().map(|&c| u32::from(c)).sum();
    let s = format!("{sum:06o}\0 ");
    b[148..156].copy_from_slice(s.as_bytes());
    b
}

/// Write an entry's header (with a PAX header first when needed). The caller then writes
/// `size` bytes of content followed by [`padding`] zero bytes.
pub fn write_header<W: Write + ?Sized>(w: &mut W, h: &EntryHeader<'_>) -> io::Result<()> {
    let mut pax = Vec::new();
    let long_path = h.path.len() > 100;
    let long_link = h.link.len() > 100;
    if long_path {
        pax_record(&mut pax, "path", h.path.as_bytes());
    }
    if long_link {
        pax_record(&mut pax, "linkpath", h.link.as_bytes());
    }
    for (k, v) in h.pax {
        pax_record(&mut pax, k, v);
    }
    if !pax.is_empty() {
        // Name the PAX header after the entry, as Go's archive/tar does, kept under 100 bytes.
        let pax_name: String = format!("PaxHeaders/{}", h.path).chars().take(99).collect();
        let ph = EntryHeader {
            kind: Kind::File,
            mode: 0o644,
            uid: 0,
            gid: 0,
            uname: "",
            gname: "",
            size: pax.len() as u64,
            link: "",
            pax: &[],
            ..h.clone()
        };
        let hdr = raw_header(pax_name.as_bytes(), b'x', &ph, pax.len() as u64, b"");
        w.write_all(&hdr)?;
        w.write_all(&pax)?;
        w.write_all(&[0u8; 512][..padding(pax.len() as u64)])?;
    }
    let size = if h.kind == Kind::File { h.size } else { 0 };
    let hdr = raw_header(h.path.as_bytes(), h.kind.flag(), h, size, h.link.as_bytes());
    w.write_all(&hdr)
}

/// Write a whole entry whose content is in memory.
pub fn write_entry<W: Write + ?Sized>(
    w: &mut W,
    h: &EntryHeader<'_>,
    data: &[u8],
) -> io::Result<()> {
    let h = EntryHeader {
        size: data.len() as u64,
        ..h.clone()
    };
    write_header(w, &h)?;
    w.write_all(data)?;
    w.write_all(&[0u8; 512][..padding(data.len() as u64)])
}

/// The two zero blocks that end an archive.
pub fn write_end<W: Write + ?Sized>(w: &mut W) -> io::Result<()> {
    w.write_all(&[0u8; 1024])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tar_crate_reads_what_we_write() {
        let long = format!("usr/share/{}/file", "d".repeat(120));
        let mut buf = Vec::new();
        let pax = vec![(
            "APK-TOOLS.checksum.SHA1".to_string(),
            b"0123456789abcdef0123456789abcdef01234567".to_vec(),
        )];
        let base = EntryHeader {
            path: "usr",
            kind: Kind::Dir,
            mode: 0o755,
            uid: 0,
            gid: 0,
            uname: "root",
            gname: "root",
            mtime: 1_700_000_000,
            size: 0,
            link: "",
            dev_major: 0,
            dev_minor: 0,
            pax: &[],
        };
        write_entry(&mut buf, &base, b"").unwrap();
        write_entry(
            &mut buf,
            &EntryHeader {
                path: &long,
                kind: Kind::File,
                mode: 0o4755,
                pax: &pax,
                ..base.clone()
            },
            b"hello",
        )
        .unwrap();
        write_end(&mut buf).unwrap();
        let mut ar = tar::Archive::new(&buf[..]);
        let mut seen = vec![];
        for e in ar.entries().unwrap() {
            let mut e = e.unwrap();
            let path = e.path().unwrap().to_string_lossy().into_owned();
            let ck = e.pax_extensions().unwrap().and_then(|exts| {
                exts.filter_map(Result::ok)
                    .find(|x| x.key() == Ok("APK-TOOLS.checksum.SHA1"))
                    .map(|x| x.value().unwrap().to_string())
            });
            seen.push((path, e.header().mode().unwrap(), ck));
        }
        assert_eq!(seen[0], ("usr".to_string(), 0o755, None));
        assert_eq!(seen[1].0, long);
        assert_eq!(seen[1].1, 0o4755);
        assert!(seen[1].2.is_some());
    }

    #[test]
    fn pax_length_counts_itself() {
        let mut v = Vec::new();
        pax_record(&mut v, "k", &[b'x'; 5]);
        assert_eq!(v, b"11 k=xxxxx\n");
        let mut v = Vec::new();
        pax_record(&mut v, "k", &[b'x'; 94]);
        assert_eq!(&v[..4], b"101 ");
        assert_eq!(v.len(), 101);
    }
}
