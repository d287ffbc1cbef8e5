//! The installed database (`lib/apk/db/installed`), `world` and `triggers` text formats.

use std::fmt::Write as _;

use crate::dep::{self, Dependency};
use crate::package::{InfoError, PackageInfo};

/// Owner and permission bits of a file or directory, as `M:`/`a:` record them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Acl {
    pub uid: u32,
    pub gid: u32,
    /// Permission bits only (`mode & 0o7777`).
    pub mode: u32,
    pub xattr_checksum: Option<String>,
}

impl Acl {
    pub fn new(uid: u32, gid: u32, mode: u32) -> Self {
        Acl {
            uid,
            gid,
            mode: mode & 0o7777,
            xattr_checksum: None,
        }
    }
    fn parse(line: usize, s: &str) -> Result<Self, InfoError> {
        let bad = || InfoError::Syntax {
            line,
            text: s.to_string(),
        };
        let mut it = s.splitn(4, ':');
        let uid = it.next().and_then(|v| v.parse().ok()).ok_or_else(bad)?;
        let gid = it.next().and_then(|v| v.parse().ok()).ok_or_else(bad)?;
        let mode = it
            .next()
            .and_then(|v| u32::from_str_radix(v, 8).ok())
            .ok_or_else(bad)?;
        Ok(Acl {
            uid,
            gid,
            mode,
            xattr_checksum: it.next().map(str::to_string),
        })
    }
    fn render(&self) -> String {
        let mut s = format!("{}:{}:{:o}", self.uid, self.gid, self.mode);
        if let Some(x) = &self.xattr_checksum {
            s.push(':');
            s.push_str(x);
        }
        s
    }
    fn is_default(&self, mode: u32) -> bool {
        self.uid == 0 && self.gid == 0 && self.mode == mode && self.xattr_checksum.is_none()
    }
}

/// A file a package installed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InstalledFile {
    pub name: String,
    pub acl: Acl,
    /// `Q1` SHA-1 of the content (or of a symlink's target).
    pub checksum: Option<String>,
}

/// A directory a package shipped, with the files it put there.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InstalledDir {
    /// Relative path without leading or trailing `/`; empty for the root.
    pub path: String,
    pub acl: Acl,
    pub files: Vec<InstalledFile>,
}

/// One record of the installed database.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct InstalledPackage {
    pub info: PackageInfo,
    /// Repository tag the package was pinned to (`s:`).
    pub tag: Option<String>,
    /// Broken-state flags (`f:`).
    pub flags: Option<String>,
    pub dirs: Vec<InstalledDir>,
}

/// Parse the installed database.
pub fn parse_installed(text: &str) -> Result<Vec<InstalledPackage>, InfoError> {
    let mut out = Vec::new();
    let mut cur = InstalledPackage::default();
    let mut any = false;
    // Lines end at `\n` only, as apk reads the database: a `\r` before it belongs to the
    // value (`str::lines` would drop one, so a path ending in `\r` lost one on every
    // read and write; found by fuzzing).
    for (i, raw) in text.split('\n').enumerate() {
        let line = i + 1;
        if raw.len() < 2 {
            if any {
                out.push(std::mem::take(&mut cur));
                any = false;
            }
            continue;
        }
        let mut chars = raw.chars();
        let field = chars.next().unwrap_or(' ');
        if chars.next() != Some(':') {
            return Err(InfoError::Syntax {
                line,
                text: raw.to_string(),
            });
        }
        let value = &raw[field.len_utf8() + 1..];
        any = true;
        if cur.info.apply_index_field(line, field, value)? {
            continue;
        }
        let order_err = || InfoError::Syntax {
            line,
            text: format!("{raw} (FDB format error: out of order)"),
        };
        match field {
            'r' => cur.info.replaces.extend(
                Dependency::parse_list_lenient(value)
                    .map_err(|source| InfoError::Dep { line, source })?,
            ),
            'q' => {
                cur.info.replaces_priority = Some(value.parse().map_err(|_| InfoError::Number {
                    line,
                    key: "q".into(),
                    value: value.into(),
                })?)
            }
            's' => cur.tag = Some(value.to_string()),
            'f' => cur.flags = Some(value.to_string()),
            'F' => cur.dirs.push(InstalledDir {
                path: value.to_string(),
                acl: Acl::new(0, 0, 0o755),
                files: vec![],
            }),
            'M' => cur.dirs.last_mut().ok_or_else(order_err)?.acl = Acl::parse(line, value)?,
            'R' => cur
                .dirs
                .last_mut()
                .ok_or_else(order_err)?
                .files
                .push(InstalledFile {
                    name: value.to_string(),
                    acl: Acl::new(0, 0, 0o644),
                    checksum: None,
                }),
            'a' | 'Z' => {
                let f = cur
                    .dirs
                    .last_mut()
                    .and_then(|d| d.files.last_mut())
                    .ok_or_else(order_err)?;
                if field == 'a' {
                    f.acl = Acl::parse(line, value)?;
                } else {
                    f.checksum = Some(value.to_string());
                }
            }
            c if c.is_ascii_uppercase() => return Err(InfoError::UnknownField { line, field: c }),
            _ => {}
        }
    }
    if any {
        out.push(cur);
    }
    Ok(out)
}

/// Write the installed database in apk's format and order (the caller orders the packages).
pub fn write_installed(packages: &[InstalledPackage]) -> String {
    let mut s = String::new();
    for p in packages {
        p.info.write_index_header(&mut s);
        if !p.info.replaces.is_empty() {
            let _ = writeln!(s, "r:{}", dep::format_list(&p.info.replaces));
        }
        if let Some(q) = p.info.replaces_priority.filter(|q| *q != 0) {
            let _ = writeln!(s, "q:{q}");
        }
        if let Some(t) = &p.tag {
            let _ = writeln!(s, "s:{t}");
        }
        if let Some(f) = &p.flags {
            let _ = writeln!(s, "f:{f}");
        }
        for d in &p.dirs {
            let _ = writeln!(s, "F:{}", d.path);
            if !d.acl.is_default(0o755) {
                let _ = writeln!(s, "M:{}", d.acl.render());
            }
            for f in &d.files {
                let _ = writeln!(s, "R:{}", f.name);
                if !f.acl.is_default(0o644) {
                    let _ = writeln!(s, "a:{}", f.acl.render());
                }
                if let Some(z) = &f.checksum {
                    let _ = writeln!(s, "Z:{z}");
                }
            }
        }
        s.push('\n');
    }
    s
}

/// `/etc/apk/world`: dependencies sorted by name, one per line.
pub fn write_world(deps: &[Dependency]) -> String {
    let mut sorted: Vec<&Dependency> = deps.iter().collect();
    sorted.sort_by(|a, b| a.name.cmp(&b.name).then_with(|| a.cmp(b)));
    let mut s = String::new();
    for d in sorted {
        let _ = writeln!(s, "{d}");
    }
    s
}

/// `lib/apk/db/triggers`: one line per package with triggers.
pub fn write_triggers(packages: &[InstalledPackage]) -> String {
    let mut s = String::new();
    for p in packages {
        if let (Some(c), false) = (&p.info.checksum, p.info.triggers.is_empty()) {
            let _ = writeln!(s, "{c} {}", p.info.triggers.join(" "));
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    const DB: &str = "C:Q1fjUxL26AIO2/CYDcHHMNKxaJr2o=
P:busybox
V:1.35.0-r0
A:x86_64
S:1028744
I:1982256
T:busybox
U:
L:MIT
o:busybox
t:1700000000
c:0123456789abcdef0123456789abcdef01234567
p:/bin/sh cmd:sh=1.35.0-r0
F:bin
R:busybox
a:0:0:755
Z:Q1PAEWIcBcXCQXg9PzCe0c+Y3rZBI=
R:sh
a:0:0:777
Z:Q1LxBvJ/ofKKik4CrrENc7ePnJsko=
F:etc
M:0:0:700
R:conf
Z:Q1LxBvJ/ofKKik4CrrENc7ePnJsko=

";

    #[test]
    fn installed_round_trips() {
        let pkgs = parse_installed(DB).unwrap();
        assert_eq!(pkgs.len(), 1);
        assert_eq!(pkgs[0].dirs.len(), 2);
        assert_eq!(pkgs[0].dirs[0].files[1].acl.mode, 0o777);
        assert_eq!(pkgs[0].dirs[1].acl.mode, 0o700);
        assert_eq!(write_installed(&pkgs), DB);
    }

    #[test]
    fn world_is_sorted() {
        let deps = Dependency::parse_list("zlib busybox=1.0-r0 app<2").unwrap();
        assert_eq!(write_world(&deps), "app<2\nbusybox=1.0-r0\nzlib\n");
    }

    #[test]
    fn carriage_returns_are_part_of_values() {
        // Found by fuzzing (fuzz/fuzz_targets/installed_db.rs).
        let db = "P:a\nV:1\nF:dev/pts\r\r\nR:x\r\n\n";
        let pkgs = parse_installed(db).unwrap();
        assert_eq!(pkgs[0].dirs[0].path, "dev/pts\r\r");
        assert_eq!(pkgs[0].dirs[0].files[0].name, "x\r");
        let written = write_installed(&pkgs);
        assert_eq!(parse_installed(&written).unwrap(), pkgs);
    }

    #[test]
    fn out_of_order_lines_are_errors() {
        assert!(parse_installed("P:a\nV:1\nR:file\n").is_err());
    }
}
