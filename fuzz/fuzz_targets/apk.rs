//! `.apk` packages through the streaming reader and verifier: signature, control and data
//! sections, multi-member gzip, the data tar, and the member splitter lock files use.
#![no_main]

use std::io::Read;

use libfuzzer_sys::{fuzz_mutator, fuzz_target};
use pallet_apk_stream::reader::check_path;
use pallet_apk_stream::{ReadOptions, Trust, member_ranges, read_apk};

fuzz_mutator!(|data: &mut [u8], size: usize, max_size: usize, seed: u32| {
    pallet_fuzz::gz_mutate(data, size, max_size, seed)
});

fn opts(keyring: Option<&pallet_keys::Keyring>, control_only: bool) -> ReadOptions<'_> {
    ReadOptions {
        keyring,
        // Small limits keep each run fast; the limit checks are then reached as well.
        max_control_size: 1 << 20,
        max_data_size: 64 << 20,
        control_only,
    }
}

fuzz_target!(|data: &[u8]| {
    let mut n = 0usize;
    let full = read_apk(data, &opts(None, false), |e, r| {
        // What the reader hands out has passed apk's name rules.
        assert!(check_path(&e.path).is_ok(), "{:?} handed out", e.path);
        assert!(!e.path.ends_with('/'));
        // Read some entries fully, some partly, some not at all: the reader must hash the rest.
        n += 1;
        let want = match n % 3 {
            0 => 0,
            1 => 100,
            _ => u64::MAX,
        };
        std::io::copy(&mut r.take(want), &mut std::io::sink())?;
        Ok(())
    });
    if let Ok(m) = &full {
        assert!(!m.info.name.is_empty());
        // Trailing bytes are refused, so a full read has seen the whole file.
        assert_eq!(m.file_size, Some(data.len() as u64));
        assert_eq!(m.trust, Trust::NotChecked);
    }
    let control = read_apk(data, &opts(None, true), |_, _| Ok(()));
    if let Ok(m) = &full {
        // Stopping after the control section can only accept more, and reads the same metadata.
        let c = control
            .as_ref()
            .expect("control-only read of a readable package");
        assert_eq!(c.info, m.info);
    }
    let verified = read_apk(data, &opts(Some(pallet_fuzz::keyring()), false), |_, _| {
        Ok(())
    });
    if let Ok(v) = &verified {
        // A keyring only adds checks.
        let m = full
            .as_ref()
            .expect("a verified package reads without a keyring");
        assert!(matches!(v.trust, Trust::Verified { .. }));
        assert_eq!(v.info, m.info);
        assert_eq!(v.identity, m.identity);
    }
    if let Ok(ranges) = member_ranges(data) {
        // Members tile the file from its first byte to its last.
        let mut at = 0;
        for r in &ranges {
            assert_eq!(r.start, at);
            assert!(r.end > r.start);
            at = r.end;
        }
        assert_eq!(at, data.len() as u64);
    } else {
        assert!(
            full.is_err(),
            "a readable package that does not split into gzip members"
        );
    }
});
