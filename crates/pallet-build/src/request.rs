//! One recipe built for a list of architectures, as `melange build` does it: compile per arch
//! (skipping arches the recipe does not target), apply the lint flags and the detected commit,
//! run the driver, and append melange's build log. The CLI maps flags onto a [`RecipeRequest`];
//! the workspace build fills one per node.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use pallet_image::config::Arch;

use crate::compile::{CompileError, CompileOptions};
use crate::driver::{self, Options, Plan};

#[derive(Debug, thiserror::Error)]
pub enum RequestError {
    #[error("reading {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error(transparent)]
    Compile(#[from] CompileError),
    #[error(transparent)]
    Lint(#[from] crate::lint::LintError),
    #[error("building {config} for {arch}: {source}")]
    Build {
        config: PathBuf,
        arch: String,
        #[source]
        source: Box<driver::BuildError>,
    },
    #[error("writing {path}: {source}")]
    BuildLog {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Everything one `melange build` of one file needs.
#[derive(Clone, Debug, Default)]
pub struct RecipeRequest {
    pub config: PathBuf,
    /// Empty: the host's.
    pub archs: Vec<Arch>,
    pub pipeline_dirs: Vec<PathBuf>,
    pub vars: BTreeMap<String, String>,
    pub build_options: Vec<String>,
    /// `--lint-require` / `--lint-warn`: a list given replaces melange's default list.
    pub lint_require: Option<Vec<String>>,
    pub lint_warn: Option<Vec<String>>,
    /// Stands in for a `package.commit` the configuration leaves out.
    pub commit: Option<String>,
    /// melange's `--create-build-log`: append `ARCH|ORIGIN|NAME|VERSION-rN` lines here.
    pub build_log: Option<PathBuf>,
    /// How to build; `arch` is set per architecture.
    pub options: Options,
}

/// melange's `--cpu`, `--cpumodel`, `--memory`, `--disk` and `--timeout`: each one given
/// replaces the configuration's value (melange's parse-time defaults, which despite the name
/// win over the file).
#[derive(Clone, Debug, Default)]
pub struct ResourceOverrides {
    pub cpu: Option<String>,
    pub cpumodel: Option<String>,
    pub memory: Option<String>,
    pub disk: Option<String>,
    pub timeout: Option<String>,
}

impl ResourceOverrides {
    fn apply(&self, p: &mut crate::compile::Package) {
        let given = |v: &Option<String>| v.clone().filter(|s| !s.is_empty());
        if let Some(t) = given(&self.timeout) {
            p.timeout = Some(t);
        }
        let r = p.resources.get_or_insert_with(Default::default);
        for (field, value) in [
            (&mut r.cpu, &self.cpu),
            (&mut r.cpumodel, &self.cpumodel),
            (&mut r.memory, &self.memory),
            (&mut r.disk, &self.disk),
        ] {
            if let Some(v) = given(value) {
                *field = Some(v);
            }
        }
        if r.cpu.is_none() && r.cpumodel.is_none() && r.memory.is_none() && r.disk.is_none() {
            p.resources = None;
        }
    }
}

/// What happened for one architecture.
#[derive(Clone, Debug)]
pub enum ArchOutcome {
    /// Not in the recipe's `target-architecture`.
    Skipped {
        name: String,
        arch: Arch,
    },
    Built {
        arch: Arch,
        files: Vec<PathBuf>,
    },
}

impl RecipeRequest {
    pub fn archs(&self) -> Vec<Arch> {
        if self.archs.is_empty() {
            vec![Arch::host()]
        } else {
            self.archs.clone()
        }
    }

    /// The compiled plan for `arch` with the request's lint flags and commit applied, or
    /// `None` when the recipe does not build for it.
    pub fn plan(&self, arch: Arch) -> Result<Option<Plan>, RequestError> {
        Ok(self.plan_or_skip(arch)?.ok())
    }

    /// The compiled configuration and its plan (for its test pipelines and environments),
    /// or `None` when the recipe does not build for `arch`.
    ///
    /// The plan's `config_yaml` (the `.melange.yaml` packages embed) is left empty: rendering
    /// it was a third of a 3,400-recipe workspace plan; [`render`] makes it when a build needs
    /// it.
    pub fn compiled(
        &self,
        arch: Arch,
    ) -> Result<Option<(crate::compile::Compiled, Plan)>, RequestError> {
        let (c, _) = crate::compile::compile_file(&self.config, &self.compile_options(arch))?;
        match crate::recipe::plan_compiled(&c, &self.config, String::new()) {
            Ok(p) => Ok(Some((c, self.finish(p)?))),
            Err(CompileError::SkipArch { .. }) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// What `melange compile` prints for `arch`: the compiled configuration with what melange
    /// applies while parsing, which a build applies later. The `--env-file` variables sit
    /// under `environment.environment` (the configuration's own win), the detected or given
    /// commit stands in for a missing `package.commit`, and each override given replaces the
    /// configuration's `package.resources` value or `package.timeout`.
    pub fn compile_view(
        &self,
        arch: Arch,
        overrides: &ResourceOverrides,
    ) -> Result<crate::compile::Compiled, RequestError> {
        let (mut c, _) = crate::compile::compile_file(&self.config, &self.compile_options(arch))?;
        if !self.options.env_file.is_empty() {
            let mut env = self.options.env_file.clone();
            env.extend(std::mem::take(&mut c.environment.environment));
            c.environment.environment = env;
        }
        if let Some(commit) = &self.commit
            && c.package.commit.as_deref().is_none_or(str::is_empty)
        {
            c.package.commit = Some(commit.clone());
        }
        overrides.apply(&mut c.package);
        Ok(c)
    }

    fn compile_options(&self, arch: Arch) -> CompileOptions {
        CompileOptions {
            arch: Some(arch),
            pipeline_dirs: self.pipeline_dirs.clone(),
            vars: self.vars.clone(),
            build_options: self.build_options.clone(),
        }
    }

    /// The plan, or the package's name when it does not build for `arch`.
    fn plan_or_skip(&self, arch: Arch) -> Result<Result<Plan, String>, RequestError> {
        let plan = match crate::recipe::load_with(&self.config, &self.compile_options(arch)) {
            Ok(p) => p,
            Err(CompileError::SkipArch { name, .. }) => return Ok(Err(name)),
            Err(e) => return Err(e.into()),
        };
        Ok(Ok(self.finish(plan)?))
    }

    /// The request's lint flags and commit, applied to a compiled plan.
    fn finish(&self, mut plan: Plan) -> Result<Plan, RequestError> {
        if self.lint_require.is_some() || self.lint_warn.is_some() {
            plan.lint.policy = crate::lint::Policy::from_flags(
                self.lint_require.as_deref(),
                self.lint_warn.as_deref(),
            )?;
        }
        if let Some(c) = &self.commit {
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

    /// Build one architecture from its plan.
    pub fn build_plan(&self, plan: &Plan, arch: Arch) -> Result<Vec<PathBuf>, RequestError> {
        let mut opts = self.options.clone();
        opts.arch = Some(arch);
        let files = driver::build(plan, &opts).map_err(|source| RequestError::Build {
            config: self.config.clone(),
            arch: arch.apk().to_string(),
            source: Box::new(source),
        })?;
        if let Some(log) = &self.build_log {
            append_build_log(log, plan, arch)?;
        }
        Ok(files)
    }

    /// Build every architecture, concurrently (each in its own sandbox); outcomes in the
    /// order of [`RecipeRequest::archs`], the first error wins.
    pub fn build(&self) -> Result<Vec<ArchOutcome>, RequestError> {
        let archs = self.archs();
        let results: Vec<Result<ArchOutcome, RequestError>> = std::thread::scope(|s| {
            let handles: Vec<_> = archs
                .iter()
                .map(|&arch| {
                    s.spawn(move || match self.plan_or_skip(arch)? {
                        Err(name) => Ok(ArchOutcome::Skipped { name, arch }),
                        Ok(plan) => Ok(ArchOutcome::Built {
                            arch,
                            files: self.build_plan(&plan, arch)?,
                        }),
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().expect("a build thread does not panic"))
                .collect()
        });
        results.into_iter().collect()
    }

    /// melange's default when no `--arch` is given: every architecture the recipe's
    /// `target-architecture` allows and its repositories (the environment's and the extra
    /// ones) all serve; with no repository at all (a bootstrap build), the host's. Returns the
    /// architectures and one line per architecture left out, saying why.
    pub fn default_archs(&self) -> Result<(Vec<Arch>, Vec<String>), RequestError> {
        if self.options.bootstrap {
            return Ok((vec![Arch::host()], vec![]));
        }
        self.served(&Arch::ALL, false)
    }

    /// Of `archs`, those the repositories serve, and a line for each left out. With
    /// `explicit`, an arch the recipe's `target-architecture` excludes is kept (its build says
    /// it is skipped), as is the host's when there is no repository at all.
    pub fn served(
        &self,
        archs: &[Arch],
        explicit: bool,
    ) -> Result<(Vec<Arch>, Vec<String>), RequestError> {
        let host = Arch::host();
        let mut out = vec![];
        let mut skipped = vec![];
        let bopts = pallet_image::build::BuildOptions {
            cache_dir: self.options.apk_cache_dir.clone(),
            ..Default::default()
        };
        let client = bopts.client();
        for &arch in archs {
            let plan = match self.plan_or_skip(arch)? {
                Ok(p) => p,
                Err(_) if explicit => {
                    out.push(arch);
                    continue;
                }
                Err(_) => {
                    skipped.push(format!(
                        "skipping {}: not in target-architecture",
                        arch.apk()
                    ));
                    continue;
                }
            };
            let repos: Vec<String> = plan
                .environment
                .contents
                .repositories
                .iter()
                .chain(&self.options.extra_repositories)
                // `@tag URL` lines name their URL last.
                .map(|r| r.rsplit(' ').next().unwrap_or(r).to_string())
                .collect();
            if repos.is_empty() {
                if explicit || arch == host {
                    out.push(arch);
                }
                continue;
            }
            let missing = repos
                .iter()
                .find(|r| client.index(r, arch.apk()).map_or(true, |p| !p.is_file()));
            match missing {
                Some(r) => skipped.push(format!(
                    "skipping {}: {} has no {}/APKINDEX.tar.gz",
                    arch.apk(),
                    pallet_repo::redact(r),
                    arch.apk()
                )),
                None => out.push(arch),
            }
        }
        Ok((out, skipped))
    }
}

/// The compiled configuration as packages embed it (`.melange.yaml`).
pub fn render(c: &crate::compile::Compiled) -> Result<String, String> {
    serde_saphyr::to_string(c).map_err(|e| format!("rendering the compiled configuration: {e}"))
}

/// Append melange's build log lines (`ARCH|ORIGIN|NAME|VERSION-rN`) to `path`.
pub fn append_build_log(path: &Path, plan: &Plan, arch: Arch) -> Result<(), RequestError> {
    use std::io::Write as _;
    let err = |source| RequestError::BuildLog {
        path: path.to_path_buf(),
        source,
    };
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(err)?;
    let origin = &plan.main.name;
    let mut text = String::new();
    for name in
        std::iter::once(&plan.main.name).chain(plan.subpackages.iter().map(|(s, _)| &s.name))
    {
        text.push_str(&format!(
            "{}|{origin}|{name}|{}-r{}\n",
            arch.apk(),
            plan.version,
            plan.epoch
        ));
    }
    // One write per recipe, so that concurrent builds appending to one log do not interleave
    // inside a line.
    f.write_all(text.as_bytes()).map_err(err)
}

/// `--vars-file`: a YAML map merged over `vars`.
pub fn read_vars(path: &Path) -> Result<BTreeMap<String, String>, RequestError> {
    let text = std::fs::read_to_string(path).map_err(|source| RequestError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    serde_saphyr::from_str(&text).map_err(|e| RequestError::Parse {
        path: path.to_path_buf(),
        message: e.to_string(),
    })
}

/// The variables of `--env-file`s. A variable named in several files takes the first file's
/// value, as melange merges them; `lookup` answers `${VAR}`s no file sets.
pub fn read_env_files(
    files: &[PathBuf],
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<BTreeMap<String, String>, RequestError> {
    let mut out = BTreeMap::new();
    for p in files {
        let text = std::fs::read_to_string(p).map_err(|source| RequestError::Read {
            path: p.clone(),
            source,
        })?;
        let vars = crate::dotenv::parse(&text, lookup).map_err(|message| RequestError::Parse {
            path: p.clone(),
            message,
        })?;
        for (k, v) in vars {
            out.entry(k).or_insert(v);
        }
    }
    Ok(out)
}

/// The commit of the checkout holding `config` (`git rev-parse HEAD` in its folder, melange's
/// best-effort detection), or none.
pub fn detect_commit(config: &Path) -> Option<String> {
    let dir = config
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let out = std::process::Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(["rev-parse", "HEAD"])
        .stderr(std::process::Stdio::null())
        .output()
        .ok()?;
    let c = String::from_utf8_lossy(&out.stdout).trim().to_string();
    (out.status.success() && c.len() >= 7 && c.chars().all(|x| x.is_ascii_hexdigit())).then_some(c)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_files_first_file_wins_and_errors_name_the_file() {
        let d = tempfile::tempdir().unwrap();
        let a = d.path().join("a.env");
        let b = d.path().join("b.env");
        std::fs::write(&a, "X=1\n").unwrap();
        std::fs::write(&b, "X=2\nY=3\n").unwrap();
        let v = read_env_files(&[a.clone(), b], &|_| None).unwrap();
        assert_eq!((v["X"].as_str(), v["Y"].as_str()), ("1", "3"));
        std::fs::write(&a, "not a line\n").unwrap();
        let e = read_env_files(&[a], &|_| None).unwrap_err().to_string();
        assert!(e.contains("a.env") && e.contains("line 1"), "{e}");
    }

    #[test]
    fn build_log_lines() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("packages.log");
        let mut plan = Plan {
            version: "1.2".into(),
            epoch: 3,
            ..Default::default()
        };
        plan.main.name = "foo".into();
        let sub = crate::assemble::PackageSpec {
            name: "foo-doc".into(),
            ..Default::default()
        };
        plan.subpackages.push((sub, vec![]));
        append_build_log(&p, &plan, Arch::parse("x86_64").unwrap()).unwrap();
        assert_eq!(
            std::fs::read_to_string(&p).unwrap(),
            "x86_64|foo|foo|1.2-r3\nx86_64|foo|foo-doc|1.2-r3\n"
        );
    }

    #[test]
    fn priorities_are_substituted_and_read_as_apk_does() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("r.yaml");
        std::fs::write(
            &p,
            "package:\n  name: p\n  version: 1\n  epoch: 0\n  description: d\n  dependencies:\n    provider-priority: -1\nvars:\n  major: 7\ndata:\n  - name: vs\n    items:\n      a: 5\n      b:\npipeline:\n  - runs: 'true'\nsubpackages:\n  - range: vs\n    name: p-${{range.key}}\n    dependencies:\n      provider-priority: ${{range.value}}\n      replaces-priority: ${{vars.major}}\n    pipeline:\n      - runs: 'true'\n",
        )
        .unwrap();
        let req = RecipeRequest {
            config: p,
            ..Default::default()
        };
        let plan = req.plan(Arch::parse("x86_64").unwrap()).unwrap().unwrap();
        assert_eq!(plan.main.provider_priority, Some(0));
        let subs: Vec<_> = plan
            .subpackages
            .iter()
            .map(|(s, _)| (s.name.as_str(), s.provider_priority, s.replaces_priority))
            .collect();
        assert_eq!(subs, [("p-a", Some(5), Some(7)), ("p-b", None, Some(7))]);
    }
}
