//! Package selection with apk's rules for the cases images need: own names before provides,
//! versioned provides auto-selectable, unversioned ones only with `provider_priority`, higher
//! priority then higher version then the earlier repository, `@tag` pinning, `!conflicts`,
//! `install_if`, and errors worded like apk's ("required by", both sides of a conflict).
//!
//! A dedicated crate (`pallet-solve`) is meant to grow into apk's full solver; this is the
//! deterministic depth-first resolver the image build uses meanwhile.

use std::collections::{BTreeMap, BTreeSet};

use pallet_apk_types::{Dependency, PackageInfo, version};

/// One repository's packages, in configuration order (earlier wins ties).
#[derive(Clone, Debug)]
pub struct Repo {
    pub url: String,
    pub tag: Option<String>,
    pub packages: Vec<PackageInfo>,
}

/// A chosen package: (repository index, package index).
pub type Pick = (usize, usize);

/// Who provides a name: the package, the provided version (None = unversioned), and whether
/// it is the package's own name.
type Providers<'a> = BTreeMap<&'a str, Vec<(Pick, Option<&'a str>, bool)>>;

#[derive(Debug, thiserror::Error)]
#[error("unable to select packages:\n{}", .problems.join("\n"))]
pub struct SolveError {
    pub problems: Vec<String>,
}

struct Ctx<'a> {
    repos: &'a [Repo],
    /// name → candidates providing it, with the provided version (None = unversioned).
    providers: Providers<'a>,
    chosen: BTreeMap<Pick, ()>,
    order: Vec<Pick>,
    /// name → the package that holds it (own name or versioned provide).
    holders: BTreeMap<String, Pick>,
    problems: Vec<String>,
    visiting: BTreeSet<Pick>,
}

impl<'a> Ctx<'a> {
    fn pkg(&self, p: Pick) -> &'a PackageInfo {
        &self.repos[p.0].packages[p.1]
    }

    fn satisfies(&self, p: Pick, d: &Dependency) -> bool {
        let info = self.pkg(p);
        if info.name == d.name && d.version_matches(Some(&info.version)) {
            return true;
        }
        info.provides.iter().any(|pv| {
            pv.name == d.name && d.version_matches(pv.is_versioned().then_some(pv.version.as_str()))
        })
    }

    fn already(&self, d: &Dependency) -> Option<Pick> {
        self.order.iter().copied().find(|p| self.satisfies(*p, d))
    }

    fn repo_allowed(&self, p: Pick, tag: Option<&str>) -> bool {
        match (&self.repos[p.0].tag, tag) {
            (None, _) => true,
            (Some(t), Some(want)) => t == want,
            (Some(_), None) => false,
        }
    }

    fn choose(&self, d: &Dependency, tag: Option<&str>) -> Option<Pick> {
        let cands = self.providers.get(d.name.as_str())?;
        let mut best: Option<(Pick, (u8, u64, &str))> = None;
        for &(p, pver, own) in cands {
            if !self.repo_allowed(p, tag) {
                continue;
            }
            let info = self.pkg(p);
            let ver = if own {
                Some(info.version.as_str())
            } else {
                pver
            };
            if !d.version_matches(ver) {
                continue;
            }
            // An unversioned provide is only auto-selected with a provider priority.
            if !own && pver.is_none() && info.provider_priority.unwrap_or(0) == 0 {
                continue;
            }
            let key = (
                u8::from(own),
                info.provider_priority.unwrap_or(0),
                ver.unwrap_or(""),
            );
            let better = match &best {
                None => true,
                Some((bp, bk)) => {
                    key.0
                        .cmp(&bk.0)
                        .then(key.1.cmp(&bk.1))
                        .then_with(|| version::compare(key.2, bk.2))
                        .then_with(|| version::compare(&info.version, &self.pkg(*bp).version))
                        // Earlier repository, then name, wins the remaining ties.
                        .then_with(|| bp.0.cmp(&p.0))
                        .then_with(|| self.pkg(*bp).name.cmp(&info.name))
                        .is_gt()
                }
            };
            if better {
                best = Some((p, key));
            }
        }
        best.map(|(p, _)| p)
    }

    fn describe_virtual(&self, d: &Dependency) -> Option<String> {
        let cands = self.providers.get(d.name.as_str())?;
        let names: BTreeSet<String> = cands
            .iter()
            .map(|(p, _, _)| self.pkg(*p).name.clone())
            .collect();
        Some(names.into_iter().collect::<Vec<_>>().join(" "))
    }

    fn add(&mut self, d: &Dependency, tag: Option<&str>, required_by: &str) {
        if d.conflict {
            return;
        }
        if self.already(d).is_some() {
            return;
        }
        let tag = d.tag.as_deref().or(tag);
        let Some(p) = self.choose(d, tag) else {
            let msg = if let Some(v) = self.describe_virtual(d) {
                format!(
                    "  {d} (virtual):\n    note: please select one of the 'provided by'\n          packages explicitly\n    provided by: {v}\n    required by: {required_by}"
                )
            } else {
                format!("  {d} (no such package):\n    required by: {required_by}")
            };
            if !self.problems.contains(&msg) {
                self.problems.push(msg);
            }
            return;
        };
        if self.chosen.contains_key(&p) || !self.visiting.insert(p) {
            return;
        }
        let info = self.pkg(p);
        let by = format!("{}[{}]", info.nv(), "");
        for dep in &info.depends {
            let by = by.replace("[]", &format!("[{dep}]"));
            self.add(dep, tag, &by);
        }
        self.visiting.remove(&p);
        if self.chosen.insert(p, ()).is_none() {
            self.order.push(p);
        }
    }
}

/// Resolve `world` over `repos`, returning packages in install order (dependencies first).
pub fn solve(repos: &[Repo], world: &[Dependency]) -> Result<Vec<Pick>, SolveError> {
    let mut providers: Providers<'_> = BTreeMap::new();
    for (ri, r) in repos.iter().enumerate() {
        for (pi, p) in r.packages.iter().enumerate() {
            providers
                .entry(p.name.as_str())
                .or_default()
                .push(((ri, pi), None, true));
            for pv in &p.provides {
                providers.entry(pv.name.as_str()).or_default().push((
                    (ri, pi),
                    pv.is_versioned().then_some(pv.version.as_str()),
                    false,
                ));
            }
        }
    }
    let mut ctx = Ctx {
        repos,
        providers,
        chosen: BTreeMap::new(),
        order: vec![],
        holders: BTreeMap::new(),
        problems: vec![],
        visiting: BTreeSet::new(),
    };
    let mut sorted: Vec<&Dependency> = world.iter().collect();
    sorted.sort_by(|a, b| a.name.cmp(&b.name));
    for d in &sorted {
        ctx.add(d, None, &format!("world[{d}]"));
    }
    // install_if: add packages whose every trigger is satisfied, until nothing changes.
    loop {
        let mut added = false;
        let snapshot: Vec<Pick> = ctx.order.clone();
        let mut cands: Vec<Pick> = vec![];
        for (ri, r) in repos.iter().enumerate() {
            for (pi, p) in r.packages.iter().enumerate() {
                if p.install_if.is_empty() || ctx.chosen.contains_key(&(ri, pi)) {
                    continue;
                }
                let ok = p.install_if.iter().all(|d| {
                    let hit = snapshot.iter().any(|s| ctx.satisfies(*s, d));
                    if d.conflict { !hit } else { hit }
                });
                if ok && r.tag.is_none() {
                    cands.push((ri, pi));
                }
            }
        }
        for c in cands {
            let info = ctx.pkg(c);
            // Only the best version of a name is triggered.
            let d = Dependency::any(info.name.clone());
            if ctx.already(&d).is_some() || ctx.choose(&d, None) != Some(c) {
                continue;
            }
            let by = info.nv().to_string();
            ctx.add(
                &Dependency::exact(info.name.clone(), info.version.clone()),
                None,
                &by,
            );
            added = true;
        }
        if !added {
            break;
        }
    }
    // Conflicts: `!name` in world or depends, and two packages holding the same name.
    let order = ctx.order.clone();
    for p in &order {
        let info = ctx.pkg(*p);
        let mut names = vec![(info.name.clone(), true)];
        names.extend(
            info.provides
                .iter()
                .map(|d| (d.name.clone(), d.is_versioned())),
        );
        for (n, exclusive) in names {
            if !exclusive {
                continue;
            }
            if let Some(other) = ctx.holders.get(&n) {
                if other != p {
                    let (a, b) = (ctx.pkg(*other).nv(), info.nv());
                    ctx.problems.push(format!(
                        "  {a}:\n    conflicts: {b}[{n}]\n  {b}:\n    conflicts: {a}[{n}]"
                    ));
                }
            } else {
                ctx.holders.insert(n, *p);
            }
        }
    }
    let mut conflict_sources: Vec<(String, Dependency)> = sorted
        .iter()
        .map(|d| ("world".to_string(), (*d).clone()))
        .collect();
    for p in &order {
        let info = ctx.pkg(*p);
        for d in &info.depends {
            conflict_sources.push((info.nv(), d.clone()));
        }
    }
    for (who, d) in conflict_sources.iter().filter(|(_, d)| d.conflict) {
        let positive = Dependency {
            conflict: false,
            ..d.clone()
        };
        for p in &order {
            if ctx.satisfies(*p, &positive) && ctx.pkg(*p).nv() != *who {
                let victim = ctx.pkg(*p).nv();
                let satisfies: Vec<String> = conflict_sources
                    .iter()
                    .filter(|(w, dd)| !dd.conflict && ctx.satisfies(*p, dd) && w != who)
                    .map(|(w, dd)| {
                        if w == "world" {
                            format!("world[{dd}]")
                        } else {
                            format!("{w}[{dd}]")
                        }
                    })
                    .collect();
                let who_s = if who == "world" {
                    format!("world[{d}]")
                } else {
                    format!("{who}[{d}]")
                };
                ctx.problems.push(format!(
                    "  {victim}:\n    breaks: {who_s}\n    satisfies: {}",
                    satisfies.join(" ")
                ));
            }
        }
    }
    if ctx.problems.is_empty() {
        Ok(order)
    } else {
        Err(SolveError {
            problems: ctx.problems,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pkg(name: &str, ver: &str, deps: &str, provides: &str) -> PackageInfo {
        PackageInfo {
            name: name.into(),
            version: ver.into(),
            depends: Dependency::parse_list(deps).unwrap(),
            provides: Dependency::parse_list(provides).unwrap(),
            ..Default::default()
        }
    }

    fn names(repos: &[Repo], picks: &[Pick]) -> Vec<String> {
        picks
            .iter()
            .map(|p| repos[p.0].packages[p.1].nv())
            .collect()
    }

    #[test]
    fn deps_first_highest_version_provides() {
        let repos = vec![Repo {
            url: "r".into(),
            tag: None,
            packages: vec![
                pkg("app", "1.0-r0", "so:libfoo.so.1 sh", ""),
                pkg("app", "2.0-r0", "so:libfoo.so.1 /bin/sh", ""),
                pkg("libfoo", "1-r0", "", "so:libfoo.so.1=1"),
                pkg("busybox", "1-r0", "", "/bin/sh"),
                PackageInfo {
                    provider_priority: Some(100),
                    ..pkg("busybox-binsh", "1-r0", "busybox", "/bin/sh")
                },
            ],
        }];
        let got = solve(&repos, &Dependency::parse_list("app").unwrap()).unwrap();
        assert_eq!(
            names(&repos, &got),
            [
                "libfoo-1-r0",
                "busybox-1-r0",
                "busybox-binsh-1-r0",
                "app-2.0-r0"
            ]
        );
    }

    #[test]
    fn errors_name_the_requirer_and_both_sides() {
        let repos = vec![Repo {
            url: "r".into(),
            tag: None,
            packages: vec![
                pkg("a", "1-r0", "missing", ""),
                pkg("b", "1-r0", "!c", ""),
                pkg("c", "1-r0", "", ""),
            ],
        }];
        let err = solve(&repos, &Dependency::parse_list("a").unwrap())
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("missing (no such package):\n    required by: a-1-r0[missing]"),
            "{err}"
        );
        let err = solve(&repos, &Dependency::parse_list("b c").unwrap())
            .unwrap_err()
            .to_string();
        assert!(err.contains("c-1-r0:\n    breaks: b-1-r0[!c]"), "{err}");
    }

    #[test]
    fn pinned_repos_and_install_if() {
        let repos = vec![
            Repo {
                url: "main".into(),
                tag: None,
                packages: vec![
                    pkg("x", "1-r0", "", ""),
                    PackageInfo {
                        install_if: Dependency::parse_list("x docs").unwrap(),
                        ..pkg("x-doc", "1-r0", "", "")
                    },
                    pkg("docs", "1-r0", "", ""),
                ],
            },
            Repo {
                url: "edge".into(),
                tag: Some("edge".into()),
                packages: vec![pkg("x", "9-r0", "", "")],
            },
        ];
        let got = solve(&repos, &Dependency::parse_list("x").unwrap()).unwrap();
        assert_eq!(names(&repos, &got), ["x-1-r0"]);
        // The pinned x-9 still triggers x-doc: its install_if names x without a version.
        let got = solve(&repos, &Dependency::parse_list("x@edge docs").unwrap()).unwrap();
        assert_eq!(names(&repos, &got), ["docs-1-r0", "x-9-r0", "x-doc-1-r0"]);
        let got = solve(&repos, &Dependency::parse_list("x docs").unwrap()).unwrap();
        assert_eq!(names(&repos, &got), ["docs-1-r0", "x-1-r0", "x-doc-1-r0"]);
    }
}
