//! `melange rebuild`: what a finished package says about how it was built (the compiled
//! configuration in `.melange.yaml`, `.PKGINFO`, the SBOM's build-configuration package), the
//! plan that builds it again, and the comparison of the two packages.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::Path;

use pallet_apk_types::PackageInfo;
use sha2::Digest as _;

use crate::assemble::ConfigSource;
use crate::compile::Compiled;
use crate::driver::Plan;

#[derive(Debug, thiserror::Error)]
pub enum RebuildError {
    #[error("{path}: {message}")]
    Package { path: String, message: String },
    #[error(transparent)]
    Compile(#[from] crate::compile::CompileError),
}

/// The build information a package carries.
#[derive(Clone, Debug)]
pub struct Embedded {
    pub compiled: Compiled,
    /// `.melange.yaml` as embedded (the rebuilt packages embed the same text).
    pub config_yaml: String,
    pub info: PackageInfo,
    /// The configuration's file, repository, commit and licence, from the SBOM.
    pub config_source: ConfigSource,
    /// The vendor namespace (the `.PKGINFO` maintainer, else the SBOM's supplier).
    pub namespace: String,
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = vec![];
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%'
            && i + 2 < b.len()
            && let Ok(v) = u8::from_str_radix(&s[i + 1..i + 3], 16)
        {
            out.push(v);
            i += 3;
            continue;
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The repository a build-configuration purl names: `pkg:github/ORG/REPO@…` is
/// `https://github.com/ORG/REPO` (melange's reading), a generic purl's `vcs_url` without `git+`.
fn repository_of(purl: &str) -> Option<String> {
    let body = purl.strip_prefix("pkg:")?;
    let body = body.split('#').next().unwrap_or(body);
    if let Some(rest) = body.strip_prefix("github/") {
        let path = rest.split(['@', '?']).next().unwrap_or(rest);
        let (org, repo) = path.split_once('/')?;
        return Some(format!(
            "https://github.com/{}/{}",
            percent_decode(org),
            percent_decode(repo)
        ));
    }
    let (_, query) = body.split_once('?')?;
    for kv in query.split('&') {
        if let Some(v) = kv.strip_prefix("vcs_url=") {
            let v = percent_decode(v);
            return Some(v.strip_prefix("git+").unwrap_or(&v).to_string());
        }
    }
    None
}

/// Read what `apk` says about its build.
pub fn read_embedded(apk: &Path) -> Result<Embedded, RebuildError> {
    let bad = |message: String| RebuildError::Package {
        path: apk.display().to_string(),
        message,
    };
    let f = std::fs::File::open(apk).map_err(|e| bad(e.to_string()))?;
    let mut sboms: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    let meta = pallet_apk_stream::read_apk(f, &Default::default(), |e, data| {
        if e.path.starts_with("var/lib/db/sbom/") && e.path.ends_with(".spdx.json") {
            let mut buf = vec![];
            data.take(64 << 20).read_to_end(&mut buf)?;
            sboms.insert(e.path.clone(), buf);
        }
        Ok(())
    })
    .map_err(|e| bad(e.to_string()))?;
    let config_yaml = meta
        .scripts
        .iter()
        .find(|(n, _)| n == ".melange.yaml")
        .map(|(_, d)| String::from_utf8_lossy(d).into_owned())
        .ok_or_else(|| {
            bad("failed to find .melange.yaml (was it built by melange or pallet?)".into())
        })?;
    let compiled: Compiled = serde_saphyr::from_str(&config_yaml)
        .map_err(|e| bad(format!("failed to decode .melange.yaml: {e}")))?;
    let info = meta.info;
    let sbom = sboms
        .get(&format!(
            "var/lib/db/sbom/{}-{}.spdx.json",
            info.name, info.version
        ))
        .or_else(|| sboms.values().next())
        .ok_or_else(|| bad("failed to find SBOM".into()))?;
    let doc: serde_json::Value =
        serde_json::from_slice(sbom).map_err(|e| bad(format!("failed to decode SBOM: {e}")))?;
    let packages = doc["packages"].as_array().cloned().unwrap_or_default();
    let cfgpkg = packages.iter().find(|p| {
        p["SPDXID"]
            .as_str()
            .is_some_and(|id| id.starts_with("SPDXRef-Package-Melange-"))
            || p["name"]
                .as_str()
                .is_some_and(|n| n.ends_with(".yaml") || n.ends_with(".yml"))
    });
    let config_source = match cfgpkg {
        Some(p) => {
            let purl = p["externalRefs"][0]["referenceLocator"]
                .as_str()
                .unwrap_or_default();
            ConfigSource {
                path: p["name"].as_str().unwrap_or_default().to_string(),
                repository_url: repository_of(purl)
                    .unwrap_or_else(|| "https://unknown/unknown/unknown".into()),
                commit: p["versionInfo"].as_str().unwrap_or("unknown").to_string(),
                license: p["licenseDeclared"]
                    .as_str()
                    .unwrap_or("NOASSERTION")
                    .to_string(),
            }
        }
        None => ConfigSource::default(),
    };
    let namespace = info.maintainer.clone().unwrap_or_else(|| {
        packages
            .first()
            .and_then(|p| p["originator"].as_str())
            .map(|o| o.trim_start_matches("Organization: ").to_ascii_lowercase())
            .unwrap_or_else(|| "unknown".into())
    });
    Ok(Embedded {
        compiled,
        config_yaml,
        info,
        config_source,
        namespace,
    })
}

impl Embedded {
    /// The plan that builds the package again: the embedded configuration, with the
    /// package's commit where the configuration names none (the build detected it).
    pub fn plan(&self, apk: &Path) -> Result<Plan, RebuildError> {
        let mut plan = crate::recipe::plan_compiled(&self.compiled, apk, self.config_yaml.clone())?;
        if let Some(c) = &self.info.commit {
            for spec in
                std::iter::once(&mut plan.main).chain(plan.subpackages.iter_mut().map(|(s, _)| s))
            {
                if spec.commit.as_deref().is_none_or(str::is_empty) {
                    spec.commit = Some(c.clone());
                }
            }
        }
        Ok(plan)
    }
}

/// One entry's digest, and its text for the files whose differences matter most.
struct Entry {
    digest: String,
    contents: Option<String>,
}

fn important(name: &str) -> bool {
    name == ".PKGINFO" || name == ".melange.yaml" || name.starts_with("var/lib/db/sbom/")
}

fn entry_map(path: &Path) -> std::io::Result<(BTreeMap<String, Entry>, String)> {
    let bytes = std::fs::read(path)?;
    let whole = hex(&sha2::Sha256::digest(&bytes));
    let mut m = BTreeMap::new();
    crate::apkfile::walk(&bytes[..], u64::MAX, |name, _, body| {
        let mut h = sha2::Sha256::new();
        let mut keep = vec![];
        let mut buf = [0u8; 1 << 16];
        loop {
            let n = body.read(&mut buf)?;
            if n == 0 {
                break;
            }
            h.update(&buf[..n]);
            if important(name) && keep.len() < 16 << 20 {
                keep.extend_from_slice(&buf[..n]);
            }
        }
        m.insert(
            name.to_string(),
            Entry {
                digest: hex(&h.finalize()),
                contents: important(name).then(|| String::from_utf8_lossy(&keep).into_owned()),
            },
        );
        Ok(true)
    })?;
    Ok((m, whole))
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// The differences between two packages, as melange's rebuild reports them: entries removed,
/// changed (with a diff of `.PKGINFO`, `.melange.yaml` and SBOMs) and added, then the whole
/// file's digest. Empty when the files are identical.
pub fn compare(old: &Path, new: &Path) -> std::io::Result<Vec<String>> {
    let (om, od) = entry_map(old)?;
    let (nm, nd) = entry_map(new)?;
    let mut out = vec![];
    for (k, o) in &om {
        match nm.get(k) {
            None => out.push(format!("removed: {k}")),
            Some(n) if n.digest != o.digest => {
                out.push(format!(
                    "changed: {k}: digests {} -> {}",
                    o.digest, n.digest
                ));
                if let (Some(a), Some(b)) = (&o.contents, &n.contents)
                    && let Some(d) = crate::textdiff::unified(k, a, k, b, true)
                {
                    out.push(format!("contents diff: {k} (-old,+new):\n{d}"));
                }
            }
            _ => {}
        }
    }
    for k in nm.keys() {
        if !om.contains_key(k) {
            out.push(format!("added: {k}"));
        }
    }
    if od != nd {
        out.push(format!("APK digest diff: {od} -> {nd}"));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repositories_from_purls() {
        assert_eq!(
            repository_of("pkg:github/wolfi-dev/os@abc#crane.yaml").as_deref(),
            Some("https://github.com/wolfi-dev/os")
        );
        assert_eq!(
            repository_of("pkg:generic/crane.yaml@abc?vcs_url=git%2Bhttps%3A%2F%2Funknown%2Funknown%2Funknown#crane.yaml").as_deref(),
            Some("https://unknown/unknown/unknown")
        );
    }
}
