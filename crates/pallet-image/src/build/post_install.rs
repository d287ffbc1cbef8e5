//! What the build writes into the tree once the packages are installed, in apko's order: the
//! apk database (installed, triggers, world, repositories, keys), accounts, the s6 services,
//! the legacy os-release, `/etc/apko.json`, `paths:`, certificate bundles, busybox's links and
//! the device nodes, then the dynamic linker's cache.

use std::collections::BTreeMap;
use std::fs;

use pallet_apk_stream::tarw::Kind;
use pallet_apk_types::{Dependency, PackageInfo, installed};
use pallet_fs::{Node, Tree};
use pallet_keys::Keyring;
use serde_json::{Value, json};

use super::accounts::accounts;
use super::paths::paths;
use super::{BuildError, BuildOptions, io_ctx};
use crate::config::{Arch, ImageConfiguration};

/// Put a file at `path`, making the directories above it.
pub(super) fn file(tree: &mut Tree, path: &str, data: Vec<u8>, mode: u32, mtime: u64) {
    if let Some((dir, _)) = path.rsplit_once('/') {
        tree.mkdir_all(dir, 0o755, mtime);
    }
    tree.put(path, Node::file(data, mode, mtime));
}

/// `/etc/apko.json` as apko writes it: the configuration locked for the architecture being
/// built (`LockImageConfiguration`): every installed package pinned `name=version`, sorted,
/// `archs` just this one under apko's name, `--annotations` merged over the configured ones
/// (apko's `WithAnnotations` writes them into the configuration itself); encoded as Go's JSON
/// encoder writes the ImageConfiguration struct: its fields in order, `contents`,
/// `entrypoint` and `accounts` always present, one line and a newline, `<`, `>` and `&`
/// escaped. Tools read the image's packages and accounts from it, so its shape is apko's.
pub(super) fn apko_json(
    cfg: &ImageConfiguration,
    arch: Arch,
    annotations: &BTreeMap<String, String>,
    resolved: &[(PackageInfo, String)],
) -> Vec<u8> {
    let mut locked = cfg.clone();
    let mut pins: Vec<String> = resolved
        .iter()
        .map(|(p, _)| format!("{}={}", p.name, p.version))
        .collect();
    pins.sort();
    locked.contents.packages = pins;
    // Go's Architecture.String(): `amd64`, `arm/v7`.
    locked.archs = vec![match arch.oci() {
        (a, Some(v)) if a == "arm" => format!("{a}/{v}"),
        (a, _) => a.to_string(),
    }];
    for (k, v) in annotations {
        locked.annotations.insert(k.clone(), v.clone());
    }
    let v = serde_json::to_value(&locked).expect("the configuration serializes");
    let mut fields = v.as_object().cloned().unwrap_or_default();
    let mut out = serde_json::Map::new();
    for k in [
        "contents",
        "entrypoint",
        "cmd",
        "stop-signal",
        "work-dir",
        "accounts",
        "archs",
        "environment",
        "paths",
        "vcs-url",
        "annotations",
        "include",
        "volumes",
        "layering",
    ] {
        match fields.remove(k) {
            Some(x) => {
                out.insert(k.to_string(), x);
            }
            // Go's omitempty never leaves out a struct.
            None if matches!(k, "contents" | "entrypoint" | "accounts") => {
                out.insert(k.to_string(), json!({}));
            }
            None => {}
        }
    }
    out.extend(fields);
    let text = serde_json::to_string(&Value::Object(out)).expect("JSON");
    let mut b = String::with_capacity(text.len() + 1);
    for c in text.chars() {
        match c {
            '<' => b.push_str("\\u003c"),
            '>' => b.push_str("\\u003e"),
            '&' => b.push_str("\\u0026"),
            c => b.push(c),
        }
    }
    b.push('\n');
    b.into_bytes()
}

#[allow(clippy::too_many_arguments)]
pub(super) fn post_install(
    tree: &mut Tree,
    cfg: &ImageConfiguration,
    arch: Arch,
    keyring: &Keyring,
    resolved: &[(PackageInfo, String)],
    opts: &BuildOptions,
    base: Option<&crate::baseimage::BaseImage>,
    epoch: u64,
) -> Result<(), BuildError> {
    // The apk database, as apk-tools 2 lays it out (lib/apk/db). A base image's packages
    // come first, as apko adds them before installing.
    let db = tree.installed_db();
    let mut all = base.map(|b| b.packages.clone()).unwrap_or_default();
    all.extend(db.iter().cloned());
    file(
        tree,
        "lib/apk/db/installed",
        installed::write_installed(&all).into_bytes(),
        0o644,
        epoch,
    );
    file(
        tree,
        "lib/apk/db/triggers",
        installed::write_triggers(&db).into_bytes(),
        0o644,
        epoch,
    );
    file(tree, "lib/apk/db/lock", vec![], 0o600, epoch);
    let mut scripts_tar = Vec::new();
    for p in &tree.packages {
        for (name, data) in &p.scripts {
            let n = format!(
                "{}-{}.{}{}",
                p.info.name,
                p.info.version,
                p.info.checksum.clone().unwrap_or_default(),
                name
            );
            let h = pallet_apk_stream::tarw::EntryHeader::file(
                &n,
                0o755,
                p.info.build_time,
                data.len() as u64,
            );
            pallet_apk_stream::tarw::write_entry(&mut scripts_tar, &h, data)
                .map_err(io_ctx("scripts.tar"))?;
        }
    }
    pallet_apk_stream::tarw::write_end(&mut scripts_tar).map_err(io_ctx("scripts.tar"))?;
    file(tree, "lib/apk/db/scripts.tar", scripts_tar, 0o644, epoch);
    // The world pinned to the resolved versions, as apko writes it, with a base image's
    // packages.
    let mut pinned: Vec<Dependency> = resolved
        .iter()
        .map(|(p, _)| Dependency::exact(p.name.clone(), p.version.clone()))
        .collect();
    pinned.extend(base.map(|b| b.world()).unwrap_or_default());
    file(
        tree,
        "etc/apk/world",
        installed::write_world(&pinned).into_bytes(),
        0o644,
        epoch,
    );
    let mut repo_lines: Vec<String> = cfg
        .contents
        .repositories
        .iter()
        .chain(&cfg.contents.runtime_repositories)
        // apko's `-r/--repository-append` repositories are the image's too (postBuildSetApk).
        .chain(&opts.extra_repositories)
        .cloned()
        .collect();
    repo_lines.sort();
    repo_lines.dedup();
    let mut text = repo_lines.join("\n");
    text.push('\n');
    file(
        tree,
        "etc/apk/repositories",
        text.into_bytes(),
        0o644,
        epoch,
    );
    file(
        tree,
        "etc/apk/arch",
        format!("{}\n", arch.apk()).into_bytes(),
        0o644,
        epoch,
    );
    tree.mkdir_all("etc/apk/keys", 0o755, epoch);
    for k in keyring.key_files() {
        let name = k
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let data = fs::read(&k).map_err(io_ctx(k.display().to_string()))?;
        file(tree, &format!("etc/apk/keys/{name}"), data, 0o644, epoch);
    }
    for rk in &cfg.contents.runtime_keyring {
        // Configurations that skipped `config::load` (melange's environment) are checked here
        // too: the name must not leave etc/apk/keys.
        if rk.name.is_empty() || rk.name.contains(['/', '\\']) || rk.name.starts_with('.') {
            return Err(BuildError::Config(format!(
                "contents.runtime_keyring name {:?} must be a plain file name",
                rk.name
            )));
        }
        file(
            tree,
            &format!("etc/apk/keys/{}", rk.name),
            rk.content.clone().into_bytes(),
            0o644,
            epoch,
        );
    }
    // apko leaves a base image's accounts alone.
    if base.is_none() {
        accounts(tree, cfg, epoch)?;
    }
    services(tree, cfg);
    // Legacy `os-release:` (old apko): a package's own file wins, as the key only ever filled
    // in for distributions that shipped none.
    if let Some(os) = &cfg.os_release
        && tree.get("etc/os-release").is_none()
        && tree.get("usr/lib/os-release").is_none()
    {
        file(
            tree,
            "etc/os-release",
            os.render().into_bytes(),
            0o644,
            epoch,
        );
    }
    file(
        tree,
        "etc/apko.json",
        apko_json(cfg, arch, &opts.annotations, resolved),
        0o444,
        0,
    );
    paths(tree, cfg)?;
    // After paths, as in apko: a path mutation may make or change a bundle.
    crate::certs::install(
        tree,
        cfg,
        base.map_or(&[][..], |b| b.packages.as_slice()),
        epoch,
    )?;
    crate::certs::write_checksums(tree, epoch)?;
    crate::busybox::install_links(tree)?;
    // Character devices apko creates (harmless where the runtime mounts its own /dev).
    for (name, major, minor, mode) in [
        ("null", 1, 3, 0o666),
        ("zero", 1, 5, 0o666),
        ("random", 1, 8, 0o666),
        ("urandom", 1, 9, 0o666),
        ("console", 5, 1, 0o620),
    ] {
        let p = format!("dev/{name}");
        if tree.get(&p).is_none() {
            tree.put(
                &p,
                Node {
                    kind: Kind::Char,
                    dev: (major, minor),
                    ..Node::dir(mode, 0)
                },
            );
        }
    }
    crate::ldso::update_cache(tree)?;
    Ok(())
}

/// apko's s6 supervision tree: `/sv/<name>/run` for each service of a service bundle.
fn services(tree: &mut Tree, cfg: &ImageConfiguration) {
    let Some(e) = &cfg.entrypoint else { return };
    if e.kind.as_deref() != Some("service-bundle") {
        return;
    }
    tree.put("sv", Node::dir(0o777, 0));
    for (name, cmd) in &e.services {
        tree.put(&format!("sv/{name}"), Node::dir(0o777, 0));
        tree.put(
            &format!("sv/{name}/run"),
            Node::file(format!("#!/bin/execlineb\n{cmd}\n").into_bytes(), 0o755, 0),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each architecture's `/etc/apko.json` is the configuration locked for it, as apko's
    /// per-architecture build writes it: that one architecture, the command line's
    /// annotations over the file's, the installed packages pinned and sorted.
    #[test]
    fn apko_json_is_locked_for_the_architecture_built() {
        let mut cfg = ImageConfiguration {
            archs: vec!["x86_64".into(), "armv7".into()],
            annotations: BTreeMap::from([
                ("a".to_string(), "file".to_string()),
                ("keep".to_string(), "yes".to_string()),
            ]),
            ..Default::default()
        };
        cfg.contents.packages = vec!["busybox".into()];
        let cli = BTreeMap::from([("a".to_string(), "cli".to_string())]);
        let pkg = |n: &str, v: &str| PackageInfo {
            name: n.into(),
            version: v.into(),
            ..Default::default()
        };
        let resolved = vec![
            (pkg("musl", "1.2.4-r2"), String::new()),
            (pkg("busybox", "1.36.1-r15"), String::new()),
        ];
        for (arch, want) in [(Arch::Amd64, "amd64"), (Arch::ArmV7, "arm/v7")] {
            let raw = apko_json(&cfg, arch, &cli, &resolved);
            let v: Value = serde_json::from_slice(&raw).unwrap();
            assert_eq!(v["archs"], json!([want]), "{v}");
            assert_eq!(v["annotations"], json!({"a": "cli", "keep": "yes"}), "{v}");
            assert_eq!(
                v["contents"]["packages"],
                json!(["busybox=1.36.1-r15", "musl=1.2.4-r2"])
            );
        }
    }
}
