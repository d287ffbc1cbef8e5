//! apko's experimental `contents.baseimage`, end to end: a usr-merged base image built by
//! pallet, its installed database as the base's APKINDEX, a lock file made against it, and an
//! image with one new layer on top, unpacked by umoci and run by runc, printing a file from
//! each layer and the database that lists both. Also the combinations apko refuses.

mod common;

use std::fs;
use std::path::Path;

use common::*;

const EPOCH: (&str, &str) = ("SOURCE_DATE_EPOCH", "1700000000");

/// `pallet mkpkg` of the folder `files` as `name`, signed with `k.rsa`.
fn mkpkg(d: &Path, name: &str, info: &[&str], files: &Path) {
    let out = d.join(format!("repo/x86_64/{name}-1.0-r0.apk"));
    let mut args: Vec<String> = vec!["mkpkg".into()];
    for i in [
        format!("name={name}"),
        "version=1.0-r0".into(),
        "arch=x86_64".into(),
        "license=MIT".into(),
    ]
    .into_iter()
    .chain(info.iter().map(|s| s.to_string()))
    {
        args.push("--info".into());
        args.push(i);
    }
    args.extend([
        "--files".into(),
        files.display().to_string(),
        "-o".into(),
        out.display().to_string(),
        "--signing-key".into(),
        d.join("k.rsa").display().to_string(),
    ]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let o = run(&args, d, &[]);
    assert!(o.status.success(), "{}", text(&o));
}

fn pallet_ok(d: &Path, args: &[&str]) -> String {
    let o = run(args, d, &[EPOCH]);
    assert!(o.status.success(), "{args:?}: {}", text(&o));
    text(&o)
}

fn pallet_err(d: &Path, args: &[&str]) -> String {
    let o = run(args, d, &[EPOCH]);
    assert!(!o.status.success(), "{args:?} should fail: {}", text(&o));
    text(&o)
}

#[test]
fn an_image_on_a_base_image_runs_with_both_layers() {
    if !std::path::Path::new("/bin/busybox").exists() {
        eprintln!("SKIPPED: needs /bin/busybox (Debian's busybox-static)");
        return;
    }
    if !have("umoci") || !have("runc") {
        eprintln!("SKIPPED: needs umoci and runc (scripts/install-deps.sh)");
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let d = t.path();
    pallet_ok(d, &["keygen", "k.rsa"]);
    fs::create_dir_all(d.join("repo/x86_64")).unwrap();
    // The base: a usr-merged layout (lib -> usr/lib, announced as `merged-lib`, as
    // wolfi-baselayout does), busybox, and a file of its own.
    let base = d.join("files-base");
    fs::create_dir_all(base.join("usr/lib")).unwrap();
    fs::create_dir_all(base.join("bin")).unwrap();
    fs::create_dir_all(base.join("etc")).unwrap();
    fs::copy("/bin/busybox", base.join("bin/busybox")).unwrap();
    std::os::unix::fs::symlink("usr/lib", base.join("lib")).unwrap();
    fs::write(base.join("etc/base-message"), "from-the-base-layer\n").unwrap();
    fs::write(base.join("usr/lib/.keep"), "").unwrap();
    mkpkg(d, "base-layout", &["provides=merged-lib"], &base);
    // The new layer's package needs the base's.
    let top = d.join("files-top");
    fs::create_dir_all(top.join("usr/share")).unwrap();
    fs::write(top.join("usr/share/top-message"), "from-the-top-layer\n").unwrap();
    mkpkg(d, "top-msg", &["depend=base-layout"], &top);
    let mut index = vec![
        "index".to_string(),
        "-o".into(),
        d.join("repo/x86_64/APKINDEX.tar.gz").display().to_string(),
        "--signing-key".into(),
        d.join("k.rsa").display().to_string(),
    ];
    for n in ["base-layout", "top-msg"] {
        index.push(
            d.join(format!("repo/x86_64/{n}-1.0-r0.apk"))
                .display()
                .to_string(),
        );
    }
    let index: Vec<&str> = index.iter().map(String::as_str).collect();
    pallet_ok(d, &index);
    let contents = format!(
        "contents:\n  repositories: [{}]\n  keyring: [{}]\n",
        d.join("repo").display(),
        d.join("k.rsa.pub").display()
    );
    fs::write(
        d.join("base.yaml"),
        format!(
            "{contents}  packages: [base-layout]\nentrypoint:\n  command: /bin/busybox sh -c \"/bin/busybox cat /etc/base-message /usr/share/top-message; /bin/busybox readlink /lib; /bin/busybox grep ^P /lib/apk/db/installed\"\narchs: [x86_64]\n"
        ),
    )
    .unwrap();
    fs::create_dir_all(d.join("base-oci")).unwrap();
    pallet_ok(
        d,
        &[
            "image",
            "build",
            "base.yaml",
            "base:1",
            "base-oci",
            "--sbom=false",
            "--cache-dir",
            "cache",
        ],
    );
    // The base's installed database is its APKINDEX, as apko expects it.
    let bundle = d.join("unpacked-base");
    let o = std::process::Command::new("umoci")
        .args(["unpack", "--image"])
        .arg(format!("{}:1", d.join("base-oci").display()))
        .arg(&bundle)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    fs::create_dir_all(d.join("base-apkindex/x86_64")).unwrap();
    fs::copy(
        bundle.join("rootfs/usr/lib/apk/db/installed"),
        d.join("base-apkindex/x86_64/APKINDEX"),
    )
    .unwrap();

    let top_yaml = |extra: &str| {
        format!(
            "{contents}  packages: [top-msg]\n  baseimage:\n    image: base-oci\n    apkindex: base-apkindex\n{extra}archs: [x86_64]\n"
        )
    };
    fs::write(d.join("top.yaml"), top_yaml("")).unwrap();
    // Refused as apko refuses them.
    let out = pallet_err(
        d,
        &[
            "image",
            "build",
            "top.yaml",
            "top:1",
            "top.tar",
            "--cache-dir",
            "cache",
        ],
    );
    assert!(out.contains("only with a lockfile"), "{out}");
    fs::write(
        d.join("bad.yaml"),
        top_yaml("entrypoint:\n  command: /bin/true\n"),
    )
    .unwrap();
    let out = pallet_err(d, &["image", "lock", "bad.yaml", "--cache-dir", "cache"]);
    assert!(
        out.contains("the only supported image specification are: contents, archs"),
        "{out}"
    );
    fs::write(
        d.join("layered.yaml"),
        top_yaml("layering:\n  strategy: origin\n  budget: 2\n"),
    )
    .unwrap();
    pallet_ok(
        d,
        &[
            "image",
            "lock",
            "layered.yaml",
            "--output",
            "layered.lock.json",
            "--cache-dir",
            "cache",
        ],
    );
    let out = pallet_err(
        d,
        &[
            "image",
            "build",
            "layered.yaml",
            "top:1",
            "top.tar",
            "--lockfile",
            "layered.lock.json",
            "--cache-dir",
            "cache",
        ],
    );
    assert!(
        out.contains("layering with \"baseimage\" is unsupported"),
        "{out}"
    );

    // The lock holds only what the base lacks.
    pallet_ok(
        d,
        &[
            "image",
            "lock",
            "top.yaml",
            "--output",
            "top.lock.json",
            "--cache-dir",
            "cache",
        ],
    );
    let lock: serde_json::Value =
        serde_json::from_slice(&fs::read(d.join("top.lock.json")).unwrap()).unwrap();
    let names: Vec<&str> = lock["contents"]["packages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["top-msg"], "{lock}");
    assert!(
        !lock.to_string().contains("baseimage:"),
        "the base's database is no repository: {lock}"
    );
    fs::create_dir_all(d.join("top-oci")).unwrap();
    pallet_ok(
        d,
        &[
            "image",
            "build",
            "top.yaml",
            "top:1",
            "top-oci",
            "--lockfile",
            "top.lock.json",
            "--sbom-path",
            "sboms",
            "--cache-dir",
            "cache",
        ],
    );
    let out = run_bundle(
        &format!("{}:1", d.join("top-oci").display()),
        d,
        "baseimage",
    );
    assert_eq!(
        out, "from-the-base-layer\nfrom-the-top-layer\nusr/lib\nP:base-layout\nP:top-msg\n",
        "the base's entrypoint, both layers' files, /lib still a link, one database"
    );
    // The image is the base's layers plus one, and its config keeps the base's entrypoint.
    let index: serde_json::Value =
        serde_json::from_slice(&fs::read(d.join("top-oci/index.json")).unwrap()).unwrap();
    let blob = |digest: &str| -> serde_json::Value {
        let hex = digest.trim_start_matches("sha256:");
        serde_json::from_slice(&fs::read(d.join("top-oci/blobs/sha256").join(hex)).unwrap())
            .unwrap()
    };
    let idx = blob(index["manifests"][0]["digest"].as_str().unwrap());
    let manifest = blob(idx["manifests"][0]["digest"].as_str().unwrap());
    let config = blob(manifest["config"]["digest"].as_str().unwrap());
    assert_eq!(manifest["layers"].as_array().unwrap().len(), 2);
    assert_eq!(config["rootfs"]["diff_ids"].as_array().unwrap().len(), 2);
    assert_eq!(config["history"].as_array().unwrap().len(), 2);
    assert_eq!(config["config"]["Entrypoint"][0], "/bin/busybox");
    // The SBOM lists the base's packages too, as apko's does.
    let spdx: serde_json::Value =
        serde_json::from_slice(&fs::read(d.join("sboms/sbom-x86_64.spdx.json")).unwrap()).unwrap();
    let names: Vec<&str> = spdx["packages"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|p| p["name"].as_str())
        .collect();
    for n in ["base-layout", "top-msg"] {
        assert!(names.contains(&n), "{n} not in {names:?}");
    }
}
