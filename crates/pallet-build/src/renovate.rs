//! melange's renovators: `bump` (a new version in the YAML file, edited in place so comments and
//! layout stay as written) and `update-cache` (the fetch cache's `sha256:<hex>` files filled
//! from a recipe's `fetch` steps).

use std::collections::BTreeMap;
use std::fs;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use sha2::Digest as _;

use crate::compile::{self, CompileOptions, Configuration, Pipeline};
use crate::yamledit::{self, Edits, Kind, Node};

#[derive(Debug, thiserror::Error)]
pub enum RenovateError {
    #[error(transparent)]
    Compile(#[from] compile::CompileError),
    #[error("{path}: {message}")]
    Config { path: PathBuf, message: String },
    #[error("fetching {url}: {message}")]
    Fetch { url: String, message: String },
    #[error("{0}")]
    Io(String),
}

/// The largest download accepted (1 GiB, as melange).
pub const MAX_DOWNLOAD: u64 = 1 << 30;

/// A downloaded file in temporary storage, with its digests.
pub struct Download {
    pub file: tempfile::NamedTempFile,
    pub sha256: String,
    pub sha512: String,
    pub size: u64,
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// GET `url` (redirects followed) into a temporary file, hashing it on the way.
pub fn download(url: &str) -> Result<Download, RenovateError> {
    let fail = |message: String| RenovateError::Fetch {
        url: url.to_string(),
        message,
    };
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(std::time::Duration::from_secs(30 * 60)))
        .timeout_connect(Some(std::time::Duration::from_secs(30)))
        .user_agent(concat!("melange/pallet-", env!("CARGO_PKG_VERSION")))
        .http_status_as_error(false)
        .build()
        .into();
    let resp = agent
        .get(url)
        // Some servers (netfilter.org) refuse requests that do not accept HTML, as melange notes.
        .header("Accept", "text/html")
        .call()
        .map_err(|e| fail(e.to_string()))?;
    if resp.status() != 200 {
        return Err(fail(format!("unexpected status {}", resp.status())));
    }
    let mut r = resp.into_body().into_reader();
    let mut file = tempfile::NamedTempFile::new().map_err(|e| fail(e.to_string()))?;
    let (mut h256, mut h512) = (sha2::Sha256::new(), sha2::Sha512::new());
    let mut buf = vec![0u8; 1 << 16];
    let mut size = 0u64;
    loop {
        let n = r.read(&mut buf).map_err(|e| fail(e.to_string()))?;
        if n == 0 {
            break;
        }
        size += n as u64;
        if size > MAX_DOWNLOAD {
            return Err(fail(format!(
                "the download is larger than the {MAX_DOWNLOAD} bytes allowed"
            )));
        }
        h256.update(&buf[..n]);
        h512.update(&buf[..n]);
        file.write_all(&buf[..n]).map_err(|e| fail(e.to_string()))?;
    }
    file.flush().map_err(|e| fail(e.to_string()))?;
    Ok(Download {
        file,
        sha256: hex(&h256.finalize()),
        sha512: hex(&h512.finalize()),
        size,
    })
}

/// The variables `bump` and `update-cache` evaluate URIs with: melange's renovation context
/// (package name, version, epoch, `vars`, `var-transforms`, the host's architecture).
pub fn variables(
    cfg: &Configuration,
    path: &Path,
) -> Result<BTreeMap<String, String>, RenovateError> {
    Ok(compile::variables(
        cfg,
        path,
        &CompileOptions {
            arch: Some(pallet_image::config::Arch::host()),
            ..Default::default()
        },
    )?)
}

fn eval(text: &str, vars: &BTreeMap<String, String>, path: &Path) -> Result<String, RenovateError> {
    compile::substitute_vars(text, vars).map_err(|message| RenovateError::Config {
        path: path.to_path_buf(),
        message,
    })
}

/// Write `text` to `path` through a temporary file in the same folder (the file's permissions
/// kept).
pub fn write_in_place(path: &Path, text: &str) -> Result<(), RenovateError> {
    let io = |e: std::io::Error| RenovateError::Io(format!("writing {}: {e}", path.display()));
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let mut tmp = tempfile::NamedTempFile::new_in(dir).map_err(io)?;
    tmp.write_all(text.as_bytes()).map_err(io)?;
    if let Ok(m) = fs::metadata(path) {
        let _ = fs::set_permissions(tmp.path(), m.permissions());
    }
    tmp.persist(path).map_err(|e| io(e.error))?;
    Ok(())
}

/// What `bump` asks for.
#[derive(Clone, Debug, Default)]
pub struct BumpOptions {
    pub version: String,
    /// `--expected-commit`: the new `expected-commit` of the `git-checkout` steps.
    pub expected_commit: Option<String>,
}

/// What `bump` changed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Bumped {
    pub version: String,
    pub epoch: u64,
    /// Each `fetch` step's evaluated URI and the new digests written (`expected-sha256` /
    /// `expected-sha512`, whichever the step has).
    pub fetches: Vec<(String, Vec<String>)>,
    pub commits: usize,
}

fn scalar_range(n: &Node) -> Option<std::ops::Range<usize>> {
    match &n.kind {
        Kind::Scalar(r) => Some(r.clone()),
        _ => None,
    }
}

fn uses(m: &Node, text: &str) -> Option<String> {
    m.get("uses").and_then(|u| u.scalar(text))
}

/// melange's test of whether a `git-checkout` tag follows `package.version`: directly, or
/// through a `vars` entry or a `var-transforms` result made from it.
fn depends_on_version(tag: &str, cfg: &Configuration) -> bool {
    const V: &str = "${{package.version}}";
    if tag.contains(V) {
        return true;
    }
    let mut rest = tag;
    while let Some(i) = rest.find("${{vars.") {
        let after = &rest[i + 8..];
        let Some(end) = after.find("}}") else { break };
        let name = &after[..end];
        if cfg.vars.get(name).is_some_and(|v| v.contains(V))
            || cfg
                .var_transforms
                .iter()
                .any(|t| t.to == name && t.from.contains(V))
        {
            return true;
        }
        rest = &after[end..];
    }
    false
}

/// `melange bump` on text: the new `package.version` (double-quoted, as melange writes it),
/// `epoch` reset to 0 (or incremented when the version does not change), each `fetch` step's
/// `expected-sha256`/`expected-sha512` recomputed from its URI under the new version
/// (`fetch_url` downloads), and with `expected_commit` the `git-checkout` steps'
/// `expected-commit` (only those whose tag follows the version when there are several; never
/// one that is itself a `${{…}}` expression). Everything else stays byte for byte.
pub fn bump_text(
    text: &str,
    path: &Path,
    opts: &BumpOptions,
    fetch_url: &mut dyn FnMut(&str) -> Result<Download, RenovateError>,
) -> Result<(String, Bumped), RenovateError> {
    let bad = |message: String| RenovateError::Config {
        path: path.to_path_buf(),
        message,
    };
    let target = opts.version.trim().to_string();
    if target.is_empty() {
        return Err(bad("the new version is empty".into()));
    }
    let doc = yamledit::outline(text);
    let pkg = doc
        .get("package")
        .ok_or_else(|| bad("no package: mapping".into()))?;
    let version_entry = pkg
        .entry("version")
        .ok_or_else(|| bad("package.version not found".into()))?;
    let version_range = scalar_range(&version_entry.value)
        .ok_or_else(|| bad("package.version is not a one-line value".into()))?;
    let old_version = version_entry.value.scalar(text).unwrap_or_default();
    let mut cfg = compile::parse_str(text, path)?;
    let epoch = if old_version != target {
        0
    } else {
        cfg.package.epoch + 1
    };
    let mut edits = Edits::default();
    edits.replace(version_range, yamledit::double_quoted(&target));
    match pkg.entry("epoch") {
        Some(e) => {
            let r = scalar_range(&e.value)
                .ok_or_else(|| bad("package.epoch is not a one-line value".into()))?;
            edits.replace(r, epoch.to_string());
        }
        // melange needs the key; pallet adds it below the version.
        None => edits.insert(
            version_entry.lines.end,
            format!("{}epoch: {epoch}\n", " ".repeat(version_entry.indent)),
        ),
    }
    cfg.package.version = target.clone();
    cfg.package.epoch = epoch;
    let vars = variables(&cfg, path)?;
    let mut done = Bumped {
        version: target.clone(),
        epoch,
        ..Default::default()
    };
    if let Some(pipeline) = doc.get("pipeline") {
        let maps = pipeline.maps();
        for m in maps
            .iter()
            .filter(|m| uses(m, text).as_deref() == Some("fetch"))
        {
            let with = m
                .get("with")
                .ok_or_else(|| bad("a fetch step has no with:".into()))?;
            let uri = with
                .get("uri")
                .and_then(|u| u.scalar(text))
                .ok_or_else(|| bad("a fetch step has no uri".into()))?;
            let url = eval(&uri, &vars, path)?;
            let d = fetch_url(&url)?;
            let mut written = vec![];
            for (key, value) in [
                ("expected-sha256", &d.sha256),
                ("expected-sha512", &d.sha512),
            ] {
                if let Some(n) = with.get(key)
                    && let Some(r) = scalar_range(n)
                {
                    edits.replace(r.clone(), yamledit::requote(value, &text[r]));
                    written.push(format!("{key}: {value}"));
                }
            }
            done.fetches.push((url, written));
        }
        let checkouts: Vec<&&Node> = maps
            .iter()
            .filter(|m| uses(m, text).as_deref() == Some("git-checkout"))
            .collect();
        for m in &checkouts {
            let Some(with) = m.get("with") else { continue };
            let tag = with.get("tag").and_then(|t| t.scalar(text));
            let versioned = tag.as_deref().is_none_or(|t| depends_on_version(t, &cfg));
            if checkouts.len() > 1 && !versioned {
                continue;
            }
            let Some(commit) = &opts.expected_commit else {
                continue;
            };
            if let Some(n) = with.get("expected-commit")
                && let Some(r) = scalar_range(n)
                && !text[r.clone()].contains("${{")
            {
                edits.replace(r.clone(), yamledit::requote(commit, &text[r]));
                done.commits += 1;
            }
        }
    }
    Ok((edits.apply(text), done))
}

/// `melange bump FILE VERSION`: rewrite the file in place.
pub fn bump(path: &Path, opts: &BumpOptions) -> Result<Bumped, RenovateError> {
    let text = fs::read_to_string(path)
        .map_err(|e| RenovateError::Io(format!("reading {}: {e}", path.display())))?;
    let (new, done) = bump_text(&text, path, opts, &mut |u| download(u))?;
    // The result must still be a configuration melange reads.
    compile::parse_str(&new, path)?;
    write_in_place(path, &new)?;
    Ok(done)
}

fn fetch_steps<'a>(steps: &'a [Pipeline], out: &mut Vec<&'a Pipeline>) {
    for s in steps {
        if s.uses.as_deref() == Some("fetch") {
            out.push(s);
        }
        fetch_steps(&s.pipeline, out);
    }
}

/// One file `update-cache` wrote.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cached {
    pub url: String,
    pub path: PathBuf,
}

/// `melange update-cache --cache-dir DIR FILE`: download every `fetch` URI of the main
/// pipeline and store it as `DIR/sha256:<hex>` and/or `DIR/sha512:<hex>` (for the digests the
/// step names), after checking the download against them. The fetch pipeline finds the files
/// there and builds without the network.
pub fn update_cache(
    path: &Path,
    cache_dir: &Path,
    fetch_url: &mut dyn FnMut(&str) -> Result<Download, RenovateError>,
) -> Result<Vec<Cached>, RenovateError> {
    let (cfg, _) = compile::parse(path)?;
    let vars = variables(&cfg, path)?;
    let mut steps = vec![];
    fetch_steps(&cfg.pipeline, &mut steps);
    let io = |e: std::io::Error| RenovateError::Io(format!("{}: {e}", cache_dir.display()));
    let mut out = vec![];
    for s in steps {
        let uri = s.with.get("uri").ok_or_else(|| RenovateError::Config {
            path: path.to_path_buf(),
            message: "a fetch step has no uri".into(),
        })?;
        let url = eval(uri, &vars, path)?;
        let d = fetch_url(&url)?;
        for (family, got) in [("sha256", &d.sha256), ("sha512", &d.sha512)] {
            let Some(want) = s.with.get(&format!("expected-{family}")) else {
                continue;
            };
            if want.trim() != got {
                return Err(RenovateError::Fetch {
                    url: url.clone(),
                    message: format!("{family} mismatch: {got} != {}", want.trim()),
                });
            }
            fs::create_dir_all(cache_dir).map_err(io)?;
            let dest = cache_dir.join(format!("{family}:{got}"));
            let mut tmp = tempfile::NamedTempFile::new_in(cache_dir).map_err(io)?;
            let mut src = fs::File::open(d.file.path()).map_err(io)?;
            std::io::copy(&mut src, &mut tmp).map_err(io)?;
            tmp.persist(&dest).map_err(|e| io(e.error))?;
            out.push(Cached {
                url: url.clone(),
                path: dest,
            });
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fake(body: &[u8]) -> Download {
        let mut file = tempfile::NamedTempFile::new().unwrap();
        file.write_all(body).unwrap();
        Download {
            file,
            sha256: hex(&sha2::Sha256::digest(body)),
            sha512: hex(&sha2::Sha512::digest(body)),
            size: body.len() as u64,
        }
    }

    const RECIPE: &str = "# keep me\npackage:\n  name: cheese\n  version: 7.0.1.0 # upstream\n  epoch: 2\n  description: a cheesy library\n\nvar-transforms:\n  - from: ${{package.version}}\n    match: '(\\d+\\.\\d+\\.\\d+)\\.\\d+'\n    replace: '$1'\n    to: short\n\npipeline:\n  - uses: fetch\n    with:\n      uri: https://x/cheese-${{vars.short}}.tar.gz\n      expected-sha256: \"0000\"\n  - uses: git-checkout\n    with:\n      repository: https://g/c\n      tag: v${{package.version}}\n      expected-commit: aaaa\n  - uses: git-checkout\n    with:\n      repository: https://g/other\n      tag: v1\n      expected-commit: bbbb\n";

    #[test]
    fn bump_edits_only_what_it_must() {
        let mut seen = vec![];
        let (out, done) = bump_text(
            RECIPE,
            Path::new("cheese.yaml"),
            &BumpOptions {
                version: "7.0.2.0".into(),
                expected_commit: Some("cccc".into()),
            },
            &mut |u| {
                seen.push(u.to_string());
                Ok(fake(b"new"))
            },
        )
        .unwrap();
        assert_eq!(seen, ["https://x/cheese-7.0.2.tar.gz"]);
        let sum = hex(&sha2::Sha256::digest(b"new"));
        assert_eq!(
            out,
            RECIPE
                .replace("version: 7.0.1.0 #", "version: \"7.0.2.0\" #")
                .replace("epoch: 2", "epoch: 0")
                .replace("\"0000\"", &format!("\"{sum}\""))
                .replace("aaaa", "cccc")
        );
        assert_eq!(done.epoch, 0);
        assert_eq!(done.commits, 1);
        // The same version again: the epoch goes up.
        let (again, done) = bump_text(
            &out,
            Path::new("cheese.yaml"),
            &BumpOptions {
                version: "7.0.2.0".into(),
                expected_commit: None,
            },
            &mut |_| Ok(fake(b"new")),
        )
        .unwrap();
        assert_eq!(done.epoch, 1);
        assert_eq!(again, out.replace("epoch: 0", "epoch: 1"));
    }

    #[test]
    fn bump_adds_a_missing_epoch() {
        let (out, _) = bump_text(
            "package:\n  name: a\n  version: 1\n  description: x\n",
            Path::new("a.yaml"),
            &BumpOptions {
                version: "2".into(),
                expected_commit: None,
            },
            &mut |_| unreachable!(),
        )
        .unwrap();
        assert_eq!(
            out,
            "package:\n  name: a\n  version: \"2\"\n  epoch: 0\n  description: x\n"
        );
    }
}
