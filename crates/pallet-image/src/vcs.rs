//! apko's `--vcs`: when the configuration names no `vcs-url`, look for the git checkout holding
//! the configuration: the `origin` remote's first URL (credentials removed) and `@` the HEAD
//! commit, which become the image's `org.opencontainers.image.source` and `.revision`
//! annotations.
//!
//! apko reads the repository with go-git, not the `git` program, and so does this module: it
//! reads `.git/config`, `HEAD` and the refs itself. That keeps a build from starting two
//! processes before it has done anything (a few milliseconds each, most of a no-op rebuild),
//! and gives what apko gives where the `git` program would differ (`insteadOf` rewrites, a
//! user's global configuration). As in apko, the search goes from the configuration's folder up
//! to the working directory and no further, and scp-style remotes (`git@host:path`) become
//! `git+ssh://host/path`.

use std::collections::HashMap;
use std::path::{Component, Path, PathBuf};
use std::sync::Mutex;

/// What a repository file may hold before it is not worth reading (a config or a packed-refs
/// file of a large checkout is well under this).
const MAX_FILE: u64 = 16 << 20;

/// What [`probe`] found, by start folder and top folder.
type Seen = HashMap<(PathBuf, PathBuf), Option<String>>;

/// `URL@SHA` for the git checkout holding `dir`, or `None` when there is none between `dir` and
/// the working directory, it has no `origin` remote, or HEAD names no commit (apko probes
/// silently too). Remembered per folder for the life of the process: a build asks twice.
pub fn probe(dir: &Path) -> Option<String> {
    static SEEN: Mutex<Option<Seen>> = Mutex::new(None);
    let start = std::path::absolute(dir).ok()?;
    let top = std::env::current_dir().ok()?;
    let key = (start.clone(), top.clone());
    if let Some(v) = SEEN
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .get_or_insert_with(HashMap::new)
        .get(&key)
    {
        return v.clone();
    }
    let found = probe_between(&start, &top);
    SEEN.lock()
        .unwrap_or_else(|e| e.into_inner())
        .get_or_insert_with(HashMap::new)
        .insert(key, found.clone());
    found
}

/// [`probe`] without the memory: the first checkout from `start` up to `top` (inclusive).
pub fn probe_between(start: &Path, top: &Path) -> Option<String> {
    let mut at = normalize(start);
    let top = normalize(top);
    loop {
        if !at.starts_with(&top) {
            return None;
        }
        if let Some(repo) = Repo::open(&at) {
            // Like apko: the first checkout found answers, even without an origin.
            let url = repo.origin_url()?;
            let sha = repo.head()?;
            return Some(format!("{}@{sha}", normalize_url(&url)));
        }
        if at == top || !at.pop() {
            return None;
        }
    }
}

/// `a/./b/../c` as `a/c`, without touching the filesystem (go's `filepath.Abs` cleans too).
fn normalize(p: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            Component::ParentDir => {
                out.pop();
            }
            Component::CurDir => {}
            c => out.push(c),
        }
    }
    out
}

fn read_small(p: &Path) -> Option<String> {
    use std::io::Read as _;
    let f = std::fs::File::open(p).ok()?;
    if !f.metadata().ok()?.is_file() {
        return None;
    }
    let mut s = String::new();
    f.take(MAX_FILE).read_to_string(&mut s).ok()?;
    Some(s)
}

/// A checkout's git folder, and the common folder holding its config and refs (the same
/// folder, except in a linked worktree).
struct Repo {
    git_dir: PathBuf,
    common: PathBuf,
}

impl Repo {
    /// The repository whose work tree is `dir`: `dir/.git` as a folder, or as a file saying
    /// `gitdir: PATH` (worktrees and submodules).
    fn open(dir: &Path) -> Option<Repo> {
        let dot = dir.join(".git");
        let meta = std::fs::metadata(&dot).ok()?;
        let git_dir = if meta.is_dir() {
            dot
        } else {
            let text = read_small(&dot)?;
            let target = text.lines().next()?.strip_prefix("gitdir:")?.trim();
            let p = Path::new(target);
            if p.is_absolute() {
                p.to_path_buf()
            } else {
                dir.join(p)
            }
        };
        if !git_dir.join("HEAD").is_file() {
            return None;
        }
        let common = match read_small(&git_dir.join("commondir")) {
            Some(c) if !c.trim().is_empty() => {
                let p = Path::new(c.trim());
                if p.is_absolute() {
                    p.to_path_buf()
                } else {
                    git_dir.join(p)
                }
            }
            _ => git_dir.clone(),
        };
        Some(Repo { git_dir, common })
    }

    fn origin_url(&self) -> Option<String> {
        config_value(
            &read_small(&self.common.join("config"))?,
            "remote",
            "origin",
            "url",
        )
    }

    /// The commit HEAD names, following symbolic refs (at most a few levels, as git does).
    fn head(&self) -> Option<String> {
        let mut text = read_small(&self.git_dir.join("HEAD"))?;
        for _ in 0..5 {
            let line = text.lines().next()?.trim().to_string();
            let Some(name) = line.strip_prefix("ref:") else {
                return is_object_id(&line).then_some(line);
            };
            let name = name.trim();
            if !safe_ref(name) {
                return None;
            }
            // Per-worktree refs (HEAD's own) live in the git folder, shared ones in the common
            // folder; a loose ref wins over a packed one.
            text = [&self.git_dir, &self.common]
                .iter()
                .find_map(|d| read_small(&d.join(name)))
                .or_else(|| packed_ref(&read_small(&self.common.join("packed-refs"))?, name))?;
        }
        None
    }
}

/// A ref name that stays inside the git folder: `refs/…`, no `..`, no empty or hidden parts.
fn safe_ref(name: &str) -> bool {
    name.starts_with("refs/")
        && name
            .split('/')
            .all(|c| !c.is_empty() && !c.starts_with('.') && !c.contains('\\'))
        && !name.chars().any(|c| c.is_control())
}

/// A SHA-1 or SHA-256 object name.
fn is_object_id(s: &str) -> bool {
    (s.len() == 40 || s.len() == 64) && s.bytes().all(|b| b.is_ascii_hexdigit())
}

fn packed_ref(text: &str, name: &str) -> Option<String> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.starts_with('^'))
        .find_map(|l| {
            let (sha, n) = l.split_once(' ')?;
            (n.trim() == name).then(|| sha.to_string())
        })
}

/// The first value of `key` in `[section "sub"]` of a git config file. Section and key names
/// are case-insensitive, the subsection is not; values may be quoted and end at a comment.
fn config_value(text: &str, section: &str, sub: &str, key: &str) -> Option<String> {
    let mut inside = false;
    for raw in text.lines() {
        let line = raw.trim();
        if let Some(rest) = line.strip_prefix('[') {
            let Some((head, after)) = rest.split_once(']') else {
                inside = false;
                continue;
            };
            inside = section_is(head, section, sub);
            // `[remote "origin"] url = …` on one line is allowed.
            let after = after.trim();
            if !inside || after.is_empty() {
                continue;
            }
            if let Some(v) = key_value(after, key) {
                return Some(v);
            }
            continue;
        }
        if inside && let Some(v) = key_value(line, key) {
            return Some(v);
        }
    }
    None
}

fn section_is(head: &str, section: &str, sub: &str) -> bool {
    let head = head.trim();
    if let Some((name, rest)) = head.split_once(char::is_whitespace) {
        let quoted = rest.trim();
        let inner = quoted
            .strip_prefix('"')
            .and_then(|q| q.strip_suffix('"'))
            .map(unescape_sub);
        name.eq_ignore_ascii_case(section) && inner.as_deref() == Some(sub)
    } else {
        // The old `[remote.origin]` form (subsection lower-cased by git).
        head.split_once('.')
            .is_some_and(|(n, s)| n.eq_ignore_ascii_case(section) && s.eq_ignore_ascii_case(sub))
    }
}

fn unescape_sub(s: &str) -> String {
    let mut out = String::new();
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            out.extend(chars.next());
        } else {
            out.push(c);
        }
    }
    out
}

/// `key = value` with git's value syntax: quotes, `\"`, `\\`, `\n`, `\t`, comments after `#`
/// or `;` outside quotes.
fn key_value(line: &str, key: &str) -> Option<String> {
    let (k, v) = line.split_once('=')?;
    if !k.trim().eq_ignore_ascii_case(key) {
        return None;
    }
    let mut out = String::new();
    let mut quoted = false;
    let mut chars = v.trim().chars();
    while let Some(c) = chars.next() {
        match c {
            '"' => quoted = !quoted,
            '\\' => match chars.next()? {
                'n' => out.push('\n'),
                't' => out.push('\t'),
                c => out.push(c),
            },
            '#' | ';' if !quoted => break,
            c => out.push(c),
        }
    }
    let out = out.trim_end().to_string();
    // A URL is one line: anything else could not be an annotation.
    (!out.is_empty() && !out.chars().any(|c| c.is_control())).then_some(out)
}

/// The remote URL as apko records it: `user:password@` removed, and a remote Go's URL parser
/// refuses (scp-style `user@host:path`) written as `git+ssh://host/path`.
pub fn normalize_url(url: &str) -> String {
    if go_url_parses(url) {
        strip_userinfo(url)
    } else {
        strip_userinfo(&format!("git+ssh://{}", url.replacen(':', "/", 1)))
    }
}

/// Whether Go's `url.Parse` takes `url`: it refuses a colon in the first path segment when no
/// scheme (a letter, then letters, digits, `+`, `-`, `.`) comes before it.
fn go_url_parses(url: &str) -> bool {
    let Some(colon) = url.find(':') else {
        return true;
    };
    let scheme = &url[..colon];
    let has_scheme = scheme.starts_with(|c: char| c.is_ascii_alphabetic())
        && scheme
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'));
    has_scheme || url.find('/').is_some_and(|slash| slash < colon)
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
    use pallet_test_support::git;

    #[test]
    fn credentials_are_removed() {
        assert_eq!(
            strip_userinfo("https://x-access-token:ghp_secret@github.com/acme/app.git"),
            "https://github.com/acme/app.git"
        );
        assert_eq!(
            normalize_url("git@github.com:acme/app.git"),
            "git+ssh://github.com/acme/app.git"
        );
        assert_eq!(
            normalize_url("https://u:p@example.invalid/r.git"),
            "https://example.invalid/r.git"
        );
        // Go parses these as they are.
        assert_eq!(normalize_url("github.com:acme/app"), "github.com:acme/app");
        assert_eq!(normalize_url("/srv/git/app.git"), "/srv/git/app.git");
        assert_eq!(normalize_url("../app.git"), "../app.git");
    }

    #[test]
    fn probes_a_real_checkout_as_git_sees_it() {
        let d = tempfile::tempdir().unwrap();
        let r = d.path();
        if git(r, &["init", "-q"]).is_err() {
            eprintln!("SKIPPED: git is not installed");
            return;
        }
        assert_eq!(probe_between(r, r), None, "no origin yet");
        git(
            r,
            &[
                "remote",
                "add",
                "origin",
                "https://u:tok@example.invalid/r.git",
            ],
        )
        .unwrap();
        assert_eq!(probe_between(r, r), None, "no commit yet");
        git(r, &["commit", "-q", "--allow-empty", "-m", "x"]).unwrap();
        let head = git(r, &["rev-parse", "HEAD"]).unwrap();
        let want = format!("https://example.invalid/r.git@{head}");
        assert_eq!(probe_between(r, r).as_deref(), Some(want.as_str()));

        // From a subfolder, up to a top above the checkout; not when the top is below it.
        let sub = r.join("a/b");
        std::fs::create_dir_all(&sub).unwrap();
        assert_eq!(probe_between(&sub, r).as_deref(), Some(want.as_str()));
        assert_eq!(probe_between(&sub, &r.join("a")), None);

        // Packed refs (as after `git gc`), then a detached HEAD.
        git(r, &["pack-refs", "--all", "--prune"]).unwrap();
        assert_eq!(probe_between(r, r).as_deref(), Some(want.as_str()));
        git(r, &["commit", "-q", "--allow-empty", "-m", "y"]).unwrap();
        git(r, &["checkout", "-q", "--detach", "HEAD~1"]).unwrap();
        assert_eq!(probe_between(r, r).as_deref(), Some(want.as_str()));

        // A linked worktree: `.git` is a file, the config and refs are in the main checkout.
        let wt = d.path().join("wt");
        git(
            r,
            &["worktree", "add", "-q", "-b", "side", wt.to_str().unwrap()],
        )
        .unwrap();
        let wt_head = git(&wt, &["rev-parse", "HEAD"]).unwrap();
        assert_eq!(
            probe_between(&wt, &wt),
            Some(format!("https://example.invalid/r.git@{wt_head}"))
        );
    }

    #[test]
    fn reads_config_syntax_and_refuses_refs_outside_the_git_folder() {
        let d = tempfile::tempdir().unwrap();
        let g = d.path().join(".git");
        std::fs::create_dir_all(g.join("refs/heads")).unwrap();
        let sha = "0123456789abcdef0123456789abcdef01234567";
        std::fs::write(
            g.join("config"),
            "[core]\n\tbare = false\n[remote \"upstream\"]\n\turl = https://wrong.invalid/x\n\
             [Remote \"origin\"]\n\tURL = \"git@github.com:acme/app.git\" # the fork\n\
             \turl = https://second.invalid/y\n",
        )
        .unwrap();
        std::fs::write(g.join("HEAD"), "ref: refs/heads/main\n").unwrap();
        std::fs::write(g.join("refs/heads/main"), format!("{sha}\n")).unwrap();
        assert_eq!(
            probe_between(d.path(), d.path()),
            Some(format!("git+ssh://github.com/acme/app.git@{sha}"))
        );
        // A HEAD pointing out of the folder is not followed.
        std::fs::write(d.path().join("outside"), format!("{sha}\n")).unwrap();
        std::fs::write(g.join("HEAD"), "ref: refs/../../outside\n").unwrap();
        assert_eq!(probe_between(d.path(), d.path()), None);
        // Nor is a value that would put a second line into an annotation.
        std::fs::write(g.join("HEAD"), format!("{sha}\n")).unwrap();
        std::fs::write(
            g.join("config"),
            "[remote \"origin\"]\n\turl = \"https://a.invalid/x\\nInjected: 1\"\n",
        )
        .unwrap();
        assert_eq!(probe_between(d.path(), d.path()), None);
    }
}
