//! APK dependency resolution with apk-tools 2.14 semantics, for a fresh install (no installed
//! database): provides with and without versions, `provider_priority`, `@tag` pinning,
//! `!conflicts`, `install_if`, and errors worded like `apk_solver_print_errors`.
//!
//! The search is greedy and name-directed like apk's (no backtracking): each requirement takes
//! the best provider allowed by everything already known, and one validation pass at the end
//! turns whatever is still unsatisfied into apk's report, so both sides of a conflict are named.
//! Every output order derives from input order or names; hash maps are only looked up.

use std::cell::RefCell;
use std::cmp::Ordering;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::rc::Rc;

use pallet_apk_types::{Dependency, Op, PackageInfo, version};

/// One repository, in configuration order: an earlier repository wins ties.
#[derive(Clone, Debug, Default)]
pub struct Repository {
    /// URL or any label; only used by callers.
    pub name: String,
    /// `@tag` of a pinned repository; `None` is a default repository.
    pub tag: Option<String>,
    pub packages: Vec<PackageInfo>,
}

/// A chosen package.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Selected {
    /// Index into the `repos` given to [`solve`].
    pub repo: usize,
    /// Index into that repository's `packages`.
    pub index: usize,
    /// The tag it was pinned to: the `@tag` of the request that chose it, or the tag of the
    /// repository it came from. `None` for a default repository.
    pub tag: Option<String>,
}

impl Selected {
    pub fn info<'a>(&self, repos: &'a [Repository]) -> &'a PackageInfo {
        &repos[self.repo].packages[self.index]
    }
}

/// The resolved package set, in install order (dependencies before dependents).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Solution {
    pub packages: Vec<Selected>,
}

impl Solution {
    pub fn infos<'a>(&self, repos: &'a [Repository]) -> Vec<&'a PackageInfo> {
        self.packages.iter().map(|s| s.info(repos)).collect()
    }
}

/// One block of apk's error report.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Problem {
    /// Nothing provides the name.
    NoSuchPackage {
        name: String,
        required_by: Vec<String>,
    },
    /// Only unversioned providers without `provider_priority`: the user must pick one.
    Virtual {
        name: String,
        provided_by: Vec<String>,
        required_by: Vec<String>,
    },
    /// A package (`name-version`) that cannot be installed as things stand.
    Package {
        package: String,
        /// `@tag` repositories the package is only available from, when the requirer may not
        /// use them.
        masked_in: Vec<String>,
        /// Other selected packages holding the same name (`other-1[name]`).
        conflicts: Vec<String>,
        /// Requirements this package violates (`world[dep]`, `pkg-1[!dep]`).
        breaks: Vec<String>,
        /// Requirements it satisfies.
        satisfies: Vec<String>,
    },
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let list = |f: &mut fmt::Formatter<'_>, label: &str, v: &[String]| {
            if v.is_empty() {
                Ok(())
            } else {
                write!(f, "\n    {label}: {}", v.join(" "))
            }
        };
        match self {
            Problem::NoSuchPackage { name, required_by } => {
                write!(f, "  {name} (no such package):")?;
                list(f, "required by", required_by)
            }
            Problem::Virtual {
                name,
                provided_by,
                required_by,
            } => {
                write!(
                    f,
                    "  {name} (virtual):\n    note: please select one of the 'provided by'\n          packages explicitly"
                )?;
                list(f, "provided by", provided_by)?;
                list(f, "required by", required_by)
            }
            Problem::Package {
                package,
                masked_in,
                conflicts,
                breaks,
                satisfies,
            } => {
                write!(f, "  {package}:")?;
                list(f, "masked in", masked_in)?;
                list(f, "conflicts", conflicts)?;
                list(f, "breaks", breaks)?;
                list(f, "satisfies", satisfies)
            }
        }
    }
}

/// Why no package set could be chosen; displays as apk's report.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub struct SolveError {
    pub problems: Vec<Problem>,
}

impl fmt::Display for SolveError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("unable to select packages:")?;
        for p in &self.problems {
            write!(f, "\n{p}")?;
        }
        Ok(())
    }
}

impl SolveError {
    /// Names nothing provides.
    pub fn missing_names(&self) -> Vec<&str> {
        self.problems
            .iter()
            .filter_map(|p| match p {
                Problem::NoSuchPackage { name, .. } => Some(name.as_str()),
                _ => None,
            })
            .collect()
    }

    /// Packages (`name-version`) that conflict with something, with what they conflict with
    /// or break.
    pub fn conflicts(&self) -> Vec<(&str, Vec<&str>)> {
        self.problems
            .iter()
            .filter_map(|p| match p {
                Problem::Package {
                    package,
                    conflicts,
                    breaks,
                    ..
                } if !conflicts.is_empty() || !breaks.is_empty() => Some((
                    package.as_str(),
                    conflicts.iter().chain(breaks).map(String::as_str).collect(),
                )),
                _ => None,
            })
            .collect()
    }
}

type Pid = usize;

/// What the report says about one package: (conflicts, breaks, masked in).
type Faults = (Vec<String>, Vec<String>, Vec<String>);

/// One way a package answers to a name.
#[derive(Clone, Copy, Debug)]
struct Prov<'a> {
    pkg: Pid,
    /// The provided version; `None` for an unversioned provide (a virtual).
    version: Option<&'a str>,
    own: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Requirer {
    World,
    Pkg(Pid),
}

/// What the solver reads of one repository: its packages by number, and who answers to a
/// name. A source may decode packages only when they are asked for, so a resolution touches
/// the records it needs and no others.
pub trait Source {
    /// How many packages there are; they are numbered from 0.
    fn package_count(&self) -> usize;
    /// Package `index`, for `index < package_count()`.
    fn package(&self, index: usize) -> &PackageInfo;
    /// The packages whose own name or one of whose provides is `name`: ascending, each once.
    fn providers(&self, name: &str) -> Vec<usize>;
    /// The packages whose `install_if` has a positive (non-`!`) atom on `name`, ascending,
    /// each once; for the empty name, those whose `install_if` atoms are all conflicts.
    fn triggered_by(&self, name: &str) -> Vec<usize>;
}

/// One repository as [`solve_sources`] takes it.
#[derive(Clone, Copy)]
pub struct SourceRepo<'a> {
    /// `@tag` of a pinned repository; `None` is a default repository.
    pub tag: Option<&'a str>,
    pub source: &'a dyn Source,
}

/// A [`Repository`] as a [`Source`]: its name lists built once, up front.
struct Listed<'a> {
    packages: &'a [PackageInfo],
    providers: HashMap<&'a str, Vec<usize>>,
    triggered: HashMap<&'a str, Vec<usize>>,
}

impl<'a> Listed<'a> {
    fn new(packages: &'a [PackageInfo]) -> Self {
        let mut providers: HashMap<&'a str, Vec<usize>> = HashMap::new();
        let mut triggered: HashMap<&'a str, Vec<usize>> = HashMap::new();
        let push = |v: &mut Vec<usize>, i: usize| {
            if v.last() != Some(&i) {
                v.push(i);
            }
        };
        for (i, p) in packages.iter().enumerate() {
            push(providers.entry(&p.name).or_default(), i);
            for pv in &p.provides {
                push(providers.entry(&pv.name).or_default(), i);
            }
            let mut positive = false;
            for d in p.install_if.iter().filter(|d| !d.conflict) {
                positive = true;
                push(triggered.entry(&d.name).or_default(), i);
            }
            if !positive && !p.install_if.is_empty() {
                push(triggered.entry("").or_default(), i);
            }
        }
        Listed {
            packages,
            providers,
            triggered,
        }
    }
}

impl Source for Listed<'_> {
    fn package_count(&self) -> usize {
        self.packages.len()
    }

    fn package(&self, index: usize) -> &PackageInfo {
        &self.packages[index]
    }

    fn providers(&self, name: &str) -> Vec<usize> {
        self.providers.get(name).cloned().unwrap_or_default()
    }

    fn triggered_by(&self, name: &str) -> Vec<usize> {
        self.triggered.get(name).cloned().unwrap_or_default()
    }
}

/// name → providers across every repository, looked up in the sources the first time a name
/// is asked for and kept for the rest of the solve. Package ids run over the repositories in
/// order, so an id says which repository a package is from and comparing ids compares
/// repository order first.
struct Index<'a> {
    repos: Vec<SourceRepo<'a>>,
    /// The first id of each repository, then the number of packages.
    starts: Vec<usize>,
    by_name: RefCell<HashMap<String, Rc<[Prov<'a>]>>>,
}

impl<'a> Index<'a> {
    fn new(repos: &[SourceRepo<'a>]) -> Self {
        let mut starts = Vec::with_capacity(repos.len() + 1);
        let mut n = 0;
        for r in repos {
            starts.push(n);
            n += r.source.package_count();
        }
        starts.push(n);
        Index {
            repos: repos.to_vec(),
            starts,
            by_name: RefCell::default(),
        }
    }

    fn len(&self) -> usize {
        self.starts.last().copied().unwrap_or(0)
    }

    /// (repository, index in it) of package `id`.
    fn locate(&self, id: Pid) -> (usize, usize) {
        // The last repository starting at or before `id` (empty repositories start where the
        // next one does, and are passed over).
        let r = self.starts[..self.repos.len()].partition_point(|s| *s <= id) - 1;
        (r, id - self.starts[r])
    }

    fn pkg(&self, id: Pid) -> &'a PackageInfo {
        let (r, i) = self.locate(id);
        self.repos[r].source.package(i)
    }

    fn repo_tag(&self, id: Pid) -> Option<&'a str> {
        self.repos[self.locate(id).0].tag
    }

    /// Every way a package answers to `name`, by id; within a package its own name first,
    /// then its provides in order.
    fn providers(&self, name: &str) -> Rc<[Prov<'a>]> {
        if let Some(p) = self.by_name.borrow().get(name) {
            return p.clone();
        }
        let mut out = Vec::new();
        for (r, repo) in self.repos.iter().enumerate() {
            for i in repo.source.providers(name) {
                let id = self.starts[r] + i;
                let p = repo.source.package(i);
                if p.name == name {
                    out.push(Prov {
                        pkg: id,
                        version: Some(&p.version),
                        own: true,
                    });
                }
                for pv in p.provides.iter().filter(|pv| pv.name == name) {
                    out.push(Prov {
                        pkg: id,
                        version: pv.is_versioned().then_some(pv.version.as_str()),
                        own: false,
                    });
                }
            }
        }
        let out: Rc<[Prov<'a>]> = out.into();
        self.by_name
            .borrow_mut()
            .insert(name.to_string(), out.clone());
        out
    }

    /// Ids of the install_if packages a package holding `name` may trigger.
    fn triggered_by(&self, name: &str) -> Vec<Pid> {
        let mut out = Vec::new();
        for (r, repo) in self.repos.iter().enumerate() {
            out.extend(
                repo.source
                    .triggered_by(name)
                    .iter()
                    .map(|i| self.starts[r] + i),
            );
        }
        out
    }

    /// Whether `prov` satisfies the positive form of `d` (the conflict flag is ignored).
    fn prov_matches(&self, prov: &Prov<'_>, d: &Dependency) -> bool {
        if d.op == Op::CHECKSUM {
            return prov.own && self.pkg(prov.pkg).checksum.as_deref() == Some(&d.version);
        }
        d.version_matches(prov.version)
    }

    /// Whether package `id` satisfies the positive form of `d`.
    fn satisfies(&self, id: Pid, d: &Dependency) -> bool {
        self.providers(&d.name)
            .iter()
            .any(|p| p.pkg == id && self.prov_matches(p, d))
    }

    /// Names only one installed package may hold: its own and its versioned provides.
    fn exclusive_names(&self, id: Pid) -> impl Iterator<Item = &'a str> {
        let p = self.pkg(id);
        std::iter::once(p.name.as_str()).chain(
            p.provides
                .iter()
                .filter(|d| d.is_versioned())
                .map(|d| d.name.as_str()),
        )
    }
}

struct Solver<'a> {
    ix: Index<'a>,
    world: Vec<&'a Dependency>,
    chosen: Vec<bool>,
    chosen_list: Vec<Pid>,
    /// Package id → its position in `chosen_list`.
    rank: Vec<usize>,
    tag_of: HashMap<Pid, Option<String>>,
    /// Exclusive name → the chosen package holding it.
    holders: HashMap<&'a str, Pid>,
    /// name → every requirement on it so far (world and chosen packages), conflicts included.
    reqs: HashMap<&'a str, Vec<(Requirer, &'a Dependency)>>,
    /// Requirements whose only providers are virtuals nobody picked yet.
    deferred: Vec<(&'a Dependency, Vec<String>)>,
    /// install_if packages that may be triggered: some chosen package holds a name one of
    /// their positive atoms asks for (or they have none). Any other install_if package has an
    /// atom nothing chosen answers to, so it cannot be triggered yet.
    pending: BTreeSet<Pid>,
}

impl<'a> Solver<'a> {
    fn new(repos: &[SourceRepo<'a>], world: &'a [Dependency]) -> Self {
        let ix = Index::new(repos);
        let mut w: Vec<&Dependency> = world.iter().collect();
        // apk sorts the world by name before solving; the full atom breaks ties.
        w.sort_by(|a, b| a.name.cmp(&b.name).then_with(|| a.cmp(b)));
        let n = ix.len();
        let pending = ix.triggered_by("").into_iter().collect();
        let mut s = Solver {
            ix,
            world: w,
            chosen: vec![false; n],
            chosen_list: Vec::new(),
            rank: vec![usize::MAX; n],
            tag_of: HashMap::new(),
            holders: HashMap::new(),
            reqs: HashMap::new(),
            deferred: Vec::new(),
            pending,
        };
        for d in s.world.clone() {
            s.reqs
                .entry(d.name.as_str())
                .or_default()
                .push((Requirer::World, d));
        }
        s
    }

    fn name_required(&self, name: &str) -> bool {
        self.reqs
            .get(name)
            .is_some_and(|v| v.iter().any(|(_, d)| !d.conflict))
    }

    /// apk's `is_provider_auto_selectable`.
    fn auto_selectable(&self, prov: &Prov<'_>) -> bool {
        if prov.own || prov.version.is_some() {
            return true;
        }
        let p = self.ix.pkg(prov.pkg);
        p.provider_priority.unwrap_or(0) > 0 || self.name_required(&p.name)
    }

    fn pin_allowed(&self, id: Pid, tags: &[&str]) -> bool {
        match self.ix.repo_tag(id) {
            None => true,
            Some(t) => tags.contains(&t),
        }
    }

    /// Whether choosing `id` would clash with what is already known.
    fn clashes(&self, id: Pid) -> bool {
        for n in self.ix.exclusive_names(id) {
            if self.holders.get(n).is_some_and(|h| *h != id) {
                return true;
            }
        }
        let p = self.ix.pkg(id);
        // Someone forbids a name this package holds.
        let held = std::iter::once((p.name.as_str(), Some(p.version.as_str()), true)).chain(
            p.provides.iter().map(|d| {
                (
                    d.name.as_str(),
                    d.is_versioned().then_some(d.version.as_str()),
                    false,
                )
            }),
        );
        for (n, v, own) in held {
            let prov = Prov {
                pkg: id,
                version: v,
                own,
            };
            if let Some(rs) = self.reqs.get(n) {
                for (r, d) in rs {
                    if d.conflict && *r != Requirer::Pkg(id) && self.ix.prov_matches(&prov, d) {
                        return true;
                    }
                }
            }
        }
        // This package forbids something already chosen.
        p.depends.iter().filter(|d| d.conflict).any(|d| {
            self.ix
                .providers(&d.name)
                .iter()
                .any(|pr| pr.pkg != id && self.chosen[pr.pkg] && self.ix.prov_matches(pr, d))
        })
    }

    /// apk's `compare_providers` for a fresh install: `Greater` when `a` is the better choice.
    fn compare(&self, name_tag: Option<&str>, a: &Prov<'_>, b: &Prov<'_>) -> Ordering {
        let (pa, pb) = (self.ix.pkg(a.pkg), self.ix.pkg(b.pkg));
        let preferred = |id: Pid| self.ix.repo_tag(id) == name_tag;
        let ver = |v: Option<&str>, w: Option<&str>| match (v, w) {
            (Some(v), Some(w)) => version::compare(v, w),
            (v, w) => v.is_some().cmp(&w.is_some()),
        };
        preferred(a.pkg)
            .cmp(&preferred(b.pkg))
            .then_with(|| ver(a.version, b.version))
            .then_with(|| {
                if pa.name == pb.name {
                    version::compare(&pa.version, &pb.version)
                } else {
                    Ordering::Equal
                }
            })
            .then_with(|| {
                pa.provider_priority
                    .unwrap_or(0)
                    .cmp(&pb.provider_priority.unwrap_or(0))
            })
            .then_with(|| self.ix.locate(b.pkg).0.cmp(&self.ix.locate(a.pkg).0))
            // Past apk's criteria only determinism matters: apko's newest-overall, then name.
            .then_with(|| version::compare(&pa.version, &pb.version))
            .then_with(|| pb.name.cmp(&pa.name))
            .then_with(|| b.pkg.cmp(&a.pkg))
    }

    fn best(&self, name_tag: Option<&str>, cands: &[Prov<'a>]) -> Option<Prov<'a>> {
        cands.iter().copied().reduce(|best, c| {
            if self.compare(name_tag, &c, &best).is_gt() {
                c
            } else {
                best
            }
        })
    }

    fn choose(&mut self, id: Pid, tag: Option<&str>, tags: &[&str]) {
        if self.chosen[id] {
            return;
        }
        self.chosen[id] = true;
        self.rank[id] = self.chosen_list.len();
        self.chosen_list.push(id);
        let own_tag = tag.or(self.ix.repo_tag(id)).map(str::to_string);
        self.tag_of.insert(id, own_tag);
        for n in self.ix.exclusive_names(id) {
            self.holders.entry(n).or_insert(id);
        }
        let p = self.ix.pkg(id);
        // Every name it answers to may complete some install_if.
        for n in std::iter::once(&p.name).chain(p.provides.iter().map(|d| &d.name)) {
            let woken: Vec<Pid> = self
                .ix
                .triggered_by(n)
                .into_iter()
                .filter(|q| !self.chosen[*q])
                .collect();
            self.pending.extend(woken);
        }
        for d in &p.depends {
            self.reqs
                .entry(d.name.as_str())
                .or_default()
                .push((Requirer::Pkg(id), d));
        }
        // Deps inherit the pinning that allowed this package, as apk's
        // `inherit_pinning_and_flags` does.
        let mut inherited: Vec<String> = tags.iter().map(|t| t.to_string()).collect();
        if let Some(t) = self.ix.repo_tag(id) {
            inherited.push(t.to_string());
        }
        for d in &p.depends {
            self.require(d, &inherited);
        }
    }

    fn require(&mut self, d: &'a Dependency, inherited: &[String]) {
        if d.conflict {
            return;
        }
        let provs = self.ix.providers(&d.name);
        if provs
            .iter()
            .any(|p| self.chosen[p.pkg] && self.ix.prov_matches(p, d))
        {
            return;
        }
        let mut tags: Vec<&str> = inherited.iter().map(String::as_str).collect();
        if let Some(t) = &d.tag {
            tags.push(t);
        }
        let reqs = self.reqs.get(d.name.as_str()).cloned().unwrap_or_default();
        let fits = |s: &Self, p: &Prov<'_>| {
            s.ix.prov_matches(p, d)
                && s.pin_allowed(p.pkg, &tags)
                && s.auto_selectable(p)
                && reqs
                    .iter()
                    .all(|(_, r)| r.conflict || s.ix.prov_matches(p, r))
        };
        let clean: Vec<Prov<'a>> = provs
            .iter()
            .filter(|p| fits(self, p) && !self.clashes(p.pkg))
            .copied()
            .collect();
        let pick = if clean.is_empty() {
            // Take the best anyway so the final report names both sides of the clash.
            let loose: Vec<Prov<'a>> = provs.iter().filter(|p| fits(self, p)).copied().collect();
            self.best(d.tag.as_deref(), &loose)
        } else {
            self.best(d.tag.as_deref(), &clean)
        };
        match pick {
            Some(p) => {
                let tags: Vec<&str> = tags.to_vec();
                self.choose(p.pkg, d.tag.as_deref(), &tags);
            }
            None => {
                if provs.iter().any(|p| !self.auto_selectable(p)) {
                    self.deferred.push((d, inherited.to_vec()));
                }
                // Otherwise nothing fits; validation reports it.
            }
        }
    }

    fn install_if_round(&mut self) -> bool {
        let mut added = false;
        // The pending packages in id order, including those that become pending (with a
        // larger id) while the round runs: the order apk walks its install_if list in.
        let mut next = 0;
        while let Some(&id) = self.pending.range(next..).next() {
            next = id + 1;
            if self.chosen[id] {
                self.pending.remove(&id);
                continue;
            }
            let p = self.ix.pkg(id);
            let triggered = p.install_if.iter().all(|d| {
                let hit = self
                    .ix
                    .providers(&d.name)
                    .iter()
                    .any(|pr| self.chosen[pr.pkg] && self.ix.prov_matches(pr, d));
                hit != d.conflict
            });
            if !triggered || self.holders.contains_key(p.name.as_str()) {
                continue;
            }
            // Only the best triggered, default-pinned candidate of the name is installed.
            let cands: Vec<Prov<'a>> = self
                .ix
                .providers(&p.name)
                .iter()
                .filter(|pr| {
                    pr.own
                        && self.ix.repo_tag(pr.pkg).is_none()
                        && !self.ix.pkg(pr.pkg).install_if.is_empty()
                        && !self.clashes(pr.pkg)
                })
                .copied()
                .collect();
            if self.best(None, &cands).is_some_and(|b| b.pkg == id) {
                self.choose(id, None, &[]);
                added = true;
            }
        }
        added
    }

    fn run(&mut self) {
        for d in self.world.clone() {
            self.require(d, &[]);
        }
        loop {
            let mut progress = false;
            for (d, tags) in std::mem::take(&mut self.deferred) {
                let before = self.chosen_list.len();
                self.require(d, &tags);
                progress |= self.chosen_list.len() != before;
            }
            progress |= self.install_if_round();
            if !progress {
                break;
            }
        }
    }

    fn who(&self, r: Requirer, d: &Dependency) -> String {
        match r {
            Requirer::World => format!("world[{d}]"),
            Requirer::Pkg(id) => format!("{}[{d}]", self.ix.pkg(id).nv()),
        }
    }

    /// Every requirement in force, in a stable order: world first, then packages in choice
    /// order.
    fn all_reqs(&self) -> Vec<(Requirer, &'a Dependency)> {
        let mut v: Vec<(Requirer, &'a Dependency)> =
            self.world.iter().map(|d| (Requirer::World, *d)).collect();
        for &id in &self.chosen_list {
            v.extend(
                self.ix
                    .pkg(id)
                    .depends
                    .iter()
                    .map(|d| (Requirer::Pkg(id), d)),
            );
        }
        v
    }

    fn validate(&self) -> Vec<Problem> {
        let all = self.all_reqs();
        let mut missing: BTreeMap<&str, Vec<String>> = BTreeMap::new();
        let mut virtuals: BTreeMap<&str, Vec<String>> = BTreeMap::new();
        let mut bad: BTreeMap<Pid, Faults> = BTreeMap::new();
        for &(r, d) in &all {
            if d.conflict {
                for pr in self.ix.providers(&d.name).iter() {
                    if self.chosen[pr.pkg]
                        && r != Requirer::Pkg(pr.pkg)
                        && self.ix.prov_matches(pr, d)
                    {
                        let e = bad.entry(pr.pkg).or_default();
                        let w = self.who(r, d);
                        if !e.1.contains(&w) {
                            e.1.push(w);
                        }
                    }
                }
                continue;
            }
            let provs = self.ix.providers(&d.name);
            if provs
                .iter()
                .any(|p| self.chosen[p.pkg] && self.ix.prov_matches(p, d))
            {
                continue;
            }
            if provs.is_empty() {
                missing.entry(&d.name).or_default().push(self.who(r, d));
            } else if provs.iter().all(|p| !p.own && p.version.is_none()) && !d.is_versioned() {
                virtuals.entry(&d.name).or_default().push(self.who(r, d));
            } else {
                // Name the best package that would have answered, as apk does.
                let matching: Vec<Prov<'a>> = provs
                    .iter()
                    .filter(|p| self.ix.prov_matches(p, d))
                    .copied()
                    .collect();
                let (pool, masked) = if matching.is_empty() {
                    (provs.to_vec(), false)
                } else {
                    (matching, true)
                };
                if let Some(b) = self.best(d.tag.as_deref(), &pool) {
                    let e = bad.entry(b.pkg).or_default();
                    if let Some(t) = self.ix.repo_tag(b.pkg).filter(|_| masked) {
                        let m = format!("@{t}");
                        if !e.2.contains(&m) {
                            e.2.push(m);
                        }
                    }
                    if !masked || self.ix.repo_tag(b.pkg).is_none() {
                        e.1.push(self.who(r, d));
                    }
                }
            }
        }
        // Two chosen packages holding one exclusive name.
        let mut holder: BTreeMap<&str, Pid> = BTreeMap::new();
        for &id in &self.chosen_list {
            for n in self.ix.exclusive_names(id) {
                match holder.get(n) {
                    Some(&o) if o != id => {
                        let (po, pi) = (self.ix.pkg(o), self.ix.pkg(id));
                        let tag = |p: &PackageInfo| {
                            if p.name == n {
                                p.nv()
                            } else {
                                format!("{}[{n}]", p.nv())
                            }
                        };
                        bad.entry(o).or_default().0.push(tag(pi));
                        bad.entry(id).or_default().0.push(tag(po));
                    }
                    Some(_) => {}
                    None => {
                        holder.insert(n, id);
                    }
                }
            }
        }
        let mut problems = Vec::new();
        for (name, required_by) in missing {
            problems.push(Problem::NoSuchPackage {
                name: name.to_string(),
                required_by,
            });
        }
        for (name, required_by) in virtuals {
            let provided_by: BTreeSet<String> = self
                .ix
                .providers(name)
                .iter()
                .map(|p| self.ix.pkg(p.pkg).name.clone())
                .collect();
            problems.push(Problem::Virtual {
                name: name.to_string(),
                provided_by: provided_by.into_iter().collect(),
                required_by,
            });
        }
        let mut pkg_problems: Vec<(String, Problem)> = bad
            .into_iter()
            .map(|(id, (conflicts, breaks, masked_in))| {
                let satisfies = all
                    .iter()
                    .filter(|(r, d)| {
                        !d.conflict && *r != Requirer::Pkg(id) && self.ix.satisfies(id, d)
                    })
                    .map(|&(r, d)| self.who(r, d))
                    .collect();
                let nv = self.ix.pkg(id).nv();
                (
                    nv.clone(),
                    Problem::Package {
                        package: nv,
                        masked_in,
                        conflicts,
                        breaks,
                        satisfies,
                    },
                )
            })
            .collect();
        pkg_problems.sort_by(|a, b| a.0.cmp(&b.0));
        problems.extend(pkg_problems.into_iter().map(|(_, p)| p));
        problems
    }

    /// Install order: depth-first from the sorted world, each package after its deps (and an
    /// install_if package after its triggers); cycles are cut where the walk re-enters.
    fn order(&self) -> Vec<Selected> {
        let mut state = vec![0u8; self.chosen.len()];
        let mut out = Vec::new();
        let mut install_if: Vec<Pid> = self
            .chosen_list
            .iter()
            .copied()
            .filter(|id| !self.ix.pkg(*id).install_if.is_empty())
            .collect();
        install_if.sort_unstable();
        let world: Vec<&Dependency> = self.world.iter().copied().filter(|d| !d.conflict).collect();
        for d in world {
            if let Some(id) = self.holder_of(d) {
                self.visit(id, &install_if, &mut state, &mut out);
            }
        }
        let mut rest: Vec<Pid> = self
            .chosen_list
            .iter()
            .copied()
            .filter(|id| state[*id] == 0)
            .collect();
        rest.sort_by(|a, b| {
            let (pa, pb) = (self.ix.pkg(*a), self.ix.pkg(*b));
            pa.name.cmp(&pb.name).then(a.cmp(b))
        });
        for id in rest {
            self.visit(id, &install_if, &mut state, &mut out);
        }
        out.into_iter()
            .map(|id| {
                let (repo, index) = self.ix.locate(id);
                Selected {
                    repo,
                    index,
                    tag: self.tag_of.get(&id).cloned().flatten(),
                }
            })
            .collect()
    }

    fn holder_of(&self, d: &Dependency) -> Option<Pid> {
        // The earliest chosen wins so the order is independent of the index layout.
        self.ix
            .providers(&d.name)
            .iter()
            .filter(|p| self.chosen[p.pkg] && self.ix.prov_matches(p, d))
            .map(|p| p.pkg)
            .min_by_key(|id| self.rank[*id])
    }

    /// `install_if` holds the chosen install_if packages in id order.
    fn visit(&self, id: Pid, install_if: &[Pid], state: &mut [u8], out: &mut Vec<Pid>) {
        if state[id] != 0 {
            return;
        }
        state[id] = 1;
        let p = self.ix.pkg(id);
        for d in p.install_if.iter().chain(&p.depends) {
            if d.conflict {
                continue;
            }
            if let Some(dep) = self.holder_of(d) {
                self.visit(dep, install_if, state, out);
            }
        }
        state[id] = 2;
        out.push(id);
        // apk records an install_if package right after the last of its triggers.
        for &q in install_if {
            if state[q] != 0 {
                continue;
            }
            let ready = self
                .ix
                .pkg(q)
                .install_if
                .iter()
                .all(|d| d.conflict || self.holder_of(d).is_some_and(|h| state[h] == 2));
            if ready {
                self.visit(q, install_if, state, out);
            }
        }
    }
}

/// Resolve `world` over `repos` (in priority order) into the packages to install, in install
/// order, or apk's explanation of why that is impossible.
pub fn solve(repos: &[Repository], world: &[Dependency]) -> Result<Solution, SolveError> {
    let listed: Vec<Listed<'_>> = repos.iter().map(|r| Listed::new(&r.packages)).collect();
    let sources: Vec<SourceRepo<'_>> = repos
        .iter()
        .zip(&listed)
        .map(|(r, l)| SourceRepo {
            tag: r.tag.as_deref(),
            source: l,
        })
        .collect();
    solve_sources(&sources, world)
}

/// [`solve`] over any [`Source`]s: only the packages the resolution reaches are read.
pub fn solve_sources(
    repos: &[SourceRepo<'_>],
    world: &[Dependency],
) -> Result<Solution, SolveError> {
    let mut s = Solver::new(repos, world);
    s.run();
    let problems = s.validate();
    if !problems.is_empty() {
        return Err(SolveError { problems });
    }
    Ok(Solution {
        packages: s.order(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pkg(spec: &str) -> PackageInfo {
        // "name-ver|deps|provides|k|install_if"
        let f: Vec<&str> = spec.split('|').collect();
        let (name, ver) = f[0].rsplit_once(' ').unwrap();
        let list = |i: usize| {
            f.get(i)
                .map(|s| Dependency::parse_list(s).unwrap())
                .unwrap_or_default()
        };
        PackageInfo {
            name: name.into(),
            version: ver.into(),
            depends: list(1),
            provides: list(2),
            provider_priority: f.get(3).and_then(|k| k.parse().ok()),
            install_if: list(4),
            ..Default::default()
        }
    }

    fn repo(tag: Option<&str>, specs: &[&str]) -> Repository {
        Repository {
            name: tag.unwrap_or("main").into(),
            tag: tag.map(str::to_string),
            packages: specs.iter().map(|s| pkg(s)).collect(),
        }
    }

    fn run(repos: &[Repository], world: &str) -> Result<Vec<String>, String> {
        solve(repos, &Dependency::parse_list(world).unwrap())
            .map(|s| s.infos(repos).iter().map(|p| p.nv()).collect())
            .map_err(|e| e.to_string())
    }

    #[test]
    fn versioned_provide_is_auto_selected_unversioned_needs_priority() {
        let r = [repo(
            None,
            &[
                "app 1|so:libfoo.so.1 sh",
                "libfoo 1|||",
                "libfoo2 1||so:libfoo.so.1=1.2",
                "bb 1||sh",
            ],
        )];
        let err = run(&r, "app").unwrap_err();
        assert_eq!(
            err,
            "unable to select packages:\n  sh (virtual):\n    note: please select one of the 'provided by'\n          packages explicitly\n    provided by: bb\n    required by: app-1[sh]"
        );
        // Naming the provider explicitly, or giving it a priority, settles it.
        assert_eq!(run(&r, "app bb").unwrap(), ["libfoo2-1", "bb-1", "app-1"]);
        let r = [repo(None, &["app 1|sh", "bb 1||sh|10", "toy 1||sh|20"])];
        assert_eq!(run(&r, "app").unwrap(), ["toy-1", "app-1"]);
    }

    #[test]
    fn highest_version_then_first_repository() {
        let r = [
            repo(None, &["a 1", "a 2"]),
            repo(None, &["a 2|b", "a 1.5", "b 1"]),
        ];
        let s = solve(&r, &[Dependency::any("a")]).unwrap();
        assert_eq!(
            s.packages,
            [Selected {
                repo: 0,
                index: 1,
                tag: None
            }]
        );
        // The provided version of the requested name beats priority.
        let r = [repo(None, &["x 1||v=2", "y 1||v=3", "z 1||v=1|100"])];
        assert_eq!(run(&r, "v").unwrap(), ["y-1"]);
    }

    #[test]
    fn versioned_constraints() {
        let r = [repo(None, &["a 1.0", "a 1.5", "a 2.0", "a 3.8.2"])];
        assert_eq!(run(&r, "a<2").unwrap(), ["a-1.5"]);
        assert_eq!(run(&r, "a>=2.0").unwrap(), ["a-3.8.2"]);
        assert_eq!(run(&r, "a~2").unwrap(), ["a-2.0"]);
        // A dependent's constraint is honoured when the name comes later.
        let r = [repo(None, &["b 1|a<2", "a 1", "a 2"])];
        assert_eq!(run(&r, "b").unwrap(), ["a-1", "b-1"]);
        let err = run(&[repo(None, &["a 1"])], "a>5").unwrap_err();
        assert_eq!(
            err,
            "unable to select packages:\n  a-1:\n    breaks: world[a>5]"
        );
    }

    #[test]
    fn pinning() {
        let r = [
            repo(None, &["x 1|lib", "lib 1"]),
            repo(
                Some("edge"),
                &["x 9|lib newdep", "lib 5", "newdep 1", "only 1"],
            ),
        ];
        assert_eq!(run(&r, "x").unwrap(), ["lib-1", "x-1"]);
        // Pinned: x from edge; its deps may come from edge but the default repo stays preferred.
        let s = solve(&r, &Dependency::parse_list("x@edge").unwrap()).unwrap();
        let got: Vec<(String, Option<String>)> = s
            .packages
            .iter()
            .map(|p| (p.info(&r).nv(), p.tag.clone()))
            .collect();
        assert_eq!(
            got,
            [
                ("lib-1".into(), None),
                ("newdep-1".into(), Some("edge".into())),
                ("x-9".into(), Some("edge".into()))
            ]
        );
        // The default repositories stay allowed for a pinned name (apk's default pinning).
        assert_eq!(run(&r[..1], "lib@edge").unwrap(), ["lib-1"]);
        let err = run(&r, "only").unwrap_err();
        assert_eq!(
            err,
            "unable to select packages:\n  only-1:\n    masked in: @edge\n    satisfies: world[only]"
        );
    }

    #[test]
    fn conflicts_in_world_and_depends() {
        let r = [repo(None, &["a 1|!c", "c 1", "d 1|c"])];
        let err = run(&r, "a d").unwrap_err();
        assert_eq!(
            err,
            "unable to select packages:\n  c-1:\n    breaks: a-1[!c]\n    satisfies: d-1[c]"
        );
        let err = run(&r, "!c d").unwrap_err();
        assert_eq!(
            err,
            "unable to select packages:\n  c-1:\n    breaks: world[!c]\n    satisfies: d-1[c]"
        );
        // A world conflict steers the choice to another provider.
        let r2 = [repo(
            None,
            &[
                "app 1|so:x.so.1",
                "libx 2||so:x.so.1=2",
                "libx-compat 1||so:x.so.1=1",
            ],
        )];
        assert_eq!(run(&r2, "app").unwrap(), ["libx-2", "app-1"]);
        assert_eq!(run(&r2, "app !libx").unwrap(), ["libx-compat-1", "app-1"]);
        // A conflict with a version only forbids matching versions.
        let r = [repo(None, &["c 1", "c 2", "d 1|c"])];
        assert_eq!(run(&r, "d !c>1").unwrap(), ["c-1", "d-1"]);
    }

    #[test]
    fn same_versioned_provide_conflicts_both_sides() {
        let r = [repo(
            None,
            &[
                "app 2|so:foo.so.1",
                "app2 2|so:foo.so.2",
                "libfoo 1||so:foo.so.1=1.0",
                "libfoo 2||so:foo.so.2=1.0",
            ],
        )];
        let err = run(&r, "app app2").unwrap_err();
        assert_eq!(
            err,
            "unable to select packages:\n  libfoo-1:\n    conflicts: libfoo-2\n    satisfies: app-2[so:foo.so.1]\n  libfoo-2:\n    conflicts: libfoo-1\n    satisfies: app2-2[so:foo.so.2]"
        );
        let e = solve(&r, &Dependency::parse_list("app app2").unwrap()).unwrap_err();
        assert_eq!(e.conflicts().len(), 2);
    }

    #[test]
    fn install_if_only_when_every_trigger_is_selected() {
        let r = [repo(
            None,
            &[
                "app 1",
                "docs 1",
                "app-doc 1|doc-dep|||app docs",
                "doc-dep 1",
            ],
        )];
        assert_eq!(run(&r, "app").unwrap(), ["app-1"]);
        assert_eq!(
            run(&r, "docs app").unwrap(),
            ["app-1", "docs-1", "doc-dep-1", "app-doc-1"]
        );
        // Placed right after its last trigger, before later world entries.
        let r = [repo(
            None,
            &["app 1", "docs 1", "zed 1", "app-doc 1||||app docs"],
        )];
        assert_eq!(
            run(&r, "docs app zed").unwrap(),
            ["app-1", "docs-1", "app-doc-1", "zed-1"]
        );
    }

    #[test]
    fn cycles_and_missing_names() {
        let r = [repo(None, &["a 1|b", "b 1|a"])];
        assert_eq!(run(&r, "a").unwrap(), ["b-1", "a-1"]);
        let r = [repo(None, &["a 1|gone", "b 1|gone"])];
        let err = run(&r, "a b nope").unwrap_err();
        assert_eq!(
            err,
            "unable to select packages:\n  gone (no such package):\n    required by: a-1[gone] b-1[gone]\n  nope (no such package):\n    required by: world[nope]"
        );
        let e = solve(&r, &Dependency::parse_list("a b nope").unwrap()).unwrap_err();
        assert_eq!(e.missing_names(), ["gone", "nope"]);
    }

    proptest::proptest! {
        #[test]
        fn random_worlds_never_panic(
            pkgs in proptest::collection::vec(
                (0..6u8, 1..4u8, proptest::collection::vec((0..8u8, 0..4u8, proptest::bool::ANY), 0..4),
                 proptest::collection::vec((0..8u8, proptest::bool::ANY), 0..2), 0..3u8, proptest::bool::ANY),
                0..20),
            world in proptest::collection::vec((0..8u8, 0..4u8, proptest::bool::ANY), 0..5),
        ) {
            let dep = |n: u8, op: u8, neg: bool| {
                let s = format!("{}n{n}{}", if neg { "!" } else { "" },
                    ["", ">=2", "<2", "=1"][op as usize]);
                Dependency::parse(&s).unwrap()
            };
            let mut repos = vec![Repository::default(), Repository { tag: Some("t".into()), ..Default::default() }];
            for (name, ver, deps, provs, k, tagged) in pkgs {
                let p = PackageInfo {
                    name: format!("n{name}"),
                    version: ver.to_string(),
                    depends: deps.into_iter().map(|(n, o, c)| dep(n, o, c)).collect(),
                    provides: provs.into_iter().map(|(n, v)| {
                        if v { Dependency::exact(format!("n{n}"), "1") } else { Dependency::any(format!("n{n}")) }
                    }).collect(),
                    provider_priority: (k > 0).then_some(k as u64),
                    install_if: if k == 2 { vec![Dependency::any("n0")] } else { vec![] },
                    ..Default::default()
                };
                repos[usize::from(tagged)].packages.push(p);
            }
            let world: Vec<Dependency> = world.into_iter().map(|(n, o, c)| dep(n, o, c)).collect();
            let _ = solve(&repos, &world).map_err(|e| e.to_string());
        }
    }
}
