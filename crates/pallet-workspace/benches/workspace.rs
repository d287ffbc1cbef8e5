//! The workspace build's figures, each as a ratio against a baseline run in the same process:
//!
//! - plan of 3,400 wolfi-shaped recipes, against reading and parsing the same YAML files once
//!   (the floor any planner pays);
//! - a no-op `pallet build` of 50 packages, against the plan of the same workspace (what is
//!   left is checking each node's key and outputs);
//! - a rebuild after one leaf recipe changes, against the cold build of all 50.
//!
//! It prints figures and asserts nothing about time. The build parts need bubblewrap (they
//! use bootstrap recipes, so no repository is needed) and print `SKIPPED:` without it.

use std::path::Path;
use std::time::{Duration, Instant};

use pallet_workspace::run::{self, Observer, Outcome};
use pallet_workspace::{Flags, RunOptions, Workspace};

struct Quiet;
impl Observer for Quiet {
    fn start(&self, _: &str, _: &str) {}
    fn finish(&self, label: &str, outcome: &Outcome, _: Duration) {
        if let Outcome::Failed { error, .. } = outcome {
            panic!("{label} failed: {error}");
        }
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn best<T>(n: usize, mut f: impl FnMut() -> T) -> (Duration, T) {
    let mut best = Duration::MAX;
    let mut last = None;
    for _ in 0..n {
        let t = Instant::now();
        let v = f();
        best = best.min(t.elapsed());
        last = Some(v);
    }
    (best, last.expect("ran"))
}

fn plan_bench() {
    let t = tempfile::tempdir().unwrap();
    let d = t.path();
    pallet_test_support::synthetic_workspace(d, 3400, 7);
    let ro = RunOptions {
        cache_dir: d.join(".cache"),
        ..Default::default()
    };
    let (floor, n) = best(3, || {
        let mut n = 0;
        for e in std::fs::read_dir(d).unwrap() {
            let p = e.unwrap().path();
            if p.extension().is_some_and(|x| x == "yaml") {
                let text = std::fs::read_to_string(&p).unwrap();
                let v: serde_json::Value = serde_saphyr::from_str(&text).unwrap();
                n += usize::from(v.is_object());
            }
        }
        n
    });
    let (plan, decisions) = best(3, || {
        let ws = Workspace::load(d, &Flags::default()).unwrap();
        run::plan(&ws, &ro).unwrap().len()
    });
    assert_eq!(decisions, n);
    println!(
        "plan, {n} recipes: {:.0} ms; reading and parsing them once: {:.0} ms; ratio {:.2}",
        ms(plan),
        ms(floor),
        plan.as_secs_f64() / floor.as_secs_f64()
    );
}

fn leaf_recipe(i: usize, needs: &[usize], text: &str) -> String {
    let env: String = needs.iter().map(|j| format!("      - p{j}\n")).collect();
    format!(
        "package:\n  name: p{i}\n  version: 1\n  epoch: 0\n  description: bench\n  copyright: [{{license: MIT}}]\nenvironment:\n  contents:\n    packages:\n{env}pipeline:\n  - runs: |\n      mkdir -p ${{{{targets.destdir}}}}/usr/share/p{i}\n      echo '{text}' > ${{{{targets.destdir}}}}/usr/share/p{i}/data\n"
    )
}

fn build_bench() {
    if std::process::Command::new("bwrap")
        .args(["--ro-bind", "/", "/", "true"])
        .status()
        .map_or(true, |s| !s.success())
    {
        println!("SKIPPED: bwrap is not usable: no build figures");
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let d = t.path();
    let n = 50;
    let mut settings = String::from("recipes:\n");
    for i in 0..n {
        // A tree: each package needs its parent, as libraries stack up.
        let needs: Vec<usize> = if i == 0 { vec![] } else { vec![(i - 1) / 2] };
        std::fs::write(d.join(format!("p{i}.yaml")), leaf_recipe(i, &needs, "one")).unwrap();
        settings.push_str(&format!("  p{i}: {{bootstrap: true}}\n"));
    }
    std::fs::write(d.join("pallet.yaml"), settings).unwrap();
    let ro = RunOptions {
        cache_dir: d.join(".cache"),
        apk_cache_dir: d.join(".cache"),
        source_date_epoch: 1_700_000_000,
        ..Default::default()
    };
    let load = |d: &Path| Workspace::load(d, &Flags::default()).unwrap();
    let t0 = Instant::now();
    let r = run::build(&load(d), &ro, &Quiet).unwrap();
    let cold = t0.elapsed();
    assert!(r.iter().all(|x| matches!(x.outcome, Outcome::Built { .. })));
    let (plan, _) = best(5, || run::plan(&load(d), &ro).unwrap().len());
    let (noop, r) = best(5, || run::build(&load(d), &ro, &Quiet).unwrap());
    assert!(r.iter().all(|x| x.outcome == Outcome::Cached));
    // One leaf (the last package: nothing needs it) changes.
    std::fs::write(
        d.join(format!("p{}.yaml", n - 1)),
        leaf_recipe(n - 1, &[(n - 2) / 2], "two"),
    )
    .unwrap();
    let t1 = Instant::now();
    let r = run::build(&load(d), &ro, &Quiet).unwrap();
    let leaf = t1.elapsed();
    let built = r
        .iter()
        .filter(|x| matches!(x.outcome, Outcome::Built { .. }))
        .count();
    assert_eq!(built, 1);
    println!(
        "no-op build, {n} packages: {:.1} ms (goal under 100 ms); plan of the same: {:.1} ms; ratio {:.2}",
        ms(noop),
        ms(plan),
        noop.as_secs_f64() / plan.as_secs_f64()
    );
    println!(
        "rebuild after one leaf changed: {:.0} ms; cold build of all {n}: {:.0} ms; ratio {:.3}",
        ms(leaf),
        ms(cold),
        leaf.as_secs_f64() / cold.as_secs_f64()
    );
}

fn main() {
    plan_bench();
    build_bench();
}
