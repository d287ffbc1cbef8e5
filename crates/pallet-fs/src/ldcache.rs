//! `/etc/ld.so.cache` for an image tree, as apko's `updateCache` makes it after install
//! (package scripts, and so glibc's own `ldconfig` trigger, never run). The format, the ELF
//! reader and the ordering are in [`crate::ldso`]; this is the walk over the tree.
//!
//! Which libraries get an entry follows apko: in `/lib` and every directory `ld.so.conf`
//! names, each `lib*.so*`/`ld-*.so*` that is (or links to) an ELF shared object gets an entry
//! under its own file name when that name is its SONAME or the SONAME's `.so` development
//! link. Where apko departs from glibc's ldconfig by accident, this follows ldconfig:
//! lines after an `include` are read, a relative include is relative to the including file,
//! a directory reached twice (`/lib` and `/usr/lib` with `lib -> usr/lib`) is scanned once,
//! and a library for an unknown machine is skipped rather than failing the build.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;

use pallet_apk_stream::tarw::Kind;

use crate::ldso::{self, CacheEntry, ConfLine, ReadAt};
use crate::{Content, FsError, Node, Tree};

/// apko scans `/lib` before the configured directories (with a usr-merged `/lib` this is
/// `/usr/lib`).
const DEFAULT_DIRS: &[&str] = &["/lib"];

/// `include` nesting deeper than this is a loop (a file including itself), not a config.
const MAX_INCLUDE_DEPTH: usize = 16;

/// A file's bytes for the ELF reader: in memory, or a span of a cached package tar.
enum Source<'a> {
    Bytes(&'a [u8]),
    Extent { file: File, offset: u64, len: u64 },
}

impl ReadAt for Source<'_> {
    fn size(&self) -> u64 {
        match self {
            Source::Bytes(b) => b.len() as u64,
            Source::Extent { len, .. } => *len,
        }
    }
    fn read_exact_at(&self, at: u64, buf: &mut [u8]) -> io::Result<()> {
        match self {
            Source::Bytes(b) => b.read_exact_at(at, buf),
            Source::Extent { file, offset, len } => {
                if at.saturating_add(buf.len() as u64) > *len {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "read past the end of the file",
                    ));
                }
                file.read_exact_at(buf, offset + at)
            }
        }
    }
}

fn source(n: &Node) -> io::Result<Source<'_>> {
    Ok(match &n.content {
        Content::None => Source::Bytes(&[]),
        Content::Bytes(b) => Source::Bytes(b),
        Content::Extent { file, offset, len } => Source::Extent {
            file: File::open(file.as_ref())?,
            offset: *offset,
            len: *len,
        },
    })
}

/// `/a/./b/../c/` → `/a/c`: how apko spells a cache path (Go's `filepath.Join("/", …)`).
fn clean_abs(p: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for c in p.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            c => parts.push(c),
        }
    }
    format!("/{}", parts.join("/"))
}

fn join(dir: &str, name: &str) -> String {
    if dir.is_empty() {
        name.to_string()
    } else {
        format!("{dir}/{name}")
    }
}

impl Tree {
    /// The bytes of `/etc/ld.so.cache` for this tree, or `None` when it has no
    /// `/etc/ld.so.conf` (not a glibc image, or one that wants no cache).
    pub fn ld_so_cache(&self) -> Result<Option<Vec<u8>>, FsError> {
        if self
            .follow("etc/ld.so.conf")
            .is_none_or(|(_, n)| n.kind != Kind::File)
        {
            return Ok(None);
        }
        let mut dirs: Vec<String> = DEFAULT_DIRS.iter().map(|d| d.to_string()).collect();
        self.conf_dirs("etc/ld.so.conf", 0, &mut dirs)?;
        let (entries, big_endian) = self.cache_entries(&dirs)?;
        Ok(Some(ldso::encode_cache(&entries, big_endian)))
    }

    /// The directories a configuration file names, includes expanded in place.
    fn conf_dirs(&self, file: &str, depth: usize, out: &mut Vec<String>) -> Result<(), FsError> {
        // ldconfig skips a configuration file it cannot open; so does this.
        let Some((_, n)) = self.follow(file).filter(|(_, n)| n.kind == Kind::File) else {
            return Ok(());
        };
        let text = self.content(n)?;
        for line in ldso::parse_conf(&String::from_utf8_lossy(&text)) {
            match line {
                ConfLine::Dir(d) => out.push(d),
                ConfLine::Include(_) if depth >= MAX_INCLUDE_DEPTH => {}
                ConfLine::Include(pat) => {
                    let pat = if pat.starts_with('/') {
                        pat
                    } else {
                        let dir = file.rsplit_once('/').map_or("", |(d, _)| d);
                        format!("{dir}/{pat}")
                    };
                    for m in self.glob(&pat) {
                        self.conf_dirs(&m, depth + 1, out)?;
                    }
                }
            }
        }
        Ok(())
    }

    /// The paths (relative to the root, spelled through the pattern) matching a glob, in
    /// byte order as `glob(3)` in the C locale sorts them.
    fn glob(&self, pattern: &str) -> Vec<String> {
        let mut found = vec![String::new()];
        for comp in pattern.split('/').filter(|c| !c.is_empty()) {
            let magic = comp.contains(['*', '?', '[']);
            let mut next = Vec::new();
            for base in &found {
                if !magic {
                    next.push(join(base, comp));
                    continue;
                }
                let Some(real) = self.resolve_dir(base) else {
                    continue;
                };
                for (name, _) in self.children(&real) {
                    if ldso::glob_match(comp, name) {
                        next.push(join(base, name));
                    }
                }
            }
            found = next;
        }
        found.retain(|p| !p.is_empty() && self.get(p).is_some());
        found.sort();
        found
    }

    /// The cache entries for the directories, in the loader's order, and whether the
    /// libraries are big-endian (the first one decides; the others must agree).
    fn cache_entries(&self, dirs: &[String]) -> Result<(Vec<CacheEntry>, bool), FsError> {
        let mut scanned = BTreeSet::new();
        let mut entries = Vec::new();
        let mut endian: Option<bool> = None;
        for d in dirs {
            let spelled = clean_abs(d);
            let Some(real) = self.resolve_dir(&spelled) else {
                continue;
            };
            // ldconfig compares directories by inode; in the tree the real path is that.
            if !scanned.insert(real.clone()) {
                continue;
            }
            // By file name, so the first SONAME match wins and the output is sorted.
            let mut in_dir: BTreeMap<&str, CacheEntry> = BTreeMap::new();
            for (name, _) in self.children(&real) {
                if ldso::parse_lib_filename(name).is_none() {
                    continue;
                }
                let Some((_, target)) = self.follow(&join(&real, name)) else {
                    continue;
                };
                if target.kind != Kind::File {
                    continue;
                }
                // Not an ELF shared object (a linker script such as libc.so, a truncated
                // file): not a library the loader could use, so no entry, as with ldconfig.
                let info = match ldso::read_elf(&source(target)?) {
                    Ok(i) => i,
                    Err(ldso::ElfError::Io(e)) if e.kind() != io::ErrorKind::UnexpectedEof => {
                        return Err(FsError::Io(e));
                    }
                    Err(_) => continue,
                };
                let Some(flags) = ldso::cache_flags(&info) else {
                    continue;
                };
                if *endian.get_or_insert(info.big_endian) != info.big_endian {
                    continue;
                }
                let mut sonames = info.sonames;
                // ldconfig lists a `.so` without a SONAME under its file name.
                if sonames.is_empty() && name.ends_with(".so") {
                    sonames.push(name.to_string());
                }
                for so in &sonames {
                    let Some((base, _)) = ldso::parse_lib_filename(so) else {
                        continue;
                    };
                    if name != so && name != format!("{base}.so") {
                        continue;
                    }
                    in_dir.entry(name).or_insert_with(|| CacheEntry {
                        flags,
                        key: name.to_string(),
                        value: format!("{}/{name}", spelled.trim_end_matches('/')),
                        hwcap: 0,
                    });
                }
            }
            entries.extend(in_dir.into_values());
        }
        ldso::sort_entries(&mut entries);
        Ok((entries, endian.unwrap_or(false)))
    }
}
