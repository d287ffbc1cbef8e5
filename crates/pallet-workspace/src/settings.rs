//! `pallet.yaml`: what a Makefile around melange and apko would remember. Every key is
//! optional, and every one has a flag of `pallet build` that wins over it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

/// The file's name at the workspace root.
pub const FILE: &str = "pallet.yaml";

/// No settings file is this big; a larger one is refused rather than read.
const MAX_SETTINGS_BYTES: u64 = 4 << 20;

#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(default, rename_all = "kebab-case", deny_unknown_fields)]
pub struct Settings {
    /// Private key that signs packages and the index (default `melange.rsa`, made when
    /// missing); its `.pub` joins every build's keyring.
    pub signing_key: Option<PathBuf>,
    /// Architectures to build (default: every architecture a recipe or image names, else the
    /// host's).
    pub archs: Vec<String>,
    /// Repositories every build environment and image resolves against, besides the
    /// workspace's own.
    pub repositories: Vec<String>,
    /// Keys for those repositories (paths or URLs).
    pub keyring: Vec<String>,
    /// dotenv files whose variables every build step sees.
    pub env_files: Vec<PathBuf>,
    /// Folders searched for `uses:` pipelines (default `pipelines/` when it exists).
    pub pipeline_dirs: Vec<PathBuf>,
    /// Vendor namespace of the packages (melange's `--namespace`).
    pub namespace: Option<String>,
    /// Build options (`options:` of recipes) enabled for every recipe.
    pub build_options: Vec<String>,
    /// Where packages go: `OUT/ARCH/*.apk` and a signed `APKINDEX.tar.gz` (default `packages`).
    pub output: Option<PathBuf>,
    /// Where images go by default: `DIR/NAME.tar` (default `images`).
    pub images_output: Option<PathBuf>,
    /// Per recipe, by package name.
    pub recipes: BTreeMap<String, RecipeSettings>,
    /// Per image, by image name (the file name without `.yaml` / `.apko.yaml`).
    pub images: BTreeMap<String, ImageSettings>,
}

#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(default, rename_all = "kebab-case", deny_unknown_fields)]
pub struct RecipeSettings {
    /// melange's `--source-dir`, relative to the workspace root.
    pub source_dir: Option<PathBuf>,
    /// Build with the host's root, read-only, as the guest (melange's `--bootstrap`): for a
    /// repository's first packages, before any environment can be installed.
    pub bootstrap: bool,
}

#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(default, rename_all = "kebab-case", deny_unknown_fields)]
pub struct ImageSettings {
    /// Tags of the image (default `NAME:latest`), all written into the tarball; the first
    /// names the layout's image and the SBOMs'.
    pub tags: Vec<String>,
    /// docker-archive tarball (default `images/NAME.tar` when no output is given).
    pub tarball: Option<PathBuf>,
    /// OCI layout folder.
    pub layout: Option<PathBuf>,
    /// References to push the image to (`registry/repository:tag`), with its SBOMs as
    /// referrers; pushed again only when the image's key changes.
    pub publish: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    #[error("reading {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Invalid { path: PathBuf, message: String },
}

impl Settings {
    /// `root/pallet.yaml`, or the defaults when there is none.
    pub fn load(root: &Path) -> Result<Settings, SettingsError> {
        let path = root.join(FILE);
        let meta = match std::fs::metadata(&path) {
            Ok(m) => m,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Settings::default()),
            Err(source) => return Err(SettingsError::Read { path, source }),
        };
        if meta.len() > MAX_SETTINGS_BYTES {
            return Err(SettingsError::Invalid {
                path,
                message: format!("{} bytes is more than a settings file holds", meta.len()),
            });
        }
        let text = std::fs::read_to_string(&path).map_err(|source| SettingsError::Read {
            path: path.clone(),
            source,
        })?;
        Self::parse(&text).map_err(|message| SettingsError::Invalid { path, message })
    }

    pub fn parse(text: &str) -> Result<Settings, String> {
        if text.trim().is_empty() {
            return Ok(Settings::default());
        }
        let s: Settings = serde_saphyr::from_str(text).map_err(|e| e.to_string())?;
        for (what, p) in s
            .output
            .iter()
            .map(|p| ("output", p))
            .chain(s.images_output.iter().map(|p| ("images-output", p)))
        {
            if p.is_absolute() || p.components().any(|c| c.as_os_str() == "..") {
                return Err(format!(
                    "{what}: {} must be a folder inside the workspace",
                    p.display()
                ));
            }
        }
        Ok(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_and_full() {
        assert_eq!(Settings::parse("").unwrap(), Settings::default());
        let s = Settings::parse(
            "signing-key: k.rsa\narchs: [x86_64, aarch64]\nrecipes:\n  foo: {source-dir: src/foo, bootstrap: true}\nimages:\n  app: {tags: ['app:1'], layout: out/app}\n",
        )
        .unwrap();
        assert_eq!(s.signing_key.as_deref(), Some(Path::new("k.rsa")));
        assert!(s.recipes["foo"].bootstrap);
        assert_eq!(s.images["app"].tags, ["app:1"]);
    }

    #[test]
    fn unknown_keys_and_escaping_outputs_are_refused() {
        let e = Settings::parse("signing_key: x\n").unwrap_err();
        assert!(e.contains("signing_key"), "{e}");
        assert!(Settings::parse("output: ../elsewhere\n").is_err());
        assert!(Settings::parse("output: /abs\n").is_err());
    }
}
