//! SBOMs for built images: SPDX 2.3 JSON as apko writes it (`pkg/sbom/generator/spdx`), and
//! CycloneDX 1.5 JSON, which apko dropped in 2024 but users still ask for.
//!
//! Everything here is a pure function of its input: no clock, no file system, no random
//! numbers. `created` comes from the input, and document namespaces and serial numbers are
//! derived from a hash of the document, so the same image gives the same bytes.
//!
//! Unlike apko, which lists APK packages only when they carry an SPDX file under
//! `/var/lib/db/sbom/`, every installed package is listed: those with an embedded SPDX
//! document are merged the way apko merges them, the others are described from their APK
//! metadata (version, licence, supplier, purl and the SHA-1 behind the `Q1` checksum).

#![deny(missing_docs)]

mod cyclonedx;
mod license;
mod spdx_doc;
mod util;

pub use cyclonedx::{cyclonedx_image, cyclonedx_index};
pub use license::{
    ExtractedLicense, NormalizedLicense, normalize as normalize_license, sanitize_idstring,
};
pub use spdx_doc::{spdx_identifier, spdx_image, spdx_index};
pub use util::{apk_purl, q1_to_sha1_hex, rfc3339_utc};

/// `/etc/os-release` facts, when the image has one.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OsRelease {
    /// `ID` (`alpine`, `wolfi`); also the purl namespace.
    pub id: String,
    /// `NAME` (`Alpine Linux`); the supplier organisation.
    pub name: String,
    /// `VERSION_ID`.
    pub version_id: String,
}

impl OsRelease {
    /// Parse the text of an os-release file (`KEY=value`, optionally quoted).
    pub fn parse(text: &str) -> OsRelease {
        let mut os = OsRelease::default();
        for line in text.lines() {
            let Some((k, v)) = line.trim().split_once('=') else {
                continue;
            };
            let v = v.trim().trim_matches('"').trim_matches('\'').to_string();
            match k.trim() {
                "ID" => os.id = v,
                "NAME" => os.name = v,
                "VERSION_ID" => os.version_id = v,
                _ => {}
            }
        }
        os
    }
}

/// One installed APK package.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SbomPackage {
    /// `P:`.
    pub name: String,
    /// `V:`.
    pub version: String,
    /// `A:` (apk arch, `x86_64`).
    pub arch: String,
    /// `o:`.
    pub origin: String,
    /// `L:` as written; normalised with [`normalize_license`].
    pub license: String,
    /// `T:`.
    pub description: String,
    /// `U:` project home page.
    pub url: String,
    /// `m:` (`Name <email>`), the supplier.
    pub maintainer: String,
    /// `C:` (`Q1` + base64 SHA-1 of the control section).
    pub checksum_q1: String,
    /// The package's own SPDX document from `/var/lib/db/sbom/`, if it has one.
    pub embedded_spdx: Option<serde_json::Value>,
}

/// What an image SBOM describes: one architecture's image.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ImageSbomInput {
    /// purl name of the image (`alpine-base`), usually the last path segment of the repository.
    pub image_name: String,
    /// Registry and path before the name (`index.docker.io/library`), or empty.
    pub repository_url: String,
    /// OCI platform architecture (`amd64`, `arm`).
    pub oci_arch: String,
    /// OCI platform variant (`v7`) or empty.
    pub oci_variant: String,
    /// apk arch (`x86_64`); names the file.
    pub apk_arch: String,
    /// Manifest digest, `sha256:…`.
    pub image_digest: String,
    /// Layer digests, `sha256:…`, bottom first.
    pub layer_digests: Vec<String>,
    /// Build date, Unix seconds.
    pub created: i64,
    /// From `/etc/os-release`, if known.
    pub os: Option<OsRelease>,
    /// `vcs-url` (`https://github.com/org/repo@sha`), or empty.
    pub vcs_url: String,
    /// Version string for the `Tool:` creator.
    pub tool_version: String,
    /// Installed packages in install order.
    pub packages: Vec<SbomPackage>,
}

/// One architecture's image inside an index.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IndexImage {
    /// OCI platform architecture.
    pub oci_arch: String,
    /// OCI platform variant or empty.
    pub oci_variant: String,
    /// apk arch.
    pub apk_arch: String,
    /// Manifest digest.
    pub digest: String,
}

/// What the index SBOM describes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IndexSbomInput {
    /// purl name of the image.
    pub image_name: String,
    /// Registry and path before the name, or empty.
    pub repository_url: String,
    /// Index digest, `sha256:…`.
    pub index_digest: String,
    /// Per-arch images.
    pub images: Vec<IndexImage>,
    /// Build date, Unix seconds.
    pub created: i64,
    /// From `/etc/os-release`, if known.
    pub os: Option<OsRelease>,
    /// `vcs-url`, or empty.
    pub vcs_url: String,
    /// Version string for the `Tool:` creator.
    pub tool_version: String,
}

/// apko's file name for an arch's SPDX SBOM: `sbom-<apkarch>.spdx.json`.
pub fn spdx_file_name(apk_arch: &str) -> String {
    format!("sbom-{apk_arch}.spdx.json")
}

/// apko's file name for the index SPDX SBOM.
pub const SPDX_INDEX_FILE_NAME: &str = "sbom-index.spdx.json";

/// CycloneDX file name, as apko named it before dropping the format (extension `cdx`).
pub fn cyclonedx_file_name(apk_arch: &str) -> String {
    format!("sbom-{apk_arch}.cdx")
}

/// The index CycloneDX file name.
pub const CYCLONEDX_INDEX_FILE_NAME: &str = "sbom-index.cdx";

/// Render a document as apko does: two-space indent and a trailing newline.
pub fn to_pretty_json(doc: &serde_json::Value) -> String {
    let mut s = serde_json::to_string_pretty(doc).expect("JSON values always serialize");
    s.push('\n');
    s
}
