//! The workspace build (`pallet build`): every melange recipe and apko configuration under a
//! folder, found by content, ordered by what each needs, keyed by everything that can change
//! its output, and built (in parallel, each in its own sandbox) only when that key is new.
//!
//! A node's inputs are explicit ([`cache::Inputs`]) and its execution sits behind one
//! function per kind, so that another executor can run the same nodes elsewhere.

pub mod cache;
pub mod discover;
pub mod graph;
mod image;
pub mod load;
pub mod remote;
mod remote_registry;
pub mod report;
pub mod run;
pub mod settings;

pub use load::{Flags, Workspace};
pub use run::{NodeRef, Outcome, RunOptions};

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum WorkspaceError {
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Settings { path: PathBuf, message: String },
    #[error("{file}: {message}")]
    Recipe { file: PathBuf, message: String },
    #[error("recipes that do not compile (fix them, or move them out of the workspace):\n  {}", .0.join("\n  "))]
    Recipes(Vec<String>),
    #[error("{file}: {message}")]
    Image { file: PathBuf, message: String },
    #[error("signing key {path}: {message} (make one with `pallet keygen {path}`)", path = .path.display())]
    Key { path: PathBuf, message: String },
    #[error(
        "no recipe, subpackage, image or file of the workspace is named '{0}' (`pallet build --plan` lists them)"
    )]
    Target(String),
    #[error("{0}")]
    Output(String),
}
