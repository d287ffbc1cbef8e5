//! Deciding and doing: each node's key from what can change its output, the plan (what is
//! cached and why the rest is not), and the parallel build that runs only what is stale.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use pallet_image::config::Arch;

use crate::WorkspaceError;
use crate::cache::{self, Cache, Entry, Inputs, Last, OutFile};
use crate::load::Workspace;

/// A node of the workspace graph.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum NodeRef {
    Recipe(usize),
    Image(usize),
}

/// How to run, beyond the workspace itself.
#[derive(Clone, Debug, Default)]
pub struct RunOptions {
    /// The workspace cache (keys, outputs, last builds).
    pub cache_dir: PathBuf,
    /// The image builder's package cache (environment and image packages).
    pub apk_cache_dir: PathBuf,
    /// Builds at once (0: the number of cores).
    pub jobs: usize,
    /// After a failure, build everything not downstream of it.
    pub keep_going: bool,
    /// Never download: local repositories and what the caches hold.
    pub offline: bool,
    pub source_date_epoch: u64,
    /// Answers `${VAR}` in env files that they do not set (the process environment).
    pub environment: BTreeMap<String, String>,
    /// What to build (package, subpackage or image names, or files); empty: everything.
    pub targets: Vec<String>,
    /// Also what depends on the targets.
    pub rdeps: bool,
    /// Trace each step's shell.
    pub debug: bool,
    /// The runner of every step (`--runner`). Not part of any key: the runners make the
    /// same bytes.
    pub runner: pallet_build::runner::Runner,
    /// Package nodes run on a remote executor, or are shared through a remote cache.
    pub remote: Option<crate::remote::Remote>,
}

/// The state of a node, decided before it runs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decision {
    pub node: NodeRef,
    /// `cached` or `build`.
    pub state: &'static str,
    pub reason: String,
    /// The node's key, when its inputs could be known.
    pub key: Option<String>,
}

/// What happened to a node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    Cached,
    /// Built; `unchanged` when its output is byte for byte what the last build made (so its
    /// dependents stay cached: early cutoff).
    Built {
        unchanged: bool,
        reason: String,
    },
    Failed {
        error: String,
        log: Option<PathBuf>,
    },
    /// Not built because something it waits for failed (or the build stopped).
    NotBuilt {
        because: String,
    },
}

impl Outcome {
    /// Cached or built: what a dependent may go on from.
    pub fn is_ok(&self) -> bool {
        matches!(self, Outcome::Cached | Outcome::Built { .. })
    }
}

#[derive(Clone, Debug)]
pub struct NodeResult {
    pub node: NodeRef,
    pub outcome: Outcome,
    pub time: Duration,
}

/// Progress of a build, for the terminal view or plain lines.
pub trait Observer: Sync {
    fn start(&self, label: &str, reason: &str);
    fn finish(&self, label: &str, outcome: &Outcome, time: Duration);
    fn waiting(&self, _n: usize) {}
    /// A line about a node's build worth showing (remote cache hits, retried actions).
    fn note(&self, _label: &str, _message: &str) {}
}

/// The reason a node is stale, from what it was last built from.
pub fn reason(last: Option<&Last>, new: &Inputs, workspace_packages: &BTreeSet<String>) -> String {
    let Some(last) = last else {
        return "new".into();
    };
    let old = &last.inputs;
    if old == new {
        return "not in the cache".into();
    }
    if old.pallet != new.pallet {
        return "pallet version changed".into();
    }
    if old.config != new.config {
        return if new.kind == "image" {
            "configuration changed".into()
        } else {
            "recipe changed".into()
        };
    }
    for (f, h) in &new.sources {
        match old.sources.get(f) {
            None => return format!("source file {f} added"),
            Some(o) if o != h => return format!("source file {f} changed"),
            _ => {}
        }
    }
    if let Some(f) = old.sources.keys().find(|f| !new.sources.contains_key(*f)) {
        return format!("source file {f} removed");
    }
    for (name, v) in &new.environment {
        let short = name.rsplit('/').next().unwrap_or(name);
        match old.environment.get(name) {
            None => return format!("environment package {short} added"),
            Some(o) if o != v => {
                let ov = o.split(' ').next().unwrap_or("");
                let nv = v.split(' ').next().unwrap_or("");
                return if workspace_packages.contains(short) {
                    format!("dependency {short} rebuilt with different contents")
                } else if ov == nv {
                    format!("environment package {short} {nv} changed contents")
                } else {
                    format!("environment package {short} {ov} → {nv}")
                };
            }
            _ => {}
        }
    }
    if let Some(n) = old
        .environment
        .keys()
        .find(|n| !new.environment.contains_key(*n))
    {
        return format!(
            "environment package {} removed",
            n.rsplit('/').next().unwrap_or(n)
        );
    }
    for (k, v) in &new.options {
        if old.options.get(k) != Some(v) {
            return format!("{k} changed");
        }
    }
    "options changed".into()
}

/// Shared by every node of one run.
pub(crate) struct Ctx<'a> {
    pub ws: &'a Workspace,
    pub ro: &'a RunOptions,
    pub cache: Cache,
    pub key: Option<pallet_keys::SigningKey>,
    pub pub_sha: String,
    /// The workspace's own repository first, then the configured ones.
    pub repos: Vec<String>,
    pub keyring: Vec<String>,
    pub env_file: BTreeMap<String, String>,
    pub workspace_packages: BTreeSet<String>,
    /// Per arch, the package files the index lists (`NAME-VERSION.apk`) with the checksum it
    /// gives each, kept under the lock.
    pub indexed: Mutex<BTreeMap<Arch, BTreeMap<String, String>>>,
}

impl Ctx<'_> {
    pub(crate) fn new<'a>(
        ws: &'a Workspace,
        ro: &'a RunOptions,
        make_key: bool,
    ) -> Result<Ctx<'a>, WorkspaceError> {
        let mut pub_key = ws.signing_key.as_os_str().to_owned();
        pub_key.push(".pub");
        let pub_key = PathBuf::from(pub_key);
        let key_err = |message: String| WorkspaceError::Key {
            path: ws.signing_key.clone(),
            message,
        };
        let cache = Cache::new(&ro.cache_dir);
        cache.sweep();
        // Two builds starting at once must not each make half a key pair.
        let _lock = if make_key {
            Some(
                cache
                    .lock(&format!("signing key {}", ws.signing_key.display()))
                    .map_err(|e| key_err(format!("locking: {e}")))?,
            )
        } else {
            None
        };
        if make_key && !ws.signing_key.exists() {
            pallet_keys::generate(&ws.signing_key, 4096).map_err(|e| key_err(e.to_string()))?;
        }
        let key = if ws.signing_key.exists() {
            Some(
                pallet_keys::SigningKey::load(&ws.signing_key)
                    .map_err(|e| key_err(e.to_string()))?,
            )
        } else {
            None
        };
        // A build killed between writing the private half and the public one: derive it.
        if let (true, Some(k)) = (make_key, &key)
            && !pub_key.exists()
        {
            pallet_atomic::write(&pub_key, k.public_pem().as_bytes())
                .map_err(|e| key_err(format!("writing {}: {e}", pub_key.display())))?;
        }
        let pub_sha = match std::fs::read(&pub_key) {
            Ok(b) => cache::hex(&<sha2::Sha256 as sha2::Digest>::digest(&b)),
            Err(_) => String::new(),
        };
        let mut repos = vec![ws.out.display().to_string()];
        repos.extend(ws.flags.repositories.iter().cloned());
        repos.extend(ws.settings.repositories.iter().cloned());
        let mut keyring = vec![];
        if pub_key.exists() {
            keyring.push(pub_key.display().to_string());
        }
        keyring.extend(ws.flags.keyring.iter().cloned());
        keyring.extend(ws.settings.keyring.iter().map(|k| {
            if k.contains("://") || Path::new(k).is_absolute() {
                k.clone()
            } else {
                ws.root.join(k).display().to_string()
            }
        }));
        let lookup = |n: &str| ro.environment.get(n).cloned();
        let env_file =
            pallet_build::request::read_env_files(&ws.env_files, &lookup).map_err(|e| {
                WorkspaceError::Recipe {
                    file: PathBuf::from("env file"),
                    message: e.to_string(),
                }
            })?;
        let workspace_packages = ws
            .recipes
            .iter()
            .flat_map(|r| r.outputs.iter().cloned())
            .collect();
        Ok(Ctx {
            ws,
            ro,
            cache,
            key,
            pub_sha,
            repos,
            keyring,
            env_file,
            workspace_packages,
            indexed: Mutex::new(BTreeMap::new()),
        })
    }

    pub(crate) fn label(&self, n: NodeRef) -> String {
        label(self.ws, n)
    }

    pub(crate) fn id(&self, n: NodeRef) -> String {
        match n {
            NodeRef::Recipe(i) => {
                let r = &self.ws.recipes[i];
                format!("recipe {} {}", r.file.display(), r.arch.apk())
            }
            NodeRef::Image(j) => format!("image {}", self.ws.images[j].file.display()),
        }
    }

    pub(crate) fn build_options(&self, offline: bool) -> pallet_image::build::BuildOptions {
        pallet_image::build::BuildOptions {
            cache_dir: self.ro.apk_cache_dir.clone(),
            epoch: Some(self.ro.source_date_epoch),
            extra_keyring: self.keyring.clone(),
            // The workspace's own repository is a path of this checkout: it is read to
            // resolve, but not written into the image's /etc/apk/repositories, so that two
            // checkouts make the same image.
            extra_build_repositories: self.repos[..1].to_vec(),
            extra_repositories: self.repos[1..].to_vec(),
            offline: offline || self.ro.offline,
            level: 1,
            ..Default::default()
        }
    }

    /// Name → `VERSION CHECKSUM` of what `cfg` resolves to for `arch`.
    pub(crate) fn resolve(
        &self,
        cfg: &pallet_image::config::ImageConfiguration,
        arch: Arch,
        offline: bool,
    ) -> Result<BTreeMap<String, String>, String> {
        let bopts = self.build_options(offline);
        let (repos, picks, _, _) =
            pallet_image::build::resolve(cfg, arch, &bopts).map_err(|e| e.to_string())?;
        Ok(picks
            .iter()
            .map(|&(r, p)| {
                let info = &repos[r].packages[p];
                (
                    info.name.clone(),
                    format!(
                        "{} {}",
                        info.version,
                        info.checksum.clone().unwrap_or_default()
                    ),
                )
            })
            .collect())
    }

    /// Everything that can change what recipe `i` builds.
    pub(crate) fn recipe_inputs(&self, i: usize, offline: bool) -> Result<Inputs, String> {
        let ws = self.ws;
        let r = &ws.recipes[i];
        let mut sources = BTreeMap::new();
        if let Some(src) = &r.source_dir {
            let abs = ws.root.join(src);
            let files = pallet_build::driver::visible_source_files(&abs, &ws.source_exclude(src))
                .map_err(|e| format!("reading the source folder {}: {e}", src.display()))?;
            for (rel, is_dir) in files {
                if is_dir {
                    continue;
                }
                let p = abs.join(&rel);
                use std::os::unix::fs::PermissionsExt as _;
                let mode = std::fs::metadata(&p)
                    .map_err(|e| format!("{}: {e}", p.display()))?
                    .permissions()
                    .mode()
                    & 0o7777;
                let (sha, _) =
                    cache::sha256_file(&p).map_err(|e| format!("{}: {e}", p.display()))?;
                sources.insert(
                    src.join(&rel).display().to_string(),
                    format!("{mode:o} {sha}"),
                );
            }
        }
        let environment = if r.bootstrap {
            // The host's root is the guest: nothing to name but that.
            BTreeMap::from([("(host root)".to_string(), "bootstrap".to_string())])
        } else {
            self.resolve(&r.plan.environment, r.arch, offline)
                .map_err(|e| format!("resolving the build environment: {e}"))?
        };
        let env_vars: Vec<String> = self
            .env_file
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        let options = BTreeMap::from([
            (
                "SOURCE_DATE_EPOCH".to_string(),
                self.ro.source_date_epoch.to_string(),
            ),
            ("signing key".to_string(), self.pub_sha.clone()),
            ("namespace".to_string(), self.namespace()),
            (
                "env files".to_string(),
                cache::sha256_str(&env_vars.join("\n")),
            ),
            ("bootstrap".to_string(), r.bootstrap.to_string()),
        ]);
        Ok(Inputs {
            pallet: env!("CARGO_PKG_VERSION").to_string(),
            kind: "package".into(),
            arch: r.arch.apk().to_string(),
            config: cache::sha256_json(&r.compiled),
            sources,
            environment,
            options,
        })
    }

    pub(crate) fn namespace(&self) -> String {
        self.ws
            .flags
            .namespace
            .clone()
            .or_else(|| self.ws.settings.namespace.clone())
            .unwrap_or_else(|| "unknown".into())
    }

    /// Everything that can change image `j`.
    pub(crate) fn image_inputs(&self, j: usize, offline: bool) -> Result<Inputs, String> {
        let img = &self.ws.images[j];
        let loaded = pallet_image::config::load(&self.ws.root.join(&img.file), &[])
            .map_err(|e| e.to_string())?;
        let mut environment = BTreeMap::new();
        for arch in &img.archs {
            let picks = self
                .resolve(&loaded.config, *arch, offline)
                .map_err(|e| format!("resolving for {}: {e}", arch.apk()))?;
            for (n, v) in picks {
                environment.insert(format!("{}/{n}", arch.apk()), v);
            }
        }
        let archs: Vec<&str> = img.archs.iter().map(|a| a.apk()).collect();
        let options = BTreeMap::from([
            (
                "SOURCE_DATE_EPOCH".to_string(),
                self.ro.source_date_epoch.to_string(),
            ),
            ("tags".to_string(), img.tags.join(" ")),
            ("archs".to_string(), archs.join(" ")),
        ]);
        Ok(Inputs {
            pallet: env!("CARGO_PKG_VERSION").to_string(),
            kind: "image".into(),
            arch: archs.join(" "),
            // The merged configuration, so that comments and layout do not count.
            config: cache::sha256_json(&loaded.config),
            sources: BTreeMap::new(),
            environment,
            options,
        })
    }

    /// Where a recipe's outputs go.
    pub(crate) fn arch_dir(&self, arch: Arch) -> PathBuf {
        self.ws.out.join(arch.apk())
    }

    pub(crate) fn log_path(&self, i: usize) -> PathBuf {
        let r = &self.ws.recipes[i];
        self.arch_dir(r.arch)
            .join("buildlogs")
            .join(format!("{}.log", r.name))
    }

    /// Make sure `OUT/ARCH/APKINDEX.tar.gz` exists (signed, perhaps empty), so that the first
    /// builds can name the workspace's repository before it holds anything; remember what it
    /// lists.
    pub(crate) fn ensure_index(&self, arch: Arch) -> Result<(), String> {
        let dir = self.arch_dir(arch);
        let idx = dir.join("APKINDEX.tar.gz");
        // The lock `melange build` into the same folder takes too.
        let _lock = pallet_build::driver::index_lock(&self.ro.apk_cache_dir, &self.arch_dir(arch))
            .map_err(|e| format!("locking {}: {e}", idx.display()))?;
        std::fs::create_dir_all(&dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
        // What a killed build left half-written here, even when this run writes nothing.
        pallet_atomic::sweep(&dir);
        if !idx.exists() {
            pallet_index::write_index(
                &[],
                None,
                self.key.as_ref(),
                self.ro.source_date_epoch,
                &idx,
            )
            .map_err(|e| format!("writing {}: {e}", idx.display()))?;
        }
        let listed = pallet_index::read_index(&idx, None)
            .map_err(|e| format!("reading {}: {e}", idx.display()))?
            .packages;
        self.indexed.lock().unwrap().insert(arch, listing(&listed));
        Ok(())
    }

    /// Put package files into the repository and its index.
    pub(crate) fn add_to_index(&self, arch: Arch, files: &[PathBuf]) -> Result<(), String> {
        let idx = self.arch_dir(arch).join("APKINDEX.tar.gz");
        // The lock `melange build` into the same folder takes too.
        let _lock = pallet_build::driver::index_lock(&self.ro.apk_cache_dir, &self.arch_dir(arch))
            .map_err(|e| format!("locking {}: {e}", idx.display()))?;
        let mut indexed = self.indexed.lock().unwrap();
        let records = pallet_build::assemble::update_index_records(
            &self.ws.out,
            arch.apk(),
            files,
            self.key.as_ref(),
            self.ro.source_date_epoch,
        )
        .map_err(|e| format!("updating {}: {e}", idx.display()))?;
        indexed.insert(arch, listing(&records));
        Ok(())
    }

    /// Put a cache entry's files in place (those not already there), and the packages among
    /// them in the index.
    pub(crate) fn restore(&self, n: NodeRef, e: &Entry) -> Result<(), String> {
        match n {
            NodeRef::Recipe(i) => {
                let arch = self.ws.recipes[i].arch;
                let dir = self.arch_dir(arch);
                let mut missing = vec![];
                for f in &e.files {
                    let to = dir.join(&f.name);
                    if !cache::holds(&to, f) {
                        self.cache
                            .restore(f, &to)
                            .map_err(|err| format!("restoring {}: {err}", to.display()))?;
                        missing.push(to);
                    } else {
                        let listed = self
                            .indexed
                            .lock()
                            .unwrap()
                            .get(&arch)
                            .and_then(|s| s.get(&f.name))
                            .cloned();
                        let indexed = listed
                            .is_some_and(|c| f.index_checksum.as_deref().is_none_or(|x| x == c));
                        if indexed {
                            continue;
                        }
                        // In place but not (or not as these bytes) in the index: a build was
                        // killed between the two.
                        missing.push(to);
                    }
                }
                if !missing.is_empty() {
                    self.add_to_index(arch, &missing)?;
                }
                Ok(())
            }
            NodeRef::Image(_) => {
                for f in &e.files {
                    let to = self.ws.root.join(&f.name);
                    if !cache::holds(&to, f) {
                        self.cache
                            .restore(f, &to)
                            .map_err(|err| format!("restoring {}: {err}", to.display()))?;
                    }
                }
                Ok(())
            }
        }
    }

    /// A node's inputs.
    pub(crate) fn inputs(&self, n: NodeRef, offline: bool) -> Result<Inputs, String> {
        match n {
            NodeRef::Recipe(i) => self.recipe_inputs(i, offline),
            NodeRef::Image(j) => self.image_inputs(j, offline),
        }
    }

    /// Whether an image's outputs need more than the cache holds (an OCI layout is written by
    /// a build, not restored).
    fn image_layout_missing(&self, n: NodeRef) -> bool {
        match n {
            NodeRef::Image(j) => self.ws.images[j]
                .layout
                .as_ref()
                .is_some_and(|l| !self.ws.root.join(l).join("index.json").is_file()),
            NodeRef::Recipe(_) => false,
        }
    }
}

/// What an index lists: package file name → the checksum it gives.
fn listing(records: &[pallet_apk_types::PackageInfo]) -> BTreeMap<String, String> {
    records
        .iter()
        .map(|p| {
            (
                format!("{}-{}.apk", p.name, p.version),
                p.checksum.clone().unwrap_or_default(),
            )
        })
        .collect()
}

/// How a node is named to people: `zlib (x86_64)`, `image app`.
pub fn label(ws: &Workspace, n: NodeRef) -> String {
    match n {
        NodeRef::Recipe(i) => format!("{} ({})", ws.recipes[i].name, ws.recipes[i].arch.apk()),
        NodeRef::Image(j) => format!("image {}", ws.images[j].name),
    }
}

/// The nodes a node waits for.
pub fn deps(ws: &Workspace, n: NodeRef) -> Vec<NodeRef> {
    match n {
        NodeRef::Recipe(i) => ws.graph.after[i]
            .iter()
            .map(|&j| NodeRef::Recipe(j))
            .collect(),
        NodeRef::Image(j) => ws.image_after[j]
            .iter()
            .map(|&i| NodeRef::Recipe(i))
            .collect(),
    }
}

/// Every node in build order: recipes in graph order, then images.
pub fn all_nodes(ws: &Workspace) -> Vec<NodeRef> {
    ws.graph
        .order
        .iter()
        .map(|&i| NodeRef::Recipe(i))
        .chain((0..ws.images.len()).map(NodeRef::Image))
        .collect()
}

/// The nodes `targets` name, with everything they need (and, with `rdeps`, what needs them).
pub fn select(
    ws: &Workspace,
    targets: &[String],
    rdeps: bool,
) -> Result<Vec<NodeRef>, WorkspaceError> {
    let all = all_nodes(ws);
    if targets.is_empty() {
        return Ok(all);
    }
    let mut chosen = BTreeSet::new();
    for t in targets {
        let as_path = Path::new(t);
        let rel = std::path::absolute(as_path)
            .ok()
            .and_then(|a| a.strip_prefix(&ws.root).ok().map(Path::to_path_buf))
            .unwrap_or_else(|| as_path.to_path_buf());
        let mut hit: Vec<NodeRef> = ws
            .recipes_named(t)
            .into_iter()
            .map(NodeRef::Recipe)
            .collect();
        for (i, r) in ws.recipes.iter().enumerate() {
            if r.file == rel || r.file == as_path {
                hit.push(NodeRef::Recipe(i));
            }
        }
        for (j, img) in ws.images.iter().enumerate() {
            if img.name == *t || img.file == rel || img.file == as_path {
                hit.push(NodeRef::Image(j));
            }
        }
        if hit.is_empty() {
            return Err(WorkspaceError::Target(t.clone()));
        }
        chosen.extend(hit);
    }
    if rdeps {
        // Downstream: anything that waits, directly or not, for a chosen node.
        loop {
            let before = chosen.len();
            for &n in &all {
                if !chosen.contains(&n) && deps(ws, n).iter().any(|d| chosen.contains(d)) {
                    chosen.insert(n);
                }
            }
            if chosen.len() == before {
                break;
            }
        }
    }
    let mut stack: Vec<NodeRef> = chosen.iter().copied().collect();
    while let Some(n) = stack.pop() {
        for d in deps(ws, n) {
            if chosen.insert(d) {
                stack.push(d);
            }
        }
    }
    Ok(all.into_iter().filter(|n| chosen.contains(n)).collect())
}

/// What a build would do, without building: each node's state and reason. A node that waits
/// for one that will be rebuilt cannot know its key yet; it says so.
pub fn plan(ws: &Workspace, ro: &RunOptions) -> Result<Vec<Decision>, WorkspaceError> {
    let nodes = select(ws, &ro.targets, ro.rdeps)?;
    let ctx = Ctx::new(ws, ro, false)?;
    let mut out: Vec<Decision> = vec![];
    let mut stale: BTreeMap<NodeRef, bool> = BTreeMap::new();
    for n in nodes {
        let waits: Vec<NodeRef> = deps(ws, n)
            .into_iter()
            .filter(|d| stale.get(d) == Some(&true))
            .collect();
        let last = ctx.cache.last(&ctx.id(n));
        let d = if last.is_none() {
            // Never built with this cache: no need to resolve anything to say so.
            Decision {
                node: n,
                state: "build",
                reason: "new".into(),
                key: None,
            }
        } else if let Some(w) = waits.first() {
            Decision {
                node: n,
                state: "build",
                reason: format!(
                    "after {}, which is rebuilt (it stays cached if that build's output is unchanged)",
                    ctx.label(*w)
                ),
                key: None,
            }
        } else {
            match ctx.inputs(n, true) {
                Ok(inputs) => {
                    let key = inputs.key();
                    let cached = ctx.cache.entry(&key).is_some() && !ctx.image_layout_missing(n);
                    Decision {
                        node: n,
                        state: if cached { "cached" } else { "build" },
                        reason: if cached {
                            "cached".into()
                        } else {
                            reason(last.as_ref(), &inputs, &ctx.workspace_packages)
                        },
                        key: Some(key),
                    }
                }
                Err(e) => Decision {
                    node: n,
                    state: "build",
                    reason: format!("inputs unknown offline: {e}"),
                    key: None,
                },
            }
        };
        stale.insert(n, d.state == "build");
        out.push(d);
    }
    Ok(out)
}

/// Build every selected node that is stale, in parallel where the graph allows.
pub fn build(
    ws: &Workspace,
    ro: &RunOptions,
    observer: &dyn Observer,
) -> Result<Vec<NodeResult>, WorkspaceError> {
    let nodes = select(ws, &ro.targets, ro.rdeps)?;
    let ctx = Ctx::new(ws, ro, true)?;
    for arch in &ws.archs {
        ctx.ensure_index(*arch).map_err(WorkspaceError::Output)?;
    }
    for img in &ws.images {
        for out in img.tarball.iter() {
            let out = ws.root.join(out);
            for dir in [
                out.parent().map(Path::to_path_buf),
                Some(crate::image::sbom_dir(&out)),
            ]
            .into_iter()
            .flatten()
            {
                pallet_atomic::sweep(&dir);
            }
        }
    }
    let jobs = if ro.jobs == 0 {
        std::thread::available_parallelism().map_or(1, |n| n.get())
    } else {
        ro.jobs
    };
    let selected: BTreeSet<NodeRef> = nodes.iter().copied().collect();
    let mut waiting: BTreeMap<NodeRef, BTreeSet<NodeRef>> = nodes
        .iter()
        .map(|&n| {
            (
                n,
                deps(ws, n)
                    .into_iter()
                    .filter(|d| selected.contains(d))
                    .collect(),
            )
        })
        .collect();
    let mut results: BTreeMap<NodeRef, NodeResult> = BTreeMap::new();
    let mut failed = false;
    let (work_tx, work_rx) = std::sync::mpsc::channel::<NodeRef>();
    let work_rx = Mutex::new(work_rx);
    let (done_tx, done_rx) = std::sync::mpsc::channel::<NodeResult>();
    std::thread::scope(|s| {
        for _ in 0..jobs {
            let done_tx = done_tx.clone();
            let work_rx = &work_rx;
            let ctx = &ctx;
            s.spawn(move || {
                loop {
                    let next = work_rx.lock().unwrap().recv();
                    let Ok(n) = next else { break };
                    let started = Instant::now();
                    let outcome = run_node(ctx, n, observer);
                    let r = NodeResult {
                        node: n,
                        outcome,
                        time: started.elapsed(),
                    };
                    observer.finish(&ctx.label(n), &r.outcome, r.time);
                    if done_tx.send(r).is_err() {
                        break;
                    }
                }
            });
        }
        drop(done_tx);
        let mut running = 0usize;
        let mut queued: BTreeSet<NodeRef> = BTreeSet::new();
        loop {
            // Hand out everything ready, in build order.
            if !failed || ro.keep_going {
                for &n in &nodes {
                    // No more handed out than run at once: what waits in a queue could not
                    // be held back after a failure.
                    if running >= jobs {
                        break;
                    }
                    if results.contains_key(&n) || queued.contains(&n) {
                        continue;
                    }
                    if waiting[&n].is_empty() {
                        queued.insert(n);
                        running += 1;
                        let _ = work_tx.send(n);
                    }
                }
            }
            observer.waiting(nodes.len() - results.len() - running);
            if running == 0 {
                break;
            }
            let Ok(r) = done_rx.recv() else { break };
            running -= 1;
            let n = r.node;
            let ok = r.outcome.is_ok();
            if ok {
                for w in waiting.values_mut() {
                    w.remove(&n);
                }
            } else {
                failed = true;
                // Everything downstream of a failure is not built.
                let mut down = vec![n];
                while let Some(x) = down.pop() {
                    for &m in &nodes {
                        if !results.contains_key(&m)
                            && !queued.contains(&m)
                            && waiting[&m].contains(&x)
                        {
                            let because = format!("{} failed", ctx.label(n));
                            observer.finish(
                                &ctx.label(m),
                                &Outcome::NotBuilt {
                                    because: because.clone(),
                                },
                                Duration::ZERO,
                            );
                            results.insert(
                                m,
                                NodeResult {
                                    node: m,
                                    outcome: Outcome::NotBuilt { because },
                                    time: Duration::ZERO,
                                },
                            );
                            down.push(m);
                        }
                    }
                }
            }
            results.insert(n, r);
        }
        drop(work_tx);
    });
    // What never started after a stop on failure.
    for &n in &nodes {
        results.entry(n).or_insert_with(|| NodeResult {
            node: n,
            outcome: Outcome::NotBuilt {
                because: "the build stopped at the first failure (--keep-going builds the rest)"
                    .into(),
            },
            time: Duration::ZERO,
        });
    }
    Ok(nodes
        .iter()
        .map(|n| results.remove(n).expect("every node"))
        .collect())
}

fn run_node(ctx: &Ctx, n: NodeRef, observer: &dyn Observer) -> Outcome {
    let log = match n {
        NodeRef::Recipe(i) => Some(ctx.log_path(i)),
        NodeRef::Image(j) => Some(crate::image::log_path(ctx, j)),
    };
    match try_node(ctx, n, observer) {
        Ok(o) => o,
        Err(error) => Outcome::Failed { error, log },
    }
}

fn try_node(ctx: &Ctx, n: NodeRef, observer: &dyn Observer) -> Result<Outcome, String> {
    let inputs = ctx.inputs(n, false)?;
    let key = inputs.key();
    let id = ctx.id(n);
    let last = ctx.cache.last(&id);
    let unpublished = crate::image::unpublished(ctx, n, &key);
    if let Some(e) = ctx.cache.entry(&key)
        && !ctx.image_layout_missing(n)
        && unpublished.is_empty()
    {
        ctx.restore(n, &e)?;
        if last.as_ref().is_none_or(|l| l.key != key) {
            let _ = ctx.cache.put_last(
                &id,
                &Last {
                    key: key.clone(),
                    inputs: inputs.clone(),
                    files: e.files.clone(),
                },
            );
        }
        return Ok(Outcome::Cached);
    }
    let why = match unpublished.first() {
        Some(r) if ctx.cache.entry(&key).is_some() => format!("not yet published to {r}"),
        _ => reason(last.as_ref(), &inputs, &ctx.workspace_packages),
    };
    observer.start(&ctx.label(n), &why);
    let files = match n {
        NodeRef::Recipe(i) => build_recipe(ctx, i, &inputs.shared_key(), observer)?,
        NodeRef::Image(j) => crate::image::build_image(ctx, j, &key)?,
    };
    let entry = Entry {
        files: files.clone(),
    };
    ctx.cache
        .put_entry(&key, &entry)
        .map_err(|e| format!("writing the cache entry: {e}"))?;
    let unchanged = last.as_ref().is_some_and(|l| l.files == files);
    ctx.cache
        .put_last(&id, &Last { key, inputs, files })
        .map_err(|e| format!("writing the cache entry: {e}"))?;
    Ok(Outcome::Built {
        unchanged,
        reason: why,
    })
}

/// Build recipe `i` into a scratch folder (here, or through the remote), then move its
/// packages into the repository, the cache and the index.
fn build_recipe(
    ctx: &Ctx,
    i: usize,
    shared_key: &str,
    observer: &dyn Observer,
) -> Result<Vec<OutFile>, String> {
    let ws = ctx.ws;
    let r = &ws.recipes[i];
    let scratch = ctx
        .cache
        .scratch()
        .map_err(|e| format!("creating a scratch folder: {e}"))?;
    let staging = scratch.path().join("out");
    let log_path = ctx.log_path(i);
    let log = pallet_build::log::Log::to_file(&log_path)
        .map_err(|e| format!("creating {}: {e}", log_path.display()))?;
    let written = match &ctx.ro.remote {
        Some(remote) => {
            let label = ctx.label(NodeRef::Recipe(i));
            let note = |m: &str| observer.note(&label, m);
            crate::remote::build(ctx, remote, i, shared_key, &staging, &log, &note)?
        }
        None => build_here(ctx, i, &staging, &log, true)?,
    };
    let dir = ctx.arch_dir(r.arch);
    let mut placed = vec![];
    let mut records = vec![];
    for w in &written {
        let name = w
            .file_name()
            .map(|n| n.to_string_lossy().to_string())
            .unwrap_or_default();
        let mut rec = ctx
            .cache
            .put_blob(w, &name)
            .map_err(|e| format!("caching {name}: {e}"))?;
        rec.index_checksum = pallet_index::record_for(w, None)
            .map_err(|e| format!("reading {name}: {e}"))?
            .checksum;
        let to = dir.join(&name);
        ctx.cache
            .restore(&rec, &to)
            .map_err(|e| format!("writing {}: {e}", to.display()))?;
        placed.push(to);
        records.push(rec);
    }
    ctx.add_to_index(r.arch, &placed)?;
    log.line(format_args!("built {} in {}", r.name, dir.display()));
    Ok(records)
}

/// The configuration source a package's SBOM names: relative, so that two checkouts (and
/// workers) make the same bytes.
pub(crate) fn config_source(path: &str) -> pallet_build::assemble::ConfigSource {
    pallet_build::assemble::ConfigSource {
        path: path.to_string(),
        repository_url: "https://unknown/unknown/unknown".into(),
        commit: "unknown".into(),
        license: "NOASSERTION".into(),
    }
}

/// Build recipe `i` here, unsigned (a remote cache stores unsigned packages; they are signed
/// after).
pub(crate) fn build_unsigned(
    ctx: &Ctx,
    i: usize,
    staging: &Path,
    log: &pallet_build::log::Log,
) -> Result<Vec<PathBuf>, String> {
    build_here(ctx, i, staging, log, false)
}

/// Build recipe `i` in a sandbox here; its packages in `staging/ARCH/`.
fn build_here(
    ctx: &Ctx,
    i: usize,
    staging: &Path,
    log: &pallet_build::log::Log,
    sign: bool,
) -> Result<Vec<PathBuf>, String> {
    let ws = ctx.ws;
    let r = &ws.recipes[i];
    let source_dir = r.source_dir.as_ref().map(|s| ws.root.join(s));
    let req = pallet_build::request::RecipeRequest {
        config: ws.root.join(&r.file),
        archs: vec![r.arch],
        pipeline_dirs: ws.pipeline_dirs.clone(),
        options: pallet_build::driver::Options {
            arch: Some(r.arch),
            out_dir: staging.to_path_buf(),
            cache_dir: Some(ctx.cache.dir().join("melange-cache")),
            apk_cache_dir: ctx.ro.apk_cache_dir.clone(),
            source_exclude: r
                .source_dir
                .as_ref()
                .map(|s| ws.source_exclude(s))
                .unwrap_or_default(),
            source_dir,
            signing_key: ctx
                .key
                .as_ref()
                .filter(|_| sign)
                .map(|_| ws.signing_key.clone()),
            generate_index: false,
            bootstrap: r.bootstrap,
            source_date_epoch: ctx.ro.source_date_epoch,
            namespace: ctx.namespace(),
            debug: ctx.ro.debug,
            rm: true,
            extra_repositories: ctx.repos.clone(),
            extra_keyring: ctx.keyring.clone(),
            env_file: ctx.env_file.clone(),
            config_source: config_source(&r.file.display().to_string()),
            log: log.clone(),
            runner: ctx.ro.runner.clone(),
            interactive: false,
            ..Default::default()
        },
        ..Default::default()
    };
    let mut plan = r.plan.clone();
    plan.config_yaml = pallet_build::request::render(&r.compiled)?;
    req.build_plan(&plan, r.arch).map_err(|e| {
        log.line(format_args!("error: {e}"));
        e.to_string()
    })
}

/// One `test:` pipeline's run.
#[derive(Clone, Debug)]
pub struct TestResult {
    pub label: String,
    pub outcome: Outcome,
    pub time: Duration,
}

/// `pallet test`: build what the targets need (as `pallet build` does), then run the `test:`
/// pipelines of the selected recipes' packages, each in a fresh guest made from its test
/// environment (which holds the package under test, from the workspace's repository). A test
/// passed once is not run again while its key holds: the package's key, the compiled test and
/// its resolved environment.
pub fn test(
    ws: &Workspace,
    ro: &RunOptions,
    observer: &dyn Observer,
) -> Result<(Vec<NodeResult>, Vec<TestResult>), WorkspaceError> {
    let built = build(ws, ro, observer)?;
    let ctx = Ctx::new(ws, ro, true)?;
    // Only the targets' own tests (everything's, without targets), not their dependencies'.
    let wanted: BTreeSet<NodeRef> = if ro.targets.is_empty() {
        all_nodes(ws).into_iter().collect()
    } else {
        select(ws, &ro.targets, false)?
            .into_iter()
            .filter(|n| match n {
                NodeRef::Recipe(i) => ro.targets.iter().any(|t| {
                    ws.recipes[*i].outputs.contains(t) || ws.recipes[*i].file == Path::new(t)
                }),
                NodeRef::Image(_) => false,
            })
            .collect()
    };
    let mut jobs: Vec<(usize, usize)> = vec![];
    let mut results = vec![];
    for r in &built {
        let NodeRef::Recipe(i) = r.node else { continue };
        if !wanted.contains(&r.node) {
            continue;
        }
        for (k, (name, _)) in ws.recipes[i].tests.iter().enumerate() {
            let label = format!("test {name} ({})", ws.recipes[i].arch.apk());
            match &r.outcome {
                Outcome::Cached | Outcome::Built { .. } => jobs.push((i, k)),
                _ => results.push(TestResult {
                    label,
                    outcome: Outcome::NotBuilt {
                        because: format!("{} was not built", ctx.label(r.node)),
                    },
                    time: Duration::ZERO,
                }),
            }
        }
    }
    let threads = if ro.jobs == 0 {
        std::thread::available_parallelism().map_or(1, |n| n.get())
    } else {
        ro.jobs
    };
    let next = std::sync::atomic::AtomicUsize::new(0);
    let done: Mutex<Vec<(usize, TestResult)>> = Mutex::new(vec![]);
    std::thread::scope(|s| {
        for _ in 0..threads.min(jobs.len()) {
            s.spawn(|| {
                loop {
                    let j = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let Some(&(i, k)) = jobs.get(j) else { break };
                    let started = Instant::now();
                    let r = &ws.recipes[i];
                    let label = format!("test {} ({})", r.tests[k].0, r.arch.apk());
                    let outcome = match run_one_test(&ctx, i, k, &label, observer) {
                        Ok(o) => o,
                        Err(error) => Outcome::Failed {
                            error,
                            log: Some(test_log(&ctx, i, k)),
                        },
                    };
                    observer.finish(&label, &outcome, started.elapsed());
                    done.lock().unwrap().push((
                        j,
                        TestResult {
                            label,
                            outcome,
                            time: started.elapsed(),
                        },
                    ));
                }
            });
        }
    });
    let mut done = done.into_inner().unwrap();
    done.sort_by_key(|(j, _)| *j);
    results.extend(done.into_iter().map(|(_, r)| r));
    Ok((built, results))
}

fn test_log(ctx: &Ctx, i: usize, k: usize) -> PathBuf {
    let r = &ctx.ws.recipes[i];
    ctx.arch_dir(r.arch)
        .join("buildlogs")
        .join(format!("{}.test.log", r.tests[k].0))
}

fn run_one_test(
    ctx: &Ctx,
    i: usize,
    k: usize,
    label: &str,
    observer: &dyn Observer,
) -> Result<Outcome, String> {
    let ws = ctx.ws;
    let r = &ws.recipes[i];
    let (_, t) = &r.tests[k];
    let package_key = ctx
        .cache
        .last(&ctx.id(NodeRef::Recipe(i)))
        .map(|l| l.key)
        .ok_or_else(|| format!("{} has no build record", ctx.label(NodeRef::Recipe(i))))?;
    let environment = ctx
        .resolve(&t.environment, r.arch, false)
        .map_err(|e| format!("resolving the test environment: {e}"))?;
    let compiled = serde_json::to_string(t).expect("tests serialise");
    let inputs = Inputs {
        pallet: env!("CARGO_PKG_VERSION").to_string(),
        kind: "test".into(),
        arch: r.arch.apk().to_string(),
        config: cache::sha256_str(&format!("{package_key}\n{compiled}")),
        sources: BTreeMap::new(),
        environment,
        options: BTreeMap::from([(
            "SOURCE_DATE_EPOCH".to_string(),
            ctx.ro.source_date_epoch.to_string(),
        )]),
    };
    let key = inputs.key();
    if ctx.cache.entry(&key).is_some() {
        return Ok(Outcome::Cached);
    }
    let id = format!("{} {}", ctx.id(NodeRef::Recipe(i)), label);
    let last = ctx.cache.last(&id);
    let why = reason(last.as_ref(), &inputs, &ctx.workspace_packages);
    observer.start(label, &why);
    let log_path = test_log(ctx, i, k);
    let log = pallet_build::log::Log::to_file(&log_path)
        .map_err(|e| format!("creating {}: {e}", log_path.display()))?;
    let opts = pallet_build::driver::Options {
        arch: Some(r.arch),
        cache_dir: Some(ctx.cache.dir().join("melange-cache")),
        apk_cache_dir: ctx.ro.apk_cache_dir.clone(),
        source_dir: r.source_dir.as_ref().map(|s| ws.root.join(s)),
        source_exclude: r
            .source_dir
            .as_ref()
            .map(|s| ws.source_exclude(s))
            .unwrap_or_default(),
        source_date_epoch: ctx.ro.source_date_epoch,
        debug: ctx.ro.debug,
        extra_repositories: ctx.repos.clone(),
        extra_keyring: ctx.keyring.clone(),
        env_file: ctx.env_file.clone(),
        log: log.clone(),
        runner: ctx.ro.runner.clone(),
        interactive: false,
        ..Default::default()
    };
    pallet_build::driver::run_test(t, &opts).map_err(|e| {
        log.line(format_args!("error: {e}"));
        e.to_string()
    })?;
    ctx.cache
        .put_entry(&key, &Entry::default())
        .map_err(|e| format!("writing the cache entry: {e}"))?;
    let _ = ctx.cache.put_last(
        &id,
        &Last {
            key,
            inputs,
            files: vec![],
        },
    );
    Ok(Outcome::Built {
        unchanged: false,
        reason: why,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inputs() -> Inputs {
        Inputs {
            pallet: "1".into(),
            kind: "package".into(),
            arch: "x86_64".into(),
            config: "c".into(),
            sources: BTreeMap::from([("zlib/fix.patch".into(), "644 aa".into())]),
            environment: BTreeMap::from([
                ("busybox".into(), "1.36.1-r15 Q1a".into()),
                ("libz".into(), "1.3-r0 Q1b".into()),
            ]),
            options: BTreeMap::from([("SOURCE_DATE_EPOCH".into(), "0".into())]),
        }
    }

    fn last(i: Inputs) -> Last {
        Last {
            key: i.key(),
            inputs: i,
            files: vec![],
        }
    }

    #[test]
    fn reasons_name_what_changed() {
        let ws = BTreeSet::from(["libz".to_string()]);
        let old = inputs();
        assert_eq!(reason(None, &old, &ws), "new");
        assert_eq!(
            reason(Some(&last(old.clone())), &old, &ws),
            "not in the cache"
        );
        let mut n = old.clone();
        n.pallet = "2".into();
        assert_eq!(
            reason(Some(&last(old.clone())), &n, &ws),
            "pallet version changed"
        );
        let mut n = old.clone();
        n.config = "d".into();
        assert_eq!(reason(Some(&last(old.clone())), &n, &ws), "recipe changed");
        let mut n = old.clone();
        n.sources.insert("zlib/fix.patch".into(), "644 bb".into());
        assert_eq!(
            reason(Some(&last(old.clone())), &n, &ws),
            "source file zlib/fix.patch changed"
        );
        let mut n = old.clone();
        n.environment
            .insert("busybox".into(), "1.36.1-r16 Q1c".into());
        assert_eq!(
            reason(Some(&last(old.clone())), &n, &ws),
            "environment package busybox 1.36.1-r15 → 1.36.1-r16"
        );
        let mut n = old.clone();
        n.environment.insert("libz".into(), "1.3-r0 Q1z".into());
        assert_eq!(
            reason(Some(&last(old.clone())), &n, &ws),
            "dependency libz rebuilt with different contents"
        );
        let mut n = old.clone();
        n.environment.remove("libz");
        assert_eq!(
            reason(Some(&last(old.clone())), &n, &ws),
            "environment package libz removed"
        );
        let mut n = old.clone();
        n.options.insert("SOURCE_DATE_EPOCH".into(), "5".into());
        assert_eq!(
            reason(Some(&last(old)), &n, &ws),
            "SOURCE_DATE_EPOCH changed"
        );
    }
}
