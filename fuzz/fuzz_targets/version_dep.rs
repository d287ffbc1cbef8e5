//! Versions and dependency atoms (pallet-apk-types `version` and `dep`): the comparison must be
//! an order (sorting indexes relies on it), and an atom prints back to itself.
#![no_main]

use std::cmp::Ordering;

use libfuzzer_sys::fuzz_target;
use pallet_apk_types::Dependency;
use pallet_apk_types::version::{self, EQUAL, GREATER, LESS, compare, compare_bits};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    // One version or atom per line.
    let lines: Vec<&str> = text.lines().take(64).collect();
    for l in &lines {
        let _ = version::is_valid(l);
        assert_eq!(
            compare(l, l),
            Ordering::Equal,
            "{l:?} is not equal to itself"
        );
        for strict in [true, false] {
            let parsed = if strict {
                Dependency::parse(l)
            } else {
                Dependency::parse_lenient(l)
            };
            if let Ok(d) = parsed {
                let printed = d.to_string();
                let back = if strict {
                    Dependency::parse(&printed)
                } else {
                    Dependency::parse_lenient(&printed)
                };
                assert_eq!(back.as_ref(), Ok(&d), "{l:?} printed as {printed:?}");
                for v in &lines {
                    let _ = d.version_matches(Some(v));
                }
            }
        }
    }
    let _ = Dependency::parse_list_lenient(text);
    for a in &lines {
        for b in &lines {
            let ab = compare(a, b);
            assert_eq!(
                ab,
                compare(b, a).reverse(),
                "{a:?} vs {b:?} is not antisymmetric"
            );
            for fuzzy in [false, true] {
                let bits = compare_bits(a, b, fuzzy);
                assert!([EQUAL, LESS, GREATER].contains(&bits), "{bits}");
            }
        }
    }
    // Transitivity over the first few valid versions (apk orders invalid ones by their valid
    // prefix only, which need not be transitive; the sort below must still not panic).
    let few: Vec<&&str> = lines
        .iter()
        .filter(|l| version::is_valid(l))
        .take(12)
        .collect();
    for a in &few {
        for b in &few {
            for c in &few {
                if compare(a, b) != Ordering::Greater && compare(b, c) != Ordering::Greater {
                    assert_ne!(
                        compare(a, c),
                        Ordering::Greater,
                        "{a:?} <= {b:?} <= {c:?} but {a:?} > {c:?}"
                    );
                }
            }
        }
    }
    let mut v: Vec<&str> = lines.clone();
    v.sort_by(|a, b| compare(a, b));
});
