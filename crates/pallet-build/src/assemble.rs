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
    /// `copyright:` entries as (licence, `license-path`): a path names a file in the workspace
    /// whose text documents a non-SPDX licence in the SBOM.
    pub copyright: Vec<(String, String)>,
    /// `package.cpe` fields (`vendor`, `product`, …) for the SBOM's CPE reference.
    pub cpe: std::collections::BTreeMap<String, String>,
    /// Lint rules downgraded from required to warnings (`checks.disabled`).
    pub checks_disabled: Vec<String>,
    /// Extended attributes given by the recipe, by package-relative path: `package.setcap`'s
    /// `security.capability` values (main package only, as melange).
    pub xattrs: std::collections::BTreeMap<String, Vec<(String, Vec<u8>)>>,
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

/// Where the build configuration came from: the SBOM's build-configuration package, as melange
/// writes it from `--git-repo-url`, `--git-commit` and `--license`.
#[derive(Clone, Debug, Default)]
pub struct ConfigSource {
    /// The configuration file as named on the command line; empty leaves the package out.
    pub path: String,
    /// The repository holding it (melange's default: `https://unknown/unknown/unknown`).
    pub repository_url: String,
    /// The commit it was built from (`unknown` when neither given nor detected).
    pub commit: String,
    /// The configuration file's own licence (melange's default: `NOASSERTION`).
    pub license: String,
}

/// Everything shared by the packages of one build.
#[derive(Clone)]
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
    /// The build's workspace, where `license-path` files are read from.
    pub workspace: Option<PathBuf>,
    /// The build configuration's provenance for the SBOM.
    pub config_source: ConfigSource,
    /// melange's `--dependency-log`: the generated dependencies of each package, as JSON, in
    /// `FILE.ARCH` (rewritten per package, so it ends with the last one, as melange's does).
    pub dependency_log: Option<PathBuf>,
}

/// Go's `cases.Title` for a namespace: the first letter of each word upper case, the rest
/// lower case (`wolfi` → `Wolfi`, `chainguard-dev` → `Chainguard-Dev`).
pub fn title_case(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut start = true;
    for c in s.chars() {
        if c.is_alphanumeric() || c == '\'' {
            if start {
                out.extend(c.to_uppercase());
            } else {
                out.extend(c.to_lowercase());
            }
            start = false;
        } else {
            out.push(c);
            start = true;
        }
    }
    out
}

/// The package URL of the build configuration: `pkg:github/ORG/REPO@COMMIT#PATH` for GitHub
/// repositories (melange's form), else a generic one carrying the repository as `vcs_url`.
fn config_purl(c: &ConfigSource) -> String {
    let enc = |s: &str| {
        s.bytes()
            .map(|b| {
                if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                    (b as char).to_string()
                } else {
                    format!("%{b:02X}")
                }
            })
            .collect::<String>()
    };
    let sub: Vec<String> = c
        .path
        .split('/')
        .filter(|p| !p.is_empty() && *p != "." && *p != "..")
        .map(enc)
        .collect();
    let sub = sub.join("/");
    let url = c
        .repository_url
        .trim_end_matches('/')
        .trim_end_matches(".git");
    if let Some(rest) = url.strip_prefix("https://github.com/")
        && let Some((org, repo)) = rest.split_once('/')
        && !org.is_empty()
        && !repo.is_empty()
        && !repo.contains('/')
    {
        return format!(
            "pkg:github/{}/{}@{}#{sub}",
            enc(&org.to_ascii_lowercase()),
            enc(&repo.to_ascii_lowercase()),
            enc(&c.commit)
        );
    }
    let name = sub.rsplit('/').next().unwrap_or("melange.yaml").to_string();
    format!(
        "pkg:generic/{name}@{}?vcs_url={}#{sub}",
        enc(&c.commit),
        enc(&format!("git+{url}"))
    )
}

impl Assembly<'_> {
    /// `spec.xattrs` for the paths `destdir` holds as a file or folder; melange only warns
    /// when `setcap` names anything else, and so does this.
    fn present_xattrs(
        &self,
        spec: &PackageSpec,
        destdir: &Path,
    ) -> std::collections::BTreeMap<String, Vec<(String, Vec<u8>)>> {
        let mut out = std::collections::BTreeMap::new();
        for (rel, attrs) in &spec.xattrs {
            // No component may be a symlink: the attribute names a packaged file, never a
            // host path a link leads to.
            let mut p = destdir.to_path_buf();
            let mut ok = true;
            for c in rel.split('/') {
                p.push(c);
                match fs::symlink_metadata(&p) {
                    Ok(m) if !m.file_type().is_symlink() => {}
                    _ => {
                        ok = false;
                        break;
                    }
                }
            }
            if ok && fs::symlink_metadata(&p).is_ok_and(|m| m.is_file() || m.is_dir()) {
                out.insert(rel.clone(), attrs.clone());
            } else {
                eprintln!(
                    "warning: {}: setcap names /{rel}, which is not a file or folder of the                      package: no capabilities set",
                    spec.name
                );
            }
        }
        out
    }

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
        let g = sca::analyze_spec(spec, destdir, &full).map_err(io)?;
        if let Some(log) = &self.dependency_log {
            self.write_dependency_log(log, &g).map_err(io)?;
        }
        self.write_sbom(spec, destdir).map_err(io)?;
        let info = self.package_info(spec, g);
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
            // melange records the workspace's attributes (a step's own `setcap` survives) and
            // then applies `package.setcap` over them.
            read_xattrs: true,
            xattrs: self.present_xattrs(spec, destdir),
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

    /// The `.PKGINFO` of `spec` with the analysis `g`: the configured dependencies plus the
    /// generated ones, minus what the package provides itself (size and datahash are left for
    /// the writer).
    pub fn package_info(&self, spec: &PackageSpec, g: sca::Generated) -> PackageInfo {
        let full = self.full_version();
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
        PackageInfo {
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
            // melange writes `maintainer = NAMESPACE`.
            maintainer: (!self.namespace.is_empty()).then(|| self.namespace.clone()),
            // Written as melange's `# vendored = …` comment lines, which apk ignores.
            extra: g
                .vendored
                .iter()
                .map(|v| ("# vendored".to_string(), v.to_string()))
                .collect(),
            ..PackageInfo::default()
        }
    }

    /// `FILE.ARCH`: `{"runtime":[…],"provides":[…]}` and a line break, as melange's JSON
    /// encoder writes its generated `Dependencies` (empty lists left out).
    fn write_dependency_log(&self, log: &Path, g: &sca::Generated) -> std::io::Result<()> {
        let mut doc = serde_json::Map::new();
        let list = |d: &[Dependency]| d.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        if !g.depends.is_empty() {
            doc.insert("runtime".into(), json!(list(&g.depends)));
        }
        if !g.provides.is_empty() {
            doc.insert("provides".into(), json!(list(&g.provides)));
        }
        let mut name = log.as_os_str().to_owned();
        name.push(format!(".{}", self.arch));
        let path = PathBuf::from(name);
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            fs::create_dir_all(dir)?;
        }
        let mut text = serde_json::to_vec(&serde_json::Value::Object(doc)).expect("JSON");
        text.push(b'\n');
        fs::write(&path, text)
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
        // A valid SPDX expression passes through; anything else becomes `LicenseRef-`s, as
        // melange writes them.
        let norm = pallet_sbom::normalize_license(&spec.license);
        let lic = norm.expression.clone();
        let pkg_id = format!("SPDXRef-Package-{}-{}", id(&spec.name), id(&full));
        let created = pallet_image::build::rfc3339(self.source_date_epoch);
        let org = format!("Organization: {}", title_case(&self.namespace));
        let mut doc = json!({
            "SPDXID": "SPDXRef-DOCUMENT",
            "name": format!("apk-{}-{full}", spec.name),
            "spdxVersion": "SPDX-2.3",
            "creationInfo": {"created": created, "creators": ["Tool: pallet (melange compatible)", org], "licenseListVersion": "3.22"},
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
                "originator": org,
                "supplier": org,
                "copyrightText": "NOASSERTION",
                "externalRefs": [{
                    "referenceCategory": "PACKAGE-MANAGER",
                    "referenceLocator": format!("pkg:apk/{}/{}@{full}?arch={}&distro={}", self.namespace, spec.name, self.arch, self.namespace),
                    "referenceType": "purl",
                }],
            }],
        });
        let c = &self.config_source;
        if !c.path.is_empty() {
            // melange's build-configuration package: the file, at its commit, under its own
            // licence, related to the package by DESCRIBED_BY.
            let commit = if c.commit.is_empty() {
                "unknown"
            } else {
                &c.commit
            };
            let with_commit = ConfigSource {
                commit: commit.to_string(),
                repository_url: if c.repository_url.is_empty() {
                    "https://unknown/unknown/unknown".into()
                } else {
                    c.repository_url.clone()
                },
                ..c.clone()
            };
            let cfg_id = format!("SPDXRef-Package-Melange-{}-{}", id(&c.path), id(commit));
            let license = if c.license.is_empty() {
                "NOASSERTION"
            } else {
                &c.license
            };
            doc["packages"].as_array_mut().expect("list").push(json!({
                "SPDXID": cfg_id,
                "name": c.path,
                "versionInfo": commit,
                "filesAnalyzed": false,
                "licenseConcluded": "NOASSERTION",
                "licenseDeclared": license,
                "downloadLocation": "NOASSERTION",
                "originator": org,
                "supplier": org,
                "copyrightText": "NOASSERTION",
                "externalRefs": [{
                    "referenceCategory": "PACKAGE-MANAGER",
                    "referenceLocator": config_purl(&with_commit),
                    "referenceType": "purl",
                }],
                "primaryPackagePurpose": "INSTALL",
            }));
            doc["relationships"] = json!([{
                "spdxElementId": doc["documentDescribes"][0].clone(),
                "relationshipType": "DESCRIBED_BY",
                "relatedSpdxElement": cfg_id,
            }]);
        }
        if let Some(locator) = cpe23(&spec.cpe, &full) {
            doc["packages"][0]["externalRefs"]
                .as_array_mut()
                .expect("list")
                .push(json!({
                    "referenceCategory": "SECURITY",
                    "referenceLocator": locator,
                    "referenceType": "cpe23Type",
                }));
        }
        let mut extracted = vec![];
        for e in &norm.extracted {
            // `license-path` gives the licence's real text (read from the workspace only).
            let text = spec
                .copyright
                .iter()
                .filter(|(l, p)| {
                    !p.is_empty()
                        && (l == &e.text
                            || format!("LicenseRef-{}", pallet_sbom::sanitize_idstring(l)) == e.id)
                })
                .find_map(|(_, p)| self.license_text(p))
                .unwrap_or_else(|| e.text.clone());
            extracted.push(json!({"licenseId": e.id, "extractedText": text, "name": e.text}));
        }
        if !extracted.is_empty() {
            doc["hasExtractedLicensingInfos"] = json!(extracted);
        }
        let path = dir.join(format!("{}-{full}.spdx.json", spec.name));
        fs::write(path, serde_json::to_vec_pretty(&doc).expect("JSON"))
    }
}

/// `package.cpe` as a CPE 2.3 formatted string (`cpe:2.3:part:vendor:product:version:…`), or
/// `None` when it names no vendor and product. Fields are checked against melange's pattern so
/// no value can break the string's structure.
pub fn cpe23(cpe: &std::collections::BTreeMap<String, String>, version: &str) -> Option<String> {
    let get = |k: &str| cpe.get(k).map(String::as_str).filter(|v| !v.is_empty());
    let (vendor, product) = (get("vendor")?, get("product")?);
    let ok = |v: &str| {
        v.chars()
            .next()
            .is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
            && v.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "+_.-".contains(c))
    };
    let field = |k: &str| get(k).filter(|v| ok(v)).unwrap_or("*").to_string();
    if !ok(vendor) || !ok(product) {
        return None;
    }
    // The upstream version: melange uses the package version without the epoch.
    let upstream = version.rsplit_once("-r").map_or(version, |(v, _)| v);
    let part = get("part")
        .filter(|p| matches!(*p, "a" | "o" | "h"))
        .unwrap_or("a");
    Some(format!(
        "cpe:2.3:{part}:{vendor}:{product}:{upstream}:*:{}:{}:{}:{}:{}:{}",
        field("edition"),
        field("language"),
        field("sw_edition"),
        field("target_sw"),
        field("target_hw"),
        field("other"),
    ))
}

impl Assembly<'_> {
    /// The text of `license-path`, a file in the build's workspace; `None` when it is missing,
    /// too large, or resolves outside the workspace (melange once read host files this way:
    /// GHSA-2w4f-9fgg-q2v9).
    fn license_text(&self, rel: &str) -> Option<String> {
        const MAX_LICENSE_BYTES: u64 = 1 << 20;
        let ws = self.workspace.as_ref()?.canonicalize().ok()?;
        let p = ws.join(rel.trim_start_matches('/')).canonicalize().ok()?;
        if !p.starts_with(&ws) || !p.is_file() || p.metadata().ok()?.len() > MAX_LICENSE_BYTES {
            return None;
        }
        fs::read_to_string(p).ok()
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
    update_index_records(out_dir, arch, packages, key, epoch)?;
    Ok(out_dir.join(arch).join("APKINDEX.tar.gz"))
}

/// [`update_index`], returning the records the index now holds (so that a caller keeping
/// track of them need not read the file back).
pub fn update_index_records(
    out_dir: &Path,
    arch: &str,
    packages: &[PathBuf],
    key: Option<&SigningKey>,
    epoch: u64,
) -> Result<Vec<pallet_apk_types::PackageInfo>, pallet_index::IndexError> {
    let index = out_dir.join(arch).join("APKINDEX.tar.gz");
    let mut records = pallet_index::records_for(packages, None)?;
    if index.exists() {
        let old = pallet_index::read_index(&index, None)?;
        records = pallet_index::merge(old.packages, records);
    }
    pallet_index::write_index(&records, None, key, epoch, &index)?;
    Ok(records)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn namespaces_title_cased_as_go_does() {
        assert_eq!(title_case("wolfi"), "Wolfi");
        assert_eq!(title_case("chainguard-dev"), "Chainguard-Dev");
        assert_eq!(title_case("ALPINE"), "Alpine");
    }

    #[test]
    fn config_purls() {
        let mut c = ConfigSource {
            path: "./crane.yaml".into(),
            repository_url: "https://github.com/Wolfi-Dev/os.git".into(),
            commit: "abc".into(),
            license: String::new(),
        };
        assert_eq!(config_purl(&c), "pkg:github/wolfi-dev/os@abc#crane.yaml");
        c.repository_url = "https://unknown/unknown/unknown".into();
        assert_eq!(
            config_purl(&c),
            "pkg:generic/crane.yaml@abc?vcs_url=git%2Bhttps%3A%2F%2Funknown%2Funknown%2Funknown#crane.yaml"
        );
    }
}
