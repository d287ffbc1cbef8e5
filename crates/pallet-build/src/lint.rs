//! melange's lint rules: those that read a package's files (run during every build, where a
//! failing *required* rule fails the build and the others warn, and on finished `.apk`
//! files), and those that need only the configuration (`pallet pkg lint FILE.yaml`).
//!
//! Which rules run, and how seriously, is a [`Policy`]: melange's `--lint-require` and
//! `--lint-warn` lists (each defaults to the rules marked so), with a package's
//! `checks.disabled` moving rules from the first list to the second.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use crate::compile::Configuration;

mod content;

/// How much a rule matters.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Require,
    Warn,
    Ignore,
}

/// One finding.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Finding {
    pub rule: &'static str,
    pub severity: Severity,
    pub package: String,
    /// melange's message (its first line, for the rules it words on several).
    pub message: String,
    /// The items melange lists under the message: paths, `path (arch)`, duplicate sets.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub details: Vec<String>,
    /// melange's advice for the rule (its `Explain`).
    #[serde(skip_serializing_if = "str::is_empty")]
    pub explain: &'static str,
}

/// What a package rule sees of one file.
#[derive(Clone, Debug)]
pub struct Entry {
    pub path: String,
    pub is_dir: bool,
    pub is_symlink: bool,
    pub mode: u32,
    pub size: u64,
}

/// The package rules: (name, default severity).
pub const PACKAGE_RULES: &[(&str, Severity)] = &[
    ("dev", Severity::Require),
    ("infodir", Severity::Require),
    ("libtool/la-files", Severity::Require),
    ("setuidgid", Severity::Require),
    ("tempdir", Severity::Require),
    ("usrmerge", Severity::Require),
    ("varempty", Severity::Require),
    ("worldwrite", Severity::Require),
    ("binaryarch", Severity::Warn),
    ("cudaruntimelib", Severity::Warn),
    ("dll", Severity::Warn),
    ("duplicate", Severity::Warn),
    ("dylib", Severity::Warn),
    ("lddcheck", Severity::Warn),
    ("maninfo", Severity::Warn),
    ("nonlinux", Severity::Warn),
    ("object", Severity::Warn),
    ("opt", Severity::Warn),
    ("pkgconf", Severity::Warn),
    ("python/docs", Severity::Warn),
    ("python/multiple", Severity::Warn),
    ("python/test", Severity::Warn),
    ("sbom", Severity::Warn),
    ("srv", Severity::Warn),
    ("staticarchive", Severity::Warn),
    ("strip", Severity::Warn),
    ("unsupportedarch", Severity::Warn),
    ("usrlocal", Severity::Warn),
    ("documentation", Severity::Ignore),
    ("empty", Severity::Ignore),
];

/// melange's advice per rule, shown with a finding.
fn explain(rule: &str) -> &'static str {
    match rule {
        "dev" => {
            "If this package is creating /dev nodes, it should use udev instead; otherwise, remove any files in /dev"
        }
        "documentation" | "maninfo" => "Place documentation into a separate package or remove it",
        "opt" | "srv" | "usrlocal" => "This package should be a -compat package",
        "object" => "This package contains intermediate object files (.o files)",
        "sbom" => "Remove any files in /var/lib/db/sbom from the package",
        "setuidgid" => "Unset the setuid/setgid bit on the relevant files, or remove this linter",
        "tempdir" => {
            "Remove any offending files in temporary dirs in the pipeline, or add a /usr/lib/tmpfiles.d/ snippet in the case of dirs under /run/"
        }
        "varempty" => "Remove any offending files in /var/empty in the pipeline",
        "worldwrite" => {
            "Change the permissions of any permissive files in the package, disable the linter, or make this a -compat package"
        }
        "strip" => "Properly strip all binaries in the pipeline",
        "infodir" => "Remove /usr/share/info/dir from the package (run split/infodir)",
        "empty" => {
            "Verify that this package is supposed to be empty; if it is, disable this linter; otherwise check the build"
        }
        "python/docs" => "Remove all docs directories from the package",
        "python/multiple" => {
            "Split this package up into multiple packages and verify you are not improperly using pip install"
        }
        "python/test" => "Remove all test directories from the package",
        "pkgconf" => {
            "This package provides files in a pkgconfig directory, please add the pkgconf test pipeline"
        }
        "lddcheck" => {
            "This package provides shared object files, please add the ldd-check test pipeline"
        }
        "usrmerge" => "Move binary to /usr/bin",
        "cudaruntimelib" => {
            "CUDA driver-specific libraries should be passed into the container by the host. Installing them in an image could override the host libraries and break GPU support. If this library is needed for build-time linking or ldd-check tests, please use a package containing a stub library instead. For libcuda.so, use nvidia-cuda-cudart-$cuda_version. For libnvidia-ml.so, use nvidia-cuda-nvml-dev-$cuda_version."
        }
        "dll" => "This package contains Windows libraries",
        "dylib" => "This package contains macOS libraries",
        "nonlinux" => "This package contains references to non-Linux paths",
        "unsupportedarch" => {
            "This package contains references to unsupported architectures (only aarch64/arm64 and amd64/x86_64 are supported)"
        }
        "binaryarch" => {
            "This package contains binaries compiled for unsupported architectures (only aarch64/arm64 and amd64/x86_64 binaries are supported)"
        }
        "staticarchive" => "This package contains static archives (.a files)",
        "libtool/la-files" => {
            "Remove libtool archive (.la) files from the package, or disable this linter if they are required"
        }
        "duplicate" => {
            "This package contains files with the same name and content in different directories (consider symlinking)"
        }
        _ => "",
    }
}

/// A rule name no linter answers to (melange: `unknown linter: "NAME"`).
#[derive(Debug, thiserror::Error)]
pub enum LintError {
    #[error("unknown linter: {0:?}")]
    UnknownRule(String),
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error(
        "--persist-lint-results: {full:?} for {arch:?} is not a plain file name, so no results file is named after it"
    )]
    NotAFileName { full: String, arch: String },
    #[error("writing {path}: {source}")]
    Write {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Every name must be a package rule.
pub fn check_rules<S: AsRef<str>>(names: &[S]) -> Result<(), LintError> {
    for n in names {
        let n = n.as_ref();
        if !PACKAGE_RULES.iter().any(|(r, _)| *r == n) {
            return Err(LintError::UnknownRule(n.to_string()));
        }
    }
    Ok(())
}

/// Which package rules run: those listed in `require` fail the build (or `pkg lint`), those
/// in `warn` only report; the others do not run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Policy {
    pub require: Vec<String>,
    pub warn: Vec<String>,
}

impl Default for Policy {
    /// melange's defaults: every rule marked require, and every rule marked warn.
    fn default() -> Self {
        let of = |s| {
            let mut v: Vec<String> = PACKAGE_RULES
                .iter()
                .filter(|(_, d)| *d == s)
                .map(|(r, _)| r.to_string())
                .collect();
            v.sort();
            v
        };
        Policy {
            require: of(Severity::Require),
            warn: of(Severity::Warn),
        }
    }
}

impl Policy {
    /// melange's `--lint-require` and `--lint-warn`: a list given replaces that list's
    /// default (values may be comma-separated, as cobra's string slices are); every name
    /// must be a rule.
    pub fn from_flags(
        require: Option<&[String]>,
        warn: Option<&[String]>,
    ) -> Result<Policy, LintError> {
        let split = |v: &[String]| -> Vec<String> {
            v.iter()
                .flat_map(|s| s.split(','))
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(String::from)
                .collect()
        };
        let d = Policy::default();
        let p = Policy {
            require: require.map(split).unwrap_or(d.require),
            warn: warn.map(split).unwrap_or(d.warn),
        };
        check_rules(&p.require)?;
        check_rules(&p.warn)?;
        Ok(p)
    }

    /// The policy for one package: its `checks.disabled` rules are warnings, not
    /// requirements (and run as warnings even when not otherwise listed).
    pub fn for_package(&self, disabled: &[String]) -> Policy {
        let mut warn = self.warn.clone();
        for d in disabled {
            if !warn.contains(d) {
                warn.push(d.clone());
            }
        }
        Policy {
            require: self
                .require
                .iter()
                .filter(|r| !disabled.contains(r))
                .cloned()
                .collect(),
            warn,
        }
    }

    /// How `rule` runs, if at all.
    pub fn severity(&self, rule: &str) -> Option<Severity> {
        if self.require.iter().any(|r| r == rule) {
            Some(Severity::Require)
        } else if self.warn.iter().any(|r| r == rule) {
            Some(Severity::Warn)
        } else {
            None
        }
    }
}

/// The bytes of a package's regular files, for the rules that look inside them.
pub trait Contents {
    /// The file at `path` (a regular file of the package), or `None` when unknown.
    fn read(&self, path: &str) -> Option<Vec<u8>>;
    /// The SHA-256 of the file at `path` (for duplicate).
    fn sha256(&self, path: &str) -> Option<[u8; 32]> {
        use sha2::Digest;
        self.read(path).map(|d| sha2::Sha256::digest(&d).into())
    }
    /// Whether file contents can be had at all; the content rules are skipped when not.
    fn available(&self) -> bool {
        true
    }
}

/// No contents: the content rules (binaryarch, duplicate, strip) are skipped.
pub struct NoContents;

impl Contents for NoContents {
    fn read(&self, _: &str) -> Option<Vec<u8>> {
        None
    }
    fn available(&self) -> bool {
        false
    }
}

/// The files of a staged tree.
pub struct DirContents<'a>(pub &'a Path);

impl Contents for DirContents<'_> {
    fn read(&self, path: &str) -> Option<Vec<u8>> {
        let p = self.0.join(path);
        // Only the tree's own regular files, never through a link.
        let md = std::fs::symlink_metadata(&p).ok()?;
        md.is_file().then(|| std::fs::read(&p).ok()).flatten()
    }
}

impl Contents for BTreeMap<String, Vec<u8>> {
    fn read(&self, path: &str) -> Option<Vec<u8>> {
        self.get(path).cloned()
    }
}

/// What [`lint_apk`] keeps of a package's files while streaming it: the bytes of ELF files
/// the ELF rules look at, and the digest of every file duplicate looks at.
#[derive(Default)]
struct ApkContents {
    elf: BTreeMap<String, Vec<u8>>,
    sha256: BTreeMap<String, [u8; 32]>,
}

impl Contents for ApkContents {
    fn read(&self, path: &str) -> Option<Vec<u8>> {
        self.elf.get(path).cloned()
    }
    fn sha256(&self, path: &str) -> Option<[u8; 32]> {
        self.sha256.get(path).copied()
    }
}

/// What the configuration says of a package's tests, for lddcheck and pkgconf.
#[derive(Clone, Copy, Debug)]
pub enum Tests<'a> {
    /// Not known: the two rules are skipped.
    Unknown,
    /// No configuration at all (an `.apk` without `.melange.yaml`): melange reports that.
    NoConfiguration,
    /// The `uses:` of the package's test pipeline steps.
    Uses(&'a [String]),
}

/// One package to lint.
pub struct Target<'a> {
    pub name: &'a str,
    pub files: &'a [Entry],
    pub contents: &'a dyn Contents,
    /// The package's architecture as apk names it (`x86_64`): binaryarch also reports ELF
    /// files built for another one.
    pub arch: Option<&'a str>,
    pub tests: Tests<'a>,
}

fn under(path: &str, dir: &str) -> bool {
    path.strip_prefix(dir).is_some_and(|r| r.starts_with('/'))
}

/// Run the package rules `policy` names on `target`.
pub fn lint(target: &Target, policy: &Policy) -> Vec<Finding> {
    let mut out = vec![];
    let pkg = target.name;
    let files = target.files;
    let is = |s: &str| pkg.ends_with(s);
    let compat = is("-compat");
    let dev = is("-dev");
    for (rule, _) in PACKAGE_RULES {
        let Some(severity) = policy.severity(rule) else {
            continue;
        };
        if let Some((message, details)) = content::check(rule, target) {
            out.push(Finding {
                rule,
                severity,
                package: pkg.to_string(),
                message,
                details,
                explain: explain(rule),
            });
            continue;
        }
        if content::RULES.contains(rule) {
            continue;
        }
        let mut hits: Vec<&str> = vec![];
        for f in files {
            let p = f.path.as_str();
            let file = !f.is_dir;
            let regular = file && !f.is_symlink;
            let hit = match *rule {
                "dev" => file && under(p, "dev"),
                "infodir" => under(p, "usr/share/info/dir") || (file && p == "usr/share/info/dir"),
                "libtool/la-files" => regular && p.ends_with(".la"),
                "setuidgid" => regular && f.mode & 0o7000 != 0,
                "tempdir" => {
                    (file && (under(p, "tmp") || under(p, "var/tmp") || under(p, "run")))
                        || under(p, "var/run")
                }
                "usrmerge" => ["bin", "sbin", "lib", "lib64", "usr/sbin"]
                    .iter()
                    .any(|d| under(p, d) || (p == *d && f.is_dir)),
                "varempty" => file && under(p, "var/empty"),
                "worldwrite" => regular && f.mode & 0o002 != 0,
                "dll" => !dev && regular && p.ends_with(".dll"),
                "dylib" => !dev && regular && p.ends_with(".dylib"),
                "maninfo" => {
                    !is("-doc") && file && (under(p, "usr/share/man") || under(p, "usr/share/info"))
                }
                "object" => regular && p.ends_with(".o"),
                "opt" => !compat && under(p, "opt"),
                "sbom" => file && under(p, "var/lib/db/sbom") && !p.ends_with(".spdx.json"),
                "srv" => !compat && under(p, "srv"),
                "staticarchive" => !dev && !is("-static") && regular && p.ends_with(".a"),
                "usrlocal" => !compat && under(p, "usr/local"),
                "cudaruntimelib" => {
                    let base = p.rsplit('/').next().unwrap_or(p);
                    under(p, "usr/lib")
                        && (base.starts_with("libcuda.so") || base.starts_with("libnvidia-ml.so"))
                }
                "nonlinux" => {
                    let l = p.to_ascii_lowercase();
                    ["darwin", "macos", "osx", "windows", "win32", "win64"]
                        .iter()
                        .any(|w| l.split(['/', '-', '_', '.']).any(|c| c == *w))
                }
                "documentation" => {
                    !is("-doc") && file && {
                        let b = p.rsplit('/').next().unwrap_or(p).to_ascii_uppercase();
                        b.starts_with("README")
                            || b.starts_with("TODO")
                            || b.starts_with("CREDITS")
                            || b.ends_with(".MD")
                            || b.ends_with(".RST")
                    }
                }
                _ => false,
            };
            if hit {
                hits.push(p);
            }
        }
        if *rule == "empty"
            && !files
                .iter()
                .any(|f| !f.is_dir && !under(&f.path, "var/lib/db/sbom"))
        {
            hits.push("(no files)");
        }
        if !hits.is_empty() {
            let shown: Vec<&str> = hits.iter().take(5).copied().collect();
            out.push(Finding {
                rule,
                severity,
                package: pkg.to_string(),
                message: format!(
                    "{}{}",
                    shown.join(", "),
                    if hits.len() > 5 {
                        format!(" and {} more", hits.len() - 5)
                    } else {
                        String::new()
                    }
                ),
                details: hits.iter().map(|h| h.to_string()).collect(),
                explain: explain(rule),
            });
        }
    }
    out
}

/// Run the package rules on a package's file list alone (no contents, no configuration:
/// binaryarch, duplicate, strip, lddcheck and pkgconf are skipped). `disabled` (from
/// `checks.disabled`) turns a required rule into a warning; `enabled` runs more rules
/// (ignored ones included) as warnings.
pub fn lint_package(
    pkg: &str,
    files: &[Entry],
    disabled: &[String],
    enabled: &[String],
) -> Vec<Finding> {
    let mut policy = Policy::default();
    for e in enabled {
        if policy.severity(e).is_none() {
            policy.warn.push(e.clone());
        }
    }
    lint_package_with(pkg, files, &policy, disabled)
}

/// [`lint_package`] under a given policy (`melange lint --lint-require/--lint-warn`).
pub fn lint_package_with(
    pkg: &str,
    files: &[Entry],
    policy: &Policy,
    disabled: &[String],
) -> Vec<Finding> {
    lint(
        &Target {
            name: pkg,
            files,
            contents: &NoContents,
            arch: None,
            tests: Tests::Unknown,
        },
        &policy.for_package(disabled),
    )
}

/// The files of a staged tree, for [`lint`].
pub fn entries_of(root: &std::path::Path) -> std::io::Result<Vec<Entry>> {
    use std::os::unix::fs::PermissionsExt;
    let mut out = vec![];
    for e in walkdir::WalkDir::new(root).min_depth(1).sort_by_file_name() {
        let e = e.map_err(std::io::Error::other)?;
        let md = e.path().symlink_metadata()?;
        out.push(Entry {
            path: e
                .path()
                .strip_prefix(root)
                .expect("under root")
                .to_string_lossy()
                .into_owned(),
            is_dir: md.is_dir(),
            is_symlink: md.file_type().is_symlink(),
            mode: md.permissions().mode() & 0o7777,
            size: md.len(),
        });
    }
    Ok(out)
}

/// How a build lints its packages: the policy (melange's `--lint-require` and
/// `--lint-warn`) and the `uses:` of each package's test pipeline, by package name.
#[derive(Clone, Debug, Default)]
pub struct BuildLint {
    pub policy: Policy,
    pub tests: BTreeMap<String, Vec<String>>,
}

impl BuildLint {
    /// Lint the staged tree of `package` (architecture `arch`, as apk names it), its
    /// `checks.disabled` rules downgraded to warnings. A disabled name that is no rule is an
    /// error, as in melange.
    pub fn lint_dir(
        &self,
        root: &Path,
        package: &str,
        arch: &str,
        disabled: &[String],
    ) -> Result<Vec<Finding>, LintError> {
        check_rules(disabled)?;
        let files = entries_of(root)?;
        let none = vec![];
        let tests = self.tests.get(package).unwrap_or(&none);
        Ok(lint(
            &Target {
                name: package,
                files: &files,
                contents: &DirContents(root),
                arch: Some(arch),
                tests: Tests::Uses(tests),
            },
            &self.policy.for_package(disabled),
        ))
    }
}

/// The `uses:` of the test steps of `package` in a melange configuration's text (the
/// `.melange.yaml` of a package); `None` when it cannot be read.
fn tests_in_yaml(yaml: &str, package: &str) -> Option<Vec<String>> {
    #[derive(serde::Deserialize, Default)]
    struct Step {
        #[serde(default)]
        uses: Option<String>,
    }
    #[derive(serde::Deserialize, Default)]
    struct Test {
        #[serde(default)]
        pipeline: Option<Vec<Step>>,
    }
    #[derive(serde::Deserialize, Default)]
    struct Named {
        #[serde(default)]
        name: Option<String>,
        #[serde(default)]
        test: Option<Test>,
    }
    #[derive(serde::Deserialize, Default)]
    struct Config {
        #[serde(default)]
        package: Option<Named>,
        #[serde(default)]
        test: Option<Test>,
        #[serde(default)]
        subpackages: Option<Vec<Named>>,
    }
    let c: Config = serde_saphyr::from_str(yaml).ok()?;
    let uses = |t: Option<Test>| -> Vec<String> {
        t.and_then(|t| t.pipeline)
            .unwrap_or_default()
            .into_iter()
            .filter_map(|s| s.uses)
            .collect()
    };
    if c.package.as_ref().and_then(|p| p.name.as_deref()) == Some(package) {
        return Some(uses(c.test));
    }
    let sub = c
        .subpackages
        .unwrap_or_default()
        .into_iter()
        .find(|s| s.name.as_deref() == Some(package));
    Some(sub.map(|s| uses(s.test)).unwrap_or_default())
}

/// What [`lint_apk`] read: the package's name, version and architecture, and the findings.
#[derive(Clone, Debug)]
pub struct ApkLint {
    pub name: String,
    pub version: String,
    pub arch: String,
    pub findings: Vec<Finding>,
}

/// melange's `lint` of a finished package: every rule `policy` names, on the files of the
/// `.apk` read from `r`, with its `.melange.yaml` for lddcheck and pkgconf.
pub fn lint_apk(r: impl std::io::Read, policy: &Policy) -> Result<ApkLint, LintError> {
    use pallet_apk_stream::tarw::Kind;
    let mut files = vec![];
    let mut contents = ApkContents::default();
    let mut hardlinks = vec![];
    let meta =
        pallet_apk_stream::read_apk(r, &pallet_apk_stream::ReadOptions::default(), |e, data| {
            files.push(Entry {
                path: e.path.clone(),
                is_dir: e.kind == Kind::Dir,
                is_symlink: e.kind == Kind::Symlink,
                mode: e.mode & 0o7777,
                size: e.size,
            });
            if e.kind == Kind::HardLink {
                hardlinks.push((e.path.clone(), e.link.clone()));
            } else if e.kind == Kind::File {
                let mut buf = vec![];
                data.read_to_end(&mut buf)?;
                if content::hashed(e.size) {
                    use sha2::Digest;
                    contents
                        .sha256
                        .insert(e.path.clone(), sha2::Sha256::digest(&buf).into());
                }
                if content::elf_candidate(&e.path, e.mode, e.size) && crate::sca::elf::is_elf(&buf)
                {
                    contents.elf.insert(e.path.clone(), buf);
                }
            }
            Ok(())
        })
        .map_err(|e| LintError::Io(std::io::Error::other(e.to_string())))?;
    // A hard link is the file it names (tar carries its data once).
    for (path, target) in hardlinks {
        let size = files.iter().find(|f| f.path == target).map(|f| f.size);
        if let Some(f) = files.iter_mut().find(|f| f.path == path) {
            f.size = size.unwrap_or(f.size);
        }
        if let Some(h) = contents.sha256.get(&target).copied() {
            contents.sha256.insert(path.clone(), h);
        }
        if let Some(d) = contents.elf.get(&target).cloned() {
            contents.elf.insert(path, d);
        }
    }
    let info = meta.info;
    let yaml = meta
        .scripts
        .iter()
        .find(|(n, _)| n == ".melange.yaml")
        .map(|(_, d)| String::from_utf8_lossy(d).into_owned());
    let tests = yaml.as_deref().and_then(|y| tests_in_yaml(y, &info.name));
    let findings = lint(
        &Target {
            name: &info.name,
            files: &files,
            contents: &contents,
            arch: (!info.arch.is_empty()).then_some(info.arch.as_str()),
            tests: match &tests {
                Some(t) => Tests::Uses(t),
                None => Tests::NoConfiguration,
            },
        },
        policy,
    );
    Ok(ApkLint {
        name: info.name.clone(),
        version: info.version.clone(),
        arch: info.arch.clone(),
        findings,
    })
}

/// melange's `--persist-lint-results` file: `OUT/ARCH/lint-FULL.json` (FULL is
/// `NAME-VERSION-rEPOCH`) holding `{"package_name", "findings": {rule: [{message, explain,
/// details}]}}`, written atomically. The names come from a package or a recipe, so one that
/// is not a plain file name is refused rather than allowed to lead the file out of `out_dir`.
pub fn persist(
    out_dir: &Path,
    arch: &str,
    full: &str,
    findings: &[Finding],
) -> Result<std::path::PathBuf, LintError> {
    let plain =
        |s: &str| !s.is_empty() && s != "." && !s.contains("..") && !s.contains(['/', '\\', '\0']);
    if !plain(arch) || !plain(full) {
        return Err(LintError::NotAFileName {
            full: full.into(),
            arch: arch.into(),
        });
    }
    let mut by_rule = serde_json::Map::new();
    for f in findings {
        let mut one = serde_json::Map::new();
        one.insert("message".into(), f.message.clone().into());
        if !f.explain.is_empty() {
            one.insert("explain".into(), f.explain.into());
        }
        if !f.details.is_empty() {
            one.insert("details".into(), serde_json::json!({ "paths": f.details }));
        }
        by_rule
            .entry(f.rule.to_string())
            .or_insert_with(|| serde_json::json!([]))
            .as_array_mut()
            .expect("a list")
            .push(one.into());
    }
    let doc = serde_json::json!({"package_name": full, "findings": by_rule});
    let dir = out_dir.join(arch);
    let path = dir.join(format!("lint-{full}.json"));
    std::fs::create_dir_all(&dir)
        .and_then(|_| {
            pallet_atomic::write(
                &path,
                serde_json::to_string_pretty(&doc).expect("JSON").as_bytes(),
            )
        })
        .map_err(|source| LintError::Write {
            path: path.clone(),
            source,
        })?;
    Ok(path)
}

/// Rules that need only the configuration.
pub fn lint_config(cfg: &Configuration) -> Vec<Finding> {
    let mut out = vec![];
    let pkg = cfg.package.name.clone();
    let mut push = |rule: &'static str, severity, message: String| {
        out.push(Finding {
            rule,
            severity,
            package: pkg.clone(),
            message,
            details: vec![],
            explain: "",
        })
    };
    if !pallet_apk_types::version::is_valid(&format!(
        "{}-r{}",
        cfg.package.version, cfg.package.epoch
    )) {
        push(
            "valid-version",
            Severity::Require,
            format!("'{}' is not a valid APK version", cfg.package.version),
        );
    }
    if cfg.package.copyright.is_empty()
        || cfg
            .package
            .copyright
            .iter()
            .any(|c| c.license.trim().is_empty())
    {
        push(
            "valid-copyright",
            Severity::Warn,
            "every package needs copyright entries with a license".into(),
        );
    }
    if cfg.package.description.trim().is_empty() {
        push(
            "package-description",
            Severity::Warn,
            "package.description is empty".into(),
        );
    }
    let mut seen: BTreeMap<&str, usize> = BTreeMap::new();
    for p in &cfg.environment.contents.packages {
        *seen.entry(p.as_str()).or_default() += 1;
    }
    for (p, n) in seen.iter().filter(|(_, n)| **n > 1) {
        push(
            "duplicated-package-in-environment",
            Severity::Warn,
            format!("{p} is listed {n} times"),
        );
    }
    for (name, list) in [
        ("runtime", &cfg.package.dependencies.runtime),
        ("provides", &cfg.package.dependencies.provides),
    ] {
        let unique: BTreeSet<&String> = list.iter().collect();
        if unique.len() != list.len() {
            push(
                "no-repeated-deps",
                Severity::Warn,
                format!("dependencies.{name} repeats an entry"),
            );
        }
    }
    let visit = |steps: &[crate::compile::Pipeline], out: &mut Vec<(String, String)>| {
        fn walk(steps: &[crate::compile::Pipeline], out: &mut Vec<(String, String)>) {
            for s in steps {
                if let Some(u) = &s.uses {
                    match u.as_str() {
                        "fetch" => {
                            let uri = s.with.get("uri").cloned().unwrap_or_default();
                            if !uri.starts_with("https://") && !uri.contains("${{") {
                                out.push((
                                    "valid-pipeline-fetch-uri".into(),
                                    format!("fetch uri '{uri}' is not https"),
                                ));
                            }
                            if !s.with.contains_key("expected-sha256")
                                && !s.with.contains_key("expected-sha512")
                            {
                                out.push((
                                    "valid-pipeline-fetch-digest".into(),
                                    "fetch without expected-sha256 or expected-sha512".into(),
                                ));
                            }
                        }
                        "git-checkout" if !s.with.contains_key("expected-commit") => {
                            out.push((
                                "valid-pipeline-git-checkout-commit".into(),
                                "git-checkout without expected-commit".into(),
                            ));
                        }
                        _ => {}
                    }
                }
                walk(&s.pipeline, out);
            }
        }
        walk(steps, out);
    };
    let mut found = vec![];
    visit(&cfg.pipeline, &mut found);
    for sp in &cfg.subpackages {
        visit(&sp.pipeline, &mut found);
    }
    for (rule, msg) in found {
        let rule: &'static str = match rule.as_str() {
            "valid-pipeline-fetch-uri" => "valid-pipeline-fetch-uri",
            "valid-pipeline-fetch-digest" => "valid-pipeline-fetch-digest",
            _ => "valid-pipeline-git-checkout-commit",
        };
        push(rule, Severity::Warn, msg);
    }
    if let Some(u) = &cfg.update
        && !u.enabled
        && u.exclude_reason.as_deref().is_none_or(str::is_empty)
    {
        push(
            "update-disabled-reason",
            Severity::Warn,
            "update is disabled without an exclude-reason".into(),
        );
    }
    out
}

#[cfg(test)]
mod tests;
