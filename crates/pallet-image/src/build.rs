//! The image build: resolve, install without scripts, apply accounts and paths, write the layer
//! and the OCI image, for each architecture.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use pallet_apk_stream::tarw::Kind;
use pallet_apk_types::{Dependency, PackageInfo};
use pallet_fs::{Content, Node, Tree};
use pallet_keys::Keyring;
use serde_json::{Value, json};

use crate::config::{Arch, ImageConfiguration};
use crate::oci::{self, ArchImage, Blob};
use crate::resolve::{self, Repo};

mod accounts;
mod fetch;
mod keyring;
mod paths;
mod post_install;

use fetch::{CachedPackage, PACKAGE_CACHE, ensure_cached};
pub use keyring::{keyring, keyring_files};
pub(crate) use keyring::{parse_repo, repository_lines};
use post_install::{file, post_install};

#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("{0}")]
    Config(String),
    #[error("repository {url}: {message}")]
    Repo { url: String, message: String },
    #[error(transparent)]
    Solve(#[from] resolve::SolveError),
    #[error("package {pkg}: {message}")]
    Package { pkg: String, message: String },
    #[error(transparent)]
    Fs(#[from] pallet_fs::FsError),
    #[error(transparent)]
    Certs(#[from] crate::certs::CertError),
    #[error(transparent)]
    BaseImage(#[from] crate::baseimage::BaseImageError),
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
}

fn io_ctx(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> BuildError {
    let context = context.into();
    move |source| BuildError::Io { context, source }
}

/// Inputs from the command line that are not in the YAML.
#[derive(Clone, Debug, Default)]
pub struct BuildOptions {
    pub cache_dir: PathBuf,
    /// Build date (seconds); `SOURCE_DATE_EPOCH` or `--build-date`, else the newest package.
    pub epoch: Option<u64>,
    pub extra_keyring: Vec<String>,
    pub extra_repositories: Vec<String>,
    pub extra_build_repositories: Vec<String>,
    pub extra_packages: Vec<String>,
    pub ignore_signatures: bool,
    pub annotations: BTreeMap<String, String>,
    /// Install exactly these packages (from a lock file) instead of resolving.
    pub locked: Option<Vec<crate::lock::LockPackage>>,
    /// Compression level for layers, on libdeflate's scale (1 to 12; 0 and above 12 are taken
    /// as 1 and 12).
    pub level: u32,
    /// Never download: local repositories and the cache only.
    pub offline: bool,
    /// Repository URL prefixes read from somewhere else (air-gapped mirrors).
    pub mirrors: Vec<(String, String)>,
    /// Allow keys over plain http from hosts other than loopback.
    pub insecure_keys: bool,
    /// `--include-paths`: where `contents.baseimage` paths are also looked for.
    pub include_paths: Vec<PathBuf>,
}

impl BuildOptions {
    pub fn client(&self) -> pallet_repo::Client {
        let mut c = pallet_repo::Client::new(self.cache_dir.clone());
        c.offline = self.offline;
        c.mirrors = self.mirrors.clone();
        c.insecure_keys = self.insecure_keys;
        c
    }
}

/// What one architecture's build produced.
#[derive(Debug)]
pub struct ArchResult {
    pub image: ArchImage,
    pub packages: Vec<(PackageInfo, String)>,
    pub created: u64,
    pub os_release: BTreeMap<String, String>,
    /// The SPDX documents packages carry under `var/lib/db/sbom/`, by file name.
    pub embedded_sboms: BTreeMap<String, Value>,
}

/// A repository line: optional `@tag `, then a path or `file://` URL.
/// The repositories read, the packages chosen from them in install order, the keyring, and
/// the world asked for.
pub type Resolved = (Vec<Repo>, Vec<resolve::Pick>, Keyring, Vec<Dependency>);

/// Resolve the configured repositories, keys and packages for one architecture.
pub fn resolve(
    cfg: &ImageConfiguration,
    arch: Arch,
    opts: &BuildOptions,
) -> Result<Resolved, BuildError> {
    let keyring = keyring(cfg, arch, opts)?;
    if let Some(locked) = &opts.locked {
        return Ok(from_lock(locked, arch, keyring));
    }
    let lines = repository_lines(cfg, opts);
    let mut repos = Vec::new();
    let client = opts.client();
    for line in lines {
        let (tag, url) = parse_repo(&line);
        let index = client
            .index(&url, arch.apk())
            .map_err(|e| BuildError::Repo {
                url: pallet_repo::redact(&url),
                message: e.to_string(),
            })?;
        if !index.exists() {
            return Err(BuildError::Repo {
                url: url.clone(),
                message: format!(
                    "no index at {} (is the path right, and does it have {}?)",
                    index.display(),
                    arch.apk()
                ),
            });
        }
        let ring = (!opts.ignore_signatures).then_some(&keyring);
        let packages =
            read_index_memo(&index, ring, &opts.cache_dir).map_err(|e| BuildError::Repo {
                url: pallet_repo::redact(&url),
                message: format!(
                    "{e} (check contents.keyring, or pass --ignore-signatures to skip verification)"
                ),
            })?;
        repos.push(Repo { url, tag, packages });
    }
    // A base image's packages resolve from its own database, pinned (`apko lock` with a
    // base); they are left out of the picks, as the base already has them.
    let base = crate::baseimage::load(cfg, arch, opts)?;
    if let Some(b) = &base {
        repos.push(b.repo());
    }
    let mut world = Vec::new();
    let mut pkgs: Vec<String> = cfg
        .contents
        .packages
        .iter()
        .chain(&opts.extra_packages)
        .cloned()
        .collect();
    // A service bundle is supervised by s6, which apko adds to the world.
    let bundle = cfg.entrypoint.as_ref().and_then(|e| e.kind.as_deref()) == Some("service-bundle");
    if bundle
        && !pkgs
            .iter()
            .any(|p| p == "s6" || p.starts_with("s6=") || p.starts_with("s6@"))
    {
        pkgs.push("s6".into());
    }
    for p in &pkgs {
        // apko accepts `name=ver@tag` as well as `name@tag=ver`.
        let spec = match p.split_once('@') {
            Some((a, b))
                if a.contains(['=', '<', '>', '~']) && !b.contains(['=', '<', '>', '~']) =>
            {
                let at = a.find(['=', '<', '>', '~']).unwrap_or(a.len());
                format!("{}@{}{}", &a[..at], b, &a[at..])
            }
            _ => p.clone(),
        };
        world.push(
            Dependency::parse(&spec)
                .map_err(|e| BuildError::Config(format!("contents.packages: {e}")))?,
        );
    }
    if let Some(b) = &base {
        world.extend(b.world());
    }
    let mut picks = resolve::solve(&repos, &world)?;
    if let Some(b) = &base {
        let names = b.names();
        picks.retain(|&(r, p)| !names.contains(repos[r].packages[p].name.as_str()));
    }
    Ok((repos, picks, keyring, world))
}

/// An index read and verified once per process for as long as its file stays the same (size,
/// modification time, inode) and is checked against the same keys: a workspace build resolves
/// dozens of environments against the same few indexes. Across processes the parsed-index
/// cache in `cache` ([`pallet_index::read_index_cached`]) saves parsing and verifying again.
fn read_index_memo(
    path: &Path,
    ring: Option<&Keyring>,
    cache: &Path,
) -> Result<pallet_index::Records, pallet_index::IndexError> {
    use std::collections::HashMap;
    use std::os::unix::fs::MetadataExt as _;
    use std::sync::{Mutex, OnceLock};
    type Key = (PathBuf, u64, i64, i64, u64, Option<Vec<PathBuf>>);
    static MEMO: OnceLock<Mutex<HashMap<Key, pallet_index::Records>>> = OnceLock::new();
    let key = fs::metadata(path).ok().map(|m| {
        (
            path.to_path_buf(),
            m.len(),
            m.mtime(),
            m.mtime_nsec(),
            m.ino(),
            ring.map(|r| r.key_files()),
        )
    });
    let memo = MEMO.get_or_init(Default::default);
    if let Some(k) = &key
        && let Some(hit) = memo.lock().unwrap_or_else(|e| e.into_inner()).get(k)
    {
        return Ok(hit.clone());
    }
    let packages = if cache.as_os_str().is_empty() {
        pallet_index::read_index(path, ring)?.packages.into()
    } else {
        pallet_index::read_index_cached(path, ring, cache)?.packages
    };
    if let Some(k) = key {
        memo.lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(k, packages.clone());
    }
    Ok(packages)
}

/// The packages of a lock file for one architecture, as one-package repositories in install
/// order: the lock's control checksums take the place of the signed index.
fn from_lock(locked: &[crate::lock::LockPackage], arch: Arch, keyring: Keyring) -> Resolved {
    let mut repos = Vec::new();
    let mut picks = Vec::new();
    let mut world = Vec::new();
    for p in locked.iter().filter(|p| p.architecture == arch.apk()) {
        let suffix = format!("/{}/{}-{}.apk", arch.apk(), p.name, p.version);
        let base = p.url.strip_suffix(&suffix).unwrap_or(&p.url).to_string();
        picks.push((repos.len(), 0));
        world.push(Dependency::exact(p.name.clone(), p.version.clone()));
        repos.push(Repo {
            url: base,
            tag: None,
            packages: vec![PackageInfo {
                name: p.name.clone(),
                version: p.version.clone(),
                arch: p.architecture.clone(),
                checksum: Some(p.checksum.clone()),
                // The file size (`S:` in the installed db) is where the data section ends.
                file_size: p
                    .data
                    .as_ref()
                    .and_then(|d| d.range.rsplit('-').next()?.parse::<u64>().ok())
                    .map_or(0, |end| end + 1),
                ..PackageInfo::default()
            }]
            .into(),
        });
    }
    (repos, picks, keyring, world)
}

/// The package cache (`apk-data-v2/<hex of the identity>.tar`): each file is the package's data
/// tar followed by its control record and entry index ([`pallet_fs::cache_package`]).
const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/bin:/usr/sbin:/sbin:/bin";

/// The installed filesystem of one architecture, with the packages in it and the build date.
pub struct Installed {
    pub tree: Tree,
    pub packages: Vec<(PackageInfo, String)>,
    pub epoch: u64,
}

/// Resolve and install everything a configuration asks for, with accounts, paths and the apk
/// database, into an in-memory tree. The image build writes it as a layer; the package builder
/// writes it to a folder as its sandbox root.
pub fn install(
    cfg: &ImageConfiguration,
    arch: Arch,
    opts: &BuildOptions,
) -> Result<Installed, BuildError> {
    install_with(cfg, arch, opts, None)
}

/// [`install`], with `spec` compressing layer parts while packages are still being fetched.
fn install_with(
    cfg: &ImageConfiguration,
    arch: Arch,
    opts: &BuildOptions,
    mut spec: Option<&mut crate::layers::Speculator>,
) -> Result<Installed, BuildError> {
    crate::timing::mark("install start");
    let (repos, picks, keyring, _) = resolve(cfg, arch, opts)?;
    crate::timing::mark("resolved");
    let base = crate::baseimage::load(cfg, arch, opts)?;
    let mut tree = Tree::new();
    // apko's base directories, before any package.
    for (d, m) in [
        ("tmp", 0o1777),
        ("dev", 0o755),
        ("etc", 0o755),
        ("proc", 0o555),
        ("var", 0o755),
        ("usr", 0o755),
    ] {
        tree.put(d, Node::dir(m, 0));
    }
    if let Some(b) = &base {
        b.prepare_tree(&mut tree);
    }
    let mut resolved = Vec::new();
    let mut max_build = 0u64;
    // Remove what killed builds left half-written in the package cache (only entries whose
    // writer's lock is gone), then fetch and verify in parallel, install in resolved order.
    pallet_atomic::sweep(&opts.cache_dir.join(PACKAGE_CACHE));
    use rayon::prelude::*;
    // indicatif draws only on a terminal, so logs and CI output stay clean.
    let bar = indicatif::ProgressBar::new(picks.len() as u64).with_style(
        indicatif::ProgressStyle::with_template("{prefix} [{bar:30}] {pos}/{len} {msg}")
            .expect("valid template")
            .progress_chars("=> "),
    );
    bar.set_prefix(format!("fetching ({})", arch.apk()));
    // Fetch and verify on rayon's threads; install here, in resolved order, each package as
    // soon as it and those before it are there; and while waiting, let `spec` compress the
    // parts of packages already installed.
    let (tx, rx) = std::sync::mpsc::channel::<(usize, Result<CachedPackage, BuildError>)>();
    let installed = std::thread::scope(|s| -> Result<(), BuildError> {
        let (repos, picks, bar) = (&repos, &picks, &bar);
        // Every worker takes the next package in install order, so packages arrive about in
        // the order they are installed in.
        let next = std::sync::atomic::AtomicUsize::new(0);
        s.spawn(move || {
            (0..rayon::current_num_threads())
                .into_par_iter()
                .for_each_with(tx, |tx, _| {
                    loop {
                        let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        let Some(&(r, p)) = picks.get(i) else { break };
                        let res = ensure_cached(&repos[r], &repos[r].packages[p], arch, opts);
                        bar.set_message(repos[r].packages[p].name.clone());
                        bar.inc(1);
                        let _ = tx.send((i, res));
                    }
                });
        });
        let mut ready = BTreeMap::new();
        for (i, &(r, _)) in picks.iter().enumerate() {
            let c = loop {
                if let Some(c) = ready.remove(&i) {
                    break c;
                }
                if let Ok((j, c)) = rx.try_recv() {
                    ready.insert(j, c);
                    continue;
                }
                if spec.as_deref_mut().is_some_and(|sp| sp.work(&tree)) {
                    continue;
                }
                let (j, c) = rx.recv().expect("every package is reported");
                ready.insert(j, c);
            };
            let (tar, meta, entries) = c?;
            max_build = max_build.max(meta.info.build_time);
            resolved.push((meta.info.clone(), repos[r].url.clone()));
            tree.install_entries(meta, &tar, &entries)?;
            if let Some(sp) = spec.as_deref_mut() {
                sp.installed(i);
            }
        }
        Ok(())
    });
    bar.finish_and_clear();
    installed?;
    crate::timing::mark("installed");
    // apko's build date counts a base image's packages too.
    let epoch = opts
        .epoch
        .unwrap_or(max_build.max(base.as_ref().map_or(0, |b| b.build_time())));
    post_install(
        &mut tree,
        cfg,
        arch,
        &keyring,
        &resolved,
        opts,
        base.as_ref(),
        epoch,
    )?;
    crate::timing::mark("post-installed");
    Ok(Installed {
        tree,
        packages: resolved,
        epoch,
    })
}

/// Which paths go into which layer. Without `layering`, one layer holds everything. With
/// `strategy: origin` and a `budget`, packages are grouped by origin, the `budget - 1` largest
/// groups (by installed size, ties by name) each get a layer, the rest share one, and a top
/// layer holds what no package owns (directories, the apk database, accounts, generated
/// files). Each package layer carries the directories above its files. `None` stands for
/// every path.
fn layer_plan(
    cfg: &ImageConfiguration,
    tree: &Tree,
) -> Result<Vec<Option<std::collections::BTreeSet<String>>>, BuildError> {
    let all = || {
        tree.nodes
            .keys()
            .cloned()
            .collect::<std::collections::BTreeSet<String>>()
    };
    let Some(l) = cfg.layering.as_ref().filter(|l| l.budget > 0) else {
        return Ok(vec![None]);
    };
    if !l.strategy.is_empty() && l.strategy != "origin" {
        return Err(BuildError::Config(format!(
            "layering: unknown strategy '{}' (only 'origin')",
            l.strategy
        )));
    }
    let mut groups: BTreeMap<String, (u64, Vec<usize>)> = BTreeMap::new();
    for (i, p) in tree.packages.iter().enumerate() {
        let origin = p.info.origin.clone().unwrap_or_else(|| p.info.name.clone());
        let g = groups.entry(origin).or_default();
        g.0 += p.info.installed_size;
        g.1.push(i);
    }
    let mut ordered: Vec<(String, (u64, Vec<usize>))> = groups.into_iter().collect();
    ordered.sort_by(|a, b| b.1.0.cmp(&a.1.0).then_with(|| b.0.cmp(&a.0)));
    let keep = (l.budget as usize).saturating_sub(1);
    let mut package_layers: Vec<Vec<usize>> = ordered
        .iter()
        .take(keep)
        .map(|(_, (_, v))| v.clone())
        .collect();
    let overflow: Vec<usize> = ordered
        .iter()
        .skip(keep)
        .flat_map(|(_, (_, v))| v.clone())
        .collect();
    if !overflow.is_empty() {
        package_layers.push(overflow);
    }
    let mut out = vec![];
    let mut owned = std::collections::BTreeSet::new();
    for members in package_layers {
        let set = tree.with_parents(|_, n| {
            n.kind != Kind::Dir && n.owner.is_some_and(|o| members.contains(&o))
        });
        owned.extend(
            set.iter()
                .filter(|p| tree.get(p).is_some_and(|n| n.kind != Kind::Dir))
                .cloned(),
        );
        out.push(Some(set));
    }
    out.push(Some(
        all().into_iter().filter(|p| !owned.contains(p)).collect(),
    ));
    Ok(out)
}

/// Build one architecture's image into `blobs`.
pub fn build_arch(
    cfg: &ImageConfiguration,
    arch: Arch,
    opts: &BuildOptions,
    blobs: &Path,
) -> Result<ArchResult, BuildError> {
    crate::baseimage::check_build(cfg, opts)?;
    let Installed {
        tree,
        packages: resolved,
        epoch,
    } = install_with(
        cfg,
        arch,
        opts,
        Some(&mut crate::layers::Speculator::new(
            &opts.cache_dir,
            opts.level,
        )),
    )?;
    let names = crate::layers::owner_names(&tree);
    let mut layers = vec![];
    let mut diff_ids = vec![];
    for filter in layer_plan(cfg, &tree)? {
        let (layer, diff_id) = crate::layers::tree_layer(
            &tree,
            &names,
            filter.as_ref(),
            &opts.cache_dir,
            blobs,
            opts.level,
        )
        .map_err(io_ctx("writing a layer"))?;
        layers.push(layer);
        diff_ids.push(diff_id);
    }
    crate::timing::mark("layers written");
    let os_release = parse_os_release(&tree);
    let ann = annotations(cfg, opts, epoch);
    let mut config = image_config(cfg, arch, epoch, &diff_ids, &ann, &tree)?;
    // On a base image, the new layer goes on top of the base's config and layers.
    let base = crate::baseimage::load(cfg, arch, opts)?;
    if let Some(b) = &base {
        config = b.config(&config);
    }
    let config_blob = oci::put_blob(blobs, &config).map_err(io_ctx("writing the image config"))?;
    let new_layers: Vec<Value> = layers
        .iter()
        .map(|l| oci::descriptor(oci::MT_LAYER_GZ, l))
        .collect();
    let manifest = match &base {
        Some(b) => b.manifest(&config_blob, &new_layers, &ann),
        None => {
            let mut manifest = json!({
                "schemaVersion": 2,
                "mediaType": oci::MT_MANIFEST,
                "config": oci::descriptor(oci::MT_CONFIG, &config_blob),
                "layers": new_layers,
            });
            if !ann.as_object().is_none_or(|o| o.is_empty()) {
                manifest["annotations"] = ann;
            }
            serde_json::to_vec(&manifest).expect("JSON")
        }
    };
    let manifest_blob = oci::put_blob(blobs, &manifest).map_err(io_ctx("writing the manifest"))?;
    let mut packages = resolved;
    if let Some(b) = &base {
        let mut all = b.layers(blobs)?;
        all.append(&mut layers);
        layers = all;
        // The SBOM lists what the image holds, as apko's lists its installed database.
        let mut all = b.installed();
        all.append(&mut packages);
        packages = all;
    }
    Ok(ArchResult {
        image: ArchImage {
            arch,
            config: config_blob,
            manifest: manifest_blob,
            layers,
        },
        packages,
        created: epoch,
        os_release,
        embedded_sboms: embedded_spdx(&tree)
            .into_iter()
            .filter_map(|(path, bytes)| {
                let name = path.rsplit('/').next()?.to_string();
                Some((name, serde_json::from_slice(&bytes).ok()?))
            })
            .collect(),
    })
}

pub fn rfc3339(secs: u64) -> String {
    pallet_sbom::rfc3339_utc(secs.min(i64::MAX as u64) as i64)
}

pub fn annotations(cfg: &ImageConfiguration, opts: &BuildOptions, epoch: u64) -> Value {
    let mut a: BTreeMap<String, String> = cfg.annotations.clone();
    for (k, v) in &opts.annotations {
        a.insert(k.clone(), v.clone());
    }
    a.insert("org.opencontainers.image.created".into(), rfc3339(epoch));
    // apko cuts at the first `@` (strings.Cut).
    if let Some((url, rev)) = cfg.vcs_url.as_deref().and_then(|v| v.split_once('@')) {
        a.insert("org.opencontainers.image.source".into(), url.into());
        a.insert("org.opencontainers.image.revision".into(), rev.into());
    }
    json!(a)
}

fn image_config(
    cfg: &ImageConfiguration,
    arch: Arch,
    epoch: u64,
    diff_ids: &[String],
    labels: &Value,
    tree: &Tree,
) -> Result<Vec<u8>, BuildError> {
    let (a, variant) = arch.oci();
    let mut env: BTreeMap<String, String> = cfg.environment.clone();
    env.entry("PATH".into())
        .or_insert_with(|| DEFAULT_PATH.into());
    env.entry("SSL_CERT_FILE".into())
        .or_insert_with(|| "/etc/ssl/certs/ca-certificates.crt".into());
    let env: Vec<String> = env.iter().map(|(k, v)| format!("{k}={v}")).collect();
    let mut c = json!({"Env": env});
    let ep = cfg.entrypoint_argv().map_err(BuildError::Config)?;
    if !ep.is_empty() {
        c["Entrypoint"] = json!(ep);
    }
    let cmd = cfg.cmd_argv().map_err(BuildError::Config)?;
    if !cmd.is_empty() {
        c["Cmd"] = json!(cmd);
    }
    if let Some(w) = cfg.work_dir.as_deref().filter(|w| !w.is_empty()) {
        c["WorkingDir"] = json!(w);
    }
    if let Some(user) = cfg
        .accounts
        .as_ref()
        .and_then(|a| a.run_as.clone())
        .filter(|u| !u.is_empty())
    {
        // A user name becomes its uid when the image's /etc/passwd knows it, as in apko.
        let passwd =
            String::from_utf8_lossy(&tree.read("etc/passwd").ok().flatten().unwrap_or_default())
                .into_owned();
        let uid = passwd.lines().find_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            (f.first() == Some(&user.as_str()))
                .then(|| f.get(2).map(|s| s.to_string()))
                .flatten()
        });
        c["User"] = json!(uid.unwrap_or(user));
    }
    if let Some(s) = cfg.stop_signal.as_deref().filter(|s| !s.is_empty()) {
        c["StopSignal"] = json!(s);
    }
    if !cfg.volumes.is_empty() {
        let v: BTreeMap<&str, Value> = cfg
            .volumes
            .iter()
            .map(|v| (v.as_str(), json!({})))
            .collect();
        c["Volumes"] = json!(v);
    }
    // apko's labels are the manifest's annotations: the configured and --annotations ones,
    // the VCS source and revision, and the created time.
    if labels.as_object().is_some_and(|o| !o.is_empty()) {
        c["Labels"] = labels.clone();
    }
    let mut out = json!({
        "architecture": a,
        "author": "pallet",
        "created": rfc3339(epoch),
        "history": diff_ids.iter().map(|_| json!({
            "author": "pallet",
            "created": rfc3339(epoch),
            "created_by": "pallet",
            "comment": if diff_ids.len() == 1 { "This is a pallet single-layer image" } else { "" },
        })).collect::<Vec<_>>(),
        "os": "linux",
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
        "config": c,
    });
    if let Some(v) = variant {
        out["variant"] = json!(v);
    }
    Ok(serde_json::to_vec(&out).expect("JSON values serialize"))
}

fn parse_os_release(tree: &Tree) -> BTreeMap<String, String> {
    let text = tree
        .read("etc/os-release")
        .ok()
        .flatten()
        .or_else(|| tree.read("usr/lib/os-release").ok().flatten())
        .unwrap_or_default();
    String::from_utf8_lossy(&text)
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.trim_matches('"').to_string()))
        .collect()
}

/// Content of a file in the tree (for SBOM discovery of packages' own SPDX files).
pub fn embedded_spdx(tree: &Tree) -> Vec<(String, Vec<u8>)> {
    tree.nodes
        .iter()
        .filter(|(k, n)| {
            k.starts_with("var/lib/db/sbom/") && k.ends_with(".spdx.json") && n.kind == Kind::File
        })
        .filter_map(|(k, _)| Some((k.clone(), tree.read(k).ok().flatten()?)))
        .collect()
}

#[allow(dead_code)]
fn _assert_send(_: Arc<Content>) {}

/// The per-architecture image descriptors and the index blob for a build.
pub fn index_blob(blobs: &Path, images: &[ArchImage], ann: &Value) -> std::io::Result<Blob> {
    oci::put_blob(blobs, &oci::index_json(images, ann))
}
