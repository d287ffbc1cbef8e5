#![allow(dead_code)]
use std::collections::BTreeMap;
use std::fs::File;
use std::io::BufWriter;
use std::path::Path;

use pallet_oci::write::{BuiltImage, Layer};
use pallet_oci::{ImageConfig, LayerWriter, Platform};

pub fn busybox_layer(dir: &Path) -> Layer {
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

pub fn image(dir: &Path, arch: &str) -> BuiltImage {
    let layer = busybox_layer(dir);
    let mut cfg = ImageConfig::new(&Platform::from_apk_arch(arch).unwrap(), vec![]);
    cfg.created = Some("1970-01-01T00:00:00Z".into());
    cfg.config.entrypoint = vec!["/bin/busybox".into(), "echo".into(), "hello".into()];
    cfg.config.env = vec!["PATH=/bin".into()];
    BuiltImage::new(cfg, vec![layer], BTreeMap::new())
}
