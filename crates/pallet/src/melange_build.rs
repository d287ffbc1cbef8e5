//! `pallet pkg build` / `pallet pkg test` and the `melange build|test|keygen|index|sign-index`
//! command lines, with melange's flag names.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, bail};
use clap::{Args, Parser, Subcommand};
use pallet_build::driver::{self, Options};
use pallet_build::recipe::{self, RecipeError};
use pallet_image::config::Arch;

#[derive(Args, Clone)]
#[command(
    after_help = "Examples:\n  pallet pkg build hello.yaml --signing-key melange.rsa --out-dir packages\n  pallet pkg build --bootstrap examples/hello-c/melange.yaml --source-dir examples/hello-c --signing-key melange.rsa\n  melange build hello.yaml --arch x86_64 --repository-append ./packages --keyring-append melange.rsa.pub"
)]
pub struct BuildArgs {
    /// The melange YAML file (default: .melange.yaml, .melange.yml, melange.yaml or melange.yml).
    config: Option<PathBuf>,
    /// Architectures to build (default: the host's).
    #[arg(long, value_delimiter = ',')]
    arch: Vec<String>,
    /// Private key to sign packages and the index with.
    #[arg(long)]
    signing_key: Option<PathBuf>,
    /// Extra keys for the build environment's repositories.
    #[arg(short = 'k', long)]
    keyring_append: Vec<String>,
    /// Extra repositories for the build environment.
    #[arg(short = 'r', long)]
    repository_append: Vec<String>,
    /// Extra packages for the build environment.
    #[arg(long)]
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
    /// Mounted at /var/cache/melange when it exists.
    #[arg(long, default_value = "./melange-cache/")]
    cache_dir: PathBuf,
    /// Cache for the build environment's packages.
    #[arg(long)]
    apk_cache_dir: Option<PathBuf>,
    /// Folders searched for `uses:` pipelines.
    #[arg(long)]
    pipeline_dir: Vec<PathBuf>,
    /// Write or merge OUT/ARCH/APKINDEX.tar.gz.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    generate_index: bool,
    /// dotenv file whose variables every step sees.
    #[arg(long)]
    env_file: Option<PathBuf>,
    /// YAML map merged over `vars`.
    #[arg(long)]
    vars_file: Option<PathBuf>,
    /// Vendor namespace (SBOM supplier, purl namespace).
    #[arg(long, default_value = "unknown")]
    namespace: String,
    /// Runner: only bubblewrap here.
    #[arg(long, default_value = "bubblewrap")]
    runner: String,
    /// Trace each step's shell (`set -x`).
    #[arg(long)]
    debug: bool,
    /// Remove the workspace and guest afterwards.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    rm: bool,
    /// Build date, RFC 3339 (SOURCE_DATE_EPOCH overrides it; default 0).
    #[arg(long)]
    build_date: Option<String>,
    /// Use the host's root read-only as the build guest (for a repository's first packages).
    #[arg(long)]
    bootstrap: bool,
    /// Skip verifying the environment repositories' signatures.
    #[arg(long)]
    ignore_signatures: bool,
    /// Build options to enable (accepted for compatibility).
    #[arg(long)]
    build_option: Vec<String>,
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
    let Some(p) = p else {
        return Ok(BTreeMap::new());
    };
    let text = std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?;
    serde_saphyr::from_str(&text).map_err(|e| anyhow::anyhow!("{}: {e}", p.display()))
}

fn read_env_file(p: &Option<PathBuf>) -> anyhow::Result<BTreeMap<String, String>> {
    let Some(p) = p else {
        return Ok(BTreeMap::new());
    };
    let text = std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?;
    Ok(text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| {
            (
                k.trim().trim_start_matches("export ").to_string(),
                v.trim().trim_matches('"').to_string(),
            )
        })
        .collect())
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

fn default_apk_cache() -> PathBuf {
    std::env::var_os("XDG_CACHE_HOME")
        .filter(|x| !x.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(|| PathBuf::from("/tmp"))
        .join("pallet")
}

pub fn build_cmd(a: BuildArgs) -> anyhow::Result<ExitCode> {
    if a.runner != "bubblewrap" && a.runner != "bwrap" {
        bail!(
            "--runner {}: pallet runs builds in bubblewrap only (docker and qemu are not available here)",
            a.runner
        );
    }
    let config = find_config(&a.config)?;
    let vars = read_vars(&a.vars_file)?;
    let env_file = read_env_file(&a.env_file)?;
    let sde = epoch(&a.build_date)?;
    let mut built = 0;
    for arch in archs(&a.arch)? {
        let plan = match recipe::load(&config, arch, &a.pipeline_dir, &vars) {
            Ok(p) => p,
            Err(RecipeError::SkipArch { name, arch }) => {
                eprintln!("skipping {name} for {arch}: not in target-architecture");
                continue;
            }
            Err(e) => return Err(e.into()),
        };
        let opts = Options {
            arch: Some(arch),
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
            signing_key: a.signing_key.clone(),
            generate_index: a.generate_index,
            bootstrap: a.bootstrap,
            source_date_epoch: sde,
            namespace: a.namespace.clone(),
            debug: a.debug,
            rm: a.rm,
            extra_repositories: a.repository_append.clone(),
            extra_keyring: a.keyring_append.clone(),
            extra_packages: a.package_append.clone(),
            ignore_signatures: a.ignore_signatures,
            env_file: env_file.clone(),
        };
        let written = driver::build(&plan, &opts)
            .with_context(|| format!("building {} for {}", config.display(), arch.apk()))?;
        built += written.len();
    }
    eprintln!("built {built} package(s) into {}", a.out_dir.display());
    Ok(ExitCode::SUCCESS)
}

/// The `melange` command lines pallet answers itself (the rest go to `pallet pkg`).
#[derive(Parser)]
#[command(name = "melange", version, about = "pallet's melange-compatible face")]
struct MelangeCli {
    #[command(subcommand)]
    command: MelangeCommand,
}

#[derive(Subcommand)]
enum MelangeCommand {
    /// Build packages from a melange YAML file.
    Build(Box<BuildArgs>),
    /// Print the compiled configuration as JSON.
    Compile(CompileArgs),
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
    #[arg(long)]
    signing_key: PathBuf,
    #[arg(long)]
    force: bool,
    index: PathBuf,
}

/// `pallet pkg …`.
#[derive(Subcommand)]
pub enum PkgCommand {
    /// Build packages from a melange YAML file in a bubblewrap sandbox.
    Build(Box<BuildArgs>),
    /// Print the compiled configuration (every step's final shell text) as JSON.
    Compile(CompileArgs),
    /// Apply melange's lint rules to YAML files or built packages.
    Lint(LintArgs),
    /// Run a package's test: pipelines in a fresh guest.
    Test(Box<TestArgs>),
}

pub fn run_pkg(cmd: PkgCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        PkgCommand::Build(a) => build_cmd(*a),
        PkgCommand::Compile(a) => compile_cmd(a),
        PkgCommand::Lint(a) => lint_cmd(a),
        PkgCommand::Test(a) => test_cmd(*a),
    }
}

/// A `melange` command line.
pub fn melange_face(args: &[std::ffi::OsString]) -> anyhow::Result<ExitCode> {
    match MelangeCli::parse_from(args).command {
        MelangeCommand::Build(a) => build_cmd(*a),
        MelangeCommand::Compile(a) => compile_cmd(a),
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
            if let Some(src) = &i.source {
                files.extend(
                    std::fs::read_dir(src)
                        .into_iter()
                        .flatten()
                        .flatten()
                        .map(|e| e.path())
                        .filter(|p| p.extension().is_some_and(|e| e == "apk")),
                );
            }
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
            if let Some(a) = &i.arch {
                argv.extend(["--rewrite-arch".into(), a.clone()]);
            }
            argv.extend(files.iter().map(|f| f.display().to_string()));
            crate::run_pallet_argv(argv)
        }
        // Re-signing replaces any signature, so --force changes nothing.
        MelangeCommand::SignIndex(s) => {
            let _ = s.force;
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
    after_help = "Examples:\n  pallet pkg compile hello.yaml --arch aarch64\n  pallet pkg compile openssl.yaml --pipeline-dir ./pipelines --yaml"
)]
pub struct CompileArgs {
    config: Option<PathBuf>,
    /// Architecture to compile for (default: the host's).
    #[arg(long)]
    arch: Option<String>,
    /// Folders searched for `uses:` pipelines before the built-ins.
    #[arg(long, alias = "pipeline-dirs")]
    pipeline_dir: Vec<PathBuf>,
    /// YAML map merged over `vars`.
    #[arg(long)]
    vars_file: Option<PathBuf>,
    /// Build options to enable.
    #[arg(long)]
    build_option: Vec<String>,
    /// Print YAML instead of JSON.
    #[arg(long)]
    yaml: bool,
    /// Accepted for melange compatibility.
    #[arg(long, hide = true)]
    rm: Option<bool>,
}

pub fn compile_cmd(a: CompileArgs) -> anyhow::Result<ExitCode> {
    let config = find_config(&a.config)?;
    let arch = one_arch(&a.arch)?;
    let opts = pallet_build::compile::CompileOptions {
        arch: Some(arch),
        pipeline_dirs: a.pipeline_dir.clone(),
        vars: read_vars(&a.vars_file)?,
        build_options: a.build_option.clone(),
    };
    let (compiled, _) = pallet_build::compile::compile_file(&config, &opts)?;
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
}

pub fn lint_cmd(a: LintArgs) -> anyhow::Result<ExitCode> {
    use pallet_build::lint::{self, Severity};
    let mut all = vec![];
    for f in &a.files {
        let name = f.display().to_string();
        if name.ends_with(".apk") {
            let file = std::fs::File::open(f).with_context(|| format!("opening {name}"))?;
            let mut entries = vec![];
            let meta = pallet_apk_stream::read_apk(
                file,
                &pallet_apk_stream::ReadOptions::default(),
                |e, _| {
                    entries.push(lint::Entry {
                        path: e.path.clone(),
                        is_dir: e.kind == pallet_apk_stream::tarw::Kind::Dir,
                        is_symlink: e.kind == pallet_apk_stream::tarw::Kind::Symlink,
                        mode: e.mode,
                        size: e.size,
                    });
                    Ok(())
                },
            )
            .with_context(|| name.clone())?;
            let every: Vec<String> = lint::PACKAGE_RULES
                .iter()
                .map(|(r, _)| r.to_string())
                .collect();
            all.extend(lint::lint_package(&meta.info.name, &entries, &[], &every));
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
    #[arg(long)]
    arch: Option<String>,
    #[arg(long, alias = "pipeline-dirs")]
    pipeline_dir: Vec<PathBuf>,
    #[arg(long)]
    source_dir: Option<PathBuf>,
    #[arg(long)]
    cache_dir: Option<PathBuf>,
    #[arg(long)]
    apk_cache_dir: Option<PathBuf>,
    #[arg(short = 'k', long)]
    keyring_append: Vec<String>,
    #[arg(short = 'r', long)]
    repository_append: Vec<String>,
    #[arg(long)]
    test_package_append: Vec<String>,
    #[arg(long)]
    env_file: Option<PathBuf>,
    #[arg(long)]
    debug: bool,
    #[arg(long)]
    ignore_signatures: bool,
    #[arg(long, default_value = "bubblewrap")]
    runner: String,
}

pub fn test_cmd(a: TestArgs) -> anyhow::Result<ExitCode> {
    let arch = one_arch(&a.arch)?;
    let opts = pallet_build::compile::CompileOptions {
        arch: Some(arch),
        pipeline_dirs: a.pipeline_dir.clone(),
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
        source_dir: a.source_dir.clone(),
        source_date_epoch: epoch(&None)?,
        debug: a.debug,
        extra_repositories: a.repository_append.clone(),
        extra_keyring: a.keyring_append.clone(),
        extra_packages: a.test_package_append.clone(),
        ignore_signatures: a.ignore_signatures,
        env_file: read_env_file(&a.env_file)?,
        ..Default::default()
    };
    for (name, t) in &tests {
        eprintln!("testing {name}");
        driver::run_test(t, &bopts).with_context(|| format!("testing {name}"))?;
        eprintln!("PASS {name}");
    }
    Ok(ExitCode::SUCCESS)
}
