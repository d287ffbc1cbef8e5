//! `pallet build` and `pallet test`: the workspace build's flags, mapped onto
//! `pallet_workspace`.

use std::io::IsTerminal as _;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::Args;
use pallet_workspace::{Flags, RunOptions, Workspace, report, run};

#[derive(Args, Clone)]
#[command(
    after_help = "Examples:\n  pallet build                      build every recipe and image here that changed\n  pallet build --plan               what would be built, and why\n  pallet build --plan --json        the same for scripts\n  pallet build curl -j 4            curl and what it needs, four at a time\n  pallet build zlib --rdeps         zlib and everything that depends on it\n  pallet build -C ~/src/os --keep-going\n  pallet build --dot | dot -Tsvg > graph.svg\n  pallet build --remote-executor grpc://127.0.0.1:50051\n                                    packages built by `pallet worker`s of that scheduler\n  pallet build --remote-cache grpc://cache.example:50051\n                                    built here, shared through (and taken from) its ActionCache\n  pallet build --remote-executor grpcs://rbe.example:443 --remote-header authorization=@env:RBE_TOKEN\n                                    over TLS, with a token from $RBE_TOKEN\n  pallet build --cache-registry registry.example/team/pallet-cache\n                                    results kept as OCI artifacts in a registry"
)]
pub struct BuildArgs {
    /// Package, subpackage or image names, or files (default: everything).
    targets: Vec<String>,
    /// The workspace folder (default: the current one).
    #[arg(short = 'C', long = "directory", default_value = ".")]
    dir: PathBuf,
    /// Print what would be built and why; build nothing.
    #[arg(long)]
    plan: bool,
    /// With --plan: one JSON object; when building: results as JSON on stdout.
    #[arg(long)]
    json: bool,
    /// Print the graph for Graphviz; build nothing.
    #[arg(long)]
    dot: bool,
    /// Also build what depends on the targets.
    #[arg(long)]
    rdeps: bool,
    /// Builds at once (default: the number of cores).
    #[arg(short = 'j', long, default_value_t = 0)]
    jobs: usize,
    /// After a failure, go on with everything not downstream of it.
    #[arg(long)]
    keep_going: bool,
    /// Run package builds on this REAPI executor (grpc://HOST:PORT plaintext,
    /// grpcs://HOST:PORT TLS; BuildGrid with `pallet worker`s). Results are verified and
    /// signed here; the key never leaves.
    #[arg(long, value_name = "URL")]
    remote_executor: Option<String>,
    /// Look package builds up in this REAPI ActionCache and share local ones through it
    /// (default with --remote-executor: the executor's).
    #[arg(long, value_name = "URL")]
    remote_cache: Option<String>,
    /// Also keep package results as OCI artifacts in this registry repository
    /// (REGISTRY/REPO, pushed and pulled with pallet's registry client).
    #[arg(long, value_name = "REF")]
    cache_registry: Option<String>,
    /// The REAPI instance name of --remote-executor and --remote-cache.
    #[arg(long, value_name = "NAME", default_value = "")]
    remote_instance: String,
    #[command(flatten)]
    remote_connect: crate::worker_cmd::ConnectArgs,
    #[command(flatten)]
    common: CommonArgs,
}

#[derive(Args, Clone)]
pub struct CommonArgs {
    /// Signing key (default: pallet.yaml's, else melange.rsa, made when missing).
    #[arg(long)]
    signing_key: Option<PathBuf>,
    /// Architectures (default: pallet.yaml's, else the host's).
    #[arg(long, value_delimiter = ',')]
    arch: Vec<String>,
    /// Extra repositories for every build and image.
    #[arg(short = 'r', long, value_delimiter = ',')]
    repository_append: Vec<String>,
    /// Extra keys for those repositories.
    #[arg(short = 'k', long, value_delimiter = ',')]
    keyring_append: Vec<String>,
    /// dotenv files every build step sees (replace pallet.yaml's env-files).
    #[arg(long, value_delimiter = ',')]
    env_file: Vec<PathBuf>,
    /// Folders searched for `uses:` pipelines (default: pallet.yaml's, else pipelines/).
    #[arg(long)]
    pipeline_dir: Vec<PathBuf>,
    /// Vendor namespace of the packages.
    #[arg(long)]
    namespace: Option<String>,
    /// Build options to enable in every recipe.
    #[arg(long, value_delimiter = ',')]
    build_option: Vec<String>,
    /// Package output folder (default: pallet.yaml's, else packages/).
    #[arg(long)]
    out_dir: Option<PathBuf>,
    /// Image output folder (default: pallet.yaml's images-output, else images/).
    #[arg(long)]
    images_dir: Option<PathBuf>,
    /// Build this recipe in bootstrap mode: the host's root, read-only, as its guest
    /// (repeatable; as recipes.NAME.bootstrap).
    #[arg(long, value_name = "RECIPE")]
    bootstrap: Vec<String>,
    /// A recipe's source folder, RECIPE=DIR (repeatable; as recipes.NAME.source-dir).
    #[arg(long, value_name = "RECIPE=DIR", value_parser = pair::<PathBuf>)]
    source_dir: Vec<(String, PathBuf)>,
    /// An image's tag, IMAGE=TAG (repeat for several; replaces images.NAME.tags).
    #[arg(long, value_name = "IMAGE=TAG", value_parser = pair::<String>)]
    tag: Vec<(String, String)>,
    /// Also push an image, IMAGE=REGISTRY/REPO:TAG (repeatable; as images.NAME.publish).
    #[arg(long, value_name = "IMAGE=REF", value_parser = pair::<String>)]
    publish: Vec<(String, String)>,
    /// Cache folder: keys, outputs and downloaded packages (default: $XDG_CACHE_HOME/pallet).
    #[arg(long)]
    cache_dir: Option<PathBuf>,
    /// Never download: local repositories and the cache only.
    #[arg(long)]
    offline: bool,
    /// Trace each step's shell (`set -x`).
    #[arg(long)]
    debug: bool,
    /// Runner: bubblewrap (default) or docker (the daemon at DOCKER_HOST); qemu runs in
    /// bubblewrap and says so.
    #[arg(long)]
    runner: Option<String>,
}

fn exit(ok: bool) -> ExitCode {
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// `NAME=VALUE`.
fn pair<T: From<String>>(s: &str) -> Result<(String, T), String> {
    match s.split_once('=') {
        Some((n, v)) if !n.is_empty() && !v.is_empty() => {
            Ok((n.to_string(), T::from(v.to_string())))
        }
        _ => Err(format!("'{s}' is not NAME=VALUE")),
    }
}

fn load(dir: &std::path::Path, c: &CommonArgs) -> anyhow::Result<Workspace> {
    let flags = Flags {
        signing_key: c.signing_key.clone(),
        archs: c.arch.clone(),
        repositories: c.repository_append.clone(),
        keyring: c.keyring_append.clone(),
        env_files: c.env_file.clone(),
        pipeline_dirs: c.pipeline_dir.clone(),
        namespace: c.namespace.clone(),
        build_options: c.build_option.clone(),
        output: c.out_dir.clone(),
        images_output: c.images_dir.clone(),
        bootstrap: c.bootstrap.clone(),
        source_dirs: c.source_dir.clone(),
        image_tags: c.tag.clone(),
        publish: c.publish.clone(),
    };
    Workspace::load(dir, &flags).with_context(|| format!("loading the workspace {}", dir.display()))
}

fn run_options(c: &CommonArgs, targets: &[String]) -> anyhow::Result<RunOptions> {
    let cache = c
        .cache_dir
        .clone()
        .unwrap_or_else(crate::melange_build::default_apk_cache);
    Ok(RunOptions {
        apk_cache_dir: cache.clone(),
        cache_dir: cache,
        offline: c.offline,
        source_date_epoch: crate::source_date_epoch()?,
        environment: std::env::vars().collect(),
        targets: targets.to_vec(),
        debug: c.debug,
        runner: crate::melange_build::check_runner(&c.runner)?,
        ..Default::default()
    })
}

pub fn build_cmd(a: BuildArgs) -> anyhow::Result<ExitCode> {
    let ws = load(&a.dir, &a.common)?;
    let mut ro = run_options(&a.common, &a.targets)?;
    ro.rdeps = a.rdeps;
    ro.jobs = a.jobs;
    ro.keep_going = a.keep_going;
    if !(a.plan || a.dot)
        && (a.remote_executor.is_some() || a.remote_cache.is_some() || a.cache_registry.is_some())
    {
        let opts = a.remote_connect.options()?;
        let connect = |url: &String| {
            pallet_reapi::Client::connect_with(url, &a.remote_instance, &opts)
                .with_context(|| format!("connecting to {url}"))
        };
        ro.remote = Some(pallet_workspace::remote::Remote {
            executor: a.remote_executor.as_ref().map(connect).transpose()?,
            cache: a.remote_cache.as_ref().map(connect).transpose()?,
            registry: a
                .cache_registry
                .as_deref()
                .map(pallet_registry::Reference::parse)
                .transpose()?,
            ..Default::default()
        });
    }
    if a.plan || a.dot {
        let plan = run::plan(&ws, &ro)?;
        let text = if a.dot {
            report::plan_dot(&ws, &plan)
        } else if a.json {
            format!("{:#}\n", report::plan_json(&ws, &plan))
        } else {
            report::plan_text(&ws, &plan)
        };
        crate::emit(&text)?;
        return Ok(ExitCode::SUCCESS);
    }
    let started = std::time::Instant::now();
    let view = report::View::new(std::io::stderr().is_terminal());
    let results = run::build(&ws, &ro, &view)?;
    view.finish();
    if a.json {
        crate::emit(&format!("{:#}\n", report::results_json(&ws, &results)))?;
    }
    eprintln!("{}", report::summary(&ws, &results, started));
    if let Some(r) = &ro.remote {
        eprintln!("{}", r.summary());
    }
    Ok(exit(results.iter().all(|r| r.outcome.is_ok())))
}

#[derive(Args, Clone)]
#[command(
    after_help = "Examples:\n  pallet test                 build what changed, then run every test: pipeline not yet passed\n  pallet test zlib curl -j 2  zlib's and curl's tests (and the builds they need)"
)]
pub struct TestArgs {
    /// Package, subpackage or recipe file names whose tests run (default: all).
    targets: Vec<String>,
    /// The workspace folder (default: the current one).
    #[arg(short = 'C', long = "directory", default_value = ".")]
    dir: PathBuf,
    /// Builds and tests at once (default: the number of cores).
    #[arg(short = 'j', long, default_value_t = 0)]
    jobs: usize,
    /// After a failed build, go on with everything not downstream of it.
    #[arg(long)]
    keep_going: bool,
    #[command(flatten)]
    common: CommonArgs,
}

pub fn test_cmd(a: TestArgs) -> anyhow::Result<ExitCode> {
    let ws = load(&a.dir, &a.common)?;
    let mut ro = run_options(&a.common, &a.targets)?;
    ro.jobs = a.jobs;
    ro.keep_going = a.keep_going;
    let started = std::time::Instant::now();
    let view = report::View::new(std::io::stderr().is_terminal());
    let (built, tests) = run::test(&ws, &ro, &view)?;
    view.finish();
    eprintln!("{}", report::summary(&ws, &built, started));
    let passed = tests
        .iter()
        .filter(|t| matches!(t.outcome, pallet_workspace::Outcome::Built { .. }))
        .count();
    let cached = tests
        .iter()
        .filter(|t| t.outcome == pallet_workspace::Outcome::Cached)
        .count();
    let failed: Vec<&str> = tests
        .iter()
        .filter(|t| {
            !matches!(
                t.outcome,
                pallet_workspace::Outcome::Built { .. } | pallet_workspace::Outcome::Cached
            )
        })
        .map(|t| t.label.as_str())
        .collect();
    eprintln!(
        "tests: {passed} passed, {cached} passed before (cached), {} failed or not run{}",
        failed.len(),
        if failed.is_empty() {
            String::new()
        } else {
            format!(": {}", failed.join(", "))
        }
    );
    Ok(exit(
        failed.is_empty() && built.iter().all(|r| r.outcome.is_ok()),
    ))
}
