//! Dependency generation from what a build produced (melange's SCA): `so:` needs and provides
//! from ELF `DT_NEEDED`, `DT_SONAME` and the interpreter, `cmd:` provides for executables in
//! bin folders, `pc:` provides and needs from pkg-config files, and shebang interpreters.

use std::collections::BTreeSet;
use std::fs;
use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use pallet_apk_types::Dependency;

/// What to leave out, from `package.options`.
#[derive(Clone, Copy, Debug, Default)]
pub struct ScaOptions {
    pub no_provides: bool,
    pub no_depends: bool,
    pub no_commands: bool,
}

/// What the analysis found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Generated {
    pub depends: Vec<Dependency>,
    pub provides: Vec<Dependency>,
    /// Provides of libraries outside the library folders: they satisfy the package's own
    /// generated needs but are not advertised (melange's `# vendored` lines).
    pub vendored: Vec<Dependency>,
}

const LIB_DIRS: [&str; 4] = ["lib/", "usr/lib/", "lib64/", "usr/lib64/"];
const BIN_DIRS: [&str; 4] = ["bin/", "sbin/", "usr/bin/", "usr/sbin/"];
const SHBANG_DIRS: [&str; 3] = ["usr/bin/", "usr/local/bin/", "usr/local/sbin/"];
const IGNORED_INTERPRETERS: [&str; 5] = ["python3", "python", "sh", "awk", "luajit"];
const PC_DIRS: [&str; 5] = [
    "usr/lib/pkgconfig/",
    "usr/local/lib/pkgconfig/",
    "usr/lib64/pkgconfig/",
    "usr/share/pkgconfig/",
    "usr/local/share/pkgconfig/",
];

/// The number after `.so.` when it is a version (`libz.so.1.3` → `1.3`), else `0`.
fn so_version(soname: &str) -> String {
    match soname.split_once(".so.") {
        Some((_, v)) if !v.is_empty() && v.chars().all(|c| c.is_ascii_digit() || c == '.') => {
            v.to_string()
        }
        _ => "0".into(),
    }
}

/// Analyze the staged tree of one package; `full_version` is `version-rN`.
pub fn analyze(root: &Path, full_version: &str, opts: ScaOptions) -> std::io::Result<Generated> {
    let mut lib_dirs: Vec<String> = LIB_DIRS.iter().map(|s| s.to_string()).collect();
    // Extra library folders a package declares for the dynamic linker count as library folders.
    if let Ok(rd) = fs::read_dir(root.join("etc/ld.so.conf.d")) {
        for e in rd.flatten() {
            if let Ok(text) = fs::read_to_string(e.path()) {
                for l in text.lines().map(str::trim).filter(|l| l.starts_with('/')) {
                    lib_dirs.push(format!("{}/", l.trim_matches('/')));
                }
            }
        }
    }
    let mut depends = BTreeSet::new();
    let mut provides = BTreeSet::new();
    let mut vendored = BTreeSet::new();
    for e in walkdir::WalkDir::new(root).min_depth(1).sort_by_file_name() {
        let e = e.map_err(std::io::Error::other)?;
        let rel = e
            .path()
            .strip_prefix(root)
            .expect("under root")
            .to_string_lossy()
            .into_owned();
        let md = e.path().symlink_metadata()?;
        if !md.is_file() {
            continue;
        }
        let mode = md.permissions().mode();
        let mut head = [0u8; 80];
        let n = fs::File::open(e.path())?.read(&mut head)?;
        let head = &head[..n];
        if head.starts_with(b"\x7fELF") {
            let bytes = fs::read(e.path())?;
            if let Ok(elf) = goblin::elf::Elf::parse(&bytes) {
                if let Some(interp) = elf.interpreter {
                    let base = interp.rsplit('/').next().unwrap_or(interp);
                    let base = base.replace("ld-musl", "libc.musl");
                    depends.insert(format!("so:{base}"));
                }
                for lib in &elf.libraries {
                    if lib.contains(".so") {
                        depends.insert(format!("so:{lib}"));
                    }
                }
                if let Some(soname) = elf.soname
                    && (elf.interpreter.is_none()
                        || soname.contains(".so.")
                        || soname.ends_with(".so"))
                {
                    let in_lib = lib_dirs
                        .iter()
                        .any(|d| rel.starts_with(d.as_str()) && !rel[d.len()..].contains('/'));
                    let entry = format!("so:{soname}={}", so_version(soname));
                    if in_lib {
                        provides.insert(entry);
                    } else {
                        vendored.insert(entry);
                    }
                }
            }
        }
        if mode & 0o555 == 0o555
            && BIN_DIRS
                .iter()
                .any(|d| rel.starts_with(d) && !rel[d.len()..].contains('/'))
        {
            let name = rel.rsplit('/').next().unwrap_or(&rel);
            provides.insert(format!("cmd:{name}={full_version}"));
        }
        if head.starts_with(b"#!") && SHBANG_DIRS.iter().any(|d| rel.starts_with(d)) {
            let line = String::from_utf8_lossy(&head[2..]);
            let line = line.lines().next().unwrap_or("").trim();
            let mut words = line.split_whitespace();
            let mut interp = words.next().unwrap_or("");
            if interp.ends_with("/env") {
                interp = words.find(|w| !w.starts_with('-')).unwrap_or("");
            }
            let base = interp.rsplit('/').next().unwrap_or(interp);
            if !base.is_empty() && !IGNORED_INTERPRETERS.contains(&base) {
                depends.insert(format!("cmd:{base}"));
            }
        }
        if rel.ends_with(".pc") {
            let in_dir = PC_DIRS.iter().any(|d| rel.starts_with(d));
            let text = fs::read_to_string(e.path()).unwrap_or_default();
            let name = rel
                .rsplit('/')
                .next()
                .unwrap_or("")
                .trim_end_matches(".pc")
                .to_string();
            if in_dir {
                provides.insert(format!("pc:{name}={full_version}"));
                for l in text.lines() {
                    let Some((k, v)) = l.split_once(':') else {
                        continue;
                    };
                    if matches!(
                        k.trim(),
                        "Requires" | "Requires.private" | "Requires.internal"
                    ) {
                        for req in pc_requires(v) {
                            depends.insert(format!("pc:{req}"));
                        }
                    }
                }
            } else {
                vendored.insert(format!("pc:{name}={full_version}"));
            }
        }
    }
    let parse = |set: BTreeSet<String>| -> Vec<Dependency> {
        set.into_iter()
            .filter_map(|s| Dependency::parse_lenient(&s).ok())
            .collect()
    };
    let mut g = Generated {
        depends: parse(depends),
        provides: parse(provides),
        vendored: parse(vendored),
    };
    // What the package provides itself (or vendors) is no dependency.
    let own: BTreeSet<String> = g
        .provides
        .iter()
        .chain(&g.vendored)
        .map(|d| d.name.clone())
        .collect();
    g.depends.retain(|d| !own.contains(&d.name));
    if opts.no_commands {
        g.depends.retain(|d| !d.name.starts_with("cmd:"));
        g.provides.retain(|d| !d.name.starts_with("cmd:"));
    }
    if opts.no_depends {
        g.depends.clear();
    }
    if opts.no_provides {
        g.provides.clear();
    }
    Ok(g)
}

/// Module names of a pkg-config `Requires` value, version constraints dropped.
fn pc_requires(v: &str) -> Vec<String> {
    let mut out = vec![];
    let mut skip_next = false;
    for w in v.split([',', ' ']).filter(|w| !w.is_empty()) {
        if skip_next {
            skip_next = false;
            continue;
        }
        if matches!(w, "=" | "<" | ">" | "<=" | ">=" | "!=") {
            skip_next = true;
            continue;
        }
        out.push(w.to_string());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_and_requires() {
        assert_eq!(so_version("libz.so.1.3.1"), "1.3.1");
        assert_eq!(so_version("libfoo.so"), "0");
        assert_eq!(
            pc_requires("zlib >= 1.2, libffi libssl = 3"),
            ["zlib", "libffi", "libssl"]
        );
    }

    #[test]
    fn commands_shebangs_and_pc() {
        let d = tempfile::tempdir().unwrap();
        let r = d.path();
        fs::create_dir_all(r.join("usr/bin")).unwrap();
        fs::create_dir_all(r.join("usr/lib/pkgconfig")).unwrap();
        fs::write(r.join("usr/bin/tool"), "#!/usr/bin/env perl\nprint 1\n").unwrap();
        fs::set_permissions(r.join("usr/bin/tool"), fs::Permissions::from_mode(0o755)).unwrap();
        fs::write(r.join("usr/bin/data"), "not executable").unwrap();
        fs::write(
            r.join("usr/lib/pkgconfig/foo.pc"),
            "Name: foo\nRequires: zlib >= 1.2\n",
        )
        .unwrap();
        let g = analyze(r, "1.0-r0", ScaOptions::default()).unwrap();
        let s = |v: &[Dependency]| v.iter().map(ToString::to_string).collect::<Vec<_>>();
        assert_eq!(s(&g.provides), ["cmd:tool=1.0-r0", "pc:foo=1.0-r0"]);
        assert_eq!(s(&g.depends), ["cmd:perl", "pc:zlib"]);
        let g = analyze(
            r,
            "1.0-r0",
            ScaOptions {
                no_commands: true,
                ..Default::default()
            },
        )
        .unwrap();
        assert_eq!(s(&g.provides), ["pc:foo=1.0-r0"]);
    }

    #[test]
    fn elf_from_the_host() {
        // A dynamically linked binary of this machine shows its interpreter and libc.
        let d = tempfile::tempdir().unwrap();
        fs::create_dir_all(d.path().join("usr/bin")).unwrap();
        let Ok(_) = fs::copy("/bin/ls", d.path().join("usr/bin/ls")) else {
            return;
        };
        let g = analyze(d.path(), "1-r0", ScaOptions::default()).unwrap();
        let deps: Vec<String> = g.depends.iter().map(|d| d.name.clone()).collect();
        assert!(deps.iter().any(|d| d.starts_with("so:libc.so")), "{deps:?}");
        assert!(
            deps.iter().any(|d| d.starts_with("so:ld-linux")),
            "{deps:?}"
        );
        assert!(g.provides.iter().any(|p| p.name == "cmd:ls"));
    }
}
