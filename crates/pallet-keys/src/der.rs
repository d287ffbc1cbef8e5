//! The two tiny DER conversions key files need; a full ASN.1 library would be overkill.

/// Read one TLV at the start of `d`: (tag, content, rest).
fn tlv(d: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let tag = *d.first()?;
    let first = *d.get(1)? as usize;
    let (len, hdr) = if first < 0x80 {
        (first, 2)
    } else {
        let n = first & 0x7f;
        if n == 0 || n > 4 {
            return None;
        }
        let mut len = 0usize;
        for i in 0..n {
            len = (len << 8) | *d.get(2 + i)? as usize;
        }
        (len, 2 + n)
    };
    let end = hdr.checked_add(len)?;
    if end > d.len() {
        return None;
    }
    Some((tag, &d[hdr..end], &d[end..]))
}

fn encode_len(len: usize, out: &mut Vec<u8>) {
    if len < 0x80 {
        out.push(len as u8);
    } else {
        let bytes: Vec<u8> = len
            .to_be_bytes()
            .iter()
            .copied()
            .skip_while(|b| *b == 0)
            .collect();
        out.push(0x80 | bytes.len() as u8);
        out.extend(bytes);
    }
}

fn wrap(tag: u8, content: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    encode_len(content.len(), &mut out);
    out.extend_from_slice(content);
    out
}

/// PKCS#8 `PrivateKeyInfo` → the PKCS#1 `RSAPrivateKey` inside its OCTET STRING.
pub(crate) fn pkcs8_to_pkcs1(pkcs8: &[u8]) -> Option<Vec<u8>> {
    let (0x30, seq, _) = tlv(pkcs8)? else {
        return None;
    };
    let (0x02, _version, rest) = tlv(seq)? else {
        return None;
    };
    let (0x30, _alg, rest) = tlv(rest)? else {
        return None;
    };
    let (0x04, key, _) = tlv(rest)? else {
        return None;
    };
    Some(key.to_vec())
}

/// PKCS#1 `RSAPublicKey` → PKIX `SubjectPublicKeyInfo` with the rsaEncryption algorithm.
pub(crate) fn pkcs1_public_to_spki(pkcs1: &[u8]) -> Vec<u8> {
    // AlgorithmIdentifier { rsaEncryption (1.2.840.113549.1.1.1), NULL }
    const ALG: [u8; 15] = [
        0x30, 0x0d, 0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01, 0x05, 0x00,
    ];
    let mut bits = vec![0u8];
    bits.extend_from_slice(pkcs1);
    let mut body = ALG.to_vec();
    body.extend(wrap(0x03, &bits));
    wrap(0x30, &body)
}

/// An unsigned big-endian integer as a DER INTEGER (leading zeros dropped, a zero byte added
/// when the top bit is set so it stays positive).
fn der_uint(v: &[u8]) -> Vec<u8> {
    let v = match v.iter().position(|b| *b != 0) {
        Some(i) => &v[i..],
        None => &[0u8][..],
    };
    let mut c = Vec::with_capacity(v.len() + 1);
    if v[0] & 0x80 != 0 {
        c.push(0);
    }
    c.extend_from_slice(v);
    wrap(0x02, &c)
}

/// An RSA modulus and exponent → PKCS#1 `RSAPublicKey`.
pub(crate) fn rsa_public_pkcs1(n: &[u8], e: &[u8]) -> Vec<u8> {
    let mut body = der_uint(n);
    body.extend(der_uint(e));
    wrap(0x30, &body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rsa_components_encode_as_der_integers() {
        // 0x80 needs a leading zero to stay positive; leading zeros are dropped.
        assert_eq!(
            rsa_public_pkcs1(&[0x00, 0x80], &[1, 0, 1]),
            [0x30, 0x09, 0x02, 0x02, 0x00, 0x80, 0x02, 0x03, 1, 0, 1]
        );
    }

    #[test]
    fn truncated_der_is_refused() {
        assert!(pkcs8_to_pkcs1(&[0x30, 0x82, 0xff]).is_none());
        assert!(pkcs8_to_pkcs1(&[]).is_none());
    }
}
