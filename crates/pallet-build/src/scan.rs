//! `melange scan`: run the dependency analysis again on packages already built and compare the
//! `.PKGINFO` it gives now with the one the packages carry.

use std::path::{Path, PathBuf};

use pallet_apk_types::PackageInfo;
use pallet_image::config::Arch;

use crate::assemble::{Assembly, PackageSpec};
use crate::compile::CompileOptions;

#[derive(Debug, thiserror::Error)]
pub enum ScanError {
    #[error(transparent)]
    Compile(#[from] crate::compile::CompileError),
    #[error("{path}: {message}")]
    Package { path: String, message: String },
    #[error(transparent)]
    Fetch(#[from] crate::renovate::RenovateError),
}

/// Where the packages are and how they were named.
#[derive(Clone, Debug)]
pub struct ScanOptions {
    /// A folder or an http(s) URL holding `ARCH/NAME-VERSION.apk` (melange's `-r`).
    pub repo: String,
    pub arch: Arch,
    /// The vendor namespace the packages were built with (`maintainer`).
    pub namespace: String,
    pub pipeline_dirs: Vec<PathBuf>,
}

/// One package scanned.
#[derive(Clone, Debug)]
pub struct Scanned {
    pub name: String,
    /// `NAME-VERSION.apk`, as melange labels the old side of the diff.
    pub file: String,
    /// The `.PKGINFO` in the package.
    pub old: String,
    /// The `.PKGINFO` the analysis gives now.
    pub new: String,
}

fn fetch(repo: &str, arch: &str, file: &str, into: &Path) -> Result<PathBuf, ScanError> {
    let url = format!("{}/{arch}/{file}", repo.trim_end_matches('/'));
    if url.starts_with("http://") || url.starts_with("https://") {
        let d = crate::renovate::download(&url)?;
        let to = into.join(file);
        std::fs::copy(d.file.path(), &to).map_err(|e| ScanError::Package {
            path: url.clone(),
            message: e.to_string(),
        })?;
        Ok(to)
    } else {
        let p = PathBuf::from(&url);
        if !p.is_file() {
            return Err(ScanError::Package {
                path: url,
                message: "no such package (build it first, or give -r the repository folder)"
                    .into(),
            });
        }
        Ok(p)
    }
}

/// Scan the packages `config` builds for `opts.arch`: subpackages first, then the main
/// package, as melange prints them. Each package's files are unpacked next to each other
/// (`melange-out/NAME`) so links into sibling packages resolve as in the build; the new
/// `.PKGINFO` keeps the package's own size, datahash, build date and commit.
pub fn scan(config: &Path, opts: &ScanOptions) -> Result<Vec<Scanned>, ScanError> {
    let plan = crate::recipe::load_with(
        config,
        &CompileOptions {
            arch: Some(opts.arch),
            pipeline_dirs: opts.pipeline_dirs.clone(),
            ..Default::default()
        },
    )?;
    let work = tempfile::Builder::new()
        .prefix("pallet-scan-")
        .tempdir()
        .map_err(|e| ScanError::Package {
            path: "a temporary folder".into(),
            message: e.to_string(),
        })?;
    let out = work.path().join("melange-out");
    let full = format!("{}-r{}", plan.version, plan.epoch);
    let specs: Vec<&PackageSpec> = std::iter::once(&plan.main)
        .chain(plan.subpackages.iter().map(|(s, _)| s))
        .collect();
    // Unpack every package first: the analysis of one looks into the others.
    let mut found: Vec<(PackageSpec, String, PackageInfo)> = vec![];
    for spec in &specs {
        let file = format!("{}-{full}.apk", spec.name);
        let apk = fetch(&opts.repo, opts.arch.apk(), &file, work.path())?;
        let bad = |message: String| ScanError::Package {
            path: apk.display().to_string(),
            message,
        };
        let meta =
            crate::apkfile::unpack(&apk, &out.join(&spec.name)).map_err(|e| bad(e.to_string()))?;
        let old = crate::apkfile::control_files(&apk)
            .map_err(|e| bad(e.to_string()))?
            .into_iter()
            .find(|(n, _)| n == ".PKGINFO")
            .map(|(_, d)| String::from_utf8_lossy(&d).into_owned())
            .ok_or_else(|| bad("no .PKGINFO".into()))?;
        found.push(((*spec).clone(), old, meta.info));
    }
    let mut scanned = vec![];
    for (spec, old, info) in found {
        let mut spec = spec;
        // melange takes the commit from the package (the build may have detected it).
        spec.commit = info.commit.clone();
        let assembly = Assembly {
            version: plan.version.clone(),
            epoch: plan.epoch,
            arch: info.arch.clone(),
            origin: plan.main.name.clone(),
            namespace: opts.namespace.clone(),
            source_date_epoch: info.build_time,
            signing_key: None,
            config_yaml: String::new(),
            workspace: None,
            config_source: Default::default(),
            dependency_log: None,
        };
        let dir = out.join(&spec.name);
        let g = crate::sca::analyze_spec(&spec, &dir, &full).map_err(|e| ScanError::Package {
            path: spec.name.clone(),
            message: e.to_string(),
        })?;
        let mut new = assembly.package_info(&spec, g);
        new.installed_size = info.installed_size;
        new.datahash = info.datahash.clone();
        scanned.push(Scanned {
            file: format!("{}-{}.apk", info.name, info.version),
            name: spec.name.clone(),
            old,
            new: new.to_pkginfo(),
        });
    }
    // Subpackages first, then the main package.
    scanned.rotate_left(1);
    Ok(scanned)
}
