//! Publishing a built image: every blob, each architecture's manifest by digest, SBOMs as
//! referrers of the image they describe, and only then the index under the tag, so a push that
//! fails part-way never leaves a tag pointing at missing content.

use pallet_registry::{BlobSource, Client, RegistryError};
use serde_json::{Value, json};

use crate::oci::{self, ArchImage, Blob};

/// What was pushed: each architecture's manifest digest.
#[derive(Debug, Default)]
pub struct Pushed {
    pub images: Vec<(String, String)>,
}

fn source(b: &Blob, media_type: &str) -> BlobSource {
    BlobSource {
        digest: b.digest.clone(),
        size: b.size,
        path: Some(b.path.clone()),
        bytes: None,
        media_type: media_type.to_string(),
    }
}

fn bytes_source(bytes: Vec<u8>, media_type: &str) -> BlobSource {
    let digest = oci::sha256_digest(&bytes);
    BlobSource {
        digest,
        size: bytes.len() as u64,
        path: None,
        bytes: Some(bytes),
        media_type: media_type.to_string(),
    }
}

const EMPTY_CONFIG: &str = "application/vnd.oci.empty.v1+json";
const SPDX: &str = "application/spdx+json";

/// Push `images` and their `index` to the client's repository and tag (`sboms` are
/// `(file name, document)` pairs named `sbom-<arch>.spdx.json`, plus the index's).
/// `mount_from` names another repository of the same registry that already holds the blobs
/// (an earlier tag of the same publish), so they are mounted rather than uploaded again.
pub fn push(
    client: &mut Client,
    images: &[ArchImage],
    index: &Blob,
    sboms: &[(String, Value)],
    mount_from: Option<&str>,
) -> Result<Pushed, RegistryError> {
    let mut pushed = Pushed::default();
    for img in images {
        for l in &img.layers {
            client.push_blob(&source(l, oci::MT_LAYER_GZ), mount_from)?;
        }
        client.push_blob(&source(&img.config, oci::MT_CONFIG), mount_from)?;
        let manifest = std::fs::read(&img.manifest.path).map_err(|e| RegistryError::Io {
            what: "reading the manifest".into(),
            source: e,
        })?;
        client.put_manifest(&img.manifest.digest, oci::MT_MANIFEST, &manifest)?;
        pushed
            .images
            .push((img.arch.apk().to_string(), img.manifest.digest.clone()));
    }
    for img in images {
        let name = format!("sbom-{}.spdx.json", img.arch.apk());
        if let Some((_, doc)) = sboms.iter().find(|(n, _)| *n == name) {
            attach(
                client,
                &img.manifest,
                oci::MT_MANIFEST,
                &name,
                doc,
                mount_from,
            )?;
        }
    }
    let index_bytes = std::fs::read(&index.path).map_err(|e| RegistryError::Io {
        what: "reading the index".into(),
        source: e,
    })?;
    client.put_manifest(&index.digest, oci::MT_INDEX, &index_bytes)?;
    if let Some((_, doc)) = sboms.iter().find(|(n, _)| n == "sbom-index.spdx.json") {
        attach(
            client,
            index,
            oci::MT_INDEX,
            "sbom-index.spdx.json",
            doc,
            mount_from,
        )?;
    }
    if let Some(tag) = client.r.tag.clone() {
        client.put_manifest(&tag, oci::MT_INDEX, &index_bytes)?;
    }
    Ok(pushed)
}

/// Attach an SBOM to `subject` as an OCI referrer (an artifact manifest with a subject). When
/// the registry does not answer with `OCI-Subject` it has no referrers API, and the artifact is
/// listed in the `sha256-<hex>` tag the distribution spec names as the fallback.
fn attach(
    client: &mut Client,
    subject: &Blob,
    subject_type: &str,
    name: &str,
    doc: &Value,
    mount_from: Option<&str>,
) -> Result<(), RegistryError> {
    let sbom = bytes_source(serde_json::to_vec_pretty(doc).expect("JSON"), SPDX);
    let empty = bytes_source(b"{}".to_vec(), EMPTY_CONFIG);
    client.push_blob(&empty, mount_from)?;
    client.push_blob(&sbom, mount_from)?;
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": oci::MT_MANIFEST,
        "artifactType": SPDX,
        "config": {"mediaType": EMPTY_CONFIG, "digest": empty.digest, "size": empty.size},
        "layers": [{"mediaType": SPDX, "digest": sbom.digest, "size": sbom.size, "annotations": {"org.opencontainers.image.title": name}}],
        "subject": {"mediaType": subject_type, "digest": subject.digest, "size": subject.size},
    });
    let bytes = serde_json::to_vec(&manifest).expect("JSON");
    let digest = oci::sha256_digest(&bytes);
    let echoed = client.put_manifest(&digest, oci::MT_MANIFEST, &bytes)?;
    if echoed.is_some() {
        client.stats.referrers_api = Some(true);
        return Ok(());
    }
    client.stats.referrers_api = Some(false);
    let tag = subject.digest.replace(':', "-");
    let existing = client.get_manifest(&tag, oci::MT_INDEX)?;
    // What the tag holds comes from the registry: anything but an index with a `manifests`
    // list (a number, an object without the list) is replaced like unreadable JSON always
    // was, instead of panicking below (found by fuzzing).
    let mut idx: Value = existing
        .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
        .filter(|v| v["manifests"].is_array())
        .unwrap_or_else(
            || json!({"schemaVersion": 2, "mediaType": oci::MT_INDEX, "manifests": []}),
        );
    let list = idx["manifests"]
        .as_array_mut()
        .expect("an index has manifests");
    if !list.iter().any(|m| m["digest"] == digest) {
        list.push(json!({"mediaType": oci::MT_MANIFEST, "digest": digest, "size": bytes.len(), "artifactType": SPDX}));
    }
    client.put_manifest(
        &tag,
        oci::MT_INDEX,
        &serde_json::to_vec(&idx).expect("JSON"),
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{BufRead, BufReader, Read, Write};

    /// A registry on loopback answering each request with the next status and body.
    fn scripted_registry(replies: Vec<(u16, &'static str)>) -> u16 {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        std::thread::spawn(move || {
            for ((status, body), c) in replies.into_iter().zip(l.incoming()) {
                let mut c = c.unwrap();
                let mut r = BufReader::new(c.try_clone().unwrap());
                let mut len = 0u64;
                let mut head_request = None;
                loop {
                    let mut line = String::new();
                    if r.read_line(&mut line).unwrap() == 0 || line == "\r\n" {
                        break;
                    }
                    head_request.get_or_insert(line.starts_with("HEAD "));
                    if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                        len = v.trim().parse().unwrap();
                    }
                }
                std::io::copy(&mut r.take(len), &mut std::io::sink()).unwrap();
                // A HEAD answer carries no length here: the client checks a length it is
                // given against the blob, and this script does not know the blobs' sizes.
                let head = if head_request == Some(true) {
                    format!("HTTP/1.1 {status} X\r\nConnection: close\r\n\r\n")
                } else {
                    format!(
                        "HTTP/1.1 {status} X\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                        body.len()
                    )
                };
                c.write_all(head.as_bytes()).unwrap();
                c.write_all(body.as_bytes()).unwrap();
            }
        });
        port
    }

    /// Found by fuzzing (fuzz/fuzz_targets/registry.rs): a referrers fallback tag holding JSON
    /// that is no index (here a number) panicked with "cannot access key".
    #[test]
    fn a_fallback_tag_that_is_no_index_is_replaced() {
        let port = scripted_registry(vec![
            (201, ""),  // the index by digest
            (200, ""),  // HEAD: the empty config is there
            (200, ""),  // HEAD: the SBOM is there
            (201, ""),  // the SBOM artifact, without OCI-Subject: no referrers API
            (200, "5"), // the fallback tag holds a number
            (201, ""),  // the fallback index written anew
            (201, ""),  // the tag
        ]);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("index.json");
        std::fs::write(&path, b"{}").unwrap();
        let index = Blob {
            digest: oci::sha256_digest(b"{}"),
            size: 2,
            path,
        };
        let r = pallet_registry::Reference::parse(&format!("127.0.0.1:{port}/r:t")).unwrap();
        let mut client = Client::new(r, &[]);
        let sboms = vec![("sbom-index.spdx.json".to_string(), json!({}))];
        push(&mut client, &[], &index, &sboms, None).unwrap();
        assert_eq!(client.stats.referrers_api, Some(false));
    }
}
