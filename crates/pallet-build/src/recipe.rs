//! A compiled melange configuration turned into a build [`Plan`]: steps flattened in the order
//! melange runs them (a step's own script, then its children), package metadata, scriptlets
//! and dependency options.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use pallet_apk_types::Dependency;
use pallet_image::config::Arch;

use crate::assemble::PackageSpec;
use crate::compile::{
    self, CompileError, CompileOptions, CompiledStep, Dependencies, PackageOptions, Scriptlets,
};
use crate::driver::Plan;
use crate::runner::Step;
use crate::sca::ScaOptions;

pub use compile::CompileError as RecipeError;

pub fn flatten_steps(steps: &[CompiledStep], out: &mut Vec<Step>) {
    flatten_labeled(steps, None, out);
}

/// Unnamed steps inside a `uses` pipeline take the pipeline's name (`fetch`), so a failure
/// names what the user wrote.
fn flatten_labeled(steps: &[CompiledStep], parent: Option<&str>, out: &mut Vec<Step>) {
    for s in steps {
        let label = s
            .name
            .clone()
            .or_else(|| s.uses.clone())
            .or_else(|| parent.map(str::to_string));
        // melange runs every step's shell, even an empty one; an empty script is skipped here
        // since it cannot change anything.
        if let Some(runs) = s.runs.as_ref().filter(|r| !r.trim().is_empty()) {
            out.push(Step {
                name: label.clone().unwrap_or_else(|| {
                    runs.lines()
                        .next()
                        .unwrap_or("step")
                        .chars()
                        .take(40)
                        .collect()
                }),
                runs: runs.clone(),
                workdir: s.working_directory.clone(),
                env: s.environment.clone(),
            });
        }
        flatten_labeled(&s.pipeline, label.as_deref(), out);
    }
}

fn deps(list: &[String], path: &Path) -> Result<Vec<Dependency>, CompileError> {
    list.iter()
        .map(|d| {
            Dependency::parse_lenient(d).map_err(|e| CompileError::Invalid {
                path: path.to_path_buf(),
                message: format!("dependencies: {e}"),
            })
        })
        .collect()
}

fn scripts(s: &Option<Scriptlets>) -> (Vec<(String, Vec<u8>)>, Vec<String>) {
    let Some(s) = s else { return (vec![], vec![]) };
    let mut out = vec![];
    for (name, v) in [
        (".pre-install", &s.pre_install),
        (".post-install", &s.post_install),
        (".pre-deinstall", &s.pre_deinstall),
        (".post-deinstall", &s.post_deinstall),
        (".pre-upgrade", &s.pre_upgrade),
        (".post-upgrade", &s.post_upgrade),
    ] {
        if let Some(text) = v {
            out.push((name.to_string(), text.clone().into_bytes()));
        }
    }
    let mut triggers = vec![];
    if let Some(t) = &s.trigger {
        out.push((".trigger".into(), t.script.clone().into_bytes()));
        triggers = t.paths.clone();
    }
    (out, triggers)
}

/// A priority as apk-tools reads it: a whole number, where a negative one (wolfi has
/// `provider-priority: -1`) counts as the lowest, 0.
/// An empty value (a range item without one) is no priority, as melange leaves it out.
fn priority(v: &Option<String>, path: &Path) -> Result<Option<u64>, CompileError> {
    v.as_deref()
        .filter(|s| !s.trim().is_empty())
        .map(|s| {
            s.trim()
                .parse::<i64>()
                .map(|n| n.max(0) as u64)
                .map_err(|_| CompileError::Invalid {
                    path: path.to_path_buf(),
                    message: format!("priority '{s}' is not a number"),
                })
        })
        .transpose()
}

fn sca(o: &Option<PackageOptions>) -> ScaOptions {
    let o = o.clone().unwrap_or_default();
    ScaOptions {
        no_provides: o.no_provides,
        no_depends: o.no_depends,
        no_commands: o.no_commands,
        no_versioned_shlib_deps: o.no_versioned_shlib_deps,
        ..ScaOptions::default()
    }
}

#[allow(clippy::too_many_arguments)]
fn spec(
    checks: &Option<crate::compile::Checks>,
    name: &str,
    description: &str,
    url: &str,
    commit: &Option<String>,
    license: &str,
    d: &Dependencies,
    options: &Option<PackageOptions>,
    scriptlets: &Option<Scriptlets>,
    path: &Path,
) -> Result<PackageSpec, CompileError> {
    let (scripts, triggers) = scripts(scriptlets);
    let invalid = |message: String| CompileError::Invalid {
        path: path.to_path_buf(),
        message,
    };
    if !is_package_name(name) {
        return Err(invalid(format!(
            "package name {name:?} is not a valid apk name: use letters, digits and . _ + - \
             (it names the .apk file and the index record, so '/', '..' and white space are refused)"
        )));
    }
    for (field, v) in [("url", url), ("license", license)]
        .into_iter()
        .chain(commit.as_deref().map(|c| ("commit", c)))
    {
        if v.chars().any(char::is_control) {
            return Err(invalid(format!(
                "{name}: {field} {v:?} holds a line break or control character, which would \
                 add a line to .PKGINFO: write it on one line"
            )));
        }
    }
    Ok(PackageSpec {
        name: name.to_string(),
        // A description is prose and YAML block scalars end it with a line break: fold every
        // run of white space (line breaks included) into one space, as the one line it becomes.
        description: description.split_whitespace().collect::<Vec<_>>().join(" "),
        url: url.to_string(),
        commit: commit.clone(),
        license: license.to_string(),
        copyright: vec![],
        cpe: BTreeMap::new(),
        xattrs: BTreeMap::new(),
        depends: deps(&d.runtime, path)?,
        provides: deps(&d.provides, path)?,
        replaces: deps(&d.replaces, path)?,
        provider_priority: priority(&d.provider_priority, path)?,
        replaces_priority: priority(&d.replaces_priority, path)?,
        triggers,
        scripts,
        sca: sca(options),
        checks_disabled: checks
            .as_ref()
            .map(|c| c.disabled.clone())
            .unwrap_or_default(),
    })
}

/// Whether `name` may name a package: apk's name characters, and nothing that reads as a path.
pub fn is_package_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphanumeric())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '+' | '-'))
        && !name.contains("..")
}

/// Read, compile and plan a melange YAML file for `arch`.
pub fn load(
    path: &Path,
    arch: Arch,
    pipeline_dirs: &[PathBuf],
    vars: &BTreeMap<String, String>,
) -> Result<Plan, CompileError> {
    load_with(
        path,
        &CompileOptions {
            arch: Some(arch),
            pipeline_dirs: pipeline_dirs.to_vec(),
            vars: vars.clone(),
            build_options: vec![],
        },
    )
}

pub fn load_with(path: &Path, opts: &CompileOptions) -> Result<Plan, CompileError> {
    let (c, text) = compile::compile_file(path, opts)?;
    // melange embeds the compiled configuration, so `.melange.yaml` records every step's
    // final text; the file as written is kept if rendering fails.
    let embedded = serde_saphyr::to_string(&c).unwrap_or(text);
    plan_compiled(&c, path, embedded)
}

/// The build plan of a compiled configuration, with `config_yaml` as the `.melange.yaml` its
/// packages embed (`melange rebuild` passes the text a package carries, so it is kept as is).
pub fn plan_compiled(
    c: &compile::Compiled,
    path: &Path,
    config_yaml: String,
) -> Result<Plan, CompileError> {
    let p = &c.package;
    if c.skipped {
        return Err(CompileError::SkipArch {
            name: p.name.clone(),
            arch: c.arch.clone(),
        });
    }
    // The version names the output file (NAME-VERSION.apk) and a .PKGINFO line. Whether apk
    // can order it is the `valid-version` lint's call (which `checks.disabled` may relax); a
    // version that reads as a path or holds a line break is refused outright.
    if p.version.is_empty()
        || p.version.contains(['/', '\\'])
        || p.version.contains("..")
        || p.version
            .chars()
            .any(|c| c.is_control() || c.is_whitespace())
    {
        return Err(CompileError::Invalid {
            path: path.to_path_buf(),
            message: format!(
                "package.version {:?} cannot name a package file: no '/', '..' or white space",
                p.version
            ),
        });
    }
    let license = p
        .copyright
        .iter()
        .map(|c| c.license.clone())
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join(" AND ");
    let main = spec(
        &p.checks,
        &p.name,
        &p.description,
        &p.url,
        &p.commit,
        &license,
        &p.dependencies,
        &p.options,
        &p.scriptlets,
        path,
    )?;
    let mut steps = vec![];
    flatten_steps(&c.pipeline, &mut steps);
    let mut subpackages = vec![];
    for sp in &c.subpackages {
        let mut s = vec![];
        flatten_steps(&sp.pipeline, &mut s);
        let url = if sp.url.is_empty() {
            p.url.clone()
        } else {
            sp.url.clone()
        };
        subpackages.push((
            spec(
                &sp.checks,
                &sp.name,
                &sp.description,
                &url,
                &p.commit,
                &license,
                &sp.dependencies,
                &sp.options,
                &sp.scriptlets,
                path,
            )?,
            s,
        ));
    }
    // Every package's analysis sees the build's other packages (melange's RelativeNames).
    let relatives: Vec<String> = std::iter::once(main.name.clone())
        .chain(subpackages.iter().map(|(s, _)| s.name.clone()))
        .collect();
    let mut main = main;
    main.sca.relatives = relatives.clone();
    // Every package of the build carries the recipe's copyright (for the SBOM's licence texts);
    // the CPE names the upstream project, so only the main package gets it.
    let copyright: Vec<(String, String)> = p
        .copyright
        .iter()
        .map(|c| (c.license.clone(), c.license_path.clone()))
        .collect();
    main.copyright = copyright.clone();
    main.cpe = p.cpe.clone().unwrap_or_default();
    main.xattrs = crate::setcap::xattrs(&p.setcap)
        .into_iter()
        .map(|(path, v)| (path, vec![(crate::setcap::XATTR.to_string(), v)]))
        .collect();
    for (s, _) in &mut subpackages {
        s.copyright = copyright.clone();
    }
    // The `uses:` of each package's test steps, for the lddcheck and pkgconf rules.
    let test_uses = |t: &Option<compile::CompiledTest>| -> Vec<String> {
        t.iter()
            .flat_map(|t| &t.pipeline)
            .filter_map(|s| s.uses.clone())
            .collect()
    };
    let mut tests = BTreeMap::from([(main.name.clone(), test_uses(&c.test))]);
    for sp in &c.subpackages {
        tests.insert(sp.name.clone(), test_uses(&sp.test));
    }
    for (s, _) in &mut subpackages {
        s.sca.relatives = relatives.clone();
    }
    Ok(Plan {
        version: p.version.clone(),
        epoch: p.epoch,
        main,
        steps,
        subpackages,
        environment: c.environment.clone(),
        config_yaml,
        cap_add: c
            .capabilities
            .as_ref()
            .map(|k| k.add.clone())
            .unwrap_or_default(),
        cap_drop: c
            .capabilities
            .as_ref()
            .map(|k| k.drop.clone())
            .unwrap_or_default(),
        lint: crate::lint::BuildLint {
            policy: crate::lint::Policy::default(),
            tests,
        },
        resources: p.resources.clone().unwrap_or_default(),
        timeout: crate::policy::parse_timeout(p.timeout.as_deref().unwrap_or("")).map_err(|e| {
            CompileError::Invalid {
                path: path.to_path_buf(),
                message: e.to_string(),
            }
        })?,
    })
}
