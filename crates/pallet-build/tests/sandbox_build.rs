//! Real builds in bubblewrap with the environment installed from the Alpine 3.19 fixture:
//! a musl ELF whose generated dependencies include `so:libc.musl-x86_64.so.1` and whose
//! commands become `cmd:` provides, a subpackage, signing, the index, and reproducibility.

use pallet_test_support::shared;
use std::collections::BTreeMap;
use std::fs;
use std::path::Path;

use pallet_apk_types::Dependency;
use pallet_build::assemble::PackageSpec;
use pallet_build::driver::{Options, Plan, build};
use pallet_build::runner::Step;
use pallet_image::config::{Arch, Contents, ImageConfiguration};

fn step(name: &str, runs: &str) -> Step {
    Step {
        name: name.into(),
        runs: runs.into(),
        workdir: "/home/build".into(),
        env: BTreeMap::new(),
    }
}

fn plan(a: &Path) -> Plan {
    let keys: Vec<String> = fs::read_dir(a.join("keys"))
        .unwrap()
        .map(|e| e.unwrap().path().display().to_string())
        .collect();
    Plan {
        version: "1.0".into(),
        epoch: 2,
        main: PackageSpec {
            name: "hello".into(),
            description: "hello from a sandbox".into(),
            license: "MIT".into(),
            ..Default::default()
        },
        steps: vec![step(
            "compile",
            "mkdir -p /home/build/melange-out/hello/usr/bin /home/build/melange-out/hello/usr/share/doc/hello\ncp /bin/busybox /home/build/melange-out/hello/usr/bin/hellobox\nprintf '#!/bin/sh\\necho hello-from-package\\n' > /home/build/melange-out/hello/usr/bin/hello\nchmod 755 /home/build/melange-out/hello/usr/bin/hello\necho docs > /home/build/melange-out/hello/usr/share/doc/hello/README",
        )],
        subpackages: vec![(
            PackageSpec {
                name: "hello-doc".into(),
                description: "docs".into(),
                license: "MIT".into(),
                ..Default::default()
            },
            vec![step(
                "split/manpages",
                "mkdir -p /home/build/melange-out/hello-doc/usr/share\nmv /home/build/melange-out/hello/usr/share/doc /home/build/melange-out/hello-doc/usr/share/",
            )],
        )],
        environment: ImageConfiguration {
            contents: Contents {
                repositories: vec![a.display().to_string()],
                keyring: keys,
                packages: vec!["busybox".into(), "musl".into()],
                ..Default::default()
            },
            ..Default::default()
        },
        config_yaml: "package:\n  name: hello\n  version: 1.0\n  epoch: 2\n".into(),
        ..Default::default()
    }
}

#[test]
fn build_sign_index_and_reproduce() {
    let Some(s) = shared() else { return };
    if !pallet_build::runner::bwrap_available() {
        eprintln!("SKIPPED: bwrap is not installed");
        return;
    }
    let a = s.join("fixtures/alpine-3.19");
    let t = tempfile::tempdir().unwrap();
    pallet_keys::generate(&t.path().join("k.rsa"), 2048).unwrap();
    let opts = Options {
        arch: Some(Arch::Amd64),
        out_dir: t.path().join("out"),
        apk_cache_dir: t.path().join("apkcache"),
        signing_key: Some(t.path().join("k.rsa")),
        generate_index: true,
        source_date_epoch: 1_700_000_000,
        namespace: "test".into(),
        rm: true,
        ..Default::default()
    };
    let written = build(&plan(&a), &opts).unwrap();
    assert_eq!(written.len(), 2);
    let ring = pallet_keys::Keyring::from_paths([t.path().join("k.rsa.pub")]);
    let mut files = vec![];
    let meta = pallet_apk_stream::read_apk(
        fs::File::open(&written[0]).unwrap(),
        &pallet_apk_stream::ReadOptions {
            keyring: Some(&ring),
            ..Default::default()
        },
        |e, _| {
            files.push(e.path.clone());
            Ok(())
        },
    )
    .unwrap();
    let deps: Vec<String> = meta
        .info
        .depends
        .iter()
        .map(Dependency::to_string)
        .collect();
    let provides: Vec<String> = meta
        .info
        .provides
        .iter()
        .map(Dependency::to_string)
        .collect();
    assert!(
        deps.contains(&"so:libc.musl-x86_64.so.1".to_string()),
        "{deps:?}"
    );
    assert!(
        provides.contains(&"cmd:hellobox=1.0-r2".to_string()),
        "{provides:?}"
    );
    assert!(
        provides.contains(&"cmd:hello=1.0-r2".to_string()),
        "{provides:?}"
    );
    assert!(
        files
            .iter()
            .any(|f| f.starts_with("var/lib/db/sbom/hello-1.0-r2.spdx.json")),
        "{files:?}"
    );
    assert!(
        !files.iter().any(|f| f.contains("usr/share/doc")),
        "docs moved to the subpackage"
    );
    assert!(meta.scripts.iter().any(|(n, _)| n == ".melange.yaml"));
    let idx = pallet_index::read_index(&t.path().join("out/x86_64/APKINDEX.tar.gz"), Some(&ring))
        .unwrap();
    let names: Vec<String> = idx.packages.iter().map(|p| p.nv()).collect();
    assert_eq!(names, ["hello-1.0-r2", "hello-doc-1.0-r2"]);
    // The same build again gives the same bytes.
    let first = fs::read(&written[0]).unwrap();
    let again = build(&plan(&a), &opts).unwrap();
    assert!(fs::read(&again[0]).unwrap() == first, "rebuild differs");
    // A failing step stops the build with its name.
    let mut bad = plan(&a);
    bad.steps.push(step("broken", "echo nope >&2; exit 7"));
    let err = build(&bad, &opts).unwrap_err().to_string();
    assert!(
        err.contains("'broken'") && err.contains("7") && err.contains("nope"),
        "{err}"
    );
}
