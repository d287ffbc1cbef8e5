//! Against real Alpine indexes from the shared fixtures.

use std::io::Read;
use std::path::PathBuf;

use pallet_apk_types::{Dependency, package::parse_index};
use pallet_solve::{Repository, solve};

fn shared() -> Option<PathBuf> {
    let p = std::env::var_os("PALLET_SHARED")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../../shared")));
    if p.is_dir() {
        Some(p)
    } else {
        eprintln!(
            "SKIPPED: shared fixtures not found at {} (set PALLET_SHARED)",
            p.display()
        );
        None
    }
}

fn load(path: &std::path::Path) -> Repository {
    let f = std::fs::File::open(path).unwrap();
    let mut ar = tar::Archive::new(flate2::read::MultiGzDecoder::new(f));
    for e in ar.entries().unwrap() {
        let mut e = e.unwrap();
        if e.path().unwrap().to_str() == Some("APKINDEX") {
            let mut s = String::new();
            e.read_to_string(&mut s).unwrap();
            return Repository {
                name: path.display().to_string(),
                tag: None,
                packages: parse_index(&s).unwrap(),
            };
        }
    }
    panic!("no APKINDEX in {}", path.display());
}

#[test]
fn alpine_base_resolves_to_apks_25_packages() {
    let Some(s) = shared() else { return };
    let repos = [load(&s.join("fixtures/alpine-3.19/x86_64/APKINDEX.tar.gz"))];
    let sol = solve(&repos, &Dependency::parse_list("alpine-base").unwrap()).unwrap();
    let mut got: Vec<String> = sol.infos(&repos).iter().map(|p| p.nv()).collect();
    got.sort();
    // What apk-tools 2.14 installs for `apk add alpine-base` on this index. Beyond the
    // direct deps: /bin/sh → busybox-binsh (k:100), ifupdown-any → ifupdown-ng (k:900),
    // so:libcrypto/libssl/libz → libcrypto3, libssl3, zlib; cmd:… provides resolve to their
    // versioned providers; no install_if package triggers.
    let want = [
        "alpine-base-3.19.1-r0",
        "alpine-baselayout-3.4.3-r2",
        "alpine-baselayout-data-3.4.3-r2",
        "alpine-conf-3.17.2-r0",
        "alpine-keys-2.4-r1",
        "alpine-release-3.19.1-r0",
        "apk-tools-2.14.0-r5",
        "busybox-1.36.1-r15",
        "busybox-binsh-1.36.1-r15",
        "busybox-mdev-openrc-1.36.1-r15",
        "busybox-openrc-1.36.1-r15",
        "busybox-suid-1.36.1-r15",
        "ca-certificates-bundle-20230506-r0",
        "ifupdown-ng-0.12.1-r4",
        "libc-utils-0.7.2-r5",
        "libcap2-2.69-r1",
        "libcrypto3-3.1.4-r5",
        "libssl3-3.1.4-r5",
        "mdev-conf-4.6-r0",
        "musl-1.2.4_git20230717-r4",
        "musl-utils-1.2.4_git20230717-r4",
        "openrc-0.52.1-r2",
        "scanelf-1.3.7-r2",
        "ssl_client-1.36.1-r15",
        "zlib-1.3.1-r0",
    ];
    assert_eq!(got, want);
    // Install order: every dependency before its dependent.
    let infos = sol.infos(&repos);
    for (i, p) in infos.iter().enumerate() {
        for d in p.depends.iter().filter(|d| !d.conflict) {
            let at = infos
                .iter()
                .position(|q| q.name == d.name || q.provides.iter().any(|pv| pv.name == d.name));
            let at = at.unwrap_or_else(|| panic!("{} needs {d}", p.nv()));
            // busybox ↔ busybox-binsh style cycles may put one side first.
            if at > i {
                let back = infos[at]
                    .depends
                    .iter()
                    .any(|dd| dd.name == p.name || p.provides.iter().any(|pv| pv.name == dd.name));
                assert!(
                    back,
                    "{} installed before its dependency {}",
                    p.nv(),
                    infos[at].nv()
                );
            }
        }
    }
}

#[test]
fn every_package_reports_the_vlan_ifupdown_ng_conflict() {
    let Some(s) = shared() else { return };
    let repos = [load(&s.join("fixtures/alpine-3.19/x86_64/APKINDEX.tar.gz"))];
    let mut names: Vec<String> = repos[0].packages.iter().map(|p| p.name.clone()).collect();
    names.sort();
    names.dedup();
    assert_eq!(names.len(), 100);
    let world: Vec<Dependency> = names.iter().map(Dependency::any).collect();
    let err = solve(&repos, &world).unwrap_err();
    let msg = err.to_string();
    eprintln!("{msg}");
    assert!(msg.starts_with("unable to select packages:\n"), "{msg}");
    assert!(
        format!("{msg}\n").contains(
            "  vlan-2.3-r1:\n    breaks: ifupdown-ng-0.12.1-r4[!vlan]\n    satisfies: world[vlan] network-extras-2.0-r0[vlan]\n"
        ),
        "{msg}"
    );
    let c = err.conflicts();
    assert!(
        c.iter()
            .any(|(p, with)| *p == "vlan-2.3-r1" && with.contains(&"ifupdown-ng-0.12.1-r4[!vlan]")),
        "{c:?}"
    );
}

#[test]
fn real_5000_record_indexes_resolve() {
    let Some(s) = shared() else { return };
    for (dir, worlds) in [
        (
            "alpine-316",
            ["alpine-base", "python3", "gcc", "alpine-base alpine-sdk"],
        ),
        ("alpine-317", ["alpine-base", "python3", "gcc", "busybox"]),
    ] {
        let p = s
            .join("fixtures/upstream-testdata/apko")
            .join(dir)
            .join("APKINDEX.tar.gz");
        if !p.exists() {
            eprintln!("SKIPPED: {} missing", p.display());
            continue;
        }
        let repos = [load(&p)];
        assert!(repos[0].packages.len() > 4000);
        for w in worlds {
            let t = std::time::Instant::now();
            let sol = solve(&repos, &Dependency::parse_list(w).unwrap())
                .unwrap_or_else(|e| panic!("{dir} {w}: {e}"));
            eprintln!(
                "{dir} {w}: {} packages in {:?}",
                sol.packages.len(),
                t.elapsed()
            );
            assert!(
                sol.infos(&repos)
                    .iter()
                    .any(|p| w.ends_with(p.name.as_str()))
            );
        }
    }
}
