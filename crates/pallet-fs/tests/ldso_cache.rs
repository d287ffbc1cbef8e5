//! `/etc/ld.so.cache`: the pure pieces (conf syntax, globs, ELF reading, loader order,
//! encoding) on hand-made inputs, then whole trees of the host's real glibc libraries, read
//! back by glibc's own `ldconfig -p` and used by the real dynamic loader.

use std::cmp::Ordering;
use std::fs;
use std::path::Path;
use std::process::Command;

use pallet_fs::ldso::{self, CacheEntry, ConfLine};
use pallet_fs::{Node, Tree};

/// A minimal ELF shared object: one PT_LOAD over the whole file, a PT_DYNAMIC with
/// DT_STRTAB/DT_STRSZ and the given SONAMEs.
fn elf(wide: bool, big: bool, machine: u16, flags: u32, sonames: &[&str]) -> Vec<u8> {
    let w16 = |v: u16| {
        if big {
            v.to_be_bytes()
        } else {
            v.to_le_bytes()
        }
    };
    let w32 = |v: u32| {
        if big {
            v.to_be_bytes()
        } else {
            v.to_le_bytes()
        }
    };
    let word = |v: u64| -> Vec<u8> {
        match (wide, big) {
            (true, true) => v.to_be_bytes().to_vec(),
            (true, false) => v.to_le_bytes().to_vec(),
            (false, true) => (v as u32).to_be_bytes().to_vec(),
            (false, false) => (v as u32).to_le_bytes().to_vec(),
        }
    };
    let (ehsize, phsize, dynsize) = if wide { (64, 56, 16) } else { (52, 32, 8) };
    let mut strtab = vec![0u8];
    let mut offs = vec![];
    for s in sonames {
        offs.push(strtab.len() as u64);
        strtab.extend_from_slice(s.as_bytes());
        strtab.push(0);
    }
    let vaddr = 0x1000u64;
    let ph_off = ehsize as u64;
    let dyn_off = ph_off + 2 * phsize as u64;
    let ndyn = offs.len() + 3;
    let str_off = dyn_off + (ndyn * dynsize) as u64;
    let total = str_off + strtab.len() as u64;
    let mut f = vec![
        0x7f,
        b'E',
        b'L',
        b'F',
        if wide { 2 } else { 1 },
        if big { 2 } else { 1 },
        1,
    ];
    f.resize(16, 0);
    f.extend(w16(3)); // ET_DYN
    f.extend(w16(machine));
    f.extend(w32(1));
    f.extend(word(0)); // entry
    f.extend(word(ph_off));
    f.extend(word(0)); // shoff
    f.extend(w32(flags));
    f.extend(w16(ehsize as u16));
    f.extend(w16(phsize as u16));
    f.extend(w16(2));
    f.extend(w16(0));
    f.extend(w16(0));
    f.extend(w16(0));
    assert_eq!(f.len(), ehsize);
    let ph = |kind: u32, off: u64, addr: u64, size: u64| -> Vec<u8> {
        let mut p = vec![];
        if wide {
            p.extend(w32(kind));
            p.extend(w32(4));
            p.extend(word(off));
            p.extend(word(addr));
            p.extend(word(addr));
            p.extend(word(size));
            p.extend(word(size));
            p.extend(word(8));
        } else {
            p.extend(w32(kind));
            p.extend(word(off));
            p.extend(word(addr));
            p.extend(word(addr));
            p.extend(word(size));
            p.extend(word(size));
            p.extend(w32(4));
            p.extend(word(4));
        }
        p
    };
    f.extend(ph(1, 0, vaddr, total));
    f.extend(ph(2, dyn_off, vaddr + dyn_off, (ndyn * dynsize) as u64));
    let dynent = |tag: u64, val: u64| [word(tag), word(val)].concat();
    f.extend(dynent(5, vaddr + str_off));
    f.extend(dynent(10, strtab.len() as u64));
    for o in offs {
        f.extend(dynent(14, o));
    }
    f.extend(dynent(0, 0));
    f.extend(strtab);
    assert_eq!(f.len() as u64, total);
    f
}

fn x86_64(sonames: &[&str]) -> Vec<u8> {
    elf(true, false, 62, 0, sonames)
}

/// Read a cache back: (flags, key, value) per entry. A second reader besides glibc's, for
/// hosts without `ldconfig` and for checks `ldconfig -p` does not print.
fn decode(b: &[u8]) -> Vec<(u32, String, String)> {
    assert_eq!(&b[..20], b"glibc-ld.so.cache1.1");
    let big = b[28] == 3;
    let u32at = |at: usize| {
        let v: [u8; 4] = b[at..at + 4].try_into().unwrap();
        if big {
            u32::from_be_bytes(v)
        } else {
            u32::from_le_bytes(v)
        }
    };
    let n = u32at(20) as usize;
    let strings = u32at(24) as usize;
    assert_eq!(
        b.len(),
        48 + n * 24 + strings,
        "no bytes beyond the string table"
    );
    let cstr = |at: usize| {
        let end = b[at..].iter().position(|c| *c == 0).unwrap();
        String::from_utf8(b[at..at + end].to_vec()).unwrap()
    };
    (0..n)
        .map(|i| {
            let e = 48 + i * 24;
            (
                u32at(e),
                cstr(u32at(e + 4) as usize),
                cstr(u32at(e + 8) as usize),
            )
        })
        .collect()
}

#[test]
fn conf_syntax_follows_ldconfig() {
    let text = "# comment\n\
                include /etc/ld.so.conf.d/*.conf  extra.conf\n\
                /usr/local/lib/ # trailing comment\n\
                \t/opt/lib=libc6\n\
                hwcap 0 nosegneg\n\
                HWCAP 1 x\n\
                /\n\
                includes/lib\n\
                /after/include\n\
                hwcaé /ünïcode\n";
    assert_eq!(
        ldso::parse_conf(text),
        vec![
            ConfLine::Include("/etc/ld.so.conf.d/*.conf".into()),
            ConfLine::Include("extra.conf".into()),
            ConfLine::Dir("/usr/local/lib".into()),
            ConfLine::Dir("/opt/lib".into()),
            ConfLine::Dir("includes/lib".into()),
            ConfLine::Dir("/after/include".into()),
            ConfLine::Dir("hwcaé /ünïcode".into()),
        ]
    );
}

#[test]
fn glob_matches_like_glob3() {
    let yes = [
        ("*.conf", "libc.conf"),
        ("*", "a"),
        ("lib?.conf", "libc.conf"),
        ("[a-c]x", "bx"),
        ("[!a-c]x", "dx"),
        ("[^a]x", "bx"),
        ("[]]", "]"),
        ("a\\*", "a*"),
        (".*", ".hidden"),
        ("[", "["),
        ("*a*b*c", "xxaxxbxxc"),
    ];
    let no = [
        ("*.conf", "libc.conf.bak"),
        ("*", ".hidden"),
        ("[a-c]x", "dx"),
        ("[!a-c]x", "ax"),
        ("a\\*", "ab"),
        ("lib?.conf", "lib.conf"),
        ("*a*b*c", "xxaxxbxx"),
    ];
    for (p, n) in yes {
        assert!(ldso::glob_match(p, n), "{p} should match {n}");
    }
    for (p, n) in no {
        assert!(!ldso::glob_match(p, n), "{p} should not match {n}");
    }
}

#[test]
fn lib_filenames() {
    assert_eq!(
        ldso::parse_lib_filename("libfoo.so.1"),
        Some(("libfoo", "1"))
    );
    assert_eq!(ldso::parse_lib_filename("libfoo.so"), Some(("libfoo", "")));
    assert_eq!(
        ldso::parse_lib_filename("ld-linux-x86-64.so.2"),
        Some(("ld-linux-x86-64", "2"))
    );
    assert_eq!(
        ldso::parse_lib_filename("libstdc++.so.6.0.32"),
        Some(("libstdc++", "6.0.32"))
    );
    assert_eq!(ldso::parse_lib_filename("foo.so.1"), None);
    assert_eq!(ldso::parse_lib_filename("libfoo.a"), None);
}

#[test]
fn libcmp_is_the_loaders_comparison() {
    use Ordering::*;
    let cases = [
        ("libc.so.6", "libc.so.6", Equal),
        ("libfoo.so.10", "libfoo.so.9", Greater),
        ("libfoo.so.1", "libfoo.so", Greater),
        ("libfoo1.so", "libfoo.so", Greater), // a digit sorts after any other byte
        ("liba.so", "libb.so", Less),
        ("libfoo.so.01", "libfoo.so.1", Equal), // numbers, not strings
        ("libz.so.1", "libz.so.1.2", Less),
    ];
    for (a, b, want) in cases {
        assert_eq!(ldso::libcmp(a, b), want, "{a} vs {b}");
        assert_eq!(ldso::libcmp(b, a), want.reverse(), "{b} vs {a}");
    }
}

#[test]
fn sort_is_descending_and_stable_per_name() {
    let e = |key: &str, value: &str, flags| CacheEntry {
        flags,
        key: key.into(),
        value: value.into(),
        hwcap: 0,
    };
    let mut v = vec![
        e("liba.so.1", "/lib/liba.so.1", 0x303),
        e("libz.so.1", "/lib/libz.so.1", 0x303),
        e("liba.so.10", "/lib/liba.so.10", 0x303),
        e("libz.so.1", "/opt/libz.so.1", 0x303),
        e("libz.so.1", "/x32/libz.so.1", 0x803),
    ];
    ldso::sort_entries(&mut v);
    let order: Vec<&str> = v.iter().map(|e| e.value.as_str()).collect();
    assert_eq!(
        order,
        [
            "/x32/libz.so.1",
            "/lib/libz.so.1",
            "/opt/libz.so.1",
            "/lib/liba.so.10",
            "/lib/liba.so.1"
        ]
    );
}

#[test]
fn encoding_layout() {
    let entries = vec![
        CacheEntry {
            flags: 0x303,
            key: "libz.so.1".into(),
            value: "/lib/libz.so.1".into(),
            hwcap: 0,
        },
        CacheEntry {
            flags: 0x303,
            key: "odd".into(),
            value: "/lib/other".into(),
            hwcap: 0,
        },
    ];
    let b = ldso::encode_cache(&entries, false);
    assert_eq!(&b[..17], b"glibc-ld.so.cache");
    assert_eq!(&b[17..20], b"1.1");
    assert_eq!(b[28], 2, "little-endian flag");
    assert_eq!(
        decode(&b),
        vec![
            (0x303, "libz.so.1".into(), "/lib/libz.so.1".into()),
            (0x303, "odd".into(), "/lib/other".into()),
        ]
    );
    // The key shares the path's tail, as in ldconfig's string table.
    let key = u32::from_le_bytes(b[52..56].try_into().unwrap());
    let value = u32::from_le_bytes(b[56..60].try_into().unwrap());
    assert_eq!(key, value + "/lib/".len() as u32);
    let be = ldso::encode_cache(&entries, true);
    assert_eq!(be[28], 3);
    assert_eq!(decode(&be), decode(&b));
    assert_eq!(ldso::encode_cache(&[], false).len(), 48);
}

#[test]
fn elf_reading_all_classes_and_byte_orders() {
    for (wide, big, machine, flags, want) in [
        (true, false, 62, 0, Some(0x0303)),
        (false, false, 62, 0, Some(0x0803)),
        (true, false, 183, 0, Some(0x0a03)),
        (true, true, 22, 0, Some(0x0403)),
        (true, false, 21, 2, Some(0x0503)),
        (false, false, 40, 0x0500_0400, Some(0x0903)),
        (false, false, 40, 0x0500_0200, Some(0x0b03)),
        (false, false, 40, 0, Some(0x0003)),
        (true, false, 243, 0x5, Some(0x1003)),
        (true, false, 243, 0x2, None), // single-float ABI: no glibc port
        (true, false, 258, 0x3, Some(0x1203)),
        (true, false, 8, 0, None), // MIPS: not a target here
    ] {
        let b = elf(wide, big, machine, flags, &["libfoo.so.1"]);
        let info = ldso::read_elf(b.as_slice()).unwrap();
        assert_eq!(info.sonames, ["libfoo.so.1"]);
        assert_eq!(
            (info.class64, info.big_endian, info.machine),
            (wide, big, machine)
        );
        assert_eq!(
            ldso::cache_flags(&info),
            want,
            "machine {machine} flags {flags:#x}"
        );
    }
    let none = ldso::read_elf(x86_64(&[]).as_slice()).unwrap();
    assert!(none.sonames.is_empty());
    assert!(matches!(
        ldso::read_elf(b"/* GNU ld script */ GROUP ( libc.so.6 )".as_slice()),
        Err(ldso::ElfError::NotElf)
    ));
    let full = x86_64(&["libfoo.so.1"]);
    for cut in [20, 60, 100, full.len() - 3] {
        assert!(ldso::read_elf(&full[..cut]).is_err(), "truncated at {cut}");
    }
    let mut exec = full.clone();
    exec[16] = 2; // ET_EXEC
    assert!(matches!(
        ldso::read_elf(exec.as_slice()),
        Err(ldso::ElfError::NotShared(2))
    ));
}

/// A usr-merged tree (Wolfi's layout) with synthetic libraries.
fn synthetic_tree() -> Tree {
    let mut t = Tree::new();
    t.mkdir_all("usr/lib", 0o755, 0);
    t.put("lib", Node::symlink("usr/lib", 0));
    t.mkdir_all("etc/ld.so.conf.d", 0o755, 0);
    let file = |t: &mut Tree, p: &str, b: Vec<u8>| t.put(p, Node::file(b, 0o644, 0));
    file(
        &mut t,
        "etc/ld.so.conf",
        b"include /etc/ld.so.conf.d/*.conf\n/opt/after\n".to_vec(),
    );
    file(
        &mut t,
        "etc/ld.so.conf.d/b.conf",
        b"/usr/lib/\ninclude ../nested.conf\n".to_vec(),
    );
    file(
        &mut t,
        "etc/ld.so.conf.d/a.conf",
        b"/usr/local/lib\n".to_vec(),
    );
    file(
        &mut t,
        "etc/ld.so.conf.d/.hidden.conf",
        b"/hidden\n".to_vec(),
    );
    file(
        &mut t,
        "etc/ld.so.conf.d/c.conf.disabled",
        b"/disabled\n".to_vec(),
    );
    file(&mut t, "etc/nested.conf", b"/nested\n".to_vec());
    // Written through the `lib` link: they land in usr/lib.
    file(&mut t, "lib/libz.so.1.3", x86_64(&["libz.so.1"]));
    t.put("lib/libz.so.1", Node::symlink("libz.so.1.3", 0));
    t.put("lib/libz.so", Node::symlink("libz.so.1", 0));
    file(&mut t, "lib/libnosoname.so", x86_64(&[]));
    file(&mut t, "lib/libc.so", b"/* GNU ld script */".to_vec());
    file(
        &mut t,
        "lib/libother.so.2",
        elf(true, false, 183, 0, &["libother.so.2"]),
    );
    t.put("lib/libdangling.so.1", Node::symlink("nowhere.so.1", 0));
    t.mkdir_all("lib/sub", 0o755, 0);
    file(&mut t, "lib/sub/libsub.so.1", x86_64(&["libsub.so.1"]));
    for d in ["usr/local/lib", "opt/after", "nested", "hidden", "disabled"] {
        t.mkdir_all(d, 0o755, 0);
        let name = format!("lib{}.so.1", d.replace('/', "_"));
        file(&mut t, &format!("{d}/{name}"), x86_64(&[&name]));
    }
    t
}

#[test]
fn tree_cache_entries() {
    let t = synthetic_tree();
    assert!(t.nodes.contains_key("usr/lib/libz.so.1.3"));
    assert!(!t.nodes.keys().any(|k| k.starts_with("lib/")));
    let got = decode(&t.ld_so_cache().unwrap().unwrap());
    let mut pairs: Vec<(String, String)> =
        got.iter().map(|(_, k, v)| (k.clone(), v.clone())).collect();
    assert!(
        got.iter()
            .all(|(f, k, _)| *f == 0x303 || k == "libother.so.2")
    );
    pairs.sort();
    assert_eq!(
        pairs,
        [
            ("libnested.so.1", "/nested/libnested.so.1"),
            ("libnosoname.so", "/lib/libnosoname.so"),
            ("libopt_after.so.1", "/opt/after/libopt_after.so.1"),
            ("libother.so.2", "/lib/libother.so.2"),
            (
                "libusr_local_lib.so.1",
                "/usr/local/lib/libusr_local_lib.so.1"
            ),
            ("libz.so", "/lib/libz.so"),
            ("libz.so.1", "/lib/libz.so.1"),
        ]
        .map(|(a, b)| (a.to_string(), b.to_string()))
    );
    // In the loader's order.
    let keys: Vec<&str> = got.iter().map(|(_, k, _)| k.as_str()).collect();
    for w in keys.windows(2) {
        assert_ne!(ldso::libcmp(w[0], w[1]), Ordering::Less, "{keys:?}");
    }
    // The same tree gives the same bytes.
    assert_eq!(
        t.ld_so_cache().unwrap(),
        synthetic_tree().ld_so_cache().unwrap()
    );
}

#[test]
fn no_conf_no_cache() {
    let mut t = synthetic_tree();
    t.nodes.remove("etc/ld.so.conf");
    assert!(t.ld_so_cache().unwrap().is_none());
}

#[test]
fn include_loops_end() {
    let mut t = Tree::new();
    t.mkdir_all("etc", 0o755, 0);
    t.put(
        "etc/ld.so.conf",
        Node::file(b"include /etc/ld.so.conf\n/lib\n".to_vec(), 0o644, 0),
    );
    let got = decode(&t.ld_so_cache().unwrap().unwrap());
    assert!(got.is_empty());
}

const HOST_LIBS: &str = "/usr/lib/x86_64-linux-gnu";

fn have(tool: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .output()
        .is_ok_and(|o| o.status.success())
}

/// A tree of the host's real libraries: libc only in a directory the loader does not search
/// by default (so only the cache can find it), the rest in a usr-merged `/lib`.
fn host_tree() -> Option<(Tree, Vec<(String, String)>)> {
    let dir = Path::new(HOST_LIBS);
    let needed = ["libc.so.6", "libz.so.1", "libm.so.6"];
    if cfg!(not(target_arch = "x86_64")) || needed.iter().any(|l| !dir.join(l).exists()) {
        eprintln!("SKIPPED: host glibc libraries not found in {HOST_LIBS}");
        return None;
    }
    let mut t = Tree::new();
    t.mkdir_all("usr/lib", 0o755, 0);
    t.put("lib", Node::symlink("usr/lib", 0));
    t.mkdir_all("etc/ld.so.conf.d", 0o755, 0);
    t.put(
        "etc/ld.so.conf",
        Node::file(b"include /etc/ld.so.conf.d/*.conf\n".to_vec(), 0o644, 0),
    );
    t.put(
        "etc/ld.so.conf.d/glibc.conf",
        Node::file(b"/opt/glibc/lib\n/usr/lib\n".to_vec(), 0o644, 0),
    );
    t.mkdir_all("opt/glibc/lib", 0o755, 0);
    let mut want = vec![];
    let mut add = |t: &mut Tree, soname: &str, into: &str, spelled: &str| {
        let src = dir.join(soname);
        let Ok(bytes) = fs::read(&src) else { return };
        // The real file under its versioned name, the SONAME as a link, as packages ship them.
        let real = fs::canonicalize(&src).unwrap();
        let real = real.file_name().unwrap().to_str().unwrap().to_string();
        t.put(&format!("{into}/{real}"), Node::file(bytes, 0o755, 0));
        if real != soname {
            t.put(&format!("{into}/{soname}"), Node::symlink(&real, 0));
        }
        want.push((soname.to_string(), format!("{spelled}/{soname}")));
    };
    add(&mut t, "libc.so.6", "opt/glibc/lib", "/opt/glibc/lib");
    for l in [
        "libz.so.1",
        "libm.so.6",
        "liblzma.so.5",
        "libffi.so.8",
        "libacl.so.1",
    ] {
        add(&mut t, l, "lib", "/lib");
    }
    // The development link and the linker script beside it.
    t.put("usr/lib/libz.so", Node::symlink("libz.so.1", 0));
    want.push(("libz.so".into(), "/lib/libz.so".into()));
    if let Ok(script) = fs::read(dir.join("libc.so")) {
        t.put("usr/lib/libc.so", Node::file(script, 0o644, 0));
    }
    want.sort();
    Some((t, want))
}

#[test]
fn host_libraries_read_back_by_ldconfig() {
    let Some((t, want)) = host_tree() else { return };
    let cache = t.ld_so_cache().unwrap().unwrap();
    let mut ours: Vec<(String, String)> =
        decode(&cache).into_iter().map(|(_, k, v)| (k, v)).collect();
    ours.sort();
    assert_eq!(ours, want);
    if !Path::new("/sbin/ldconfig").exists() {
        eprintln!("SKIPPED: /sbin/ldconfig not found; checked with our own reader only");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("ld.so.cache");
    fs::write(&file, &cache).unwrap();
    let out = Command::new("/sbin/ldconfig")
        .arg("-p")
        .arg("-C")
        .arg(&file)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.starts_with(&format!("{} libs found in cache", want.len())),
        "{text}"
    );
    let mut listed: Vec<(String, String)> = text
        .lines()
        .skip(1)
        .filter_map(|l| {
            let (key, rest) = l.trim().split_once(' ')?;
            let (flags, path) = rest.split_once(" => ")?;
            assert_eq!(flags, "(libc6,x86-64)", "{l}");
            Some((key.to_string(), path.to_string()))
        })
        .collect();
    // ldconfig prints in cache order; that is the loader's order already.
    let keys: Vec<&String> = listed.iter().map(|(k, _)| k).collect();
    for w in keys.windows(2) {
        assert_ne!(ldso::libcmp(w[0], w[1]), Ordering::Less, "{text}");
    }
    listed.sort();
    assert_eq!(listed, want, "{text}");
}

/// The real loader finds libc through the cache alone: `/opt/glibc/lib` is in no default
/// search path, so a wrong order or offset fails to start the program.
#[test]
fn host_loader_uses_the_cache() {
    let Some((mut t, _)) = host_tree() else {
        return;
    };
    let (ld, prog) = ("/lib64/ld-linux-x86-64.so.2", "/usr/bin/true");
    if !have("bwrap") || !Path::new(ld).exists() || !Path::new(prog).exists() {
        eprintln!("SKIPPED: bwrap, {ld} or {prog} missing");
        return;
    }
    t.mkdir_all("lib64", 0o755, 0);
    t.put(
        "lib64/ld-linux-x86-64.so.2",
        Node::file(fs::read(ld).unwrap(), 0o755, 0),
    );
    t.mkdir_all("usr/bin", 0o755, 0);
    t.put(
        "usr/bin/true",
        Node::file(fs::read(prog).unwrap(), 0o755, 0),
    );
    let run = |t: &Tree| {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("root");
        fs::create_dir(&root).unwrap();
        t.materialize(&root).unwrap();
        Command::new("bwrap")
            .arg("--bind")
            .arg(&root)
            .args([
                "/",
                "--proc",
                "/proc",
                "--dev",
                "/dev",
                "--clearenv",
                "/usr/bin/true",
            ])
            .output()
            .unwrap()
    };
    // Without a cache the loader cannot find libc: the check below means something.
    let without = run(&t);
    if String::from_utf8_lossy(&without.stderr).contains("bwrap:") {
        eprintln!(
            "SKIPPED: bwrap cannot run here: {}",
            String::from_utf8_lossy(&without.stderr)
        );
        return;
    }
    assert!(!without.status.success(), "libc found without the cache?");
    let cache = t.ld_so_cache().unwrap().unwrap();
    t.put("etc/ld.so.cache", Node::file(cache, 0o644, 0));
    let with = run(&t);
    assert!(
        with.status.success(),
        "{}",
        String::from_utf8_lossy(&with.stderr)
    );
}
