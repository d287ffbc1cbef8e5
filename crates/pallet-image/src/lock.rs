//! apko's lock file (`apko.lock.json`, version v1): the exact packages per architecture with
//! their URLs and control checksums, so a build can install them without resolving, offline
//! when the cache has them.

use std::path::Path;

use base64::Engine as _;
use serde::{Deserialize, Serialize};

use crate::build::{BuildError, BuildOptions};
use crate::config::{Arch, ImageConfiguration};

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct LockFile {
    pub version: String,
    pub config: LockConfig,
    pub contents: LockContents,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct LockConfig {
    pub name: String,
    #[serde(default)]
    pub checksum: String,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct LockContents {
    #[serde(default)]
    pub keyring: Vec<LockKey>,
    #[serde(default)]
    pub build_repositories: Vec<LockRepo>,
    #[serde(default)]
    pub runtime_repositories: Vec<LockRepo>,
    #[serde(default)]
    pub repositories: Vec<LockRepo>,
    #[serde(default)]
    pub packages: Vec<LockPackage>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct LockKey {
    pub name: String,
    pub url: String,
    pub content: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct LockRepo {
    pub name: String,
    pub url: String,
    pub architecture: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct LockRange {
    pub range: String,
    pub checksum: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct LockPackage {
    pub name: String,
    pub url: String,
    pub version: String,
    pub architecture: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signature: Option<LockRange>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub control: Option<LockRange>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<LockRange>,
    #[serde(default)]
    pub checksum: String,
}

fn b64(b: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(b)
}

fn strip_scheme(u: &str) -> &str {
    u.split_once("://").map(|(_, r)| r).unwrap_or(u)
}

/// Resolve every architecture and describe the result as a lock file. Like apko, this reads
/// every package to record its section ranges.
pub fn generate(
    cfg: &ImageConfiguration,
    cfg_name: &str,
    cfg_checksum: &str,
    archs: &[Arch],
    opts: &BuildOptions,
) -> Result<LockFile, BuildError> {
    let mut contents = LockContents::default();
    let client = opts.client();
    let mut keys: Vec<LockKey> = vec![];
    let files = crate::build::keyring_files(cfg, opts)?;
    for (k, path) in cfg
        .contents
        .keyring
        .iter()
        .chain(&opts.extra_keyring)
        .zip(&files)
    {
        let content = std::fs::read_to_string(path)
            .map_err(|e| BuildError::Config(format!("keyring {k}: {e}")))?;
        keys.push(LockKey {
            name: strip_scheme(k).to_string(),
            url: k.clone(),
            content,
        });
    }
    // As apko's lock: the keys discovery finds for each repository and architecture are
    // recorded too, with their content, so that a consumer of the lock need not discover
    // (or fetch a rotated key) again. Problems were already reported by the resolve below.
    for line in crate::build::repository_lines(cfg, opts) {
        let (_, url) = crate::build::parse_repo(&line);
        for arch in archs {
            for k in client.discover_keys(&url, arch.apk()).keys {
                if keys.iter().any(|have| have.url == k.url) {
                    continue;
                }
                let content = std::fs::read_to_string(&k.path)
                    .map_err(|e| BuildError::Config(format!("discovered key {}: {e}", k.url)))?;
                keys.push(LockKey {
                    name: strip_scheme(&k.url).to_string(),
                    url: k.url,
                    content,
                });
            }
        }
    }
    keys.sort_by(|a, b| a.name.cmp(&b.name));
    contents.keyring = keys;
    for arch in archs {
        let (repos, picks, _, _) = crate::build::resolve(cfg, *arch, opts)?;
        // A base image's database is no repository of the image: apko locks none of it.
        for r in repos
            .iter()
            .filter(|r| !crate::baseimage::is_base_repo(&r.url))
        {
            let entry = LockRepo {
                name: format!(
                    "{}/{}",
                    strip_scheme(&pallet_repo::redact(&r.url)),
                    arch.apk()
                ),
                url: format!(
                    "{}/{}/APKINDEX.tar.gz",
                    pallet_repo::redact(&r.url),
                    arch.apk()
                ),
                architecture: arch.apk().to_string(),
            };
            let is_build = cfg
                .contents
                .build_repositories
                .iter()
                .any(|b| b.ends_with(&r.url));
            if is_build {
                contents.build_repositories.push(entry);
            } else {
                contents.repositories.push(entry);
            }
        }
        for (ri, pi) in picks {
            let repo = &repos[ri];
            let p = &repo.packages[pi];
            let f = client
                .open_package(&repo.url, arch.apk(), &p.file_name())
                .map_err(|e| BuildError::Package {
                    pkg: p.nv(),
                    message: e.to_string(),
                })?;
            let members = pallet_apk_stream::member_ranges(f).map_err(|e| BuildError::Package {
                pkg: p.nv(),
                message: e.to_string(),
            })?;
            let range = |m: &pallet_apk_stream::MemberRange, sha256: bool| LockRange {
                range: format!("bytes={}-{}", m.start, m.end - 1),
                checksum: if sha256 {
                    format!("sha256-{}", b64(&m.sha256))
                } else {
                    format!("sha1-{}", b64(&m.sha1))
                },
            };
            let (sig, ctl, data) = match members.as_slice() {
                [s, c, d, ..] => (
                    Some(range(s, false)),
                    Some(range(c, false)),
                    Some(range(d, true)),
                ),
                [c, d] => (None, Some(range(c, false)), Some(range(d, true))),
                _ => (None, None, None),
            };
            contents.packages.push(LockPackage {
                name: p.name.clone(),
                url: format!(
                    "{}/{}/{}",
                    pallet_repo::redact(&repo.url),
                    arch.apk(),
                    p.file_name()
                ),
                version: p.version.clone(),
                architecture: arch.apk().to_string(),
                signature: sig,
                control: ctl,
                data,
                checksum: p.checksum.clone().unwrap_or_default(),
            });
        }
    }
    Ok(LockFile {
        version: "v1".into(),
        config: LockConfig {
            name: cfg_name.to_string(),
            checksum: cfg_checksum.to_string(),
        },
        contents,
    })
}

/// Read a lock file; old ones without package checksums are refused as apko refuses them.
pub fn read(path: &Path) -> Result<LockFile, BuildError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| BuildError::Config(format!("{}: {e}", path.display())))?;
    let lock: LockFile = serde_json::from_str(&text).map_err(|e| {
        BuildError::Config(format!("{}: not an apko lock file: {e}", path.display()))
    })?;
    if lock.version != "v1" {
        return Err(BuildError::Config(format!(
            "{}: lock version '{}' is not v1",
            path.display(),
            lock.version
        )));
    }
    if let Some(p) = lock
        .contents
        .packages
        .iter()
        .find(|p| p.checksum.is_empty())
    {
        return Err(BuildError::Config(format!(
            "{}: package {} has no checksum (a lock file from before apko 0.13); lock again",
            path.display(),
            p.name
        )));
    }
    Ok(lock)
}
