//! `pallet image …` and the `apko` face.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, bail};
use clap::{Args, Parser, Subcommand};
use pallet_image::build::{self, BuildOptions};
use pallet_image::config::{self, Arch};
use pallet_image::image::{self, BuiltImage, ImageRequest};
use serde_json::json;

#[derive(Subcommand)]
pub enum ImageCommand {
    /// Build an image from an apko YAML file into a docker-archive tarball or an OCI layout.
    #[command(
        after_help = "Examples:\n  pallet image build apko.yaml myimage:latest image.tar\n  mkdir layout && pallet image build apko.yaml myimage:latest layout/ --arch x86_64\n  SOURCE_DATE_EPOCH=1700000000 pallet image build apko.yaml r:1 out.tar --sbom-path sboms/"
    )]
    Build(BuildArgs),
    /// Print the configuration after includes and defaults, as YAML.
    #[command(after_help = "Examples:\n  pallet image show-config apko.yaml")]
    ShowConfig(ShowArgs),
    /// Resolve every architecture and write apko's lock file (`CONFIG.lock.json`).
    #[command(
        after_help = "Examples:\n  pallet image lock apko.yaml\n  pallet image build apko.yaml app:1 app.tar --lockfile apko.lock.json --offline"
    )]
    Lock(LockArgs),
    /// Resolve and print the packages an image would contain (`NAME VERSION` per line).
    #[command(after_help = SHOW_PACKAGES_HELP_PALLET)]
    ShowPackages(ShowPackagesArgs),
    /// Build just the root filesystem of one architecture as a .tar.gz (no image).
    #[command(
        after_help = "Examples:\n  pallet image build-minirootfs apko.yaml rootfs.tar.gz --build-arch x86_64"
    )]
    BuildMinirootfs(MinirootfsArgs),
    /// Build and push the image and its index to registries; prints REF@DIGEST per tag.
    Publish(PublishArgs),
    /// Print the resolved package graph as Graphviz dot (packages, dependencies, provides).
    #[command(after_help = DOT_EXAMPLES_PALLET)]
    Dot(DotArgs),
    /// Build the root filesystem of one architecture as a newc cpio archive (an initramfs).
    #[command(after_help = CPIO_EXAMPLES_PALLET)]
    BuildCpio(CpioArgs),
    /// Discover the keys of the repositories in ROOT/etc/apk/repositories (Chainguard-style
    /// apk-configuration) and write them to ROOT/etc/apk/keys.
    #[command(after_help = INSTALL_KEYS_EXAMPLES_PALLET)]
    InstallKeys(InstallKeysArgs),
}

const DOT_EXAMPLES_PALLET: &str = "Examples:\n  pallet image dot apko.yaml | dot -Tsvg > graph.svg\n  pallet image dot apko.yaml -S --arch aarch64 > deps.dot";
const DOT_EXAMPLES_APKO: &str = "Examples:\n  apko dot apko.yaml | dot -Tsvg > graph.svg\n  apko dot -S apko.yaml > deps.dot   # each dependency drawn once";
const CPIO_EXAMPLES_PALLET: &str = "Examples:\n  pallet image build-cpio apko.yaml initramfs.cpio --build-arch x86_64\n  pallet image build-cpio apko.yaml initramfs.cpio.gz   # gzip-compressed: the name ends in .gz";
const CPIO_EXAMPLES_APKO: &str = "Examples:\n  apko build-cpio apko.yaml initramfs.cpio\n  apko build-cpio apko.yaml initramfs.cpio.gz --build-arch aarch64";
const INSTALL_KEYS_EXAMPLES_PALLET: &str = "Examples:\n  sudo pallet image install-keys                # the host: /etc/apk/repositories -> /etc/apk/keys\n  pallet image install-keys --root ./chroot     # ./chroot/etc/apk/repositories -> ./chroot/etc/apk/keys";
const INSTALL_KEYS_EXAMPLES_APKO: &str = "Examples:\n  apko install-keys\n  apko install-keys --root /tmp/rootfs   # write into /tmp/rootfs/etc/apk/keys instead of the host's";

#[derive(Args)]
pub struct DotArgs {
    config: PathBuf,
    #[command(flatten)]
    common: CommonArgs,
    /// Draw each dependency and provider once, for graphs with fewer edges.
    #[arg(short = 'S', long)]
    spanning_tree: bool,
    /// apko's browser explorer (serves SVG on localhost); refused: pipe the output to
    /// `dot -Tsvg` instead.
    #[arg(long)]
    web: bool,
    /// Registry explorer the --web links point to (accepted for compatibility; only --web
    /// uses it).
    #[arg(short = 'e', long, default_value = "apk.dag.dev")]
    registry_explorer: String,
}

#[derive(Args)]
pub struct CpioArgs {
    config: PathBuf,
    /// The archive to write; gzip-compressed when the name ends in `.gz`.
    output: PathBuf,
    #[command(flatten)]
    common: CommonArgs,
    /// The architecture to build (default: the host's; archs in the config are ignored).
    #[arg(long)]
    build_arch: Option<String>,
    /// Build date, RFC 3339, for the files' times (SOURCE_DATE_EPOCH overrides it).
    #[arg(long)]
    build_date: Option<String>,
    /// Accepted for compatibility: apko's build-cpio writes no SBOM, and neither does this.
    #[arg(long)]
    sbom_path: Option<PathBuf>,
    #[command(flatten)]
    limits: SizeLimits,
}

#[derive(Args)]
pub struct InstallKeysArgs {
    /// The root whose etc/apk/repositories is read and whose etc/apk/keys is written. The
    /// default, /, is the host itself (as apko does); give a folder to write anywhere else.
    #[arg(long, default_value = "/")]
    root: PathBuf,
    /// Cache folder for the discovery documents (default: $XDG_CACHE_HOME/pallet or
    /// ~/.cache/pallet).
    #[arg(long)]
    cache_dir: Option<PathBuf>,
    /// Never use the network: keys from what the cache holds.
    #[arg(long)]
    offline: bool,
    /// Allow discovery over plain http from hosts other than loopback.
    #[arg(long)]
    insecure_keyring: bool,
    /// Read repositories under PREFIX from REPLACEMENT instead: PREFIX=REPLACEMENT.
    #[arg(long = "mirror", value_name = "PREFIX=REPLACEMENT")]
    mirror: Vec<String>,
}

#[derive(Args)]
pub struct VersionArgs {
    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
}

#[derive(Args, Clone)]
pub struct CommonArgs {
    /// Architectures (apko names and aliases: amd64, x86_64, arm64, arm/v7 …; `host`, `all`).
    #[arg(long, value_delimiter = ',')]
    arch: Vec<String>,
    /// Extra keys for verifying repository indexes.
    #[arg(short = 'k', long = "keyring-append")]
    keyring_append: Vec<String>,
    /// Extra repositories (build time and runtime).
    #[arg(short = 'r', long = "repository-append")]
    repository_append: Vec<String>,
    /// Extra build-time-only repositories.
    #[arg(short = 'b', long = "build-repository-append")]
    build_repository_append: Vec<String>,
    /// Extra packages.
    #[arg(short = 'p', long = "package-append")]
    package_append: Vec<String>,
    /// Package cache folder (default: $XDG_CACHE_HOME/pallet or ~/.cache/pallet).
    #[arg(long)]
    cache_dir: Option<PathBuf>,
    /// Skip verifying index signatures (packages are still checked against the index).
    #[arg(long)]
    ignore_signatures: bool,
    /// Never use the network (local repositories and the cache only).
    #[arg(long)]
    offline: bool,
    /// Read repositories under PREFIX from REPLACEMENT instead (a local mirror): PREFIX=REPLACEMENT.
    #[arg(long = "mirror", value_name = "PREFIX=REPLACEMENT")]
    mirror: Vec<String>,
    /// Extra folders to search for included files.
    #[arg(long = "include-paths")]
    include_paths: Vec<PathBuf>,
    /// Allow keyring URLs over plain http to hosts other than loopback (a key read over plain
    /// http can be swapped by anyone on the path).
    #[arg(long)]
    insecure_keyring: bool,
}

#[derive(Args)]
pub struct BuildArgs {
    config: PathBuf,
    tag: String,
    /// A tarball path, or an existing folder for an OCI image layout.
    output: PathBuf,
    #[command(flatten)]
    flags: BuildFlags,
}

/// Flags shared by `build` and `publish`.
#[derive(Args)]
pub struct BuildFlags {
    #[command(flatten)]
    common: CommonArgs,
    /// Build date, RFC 3339 (SOURCE_DATE_EPOCH overrides it).
    #[arg(long)]
    build_date: Option<String>,
    /// Write SBOMs (on by default).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set, num_args = 0..=1, require_equals = true, default_missing_value = "true")]
    sbom: bool,
    /// Folder for SBOM files (created when missing; default: the working folder).
    #[arg(long)]
    sbom_path: Option<PathBuf>,
    /// SBOM formats: spdx, cyclonedx (comma separated).
    #[arg(long, value_delimiter = ',', default_value = "spdx")]
    sbom_formats: Vec<String>,
    /// Annotations KEY:VALUE for the manifests, index and config labels.
    #[arg(long, value_delimiter = ',')]
    annotations: Vec<String>,
    /// Probe git for vcs-url when the configuration has none: the origin remote (credentials
    /// removed) and HEAD become the source and revision annotations (`--vcs=false` to skip).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set, num_args = 0..=1, require_equals = true, default_missing_value = "true")]
    vcs: bool,
    /// Build exactly the packages of this lock file.
    #[arg(long)]
    lockfile: Option<PathBuf>,
    /// Layer payload format: tar (the default; erofs is refused, pallet writes tar layers only).
    #[arg(long)]
    format: Option<String>,
    #[command(flatten)]
    limits: SizeLimits,
}

/// apko's size guards (bytes; 0 = the default, -1 = no limit).
#[derive(Args, Clone, Copy)]
pub struct SizeLimits {
    /// Largest decompressed APKINDEX (default 300 MiB).
    #[arg(long, default_value_t = 0, allow_negative_numbers = true)]
    max_apkindex_decompressed_size: i64,
    /// Largest decompressed control section of a package (default 10 MiB).
    #[arg(long, default_value_t = 0, allow_negative_numbers = true)]
    max_apk_control_size: i64,
    /// Largest decompressed data section of a package (default 16 GiB).
    #[arg(long, default_value_t = 0, allow_negative_numbers = true)]
    max_apk_data_size: i64,
    /// Largest HTTP answer (default 8 GiB).
    #[arg(long, default_value_t = 0, allow_negative_numbers = true)]
    max_http_response_size: i64,
}

impl SizeLimits {
    /// Make the limits the ones every index, package and download of this process is read
    /// with.
    fn apply(&self) -> anyhow::Result<()> {
        let pick = |flag: &str, v: i64, default: u64| -> anyhow::Result<u64> {
            match v {
                0 => Ok(default),
                -1 => Ok(u64::MAX),
                v if v > 0 => Ok(v as u64),
                v => bail!(
                    "--{flag} {v}: give a size in bytes, 0 for the default or -1 for no limit"
                ),
            }
        };
        pallet_index::set_max_index_size(pick(
            "max-apkindex-decompressed-size",
            self.max_apkindex_decompressed_size,
            pallet_index::MAX_INDEX_SIZE,
        )?);
        pallet_apk_stream::reader::set_default_limits(
            pick("max-apk-control-size", self.max_apk_control_size, 10 << 20)?,
            pick("max-apk-data-size", self.max_apk_data_size, 16 << 30)?,
        );
        pallet_repo::set_max_http_response_size(pick(
            "max-http-response-size",
            self.max_http_response_size,
            pallet_repo::DEFAULT_MAX_HTTP_RESPONSE,
        )?);
        Ok(())
    }
}

/// apko's `--format`: `tar` (or unset) is what pallet writes.
fn check_format(f: &Option<String>) -> anyhow::Result<()> {
    match f.as_deref() {
        None | Some("") | Some("tar") => Ok(()),
        Some("erofs") => bail!(
            "--format erofs: pallet writes tar layers only (apko's EROFS layers are experimental and not implemented here); leave --format out or pass --format tar"
        ),
        Some(other) => bail!("--format {other}: not a layer format (tar, erofs)"),
    }
}

#[derive(Args)]
#[command(
    after_help = "Examples:\n  pallet image publish apko.yaml registry.example/team/app:1.0 registry.example/team/app:latest\n  pallet image publish apko.yaml 127.0.0.1:5000/app:dev --image-refs refs.txt"
)]
pub struct PublishArgs {
    config: PathBuf,
    /// Image references to push to (every tag gets the index).
    #[arg(required = true)]
    tags: Vec<String>,
    #[command(flatten)]
    flags: BuildFlags,
    /// Write the digest reference of every pushed tag and image here, one per line.
    #[arg(long)]
    image_refs: Option<PathBuf>,
    /// Registries to speak plain http to (loopback registries always are).
    #[arg(long = "insecure-registry")]
    insecure_registry: Vec<String>,
    /// Load the image into the Docker daemon (DOCKER_HOST, else /var/run/docker.sock) under
    /// apko's local name and every tag, instead of pushing.
    #[arg(long)]
    local: bool,
}

#[derive(Args)]
pub struct ShowArgs {
    config: PathBuf,
    #[command(flatten)]
    common: CommonArgs,
}

#[derive(Args)]
pub struct MinirootfsArgs {
    config: PathBuf,
    output: PathBuf,
    #[command(flatten)]
    common: CommonArgs,
    /// The architecture to build (default: the host's; archs in the config are ignored).
    #[arg(long)]
    build_arch: Option<String>,
    #[command(flatten)]
    limits: SizeLimits,
}

#[derive(Args)]
pub struct LockArgs {
    config: PathBuf,
    #[command(flatten)]
    common: CommonArgs,
    /// Where to write the lock file (default: the config's name with `.lock.json`).
    #[arg(long)]
    output: Option<PathBuf>,
}

#[derive(Args)]
pub struct ShowPackagesArgs {
    config: PathBuf,
    #[command(flatten)]
    common: CommonArgs,
    /// A preset (name-version, name-version-source, name=version, name=version-source,
    /// name-(version), name-(version)-source, packagelock, packagelock-source) or a Go
    /// template over .Name, .Version and .Source.
    #[arg(long, default_value = pallet_image::template::DEFAULT_FORMAT)]
    format: String,
}

/// The presets and template subset, shared by both faces' help (a macro, since `concat!`
/// takes literals only).
macro_rules! show_packages_formats {
    () => {
        "The presets are:
  name-version           {{ .Name }} {{ .Version }}   (the default)
  name-version-source    {{ .Name }} {{ .Version }} {{ .Source }}
  name=version           {{ .Name }}={{ .Version }}
  name=version-source    {{ .Name }}={{ .Version }} {{ .Source }}
  name-(version)         {{ .Name }} ({{ .Version }})
  name-(version)-source  {{ .Name }} ({{ .Version }}) {{ .Source }}
  packagelock            - {{ .Name }}={{ .Version }}
  packagelock-source     - {{ .Name }}={{ .Version }} # {{ .Source }}
Any other value is a Go template: text, {{ .Name }}, {{ .Version }}, {{ .Source }} (the
package URL), {{ . }}, strings, numbers, pipelines and the functions printf, print, println
and len; other template constructs are refused with a message."
    };
}
const SHOW_PACKAGES_HELP_PALLET: &str = concat!(
    "Examples:
  pallet image show-packages apko.yaml --arch x86_64
  pallet image show-packages apko.yaml --format packagelock
  pallet image show-packages apko.yaml --format '{{ printf \"%-30s\" .Name }} {{ .Version }}'

",
    show_packages_formats!()
);
const SHOW_PACKAGES_HELP_APKO: &str = concat!(
    "Examples:
  apko show-packages apko.yaml --arch x86_64
  apko show-packages apko.yaml --format packagelock
  apko show-packages apko.yaml --format '{{ printf \"%-30s\" .Name }} {{ .Version }}'

",
    show_packages_formats!()
);

pub fn run(cmd: ImageCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        ImageCommand::Build(a) => build_cmd(a),
        ImageCommand::ShowConfig(a) => show_config(a),
        ImageCommand::ShowPackages(a) => show_packages(a),
        ImageCommand::Lock(a) => lock_cmd(a),
        ImageCommand::BuildMinirootfs(a) => minirootfs_cmd(a),
        ImageCommand::Publish(a) => publish_cmd(a),
        ImageCommand::Dot(a) => dot_cmd(a),
        ImageCommand::BuildCpio(a) => cpio_cmd(a),
        ImageCommand::InstallKeys(a) => install_keys_cmd(a),
    }
}

/// The one architecture `build-minirootfs` and `build-cpio` make: `--build-arch` (apko's), or
/// `--arch` when it names one.
fn single_arch(build_arch: &Option<String>, arch: &[String]) -> anyhow::Result<Arch> {
    match (build_arch, arch) {
        (_, []) => crate::melange_build::one_arch(build_arch),
        (None, [one]) => crate::melange_build::one_arch(&Some(one.clone())),
        (Some(b), [one]) if b == one => crate::melange_build::one_arch(build_arch),
        _ => bail!(
            "this command builds one architecture: give it with --build-arch (got --arch {}{})",
            arch.join(","),
            build_arch
                .as_ref()
                .map(|b| format!(" and --build-arch {b}"))
                .unwrap_or_default()
        ),
    }
}

fn minirootfs_cmd(a: MinirootfsArgs) -> anyhow::Result<ExitCode> {
    a.limits.apply()?;
    let loaded = load_config(&a.config, &a.common.include_paths)?;
    let arch = single_arch(&a.build_arch, &a.common.arch)?;
    if !loaded.config.archs.is_empty() {
        eprintln!(
            "warning: archs in the config are ignored; building {}",
            arch.apk()
        );
    }
    let mut opts = options(&a.common);
    opts.epoch = match std::env::var("SOURCE_DATE_EPOCH") {
        Ok(v) if !v.trim().is_empty() => Some(
            v.trim()
                .parse()
                .context("SOURCE_DATE_EPOCH is not a whole number")?,
        ),
        _ => None,
    };
    let installed = build::install(&loaded.config, arch, &opts)?;
    let names = pallet_fs::OwnerNames::from_files(
        &String::from_utf8_lossy(&installed.tree.read("etc/passwd")?.unwrap_or_default()),
        &String::from_utf8_lossy(&installed.tree.read("etc/group")?.unwrap_or_default()),
    );
    write_archive(&a.output, true, |w| installed.tree.write_tar(w, &names))?;
    eprintln!(
        "wrote {} ({} packages, {})",
        a.output.display(),
        installed.packages.len(),
        arch.apk()
    );
    Ok(ExitCode::SUCCESS)
}

fn lock_cmd(a: LockArgs) -> anyhow::Result<ExitCode> {
    lock_cmd_to(a, "lock.json")
}

/// `lock`, and the deprecated `resolve`, which differ only in the default file's suffix.
fn lock_cmd_to(a: LockArgs, suffix: &str) -> anyhow::Result<ExitCode> {
    let loaded = load_config(&a.config, &a.common.include_paths)?;
    let archs = archs(&a.common, &loaded.config)?;
    let opts = options(&a.common);
    let name = a
        .config
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let lock =
        pallet_image::lock::generate(&loaded.config, &name, &loaded.checksum, &archs, &opts)?;
    let out = a.output.clone().unwrap_or_else(|| {
        let stem = a.config.with_extension("");
        PathBuf::from(format!("{}.{suffix}", stem.display()))
    });
    let mut text = serde_json::to_vec_pretty(&lock)?;
    text.push(b'\n');
    pallet_keys::write_atomic(&out, &text, 0o644)?;
    eprintln!(
        "wrote {} ({} packages)",
        out.display(),
        lock.contents.packages.len()
    );
    Ok(ExitCode::SUCCESS)
}

#[derive(Args)]
pub struct CleanArgs {
    /// The cache folder to empty (default: $XDG_CACHE_HOME/pallet or ~/.cache/pallet).
    #[arg(long)]
    cache_dir: Option<PathBuf>,
    /// Print the cache's size without deleting anything.
    #[arg(long)]
    dry_run: bool,
}

fn clean_cmd(a: CleanArgs) -> anyhow::Result<ExitCode> {
    let dir = default_cache(&a.cache_dir);
    let dir = std::path::absolute(&dir).unwrap_or(dir);
    eprintln!("Cleaning cache directory: {}", dir.display());
    let r = pallet_image::clean::clean_cache(&dir, a.dry_run)
        .with_context(|| format!("cleaning the cache {}", dir.display()))?;
    if r.missing {
        eprintln!("Cache directory does not exist, nothing to clean");
        return Ok(ExitCode::SUCCESS);
    }
    eprintln!(
        "Cache size: {} ({} entries)",
        pallet_image::clean::human_bytes(r.bytes),
        r.entries
    );
    if a.dry_run {
        eprintln!("Dry run mode: cache directory will not be deleted");
    } else {
        eprintln!("Cache directory cleaned successfully");
    }
    Ok(ExitCode::SUCCESS)
}

#[derive(Args)]
pub struct ErofsArgs {
    /// mount, umount or ls, then their arguments (taken so that apko's command lines parse).
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    args: Vec<String>,
}

/// pallet builds only tar layers, so there is no EROFS image for it to mount or list; the
/// command is taken (so scripts get a clear line, not a parse error) and exits 2.
fn erofs_cmd(a: ErofsArgs) -> anyhow::Result<ExitCode> {
    let sub = a.args.first().map(String::as_str).unwrap_or("");
    eprintln!(
        "error: apko erofs {sub}: pallet has no EROFS support (its images have tar layers only); \
         to look inside an image use `apko build-minirootfs CONFIG rootfs.tar.gz` and `tar -tzf`, \
         or mount an EROFS file with erofs-utils (`mount -t erofs` or `erofsfuse`)"
    );
    Ok(ExitCode::from(2))
}

/// `apko …`: the same commands under apko's names.
#[derive(Parser)]
#[command(name = "apko", version, about = "pallet's apko-compatible face")]
struct ApkoCli {
    /// Change to this folder before anything else (relative paths are read from there).
    #[arg(short = 'C', long, global = true)]
    workdir: Option<PathBuf>,
    /// Log level: debug, info (default), warn, error.
    #[arg(long, global = true)]
    log_level: Option<String>,
    #[command(subcommand)]
    command: ApkoCommand,
}

#[derive(Subcommand)]
enum ApkoCommand {
    /// Build an image from a YAML configuration file (a docker-archive tarball, or an OCI
    /// layout when the output is an existing folder).
    #[command(
        after_help = "Examples:\n  apko build apko.yaml myimage:latest image.tar\n  apko build apko.yaml myimage:latest layout/ --arch x86_64,aarch64"
    )]
    Build(BuildArgs),
    /// Build an image and push it to registries; prints REF@DIGEST.
    #[command(
        after_help = "Examples:\n  apko publish apko.yaml registry.example/team/app:1.0 registry.example/team/app:latest"
    )]
    Publish(PublishArgs),
    /// Log in to a registry (credentials in docker's config.json).
    #[command(
        after_help = "Examples:\n  apko login registry.example -u alice --password-stdin < token.txt"
    )]
    Login(LoginArgs),
    /// Build a minimal root filesystem (.tar.gz) of one architecture.
    #[command(
        after_help = "Examples:\n  apko build-minirootfs apko.yaml rootfs.tar.gz --build-arch x86_64"
    )]
    BuildMinirootfs(MinirootfsArgs),
    /// Resolve every architecture and write the lock file (CONFIG.lock.json).
    #[command(
        after_help = "Examples:\n  apko lock apko.yaml\n  apko lock apko.yaml --output my.lock.json"
    )]
    Lock(LockArgs),
    /// Deprecated: the same as `lock`, but the file is CONFIG.resolved.json.
    #[command(
        hide = true,
        after_help = "Examples:\n  apko resolve apko.yaml   # prefer: apko lock apko.yaml"
    )]
    Resolve(LockArgs),
    /// Empty the package and index cache (--cache-dir, default pallet's cache folder).
    #[command(
        after_help = "Examples:\n  apko clean\n  apko clean --dry-run              # only print the size\n  apko clean --cache-dir /tmp/apko-cache"
    )]
    Clean(CleanArgs),
    /// EROFS images (mount, umount, ls): not supported by pallet; the command says what to use.
    #[command(
        after_help = "Examples:\n  apko erofs ls image.erofs   # pallet: exits 2 with a note; use `apko build-minirootfs` and tar -tzf"
    )]
    Erofs(ErofsArgs),
    /// Print the configuration after includes and defaults, as YAML.
    #[command(after_help = "Examples:\n  apko show-config apko.yaml")]
    ShowConfig(ShowArgs),
    /// Show the packages and versions a configuration would install, one line each.
    #[command(after_help = SHOW_PACKAGES_HELP_APKO)]
    ShowPackages(ShowPackagesArgs),
    /// Output a digraph showing the resolved dependencies of an apko config.
    #[command(after_help = DOT_EXAMPLES_APKO)]
    Dot(DotArgs),
    /// Build a cpio file (newc, as an initramfs) from a YAML configuration file.
    #[command(after_help = CPIO_EXAMPLES_APKO)]
    BuildCpio(CpioArgs),
    /// Discover and install keys for all repositories (ROOT/etc/apk/repositories ->
    /// ROOT/etc/apk/keys; ROOT is / unless --root says otherwise).
    #[command(after_help = INSTALL_KEYS_EXAMPLES_APKO)]
    InstallKeys(InstallKeysArgs),
    /// Print the version (as apko's release-utils does; --json for JSON).
    #[command(after_help = "Examples:\n  apko version\n  apko version --json")]
    Version(VersionArgs),
    /// Print a shell completion script for this command.
    #[command(
        after_help = "Examples:\n  apko completion bash > /etc/bash_completion.d/apko\n  apko completion fish > ~/.config/fish/completions/apko.fish"
    )]
    Completion { shell: clap_complete::Shell },
}

pub fn run_apko_face() -> anyhow::Result<ExitCode> {
    let cli = ApkoCli::parse();
    crate::log_level(&cli.log_level)?;
    if let Some(d) = &cli.workdir {
        std::env::set_current_dir(d)
            .with_context(|| format!("-C {}: cannot change to that folder", d.display()))?;
    }
    match cli.command {
        ApkoCommand::Build(a) => build_cmd(a),
        ApkoCommand::Publish(a) => publish_cmd(a),
        ApkoCommand::Login(a) => login_cmd(a),
        ApkoCommand::BuildMinirootfs(a) => minirootfs_cmd(a),
        ApkoCommand::Lock(a) => lock_cmd(a),
        ApkoCommand::Resolve(a) => {
            eprintln!(
                "warning: `apko resolve` is deprecated, use `apko lock` (writing .resolved.json as apko did)"
            );
            lock_cmd_to(a, "resolved.json")
        }
        ApkoCommand::Clean(a) => clean_cmd(a),
        ApkoCommand::Erofs(a) => erofs_cmd(a),
        ApkoCommand::ShowConfig(a) => show_config(a),
        ApkoCommand::ShowPackages(a) => show_packages(a),
        ApkoCommand::Dot(a) => dot_cmd(a),
        ApkoCommand::BuildCpio(a) => cpio_cmd(a),
        ApkoCommand::InstallKeys(a) => install_keys_cmd(a),
        ApkoCommand::Version(a) => version_cmd(a),
        ApkoCommand::Completion { shell } => crate::completion::<ApkoCli>(shell, "apko"),
    }
}

fn cache_dir(c: &CommonArgs) -> PathBuf {
    default_cache(&c.cache_dir)
}

pub(crate) fn default_cache(given: &Option<PathBuf>) -> PathBuf {
    if let Some(d) = given {
        return d.clone();
    }
    if let Some(x) = std::env::var_os("XDG_CACHE_HOME").filter(|x| !x.is_empty()) {
        return PathBuf::from(x).join("pallet");
    }
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/tmp"));
    home.join(".cache/pallet")
}

fn archs(c: &CommonArgs, cfg: &config::ImageConfiguration) -> anyhow::Result<Vec<Arch>> {
    Ok(image::select_archs(&c.arch, cfg, &stderr_line)?)
}

/// Where the library's warnings and progress lines go: stderr, as one line each.
fn stderr_line(line: &str) {
    eprintln!("{line}");
}

fn options(c: &CommonArgs) -> BuildOptions {
    BuildOptions {
        cache_dir: cache_dir(c),
        extra_keyring: c.keyring_append.clone(),
        extra_repositories: c.repository_append.clone(),
        extra_build_repositories: c.build_repository_append.clone(),
        extra_packages: c.package_append.clone(),
        ignore_signatures: c.ignore_signatures,
        offline: c.offline,
        insecure_keys: c.insecure_keyring,
        include_paths: c.include_paths.clone(),
        mirrors: c
            .mirror
            .iter()
            .filter_map(|m| {
                m.split_once('=')
                    .map(|(a, b)| (a.to_string(), b.to_string()))
            })
            .collect(),
        level: pallet_image::layers::DEFAULT_LEVEL,
        ..BuildOptions::default()
    }
}

/// `--build-date` as seconds (the melange face takes it too).
pub(crate) fn parse_date(s: &str) -> anyhow::Result<u64> {
    Ok(image::parse_date(s)?)
}

/// The build date: SOURCE_DATE_EPOCH, else `--build-date`, else none (the newest package's).
/// Read here, as the library reads no environment.
pub(crate) fn build_epoch(build_date: &Option<String>) -> anyhow::Result<Option<u64>> {
    match std::env::var("SOURCE_DATE_EPOCH") {
        Ok(v) if !v.trim().is_empty() => Ok(Some(v.trim().parse().with_context(|| {
            format!("SOURCE_DATE_EPOCH='{v}' is not a whole number of seconds")
        })?)),
        _ => build_date.as_deref().map(parse_date).transpose(),
    }
}

/// The build request that `build` and `publish` flags make.
fn request(config_path: &Path, tag: &str, f: &BuildFlags) -> anyhow::Result<ImageRequest> {
    check_format(&f.format)?;
    f.limits.apply()?;
    Ok(ImageRequest {
        config_path: config_path.to_path_buf(),
        include_paths: f.common.include_paths.clone(),
        tag: tag.to_string(),
        archs: f.common.arch.clone(),
        options: options(&f.common),
        epoch: build_epoch(&f.build_date)?,
        annotations: f.annotations.clone(),
        lockfile: f.lockfile.clone(),
        vcs: f.vcs,
        sbom: f.sbom,
        sbom_formats: f.sbom_formats.clone(),
    })
}

/// Build every architecture of `config_path` as `build` and `publish` flags say, in a work
/// folder under `work_parent`.
fn build_all(
    config_path: &Path,
    tag: &str,
    f: &BuildFlags,
    work_parent: &Path,
) -> anyhow::Result<BuiltImage> {
    let req = request(config_path, tag, f)?;
    Ok(image::build_image(&req, work_parent, &stderr_line)?)
}

/// Write an archive to `out` atomically, gzip-compressed when `gzip` (with no time in the gzip
/// header, so equal trees give equal bytes): a failed or killed write leaves the old file, if
/// any, and no partial one. Returns what `fill` returned.
fn write_archive<T>(
    out: &Path,
    gzip: bool,
    fill: impl FnOnce(&mut dyn std::io::Write) -> std::io::Result<T>,
) -> anyhow::Result<T> {
    use std::io::Write as _;
    let mut made = None;
    pallet_atomic::write_with(out, |t| {
        let mut w = std::io::BufWriter::new(t);
        let v = if gzip {
            let mut gz = flate2::GzBuilder::new()
                .mtime(0)
                .write(&mut w, flate2::Compression::new(6));
            let v = fill(&mut gz)?;
            gz.finish()?;
            v
        } else {
            fill(&mut w)?
        };
        w.flush()?;
        made = Some(v);
        Ok(())
    })
    .with_context(|| format!("writing {}", out.display()))?;
    Ok(made.expect("write_with calls fill before it succeeds"))
}

fn build_cmd(a: BuildArgs) -> anyhow::Result<ExitCode> {
    if std::env::var_os("PALLET_TIMINGS").is_some() {
        pallet_image::timing::enable();
    }
    let out = &a.output;
    let parent = pallet_image::uptodate::work_parent(out);
    let req = request(&a.config, &a.tag, &a.flags)?;
    let cache = cache_dir(&a.flags.common);
    let outputs = pallet_image::uptodate::Outputs {
        image: out.clone(),
        sbom_dir: a.flags.sbom.then(|| {
            a.flags
                .sbom_path
                .clone()
                .unwrap_or_else(|| PathBuf::from("."))
        }),
    };
    // Nothing changed since the last build of this output: say what it said, touch nothing.
    let fingerprint = pallet_image::uptodate::fingerprint(&req);
    pallet_image::timing::mark("fingerprint");
    if let Some(fp) = &fingerprint
        && let Some(done) = pallet_image::uptodate::unchanged(&cache, fp, &outputs)
    {
        for l in &done.lines {
            eprintln!("{l}");
        }
        println!("{}", done.digest);
        pallet_image::timing::mark("up to date");
        return Ok(ExitCode::SUCCESS);
    }
    let lines = std::cell::RefCell::new(vec![]);
    let b = image::build_image(&req, parent, &|l: &str| {
        stderr_line(l);
        lines.borrow_mut().push(l.to_string());
    })?;
    if out.is_dir() {
        b.write_layout(out, &a.tag)?;
    } else {
        b.write_tarball(out, &a.tag, Some(&cache))?;
    }
    if let Some(dir) = &outputs.sbom_dir {
        b.write_sboms(dir)?;
    }
    if let Some(fp) = &fingerprint {
        b.remember(&cache, fp, &outputs, &lines.borrow());
    }
    pallet_image::timing::mark("outputs written");
    println!("{}", b.index_digest());
    Ok(ExitCode::SUCCESS)
}

fn publish_cmd(a: PublishArgs) -> anyhow::Result<ExitCode> {
    let first = a.tags.first().cloned().unwrap_or_default();
    let b = build_all(&a.config, &first, &a.flags, &std::env::temp_dir())?;
    if a.local {
        // apko's --local: into the Docker daemon instead of a registry; no push, no SBOMs.
        let socket =
            pallet_image::docker::socket_from_host(std::env::var("DOCKER_HOST").ok().as_deref())?;
        let (local, lines) = b.load_local(&socket, &a.tags, Arch::host())?;
        for l in lines {
            eprintln!("{l}");
        }
        eprintln!("loaded {local}, tagged {}", a.tags.join(", "));
        // As apko: stdout names the local image it loaded.
        println!("{local}");
        return Ok(ExitCode::SUCCESS);
    }
    // apko keeps SBOMs only when --sbom-path is set; pallet also attaches them as referrers.
    if let Some(dir) = &a.flags.sbom_path {
        b.write_sboms(dir)?;
    }
    let mut refs = vec![];
    // The first repository pushed to on each registry: later repositories mount from it.
    let mut first_repo: std::collections::BTreeMap<String, String> = Default::default();
    for t in &a.tags {
        let r = pallet_registry::Reference::parse(t)?;
        let mut client = pallet_registry::Client::new(r.clone(), &a.insecure_registry);
        let mount = first_repo.get(&r.registry).cloned();
        let pushed = pallet_image::publish::push(
            &mut client,
            b.images(),
            b.index(),
            b.sboms(),
            mount.as_deref(),
        )
        .with_context(|| format!("publishing to {t}"))?;
        first_repo
            .entry(r.registry.clone())
            .or_insert_with(|| r.repository.clone());
        // apko's --image-refs names the first tag's repository only: its images, then its
        // index, each by digest.
        if refs.is_empty() {
            let base = format!("{}/{}", r.registry, r.repository);
            for (_, digest) in &pushed.images {
                refs.push(format!("{base}@{digest}"));
            }
            refs.push(format!("{base}@{}", b.index_digest()));
        }
        let s = &client.stats;
        eprintln!(
            "pushed {t}: {} blobs uploaded, {} already there, {} mounted, {} manifests; SBOMs as {}",
            s.blobs_uploaded,
            s.blobs_skipped,
            s.blobs_mounted,
            s.manifests_pushed,
            if s.referrers_api == Some(true) {
                "referrers"
            } else {
                "sha256-<digest> referrer tags"
            }
        );
    }
    if let Some(p) = &a.image_refs {
        let mut text = String::new();
        for r in &refs {
            text.push_str(r);
            text.push('\n');
        }
        pallet_keys::write_atomic(p, text.as_bytes(), 0o644)?;
    }
    // As apko: one line on stdout, the first tag's repository at the index digest, so that
    // `--image=$(apko publish …)` works whatever the number of tags.
    if let Some(index_ref) = refs.last() {
        println!("{index_ref}");
    }
    Ok(ExitCode::SUCCESS)
}

fn show_config(a: ShowArgs) -> anyhow::Result<ExitCode> {
    let c = &a.common;
    let unused: Vec<&str> = [
        (!c.keyring_append.is_empty(), "-k/--keyring-append"),
        (!c.repository_append.is_empty(), "-r/--repository-append"),
        (
            !c.build_repository_append.is_empty(),
            "-b/--build-repository-append",
        ),
        (!c.package_append.is_empty(), "-p/--package-append"),
        (!c.arch.is_empty(), "--arch"),
        (c.cache_dir.is_some(), "--cache-dir"),
        (c.offline, "--offline"),
        (c.ignore_signatures, "--ignore-signatures"),
        (!c.mirror.is_empty(), "--mirror"),
        (c.insecure_keyring, "--insecure-keyring"),
    ]
    .into_iter()
    .filter_map(|(given, flag)| given.then_some(flag))
    .collect();
    if !unused.is_empty() {
        eprintln!(
            "note: {} change how an image is built, not the configuration show-config prints",
            unused.join(", ")
        );
    }
    let loaded = load_config(&a.config, &a.common.include_paths)?;
    let y = serde_saphyr::to_string(&loaded.config).context("rendering YAML")?;
    crate::emit(&y)?;
    Ok(ExitCode::SUCCESS)
}

fn show_packages(a: ShowPackagesArgs) -> anyhow::Result<ExitCode> {
    use pallet_image::template::{Row, Template, format_template};
    // The format is checked before anything is resolved, as apko parses it first.
    let tmpl = Template::parse(format_template(&a.format)).map_err(anyhow::Error::msg)?;
    let loaded = load_config(&a.config, &a.common.include_paths)?;
    let archs = archs(&a.common, &loaded.config)?;
    let opts = options(&a.common);
    for arch in &archs {
        if archs.len() > 1 {
            eprintln!("packages for {}", arch.apk());
        }
        let (repos, picks, _, _) = build::resolve(&loaded.config, *arch, &opts)?;
        let mut text = String::new();
        for (r, p) in &picks {
            let info = &repos[*r].packages[*p];
            let source = format!(
                "{}/{}/{}",
                pallet_repo::redact(&repos[*r].url),
                arch.apk(),
                info.file_name()
            );
            let row = Row {
                name: &info.name,
                version: &info.version,
                source: &source,
            };
            text.push_str(&tmpl.render(&row).map_err(anyhow::Error::msg)?);
            text.push('\n');
        }
        crate::emit(&text)?;
    }
    Ok(ExitCode::SUCCESS)
}

fn dot_cmd(a: DotArgs) -> anyhow::Result<ExitCode> {
    if a.web {
        bail!(
            "--web serves the graph as SVG to a browser, which pallet does not do; render it with Graphviz instead: `apko dot {} | dot -Tsvg > graph.svg`",
            a.config.display()
        );
    }
    if a.registry_explorer != "apk.dag.dev" {
        eprintln!(
            "note: -e/--registry-explorer has no effect: only --web links to it, and pallet does not serve --web"
        );
    }
    let loaded = load_config(&a.config, &a.common.include_paths)?;
    let cfg = &loaded.config;
    // apko draws the first architecture.
    let arch = archs(&a.common, cfg)?[0];
    let opts = options(&a.common);
    let requested: Vec<String> = cfg
        .contents
        .packages
        .iter()
        .chain(&opts.extra_packages)
        .cloned()
        .collect();
    let (resolved, problems) = match build::resolve(cfg, arch, &opts) {
        Ok((repos, picks, _, _)) => (
            picks
                .iter()
                .map(|(r, p)| repos[*r].packages[*p].clone())
                .collect::<Vec<_>>(),
            vec![],
        ),
        // A resolver failure is drawn, as apko draws it; anything else is an error.
        Err(build::BuildError::Solve(e)) => {
            eprintln!("error: failed to get package list for image: {e}");
            (vec![], e.problems.iter().map(|p| p.to_string()).collect())
        }
        Err(e) => return Err(e.into()),
    };
    let refs: Vec<&pallet_apk_types::PackageInfo> = resolved.iter().collect();
    let text = pallet_image::dot::render(&pallet_image::dot::Graph {
        config: &a.config.to_string_lossy(),
        requested: &requested,
        packages: &refs,
        problems: &problems,
        spanning_tree: a.spanning_tree,
    });
    crate::emit(&format!("{text}\n"))?;
    Ok(ExitCode::SUCCESS)
}

fn cpio_cmd(a: CpioArgs) -> anyhow::Result<ExitCode> {
    a.limits.apply()?;
    let loaded = load_config(&a.config, &a.common.include_paths)?;
    let arch = single_arch(&a.build_arch, &a.common.arch)?;
    if !loaded.config.archs.is_empty() {
        eprintln!(
            "warning: archs in the config are ignored; building {}",
            arch.apk()
        );
    }
    if a.sbom_path.is_some() {
        eprintln!("note: --sbom-path: build-cpio writes no SBOM (apko's does not either)");
    }
    let mut opts = options(&a.common);
    opts.epoch = build_epoch(&a.build_date)?;
    let w = pallet_image::initramfs::write(&loaded.config, arch, &opts, &a.output)?;
    eprintln!(
        "wrote {} ({} packages, {} entries, {})",
        a.output.display(),
        w.packages,
        w.entries,
        arch.apk()
    );
    Ok(ExitCode::SUCCESS)
}

fn install_keys_cmd(a: InstallKeysArgs) -> anyhow::Result<ExitCode> {
    let mut client = pallet_repo::Client::new(default_cache(&a.cache_dir));
    client.offline = a.offline;
    client.insecure_keys = a.insecure_keyring;
    client.mirrors = a
        .mirror
        .iter()
        .filter_map(|m| {
            m.split_once('=')
                .map(|(x, y)| (x.to_string(), y.to_string()))
        })
        .collect();
    let r = pallet_repo::install_keys(&client, &a.root)?;
    for n in &r.notes {
        eprintln!("note: {n}");
    }
    for w in &r.written {
        eprintln!("wrote {}", w.display());
    }
    for e in &r.errors {
        eprintln!("error: {e}");
    }
    if !r.errors.is_empty() {
        bail!(
            "key discovery failed for {} of the repositories in {}",
            r.errors.len(),
            a.root.join("etc/apk/repositories").display()
        );
    }
    if r.written.is_empty() {
        eprintln!(
            "no keys discovered for the repositories in {}",
            a.root.join("etc/apk/repositories").display()
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// `apko version`: the fields and layout of sigs.k8s.io/release-utils, which apko prints
/// (the ASCII-art name, the name, then aligned fields), for pallet's build.
fn version_cmd(a: VersionArgs) -> anyhow::Result<ExitCode> {
    let goarch = match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        "powerpc64" => "ppc64le",
        "loongarch64" => "loong64",
        other => other,
    };
    let fields = [
        ("gitVersion", format!("v{}", env!("CARGO_PKG_VERSION"))),
        (
            "gitCommit",
            option_env!("PALLET_GIT_COMMIT")
                .unwrap_or("unknown")
                .to_string(),
        ),
        (
            "gitTreeState",
            option_env!("PALLET_GIT_TREE_STATE")
                .unwrap_or("unknown")
                .to_string(),
        ),
        (
            "buildDate",
            option_env!("PALLET_BUILD_DATE")
                .unwrap_or("unknown")
                .to_string(),
        ),
        ("goVersion", "none (pallet is written in Rust)".to_string()),
        ("compiler", "rustc".to_string()),
        ("platform", format!("{}/{goarch}", std::env::consts::OS)),
    ];
    if a.json {
        let mut m = serde_json::Map::new();
        for (k, v) in &fields {
            m.insert(k.to_string(), json!(v));
        }
        crate::emit(&format!("{}\n", serde_json::to_string_pretty(&m)?))?;
        return Ok(ExitCode::SUCCESS);
    }
    // go-figure's "standard" font, as release-utils draws the command's name.
    let mut out = String::from(
        "     _      ____    _  __   ___\n    / \\    |  _ \\  | |/ /  / _ \\\n   / _ \\   | |_) | | ' /  | | | |\n  / ___ \\  |  __/  | . \\  | |_| |\n /_/   \\_\\ |_|     |_|\\_\\  \\___/\napko\n\n",
    );
    for (k, v) in &fields {
        let mut key = k.to_string();
        key[..1].make_ascii_uppercase();
        out.push_str(&format!("{:<15}{v}\n", format!("{key}:")));
    }
    out.push('\n');
    crate::emit(&out)?;
    Ok(ExitCode::SUCCESS)
}

#[derive(Args)]
#[command(
    after_help = "Examples:\n  pallet login registry.example -u alice --password-stdin < token.txt"
)]
pub struct LoginArgs {
    registry: String,
    #[arg(short = 'u', long)]
    username: String,
    #[arg(short = 'p', long)]
    password: Option<String>,
    #[arg(long)]
    password_stdin: bool,
}

pub fn login_cmd(a: LoginArgs) -> anyhow::Result<ExitCode> {
    let password = match (&a.password, a.password_stdin) {
        (Some(p), false) => p.clone(),
        (None, true) => {
            let mut s = String::new();
            std::io::Read::read_to_string(&mut std::io::stdin(), &mut s)?;
            s.trim_end_matches(['\n', '\r']).to_string()
        }
        _ => bail!("give exactly one of --password or --password-stdin"),
    };
    let path = pallet_registry::login(
        &a.registry,
        &pallet_registry::Credentials {
            username: a.username.clone(),
            password,
        },
    )?;
    eprintln!(
        "logged in to {} (credentials in {})",
        a.registry,
        path.display()
    );
    Ok(ExitCode::SUCCESS)
}

/// Load a configuration and show its deprecation warnings on stderr.
fn load_config(path: &Path, include_paths: &[PathBuf]) -> anyhow::Result<config::Loaded> {
    Ok(image::load_config(path, include_paths, &stderr_line)?)
}
