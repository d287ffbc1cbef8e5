//! melange's lint rules: those that read a package's files (run during every build, where a
//! failing *required* rule fails the build and the others warn), and those that need only the
//! configuration (`pallet pkg lint FILE.yaml`).

use std::collections::BTreeMap;

use crate::compile::Configuration;

/// How much a rule matters.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Require,
    Warn,
    Ignore,
}

/// One finding.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Finding {
    pub rule: &'static str,
    pub severity: Severity,
    pub package: String,
    pub message: String,
}

/// What a package rule sees of one file.
#[derive(Clone, Debug)]
pub struct Entry {
    pub path: String,
    pub is_dir: bool,
    pub is_symlink: bool,
    pub mode: u32,
    pub size: u64,
}

/// The package rules: (name, default severity).
pub const PACKAGE_RULES: &[(&str, Severity)] = &[
    ("dev", Severity::Require),
    ("infodir", Severity::Require),
    ("libtool/la-files", Severity::Require),
    ("setuidgid", Severity::Require),
    ("tempdir", Severity::Require),
    ("usrmerge", Severity::Require),
    ("varempty", Severity::Require),
    ("worldwrite", Severity::Require),
    ("dll", Severity::Warn),
    ("dylib", Severity::Warn),
    ("maninfo", Severity::Warn),
    ("object", Severity::Warn),
    ("opt", Severity::Warn),
    ("sbom", Severity::Warn),
    ("srv", Severity::Warn),
    ("staticarchive", Severity::Warn),
    ("usrlocal", Severity::Warn),
    ("cudaruntimelib", Severity::Warn),
    ("nonlinux", Severity::Warn),
    ("python/docs", Severity::Warn),
    ("python/test", Severity::Warn),
    ("empty", Severity::Ignore),
    ("documentation", Severity::Ignore),
];

fn under(path: &str, dir: &str) -> bool {
    path.strip_prefix(dir).is_some_and(|r| r.starts_with('/'))
}

/// Run the package rules on a package's files. `disabled` (from `checks.disabled`) turns a
/// required rule into a warning; `enabled` runs ignored rules too.
pub fn lint_package(
    pkg: &str,
    files: &[Entry],
    disabled: &[String],
    enabled: &[String],
) -> Vec<Finding> {
    let mut out = vec![];
    let is = |s: &str| pkg.ends_with(s);
    let compat = is("-compat");
    let dev = is("-dev");
    for (rule, default) in PACKAGE_RULES {
        // A disabled required rule, or an ignored rule asked for by name, reports as a warning.
        let downgraded = *default == Severity::Require && disabled.iter().any(|d| d == rule);
        let asked_for = *default == Severity::Ignore && enabled.iter().any(|e| e == rule);
        let severity = if downgraded || asked_for {
            Severity::Warn
        } else {
            *default
        };
        if severity == Severity::Ignore {
            continue;
        }
        let mut hits: Vec<&str> = vec![];
        for f in files {
            let p = f.path.as_str();
            let file = !f.is_dir;
            let regular = file && !f.is_symlink;
            let hit = match *rule {
                "dev" => file && under(p, "dev"),
                "infodir" => under(p, "usr/share/info/dir") || (file && p == "usr/share/info/dir"),
                "libtool/la-files" => regular && p.ends_with(".la"),
                "setuidgid" => regular && f.mode & 0o7000 != 0,
                "tempdir" => {
                    (file && (under(p, "tmp") || under(p, "var/tmp") || under(p, "run")))
                        || under(p, "var/run")
                }
                "usrmerge" => ["bin", "sbin", "lib", "lib64", "usr/sbin"]
                    .iter()
                    .any(|d| under(p, d) || (p == *d && f.is_dir)),
                "varempty" => file && under(p, "var/empty"),
                "worldwrite" => regular && f.mode & 0o002 != 0,
                "dll" => !dev && regular && p.ends_with(".dll"),
                "dylib" => !dev && regular && p.ends_with(".dylib"),
                "maninfo" => {
                    !is("-doc") && file && (under(p, "usr/share/man") || under(p, "usr/share/info"))
                }
                "object" => regular && p.ends_with(".o"),
                "opt" => !compat && under(p, "opt"),
                "sbom" => file && under(p, "var/lib/db/sbom") && !p.ends_with(".spdx.json"),
                "srv" => !compat && under(p, "srv"),
                "staticarchive" => !dev && !is("-static") && regular && p.ends_with(".a"),
                "usrlocal" => !compat && under(p, "usr/local"),
                "cudaruntimelib" => {
                    let base = p.rsplit('/').next().unwrap_or(p);
                    under(p, "usr/lib")
                        && (base.starts_with("libcuda.so") || base.starts_with("libnvidia-ml.so"))
                }
                "nonlinux" => {
                    let l = p.to_ascii_lowercase();
                    ["darwin", "macos", "osx", "windows", "win32", "win64"]
                        .iter()
                        .any(|w| l.split(['/', '-', '_', '.']).any(|c| c == *w))
                }
                "python/docs" => {
                    p.contains("/site-packages/")
                        && p.split('/').any(|c| c == "doc" || c == "docs")
                        && p.starts_with("usr/lib/python3")
                }
                "python/test" => {
                    p.contains("/site-packages/")
                        && p.split('/').any(|c| c == "test" || c == "tests")
                        && p.starts_with("usr/lib/python3")
                }
                "documentation" => {
                    !is("-doc") && file && {
                        let b = p.rsplit('/').next().unwrap_or(p).to_ascii_uppercase();
                        b.starts_with("README")
                            || b.starts_with("TODO")
                            || b.starts_with("CREDITS")
                            || b.ends_with(".MD")
                            || b.ends_with(".RST")
                    }
                }
                _ => false,
            };
            if hit {
                hits.push(p);
            }
        }
        if *rule == "empty"
            && !files
                .iter()
                .any(|f| !f.is_dir && !under(&f.path, "var/lib/db/sbom"))
        {
            hits.push("(no files)");
        }
        if !hits.is_empty() {
            let shown: Vec<&str> = hits.iter().take(5).copied().collect();
            out.push(Finding {
                rule,
                severity,
                package: pkg.to_string(),
                message: format!(
                    "{}{}",
                    shown.join(", "),
                    if hits.len() > 5 {
                        format!(" and {} more", hits.len() - 5)
                    } else {
                        String::new()
                    }
                ),
            });
        }
    }
    out
}

/// The files of a staged tree, for [`lint_package`].
pub fn entries_of(root: &std::path::Path) -> std::io::Result<Vec<Entry>> {
    use std::os::unix::fs::PermissionsExt;
    let mut out = vec![];
    for e in walkdir::WalkDir::new(root).min_depth(1).sort_by_file_name() {
        let e = e.map_err(std::io::Error::other)?;
        let md = e.path().symlink_metadata()?;
        out.push(Entry {
            path: e
                .path()
                .strip_prefix(root)
                .expect("under root")
                .to_string_lossy()
                .into_owned(),
            is_dir: md.is_dir(),
            is_symlink: md.file_type().is_symlink(),
            mode: md.permissions().mode() & 0o7777,
            size: md.len(),
        });
    }
    Ok(out)
}

/// Rules that need only the configuration.
pub fn lint_config(cfg: &Configuration) -> Vec<Finding> {
    let mut out = vec![];
    let pkg = cfg.package.name.clone();
    let mut push = |rule: &'static str, severity, message: String| {
        out.push(Finding {
            rule,
            severity,
            package: pkg.clone(),
            message,
        })
    };
    if !pallet_apk_types::version::is_valid(&format!(
        "{}-r{}",
        cfg.package.version, cfg.package.epoch
    )) {
        push(
            "valid-version",
            Severity::Require,
            format!("'{}' is not a valid APK version", cfg.package.version),
        );
    }
    if cfg.package.copyright.is_empty()
        || cfg
            .package
            .copyright
            .iter()
            .any(|c| c.license.trim().is_empty())
    {
        push(
            "valid-copyright",
            Severity::Warn,
            "every package needs copyright entries with a license".into(),
        );
    }
    if cfg.package.description.trim().is_empty() {
        push(
            "package-description",
            Severity::Warn,
            "package.description is empty".into(),
        );
    }
    let mut seen: BTreeMap<&str, usize> = BTreeMap::new();
    for p in &cfg.environment.contents.packages {
        *seen.entry(p.as_str()).or_default() += 1;
    }
    for (p, n) in seen.iter().filter(|(_, n)| **n > 1) {
        push(
            "duplicated-package-in-environment",
            Severity::Warn,
            format!("{p} is listed {n} times"),
        );
    }
    for (name, list) in [
        ("runtime", &cfg.package.dependencies.runtime),
        ("provides", &cfg.package.dependencies.provides),
    ] {
        let mut s = list.clone();
        s.sort();
        let before = s.len();
        s.dedup();
        if s.len() != before {
            push(
                "no-repeated-deps",
                Severity::Warn,
                format!("dependencies.{name} repeats an entry"),
            );
        }
    }
    let visit = |steps: &[crate::compile::Pipeline], out: &mut Vec<(String, String)>| {
        fn walk(steps: &[crate::compile::Pipeline], out: &mut Vec<(String, String)>) {
            for s in steps {
                if let Some(u) = &s.uses {
                    match u.as_str() {
                        "fetch" => {
                            let uri = s.with.get("uri").cloned().unwrap_or_default();
                            if !uri.starts_with("https://") && !uri.contains("${{") {
                                out.push((
                                    "valid-pipeline-fetch-uri".into(),
                                    format!("fetch uri '{uri}' is not https"),
                                ));
                            }
                            if !s.with.contains_key("expected-sha256")
                                && !s.with.contains_key("expected-sha512")
                            {
                                out.push((
                                    "valid-pipeline-fetch-digest".into(),
                                    "fetch without expected-sha256 or expected-sha512".into(),
                                ));
                            }
                        }
                        "git-checkout" if !s.with.contains_key("expected-commit") => {
                            out.push((
                                "valid-pipeline-git-checkout-commit".into(),
                                "git-checkout without expected-commit".into(),
                            ));
                        }
                        _ => {}
                    }
                }
                walk(&s.pipeline, out);
            }
        }
        walk(steps, out);
    };
    let mut found = vec![];
    visit(&cfg.pipeline, &mut found);
    for sp in &cfg.subpackages {
        visit(&sp.pipeline, &mut found);
    }
    for (rule, msg) in found {
        let rule: &'static str = match rule.as_str() {
            "valid-pipeline-fetch-uri" => "valid-pipeline-fetch-uri",
            "valid-pipeline-fetch-digest" => "valid-pipeline-fetch-digest",
            _ => "valid-pipeline-git-checkout-commit",
        };
        push(rule, Severity::Warn, msg);
    }
    if let Some(u) = &cfg.update
        && !u.enabled
        && u.exclude_reason.as_deref().is_none_or(str::is_empty)
    {
        push(
            "update-disabled-reason",
            Severity::Warn,
            "update is disabled without an exclude-reason".into(),
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn e(path: &str, mode: u32) -> Entry {
        Entry {
            path: path.into(),
            is_dir: false,
            is_symlink: false,
            mode,
            size: 1,
        }
    }

    #[test]
    fn required_and_warn_rules() {
        let files = vec![
            e("usr/lib/libx.la", 0o644),
            e("usr/bin/su", 0o4755),
            e("tmp/x", 0o644),
            e("usr/lib/x.a", 0o644),
            e("usr/share/man/man1/x.1", 0o644),
        ];
        let f = lint_package("x", &files, &[], &[]);
        let rules: Vec<(&str, Severity)> = f.iter().map(|x| (x.rule, x.severity)).collect();
        assert!(rules.contains(&("libtool/la-files", Severity::Require)));
        assert!(rules.contains(&("setuidgid", Severity::Require)));
        assert!(rules.contains(&("tempdir", Severity::Require)));
        assert!(rules.contains(&("staticarchive", Severity::Warn)));
        assert!(rules.contains(&("maninfo", Severity::Warn)));
        let f = lint_package("x", &files, &["setuidgid".into()], &[]);
        assert!(
            f.iter()
                .any(|x| x.rule == "setuidgid" && x.severity == Severity::Warn)
        );
        assert!(lint_package("x-dev", &[e("usr/lib/x.a", 0o644)], &[], &[]).is_empty());
    }
}
