//! purls, checksums and dates.

use base64::Engine as _;

/// Percent-encode everything outside the purl-safe set, as packageurl-go does for names,
/// versions and qualifier values.
pub(crate) fn pct(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Build `pkg:<type>/<namespace>/<name>@<version>?<qualifiers>` with qualifiers sorted by key
/// and empty ones dropped, as the purl spec asks.
pub(crate) fn purl(
    ty: &str,
    namespace: &str,
    name: &str,
    version: &str,
    quals: &[(&str, &str)],
) -> String {
    let mut s = format!("pkg:{ty}/");
    for seg in namespace.split('/').filter(|x| !x.is_empty()) {
        s.push_str(&pct(seg));
        s.push('/');
    }
    s.push_str(&pct(name));
    if !version.is_empty() {
        s.push('@');
        s.push_str(&pct(version));
    }
    let mut q: Vec<_> = quals.iter().filter(|(_, v)| !v.is_empty()).collect();
    q.sort_by_key(|(k, _)| *k);
    for (i, (k, v)) in q.iter().enumerate() {
        s.push(if i == 0 { '?' } else { '&' });
        s.push_str(k);
        s.push('=');
        s.push_str(&pct(v));
    }
    s
}

/// `pkg:apk/<distro-id>/<name>@<version>?arch=<arch>&distro=<id>-<version_id>`; the
/// namespace is `unknown` without os-release, as in apko's golden SBOM.
pub fn apk_purl(os: Option<&crate::OsRelease>, name: &str, version: &str, arch: &str) -> String {
    let ns = os
        .map(|o| o.id.as_str())
        .filter(|s| !s.is_empty())
        .unwrap_or("unknown");
    let distro = match os {
        Some(o) if !o.id.is_empty() && !o.version_id.is_empty() => {
            format!("{}-{}", o.id, o.version_id)
        }
        _ => String::new(),
    };
    purl(
        "apk",
        ns,
        name,
        version,
        &[("arch", arch), ("distro", &distro)],
    )
}

/// The SHA-1 behind an APK `Q1…` checksum, as 40 hex digits.
pub fn q1_to_sha1_hex(q1: &str) -> Option<String> {
    let b = base64::engine::general_purpose::STANDARD
        .decode(q1.strip_prefix("Q1")?)
        .ok()?;
    (b.len() == 20).then(|| hex::encode(b))
}

/// Unix seconds as `YYYY-MM-DDTHH:MM:SSZ` (no clock read).
pub fn rfc3339_utc(secs: i64) -> String {
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // Howard Hinnant's days-to-civil.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Hex SHA-256 of some bytes.
pub(crate) fn sha256_hex(b: &[u8]) -> String {
    use sha2::Digest as _;
    hex::encode(sha2::Sha256::digest(b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates() {
        assert_eq!(rfc3339_utc(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339_utc(1_700_000_000), "2023-11-14T22:13:20Z");
        assert_eq!(rfc3339_utc(951_825_600), "2000-02-29T12:00:00Z");
    }

    #[test]
    fn q1() {
        assert_eq!(
            q1_to_sha1_hex("Q1m6wB0UFePGN8Drz82pC8y2uAiu8=").unwrap(),
            "9bac01d1415e3c637c0ebcfcda90bccb6b808aef"
        );
        assert!(q1_to_sha1_hex("sha1-x").is_none());
    }

    #[test]
    fn purls() {
        let os = crate::OsRelease {
            id: "alpine".into(),
            name: "Alpine Linux".into(),
            version_id: "3.20.3".into(),
        };
        assert_eq!(
            apk_purl(Some(&os), "libstdc++", "13.2.1_git20240309-r0", "x86_64"),
            "pkg:apk/alpine/libstdc%2B%2B@13.2.1_git20240309-r0?arch=x86_64&distro=alpine-3.20.3"
        );
        assert_eq!(
            apk_purl(None, "replayout", "1.0.0-r0", "x86_64"),
            "pkg:apk/unknown/replayout@1.0.0-r0?arch=x86_64"
        );
    }
}
