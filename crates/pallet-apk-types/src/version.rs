//! APK version ordering, exactly as apk-tools 2.14 (`src/version.c`) orders them.
//!
//! The algorithm is a tokenizer whose token *kinds* are themselves ordered: comparing two
//! versions walks both token streams in step until a value or a kind differs. Invalid versions
//! still compare (the tokens before the invalid point count), because apk does so and real
//! indexes contain such versions.

use std::cmp::Ordering;

/// Token kinds, in apk's order: a "lower" kind at the point of divergence means the version has
/// more components and is therefore greater.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Tok {
    Invalid = -1,
    DigitOrZero = 0,
    Digit = 1,
    Letter = 2,
    Suffix = 3,
    SuffixNo = 4,
    RevisionNo = 5,
    End = 6,
}

const PRE_SUFFIXES: [&str; 4] = ["alpha", "beta", "pre", "rc"];
const POST_SUFFIXES: [&str; 5] = ["cvs", "svn", "git", "hg", "p"];

struct Cursor<'a> {
    s: &'a [u8],
}

impl Cursor<'_> {
    /// Classify what follows the token just read (apk's `next_token`).
    fn next_kind(&mut self, cur: Tok) -> Tok {
        let Some(&c) = self.s.first() else {
            return Tok::End;
        };
        let mut n = Tok::Invalid;
        if (cur == Tok::Digit || cur == Tok::DigitOrZero) && c.is_ascii_lowercase() {
            n = Tok::Letter;
        } else if cur == Tok::Letter && c.is_ascii_digit() {
            n = Tok::Digit;
        } else if cur == Tok::Suffix && c.is_ascii_digit() {
            n = Tok::SuffixNo;
        } else {
            match c {
                b'.' => {
                    n = Tok::DigitOrZero;
                    self.s = &self.s[1..];
                }
                b'_' => {
                    n = Tok::Suffix;
                    self.s = &self.s[1..];
                }
                b'-' if self.s.get(1) == Some(&b'r') => {
                    n = Tok::RevisionNo;
                    self.s = &self.s[2..];
                }
                0 => n = Tok::End,
                _ => {}
            }
        }
        // Going back to a lower kind is invalid, except for the transitions apk allows.
        if n < cur
            && !((n == Tok::DigitOrZero && cur == Tok::Digit)
                || (n == Tok::Suffix && cur == Tok::SuffixNo)
                || (n == Tok::Digit && cur == Tok::Letter))
        {
            n = Tok::Invalid;
        }
        n
    }

    fn number(&mut self) -> Option<i64> {
        let len = self.s.iter().take_while(|c| c.is_ascii_digit()).count();
        if len == 0 || len >= 18 {
            self.s = &self.s[len..];
            return None;
        }
        let v = self.s[..len]
            .iter()
            .fold(0i64, |acc, d| acc * 10 + i64::from(d - b'0'));
        self.s = &self.s[len..];
        Some(v)
    }

    /// Read one token of kind `kind`, returning its value and updating `kind` to the next kind.
    fn token(&mut self, kind: &mut Tok) -> i64 {
        if self.s.is_empty() || self.s[0] == 0 {
            *kind = Tok::End;
            return 0;
        }
        let v: i64;
        match *kind {
            Tok::DigitOrZero if self.s[0] == b'0' => {
                // Leading zeros after a dot: each extra zero lowers the value, and only the zeros
                // are consumed so the rest of the component is read as its own number.
                let mut i = 0;
                while i + 1 < self.s.len() && self.s[i + 1] == b'0' {
                    i += 1;
                }
                self.s = &self.s[i..];
                *kind = Tok::Digit;
                return -(i as i64);
            }
            Tok::DigitOrZero | Tok::Digit | Tok::SuffixNo | Tok::RevisionNo => {
                match self.number() {
                    Some(n) => v = n,
                    None => {
                        *kind = Tok::Invalid;
                        return -1;
                    }
                }
            }
            Tok::Letter => {
                v = i64::from(self.s[0]);
                self.s = &self.s[1..];
            }
            Tok::Suffix => {
                let found = PRE_SUFFIXES
                    .iter()
                    .enumerate()
                    .map(|(i, s)| (i as i64 - 4, s))
                    .chain(POST_SUFFIXES.iter().enumerate().map(|(i, s)| (i as i64, s)))
                    .find(|(_, s)| self.s.starts_with(s.as_bytes()));
                match found {
                    Some((val, s)) => {
                        v = val;
                        self.s = &self.s[s.len()..];
                    }
                    None => {
                        *kind = Tok::Invalid;
                        return -1;
                    }
                }
            }
            Tok::Invalid | Tok::End => {
                *kind = Tok::Invalid;
                return -1;
            }
        }
        *kind = self.next_kind(*kind);
        v
    }
}

/// Value of the suffix that starts at the cursor (used to decide `1.0` vs `1.0_rc1`).
fn next_suffix_value(rest: &[u8]) -> i64 {
    let mut c = Cursor { s: rest };
    let mut k = Tok::Suffix;
    c.token(&mut k)
}

/// The result bits apk uses: a comparison may match several at once only for NULL versions.
pub const EQUAL: u8 = 1;
pub const LESS: u8 = 2;
pub const GREATER: u8 = 4;
pub const FUZZY: u8 = 8;

/// Compare two version strings like `apk version -t`; `fuzzy` is the `~` prefix match.
pub fn compare_bits(a: &str, b: &str, fuzzy: bool) -> u8 {
    let mut ca = Cursor { s: a.as_bytes() };
    let mut cb = Cursor { s: b.as_bytes() };
    let (mut ta, mut tb) = (Tok::Digit, Tok::Digit);
    let (mut va, mut vb) = (0i64, 0i64);
    while ta == tb && ta != Tok::End && ta != Tok::Invalid && va == vb {
        va = ca.token(&mut ta);
        vb = cb.token(&mut tb);
    }
    if va < vb {
        return LESS;
    }
    if va > vb {
        return GREATER;
    }
    if ta == tb || fuzzy {
        return EQUAL;
    }
    if ta == Tok::Suffix && next_suffix_value(ca.s) < 0 {
        return LESS;
    }
    if tb == Tok::Suffix && next_suffix_value(cb.s) < 0 {
        return GREATER;
    }
    if ta > tb {
        LESS
    } else if tb > ta {
        GREATER
    } else {
        EQUAL
    }
}

/// Total-order comparison of two versions (apk's non-fuzzy compare).
pub fn compare(a: &str, b: &str) -> Ordering {
    match compare_bits(a, b, false) {
        LESS => Ordering::Less,
        GREATER => Ordering::Greater,
        _ => Ordering::Equal,
    }
}

/// Whether `v` is a valid version for apk 2.14 (`apk_version_validate`).
pub fn is_valid(v: &str) -> bool {
    // apk's validator would accept the empty string; no real package has one and every caller
    // (dependency parsing, package writing) needs it refused.
    if v.is_empty() {
        return false;
    }
    let mut c = Cursor { s: v.as_bytes() };
    let mut k = Tok::Digit;
    while k != Tok::End && k != Tok::Invalid {
        c.token(&mut k);
    }
    k == Tok::End
}

/// An owned version string ordered the way apk orders versions.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Default)]
pub struct Version(pub String);

impl Version {
    pub fn new(s: impl Into<String>) -> Self {
        Version(s.into())
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for Version {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl PartialOrd for Version {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Version {
    fn cmp(&self, other: &Self) -> Ordering {
        compare(&self.0, &other.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sym(a: &str, b: &str) -> char {
        match compare_bits(a, b, false) {
            LESS => '<',
            GREATER => '>',
            _ => '=',
        }
    }

    /// Every vector from the format notes (apk-tools `test/version.data` rows, and oracle facts).
    const VECTORS: &[(&str, char, &str)] = &[
        ("2.34", '>', "0.1.0_alpha"),
        ("23_foo", '>', "4_beta"),
        ("1.0", '<', "1.0bc"),
        ("0.1.0_alpha", '=', "0.1.0_alpha"),
        ("0.1.0_alpha2", '>', "0.1.0_alpha"),
        ("1.0.4-r3", '<', "1.0.4-r4"),
        ("1.1", '>', "1.1_alpha1"),
        ("1.2.1", '>', "1.2"),
        ("1.3_alpha", '<', "1.3_alpha2"),
        ("2.3.0b-r1", '<', "2.3.0b-r2"),
        ("0.12.3", '>', "0.12"),
        ("3.1_p16", '<', "3.1_p17"),
        ("1.06-r6", '<', "006"),
        ("2.5.1-r8", '<', "2.5.1a-r1"),
        ("20040401", '>', "2.0.0_rc3-r1"),
        ("0.10.0", '<', "0.10.1_rc1"),
        ("1.1a", '<', "1.3a"),
        ("2.10.1", '>', "02.08.01b"),
        ("1.2.07.8", '<', "1.2.12.04"),
        ("1.07.5", '>', "1.07"),
        ("4.5_p1", '<', "4.5_p1-r1"),
        ("4.2.5", '<', "4.3.2-r2"),
        ("1.3-r0", '<', "1.3.1-r0"),
        ("1.3_pre1-r1", '<', "1.3.2"),
        ("1.0_p10-r0", '>', "1.0_p9-r0"),
        ("0.1.0_alpha_pre2", '<', "0.1.0_alpha"),
        (
            "1.0.0_pre20191002222144-r0",
            '<',
            "1.0.0_pre20210530193627-r0",
        ),
        ("6.0_pre1", '<', "6.0"),
        ("6.0_p1", '>', "6.0"),
        // 2.14-specific rows of the 3.x vector table.
        ("8.2.0", '>', "8.2.001"),
        ("8.2.0015", '>', "8.2.002"),
        ("1.0", '>', "1.00"),
        ("1.00", '>', "1.000"),
        ("1.0~1234", '=', "1.0~2345"),
        ("1.0~1234-r1", '=', "1.0~1234-r0"),
        ("1.01", '>', "1.001"),
        // Oracle facts.
        ("1.0_cvs1", '>', "1.0"),
        ("1.0_svn", '>', "1.0_cvs"),
        ("1.0_git", '>', "1.0_svn"),
        ("1.0_hg", '>', "1.0_git"),
        ("1.0_p1", '>', "1.0_hg"),
        ("1.0_rc1", '>', "1.0_pre9"),
        ("1.0_pre1", '>', "1.0_beta9"),
        ("1.0_beta1", '>', "1.0_alpha9"),
        ("1.0", '<', "1.0-r0"),
        ("1.0.0", '>', "1.0"),
        ("1.0a", '>', "1.0"),
        ("1.0a", '<', "1.0.1"),
        ("1.0_alpha", '<', "1.0a"),
        ("1.0_p", '<', "1.0_p0"),
        ("1.0_p1_pre1", '<', "1.0_p1"),
        ("1.0", '>', "1.0_foo"),
    ];

    #[test]
    fn vectors_match_apk_2_14() {
        let mut bad = vec![];
        for (a, want, b) in VECTORS {
            let got = sym(a, b);
            if got != *want {
                bad.push(format!("{a} {got} {b} (want {want})"));
            }
            // The comparison must be antisymmetric.
            let rev = sym(b, a);
            let want_rev = match want {
                '<' => '>',
                '>' => '<',
                c => *c,
            };
            if rev != want_rev {
                bad.push(format!("{b} {rev} {a} (want {want_rev})"));
            }
        }
        assert!(bad.is_empty(), "mismatches:\n{}", bad.join("\n"));
    }

    #[test]
    fn fuzzy_matches_prefix_either_way() {
        assert_eq!(compare_bits("3.8", "3.8.1", true), EQUAL);
        assert_eq!(compare_bits("3.8.1", "3.8", true), EQUAL);
        assert_eq!(compare_bits("1.0a", "1.0.1", true), EQUAL);
        assert_ne!(compare_bits("3.60", "3.6", true), EQUAL);
        assert_ne!(compare_bits("1.0a", "1.1", true), EQUAL);
    }

    #[test]
    fn validation() {
        for v in [
            "1.0",
            "1.2.3-r4",
            "1.0_alpha1",
            "0.1a1",
            "1.0_p1_pre2-r0",
            "20240101",
        ] {
            assert!(is_valid(v), "{v} should be valid");
        }
        for v in ["", "abc-1", "1.0-r1-r2x", "1.0~abc", "1..0x", "1.0-"] {
            assert!(!is_valid(v), "{v} should be invalid");
        }
    }

    proptest::proptest! {
        #[test]
        fn never_panics_and_is_antisymmetric(a in "[0-9a-z._~-]{0,20}", b in "[0-9a-z._~-]{0,20}") {
            let ab = compare(&a, &b);
            let ba = compare(&b, &a);
            proptest::prop_assert_eq!(ab, ba.reverse());
            let _ = is_valid(&a);
        }
    }
}
