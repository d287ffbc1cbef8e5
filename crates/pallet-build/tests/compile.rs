//! The melange compiler: the real corpus compiles for both architectures, the features that
//! matter compile to the exact text expected, every built-in pipeline honours its inputs'
//! defaults and overrides, and bad input is reported with file, line or step.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use pallet_build::compile::{
    BUILTIN_PIPELINES, CompileOptions, Compiled, CompiledStep, compile_file,
};
use pallet_image::config::Arch;

fn shared() -> Option<PathBuf> {
    pallet_test_support::shared_with("corpus")
}

fn opts(arch: Arch, dirs: &[PathBuf]) -> CompileOptions {
    CompileOptions {
        arch: Some(arch),
        pipeline_dirs: dirs.to_vec(),
        ..Default::default()
    }
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

/// Every script of a compiled tree, in run order.
fn scripts(steps: &[CompiledStep]) -> Vec<String> {
    let mut out = vec![];
    for s in steps {
        if let Some(r) = &s.runs {
            out.push(r.clone());
        }
        out.extend(scripts(&s.pipeline));
    }
    out
}

#[test]
fn the_whole_corpus_compiles_for_both_architectures() {
    let Some(s) = shared() else { return };
    let dir = s.join("corpus/melange");
    let pipes = vec![dir.join("pipelines")];
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    assert_eq!(files.len(), 30);
    let mut failures = vec![];
    for f in &files {
        for arch in [Arch::Amd64, Arch::Arm64] {
            if let Err(e) = compile_file(f, &opts(arch, &pipes)) {
                failures.push(format!("{} {}: {e}", f.display(), arch.apk()));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn corpus_if_drops_steps_per_arch_and_ranges_expand() {
    let Some(s) = shared() else { return };
    let dir = s.join("corpus/melange");
    let pipes = vec![dir.join("pipelines")];
    let (x86, _) = compile_file(&dir.join("openblas.yaml"), &opts(Arch::Amd64, &pipes)).unwrap();
    let (arm, _) = compile_file(&dir.join("openblas.yaml"), &opts(Arch::Arm64, &pipes)).unwrap();
    let all = |c: &Compiled| scripts(&c.pipeline).join("\n");
    assert_ne!(
        all(&x86),
        all(&arm),
        "the if: on build.arch must change the steps"
    );
    let names: Vec<&str> = arm.subpackages.iter().map(|s| s.name.as_str()).collect();
    assert!(
        names.contains(&"libopenblas-0") && names.contains(&"libopenblas64-0"),
        "{names:?}"
    );
    // A data item with no value expands with an empty range.value.
    let (uv, _) = compile_file(&dir.join("py3-uvicorn.yaml"), &opts(Arch::Amd64, &pipes)).unwrap();
    let subs: Vec<&str> = uv.subpackages.iter().map(|s| s.name.as_str()).collect();
    assert!(
        subs.iter().any(|n| n.contains("3.10")) && subs.iter().any(|n| n.contains("3.13")),
        "{subs:?}"
    );
}

const FEATURES: &str = r#"
package:
  name: demo
  version: 1.10.2
  epoch: 3
  description: shows every feature
  copyright:
    - license: MIT
vars:
  flavour: plain
var-transforms:
  - from: ${{package.version}}
    match: ^(\d+)\.(\d+)\.\d+$
    replace: $1.$2
    to: major-minor
data:
  - name: langs
    items:
      de: German
      en: English
options:
  fancy:
    vars:
      flavour: fancy
    environment:
      contents:
        packages:
          add: [fancy-tools]
          remove: [busybox]
environment:
  contents:
    packages: [busybox, build-base]
pipeline:
  - name: x86 only
    if: ${{build.arch}} == 'x86_64'
    runs: echo x86 ${{host.triplet.gnu}}
  - name: arm only
    if: ${{build.arch}} == 'aarch64' || (${{vars.flavour}} == 'nope' && 'a' == 'a')
    runs: echo arm ${{host.triplet.rust}}
  - name: outer
    working-directory: src
    environment:
      CFLAGS: -O2
    pipeline:
      - uses: autoconf/make
        with:
          opts: V=${{vars.major-minor}} ${{vars.flavour}}
      - runs: echo inner in ${{targets.contextdir}}
subpackages:
  - range: langs
    name: demo-lang-${{range.key}}
    description: ${{range.value}} messages
    pipeline:
      - runs: mkdir -p ${{targets.subpkgdir}} && echo ${{range.value}} > ${{targets.contextdir}}/lang
"#;

#[test]
fn features_compile_exactly() {
    let d = tempfile::tempdir().unwrap();
    let f = write(d.path(), "demo.yaml", FEATURES);
    let (x86, _) = compile_file(&f, &opts(Arch::Amd64, &[])).unwrap();
    let s = scripts(&x86.pipeline);
    assert_eq!(s[0], "echo x86 x86_64-pc-linux-gnu");
    assert!(
        !s.iter().any(|x| x.starts_with("echo arm")),
        "the arm step is dropped on x86_64"
    );
    // The nested uses pipeline got the var-transform output, the working directory and the
    // environment of its parent.
    let outer = &x86.pipeline[1];
    assert_eq!(outer.name.as_deref(), Some("outer"));
    let make = &outer.pipeline[0];
    assert_eq!(make.uses.as_deref(), Some("autoconf/make"));
    assert_eq!(
        make.with.get("opts").map(String::as_str),
        Some("V=1.10 plain")
    );
    let make_runs = scripts(std::slice::from_ref(make)).join("\n");
    assert!(
        make_runs.contains("make -C . -j$(nproc) V=1 V=1.10 plain"),
        "{make_runs}"
    );
    assert!(
        make.pipeline
            .iter()
            .all(|c| c.working_directory == "/home/build/src" && c.environment["CFLAGS"] == "-O2")
    );
    assert_eq!(
        scripts(&outer.pipeline).last().unwrap(),
        "echo inner in /home/build/melange-out/demo"
    );
    // Ranges expand in key order, with range.* and the subpackage's own folders.
    let names: Vec<&str> = x86.subpackages.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["demo-lang-de", "demo-lang-en"]);
    assert_eq!(x86.subpackages[1].description, "English messages");
    assert_eq!(
        scripts(&x86.subpackages[0].pipeline)[0],
        "mkdir -p /home/build/melange-out/demo-lang-de && echo German > /home/build/melange-out/demo-lang-de/lang"
    );
    // needs of the used pipeline join the environment.
    assert!(
        x86.environment
            .contents
            .packages
            .contains(&"make".to_string())
    );
    let (arm, _) = compile_file(&f, &opts(Arch::Arm64, &[])).unwrap();
    assert_eq!(
        scripts(&arm.pipeline)[0],
        "echo arm aarch64-unknown-linux-gnu"
    );
    // A build option changes vars and the environment.
    let (fancy, _) = compile_file(
        &f,
        &CompileOptions {
            build_options: vec!["fancy".into()],
            ..opts(Arch::Amd64, &[])
        },
    )
    .unwrap();
    assert_eq!(fancy.pipeline[1].pipeline[0].with["opts"], "V=1.10 fancy");
    assert!(
        fancy
            .environment
            .contents
            .packages
            .contains(&"fancy-tools".to_string())
    );
    assert!(
        !fancy
            .environment
            .contents
            .packages
            .contains(&"busybox".to_string())
    );
    assert_eq!(fancy.vars["options.fancy.enabled"], "true");
}

/// A value each input accepts.
fn sample(input: &str) -> String {
    match input {
        "expected-sha256" => "a".repeat(64),
        "expected-sha512" => "b".repeat(128),
        "expected-commit" => "c".repeat(40),
        other => format!("OVERRIDE-{other}"),
    }
}

#[test]
fn every_builtin_pipeline_honours_defaults_and_overrides() {
    assert_eq!(BUILTIN_PIPELINES.len(), 51);
    let d = tempfile::tempdir().unwrap();
    for (name, text) in BUILTIN_PIPELINES {
        let def: pallet_build::compile::Pipeline =
            serde_saphyr::from_str(text).unwrap_or_else(|e| panic!("{name}: {e}"));
        let runs_text: String = def
            .pipeline
            .iter()
            .filter_map(|p| p.runs.clone())
            .collect::<Vec<_>>()
            .join("\n");
        let required: Vec<&String> = def
            .inputs
            .iter()
            .filter(|(_, i)| i.required)
            .map(|(k, _)| k)
            .collect();
        // 1. Defaults: only required inputs given; every literal default reaches the text.
        let mut with = String::new();
        for k in &required {
            with.push_str(&format!("      {k}: '{}'\n", sample(k)));
        }
        let yaml = |with: &str| {
            format!(
                "package:\n  name: p\n  version: 1.0.0\n  epoch: 0\npipeline:\n  - uses: {name}\n{}\nsubpackages:\n  - name: p-sub\n    pipeline:\n      - uses: {name}\n{}",
                if with.is_empty() {
                    String::new()
                } else {
                    format!("    with:\n{with}")
                },
                if with.is_empty() {
                    String::new()
                } else {
                    format!(
                        "        with:\n{}",
                        with.lines()
                            .map(|l| format!("    {l}\n"))
                            .collect::<String>()
                    )
                },
            )
        };
        let f = write(d.path(), "p.yaml", &yaml(&with));
        let (c, _) = compile_file(&f, &opts(Arch::Amd64, &[]))
            .unwrap_or_else(|e| panic!("{name} with defaults: {e}"));
        let text_defaults = scripts(&c.pipeline).join("\n");
        assert!(
            !text_defaults.trim().is_empty(),
            "{name}: compiled to no script"
        );
        assert!(
            !text_defaults.contains("${{"),
            "{name}: unsubstituted variable left:\n{text_defaults}"
        );
        for (k, i) in &def.inputs {
            if let Some(dv) = i
                .default
                .as_deref()
                .filter(|d| !d.is_empty() && !d.contains("${{"))
            {
                let used = runs_text.contains(&format!("inputs.{k}}}}}"));
                if used {
                    assert!(
                        text_defaults.contains(dv),
                        "{name}: default {k}={dv} missing from:\n{text_defaults}"
                    );
                }
            }
        }
        // 2. Overrides: every input given; every referenced input's value reaches the text.
        let mut with = String::new();
        for k in def.inputs.keys() {
            with.push_str(&format!("      {k}: '{}'\n", sample(k)));
        }
        let f = write(d.path(), "p.yaml", &yaml(&with));
        let (c, _) = compile_file(&f, &opts(Arch::Amd64, &[]))
            .unwrap_or_else(|e| panic!("{name} with overrides: {e}"));
        let text_over = scripts(&c.pipeline).join("\n");
        for k in def.inputs.keys() {
            if runs_text.contains(&format!("inputs.{k}}}}}")) {
                assert!(
                    text_over.contains(&sample(k)),
                    "{name}: override of {k} missing from:\n{text_over}"
                );
            }
        }
        // A subpackage's copy writes into its own folder.
        let sub = scripts(&c.subpackages[0].pipeline).join("\n");
        if runs_text.contains("targets.contextdir") {
            assert!(
                sub.contains("/home/build/melange-out/p-sub"),
                "{name}: contextdir in a subpackage:\n{sub}"
            );
        }
    }
}

#[test]
fn bad_input_is_named() {
    let d = tempfile::tempdir().unwrap();
    let base = "package:\n  name: p\n  version: 1.0.0\n";
    let cases: Vec<(&str, String, Vec<&str>)> = vec![
        (
            "unknown key",
            format!("{base}  descriptoin: typo\n"),
            vec!["bad.yaml", "line 4", "descriptoin"],
        ),
        (
            "wrong type",
            "package:\n  name: p\n  version: 1.0.0\n  epoch: many\n".into(),
            vec!["bad.yaml", "line 4"],
        ),
        (
            "undefined variable",
            format!("{base}pipeline:\n  - name: greet\n    runs: echo ${{{{vars.missing}}}}\n"),
            vec!["bad.yaml", "greet", "vars.missing"],
        ),
        (
            "unknown pipeline",
            format!("{base}pipeline:\n  - uses: no/such-thing\n"),
            vec!["bad.yaml", "no/such-thing", "unknown pipeline"],
        ),
        (
            "missing required input",
            format!(
                "{base}pipeline:\n  - uses: fetch\n    with:\n      expected-sha256: {}\n",
                "a".repeat(64)
            ),
            vec!["bad.yaml", "fetch", "requires input 'uri'"],
        ),
        (
            "undeclared input",
            format!("{base}pipeline:\n  - uses: strip\n    with:\n      bogus: 1\n"),
            vec!["bad.yaml", "strip", "'bogus' is not declared"],
        ),
        (
            "bad checksum format",
            format!(
                "{base}pipeline:\n  - uses: fetch\n    with:\n      uri: https://x/y.tar.gz\n      expected-sha256: nothex\n"
            ),
            vec!["expected-sha256", "64 hex"],
        ),
    ];
    for (what, yaml, needles) in cases {
        let f = write(d.path(), "bad.yaml", &yaml);
        let err = compile_file(&f, &opts(Arch::Amd64, &[]))
            .expect_err(what)
            .to_string();
        for n in needles {
            assert!(err.contains(n), "{what}: '{n}' missing from: {err}");
        }
    }
}

#[test]
fn conditions_evaluate_left_to_right() {
    let vars: BTreeMap<String, String> = [("a".to_string(), "1".to_string())].into();
    let ev = |c: &str| pallet_build::compile::evaluate_if(c, &vars).unwrap();
    assert!(ev("${{a}} == '1'"));
    assert!(!ev("${{a}} != '1'"));
    // Equal precedence, left to right: (true || false) && false = false.
    assert!(!ev("'x' == 'x' || 'a' == 'b' && 'c' == 'd'"));
    assert!(ev("'x' == 'x' || ('a' == 'b' && 'c' == 'd')"));
    assert!(ev(r#""${{a}}" == "1""#));
    assert!(pallet_build::compile::evaluate_if("${{nope}} == ''", &vars).is_err());
    assert!(pallet_build::compile::evaluate_if("bare == 'x'", &vars).is_err());
}

/// Snapshots of real corpus files: a var-transform (libmspack), subpackage ranges and an
/// `if:` per architecture (openblas), nested pipelines with inputs (git-lfs). Regenerate with
/// `UPDATE_SNAPSHOTS=1 cargo test -p pallet-build --test compile snapshots`.
#[test]
fn snapshots() {
    let Some(s) = shared() else { return };
    let dir = s.join("corpus/melange");
    let pipes = vec![dir.join("pipelines")];
    let snaps = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/snapshots");
    for (file, arch) in [
        ("libmspack.yaml", Arch::Amd64),
        ("openblas.yaml", Arch::Arm64),
        ("git-lfs.yaml", Arch::Amd64),
    ] {
        let (c, _) = compile_file(&dir.join(file), &opts(arch, &pipes)).unwrap();
        let got = serde_json::to_string_pretty(&c).unwrap() + "\n";
        let path = snaps.join(format!(
            "{}.{}.json",
            file.trim_end_matches(".yaml"),
            arch.apk()
        ));
        if std::env::var_os("UPDATE_SNAPSHOTS").is_some() {
            std::fs::create_dir_all(&snaps).unwrap();
            std::fs::write(&path, &got).unwrap();
            continue;
        }
        let want = std::fs::read_to_string(&path).unwrap_or_else(|_| {
            panic!(
                "missing snapshot {} (run with UPDATE_SNAPSHOTS=1)",
                path.display()
            )
        });
        assert!(
            got == want,
            "{} changed; diff it against a fresh UPDATE_SNAPSHOTS=1 run",
            path.display()
        );
    }
}

/// Small recipes in the shapes real Wolfi files take where a key is left empty (its entries
/// commented out, or nothing written after the colon). melange reads each with yaml.v3, where
/// null is the zero value, so each must compile here too.
const WOLFI_SHAPES: &[(&str, &str)] = &[
    (
        "meta package: no pipeline, commented-out dependencies",
        r#"
package:
  name: foo-compat
  version: "1.2"
  epoch: 0
  description:
  copyright:
    - license: MIT
  dependencies:
    runtime:
      # - foo
    provides:
environment:
  contents:
    packages:
      # - busybox
pipeline:
"#,
    ),
    (
        "subpackage whose pipeline and dependencies are commented out",
        r#"
package:
  name: bar
  version: 2.0.1
  epoch: 1
  description: bar
  copyright:
    - license: Apache-2.0
pipeline:
  - runs: mkdir -p ${{targets.destdir}}/usr/bin
subpackages:
  - name: bar-doc
    description: ~
    pipeline:
      # - uses: split/manpages
    dependencies:
      runtime:
  - name: bar-dev
    dependencies:
    options:
    pipeline:
      - uses: split/dev
        with:
"#,
    ),
    (
        "inputs left empty take their defaults",
        r#"
package:
  name: baz
  version: 0.3.0
  epoch: 0
  copyright:
    - license: MIT
vars:
  extra-flags:
pipeline:
  - uses: fetch
    with:
      uri: https://example.com/baz-${{package.version}}.tar.gz
      expected-sha256: 0000000000000000000000000000000000000000000000000000000000000000
      strip-components:
  - uses: autoconf/configure
    with:
      # opts: --disable-static
  - runs: make ${{vars.extra-flags}}
  - uses: strip
"#,
    ),
    (
        "a generated subpackage list with range: \"\"",
        r#"
package:
  name: qux
  version: "5"
  epoch: 0
  copyright:
    - license: MIT
data:
  - name: flavours
    items:
      small:
      large: big
subpackages:
  - name: qux-${{range.key}}
    range: flavours
    description: qux ${{range.value}}
    pipeline:
      - runs: echo ${{range.key}}
  - name: qux-common
    range: ""
    if: ""
    pipeline:
      - runs: echo common
"#,
    ),
    (
        "step names that hold references no compile variable defines",
        r#"
package:
  name: quux
  version: 1.0.0
  epoch: 0
  copyright:
    - license: MIT
vars:
  py: "3.12"
pipeline:
  - name: Build for python${{vars.py}} (${{inputs.python}})
    runs: echo build
  - name: Install into ${{targets.destdir}} ${{ matrix.os }}
    working-directory:
    runs: echo install
"#,
    ),
    (
        "empty test environment, options and capabilities",
        r#"
package:
  name: corge
  version: 4.5.6
  epoch: 2
  copyright:
    - license: BSD-3-Clause
  checks:
    disabled:
  scriptlets:
    post-install:
capabilities:
options:
  with-docs:
var-transforms:
update:
  enabled: true
  github:
    identifier: corge/corge
    strip-prefix:
pipeline:
  - runs: echo corge
    environment:
test:
  environment:
  pipeline:
    - runs: corge --version
      name:
"#,
    ),
];

#[test]
fn wolfi_shapes_with_empty_keys_compile() {
    let d = tempfile::tempdir().unwrap();
    let mut compiled = vec![];
    for (i, (what, text)) in WOLFI_SHAPES.iter().enumerate() {
        let f = write(d.path(), &format!("shape{i}.yaml"), text);
        let (c, _) =
            compile_file(&f, &opts(Arch::Amd64, &[])).unwrap_or_else(|e| panic!("{what}: {e}"));
        compiled.push(c);
    }
    let [meta, bar, baz, qux, quux, corge] = &compiled[..] else {
        unreachable!()
    };
    assert!(meta.pipeline.is_empty() && meta.package.dependencies.runtime.is_empty());
    assert!(meta.environment.contents.packages.is_empty());
    assert!(bar.subpackages[0].pipeline.is_empty());
    assert_eq!(
        bar.subpackages[1].pipeline[0].uses.as_deref(),
        Some("split/dev")
    );
    // strip-components: left empty is its default; the null var is "".
    let fetch = &baz.pipeline[0];
    assert!(
        !fetch.with.contains_key("strip-components"),
        "{:?}",
        fetch.with
    );
    assert!(scripts(&baz.pipeline).iter().any(|s| s == "make "));
    let names: Vec<&str> = qux.subpackages.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["qux-large", "qux-small", "qux-common"]);
    assert_eq!(qux.subpackages[1].description, "qux ");
    assert_eq!(
        quux.pipeline[0].name.as_deref(),
        Some("Build for python3.12 (${{inputs.python}})")
    );
    assert_eq!(
        quux.pipeline[1].name.as_deref(),
        Some("Install into ${{targets.destdir}} ${{ matrix.os }}")
    );
    assert_eq!(quux.pipeline[1].working_directory, "/home/build");
    assert!(
        corge
            .package
            .scriptlets
            .as_ref()
            .unwrap()
            .post_install
            .is_none()
    );
    let test = corge.test.as_ref().unwrap();
    assert_eq!(test.pipeline[0].name, None);
    assert!(test.environment.contents.packages.contains(&"corge".into()));
}
