//! Loading a workspace: settings and flags merged, recipes compiled per architecture, images
//! read, and the graph between them.

use std::path::{Path, PathBuf};

use pallet_build::compile::CompiledTest;
use pallet_build::driver::Plan;
use pallet_image::config::Arch;
use rayon::prelude::*;

use crate::WorkspaceError;
use crate::discover::{self, Kind};
use crate::graph::{self, Graph, NodeNames};
use crate::settings::{Settings, SettingsError};

/// What the command line says; each value given wins over `pallet.yaml`.
#[derive(Clone, Debug, Default)]
pub struct Flags {
    pub signing_key: Option<PathBuf>,
    pub archs: Vec<String>,
    pub repositories: Vec<String>,
    pub keyring: Vec<String>,
    pub env_files: Vec<PathBuf>,
    pub pipeline_dirs: Vec<PathBuf>,
    pub namespace: Option<String>,
    pub build_options: Vec<String>,
    pub output: Option<PathBuf>,
    pub images_output: Option<PathBuf>,
    /// Recipes (by package name) built in bootstrap mode, as `recipes.NAME.bootstrap`.
    pub bootstrap: Vec<String>,
    /// `(recipe, folder)`, as `recipes.NAME.source-dir`.
    pub source_dirs: Vec<(String, PathBuf)>,
    /// `(image, tag)`: replaces the image's tags (repeat for several), as `images.NAME.tags`.
    pub image_tags: Vec<(String, String)>,
    /// `(image, reference)`: adds a publish target, as `images.NAME.publish`.
    pub publish: Vec<(String, String)>,
}

impl Flags {
    /// `pallet.yaml` with these flags laid over it.
    fn apply(&self, s: &mut Settings) {
        if let Some(o) = &self.images_output {
            s.images_output = Some(o.clone());
        }
        for n in &self.bootstrap {
            s.recipes.entry(n.clone()).or_default().bootstrap = true;
        }
        for (n, d) in &self.source_dirs {
            s.recipes.entry(n.clone()).or_default().source_dir = Some(d.clone());
        }
        let mut retagged = std::collections::BTreeSet::new();
        for (n, t) in &self.image_tags {
            let img = s.images.entry(n.clone()).or_default();
            if retagged.insert(n.clone()) {
                img.tags.clear();
            }
            img.tags.push(t.clone());
        }
        for (n, r) in &self.publish {
            s.images
                .entry(n.clone())
                .or_default()
                .publish
                .push(r.clone());
        }
    }
}

/// One recipe for one architecture.
#[derive(Clone, Debug)]
pub struct Recipe {
    /// The recipe file, relative to the root.
    pub file: PathBuf,
    pub arch: Arch,
    /// The main package's name.
    pub name: String,
    /// `VERSION-rEPOCH`.
    pub version: String,
    /// The package and subpackage names.
    pub outputs: Vec<String>,
    /// Relative to the root.
    pub source_dir: Option<PathBuf>,
    pub bootstrap: bool,
    /// Its `config_yaml` is empty until a build renders it from `compiled`.
    pub plan: Plan,
    pub compiled: pallet_build::compile::Compiled,
    /// `test:` pipelines of the package and its subpackages.
    pub tests: Vec<(String, CompiledTest)>,
    pub names: NodeNames,
}

/// One image configuration (all of its architectures).
#[derive(Clone, Debug)]
pub struct Image {
    pub file: PathBuf,
    pub name: String,
    pub archs: Vec<Arch>,
    pub tags: Vec<String>,
    pub tarball: Option<PathBuf>,
    pub layout: Option<PathBuf>,
    pub publish: Vec<String>,
    /// `contents.packages` of the merged configuration.
    pub needs: Vec<String>,
}

#[derive(Debug)]
pub struct Workspace {
    /// Absolute.
    pub root: PathBuf,
    pub settings: Settings,
    pub flags: Flags,
    /// Absolute: `OUT/ARCH/*.apk`.
    pub out: PathBuf,
    /// Relative to the root (kept out of discovery and of source folders).
    pub out_rel: PathBuf,
    pub images_rel: PathBuf,
    /// Absolute path of the signing key (it may not exist yet).
    pub signing_key: PathBuf,
    pub archs: Vec<Arch>,
    pub pipeline_dirs: Vec<PathBuf>,
    pub env_files: Vec<PathBuf>,
    pub recipes: Vec<Recipe>,
    pub images: Vec<Image>,
    /// Over `recipes`.
    pub graph: Graph,
    /// Per image, the recipes it waits for.
    pub image_after: Vec<Vec<usize>>,
    /// Per image, the packages it needs that no recipe builds.
    pub image_external: Vec<Vec<String>>,
}

fn compile_err(file: &Path, e: impl std::fmt::Display) -> WorkspaceError {
    WorkspaceError::Recipe {
        file: file.to_path_buf(),
        message: e.to_string(),
    }
}

impl Workspace {
    pub fn load(root: &Path, flags: &Flags) -> Result<Workspace, WorkspaceError> {
        let root = std::path::absolute(root).map_err(|source| WorkspaceError::Io {
            context: format!("finding {}", root.display()),
            source,
        })?;
        let settings = Settings::load(&root).map_err(|e| match e {
            SettingsError::Read { path, source } => WorkspaceError::Io {
                context: format!("reading {}", path.display()),
                source,
            },
            SettingsError::Invalid { path, message } => WorkspaceError::Settings { path, message },
        })?;
        let mut settings = settings;
        flags.apply(&mut settings);
        let out_rel = flags
            .output
            .clone()
            .or_else(|| settings.output.clone())
            .unwrap_or_else(|| PathBuf::from("packages"));
        let images_rel = settings
            .images_output
            .clone()
            .unwrap_or_else(|| PathBuf::from("images"));
        let out = if out_rel.is_absolute() {
            out_rel.clone()
        } else {
            root.join(&out_rel)
        };
        let signing_key = root.join(
            flags
                .signing_key
                .clone()
                .or_else(|| settings.signing_key.clone())
                .unwrap_or_else(|| PathBuf::from("melange.rsa")),
        );
        let mut pipeline_dirs: Vec<PathBuf> = flags
            .pipeline_dirs
            .iter()
            .chain(&settings.pipeline_dirs)
            .map(|p| root.join(p))
            .collect();
        if pipeline_dirs.is_empty() && root.join("pipelines").is_dir() {
            pipeline_dirs.push(root.join("pipelines"));
        }
        let env_files: Vec<PathBuf> = if flags.env_files.is_empty() {
            settings.env_files.iter().map(|p| root.join(p)).collect()
        } else {
            flags.env_files.clone()
        };
        let arch_names = if flags.archs.is_empty() {
            settings.archs.clone()
        } else {
            flags.archs.clone()
        };
        let archs: Vec<Arch> = if arch_names.is_empty() {
            vec![Arch::host()]
        } else {
            arch_names
                .iter()
                .map(|a| {
                    Arch::parse(a).ok_or_else(|| WorkspaceError::Settings {
                        path: root.join(crate::settings::FILE),
                        message: format!("unknown architecture '{a}'"),
                    })
                })
                .collect::<Result<_, _>>()?
        };
        let mut skip = vec![out_rel.clone(), images_rel.clone()];
        skip.extend(
            pipeline_dirs
                .iter()
                .filter_map(|p| p.strip_prefix(&root).ok().map(Path::to_path_buf)),
        );
        let found = discover::discover(&root, &skip).map_err(|e| WorkspaceError::Io {
            context: format!("reading {}", e.path.display()),
            source: e.source,
        })?;
        let recipe_files: Vec<&Path> = found
            .iter()
            .filter(|f| f.kind == Kind::Recipe)
            .map(|f| f.rel.as_path())
            .collect();
        let per_folder = discover::recipes_per_folder(&recipe_files);
        let build_options: Vec<String> = flags
            .build_options
            .iter()
            .chain(&settings.build_options)
            .cloned()
            .collect();
        // Compile every recipe for every architecture, on every core.
        let jobs: Vec<(&Path, Arch)> = recipe_files
            .iter()
            .flat_map(|f| archs.iter().map(move |a| (*f, *a)))
            .collect();
        let compiled: Vec<Result<Option<Recipe>, WorkspaceError>> = jobs
            .par_iter()
            .map(|(rel, arch)| {
                let req = pallet_build::request::RecipeRequest {
                    config: root.join(rel),
                    archs: vec![*arch],
                    pipeline_dirs: pipeline_dirs.clone(),
                    build_options: build_options.clone(),
                    ..Default::default()
                };
                let Some((c, plan)) = req.compiled(*arch).map_err(|e| compile_err(rel, e))? else {
                    return Ok(None);
                };
                let mut outputs = vec![plan.main.name.clone()];
                outputs.extend(plan.subpackages.iter().map(|(s, _)| s.name.clone()));
                let mut provides = outputs.clone();
                let mut packages = vec![];
                for spec in
                    std::iter::once(&plan.main).chain(plan.subpackages.iter().map(|(s, _)| s))
                {
                    let mut names = vec![spec.name.clone()];
                    names.extend(spec.provides.iter().map(|d| d.name.clone()));
                    provides.extend(spec.provides.iter().map(|d| d.name.clone()));
                    let runtime = spec.depends.iter().map(|d| d.name.clone()).collect();
                    packages.push((names, runtime));
                }
                let mut tests = vec![];
                if let Some(t) = &c.test {
                    tests.push((c.package.name.clone(), t.clone()));
                }
                for sp in &c.subpackages {
                    if let Some(t) = &sp.test {
                        tests.push((sp.name.clone(), t.clone()));
                    }
                }
                // The build waits for its build environment only; test environments are
                // `pallet test`'s (counting them here would make cycles of most toolchains).
                let needs = plan.environment.contents.packages.clone();
                let rs = settings.recipes.get(&plan.main.name);
                let source_dir = match rs.and_then(|r| r.source_dir.clone()) {
                    Some(d) => Some(d),
                    None => discover::source_dir(&root, rel, &per_folder),
                };
                Ok(Some(Recipe {
                    file: rel.to_path_buf(),
                    arch: *arch,
                    name: plan.main.name.clone(),
                    version: format!("{}-r{}", plan.version, plan.epoch),
                    outputs,
                    source_dir,
                    bootstrap: rs.is_some_and(|r| r.bootstrap),
                    tests,
                    names: NodeNames {
                        provides,
                        needs,
                        packages,
                    },
                    plan,
                    compiled: c,
                }))
            })
            .collect();
        let mut recipes = vec![];
        let mut errors = vec![];
        for r in compiled {
            match r {
                Ok(Some(r)) => recipes.push(r),
                Ok(None) => {}
                Err(e) => errors.push(e.to_string()),
            }
        }
        if !errors.is_empty() {
            return Err(WorkspaceError::Recipes(errors));
        }
        for name in settings.recipes.keys() {
            if !recipes.iter().any(|r| &r.name == name) {
                return Err(WorkspaceError::Settings {
                    path: root.join(crate::settings::FILE),
                    message: format!("recipes.{name}: no recipe of the workspace builds {name}"),
                });
            }
        }
        // Per arch, its recipes' indexes and names: one graph each, and where images look up
        // their providers.
        let per_arch: Vec<(Arch, Vec<usize>, Vec<NodeNames>)> = archs
            .iter()
            .map(|arch| {
                let idx: Vec<usize> = (0..recipes.len())
                    .filter(|&i| recipes[i].arch == *arch)
                    .collect();
                let names = idx.iter().map(|&i| recipes[i].names.clone()).collect();
                (*arch, idx, names)
            })
            .collect();
        // One graph per architecture, joined: recipes of different architectures never wait
        // for each other.
        let mut graph = Graph {
            after: vec![vec![]; recipes.len()],
            external: vec![vec![]; recipes.len()],
            ..Default::default()
        };
        for (_, idx, names) in &per_arch {
            let g = graph::build(names);
            for (k, &i) in idx.iter().enumerate() {
                graph.after[i] = g.after[k].iter().map(|&j| idx[j]).collect();
                graph.external[i] = g.external[k].clone();
            }
            graph
                .cycles
                .extend(g.cycles.iter().map(|c| c.iter().map(|&k| idx[k]).collect()));
            graph.order.extend(g.order.iter().map(|&k| idx[k]));
        }
        let mut images = vec![];
        for f in found.iter().filter(|f| f.kind == Kind::Image) {
            images.push(load_image(&root, &f.rel, &settings, &archs)?);
        }
        for name in settings.images.keys() {
            if !images.iter().any(|i| &i.name == name) {
                return Err(WorkspaceError::Settings {
                    path: root.join(crate::settings::FILE),
                    message: format!(
                        "images.{name}: no image file of the workspace is named {name}"
                    ),
                });
            }
        }
        let providers: Vec<(Arch, &[usize], graph::Providers)> = per_arch
            .iter()
            .map(|(a, idx, names)| (*a, idx.as_slice(), graph::Providers::new(names)))
            .collect();
        let mut image_after = vec![];
        let mut image_external = vec![];
        for img in &images {
            let mut after = std::collections::BTreeSet::new();
            let mut external = std::collections::BTreeSet::new();
            for (_, idx, providers) in providers.iter().filter(|(a, _, _)| img.archs.contains(a)) {
                for need in &img.needs {
                    let Some(name) = graph::atom_name(need) else {
                        continue;
                    };
                    match providers.reach(name) {
                        Some(reach) => after.extend(reach.iter().map(|&k| idx[k])),
                        None => {
                            external.insert(name.to_string());
                        }
                    }
                }
            }
            image_after.push(after.into_iter().collect());
            image_external.push(external.into_iter().collect());
        }
        Ok(Workspace {
            root,
            settings,
            flags: flags.clone(),
            out,
            out_rel,
            images_rel,
            signing_key,
            archs,
            pipeline_dirs,
            env_files,
            recipes,
            images,
            graph,
            image_after,
            image_external,
        })
    }

    /// Paths under the root a recipe's source folder must not show its build: the output
    /// folders and the signing key.
    pub fn source_exclude(&self, source_dir: &Path) -> Vec<PathBuf> {
        let mut x = vec![];
        let abs = self.root.join(source_dir);
        for p in [
            self.root.join(&self.out_rel),
            self.root.join(&self.images_rel),
            self.signing_key.clone(),
        ] {
            if let Ok(rel) = p.strip_prefix(&abs) {
                x.push(rel.to_path_buf());
            }
        }
        x
    }

    /// Recipe indexes by package or subpackage name.
    pub fn recipes_named(&self, name: &str) -> Vec<usize> {
        (0..self.recipes.len())
            .filter(|&i| self.recipes[i].outputs.iter().any(|o| o == name))
            .collect()
    }
}

fn load_image(
    root: &Path,
    rel: &Path,
    settings: &Settings,
    archs: &[Arch],
) -> Result<Image, WorkspaceError> {
    let name = discover::image_name(rel);
    let loaded =
        pallet_image::config::load(&root.join(rel), &[]).map_err(|e| WorkspaceError::Image {
            file: rel.to_path_buf(),
            message: e.to_string(),
        })?;
    let cfg = &loaded.config;
    // The image's own archs, where the workspace builds them; none listed: the workspace's.
    let mut img_archs: Vec<Arch> = cfg
        .archs
        .iter()
        .filter_map(|a| Arch::parse(a))
        .filter(|a| archs.contains(a))
        .collect();
    if cfg.archs.is_empty() {
        img_archs = archs.to_vec();
    }
    let s = settings.images.get(&name).cloned().unwrap_or_default();
    let tags = if s.tags.is_empty() {
        vec![format!("{name}:latest")]
    } else {
        s.tags.clone()
    };
    let (tarball, layout) = if s.tarball.is_none() && s.layout.is_none() {
        (
            Some(
                settings
                    .images_output
                    .clone()
                    .unwrap_or_else(|| PathBuf::from("images"))
                    .join(format!("{name}.tar")),
            ),
            None,
        )
    } else {
        (s.tarball.clone(), s.layout.clone())
    };
    Ok(Image {
        file: rel.to_path_buf(),
        name,
        archs: img_archs,
        tags,
        tarball,
        layout,
        publish: s.publish.clone(),
        needs: cfg.contents.packages.clone(),
    })
}
