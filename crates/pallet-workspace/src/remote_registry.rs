//! `--cache-registry REF`: action results as OCI artifacts in a registry repository, pushed
//! and pulled with pallet's registry client. One manifest per action, tagged
//! `pallet-<action hash>`: an empty config, and one layer per unsigned output package (its
//! output path in the `org.opencontainers.image.title` annotation). Pulled results go through
//! the same checks as those from a REAPI cache before they are signed.

use std::path::{Path, PathBuf};

use pallet_registry::{BlobSource, Client, Reference};
use serde_json::json;

use crate::remote::{LOG, Prepared};
use crate::run::Ctx;

const MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const ARTIFACT: &str = "application/vnd.pallet.action-result.v1+json";
const EMPTY: &str = "application/vnd.oci.empty.v1+json";
const APK: &str = "application/vnd.pallet.apk";
const TITLE: &str = "org.opencontainers.image.title";

/// A client of the repository (credentials from docker's config.json, as `pallet login`
/// stores them; plain http only to loopback).
fn client(r: &Reference) -> Client {
    Client::new(r.clone(), &[])
}

/// The tag of an action's result (a tag holds at most 128 of `[A-Za-z0-9_.-]`).
fn tag(p: &Prepared) -> String {
    format!("pallet-{}", p.digest.hash)
}

fn sha256(b: &[u8]) -> String {
    use sha2::Digest as _;
    let h = sha2::Sha256::digest(b);
    format!(
        "sha256:{}",
        h.iter().map(|x| format!("{x:02x}")).collect::<String>()
    )
}

/// The result of `p` from the registry into `staging/ARCH/`, verified; `None` when the
/// registry has none.
pub(crate) fn get(
    ctx: &Ctx,
    reg: &Reference,
    i: usize,
    p: &Prepared,
    staging: &Path,
) -> Result<Option<Vec<PathBuf>>, String> {
    let r = &ctx.ws.recipes[i];
    let mut c = client(reg);
    let Some(m) = c
        .get_manifest(&tag(p), MANIFEST)
        .map_err(|e| e.to_string())?
    else {
        return Ok(None);
    };
    let m: serde_json::Value =
        serde_json::from_slice(&m).map_err(|e| format!("the manifest: {e}"))?;
    let dir = staging.join(r.arch.apk());
    std::fs::create_dir_all(&dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
    let mut files = vec![];
    let result = (|| {
        for l in m["layers"].as_array().cloned().unwrap_or_default() {
            let path = l["annotations"][TITLE].as_str().unwrap_or_default();
            if !p.outputs.iter().any(|o| o == path) || path == LOG {
                return Err(format!("a layer that is not an output: {path:?}"));
            }
            let digest = l["digest"].as_str().unwrap_or_default();
            let size = l["size"].as_u64().unwrap_or(0);
            let name = path.rsplit('/').next().unwrap_or_default();
            let to = dir.join(name);
            if !c.get_blob(digest, size, &to).map_err(|e| e.to_string())? {
                return Err(format!("the registry lacks {digest}"));
            }
            files.push(to.clone());
            crate::remote::check_package(&to, r)?;
        }
        let main = format!("{}-{}.apk", r.name, r.version);
        if !files
            .iter()
            .any(|f| f.file_name().is_some_and(|n| *n == *main))
        {
            return Err(format!("no {main} in the artifact"));
        }
        Ok(())
    })();
    if let Err(e) = result {
        for f in &files {
            let _ = std::fs::remove_file(f);
        }
        return Err(e);
    }
    files.sort();
    Ok(Some(files))
}

/// Push the unsigned packages of `p`'s result, then its manifest under the action's tag.
pub(crate) fn put(reg: &Reference, p: &Prepared, files: &[PathBuf]) -> Result<(), String> {
    let mut c = client(reg);
    let mut layers = vec![];
    for f in files {
        let path = p.output_of(f)?;
        let (sha, size) = crate::cache::sha256_file(f).map_err(|e| e.to_string())?;
        let digest = format!("sha256:{sha}");
        c.push_blob(
            &BlobSource {
                digest: digest.clone(),
                size,
                path: Some(f.clone()),
                bytes: None,
                media_type: APK.into(),
            },
            None,
        )
        .map_err(|e| e.to_string())?;
        layers.push(
            json!({"mediaType": APK, "digest": digest, "size": size, "annotations": {TITLE: path}}),
        );
    }
    let empty = b"{}".to_vec();
    let empty_digest = sha256(&empty);
    c.push_blob(
        &BlobSource {
            digest: empty_digest.clone(),
            size: 2,
            path: None,
            bytes: Some(empty),
            media_type: EMPTY.into(),
        },
        None,
    )
    .map_err(|e| e.to_string())?;
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": MANIFEST,
        "artifactType": ARTIFACT,
        "config": {"mediaType": EMPTY, "digest": empty_digest, "size": 2},
        "layers": layers,
        "annotations": {"dev.pallet.action": pallet_reapi::digest::show(&p.digest)},
    });
    let bytes = serde_json::to_vec(&manifest).expect("serialises");
    c.put_manifest(&tag(p), MANIFEST, &bytes)
        .map_err(|e| e.to_string())?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_empty_config_and_the_tag_are_what_registries_expect() {
        // The OCI image spec's empty descriptor digest.
        assert_eq!(
            sha256(b"{}"),
            "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a"
        );
        let p = Prepared {
            digest: pallet_reapi::digest::of_bytes(b"action"),
            blobs: pallet_reapi::tree::Blobs::new(),
            messages: pallet_reapi::tree::Blobs::new(),
            outputs: vec![],
        };
        let t = tag(&p);
        assert!(t.len() <= 128);
        assert!(t.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-'));
    }
}
