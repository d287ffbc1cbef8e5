//! Where a build's progress lines and step output go: the terminal for a single build, or one
//! log file per package when a workspace build runs several at once (their lines would
//! interleave on a shared stderr).

use std::fmt::Display;
use std::io::Write as _;
use std::path::Path;
use std::sync::{Arc, Mutex};

/// A line sink shared by the driver and the sandbox; cloning shares the same file.
#[derive(Clone, Default)]
pub struct Log {
    file: Option<Arc<Mutex<std::fs::File>>>,
}

impl std::fmt::Debug for Log {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.file.is_some() {
            "Log(file)"
        } else {
            "Log(stderr)"
        })
    }
}

impl Log {
    /// Lines to standard error (a build started on its own).
    pub fn stderr() -> Self {
        Self::default()
    }

    /// Lines to `path`, created or truncated.
    pub fn to_file(path: &Path) -> std::io::Result<Self> {
        if let Some(d) = path.parent() {
            std::fs::create_dir_all(d)?;
        }
        let f = std::fs::File::create(path)?;
        Ok(Self {
            file: Some(Arc::new(Mutex::new(f))),
        })
    }

    /// Whether lines go to a file rather than the terminal.
    pub fn is_file(&self) -> bool {
        self.file.is_some()
    }

    pub fn line(&self, s: impl Display) {
        match &self.file {
            // A log that cannot be written must not fail the build it describes.
            Some(f) => {
                let mut f = f.lock().unwrap_or_else(|p| p.into_inner());
                let _ = writeln!(f, "{s}");
            }
            None => eprintln!("{s}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clones_share_one_file() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("sub/x.log");
        let a = Log::to_file(&p).unwrap();
        let b = a.clone();
        a.line("one");
        b.line(format_args!("two {}", 2));
        assert_eq!(std::fs::read_to_string(&p).unwrap(), "one\ntwo 2\n");
        assert!(a.is_file() && !Log::stderr().is_file());
    }
}
