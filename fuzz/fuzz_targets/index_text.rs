//! APKINDEX text (the `APKINDEX` member) through `parse_index`, and what it writes back.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pallet_apk_types::package::{parse_index, write_index};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(records) = parse_index(text) else {
        return;
    };
    for r in &records {
        assert!(!r.name.is_empty());
    }
    // The writer's output is an index: it parses, to as many records. Written once, values are
    // on one line and the records sorted by them; writing what was written changes nothing
    // more (what `index --merge` does again and again).
    let written = write_index(&records);
    let again = parse_index(&written).unwrap_or_else(|e| panic!("written index: {e}\n{written}"));
    assert_eq!(again.len(), records.len());
    let second = write_index(&again);
    let third = write_index(&parse_index(&second).expect("rewritten index parses"));
    assert_eq!(third, second);
});
