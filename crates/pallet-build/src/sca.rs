//! Dependency generation from what a build produced, as melange's SCA (`pkg/sca`) does it, in
//! melange's order:
//!
//! 1. shared objects: `so:` needs from `DT_NEEDED` and the interpreter, `so:` and `so-ver:`
//!    provides from `DT_SONAME` (vendored outside the library folders), versioned
//!    `so-ver:LIB>=VERSION` needs when `MELANGE_VERSIONED_SHLIB_DEPENDS` is set, `.so`
//!    symlinks followed into sibling packages (how a `-dev` package needs its library), and
//!    Go FIPS binaries needing `openssl-config-fipshardened` and `so:libcrypto.so.3`;
//! 2. `cmd:` provides for executables in bin folders;
//! 3. `man-db` / `texinfo` for `-doc` packages;
//! 4. `pc:` provides and needs from pkg-config files;
//! 5. `perl~N`, 6. `python-X.Y-base`, 7. `ruby-X.Y` for modules, site-packages and gems;
//! 8. `cmd:` needs from shebangs;
//! 9. `linux:` provides of kernel images and needs of kernel modules.

use std::cell::OnceCell;
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::fs;
use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use pallet_apk_types::Dependency;

pub(crate) mod elf;
mod goinfo;
mod kernel;

use elf::Elf;

/// What to leave out or add, from `package.options` and the build's settings.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ScaOptions {
    pub no_provides: bool,
    pub no_depends: bool,
    pub no_commands: bool,
    /// `no-versioned-shlib-deps`: no `so-ver:` needs for this package.
    pub no_versioned_shlib_deps: bool,
    /// Generate `so-ver:LIB>=VERSION` needs as melange does when the environment variable
    /// `MELANGE_VERSIONED_SHLIB_DEPENDS` is non-empty (which turns them on too).
    pub versioned_shlib_depends: bool,
    /// Every package of the build, the main package first then the subpackages in order
    /// (melange's `RelativeNames`); their trees are the analyzed tree's siblings in
    /// `melange-out`. Empty means the package alone.
    pub relatives: Vec<String>,
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

/// One package to analyze, with what melange's `SCAHandle` gives its generators.
#[derive(Clone, Debug)]
pub struct Input<'a> {
    pub name: &'a str,
    /// `VERSION-rEPOCH`.
    pub version: &'a str,
    /// The package's staged tree (`melange-out/NAME`).
    pub root: &'a Path,
    /// Every package of the build and its tree, main package first, this one included.
    pub relatives: Vec<(String, PathBuf)>,
    /// The configured runtime dependencies, as written (`perl`, `python-3.12`, …).
    pub runtime: Vec<String>,
    pub options: ScaOptions,
}

const LIB_DIRS: [&str; 4] = ["lib/", "usr/lib/", "lib64/", "usr/lib64/"];
const BIN_DIRS: [&str; 4] = ["bin/", "sbin/", "usr/bin/", "usr/sbin/"];
const PC_DIRS: [&str; 5] = [
    "usr/local/lib/pkgconfig/",
    "usr/local/share/pkgconfig/",
    "usr/lib/pkgconfig/",
    "usr/lib64/pkgconfig/",
    "usr/share/pkgconfig/",
];
const BOOT_DIRS: [&str; 3] = ["boot/...", "lib/modules/...", "usr/lib/modules/..."];
const MODULE_DIRS: [&str; 2] = ["usr/lib/modules/...", "lib/modules/..."];
const FIPS_EXPERIMENTS: [&str; 3] = ["boringcrypto", "systemcrypto", "opensslcrypto"];

/// Driver libraries the host injects (NVIDIA/CUDA): never needed nor provided.
const HOST_LIBS: [&str; 27] = [
    "libEGL_nvidia.so.1",
    "libGLESv1_CM_nvidia.so.1",
    "libGLESv2_nvidia.so.1",
    "libGLX_nvidia.so.1",
    "libcuda.so.1",
    "libcudadebugger.so.1",
    "libnvcuvid.so.1",
    "libnvidia-allocator.so.1",
    "libnvidia-cfg.so.1",
    "libnvidia-eglcore.so.1",
    "libnvidia-encode.so.1",
    "libnvidia-fbc.so.1",
    "libnvidia-glcore.so.1",
    "libnvidia-glsi.so.1",
    "libnvidia-glvkspirv.so.1",
    "libnvidia-gpucomp.so.1",
    "libnvidia-ml.so.1",
    "libnvidia-ngx.so.1",
    "libnvidia-nvvm.so.1",
    "libnvidia-opencl.so.1",
    "libnvidia-opticalflow.so.1",
    "libnvidia-pkcs11-openssl3.so.1",
    "libnvidia-pkcs11.so.1",
    "libnvidia-ptxjitcompiler.so.1",
    "libnvidia-rtcore.so.1",
    "libnvidia-tls.so.1",
    "libnvoptix.so.1",
];

/// The number after `.so.` when it is a version (`libz.so.1.3` → `1.3`), else `0`.
fn so_version(soname: &str) -> String {
    // Go's `strings.Split(soname, ".so.")[1]`: up to a second `.so.`, if any.
    match soname.split(".so.").nth(1) {
        Some(v) if v.chars().all(|c| c.is_ascii_digit() || c == '.') => v.to_string(),
        _ => "0".into(),
    }
}

/// `path.Dir` of a slash-separated relative path (`"."` at the top).
fn dir_of(p: &str) -> &str {
    p.rsplit_once('/').map_or(".", |(d, _)| d)
}

fn base_of(p: &str) -> &str {
    let p = p.trim_end_matches('/');
    p.rsplit('/').next().unwrap_or(p)
}

/// melange's `isInDir`: the file's folder is one of `dirs` (`"usr/..."` for any depth).
fn in_dir(path: &str, dirs: &[impl AsRef<str>]) -> bool {
    let mine = dir_of(path);
    dirs.iter().any(|d| {
        let d = d.as_ref();
        match d.strip_suffix("/...") {
            Some(prefix) => {
                mine == prefix
                    || mine
                        .strip_prefix(prefix)
                        .is_some_and(|r| r.starts_with('/'))
            }
            None => mine == d || d.strip_suffix('/') == Some(mine),
        }
    })
}

/// Go's `path.Match` for one path element: `*`, `?`, `[...]` (ranges, `^` negation) and `\`.
fn glob_match(pattern: &str, name: &str) -> bool {
    fn class(p: &[char], c: char) -> Option<(bool, usize)> {
        // Returns (matched, length of the class in the pattern).
        let mut i = 1;
        let negate = p.get(1) == Some(&'^');
        if negate {
            i += 1;
        }
        let mut matched = false;
        let mut first = true;
        while i < p.len() {
            if p[i] == ']' && !first {
                return Some((matched != negate, i + 1));
            }
            first = false;
            let mut lo = p[i];
            if lo == '\\' {
                i += 1;
                lo = *p.get(i)?;
            }
            let mut hi = lo;
            if p.get(i + 1) == Some(&'-') && p.get(i + 2).is_some_and(|c| *c != ']') {
                hi = p[i + 2];
                if hi == '\\' {
                    hi = *p.get(i + 3)?;
                    i += 1;
                }
                i += 2;
            }
            if lo <= c && c <= hi {
                matched = true;
            }
            i += 1;
        }
        None
    }
    fn go(p: &[char], s: &[char]) -> bool {
        match p.first() {
            None => s.is_empty(),
            Some('*') => (0..=s.len()).any(|k| go(&p[1..], &s[k..])),
            Some('?') => !s.is_empty() && go(&p[1..], &s[1..]),
            Some('[') => match (s.first(), class(p, *s.first().unwrap_or(&'\0'))) {
                (Some(_), Some((true, n))) => go(&p[n..], &s[1..]),
                _ => false,
            },
            Some('\\') if p.len() > 1 => s.first() == Some(&p[1]) && go(&p[2..], &s[1..]),
            Some(c) => s.first() == Some(c) && go(&p[1..], &s[1..]),
        }
    }
    let p: Vec<char> = pattern.chars().collect();
    let s: Vec<char> = name.chars().collect();
    go(&p, &s)
}

/// Go's `fs.Glob` over a list of paths: those matching `pattern` element by element, sorted.
fn glob<'a>(paths: &'a BTreeSet<String>, pattern: &str) -> Vec<&'a str> {
    let parts: Vec<&str> = pattern.split('/').collect();
    paths
        .iter()
        .filter(|p| {
            let elems: Vec<&str> = p.split('/').collect();
            elems.len() == parts.len() && parts.iter().zip(&elems).all(|(g, e)| glob_match(g, e))
        })
        .map(String::as_str)
        .collect()
}

/// `rel` inside `root` with every symlink followed, never leaving `root` (absolute targets
/// are read as inside the tree, `..` stops at its top); `None` when something is missing.
pub(crate) fn resolve(root: &Path, rel: &str) -> Option<PathBuf> {
    let mut todo: VecDeque<String> = rel
        .split('/')
        .filter(|s| !s.is_empty())
        .map(String::from)
        .collect();
    let mut cur: Vec<String> = vec![];
    let mut hops = 0;
    while let Some(c) = todo.pop_front() {
        match c.as_str() {
            "." => continue,
            ".." => {
                cur.pop();
                continue;
            }
            _ => cur.push(c),
        }
        let p = root.join(cur.join("/"));
        let md = fs::symlink_metadata(&p).ok()?;
        if md.file_type().is_symlink() {
            hops += 1;
            if hops > 40 {
                return None;
            }
            let target = fs::read_link(&p).ok()?;
            let target = target.to_string_lossy();
            cur.pop();
            if target.starts_with('/') {
                cur.clear();
            }
            for part in target.split('/').filter(|s| !s.is_empty()).rev() {
                todo.push_front(part.to_string());
            }
        }
    }
    Some(root.join(cur.join("/")))
}

/// The entries of a tree in Go's `WalkDir` order (each folder's names sorted), with their
/// own (not followed) metadata.
fn walk(root: &Path) -> std::io::Result<Vec<(String, fs::Metadata)>> {
    let mut out = vec![];
    if !root.is_dir() {
        return Ok(out);
    }
    for e in walkdir::WalkDir::new(root).min_depth(1).sort_by_file_name() {
        let e = e.map_err(std::io::Error::other)?;
        let rel = e
            .path()
            .strip_prefix(root)
            .expect("under root")
            .to_string_lossy()
            .into_owned();
        out.push((rel, e.path().symlink_metadata()?));
    }
    Ok(out)
}

/// The file's bytes when it is an ELF file (the magic is checked before reading it all).
fn read_elf(path: &Path) -> Option<Vec<u8>> {
    let mut f = fs::File::open(path).ok()?;
    if !f.metadata().ok()?.is_file() {
        return None;
    }
    let mut magic = [0u8; 4];
    f.read_exact(&mut magic).ok()?;
    if !elf::is_elf(&magic) {
        return None;
    }
    let mut data = magic.to_vec();
    f.read_to_end(&mut data).ok()?;
    Some(data)
}

/// melange's `getShbang`: the interpreter a script names, `Ok(None)` for none or an ignored
/// one (`python3`, `python`, `sh`, `awk`, `luajit`), an error for `env` forms it refuses.
fn shebang(head: &[u8]) -> Result<Option<String>, String> {
    if head.len() < 2 || !head.starts_with(b"#!") {
        return Ok(None);
    }
    let line = String::from_utf8_lossy(&head[2..]);
    let line = line.split('\n').next().unwrap_or("");
    let toks: Vec<&str> = line.split_whitespace().collect();
    let Some(mut bin) = toks.first().copied() else {
        return Ok(None);
    };
    if bin == "/usr/bin/env" {
        bin = match toks.len() {
            1 => return Err("a shbang of only '/usr/bin/env'".into()),
            2 => toks[1],
            _ if toks[1] == "-S" && !toks[2].starts_with('-') => toks[2],
            n => {
                return Err(format!(
                    "a shbang of only '/usr/bin/env' with multiple arguments ({n} {})",
                    toks.join(" ")
                ));
            }
        };
    }
    if ["python3", "python", "sh", "awk", "luajit"].contains(&base_of(bin)) {
        return Ok(None);
    }
    Ok(Some(bin.to_string()))
}

/// Module names of a pkg-config `Requires` value, version constraints dropped.
fn pc_requires(v: &str) -> Vec<String> {
    let mut out = vec![];
    let mut skip_next = false;
    for w in v.split([',', ' ', '\t']).filter(|w| !w.is_empty()) {
        if skip_next {
            skip_next = false;
            continue;
        }
        if matches!(w, "=" | "<" | ">" | "<=" | ">=" | "!=") {
            skip_next = true;
            continue;
        }
        // `foo>=1.0` written without spaces.
        let name = w.split(['<', '>', '=', '!']).next().unwrap_or(w);
        if !name.is_empty() {
            out.push(name.to_string());
        }
    }
    out
}

/// The `Requires`, `Requires.private` and `Requires.internal` modules of a `.pc` file, with
/// its variables expanded.
fn pc_needs(text: &str) -> Vec<String> {
    let mut vars: BTreeMap<String, String> = BTreeMap::new();
    let expand = |s: &str, vars: &BTreeMap<String, String>| {
        let mut out = String::new();
        let mut rest = s;
        while let Some(i) = rest.find("${") {
            out.push_str(&rest[..i]);
            match rest[i + 2..].find('}') {
                Some(j) => {
                    out.push_str(vars.get(&rest[i + 2..i + 2 + j]).map_or("", String::as_str));
                    rest = &rest[i + 3 + j..];
                }
                None => {
                    out.push_str(&rest[i..]);
                    rest = "";
                }
            }
        }
        out.push_str(rest);
        out
    };
    let mut needs = vec![];
    for l in text.lines() {
        let l = l.split('#').next().unwrap_or("").trim();
        let (k, sep, v) = match (l.find(':'), l.find('=')) {
            (Some(c), Some(e)) if e < c => (&l[..e], '=', &l[e + 1..]),
            (Some(c), _) => (&l[..c], ':', &l[c + 1..]),
            (None, Some(e)) => (&l[..e], '=', &l[e + 1..]),
            (None, None) => continue,
        };
        let k = k.trim();
        let v = expand(v.trim(), &vars);
        if sep == '=' {
            vars.insert(k.to_string(), v);
        } else if matches!(k, "Requires" | "Requires.private" | "Requires.internal") {
            needs.extend(pc_requires(&v));
        }
    }
    needs
}

/// What the generators collect, as melange's string lists.
#[derive(Default)]
struct Found {
    runtime: Vec<String>,
    provides: Vec<String>,
    vendored: Vec<String>,
}

struct Analysis<'a> {
    input: &'a Input<'a>,
    lib_dirs: Vec<String>,
    /// SONAMEs of every ELF file in the build's packages, for versioned needs.
    build_sonames: OnceCell<BTreeSet<String>>,
}

impl Analysis<'_> {
    fn versioned_enabled(&self) -> bool {
        let o = &self.input.options;
        (o.versioned_shlib_depends
            || std::env::var_os("MELANGE_VERSIONED_SHLIB_DEPENDS").is_some_and(|v| !v.is_empty()))
            && !o.no_versioned_shlib_deps
    }

    /// melange's `determineShlibVersion`: the version a `so-ver:` need asks for. A library
    /// that a package of this build ships is at this build's version (melange: the resolver
    /// finds it among the packages being built, or nowhere in the index); for the others
    /// melange keeps the need unversioned unless the installed provider has a versioned
    /// provide, which needs a package resolver this analysis does not have.
    fn shlib_version(&self, lib: &str) -> Option<String> {
        if !self.versioned_enabled()
            || lib.starts_with("ld-linux-x86-64.so")
            || lib.starts_with("ld-linux-aarch64.so")
        {
            return None;
        }
        let sonames = self.build_sonames.get_or_init(|| {
            let mut set = BTreeSet::new();
            for (_, dir) in &self.input.relatives {
                for (rel, md) in walk(dir).unwrap_or_default() {
                    if !md.is_file() {
                        continue;
                    }
                    if let Some(data) = read_elf(&dir.join(&rel))
                        && let Ok(e) = Elf::parse(&data)
                    {
                        set.extend(e.dyn_strings(elf::DT_SONAME).unwrap_or_default());
                    }
                }
            }
            set
        });
        sonames
            .contains(lib)
            .then(|| self.input.version.to_string())
    }

    fn need_lib(&self, lib: &str, f: &mut Found) {
        f.runtime.push(format!("so:{lib}"));
        if let Some(v) = self.shlib_version(lib) {
            f.runtime.push(format!("so-ver:{lib}>={v}"));
        }
    }

    /// melange's `processSymlinkSo`: a `.so` link's target looked up by name in the library
    /// folders of every package of the build; its SONAME is needed.
    fn symlink_so(&self, rel: &str, f: &mut Found) {
        if !rel.contains(".so") {
            return;
        }
        let Ok(target) = fs::read_link(self.input.root.join(rel)) else {
            return;
        };
        let target = target.to_string_lossy();
        let name = base_of(&target);
        let found = self.input.relatives.iter().find_map(|(_, dir)| {
            self.lib_dirs.iter().find_map(|d| {
                let test = format!("{}/{name}", d.trim_end_matches('/'));
                resolve(dir, &test).filter(|p| p.exists())
            })
        });
        let Some(path) = found else { return };
        let Some(data) = read_elf(&path) else { return };
        let Ok(e) = Elf::parse(&data) else { return };
        let Ok(sonames) = e.dyn_strings(elf::DT_SONAME) else {
            return;
        };
        for soname in sonames {
            if !HOST_LIBS.contains(&soname.as_str()) {
                self.need_lib(&soname, f);
            }
        }
    }

    /// melange's `generateSharedObjectNameDeps` for one entry.
    fn shared_object(&self, rel: &str, md: &fs::Metadata, f: &mut Found) {
        let is_link = md.file_type().is_symlink();
        if is_link {
            self.symlink_so(rel, f);
        } else if !md.is_file() {
            return;
        }
        // A link is read through (inside this package), as melange opens it.
        let path = if is_link {
            match resolve(self.input.root, rel) {
                Some(p) => p,
                None => return,
            }
        } else {
            self.input.root.join(rel)
        };
        let Some(data) = read_elf(&path) else { return };
        let Ok(e) = Elf::parse(&data) else { return };
        let interp = e.interpreter();
        if !interp.is_empty() {
            let dep = format!("so:{}", base_of(&interp)).replace("so:ld-musl", "so:libc.musl");
            f.runtime.push(dep);
        }
        let Ok(libs) = e.dyn_strings(elf::DT_NEEDED) else {
            return;
        };
        for lib in libs {
            if !HOST_LIBS.contains(&lib.as_str()) && lib.contains(".so.") {
                self.need_lib(&lib, f);
            }
        }
        // Executables with a SONAME (jlink) are no libraries, unless named like one (libc
        // and libcap are both).
        let base = base_of(rel);
        if interp.is_empty() || base.contains(".so.") || base.ends_with(".so") {
            let Ok(sonames) = e.dyn_strings(elf::DT_SONAME) else {
                return;
            };
            let in_lib = in_dir(rel, &self.lib_dirs);
            for soname in sonames {
                if HOST_LIBS.contains(&soname.as_str()) {
                    continue;
                }
                let list = if in_lib {
                    &mut f.provides
                } else {
                    &mut f.vendored
                };
                list.push(format!("so:{soname}={}", so_version(&soname)));
                list.push(format!("so-ver:{soname}={}", self.input.version));
            }
        }
        // Go built with cgo and a FIPS crypto experiment loads OpenSSL at run time.
        if let Some(settings) = goinfo::build_settings(&e) {
            let cgo = settings.iter().any(|(k, v)| k == "CGO_ENABLED" && v == "1");
            let fips = settings.iter().any(|(k, v)| {
                (k == "GOEXPERIMENT" && FIPS_EXPERIMENTS.contains(&v.as_str()))
                    || (k == "microsoft_systemcrypto" && v == "1")
            });
            if cgo && fips {
                f.runtime.push("openssl-config-fipshardened".into());
                f.runtime.push("so:libcrypto.so.3".into());
            }
        }
    }
}

/// Extra library folders from every `etc/ld.so.conf.d/**/*.conf` of the build's packages.
fn ld_so_conf_dirs(relatives: &[(String, PathBuf)]) -> Vec<String> {
    let mut out = vec![];
    for (_, dir) in relatives {
        for (rel, md) in walk(&dir.join("etc/ld.so.conf.d")).unwrap_or_default() {
            if !rel.ends_with(".conf") || !md.is_file() {
                continue;
            }
            let Ok(text) = fs::read_to_string(dir.join("etc/ld.so.conf.d").join(&rel)) else {
                continue;
            };
            for line in text.lines() {
                if let Some(l) = line.strip_prefix('/') {
                    out.push(l.to_string());
                }
            }
        }
    }
    out
}

/// Analyze one package of a build.
pub fn analyze_input(input: &Input) -> std::io::Result<Generated> {
    let root = input.root;
    let version = input.version;
    let mut lib_dirs: Vec<String> = LIB_DIRS.iter().map(|s| s.to_string()).collect();
    lib_dirs.extend(ld_so_conf_dirs(&input.relatives));
    let a = Analysis {
        input,
        lib_dirs,
        build_sonames: OnceCell::new(),
    };
    let entries = walk(root)?;
    let paths: BTreeSet<String> = entries.iter().map(|(p, _)| p.clone()).collect();
    let mut f = Found::default();

    // 1. Shared objects.
    for (rel, md) in &entries {
        a.shared_object(rel, md, &mut f);
    }
    // 2. Commands.
    for (rel, md) in &entries {
        if md.is_file() && md.permissions().mode() & 0o555 == 0o555 && in_dir(rel, &BIN_DIRS) {
            f.provides.push(format!("cmd:{}={version}", base_of(rel)));
        }
    }
    // 3. Documentation packages need their readers.
    if input.name.ends_with("-doc") {
        for (rel, _) in &entries {
            if in_dir(rel, &["usr/share/man"]) {
                f.runtime.push("man-db".into());
            }
            if in_dir(rel, &["usr/share/info"]) {
                f.runtime.push("texinfo".into());
            }
        }
    }
    // 4. pkg-config files (links skipped, as ncurses aliases .pc files with them).
    for (rel, md) in &entries {
        if !rel.ends_with(".pc") || md.file_type().is_symlink() {
            continue;
        }
        let Ok(text) = fs::read_to_string(root.join(rel)) else {
            continue;
        };
        let name = base_of(rel).trim_end_matches(".pc");
        if in_dir(rel, &PC_DIRS) {
            f.provides.push(format!("pc:{name}={version}"));
            for need in pc_needs(&text) {
                f.runtime.push(format!("pc:{need}"));
            }
        } else {
            f.vendored.push(format!("pc:{name}={version}"));
        }
    }
    // 5. Perl modules need the perl they were built for (`usr/lib/perl5/vendor_perl` →
    //    `perl~5`), unless `perl` is configured.
    let mut perl = glob(&paths, "usr/lib/perl[0-9]*/*_perl");
    perl.extend(glob(&paths, "lib/perl[0-9]*/*_perl"));
    if let Some(m) = perl.first()
        && !input.runtime.iter().any(|d| d == "perl")
    {
        // The `perlN` element (melange takes the third element, which is right for
        // usr/lib and gives `perl~vendor_perl` for lib/: the element itself is used here).
        let elem = m.split('/').find(|e| e.starts_with("perl")).unwrap_or("");
        f.runtime.push(format!(
            "perl~{}",
            elem.strip_prefix("perl").unwrap_or(elem)
        ));
    }
    // 6. Python modules need their interpreter's base package, unless a python dependency is
    //    configured.
    let mut py = String::new();
    for (rel, md) in &entries {
        let parent = base_of(dir_of(rel));
        if base_of(rel) == "site-packages" && parent.starts_with("python") && md.is_dir() {
            py = parent[6..].to_string();
        }
    }
    if !py.is_empty() && !input.runtime.iter().any(|d| d.starts_with("python")) {
        f.runtime.push(format!("python-{py}-base"));
    }
    // 7. Ruby gems need their ruby (`usr/lib/ruby/gems/3.2.0/gems` → `ruby-3.2`), unless a
    //    ruby dependency is configured. (melange's pattern reads `[0.9]` for the third
    //    number, which Go's glob takes as the characters 0, '.' and 9; kept.)
    let mut gems = glob(&paths, "usr/lib/ruby/gems/[0-9]*.[0-9]*.[0.9]*/gems");
    gems.extend(glob(&paths, "lib/ruby/gems/[0-9]*.[0-9]*.[0.9]*/gems"));
    if let Some(m) = gems.first() {
        let mmm = base_of(dir_of(m));
        let ver = match mmm.rfind('.') {
            Some(i) => &mmm[..i],
            None => mmm,
        };
        let configured = input
            .runtime
            .iter()
            .any(|d| d.starts_with("ruby-") || d == "ruby");
        if !ver.is_empty() && !configured {
            f.runtime.push(format!("ruby-{ver}"));
        }
    }
    // 8. Shebangs of scripts in usr/bin, usr/local/bin and usr/local/sbin.
    let mut cmds = BTreeSet::new();
    for (rel, md) in &entries {
        if !md.is_file()
            || !["usr/bin/", "usr/local/bin/", "usr/local/sbin/"]
                .iter()
                .any(|p| rel.starts_with(p))
        {
            continue;
        }
        let mut head = Vec::with_capacity(80);
        if let Ok(file) = fs::File::open(root.join(rel)) {
            let _ = file.take(80).read_to_end(&mut head);
        }
        if let Ok(Some(bin)) = shebang(&head) {
            cmds.insert(base_of(&bin).to_string());
        }
    }
    f.runtime
        .extend(cmds.into_iter().map(|c| format!("cmd:{c}")));
    // 9. Kernels provide `linux:VERSION`; modules need the kernel they were built for.
    for (rel, md) in &entries {
        let boot = in_dir(rel, &BOOT_DIRS);
        let module = in_dir(rel, &MODULE_DIRS);
        if !md.is_file() || !(boot || module) {
            continue;
        }
        let Ok(data) = fs::read(root.join(rel)) else {
            continue;
        };
        if boot && let Some(v) = kernel::kernel_version(&data) {
            f.provides
                .push(format!("linux:{}", kernel::version_prefix(&v)));
        }
        if module && let Some(v) = kernel::module_vermagic(&data) {
            f.runtime
                .push(format!("linux:{}", kernel::version_prefix(&v)));
        }
    }

    for list in [&mut f.runtime, &mut f.provides, &mut f.vendored] {
        list.sort();
        list.dedup();
    }
    let o = &input.options;
    if o.no_commands {
        f.provides.retain(|s| !s.starts_with("cmd:"));
        f.runtime.retain(|s| !s.starts_with("cmd:"));
    }
    if o.no_depends {
        f.runtime.clear();
    }
    if o.no_provides {
        f.provides.clear();
    }
    let parse = |list: Vec<String>| -> Vec<Dependency> {
        list.iter()
            .filter_map(|s| Dependency::parse_lenient(s).ok())
            .collect()
    };
    let mut g = Generated {
        depends: parse(f.runtime),
        provides: parse(f.provides),
        vendored: parse(f.vendored),
    };
    // What the package provides itself (or vendors) is no dependency. Unlike melange before
    // its PR #2634, a kept `so-ver:` need keeps its `>=VERSION`.
    let own: BTreeSet<String> = g
        .provides
        .iter()
        .chain(&g.vendored)
        .map(|d| d.name.clone())
        .collect();
    g.depends.retain(|d| !own.contains(&d.name));
    Ok(g)
}

/// Analyze the staged tree of one package as `spec` describes it (its configured runtime
/// dependencies, options and the build's other packages, whose trees are `destdir`'s
/// siblings); `full_version` is `version-rN`.
pub fn analyze_spec(
    spec: &crate::assemble::PackageSpec,
    destdir: &Path,
    full_version: &str,
) -> std::io::Result<Generated> {
    let parent = destdir.parent().unwrap_or(destdir);
    let mut relatives: Vec<(String, PathBuf)> = spec
        .sca
        .relatives
        .iter()
        .map(|n| {
            let dir = if *n == spec.name {
                destdir.to_path_buf()
            } else {
                parent.join(n)
            };
            (n.clone(), dir)
        })
        .collect();
    if !relatives.iter().any(|(n, _)| *n == spec.name) {
        relatives.push((spec.name.clone(), destdir.to_path_buf()));
    }
    analyze_input(&Input {
        name: &spec.name,
        version: full_version,
        root: destdir,
        relatives,
        runtime: spec.depends.iter().map(ToString::to_string).collect(),
        options: spec.sca.clone(),
    })
}

/// Analyze the staged tree of one package on its own (no sibling packages, no configured
/// dependencies); `full_version` is `version-rN`.
pub fn analyze(root: &Path, full_version: &str, opts: ScaOptions) -> std::io::Result<Generated> {
    let name = base_of(&root.to_string_lossy()).to_string();
    analyze_input(&Input {
        name: &name,
        version: full_version,
        root,
        relatives: vec![(name.clone(), root.to_path_buf())],
        runtime: vec![],
        options: opts,
    })
}

#[cfg(test)]
mod tests;
