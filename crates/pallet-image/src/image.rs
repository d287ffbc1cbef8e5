//! One image build from start to finish: configuration, architectures, lock file, the
//! per-architecture builds, the index and the SBOMs, then the outputs (a docker-archive tarball,
//! an OCI layout, SBOM files).
//!
//! The CLI's `image build` and `publish` and a workspace orchestrator share this, so every input
//! is explicit: nothing here reads the process environment (`SOURCE_DATE_EPOCH` is the caller's
//! to read and pass as [`ImageRequest::epoch`]) and nothing is printed. Warnings and progress
//! lines go to the caller's `log`, one finished line at a time, in the order they happen, so the
//! CLI can keep printing them to stderr exactly where it always has.

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::build::{self, ArchResult, BuildError, BuildOptions};
use crate::config::{self, Arch, ConfigError, ImageConfiguration};
use crate::oci::{self, ArchImage, Blob};
use crate::sbom;

#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Docker(#[from] crate::docker::DockerError),
    /// A lock file that cannot be read, and other failures of the build machinery outside one
    /// architecture's build.
    #[error(transparent)]
    Build(#[from] BuildError),
    #[error("building {} for {arch}", config.display())]
    Arch {
        config: PathBuf,
        arch: String,
        // Boxed: an architecture's error is large and rare, and every other result pays for it.
        #[source]
        source: Box<BuildError>,
    },
    #[error("unknown architecture '{0}'")]
    UnknownArch(String),
    #[error("--build-date '{0}' is not RFC 3339 (e.g. 2024-01-02T03:04:05Z)")]
    BuildDate(String),
    #[error("--annotations '{0}' is not KEY:VALUE")]
    AnnotationSyntax(String),
    #[error(
        "--annotations '{0}': the key must match ^[a-z0-9-.]+$ and the value must not be empty"
    )]
    AnnotationInvalid(String),
    #[error("--annotations: duplicate key '{0}'")]
    AnnotationDuplicate(String),
    #[error("--sbom-formats: unknown format '{0}' (spdx, cyclonedx)")]
    SbomFormat(String),
    #[error(
        "{} was made for another version of {} (config checksum {locked} != {actual}); run `pallet image lock` again",
        lock.display(),
        config.display()
    )]
    LockMismatch {
        lock: PathBuf,
        config: PathBuf,
        locked: String,
        actual: String,
    },
    #[error("{} locks no packages for {arch}", lock.display())]
    LockMissingArch { lock: PathBuf, arch: String },
    #[error("creating a work folder beside the output")]
    WorkFolder {
        dir: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("writing OCI layout {}", dir.display())]
    Layout {
        dir: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("writing {}", path.display())]
    Tarball {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("creating {}", dir.display())]
    SbomDir {
        dir: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(transparent)]
    Write(#[from] pallet_keys::KeyError),
    /// Any other file in the build's work folder (`path` names it).
    #[error("{what} {}", path.display())]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// What to build. [`ImageRequest::new`] gives the CLI's defaults.
#[derive(Clone, Debug)]
pub struct ImageRequest {
    /// The apko YAML file.
    pub config_path: PathBuf,
    /// Extra folders searched for included files.
    pub include_paths: Vec<PathBuf>,
    /// The image reference built for: named in progress lines and in the SBOMs.
    pub tag: String,
    /// Architecture names (apko's names and aliases, `host`, `all`); empty: the config's, or
    /// the host's when the config names none.
    pub archs: Vec<String>,
    /// Repositories, keys, cache and the rest. Its `epoch`, `annotations` and `locked` are
    /// replaced by what the fields below say.
    pub options: BuildOptions,
    /// The build date in seconds (`SOURCE_DATE_EPOCH` or `--build-date`); `None`: the newest
    /// package's.
    pub epoch: Option<u64>,
    /// `KEY:VALUE` annotations for the manifests, index and config labels, as `--annotations`
    /// takes them (checked by [`parse_annotations`]).
    pub annotations: Vec<String>,
    /// Build exactly the packages of this lock file.
    pub lockfile: Option<PathBuf>,
    /// Probe git for `vcs-url` when the configuration has none.
    pub vcs: bool,
    /// Assemble SBOMs.
    pub sbom: bool,
    /// `spdx`, `cyclonedx`.
    pub sbom_formats: Vec<String>,
}

impl ImageRequest {
    /// A request with the CLI's defaults: VCS probe on, SPDX SBOMs, no annotations or lock file.
    pub fn new(config_path: PathBuf, tag: String, options: BuildOptions) -> ImageRequest {
        ImageRequest {
            config_path,
            include_paths: vec![],
            tag,
            archs: vec![],
            options,
            epoch: None,
            annotations: vec![],
            lockfile: None,
            vcs: true,
            sbom: true,
            sbom_formats: vec!["spdx".into()],
        }
    }
}

/// One architecture's image, as its progress line reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ArchSummary {
    pub arch: Arch,
    pub packages: usize,
    /// The manifest's digest.
    pub digest: String,
}

/// What a build produced. The blobs live in a work folder that goes away with this value, so
/// write the outputs before dropping it.
#[derive(Debug)]
pub struct BuiltImage {
    work: pallet_atomic::TempDir,
    blobs: PathBuf,
    images: Vec<ArchImage>,
    index: Blob,
    /// (file name, document) per architecture and format, and for the index.
    sboms: Vec<(String, Value)>,
    archs: Vec<ArchSummary>,
}

/// Load a configuration with its includes; its deprecation warnings go to `log`.
pub fn load_config(
    path: &Path,
    include_paths: &[PathBuf],
    log: &dyn Fn(&str),
) -> Result<config::Loaded, ImageError> {
    let loaded = config::load(path, include_paths)?;
    for w in &loaded.warnings {
        log(&format!("warning: {w}"));
    }
    Ok(loaded)
}

/// The architectures to build: `names` (as `--arch` takes them) or else the config's, sorted
/// and without repeats.
pub fn select_archs(
    names: &[String],
    cfg: &ImageConfiguration,
    log: &dyn Fn(&str),
) -> Result<Vec<Arch>, ImageError> {
    let names = if names.is_empty() { &cfg.archs } else { names };
    if names.is_empty() {
        // apko builds all nine architectures when none are named; that fails for most
        // repositories, so pallet builds the host's and says so.
        log(&format!(
            "no archs in the config or --arch: building for the host ({})",
            Arch::host().apk()
        ));
        return Ok(vec![Arch::host()]);
    }
    let mut out = Vec::new();
    for n in names {
        match n.as_str() {
            "host" => out.push(Arch::host()),
            "all" => out.extend(Arch::ALL),
            other => {
                out.push(Arch::parse(other).ok_or_else(|| ImageError::UnknownArch(other.into()))?)
            }
        }
    }
    out.sort();
    out.dedup();
    Ok(out)
}

/// An RFC 3339 date (`YYYY-MM-DDTHH:MM:SSZ`, or with an offset of +00:00; fractions of a second
/// are dropped) as seconds since 1970, clamped at 0.
pub fn parse_date(s: &str) -> Result<u64, ImageError> {
    let s = s.trim();
    let bad = || ImageError::BuildDate(s.to_string());
    let (date, time) = s.split_once('T').ok_or_else(bad)?;
    let d: Vec<i64> = date
        .split('-')
        .map(|x| x.parse().map_err(|_| bad()))
        .collect::<Result<_, _>>()?;
    let t = time.trim_end_matches('Z').trim_end_matches("+00:00");
    let t: Vec<i64> = t
        .split(':')
        .map(|x| {
            x.split('.')
                .next()
                .unwrap_or("0")
                .parse()
                .map_err(|_| bad())
        })
        .collect::<Result<_, _>>()?;
    if d.len() != 3 || t.len() != 3 {
        return Err(bad());
    }
    // Days from the civil date (Howard Hinnant's algorithm), with March as the first month so
    // that the leap day falls at the end of the year.
    let (y, m, day) = (d[0], d[1], d[2]);
    let y2 = if m <= 2 { y - 1 } else { y };
    let era = y2.div_euclid(400);
    let yoe = y2 - era * 400;
    let mp = if m > 2 { m - 3 } else { m + 9 };
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Ok((days * 86400 + t[0] * 3600 + t[1] * 60 + t[2]).max(0) as u64)
}

/// `KEY:VALUE` annotations as `--annotations` takes them: keys as apko allows them
/// (`^[a-z0-9-.]+$`), values not empty, no key twice.
pub fn parse_annotations(args: &[String]) -> Result<BTreeMap<String, String>, ImageError> {
    let mut out = BTreeMap::new();
    for an in args {
        let (k, v) = an
            .split_once(':')
            .ok_or_else(|| ImageError::AnnotationSyntax(an.clone()))?;
        if k.is_empty()
            || !k
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.')
            || v.is_empty()
        {
            return Err(ImageError::AnnotationInvalid(an.clone()));
        }
        if out.insert(k.to_string(), v.to_string()).is_some() {
            return Err(ImageError::AnnotationDuplicate(k.to_string()));
        }
    }
    Ok(out)
}

/// Build every architecture of `req` into a work folder under `work_parent` (beside the
/// output, so that writing it is a rename or a copy on the same file system). Config warnings,
/// notes and one `built ARCH (TAG): N packages, DIGEST` line per architecture go to `log`.
pub fn build_image(
    req: &ImageRequest,
    work_parent: &Path,
    log: &dyn Fn(&str),
) -> Result<BuiltImage, ImageError> {
    crate::timing::mark("build_image start");
    // An unknown SBOM format is refused before any work, not after the build.
    for fmt in &req.sbom_formats {
        if fmt != "spdx" && fmt != "cyclonedx" {
            return Err(ImageError::SbomFormat(fmt.clone()));
        }
    }
    let config_path = &req.config_path;
    let mut loaded = load_config(config_path, &req.include_paths, log)?;
    // apko's --vcs (on by default): the checkout holding the configuration names the source.
    if req.vcs && loaded.config.vcs_url.as_deref().is_none_or(str::is_empty) {
        let dir = config_path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        loaded.config.vcs_url = crate::vcs::probe(dir);
    }
    let cfg = &loaded.config;
    let archs = select_archs(&req.archs, cfg, log)?;
    crate::timing::mark("config loaded");
    let mut opts = req.options.clone();
    opts.epoch = req.epoch;
    opts.annotations = parse_annotations(&req.annotations)?;
    opts.locked = None;
    if let Some(lock) = &req.lockfile {
        let l = crate::lock::read(lock)?;
        if l.config.checksum.is_empty() {
            log(&format!(
                "warning: {} has no config checksum; cannot tell whether it matches {}",
                lock.display(),
                config_path.display()
            ));
        } else if l.config.checksum != loaded.checksum {
            return Err(ImageError::LockMismatch {
                lock: lock.clone(),
                config: config_path.clone(),
                locked: l.config.checksum,
                actual: loaded.checksum,
            });
        }
        for arch in &archs {
            if !l
                .contents
                .packages
                .iter()
                .any(|p| p.architecture == arch.apk())
            {
                return Err(ImageError::LockMissingArch {
                    lock: lock.clone(),
                    arch: arch.apk().into(),
                });
            }
        }
        opts.locked = Some(l.contents.packages);
    }
    // What builds killed here before left behind (their locks are gone); live builds' work
    // folders are locked and kept.
    pallet_atomic::sweep(work_parent);
    let work = pallet_atomic::TempDir::new_in(work_parent, "build").map_err(|source| {
        ImageError::WorkFolder {
            dir: work_parent.to_path_buf(),
            source,
        }
    })?;
    let blobs = work.path().join("blobs");
    std::fs::create_dir_all(&blobs).map_err(|source| ImageError::Io {
        what: "creating",
        path: blobs.clone(),
        source,
    })?;
    let mut results = Vec::new();
    let mut summaries = Vec::new();
    for arch in &archs {
        let r =
            build::build_arch(cfg, *arch, &opts, &blobs).map_err(|source| ImageError::Arch {
                config: config_path.clone(),
                arch: arch.apk().into(),
                source: Box::new(source),
            })?;
        let s = ArchSummary {
            arch: *arch,
            packages: r.packages.len(),
            digest: r.image.manifest.digest.clone(),
        };
        log(&format!(
            "built {} ({}): {} packages, {}",
            arch.apk(),
            req.tag,
            s.packages,
            s.digest
        ));
        summaries.push(s);
        results.push(r);
    }
    let created = results.iter().map(|r| r.created).max().unwrap_or(0);
    let images: Vec<ArchImage> = results.iter().map(|r| r.image.clone()).collect();
    let ann = build::annotations(cfg, &opts, created);
    let index = build::index_blob(&blobs, &images, &ann).map_err(|source| ImageError::Io {
        what: "writing the image index in",
        path: blobs.clone(),
        source,
    })?;
    let sboms = if req.sbom {
        sboms(req, cfg, &results, &index, created)?
    } else {
        vec![]
    };
    Ok(BuiltImage {
        work,
        blobs,
        images,
        index,
        sboms,
        archs: summaries,
    })
}

/// The SPDX and CycloneDX documents of every architecture, and the SPDX document of the index.
fn sboms(
    req: &ImageRequest,
    cfg: &ImageConfiguration,
    results: &[ArchResult],
    index: &Blob,
    created: u64,
) -> Result<Vec<(String, Value)>, ImageError> {
    let spdx = req.sbom_formats.iter().any(|x| x == "spdx");
    let cdx = req.sbom_formats.iter().any(|x| x == "cyclonedx");
    let date = build::rfc3339(created);
    let (repo_url, image_name) = match oci::split_ref(&req.tag).0.rsplit_once('/') {
        Some((a, b)) => (a.to_string(), b.to_string()),
        None => (String::new(), oci::split_ref(&req.tag).0),
    };
    let mut out = vec![];
    for r in results {
        let os_id = r.os_release.get("ID").cloned().unwrap_or_default();
        let os_ver = r.os_release.get("VERSION_ID").cloned().unwrap_or_default();
        let (oci_arch, variant) = r.image.arch.oci();
        let os = r.os_release.get("ID").map(|_| pallet_sbom::OsRelease {
            id: os_id.clone(),
            name: r.os_release.get("NAME").cloned().unwrap_or_default(),
            version_id: os_ver.clone(),
        });
        let input = pallet_sbom::ImageSbomInput {
            image_name: image_name.clone(),
            repository_url: repo_url.clone(),
            oci_arch: oci_arch.to_string(),
            oci_variant: variant.unwrap_or("").to_string(),
            apk_arch: r.image.arch.apk().to_string(),
            image_digest: r.image.manifest.digest.clone(),
            layer_digests: r.image.layers.iter().map(|l| l.digest.clone()).collect(),
            created: created as i64,
            os,
            vcs_url: cfg.vcs_url.clone().unwrap_or_default(),
            tool_version: env!("CARGO_PKG_VERSION").to_string(),
            packages: r
                .packages
                .iter()
                .map(|(p, _)| {
                    // melange writes `<name>-<version>.spdx.json`; the package's own document
                    // is merged into the image SBOM.
                    let embedded = r
                        .embedded_sboms
                        .get(&format!("{}-{}.spdx.json", p.name, p.version))
                        .cloned();
                    pallet_sbom::SbomPackage {
                        name: p.name.clone(),
                        version: p.version.clone(),
                        arch: p.arch.clone(),
                        origin: p.origin.clone().unwrap_or_default(),
                        license: p.license.clone(),
                        description: p.description.clone(),
                        url: p.url.clone(),
                        maintainer: p.maintainer.clone().unwrap_or_default(),
                        checksum_q1: p.checksum.clone().unwrap_or_default(),
                        embedded_spdx: embedded,
                    }
                })
                .collect(),
        };
        let arch = r.image.arch.apk();
        if spdx {
            out.push((
                pallet_sbom::spdx_file_name(arch),
                pallet_sbom::spdx_image(&input),
            ));
        }
        if cdx {
            out.push((
                pallet_sbom::cyclonedx_file_name(arch),
                pallet_sbom::cyclonedx_image(&input),
            ));
        }
    }
    if spdx {
        let imgs: Vec<(String, String, Vec<_>)> = results
            .iter()
            .map(|r| {
                let pkgs = r.packages.iter().map(|(p, _)| p.clone()).collect();
                (
                    r.image.arch.apk().to_string(),
                    r.image.manifest.digest.clone(),
                    pkgs,
                )
            })
            .collect();
        let distro = results
            .first()
            .and_then(|r| r.os_release.get("ID").cloned())
            .unwrap_or_else(|| "unknown".into());
        out.push((
            "sbom-index.spdx.json".into(),
            sbom::index_spdx(&index.digest, &date, &imgs, &distro),
        ));
    }
    Ok(out)
}

impl BuiltImage {
    /// The image index's digest (`sha256:…`), what `image build` prints.
    pub fn index_digest(&self) -> &str {
        &self.index.digest
    }

    pub fn index(&self) -> &Blob {
        &self.index
    }

    /// The per-architecture images, in architecture order.
    pub fn images(&self) -> &[ArchImage] {
        &self.images
    }

    /// The folder holding every blob the images and index name, by hex digest.
    pub fn blobs_dir(&self) -> &Path {
        &self.blobs
    }

    /// (file name, document) of every SBOM; empty when SBOMs were not asked for.
    pub fn sboms(&self) -> &[(String, Value)] {
        &self.sboms
    }

    /// What each architecture's progress line said.
    pub fn arch_summaries(&self) -> &[ArchSummary] {
        &self.archs
    }

    /// The work folder the blobs are in (removed when this value is dropped).
    pub fn work_dir(&self) -> &Path {
        self.work.path()
    }

    /// Write a docker-archive tarball of every architecture tagged `tag`. With
    /// `record_cache_dir`, a rebuild that gives the same image and tag leaves a tarball nobody
    /// touched since as it is (as `make` would) instead of rewriting it byte for byte; returns
    /// whether the file was written.
    pub fn write_tarball(
        &self,
        out: &Path,
        tag: &str,
        record_cache_dir: Option<&Path>,
    ) -> Result<bool, ImageError> {
        crate::timing::mark("write_tarball");
        let record = record_cache_dir.and_then(|c| tarball_record(c, out, tag, &self.index.digest));
        if let Some(r) = &record
            && unchanged_tarball(r, out)
        {
            return Ok(false);
        }
        oci::write_docker_archive(out, &self.images, tag).map_err(|source| {
            ImageError::Tarball {
                path: out.to_path_buf(),
                source,
            }
        })?;
        if let Some(r) = &record {
            remember_tarball(r, out);
        }
        crate::timing::mark("tarball written");
        Ok(true)
    }

    /// apko's `publish --local`: load one architecture's image into the Docker daemon at
    /// `socket` as `apko.local/cache:<hex>` (the manifest digest) and every tag of `tags`.
    /// The image is the one for `arch` (the machine's, where apko takes GOARCH or amd64), else
    /// the first. Returns the local reference and the daemon's lines.
    pub fn load_local(
        &self,
        socket: &Path,
        tags: &[String],
        arch: Arch,
    ) -> Result<(String, Vec<String>), ImageError> {
        let img = self
            .images
            .iter()
            .find(|i| i.arch == arch)
            .or_else(|| self.images.first())
            .cloned()
            .expect("a build has at least one image");
        let hex = img
            .manifest
            .digest
            .trim_start_matches("sha256:")
            .to_string();
        let local = format!("apko.local/cache:{hex}");
        let mut refs = vec![local.clone()];
        refs.extend(tags.iter().cloned());
        let tar = self.work.path().join("local.tar");
        oci::write_docker_archive_tags(&tar, std::slice::from_ref(&img), &refs).map_err(
            |source| ImageError::Tarball {
                path: tar.clone(),
                source,
            },
        )?;
        let lines = crate::docker::load(socket, &tar)?;
        let _ = std::fs::remove_file(&tar);
        Ok((local, lines))
    }

    /// Write a docker-archive tarball tagged with every reference of `tags` (the first is the
    /// image's name for tools that take one).
    pub fn write_tarball_tags(&self, out: &Path, tags: &[String]) -> Result<(), ImageError> {
        oci::write_docker_archive_tags(out, &self.images, tags).map_err(|source| {
            ImageError::Tarball {
                path: out.to_path_buf(),
                source,
            }
        })
    }

    /// Write an OCI image layout into the existing folder `dir`; `image_ref`'s tag names the
    /// index (and, with the architecture, each image).
    pub fn write_layout(&self, dir: &Path, image_ref: &str) -> Result<(), ImageError> {
        let (_, tag) = oci::split_ref(image_ref);
        oci::write_layout(dir, &self.blobs, &self.images, &self.index, &tag).map_err(|source| {
            ImageError::Layout {
                dir: dir.to_path_buf(),
                source,
            }
        })
    }

    /// Write the SBOMs into `dir` (created when missing); nothing when there are none.
    pub fn write_sboms(&self, dir: &Path) -> Result<(), ImageError> {
        if self.sboms.is_empty() {
            return Ok(());
        }
        std::fs::create_dir_all(dir).map_err(|source| ImageError::SbomDir {
            dir: dir.to_path_buf(),
            source,
        })?;
        for (name, doc) in &self.sboms {
            let text = serde_json::to_vec_pretty(doc).expect("JSON values serialize");
            pallet_keys::write_atomic(&dir.join(name), &text, 0o644)?;
        }
        Ok(())
    }
}

/// Where the record of the last tarball written to `out` lives, and what it says for this
/// image and tag (the file's stamp follows).
struct TarballRecord {
    path: PathBuf,
    what: String,
}

fn tarball_record(cache_dir: &Path, out: &Path, tag: &str, digest: &str) -> Option<TarballRecord> {
    use sha2::Digest as _;
    let abs = std::path::absolute(out).ok()?;
    let key: String = sha2::Sha256::digest(abs.as_os_str().as_encoded_bytes())
        .iter()
        .take(16)
        .map(|b| format!("{b:02x}"))
        .collect();
    Some(TarballRecord {
        path: cache_dir.join("outputs-v1").join(key),
        what: format!("{digest} {tag}"),
    })
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

fn unchanged_tarball(r: &TarballRecord, out: &Path) -> bool {
    let Some(stamp) = file_stamp(out) else {
        return false;
    };
    std::fs::read_to_string(&r.path).is_ok_and(|t| t == format!("{}\n{stamp}\n", r.what))
}

/// Best effort: without a record the next build just writes the tarball again.
fn remember_tarball(r: &TarballRecord, out: &Path) {
    if let Some(stamp) = file_stamp(out) {
        if let Some(dir) = r.path.parent() {
            let _ = std::fs::create_dir_all(dir);
            // What a build killed while writing its record left (its lock is gone).
            pallet_atomic::sweep(dir);
        }
        // The record is checked against the file's stamp before it is believed: no sync.
        let _ = pallet_atomic::write_cache(&r.path, format!("{}\n{stamp}\n", r.what).as_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn annotations_are_checked_as_apko_does() {
        let m = parse_annotations(&strings(&[
            "org.opencontainers.image.vendor:ACME",
            "a-b.c:x:y",
        ]))
        .unwrap();
        assert_eq!(m["org.opencontainers.image.vendor"], "ACME");
        // Only the first colon splits: values may hold colons (URLs).
        assert_eq!(m["a-b.c"], "x:y");
        let err = |v: &[&str]| parse_annotations(&strings(v)).unwrap_err().to_string();
        assert_eq!(
            err(&["novalue"]),
            "--annotations 'novalue' is not KEY:VALUE"
        );
        for bad in ["Upper:x", ":x", "k:", "a_b:x"] {
            assert!(
                err(&[bad]).contains("the key must match ^[a-z0-9-.]+$"),
                "{bad}"
            );
        }
        assert_eq!(err(&["k:1", "k:2"]), "--annotations: duplicate key 'k'");
    }

    #[test]
    fn dates_are_rfc3339_utc() {
        assert_eq!(parse_date("1970-01-01T00:00:00Z").unwrap(), 0);
        assert_eq!(parse_date("2023-11-14T22:13:20Z").unwrap(), 1_700_000_000);
        assert_eq!(
            parse_date(" 2024-02-29T12:00:00.5+00:00 ").unwrap(),
            1_709_208_000
        );
        // Before 1970 is clamped rather than wrapped.
        assert_eq!(parse_date("1969-12-31T23:59:59Z").unwrap(), 0);
        for bad in [
            "2024-01-02",
            "2024-01-02T03:04",
            "yesterday",
            "2024-01-xxT00:00:00Z",
        ] {
            assert_eq!(
                parse_date(bad).unwrap_err().to_string(),
                format!("--build-date '{bad}' is not RFC 3339 (e.g. 2024-01-02T03:04:05Z)")
            );
        }
    }

    #[test]
    fn archs_come_from_the_names_then_the_config_then_the_host() {
        let cfg = ImageConfiguration {
            archs: strings(&["aarch64"]),
            ..Default::default()
        };
        let logged = std::cell::RefCell::new(vec![]);
        let log = |l: &str| logged.borrow_mut().push(l.to_string());
        assert_eq!(
            select_archs(&strings(&["amd64", "x86_64"]), &cfg, &log).unwrap(),
            [Arch::parse("x86_64").unwrap()]
        );
        assert_eq!(
            select_archs(&[], &cfg, &log).unwrap(),
            [Arch::parse("aarch64").unwrap()]
        );
        assert!(logged.borrow().is_empty());
        assert_eq!(
            select_archs(&[], &ImageConfiguration::default(), &log).unwrap(),
            [Arch::host()]
        );
        assert_eq!(logged.borrow().len(), 1);
        assert_eq!(
            select_archs(&strings(&["z80"]), &cfg, &log)
                .unwrap_err()
                .to_string(),
            "unknown architecture 'z80'"
        );
    }
}
