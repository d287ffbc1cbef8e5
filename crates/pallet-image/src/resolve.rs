//! The image build's view of the resolver: repositories as the build reads them (with their
//! URLs), handed to `pallet-solve` (apk-tools 2.14 semantics), picks back as indices.

use pallet_apk_types::{Dependency, PackageInfo};
use pallet_index::Records;

pub use pallet_solve::SolveError;

/// One repository's packages, in configuration order (earlier wins ties). The records are
/// decoded as they are read (see [`pallet_index::compact`]), so a resolution reads the few
/// hundred records it reaches, not the thousands of an index.
#[derive(Clone, Debug)]
pub struct Repo {
    pub url: String,
    pub tag: Option<String>,
    pub packages: Records,
}

/// An index's records as the solver reads them.
struct Source<'a>(&'a Records);

impl pallet_solve::Source for Source<'_> {
    fn package_count(&self) -> usize {
        self.0.len()
    }

    fn package(&self, index: usize) -> &PackageInfo {
        &self.0[index]
    }

    fn providers(&self, name: &str) -> Vec<usize> {
        self.0.providers(name)
    }

    fn triggered_by(&self, name: &str) -> Vec<usize> {
        self.0.triggered_by(name)
    }
}

/// A chosen package: (repository index, package index).
pub type Pick = (usize, usize);

/// Resolve `world` over `repos`, returning packages in install order (dependencies first).
pub fn solve(repos: &[Repo], world: &[Dependency]) -> Result<Vec<Pick>, SolveError> {
    let sources: Vec<Source<'_>> = repos.iter().map(|r| Source(&r.packages)).collect();
    let input: Vec<pallet_solve::SourceRepo<'_>> = repos
        .iter()
        .zip(&sources)
        .map(|(r, s)| pallet_solve::SourceRepo {
            tag: r.tag.as_deref(),
            source: s,
        })
        .collect();
    let solution = pallet_solve::solve_sources(&input, world)?;
    Ok(solution
        .packages
        .iter()
        .map(|s| (s.repo, s.index))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pkg(name: &str, ver: &str, deps: &str) -> PackageInfo {
        PackageInfo {
            name: name.into(),
            version: ver.into(),
            depends: Dependency::parse_list(deps).unwrap(),
            ..Default::default()
        }
    }

    #[test]
    fn picks_point_into_the_repositories_in_install_order() {
        let repos = vec![
            Repo {
                url: "a".into(),
                tag: None,
                packages: vec![pkg("app", "1.0-r0", "lib")].into(),
            },
            Repo {
                url: "b".into(),
                tag: None,
                packages: vec![pkg("lib", "2-r0", "")].into(),
            },
        ];
        let picks = solve(&repos, &Dependency::parse_list("app").unwrap()).unwrap();
        assert_eq!(picks, [(1, 0), (0, 0)]);
        let err = solve(&repos, &Dependency::parse_list("nope").unwrap())
            .unwrap_err()
            .to_string();
        assert!(err.contains("nope (no such package)"), "{err}");
    }
}
