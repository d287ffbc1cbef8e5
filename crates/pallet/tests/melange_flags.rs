//! Wolfi's Makefile, unchanged: `melange build` and `melange test` with every flag wolfi-dev/os
//! passes (plus melange's logging and lint-output flags), and apko's global `-C`,
//! `--log-level`, `--format` and size guards, each checked by what it does.

mod common;

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::*;

fn face(d: &Path, name: &str) -> PathBuf {
    let m = d.join(name);
    if !m.exists() {
        std::os::unix::fs::symlink(pallet(), &m).unwrap();
    }
    m
}

fn run_face(d: &Path, name: &str, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut c = Command::new(face(d, name));
    c.args(args).current_dir(d);
    for (k, v) in env {
        c.env(k, v);
    }
    c.output().unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Every file of an .apk (signature, control and data sections) by path.
fn apk_files(p: &Path) -> BTreeMap<String, Vec<u8>> {
    use std::io::Read;
    let mut raw = vec![];
    flate2::read::MultiGzDecoder::new(fs::File::open(p).unwrap())
        .read_to_end(&mut raw)
        .unwrap();
    let mut ar = tar::Archive::new(&raw[..]);
    ar.set_ignore_zeros(true);
    let mut out = BTreeMap::new();
    for e in ar.entries().unwrap() {
        let mut e = e.unwrap();
        let path = e.path().unwrap().to_string_lossy().into_owned();
        let mut body = vec![];
        e.read_to_end(&mut body).unwrap();
        out.insert(path, body);
    }
    out
}

fn host_arch() -> &'static str {
    match std::env::consts::ARCH {
        "aarch64" => "aarch64",
        _ => "x86_64",
    }
}

const RECIPE: &str = r#"package:
  name: flags-demo
  version: 1.2.3
  epoch: 4
  description: Wolfi Makefile flags
  copyright:
    - license: MIT
vars:
  greeting: plain
  extra: usr/share/flags-demo/extra
options:
  loud:
    vars:
      greeting: LOUD
  in-opt:
    vars:
      extra: opt/flags-demo
environment:
  environment:
    BOTH: from-yaml
pipeline:
  - uses: local/greet
    with:
      word: ${{vars.greeting}}
  - runs: |
      d=${{targets.destdir}}/usr/share/flags-demo
      mkdir -p $d ${{targets.destdir}}/${{vars.extra}}
      printf '%s\n' "BOTH=$BOTH" "ARCHONLY=$ARCHONLY" "ORDER=$ORDER" "COMMON=$COMMON" \
        "GOFLAGS=[$GOFLAGS]" "QUOTED=$QUOTED" "UV=$UV_PYTHON_DOWNLOADS" > $d/env
      echo extra > ${{targets.destdir}}/${{vars.extra}}/file
"#;

const GREET: &str = r#"name: greet
inputs:
  word:
    required: true
pipeline:
  - runs: |
      mkdir -p ${{targets.destdir}}/usr/bin
      printf '#!/bin/sh\necho %s\n' "${{inputs.word}}" > ${{targets.destdir}}/usr/bin/flags-demo
      chmod 755 ${{targets.destdir}}/usr/bin/flags-demo
"#;

/// A checkout laid out as wolfi-dev/os is: recipes and env files at the top, `pipelines/`,
/// a source folder per package, a key made by `melange keygen`.
fn wolfi_checkout(d: &Path, arch: &str) -> Option<String> {
    fs::write(d.join("flags-demo.yaml"), RECIPE).unwrap();
    fs::create_dir_all(d.join("pipelines/local")).unwrap();
    fs::write(d.join("pipelines/local/greet.yaml"), GREET).unwrap();
    fs::create_dir_all(d.join("flags-demo")).unwrap();
    fs::write(
        d.join(format!("build-{arch}.env")),
        "## environment for this architecture\nexport ARCHONLY=yes\nexport ORDER=arch-file\nBOTH=from-arch-file\n",
    )
    .unwrap();
    fs::write(
        d.join("build-common.env"),
        "## common environment\nexport GOFLAGS=\"\"\nexport ORDER=common-file\nexport COMMON='single quoted'\n\n# a comment\nBOTH=from-common\nQUOTED=\"a b\" # trailing comment\nUV_PYTHON_DOWNLOADS=never\n",
    )
    .unwrap();
    let o = run_face(
        d,
        "melange",
        &["keygen", "--key-size", "2048", "local-melange.rsa"],
        &[],
    );
    assert!(o.status.success(), "{}", text(&o));
    // A git checkout, so the commit is detected as melange detects it.
    let git = |args: &[&str]| {
        Command::new("git")
            .args(["-c", "user.name=t", "-c", "user.email=t@example.invalid"])
            .args(args)
            .current_dir(d)
            .output()
            .ok()
            .filter(|o| o.status.success())
    };
    git(&["init", "-q"])?;
    git(&["add", "flags-demo.yaml"])?;
    git(&["commit", "-q", "-m", "recipe"])?;
    let head = git(&["rev-parse", "HEAD"])?;
    Some(String::from_utf8_lossy(&head.stdout).trim().to_string())
}

#[test]
fn wolfi_makefile_build_flags_all_take_effect() {
    if !have("bwrap") {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let d = t.path();
    let arch = host_arch();
    let commit = wolfi_checkout(d, arch);
    let cache = d.join("tmp/melange-cache");
    fs::create_dir_all(&cache).unwrap();
    let repo = d.join("packages");
    let tmp = d.join("tmp");
    let env = [
        ("SOURCE_DATE_EPOCH", "1700000000"),
        ("TMPDIR", tmp.to_str().unwrap()),
    ];
    // $(MELANGE) build "$(yamlfile)" $(MELANGE_DEBUG_OPTS) "--source-dir=./$(pkgname)/", with
    // LINT=yes, and the Makefile's default runner (qemu).
    let cache_flag = format!("--cache-dir={}", cache.display());
    let apk_cache_flag = format!("--apk-cache-dir={}", cache.display());
    let arch_flag = format!("--arch={arch}");
    let env_arch = format!("--env-file=build-{arch}.env");
    let repo_flag = format!("--repository-append={}", repo.display());
    let args = [
        "build",
        "flags-demo.yaml",
        "--debug",
        "--interactive",
        "--package-append=apk-tools",
        "--runner=qemu",
        &apk_cache_flag,
        &arch_flag,
        &cache_flag,
        "--cleanup",
        &env_arch,
        "--env-file=build-common.env",
        "--git-repo-url=https://github.com/wolfi-dev/os",
        "--keyring-append=local-melange.rsa.pub",
        "--license=Apache-2.0",
        "--namespace=wolfi",
        "--package-append=busybox",
        "--pipeline-dir=./pipelines/",
        &repo_flag,
        "--signing-key=local-melange.rsa",
        "--fail-on-lint-warning",
        "--keyring-append=https://packages.wolfi.dev/os/wolfi-signing.rsa.pub",
        "--repository-append=https://packages.wolfi.dev/os",
        "--source-dir=./flags-demo/",
        // What the brief adds to the Makefile's set, and the bootstrap guest (no network).
        "--bootstrap",
        "--build-option=loud",
        "--generate-index",
        "--persist-lint-results",
        "--create-build-log",
        "--dependency-log=deps.json",
        "--log-level=debug",
    ];
    let o = run_face(d, "melange", &args, &env);
    let err = stderr(&o);
    assert!(o.status.success(), "{}", text(&o));
    // Flags that cannot apply say so, each in one line.
    for (flag, why) in [
        ("instead of the qemu runner", "only bubblewrap can share"),
        ("nothing is installed", "--package-append"),
    ] {
        let lines: Vec<&str> = err.lines().filter(|l| l.contains(flag)).collect();
        assert_eq!(lines.len(), 1, "{flag}: {err}");
        assert!(lines[0].contains(why), "{flag}: {}", lines[0]);
    }
    // --debug traces the steps.
    assert!(err.contains("+ mkdir -p"), "{err}");

    let dir = d.join(format!("packages/{arch}"));
    let apk = dir.join("flags-demo-1.2.3-r4.apk");
    let files = apk_files(&apk);
    // --env-file: the YAML's environment wins over the files, the first file over the second.
    let envtxt = String::from_utf8_lossy(&files["usr/share/flags-demo/env"]).into_owned();
    assert_eq!(
        envtxt,
        "BOTH=from-yaml\nARCHONLY=yes\nORDER=arch-file\nCOMMON=single quoted\nGOFLAGS=[]\nQUOTED=a b\nUV=never\n"
    );
    // --pipeline-dir and --build-option: the local pipeline ran with the option's var.
    assert_eq!(
        String::from_utf8_lossy(&files["usr/bin/flags-demo"]),
        "#!/bin/sh\necho LOUD\n"
    );
    // --namespace: .PKGINFO maintainer; the detected commit stands in for package.commit.
    let pkginfo = String::from_utf8_lossy(&files[".PKGINFO"]).into_owned();
    assert!(pkginfo.contains("\nmaintainer = wolfi\n"), "{pkginfo}");
    if let Some(c) = &commit {
        assert!(pkginfo.contains(&format!("\ncommit = {c}\n")), "{pkginfo}");
    }
    // --license, --git-repo-url, --namespace in the package's SBOM.
    let sbom: serde_json::Value =
        serde_json::from_slice(&files["var/lib/db/sbom/flags-demo-1.2.3-r4.spdx.json"]).unwrap();
    let pkgs = sbom["packages"].as_array().unwrap();
    assert_eq!(pkgs[0]["supplier"], "Organization: Wolfi");
    assert_eq!(
        pkgs[0]["externalRefs"][0]["referenceLocator"],
        format!("pkg:apk/wolfi/flags-demo@1.2.3-r4?arch={arch}&distro=wolfi")
    );
    let cfg = pkgs
        .iter()
        .find(|p| p["name"] == "flags-demo.yaml")
        .unwrap_or_else(|| panic!("no build-configuration package: {sbom}"));
    assert_eq!(cfg["licenseDeclared"], "Apache-2.0");
    let c = commit.clone().unwrap_or_else(|| "unknown".into());
    assert_eq!(cfg["versionInfo"], c.as_str());
    assert_eq!(
        cfg["externalRefs"][0]["referenceLocator"],
        format!("pkg:github/wolfi-dev/os@{c}#flags-demo.yaml")
    );
    assert_eq!(sbom["relationships"][0]["relationshipType"], "DESCRIBED_BY");
    // --signing-key and --generate-index: a signed index the public key verifies.
    let o = run(
        &[
            "verify",
            "--keyring",
            "local-melange.rsa.pub",
            apk.to_str().unwrap(),
            dir.join("APKINDEX.tar.gz").to_str().unwrap(),
        ],
        d,
        &[],
    );
    assert!(o.status.success(), "{}", text(&o));
    // --create-build-log: melange's packages.log in the working folder.
    assert_eq!(
        fs::read_to_string(d.join("packages.log")).unwrap(),
        format!("{arch}|flags-demo|flags-demo|1.2.3-r4\n")
    );
    // --dependency-log: melange's JSON of what SCA generated, in FILE.ARCH.
    let deps: serde_json::Value =
        serde_json::from_slice(&fs::read(d.join(format!("deps.json.{arch}"))).unwrap()).unwrap();
    assert_eq!(
        deps,
        serde_json::json!({"provides": ["cmd:flags-demo=1.2.3-r4"]})
    );
    // --persist-lint-results: a clean package has no findings, so no file (as melange).
    assert!(!dir.join("lint-flags-demo-1.2.3-r4.json").exists());
    // --cache-dir exists; --cleanup removed the scratch folders.
    assert!(cache.is_dir());
    let left: Vec<_> = fs::read_dir(&tmp)
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("pallet-build-"))
        .collect();
    assert!(left.is_empty(), "scratch folders left: {left:?}");

    // The same build through `pallet pkg build`, with a finding: --persist-lint-results writes
    // melange's lint JSON, --cleanup=false keeps the build folders, --log-level warn says once
    // that it does not filter.
    let o = run(
        &[
            "pkg",
            "build",
            "flags-demo.yaml",
            "--log-level",
            "warn",
            "--bootstrap",
            &arch_flag,
            "--pipeline-dirs=./pipelines/",
            "--source-dir=./flags-demo/",
            "--signing-key=local-melange.rsa",
            "--build-option=in-opt",
            "--persist-lint-results",
            "--cleanup=false",
            "--runner=bubblewrap",
        ],
        d,
        &env,
    );
    let err = stderr(&o);
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(
        err.lines().filter(|l| l.contains("--log-level")).count(),
        1,
        "{err}"
    );
    assert!(!err.contains("--runner"), "{err}");
    let lint: serde_json::Value =
        serde_json::from_slice(&fs::read(dir.join("lint-flags-demo-1.2.3-r4.json")).unwrap())
            .unwrap();
    assert_eq!(lint["package_name"], "flags-demo-1.2.3-r4");
    assert!(
        lint["findings"]["opt"][0]["message"]
            .as_str()
            .unwrap()
            .contains("opt/flags-demo/file"),
        "{lint}"
    );
    let kept = err
        .lines()
        .find_map(|l| l.strip_prefix("kept the build folders in "))
        .unwrap_or_else(|| panic!("{err}"));
    assert!(
        Path::new(kept)
            .join("workspace/melange-out/flags-demo")
            .is_dir()
    );
    // packages.log only grows with --create-build-log.
    assert_eq!(
        fs::read_to_string(d.join("packages.log"))
            .unwrap()
            .lines()
            .count(),
        1
    );

    // --fail-on-lint-warning makes that warning an error.
    let o = run_face(
        d,
        "melange",
        &[
            "build",
            "flags-demo.yaml",
            "--bootstrap",
            &arch_flag,
            "--pipeline-dir=./pipelines/",
            "--source-dir=./flags-demo/",
            "--build-option=in-opt",
            "--fail-on-lint-warning",
            "--out-dir=failed",
        ],
        &env,
    );
    let msg = text(&o);
    assert!(!o.status.success(), "{msg}");
    assert!(
        msg.contains("--fail-on-lint-warning") && msg.contains("opt"),
        "{msg}"
    );
    assert!(
        !d.join(format!("failed/{arch}/flags-demo-1.2.3-r4.apk"))
            .exists()
    );
}

#[test]
fn wolfi_makefile_test_flags_are_accepted() {
    let t = tempfile::tempdir().unwrap();
    let d = t.path();
    let arch = host_arch();
    fs::write(d.join("flags-demo.yaml"), RECIPE).unwrap();
    fs::create_dir_all(d.join("pipelines/local")).unwrap();
    fs::write(d.join("pipelines/local/greet.yaml"), GREET).unwrap();
    fs::create_dir_all(d.join("flags-demo")).unwrap();
    // $(MELANGE) test $(yamlfile) $(MELANGE_TEST_OPTS) $(MELANGE_DEBUG_TEST_OPTS) --source-dir=…
    let arch_flag = format!("--arch={arch}");
    let o = run_face(
        d,
        "melange",
        &[
            "test",
            "flags-demo.yaml",
            "--runner=qemu",
            "--repository-append=./packages",
            "--keyring-append=local-melange.rsa.pub",
            &arch_flag,
            "--pipeline-dirs=./pipelines/",
            "--repository-append=https://packages.wolfi.dev/os",
            "--keyring-append=https://packages.wolfi.dev/os/wolfi-signing.rsa.pub",
            "--test-package-append=wolfi-base",
            "--debug",
            "--interactive",
            "--source-dir=./flags-demo/",
            "--workspace-dir=./flags-demo/",
            "--rm=false",
            "--gcplog",
            "--log-level=info",
        ],
        &[],
    );
    let msg = text(&o);
    // Everything parsed; the recipe simply has no test: section.
    assert!(!o.status.success());
    assert!(msg.contains("has no test: pipelines"), "{msg}");
    // The qemu runner is real now: nothing about it to say before the test is found missing.
    assert!(!msg.contains("runner"), "{msg}");
    // A runner melange does not have is an error.
    let o = run_face(
        d,
        "melange",
        &["test", "flags-demo.yaml", "--runner=lima"],
        &[],
    );
    assert!(!o.status.success() && text(&o).contains("unknown runner"));
}

/// A one-package repository pallet makes itself, under `w/`.
fn tiny_repo(w: &Path, arch: &str) {
    let ok = |o: Output| assert!(o.status.success(), "{}", text(&o));
    fs::create_dir_all(w.join(format!("repo/{arch}"))).unwrap();
    ok(run(&["keygen", "--bits", "2048", "k.rsa"], w, &[]));
    let root = w.join("root");
    fs::create_dir_all(root.join("etc")).unwrap();
    fs::write(root.join("etc/hello"), "hello\n".repeat(64)).unwrap();
    let out = format!("repo/{arch}/hello-1.0-r0.apk");
    ok(run(
        &[
            "mkpkg",
            "--info",
            "name=hello",
            "--info",
            "version=1.0-r0",
            "--info",
            &format!("arch={arch}"),
            "--files",
            "root",
            "-o",
            &out,
            "--signing-key",
            "k.rsa",
        ],
        w,
        &[],
    ));
    ok(run(
        &[
            "index",
            "-o",
            &format!("repo/{arch}/APKINDEX.tar.gz"),
            "--signing-key",
            "k.rsa",
            &out,
        ],
        w,
        &[],
    ));
    fs::write(
        w.join("image.yaml"),
        "contents:\n  repositories: [repo]\n  keyring: [k.rsa.pub]\n  packages: [hello]\n",
    )
    .unwrap();
}

#[test]
fn apko_workdir_log_level_format_and_size_limits() {
    let t = tempfile::tempdir().unwrap();
    let d = t.path();
    let arch = host_arch();
    let w = d.join("w");
    tiny_repo(&w, arch);
    let arch_flag = format!("--arch={arch}");
    // -C first: every relative path (config, repository, key, output, cache) is read from w/.
    let o = run_face(
        d,
        "apko",
        &[
            "-C",
            "w",
            "--log-level",
            "debug",
            "build",
            "image.yaml",
            "hello:1",
            "out.tar",
            "--format",
            "tar",
            &arch_flag,
            "--cache-dir",
            "c1",
            "--max-apkindex-decompressed-size=1048576",
            "--max-apk-control-size=65536",
            "--max-apk-data-size=1048576",
            "--max-http-response-size=-1",
        ],
        &[],
    );
    assert!(o.status.success(), "{}", text(&o));
    assert!(w.join("out.tar").is_file() && !d.join("out.tar").exists());
    assert!(w.join(format!("sbom-{arch}.spdx.json")).is_file());
    // --log-level after the subcommand, and a quiet level says once that it does not filter.
    let o = run_face(
        &w,
        "apko",
        &[
            "build",
            "image.yaml",
            "hello:1",
            "out2.tar",
            &arch_flag,
            "--cache-dir",
            "c2",
            "--log-level=error",
        ],
        &[],
    );
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(
        stderr(&o)
            .lines()
            .filter(|l| l.contains("--log-level"))
            .count(),
        1
    );
    // The size guards are enforced: a data section over the limit, an index over the limit.
    for (flag, what) in [
        ("--max-apk-data-size=16", "data section"),
        ("--max-apkindex-decompressed-size=16", "limit"),
    ] {
        let o = run_face(
            &w,
            "apko",
            &[
                "build",
                "image.yaml",
                "hello:1",
                "bad.tar",
                &arch_flag,
                "--cache-dir",
                &format!("c-{}", flag.len()),
                flag,
            ],
            &[],
        );
        assert!(!o.status.success(), "{flag}: {}", text(&o));
        assert!(text(&o).contains(what), "{flag}: {}", text(&o));
    }
    let o = run_face(
        &w,
        "apko",
        &[
            "build",
            "image.yaml",
            "hello:1",
            "x.tar",
            "--max-apk-data-size=-5",
        ],
        &[],
    );
    assert!(!o.status.success() && text(&o).contains("-1 for no limit"));
    // --format erofs is refused in one line saying why; publish takes the same flags.
    for cmd in [
        vec!["build", "image.yaml", "hello:1", "x.tar"],
        vec!["publish", "image.yaml", "127.0.0.1:9/x:1"],
    ] {
        let mut args = cmd.clone();
        args.extend(["--format", "erofs", "--max-http-response-size", "1000"]);
        let o = run_face(&w, "apko", &args, &[]);
        assert!(!o.status.success());
        let e = stderr(&o);
        assert!(e.contains("--format erofs") && e.contains("tar"), "{e}");
    }
    // -C to a folder that is not there is a clear error.
    let o = run_face(d, "apko", &["-C", "nope", "show-config", "image.yaml"], &[]);
    assert!(!o.status.success() && text(&o).contains("-C nope"));
}

/// melange's remaining build flags: `--timeout` stops a step that `package.timeout` would
/// allow, `--empty-workspace` copies no sources, `--strip-origin-name` makes each subpackage
/// its own origin, `--debug-runner` keeps the guest and says where, and the flags pallet cannot
/// honour (`--generate-provenance`, `--trace`, `--cache-source`, `--cpumodel`, `--disk` with
/// bubblewrap) each say so in one line.
#[test]
fn melange_timeout_workspace_origin_and_runner_flags() {
    let Some(s) = shared() else { return };
    if !have("bwrap") {
        return;
    }
    let a = s.join("fixtures/alpine-3.19");
    let t = tempfile::tempdir().unwrap();
    let d = t.path();
    fs::create_dir_all(d.join("src")).unwrap();
    fs::write(d.join("src/from-source"), "x").unwrap();
    let recipe = |runs: &str| {
        format!(
            "package: {{name: flags, version: 1.0.0, epoch: 0, description: d, copyright: [{{license: MIT}}], timeout: 1h}}\nenvironment:\n  contents:\n    repositories: [{}]\n    keyring:\n{}    packages: [busybox]\npipeline:\n  - runs: |\n      {runs}\nsubpackages:\n  - name: flags-extra\n    pipeline:\n      - runs: mkdir -p ${{{{targets.subpkgdir}}}}/e && touch ${{{{targets.subpkgdir}}}}/e/f\n",
            a.display(),
            keyring_yaml(&a.join("keys"))
        )
    };
    fs::write(d.join("slow.yaml"), recipe("echo started; sleep 30")).unwrap();
    let started = std::time::Instant::now();
    let o = run_face(
        d,
        "melange",
        &[
            "build",
            "slow.yaml",
            "--arch",
            "x86_64",
            "--timeout",
            "2s",
            "--out-dir",
            "out-slow",
            "--source-dir",
            "src",
        ],
        &[],
    );
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("package.timeout") && stderr(&o).contains("started"),
        "{}",
        stderr(&o)
    );
    assert!(
        started.elapsed() < std::time::Duration::from_secs(25),
        "the step was not stopped"
    );
    let o = run_face(
        d,
        "melange",
        &["build", "slow.yaml", "--timeout", "soon"],
        &[],
    );
    assert!(
        !o.status.success() && stderr(&o).contains("--timeout"),
        "{}",
        stderr(&o)
    );

    fs::write(
        d.join("ok.yaml"),
        recipe("mkdir -p ${{targets.destdir}}/s && ls /home/build > ${{targets.destdir}}/s/ls"),
    )
    .unwrap();
    let o = run_face(
        d,
        "melange",
        &[
            "build",
            "ok.yaml",
            "--arch",
            "x86_64",
            "--out-dir",
            "out",
            "--source-dir",
            "src",
            "--empty-workspace",
            "--strip-origin-name",
            "--debug-runner",
            "--generate-provenance",
            "--trace",
            "t.json",
            "--cache-source",
            "x",
            "--cpumodel",
            "max",
            "--disk",
            "10Gi",
        ],
        &[("SOURCE_DATE_EPOCH", "1700000000")],
    );
    let err = stderr(&o);
    assert!(o.status.success(), "{err}");
    let ls = apk_member(&d.join("out/x86_64/flags-1.0.0-r0.apk"), "s/ls");
    assert!(
        !ls.contains("from-source"),
        "--empty-workspace copied sources: {ls}"
    );
    assert!(pkginfo(&d.join("out/x86_64/flags-1.0.0-r0.apk")).contains("origin = flags\n"));
    let extra = pkginfo(&d.join("out/x86_64/flags-extra-1.0.0-r0.apk"));
    assert!(extra.contains("origin = flags-extra\n"), "{extra}");
    for said in [
        "--generate-provenance",
        "--trace",
        "--cache-source",
        "--cpumodel and --disk",
        "--debug-runner: kept the guest's files in",
    ] {
        assert!(err.contains(said), "no line for {said}: {err}");
    }
    let kept = err
        .lines()
        .find_map(|l| l.split("--debug-runner: kept the guest's files in ").nth(1))
        .unwrap();
    assert!(Path::new(kept.trim()).join("guest").is_dir(), "{kept}");
    let _ = fs::remove_dir_all(kept.trim());
    // Without the flag, sources are copied and subpackages keep the main package as origin.
    let o = run_face(
        d,
        "melange",
        &[
            "build",
            "ok.yaml",
            "--arch",
            "x86_64",
            "--out-dir",
            "out2",
            "--source-dir",
            "src",
        ],
        &[("SOURCE_DATE_EPOCH", "1700000000")],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(apk_member(&d.join("out2/x86_64/flags-1.0.0-r0.apk"), "s/ls").contains("from-source"));
    assert!(pkginfo(&d.join("out2/x86_64/flags-extra-1.0.0-r0.apk")).contains("origin = flags\n"));
}

/// `compile` takes every build flag, as melange's does (Makefiles pass one flag set to every
/// command): the ones that shape the configuration reach the printed JSON, and one line names
/// those that only a build uses.
#[test]
fn compile_takes_the_build_flags() {
    let t = tempfile::tempdir().unwrap();
    let d = t.path();
    fs::write(
        d.join("p.yaml"),
        "package: {name: p, version: 1.0.0, epoch: 0, resources: {cpu: '4'}}\nenvironment:\n  environment: {A: yaml}\npipeline:\n  - runs: echo hi\n",
    )
    .unwrap();
    fs::write(d.join("x.env"), "A=file\nB=file-b\n").unwrap();
    let o = run_face(
        d,
        "melange",
        &[
            "compile",
            "--rm",
            "--arch",
            "x86_64",
            "--env-file",
            "x.env",
            "--memory",
            "8Gi",
            "--timeout",
            "30m",
            "--git-commit",
            "abc123",
            "--signing-key",
            "k.rsa",
            "-r",
            "./packages",
            "-k",
            "k.rsa.pub",
            "--package-append",
            "bash",
            "--namespace",
            "wolfi",
            "--out-dir",
            "out",
            "--source-dir",
            ".",
            "--runner",
            "bubblewrap",
            "--log-policy",
            "builtin:stderr",
            "--fail-on-lint-warning",
            "--generate-index=false",
            "p.yaml",
        ],
        &[],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(
        v["environment"]["environment"]["A"], "yaml",
        "the file's own environment wins"
    );
    assert_eq!(v["environment"]["environment"]["B"], "file-b");
    assert_eq!(v["package"]["resources"]["cpu"], "4");
    assert_eq!(v["package"]["resources"]["memory"], "8Gi");
    assert_eq!(v["package"]["timeout"], "30m");
    assert_eq!(v["package"]["commit"], "abc123");
    let err = stderr(&o);
    assert!(
        err.contains("note: compile prints the configuration and builds nothing, so --signing-key, --keyring-append, --repository-append, --package-append, --out-dir, --source-dir, --generate-index, --namespace, --runner, --fail-on-lint-warning are not used"),
        "{err}"
    );
    assert!(!err.contains("git-repo-url"), "{err}");
    assert!(!d.join("out").exists(), "compile builds nothing");
    // One architecture's configuration at a time.
    let o = run_face(
        d,
        "melange",
        &["compile", "--arch", "x86_64,aarch64", "p.yaml"],
        &[],
    );
    assert!(!o.status.success());
    assert!(stderr(&o).contains("name one"), "{}", stderr(&o));
}

/// `completion SHELL` on both faces prints a script for that shell and that command name.
#[test]
fn completion_scripts_for_both_faces() {
    let t = tempfile::tempdir().unwrap();
    for (face, shell, want) in [
        ("melange", "bash", "_melange()"),
        ("apko", "zsh", "#compdef apko"),
        ("apko", "fish", "complete -c apko"),
    ] {
        let o = run_face(t.path(), face, &["completion", shell], &[]);
        assert!(o.status.success(), "{}", stderr(&o));
        let out = String::from_utf8_lossy(&o.stdout);
        assert!(out.contains(want), "{face} {shell}: {out}");
        assert!(out.contains("build"), "{face} {shell}");
    }
}
