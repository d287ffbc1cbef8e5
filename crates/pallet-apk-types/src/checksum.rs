//! The textual checksum forms apk uses: `Q1` + base64 for SHA-1 identities, hex elsewhere.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;

/// `Q1` + base64 of a 20-byte SHA-1, as in `C:` and `Z:`.
pub fn q1(sha1: &[u8]) -> String {
    format!("Q1{}", STANDARD.encode(sha1))
}

/// Decode a `Q1…` or `X1…` checksum to its raw bytes.
pub fn decode_q1(s: &str) -> Option<Vec<u8>> {
    if let Some(b) = s.strip_prefix("Q1") {
        return STANDARD.decode(b).ok();
    }
    if let Some(h) = s.strip_prefix("X1") {
        return hex::decode(h).ok();
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn q1_round_trip() {
        let raw = [7u8; 20];
        let s = q1(&raw);
        assert_eq!(s.len(), 30);
        assert_eq!(decode_q1(&s).unwrap(), raw);
        assert_eq!(decode_q1(&format!("X1{}", hex::encode(raw))).unwrap(), raw);
        assert!(decode_q1("garbage").is_none());
    }
}
