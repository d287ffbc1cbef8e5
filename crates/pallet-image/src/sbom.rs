//! SPDX 2.3 JSON for an image: every installed package with version, licence, supplier, purl
//! and checksum. Deterministic: the namespace is derived from the content, and `created` from
//! the build date.

use pallet_apk_types::{PackageInfo, checksum};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

/// SPDX IDs allow letters, digits, `.` and `-` only.
pub fn spdx_id(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' || c == '-' {
                c
            } else {
                '-'
            }
        })
        .collect()
}

/// A licence as an SPDX expression when it is one (Alpine's lowercase `and`/`or` normalised),
/// otherwise a `LicenseRef-` with the original text kept as extracted licensing info.
pub fn license(raw: &str) -> (String, Option<(String, String)>) {
    let raw = raw.trim();
    if raw.is_empty() {
        return ("NOASSERTION".into(), None);
    }
    let normalised = raw
        .split_whitespace()
        .map(|w| match w {
            "and" => "AND",
            "or" => "OR",
            "with" => "WITH",
            other => other,
        })
        .collect::<Vec<_>>()
        .join(" ");
    if spdx::Expression::parse(&normalised).is_ok() {
        return (normalised, None);
    }
    let id = format!("LicenseRef-{}", spdx_id(raw));
    (id.clone(), Some((id, raw.to_string())))
}

pub fn purl(p: &PackageInfo, distro: &str) -> String {
    let enc = |s: &str| {
        s.replace('%', "%25")
            .replace('+', "%2B")
            .replace(' ', "%20")
    };
    format!(
        "pkg:apk/{}/{}@{}?arch={}&distro={}",
        enc(distro),
        enc(&p.name),
        enc(&p.version),
        enc(&p.arch),
        enc(distro)
    )
}

/// The index SBOM: the index, the per-architecture images it holds, and their packages, so
/// that one document answers "what is in this image" whatever the platform.
pub fn index_spdx(
    index_digest: &str,
    created: &str,
    images: &[(String, String, Vec<PackageInfo>)],
    distro: &str,
) -> Value {
    let idx_id = "SPDXRef-ImageIndex".to_string();
    let mut pkgs = vec![json!({
        "SPDXID": idx_id, "name": index_digest, "versionInfo": index_digest,
        "downloadLocation": "NOASSERTION", "filesAnalyzed": false,
        "licenseConcluded": "NOASSERTION", "licenseDeclared": "NOASSERTION",
        "primaryPackagePurpose": "CONTAINER",
    })];
    let mut rels = vec![
        json!({"spdxElementId": "SPDXRef-DOCUMENT", "relationshipType": "DESCRIBES", "relatedSpdxElement": idx_id}),
    ];
    let mut extracted: Vec<(String, String)> = vec![];
    for (arch, digest, packages) in images {
        let id = format!("SPDXRef-Image-{}", spdx_id(arch));
        pkgs.push(json!({
            "SPDXID": id, "name": digest, "versionInfo": digest,
            "downloadLocation": "NOASSERTION", "filesAnalyzed": false,
            "licenseConcluded": "NOASSERTION", "licenseDeclared": "NOASSERTION",
            "primaryPackagePurpose": "CONTAINER",
        }));
        rels.push(json!({"spdxElementId": id, "relationshipType": "VARIANT_OF", "relatedSpdxElement": idx_id}));
        for p in packages {
            let (pkg, extra) = package_entry(
                p,
                distro,
                &format!(
                    "SPDXRef-Package-{}-{}-{}",
                    spdx_id(arch),
                    spdx_id(&p.name),
                    spdx_id(&p.version)
                ),
            );
            if let Some(e) = extra
                && !extracted.iter().any(|(i, _)| *i == e.0)
            {
                extracted.push(e);
            }
            rels.push(json!({"spdxElementId": id, "relationshipType": "CONTAINS", "relatedSpdxElement": pkg["SPDXID"]}));
            pkgs.push(pkg);
        }
    }
    document("sbom-index", created, pkgs, rels, extracted)
}

/// One APK package as an SPDX package, and the extracted licence it needs, if any.
fn package_entry(p: &PackageInfo, distro: &str, id: &str) -> (Value, Option<(String, String)>) {
    let (lic, extra) = license(&p.license);
    let mut pkg = json!({
        "SPDXID": id,
        "name": p.name,
        "versionInfo": p.version,
        "downloadLocation": "NOASSERTION",
        "filesAnalyzed": false,
        "licenseConcluded": lic,
        "licenseDeclared": lic,
        "supplier": match &p.maintainer { Some(m) if !m.is_empty() => format!("Person: {m}"), _ => "NOASSERTION".into() },
        "description": p.description,
        "externalRefs": [{
            "referenceCategory": "PACKAGE-MANAGER",
            "referenceType": "purl",
            "referenceLocator": purl(p, distro),
        }],
    });
    if !p.url.is_empty() {
        pkg["homepage"] = json!(p.url);
    }
    if let Some(c) = p.checksum.as_deref().and_then(checksum::decode_q1) {
        pkg["checksums"] = json!([{"algorithm": "SHA1", "checksumValue": c.iter().map(|b| format!("{b:02x}")).collect::<String>()}]);
    }
    (pkg, extra)
}

fn document(
    name: &str,
    created: &str,
    packages: Vec<Value>,
    rels: Vec<Value>,
    extracted: Vec<(String, String)>,
) -> Value {
    let mut doc = json!({
        "SPDXID": "SPDXRef-DOCUMENT",
        "name": name,
        "spdxVersion": "SPDX-2.3",
        "creationInfo": {"created": created, "creators": [format!("Tool: pallet-{}", env!("CARGO_PKG_VERSION"))], "licenseListVersion": "3.22"},
        "dataLicense": "CC0-1.0",
        "documentNamespace": "",
        "packages": packages,
        "relationships": rels,
    });
    if !extracted.is_empty() {
        doc["hasExtractedLicensingInfos"] = json!(
            extracted
                .iter()
                .map(|(id, text)| json!({"licenseId": id, "extractedText": text, "name": text}))
                .collect::<Vec<_>>()
        );
    }
    let h = Sha256::digest(serde_json::to_vec(&doc).expect("JSON"));
    let hex: String = h.iter().take(16).map(|b| format!("{b:02x}")).collect();
    doc["documentNamespace"] = json!(format!("https://pallet.invalid/spdx/{name}-{hex}"));
    doc
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn licences() {
        assert_eq!(license("MIT").0, "MIT");
        assert_eq!(license("GPL-2.0-only and MIT").0, "GPL-2.0-only AND MIT");
        let (id, extra) = license("custom:weird");
        assert!(id.starts_with("LicenseRef-custom-weird"));
        assert!(extra.is_some());
        assert_eq!(spdx_id("py3.11+x_y"), "py3.11-x-y");
    }
}
