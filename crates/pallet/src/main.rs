//! `pallet`: the command-line face of the toolkit.
//!
//! The same binary answers as `pallet`, and, when reached under the name `apko` or `melange`
//! (a symlink or a copy), as a drop-in for those tools, so existing Makefiles keep working.

mod pkg_cmds;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "pallet", version, about = "Build minimal, reproducible, signed container images and APK packages")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Build APK packages from melange YAML files.
    #[command(subcommand)]
    Pkg(pkg_cmds::PkgCommand),
}

fn main() -> ExitCode {
    let argv0 = std::env::args_os()
        .next()
        .map(|a| {
            std::path::Path::new(&a)
                .file_name()
                .map(|f| f.to_string_lossy().into_owned())
                .unwrap_or_default()
        })
        .unwrap_or_default();
    let result = match argv0.as_str() {
        "melange" => pkg_cmds::run_melange_face(),
        _ => {
            let cli = Cli::parse();
            match cli.command {
                Command::Pkg(cmd) => pkg_cmds::run(cmd),
            }
        }
    };
    match result {
        Ok(code) => code,
        Err(err) => {
            eprintln!("Error: {err:#}");
            ExitCode::FAILURE
        }
    }
}
