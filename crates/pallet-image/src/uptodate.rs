//! "Nothing changed": telling, before any package is opened, that an image build would write
//! exactly the outputs that are already there.
//!
//! A build's [`fingerprint`] hashes everything its outputs depend on: the request (every field,
//! the working folder that relative paths are read from), the configuration as read with its
//! includes (apko's checksum) and the VCS revision it would record, and per architecture the
//! bytes of every key of the keyring and of every repository index. Packages need no part of it:
//! the indexes name them by checksum, and the package cache holds only verified content. The
//! pallet binary's own size and modification time are in it too, so a rebuilt pallet never
//! takes an old record.
//!
//! After a build has written its outputs, [`BuiltImage::remember`] stores, per output path, the
//! fingerprint, the stamp (size, inode, modification time) of every file written, what the build
//! logged and the digest it printed. [`unchanged`] finds that record, checks that the
//! fingerprint is the same and that no output file was touched since, and hands back the lines
//! to print again. Anything it cannot read or match means "build".

use std::path::{Path, PathBuf};

use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::build;
use crate::config;
use crate::image::{BuiltImage, ImageRequest, select_archs};

/// Where a build writes: a tarball or an OCI layout (an existing folder), and the SBOM folder
/// when SBOMs are written.
#[derive(Clone, Debug)]
pub struct Outputs {
    pub image: PathBuf,
    pub sbom_dir: Option<PathBuf>,
}

/// What an up-to-date build prints: its log lines (stderr) and the index digest (stdout).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Replay {
    pub lines: Vec<String>,
    pub digest: String,
}

const FORMAT: &str = "pallet-image-outputs-v1";

/// The fingerprint of what `req` would build (see the module doc), or `None` when some input
/// cannot be read now (the build then runs and reports it).
pub fn fingerprint(req: &ImageRequest) -> Option<String> {
    let mut h = Sha256::new();
    let mut put = |label: &str, bytes: &[u8]| {
        h.update((label.len() as u64).to_le_bytes());
        h.update(label.as_bytes());
        h.update((bytes.len() as u64).to_le_bytes());
        h.update(bytes);
    };
    put("format", FORMAT.as_bytes());
    put("version", env!("CARGO_PKG_VERSION").as_bytes());
    if let Some(stamp) = std::env::current_exe().ok().and_then(|p| file_stamp(&p)) {
        put("exe", stamp.as_bytes());
    }
    put(
        "cwd",
        std::env::current_dir().ok()?.as_os_str().as_encoded_bytes(),
    );
    put("request", format!("{req:?}").as_bytes());
    let mut loaded = config::load(&req.config_path, &req.include_paths).ok()?;
    put("config", loaded.checksum.as_bytes());
    if req.vcs && loaded.config.vcs_url.as_deref().is_none_or(str::is_empty) {
        let dir = req
            .config_path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        loaded.config.vcs_url = crate::vcs::probe(dir);
    }
    put(
        "vcs",
        loaded.config.vcs_url.as_deref().unwrap_or("").as_bytes(),
    );
    if let Some(lock) = &req.lockfile {
        put("lock", &std::fs::read(lock).ok()?);
    }
    let cfg = &loaded.config;
    let opts = &req.options;
    let client = opts.client();
    for arch in select_archs(&req.archs, cfg, &|_| {}).ok()? {
        put("arch", arch.apk().as_bytes());
        for k in build::keyring(cfg, arch, opts).ok()?.key_files() {
            put("key", k.as_os_str().as_encoded_bytes());
            put("key bytes", &std::fs::read(&k).ok()?);
        }
        if req.lockfile.is_some() {
            continue;
        }
        for line in build::repository_lines(cfg, opts) {
            let url = build::parse_repo(&line).1;
            let index = client.index(&url, arch.apk()).ok()?;
            put("repository", line.as_bytes());
            put("index", &Sha256::digest(std::fs::read(&index).ok()?));
        }
    }
    Some(hex(h.finalize()))
}

fn hex(d: impl AsRef<[u8]>) -> String {
    d.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

/// Size, inode and modification time: any write or replacement of the file changes one.
fn file_stamp(p: &Path) -> Option<String> {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(p).ok()?;
    Some(format!(
        "{} {} {} {}",
        m.len(),
        m.ino(),
        m.mtime(),
        m.mtime_nsec()
    ))
}

/// The record of the last build that wrote `out.image`.
fn record_path(cache_dir: &Path, out: &Outputs) -> Option<PathBuf> {
    let abs = std::path::absolute(&out.image).ok()?;
    Some(
        cache_dir
            .join("image-outputs-v1")
            .join(&hex(Sha256::digest(abs.as_os_str().as_encoded_bytes()))[..32]),
    )
}

/// The folder an image build for output `image` works in (its work folder is made there, so
/// that finished files are renamed, never copied, into place): the output's own folder.
pub fn work_parent(image: &Path) -> &Path {
    image
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
}

/// The lines and digest to print when the last build that wrote `out` had this `fingerprint`
/// and every file it wrote is as it left it; `None` means "build". On a hit, the work folders
/// of builds killed there are removed: a build killed after its outputs and record were
/// complete, but before its work folder went, leaves nothing for the next build to do, and so
/// no build that would sweep them.
pub fn unchanged(cache_dir: &Path, fingerprint: &str, out: &Outputs) -> Option<Replay> {
    let replay = replay(cache_dir, fingerprint, out)?;
    pallet_atomic::sweep(work_parent(&out.image));
    Some(replay)
}

fn replay(cache_dir: &Path, fingerprint: &str, out: &Outputs) -> Option<Replay> {
    let rec: Value =
        serde_json::from_slice(&std::fs::read(record_path(cache_dir, out)?).ok()?).ok()?;
    let same = |k: &str, v: Value| rec.get(k) == Some(&v);
    if !same("fingerprint", json!(fingerprint))
        || !same("image", json!(out.image.to_string_lossy()))
        || !same(
            "sbom_dir",
            json!(out.sbom_dir.as_ref().map(|d| d.to_string_lossy())),
        )
    {
        return None;
    }
    for f in rec.get("files")?.as_array()? {
        let path = f.get("path")?.as_str()?;
        if file_stamp(Path::new(path)).as_deref() != Some(f.get("stamp")?.as_str()?) {
            return None;
        }
    }
    Some(Replay {
        lines: rec
            .get("lines")?
            .as_array()?
            .iter()
            .map(|l| l.as_str().map(String::from))
            .collect::<Option<_>>()?,
        digest: rec.get("digest")?.as_str()?.to_string(),
    })
}

impl BuiltImage {
    /// Record that this build, whose inputs had `fingerprint`, wrote `out` and logged `lines`
    /// (best effort: without a record the next build just runs).
    pub fn remember(&self, cache_dir: &Path, fingerprint: &str, out: &Outputs, lines: &[String]) {
        let Some(path) = record_path(cache_dir, out) else {
            return;
        };
        let mut files: Vec<PathBuf> = vec![];
        if out.image.is_dir() {
            let blobs = out.image.join("blobs/sha256");
            files.push(out.image.join("index.json"));
            files.push(out.image.join("oci-layout"));
            let mut all = vec![self.index()];
            for i in self.images() {
                all.push(&i.manifest);
                all.push(&i.config);
                all.extend(i.layers.iter());
            }
            files.extend(
                all.iter()
                    .map(|b| blobs.join(b.digest.trim_start_matches("sha256:"))),
            );
        } else {
            files.push(out.image.clone());
        }
        if let Some(dir) = &out.sbom_dir {
            files.extend(self.sboms().iter().map(|(name, _)| dir.join(name)));
        }
        let mut stamped = vec![];
        for f in files {
            let Some(stamp) = file_stamp(&f) else { return };
            stamped.push(json!({"path": f.to_string_lossy(), "stamp": stamp}));
        }
        let rec = json!({
            "fingerprint": fingerprint,
            "image": out.image.to_string_lossy(),
            "sbom_dir": out.sbom_dir.as_ref().map(|d| d.to_string_lossy()),
            "files": stamped,
            "lines": lines,
            "digest": self.index_digest(),
        });
        if let Some(dir) = path.parent() {
            let _ = std::fs::create_dir_all(dir);
            // What a build killed while writing its record left (its lock is gone).
            pallet_atomic::sweep(dir);
        }
        // A cut record does not parse and only costs a full build: no sync.
        let json = serde_json::to_vec(&rec).expect("JSON");
        let _ = pallet_atomic::write_cache(&path, &json);
    }
}
