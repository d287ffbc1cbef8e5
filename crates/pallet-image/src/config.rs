//! apko's image configuration (`pkg/build/types`), strict as apko is: unknown keys are errors
//! with file, line and column. Scalars that fill string fields keep their text (`run-as:
//! 10000`), and `permissions` read `0o755` and `0755` as octal like Go's yaml.v3.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Deserializer, Serialize};

#[derive(Debug, Default, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct ImageConfiguration {
    #[serde(default, deserialize_with = "nullable")]
    pub contents: Contents,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entrypoint: Option<Entrypoint>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cmd: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop_signal: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub work_dir: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub accounts: Option<Accounts>,
    #[serde(
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub archs: Vec<String>,
    #[serde(
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "BTreeMap::is_empty"
    )]
    pub environment: BTreeMap<String, String>,
    #[serde(
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub paths: Vec<PathMutation>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vcs_url: Option<String>,
    #[serde(
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "BTreeMap::is_empty"
    )]
    pub annotations: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub include: Option<String>,
    #[serde(
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub volumes: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub layering: Option<Layering>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub format: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub certificates: Option<Certificates>,
    /// apko's `os-release:`, removed from apko in 2024-07 but still in many files: read with a
    /// deprecation warning, written to `/etc/os-release` only when no package ships one, and
    /// never echoed (apko today has no such key).
    #[serde(default, rename = "os-release", skip_serializing)]
    pub os_release: Option<OsRelease>,
}

/// The legacy `os-release:` block.
#[derive(Debug, Default, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct OsRelease {
    #[serde(default, deserialize_with = "nullable")]
    pub id: String,
    #[serde(default, deserialize_with = "nullable")]
    pub name: String,
    #[serde(default, deserialize_with = "nullable")]
    pub pretty_name: String,
    #[serde(default, deserialize_with = "nullable")]
    pub version_id: String,
    #[serde(default, deserialize_with = "nullable")]
    pub home_url: String,
    #[serde(default, deserialize_with = "nullable")]
    pub bug_report_url: String,
}

impl OsRelease {
    /// The `/etc/os-release` text, in the order old apko wrote it; empty values are left out,
    /// and values are quoted with line breaks removed so none can add a line.
    pub fn render(&self) -> String {
        let mut out = String::new();
        for (k, v) in [
            ("ID", &self.id),
            ("NAME", &self.name),
            ("PRETTY_NAME", &self.pretty_name),
            ("VERSION_ID", &self.version_id),
            ("HOME_URL", &self.home_url),
            ("BUG_REPORT_URL", &self.bug_report_url),
        ] {
            if v.is_empty() {
                continue;
            }
            let clean: String = v
                .chars()
                .filter(|c| !c.is_control())
                .map(|c| if c == '"' { '\'' } else { c })
                .collect();
            if k == "ID" || k == "VERSION_ID" {
                out.push_str(&format!("{k}={clean}\n"));
            } else {
                out.push_str(&format!("{k}=\"{clean}\"\n"));
            }
        }
        out
    }
}

/// The known key nearest to an unknown one in a serde "unknown field `x`, expected one of a,
/// b" message, as a hint to append; `None` when nothing is close enough to be a typo.
pub fn did_you_mean(message: &str) -> Option<String> {
    let rest = message.split("unknown field `").nth(1)?;
    let (unknown, rest) = rest.split_once('`')?;
    let list = rest.split("expected one of ").nth(1)?;
    let list = list.lines().next().unwrap_or("");
    let known = list
        .split(',')
        .map(|k| k.trim().trim_matches('`').trim())
        .filter(|k| !k.is_empty());
    let (best, d) = known
        .map(|k| (k, edit_distance(&unknown.to_lowercase(), &k.to_lowercase())))
        .min_by_key(|(_, d)| *d)?;
    // Close enough to be a typo: up to a third of the word, at least one edit.
    (d <= (unknown.len() / 3).max(1)
        || unknown.replace(['-', '_'], "") == best.replace(['-', '_'], ""))
    .then(|| format!("did you mean `{best}`?"))
}

/// Levenshtein distance over characters.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let sub = prev[j] + usize::from(ca != *cb);
            cur.push(sub.min(prev[j + 1] + 1).min(cur[j] + 1));
        }
        prev = cur;
    }
    prev[b.len()]
}

#[derive(Debug, Default, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Contents {
    #[serde(
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub repositories: Vec<String>,
    #[serde(
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub build_repositories: Vec<String>,
    #[serde(
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub runtime_repositories: Vec<String>,
    #[serde(
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub keyring: Vec<String>,
    #[serde(
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub runtime_keyring: Vec<NamedContent>,
    #[serde(
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub packages: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub baseimage: Option<BaseImage>,
}

#[derive(Debug, Default, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct NamedContent {
    pub name: String,
    pub content: String,
}

#[derive(Debug, Default, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct BaseImage {
    #[serde(default, deserialize_with = "nullable")]
    pub image: String,
    #[serde(default, deserialize_with = "nullable")]
    pub apkindex: String,
}

#[derive(Debug, Default, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Entrypoint {
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shell_fragment: Option<String>,
    #[serde(
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "BTreeMap::is_empty"
    )]
    pub services: BTreeMap<String, String>,
}

#[derive(Debug, Default, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Accounts {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_as: Option<String>,
    #[serde(
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub users: Vec<User>,
    #[serde(
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub groups: Vec<Group>,
}

#[derive(Debug, Default, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct User {
    pub username: String,
    pub uid: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gid: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shell: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub homedir: Option<String>,
}

#[derive(Debug, Default, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Group {
    pub groupname: String,
    pub gid: u32,
    #[serde(
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub members: Vec<String>,
}

#[derive(Debug, Default, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PathMutation {
    pub path: String,
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gid: Option<u32>,
    #[serde(
        default,
        deserialize_with = "octal",
        skip_serializing_if = "Option::is_none"
    )]
    pub permissions: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    #[serde(
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "std::ops::Not::not"
    )]
    pub recursive: bool,
}

#[derive(Debug, Default, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Layering {
    #[serde(default, deserialize_with = "nullable")]
    pub strategy: String,
    #[serde(default, deserialize_with = "nullable")]
    pub budget: u32,
}

#[derive(Debug, Default, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Certificates {
    #[serde(
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub additional: Vec<NamedContent>,
    #[serde(
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub providers: Vec<String>,
}

/// Parse a mode the way Go's yaml.v3 reads a `uint32`: `0o` or a leading `0` is octal.
pub fn parse_mode(s: &str) -> Option<u32> {
    let s = s.trim();
    if let Some(o) = s.strip_prefix("0o").or_else(|| s.strip_prefix("0O")) {
        return u32::from_str_radix(o, 8).ok();
    }
    if let Some(h) = s.strip_prefix("0x") {
        return u32::from_str_radix(h, 16).ok();
    }
    if s.len() > 1 && s.starts_with('0') {
        return u32::from_str_radix(&s[1..], 8).ok();
    }
    s.parse().ok()
}

/// A key whose value is empty (`packages:` followed only by comments, or `contents:` with
/// nothing under it) is the zero value (empty list, map, string or struct), as Go's YAML
/// decoder treats it.
fn nullable<'de, D: Deserializer<'de>, T: Deserialize<'de> + Default>(d: D) -> Result<T, D::Error> {
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

fn octal<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u32>, D::Error> {
    let s = String::deserialize(d)?;
    parse_mode(&s)
        .map(Some)
        .ok_or_else(|| serde::de::Error::custom(format!("'{s}' is not a file mode (e.g. 0o755)")))
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("{path}: {message}")]
    Invalid { path: PathBuf, message: String },
}

/// A loaded configuration with what it was read from.
#[derive(Debug, Clone)]
pub struct Loaded {
    pub config: ImageConfiguration,
    pub files: Vec<PathBuf>,
    /// Deprecations found while loading, each naming its file, for the caller to show.
    pub warnings: Vec<String>,
    /// `sha256-` + base64 of the SHA-256 of every byte read (includes too), like apko.
    pub checksum: String,
}

/// Load a configuration file, resolving `include` (searched beside the file, in the working
/// folder, then in `include_paths`) and validating it as apko does.
pub fn load(path: &Path, include_paths: &[PathBuf]) -> Result<Loaded, ConfigError> {
    let mut bytes = Vec::new();
    let mut files = Vec::new();
    let mut warnings = Vec::new();
    let config = load_rec(
        path,
        include_paths,
        &mut bytes,
        &mut files,
        0,
        &mut warnings,
    )?;
    validate(&config, path)?;
    use base64::Engine as _;
    use sha2::Digest as _;
    let checksum = format!(
        "sha256-{}",
        base64::engine::general_purpose::STANDARD.encode(sha2::Sha256::digest(&bytes))
    );
    Ok(Loaded {
        config,
        files,
        warnings,
        checksum,
    })
}

fn load_rec(
    path: &Path,
    include_paths: &[PathBuf],
    bytes: &mut Vec<u8>,
    files: &mut Vec<PathBuf>,
    depth: usize,
    warnings: &mut Vec<String>,
) -> Result<ImageConfiguration, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    bytes.extend_from_slice(text.as_bytes());
    files.push(path.to_path_buf());
    let mut cfg: ImageConfiguration = serde_saphyr::from_str(&text).map_err(|e| {
        let mut message = e.to_string();
        if let Some(hint) = did_you_mean(&message) {
            // The hint goes on the first line, which is what a terminal user reads.
            message = match message.split_once('\n') {
                Some((first, rest)) => format!("{first} ({hint})\n{rest}"),
                None => format!("{message} ({hint})"),
            };
        }
        ConfigError::Parse {
            path: path.to_path_buf(),
            message,
        }
    })?;
    if cfg.os_release.is_some() {
        warnings.push(format!(
            "{}: `os-release:` is deprecated (apko removed it in 2024); pallet writes /etc/os-release from it only when no package ships one: ship the file in a package instead",
            path.display()
        ));
    }
    if let Some(inc) = cfg.include.take() {
        if depth > 16 {
            return Err(ConfigError::Invalid {
                path: path.to_path_buf(),
                message: "include nesting is deeper than 16 (a loop?)".into(),
            });
        }
        let mut candidates = vec![PathBuf::from(&inc)];
        if let Some(dir) = path.parent() {
            candidates.insert(0, dir.join(&inc));
        }
        candidates.extend(include_paths.iter().map(|d| d.join(&inc)));
        let found = candidates.into_iter().find(|c| c.is_file()).ok_or_else(|| {
            ConfigError::Invalid {
                path: path.to_path_buf(),
                message: format!("include '{inc}' not found (searched beside the file, the working folder and --include-paths)"),
            }
        })?;
        let base = load_rec(&found, include_paths, bytes, files, depth + 1, warnings)?;
        cfg = merge(base, cfg);
    }
    Ok(cfg)
}

/// apko's `MergeInto`: the including file wins for scalars, lists concatenate (included
/// first), maps merge with the including file winning.
fn merge(base: ImageConfiguration, mut top: ImageConfiguration) -> ImageConfiguration {
    fn cat<T: Clone>(a: Vec<T>, b: Vec<T>) -> Vec<T> {
        let mut v = a;
        v.extend(b);
        v
    }
    let c = &mut top.contents;
    let b = base.contents;
    c.repositories = cat(b.repositories, std::mem::take(&mut c.repositories));
    c.build_repositories = cat(
        b.build_repositories,
        std::mem::take(&mut c.build_repositories),
    );
    c.runtime_repositories = cat(
        b.runtime_repositories,
        std::mem::take(&mut c.runtime_repositories),
    );
    c.keyring = cat(b.keyring, std::mem::take(&mut c.keyring));
    c.runtime_keyring = cat(b.runtime_keyring, std::mem::take(&mut c.runtime_keyring));
    c.packages = cat(b.packages, std::mem::take(&mut c.packages));
    c.baseimage = c.baseimage.take().or(b.baseimage);
    top.entrypoint = top.entrypoint.or(base.entrypoint);
    top.cmd = top.cmd.or(base.cmd);
    top.stop_signal = top.stop_signal.or(base.stop_signal);
    top.os_release = top.os_release.or(base.os_release);
    top.work_dir = top.work_dir.or(base.work_dir);
    top.accounts = match (base.accounts, top.accounts) {
        (Some(b), Some(mut t)) => {
            t.run_as = t.run_as.or(b.run_as);
            t.users = cat(b.users, t.users);
            t.groups = cat(b.groups, t.groups);
            Some(t)
        }
        (b, t) => t.or(b),
    };
    if top.archs.is_empty() {
        top.archs = base.archs;
    }
    for (k, v) in base.environment {
        top.environment.entry(k).or_insert(v);
    }
    top.paths = cat(base.paths, top.paths);
    top.vcs_url = top.vcs_url.or(base.vcs_url);
    for (k, v) in base.annotations {
        top.annotations.entry(k).or_insert(v);
    }
    top.volumes = cat(base.volumes, top.volumes);
    top.layering = top.layering.or(base.layering);
    top.format = top.format.or(base.format);
    top.certificates = top.certificates.or(base.certificates);
    top
}

fn validate(c: &ImageConfiguration, path: &Path) -> Result<(), ConfigError> {
    let bad = |message: String| {
        Err(ConfigError::Invalid {
            path: path.to_path_buf(),
            message,
        })
    };
    // Values that become lines or `:`-separated fields of generated files (passwd, group,
    // repositories): a line break or a `:` would add a user or a repository of the writer's
    // choosing.
    let field = |what: &str, v: &str, colon: bool| -> Result<(), ConfigError> {
        if v.chars().any(char::is_control) || (colon && v.contains(':')) {
            return bad(format!(
                "{what} {v:?} holds a line break, control character{} (it would add a line to a generated file)",
                if colon { " or ':'" } else { "" }
            ));
        }
        Ok(())
    };
    for r in c
        .contents
        .repositories
        .iter()
        .chain(&c.contents.build_repositories)
        .chain(&c.contents.runtime_repositories)
    {
        field("contents.repositories entry", r, false)?;
    }
    for k in &c.contents.keyring {
        field("contents.keyring entry", k, false)?;
    }
    for k in &c.contents.runtime_keyring {
        // The name becomes a file under etc/apk/keys/: one plain file name only.
        if k.name.is_empty()
            || k.name == "."
            || k.name == ".."
            || k.name.contains(['/', '\\'])
            || k.name.chars().any(char::is_control)
        {
            return bad(format!(
                "contents.runtime_keyring name {:?} must be a plain file name (it is written to etc/apk/keys/NAME)",
                k.name
            ));
        }
    }
    if let Some(a) = &c.accounts {
        for u in &a.users {
            field("accounts user name", &u.username, true)?;
            field(
                "accounts user homedir",
                u.homedir.as_deref().unwrap_or(""),
                true,
            )?;
            field(
                "accounts user shell",
                u.shell.as_deref().unwrap_or(""),
                true,
            )?;
        }
        for g in &a.groups {
            field("accounts group name", &g.groupname, true)?;
            for m in &g.members {
                field("accounts group member", m, true)?;
            }
        }
        for u in &a.users {
            if u.username.is_empty() {
                return bad("configured user has no username".into());
            }
            if u.uid == 0 {
                return bad(format!("configured user {} has UID 0", u.username));
            }
        }
        for g in &a.groups {
            if g.groupname.is_empty() {
                return bad("configured group has no groupname".into());
            }
        }
    }
    if let Some(cs) = &c.certificates {
        for a in &cs.additional {
            if a.name.is_empty() {
                return bad("configured additional certificate has no name".into());
            }
            // The name becomes a file name under usr/local/share/ca-certificates.
            if !cert_name_ok(&a.name) {
                return bad(format!(
                    "configured additional certificate {:?} has an invalid name, it must match ^[a-zA-Z0-9_-]+[a-zA-Z0-9_.-]*$",
                    a.name
                ));
            }
        }
    }
    // apko's conservative list for a base image (checked when the file is loaded).
    if c.contents.baseimage.is_some() {
        let e = c.entrypoint.as_ref();
        let set = |v: &Option<String>| v.as_deref().is_some_and(|v| !v.is_empty());
        let a = c.accounts.as_ref();
        if e.is_some_and(|e| {
            set(&e.kind) || set(&e.command) || set(&e.shell_fragment) || !e.services.is_empty()
        }) || set(&c.cmd)
            || set(&c.stop_signal)
            || set(&c.work_dir)
            || a.is_some_and(|a| set(&a.run_as) || !a.users.is_empty() || !a.groups.is_empty())
            || !c.environment.is_empty()
            || !c.paths.is_empty()
            || !c.annotations.is_empty()
        {
            return bad("when using base image, the only supported image specification are: contents, archs and includes (entrypoint, cmd, stop-signal, work-dir, accounts, environment, paths and annotations come from the base)".into());
        }
    }
    if let Some(l) = &c.layering
        && !l.strategy.is_empty()
        && l.strategy != "origin"
    {
        return bad(format!(
            "unknown layering strategy '{}' (only 'origin')",
            l.strategy
        ));
    }
    if let Some(f) = &c.format
        && !f.is_empty()
        && f != "tar"
        && f != "erofs"
    {
        return bad(format!("unknown format '{f}' (tar or erofs)"));
    }
    for a in &c.archs {
        if Arch::parse(a).is_none() {
            return bad(format!("unknown architecture '{a}'"));
        }
    }
    for p in &c.paths {
        if ![
            "directory",
            "empty-file",
            "hardlink",
            "symlink",
            "permissions",
        ]
        .contains(&p.kind.as_str())
        {
            return bad(format!("{}: unknown path type '{}'", p.path, p.kind));
        }
    }
    Ok(())
}

/// apko's `^[a-zA-Z0-9_-]+[a-zA-Z0-9_.-]*$` for certificate names: no leading dot, no slash.
fn cert_name_ok(n: &str) -> bool {
    let plain = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == '-';
    n.chars().next().is_some_and(plain) && n.chars().all(|c| plain(c) || c == '.')
}

/// An architecture, with apko's names and aliases.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Arch {
    X86,
    Amd64,
    Arm64,
    ArmV6,
    ArmV7,
    Loong64,
    Ppc64le,
    Riscv64,
    S390x,
}

impl Arch {
    pub const ALL: [Arch; 9] = [
        Arch::X86,
        Arch::Amd64,
        Arch::Arm64,
        Arch::ArmV6,
        Arch::ArmV7,
        Arch::Loong64,
        Arch::Ppc64le,
        Arch::Riscv64,
        Arch::S390x,
    ];

    pub fn parse(s: &str) -> Option<Arch> {
        Some(match s {
            "386" | "x86" | "i386" => Arch::X86,
            "amd64" | "x86_64" => Arch::Amd64,
            "arm64" | "aarch64" | "arm64/v8" => Arch::Arm64,
            "arm/v6" | "armhf" => Arch::ArmV6,
            "arm/v7" | "armv7" => Arch::ArmV7,
            "loong64" | "loongarch64" => Arch::Loong64,
            "ppc64le" => Arch::Ppc64le,
            "riscv64" => Arch::Riscv64,
            "s390x" => Arch::S390x,
            _ => return None,
        })
    }

    pub fn host() -> Arch {
        Arch::parse(std::env::consts::ARCH).unwrap_or(Arch::Amd64)
    }

    /// The APK name (`x86_64`), used for `$repo/$arch/` and `/etc/apk/arch`.
    pub fn apk(self) -> &'static str {
        match self {
            Arch::X86 => "x86",
            Arch::Amd64 => "x86_64",
            Arch::Arm64 => "aarch64",
            Arch::ArmV6 => "armhf",
            Arch::ArmV7 => "armv7",
            Arch::Loong64 => "loongarch64",
            Arch::Ppc64le => "ppc64le",
            Arch::Riscv64 => "riscv64",
            Arch::S390x => "s390x",
        }
    }

    /// OCI platform architecture and variant.
    pub fn oci(self) -> (&'static str, Option<&'static str>) {
        match self {
            Arch::X86 => ("386", None),
            Arch::Amd64 => ("amd64", None),
            Arch::Arm64 => ("arm64", Some("v8")),
            Arch::ArmV6 => ("arm", Some("v6")),
            Arch::ArmV7 => ("arm", Some("v7")),
            Arch::Loong64 => ("loong64", None),
            Arch::Ppc64le => ("ppc64le", None),
            Arch::Riscv64 => ("riscv64", None),
            Arch::S390x => ("s390x", None),
        }
    }

    /// The suffix apko puts on per-architecture docker tags (`/` becomes `_`).
    pub fn tag_suffix(self) -> String {
        match self.oci() {
            (a, Some(v)) if a == "arm" => format!("{a}_{v}"),
            (a, _) => a.to_string(),
        }
    }
}

/// Split a command line into words as a POSIX shell would (apko uses shlex).
pub fn split_words(s: &str) -> Result<Vec<String>, String> {
    shlex::split(s).ok_or_else(|| format!("cannot split '{s}' into words: unbalanced quotes"))
}

impl ImageConfiguration {
    /// The OCI `Entrypoint`: `shell-fragment` wins over `command`.
    pub fn entrypoint_argv(&self) -> Result<Vec<String>, String> {
        let Some(e) = &self.entrypoint else {
            return Ok(vec![]);
        };
        if e.kind.as_deref() == Some("service-bundle") {
            return Ok(vec!["/bin/s6-svscan".into(), "/sv".into()]);
        }
        if let Some(f) = e.shell_fragment.as_deref().filter(|f| !f.is_empty()) {
            return Ok(vec!["/bin/sh".into(), "-c".into(), f.to_string()]);
        }
        match &e.command {
            Some(c) if !c.is_empty() => split_words(c),
            _ => Ok(vec![]),
        }
    }

    pub fn cmd_argv(&self) -> Result<Vec<String>, String> {
        match &self.cmd {
            Some(c) if !c.is_empty() => split_words(c),
            _ => Ok(vec![]),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(y: &str) -> Result<ImageConfiguration, String> {
        serde_saphyr::from_str(y).map_err(|e| e.to_string())
    }

    #[test]
    fn scalars_keep_their_text_and_modes_are_octal() {
        let c = parse(
            "accounts:\n  run-as: 10000\nenvironment:\n  PORT: 3000\npaths:\n  - path: /a\n    type: directory\n    permissions: 0o755\n  - path: /b\n    type: directory\n    permissions: 0755\n",
        )
        .unwrap();
        assert_eq!(c.accounts.unwrap().run_as.as_deref(), Some("10000"));
        assert_eq!(c.environment["PORT"], "3000");
        assert_eq!(c.paths[0].permissions, Some(0o755));
        assert_eq!(c.paths[1].permissions, Some(0o755));
    }

    #[test]
    fn unknown_keys_name_line_and_column() {
        let err = parse("contents:\n  packages: [a]\n  pakages: [b]\n").unwrap_err();
        assert!(err.contains("pakages") && err.contains("line 3"), "{err}");
        let c = parse("os-release:\n  name: Acme\n  id: acme\n  version-id: \"1.0\"\n").unwrap();
        assert_eq!(
            c.os_release.unwrap().render(),
            "ID=acme\nNAME=\"Acme\"\nVERSION_ID=1.0\n"
        );
        let err = parse("os-release:\n  nmae: x\n").unwrap_err();
        assert!(err.contains("nmae"), "{err}");
        assert_eq!(
            did_you_mean("unknown field `pakages`, expected one of repositories, packages"),
            Some("did you mean `packages`?".into())
        );
        assert_eq!(
            did_you_mean("unknown field `entirely`, expected one of repositories, packages"),
            None
        );
    }

    #[test]
    fn values_that_would_add_lines_are_refused() {
        for (y, want) in [
            (
                "contents:\n  runtime_keyring:\n    - name: ../../etc/shadow\n      content: x\n",
                "plain file name",
            ),
            (
                "contents:\n  runtime_keyring:\n    - name: a/b.pub\n      content: x\n",
                "plain file name",
            ),
            (
                "contents:\n  repositories: [\"/r\\nhttps://evil.example/x\"]\n",
                "line break",
            ),
            (
                "accounts:\n  users:\n    - username: \"a\\nroot2::0:0::/:/bin/sh\"\n      uid: 5\n",
                "line break",
            ),
            (
                "accounts:\n  users:\n    - username: u\n      uid: 5\n      homedir: \"/h:0:0\"\n",
                "':'",
            ),
        ] {
            let c = parse(y).unwrap();
            let err = validate(&c, Path::new("x.yaml")).unwrap_err().to_string();
            assert!(err.contains(want) && err.contains("x.yaml"), "{y}: {err}");
        }
    }

    #[test]
    fn certificate_names_and_base_image_companions_are_checked_as_apko_does() {
        let cert = |name: &str| {
            format!("certificates:\n  additional:\n    - name: {name:?}\n      content: x\n")
        };
        for ok in ["corp", "Corp_CA-1.2", "-x", "_x.y"] {
            validate(&parse(&cert(ok)).unwrap(), Path::new("x.yaml")).unwrap();
        }
        for bad in ["", ".hidden", "a/b", "../x", "a b"] {
            let err = validate(&parse(&cert(bad)).unwrap(), Path::new("x.yaml"))
                .unwrap_err()
                .to_string();
            assert!(err.contains("additional certificate"), "{bad:?}: {err}");
        }
        let base = "contents:\n  baseimage:\n    image: b\n    apkindex: i\n  packages: [x]\narchs: [x86_64]\n";
        validate(&parse(base).unwrap(), Path::new("x.yaml")).unwrap();
        for extra in [
            "entrypoint:\n  command: /bin/sh\n",
            "cmd: x\n",
            "stop-signal: SIGTERM\n",
            "work-dir: /w\n",
            "accounts:\n  run-as: \"1\"\n",
            "environment:\n  A: b\n",
            "paths:\n  - path: /x\n    type: directory\n",
            "annotations:\n  a: b\n",
        ] {
            let err = validate(
                &parse(&format!("{base}{extra}")).unwrap(),
                Path::new("x.yaml"),
            )
            .unwrap_err()
            .to_string();
            assert!(
                err.contains("only supported image specification"),
                "{extra}: {err}"
            );
        }
    }

    #[test]
    fn empty_keys_are_zero_values() {
        let c = parse(
            "contents:\naccounts:\n  users:\n  groups:\n  run-as:\nenvironment:\nannotations:\npaths:\narchs:\n",
        )
        .unwrap();
        assert!(c.contents.packages.is_empty() && c.environment.is_empty());
        let c =
            parse("contents:\n  repositories:\n  keyring:\n  packages:\n    - busybox\n").unwrap();
        assert_eq!(c.contents.packages, ["busybox"]);
        // Still strict: an unknown key under an empty-able key is an error.
        assert!(parse("contents:\n  pakages:\n").is_err());
    }

    #[test]
    fn entrypoints() {
        let c = parse("entrypoint:\n  command: /bin/sh -c \"echo hi; id -u\"\n").unwrap();
        assert_eq!(
            c.entrypoint_argv().unwrap(),
            ["/bin/sh", "-c", "echo hi; id -u"]
        );
        let c = parse("entrypoint:\n  shell-fragment: echo $HOME\n  command: ignored\n").unwrap();
        assert_eq!(
            c.entrypoint_argv().unwrap(),
            ["/bin/sh", "-c", "echo $HOME"]
        );
    }

    #[test]
    fn arch_aliases() {
        assert_eq!(Arch::parse("amd64"), Arch::parse("x86_64"));
        assert_eq!(Arch::parse("arm64").unwrap().oci(), ("arm64", Some("v8")));
        assert_eq!(Arch::parse("arm/v7").unwrap().apk(), "armv7");
        assert!(Arch::parse("sparc").is_none());
    }
}
