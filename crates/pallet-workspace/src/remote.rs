//! Package nodes as REAPI actions: run on a remote executor (`--remote-executor`), or looked up
//! in and shared through a remote ActionCache (`--remote-cache`).
//!
//! Each package node becomes one Action:
//!
//! - its **input root** holds exactly the node's inputs: the recipe file, its source folder, the
//!   pipeline folders, the keys, the whole resolved build environment, and `node.json`
//!   ([`NodeSpec`]) saying how to build. The environment is resolved here, as for the node's
//!   key: every package it resolves to, the workspace's own and those of external
//!   repositories alike, goes in `env/N/ARCH/`, one folder per repository it came from, beside
//!   an index of just those packages' original records signed with the user's key (so two
//!   machines make the same bytes), and `node.json` carries the lock ([`EnvLock`]: name,
//!   version, checksum and origin of each). Packages of http(s) repositories are fetched once
//!   into the cache, verified against the signed index. The worker installs from the input
//!   root alone and never contacts a repository, and since the CAS holds each package once,
//!   FindMissingBlobs uploads a shared environment once;
//! - its **Command** is `pallet build-node node.json`, the worker's own pallet (its version is
//!   in the Command and checked by the worker);
//! - its **salt** is the node's shared key (its content key without the signing key:
//!   [`crate::cache::Inputs::shared_key`]), so the Action digest follows from the key and
//!   every machine computes the same one, whoever signs the packages;
//! - its **outputs** are the unsigned packages `out/ARCH/NAME-VERSION.apk` and the build log.
//!
//! That Action's digest needs the SHA-256 of every environment package, and so the files. Its
//! results are therefore looked up, and kept, under a second digest that needs no file: the
//! node's **lookup action** ([`lookup`]), whose Command names the content key and the recipe's
//! path and whose input root is empty. A lookup that hits downloads only the result; on a miss
//! the full Action is made and executed (or the node built here), and the verified result is
//! written under the lookup action for the next client. The registry cache is tagged by it too.
//!
//! Results are never trusted: every blob is checked against its digest as it is read, every
//! package must be a well-formed APK (checksums of each section and file) of one of the
//! recipe's packages at the recipe's version and arch, and only then is it signed here with
//! the user's key (which never leaves this machine). A result that fails is rebuilt, and the
//! log says which action was.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use pallet_image::config::Arch;
use pallet_reapi::proto::{ActionResult, Digest, OutputFile};
use pallet_reapi::tree::{Blobs, InputTree};
use pallet_reapi::{Client, action, digest};
use serde::{Deserialize, Serialize};

use crate::cache;
use crate::run::Ctx;

/// Where remote work goes.
#[derive(Clone, Debug, Default)]
pub struct Remote {
    /// Runs actions (and serves its own ActionCache).
    pub executor: Option<Client>,
    /// Looked up before building, written after a local build.
    pub cache: Option<Client>,
    /// An OCI registry repository holding results as artifacts (`--cache-registry`), looked
    /// up first and written after any build that did not come from it.
    pub registry: Option<pallet_registry::Reference>,
    /// What happened, for the closing summary and benchmarks.
    pub counts: Arc<Counts>,
}

#[derive(Debug, Default)]
pub struct Counts {
    pub executed: AtomicU64,
    pub cache_hits: AtomicU64,
    pub uploaded_results: AtomicU64,
    pub rejected: AtomicU64,
    pub registry_hits: AtomicU64,
    pub registry_pushed: AtomicU64,
}

impl Remote {
    /// The server whose ActionCache is read: the cache when one is named, else the executor.
    fn ac(&self) -> Option<&Client> {
        self.cache.as_ref().or(self.executor.as_ref())
    }

    /// One line for the summary: actions, hits and bytes moved.
    pub fn summary(&self) -> String {
        let (mut up, mut down) = (0, 0);
        for c in self.executor.iter().chain(self.cache.iter()) {
            up += c.stats().uploaded_bytes.load(Ordering::Relaxed);
            down += c.stats().downloaded_bytes.load(Ordering::Relaxed);
        }
        let c = &self.counts;
        format!(
            "remote: {} executed, {} cache hits, {} results uploaded, {} rejected, {} registry hits, {} pushed to the registry; {} uploaded, {} downloaded",
            c.executed.load(Ordering::Relaxed),
            c.cache_hits.load(Ordering::Relaxed),
            c.uploaded_results.load(Ordering::Relaxed),
            c.rejected.load(Ordering::Relaxed),
            c.registry_hits.load(Ordering::Relaxed),
            c.registry_pushed.load(Ordering::Relaxed),
            bytes(up),
            bytes(down)
        )
    }
}

fn bytes(n: u64) -> String {
    if n >= 1 << 20 {
        format!("{:.1} MiB", n as f64 / f64::from(1 << 20))
    } else {
        format!("{:.1} KiB", n as f64 / 1024.0)
    }
}

/// How a worker builds a node, from inside the action's input root (`node.json`). Every path
/// is relative to the input root: the worker reads nothing else, and contacts no repository.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct NodeSpec {
    pub pallet: String,
    pub recipe: String,
    pub arch: String,
    pub pipeline_dirs: Vec<String>,
    pub build_options: Vec<String>,
    /// The SHA-256 of the compiled recipe the client keyed the node by: a worker that compiles
    /// something else (another pallet, other pipelines) refuses to build.
    pub config_sha: String,
    pub source_dir: Option<String>,
    pub bootstrap: bool,
    pub source_date_epoch: u64,
    pub namespace: String,
    pub env_file: BTreeMap<String, String>,
    /// The resolved build environment, every package of it in the input root (none for a
    /// bootstrap node, whose guest is the host's root).
    pub environment: Option<EnvLock>,
    /// Key files in the input root (`keys/NAME`): the user's public key, which signs the
    /// environment's indexes, and the keys the environment was resolved with, so that the
    /// guest's `/etc/apk/keys` is what a local build gets.
    pub keyring: Vec<String>,
}

/// The environment as the client resolved it: the lock the worker installs from, and nothing
/// else.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct EnvLock {
    /// One folder of the input root per repository the environment takes packages from, in
    /// the order the client read them.
    pub repositories: Vec<EnvRepo>,
    /// Every package, in install order.
    pub packages: Vec<LockedPackage>,
}

/// A repository of the environment as the input root holds it: `DIR/ARCH/APKINDEX.tar.gz`
/// (the original index records of just the packages taken from it, signed with the user's
/// key) and those packages.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct EnvRepo {
    /// `env/N`.
    pub dir: String,
    /// The repository's `@tag`, kept so that `name@tag` still resolves.
    pub tag: Option<String>,
    /// Where the client took it from, named without anything of the client's machine, so
    /// that every machine computes the same action: `workspace` for the workspace's own
    /// packages, a URL without its credentials, the path of a folder inside the workspace,
    /// or `local:NAME` for a folder elsewhere (its last component).
    pub origin: String,
}

/// One package of the environment.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct LockedPackage {
    pub name: String,
    pub version: String,
    /// The control checksum (`Q1…`) the repository's signed index gave: the worker installs
    /// the file only when it matches.
    pub checksum: String,
    /// The [`EnvRepo::dir`] it came from.
    pub repository: String,
}

const SPEC: &str = "node.json";
pub(crate) const OUT: &str = "out";
pub(crate) const LOG: &str = "out/build.log";
const SOURCES: &str = "sources";
/// `ExecutionStage` values.
const QUEUED: i32 = 2;
const EXECUTING: i32 = 3;

/// `PATH` relative to the workspace root when it is under it.
fn rel_to(root: &Path, p: &Path) -> Option<String> {
    p.strip_prefix(root).ok().map(|r| r.display().to_string())
}

/// Every regular file under `dir` (sorted), added at `at/…`.
fn add_tree(t: &mut InputTree, dir: &Path, at: &str) -> Result<(), String> {
    for e in walkdir::WalkDir::new(dir).sort_by_file_name() {
        let e = e.map_err(|e| format!("reading {}: {e}", dir.display()))?;
        let rel = e.path().strip_prefix(dir).expect("under dir");
        if rel.as_os_str().is_empty() {
            continue;
        }
        let name = format!("{at}/{}", rel.display());
        if e.file_type().is_dir() {
            t.add_dir(&name).map_err(|e| e.to_string())?;
        } else if e.file_type().is_file() {
            t.add_file(&name, e.path()).map_err(|e| e.to_string())?;
        }
    }
    Ok(())
}

/// An action ready to look up or run.
pub(crate) struct Prepared {
    pub digest: Digest,
    pub blobs: Blobs,
    /// Of those, the Action and Command alone: what a result shared through the cache needs
    /// (the server checks that a result's outputs exist, never its inputs), so that sharing a
    /// local build does not upload its whole environment.
    pub messages: Blobs,
    /// Output paths, relative to the input root.
    pub outputs: Vec<String>,
}

impl Prepared {
    /// The output path the package file `f` (a built `.apk`) answers to.
    pub(crate) fn output_of(&self, f: &Path) -> Result<&String, String> {
        let name = f.file_name().unwrap_or_default().to_string_lossy();
        self.outputs
            .iter()
            .find(|o| o.ends_with(&format!("/{name}")))
            .ok_or_else(|| format!("{name} is not an output of the action"))
    }
}

/// The node's Action: input root, Command and Action, and every blob they need.
pub(crate) fn prepare(ctx: &Ctx, i: usize, key: &str) -> Result<Prepared, String> {
    let ws = ctx.ws;
    let r = &ws.recipes[i];
    let arch = r.arch;
    let mut t = InputTree::new();
    let recipe = r.file.display().to_string();
    t.add_file(&recipe, &ws.root.join(&r.file))
        .map_err(|e| e.to_string())?;
    // The sources the build sees, and nothing else, in their own folder: a recipe whose
    // source folder is its own folder would otherwise see the rest of the input root.
    let source_dir = match &r.source_dir {
        Some(src) => {
            let abs = ws.root.join(src);
            let files = pallet_build::driver::visible_source_files(&abs, &ws.source_exclude(src))
                .map_err(|e| format!("reading the source folder {}: {e}", src.display()))?;
            t.add_dir(SOURCES).map_err(|e| e.to_string())?;
            for (rel, is_dir) in files {
                let name = format!("{SOURCES}/{}", rel.display());
                if is_dir {
                    t.add_dir(&name).map_err(|e| e.to_string())?;
                } else {
                    t.add_file(&name, &abs.join(&rel))
                        .map_err(|e| e.to_string())?;
                }
            }
            Some(SOURCES.to_string())
        }
        None => None,
    };
    let mut pipeline_dirs = vec![];
    for (n, p) in ws.pipeline_dirs.iter().enumerate() {
        let at = rel_to(&ws.root, p).unwrap_or_else(|| format!("pipelines-{n}"));
        add_tree(&mut t, p, &at)?;
        pipeline_dirs.push(at);
    }
    // The public key joins the keyring under its own name (signatures name the key file).
    let mut keys = Keys::default();
    let mut pub_key = ws.signing_key.as_os_str().to_owned();
    pub_key.push(".pub");
    let pub_key = PathBuf::from(pub_key);
    if pub_key.is_file() {
        keys.add(&mut t, &pub_key)?;
    }
    let environment = if r.bootstrap {
        None
    } else {
        Some(add_environment(
            ctx,
            &mut t,
            &mut keys,
            &r.plan.environment,
            arch,
        )?)
    };
    let build_options: Vec<String> = ws
        .flags
        .build_options
        .iter()
        .chain(&ws.settings.build_options)
        .cloned()
        .collect();
    let spec = NodeSpec {
        pallet: env!("CARGO_PKG_VERSION").to_string(),
        recipe: recipe.clone(),
        arch: arch.apk().to_string(),
        pipeline_dirs,
        build_options,
        config_sha: cache::sha256_json(&r.compiled),
        source_dir,
        bootstrap: r.bootstrap,
        source_date_epoch: ctx.ro.source_date_epoch,
        namespace: ctx.namespace(),
        env_file: ctx.env_file.clone(),
        environment,
        keyring: keys.names,
    };
    t.add_bytes(
        SPEC,
        serde_json::to_vec_pretty(&spec).expect("serialises"),
        false,
    )
    .map_err(|e| format!("{SPEC}: {e}"))?;
    let (root, mut blobs) = t.build();
    let outputs = output_paths(r);
    let (d, action_msg, command_msg) = action::encode(
        &action::Spec {
            arguments: vec!["pallet".into(), "build-node".into(), SPEC.into()],
            environment: vec![("PALLET_VERSION".into(), env!("CARGO_PKG_VERSION").into())],
            outputs: outputs.clone(),
            platform: vec![("OSFamily".into(), "linux".into())],
            input_root: root,
            salt: key.as_bytes().to_vec(),
            timeout_secs: r
                .plan
                .timeout
                .map_or(0, |t| i64::try_from(t.as_secs()).unwrap_or(0)),
        },
        &mut blobs,
    );
    let mut messages = Blobs::new();
    messages.add_message(&action_msg);
    messages.add_message(&command_msg);
    Ok(Prepared {
        digest: d,
        blobs,
        messages,
        outputs,
    })
}

/// What an action of recipe `r` outputs: its unsigned packages and the build log.
fn output_paths(r: &crate::load::Recipe) -> Vec<String> {
    let mut outputs: Vec<String> = r
        .outputs
        .iter()
        .map(|n| format!("{OUT}/{}/{n}-{}.apk", r.arch.apk(), r.version))
        .collect();
    outputs.push(LOG.to_string());
    outputs
}

/// The node's lookup action: the ActionCache entry (and the registry tag) its result is kept
/// under. The full action's digest covers every environment package's SHA-256, which no APK
/// index gives, so computing it on a cold client means downloading the whole environment, even
/// when the result is cached. This one is made of what the node's shared key already covers
/// (the compiled recipe, its sources, the environment lock with its checksums, the options
/// but the signing key, and pallet's version) plus the recipe's path, which the packages record:
/// the same on every machine, with no file of the environment read. Its input root is empty
/// and it is never executed (its Command names no program); results are written under it only
/// after the client has verified them, and taken from it only after verifying them again.
pub(crate) fn lookup(ctx: &Ctx, i: usize, key: &str) -> Prepared {
    let r = &ctx.ws.recipes[i];
    let outputs = output_paths(r);
    let mut messages = Blobs::new();
    let (digest, _, _) = action::encode(
        &action::Spec {
            arguments: vec![
                "pallet-node-result".into(),
                key.into(),
                r.file.display().to_string(),
            ],
            environment: vec![("PALLET_VERSION".into(), env!("CARGO_PKG_VERSION").into())],
            outputs: outputs.clone(),
            platform: vec![("OSFamily".into(), "linux".into())],
            input_root: digest::empty(),
            salt: key.as_bytes().to_vec(),
            timeout_secs: 0,
        },
        &mut messages,
    );
    Prepared {
        digest,
        blobs: messages.clone(),
        messages,
        outputs,
    }
}

/// The key files an input root holds, by file name: signatures name the key they were made
/// with, so a second file of the same name could never be told apart (the first wins, as in
/// the image builder's keyring).
#[derive(Default)]
struct Keys {
    names: Vec<String>,
}

impl Keys {
    fn add(&mut self, t: &mut InputTree, file: &Path) -> Result<(), String> {
        let name = format!(
            "keys/{}",
            file.file_name().unwrap_or_default().to_string_lossy()
        );
        if !self.names.contains(&name) {
            t.add_file(&name, file)
                .map_err(|e| format!("key {}: {e}", file.display()))?;
            self.names.push(name);
        }
        Ok(())
    }
}

/// Resolve `cfg` as the node's key did, and put the whole environment in the input root:
/// per repository it takes packages from, `env/N/ARCH/` with those packages and an index of
/// their original records signed with the user's key; and every key it was resolved with in
/// `keys/`. The worker then needs no repository at all. Returns the lock.
fn add_environment(
    ctx: &Ctx,
    t: &mut InputTree,
    keys: &mut Keys,
    cfg: &pallet_image::config::ImageConfiguration,
    arch: Arch,
) -> Result<EnvLock, String> {
    let resolve_err = |e: String| format!("resolving the build environment: {e}");
    let bopts = ctx.build_options(false);
    let (repos, picks, keyring, _) =
        pallet_image::build::resolve(cfg, arch, &bopts).map_err(|e| resolve_err(e.to_string()))?;
    for k in keyring.key_files() {
        keys.add(t, &k)?;
    }
    let client = bopts.client();
    let scratch = ctx
        .cache
        .scratch()
        .map_err(|e| format!("creating a scratch folder: {e}"))?;
    let mut lock = EnvLock::default();
    // Repositories in the order they were read, each given the next folder once it is used.
    let mut used: Vec<usize> = picks.iter().map(|&(r, _)| r).collect();
    used.sort_unstable();
    used.dedup();
    for (n, &ri) in used.iter().enumerate() {
        let repo = &repos[ri];
        let dir = format!("env/{n}");
        let mut records = vec![];
        for &(_, p) in picks.iter().filter(|&&(r, _)| r == ri) {
            let info = &repo.packages[p];
            let checksum = info
                .checksum
                .clone()
                .ok_or_else(|| format!("{}: its index record has no checksum", info.nv()))?;
            let file = package_file(ctx, &client, &repo.url, arch, info, &checksum)?;
            t.add_file_as(
                &format!("{dir}/{}/{}", arch.apk(), info.file_name()),
                &file,
                file_digest(&file)?,
                false,
            )
            .map_err(|e| e.to_string())?;
            records.push(info.clone());
        }
        let idx = scratch.path().join(format!("APKINDEX-{n}.tar.gz"));
        pallet_index::write_index(
            &records,
            None,
            ctx.key.as_ref(),
            ctx.ro.source_date_epoch,
            &idx,
        )
        .map_err(|e| format!("writing the environment's index: {e}"))?;
        let bytes = std::fs::read(&idx).map_err(|e| format!("{}: {e}", idx.display()))?;
        t.add_bytes(
            &format!("{dir}/{}/APKINDEX.tar.gz", arch.apk()),
            bytes,
            false,
        )
        .map_err(|e| e.to_string())?;
        lock.repositories.push(EnvRepo {
            dir,
            tag: repo.tag.clone(),
            origin: origin(ctx, &repo.url),
        });
    }
    // The lock lists packages in install order, as the worker's solver will too.
    for &(r, p) in &picks {
        let info = &repos[r].packages[p];
        let n = used
            .iter()
            .position(|&u| u == r)
            .expect("a used repository");
        lock.packages.push(LockedPackage {
            name: info.name.clone(),
            version: info.version.clone(),
            checksum: info.checksum.clone().unwrap_or_default(),
            repository: format!("env/{n}"),
        });
    }
    Ok(lock)
}

/// A package file's digest, hashed once per process while the file stays the same (size,
/// modification time, inode): the actions of one build share environments, and a compiler's
/// is hundreds of MB.
fn file_digest(path: &Path) -> Result<Digest, String> {
    use std::collections::HashMap;
    use std::os::unix::fs::MetadataExt as _;
    use std::sync::{Mutex, OnceLock};
    type Key = (PathBuf, u64, i64, i64, u64);
    static MEMO: OnceLock<Mutex<HashMap<Key, Digest>>> = OnceLock::new();
    let m = std::fs::metadata(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let key = (
        path.to_path_buf(),
        m.len(),
        m.mtime(),
        m.mtime_nsec(),
        m.ino(),
    );
    let memo = MEMO.get_or_init(Default::default);
    if let Some(d) = memo.lock().unwrap_or_else(|e| e.into_inner()).get(&key) {
        return Ok(d.clone());
    }
    let d = digest::of_file(path).map_err(|e| e.to_string())?;
    memo.lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(key, d.clone());
    Ok(d)
}

/// A repository's name in the lock, the same on every machine (see [`EnvRepo::origin`]).
fn origin(ctx: &Ctx, url: &str) -> String {
    if url == ctx.repos[0] {
        return "workspace".into();
    }
    if pallet_repo::is_remote(url) {
        return pallet_repo::redact(url);
    }
    let path = Path::new(url.strip_prefix("file://").unwrap_or(url));
    match rel_to(&ctx.ws.root, path) {
        Some(rel) if !rel.is_empty() => rel,
        _ => format!(
            "local:{}",
            path.file_name().unwrap_or_default().to_string_lossy()
        ),
    }
}

/// The local file of one environment package: in its folder for a local repository (the
/// workspace's own included), else fetched once into the cache, and kept only when its control
/// checksum is the one the signed index gave.
fn package_file(
    ctx: &Ctx,
    client: &pallet_repo::Client,
    repo: &str,
    arch: Arch,
    info: &pallet_apk_types::PackageInfo,
    checksum: &str,
) -> Result<PathBuf, String> {
    let url = client.rewrite(repo);
    if !pallet_repo::is_remote(&url) {
        return Ok(Path::new(url.strip_prefix("file://").unwrap_or(&url))
            .join(arch.apk())
            .join(info.file_name()));
    }
    let to = ctx.cache.env_package(checksum);
    if to.is_file() {
        return Ok(to);
    }
    let shown = format!(
        "{}/{}/{}",
        pallet_repo::redact(repo),
        arch.apk(),
        info.file_name()
    );
    let mut body = client
        .open_package(repo, arch.apk(), &info.file_name())
        .map_err(|e| format!("fetching {shown}: {e}"))?;
    ctx.cache
        .write_atomic(&to, |w| {
            // Read and verify the package while writing it, then copy whatever follows the
            // last section the reader needed.
            let mut tee = Tee {
                from: &mut body,
                to: &mut *w,
            };
            let meta = pallet_apk_stream::read_apk(
                &mut tee,
                &pallet_apk_stream::ReadOptions::default(),
                |_, _| Ok(()),
            )
            .map_err(|e| std::io::Error::other(format!("{shown}: {e}")))?;
            std::io::copy(&mut tee, &mut std::io::sink())?;
            if meta.identity != checksum {
                return Err(std::io::Error::other(format!(
                    "{shown}: its control checksum {} is not the {checksum} its signed index gives",
                    meta.identity
                )));
            }
            Ok(())
        })
        .map_err(|e| format!("caching {shown}: {e}"))?;
    Ok(to)
}

/// A reader that writes what it reads.
struct Tee<'a, R, W> {
    from: &'a mut R,
    to: &'a mut W,
}

impl<R: std::io::Read, W: std::io::Write> std::io::Read for Tee<'_, R, W> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.from.read(buf)?;
        self.to.write_all(&buf[..n])?;
        Ok(n)
    }
}

/// Build recipe `i` through the remote: its packages, verified and signed here, in
/// `staging/ARCH/`.
pub(crate) fn build(
    ctx: &Ctx,
    remote: &Remote,
    i: usize,
    key: &str,
    staging: &Path,
    log: &pallet_build::log::Log,
    note: &dyn Fn(&str),
) -> Result<Vec<PathBuf>, String> {
    // Looked up by the lookup action alone: the full action (and its environment's files) is
    // made only when no cache has the result.
    let l = lookup(ctx, i, key);
    let show = digest::show(&l.digest);
    let mut from_registry = None;
    if let Some(reg) = &remote.registry {
        match crate::remote_registry::get(ctx, reg, i, &l, staging) {
            Ok(Some(files)) => from_registry = Some(files),
            Ok(None) => {}
            Err(why) => {
                remote.counts.rejected.fetch_add(1, Ordering::Relaxed);
                note(&format!(
                    "registry result of action {show} rejected ({why}); rebuilding it"
                ));
            }
        }
    }
    let files = match from_registry {
        Some(files) => {
            remote.counts.registry_hits.fetch_add(1, Ordering::Relaxed);
            note(&format!("registry hit, action {show}"));
            files
        }
        None => {
            let files = build_unsigned_remote(ctx, remote, i, key, &l, staging, log, note)?;
            if let Some(reg) = &remote.registry {
                match crate::remote_registry::put(reg, &l, &files) {
                    Ok(()) => {
                        remote
                            .counts
                            .registry_pushed
                            .fetch_add(1, Ordering::Relaxed);
                    }
                    Err(e) => note(&format!("pushing the result to the registry failed: {e}")),
                }
            }
            files
        }
    };
    // Signed here, and only here: the private key never leaves this machine.
    if let Some(k) = &ctx.key {
        for f in &files {
            pallet_apk_stream::resign_apk(
                f,
                k,
                pallet_keys::SigAlg::RsaSha256,
                Some(ctx.ro.source_date_epoch),
            )
            .map_err(|e| format!("signing {}: {e}", f.display()))?;
        }
    }
    Ok(files)
}

/// The unsigned packages of recipe `i`: from the ActionCache (under the lookup action `l`),
/// the executor, or a local build shared through the cache.
#[allow(clippy::too_many_arguments)]
fn build_unsigned_remote(
    ctx: &Ctx,
    remote: &Remote,
    i: usize,
    key: &str,
    l: &Prepared,
    staging: &Path,
    log: &pallet_build::log::Log,
    note: &dyn Fn(&str),
) -> Result<Vec<PathBuf>, String> {
    let r = &ctx.ws.recipes[i];
    let show = digest::show(&l.digest);
    log.line(format_args!("remote lookup action {show}"));
    let mut skip_cache = false;
    if let Some(ac) = remote.ac() {
        match ac.get_action_result(&l.digest) {
            Ok(Some(res)) => match take_result(ctx, ac, i, &res, l, staging) {
                Ok(files) => {
                    remote.counts.cache_hits.fetch_add(1, Ordering::Relaxed);
                    note(&format!("cache hit, action {show}"));
                    log.line(format_args!("remote cache hit"));
                    return Ok(files);
                }
                Err(why) => {
                    remote.counts.rejected.fetch_add(1, Ordering::Relaxed);
                    note(&format!(
                        "cached result of action {show} rejected ({why}); rebuilding it"
                    ));
                    log.line(format_args!("cached result rejected: {why}"));
                    skip_cache = true;
                }
            },
            Ok(None) => {}
            Err(e) => note(&format!("cache lookup failed ({e}); building")),
        }
    }
    let Some(ex) = &remote.executor else {
        // A local build installs its environment itself: no input root to make.
        return local_then_upload(ctx, remote, i, l, staging, log, note);
    };
    let p = &prepare(ctx, i, key)?;
    let lookup_show = show;
    let show = digest::show(&p.digest);
    log.line(format_args!("remote action {show}"));
    retry(note, || ex.upload(&p.blobs))?;
    // A result that does not verify is executed once more, never taken.
    for attempt in 0..2 {
        // EXECUTING then QUEUED again, or another worker named while executing: the first
        // worker stopped (or stopped answering) and the scheduler gave the action to another.
        let requeued = std::sync::atomic::AtomicBool::new(false);
        let last = std::sync::atomic::AtomicI32::new(0);
        let first_worker = std::sync::Mutex::new(String::new());
        let on_update = |stage: i32, worker: &str| {
            let before = last.swap(stage, Ordering::Relaxed);
            let mut first = first_worker.lock().unwrap();
            let moved =
                stage == EXECUTING && !worker.is_empty() && !first.is_empty() && *first != worker;
            if first.is_empty() && stage == EXECUTING {
                first.push_str(worker);
            }
            if ((before == EXECUTING && stage == QUEUED) || moved)
                && !requeued.swap(true, Ordering::Relaxed)
            {
                let who = if first.is_empty() {
                    String::new()
                } else {
                    format!(" ({})", first.as_str())
                };
                note(&format!(
                    "action {show} went back to the queue (its worker{who} stopped, or stopped answering); retrying it on another worker"
                ));
            }
        };
        let resp = retry(note, || ex.execute(&p.digest, skip_cache, &on_update))?;
        if let Some(s) = resp.status.as_ref().filter(|s| s.code != 0) {
            return Err(format!(
                "remote action {show} failed (status {}): {}",
                s.code, s.message
            ));
        }
        let res = resp.result.unwrap_or_default();
        let worker = res
            .execution_metadata
            .as_ref()
            .map(|m| m.worker.clone())
            .unwrap_or_default();
        // The stream may skip the update that showed the move (BuildGrid coalesces them
        // under load): a result from another worker than the one first seen executing it
        // says the same.
        {
            let first = first_worker.lock().unwrap();
            if !first.is_empty()
                && !worker.is_empty()
                && *first != worker
                && !requeued.swap(true, Ordering::Relaxed)
            {
                note(&format!(
                    "action {show} went back to the queue (its worker ({}) stopped, or stopped answering); retrying it on another worker",
                    first.as_str()
                ));
            }
        }
        if res.exit_code != 0 {
            copy_log(ex, &res, log);
            return Err(format!(
                "remote build failed with exit code {} on worker {worker} (action {show})",
                res.exit_code
            ));
        }
        match take_result(ctx, ex, i, &res, p, staging) {
            Ok(files) => {
                copy_log(ex, &res, log);
                // Verified: now kept under the lookup action too, where the next client looks.
                let shared = match share_executed(remote, ex, l, &res, &files) {
                    Ok(()) => format!("; result shared as action {lookup_show}"),
                    Err(e) => format!("; sharing the result as action {lookup_show} failed: {e}"),
                };
                if resp.cached_result {
                    remote.counts.cache_hits.fetch_add(1, Ordering::Relaxed);
                    note(&format!("cache hit, action {show}{shared}"));
                } else {
                    remote.counts.executed.fetch_add(1, Ordering::Relaxed);
                    note(&format!(
                        "executed on {worker}, action {show}{}{shared}",
                        if requeued.load(Ordering::Relaxed) {
                            " (retried)"
                        } else {
                            ""
                        }
                    ));
                }
                return Ok(files);
            }
            Err(why) => {
                remote.counts.rejected.fetch_add(1, Ordering::Relaxed);
                note(&format!(
                    "result of action {show} from {worker} rejected ({why}); {}",
                    if attempt == 0 {
                        "retrying it without the cache"
                    } else {
                        "giving up"
                    }
                ));
                skip_cache = true;
            }
        }
    }
    Err(format!(
        "remote action {show} for {} gave a result that does not verify twice",
        r.name
    ))
}

/// A call tried again while the server says it is busy or unreachable (a scheduler that runs
/// out of threads answers RESOURCE_EXHAUSTED), with a growing pause, for about a minute.
fn retry<T>(
    note: &dyn Fn(&str),
    mut f: impl FnMut() -> Result<T, pallet_reapi::Error>,
) -> Result<T, String> {
    let mut pause = std::time::Duration::from_millis(250);
    for _ in 0..10 {
        match f() {
            Err(e) if e.is_transient() => {
                note(&format!(
                    "{e}; trying again in {:.1} s",
                    pause.as_secs_f64()
                ));
                std::thread::sleep(pause);
                pause = (pause * 2).min(std::time::Duration::from_secs(10));
            }
            r => return r.map_err(|e| e.to_string()),
        }
    }
    f().map_err(|e| e.to_string())
}

/// The worker's build log (an output) appended to the node's log.
fn copy_log(c: &Client, res: &ActionResult, log: &pallet_build::log::Log) {
    let build_log = res
        .output_files
        .iter()
        .find(|f| f.path == LOG)
        .and_then(|f| f.digest.clone());
    // The build's own log, then what the command printed (where a failure to start says why).
    for d in build_log.iter().chain(res.stderr_digest.iter()) {
        if let Ok(b) = c.read_blob(d) {
            for l in String::from_utf8_lossy(&b).lines() {
                log.line(format_args!("remote: {l}"));
            }
        }
    }
}

/// Download and verify a result's packages into `staging/ARCH/` (unsigned, as workers make
/// them). Anything wrong is an error and leaves nothing behind.
fn take_result(
    ctx: &Ctx,
    c: &Client,
    i: usize,
    res: &ActionResult,
    p: &Prepared,
    staging: &Path,
) -> Result<Vec<PathBuf>, String> {
    let r = &ctx.ws.recipes[i];
    if res.exit_code != 0 {
        return Err(format!("exit code {}", res.exit_code));
    }
    let dir = staging.join(r.arch.apk());
    std::fs::create_dir_all(&dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
    let mut files = vec![];
    let mut seen_main = false;
    let result = (|| {
        for f in &res.output_files {
            if f.path == LOG {
                continue;
            }
            if !p.outputs.contains(&f.path) {
                return Err(format!("an output that was not asked for: {}", f.path));
            }
            let name = f.path.rsplit('/').next().unwrap_or_default();
            let to = dir.join(name);
            let d = f.digest.clone().unwrap_or_else(digest::empty);
            if !digest::is_valid(&d) {
                return Err(format!("{}: a malformed digest", f.path));
            }
            c.download(&d, &to).map_err(|e| e.to_string())?;
            check_package(&to, r)?;
            if name == format!("{}-{}.apk", r.name, r.version) {
                seen_main = true;
            }
            files.push(to);
        }
        if !seen_main {
            return Err(format!("no {}-{}.apk among the outputs", r.name, r.version));
        }
        Ok(())
    })();
    if let Err(e) = result {
        for f in &files {
            let _ = std::fs::remove_file(f);
        }
        return Err(e);
    }
    files.sort();
    Ok(files)
}

/// A package as the recipe makes it: a well-formed APK (every section and file matches its
/// checksum) named for one of its packages, at its version and arch.
pub(crate) fn check_package(path: &Path, r: &crate::load::Recipe) -> Result<(), String> {
    let name = path.display();
    let f = std::fs::File::open(path).map_err(|e| format!("{name}: {e}"))?;
    let meta = pallet_apk_stream::read_apk(
        f,
        &pallet_apk_stream::reader::ReadOptions::default(),
        |_, _| Ok(()),
    )
    .map_err(|e| {
        format!(
            "{}: {e}",
            path.file_name().unwrap_or_default().to_string_lossy()
        )
    })?;
    let i = &meta.info;
    let file = format!("{}-{}.apk", i.name, i.version);
    if !r.outputs.contains(&i.name)
        || i.version != r.version
        || i.arch != r.arch.apk()
        || path.file_name().is_none_or(|n| n.to_string_lossy() != file)
    {
        return Err(format!(
            "{name} holds {} {} ({}), not a package of this recipe",
            i.name, i.version, i.arch
        ));
    }
    Ok(())
}

/// Without an executor, on a miss: build here (unsigned) and share the result through the
/// remote cache when there is one.
fn local_then_upload(
    ctx: &Ctx,
    remote: &Remote,
    i: usize,
    p: &Prepared,
    staging: &Path,
    log: &pallet_build::log::Log,
    note: &dyn Fn(&str),
) -> Result<Vec<PathBuf>, String> {
    let files = crate::run::build_unsigned(ctx, i, staging, log)?;
    if let Some(c) = &remote.cache {
        match upload_result(c, p, &files) {
            Ok(()) => {
                remote
                    .counts
                    .uploaded_results
                    .fetch_add(1, Ordering::Relaxed);
                note(&format!(
                    "built here, result shared as action {}",
                    digest::show(&p.digest)
                ));
            }
            Err(e) => note(&format!("sharing the result failed: {e}")),
        }
    }
    Ok(files)
}

/// An executed (and verified) result kept under the lookup action `l`: in the cache named
/// apart, with its packages (it may be another server), else in the executor's ActionCache,
/// whose CAS holds the outputs already.
fn share_executed(
    remote: &Remote,
    ex: &Client,
    l: &Prepared,
    res: &ActionResult,
    files: &[PathBuf],
) -> Result<(), String> {
    if let Some(c) = &remote.cache {
        return upload_result(c, l, files);
    }
    ex.upload(&l.messages).map_err(|e| e.to_string())?;
    ex.update_action_result(&l.digest, res)
        .map_err(|e| e.to_string())
}

/// Put a local result in the remote cache: the Action and Command (the server needs them),
/// the unsigned packages, then the ActionCache entry.
fn upload_result(c: &Client, p: &Prepared, files: &[PathBuf]) -> Result<(), String> {
    let mut blobs = Blobs::new();
    debug_assert!(p.messages.digests().iter().any(|d| d.hash == p.digest.hash));
    blobs.extend(p.messages.clone());
    let mut outs = vec![];
    for f in files {
        let path = p.output_of(f)?.clone();
        let d = blobs.add_file(f).map_err(|e| e.to_string())?;
        outs.push(OutputFile {
            path,
            digest: Some(d),
            ..Default::default()
        });
    }
    c.upload(&blobs).map_err(|e| e.to_string())?;
    let res = ActionResult {
        output_files: outs,
        execution_metadata: Some(pallet_reapi::proto::ExecutedActionMetadata {
            worker: "pallet build (local)".into(),
            ..Default::default()
        }),
        ..Default::default()
    };
    c.update_action_result(&p.digest, &res)
        .map_err(|e| e.to_string())
}

/// The worker's side (`pallet build-node node.json`): build the node described in the
/// current folder's `node.json` into `out/`, unsigned, with `cache_dir` for downloads.
pub fn build_node(spec_file: &Path, cache_dir: &Path) -> Result<Vec<PathBuf>, String> {
    let spec_file = std::path::absolute(spec_file).map_err(|e| e.to_string())?;
    let spec_file = spec_file.as_path();
    let root = spec_file
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default();
    let spec: NodeSpec = serde_json::from_slice(
        &std::fs::read(spec_file).map_err(|e| format!("{}: {e}", spec_file.display()))?,
    )
    .map_err(|e| format!("{}: {e}", spec_file.display()))?;
    if spec.pallet != env!("CARGO_PKG_VERSION") {
        return Err(format!(
            "this action is for pallet {}, this worker is pallet {}",
            spec.pallet,
            env!("CARGO_PKG_VERSION")
        ));
    }
    let arch = Arch::parse(&spec.arch).ok_or_else(|| format!("unknown arch {}", spec.arch))?;
    // Everything the build reads is in the input root: a name that leaves it is refused.
    let inside = |p: &String| -> Result<PathBuf, String> {
        pallet_reapi::tree::segments(p)
            .map(|_| root.join(p))
            .map_err(|_| format!("{p} is not a path inside the input root"))
    };
    let keyring: Vec<PathBuf> = spec.keyring.iter().map(inside).collect::<Result<_, _>>()?;
    let log = pallet_build::log::Log::to_file(&root.join(LOG)).map_err(|e| e.to_string())?;
    let mut req = pallet_build::request::RecipeRequest {
        config: root.join(&spec.recipe),
        archs: vec![arch],
        pipeline_dirs: spec.pipeline_dirs.iter().map(|p| root.join(p)).collect(),
        build_options: spec.build_options.clone(),
        ..Default::default()
    };
    let (compiled, mut plan) = req
        .compiled(arch)
        .map_err(|e| e.to_string())?
        .ok_or_else(|| format!("{} does not build for {}", spec.recipe, spec.arch))?;
    if cache::sha256_json(&compiled) != spec.config_sha {
        return Err(format!(
            "{} compiles differently here than on the client (another pallet, or other pipelines)",
            spec.recipe
        ));
    }
    plan.config_yaml = pallet_build::request::render(&compiled)?;
    // The environment installs from the input root's repositories alone: the recipe's own
    // repositories and keys (URLs, paths of the client's machine) are not read here.
    let mut repositories = vec![];
    if let Some(lock) = &spec.environment {
        repositories = check_lock(&root, arch, lock, &keyring).map_err(|e| {
            log.line(format_args!("error: {e}"));
            e
        })?;
        let c = &mut plan.environment.contents;
        c.repositories.clear();
        c.build_repositories.clear();
        c.keyring.clear();
    }
    req.options = pallet_build::driver::Options {
        arch: Some(arch),
        out_dir: root.join(OUT),
        cache_dir: Some(cache_dir.join("melange-cache")),
        apk_cache_dir: cache_dir.to_path_buf(),
        source_dir: spec.source_dir.as_ref().map(|s| root.join(s)),
        signing_key: None,
        generate_index: false,
        bootstrap: spec.bootstrap,
        source_date_epoch: spec.source_date_epoch,
        namespace: spec.namespace.clone(),
        rm: true,
        extra_repositories: repositories,
        extra_keyring: keyring.iter().map(|k| k.display().to_string()).collect(),
        env_file: spec.env_file.clone(),
        config_source: crate::run::config_source(&spec.recipe),
        log: log.clone(),
        interactive: false,
        ..Default::default()
    };
    req.build_plan(&plan, arch).map_err(|e| {
        log.line(format_args!("error: {e}"));
        e.to_string()
    })
}

/// Check the lock against the input root before anything is installed: each repository's
/// index verifies against the keyring and lists exactly the lock's packages of it (name,
/// version and checksum), and each package file is there. The installer then refuses any
/// file whose control checksum is not its index's, so what is installed is what the lock
/// names. Returns the repository lines to install from.
fn check_lock(
    root: &Path,
    arch: Arch,
    lock: &EnvLock,
    keyring: &[PathBuf],
) -> Result<Vec<String>, String> {
    let ring = pallet_keys::Keyring::from_paths(keyring.iter().cloned());
    let mut lines = vec![];
    for repo in &lock.repositories {
        if pallet_reapi::tree::segments(&repo.dir).is_err() {
            return Err(format!("{} is not a path inside the input root", repo.dir));
        }
        let dir = root.join(&repo.dir);
        let idx = dir.join(arch.apk()).join("APKINDEX.tar.gz");
        let index = pallet_index::read_index(&idx, Some(&ring))
            .map_err(|e| format!("the environment's index {}: {e}", repo.dir))?;
        let mut listed: Vec<(String, String, String)> = index
            .packages
            .iter()
            .map(|p| {
                (
                    p.name.clone(),
                    p.version.clone(),
                    p.checksum.clone().unwrap_or_default(),
                )
            })
            .collect();
        let mut locked: Vec<(String, String, String)> = lock
            .packages
            .iter()
            .filter(|p| p.repository == repo.dir)
            .map(|p| (p.name.clone(), p.version.clone(), p.checksum.clone()))
            .collect();
        listed.sort();
        locked.sort();
        if listed != locked {
            return Err(format!(
                "the environment's index {} does not list exactly the packages its lock names",
                repo.dir
            ));
        }
        for (name, version, _) in &locked {
            let f = dir.join(arch.apk()).join(format!("{name}-{version}.apk"));
            if !f.is_file() {
                return Err(format!(
                    "{name}-{version}.apk of the lock is not in {}",
                    repo.dir
                ));
            }
        }
        let path = dir.display().to_string();
        lines.push(match &repo.tag {
            Some(tag) => format!("@{tag} {path}"),
            None => path,
        });
    }
    if let Some(p) = lock
        .packages
        .iter()
        .find(|p| !lock.repositories.iter().any(|r| r.dir == p.repository))
    {
        return Err(format!(
            "{}-{} of the lock names no repository of it",
            p.name, p.version
        ));
    }
    Ok(lines)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn folders_go_into_an_input_root_by_content_and_order_only() {
        let a = tempfile::tempdir().unwrap();
        let b = tempfile::tempdir().unwrap();
        for d in [a.path(), b.path()] {
            std::fs::create_dir_all(d.join("p/sub")).unwrap();
            std::fs::create_dir_all(d.join("p/empty")).unwrap();
            std::fs::write(d.join("p/sub/x.yaml"), b"x").unwrap();
            std::fs::write(d.join("p/y.yaml"), b"y").unwrap();
        }
        let root = |d: &Path| {
            let mut t = InputTree::new();
            add_tree(&mut t, &d.join("p"), "pipelines").unwrap();
            t.build().0
        };
        // Two checkouts in other places give the same tree.
        assert_eq!(root(a.path()), root(b.path()));
        std::fs::write(b.path().join("p/y.yaml"), b"changed").unwrap();
        assert_ne!(root(a.path()), root(b.path()));
        assert_eq!(
            rel_to(Path::new("/w"), Path::new("/w/pipelines")).as_deref(),
            Some("pipelines")
        );
        assert_eq!(rel_to(Path::new("/w"), Path::new("/elsewhere")), None);
    }

    #[test]
    fn a_lock_is_taken_only_when_its_signed_index_lists_exactly_its_packages() {
        let d = tempfile::tempdir().unwrap();
        let root = d.path();
        std::fs::create_dir_all(root.join("keys")).unwrap();
        std::fs::create_dir_all(root.join("env/0/x86_64")).unwrap();
        let key = root.join("keys/user.rsa");
        pallet_keys::generate(&key, 2048).unwrap();
        let sk = pallet_keys::SigningKey::load(&key).unwrap();
        let info = pallet_apk_types::PackageInfo {
            name: "busybox".into(),
            version: "1.36.1-r0".into(),
            arch: "x86_64".into(),
            checksum: Some("Q1abc=".into()),
            ..Default::default()
        };
        let idx = root.join("env/0/x86_64/APKINDEX.tar.gz");
        pallet_index::write_index(std::slice::from_ref(&info), None, Some(&sk), 0, &idx).unwrap();
        std::fs::write(root.join("env/0/x86_64/busybox-1.36.1-r0.apk"), b"x").unwrap();
        let keyring = vec![root.join("keys/user.rsa.pub")];
        let lock = EnvLock {
            repositories: vec![EnvRepo {
                dir: "env/0".into(),
                tag: Some("main".into()),
                origin: "https://example.test/os".into(),
            }],
            packages: vec![LockedPackage {
                name: "busybox".into(),
                version: "1.36.1-r0".into(),
                checksum: "Q1abc=".into(),
                repository: "env/0".into(),
            }],
        };
        let arch = Arch::parse("x86_64").unwrap();
        assert_eq!(
            check_lock(root, arch, &lock, &keyring).unwrap(),
            vec![format!("@main {}", root.join("env/0").display())]
        );
        // Another checksum than the index's, a package the index does not list, a folder
        // outside the input root, an index no key of the keyring signed: all refused.
        let mut other = lock.clone();
        other.packages[0].checksum = "Q1def=".into();
        assert!(check_lock(root, arch, &other, &keyring).is_err());
        let mut more = lock.clone();
        more.packages.push(LockedPackage {
            name: "zlib".into(),
            version: "1.3.1-r0".into(),
            checksum: "Q1zz=".into(),
            repository: "env/0".into(),
        });
        assert!(check_lock(root, arch, &more, &keyring).is_err());
        let mut outside = lock.clone();
        outside.repositories[0].dir = "../env/0".into();
        assert!(check_lock(root, arch, &outside, &keyring).is_err());
        let stranger = root.join("keys/stranger.rsa");
        pallet_keys::generate(&stranger, 2048).unwrap();
        let sk2 = pallet_keys::SigningKey::load(&stranger).unwrap();
        pallet_index::write_index(&[info], None, Some(&sk2), 0, &idx).unwrap();
        assert!(check_lock(root, arch, &lock, &keyring).is_err());
    }

    #[test]
    fn node_specs_round_trip_and_byte_counts_read_well() {
        let s = NodeSpec {
            pallet: "1".into(),
            recipe: "a.yaml".into(),
            arch: "x86_64".into(),
            pipeline_dirs: vec!["pipelines".into()],
            build_options: vec![],
            config_sha: "00".into(),
            source_dir: Some(SOURCES.into()),
            bootstrap: false,
            source_date_epoch: 7,
            namespace: "wolfi".into(),
            env_file: BTreeMap::from([("A".into(), "1".into())]),
            environment: Some(EnvLock {
                repositories: vec![EnvRepo {
                    dir: "env/0".into(),
                    tag: None,
                    origin: "https://packages.wolfi.dev/os".into(),
                }],
                packages: vec![LockedPackage {
                    name: "busybox".into(),
                    version: "1.36.1-r0".into(),
                    checksum: "Q1abc=".into(),
                    repository: "env/0".into(),
                }],
            }),
            keyring: vec!["keys/k.rsa.pub".into()],
        };
        let j = serde_json::to_vec(&s).unwrap();
        assert_eq!(serde_json::from_slice::<NodeSpec>(&j).unwrap(), s);
        assert_eq!(bytes(1536), "1.5 KiB");
        assert_eq!(bytes(3 << 20), "3.0 MiB");
    }
}
