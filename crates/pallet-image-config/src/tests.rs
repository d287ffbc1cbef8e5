use super::*;

fn parse(y: &str) -> Result<ImageConfiguration, ConfigError> {
    parse_str(y, Path::new("t.yaml"))
}

#[test]
fn unknown_key_names_file_line_column() {
    let err = parse("contents:\n  packages: [a]\nos-release:\n  id: x\n").unwrap_err();
    match &err {
        ConfigError::Parse {
            path,
            line,
            column,
            message,
        } => {
            assert_eq!(path, Path::new("t.yaml"));
            assert_eq!((*line, *column), (3, 1), "{message}");
            assert!(message.contains("os-release"), "{message}");
        }
        e => panic!("wrong error {e:?}"),
    }
    let text = err.to_string();
    assert!(text.contains("t.yaml") && text.contains("line 3"), "{text}");
    let nested = parse("contents:\n  pakages: [a]\n").unwrap_err();
    assert!(
        matches!(
            nested,
            ConfigError::Parse {
                line: 2,
                column: 3,
                ..
            }
        ),
        "{nested:?}"
    );
}

#[test]
fn scalars_fill_strings_as_written() {
    let c =
        parse("accounts:\n  run-as: 10000\nenvironment:\n  PORT: 3000\n  DEBUG: true\n").unwrap();
    assert_eq!(c.accounts.run_as, "10000");
    assert_eq!(c.environment["PORT"], "3000");
    assert_eq!(c.environment["DEBUG"], "true");
}

#[test]
fn permissions_are_octal() {
    for mode in ["0o755", "0755", "493"] {
        let c = parse(&format!(
            "paths:\n  - path: /x\n    type: directory\n    permissions: {mode}\n"
        ))
        .unwrap();
        assert_eq!(c.paths[0].permissions, Some(0o755), "{mode}");
        assert_eq!(c.paths[0].permissions, Some(493));
    }
    assert!(parse("paths:\n  - path: /x\n    type: directory\n    permissions: 0o9\n").is_err());
    assert!(parse("paths:\n  - path: /x\n    type: dir\n").is_err());
}

#[test]
fn entrypoint_split_and_shell_fragment() {
    let c = parse("entrypoint:\n  command: /usr/bin/nginx -g \"daemon off;\"\ncmd: --flag 'a b'\n")
        .unwrap();
    assert_eq!(
        c.entrypoint_argv().unwrap(),
        ["/usr/bin/nginx", "-g", "daemon off;"]
    );
    assert_eq!(c.cmd_argv().unwrap(), ["--flag", "a b"]);
    let c = parse("entrypoint:\n  command: ignored\n  shell-fragment: echo $HOME && ls\n").unwrap();
    assert_eq!(
        c.entrypoint_argv().unwrap(),
        ["/bin/sh", "-c", "echo $HOME && ls"]
    );
}

#[test]
fn service_bundle_fixup() {
    let mut c =
        parse("entrypoint:\n  type: service-bundle\n  services:\n    nginx: /usr/sbin/nginx\n")
            .unwrap();
    validate(&mut c).unwrap();
    assert_eq!(c.entrypoint.command, "/bin/s6-svscan /sv");
    assert_eq!(c.contents.packages, ["s6"]);
}

#[test]
fn validation_messages() {
    let mut c = parse("accounts:\n  users:\n    - username: a\n      uid: 0\n").unwrap();
    assert!(validate(&mut c).unwrap_err().contains("has UID 0"));
    let mut c = parse("accounts:\n  groups:\n    - gid: 5\n").unwrap();
    assert!(
        validate(&mut c)
            .unwrap_err()
            .contains("no configured group name")
    );
    let mut c = parse("layering:\n  strategy: size\n").unwrap();
    assert!(
        validate(&mut c)
            .unwrap_err()
            .contains("unsupported layering strategy")
    );
    let mut c =
        parse("contents:\n  runtime_keyring:\n    - name: ../evil\n      content: x\n").unwrap();
    assert!(
        validate(&mut c)
            .unwrap_err()
            .contains("runtime keyring name")
    );
    let mut c = parse("accounts:\n  users:\n    - username: a\n      uid: 5\n").unwrap();
    validate(&mut c).unwrap();
    assert_eq!(c.accounts.users[0].homedir, "/home/a");
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("b.yaml");
    std::fs::write(
        &f,
        "contents:\n  baseimage:\n    image: x\n    apkindex: y\ncmd: z\n",
    )
    .unwrap();
    let e = load(&f, &[]).unwrap_err().to_string();
    assert!(
        e.contains("when using base image, the only supported image specification are"),
        "{e}"
    );
}

#[test]
fn archs_and_defaults() {
    let c = parse("archs: [x86_64, arm/v7, aarch64, amd64]\n").unwrap();
    assert_eq!(c.target_archs(&[]), [Arch::Amd64, Arch::ArmV7, Arch::Arm64]);
    assert_eq!(c.target_archs(&[Arch::S390x]), [Arch::S390x]);
    assert_eq!(ImageConfiguration::default().target_archs(&[]).len(), 9);
    assert!(parse("archs: [sparc]\n").is_err());
}

#[test]
fn empty_lists_and_tags() {
    let c = parse(
        "contents:\n  repositories:\n    - '@local /tmp/repo'\n  packages:\n    # nothing yet\n",
    )
    .unwrap();
    assert_eq!(c.contents.repositories, ["@local /tmp/repo"]);
    assert!(c.contents.packages.is_empty());
}

#[test]
fn include_merge() {
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path().join("base.yaml");
    std::fs::write(
        &base,
        "contents:\n  repositories: [r1]\n  packages: [a]\ncmd: base\nwork-dir: /base\nenvironment:\n  A: base\n  B: base\narchs: [x86_64]\n",
    )
    .unwrap();
    let top = dir.path().join("top.yaml");
    std::fs::write(
        &top,
        "include: base.yaml\ncontents:\n  packages: [b]\n  repositories: ['r2/']\ncmd: top\nenvironment:\n  A: top\n",
    )
    .unwrap();
    let l = load(&top, &[]).unwrap();
    assert_eq!(l.config.contents.packages, ["a", "b"]);
    assert_eq!(l.config.contents.repositories, ["r1", "r2"]);
    assert_eq!(l.config.cmd, "top");
    assert_eq!(l.config.work_dir, "/base");
    assert_eq!(l.config.environment["A"], "top");
    assert_eq!(l.config.environment["B"], "base");
    assert_eq!(l.config.archs, [Arch::Amd64]);
    assert!(l.config.include.is_empty());
    assert_eq!(l.files, [top.clone(), base.clone()]);
    let mut all = std::fs::read(&top).unwrap();
    all.extend(std::fs::read(&base).unwrap());
    assert_eq!(l.checksum, config_checksum(&all));
    assert!(l.checksum.starts_with("sha256-"));

    // Found through --include-paths when not beside the file.
    let sub = tempfile::tempdir().unwrap();
    let other = sub.path().join("o.yaml");
    std::fs::write(&other, "include: base.yaml\n").unwrap();
    assert!(matches!(
        load(&other, &[]),
        Err(ConfigError::IncludeNotFound { .. })
    ));
    assert_eq!(
        load(&other, &[dir.path().to_path_buf()])
            .unwrap()
            .config
            .cmd,
        "base"
    );

    let loop_file = dir.path().join("loop.yaml");
    std::fs::write(&loop_file, "include: loop.yaml\n").unwrap();
    assert!(matches!(
        load(&loop_file, &[]),
        Err(ConfigError::IncludeLoop { .. })
    ));
}

#[test]
fn show_config_round_trips() {
    let y = "contents:\n  repositories: ['https://user:tok@example.com/os']\n  packages: [a]\naccounts:\n  run-as: 65532\npaths:\n  - path: /x\n    type: directory\n    permissions: 0o755\narchs: [armv7]\n";
    let c = parse(y).unwrap();
    let out = c.to_show_config_yaml();
    assert!(!out.contains("tok"), "{out}");
    assert!(out.contains("https://user:xxxxx@example.com/os"), "{out}");
    assert_eq!(
        redact_userinfo("@tag https://u:p@h/x"),
        "@tag https://u:xxxxx@h/x"
    );
    assert_eq!(redact_userinfo("https://h/x@y"), "https://h/x@y");
    let back = parse(&out).unwrap();
    assert_eq!(back.accounts.run_as, "65532");
    assert_eq!(back.paths[0].permissions, Some(0o755));
    assert_eq!(back.archs, [Arch::ArmV7]);
}

#[test]
fn annotation_flags() {
    let m = parse_annotation_flags(&["org.opencontainers.image.url:https://x.dev/a"]).unwrap();
    assert_eq!(m["org.opencontainers.image.url"], "https://x.dev/a");
    assert!(parse_annotation_flags(&["novalue"]).is_err());
    assert!(parse_annotation_flags(&["Bad_Key:v"]).is_err());
}

proptest::proptest! {
    #[test]
    fn garbage_never_panics(s in "\\PC{0,200}") {
        let _ = parse(&s);
    }

    #[test]
    fn yamlish_garbage_never_panics(s in "[a-z:\\-\\[\\]{}\\n '\"0-9#&*!|>]{0,120}") {
        let _ = parse(&s);
    }
}

#[test]
fn load_error_names_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("apko.yaml");
    std::fs::write(
        &f,
        "contents:\n  packages: [a]\n\nentrypoint:\n  command: x\n  bogus: 1\n",
    )
    .unwrap();
    let e = load(&f, &[]).unwrap_err();
    let text = e.to_string();
    assert!(
        text.contains("apko.yaml") && text.contains("line 6, column 3") && text.contains("bogus"),
        "{text}"
    );
    assert!(matches!(
        load(&dir.path().join("missing.yaml"), &[]),
        Err(ConfigError::Read { .. })
    ));
}
