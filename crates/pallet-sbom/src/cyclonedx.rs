//! CycloneDX 1.5 JSON. apko removed its generator in 2024 (commit `0b40a60b`); this follows
//! the shape it had: the image as the metadata component, packages as components.

use serde_json::{Value, json};

use crate::license::normalize;
use crate::util::{apk_purl, purl, q1_to_sha1_hex, rfc3339_utc, sha256_hex};
use crate::{ImageSbomInput, IndexSbomInput};

fn tool(version: &str) -> Value {
    json!({"components": [{"type": "application", "name": "pallet", "version": if version.is_empty() { "unknown" } else { version }}]})
}

/// A UUID-shaped serial derived from the content, since the format wants `urn:uuid:`.
fn finish(mut bom: Value) -> Value {
    let h = sha256_hex(serde_json::to_string(&bom).expect("JSON").as_bytes());
    let serial = format!(
        "urn:uuid:{}-{}-5{}-8{}-{}",
        &h[0..8],
        &h[8..12],
        &h[13..16],
        &h[17..20],
        &h[20..32]
    );
    bom["serialNumber"] = json!(serial);
    bom
}

fn licenses(raw: &str) -> Option<Value> {
    if raw.trim().is_empty() {
        return None;
    }
    let n = normalize(raw);
    Some(if n.extracted.is_empty() {
        json!([{"expression": n.expression}])
    } else {
        // CycloneDX has no LicenseRef; a free-text name keeps what the package said.
        json!([{"license": {"name": raw.trim()}}])
    })
}

/// The CycloneDX document for one architecture's image.
pub fn cyclonedx_image(input: &ImageSbomInput) -> Value {
    let os = input.os.as_ref();
    let image_purl = purl(
        "oci",
        "",
        &input.image_name,
        &input.image_digest,
        &[
            ("arch", input.oci_arch.as_str()),
            ("mediaType", "application/vnd.oci.image.manifest.v1+json"),
            ("os", "linux"),
            ("repository_url", input.repository_url.as_str()),
            ("variant", input.oci_variant.as_str()),
        ],
    );
    let mut components = Vec::new();
    let mut deps = Vec::new();
    if let Some(o) = os.filter(|o| !o.id.is_empty()) {
        let r = format!("os:{}@{}", o.id, o.version_id);
        components.push(json!({"bom-ref": r, "type": "operating-system", "name": o.id, "version": o.version_id, "description": o.name}));
        deps.push(r);
    }
    for p in &input.packages {
        let arch = if p.arch.is_empty() {
            &input.apk_arch
        } else {
            &p.arch
        };
        let pu = apk_purl(os, &p.name, &p.version, arch);
        let mut c = json!({"bom-ref": pu, "type": "library", "name": p.name, "version": p.version});
        if !p.description.is_empty() {
            c["description"] = json!(p.description);
        }
        if !p.maintainer.is_empty() {
            c["supplier"] = json!({"name": p.maintainer});
        }
        if let Some(l) = licenses(&p.license) {
            c["licenses"] = l;
        }
        c["purl"] = json!(pu);
        if let Some(sha1) = q1_to_sha1_hex(&p.checksum_q1) {
            c["hashes"] = json!([{"alg": "SHA-1", "content": sha1}]);
        }
        if p.url.starts_with("http://") || p.url.starts_with("https://") {
            c["externalReferences"] = json!([{"type": "website", "url": p.url}]);
        }
        deps.push(pu);
        components.push(c);
    }
    let bom = json!({
        "bomFormat": "CycloneDX",
        "specVersion": "1.5",
        "serialNumber": "",
        "version": 1,
        "metadata": {
            "timestamp": rfc3339_utc(input.created),
            "tools": tool(&input.tool_version),
            "component": {"bom-ref": image_purl, "type": "container", "name": input.image_name, "version": input.image_digest, "purl": image_purl},
        },
        "components": components,
        "dependencies": [{"ref": image_purl, "dependsOn": deps}],
    });
    finish(bom)
}

/// The CycloneDX document for the index: the per-arch images as components.
pub fn cyclonedx_index(input: &IndexSbomInput) -> Value {
    let index_purl = purl(
        "oci",
        "",
        &input.image_name,
        &input.index_digest,
        &[
            ("mediaType", "application/vnd.oci.image.index.v1+json"),
            ("repository_url", input.repository_url.as_str()),
        ],
    );
    let components: Vec<Value> = input
        .images
        .iter()
        .map(|i| {
            let pu = purl(
                "oci",
                "",
                &input.image_name,
                &i.digest,
                &[
                    ("arch", i.oci_arch.as_str()),
                    ("mediaType", "application/vnd.oci.image.manifest.v1+json"),
                    ("os", "linux"),
                    ("repository_url", input.repository_url.as_str()),
                    ("variant", i.oci_variant.as_str()),
                ],
            );
            json!({"bom-ref": pu, "type": "container", "name": format!("{}-{}", input.image_name, i.apk_arch), "version": i.digest, "purl": pu})
        })
        .collect();
    let refs: Vec<Value> = components.iter().map(|c| c["bom-ref"].clone()).collect();
    finish(json!({
        "bomFormat": "CycloneDX",
        "specVersion": "1.5",
        "serialNumber": "",
        "version": 1,
        "metadata": {
            "timestamp": rfc3339_utc(input.created),
            "tools": tool(&input.tool_version),
            "component": {"bom-ref": index_purl, "type": "container", "name": input.image_name, "version": input.index_digest, "purl": index_purl},
        },
        "components": components,
        "dependencies": [{"ref": index_purl, "dependsOn": refs}],
    }))
}
