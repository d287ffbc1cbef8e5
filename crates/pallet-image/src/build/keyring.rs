//! Where a build's indexes and keys come from: the repository lines in the order they are
//! read, and the keyring of each architecture (configured keys plus key discovery).

use std::path::PathBuf;

use pallet_keys::Keyring;

use super::{BuildError, BuildOptions};
use crate::config::{Arch, ImageConfiguration};

pub(crate) fn parse_repo(line: &str) -> (Option<String>, String) {
    let line = line.trim();
    if let Some(rest) = line.strip_prefix('@')
        && let Some((tag, url)) = rest.split_once(char::is_whitespace)
    {
        return (
            Some(tag.to_string()),
            url.trim().trim_end_matches('/').to_string(),
        );
    }
    (None, line.trim_end_matches('/').to_string())
}

/// The local files of the configured keys (`contents.keyring` and `--keyring-append`): paths
/// as given, URLs fetched into the cache (or taken from it offline).
pub fn keyring_files(
    cfg: &ImageConfiguration,
    opts: &BuildOptions,
) -> Result<Vec<PathBuf>, BuildError> {
    let client = opts.client();
    let mut out = vec![];
    for k in cfg.contents.keyring.iter().chain(&opts.extra_keyring) {
        let path = client
            .key(k)
            .map_err(|e| BuildError::Config(format!("keyring {e}")))?;
        if !path.exists() {
            return Err(BuildError::Config(format!(
                "keyring file {} does not exist (contents.keyring or --keyring-append)",
                path.display()
            )));
        }
        out.push(path);
    }
    Ok(out)
}

/// The keyring of one architecture: the configured keys, plus what key discovery finds for
/// the build's repositories (apko's Alpine `releases.json` and Chainguard `apk-configuration`
/// discovery, see [`pallet_repo::Client::discover_keys`]). A configured key wins over a
/// discovered one of the same file name. Discovery is best effort: its problems are printed
/// as warnings, and a repository still lacking its key fails when its index is verified.
pub fn keyring(
    cfg: &ImageConfiguration,
    arch: Arch,
    opts: &BuildOptions,
) -> Result<Keyring, BuildError> {
    let configured = keyring_files(cfg, opts)?;
    let client = opts.client();
    let taken = |name: &std::ffi::OsStr, have: &[PathBuf]| {
        have.iter().any(|p| {
            if p.is_dir() {
                p.join(name).is_file()
            } else {
                p.file_name() == Some(name)
            }
        })
    };
    let mut all = configured;
    for line in repository_lines(cfg, opts) {
        let (_, url) = parse_repo(&line);
        let found = client.discover_keys(&url, arch.apk());
        for w in &found.warnings {
            eprintln!("warning: {w}");
        }
        for k in found.keys {
            if let Some(name) = k.path.file_name()
                && !taken(name, &all)
            {
                all.push(k.path);
            }
        }
    }
    Ok(Keyring::from_paths(all))
}

/// The repository lines a build reads indexes from: build repositories, repositories, then
/// `-r` and `-b`, without repeats next to each other.
pub(crate) fn repository_lines(cfg: &ImageConfiguration, opts: &BuildOptions) -> Vec<String> {
    let mut lines: Vec<String> = cfg
        .contents
        .build_repositories
        .iter()
        .chain(&cfg.contents.repositories)
        .chain(&opts.extra_repositories)
        .chain(&opts.extra_build_repositories)
        .cloned()
        .collect();
    lines.dedup();
    lines
}
