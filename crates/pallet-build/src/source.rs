//! Getting a recipe's sources onto the host, as melange's `source` package does: the `fetch`,
//! `git-checkout` and `patch` steps of the main pipeline run natively (their inputs used as
//! data: a URL, a git remote, file names), for `license-check`; and `source get` / `source pop`,
//! which clone a `git-checkout` source with its patches applied as commits, and turn local
//! commits back into patch files and a `git-am` step.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::compile::{self, Configuration, Copyright};
use crate::renovate::{self, RenovateError};

#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error(transparent)]
    Compile(#[from] compile::CompileError),
    #[error(transparent)]
    Renovate(#[from] RenovateError),
    #[error("{0}")]
    Failed(String),
}

fn failed<T>(m: impl Into<String>) -> Result<T, SourceError> {
    Err(SourceError::Failed(m.into()))
}

/// One source step: what it uses and its inputs (already substituted).
#[derive(Clone, Debug, Default)]
pub struct SourceStep {
    pub uses: String,
    pub with: BTreeMap<String, String>,
}

fn run(cmd: &mut Command, what: &str) -> Result<(), SourceError> {
    let st = cmd
        .status()
        .map_err(|e| SourceError::Failed(format!("{what}: {e}")))?;
    if !st.success() {
        return failed(format!("{what} failed ({st})"));
    }
    Ok(())
}

fn git(dir: &Path) -> Command {
    let mut c = Command::new("git");
    c.current_dir(dir)
        .env("GIT_TERMINAL_PROMPT", "0")
        .env("GIT_COMMITTER_NAME", "melange")
        .env("GIT_COMMITTER_EMAIL", "melange@localhost")
        .env("GIT_AUTHOR_NAME", "melange")
        .env("GIT_AUTHOR_EMAIL", "melange@localhost");
    c
}

/// A path given in a recipe, kept inside `base`.
fn inside(base: &Path, rel: &str, what: &str) -> Result<PathBuf, SourceError> {
    let p = Path::new(rel);
    if p.is_absolute() {
        return failed(format!("absolute {what} paths are not allowed: {rel:?}"));
    }
    if p.components()
        .any(|c| matches!(c, std::path::Component::ParentDir))
    {
        return failed(format!(
            "{what} path {rel:?} escapes the workspace directory"
        ));
    }
    Ok(base.join(p))
}

fn int(v: Option<&String>, default: i64) -> i64 {
    v.and_then(|s| s.trim().parse().ok()).unwrap_or(default)
}

fn boolean(v: Option<&String>, default: bool) -> bool {
    match v.map(|s| s.trim()) {
        None | Some("") => default,
        Some(s) => s == "true",
    }
}

/// The `fetch` step: download into `dir` under the URL's file name, check the digest, and
/// extract with tar (strip-components 1 by default).
pub fn fetch(with: &BTreeMap<String, String>, dir: &Path) -> Result<(), SourceError> {
    let uri = with.get("uri").map(|s| s.trim()).unwrap_or_default();
    if !(uri.starts_with("http://") || uri.starts_with("https://")) {
        return failed(format!(
            "invalid fetch uri {uri:?}: only http and https schemes are supported"
        ));
    }
    let path = uri
        .split_once("://")
        .map(|(_, r)| r)
        .unwrap_or(uri)
        .split(['?', '#'])
        .next()
        .unwrap_or("");
    let base = path.rsplit('/').next().unwrap_or("");
    if base.is_empty() || base == "." || base == ".." || !path.contains('/') {
        return failed(format!("could not determine a filename from uri {uri:?}"));
    }
    eprintln!("INFO Fetching {uri}");
    let d = renovate::download(uri)?;
    for (family, got) in [("sha256", &d.sha256), ("sha512", &d.sha512)] {
        if let Some(want) = with
            .get(&format!("expected-{family}"))
            .filter(|w| !w.trim().is_empty())
        {
            if !want.trim().eq_ignore_ascii_case(got) {
                return failed(format!(
                    "{family} mismatch for {base:?}: expected {}, got {got}",
                    want.trim()
                ));
            }
            break;
        }
    }
    fs::create_dir_all(dir).map_err(|e| SourceError::Failed(e.to_string()))?;
    let file = dir.join(base);
    fs::copy(d.file.path(), &file).map_err(|e| SourceError::Failed(e.to_string()))?;
    if boolean(with.get("extract"), true) {
        let into = match with
            .get("directory")
            .map(|s| s.trim())
            .filter(|s| !s.is_empty())
        {
            Some(sub) => inside(dir, sub, "directory")?,
            None => dir.to_path_buf(),
        };
        fs::create_dir_all(&into).map_err(|e| SourceError::Failed(e.to_string()))?;
        run(
            Command::new("tar")
                .arg("-x")
                .arg(format!(
                    "--strip-components={}",
                    int(with.get("strip-components"), 1)
                ))
                .arg("--no-same-owner")
                .arg("-C")
                .arg(&into)
                .arg("-f")
                .arg(&file),
            &format!("extracting {base}"),
        )?;
    }
    if boolean(with.get("delete"), false) {
        let _ = fs::remove_file(&file);
    }
    Ok(())
}

/// Apply patch files (paths inside `dir`) with `patch -pN --fuzz=F`.
pub fn patch(with: &BTreeMap<String, String>, dir: &Path) -> Result<(), SourceError> {
    let mut patches = with.get("patches").cloned().unwrap_or_default();
    if patches.trim().is_empty()
        && let Some(series) = with.get("series").filter(|s| !s.trim().is_empty())
    {
        let text = fs::read_to_string(inside(dir, series.trim(), "series")?)
            .map_err(|e| SourceError::Failed(format!("reading series file {series:?}: {e}")))?;
        patches = text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .collect::<Vec<_>>()
            .join(" ");
    }
    if patches.trim().is_empty() {
        return failed("patch step: neither 'patches' nor 'series' was set");
    }
    for p in patches.split_whitespace() {
        let file = inside(dir, p, "patch")?;
        eprintln!("INFO Applying patch {}", file.display());
        let f = fs::File::open(&file)
            .map_err(|e| SourceError::Failed(format!("opening patch {p:?}: {e}")))?;
        run(
            Command::new("patch")
                .arg(format!("-p{}", int(with.get("strip-components"), 1)))
                .arg(format!("--fuzz={}", int(with.get("fuzz"), 2)))
                .current_dir(dir)
                .stdin(f),
            &format!("applying patch {p:?}"),
        )?;
    }
    Ok(())
}

/// What a `git-checkout` does on the host.
#[derive(Clone, Debug, Default)]
pub struct Checkout {
    pub repository: String,
    pub destination: PathBuf,
    pub expected_commit: String,
    /// Checked out when there is no expected commit (pallet; melange clones the default
    /// branch then).
    pub tag: String,
    pub branch: String,
    pub cherry_picks: String,
    /// Patch files, applied as commits (`git am`, else `git apply` or `patch -p1` and a
    /// commit named after the file).
    pub patches: Vec<String>,
    /// Where relative patch names are found.
    pub patch_dir: PathBuf,
    pub recurse_submodules: bool,
}

/// Clone and prepare a `git-checkout` source.
pub fn git_checkout(o: &Checkout) -> Result<(), SourceError> {
    if o.repository.is_empty() {
        return failed("repository is required");
    }
    eprintln!(
        "INFO Cloning {} to {}",
        o.repository,
        o.destination.display()
    );
    if let Some(parent) = o.destination.parent() {
        fs::create_dir_all(parent).map_err(|e| SourceError::Failed(e.to_string()))?;
    }
    let here = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("."));
    let mut clone = git(&here);
    clone.arg("clone");
    if o.expected_commit.is_empty() {
        let r = if !o.tag.is_empty() { &o.tag } else { &o.branch };
        if !r.is_empty() {
            clone.args(["--branch", r]);
        }
    }
    clone.arg("--").arg(&o.repository).arg(&o.destination);
    run(&mut clone, "git clone")?;
    let dest = &o.destination;
    if !o.expected_commit.is_empty() {
        eprintln!("INFO Checking out commit {}", o.expected_commit);
        run(
            git(dest).args(["checkout", "--detach", &o.expected_commit]),
            &format!("checking out {}", o.expected_commit),
        )?;
    }
    if let Ok(out) = git(dest).args(["rev-parse", "HEAD"]).output() {
        eprintln!(
            "INFO Checked out commit {}",
            String::from_utf8_lossy(&out.stdout).trim()
        );
    }
    if o.recurse_submodules {
        run(
            git(dest).args(["submodule", "update", "--init", "--recursive"]),
            "initializing submodules",
        )?;
    }
    for line in o.cherry_picks.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let Some((spec, _)) = line.split_once(':') else {
            return failed(format!(
                "invalid cherry-pick format (expected '[branch/]commit: comment'): {line}"
            ));
        };
        let commit = spec.trim().rsplit('/').next().unwrap_or("");
        eprintln!("INFO Cherry-picking {commit}");
        run(
            git(dest).args(["cherry-pick", "--no-gpg-sign", "-x", commit]),
            &format!("cherry-picking {commit}"),
        )?;
    }
    for p in &o.patches {
        let file = if Path::new(p).is_absolute() {
            PathBuf::from(p)
        } else {
            o.patch_dir.join(p)
        };
        eprintln!("INFO Applying patch {}", file.display());
        let am = git(dest).args(["am", "--no-gpg-sign"]).arg(&file).status();
        if am.is_ok_and(|s| s.success()) {
            continue;
        }
        let _ = git(dest).args(["am", "--abort"]).status();
        let applied = git(dest)
            .args(["apply", "--check"])
            .arg(&file)
            .status()
            .is_ok_and(|s| s.success());
        if applied {
            run(git(dest).arg("apply").arg(&file), &format!("git apply {p}"))?;
        } else {
            let f = fs::File::open(&file)
                .map_err(|e| SourceError::Failed(format!("opening patch {p}: {e}")))?;
            run(
                Command::new("patch")
                    .args(["-p1", "--fuzz=2"])
                    .current_dir(dest)
                    .stdin(f),
                &format!("patch {p} cannot be applied (tried git am, git apply, and patch -p1)"),
            )?;
        }
        run(git(dest).args(["add", "-A"]), "staging the patch")?;
        let name = Path::new(p)
            .file_name()
            .map(|n| n.to_string_lossy().trim_end_matches(".patch").to_string())
            .unwrap_or_default();
        run(
            git(dest).args(["commit", "--no-gpg-sign", "-m", &name]),
            &format!("committing patch {p}"),
        )?;
    }
    Ok(())
}

/// The top-level source steps of a parsed configuration, inputs substituted.
pub fn steps_of(cfg: &Configuration, path: &Path) -> Result<Vec<SourceStep>, SourceError> {
    let vars = renovate::variables(cfg, path)?;
    let mut out = vec![];
    for s in &cfg.pipeline {
        let Some(u) = s.uses.as_deref() else { continue };
        if !["fetch", "git-checkout", "patch", "git-am"].contains(&u) {
            continue;
        }
        let mut with = BTreeMap::new();
        for (k, v) in &s.with {
            let v = compile::substitute_vars(v, &vars).map_err(SourceError::Failed)?;
            with.insert(k.clone(), v);
        }
        out.push(SourceStep {
            uses: u.to_string(),
            with,
        });
    }
    Ok(out)
}

/// What `license-check` works from.
pub struct Fetched {
    pub copyright: Vec<Copyright>,
}

/// melange's `FetchSourceFromMelange`: the sources of a recipe (`.yaml`) or of a built package
/// (`.apk`, from its embedded configuration) in `dest`: the folder named like the recipe next
/// to it (patches and other files) is copied first, then the `fetch`, `git-checkout` and
/// `patch` steps run (patches are skipped for packages, which do not carry them).
pub fn fetch_sources(file: &Path, dest: &Path) -> Result<Fetched, SourceError> {
    fs::create_dir_all(dest).map_err(|e| SourceError::Failed(e.to_string()))?;
    let dest = std::path::absolute(dest).map_err(|e| SourceError::Failed(e.to_string()))?;
    let is_apk = file.extension().is_some_and(|e| e == "apk");
    let (steps, copyright) = if is_apk {
        let e =
            crate::rebuild::read_embedded(file).map_err(|e| SourceError::Failed(e.to_string()))?;
        let steps = e
            .compiled
            .pipeline
            .iter()
            .filter_map(|s| {
                let u = s.uses.clone()?;
                ["fetch", "git-checkout", "patch"]
                    .contains(&u.as_str())
                    .then(|| SourceStep {
                        uses: u,
                        with: s.with.clone(),
                    })
            })
            .collect();
        (steps, e.compiled.package.copyright.clone())
    } else {
        let (cfg, _) = compile::parse(file)?;
        let side = file.with_extension("");
        if side.is_dir() {
            eprintln!(
                "INFO Found melange directory: {}, copying its contents to {}",
                side.display(),
                dest.display()
            );
            copy_tree(&side, &dest)?;
        }
        (steps_of(&cfg, file)?, cfg.package.copyright.clone())
    };
    for s in steps {
        eprintln!(
            "INFO Found source fetching step: {}. Fetching source to {}",
            s.uses,
            dest.display()
        );
        match s.uses.as_str() {
            "fetch" => fetch(&s.with, &dest)?,
            "patch" if is_apk => {
                eprintln!(
                    "WARN Skipping patch step as we do not have patches available inside apk metadata yet."
                );
            }
            "patch" => patch(&s.with, &dest)?,
            "git-checkout" => {
                let w = |k: &str| s.with.get(k).cloned().unwrap_or_default();
                let d = w("destination");
                let destination = if d.is_empty() || d == "." {
                    dest.clone()
                } else {
                    inside(&dest, &d, "destination")?
                };
                git_checkout(&Checkout {
                    repository: w("repository"),
                    destination,
                    expected_commit: w("expected-commit"),
                    tag: w("tag"),
                    branch: w("branch"),
                    cherry_picks: w("cherry-picks"),
                    patches: vec![],
                    patch_dir: dest.clone(),
                    recurse_submodules: w("recurse-submodules") == "true",
                })?;
            }
            _ => {}
        }
    }
    Ok(Fetched { copyright })
}

fn copy_tree(from: &Path, to: &Path) -> Result<(), SourceError> {
    for e in walkdir::WalkDir::new(from).min_depth(1).sort_by_file_name() {
        let e = e.map_err(|e| SourceError::Failed(e.to_string()))?;
        let rel = e.path().strip_prefix(from).expect("inside");
        let t = to.join(rel);
        let r = if e.file_type().is_dir() {
            fs::create_dir_all(&t)
        } else if e.file_type().is_file() {
            fs::copy(e.path(), &t).map(|_| ())
        } else {
            Ok(())
        };
        r.map_err(|err| SourceError::Failed(format!("copying {}: {err}", e.path().display())))?;
    }
    Ok(())
}

/// `melange source get`: clone the first `git-checkout` source into `OUT/NAME` with the
/// patches of the `patch` (or `git-am`) step after it applied as commits. Returns the clone.
pub fn source_get(
    config: &Path,
    out: &Path,
    source_dir: Option<&Path>,
) -> Result<PathBuf, SourceError> {
    let (cfg, _) = compile::parse(config)?;
    let steps = steps_of(&cfg, config)?;
    let Some(i) = steps.iter().position(|s| s.uses == "git-checkout") else {
        return failed("no git-checkout pipeline found in configuration");
    };
    let patches = steps[i + 1..]
        .iter()
        .find(|s| {
            (s.uses == "patch" || s.uses == "git-am")
                && s.with.get("patches").is_some_and(|p| !p.trim().is_empty())
        })
        .map(|s| {
            s.with["patches"]
                .split_whitespace()
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default();
    let w = |k: &str| steps[i].with.get(k).cloned().unwrap_or_default();
    let dest = out.join(&cfg.package.name);
    let patch_dir = match source_dir {
        Some(d) => d.to_path_buf(),
        None => config
            .parent()
            .unwrap_or(Path::new("."))
            .join(&cfg.package.name),
    };
    let patch_dir = std::path::absolute(&patch_dir).unwrap_or(patch_dir);
    git_checkout(&Checkout {
        repository: w("repository"),
        destination: dest.clone(),
        expected_commit: w("expected-commit"),
        tag: w("tag"),
        branch: w("branch"),
        cherry_picks: w("cherry-picks"),
        patches,
        patch_dir,
        recurse_submodules: w("recurse-submodules") == "true",
    })?;
    Ok(dest)
}

/// `melange source pop`: the commits made on top of `expected-commit` in `OUT/NAME` become
/// patch files in the source folder (`git format-patch`), and the configuration's `patch`
/// steps become one `git-am` step naming them (inserted after the `git-checkout` when there
/// was none), edited in place. Returns the patch file names.
pub fn source_pop(
    config: &Path,
    out: &Path,
    source_dir: Option<&Path>,
) -> Result<Vec<String>, SourceError> {
    let text = fs::read_to_string(config)
        .map_err(|e| SourceError::Failed(format!("reading {}: {e}", config.display())))?;
    let cfg = compile::parse_str(&text, config)?;
    let steps = steps_of(&cfg, config)?;
    let expected = steps
        .iter()
        .find(|s| s.uses == "git-checkout")
        .and_then(|s| s.with.get("expected-commit").cloned())
        .unwrap_or_default();
    if expected.is_empty() {
        return failed("no expected-commit found in git-checkout pipeline");
    }
    let src = match source_dir {
        Some(d) => d.to_path_buf(),
        None => config
            .parent()
            .unwrap_or(Path::new("."))
            .join(&cfg.package.name),
    };
    let src = std::path::absolute(&src).unwrap_or(src);
    let clone = std::path::absolute(out.join(&cfg.package.name))
        .map_err(|e| SourceError::Failed(e.to_string()))?;
    fs::create_dir_all(&src).map_err(|e| SourceError::Failed(e.to_string()))?;
    let o = git(&clone)
        .args(["format-patch", "-o"])
        .arg(&src)
        .arg(format!("{expected}..HEAD"))
        .output()
        .map_err(|e| SourceError::Failed(format!("git format-patch: {e}")))?;
    if !o.status.success() {
        return failed(format!(
            "failed to generate patches: {}",
            String::from_utf8_lossy(&o.stderr).trim()
        ));
    }
    let files: Vec<String> = String::from_utf8_lossy(&o.stdout)
        .lines()
        .filter(|l| !l.trim().is_empty())
        .filter_map(|l| {
            Path::new(l.trim())
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
        })
        .collect();
    if files.is_empty() {
        return failed(format!(
            "no patches generated - no commits found after {expected}"
        ));
    }
    let new = pop_text(&text, &files).ok_or_else(|| {
        SourceError::Failed(format!("{}: no pipeline found in YAML", config.display()))
    })?;
    compile::parse_str(&new, config)?;
    renovate::write_in_place(config, &new)?;
    Ok(files)
}

/// The configuration text with its `patch` steps replaced by one `git-am` step of `files`.
pub fn pop_text(text: &str, files: &[String]) -> Option<String> {
    use crate::yamledit::{Edits, outline};
    let doc = outline(text);
    let pipeline = doc.entry("pipeline")?;
    let items = pipeline.value.items();
    let is = |n: &crate::yamledit::Node, u: &str| {
        n.get("uses").and_then(|x| x.scalar(text)).as_deref() == Some(u)
    };
    // The column of the steps' dashes, from the first step's line.
    let first = items.first()?;
    let line = &text[first.lines.start..];
    let dash_col = line.len() - line.trim_start_matches(' ').len();
    let ind = " ".repeat(dash_col);
    let step = format!(
        "{ind}- uses: git-am\n{ind}  with:\n{ind}    patches: {}\n",
        crate::yamledit::requote(&files.join(" "), "")
    );
    let mut edits = Edits::default();
    let patches: Vec<&crate::yamledit::Node> = items.iter().filter(|n| is(n, "patch")).collect();
    if let Some((first, rest)) = patches.split_first() {
        edits.replace(first.lines.clone(), step);
        for p in rest {
            edits.replace(p.lines.clone(), "");
        }
    } else {
        let after = items.iter().find(|n| is(n, "git-checkout"))?;
        edits.insert(after.lines.end, step);
    }
    Some(edits.apply(text))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pop_replaces_patch_steps() {
        let t = "package:\n  name: a\n  version: 1\n  epoch: 0\npipeline:\n  - uses: git-checkout # src\n    with:\n      repository: r\n      expected-commit: c\n\n  - uses: patch\n    with:\n      patches: a.patch\n  - uses: patch\n    with:\n      patches: b.patch\n  - runs: make\n";
        let out = pop_text(t, &["0001-a.patch".into(), "0002-b.patch".into()]).unwrap();
        assert_eq!(
            out,
            "package:\n  name: a\n  version: 1\n  epoch: 0\npipeline:\n  - uses: git-checkout # src\n    with:\n      repository: r\n      expected-commit: c\n\n  - uses: git-am\n    with:\n      patches: 0001-a.patch 0002-b.patch\n  - runs: make\n"
        );
        let t2 = "pipeline:\n- uses: git-checkout\n  with:\n    repository: r\n- runs: make\n";
        assert_eq!(
            pop_text(t2, &["x.patch".into()]).unwrap(),
            "pipeline:\n- uses: git-checkout\n  with:\n    repository: r\n- uses: git-am\n  with:\n    patches: x.patch\n- runs: make\n"
        );
    }
}
