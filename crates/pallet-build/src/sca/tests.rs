use super::*;
use std::os::unix::fs::symlink;
use std::process::Command;

fn names(v: &[Dependency]) -> Vec<String> {
    v.iter().map(ToString::to_string).collect()
}

fn write(root: &Path, rel: &str, data: impl AsRef<[u8]>, mode: u32) {
    let p = root.join(rel);
    fs::create_dir_all(p.parent().unwrap()).unwrap();
    fs::write(&p, data).unwrap();
    fs::set_permissions(&p, fs::Permissions::from_mode(mode)).unwrap();
}

fn link(root: &Path, rel: &str, target: &str) {
    let p = root.join(rel);
    fs::create_dir_all(p.parent().unwrap()).unwrap();
    symlink(target, p).unwrap();
}

/// Compile with the host's gcc; `None` (after a SKIPPED line) when there is none.
fn gcc(dir: &Path, args: &[&str]) -> Option<()> {
    match Command::new("gcc").args(args).current_dir(dir).output() {
        Ok(o) if o.status.success() => Some(()),
        Ok(o) => panic!("gcc {args:?}: {}", String::from_utf8_lossy(&o.stderr)),
        Err(_) => {
            eprintln!("SKIPPED: no gcc on this machine");
            None
        }
    }
}

/// A build of several packages: `melange-out/NAME` folders.
struct Build {
    _t: tempfile::TempDir,
    out: PathBuf,
    names: Vec<String>,
}

impl Build {
    fn new(names: &[&str]) -> Build {
        let t = tempfile::tempdir().unwrap();
        let out = t.path().join("melange-out");
        for n in names {
            fs::create_dir_all(out.join(n)).unwrap();
        }
        Build {
            _t: t,
            out,
            names: names.iter().map(|s| s.to_string()).collect(),
        }
    }

    fn dir(&self, name: &str) -> PathBuf {
        self.out.join(name)
    }

    fn analyze(&self, name: &str, runtime: &[&str], opts: ScaOptions) -> Generated {
        let spec = crate::assemble::PackageSpec {
            name: name.into(),
            depends: runtime
                .iter()
                .map(|d| Dependency::parse_lenient(d).unwrap())
                .collect(),
            sca: ScaOptions {
                relatives: self.names.clone(),
                ..opts
            },
            ..Default::default()
        };
        analyze_spec(&spec, &self.dir(name), "1.0-r0").unwrap()
    }
}

#[test]
fn versions_requires_and_paths() {
    assert_eq!(so_version("libz.so.1.3.1"), "1.3.1");
    assert_eq!(so_version("libfoo.so"), "0");
    assert_eq!(so_version("libaws-c-s3.so.0unstable"), "0");
    assert_eq!(so_version("libx.so.1.so.2"), "1");
    assert_eq!(
        pc_requires("zlib >= 1.2, libffi libssl = 3 glib-2.0>=2.70"),
        ["zlib", "libffi", "libssl", "glib-2.0"]
    );
    assert_eq!(
        pc_needs(
            "prefix=/usr\nmaj=3\nName: x\nRequires: libfoo${maj} >= 1\nRequires.private: z # c\nLibs: -lx\n"
        ),
        ["libfoo3", "z"]
    );
    assert!(in_dir("usr/lib/libx.so", &LIB_DIRS));
    assert!(!in_dir("usr/lib/x/libx.so", &LIB_DIRS));
    assert!(in_dir("my/lib/test/libx.so", &["my/lib/test"]));
    assert!(in_dir("boot/vmlinuz", &BOOT_DIRS));
    assert!(in_dir("lib/modules/6.1/kernel/a/b.ko", &BOOT_DIRS));
    assert!(!in_dir("lib/modulesx/b.ko", &BOOT_DIRS));
    assert!(glob_match("[0-9]*.[0-9]*.[0.9]*", "3.2.0"));
    assert!(!glob_match("[0-9]*.[0-9]*.[0.9]*", "3.3.1"));
    assert!(glob_match("perl[0-9]*", "perl5"));
    assert!(!glob_match("perl[0-9]*", "perlx"));
    assert!(glob_match("*_perl", "vendor_perl"));
    assert!(glob_match("python3.*", "python3.12"));
    assert!(glob_match("[^a]?", "bc") && !glob_match("[^a]?", "ac"));
}

#[test]
fn shebangs_as_melange_reads_them() {
    for (text, want) in [
        ("#!/usr/bin/env bash\n", Ok(Some("bash"))),
        (
            "#!/usr/bin/env python3.12\nwith open...\n",
            Ok(Some("python3.12")),
        ),
        ("#!/bin/sh\necho hi world\n", Ok(None)),
        ("#!/bin/dash\necho hi world\n", Ok(Some("/bin/dash"))),
        ("#!/usr/bin/env -S bash -x\necho hi\n", Ok(Some("bash"))),
        ("#!/usr/bin/env bash -x\necho hi\n", Err(())),
        ("#!/usr/bin/env\n", Err(())),
        ("cs101 assignment", Ok(None)),
        ("#!/usr/bin/perl", Ok(Some("/usr/bin/perl"))),
        ("#!   \n", Ok(None)),
        ("#!\n", Ok(None)),
        ("#", Ok(None)),
    ] {
        let got = shebang(text.as_bytes());
        match want {
            Ok(w) => assert_eq!(got.as_ref().ok().and_then(|o| o.as_deref()), w, "{text:?}"),
            Err(()) => assert!(got.is_err(), "{text:?}: {got:?}"),
        }
    }
}

#[test]
fn commands_shebangs_and_pc() {
    let d = tempfile::tempdir().unwrap();
    let r = d.path();
    write(r, "usr/bin/tool", "#!/usr/bin/env perl\nprint 1\n", 0o755);
    write(r, "usr/bin/data", "not executable", 0o644);
    write(r, "usr/bin/sub/deep", "#!/usr/bin/ruby\n", 0o755);
    write(
        r,
        "usr/lib/pkgconfig/foo.pc",
        "Name: foo\nRequires: zlib >= 1.2\n",
        0o644,
    );
    write(r, "usr/lib/foo/pkgconfig/bar.pc", "Name: bar\n", 0o644);
    link(r, "usr/lib/pkgconfig/alias.pc", "foo.pc");
    let g = analyze(r, "1.0-r0", ScaOptions::default()).unwrap();
    assert_eq!(names(&g.provides), ["cmd:tool=1.0-r0", "pc:foo=1.0-r0"]);
    assert_eq!(names(&g.depends), ["cmd:perl", "cmd:ruby", "pc:zlib"]);
    assert_eq!(names(&g.vendored), ["pc:bar=1.0-r0"]);
    let g = analyze(
        r,
        "1.0-r0",
        ScaOptions {
            no_commands: true,
            ..Default::default()
        },
    )
    .unwrap();
    assert_eq!(names(&g.provides), ["pc:foo=1.0-r0"]);
    assert_eq!(names(&g.depends), ["pc:zlib"]);
}

#[test]
fn language_and_documentation_dependencies() {
    let b = Build::new(&["langs", "langs-doc", "lib-perl"]);
    let r = b.dir("langs");
    write(
        &r,
        "usr/lib/python3.12/site-packages/foo/__init__.py",
        "",
        0o644,
    );
    write(
        &r,
        "usr/lib/ruby/gems/3.2.0/gems/base64-0.2.0/lib/base64.rb",
        "",
        0o644,
    );
    write(&r, "usr/lib/perl5/vendor_perl/JSON.pm", "", 0o644);
    let g = b.analyze("langs", &[], ScaOptions::default());
    assert_eq!(
        names(&g.depends),
        ["perl~5", "python-3.12-base", "ruby-3.2"]
    );
    // A configured dependency of the same kind keeps the generated one out.
    let g = b.analyze(
        "langs",
        &["perl", "python3", "ruby-3.2"],
        ScaOptions::default(),
    );
    assert!(g.depends.is_empty(), "{:?}", names(&g.depends));
    // `perl>=5` is not `perl`: melange compares the whole string.
    let g = b.analyze("langs", &["perl>=5", "ruby"], ScaOptions::default());
    assert_eq!(names(&g.depends), ["perl~5", "python-3.12-base"]);
    // Without the usr merge: lib/perl5/... gives the same perl~5.
    write(&b.dir("lib-perl"), "lib/perl5/site_perl/X.pm", "", 0o644);
    assert_eq!(
        names(&b.analyze("lib-perl", &[], ScaOptions::default()).depends),
        ["perl~5"]
    );
    // Documentation packages need their readers; other packages do not.
    let doc = b.dir("langs-doc");
    write(&doc, "usr/share/man/man1/x.1", "", 0o644);
    write(&doc, "usr/share/info/x.info", "", 0o644);
    let g = b.analyze("langs-doc", &[], ScaOptions::default());
    assert_eq!(names(&g.depends), ["man-db", "texinfo"]);
    fs::rename(b.dir("langs-doc"), b.dir("lib-perl").join("docs")).unwrap();
    fs::create_dir_all(b.dir("langs-doc")).unwrap();
    write(&b.dir("langs-doc"), "usr/share/doc/x/README", "", 0o644);
    assert!(
        b.analyze("langs-doc", &[], ScaOptions::default())
            .depends
            .is_empty()
    );
}

/// A library in the main package, its `.so` link in `-dev`, a program in `-tools`: melange's
/// sibling dereference and versioned needs.
#[test]
fn shared_libraries_across_sibling_packages() {
    let b = Build::new(&["foo", "foo-dev", "foo-tools"]);
    let src = b.out.parent().unwrap().join("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("foo.c"), "int foo(void) { return 42; }\n").unwrap();
    fs::write(
        src.join("main.c"),
        "int foo(void);\nint main(void) { return foo() - 42; }\n",
    )
    .unwrap();
    if gcc(
        &src,
        &[
            "-shared",
            "-fPIC",
            "-Wl,-soname,libfoo.so.1",
            "-o",
            "libfoo.so.1.2.3",
            "foo.c",
        ],
    )
    .is_none()
    {
        return;
    }
    gcc(&src, &["-o", "tool", "main.c", "-L.", "-l:libfoo.so.1.2.3"]).unwrap();
    let main = b.dir("foo");
    write(
        &main,
        "usr/lib/libfoo.so.1.2.3",
        fs::read(src.join("libfoo.so.1.2.3")).unwrap(),
        0o755,
    );
    link(&main, "usr/lib/libfoo.so.1", "libfoo.so.1.2.3");
    link(&b.dir("foo-dev"), "usr/lib/libfoo.so", "libfoo.so.1");
    write(
        &b.dir("foo-tools"),
        "usr/bin/tool",
        fs::read(src.join("tool")).unwrap(),
        0o755,
    );

    let g = b.analyze("foo", &[], ScaOptions::default());
    assert_eq!(
        names(&g.provides),
        ["so-ver:libfoo.so.1=1.0-r0", "so:libfoo.so.1=1"]
    );
    assert!(
        g.depends.iter().all(|d| !d.name.contains("libfoo")),
        "{:?}",
        names(&g.depends)
    );

    // The -dev link's target is found in the main package: its SONAME is needed.
    let g = b.analyze("foo-dev", &[], ScaOptions::default());
    assert_eq!(names(&g.depends), ["so:libfoo.so.1"]);
    assert!(g.provides.is_empty());

    // With versioned needs, a library of this build is needed at this build's version; the
    // host's libc (no package of this build) and the dynamic loader stay unversioned.
    let versioned = ScaOptions {
        versioned_shlib_depends: true,
        ..Default::default()
    };
    let g = b.analyze("foo-dev", &[], versioned.clone());
    assert_eq!(
        names(&g.depends),
        ["so-ver:libfoo.so.1>=1.0-r0", "so:libfoo.so.1"]
    );
    let g = b.analyze("foo-tools", &[], versioned.clone());
    let deps = names(&g.depends);
    assert!(
        deps.contains(&"so-ver:libfoo.so.1>=1.0-r0".into()),
        "{deps:?}"
    );
    assert!(deps.contains(&"so:libfoo.so.1".into()), "{deps:?}");
    assert!(
        deps.iter()
            .filter(|d| d.starts_with("so-ver:"))
            .all(|d| d.contains("libfoo")),
        "{deps:?}"
    );
    assert!(names(&g.provides).contains(&"cmd:tool=1.0-r0".into()));
    // no-versioned-shlib-deps wins over the setting.
    let g = b.analyze(
        "foo-tools",
        &[],
        ScaOptions {
            no_versioned_shlib_deps: true,
            ..versioned.clone()
        },
    );
    assert!(g.depends.iter().all(|d| !d.name.starts_with("so-ver:")));
    // The main package's own so-ver need is satisfied by its own provide.
    let g = b.analyze("foo", &[], versioned);
    assert!(g.depends.iter().all(|d| !d.name.contains("libfoo")));

    // A library outside the library folders is vendored: it satisfies the package's own
    // needs without being advertised.
    let v = Build::new(&["app"]);
    write(
        &v.dir("app"),
        "usr/libexec/app/libfoo.so.1",
        fs::read(src.join("libfoo.so.1.2.3")).unwrap(),
        0o755,
    );
    write(
        &v.dir("app"),
        "usr/libexec/app/tool",
        fs::read(src.join("tool")).unwrap(),
        0o755,
    );
    let g = v.analyze("app", &[], ScaOptions::default());
    assert!(g.provides.is_empty(), "{:?}", names(&g.provides));
    assert_eq!(
        names(&g.vendored),
        ["so-ver:libfoo.so.1=1.0-r0", "so:libfoo.so.1=1"]
    );
    assert!(g.depends.iter().all(|d| !d.name.contains("libfoo")));
    // ... unless a package of the build names its folder in etc/ld.so.conf.d.
    let w = Build::new(&["app", "app-conf"]);
    for f in ["libfoo.so.1", "tool"] {
        let rel = format!("usr/libexec/app/{f}");
        write(
            &w.dir("app"),
            &rel,
            fs::read(v.dir("app").join(&rel)).unwrap(),
            0o755,
        );
    }
    write(
        &w.dir("app-conf"),
        "etc/ld.so.conf.d/app.conf",
        "# app\n/usr/libexec/app\n",
        0o644,
    );
    let g = w.analyze("app", &[], ScaOptions::default());
    assert_eq!(
        names(&g.provides),
        ["so-ver:libfoo.so.1=1.0-r0", "so:libfoo.so.1=1"]
    );
}

#[test]
fn host_injected_libraries_are_left_out() {
    let b = Build::new(&["cuda"]);
    let src = b.out.parent().unwrap().join("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("c.c"), "int cuInit(int x) { return x; }\n").unwrap();
    fs::write(
        src.join("m.c"),
        "int cuInit(int);\nint main(void) { return cuInit(0); }\n",
    )
    .unwrap();
    if gcc(
        &src,
        &[
            "-shared",
            "-fPIC",
            "-Wl,-soname,libcuda.so.1",
            "-o",
            "libcuda.so.1",
            "c.c",
        ],
    )
    .is_none()
    {
        return;
    }
    gcc(&src, &["-o", "m", "m.c", "-L.", "-l:libcuda.so.1"]).unwrap();
    write(
        &b.dir("cuda"),
        "usr/lib/libcuda.so.1",
        fs::read(src.join("libcuda.so.1")).unwrap(),
        0o755,
    );
    write(
        &b.dir("cuda"),
        "usr/bin/m",
        fs::read(src.join("m")).unwrap(),
        0o755,
    );
    let g = b.analyze("cuda", &[], ScaOptions::default());
    assert!(
        g.provides.iter().all(|p| !p.name.contains("cuda")),
        "{:?}",
        names(&g.provides)
    );
    assert!(
        g.depends.iter().all(|p| !p.name.contains("cuda")),
        "{:?}",
        names(&g.depends)
    );
}

#[test]
fn go_fips_binaries_need_openssl() {
    let b = Build::new(&["gofips", "goplain"]);
    let src = b.out.parent().unwrap().join("src");
    fs::create_dir_all(&src).unwrap();
    for (name, settings) in [
        (
            "gofips",
            &[
                ("CGO_ENABLED", "1"),
                ("GOEXPERIMENT", "boringcrypto"),
                ("GOOS", "linux"),
            ][..],
        ),
        ("goplain", &[("CGO_ENABLED", "1"), ("GOOS", "linux")][..]),
    ] {
        let blob = goinfo::testing::blob(settings);
        let bytes: Vec<String> = blob.iter().map(|b| b.to_string()).collect();
        let c = format!(
            "__attribute__((section(\".go.buildinfo\"), aligned(16), used))\nconst unsigned char buildinfo[] = {{{}}};\nint main(void) {{ return buildinfo[0] - 255; }}\n",
            bytes.join(",")
        );
        fs::write(src.join(format!("{name}.c")), c).unwrap();
        if gcc(&src, &["-o", name, &format!("{name}.c")]).is_none() {
            return;
        }
        write(
            &b.dir(name),
            "usr/bin/app",
            fs::read(src.join(name)).unwrap(),
            0o755,
        );
    }
    let data = fs::read(b.dir("gofips").join("usr/bin/app")).unwrap();
    let settings = goinfo::build_settings(&Elf::parse(&data).unwrap()).unwrap();
    assert!(settings.contains(&("GOEXPERIMENT".into(), "boringcrypto".into())));
    let deps = names(&b.analyze("gofips", &[], ScaOptions::default()).depends);
    assert!(
        deps.contains(&"openssl-config-fipshardened".into()),
        "{deps:?}"
    );
    assert!(deps.contains(&"so:libcrypto.so.3".into()), "{deps:?}");
    let deps = names(&b.analyze("goplain", &[], ScaOptions::default()).depends);
    assert!(
        !deps.contains(&"openssl-config-fipshardened".into()),
        "{deps:?}"
    );
    // A C program is no Go program.
    let me = fs::read(std::env::current_exe().unwrap()).unwrap();
    assert!(goinfo::build_settings(&Elf::parse(&me).unwrap()).is_none());
}

#[test]
fn kernels_and_modules() {
    use std::io::Write;
    let b = Build::new(&["linux", "linux-modules"]);
    let mut bz = vec![0u8; 0x400];
    bz[514..518].copy_from_slice(b"HdrS");
    bz[526..528].copy_from_slice(&0x100u16.to_le_bytes());
    bz[0x300..0x31a].copy_from_slice(b"6.17.7-r0 (b@x) #1 SMP\0\0\0\0");
    write(&b.dir("linux"), "boot/vmlinuz", &bz, 0o644);
    write(&b.dir("linux"), "boot/config-6.17.7", "CONFIG_X=y\n", 0o644);
    let g = b.analyze("linux", &[], ScaOptions::default());
    assert_eq!(names(&g.provides), ["linux:6.17.7-r0"]);
    let m = b"\x7fELF\0\0vermagic=6.17.7-r0 SMP preempt mod_unload\0";
    let mut gz = flate2::write::GzEncoder::new(vec![], flate2::Compression::default());
    gz.write_all(m).unwrap();
    write(
        &b.dir("linux-modules"),
        "usr/lib/modules/6.17.7-r0/kernel/fs/x.ko.gz",
        gz.finish().unwrap(),
        0o644,
    );
    write(
        &b.dir("linux-modules"),
        "usr/lib/modules/6.17.7-r0/kernel/fs/y.ko",
        m,
        0o644,
    );
    let g = b.analyze("linux-modules", &[], ScaOptions::default());
    assert_eq!(names(&g.depends), ["linux:6.17.7-r0"]);
    assert!(g.provides.is_empty());
}

/// Alpine's libcap2 (musl, libraries that are also executables): melange's
/// TestExecableSharedObjects on a real package made by others.
#[test]
fn alpine_libcap() {
    let Some(shared) = pallet_test_support::shared() else {
        return;
    };
    let apk = shared.join("fixtures/alpine-3.19/x86_64/libcap2-2.69-r1.apk");
    let b = Build::new(&["libcap2"]);
    let root = b.dir("libcap2");
    pallet_apk_stream::read_apk(
        fs::File::open(&apk).unwrap(),
        &pallet_apk_stream::ReadOptions::default(),
        |e, r| {
            use pallet_apk_stream::tarw::Kind;
            let p = root.join(&e.path);
            match e.kind {
                Kind::Dir => fs::create_dir_all(&p)?,
                Kind::Symlink => symlink(&e.link, &p)?,
                Kind::File => {
                    let mut data = vec![];
                    r.read_to_end(&mut data)?;
                    fs::write(&p, data)?;
                    fs::set_permissions(&p, fs::Permissions::from_mode(e.mode & 0o7777))?;
                }
                _ => {}
            }
            Ok(())
        },
    )
    .unwrap();
    let g = b.analyze("libcap2", &[], ScaOptions::default());
    assert_eq!(names(&g.depends), ["so:libc.musl-x86_64.so.1"]);
    assert_eq!(
        names(&g.provides),
        [
            "so-ver:libcap.so.2=1.0-r0",
            "so-ver:libpsx.so.2=1.0-r0",
            "so:libcap.so.2=2",
            "so:libpsx.so.2=2"
        ]
    );
}

#[test]
fn symlinks_never_leave_the_tree() {
    let d = tempfile::tempdir().unwrap();
    let r = d.path().join("root");
    write(&r, "usr/lib/real", "x", 0o644);
    link(&r, "usr/lib/rel", "real");
    link(&r, "usr/lib/abs", "/usr/lib/real");
    link(&r, "usr/lib/up", "../../../../../../etc/passwd");
    link(&r, "usr/lib/loop", "loop");
    assert_eq!(resolve(&r, "usr/lib/rel"), Some(r.join("usr/lib/real")));
    assert_eq!(resolve(&r, "usr/lib/abs"), Some(r.join("usr/lib/real")));
    assert_eq!(resolve(&r, "usr/lib/up"), None);
    assert_eq!(resolve(&r, "usr/lib/loop"), None);
}

#[test]
fn elf_from_the_host() {
    // A dynamically linked binary of this machine shows its interpreter and libc.
    let d = tempfile::tempdir().unwrap();
    fs::create_dir_all(d.path().join("usr/bin")).unwrap();
    let Ok(_) = fs::copy("/bin/ls", d.path().join("usr/bin/ls")) else {
        eprintln!("SKIPPED: no /bin/ls");
        return;
    };
    let g = analyze(d.path(), "1-r0", ScaOptions::default()).unwrap();
    let deps: Vec<String> = g.depends.iter().map(|d| d.name.clone()).collect();
    assert!(deps.iter().any(|d| d.starts_with("so:libc.so")), "{deps:?}");
    assert!(
        deps.iter().any(|d| d.starts_with("so:ld-linux")),
        "{deps:?}"
    );
    assert!(g.provides.iter().any(|p| p.name == "cmd:ls"));
}
