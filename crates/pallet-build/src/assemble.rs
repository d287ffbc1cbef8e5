//! Turning a build's output folders into signed packages and a repository index.

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};

use pallet_apk_types::{Dependency, PackageInfo};
use pallet_keys::SigningKey;
use serde_json::json;

use crate::sca::{self, ScaOptions};

/// What the configuration says about one output package.
#[derive(Clone, Debug, Default)]
pub struct PackageSpec {
    pub name: String,
    pub description: String,
    pub url: String,
    pub commit: Option<String>,
    pub license: String,
    pub depends: Vec<Dependency>,
    pub provides: Vec<Dependency>,
    pub replaces: Vec<Dependency>,
    pub provider_priority: Option<u64>,
    pub replaces_priority: Option<u64>,
    pub triggers: Vec<String>,
    /// Install scripts by control name (`.post-install` …).
    pub scripts: Vec<(String, Vec<u8>)>,
    pub sca: ScaOptions,
    /// Lint rules downgraded from required to warnings (`checks.disabled`).
    pub checks_disabled: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum AssembleError {
    #[error("{pkg}: {source}")]
    Io {
        pkg: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{pkg}: {source}")]
    Write {
        pkg: String,
        #[source]
        source: pallet_apk_stream::WriteError,
    },
}

/// Everything shared by the packages of one build.
pub struct Assembly<'a> {
    pub version: String,
    pub epoch: u64,
    pub arch: String,
    pub origin: String,
    pub namespace: String,
    pub source_date_epoch: u64,
    pub signing_key: Option<&'a SigningKey>,
    /// The compiled configuration embedded as `.melange.yaml`.
    pub config_yaml: String,
}

impl Assembly<'_> {
    pub fn full_version(&self) -> String {
        format!("{}-r{}", self.version, self.epoch)
    }

    /// Analyze, describe (SPDX) and pack `destdir` as `spec`, into `out_dir/ARCH/`.
    pub fn emit(
        &self,
        spec: &PackageSpec,
        destdir: &Path,
        out_dir: &Path,
    ) -> Result<(PathBuf, PackageInfo), AssembleError> {
        let io = |source| AssembleError::Io {
            pkg: spec.name.clone(),
            source,
        };
        let full = self.full_version();
        let g = sca::analyze(destdir, &full, spec.sca).map_err(io)?;
        // Configured dependencies plus generated ones, minus what the package provides itself.
        let mut provides: Vec<Dependency> = spec.provides.clone();
        for p in g.provides {
            if !provides.iter().any(|x| x.name == p.name) {
                provides.push(p);
            }
        }
        provides.sort();
        let own: BTreeSet<&str> = provides
            .iter()
            .map(|p| p.name.as_str())
            .chain([spec.name.as_str()])
            .collect();
        let mut depends: Vec<Dependency> = spec.depends.clone();
        for d in g.depends {
            if !own.contains(d.name.as_str()) && !depends.iter().any(|x| x.name == d.name) {
                depends.push(d);
            }
        }
        depends.sort();
        depends.dedup();
        self.write_sbom(spec, destdir).map_err(io)?;
        let info = PackageInfo {
            name: spec.name.clone(),
            version: full.clone(),
            arch: self.arch.clone(),
            description: spec.description.clone(),
            url: spec.url.clone(),
            license: spec.license.clone(),
            origin: Some(self.origin.clone()),
            commit: spec.commit.clone(),
            build_time: self.source_date_epoch,
            depends,
            provides,
            replaces: spec.replaces.clone(),
            provider_priority: spec.provider_priority,
            replaces_priority: spec.replaces_priority,
            triggers: spec.triggers.clone(),
            // Written as melange's `# vendored = …` comment lines, which apk ignores.
            extra: g
                .vendored
                .iter()
                .map(|v| ("# vendored".to_string(), v.to_string()))
                .collect(),
            ..PackageInfo::default()
        };
        let mut control = spec.scripts.clone();
        control.push((
            ".melange.yaml".into(),
            self.config_yaml.clone().into_bytes(),
        ));
        let dir = out_dir.join(&self.arch);
        fs::create_dir_all(&dir).map_err(io)?;
        let out = dir.join(format!("{}-{full}.apk", spec.name));
        let opts = pallet_apk_stream::WriteOptions {
            source_date_epoch: self.source_date_epoch,
            signing_key: self.signing_key,
            ..Default::default()
        };
        let w = pallet_apk_stream::write_apk(destdir, &info, &control, &opts, &out).map_err(
            |source| AssembleError::Write {
                pkg: spec.name.clone(),
                source,
            },
        )?;
        Ok((out, w.info))
    }

    /// melange's per-package SPDX document, where apko and scanners look for it.
    fn write_sbom(&self, spec: &PackageSpec, destdir: &Path) -> std::io::Result<()> {
        let full = self.full_version();
        let dir = destdir.join("var/lib/db/sbom");
        fs::create_dir_all(&dir)?;
        let id = |s: &str| {
            s.chars()
                .map(|c| {
                    if c.is_ascii_alphanumeric() || c == '.' || c == '-' {
                        c
                    } else {
                        '-'
                    }
                })
                .collect::<String>()
        };
        let lic = if spec.license.is_empty() {
            "NOASSERTION".to_string()
        } else {
            format!("LicenseRef-{}", id(&spec.license))
        };
        let pkg_id = format!("SPDXRef-Package-{}-{}", id(&spec.name), id(&full));
        let created = pallet_image::build::rfc3339(self.source_date_epoch);
        let mut doc = json!({
            "SPDXID": "SPDXRef-DOCUMENT",
            "name": format!("apk-{}-{full}", spec.name),
            "spdxVersion": "SPDX-2.3",
            "creationInfo": {"created": created, "creators": ["Tool: pallet (melange compatible)", format!("Organization: {}", self.namespace)], "licenseListVersion": "3.22"},
            "dataLicense": "CC0-1.0",
            "documentNamespace": format!("https://spdx.org/spdxdocs/pallet/{}-{full}-{}", spec.name, self.arch),
            "documentDescribes": [pkg_id],
            "packages": [{
                "SPDXID": pkg_id,
                "name": spec.name,
                "versionInfo": full,
                "filesAnalyzed": false,
                "licenseConcluded": "NOASSERTION",
                "licenseDeclared": lic,
                "downloadLocation": "NOASSERTION",
                "originator": format!("Organization: {}", self.namespace),
                "supplier": format!("Organization: {}", self.namespace),
                "copyrightText": "NOASSERTION",
                "externalRefs": [{
                    "referenceCategory": "PACKAGE-MANAGER",
                    "referenceLocator": format!("pkg:apk/{}/{}@{full}?arch={}&distro={}", self.namespace, spec.name, self.arch, self.namespace),
                    "referenceType": "purl",
                }],
            }],
        });
        if !spec.license.is_empty() {
            doc["hasExtractedLicensingInfos"] =
                json!([{"licenseId": lic, "extractedText": spec.license, "name": spec.license}]);
        }
        let path = dir.join(format!("{}-{full}.spdx.json", spec.name));
        fs::write(path, serde_json::to_vec_pretty(&doc).expect("JSON"))
    }
}

/// Merge `packages` into `out_dir/ARCH/APKINDEX.tar.gz` (creating it), signed when a key is
/// given, like melange's `--generate-index`.
pub fn update_index(
    out_dir: &Path,
    arch: &str,
    packages: &[PathBuf],
    key: Option<&SigningKey>,
    epoch: u64,
) -> Result<PathBuf, pallet_index::IndexError> {
    let index = out_dir.join(arch).join("APKINDEX.tar.gz");
    let mut records = pallet_index::records_for(packages, None)?;
    if index.exists() {
        let old = pallet_index::read_index(&index, None)?;
        records = pallet_index::merge(old.packages, records);
    }
    pallet_index::write_index(&records, None, key, epoch, &index)?;
    Ok(index)
}
