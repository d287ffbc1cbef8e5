//! apko's `--vcs`: when the configuration names no `vcs-url`, probe git for the folder holding
//! the configuration: the `origin` remote's URL (credentials removed) and `@` the HEAD commit,
//! which become the image's `org.opencontainers.image.source` and `.revision` annotations.

use std::path::Path;
use std::process::{Command, Stdio};

/// `URL@SHA` for the git checkout holding `dir`, or `None` when it is not in one, has no
/// `origin` remote, or git is not installed (apko probes silently too).
pub fn probe(dir: &Path) -> Option<String> {
    let git = |args: &[&str]| -> Option<String> {
        let o = Command::new("git")
            .arg("-C")
            .arg(dir)
            .args(args)
            .stdin(Stdio::null())
            .stderr(Stdio::null())
            .output()
            .ok()?;
        let s = String::from_utf8_lossy(&o.stdout).trim().to_string();
        (o.status.success() && !s.is_empty()).then_some(s)
    };
    let url = git(&["remote", "get-url", "origin"])?;
    let sha = git(&["rev-parse", "HEAD"])?;
    // A commit is hex; anything else (a broken checkout) is not worth an annotation.
    if !sha.chars().all(|c| c.is_ascii_hexdigit()) {
        return None;
    }
    Some(format!("{}@{sha}", strip_userinfo(&url)))
}

/// The URL without `user:password@` (a token in a remote URL must not reach an image).
pub fn strip_userinfo(url: &str) -> String {
    match url.split_once("://") {
        Some((scheme, rest)) => {
            let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
            let host = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
            if path.is_empty() {
                format!("{scheme}://{host}")
            } else {
                format!("{scheme}://{host}/{path}")
            }
        }
        None => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_are_removed() {
        assert_eq!(
            strip_userinfo("https://x-access-token:ghp_secret@github.com/acme/app.git"),
            "https://github.com/acme/app.git"
        );
        assert_eq!(
            strip_userinfo("git@github.com:acme/app.git"),
            "git@github.com:acme/app.git"
        );
    }

    #[test]
    fn probes_a_real_checkout() {
        let d = tempfile::tempdir().unwrap();
        let run = |args: &[&str]| {
            Command::new("git")
                .arg("-C")
                .arg(d.path())
                .args(args)
                .env("GIT_AUTHOR_NAME", "t")
                .env("GIT_AUTHOR_EMAIL", "t@example.invalid")
                .env("GIT_COMMITTER_NAME", "t")
                .env("GIT_COMMITTER_EMAIL", "t@example.invalid")
                .output()
                .map(|o| o.status.success())
                .unwrap_or(false)
        };
        if !run(&["init", "-q"]) {
            eprintln!("SKIPPED: git is not installed");
            return;
        }
        assert_eq!(probe(d.path()), None, "no origin yet");
        assert!(run(&[
            "remote",
            "add",
            "origin",
            "https://u:tok@example.invalid/r.git"
        ]));
        assert!(run(&["commit", "-q", "--allow-empty", "-m", "x"]));
        let v = probe(d.path()).unwrap();
        let (url, sha) = v.rsplit_once('@').unwrap();
        assert_eq!(url, "https://example.invalid/r.git");
        assert_eq!(sha.len(), 40);
    }
}
