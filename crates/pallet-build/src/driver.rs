//! One package build, end to end: workspace, guest root, steps in the sandbox, assembly,
//! signing and the repository index.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use pallet_image::config::{Arch, ImageConfiguration};
use pallet_keys::SigningKey;

use crate::assemble::{Assembly, PackageSpec};
use crate::runner::{Guest, Sandbox, Step};

/// A compiled build: what to run and what to package.
#[derive(Clone, Debug, Default)]
pub struct Plan {
    pub version: String,
    pub epoch: u64,
    pub main: PackageSpec,
    pub steps: Vec<Step>,
    pub subpackages: Vec<(PackageSpec, Vec<Step>)>,
    /// The build environment (`environment:` with `needs` merged), as an apko configuration.
    pub environment: ImageConfiguration,
    /// The compiled configuration, embedded in each package as `.melange.yaml`.
    pub config_yaml: String,
    /// `capabilities.add` and `capabilities.drop`, as written.
    pub cap_add: Vec<String>,
    pub cap_drop: Vec<String>,
    /// `package.timeout`: the whole build's limit.
    pub timeout: Option<std::time::Duration>,
    /// `package.resources`: the qemu runner's CPUs and memory unless `--cpu`/`--memory` say.
    pub resources: crate::compile::Resources,
    /// Which lint rules run and how (melange's `--lint-require` / `--lint-warn`), and each
    /// package's test steps (lddcheck and pkgconf look for theirs).
    pub lint: crate::lint::BuildLint,
}

/// How to build.
#[derive(Clone, Debug, Default)]
pub struct Options {
    pub arch: Option<Arch>,
    pub out_dir: PathBuf,
    pub workspace_dir: Option<PathBuf>,
    /// Mounted at `/var/cache/melange` when it exists.
    pub cache_dir: Option<PathBuf>,
    /// Cache for the environment's packages (the image builder's cache).
    pub apk_cache_dir: PathBuf,
    pub source_dir: Option<PathBuf>,
    /// Paths under `source_dir` (relative) the build does not see.
    pub source_exclude: Vec<PathBuf>,
    pub signing_key: Option<PathBuf>,
    pub generate_index: bool,
    pub bootstrap: bool,
    pub source_date_epoch: u64,
    pub namespace: String,
    pub debug: bool,
    /// Remove the workspace and guest afterwards.
    pub rm: bool,
    pub extra_repositories: Vec<String>,
    pub extra_keyring: Vec<String>,
    pub extra_packages: Vec<String>,
    pub ignore_signatures: bool,
    /// Variables from `--env-file`s (the first file naming a variable wins). The
    /// configuration's own `environment.environment` wins over them, as in melange.
    pub env_file: BTreeMap<String, String>,
    /// melange's `--fail-on-lint-warning`: lint warnings fail the build as required rules do.
    pub fail_on_lint_warning: bool,
    /// melange's `--persist-lint-results`: findings as `OUT/ARCH/lint-NAME-VERSION-rN.json`.
    pub persist_lint_results: bool,
    /// melange's `--dependency-log FILE`: generated dependencies as JSON in `FILE.ARCH`.
    pub dependency_log: Option<PathBuf>,
    /// The configuration's file, repository, commit and licence for the SBOM.
    pub config_source: crate::assemble::ConfigSource,
    /// Where progress lines and step output go.
    pub log: crate::log::Log,
    /// melange's `--runner`: bubblewrap, a container of a Docker daemon, or a qemu microVM.
    pub runner: crate::runner::Runner,
    /// melange's `--interactive`: a failed step opens a shell in the guest.
    pub interactive: bool,
    /// melange's `--timeout`: the whole build's limit, over `package.timeout`.
    pub timeout: Option<std::time::Duration>,
    /// melange's `--strip-origin-name`: each subpackage is its own origin.
    pub strip_origin_name: bool,
    /// melange's `--debug-runner`: the guest (container and image, VM files, root folder) is
    /// kept after the build.
    pub keep_guest: bool,
    /// binfmt_misc's folder, checked for a qemu-user handler before a foreign-arch build
    /// (default [`crate::emulation::BINFMT_MISC`]).
    pub binfmt_dir: Option<PathBuf>,
}

#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("{0}")]
    Setup(String),
    #[error("building the environment: {0}")]
    Environment(#[from] pallet_image::build::BuildError),
    #[error(transparent)]
    Run(#[from] crate::runner::RunError),
    #[error(transparent)]
    Assemble(#[from] crate::assemble::AssembleError),
    #[error("writing the index: {0}")]
    Index(#[from] pallet_index::IndexError),
    #[error(
        "cannot use signing key {path}: {source} (create one with `melange keygen` or `pallet keygen`)"
    )]
    Key {
        path: PathBuf,
        #[source]
        source: pallet_keys::KeyError,
    },
}

fn setup(what: &str, e: impl std::fmt::Display) -> BuildError {
    BuildError::Setup(format!("{what}: {e}"))
}

/// What of a source folder a build sees, as relative paths in walk order (sorted by name): its
/// folders and regular files, without `melange-out` and anything under `exclude` (a workspace
/// build keeps its output folders and signing key out). Links and special files are skipped,
/// as melange does.
pub fn visible_source_files(
    src: &Path,
    exclude: &[PathBuf],
) -> Result<Vec<(PathBuf, bool)>, walkdir::Error> {
    let mut out = vec![];
    let root_dev = {
        use std::os::unix::fs::MetadataExt as _;
        fs::metadata(src).ok().map(|m| m.dev())
    };
    // One file system, as `cp -x`: a mount inside the source folder (a daemon's namespace
    // files, a proc or a tmpfs) is not part of the sources, and may not even be readable.
    let mut it = walkdir::WalkDir::new(src)
        .min_depth(1)
        .same_file_system(true)
        .sort_by_file_name()
        .into_iter();
    while let Some(e) = it.next() {
        let e = match e {
            Ok(e) => e,
            // Gone between listing its folder and reading it: another build's temporary,
            // say. What is not there is not a source.
            Err(err)
                if err
                    .io_error()
                    .is_some_and(|io| io.kind() == std::io::ErrorKind::NotFound) =>
            {
                continue;
            }
            Err(err) => return Err(err),
        };
        let rel = e.path().strip_prefix(src).expect("under src").to_path_buf();
        // pallet's own half-written files (a concurrent build's cache, a killed writer's
        // leftovers) are never sources.
        let temporary = e
            .file_name()
            .to_string_lossy()
            .starts_with(pallet_atomic::TEMP_PREFIX);
        let skipped = temporary
            || rel
                .components()
                .next()
                .is_some_and(|c| c.as_os_str() == "melange-out")
            || exclude.iter().any(|x| rel.starts_with(x));
        let ft = e.file_type();
        if skipped {
            if ft.is_dir() {
                it.skip_current_dir();
            }
            continue;
        }
        // A file can be a mount point too (a bind-mounted namespace file).
        use std::os::unix::fs::MetadataExt as _;
        let foreign = e.metadata().is_ok_and(|m| Some(m.dev()) != root_dev);
        if foreign {
            continue;
        }
        if ft.is_dir() || ft.is_file() {
            out.push((rel, ft.is_dir()));
        }
    }
    Ok(out)
}

/// Copy what the build sees of `src` into `dst`, keeping permission bits.
fn copy_sources(src: &Path, dst: &Path, exclude: &[PathBuf]) -> Result<(), BuildError> {
    let files = visible_source_files(src, exclude).map_err(|e| setup("reading --source-dir", e))?;
    for (rel, is_dir) in files {
        let to = dst.join(&rel);
        let from = src.join(&rel);
        if is_dir {
            fs::create_dir_all(&to).map_err(|e| setup("creating the workspace", e))?;
        } else {
            match fs::copy(&from, &to) {
                Ok(_) => {}
                // Removed since the listing: not a source any more.
                Err(err) if err.kind() == std::io::ErrorKind::NotFound && !from.exists() => {}
                Err(err) => return Err(setup(&format!("copying {}", from.display()), err)),
            }
        }
    }
    Ok(())
}

/// melange's default environment for every step.
fn default_env(epoch: u64) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("HOME".into(), "/home/build".into()),
        ("GOPATH".into(), "/home/build/.cache/go".into()),
        ("GOMODCACHE".into(), "/var/cache/melange/gomodcache".into()),
        ("UV_CACHE_DIR".into(), "/var/cache/melange/uv".into()),
        ("PIP_CACHE_DIR".into(), "/var/cache/melange/pip".into()),
        (
            "COMPOSER_CACHE_DIR".into(),
            "/var/cache/melange/composer".into(),
        ),
        ("npm_config_cache".into(), "/var/cache/melange/npm".into()),
        ("SOURCE_DATE_EPOCH".into(), epoch.to_string()),
    ])
}

/// A guest root in `scratch/guest`, installed from `environment` by the image builder, with the
/// mount points the sandbox binds over.
fn make_guest(
    environment: &ImageConfiguration,
    arch: Arch,
    opts: &Options,
    scratch: &Path,
    workspace: &Path,
    identity: &crate::policy::Identity,
) -> Result<(Guest, Vec<String>), BuildError> {
    let root = scratch.join("guest");
    fs::create_dir_all(&root).map_err(|e| setup("creating the guest root", e))?;
    let bopts = pallet_image::build::BuildOptions {
        cache_dir: opts.apk_cache_dir.clone(),
        epoch: Some(opts.source_date_epoch),
        extra_keyring: opts.extra_keyring.clone(),
        extra_repositories: opts.extra_repositories.clone(),
        extra_packages: opts.extra_packages.clone(),
        ignore_signatures: opts.ignore_signatures,
        level: 1,
        ..Default::default()
    };
    let installed = pallet_image::build::install(environment, arch, &bopts)?;
    let locked = installed
        .packages
        .iter()
        .map(|(p, _)| format!("{}={}", p.name, p.version))
        .collect();
    let mut tree = installed.tree;
    tree.mkdir_all("home/build", 0o755, 0);
    tree.mkdir_all("var/cache/melange", 0o755, 0);
    if let crate::runner::Runner::Qemu(q) = &opts.runner {
        // The qemu runner boots the root as an initramfs, the workspace inside it.
        let kernel = crate::qemu::kernel(q, arch).map_err(crate::runner::RunError::from)?;
        let cpio = scratch.join("initramfs.cpio");
        crate::qemu::write_initramfs(
            &mut tree,
            q,
            &kernel,
            workspace,
            (identity.uid, identity.gid),
            &cpio,
        )
        .map_err(crate::runner::RunError::from)?;
        return Ok((Guest::Root(cpio), locked));
    }
    if matches!(opts.runner, crate::runner::Runner::Docker(_)) {
        // The docker runner imports the root as an image: a tar of the tree, as apko's layer.
        let tar = scratch.join("guest.tar");
        let mut f = std::io::BufWriter::new(
            fs::File::create(&tar).map_err(|e| setup("writing the guest image", e))?,
        );
        tree.write_tar(&mut f, &pallet_fs::OwnerNames::from_files("", ""))
            .and_then(|_| std::io::Write::flush(&mut f))
            .map_err(|e| setup("writing the guest image", e))?;
        return Ok((Guest::Root(tar), locked));
    }
    tree.materialize(&root)
        .map_err(|e| setup("writing the guest root", e))?;
    Ok((Guest::Root(root), locked))
}

/// What keeps a docker or qemu guest alive: the container (removed when dropped) or the VM
/// (stopped when dropped).
pub enum Running {
    None,
    Docker(crate::runner::DockerGuest),
    Qemu(std::sync::Arc<crate::qemu::Vm>),
}

/// With the docker runner, the guest's tar becomes an image and a running container; with the
/// qemu runner, the initramfs boots. The returned value stops either when dropped.
fn start_guest(
    guest: Guest,
    arch: Arch,
    opts: &Options,
    workspace: &Path,
    scratch: &Path,
    identity: &crate::policy::Identity,
) -> Result<(Guest, Running), BuildError> {
    use crate::runner::Runner;
    match (&opts.runner, &guest) {
        (Runner::Docker(socket), Guest::Root(tar)) => {
            let g = crate::runner::DockerGuest::start(
                socket,
                tar,
                workspace,
                opts.cache_dir.as_deref(),
                &identity.caps,
                Some((identity.uid, identity.gid)),
            )?;
            Ok((
                Guest::Docker {
                    socket: socket.clone(),
                    container: g.container.clone(),
                },
                Running::Docker(g),
            ))
        }
        (Runner::Qemu(q), Guest::Root(cpio)) => {
            let kernel = crate::qemu::kernel(q, arch).map_err(crate::runner::RunError::from)?;
            let vm = crate::qemu::Vm::boot(q, arch, &kernel, cpio, scratch, &opts.log)
                .map_err(crate::runner::RunError::from)?;
            let vm = std::sync::Arc::new(vm);
            Ok((Guest::Qemu(vm.clone()), Running::Qemu(vm)))
        }
        _ => Ok((guest, Running::None)),
    }
}

/// Stop the guest, or with `--debug-runner` leave it for inspection and say where it is.
fn keep_or_drop(running: Running, opts: &Options, scratch: &Path) {
    if !opts.keep_guest {
        return;
    }
    match running {
        Running::Docker(g) => {
            opts.log.line(format_args!(
                "--debug-runner: kept container {} of image {} (docker rm -f {} && docker rmi {} removes them)",
                g.container, g.image, g.container, g.image
            ));
            std::mem::forget(g);
        }
        _ => opts.log.line(format_args!(
            "--debug-runner: kept the guest's files in {}",
            scratch.display()
        )),
    }
}

/// `.melange.yaml` with the environment's package list replaced by what was installed, pinned
/// (`name=version`), as melange records the locked build environment in every package. The
/// compiled text is kept when it cannot be read back.
pub fn lock_environment(config_yaml: &str, locked: &[String]) -> String {
    let Ok(mut v) = serde_saphyr::from_str::<serde_json::Value>(config_yaml) else {
        return config_yaml.to_string();
    };
    let Some(env) = v.get_mut("environment").and_then(|e| e.as_object_mut()) else {
        return config_yaml.to_string();
    };
    let contents = env
        .entry("contents")
        .or_insert_with(|| serde_json::json!({}));
    if let Some(c) = contents.as_object_mut() {
        c.insert("packages".into(), serde_json::json!(locked));
    }
    serde_saphyr::to_string(&v).unwrap_or_else(|_| config_yaml.to_string())
}

/// `workspace/melange-out/NAME`, refused unless both folders are real folders (not links).
fn real_output_dir(workspace: &Path, name: &str) -> Result<PathBuf, BuildError> {
    let out = workspace.join("melange-out");
    let dir = out.join(name);
    for p in [&out, &dir] {
        let is_dir = fs::symlink_metadata(p).is_ok_and(|m| m.file_type().is_dir());
        if !is_dir {
            return Err(BuildError::Setup(format!(
                "{name}: {} is no longer a folder (a step replaced or removed it{}); \
                 write the package's files into it instead",
                p.strip_prefix(workspace).unwrap_or(p).display(),
                if fs::symlink_metadata(p).is_ok_and(|m| m.file_type().is_symlink()) {
                    ", with a symlink that would make the packager read host files"
                } else {
                    ""
                }
            )));
        }
    }
    Ok(dir)
}

/// melange's lint rules on what the build produced: a failing required rule (or, with
/// `--fail-on-lint-warning`, any finding) stops the build before anything is written; the
/// others are reported. With `--persist-lint-results` the findings of each package go to
/// `OUT/ARCH/lint-NAME-VERSION-rN.json` in melange's layout, failing or not.
fn lint_outputs(
    plan: &Plan,
    all: &[&PackageSpec],
    workspace: &Path,
    arch: Arch,
    opts: &Options,
) -> Result<(), BuildError> {
    use crate::lint::Severity;
    let mut failures = vec![];
    let mut warned = vec![];
    for p in all {
        let dir = workspace.join("melange-out").join(&p.name);
        let found = plan
            .lint
            .lint_dir(&dir, &p.name, arch.apk(), &p.checks_disabled)
            .map_err(|e| setup(&format!("linting {}", p.name), e))?;
        for f in &found {
            let line = format!("{}: {} ({})", f.package, f.rule, f.message);
            match f.severity {
                Severity::Require => failures.push(line),
                _ if opts.fail_on_lint_warning => {
                    opts.log.line(format_args!(
                        "lint warning (an error with --fail-on-lint-warning): {line}"
                    ));
                    warned.push(line)
                }
                _ => opts.log.line(format_args!("lint warning: {line}")),
            }
        }
        if opts.persist_lint_results && !found.is_empty() {
            let full = format!("{}-{}-r{}", p.name, plan.version, plan.epoch);
            let path = crate::lint::persist(&opts.out_dir, arch.apk(), &full, &found)
                .map_err(|e| BuildError::Setup(e.to_string()))?;
            opts.log
                .line(format_args!("saved lint results to {}", path.display()));
        }
    }
    if !failures.is_empty() {
        return Err(BuildError::Setup(format!(
            "required lint rules failed (fix the files, or list the rule under checks.disabled):\n  {}",
            failures.join("\n  ")
        )));
    }
    if !warned.is_empty() {
        return Err(BuildError::Setup(format!(
            "lint warnings fail the build with --fail-on-lint-warning:\n  {}",
            warned.join("\n  ")
        )));
    }
    Ok(())
}

/// Refuse what cannot run here: the host's root as the guest of another architecture (its
/// programs are the host's, so the package would be mislabelled), or a foreign guest with no
/// qemu-user handler.
fn can_run(arch: Arch, bootstrap: bool, opts: &Options) -> Result<(), BuildError> {
    let host = Arch::host();
    if bootstrap && arch != host {
        return Err(BuildError::Setup(format!(
            "--bootstrap uses this machine's root as the build guest, and its programs are {}: it cannot build for {}; drop --bootstrap (the guest is then installed from {} repositories and run under qemu-user) or build for {}",
            host.apk(),
            arch.apk(),
            arch.apk(),
            host.apk()
        )));
    }
    // The qemu runner emulates the whole machine: no qemu-user handler is involved.
    if matches!(opts.runner, crate::runner::Runner::Qemu(_)) {
        return Ok(());
    }
    let dir = opts
        .binfmt_dir
        .clone()
        .unwrap_or_else(|| PathBuf::from(crate::emulation::BINFMT_MISC));
    crate::emulation::check(arch, host, &dir).map_err(BuildError::Setup)
}

/// The lock every writer of `dir`'s `APKINDEX.tar.gz` takes, kept in `cache`.
pub fn index_lock(cache: &Path, dir: &Path) -> std::io::Result<pallet_atomic::EntryLock> {
    use sha2::Digest as _;
    let abs = std::path::absolute(dir)?;
    let h: String = sha2::Sha256::digest(abs.as_os_str().as_encoded_bytes())
        .iter()
        .take(16)
        .map(|b| format!("{b:02x}"))
        .collect();
    pallet_atomic::EntryLock::acquire(&cache.join("locks-v1").join(format!("index-{h}")))
}

/// Build every package of `plan`; returns the written `.apk` files.
pub fn build(plan: &Plan, opts: &Options) -> Result<Vec<PathBuf>, BuildError> {
    let arch = opts.arch.unwrap_or_else(Arch::host);
    let bwrapped;
    let opts = if opts.runner != crate::runner::Runner::Bubblewrap && opts.bootstrap {
        // The host's root can only be shared into a sandbox: no image or VM holds it.
        opts.log.line(format_args!(
            "note: --bootstrap uses the host's root as the guest, which only bubblewrap can share; running in bubblewrap instead of the {} runner",
            opts.runner.name()
        ));
        bwrapped = Options {
            runner: crate::runner::Runner::Bubblewrap,
            ..opts.clone()
        };
        &bwrapped
    } else {
        opts
    };
    if opts.runner == crate::runner::Runner::Bubblewrap && !crate::runner::bwrap_available() {
        return Err(crate::runner::RunError::NoBwrap.into());
    }
    can_run(arch, opts.bootstrap, opts)?;
    let key = match &opts.signing_key {
        Some(p) => Some(SigningKey::load(p).map_err(|source| BuildError::Key {
            path: p.clone(),
            source,
        })?),
        None => None,
    };
    let scratch = tempfile::Builder::new()
        .prefix("pallet-build-")
        .tempdir()
        .map_err(|e| setup("creating a scratch folder", e))?;
    let workspace = match &opts.workspace_dir {
        Some(w) => w.join(arch.apk()),
        None => scratch.path().join("workspace"),
    };
    fs::create_dir_all(&workspace).map_err(|e| setup("creating the workspace", e))?;
    if let Some(src) = &opts.source_dir {
        copy_sources(src, &workspace, &opts.source_exclude)?;
    }
    let all: Vec<&PackageSpec> = std::iter::once(&plan.main)
        .chain(plan.subpackages.iter().map(|(s, _)| s))
        .collect();
    for p in &all {
        let d = workspace.join("melange-out").join(&p.name);
        let _ = fs::remove_dir_all(&d);
        fs::create_dir_all(&d).map_err(|e| setup("creating melange-out", e))?;
    }
    let started = std::time::Instant::now();
    let mut environment = plan.environment.clone();
    crate::policy::add_build_user(&mut environment);
    let identity = crate::policy::identity(&environment, &plan.cap_add, &plan.cap_drop)
        .map_err(|e| setup("the build's user and capabilities", e))?;
    let (guest, config_yaml) = if opts.bootstrap {
        // The host's root has no package list to record.
        (Guest::Bootstrap, plan.config_yaml.clone())
    } else {
        let (guest, locked) = make_guest(
            &environment,
            arch,
            opts,
            scratch.path(),
            &workspace,
            &identity,
        )?;
        (guest, lock_environment(&plan.config_yaml, &locked))
    };
    if let Some(c) = &opts.cache_dir {
        let _ = fs::create_dir_all(c);
    }
    let mut sized = opts.clone();
    if let crate::runner::Runner::Qemu(q) = &mut sized.runner {
        q.size_from(&plan.resources)
            .map_err(|e| setup("package.resources", e))?;
    }
    let (guest, running) = start_guest(guest, arch, &sized, &workspace, scratch.path(), &identity)?;
    let mut env = default_env(opts.source_date_epoch);
    env.extend(opts.env_file.clone());
    env.extend(plan.environment.environment.clone());
    // The fetch cache (`sha256:<hex>` files) lives in --cache-dir; creating it means a second
    // build of the same sources works offline.
    if let Some(c) = &opts.cache_dir {
        let _ = fs::create_dir_all(c);
    }
    let sandbox = Sandbox {
        guest,
        workspace: workspace.clone(),
        cache: opts.cache_dir.clone(),
        env,
        debug: opts.debug,
        identity,
        deadline: opts.timeout.or(plan.timeout).map(|t| (started + t, t)),
        log: opts.log.clone(),
        interactive: opts.interactive,
    };
    for step in &plan.steps {
        opts.log.line(format_args!("running step '{}'", step.name));
        sandbox.run(step)?;
    }
    for (spec, steps) in &plan.subpackages {
        for step in steps {
            opts.log.line(format_args!(
                "running step '{}' for {}",
                step.name, spec.name
            ));
            sandbox.run(step)?;
        }
    }
    if let Running::Qemu(vm) = &running {
        // The steps ran on the guest's copy: what the packager reads comes back from it.
        vm.retrieve(&workspace)
            .map_err(crate::runner::RunError::from)?;
    }
    drop(sandbox);
    keep_or_drop(running, opts, scratch.path());
    let assembly = Assembly {
        version: plan.version.clone(),
        epoch: plan.epoch,
        arch: arch.apk().to_string(),
        origin: plan.main.name.clone(),
        namespace: if opts.namespace.is_empty() {
            "unknown".into()
        } else {
            opts.namespace.clone()
        },
        source_date_epoch: opts.source_date_epoch,
        signing_key: key.as_ref(),
        config_yaml,
        workspace: Some(workspace.clone()),
        config_source: opts.config_source.clone(),
        dependency_log: opts.dependency_log.clone(),
    };
    // The steps are over (the sandbox and everything it started are gone), so what is in the
    // workspace now stays put. The packager runs on the host: an output folder that a step
    // replaced by a symlink would make it read whatever host folder the link names.
    for p in &all {
        real_output_dir(&workspace, &p.name)?;
    }
    lint_outputs(plan, &all, &workspace, arch, opts)?;
    // Temporaries a killed build left among the outputs (their writer's lock is gone).
    pallet_atomic::sweep(&opts.out_dir.join(arch.apk()));
    let mut written = vec![];
    for p in &all {
        let own;
        let assembly = if opts.strip_origin_name {
            own = Assembly {
                origin: p.name.clone(),
                ..assembly.clone()
            };
            &own
        } else {
            &assembly
        };
        let (path, info) = assembly.emit(
            p,
            &workspace.join("melange-out").join(&p.name),
            &opts.out_dir,
        )?;
        opts.log
            .line(format_args!("wrote {} ({})", path.display(), info.nv()));
        written.push(path);
    }
    if opts.generate_index {
        // Builds sharing an output folder (make -j, two terminals) each read, merge and
        // rewrite the index: without a lock the last one would drop the others' packages.
        // The lock lives in the package cache, not among the repository's files.
        let _lock = index_lock(&opts.apk_cache_dir, &opts.out_dir.join(arch.apk()))
            .map_err(|e| setup("locking the index", e))?;
        let idx = crate::assemble::update_index(
            &opts.out_dir,
            arch.apk(),
            &written,
            key.as_ref(),
            opts.source_date_epoch,
        )?;
        opts.log.line(format_args!("updated {}", idx.display()));
    }
    if !opts.rm || opts.keep_guest {
        // Keep the scratch folder for inspection.
        let kept = scratch.keep();
        opts.log
            .line(format_args!("kept the build folders in {}", kept.display()));
    }
    Ok(written)
}

/// Run a compiled test (`test:` of a package or subpackage) in a fresh guest built from its
/// environment, which includes the package under test.
pub fn run_test(test: &crate::compile::CompiledTest, opts: &Options) -> Result<(), BuildError> {
    let arch = opts.arch.unwrap_or_else(Arch::host);
    if opts.runner == crate::runner::Runner::Bubblewrap && !crate::runner::bwrap_available() {
        return Err(crate::runner::RunError::NoBwrap.into());
    }
    can_run(arch, false, opts)?;
    let scratch = tempfile::Builder::new()
        .prefix("pallet-test-")
        .tempdir()
        .map_err(|e| setup("creating a scratch folder", e))?;
    let workspace = scratch.path().join("workspace");
    fs::create_dir_all(&workspace).map_err(|e| setup("creating the workspace", e))?;
    if let Some(src) = &opts.source_dir {
        copy_sources(src, &workspace, &opts.source_exclude)?;
    }
    let mut environment = test.environment.clone();
    crate::policy::add_build_user(&mut environment);
    let identity =
        crate::policy::identity(&environment, &[], &[]).map_err(|e| setup("the test's user", e))?;
    let (guest, _) = make_guest(
        &environment,
        arch,
        opts,
        scratch.path(),
        &workspace,
        &identity,
    )?;
    let (guest, _running) = start_guest(guest, arch, opts, &workspace, scratch.path(), &identity)?;
    let mut env = default_env(opts.source_date_epoch);
    env.extend(opts.env_file.clone());
    env.extend(test.environment.environment.clone());
    let sandbox = Sandbox {
        guest,
        workspace,
        cache: opts.cache_dir.clone(),
        env,
        debug: opts.debug,
        identity,
        deadline: None,
        log: opts.log.clone(),
        interactive: opts.interactive,
    };
    let mut steps = vec![];
    crate::recipe::flatten_steps(&test.pipeline, &mut steps);
    let res = steps.iter().try_for_each(|step| {
        opts.log
            .line(format_args!("running test step '{}'", step.name));
        sandbox.run(step)
    });
    if !opts.rm || opts.keep_guest {
        // Kept whether the test passed or not: a failed one is what people look into.
        let kept = scratch.keep();
        opts.log
            .line(format_args!("kept the test folders in {}", kept.display()));
    }
    res.map_err(Into::into)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sources_leave_out_outputs_exclusions_and_temporaries() {
        let d = tempfile::tempdir().unwrap();
        let s = d.path();
        for f in [
            "a.c",
            "melange-out/x/f",
            "keys/k.rsa",
            "cache/.pallet-tmp.1.2.idx",
            "cache/ok",
        ] {
            fs::create_dir_all(s.join(f).parent().unwrap()).unwrap();
            fs::write(s.join(f), "x").unwrap();
        }
        let files: Vec<String> = visible_source_files(s, &[PathBuf::from("keys")])
            .unwrap()
            .into_iter()
            .map(|(p, _)| p.display().to_string())
            .collect();
        assert_eq!(files, ["a.c", "cache", "cache/ok"]);
        let ws = s.join("ws-copy");
        fs::create_dir(&ws).unwrap();
        copy_sources(s, &ws, &[PathBuf::from("keys"), PathBuf::from("ws-copy")]).unwrap();
        assert!(ws.join("cache/ok").exists() && !ws.join("cache/.pallet-tmp.1.2.idx").exists());
    }
}
