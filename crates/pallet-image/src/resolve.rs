//! The image build's view of the resolver: repositories as the build reads them (with their
//! URLs), handed to `pallet-solve` (apk-tools 2.14 semantics), picks back as indices.

use pallet_apk_types::{Dependency, PackageInfo};

pub use pallet_solve::SolveError;

/// One repository's packages, in configuration order (earlier wins ties).
#[derive(Clone, Debug)]
pub struct Repo {
    pub url: String,
    pub tag: Option<String>,
    pub packages: Vec<PackageInfo>,
}

/// A chosen package: (repository index, package index).
pub type Pick = (usize, usize);

/// Resolve `world` over `repos`, returning packages in install order (dependencies first).
pub fn solve(repos: &[Repo], world: &[Dependency]) -> Result<Vec<Pick>, SolveError> {
    let input: Vec<pallet_solve::Repository> = repos
        .iter()
        .map(|r| pallet_solve::Repository {
            name: r.url.clone(),
            tag: r.tag.clone(),
            packages: r.packages.clone(),
        })
        .collect();
    let solution = pallet_solve::solve(&input, world)?;
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
                packages: vec![pkg("app", "1.0-r0", "lib")],
            },
            Repo {
                url: "b".into(),
                tag: None,
                packages: vec![pkg("lib", "2-r0", "")],
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
