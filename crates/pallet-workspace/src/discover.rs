//! Finding a workspace's melange recipes and apko configurations by what they hold, in any
//! layout: a recipe has a top-level `package:`, an image a top-level `contents:`.

use std::path::{Path, PathBuf};

/// Recipes and configurations are small; a bigger YAML file is not one of them and is not
/// read whole.
const MAX_CONFIG_BYTES: u64 = 16 << 20;

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Kind {
    Recipe,
    Image,
}

/// A YAML file of the workspace, by its path relative to the root.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Found {
    pub rel: PathBuf,
    pub kind: Kind,
}

#[derive(Debug, thiserror::Error)]
#[error("reading {path}: {source}")]
pub struct DiscoverError {
    pub path: PathBuf,
    #[source]
    pub source: std::io::Error,
}

/// What kind of file `text` is, from its top-level keys (lines that start in column 0).
pub fn classify(text: &str) -> Option<Kind> {
    let mut image = false;
    for line in text.lines() {
        if line.starts_with("package:") {
            return Some(Kind::Recipe);
        }
        if line.starts_with("contents:") {
            image = true;
        }
    }
    image.then_some(Kind::Image)
}

/// Every recipe and image under `root`, sorted by path. Hidden files and folders (`.git`
/// among them), `skip` (the output folders, relative to the root) and `pallet.yaml` are left
/// out.
pub fn discover(root: &Path, skip: &[PathBuf]) -> Result<Vec<Found>, DiscoverError> {
    let mut out = vec![];
    let mut it = walkdir::WalkDir::new(root)
        .min_depth(1)
        .sort_by_file_name()
        .into_iter();
    while let Some(e) = it.next() {
        let e = e.map_err(|e| DiscoverError {
            path: e.path().unwrap_or(root).to_path_buf(),
            source: e.into(),
        })?;
        let rel = e
            .path()
            .strip_prefix(root)
            .expect("under root")
            .to_path_buf();
        let hidden = e.file_name().to_string_lossy().starts_with('.');
        if e.file_type().is_dir() {
            if hidden || skip.iter().any(|s| &rel == s) {
                it.skip_current_dir();
            }
            continue;
        }
        let name = e.file_name().to_string_lossy();
        if hidden
            || !e.file_type().is_file()
            || !(name.ends_with(".yaml") || name.ends_with(".yml"))
            || rel == Path::new(crate::settings::FILE)
        {
            continue;
        }
        let too_big = e.metadata().is_ok_and(|m| m.len() > MAX_CONFIG_BYTES);
        if too_big {
            continue;
        }
        let text = std::fs::read(e.path()).map_err(|source| DiscoverError {
            path: e.path().to_path_buf(),
            source,
        })?;
        if let Some(kind) = classify(&String::from_utf8_lossy(&text)) {
            out.push(Found { rel, kind });
        }
    }
    Ok(out)
}

/// An image's name: its file name without `.yaml`/`.yml` and an `.apko` before it.
pub fn image_name(rel: &Path) -> String {
    let n = rel
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_default();
    let n = n
        .strip_suffix(".yaml")
        .or_else(|| n.strip_suffix(".yml"))
        .unwrap_or(&n);
    n.strip_suffix(".apko").unwrap_or(n).to_string()
}

/// A recipe's source folder (what melange's `--source-dir` would be), relative to the root:
/// `NAME/` beside `NAME.yaml` (wolfi-os's layout), else the recipe's own folder when no other
/// recipe lives there, else none.
/// `per_folder` counts the recipes of each folder ([`recipes_per_folder`]).
pub fn source_dir(
    root: &Path,
    rel: &Path,
    per_folder: &std::collections::BTreeMap<PathBuf, usize>,
) -> Option<PathBuf> {
    let parent = rel.parent().unwrap_or(Path::new(""));
    let stem = rel.file_stem()?;
    let beside = parent.join(stem);
    if root.join(&beside).is_dir() {
        return Some(beside);
    }
    (per_folder.get(parent) == Some(&1)).then(|| parent.to_path_buf())
}

/// How many recipes each folder holds.
pub fn recipes_per_folder(recipes: &[&Path]) -> std::collections::BTreeMap<PathBuf, usize> {
    let mut m = std::collections::BTreeMap::new();
    for r in recipes {
        *m.entry(r.parent().unwrap_or(Path::new("")).to_path_buf())
            .or_insert(0) += 1;
    }
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_by_top_level_keys() {
        assert_eq!(classify("# c\npackage:\n  name: x\n"), Some(Kind::Recipe));
        assert_eq!(classify("contents:\n  packages: [a]\n"), Some(Kind::Image));
        assert_eq!(classify("name: p\npipeline:\n  - runs: x\n"), None);
        // Nested keys do not count.
        assert_eq!(classify("x:\n  package: y\n  contents: z\n"), None);
    }

    #[test]
    fn layouts() {
        let d = tempfile::tempdir().unwrap();
        let r = d.path();
        for (p, t) in [
            ("zlib.yaml", "package:\n  name: zlib\n"),
            ("zlib/fix.patch", "x"),
            ("curl.yaml", "package:\n  name: curl\n"),
            ("img.apko.yaml", "contents:\n  packages: [curl]\n"),
            ("pallet.yaml", "package: no\n"),
            ("pipelines/p.yaml", "name: p\n"),
            (".git/x.yaml", "package:\n"),
            ("packages/x.yaml", "package:\n"),
            ("nested/app/melange.yaml", "package:\n  name: app\n"),
        ] {
            let f = r.join(p);
            std::fs::create_dir_all(f.parent().unwrap()).unwrap();
            std::fs::write(f, t).unwrap();
        }
        let found = discover(r, &[PathBuf::from("packages")]).unwrap();
        let names: Vec<_> = found.iter().map(|f| f.rel.display().to_string()).collect();
        assert_eq!(
            names,
            [
                "curl.yaml",
                "img.apko.yaml",
                "nested/app/melange.yaml",
                "zlib.yaml"
            ]
        );
        assert_eq!(image_name(Path::new("img.apko.yaml")), "img");
        let recipes: Vec<&Path> = found
            .iter()
            .filter(|f| f.kind == Kind::Recipe)
            .map(|f| f.rel.as_path())
            .collect();
        let recipes = recipes_per_folder(&recipes);
        assert_eq!(
            source_dir(r, Path::new("zlib.yaml"), &recipes),
            Some(PathBuf::from("zlib"))
        );
        assert_eq!(source_dir(r, Path::new("curl.yaml"), &recipes), None);
        assert_eq!(
            source_dir(r, Path::new("nested/app/melange.yaml"), &recipes),
            Some(PathBuf::from("nested/app"))
        );
    }
}
