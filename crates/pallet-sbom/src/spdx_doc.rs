//! SPDX 2.3 JSON documents, shaped like apko's.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Map, Value, json};

use crate::license::{ExtractedLicense, normalize};
use crate::util::{apk_purl, purl, q1_to_sha1_hex, rfc3339_utc, sha256_hex};
use crate::{ImageSbomInput, IndexSbomInput, OsRelease};

const NOASSERTION: &str = "NOASSERTION";
const MANIFEST_MEDIA_TYPE: &str = "application/vnd.oci.image.manifest.v1+json";
const INDEX_MEDIA_TYPE: &str = "application/vnd.oci.image.index.v1+json";

/// apko's `stringToIdentifier`: `:` becomes `-`, and every other byte outside
/// `[a-zA-Z0-9.-]` becomes `C<code>`, so distinct inputs stay distinct.
pub fn spdx_identifier(s: &str) -> String {
    let mut out = String::new();
    for c in s.replace(':', "-").chars() {
        if c.is_ascii_alphanumeric() || c == '.' || c == '-' {
            out.push(c);
        } else {
            let mut buf = [0u8; 4];
            for b in c.encode_utf8(&mut buf).bytes() {
                out.push_str(&format!("C{b}"));
            }
        }
    }
    out
}

fn supplier(os: Option<&OsRelease>) -> String {
    match os {
        Some(o) if !o.name.is_empty() => format!("Organization: {}", actor_name(&o.name)),
        _ => NOASSERTION.to_string(),
    }
}

/// SPDX actor names may not carry parentheses (they delimit the email).
fn actor_name(s: &str) -> String {
    s.replace(['(', ')'], "").trim().to_string()
}

/// `Name <email>` as an SPDX `Person: Name (email)`.
fn person(maintainer: &str) -> Option<String> {
    let m = maintainer.trim();
    if m.is_empty() {
        return None;
    }
    Some(match m.split_once('<') {
        Some((name, rest)) => {
            let email = rest.trim_end().trim_end_matches('>').trim();
            let name = actor_name(name);
            if name.is_empty() {
                format!("Person: {email}")
            } else {
                format!("Person: {name} ({email})")
            }
        }
        None => format!("Person: {}", actor_name(m)),
    })
}

fn image_purl(name: &str, repository_url: &str, digest: &str, quals: &[(&str, &str)]) -> String {
    let mut q = quals.to_vec();
    q.push(("repository_url", repository_url));
    purl("oci", "", name, digest, &q)
}

fn purl_ref(locator: String) -> Value {
    json!({"referenceCategory": "PACKAGE-MANAGER", "referenceType": "purl", "referenceLocator": locator})
}

struct Doc {
    packages: Vec<Value>,
    relationships: Vec<Value>,
    extracted: BTreeMap<String, String>,
    seen: BTreeSet<String>,
}

impl Doc {
    fn new() -> Doc {
        Doc {
            packages: Vec::new(),
            relationships: Vec::new(),
            extracted: BTreeMap::new(),
            seen: BTreeSet::new(),
        }
    }

    /// Packages are deduplicated by SPDXID, first one wins, as in apko.
    fn add(&mut self, p: Value) {
        let id = p["SPDXID"].as_str().unwrap_or_default().to_string();
        if self.seen.insert(id) {
            self.packages.push(p);
        }
    }

    fn rel(&mut self, a: &str, ty: &str, b: &str) {
        let r = json!({"spdxElementId": a, "relationshipType": ty, "relatedSpdxElement": b});
        if !self.relationships.contains(&r) {
            self.relationships.push(r);
        }
    }

    fn licenses(&mut self, e: &[ExtractedLicense]) {
        for x in e {
            self.extracted
                .entry(x.id.clone())
                .or_insert_with(|| format!("The package declares the licence `{}`, which is not an SPDX licence identifier.", x.text));
        }
    }

    fn finish(self, name: String, created: i64, tool_version: &str, describes: &str) -> Value {
        let mut doc = Map::new();
        doc.insert("SPDXID".into(), json!("SPDXRef-DOCUMENT"));
        doc.insert("name".into(), json!(name));
        doc.insert("spdxVersion".into(), json!("SPDX-2.3"));
        doc.insert(
            "creationInfo".into(),
            json!({
                "created": rfc3339_utc(created),
                "creators": [format!("Tool: pallet-{}", if tool_version.is_empty() { "unknown" } else { tool_version })],
                "licenseListVersion": license_list_version(),
            }),
        );
        doc.insert("dataLicense".into(), json!("CC0-1.0"));
        doc.insert("documentNamespace".into(), json!(""));
        doc.insert("documentDescribes".into(), json!([describes]));
        doc.insert("packages".into(), Value::Array(self.packages));
        doc.insert("relationships".into(), Value::Array(self.relationships));
        if !self.extracted.is_empty() {
            let infos: Vec<Value> = self
                .extracted
                .into_iter()
                .map(|(id, text)| json!({"licenseId": id, "extractedText": text}))
                .collect();
            doc.insert("hasExtractedLicensingInfos".into(), Value::Array(infos));
        }
        let mut doc = Value::Object(doc);
        // A namespace must be unique per document; a hash of the content is, without
        // reading a clock or random source.
        let digest = sha256_hex(serde_json::to_string(&doc).expect("JSON").as_bytes());
        doc["documentNamespace"] = json!(format!(
            "https://spdx.org/spdxdocs/pallet/{name}-{}",
            &digest[..32]
        ));
        doc
    }
}

fn license_list_version() -> String {
    let v = spdx::identifiers::VERSION;
    v.rsplit_once('.').map_or(v, |(mm, _)| mm).to_string()
}

/// apko's `addSourcePackage`: the `vcs-url` (`url@commit`) as a SOURCE package the image is
/// GENERATED_FROM, with a github purl where it applies.
fn add_source_package(doc: &mut Doc, parent: &str, vcs_url: &str, os: Option<&OsRelease>) {
    let (name, version) = match vcs_url.split_once('@') {
        Some((u, sha)) => (u, sha),
        None => (vcs_url, ""),
    };
    let name = ["git+ssh://", "git://", "https://"]
        .iter()
        .fold(name, |n, p| n.strip_prefix(p).unwrap_or(n));
    let id = format!("SPDXRef-Package-{}", spdx_identifier(vcs_url));
    let mut p = json!({
        "SPDXID": id,
        "name": name,
        "filesAnalyzed": false,
        "description": "Image configuration source",
        "downloadLocation": vcs_url,
        "supplier": supplier(os),
        "copyrightText": NOASSERTION,
        "primaryPackagePurpose": "SOURCE",
    });
    if !version.is_empty() {
        p["versionInfo"] = json!(version);
        // A git commit id is a SHA-1.
        if version.len() == 40 && version.bytes().all(|b| b.is_ascii_hexdigit()) {
            p["checksums"] =
                json!([{"algorithm": "SHA1", "checksumValue": version.to_ascii_lowercase()}]);
        }
    }
    if let Some((org, repo)) = name
        .strip_prefix("github.com/")
        .and_then(|s| s.split_once('/'))
    {
        p["externalRefs"] = json!([purl_ref(purl(
            "github",
            org,
            repo.trim_end_matches(".git"),
            version,
            &[]
        ))]);
    }
    doc.add(p);
    doc.rel(parent, "GENERATED_FROM", &id);
}

/// The SPDX 2.3 document for one architecture's image.
pub fn spdx_image(input: &ImageSbomInput) -> Value {
    let os = input.os.as_ref();
    let mut doc = Doc::new();
    let image_id = format!("SPDXRef-Package-{}", spdx_identifier(&input.image_digest));
    let platform_quals = [
        ("arch", input.oci_arch.as_str()),
        ("mediaType", MANIFEST_MEDIA_TYPE),
        ("os", "linux"),
        ("variant", input.oci_variant.as_str()),
    ];
    doc.add(json!({
        "SPDXID": image_id,
        "name": input.image_digest,
        "versionInfo": input.image_digest,
        "filesAnalyzed": false,
        "description": "apko container image",
        "downloadLocation": NOASSERTION,
        "supplier": supplier(os),
        "copyrightText": NOASSERTION,
        "primaryPackagePurpose": "CONTAINER",
        "checksums": [{"algorithm": "SHA256", "checksumValue": input.image_digest.trim_start_matches("sha256:")}],
        "externalRefs": [purl_ref(image_purl(&input.image_name, &input.repository_url, &input.image_digest, &platform_quals))],
    }));
    for layer in &input.layer_digests {
        let id = format!("SPDXRef-Package-{}", spdx_identifier(layer));
        doc.add(json!({
            "SPDXID": id,
            "name": layer,
            "versionInfo": layer,
            "filesAnalyzed": false,
            "description": "apko operating system layer",
            "downloadLocation": NOASSERTION,
            "supplier": supplier(os),
            "copyrightText": NOASSERTION,
            "checksums": [{"algorithm": "SHA256", "checksumValue": layer.trim_start_matches("sha256:")}],
            "externalRefs": [purl_ref(image_purl(&input.image_name, &input.repository_url, layer, &platform_quals))],
        }));
        doc.rel(&image_id, "CONTAINS", &id);
    }
    // The operating-system package, as apko's addOperatingSystem builds it. apko writes the
    // purpose as `OPERATING_SYSTEM`, which SPDX 2.3 does not allow; the spec spelling is used.
    let (os_id, os_version) = match os {
        Some(o) if !o.id.is_empty() => (o.id.clone(), o.version_id.clone()),
        _ => ("unknown".to_string(), "unknown".to_string()),
    };
    let os_spdx = format!("SPDXRef-OperatingSystem-{}", spdx_identifier(&os_id));
    doc.add(json!({
        "SPDXID": os_spdx,
        "name": os_id,
        "versionInfo": if os_version.is_empty() { "unknown" } else { &os_version },
        "filesAnalyzed": false,
        "description": "Operating System",
        "downloadLocation": NOASSERTION,
        "supplier": supplier(os),
        "copyrightText": NOASSERTION,
        "primaryPackagePurpose": "OPERATING-SYSTEM",
    }));
    doc.rel(&image_id, "CONTAINS", &os_spdx);
    if !input.vcs_url.is_empty() {
        add_source_package(&mut doc, &image_id, &input.vcs_url, os);
    }
    for pkg in &input.packages {
        if let Some(embedded) = &pkg.embedded_spdx
            && merge_embedded(&mut doc, &image_id, embedded, os, pkg)
        {
            continue;
        }
        let id = spdx_identifier(&format!("SPDXRef-Package-apk-{}-{}", pkg.name, pkg.version));
        let lic = normalize(&pkg.license);
        doc.licenses(&lic.extracted);
        let sup = person(&pkg.maintainer).unwrap_or_else(|| supplier(os));
        let mut p = json!({
            "SPDXID": id,
            "name": pkg.name,
            "versionInfo": pkg.version,
            "filesAnalyzed": false,
            "licenseConcluded": NOASSERTION,
            "licenseDeclared": lic.expression,
            "downloadLocation": NOASSERTION,
            "originator": sup,
            "supplier": sup,
            "copyrightText": NOASSERTION,
            "primaryPackagePurpose": "LIBRARY",
        });
        let arch = if pkg.arch.is_empty() {
            &input.apk_arch
        } else {
            &pkg.arch
        };
        if !pkg.description.is_empty() {
            p["description"] = json!(pkg.description);
        }
        if pkg.url.starts_with("http://") || pkg.url.starts_with("https://") {
            p["homepage"] = json!(pkg.url);
        }
        if !pkg.origin.is_empty() {
            p["sourceInfo"] = json!(format!("built from the APK origin package {}", pkg.origin));
        }
        if let Some(sha1) = q1_to_sha1_hex(&pkg.checksum_q1) {
            p["checksums"] = json!([{"algorithm": "SHA1", "checksumValue": sha1}]);
        }
        p["externalRefs"] = json!([purl_ref(apk_purl(os, &pkg.name, &pkg.version, arch))]);
        doc.add(p);
        doc.rel(&image_id, "CONTAINS", &id);
    }
    let name = match input.layer_digests.first() {
        Some(l) => format!("sbom-{l}"),
        None => "sbom".to_string(),
    };
    doc.finish(name, input.created, &input.tool_version, &image_id)
}

/// Merge a package's own SPDX document as apko's `ProcessInternalApkSBOM` does. Returns
/// false when it describes nothing usable, so the caller falls back to APK metadata.
fn merge_embedded(
    doc: &mut Doc,
    image_id: &str,
    src: &Value,
    os: Option<&OsRelease>,
    pkg: &crate::SbomPackage,
) -> bool {
    let empty = Vec::new();
    let packages = src["packages"].as_array().unwrap_or(&empty);
    let rels = src["relationships"].as_array().unwrap_or(&empty);
    let s = |v: &Value| v.as_str().unwrap_or_default().to_string();
    let mut described: BTreeSet<String> = src["documentDescribes"]
        .as_array()
        .unwrap_or(&empty)
        .iter()
        .map(s)
        .collect();
    for r in rels {
        if r["spdxElementId"] == "SPDXRef-DOCUMENT" && r["relationshipType"] == "DESCRIBES" {
            described.insert(s(&r["relatedSpdxElement"]));
        }
    }
    let ids: BTreeSet<String> = packages.iter().map(|p| s(&p["SPDXID"])).collect();
    let targets: Vec<String> = described.into_iter().filter(|d| ids.contains(d)).collect();
    if targets.is_empty() {
        return false;
    }
    // Everything reachable from the described packages, files excepted (apko never lists
    // files).
    let mut todo: BTreeSet<String> = targets.iter().cloned().collect();
    loop {
        let before = todo.len();
        for r in rels {
            let (a, b) = (s(&r["spdxElementId"]), s(&r["relatedSpdxElement"]));
            if todo.contains(&a) && !b.starts_with("SPDXRef-File-") && ids.contains(&b) {
                todo.insert(b);
            }
        }
        if todo.len() == before {
            break;
        }
    }
    let fallback_supplier = supplier(os);
    for p in packages {
        if !todo.contains(&s(&p["SPDXID"])) {
            continue;
        }
        let mut p = p.clone();
        let obj = p.as_object_mut().expect("package is an object");
        obj.insert("SPDXID".into(), json!(spdx_identifier(&s(&obj["SPDXID"]))));
        if obj
            .get("originator")
            .is_none_or(|v| v.as_str().is_none_or(str::is_empty))
        {
            obj.insert("originator".into(), json!(fallback_supplier));
        }
        if obj
            .get("supplier")
            .is_none_or(|v| v.as_str().is_none_or(str::is_empty))
        {
            let o = obj["originator"].clone();
            obj.insert("supplier".into(), o);
        }
        // Files are not carried over, so the file facts cannot stand.
        obj.insert("filesAnalyzed".into(), json!(false));
        obj.remove("packageVerificationCode");
        // melange's package SBOM cannot know the signed control checksum; the index does.
        if obj.get("name").and_then(Value::as_str) == Some(pkg.name.as_str())
            && obj
                .get("checksums")
                .is_none_or(|c| c.as_array().is_none_or(Vec::is_empty))
            && let Some(sha1) = q1_to_sha1_hex(&pkg.checksum_q1)
        {
            obj.insert(
                "checksums".into(),
                json!([{"algorithm": "SHA1", "checksumValue": sha1}]),
            );
        }
        obj.remove("hasFiles");
        for key in ["licenseDeclared", "licenseConcluded"] {
            if let Some(l) = obj.get(key).and_then(Value::as_str) {
                let n = normalize(l);
                let known: BTreeSet<&str> = src["hasExtractedLicensingInfos"]
                    .as_array()
                    .unwrap_or(&empty)
                    .iter()
                    .filter_map(|i| i["licenseId"].as_str())
                    .collect();
                // LicenseRefs the package document defines itself stay as they are.
                let extra: Vec<_> = n
                    .extracted
                    .into_iter()
                    .filter(|e| !known.contains(e.id.as_str()))
                    .collect();
                doc.licenses(&extra);
                obj.insert(key.into(), json!(n.expression));
            }
        }
        doc.add(p);
    }
    for r in rels {
        let (a, b) = (s(&r["spdxElementId"]), s(&r["relatedSpdxElement"]));
        if todo.contains(&a) && todo.contains(&b) {
            doc.rel(
                &spdx_identifier(&a),
                &s(&r["relationshipType"]),
                &spdx_identifier(&b),
            );
        }
    }
    for info in src["hasExtractedLicensingInfos"]
        .as_array()
        .unwrap_or(&empty)
    {
        if let (Some(id), Some(text)) = (info["licenseId"].as_str(), info["extractedText"].as_str())
        {
            doc.extracted
                .entry(id.to_string())
                .or_insert_with(|| text.to_string());
        }
    }
    for t in &targets {
        doc.rel(image_id, "CONTAINS", &spdx_identifier(t));
    }
    true
}

/// The SPDX 2.3 document for the multi-arch index: the index package and one package per
/// arch image, each a `VARIANT_OF` the index.
pub fn spdx_index(input: &IndexSbomInput) -> Value {
    let os = input.os.as_ref();
    let mut doc = Doc::new();
    let index_id = format!("SPDXRef-Package-{}", spdx_identifier(&input.index_digest));
    doc.add(json!({
        "SPDXID": index_id,
        "name": input.index_digest,
        "versionInfo": input.index_digest,
        "filesAnalyzed": false,
        "description": "Multi-arch image index",
        "sourceInfo": "Generated at image build time by pallet",
        "downloadLocation": NOASSERTION,
        "supplier": supplier(os),
        "copyrightText": NOASSERTION,
        "primaryPackagePurpose": "CONTAINER",
        "checksums": [{"algorithm": "SHA256", "checksumValue": input.index_digest.trim_start_matches("sha256:")}],
        "externalRefs": [purl_ref(image_purl(&input.image_name, &input.repository_url, &input.index_digest, &[("mediaType", INDEX_MEDIA_TYPE)]))],
    }));
    for img in &input.images {
        let id = format!("SPDXRef-Package-{}", spdx_identifier(&img.digest));
        let quals = [
            ("arch", img.oci_arch.as_str()),
            ("mediaType", MANIFEST_MEDIA_TYPE),
            ("os", "linux"),
            ("variant", img.oci_variant.as_str()),
        ];
        doc.add(json!({
            "SPDXID": id,
            "name": img.digest,
            "versionInfo": img.digest,
            "filesAnalyzed": false,
            "description": format!("apko container image for {}", img.apk_arch),
            "downloadLocation": NOASSERTION,
            "supplier": supplier(os),
            "copyrightText": NOASSERTION,
            "primaryPackagePurpose": "CONTAINER",
            "checksums": [{"algorithm": "SHA256", "checksumValue": img.digest.trim_start_matches("sha256:")}],
            "externalRefs": [purl_ref(image_purl(&input.image_name, &input.repository_url, &img.digest, &quals))],
        }));
        // apko's direction: the index is a VARIANT_OF each arch image.
        doc.rel(&index_id, "VARIANT_OF", &id);
    }
    if !input.vcs_url.is_empty() {
        add_source_package(&mut doc, &index_id, &input.vcs_url, os);
    }
    let name = format!("sbom-{}", input.index_digest);
    doc.finish(name, input.created, &input.tool_version, &index_id)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::SbomPackage;

    #[test]
    fn identifiers_keep_only_allowed_characters() {
        assert_eq!(spdx_identifier("sha256:ab"), "sha256-ab");
        assert_eq!(spdx_identifier("libstdc++"), "libstdcC43C43");
        assert_eq!(spdx_identifier("py3-ruamel.yaml_x"), "py3-ruamel.yamlC95x");
    }

    #[test]
    fn embedded_described_by_relationship() {
        let src = json!({
            "packages": [
                {"SPDXID": "SPDXRef-Package-foo:1", "name": "foo", "licenseDeclared": "MIT and BSD",
                 "downloadLocation": "NOASSERTION", "filesAnalyzed": true},
                {"SPDXID": "SPDXRef-Package-dep", "name": "dep", "downloadLocation": "NOASSERTION"}
            ],
            "relationships": [
                {"spdxElementId": "SPDXRef-DOCUMENT", "relationshipType": "DESCRIBES", "relatedSpdxElement": "SPDXRef-Package-foo:1"},
                {"spdxElementId": "SPDXRef-Package-foo:1", "relationshipType": "DEPENDS_ON", "relatedSpdxElement": "SPDXRef-Package-dep"}
            ]
        });
        let input = ImageSbomInput {
            image_digest: "sha256:00".into(),
            layer_digests: vec!["sha256:11".into()],
            packages: vec![SbomPackage {
                name: "foo".into(),
                version: "1".into(),
                embedded_spdx: Some(src),
                ..Default::default()
            }],
            ..Default::default()
        };
        let doc = spdx_image(&input);
        let pkgs = doc["packages"].as_array().unwrap();
        let foo = pkgs.iter().find(|p| p["name"] == "foo").unwrap();
        assert_eq!(foo["SPDXID"], "SPDXRef-Package-foo-1");
        assert_eq!(foo["licenseDeclared"], "MIT AND LicenseRef-BSD");
        assert_eq!(foo["filesAnalyzed"], false);
        assert_eq!(foo["supplier"], "NOASSERTION");
        assert!(pkgs.iter().any(|p| p["name"] == "dep"));
        let rels = doc["relationships"].as_array().unwrap();
        assert!(rels.contains(&json!({"spdxElementId": "SPDXRef-Package-sha256-00", "relationshipType": "CONTAINS", "relatedSpdxElement": "SPDXRef-Package-foo-1"})));
        assert!(rels.contains(&json!({"spdxElementId": "SPDXRef-Package-foo-1", "relationshipType": "DEPENDS_ON", "relatedSpdxElement": "SPDXRef-Package-dep"})));
        assert_eq!(doc["name"], "sbom-sha256:11");
        assert_eq!(
            doc["documentDescribes"],
            json!(["SPDXRef-Package-sha256-00"])
        );
    }

    #[test]
    fn embedded_without_description_falls_back_to_apk_metadata() {
        let input = ImageSbomInput {
            image_digest: "sha256:00".into(),
            packages: vec![SbomPackage {
                name: "foo".into(),
                version: "1".into(),
                embedded_spdx: Some(json!({"packages": []})),
                ..Default::default()
            }],
            ..Default::default()
        };
        let doc = spdx_image(&input);
        assert!(
            doc["packages"]
                .as_array()
                .unwrap()
                .iter()
                .any(|p| p["SPDXID"] == "SPDXRef-Package-apk-foo-1")
        );
    }
}
