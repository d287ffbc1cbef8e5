//! Dependency atoms (`name`, `name>=1.2`, `!conflict`, `name@tag`, `so:libc.musl-x86_64.so.1`).
//!
//! The grammar follows apk-tools' `apk_blob_pull_dep`: the name runs up to the first operator
//! character, a `@tag` is split off the name, and the operator is any run of `<>=~`.

use std::fmt;

use crate::version::{self, EQUAL, FUZZY, GREATER, LESS};

/// The version constraint of a dependency, as apk's operator bit mask.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Op(pub u8);

impl Op {
    pub const ANY: Op = Op(EQUAL | LESS | GREATER);
    /// `><`: the version field holds a package checksum, not a version.
    pub const CHECKSUM: Op = Op(LESS | GREATER);

    fn as_str(self) -> &'static str {
        match self.0 {
            x if x == EQUAL => "=",
            x if x == LESS => "<",
            x if x == LESS | EQUAL => "<=",
            x if x == GREATER => ">",
            x if x == GREATER | EQUAL => ">=",
            x if x == FUZZY | EQUAL => "~",
            x if x == GREATER | FUZZY | EQUAL => ">~",
            x if x == LESS | FUZZY | EQUAL => "<~",
            x if x == LESS | GREATER => "><",
            _ => "",
        }
    }
}

/// One dependency atom.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Dependency {
    pub name: String,
    /// Repository tag from `name@tag` (pinning).
    pub tag: Option<String>,
    pub op: Op,
    /// The version (or, for `><`, the checksum); empty when `op` is [`Op::ANY`].
    pub version: String,
    /// `!name`: the name must not be installed (or must not match the constraint).
    pub conflict: bool,
}

/// Why a dependency string was rejected.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DepError {
    #[error("'{0}' is not a valid dependency, format is name(@tag)([<>~=]version)")]
    Invalid(String),
}

impl Dependency {
    /// A plain dependency on any version of `name`.
    pub fn any(name: impl Into<String>) -> Self {
        Dependency {
            name: name.into(),
            tag: None,
            op: Op::ANY,
            version: String::new(),
            conflict: false,
        }
    }

    /// A dependency on exactly `name=version`.
    pub fn exact(name: impl Into<String>, version: impl Into<String>) -> Self {
        Dependency {
            op: Op(EQUAL),
            version: version.into(),
            ..Dependency::any(name)
        }
    }

    /// Parse one atom as a user would write it (the version must be valid).
    pub fn parse(s: &str) -> Result<Self, DepError> {
        Self::parse_inner(s, true)
    }

    /// Parse one atom as packagers wrote it: real indexes carry versions apk's validator
    /// refuses (Alpine 3.16 has `pc:librtmp=v2.4`), and apk still reads them.
    pub fn parse_lenient(s: &str) -> Result<Self, DepError> {
        Self::parse_inner(s, false)
    }

    fn parse_inner(s: &str, validate: bool) -> Result<Self, DepError> {
        let invalid = || DepError::Invalid(s.to_string());
        // No part of an atom (name, tag or version) may hold white space or a control
        // character: the atom is written into line-based files (.PKGINFO, APKINDEX, world),
        // where a line break would add a line of the attacker's choosing.
        if s.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(invalid());
        }
        let (conflict, rest) = match s.strip_prefix('!') {
            Some(r) => (true, r),
            None => (false, s),
        };
        let op_at = rest.find(['<', '>', '=', '~']).unwrap_or(rest.len());
        let (name_tag, op_ver) = rest.split_at(op_at);
        let (name, tag) = match name_tag.split_once('@') {
            Some((n, t)) => (n, Some(t.to_string())),
            None => (name_tag, None),
        };
        if name.is_empty() || name.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(invalid());
        }
        if tag.as_deref() == Some("") {
            return Err(invalid());
        }
        let mut op = Op::ANY;
        let mut version = String::new();
        if !op_ver.is_empty() {
            let ops_len = op_ver
                .find(|c| !matches!(c, '<' | '>' | '=' | '~'))
                .unwrap_or(op_ver.len());
            let (ops, ver) = op_ver.split_at(ops_len);
            let mut mask = 0u8;
            for c in ops.chars() {
                mask |= match c {
                    '<' => LESS,
                    '>' => GREATER,
                    '=' => EQUAL,
                    _ => FUZZY | EQUAL,
                };
            }
            op = Op(mask);
            if op.as_str().is_empty() || ver.is_empty() {
                return Err(invalid());
            }
            // A checksum pin carries no version; everything else must be a valid version.
            if validate && op != Op::CHECKSUM && !version::is_valid(ver) {
                return Err(invalid());
            }
            version = ver.to_string();
        }
        Ok(Dependency {
            name: name.to_string(),
            tag,
            op,
            version,
            conflict,
        })
    }

    /// Parse a space- or newline-separated list of atoms.
    pub fn parse_list(s: &str) -> Result<Vec<Self>, DepError> {
        s.split_whitespace().map(Dependency::parse).collect()
    }

    /// [`Dependency::parse_list`] with [`Dependency::parse_lenient`].
    pub fn parse_list_lenient(s: &str) -> Result<Vec<Self>, DepError> {
        s.split_whitespace()
            .map(Dependency::parse_lenient)
            .collect()
    }

    /// Whether a package or provide of version `pkg_version` satisfies the version part of this
    /// dependency. `None` stands for a provide without a version, which only an unversioned
    /// dependency accepts. The conflict flag is not applied here.
    pub fn version_matches(&self, pkg_version: Option<&str>) -> bool {
        if self.op == Op::ANY {
            return true;
        }
        let Some(v) = pkg_version else {
            return false;
        };
        if self.op == Op::CHECKSUM {
            return false;
        }
        let fuzzy = self.op.0 & FUZZY != 0;
        let r = version::compare_bits(v, &self.version, fuzzy);
        r & self.op.0 != 0
    }

    pub fn is_versioned(&self) -> bool {
        self.op != Op::ANY
    }
}

impl fmt::Display for Dependency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.conflict {
            f.write_str("!")?;
        }
        f.write_str(&self.name)?;
        if let Some(t) = &self.tag {
            write!(f, "@{t}")?;
        }
        if self.op != Op::ANY {
            write!(f, "{}{}", self.op.as_str(), self.version)?;
        }
        Ok(())
    }
}

impl std::str::FromStr for Dependency {
    type Err = DepError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Dependency::parse(s)
    }
}

/// Join atoms with single spaces, as the index and `.PKGINFO` lists are written.
pub fn format_list(deps: &[Dependency]) -> String {
    deps.iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn white_space_anywhere_is_refused() {
        for s in ["a=1\nprovides=x", "a@t\nb", "a>1 b", "a\r", "a=1\u{0}"] {
            assert!(Dependency::parse_lenient(s).is_err(), "{s:?}");
            assert!(Dependency::parse(s).is_err(), "{s:?}");
        }
    }

    #[test]
    fn parses_every_operator_and_round_trips() {
        for s in [
            "busybox",
            "musl=1.2.4-r2",
            "a<2",
            "a<=2",
            "a>1.0",
            "a>=1.0",
            "a~3.8",
            "a>~3.8",
            "!vlan",
            "curl@edge",
            "curl@edge>=8",
            "so:libc.musl-x86_64.so.1",
            "cmd:sh",
            "pc:zlib=1.3.1",
            "/bin/sh",
            "hello><Q1DNWZeWkviN7MJedLpYM8yBvmnGM=",
        ] {
            let d = Dependency::parse(s).unwrap_or_else(|e| panic!("{s}: {e}"));
            assert_eq!(d.to_string(), s);
        }
        let d = Dependency::parse("!foo@t>=1.2").unwrap();
        assert!(d.conflict);
        assert_eq!(d.tag.as_deref(), Some("t"));
        assert_eq!(d.name, "foo");
    }

    #[test]
    fn rejects_what_apk_rejects() {
        for s in [
            "foo=",
            "foo==",
            "foo=invalid",
            "",
            "=1.0",
            "foo@",
            "foo=>=<1",
        ] {
            assert!(Dependency::parse(s).is_err(), "{s} accepted");
        }
    }

    #[test]
    fn matching() {
        let d = Dependency::parse("a>=1.2").unwrap();
        assert!(d.version_matches(Some("1.2")));
        assert!(d.version_matches(Some("1.10")));
        assert!(!d.version_matches(Some("1.1")));
        assert!(!d.version_matches(None));
        assert!(Dependency::parse("a").unwrap().version_matches(None));
        assert!(
            Dependency::parse("a~3.8")
                .unwrap()
                .version_matches(Some("3.8.1"))
        );
        assert!(!Dependency::parse("a<2").unwrap().version_matches(Some("2")));
    }

    proptest::proptest! {
        #[test]
        fn parse_never_panics(s in "\\PC{0,40}") {
            if let Ok(d) = Dependency::parse(&s) {
                // What parses prints back to something that parses to the same atom.
                proptest::prop_assert_eq!(Dependency::parse(&d.to_string()).unwrap(), d);
            }
        }
    }
}
