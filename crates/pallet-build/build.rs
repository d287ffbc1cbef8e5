//! Embeds every pipeline under `pipelines/` as `(name, text)` pairs.

use std::fmt::Write as _;
use std::path::Path;

fn walk(dir: &Path, root: &Path, out: &mut Vec<(String, String)>) {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .expect("pipelines folder")
        .flatten()
        .map(|e| e.path())
        .collect();
    entries.sort();
    for p in entries {
        if p.is_dir() {
            walk(&p, root, out);
        } else if p.extension().is_some_and(|e| e == "yaml") {
            let rel = p.strip_prefix(root).expect("under root").with_extension("");
            out.push((
                rel.to_string_lossy().into_owned(),
                p.canonicalize().expect("path").display().to_string(),
            ));
        }
    }
}

fn main() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("pipelines");
    println!("cargo:rerun-if-changed={}", root.display());
    let mut list = vec![];
    walk(&root, &root, &mut list);
    let mut code = String::from("[\n");
    for (name, path) in list {
        println!("cargo:rerun-if-changed={path}");
        let _ = writeln!(code, "    ({name:?}, include_str!({path:?})),");
    }
    code.push(']');
    let out = Path::new(&std::env::var("OUT_DIR").expect("OUT_DIR")).join("builtin_pipelines.rs");
    std::fs::write(out, code).expect("write");
}
