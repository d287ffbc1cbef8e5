//! End to end: `package.setcap` in a `pallet pkg build --bootstrap`, the capability carried as
//! a `SCHILY.xattr.security.capability` PAX record of the data tar (read back with Python's
//! tarfile), and a file extracted with GNU tar `--xattrs` showing it to `getcap`. A step's own
//! `setcap` (run as root) survives too, and capabilities off melange's allow-list are refused.

mod common;

use std::fs;
use std::path::Path;
use std::process::Command;

use common::*;

const RECIPE: &str = r#"package:
  name: capdemo
  version: 1.0.0
  epoch: 0
  description: file capabilities
  copyright:
    - license: MIT
  options:
    no-depends: true
  setcap:
    - path: /usr/bin/pinger
      add:
        cap_net_raw: +ep
      reason: opens raw sockets
    - path: usr/bin/binder
      add:
        "cap_net_bind_service,cap_net_admin": "+eip"
      reason: binds low ports
    - path: /usr/bin/absent
      add:
        cap_net_raw: +ep
      reason: names nothing packaged
environment:
  accounts:
    run-as: root
pipeline:
  - runs: |
      mkdir -p ${{targets.destdir}}/usr/bin
      for f in pinger binder selfcap plain; do
        printf '#!/bin/sh\necho %s\n' $f > ${{targets.destdir}}/usr/bin/$f
        chmod 755 ${{targets.destdir}}/usr/bin/$f
      done
      SELFCAP
"#;

/// The PAX records named `SCHILY.xattr.*` of every data-tar entry, as `name key hex` lines.
const DUMP: &str = r#"
import io, sys, tarfile, zlib
data = open(sys.argv[1], 'rb').read()
members, i = [], 0
while i < len(data):
    d = zlib.decompressobj(31)
    members.append(d.decompress(data[i:]))
    i = len(data) - len(d.unused_data)
t = tarfile.open(fileobj=io.BytesIO(members[-1]))
for m in t.getmembers():
    for k, v in sorted(m.pax_headers.items()):
        if k.startswith('SCHILY.xattr.'):
            print(m.name, k, v.encode('utf-8', 'surrogateescape').hex())
"#;

fn build(d: &Path, recipe: &str) -> std::process::Output {
    fs::write(d.join("m.yaml"), recipe).unwrap();
    run(
        &["pkg", "build", "--bootstrap", "m.yaml", "--arch", "x86_64"],
        d,
        &[("SOURCE_DATE_EPOCH", "1700000000")],
    )
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

#[test]
fn setcap_is_packed_as_the_v3_xattr_and_getcap_sees_it() {
    if !have("bwrap") || !have("python3") {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let d = t.path();
    // Setting a file capability inside the build needs root and CAP_SETFCAP there.
    let step_setcap = is_root() && have("setcap");
    let recipe = RECIPE.replace(
        "SELFCAP",
        if step_setcap {
            "setcap cap_net_admin+ep ${{targets.destdir}}/usr/bin/selfcap"
        } else {
            "true"
        },
    );
    let o = build(d, &recipe);
    assert!(o.status.success(), "{}", text(&o));
    // melange only warns about a setcap path the package does not hold.
    assert!(text(&o).contains("/usr/bin/absent"), "{}", text(&o));
    let apk = d.join("packages/x86_64/capdemo-1.0.0-r0.apk");
    let o = Command::new("python3")
        .args(["-c", DUMP])
        .arg(&apk)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    let dump = String::from_utf8(o.stdout).unwrap();
    let key = "SCHILY.xattr.security.capability";
    // struct vfs_ns_cap_data: magic 0x03000001 (revision 3 | effective), permitted
    // 1<<13 (cap_net_raw), inheritable 0, high words 0, rootid 0.
    assert!(
        dump.contains(&format!(
            "usr/bin/pinger {key} 010000030020000000000000000000000000000000000000"
        )),
        "{dump}"
    );
    // cap_net_bind_service (10) and cap_net_admin (12) in permitted and inheritable.
    assert!(
        dump.contains(&format!(
            "usr/bin/binder {key} 010000030014000000140000000000000000000000000000"
        )),
        "{dump}"
    );
    assert!(!dump.contains("usr/bin/plain"), "{dump}");
    assert!(!dump.contains("absent"), "{dump}");
    if step_setcap {
        // The step's setcap, as the host reads it back (the kernel stores revision 2 for a
        // capability set by the initial namespace's root), carried as melange carries the
        // workspace's xattrs.
        assert!(
            dump.contains(&format!(
                "usr/bin/selfcap {key} 0100000200100000000000000000000000000000"
            )),
            "{dump}"
        );
    }

    // GNU tar restores the attribute (writing security.* needs root), and getcap reads it.
    if !is_root() || !have("tar") || !have("getcap") {
        return;
    }
    let out = d.join("x");
    fs::create_dir(&out).unwrap();
    let o = Command::new("tar")
        .args(["--xattrs", "--xattrs-include=*", "-xzf"])
        .arg(&apk)
        .arg("-C")
        .arg(&out)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    let getcap = |f: &str| {
        let o = Command::new("getcap").arg(out.join(f)).output().unwrap();
        String::from_utf8_lossy(&o.stdout).to_string()
    };
    assert!(
        getcap("usr/bin/pinger").contains("cap_net_raw=ep"),
        "{}",
        getcap("usr/bin/pinger")
    );
    let b = getcap("usr/bin/binder");
    assert!(b.contains("cap_net_bind_service,cap_net_admin=eip"), "{b}");
    assert_eq!(getcap("usr/bin/plain").trim(), "");
    if step_setcap {
        assert!(getcap("usr/bin/selfcap").contains("cap_net_admin=ep"));
    }
}

#[test]
fn capabilities_off_the_allow_list_are_refused() {
    let t = tempfile::tempdir().unwrap();
    let d = t.path();
    let base = "package:\n  name: capbad\n  version: 1.0.0\n  epoch: 0\n  setcap:\n";
    let tail = "pipeline:\n  - runs: true\n";
    // cap_sys_ptrace is a real capability, but not one melange permits.
    let o = build(
        d,
        &format!(
            "{base}    - path: /usr/bin/dbg\n      add:\n        \"cap_net_raw,cap_sys_ptrace\": +ep\n      reason: r\n{tail}"
        ),
    );
    assert!(!o.status.success());
    let e = text(&o);
    assert!(
        e.contains("\"cap_sys_ptrace\"") && e.contains("\"/usr/bin/dbg\""),
        "{e}"
    );
    assert!(!e.contains("\"cap_net_raw\" for"), "{e}");
    // A reason is required.
    let o = build(
        d,
        &format!("{base}    - path: /usr/bin/x\n      add:\n        cap_net_raw: +ep\n{tail}"),
    );
    assert!(!o.status.success());
    assert!(text(&o).contains("reason"), "{}", text(&o));
    // Unknown keys in an entry are an error, as every other part of the schema.
    let o = build(
        d,
        &format!(
            "{base}    - path: /usr/bin/x\n      add:\n        cap_net_raw: +ep\n      reason: r\n      drop:\n        cap_net_raw: +ep\n{tail}"
        ),
    );
    assert!(!o.status.success());
    assert!(text(&o).contains("drop"), "{}", text(&o));
}
