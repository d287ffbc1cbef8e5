//! OCI image layout directories and docker-archive tarballs, written
//! atomically (temporary name in the same directory, then rename) with layer
//! blobs streamed from disk.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{self, File};
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};

use crate::error::{Error, Result, io};
use crate::gzip::LayerDigests;
use crate::image::{
    Descriptor, ImageConfig, Index, MEDIA_CONFIG, MEDIA_LAYER_GZIP, MEDIA_MANIFEST, Manifest,
    Platform,
};

/// A compressed layer file on disk and its digests.
#[derive(Debug, Clone)]
pub struct Layer {
    /// The gzip file.
    pub path: PathBuf,
    /// Its digests.
    pub digests: LayerDigests,
}

/// One built single-platform image: config and manifest bytes plus layer files.
#[derive(Debug, Clone)]
pub struct BuiltImage {
    /// Platform.
    pub platform: Platform,
    /// Config JSON bytes.
    pub config: Vec<u8>,
    /// Manifest JSON bytes.
    pub manifest: Vec<u8>,
    /// Layers, bottom first.
    pub layers: Vec<Layer>,
}

impl BuiltImage {
    /// Builds the manifest for `config` and `layers`; `config.rootfs.diff_ids`
    /// is set from the layers.
    pub fn new(
        mut config: ImageConfig,
        layers: Vec<Layer>,
        annotations: BTreeMap<String, String>,
    ) -> Self {
        config.rootfs.diff_ids = layers.iter().map(|l| l.digests.diff_id.clone()).collect();
        let platform = Platform {
            architecture: config.architecture.clone(),
            os: config.os.clone(),
            variant: config.variant.clone(),
        };
        let config = config.to_bytes();
        let manifest = Manifest {
            schema_version: 2,
            media_type: MEDIA_MANIFEST.into(),
            artifact_type: None,
            config: Descriptor::of(MEDIA_CONFIG, &config),
            layers: layers
                .iter()
                .map(|l| Descriptor {
                    media_type: MEDIA_LAYER_GZIP.into(),
                    size: l.digests.size,
                    digest: l.digests.digest.clone(),
                    platform: None,
                    artifact_type: None,
                    annotations: BTreeMap::new(),
                })
                .collect(),
            subject: None,
            annotations,
        };
        BuiltImage {
            platform,
            config,
            manifest: manifest.to_bytes(),
            layers,
        }
    }

    /// Descriptor of the manifest, with platform, for an index.
    pub fn descriptor(&self) -> Descriptor {
        let mut d = Descriptor::of(MEDIA_MANIFEST, &self.manifest);
        d.platform = Some(self.platform.clone());
        d
    }

    /// `sha256:<hex>` of the manifest.
    pub fn digest(&self) -> String {
        crate::image::sha256_digest(&self.manifest)
    }
}

/// The index of `images` (one manifest per platform, sorted by architecture
/// string as apko sorts them).
pub fn index_of(images: &[BuiltImage]) -> Index {
    let mut d: Vec<_> = images.iter().map(BuiltImage::descriptor).collect();
    d.sort_by_key(|d| {
        let p = d.platform.clone().unwrap_or_default();
        format!(
            "{}/{}/{}",
            p.os,
            p.architecture,
            p.variant.unwrap_or_default()
        )
    });
    Index::new(d)
}

/// The docker-archive tag apko gives one architecture of a build: `TAG-ARCH`
/// with the `/` of `arm/v7` made `_`.
pub fn docker_arch_tag(tag: &str, platform: &Platform) -> String {
    let arch = match &platform.variant {
        Some(v) if platform.architecture == "arm" => format!("arm_{v}"),
        _ => platform.architecture.clone(),
    };
    format!("{tag}-{arch}")
}

fn hex_of(digest: &str) -> Result<&str> {
    digest
        .strip_prefix("sha256:")
        .filter(|h| h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit()))
        .ok_or_else(|| Error::Invalid(format!("not a sha256 digest: {digest}")))
}

fn copy_file(from: &Path, to: &mut impl Write) -> Result<()> {
    let mut f = File::open(from).map_err(io("open layer", from))?;
    io::copy(&mut f, to).map_err(io("read layer", from))?;
    Ok(())
}

/// Writes an OCI image layout at `dir`: every image's blobs, the index blob
/// (always, as apko) and `index.json` pointing at it, annotated with `org.opencontainers.image.ref.name`
/// per tag. An existing `dir` is replaced. Returns the top digest.
pub fn write_oci_layout(dir: &Path, images: &[BuiltImage], tags: &[String]) -> Result<String> {
    if images.is_empty() {
        return Err(Error::Invalid("no image to write".into()));
    }
    let parent = dir
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let tmp = tempfile::Builder::new()
        .prefix(".pallet-oci-")
        .tempdir_in(parent)
        .map_err(io("create temporary directory in", parent))?;
    let blobs = tmp.path().join("blobs/sha256");
    fs::create_dir_all(&blobs).map_err(io("create", &blobs))?;
    let mut written = BTreeSet::new();
    let put = |digest: &str,
               bytes: Option<&[u8]>,
               file: Option<&Path>,
               written: &mut BTreeSet<String>|
     -> Result<()> {
        if !written.insert(digest.to_string()) {
            return Ok(());
        }
        let path = blobs.join(hex_of(digest)?);
        let mut out = BufWriter::new(File::create(&path).map_err(io("create", &path))?);
        match (bytes, file) {
            (Some(b), _) => out.write_all(b).map_err(io("write", &path))?,
            (None, Some(f)) => copy_file(f, &mut out)?,
            _ => unreachable!(),
        }
        out.flush().map_err(io("write", &path))?;
        Ok(())
    };
    for img in images {
        for l in &img.layers {
            put(&l.digests.digest, None, Some(&l.path), &mut written)?;
        }
        put(
            &crate::image::sha256_digest(&img.config),
            Some(&img.config),
            None,
            &mut written,
        )?;
        put(&img.digest(), Some(&img.manifest), None, &mut written)?;
    }
    // apko writes an index even for a single architecture.
    let index = index_of(images).to_bytes();
    let top = Descriptor::of(crate::image::MEDIA_INDEX, &index);
    put(&top.digest, Some(&index), None, &mut written)?;
    let mut entries = Vec::new();
    if tags.is_empty() {
        entries.push(top.clone());
    }
    for t in tags {
        let mut d = top.clone();
        d.annotations
            .insert("org.opencontainers.image.ref.name".into(), t.clone());
        entries.push(d);
    }
    let index_json = Index::new(entries).to_bytes();
    let p = tmp.path().join("index.json");
    fs::write(&p, index_json).map_err(io("write", &p))?;
    let p = tmp.path().join("oci-layout");
    fs::write(&p, br#"{"imageLayoutVersion":"1.0.0"}"#).map_err(io("write", &p))?;
    if dir.exists() {
        fs::remove_dir_all(dir).map_err(io("remove old", dir))?;
    }
    let tmp_path = tmp.keep();
    fs::rename(&tmp_path, dir).map_err(|e| {
        let _ = fs::remove_dir_all(&tmp_path);
        Error::Io {
            what: "rename into place",
            path: dir.to_path_buf(),
            source: e,
        }
    })?;
    Ok(top.digest)
}

#[derive(serde::Serialize)]
#[serde(rename_all = "PascalCase")]
struct DockerEntry {
    config: String,
    repo_tags: Vec<String>,
    layers: Vec<String>,
}

/// Writes a docker-archive tarball (`docker load`, `skopeo inspect
/// docker-archive:FILE`) holding `images`, each with its repo tags (apko
/// tags each architecture of a multi-arch build `TAG-ARCH`). Blobs are named
/// `sha256:<hex>` (config) and `<hex>.tar.gz` (layers) as go-containerregistry's
/// tarball writer names them.
pub fn write_docker_archive(file: &Path, images: &[(&BuiltImage, Vec<String>)]) -> Result<()> {
    let parent = file
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let tmp = tempfile::Builder::new()
        .prefix(".pallet-oci-")
        .tempfile_in(parent)
        .map_err(io("create temporary file in", parent))?;
    let mut tar = tar::Builder::new(BufWriter::new(tmp.as_file()));
    let mut entries = Vec::new();
    let mut seen = BTreeSet::new();
    let header = |size: u64| {
        let mut h = tar::Header::new_ustar();
        h.set_size(size);
        h.set_mode(0o644);
        h.set_mtime(0);
        h.set_entry_type(tar::EntryType::Regular);
        h
    };
    let tar_err = |e| Error::Io {
        what: "write",
        path: file.to_path_buf(),
        source: e,
    };
    for (img, tags) in images {
        let cfg_name = crate::image::sha256_digest(&img.config);
        if seen.insert(cfg_name.clone()) {
            let mut h = header(img.config.len() as u64);
            tar.append_data(&mut h, &cfg_name, img.config.as_slice())
                .map_err(tar_err)?;
        }
        let mut layers = Vec::new();
        for l in &img.layers {
            let name = format!("{}.tar.gz", hex_of(&l.digests.digest)?);
            if seen.insert(name.clone()) {
                let f = File::open(&l.path).map_err(io("open layer", &l.path))?;
                let mut h = header(l.digests.size);
                tar.append_data(&mut h, &name, f)
                    .map_err(io("read layer", &l.path))?;
            }
            layers.push(name);
        }
        entries.push(DockerEntry {
            config: cfg_name,
            repo_tags: tags.clone(),
            layers,
        });
    }
    let manifest = serde_json::to_vec(&entries).expect("serialises");
    let mut h = header(manifest.len() as u64);
    tar.append_data(&mut h, "manifest.json", manifest.as_slice())
        .map_err(tar_err)?;
    let mut w = tar.into_inner().map_err(tar_err)?;
    w.flush().map_err(tar_err)?;
    drop(w);
    tmp.as_file().sync_all().map_err(tar_err)?;
    tmp.persist(file).map_err(|e| Error::Io {
        what: "rename into place",
        path: file.to_path_buf(),
        source: e.error,
    })?;
    Ok(())
}
