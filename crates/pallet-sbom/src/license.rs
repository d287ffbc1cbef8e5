//! Package licence strings to SPDX licence expressions.
//!
//! APK `L:` fields are free text. Most are SPDX expressions, some use Alpine's lowercase
//! `and`/`or`, and some hold words that are no licence id at all (`custom`, `BSD`,
//! `Public-Domain`). Every term that is not a known id becomes a `LicenseRef-…` with an
//! extracted-licensing entry, so the whole expression stays valid for SPDX validators.

/// One licence that had to be written as a `LicenseRef-`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct ExtractedLicense {
    /// `LicenseRef-…`.
    pub id: String,
    /// The term as the package wrote it.
    pub text: String,
}

/// A licence string made valid.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NormalizedLicense {
    /// A valid SPDX expression, or `NOASSERTION` for an empty input.
    pub expression: String,
    /// `LicenseRef-`s the expression uses, to list in `hasExtractedLicensingInfos`.
    pub extracted: Vec<ExtractedLicense>,
    /// True when the input was already a valid expression and passes through unchanged.
    pub unchanged: bool,
}

/// The characters SPDX allows in an id string (`[A-Za-z0-9.-]`); anything else becomes `-`.
pub fn sanitize_idstring(s: &str) -> String {
    let out: String = s
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' || c == '-' {
                c
            } else {
                '-'
            }
        })
        .collect();
    if out.is_empty() {
        "unknown".to_string()
    } else {
        out
    }
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Open,
    Close,
    And,
    Or,
    With,
    Term(String),
}

fn tokenize(s: &str) -> Vec<Tok> {
    let mut out = Vec::new();
    let spaced = s.replace('(', " ( ").replace(')', " ) ");
    for w in spaced.split_whitespace() {
        out.push(match w {
            "(" => Tok::Open,
            ")" => Tok::Close,
            // Alpine writes lowercase operators; SPDX requires upper case.
            w if w.eq_ignore_ascii_case("and") => Tok::And,
            w if w.eq_ignore_ascii_case("or") => Tok::Or,
            w if w.eq_ignore_ascii_case("with") => Tok::With,
            w => Tok::Term(w.to_string()),
        });
    }
    out
}

fn known_license(term: &str) -> bool {
    if term.starts_with("LicenseRef-") {
        return term.len() > "LicenseRef-".len() && sanitize_idstring(term) == term;
    }
    let base = term.strip_suffix('+').unwrap_or(term);
    // `+` means "or a later version": after an id that already ends in `-or-later` SPDX
    // parsers refuse it, so such a term is not a known id (found by fuzzing:
    // `GPL-3.0-or-later+` passed through and left the expression invalid).
    if base.len() < term.len() && base.ends_with("-or-later") {
        return false;
    }
    spdx::license_id(base).is_some_and(|id| id.name == base)
}

fn known_exception(term: &str) -> bool {
    spdx::exception_id(term).is_some_and(|id| id.name == term)
}

/// Check the grammar: `term (WITH exc)? ((AND|OR) …)*` with balanced parentheses.
fn well_formed(toks: &[Tok]) -> bool {
    let mut depth = 0i32;
    let mut expect_operand = true;
    let mut i = 0;
    while i < toks.len() {
        match &toks[i] {
            Tok::Open if expect_operand => depth += 1,
            Tok::Close if !expect_operand => {
                depth -= 1;
                if depth < 0 {
                    return false;
                }
            }
            Tok::Term(_) if expect_operand => {
                expect_operand = false;
                if matches!(toks.get(i + 1), Some(Tok::With)) {
                    if !matches!(toks.get(i + 2), Some(Tok::Term(_))) {
                        return false;
                    }
                    i += 2;
                }
            }
            Tok::And | Tok::Or if !expect_operand => expect_operand = true,
            _ => return false,
        }
        i += 1;
    }
    depth == 0 && !expect_operand
}

fn render(toks: &[Tok]) -> String {
    let mut s = String::new();
    for (i, t) in toks.iter().enumerate() {
        let prev_open = i > 0 && toks[i - 1] == Tok::Open;
        if i > 0 && *t != Tok::Close && !prev_open {
            s.push(' ');
        }
        match t {
            Tok::Open => s.push('('),
            Tok::Close => s.push(')'),
            Tok::And => s.push_str("AND"),
            Tok::Or => s.push_str("OR"),
            Tok::With => s.push_str("WITH"),
            Tok::Term(x) => s.push_str(x),
        }
    }
    s
}

fn license_ref(text: &str) -> ExtractedLicense {
    ExtractedLicense {
        id: format!("LicenseRef-{}", sanitize_idstring(text)),
        text: text.to_string(),
    }
}

/// Turn an APK licence field into a valid SPDX expression.
pub fn normalize(raw: &str) -> NormalizedLicense {
    let raw = raw.trim();
    if raw.is_empty() || raw == "NOASSERTION" || raw == "NONE" {
        return NormalizedLicense {
            expression: if raw == "NONE" { "NONE" } else { "NOASSERTION" }.to_string(),
            extracted: Vec::new(),
            unchanged: !raw.is_empty(),
        };
    }
    let mut toks = tokenize(raw);
    if !well_formed(&toks) {
        // Not an expression at all (`GPL v2 or later`): the whole string is one licence.
        let e = license_ref(raw);
        return NormalizedLicense {
            expression: e.id.clone(),
            extracted: vec![e],
            unchanged: false,
        };
    }
    let mut extracted = Vec::new();
    let mut after_with = false;
    for t in &mut toks {
        match t {
            Tok::With => after_with = true,
            Tok::Term(term) => {
                let ok = if after_with {
                    known_exception(term)
                } else {
                    known_license(term)
                };
                if !ok {
                    // An unknown exception cannot be a LicenseRef in SPDX 2.3 (that needs
                    // AdditionRef, from 3.0), so it is folded into a LicenseRef of its own
                    // below by rejecting the WITH form.
                    if after_with {
                        let e = license_ref(raw);
                        return NormalizedLicense {
                            expression: e.id.clone(),
                            extracted: vec![e],
                            unchanged: false,
                        };
                    }
                    let e = license_ref(term);
                    *term = e.id.clone();
                    if !extracted.contains(&e) {
                        extracted.push(e);
                    }
                }
                after_with = false;
            }
            _ => {}
        }
    }
    let expression = render(&toks);
    let unchanged = expression == raw;
    extracted.sort();
    NormalizedLicense {
        expression,
        extracted,
        unchanged,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn valid_passes_through() {
        for s in [
            "MIT",
            "GPL-2.0-only AND MIT",
            "(MIT OR Apache-2.0) AND BSD-3-Clause",
            "GPL-2.0-or-later WITH Classpath-exception-2.0",
            "GPL-2.0+",
        ] {
            let n = normalize(s);
            assert_eq!(n.expression, s);
            assert!(n.unchanged && n.extracted.is_empty(), "{s}");
        }
    }

    #[test]
    fn plus_after_or_later_is_a_license_ref() {
        // Found by fuzzing (fuzz/fuzz_targets/sbom_fields.rs).
        let n = normalize("GPL-2.0-or-later AND GPL-3.0-or-later+");
        assert_eq!(
            n.expression,
            "GPL-2.0-or-later AND LicenseRef-GPL-3.0-or-later-"
        );
        assert_eq!(n.extracted[0].text, "GPL-3.0-or-later+");
        assert_eq!(normalize("GPL-2.0+").expression, "GPL-2.0+");
    }

    #[test]
    fn lowercase_operators() {
        let n = normalize("MIT and BSD-2-Clause or Zlib");
        assert_eq!(n.expression, "MIT AND BSD-2-Clause OR Zlib");
        assert!(n.extracted.is_empty());
    }

    #[test]
    fn unknown_terms_become_refs() {
        let n = normalize("MIT and BSD");
        assert_eq!(n.expression, "MIT AND LicenseRef-BSD");
        assert_eq!(n.extracted[0].text, "BSD");
        let n = normalize("custom");
        assert_eq!(n.expression, "LicenseRef-custom");
        let n = normalize("custom:multiple");
        assert_eq!(n.expression, "LicenseRef-custom-multiple");
        let n = normalize("GPL v2 or (later");
        assert_eq!(n.expression, "LicenseRef-GPL-v2-or--later");
        assert_eq!(normalize("").expression, "NOASSERTION");
        let n = normalize("GPL-2.0-only WITH Funny-exception");
        assert!(n.expression.starts_with("LicenseRef-"));
    }
}

#[cfg(test)]
mod proptests {
    use super::*;

    /// The spec grammar with deprecated ids allowed (SPDX validators accept them) and
    /// nothing else relaxed.
    const SPEC: spdx::ParseMode = spdx::ParseMode {
        allow_slash_as_or_operator: false,
        allow_imprecise_license_names: false,
        allow_postfix_plus_on_gpl: true,
        allow_deprecated: true,
        allow_unknown: false,
    };

    proptest::proptest! {
        #[test]
        fn output_is_always_a_valid_expression(
            s in "(MIT|GPL-2.0-only|custom|BSD|and|or|AND|OR|WITH|Classpath-exception-2.0|\\(|\\)| |[a-z+_:]{1,6}){0,8}"
        ) {
            let n = normalize(&s);
            if n.expression != "NOASSERTION" && n.expression != "NONE" {
                proptest::prop_assert!(
                    spdx::Expression::parse_mode(&n.expression, SPEC).is_ok(),
                    "{s:?} -> {:?}", n.expression
                );
                for e in &n.extracted {
                    proptest::prop_assert!(n.expression.contains(&e.id));
                }
            }
        }
    }
}
