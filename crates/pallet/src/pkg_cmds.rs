//! `pallet pkg …` and the `melange` face. Owned by the melange work (issue 4/5).

use std::process::ExitCode;

use clap::Subcommand;

#[derive(Subcommand)]
pub enum PkgCommand {}

pub fn run(cmd: PkgCommand) -> anyhow::Result<ExitCode> {
    match cmd {}
}

pub fn run_melange_face() -> anyhow::Result<ExitCode> {
    anyhow::bail!("the melange face is not wired yet")
}
