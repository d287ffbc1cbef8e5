//! Every apko config in the shared corpus loads and renders with `show-config`, or is
//! rejected for the reason apko gives.

use std::path::{Path, PathBuf};

use pallet_image_config::{ConfigError, load};

fn corpus_root() -> Option<PathBuf> {
    let base = std::env::var_os("PALLET_SHARED")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared"));
    let root = base.join("corpus/apko");
    root.is_dir().then_some(root)
}

fn yaml_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    entries.sort();
    for p in entries {
        if p.is_dir() {
            yaml_files(&p, out);
        } else if matches!(p.extension().and_then(|e| e.to_str()), Some("yaml" | "yml")) {
            out.push(p);
        }
    }
}

/// Files apko rejects, with a fragment of the reason. apko's `ImageAccounts` has only
/// `run-as`, `users` and `groups`; yaml.v3 with `KnownFields(true)` says "field recursive not
/// found in type types.ImageAccounts" for these.
const EXPECTED_REJECTIONS: &[(&str, &str)] = &[
    (
        "images/meilisearch__latest.apko.yaml",
        "line 12, column 3: unknown field `recursive`",
    ),
    (
        "images/minio-client__latest.apko.yaml",
        "line 14, column 3: unknown field `recursive`",
    ),
    (
        "images/ntpd-rs__latest.apko.yaml",
        "line 12, column 3: unknown field `recursive`",
    ),
];

#[test]
fn corpus_loads_or_is_rejected_as_apko_does() {
    let Some(root) = corpus_root() else {
        eprintln!("SKIPPED: apko corpus not found (set PALLET_SHARED to the shared folder)");
        return;
    };
    let mut files = Vec::new();
    yaml_files(&root, &mut files);
    assert!(files.len() > 50, "only {} corpus files", files.len());
    let mut failures = Vec::new();
    let (mut loaded, mut rejected) = (0, 0);
    for f in &files {
        let rel = f
            .strip_prefix(&root)
            .unwrap()
            .to_string_lossy()
            .replace('\\', "/");
        // apko's examples include relative to the apko checkout, which is the corpus root.
        let result = load(f, std::slice::from_ref(&root));
        let expected = EXPECTED_REJECTIONS.iter().find(|(n, _)| *n == rel);
        match (result, expected) {
            (Ok(l), None) => {
                let yaml = l.config.to_show_config_yaml();
                let again = pallet_image_config::parse_str(&yaml, f).unwrap_or_else(|e| {
                    panic!("{rel}: show-config output does not parse back: {e}\n{yaml}")
                });
                assert_eq!(again, l.config, "{rel}: show-config round trip");
                loaded += 1;
            }
            (Ok(_), Some((_, why))) => {
                failures.push(format!("{rel}: loaded, but apko rejects it ({why})"))
            }
            (Err(e), Some((_, why))) => {
                let text = error_text(&e);
                if text.contains(why) {
                    rejected += 1;
                } else {
                    failures.push(format!("{rel}: rejected for `{text}`, expected `{why}`"));
                }
            }
            (Err(e), None) => failures.push(format!("{rel}: {}", error_text(&e))),
        }
    }
    eprintln!("corpus: {loaded} loaded, {rejected} rejected as apko rejects them");
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

fn error_text(e: &ConfigError) -> String {
    let mut s = e.to_string();
    let mut src = std::error::Error::source(e);
    while let Some(c) = src {
        s.push_str(": ");
        s.push_str(&c.to_string());
        src = c.source();
    }
    s
}
