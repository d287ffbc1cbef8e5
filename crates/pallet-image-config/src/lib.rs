//! apko's image configuration (`pkg/build/types`), read as strictly as apko reads it.
//!
//! * Unknown keys are errors that name the file, line and column (apko decodes with
//!   `KnownFields(true)`), so keys removed from apko such as `os-release` are rejected.
//! * Scalars fill string fields with their text as written (`run-as: 10000` is `"10000"`),
//!   and `permissions` read `0o755` and `0755` as octal, as Go's yaml.v3 does.
//! * `include` is loaded first and the including file is merged on top (`MergeInto`).
//! * [`LoadedConfig::checksum`] is apko's lock-file checksum over every byte read.
//!
//! Nothing here touches the network.

#![deny(missing_docs)]

mod arch;
mod lock;
mod scalar;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::LazyLock;

use regex::Regex;
use serde::{Deserialize, Serialize};

pub use arch::{Arch, UnknownArch, sort_by_name};
pub use lock::{
    LockConfig, LockContents, LockError, LockFile, LockKeyring, LockPkg, LockRange, LockRepo,
};
pub use scalar::parse_mode;

/// The top level of an apko YAML file (`types.ImageConfiguration`).
#[derive(Debug, Default, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct ImageConfiguration {
    /// Packages, repositories and keys.
    #[serde(default, skip_serializing_if = "ImageContents::is_empty")]
    pub contents: ImageContents,
    /// OCI entrypoint.
    #[serde(default, skip_serializing_if = "ImageEntrypoint::is_empty")]
    pub entrypoint: ImageEntrypoint,
    /// OCI `Cmd`, split into words with shlex.
    #[serde(
        default,
        deserialize_with = "scalar::string",
        skip_serializing_if = "String::is_empty"
    )]
    pub cmd: String,
    /// OCI `StopSignal`.
    #[serde(
        default,
        deserialize_with = "scalar::string",
        skip_serializing_if = "String::is_empty"
    )]
    pub stop_signal: String,
    /// OCI `WorkingDir` (not created).
    #[serde(
        default,
        deserialize_with = "scalar::string",
        skip_serializing_if = "String::is_empty"
    )]
    pub work_dir: String,
    /// Users, groups and the user to run as.
    #[serde(default, skip_serializing_if = "ImageAccounts::is_empty")]
    pub accounts: ImageAccounts,
    /// Target architectures; empty means [`Arch::ALL`] unless `--arch` says otherwise.
    #[serde(
        default,
        deserialize_with = "scalar::list",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub archs: Vec<Arch>,
    /// OCI `Env`.
    #[serde(
        default,
        deserialize_with = "scalar::string_map",
        skip_serializing_if = "BTreeMap::is_empty"
    )]
    pub environment: BTreeMap<String, String>,
    /// Filesystem mutations, applied in order.
    #[serde(
        default,
        deserialize_with = "scalar::list",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub paths: Vec<PathMutation>,
    /// `url@sha` of the source this image is built from.
    #[serde(
        default,
        deserialize_with = "scalar::string",
        skip_serializing_if = "String::is_empty"
    )]
    pub vcs_url: String,
    /// Manifest, index and config-label annotations.
    #[serde(
        default,
        deserialize_with = "scalar::string_map",
        skip_serializing_if = "BTreeMap::is_empty"
    )]
    pub annotations: BTreeMap<String, String>,
    /// Deprecated: a local file loaded first, this one merged on top. Empty after [`load`].
    #[serde(
        default,
        deserialize_with = "scalar::string",
        skip_serializing_if = "String::is_empty"
    )]
    pub include: String,
    /// OCI `Volumes`.
    #[serde(
        default,
        deserialize_with = "scalar::string_list",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub volumes: Vec<String>,
    /// Multi-layer output.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub layering: Option<Layering>,
    /// `tar` (default) or `erofs`.
    #[serde(
        default,
        deserialize_with = "scalar::string",
        skip_serializing_if = "String::is_empty"
    )]
    pub format: String,
    /// Extra CA certificates.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub certificates: Option<Certificates>,
}

/// `contents` (`types.ImageContents`).
#[derive(Debug, Default, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ImageContents {
    /// Build-time only repositories.
    #[serde(
        default,
        deserialize_with = "scalar::string_list",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub build_repositories: Vec<String>,
    /// Repositories only written to the image.
    #[serde(
        default,
        deserialize_with = "scalar::string_list",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub runtime_repositories: Vec<String>,
    /// Build-time repositories also written to `/etc/apk/repositories`; may start `@tag `.
    #[serde(
        default,
        deserialize_with = "scalar::string_list",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub repositories: Vec<String>,
    /// Key URLs or paths.
    #[serde(
        default,
        deserialize_with = "scalar::string_list",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub keyring: Vec<String>,
    /// Inline keys written to the image after install.
    #[serde(
        default,
        deserialize_with = "scalar::list",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub runtime_keyring: Vec<NamedContent>,
    /// The world: `name`, `name=ver`, `name>=ver`, `name@tag` …
    #[serde(
        default,
        deserialize_with = "scalar::string_list",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub packages: Vec<String>,
    /// Experimental: build on top of a local OCI layout.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub baseimage: Option<BaseImage>,
}

impl ImageContents {
    fn is_empty(&self) -> bool {
        *self == ImageContents::default()
    }
}

/// A `{name, content}` pair (runtime keys, extra certificates).
#[derive(Debug, Default, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct NamedContent {
    /// File name stem.
    #[serde(default, deserialize_with = "scalar::string")]
    pub name: String,
    /// PEM text.
    #[serde(default, deserialize_with = "scalar::string")]
    pub content: String,
}

/// `contents.baseimage`.
#[derive(Debug, Default, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct BaseImage {
    /// Local OCI layout directory.
    #[serde(default, deserialize_with = "scalar::string")]
    pub image: String,
    /// Directory holding `<arch>/APKINDEX` of the base's installed packages.
    #[serde(default, deserialize_with = "scalar::string")]
    pub apkindex: String,
}

/// `entrypoint` (`types.ImageEntrypoint`).
#[derive(Debug, Default, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct ImageEntrypoint {
    /// Only `service-bundle` means anything.
    #[serde(
        default,
        rename = "type",
        deserialize_with = "scalar::string",
        skip_serializing_if = "String::is_empty"
    )]
    pub kind: String,
    /// Split with shlex into the OCI entrypoint.
    #[serde(
        default,
        deserialize_with = "scalar::string",
        skip_serializing_if = "String::is_empty"
    )]
    pub command: String,
    /// Run as `/bin/sh -c FRAGMENT`; wins over `command`.
    #[serde(
        default,
        deserialize_with = "scalar::string",
        skip_serializing_if = "String::is_empty"
    )]
    pub shell_fragment: String,
    /// s6 services: name to command.
    #[serde(
        default,
        deserialize_with = "scalar::string_map",
        skip_serializing_if = "BTreeMap::is_empty"
    )]
    pub services: BTreeMap<String, String>,
}

impl ImageEntrypoint {
    fn is_empty(&self) -> bool {
        *self == ImageEntrypoint::default()
    }
}

/// `accounts` (`types.ImageAccounts`).
#[derive(Debug, Default, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct ImageAccounts {
    /// A user name or UID (`"1001:0"` passes through verbatim).
    #[serde(
        default,
        deserialize_with = "scalar::string",
        skip_serializing_if = "String::is_empty"
    )]
    pub run_as: String,
    /// Users appended to `/etc/passwd`.
    #[serde(
        default,
        deserialize_with = "scalar::list",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub users: Vec<User>,
    /// Groups appended to `/etc/group`.
    #[serde(
        default,
        deserialize_with = "scalar::list",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub groups: Vec<Group>,
}

impl ImageAccounts {
    fn is_empty(&self) -> bool {
        *self == ImageAccounts::default()
    }
}

/// One user (`types.User`).
#[derive(Debug, Default, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct User {
    /// Required.
    #[serde(default, deserialize_with = "scalar::string")]
    pub username: String,
    /// Required and non-zero.
    #[serde(default, deserialize_with = "scalar::u32_field")]
    pub uid: u32,
    /// Defaults to the uid.
    #[serde(
        default,
        deserialize_with = "scalar::opt_u32",
        skip_serializing_if = "Option::is_none"
    )]
    pub gid: Option<u32>,
    /// Defaults to `/bin/sh`.
    #[serde(
        default,
        deserialize_with = "scalar::string",
        skip_serializing_if = "String::is_empty"
    )]
    pub shell: String,
    /// Defaults to `/home/<username>`.
    #[serde(
        default,
        deserialize_with = "scalar::string",
        skip_serializing_if = "String::is_empty"
    )]
    pub homedir: String,
}

/// One group (`types.Group`).
#[derive(Debug, Default, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Group {
    /// Required.
    #[serde(default, deserialize_with = "scalar::string")]
    pub groupname: String,
    /// Group id.
    #[serde(default, deserialize_with = "scalar::u32_field")]
    pub gid: u32,
    /// Member user names.
    #[serde(
        default,
        deserialize_with = "scalar::string_list",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub members: Vec<String>,
}

/// The kind of a [`PathMutation`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum PathType {
    /// `MkdirAll` then a permissions pass.
    Directory,
    /// Create or truncate.
    EmptyFile,
    /// `Link(source, path)`.
    Hardlink,
    /// `Symlink(source, path)`.
    Symlink,
    /// chmod, and chown if uid or gid is set.
    Permissions,
}

/// One `paths[]` entry (`types.PathMutation`).
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PathMutation {
    /// Target path in the image.
    #[serde(default, deserialize_with = "scalar::string")]
    pub path: String,
    /// What to do.
    #[serde(rename = "type")]
    pub kind: PathType,
    /// Owner; see apko's rules for one of uid/gid being unset.
    #[serde(
        default,
        deserialize_with = "scalar::opt_u32",
        skip_serializing_if = "Option::is_none"
    )]
    pub uid: Option<u32>,
    /// Group.
    #[serde(
        default,
        deserialize_with = "scalar::opt_u32",
        skip_serializing_if = "Option::is_none"
    )]
    pub gid: Option<u32>,
    /// Mode bits; omitted means 0, as in apko.
    #[serde(
        default,
        deserialize_with = "scalar::opt_mode",
        skip_serializing_if = "Option::is_none"
    )]
    pub permissions: Option<u32>,
    /// Link target.
    #[serde(
        default,
        deserialize_with = "scalar::string",
        skip_serializing_if = "String::is_empty"
    )]
    pub source: String,
    /// Honoured for `directory` and `permissions`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub recursive: bool,
}

/// `layering`.
#[derive(Debug, Default, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Layering {
    /// Only `origin`.
    #[serde(default, deserialize_with = "scalar::string")]
    pub strategy: String,
    /// Number of package layers.
    #[serde(default, deserialize_with = "scalar::u32_field")]
    pub budget: u32,
}

/// `certificates`.
#[derive(Debug, Default, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Certificates {
    /// Inline PEM certificates, one each.
    #[serde(
        default,
        deserialize_with = "scalar::list",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub additional: Vec<NamedContent>,
    /// Virtual package names whose providers contribute certificates.
    #[serde(
        default,
        deserialize_with = "scalar::string_list",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub providers: Vec<String>,
}

/// Loading a configuration failed.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("Failed to read image configuration `{}`", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// YAML syntax or schema error (unknown key, wrong type).
    #[error("Failed to parse image configuration `{}` at line {line}, column {column}: {message}", path.display())]
    Parse {
        /// The file.
        path: PathBuf,
        /// 1-based line, 0 if unknown.
        line: u64,
        /// 1-based column, 0 if unknown.
        column: u64,
        /// What was wrong.
        message: String,
    },
    /// `include` names no file in any search directory.
    #[error("Failed to read include file `{include}` from `{}`: not found beside it, in the working directory or in --include-paths", path.display())]
    IncludeNotFound {
        /// The including file.
        path: PathBuf,
        /// The include as written.
        include: String,
    },
    /// Includes nest too deep (a loop).
    #[error("Include chain from `{}` is deeper than 16 files (an include loop?)", path.display())]
    IncludeLoop {
        /// The file where the limit was hit.
        path: PathBuf,
    },
    /// The configuration is well-formed but apko's `Validate` rejects it.
    #[error("Invalid image configuration `{}`: {message}", path.display())]
    Invalid {
        /// The top-level file.
        path: PathBuf,
        /// apko's message.
        message: String,
    },
}

/// A loaded, merged and validated configuration.
#[derive(Debug, Clone)]
pub struct LoadedConfig {
    /// The merged configuration, `include` resolved.
    pub config: ImageConfiguration,
    /// `sha256-` + base64(SHA-256 of every byte read, the top file first, then its includes).
    pub checksum: String,
    /// Every file read, in reading order.
    pub files: Vec<PathBuf>,
}

/// Load `path`, resolve its `include` chain and validate as apko does.
///
/// An include is looked up as written (relative to the working directory), then in each of
/// `include_paths`, then beside the including file. Trailing `/` is trimmed from
/// repositories, and the base-image restriction is checked after the merge, as apko does.
pub fn load(path: &Path, include_paths: &[PathBuf]) -> Result<LoadedConfig, ConfigError> {
    let mut bytes = Vec::new();
    let mut files = Vec::new();
    let mut config = load_rec(path, include_paths, &mut bytes, &mut files, 0)?;
    for list in [
        &mut config.contents.repositories,
        &mut config.contents.build_repositories,
        &mut config.contents.runtime_repositories,
    ] {
        for r in list.iter_mut() {
            let trimmed = r.trim_end_matches('/').len();
            r.truncate(trimmed);
        }
    }
    if config.contents.baseimage.is_some() {
        let c = &config;
        if !c.entrypoint.is_empty()
            || !c.cmd.is_empty()
            || !c.stop_signal.is_empty()
            || !c.work_dir.is_empty()
            || !c.accounts.is_empty()
            || !c.environment.is_empty()
            || !c.paths.is_empty()
            || !c.annotations.is_empty()
        {
            return Err(ConfigError::Invalid {
                path: path.to_path_buf(),
                message: "when using base image, the only supported image specification are: contents, archs and includes".to_string(),
            });
        }
    }
    validate(&mut config).map_err(|message| ConfigError::Invalid {
        path: path.to_path_buf(),
        message,
    })?;
    Ok(LoadedConfig {
        config,
        checksum: config_checksum(&bytes),
        files,
    })
}

/// apko's lock-file config checksum: `sha256-` + standard base64 of the SHA-256.
pub fn config_checksum(bytes: &[u8]) -> String {
    use base64::Engine as _;
    use sha2::Digest as _;
    format!(
        "sha256-{}",
        base64::engine::general_purpose::STANDARD.encode(sha2::Sha256::digest(bytes))
    )
}

/// Parse one YAML document without resolving `include` or validating. `path` only labels
/// errors.
pub fn parse_str(text: &str, path: &Path) -> Result<ImageConfiguration, ConfigError> {
    serde_saphyr::from_str::<ImageConfiguration>(text).map_err(|e| {
        let (line, column) = e
            .location()
            .map(|l| (l.line(), l.column()))
            .unwrap_or((0, 0));
        ConfigError::Parse {
            path: path.to_path_buf(),
            line,
            column,
            message: plain_message(&e.to_string()),
        }
    })
}

/// serde-saphyr renders a source snippet and repeats the position; keep only the reason,
/// since the error variant already carries file, line and column.
fn plain_message(rendered: &str) -> String {
    let first = rendered.lines().next().unwrap_or_default();
    let first = first.strip_prefix("error: ").unwrap_or(first);
    match first.strip_prefix("line ").and_then(|r| r.split_once(": ")) {
        Some((pos, rest)) if pos.contains("column") => rest.to_string(),
        _ => first.to_string(),
    }
}

fn load_rec(
    path: &Path,
    include_paths: &[PathBuf],
    bytes: &mut Vec<u8>,
    files: &mut Vec<PathBuf>,
    depth: usize,
) -> Result<ImageConfiguration, ConfigError> {
    if depth > 16 {
        return Err(ConfigError::IncludeLoop {
            path: path.to_path_buf(),
        });
    }
    let raw = std::fs::read(path).map_err(|source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    bytes.extend_from_slice(&raw);
    files.push(path.to_path_buf());
    let text = String::from_utf8_lossy(&raw);
    let mut cfg = parse_str(&text, path)?;
    let include = std::mem::take(&mut cfg.include);
    if include.is_empty() {
        return Ok(cfg);
    }
    // apko's `paths.ResolvePath`: as written (so relative to the working directory), then
    // each include path. Beside the including file comes last, so a file apko finds is
    // always the one used, and a config that includes its neighbour works from any folder.
    let mut candidates = vec![PathBuf::from(&include)];
    candidates.extend(include_paths.iter().map(|d| d.join(&include)));
    if let Some(dir) = path.parent() {
        candidates.push(dir.join(&include));
    }
    let found = candidates
        .into_iter()
        .find(|c| c.is_file())
        .ok_or_else(|| ConfigError::IncludeNotFound {
            path: path.to_path_buf(),
            include: include.clone(),
        })?;
    let base = load_rec(&found, include_paths, bytes, files, depth + 1)?;
    Ok(merge_into(base, cfg))
}

fn or_str(top: String, base: String) -> String {
    if top.is_empty() { base } else { top }
}

fn cat<T>(mut base: Vec<T>, top: Vec<T>) -> Vec<T> {
    base.extend(top);
    base
}

fn merge_map(
    base: BTreeMap<String, String>,
    mut top: BTreeMap<String, String>,
) -> BTreeMap<String, String> {
    for (k, v) in base {
        top.entry(k).or_insert(v);
    }
    top
}

/// apko's `MergeInto`: scalars of the including file win when non-empty, lists concatenate
/// with the included file's entries first, maps merge with the including file winning, and
/// `layering`, `format`, `certificates`, `baseimage` and `archs` are inherited only if unset.
pub fn merge_into(base: ImageConfiguration, top: ImageConfiguration) -> ImageConfiguration {
    let (b, t) = (base.contents, top.contents);
    ImageConfiguration {
        contents: ImageContents {
            repositories: cat(b.repositories, t.repositories),
            build_repositories: cat(b.build_repositories, t.build_repositories),
            runtime_repositories: cat(b.runtime_repositories, t.runtime_repositories),
            keyring: cat(b.keyring, t.keyring),
            runtime_keyring: cat(b.runtime_keyring, t.runtime_keyring),
            packages: cat(b.packages, t.packages),
            baseimage: t.baseimage.or(b.baseimage),
        },
        // The entrypoint is inherited whole, and only when the including file has none.
        entrypoint: if top.entrypoint.is_empty() {
            base.entrypoint
        } else {
            top.entrypoint
        },
        cmd: or_str(top.cmd, base.cmd),
        stop_signal: or_str(top.stop_signal, base.stop_signal),
        work_dir: or_str(top.work_dir, base.work_dir),
        accounts: ImageAccounts {
            run_as: or_str(top.accounts.run_as, base.accounts.run_as),
            users: cat(base.accounts.users, top.accounts.users),
            groups: cat(base.accounts.groups, top.accounts.groups),
        },
        archs: if top.archs.is_empty() {
            base.archs
        } else {
            top.archs
        },
        environment: merge_map(base.environment, top.environment),
        paths: cat(base.paths, top.paths),
        vcs_url: or_str(top.vcs_url, base.vcs_url),
        annotations: merge_map(base.annotations, top.annotations),
        include: String::new(),
        volumes: cat(base.volumes, top.volumes),
        layering: top.layering.or(base.layering),
        format: or_str(top.format, base.format),
        certificates: top.certificates.or(base.certificates),
    }
}

static NAME_RE: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"^[a-zA-Z0-9_-]+[a-zA-Z0-9_.-]*$").expect("valid regex"));

/// Go's `%v` of a `types.User`, as apko's messages print it (the GID pointer as its value).
fn go_user(u: &User) -> String {
    let gid = u.gid.map_or("<nil>".to_string(), |g| g.to_string());
    format!(
        "{{{} {} {gid} {} {}}}",
        u.username, u.uid, u.shell, u.homedir
    )
}

/// apko's `Validate`: checks plus its fix-ups (service bundle, default home directories).
/// Returns apko's message.
pub fn validate(ic: &mut ImageConfiguration) -> Result<(), String> {
    if ic.entrypoint.kind == "service-bundle" {
        ic.entrypoint.command = "/bin/s6-svscan /sv".to_string();
        // A duplicate `s6` in the world is harmless; apk collapses it.
        ic.contents.packages.push("s6".to_string());
    }
    for u in &mut ic.accounts.users {
        if u.username.is_empty() {
            return Err(format!(
                "configured user {} has no configured user name",
                go_user(u)
            ));
        }
        if u.uid == 0 {
            return Err(format!(
                "configured user {} has UID 0 (to run as root, use `run-as: 0`)",
                go_user(u)
            ));
        }
        if u.homedir.is_empty() {
            u.homedir = format!("/home/{}", u.username);
        }
    }
    for g in &ic.accounts.groups {
        if g.groupname.is_empty() {
            return Err(format!(
                "configured group {{{} {} [{}]}} has no configured group name",
                g.groupname,
                g.gid,
                g.members.join(" ")
            ));
        }
    }
    match ic.format.as_str() {
        "" | "tar" => {}
        "erofs" => {
            if ic.layering.is_some() {
                return Err("erofs format cannot be combined with layering".to_string());
            }
        }
        f => return Err(format!("unsupported format: {f}")),
    }
    if let Some(l) = &ic.layering
        && !l.strategy.is_empty()
        && l.strategy != "origin"
    {
        return Err(format!("unsupported layering strategy: {}", l.strategy));
    }
    if let Some(c) = &ic.certificates {
        for a in &c.additional {
            if !NAME_RE.is_match(&a.name) {
                return Err(format!(
                    "certificate name {:?} is invalid, must match {}",
                    a.name,
                    NAME_RE.as_str()
                ));
            }
        }
    }
    for k in &ic.contents.runtime_keyring {
        if !NAME_RE.is_match(&k.name) {
            return Err(format!(
                "runtime keyring name {:?} is invalid, must match {}",
                k.name,
                NAME_RE.as_str()
            ));
        }
    }

    Ok(())
}

impl ImageConfiguration {
    /// The OCI entrypoint: `shell-fragment` as `/bin/sh -c FRAGMENT`, else `command` split as
    /// a shell would. `None` if the command has unbalanced quotes.
    pub fn entrypoint_argv(&self) -> Option<Vec<String>> {
        if !self.entrypoint.shell_fragment.is_empty() {
            return Some(vec![
                "/bin/sh".to_string(),
                "-c".to_string(),
                self.entrypoint.shell_fragment.clone(),
            ]);
        }
        shlex::split(&self.entrypoint.command)
    }

    /// The OCI `Cmd`, split as a shell would. `None` on unbalanced quotes.
    pub fn cmd_argv(&self) -> Option<Vec<String>> {
        shlex::split(&self.cmd)
    }

    /// Architectures to build: `cli` (already parsed `--arch`) wins, then `archs`, then all;
    /// deduplicated and sorted by name as apko's `ParseArchitectures` does.
    pub fn target_archs(&self, cli: &[Arch]) -> Vec<Arch> {
        let mut v = if !cli.is_empty() {
            cli.to_vec()
        } else if !self.archs.is_empty() {
            self.archs.clone()
        } else {
            Arch::ALL.to_vec()
        };
        sort_by_name(&mut v);
        v.dedup();
        v
    }

    /// `show-config`: the merged configuration as YAML, URL credentials redacted as apko's
    /// `MarshalYAML` does.
    pub fn to_show_config_yaml(&self) -> String {
        let mut c = self.clone();
        for list in [
            &mut c.contents.repositories,
            &mut c.contents.build_repositories,
            &mut c.contents.runtime_repositories,
            &mut c.contents.keyring,
        ] {
            for r in list.iter_mut() {
                *r = redact_userinfo(r);
            }
        }
        let mut y = serde_saphyr::to_string(&c).expect("configuration types always serialize");
        if !y.ends_with('\n') {
            y.push('\n');
        }
        y
    }
}

/// Mask the password in a repository or key URL (after an optional `@tag ` prefix) as Go's
/// `url.Redacted` does for apko's `show-config`: `https://user:xxxxx@host/…`. Runtime
/// repositories are masked too, though apko leaves them as written, since they carry the
/// same tokens.
pub fn redact_userinfo(repo: &str) -> String {
    let (prefix, url) = match repo.strip_prefix('@').and_then(|r| r.split_once(' ')) {
        Some((tag, rest)) => (format!("@{tag} "), rest),
        None => (String::new(), repo),
    };
    if let Some((scheme, rest)) = url.split_once("://") {
        let host_end = rest.find('/').unwrap_or(rest.len());
        if let Some(at) = rest[..host_end].rfind('@')
            && let Some((user, _password)) = rest[..at].split_once(':')
        {
            return format!("{prefix}{scheme}://{user}:xxxxx@{}", &rest[at + 1..]);
        }
    }
    repo.to_string()
}

static ANNOTATION_KEY_RE: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"^[a-z0-9-\.]+$").expect("valid regex"));

/// Parse `--annotations key:value` flags as apko does: split at the first `:`, key must
/// match `^[a-z0-9-\.]+$`.
pub fn parse_annotation_flags<S: AsRef<str>>(
    flags: &[S],
) -> Result<BTreeMap<String, String>, String> {
    let mut out = BTreeMap::new();
    for f in flags {
        let f = f.as_ref();
        let Some((k, v)) = f.split_once(':') else {
            return Err(format!("annotation is not in the expected format: {f}"));
        };
        if !ANNOTATION_KEY_RE.is_match(k) {
            return Err(format!("annotation key is not in the expected format: {k}"));
        }
        out.insert(k.to_string(), v.to_string());
    }
    Ok(out)
}

#[cfg(test)]
mod tests;
