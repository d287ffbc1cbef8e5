//! `APKINDEX.tar.gz` as repositories serve it: the signed archive reader, the tar inside, and
//! the index text; what reads must survive being written back (`sign-index` does just that).
#![no_main]

use std::path::Path;

use libfuzzer_sys::{fuzz_mutator, fuzz_target};
use pallet_apk_stream::Trust;
use pallet_apk_types::package::write_index;
use pallet_index::{read_index_from, unsigned_index};

fuzz_mutator!(|data: &mut [u8], size: usize, max_size: usize, seed: u32| {
    pallet_fuzz::gz_mutate(data, size, max_size, seed)
});

fuzz_target!(|data: &[u8]| {
    let path = Path::new("APKINDEX.tar.gz");
    let plain = read_index_from(data, path, None);
    let verified = read_index_from(data, path, Some(pallet_fuzz::keyring()));
    if let Ok(v) = &verified {
        let p = plain
            .as_ref()
            .expect("a verified index reads without a keyring");
        assert!(matches!(v.trust, Trust::Verified { .. }));
        assert_eq!(v.packages, p.packages);
    }
    let Ok(idx) = plain else { return };
    assert_eq!(idx.trust, Trust::NotChecked);
    // Written back unsigned, the index reads again, to the same records once normalised
    // (the first write sorts the records and drops what the index format cannot say).
    let body = unsigned_index(&idx.packages, idx.description.as_deref(), 0);
    let again = read_index_from(body.as_slice(), path, None).expect("a written index reads");
    assert_eq!(again.description, idx.description);
    assert_eq!(write_index(&again.packages), write_index(&idx.packages));
});
