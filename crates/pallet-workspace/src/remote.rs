//! Package nodes as REAPI actions: run on a remote executor (`--remote-executor`), or looked up
//! in and shared through a remote ActionCache (`--remote-cache`).
//!
//! Each package node becomes one Action:
//!
//! - its **input root** holds exactly the node's inputs: the recipe file, its source folder, the
//!   pipeline folders, the public signing key, a `repo/` of the workspace's own packages its
//!   environment resolves to (with an index over just those, signed with the user's key, so
//!   two machines make the same bytes), and `node.json` ([`NodeSpec`]) saying how to build;
//! - its **Command** is `pallet build-node node.json`, the worker's own pallet (its version is
//!   in the Command and checked by the worker);
//! - its **salt** is the node's content key, so the Action digest follows from the key and
//!   every machine computes the same one;
//! - its **outputs** are the unsigned packages `out/ARCH/NAME-VERSION.apk` and the build log.
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

/// How a worker builds a node, from inside the action's input root (`node.json`). Paths are
/// relative to the input root; repositories and keys may also be URLs (or paths every worker
/// shares) for what is not the workspace's own.
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
    pub repositories: Vec<String>,
    pub keyring: Vec<String>,
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
    let mut keyring = vec![];
    let mut repositories = vec![];
    let mut pub_key = ws.signing_key.as_os_str().to_owned();
    pub_key.push(".pub");
    let pub_key = PathBuf::from(pub_key);
    if pub_key.is_file() {
        let name = format!(
            "keys/{}",
            pub_key.file_name().unwrap_or_default().to_string_lossy()
        );
        t.add_file(&name, &pub_key).map_err(|e| e.to_string())?;
        keyring.push(name);
    }
    keyring.extend(
        ctx.keyring
            .iter()
            .filter(|k| Path::new(k) != pub_key)
            .cloned(),
    );
    if !r.bootstrap {
        let env = ctx
            .resolve(&r.plan.environment, arch, false)
            .map_err(|e| format!("resolving the build environment: {e}"))?;
        let own = own_packages(ctx, arch, &env)?;
        // An index even when it lists nothing, as the workspace's own repository always has
        // one (signed, perhaps empty).
        {
            let scratch = ctx
                .cache
                .scratch()
                .map_err(|e| format!("creating a scratch folder: {e}"))?;
            let idx = scratch.path().join("APKINDEX.tar.gz");
            let records: Vec<_> = own
                .iter()
                .map(|p| pallet_index::record_for(p, None).map_err(|e| e.to_string()))
                .collect::<Result<_, _>>()?;
            pallet_index::write_index(
                &records,
                None,
                ctx.key.as_ref(),
                ctx.ro.source_date_epoch,
                &idx,
            )
            .map_err(|e| format!("writing the environment's index: {e}"))?;
            let bytes = std::fs::read(&idx).map_err(|e| e.to_string())?;
            t.add_bytes(
                &format!("repo/{}/APKINDEX.tar.gz", arch.apk()),
                bytes,
                false,
            )
            .map_err(|e| e.to_string())?;
            for p in &own {
                let name = format!(
                    "repo/{}/{}",
                    arch.apk(),
                    p.file_name().unwrap_or_default().to_string_lossy()
                );
                t.add_file(&name, p).map_err(|e| e.to_string())?;
            }
        }
        // The workspace's own repository is `repo/` whether or not it holds anything: the
        // environment resolves against the same list of repositories as a local build.
        repositories.push("repo".to_string());
        repositories.extend(ctx.repos[1..].iter().cloned());
    }
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
        repositories,
        keyring,
    };
    t.add_bytes(
        SPEC,
        serde_json::to_vec_pretty(&spec).expect("serialises"),
        false,
    )
    .map_err(|e| format!("{SPEC}: {e}"))?;
    let (root, mut blobs) = t.build();
    let mut outputs: Vec<String> = r
        .outputs
        .iter()
        .map(|n| format!("{OUT}/{}/{n}-{}.apk", arch.apk(), r.version))
        .collect();
    outputs.push(LOG.to_string());
    let (d, _, _) = action::encode(
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
    Ok(Prepared {
        digest: d,
        blobs,
        outputs,
    })
}

/// The workspace's own packages in a resolved environment, as files of its repository.
fn own_packages(
    ctx: &Ctx,
    arch: Arch,
    env: &BTreeMap<String, String>,
) -> Result<Vec<PathBuf>, String> {
    let dir = ctx.arch_dir(arch);
    let indexed = ctx
        .indexed
        .lock()
        .unwrap()
        .get(&arch)
        .cloned()
        .unwrap_or_default();
    let mut out = vec![];
    for (name, v) in env {
        let version = v.split(' ').next().unwrap_or("");
        let file = format!("{name}-{version}.apk");
        if indexed.contains_key(&file) && ctx.workspace_packages.contains(name) {
            out.push(dir.join(&file));
        }
    }
    out.sort();
    Ok(out)
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
    let p = prepare(ctx, i, key)?;
    let show = digest::show(&p.digest);
    let mut from_registry = None;
    if let Some(reg) = &remote.registry {
        match crate::remote_registry::get(ctx, reg, i, &p, staging) {
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
            let files = build_unsigned_remote(ctx, remote, i, &p, staging, log, note)?;
            if let Some(reg) = &remote.registry {
                match crate::remote_registry::put(reg, &p, &files) {
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

/// The unsigned packages of recipe `i`: from the ActionCache, the executor, or a local build
/// shared through the cache.
fn build_unsigned_remote(
    ctx: &Ctx,
    remote: &Remote,
    i: usize,
    p: &Prepared,
    staging: &Path,
    log: &pallet_build::log::Log,
    note: &dyn Fn(&str),
) -> Result<Vec<PathBuf>, String> {
    let r = &ctx.ws.recipes[i];
    let show = digest::show(&p.digest);
    log.line(format_args!("remote action {show}"));
    let mut skip_cache = false;
    if let Some(ac) = remote.ac() {
        match ac.get_action_result(&p.digest) {
            Ok(Some(res)) => match take_result(ctx, ac, i, &res, p, staging) {
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
        return local_then_upload(ctx, remote, i, p, staging, log, note);
    };
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
                if resp.cached_result {
                    remote.counts.cache_hits.fetch_add(1, Ordering::Relaxed);
                    note(&format!("cache hit, action {show}"));
                } else {
                    remote.counts.executed.fetch_add(1, Ordering::Relaxed);
                    note(&format!(
                        "executed on {worker}, action {show}{}",
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

/// Put a local result in the remote cache: the Action and Command (the server needs them),
/// the unsigned packages, then the ActionCache entry.
fn upload_result(c: &Client, p: &Prepared, files: &[PathBuf]) -> Result<(), String> {
    let mut blobs = Blobs::new();
    // The Action and Command are the two message blobs the action digest names.
    let action_bytes = p
        .blobs
        .digests()
        .into_iter()
        .filter(|d| d.hash == p.digest.hash)
        .count();
    debug_assert_eq!(action_bytes, 1);
    blobs.extend(p.blobs.clone());
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
    let local = |p: &String| {
        if p.contains("://") || Path::new(p).is_absolute() {
            p.clone()
        } else {
            root.join(p).display().to_string()
        }
    };
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
        extra_repositories: spec.repositories.iter().map(local).collect(),
        extra_keyring: spec.keyring.iter().map(local).collect(),
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
            repositories: vec!["repo".into(), "https://packages.wolfi.dev/os".into()],
            keyring: vec!["keys/k.rsa.pub".into()],
        };
        let j = serde_json::to_vec(&s).unwrap();
        assert_eq!(serde_json::from_slice::<NodeSpec>(&j).unwrap(), s);
        assert_eq!(bytes(1536), "1.5 KiB");
        assert_eq!(bytes(3 << 20), "3.0 MiB");
    }
}
