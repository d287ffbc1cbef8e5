//! Helpers shared by the end-to-end tests: the real `pallet` binary, the shared fixtures, and
//! the real image consumers (skopeo, umoci, runc).

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub fn pallet() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_pallet"))
}

pub fn run(args: &[&str], cwd: &Path, env: &[(&str, &str)]) -> Output {
    let mut c = Command::new(pallet());
    c.args(args).current_dir(cwd);
    for (k, v) in env {
        c.env(k, v);
    }
    c.output().expect("pallet runs")
}

pub fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// `../shared`, or `$PALLET_SHARED`; `None` (with a clear message) when absent.
pub fn shared() -> Option<PathBuf> {
    let p = std::env::var_os("PALLET_SHARED")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared"));
    if p.join("fixtures").is_dir() {
        Some(p)
    } else {
        eprintln!(
            "SKIPPED: shared fixtures not found at {} (set PALLET_SHARED)",
            p.display()
        );
        None
    }
}

pub fn have(tool: &str) -> bool {
    let ok = Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        eprintln!("SKIPPED part: {tool} is not installed (scripts/install-deps.sh installs it)");
    }
    ok
}

/// Keys of a folder as a YAML list body.
pub fn keyring_yaml(dir: &Path) -> String {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| format!("    - {}\n", e.unwrap().path().display()))
        .collect();
    v.sort();
    v.concat()
}

/// Unpack an OCI layout reference with umoci and run it with runc; returns what it printed.
pub fn run_bundle(oci_ref: &str, work: &Path, name: &str) -> String {
    let bundle = work.join(format!("bundle-{name}"));
    let o = Command::new("umoci")
        .args(["unpack", "--image", oci_ref])
        .arg(&bundle)
        .output()
        .unwrap();
    assert!(o.status.success(), "umoci unpack failed: {}", text(&o));
    let cfg = bundle.join("config.json");
    let mut v: serde_json::Value = serde_json::from_slice(&std::fs::read(&cfg).unwrap()).unwrap();
    v["process"]["terminal"] = serde_json::Value::Bool(false);
    std::fs::write(&cfg, serde_json::to_vec(&v).unwrap()).unwrap();
    let o = Command::new("runc")
        .args(["run", &format!("pallet-test-{name}-{}", std::process::id())])
        .current_dir(&bundle)
        .output()
        .unwrap();
    assert!(o.status.success(), "runc run failed: {}", text(&o));
    String::from_utf8_lossy(&o.stdout).into_owned()
}
