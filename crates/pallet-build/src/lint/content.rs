//! The package rules that look inside files or at the configuration's tests, and the python
//! and architecture rules, worded as melange's `pkg/linter/linters` word them: binaryarch,
//! duplicate, lddcheck, pkgconf, python/docs, python/multiple, python/test, strip and
//! unsupportedarch.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::LazyLock;

use super::{Target, Tests};
use crate::sca::elf::{self, Elf};

/// The rules this module answers for.
pub(super) const RULES: &[&str] = &[
    "binaryarch",
    "duplicate",
    "lddcheck",
    "pkgconf",
    "python/docs",
    "python/multiple",
    "python/test",
    "strip",
    "unsupportedarch",
];

/// A finding's message and listed items.
type Hit = (String, Vec<String>);

/// Files duplicate looks at: 1 KiB and more.
pub(super) fn hashed(size: u64) -> bool {
    size >= 1024
}

/// Go's `filepath.Ext` of the last element.
fn ext_of(path: &str) -> &str {
    let base = path.rsplit('/').next().unwrap_or(path);
    base.rfind('.').map_or("", |i| &base[i..])
}

fn base_of(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}

/// The SBOM folder some rules leave alone.
fn ignored(path: &str) -> bool {
    path.starts_with("var/lib/db/sbom/")
}

/// Files the ELF rules (binaryarch, strip) open: executables, and files whose extension
/// melange's `\.(a|so|dylib)(\..*)?` finds (an extension starting `.a`, `.so` or `.dylib`).
pub(super) fn elf_candidate(path: &str, mode: u32, size: u64) -> bool {
    let ext = ext_of(path);
    size >= 4
        && !ignored(path)
        && (mode & 0o111 != 0
            || ext.starts_with(".a")
            || ext.starts_with(".so")
            || ext.starts_with(".dylib"))
}

/// The ELF machine of an apk architecture.
fn machine_of(arch: &str) -> Option<u16> {
    Some(match arch {
        "x86_64" => elf::EM_X86_64,
        "aarch64" => elf::EM_AARCH64,
        "x86" => elf::EM_386,
        "armhf" | "armv7" => elf::EM_ARM,
        "ppc64le" => 21,
        "s390x" => 22,
        "riscv64" => 243,
        "loongarch64" => 258,
        _ => return None,
    })
}

fn plural(n: usize, one: &str, many: &str) -> String {
    if n == 1 { one.into() } else { many.into() }
}

/// go-humanize's `Bytes`: SI units, one decimal below 10.
pub(super) fn humanize_bytes(s: u64) -> String {
    if s < 10 {
        return format!("{s} B");
    }
    let sizes = ["B", "kB", "MB", "GB", "TB", "PB", "EB"];
    let e = ((s as f64).ln() / 1000f64.ln()).floor();
    let suffix = sizes[(e as usize).min(sizes.len() - 1)];
    let val = ((s as f64) / 1000f64.powf(e) * 10.0 + 0.5).floor() / 10.0;
    if val < 10.0 {
        format!("{val:.1} {suffix}")
    } else {
        format!("{val:.0} {suffix}")
    }
}

/// melange's `license.IsLicenseFile` (Licensee's file name patterns), as duplicate uses it.
pub(super) fn is_license_file(path: &str) -> bool {
    static SEMVER: LazyLock<regex::Regex> =
        LazyLock::new(|| regex::Regex::new(r"-[0-9]+\.[0-9]+\.[0-9]+-").expect("regex"));
    static NAMES: LazyLock<Vec<regex::Regex>> = LazyLock::new(|| {
        let lic = "(un)?licen[sc]e";
        let copying = "copy(ing|right)";
        // melange quotes the dots of its preferred extensions inside `\.(?:…)`, so these
        // need two dots; kept as written.
        let preferred = r"\.(?:\.md|\.markdown|\.txt|\.html)$";
        let any = r"(\.[^./]+$)";
        let w = "[0-9A-Za-z_]";
        [
            format!("^{lic}$"),
            format!("^{lic}{preferred}$"),
            format!("^{copying}$"),
            format!("^{copying}{preferred}$"),
            format!("^{lic}{any}$"),
            format!("^{copying}{any}$"),
            format!("^{lic}[-_][^.]*{any}?$"),
            format!("^{copying}[-_][^.]*{any}?$"),
            format!("^{w}+[-_]{lic}[^.]*{any}?$"),
            format!("^{w}+[-_]{copying}[^.]*{any}?$"),
            format!("^ofl{preferred}"),
            format!("^ofl{any}"),
            "^ofl$".to_string(),
            "^patents$".to_string(),
            format!("^patents{any}$"),
        ]
        .iter()
        .map(|r| regex::Regex::new(&format!("(?i){r}")).expect("regex"))
        .collect()
    });
    let replaced = SEMVER.replace_all(path, "-");
    let name = base_of(&replaced);
    let ext = ext_of(name);
    if [".xml", ".go", ".gemspec", ".spdx", ".header"].contains(&ext) {
        return false;
    }
    NAMES.iter().any(|r| r.is_match(name))
}

pub(super) fn check(rule: &str, t: &Target) -> Option<Hit> {
    match rule {
        "binaryarch" => binaryarch(t),
        "duplicate" => duplicate(t),
        "lddcheck" => needs_test(
            t,
            &["test/ldd-check", "test/tw/ldd-check"],
            |p| {
                static SO: LazyLock<regex::Regex> =
                    LazyLock::new(|| regex::Regex::new(r"\.so(?:\.[0-9]+)*$").expect("regex"));
                SO.is_match(p)
            },
            "shared objects",
            "test/ldd-check",
        ),
        "pkgconf" => needs_test(
            t,
            &["test/pkgconf"],
            |p| p.starts_with("usr/lib/pkgconfig/") || p.starts_with("usr/share/pkgconfig/"),
            "pkgconfig files",
            "test/pkgconf",
        ),
        "python/docs" => python_top_level(
            t,
            &["doc", "docs"],
            "docs directory encountered in Python site-packages directory",
        ),
        "python/test" => python_top_level(
            t,
            &["test", "tests"],
            "tests directory encountered in Python site-packages directory",
        ),
        "python/multiple" => python_multiple(t),
        "strip" => strip(t),
        "unsupportedarch" => unsupported_arch(t),
        _ => None,
    }
}

/// The regular files the ELF rules open, with their bytes when they are ELF files.
fn elf_files<'a>(t: &'a Target) -> impl Iterator<Item = (&'a str, Vec<u8>)> + 'a {
    t.files
        .iter()
        .filter(|f| !f.is_dir && !f.is_symlink && elf_candidate(&f.path, f.mode, f.size))
        .filter_map(|f| {
            let data = t.contents.read(&f.path)?;
            elf::is_elf(&data).then_some((f.path.as_str(), data))
        })
}

/// binaryarch: ELF files built for a machine other than x86_64 and aarch64 (melange), or,
/// when the package's architecture is known, for a machine other than its own.
fn binaryarch(t: &Target) -> Option<Hit> {
    if !t.contents.available() {
        return None;
    }
    let want = t.arch.and_then(machine_of);
    let mut found = vec![];
    for (path, data) in elf_files(t) {
        let Ok(e) = Elf::parse(&data) else { continue };
        let m = e.machine;
        let name = elf::machine_name(m);
        if m != elf::EM_X86_64 && m != elf::EM_AARCH64 {
            found.push(format!("{path} ({name})"));
        } else if want.is_some_and(|w| w != m) {
            found.push(format!(
                "{path} ({name}, in a package for {})",
                t.arch.unwrap_or_default()
            ));
        }
    }
    (!found.is_empty()).then(|| {
        (
            format!(
                "{} contains {} {} compiled for unsupported architecture(s)",
                t.name,
                found.len(),
                plural(found.len(), "binary", "binaries")
            ),
            found,
        )
    })
}

/// strip: ELF files with DWARF sections (`.debug*`, `.zdebug*`; melange matched the exact
/// names `.debug` and `.zdebug` until its PR #2652, which no compiler emits).
fn strip(t: &Target) -> Option<Hit> {
    if !t.contents.available() {
        return None;
    }
    let mut found = vec![];
    for (path, data) in elf_files(t) {
        let e = match Elf::parse(&data) {
            Ok(e) => e,
            Err(err) => {
                return Some((
                    format!("could not open file {path:?} as executable: {err}"),
                    vec![],
                ));
            }
        };
        if e.sections
            .iter()
            .any(|s| s.name.starts_with(".debug") || s.name.starts_with(".zdebug"))
        {
            found.push(path.to_string());
        }
    }
    (!found.is_empty()).then(|| {
        (
            format!(
                "{} contains {} unstripped {}",
                t.name,
                found.len(),
                plural(found.len(), "binary", "binaries")
            ),
            found,
        )
    })
}

/// duplicate: files of 1 KiB or more with the same name and contents in several folders
/// (licence files excepted), the sets that waste the most first.
fn duplicate(t: &Target) -> Option<Hit> {
    if !t.contents.available() {
        return None;
    }
    // (digest, file name) → (paths, size)
    type Sets<'a> = BTreeMap<([u8; 32], &'a str), (Vec<&'a str>, u64)>;
    let mut sets: Sets = BTreeMap::new();
    for f in t.files.iter().filter(|f| !f.is_dir && !f.is_symlink) {
        if is_license_file(&f.path) || !hashed(f.size) {
            continue;
        }
        let Some(h) = t.contents.sha256(&f.path) else {
            continue;
        };
        sets.entry((h, base_of(&f.path)))
            .or_insert_with(|| (vec![], f.size))
            .0
            .push(&f.path);
    }
    let mut dups: Vec<(&str, Vec<&str>, u64, u64)> = sets
        .into_iter()
        .filter(|(_, (p, _))| p.len() > 1)
        .map(|((_, base), (mut paths, size))| {
            paths.sort();
            let wasted = (paths.len() as u64 - 1) * size;
            (base, paths, size, wasted)
        })
        .collect();
    if dups.is_empty() {
        return None;
    }
    dups.sort_by(|a, b| b.3.cmp(&a.3).then(a.0.cmp(b.0)).then(a.1.cmp(&b.1)));
    let total: u64 = dups.iter().map(|d| d.3).sum();
    let mut details = vec![];
    for (base, paths, size, wasted) in &dups {
        details.push(format!(
            "{} copies of '{base}' ({} each, wasting {}):",
            paths.len(),
            humanize_bytes(*size),
            humanize_bytes(*wasted)
        ));
        details.extend(paths.iter().map(|p| format!("  {p}")));
    }
    Some((
        format!(
            "{} contains {} duplicate file(s) with same name in different directories (wasting {} total)",
            t.name,
            dups.len(),
            humanize_bytes(total)
        ),
        details,
    ))
}

/// lddcheck and pkgconf: files of a kind need a test step that checks them.
fn needs_test(
    t: &Target,
    uses: &[&str],
    matches: impl Fn(&str) -> bool,
    what: &str,
    test: &str,
) -> Option<Hit> {
    let message = match t.tests {
        Tests::Unknown => return None,
        Tests::Uses(list) if list.iter().any(|u| uses.contains(&u.as_str())) => return None,
        Tests::Uses(_) => format!("{} contains {what} but {test} is not configured", t.name),
        Tests::NoConfiguration => format!("{} contains {what} but missing .melange.yaml", t.name),
    };
    let paths: Vec<String> = t
        .files
        .iter()
        .filter(|f| !f.is_dir && matches(&f.path))
        .map(|f| f.path.clone())
        .collect();
    (!paths.is_empty()).then_some((message, paths))
}

/// melange's `GetPythonSitePackages`: what is directly in `usr/lib/python3.*/site-packages`;
/// an error when there is more than one `usr/lib/python3.*`.
fn site_packages(t: &Target) -> Result<Vec<String>, String> {
    let mut paths: BTreeSet<&str> = BTreeSet::new();
    for f in t.files {
        let mut p = f.path.as_str();
        paths.insert(p);
        while let Some((parent, _)) = p.rsplit_once('/') {
            paths.insert(parent);
            p = parent;
        }
    }
    let pythons: Vec<&str> = paths
        .iter()
        .copied()
        .filter(|p| {
            p.strip_prefix("usr/lib/python3.")
                .is_some_and(|rest| !rest.contains('/'))
        })
        .collect();
    match pythons.len() {
        0 => Ok(vec![]),
        1 => {
            let prefix = format!("{}/site-packages/", pythons[0]);
            Ok(paths
                .iter()
                .filter_map(|p| p.strip_prefix(prefix.as_str()))
                .filter(|rest| !rest.is_empty() && !rest.contains('/'))
                .map(String::from)
                .collect())
        }
        n => Err(format!("more than one Python version detected: {n} found")),
    }
}

/// python/docs and python/test: a `doc(s)` or `test(s)` folder at the top of site-packages.
fn python_top_level(t: &Target, names: &[&str], message: &str) -> Option<Hit> {
    match site_packages(t) {
        Err(e) => Some((e, vec![])),
        Ok(found) => found
            .iter()
            .any(|b| names.contains(&b.as_str()))
            .then(|| (message.to_string(), vec![])),
    }
}

/// python/multiple: more than one top-level module in site-packages.
fn python_multiple(t: &Target) -> Option<Hit> {
    let found = match site_packages(t) {
        Err(e) => return Some((e, vec![])),
        Ok(f) => f,
    };
    let mut modules = BTreeSet::new();
    for base in &found {
        if base.starts_with('_')
            || ["test", "tests", "doc", "docs"].contains(&base.as_str())
            || [".egg-info", ".dist-info", ".pth"].contains(&ext_of(base))
        {
            continue;
        }
        let ext = ext_of(base);
        // melange keeps the first len(ext) characters (meaning to cut the extension off):
        // `foo.so` gives `foo`, and `yaml.py` gives `yam`. Kept, as it decides what counts.
        let name = if ext.is_empty() {
            base.as_str()
        } else {
            base.get(..ext.len()).unwrap_or(base)
        };
        if name.is_empty() {
            continue;
        }
        modules.insert(format!("{name:?}"));
    }
    (modules.len() > 1).then(|| {
        let list: Vec<String> = modules.into_iter().collect();
        (
            format!(
                "multiple Python packages detected: {} found ({})",
                list.len(),
                list.join(", ")
            ),
            list,
        )
    })
}

/// unsupportedarch: paths naming an architecture other than x86_64 and aarch64, in a folder
/// name or as a `-`, `_` or `.` separated part of the file name (unless the path also names
/// a supported one).
fn unsupported_arch(t: &Target) -> Option<Hit> {
    const SUPPORTED: [&str; 5] = ["aarch64", "arm64", "amd64", "x86_64", "x86-64"];
    const ARCHS: [&str; 18] = [
        "i386", "i686", "x86_32", "x86-32", "ppc64", "ppc64le", "powerpc", "s390x", "s390", "mips",
        "mipsel", "mips64", "riscv", "riscv64", "sparc", "sparc64", "ia64", "m68k",
    ];
    let mut found = vec![];
    for f in t.files.iter().filter(|f| !f.is_dir) {
        let path = f.path.to_lowercase();
        let dir = path.rsplit_once('/').map_or(".", |(d, _)| d);
        let base = base_of(&path);
        let hit = ARCHS.iter().find(|arch| {
            if dir.contains(&format!("/{arch}")) {
                return true;
            }
            ["-", "_", "."].iter().any(|sep| {
                (base.contains(&format!("{sep}{arch}{sep}"))
                    || base.contains(&format!("{sep}{arch}."))
                    || base.ends_with(&format!("{sep}{arch}")))
                    && !SUPPORTED.iter().any(|s| path.contains(s))
            })
        });
        if let Some(arch) = hit {
            found.push(format!("{} ({arch})", f.path));
        }
    }
    (!found.is_empty()).then(|| {
        (
            format!(
                "{} contains {} unsupported architecture reference(s)",
                t.name,
                found.len()
            ),
            found,
        )
    })
}
