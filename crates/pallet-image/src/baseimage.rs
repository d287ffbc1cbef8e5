//! apko's experimental `contents.baseimage` (`pkg/baseimg`, `pkg/build/build_implementation.go`):
//! build one new layer on top of an existing image.
//!
//! The base is a local OCI layout (`image`) and the base's installed database in APKINDEX
//! form (`apkindex`, holding `<arch>/APKINDEX`). As in apko:
//! - a build needs a lock file (`pallet image lock` resolves against the repositories plus the
//!   base's packages, pinned to their versions, and locks only the packages the base lacks);
//! - the base's packages join the world as `name=version` and head the installed database, so
//!   the image's database lists both layers; accounts are left alone;
//! - when a base package provides `merged-lib`, the new layer has `lib -> usr/lib`, so it does
//!   not hide the base's usr-merged `/lib` with a directory;
//! - the image is the base image (its config, layers and history) with the new layer
//!   appended; layering is refused.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use pallet_apk_types::{Dependency, InstalledPackage, PackageInfo, installed};
use pallet_fs::{Node, Tree};
use serde_json::{Value, json};

use crate::build::BuildOptions;
use crate::config::{Arch, ImageConfiguration};
use crate::oci::{self, Blob};
use crate::resolve::Repo;

const MT_OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";

/// A repository URL no real repository has: the base's packages as the resolver sees them.
const BASE_REPO_PREFIX: &str = "baseimage:";

#[derive(Debug, thiserror::Error)]
pub enum BaseImageError {
    #[error(
        "contents.baseimage.{what} `{path}` does not exist (looked in the working folder and --include-paths)"
    )]
    Missing { what: &'static str, path: String },
    #[error("Failed to read `{}` of the base image", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("`{}` of the base image is not valid JSON", path.display())]
    Json {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("The base image `{}` has no image for architecture {arch}", dir.display())]
    NoArch { dir: PathBuf, arch: String },
    #[error("`{}` is not an installed database in APKINDEX form", path.display())]
    Index {
        path: PathBuf,
        #[source]
        source: pallet_apk_types::InfoError,
    },
    #[error("Failed to copy the base image's layer `{digest}`")]
    Copy {
        digest: String,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "building with base image is supported only with a lockfile (make one with `pallet image lock`, then pass --lockfile)"
    )]
    NeedsLockfile,
    #[error("layering with \"baseimage\" is unsupported (drop `layering` or `contents.baseimage`)")]
    Layering,
}

/// One architecture's base: its image and its installed packages.
#[derive(Debug)]
pub struct BaseImage {
    pub packages: Vec<InstalledPackage>,
    /// Where `apkindex` was found (names the resolver's base repository).
    apkindex: PathBuf,
    /// The OCI layout's root, for its blobs.
    layout: PathBuf,
    manifest: Value,
    config: Value,
}

/// apko's `paths.ResolvePath`: the path as given when it exists (relative to the working
/// folder), else the first include path holding it.
pub fn resolve_path(p: &str, include_paths: &[PathBuf]) -> Option<PathBuf> {
    let direct = PathBuf::from(p);
    if direct.exists() {
        return Some(direct);
    }
    include_paths.iter().map(|d| d.join(p)).find(|c| c.exists())
}

/// The build-time refusals apko makes: a lock file is required, layering is unsupported.
pub fn check_build(cfg: &ImageConfiguration, opts: &BuildOptions) -> Result<(), BaseImageError> {
    if cfg.contents.baseimage.is_none() {
        return Ok(());
    }
    if opts.locked.is_none() {
        return Err(BaseImageError::NeedsLockfile);
    }
    // apko goes to its layering code (which refuses) for any non-empty `layering`.
    if cfg
        .layering
        .as_ref()
        .is_some_and(|l| !l.strategy.is_empty() || l.budget != 0)
    {
        return Err(BaseImageError::Layering);
    }
    Ok(())
}

fn read_json(path: &Path) -> Result<Value, BaseImageError> {
    let bytes = std::fs::read(path).map_err(|source| BaseImageError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    serde_json::from_slice(&bytes).map_err(|source| BaseImageError::Json {
        path: path.to_path_buf(),
        source,
    })
}

fn blob_path(layout: &Path, digest: &str) -> PathBuf {
    let (alg, hex) = digest.split_once(':').unwrap_or(("sha256", digest));
    layout.join("blobs").join(alg).join(hex)
}

fn manifests(index: &Value) -> Vec<Value> {
    index["manifests"].as_array().cloned().unwrap_or_default()
}

/// Load the base for `arch`, or `None` when the configuration has none.
pub fn load(
    cfg: &ImageConfiguration,
    arch: Arch,
    opts: &BuildOptions,
) -> Result<Option<BaseImage>, BaseImageError> {
    let Some(b) = &cfg.contents.baseimage else {
        return Ok(None);
    };
    let layout =
        resolve_path(&b.image, &opts.include_paths).ok_or_else(|| BaseImageError::Missing {
            what: "image",
            path: b.image.clone(),
        })?;
    let apkindex =
        resolve_path(&b.apkindex, &opts.include_paths).ok_or_else(|| BaseImageError::Missing {
            what: "apkindex",
            path: b.apkindex.clone(),
        })?;
    // An index.json that points at an image index (as apko and pallet write layouts) is read
    // through it.
    let mut index = read_json(&layout.join("index.json"))?;
    if let Some(nested) = manifests(&index)
        .iter()
        .find(|m| m["mediaType"] == MT_OCI_INDEX)
    {
        index = read_json(&blob_path(&layout, nested["digest"].as_str().unwrap_or("")))?;
    }
    // The first image whose config names the architecture (the variant is not compared).
    let mut found = None;
    for m in manifests(&index) {
        let manifest = read_json(&blob_path(&layout, m["digest"].as_str().unwrap_or("")))?;
        let config = read_json(&blob_path(
            &layout,
            manifest["config"]["digest"].as_str().unwrap_or(""),
        ))?;
        if config["architecture"] == arch.oci().0 {
            found = Some((manifest, config));
            break;
        }
    }
    let (manifest, config) = found.ok_or_else(|| BaseImageError::NoArch {
        dir: layout.clone(),
        arch: arch.apk().into(),
    })?;
    let db = apkindex.join(arch.apk()).join("APKINDEX");
    let text = std::fs::read_to_string(&db).map_err(|source| BaseImageError::Read {
        path: db.clone(),
        source,
    })?;
    let packages = installed::parse_installed(&text).map_err(|source| BaseImageError::Index {
        path: db.clone(),
        source,
    })?;
    Ok(Some(BaseImage {
        packages,
        apkindex,
        layout,
        manifest,
        config,
    }))
}

/// Whether a resolved repository is the base's packages (never fetched, never locked).
pub fn is_base_repo(url: &str) -> bool {
    url.starts_with(BASE_REPO_PREFIX)
}

impl BaseImage {
    /// The base's packages pinned, as apko adds them to the world.
    pub fn world(&self) -> Vec<Dependency> {
        self.packages
            .iter()
            .map(|p| Dependency::exact(p.info.name.clone(), p.info.version.clone()))
            .collect()
    }

    pub fn names(&self) -> BTreeSet<&str> {
        self.packages.iter().map(|p| p.info.name.as_str()).collect()
    }

    /// The base's packages as a repository for the resolver. apko reads it without a
    /// signature (it is the base's own database).
    pub fn repo(&self) -> Repo {
        let records: Vec<PackageInfo> = self.packages.iter().map(|p| p.info.clone()).collect();
        Repo {
            url: format!("{BASE_REPO_PREFIX}{}", self.apkindex.display()),
            tag: None,
            packages: records.into(),
        }
    }

    /// The base's packages as the build reports them, each with the base's repository name.
    pub fn installed(&self) -> Vec<(PackageInfo, String)> {
        let url = format!("{BASE_REPO_PREFIX}{}", self.apkindex.display());
        self.packages
            .iter()
            .map(|p| (p.info.clone(), url.clone()))
            .collect()
    }

    /// The newest build time among the base's packages: apko's build date counts them.
    pub fn build_time(&self) -> u64 {
        self.packages
            .iter()
            .map(|p| p.info.build_time)
            .max()
            .unwrap_or(0)
    }

    /// Before any package is installed: a usr-merged base (a package provides `merged-lib`,
    /// as wolfi-baselayout does) gets `lib -> usr/lib` in the new layer too.
    pub fn prepare_tree(&self, tree: &mut Tree) {
        let merged = self.packages.iter().any(|p| {
            p.info
                .provides
                .iter()
                .any(|d| d.to_string() == "merged-lib")
        });
        if merged && tree.get("lib").is_none() {
            tree.put("lib", Node::symlink("usr/lib", 0));
        }
    }

    /// Copy the base's layers into `blobs`, in order.
    pub fn layers(&self, blobs: &Path) -> Result<Vec<Blob>, BaseImageError> {
        let descs = self.manifest["layers"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        let mut out = vec![];
        for d in &descs {
            let digest = d["digest"].as_str().unwrap_or("").to_string();
            let src = blob_path(&self.layout, &digest);
            let hex = digest.split_once(':').map_or(digest.as_str(), |(_, h)| h);
            let dst = blobs.join(hex);
            let copy = || -> std::io::Result<u64> {
                if !dst.exists() {
                    // A hard link costs nothing; another file system gets a copy.
                    if std::fs::hard_link(&src, &dst).is_err() {
                        pallet_atomic::write_with(&dst, |t| {
                            std::io::copy(&mut std::fs::File::open(&src)?, t).map(|_| ())
                        })?;
                    }
                }
                Ok(std::fs::metadata(&dst)?.len())
            };
            let size = copy().map_err(|source| BaseImageError::Copy {
                digest: digest.clone(),
                source,
            })?;
            out.push(Blob {
                digest,
                size,
                path: dst,
            });
        }
        Ok(out)
    }

    /// The image config: the base's, with what apko sets on it (author, platform, created,
    /// Env, Labels, Volumes when configured) and the new layers' diff_ids and history
    /// appended. `new` is the config pallet would write for the new layers alone.
    pub fn config(&self, new: &[u8]) -> Vec<u8> {
        let new: Value = serde_json::from_slice(new).expect("pallet's own config is JSON");
        let mut c = self.config.clone();
        for k in ["architecture", "author", "created", "os"] {
            c[k] = new[k].clone();
        }
        match new.get("variant") {
            Some(v) => c["variant"] = v.clone(),
            None => {
                if let Some(o) = c.as_object_mut() {
                    o.remove("variant");
                }
            }
        }
        if !c["config"].is_object() {
            c["config"] = json!({});
        }
        // Entrypoint, Cmd, WorkingDir, User and StopSignal cannot be configured with a base
        // (apko refuses them), so the base's stay.
        c["config"]["Env"] = new["config"]["Env"].clone();
        for k in ["Labels", "Volumes"] {
            match new["config"].get(k) {
                Some(v) => c["config"][k] = v.clone(),
                None if k == "Labels" => {
                    if let Some(o) = c["config"].as_object_mut() {
                        o.remove(k);
                    }
                }
                None => {}
            }
        }
        let cat = |base: &Value, add: &Value| -> Value {
            let mut v = base.as_array().cloned().unwrap_or_default();
            v.extend(add.as_array().cloned().unwrap_or_default());
            Value::Array(v)
        };
        c["rootfs"] = json!({
            "type": "layers",
            "diff_ids": cat(&self.config["rootfs"]["diff_ids"], &new["rootfs"]["diff_ids"]),
        });
        c["history"] = cat(&self.config["history"], &new["history"]);
        serde_json::to_vec(&c).expect("JSON values serialize")
    }

    /// The manifest: the base's, as an OCI manifest, with the new config, the new layers after
    /// the base's, and the new annotations over the base's.
    pub fn manifest(&self, config: &Blob, new_layers: &[Value], annotations: &Value) -> Vec<u8> {
        let mut m = self.manifest.clone();
        m["mediaType"] = json!(oci::MT_MANIFEST);
        m["config"] = oci::descriptor(oci::MT_CONFIG, config);
        let mut layers = self.manifest["layers"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        layers.extend(new_layers.iter().cloned());
        m["layers"] = Value::Array(layers);
        let mut ann = self.manifest["annotations"]
            .as_object()
            .cloned()
            .unwrap_or_default();
        if let Some(a) = annotations.as_object() {
            for (k, v) in a {
                ann.insert(k.clone(), v.clone());
            }
        }
        if ann.is_empty() {
            if let Some(o) = m.as_object_mut() {
                o.remove("annotations");
            }
        } else {
            m["annotations"] = Value::Object(ann);
        }
        serde_json::to_vec(&m).expect("JSON values serialize")
    }
}
