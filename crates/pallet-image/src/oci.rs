//! OCI output: image config, manifest and index with a fixed key order, written as an OCI image
//! layout or a docker-archive tarball (layer blobs are made in [`crate::layers`]). Every output
//! is written under a temporary name and renamed.

use std::fs::{self, File};
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};

use serde_json::{Value, json};
use sha2::{Digest, Sha256};

pub const MT_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const MT_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const MT_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
pub const MT_LAYER_GZ: &str = "application/vnd.oci.image.layer.v1.tar+gzip";

/// A content-addressed blob stored in a blob directory.
#[derive(Clone, Debug)]
pub struct Blob {
    pub digest: String,
    pub size: u64,
    pub path: PathBuf,
}

fn hexs(d: impl AsRef<[u8]>) -> String {
    d.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

/// `sha256:<hex>` of some bytes, the way OCI names content.
pub fn sha256_digest(bytes: &[u8]) -> String {
    format!("sha256:{}", hexs(Sha256::digest(bytes)))
}

/// Store bytes as a blob in `blobs` (a `blobs/sha256` folder of a build's work folder).
pub fn put_blob(blobs: &Path, data: &[u8]) -> io::Result<Blob> {
    let hex = hexs(Sha256::digest(data));
    let path = blobs.join(&hex);
    if !path.exists() {
        // Unsynced: the work folder is a locked temporary, and what leaves it (a layout's
        // copies, a tarball) has its own policy. On ext4 the first sync of a build commits
        // the journal and with it every package and segment written to the cache before:
        // 22 ms of a 0.45 s cold build, for a config of a few hundred bytes.
        pallet_atomic::write_cache(&path, data)?;
    }
    Ok(Blob {
        digest: format!("sha256:{hex}"),
        size: data.len() as u64,
        path,
    })
}

pub fn descriptor(mt: &str, b: &Blob) -> Value {
    json!({"mediaType": mt, "size": b.size, "digest": b.digest})
}

/// One built image of one architecture.
#[derive(Clone, Debug)]
pub struct ArchImage {
    pub arch: crate::config::Arch,
    pub config: Blob,
    pub manifest: Blob,
    pub layers: Vec<Blob>,
}

fn platform(arch: crate::config::Arch) -> Value {
    let (a, v) = arch.oci();
    let mut p = json!({"architecture": a, "os": "linux"});
    if let Some(v) = v {
        p["variant"] = json!(v);
    }
    p
}

/// The image index over per-architecture images, sorted by architecture as apko does.
pub fn index_json(images: &[ArchImage], annotations: &Value) -> Vec<u8> {
    let mut sorted: Vec<&ArchImage> = images.iter().collect();
    sorted.sort_by_key(|i| i.arch.oci());
    let manifests: Vec<Value> = sorted
        .iter()
        .map(|i| {
            let mut d = descriptor(MT_MANIFEST, &i.manifest);
            d["platform"] = platform(i.arch);
            d
        })
        .collect();
    let mut idx = json!({"schemaVersion": 2, "mediaType": MT_INDEX, "manifests": manifests});
    if annotations.as_object().is_some_and(|o| !o.is_empty()) {
        idx["annotations"] = annotations.clone();
    }
    serde_json::to_vec(&idx).expect("JSON values serialize")
}

/// Split `repo:tag` (the tag defaults to `latest`; a `:` inside a registry port is not a tag).
pub fn split_ref(r: &str) -> (String, String) {
    let (name, tag) = match r.rfind(':') {
        Some(i) if !r[i..].contains('/') => (&r[..i], &r[i + 1..]),
        _ => (r, "latest"),
    };
    (name.to_string(), tag.to_string())
}

/// Write `out` through `build`, which gets a locked temporary path beside it and renames it
/// onto `out` when done; on error the temporary is removed, and if the process is killed the
/// next build sweeps it.
fn copy_tree_atomically(build: impl FnOnce(&Path) -> io::Result<()>, out: &Path) -> io::Result<()> {
    let parent = out
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let hint = out
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    // The temporary stays locked (and removed on drop if still there) while `build` writes
    // it through its own handle and renames it.
    let tmp = pallet_atomic::TempFile::new_in(parent, &hint)?;
    build(tmp.path())
}

/// Write an OCI image layout into the existing folder `dir`: the index blob is named by
/// `index.json` under the tag, and each per-architecture manifest under `TAG-ARCH`.
pub fn write_layout(
    dir: &Path,
    blobs_src: &Path,
    images: &[ArchImage],
    index: &Blob,
    tag: &str,
) -> io::Result<()> {
    let blobs = dir.join("blobs/sha256");
    fs::create_dir_all(&blobs)?;
    // What an earlier, killed build left half-copied here.
    pallet_atomic::sweep(&blobs);
    pallet_atomic::sweep(dir);
    let mut all: Vec<&Blob> = vec![index];
    for i in images {
        all.push(&i.manifest);
        all.push(&i.config);
        all.extend(i.layers.iter());
    }
    for b in all {
        let hex = b.digest.trim_start_matches("sha256:");
        let dst = blobs.join(hex);
        if !dst.exists() {
            pallet_atomic::write_with(&dst, |t| {
                io::copy(&mut File::open(blobs_src.join(hex))?, t).map(|_| ())
            })?;
        }
    }
    fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#)?;
    let mut manifests = vec![{
        let mut d = descriptor(MT_INDEX, index);
        d["annotations"] = json!({"org.opencontainers.image.ref.name": tag});
        d
    }];
    for i in images {
        let mut d = descriptor(MT_MANIFEST, &i.manifest);
        d["platform"] = platform(i.arch);
        d["annotations"] =
            json!({"org.opencontainers.image.ref.name": format!("{tag}-{}", i.arch.tag_suffix())});
        manifests.push(d);
    }
    let idx = json!({"schemaVersion": 2, "mediaType": MT_INDEX, "manifests": manifests});
    pallet_atomic::write(
        &dir.join("index.json"),
        &serde_json::to_vec(&idx).expect("JSON values serialize"),
    )
}

/// Write a docker-archive tarball (`docker load`, `skopeo … docker-archive:`): per image a
/// config file `sha256:<hex>` and layers `<hex>.tar.gz`, and `manifest.json` with the tags.
pub fn write_docker_archive(out: &Path, images: &[ArchImage], image_ref: &str) -> io::Result<()> {
    write_docker_archive_tags(out, images, &[image_ref.to_string()])
}

/// [`write_docker_archive`] with every reference of `image_refs` as a tag (`docker load`
/// creates each).
pub fn write_docker_archive_tags(
    out: &Path,
    images: &[ArchImage],
    image_refs: &[String],
) -> io::Result<()> {
    use pallet_apk_stream::tarw::{self, EntryHeader};
    let refs: Vec<(String, String)> = image_refs.iter().map(|r| split_ref(r)).collect();
    copy_tree_atomically(
        |tmp| {
            // The temporary is new and empty: opened without O_TRUNC, as truncating a file
            // to nothing makes ext4 (`auto_da_alloc`) write it out when it is closed, and the
            // next build then pays for freeing its blocks when it replaces it (20 ms for a
            // 15 MB tarball here, with the `discard` mount option).
            let mut w = BufWriter::with_capacity(1 << 20, File::options().write(true).open(tmp)?);
            let mut entries = vec![];
            let mut written = std::collections::BTreeSet::new();
            let mut put = |w: &mut BufWriter<File>, fname: String, b: &Blob| -> io::Result<()> {
                if !written.insert(fname.clone()) {
                    return Ok(());
                }
                let h = EntryHeader::file(&fname, 0o644, 0, b.size);
                tarw::write_header(w, &h)?;
                let n = io::copy(&mut File::open(&b.path)?, w)?;
                if n != b.size {
                    return Err(io::Error::other(format!("blob {} changed size", b.digest)));
                }
                w.write_all(&[0u8; 512][..tarw::padding(n)])
            };
            for i in images {
                let cfg_name = i.config.digest.clone();
                put(&mut w, cfg_name.clone(), &i.config)?;
                let mut layers = vec![];
                for l in &i.layers {
                    let f = format!("{}.tar.gz", l.digest.trim_start_matches("sha256:"));
                    put(&mut w, f.clone(), l)?;
                    layers.push(f);
                }
                let mut tags = vec![];
                for (name, tag) in &refs {
                    if images.len() == 1 {
                        tags.push(format!("{name}:{tag}"));
                    }
                    tags.push(format!("{name}:{tag}-{}", i.arch.tag_suffix()));
                }
                entries.push(json!({"Config": cfg_name, "RepoTags": tags, "Layers": layers}));
            }
            let manifest =
                serde_json::to_vec(&Value::Array(entries)).expect("JSON values serialize");
            let h = EntryHeader::file("manifest.json", 0o644, 0, manifest.len() as u64);
            tarw::write_entry(&mut w, &h, &manifest)?;
            tarw::write_end(&mut w)?;
            // Renamed without a sync, as `docker save` and apko write theirs: a killed build
            // leaves the old file or the new one, and a file a power loss cut short differs in
            // size from the no-op check's record, so the next build writes it again. Syncing
            // cost a quarter of a one-package rebuild, and so would the writeback a plain
            // rename over the old tarball starts on ext4 (see `rename_over`).
            drop(w.into_inner().map_err(|e| e.into_error())?);
            pallet_atomic::rename_over(tmp, out)
        },
        out,
    )
}
