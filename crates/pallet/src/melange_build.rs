//! `pallet pkg build` / `pallet pkg test` and the `melange build|test|keygen|index|sign-index`
//! command lines, with melange's flag names.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, bail};
use clap::{Args, Parser, Subcommand};
use pallet_build::driver::{self, Options};
use pallet_build::request;
use pallet_image::config::Arch;

#[derive(Args, Clone)]
#[command(
    next_line_help = true,
    after_help = "Examples:\n  pallet pkg build hello.yaml --signing-key melange.rsa --out-dir packages\n  pallet pkg build --bootstrap examples/hello-c/melange.yaml --source-dir examples/hello-c --signing-key melange.rsa\n  melange build hello.yaml --arch x86_64 --repository-append ./packages --keyring-append melange.rsa.pub\n  melange build hello.yaml --env-file build-x86_64.env --env-file build-common.env --namespace wolfi --license Apache-2.0 --git-repo-url https://github.com/wolfi-dev/os"
)]
pub struct BuildArgs {
    /// The melange YAML file (default: .melange.yaml, .melange.yml, melange.yaml or melange.yml).
    config: Option<PathBuf>,
    /// Architectures to build (default: every architecture the recipe allows that every
    /// repository serves).
    #[arg(long, value_delimiter = ',')]
    arch: Vec<String>,
    /// Private key to sign packages and the index with.
    #[arg(long)]
    signing_key: Option<PathBuf>,
    /// Extra keys for the build environment's repositories (paths or URLs).
    #[arg(short = 'k', long, value_delimiter = ',')]
    keyring_append: Vec<String>,
    /// Extra repositories for the build environment.
    #[arg(short = 'r', long, value_delimiter = ',')]
    repository_append: Vec<String>,
    /// Extra packages for the build environment.
    #[arg(long, value_delimiter = ',')]
    package_append: Vec<String>,
    /// Where packages go (OUT/ARCH/NAME-VER-rN.apk).
    #[arg(long, default_value = "./packages/")]
    out_dir: PathBuf,
    /// Files copied into the workspace (default: the config file's folder).
    #[arg(long)]
    source_dir: Option<PathBuf>,
    /// Keep the workspace here (WORKSPACE/ARCH) instead of a temporary folder.
    #[arg(long)]
    workspace_dir: Option<PathBuf>,
    /// Mounted at /var/cache/melange (created when missing).
    #[arg(long, default_value = "./melange-cache/")]
    cache_dir: PathBuf,
    /// Cache for the build environment's packages.
    #[arg(long)]
    apk_cache_dir: Option<PathBuf>,
    /// A folder searched for `uses:` pipelines before the built-ins (repeatable).
    #[arg(long)]
    pipeline_dir: Vec<PathBuf>,
    /// Folders searched for `uses:` pipelines, after --pipeline-dir (comma separated).
    #[arg(long, value_delimiter = ',')]
    pipeline_dirs: Vec<PathBuf>,
    /// Write or merge OUT/ARCH/APKINDEX.tar.gz.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set, num_args = 0..=1, require_equals = true, default_missing_value = "true")]
    generate_index: bool,
    /// dotenv files whose variables every step sees (repeatable; an earlier file wins over a
    /// later one and the configuration's environment.environment wins over both, as in melange).
    #[arg(long, value_delimiter = ',')]
    env_file: Vec<PathBuf>,
    /// YAML map merged over `vars`.
    #[arg(long)]
    vars_file: Option<PathBuf>,
    /// Vendor namespace: the .PKGINFO maintainer, the SBOM supplier and the purl namespace.
    #[arg(long, default_value = "unknown")]
    namespace: String,
    /// Runner: bubblewrap (default), docker (the daemon at DOCKER_HOST) or qemu (a microVM
    /// booting QEMU_KERNEL_IMAGE).
    #[arg(long)]
    runner: Option<String>,
    /// The qemu runner's CPUs (default: package.resources.cpu, else 2).
    #[arg(long)]
    cpu: Option<String>,
    /// The qemu runner's memory, e.g. 4Gi (default: package.resources.memory, else 4Gi, at
    /// most 85% of what is free).
    #[arg(long)]
    memory: Option<String>,
    #[command(flatten)]
    build_only: BuildOnlyFlags,
    #[command(flatten)]
    more: RunnerFlags,
    /// Trace each step's shell (`set -x`).
    #[arg(long, action = clap::ArgAction::Set, num_args = 0..=1, require_equals = true, default_missing_value = "true", default_value_t = false)]
    debug: bool,
    /// On a failing step, a shell in the build guest (exit 0 continues, any other status stops).
    #[arg(short = 'i', long, action = clap::ArgAction::Set, num_args = 0..=1, require_equals = true, default_missing_value = "true", default_value_t = false)]
    interactive: bool,
    /// Remove the workspace and guest afterwards.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set, num_args = 0..=1, require_equals = true, default_missing_value = "true")]
    rm: bool,
    /// Remove the guest folder afterwards; --cleanup=false keeps the build folders.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set, num_args = 0..=1, require_equals = true, default_missing_value = "true")]
    cleanup: bool,
    /// Build date, RFC 3339 (SOURCE_DATE_EPOCH overrides it; default 0).
    #[arg(long)]
    build_date: Option<String>,
    /// Use the host's root read-only as the build guest (for a repository's first packages).
    #[arg(long, action = clap::ArgAction::Set, num_args = 0..=1, require_equals = true, default_missing_value = "true", default_value_t = false)]
    bootstrap: bool,
    /// Skip verifying the environment repositories' signatures.
    #[arg(long, action = clap::ArgAction::Set, num_args = 0..=1, require_equals = true, default_missing_value = "true", default_value_t = false)]
    ignore_signatures: bool,
    /// Build options (`options:` of the configuration) to enable.
    #[arg(long, value_delimiter = ',')]
    build_option: Vec<String>,
    /// Repository of the configuration file, for the SBOM (default https://unknown/unknown/unknown).
    #[arg(long)]
    git_repo_url: Option<String>,
    /// Commit of the configuration file (default: git HEAD of its folder); also the .PKGINFO
    /// commit when the package names none.
    #[arg(long)]
    git_commit: Option<String>,
    /// Licence of the configuration file itself, for the SBOM.
    #[arg(long, default_value = "NOASSERTION")]
    license: String,
    /// Lint warnings fail the build too.
    #[arg(long, action = clap::ArgAction::Set, num_args = 0..=1, require_equals = true, default_missing_value = "true", default_value_t = false)]
    fail_on_lint_warning: bool,
    /// Linters whose findings fail the build; a list given replaces melange's default list.
    #[arg(long, value_delimiter = ',')]
    lint_require: Option<Vec<String>>,
    /// Linters whose findings are only reported; a list given replaces melange's default list.
    #[arg(long, value_delimiter = ',')]
    lint_warn: Option<Vec<String>>,
    /// Write lint findings as OUT/ARCH/lint-NAME-VERSION-rN.json.
    #[arg(long, action = clap::ArgAction::Set, num_args = 0..=1, require_equals = true, default_missing_value = "true", default_value_t = false)]
    persist_lint_results: bool,
    /// Append ARCH|ORIGIN|NAME|VERSION-rN per built package to ./packages.log.
    #[arg(long, action = clap::ArgAction::Set, num_args = 0..=1, require_equals = true, default_missing_value = "true", default_value_t = false)]
    create_build_log: bool,
    /// Write each package's generated dependencies as JSON to FILE.ARCH.
    #[arg(long)]
    dependency_log: Option<PathBuf>,
}

/// melange's other runner flags, shared by `build` and `test`.
#[derive(clap::Args, Clone, Debug, Default)]
pub struct RunnerFlags {
    /// The whole build's time limit, e.g. 90m (overrides package.timeout).
    #[arg(long)]
    timeout: Option<String>,
    /// The qemu runner's CPU model (qemu's -cpu; default host with KVM, else one per arch).
    #[arg(long)]
    cpumodel: Option<String>,
    /// The qemu runner's workspace disk (default: the VM's memory plus 512 MiB, sparse).
    #[arg(long)]
    disk: Option<String>,
    /// Keep the guest afterwards (the docker runner's container and image, the qemu runner's
    /// initramfs and disk, the bubblewrap root) and say where.
    #[arg(long, action = clap::ArgAction::Set, num_args = 0..=1, require_equals = true, default_missing_value = "true", default_value_t = false)]
    debug_runner: bool,
    /// Accepted as melange accepts it: melange does nothing with it either.
    #[arg(long)]
    cache_source: Option<String>,
}

impl RunnerFlags {
    /// Apply to `runner` and `opts`; say what cannot apply.
    fn apply(&self, opts: &mut Options) -> anyhow::Result<()> {
        if let Some(t) = &self.timeout {
            opts.timeout = pallet_build::policy::parse_timeout(t)
                .map_err(|e| anyhow::anyhow!("--timeout: {e}"))?;
        }
        opts.keep_guest = self.debug_runner;
        let runner = &mut opts.runner;
        match runner {
            pallet_build::runner::Runner::Qemu(q) => {
                q.cpu_model = self.cpumodel.clone();
                q.disk_mib = self
                    .disk
                    .as_deref()
                    .map(pallet_build::qemu::parse_mib)
                    .transpose()
                    .map_err(|e| anyhow::anyhow!("--disk: {e}"))?;
            }
            _ if self.cpumodel.is_some() || self.disk.is_some() => eprintln!(
                "note: --cpumodel and --disk set up the qemu runner's VM; the {} runner has neither",
                runner.name()
            ),
            _ => {}
        }
        if self.cache_source.is_some() {
            eprintln!(
                "note: --cache-source is accepted as melange accepts it; melange does not use it either"
            );
        }
        Ok(())
    }
}

/// melange build's flags for what pallet does not make.
#[derive(clap::Args, Clone, Debug, Default)]
pub struct BuildOnlyFlags {
    /// Start from an empty workspace: copy no source files into it.
    #[arg(long, action = clap::ArgAction::Set, num_args = 0..=1, require_equals = true, default_missing_value = "true", default_value_t = false)]
    empty_workspace: bool,
    /// Each subpackage's origin is its own name instead of the main package's.
    #[arg(long, action = clap::ArgAction::Set, num_args = 0..=1, require_equals = true, default_missing_value = "true", default_value_t = false)]
    strip_origin_name: bool,
    /// melange's SLSA attestation beside each package: not written by pallet (says so).
    #[arg(long, action = clap::ArgAction::Set, num_args = 0..=1, require_equals = true, default_missing_value = "true", default_value_t = false)]
    generate_provenance: bool,
    /// melange's OpenTelemetry trace file: not written by pallet (says so).
    #[arg(long)]
    trace: Option<PathBuf>,
    /// The libc of host.triplet.*: gnu (melange's default and the only one pallet has).
    #[arg(long, default_value = "gnu")]
    override_host_triplet_libc_substitution_flavor: String,
}

impl BuildOnlyFlags {
    fn apply(&self, opts: &mut Options) -> anyhow::Result<()> {
        if self.empty_workspace {
            opts.source_dir = None;
        }
        opts.strip_origin_name = self.strip_origin_name;
        if self.generate_provenance {
            eprintln!(
                "note: --generate-provenance: pallet writes no SLSA attestation; each package embeds its locked build configuration and an SPDX SBOM, and rebuilds are byte-identical (pallet pkg rebuild checks that)"
            );
        }
        if let Some(t) = &self.trace {
            eprintln!(
                "note: --trace {}: pallet writes no OpenTelemetry trace; --create-build-log and the per-step lines of the log give the steps and their times",
                t.display()
            );
        }
        if self.override_host_triplet_libc_substitution_flavor != "gnu" {
            anyhow::bail!(
                "--override-host-triplet-libc-substitution-flavor {}: pallet has only gnu (melange's default); host.triplet.* are the gnu triplets, and cross.triplet.*.musl name the musl ones",
                self.override_host_triplet_libc_substitution_flavor
            );
        }
        Ok(())
    }
}

fn find_config(c: &Option<PathBuf>) -> anyhow::Result<PathBuf> {
    if let Some(c) = c {
        return Ok(c.clone());
    }
    for n in [
        ".melange.yaml",
        ".melange.yml",
        "melange.yaml",
        "melange.yml",
    ] {
        if Path::new(n).is_file() {
            return Ok(PathBuf::from(n));
        }
    }
    bail!(
        "no configuration file given and none of .melange.yaml, .melange.yml, melange.yaml, melange.yml here"
    )
}

fn epoch(build_date: &Option<String>) -> anyhow::Result<u64> {
    match std::env::var("SOURCE_DATE_EPOCH") {
        Ok(v) if !v.trim().is_empty() => v
            .trim()
            .parse()
            .with_context(|| format!("SOURCE_DATE_EPOCH='{v}' is not a whole number")),
        _ => match build_date {
            Some(d) => crate::image_cmds::parse_date(d),
            None => Ok(0),
        },
    }
}

fn read_vars(p: &Option<PathBuf>) -> anyhow::Result<BTreeMap<String, String>> {
    match p {
        Some(p) => Ok(request::read_vars(p)?),
        None => Ok(BTreeMap::new()),
    }
}

/// `--env-file`s; a `${VAR}` no file sets is read from pallet's own environment, as godotenv
/// does.
fn read_env_files(files: &[PathBuf]) -> anyhow::Result<BTreeMap<String, String>> {
    request::read_env_files(files, &|n| std::env::var(n).ok()).context("reading --env-file")
}

fn archs(list: &[String]) -> anyhow::Result<Vec<Arch>> {
    if list.is_empty() {
        return Ok(vec![Arch::host()]);
    }
    list.iter()
        .map(|a| Arch::parse(a).with_context(|| format!("unknown architecture '{a}'")))
        .collect()
}

/// `--arch` naming one architecture, or the host's.
pub(crate) fn one_arch(a: &Option<String>) -> anyhow::Result<Arch> {
    match a {
        Some(x) => Arch::parse(x).with_context(|| format!("unknown architecture '{x}'")),
        None => Ok(Arch::host()),
    }
}

/// Where binfmt_misc handlers are looked up: `PALLET_BINFMT_MISC` (for tests that need a
/// machine without them), else the kernel's folder.
pub(crate) fn binfmt_dir() -> Option<PathBuf> {
    std::env::var_os("PALLET_BINFMT_MISC").map(PathBuf::from)
}

pub(crate) fn default_apk_cache() -> PathBuf {
    std::env::var_os("XDG_CACHE_HOME")
        .filter(|x| !x.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(|| PathBuf::from("/tmp"))
        .join("pallet")
}

/// `--runner`: bubblewrap (the default) or docker (the daemon at DOCKER_HOST); melange's qemu
/// runner is accepted and says, in one line, that the build runs in bubblewrap instead.
/// Returns the docker socket when the docker runner is chosen.
pub(crate) fn check_runner(
    runner: &Option<String>,
) -> anyhow::Result<pallet_build::runner::Runner> {
    use pallet_build::runner::Runner;
    match runner.as_deref() {
        None | Some("") | Some("bubblewrap") | Some("bwrap") => Ok(Runner::Bubblewrap),
        Some("docker") => Ok(Runner::Docker(pallet_image::docker::socket_from_host(
            std::env::var("DOCKER_HOST").ok().as_deref(),
        )?)),
        // melange's variables (QEMU_KERNEL_IMAGE, QEMU_KERNEL_MODULES, ...) name the kernel.
        Some("qemu") => {
            if let Some(b) = std::env::var_os("QEMU_BASE_INITRAMFS").filter(|v| !v.is_empty()) {
                eprintln!(
                    "note: QEMU_BASE_INITRAMFS={} is not read: pallet's qemu runner boots the build's own environment with its own init, so it needs no base initramfs",
                    b.to_string_lossy()
                );
            }
            Ok(Runner::Qemu(pallet_build::qemu::QemuConfig::from_vars(
                |k| std::env::var(k).ok(),
            )))
        }
        Some(other) => bail!("--runner {other}: unknown runner (bubblewrap, qemu or docker)"),
    }
}

/// `--cpu` and `--memory` for the qemu runner; refused with another runner, which has no
/// limits to set (melange ignores them there).
fn sized(
    mut runner: pallet_build::runner::Runner,
    cpu: &Option<String>,
    memory: &Option<String>,
) -> anyhow::Result<pallet_build::runner::Runner> {
    if let pallet_build::runner::Runner::Qemu(q) = &mut runner {
        q.cpus = cpu
            .as_deref()
            .map(pallet_build::qemu::parse_cpus)
            .transpose()
            .map_err(|e| anyhow::anyhow!("--cpu: {e}"))?;
        q.memory_mib = memory
            .as_deref()
            .map(pallet_build::qemu::parse_mib)
            .transpose()
            .map_err(|e| anyhow::anyhow!("--memory: {e}"))?;
    } else if cpu.is_some() || memory.is_some() {
        eprintln!(
            "note: --cpu and --memory size the qemu runner's VM; the {} runner does not limit them",
            runner.name()
        );
    }
    Ok(runner)
}

/// The commit of the configuration file: `--git-commit`, else `git rev-parse HEAD` in its
/// folder (melange's best-effort detection), else none.
fn detect_commit(given: &Option<String>, config: &Path) -> Option<String> {
    match given.as_ref().filter(|c| !c.trim().is_empty()) {
        Some(c) => Some(c.trim().to_string()),
        None => request::detect_commit(config),
    }
}

/// The request `build` and `compile` share: every flag mapped onto the recipe and its options.
fn recipe_request(
    a: &BuildArgs,
    runner: pallet_build::runner::Runner,
) -> anyhow::Result<request::RecipeRequest> {
    let config = find_config(&a.config)?;
    let vars = read_vars(&a.vars_file)?;
    let env_file = read_env_files(&a.env_file)?;
    let sde = epoch(&a.build_date)?;
    // melange searches --pipeline-dir, then each of --pipeline-dirs, then the built-ins.
    let pipeline_dirs: Vec<PathBuf> = a
        .pipeline_dir
        .iter()
        .chain(&a.pipeline_dirs)
        .cloned()
        .collect();
    let commit = detect_commit(&a.git_commit, &config);
    let git_repo_url = match &a.git_repo_url {
        Some(u) if !u.trim().is_empty() => u.trim().to_string(),
        _ => "https://unknown/unknown/unknown".into(),
    };
    let config_source = pallet_build::assemble::ConfigSource {
        path: config.display().to_string(),
        repository_url: git_repo_url,
        commit: commit.clone().unwrap_or_else(|| "unknown".into()),
        license: a.license.clone(),
    };
    Ok(request::RecipeRequest {
        config: config.clone(),
        archs: archs(&a.arch)?,
        pipeline_dirs,
        vars,
        build_options: a.build_option.clone(),
        lint_require: a.lint_require.clone(),
        lint_warn: a.lint_warn.clone(),
        commit,
        build_log: a.create_build_log.then(|| PathBuf::from("packages.log")),
        options: Options {
            arch: None,
            out_dir: a.out_dir.clone(),
            workspace_dir: a.workspace_dir.clone(),
            cache_dir: Some(a.cache_dir.clone()),
            apk_cache_dir: a.apk_cache_dir.clone().unwrap_or_else(default_apk_cache),
            source_dir: Some(a.source_dir.clone().unwrap_or_else(|| {
                config
                    .parent()
                    .filter(|p| !p.as_os_str().is_empty())
                    .map(Path::to_path_buf)
                    .unwrap_or_else(|| PathBuf::from("."))
            })),
            source_exclude: vec![],
            signing_key: a.signing_key.clone(),
            generate_index: a.generate_index,
            bootstrap: a.bootstrap,
            source_date_epoch: sde,
            namespace: a.namespace.clone(),
            debug: a.debug,
            // --cleanup=false keeps the guest as --rm=false keeps everything.
            rm: a.rm && a.cleanup,
            extra_repositories: a.repository_append.clone(),
            extra_keyring: a.keyring_append.clone(),
            extra_packages: a.package_append.clone(),
            ignore_signatures: a.ignore_signatures,
            env_file,
            fail_on_lint_warning: a.fail_on_lint_warning,
            persist_lint_results: a.persist_lint_results,
            dependency_log: a.dependency_log.clone(),
            config_source,
            log: pallet_build::log::Log::stderr(),
            binfmt_dir: binfmt_dir(),
            runner,
            interactive: a.interactive,
            ..Default::default()
        },
    })
}

pub fn build_cmd(a: BuildArgs) -> anyhow::Result<ExitCode> {
    let runner = sized(check_runner(&a.runner)?, &a.cpu, &a.memory)?;
    if a.bootstrap {
        let unused: Vec<&str> = [
            ("--package-append", !a.package_append.is_empty()),
            ("--repository-append", !a.repository_append.is_empty()),
            ("--keyring-append", !a.keyring_append.is_empty()),
            ("--apk-cache-dir", a.apk_cache_dir.is_some()),
            ("--ignore-signatures", a.ignore_signatures),
        ]
        .into_iter()
        .filter_map(|(f, set)| set.then_some(f))
        .collect();
        if !unused.is_empty() {
            eprintln!(
                "note: --bootstrap uses the host's root as the build guest, so nothing is installed and {} {} not used",
                unused.join(", "),
                if unused.len() == 1 { "is" } else { "are" }
            );
        }
    }
    let mut req = recipe_request(&a, runner)?;
    let config = req.config.clone();
    if a.git_repo_url
        .as_deref()
        .is_none_or(|u| u.trim().is_empty())
    {
        eprintln!(
            "note: no --git-repo-url: the SBOM names the configuration's repository https://unknown/unknown/unknown, as melange does"
        );
    }
    a.more.apply(&mut req.options)?;
    a.build_only.apply(&mut req.options)?;
    {
        // melange's default: every architecture the recipe and its repositories allow; an
        // arch named with --arch that no repository serves is skipped the same way.
        let (archs, skipped) = if a.arch.is_empty() {
            req.default_archs()?
        } else if a.bootstrap {
            (req.archs.clone(), vec![])
        } else {
            req.served(&req.archs, true)?
        };
        for line in skipped {
            eprintln!("{line}");
        }
        if archs.is_empty() && !a.arch.is_empty() {
            eprintln!("nothing to build for {}", a.arch.join(", "));
            return Ok(ExitCode::SUCCESS);
        }
        if archs.is_empty() {
            bail!(
                "{}: no architecture to build: none that target-architecture allows has an index in every repository (name one with --arch)",
                config.display()
            );
        }
        req.archs = archs;
    }
    let mut built = 0;
    for outcome in req.build()? {
        match outcome {
            request::ArchOutcome::Skipped { name, arch } => {
                eprintln!(
                    "skipping {name} for {}: not in target-architecture",
                    arch.apk()
                )
            }
            request::ArchOutcome::Built { arch, files } => {
                if let Some(d) = &a.dependency_log {
                    eprintln!("wrote the dependency log {}.{}", d.display(), arch.apk());
                }
                built += files.len();
            }
        }
    }
    eprintln!("built {built} package(s) into {}", a.out_dir.display());
    Ok(ExitCode::SUCCESS)
}

/// The `melange` command lines pallet answers itself (the rest go to `pallet pkg`).
#[derive(Parser)]
#[command(name = "melange", version, about = "pallet's melange-compatible face")]
struct MelangeCli {
    /// Log level: debug, info (default), warn, error.
    #[arg(long, global = true)]
    log_level: Option<String>,
    /// Accepted for melange compatibility (Google Cloud log format; pallet logs plain text).
    #[arg(long, global = true, hide = true)]
    gcplog: bool,
    #[command(subcommand)]
    command: MelangeCommand,
}

#[derive(Subcommand)]
enum MelangeCommand {
    /// Build packages from a melange YAML file.
    Build(Box<BuildArgs>),
    /// Print the compiled configuration as JSON.
    Compile(Box<CompileArgs>),
    /// Apply the lint rules to configurations or packages.
    Lint(LintArgs),
    /// Run the test: pipelines of built packages.
    Test(Box<TestArgs>),
    /// Generate a signing key pair (default melange.rsa and melange.rsa.pub).
    Keygen(KeygenArgs),
    /// Write an APKINDEX.tar.gz for packages.
    Index(IndexArgs),
    /// Sign an APKINDEX.tar.gz.
    SignIndex(SignIndexArgs),
    /// Sign APK packages in place.
    Sign(crate::melange_cmds::SignArgs),
    /// Update a melange YAML file to a new package version.
    Bump(crate::melange_cmds::BumpArgs),
    /// Download a recipe's fetch sources into the source cache.
    UpdateCache(crate::melange_cmds::UpdateCacheArgs),
    /// Print NAME-VERSION-rEPOCH of a melange YAML file.
    PackageVersion(crate::melange_cmds::PackageVersionArgs),
    /// Print a Go template evaluated over a melange YAML file.
    Query(crate::melange_cmds::QueryArgs),
    /// Re-run the dependency analysis on built packages and compare their .PKGINFO.
    Scan(crate::melange_cmds::ScanArgs),
    /// Rebuild packages from their embedded configuration and compare the bytes.
    Rebuild(Box<crate::melange_cmds::RebuildArgs>),
    /// Check the licences of a recipe's sources against its copyright.
    LicenseCheck(crate::melange_cmds::LicenseCheckArgs),
    /// Get a recipe's sources (get), or turn local commits into patches (pop).
    #[command(subcommand)]
    Source(crate::melange_cmds::SourceCommand),
    /// Build a base initramfs for the qemu runner.
    Initramfs(crate::melange_cmds::InitramfsArgs),
    /// Print version information.
    Version(crate::melange_cmds::VersionArgs),
    /// Print a shell completion script for this command.
    #[command(
        after_help = "Examples:\n  melange completion bash > /etc/bash_completion.d/melange\n  melange completion zsh > \"${fpath[1]}/_melange\""
    )]
    Completion { shell: clap_complete::Shell },
}

#[derive(Args)]
struct KeygenArgs {
    #[arg(default_value = "melange.rsa")]
    key: PathBuf,
    #[arg(long, default_value_t = 4096)]
    key_size: u32,
}

#[derive(Args)]
struct IndexArgs {
    #[arg(short = 'o', long, default_value = "APKINDEX.tar.gz")]
    output: PathBuf,
    #[arg(long)]
    signing_key: Option<PathBuf>,
    #[arg(short = 'm', long)]
    merge: bool,
    #[arg(short = 's', long)]
    source: Option<PathBuf>,
    #[arg(short = 'a', long)]
    arch: Option<String>,
    files: Vec<PathBuf>,
}

#[derive(Args)]
struct SignIndexArgs {
    /// The private key (melange's default: melange.rsa).
    #[arg(long, default_value = "melange.rsa")]
    signing_key: PathBuf,
    #[arg(short = 'f', long)]
    force: bool,
    index: PathBuf,
}

/// `pallet pkg …`.
#[derive(Subcommand)]
pub enum PkgCommand {
    /// Build packages from a melange YAML file in a bubblewrap sandbox.
    Build(Box<BuildArgs>),
    /// Print the compiled configuration (every step's final shell text) as JSON.
    Compile(Box<CompileArgs>),
    /// Apply melange's lint rules to YAML files or built packages.
    Lint(LintArgs),
    /// Run a package's test: pipelines in a fresh guest.
    Test(Box<TestArgs>),
    /// Update a melange YAML file to a new package version (melange bump).
    Bump(crate::melange_cmds::BumpArgs),
    /// Download a recipe's fetch sources into the source cache (melange update-cache).
    UpdateCache(crate::melange_cmds::UpdateCacheArgs),
    /// Print NAME-VERSION-rEPOCH of a melange YAML file.
    PackageVersion(crate::melange_cmds::PackageVersionArgs),
    /// Print a Go template evaluated over a melange YAML file (melange query).
    Query(crate::melange_cmds::QueryArgs),
    /// Re-run the dependency analysis on built packages and compare their .PKGINFO.
    Scan(crate::melange_cmds::ScanArgs),
    /// Rebuild packages from their embedded configuration and compare the bytes.
    Rebuild(Box<crate::melange_cmds::RebuildArgs>),
    /// Check the licences of a recipe's sources against its copyright.
    LicenseCheck(crate::melange_cmds::LicenseCheckArgs),
    /// Get a recipe's sources (get), or turn local commits into patches (pop).
    #[command(subcommand)]
    Source(crate::melange_cmds::SourceCommand),
}

pub fn run_pkg(cmd: PkgCommand) -> anyhow::Result<ExitCode> {
    use crate::melange_cmds as m;
    match cmd {
        PkgCommand::Build(a) => build_cmd(*a),
        PkgCommand::Compile(a) => compile_cmd(*a),
        PkgCommand::Lint(a) => lint_cmd(a),
        PkgCommand::Test(a) => test_cmd(*a),
        PkgCommand::Bump(a) => m::bump_cmd(a),
        PkgCommand::UpdateCache(a) => m::update_cache_cmd(a),
        PkgCommand::PackageVersion(a) => m::package_version_cmd(a),
        PkgCommand::Query(a) => m::query_cmd(a),
        PkgCommand::Scan(a) => m::scan_cmd(a),
        PkgCommand::Rebuild(a) => m::rebuild_cmd(*a),
        PkgCommand::LicenseCheck(a) => m::license_check_cmd(a),
        PkgCommand::Source(c) => m::source_cmd(c),
    }
}

/// A `melange` command line.
pub fn melange_face(args: &[std::ffi::OsString]) -> anyhow::Result<ExitCode> {
    let cli = MelangeCli::parse_from(args);
    crate::log_level(&cli.log_level)?;
    if cli.gcplog {
        eprintln!("note: --gcplog has no effect: pallet logs plain text lines");
    }
    match cli.command {
        MelangeCommand::Completion { shell } => crate::completion::<MelangeCli>(shell, "melange"),
        MelangeCommand::Sign(a) => crate::melange_cmds::sign_cmd(a),
        MelangeCommand::Bump(a) => crate::melange_cmds::bump_cmd(a),
        MelangeCommand::UpdateCache(a) => crate::melange_cmds::update_cache_cmd(a),
        MelangeCommand::PackageVersion(a) => crate::melange_cmds::package_version_cmd(a),
        MelangeCommand::Query(a) => crate::melange_cmds::query_cmd(a),
        MelangeCommand::Scan(a) => crate::melange_cmds::scan_cmd(a),
        MelangeCommand::Rebuild(a) => crate::melange_cmds::rebuild_cmd(*a),
        MelangeCommand::LicenseCheck(a) => crate::melange_cmds::license_check_cmd(a),
        MelangeCommand::Source(c) => crate::melange_cmds::source_cmd(c),
        MelangeCommand::Version(a) => crate::melange_cmds::version_cmd(a),
        MelangeCommand::Initramfs(a) => crate::melange_cmds::initramfs_cmd(a),
        MelangeCommand::Build(a) => build_cmd(*a),
        MelangeCommand::Compile(a) => compile_cmd(*a),
        MelangeCommand::Lint(a) => lint_cmd(a),
        MelangeCommand::Test(a) => test_cmd(*a),
        MelangeCommand::Keygen(k) => pallet_keys::generate(&k.key, k.key_size)
            .map(|_| {
                eprintln!("wrote {} and {}.pub", k.key.display(), k.key.display());
                ExitCode::SUCCESS
            })
            .map_err(Into::into),
        MelangeCommand::Index(i) => {
            let mut files = i.files.clone();
            files.sort();
            let mut argv: Vec<String> = vec![
                "pallet".into(),
                "index".into(),
                "-o".into(),
                i.output.display().to_string(),
            ];
            if let Some(k) = &i.signing_key {
                argv.extend(["--signing-key".into(), k.display().to_string()]);
            }
            if i.merge {
                argv.push("--merge".into());
            }
            // melange's -s is an existing index to merge into, -a an architecture filter.
            if let Some(src) = &i.source {
                argv.extend(["--source".into(), src.display().to_string()]);
            }
            if let Some(a) = &i.arch {
                argv.extend(["--arch".into(), a.clone()]);
            }
            argv.extend(files.iter().map(|f| f.display().to_string()));
            crate::run_pallet_argv(argv)
        }
        // As melange: an index that is already signed is left alone unless --force.
        MelangeCommand::SignIndex(s) => {
            if !s.force && pallet_index::is_signed(&s.index)? {
                eprintln!(
                    "{} is already signed; not signing it again (pass --force to replace the signature)",
                    s.index.display()
                );
                return Ok(ExitCode::SUCCESS);
            }
            crate::run_pallet_argv(vec![
                "pallet".into(),
                "sign-index".into(),
                "--signing-key".into(),
                s.signing_key.display().to_string(),
                s.index.display().to_string(),
            ])
        }
    }
}

#[derive(Args, Clone)]
#[command(
    next_line_help = true,
    after_help = "Takes every flag of build. The ones that shape the configuration apply as in melange: --arch, --pipeline-dir(s), --vars-file, --build-option, --env-file (under environment.environment), --git-commit (for a missing package.commit), --cpu, --cpumodel, --memory, --disk and --timeout (package.resources and package.timeout). The others only matter to a build; compile says in one line which of them it leaves unused.\n\nExamples:\n  pallet pkg compile hello.yaml --arch aarch64\n  pallet pkg compile openssl.yaml --pipeline-dir ./pipelines --yaml\n  melange compile --arch x86_64 --env-file build-x86_64.env --pipeline-dir ./pipelines openssl.yaml"
)]
pub struct CompileArgs {
    #[command(flatten)]
    build: BuildArgs,
    /// Print YAML instead of JSON.
    #[arg(long)]
    yaml: bool,
    /// melange's log destinations (builtin:stderr, or files); pallet's compile writes its
    /// notes to stderr.
    #[arg(long, value_delimiter = ',')]
    log_policy: Vec<String>,
}

impl BuildArgs {
    /// The flags given that only a build uses (each compared with its default).
    fn build_only_given(&self) -> Vec<&'static str> {
        let b = &self.build_only;
        [
            ("--signing-key", self.signing_key.is_some()),
            ("--keyring-append", !self.keyring_append.is_empty()),
            ("--repository-append", !self.repository_append.is_empty()),
            ("--package-append", !self.package_append.is_empty()),
            ("--out-dir", self.out_dir != Path::new("./packages/")),
            ("--source-dir", self.source_dir.is_some()),
            ("--workspace-dir", self.workspace_dir.is_some()),
            (
                "--cache-dir",
                self.cache_dir != Path::new("./melange-cache/"),
            ),
            ("--apk-cache-dir", self.apk_cache_dir.is_some()),
            ("--generate-index", !self.generate_index),
            ("--namespace", self.namespace != "unknown"),
            ("--runner", self.runner.is_some()),
            ("--debug", self.debug),
            ("--debug-runner", self.more.debug_runner),
            ("--interactive", self.interactive),
            ("--rm", !self.rm),
            ("--cleanup", !self.cleanup),
            ("--build-date", self.build_date.is_some()),
            ("--bootstrap", self.bootstrap),
            ("--ignore-signatures", self.ignore_signatures),
            ("--git-repo-url", self.git_repo_url.is_some()),
            ("--license", self.license != "NOASSERTION"),
            ("--fail-on-lint-warning", self.fail_on_lint_warning),
            ("--lint-require", self.lint_require.is_some()),
            ("--lint-warn", self.lint_warn.is_some()),
            ("--persist-lint-results", self.persist_lint_results),
            ("--create-build-log", self.create_build_log),
            ("--dependency-log", self.dependency_log.is_some()),
            ("--empty-workspace", b.empty_workspace),
            ("--strip-origin-name", b.strip_origin_name),
            ("--generate-provenance", b.generate_provenance),
            ("--trace", b.trace.is_some()),
            ("--cache-source", self.more.cache_source.is_some()),
        ]
        .into_iter()
        .filter_map(|(flag, given)| given.then_some(flag))
        .collect()
    }
}

pub fn compile_cmd(a: CompileArgs) -> anyhow::Result<ExitCode> {
    let b = &a.build;
    let unused = b.build_only_given();
    if !unused.is_empty() {
        eprintln!(
            "note: compile prints the configuration and builds nothing, so {} {} not used",
            unused.join(", "),
            if unused.len() == 1 { "is" } else { "are" }
        );
    }
    if let Some(p) = a
        .log_policy
        .iter()
        .find(|p| !matches!(p.as_str(), "" | "builtin:stderr"))
    {
        eprintln!("note: --log-policy {p}: pallet's compile writes its notes to stderr only");
    }
    // melange compiles for one --arch; with none, pallet takes the host's.
    let arch = match b.arch.as_slice() {
        [] => Arch::host(),
        [one] => one_arch(&Some(one.clone()))?,
        more => bail!(
            "--arch {}: compile prints one architecture's configuration; name one",
            more.join(",")
        ),
    };
    let req = recipe_request(b, pallet_build::runner::Runner::Bubblewrap)?;
    let overrides = request::ResourceOverrides {
        cpu: b.cpu.clone(),
        cpumodel: b.more.cpumodel.clone(),
        memory: b.memory.clone(),
        disk: b.more.disk.clone(),
        timeout: b.more.timeout.clone(),
    };
    if let Some(t) = &overrides.timeout {
        pallet_build::policy::parse_timeout(t).map_err(|e| anyhow::anyhow!("--timeout: {e}"))?;
    }
    let compiled = req.compile_view(arch, &overrides)?;
    if compiled.skipped {
        eprintln!(
            "note: {} does not build for {} (target-architecture); a build would skip it",
            compiled.package.name, compiled.arch
        );
    }
    if a.yaml {
        crate::emit(&serde_saphyr::to_string(&compiled).context("rendering YAML")?)?;
    } else {
        crate::emit(&(serde_json::to_string_pretty(&compiled)? + "\n"))?;
    }
    Ok(ExitCode::SUCCESS)
}

#[derive(Args, Clone)]
#[command(
    after_help = "Examples:\n  pallet pkg lint hello.yaml\n  pallet pkg lint packages/x86_64/*.apk --json"
)]
pub struct LintArgs {
    /// melange YAML files (configuration rules) and .apk files (package rules).
    #[arg(required = true)]
    files: Vec<PathBuf>,
    /// Print findings as JSON.
    #[arg(long)]
    json: bool,
    /// Linters that fail the run (replaces melange's default require list; comma lists too).
    #[arg(long)]
    lint_require: Option<Vec<String>>,
    /// Linters reported as warnings (replaces melange's default warn list).
    #[arg(long)]
    lint_warn: Option<Vec<String>>,
    /// Also write each .apk's findings to OUT_DIR/ARCH/lint-NAME-VERSION.json.
    #[arg(long)]
    persist_lint_results: bool,
    /// Where --persist-lint-results writes.
    #[arg(long, default_value = "packages")]
    out_dir: PathBuf,
    /// Deprecated in melange, which does nothing with it (use --lint-require/--lint-warn).
    #[arg(long, hide = true, num_args = 0..=1, require_equals = true, default_missing_value = "true")]
    fail_on_lint_warning: Option<bool>,
}

pub fn lint_cmd(a: LintArgs) -> anyhow::Result<ExitCode> {
    use pallet_build::lint::{self, Severity};
    let policy = lint::Policy::from_flags(a.lint_require.as_deref(), a.lint_warn.as_deref())
        .context("--lint-require/--lint-warn")?;
    if a.fail_on_lint_warning.is_some() {
        eprintln!(
            "Flag --fail-on-lint-warning has been deprecated, use --lint-require and --lint-warn instead"
        );
    }
    let client = pallet_repo::Client::new(default_apk_cache());
    let mut all = vec![];
    for f in &a.files {
        let name = f.display().to_string();
        let url = name.starts_with("http://") || name.starts_with("https://");
        if url || name.ends_with(".apk") {
            // melange reads a URL's body as it reads a file.
            let reader: Box<dyn std::io::Read + Send> = if url {
                client
                    .open_url(&name)
                    .with_context(|| format!("fetching {}", pallet_repo::redact(&name)))?
            } else {
                Box::new(std::fs::File::open(f).with_context(|| format!("opening {name}"))?)
            };
            let shown = pallet_repo::redact(&name);
            let r = lint::lint_apk(reader, &policy).with_context(|| shown.clone())?;
            if a.persist_lint_results {
                let full = format!("{}-{}", r.name, r.version);
                let out = lint::persist(&a.out_dir, &r.arch, &full, &r.findings)
                    .with_context(|| shown.clone())?;
                eprintln!("saved lint results to {}", out.display());
            }
            all.extend(r.findings);
        } else {
            let (cfg, _) = pallet_build::compile::parse(f)?;
            all.extend(lint::lint_config(&cfg));
        }
    }
    let failed = all.iter().any(|f| f.severity == Severity::Require);
    if a.json {
        println!("{}", serde_json::to_string_pretty(&all)?);
    } else {
        for f in &all {
            let level = if f.severity == Severity::Require {
                "error"
            } else {
                "warning"
            };
            println!("{level}: {}: [{}] {}", f.package, f.rule, f.message);
        }
        eprintln!(
            "{} finding(s), {} required",
            all.len(),
            all.iter()
                .filter(|f| f.severity == Severity::Require)
                .count()
        );
    }
    Ok(if failed {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

#[derive(Args, Clone)]
#[command(
    after_help = "Examples:\n  pallet pkg test hello.yaml -r ./packages -k melange.rsa.pub\n  melange test hello.yaml hello-doc --repository-append ./packages --keyring-append melange.rsa.pub"
)]
pub struct TestArgs {
    config: PathBuf,
    /// Test only this package or subpackage.
    package: Option<String>,
    /// Architectures to test (default: the host's).
    #[arg(long, value_delimiter = ',')]
    arch: Vec<String>,
    /// A folder searched for `uses:` pipelines before the built-ins (repeatable).
    #[arg(long)]
    pipeline_dir: Vec<PathBuf>,
    /// Folders searched for `uses:` pipelines, after --pipeline-dir (comma separated).
    #[arg(long, value_delimiter = ',')]
    pipeline_dirs: Vec<PathBuf>,
    /// Fixtures copied into the test workspace.
    #[arg(long)]
    source_dir: Option<PathBuf>,
    /// melange's host folder for the workspace; pallet copies it into the test's fresh
    /// workspace (as --source-dir, which wins when both are given).
    #[arg(long)]
    workspace_dir: Option<PathBuf>,
    /// Remove the test's guest and workspace afterwards (--rm=false keeps them).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set, num_args = 0..=1, require_equals = true, default_missing_value = "true")]
    rm: bool,
    /// Mounted at /var/cache/melange.
    #[arg(long)]
    cache_dir: Option<PathBuf>,
    /// Cache for the test environment's packages.
    #[arg(long)]
    apk_cache_dir: Option<PathBuf>,
    /// Extra keys for the test environment's repositories (paths or URLs).
    #[arg(short = 'k', long, value_delimiter = ',')]
    keyring_append: Vec<String>,
    /// Extra repositories for the test environment.
    #[arg(short = 'r', long, value_delimiter = ',')]
    repository_append: Vec<String>,
    /// Extra packages for every test environment.
    #[arg(long, value_delimiter = ',')]
    test_package_append: Vec<String>,
    /// Build options (`options:`) to enable while compiling the tests.
    #[arg(long, value_delimiter = ',')]
    test_option: Vec<String>,
    /// dotenv files whose variables every step sees (repeatable; the first file naming a
    /// variable wins; the test's environment wins over all).
    #[arg(long, value_delimiter = ',')]
    env_file: Vec<PathBuf>,
    /// Trace each step's shell (`set -x`).
    #[arg(long, action = clap::ArgAction::Set, num_args = 0..=1, require_equals = true, default_missing_value = "true", default_value_t = false)]
    debug: bool,
    /// On a failing step, a shell in the build guest (exit 0 continues, any other status stops).
    #[arg(short = 'i', long, action = clap::ArgAction::Set, num_args = 0..=1, require_equals = true, default_missing_value = "true", default_value_t = false)]
    interactive: bool,
    /// Skip verifying the environment repositories' signatures.
    #[arg(long, action = clap::ArgAction::Set, num_args = 0..=1, require_equals = true, default_missing_value = "true", default_value_t = false)]
    ignore_signatures: bool,
    /// Runner: bubblewrap (default), docker (the daemon at DOCKER_HOST) or qemu (a microVM
    /// booting QEMU_KERNEL_IMAGE).
    #[arg(long)]
    runner: Option<String>,
    /// The qemu runner's CPUs (default: package.resources.cpu, else 2).
    #[arg(long)]
    cpu: Option<String>,
    /// The qemu runner's memory, e.g. 4Gi (default: package.resources.memory, else 4Gi, at
    /// most 85% of what is free).
    #[arg(long)]
    memory: Option<String>,
    #[command(flatten)]
    more: RunnerFlags,
}

pub fn test_cmd(a: TestArgs) -> anyhow::Result<ExitCode> {
    let runner = sized(check_runner(&a.runner)?, &a.cpu, &a.memory)?;
    let env_file = read_env_files(&a.env_file)?;
    let pipeline_dirs: Vec<PathBuf> = a
        .pipeline_dir
        .iter()
        .chain(&a.pipeline_dirs)
        .cloned()
        .collect();
    for arch in archs(&a.arch)? {
        test_arch(&a, arch, &pipeline_dirs, &env_file, &runner)?;
    }
    Ok(ExitCode::SUCCESS)
}

fn test_arch(
    a: &TestArgs,
    arch: Arch,
    pipeline_dirs: &[PathBuf],
    env_file: &BTreeMap<String, String>,
    runner: &pallet_build::runner::Runner,
) -> anyhow::Result<()> {
    let opts = pallet_build::compile::CompileOptions {
        arch: Some(arch),
        pipeline_dirs: pipeline_dirs.to_vec(),
        build_options: a.test_option.clone(),
        ..Default::default()
    };
    let (compiled, _) = pallet_build::compile::compile_file(&a.config, &opts)?;
    let mut tests = vec![];
    if let Some(t) = &compiled.test {
        tests.push((compiled.package.name.clone(), t.clone()));
    }
    for sp in &compiled.subpackages {
        if let Some(t) = &sp.test {
            tests.push((sp.name.clone(), t.clone()));
        }
    }
    if let Some(only) = &a.package {
        tests.retain(|(n, _)| n == only);
    }
    if tests.is_empty() {
        bail!(
            "{} has no test: pipelines{}",
            a.config.display(),
            a.package
                .as_ref()
                .map(|p| format!(" for {p}"))
                .unwrap_or_default()
        );
    }
    let bopts = Options {
        arch: Some(arch),
        cache_dir: a.cache_dir.clone(),
        apk_cache_dir: a.apk_cache_dir.clone().unwrap_or_else(default_apk_cache),
        source_dir: a.source_dir.clone().or_else(|| a.workspace_dir.clone()),
        source_date_epoch: epoch(&None)?,
        debug: a.debug,
        rm: a.rm,
        extra_repositories: a.repository_append.clone(),
        extra_keyring: a.keyring_append.clone(),
        extra_packages: a.test_package_append.clone(),
        ignore_signatures: a.ignore_signatures,
        env_file: env_file.clone(),
        binfmt_dir: binfmt_dir(),
        runner: runner.clone(),
        interactive: a.interactive,
        ..Default::default()
    };
    let mut bopts = bopts;
    a.more.apply(&mut bopts)?;
    for (name, t) in &tests {
        eprintln!("testing {name} for {}", arch.apk());
        driver::run_test(t, &bopts).with_context(|| format!("testing {name}"))?;
        eprintln!("PASS {name}");
    }
    Ok(())
}
