//! melange's other commands: sign, bump, update-cache, package-version, query, scan, rebuild,
//! license-check, source get/pop and version. The work is in `pallet_build`; this module maps
//! melange's flags onto it and prints what melange prints.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use pallet_build::{license, rebuild, renovate, scan, source};
use pallet_image::config::Arch;

#[derive(Args)]
#[command(
    about = "Sign APK packages in place",
    after_help = "Examples:\n  melange sign --signing-key melange.rsa packages/x86_64/hello-1.0-r0.apk\n  melange sign -k melange.rsa packages/*/*.apk"
)]
pub struct SignArgs {
    /// The private key to sign with (PKCS#1 or PKCS#8 PEM); signatures name `<basename>.pub`.
    #[arg(short = 'k', long, default_value = "local-melange.rsa")]
    signing_key: PathBuf,
    /// The packages; each is replaced by the same package with the new signature.
    #[arg(required = true)]
    packages: Vec<PathBuf>,
}

pub fn sign_cmd(a: SignArgs) -> anyhow::Result<ExitCode> {
    let key = pallet_keys::SigningKey::load(&a.signing_key).with_context(|| {
        format!(
            "cannot use signing key {} (create one with `melange keygen {}`)",
            a.signing_key.display(),
            a.signing_key.display()
        )
    })?;
    use rayon::prelude::*;
    a.packages.par_iter().try_for_each(|p| {
        eprintln!("INFO Processing apk {}", p.display());
        // Stamped with the package's own build date, as melange's sign does.
        pallet_apk_stream::resign_apk(p, &key, pallet_keys::SigAlg::RsaSha256, None)
            .with_context(|| format!("signing {}", p.display()))
    })?;
    Ok(ExitCode::SUCCESS)
}

#[derive(Args)]
#[command(
    about = "Update a melange YAML file to a new package version",
    after_help = "Sets package.version (double-quoted) and resets epoch to 0, or adds 1 to the epoch when the version does not change; downloads each fetch step's URI under the new version to update expected-sha256/expected-sha512; with --expected-commit, updates the git-checkout steps' expected-commit (only those whose tag follows the version when there are several). Comments and layout are kept.\n\nExamples:\n  melange bump crane.yaml 0.20.2\n  melange bump crane.yaml 0.20.2 --expected-commit 1d0e4b8a3f8c5c5b0e3a9f9e7d6c5b4a3f2e1d0c"
)]
pub struct BumpArgs {
    config: PathBuf,
    version: String,
    /// The new expected-commit of the git-checkout steps.
    #[arg(long)]
    expected_commit: Option<String>,
}

pub fn bump_cmd(a: BumpArgs) -> anyhow::Result<ExitCode> {
    eprintln!("INFO attempting to bump version to {}", a.version);
    let done = renovate::bump(
        &a.config,
        &renovate::BumpOptions {
            version: a.version.clone(),
            expected_commit: a.expected_commit.clone().filter(|c| !c.is_empty()),
        },
    )?;
    for (url, written) in &done.fetches {
        eprintln!("INFO processing fetch node: {url}");
        for w in written {
            eprintln!("INFO   {w}");
        }
    }
    if done.commits > 0 {
        eprintln!("INFO updated {} expected-commit value(s)", done.commits);
    }
    eprintln!(
        "INFO {}: version {} epoch {}",
        a.config.display(),
        done.version,
        done.epoch
    );
    Ok(ExitCode::SUCCESS)
}

#[derive(Args)]
#[command(
    about = "Download a recipe's fetch sources into the source cache",
    after_help = "Each fetch step's URI is downloaded, checked against its expected-sha256/expected-sha512 and stored as DIR/sha256:<hex> (and DIR/sha512:<hex>), where builds with --cache-dir DIR find it without the network.\n\nExamples:\n  melange update-cache --cache-dir ./melange-cache hello.yaml\n  melange update-cache hello.yaml     # into /var/cache/melange"
)]
pub struct UpdateCacheArgs {
    /// The cache folder (a build's --cache-dir).
    #[arg(long, default_value = "/var/cache/melange")]
    cache_dir: PathBuf,
    config: PathBuf,
}

pub fn update_cache_cmd(a: UpdateCacheArgs) -> anyhow::Result<ExitCode> {
    if a.cache_dir.to_string_lossy().starts_with("gs://") {
        eprintln!(
            "WARN cache directory is a GCS bucket, not copying files: {}",
            a.cache_dir.display()
        );
        return Ok(ExitCode::SUCCESS);
    }
    let written = renovate::update_cache(&a.config, &a.cache_dir, &mut |u| {
        eprintln!("INFO processing fetch node: {u}");
        renovate::download(u)
    })?;
    for c in &written {
        eprintln!("INFO   wrote: {}", c.path.display());
    }
    if written.is_empty() {
        eprintln!("INFO no fetch steps with expected checksums: nothing cached");
    }
    Ok(ExitCode::SUCCESS)
}

#[derive(Args)]
#[command(
    about = "Print NAME-VERSION-rEPOCH of a melange YAML file",
    after_help = "The same as melange query FILE '{{ .Package.Name }}-{{ .Package.Version }}-r{{ .Package.Epoch }}' (no line break after it, as melange prints it).\n\nExamples:\n  melange package-version hello.yaml\n  make packages/x86_64/$(melange package-version hello.yaml).apk"
)]
pub struct PackageVersionArgs {
    config: PathBuf,
}

#[derive(Args)]
#[command(
    about = "Print a Go template evaluated over a melange YAML file",
    after_help = "Fields have melange's Go names (.Package.Name, .Package.Version, .Package.Epoch, .Package.Dependencies.Runtime, .Subpackages, .Pipeline, .Vars, .Environment.Contents.Packages …). Supported: fields, {{if}}/{{else if}}/{{else}}, {{range}} (with $i, $v :=), {{with}}, pipelines, {{- -}} trimming, comments, and the functions and, or, not, eq, ne, lt, le, gt, ge, len, index, print, printf, println; anything else is refused with a message.\n\nExamples:\n  melange query hello.yaml '{{ .Package.Name }}-{{ .Package.Version }}'\n  melange query hello.yaml '{{ range .Subpackages }}{{ .Name }}{{ \"\\n\" }}{{ end }}'"
)]
pub struct QueryArgs {
    config: PathBuf,
    template: String,
}

fn query_print(config: &Path, template: &str) -> anyhow::Result<ExitCode> {
    let (cfg, _) = pallet_build::compile::parse(config)?;
    let out = pallet_build::query::query(&cfg, config, template)?;
    crate::emit(&out)?;
    Ok(ExitCode::SUCCESS)
}

pub fn package_version_cmd(a: PackageVersionArgs) -> anyhow::Result<ExitCode> {
    query_print(
        &a.config,
        "{{ .Package.Name }}-{{ .Package.Version }}-r{{ .Package.Epoch }}",
    )
}

pub fn query_cmd(a: QueryArgs) -> anyhow::Result<ExitCode> {
    query_print(&a.config, &a.template)
}

#[derive(Args)]
#[command(
    about = "Run the dependency analysis again on built packages and compare their .PKGINFO",
    after_help = "Reads REPO/ARCH/NAME-VERSION-rEPOCH.apk for the package and each subpackage, unpacks them side by side, runs the SCA on them and prints the .PKGINFO it gives now (subpackages first); with --diff, a unified diff against the .PKGINFO in each package instead, failing when one differs (comment lines, such as '# vendored', are compared only with --comments).\n\nExamples:\n  melange scan hello.yaml --diff\n  melange scan hello.yaml -r ./packages --arch aarch64 -p hello-dev"
)]
pub struct ScanArgs {
    config: PathBuf,
    /// Accepted as melange does; the packages' signatures are not checked.
    #[arg(short = 'k', long, default_value = "local-melange.rsa.pub")]
    keyring_append: String,
    /// The repository (folder or http(s) URL) holding ARCH/NAME-VERSION.apk.
    #[arg(short = 'r', long, default_value = "./packages")]
    repository_append: String,
    /// Print only this package's .PKGINFO.
    #[arg(short = 'p', long)]
    package: Option<String>,
    /// Architectures to scan (default x86_64, as melange).
    #[arg(long, value_delimiter = ',')]
    arch: Vec<String>,
    /// Print a diff against each package's .PKGINFO and fail if there is one.
    #[arg(long)]
    diff: bool,
    /// Compare comment lines too.
    #[arg(long)]
    comments: bool,
    /// The namespace the packages were built with (their maintainer).
    #[arg(long, default_value = "unknown")]
    namespace: String,
    /// Folders searched for `uses:` pipelines before the built-ins.
    #[arg(long)]
    pipeline_dir: Vec<PathBuf>,
}

pub fn scan_cmd(a: ScanArgs) -> anyhow::Result<ExitCode> {
    if !a.keyring_append.is_empty() {
        // The packages scanned are local files the user built; what is compared is their
        // contents, so their signatures play no part (melange's scan does not check them either).
        eprintln!(
            "note: -k/--keyring-append has no effect on scan: it reads the packages' contents and does not verify their signatures"
        );
    }
    let archs = if a.arch.is_empty() {
        vec!["x86_64".to_string()]
    } else {
        a.arch.clone()
    };
    let mut saw_diff = false;
    let mut out = String::new();
    for arch in archs {
        let arch = Arch::parse(&arch).with_context(|| format!("unknown architecture '{arch}'"))?;
        let found = scan::scan(
            &a.config,
            &scan::ScanOptions {
                repo: a.repository_append.clone(),
                arch,
                namespace: a.namespace.clone(),
                pipeline_dirs: a.pipeline_dir.clone(),
            },
        )?;
        for s in found {
            if a.diff {
                if let Some(d) = pallet_build::textdiff::unified(
                    &s.file,
                    &s.old,
                    &a.config.display().to_string(),
                    &s.new,
                    a.comments,
                ) {
                    saw_diff = true;
                    out.push_str(&d);
                }
            } else if a.package.as_deref().is_none_or(|p| p == s.name) {
                out.push_str(&s.new);
            }
        }
    }
    crate::emit(&out)?;
    if saw_diff {
        bail!("saw diff for {}", a.config.display());
    }
    Ok(ExitCode::SUCCESS)
}

#[derive(Args)]
#[command(
    about = "Rebuild packages from the configuration they embed and compare the bytes",
    after_help = "Reads .melange.yaml (the compiled configuration), .PKGINFO (architecture, build date, commit, namespace) and the SBOM's build-configuration package of each package, builds it again into OUT/ARCH/ and, with --diff (the default), reports every entry removed, changed (with a diff of .PKGINFO, .melange.yaml and SBOMs) or added and the whole file's digest, failing on any difference. Packages of the same origin are built once.\n\nExamples:\n  melange rebuild packages/x86_64/hello-1.0-r0.apk --signing-key melange.rsa\n  melange rebuild --bootstrap --source-dir examples/hello-c packages/x86_64/hello-c-1.0.0-r0.apk"
)]
pub struct RebuildArgs {
    #[arg(required = true)]
    packages: Vec<PathBuf>,
    /// Runner: bubblewrap (default), docker or qemu, as for melange build.
    #[arg(long)]
    runner: Option<String>,
    /// Where the rebuilt packages go (OUT/ARCH/NAME-VERSION.apk).
    #[arg(long, default_value = "./rebuilt-packages/")]
    out_dir: PathBuf,
    /// The sources copied into the workspace (as the original build's --source-dir).
    #[arg(long)]
    source_dir: Option<PathBuf>,
    /// Sign the rebuilt packages (the same key gives the same signature bytes).
    #[arg(long)]
    signing_key: Option<PathBuf>,
    /// Compare each rebuilt package with the original and fail on a difference.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set, num_args = 0..=1, require_equals = true, default_missing_value = "true")]
    diff: bool,
    /// Build in the host's root read-only, as `melange build --bootstrap` did.
    #[arg(long, action = clap::ArgAction::Set, num_args = 0..=1, require_equals = true, default_missing_value = "true", default_value_t = false)]
    bootstrap: bool,
    /// Extra repositories for the build environment.
    #[arg(short = 'r', long, value_delimiter = ',')]
    repository_append: Vec<String>,
    /// Extra keys for the build environment's repositories.
    #[arg(short = 'k', long, value_delimiter = ',')]
    keyring_append: Vec<String>,
    /// Cache for the build environment's packages.
    #[arg(long)]
    apk_cache_dir: Option<PathBuf>,
    /// Mounted at /var/cache/melange.
    #[arg(long, default_value = "./melange-cache/")]
    cache_dir: PathBuf,
}

pub fn rebuild_cmd(a: RebuildArgs) -> anyhow::Result<ExitCode> {
    let runner = crate::melange_build::check_runner(&a.runner)?;
    let mut origins = std::collections::BTreeSet::new();
    let mut failed = vec![];
    for apk in &a.packages {
        let emb = rebuild::read_embedded(apk)
            .with_context(|| format!("failed to get config for {}", apk.display()))?;
        let arch = Arch::parse(&emb.info.arch).with_context(|| {
            format!(
                "{}: unknown architecture '{}'",
                apk.display(),
                emb.info.arch
            )
        })?;
        let origin = emb
            .info
            .origin
            .clone()
            .unwrap_or_else(|| emb.info.name.clone());
        if origins.contains(&origin) {
            eprintln!(
                "WARN not rebuilding {} because {origin} was already rebuilt",
                apk.display()
            );
        } else {
            eprintln!("INFO rebuilding {}", apk.display());
            let plan = emb.plan(apk)?;
            let opts = pallet_build::driver::Options {
                arch: Some(arch),
                out_dir: a.out_dir.clone(),
                cache_dir: Some(a.cache_dir.clone()),
                apk_cache_dir: a
                    .apk_cache_dir
                    .clone()
                    .unwrap_or_else(crate::melange_build::default_apk_cache),
                source_dir: a.source_dir.clone(),
                signing_key: a.signing_key.clone(),
                generate_index: false,
                bootstrap: a.bootstrap,
                source_date_epoch: emb.info.build_time,
                namespace: emb.namespace.clone(),
                rm: true,
                extra_repositories: a.repository_append.clone(),
                extra_keyring: a.keyring_append.clone(),
                config_source: emb.config_source.clone(),
                runner: runner.clone(),
                interactive: false,
                ..Default::default()
            };
            pallet_build::driver::build(&plan, &opts)
                .with_context(|| format!("failed to rebuild {}", apk.display()))?;
            origins.insert(origin);
        }
        if a.diff {
            let new = a
                .out_dir
                .join(arch.apk())
                .join(format!("{}-{}.apk", emb.info.name, emb.info.version));
            eprintln!("INFO diffing {} and {}", apk.display(), new.display());
            let diffs = rebuild::compare(apk, &new)
                .with_context(|| format!("comparing {} and {}", apk.display(), new.display()))?;
            if diffs.is_empty() {
                eprintln!("INFO {} rebuilt identically", apk.display());
            } else {
                for d in &diffs {
                    eprintln!("{d}");
                }
                failed.push(apk.display().to_string());
            }
        }
    }
    if !failed.is_empty() {
        bail!("rebuilt packages differ: {}", failed.join(", "));
    }
    Ok(ExitCode::SUCCESS)
}

#[derive(Args)]
#[command(
    about = "Check the licences of a recipe's sources (or a source folder) against its copyright",
    after_help = "For a .yaml recipe (or a built .apk, from its embedded configuration) the sources are fetched into --workdir first: the folder named like the recipe next to it is copied, then its fetch, git-checkout and patch steps run. Licence files are found by name (LICENSE, COPYING, … top level first; --scan-type shallow reads the top folder and one level below, skipping vendor/), identified, and compared with package.copyright. Prints melange's report; --fix rewrites package.copyright from what was found.\n\nExamples:\n  melange license-check vim.yaml\n  melange license-check ./src --scan-type deep\n  melange license-check vim.yaml --fix --format simple"
)]
pub struct LicenseCheckArgs {
    file: PathBuf,
    /// Where the sources are put (default: a temporary folder).
    #[arg(long)]
    workdir: Option<PathBuf>,
    /// Rewrite package.copyright in the YAML file from the licences found.
    #[arg(long)]
    fix: bool,
    /// --fix format: flat (one entry per licence file) or simple (one entry, licences joined by AND).
    #[arg(long, default_value = "flat")]
    format: String,
    /// shallow (top folder and one level below) or deep (the whole tree).
    #[arg(long, default_value = "shallow")]
    scan_type: String,
}

pub fn license_check_cmd(a: LicenseCheckArgs) -> anyhow::Result<ExitCode> {
    if a.scan_type != "shallow" && a.scan_type != "deep" {
        bail!(
            "invalid scan-type: {} (must be 'shallow' or 'deep')",
            a.scan_type
        );
    }
    if a.format != "flat" && a.format != "simple" {
        bail!("invalid format: {} (must be 'flat' or 'simple')", a.format);
    }
    let tmp;
    let workdir = match &a.workdir {
        Some(w) => w.clone(),
        None => {
            tmp = tempfile::Builder::new()
                .prefix("melange-license-check")
                .tempdir()?;
            tmp.path().to_path_buf()
        }
    };
    let ext = a.file.extension().and_then(|e| e.to_str()).unwrap_or("");
    let (dir, copyright) = if ext == "apk" || ext == "yaml" {
        let f = source::fetch_sources(&a.file, &workdir)?;
        (workdir.clone(), Some(f.copyright))
    } else {
        (a.file.clone(), None)
    };
    let dir = std::path::absolute(&dir)?;
    let report = license::check(&dir, copyright.as_deref(), a.scan_type == "deep");
    for l in &report.lines {
        match l {
            license::Line::Info(s) => eprintln!("INFO {s}"),
            license::Line::Warn(s) => eprintln!("WARN {s}"),
        }
    }
    if a.fix {
        if ext != "yaml" {
            bail!(
                "--fix edits a melange YAML file; {} is not one",
                a.file.display()
            );
        }
        eprintln!("INFO attempting to update copyright");
        let text = std::fs::read_to_string(&a.file)?;
        match license::fix_text(&text, &report, a.format == "simple") {
            Some(new) => {
                pallet_build::compile::parse_str(&new, &a.file)?;
                renovate::write_in_place(&a.file, &new)?;
                eprintln!("INFO updated package.copyright in {}", a.file.display());
            }
            None => eprintln!("INFO no actionable license differences detected"),
        }
    }
    Ok(ExitCode::SUCCESS)
}

#[derive(Subcommand)]
pub enum SourceCommand {
    /// Clone a recipe's git-checkout source with its patches applied as commits.
    #[command(
        after_help = "Clones the first git-checkout step's repository into OUTPUT/NAME, checks out its expected-commit (its tag or branch when there is none), applies cherry-picks, then the patches of the patch (or git-am) step after it, each as a commit.\n\nExamples:\n  melange source get vim.yaml -o ./src\n  melange source get vim.yaml --source-dir ./vim"
    )]
    Get(SourceArgs),
    /// Turn commits made on a `source get` clone into patches and a git-am step.
    #[command(
        after_help = "Runs git format-patch EXPECTED-COMMIT..HEAD in OUTPUT/NAME into the source folder and replaces the recipe's patch steps with one git-am step naming the patches (inserted after the git-checkout when there was none); the rest of the YAML is kept as written.\n\nExamples:\n  melange source pop apk-tools.yaml\n  melange source pop apk-tools.yaml -o ./src --source-dir ./apk-tools"
    )]
    Pop(SourceArgs),
}

#[derive(Args)]
pub struct SourceArgs {
    config: PathBuf,
    /// Where sources are cloned (OUTPUT/NAME).
    #[arg(short = 'o', long, default_value = "./source")]
    output: PathBuf,
    /// Where the patches are (default: the folder NAME next to the recipe).
    #[arg(long)]
    source_dir: Option<PathBuf>,
}

pub fn source_cmd(c: SourceCommand) -> anyhow::Result<ExitCode> {
    match c {
        SourceCommand::Get(a) => {
            let dest = source::source_get(&a.config, &a.output, a.source_dir.as_deref())?;
            eprintln!("INFO Successfully extracted source to {}", dest.display());
        }
        SourceCommand::Pop(a) => {
            let files = source::source_pop(&a.config, &a.output, a.source_dir.as_deref())?;
            eprintln!(
                "INFO Generated {} patches: {}",
                files.len(),
                files.join(" ")
            );
            eprintln!(
                "INFO Updated {} with git-am pipeline using {} patches",
                a.config.display(),
                files.len()
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

#[derive(Args)]
#[command(
    about = "Print version information",
    after_help = "Examples:\n  melange version\n  melange version --json"
)]
pub struct VersionArgs {
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

pub fn version_cmd(a: VersionArgs) -> anyhow::Result<ExitCode> {
    let version = env!("CARGO_PKG_VERSION");
    let platform = format!("{}/{}", std::env::consts::OS, Arch::host().oci().0);
    if a.json {
        let v = serde_json::json!({
            "gitVersion": format!("v{version}"),
            "gitCommit": "unknown",
            "gitTreeState": "unknown",
            "buildDate": "unknown",
            "goVersion": "none (pallet is written in Rust)",
            "compiler": "rustc",
            "platform": platform,
        });
        crate::emit(&(serde_json::to_string_pretty(&v)? + "\n"))?;
    } else {
        crate::emit(&format!(
            "pallet (melange compatible)\n\nGitVersion:    v{version}\nGitCommit:     unknown\nGitTreeState:  unknown\nBuildDate:     unknown\nGoVersion:     none (pallet is written in Rust)\nCompiler:      rustc\nPlatform:      {platform}\n"
        ))?;
    }
    Ok(ExitCode::SUCCESS)
}

#[derive(Args)]
#[command(
    about = "Build a base initramfs for the qemu runner",
    long_about = "Build a base initramfs: the init package and any extra packages, installed for one architecture without running their scripts, written as a newc cpio archive (gzip-compressed when the name ends in .gz). melange's qemu runner reads it from QEMU_BASE_INITRAMFS; pallet's qemu runner packs each build's own environment as its guest instead, so it does not read one.",
    after_help = "Examples:\n  melange initramfs --arch x86_64 --output ./initramfs.cpio\n  melange initramfs --arch aarch64 -o custom.cpio --init-package my-init -r https://my.repo.dev/packages -k https://my.repo.dev/key.rsa.pub\n  melange initramfs --arch x86_64 -o i.cpio -r ./packages -k melange.rsa.pub --init-package busybox -p alpine-baselayout --offline"
)]
pub struct InitramfsArgs {
    /// Where to write the archive.
    #[arg(short = 'o', long, required = true)]
    output: PathBuf,
    /// The architecture (x86_64, aarch64, ...).
    #[arg(long, required = true)]
    arch: String,
    /// The package that provides /init.
    #[arg(long, default_value = pallet_image::initramfs::MELANGE_INIT_PACKAGE)]
    init_package: String,
    /// Repositories to install from (comma lists too).
    #[arg(short = 'r', long, value_delimiter = ',', default_value = pallet_image::initramfs::MELANGE_INIT_REPOSITORY)]
    repository: Vec<String>,
    /// More packages to include (comma lists too).
    #[arg(short = 'p', long, value_delimiter = ',')]
    package: Vec<String>,
    /// Keys for the repositories' signatures (paths or URLs); without one, keys are
    /// discovered as apko does.
    #[arg(short = 'k', long, value_delimiter = ',')]
    keyring: Vec<String>,
    /// Package cache (default: $XDG_CACHE_HOME/pallet or ~/.cache/pallet).
    #[arg(long)]
    cache_dir: Option<PathBuf>,
    /// Never use the network: indexes, keys and packages from the cache or local folders.
    #[arg(long)]
    offline: bool,
}

pub fn initramfs_cmd(a: InitramfsArgs) -> anyhow::Result<ExitCode> {
    let arch = Arch::parse(&a.arch).ok_or_else(|| {
        anyhow::anyhow!(
            "--arch {}: not an architecture (e.g. x86_64, aarch64)",
            a.arch
        )
    })?;
    let cfg = pallet_image::initramfs::melange_configuration(
        &a.init_package,
        &a.package,
        &a.repository,
        &a.keyring,
    );
    let opts = pallet_image::build::BuildOptions {
        cache_dir: crate::image_cmds::default_cache(&a.cache_dir),
        epoch: crate::image_cmds::build_epoch(&None)?,
        offline: a.offline,
        level: pallet_image::layers::DEFAULT_LEVEL,
        ..Default::default()
    };
    eprintln!(
        "generating a base initramfs for {}: {} from {}",
        arch.apk(),
        cfg.contents.packages.join(", "),
        a.repository
            .iter()
            .map(|r| pallet_repo::redact(r))
            .collect::<Vec<_>>()
            .join(", ")
    );
    let w = pallet_image::initramfs::write(&cfg, arch, &opts, &a.output)
        .with_context(|| format!("generating the initramfs {}", a.output.display()))?;
    eprintln!(
        "wrote {} ({} packages, {} entries); melange's qemu runner takes it as QEMU_BASE_INITRAMFS={} (pallet's qemu runner boots each build's own environment instead)",
        a.output.display(),
        w.packages,
        w.entries,
        a.output.display()
    );
    Ok(ExitCode::SUCCESS)
}
