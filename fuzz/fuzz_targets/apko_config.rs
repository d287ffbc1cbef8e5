//! apko YAML: `config::load` (strict parse, `include` from the same folder, merge, validation),
//! the entrypoint and cmd word splitting, and what `show-config` renders.
//!
//! The input is the main file, optionally followed by `\n#%%\n` and the text of `base.yaml`,
//! which the main file may include.
#![no_main]

use std::path::PathBuf;
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use pallet_image::config::load;

fn dir() -> &'static tempfile::TempDir {
    static D: OnceLock<tempfile::TempDir> = OnceLock::new();
    D.get_or_init(|| {
        let d = tempfile::tempdir().expect("temporary folder");
        // Relative includes are also searched in the working folder: keep that one ours too.
        std::env::set_current_dir(d.path()).expect("chdir");
        d
    })
}

fuzz_target!(|data: &[u8]| {
    let d = dir().path();
    let parts = pallet_fuzz::split(data, b"\n#%%\n", 2);
    let main = d.join("apko.yaml");
    let base = d.join("base.yaml");
    std::fs::write(&main, parts[0]).expect("write");
    if let Some(b) = parts.get(1) {
        std::fs::write(&base, b).expect("write");
    } else {
        let _ = std::fs::remove_file(&base);
    }
    let Ok(loaded) = load(&main, &[]) else {
        return;
    };
    let cfg = &loaded.config;
    assert!(cfg.include.is_none(), "includes are resolved by load");
    let _ = cfg.entrypoint_argv();
    let _ = cfg.cmd_argv();
    // show-config prints the merged configuration; what it prints must load again, to a
    // configuration that renders the same.
    let Ok(shown) = serde_saphyr::to_string(cfg) else {
        return;
    };
    let again_path: PathBuf = d.join("shown.yaml");
    std::fs::write(&again_path, &shown).expect("write");
    let again = load(&again_path, &[])
        .unwrap_or_else(|e| panic!("show-config output does not load: {e}\n{shown}"));
    let reshown = serde_saphyr::to_string(&again.config).expect("renders again");
    assert_eq!(reshown, shown);
});
