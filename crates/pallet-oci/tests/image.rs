//! Builds a busybox image and checks it with skopeo, umoci and runc.

use std::path::Path;
use std::process::Command;

mod common;
use common::image;
use pallet_oci::write::{write_docker_archive, write_oci_layout};

fn have(tool: &str) -> bool {
    let ok = Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {tool}"))
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if !ok {
        eprintln!("SKIPPED: {tool} not installed");
    }
    ok
}

#[test]
fn same_inputs_same_digests() {
    if !Path::new("/bin/busybox").exists() {
        eprintln!("SKIPPED: /bin/busybox missing");
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let (a, b) = (t.path().join("a"), t.path().join("b"));
    std::fs::create_dir_all(&a).unwrap();
    std::fs::create_dir_all(&b).unwrap();
    let (ia, ib) = (image(&a, "x86_64"), image(&b, "x86_64"));
    assert_eq!(ia.digest(), ib.digest());
    assert_eq!(ia.config, ib.config);
}

#[test]
fn oci_layout_skopeo_umoci_runc() {
    if !Path::new("/bin/busybox").exists() || !have("skopeo") {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let img = image(t.path(), "x86_64");
    let out = t.path().join("oci");
    let top = write_oci_layout(&out, std::slice::from_ref(&img), &["latest".into()]).unwrap();
    let index = pallet_oci::write::index_of(std::slice::from_ref(&img)).to_bytes();
    assert_eq!(top, pallet_oci::image::sha256_digest(&index));
    let o = Command::new("skopeo")
        .args(["inspect", "--raw"])
        .arg(format!("oci:{}:latest", out.display()))
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(o.stdout, index);
    let o = Command::new("skopeo")
        .arg("inspect")
        .arg(format!("oci:{}:latest", out.display()))
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));

    // Multi-arch layout: index with two platforms.
    let d2 = t.path().join("arm");
    std::fs::create_dir_all(&d2).unwrap();
    let arm = image(&d2, "aarch64");
    let multi = t.path().join("multi");
    write_oci_layout(&multi, &[img.clone(), arm], &["latest".into()]).unwrap();
    let o = Command::new("skopeo")
        .args(["inspect", "--raw"])
        .arg(format!("oci:{}:latest", multi.display()))
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let idx: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(idx["manifests"].as_array().unwrap().len(), 2);
    assert_eq!(idx["manifests"][1]["platform"]["variant"], "v8");

    if !have("umoci") || !have("runc") {
        return;
    }
    if unsafe_is_root() {
        let bundle = t.path().join("bundle");
        let o = Command::new("umoci")
            .args(["unpack", "--image"])
            .arg(format!("{}:latest", out.display()))
            .arg(&bundle)
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "umoci: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        let cfg_path = bundle.join("config.json");
        let mut cfg: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&cfg_path).unwrap()).unwrap();
        cfg["process"]["terminal"] = false.into();
        std::fs::write(&cfg_path, serde_json::to_vec(&cfg).unwrap()).unwrap();
        let id = format!("pallet-oci-{}", std::process::id());
        let o = Command::new("runc")
            .args(["run", &id])
            .current_dir(&bundle)
            .output()
            .unwrap();
        let _ = Command::new("runc").args(["delete", "-f", &id]).output();
        assert!(
            o.status.success(),
            "runc: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        assert_eq!(String::from_utf8_lossy(&o.stdout).trim(), "hello");
    } else {
        eprintln!("SKIPPED: umoci/runc need root");
    }
}

fn unsafe_is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| o.stdout.starts_with(b"0"))
        .unwrap_or(false)
}

#[test]
fn docker_archive_skopeo() {
    if !Path::new("/bin/busybox").exists() || !have("skopeo") {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let img = image(t.path(), "x86_64");
    let file = t.path().join("image.tar");
    write_docker_archive(&file, &[(&img, vec!["example.test/busybox:latest".into()])]).unwrap();
    let o = Command::new("skopeo")
        .arg("inspect")
        .arg(format!("docker-archive:{}", file.display()))
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    // docker-archive names layers by their uncompressed digest.
    assert_eq!(v["Layers"][0], img.layers[0].digests.diff_id.as_str());
    assert_eq!(v["Architecture"], "amd64");
    // Nothing left behind but the archive.
    let names: Vec<_> = std::fs::read_dir(t.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert!(
        names
            .iter()
            .all(|n| !n.to_string_lossy().starts_with(".pallet-oci-")),
        "{names:?}"
    );
}
