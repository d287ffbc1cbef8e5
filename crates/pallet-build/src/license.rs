//! `melange license-check`: find the licence files of a source tree, identify the licences in
//! them, and compare with the configuration's `copyright` entries.
//!
//! Licence files are found by name as melange finds them (the patterns it took from Licensee,
//! weighted, top-level files first; a shallow scan reads the top folder and one level below,
//! skipping `vendor/`). Identification differs: melange uses Google's licenseclassifier and its
//! corpus of licence texts; pallet recognises the common licences (Apache-2.0, MIT, ISC, 0BSD,
//! BSD-2-Clause, BSD-3-Clause, GPL-2.0, GPL-3.0, LGPL-2.1, LGPL-3.0, AGPL-3.0, MPL-2.0, Zlib,
//! BSL-1.0, Unlicense, CC0-1.0) by the sentences their texts are made of. The confidence is
//! the share of those sentences found; 0.9 or more counts as a match, as in melange.

use std::path::{Path, PathBuf};

use regex::Regex;

use crate::compile::Copyright;

/// A licence found in a file.
#[derive(Clone, Debug, PartialEq)]
pub struct License {
    pub name: String,
    /// go-licenses' type: `notice`, `restricted`, `reciprocal`, `unencumbered`, `forbidden`,
    /// `unknown`.
    pub kind: &'static str,
    pub confidence: f64,
    /// The file, relative to the scanned folder.
    pub source: String,
}

/// A difference between what the files say and what the configuration says.
#[derive(Clone, Debug, PartialEq)]
pub struct LicenseDiff {
    pub path: String,
    /// The configuration's licence for that file (empty: none names it).
    pub is: String,
    /// The licence found.
    pub should: String,
    /// The configuration's `detection-override`.
    pub r#override: String,
    pub kind: &'static str,
}

/// One log line of the check, as melange logs it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Line {
    Info(String),
    Warn(String),
}

struct Known {
    name: &'static str,
    kind: &'static str,
    phrases: &'static [&'static str],
    /// Licences whose texts contain this one's sentences: when one of them matches, this one
    /// is not reported.
    superseded_by: &'static [&'static str],
}

const BSD_CLAUSES: [&str; 3] = [
    "redistribution and use in source and binary forms with or without modification are permitted provided that the following conditions are met",
    "redistributions of source code must retain the above copyright notice",
    "redistributions in binary form must reproduce the above copyright notice",
];

const KNOWN: &[Known] = &[
    Known {
        name: "Apache-2.0",
        kind: "notice",
        phrases: &[
            "apache license",
            "version 2 0",
            "terms and conditions for use reproduction and distribution",
            "grant of patent license",
            "you must give any other recipients of the work or derivative works a copy of this license",
        ],
        superseded_by: &[],
    },
    Known {
        name: "MIT",
        kind: "notice",
        phrases: &[
            "permission is hereby granted free of charge to any person obtaining a copy",
            "the above copyright notice and this permission notice shall be included in all copies or substantial portions of the software",
            "the software is provided as is without warranty of any kind",
        ],
        superseded_by: &[],
    },
    Known {
        name: "ISC",
        kind: "notice",
        phrases: &[
            "permission to use copy modify and or distribute this software for any purpose with or without fee is hereby granted",
            "provided that the above copyright notice and this permission notice appear in all copies",
            "the software is provided as is and the author disclaims all warranties",
        ],
        superseded_by: &[],
    },
    Known {
        name: "0BSD",
        kind: "unencumbered",
        phrases: &[
            "permission to use copy modify and or distribute this software for any purpose with or without fee is hereby granted",
            "the software is provided as is and the author disclaims all warranties",
        ],
        superseded_by: &["ISC"],
    },
    Known {
        name: "BSD-3-Clause",
        kind: "notice",
        phrases: &[
            BSD_CLAUSES[0],
            BSD_CLAUSES[1],
            BSD_CLAUSES[2],
            "neither the name of",
            "this software is provided by",
        ],
        superseded_by: &[],
    },
    Known {
        name: "BSD-2-Clause",
        kind: "notice",
        phrases: &[
            BSD_CLAUSES[0],
            BSD_CLAUSES[1],
            BSD_CLAUSES[2],
            "this software is provided by",
        ],
        superseded_by: &["BSD-3-Clause"],
    },
    Known {
        name: "GPL-2.0",
        kind: "restricted",
        phrases: &[
            "gnu general public license",
            "version 2 june 1991",
            "everyone is permitted to copy and distribute verbatim copies",
            "the licenses for most software are designed to take away your freedom to share and change it",
        ],
        superseded_by: &["LGPL-2.1"],
    },
    Known {
        name: "GPL-3.0",
        kind: "restricted",
        phrases: &[
            "gnu general public license",
            "version 3 29 june 2007",
            "the gnu general public license is a free copyleft license for software and other kinds of works",
        ],
        superseded_by: &[],
    },
    Known {
        name: "LGPL-2.1",
        kind: "restricted",
        phrases: &[
            "gnu lesser general public license",
            "version 2 1 february 1999",
            "everyone is permitted to copy and distribute verbatim copies",
        ],
        superseded_by: &[],
    },
    Known {
        name: "LGPL-3.0",
        kind: "restricted",
        phrases: &[
            "gnu lesser general public license",
            "version 3 29 june 2007",
            "incorporates the terms and conditions of version 3 of the gnu general public license",
        ],
        superseded_by: &[],
    },
    Known {
        name: "AGPL-3.0",
        kind: "forbidden",
        phrases: &[
            "gnu affero general public license",
            "version 3 19 november 2007",
            "the gnu affero general public license is a free copyleft license for software and other kinds of works",
        ],
        superseded_by: &[],
    },
    Known {
        name: "MPL-2.0",
        kind: "reciprocal",
        phrases: &[
            "mozilla public license version 2 0",
            "covered software",
            "larger work",
            "executable form",
        ],
        superseded_by: &[],
    },
    Known {
        name: "Zlib",
        kind: "notice",
        phrases: &[
            "this software is provided as is without any express or implied warranty",
            "altered source versions must be plainly marked as such",
            "this notice may not be removed or altered from any source distribution",
        ],
        superseded_by: &[],
    },
    Known {
        name: "BSL-1.0",
        kind: "notice",
        phrases: &[
            "boost software license version 1 0",
            "permission is hereby granted free of charge to any person or organization obtaining a copy",
        ],
        superseded_by: &[],
    },
    Known {
        name: "Unlicense",
        kind: "unencumbered",
        phrases: &[
            "this is free and unencumbered software released into the public domain",
            "anyone is free to copy modify publish use compile sell or distribute this software",
        ],
        superseded_by: &[],
    },
    Known {
        name: "CC0-1.0",
        kind: "unencumbered",
        phrases: &[
            "creative commons",
            "cc0 1 0 universal",
            "statement of purpose",
        ],
        superseded_by: &[],
    },
];

/// go-licenses' type of a licence name (`unknown` for names pallet does not know).
pub fn license_type(name: &str) -> &'static str {
    KNOWN
        .iter()
        .find(|k| k.name == name)
        .map(|k| k.kind)
        .unwrap_or("unknown")
}

fn normalize(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut space = true;
    for c in text.chars() {
        if c.is_alphanumeric() {
            out.extend(c.to_lowercase());
            space = false;
        } else if !space {
            out.push(' ');
            space = true;
        }
    }
    out.trim_end().to_string()
}

/// The licences whose texts `text` holds, with their confidence (most confident first).
pub fn identify(text: &str) -> Vec<(&'static str, f64)> {
    let t = normalize(text);
    let mut found: Vec<(&'static str, f64)> = KNOWN
        .iter()
        .map(|k| {
            let hits = k.phrases.iter().filter(|p| t.contains(*p)).count();
            (k.name, hits as f64 / k.phrases.len() as f64)
        })
        .filter(|(_, c)| *c >= 0.5)
        .collect();
    let confident: Vec<&str> = found
        .iter()
        .filter(|(_, c)| *c >= 0.9)
        .map(|(n, _)| *n)
        .collect();
    // A text that is one licence in full mentions others in passing (the GPL names the
    // LGPL): partial matches count only when nothing matched in full.
    found.retain(|(n, c)| {
        let k = KNOWN.iter().find(|k| k.name == *n).expect("known");
        !k.superseded_by.iter().any(|s| confident.contains(s))
            && (confident.is_empty() || *c >= 0.9)
    });
    found.sort_by(|a, b| b.1.total_cmp(&a.1));
    found
}

/// Whether the file name reads as a licence file, and how likely (melange's weights); `None`
/// when it does not. Unless `override_ignore`, files in virtualenvs, `node_modules` and Rust
/// source trees are not licence files of the project.
pub fn is_license_file(path: &str, override_ignore: bool) -> Option<f64> {
    let semver = Regex::new(r"-\d+\.\d+\.\d+-").expect("regex");
    let path = semver.replace_all(path, "-");
    if !override_ignore {
        const IGNORED: [&str; 6] = [
            ".virtualenv",
            "env",
            "node_modules",
            "rust-src",
            "rustc-src",
            "venv",
        ];
        if path.split('/').any(|c| IGNORED.contains(&c)) {
            return None;
        }
    }
    let name = path.rsplit('/').next().unwrap_or(&path);
    let ext = name.rfind('.').map(|i| &name[i..]).unwrap_or("");
    if [".xml", ".go", ".gemspec", ".spdx", ".header"].contains(&ext) {
        return None;
    }
    let lic = "(un)?licen[sc]e";
    let cop = "copy(ing|right)";
    let pref = r"\.(md|markdown|txt|html)";
    let any = r"(\.[^./]+)";
    let table: [(String, f64); 15] = [
        (format!("^{lic}$"), 1.00),
        (format!("^{lic}{pref}$"), 0.95),
        (format!("^{cop}$"), 0.90),
        (format!("^{cop}{pref}$"), 0.85),
        (format!("^{lic}{any}$"), 0.80),
        (format!("^{cop}{any}$"), 0.75),
        (format!("^{lic}[-_][^.]*{any}?$"), 0.70),
        (format!("^{cop}[-_][^.]*{any}?$"), 0.65),
        (format!(r"^\w+[-_]{lic}[^.]*{any}?$"), 0.60),
        (format!(r"^\w+[-_]{cop}[^.]*{any}?$"), 0.55),
        (format!("^ofl{pref}"), 0.50),
        (format!("^ofl{any}"), 0.45),
        ("^ofl$".to_string(), 0.40),
        ("^patents$".to_string(), 0.35),
        (format!("^patents{any}$"), 0.30),
    ];
    // The highest weight whose pattern matches (melange takes whichever its map yields first).
    table.iter().find_map(|(re, w)| {
        Regex::new(&format!("(?i){re}"))
            .expect("regex")
            .is_match(name)
            .then_some(*w)
    })
}

/// A licence file found in the tree.
#[derive(Clone, Debug, PartialEq)]
pub struct LicenseFile {
    pub path: String,
    pub weight: f64,
}

/// The licence files under `root`, most relevant first. A shallow scan reads the top folder and
/// the folders right below it, and skips `vendor` folders; `melange-out` is never read.
pub fn find_license_files(root: &Path, deep: bool) -> Vec<LicenseFile> {
    let mut out = vec![];
    let mut walk = walkdir::WalkDir::new(root).min_depth(1).sort_by_file_name();
    if !deep {
        walk = walk.max_depth(2);
    }
    for e in walk.into_iter().filter_map(Result::ok) {
        if !e.file_type().is_file() {
            continue;
        }
        let Ok(rel) = e.path().strip_prefix(root) else {
            continue;
        };
        let rel = rel.to_string_lossy().to_string();
        if !deep && rel.split('/').any(|c| c == "vendor") {
            continue;
        }
        if rel.contains("melange-out") {
            continue;
        }
        if let Some(mut w) = is_license_file(&rel, false) {
            if !rel.contains('/') {
                w += 0.5;
            }
            out.push(LicenseFile {
                path: rel,
                weight: w,
            });
        }
    }
    out.sort_by(|a, b| b.weight.total_cmp(&a.weight));
    out
}

/// The licences in the licence files of `root` (and in the configuration's `license-path`
/// files), one `NOASSERTION` entry for a file where none is recognised.
pub fn collect(root: &Path, deep: bool, copyright: Option<&[Copyright]>) -> Vec<License> {
    let mut files = find_license_files(root, deep);
    for c in copyright.unwrap_or_default() {
        if !c.license_path.is_empty() && !files.iter().any(|f| f.path == c.license_path) {
            files.push(LicenseFile {
                path: c.license_path.clone(),
                weight: 1.0,
            });
        }
    }
    let mut out = vec![];
    for f in files {
        let path: PathBuf = root.join(&f.path);
        let text = std::fs::read(&path)
            .map(|b| String::from_utf8_lossy(&b[..b.len().min(4 << 20)]).into_owned())
            .unwrap_or_default();
        let found = identify(&text);
        if found.is_empty() {
            out.push(License {
                name: "NOASSERTION".into(),
                kind: "unknown",
                confidence: 0.0,
                source: f.path.clone(),
            });
        }
        for (name, confidence) in found {
            out.push(License {
                name: name.into(),
                kind: license_type(name),
                confidence,
                source: f.path.clone(),
            });
        }
    }
    out
}

pub fn is_confident(l: &License) -> bool {
    l.confidence >= 0.9
}

/// The configuration's licences, `AND`/`OR` expressions split into their parts.
fn configured(copyright: &[Copyright]) -> Vec<(String, String, String)> {
    let split = Regex::new(r"\s+(AND|OR)\s+").expect("regex");
    let mut out = vec![];
    for c in copyright {
        if c.license.contains(" OR ") || c.license.contains(" AND ") {
            for part in split.split(&c.license) {
                out.push((
                    part.to_string(),
                    c.license_path.clone(),
                    c.detection_override.clone(),
                ));
            }
        } else {
            out.push((
                c.license.clone(),
                c.license_path.clone(),
                c.detection_override.clone(),
            ));
        }
    }
    out
}

/// melange's comparison: a confident licence found in a file the configuration names with a
/// different licence (and no matching `detection-override`) is a difference, and so is one no
/// configured licence matches.
pub fn differences(detected: &[License], copyright: &[Copyright]) -> Vec<LicenseDiff> {
    let mine = configured(copyright);
    let mut diffs = vec![];
    for dl in detected.iter().filter(|d| is_confident(d)) {
        let mut found = false;
        for (name, source, over) in &mine {
            if dl.source == *source {
                if dl.name == *name {
                    found = true;
                } else {
                    if over.is_empty() || *over != dl.name {
                        diffs.push(LicenseDiff {
                            path: dl.source.clone(),
                            is: name.clone(),
                            should: dl.name.clone(),
                            r#override: over.clone(),
                            kind: dl.kind,
                        });
                    }
                    found = true;
                    break;
                }
            } else if source.is_empty() && dl.name == *name {
                found = true;
            }
        }
        if !found {
            diffs.push(LicenseDiff {
                path: dl.source.clone(),
                is: String::new(),
                should: dl.name.clone(),
                r#override: String::new(),
                kind: dl.kind,
            });
        }
    }
    diffs
}

/// The result of a check.
#[derive(Clone, Debug, Default)]
pub struct Report {
    pub detected: Vec<License>,
    pub diffs: Vec<LicenseDiff>,
    pub lines: Vec<Line>,
}

/// `melange license-check`: what `root` holds against `copyright` (`None` when there is no
/// configuration, only a folder), with melange's log lines.
pub fn check(root: &Path, copyright: Option<&[Copyright]>, deep: bool) -> Report {
    let mut r = Report::default();
    let info = |r: &mut Report, s: String| r.lines.push(Line::Info(s));
    let warn = |r: &mut Report, s: String| r.lines.push(Line::Warn(s));
    info(&mut r, "checking license information".into());
    let detected = collect(root, deep, copyright);
    if detected.is_empty() {
        info(&mut r, "no license files detected".into());
        return r;
    }
    let mut low = vec![];
    for dl in &detected {
        let s = if is_confident(dl) {
            ""
        } else {
            low.push(dl.clone());
            " low-confidence"
        };
        info(
            &mut r,
            format!(
                "  {}: {} ({:.6}{s}) ({})",
                dl.source, dl.name, dl.confidence, dl.kind
            ),
        );
    }
    if let Some(c) = copyright {
        info(
            &mut r,
            "checking gathered license information against the configuration".into(),
        );
        let diffs = differences(&detected, c);
        if diffs.is_empty() {
            warn(&mut r, "no license differences detected".into());
        } else {
            warn(&mut r, "detected license differences:".into());
            for d in &diffs {
                if d.is.is_empty() {
                    warn(&mut r, format!("  {}: {} not found", d.path, d.should));
                } else if !d.r#override.is_empty() {
                    warn(
                        &mut r,
                        format!(
                            "  {}: requested override from {} to {}, but now detecting as {}",
                            d.path, d.r#override, d.is, d.should
                        ),
                    );
                } else {
                    warn(&mut r, format!("  {}: {} != {}", d.path, d.should, d.is));
                }
                if d.kind != "unencumbered" && d.kind != "notice" {
                    warn(
                        &mut r,
                        format!(
                            "  NOTE! {}: {} might be a restrictive license, please proceed with caution",
                            d.path, d.should
                        ),
                    );
                }
            }
            warn(
                &mut r,
                "detected license differences, please check the configuration".into(),
            );
        }
        r.diffs = diffs;
    }
    if !low.is_empty() {
        warn(
            &mut r,
            "following license files could not be confidently assessed:".into(),
        );
        for dl in &low {
            warn(
                &mut r,
                format!(
                    "  {}: {} ({:.6}) ({})",
                    dl.source, dl.name, dl.confidence, dl.kind
                ),
            );
        }
        warn(
            &mut r,
            "could not identify some licenses, please check the configuration".into(),
        );
    }
    info(&mut r, "license information check complete".into());
    r.detected = detected;
    r
}

/// `license-check --fix`: the configuration's `copyright:` list rewritten from the confident
/// licences found, in place in `text` (the rest of the file as written). `simple` writes one
/// entry with every licence joined by `AND`; `flat` one entry per licence file. `None` when
/// there is nothing to change.
pub fn fix_text(text: &str, report: &Report, simple: bool) -> Option<String> {
    let confident: Vec<&License> = report.detected.iter().filter(|l| is_confident(l)).collect();
    if confident.is_empty() || report.diffs.is_empty() {
        return None;
    }
    let doc = crate::yamledit::outline(text);
    let pkg = doc.get("package")?;
    let q = |s: &str| crate::yamledit::requote(s, "");
    let mut items = vec![];
    if simple {
        let mut names: Vec<&str> = confident.iter().map(|l| l.name.as_str()).collect();
        names.sort();
        names.dedup();
        items.push(vec![("license", names.join(" AND "))]);
    } else {
        for l in &confident {
            items.push(vec![
                ("license", l.name.clone()),
                ("license-path", l.source.clone()),
            ]);
        }
    }
    let mut edits = crate::yamledit::Edits::default();
    match pkg.entry("copyright") {
        Some(e) => {
            let ind = " ".repeat(e.indent);
            let mut block = format!("{ind}copyright:\n");
            for it in &items {
                for (i, (k, v)) in it.iter().enumerate() {
                    let lead = if i == 0 { "  - " } else { "    " };
                    block.push_str(&format!("{ind}{lead}{k}: {}\n", q(v)));
                }
            }
            edits.replace(e.lines.clone(), block);
        }
        None => {
            let last = match &pkg.kind {
                crate::yamledit::Kind::Map(es) => es.last()?,
                _ => return None,
            };
            let ind = " ".repeat(last.indent);
            let mut block = format!("{ind}copyright:\n");
            for it in &items {
                for (i, (k, v)) in it.iter().enumerate() {
                    let lead = if i == 0 { "  - " } else { "    " };
                    block.push_str(&format!("{ind}{lead}{k}: {}\n", q(v)));
                }
            }
            edits.insert(last.lines.end, block);
        }
    }
    Some(edits.apply(text))
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIT: &str = "MIT License\n\nCopyright (c) 2024 Someone\n\nPermission is hereby granted, free of charge, to any person obtaining a copy\nof this software and associated documentation files (the \"Software\"), to deal\nin the Software without restriction.\n\nThe above copyright notice and this permission notice shall be included in all\ncopies or substantial portions of the Software.\n\nTHE SOFTWARE IS PROVIDED \"AS IS\", WITHOUT WARRANTY OF ANY KIND, EXPRESS OR\nIMPLIED.\n";

    #[test]
    fn names_and_texts() {
        assert_eq!(is_license_file("LICENSE", false), Some(1.0));
        assert_eq!(is_license_file("COPYING.md", false), Some(0.85));
        assert_eq!(is_license_file("LICENSE-MIT", false), Some(0.7));
        assert_eq!(is_license_file("node_modules/x/LICENSE", false), None);
        assert_eq!(is_license_file("license.go", false), None);
        assert_eq!(is_license_file("README", false), None);
        assert_eq!(identify(MIT), vec![("MIT", 1.0)]);
        assert!(identify("nothing here").is_empty());
        let bsd3 = format!(
            "{}. {}. {}. Neither the name of X. THIS SOFTWARE IS PROVIDED BY X",
            BSD_CLAUSES[0], BSD_CLAUSES[1], BSD_CLAUSES[2]
        );
        assert_eq!(identify(&bsd3)[0], ("BSD-3-Clause", 1.0));
        assert!(!identify(&bsd3).iter().any(|(n, _)| *n == "BSD-2-Clause"));
        // Half the sentences of a licence: reported, but not confidently.
        assert_eq!(
            identify(
                "Everyone is permitted to copy and distribute verbatim copies. GNU Lesser General Public License"
            ),
            vec![("LGPL-2.1", 2.0 / 3.0)]
        );
    }

    #[test]
    fn differences_as_melange() {
        let found = vec![License {
            name: "MIT".into(),
            kind: "notice",
            confidence: 1.0,
            source: "LICENSE".into(),
        }];
        let c = |l: &str, p: &str| Copyright {
            license: l.into(),
            license_path: p.into(),
            ..Default::default()
        };
        assert!(differences(&found, &[c("MIT", "")]).is_empty());
        assert!(differences(&found, &[c("Apache-2.0 OR MIT", "")]).is_empty());
        let d = differences(&found, &[c("Apache-2.0", "LICENSE")]);
        assert_eq!(d[0].is, "Apache-2.0");
        assert_eq!(d[0].should, "MIT");
        let d = differences(&found, &[c("Apache-2.0", "")]);
        assert_eq!(d[0].is, "");
    }
}
