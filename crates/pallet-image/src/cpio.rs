//! `build-cpio`: the image filesystem as a newc (`070701`) cpio archive, the format the Linux
//! kernel unpacks as an initramfs. apko converts its layer tar with u-root's writer; this
//! writes the same records straight from the tree:
//!
//! * entries in the layer's order (parents before children), preceded by `.`;
//! * directories, regular files, symlinks (the target as the data) and device nodes;
//! * no trailing `/`, no leading `/`, names NUL-terminated, header and data padded to 4 bytes;
//! * the `TRAILER!!!` record last.
//!
//! Where this differs from apko, on purpose: `.` is written 0755 (u-root makes it 0777, a
//! world-writable root once the kernel unpacks it); owners and modification times are the
//! layer's (apko writes 0 for both, losing the owners `accounts` and `paths` set); a hard link
//! is written as a file with the linked file's contents (apko drops hard links); each entry has
//! its own inode number and a link count of 1 (2 for directories) rather than 0, which some
//! unpackers mistake for hard links; FIFOs and block devices are kept (apko skips them).

use std::io::{self, Write};

use pallet_apk_stream::tarw::Kind;
use pallet_fs::{Node, Tree};

const S_IFIFO: u32 = 0o010000;
const S_IFCHR: u32 = 0o020000;
const S_IFDIR: u32 = 0o040000;
const S_IFBLK: u32 = 0o060000;
const S_IFREG: u32 = 0o100000;
const S_IFLNK: u32 = 0o120000;

/// What the newc header says about one entry.
struct Header<'a> {
    name: &'a str,
    ino: u32,
    mode: u32,
    uid: u32,
    gid: u32,
    nlink: u32,
    mtime: u64,
    size: u64,
    rdev: (u32, u32),
}

/// Counts bytes so that padding can be computed without seeking.
struct Counted<W> {
    w: W,
    pos: u64,
}

impl<W: Write> Counted<W> {
    fn put(&mut self, b: &[u8]) -> io::Result<()> {
        self.w.write_all(b)?;
        self.pos += b.len() as u64;
        Ok(())
    }
    fn pad4(&mut self) -> io::Result<()> {
        let n = (4 - (self.pos % 4) as usize) % 4;
        self.put(&[0u8; 3][..n])
    }
    fn header(&mut self, h: &Header) -> io::Result<()> {
        let too_big = |what: &str| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{}: {what} does not fit in a newc cpio header", h.name),
            )
        };
        let size = u32::try_from(h.size).map_err(|_| too_big("a file of 4 GiB or more"))?;
        let mtime = u32::try_from(h.mtime).map_err(|_| too_big("a time after 2106"))?;
        let name_len = h.name.len() + 1;
        let fields = [
            h.ino,
            h.mode,
            h.uid,
            h.gid,
            h.nlink,
            mtime,
            size,
            0, // dev major
            0, // dev minor
            h.rdev.0,
            h.rdev.1,
            name_len as u32,
            0, // check (newc has none)
        ];
        let mut text = String::from("070701");
        for f in fields {
            text.push_str(&format!("{f:08X}"));
        }
        self.put(text.as_bytes())?;
        self.put(h.name.as_bytes())?;
        self.put(&[0])?;
        self.pad4()
    }
}

/// Write `tree` as a newc cpio archive to `w`; returns the number of entries (the trailer not
/// counted).
pub fn write_newc<W: Write>(tree: &Tree, w: W) -> io::Result<usize> {
    let mut out = Counted { w, pos: 0 };
    let mut ino = 1u32;
    out.header(&Header {
        name: ".",
        ino,
        mode: S_IFDIR | 0o755,
        uid: 0,
        gid: 0,
        nlink: 2,
        mtime: 0,
        size: 0,
        rdev: (0, 0),
    })?;
    let mut count = 1;
    for (path, n) in &tree.nodes {
        if path.is_empty() || path == "." {
            continue;
        }
        ino += 1;
        let perm = n.mode & 0o7777;
        let base = Header {
            name: path,
            ino,
            mode: perm,
            uid: n.uid,
            gid: n.gid,
            nlink: 1,
            mtime: n.mtime,
            size: 0,
            rdev: (0, 0),
        };
        match n.kind {
            Kind::Dir => out.header(&Header {
                mode: S_IFDIR | perm,
                nlink: 2,
                ..base
            })?,
            Kind::Symlink => {
                out.header(&Header {
                    mode: S_IFLNK | 0o777,
                    size: n.link.len() as u64,
                    ..base
                })?;
                out.put(n.link.as_bytes())?;
                out.pad4()?;
            }
            Kind::File | Kind::HardLink => {
                // A hard link carries the bytes of the file it links to.
                let target: &Node = if n.kind == Kind::HardLink {
                    tree.get(&n.link).ok_or_else(|| {
                        io::Error::other(format!("{path}: hard link to missing {}", n.link))
                    })?
                } else {
                    n
                };
                let data = tree.content(target)?;
                out.header(&Header {
                    mode: S_IFREG | perm,
                    size: data.len() as u64,
                    ..base
                })?;
                out.put(&data)?;
                out.pad4()?;
            }
            Kind::Char | Kind::Block | Kind::Fifo => {
                let t = match n.kind {
                    Kind::Char => S_IFCHR,
                    Kind::Block => S_IFBLK,
                    _ => S_IFIFO,
                };
                out.header(&Header {
                    mode: t | perm,
                    rdev: n.dev,
                    ..base
                })?;
            }
        }
        count += 1;
    }
    out.header(&Header {
        name: "TRAILER!!!",
        ino: 0,
        mode: 0,
        uid: 0,
        gid: 0,
        nlink: 1,
        mtime: 0,
        size: 0,
        rdev: (0, 0),
    })?;
    out.w.flush()?;
    Ok(count)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// (name, mode, uid, size, data) of every record, read back.
    fn records(b: &[u8]) -> Vec<(String, u32, u32, Vec<u8>)> {
        let mut out = vec![];
        let mut i = 0;
        let field = |b: &[u8], k: usize| {
            u32::from_str_radix(std::str::from_utf8(&b[6 + 8 * k..14 + 8 * k]).unwrap(), 16)
                .unwrap()
        };
        loop {
            let h = &b[i..i + 110];
            assert_eq!(&h[..6], b"070701");
            let (mode, uid, size, nlen) = (
                field(h, 1),
                field(h, 2),
                field(h, 6) as usize,
                field(h, 11) as usize,
            );
            let name = String::from_utf8(b[i + 110..i + 110 + nlen - 1].to_vec()).unwrap();
            i = (i + 110 + nlen).div_ceil(4) * 4;
            let data = b[i..i + size].to_vec();
            i = (i + size).div_ceil(4) * 4;
            if name == "TRAILER!!!" {
                assert_eq!(i, b.len());
                return out;
            }
            out.push((name, mode, uid, data));
        }
    }

    #[test]
    fn newc_records_for_each_kind() {
        let mut t = Tree::new();
        t.put("etc", Node::dir(0o755, 5));
        t.put("etc/hostname", Node::file(b"box\n".to_vec(), 0o644, 5));
        t.put("bin", Node::dir(0o755, 5));
        t.put("bin/sh", Node::symlink("/bin/busybox", 5));
        let mut dev = Node::dir(0o666, 0);
        dev.kind = Kind::Char;
        dev.dev = (1, 3);
        t.put("dev", Node::dir(0o755, 0));
        t.put("dev/null", dev);
        let mut home = Node::dir(0o700, 0);
        home.uid = 65532;
        t.put("home", Node::dir(0o755, 0));
        t.put("home/nonroot", home);
        let mut hl = Node::dir(0o644, 0);
        hl.kind = Kind::HardLink;
        hl.link = "etc/hostname".into();
        t.put("etc/hostname2", hl);
        let mut buf = vec![];
        let n = write_newc(&t, &mut buf).unwrap();
        let r = records(&buf);
        assert_eq!(n, r.len());
        let names: Vec<&str> = r.iter().map(|x| x.0.as_str()).collect();
        assert_eq!(
            names,
            [
                ".",
                "bin",
                "bin/sh",
                "dev",
                "dev/null",
                "etc",
                "etc/hostname",
                "etc/hostname2",
                "home",
                "home/nonroot"
            ]
        );
        let get = |n: &str| r.iter().find(|x| x.0 == n).unwrap();
        assert_eq!(get(".").1, S_IFDIR | 0o755);
        assert_eq!(get("bin/sh").1, S_IFLNK | 0o777);
        assert_eq!(get("bin/sh").3, b"/bin/busybox");
        assert_eq!(get("dev/null").1, S_IFCHR | 0o666);
        assert_eq!(get("etc/hostname").3, b"box\n");
        assert_eq!(get("etc/hostname2").3, b"box\n");
        assert_eq!(get("home/nonroot").2, 65532);
        let rdev = &buf[buf.windows(8).position(|w| w == b"dev/null").unwrap() - 110..];
        assert_eq!(&rdev[6 + 8 * 9..6 + 8 * 11], b"0000000100000003");
    }
}
