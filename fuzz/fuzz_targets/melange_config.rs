//! melange YAML: the strict parse (`compile::parse_str`), compilation with `${{…}}`
//! substitution, `if:` conditions, ranges, var-transforms, build options and the built-in
//! pipelines, the configuration lint rules, and the JSON and YAML `pkg compile` prints.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use pallet_build::compile::{CompileOptions, compile, parse_str};
use pallet_image::config::Arch;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let path = Path::new("melange.yaml");
    let Ok(cfg) = parse_str(text, path) else {
        return;
    };
    let _ = pallet_build::lint::lint_config(&cfg);
    for (arch, options) in [
        (Arch::Amd64, vec![]),
        // Every build option the file declares, on top of each other.
        (Arch::Arm64, cfg.options.keys().cloned().collect()),
    ] {
        let opts = CompileOptions {
            arch: Some(arch),
            build_options: options,
            ..CompileOptions::default()
        };
        if let Ok(c) = compile(&cfg, path, &opts) {
            serde_json::to_string_pretty(&c).expect("compiled configuration as JSON");
            let _ = serde_saphyr::to_string(&c);
        }
    }
});
