//! `apko.lock.json` (`pkg/lock/lock.go`), version `v1`.

use std::path::Path;

use serde::{Deserialize, Serialize};

/// The whole lock file.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockFile {
    /// Always `v1` for files this crate writes.
    pub version: String,
    /// Which config was locked, and its [`crate::LoadedConfig::checksum`].
    pub config: LockConfig,
    /// Keys, repositories and resolved packages.
    pub contents: LockContents,
}

/// The config the lock was made from.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockConfig {
    /// The config file name as given on the command line.
    pub name: String,
    /// `sha256-` + base64. Lock files older than apko 0.13 lack it; builds reject those.
    #[serde(default)]
    pub checksum: String,
}

/// Everything that was resolved.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockContents {
    /// Keys sorted by name, with their PEM content.
    #[serde(default)]
    pub keyring: Vec<LockKeyring>,
    /// Build-only repositories, one per repo per arch.
    #[serde(default)]
    pub build_repositories: Vec<LockRepo>,
    /// Runtime-only repositories.
    #[serde(default)]
    pub runtime_repositories: Vec<LockRepo>,
    /// Repositories used at build time and written to the image.
    #[serde(default)]
    pub repositories: Vec<LockRepo>,
    /// Every arch's packages in install order, arch after arch.
    #[serde(default)]
    pub packages: Vec<LockPkg>,
}

/// A key.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockKeyring {
    /// The URL without scheme, or the path as configured.
    pub name: String,
    /// Where it came from.
    pub url: String,
    /// PEM text.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub content: String,
}

/// A repository for one arch.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockRepo {
    /// URL without scheme, plus `/<arch>`.
    pub name: String,
    /// The APKINDEX URL.
    pub url: String,
    /// apk arch name.
    pub architecture: String,
}

/// A byte range of one of the three gzip streams of an `.apk`, with its checksum.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockRange {
    /// `bytes=START-END`, inclusive.
    pub range: String,
    /// `sha1-…` or `sha256-…` in base64.
    pub checksum: String,
}

/// One resolved package.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockPkg {
    /// Package name.
    pub name: String,
    /// Where the `.apk` is fetched from.
    pub url: String,
    /// Full version, `1.2.3-r0`.
    pub version: String,
    /// apk arch name.
    pub architecture: String,
    /// Signature stream; absent for unsigned packages.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signature: Option<LockRange>,
    /// Control stream (its SHA-1 is the `Q1` checksum).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub control: Option<LockRange>,
    /// Data stream (its SHA-256 is `datahash`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<LockRange>,
    /// `Q1…` control checksum, as APKINDEX `C:`.
    #[serde(default)]
    pub checksum: String,
}

/// Reading or writing a lock file failed.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    /// I/O on the lock file.
    #[error("Failed to access lock file `{}`", path.display())]
    Io {
        /// The lock file.
        path: std::path::PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// Not a lock file.
    #[error("Failed to parse lock file `{}`", path.display())]
    Parse {
        /// The lock file.
        path: std::path::PathBuf,
        /// Cause.
        #[source]
        source: serde_json::Error,
    },
}

impl LockFile {
    /// Parse lock file JSON.
    pub fn from_json(text: &str) -> Result<LockFile, serde_json::Error> {
        serde_json::from_str(text)
    }

    /// Render as apko does: two-space indented JSON with a trailing newline.
    pub fn to_json(&self) -> String {
        let mut s = serde_json::to_string_pretty(self).expect("lock file types always serialize");
        s.push('\n');
        s
    }

    /// Read a lock file from disk.
    pub fn read(path: &Path) -> Result<LockFile, LockError> {
        let text = std::fs::read_to_string(path).map_err(|source| LockError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        LockFile::from_json(&text).map_err(|source| LockError::Parse {
            path: path.to_path_buf(),
            source,
        })
    }

    /// Write a lock file to disk.
    pub fn write(&self, path: &Path) -> Result<(), LockError> {
        std::fs::write(path, self.to_json()).map_err(|source| LockError::Io {
            path: path.to_path_buf(),
            source,
        })
    }

    /// Lock files written before apko 0.13 carry no config checksum and cannot drive a build.
    pub fn is_pre_0_13(&self) -> bool {
        self.config.checksum.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = r#"{
  "version": "v1",
  "config": { "name": "apko.yaml", "checksum": "sha256-eal7+HCFuOLz/8m3vNO5cYyNK0Zw7AphCcsc76TbTXg=" },
  "contents": {
    "keyring": [ { "name": "./k.rsa.pub", "url": "./k.rsa.pub", "content": "PEM" } ],
    "build_repositories": [],
    "runtime_repositories": [],
    "repositories": [ { "name": "./p/x86_64", "url": "./p/x86_64/APKINDEX.tar.gz", "architecture": "x86_64" } ],
    "packages": [ { "name": "pretend-baselayout", "url": "./p/x86_64/pretend-baselayout-1.0.0-r0.apk",
        "version": "1.0.0-r0", "architecture": "x86_64",
        "signature": { "range": "bytes=0-646", "checksum": "sha1-S+THz+JYZxcNzNCw2jI9YlnDnE4=" },
        "control": { "range": "bytes=647-1628", "checksum": "sha1-m6wB0UFePGN8Drz82pC8y2uAiu8=" },
        "data": { "range": "bytes=1629-2929", "checksum": "sha256-ckBapsaMu5EOb/e4Ei1s2l/+dZMEamHhUmaoJ8yeZwg=" },
        "checksum": "Q1m6wB0UFePGN8Drz82pC8y2uAiu8=" } ]
  }
}"#;

    #[test]
    fn round_trip() {
        let l = LockFile::from_json(SAMPLE).unwrap();
        assert_eq!(
            l.contents.packages[0].checksum,
            "Q1m6wB0UFePGN8Drz82pC8y2uAiu8="
        );
        assert!(!l.is_pre_0_13());
        let again = LockFile::from_json(&l.to_json()).unwrap();
        assert_eq!(l, again);
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("apko.lock.json");
        l.write(&p).unwrap();
        assert_eq!(LockFile::read(&p).unwrap(), l);
    }
}
