//! `pallet`: the command-line face of the toolkit.
//!
//! The same binary answers as `pallet`, and, when reached under the name `apko` or `melange`
//! (a symlink or a copy), as a drop-in for those tools, so existing Makefiles keep working.

mod apk_cmds;
mod image_cmds;
mod melange_build;
mod melange_cmds;
mod worker_cmd;
mod workspace_cmds;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "pallet",
    version,
    about = "Build minimal, reproducible, signed container images and APK packages"
)]
struct Cli {
    /// Log level, as apko and melange take it: debug, info (default), warn, error.
    #[arg(long, global = true)]
    log_level: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Build every recipe and image of a workspace that changed, in order, in parallel.
    Build(workspace_cmds::BuildArgs),
    /// Run the test: pipelines of a workspace's packages (building what they need first).
    Test(workspace_cmds::TestArgs),
    /// Build, compile, lint and test APK packages from melange YAML files.
    #[command(subcommand)]
    Pkg(melange_build::PkgCommand),
    /// Build OCI images from apko YAML files.
    #[command(subcommand)]
    Image(Box<image_cmds::ImageCommand>),
    /// Store registry credentials in docker's config.json.
    Login(image_cmds::LoginArgs),
    /// Compare or check APK versions (`-t A B` prints <, = or >).
    Version(apk_cmds::VersionArgs),
    /// Verify packages and indexes against a keyring.
    Verify(apk_cmds::VerifyArgs),
    /// Show a package's metadata and files.
    Info(apk_cmds::InfoArgs),
    /// Generate an RSA signing key pair.
    Keygen(apk_cmds::KeygenArgs),
    /// Sign (or re-sign) packages in place.
    Sign(apk_cmds::SignArgs),
    /// Make a package straight from a folder.
    Mkpkg(apk_cmds::MkpkgArgs),
    /// Write a (signed) APKINDEX.tar.gz for packages.
    Index(apk_cmds::IndexArgs),
    /// Sign an existing APKINDEX.tar.gz.
    SignIndex(apk_cmds::SignIndexArgs),
    /// Serve a remote-execution scheduler (BuildGrid's Bots API) as a build worker.
    Worker(worker_cmd::WorkerArgs),
    /// Build one workspace node from an action's input root (what workers run).
    #[command(hide = true)]
    BuildNode(worker_cmd::BuildNodeArgs),
}

/// `SOURCE_DATE_EPOCH`, the one clock every generated timestamp comes from (0 when unset, as in
/// apko, so that builds are reproducible by default).
pub(crate) fn source_date_epoch() -> anyhow::Result<u64> {
    match std::env::var("SOURCE_DATE_EPOCH") {
        Ok(v) if !v.trim().is_empty() => v.trim().parse().map_err(|_| {
            anyhow::anyhow!("SOURCE_DATE_EPOCH='{v}' is not a whole number of seconds")
        }),
        _ => Ok(0),
    }
}

/// The APK architecture name of the machine pallet runs on.
pub(crate) fn host_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "x86_64",
        "aarch64" => "aarch64",
        "arm" => "armv7",
        "x86" => "x86",
        "powerpc64" => "ppc64le",
        "s390x" => "s390x",
        "riscv64" => "riscv64",
        "loongarch64" => "loongarch64",
        other => other,
    }
}

/// apko's and melange's `--log-level`. pallet prints the same progress lines at every level:
/// `debug` and `info` change nothing; the quieter levels say once that they do not filter.
pub(crate) fn log_level(level: &Option<String>) -> anyhow::Result<()> {
    let Some(l) = level else { return Ok(()) };
    match l.to_ascii_lowercase().as_str() {
        "debug" | "info" | "" => Ok(()),
        "warn" | "warning" | "error" | "fatal" | "panic" => {
            eprintln!(
                "note: --log-level {l}: pallet's progress lines are not filtered by level yet, so they still print (errors and warnings are marked as such)"
            );
            Ok(())
        }
        other => anyhow::bail!("--log-level {other}: not a level (debug, info, warn, error)"),
    }
}

/// Write command output to stdout. A reader that went away (`| head`) is not an error: the
/// output was simply not wanted any further.
pub(crate) fn emit(text: &str) -> anyhow::Result<()> {
    use std::io::Write as _;
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|_| out.flush()) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        r => Ok(r?),
    }
}

/// Parse and run a `pallet` command line.
pub(crate) fn run_pallet_argv<I, T>(argv: I) -> anyhow::Result<ExitCode>
where
    I: IntoIterator<Item = T>,
    T: Into<std::ffi::OsString> + Clone,
{
    let argv: Vec<std::ffi::OsString> = argv.into_iter().map(Into::into).collect();
    // `pallet pkg build` is answered by the package builder; the other `pkg` commands by the
    // melange compiler's module.
    let cli = Cli::parse_from(argv);
    log_level(&cli.log_level)?;
    match cli.command {
        Command::Build(a) => workspace_cmds::build_cmd(a),
        Command::Test(a) => workspace_cmds::test_cmd(a),
        Command::Pkg(cmd) => melange_build::run_pkg(cmd),
        Command::Image(cmd) => image_cmds::run(*cmd),
        Command::Login(a) => image_cmds::login_cmd(a),
        Command::Version(a) => apk_cmds::version_cmd(a),
        Command::Verify(a) => apk_cmds::verify_cmd(a),
        Command::Info(a) => apk_cmds::info_cmd(a),
        Command::Keygen(a) => apk_cmds::keygen_cmd(a),
        Command::Sign(a) => apk_cmds::sign_cmd(a),
        Command::Mkpkg(a) => apk_cmds::mkpkg_cmd(a),
        Command::Index(a) => apk_cmds::index_cmd(a),
        Command::SignIndex(a) => apk_cmds::sign_index_cmd(a),
        Command::Worker(a) => worker_cmd::worker_cmd(a),
        Command::BuildNode(a) => worker_cmd::build_node_cmd(a),
    }
}

fn main() -> ExitCode {
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    let argv0 = args
        .first()
        .and_then(|a| std::path::Path::new(a).file_name())
        .map(|f| f.to_string_lossy().into_owned())
        .unwrap_or_default();
    let result = match argv0.as_str() {
        "melange" => melange_build::melange_face(&args),
        "apko" => image_cmds::run_apko_face(),
        _ => run_pallet_argv(args),
    };
    match result {
        Ok(code) => code,
        Err(err) => {
            eprintln!("Error: {}", chain_text(&err));
            ExitCode::FAILURE
        }
    }
}

/// The error and its causes, each said once: library errors carry their cause in their own
/// message, and printing the chain after it would repeat the cause.
fn chain_text(err: &anyhow::Error) -> String {
    let mut text = err.to_string();
    for cause in err.chain().skip(1) {
        let c = cause.to_string();
        if !text.contains(&c) {
            text.push_str(": ");
            text.push_str(&c);
        }
    }
    text
}

/// Print the completion script of the command line `C` for `shell`, under the command `name`.
pub(crate) fn completion<C: clap::CommandFactory>(
    shell: clap_complete::Shell,
    name: &str,
) -> anyhow::Result<ExitCode> {
    let mut out = Vec::new();
    clap_complete::generate(shell, &mut C::command(), name, &mut out);
    emit(&String::from_utf8_lossy(&out))?;
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod chain_tests {
    #[test]
    fn causes_already_in_the_message_are_not_repeated() {
        let io = std::io::Error::other("disk full");
        let e = anyhow::Error::new(io).context("writing out.tar");
        assert_eq!(super::chain_text(&e), "writing out.tar: disk full");
        #[derive(Debug)]
        struct Wrapped(std::io::Error);
        impl std::fmt::Display for Wrapped {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                write!(f, "building x: {}", self.0)
            }
        }
        impl std::error::Error for Wrapped {
            fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
                Some(&self.0)
            }
        }
        let e = anyhow::Error::new(Wrapped(std::io::Error::other("no space")));
        assert_eq!(super::chain_text(&e), "building x: no space");
    }
}
