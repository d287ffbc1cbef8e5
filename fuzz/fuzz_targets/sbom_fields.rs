//! Package facts that become SBOM fields: `L:` licences (always a valid SPDX expression
//! afterwards, as pallet-sbom promises), `/etc/os-release` from a package, purls, `Q1`
//! checksums and build dates.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pallet_apk_types::PackageInfo;

/// The grammar SPDX validators apply (deprecated ids allowed), as pallet-sbom's own tests use.
const SPEC: spdx::ParseMode = spdx::ParseMode {
    allow_slash_as_or_operator: false,
    allow_imprecise_license_names: false,
    allow_postfix_plus_on_gpl: true,
    allow_deprecated: true,
    allow_unknown: false,
};

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let os = pallet_sbom::OsRelease::parse(&text);
    for line in text.lines().take(16) {
        let n = pallet_sbom::normalize_license(line);
        if n.expression != "NOASSERTION" && n.expression != "NONE" {
            assert!(
                spdx::Expression::parse_mode(&n.expression, SPEC).is_ok(),
                "{line:?} -> {:?}",
                n.expression
            );
        }
        for e in &n.extracted {
            assert!(n.expression.contains(&e.id));
        }
        let (id, extracted) = pallet_image::sbom::license(line);
        if id != "NOASSERTION" {
            assert!(
                spdx::Expression::parse_mode(&id, SPEC).is_ok() || extracted.is_some(),
                "{line:?} -> {id:?}"
            );
        }
        let _ = pallet_sbom::spdx_identifier(line);
        let _ = pallet_sbom::sanitize_idstring(line);
        let _ = pallet_sbom::q1_to_sha1_hex(line);
        let _ = pallet_sbom::apk_purl(Some(&os), line, line, line);
        let p = PackageInfo {
            name: line.to_string(),
            version: line.to_string(),
            arch: line.to_string(),
            ..Default::default()
        };
        let _ = pallet_image::sbom::purl(&p, &os.id);
        if let Ok(secs) = line.trim().parse::<u64>() {
            let _ = pallet_image::build::rfc3339(secs);
        }
        if let Ok(secs) = line.trim().parse::<i64>() {
            let _ = pallet_sbom::rfc3339_utc(secs);
        }
    }
});
