//! A melange YAML file turned into a build [`Plan`]: package metadata, the environment, the
//! main and subpackage pipelines (`runs` and nested `pipeline`, `working-directory`,
//! `environment`, `uses` of pipelines found in `--pipeline-dir`), scriptlets, options, and the
//! `${{package.*}}`, `${{targets.*}}`, `${{vars.*}}`, `${{inputs.*}}`, `${{build.arch}}`,
//! `${{subpkg.name}}` and `${{context.name}}` variables. The complete compiler, with every
//! built-in pipeline, `if:`, ranges and var-transforms, is `pallet-melange`'s.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use pallet_apk_types::Dependency;
use pallet_image::config::{Arch, ImageConfiguration};
use serde::Deserialize;

use crate::assemble::PackageSpec;
use crate::driver::Plan;
use crate::runner::Step;
use crate::sca::ScaOptions;

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "kebab-case")]
struct Config {
    package: Package,
    #[serde(default)]
    environment: ImageConfiguration,
    #[serde(default)]
    pipeline: Vec<Pipeline>,
    #[serde(default)]
    subpackages: Vec<Subpackage>,
    #[serde(default)]
    vars: BTreeMap<String, String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "kebab-case")]
struct Package {
    name: String,
    version: String,
    #[serde(default)]
    epoch: u64,
    #[serde(default)]
    description: String,
    #[serde(default)]
    url: String,
    #[serde(default)]
    commit: Option<String>,
    #[serde(default)]
    copyright: Vec<Copyright>,
    #[serde(default)]
    dependencies: Dependencies,
    #[serde(default)]
    options: Options,
    #[serde(default)]
    scriptlets: Scriptlets,
    #[serde(default)]
    target_architecture: Vec<String>,
}

#[derive(Debug, Default, Deserialize)]
struct Copyright {
    #[serde(default)]
    license: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "kebab-case")]
struct Dependencies {
    #[serde(default)]
    runtime: Vec<String>,
    #[serde(default)]
    provides: Vec<String>,
    #[serde(default)]
    replaces: Vec<String>,
    #[serde(default)]
    provider_priority: Option<String>,
    #[serde(default)]
    replaces_priority: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "kebab-case")]
struct Options {
    #[serde(default)]
    no_provides: bool,
    #[serde(default)]
    no_depends: bool,
    #[serde(default)]
    no_commands: bool,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "kebab-case")]
struct Scriptlets {
    pre_install: Option<String>,
    post_install: Option<String>,
    pre_deinstall: Option<String>,
    post_deinstall: Option<String>,
    pre_upgrade: Option<String>,
    post_upgrade: Option<String>,
    trigger: Option<Trigger>,
}

#[derive(Debug, Default, Deserialize)]
struct Trigger {
    #[serde(default)]
    script: String,
    #[serde(default)]
    paths: Vec<String>,
}

#[derive(Debug, Default, Deserialize, Clone)]
#[serde(rename_all = "kebab-case")]
struct Pipeline {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    uses: Option<String>,
    #[serde(default)]
    with: BTreeMap<String, String>,
    #[serde(default)]
    runs: Option<String>,
    #[serde(default)]
    pipeline: Vec<Pipeline>,
    #[serde(default)]
    working_directory: Option<String>,
    #[serde(default)]
    environment: BTreeMap<String, String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "kebab-case")]
struct Subpackage {
    name: String,
    #[serde(default)]
    description: String,
    #[serde(default)]
    url: String,
    #[serde(default)]
    pipeline: Vec<Pipeline>,
    #[serde(default)]
    dependencies: Dependencies,
    #[serde(default)]
    options: Options,
    #[serde(default)]
    scriptlets: Scriptlets,
}

#[derive(Debug, Default, Deserialize)]
struct PipelineFile {
    #[serde(default)]
    inputs: BTreeMap<String, Input>,
    #[serde(default)]
    pipeline: Vec<Pipeline>,
}

#[derive(Debug, Default, Deserialize)]
struct Input {
    #[serde(default)]
    default: Option<String>,
    #[serde(default)]
    required: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum RecipeError {
    #[error("{path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("{path}: {message}")]
    Invalid { path: PathBuf, message: String },
    /// The package does not build for this architecture (`target-architecture`).
    #[error("{name} does not build for {arch} (target-architecture)")]
    SkipArch { name: String, arch: String },
}

struct Ctx<'a> {
    path: &'a Path,
    pipeline_dirs: &'a [PathBuf],
    vars: BTreeMap<String, String>,
}

impl Ctx<'_> {
    fn invalid(&self, message: String) -> RecipeError {
        RecipeError::Invalid {
            path: self.path.to_path_buf(),
            message,
        }
    }

    /// Replace every `${{name}}`; an unknown variable is an error naming the step.
    fn subst(
        &self,
        text: &str,
        extra: &BTreeMap<String, String>,
        step: &str,
    ) -> Result<String, RecipeError> {
        let mut out = String::new();
        let mut rest = text;
        while let Some(start) = rest.find("${{") {
            out.push_str(&rest[..start]);
            let after = &rest[start + 3..];
            let end = after.find("}}").ok_or_else(|| {
                self.invalid(format!("step '{step}': unterminated ${{{{ in: {text}"))
            })?;
            let key = after[..end].trim();
            let val = extra
                .get(key)
                .or_else(|| self.vars.get(key))
                .ok_or_else(|| {
                    self.invalid(format!("step '{step}': undefined variable ${{{{{key}}}}}"))
                })?;
            out.push_str(val);
            rest = &after[end + 2..];
        }
        out.push_str(rest);
        Ok(out)
    }

    fn load_pipeline(&self, name: &str) -> Result<PipelineFile, RecipeError> {
        if name.starts_with('/') || name.split('/').any(|c| c == "..") {
            return Err(self.invalid(format!("uses: '{name}' must be a relative pipeline name")));
        }
        for d in self.pipeline_dirs {
            let p = d.join(format!("{name}.yaml"));
            if p.is_file() {
                let text = std::fs::read_to_string(&p)
                    .map_err(|e| self.invalid(format!("{}: {e}", p.display())))?;
                return serde_saphyr::from_str(&text).map_err(|e| RecipeError::Parse {
                    path: p,
                    message: e.to_string(),
                });
            }
        }
        Err(self.invalid(format!(
            "uses: pipeline '{name}' not found in --pipeline-dir ({}); pallet's built-in pipelines come with the melange compiler",
            self.pipeline_dirs.iter().map(|d| d.display().to_string()).collect::<Vec<_>>().join(", ")
        )))
    }

    /// Flatten a step and its children into runnable steps (a parent's script runs before its
    /// children, which inherit its working directory and environment).
    fn flatten(
        &self,
        p: &Pipeline,
        scope: &BTreeMap<String, String>,
        workdir: &str,
        env: &BTreeMap<String, String>,
        out: &mut Vec<Step>,
        depth: usize,
    ) -> Result<(), RecipeError> {
        if depth > 32 {
            return Err(self.invalid("pipelines nest deeper than 32 levels (a uses loop?)".into()));
        }
        let label = p
            .name
            .clone()
            .or_else(|| p.uses.clone())
            .unwrap_or_else(|| "step".into());
        let workdir = match &p.working_directory {
            Some(w) if w.starts_with('/') => self.subst(w, scope, &label)?,
            Some(w) => format!("/home/build/{}", self.subst(w, scope, &label)?),
            None => workdir.to_string(),
        };
        let mut env = env.clone();
        for (k, v) in &p.environment {
            env.insert(k.clone(), self.subst(v, scope, &label)?);
        }
        if p.runs.is_some() && p.uses.is_some() {
            return Err(self.invalid(format!("step '{label}': uses and runs cannot be combined")));
        }
        if let Some(runs) = &p.runs {
            out.push(Step {
                name: label.clone(),
                runs: self.subst(runs, scope, &label)?,
                workdir: workdir.clone(),
                env: env.clone(),
            });
        }
        if let Some(uses) = &p.uses {
            let file = self.load_pipeline(uses)?;
            let mut inner = scope.clone();
            for k in p.with.keys() {
                if !file.inputs.contains_key(k) {
                    return Err(self.invalid(format!(
                        "step '{label}': input '{k}' is not declared by pipeline '{uses}'"
                    )));
                }
            }
            for (k, input) in &file.inputs {
                let v = match (p.with.get(k), &input.default) {
                    (Some(v), _) => self.subst(v, scope, &label)?,
                    (None, Some(d)) => self.subst(d, scope, &label)?,
                    (None, None) if input.required => {
                        return Err(self.invalid(format!(
                            "step '{label}': pipeline '{uses}' needs input '{k}'"
                        )));
                    }
                    (None, None) => String::new(),
                };
                inner.insert(format!("inputs.{k}"), v);
            }
            for child in &file.pipeline {
                self.flatten(child, &inner, &workdir, &env, out, depth + 1)?;
            }
        }
        for child in &p.pipeline {
            self.flatten(child, scope, &workdir, &env, out, depth + 1)?;
        }
        Ok(())
    }
}

fn deps(
    list: &[String],
    ctx: &Ctx<'_>,
    scope: &BTreeMap<String, String>,
) -> Result<Vec<Dependency>, RecipeError> {
    list.iter()
        .map(|d| {
            let s = ctx.subst(d, scope, "dependencies")?;
            Dependency::parse_lenient(&s).map_err(|e| ctx.invalid(format!("dependencies: {e}")))
        })
        .collect()
}

fn scripts(s: &Scriptlets) -> (Vec<(String, Vec<u8>)>, Vec<String>) {
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

fn priority(v: &Option<String>, ctx: &Ctx<'_>) -> Result<Option<u64>, RecipeError> {
    v.as_deref()
        .map(|s| {
            s.trim()
                .parse()
                .map_err(|_| ctx.invalid(format!("priority '{s}' is not a number")))
        })
        .transpose()
}

/// Read a melange YAML file into a plan for `arch`.
pub fn load(
    path: &Path,
    arch: Arch,
    pipeline_dirs: &[PathBuf],
    vars_override: &BTreeMap<String, String>,
) -> Result<Plan, RecipeError> {
    let text = std::fs::read_to_string(path).map_err(|e| RecipeError::Parse {
        path: path.to_path_buf(),
        message: e.to_string(),
    })?;
    let cfg: Config = serde_saphyr::from_str(&text).map_err(|e| RecipeError::Parse {
        path: path.to_path_buf(),
        message: e.to_string(),
    })?;
    let p = &cfg.package;
    if p.name.is_empty() || p.version.is_empty() {
        return Err(RecipeError::Invalid {
            path: path.to_path_buf(),
            message: "package.name and package.version are required".into(),
        });
    }
    if !p.target_architecture.is_empty()
        && !p
            .target_architecture
            .iter()
            .any(|a| a == arch.apk() || a == "all")
    {
        return Err(RecipeError::SkipArch {
            name: p.name.clone(),
            arch: arch.apk().into(),
        });
    }
    let full = format!("{}-r{}", p.version, p.epoch);
    let mut vars = BTreeMap::from([
        ("package.name".to_string(), p.name.clone()),
        ("package.version".to_string(), p.version.clone()),
        ("package.epoch".to_string(), p.epoch.to_string()),
        ("package.full-version".to_string(), full),
        ("package.description".to_string(), p.description.clone()),
        (
            "targets.outdir".to_string(),
            "/home/build/melange-out".to_string(),
        ),
        (
            "targets.destdir".to_string(),
            format!("/home/build/melange-out/{}", p.name),
        ),
        ("build.arch".to_string(), arch.apk().to_string()),
        ("build.goarch".to_string(), arch.oci().0.to_string()),
    ]);
    for (k, v) in cfg.vars.iter().chain(vars_override) {
        vars.insert(format!("vars.{k}"), v.clone());
    }
    let ctx = Ctx {
        path,
        pipeline_dirs,
        vars,
    };
    let main_scope = BTreeMap::from([
        (
            "targets.contextdir".to_string(),
            format!("/home/build/melange-out/{}", p.name),
        ),
        ("context.name".to_string(), p.name.clone()),
    ]);
    let mut steps = vec![];
    for s in &cfg.pipeline {
        ctx.flatten(
            s,
            &main_scope,
            "/home/build",
            &BTreeMap::new(),
            &mut steps,
            0,
        )?;
    }
    let license = p
        .copyright
        .iter()
        .map(|c| c.license.clone())
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join(" AND ");
    let (main_scripts, main_triggers) = scripts(&p.scriptlets);
    let main = PackageSpec {
        name: p.name.clone(),
        description: p.description.clone(),
        url: p.url.clone(),
        commit: p.commit.clone(),
        license: license.clone(),
        depends: deps(&p.dependencies.runtime, &ctx, &main_scope)?,
        provides: deps(&p.dependencies.provides, &ctx, &main_scope)?,
        replaces: deps(&p.dependencies.replaces, &ctx, &main_scope)?,
        provider_priority: priority(&p.dependencies.provider_priority, &ctx)?,
        replaces_priority: priority(&p.dependencies.replaces_priority, &ctx)?,
        triggers: main_triggers,
        scripts: main_scripts,
        sca: ScaOptions {
            no_provides: p.options.no_provides,
            no_depends: p.options.no_depends,
            no_commands: p.options.no_commands,
        },
    };
    let mut subpackages = vec![];
    for sp in &cfg.subpackages {
        let scope = BTreeMap::from([
            (
                "targets.contextdir".to_string(),
                format!("/home/build/melange-out/{}", sp.name),
            ),
            (
                "targets.subpkgdir".to_string(),
                format!("/home/build/melange-out/{}", sp.name),
            ),
            ("subpkg.name".to_string(), sp.name.clone()),
            ("context.name".to_string(), sp.name.clone()),
        ]);
        let name = ctx.subst(&sp.name, &scope, "subpackages")?;
        let mut s_steps = vec![];
        for s in &sp.pipeline {
            ctx.flatten(s, &scope, "/home/build", &BTreeMap::new(), &mut s_steps, 0)?;
        }
        let (sc, tr) = scripts(&sp.scriptlets);
        subpackages.push((
            PackageSpec {
                name,
                description: ctx.subst(&sp.description, &scope, "subpackages")?,
                url: if sp.url.is_empty() {
                    p.url.clone()
                } else {
                    sp.url.clone()
                },
                commit: p.commit.clone(),
                license: license.clone(),
                depends: deps(&sp.dependencies.runtime, &ctx, &scope)?,
                provides: deps(&sp.dependencies.provides, &ctx, &scope)?,
                replaces: deps(&sp.dependencies.replaces, &ctx, &scope)?,
                provider_priority: priority(&sp.dependencies.provider_priority, &ctx)?,
                replaces_priority: priority(&sp.dependencies.replaces_priority, &ctx)?,
                triggers: tr,
                scripts: sc,
                sca: ScaOptions {
                    no_provides: sp.options.no_provides,
                    no_depends: sp.options.no_depends,
                    no_commands: sp.options.no_commands,
                },
            },
            s_steps,
        ));
    }
    Ok(Plan {
        version: p.version.clone(),
        epoch: p.epoch,
        main,
        steps,
        subpackages,
        environment: cfg.environment,
        config_yaml: text,
    })
}
