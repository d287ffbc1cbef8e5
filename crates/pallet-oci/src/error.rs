//! Errors carry what failed: the path or blob involved.

use std::path::PathBuf;

/// Errors from this crate.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// I/O on a file failed.
    #[error("{what} {path}: {source}")]
    Io {
        /// What was being done.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A cached gzip segment did not decode or did not match its record.
    #[error("cached gzip segment: {0}")]
    Segment(String),
    /// An I/O error while streaming.
    #[error(transparent)]
    Stream(#[from] std::io::Error),
    /// Invalid input.
    #[error("{0}")]
    Invalid(String),
}

/// Result with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

pub(crate) fn io(
    what: &'static str,
    path: &std::path::Path,
) -> impl FnOnce(std::io::Error) -> Error + use<> {
    let path = path.to_path_buf();
    move |source| Error::Io { what, path, source }
}
