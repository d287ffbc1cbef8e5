//! RSA public keys as keyrings hold them (PEM, PKIX or PKCS#1, fetched from the URLs apko and
//! melange configurations name), and the signature check against them.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use pallet_keys::{PublicKey, SigAlg};

fuzz_target!(|data: &[u8]| {
    let Ok(k) = PublicKey::from_pem(data, Path::new("fuzz.rsa.pub")) else {
        return;
    };
    // A key that parsed checks signatures without panicking; garbage never verifies.
    for alg in [SigAlg::RsaSha1, SigAlg::RsaSha256, SigAlg::RsaSha512] {
        assert!(!k.verify(alg, b"data", &[0u8; 256]));
        assert!(!k.verify(alg, b"data", data));
    }
});
