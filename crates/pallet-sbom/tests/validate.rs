//! A realistic Alpine-like image SBOM checked by the real SPDX validator (`pyspdxtools`, from
//! PyPI `spdx-tools`) when it is installed, plus CycloneDX shape checks.

use std::process::Command;

use pallet_sbom::{
    ImageSbomInput, IndexImage, IndexSbomInput, OsRelease, SbomPackage, cyclonedx_file_name,
    cyclonedx_image, cyclonedx_index, spdx_file_name, spdx_image, spdx_index, to_pretty_json,
};
use serde_json::{Value, json};

fn q1(n: u8) -> String {
    use base64::Engine as _;
    format!(
        "Q1{}",
        base64::engine::general_purpose::STANDARD.encode([n; 20])
    )
}

fn alpine() -> OsRelease {
    OsRelease::parse(
        "NAME=\"Alpine Linux\"\nID=alpine\nVERSION_ID=3.20.3\nPRETTY_NAME=\"Alpine Linux v3.20\"\n",
    )
}

/// A melange-style package SBOM, as Wolfi packages carry under `/var/lib/db/sbom/`.
fn embedded() -> Value {
    json!({
        "SPDXID": "SPDXRef-DOCUMENT",
        "name": "apk-replayout-1.0.0-r0",
        "spdxVersion": "SPDX-2.3",
        "creationInfo": {"created": "1970-01-01T00:00:00Z", "creators": ["Tool: melange (v0.1)"], "licenseListVersion": "3.22"},
        "dataLicense": "CC0-1.0",
        "documentNamespace": "https://spdx.org/spdxdocs/chainguard/melange/x",
        "documentDescribes": ["SPDXRef-Package-replayout-1.0.0-r0"],
        "packages": [
            {"SPDXID": "SPDXRef-Package-replayout-1.0.0-r0", "name": "replayout", "versionInfo": "1.0.0-r0",
             "filesAnalyzed": true, "packageVerificationCode": {"packageVerificationCodeValue": "abc"},
             "licenseConcluded": "NOASSERTION", "licenseDeclared": "LicenseRef-replayout-custom",
             "downloadLocation": "NOASSERTION", "copyrightText": "NOASSERTION",
             "externalRefs": [{"referenceCategory": "PACKAGE-MANAGER", "referenceType": "purl",
                               "referenceLocator": "pkg:apk/unknown/replayout@1.0.0-r0?arch=x86_64"}]},
            {"SPDXID": "SPDXRef-Package-melange.yaml", "name": "melange.yaml", "versionInfo": "abc",
             "filesAnalyzed": false, "licenseConcluded": "NOASSERTION", "downloadLocation": "NOASSERTION",
             "copyrightText": "NOASSERTION"},
            {"SPDXID": "SPDXRef-Package-unrelated", "name": "unrelated", "filesAnalyzed": false,
             "downloadLocation": "NOASSERTION"}
        ],
        "files": [{"SPDXID": "SPDXRef-File-usr-bin-x", "fileName": "/usr/bin/x", "checksums": []}],
        "relationships": [
            {"spdxElementId": "SPDXRef-Package-replayout-1.0.0-r0", "relationshipType": "DESCRIBED_BY", "relatedSpdxElement": "SPDXRef-Package-melange.yaml"},
            {"spdxElementId": "SPDXRef-Package-replayout-1.0.0-r0", "relationshipType": "CONTAINS", "relatedSpdxElement": "SPDXRef-File-usr-bin-x"}
        ],
        "hasExtractedLicensingInfos": [{"licenseId": "LicenseRef-replayout-custom", "extractedText": "Do what you like."}]
    })
}

fn input() -> ImageSbomInput {
    let raw: &[(&str, &str, &str)] = &[
        ("alpine-baselayout", "3.6.5-r0", "GPL-2.0-only"),
        ("alpine-baselayout-data", "3.6.5-r0", "GPL-2.0-only"),
        ("alpine-keys", "2.4-r1", "MIT"),
        ("apk-tools", "2.14.4-r1", "GPL-2.0-only"),
        ("busybox", "1.36.1-r29", "GPL-2.0-only"),
        ("busybox-binsh", "1.36.1-r29", "GPL-2.0-only"),
        ("ca-certificates-bundle", "20240705-r0", "MPL-2.0 AND MIT"),
        ("libcrypto3", "3.3.2-r0", "Apache-2.0"),
        ("libssl3", "3.3.2-r0", "Apache-2.0"),
        ("musl", "1.2.5-r0", "MIT"),
        (
            "musl-utils",
            "1.2.5-r0",
            "MIT AND BSD-2-Clause AND GPL-2.0-or-later",
        ),
        ("scanelf", "1.3.7-r2", "GPL-2.0-only"),
        ("ssl_client", "1.36.1-r29", "GPL-2.0-only"),
        ("zlib", "1.3.1-r1", "Zlib"),
        (
            "libstdc++",
            "13.2.1_git20240309-r0",
            "GPL-2.0-or-later AND LGPL-2.1-or-later",
        ),
        (
            "libgcc",
            "13.2.1_git20240309-r0",
            "GPL-2.0-or-later and LGPL-2.1-or-later",
        ),
        ("py3-ruamel.yaml", "0.18.6-r0", "MIT"),
        (
            "perl-io-socket-ssl",
            "2.085-r0",
            "Artistic-1.0-Perl OR GPL-1.0-or-later",
        ),
        ("tzdata", "2024b-r0", "Public-Domain"),
        (
            "xz-libs",
            "5.6.2-r0",
            "0BSD AND LGPL-2.1-or-later AND GPL-2.0-or-later",
        ),
        ("icu-data-en", "74.2-r0", "MIT ICU Unicode-TOU"),
        ("libxml2", "2.12.7-r0", "MIT and BSD"),
        ("fontconfig", "2.15.0-r1", "custom"),
        (
            "gcc-java",
            "13.2.1-r0",
            "GPL-2.0-or-later WITH Classpath-exception-2.0",
        ),
        ("weird", "1.0-r0", "GPL v2 (or later)"),
    ];
    let mut packages: Vec<SbomPackage> = raw
        .iter()
        .enumerate()
        .map(|(i, (n, v, l))| SbomPackage {
            name: n.to_string(),
            version: v.to_string(),
            arch: "x86_64".into(),
            origin: n.split('-').next().unwrap().to_string(),
            license: l.to_string(),
            description: format!("The {n} package"),
            url: if i % 3 == 0 {
                format!("https://example.org/{n}")
            } else {
                String::new()
            },
            maintainer: if i % 4 == 0 {
                "Natanael Copa <ncopa@alpinelinux.org>".into()
            } else {
                String::new()
            },
            checksum_q1: q1(i as u8),
            embedded_spdx: None,
        })
        .collect();
    packages.push(SbomPackage {
        name: "replayout".into(),
        version: "1.0.0-r0".into(),
        arch: "x86_64".into(),
        license: "custom".into(),
        checksum_q1: q1(200),
        embedded_spdx: Some(embedded()),
        ..Default::default()
    });
    ImageSbomInput {
        image_name: "alpine-base".into(),
        repository_url: "registry.example/library".into(),
        oci_arch: "amd64".into(),
        apk_arch: "x86_64".into(),
        image_digest: format!("sha256:{}", "ab".repeat(32)),
        layer_digests: vec![format!("sha256:{}", "cd".repeat(32))],
        created: 1_700_000_000,
        os: Some(alpine()),
        vcs_url: "https://github.com/example/images@0123456789abcdef0123456789abcdef01234567"
            .into(),
        tool_version: "0.1.0".into(),
        packages,
        ..Default::default()
    }
}

fn index_input() -> IndexSbomInput {
    IndexSbomInput {
        image_name: "alpine-base".into(),
        repository_url: String::new(),
        index_digest: format!("sha256:{}", "ef".repeat(32)),
        images: vec![
            IndexImage {
                oci_arch: "amd64".into(),
                oci_variant: String::new(),
                apk_arch: "x86_64".into(),
                digest: format!("sha256:{}", "ab".repeat(32)),
            },
            IndexImage {
                oci_arch: "arm".into(),
                oci_variant: "v7".into(),
                apk_arch: "armv7".into(),
                digest: format!("sha256:{}", "12".repeat(32)),
            },
        ],
        created: 0,
        os: Some(alpine()),
        vcs_url: "https://github.com/example/images@0123456789abcdef0123456789abcdef01234567"
            .into(),
        tool_version: "0.1.0".into(),
    }
}

fn pyspdxtools_available() -> bool {
    Command::new("pyspdxtools")
        .arg("--help")
        .output()
        .is_ok_and(|o| o.status.success())
}

fn validate(path: &std::path::Path) {
    if !pyspdxtools_available() {
        eprintln!(
            "SKIPPED: pyspdxtools is not on PATH (pip install spdx-tools); validation of {} not run",
            path.display()
        );
        return;
    }
    let out = Command::new("pyspdxtools")
        .arg("-i")
        .arg(path)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() && !text.contains("validation"),
        "pyspdxtools rejected {}:\n{text}",
        path.display()
    );
    eprintln!("pyspdxtools accepted {}", path.display());
}

#[test]
fn spdx_image_sbom_is_valid() {
    let doc = spdx_image(&input());
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(spdx_file_name("x86_64"));
    assert!(path.ends_with("sbom-x86_64.spdx.json"));
    std::fs::write(&path, to_pretty_json(&doc)).unwrap();

    let pkgs = doc["packages"].as_array().unwrap();
    // image + layer + OS + source + 25 APKs + replayout + its melange.yaml
    assert_eq!(pkgs.len(), 4 + 25 + 2, "{doc:#}");
    for p in pkgs {
        let id = p["SPDXID"].as_str().unwrap();
        assert!(
            id.starts_with("SPDXRef-")
                && id
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-'),
            "{id}"
        );
    }
    let by_name = |n: &str| {
        pkgs.iter()
            .find(|p| p["name"] == n)
            .unwrap_or_else(|| panic!("{n}"))
    };
    let stdcxx = by_name("libstdc++");
    assert_eq!(stdcxx["versionInfo"], "13.2.1_git20240309-r0");
    assert_eq!(
        stdcxx["externalRefs"][0]["referenceLocator"],
        "pkg:apk/alpine/libstdc%2B%2B@13.2.1_git20240309-r0?arch=x86_64&distro=alpine-3.20.3"
    );
    assert_eq!(stdcxx["checksums"][0]["algorithm"], "SHA1");
    assert_eq!(
        by_name("libgcc")["licenseDeclared"],
        "GPL-2.0-or-later AND LGPL-2.1-or-later"
    );
    assert_eq!(
        by_name("libxml2")["licenseDeclared"],
        "MIT AND LicenseRef-BSD"
    );
    assert_eq!(
        by_name("fontconfig")["licenseDeclared"],
        "LicenseRef-custom"
    );
    assert_eq!(
        by_name("alpine-baselayout")["supplier"],
        "Person: Natanael Copa (ncopa@alpinelinux.org)"
    );
    assert_eq!(
        by_name("alpine-keys")["supplier"],
        "Organization: Alpine Linux"
    );
    let replayout = by_name("replayout");
    assert_eq!(replayout["filesAnalyzed"], false);
    assert!(replayout.get("packageVerificationCode").is_none());
    assert_eq!(replayout["checksums"][0]["checksumValue"], "c8".repeat(20));
    assert!(pkgs.iter().all(|p| p["name"] != "unrelated"));
    let infos = doc["hasExtractedLicensingInfos"].as_array().unwrap();
    assert!(
        infos
            .iter()
            .any(|i| i["licenseId"] == "LicenseRef-replayout-custom")
    );
    assert!(infos.iter().any(|i| i["licenseId"] == "LicenseRef-BSD"));
    assert_eq!(doc["creationInfo"]["created"], "2023-11-14T22:13:20Z");
    // Deterministic, and the namespace changes with the content.
    assert_eq!(doc, spdx_image(&input()));
    let mut other = input();
    other.packages.pop();
    assert_ne!(
        spdx_image(&other)["documentNamespace"],
        doc["documentNamespace"]
    );

    validate(&path);
}

#[test]
fn spdx_index_sbom_is_valid() {
    let doc = spdx_index(&index_input());
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(pallet_sbom::SPDX_INDEX_FILE_NAME);
    std::fs::write(&path, to_pretty_json(&doc)).unwrap();
    let rels = doc["relationships"].as_array().unwrap();
    assert_eq!(
        rels.iter()
            .filter(|r| r["relationshipType"] == "VARIANT_OF")
            .count(),
        2
    );
    validate(&path);
}

#[test]
fn spdx_without_os_release_is_valid() {
    let mut i = input();
    i.os = None;
    i.vcs_url.clear();
    let doc = spdx_image(&i);
    assert!(
        doc["packages"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["name"] == "unknown")
    );
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sbom-x86_64.spdx.json");
    std::fs::write(&path, to_pretty_json(&doc)).unwrap();
    validate(&path);
}

/// The CycloneDX JSON schema check of `scripts/validate-cyclonedx.py` (PyPI
/// cyclonedx-python-lib), or `SKIPPED:` when that library is not installed.
fn validate_cyclonedx(bom: &Value) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bom.cdx.json");
    std::fs::write(&path, to_pretty_json(bom)).unwrap();
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../scripts/validate-cyclonedx.py");
    let out = Command::new("python3")
        .arg(script)
        .arg(&path)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    if out.status.code() == Some(3) {
        eprintln!("SKIPPED: {}", text.trim());
        return;
    }
    assert!(out.status.success(), "CycloneDX validation failed:\n{text}");
}

#[test]
fn cyclonedx_documents_pass_the_schema() {
    validate_cyclonedx(&cyclonedx_image(&input()));
    validate_cyclonedx(&cyclonedx_index(&index_input()));
}

#[test]
fn cyclonedx_documents() {
    assert_eq!(cyclonedx_file_name("aarch64"), "sbom-aarch64.cdx");
    let bom = cyclonedx_image(&input());
    let text = to_pretty_json(&bom);
    let back: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(back["bomFormat"], "CycloneDX");
    assert_eq!(back["specVersion"], "1.5");
    assert!(
        back["serialNumber"]
            .as_str()
            .unwrap()
            .starts_with("urn:uuid:")
    );
    let comps = back["components"].as_array().unwrap();
    assert_eq!(comps.iter().filter(|c| c["type"] == "library").count(), 26);
    for c in comps.iter().filter(|c| c["type"] == "library") {
        assert!(
            c["purl"].as_str().unwrap().starts_with("pkg:apk/alpine/"),
            "{c}"
        );
    }
    let musl = comps.iter().find(|c| c["name"] == "musl-utils").unwrap();
    assert_eq!(
        musl["licenses"][0]["expression"],
        "MIT AND BSD-2-Clause AND GPL-2.0-or-later"
    );
    assert_eq!(bom, cyclonedx_image(&input()));
    let idx = cyclonedx_index(&index_input());
    assert_eq!(idx["components"].as_array().unwrap().len(), 2);
    assert!(
        idx["metadata"]["component"]["purl"]
            .as_str()
            .unwrap()
            .contains("index.v1")
    );
}
