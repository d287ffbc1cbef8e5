//! Package metadata: `.PKGINFO` text and APKINDEX records, which carry the same facts under
//! different keys.

use std::fmt::Write as _;

use crate::dep::{self, DepError, Dependency};
use crate::version;

/// `v` as one line: every control character (line breaks first of all) becomes a space.
///
/// `.PKGINFO`, APKINDEX and the installed database are line-based `key = value` / `X:value`
/// files, and apk-tools trusts every line it reads there. A value that came from a recipe or a
/// package (a description, a URL) must therefore never end its line early: a `\n` inside a
/// description would otherwise add `depend = …` or `provides = …` lines of the writer's choice.
pub fn one_line(v: &str) -> std::borrow::Cow<'_, str> {
    if v.chars().any(char::is_control) {
        v.chars()
            .map(|c| if c.is_control() { ' ' } else { c })
            .collect::<String>()
            .into()
    } else {
        v.into()
    }
}

/// Metadata of one package, as `.PKGINFO` declares it and the index records it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PackageInfo {
    pub name: String,
    pub version: String,
    pub arch: String,
    pub description: String,
    pub url: String,
    pub license: String,
    pub origin: Option<String>,
    pub maintainer: Option<String>,
    /// `commit`; `Some("")` is kept because apk writes `c:` even for an empty commit line.
    pub commit: Option<String>,
    pub packager: Option<String>,
    pub build_time: u64,
    /// Installed size (`size` / `I:`).
    pub installed_size: u64,
    /// Size of the `.apk` file (`S:`), known only to indexes.
    pub file_size: u64,
    /// Package identity (`C:`), `Q1` + base64 of the control member's SHA-1.
    pub checksum: Option<String>,
    pub provider_priority: Option<u64>,
    pub replaces_priority: Option<u64>,
    pub depends: Vec<Dependency>,
    pub provides: Vec<Dependency>,
    pub install_if: Vec<Dependency>,
    pub replaces: Vec<Dependency>,
    pub triggers: Vec<String>,
    /// Hex SHA-256 of the compressed data member.
    pub datahash: Option<String>,
    /// Keys this library does not know, kept in order so nothing a packager wrote is lost.
    pub extra: Vec<(String, String)>,
}

/// Why metadata text was rejected.
#[derive(Debug, thiserror::Error)]
pub enum InfoError {
    #[error("line {line}: {source}")]
    Dep {
        line: usize,
        #[source]
        source: DepError,
    },
    #[error("line {line}: '{key}' is not a number: '{value}'")]
    Number {
        line: usize,
        key: String,
        value: String,
    },
    #[error("line {line}: expected 'X:value', found '{text}'")]
    Syntax { line: usize, text: String },
    #[error("the package has no name (no 'pkgname' / 'P:')")]
    MissingName,
    #[error(
        "record ending at line {line}: uppercase field '{field}' is unknown to this apk version"
    )]
    UnknownField { line: usize, field: char },
}

fn number(line: usize, key: &str, value: &str) -> Result<u64, InfoError> {
    value.trim().parse().map_err(|_| InfoError::Number {
        line,
        key: key.to_string(),
        value: value.to_string(),
    })
}

fn deps(line: usize, value: &str, into: &mut Vec<Dependency>) -> Result<(), InfoError> {
    let parsed =
        Dependency::parse_list_lenient(value).map_err(|source| InfoError::Dep { line, source })?;
    into.extend(parsed);
    Ok(())
}

/// The `.PKGINFO` keys [`PackageInfo::parse_pkginfo`] reads into fields.
const PKGINFO_KEYS: &[&str] = &[
    "pkgname",
    "pkgver",
    "pkgdesc",
    "url",
    "builddate",
    "packager",
    "size",
    "arch",
    "origin",
    "commit",
    "maintainer",
    "license",
    "depend",
    "provides",
    "install_if",
    "replaces",
    "provider_priority",
    "replaces_priority",
    "triggers",
    "datahash",
];

impl PackageInfo {
    /// `name-version`, the way apk names a package in messages and file names.
    pub fn nv(&self) -> String {
        format!("{}-{}", self.name, self.version)
    }

    /// The file name a repository stores this package under.
    pub fn file_name(&self) -> String {
        format!("{}-{}.apk", self.name, self.version)
    }

    /// Parse `.PKGINFO` text. Unknown keys are kept in [`PackageInfo::extra`].
    pub fn parse_pkginfo(text: &str) -> Result<Self, InfoError> {
        let mut p = PackageInfo::default();
        for (i, raw) in text.lines().enumerate() {
            let line = i + 1;
            if raw.starts_with('#') {
                continue;
            }
            // apk splits at the first " = " and ignores lines without one.
            let Some((key, value)) = raw.split_once(" = ") else {
                continue;
            };
            match key {
                "pkgname" => p.name = value.to_string(),
                "pkgver" => p.version = value.to_string(),
                "pkgdesc" => p.description = value.to_string(),
                "url" => p.url = value.to_string(),
                "builddate" => p.build_time = number(line, key, value)?,
                "packager" => p.packager = Some(value.to_string()),
                "size" => p.installed_size = number(line, key, value)?,
                "arch" => p.arch = value.to_string(),
                "origin" => p.origin = Some(value.to_string()),
                "commit" => p.commit = Some(value.to_string()),
                "maintainer" => p.maintainer = Some(value.to_string()),
                "license" => p.license = value.to_string(),
                "depend" => deps(line, value, &mut p.depends)?,
                "provides" => deps(line, value, &mut p.provides)?,
                "install_if" => deps(line, value, &mut p.install_if)?,
                "replaces" => deps(line, value, &mut p.replaces)?,
                "provider_priority" => p.provider_priority = Some(number(line, key, value)?),
                "replaces_priority" => p.replaces_priority = Some(number(line, key, value)?),
                "triggers" => p
                    .triggers
                    .extend(value.split_whitespace().map(str::to_string)),
                "datahash" => p.datahash = Some(value.trim().to_string()),
                _ => p.extra.push((key.to_string(), value.to_string())),
            }
        }
        if p.name.is_empty() {
            return Err(InfoError::MissingName);
        }
        Ok(p)
    }

    /// Write `.PKGINFO` text in the order melange uses (apk does not care about order).
    pub fn to_pkginfo(&self) -> String {
        let mut s = String::new();
        let mut kv = |k: &str, v: &str| {
            // A key with `=` or a line break could forge another line as well as a value.
            let k = one_line(k).replace(['=', ' '], "_");
            let _ = writeln!(s, "{k} = {}", one_line(v));
        };
        kv("pkgname", &self.name);
        kv("pkgver", &self.version);
        kv("arch", &self.arch);
        kv("size", &self.installed_size.to_string());
        if let Some(o) = &self.origin {
            kv("origin", o);
        }
        kv("pkgdesc", &self.description);
        kv("url", &self.url);
        if let Some(c) = &self.commit {
            kv("commit", c);
        }
        kv("builddate", &self.build_time.to_string());
        if let Some(p) = &self.packager {
            kv("packager", p);
        }
        if let Some(m) = &self.maintainer {
            kv("maintainer", m);
        }
        kv("license", &self.license);
        for d in &self.replaces {
            kv("replaces", &d.to_string());
        }
        for d in &self.depends {
            kv("depend", &d.to_string());
        }
        for d in &self.provides {
            kv("provides", &d.to_string());
        }
        if !self.install_if.is_empty() {
            kv("install_if", &dep::format_list(&self.install_if));
        }
        if let Some(p) = self.provider_priority {
            kv("provider_priority", &p.to_string());
        }
        if let Some(p) = self.replaces_priority {
            kv("replaces_priority", &p.to_string());
        }
        if !self.triggers.is_empty() {
            kv("triggers", &self.triggers.join(" "));
        }
        for (k, v) in &self.extra {
            // Sanitising can turn an unknown key into a known one (`provider\x1fpriority`
            // into `provider_priority`), which would then override that field when read back,
            // as a cached control section is. apk matches keys exactly and ignored it, so it
            // is left out (found by fuzzing).
            let clean = one_line(k).replace(['=', ' '], "_");
            if clean != *k && PKGINFO_KEYS.contains(&clean.as_str()) {
                continue;
            }
            kv(k, v);
        }
        if let Some(h) = &self.datahash {
            kv("datahash", h);
        }
        s
    }

    /// Apply one `X:value` index line. Returns `Ok(false)` for letters that are not index
    /// header fields (the installed database handles those).
    pub(crate) fn apply_index_field(
        &mut self,
        line: usize,
        field: char,
        value: &str,
    ) -> Result<bool, InfoError> {
        let key = field.to_string();
        match field {
            'C' => self.checksum = Some(value.to_string()),
            'P' => self.name = value.to_string(),
            'V' => self.version = value.to_string(),
            'A' => self.arch = value.to_string(),
            'S' => self.file_size = number(line, &key, value)?,
            'I' => self.installed_size = number(line, &key, value)?,
            'T' => self.description = value.to_string(),
            'U' => self.url = value.to_string(),
            'L' => self.license = value.to_string(),
            'o' => self.origin = Some(value.to_string()),
            'm' => self.maintainer = Some(value.to_string()),
            't' => self.build_time = number(line, &key, value)?,
            'c' => self.commit = Some(value.to_string()),
            'k' => self.provider_priority = Some(number(line, &key, value)?),
            'D' => deps(line, value, &mut self.depends)?,
            'p' => deps(line, value, &mut self.provides)?,
            'i' => deps(line, value, &mut self.install_if)?,
            _ => return Ok(false),
        }
        Ok(true)
    }

    /// Write the index header lines in apk-tools' order (`C P V A S I T U L o m t c k D p i`).
    pub fn write_index_header(&self, out: &mut String) {
        let mut line = |k: char, v: &str| {
            let _ = writeln!(out, "{k}:{}", one_line(v));
        };
        if let Some(c) = &self.checksum {
            line('C', c);
        }
        line('P', &self.name);
        line('V', &self.version);
        if !self.arch.is_empty() {
            line('A', &self.arch);
        }
        line('S', &self.file_size.to_string());
        line('I', &self.installed_size.to_string());
        line('T', &self.description);
        line('U', &self.url);
        line('L', &self.license);
        if let Some(o) = &self.origin {
            line('o', o);
        }
        if let Some(m) = &self.maintainer {
            line('m', m);
        }
        if self.build_time != 0 {
            line('t', &self.build_time.to_string());
        }
        if let Some(c) = &self.commit {
            line('c', c);
        }
        if let Some(k) = self.provider_priority.filter(|k| *k != 0) {
            line('k', &k.to_string());
        }
        if !self.depends.is_empty() {
            line('D', &dep::format_list(&self.depends));
        }
        if !self.provides.is_empty() {
            line('p', &dep::format_list(&self.provides));
        }
        if !self.install_if.is_empty() {
            line('i', &dep::format_list(&self.install_if));
        }
    }

    /// apk's display order: by name (case-insensitive, then exact), then by version.
    pub fn cmp_display(&self, other: &Self) -> std::cmp::Ordering {
        self.name
            .to_ascii_lowercase()
            .cmp(&other.name.to_ascii_lowercase())
            .then_with(|| self.name.cmp(&other.name))
            .then_with(|| version::compare(&self.version, &other.version))
    }
}

/// Parse APKINDEX text (the `APKINDEX` member of an index) into records.
///
/// Unknown lowercase letters are ignored as apk does; an unknown uppercase letter is an error
/// here because apk would refuse to install such a package and silently dropping it hides why.
pub fn parse_index(text: &str) -> Result<Vec<PackageInfo>, InfoError> {
    let mut out = Vec::new();
    let mut cur = PackageInfo::default();
    let mut any = false;
    for (i, raw) in text.lines().enumerate() {
        let line = i + 1;
        if raw.len() < 2 {
            if any {
                if cur.name.is_empty() {
                    return Err(InfoError::MissingName);
                }
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
                text: raw.chars().take(80).collect(),
            });
        }
        let value = &raw[field.len_utf8() + 1..];
        any = true;
        if !cur.apply_index_field(line, field, value)? && field.is_ascii_uppercase() {
            return Err(InfoError::UnknownField { line, field });
        }
    }
    if any {
        if cur.name.is_empty() {
            return Err(InfoError::MissingName);
        }
        out.push(cur);
    }
    Ok(out)
}

/// Write APKINDEX text: records sorted in apk's display order, each ended by an empty line.
pub fn write_index(packages: &[PackageInfo]) -> String {
    let mut sorted: Vec<&PackageInfo> = packages.iter().collect();
    sorted.sort_by(|a, b| a.cmp_display(b));
    let mut s = String::new();
    for p in sorted {
        p.write_index_header(&mut s);
        s.push('\n');
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    const PKGINFO: &str = "# Generated by abuild 3.9.0-r0
pkgname = alpine-baselayout
pkgver = 3.2.0-r23
pkgdesc = Alpine base dir structure and init scripts
url = https://git.alpinelinux.org/cgit/aports/tree/main/alpine-baselayout
builddate = 1662926906
packager = Buildozer <alpine-devel@lists.alpinelinux.org>
size = 339968
arch = aarch64
origin = alpine-baselayout
commit = 348653a9ba0701e8e968b3344e72313a9ef334e4
maintainer = Natanael Copa <ncopa@alpinelinux.org>
license = GPL-2.0-only
depend = alpine-baselayout-data=3.2.0-r23
depend = /bin/sh
# automatically detected:
provides = cmd:mkmntdirs=3.2.0-r23
depend = so:libc.musl-aarch64.so.1
future_key = kept
datahash = 1a3a8e47d2287da6d505d973412cee1ad64bcc17bc5995069e4e932055ecb0c4
";

    #[test]
    fn pkginfo_parses_and_round_trips() {
        let p = PackageInfo::parse_pkginfo(PKGINFO).unwrap();
        assert_eq!(p.name, "alpine-baselayout");
        assert_eq!(p.depends.len(), 3);
        assert_eq!(p.provides[0].to_string(), "cmd:mkmntdirs=3.2.0-r23");
        assert_eq!(p.extra, vec![("future_key".into(), "kept".into())]);
        let again = PackageInfo::parse_pkginfo(&p.to_pkginfo()).unwrap();
        assert_eq!(again, p);
    }

    #[test]
    fn index_round_trips() {
        let text = "C:Q17nDYKXjzC6BS80un5Z9J2O/h/IA=
P:mandoc-doc
V:1.14.6-r6
A:aarch64
S:120435
I:200704
T:mandoc (formerly mdocml) UNIX manpage compiler toolset (documentation)
U:https://mandoc.bsd.lv/
L:ISC and BSD-2-Clause and BSD-3-Clause
o:mandoc
m:Natanael Copa <ncopa@alpinelinux.org>
t:1663351183
c:c3be4b2e89a8a1d21a0197e53da59dfa106a3613
k:100
i:docs mandoc=1.14.6-r6

";
        let recs = parse_index(text).unwrap();
        assert_eq!(recs.len(), 1);
        assert_eq!(write_index(&recs), text);
    }

    #[test]
    fn no_value_adds_a_line() {
        let p = PackageInfo {
            name: "x".into(),
            version: "1-r0".into(),
            description: "ok\ndepend = evil\r\nprovides = cmd:sudo".into(),
            url: "u\nlicense = none".into(),
            extra: vec![("k\nx = y".into(), "v".into())],
            ..Default::default()
        };
        let text = p.to_pkginfo();
        assert!(!text.lines().any(|l| l.starts_with("depend")
            || l.starts_with("provides")
            || l.starts_with("license = none")
            || l.starts_with("x = y")));
        assert_eq!(PackageInfo::parse_pkginfo(&text).unwrap().depends, vec![]);
        let mut index = String::new();
        p.write_index_header(&mut index);
        assert_eq!(index.lines().filter(|l| l.starts_with('T')).count(), 1);
        assert!(!index.lines().any(|l| l.starts_with("license")));
    }

    #[test]
    fn a_sanitised_key_never_becomes_a_field() {
        // Found by fuzzing (fuzz/fuzz_targets/pkginfo.rs): the unknown key came back as
        // provider_priority = 363 once written and read again.
        let p = PackageInfo::parse_pkginfo(
            "pkgname = a\nprovider_priority = 900\nprovider\x1fpriority = 363\nx y = kept\n",
        )
        .unwrap();
        assert_eq!(p.provider_priority, Some(900));
        let again = PackageInfo::parse_pkginfo(&p.to_pkginfo()).unwrap();
        assert_eq!(again.provider_priority, Some(900));
        assert_eq!(again.extra, vec![("x_y".into(), "kept".into())]);
    }

    #[test]
    fn bad_lines_are_named() {
        let err = parse_index("P:a\nV:1\nbogus\n").unwrap_err();
        assert!(err.to_string().contains("line 3"), "{err}");
        let err = parse_index("P:a\nV:1\nZ:x\n").unwrap_err();
        assert!(matches!(err, InfoError::UnknownField { field: 'Z', .. }));
        assert!(parse_index("P:a\nV:1\nz:ignored\n").is_ok());
    }

    proptest::proptest! {
        #[test]
        fn garbage_never_panics(s in "\\PC{0,200}") {
            let _ = parse_index(&s);
            let _ = PackageInfo::parse_pkginfo(&s);
        }
    }
}
