//! Builds a busybox image and checks it with skopeo, umoci and runc.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::BufWriter;
use std::path::Path;
use std::process::Command;

use pallet_oci::write::{BuiltImage, Layer, write_docker_archive, write_oci_layout};
use pallet_oci::{ImageConfig, LayerWriter, Platform};

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

fn busybox_layer(dir: &Path) -> Layer {
    let path = dir.join("layer.tar.gz");
    let mut w = LayerWriter::new(BufWriter::new(File::create(&path).unwrap()));
    {
        let mut tar = tar::Builder::new(&mut w);
        let dir_h = |name: &str| {
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(tar::EntryType::Directory);
            h.set_mode(0o755);
            h.set_mtime(0);
            h.set_size(0);
            (h, name.to_string())
        };
        let dirs: Vec<_> = ["bin", "tmp"].iter().map(|d| dir_h(d)).collect();
        for (mut h, n) in dirs {
            tar.append_data(&mut h, n, std::io::empty()).unwrap();
        }
        let bb = std::fs::read("/bin/busybox").unwrap();
        let mut h = tar::Header::new_gnu();
        h.set_mode(0o755);
        h.set_mtime(0);
        h.set_size(bb.len() as u64);
        tar.append_data(&mut h, "bin/busybox", bb.as_slice())
            .unwrap();
        for l in ["sh", "echo"] {
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(tar::EntryType::Symlink);
            h.set_mode(0o777);
            h.set_mtime(0);
            h.set_size(0);
            tar.append_link(&mut h, format!("bin/{l}"), "busybox")
                .unwrap();
        }
        tar.finish().unwrap();
    }
    let (_, digests) = w.finish().unwrap();
    Layer { path, digests }
}

fn image(dir: &Path, arch: &str) -> BuiltImage {
    let layer = busybox_layer(dir);
    let mut cfg = ImageConfig::new(&Platform::from_apk_arch(arch).unwrap(), vec![]);
    cfg.created = Some("1970-01-01T00:00:00Z".into());
    cfg.config.entrypoint = vec!["/bin/busybox".into(), "echo".into(), "hello".into()];
    cfg.config.env = vec!["PATH=/bin".into()];
    BuiltImage::new(cfg, vec![layer], BTreeMap::new())
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
    assert_eq!(top, img.digest());
    let o = Command::new("skopeo")
        .args(["inspect", "--raw"])
        .arg(format!("oci:{}:latest", out.display()))
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(o.stdout, img.manifest);
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
