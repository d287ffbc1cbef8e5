//! `apko clean`: empty the download cache. Only entries inside the cache folder are removed;
//! symbolic links are deleted as links and never followed, so nothing outside the folder is
//! touched.

use std::fs;
use std::io;
use std::path::Path;

/// What a clean found (and, unless it was a dry run, removed).
#[derive(Debug, Default, PartialEq, Eq)]
pub struct CleanReport {
    /// Bytes held by regular files (symlinks count as their own size, not their target's).
    pub bytes: u64,
    /// Entries (files, links, folders) below the cache folder.
    pub entries: u64,
    /// The folder did not exist: nothing to clean.
    pub missing: bool,
}

/// Sizes up `dir` and, unless `dry_run`, removes everything in it (the folder itself stays).
/// A missing folder is an empty report. `dir` must be a real folder, not a link to one.
pub fn clean_cache(dir: &Path, dry_run: bool) -> io::Result<CleanReport> {
    let meta = match fs::symlink_metadata(dir) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Ok(CleanReport {
                missing: true,
                ..Default::default()
            });
        }
        Err(e) => return Err(e),
    };
    if !meta.is_dir() {
        return Err(io::Error::other(format!(
            "{} is not a folder (a symbolic link or a file): give the cache folder itself",
            dir.display()
        )));
    }
    let mut report = CleanReport::default();
    walk(dir, dry_run, &mut report)?;
    Ok(report)
}

fn walk(dir: &Path, dry_run: bool, report: &mut CleanReport) -> io::Result<()> {
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let path = entry.path();
        // symlink_metadata: a link is an entry of its own, never the thing it points at.
        let meta = fs::symlink_metadata(&path)?;
        report.entries += 1;
        if meta.is_dir() {
            walk(&path, dry_run, report)?;
            if !dry_run {
                fs::remove_dir(&path)?;
            }
        } else {
            report.bytes += meta.len();
            if !dry_run {
                fs::remove_file(&path)?;
            }
        }
    }
    Ok(())
}

/// Bytes as apko prints them: `512 B`, `1.5 KB`, `2.0 MB` (powers of 1024).
pub fn human_bytes(n: u64) -> String {
    if n < 1024 {
        return format!("{n} B");
    }
    let mut div = 1024u64;
    let mut exp = 0;
    let mut q = n / 1024;
    while q >= 1024 {
        div *= 1024;
        exp += 1;
        q /= 1024;
    }
    format!("{:.1} {}B", n as f64 / div as f64, &"KMGTPE"[exp..exp + 1])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn removes_contents_but_not_link_targets() {
        let t = tempfile::tempdir().unwrap();
        let cache = t.path().join("cache");
        let outside = t.path().join("outside");
        fs::create_dir_all(cache.join("a/b")).unwrap();
        fs::create_dir_all(&outside).unwrap();
        fs::write(cache.join("a/b/x"), b"12345").unwrap();
        fs::write(outside.join("keep"), b"k").unwrap();
        std::os::unix::fs::symlink(&outside, cache.join("link")).unwrap();

        let dry = clean_cache(&cache, true).unwrap();
        assert_eq!(dry.entries, 4);
        assert!(cache.join("a/b/x").exists());

        clean_cache(&cache, false).unwrap();
        assert!(cache.is_dir());
        assert_eq!(fs::read_dir(&cache).unwrap().count(), 0);
        assert!(outside.join("keep").exists());
    }

    #[test]
    fn missing_folder_is_empty_and_sizes_print_like_apko() {
        let t = tempfile::tempdir().unwrap();
        assert_eq!(
            clean_cache(&t.path().join("none"), false).unwrap(),
            CleanReport {
                missing: true,
                ..Default::default()
            }
        );
        assert!(!clean_cache(t.path(), true).unwrap().missing);
        assert_eq!(human_bytes(512), "512 B");
        assert_eq!(human_bytes(1536), "1.5 KB");
        assert_eq!(human_bytes(2 * 1024 * 1024), "2.0 MB");
    }
}
