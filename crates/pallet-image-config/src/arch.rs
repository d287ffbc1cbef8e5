//! apko's architecture names (`pkg/build/types/arch.go`): the OCI-style name is canonical,
//! apk spellings are accepted and normalised.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// One target architecture, in apko's canonical (OCI-style) spelling.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Arch {
    /// `386`, apk `x86`.
    I386,
    /// `amd64`, apk `x86_64`.
    Amd64,
    /// `arm64`, apk `aarch64`.
    Arm64,
    /// `arm/v6`, apk `armhf`.
    ArmV6,
    /// `arm/v7`, apk `armv7`.
    ArmV7,
    /// `loong64`, apk `loongarch64`.
    Loong64,
    /// `ppc64le`.
    Ppc64le,
    /// `riscv64`.
    Riscv64,
    /// `s390x`.
    S390x,
}

/// A string that names no architecture apko knows.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "unknown architecture `{0}` (known: 386, amd64, arm64, arm/v6, arm/v7, loong64, ppc64le, riscv64, s390x, or their apk names)"
)]
pub struct UnknownArch(pub String);

impl Arch {
    /// apko's `AllArchs`: the set built when neither `--arch` nor `archs` is given.
    pub const ALL: [Arch; 9] = [
        Arch::I386,
        Arch::Amd64,
        Arch::Arm64,
        Arch::ArmV6,
        Arch::ArmV7,
        Arch::Loong64,
        Arch::Ppc64le,
        Arch::Riscv64,
        Arch::S390x,
    ];

    /// Parse one name, accepting apko's and apk's spellings (`amd64`, `x86_64`, `arm/v7`,
    /// `armv7`, `386`, `x86` …). `all` and `host` are CLI words: see [`Arch::parse_list`].
    pub fn parse(s: &str) -> Result<Arch, UnknownArch> {
        Ok(match s.trim() {
            "386" | "x86" => Arch::I386,
            "amd64" | "x86_64" => Arch::Amd64,
            "arm64" | "aarch64" => Arch::Arm64,
            "arm/v6" | "armhf" => Arch::ArmV6,
            "arm/v7" | "armv7" => Arch::ArmV7,
            "loong64" | "loongarch64" => Arch::Loong64,
            "ppc64le" => Arch::Ppc64le,
            "riscv64" => Arch::Riscv64,
            "s390x" => Arch::S390x,
            other => return Err(UnknownArch(other.to_string())),
        })
    }

    /// Parse `--arch` values: each may be a comma list, `all` (every arch) or `host`.
    /// Like apko's `ParseArchitectures`, the result is deduplicated and sorted by name.
    pub fn parse_list<S: AsRef<str>>(values: &[S]) -> Result<Vec<Arch>, UnknownArch> {
        let mut out = Vec::new();
        for v in values {
            for word in v
                .as_ref()
                .split(',')
                .map(str::trim)
                .filter(|w| !w.is_empty())
            {
                let add: Vec<Arch> = match word {
                    "all" => Arch::ALL.to_vec(),
                    "host" => vec![Arch::host()?],
                    w => vec![Arch::parse(w)?],
                };
                for a in add {
                    if !out.contains(&a) {
                        out.push(a);
                    }
                }
            }
        }
        sort_by_name(&mut out);
        Ok(out)
    }

    /// The architecture this program was compiled for.
    pub fn host() -> Result<Arch, UnknownArch> {
        // Rust names two of these differently from Go and apk.
        match std::env::consts::ARCH {
            "powerpc64" if cfg!(target_endian = "little") => Ok(Arch::Ppc64le),
            "arm" => Ok(Arch::ArmV7),
            other => Arch::parse(other),
        }
    }

    /// apko's canonical name (`amd64`, `arm/v7`).
    pub fn as_str(self) -> &'static str {
        match self {
            Arch::I386 => "386",
            Arch::Amd64 => "amd64",
            Arch::Arm64 => "arm64",
            Arch::ArmV6 => "arm/v6",
            Arch::ArmV7 => "arm/v7",
            Arch::Loong64 => "loong64",
            Arch::Ppc64le => "ppc64le",
            Arch::Riscv64 => "riscv64",
            Arch::S390x => "s390x",
        }
    }

    /// apko's `ToAPK`: the name used in repository paths and `.PKGINFO` (`x86_64`).
    pub fn to_apk(self) -> &'static str {
        match self {
            Arch::I386 => "x86",
            Arch::Amd64 => "x86_64",
            Arch::Arm64 => "aarch64",
            Arch::ArmV6 => "armhf",
            Arch::ArmV7 => "armv7",
            Arch::Loong64 => "loongarch64",
            Arch::Ppc64le => "ppc64le",
            Arch::Riscv64 => "riscv64",
            Arch::S390x => "s390x",
        }
    }

    /// OCI platform `architecture` and `variant` (os is always `linux`). Both 32-bit arm
    /// flavours share `arm` and differ only by variant.
    pub fn oci_platform(self) -> (&'static str, Option<&'static str>) {
        match self {
            Arch::ArmV6 => ("arm", Some("v6")),
            Arch::ArmV7 => ("arm", Some("v7")),
            a => (a.as_str(), None),
        }
    }
}

/// Sort as apko sorts `[]Architecture`: by the canonical string (`arm/v6` before `arm64`).
pub fn sort_by_name(archs: &mut [Arch]) {
    archs.sort_by_key(|a| a.as_str());
}

impl fmt::Display for Arch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Arch {
    type Err = UnknownArch;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Arch::parse(s)
    }
}

impl Serialize for Arch {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for Arch {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = crate::scalar::ScalarString::deserialize(d)?.0;
        Arch::parse(&s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aliases_normalise() {
        for (input, canon, apk) in [
            ("x86_64", "amd64", "x86_64"),
            ("amd64", "amd64", "x86_64"),
            ("aarch64", "arm64", "aarch64"),
            ("arm64", "arm64", "aarch64"),
            ("armv7", "arm/v7", "armv7"),
            ("arm/v7", "arm/v7", "armv7"),
            ("armhf", "arm/v6", "armhf"),
            ("arm/v6", "arm/v6", "armhf"),
            ("386", "386", "x86"),
            ("x86", "386", "x86"),
            ("loongarch64", "loong64", "loongarch64"),
            ("ppc64le", "ppc64le", "ppc64le"),
            ("s390x", "s390x", "s390x"),
            ("riscv64", "riscv64", "riscv64"),
        ] {
            let a = Arch::parse(input).unwrap();
            assert_eq!(a.as_str(), canon, "{input}");
            assert_eq!(a.to_apk(), apk, "{input}");
        }
        assert!(Arch::parse("sparc").is_err());
    }

    #[test]
    fn oci_platforms() {
        assert_eq!(Arch::ArmV7.oci_platform(), ("arm", Some("v7")));
        assert_eq!(Arch::ArmV6.oci_platform(), ("arm", Some("v6")));
        assert_eq!(Arch::Amd64.oci_platform(), ("amd64", None));
    }

    #[test]
    fn cli_list() {
        assert_eq!(Arch::parse_list(&["all"]).unwrap().len(), 9);
        assert_eq!(
            Arch::parse_list(&["x86_64,amd64", "aarch64"]).unwrap(),
            vec![Arch::Amd64, Arch::Arm64]
        );
        assert_eq!(
            Arch::parse_list(&["arm64,arm/v7,386"]).unwrap(),
            vec![Arch::I386, Arch::ArmV7, Arch::Arm64]
        );
        assert_eq!(Arch::parse_list(&["host"]).unwrap().len(), 1);
    }
}
