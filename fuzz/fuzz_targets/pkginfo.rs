//! `.PKGINFO` text through `PackageInfo::parse_pkginfo`, and what `to_pkginfo` writes back.
//! The image build caches a package's control section as `to_pkginfo` of what it parsed and
//! warm builds read that instead, so the write must keep what the text meant.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pallet_apk_types::PackageInfo;
use pallet_apk_types::package::one_line;

/// What the written text must read back as: every value on one line (control characters
/// become spaces, as `to_pkginfo` promises), the unknown keys aside.
fn expected(p: &PackageInfo) -> PackageInfo {
    let s = |v: &str| one_line(v).into_owned();
    let o = |v: &Option<String>| v.as_deref().map(s);
    PackageInfo {
        name: s(&p.name),
        version: s(&p.version),
        arch: s(&p.arch),
        description: s(&p.description),
        url: s(&p.url),
        license: s(&p.license),
        origin: o(&p.origin),
        maintainer: o(&p.maintainer),
        commit: o(&p.commit),
        packager: o(&p.packager),
        triggers: one_line(&p.triggers.join(" "))
            .split_whitespace()
            .map(str::to_string)
            .collect(),
        datahash: p
            .datahash
            .as_deref()
            .map(|h| one_line(h).trim().to_string()),
        extra: vec![],
        ..p.clone()
    }
}

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let Ok(p) = PackageInfo::parse_pkginfo(&text) else {
        return;
    };
    assert!(!p.name.is_empty());
    let written = p.to_pkginfo();
    let again = PackageInfo::parse_pkginfo(&written)
        .unwrap_or_else(|e| panic!("written .PKGINFO does not parse: {e}\n{written}"));
    // No unknown key comes back as a known field, and no known field changes.
    let mut known = again.clone();
    known.extra.clear();
    assert_eq!(known, expected(&p), "written:\n{written}");
    // Without control characters and with plain keys, the round trip is exact.
    let plain = |s: &str| !s.chars().any(char::is_control);
    let unchanged = PackageInfo {
        extra: vec![],
        ..p.clone()
    };
    if expected(&p) == unchanged
        && p.extra
            .iter()
            .all(|(k, v)| plain(v) && plain(k) && !k.contains(['=', ' ']))
    {
        assert_eq!(again, p, "written:\n{written}");
    }
});
