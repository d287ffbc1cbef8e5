//! The installed database (`lib/apk/db/installed`) through `parse_installed`, and back.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pallet_apk_types::installed::{parse_installed, write_installed, write_triggers};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(pkgs) = parse_installed(text) else {
        return;
    };
    let _ = write_triggers(&pkgs);
    // The written database parses to as many records; writing what was written changes
    // nothing more.
    let written = write_installed(&pkgs);
    let again =
        parse_installed(&written).unwrap_or_else(|e| panic!("written database: {e}\n{written}"));
    assert_eq!(again.len(), pkgs.len());
    let second = write_installed(&again);
    let third = write_installed(&parse_installed(&second).expect("rewritten database parses"));
    assert_eq!(third, second);
});
